//! Loader output → network input: u8 RGB planes to normalised float tensors on the device.
use kontrast_data::View;
use tch::{Device, Kind, Tensor};

/// `view` (b×3×s×s bytes) as a b×3×s×s float tensor on `device`, scaled to [0, 1] and
/// normalised with the ImageNet mean and standard deviation (torchvision's `ToTensor` +
/// `Normalize`). The conversion happens on the device, so only bytes cross the bus.
pub fn normalized(view: &View, batch: usize, device: Device) -> Tensor {
    let mean = Tensor::from_slice(&kontrast_data::MEAN)
        .view([1, 3, 1, 1])
        .to_device(device);
    let std = Tensor::from_slice(&kontrast_data::STD)
        .view([1, 3, 1, 1])
        .to_device(device);
    let s = view.size as i64;
    let x = Tensor::from_slice(&view.data)
        .view([batch as i64, 3, s, s])
        .to_device(device)
        .to_kind(Kind::Float)
        / 255.0;
    (x - mean) / std
}
