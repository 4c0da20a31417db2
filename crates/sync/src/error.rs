//! The one error type of this crate.

use std::time::Duration;

/// What a call on the engine, or the completion of one, can report.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The engine's config is invalid; no engine was started.
    #[error("invalid engine config field {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },

    /// The delta was rejected before it reached the model; the rest of its burst still
    /// applies. The inner error names the object and the field.
    #[error("delta rejected: {0}")]
    Rejected(#[source] policy::Error),

    /// The engine could not open or read the kernel at start (not root, no such network
    /// namespace, no nf_tables or ipset).
    #[error("starting the engine: {0}")]
    Start(#[source] ruleset::Error),

    /// A planner refusal no retry can cure (a set whose type or family would change
    /// while rules reference it, or a name netfence owns held by a set of a type it does
    /// not manage). The engine keeps running and reports it until a later delta
    /// makes the plan possible.
    #[error("planning: {0}")]
    Plan(#[source] ruleset::Error),

    /// The kernel refused or failed an operation that is not retried on its own (a
    /// flush, an on-demand reconcile). The source names the object and keeps the errno.
    #[error("{op}: {source}")]
    Kernel {
        /// What the engine was doing: "reconciling", "flushing".
        op: &'static str,
        /// The kernel's refusal.
        #[source]
        source: ruleset::Error,
    },

    /// A flush removed what it could, but other rules still reference these sets, so the
    /// kernel kept them.
    #[error("flushing: sets still referenced after every retry: {}", .left.join(", "))]
    FlushIncomplete {
        /// The sets left behind.
        left: Vec<String>,
    },

    /// The call needs the engine to be ready (see [`crate::Engine::ready`]).
    #[error("the engine is not ready: the agent has not called ready() after its first full list")]
    NotReady,

    /// The engine stopped (shut down, flushed, or dropped) before it could complete the
    /// call.
    #[error("the engine has stopped")]
    Stopped,

    /// The wait ended before the completion did; the call itself goes on.
    #[error("no completion within {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// The kernel's errno behind the error, when the kernel refused something.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Start(e) | Self::Plan(e) | Self::Kernel { source: e, .. } => e.errno(),
            _ => None,
        }
    }

    /// Whether the same call may succeed later without any change by the caller: another
    /// writer raced the engine, or the kernel was momentarily short of memory or busy.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Start(e) | Self::Plan(e) | Self::Kernel { source: e, .. } => e.is_retryable(),
            Self::FlushIncomplete { .. } | Self::Timeout(_) => true,
            _ => false,
        }
    }
}
