//! What the worker finds at run time: useful first thing in a pod's log and in bug reports.
use anyhow::{Context, Result};
use serde::Serialize;
use tch::{Cuda, Device, Kind, Tensor};

/// The worker's view of its runtime.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Version of this binary.
    pub kontrast: &'static str,
    /// Whether libtorch sees a CUDA device.
    pub cuda_available: bool,
    /// Number of CUDA devices.
    pub cuda_devices: i64,
    /// Whether cuDNN is usable.
    pub cudnn_available: bool,
    /// Intra-op threads libtorch uses.
    pub threads: i32,
    /// Result of a small matrix product on the CPU, proving libtorch executes kernels.
    pub cpu_matmul_ok: bool,
}

impl Report {
    /// Probes libtorch.
    pub fn probe() -> Result<Self> {
        let a =
            Tensor::f_ones([4, 4], (Kind::Float, Device::Cpu)).context("allocating a tensor")?;
        let sum = a.f_matmul(&a)?.f_sum(Kind::Float)?.double_value(&[]);
        Ok(Self {
            kontrast: env!("CARGO_PKG_VERSION"),
            cuda_available: Cuda::is_available(),
            cuda_devices: Cuda::device_count(),
            cudnn_available: Cuda::cudnn_is_available(),
            threads: tch::get_num_threads(),
            cpu_matmul_ok: (sum - 64.0).abs() < 1e-6,
        })
    }
}
