//! Activation patching's one hook into the forward pass: at one layer, some positions' residual
//! stream is replaced by stored states (another image's, in the inspector). Every path that runs
//! the model through [`ForwardOptions`](super::ForwardOptions), the inspector's pass and sampling
//! with its cache included, honours it, so a completion can run "under the patch".

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};

/// Replace the stream entering block `layer` (`n_layer`: the final norm; 0: the embeddings' sum)
/// at the positions `mask` marks by `states` there.
#[derive(Clone, Debug)]
pub struct Patch<B: Backend> {
    pub layer: usize,
    /// `[1, n_positions, 1]`: 1 where the stream is replaced, else 0.
    mask: Tensor<B, 3>,
    /// `[1, n_positions, d]`: what replaces it (other positions are ignored).
    states: Tensor<B, 3>,
}

impl<B: Backend> Patch<B> {
    /// Patches `positions` (sequence positions, from 0) at `layer` with `states`
    /// (`[1, n_positions, d]`, e.g. another run's residual stream there).
    pub fn new(layer: usize, positions: &[usize], states: Tensor<B, 3>) -> Result<Self> {
        let [one, n, _] = states.dims();
        if one != 1 {
            return Err(Error::invalid(
                "a patch holds the states of one sequence, [1, positions, d]",
            ));
        }
        if let Some(&p) = positions.iter().find(|&&p| p >= n) {
            return Err(Error::invalid(format!(
                "position {p} is past the patch's {n} positions"
            )));
        }
        let mut marks = vec![0.0f32; n];
        for &p in positions {
            marks[p] = 1.0;
        }
        let device = states.device();
        let mask =
            Tensor::<B, 1>::from_data(TensorData::new(marks, [n]), &device).reshape([1, n, 1]);
        Ok(Self {
            layer,
            mask,
            states,
        })
    }

    /// `x` (`[batch, t, d]`, positions `start..start + t`) with the patched positions replaced.
    pub(crate) fn apply(&self, x: Tensor<B, 3>, start: usize) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let mask = self.mask.clone().narrow(1, start, t).expand([b, t, d]);
        let states = self.states.clone().narrow(1, start, t).expand([b, t, d]);
        x.clone() - x * mask.clone() + states * mask
    }
}
