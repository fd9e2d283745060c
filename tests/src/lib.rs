//! The local Kubernetes cluster Kontrast's tests and demo run against: a real etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler (built from Debian's source package),
//! a node that runs pods as local processes ([`node`]), and Prometheus discovering pods through an
//! HTTP service-discovery endpoint ([`discovery`]).
#![deny(missing_docs)]

pub mod chart;
pub mod cluster;
pub mod crd;
pub mod dashboards;
pub mod discovery;
pub mod error;
pub mod kubeconfig;
pub mod loopback;
pub mod node;
pub mod operator_scale;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod testing;
pub mod wait;

pub use cluster::{Cluster, ClusterOptions, ClusterState};
pub use error::{Error, Result};
