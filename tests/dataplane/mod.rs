//! The dataplane sandbox: real packets through a node namespace that netfence programs,
//! compared with the reference evaluator (`policy::allowed`).
//!
//! A [`World`] is a node namespace with forwarding on and one namespace per host, wired to
//! the node by a veth pair as a CNI wires a pod (`common::net`): the host's `eth0` holds
//! its IPv4 /32 and IPv6 /128, the node side is named after the host and routes to both.
//! Hosts are the cluster's pods and, for ipBlock peers, external hosts the cluster doesn't
//! know, wired the same way. Every host listens on every probed TCP and UDP port in both
//! families ([`responder`]).
//!
//! [`World::probe`] runs a whole matrix at once: every probe's socket is opened and its
//! first packet sent before any answer is awaited, and one `poll` loop collects the
//! answers, so a matrix costs one timeout however many cells it has. Each probe tells
//! three outcomes apart ([`Outcome`]):
//!
//! | protocol | allowed | refused | dropped |
//! |---|---|---|---|
//! | TCP | handshake completes | RST (`ECONNREFUSED`) | no answer before the timeout |
//! | UDP | the echo comes back | ICMP port unreachable (`ECONNREFUSED` on the connected socket) | no answer |
//! | SCTP | the INIT arrives in the destination | (none: no SCTP stack answers) | the INIT doesn't arrive |
//!
//! A pod probing itself is a cell too: its packets never leave the pod, so it is allowed
//! whatever the policies, as the evaluator says.
//!
//! Nothing is retried and nothing is warmed up: a world is ready when [`World::build`]
//! returns (`common::net` waits for the kernel's asynchronous link and address set-up,
//! and gives both ends of every veth permanent neighbour entries), and every probe leaves
//! from its own source port, never reused within a world, so that no conntrack entry of
//! an earlier probe can carry a later one. (Per protocol; TCP wraps after about 40,000
//! probes, which only the continuous prober reaches, harmlessly: its connections end with
//! a reset, and conntrack takes a SYN that meets a reset connection's entry as new.)
//!
//! Everything is torn down on drop, in order, also when a test panics: the listeners'
//! thread stops, then each host namespace goes (taking its veth pair), then the node's,
//! with whatever netfence wrote into it.

#![allow(dead_code)]

pub mod k8s;
pub mod probe;
pub mod responder;
pub mod sctp;
pub mod sys;

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use policy::k8s_openapi::api::core::v1 as core;
use policy::{Endpoint, Family, ObjectKey, Protocol};

use crate::common::net::{self, Wiring};
use crate::common::Sandbox;

#[allow(unused_imports)] // each test target uses a part
pub use probe::{Observed, Outcome, Record, Target};
use responder::Responder;

/// What a host is to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A pod, by key.
    Pod(ObjectKey),
    /// A host outside the cluster (an ipBlock peer).
    External,
}

/// A host to create.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// A short name (the pod's name, an alias) that the node-side interface is named after.
    pub name: String,
    /// Pod or external host.
    pub role: Role,
    /// IPv4 address.
    pub v4: Ipv4Addr,
    /// IPv6 address.
    pub v6: Ipv6Addr,
}

impl HostSpec {
    /// The host of a pod, from its key and `status.podIPs` (one address per family).
    ///
    /// # Panics
    /// When the pod is invalid or not dual-stack.
    pub fn pod(pod: &core::Pod) -> HostSpec {
        let p = policy::Pod::try_from(pod).expect("a valid pod");
        HostSpec {
            name: p.name.clone(),
            v4: p
                .ipv4
                .unwrap_or_else(|| panic!("{} has no IPv4 address", p.key())),
            v6: p
                .ipv6
                .unwrap_or_else(|| panic!("{} has no IPv6 address", p.key())),
            role: Role::Pod(p.key()),
        }
    }

    /// An external host.
    pub fn external(name: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> HostSpec {
        HostSpec {
            name: name.to_owned(),
            role: Role::External,
            v4,
            v6,
        }
    }
}

/// A host of a world: its namespace and wiring.
pub struct Host {
    /// "pod ns/name" or "host NAME", for messages.
    pub label: String,
    /// Pod or external host.
    pub role: Role,
    /// IPv4 address.
    pub v4: Ipv4Addr,
    /// IPv6 address.
    pub v6: Ipv6Addr,
    /// The namespace and the node-side interface.
    pub pod: net::Pod,
}

impl Host {
    /// The host's address in `family`.
    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::Ipv4 => IpAddr::V4(self.v4),
            Family::Ipv6 => IpAddr::V6(self.v6),
        }
    }

    /// The node side of its veth pair.
    pub fn host_if(&self) -> &str {
        &self.pod.host_if
    }
}

/// The lowest source port a probe uses; listener ports are skipped.
const SOURCE_PORT_BASE: u32 = 20_000;
/// How many source ports a probe may use.
const SOURCE_PORTS: u32 = 41_000;

/// A node namespace, its hosts and their listeners. See the module docs.
pub struct World {
    // Fields drop in this order: listeners first, then hosts, then the node.
    responder: Responder,
    /// The hosts, in the order of their specs.
    pub hosts: Vec<Host>,
    /// The node namespace: the one netfence programs.
    pub node: Sandbox,
    /// Ports something listens on, never used as a source port.
    listening: BTreeSet<u16>,
    /// Probes so far, per protocol (TCP, UDP, SCTP): the source port allocator.
    sent: [AtomicU32; 3],
}

/// The node-side interface name of host `index`: `p<index>-<name>` for a pod, `x<index>-`
/// for an external host, cut to the 15 bytes Linux allows and to characters it takes.
fn interface_name(index: usize, spec: &HostSpec) -> String {
    let kind = match spec.role {
        Role::Pod(_) => 'p',
        Role::External => 'x',
    };
    let clean: String = spec
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("{kind}{index}-{clean}");
    name.truncate(15);
    name
}

impl World {
    /// Creates the node namespace (named `nf-<tag>-...`) and one namespace per spec, wires
    /// them, and opens listeners on every TCP and UDP port of `ports` on every host.
    ///
    /// # Panics
    /// When something can't be created (tests need root); whatever was created is
    /// removed again.
    pub fn build(tag: &str, specs: &[HostSpec], ports: &BTreeSet<(Protocol, u16)>) -> World {
        let node = Sandbox::new(tag);
        net::make_node(&node);
        let wiring: Vec<Wiring> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| Wiring {
                host_if: interface_name(i, s),
                v4: s.v4,
                v6: s.v6,
            })
            .collect();
        let pods = net::add_pods(&node, &format!("{tag}-h"), &wiring);
        let hosts: Vec<Host> = specs
            .iter()
            .zip(pods)
            .map(|(s, pod)| Host {
                label: match &s.role {
                    Role::Pod(key) => format!("pod {key}"),
                    Role::External => format!("host {}", s.name),
                },
                role: s.role.clone(),
                v4: s.v4,
                v6: s.v6,
                pod,
            })
            .collect();
        let responder = Responder::start(&hosts, ports);
        World {
            responder,
            hosts,
            node,
            listening: ports.iter().map(|&(_, p)| p).collect(),
            sent: Default::default(),
        }
    }

    /// A source port for the next probe of `protocol`: never one a listener holds, and not
    /// used before by this world (see the module docs on wrapping).
    pub(crate) fn source_port(&self, protocol: Protocol) -> u16 {
        let counter = &self.sent[match protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
            Protocol::Sctp => 2,
        }];
        loop {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let port = (SOURCE_PORT_BASE + n % SOURCE_PORTS) as u16;
            if !self.listening.contains(&port) {
                return port;
            }
        }
    }

    /// The host of a pod or external address, if the world has it.
    pub fn host_of(&self, ep: &Endpoint) -> Option<usize> {
        self.hosts.iter().position(|h| match (ep, &h.role) {
            (Endpoint::Pod(k), Role::Pod(key)) => k == key,
            (Endpoint::External(ip), Role::External) => {
                *ip == IpAddr::V4(h.v4) || *ip == IpAddr::V6(h.v6)
            }
            _ => false,
        })
    }

    /// Host `index` as the evaluator names it in `family`.
    pub fn endpoint(&self, index: usize, family: Family) -> Endpoint {
        let h = &self.hosts[index];
        match &h.role {
            Role::Pod(key) => Endpoint::Pod(key.clone()),
            Role::External => Endpoint::External(h.ip(family)),
        }
    }

    /// What the reference evaluator says of `t` in `cluster`.
    pub fn allowed(&self, cluster: &policy::Cluster, t: &Target) -> bool {
        policy::allowed(
            cluster,
            &self.endpoint(t.src, t.family),
            &self.endpoint(t.dst, t.family),
            t.protocol,
            t.port,
            t.family,
        )
    }

    /// Every cell of the matrix over `ports` in both families: each ordered pair of hosts
    /// but external to external (no policy governs that, and it never meets a pod), a pod
    /// to itself included (its packets never leave the pod).
    pub fn matrix(&self, ports: &BTreeSet<(Protocol, u16)>) -> Vec<Target> {
        let mut v = Vec::new();
        for &(protocol, port) in ports {
            for family in Family::ALL {
                for (src, s) in self.hosts.iter().enumerate() {
                    for (dst, d) in self.hosts.iter().enumerate() {
                        if s.role == Role::External && d.role == Role::External {
                            continue;
                        }
                        v.push(Target {
                            src,
                            dst,
                            protocol,
                            port,
                            family,
                        });
                    }
                }
            }
        }
        v
    }

    /// A cell for messages: "pod x/a (10.244.1.10) -> host E (192.0.2.10) TCP/80 IPv4".
    pub fn describe(&self, t: &Target) -> String {
        let (s, d) = (&self.hosts[t.src], &self.hosts[t.dst]);
        format!(
            "{} ({}) -> {} ({}) {}/{} {}",
            s.label,
            s.ip(t.family),
            d.label,
            d.ip(t.family),
            t.protocol,
            t.port,
            t.family
        )
    }

    /// Probes `cells` and panics unless every one is allowed: what a world must show before
    /// netfence programs it. The panic lists the cells that weren't, what the same cells
    /// show when probed once more (for the diagnosis only: the check has failed), and the
    /// wiring of the hosts involved.
    pub fn assert_open(&self, cells: &[Target], timeout: Duration) {
        let open = self.probe(cells, timeout);
        let broken: Vec<(Target, String)> = cells
            .iter()
            .zip(&open)
            .filter(|(_, o)| o.outcome != Outcome::Allowed)
            .map(|(t, o)| {
                (
                    *t,
                    format!("  {}: {} before netfence", self.describe(t), o.outcome),
                )
            })
            .collect();
        if broken.is_empty() {
            return;
        }
        let hosts: BTreeSet<usize> = broken.iter().flat_map(|(t, _)| [t.src, t.dst]).collect();
        let again: Vec<Target> = broken.iter().map(|(t, _)| *t).collect();
        let again: Vec<String> = self
            .probe(&again, timeout)
            .into_iter()
            .map(|o| o.outcome.to_string())
            .collect();
        let lines: Vec<&str> = broken.iter().map(|(_, m)| m.as_str()).collect();
        panic!(
            "the sandbox of node {} is broken, {} cells not open:\n{}\nthe same cells probed \
             again, for the diagnosis only: {}\n{}",
            self.node.name,
            broken.len(),
            lines.join("\n"),
            again.join(", "),
            self.wiring_dump(&hosts)
        );
    }

    /// The wiring of some hosts, for a report on a broken sandbox: link states and
    /// counters, qdiscs, addresses, routes and neighbours on both sides of each veth.
    pub fn wiring_dump(&self, hosts: &BTreeSet<usize>) -> String {
        let mut out = String::new();
        let mut show = |ns: &Sandbox, what: &str, args: &[&str]| {
            let o = Command::new("ip")
                .args(["-n", &ns.name])
                .args(args)
                .output()
                .expect("running ip");
            out += &format!(
                "--- {what}: ip {} ---\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        };
        for &i in hosts {
            let h = &self.hosts[i];
            show(
                &self.node,
                "node",
                &["-s", "-d", "link", "show", "dev", h.host_if()],
            );
            show(&h.pod.ns, &h.label, &["-s", "-d", "link"]);
            show(&h.pod.ns, &h.label, &["addr"]);
            show(&h.pod.ns, &h.label, &["route", "show", "table", "all"]);
            show(&h.pod.ns, &h.label, &["neigh", "show", "nud", "all"]);
        }
        show(&self.node, "node", &["route", "show", "table", "all"]);
        show(&self.node, "node", &["neigh", "show", "nud", "all"]);
        out
    }

    /// The node's ruleset and sets, as the iptables tools show them: what a mismatch
    /// report ends with.
    pub fn node_dump(&self) -> String {
        let mut out = String::new();
        for (cmd, args) in [
            ("iptables-nft-save", &[][..]),
            ("ip6tables-nft-save", &[][..]),
            ("ipset", &["list"][..]),
        ] {
            let o = self.node.run(cmd, args);
            out += &format!(
                "--- {cmd} {} (node {}) ---\n{}{}",
                args.join(" "),
                self.node.name,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        out
    }
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World")
            .field("node", &self.node.name)
            .field("hosts", &self.hosts.len())
            .finish_non_exhaustive()
    }
}
