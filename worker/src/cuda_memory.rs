//! Memory libtorch's CUDA caching allocator holds (`csrc/cuda_memory.cpp`), for the GPU-memory
//! gauge: tch does not expose the allocator's statistics.
use std::ffi::{CStr, c_char, c_int};

unsafe extern "C" {
    fn kontrast_cuda_memory_last_error() -> *const c_char;
    fn kontrast_cuda_memory(
        device: c_int,
        allocated: *mut i64,
        peak: *mut i64,
        reserved: *mut i64,
    ) -> c_int;
}

/// Allocator statistics of one device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    /// Held by tensors now.
    pub allocated: i64,
    /// The most held by tensors since the process started.
    pub peak: i64,
    /// Reserved from the driver (allocated plus the allocator's cache).
    pub reserved: i64,
}

/// The statistics of CUDA device `device`; an error without CUDA (a build without the `nccl`
/// feature) or for a device libtorch does not know.
pub fn cuda_memory(device: usize) -> Result<CudaMemory, String> {
    let device = c_int::try_from(device).map_err(|_| format!("device index {device}"))?;
    let (mut allocated, mut peak, mut reserved) = (0, 0, 0);
    // SAFETY: the out-pointers are valid for the call; the shim catches every C++ exception.
    let status = unsafe { kontrast_cuda_memory(device, &mut allocated, &mut peak, &mut reserved) };
    if status == 0 {
        return Ok(CudaMemory {
            allocated,
            peak,
            reserved,
        });
    }
    // SAFETY: a NUL-terminated thread-local string that lives until the next failing call on
    // this thread; copied out at once.
    let message = unsafe { CStr::from_ptr(kontrast_cuda_memory_last_error()) };
    Err(message.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_the_statistics_are_an_error_not_zeroes() {
        if tch::Cuda::is_available() {
            return;
        }
        assert!(cuda_memory(0).is_err());
    }
}
