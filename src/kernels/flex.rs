//! What the CPU kernels share to run behind Burn's types on flex (natively, and in the browser for
//! inference).
//!
//! The model is generic over `B: Backend`, and Burn's backend traits cannot be extended without a new
//! bound on every generic function of the crate; so a kernel recognises flex, and flex under
//! autodiff, by their types, then moves the tensors to the concrete types: a checked downcast, no copy.
//! Under autodiff a kernel registers its own backward step, as burn-autodiff's own ops do (a
//! `Backward` impl, `prepare(..).compute_bound().stateful()`, `grads.register`).

use std::any::TypeId;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// Flex under autodiff: the backend CPU training runs on (native only: the browser does not train).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type Trained = burn::backend::Autodiff<Flex>;

/// Which of the two CPU backends `B` is, if either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cpu {
    /// `Flex`: inference.
    Plain,
    /// `Autodiff<Flex>`: training.
    #[cfg(not(target_arch = "wasm32"))]
    Trained,
}

/// `Some` when `B` is flex (with or without autodiff) and the tensors are f32: what the kernels take.
pub(crate) fn cpu<B: Backend>(dtype: DType) -> Option<Cpu> {
    let backend = TypeId::of::<B>();
    match () {
        _ if dtype != DType::F32 => None,
        _ if backend == TypeId::of::<Flex>() => Some(Cpu::Plain),
        #[cfg(not(target_arch = "wasm32"))]
        _ if backend == TypeId::of::<Trained>() => Some(Cpu::Trained),
        _ => None,
    }
}

/// `x` as the type it is known to be (the caller checked the backend with [`cpu`]).
pub(crate) use crate::kernels::cast::cast;

/// The backend's tensor inside `t` (on [`Trained`], an autodiff node around a flex tensor).
pub(crate) fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

pub(crate) fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}
