//! Colour emoji from a colour bitmap font (Debian's `fonts-noto-color-emoji` by default): every glyph's
//! PNG bitmap (CBDT or sbix, read with ttf-parser), composited on white, centred in a white square and
//! area-averaged down to `EMOJI_SIZE`. Exact duplicates are dropped; the split is fixed by the glyph id
//! (test: `crc32(decimal id) % 10 == 0`), as in `shared/bench/emoji_baselines.py`. Unlabelled: every
//! image has label 0.
//!
//! Skin-tone variants of one emoji are separate glyphs and can land on both sides of the split, which
//! flatters test scores a little; grouping them would need the font's GSUB ligatures (not read yet).

use std::path::Path;

use super::{Dataset, Split};
use crate::error::{Error, Result};
use crate::raster::Raster;

/// Where Debian's `fonts-noto-color-emoji` puts the font.
pub const NOTO_COLOR_EMOJI: &str = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf";

/// Side of the square images the dataset yields (the paper's smallest colour resolution).
pub const EMOJI_SIZE: usize = 32;

pub(super) fn load(font: &Path, split: Split) -> Result<Dataset> {
    let bytes = crate::error::read_file(font).map_err(|e| {
        if font == Path::new(NOTO_COLOR_EMOJI) {
            Error::invalid(format!(
                "{e}; install it with `apt-get install fonts-noto-color-emoji`"
            ))
        } else {
            e
        }
    })?;
    let face = ttf_parser::Face::parse(&bytes, 0)
        .map_err(|e| Error::format(font, format!("not a font: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    let mut images = Vec::new();
    for id in 0..face.number_of_glyphs() {
        let Some(glyph) = face.glyph_raster_image(ttf_parser::GlyphId(id), u16::MAX) else {
            continue;
        };
        if glyph.format != ttf_parser::RasterImageFormat::PNG {
            continue;
        }
        let image = square_on_white(glyph.data, EMOJI_SIZE)
            .map_err(|e| Error::format(font, format!("glyph {id}: {e}")))?;
        let in_test = crc32(id.to_string().as_bytes()).is_multiple_of(10);
        if seen.insert(image.pixels.clone()) && in_test == (split == Split::Test) {
            images.push(image);
        }
    }
    if images.is_empty() {
        return Err(Error::format(
            font,
            "no colour bitmap glyphs (CBDT or sbix PNGs) in this font",
        ));
    }
    Ok(Dataset {
        labels: vec![0; images.len()],
        classes: vec!["emoji".into()],
        images,
    })
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// A glyph's bitmap (PNG bytes) laid over white, centred in a white square, area-averaged to
/// `size` x `size` RGB. Decoded with the same size caps as any image.
pub fn square_on_white(png: &[u8], size: usize) -> Result<Raster> {
    let rgba = crate::raster::decode_capped(png)?.into_rgba8();
    if rgba.width() == 0 || rgba.height() == 0 {
        return Err(Error::invalid("an empty bitmap"));
    }
    let (w, h) = (rgba.width() as usize, rgba.height() as usize);
    let side = w.max(h);
    let (left, top) = ((side - w) / 2, (side - h) / 2);
    // Linear-light compositing is not what the reference does: plain 8-bit "over", as PIL's.
    let mut square = vec![255f32; side * side * 3];
    for (x, y, p) in rgba.enumerate_pixels() {
        let a = p[3] as f32 / 255.0;
        let at = ((y as usize + top) * side + x as usize + left) * 3;
        for c in 0..3 {
            square[at + c] = p[c] as f32 * a + 255.0 * (1.0 - a);
        }
    }
    let pixels = area_resize(&square, side, size)
        .into_iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    Raster::new(size, size, 3, pixels)
}

/// Resizes a `from` x `from` RGB image to `to` x `to`, each output pixel the area-weighted mean of
/// the input pixels it covers (PIL's BOX filter).
fn area_resize(rgb: &[f32], from: usize, to: usize) -> Vec<f32> {
    // weights[o] = (first input index, weights of the inputs it covers), normalised to sum to 1.
    let scale = from as f64 / to as f64;
    let weights: Vec<(usize, Vec<f32>)> = (0..to)
        .map(|o| {
            let (lo, hi) = (o as f64 * scale, (o + 1) as f64 * scale);
            let first = lo.floor() as usize;
            let last = (hi.ceil() as usize).min(from);
            let w = (first..last)
                .map(|i| ((hi.min(i as f64 + 1.0) - lo.max(i as f64)) / scale) as f32)
                .collect();
            (first, w)
        })
        .collect();
    // Rows first, then columns.
    let mut rows = vec![0f32; to * from * 3];
    for (oy, (first, w)) in weights.iter().enumerate() {
        for (k, &wk) in w.iter().enumerate() {
            let src = &rgb[(first + k) * from * 3..(first + k + 1) * from * 3];
            for (d, s) in rows[oy * from * 3..(oy + 1) * from * 3].iter_mut().zip(src) {
                *d += wk * s;
            }
        }
    }
    let mut out = vec![0f32; to * to * 3];
    for oy in 0..to {
        for (ox, (first, w)) in weights.iter().enumerate() {
            for (k, &wk) in w.iter().enumerate() {
                for c in 0..3 {
                    out[(oy * to + ox) * 3 + c] += wk * rows[(oy * from + first + k) * 3 + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_resize_averages_what_each_pixel_covers() {
        // A 4x4 image whose left half is 0 and right half 255, halved: two 0s and two 255s per row.
        let rgb: Vec<f32> = (0..16)
            .flat_map(|i| [if i % 4 < 2 { 0.0 } else { 255.0 }; 3])
            .collect();
        let out = area_resize(&rgb, 4, 2);
        assert_eq!(
            out,
            [
                0.0, 0.0, 0.0, 255.0, 255.0, 255.0, 0.0, 0.0, 0.0, 255.0, 255.0, 255.0
            ]
        );
        // 3 -> 2: the middle input pixel is split between both outputs.
        let line: Vec<f32> = [0.0, 90.0, 180.0]
            .repeat(3)
            .into_iter()
            .flat_map(|v| [v; 3])
            .collect();
        let out = area_resize(&line, 3, 2);
        assert!(
            (out[0] - 30.0).abs() < 1e-4 && (out[3] - 150.0).abs() < 1e-4,
            "{out:?}"
        );
    }

    #[test]
    fn noto_color_emoji_splits_like_the_reference() {
        let font = Path::new(NOTO_COLOR_EMOJI);
        let (train, test) = (
            load(font, Split::Train).unwrap(),
            load(font, Split::Test).unwrap(),
        );
        // shared/bench/emoji_baselines.py on the same font: 3,926 bitmaps, 10 duplicates, 3,537 / 379.
        assert_eq!((train.len(), test.len()), (3_537, 379));
        let first = &train.images[0];
        assert_eq!((first.width, first.height, first.channels), (32, 32, 3));
        // The corner is background: white.
        assert_eq!(&first.pixels[..3], &[255, 255, 255]);
    }
}
