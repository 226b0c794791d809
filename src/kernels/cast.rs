//! Moving a value to the type it is known to be: how a backend-specific kernel takes Burn's generic
//! tensors once a `TypeId` comparison has said which backend `B` is (a checked downcast, no copy).

use std::any::Any;

/// `x` as `U`; the caller has checked that `T` is `U`.
pub(crate) fn cast<T: 'static, U: 'static>(x: T) -> U {
    *(Box::new(x) as Box<dyn Any>)
        .downcast::<U>()
        .expect("backend type checked by the caller")
}
