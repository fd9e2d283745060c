//! Channels-last ("NHWC") layout of the convolution weights (`csrc/memory_format.cpp`): tch has no
//! API for ATen's memory formats. A convolution whose weight is channels_last runs in that layout
//! and hands it on to the next layer, so converting the weights converts the network; the inputs
//! follow at the first convolution. Measured speed-ups are in `docs/benchmarks.md`.
use std::ffi::{CStr, c_char, c_int};

use tch::Tensor;

use super::params::Params;

unsafe extern "C" {
    fn kontrast_memory_format_last_error() -> *const c_char;
    fn kontrast_set_channels_last(tensor: *mut torch_sys::C_tensor) -> c_int;
    fn kontrast_is_channels_last(tensor: *const torch_sys::C_tensor, out: *mut c_int) -> c_int;
}

/// The layout of the convolution weights a run asks for (`kontrast train --layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// Channels-last on CUDA (tensor-core convolutions, above all under bf16/fp16 autocast);
    /// NCHW on the CPU, where a MoCo step was measured 4–8 % slower channels-last
    /// (`cargo bench -p kontrast-worker --bench layout`).
    #[default]
    Auto,
    /// Channels-last ("NHWC") always.
    ChannelsLast,
    /// NCHW, libtorch's default.
    Contiguous,
}

impl Layout {
    /// Whether to convert, for a model on `device`.
    pub fn channels_last(self, device: tch::Device) -> bool {
        match self {
            Layout::Auto => device.is_cuda(),
            Layout::ChannelsLast => true,
            Layout::Contiguous => false,
        }
    }
}

/// A layout change libtorch refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MemoryFormatError(String);

fn last_error() -> MemoryFormatError {
    // SAFETY: a NUL-terminated thread-local string that lives until the next failing call on this
    // thread; copied out at once.
    let message = unsafe { CStr::from_ptr(kontrast_memory_format_last_error()) };
    MemoryFormatError(message.to_string_lossy().into_owned())
}

/// Re-lays a 4-d tensor out as channels_last in place (the same tensor: module, optimiser and
/// autograd keep seeing it).
pub fn set_channels_last(tensor: &Tensor) -> Result<(), MemoryFormatError> {
    let mut handle = tensor.shallow_clone();
    // SAFETY: a defined tensor handle owned for the duration of the call; the shim catches every
    // C++ exception.
    match unsafe { kontrast_set_channels_last(handle.as_mut_ptr()) } {
        0 => Ok(()),
        _ => Err(last_error()),
    }
}

/// Whether `tensor` is 4-d and laid out channels_last.
pub fn is_channels_last(tensor: &Tensor) -> Result<bool, MemoryFormatError> {
    let mut out: c_int = 0;
    // SAFETY: as in `set_channels_last`; `out` is valid for the call.
    match unsafe { kontrast_is_channels_last(tensor.as_ptr(), &mut out) } {
        0 => Ok(out == 1),
        _ => Err(last_error()),
    }
}

/// Every 4-d floating-point tensor of `params` (the convolution weights) to channels_last.
pub fn convolutions_channels_last(params: &Params) -> Result<usize, MemoryFormatError> {
    let mut converted = 0;
    for e in params.entries() {
        if e.tensor.dim() == 4 && e.tensor.is_floating_point() {
            set_channels_last(&e.tensor)?;
            converted += 1;
        }
    }
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn converts_in_place_keeping_values_and_refuses_other_ranks() {
        let t = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let alias = t.shallow_clone();
        let before = t.copy();
        assert!(!is_channels_last(&t).expect("query"));
        set_channels_last(&t).expect("convert");
        assert!(
            is_channels_last(&alias).expect("query"),
            "the alias sees the new layout"
        );
        assert_eq!(t.stride(), [60, 1, 15, 3]);
        assert!(t.equal(&before));
        let err =
            set_channels_last(&Tensor::zeros([3, 4], (Kind::Float, Device::Cpu))).expect_err("2-d");
        assert!(err.to_string().contains("4-d"), "{err}");
    }
}
