//! Shared by the benchmarks (and by `tests/calico_baseline.rs`): a deterministic
//! cluster generator ([`cluster`]) and the Calico-like iptables/ipset baseline
//! rendered from the same cluster ([`calico`]).
//!
//! Include it with `#[path = "common/mod.rs"] mod common;` from a file in
//! `benches/`, or with `#[path = "../benches/common/mod.rs"]` from `tests/`.
//! Each includer uses part of it only, hence the `allow(dead_code)`.
//!
//! ```ignore
//! use common::{calico, cluster};
//! let g = cluster::generate(&cluster::ClusterSpec {
//!     dual_stack: true,
//!     ..cluster::ClusterSpec::new(10_000, 100, 1_000)
//! });
//! let before = g.cluster(); // policy::Cluster, through netfence's converters
//! let cfg = calico::CalicoConfig::new(g.spec.node.clone(), true);
//! let full = calico::render(&before, &cfg); // full sync: Baseline::steps()
//! let pod = cluster::to_pod(&g.extra_pod(0));
//! let add = calico::pod_added(&before, &pod, &cfg); // Delta::steps(), in order
//! // netfence's side of the same change: the k8s object g.extra_pod(0).
//! ```

#![allow(dead_code)]

pub mod calico;
pub mod cluster;
pub mod harness;
pub mod nft_native;
pub mod ns_command;
pub mod record;
