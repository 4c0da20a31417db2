//! The crate's one error type.
//!
//! Every variant that comes from a Kubernetes object names the object
//! (`NetworkPolicy alpha/access-nginx`) and the field path in the object's
//! own JSON spelling (`spec.ingress[0].ports[1].endPort`), so that an operator
//! can find the offending line in the YAML they applied.

use std::fmt;

/// The kind of a Kubernetes object the model is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `core/v1` Namespace.
    Namespace,
    /// `core/v1` Pod.
    Pod,
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
        })
    }
}

/// Which object an error is about: kind, namespace (for namespaced kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: Kind,
    /// The object's namespace; `None` for cluster-scoped kinds, or when the
    /// object lacks one (which is itself an error).
    pub namespace: Option<String>,
    /// The object's name; empty when the object lacks one.
    pub name: String,
}

impl ObjectRef {
    /// Errors box the reference so that `Result<_, Error>` stays small.
    pub(crate) fn boxed(&self) -> Box<ObjectRef> {
        Box::new(self.clone())
    }
}

/// A field's path inside an object (`spec.ingress[0].from[1].podSelector`), spelled out
/// only when an error names it. Every delta an agent hands the engine is converted on
/// the agent's thread, and formatting each field's path whether or not it was wrong made
/// up a large share of a policy's conversion.
#[derive(Clone, Copy)]
pub(crate) struct Field<'a> {
    parent: &'a dyn fmt::Display,
    step: Step<'a>,
}

#[derive(Clone, Copy)]
enum Step<'a> {
    /// `parent.name`.
    Name(&'static str),
    /// `parent[i]`.
    Index(usize),
    /// `parent[key]`, a map's entry.
    Key(&'a str),
}

impl<'a> Field<'a> {
    /// `parent.name`.
    pub(crate) fn name(parent: &'a dyn fmt::Display, name: &'static str) -> Self {
        Field {
            parent,
            step: Step::Name(name),
        }
    }

    /// `parent[i]`, an element of a list.
    pub(crate) fn index(parent: &'a dyn fmt::Display, i: usize) -> Self {
        Field {
            parent,
            step: Step::Index(i),
        }
    }

    /// `parent[key]`, an entry of a map.
    pub(crate) fn key(parent: &'a dyn fmt::Display, key: &'a str) -> Self {
        Field {
            parent,
            step: Step::Key(key),
        }
    }
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Step::Name(n) => write!(f, "{}.{n}", self.parent),
            Step::Index(i) => write!(f, "{}[{i}]", self.parent),
            Step::Key(k) => write!(f, "{}[{k}]", self.parent),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "<unnamed>"
        } else {
            &self.name
        };
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, name),
            None => write!(f, "{} {}", self.kind, name),
        }
    }
}

/// Everything that can go wrong in this crate: invalid Kubernetes objects,
/// and invalid selector strings.
///
/// Messages follow the API server's wording where it has one, because users
/// already know those from `kubectl apply` rejections.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field the model cannot do without is absent or empty.
    #[error("{object}: {field}: required value is missing")]
    Missing {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the missing field.
        field: String,
    },
    /// A name the API server would refuse: a namespace's (its `metadata.name`, or another
    /// object's `metadata.namespace`) must be an RFC 1123 label, a pod's or a
    /// NetworkPolicy's an RFC 1123 subdomain.
    #[error("{object}: {field}: invalid name {value:?}: {reason}")]
    Name {
        /// The offending object.
        object: Box<ObjectRef>,
        /// `metadata.name` or `metadata.namespace`.
        field: String,
        /// The name as given.
        value: String,
        /// What rule the name breaks.
        reason: String,
    },
    /// A label key is not a Kubernetes qualified name.
    #[error("{object}: {field}: invalid label key {key:?}: {reason}")]
    LabelKey {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the field holding the key.
        field: String,
        /// The key as given.
        key: String,
        /// What rule the key breaks.
        reason: String,
    },
    /// A label value is not a valid Kubernetes label value.
    #[error("{object}: {field}: invalid label value {value:?}: {reason}")]
    LabelValue {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the field holding the value.
        field: String,
        /// The value as given.
        value: String,
        /// What rule the value breaks.
        reason: String,
    },
    /// A `matchExpressions` operator outside In, NotIn, Exists, DoesNotExist.
    #[error("{object}: {field}: unknown operator {operator:?}: must be In, NotIn, Exists or DoesNotExist")]
    Operator {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the operator field.
        field: String,
        /// The operator as given.
        operator: String,
    },
    /// `In` or `NotIn` without values.
    #[error("{object}: {field}: operator {operator} requires at least one value")]
    ValuesRequired {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the values field.
        field: String,
        /// `In` or `NotIn`.
        operator: &'static str,
    },
    /// `Exists` or `DoesNotExist` with values.
    #[error("{object}: {field}: operator {operator} takes no values, got {count}")]
    ValuesForbidden {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the values field.
        field: String,
        /// `Exists` or `DoesNotExist`.
        operator: &'static str,
        /// How many values were given.
        count: usize,
    },
    /// A CIDR that does not parse.
    #[error("{object}: {field}: invalid CIDR {value:?}: {reason}")]
    Cidr {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the CIDR field.
        field: String,
        /// The CIDR as given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An `except` entry that is not a strict subset of its block's `cidr`
    /// (outside it, equal to it, wider than it, or of the other family).
    #[error("{object}: {field}: {except} must be a strict subset of cidr {cidr}")]
    ExceptNotInside {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the except entry.
        field: String,
        /// The except entry as given.
        except: String,
        /// The block's cidr as given.
        cidr: String,
    },
    /// A numeric port outside 1–65535.
    #[error("{object}: {field}: port {value} must be between 1 and 65535, inclusive")]
    PortRange {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the port field.
        field: String,
        /// The port as given.
        value: i32,
    },
    /// A named port that is not an IANA service name.
    #[error("{object}: {field}: invalid port name {value:?}: {reason}")]
    PortName {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the port name field.
        field: String,
        /// The name as given.
        value: String,
        /// What rule the name breaks.
        reason: &'static str,
    },
    /// `endPort` given without `port`.
    #[error("{object}: {field}: endPort requires port to be specified")]
    EndPortWithoutPort {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the endPort field.
        field: String,
    },
    /// `endPort` given with a named `port`.
    #[error(
        "{object}: {field}: endPort may not be specified when port is the named port {port:?}"
    )]
    EndPortNamedPort {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the endPort field.
        field: String,
        /// The named port.
        port: String,
    },
    /// `endPort` below `port`.
    #[error("{object}: {field}: endPort {end_port} must be greater than or equal to port {port}")]
    EndPortBelowPort {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the endPort field.
        field: String,
        /// The start of the range.
        port: i32,
        /// The end of the range.
        end_port: i32,
    },
    /// A protocol other than TCP, UDP, SCTP (the names are case-sensitive, as in the API).
    #[error("{object}: {field}: unsupported protocol {value:?}: must be TCP, UDP or SCTP")]
    Protocol {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the protocol field.
        field: String,
        /// The protocol as given.
        value: String,
    },
    /// A `policyTypes` entry other than Ingress or Egress, or more than two entries.
    #[error("{object}: {field}: invalid policy type {value:?}: must be Ingress or Egress, at most two entries")]
    PolicyType {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the entry.
        field: String,
        /// The entry as given.
        value: String,
    },
    /// A NetworkPolicy peer with no selector and no ipBlock, or an ipBlock
    /// together with a selector.
    #[error("{object}: {field}: {reason}")]
    Peer {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the peer.
        field: String,
        /// What is wrong with the peer.
        reason: &'static str,
    },
    /// A pod IP that does not parse.
    #[error("{object}: {field}: invalid IP address {value:?}")]
    PodIp {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the IP field.
        field: String,
        /// The address as given.
        value: String,
    },
    /// A pod with two addresses of the same family (the API server allows one per family).
    #[error(
        "{object}: {field}: second {family} address {value} (a pod has at most one per family)"
    )]
    PodIpFamily {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the second address.
        field: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The second address as given.
        value: String,
    },
    /// The host-interface annotation does not hold a valid Linux interface name.
    #[error("{object}: {field}: invalid interface name {value:?}: {reason}")]
    Interface {
        /// The offending object.
        object: Box<ObjectRef>,
        /// Path of the annotation.
        field: String,
        /// The name as given.
        value: String,
        /// What rule the name breaks.
        reason: &'static str,
    },
    /// A label selector string (`app=web,tier in (a,b)`) that does not parse.
    #[error("invalid label selector {input:?}: {reason}")]
    Selector {
        /// The selector string as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A [`crate::CompilerConfig`] field is unusable.
    #[error("invalid compiler config {field}: {reason}")]
    Config {
        /// The field, e.g. `ingress_mark`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The ruleset refused something the compiler built: a compiler bug, since every
    /// input is validated on conversion. The compiler's state is then unspecified;
    /// [`crate::Compiler::compile`] rebuilds it. (The ruleset's error is kept as text so
    /// that this enum stays `Clone` and `Eq`.)
    #[error("compiling {what}: {reason}")]
    Compile {
        /// The policy or object being compiled.
        what: String,
        /// The ruleset's error.
        reason: String,
    },
}

impl Error {
    /// The object the error is about, if it came from a Kubernetes object.
    pub fn object(&self) -> Option<&ObjectRef> {
        match self {
            Error::Missing { object, .. }
            | Error::Name { object, .. }
            | Error::LabelKey { object, .. }
            | Error::LabelValue { object, .. }
            | Error::Operator { object, .. }
            | Error::ValuesRequired { object, .. }
            | Error::ValuesForbidden { object, .. }
            | Error::Cidr { object, .. }
            | Error::ExceptNotInside { object, .. }
            | Error::PortRange { object, .. }
            | Error::PortName { object, .. }
            | Error::EndPortWithoutPort { object, .. }
            | Error::EndPortNamedPort { object, .. }
            | Error::EndPortBelowPort { object, .. }
            | Error::Protocol { object, .. }
            | Error::PolicyType { object, .. }
            | Error::Peer { object, .. }
            | Error::PodIp { object, .. }
            | Error::PodIpFamily { object, .. }
            | Error::Interface { object, .. } => Some(object),
            Error::Selector { .. } | Error::Config { .. } | Error::Compile { .. } => None,
        }
    }

    /// The field path the error is about, if it came from a Kubernetes object.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Missing { field, .. }
            | Error::Name { field, .. }
            | Error::LabelKey { field, .. }
            | Error::LabelValue { field, .. }
            | Error::Operator { field, .. }
            | Error::ValuesRequired { field, .. }
            | Error::ValuesForbidden { field, .. }
            | Error::Cidr { field, .. }
            | Error::ExceptNotInside { field, .. }
            | Error::PortRange { field, .. }
            | Error::PortName { field, .. }
            | Error::EndPortWithoutPort { field, .. }
            | Error::EndPortNamedPort { field, .. }
            | Error::EndPortBelowPort { field, .. }
            | Error::Protocol { field, .. }
            | Error::PolicyType { field, .. }
            | Error::Peer { field, .. }
            | Error::PodIp { field, .. }
            | Error::PodIpFamily { field, .. }
            | Error::Interface { field, .. } => Some(field),
            Error::Selector { .. } | Error::Config { .. } | Error::Compile { .. } => None,
        }
    }
}
