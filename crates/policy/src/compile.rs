//! The compiler: from the cluster model to a [`Ruleset`], in a layout where
//! pod churn changes only ipset members, kept up to date incrementally.
//!
//! # Layout
//! Per family `f` (table `filter` of `ip` / `ip6`; chain names are the same in
//! both tables, set names carry the family because ipsets are global):
//!
//! ```text
//! FORWARD      -j nf-fw                                  (the only rule netfence adds there)
//! nf-fw        -i <pod interface prefix>+ -m set ! --match-set <pod sources> src,src -j DROP   (with a prefix)
//!              -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
//!              -m conntrack --ctstate INVALID -j DROP
//!              -j MARK --set-xmark 0/IA|EA
//!              -m set --match-set <egress-isolated> src -j nf-egress
//!              -m set --match-set <ingress-isolated> dst -j nf-ingress
//! nf-ingress   -m set --match-set <pods of N> dst -g <N's ingress chain>   (per namespace N with an ingress policy)
//!              -m mark --mark 0/IA -j DROP
//!   or, past `dispatch_flat_max` namespaces with policies, per bucket B of them:
//!              -m set --match-set <pods of B's namespaces> dst -g nf-ingress-<B>   (two or more N of B with an ingress policy)
//!              -m set --match-set <pods of N> dst -g <N's ingress chain>           (N the one)
//!              -m mark --mark 0/IA -j DROP
//! nf-ingress-<B>  -m set --match-set <pods of N> dst -g <N's ingress chain>   (per namespace N of B with an ingress policy)
//!              -m mark --mark 0/IA -j DROP
//! <N ingress>  -m mark --mark 0/IA [-m set --match-set <selected by P> dst] -j <P's ingress chain>   (per ingress policy P of N)
//!              -m mark --mark 0/IA -m set --match-set <S> dst -j <N ingress: S>   (per set S that several policies of N select with)
//!              -m mark --mark 0/IA -j DROP
//! <N ingress: S>  -m mark --mark 0/IA -j <P's ingress chain>   (per ingress policy P of N selecting with S)
//! nf-egress, <N egress>   the same with src, egress chains and EA
//! <P ingress>  [-p proto [--dport a:b]] [-m set --match-set <peer> src] [-m set --match-set <named> dst,dst]
//!                -j MARK --set-xmark IA/IA                (one line per peer x port entry)
//! ```
//!
//! Policies of one namespace that select with the same set (equal pod
//! selectors: the generator's 100 policies per namespace select with a
//! handful of `app` sets) share one lookup of it: their lines move to a
//! *selector chain* `<tag>-<N>:<set>` (hashed to fit), reached by one line
//! in the namespace chain, where the first of them stood. A policy chain
//! only ever sets the allow mark, so the order policies are looked at in
//! changes nothing. A set only one policy selects with keeps its line.
//!
//! A policy only selects pods of its own namespace, so dispatch goes by
//! namespace first: `nf-ingress` finds the packet's namespace, and only that
//! namespace's policies are looked at. The namespace line is a goto (`-g`):
//! when the namespace's chain ends, control returns to `nf-fw`, past every
//! other namespace's line (a pod is in one namespace). A policy that selects
//! every pod of its namespace has no set match in its namespace's chain: the
//! namespace line has already shown that the pod is one of them (the two
//! sets are the same set anyway). Namespace chains are named `in-<N>` and
//! `eg-<N>` after the prefix, hashed when longer than a chain name may be.
//!
//! A namespace line is a set lookup, and a connection meets the lines
//! before its namespace's: at 100 namespaces with policies, about 50 per
//! direction, which was most of what netfence added to a new connection at
//! 10,000 pods. Past [`CompilerConfig::dispatch_flat_max`] namespaces with
//! policies (of either direction), they are hashed by name into `g`
//! buckets (`g` a power of two, `g²` ≤ n < `4g²`): each top chain has a
//! line per bucket with namespaces of its direction, looking the pod up in a
//! set of the pods of the bucket's namespaces, and going to the bucket's
//! chain of that direction's namespace lines. About `g/2 + n/2g` lookups, 11
//! at 100 namespaces. Both directions share the buckets and their sets: a
//! pod delta changes one more set, not two. A namespace that gains its first
//! or loses its last policy changes one bucket, so the new bucket's set is
//! created, filled, and swapped in by the batch that rewrites the lines;
//! the count of buckets changes only when n crosses a power of four.
//!
//! `FORWARD` is the default hook point; [`CompilerConfig::hooks`] may add
//! `INPUT` (pod-to-node traffic meets egress policies and anti-spoofing) and
//! `OUTPUT` (node-to-pod traffic meets ingress policies), each with the same
//! one jump.
//!
//! Falling off `nf-fw` returns to `FORWARD`: netfence only ever drops, and
//! never accepts traffic on behalf of rules that come after it. (Replies of
//! established connections therefore `RETURN` rather than `ACCEPT`: same
//! verdict under an accepting `FORWARD`, but a foreign rule further down
//! still sees them.)
//!
//! No rule names a pod. Pods appear only as set members:
//!
//! * anti-spoofing sets (`hash:net,iface`, one per family), when
//!   [`CompilerConfig::pod_interface_prefix`] names the host-side interfaces
//!   of pods (Calico's `cali`): (pod address, host interface) of every local
//!   pod whose `netfence.io/host-interface` annotation names its interface
//!   ([`Polarity::Grants`]). Matched `src,src` (source address, incoming
//!   interface), "in on a pod interface and not in the set" is exactly "came
//!   from a pod with a source that pod doesn't own", so one rule drops it for
//!   every pod. It comes first, before the conntrack shortcut: a forged source
//!   must not ride on another pod's established connection. A pod without an
//!   address of a family sends nothing of that family, and a pod interface
//!   without the annotation sends nothing at all.
//!
//!   The interface test is an `-i prefix+` match rather than a set because
//!   `hash:net,iface` can't hold "every address on interface X" for many X:
//!   the kernel leaves the interface out of the hash key, so (0.0.0.0/1, X)
//!   for every pod fills one bucket ("Hash is full" at 64 pods), and a
//!   `nomatch` of one interface ends the search for every other (the `multi`
//!   count of `mtype_test_cidrs()`); `tests/ipset_net_iface.rs` shows both.
//! * isolation sets (one per direction and family): the local pods some
//!   policy isolates in that direction. [`Polarity::Restricts`].
//! * namespace sets: the pods of a namespace with a policy, in either
//!   direction, on every node (see below). [`Polarity::Grants`], like every
//!   set below: a pod is added after the batch that may need it and removed
//!   before, while it joins the isolation sets first and leaves them last,
//!   so an isolated pod missing from its namespace set falls through to the
//!   drop at the end of `nf-ingress` / `nf-egress`, never past it.
//! * bucket sets: the pods, on every node, of the namespaces of one dispatch
//!   bucket (by name, so a pod whose namespace object has not come yet is in
//!   its bucket as it is in its namespace set). A pod missing from its
//!   bucket set falls to the top chain's drop, and one in its bucket set but
//!   not yet in its namespace set to the bucket chain's.
//! * selected sets: the pods a policy's `podSelector` picks in its
//!   namespace, on every node (see below).
//! * peer sets: every cluster pod a pods peer matches (pods on other nodes
//!   talk to local pods too).
//! * ipBlock sets (`hash:net`): the cidr, with each except as a `nomatch`
//!   member. One set per ipBlock, so one peer's except never cancels another
//!   peer's cidr.
//! * named-port sets (`hash:ip,port`, matched `dst,dst`): (pod IP, protocol,
//!   resolved port) of the destination pods that define the name with that
//!   protocol: for ingress the local pods the policy selects, for egress
//!   every pod (the peer match narrows it at packet time). A named port
//!   resolves to a different number per pod, so one line serves them all.
//!
//! Sets are named by a hash of what defines their content, so equal
//! selectors share one set, and reordering a policy's rules renames nothing.
//!
//! Namespace and selected sets hold the pods of every node, although only
//! local pods are ever looked up in them: the lines that look them up are
//! reached only by packets whose pod is in an isolation set, and those hold
//! local pods only. Remote members therefore change no verdict, and they
//! make each of these sets the very set that a peer with the same namespace
//! and pod selector uses (a peer must hold remote pods). Policies that select
//! `app=a` and allow from `app=b` in a namespace where another policy does the
//! reverse need two sets, not four, and a pod delta sends one message where
//! it sent one to each twin. In the benchmarks' cluster at 10,000 pods and
//! 1,000 policies, all on this node, that took 1,857 sets down to 1,509 and
//! a burst of 1,000 deltas from 2,222 ipset messages to 1,776. The price is
//! paid where pods are spread over nodes: a remote pod's delta also reaches
//! the selections no peer shares (6.6 sets per remote pod of that cluster,
//! where it was 5.25), each message a little cheaper for the shorter search
//! of the sets by name.
//!
//! # Per-packet cost of a new connection
//! An interface-name comparison and, for packets from pod interfaces, one
//! `hash:net,iface` lookup (anti-spoofing, one prefix length), two
//! conntrack state checks, one mark write, two isolation-set lookups (hash
//! lookups: independent of the number of pods). Packets of established
//! connections pay the anti-spoofing lookups and one conntrack check. A pod
//! isolated in a direction then costs, in that direction's dispatch chain, at
//! most one set lookup per *namespace with a policy of that direction* (the
//! lines before its own namespace's), or, with buckets, one per bucket
//! before its own and one per namespace before its own in its bucket
//! (about √n in all), then in its namespace's chain one mark
//! test and at most one set lookup per *distinct selected set* of its
//! namespace's policies in that direction (the mark test stops the lookups
//! once a policy has allowed the packet), then a mark test per policy that
//! selects it and the lines of those policies, each a constant number of
//! hash lookups (none when its port number differs: the port compare comes
//! first). No rule carries a `-m comment` match, an xt call per rule a packet
//! meets: identities live in the rules' userdata ([`ruleset::OwnedRule`]).
//! So the cost is constant in the number of pods, grows with the square
//! root of the namespaces with policies (linearly up to
//! [`CompilerConfig::dispatch_flat_max`] of them) and linearly with the
//! distinct pod selectors of one namespace, and is independent of the
//! policies of other namespaces.
//!
//! # Incremental updates
//! A *group* is a pod-set definition: a namespace scope, a pod selector, and
//! whether only local pods count. Groups are indexed by their pod selector
//! ([`SelectorIndex`]) per namespace scope, and namespace-scoped groups also
//! by their namespace selector. A pod delta evaluates only the groups the pod
//! was in and the candidate groups for its new labels; a namespace relabel
//! re-evaluates only the groups whose namespace selector may match its old or
//! new labels, over that namespace's pods. Member counts make shared
//! contributions (two pods with one IP, a pod isolated by two policies) come
//! and go correctly, and a set no policy uses any more is removed. Every
//! chain and set a delta may have touched is recorded in a [`Scope`] (sets by
//! the members that changed), so that
//! `ruleset::plan_scoped(current, compiler.ruleset(), &scope)` is the plan.
//!
//! A policy delta rewrites the policy's own chains; its namespace's chain of
//! a direction only when its line there comes, goes or changes set (a
//! change of rules alone leaves it); and `nf-ingress` / `nf-egress` only
//! when its namespace gains its first or loses its last policy of that
//! direction (with its bucket chain and bucket set). No rewrite costs more
//! than the policies of one namespace or the namespaces with policies, and
//! a new bucket set the pods of its namespaces.
//!
//! Pods, groups and sets are handled by small integer ids on the pod path: a
//! pod's key is looked up once per pod delta, and group and set definitions
//! (selectors, strings) are hashed only when policies change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ruleset::{
    BaseChain, CtState, Hook, Iface, IpSet, Match, Member, Neg, Polarity, PortRange,
    Rule as NftRule, Ruleset, Scope, SetDir, SetType, TableId, Target,
};

use crate::error::Error;
use crate::index::{PodIndex, SelectorIndex};
use crate::model::{
    Cluster, Direction, Family, IpBlock, Namespace, NamespaceScope, ObjectKey, Peer, Pod, Policy,
    Port, Protocol, Rule,
};
use crate::selector::{LabelSelector, Labels};

/// How the compiler names and marks what it writes, and which node it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompilerConfig {
    /// Prefix of every chain and set netfence owns: a letter, then letters or digits,
    /// then one `-` (`nf-` by default; see [`Ruleset::new`]).
    pub prefix: String,
    /// The families to enforce, each at most once.
    pub families: Vec<Family>,
    /// This node's name: pods whose `node_name` equals it are local, and only
    /// local pods are isolated (others are enforced by their own node). `None`
    /// makes every pod local, which suits a single-node setup and tests.
    pub node: Option<String>,
    /// Packet mark bits that say "some ingress rule allowed this packet".
    pub ingress_mark: u32,
    /// Packet mark bits that say "some egress rule allowed this packet".
    pub egress_mark: u32,
    /// The built-in `filter` chains that jump to `nf-fw`: `Forward` (the
    /// default, pod-to-pod and pod-to-world traffic), `Input`, `Output`.
    ///
    /// `Output` goes past what Kubernetes asks: it puts the node's own
    /// traffic to its pods under their ingress policies, where upstream says
    /// a pod can't block its resident node. The kubelet's probes come from
    /// the node, so under a default-deny ingress policy they fail unless a
    /// rule admits the node's address (an `ipBlock`).
    pub hooks: Vec<Hook>,
    /// The prefix every pod's host-side interface starts with (`cali` for
    /// Calico's naming): turns anti-spoofing on. Packets in on such an
    /// interface must come from an address the pod on it owns, as its
    /// `netfence.io/host-interface` annotation says. `None`: no anti-spoofing.
    pub pod_interface_prefix: Option<String>,
    /// Up to this many namespaces with policies, `nf-ingress` / `nf-egress`
    /// look each one of their direction up in turn: a new connection makes
    /// about n/2 set lookups to find its namespace. Past it, the n
    /// namespaces are hashed into about √n buckets, each looked up once in a
    /// set of its namespaces' pods, then the namespaces of the one bucket:
    /// about √n lookups. The price is a set member per pod of those
    /// namespaces, so one more ipset message per pod delta; see the module
    /// docs.
    pub dispatch_flat_max: usize,
}

impl Default for CompilerConfig {
    fn default() -> Self {
        CompilerConfig {
            prefix: ruleset::DEFAULT_PREFIX.to_owned(),
            families: Family::ALL.to_vec(),
            node: None,
            ingress_mark: 0x10000,
            egress_mark: 0x20000,
            hooks: vec![Hook::Forward],
            pod_interface_prefix: None,
            dispatch_flat_max: DISPATCH_FLAT_MAX,
        }
    }
}

/// The default [`CompilerConfig::dispatch_flat_max`]. From 7 namespaces on,
/// 2 buckets cost a connection fewer lookups on average than one line per
/// namespace (3.75 against 4: a bucket line, then the namespaces of one
/// bucket); at 6 they cost the same 3.5, and each bucket set holds a member
/// per pod.
pub const DISPATCH_FLAT_MAX: usize = 6;

impl CompilerConfig {
    /// The tables a ruleset of this config has rules in: `filter` of each
    /// family, in the configured order. What to observe, and what a flush
    /// empties.
    pub fn tables(&self) -> Vec<TableId> {
        self.families
            .iter()
            .map(|&f| TableId::filter(nf_family(f)))
            .collect()
    }

    /// Checks the config: a prefix [`Ruleset::new`] accepts, at least one
    /// family and none twice, a non-empty node name, and non-zero marks that
    /// share no bit (a shared bit would let an egress allow pass for an
    /// ingress allow).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, reason: String| Err(Error::Config { field, reason });
        if let Err(e) = Ruleset::new(&self.prefix) {
            return bad("prefix", e.to_string());
        }
        if self.families.is_empty() {
            return bad("families", "no family to enforce".into());
        }
        if self.families.len() == 2 && self.families[0] == self.families[1] {
            return bad("families", format!("{} listed twice", self.families[0]));
        }
        if self.families.len() > 2 {
            return bad("families", "a family is listed twice".into());
        }
        if self.node.as_deref() == Some("") {
            return bad("node", "empty node name (use None for every pod)".into());
        }
        if let Some(p) = &self.pod_interface_prefix {
            if let Err(why) = ruleset::IfName::check(p) {
                return bad("pod_interface_prefix", why.to_owned());
            }
            if p.len() >= ruleset::IfName::MAX {
                return bad(
                    "pod_interface_prefix",
                    "must leave room for at least one more character of a 15-byte name".into(),
                );
            }
        }
        if self.hooks.is_empty() {
            return bad("hooks", "no hook point: nothing would be enforced".into());
        }
        for (i, h) in self.hooks.iter().enumerate() {
            if hook_chain(*h).is_none() {
                return bad(
                    "hooks",
                    format!("{h:?} has no filter chain; use Input, Forward or Output"),
                );
            }
            if self.hooks[..i].contains(h) {
                return bad("hooks", format!("{h:?} listed twice"));
            }
        }
        if self.ingress_mark == 0 {
            return bad("ingress_mark", "must have at least one bit".into());
        }
        if self.egress_mark == 0 {
            return bad("egress_mark", "must have at least one bit".into());
        }
        if self.ingress_mark & self.egress_mark != 0 {
            return bad(
                "egress_mark",
                format!(
                    "{:#x} shares bits with ingress_mark {:#x}",
                    self.egress_mark, self.ingress_mark
                ),
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Keys.

/// Where a group's pods may live. Unlike [`NamespaceScope`] it has `Any`:
/// every pod, even one whose namespace is unknown (the egress named-port
/// set must hold every destination the evaluator would resolve on).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum NsScope {
    Only(String),
    Selected(LabelSelector),
    /// The pods of any of these namespaces: a dispatch bucket. By name, not
    /// by a selector on the name label, so that a pod whose namespace the
    /// model has not seen yet is in its bucket as it is in its namespace set.
    Among(BTreeSet<String>),
    Any,
}

/// A pod-set definition: the unit the index tracks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Group {
    ns: NsScope,
    pods: LabelSelector,
    /// Only pods on this node count: the groups that feed isolation, and
    /// ingress named ports. (Address sets are of groups on every node; see
    /// the module docs.)
    local: bool,
}

impl Group {
    /// Canonical text for set names: equal groups, equal text.
    fn text(&self) -> String {
        let ns = match &self.ns {
            NsScope::Only(n) => format!("only:{n}"),
            NsScope::Selected(s) => format!("sel:{s}"),
            NsScope::Among(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                format!("among:{}", names.join(","))
            }
            NsScope::Any => "any".to_owned(),
        };
        format!("{ns}\n{}\n{}", self.pods, self.local)
    }
}

/// What defines a set's content.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum SetKey {
    /// Local pods isolated in a direction: fed by every group a policy
    /// isolates with, for as long as one does.
    Isolated(Direction, Family),
    /// (address, host interface) of every local pod with a host interface.
    PodSources(Family),
    /// The addresses of a group's pods.
    Ips(Group, Family),
    /// One ipBlock.
    Block(IpBlock),
    /// (address, protocol, port) of a group's pods for a named port: the
    /// destinations that define the name with that protocol.
    Ports(Group, String, Protocol, Family),
}

impl SetKey {
    fn group(&self) -> Option<&Group> {
        match self {
            SetKey::Ips(g, _) | SetKey::Ports(g, ..) => Some(g),
            _ => None,
        }
    }

    fn family(&self) -> Family {
        match self {
            SetKey::Isolated(_, f)
            | SetKey::PodSources(f)
            | SetKey::Ips(_, f)
            | SetKey::Ports(.., f) => *f,
            SetKey::Block(b) => b.family(),
        }
    }

    fn kind(&self) -> SetType {
        match self {
            SetKey::Isolated(..) | SetKey::Ips(..) => SetType::HashIp,
            SetKey::Block(_) => SetType::HashNet,
            SetKey::Ports(..) => SetType::HashIpPort,
            SetKey::PodSources(_) => SetType::HashNetIface,
        }
    }

    fn polarity(&self) -> Polarity {
        match self {
            // More isolated pods only means more drops.
            SetKey::Isolated(..) => Polarity::Restricts,
            // Every other set feeds a line that marks "allowed".
            _ => Polarity::Grants,
        }
    }

    /// The set's kernel name. Content-addressed: 16 characters of SHA-256
    /// (borrowed from the ruleset's own long-name hashing, which hashes any
    /// name starting with `_`) over the defining content, then a tag for
    /// readers and the family: `nf-<hash>.p4`.
    ///
    /// The hash comes straight after the prefix because the kernel finds a
    /// set named in an ADD or DEL by `strncmp` against every set slot before
    /// it (`find_set_and_id()`), and each comparison runs to the first byte
    /// that differs. Behind a shared `nf-p4_` that was the seventh byte of
    /// every comparison; now it is the fourth, and a message to the set in
    /// slot 1,999 of 2,000 takes 22.0 µs instead of 27.0 (`ipset/bound`).
    fn name(&self, rs: &Ruleset) -> String {
        let fam = fam_digit(self.family());
        let (tag, content) = match self {
            SetKey::Isolated(d, _) => {
                let d = match d {
                    Direction::Ingress => "in",
                    Direction::Egress => "eg",
                };
                return rs.set_name(&format!("iso-{d}{fam}"));
            }
            SetKey::PodSources(_) => return rs.set_name(&format!("podsrc{fam}")),
            SetKey::Ips(g, _) => {
                debug_assert!(!g.local, "address sets are of pods on every node");
                ('p', g.text())
            }
            SetKey::Block(b) => {
                let except: Vec<String> = b.except.iter().map(|e| e.to_string()).collect();
                ('b', format!("{}\n{}", b.cidr, except.join(",")))
            }
            SetKey::Ports(g, name, proto, _) => ('n', format!("{name}/{proto}\n{}", g.text())),
        };
        let hashed = rs.set_name(&format!("_{tag}{fam}\n{content}"));
        let digest = &hashed[rs.prefix().len() + 1..];
        format!(
            "{}{}.{tag}{fam}",
            rs.prefix(),
            &digest[..digest.len().min(16)]
        )
    }
}

/// Where a direction finds the pod a policy isolates: the destination of
/// ingress, the source of egress.
fn pod_dir(d: Direction) -> SetDir {
    match d {
        Direction::Ingress => SetDir::Dst,
        Direction::Egress => SetDir::Src,
    }
}

/// The last line of a dispatch chain: what no policy marked as allowed in
/// the direction of `mark` is dropped.
fn unmarked_drop(mark: u32) -> NftRule {
    let mut drop = NftRule::new(Target::Drop);
    drop.matches.push(Match::Mark {
        negate: false,
        value: 0,
        mask: mark,
    });
    drop
}

fn fam_digit(f: Family) -> char {
    match f {
        Family::Ipv4 => '4',
        Family::Ipv6 => '6',
    }
}

fn nf_family(f: Family) -> ruleset::Family {
    match f {
        Family::Ipv4 => ruleset::Family::Ipv4,
        Family::Ipv6 => ruleset::Family::Ipv6,
    }
}

fn nft_protocol(p: Protocol) -> ruleset::Protocol {
    match p {
        Protocol::Tcp => ruleset::Protocol::Tcp,
        Protocol::Udp => ruleset::Protocol::Udp,
        Protocol::Sctp => ruleset::Protocol::Sctp,
    }
}

/// One reference a policy holds: a set, and for isolation the group that
/// feeds it on the policy's behalf.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Use {
    set: SetKey,
    feeder: Option<Group>,
}

impl Use {
    fn group(&self) -> Option<&Group> {
        self.feeder.as_ref().or_else(|| self.set.group())
    }
}

// ---------------------------------------------------------------------------
// State.

/// A live group's slot in [`Compiler`]'s group slab. The pod path handles
/// groups by id only: a [`Group`] hashes and compares its whole selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct GroupId(u32);

/// A live set's slot in [`Compiler`]'s set slab; see [`GroupId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SetId(u32);

/// A pod's slot in [`Compiler`]'s pod slab, for as long as the pod is in the
/// cluster. Groups hold their members by id: a pod is in dozens of groups,
/// and by key each membership cost a copy of two strings, and each use of
/// it a search by string compares and a lookup of the pod by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PodId(u32);

/// An id into a [`Slab`].
trait SlabId: Copy {
    fn from_slot(slot: u32) -> Self;
    fn slot(self) -> usize;
}

impl SlabId for GroupId {
    fn from_slot(slot: u32) -> Self {
        GroupId(slot)
    }
    fn slot(self) -> usize {
        self.0 as usize
    }
}

impl SlabId for SetId {
    fn from_slot(slot: u32) -> Self {
        SetId(slot)
    }
    fn slot(self) -> usize {
        self.0 as usize
    }
}

impl SlabId for PodId {
    fn from_slot(slot: u32) -> Self {
        PodId(slot)
    }
    fn slot(self) -> usize {
        self.0 as usize
    }
}

/// Values by small integer id. Freed ids are reused, so ids stay dense and
/// the slab as large as the most values alive at once. Indexing a freed id
/// panics: nothing may hold one (a set goes only once no group feeds it, a
/// group only once no policy uses it).
#[derive(Debug)]
struct Slab<I, T> {
    slots: Vec<Option<T>>,
    free: Vec<I>,
}

impl<I: SlabId, T> Slab<I, T> {
    fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    fn insert(&mut self, value: T) -> I {
        match self.free.pop() {
            Some(id) => {
                self.slots[id.slot()] = Some(value);
                id
            }
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 ids");
                self.slots.push(Some(value));
                I::from_slot(slot)
            }
        }
    }

    fn get_mut(&mut self, id: I) -> Option<&mut T> {
        self.slots.get_mut(id.slot())?.as_mut()
    }

    fn remove(&mut self, id: I) -> Option<T> {
        let value = self.slots.get_mut(id.slot())?.take();
        if value.is_some() {
            self.free.push(id);
        }
        value
    }
}

impl<I: SlabId, T> std::ops::Index<I> for Slab<I, T> {
    type Output = T;
    fn index(&self, id: I) -> &T {
        self.slots[id.slot()].as_ref().expect("live slab id")
    }
}

impl<I: SlabId, T> std::ops::IndexMut<I> for Slab<I, T> {
    fn index_mut(&mut self, id: I) -> &mut T {
        self.slots[id.slot()].as_mut().expect("live slab id")
    }
}

#[derive(Debug)]
struct GroupState {
    /// What the group is; the key of [`Compiler::group_ids`].
    def: Group,
    /// Pods in the group now (a pod without an address still counts, and
    /// contributes once it has one).
    members: BTreeSet<PodId>,
    /// The sets this group feeds, with how many uses ask for each. Few (one
    /// per family and kind of use), so a scan beats a map.
    feeds: Vec<(SetId, usize)>,
}

#[derive(Debug)]
struct SetState {
    /// What defines the content; the key of [`Compiler::set_ids`].
    key: SetKey,
    name: String,
    /// Policy uses; the set goes when it drops to zero (isolation sets stay).
    uses: usize,
    /// How many contributions each member has. Every pod delta counts a
    /// member in each of its sets; with std's SipHash here the compiler's
    /// 1,000-delta bursts took 7 to 12% longer (`benches/compile.rs`).
    /// foldhash is still seeded at random per process, and members are
    /// addresses the cluster's IPAM hands out. The maps keyed by names and
    /// selectors, which users choose, keep SipHash.
    counts: Counts,
    /// Members whose presence changed since the scope last took them, in
    /// no order and possibly repeated: see [`Compiler::touched`].
    touched: Vec<Member>,
    /// How many distinct members `touched` held when last deduplicated.
    touched_kept: usize,
}

impl SetState {
    /// A set with no use and no member yet.
    fn new(key: SetKey, name: String) -> Self {
        Self {
            key,
            name,
            uses: 0,
            counts: Counts::default(),
            touched: Vec::new(),
            touched_kept: 0,
        }
    }

    /// Counts one contribution of `m` (`delta` 1) or takes one back (-1).
    /// True when that makes `m` come or go: its count left or reached zero.
    fn count(&mut self, m: Member, delta: i32) -> bool {
        match m {
            Member::Ip(IpAddr::V4(a)) => count_in(&mut self.counts.ip4, a, delta),
            Member::Ip(IpAddr::V6(a)) => count_in(&mut self.counts.ip6, a, delta),
            m => count_in(&mut self.counts.other, m, delta),
        }
    }

    /// Notes for the scope that `m`, of set `id`, came or went; `touched`
    /// is [`Compiler::touched`].
    fn touch(&mut self, id: SetId, m: Member, touched: &mut Vec<SetId>) {
        if self.touched.is_empty() {
            touched.push(id);
            self.touched_kept = 0;
        }
        if self.touched.len() >= 64 && self.touched.len() >= 2 * self.touched_kept {
            // A caller that never takes the scope must not grow this without
            // bound: a member flipping back and forth is kept once.
            self.touched.sort_unstable();
            self.touched.dedup();
            self.touched_kept = self.touched.len();
        }
        self.touched.push(m);
    }
}

/// A set's member counts, kept by the member's kind: nearly every member is a
/// pod address, which as a [`Member`] key with its count takes 44 bytes, and
/// as an IPv4 address 8. At 10,000 pods and 1,000 policies the counts hold
/// about 110,000 members per family; smaller entries also mean fewer cache
/// lines for the lookup that every pod delta makes in each of its sets.
#[derive(Debug, Default)]
struct Counts {
    ip4: foldhash::HashMap<Ipv4Addr, u32>,
    ip6: foldhash::HashMap<Ipv6Addr, u32>,
    /// Networks, (address, port) and (network, interface) members.
    other: foldhash::HashMap<Member, u32>,
}

impl Counts {
    fn contains(&self, m: &Member) -> bool {
        match m {
            Member::Ip(IpAddr::V4(a)) => self.ip4.contains_key(a),
            Member::Ip(IpAddr::V6(a)) => self.ip6.contains_key(a),
            m => self.other.contains_key(m),
        }
    }
}

/// [`SetState::count`] in one of [`Counts`]' maps. One lookup whichever way
/// it goes: every pod delta counts a member in each of its sets, and the
/// count that drops to zero is the common case of a pod leaving.
fn count_in<K: std::hash::Hash + Eq>(
    counts: &mut foldhash::HashMap<K, u32>,
    k: K,
    delta: i32,
) -> bool {
    use std::collections::hash_map::Entry;
    match counts.entry(k) {
        Entry::Occupied(mut e) => {
            let after = e.get().saturating_add_signed(delta);
            if after == 0 {
                e.remove();
                true
            } else {
                *e.get_mut() = after;
                false
            }
        }
        Entry::Vacant(e) => {
            let after = 0u32.saturating_add_signed(delta);
            if after > 0 {
                e.insert(after);
            }
            after > 0
        }
    }
}

/// The line a policy adds, for one family and direction, to its namespace's
/// chain of that direction: "the packet's pod is in `set`: go through `chain`".
#[derive(Clone, Debug, PartialEq, Eq)]
struct Dispatch {
    family: Family,
    dir: Direction,
    /// The selected set; `None` when the policy selects every pod of its
    /// namespace, which reaching the namespace's chain has already shown.
    set: Option<String>,
    /// The policy's chain of this direction.
    chain: String,
}

/// A pod of the cluster, in the compiler's pod slab.
#[derive(Debug)]
struct PodSlot {
    /// The pod as it is now (the cluster's own `Arc`).
    pod: Arc<Pod>,
    /// The groups it is in, sorted: one look tells a pod delta every group
    /// the pod leaves or stays in, where asking each candidate group would
    /// cost a search of its members per candidate.
    groups: Vec<GroupId>,
}

/// What the compiler remembers of a compiled policy.
#[derive(Debug)]
struct PolicyState {
    uses: BTreeSet<Use>,
    /// Chains it owns, per table.
    chains: BTreeSet<(TableId, String)>,
    /// Its lines in its namespace's chains.
    dispatch: Vec<Dispatch>,
}

/// A compiled policy, before it touches the state.
struct Compiled {
    uses: BTreeSet<Use>,
    chains: BTreeMap<(TableId, String), Vec<NftRule>>,
    dispatch: Vec<Dispatch>,
}

/// What the compiler let go of while it kept its garbage
/// ([`Compiler::keep_garbage`]): freed when this value is dropped.
///
/// A burst frees thousands of objects (replaced pods and policies, their
/// chains' rules, sets and groups no policy uses any more), each of many
/// allocations. The sync engine frees them after the commit's completions
/// fire, so that no waiter waits on the allocator.
#[derive(Default)]
pub struct Garbage {
    pods: Vec<Arc<Pod>>,
    namespaces: Vec<Arc<Namespace>>,
    policies: Vec<Arc<Policy>>,
    policy_states: Vec<PolicyState>,
    chains: Vec<ruleset::Chain>,
    sets: Vec<IpSet>,
    set_states: Vec<SetState>,
    groups: Vec<GroupState>,
}

impl Garbage {
    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
            && self.namespaces.is_empty()
            && self.policies.is_empty()
            && self.policy_states.is_empty()
            && self.chains.is_empty()
            && self.sets.is_empty()
            && self.set_states.is_empty()
            && self.groups.is_empty()
    }
}

impl std::fmt::Debug for Garbage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Garbage")
            .field("pods", &self.pods.len())
            .field("policies", &self.policies.len())
            .field("chains", &self.chains.len())
            .field("sets", &self.sets.len())
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

/// The two directions, as an index into per-direction arrays.
fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// The group of every pod of namespace `ns`, on any node: what a
/// namespace's dispatch line looks up, the selection of a policy whose pod
/// selector is empty, and a same-namespace peer `podSelector: {}`, all one
/// set (see the module docs for why remote pods may be in it).
fn namespace_group(ns: &str) -> Group {
    Group {
        ns: NsScope::Only(ns.to_owned()),
        pods: LabelSelector::everything(),
        local: false,
    }
}

/// The compiler: its own copy of the [`Cluster`], the desired [`Ruleset`]
/// for it, and the index that keeps the two in step delta by delta.
///
/// Pod, namespace and policy deltas update it in place; read the result
/// with [`Compiler::ruleset`] and what changed with [`Compiler::take_scope`].
#[derive(Debug)]
pub struct Compiler {
    config: CompilerConfig,
    cluster: Cluster,
    rs: Ruleset,
    scope: Scope,
    /// The sets with [`SetState::touched`] members not yet in the scope.
    /// A pod delta changes a member in each of tens of sets; recording
    /// each in the scope looked the set up there by name, which was a
    /// third of the cost of counting members in a burst. The members go
    /// to the scope, one lookup per set, when it is taken.
    touched: Vec<SetId>,
    /// Whether members were counted in or out while dispatch was held and
    /// not yet put into the ruleset's copies of their sets. While held (a
    /// burst), a member whose count comes or goes is put later, all of a
    /// set's at once, from the set's [`SetState::touched`] list, which holds
    /// every such member. The 1,000-delta burst of `benches/compile.rs` at
    /// 10,000 pods counts about 9,700 members in and out of about a thousand
    /// sets, and a lookup by name in the ruleset's thousands of sets is a few
    /// cache misses each. Settling and taking either scope put them.
    unput: bool,
    groups: Slab<GroupId, GroupState>,
    /// The id of every live group: looked up when policies change, never
    /// on the pod path.
    group_ids: HashMap<Group, GroupId>,
    sets: Slab<SetId, SetState>,
    /// The id of every live set, like [`Self::group_ids`].
    set_ids: HashMap<SetKey, SetId>,
    /// The anti-spoofing sets, in family order (none without a pod
    /// interface prefix).
    spoof: Vec<SetId>,
    /// Groups of scope `Only(ns)`, by namespace, indexed by pod selector.
    only: HashMap<String, SelectorIndex<GroupId>>,
    /// Groups of scope `Selected`, indexed by pod selector.
    selected: SelectorIndex<GroupId>,
    /// Groups of scope `Any`, indexed by pod selector.
    any: SelectorIndex<GroupId>,
    /// Groups of scope `Selected`, indexed by namespace selector.
    by_namespace: SelectorIndex<GroupId>,
    /// The cluster's pods, by id.
    pods: Slab<PodId, PodSlot>,
    /// The id of every pod of the cluster: looked up once per pod delta.
    pod_ids: HashMap<ObjectKey, PodId>,
    /// The cluster's pods by namespace and label, for new groups to find
    /// their members in.
    pod_index: PodIndex<PodId>,
    policies: BTreeMap<ObjectKey, PolicyState>,
    /// Scratch of [`Self::pod_changed`], kept for its allocation:
    /// (group, was in, is in).
    moves: Vec<(GroupId, bool, bool)>,
    /// The namespaces with a line in `nf-ingress` (index 0) and `nf-egress`
    /// (1): those with at least one policy of that direction.
    dispatching: [BTreeSet<String>; 2],
    /// Namespace chains whose lines may have changed since the last
    /// [`Self::flush_dispatch`].
    stale_ns: BTreeSet<(String, Direction)>,
    /// Whether `nf-ingress` (0) / `nf-egress` (1) must be rewritten.
    stale_top: [bool; 2],
    /// Whether policy deltas leave their dispatch rewrites to
    /// [`Compiler::settle`] ([`Compiler::hold_dispatch`]).
    held: bool,
    /// The selector chains of each namespace chain, ingress (0) and egress
    /// (1), per table: what the next rewrite of that namespace chain removes
    /// if its grouping no longer needs them.
    selector_chains: [HashMap<String, Vec<(TableId, String)>>; 2],
    /// What the compiler let go of, while [`Compiler::keep_garbage`] is on.
    garbage: Option<Garbage>,
    /// The dispatch buckets of the namespaces with a policy of either
    /// direction: (bucket, its namespaces), in bucket order; empty while
    /// dispatch is flat.
    buckets: Vec<(usize, Vec<String>)>,
    /// The bucket sets `nf-ingress` and `nf-egress` look up, held on the
    /// dispatch's behalf (no policy names them).
    bucket_uses: Vec<Use>,
    /// The bucket chains of `nf-ingress` (0) and `nf-egress` (1), in every
    /// table: what the next rewrite removes if it no longer needs them.
    bucket_chains: [Vec<String>; 2],
}

/// The logical name of `nf-ingress` / `nf-egress`, and the stem of their
/// bucket chains.
fn dispatch_tag(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// The lines namespace `ns`'s policies put in its chain of direction `d`: what
/// decides whether the namespace has a line in `nf-ingress` / `nf-egress`, and
/// what that chain holds. A free function so that callers may change other
/// fields of the compiler meanwhile.
fn dispatch_lines<'a>(
    policies: &'a BTreeMap<ObjectKey, PolicyState>,
    ns: &'a str,
    d: Direction,
) -> impl Iterator<Item = &'a Dispatch> + 'a {
    policies
        .range(ObjectKey::new(ns, "")..)
        .take_while(move |(k, _)| k.namespace == ns)
        .flat_map(move |(_, p)| p.dispatch.iter().filter(move |l| l.dir == d))
}

/// A line of `nf-ingress` / `nf-egress` or of a bucket chain: packets whose
/// pod (of direction `d`) is in `set` go to `chain`.
fn pods_goto(set: String, d: Direction, chain: &str) -> NftRule {
    let mut r = NftRule::new(Target::Goto(chain.to_owned()));
    r.matches.push(Match::Set {
        negate: false,
        name: set,
        dirs: vec![pod_dir(d)],
    });
    r
}

/// The group of the pods of the namespaces of one dispatch bucket.
fn bucket_group(names: &[String]) -> Group {
    Group {
        ns: NsScope::Among(names.iter().cloned().collect()),
        pods: LabelSelector::everything(),
        local: false,
    }
}

/// How many buckets `n` namespaces with policies are hashed into: none (one
/// line each) up to `flat_max`, then the greatest power of two whose square
/// is at most `n`, so that finding a namespace costs about √n/2 lookups of
/// buckets and √n/2 to 2√n of namespaces in one bucket. A power of two, so
/// that the count changes only when `n` crosses a power of four, and a
/// bucket then splits in two.
fn bucket_count(n: usize, flat_max: usize) -> Option<usize> {
    if n <= flat_max {
        return None;
    }
    let mut g = 1usize;
    while (2 * g).saturating_mul(2 * g) <= n {
        g *= 2;
    }
    Some(g)
}

/// Namespace `ns`'s bucket of `count` (a power of two). FNV-1a: the bucket
/// must not change from one run (or build) to the next, or a restarted engine
/// would rewrite the dispatch it adopts.
fn bucket_of(ns: &str, count: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ns.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The high half: FNV's low bits mix least.
    ((h >> 32) as usize) & (count - 1)
}

/// A line of a namespace or selector chain: to `target` while no policy
/// has allowed the packet (once one has, the other policies' set lookups
/// are skipped), and, with `set`, only for the pods in it.
fn dispatch_line(mark: u32, set: Option<&String>, d: Direction, target: &str) -> NftRule {
    let mut r = NftRule::new(Target::Jump(target.to_owned()));
    r.matches.push(Match::Mark {
        negate: false,
        value: 0,
        mask: mark,
    });
    if let Some(set) = set {
        r.matches.push(Match::Set {
            negate: false,
            name: set.clone(),
            dirs: vec![pod_dir(d)],
        });
    }
    r
}

/// The built-in `filter` chain of a hook, for the hooks netfence can use.
fn hook_chain(h: Hook) -> Option<&'static str> {
    match h {
        Hook::Input => Some("INPUT"),
        Hook::Forward => Some("FORWARD"),
        Hook::Output => Some("OUTPUT"),
        Hook::Prerouting | Hook::Postrouting => None,
    }
}

impl Compiler {
    /// A compiler for an empty cluster: its ruleset is the skeleton (the
    /// `FORWARD` jump, `nf-fw`, the dispatch chains, the empty isolation
    /// sets), all of it in the scope.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn new(config: CompilerConfig) -> Result<Compiler, Error> {
        config.validate()?;
        let rs = Ruleset::new(&config.prefix).map_err(|source| Error::Compile {
            what: "the skeleton".into(),
            reason: source.to_string(),
        })?;
        let mut c = Compiler {
            config,
            cluster: Cluster::new(),
            rs,
            scope: Scope::default(),
            touched: Vec::new(),
            unput: false,
            groups: Slab::new(),
            group_ids: HashMap::new(),
            sets: Slab::new(),
            set_ids: HashMap::new(),
            spoof: Vec::new(),
            only: HashMap::new(),
            selected: SelectorIndex::new(),
            any: SelectorIndex::new(),
            by_namespace: SelectorIndex::new(),
            pods: Slab::new(),
            pod_ids: HashMap::new(),
            pod_index: PodIndex::new(),
            policies: BTreeMap::new(),
            moves: Vec::new(),
            dispatching: [BTreeSet::new(), BTreeSet::new()],
            selector_chains: [HashMap::new(), HashMap::new()],
            stale_ns: BTreeSet::new(),
            // The skeleton writes both, with only their final drop.
            stale_top: [true, true],
            held: false,
            garbage: None,
            buckets: Vec::new(),
            bucket_uses: Vec::new(),
            bucket_chains: [Vec::new(), Vec::new()],
        };
        c.skeleton().map_err(|source| Error::Compile {
            what: "the skeleton".into(),
            reason: source.to_string(),
        })?;
        Ok(c)
    }

    /// The config.
    pub fn config(&self) -> &CompilerConfig {
        &self.config
    }

    /// The compiler's copy of the cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The desired ruleset for the cluster.
    ///
    /// While dispatch is held ([`Self::hold_dispatch`]), the namespace
    /// dispatch chains may still send packets to the chains of policies
    /// deleted since: [`Self::settle`] first.
    pub fn ruleset(&self) -> &Ruleset {
        debug_assert!(!self.held, "read the ruleset after settle()");
        &self.rs
    }

    /// The desired ruleset whether or not dispatch is held, for reading its
    /// sets. While dispatch is held its chains are not complete until
    /// [`Self::settle`], and its sets not until [`Self::take_set_scope`]
    /// (which puts the members the held deltas counted; settling rewrites
    /// chains only). After `take_set_scope`, what
    /// `ruleset::plan_sets_scoped` needs.
    pub fn unsettled_ruleset(&self) -> &Ruleset {
        &self.rs
    }

    /// The chains and sets touched since the last call: what to hand to
    /// `ruleset::plan_scoped` against the state the last plan produced.
    ///
    /// While dispatch is held it lacks the dispatch chains still to be
    /// rewritten: [`Self::settle`] first.
    pub fn take_scope(&mut self) -> Scope {
        debug_assert!(!self.held, "take the scope after settle()");
        self.gather_members();
        std::mem::take(&mut self.scope)
    }

    /// The sets and members of [`Self::take_scope`] alone, leaving its chains for the
    /// next `take_scope`. Unlike `take_scope`, it may be called while dispatch is held:
    /// after [`Self::settle_sets`], settling rewrites chains only, so the sets are
    /// complete already. The sync engine
    /// plans the sets from this and sends their first phase to the kernel while it
    /// settles and plans the chains on another thread.
    pub fn take_set_scope(&mut self) -> Scope {
        self.gather_members();
        Scope {
            sets: std::mem::take(&mut self.scope.sets),
            members: std::mem::take(&mut self.scope.members),
            ..Scope::default()
        }
    }

    /// Moves the members each set noted as touched into the scope.
    fn gather_members(&mut self) {
        self.put_held();
        let mut gathered = Vec::with_capacity(self.touched.len());
        for id in std::mem::take(&mut self.touched) {
            // A set removed since has its name in the scope's whole sets;
            // a slot reused by a new set is new, so whole as well.
            let Some(s) = self.sets.get_mut(id) else {
                continue;
            };
            let mut members = std::mem::take(&mut s.touched);
            if members.is_empty() || self.scope.sets.contains(&s.name) {
                continue;
            }
            members.sort_unstable();
            members.dedup();
            gathered.push((s.name.clone(), members));
        }
        // Live sets have distinct names, so the map keeps every list. A burst's
        // thousand sets are built into it in one go, not inserted by name one
        // by one, and the merge then keeps the larger of the two maps.
        self.scope.merge(Scope {
            members: gathered.into_iter().collect(),
            ..Scope::default()
        });
    }

    /// Puts the members counted while dispatch was held into the ruleset's
    /// copies of their sets, each set looked up once. The count decides, not
    /// the order of the touches: a member may be touched twice, and a
    /// group's whole contribution ([`Self::contribute_members`]) is put at
    /// once, in between. Members put already are put again, which changes
    /// nothing.
    fn put_held(&mut self) {
        if !std::mem::take(&mut self.unput) {
            return;
        }
        let Compiler {
            touched, sets, rs, ..
        } = self;
        for &id in touched.iter() {
            // A set removed since went with its members.
            let Some(s) = sets.get_mut(id) else {
                continue;
            };
            let mut target = rs.set_mut(&s.name);
            for m in &s.touched {
                let delta = if s.counts.contains(m) { 1 } else { -1 };
                put(target.as_deref_mut(), *m, delta);
            }
        }
    }

    /// Keeps what the compiler lets go of (replaced pods and policies, the
    /// rules of rewritten chains, sets and groups no policy uses any more)
    /// until [`Self::take_garbage`], instead of freeing it at once; `false`
    /// frees what is kept and stops keeping. For a caller with waiters to
    /// tell first: freeing a 1,000-delta burst's garbage is milliseconds of
    /// work for the allocator.
    pub fn keep_garbage(&mut self, keep: bool) {
        if keep {
            self.garbage.get_or_insert_with(Garbage::default);
        } else {
            self.garbage = None;
        }
    }

    /// What was let go of since the last call, while keeping was on (empty
    /// otherwise). Dropping it frees it.
    pub fn take_garbage(&mut self) -> Garbage {
        self.garbage
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Holds back, until [`Self::settle`], the rewrite of the namespace
    /// dispatch chains (and of `nf-ingress` / `nf-egress`) that each policy
    /// delta otherwise does at once.
    ///
    /// A namespace's chain has a line per policy of the namespace, and a
    /// policy delta rewrites all of them: a burst of policy deltas in a
    /// namespace of a hundred policies rewrote a hundred lines per delta, and
    /// that was a third of the compiler's time in the 1,000-policy burst of
    /// `benches/compile.rs`. Held, each stale chain is rewritten once per
    /// burst, and the members pod deltas add to or take from sets go into
    /// the ruleset a set at a time when the burst's scope is taken (see
    /// [`Self::unsettled_ruleset`]). For a caller that applies a burst of
    /// deltas and only then reads the ruleset, as the sync engine does.
    pub fn hold_dispatch(&mut self) {
        self.held = true;
    }

    /// Rewrites the dispatch chains that the policy deltas since
    /// [`Self::hold_dispatch`] left stale, and stops holding. The ruleset and
    /// the scope are then complete. A no-op when nothing is held.
    ///
    /// # Errors
    /// [`Error::Compile`] on a compiler bug. The compiler stops holding
    /// either way, but its ruleset is then incomplete: compile the cluster
    /// again.
    pub fn settle(&mut self) -> Result<(), Error> {
        self.put_held();
        if !std::mem::take(&mut self.held) {
            return Ok(());
        }
        self.flush_dispatch().map_err(|source| Error::Compile {
            what: "the dispatch chains".into(),
            reason: source.to_string(),
        })
    }

    /// Brings the sets the dispatch chains look up (the bucket sets of
    /// `nf-ingress` / `nf-egress`) up to date with the policy deltas held
    /// since [`Self::hold_dispatch`], and keeps holding the chains. After
    /// it, [`Self::settle`] rewrites chains only, so that
    /// [`Self::take_set_scope`] holds every set change of the burst. A no-op
    /// when no namespace gained its first or lost its last policy of a
    /// direction; `settle` does it too.
    ///
    /// # Errors
    /// [`Error::Compile`] on a compiler bug; compile the cluster again.
    pub fn settle_sets(&mut self) -> Result<(), Error> {
        self.refresh_dispatch_sets()
            .map_err(|source| Error::Compile {
                what: "the dispatch sets".into(),
                reason: source.to_string(),
            })
    }

    /// Compiles `cluster` from scratch, replacing everything the compiler
    /// held. The scope then holds every chain and set, old and new.
    ///
    /// # Errors
    /// [`Error::Compile`] on a compiler bug.
    pub fn compile(&mut self, cluster: &Cluster) -> Result<&Ruleset, Error> {
        // What deltas touched since the last `take_scope` stays in the scope: a chain or
        // set they removed is in neither ruleset below, and a scoped plan would
        // otherwise leave it in the kernel for good.
        self.gather_members();
        let untaken = std::mem::take(&mut self.scope);
        let mut old = self.rs.owned_chains();
        let old_sets: Vec<String> = self.rs.sets().keys().cloned().collect();
        let mut fresh = Compiler::new(self.config.clone())?;
        // Pods and namespaces need no work while no group exists: each policy
        // then scans the pods its groups can hold, once per group.
        fresh.cluster = cluster.clone();
        for pod in cluster.pods() {
            fresh.new_pod(pod.clone());
            fresh.spoof_changed(None, Some(pod));
        }
        for p in cluster.policies() {
            fresh.policy_changed(p.key(), Some(p.clone()), false)?;
        }
        fresh.flush_dispatch().map_err(|source| Error::Compile {
            what: "the dispatch chains".into(),
            reason: source.to_string(),
        })?;
        old.extend(fresh.rs.owned_chains());
        let mut scope = Scope::default();
        for (t, c) in &old {
            scope.chain(t, c);
        }
        for (_, t) in fresh.tables() {
            for chain in fresh.hook_chains() {
                scope.chain(&t, chain);
            }
        }
        for s in old_sets.iter().chain(fresh.rs.sets().keys()) {
            scope.set(s);
        }
        scope.merge(untaken);
        fresh.scope = scope;
        // Every set is whole in that scope: no member needs naming.
        for id in std::mem::take(&mut fresh.touched) {
            if let Some(s) = fresh.sets.get_mut(id) {
                s.touched = Vec::new();
            }
        }
        // Whoever held dispatch still settles: the hold spans the compile.
        fresh.held = self.held;
        fresh.garbage = self.garbage.take();
        *self = fresh;
        Ok(&self.rs)
    }

    // -- deltas -------------------------------------------------------------

    /// Inserts or replaces a pod. Changes set members only.
    pub fn upsert_pod(&mut self, pod: impl Into<Arc<Pod>>) {
        let pod = pod.into();
        let old = self.cluster.upsert_pod(pod.clone());
        let id = match &old {
            Some(old) => {
                let id = self.pod_ids[&pod.key()];
                // Most updates change an address or a port, not the labels the
                // index files by: refiling would unfile and refile every label.
                if old.labels != pod.labels {
                    self.pod_index.remove(old, id);
                    self.pod_index.insert(&pod, id);
                }
                self.pods[id].pod = pod.clone();
                id
            }
            None => self.new_pod(pod.clone()),
        };
        self.pod_changed(id, old.as_deref(), Some(&pod));
        if let (Some(g), Some(old)) = (&mut self.garbage, old) {
            g.pods.push(old);
        }
    }

    /// Removes a pod. Changes set members only.
    pub fn delete_pod(&mut self, key: &ObjectKey) {
        if let Some(old) = self.cluster.delete_pod(key) {
            let id = self.pod_ids.remove(key).expect("every pod has an id");
            self.pod_index.remove(&old, id);
            self.pod_changed(id, Some(&old), None);
            let slot = self.pods.remove(id);
            debug_assert!(slot.as_ref().is_some_and(|s| s.groups.is_empty()));
            if let Some(g) = &mut self.garbage {
                g.pods.push(old);
                g.pods.extend(slot.map(|s| s.pod));
            }
        }
    }

    /// Lets go of a chain's old rules (see [`Self::keep_garbage`]).
    fn discard_chain(&mut self, chain: Option<ruleset::Chain>) {
        if let (Some(g), Some(c)) = (&mut self.garbage, chain) {
            g.chains.push(c);
        }
    }

    /// Gives a pod new to the cluster its id, in no group yet.
    fn new_pod(&mut self, pod: Arc<Pod>) -> PodId {
        let id = self.pods.insert(PodSlot {
            pod: pod.clone(),
            groups: Vec::new(),
        });
        self.pod_index.insert(&pod, id);
        self.pod_ids.insert(pod.key(), id);
        id
    }

    /// Inserts or replaces a namespace. Changes set members only.
    pub fn upsert_namespace(&mut self, ns: impl Into<Arc<Namespace>>) {
        let ns = ns.into();
        let old = self.cluster.upsert_namespace(ns.clone());
        self.namespace_changed(&ns.name, old.as_ref().map(|o| &o.labels), Some(&ns.labels));
        if let (Some(g), Some(old)) = (&mut self.garbage, old) {
            g.namespaces.push(old);
        }
    }

    /// Removes a namespace (its pods stay until their own deletions arrive,
    /// matching no namespace selector meanwhile). Changes set members only.
    pub fn delete_namespace(&mut self, name: &str) {
        if let Some(old) = self.cluster.delete_namespace(name) {
            self.namespace_changed(name, Some(&old.labels), None);
            if let Some(g) = &mut self.garbage {
                g.namespaces.push(old);
            }
        }
    }

    /// Inserts or replaces a policy: rewrites its chains, its namespace's
    /// dispatch chains when its lines there change (and `nf-ingress` /
    /// `nf-egress` when the namespace gains its first policy of a
    /// direction), and creates or drops the sets it starts or stops using.
    /// The dispatch rewrites wait for [`Self::settle`] while dispatch is held.
    ///
    /// # Errors
    /// [`Error::Compile`] on a compiler bug.
    pub fn upsert_policy(&mut self, policy: impl Into<Arc<Policy>>) -> Result<(), Error> {
        let policy = policy.into();
        let old = self.cluster.upsert_policy(policy.clone());
        if let (Some(g), Some(old)) = (&mut self.garbage, old) {
            g.policies.push(old);
        }
        self.policy_changed(policy.key(), Some(policy), !self.held)
    }

    /// Removes a policy, its chains, its dispatch lines (with its namespace's
    /// chain and line of a direction when it was the namespace's last policy
    /// of that direction), and the sets only it used. The dispatch rewrites
    /// wait for [`Self::settle`] while dispatch is held.
    ///
    /// # Errors
    /// [`Error::Compile`] on a compiler bug.
    pub fn delete_policy(&mut self, key: &ObjectKey) -> Result<(), Error> {
        let old = self.cluster.delete_policy(key);
        if let (Some(g), Some(old)) = (&mut self.garbage, old) {
            g.policies.push(old);
        }
        self.policy_changed(key.clone(), None, !self.held)
    }

    // -- skeleton -----------------------------------------------------------

    fn tables(&self) -> impl Iterator<Item = (Family, TableId)> + '_ {
        self.config
            .families
            .iter()
            .map(|&f| (f, TableId::filter(nf_family(f))))
    }

    fn hook_chains(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.config.hooks.iter().filter_map(|h| hook_chain(*h))
    }

    fn fw(&self) -> String {
        self.rs.chain_name("fw")
    }

    fn dispatch_chain(&self, d: Direction) -> String {
        self.rs.chain_name(dispatch_tag(d))
    }

    /// The chain of bucket `k` of `nf-ingress` / `nf-egress`: `ingress-<k>`,
    /// which no namespace chain (`in-<N>`) or policy chain (`i-<N>.<P>`) can
    /// be.
    fn bucket_chain(&self, d: Direction, k: usize) -> String {
        self.rs.chain_name(&format!("{}-{k}", dispatch_tag(d)))
    }

    /// The dispatch chain of namespace `ns` for direction `d`. Namespace
    /// names run to 63 characters, so long ones are hashed (see
    /// [`Ruleset::chain_name`]); the logical name has no '.', so it can't be
    /// a policy chain's (see [`Self::policy_chain`]), and starts `in-` /
    /// `eg-`, never `i-` / `e-`.
    fn namespace_chain(&self, ns: &str, d: Direction) -> String {
        let tag = match d {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        };
        self.rs.chain_name(&format!("{tag}-{ns}"))
    }

    /// The chain of the policies of namespace `ns` that select with `set`
    /// in direction `d`. A `:` is in neither namespace nor policy names, so
    /// the name can't be another namespace's or policy's chain.
    fn selector_chain(&self, ns: &str, d: Direction, set: &str) -> String {
        let tag = match d {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        };
        self.rs.chain_name(&format!("{tag}-{ns}:{set}"))
    }

    fn mark(&self, d: Direction) -> u32 {
        match d {
            Direction::Ingress => self.config.ingress_mark,
            Direction::Egress => self.config.egress_mark,
        }
    }

    fn skeleton(&mut self) -> Result<(), ruleset::Error> {
        let fw = self.fw();
        let tables: Vec<_> = self.tables().collect();
        let both = self.config.ingress_mark | self.config.egress_mark;
        let hooks = self.config.hooks.clone();
        for (f, t) in tables {
            for hook in &hooks {
                let chain = hook_chain(*hook).expect("validated hook");
                let base = BaseChain {
                    hook: *hook,
                    priority: 0,
                    policy: ruleset::Policy::Accept,
                };
                self.rs.add_chain(&t, chain, Some(base))?;
                self.rs
                    .push_rule(&t, chain, NftRule::new(Target::Jump(fw.clone())))?;
                self.scope.chain(&t, chain);
            }
            self.rs.add_chain(&t, &fw, None)?;
            if let Some(prefix) = self.config.pod_interface_prefix.clone() {
                let mut spoofed = NftRule::new(Target::Drop);
                spoofed.in_iface = Some(Neg::is(Iface::Prefix(prefix)));
                spoofed.matches.push(Match::Set {
                    negate: true,
                    name: self.skeleton_set(SetKey::PodSources(f))?,
                    dirs: vec![SetDir::Src, SetDir::Src],
                });
                self.rs.push_rule(&t, &fw, spoofed)?;
            }
            let mut iso = BTreeMap::new();
            for d in [Direction::Egress, Direction::Ingress] {
                let name = self.skeleton_set(SetKey::Isolated(d, f))?;
                iso.insert(d, name);
                let chain = self.dispatch_chain(d);
                self.rs.add_chain(&t, &chain, None)?;
                self.scope.chain(&t, &chain);
            }
            let mut est = NftRule::new(Target::Return);
            est.matches.push(Match::Conntrack {
                negate: false,
                states: CtState::RELATED.or(CtState::ESTABLISHED),
            });
            self.rs.push_rule(&t, &fw, est)?;
            let mut invalid = NftRule::new(Target::Drop);
            invalid.matches.push(Match::Conntrack {
                negate: false,
                states: CtState::INVALID,
            });
            self.rs.push_rule(&t, &fw, invalid)?;
            self.rs.push_rule(
                &t,
                &fw,
                NftRule::new(Target::SetXMark {
                    value: 0,
                    mask: both,
                }),
            )?;
            for (d, dir) in [
                (Direction::Egress, SetDir::Src),
                (Direction::Ingress, SetDir::Dst),
            ] {
                let mut r = NftRule::new(Target::Jump(self.dispatch_chain(d)));
                r.matches.push(Match::Set {
                    negate: false,
                    name: iso[&d].clone(),
                    dirs: vec![dir],
                });
                self.rs.push_rule(&t, &fw, r)?;
            }
            self.scope.chain(&t, &fw);
        }
        self.flush_dispatch()
    }

    /// Creates one of the sets every ruleset has (isolation, anti-spoofing),
    /// kept whatever the policies; returns its name.
    fn skeleton_set(&mut self, key: SetKey) -> Result<String, ruleset::Error> {
        let name = key.name(&self.rs);
        let set = IpSet::new(nf_family(key.family()), key.kind(), key.polarity());
        self.rs.add_set(&name, set)?;
        self.scope.set(&name);
        let spoof = matches!(key, SetKey::PodSources(_));
        let id = self.sets.insert(SetState::new(key.clone(), name.clone()));
        self.set_ids.insert(key, id);
        if spoof {
            self.spoof.push(id);
        }
        Ok(name)
    }

    /// Brings the dispatch chains up to date: rewrites the namespace chains
    /// marked stale (creating or removing them as their namespace gains its
    /// first or loses its last policy of the direction), then `nf-ingress` /
    /// `nf-egress` if the set of namespaces they dispatch to changed. A
    /// namespace chain costs the policies of its namespace, the top chains
    /// the namespaces with policies; policy deltas that keep a policy's
    /// selection cost neither.
    fn flush_dispatch(&mut self) -> Result<(), ruleset::Error> {
        self.refresh_dispatch_sets()?;
        let tables: Vec<_> = self.tables().collect();
        for (ns, d) in std::mem::take(&mut self.stale_ns) {
            let lines: Vec<Dispatch> = dispatch_lines(&self.policies, &ns, d).cloned().collect();
            let has = !lines.is_empty();
            let chain = self.namespace_chain(&ns, d);
            let mark = self.mark(d);
            let old_selectors = self.selector_chains[dir_index(d)]
                .remove(&ns)
                .unwrap_or_default();
            let mut selectors: Vec<(TableId, String)> = Vec::new();
            for (f, t) in &tables {
                self.scope.chain(t, &chain);
                if !has {
                    let gone = self.rs.remove_chain(t, &chain);
                    self.discard_chain(gone);
                    continue;
                }
                self.rs.add_chain(t, &chain, None)?;
                let mut top: Vec<NftRule> = Vec::new();
                // Policies that select with the same set share one lookup:
                // a line per set, going to a chain of those policies' lines
                // when there are several. Lines keep their first policy's
                // place; the order of policies is free, as a policy chain
                // only ever sets the allow mark.
                let mut by_set: Vec<(Option<&String>, Vec<&String>)> = Vec::new();
                for l in lines.iter().filter(|l| l.family == *f) {
                    match by_set.iter_mut().find(|(s, _)| *s == l.set.as_ref()) {
                        Some((_, chains)) => chains.push(&l.chain),
                        None => by_set.push((l.set.as_ref(), vec![&l.chain])),
                    }
                }
                for (set, policies) in by_set {
                    let (Some(set), true) = (set, policies.len() > 1) else {
                        top.extend(policies.iter().map(|p| dispatch_line(mark, set, d, p)));
                        continue;
                    };
                    let sel = self.selector_chain(&ns, d, set);
                    self.rs.add_chain(t, &sel, None)?;
                    let lines = policies.iter().map(|p| dispatch_line(mark, None, d, p));
                    let gone = self.rs.rewrite_chain(t, &sel, lines)?;
                    self.discard_chain(gone);
                    self.scope.chain(t, &sel);
                    top.push(dispatch_line(mark, Some(set), d, &sel));
                    selectors.push((t.clone(), sel));
                }
                top.push(unmarked_drop(mark));
                let gone = self.rs.rewrite_chain(t, &chain, top)?;
                self.discard_chain(gone);
            }
            for (t, sel) in old_selectors {
                if !selectors.contains(&(t.clone(), sel.clone())) {
                    let gone = self.rs.remove_chain(&t, &sel);
                    self.discard_chain(gone);
                    self.scope.chain(&t, &sel);
                }
            }
            if !selectors.is_empty() {
                self.selector_chains[dir_index(d)].insert(ns, selectors);
            }
        }
        for d in [Direction::Ingress, Direction::Egress] {
            if std::mem::take(&mut self.stale_top[dir_index(d)]) {
                self.rewrite_top(d, &tables)?;
            }
        }
        Ok(())
    }

    /// Rewrites `nf-ingress` or `nf-egress`: a line per namespace with a
    /// policy of the direction, going to the namespace's chain when the
    /// packet's pod is one of the namespace's pods (only local pods get
    /// here), then a drop. Past [`CompilerConfig::dispatch_flat_max`]
    /// namespaces, the namespaces of one bucket ([`bucket_of`]) share a line
    /// that looks the pod up in a set of all their pods and goes to the
    /// bucket's chain, which holds their namespace lines and a drop of its
    /// own; a bucket of one namespace keeps that namespace's line.
    ///
    /// `-g`, not `-j`: a pod is in one namespace, so once its namespace's
    /// chain is done, no other namespace's line can match; going there makes
    /// the end of that chain return to `nf-fw`, past the other lines.
    ///
    /// The drops catch an isolated pod whose namespace set does not hold it
    /// (yet): the namespace and bucket sets are [`Polarity::Grants`], like
    /// every set a policy selects with, so a new pod joins them only after
    /// the batch that may need it and leaves them before, while the isolation
    /// sets ([`Polarity::Restricts`]) take it first and let it go last. In
    /// between it is isolated and matches no namespace line, in `nf-ingress`
    /// or in its bucket's chain: dropped, never let through. (Being in the
    /// set only ever reaches the policies of its namespace, which allow no
    /// more than they would anyway.)
    fn rewrite_top(
        &mut self,
        d: Direction,
        tables: &[(Family, TableId)],
    ) -> Result<(), ruleset::Error> {
        let di = dir_index(d);
        // Out of `self` while lines are pushed, and back whatever happens.
        let listed = std::mem::take(&mut self.dispatching[di]);
        let buckets = std::mem::take(&mut self.buckets);
        let result = self.write_top(d, tables, &listed, &buckets);
        self.dispatching[di] = listed;
        self.buckets = buckets;
        result
    }

    /// [`Self::rewrite_top`] with its namespaces and the buckets (none:
    /// flat). A bucket holds the namespaces with policies of either
    /// direction; this direction's chain lists those of its own.
    fn write_top(
        &mut self,
        d: Direction,
        tables: &[(Family, TableId)],
        listed: &BTreeSet<String>,
        buckets: &[(usize, Vec<String>)],
    ) -> Result<(), ruleset::Error> {
        let di = dir_index(d);
        let chain = self.dispatch_chain(d);
        let mark = self.mark(d);
        let mut chains = Vec::new();
        for (f, t) in tables {
            let mut top: Vec<NftRule> = Vec::new();
            if buckets.is_empty() {
                top.extend(listed.iter().map(|ns| self.namespace_line(ns, d, *f)));
            }
            for (bucket, names) in buckets {
                let own: Vec<&String> = names.iter().filter(|n| listed.contains(*n)).collect();
                if let [ns] = own.as_slice() {
                    top.push(self.namespace_line(ns, d, *f));
                    continue;
                }
                if own.is_empty() {
                    continue;
                }
                let sub = self.bucket_chain(d, *bucket);
                self.rs.add_chain(t, &sub, None)?;
                let mut lines: Vec<NftRule> = own
                    .iter()
                    .map(|ns| self.namespace_line(ns, d, *f))
                    .collect();
                lines.push(unmarked_drop(mark));
                let gone = self.rs.rewrite_chain(t, &sub, lines)?;
                self.discard_chain(gone);
                self.scope.chain(t, &sub);
                top.push(pods_goto(
                    self.set_name(&SetKey::Ips(bucket_group(names), *f)),
                    d,
                    &sub,
                ));
                if !chains.contains(&sub) {
                    chains.push(sub);
                }
            }
            top.push(unmarked_drop(mark));
            let gone = self.rs.rewrite_chain(t, &chain, top)?;
            self.discard_chain(gone);
            self.scope.chain(t, &chain);
        }
        for old in std::mem::replace(&mut self.bucket_chains[di], chains) {
            if self.bucket_chains[di].contains(&old) {
                continue;
            }
            for (_, t) in tables {
                let gone = self.rs.remove_chain(t, &old);
                self.discard_chain(gone);
                self.scope.chain(t, &old);
            }
        }
        Ok(())
    }

    /// Brings up to date which namespaces have policies of each direction
    /// (from the namespaces policy deltas left stale) and the bucket sets
    /// the top chains will look up, leaving every chain as it is. The sets
    /// come first so that [`Compiler::settle_sets`] can hand them over
    /// before the chains are settled.
    fn refresh_dispatch_sets(&mut self) -> Result<(), ruleset::Error> {
        for (ns, d) in &self.stale_ns {
            let has = dispatch_lines(&self.policies, ns, *d).next().is_some();
            let listed = &mut self.dispatching[dir_index(*d)];
            let changed = if has {
                listed.insert(ns.clone())
            } else {
                listed.remove(ns)
            };
            self.stale_top[dir_index(*d)] |= changed;
        }
        if self.stale_top.contains(&true) {
            let tables: Vec<_> = self.tables().collect();
            if self.refresh_buckets(&tables)? {
                // Both directions look up the buckets' sets: a namespace that
                // changes one direction's list can rename a set the other's
                // lines name.
                self.stale_top = [true, true];
            }
        }
        Ok(())
    }

    /// Hashes the namespaces with policies of either direction into buckets
    /// (none up to [`CompilerConfig::dispatch_flat_max`]) and holds the sets
    /// of the buckets of two or more. The new sets are taken before the old
    /// are let go, so that a set both layouts look up stays, members and all.
    /// Whether the layout changed.
    ///
    /// One layout for both directions, not one each: a pod delta changes one
    /// bucket set, not two, and a namespace's first egress policy changes no
    /// bucket when it has ingress policies already. (A layout per direction
    /// ran the 10k pods / 1k policies burst in 53.0 and 53.4 ms, this one in
    /// 47.3 to 50.8 and the flat layout in 46.3 to 50.1, on one machine in one
    /// sitting.) A bucket set then also holds pods of namespaces without
    /// policies of a direction; that direction's chain never meets them, as
    /// only pods its policies isolate reach it.
    fn refresh_buckets(&mut self, tables: &[(Family, TableId)]) -> Result<bool, ruleset::Error> {
        let [ingress, egress] = &self.dispatching;
        let listed: BTreeSet<&String> = ingress.union(egress).collect();
        let mut layout: Vec<(usize, Vec<String>)> = Vec::new();
        if let Some(count) = bucket_count(listed.len(), self.config.dispatch_flat_max) {
            let mut by: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for ns in listed {
                by.entry(bucket_of(ns, count)).or_default().push(ns.clone());
            }
            layout.extend(by);
        }
        if layout == self.buckets {
            return Ok(false);
        }
        let mut uses = Vec::new();
        for (f, _) in tables {
            for (_, names) in layout.iter().filter(|(_, n)| n.len() > 1) {
                uses.push(Use {
                    set: SetKey::Ips(bucket_group(names), *f),
                    feeder: None,
                });
            }
        }
        for u in &uses {
            self.acquire(u)?;
        }
        for u in std::mem::replace(&mut self.bucket_uses, uses) {
            self.release(&u);
        }
        self.buckets = layout;
        Ok(true)
    }

    /// The line that sends the pods of namespace `ns` to its chain of
    /// direction `d`.
    fn namespace_line(&self, ns: &str, d: Direction, f: Family) -> NftRule {
        pods_goto(
            self.set_name(&SetKey::Ips(namespace_group(ns), f)),
            d,
            &self.namespace_chain(ns, d),
        )
    }

    // -- policies -----------------------------------------------------------

    /// The kernel name of set `key`: the live set's, when there is one. A
    /// policy delta names every set its lines look up and a namespace's
    /// first or last policy renames none but rewrites every namespace line;
    /// a map lookup is cheaper than hashing each definition again.
    fn set_name(&self, key: &SetKey) -> String {
        match self.set_ids.get(key) {
            Some(&id) => self.sets[id].name.clone(),
            None => key.name(&self.rs),
        }
    }

    fn policy_chain(&self, p: &Policy, d: Direction) -> String {
        // A namespace name is a DNS label and has no '.', so `ns.name` can't
        // be read two ways (`a-b`/`c` and `a`/`b-c` would both be `a-b-c`).
        let tag = match d {
            Direction::Ingress => 'i',
            Direction::Egress => 'e',
        };
        self.rs
            .chain_name(&format!("{tag}-{}.{}", p.namespace, p.name))
    }

    /// The policy's chains, lines and set uses, computed without touching
    /// any state: rules depend on the policy alone, never on pods.
    fn compile_policy(&self, p: &Policy) -> Compiled {
        let mut out = Compiled {
            uses: BTreeSet::new(),
            chains: BTreeMap::new(),
            dispatch: Vec::new(),
        };
        // The selection's address set holds every node's pods: the twin of a
        // same-namespace peer with this selector (see the module docs).
        // Isolation takes the local ones only.
        let selected = Group {
            ns: NsScope::Only(p.namespace.clone()),
            pods: p.pod_selector.clone(),
            local: false,
        };
        let isolated = Group {
            local: true,
            ..selected.clone()
        };
        let everyone = p.pod_selector.is_everything();
        for (f, t) in self.tables() {
            for d in [Direction::Ingress, Direction::Egress] {
                let Some(rules) = p.rules(d) else { continue };
                // The namespace's dispatch line looks its set up: it lives
                // as long as the namespace has a policy, kept by their uses.
                out.uses.insert(Use {
                    set: SetKey::Ips(namespace_group(&p.namespace), f),
                    feeder: None,
                });
                let sel_key = SetKey::Ips(selected.clone(), f);
                out.dispatch.push(Dispatch {
                    family: f,
                    dir: d,
                    set: (!everyone).then(|| self.set_name(&sel_key)),
                    chain: self.policy_chain(p, d),
                });
                out.uses.insert(Use {
                    set: sel_key,
                    feeder: None,
                });
                out.uses.insert(Use {
                    set: SetKey::Isolated(d, f),
                    feeder: Some(isolated.clone()),
                });
                let lines = self.lines(p, d, f, rules, &mut out.uses);
                out.chains
                    .insert((t.clone(), self.policy_chain(p, d)), lines);
            }
        }
        out
    }

    fn lines(
        &self,
        p: &Policy,
        d: Direction,
        f: Family,
        rules: &[Rule],
        uses: &mut BTreeSet<Use>,
    ) -> Vec<NftRule> {
        let peer_dir = match d {
            Direction::Ingress => SetDir::Src,
            Direction::Egress => SetDir::Dst,
        };
        let mark = self.mark(d);
        let mut lines: Vec<NftRule> = Vec::new();
        for rule in rules {
            // `None`: no peer match (the rule has no peers: everyone).
            let mut peers: Vec<Option<Match>> = Vec::new();
            if rule.peers.is_empty() {
                peers.push(None);
            }
            for peer in &rule.peers {
                let key = match peer {
                    Peer::Pods { namespaces, pods } => SetKey::Ips(
                        Group {
                            ns: match namespaces {
                                NamespaceScope::Only(n) => NsScope::Only(n.clone()),
                                NamespaceScope::Selected(s) => NsScope::Selected(s.clone()),
                            },
                            pods: pods.clone(),
                            local: false,
                        },
                        f,
                    ),
                    Peer::IpBlock(b) if b.family() == f => SetKey::Block(b.clone()),
                    // A block of the other family matches no packet here.
                    Peer::IpBlock(_) => continue,
                };
                peers.push(Some(Match::Set {
                    negate: false,
                    name: self.set_name(&key),
                    dirs: vec![peer_dir],
                }));
                uses.insert(Use {
                    set: key,
                    feeder: None,
                });
            }
            // `None`: no port match (the rule has no ports: everything).
            let mut ports: Vec<Option<(Protocol, Option<Match>)>> = Vec::new();
            if rule.ports.is_empty() {
                ports.push(None);
            }
            for pr in &rule.ports {
                match &pr.port {
                    Port::Any => ports.push(Some((pr.protocol, None))),
                    Port::Range { start, end } => ports.push(Some((
                        pr.protocol,
                        Some(Match::Ports {
                            sport: None,
                            dport: Some(Neg::is(PortRange {
                                first: *start,
                                last: *end,
                            })),
                        }),
                    ))),
                    Port::Named(name) => {
                        // The destination resolves the name: for ingress the
                        // pods the policy selects, for egress any pod (the
                        // peer match narrows it at packet time).
                        let group = match d {
                            Direction::Ingress => Group {
                                ns: NsScope::Only(p.namespace.clone()),
                                pods: p.pod_selector.clone(),
                                local: true,
                            },
                            Direction::Egress => Group {
                                ns: NsScope::Any,
                                pods: LabelSelector::everything(),
                                local: false,
                            },
                        };
                        let key = SetKey::Ports(group, name.clone(), pr.protocol, f);
                        ports.push(Some((
                            pr.protocol,
                            Some(Match::Set {
                                negate: false,
                                name: self.set_name(&key),
                                dirs: vec![SetDir::Dst, SetDir::Dst],
                            }),
                        )));
                        uses.insert(Use {
                            set: key,
                            feeder: None,
                        });
                    }
                }
            }
            for peer in &peers {
                for port in &ports {
                    let mut r = NftRule::new(Target::SetXMark {
                        value: mark,
                        mask: mark,
                    });
                    // A port number is a native compare, a set an xt match through
                    // nft_compat: the number goes first, so that a packet for another
                    // port costs no lookup. A named port is a set, after the peer's.
                    let (number, named) = match port {
                        Some((proto, m)) => {
                            r.protocol = Some(Neg::is(nft_protocol(*proto)));
                            match m {
                                Some(m @ Match::Ports { .. }) => (Some(m), None),
                                m => (None, m.as_ref()),
                            }
                        }
                        None => (None, None),
                    };
                    r.matches.extend(number.cloned());
                    r.matches.extend(peer.clone());
                    r.matches.extend(named.cloned());
                    // Equal lines mark the same packets: one is enough.
                    if !lines.contains(&r) {
                        lines.push(r);
                    }
                }
            }
        }
        lines
    }

    /// Recompiles one policy (`None`: deleted). `dispatch` false leaves the
    /// dispatch chains stale, for the caller to flush once, after many policies.
    fn policy_changed(
        &mut self,
        key: ObjectKey,
        policy: Option<Arc<Policy>>,
        dispatch: bool,
    ) -> Result<(), Error> {
        let wrap = |source: ruleset::Error| Error::Compile {
            what: format!("NetworkPolicy {key}"),
            reason: source.to_string(),
        };
        let compiled = policy.as_deref().map(|p| self.compile_policy(p));
        // Acquire the new uses before releasing the old, so a set both use
        // is kept, not destroyed and refilled.
        if let Some(c) = &compiled {
            for u in &c.uses {
                self.acquire(u).map_err(wrap)?;
            }
        }
        let old = self.policies.remove(&key);
        if let Some(old) = &old {
            for (t, chain) in &old.chains {
                let kept = compiled
                    .as_ref()
                    .is_some_and(|c| c.chains.contains_key(&(t.clone(), chain.clone())));
                if !kept {
                    let gone = self.rs.remove_chain(t, chain);
                    self.discard_chain(gone);
                    self.scope.chain(t, chain);
                }
            }
        }
        let old_lines = old
            .as_ref()
            .map(|o| o.dispatch.as_slice())
            .unwrap_or_default();
        let new_lines = compiled
            .as_ref()
            .map(|c| c.dispatch.as_slice())
            .unwrap_or_default();
        for l in old_lines.iter().chain(new_lines) {
            if !(old_lines.contains(l) && new_lines.contains(l)) {
                self.stale_ns.insert((key.namespace.clone(), l.dir));
            }
        }
        if let Some(c) = compiled {
            let mut chains = BTreeSet::new();
            for ((t, chain), lines) in c.chains {
                self.rs.add_chain(&t, &chain, None).map_err(wrap)?;
                let old_rules = self.rs.rewrite_chain(&t, &chain, lines).map_err(wrap)?;
                self.discard_chain(old_rules);
                self.scope.chain(&t, &chain);
                chains.insert((t, chain));
            }
            self.policies.insert(
                key.clone(),
                PolicyState {
                    uses: c.uses,
                    chains,
                    dispatch: c.dispatch,
                },
            );
        }
        // The dispatch lines go before the sets they look up can go: both
        // are only in the model until the plan orders them.
        if dispatch {
            self.flush_dispatch().map_err(wrap)?;
        }
        if let Some(old) = old {
            for u in &old.uses {
                self.release(u);
            }
            if let Some(g) = &mut self.garbage {
                g.policy_states.push(old);
            }
        }
        Ok(())
    }

    // -- sets and groups ----------------------------------------------------

    fn acquire(&mut self, u: &Use) -> Result<(), ruleset::Error> {
        let set = match self.set_ids.get(&u.set) {
            Some(&id) => id,
            None => {
                let name = u.set.name(&self.rs);
                let f = u.set.family();
                let mut set = IpSet::new(nf_family(f), u.set.kind(), u.set.polarity());
                if let SetKey::Block(b) = &u.set {
                    for m in block_members(b) {
                        set.insert(m)?;
                    }
                }
                self.rs.add_set(&name, set)?;
                self.scope.set(&name);
                let id = self.sets.insert(SetState::new(u.set.clone(), name));
                self.set_ids.insert(u.set.clone(), id);
                id
            }
        };
        self.sets[set].uses += 1;
        if let Some(g) = u.group() {
            let group = self.ensure_group(g);
            let feeds = &mut self.groups[group].feeds;
            let n = match feeds.iter_mut().find(|(s, _)| *s == set) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    feeds.push((set, 1));
                    1
                }
            };
            if n == 1 {
                self.contribute_members(group, set, 1);
            }
        }
        Ok(())
    }

    fn release(&mut self, u: &Use) {
        let Some(&set) = self.set_ids.get(&u.set) else {
            return;
        };
        if let Some(&group) = u.group().and_then(|g| self.group_ids.get(g)) {
            let feeds = &mut self.groups[group].feeds;
            if let Some(at) = feeds.iter().position(|(s, _)| *s == set) {
                feeds[at].1 -= 1;
                if feeds[at].1 == 0 {
                    // Each feed is its own set: their order means nothing.
                    feeds.swap_remove(at);
                    let empty = feeds.is_empty();
                    // A set that goes away with this use needs no member
                    // removals; the isolation sets stay and do.
                    if matches!(u.set, SetKey::Isolated(..)) {
                        self.contribute_members(group, set, -1);
                    }
                    if empty {
                        self.drop_group(group);
                    }
                }
            }
        }
        let s = &mut self.sets[set];
        s.uses -= 1;
        if s.uses == 0 && !matches!(u.set, SetKey::Isolated(..)) {
            if let Some(s) = self.sets.remove(set) {
                self.set_ids.remove(&s.key);
                let gone = self.rs.remove_set(&s.name);
                self.scope.set(&s.name);
                if let Some(g) = &mut self.garbage {
                    g.sets.extend(gone);
                    g.set_states.push(s);
                }
            }
        }
    }

    /// Adds (`delta` 1) or takes back (-1) the contribution of every member
    /// of `group` to `set`.
    ///
    /// [`count`] one member at a time would look the set up by name in the
    /// ruleset once per member: filling a new set for a policy delta did that
    /// thousands of times. Here it is looked up once, and a set the scope
    /// already holds whole (a new one always is) notes no members, which the
    /// planner would not read.
    fn contribute_members(&mut self, group: GroupId, set: SetId, delta: i32) {
        let Compiler {
            groups,
            pods,
            sets,
            rs,
            scope,
            touched,
            ..
        } = self;
        let s = &mut sets[set];
        let mut target = rs.set_mut(&s.name);
        let whole = scope.sets.contains(&s.name);
        for &id in &groups[group].members {
            for m in members_of(&s.key, &pods[id].pod).iter() {
                if !s.count(*m, delta) {
                    continue;
                }
                put(target.as_deref_mut(), *m, delta);
                if !whole {
                    s.touch(set, *m, touched);
                }
            }
        }
    }

    fn is_local(&self, pod: &Pod) -> bool {
        match &self.config.node {
            None => true,
            Some(n) => pod.node_name.as_deref() == Some(n.as_str()),
        }
    }

    /// What group membership asks of a pod besides its labels, looked up
    /// once per pod rather than once per group.
    fn facts<'a>(&'a self, pod: &'a Pod) -> PodFacts<'a> {
        PodFacts {
            pod,
            ns_labels: self.cluster.namespace(&pod.namespace).map(|ns| &ns.labels),
            local: self.is_local(pod),
        }
    }

    fn holds(&self, g: &Group, p: &PodFacts<'_>) -> bool {
        let ns_ok = match &g.ns {
            NsScope::Only(n) => &p.pod.namespace == n,
            NsScope::Selected(s) => p.ns_labels.is_some_and(|l| s.matches(l)),
            NsScope::Among(names) => names.contains(&p.pod.namespace),
            NsScope::Any => true,
        };
        ns_ok && g.pods.matches(&p.pod.labels) && (!g.local || p.local)
    }

    /// Records in the pod's slot that it joined (`is`) or left group `g`.
    fn set_membership(&mut self, id: PodId, g: GroupId, is: bool) {
        set_membership(&mut self.pods[id], g, is);
    }

    /// The group's id: its state, created (scanning the pods it can hold)
    /// and indexed if it has none yet.
    fn ensure_group(&mut self, g: &Group) -> GroupId {
        if let Some(&id) = self.group_ids.get(g) {
            return id;
        }
        // The scope is settled by where the pods are looked for, once per
        // namespace, and the pod selector by which pods are looked at: those
        // with the label it is filed under (`PodIndex`). Only the selector
        // itself and locality are left to test per candidate. (A new group
        // tested every pod it may hold, and that was most of the cost of a
        // policy delta.)
        let (pods, pod_index) = (&self.pods, &self.pod_index);
        let mut members: Vec<PodId> = Vec::new();
        let mut scan = |ns: &str| {
            pod_index.for_each_candidate(ns, &g.pods, |id| {
                let p = &pods[id].pod;
                if g.pods.matches(&p.labels) && (!g.local || self.is_local(p)) {
                    members.push(id);
                }
            });
        };
        match &g.ns {
            NsScope::Only(n) => scan(n),
            NsScope::Selected(s) => self
                .cluster
                .namespaces()
                .filter(|ns| s.matches(&ns.labels))
                .for_each(|ns| scan(&ns.name)),
            NsScope::Among(names) => names.iter().for_each(|n| scan(n)),
            // Every pod, whether its namespace is known or not.
            NsScope::Any => pod_index.namespaces().for_each(scan),
        }
        let id = self.groups.insert(GroupState {
            def: g.clone(),
            members: members.iter().copied().collect(),
            feeds: Vec::new(),
        });
        for p in members {
            set_membership(&mut self.pods[p], id, true);
        }
        self.group_ids.insert(g.clone(), id);
        match &g.ns {
            NsScope::Only(n) => self.only.entry(n.clone()).or_default().insert(&g.pods, id),
            // Filed under each of its namespaces: a pod looks in its own
            // namespace's index only, so it still meets the group once.
            NsScope::Among(names) => {
                for n in names {
                    self.only.entry(n.clone()).or_default().insert(&g.pods, id);
                }
            }
            NsScope::Selected(s) => {
                self.selected.insert(&g.pods, id);
                self.by_namespace.insert(s, id);
            }
            NsScope::Any => self.any.insert(&g.pods, id),
        }
        id
    }

    fn drop_group(&mut self, id: GroupId) {
        let Some(st) = self.groups.remove(id) else {
            return;
        };
        for &p in &st.members {
            self.set_membership(p, id, false);
        }
        self.group_ids.remove(&st.def);
        let g = &st.def;
        match &g.ns {
            NsScope::Only(n) => self.unfile_only(n, &g.pods, id),
            NsScope::Among(names) => {
                for n in names {
                    self.unfile_only(n, &g.pods, id);
                }
            }
            NsScope::Selected(s) => {
                self.selected.remove(&g.pods, &id);
                self.by_namespace.remove(s, &id);
            }
            NsScope::Any => self.any.remove(&g.pods, &id),
        }
        if let Some(g) = &mut self.garbage {
            g.groups.push(st);
        }
    }

    /// Takes group `id` out of namespace `ns`'s index.
    fn unfile_only(&mut self, ns: &str, pods: &LabelSelector, id: GroupId) {
        if let Some(idx) = self.only.get_mut(ns) {
            idx.remove(pods, &id);
            if idx.is_empty() {
                self.only.remove(ns);
            }
        }
    }

    /// Orders group moves as the groups' definitions order. The order only
    /// shows in the scope, and only when one pod leaves one isolating group
    /// and joins another (the one set both feed may see its member go and
    /// come back); keeping the definition order keeps that scope as it was.
    fn in_group_order(&self, moves: &mut [(GroupId, bool, bool)]) {
        if moves.len() > 1 {
            moves.sort_unstable_by(|a, b| self.groups[a.0].def.cmp(&self.groups[b.0].def));
        }
    }

    /// Moves one pod's contributions from its old to its new state, for
    /// every group it was in and every group its new labels may put it in.
    fn pod_changed(&mut self, id: PodId, old: Option<&Pod>, new: Option<&Pod>) {
        self.spoof_changed(old, new);
        let mut moves = std::mem::take(&mut self.moves);
        moves.clear();
        let was_in: &[GroupId] = &self.pods[id].groups;
        let facts = new.map(|p| self.facts(p));
        for &g in was_in {
            let is = facts
                .as_ref()
                .is_some_and(|p| self.holds(&self.groups[g].def, p));
            moves.push((g, true, is));
        }
        if let Some(p) = &facts {
            // Each group is in one index, filed once: no candidate comes twice.
            let mut joins = |g: &GroupId| {
                if was_in.binary_search(g).is_err() && self.holds(&self.groups[*g].def, p) {
                    moves.push((*g, false, true));
                }
            };
            if let Some(idx) = self.only.get(&p.pod.namespace) {
                idx.for_each_candidate(&p.pod.labels, &mut joins);
            }
            self.selected.for_each_candidate(&p.pod.labels, &mut joins);
            self.any.for_each_candidate(&p.pod.labels, &mut joins);
        }
        // The pod's groups from now on, sorted as its slot keeps them.
        let groups = &mut self.pods[id].groups;
        groups.clear();
        groups.extend(moves.iter().filter(|m| m.2).map(|m| m.0));
        groups.sort_unstable();
        self.in_group_order(&mut moves);
        for &(g, was, is) in &moves {
            self.move_pod(
                g,
                id,
                was.then_some(old).flatten(),
                is.then_some(new).flatten(),
            );
        }
        self.moves = moves;
    }

    /// Updates group `g` for a pod that was in it as `old` (or not, `None`)
    /// and is in it as `new` (or not): its members and every fed set. The
    /// caller updates the pod's [`PodSlot::groups`].
    fn move_pod(&mut self, g: GroupId, id: PodId, old: Option<&Pod>, new: Option<&Pod>) {
        let st = &mut self.groups[g];
        match (old, new) {
            (None, Some(_)) => {
                st.members.insert(id);
            }
            (_, None) => {
                st.members.remove(&id);
            }
            // Still a member: only its contributions may change.
            (Some(_), Some(_)) => {}
        }
        // Index loop: `shift` needs `self`, and never changes a group's feeds.
        for i in 0..self.groups[g].feeds.len() {
            let set = self.groups[g].feeds[i].0;
            self.shift(set, old, new);
        }
    }

    /// Moves a pod's contribution to `set` from what `old` gave to what `new`
    /// gives (`None`: nothing).
    fn shift(&mut self, set: SetId, old: Option<&Pod>, new: Option<&Pod>) {
        let key = &self.sets[set].key;
        let o = old.map(|p| members_of(key, p)).unwrap_or_default();
        let n = new.map(|p| members_of(key, p)).unwrap_or_default();
        let Compiler {
            sets,
            rs,
            touched,
            unput,
            held,
            ..
        } = self;
        let mut c = Counter {
            sets,
            rs,
            touched,
            unput: held.then_some(unput),
        };
        // Add first: a member both taken and given never blinks out.
        for m in n.iter().filter(|m| !o.contains(m)) {
            c.count(set, *m, 1);
        }
        for m in o.iter().filter(|m| !n.contains(m)) {
            c.count(set, *m, -1);
        }
    }

    /// Updates the anti-spoofing sets for a pod delta: only local pods count,
    /// since only their interfaces are on this node.
    fn spoof_changed(&mut self, old: Option<&Pod>, new: Option<&Pod>) {
        if self.spoof.is_empty() {
            return;
        }
        let old = old.filter(|p| p.host_interface.is_some() && self.is_local(p));
        let new = new.filter(|p| p.host_interface.is_some() && self.is_local(p));
        if old.is_none() && new.is_none() {
            return;
        }
        for i in 0..self.spoof.len() {
            self.shift(self.spoof[i], old, new);
        }
    }

    /// Re-evaluates the namespace-scoped groups the old or new labels may
    /// concern, over the namespace's pods.
    fn namespace_changed(&mut self, name: &str, old: Option<&Labels>, new: Option<&Labels>) {
        if old == new {
            return;
        }
        let mut cands = Vec::new();
        for l in [old, new].into_iter().flatten() {
            self.by_namespace
                .for_each_candidate(l, |g| cands.push((*g, false, false)));
        }
        if cands.is_empty() {
            return;
        }
        // A group whose namespace selector says the same of the old labels as
        // of the new keeps every pod of the namespace where it was: only the
        // others need their pods looked at. (A team relabel makes every
        // group filed under `team` a candidate, and most of them select
        // neither team.)
        let flips = |s: &LabelSelector| {
            old.is_some_and(|l| s.matches(l)) != new.is_some_and(|l| s.matches(l))
        };
        cands.retain(|c| match &self.groups[c.0].def.ns {
            NsScope::Selected(s) => flips(s),
            _ => true,
        });
        if cands.is_empty() {
            return;
        }
        self.in_group_order(&mut cands);
        cands.dedup_by_key(|c| c.0);
        // Every pod here has the same namespace labels: look them up once.
        let ns_labels = self.cluster.namespace(name).map(|ns| &ns.labels);
        let mut moved = Vec::new();
        for &(g, ..) in &cands {
            for &id in self.pod_index.pods_in(name) {
                let slot = &self.pods[id];
                let facts = PodFacts {
                    pod: &slot.pod,
                    ns_labels,
                    local: self.is_local(&slot.pod),
                };
                let was = slot.groups.binary_search(&g).is_ok();
                let is = self.holds(&self.groups[g].def, &facts);
                if was != is {
                    moved.push((g, id, slot.pod.clone(), was, is));
                }
            }
        }
        for (g, id, pod, was, is) in moved {
            self.set_membership(id, g, is);
            let p = Some(&*pod);
            self.move_pod(g, id, was.then_some(p).flatten(), is.then_some(p).flatten());
        }
    }
}

/// Records in a pod's slot that it joined (`is`) or left group `g`. A free
/// function so that callers may hold borrows of other fields.
fn set_membership(slot: &mut PodSlot, g: GroupId, is: bool) {
    match (slot.groups.binary_search(&g), is) {
        (Err(at), true) => slot.groups.insert(at, g),
        (Ok(at), false) => {
            slot.groups.remove(at);
        }
        _ => {}
    }
}

/// A pod with what group membership asks of it besides its labels.
struct PodFacts<'a> {
    pod: &'a Pod,
    /// Its namespace's labels (`None`: the namespace is unknown).
    ns_labels: Option<&'a Labels>,
    /// Whether it runs on this node.
    local: bool,
}

/// The members one pod gives one set: at most one, but for a named port the
/// pod defines more than once for the protocol (two containers), rare enough
/// to allocate for.
#[derive(Debug, Default)]
struct Members {
    first: Option<Member>,
    rest: Vec<Member>,
}

impl Members {
    fn push(&mut self, m: Member) {
        if self.first.is_none() {
            self.first = Some(m);
        } else {
            self.rest.push(m);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Member> {
        self.first.iter().chain(&self.rest)
    }

    fn contains(&self, m: &Member) -> bool {
        self.first.as_ref() == Some(m) || self.rest.contains(m)
    }
}

/// The members `pod` gives set `key` (when it is in a feeding group).
fn members_of(key: &SetKey, pod: &Pod) -> Members {
    let mut out = Members::default();
    match key {
        SetKey::Isolated(_, f) | SetKey::Ips(_, f) => {
            if let Some(ip) = pod.ip(*f) {
                out.push(Member::Ip(ip));
            }
        }
        SetKey::Block(_) => {}
        SetKey::PodSources(f) => {
            if let Some((ip, iface)) = pod.ip(*f).zip(host_interface(pod)) {
                out.push(Member::net_iface(ip.into(), iface));
            }
        }
        SetKey::Ports(_, name, proto, f) => {
            if let Some(ip) = pod.ip(*f) {
                for port in pod.resolve_named_port(name, *proto) {
                    out.push(Member::IpPort {
                        ip,
                        protocol: proto.number(),
                        port,
                    });
                }
            }
        }
    }
    out
}

/// The compiler's fields that counting a member changes, borrowed apart from
/// the others so that callers may hold borrows of those.
struct Counter<'a> {
    sets: &'a mut Slab<SetId, SetState>,
    rs: &'a mut Ruleset,
    touched: &'a mut Vec<SetId>,
    /// [`Compiler::unput`] while dispatch is held: members are put later.
    unput: Option<&'a mut bool>,
}

impl Counter<'_> {
    /// Counts one contribution of member `m` to `set` (`delta` 1) or takes
    /// one back (-1); the set's content, and its members for the scope,
    /// change only when the count leaves or reaches zero.
    fn count(&mut self, set: SetId, m: Member, delta: i32) {
        let s = &mut self.sets[set];
        if !s.count(m, delta) {
            return;
        }
        match &mut self.unput {
            Some(unput) => **unput = true,
            None => put(self.rs.set_mut(&s.name), m, delta),
        }
        // Only this member: the plan then costs the change, not the set. While
        // held, this is also the note `put_held` puts it by.
        s.touch(set, m, self.touched);
    }
}

/// Puts `m` into the ruleset's copy of a set (`delta` 1) or takes it out
/// (-1), once its count said it comes or goes.
fn put(set: Option<&mut IpSet>, m: Member, delta: i32) {
    let Some(set) = set else { return };
    if delta > 0 {
        // The member fits by construction: the set's family picked the
        // address.
        let _ = set.insert(m);
    } else {
        set.remove(&m);
    }
}

/// A pod's host interface. The name was checked when the pod was converted;
/// one the kernel would refuse (a hand-built model) contributes nothing
/// rather than panic.
fn host_interface(pod: &Pod) -> Option<ruleset::IfName> {
    pod.host_interface
        .as_deref()
        .and_then(|i| ruleset::IfName::new(i).ok())
}

/// A block's `hash:net` members: the cidr, each except as `nomatch`. The
/// kernel refuses a /0, so `0.0.0.0/0` (and `::/0`) go in as two /1 halves;
/// an except that is itself a half replaces it, as the longest prefix would
/// decide anyway.
fn block_members(b: &IpBlock) -> Vec<Member> {
    let mut nets: BTreeMap<ipnet::IpNet, bool> = BTreeMap::new();
    if b.cidr.prefix_len() == 0 {
        for half in b.cidr.subnets(1).into_iter().flatten() {
            nets.insert(half, false);
        }
    } else {
        nets.insert(b.cidr, false);
    }
    for e in &b.except {
        nets.insert(*e, true);
    }
    nets.into_iter()
        .map(|(net, nomatch)| Member::Net { net, nomatch })
        .collect()
}
