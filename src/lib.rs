//! netfence: Kubernetes NetworkPolicy enforced over nf_tables and ipset netlink.
//!
//! This facade re-exports the crates an embedder uses; the README below is the guide, and
//! its examples are compiled as doctests.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use netfilter;
pub use policy;
pub use ruleset;
pub use sync;
pub mod demo;
pub mod manifest;
