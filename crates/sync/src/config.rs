//! How an engine is set up.

use std::time::Duration;

use policy::CompilerConfig;
use ruleset::Netns;

use crate::error::Error;

/// Everything an [`crate::Engine`] is built from. `Default` is a sane production setup:
/// the current network namespace, IPv4 and IPv6, prefix `nf-`, marks 0x10000/0x20000, the
/// `FORWARD` hook, every pod local, a reconcile every 30 s.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The network namespace to program (by name under `/run/netns`, or by path).
    pub netns: Netns,
    /// Families, name prefix, mark bits, hook points and the local node: see
    /// [`CompilerConfig`].
    pub compiler: CompilerConfig,
    /// How often the kernel is checked for drift; `None` only on demand
    /// ([`crate::Engine::reconcile`]).
    pub reconcile_interval: Option<Duration>,
    /// The first wait after a failed commit; it doubles per failure up to
    /// [`Self::retry_max`].
    pub retry_min: Duration,
    /// The longest wait between retries.
    pub retry_max: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            netns: Netns::Current,
            compiler: CompilerConfig::default(),
            reconcile_interval: Some(Duration::from_secs(30)),
            retry_min: Duration::from_millis(1),
            retry_max: Duration::from_secs(2),
        }
    }
}

impl EngineConfig {
    /// Checks the config: the compiler's part, a non-zero reconcile interval and retry
    /// bounds with `retry_min <= retry_max`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<(), Error> {
        self.compiler.validate().map_err(|e| match e {
            policy::Error::Config { field, reason } => Error::Config {
                field: compiler_field(field),
                reason,
            },
            other => Error::Config {
                field: "compiler",
                reason: other.to_string(),
            },
        })?;
        if self.reconcile_interval == Some(Duration::ZERO) {
            return Err(Error::Config {
                field: "reconcile_interval",
                reason: "zero would reconcile without pause; use None for on demand only".into(),
            });
        }
        if self.retry_min.is_zero() || self.retry_min > self.retry_max {
            return Err(Error::Config {
                field: "retry_min",
                reason: format!(
                    "must be above zero and at most retry_max ({:?}), is {:?}",
                    self.retry_max, self.retry_min
                ),
            });
        }
        Ok(())
    }
}

/// The compiler's field names under `compiler.`, as static strings.
fn compiler_field(field: &str) -> &'static str {
    match field {
        "prefix" => "compiler.prefix",
        "families" => "compiler.families",
        "node" => "compiler.node",
        "ingress_mark" => "compiler.ingress_mark",
        "egress_mark" => "compiler.egress_mark",
        "hooks" => "compiler.hooks",
        _ => "compiler",
    }
}
