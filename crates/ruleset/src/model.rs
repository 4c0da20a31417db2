//! The declarative model: tables, chains, rules and ipsets, with ownership and identity.
//!
//! A [`Ruleset`] describes what netfence holds (or should hold) in one network namespace.
//! It *owns* every chain and set whose name starts with its prefix (default `nf-`), and
//! the rules it placed in built-in chains, which it recognises by their comment. Anything
//! else is *foreign*: recorded when observed, never changed.
//!
//! # Rule identity
//! Every owned rule carries the comment `<marker><id>` in its userdata, where `nft` keeps
//! `comment "..."` and which `iptables-nft-save` prints as a last `-m comment --comment`.
//! An xt comment match would run for every packet the rule sees; userdata costs packets
//! nothing. (Rules written by earlier versions carry it as their first `-m comment` match
//! and are still recognised.) The marker comes from the prefix (`nf-` gives `nf:`) and
//! the id is 16 characters of base64url of a SHA-256 over the rule's table, chain and
//! content. A dump therefore maps back to the model without any state file:
//! [`OwnedRule::id`] is recomputed from what the kernel holds, and a rule whose comment
//! does not match its content is a stray to delete, whoever wrote it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use base64::Engine as _;
use ipnet::IpNet;
use netfilter::ipset::{IfName, Member, SetType};
use netfilter::nft::{self, BaseChain, Match, Rule, MAX_CHAIN_NAME, MAX_SET_NAME};
use netfilter::Family;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The name prefix a [`Ruleset`] owns unless told otherwise.
pub const DEFAULT_PREFIX: &str = "nf-";

/// The capacity sets get unless told otherwise: Calico's (Felix's `MaxIpsetSize`). The
/// kernel's own default, [`KERNEL_MAXELEM`], is less than one set can need: a peer of
/// `namespaceSelector: {}` holds every pod of the cluster, and Kubernetes supports
/// 150,000. A full set refuses the member, and every commit that carries it after. The
/// capacity costs nothing until it is used: a hash set grows with its members.
pub const DEFAULT_MAXELEM: u32 = 1 << 20;

/// The capacity the kernel gives a hash set created without one.
pub const KERNEL_MAXELEM: u32 = 65536;

/// Longest prefix: it leaves room in a 28-byte chain name for a 16-byte hash and a `_`.
pub const MAX_PREFIX: usize = 11;

/// Characters of a rule id (12 bytes of SHA-256 in base64url).
const ID_LEN: usize = 16;

/// Duplicates of one rule in one chain are told apart by an occurrence number hashed into
/// their ids; more than this many identical rules in a chain is refused.
const MAX_DUPLICATES: usize = 64;

/// A table: family and name (`ip filter`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    /// The family.
    pub family: Family,
    /// The name.
    pub name: String,
}

impl TableId {
    /// `family name`.
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Self {
            family,
            name: name.into(),
        }
    }

    /// The iptables `filter` table of a family, where netfence's rules live.
    pub fn filter(family: Family) -> Self {
        Self::new(family, "filter")
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.family, self.name)
    }
}

/// A rule's stable identity, derived from its table, chain and content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(String);

impl RuleId {
    /// The id of the `occurrence`-th copy (from 0) of `rule` in `table`/`chain`.
    pub fn compute(table: &TableId, chain: &str, rule: &Rule, occurrence: usize) -> Self {
        Self::of_text(table, chain, &rule.to_iptables(table.family), occurrence)
    }

    /// [`Self::compute`] from the rule's `iptables-save` text, for a caller that tries
    /// several occurrences: rendering the rule costs more than hashing it.
    fn of_text(table: &TableId, chain: &str, text: &str, occurrence: usize) -> Self {
        let mut h = Sha256::new();
        // A version tag, so that a future change of the scheme can't collide with today's.
        h.update(b"netfence-rule-v1\0");
        h.update(table.family.name().as_bytes());
        h.update(b"\0");
        h.update(table.name.as_bytes());
        h.update(b"\0");
        h.update(chain.as_bytes());
        h.update(b"\0");
        h.update(text.as_bytes());
        h.update(b"\0");
        h.update(occurrence.to_le_bytes());
        let d = h.finalize();
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..12]))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A rule netfence owns: its identity, its content (without the identity comment), and
/// its kernel handle once observed or applied.
#[derive(Debug, Clone, Eq)]
pub struct OwnedRule {
    /// The identity carried in the rule's comment.
    pub id: RuleId,
    /// The rule as written, minus the identity comment.
    pub rule: Rule,
    /// The kernel's handle; `None` in a desired state.
    pub handle: Option<u64>,
}

/// Handles are kernel bookkeeping, not content: two states with the same rules are equal
/// whatever handles the kernel gave them.
impl PartialEq for OwnedRule {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id && self.rule == o.rule
    }
}

impl OwnedRule {
    /// The rule as the kernel holds it: the content, with the identity as its userdata
    /// comment (which, unlike a `-m comment` match, costs packets nothing).
    pub fn kernel_rule(&self, marker: &str) -> Rule {
        let mut r = self.rule.clone();
        r.comment = Some(format!("{marker}{}", self.id));
        r
    }
}

/// A rule netfence did not write, or can't read: kept by handle and description only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueRule {
    /// The kernel's handle.
    pub handle: Option<u64>,
    /// The rule's `iptables-save` arguments, or a note that it is not in the vocabulary.
    pub text: String,
    /// The chain it jumps or goes to, when the dump shows one. The planner needs it even
    /// for a rule it may not touch: the kernel refuses to delete a chain that any rule
    /// still jumps to.
    pub jump: Option<String>,
    /// Whether it is another netfence instance's rule: a rule identity under another
    /// prefix's marker, jumping to a chain of that prefix. In a built-in chain the
    /// planner looks through such rules: each instance keeps its block ahead of every
    /// other writer's rules, and two instances that each moved their block in front of
    /// the other's would undo each other at every plan.
    pub peer: bool,
}

/// One rule in a chain.
// Nearly every entry is `Owned`: boxing it would cost each rule an allocation to shrink
// the few foreign and stray ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// netfence's.
    Owned(OwnedRule),
    /// Someone else's, in a chain netfence does not own (a built-in chain): never touched.
    Foreign(OpaqueRule),
    /// A rule netfence must remove: in one of its chains but not written by it (an admin's
    /// `iptables -A nf-...`), or carrying its marker with an id that doesn't match the
    /// content (tampered).
    Stray(OpaqueRule),
}

impl Entry {
    /// The kernel handle.
    pub fn handle(&self) -> Option<u64> {
        match self {
            Entry::Owned(r) => r.handle,
            Entry::Foreign(o) | Entry::Stray(o) => o.handle,
        }
    }

    /// The owned rule, if it is one.
    pub fn owned(&self) -> Option<&OwnedRule> {
        match self {
            Entry::Owned(r) => Some(r),
            _ => None,
        }
    }
}

/// A chain: a base chain (hooked, with a policy) or a user chain, with its rules in order.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// Hook, priority and policy of a base chain.
    pub base: Option<BaseChain>,
    entries: Vec<Entry>,
    /// How many owned entries carry each id. Unique in a consistent state; a batch may
    /// briefly hold a moved rule twice (see [`Chain::demote_duplicates`]).
    ids: HashMap<RuleId, u32>,
    /// Every entry was appended by [`Ruleset::push_rule`] since the chain was empty, so
    /// the j-th copy of a content carries that content's j-th identity: what lets
    /// [`Ruleset::rewrite_chain`] take identities over without computing them. Any other
    /// change (an observed rule, an applied plan's insert or delete) clears it.
    derived: bool,
    /// How many entries netfence did not write jump or go somewhere: nearly always none,
    /// so the planner's search for what holds a chain it deletes skips the chain without
    /// looking at its rules (a walk of every rule of a 10,000-pod state cost a burst's
    /// plan 0.2 ms).
    opaque_jumps: usize,
}

impl PartialEq for Chain {
    fn eq(&self, o: &Self) -> bool {
        self.base == o.base && self.entries == o.entries
    }
}

impl Eq for Chain {}

impl Chain {
    /// An empty chain.
    pub fn new(base: Option<BaseChain>) -> Self {
        Self {
            base,
            entries: Vec::new(),
            ids: HashMap::new(),
            derived: true,
            opaque_jumps: 0,
        }
    }

    /// Whether an entry netfence did not write (a stray, a foreign rule) jumps or goes
    /// to another chain.
    pub fn has_opaque_jumps(&self) -> bool {
        self.opaque_jumps > 0
    }

    /// The rules, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The owned rules, in order.
    pub fn owned(&self) -> impl Iterator<Item = &OwnedRule> {
        self.entries.iter().filter_map(Entry::owned)
    }

    /// Whether an owned rule with `id` is in the chain.
    pub fn contains(&self, id: &RuleId) -> bool {
        self.ids.contains_key(id)
    }

    /// The position of the entry with kernel handle `handle`.
    pub fn position_of(&self, handle: u64) -> Option<usize> {
        self.entries.iter().position(|e| e.handle() == Some(handle))
    }

    /// Inserts an entry at `index`.
    ///
    /// # Panics
    /// If `index > len`.
    pub(crate) fn insert(&mut self, index: usize, e: Entry) {
        self.derived = false;
        self.put(index, e);
    }

    /// [`Self::insert`] for [`Ruleset::push_rule`] and [`Ruleset::rewrite_chain`], which
    /// keep [`Self::derived`] true.
    fn put(&mut self, index: usize, e: Entry) {
        match &e {
            Entry::Owned(r) => *self.ids.entry(r.id.clone()).or_default() += 1,
            Entry::Foreign(o) | Entry::Stray(o) => {
                self.opaque_jumps += usize::from(o.jump.is_some())
            }
        }
        self.entries.insert(index, e);
    }

    /// Removes the entry at `index`.
    pub(crate) fn remove(&mut self, index: usize) -> Entry {
        self.derived = false;
        let e = self.entries.remove(index);
        match &e {
            Entry::Owned(r) => {
                if let Some(n) = self.ids.get_mut(&r.id) {
                    *n -= 1;
                    if *n == 0 {
                        self.ids.remove(&r.id);
                    }
                }
            }
            Entry::Foreign(o) | Entry::Stray(o) => {
                self.opaque_jumps -= usize::from(o.jump.is_some())
            }
        }
        e
    }

    /// Turns every owned entry whose id an earlier entry already carries into a stray, as
    /// a dump would classify it: in the kernel only the first copy is netfence's.
    pub(crate) fn demote_duplicates(&mut self, family: Family, marker: &str) {
        if self.ids.values().all(|&n| n <= 1) {
            return;
        }
        self.derived = false;
        let mut seen = HashSet::new();
        for e in &mut self.entries {
            if let Entry::Owned(r) = e {
                if !seen.insert(r.id.clone()) {
                    let text = r.kernel_rule(marker).to_iptables(family);
                    let jump = r.rule.jump_target().map(str::to_owned);
                    self.opaque_jumps += usize::from(jump.is_some());
                    *e = Entry::Stray(OpaqueRule {
                        handle: r.handle,
                        text,
                        jump,
                        peer: false,
                    });
                }
            }
        }
        self.ids = seen.into_iter().map(|id| (id, 1)).collect();
    }

    /// Appends an entry.
    pub(crate) fn push(&mut self, e: Entry) {
        let n = self.entries.len();
        self.insert(n, e);
    }

    /// Appends an owned rule whose identity [`Ruleset::push_rule`] derived.
    fn push_derived(&mut self, r: OwnedRule) {
        let n = self.entries.len();
        self.put(n, Entry::Owned(r));
    }

    /// The chains this chain's owned rules jump or go to.
    pub fn jump_targets(&self) -> impl Iterator<Item = &str> {
        self.owned().filter_map(|r| r.rule.jump_target())
    }

    /// The chains any rule of this chain is known to jump or go to, with the rule: owned
    /// rules, and the strays and foreign rules whose jump the dump showed. What the kernel
    /// counts when it refuses to delete a chain still jumped to.
    pub fn observed_jumps(&self) -> impl Iterator<Item = (&Entry, &str)> {
        self.entries.iter().filter_map(|e| {
            let target = match e {
                Entry::Owned(r) => r.rule.jump_target(),
                Entry::Foreign(o) | Entry::Stray(o) => o.jump.as_deref(),
            };
            Some((e, target?))
        })
    }
}

/// A table's chains, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// The chains.
    pub chains: BTreeMap<String, Chain>,
}

/// How a set's members act on what the rules allow. The planner orders member changes by
/// it, so that while a plan applies, every set is at least as closed as both its old and
/// its new contents (see [`crate::plan`]). It is planning metadata: the kernel does not
/// store it, so it takes no part in equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Polarity {
    /// More members can only restrict traffic (a set of isolated pods, a match that leads
    /// to a drop). Members are added before the rules change and removed after.
    #[default]
    Restricts,
    /// More members can only allow more traffic (the peers a policy accepts, the pods it
    /// selects for an accept). Members are removed before the rules change and added after.
    Grants,
}

/// An ipset netfence owns.
#[derive(Debug, Clone)]
pub struct IpSet {
    /// Address family.
    pub family: Family,
    /// The set type.
    pub kind: SetType,
    /// Capacity.
    pub maxelem: u32,
    /// How the members act on traffic (not stored in the kernel).
    pub polarity: Polarity,
    /// What an observed set has that netfence never writes (a timeout, a netmask, an
    /// extension, members netfence can't represent), in `ipset`'s words; `None` for
    /// every set netfence builds. A set with any differs in definition from every
    /// desired set, so the planner replaces it rather than reuse it: a timeout would
    /// let an isolated pod's member expire, a netmask would widen every address.
    pub unmodelled: Option<String>,
    /// Keyed by hash, not in order: every member a burst changes is looked up here by
    /// the compiler, the planner and the commit record (three copies of a set live at
    /// once), and in a `BTreeMap` of thousands those searches were the planner's largest
    /// cost at 1,000 policies (`MemberKey::cmp`, about a quarter of `plan_scoped`).
    /// Members are addresses the cluster's IPAM hands out, so foldhash's speed is worth
    /// more here than SipHash's resistance to chosen keys. Whoever needs an order sorts.
    members: Members,
}

/// A set's members, each kept by what its kernel key is: addresses bare, every other key
/// with its `nomatch` flag.
///
/// A running engine holds two copies of every set (the compiler's desired state and its
/// view of the kernel), and nearly every member is a pod address in a `hash:ip` set. As
/// a [`MemberKey`] with its flag a member takes 38 bytes; an IPv4 address takes 4, an
/// IPv6 one 16. At 10,000 pods and 1,000 policies (110,730 members per family) this took
/// a copy of the IPv4 ruleset from 11.1 to 6.9 MB, and the lookups the compiler and the
/// planner make in sets of thousands touch fewer cache lines. The key decides the map,
/// not the set's kind, so a set whose public `kind` is changed later keeps its members;
/// the two maps a set doesn't use stay empty and allocate nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Members {
    ip4: foldhash::HashSet<std::net::Ipv4Addr>,
    ip6: foldhash::HashSet<std::net::Ipv6Addr>,
    /// Networks, (address, port) and (network, interface) keys.
    keyed: foldhash::HashMap<MemberKey, bool>,
}

impl Members {
    /// The `nomatch` flag `k` is held with, if it is held.
    pub(crate) fn get(&self, k: &MemberKey) -> Option<bool> {
        match k {
            MemberKey::Ip(std::net::IpAddr::V4(a)) => self.ip4.contains(a).then_some(false),
            MemberKey::Ip(std::net::IpAddr::V6(a)) => self.ip6.contains(a).then_some(false),
            k => self.keyed.get(k).copied(),
        }
    }

    pub(crate) fn contains_key(&self, k: &MemberKey) -> bool {
        self.get(k).is_some()
    }

    /// Puts `k` with its flag; an address key has none ([`IpSet::key_of`] gives it
    /// `false`).
    fn insert(&mut self, k: MemberKey, nomatch: bool) {
        match k {
            MemberKey::Ip(std::net::IpAddr::V4(a)) => {
                self.ip4.insert(a);
            }
            MemberKey::Ip(std::net::IpAddr::V6(a)) => {
                self.ip6.insert(a);
            }
            k => {
                self.keyed.insert(k, nomatch);
            }
        }
    }

    fn remove(&mut self, k: &MemberKey) -> bool {
        match k {
            MemberKey::Ip(std::net::IpAddr::V4(a)) => self.ip4.remove(a),
            MemberKey::Ip(std::net::IpAddr::V6(a)) => self.ip6.remove(a),
            k => self.keyed.remove(k).is_some(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ip4.len() + self.ip6.len() + self.keyed.len()
    }

    /// Every key with its flag, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (MemberKey, bool)> + '_ {
        let ip = |a: std::net::IpAddr| (MemberKey::Ip(a), false);
        self.ip4
            .iter()
            .map(move |a| ip((*a).into()))
            .chain(self.ip6.iter().map(move |a| ip((*a).into())))
            .chain(self.keyed.iter().map(|(k, n)| (*k, *n)))
    }
}

/// A member without its `nomatch` flag: what the kernel keys an element by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum MemberKey {
    Ip(std::net::IpAddr),
    Net(IpNet),
    IpPort(std::net::IpAddr, u8, u16),
    NetIface(IpNet, IfName),
}

impl MemberKey {
    pub(crate) fn member(self, nomatch: bool) -> Member {
        match self {
            MemberKey::Ip(a) => Member::Ip(a),
            MemberKey::Net(net) => Member::Net { net, nomatch },
            MemberKey::IpPort(ip, protocol, port) => Member::IpPort { ip, protocol, port },
            MemberKey::NetIface(net, iface) => Member::NetIface {
                net,
                iface,
                nomatch,
            },
        }
    }
}

impl PartialEq for IpSet {
    fn eq(&self, o: &Self) -> bool {
        self.same_definition(o) && self.members == o.members
    }
}

impl Eq for IpSet {}

impl IpSet {
    /// An empty set with the default capacity.
    pub fn new(family: Family, kind: SetType, polarity: Polarity) -> Self {
        Self {
            family,
            kind,
            maxelem: DEFAULT_MAXELEM,
            polarity,
            unmodelled: None,
            members: Members::default(),
        }
    }

    /// What must match for the set to be reused in place: type, family, capacity, and
    /// nothing [`Self::unmodelled`].
    pub fn definition(&self) -> String {
        let mut d = format!(
            "{} family {} maxelem {}",
            self.kind,
            self.family.ipset_name(),
            self.maxelem
        );
        if let Some(u) = &self.unmodelled {
            d.push_str(", with ");
            d.push_str(u);
        }
        d
    }

    /// Whether `other` has this set's [`Self::definition`], compared field by field:
    /// the planner asks it of every set a burst touches, and formatting two strings
    /// each time was a share of its time in the allocator.
    pub fn same_definition(&self, other: &IpSet) -> bool {
        (self.kind, self.family, self.maxelem, &self.unmodelled)
            == (other.kind, other.family, other.maxelem, &other.unmodelled)
    }

    /// Adds a member (replacing the same network with the other `nomatch` flag).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the member's family or kind does not fit the set.
    pub fn insert(&mut self, m: Member) -> Result<(), Error> {
        let (key, nomatch) = self.key_of(m)?;
        self.members.insert(key, nomatch);
        Ok(())
    }

    /// Removes a member, whatever its `nomatch` flag; returns whether it was there.
    pub fn remove(&mut self, m: &Member) -> bool {
        match self.key_of(*m) {
            Ok((k, _)) => self.members.remove(&k),
            Err(_) => false,
        }
    }

    /// Whether a member is in the set with this very flag.
    pub fn contains(&self, m: &Member) -> bool {
        match self.key_of(*m) {
            Ok((k, nomatch)) => self.members.get(&k) == Some(nomatch),
            Err(_) => false,
        }
    }

    /// The members, sorted (by kernel key). Sorting costs what a tree's order used to on
    /// every insert, but only for whoever asks: a new set's fill, a render.
    pub fn members(&self) -> impl ExactSizeIterator<Item = Member> + '_ {
        let mut entries: Vec<(MemberKey, bool)> = self.members.iter().collect();
        entries.sort_unstable_by_key(|e| e.0);
        entries.into_iter().map(|(k, n)| k.member(n))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.members.len() == 0
    }

    /// The kernel key a member has in this set, if it fits the set.
    pub(crate) fn key(&self, m: Member) -> Option<MemberKey> {
        self.key_of(m).ok().map(|(k, _)| k)
    }

    pub(crate) fn entries(&self) -> &Members {
        &self.members
    }

    /// Whether an address matches the set as the kernel matches it: in `hash:net`, the
    /// longest network holding the address decides, and a `nomatch` one means no. A
    /// `hash:ip,port` set needs a port too ([`Self::matches_ip_port`]), a
    /// `hash:net,iface` set an interface ([`Self::matches_net_iface`]): never here.
    pub fn matches(&self, addr: std::net::IpAddr) -> bool {
        if Family::of_addr(&addr) != self.family {
            return false;
        }
        match self.kind {
            SetType::HashIpPort | SetType::HashNetIface => false,
            SetType::HashIp => self.members.contains_key(&MemberKey::Ip(addr)),
            SetType::HashNet => {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                (0..=max).rev().find_map(|len| {
                    let net = IpNet::new(addr, len).ok()?.trunc();
                    self.members
                        .get(&MemberKey::Net(net))
                        .map(|nomatch| !nomatch)
                }) == Some(true)
            }
        }
    }

    /// Whether (address, interface) matches a `hash:net,iface` set as the kernel matches
    /// it: prefix lengths are tried longest first, and the first length at which *some*
    /// entry holds the address decides, even when that entry is on another interface
    /// (then: no match). That is `mtype_test_cidrs()` stopping on its `multi` count; it
    /// makes a `nomatch` of one interface hide shorter entries of every other interface.
    /// A linear scan per length: this models the kernel for tests, it is not a hot path.
    pub fn matches_net_iface(&self, addr: std::net::IpAddr, iface: &IfName) -> bool {
        if self.kind != SetType::HashNetIface || Family::of_addr(&addr) != self.family {
            return false;
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        for len in (0..=max).rev() {
            let Ok(net) = IpNet::new(addr, len).map(|n| n.trunc()) else {
                continue;
            };
            let mut seen = false;
            for (k, nomatch) in self.members.iter() {
                if let MemberKey::NetIface(n, i) = k {
                    if n == net {
                        if i == *iface {
                            return !nomatch;
                        }
                        seen = true;
                    }
                }
            }
            if seen {
                return false;
            }
        }
        false
    }

    /// Whether (address, protocol, port) matches a `hash:ip,port` set.
    pub fn matches_ip_port(&self, addr: std::net::IpAddr, protocol: u8, port: u16) -> bool {
        self.kind == SetType::HashIpPort
            && self
                .members
                .contains_key(&MemberKey::IpPort(addr, protocol, port))
    }

    /// The kernel key of a member in this set: host addresses of a `hash:net` set are
    /// host networks, as the kernel lists them; networks are truncated.
    fn key_of(&self, m: Member) -> Result<(MemberKey, bool), Error> {
        if m.family() != self.family {
            return Err(Error::invalid(
                format!("member {m}"),
                format!("not a {} member", self.family.ipset_name()),
            ));
        }
        if let Some(reason) = netfilter::ipset::wire::check_member(&m) {
            return Err(Error::invalid(format!("member {m}"), reason));
        }
        match (self.kind, m) {
            (SetType::HashIp, Member::Ip(a)) => Ok((MemberKey::Ip(a), false)),
            (
                SetType::HashIp,
                Member::Net {
                    net,
                    nomatch: false,
                },
            ) if net.prefix_len() == net.max_prefix_len() => Ok((MemberKey::Ip(net.addr()), false)),
            (SetType::HashIp, Member::Net { .. }) => Err(Error::invalid(
                format!("member {m}"),
                "hash:ip takes host addresses only",
            )),
            (SetType::HashNet, Member::Ip(a)) => {
                let len = if a.is_ipv4() { 32 } else { 128 };
                let net = IpNet::new(a, len).expect("host prefix length is valid");
                Ok((MemberKey::Net(net), false))
            }
            (SetType::HashIpPort, Member::IpPort { ip, protocol, port }) => {
                Ok((MemberKey::IpPort(ip, protocol, port), false))
            }
            (
                SetType::HashNetIface,
                Member::NetIface {
                    net,
                    iface,
                    nomatch,
                },
            ) => Ok((MemberKey::NetIface(net.trunc(), iface), nomatch)),
            (SetType::HashIpPort | SetType::HashNetIface, _)
            | (_, Member::IpPort { .. } | Member::NetIface { .. }) => Err(Error::invalid(
                format!("member {m}"),
                format!("does not fit a {} set", self.kind),
            )),
            (SetType::HashNet, Member::Net { net, nomatch }) => {
                Ok((MemberKey::Net(net.trunc()), nomatch))
            }
        }
    }
}

/// A set netfence does not own, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignSet {
    /// Its type name, e.g. `hash:ip` or `list:set`.
    pub type_name: String,
}

/// The declarative state of one network namespace, as far as netfence is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    prefix: String,
    marker: String,
    tables: BTreeMap<TableId, Table>,
    sets: BTreeMap<String, IpSet>,
    foreign_sets: BTreeMap<String, ForeignSet>,
}

impl Default for Ruleset {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX).expect("the default prefix is valid")
    }
}

impl Ruleset {
    /// An empty ruleset owning names that start with `prefix`.
    ///
    /// A prefix is a letter, then letters or digits, then exactly one `-`, at most
    /// [`MAX_PREFIX`] bytes: `nf-` (the default), `xf-`, `a1-`. The comments of its
    /// rules start with the part before the `-` and a `:` (`nf:`). Rulesets with
    /// different prefixes own disjoint names and rules, so two instances coexist.
    ///
    /// # Errors
    /// [`Error::Invalid`] for any other prefix (`nf`, `nf_`, `nf.`, `nf-b-`).
    pub fn new(prefix: &str) -> Result<Self, Error> {
        // Why no more than this: ownership is `starts_with(prefix)`, and a rule is claimed
        // by its comment's marker with an id that hashes table, chain and content but not
        // the prefix. A prefix that can begin another's names (`nf-` and `nf-b-`) would
        // own that instance's chains and sets, and delete them as its own; two prefixes
        // with one marker (`nf-`, `nf_`, `nf.` and `nf` all made `nf:`) would adopt each
        // other's rules, the jumps from FORWARD included, and delete them: fail-open.
        // With a stem of letters and digits and one `-` to end it, a name's owner is
        // whatever comes before its first `-`, and the marker differs with the stem.
        let stem = prefix.strip_suffix('-').filter(|stem| {
            prefix.len() <= MAX_PREFIX
                && stem.starts_with(|c: char| c.is_ascii_alphabetic())
                && stem.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        let Some(stem) = stem else {
            return Err(Error::invalid(
                format!("name prefix {prefix:?}"),
                format!(
                    "must be a letter, then letters or digits, then one '-' (like {DEFAULT_PREFIX}), \
                     at most {MAX_PREFIX} bytes"
                ),
            ));
        };
        let marker = format!("{stem}:");
        Ok(Self {
            prefix: prefix.to_owned(),
            marker,
            tables: BTreeMap::new(),
            sets: BTreeMap::new(),
            foreign_sets: BTreeMap::new(),
        })
    }

    /// The owned name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The start of the comment of every owned rule (`nf:` for prefix `nf-`).
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Whether a chain or set name is netfence's: it starts with the prefix. (No name
    /// of a ruleset with another prefix does; see [`Self::new`].)
    pub fn owns(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
    }

    /// The kernel name for an owned chain called `logical`: `prefix + logical` when it fits
    /// in 28 bytes, otherwise `prefix + '_' +` a hash of it (as Calico hashes long names).
    pub fn chain_name(&self, logical: &str) -> String {
        fit_name(&self.prefix, logical, MAX_CHAIN_NAME)
    }

    /// The kernel name for an owned set called `logical`, within 31 bytes (see
    /// [`Self::chain_name`]).
    pub fn set_name(&self, logical: &str) -> String {
        fit_name(&self.prefix, logical, MAX_SET_NAME)
    }

    /// The tables.
    pub fn tables(&self) -> &BTreeMap<TableId, Table> {
        &self.tables
    }

    /// A table.
    pub fn table(&self, id: &TableId) -> Option<&Table> {
        self.tables.get(id)
    }

    /// A chain.
    pub fn chain(&self, table: &TableId, name: &str) -> Option<&Chain> {
        self.tables.get(table)?.chains.get(name)
    }

    pub(crate) fn chain_mut(&mut self, table: &TableId, name: &str) -> Option<&mut Chain> {
        self.tables.get_mut(table)?.chains.get_mut(name)
    }

    pub(crate) fn tables_mut(&mut self) -> &mut BTreeMap<TableId, Table> {
        &mut self.tables
    }

    /// The owned sets.
    pub fn sets(&self) -> &BTreeMap<String, IpSet> {
        &self.sets
    }

    /// An owned set.
    pub fn set(&self, name: &str) -> Option<&IpSet> {
        self.sets.get(name)
    }

    /// An owned set, to change its members.
    pub fn set_mut(&mut self, name: &str) -> Option<&mut IpSet> {
        self.sets.get_mut(name)
    }

    pub(crate) fn sets_mut(&mut self) -> &mut BTreeMap<String, IpSet> {
        &mut self.sets
    }

    /// Sets seen in the kernel that netfence does not own.
    pub fn foreign_sets(&self) -> &BTreeMap<String, ForeignSet> {
        &self.foreign_sets
    }

    /// Records a set that is not netfence's (when observing).
    pub fn add_foreign_set(&mut self, name: &str, set: ForeignSet) {
        self.foreign_sets.insert(name.to_owned(), set);
    }

    /// Makes sure a table is in the model (created in the kernel if missing, never deleted).
    pub fn add_table(&mut self, id: TableId) -> &mut Table {
        self.tables.entry(id).or_default()
    }

    /// Adds a chain. An owned chain (named with the prefix) may be a user or base chain; a
    /// foreign chain may only be a base chain, which netfence creates when it is missing,
    /// to hold its jump rules (iptables' `INPUT`, `FORWARD`, `OUTPUT`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a name over 28 bytes, a foreign user chain, or a chain that
    /// is already there with another hook.
    pub fn add_chain(
        &mut self,
        table: &TableId,
        name: &str,
        base: Option<BaseChain>,
    ) -> Result<(), Error> {
        let what = || format!("chain {table} {name}");
        check_kernel_name(name, MAX_CHAIN_NAME).map_err(|r| Error::invalid(what(), r))?;
        if !self.owns(name) && base.is_none() {
            return Err(Error::invalid(
                what(),
                format!(
                    "a user chain must be named with the prefix {:?}; netfence only adds rules to foreign built-in chains",
                    self.prefix
                ),
            ));
        }
        let t = self.add_table(table.clone());
        match t.chains.get(name) {
            Some(c) if c.base != base => Err(Error::invalid(
                what(),
                "already in the ruleset with another hook, priority or policy",
            )),
            Some(_) => Ok(()),
            None => {
                t.chains.insert(name.to_owned(), Chain::new(base));
                Ok(())
            }
        }
    }

    /// Appends an owned rule to a chain of the ruleset and returns its identity.
    ///
    /// The rule is checked as the encoder checks it, and its addresses are truncated to
    /// their prefix, as the kernel stores them, so that what is observed later is equal.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the rule: no such chain, an invalid rule, a comment that
    /// imitates the identity marker, or too many identical copies.
    pub fn push_rule(&mut self, table: &TableId, chain: &str, rule: Rule) -> Result<RuleId, Error> {
        let marker = self.marker.clone();
        let c = self
            .tables
            .get_mut(table)
            .and_then(|t| t.chains.get_mut(chain))
            .ok_or_else(|| {
                Error::invalid(
                    format!("rule for chain {table} {chain}"),
                    "no such chain in the ruleset; add it first",
                )
            })?;
        let n = c.entries().len() + 1;
        let rule = canonical(rule);
        // Rendered once: for the identity, and for the error that names the rule (as it
        // would be stored: addresses masked to their prefix).
        let text = rule.to_iptables(table.family);
        let what = || format!("rule #{n} of chain {table} {chain} ({text})");
        nft::validate(&rule, table.family).map_err(|e| Error::invalid(what(), e.to_string()))?;
        if rule
            .matches
            .iter()
            .any(|m| matches!(m, Match::Comment(t) if t.starts_with(&marker)))
        {
            return Err(Error::invalid(
                what(),
                format!("comments starting with {marker:?} are netfence's rule identities"),
            ));
        }
        if rule.comment.is_some() {
            return Err(Error::invalid(
                what(),
                "the userdata comment carries netfence's rule identity; use a -m comment \
                 match for a comment of your own",
            ));
        }
        let id = (0..MAX_DUPLICATES)
            .map(|k| RuleId::of_text(table, chain, &text, k))
            .find(|id| !c.contains(id))
            .ok_or_else(|| {
                Error::invalid(
                    what(),
                    format!("more than {MAX_DUPLICATES} identical copies in one chain"),
                )
            })?;
        c.push_derived(OwnedRule {
            id: id.clone(),
            rule,
            handle: None,
        });
        Ok(id)
    }

    /// Rewrites the rules of a chain: [`Self::clear_chain`], then [`Self::push_rule`] for
    /// each of `rules`, with the same identities and the same errors (the chain then
    /// holds the rules before the one refused). A rule equal to one the chain held before
    /// is not rendered, checked and hashed again: the j-th copy of a content takes the
    /// identity of the j-th copy the chain held, which is the one `push_rule` would
    /// compute, as long as the chain was built by `push_rule` alone (otherwise every rule
    /// is pushed). A compiler that rewrites a namespace's dispatch chain for one changed
    /// policy keeps most of its lines; rendering and hashing them again was most of
    /// `push_rule`'s time in a burst of policy deltas.
    ///
    /// Returns the chain as it was (`None`, with no rule pushed, when there is no such
    /// chain and `rules` is empty).
    ///
    /// # Errors
    /// As [`Self::push_rule`].
    pub fn rewrite_chain(
        &mut self,
        table: &TableId,
        chain: &str,
        rules: impl IntoIterator<Item = Rule>,
    ) -> Result<Option<Chain>, Error> {
        let Some(old) = self.clear_chain(table, chain) else {
            for r in rules {
                self.push_rule(table, chain, r)?;
            }
            return Ok(None);
        };
        let held: Vec<&OwnedRule> = if old.derived {
            old.owned().collect()
        } else {
            Vec::new()
        };
        // While the rules come back in their old order, each is compared with the one in
        // its old place; from the first that does not, the rest of the old rules are
        // looked up by content, each content's copies in order. Either way the j-th copy
        // of a content meets the j-th copy held.
        let mut same = 0;
        let mut rest: Option<foldhash::HashMap<&Rule, std::collections::VecDeque<&RuleId>>> = None;
        for r in rules {
            let rule = canonical(r);
            let reuse = match &mut rest {
                None if held.get(same).is_some_and(|h| h.rule == rule) => {
                    same += 1;
                    Some(&held[same - 1].id)
                }
                _ => rest
                    .get_or_insert_with(|| {
                        let mut m: foldhash::HashMap<_, std::collections::VecDeque<_>> =
                            foldhash::HashMap::default();
                        for h in &held[same..] {
                            m.entry(&h.rule).or_default().push_back(&h.id);
                        }
                        m
                    })
                    .get_mut(&rule)
                    .and_then(|ids| ids.pop_front()),
            };
            match reuse {
                Some(id) => self
                    .chain_mut(table, chain)
                    .expect("cleared above")
                    .push_derived(OwnedRule {
                        id: id.clone(),
                        rule,
                        handle: None,
                    }),
                None => {
                    self.push_rule(table, chain, rule)?;
                }
            }
        }
        drop((held, rest));
        Ok(Some(old))
    }

    /// Adds an owned set, empty or not.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the name is not owned, too long, or taken.
    pub fn add_set(&mut self, name: &str, set: IpSet) -> Result<(), Error> {
        let what = || format!("set {name}");
        check_kernel_name(name, MAX_SET_NAME).map_err(|r| Error::invalid(what(), r))?;
        if !self.owns(name) {
            return Err(Error::invalid(
                what(),
                format!("owned sets are named with the prefix {:?}", self.prefix),
            ));
        }
        if self.sets.contains_key(name) {
            return Err(Error::invalid(what(), "already in the ruleset"));
        }
        self.sets.insert(name.to_owned(), set);
        Ok(())
    }

    /// Removes an owned set from the model.
    pub fn remove_set(&mut self, name: &str) -> Option<IpSet> {
        self.sets.remove(name)
    }

    /// Removes a chain (with its rules) from the model; the planner deletes it from the
    /// kernel once nothing jumps to it.
    pub fn remove_chain(&mut self, table: &TableId, name: &str) -> Option<Chain> {
        self.tables.get_mut(table)?.chains.remove(name)
    }

    /// Empties a chain of a desired state, keeping the chain and its hook: the way to
    /// rewrite a chain's rules, since [`Self::push_rule`] only appends. Rewritten rules that come
    /// back with the same content keep their identity, so the planner sees no change.
    /// Returns the chain as it was, for a caller that frees it later.
    pub fn clear_chain(&mut self, table: &TableId, name: &str) -> Option<Chain> {
        let c = self.chain_mut(table, name)?;
        let base = c.base;
        Some(std::mem::replace(c, Chain::new(base)))
    }

    /// Checks the references of every owned rule: a jump goes to an owned chain of the
    /// same table, and a set lookup names an owned set of the table's family. (The kernel
    /// would refuse the first; the second would leave a rule matching nothing.)
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), Error> {
        // Hashed views of the names: a full check runs over every rule, and the sorted maps'
        // string comparisons dominated it (measured by the plan benchmark).
        let sets: HashMap<&str, Family> = self
            .sets
            .iter()
            .map(|(n, s)| (n.as_str(), s.family))
            .collect();
        for (tid, t) in &self.tables {
            let chains: HashSet<&str> = t.chains.keys().map(String::as_str).collect();
            for (cname, c) in &t.chains {
                for r in c.owned() {
                    let jump_ok = r
                        .rule
                        .jump_target()
                        .is_none_or(|j| self.owns(j) && chains.contains(j));
                    let sets_ok = r.rule.set_names().all(|s| sets.get(s) == Some(&tid.family));
                    if !(jump_ok && sets_ok) {
                        // Let the one-chain check find and word the error.
                        return self.validate_chain(tid, cname);
                    }
                }
            }
        }
        Ok(())
    }

    /// [`Self::validate`] for one chain (absent chains are fine).
    ///
    /// # Errors
    /// As [`Self::validate`].
    pub fn validate_chain(&self, tid: &TableId, cname: &str) -> Result<(), Error> {
        let Some(t) = self.tables.get(tid) else {
            return Ok(());
        };
        let Some(c) = t.chains.get(cname) else {
            return Ok(());
        };
        for (i, r) in c.owned().enumerate() {
            let what = || format!("rule #{} ({}) of chain {tid} {cname}", i + 1, r.id);
            if let Some(j) = r.rule.jump_target() {
                if !self.owns(j) || !t.chains.contains_key(j) {
                    return Err(Error::invalid(
                        what(),
                        format!("jumps to {j}, which is not an owned chain of {tid}"),
                    ));
                }
            }
            for s in r.rule.set_names() {
                match self.sets.get(s) {
                    Some(set) if set.family == tid.family => {}
                    Some(set) => {
                        return Err(Error::invalid(
                            what(),
                            format!(
                                "looks up {s}, a {} set, from a {} table",
                                set.family.ipset_name(),
                                tid.family
                            ),
                        ))
                    }
                    None => {
                        return Err(Error::invalid(
                            what(),
                            format!("looks up {s}, which is not an owned set"),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// The part of the state netfence owns: owned sets, owned chains, and the owned rules
    /// of foreign chains (whose hook and foreign rules are dropped). Two states with equal
    /// owned views differ only in what netfence must not touch.
    pub fn owned_view(&self) -> Ruleset {
        let mut out = Ruleset {
            prefix: self.prefix.clone(),
            marker: self.marker.clone(),
            tables: BTreeMap::new(),
            sets: self.sets.clone(),
            foreign_sets: BTreeMap::new(),
        };
        for (tid, t) in &self.tables {
            let mut nt = Table::default();
            for (name, c) in &t.chains {
                let owned = self.owns(name);
                if !owned && c.owned().next().is_none() {
                    continue;
                }
                // A foreign chain's hook is not netfence's to compare.
                let mut nc = Chain::new(if owned { c.base } else { None });
                for e in c.owned() {
                    nc.push(Entry::Owned(e.clone()));
                }
                nt.chains.insert(name.clone(), nc);
            }
            if !nt.chains.is_empty() {
                out.tables.insert(tid.clone(), nt);
            }
        }
        out
    }

    /// What netfence must leave alone: foreign sets, foreign chains with their hooks, and
    /// the foreign rules of every chain, in order.
    pub fn foreign_view(&self) -> Vec<(TableId, String, Option<BaseChain>, Vec<OpaqueRule>)> {
        let mut out = Vec::new();
        for (tid, t) in &self.tables {
            for (name, c) in &t.chains {
                if self.owns(name) {
                    continue;
                }
                let rules = c
                    .entries()
                    .iter()
                    .filter_map(|e| match e {
                        Entry::Foreign(o) => Some(o.clone()),
                        _ => None,
                    })
                    .collect();
                out.push((tid.clone(), name.clone(), c.base, rules));
            }
        }
        out
    }

    /// Classifies a rule read from chain `chain` of the kernel (`None`: not in the
    /// vocabulary) into an [`Entry`], recomputing the identity of an owned rule. A second
    /// copy of an identity already in `chain` is a stray.
    pub fn classify(
        &self,
        table: &TableId,
        chain_name: &str,
        chain: &Chain,
        rule: Option<&Rule>,
        handle: Option<u64>,
        text: impl FnOnce() -> String,
    ) -> Entry {
        let owned_chain = self.owns(chain_name);
        let jump = rule.and_then(Rule::jump_target);
        let opaque = |text: String| OpaqueRule {
            handle,
            text,
            jump: jump.map(str::to_owned),
            peer: false,
        };
        let Some(rule) = rule else {
            return if owned_chain {
                Entry::Stray(opaque(text()))
            } else {
                Entry::Foreign(opaque(text()))
            };
        };
        let marker = self.marker.as_str();
        // The identity in userdata; or, written before identities moved there, in a
        // leading `-m comment` (`legacy`). Still netfence's, with the same identity (which
        // hashes the content only); it keeps its xt match until its content changes and
        // it is rewritten.
        let legacy = || match rule.matches.first() {
            Some(Match::Comment(c)) => c.strip_prefix(marker),
            _ => None,
        };
        let claimed = match rule.comment.as_deref().and_then(|c| c.strip_prefix(marker)) {
            Some(c) => Some((c, false)),
            None => legacy().map(|c| (c, true)),
        };
        let Some((claimed, legacy)) = claimed else {
            return if owned_chain {
                Entry::Stray(opaque(rule.to_iptables(table.family)))
            } else {
                Entry::Foreign(OpaqueRule {
                    peer: is_peer_rule(rule),
                    ..opaque(rule.to_iptables(table.family))
                })
            };
        };
        // Only a claimed rule is copied: most rules of a base chain are other writers'.
        let mut content = rule.clone();
        if legacy {
            content.matches.remove(0);
        } else {
            content.comment = None;
        }
        let id = (claimed.len() == ID_LEN)
            .then(|| {
                (0..MAX_DUPLICATES)
                    .map(|k| RuleId::compute(table, chain_name, &content, k))
                    .find(|id| id.as_str() == claimed)
            })
            .flatten();
        match id {
            Some(id) if !chain.contains(&id) => Entry::Owned(OwnedRule {
                id,
                rule: content,
                handle,
            }),
            // A tampered rule, or a second copy of one already seen: either way not a rule
            // the model can hold, so it goes.
            _ => Entry::Stray(opaque(rule.to_iptables(table.family))),
        }
    }

    /// Every set name an owned rule of the state looks up, with how many rules do.
    pub fn set_references(&self) -> BTreeMap<&str, usize> {
        let mut out: BTreeMap<&str, usize> = BTreeMap::new();
        for t in self.tables.values() {
            for c in t.chains.values() {
                for r in c.owned() {
                    for s in r.rule.set_names() {
                        *out.entry(s).or_default() += 1;
                    }
                }
            }
        }
        out
    }

    /// Number of owned rules.
    pub fn owned_rule_count(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.chains.values())
            .map(|c| c.owned().count())
            .sum()
    }

    /// Owned chain names per table (for tests and metrics).
    pub fn owned_chains(&self) -> BTreeSet<(TableId, String)> {
        self.tables
            .iter()
            .flat_map(|(tid, t)| {
                t.chains
                    .keys()
                    .filter(|n| self.owns(n))
                    .map(move |n| (tid.clone(), n.clone()))
            })
            .collect()
    }
}

/// Whether `rule` carries another netfence instance's identity: a userdata comment
/// `<stem>:<id>` (a prefix's marker, [`Ruleset::new`]) and a jump to a chain named with
/// that prefix, `<stem>-...`. The caller checked that it is not this instance's marker.
fn is_peer_rule(rule: &Rule) -> bool {
    let Some((stem, id)) = rule.comment.as_deref().and_then(|c| c.split_once(':')) else {
        return false;
    };
    id.len() == ID_LEN
        && stem.starts_with(|c: char| c.is_ascii_alphabetic())
        && stem.bytes().all(|b| b.is_ascii_alphanumeric())
        && rule
            .jump_target()
            .and_then(|j| j.strip_prefix(stem))
            .is_some_and(|rest| rest.starts_with('-'))
}

/// The form the kernel gives back: addresses truncated to their prefix, ranges of one
/// port written as that port, the protocol as its well-known variant.
fn canonical(mut r: Rule) -> Rule {
    for a in [&mut r.src, &mut r.dst].into_iter().flatten() {
        a.value = a.value.trunc();
    }
    if let Some(p) = &mut r.protocol {
        p.value = nft::Protocol::from_number(p.value.number());
    }
    r
}

fn check_kernel_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!("name must be 1 to {max} bytes, is {}", name.len()));
    }
    if name.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("name has a space or a control character".into());
    }
    Ok(())
}

fn fit_name(prefix: &str, logical: &str, max: usize) -> String {
    let plain = format!("{prefix}{logical}");
    if plain.len() <= max && !logical.starts_with('_') {
        return plain;
    }
    let d = Sha256::digest(logical.as_bytes());
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
    let room = max - prefix.len() - 1;
    format!("{prefix}_{}", &hash[..room.min(hash.len())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use netfilter::nft::{Hook, Neg, Policy, Target};

    /// An address set keeps bare addresses; its kind and family are public fields, and a
    /// caller that changes them on a set with members gets every member kept, no panic.
    #[test]
    fn set_members_by_kind_and_a_kind_changed_afterwards() {
        let ip = |s: &str| Member::Ip(s.parse().unwrap());
        let net = |s: &str, nomatch| Member::Net {
            net: s.parse().unwrap(),
            nomatch,
        };
        for (family, a, b) in [
            (Family::Ipv4, "10.0.0.1", "10.0.0.2"),
            (Family::Ipv6, "fd00::1", "fd00::2"),
        ] {
            let mut s = IpSet::new(family, SetType::HashIp, Polarity::Grants);
            s.insert(ip(a)).unwrap();
            s.insert(ip(b)).unwrap();
            s.insert(ip(a)).unwrap();
            assert_eq!(s.len(), 2);
            assert!(s.contains(&ip(a)) && s.matches(a.parse().unwrap()));
            assert!(s.remove(&ip(b)) && !s.remove(&ip(b)));
            assert_eq!(s.members().collect::<Vec<_>>(), [ip(a)]);
            // A host network is the same kernel key in a hash:ip set.
            let host = if family == Family::Ipv4 { 32 } else { 128 };
            assert!(s.contains(&net(&format!("{a}/{host}"), false)));

            s.kind = SetType::HashNet;
            let cidr = if family == Family::Ipv4 {
                "10.1.0.0/16"
            } else {
                "fd01::/64"
            };
            s.insert(net(cidr, true)).unwrap();
            assert_eq!(s.len(), 2);
            assert!(s.contains(&net(cidr, true)));
            assert!(
                s.members().any(|m| m == ip(a)),
                "the address member is kept"
            );
        }
    }

    fn tid() -> TableId {
        TableId::filter(Family::Ipv4)
    }

    #[test]
    fn prefix_and_marker() {
        let r = Ruleset::new("nf-").unwrap();
        assert_eq!(r.marker(), "nf:");
        assert!(r.owns("nf-x"));
        assert!(!r.owns("KUBE-x"));
        assert!(Ruleset::new("").is_err());
        assert!(Ruleset::new("1abc").is_err());
        assert!(Ruleset::new("averyveryverylongprefix").is_err());
        assert!(Ruleset::new("a b").is_err());
    }

    #[test]
    fn a_prefix_is_a_stem_and_one_dash() {
        let longest = format!("{}-", "a".repeat(MAX_PREFIX - 1));
        for ok in ["nf-", "xf-", "a1-", "A-", "Nf9-", longest.as_str()] {
            let r = Ruleset::new(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(r.marker(), format!("{}:", &ok[..ok.len() - 1]));
        }
        let too_long = format!("{}-", "a".repeat(MAX_PREFIX));
        for bad in [
            "nf_",
            "nf.",
            "nf",
            "nf-b-",
            "nf--",
            "n-f-",
            "nf_b-",
            "nf.b-",
            "-",
            "1a-",
            "-nf-",
            "a b-",
            "",
            too_long.as_str(),
        ] {
            let e = Ruleset::new(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("then one '-'"), "{e}");
        }
    }

    /// Every valid prefix of up to 5 bytes over `a`, `b`, `1`, `-`, `_`, `.` (the old
    /// alphabet): any two distinct ones own none of each other's chain and set names,
    /// plain or hashed, and neither claims the other's rule comments.
    #[test]
    fn distinct_prefixes_never_own_each_other_s_names_nor_rules() {
        const ALPHABET: &[u8] = b"ab1-_.";
        let mut candidates = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..5 {
            candidates = candidates
                .iter()
                .flat_map(|s| ALPHABET.iter().map(move |&c| format!("{s}{}", c as char)))
                .collect();
            all.extend(candidates.iter().cloned());
        }
        let valid: Vec<Ruleset> = all.iter().filter_map(|p| Ruleset::new(p).ok()).collect();
        let logical = [
            "fw",
            "fw-a",
            "-x",
            "_x",
            ".x",
            "b-",
            "1-fw",
            "a-name-long-enough-to-be-hashed-into-the-limit",
        ];
        let id = RuleId::compute(&tid(), "FORWARD", &Rule::new(Target::Accept), 0);
        for p in &valid {
            for q in valid.iter().filter(|q| q.prefix() != p.prefix()) {
                let names = logical
                    .iter()
                    .flat_map(|l| [q.chain_name(l), q.set_name(l)])
                    .chain([q.prefix().to_owned()]);
                for name in names {
                    assert!(q.owns(&name), "{} should own {name}", q.prefix());
                    assert!(
                        !p.owns(&name),
                        "{} owns {}'s {name}",
                        p.prefix(),
                        q.prefix()
                    );
                }
                let comment = format!("{}{}", q.marker(), id.as_str());
                assert!(
                    !comment.starts_with(p.marker()),
                    "{} claims {}'s rule {comment}",
                    p.prefix(),
                    q.prefix()
                );
            }
        }
        // a or b, then {a,b,1}^0..3, then '-': 2 * (1 + 3 + 9 + 27).
        assert_eq!(valid.len(), 80);
    }

    #[test]
    fn long_names_are_hashed_deterministically_within_limits() {
        let r = Ruleset::default();
        assert_eq!(r.chain_name("fw-abc"), "nf-fw-abc");
        let long = "pi-some-namespace-with-a-long-name/policy";
        let a = r.chain_name(long);
        assert_eq!(a, r.chain_name(long));
        assert_eq!(a.len(), MAX_CHAIN_NAME);
        assert!(a.starts_with("nf-_"));
        assert_ne!(a, r.chain_name("pi-some-namespace-with-a-long-name/policz"));
        let s = r.set_name(long);
        assert_eq!(s.len(), MAX_SET_NAME);
        // A logical name that looks hashed is hashed too, so it can't collide.
        assert!(r.chain_name("_x").starts_with("nf-_") && r.chain_name("_x").len() == 28);
    }

    #[test]
    fn identity_depends_on_place_and_content_and_is_unique_per_chain() {
        let mut r = Ruleset::default();
        let t = tid();
        r.add_chain(&t, "nf-a", None).unwrap();
        r.add_chain(&t, "nf-b", None).unwrap();
        let rule = Rule::new(Target::Accept);
        let a1 = r.push_rule(&t, "nf-a", rule.clone()).unwrap();
        let a2 = r.push_rule(&t, "nf-a", rule.clone()).unwrap();
        let b1 = r.push_rule(&t, "nf-b", rule.clone()).unwrap();
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
        assert_eq!(a1.as_str().len(), ID_LEN);
        assert_eq!(a1, RuleId::compute(&t, "nf-a", &rule, 0));
    }

    #[test]
    fn rules_are_checked_and_canonical() {
        let mut r = Ruleset::default();
        let t = tid();
        r.add_chain(&t, "nf-a", None).unwrap();
        let mut rule = Rule::new(Target::Accept);
        rule.src = Some(Neg::is("10.1.2.3/8".parse().unwrap()));
        r.push_rule(&t, "nf-a", rule).unwrap();
        let got = r.chain(&t, "nf-a").unwrap().owned().next().unwrap();
        assert_eq!(
            got.rule.src.as_ref().unwrap().value.to_string(),
            "10.0.0.0/8"
        );
        // A v6 address in a v4 table, and a fake identity comment, are refused.
        let mut bad = Rule::new(Target::Accept);
        bad.src = Some(Neg::is("fd00::/8".parse().unwrap()));
        let e = r.push_rule(&t, "nf-a", bad).unwrap_err().to_string();
        assert!(e.contains("chain ip filter nf-a"), "{e}");
        let mut fake = Rule::new(Target::Accept);
        fake.matches.push(Match::Comment("nf:xyz".into()));
        assert!(r.push_rule(&t, "nf-a", fake).is_err());
        assert!(r
            .push_rule(&t, "nf-missing", Rule::new(Target::Drop))
            .is_err());
    }

    #[test]
    fn chains_and_sets_need_owned_names() {
        let mut r = Ruleset::default();
        let t = tid();
        assert!(r.add_chain(&t, "KUBE-X", None).is_err());
        let fwd = BaseChain {
            hook: Hook::Forward,
            priority: 0,
            policy: Policy::Accept,
        };
        r.add_chain(&t, "FORWARD", Some(fwd)).unwrap();
        assert!(r
            .add_chain(&t, "nf-this-name-is-too-long-for-nft", None)
            .is_err());
        let s = IpSet::new(Family::Ipv4, SetType::HashIp, Polarity::Grants);
        assert!(r.add_set("pods", s.clone()).is_err());
        r.add_set("nf-pods", s.clone()).unwrap();
        assert!(r.add_set("nf-pods", s).is_err());
    }

    #[test]
    fn validate_checks_jumps_and_set_families() {
        let mut r = Ruleset::default();
        let t = tid();
        r.add_chain(&t, "nf-a", None).unwrap();
        r.push_rule(&t, "nf-a", Rule::new(Target::Jump("nf-b".into())))
            .unwrap();
        assert!(r.validate().unwrap_err().to_string().contains("nf-b"));
        r.add_chain(&t, "nf-b", None).unwrap();
        r.validate().unwrap();
        let mut look = Rule::new(Target::Accept);
        look.matches.push(Match::Set {
            negate: false,
            name: "nf-s6".into(),
            dirs: vec![nft::SetDir::Src],
        });
        r.push_rule(&t, "nf-b", look).unwrap();
        assert!(r.validate().is_err());
        r.add_set(
            "nf-s6",
            IpSet::new(Family::Ipv6, SetType::HashIp, Polarity::Grants),
        )
        .unwrap();
        assert!(r.validate().unwrap_err().to_string().contains("inet6"));
    }

    #[test]
    fn hash_net_matching_follows_the_longest_prefix_and_nomatch() {
        let mut s = IpSet::new(Family::Ipv4, SetType::HashNet, Polarity::Grants);
        s.insert(Member::net("10.0.0.0/8".parse().unwrap()))
            .unwrap();
        s.insert(Member::nomatch("10.1.0.0/16".parse().unwrap()))
            .unwrap();
        s.insert(Member::net("10.1.2.0/24".parse().unwrap()))
            .unwrap();
        let m = |s: &IpSet, a: &str| s.matches(a.parse().unwrap());
        assert!(m(&s, "10.2.0.1"));
        assert!(!m(&s, "10.1.0.1"));
        assert!(m(&s, "10.1.2.3"));
        assert!(!m(&s, "11.0.0.1"));
        assert!(!m(&s, "fd00::1"));
        // Flipping the flag replaces the element, as `ipset add -exist` does.
        s.insert(Member::net("10.1.0.0/16".parse().unwrap()))
            .unwrap();
        assert!(m(&s, "10.1.0.1"));
        assert_eq!(s.len(), 3);
        // A hash:net set keys a host address as a host network.
        s.insert(Member::Ip("192.0.2.1".parse().unwrap())).unwrap();
        assert!(s.contains(&Member::net("192.0.2.1/32".parse().unwrap())));
    }

    #[test]
    fn classify_recognises_owned_foreign_and_stray() {
        let mut r = Ruleset::default();
        let t = tid();
        r.add_chain(&t, "nf-a", None).unwrap();
        let id = r.push_rule(&t, "nf-a", Rule::new(Target::Drop)).unwrap();
        let owned = r.chain(&t, "nf-a").unwrap().owned().next().unwrap().clone();
        let k = owned.kernel_rule(r.marker());
        let empty = Chain::new(None);
        match r.classify(&t, "nf-a", &empty, Some(&k), Some(7), String::new) {
            Entry::Owned(o) => {
                assert_eq!(o.id, id);
                assert_eq!(o.handle, Some(7));
            }
            e => panic!("{e:?}"),
        }
        // Tampered content under a valid-looking comment.
        let mut tampered = k.clone();
        tampered.target = Target::Accept;
        assert!(matches!(
            r.classify(&t, "nf-a", &empty, Some(&tampered), Some(8), String::new),
            Entry::Stray(_)
        ));
        // No marker: stray in an owned chain, foreign elsewhere.
        let plain = Rule::new(Target::Accept);
        assert!(matches!(
            r.classify(&t, "nf-a", &empty, Some(&plain), Some(9), String::new),
            Entry::Stray(_)
        ));
        assert!(matches!(
            r.classify(&t, "FORWARD", &empty, Some(&plain), Some(9), String::new),
            Entry::Foreign(_)
        ));
        assert!(matches!(
            r.classify(&t, "FORWARD", &empty, None, Some(9), || "raw".into()),
            Entry::Foreign(_)
        ));
    }

    #[test]
    fn identities_live_in_userdata_and_the_older_comment_match_still_counts() {
        let mut r = Ruleset::default();
        let t = tid();
        r.add_chain(&t, "nf-a", None).unwrap();
        let mut look = Rule::new(Target::Drop);
        look.matches.push(Match::Comment("mine".into()));
        let id = r.push_rule(&t, "nf-a", look).unwrap();
        let owned = r.chain(&t, "nf-a").unwrap().owned().next().unwrap().clone();
        let k = owned.kernel_rule(r.marker());
        assert_eq!(k.comment.as_deref(), Some(format!("nf:{id}").as_str()));
        assert_eq!(k.matches, owned.rule.matches, "no match added");
        // As an earlier netfence wrote it: the identity as the leading `-m comment`.
        let mut legacy = owned.rule.clone();
        legacy.matches.insert(0, Match::Comment(format!("nf:{id}")));
        let empty = Chain::new(None);
        for (what, rule) in [("userdata", &k), ("comment match", &legacy)] {
            match r.classify(&t, "nf-a", &empty, Some(rule), Some(7), String::new) {
                Entry::Owned(o) => assert_eq!(o, owned, "{what}"),
                e => panic!("{what}: {e:?}"),
            }
        }
        // The userdata slot is the identity's: a desired rule can't bring its own.
        let mut own = Rule::new(Target::Accept);
        own.comment = Some("hello".into());
        let e = r.push_rule(&t, "nf-a", own).unwrap_err().to_string();
        assert!(e.contains("userdata comment"), "{e}");
    }
}
