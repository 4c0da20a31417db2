//! Kubernetes NetworkPolicy for netfence: the cluster model, label
//! selectors, validation, and the reference evaluator.
//!
//! * [`model`]: namespaces, pods and policies reduced to what enforcement
//!   needs, and the [`Cluster`] that holds them.
//! * [`convert`]: `TryFrom` conversions from `k8s-openapi` objects, which
//!   validate as the API server does and reject an invalid object alone.
//! * [`selector`]: label selectors in a canonical form, with `matches`.
//! * [`eval`]: [`allowed`], the oracle every dataplane test compares
//!   real packets against.
//! * [`compile`]: the [`Compiler`] from the model to a `ruleset::Ruleset`,
//!   full and incremental, in a layout where pod churn changes set members only.
//! * [`index`]: the label index that makes a pod delta cost what it touches.
//!
//! The crate is pure: no I/O, no processes, no privileges.
//!
//! `k8s_openapi` is re-exported so that users (and the conformance table in
//! `tests/conformance/cases.rs`) build input objects against the exact
//! version this crate converts from.

#![warn(missing_docs)]

pub mod compile;
pub mod convert;
pub mod error;
pub mod eval;
pub mod index;
pub mod model;
pub mod selector;

pub use compile::{Compiler, CompilerConfig, Garbage, DISPATCH_FLAT_MAX};
pub use error::{Error, Kind, ObjectRef};
pub use eval::{address, allowed, egress_allows, ingress_allows, is_isolated, Endpoint};
pub use index::SelectorIndex;
pub use k8s_openapi;
pub use model::{
    Cluster, ContainerPort, Direction, Family, IpBlock, Namespace, NamespaceScope, ObjectKey, Peer,
    Pod, Policy, PolicyTypes, Port, PortRule, Protocol, Rule, HOST_INTERFACE_ANNOTATION,
    NAMESPACE_NAME_LABEL,
};
pub use selector::{LabelSelector, Labels, Operator, Requirement};
