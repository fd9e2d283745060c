//! Image decoding to RGB: JPEG (libjpeg-turbo through `turbojpeg`, or `zune-jpeg`) and PNG, with
//! the dimensions read first so a crop can choose a reduced DCT scale before decoding.
//!
//! Conversions follow Pillow's `convert("RGB")`: grey is replicated, alpha dropped, palettes
//! expanded, CMYK converted with Pillow's formula (Adobe-inverted CMYK un-inverted first),
//! 16-bit samples keep their high byte.

use crate::image::RgbImage;

/// Largest image accepted (Pillow's decompression-bomb warning threshold); larger declared
/// sizes are rejected before any pixel memory is allocated.
pub const MAX_PIXELS: usize = 89_478_485;

/// Container format, from the file's magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG (`FF D8 FF`).
    Jpeg,
    /// PNG.
    Png,
}

/// JPEG decoder implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegBackend {
    /// libjpeg-turbo (SIMD; the decoder inside Pillow's wheels, so decoded pixels match
    /// Pillow's; supports DCT-domain downscaling).
    #[cfg(feature = "turbojpeg")]
    Turbo,
    /// zune-jpeg (pure Rust; no DCT scaling; may differ from libjpeg by a few levels).
    Zune,
}

impl Default for JpegBackend {
    fn default() -> Self {
        #[cfg(feature = "turbojpeg")]
        return JpegBackend::Turbo;
        #[cfg(not(feature = "turbojpeg"))]
        return JpegBackend::Zune;
    }
}

/// Declared size of an encoded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Container format.
    pub format: Format,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Why an image could not be decoded (a human-readable reason).
pub type Reason = String;

fn format_of(bytes: &[u8]) -> Result<Format, Reason> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(Format::Png)
    } else {
        Err("not a JPEG or PNG file (unrecognised leading bytes)".into())
    }
}

fn check_size(width: usize, height: usize) -> Result<(), Reason> {
    if width == 0 || height == 0 {
        return Err(format!("declared size {width}×{height} is empty"));
    }
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(format!(
            "declared size {width}×{height} exceeds the {MAX_PIXELS}-pixel limit"
        ));
    }
    Ok(())
}

/// Reads the format and declared size without decoding pixels.
pub fn probe(bytes: &[u8], backend: JpegBackend) -> Result<Probe, Reason> {
    let format = format_of(bytes)?;
    let (width, height) = match format {
        Format::Png => {
            let reader = png::Decoder::new(std::io::Cursor::new(bytes))
                .read_info()
                .map_err(|e| format!("PNG header: {e}"))?;
            let info = reader.info();
            (info.width as usize, info.height as usize)
        }
        Format::Jpeg => match backend {
            #[cfg(feature = "turbojpeg")]
            JpegBackend::Turbo => {
                let h = turbojpeg::read_header(bytes).map_err(|e| format!("JPEG header: {e}"))?;
                (h.width, h.height)
            }
            JpegBackend::Zune => {
                let mut d = zune_jpeg::JpegDecoder::new(
                    zune_jpeg::zune_core::bytestream::ZCursor::new(bytes),
                );
                d.decode_headers()
                    .map_err(|e| format!("JPEG header: {e:?}"))?;
                let info = d.info().ok_or("JPEG header: no frame")?;
                (info.width as usize, info.height as usize)
            }
        },
    };
    check_size(width, height)?;
    Ok(Probe {
        format,
        width,
        height,
    })
}

/// DCT scale denominators libjpeg-turbo decodes natively.
pub const DCT_DENOMS: [usize; 4] = [1, 2, 4, 8];

/// Decodes to RGB. For JPEG with [`JpegBackend`] `Turbo`, `denom > 1` decodes at
/// `1/denom` scale in the DCT domain (dimensions rounded up); other formats ignore it.
pub fn decode(bytes: &[u8], backend: JpegBackend, denom: usize) -> Result<RgbImage, Reason> {
    let p = probe(bytes, backend)?;
    match p.format {
        Format::Png => decode_png(bytes),
        Format::Jpeg => match backend {
            #[cfg(feature = "turbojpeg")]
            JpegBackend::Turbo => decode_turbo(bytes, denom),
            JpegBackend::Zune => {
                let _ = denom;
                decode_zune(bytes)
            }
        },
    }
}

/// Pillow's `cmyk2rgb`: `nk − nk·c/255` per channel with `nk = 255 − k`.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let muldiv255 = |a: i32, b: i32| {
        let t = a * b + 128;
        (t + (t >> 8)) >> 8
    };
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let v = |i: usize| {
            if inverted {
                255 - px[i] as i32
            } else {
                px[i] as i32
            }
        };
        let nk = 255 - v(3);
        for c in 0..3 {
            out.push((nk - muldiv255(v(c), nk)).clamp(0, 255) as u8);
        }
    }
    out
}

/// Whether a JPEG carries an Adobe APP14 segment (whose CMYK is stored inverted).
fn has_adobe_marker(bytes: &[u8]) -> bool {
    bytes
        .windows(9)
        .take(64 * 1024)
        .any(|w| w[0] == 0xFF && w[1] == 0xEE && &w[4..9] == b"Adobe")
}

#[cfg(feature = "turbojpeg")]
fn decode_turbo(bytes: &[u8], denom: usize) -> Result<RgbImage, Reason> {
    use std::cell::RefCell;
    use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};
    thread_local! {
        static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
    }
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Decompressor::new().map_err(|e| format!("turbojpeg init: {e}"))?);
        }
        let d = slot.as_mut().ok_or("turbojpeg init")?;
        let header = d
            .read_header(bytes)
            .map_err(|e| format!("JPEG header: {e}"))?;
        let factor = ScalingFactor::new(
            1,
            if DCT_DENOMS.contains(&denom) {
                denom
            } else {
                1
            },
        );
        d.set_scaling_factor(factor)
            .map_err(|e| format!("JPEG scaling: {e}"))?;
        let scaled = header.scaled(factor);
        let (w, h) = (scaled.width, scaled.height);
        let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
        let format = if cmyk {
            PixelFormat::CMYK
        } else {
            PixelFormat::RGB
        };
        let mut pixels = vec![0u8; w * h * format.size()];
        let image = Image {
            pixels: pixels.as_mut_slice(),
            width: w,
            pitch: w * format.size(),
            height: h,
            format,
        };
        d.decompress(bytes, image)
            .map_err(|e| format!("JPEG data: {e}"))?;
        let data = if cmyk {
            cmyk_to_rgb(&pixels, has_adobe_marker(bytes))
        } else {
            pixels
        };
        RgbImage::from_raw(w, h, data).ok_or_else(|| "JPEG: output size mismatch".to_string())
    })
}

fn decode_zune(bytes: &[u8]) -> Result<RgbImage, Reason> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    // Strict mode turns a truncated stream into an error, as Pillow reports it, instead of
    // grey-filling the rest.
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    d.decode_headers()
        .map_err(|e| format!("JPEG header: {e:?}"))?;
    let input = d.input_colorspace();
    let cmyk = matches!(input, Some(ColorSpace::CMYK) | Some(ColorSpace::YCCK));
    if cmyk {
        d.set_options(options.jpeg_set_out_colorspace(ColorSpace::CMYK));
    }
    let pixels = d.decode().map_err(|e| format!("JPEG data: {e:?}"))?;
    let info = d.info().ok_or("JPEG: no frame")?;
    let (w, h) = (info.width as usize, info.height as usize);
    let data = if cmyk {
        cmyk_to_rgb(&pixels, has_adobe_marker(bytes))
    } else {
        pixels
    };
    RgbImage::from_raw(w, h, data).ok_or_else(|| "JPEG: output size mismatch".to_string())
}

fn decode_png(bytes: &[u8]) -> Result<RgbImage, Reason> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("PNG header: {e}"))?;
    // The png crate panics expanding a palette that is not whole RGB entries or holds more than
    // 256 of them; the PNG specification makes both an error.
    if let Some(palette) = reader.info().palette.as_deref()
        && (palette.is_empty() || !palette.len().is_multiple_of(3) || palette.len() > 3 * 256)
    {
        return Err(format!(
            "PNG header: a palette of {} bytes is not 1 to 256 RGB entries",
            palette.len()
        ));
    }
    let size = reader.output_buffer_size().ok_or("PNG: output too large")?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("PNG data: {e}"))?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let channels = frame.color_type.samples();
    buf.truncate(frame.buffer_size());
    let data = match channels {
        3 if frame.line_size == w * 3 => buf,
        1..=4 => {
            let mut out = Vec::with_capacity(w * h * 3);
            for row in buf.chunks_exact(frame.line_size).take(h) {
                for px in row[..w * channels].chunks_exact(channels) {
                    if channels >= 3 {
                        out.extend_from_slice(&px[..3]);
                    } else {
                        out.extend_from_slice(&[px[0], px[0], px[0]]);
                    }
                }
            }
            out
        }
        n => return Err(format!("PNG: unsupported channel count {n}")),
    };
    RgbImage::from_raw(w, h, data).ok_or_else(|| "PNG: output size mismatch".to_string())
}
