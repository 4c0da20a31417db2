//! The lean internal model: what the evaluator and the compiler need of
//! namespaces, pods and NetworkPolicies, and nothing else.
//!
//! Values here are already validated (see [`crate::convert`]) and already
//! defaulted (protocol TCP, `policyTypes`), so consumers never re-check or
//! re-default. Maps are `BTreeMap`s so that every walk over the model is in a
//! stable order, which keeps compiled output and diffs deterministic. The
//! [`Cluster`] holds objects behind `Arc`, so a snapshot clone copies pointers,
//! not pods.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Bound;
use std::sync::Arc;

use ipnet::IpNet;

use crate::selector::{LabelSelector, Labels};

/// Annotation on a pod naming the host side of its interface (e.g. the veth
/// peer in the node's namespace), used for anti-spoofing.
pub const HOST_INTERFACE_ANNOTATION: &str = "netfence.io/host-interface";

/// Label the API server puts on every namespace, holding the namespace's name.
/// The model adds it too, so that hand-built namespaces behave like real ones.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A layer-4 protocol a NetworkPolicy can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP, IP protocol 6. The API's default.
    Tcp,
    /// UDP, IP protocol 17.
    Udp,
    /// SCTP, IP protocol 132.
    Sctp,
}

impl Protocol {
    /// All protocols, in a fixed order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`; case-sensitive, as the API is).
    pub fn from_k8s(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The IP protocol number (IANA; `IPPROTO_*` in `<netinet/in.h>`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_k8s())
    }
}

/// An IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// The two directions a policy can isolate, named after `policyTypes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic into the selected pods.
    Ingress,
    /// Traffic out of the selected pods.
    Egress,
}

/// Identity of a namespaced object: namespace, then name. Ordered that way,
/// so a range over one namespace is a contiguous slice of a `BTreeMap`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The namespace.
    pub namespace: String,
    /// The name within the namespace.
    pub name: String,
}

impl ObjectKey {
    /// A key from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A namespace: name and labels (including [`NAMESPACE_NAME_LABEL`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace's name: an RFC 1123 label when converted from a Kubernetes object.
    pub name: String,
    /// The namespace's labels.
    pub labels: Labels,
}

/// A port a container declares, the target of named-port resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerPort {
    /// The port's protocol (TCP when the pod spec omits it).
    pub protocol: Protocol,
    /// The port number.
    pub port: u16,
}

/// A pod, reduced to what policy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// The pod's namespace: an RFC 1123 label when converted from a Kubernetes object.
    pub namespace: String,
    /// The pod's name: an RFC 1123 subdomain when converted from a Kubernetes object.
    pub name: String,
    /// The pod's labels.
    pub labels: Labels,
    /// The pod's IPv4 address, once it has one.
    pub ipv4: Option<Ipv4Addr>,
    /// The pod's IPv6 address, once it has one.
    pub ipv6: Option<Ipv6Addr>,
    /// Named container ports. A name maps to a set because the API enforces
    /// unique names per container only, so two containers may both declare,
    /// say, `metrics`; a named port in a policy then matches either.
    pub named_ports: BTreeMap<String, BTreeSet<ContainerPort>>,
    /// The node the pod is scheduled on, once it is.
    pub node_name: Option<String>,
    /// Host-side interface from [`HOST_INTERFACE_ANNOTATION`].
    pub host_interface: Option<String>,
}

impl Pod {
    /// The pod's key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }

    /// The pod's address in `family`, if it has one.
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::Ipv4 => self.ipv4.map(IpAddr::V4),
            Family::Ipv6 => self.ipv6.map(IpAddr::V6),
        }
    }

    /// Port numbers that the named port `name` resolves to for `protocol`.
    /// A named port in a policy carries a protocol (TCP by default) and
    /// matches only a container port of that name *and* that protocol.
    pub fn resolve_named_port(
        &self,
        name: &str,
        protocol: Protocol,
    ) -> impl Iterator<Item = u16> + '_ {
        self.named_ports
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |p| p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// The port part of a [`PortRule`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// Every port of the protocol (the API's `port` was absent).
    Any,
    /// `start..=end`; a single port has `start == end` (from `port` alone, or
    /// from `port` and `endPort`).
    Range {
        /// First port, inclusive.
        start: u16,
        /// Last port, inclusive.
        end: u16,
    },
    /// A container port name, resolved against the destination pod.
    Named(String),
}

/// One entry of a rule's `ports`: a protocol and a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRule {
    /// The protocol, TCP when the API's `protocol` was absent.
    pub protocol: Protocol,
    /// Which ports of that protocol.
    pub port: Port,
}

/// Where a pod peer's pods may live.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NamespaceScope {
    /// Only the named namespace: the policy's own, for a peer with a
    /// `podSelector` and no `namespaceSelector`.
    Only(String),
    /// Every namespace whose labels the selector matches.
    Selected(LabelSelector),
}

/// An `ipBlock`: a CIDR minus except ranges, all of one family.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpBlock {
    /// The block, host bits cleared.
    pub cidr: IpNet,
    /// Ranges carved out of `cidr`, each strictly inside it, host bits cleared.
    pub except: Vec<IpNet>,
}

impl IpBlock {
    /// Whether `ip` is in the block and in none of its excepts. An address of
    /// the other family is never in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }

    /// The block's family.
    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }
}

/// One element of `from` or `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Pods: those matching `pods`, in namespaces within `namespaces`.
    /// `podSelector` alone is `Only(policy namespace)` + selector;
    /// `namespaceSelector` alone is `Selected(sel)` + everything; both is
    /// `Selected(ns sel)` + pod selector (the AND form).
    Pods {
        /// Which namespaces.
        namespaces: NamespaceScope,
        /// Which pods in them.
        pods: LabelSelector,
    },
    /// Addresses, pods' included.
    IpBlock(IpBlock),
}

/// One ingress or egress rule. A connection matches if it matches some peer
/// (or `peers` is empty) and some port rule (or `ports` is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// `from` (ingress) or `to` (egress); empty means every peer, external
    /// addresses included.
    pub peers: Vec<Peer>,
    /// `ports`; empty means every port of every protocol.
    pub ports: Vec<PortRule>,
}

/// The effective `policyTypes` of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyTypes {
    /// The policy isolates its pods for ingress.
    pub ingress: bool,
    /// The policy isolates its pods for egress.
    pub egress: bool,
}

/// A NetworkPolicy with `policyTypes` applied.
///
/// `ingress` is `Some` exactly when the effective `policyTypes` contain
/// Ingress, and then holds the rules (an empty list denies all ingress); the
/// same for `egress`. Rules of a direction the policy does not list are
/// dropped on conversion, because Kubernetes gives them no effect: a policy
/// with `policyTypes: [Egress]` neither isolates nor admits anything inbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The policy's namespace; it selects pods only there. An RFC 1123 label when
    /// converted from a Kubernetes object.
    pub namespace: String,
    /// The policy's name: an RFC 1123 subdomain when converted from a Kubernetes object.
    pub name: String,
    /// `spec.podSelector`: which pods of the namespace the policy applies to.
    pub pod_selector: LabelSelector,
    /// Ingress rules, if the policy isolates ingress.
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules, if the policy isolates egress.
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    /// The policy's key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }

    /// Whether the policy applies to `pod`: same namespace, labels match.
    pub fn selects(&self, pod: &Pod) -> bool {
        pod.namespace == self.namespace && self.pod_selector.matches(&pod.labels)
    }

    /// The rules for `direction`, if the policy isolates that direction.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// The effective `policyTypes`.
    pub fn policy_types(&self) -> PolicyTypes {
        PolicyTypes {
            ingress: self.ingress.is_some(),
            egress: self.egress.is_some(),
        }
    }
}

/// Everything the node knows: namespaces, pods, policies.
///
/// Objects are independent: deleting a namespace does not delete its pods or
/// policies, since the API server sends those deletions itself. A pod whose
/// namespace is unknown matches no `namespaceSelector`, not even `{}`, which
/// fails closed while deltas arrive out of order.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    namespaces: BTreeMap<String, Arc<Namespace>>,
    pods: BTreeMap<ObjectKey, Arc<Pod>>,
    policies: BTreeMap<ObjectKey, Arc<Policy>>,
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Cluster::default()
    }

    /// Converts and inserts Kubernetes objects. An invalid object is left
    /// out and its error returned; every valid one is inserted regardless.
    pub fn from_k8s<'a>(
        namespaces: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Namespace>,
        pods: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Pod>,
        policies: impl IntoIterator<Item = &'a k8s_openapi::api::networking::v1::NetworkPolicy>,
    ) -> (Cluster, Vec<crate::Error>) {
        let mut cluster = Cluster::new();
        let mut errors = Vec::new();
        for ns in namespaces {
            match Namespace::try_from(ns) {
                Ok(ns) => {
                    cluster.upsert_namespace(ns);
                }
                Err(e) => errors.push(e),
            }
        }
        for pod in pods {
            match Pod::try_from(pod) {
                Ok(pod) => {
                    cluster.upsert_pod(pod);
                }
                Err(e) => errors.push(e),
            }
        }
        for np in policies {
            match Policy::try_from(np) {
                Ok(p) => {
                    cluster.upsert_policy(p);
                }
                Err(e) => errors.push(e),
            }
        }
        (cluster, errors)
    }

    /// Inserts or replaces a namespace; returns the previous one.
    pub fn upsert_namespace(&mut self, ns: impl Into<Arc<Namespace>>) -> Option<Arc<Namespace>> {
        let ns = ns.into();
        self.namespaces.insert(ns.name.clone(), ns)
    }

    /// Removes a namespace; returns it.
    pub fn delete_namespace(&mut self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.remove(name)
    }

    /// Inserts or replaces a pod; returns the previous one.
    pub fn upsert_pod(&mut self, pod: impl Into<Arc<Pod>>) -> Option<Arc<Pod>> {
        let pod = pod.into();
        self.pods.insert(pod.key(), pod)
    }

    /// Removes a pod; returns it.
    pub fn delete_pod(&mut self, key: &ObjectKey) -> Option<Arc<Pod>> {
        self.pods.remove(key)
    }

    /// Inserts or replaces a policy; returns the previous one.
    pub fn upsert_policy(&mut self, policy: impl Into<Arc<Policy>>) -> Option<Arc<Policy>> {
        let policy = policy.into();
        self.policies.insert(policy.key(), policy)
    }

    /// Removes a policy; returns it.
    pub fn delete_policy(&mut self, key: &ObjectKey) -> Option<Arc<Policy>> {
        self.policies.remove(key)
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.get(name)
    }

    /// A pod by key.
    pub fn pod(&self, key: &ObjectKey) -> Option<&Arc<Pod>> {
        self.pods.get(key)
    }

    /// A policy by key.
    pub fn policy(&self, key: &ObjectKey) -> Option<&Arc<Policy>> {
        self.policies.get(key)
    }

    /// All namespaces, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.namespaces.values()
    }

    /// All pods, by namespace then name.
    pub fn pods(&self) -> impl Iterator<Item = &Arc<Pod>> {
        self.pods.values()
    }

    /// All policies, by namespace then name.
    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.values()
    }

    /// The pods of one namespace, by name.
    pub fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
        in_namespace(&self.pods, namespace)
    }

    /// The policies of one namespace, by name.
    pub fn policies_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Policy>> + 'a {
        in_namespace(&self.policies, namespace)
    }
}

fn in_namespace<'a, T>(
    map: &'a BTreeMap<ObjectKey, Arc<T>>,
    namespace: &'a str,
) -> impl Iterator<Item = &'a Arc<T>> + 'a {
    let start = ObjectKey::new(namespace, "");
    map.range((Bound::Included(start), Bound::Unbounded))
        .take_while(move |(k, _)| k.namespace == namespace)
        .map(|(_, v)| v)
}
