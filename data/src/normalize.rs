//! ImageNet normalisation, for CPU use and tests (the trainer normalises on the device).

/// Per-channel mean (RGB) of torchvision's `Normalize`.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation (RGB).
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Converts planar `u8` images (`n × 3 × plane`, CHW per image) to normalised `f32`, exactly as
/// `ToTensor()` (`x / 255`) followed by `Normalize(MEAN, STD)` computes it in `f32`.
///
/// `plane` is `height × width`. Panics if `dst` is shorter than `src` or `src` is not a whole
/// number of images.
pub fn normalize_into(src: &[u8], plane: usize, dst: &mut [f32]) {
    assert!(
        plane > 0 && src.len().is_multiple_of(3 * plane),
        "source is not n × 3 × plane"
    );
    assert!(dst.len() >= src.len(), "destination shorter than source");
    for (i, (s, d)) in src.chunks(plane).zip(dst.chunks_mut(plane)).enumerate() {
        let c = i % 3;
        let (m, sd) = (MEAN[c], STD[c]);
        for (x, y) in s.iter().zip(d.iter_mut()) {
            *y = (*x as f32 / 255.0 - m) / sd;
        }
    }
}
