//! The Kontrast API: the `ContrastiveRun` resource, the resolved run configuration the worker reads,
//! and the label/annotation contract shared by the operator, the worker pods and the monitoring stack.
//!
//! The operator reads a [`v1alpha1::ContrastiveRun`], calls
//! [`resolve`](v1alpha1::ContrastiveRunSpec::resolve) to get a [`config::RunConfig`] (or a
//! [`v1alpha1::SpecError`] naming every invalid field), and installs the CRD from [`crd::crd`].
#![deny(missing_docs)]

pub mod config;
pub mod crd;
pub mod labels;
pub mod progress;
pub mod v1alpha1;

#[cfg(test)]
mod testing;
