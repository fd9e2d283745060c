//! The training loop: MoCo v2 and the Revisiting recipe.
pub mod schedule;
pub mod sgd;
pub mod step;
