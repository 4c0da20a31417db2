//! netfence's declarative ruleset: the model every layer above speaks, the planner that
//! turns "what the kernel holds" and "what it should hold" into the smallest fail-closed
//! sequence of operations, and the executor that runs plans and reads the kernel back.
//!
//! - [`model`]: tables, chains, rules with stable identities, ipsets, ownership (pure);
//! - [`plan`]: `plan(current, desired)`, its ordering and fail-closed invariant, and its
//!   in-memory application (pure);
//! - [`render`]: `iptables-save` and `ipset save` text (pure);
//! - [`sim`]: a packet's walk through a ruleset, to check what a state allows (pure);
//! - [`kernel`]: `observe()` and `apply()` on a network namespace, through
//!   `netfilter` (the only module that does I/O, and only through that crate).

#![warn(missing_docs)]

pub mod error;
pub mod kernel;
pub mod model;
pub mod plan;
#[cfg(test)]
mod proptests;
pub mod render;
pub mod sim;

pub use error::Error;
pub use kernel::{Applied, Executed, Flushed, Kernel};

pub use model::{
    Chain, Entry, ForeignSet, IpSet, OpaqueRule, OwnedRule, Polarity, RuleId, Ruleset, Table,
    TableId, DEFAULT_MAXELEM, DEFAULT_PREFIX, KERNEL_MAXELEM,
};
pub use plan::{plan, plan_batch_scoped, plan_scoped, plan_sets_scoped, Plan, Scope, SetOp, Step};

pub use netfilter::ipset::{IfName, Member, SetType};
pub use netfilter::nft::{
    BaseChain, CtState, Hook, Iface, Match, Neg, Policy, PortDir, PortRange, Protocol, RejectWith,
    Rule, SetDir, Target,
};
pub use netfilter::{Family, Netns};
