//! The routines under the model: the CPU kernels (flex glue, SIMD loops, parallel loops, the KV cache
//! written in place) and the matrix products (one cubek routine in the browser).

pub(crate) mod cache_write;
pub(crate) mod cast;
#[cfg(feature = "flex")]
pub(crate) mod flex;
pub(crate) mod matmul;
pub(crate) mod par;
pub(crate) mod simd;
