//! The conformance table: small clusters, each with hand-written expected
//! reachability, for the reference evaluator and, later, the dataplane.
//!
//! This file depends on the `policy` crate only, so any test crate can use it:
//!
//! ```ignore
//! #[path = "../../policy/tests/conformance/cases.rs"]
//! mod cases;
//! for case in cases::all() { let cluster = case.cluster(); /* ... */ }
//! ```
//!
//! Every case holds its input as `k8s-openapi` objects (so a dataplane test
//! can feed them through the same conversion a real agent uses) and a list of
//! probes with expectations written by hand from the Kubernetes semantics,
//! never computed. Every pod has an IPv4 address in 10.244.0.0/16 and an IPv6
//! address in fd00:10:244::/48; a case has at most eight pods. External hosts
//! sit in 192.0.2.0/24, 198.51.100.0/24 and 2001:db8::/32, except where a seed
//! walkthrough names its own ranges.
//!
//! Matrices read row = source, column = destination: `1` allowed, `0` denied,
//! `-` not probed (a pod to itself, and host to host, which no policy governs).
//! A probe from a pod to itself, where a case lists one, expects `true`: that
//! traffic stays inside the pod. A dataplane test may skip such probes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy::k8s_openapi::api::core::v1 as core;
use policy::k8s_openapi::api::networking::v1 as net;
use policy::k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use policy::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use policy::{Cluster, Endpoint, Family, ObjectKey, Protocol};

/// One conformance case.
pub struct Case {
    /// Unique, kebab-case.
    pub name: &'static str,
    /// What the case shows, and where it comes from.
    pub about: &'static str,
    /// Namespaces, as the API server would send them.
    pub namespaces: Vec<core::Namespace>,
    /// Pods, each with one IPv4 and one IPv6 address.
    pub pods: Vec<core::Pod>,
    /// NetworkPolicies.
    pub policies: Vec<net::NetworkPolicy>,
    /// Hosts outside the cluster that probes use.
    pub externals: Vec<External>,
    /// Probes with hand-written expectations.
    pub probes: Vec<Probe>,
}

/// A host outside the cluster, with one address per family.
#[derive(Clone, Debug)]
pub struct External {
    /// Short name used in the case's matrices.
    pub alias: &'static str,
    /// IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv6 address.
    pub ipv6: Ipv6Addr,
}

/// A connection attempt and whether it must succeed.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Initiator.
    pub src: Endpoint,
    /// Responder.
    pub dst: Endpoint,
    /// Layer-4 protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// IP family; external endpoints already hold the address of this family.
    pub family: Family,
    /// Hand-written expectation.
    pub expected: bool,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {}/{} {}: expected {}",
            self.src,
            self.dst,
            self.protocol,
            self.port,
            self.family,
            if self.expected { "allow" } else { "deny" }
        )
    }
}

impl Case {
    /// The case's cluster. Panics if any object is invalid: the table holds
    /// valid objects only.
    pub fn cluster(&self) -> Cluster {
        let (cluster, errors) = Cluster::from_k8s(&self.namespaces, &self.pods, &self.policies);
        assert!(
            errors.is_empty(),
            "case {}: invalid objects: {errors:?}",
            self.name
        );
        cluster
    }

    /// Whether a probe is from a pod to itself.
    pub fn is_self_probe(probe: &Probe) -> bool {
        matches!((&probe.src, &probe.dst), (Endpoint::Pod(a), Endpoint::Pod(b)) if a == b)
    }
}

// ---------------------------------------------------------------------------
// Builders. Terse on purpose: the table below is what a reader checks.

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;
const SCTP: Protocol = Protocol::Sctp;
const V4: &[Family] = &[Family::Ipv4];
const V6: &[Family] = &[Family::Ipv6];
const BOTH: &[Family] = &[Family::Ipv4, Family::Ipv6];
const Y: bool = true;
const N: bool = false;

enum Alias {
    Pod(ObjectKey),
    Ext(Ipv4Addr, Ipv6Addr),
}

struct B {
    case: Case,
    aliases: BTreeMap<&'static str, Alias>,
}

fn case(name: &'static str, about: &'static str) -> B {
    B {
        case: Case {
            name,
            about,
            namespaces: Vec::new(),
            pods: Vec::new(),
            policies: Vec::new(),
            externals: Vec::new(),
            probes: Vec::new(),
        },
        aliases: BTreeMap::new(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl B {
    fn ns(mut self, name: &str, l: &[(&str, &str)]) -> Self {
        self.case.namespaces.push(core::Namespace {
            metadata: meta::ObjectMeta {
                name: Some(name.into()),
                labels: labels(l),
                ..Default::default()
            },
            ..Default::default()
        });
        self
    }

    /// A pod at 10.244.`subnet`.`host` and fd00:10:244:`subnet`::`host`.
    fn pod(
        mut self,
        alias: &'static str,
        key: &str,
        l: &[(&str, &str)],
        (subnet, host): (u8, u8),
    ) -> Self {
        let (ns, name) = key.split_once('/').expect("ns/name");
        let v4 = format!("10.244.{subnet}.{host}");
        let v6 = format!("fd00:10:244:{subnet}::{host}");
        self.case.pods.push(core::Pod {
            metadata: meta::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: labels(l),
                ..Default::default()
            },
            spec: Some(core::PodSpec {
                containers: Vec::new(),
                node_name: Some("node-1".into()),
                ..Default::default()
            }),
            status: Some(core::PodStatus {
                pod_ip: Some(v4.clone()),
                pod_ips: Some(vec![core::PodIP { ip: v4 }, core::PodIP { ip: v6 }]),
                ..Default::default()
            }),
        });
        self.aliases
            .insert(alias, Alias::Pod(ObjectKey::new(ns, name)));
        self
    }

    /// Adds a container with these named ports to the last pod.
    fn ports(mut self, ports: &[(&str, &str, i32)]) -> Self {
        let pod = self.case.pods.last_mut().expect("a pod first");
        let spec = pod.spec.as_mut().expect("spec");
        let n = spec.containers.len();
        spec.containers.push(core::Container {
            name: format!("c{n}"),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, proto, port)| core::ContainerPort {
                        name: Some(name.to_string()),
                        protocol: Some(proto.to_string()),
                        container_port: *port,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        self
    }

    fn ext(mut self, alias: &'static str, v4: &str, v6: &str) -> Self {
        let (ipv4, ipv6) = (v4.parse().expect("v4"), v6.parse().expect("v6"));
        self.case.externals.push(External { alias, ipv4, ipv6 });
        self.aliases.insert(alias, Alias::Ext(ipv4, ipv6));
        self
    }

    fn policy(mut self, np: Np) -> Self {
        self.case.policies.push(np.0);
        self
    }

    fn endpoint(&self, alias: &str, family: Family) -> Endpoint {
        match self.aliases.get(alias) {
            Some(Alias::Pod(key)) => Endpoint::Pod(key.clone()),
            Some(Alias::Ext(v4, _)) if family == Family::Ipv4 => {
                Endpoint::External(IpAddr::V4(*v4))
            }
            Some(Alias::Ext(_, v6)) => Endpoint::External(IpAddr::V6(*v6)),
            None => panic!("case {}: unknown alias {alias}", self.case.name),
        }
    }

    /// Probes from a matrix; see the module docs for the notation.
    fn matrix(mut self, protocol: Protocol, port: u16, families: &[Family], text: &str) -> Self {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
        for line in lines {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                cells.len(),
                header.len() + 1,
                "case {}: row {line:?}",
                self.case.name
            );
            for (dst, cell) in header.iter().zip(&cells[1..]) {
                let expected = match *cell {
                    "1" => true,
                    "0" => false,
                    "-" => continue,
                    other => panic!("case {}: bad cell {other:?}", self.case.name),
                };
                for &family in families {
                    let probe = Probe {
                        src: self.endpoint(cells[0], family),
                        dst: self.endpoint(dst, family),
                        protocol,
                        port,
                        family,
                        expected,
                    };
                    self.case.probes.push(probe);
                }
            }
        }
        self
    }

    /// Single probes: (source, destination, protocol, port, expected).
    fn expect(mut self, families: &[Family], probes: &[(&str, &str, Protocol, u16, bool)]) -> Self {
        for &(src, dst, protocol, port, expected) in probes {
            for &family in families {
                let probe = Probe {
                    src: self.endpoint(src, family),
                    dst: self.endpoint(dst, family),
                    protocol,
                    port,
                    family,
                    expected,
                };
                self.case.probes.push(probe);
            }
        }
        self
    }

    fn done(self) -> Case {
        assert!(
            !self.case.probes.is_empty(),
            "case {} has no probes",
            self.case.name
        );
        self.case
    }
}

/// A NetworkPolicy under construction.
struct Np(net::NetworkPolicy);

/// A policy `ns/name` selecting `{}`, with no rules and no policyTypes.
fn np(key: &str) -> Np {
    let (ns, name) = key.split_once('/').expect("ns/name");
    Np(net::NetworkPolicy {
        metadata: meta::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(net::NetworkPolicySpec {
            pod_selector: Some(meta::LabelSelector::default()),
            ..Default::default()
        }),
    })
}

impl Np {
    fn spec(&mut self) -> &mut net::NetworkPolicySpec {
        self.0.spec.as_mut().expect("spec")
    }

    fn select(mut self, s: meta::LabelSelector) -> Self {
        self.spec().pod_selector = Some(s);
        self
    }

    fn types(mut self, t: &[&str]) -> Self {
        self.spec().policy_types = Some(t.iter().map(|s| s.to_string()).collect());
        self
    }

    /// An ingress rule; an empty `from` or `ports` is left out (absent).
    fn ingress(
        mut self,
        from: Vec<net::NetworkPolicyPeer>,
        ports: Vec<net::NetworkPolicyPort>,
    ) -> Self {
        let rule = net::NetworkPolicyIngressRule {
            from: (!from.is_empty()).then_some(from),
            ports: (!ports.is_empty()).then_some(ports),
        };
        self.spec().ingress.get_or_insert_with(Vec::new).push(rule);
        self
    }

    /// An egress rule; an empty `to` or `ports` is left out (absent).
    fn egress(
        mut self,
        to: Vec<net::NetworkPolicyPeer>,
        ports: Vec<net::NetworkPolicyPort>,
    ) -> Self {
        let rule = net::NetworkPolicyEgressRule {
            to: (!to.is_empty()).then_some(to),
            ports: (!ports.is_empty()).then_some(ports),
        };
        self.spec().egress.get_or_insert_with(Vec::new).push(rule);
        self
    }
}

/// `matchLabels` selector.
fn sel(pairs: &[(&str, &str)]) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: labels(pairs),
        match_expressions: None,
    }
}

/// `{}`.
fn every() -> meta::LabelSelector {
    meta::LabelSelector::default()
}

/// `matchExpressions` selector: (key, operator, values).
fn exprs(e: &[(&str, &str, &[&str])]) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: None,
        match_expressions: Some(
            e.iter()
                .map(|(key, op, values)| meta::LabelSelectorRequirement {
                    key: key.to_string(),
                    operator: op.to_string(),
                    values: (!values.is_empty())
                        .then(|| values.iter().map(|v| v.to_string()).collect()),
                })
                .collect(),
        ),
    }
}

fn pods(s: meta::LabelSelector) -> net::NetworkPolicyPeer {
    net::NetworkPolicyPeer {
        pod_selector: Some(s),
        ..Default::default()
    }
}

fn nss(s: meta::LabelSelector) -> net::NetworkPolicyPeer {
    net::NetworkPolicyPeer {
        namespace_selector: Some(s),
        ..Default::default()
    }
}

/// The AND form: one peer with both selectors.
fn both(ns: meta::LabelSelector, pod: meta::LabelSelector) -> net::NetworkPolicyPeer {
    net::NetworkPolicyPeer {
        namespace_selector: Some(ns),
        pod_selector: Some(pod),
        ..Default::default()
    }
}

fn block(cidr: &str, except: &[&str]) -> net::NetworkPolicyPeer {
    net::NetworkPolicyPeer {
        ip_block: Some(net::IPBlock {
            cidr: cidr.into(),
            except: (!except.is_empty()).then(|| except.iter().map(|e| e.to_string()).collect()),
        }),
        ..Default::default()
    }
}

fn port(
    protocol: Option<&str>,
    port: Option<IntOrString>,
    end_port: Option<i32>,
) -> net::NetworkPolicyPort {
    net::NetworkPolicyPort {
        protocol: protocol.map(Into::into),
        port,
        end_port,
    }
}

fn tcp(p: i32) -> net::NetworkPolicyPort {
    port(Some("TCP"), Some(IntOrString::Int(p)), None)
}

fn udp(p: i32) -> net::NetworkPolicyPort {
    port(Some("UDP"), Some(IntOrString::Int(p)), None)
}

fn sctp(p: i32) -> net::NetworkPolicyPort {
    port(Some("SCTP"), Some(IntOrString::Int(p)), None)
}

fn range(protocol: &str, start: i32, end: i32) -> net::NetworkPolicyPort {
    port(Some(protocol), Some(IntOrString::Int(start)), Some(end))
}

/// A named port without a protocol (so TCP).
fn named(name: &str) -> net::NetworkPolicyPort {
    port(None, Some(IntOrString::String(name.into())), None)
}

fn named_proto(name: &str, protocol: &str) -> net::NetworkPolicyPort {
    port(Some(protocol), Some(IntOrString::String(name.into())), None)
}

// ---------------------------------------------------------------------------
// Worlds shared by several cases.

/// Namespaces x (env=prod), y (env=dev), z (no env); five pods; three hosts.
///
/// | alias | pod | labels | IPv4 / IPv6 |
/// |---|---|---|---|
/// | xa | x/a | app=a, tier=web | 10.244.1.10 / fd00:10:244:1::10 |
/// | xb | x/b | app=b, tier=db  | 10.244.1.11 / fd00:10:244:1::11 |
/// | ya | y/a | app=a, tier=web | 10.244.2.10 / fd00:10:244:2::10 |
/// | yb | y/b | app=b           | 10.244.2.11 / fd00:10:244:2::11 |
/// | zc | z/c | app=c, tier=web | 10.244.3.10 / fd00:10:244:3::10 |
///
/// Hosts: E 192.0.2.10 / 2001:db8::10, F 198.51.100.20 / 2001:db8:1::20,
/// G 192.0.2.200 / 2001:db8::200.
fn std(name: &'static str, about: &'static str) -> B {
    case(name, about)
        .ns("x", &[("ns", "x"), ("env", "prod")])
        .ns("y", &[("ns", "y"), ("env", "dev")])
        .ns("z", &[("ns", "z")])
        .pod("xa", "x/a", &[("app", "a"), ("tier", "web")], (1, 10))
        .pod("xb", "x/b", &[("app", "b"), ("tier", "db")], (1, 11))
        .pod("ya", "y/a", &[("app", "a"), ("tier", "web")], (2, 10))
        .pod("yb", "y/b", &[("app", "b")], (2, 11))
        .pod("zc", "z/c", &[("app", "c"), ("tier", "web")], (3, 10))
        .ext("E", "192.0.2.10", "2001:db8::10")
        .ext("F", "198.51.100.20", "2001:db8:1::20")
        .ext("G", "192.0.2.200", "2001:db8::200")
}

const OPEN: &str = "
        xa xb ya yb zc E F G
    xa  -  1  1  1  1  1 1 1
    xb  1  -  1  1  1  1 1 1
    ya  1  1  -  1  1  1 1 1
    yb  1  1  1  -  1  1 1 1
    zc  1  1  1  1  -  1 1 1
    E   1  1  1  1  1  - - -
    F   1  1  1  1  1  - - -
    G   1  1  1  1  1  - - -";

/// Nothing gets into x; x sends freely.
const DENY_INTO_X: &str = "
        xa xb ya yb zc E F G
    xa  -  0  1  1  1  1 1 1
    xb  0  -  1  1  1  1 1 1
    ya  0  0  -  1  1  1 1 1
    yb  0  0  1  -  1  1 1 1
    zc  0  0  1  1  -  1 1 1
    E   0  0  1  1  1  - - -
    F   0  0  1  1  1  - - -
    G   0  0  1  1  1  - - -";

/// Nothing leaves x; x receives freely.
const DENY_FROM_X: &str = "
        xa xb ya yb zc E F G
    xa  -  0  0  0  0  0 0 0
    xb  0  -  0  0  0  0 0 0
    ya  1  1  -  1  1  1 1 1
    yb  1  1  1  -  1  1 1 1
    zc  1  1  1  1  -  1 1 1
    E   1  1  1  1  1  - - -
    F   1  1  1  1  1  - - -
    G   1  1  1  1  1  - - -";

/// Into x only from zc.
const INTO_X_FROM_ZC: &str = "
        xa xb ya yb zc E F G
    xa  -  0  1  1  1  1 1 1
    xb  0  -  1  1  1  1 1 1
    ya  0  0  -  1  1  1 1 1
    yb  0  0  1  -  1  1 1 1
    zc  1  1  1  1  -  1 1 1
    E   0  0  1  1  1  - - -
    F   0  0  1  1  1  - - -
    G   0  0  1  1  1  - - -";

/// Into x from every pod, no host.
const INTO_X_FROM_PODS: &str = "
        xa xb ya yb zc E F G
    xa  -  1  1  1  1  1 1 1
    xb  1  -  1  1  1  1 1 1
    ya  1  1  -  1  1  1 1 1
    yb  1  1  1  -  1  1 1 1
    zc  1  1  1  1  -  1 1 1
    E   0  0  1  1  1  - - -
    F   0  0  1  1  1  - - -
    G   0  0  1  1  1  - - -";

/// Into x only from xa and ya (app=a anywhere).
const INTO_X_FROM_APP_A: &str = "
        xa xb ya yb zc E F G
    xa  -  1  1  1  1  1 1 1
    xb  0  -  1  1  1  1 1 1
    ya  1  1  -  1  1  1 1 1
    yb  0  0  1  -  1  1 1 1
    zc  0  0  1  1  -  1 1 1
    E   0  0  1  1  1  - - -
    F   0  0  1  1  1  - - -
    G   0  0  1  1  1  - - -";

/// Into x only from the pods of y.
const INTO_X_FROM_Y: &str = "
        xa xb ya yb zc E F G
    xa  -  0  1  1  1  1 1 1
    xb  0  -  1  1  1  1 1 1
    ya  1  1  -  1  1  1 1 1
    yb  1  1  1  -  1  1 1 1
    zc  0  0  1  1  -  1 1 1
    E   0  0  1  1  1  - - -
    F   0  0  1  1  1  - - -
    G   0  0  1  1  1  - - -";

/// Named-port world: namespaces x and y, web pods whose port `http` differs.
///
/// | alias | pod | labels | named ports |
/// |---|---|---|---|
/// | w1 | x/web-1 | app=web | http TCP 8080, metrics TCP 9090 |
/// | w2 | x/web-2 | app=web | http TCP 80 |
/// | dn | x/dns | app=dns | dns UDP 53, dns-tcp TCP 53 |
/// | cl | y/client | app=client | http TCP 8081 |
/// | w3 | y/web-3 | app=web | http UDP 8080 |
/// | sc | y/sidecar | app=sidecar | metrics TCP 9090 (container 0), metrics TCP 9091 (container 1) |
///
/// Host: E 192.0.2.10 / 2001:db8::10.
fn named_world(name: &'static str, about: &'static str) -> B {
    case(name, about)
        .ns("x", &[("ns", "x")])
        .ns("y", &[("ns", "y")])
        .pod("w1", "x/web-1", &[("app", "web")], (1, 10))
        .ports(&[("http", "TCP", 8080), ("metrics", "TCP", 9090)])
        .pod("w2", "x/web-2", &[("app", "web")], (1, 11))
        .ports(&[("http", "TCP", 80)])
        .pod("dn", "x/dns", &[("app", "dns")], (1, 12))
        .ports(&[("dns", "UDP", 53), ("dns-tcp", "TCP", 53)])
        .pod("cl", "y/client", &[("app", "client")], (2, 10))
        .ports(&[("http", "TCP", 8081)])
        .pod("w3", "y/web-3", &[("app", "web")], (2, 11))
        .ports(&[("http", "UDP", 8080)])
        .pod("sc", "y/sidecar", &[("app", "sidecar")], (2, 12))
        .ports(&[("metrics", "TCP", 9090)])
        .ports(&[("metrics", "TCP", 9091)])
        .ext("E", "192.0.2.10", "2001:db8::10")
}

/// The Kubernetes documentation's world (NetworkPolicy concept page).
///
/// | alias | pod | labels |
/// |---|---|---|
/// | db | default/db | role=db |
/// | fe | default/frontend | role=frontend |
/// | ot | default/other | role=other |
/// | mp | myproject/app | app=x |
/// | of | other/frontend | role=frontend |
///
/// Hosts: IN 198.51.100.200 (in the block), EX 198.51.100.20 (in its except),
/// OUT 192.0.2.10. The doc's 172.17.0.0/16 and 10.0.0.0/24 are replaced by
/// documentation ranges so that no probe leaves the test's own addresses.
fn docs_world(name: &'static str, about: &'static str) -> B {
    case(name, about)
        .ns("default", &[])
        .ns("myproject", &[("project", "myproject")])
        .ns("other", &[])
        .pod("db", "default/db", &[("role", "db")], (1, 10))
        .pod("fe", "default/frontend", &[("role", "frontend")], (1, 11))
        .pod("ot", "default/other", &[("role", "other")], (1, 12))
        .pod("mp", "myproject/app", &[("app", "x")], (2, 10))
        .pod("of", "other/frontend", &[("role", "frontend")], (3, 10))
        .ext("IN", "198.51.100.200", "2001:db8:2::200")
        .ext("EX", "198.51.100.20", "2001:db8:2::20")
        .ext("OUT", "192.0.2.10", "2001:db8::10")
}

/// Seed 000's world: namespaces alpha (ns=a), beta (ns=b), default; two nginx
/// pods and access pods, as `kubectl run` labels them (run=NAME).
///
/// Hosts: IN 10.63.48.10 (in 10.63.48.0/22), EXC 10.63.48.4 (its except),
/// OUT 192.0.2.10. The seed's pod IPs (10.64.x) are moved to 10.244.x.
fn seed0_world(name: &'static str, about: &'static str) -> B {
    case(name, about)
        .ns("alpha", &[("ns", "a")])
        .ns("beta", &[("ns", "b")])
        .ns("default", &[])
        .pod("n1", "alpha/nginx-1", &[("run", "nginx")], (1, 2))
        .pod("n2", "alpha/nginx-2", &[("run", "nginx")], (2, 2))
        .pod("ac", "alpha/access", &[("run", "access")], (1, 5))
        .pod("bac", "beta/access", &[("run", "access")], (1, 7))
        .pod(
            "dac",
            "default/access-default",
            &[("run", "access-default")],
            (1, 8),
        )
        .ext("IN", "10.63.48.10", "2001:db8:63::10")
        .ext("EXC", "10.63.48.4", "2001:db8:63::4")
        .ext("OUT", "192.0.2.10", "2001:db8::10")
}

fn alpha_deny() -> Np {
    // As in the seed: `podSelector: {matchLabels: {}}` and no policyTypes.
    np("alpha/alpha-deny").select(sel(&[]))
}

fn access_nginx() -> Np {
    np("alpha/access-nginx")
        .select(sel(&[("run", "nginx")]))
        .ingress(vec![pods(sel(&[("run", "access")]))], vec![])
}

fn access_nginx_complex() -> Np {
    np("alpha/access-nginx-complex")
        .select(sel(&[("run", "nginx")]))
        .types(&["Ingress", "Egress"])
        .ingress(
            vec![
                block("10.63.48.0/22", &["10.63.48.4/32"]),
                nss(sel(&[("ns", "a")])),
                both(sel(&[("ns", "b")]), sel(&[("run", "access")])),
            ],
            vec![tcp(80)],
        )
        .egress(vec![block("10.0.0.0/8", &[])], vec![tcp(80)])
}

const SEED0_OPEN: &str = "
         n1 n2 ac bac dac IN EXC OUT
    n1   -  1  1  1   1   1  1   1
    n2   1  -  1  1   1   1  1   1
    ac   1  1  -  1   1   1  1   1
    bac  1  1  1  -   1   1  1   1
    dac  1  1  1  1   -   1  1   1
    IN   1  1  1  1   1   -  -   -
    EXC  1  1  1  1   1   -  -   -
    OUT  1  1  1  1   1   -  -   -";

/// Seed 004's world: busybox in default, namespaces shuai (zhulaoshi=shuai) and other.
///
/// Hosts: IN 172.17.0.9 (in 172.17.0.0/16), EX 172.17.1.9 (in the except
/// 172.17.1.0/24), OUT 192.0.2.10.
fn seed4_world(name: &'static str, about: &'static str) -> B {
    case(name, about)
        .ns("default", &[])
        .ns("shuai", &[("zhulaoshi", "shuai")])
        .ns("other", &[])
        .pod("bb", "default/busybox", &[("name", "busybox")], (1, 10))
        .pod("ac", "default/access", &[("access", "true")], (1, 11))
        .pod("pl", "default/plain", &[], (1, 12))
        .pod("sh", "shuai/client", &[], (2, 10))
        .pod("ot", "other/client", &[("access", "true")], (3, 10))
        .ext("IN", "172.17.0.9", "2001:db8:17::9")
        .ext("EX", "172.17.1.9", "2001:db8:17:1::9")
        .ext("OUT", "192.0.2.10", "2001:db8::10")
}

fn busybox(name: &str) -> Np {
    np(&format!("default/{name}")).select(sel(&[("name", "busybox")]))
}

// ---------------------------------------------------------------------------
// The table.

/// Every case, in a stable order.
pub fn all() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(patterns());
    v.extend(targets());
    v.extend(peers());
    v.extend(unions());
    v.extend(ports());
    v.extend(named_ports());
    v.extend(ip_blocks());
    v.extend(egress());
    v.extend(documentation());
    v.extend(seeds());
    v
}

fn patterns() -> Vec<Case> {
    vec![
        std(
            "no-policy-allows-everything",
            "pods are non-isolated by default, any protocol",
        )
        .matrix(TCP, 80, BOTH, OPEN)
        .matrix(UDP, 53, BOTH, OPEN)
        .matrix(SCTP, 3868, BOTH, OPEN)
        .done(),
        std(
            "default-deny-ingress",
            "k8s docs default-deny-ingress: podSelector {}, policyTypes [Ingress]",
        )
        .policy(np("x/default-deny-ingress").types(&["Ingress"]))
        .matrix(TCP, 80, BOTH, DENY_INTO_X)
        .matrix(UDP, 53, BOTH, DENY_INTO_X)
        .done(),
        std(
            "deny-ingress-by-default-type",
            "no policyTypes and no rules: Ingress is implied, egress stays open",
        )
        .policy(np("x/deny").select(sel(&[])))
        .matrix(TCP, 80, BOTH, DENY_INTO_X)
        .done(),
        std(
            "deny-ingress-empty-rule-list",
            "`ingress: []` is the same as no ingress rules: deny all",
        )
        .policy({
            let mut p = np("x/deny");
            p.spec().ingress = Some(vec![]);
            p
        })
        .matrix(TCP, 80, BOTH, DENY_INTO_X)
        .done(),
        std(
            "allow-all-ingress",
            "k8s docs allow-all-ingress: one empty rule admits everything, on top of a deny",
        )
        .policy(np("x/deny"))
        .policy(
            np("x/allow-all-ingress")
                .types(&["Ingress"])
                .ingress(vec![], vec![]),
        )
        .matrix(TCP, 80, BOTH, OPEN)
        .matrix(SCTP, 3868, BOTH, OPEN)
        .done(),
        std(
            "default-deny-egress",
            "k8s docs default-deny-egress: Egress listed with no rules denies all egress",
        )
        .policy(np("x/default-deny-egress").types(&["Egress"]))
        .matrix(TCP, 80, BOTH, DENY_FROM_X)
        .matrix(UDP, 53, BOTH, DENY_FROM_X)
        .done(),
        std(
            "allow-all-egress",
            "k8s docs allow-all-egress: one empty egress rule",
        )
        .policy(np("x/deny-egress").types(&["Egress"]))
        .policy(
            np("x/allow-all-egress")
                .types(&["Egress"])
                .egress(vec![], vec![]),
        )
        .matrix(TCP, 80, BOTH, OPEN)
        .done(),
        std(
            "default-deny-all",
            "k8s docs default-deny-all: both types, no rules",
        )
        .policy(np("x/default-deny-all").types(&["Ingress", "Egress"]))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  0  0  0  0 0 0
                xb  0  -  0  0  0  0 0 0
                ya  0  0  -  1  1  1 1 1
                yb  0  0  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std("policy-is-namespaced", "a deny in y isolates y's pods only")
            .policy(np("y/deny"))
            .matrix(
                TCP,
                80,
                BOTH,
                "
                    xa xb ya yb zc E F G
                xa  -  1  0  0  1  1 1 1
                xb  1  -  0  0  1  1 1 1
                ya  1  1  -  0  1  1 1 1
                yb  1  1  0  -  1  1 1 1
                zc  1  1  0  0  -  1 1 1
                E   1  1  0  0  1  - - -
                F   1  1  0  0  1  - - -
                G   1  1  0  0  1  - - -",
            )
            .done(),
        std(
            "self-traffic-always-allowed",
            "a pod reaches itself through any policy (it never leaves the pod)",
        )
        .policy(np("x/deny-all").types(&["Ingress", "Egress"]))
        .expect(
            BOTH,
            &[
                ("xa", "xa", TCP, 80, Y),
                ("xb", "xb", UDP, 53, Y),
                ("xa", "xb", TCP, 80, N),
                ("xb", "xa", UDP, 53, N),
            ],
        )
        .done(),
    ]
}

fn targets() -> Vec<Case> {
    vec![
        std(
            "podSelector-selects-subset",
            "only app=a in x is isolated; ya has the same labels in another namespace",
        )
        .policy(np("x/p").select(sel(&[("app", "a")])))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  0  1  -  1  1  1 1 1
                yb  0  1  1  -  1  1 1 1
                zc  0  1  1  1  -  1 1 1
                E   0  1  1  1  1  - - -
                F   0  1  1  1  1  - - -
                G   0  1  1  1  1  - - -",
        )
        .done(),
        std(
            "podSelector-selects-nothing",
            "a policy that selects no pod isolates nothing",
        )
        .policy(np("x/p").select(exprs(&[("app", "In", &["nope"])])))
        .matrix(TCP, 80, BOTH, OPEN)
        .done(),
        std(
            "podSelector-NotIn-target",
            "the policy's own podSelector with NotIn: tier NotIn [web] selects xb only",
        )
        .policy(np("x/p").select(exprs(&[("tier", "NotIn", &["web"])])))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  1  0  -  1  1  1 1 1
                yb  1  0  1  -  1  1 1 1
                zc  1  0  1  1  -  1 1 1
                E   1  0  1  1  1  - - -
                F   1  0  1  1  1  - - -
                G   1  0  1  1  1  - - -",
        )
        .done(),
    ]
}

fn peers() -> Vec<Case> {
    vec![
        std(
            "from-podSelector-own-namespace",
            "podSelector alone matches pods of the policy's namespace only",
        )
        .policy(np("x/p").ingress(vec![pods(sel(&[("app", "a")]))], vec![]))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  0  0  -  1  1  1 1 1
                yb  0  0  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std(
            "from-empty-podSelector",
            "podSelector {} matches every pod of the policy's namespace",
        )
        .policy(np("x/p").ingress(vec![pods(every())], vec![]))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  0  0  -  1  1  1 1 1
                yb  0  0  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std(
            "from-empty-namespaceSelector",
            "namespaceSelector {} matches every pod, but no external host",
        )
        .policy(np("x/p").ingress(vec![nss(every())], vec![]))
        .matrix(TCP, 80, BOTH, INTO_X_FROM_PODS)
        .done(),
        std(
            "from-namespaceSelector",
            "namespaceSelector env=dev admits y's pods into xa",
        )
        .policy(
            np("x/p")
                .select(sel(&[("app", "a")]))
                .ingress(vec![nss(sel(&[("env", "dev")]))], vec![]),
        )
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  0  1  1  1  -  1 1 1
                E   0  1  1  1  1  - - -
                F   0  1  1  1  1  - - -
                G   0  1  1  1  1  - - -",
        )
        .done(),
        std(
            "namespaceSelector-AND-podSelector",
            "both selectors in one peer: app=b pods in env=dev namespaces (yb)",
        )
        .policy(np("x/p").ingress(
            vec![both(sel(&[("env", "dev")]), sel(&[("app", "b")]))],
            vec![],
        ))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  0  0  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std(
            "namespaceSelector-OR-podSelector",
            "two peers: env=dev namespaces, or app=b in x (ya, yb, xb)",
        )
        .policy(np("x/p").ingress(
            vec![nss(sel(&[("env", "dev")])), pods(sel(&[("app", "b")]))],
            vec![],
        ))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std(
            "empty-namespaceSelector-AND-podSelector",
            "namespaceSelector {} with podSelector app=a: app=a anywhere",
        )
        .policy(np("x/p").ingress(vec![both(every(), sel(&[("app", "a")]))], vec![]))
        .matrix(TCP, 80, BOTH, INTO_X_FROM_APP_A)
        .done(),
        std(
            "namespaceSelector-AND-empty-podSelector",
            "namespaceSelector ns=y with podSelector {}: all of y",
        )
        .policy(np("x/p").ingress(vec![both(sel(&[("ns", "y")]), every())], vec![]))
        .matrix(TCP, 80, BOTH, INTO_X_FROM_Y)
        .done(),
        std(
            "namespace-name-label",
            "kubernetes.io/metadata.name is set on every namespace",
        )
        .policy(np("x/p").ingress(
            vec![nss(sel(&[("kubernetes.io/metadata.name", "z")]))],
            vec![],
        ))
        .matrix(TCP, 80, BOTH, INTO_X_FROM_ZC)
        .done(),
        std(
            "matchExpressions-In",
            "podSelector app In [a, c] across all namespaces: xa, ya, zc",
        )
        .policy(np("x/p").ingress(
            vec![both(every(), exprs(&[("app", "In", &["a", "c"])]))],
            vec![],
        ))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  0  0  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std(
            "matchExpressions-NotIn",
            "tier NotIn [web] also matches pods without tier: xb (db), yb (none)",
        )
        .policy(np("x/p").ingress(
            vec![both(every(), exprs(&[("tier", "NotIn", &["web"])]))],
            vec![],
        ))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  0  0  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std("matchExpressions-Exists", "tier Exists: every pod but yb")
            .policy(np("x/p").ingress(
                vec![both(every(), exprs(&[("tier", "Exists", &[])]))],
                vec![],
            ))
            .matrix(
                TCP,
                80,
                BOTH,
                "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  0  0  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
            )
            .done(),
        std(
            "matchExpressions-DoesNotExist",
            "tier DoesNotExist: yb only",
        )
        .policy(np("x/p").ingress(
            vec![both(every(), exprs(&[("tier", "DoesNotExist", &[])]))],
            vec![],
        ))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  0  0  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std(
            "namespaceSelector-In",
            "namespaceSelector env In [prod, dev]: x and y, not z",
        )
        .policy(np("x/p").ingress(vec![nss(exprs(&[("env", "In", &["prod", "dev"])]))], vec![]))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std(
            "namespaceSelector-DoesNotExist",
            "namespaceSelector env DoesNotExist: z only",
        )
        .policy(np("x/p").ingress(vec![nss(exprs(&[("env", "DoesNotExist", &[])]))], vec![]))
        .matrix(TCP, 80, BOTH, INTO_X_FROM_ZC)
        .done(),
        std(
            "namespaceSelector-NotIn",
            "namespaceSelector env NotIn [prod]: y, and z which has no env",
        )
        .policy(np("x/p").ingress(vec![nss(exprs(&[("env", "NotIn", &["prod"])]))], vec![]))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std(
            "matchLabels-AND-matchExpressions",
            "one selector with both forms: app=a and tier In [web]",
        )
        .policy(np("x/p").ingress(
            vec![both(
                every(),
                meta::LabelSelector {
                    match_labels: labels(&[("app", "a")]),
                    match_expressions: exprs(&[("tier", "In", &["web"])]).match_expressions,
                },
            )],
            vec![],
        ))
        .matrix(TCP, 80, BOTH, INTO_X_FROM_APP_A)
        .done(),
    ]
}

fn unions() -> Vec<Case> {
    vec![
        std(
            "rules-are-ORed",
            "rule 1 admits app=b of x on TCP 80, rule 2 admits z on TCP 443",
        )
        .policy(
            np("x/p")
                .select(sel(&[("app", "a")]))
                .ingress(vec![pods(sel(&[("app", "b")]))], vec![tcp(80)])
                .ingress(vec![nss(sel(&[("ns", "z")]))], vec![tcp(443)]),
        )
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  0  1  -  1  1  1 1 1
                yb  0  1  1  -  1  1 1 1
                zc  0  1  1  1  -  1 1 1
                E   0  1  1  1  1  - - -
                F   0  1  1  1  1  - - -
                G   0  1  1  1  1  - - -",
        )
        .matrix(
            TCP,
            443,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  0  1  -  1  1  1 1 1
                yb  0  1  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   0  1  1  1  1  - - -
                F   0  1  1  1  1  - - -
                G   0  1  1  1  1  - - -",
        )
        .expect(BOTH, &[("xb", "xa", UDP, 80, N), ("zc", "xa", UDP, 443, N)])
        .done(),
        std(
            "policies-are-additive",
            "two policies select xa; it admits the union of their peers",
        )
        .policy(
            np("x/p1")
                .select(sel(&[("app", "a")]))
                .ingress(vec![pods(sel(&[("app", "b")]))], vec![]),
        )
        .policy(
            np("x/p2")
                .select(sel(&[("tier", "web")]))
                .ingress(vec![nss(sel(&[("ns", "z")]))], vec![]),
        )
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  1  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  0  1  -  1  1  1 1 1
                yb  0  1  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   0  1  1  1  1  - - -
                F   0  1  1  1  1  - - -
                G   0  1  1  1  1  - - -",
        )
        .done(),
        std(
            "deny-all-plus-allow",
            "a deny-all never cancels another policy's allow",
        )
        .policy(np("x/deny"))
        .policy(
            np("x/allow")
                .select(sel(&[("app", "a")]))
                .ingress(vec![nss(sel(&[("ns", "y")]))], vec![]),
        )
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  1  0  -  1  1  1 1 1
                yb  1  0  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .done(),
        std(
            "peers-share-the-rule-ports",
            "a pod peer and a v4 ipBlock peer in one rule, both on TCP 80 only",
        )
        .policy(np("x/p").ingress(
            vec![pods(sel(&[("app", "b")])), block("192.0.2.10/32", &[])],
            vec![tcp(80)],
        ))
        .matrix(
            TCP,
            80,
            V4,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  0  0  -  1  1  1 1 1
                yb  0  0  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   1  1  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .matrix(
            TCP,
            80,
            V6,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  1  -  1  1  1  1 1 1
                ya  0  0  -  1  1  1 1 1
                yb  0  0  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .matrix(UDP, 80, BOTH, DENY_INTO_X)
        .done(),
    ]
}

fn ports() -> Vec<Case> {
    vec![
        std(
            "port-only-rule",
            "a rule with ports and no from admits any source on those ports",
        )
        .policy(np("x/p").ingress(vec![], vec![tcp(80)]))
        .matrix(TCP, 80, BOTH, OPEN)
        .matrix(TCP, 81, BOTH, DENY_INTO_X)
        .matrix(UDP, 80, BOTH, DENY_INTO_X)
        .done(),
        std(
            "empty-from-list",
            "`from: []` is any source, like an absent from",
        )
        .policy({
            let mut p = np("x/p");
            p.spec().ingress = Some(vec![net::NetworkPolicyIngressRule {
                from: Some(vec![]),
                ports: Some(vec![udp(53)]),
            }]);
            p
        })
        .matrix(UDP, 53, BOTH, OPEN)
        .matrix(TCP, 53, BOTH, DENY_INTO_X)
        .done(),
        std(
            "protocol-without-port",
            "`protocol: UDP` with no port admits every UDP port, nothing else",
        )
        .policy(np("x/p").ingress(vec![pods(every())], vec![port(Some("UDP"), None, None)]))
        .expect(
            BOTH,
            &[
                ("xa", "xb", UDP, 53, Y),
                ("xa", "xb", UDP, 65535, Y),
                ("xa", "xb", UDP, 1, Y),
                ("xa", "xb", TCP, 53, N),
                ("xa", "xb", SCTP, 53, N),
                ("ya", "xb", UDP, 53, N),
                ("E", "xa", UDP, 53, N),
            ],
        )
        .done(),
        std(
            "port-without-protocol-is-tcp",
            "`port: 80` with no protocol means TCP 80",
        )
        .policy(np("x/p").ingress(vec![], vec![port(None, Some(IntOrString::Int(80)), None)]))
        .expect(
            BOTH,
            &[
                ("ya", "xa", TCP, 80, Y),
                ("ya", "xa", UDP, 80, N),
                ("ya", "xa", SCTP, 80, N),
                ("ya", "xa", TCP, 8080, N),
                ("E", "xb", TCP, 80, Y),
            ],
        )
        .done(),
        std(
            "empty-port-entry-is-all-tcp",
            "`ports: [{}]` means every TCP port",
        )
        .policy(np("x/p").ingress(vec![], vec![port(None, None, None)]))
        .expect(
            BOTH,
            &[
                ("ya", "xa", TCP, 1, Y),
                ("ya", "xa", TCP, 65535, Y),
                ("F", "xb", TCP, 22, Y),
                ("ya", "xa", UDP, 53, N),
                ("ya", "xa", SCTP, 3868, N),
            ],
        )
        .done(),
        std("endPort-range", "TCP 8000-8080 on xa: both ends included")
            .policy(
                np("x/p")
                    .select(sel(&[("app", "a")]))
                    .ingress(vec![], vec![range("TCP", 8000, 8080)]),
            )
            .expect(
                BOTH,
                &[
                    ("ya", "xa", TCP, 7999, N),
                    ("ya", "xa", TCP, 8000, Y),
                    ("ya", "xa", TCP, 8040, Y),
                    ("ya", "xa", TCP, 8080, Y),
                    ("ya", "xa", TCP, 8081, N),
                    ("ya", "xa", UDP, 8040, N),
                    ("E", "xa", TCP, 8080, Y),
                    ("ya", "xb", TCP, 7999, Y),
                ],
            )
            .done(),
        std("endPort-equal-to-port", "endPort == port is a single port")
            .policy(np("x/p").ingress(vec![], vec![range("TCP", 5000, 5000)]))
            .expect(
                BOTH,
                &[
                    ("zc", "xa", TCP, 4999, N),
                    ("zc", "xa", TCP, 5000, Y),
                    ("zc", "xa", TCP, 5001, N),
                ],
            )
            .done(),
        std(
            "several-ports-one-rule",
            "ports [TCP 80, UDP 53, SCTP 3868]: each port with its own protocol",
        )
        .policy(np("x/p").ingress(vec![], vec![tcp(80), udp(53), sctp(3868)]))
        .expect(
            BOTH,
            &[
                ("ya", "xa", TCP, 80, Y),
                ("ya", "xa", UDP, 53, Y),
                ("ya", "xa", SCTP, 3868, Y),
                ("ya", "xa", TCP, 53, N),
                ("ya", "xa", UDP, 80, N),
                ("ya", "xa", SCTP, 80, N),
                ("ya", "xa", TCP, 3868, N),
            ],
        )
        .done(),
        std(
            "sctp-rule",
            "SCTP 3868 from every pod; TCP and UDP on the same port stay closed",
        )
        .policy(np("x/p").ingress(vec![nss(every())], vec![sctp(3868)]))
        .matrix(SCTP, 3868, BOTH, INTO_X_FROM_PODS)
        .matrix(TCP, 3868, BOTH, DENY_INTO_X)
        .matrix(UDP, 3868, BOTH, DENY_INTO_X)
        .done(),
        std("udp-range", "UDP 30000-32767")
            .policy(np("x/p").ingress(vec![], vec![range("UDP", 30000, 32767)]))
            .expect(
                BOTH,
                &[
                    ("G", "xa", UDP, 29999, N),
                    ("G", "xa", UDP, 30000, Y),
                    ("G", "xa", UDP, 32767, Y),
                    ("G", "xa", UDP, 32768, N),
                    ("G", "xa", TCP, 31000, N),
                ],
            )
            .done(),
        std(
            "full-port-range",
            "TCP 1-65535 is every TCP port and nothing else",
        )
        .policy(np("x/p").ingress(vec![], vec![range("TCP", 1, 65535)]))
        .expect(
            BOTH,
            &[
                ("yb", "xb", TCP, 1, Y),
                ("yb", "xb", TCP, 65535, Y),
                ("yb", "xb", UDP, 1, N),
                ("yb", "xb", SCTP, 1, N),
            ],
        )
        .done(),
    ]
}

fn named_ports() -> Vec<Case> {
    vec![
        named_world(
            "named-port-ingress-per-pod",
            "port `http` is 8080 on web-1 and 80 on web-2",
        )
        .policy(
            np("x/p")
                .select(sel(&[("app", "web")]))
                .ingress(vec![nss(every())], vec![named("http")]),
        )
        .expect(
            BOTH,
            &[
                ("cl", "w1", TCP, 8080, Y),
                ("cl", "w1", TCP, 80, N),
                ("cl", "w1", TCP, 9090, N),
                ("cl", "w1", UDP, 8080, N),
                ("cl", "w2", TCP, 80, Y),
                ("cl", "w2", TCP, 8080, N),
                ("dn", "w1", TCP, 8080, Y),
                ("E", "w1", TCP, 8080, N),
                ("cl", "dn", TCP, 53, Y),
                ("cl", "w3", UDP, 8080, Y),
                ("cl", "w3", TCP, 8080, Y),
            ],
        )
        .done(),
        named_world(
            "named-port-protocol-mismatch",
            "TCP `http` does not match web-3's UDP port named http",
        )
        .policy(
            np("y/p")
                .select(sel(&[("app", "web")]))
                .ingress(vec![], vec![named_proto("http", "TCP")]),
        )
        .expect(
            BOTH,
            &[
                ("cl", "w3", TCP, 8080, N),
                ("cl", "w3", UDP, 8080, N),
                ("E", "w3", TCP, 8080, N),
            ],
        )
        .done(),
        named_world("named-port-udp", "UDP `http` matches web-3's UDP 8080")
            .policy(
                np("y/p")
                    .select(sel(&[("app", "web")]))
                    .ingress(vec![], vec![named_proto("http", "UDP")]),
            )
            .expect(
                BOTH,
                &[
                    ("cl", "w3", UDP, 8080, Y),
                    ("cl", "w3", TCP, 8080, N),
                    ("E", "w3", UDP, 8080, Y),
                ],
            )
            .done(),
        named_world(
            "named-port-egress",
            "an egress named port resolves on each destination; hosts have none",
        )
        .policy(
            np("y/p")
                .select(sel(&[("app", "client")]))
                .types(&["Egress"])
                .egress(vec![], vec![named("http")]),
        )
        .expect(
            BOTH,
            &[
                ("cl", "w1", TCP, 8080, Y),
                ("cl", "w1", TCP, 80, N),
                ("cl", "w2", TCP, 80, Y),
                ("cl", "w2", TCP, 8080, N),
                ("cl", "E", TCP, 80, N),
                ("cl", "E", TCP, 8080, N),
                ("cl", "E", TCP, 8081, N),
                ("cl", "w1", TCP, 8081, N),
                ("cl", "w3", UDP, 8080, N),
                ("cl", "w3", TCP, 8080, N),
                ("cl", "dn", UDP, 53, N),
                ("w1", "cl", TCP, 8081, Y),
            ],
        )
        .done(),
        named_world(
            "named-port-egress-dns",
            "egress to named ports dns (UDP) and dns-tcp (TCP)",
        )
        .policy(
            np("y/p")
                .select(sel(&[("app", "client")]))
                .types(&["Egress"])
                .egress(
                    vec![nss(every())],
                    vec![named_proto("dns", "UDP"), named("dns-tcp")],
                ),
        )
        .expect(
            BOTH,
            &[
                ("cl", "dn", UDP, 53, Y),
                ("cl", "dn", TCP, 53, Y),
                ("cl", "dn", UDP, 5353, N),
                ("cl", "w1", UDP, 53, N),
                ("cl", "E", UDP, 53, N),
            ],
        )
        .done(),
        named_world(
            "named-port-missing-on-pod",
            "a pod without the named port admits nothing through it",
        )
        .policy(
            np("x/p")
                .select(sel(&[("app", "web")]))
                .ingress(vec![], vec![named("metrics")]),
        )
        .expect(
            BOTH,
            &[
                ("cl", "w1", TCP, 9090, Y),
                ("E", "w1", TCP, 9090, Y),
                ("cl", "w1", TCP, 8080, N),
                ("cl", "w2", TCP, 9090, N),
                ("cl", "w2", TCP, 80, N),
            ],
        )
        .done(),
        named_world(
            "named-and-numeric-ports",
            "ports [http, 9090]: the number applies to every pod",
        )
        .policy(np("x/p").select(sel(&[("app", "web")])).ingress(
            vec![],
            vec![
                named("http"),
                port(None, Some(IntOrString::Int(9090)), None),
            ],
        ))
        .expect(
            BOTH,
            &[
                ("cl", "w2", TCP, 9090, Y),
                ("cl", "w2", TCP, 80, Y),
                ("cl", "w1", TCP, 8080, Y),
                ("cl", "w1", TCP, 9090, Y),
                ("cl", "w1", TCP, 80, N),
            ],
        )
        .done(),
        named_world(
            "named-port-in-two-containers",
            "two containers both declare `metrics`: either number matches",
        )
        .policy(
            np("y/p")
                .select(sel(&[("app", "sidecar")]))
                .ingress(vec![], vec![named("metrics")]),
        )
        .expect(
            BOTH,
            &[
                ("cl", "sc", TCP, 9090, Y),
                ("cl", "sc", TCP, 9091, Y),
                ("cl", "sc", TCP, 9092, N),
            ],
        )
        .done(),
    ]
}

fn ip_blocks() -> Vec<Case> {
    let into_x_from_e_g = "
            xa xb ya yb zc E F G
        xa  -  0  1  1  1  1 1 1
        xb  0  -  1  1  1  1 1 1
        ya  0  0  -  1  1  1 1 1
        yb  0  0  1  -  1  1 1 1
        zc  0  0  1  1  -  1 1 1
        E   1  1  1  1  1  - - -
        F   0  0  1  1  1  - - -
        G   1  1  1  1  1  - - -";
    let into_x_from_g = "
            xa xb ya yb zc E F G
        xa  -  0  1  1  1  1 1 1
        xb  0  -  1  1  1  1 1 1
        ya  0  0  -  1  1  1 1 1
        yb  0  0  1  -  1  1 1 1
        zc  0  0  1  1  -  1 1 1
        E   0  0  1  1  1  - - -
        F   0  0  1  1  1  - - -
        G   1  1  1  1  1  - - -";
    vec![
        std(
            "ipBlock-v4-hosts",
            "192.0.2.0/24 admits E and G over IPv4; a v4 block matches no IPv6 address",
        )
        .policy(np("x/p").ingress(vec![block("192.0.2.0/24", &[])], vec![]))
        .matrix(TCP, 80, V4, into_x_from_e_g)
        .matrix(TCP, 80, V6, DENY_INTO_X)
        .done(),
        std(
            "ipBlock-v6-hosts",
            "2001:db8::/32 admits every host over IPv6, none over IPv4",
        )
        .policy(np("x/p").ingress(vec![block("2001:db8::/32", &[])], vec![]))
        .matrix(
            TCP,
            80,
            V6,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  0  0  -  1  1  1 1 1
                yb  0  0  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   1  1  1  1  1  - - -
                F   1  1  1  1  1  - - -
                G   1  1  1  1  1  - - -",
        )
        .matrix(TCP, 80, V4, DENY_INTO_X)
        .done(),
        std(
            "ipBlock-except",
            "192.0.2.0/24 except 192.0.2.0/28: G yes, E (.10) no",
        )
        .policy(np("x/p").ingress(vec![block("192.0.2.0/24", &["192.0.2.0/28"])], vec![]))
        .matrix(TCP, 80, V4, into_x_from_g)
        .matrix(TCP, 80, V6, DENY_INTO_X)
        .done(),
        std(
            "ipBlock-overlapping-peers",
            "one peer's except does not cancel another peer's allow: E is in 192.0.2.8/29",
        )
        .policy(np("x/p").ingress(
            vec![
                block("192.0.2.0/24", &["192.0.2.0/28"]),
                block("192.0.2.8/29", &[]),
            ],
            vec![],
        ))
        .matrix(TCP, 80, V4, into_x_from_e_g)
        .done(),
        std(
            "ipBlock-overlapping-policies",
            "one policy's except does not cancel another policy's allow",
        )
        .policy(np("x/p1").ingress(vec![block("192.0.2.0/24", &["192.0.2.10/32"])], vec![]))
        .policy(np("x/p2").ingress(vec![block("192.0.2.10/32", &[])], vec![]))
        .matrix(TCP, 80, V4, into_x_from_e_g)
        .done(),
        std(
            "ipBlock-overlapping-rules",
            "rule 1: /24 except lower /25 on TCP 80; rule 2: /28 on TCP 443",
        )
        .policy(
            np("x/p")
                .ingress(
                    vec![block("192.0.2.0/24", &["192.0.2.0/25"])],
                    vec![tcp(80)],
                )
                .ingress(vec![block("192.0.2.0/28", &[])], vec![tcp(443)]),
        )
        .expect(
            V4,
            &[
                ("E", "xa", TCP, 80, N),
                ("E", "xa", TCP, 443, Y),
                ("G", "xa", TCP, 80, Y),
                ("G", "xa", TCP, 443, N),
                ("F", "xa", TCP, 80, N),
            ],
        )
        .done(),
        std(
            "ipBlock-v6-except-and-overlap",
            "[2001:db8::/32 except 2001:db8::/64] or [2001:db8::10/128]",
        )
        .policy(np("x/p").ingress(
            vec![
                block("2001:db8::/32", &["2001:db8::/64"]),
                block("2001:db8::10/128", &[]),
            ],
            vec![],
        ))
        .matrix(
            TCP,
            80,
            V6,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  0  0  -  1  1  1 1 1
                yb  0  0  1  -  1  1 1 1
                zc  0  0  1  1  -  1 1 1
                E   1  1  1  1  1  - - -
                F   1  1  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .matrix(TCP, 80, V4, DENY_INTO_X)
        .done(),
        std(
            "ipBlock-matches-pod-ips",
            "an ipBlock covering y's pod range admits y's pods (IPv4 only here)",
        )
        .policy(np("x/p").ingress(vec![block("10.244.2.0/24", &[])], vec![]))
        .matrix(TCP, 80, V4, INTO_X_FROM_Y)
        .matrix(TCP, 80, V6, DENY_INTO_X)
        .done(),
        std(
            "ipBlock-pod-ips-both-families",
            "one v4 and one v6 block for z's pods",
        )
        .policy(np("x/p").ingress(
            vec![
                block("10.244.3.0/24", &[]),
                block("fd00:10:244:3::/64", &[]),
            ],
            vec![],
        ))
        .matrix(TCP, 80, BOTH, INTO_X_FROM_ZC)
        .done(),
        std(
            "ipBlock-v6-pod-range-only",
            "only the v6 block of z's pods: zc gets in over IPv6, not IPv4",
        )
        .policy(np("x/p").ingress(vec![block("fd00:10:244:3::/64", &[])], vec![]))
        .matrix(TCP, 80, V6, INTO_X_FROM_ZC)
        .matrix(TCP, 80, V4, DENY_INTO_X)
        .done(),
        std(
            "ipBlock-pod-range-except",
            "10.244.0.0/16 except 10.244.1.0/24: every pod but x's own",
        )
        .policy(np("x/p").ingress(vec![block("10.244.0.0/16", &["10.244.1.0/24"])], vec![]))
        .matrix(
            TCP,
            80,
            V4,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  1  1 1 1
                xb  0  -  1  1  1  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   0  0  1  1  1  - - -
                F   0  0  1  1  1  - - -
                G   0  0  1  1  1  - - -",
        )
        .matrix(TCP, 80, V6, DENY_INTO_X)
        .done(),
        std(
            "ipBlock-everything",
            "0.0.0.0/0 and ::/0 admit every pod and host",
        )
        .policy(np("x/p").ingress(vec![block("0.0.0.0/0", &[]), block("::/0", &[])], vec![]))
        .matrix(TCP, 80, BOTH, OPEN)
        .done(),
        std(
            "ipBlock-host-bits-set",
            "192.0.2.77/24 is read as 192.0.2.0/24, as the API server does",
        )
        .policy(np("x/p").ingress(vec![block("192.0.2.77/24", &[])], vec![]))
        .matrix(TCP, 80, V4, into_x_from_e_g)
        .done(),
    ]
}

fn egress() -> Vec<Case> {
    vec![
        std("egress-to-podSelector", "xa may only send to x's pods")
            .policy(
                np("x/p")
                    .select(sel(&[("app", "a")]))
                    .types(&["Egress"])
                    .egress(vec![pods(every())], vec![]),
            )
            .matrix(
                TCP,
                80,
                BOTH,
                "
                    xa xb ya yb zc E F G
                xa  -  1  0  0  0  0 0 0
                xb  1  -  1  1  1  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   1  1  1  1  1  - - -
                F   1  1  1  1  1  - - -
                G   1  1  1  1  1  - - -",
            )
            .done(),
        std(
            "egress-rules-imply-egress-type",
            "no policyTypes + egress rules = [Ingress, Egress]: xa takes nothing in",
        )
        .policy(
            np("x/p")
                .select(sel(&[("app", "a")]))
                .egress(vec![nss(sel(&[("ns", "y")]))], vec![]),
        )
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  1  1  0  0 0 0
                xb  0  -  1  1  1  1 1 1
                ya  0  1  -  1  1  1 1 1
                yb  0  1  1  -  1  1 1 1
                zc  0  1  1  1  -  1 1 1
                E   0  1  1  1  1  - - -
                F   0  1  1  1  1  - - -
                G   0  1  1  1  1  - - -",
        )
        .done(),
        std(
            "egress-type-ignores-ingress-rules",
            "policyTypes [Egress] with ingress rules: ingress is not isolated",
        )
        .policy(
            np("x/p")
                .select(sel(&[("app", "a")]))
                .types(&["Egress"])
                .ingress(vec![pods(sel(&[("app", "nobody")]))], vec![]),
        )
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  0  0  0  0 0 0
                xb  1  -  1  1  1  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   1  1  1  1  1  - - -
                F   1  1  1  1  1  - - -
                G   1  1  1  1  1  - - -",
        )
        .done(),
        std(
            "ingress-and-egress-independent",
            "xa takes in only from z and sends only to z, via two policies",
        )
        .policy(
            np("x/in")
                .select(sel(&[("app", "a")]))
                .types(&["Ingress"])
                .ingress(vec![nss(sel(&[("ns", "z")]))], vec![]),
        )
        .policy(
            np("x/out")
                .select(sel(&[("app", "a")]))
                .types(&["Egress"])
                .egress(vec![nss(sel(&[("ns", "z")]))], vec![]),
        )
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  0  0  1  0 0 0
                xb  0  -  1  1  1  1 1 1
                ya  0  1  -  1  1  1 1 1
                yb  0  1  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   0  1  1  1  1  - - -
                F   0  1  1  1  1  - - -
                G   0  1  1  1  1  - - -",
        )
        .done(),
        std(
            "egress-ipBlock",
            "x may only send to 198.51.100.0/24 (F over IPv4)",
        )
        .policy(
            np("x/p")
                .types(&["Egress"])
                .egress(vec![block("198.51.100.0/24", &[])], vec![]),
        )
        .matrix(
            TCP,
            80,
            V4,
            "
                    xa xb ya yb zc E F G
                xa  -  0  0  0  0  0 1 0
                xb  0  -  0  0  0  0 1 0
                ya  1  1  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   1  1  1  1  1  - - -
                F   1  1  1  1  1  - - -
                G   1  1  1  1  1  - - -",
        )
        .matrix(TCP, 80, V6, DENY_FROM_X)
        .done(),
        std("egress-port-only", "x may send anywhere, on TCP 443 only")
            .policy(np("x/p").types(&["Egress"]).egress(vec![], vec![tcp(443)]))
            .matrix(TCP, 443, BOTH, OPEN)
            .matrix(TCP, 80, BOTH, DENY_FROM_X)
            .matrix(UDP, 443, BOTH, DENY_FROM_X)
            .done(),
        std(
            "egress-internet-not-cluster",
            "to 0.0.0.0/0 except 10.0.0.0/8, and ::/0 except fd00::/8",
        )
        .policy(np("x/p").types(&["Egress"]).egress(
            vec![
                block("0.0.0.0/0", &["10.0.0.0/8"]),
                block("::/0", &["fd00::/8"]),
            ],
            vec![],
        ))
        .matrix(
            TCP,
            80,
            BOTH,
            "
                    xa xb ya yb zc E F G
                xa  -  0  0  0  0  1 1 1
                xb  0  -  0  0  0  1 1 1
                ya  1  1  -  1  1  1 1 1
                yb  1  1  1  -  1  1 1 1
                zc  1  1  1  1  -  1 1 1
                E   1  1  1  1  1  - - -
                F   1  1  1  1  1  - - -
                G   1  1  1  1  1  - - -",
        )
        .done(),
        std(
            "egress-dns-allowlist",
            "deny all egress, then allow TCP and UDP 53 to namespace z",
        )
        .policy(np("x/deny-egress").types(&["Egress"]))
        .policy(
            np("x/dns")
                .types(&["Egress"])
                .egress(vec![nss(sel(&[("ns", "z")]))], vec![udp(53), tcp(53)]),
        )
        .expect(
            BOTH,
            &[
                ("xa", "zc", UDP, 53, Y),
                ("xa", "zc", TCP, 53, Y),
                ("xa", "zc", UDP, 54, N),
                ("xa", "zc", SCTP, 53, N),
                ("xa", "ya", UDP, 53, N),
                ("xa", "E", UDP, 53, N),
                ("zc", "xa", UDP, 53, Y),
            ],
        )
        .done(),
        std("egress-sctp-range", "xb may send SCTP 3000-3100 anywhere")
            .policy(
                np("x/p")
                    .select(sel(&[("app", "b")]))
                    .types(&["Egress"])
                    .egress(vec![], vec![range("SCTP", 3000, 3100)]),
            )
            .expect(
                BOTH,
                &[
                    ("xb", "ya", SCTP, 3000, Y),
                    ("xb", "ya", SCTP, 3050, Y),
                    ("xb", "ya", SCTP, 3100, Y),
                    ("xb", "ya", SCTP, 3101, N),
                    ("xb", "ya", TCP, 3050, N),
                    ("xb", "ya", UDP, 3050, N),
                    ("xb", "E", SCTP, 3050, Y),
                    ("xa", "ya", TCP, 3050, Y),
                ],
            )
            .done(),
        std(
            "both-sides-must-allow",
            "xa may send to y, but yb only takes from z: xa -> yb is denied",
        )
        .policy(
            np("x/out")
                .select(sel(&[("app", "a")]))
                .types(&["Egress"])
                .egress(vec![nss(sel(&[("ns", "y")]))], vec![]),
        )
        .policy(
            np("y/in")
                .select(sel(&[("app", "b")]))
                .ingress(vec![nss(sel(&[("ns", "z")]))], vec![]),
        )
        .expect(
            BOTH,
            &[
                ("xa", "ya", TCP, 80, Y),
                ("xa", "yb", TCP, 80, N),
                ("zc", "yb", TCP, 80, Y),
                ("xa", "zc", TCP, 80, N),
                ("xb", "yb", TCP, 80, N),
                ("yb", "xa", TCP, 80, Y),
            ],
        )
        .done(),
        std(
            "both-sides-allow",
            "xa's egress names yb and yb's ingress names xa",
        )
        .policy(
            np("x/out")
                .select(sel(&[("app", "a")]))
                .types(&["Egress"])
                .egress(
                    vec![both(sel(&[("ns", "y")]), sel(&[("app", "b")]))],
                    vec![],
                ),
        )
        .policy(np("y/in").select(sel(&[("app", "b")])).ingress(
            vec![both(sel(&[("ns", "x")]), sel(&[("app", "a")]))],
            vec![],
        ))
        .expect(
            BOTH,
            &[
                ("xa", "yb", TCP, 80, Y),
                ("xa", "yb", UDP, 53, Y),
                ("xb", "yb", TCP, 80, N),
                ("xa", "ya", TCP, 80, N),
                ("ya", "yb", TCP, 80, N),
                ("zc", "yb", TCP, 80, N),
                ("yb", "xa", TCP, 80, Y),
                ("E", "yb", TCP, 80, N),
                ("yb", "E", TCP, 80, Y),
            ],
        )
        .done(),
    ]
}

fn documentation() -> Vec<Case> {
    vec![
        docs_world(
            "k8s-docs-test-network-policy",
            "the docs' test-network-policy, ranges moved to documentation space",
        )
        .policy(
            np("default/test-network-policy")
                .select(sel(&[("role", "db")]))
                .types(&["Ingress", "Egress"])
                .ingress(
                    vec![
                        block("198.51.100.0/24", &["198.51.100.0/25"]),
                        nss(sel(&[("project", "myproject")])),
                        pods(sel(&[("role", "frontend")])),
                    ],
                    vec![tcp(6379)],
                )
                .egress(vec![block("192.0.2.0/24", &[])], vec![tcp(5978)]),
        )
        .expect(
            V4,
            &[
                ("IN", "db", TCP, 6379, Y),
                ("EX", "db", TCP, 6379, N),
                ("OUT", "db", TCP, 6379, N),
                ("db", "OUT", TCP, 5978, Y),
                ("db", "OUT", TCP, 5979, N),
                ("db", "IN", TCP, 5978, N),
            ],
        )
        .expect(
            V6,
            &[("IN", "db", TCP, 6379, N), ("db", "OUT", TCP, 5978, N)],
        )
        .expect(
            BOTH,
            &[
                ("fe", "db", TCP, 6379, Y),
                ("fe", "db", TCP, 80, N),
                ("fe", "db", UDP, 6379, N),
                ("ot", "db", TCP, 6379, N),
                ("mp", "db", TCP, 6379, Y),
                ("of", "db", TCP, 6379, N),
                ("db", "fe", TCP, 80, N),
                ("db", "mp", TCP, 5978, N),
                ("fe", "ot", TCP, 80, Y),
            ],
        )
        .done(),
        docs_world(
            "k8s-docs-multi-port-egress",
            "the docs' multi-port-egress: TCP 32000-32768 to a block",
        )
        .policy(
            np("default/multi-port-egress")
                .select(sel(&[("role", "db")]))
                .types(&["Egress"])
                .egress(
                    vec![block("192.0.2.0/24", &[])],
                    vec![range("TCP", 32000, 32768)],
                ),
        )
        .expect(
            V4,
            &[
                ("db", "OUT", TCP, 32000, Y),
                ("db", "OUT", TCP, 32768, Y),
                ("db", "OUT", TCP, 32769, N),
                ("db", "OUT", TCP, 31999, N),
                ("db", "OUT", UDP, 32000, N),
                ("db", "IN", TCP, 32000, N),
            ],
        )
        .expect(
            BOTH,
            &[("db", "fe", TCP, 32000, N), ("fe", "db", TCP, 32000, Y)],
        )
        .done(),
    ]
}

fn seeds() -> Vec<Case> {
    vec![
        seed0_world("seed-000-1-no-policy", "seed 000: before any policy, nginx answers everyone")
            .matrix(TCP, 80, BOTH, SEED0_OPEN)
            .done(),
        seed0_world("seed-000-2-alpha-deny", "seed 000: alpha-deny isolates every pod of alpha for ingress")
            .policy(alpha_deny())
            .matrix(
                TCP,
                80,
                BOTH,
                "
                     n1 n2 ac bac dac IN EXC OUT
                n1   -  0  0  1   1   1  1   1
                n2   0  -  0  1   1   1  1   1
                ac   0  0  -  1   1   1  1   1
                bac  0  0  0  -   1   1  1   1
                dac  0  0  0  1   -   1  1   1
                IN   0  0  0  1   1   -  -   -
                EXC  0  0  0  1   1   -  -   -
                OUT  0  0  0  1   1   -  -   -",
            )
            .done(),
        seed0_world("seed-000-3-access-nginx", "seed 000: access-nginx admits run=access of alpha, on any port")
            .policy(alpha_deny())
            .policy(access_nginx())
            .matrix(
                TCP,
                80,
                BOTH,
                "
                     n1 n2 ac bac dac IN EXC OUT
                n1   -  0  0  1   1   1  1   1
                n2   0  -  0  1   1   1  1   1
                ac   1  1  -  1   1   1  1   1
                bac  0  0  0  -   1   1  1   1
                dac  0  0  0  1   -   1  1   1
                IN   0  0  0  1   1   -  -   -
                EXC  0  0  0  1   1   -  -   -
                OUT  0  0  0  1   1   -  -   -",
            )
            .expect(BOTH, &[("ac", "n1", UDP, 53, Y), ("ac", "n2", SCTP, 3868, Y), ("bac", "n1", UDP, 53, N)])
            .done(),
        seed0_world(
            "seed-000-4-access-nginx-complex",
            "seed 000: access-nginx-complex adds ipBlock/except, ns=a, ns=b AND run=access on TCP 80, \
             and isolates nginx egress to 10.0.0.0/8 TCP 80",
        )
        .policy(alpha_deny())
        .policy(access_nginx())
        .policy(access_nginx_complex())
        .matrix(
            TCP,
            80,
            V4,
            "
                 n1 n2 ac bac dac IN EXC OUT
            n1   -  1  0  1   1   1  1   0
            n2   1  -  0  1   1   1  1   0
            ac   1  1  -  1   1   1  1   1
            bac  1  1  0  -   1   1  1   1
            dac  0  0  0  1   -   1  1   1
            IN   1  1  0  1   1   -  -   -
            EXC  0  0  0  1   1   -  -   -
            OUT  0  0  0  1   1   -  -   -",
        )
        .matrix(
            TCP,
            80,
            V6,
            "
                 n1 n2 ac bac dac IN EXC OUT
            n1   -  0  0  0   0   0  0   0
            n2   0  -  0  0   0   0  0   0
            ac   1  1  -  1   1   1  1   1
            bac  1  1  0  -   1   1  1   1
            dac  0  0  0  1   -   1  1   1
            IN   0  0  0  1   1   -  -   -
            EXC  0  0  0  1   1   -  -   -
            OUT  0  0  0  1   1   -  -   -",
        )
        .matrix(
            UDP,
            53,
            BOTH,
            "
                 n1 n2 ac bac dac IN EXC OUT
            n1   -  0  0  0   0   0  0   0
            n2   0  -  0  0   0   0  0   0
            ac   1  1  -  1   1   1  1   1
            bac  0  0  0  -   1   1  1   1
            dac  0  0  0  1   -   1  1   1
            IN   0  0  0  1   1   -  -   -
            EXC  0  0  0  1   1   -  -   -
            OUT  0  0  0  1   1   -  -   -",
        )
        .expect(
            V4,
            &[
                ("n1", "IN", TCP, 443, N),
                ("bac", "n1", TCP, 443, N),
                ("ac", "n1", TCP, 443, Y),
                ("IN", "n2", TCP, 443, N),
            ],
        )
        .done(),
        case("seed-002-frontend-backend-db", "seed 002: only pods labelled networking/allow-db-access=true reach db")
            .ns("default", &[])
            .pod("fe", "default/frontend", &[("app", "frontend")], (1, 24))
            .pod("be", "default/backend", &[("app", "backend"), ("networking/allow-db-access", "true")], (1, 27))
            .pod("db", "default/db", &[("app", "db")], (1, 26))
            .ext("E", "192.0.2.10", "2001:db8::10")
            .policy(
                np("default/allow-db-access")
                    .select(sel(&[("app", "db")]))
                    .ingress(vec![pods(sel(&[("networking/allow-db-access", "true")]))], vec![]),
            )
            .matrix(
                TCP,
                80,
                BOTH,
                "
                     fe be db E
                fe   -  1  0  1
                be   1  -  1  1
                db   1  1  -  1
                E    1  1  0  -",
            )
            .done(),
        seed4_world("seed-004-ipBlock", "seed 004: busybox admits 172.17.0.0/16 except 172.17.1.0/24 only")
            .policy(busybox("ipblock").ingress(vec![block("172.17.0.0/16", &["172.17.1.0/24"])], vec![]))
            .matrix(
                TCP,
                80,
                V4,
                "
                     bb ac pl sh ot IN EX OUT
                bb   -  1  1  1  1  1  1  1
                ac   0  -  1  1  1  1  1  1
                pl   0  1  -  1  1  1  1  1
                sh   0  1  1  -  1  1  1  1
                ot   0  1  1  1  -  1  1  1
                IN   1  1  1  1  1  -  -  -
                EX   0  1  1  1  1  -  -  -
                OUT  0  1  1  1  1  -  -  -",
            )
            .matrix(
                TCP,
                80,
                V6,
                "
                     bb ac pl sh ot IN EX OUT
                bb   -  1  1  1  1  1  1  1
                ac   0  -  1  1  1  1  1  1
                pl   0  1  -  1  1  1  1  1
                sh   0  1  1  -  1  1  1  1
                ot   0  1  1  1  -  1  1  1
                IN   0  1  1  1  1  -  -  -
                EX   0  1  1  1  1  -  -  -
                OUT  0  1  1  1  1  -  -  -",
            )
            .done(),
        seed4_world("seed-004-namespaceSelector", "seed 004: busybox admits namespaces labelled zhulaoshi=shuai")
            .policy(busybox("ns").ingress(vec![nss(sel(&[("zhulaoshi", "shuai")]))], vec![]))
            .matrix(
                TCP,
                80,
                BOTH,
                "
                     bb ac pl sh ot IN EX OUT
                bb   -  1  1  1  1  1  1  1
                ac   0  -  1  1  1  1  1  1
                pl   0  1  -  1  1  1  1  1
                sh   1  1  1  -  1  1  1  1
                ot   0  1  1  1  -  1  1  1
                IN   0  1  1  1  1  -  -  -
                EX   0  1  1  1  1  -  -  -
                OUT  0  1  1  1  1  -  -  -",
            )
            .done(),
        seed4_world("seed-004-podSelector", "seed 004: busybox admits access=true of its own namespace only")
            .policy(busybox("pods").ingress(vec![pods(sel(&[("access", "true")]))], vec![]))
            .matrix(
                TCP,
                80,
                BOTH,
                "
                     bb ac pl sh ot IN EX OUT
                bb   -  1  1  1  1  1  1  1
                ac   1  -  1  1  1  1  1  1
                pl   0  1  -  1  1  1  1  1
                sh   0  1  1  -  1  1  1  1
                ot   0  1  1  1  -  1  1  1
                IN   0  1  1  1  1  -  -  -
                EX   0  1  1  1  1  -  -  -
                OUT  0  1  1  1  1  -  -  -",
            )
            .done(),
        seed4_world("seed-004-all-three", "seed 004: the three policies together are a union")
            .policy(busybox("ipblock").ingress(vec![block("172.17.0.0/16", &["172.17.1.0/24"])], vec![]))
            .policy(busybox("ns").ingress(vec![nss(sel(&[("zhulaoshi", "shuai")]))], vec![]))
            .policy(busybox("pods").ingress(vec![pods(sel(&[("access", "true")]))], vec![]))
            .matrix(
                TCP,
                80,
                V4,
                "
                     bb ac pl sh ot IN EX OUT
                bb   -  1  1  1  1  1  1  1
                ac   1  -  1  1  1  1  1  1
                pl   0  1  -  1  1  1  1  1
                sh   1  1  1  -  1  1  1  1
                ot   0  1  1  1  -  1  1  1
                IN   1  1  1  1  1  -  -  -
                EX   0  1  1  1  1  -  -  -
                OUT  0  1  1  1  1  -  -  -",
            )
            .matrix(
                TCP,
                80,
                V6,
                "
                     bb ac pl sh ot IN EX OUT
                bb   -  1  1  1  1  1  1  1
                ac   1  -  1  1  1  1  1  1
                pl   0  1  -  1  1  1  1  1
                sh   1  1  1  -  1  1  1  1
                ot   0  1  1  1  -  1  1  1
                IN   0  1  1  1  1  -  -  -
                EX   0  1  1  1  1  -  -  -
                OUT  0  1  1  1  1  -  -  -",
            )
            .done(),
    ]
}
