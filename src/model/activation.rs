//! HF's quick-GELU, `x·σ(1.702x)`, the MLP's activation.
//!
//! On flex it is one fused pass each way (forward only in the browser) with a vectorised exponential (`crate::kernels::simd`),
//! its own backward step under autodiff: Burn composes it from a scale, a sigmoid (a scalar `expf` per
//! element on flex) and a product, each with its own pass and saved tensor: 12% of a `128x8x1` CPU
//! training step (perf). Elsewhere it is that composition.

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;

pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(cpu) = crate::kernels::flex::cpu::<B>(x.dtype()) {
        return fused::quick_gelu(cpu, x);
    }
    composed(x)
}

/// Burn's composition: what non-CPU backends run, and the reference the fused one is tested against.
pub fn composed<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * sigmoid(x * 1.702)
}

#[cfg(feature = "flex")]
mod fused {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData};

    use crate::kernels::flex::{Cpu, cast, primitive, tensor};
    use crate::kernels::par::*;
    use crate::kernels::simd;

    /// Elements per parallel task: big enough to amortise the task, small enough to share out.
    const CHUNK: usize = 1 << 14;

    pub(super) fn quick_gelu<B: Backend, const D: usize>(
        cpu: Cpu,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        #[cfg(not(target_arch = "wasm32"))]
        if cpu == Cpu::Trained {
            let x = primitive::<crate::kernels::flex::Trained, D>(cast(x));
            return cast(tensor::<crate::kernels::flex::Trained, D>(
                trained::tracked(x),
            ));
        }
        let _ = cpu;
        let x = primitive::<Flex, D>(cast(x)).to_contiguous();
        cast(tensor::<Flex, D>(forward(&x)))
    }

    /// `x` must be contiguous.
    fn forward(x: &FlexTensor) -> FlexTensor {
        let input: &[f32] = x.storage();
        let mut out = vec![0.0; input.len()];
        out.par_chunks_mut(CHUNK)
            .zip(input.par_chunks(CHUNK))
            .for_each(|(y, x)| simd::quick_gelu(x, y));
        FlexTensor::from_data(TensorData::new(out, x.layout().shape().clone()))
    }

    /// The backward step under autodiff (native only: the browser does not train).
    #[cfg(not(target_arch = "wasm32"))]
    mod trained {
        use burn::backend::Flex;
        use burn::backend::autodiff::checkpoint::base::Checkpointer;
        use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
        use burn::backend::autodiff::grads::Gradients;
        use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
        use burn::backend::flex::FlexTensor;
        use burn::tensor::TensorData;

        use super::{CHUNK, forward};
        use crate::kernels::flex::Trained;
        use crate::kernels::par::*;
        use crate::kernels::simd;

        #[derive(Debug)]
        struct QuickGeluBackward;

        impl Backward<Flex, 1> for QuickGeluBackward {
            /// The (contiguous) input: the derivative is recomputed from it.
            type State = FlexTensor;

            fn backward(
                self,
                ops: Ops<FlexTensor, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [node] = ops.parents;
                let grad = grads.consume::<Flex>(&ops.node);
                let Some(node) = node else { return };
                let x = ops.state;
                let grad = grad.to_contiguous();
                let mut grad_x = vec![0.0; x.layout().num_elements()];
                grad_x
                    .par_chunks_mut(CHUNK)
                    .zip(grad.storage().par_chunks(CHUNK))
                    .zip(x.storage().par_chunks(CHUNK))
                    .for_each(|((gx, g), x)| simd::quick_gelu_backward(x, g, gx));
                let shape = x.layout().shape().clone();
                grads.register::<Flex>(
                    node.id,
                    FlexTensor::from_data(TensorData::new(grad_x, shape)),
                );
            }
        }

        pub(super) fn tracked(
            x: burn::tensor::ops::FloatTensor<Trained>,
        ) -> burn::tensor::ops::FloatTensor<Trained> {
            let input = x.primitive.to_contiguous();
            let output = forward(&input);
            match QuickGeluBackward
                .prepare::<NoCheckpointing>([x.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(input, output),
                OpsKind::UnTracked(prep) => prep.finish(output),
            }
        }
    }
}
