//! The in-memory image every transform works on.

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (`HWC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height × width × 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A black image.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height * 3],
        }
    }

    /// Wraps interleaved RGB bytes; `None` if the length does not match.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width * height * 3).then_some(Self {
            width,
            height,
            data,
        })
    }

    /// Replicates one grey channel into RGB (Pillow's `convert("RGB")` of an `L` image).
    pub fn from_gray(width: usize, height: usize, gray: &[u8]) -> Self {
        let mut data = Vec::with_capacity(gray.len() * 3);
        for &g in gray {
            data.extend_from_slice(&[g, g, g]);
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// Writes the image as planar `CHW` into `out` (`3 × height × width` bytes).
    pub fn write_chw(&self, out: &mut [u8]) {
        let plane = self.width * self.height;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            r[i] = px[0];
            g[i] = px[1];
            b[i] = px[2];
        }
    }
}
