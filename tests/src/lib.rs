//! The end-to-end harness: a real Kubernetes cluster on one machine (etcd, apiserver,
//! controller-manager, scheduler, two kubelets each with its own containerd), the local image
//! registry, `kubectl` and `helm` wrappers, and an OTLP receiver and metrics scraper for the
//! suites in `tests/tests/`.

pub mod agents;
pub mod cluster;
pub mod error;
pub mod helm;
pub mod kubectl;
pub mod observability;
pub mod operator;

/// The `p`th percentile (nearest rank) of ascending `sorted` samples; benchmarks report p50/p99.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub use cluster::{Cluster, ClusterInfo, NodeInfo};
pub use error::{Error, Result};
pub use kubectl::Kubectl;
