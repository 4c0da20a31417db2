//! The third baseline: the Calico-like state of [`calico`] written in native
//! nftables syntax and loaded with `nft -f`, the way knftables-based agents
//! (kube-proxy's nftables mode) program the kernel.
//!
//! # Layout (table `calico`, one per family: `ip calico`, `ip6 calico`)
//!
//! * Every chain of [`calico::Table`] becomes a chain of the same name; the
//!   built-in ones (`INPUT`, `FORWARD`, `OUTPUT`) are base chains hooked at
//!   `input` / `forward` / `output` with priority `filter` and policy `accept`,
//!   like the chains `iptables-nft` creates in table `filter`.
//! * Every rule is translated one to one by [`rule`], match for match and in the
//!   same order, so a packet does the same work as under `iptables-nft`:
//!   `-i`/`-o` (`cali+` → `"cali*"`), `-p`, `-m conntrack --ctstate`,
//!   `-m set --match-set` (`src`, `dst`, and `dst,dst` of a `hash:ip,port` set as
//!   `ip daddr . meta l4proto . th dport @set`), `-m multiport --dports`
//!   (`th dport { … }`), `-m mark --mark`, `-j MARK --set-xmark`,
//!   `ACCEPT`/`DROP`/`RETURN`, `-j`/`-g` to a chain, and the comment. Anything
//!   else is an error, never dropped.
//! * Every ipset becomes a named set in the table of its family ([`set_name`]
//!   maps the name): `hash:ip` → `type ipv4_addr`; `hash:net` → an interval set
//!   holding the CIDRs minus their `nomatch` excepts ([`elements`]); `hash:ip,port`
//!   → `type ipv4_addr . inet_proto . inet_service`.
//!
//! # Scripts
//!
//! Both [`render`] and [`diff`] write flat commands (`add table`, `add set`,
//! `add element`, `add chain`, `flush chain`, `add rule`, `delete …`), one
//! `add element`/`delete element` per set with all its elements, which is the
//! cheapest form `nft` accepts. `nft -f` applies a file as one transaction, so a
//! script is all-or-nothing, unlike the `ipset restore` + `iptables-nft-restore`
//! sequence of [`calico::Delta::steps`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::str::FromStr as _;

use ipnet::IpNet;
use policy::Family;

use super::calico::{self, IpSet, Rendered, SetKind, Table};

/// The table name, in both families.
pub const TABLE: &str = "calico";

/// `ip` or `ip6`: the table family and the address match keyword.
pub fn family_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    }
}

/// The hook of a built-in chain, `None` for a user chain.
fn hook(chain: &str) -> Option<&'static str> {
    match chain {
        "INPUT" => Some("input"),
        "FORWARD" => Some("forward"),
        "OUTPUT" => Some("output"),
        _ => None,
    }
}

/// Whether `s` scans as one nft identifier (`nft`'s scanner: a letter, `_` or
/// `.`, then letters, digits, `/`, `\`, `-`, `_`, `.`), so it can be written
/// unquoted as a chain or set name.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || "/\\-_.".contains(c))
}

/// The nft name of ipset `name`. Calico's names hold exactly one `:` (after the
/// kind, `cali40s:…`), which nft identifiers cannot; it becomes `_`. The `:` sits
/// at the same position in every name, so the mapping stays injective.
pub fn set_name(name: &str) -> String {
    let mapped = name.replace(':', "_");
    assert!(
        name.matches(':').count() <= 1 && is_identifier(&mapped),
        "ipset name {name:?} has no nft identifier"
    );
    mapped
}

/// The set's declaration body (`type …; [flags interval;]`).
fn set_spec(set: &IpSet) -> String {
    let addr = match set.family {
        Family::Ipv4 => "ipv4_addr",
        Family::Ipv6 => "ipv6_addr",
    };
    match set.kind {
        SetKind::Ip => format!("type {addr};"),
        SetKind::Net => format!("type {addr}; flags interval;"),
        SetKind::IpPort => format!("type {addr} . inet_proto . inet_service;"),
    }
}

fn parse_net(text: &str) -> IpNet {
    IpNet::from_str(text)
        .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
        .unwrap_or_else(|_| panic!("hash:net member {text:?} is no address or CIDR"))
}

/// Appends to `out` the prefixes covering `p` minus every prefix in `holes`.
/// Two prefixes either nest or are disjoint, so splitting `p` in halves until
/// each piece is inside a hole or clear of all of them is exact.
fn subtract(p: IpNet, holes: &[IpNet], out: &mut Vec<IpNet>) {
    if holes.iter().any(|h| h.contains(&p)) {
        return;
    }
    if !holes.iter().any(|h| p.contains(h)) {
        out.push(p);
        return;
    }
    let halves = p
        .subnets(p.prefix_len() + 1)
        .expect("a hole strictly inside p leaves a longer prefix");
    for half in halves {
        subtract(half, holes, out);
    }
}

/// The addresses a `hash:net` set with `nomatch` entries matches, as disjoint
/// prefixes. ipset decides by the most specific entry containing the address, so
/// an address matches iff some positive entry contains it and no `nomatch` entry
/// more specific than that one does.
fn net_elements(members: &BTreeSet<String>) -> Vec<IpNet> {
    let mut positive = Vec::new();
    let mut nomatch = Vec::new();
    for m in members {
        match m.strip_suffix(" nomatch") {
            Some(net) => nomatch.push(parse_net(net)),
            None => positive.push(parse_net(m)),
        }
    }
    let mut pieces = Vec::new();
    for p in positive {
        let holes: Vec<IpNet> = nomatch
            .iter()
            .copied()
            .filter(|n| n.prefix_len() > p.prefix_len())
            .collect();
        subtract(p, &holes, &mut pieces);
    }
    // Nested positive entries give nested pieces; an interval set without
    // auto-merge rejects overlaps, so keep only the outermost.
    pieces.sort_by_key(|n| (n.prefix_len(), n.network()));
    let mut kept: Vec<IpNet> = Vec::new();
    for p in pieces {
        if !kept.iter().any(|k| k.contains(&p)) {
            kept.push(p);
        }
    }
    kept.sort();
    kept
}

/// The set's elements as nft spells them (`10.0.0.1`, `10.0.0.0/9`,
/// `10.0.0.1 . tcp . 8080`).
pub fn elements(set: &IpSet) -> BTreeSet<String> {
    match set.kind {
        SetKind::Ip => set
            .members
            .iter()
            .map(|m| {
                IpAddr::from_str(m)
                    .unwrap_or_else(|_| panic!("hash:ip member {m:?} is no address"));
                m.clone()
            })
            .collect(),
        SetKind::Net => net_elements(&set.members)
            .iter()
            .map(ToString::to_string)
            .collect(),
        SetKind::IpPort => set
            .members
            .iter()
            .map(|m| {
                let parsed = m.split_once(',').and_then(|(ip, pp)| {
                    let (proto, port) = pp.split_once(':')?;
                    IpAddr::from_str(ip).ok()?;
                    port.parse::<u16>().ok()?;
                    ["tcp", "udp", "sctp"]
                        .contains(&proto)
                        .then(|| format!("{ip} . {proto} . {port}"))
                });
                parsed.unwrap_or_else(|| panic!("hash:ip,port member {m:?} not understood"))
            })
            .collect(),
    }
}

/// Splits iptables rule text into words; `"…"` is one word, without the quotes.
fn words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut w = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => return Err("backslash in a quoted word".into()),
                    Some(c) => w.push(c),
                    None => return Err("unterminated quote".into()),
                }
            }
            out.push(w);
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '"' {
                    return Err("quote inside a word".into());
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

/// `0x10000/0x10000` → (value, mask); no mask means all bits.
fn mark_pair(text: &str) -> Result<(u32, u32), String> {
    let hex = |s: &str| {
        u32::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("mark {s:?}: {e}"))
    };
    match text.split_once('/') {
        Some((v, m)) => Ok((hex(v)?, hex(m)?)),
        None => Ok((hex(text)?, u32::MAX)),
    }
}

/// An interface as nft spells it: iptables' trailing `+` is nft's `*`.
fn iface(name: &str) -> Result<String, String> {
    let (base, wildcard) = match name.strip_suffix('+') {
        Some(b) => (b, "*"),
        None => (name, ""),
    };
    if base.is_empty()
        || base.len() > 15
        || !base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
    {
        return Err(format!("interface {name:?}"));
    }
    Ok(format!("\"{base}{wildcard}\""))
}

fn chain_ref(name: &str) -> Result<&str, String> {
    if is_identifier(name) {
        Ok(name)
    } else {
        Err(format!("chain name {name:?} is no nft identifier"))
    }
}

/// Takes the next word, naming what was expected when there is none.
fn next<'w>(it: &mut impl Iterator<Item = &'w String>, what: &str) -> Result<&'w str, String> {
    it.next()
        .map(String::as_str)
        .ok_or_else(|| format!("missing {what}"))
}

/// Translates one rule of a [`Table`] (the text after `-A <chain> `, as
/// [`calico`] renders it) into the nft rule text after `add rule <family> <table>
/// <chain> `, for the table of `family`. Matches keep their order; the target
/// comes last, then the comment (nft's order). Text outside the vocabulary
/// [`calico`] emits is an `Err` naming the part not understood.
pub fn rule(text: &str, family: Family) -> Result<String, String> {
    translate(text, family).map_err(|e| format!("{e} in rule {text:?}"))
}

fn translate(text: &str, family: Family) -> Result<String, String> {
    let fam = family_name(family);
    let words = words(text)?;
    let mut it = words.iter().peekable();
    let mut parts: Vec<String> = Vec::new();
    let mut proto: Option<&str> = None;
    let mut comment: Option<&str> = None;
    let mut target: Option<String> = None;
    while let Some(w) = it.next() {
        if target.is_some() {
            return Err(format!("{w:?} after the target"));
        }
        match w.as_str() {
            "-i" => parts.push(format!("iifname {}", iface(next(&mut it, "interface")?)?)),
            "-o" => parts.push(format!("oifname {}", iface(next(&mut it, "interface")?)?)),
            "-p" => {
                let p = next(&mut it, "protocol")?;
                if !["tcp", "udp", "sctp"].contains(&p) || proto.is_some() {
                    return Err(format!("protocol {p:?}"));
                }
                proto = Some(p);
                parts.push(format!("meta l4proto {p}"));
            }
            "-m" => match next(&mut it, "match")? {
                "comment" => {
                    if next(&mut it, "--comment")? != "--comment" || comment.is_some() {
                        return Err("comment match".into());
                    }
                    comment = Some(next(&mut it, "comment")?);
                }
                "conntrack" => {
                    if next(&mut it, "--ctstate")? != "--ctstate" {
                        return Err("conntrack match".into());
                    }
                    let states = next(&mut it, "states")?
                        .split(',')
                        .map(|s| match s {
                            "NEW" | "ESTABLISHED" | "RELATED" | "INVALID" | "UNTRACKED" => {
                                Ok(s.to_ascii_lowercase())
                            }
                            _ => Err(format!("ctstate {s:?}")),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    parts.push(format!("ct state {}", states.join(",")));
                }
                "set" => {
                    if next(&mut it, "--match-set")? != "--match-set" {
                        return Err("set match".into());
                    }
                    let set = set_name(next(&mut it, "set name")?);
                    let key = match next(&mut it, "set direction")? {
                        "src" => format!("{fam} saddr"),
                        "dst" => format!("{fam} daddr"),
                        // hash:ip,port: the address and the port of the packet's
                        // destination, with the protocol ipset stores next to the port.
                        "dst,dst" => format!("{fam} daddr . meta l4proto . th dport"),
                        d => return Err(format!("set direction {d:?}")),
                    };
                    parts.push(format!("{key} @{set}"));
                }
                "multiport" => {
                    if next(&mut it, "--dports")? != "--dports" || proto.is_none() {
                        return Err("multiport match (needs -p before it)".into());
                    }
                    let ports = next(&mut it, "ports")?
                        .split(',')
                        .map(|p| {
                            let ok = |s: &str| s.parse::<u16>().map_err(|_| format!("port {p:?}"));
                            match p.split_once(':') {
                                Some((a, b)) => Ok(format!("{}-{}", ok(a)?, ok(b)?)),
                                None => Ok(ok(p)?.to_string()),
                            }
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    parts.push(format!("th dport {{ {} }}", ports.join(", ")));
                }
                "mark" => {
                    if next(&mut it, "--mark")? != "--mark" {
                        return Err("mark match".into());
                    }
                    let (value, mask) = mark_pair(next(&mut it, "mark")?)?;
                    parts.push(if mask == u32::MAX {
                        format!("meta mark 0x{value:08x}")
                    } else {
                        format!("meta mark & 0x{mask:08x} == 0x{value:08x}")
                    });
                }
                m => return Err(format!("match {m:?}")),
            },
            "-j" => {
                target = Some(match next(&mut it, "target")? {
                    "ACCEPT" => "accept".to_owned(),
                    "DROP" => "drop".to_owned(),
                    "RETURN" => "return".to_owned(),
                    "MARK" => {
                        if next(&mut it, "--set-xmark")? != "--set-xmark" {
                            return Err("MARK target".into());
                        }
                        // --set-xmark: mark = (mark & ~mask) ^ value.
                        let (value, mask) = mark_pair(next(&mut it, "mark")?)?;
                        if mask == u32::MAX {
                            format!("meta mark set 0x{value:08x}")
                        } else if value == 0 {
                            format!("meta mark set meta mark & 0x{:08x}", !mask)
                        } else if value == mask {
                            format!("meta mark set meta mark | 0x{value:08x}")
                        } else {
                            format!("meta mark set meta mark & 0x{:08x} ^ 0x{value:08x}", !mask)
                        }
                    }
                    // Target extensions are upper case (REJECT, LOG, …): not a chain.
                    t if !t.chars().any(|c| c.is_ascii_lowercase()) => {
                        return Err(format!("target {t:?}"))
                    }
                    chain => format!("jump {}", chain_ref(chain)?),
                });
            }
            "-g" => target = Some(format!("goto {}", chain_ref(next(&mut it, "chain")?)?)),
            w => return Err(format!("option {w:?}")),
        }
    }
    parts.extend(target);
    if parts.is_empty() {
        return Err("empty rule".into());
    }
    if let Some(c) = comment {
        parts.push(format!("comment \"{c}\""));
    }
    Ok(parts.join(" "))
}

fn rule_or_panic(text: &str, family: Family) -> String {
    rule(text, family).unwrap_or_else(|e| panic!("cannot translate to nft: {e}"))
}

/// One family's part of a state: its table and its sets (by nft name).
struct Part<'a> {
    table: &'a Table,
    sets: BTreeMap<String, &'a IpSet>,
}

/// The parts by family; `Family` orders IPv4 first, so scripts list `ip` first.
fn parts(state: &Rendered) -> BTreeMap<Family, Part<'_>> {
    let mut out = BTreeMap::new();
    out.insert(
        Family::Ipv4,
        Part {
            table: &state.v4,
            sets: BTreeMap::new(),
        },
    );
    if let Some(v6) = &state.v6 {
        out.insert(
            Family::Ipv6,
            Part {
                table: v6,
                sets: BTreeMap::new(),
            },
        );
    }
    for (name, set) in &state.sets {
        let part = out
            .get_mut(&set.family)
            .unwrap_or_else(|| panic!("set {name} of a family without a table"));
        let nft = set_name(name);
        assert!(
            part.sets.insert(nft.clone(), set).is_none(),
            "two ipsets map to nft set {nft}"
        );
    }
    out
}

/// Writes nft commands for one family's table.
struct Script<'o> {
    out: &'o mut String,
    prefix: String,
}

impl<'o> Script<'o> {
    fn new(out: &'o mut String, family: Family) -> Self {
        Script {
            out,
            prefix: format!("{} {TABLE}", family_name(family)),
        }
    }

    fn line(&mut self, verb: &str, rest: std::fmt::Arguments) {
        let _ = writeln!(self.out, "{verb} {} {rest}", self.prefix);
    }

    fn add_table(&mut self) {
        let _ = writeln!(self.out, "add table {}", self.prefix);
    }

    fn elements(&mut self, verb: &str, set: &str, elems: impl IntoIterator<Item = String>) {
        let list: Vec<String> = elems.into_iter().collect();
        if !list.is_empty() {
            self.line(verb, format_args!("{set} {{ {} }}", list.join(", ")));
        }
    }

    fn new_set(&mut self, name: &str, set: &IpSet) {
        self.line("add set", format_args!("{name} {{ {} }}", set_spec(set)));
        self.elements("add element", name, elements(set));
    }

    fn new_chain(&mut self, name: &str) {
        match hook(name) {
            Some(h) => self.line(
                "add chain",
                format_args!("{name} {{ type filter hook {h} priority filter; policy accept; }}"),
            ),
            None => self.line("add chain", format_args!("{name}")),
        }
    }

    fn rules(&mut self, chain: &str, rules: &[String], family: Family) {
        for r in rules {
            let text = rule_or_panic(r, family);
            self.line("add rule", format_args!("{chain} {text}"));
        }
    }
}

fn render_part(out: &mut String, family: Family, part: &Part) {
    let mut s = Script::new(out, family);
    s.add_table();
    for (name, set) in &part.sets {
        s.new_set(name, set);
    }
    // Chains before rules: a jump needs its target to exist.
    for name in part.table.chains.keys() {
        s.new_chain(name);
    }
    for (name, rules) in &part.table.chains {
        s.rules(name, rules, family);
    }
}

/// Whole state as one `nft -f` script that loads into an empty namespace.
pub fn render(state: &calico::Rendered) -> String {
    let mut out = String::new();
    for (family, part) in &parts(state) {
        render_part(&mut out, *family, part);
    }
    out
}

fn diff_part(out: &mut String, family: Family, before: Option<&Part>, after: &Part) {
    let empty_table = Table::default();
    let (old_table, old_sets) = match before {
        Some(b) => (b.table, b.sets.clone()),
        None => (&empty_table, BTreeMap::new()),
    };
    let mut s = Script::new(out, family);
    if before.is_none() {
        s.add_table();
    }
    // Sets first: new rules may reference them.
    for (name, set) in &after.sets {
        match old_sets.get(name) {
            None => s.new_set(name, set),
            Some(old) => {
                assert!(
                    old.kind == set.kind,
                    "set {name} changes kind (calico's names encode it)"
                );
                if old.members != set.members {
                    let (old_e, new_e) = (elements(old), elements(set));
                    s.elements("delete element", name, old_e.difference(&new_e).cloned());
                    s.elements("add element", name, new_e.difference(&old_e).cloned());
                }
            }
        }
    }
    let new_chains: Vec<&String> = after
        .table
        .chains
        .keys()
        .filter(|n| !old_table.chains.contains_key(*n))
        .collect();
    for name in &new_chains {
        s.new_chain(name);
    }
    for (name, rules) in &after.table.chains {
        match old_table.chains.get(name) {
            Some(old) if old == rules => {}
            Some(_) => {
                s.line("flush chain", format_args!("{name}"));
                s.rules(name, rules, family);
            }
            None => s.rules(name, rules, family),
        }
    }
    // Gone chains may jump to each other: empty them all, then delete.
    let gone: Vec<&String> = old_table
        .chains
        .keys()
        .filter(|n| !after.table.chains.contains_key(*n))
        .collect();
    for name in &gone {
        s.line("flush chain", format_args!("{name}"));
    }
    for name in &gone {
        s.line("delete chain", format_args!("{name}"));
    }
    for name in old_sets.keys() {
        if !after.sets.contains_key(name) {
            s.line("delete set", format_args!("{name}"));
        }
    }
}

/// The update from `before` to `after` as one `nft -f` script (one transaction):
/// element adds/deletes for changed sets, new sets created and filled, changed chains
/// rewritten as `flush chain` + their rules (this is how knftables-based agents such as
/// kube-proxy's nftables mode update chains), new chains added, gone chains and sets deleted
/// (after the rules that referenced them are gone, in the same script).
///
/// Empty when nothing changes.
pub fn diff(before: &calico::Rendered, after: &calico::Rendered) -> String {
    let old = parts(before);
    let new = parts(after);
    let mut out = String::new();
    for (family, part) in &new {
        diff_part(&mut out, *family, old.get(family), part);
    }
    for family in old.keys() {
        if !new.contains_key(family) {
            let _ = writeln!(out, "delete table {} {TABLE}", family_name(*family));
        }
    }
    out
}
