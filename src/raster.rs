//! `Raster`: a small 8-bit image (grey or RGB) as the palette, datasets and grids see it.

use crate::error::{Error, Result};

/// Pixels in row-major order, `channels` bytes per pixel (1 = grey, 3 = RGB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raster {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl Raster {
    pub fn new(width: usize, height: usize, channels: usize, pixels: Vec<u8>) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::invalid(format!(
                "images must have 1 or 3 channels, not {channels}"
            )));
        }
        if pixels.len() != width * height * channels {
            return Err(Error::invalid(format!(
                "a {width}x{height}x{channels} image needs {} bytes, got {}",
                width * height * channels,
                pixels.len()
            )));
        }
        Ok(Self {
            width,
            height,
            channels,
            pixels,
        })
    }

    /// Decodes any format the `image` crate reads (PNG, JPEG, GIF, BMP, WebP) into `channels` channels.
    pub fn decode(bytes: &[u8], channels: usize) -> Result<Self> {
        let decoded = image::load_from_memory(bytes)
            .map_err(|e| Error::invalid(format!("cannot decode image: {e}")))?;
        Self::from_dynamic(decoded, channels)
    }

    /// Reads an image file into `channels` channels.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path, channels: usize) -> Result<Self> {
        let bytes = crate::error::read_file(path)?;
        Self::decode(&bytes, channels).map_err(|e| Error::format(path, e.to_string()))
    }

    pub fn from_dynamic(img: image::DynamicImage, channels: usize) -> Result<Self> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let pixels = match channels {
            1 => img.into_luma8().into_raw(),
            3 => img.into_rgb8().into_raw(),
            _ => {
                return Err(Error::invalid(format!(
                    "cannot make a {channels}-channel image"
                )));
            }
        };
        Self::new(w, h, channels, pixels)
    }

    pub fn to_dynamic(&self) -> image::DynamicImage {
        let (w, h) = (self.width as u32, self.height as u32);
        // The buffer length was checked in `new`, so these conversions cannot fail.
        match self.channels {
            1 => image::GrayImage::from_raw(w, h, self.pixels.clone())
                .map(image::DynamicImage::ImageLuma8),
            _ => image::RgbImage::from_raw(w, h, self.pixels.clone())
                .map(image::DynamicImage::ImageRgb8),
        }
        .expect("raster buffer length matches its size")
    }

    /// Resizes with bilinear filtering (what HF's processor uses), or returns a copy when already that size.
    pub fn resized(&self, width: usize, height: usize) -> Self {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let img = self.to_dynamic().resize_exact(
            width as u32,
            height as u32,
            image::imageops::FilterType::Triangle,
        );
        Self::from_dynamic(img, self.channels).expect("resize keeps the channel count")
    }

    /// The image scaled up by an integer factor with nearest-neighbour (crisp pixels for viewing).
    pub fn upscaled(&self, factor: usize) -> Self {
        let (w, h, c) = (self.width * factor, self.height * factor, self.channels);
        let mut pixels = Vec::with_capacity(w * h * c);
        for y in 0..h {
            for x in 0..w {
                let src = ((y / factor) * self.width + x / factor) * c;
                pixels.extend_from_slice(&self.pixels[src..src + c]);
            }
        }
        Self {
            width: w,
            height: h,
            channels: c,
            pixels,
        }
    }

    /// The same image with `channels` channels (grey is repeated into RGB; RGB becomes luma).
    pub fn with_channels(&self, channels: usize) -> Self {
        if channels == self.channels {
            return self.clone();
        }
        Self::from_dynamic(self.to_dynamic(), channels).expect("1 or 3 channels")
    }

    /// Encodes as PNG.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.to_dynamic()
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| Error::invalid(format!("cannot encode PNG: {e}")))?;
        Ok(out.into_inner())
    }
}

/// Lays images out in a grid, `columns` wide, `gap` pixels apart on a white background. Images must
/// share a size and channel count.
pub fn tile(images: &[Raster], columns: usize, gap: usize) -> Result<Raster> {
    let first = images
        .first()
        .ok_or_else(|| Error::invalid("no images to lay out"))?;
    let (w, h, c) = (first.width, first.height, first.channels);
    if images
        .iter()
        .any(|im| (im.width, im.height, im.channels) != (w, h, c))
    {
        return Err(Error::invalid(
            "images in a grid must share size and channels",
        ));
    }
    let columns = columns.clamp(1, images.len());
    let rows = images.len().div_ceil(columns);
    let (gw, gh) = (
        columns * w + (columns + 1) * gap,
        rows * h + (rows + 1) * gap,
    );
    let mut pixels = vec![255u8; gw * gh * c];
    for (i, im) in images.iter().enumerate() {
        let (x0, y0) = (
            gap + (i % columns) * (w + gap),
            gap + (i / columns) * (h + gap),
        );
        for y in 0..h {
            let dst = ((y0 + y) * gw + x0) * c;
            pixels[dst..dst + w * c].copy_from_slice(&im.pixels[y * w * c..(y + 1) * w * c]);
        }
    }
    Raster::new(gw, gh, c, pixels)
}
