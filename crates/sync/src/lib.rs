//! The netfence engine: the handle node agents embed.
//!
//! An [`Engine`] takes Kubernetes objects (`k8s-openapi` pods, namespaces and
//! NetworkPolicies) as deltas, and keeps one network namespace's nf_tables and ipset state
//! equal to what the policy compiler makes of them. Deltas go through a channel to the
//! engine's own thread, which alone holds the netlink sockets; it drains whatever is
//! waiting, recompiles incrementally, plans the change and commits it: one nf_tables batch
//! per burst, with ipset updates ordered around it so that no intermediate state allows
//! more than both the old and the new one.
//!
//! ```no_run
//! use std::time::Duration;
//! use sync::{Engine, EngineConfig};
//! use policy::k8s_openapi::api::core::v1::Namespace;
//!
//! let mut config = EngineConfig::default();
//! config.netns = ruleset::Netns::Named("node".into());
//! config.compiler.node = Some("worker-1".into());
//! config.reconcile_interval = Some(Duration::from_secs(60));
//! let engine = Engine::start(config)?;
//!
//! // Feed the first full list, then open the gate.
//! let mut ns = Namespace::default();
//! ns.metadata.name = Some("default".into());
//! engine.upsert_namespace(&ns);
//! engine.ready().wait()?;
//!
//! // From now on each delta reaches the kernel within one commit.
//! engine.delete_namespace("default").wait()?;
//! println!("{}", engine.metrics_text());
//! # Ok::<(), sync::Error>(())
//! ```
//!
//! Start-up adopts what an earlier process left (rules and sets are recognised by their
//! names and comments) and changes nothing until [`Engine::ready`]; a periodic
//! [`Engine::reconcile`] repairs drift; a concurrent writer (iptables-nft, kube-proxy) is
//! detected by the nf_tables generation id, and the engine observes again and retries.

#![warn(missing_docs)]

mod completion;
pub mod config;
mod engine;
pub mod error;
pub mod metrics;
mod worker;

pub use completion::Completion;
pub use config::EngineConfig;
pub use engine::{CommitError, Engine, ReconcileReport, Status};
pub use error::Error;
pub use metrics::{HistogramSnapshot, Metrics, MetricsSnapshot};
