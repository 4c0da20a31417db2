//! Conversion from `k8s-openapi` objects to the model, with validation.
//!
//! The checks mirror the API server's (`pkg/apis/networking/validation`,
//! `pkg/apis/core/validation`, `apimachinery/pkg/util/validation`), so an
//! object the API server would refuse is refused here too, with the same
//! field path. Objects from a real API server pass; the checks matter for
//! objects that come from elsewhere (files, tests, a misbehaving client),
//! where a malformed field must not become a wrong firewall rule.
//!
//! Each object converts on its own: an error rejects that object only.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::error::{Error, Field, Kind, ObjectRef};
use crate::model::{
    ContainerPort, IpBlock, Namespace, NamespaceScope, Peer, Pod, Policy, Port, PortRule, Protocol,
    Rule, HOST_INTERFACE_ANNOTATION, NAMESPACE_NAME_LABEL,
};
use crate::selector::{
    check_dns_label, check_dns_subdomain, validate_labels, LabelSelector, Labels,
};

/// Longest IANA service name, the syntax of named ports (`validation.IsValidPortName`).
const PORT_NAME_MAX: usize = 15;

fn object_ref(kind: Kind, meta: &ObjectMeta, namespaced: bool) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: if namespaced {
            meta.namespace.clone()
        } else {
            None
        },
        name: meta.name.clone().unwrap_or_default(),
    }
}

fn required<'a>(object: &ObjectRef, field: &str, value: Option<&'a str>) -> Result<&'a str, Error> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Error::Missing {
            object: object.boxed(),
            field: field.to_owned(),
        }),
    }
}

/// A required name that must also pass `check`.
fn valid_name<'a>(
    object: &ObjectRef,
    field: &str,
    value: Option<&'a str>,
    check: fn(&str) -> Result<(), String>,
) -> Result<&'a str, Error> {
    let name = required(object, field, value)?;
    check(name).map_err(|reason| Error::Name {
        object: object.boxed(),
        field: field.to_owned(),
        value: name.to_owned(),
        reason,
    })?;
    Ok(name)
}

/// A namespace's name, in a Namespace's `metadata.name` or any namespaced object's
/// `metadata.namespace`: an RFC 1123 label of at most 63 characters, the API server's
/// own rule (`ValidateNamespaceName`, which `ValidateObjectMeta` also applies to
/// `metadata.namespace`), so a real API server never sends another.
///
/// Checked here, where the error can name the object and the field: names end up in
/// chain names and in the `kubernetes.io/metadata.name` label. Left unchecked, a name
/// the kernel refuses in a chain name (one with a space) would fail only in the
/// compiler, as a netfence bug naming no field, and a namespace name too long for a
/// label value would become a value that no valid selector can name.
fn namespace_name<'a>(
    object: &ObjectRef,
    field: &str,
    value: Option<&'a str>,
) -> Result<&'a str, Error> {
    valid_name(object, field, value, check_dns_label)
}

/// A pod's or a NetworkPolicy's `metadata.name`: an RFC 1123 subdomain of at most 253
/// characters, the API server's own rule for both kinds (`NameIsDNSSubdomain`, through
/// `ValidatePodName` and `ValidateNetworkPolicyName`), so a real API server never sends
/// another. Checked for the reason given at [`namespace_name`].
fn object_name<'a>(
    object: &ObjectRef,
    field: &str,
    value: Option<&'a str>,
) -> Result<&'a str, Error> {
    valid_name(object, field, value, check_dns_subdomain)
}

/// A pod's or a policy's `metadata.name` and `metadata.namespace`, checked in that
/// order, as its conversion and a delete by key both check them.
fn namespaced_key<'a>(
    object: &ObjectRef,
    name: Option<&'a str>,
    namespace: Option<&'a str>,
) -> Result<(&'a str, &'a str), Error> {
    Ok((
        object_name(object, "metadata.name", name)?,
        namespace_name(object, "metadata.namespace", namespace)?,
    ))
}

/// Checks the key of an object a delete names, by the rules its conversion applies to
/// the same fields: `namespace` (`None` for a Namespace, which has none) as a
/// namespace's name, `name` as a Namespace's or as a pod's or NetworkPolicy's.
///
/// A delete carries only the key, and no object can be stored under a name that fails
/// these checks, so such a delete would do nothing. A caller that sends one has a bug
/// (names swapped, a label value passed as a name), and a quiet no-op would hide it.
///
/// # Errors
/// [`Error::Missing`] for an empty name, [`Error::Name`] for an invalid one, naming the
/// field as the object's conversion would (`metadata.namespace`, `metadata.name`).
pub fn check_key(kind: Kind, namespace: Option<&str>, name: &str) -> Result<(), Error> {
    let object = ObjectRef {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
    };
    match kind {
        Kind::Namespace => {
            namespace_name(&object, "metadata.name", Some(name))?;
        }
        Kind::Pod | Kind::NetworkPolicy => {
            namespaced_key(&object, Some(name), namespace)?;
        }
    }
    Ok(())
}

fn labels_of(object: &ObjectRef, meta: &ObjectMeta) -> Result<Labels, Error> {
    let labels = meta.labels.clone().unwrap_or_default();
    validate_labels(object, &"metadata.labels", &labels)?;
    Ok(labels)
}

impl TryFrom<&core::Namespace> for Namespace {
    type Error = Error;

    fn try_from(ns: &core::Namespace) -> Result<Self, Error> {
        let object = object_ref(Kind::Namespace, &ns.metadata, false);
        let name =
            namespace_name(&object, "metadata.name", ns.metadata.name.as_deref())?.to_owned();
        let mut labels = labels_of(&object, &ns.metadata)?;
        // The API server sets this label on every namespace and overwrites any
        // user value, so selectors written against it work on real clusters.
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
        Ok(Namespace { name, labels })
    }
}

/// `restartPolicy` of an init container that is a sidecar: it keeps running beside the
/// pod's containers.
const SIDECAR_RESTART_POLICY: &str = "Always";

/// `status.phase` of a pod all of whose containers ended in success, for good.
const POD_SUCCEEDED: &str = "Succeeded";
/// `status.phase` of a pod all of whose containers ended, at least one in failure, for
/// good.
const POD_FAILED: &str = "Failed";

impl TryFrom<&core::Pod> for Pod {
    type Error = Error;

    fn try_from(pod: &core::Pod) -> Result<Self, Error> {
        let object = object_ref(Kind::Pod, &pod.metadata, true);
        let (name, namespace) = namespaced_key(
            &object,
            pod.metadata.name.as_deref(),
            pod.metadata.namespace.as_deref(),
        )?;
        let (name, namespace) = (name.to_owned(), namespace.to_owned());
        let labels = labels_of(&object, &pod.metadata)?;

        let mut ipv4 = None;
        let mut ipv6 = None;
        let status = pod.status.as_ref();
        // A finished pod keeps its `podIPs` in the API while the network plugin has
        // released them: a Job's completed pods stay listed as long as the Job, and the
        // next pod given the address would inherit a finished pod's place in every set
        // its labels select. So a pod whose phase is final counts without addresses (as
        // Calico drops its endpoint), and addresses it no longer owns are not checked.
        let finished = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some(POD_SUCCEEDED | POD_FAILED)
        );
        // A hostNetwork pod's address is its node's, and nothing in a packet tells the
        // pod's traffic from the node's. Kubernetes then asks a plugin to ignore such pods
        // when matching selectors and to treat their traffic as the node's (the concept
        // page, "NetworkPolicy and hostNetwork pods"), and Calico makes no endpoint for
        // them. In pod sets, the address would let everything from that node pass as the
        // pod wherever a policy admits the pod, and would put the node itself under the
        // pod's isolation on the INPUT and OUTPUT hooks. So it counts without addresses.
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        // Each address with its index in `podIPs`, or `None` for `podIP`.
        let listed: Vec<(Option<usize>, &str)> = match status.and_then(|s| s.pod_ips.as_ref()) {
            _ if finished || host_network => Vec::new(),
            Some(ips) if !ips.is_empty() => ips
                .iter()
                .enumerate()
                .map(|(i, ip)| (Some(i), ip.ip.as_str()))
                .collect(),
            // Older kubelets fill only the single-stack field.
            _ => status
                .and_then(|s| s.pod_ip.as_deref())
                .filter(|ip| !ip.is_empty())
                .map(|ip| vec![(None, ip)])
                .unwrap_or_default(),
        };
        for (at, text) in listed {
            let field = || match at {
                Some(i) => Field::name(&Field::index(&"status.podIPs", i), "ip").to_string(),
                None => "status.podIP".to_owned(),
            };
            let ip: IpAddr = text.parse().map_err(|_| Error::PodIp {
                object: object.boxed(),
                field: field(),
                value: text.to_owned(),
            })?;
            let dup = |family| Error::PodIpFamily {
                object: object.boxed(),
                field: field(),
                family,
                value: text.to_owned(),
            };
            match ip {
                IpAddr::V4(a) if ipv4.is_none() => ipv4 = Some(a),
                IpAddr::V4(_) => return Err(dup("IPv4")),
                IpAddr::V6(a) if ipv6.is_none() => ipv6 = Some(a),
                IpAddr::V6(_) => return Err(dup("IPv6")),
            }
        }

        let mut named_ports: BTreeMap<String, _> = BTreeMap::new();
        let spec = pod.spec.as_ref();
        let containers = spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, c)| ("spec.containers", i, c));
        // A sidecar (an init container with `restartPolicy: Always`) runs beside the
        // others for the pod's whole life, and its ports are the pod's: Kubernetes
        // resolves a Service's named target port against them too (`FindPort`).
        let sidecars = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.restart_policy.as_deref() == Some(SIDECAR_RESTART_POLICY))
            .map(|(i, c)| ("spec.initContainers", i, c));
        for (list, i, c) in containers.chain(sidecars) {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                // Only named ports take part in policy, so only they are
                // checked: rejecting a whole pod over a port no policy can
                // refer to would drop it from isolation for nothing.
                let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let container = Field::index(&list, i);
                let ports = Field::name(&container, "ports");
                let path = Field::index(&ports, j);
                check_port_name(port_name).map_err(|reason| Error::PortName {
                    object: object.boxed(),
                    field: Field::name(&path, "name").to_string(),
                    value: port_name.to_owned(),
                    reason,
                })?;
                let port = port_number(
                    &object,
                    &Field::name(&path, "containerPort"),
                    p.container_port,
                )?;
                let protocol = protocol(
                    &object,
                    &Field::name(&path, "protocol"),
                    p.protocol.as_deref(),
                )?;
                named_ports
                    .entry(port_name.to_owned())
                    .or_insert_with(std::collections::BTreeSet::new)
                    .insert(ContainerPort { protocol, port });
            }
        }

        let host_interface = match pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HOST_INTERFACE_ANNOTATION))
        {
            None => None,
            Some(iface) => {
                ruleset::IfName::check(iface).map_err(|reason| Error::Interface {
                    object: object.boxed(),
                    field: format!("metadata.annotations[{HOST_INTERFACE_ANNOTATION}]"),
                    value: iface.clone(),
                    reason,
                })?;
                Some(iface.clone())
            }
        };

        Ok(Pod {
            namespace,
            name,
            labels,
            ipv4,
            ipv6,
            named_ports,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            host_interface,
        })
    }
}

impl TryFrom<&net::NetworkPolicy> for Policy {
    type Error = Error;

    fn try_from(np: &net::NetworkPolicy) -> Result<Self, Error> {
        let object = object_ref(Kind::NetworkPolicy, &np.metadata, true);
        let (name, namespace) = namespaced_key(
            &object,
            np.metadata.name.as_deref(),
            np.metadata.namespace.as_deref(),
        )?;
        let (name, namespace) = (name.to_owned(), namespace.to_owned());
        let default_spec = net::NetworkPolicySpec::default();
        let spec = np.spec.as_ref().unwrap_or(&default_spec);

        // A missing podSelector is `{}` (select every pod), as the API defaults it.
        let pod_selector = match &spec.pod_selector {
            Some(sel) => LabelSelector::from_k8s(sel, &object, "spec.podSelector")?,
            None => LabelSelector::everything(),
        };

        let ctx = Ctx {
            object: &object,
            namespace: &namespace,
        };
        let ingress = spec
            .ingress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                ctx.rule(
                    &Field::index(&"spec.ingress", i),
                    "from",
                    r.from.as_deref(),
                    r.ports.as_deref(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let egress = spec
            .egress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                ctx.rule(
                    &Field::index(&"spec.egress", i),
                    "to",
                    r.to.as_deref(),
                    r.ports.as_deref(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;

        let types = spec.policy_types.as_deref().unwrap_or_default();
        if types.len() > 2 {
            return Err(Error::PolicyType {
                object: object.boxed(),
                field: "spec.policyTypes".to_owned(),
                value: types.join(","),
            });
        }
        let (mut has_ingress, mut has_egress) = (false, false);
        for (i, t) in types.iter().enumerate() {
            match t.as_str() {
                "Ingress" => has_ingress = true,
                "Egress" => has_egress = true,
                other => {
                    return Err(Error::PolicyType {
                        object: object.boxed(),
                        field: format!("spec.policyTypes[{i}]"),
                        value: other.to_owned(),
                    })
                }
            }
        }
        if types.is_empty() {
            // SetDefaults_NetworkPolicy: Ingress always, Egress if there are egress rules.
            has_ingress = true;
            has_egress = !egress.is_empty();
        }

        Ok(Policy {
            namespace,
            name,
            pod_selector,
            ingress: has_ingress.then_some(ingress),
            egress: has_egress.then_some(egress),
        })
    }
}

struct Ctx<'a> {
    object: &'a ObjectRef,
    namespace: &'a str,
}

impl Ctx<'_> {
    fn rule(
        &self,
        path: &dyn Display,
        peers_field: &'static str,
        peers: Option<&[net::NetworkPolicyPeer]>,
        ports: Option<&[net::NetworkPolicyPort]>,
    ) -> Result<Rule, Error> {
        let peers_path = Field::name(path, peers_field);
        let peers = peers
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(j, p)| self.peer(&Field::index(&peers_path, j), p))
            .collect::<Result<Vec<_>, _>>()?;
        let ports_path = Field::name(path, "ports");
        let ports = ports
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(k, p)| self.port(&Field::index(&ports_path, k), p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rule { peers, ports })
    }

    fn peer(&self, path: &dyn Display, peer: &net::NetworkPolicyPeer) -> Result<Peer, Error> {
        let has_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        let bad = |reason| Error::Peer {
            object: self.object.boxed(),
            field: path.to_string(),
            reason,
        };
        match (&peer.ip_block, has_selector) {
            (Some(_), true) => Err(bad("may not specify both ipBlock and another peer")),
            (None, false) => Err(bad("must specify a peer")),
            (Some(block), false) => self
                .ip_block(&Field::name(path, "ipBlock"), block)
                .map(Peer::IpBlock),
            (None, true) => {
                let pods = match &peer.pod_selector {
                    Some(sel) => {
                        LabelSelector::from_k8s(sel, self.object, Field::name(path, "podSelector"))?
                    }
                    None => LabelSelector::everything(),
                };
                let namespaces = match &peer.namespace_selector {
                    Some(sel) => NamespaceScope::Selected(LabelSelector::from_k8s(
                        sel,
                        self.object,
                        Field::name(path, "namespaceSelector"),
                    )?),
                    None => NamespaceScope::Only(self.namespace.to_owned()),
                };
                Ok(Peer::Pods { namespaces, pods })
            }
        }
    }

    fn ip_block(&self, path: &dyn Display, block: &net::IPBlock) -> Result<IpBlock, Error> {
        let cidr_field = Field::name(path, "cidr");
        if block.cidr.is_empty() {
            return Err(Error::Missing {
                object: self.object.boxed(),
                field: cidr_field.to_string(),
            });
        }
        let cidr = self.cidr(&cidr_field, &block.cidr)?;
        let excepts = Field::name(path, "except");
        let mut except = Vec::new();
        for (i, e) in block.except.iter().flatten().enumerate() {
            let field = Field::index(&excepts, i);
            let net = self.cidr(&field, e)?;
            // `contains` is false across families, so this also rejects a
            // v6 except in a v4 block, as the API server does.
            if !(cidr.contains(&net) && net.prefix_len() > cidr.prefix_len()) {
                return Err(Error::ExceptNotInside {
                    object: self.object.boxed(),
                    field: field.to_string(),
                    except: e.clone(),
                    cidr: block.cidr.clone(),
                });
            }
            except.push(net);
        }
        except.sort();
        except.dedup();
        Ok(IpBlock { cidr, except })
    }

    /// Parses `a.b.c.d/n` or `x::/n`. Host bits are accepted and cleared, like
    /// the API server's `ParseCIDRSloppy`, which takes `10.0.0.1/24` as `10.0.0.0/24`.
    fn cidr(&self, field: &dyn Display, text: &str) -> Result<IpNet, Error> {
        text.parse::<IpNet>()
            .map(|n| n.trunc())
            .map_err(|e| Error::Cidr {
                object: self.object.boxed(),
                field: field.to_string(),
                value: text.to_owned(),
                reason: e.to_string(),
            })
    }

    fn port(&self, path: &dyn Display, port: &net::NetworkPolicyPort) -> Result<PortRule, Error> {
        let protocol = protocol(
            self.object,
            &Field::name(path, "protocol"),
            port.protocol.as_deref(),
        )?;
        let end_field = Field::name(path, "endPort");
        let port = match (&port.port, port.end_port) {
            (None, Some(_)) => {
                return Err(Error::EndPortWithoutPort {
                    object: self.object.boxed(),
                    field: end_field.to_string(),
                })
            }
            (None, None) => Port::Any,
            (Some(IntOrString::String(name)), end) => {
                if end.is_some() {
                    return Err(Error::EndPortNamedPort {
                        object: self.object.boxed(),
                        field: end_field.to_string(),
                        port: name.clone(),
                    });
                }
                check_port_name(name).map_err(|reason| Error::PortName {
                    object: self.object.boxed(),
                    field: Field::name(path, "port").to_string(),
                    value: name.clone(),
                    reason,
                })?;
                Port::Named(name.clone())
            }
            (Some(IntOrString::Int(n)), end) => {
                let start = port_number(self.object, &Field::name(path, "port"), *n)?;
                let end = match end {
                    None => start,
                    Some(e) => {
                        let end = port_number(self.object, &end_field, e)?;
                        if end < start {
                            return Err(Error::EndPortBelowPort {
                                object: self.object.boxed(),
                                field: end_field.to_string(),
                                port: *n,
                                end_port: e,
                            });
                        }
                        end
                    }
                };
                Port::Range { start, end }
            }
        };
        Ok(PortRule { protocol, port })
    }
}

fn protocol(
    object: &ObjectRef,
    field: &dyn Display,
    value: Option<&str>,
) -> Result<Protocol, Error> {
    match value {
        None => Ok(Protocol::Tcp),
        Some(s) => Protocol::from_k8s(s).ok_or_else(|| Error::Protocol {
            object: object.boxed(),
            field: field.to_string(),
            value: s.to_owned(),
        }),
    }
}

fn port_number(object: &ObjectRef, field: &dyn Display, value: i32) -> Result<u16, Error> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Error::PortRange {
            object: object.boxed(),
            field: field.to_string(),
            value,
        }),
    }
}

/// An IANA service name (RFC 6335 §5.1), as `validation.IsValidPortName` checks it.
pub(crate) fn check_port_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > PORT_NAME_MAX {
        return Err("must be 1 to 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("must contain only lowercase alphanumeric characters and '-'");
    }
    if name.contains("--") {
        return Err("must not contain consecutive hyphens");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("must contain at least one letter");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must not begin or end with a hyphen");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names() {
        for ok in ["http", "h2c", "a", "dns-tcp", "x1234567890abcd"] {
            assert_eq!(check_port_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "80",
            "HTTP",
            "a--b",
            "-http",
            "http-",
            "x1234567890abcde",
            "a_b",
        ] {
            assert!(check_port_name(bad).is_err(), "{bad:?}");
        }
    }
}
