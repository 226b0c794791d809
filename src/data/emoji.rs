//! Colour emoji from a colour bitmap font (Debian's `fonts-noto-color-emoji` by default): every glyph's
//! PNG bitmap (CBDT or sbix, read with ttf-parser), composited on white, centred in a white square and
//! area-averaged down to `EMOJI_SIZE`. Exact duplicates are dropped. Unlabelled: every image has label 0.
//!
//! The split is fixed by glyph id, as in `shared/bench/emoji_baselines.py` (test: `crc32(decimal id)
//! % 10 == 0`), with one change: skin-tone variants are near-duplicates, and one on each side of the
//! split would flatter test scores. The font's GSUB ligatures name each variant's components
//! (👋🏽 = 👋 + 🏽), so glyphs whose components match once the five skin-tone modifiers are dropped
//! form a group, and the whole group is split by the smallest glyph id in it.

use std::path::Path;

use super::{Dataset, Split};
use crate::error::{Error, Result};
use crate::pixels::raster::Raster;

/// Where Debian's `fonts-noto-color-emoji` puts the font.
pub const NOTO_COLOR_EMOJI: &str = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf";

/// Side of the square images the dataset yields (the paper's smallest colour resolution).
pub(crate) const EMOJI_SIZE: usize = 32;

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
    let split_id = skin_tone_groups(&face);
    let images: Vec<Raster> = distinct_glyphs(font, &face)?
        .into_iter()
        .filter(|(id, _)| is_test(split_id[*id as usize]) == (split == Split::Test))
        .map(|(_, image)| image)
        .collect();
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

/// Every colour bitmap glyph as an image, with its glyph id; exact duplicates after resizing are
/// dropped (the first, by glyph id, is kept).
fn distinct_glyphs(font: &Path, face: &ttf_parser::Face) -> Result<Vec<(u16, Raster)>> {
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
        if seen.insert(image.pixels.clone()) {
            images.push((id, image));
        }
    }
    Ok(images)
}

/// The reference's split rule, applied to the id a glyph's split is decided by.
fn is_test(split_id: u16) -> bool {
    crc32(split_id.to_string().as_bytes()).is_multiple_of(10)
}

/// For every glyph, the id its split is decided by: the smallest id among the glyphs that are the
/// same emoji up to skin tone (itself when the font has no such variants of it).
fn skin_tone_groups(face: &ttf_parser::Face) -> Vec<u16> {
    use std::collections::HashMap;
    use ttf_parser::gsub::SubstitutionSubtable;
    let glyphs = face.number_of_glyphs();
    // U+1F3FB..U+1F3FF, the Fitzpatrick modifiers.
    let tones: Vec<u16> = ('\u{1F3FB}'..='\u{1F3FF}')
        .filter_map(|c| face.glyph_index(c).map(|g| g.0))
        .collect();
    // Each ligature glyph's components, in order (the first one is the coverage glyph).
    let mut components: HashMap<u16, Vec<u16>> = HashMap::new();
    if let Some(gsub) = face.tables().gsub {
        for lookup in gsub.lookups {
            for subtable in lookup.subtables.into_iter::<SubstitutionSubtable>() {
                let SubstitutionSubtable::Ligature(ligatures) = subtable else {
                    continue;
                };
                for first in 0..glyphs {
                    let Some(set) = ligatures
                        .coverage
                        .get(ttf_parser::GlyphId(first))
                        .and_then(|i| ligatures.ligature_sets.get(i))
                    else {
                        continue;
                    };
                    for ligature in set {
                        let parts = std::iter::once(first)
                            .chain(ligature.components.into_iter().map(|g| g.0));
                        components
                            .entry(ligature.glyph.0)
                            .or_insert(parts.collect());
                    }
                }
            }
        }
    }
    // A glyph's key: its components (a plain glyph is its own only component), tones left out.
    let key = |id: u16| -> Vec<u16> {
        let parts = components.get(&id).cloned().unwrap_or_else(|| vec![id]);
        let kept: Vec<u16> = parts.into_iter().filter(|g| !tones.contains(g)).collect();
        if kept.is_empty() { vec![id] } else { kept }
    };
    let mut smallest: HashMap<Vec<u16>, u16> = HashMap::new();
    for id in 0..glyphs {
        smallest.entry(key(id)).or_insert(id);
    }
    (0..glyphs).map(|id| smallest[&key(id)]).collect()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// A glyph's bitmap (PNG bytes) laid over white, centred in a white square, area-averaged to
/// `size` x `size` RGB. Decoded with the same size caps as any image.
pub fn square_on_white(png: &[u8], size: usize) -> Result<Raster> {
    let rgba = crate::pixels::raster::decode_capped(png)?.into_rgba8();
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
        // shared/bench/emoji_baselines.py on the same font: 3,926 bitmaps, 10 duplicates, split 3,537 /
        // 379 by glyph id alone. With skin-tone variants kept together: 3,571 / 345.
        let bytes = std::fs::read(font).unwrap();
        let glyphs = distinct_glyphs(font, &ttf_parser::Face::parse(&bytes, 0).unwrap()).unwrap();
        let by_id_alone = glyphs.iter().filter(|(id, _)| is_test(*id)).count();
        assert_eq!((glyphs.len(), by_id_alone), (3_916, 379));
        assert_eq!((train.len(), test.len()), (3_571, 345));
        let first = &train.images[0];
        assert_eq!((first.width, first.height, first.channels), (32, 32, 3));
        // The corner is background: white.
        assert_eq!(&first.pixels[..3], &[255, 255, 255]);
    }

    #[test]
    fn skin_tone_variants_share_a_split_id() {
        let bytes = std::fs::read(NOTO_COLOR_EMOJI).unwrap();
        let face = ttf_parser::Face::parse(&bytes, 0).unwrap();
        let split_id = skin_tone_groups(&face);
        let mut groups = std::collections::BTreeMap::<u16, Vec<u16>>::new();
        for (id, &by) in split_id.iter().enumerate() {
            groups.entry(by).or_default().push(id as u16);
        }
        // Waving hand: the plain glyph and its five tones, and nothing else.
        let wave = face.glyph_index('\u{1F44B}').unwrap().0;
        let group = &groups[&split_id[wave as usize]];
        assert_eq!(group.len(), 6, "{group:?}");
        let tone = face.glyph_index('\u{1F3FD}').unwrap().0;
        assert_eq!(
            split_id[tone as usize], tone,
            "a modifier alone is its own emoji"
        );
        // By glyph id alone, most groups would have had members on both sides of the split.
        let test = is_test;
        let several: Vec<_> = groups.values().filter(|g| g.len() > 1).collect();
        let straddling = several
            .iter()
            .filter(|g| g.iter().any(|&id| test(id)) && !g.iter().all(|&id| test(id)))
            .count();
        assert_eq!((several.len(), straddling), (332, 158));
    }
}
