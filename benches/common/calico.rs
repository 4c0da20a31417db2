//! The Calico-like baseline: the iptables and ipset state that Calico (and, in
//! the same spirit, kube-router) programs for a node today, rendered from
//! netfence's policy model as `iptables-restore` and `ipset restore` text, and
//! the deltas Calico would apply when one object changes.
//!
//! # Layout (table `filter`, one per family)
//!
//! ```text
//! FORWARD            -j cali-FORWARD
//! INPUT              -j cali-INPUT
//! cali-FORWARD       clear the accept mark; -i cali+ -j cali-from-wl-dispatch;
//!                    -o cali+ -j cali-to-wl-dispatch; accept-mark set -> ACCEPT
//! cali-INPUT         -i cali+ -g cali-wl-to-host  (-j cali-from-wl-dispatch, ACCEPT)
//! cali-from-wl-dispatch[-<c>], cali-to-wl-dispatch[-<c>]
//!                    one `-i|-o <iface> -g cali-fw|tw-<iface>` per local endpoint; split
//!                    one level by the first character after the common `cali` prefix
//!                    once more than one endpoint shares it, as Felix's dispatch.go does;
//!                    unknown interfaces DROP
//! cali-tw-<iface>    (to workload = ingress)  ct RELATED,ESTABLISHED ACCEPT; ct INVALID
//!                    DROP; clear mark; per selecting policy `-j cali-pi-<p>` then
//!                    `-m mark --mark 0x10000/0x10000 -j RETURN`; DROP if any policy
//!                    applied; then the namespace profile `cali-pri-kns.<ns>` (accept
//!                    all), RETURN if accepted, DROP
//! cali-fw-<iface>    (from workload = egress) the same with cali-po-* / cali-pro-kns.*
//! cali-pi-<p>, cali-po-<p>
//!                    per (peer × protocol group) of each rule: one rule per multiport
//!                    chunk (≤ 15 ports) and per named port, each `-j MARK --set-xmark
//!                    0x10000/0x10000`, then `-m mark --mark 0x10000/0x10000 -j RETURN`
//! ```
//!
//! Every rule carries `-m comment --comment "cali:<16 chars>"`, a hash chained over
//! the chain's previous rule like Felix's rule hashes, so inserting a rule in the
//! middle of a chain changes every later rule: Felix then rewrites that tail with
//! `-R`, and so does [`diff`].
//!
//! Policy chains and per-namespace profile chains exist for what local endpoints use
//! only (Felix's "active" policies and profiles); ipsets are cluster-wide (remote
//! pods are peers too). Chain names longer than 28 characters are hashed as Felix's
//! `GetLengthLimitedID` does: prefix + `_` + base64url(sha256(id)); the k8s policy
//! id is `default/<ns>/knp.default.<name>`, so policy chains are always hashed.
//!
//! # Sets (`ipset`, names ≤ 31 characters: `cali40`/`cali60` + kind + `:` + 23 chars of
//! base64url(sha224(id)))
//!
//! * `cali4?s:` `hash:ip`, one per distinct peer selector (namespace scope + pod
//!   selector): every pod of the cluster it matches. Shared by every rule using it.
//! * `cali4?s:` `hash:net`, one per ipBlock: the CIDR, and each except as `nomatch`
//!   (kube-router's encoding; a /0 is stored as two /1, which hash:net needs).
//! * `cali4?n:` `hash:ip,port`, one per (pods, protocol, port name): `ip,proto:port`
//!   of every matching pod that declares the port; matched with `dst,dst`. For
//!   ingress the pods are the policy's own selected pods; for egress the peer's pods
//!   (all pods for ipBlock or empty peers, next to the peer match). This is how
//!   Calico resolves named ports: a pod's named ports change set members, not rules.
//!
//! `tests/calico_baseline.rs` walks packets through the rendered rules and checks
//! every verdict against netfence's reference evaluator (`policy::allowed`), so the
//! baseline enforces the same semantics netfence does.
//!
//! # Applying
//!
//! A [`Baseline`] loads into an empty namespace; its `iptables` text replaces the
//! whole `filter` table (no `--noflush`). A [`Delta`] applies to a state rendered by
//! [`render`] in the order [`Delta::steps`] gives: `ipset restore` (creates, adds,
//! deletes of members), `iptables-nft-restore --noflush`, `ip6tables-nft-restore
//! --noflush`, then `ipset restore` of the cleanup (destroys of sets no rule uses
//! any more; the kernel releases a set's last reference asynchronously, so this step
//! may need a retry on "in use"). Empty texts mean "nothing to run".

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use policy::{
    Cluster, Family, IpBlock, LabelSelector, Namespace, NamespaceScope, ObjectKey, Peer, Pod,
    Policy, Port, Protocol,
};
use sha2::{Digest, Sha224, Sha256};

/// The accept bit Felix uses (`0x10000`), with its mask.
pub const ACCEPT_MARK: &str = "0x10000/0x10000";
/// Longest chain name (`XT_EXTENSION_MAXNAMELEN` - 1, `<linux/netfilter/x_tables.h>`).
pub const MAX_CHAIN_NAME: usize = 28;
/// Longest ipset name (`IPSET_MAXNAMELEN` - 1, `<linux/netfilter/ipset/ip_set.h>`).
pub const MAX_SET_NAME: usize = 31;
/// Built-in chains of table `filter`, in `iptables-save` order.
pub const BUILTIN_CHAINS: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];

/// What to render.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CalicoConfig {
    /// The node: pods with this `nodeName` are local. `None`: every pod is local.
    pub node: Option<String>,
    /// Render the IPv6 table (and `cali60*` sets) too.
    pub ipv6: bool,
}

impl CalicoConfig {
    /// A config for `node` (`None`: every pod local), dual stack or not.
    pub fn new(node: Option<String>, ipv6: bool) -> Self {
        CalicoConfig { node, ipv6 }
    }
}

/// An ipset type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// `hash:ip`: pod addresses.
    Ip,
    /// `hash:net`: an ipBlock, excepts as `nomatch`.
    Net,
    /// `hash:ip,port`: named ports resolved per pod.
    IpPort,
}

impl SetKind {
    /// The ipset type name.
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::Ip => "hash:ip",
            SetKind::Net => "hash:net",
            SetKind::IpPort => "hash:ip,port",
        }
    }
}

/// One ipset: type, family, members as `ipset restore` spells them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpSet {
    /// The set's type.
    pub kind: SetKind,
    /// The set's family.
    pub family: Family,
    /// Members (`10.0.0.1`, `10.1.0.0/16 nomatch`, `10.0.0.1,tcp:8080`).
    pub members: BTreeSet<String>,
}

impl IpSet {
    fn create_line(&self, name: &str) -> String {
        let family = match self.family {
            Family::Ipv4 => "inet",
            Family::Ipv6 => "inet6",
        };
        format!(
            "create {name} {} family {family} hashsize 1024 maxelem 1048576\n",
            self.kind.as_str()
        )
    }
}

/// One `filter` table: chain name -> rules, each the text after `-A <chain> `.
/// Holds the built-in chains too (with only Calico's jumps).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Chains by name.
    pub chains: BTreeMap<String, Vec<String>>,
}

impl Table {
    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }

    /// Chains in `iptables-save` order: built-ins, then the rest by name.
    fn ordered(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        let builtins = BUILTIN_CHAINS
            .iter()
            .filter_map(|b| self.chains.get_key_value(*b));
        let user = self
            .chains
            .iter()
            .filter(|(n, _)| !BUILTIN_CHAINS.contains(&n.as_str()));
        builtins.chain(user)
    }

    /// The whole table as `iptables-restore` input; also exactly what
    /// `iptables-nft-save` prints back, comments and counters aside.
    pub fn restore_text(&self) -> String {
        let mut out = String::from("*filter\n");
        for (name, _) in self.ordered() {
            if BUILTIN_CHAINS.contains(&name.as_str()) {
                let _ = writeln!(out, ":{name} ACCEPT [0:0]");
            } else {
                let _ = writeln!(out, ":{name} - [0:0]");
            }
        }
        for (name, rules) in self.ordered() {
            for r in rules {
                let _ = writeln!(out, "-A {name} {r}");
            }
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// The rendered state: both tables and every set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Table `ip filter`.
    pub v4: Table,
    /// Table `ip6 filter`, when [`CalicoConfig::ipv6`].
    pub v6: Option<Table>,
    /// Every set, by name.
    pub sets: BTreeMap<String, IpSet>,
}

/// Sizes of a rendered state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Chains, both families, built-ins included.
    pub chains: usize,
    /// Rules, both families.
    pub rules: usize,
    /// Sets.
    pub sets: usize,
    /// Set members, all sets.
    pub members: usize,
}

impl Rendered {
    /// The restore texts.
    pub fn baseline(&self) -> Baseline {
        let mut ipset = String::new();
        for (name, set) in &self.sets {
            ipset.push_str(&set.create_line(name));
            for m in &set.members {
                let _ = writeln!(ipset, "add {name} {m}");
            }
        }
        Baseline {
            iptables: self.v4.restore_text(),
            ip6tables: self.v6.as_ref().map(Table::restore_text),
            ipset,
        }
    }

    /// Sizes.
    pub fn stats(&self) -> Stats {
        let tables = std::iter::once(&self.v4).chain(self.v6.as_ref());
        let (mut chains, mut rules) = (0, 0);
        for t in tables {
            chains += t.chains.len();
            rules += t.rule_count();
        }
        Stats {
            chains,
            rules,
            sets: self.sets.len(),
            members: self.sets.values().map(|s| s.members.len()).sum(),
        }
    }
}

/// The full baseline as restore files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Baseline {
    /// `iptables-nft-restore` input for table `filter` (IPv4); replaces the table.
    pub iptables: String,
    /// `ip6tables-nft-restore` input, when rendered with IPv6.
    pub ip6tables: Option<String>,
    /// `ipset restore` input: every set created and filled (into an empty namespace).
    pub ipset: String,
}

/// One command of an update: run `program args...` with `input` on stdin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step<'a> {
    /// The program.
    pub program: &'static str,
    /// Its arguments.
    pub args: &'static [&'static str],
    /// Its stdin.
    pub input: &'a str,
}

impl Baseline {
    /// The commands that load the baseline into an empty namespace, in order.
    pub fn steps(&self) -> Vec<Step<'_>> {
        let mut steps = vec![
            Step {
                program: "ipset",
                args: &["restore"],
                input: &self.ipset,
            },
            Step {
                program: "iptables-nft-restore",
                args: &[],
                input: &self.iptables,
            },
        ];
        if let Some(v6) = &self.ip6tables {
            steps.push(Step {
                program: "ip6tables-nft-restore",
                args: &[],
                input: v6,
            });
        }
        steps
    }
}

/// What Calico changes for one update, as restore text. Apply with [`Delta::steps`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// `ipset restore` input, run first: new sets created and filled, members
    /// added to and deleted from existing sets.
    pub ipset: String,
    /// `iptables-nft-restore --noflush` input (empty: no IPv4 rule changes).
    pub iptables: String,
    /// `ip6tables-nft-restore --noflush` input (empty: no IPv6 rule changes).
    pub ip6tables: String,
    /// `ipset restore` input, run last: `destroy` of sets no rule references any more.
    pub ipset_cleanup: String,
}

impl Delta {
    /// Nothing changes.
    pub fn is_empty(&self) -> bool {
        self.ipset.is_empty()
            && self.iptables.is_empty()
            && self.ip6tables.is_empty()
            && self.ipset_cleanup.is_empty()
    }

    /// The commands that apply the delta, in order, leaving out empty ones.
    pub fn steps(&self) -> Vec<Step<'_>> {
        [
            ("ipset", &["restore"][..], &self.ipset),
            ("iptables-nft-restore", &["--noflush"][..], &self.iptables),
            ("ip6tables-nft-restore", &["--noflush"][..], &self.ip6tables),
            ("ipset", &["restore"][..], &self.ipset_cleanup),
        ]
        .into_iter()
        .filter(|(_, _, input)| !input.is_empty())
        .map(|(program, args, input)| Step {
            program,
            args,
            input,
        })
        .collect()
    }

    /// Lines of iptables text (both families) and of ipset text.
    pub fn line_counts(&self) -> (usize, usize) {
        (
            self.iptables.lines().count() + self.ip6tables.lines().count(),
            self.ipset.lines().count() + self.ipset_cleanup.lines().count(),
        )
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `prefix + id`, or `prefix + "_" + base64url(sha256(id))` cut to 28 characters
/// when that is too long (Felix's `hashutils.GetLengthLimitedID`).
pub fn chain_name(prefix: &str, id: &str) -> String {
    if prefix.len() + id.len() <= MAX_CHAIN_NAME {
        format!("{prefix}{id}")
    } else {
        let h = b64(&Sha256::digest(id.as_bytes()));
        format!("{prefix}_{}", &h[..MAX_CHAIN_NAME - prefix.len() - 1])
    }
}

/// `cali40<kind>:` / `cali60<kind>:` + 23 characters of base64url(sha224(id)).
fn set_name(family: Family, kind: char, id: &str) -> String {
    let v = match family {
        Family::Ipv4 => '4',
        Family::Ipv6 => '6',
    };
    let prefix = format!("cali{v}0{kind}:");
    let h = b64(&Sha224::digest(id.as_bytes()));
    format!("{prefix}{}", &h[..MAX_SET_NAME - prefix.len()])
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// The policy chain of `policy` for ingress (`cali-pi-`) or egress (`cali-po-`).
pub fn policy_chain(policy: &Policy, ingress: bool) -> String {
    let prefix = if ingress { "cali-pi-" } else { "cali-po-" };
    chain_name(
        prefix,
        &format!("default/{}/knp.default.{}", policy.namespace, policy.name),
    )
}

/// The namespace profile chain for ingress (`cali-pri-`) or egress (`cali-pro-`).
pub fn profile_chain(namespace: &str, ingress: bool) -> String {
    let prefix = if ingress { "cali-pri-" } else { "cali-pro-" };
    chain_name(prefix, &format!("kns.{namespace}"))
}

fn scope_id(scope: &NamespaceScope) -> String {
    match scope {
        NamespaceScope::Only(ns) => format!("ns=={ns}"),
        NamespaceScope::Selected(sel) => format!("nssel({sel})"),
    }
}

/// A chain being built: rules get their chained hash comment as they are pushed.
struct ChainBuf {
    name: String,
    rules: Vec<String>,
    prev: Vec<u8>,
}

impl ChainBuf {
    fn new(name: impl Into<String>) -> Self {
        ChainBuf {
            name: name.into(),
            rules: Vec::new(),
            prev: Vec::new(),
        }
    }

    /// Appends `<head> -m comment --comment "cali:<hash>" <body>`. `head` holds what
    /// `iptables-save` prints before the matches (`-i`, `-o`, `-p`), so that the text
    /// reads back identically.
    fn push(&mut self, head: &str, body: &str) {
        let mut h = Sha224::new();
        h.update(self.name.as_bytes());
        h.update(&self.prev);
        h.update(head.as_bytes());
        h.update(b"|");
        h.update(body.as_bytes());
        let digest = h.finalize();
        let hash = b64(&digest);
        let comment = format!("-m comment --comment \"cali:{}\"", &hash[..16]);
        self.prev = digest.to_vec();
        let rule = if head.is_empty() {
            format!("{comment} {body}")
        } else {
            format!("{head} {comment} {body}")
        };
        self.rules.push(rule);
    }
}

/// One peer of a rule, for one family.
enum PeerMatch<'p> {
    Any,
    Pods(&'p NamespaceScope, &'p LabelSelector),
    Net(&'p IpBlock),
}

/// Ports of one protocol in one rule.
#[derive(Default)]
struct PortGroup {
    any: bool,
    numeric: Vec<(u16, u16)>,
    named: BTreeSet<String>,
}

struct Renderer<'c> {
    cluster: &'c Cluster,
    family: Family,
    sets: &'c mut BTreeMap<String, IpSet>,
    chains: BTreeMap<String, Vec<String>>,
}

impl Renderer<'_> {
    fn add_chain(&mut self, c: ChainBuf) {
        self.chains.insert(c.name, c.rules);
    }

    /// Pods of the cluster a (scope, selector) pair selects.
    fn pods_of<'a>(
        &'a self,
        scope: &'a NamespaceScope,
        sel: &'a LabelSelector,
    ) -> impl Iterator<Item = &'a std::sync::Arc<Pod>> + 'a {
        let namespaces: Vec<&str> = match scope {
            NamespaceScope::Only(ns) => self
                .cluster
                .namespace(ns)
                .map(|n| n.name.as_str())
                .into_iter()
                .collect(),
            NamespaceScope::Selected(nssel) => self
                .cluster
                .namespaces()
                .filter(|n| nssel.matches(&n.labels))
                .map(|n| n.name.as_str())
                .collect(),
        };
        namespaces
            .into_iter()
            .flat_map(move |ns| self.cluster.pods_in(ns))
            .filter(move |p| sel.matches(&p.labels))
    }

    fn pod_set(&mut self, scope: &NamespaceScope, sel: &LabelSelector) -> String {
        let name = set_name(self.family, 's', &format!("pods;{};{sel}", scope_id(scope)));
        if !self.sets.contains_key(&name) {
            let family = self.family;
            let members = self
                .pods_of(scope, sel)
                .filter_map(|p| p.ip(family))
                .map(|ip| ip.to_string())
                .collect();
            self.sets.insert(
                name.clone(),
                IpSet {
                    kind: SetKind::Ip,
                    family,
                    members,
                },
            );
        }
        name
    }

    fn named_port_set(
        &mut self,
        scope: &NamespaceScope,
        sel: &LabelSelector,
        protocol: Protocol,
        port: &str,
    ) -> String {
        let name = set_name(
            self.family,
            'n',
            &format!("namedport;{};{sel};{protocol};{port}", scope_id(scope)),
        );
        if !self.sets.contains_key(&name) {
            let family = self.family;
            let mut members = BTreeSet::new();
            for p in self.pods_of(scope, sel) {
                let Some(ip) = p.ip(family) else { continue };
                for n in p.resolve_named_port(port, protocol) {
                    members.insert(format!("{ip},{}:{n}", proto_name(protocol)));
                }
            }
            self.sets.insert(
                name.clone(),
                IpSet {
                    kind: SetKind::IpPort,
                    family,
                    members,
                },
            );
        }
        name
    }

    fn net_set(&mut self, block: &IpBlock) -> String {
        let except: Vec<String> = block.except.iter().map(|e| e.to_string()).collect();
        let name = set_name(
            self.family,
            's',
            &format!("net;{};{}", block.cidr, except.join(",")),
        );
        if !self.sets.contains_key(&name) {
            let mut members = BTreeSet::new();
            if block.cidr.prefix_len() == 0 {
                // hash:net cannot hold a /0: store its two halves.
                let halves = match self.family {
                    Family::Ipv4 => ["0.0.0.0/1", "128.0.0.0/1"],
                    Family::Ipv6 => ["::/1", "8000::/1"],
                };
                members.extend(halves.iter().map(|h| h.to_string()));
            } else {
                members.insert(block.cidr.to_string());
            }
            for e in &except {
                members.insert(format!("{e} nomatch"));
            }
            self.sets.insert(
                name.clone(),
                IpSet {
                    kind: SetKind::Net,
                    family: self.family,
                    members,
                },
            );
        }
        name
    }

    /// `cali-pi-*` or `cali-po-*` for one policy.
    fn policy_chain(&mut self, policy: &Policy, ingress: bool) {
        let mut chain = ChainBuf::new(policy_chain(policy, ingress));
        let rules = if ingress {
            policy.ingress.as_deref()
        } else {
            policy.egress.as_deref()
        }
        .unwrap_or_default();
        let dir = if ingress { "src" } else { "dst" };
        let set_mark = format!("-j MARK --set-xmark {ACCEPT_MARK}");
        let everyone = NamespaceScope::Selected(LabelSelector::everything());
        let all_pods = LabelSelector::everything();
        let own = NamespaceScope::Only(policy.namespace.clone());
        for rule in rules {
            let peers: Vec<PeerMatch> = if rule.peers.is_empty() {
                vec![PeerMatch::Any]
            } else {
                rule.peers
                    .iter()
                    .filter_map(|p| match p {
                        Peer::Pods { namespaces, pods } => Some(PeerMatch::Pods(namespaces, pods)),
                        Peer::IpBlock(b) if b.family() == self.family => Some(PeerMatch::Net(b)),
                        Peer::IpBlock(_) => None,
                    })
                    .collect()
            };
            // Ports grouped by protocol; no ports: any protocol, any port.
            let mut groups: BTreeMap<Option<Protocol>, PortGroup> = BTreeMap::new();
            if rule.ports.is_empty() {
                groups.entry(None).or_default().any = true;
            }
            for pr in &rule.ports {
                let g = groups.entry(Some(pr.protocol)).or_default();
                match &pr.port {
                    Port::Any => g.any = true,
                    Port::Range { start, end } => g.numeric.push((*start, *end)),
                    Port::Named(n) => {
                        g.named.insert(n.clone());
                    }
                }
            }
            for peer in &peers {
                let peer_match = match peer {
                    PeerMatch::Any => None,
                    PeerMatch::Pods(scope, sel) => Some(format!(
                        "-m set --match-set {} {dir}",
                        self.pod_set(scope, sel)
                    )),
                    PeerMatch::Net(b) => {
                        Some(format!("-m set --match-set {} {dir}", self.net_set(b)))
                    }
                };
                for (proto, g) in &groups {
                    let head = proto.map(|p| format!("-p {}", proto_name(p)));
                    let head = head.as_deref().unwrap_or("");
                    let body = |extra: Option<&str>| -> String {
                        peer_match
                            .iter()
                            .map(String::as_str)
                            .chain(extra)
                            .chain(std::iter::once(set_mark.as_str()))
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    if g.any {
                        chain.push(head, &body(None));
                    } else {
                        // multiport takes 15 slots; a range takes two.
                        let mut chunk: Vec<String> = Vec::new();
                        let mut slots = 0;
                        let mut chunks = Vec::new();
                        for &(s, e) in &g.numeric {
                            let (text, n) = if s == e {
                                (s.to_string(), 1)
                            } else {
                                (format!("{s}:{e}"), 2)
                            };
                            if slots + n > 15 {
                                chunks.push(std::mem::take(&mut chunk));
                                slots = 0;
                            }
                            chunk.push(text);
                            slots += n;
                        }
                        if !chunk.is_empty() {
                            chunks.push(chunk);
                        }
                        for c in chunks {
                            let m = format!("-m multiport --dports {}", c.join(","));
                            chain.push(head, &body(Some(&m)));
                        }
                        let p = proto.expect("named ports have a protocol");
                        for n in &g.named {
                            if ingress {
                                let set = self.named_port_set(&own, &policy.pod_selector, p, n);
                                let m = format!("-m set --match-set {set} dst,dst");
                                chain.push(head, &body(Some(&m)));
                            } else if let PeerMatch::Pods(scope, sel) = peer {
                                // The named-port set of the peer's pods is the peer match.
                                let set = self.named_port_set(scope, sel, p, n);
                                chain.push(
                                    head,
                                    &format!("-m set --match-set {set} dst,dst {set_mark}"),
                                );
                            } else {
                                let set = self.named_port_set(&everyone, &all_pods, p, n);
                                let m = format!("-m set --match-set {set} dst,dst");
                                chain.push(head, &body(Some(&m)));
                            }
                        }
                    }
                    chain.push("", &format!("-m mark --mark {ACCEPT_MARK} -j RETURN"));
                }
            }
        }
        self.add_chain(chain);
    }

    /// `cali-tw-<iface>` (ingress) or `cali-fw-<iface>` (egress).
    fn endpoint_chain(&mut self, iface: &str, pod: &Pod, policies: &[&Policy], ingress: bool) {
        let prefix = if ingress { "cali-tw-" } else { "cali-fw-" };
        let mut c = ChainBuf::new(format!("{prefix}{iface}"));
        c.push("", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
        c.push("", "-m conntrack --ctstate INVALID -j DROP");
        c.push("", "-j MARK --set-xmark 0x0/0x10000");
        let ret = format!("-m mark --mark {ACCEPT_MARK} -j RETURN");
        for p in policies {
            c.push("", &format!("-j {}", policy_chain(p, ingress)));
            c.push("", &ret);
        }
        if !policies.is_empty() {
            // "Drop if no policies passed packet"
            c.push("", "-j DROP");
        }
        c.push(
            "",
            &format!("-j {}", profile_chain(&pod.namespace, ingress)),
        );
        c.push("", &ret);
        // "Drop if no profiles matched"
        c.push("", "-j DROP");
        self.add_chain(c);
    }

    /// A dispatch tree: `root` plus one child per first character after the common
    /// prefix that more than one interface shares.
    fn dispatch(&mut self, root: &str, ingress: bool, ifaces: &[&str]) {
        let (flag, target) = if ingress {
            ("-o", "cali-tw-")
        } else {
            ("-i", "cali-fw-")
        };
        let prefix_len = common_prefix(ifaces);
        let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for i in ifaces {
            let key = i.get(..prefix_len + 1).unwrap_or(i);
            groups.entry(key.to_owned()).or_default().push(i);
        }
        let mut top = ChainBuf::new(root);
        for (key, members) in &groups {
            if members.len() == 1 {
                let i = members[0];
                top.push(&format!("{flag} {i}"), &format!("-g {target}{i}"));
            } else {
                let child_name = format!("{root}-{}", &key[prefix_len..]);
                let mut child = ChainBuf::new(child_name.clone());
                for i in members {
                    child.push(&format!("{flag} {i}"), &format!("-g {target}{i}"));
                }
                // "Unknown interface"
                child.push("", "-j DROP");
                self.add_chain(child);
                top.push(&format!("{flag} {key}+"), &format!("-g {child_name}"));
            }
        }
        top.push("", "-j DROP");
        self.add_chain(top);
    }

    fn accept_profile(&mut self, name: String) {
        let mut c = ChainBuf::new(name);
        c.push("", &format!("-j MARK --set-xmark {ACCEPT_MARK}"));
        c.push("", &format!("-m mark --mark {ACCEPT_MARK} -j RETURN"));
        self.add_chain(c);
    }
}

fn common_prefix(names: &[&str]) -> usize {
    let Some(first) = names.first() else { return 0 };
    let mut n = first.len();
    for s in names {
        n = n.min(
            first
                .bytes()
                .zip(s.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    n
}

fn render_table(
    cluster: &Cluster,
    cfg: &CalicoConfig,
    family: Family,
    sets: &mut BTreeMap<String, IpSet>,
) -> Table {
    let mut r = Renderer {
        cluster,
        family,
        sets,
        chains: BTreeMap::new(),
    };
    // Local endpoints, by interface name.
    let mut endpoints: Vec<(&str, &Pod)> = cluster
        .pods()
        .filter(|p| cfg.node.is_none() || p.node_name == cfg.node)
        .filter_map(|p| p.host_interface.as_deref().map(|i| (i, &**p)))
        .collect();
    endpoints.sort_by(|a, b| a.0.cmp(b.0));

    let mut active: BTreeMap<ObjectKey, (&Policy, bool, bool)> = BTreeMap::new();
    let mut profiles: BTreeSet<&str> = BTreeSet::new();
    for &(iface, pod) in &endpoints {
        let selecting: Vec<&Policy> = cluster
            .policies_in(&pod.namespace)
            .filter(|p| p.selects(pod))
            .map(|p| &**p)
            .collect();
        let ing: Vec<&Policy> = selecting
            .iter()
            .copied()
            .filter(|p| p.ingress.is_some())
            .collect();
        let egr: Vec<&Policy> = selecting
            .iter()
            .copied()
            .filter(|p| p.egress.is_some())
            .collect();
        for p in &ing {
            active.entry(p.key()).or_insert((p, false, false)).1 = true;
        }
        for p in &egr {
            active.entry(p.key()).or_insert((p, false, false)).2 = true;
        }
        profiles.insert(&pod.namespace);
        r.endpoint_chain(iface, pod, &ing, true);
        r.endpoint_chain(iface, pod, &egr, false);
    }
    for (p, ing, egr) in active.values() {
        if *ing {
            r.policy_chain(p, true);
        }
        if *egr {
            r.policy_chain(p, false);
        }
    }
    for ns in profiles {
        r.accept_profile(profile_chain(ns, true));
        r.accept_profile(profile_chain(ns, false));
    }
    let ifaces: Vec<&str> = endpoints.iter().map(|e| e.0).collect();
    r.dispatch("cali-from-wl-dispatch", false, &ifaces);
    r.dispatch("cali-to-wl-dispatch", true, &ifaces);

    let mut fwd = ChainBuf::new("cali-FORWARD");
    fwd.push("", "-j MARK --set-xmark 0x0/0x10000");
    fwd.push("-i cali+", "-j cali-from-wl-dispatch");
    fwd.push("-o cali+", "-j cali-to-wl-dispatch");
    // "Policy explicitly accepted packet."
    fwd.push("", &format!("-m mark --mark {ACCEPT_MARK} -j ACCEPT"));
    r.add_chain(fwd);
    let mut input = ChainBuf::new("cali-INPUT");
    input.push("-i cali+", "-g cali-wl-to-host");
    r.add_chain(input);
    let mut to_host = ChainBuf::new("cali-wl-to-host");
    to_host.push("", "-j cali-from-wl-dispatch");
    // "Configured DefaultEndpointToHostAction"
    to_host.push("", "-j ACCEPT");
    r.add_chain(to_host);
    let mut builtin = ChainBuf::new("FORWARD");
    builtin.push("", "-j cali-FORWARD");
    r.add_chain(builtin);
    let mut builtin = ChainBuf::new("INPUT");
    builtin.push("", "-j cali-INPUT");
    r.add_chain(builtin);
    r.add_chain(ChainBuf::new("OUTPUT"));
    Table { chains: r.chains }
}

/// Renders the state for `cluster` on the node `cfg` names.
pub fn render_state(cluster: &Cluster, cfg: &CalicoConfig) -> Rendered {
    let mut sets = BTreeMap::new();
    let v4 = render_table(cluster, cfg, Family::Ipv4, &mut sets);
    let v6 = cfg
        .ipv6
        .then(|| render_table(cluster, cfg, Family::Ipv6, &mut sets));
    Rendered { v4, v6, sets }
}

/// Renders the baseline restore files for `cluster` on the node `cfg` names.
pub fn render(cluster: &Cluster, cfg: &CalicoConfig) -> Baseline {
    render_state(cluster, cfg).baseline()
}

/// Felix-style table update: new chains declared and filled, changed chains patched
/// by position (`-R` where a rule differs, `-A` past the old end, `-D` from the end),
/// removed chains flushed, then deleted.
fn table_diff(before: &Table, after: &Table) -> String {
    let mut decls = String::new();
    let mut body = String::new();
    let mut flushes = String::new();
    let mut deletes = String::new();
    for (name, rules) in &after.chains {
        match before.chains.get(name) {
            None => {
                let _ = writeln!(decls, ":{name} - [0:0]");
                for r in rules {
                    let _ = writeln!(body, "-A {name} {r}");
                }
            }
            Some(old) if old == rules => {}
            Some(old) => {
                for (i, r) in rules.iter().enumerate() {
                    match old.get(i) {
                        Some(o) if o == r => {}
                        Some(_) => {
                            let _ = writeln!(body, "-R {name} {} {r}", i + 1);
                        }
                        None => {
                            let _ = writeln!(body, "-A {name} {r}");
                        }
                    }
                }
                for i in (rules.len()..old.len()).rev() {
                    let _ = writeln!(body, "-D {name} {}", i + 1);
                }
            }
        }
    }
    for name in before.chains.keys() {
        if !after.chains.contains_key(name) {
            let _ = writeln!(flushes, "-F {name}");
            let _ = writeln!(deletes, "-X {name}");
        }
    }
    if decls.is_empty() && body.is_empty() && flushes.is_empty() {
        return String::new();
    }
    format!("*filter\n{decls}{body}{flushes}{deletes}COMMIT\n")
}

/// The update from `before` to `after`, as Calico would apply it.
pub fn diff(before: &Rendered, after: &Rendered) -> Delta {
    let mut ipset = String::new();
    let mut dels = String::new();
    let mut cleanup = String::new();
    for (name, set) in &after.sets {
        match before.sets.get(name) {
            Some(old) if old.kind == set.kind && old.family == set.family => {
                for m in set.members.difference(&old.members) {
                    let _ = writeln!(ipset, "add {name} {m}");
                }
                for m in old.members.difference(&set.members) {
                    let m = m.strip_suffix(" nomatch").unwrap_or(m);
                    let _ = writeln!(dels, "del {name} {m}");
                }
            }
            _ => {
                // Names derive from kind and family, so an old set of another
                // shape cannot share the name.
                ipset.push_str(&set.create_line(name));
                for m in &set.members {
                    let _ = writeln!(ipset, "add {name} {m}");
                }
            }
        }
    }
    ipset.push_str(&dels);
    for name in before.sets.keys() {
        if !after.sets.contains_key(name) {
            let _ = writeln!(cleanup, "destroy {name}");
        }
    }
    let empty = Table::default();
    let ip6tables = match (&before.v6, &after.v6) {
        (None, None) => String::new(),
        (b, a) => table_diff(b.as_ref().unwrap_or(&empty), a.as_ref().unwrap_or(&empty)),
    };
    Delta {
        ipset,
        iptables: table_diff(&before.v4, &after.v4),
        ip6tables,
        ipset_cleanup: cleanup,
    }
}

/// The update from cluster `before` to cluster `after`.
pub fn delta(before: &Cluster, after: &Cluster, cfg: &CalicoConfig) -> Delta {
    diff(&render_state(before, cfg), &render_state(after, cfg))
}

fn with(before: &Cluster, change: impl FnOnce(&mut Cluster)) -> Cluster {
    let mut after = before.clone();
    change(&mut after);
    after
}

/// A pod is added (or becomes local).
pub fn pod_added(before: &Cluster, pod: &Pod, cfg: &CalicoConfig) -> Delta {
    let after = with(before, |c| {
        c.upsert_pod(pod.clone());
    });
    delta(before, &after, cfg)
}

/// A pod is deleted.
pub fn pod_deleted(before: &Cluster, pod: &ObjectKey, cfg: &CalicoConfig) -> Delta {
    let after = with(before, |c| {
        c.delete_pod(pod);
    });
    delta(before, &after, cfg)
}

/// A pod's labels change: `new` replaces the pod with the same key.
pub fn pod_relabelled(before: &Cluster, new: &Pod, cfg: &CalicoConfig) -> Delta {
    pod_added(before, new, cfg)
}

/// A namespace's labels change: `new` replaces the namespace of that name.
pub fn namespace_relabelled(before: &Cluster, new: &Namespace, cfg: &CalicoConfig) -> Delta {
    let after = with(before, |c| {
        c.upsert_namespace(new.clone());
    });
    delta(before, &after, cfg)
}

/// A policy is added.
pub fn policy_added(before: &Cluster, policy: &Policy, cfg: &CalicoConfig) -> Delta {
    let after = with(before, |c| {
        c.upsert_policy(policy.clone());
    });
    delta(before, &after, cfg)
}

/// A policy changes: `new` replaces the policy with the same key.
pub fn policy_changed(before: &Cluster, new: &Policy, cfg: &CalicoConfig) -> Delta {
    policy_added(before, new, cfg)
}

/// A policy is deleted.
pub fn policy_deleted(before: &Cluster, policy: &ObjectKey, cfg: &CalicoConfig) -> Delta {
    let after = with(before, |c| {
        c.delete_policy(policy);
    });
    delta(before, &after, cfg)
}
