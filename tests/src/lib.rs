//! The end-to-end harness: a real Kubernetes cluster on one machine (etcd, apiserver,
//! controller-manager, scheduler, two kubelets each with its own containerd), the local image
//! registry, and a `kubectl` wrapper for the suites in `tests/tests/`.

pub mod cluster;
pub mod error;
pub mod kubectl;

pub use cluster::{Cluster, ClusterInfo, NodeInfo};
pub use error::{Error, Result};
pub use kubectl::Kubectl;
