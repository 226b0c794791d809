//! Writing new keys and values into the KV cache in place.
//!
//! `slice_assign` is the backend-neutral way, but burn-flex 0.21's copies its whole destination on
//! every call (`slice_write_impl` keeps a second handle to the buffer alive, so the copy-on-write
//! always fires): for a cache of `[batch, heads, n_positions, head_dim]` that is the full cache per
//! token, 30% of the browser's CPU sampling time. On flex the rows are copied in directly instead
//! (the cache is its buffer's only owner); every other backend keeps `slice_assign`.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `cache` (`[b, h, t_max, hd]`) with `rows` (`[b, h, t, hd]`) written at positions `start..start + t`.
pub(crate) fn write_rows<B: Backend>(
    cache: Tensor<B, 4>,
    rows: Tensor<B, 4>,
    start: usize,
) -> Tensor<B, 4> {
    let [b, h, t, hd] = rows.dims();
    #[cfg(feature = "flex")]
    let (cache, rows) = match flex::write_rows::<B>(cache, rows, start) {
        Ok(written) => return written,
        Err(unchanged) => unchanged,
    };
    cache.slice_assign([0..b, 0..h, start..start + t, 0..hd], rows)
}

#[cfg(feature = "flex")]
mod flex {
    use std::any::TypeId;

    use burn::backend::Flex;
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor};
    use burn_flex::FlexTensor;

    use crate::kernels::cast::{unwrap_float, wrap_float};

    type Pair<B> = (Tensor<B, 4>, Tensor<B, 4>);

    /// Writes in place when `B` is flex, the tensors are f32 and the cache owns its whole buffer;
    /// otherwise hands both back untouched.
    pub(super) fn write_rows<B: Backend>(
        cache: Tensor<B, 4>,
        rows: Tensor<B, 4>,
        start: usize,
    ) -> Result<Tensor<B, 4>, Pair<B>> {
        if TypeId::of::<B>() != TypeId::of::<Flex>() || cache.dtype() != DType::F32 {
            return Err((cache, rows));
        }
        let [b, h, t, hd] = rows.dims();
        let t_max = cache.dims()[2];
        let mut dst: FlexTensor = unwrap_float(cache);
        let src = unwrap_float::<B, 4, FlexTensor>(rows).to_contiguous();
        let whole = dst.is_contiguous()
            && dst.layout().start_offset() == 0
            && dst.layout().num_elements() == b * h * t_max * hd;
        let back = wrap_float::<B, 4, FlexTensor>;
        let Some(out) = whole.then(|| dst.try_storage_mut::<f32>()).flatten() else {
            return Err((back(dst), back(src)));
        };
        if t * hd == 0 {
            return Ok(back(dst));
        }
        let from = &src.storage::<f32>()[src.layout().start_offset()..];
        for (i, chunk) in from.chunks_exact(t * hd).take(b * h).enumerate() {
            let at = (i * t_max + start) * hd;
            out[at..at + t * hd].copy_from_slice(chunk);
        }
        Ok(back(dst))
    }
}
