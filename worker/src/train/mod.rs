//! The training loop: MoCo v2 and the Revisiting recipe.
pub mod cli;
pub mod collectives;
pub mod config;
pub mod error;
pub mod loss_scale;
pub mod monitor;
pub mod precision;
pub mod progress_bar;
pub mod schedule;
pub mod sgd;
pub mod state;
pub mod step;
pub mod trainer;

pub use error::TrainError;
