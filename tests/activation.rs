//! The fused quick-GELU on flex against Burn's composition `x·σ(1.702x)` (the reference), forward and
//! gradient, on values from deep in both tails to around zero.

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use igpt::model::activation::{composed, quick_gelu};

type B = burn::backend::Flex;
type A = Autodiff<B>;

fn floats<BB: Backend>(t: Tensor<BB, 3>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs() / (1.0 + y.abs())))
}

/// Output and gradient of Σ w ∘ f(x) under autodiff.
fn output_and_grad(
    f: fn(Tensor<A, 3>) -> Tensor<A, 3>,
    x: &TensorData,
    w: &TensorData,
) -> (Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let x = Tensor::<A, 3>::from_data(x.clone(), &device).require_grad();
    let y = f(x.clone());
    let grads = (y.clone() * Tensor::from_data(w.clone(), &device))
        .sum()
        .backward();
    (floats(y.inner()), floats(x.grad(&grads).unwrap()))
}

#[test]
fn fused_quick_gelu_matches_burns_composition() {
    let device = Default::default();
    // Normal(0, 8) reaches far into both tails (|x| > 20) where σ saturates. Drawn once and shared:
    // tests run in parallel and draw from one generator.
    let x =
        Tensor::<B, 3>::random([3, 70, 33], Distribution::Normal(0.0, 8.0), &device).into_data();
    let w =
        Tensor::<B, 3>::random([3, 70, 33], Distribution::Normal(0.0, 1.0), &device).into_data();
    let (y, g) = output_and_grad(quick_gelu, &x, &w);
    let (y_ref, g_ref) = output_and_grad(composed, &x, &w);
    assert!(
        max_diff(&y, &y_ref) <= 1e-6,
        "output {}",
        max_diff(&y, &y_ref)
    );
    assert!(
        max_diff(&g, &g_ref) <= 1e-6,
        "gradient {}",
        max_diff(&g, &g_ref)
    );
}

#[test]
fn inference_matches_too() {
    let device = Default::default();
    let x = Tensor::<B, 3>::random([2, 5, 40], Distribution::Normal(0.0, 3.0), &device);
    let d = max_diff(&floats(quick_gelu(x.clone())), &floats(composed(x)));
    assert!(d <= 1e-6, "{d}");
}
