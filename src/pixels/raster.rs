//! `Raster`: a small 8-bit image (grey or RGB) as the palette, datasets and grids see it.

use crate::error::{Error, Result};

/// The largest width or height [`Raster::decode`] accepts: far above any model's input, and a cap on
/// what a hostile header can make it allocate.
pub(crate) const MAX_IMAGE_SIDE: u32 = 8192;

/// The most memory the image decoder may allocate (an 8192x8192 RGBA image is 256 MiB).
#[cfg(not(target_arch = "wasm32"))]
const MAX_DECODE_BYTES: u64 = 512 << 20;

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
        let needed = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(channels));
        if needed != Some(pixels.len()) {
            return Err(Error::invalid(format!(
                "a {width}x{height}x{channels} image needs {} bytes, got {}",
                needed.map_or("more than usize::MAX".into(), |n| n.to_string()),
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
    /// Transparent pixels are laid over black, the datasets' background.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn decode(bytes: &[u8], channels: usize) -> Result<Self> {
        Self::from_dynamic(decode_capped(bytes)?, channels)
    }

    /// Reads an image file into `channels` channels.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path, channels: usize) -> Result<Self> {
        let bytes = crate::error::read_file(path)?;
        Self::decode(&bytes, channels).map_err(|e| Error::format(path, e.to_string()))
    }

    /// RGBA pixels (a decoded file, a canvas) in `channels` channels, transparency laid over black.
    pub(crate) fn from_rgba(
        width: usize,
        height: usize,
        rgba: &[u8],
        channels: usize,
    ) -> Result<Self> {
        if Some(rgba.len()) != width.checked_mul(height).and_then(|n| n.checked_mul(4)) {
            return Err(Error::invalid(format!(
                "{width}x{height} RGBA pixels need 4 bytes each, got {} bytes",
                rgba.len()
            )));
        }
        // Premultiplying by alpha is compositing over black.
        let rgb = rgba
            .chunks_exact(4)
            .flat_map(|p| {
                let a = u16::from(p[3]);
                [0, 1, 2].map(|c| ((u16::from(p[c]) * a + 127) / 255) as u8)
            })
            .collect();
        Ok(Self::new(width, height, 3, rgb)?.with_channels(channels))
    }

    pub(crate) fn from_dynamic(img: image::DynamicImage, channels: usize) -> Result<Self> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if img.color().has_alpha() {
            return Self::from_rgba(w, h, &img.into_rgba8().into_raw(), channels);
        }
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

    pub(crate) fn to_dynamic(&self) -> image::DynamicImage {
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
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.to_dynamic()
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| Error::invalid(format!("cannot encode PNG: {e}")))?;
        Ok(out.into_inner())
    }
}

/// The width and height an image file declares in its header (PNG, JPEG, GIF, BMP, WebP), refused
/// when over [`MAX_IMAGE_SIDE`]: checked before any decoder allocates pixels, natively and in the
/// browser (whose decoder cannot be capped).
pub(crate) fn declared_size(bytes: &[u8]) -> Result<(u32, u32)> {
    use imagesize::ImageError;
    let size = imagesize::blob_size(bytes).map_err(|e| {
        Error::invalid(match e {
            ImageError::NotSupported => {
                "cannot decode image: it is not a PNG, JPEG, GIF, BMP or WebP file".to_string()
            }
            ImageError::CorruptedImage | ImageError::IoError(_) => {
                "cannot decode image: the file ends before its header does".to_string()
            }
        })
    })?;
    let (width, mut height) = (size.width, size.height);
    // imagesize reads a BMP's height as unsigned, but a negative one only marks a top-down BMP.
    if let (Some(b"BM"), Some(h)) = (bytes.get(..2), bytes.get(22..26)) {
        height = i32::from_le_bytes(h.try_into().expect("four bytes")).unsigned_abs() as usize;
    }
    if width > MAX_IMAGE_SIDE as usize || height > MAX_IMAGE_SIDE as usize {
        return Err(Error::invalid(format!(
            "the image is {width}x{height} pixels: the limit is {MAX_IMAGE_SIDE} pixels a side"
        )));
    }
    Ok((width as u32, height as u32))
}

/// Decodes an image as it is (alpha kept). The header's size is checked against [`MAX_IMAGE_SIDE`]
/// before any pixel is allocated, and the decoder's own allocations are capped, so a small file
/// declaring a huge image is a clear error.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn decode_capped(bytes: &[u8]) -> Result<image::DynamicImage> {
    declared_size(bytes)?;
    // Some decoders' messages span lines; the error is one line wherever it is shown.
    let cannot = |e: image::ImageError| {
        let reason = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Error::invalid(format!("cannot decode image: {reason}"))
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .expect("reading from memory cannot fail");
    reader.limits(limits);
    reader.decode().map_err(cannot)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG declaring `width`x`height` 8-bit grey, with an empty IDAT chunk: no pixel data.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            let length = (data.len() as u32).to_be_bytes();
            [&length, kind, data, &crc.sum().to_be_bytes()].concat()
        };
        let ihdr = [
            &width.to_be_bytes()[..],
            &height.to_be_bytes(),
            &[8, 0, 0, 0, 0],
        ]
        .concat();
        [
            &b"\x89PNG\r\n\x1a\n"[..],
            &chunk(b"IHDR", &ihdr),
            &chunk(b"IDAT", &[]),
        ]
        .concat()
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_decoding() {
        let err = Raster::decode(&png_header(10_000, 10_000), 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("10000x10000 pixels: the limit is 8192 pixels a side"),
            "{err}"
        );
        // Within the limit the header passes, and the missing pixel data is the error.
        let err = Raster::decode(&png_header(100, 100), 1).unwrap_err();
        assert!(err.to_string().contains("cannot decode image"), "{err}");
        assert!(Raster::decode(&[], 3).is_err());
    }

    #[test]
    fn headers_give_a_size_or_say_what_is_wrong() {
        assert_eq!(declared_size(&png_header(28, 20)).unwrap(), (28, 20));
        // GIF: the logical screen's width and height, little-endian, after the signature.
        let gif = [&b"GIF89a"[..], &[0x10, 0x27, 0x10, 0x27], &[0; 16]].concat();
        let err = declared_size(&gif).unwrap_err().to_string();
        assert!(err.contains("10000x10000 pixels: the limit"), "{err}");
        let err = declared_size(b"this is not an image")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot decode image: it is not a PNG"),
            "{err}"
        );
        let err = declared_size(&png_header(28, 20)[..14])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot decode image: the file ends"), "{err}");
        assert!(declared_size(&[]).is_err());
    }

    #[test]
    fn a_top_down_bmp_declares_its_height_as_negative() {
        // BITMAPFILEHEADER (14 bytes), then BITMAPINFOHEADER's size, width and height.
        let bmp = |height: i32| {
            [
                &b"BM"[..],
                &[0; 12],
                &40u32.to_le_bytes(),
                &28i32.to_le_bytes(),
                &height.to_le_bytes(),
                &[0; 28],
            ]
            .concat()
        };
        assert_eq!(declared_size(&bmp(-20)).unwrap(), (28, 20));
        assert_eq!(declared_size(&bmp(20)).unwrap(), (28, 20));
        assert!(declared_size(&bmp(-10_000)).is_err());

        // And a whole top-down 2x2 24-bit BMP decodes, its first row on top (rows padded to 4 bytes).
        let info = [
            &40u32.to_le_bytes()[..],
            &2i32.to_le_bytes(),
            &(-2i32).to_le_bytes(),
            &1u16.to_le_bytes(),
            &24u16.to_le_bytes(),
            &[0; 24],
        ]
        .concat();
        let rows = [
            [0, 0, 255, 0, 255, 0, 0, 0],
            [255, 0, 0, 255, 255, 255, 0, 0],
        ]
        .concat();
        let file = [
            &b"BM"[..],
            &70u32.to_le_bytes(),
            &[0; 4],
            &54u32.to_le_bytes(),
            &info,
            &rows,
        ]
        .concat();
        let raster = Raster::decode(&file, 3).unwrap();
        assert_eq!(
            raster.pixels,
            [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]
        );
    }

    #[test]
    fn rgba_is_laid_over_black_and_checked() {
        let rgba = [255, 255, 255, 0, 200, 100, 50, 255, 200, 100, 50, 128];
        let raster = Raster::from_rgba(3, 1, &rgba, 3).unwrap();
        assert_eq!(raster.pixels, [0, 0, 0, 200, 100, 50, 100, 50, 25]);
        assert_eq!(Raster::from_rgba(3, 1, &rgba, 1).unwrap().pixels.len(), 3);
        assert!(Raster::from_rgba(2, 2, &rgba, 3).is_err());
        assert!(Raster::from_rgba(usize::MAX, 2, &rgba, 3).is_err());
    }

    #[test]
    fn transparent_pixels_are_laid_over_black() {
        let rgba = image::RgbaImage::from_raw(
            3,
            1,
            vec![255, 255, 255, 0, 200, 100, 50, 255, 200, 100, 50, 128],
        )
        .unwrap();
        let mut png = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgba8(rgba)
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let raster = Raster::decode(png.get_ref(), 3).unwrap();
        assert_eq!(raster.pixels, [0, 0, 0, 200, 100, 50, 100, 50, 25]);
    }
}
