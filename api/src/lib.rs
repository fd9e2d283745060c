//! The Kontrast API: the `ContrastiveRun` resource, the resolved run configuration the worker reads,
//! and the label/annotation contract shared by the operator, the worker pods and the monitoring stack.
#![deny(missing_docs)]

pub mod labels;
