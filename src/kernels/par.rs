//! The CPU kernels' parallel loops (flash attention, quick-GELU): rayon natively; in wasm, where the
//! page's CPU fallback has one thread (threads would need cross-origin isolation headers), the same
//! calls as plain iterators, so one kernel serves both without rayon's machinery in the browser build.

#[cfg(not(target_arch = "wasm32"))]
pub use rayon::prelude::*;

/// `par_chunks` as `chunks`.
#[cfg(target_arch = "wasm32")]
pub trait ParallelSlice<T> {
    fn par_chunks(&self, size: usize) -> std::slice::Chunks<'_, T>;
}

#[cfg(target_arch = "wasm32")]
impl<T> ParallelSlice<T> for [T] {
    fn par_chunks(&self, size: usize) -> std::slice::Chunks<'_, T> {
        self.chunks(size)
    }
}

/// `par_chunks_mut` as `chunks_mut`.
#[cfg(target_arch = "wasm32")]
pub trait ParallelSliceMut<T> {
    fn par_chunks_mut(&mut self, size: usize) -> std::slice::ChunksMut<'_, T>;
}

#[cfg(target_arch = "wasm32")]
impl<T> ParallelSliceMut<T> for [T] {
    fn par_chunks_mut(&mut self, size: usize) -> std::slice::ChunksMut<'_, T> {
        self.chunks_mut(size)
    }
}

/// rayon's `for_each_init` on one thread: one scratch value for the whole loop.
#[cfg(target_arch = "wasm32")]
pub trait ForEachInit: Iterator + Sized {
    fn for_each_init<S>(self, init: impl FnOnce() -> S, mut op: impl FnMut(&mut S, Self::Item)) {
        let mut scratch = init();
        self.for_each(|item| op(&mut scratch, item));
    }
}

#[cfg(target_arch = "wasm32")]
impl<I: Iterator> ForEachInit for I {}
