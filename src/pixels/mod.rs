//! Pixels and tokens: k-means palettes (image ↔ token ids), 8-bit rasters, and token sequences as the
//! model reads them.

pub mod palette;
pub mod raster;
pub mod tokens;
