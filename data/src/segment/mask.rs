//! Label masks: one class index per pixel, [`IGNORE`] where no class applies.

use crate::decode::{MAX_PIXELS, Reason};

/// The label of pixels that count for no class (VOC's object borders, padding, rotation fill).
pub const IGNORE: u8 = 255;

/// A label mask, rows top to bottom, one byte per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height × width` class indices.
    pub data: Vec<u8>,
}

impl Mask {
    /// A mask of `IGNORE` everywhere.
    pub fn ignore(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![IGNORE; width * height],
        }
    }

    /// Wraps class indices; `None` if the length does not match.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width * height).then_some(Self {
            width,
            height,
            data,
        })
    }
}

/// Reads a PNG label mask as Pillow's `np.array(Image.open(path))` does: a palette PNG (VOC's
/// `SegmentationClass`) gives its palette *indices*, which are the classes (the colours are
/// only for viewing), and an 8-bit greyscale PNG (Cityscapes' `*_labelTrainIds.png`) its
/// values. Anything else is rejected: expanding an RGB mask to classes needs a colour map,
/// which would silently mislabel a file saved in the wrong mode.
pub fn decode_mask(bytes: &[u8]) -> Result<Mask, Reason> {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(if bytes.is_empty() {
            "empty mask file".into()
        } else {
            "mask is not a PNG file (unrecognised leading bytes)".into()
        });
    }
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    // No expansion: palette indices must stay indices.
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("mask PNG header: {e}"))?;
    let (width, height) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    if width == 0 || height == 0 || width.saturating_mul(height) > MAX_PIXELS {
        return Err(format!("mask declares an unusable size {width}×{height}"));
    }
    let size = reader
        .output_buffer_size()
        .ok_or("mask PNG: output too large")?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("mask PNG data: {e}"))?;
    // An APNG's first frame may cover only part of the declared image; its rows are shorter.
    if (frame.width as usize, frame.height as usize) != (width, height) {
        return Err(format!(
            "mask PNG's first frame is {}×{} inside a {width}×{height} image; a label mask \
             must be one full frame",
            frame.width, frame.height
        ));
    }
    let depth = frame.bit_depth as u8;
    match (frame.color_type, depth) {
        (png::ColorType::Indexed, 1 | 2 | 4 | 8) | (png::ColorType::Grayscale, 8) => {}
        (color, depth) => {
            return Err(format!(
                "mask PNG is {color:?} at {depth} bits per sample; a label mask must be a \
                 palette PNG (class = palette index) or 8-bit greyscale"
            ));
        }
    }
    let mut data = Vec::with_capacity(width * height);
    let per_byte = 8 / depth as usize;
    let max = (1u16 << depth) - 1;
    for row in buf.chunks_exact(frame.line_size).take(height) {
        if depth == 8 {
            data.extend_from_slice(&row[..width]);
            continue;
        }
        // Packed samples, most significant bits first.
        for x in 0..width {
            let byte = row[x / per_byte];
            let shift = 8 - depth as usize * (x % per_byte + 1);
            data.push(((byte as u16 >> shift) & max) as u8);
        }
    }
    Mask::from_raw(width, height, data).ok_or_else(|| "mask PNG: output size mismatch".into())
}
