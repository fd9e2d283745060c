//! Autocast (automatic mixed precision) for a given device and dtype, through
//! `csrc/autocast_shim.cpp`: tch's own `autocast` only toggles CUDA autocast with float16, and
//! bfloat16 training runs on the CPU too.
//!
//! Inside an [`AutocastGuard`] libtorch runs its autocast op lists: matrix products and
//! convolutions in the reduced dtype, losses such as cross-entropy in fp32, other ops in the dtype
//! of their inputs. Parameters stay fp32 (their reduced-precision copies are cached for the
//! region), so gradients and optimiser state stay fp32 as well.
use std::ffi::{CStr, c_char, c_int};
use std::marker::PhantomData;

use kontrast_api::config::Precision;
use tch::{Device, Kind};
use tracing::warn;

unsafe extern "C" {
    fn kontrast_autocast_last_error() -> *const c_char;
    fn kontrast_autocast_state(device_type: c_int, enabled: *mut c_int, dtype: *mut c_int)
    -> c_int;
    fn kontrast_autocast_enter(
        device_type: c_int,
        scalar_type: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
    ) -> c_int;
    fn kontrast_autocast_exit(device_type: c_int, prev_enabled: c_int, prev_dtype: c_int) -> c_int;
}

/// `c10::DeviceType` values.
const DEVICE_CPU: c_int = 0;
const DEVICE_CUDA: c_int = 1;
/// `c10::ScalarType` values.
const SCALAR_HALF: c_int = 5;
const SCALAR_FLOAT: c_int = 6;
const SCALAR_BFLOAT16: c_int = 15;

/// Why autocast could not be entered or queried.
#[derive(Debug, thiserror::Error)]
pub enum AutocastError {
    /// Autocast is only wired for the CPU and CUDA.
    #[error("autocast is not supported on {0:?}")]
    Device(Device),
    /// Autocast computes in float16 or bfloat16 only.
    #[error("autocast computes in float16 or bfloat16, not {0:?}")]
    Kind(Kind),
    /// libtorch refused.
    #[error("libtorch: {0}")]
    Torch(String),
}

/// The autocast dtype of a run's precision: `None` for fp32 (no autocast).
pub fn autocast_kind(precision: Precision) -> Option<Kind> {
    match precision {
        Precision::Fp32 => None,
        Precision::Bf16 => Some(Kind::BFloat16),
        Precision::Fp16 => Some(Kind::Half),
    }
}

fn device_type(device: Device) -> Result<c_int, AutocastError> {
    match device {
        Device::Cpu => Ok(DEVICE_CPU),
        Device::Cuda(_) => Ok(DEVICE_CUDA),
        other => Err(AutocastError::Device(other)),
    }
}

fn scalar_type(kind: Kind) -> Result<c_int, AutocastError> {
    match kind {
        Kind::Half => Ok(SCALAR_HALF),
        Kind::BFloat16 => Ok(SCALAR_BFLOAT16),
        other => Err(AutocastError::Kind(other)),
    }
}

/// Turns a shim status into `Ok` or the message the shim recorded on this thread.
fn check(status: c_int) -> Result<(), AutocastError> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to its thread-local string, valid until its next failing
    // call on this thread; it is copied at once.
    let message = unsafe { CStr::from_ptr(kontrast_autocast_last_error()) };
    let message = message.to_string_lossy().trim().to_string();
    Err(AutocastError::Torch(if message.is_empty() {
        "unknown error".to_string()
    } else {
        message
    }))
}

/// The autocast dtype in force for `device` on this thread, or `None` when autocast is off.
pub fn autocast_state(device: Device) -> Result<Option<Kind>, AutocastError> {
    let device_type = device_type(device)?;
    let (mut enabled, mut dtype) = (0, SCALAR_FLOAT);
    // SAFETY: both pointers are valid for the call.
    check(unsafe { kontrast_autocast_state(device_type, &mut enabled, &mut dtype) })?;
    Ok((enabled != 0).then_some(match dtype {
        SCALAR_HALF => Kind::Half,
        SCALAR_BFLOAT16 => Kind::BFloat16,
        _ => Kind::Float,
    }))
}

/// Autocast for one device while alive; dropping it restores the state it found (guards nest).
/// Autocast state is thread-local in libtorch, so the guard cannot leave its thread.
#[derive(Debug)]
#[must_use = "autocast ends when the guard is dropped"]
pub struct AutocastGuard {
    device_type: c_int,
    prev_enabled: c_int,
    prev_dtype: c_int,
    /// Neither `Send` nor `Sync`.
    _thread: PhantomData<*const ()>,
}

impl AutocastGuard {
    /// Runs ops on `device` under autocast to `kind` (float16 or bfloat16) until dropped.
    pub fn enter(device: Device, kind: Kind) -> Result<Self, AutocastError> {
        let device_type = device_type(device)?;
        let scalar_type = scalar_type(kind)?;
        let (mut prev_enabled, mut prev_dtype) = (0, SCALAR_FLOAT);
        // SAFETY: both pointers are valid for the call; on failure the shim changed nothing.
        check(unsafe {
            kontrast_autocast_enter(device_type, scalar_type, &mut prev_enabled, &mut prev_dtype)
        })?;
        Ok(Self {
            device_type,
            prev_enabled,
            prev_dtype,
            _thread: PhantomData,
        })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: plain integers saved by the matching enter on this thread.
        let status =
            unsafe { kontrast_autocast_exit(self.device_type, self.prev_enabled, self.prev_dtype) };
        if let Err(e) = check(status) {
            // Only reachable with a corrupted saved state; a destructor has no one to tell.
            warn!(error = %e, "leaving autocast failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::Tensor;

    use super::*;

    #[test]
    fn precisions_map_to_autocast_dtypes() {
        assert_eq!(autocast_kind(Precision::Fp32), None);
        assert_eq!(autocast_kind(Precision::Bf16), Some(Kind::BFloat16));
        assert_eq!(autocast_kind(Precision::Fp16), Some(Kind::Half));
    }

    #[test]
    fn guards_nest_and_restore_the_state_they_found() {
        let x = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        assert_eq!(autocast_state(Device::Cpu).unwrap(), None);
        {
            let _outer = AutocastGuard::enter(Device::Cpu, Kind::BFloat16).unwrap();
            assert_eq!(x.mm(&x).kind(), Kind::BFloat16);
            {
                let _inner = AutocastGuard::enter(Device::Cpu, Kind::Half).unwrap();
                assert_eq!(autocast_state(Device::Cpu).unwrap(), Some(Kind::Half));
                assert_eq!(x.mm(&x).kind(), Kind::Half);
            }
            assert_eq!(autocast_state(Device::Cpu).unwrap(), Some(Kind::BFloat16));
            // The CUDA state is separate.
            assert_eq!(autocast_state(Device::Cuda(0)).unwrap(), None);
        }
        assert_eq!(autocast_state(Device::Cpu).unwrap(), None);
        assert_eq!(x.mm(&x).kind(), Kind::Float);
    }

    #[test]
    fn only_reduced_float_kinds_are_accepted() {
        let err = AutocastGuard::enter(Device::Cpu, Kind::Float).unwrap_err();
        assert!(matches!(err, AutocastError::Kind(Kind::Float)), "{err}");
        assert_eq!(autocast_state(Device::Cpu).unwrap(), None);
    }
}
