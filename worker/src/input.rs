//! Loader output → network input: u8 RGB planes to normalised float tensors on the device.
use kontrast_data::View;
use tch::{Device, Kind, Tensor};

/// Uploads loader views and normalises them on the device, with the ImageNet mean and standard
/// deviation (torchvision's `ToTensor` + `Normalize`). Only bytes cross the bus; the constants
/// are uploaded once, because on CUDA every small blocking copy is a synchronisation point.
pub struct Normalizer {
    device: Device,
    kind: Kind,
    mean: Tensor,
    std: Tensor,
}

impl Normalizer {
    /// Constants on `device`.
    pub fn new(device: Device) -> Self {
        let constant = |values: &[f32; 3]| {
            Tensor::from_slice(values)
                .view([1, 3, 1, 1])
                .to_device(device)
        };
        Self {
            device,
            kind: Kind::Float,
            mean: constant(&kontrast_data::MEAN),
            std: constant(&kontrast_data::STD),
        }
    }

    /// Hands the network `kind` (bf16 or f16 under mixed precision): normalised in f32, then
    /// rounded once — what autocast does at the first convolution anyway, so the numbers are
    /// the same, while the views held for the step and gathered for shuffle BN take half the
    /// bytes.
    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// `view` (b×3×s×s bytes) as a u8 tensor on the device. On CUDA the bytes go through
    /// page-locked memory with an asynchronous copy, so the upload overlaps with the kernels
    /// still queued; libtorch's caching host allocator keeps the pinned block until the copy
    /// has completed, so dropping it on return is safe.
    pub fn upload(&self, view: &View, batch: usize) -> Tensor {
        let s = view.size as i64;
        let host = Tensor::from_slice(&view.data).view([batch as i64, 3, s, s]);
        match self.device {
            Device::Cuda(_) => {
                host.pin_memory(self.device)
                    .to_device_(self.device, Kind::Uint8, true, false)
            }
            _ => host,
        }
    }

    /// Uploaded bytes (…×3×s×s u8) → float, scaled to [0, 1] and normalised.
    pub fn normalize(&self, bytes: &Tensor) -> Tensor {
        let x = (bytes.to_kind(Kind::Float) / 255.0 - &self.mean) / &self.std;
        if self.kind == Kind::Float {
            x
        } else {
            x.to_kind(self.kind)
        }
    }

    /// [`upload`](Self::upload) then [`normalize`](Self::normalize).
    pub fn apply(&self, view: &View, batch: usize) -> Tensor {
        self.normalize(&self.upload(view, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_torchvision_to_tensor_then_normalize() {
        let data: Vec<u8> = (0..2 * 3 * 2 * 2).map(|i| (i * 21 % 256) as u8).collect();
        let view = View { size: 2, data };
        let x = Normalizer::new(Device::Cpu).apply(&view, 2);
        assert_eq!(x.size(), [2, 3, 2, 2]);
        for (i, byte) in view.data.iter().enumerate() {
            let c = (i / 4) % 3;
            let want = (f32::from(*byte) / 255.0 - kontrast_data::MEAN[c]) / kontrast_data::STD[c];
            let got = x.view([-1]).double_value(&[i as i64]) as f32;
            assert!((got - want).abs() < 1e-6, "{i}: {got} vs {want}");
        }
        let half = Normalizer::new(Device::Cpu)
            .with_kind(Kind::BFloat16)
            .apply(&view, 2);
        assert_eq!(half.kind(), Kind::BFloat16);
        assert!(half.equal(&x.to_kind(Kind::BFloat16)));
    }
}
