//! The Kontrast worker: MoCo v2 and "Revisiting Contrastive Methods" pre-training on libtorch,
//! data-parallel over PyTorch's c10d process groups, with checkpoints and metrics.
//!
//! The `kontrast` binary (`src/main.rs`) only wires these modules to its command line.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod cuda_memory;
pub mod dist;
pub mod eval;
pub mod import;
pub mod info;
pub mod input;
pub mod launch;
pub mod model;
pub mod telemetry;
pub mod train;
