//! Moving a value to the type it is known to be: how a backend-specific kernel takes Burn's generic
//! tensors once a `TypeId` comparison has said which backend `B` is (a checked downcast, no copy).

use std::any::Any;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

/// `x` as `U`; the caller has checked that `T` is `U`.
pub(crate) fn cast<T: 'static, U: 'static>(x: T) -> U {
    *(Box::new(x) as Box<dyn Any>)
        .downcast::<U>()
        .expect("backend type checked by the caller")
}

/// The backend's own float tensor inside `t`, as the type `T` the caller has checked it is.
pub(crate) fn unwrap_float<B: Backend, const D: usize, T: 'static>(t: Tensor<B, D>) -> T {
    cast(t.into_primitive().tensor())
}

/// A float tensor of `B` around the backend's own tensor `t` (checked by the caller to be `B`'s).
pub(crate) fn wrap_float<B: Backend, const D: usize, T: 'static>(t: T) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(cast(t)))
}
