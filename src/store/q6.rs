//! The light form of a weights file: block-wise 6-bit ("q6"), for the page's download.
//!
//! Each large tensor (at least [`MIN_ELEMENTS`] values, its last dimension a multiple of 4: the
//! embeddings and every projection) is stored in blocks of [`BLOCK`] consecutive values, row-major
//! as stored, each with one f16 scale in a tensor named `<name>` + [`SCALES_SUFFIX`]: a value is
//! `q · scale` with `q` a whole number in −31..=31 and `scale = max |w| / 31` over its block. The
//! `q + 32` are packed four to three bytes (6 bits each, the first in the low bits) into a U8 tensor
//! of the same shape but for its last dimension, three quarters as long. Small tensors (biases,
//! norms) stay f16.
//!
//! Why 6 bits: 8 bits only halve an f16 file, and 4 bits cost the default model a few hundredths of
//! a bit per token; 6 bits cost it 0.003 at two fifths of the bytes (README: Lighter weights).
//! Why a format of our own: Burn's quantised tensors live in Burn's record files, while igpt's models
//! are HF safetensors directories read by one loader natively and in wasm. A q6 file is still plain
//! safetensors that any reader opens; the loader unpacks it once, and the model computes in f32.

use half::f16;

/// Values per block, each block with its own scale.
pub const BLOCK: usize = 64;
/// Tensors smaller than this are kept in f16 (their share of the bytes is small).
pub const MIN_ELEMENTS: usize = 4096;
/// The name suffix of a packed tensor's scales.
pub const SCALES_SUFFIX: &str = ".q6_scales";
/// The light weights file beside `model.safetensors` in a model directory.
pub const Q6_WEIGHTS_FILE: &str = "model.q6.safetensors";
/// The largest level: 6 bits hold −31..=31 shifted by 32.
const LEVELS: f32 = 31.0;

/// Whether a tensor of this shape is stored packed.
pub fn is_packed(shape: &[usize]) -> bool {
    let len: usize = shape.iter().product();
    len >= MIN_ELEMENTS && shape.last().is_some_and(|d| d % 4 == 0)
}

/// The packed tensor's shape: the last dimension three quarters as long.
pub fn packed_shape(shape: &[usize]) -> Vec<usize> {
    let mut packed = shape.to_vec();
    if let Some(last) = packed.last_mut() {
        *last = *last / 4 * 3;
    }
    packed
}

/// The shape a packed tensor stands for, or an error when its last dimension cannot be one.
pub fn unpacked_shape(packed: &[usize]) -> Result<Vec<usize>, String> {
    let mut shape = packed.to_vec();
    match shape.last_mut() {
        Some(last) if *last % 3 == 0 => {
            *last = *last / 3 * 4;
            Ok(shape)
        }
        _ => Err(format!(
            "a packed 6-bit tensor's last dimension is a multiple of 3, not {packed:?}"
        )),
    }
}

/// `values` (a multiple of 4 of them) packed, and one f16 scale per block of [`BLOCK`].
pub fn pack(values: &[f32]) -> (Vec<u8>, Vec<f16>) {
    let mut levels = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len().div_ceil(BLOCK));
    for block in values.chunks(BLOCK) {
        let peak = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // Rounded against the scale as stored (f16), the one that unpacks.
        let scale = f16::from_f32(peak / LEVELS);
        let s = scale.to_f32();
        levels.extend(block.iter().map(|&v| {
            let q = if s > 0.0 {
                (v / s).round().clamp(-LEVELS, LEVELS)
            } else {
                0.0
            };
            (q as i32 + 32) as u32
        }));
        scales.push(scale);
    }
    let packed = levels
        .chunks(4)
        .flat_map(|four| {
            let word = four
                .iter()
                .enumerate()
                .fold(0u32, |w, (i, &u)| w | u << (6 * i));
            [word as u8, (word >> 8) as u8, (word >> 16) as u8]
        })
        .collect();
    (packed, scales)
}

/// The values back from packed bytes and their blocks' scales; an error if the counts do not fit.
pub fn unpack(packed: &[u8], scales: &[f16]) -> Result<Vec<f32>, String> {
    let len = packed.len() / 3 * 4;
    if !packed.len().is_multiple_of(3) || scales.len() != len.div_ceil(BLOCK) {
        return Err(format!(
            "{} packed bytes ({len} values) need {} block scales, the file has {}",
            packed.len(),
            len.div_ceil(BLOCK),
            scales.len()
        ));
    }
    let levels = packed.chunks_exact(3).flat_map(|b| {
        let word = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
        (0..4).map(move |i| ((word >> (6 * i)) & 63) as i32 - 32)
    });
    Ok(levels
        .enumerate()
        .map(|(i, q)| q as f32 * scales[i / BLOCK].to_f32())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_comes_back_within_half_a_step_of_its_block() {
        let values: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let (packed, scales) = pack(&values);
        assert_eq!((packed.len(), scales.len()), (750, 16));
        let back = unpack(&packed, &scales).unwrap();
        assert_eq!(back.len(), 1000);
        for (i, (a, b)) in values.iter().zip(&back).enumerate() {
            let step = scales[i / BLOCK].to_f32();
            assert!(
                (a - b).abs() <= 0.5 * step + 1e-5,
                "{i}: {a} vs {b} (step {step})"
            );
        }
    }

    #[test]
    fn the_extremes_survive_packing_and_counts_must_fit() {
        // −31 and 31 are the lowest and highest levels: 1 and 63 after the shift.
        let values = [-31.0, 31.0, 0.0, 5.0, -1.0, 2.0, 30.0, -30.0];
        let (packed, scales) = pack(&values);
        assert_eq!(scales[0].to_f32(), 1.0);
        assert_eq!(unpack(&packed, &scales).unwrap(), values);
        assert!(
            unpack(&[0; 6], &[])
                .unwrap_err()
                .contains("need 1 block scales")
        );
        assert_eq!(packed_shape(&[513, 256]), [513, 192]);
        assert_eq!(unpacked_shape(&[513, 192]).unwrap(), [513, 256]);
        assert!(unpacked_shape(&[10]).is_err());
    }
}
