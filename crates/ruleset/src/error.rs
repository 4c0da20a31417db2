//! The one error type of this crate.

/// What can go wrong building a ruleset, planning, or executing a plan.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The model is inconsistent or a value is out of the kernel's limits; nothing was sent.
    #[error("invalid {object}: {reason}")]
    Invalid {
        /// The object and field: "rule #3 of chain ip filter nf-fw", "set nf-pods".
        object: String,
        /// Why.
        reason: String,
    },

    /// A set must change its type or family while rules still reference it. The kernel
    /// can't do that in place, not even by a swap, and no order of steps would be
    /// fail-closed, so the planner refuses: give the new definition a new name. (A new
    /// capacity is swapped in; see [`crate::SetOp::Swap`].)
    #[error(
        "set {name} is redefined ({from} -> {to}) while rules reference it; use a new set name"
    )]
    SetRedefined {
        /// The set.
        name: String,
        /// Its definition in the kernel.
        from: String,
        /// The desired definition.
        to: String,
    },

    /// A rule the plan must delete, replace or place around has no kernel handle: the
    /// current state was not observed from the kernel (or was not kept up to date).
    #[error("rule {what} has no kernel handle; plan against an observed state")]
    NoHandle {
        /// The rule.
        what: String,
    },

    /// An in-memory application of a plan broke a rule the kernel enforces (a planner bug,
    /// or a plan applied to a state it was not made for).
    #[error("plan step {step} can't apply: {reason}")]
    Inapplicable {
        /// The step, as [`crate::plan::Step`] displays it.
        step: String,
        /// Which kernel rule it breaks.
        reason: String,
    },

    /// The kernel refused a step of a plan. Steps before it were applied; by the ordering
    /// invariant of [`crate::plan`] the kernel is fail-closed. Observe again before the
    /// next plan.
    #[error("plan step {step} of {total} failed: {source}")]
    Step {
        /// The step's number, from 1.
        step: usize,
        /// How many steps the plan has.
        total: usize,
        /// The kernel's error, naming the operation and the object.
        #[source]
        source: netfilter::Error,
    },

    /// The kernel refused to delete one of netfence's chains because a rule still jumps to
    /// it that the plan could not see: one outside netfence whose jump the dump could not
    /// decode (a verdict map, say). netfence never deletes another writer's rule, so no
    /// retry cures this; nothing of the batch was applied. Rules whose jump the dump
    /// shows don't get here: the planner keeps the chains they hold, emptied.
    #[error(
        "plan step {step} of {total} failed: chain {chain} can't be deleted: a rule outside \
         netfence still jumps to it ({source})"
    )]
    ChainInUse {
        /// The step's number, from 1.
        step: usize,
        /// How many steps the plan has.
        total: usize,
        /// The chain, as `family table name`.
        chain: String,
        /// The kernel's refusal (boxed: the variant would otherwise be the largest, and
        /// every `Result` of the crate would carry its size).
        #[source]
        source: Box<netfilter::Error>,
    },

    /// The kernel could not be read or the netlink socket failed.
    #[error(transparent)]
    Netfilter(#[from] netfilter::Error),

    /// Execution stopped on purpose after a number of steps (fault injection in tests).
    #[error("stopped after {done} of {total} plan steps, as asked")]
    Stopped {
        /// Steps applied.
        done: usize,
        /// Steps in the plan.
        total: usize,
    },
}

impl Error {
    pub(crate) fn invalid(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// The kernel's errno behind the error, when the kernel refused something.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Step { source, .. } | Self::Netfilter(source) => source.errno(),
            Self::ChainInUse { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// Whether trying again after a fresh observation may succeed: another writer changed
    /// nf_tables, or the kernel was momentarily busy.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Step { source, .. } | Self::Netfilter(source) => source.is_retryable(),
            _ => false,
        }
    }
}
