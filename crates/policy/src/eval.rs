//! The reference evaluator: Kubernetes NetworkPolicy semantics, stated
//! directly over the model and independent of any compiler.
//!
//! It answers one question: may a *new connection* from `src` to `dst`, with
//! this protocol and destination port, over this IP family, be opened? The
//! answer for the connection's replies is the same answer: the dataplane lets
//! replies of an allowed connection through (conntrack), so the evaluator is
//! never asked about the reverse direction of an open connection.
//!
//! The rules, from the NetworkPolicy API reference:
//!
//! * A pod is *isolated for ingress* when some policy in its namespace selects
//!   it and has Ingress in its (defaulted) `policyTypes`; likewise for egress.
//!   The two are independent.
//! * A connection is allowed iff both ends agree:
//!   the source side: `src` is not a pod, or is not isolated for egress, or some
//!   egress rule of some policy selecting it matches `dst`; and
//!   the destination side: `dst` is not a pod, or is not isolated for ingress,
//!   or some ingress rule of some policy selecting it matches `src`.
//!   Policies and rules are a union: one match is enough, nothing denies.
//! * A rule matches when some peer matches the other end (or it has none) and
//!   some port entry matches (or it has none).
//! * Pod peers match pods only, never external addresses. An `ipBlock` matches
//!   the other end's address of the probed family, pods included (as Calico
//!   does; Kubernetes leaves ipBlock-vs-pod-IP to the implementation).
//! * A named port resolves against the *destination* pod, for ingress and
//!   egress alike; an egress rule's named port matches nothing on an external
//!   destination.
//!
//! Two choices where Kubernetes says nothing a probe could contradict:
//!
//! * A pod talking to itself by its own address is always allowed: that
//!   traffic stays on the pod's loopback and never reaches a node firewall
//!   (the upstream e2e suite ignores such probes). Through a Service that
//!   sends it back to the same pod (hairpin), it does cross the node, and
//!   there the compiled ruleset judges it like any other connection: the
//!   pod's egress policies, then its ingress ones. Calico does the same, and
//!   SIG Network's ClusterNetworkPolicy docs now specify it (a pod reaching
//!   itself by its pod IP is not subject to policy, one reaching itself
//!   through a Service IP is). [`allowed`] answers the first case;
//!   [`egress_allows`] and [`ingress_allows`] together answer the hairpin.
//! * An endpoint without an address of the probed family (a single-stack pod,
//!   a pod not yet running, an external address of the other family, an
//!   unknown pod) makes the probe meaningless: no packet with that pair of
//!   addresses can exist. [`allowed`] answers `false` for it, and a
//!   dataplane test should skip such a probe rather than send it.

use std::fmt;
use std::net::IpAddr;

use crate::model::{
    Cluster, Direction, Family, NamespaceScope, ObjectKey, Peer, Pod, Port, PortRule, Protocol,
    Rule,
};

/// One end of a connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// A pod of the cluster, by key; its address is looked up per family.
    Pod(ObjectKey),
    /// An address outside the cluster's pods (a host, a node, the internet).
    External(IpAddr),
}

impl Endpoint {
    /// A pod endpoint.
    pub fn pod(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Endpoint::Pod(ObjectKey::new(namespace, name))
    }

    /// An external endpoint.
    pub fn external(ip: impl Into<IpAddr>) -> Self {
        Endpoint::External(ip.into())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod(k) => write!(f, "pod {k}"),
            Endpoint::External(ip) => write!(f, "host {ip}"),
        }
    }
}

/// An endpoint with its address in the probed family.
struct Resolved<'a> {
    ip: IpAddr,
    pod: Option<&'a Pod>,
}

fn resolve<'a>(cluster: &'a Cluster, ep: &Endpoint, family: Family) -> Option<Resolved<'a>> {
    match ep {
        Endpoint::Pod(key) => {
            let pod = cluster.pod(key)?;
            Some(Resolved {
                ip: pod.ip(family)?,
                pod: Some(pod),
            })
        }
        Endpoint::External(ip) if Family::of(*ip) == family => {
            Some(Resolved { ip: *ip, pod: None })
        }
        Endpoint::External(_) => None,
    }
}

/// The address `ep` has in `family`: the pod's IP of that family, or the
/// external address if it is of that family. `None` means a probe with this
/// endpoint in this family is meaningless.
pub fn address(cluster: &Cluster, ep: &Endpoint, family: Family) -> Option<IpAddr> {
    resolve(cluster, ep, family).map(|r| r.ip)
}

/// Whether a new connection `src` → `dst` to `port` over `protocol` and
/// `family` is allowed. See the module docs for the rules, and for the
/// answer on self-traffic and on endpoints without an address in `family`.
pub fn allowed(
    cluster: &Cluster,
    src: &Endpoint,
    dst: &Endpoint,
    protocol: Protocol,
    port: u16,
    family: Family,
) -> bool {
    let (Some(s), Some(d)) = (resolve(cluster, src, family), resolve(cluster, dst, family)) else {
        return false;
    };
    if let (Some(a), Some(b)) = (s.pod, d.pod) {
        if a.namespace == b.namespace && a.name == b.name {
            return true;
        }
    }
    source_side(cluster, &s, &d, protocol, port)
        && destination_side(cluster, &s, &d, protocol, port)
}

/// The source side alone: whether `src`'s egress policies let the
/// connection out (true when `src` is external or not isolated for egress).
/// False when an endpoint has no address in `family`.
pub fn egress_allows(
    cluster: &Cluster,
    src: &Endpoint,
    dst: &Endpoint,
    protocol: Protocol,
    port: u16,
    family: Family,
) -> bool {
    match (resolve(cluster, src, family), resolve(cluster, dst, family)) {
        (Some(s), Some(d)) => source_side(cluster, &s, &d, protocol, port),
        _ => false,
    }
}

/// The destination side alone: whether `dst`'s ingress policies let the
/// connection in (true when `dst` is external or not isolated for ingress).
/// False when an endpoint has no address in `family`.
pub fn ingress_allows(
    cluster: &Cluster,
    src: &Endpoint,
    dst: &Endpoint,
    protocol: Protocol,
    port: u16,
    family: Family,
) -> bool {
    match (resolve(cluster, src, family), resolve(cluster, dst, family)) {
        (Some(s), Some(d)) => destination_side(cluster, &s, &d, protocol, port),
        _ => false,
    }
}

/// Whether some policy in `pod`'s namespace selects it and isolates `direction`.
pub fn is_isolated(cluster: &Cluster, pod: &Pod, direction: Direction) -> bool {
    cluster
        .policies_in(&pod.namespace)
        .any(|p| p.selects(pod) && p.rules(direction).is_some())
}

fn source_side(
    cluster: &Cluster,
    src: &Resolved,
    dst: &Resolved,
    protocol: Protocol,
    port: u16,
) -> bool {
    match src.pod {
        None => true,
        // Egress: the peer is the destination, and named ports resolve on it too.
        Some(pod) => side_allows(
            cluster,
            pod,
            Direction::Egress,
            dst,
            dst.pod,
            protocol,
            port,
        ),
    }
}

fn destination_side(
    cluster: &Cluster,
    src: &Resolved,
    dst: &Resolved,
    protocol: Protocol,
    port: u16,
) -> bool {
    match dst.pod {
        None => true,
        // Ingress: the peer is the source; named ports resolve on the pod itself.
        Some(pod) => side_allows(
            cluster,
            pod,
            Direction::Ingress,
            src,
            Some(pod),
            protocol,
            port,
        ),
    }
}

/// One side of the connection as seen from `subject`, the pod whose
/// policies apply: not isolated in `direction`, or some rule matches.
fn side_allows(
    cluster: &Cluster,
    subject: &Pod,
    direction: Direction,
    peer: &Resolved,
    dst_pod: Option<&Pod>,
    protocol: Protocol,
    port: u16,
) -> bool {
    let mut isolated = false;
    for policy in cluster.policies_in(&subject.namespace) {
        if !policy.selects(subject) {
            continue;
        }
        let Some(rules) = policy.rules(direction) else {
            continue;
        };
        isolated = true;
        if rules
            .iter()
            .any(|r| rule_matches(cluster, r, peer, dst_pod, protocol, port))
        {
            return true;
        }
    }
    !isolated
}

fn rule_matches(
    cluster: &Cluster,
    rule: &Rule,
    peer: &Resolved,
    dst_pod: Option<&Pod>,
    protocol: Protocol,
    port: u16,
) -> bool {
    let peer_ok =
        rule.peers.is_empty() || rule.peers.iter().any(|p| peer_matches(cluster, p, peer));
    let port_ok = rule.ports.is_empty()
        || rule
            .ports
            .iter()
            .any(|p| port_matches(p, dst_pod, protocol, port));
    peer_ok && port_ok
}

fn peer_matches(cluster: &Cluster, peer: &Peer, other: &Resolved) -> bool {
    match peer {
        Peer::IpBlock(block) => block.contains(other.ip),
        Peer::Pods { namespaces, pods } => {
            let Some(pod) = other.pod else {
                return false;
            };
            let ns_ok = match namespaces {
                NamespaceScope::Only(ns) => &pod.namespace == ns,
                NamespaceScope::Selected(sel) => cluster
                    .namespace(&pod.namespace)
                    .is_some_and(|ns| sel.matches(&ns.labels)),
            };
            ns_ok && pods.matches(&pod.labels)
        }
    }
}

fn port_matches(rule: &PortRule, dst_pod: Option<&Pod>, protocol: Protocol, port: u16) -> bool {
    if rule.protocol != protocol {
        return false;
    }
    match &rule.port {
        Port::Any => true,
        Port::Range { start, end } => (*start..=*end).contains(&port),
        Port::Named(name) => {
            dst_pod.is_some_and(|pod| pod.resolve_named_port(name, protocol).any(|p| p == port))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Namespace, NAMESPACE_NAME_LABEL};
    use crate::LabelSelector;
    use std::collections::BTreeMap;

    fn pod(ns: &str, name: &str, v4: Option<&str>, v6: Option<&str>) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            ipv4: v4.map(|s| s.parse().unwrap()),
            ipv6: v6.map(|s| s.parse().unwrap()),
            named_ports: BTreeMap::new(),
            node_name: None,
            host_interface: None,
        }
    }

    fn cluster() -> Cluster {
        let mut c = Cluster::new();
        c.upsert_namespace(Namespace {
            name: "x".into(),
            labels: [(NAMESPACE_NAME_LABEL.to_string(), "x".to_string())].into(),
        });
        c.upsert_pod(pod(
            "x",
            "dual",
            Some("10.244.1.1"),
            Some("fd00:10:244:1::1"),
        ));
        c.upsert_pod(pod("x", "v4only", Some("10.244.1.2"), None));
        c.upsert_pod(pod("x", "pending", None, None));
        c
    }

    #[test]
    fn probes_without_an_address_in_the_family_are_false() {
        let c = cluster();
        let dual = Endpoint::pod("x", "dual");
        let v4only = Endpoint::pod("x", "v4only");
        let pending = Endpoint::pod("x", "pending");
        let ghost = Endpoint::pod("x", "ghost");
        let v4host = Endpoint::external("192.0.2.1".parse::<IpAddr>().unwrap());
        // No policy at all: everything that can be addressed is allowed ...
        assert!(allowed(&c, &dual, &v4only, Protocol::Tcp, 80, Family::Ipv4));
        assert!(allowed(&c, &v4host, &dual, Protocol::Tcp, 80, Family::Ipv4));
        // ... and what cannot be addressed is not.
        assert!(!allowed(
            &c,
            &dual,
            &v4only,
            Protocol::Tcp,
            80,
            Family::Ipv6
        ));
        assert!(!allowed(
            &c,
            &dual,
            &pending,
            Protocol::Tcp,
            80,
            Family::Ipv4
        ));
        assert!(!allowed(&c, &ghost, &dual, Protocol::Tcp, 80, Family::Ipv4));
        assert!(!allowed(
            &c,
            &v4host,
            &dual,
            Protocol::Tcp,
            80,
            Family::Ipv6
        ));
        assert!(!egress_allows(
            &c,
            &dual,
            &v4only,
            Protocol::Tcp,
            80,
            Family::Ipv6
        ));
        assert!(!ingress_allows(
            &c,
            &dual,
            &v4only,
            Protocol::Tcp,
            80,
            Family::Ipv6
        ));
        assert_eq!(address(&c, &v4only, Family::Ipv6), None);
        assert_eq!(
            address(&c, &dual, Family::Ipv6),
            Some("fd00:10:244:1::1".parse().unwrap())
        );
    }

    #[test]
    fn isolation_is_per_direction() {
        let mut c = cluster();
        c.upsert_policy(crate::Policy {
            namespace: "x".into(),
            name: "deny-egress".into(),
            pod_selector: LabelSelector::everything(),
            ingress: None,
            egress: Some(vec![]),
        });
        let p = c.pod(&ObjectKey::new("x", "dual")).unwrap().clone();
        assert!(is_isolated(&c, &p, Direction::Egress));
        assert!(!is_isolated(&c, &p, Direction::Ingress));
        // Policies of another namespace never isolate.
        let mut other = (*p).clone();
        other.namespace = "y".into();
        assert!(!is_isolated(&c, &other, Direction::Egress));
    }
}
