//! Rule encoding through libnftnl, in the expression order and shapes iptables-nft 1.8.9
//! emits (iptables `nft-ipv4.c`/`nft-ipv6.c` `*_add`, `nft-shared.c` `add_*`), so that
//! `iptables-nft-save` decodes every rule netfence writes and the bytes match a rule
//! loaded with `iptables-nft-restore`.
//!
//! libnftnl is what iptables-nft itself builds with, so the attribute layout inside each
//! expression is the same by construction; this module decides which expressions, in
//! which order, with which data.

use std::ffi::CString;
use std::ptr::NonNull;

use ipnet::IpNet;
use nftnl::nftnl_sys as sys;

use super::expr::{cmp_op, meta_key, range_op, verdict, NFT_REG_1, NFT_REG_VERDICT};
use super::rule::{Family, Iface, Match, Neg, PortRange, Protocol, Rule, Target};
use super::udata;
use super::xt;
use crate::error::Error;

/// Longest interface name (`IFNAMSIZ` minus the NUL).
const IFNAMSIZ: usize = 16;
/// Longest chain name nf_tables accepts for iptables (`XT_EXTENSION_MAXNAMELEN` - 1).
pub const MAX_CHAIN_NAME: usize = 28;
/// Longest ipset name (`IPSET_MAXNAMELEN` - 1).
pub const MAX_SET_NAME: usize = 31;
/// Most expressions the kernel takes in one rule (`NFT_RULE_MAXEXPRS`,
/// `net/netfilter/nf_tables_api.c`): `nf_tables_newrule` refuses the 129th with `EINVAL`.
pub const MAX_EXPRS: usize = 128;
/// Most bytes a rule's expressions may take once encoded (an upper bound, see
/// [`Footprint`]). Not the 64 KiB the `NFTA_RULE_EXPRESSIONS` nest could hold: a dump
/// writes each rule whole into one skb of at most `SKB_WITH_OVERHEAD(32768)` bytes
/// (`netlink_dump()`, `net/netlink/af_netlink.c`), and a rule that doesn't fit there is
/// committed but never dumped. Worse, `nf_tables_dump_rules()` ends the dump at it, so
/// the rules after it vanish from `list_rules` and `iptables-nft-save` too (measured on
/// 6.18: a 31 KiB rule dumps, a 32 KiB one and the rule after it don't). So: 32 KiB, less
/// 1 KiB for `skb_shared_info` and 1 KiB for the rest of the rule message.
pub const MAX_EXPR_BYTES: usize = 30 * 1024;

/// Upper bound of one encoded native expression (meta, cmp, payload, bitwise, range,
/// counter, immediate, log): the list element, name and data nest headers take 24
/// bytes, and the largest body netfence writes (bitwise with two 16-byte data nests, or
/// log with a 64-byte prefix) stays under 80.
const NATIVE_EXPR_BYTES: usize = 128;
/// Upper bound of an encoded xt `match`/`target` besides its info blob: the list element,
/// name and data nest headers (24), `NFTA_MATCH_NAME` with up to `XT_EXTENSION_MAXNAMELEN`
/// bytes (36), `NFTA_MATCH_REV` (8) and the `NFTA_MATCH_INFO` header (4).
const XT_EXPR_BYTES: usize = 72;

/// What [`build`] emits for a rule, counted before anything is built: how many
/// expressions, and an upper bound of their encoded bytes. It follows `build` match by
/// match; a unit test checks it against what libnftnl really writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// Expressions, counter and verdict included.
    pub(crate) exprs: usize,
    /// Upper bound of their encoded bytes, inside `NFTA_RULE_EXPRESSIONS`.
    pub(crate) bytes: usize,
}

impl Footprint {
    fn native(&mut self, n: usize) {
        self.exprs += n;
        self.bytes += n * NATIVE_EXPR_BYTES;
    }

    fn xt(&mut self, info_len: usize) {
        self.exprs += 1;
        // Attribute payloads are padded to 4 bytes (`NLA_ALIGN`).
        self.bytes += XT_EXPR_BYTES + info_len.next_multiple_of(4);
    }

    /// Whether the kernel takes this many expressions and the nest can hold them.
    pub(crate) fn check(self) -> Result<(), String> {
        if self.exprs > MAX_EXPRS {
            return Err(format!(
                "it encodes to {} expressions (counter and verdict included); the kernel \
                 accepts at most {MAX_EXPRS} per rule (NFT_RULE_MAXEXPRS)",
                self.exprs
            ));
        }
        if self.bytes > MAX_EXPR_BYTES {
            return Err(format!(
                "its {} expressions may take up to {} bytes encoded; at most \
                 {MAX_EXPR_BYTES} keep the rule within what one netlink dump message \
                 carries, so that it can be listed back",
                self.exprs, self.bytes
            ));
        }
        Ok(())
    }
}

/// The [`Footprint`] of `rule`: the same expressions, in the same cases, as [`build`].
pub(crate) fn footprint(rule: &Rule) -> Footprint {
    let mut f = Footprint::default();
    if rule.in_iface.is_some() {
        f.native(2); // meta iifname, cmp
    }
    if rule.out_iface.is_some() {
        f.native(2); // meta oifname, cmp
    }
    if rule.protocol.is_some() {
        f.native(2); // meta l4proto, cmp
    }
    for a in [&rule.src, &rule.dst].into_iter().flatten() {
        match a.value.prefix_len() {
            0 => {}
            p if p % 8 == 0 => f.native(2), // payload, cmp
            _ => f.native(3),               // payload, bitwise, cmp
        }
    }
    let sctp = rule
        .protocol
        .as_ref()
        .is_some_and(|p| p.value == Protocol::Sctp);
    for m in &rule.matches {
        match m {
            Match::Ports { .. } if sctp => f.xt(xt::sctp::INFO_LEN),
            Match::Ports { sport, dport } => {
                // payload, then cmp or range, for each port given
                f.native(2 * (sport.is_some() as usize + dport.is_some() as usize));
            }
            Match::Multiport { .. } => f.xt(xt::multiport::INFO_LEN),
            Match::Set { .. } => f.xt(xt::set::INFO_LEN),
            Match::Conntrack { .. } => f.xt(xt::conntrack::INFO_LEN),
            Match::Mark { .. } => f.native(3), // meta mark, bitwise, cmp
            Match::Comment(_) => f.xt(xt::comment::INFO_LEN),
        }
    }
    f.native(1); // counter
    match &rule.target {
        Target::Accept
        | Target::Drop
        | Target::Return
        | Target::Jump(_)
        | Target::Goto(_)
        | Target::Nflog { .. } => f.native(1),
        Target::Reject(_) => f.xt(xt::reject::INFO_LEN),
        Target::SetXMark { .. } => f.xt(xt::mark::INFO_LEN),
        Target::Log { .. } => f.xt(xt::log::INFO_LEN),
    }
    f
}

/// Resolves an ipset name to the kernel index the xt `set` match carries.
pub trait SetIndex {
    /// The index of set `name`, or an error naming it when it does not exist.
    ///
    /// # Errors
    /// Whatever the lookup failed with.
    fn set_index(&self, name: &str) -> Result<u16, Error>;
}

impl<F: Fn(&str) -> Result<u16, Error>> SetIndex for F {
    fn set_index(&self, name: &str) -> Result<u16, Error> {
        self(name)
    }
}

/// An owned `nftnl_expr`, freed on drop unless handed to a rule.
struct ExprBox(NonNull<sys::nftnl_expr>);

impl ExprBox {
    fn new(name: &str) -> Self {
        let c = CString::new(name).expect("static expression names have no NUL");
        // SAFETY: valid C string; NULL (OOM or unknown name) is turned into a panic since
        // every name used here is a libnftnl built-in.
        let p = unsafe { sys::nftnl_expr_alloc(c.as_ptr()) };
        Self(NonNull::new(p).expect("nftnl_expr_alloc failed"))
    }
    fn u32(&self, attr: u32, v: u32) -> &Self {
        // SAFETY: valid expression; attribute ids are libnftnl's.
        unsafe { sys::nftnl_expr_set_u32(self.0.as_ptr(), attr as u16, v) };
        self
    }
    fn u16(&self, attr: u32, v: u16) -> &Self {
        // SAFETY: as above.
        unsafe { sys::nftnl_expr_set_u16(self.0.as_ptr(), attr as u16, v) };
        self
    }
    fn u64(&self, attr: u32, v: u64) -> &Self {
        // SAFETY: as above.
        unsafe { sys::nftnl_expr_set_u64(self.0.as_ptr(), attr as u16, v) };
        self
    }
    fn data(&self, attr: u32, v: &[u8]) -> &Self {
        // SAFETY: libnftnl copies `v`.
        unsafe {
            sys::nftnl_expr_set(
                self.0.as_ptr(),
                attr as u16,
                v.as_ptr().cast(),
                v.len() as u32,
            )
        };
        self
    }
    fn str(&self, attr: u32, v: &str) -> &Self {
        let c = CString::new(v).expect("checked for NUL by the validator");
        // SAFETY: libnftnl copies the string.
        unsafe { sys::nftnl_expr_set_str(self.0.as_ptr(), attr as u16, c.as_ptr()) };
        self
    }
    /// An xt info blob: libnftnl takes ownership and releases it with `free()`, so it
    /// must come from `malloc`.
    fn info(&self, attr: u32, info: &[u8]) -> &Self {
        // SAFETY: malloc of info.len() (>= 8) bytes, filled, then owned by libnftnl.
        unsafe {
            let p = libc::malloc(info.len().max(1)).cast::<u8>();
            assert!(!p.is_null(), "malloc failed");
            std::ptr::copy_nonoverlapping(info.as_ptr(), p, info.len());
            sys::nftnl_expr_set(self.0.as_ptr(), attr as u16, p.cast(), info.len() as u32);
        }
        self
    }
}

impl Drop for ExprBox {
    fn drop(&mut self) {
        // SAFETY: still owned by us (see RuleBox::push).
        unsafe { sys::nftnl_expr_free(self.0.as_ptr()) }
    }
}

/// An owned `nftnl_rule`, with the number of expressions added to it.
pub(crate) struct RuleBox(NonNull<sys::nftnl_rule>, usize);

impl RuleBox {
    fn new() -> Self {
        // SAFETY: plain allocation.
        let p = unsafe { sys::nftnl_rule_alloc() };
        Self(NonNull::new(p).expect("nftnl_rule_alloc failed"), 0)
    }
    fn push(&mut self, e: ExprBox) {
        let p = e.0;
        std::mem::forget(e);
        // SAFETY: the rule takes ownership of the expression.
        unsafe { sys::nftnl_rule_add_expr(self.0.as_ptr(), p.as_ptr()) }
        self.1 += 1;
    }
    pub(crate) fn set_str(&self, attr: u32, v: &str) {
        let c = CString::new(v).expect("checked for NUL by the validator");
        // SAFETY: libnftnl copies the string.
        unsafe { sys::nftnl_rule_set_str(self.0.as_ptr(), attr as u16, c.as_ptr()) };
    }
    pub(crate) fn set_u32(&self, attr: u32, v: u32) {
        // SAFETY: valid rule.
        unsafe { sys::nftnl_rule_set_u32(self.0.as_ptr(), attr as u16, v) };
    }
    fn set_data(&self, attr: u32, v: &[u8]) {
        // SAFETY: valid rule; libnftnl copies the bytes.
        unsafe {
            sys::nftnl_rule_set_data(
                self.0.as_ptr(),
                attr as u16,
                v.as_ptr().cast(),
                v.len() as u32,
            )
        };
    }
    pub(crate) fn set_u64(&self, attr: u32, v: u64) {
        // SAFETY: valid rule.
        unsafe { sys::nftnl_rule_set_u64(self.0.as_ptr(), attr as u16, v) };
    }
    pub(crate) fn as_ptr(&self) -> *mut sys::nftnl_rule {
        self.0.as_ptr()
    }
}

impl Drop for RuleBox {
    fn drop(&mut self) {
        // SAFETY: owned.
        unsafe { sys::nftnl_rule_free(self.0.as_ptr()) }
    }
}

fn meta(key: u32) -> ExprBox {
    let e = ExprBox::new("meta");
    e.u32(sys::NFTNL_EXPR_META_KEY, key)
        .u32(sys::NFTNL_EXPR_META_DREG, NFT_REG_1);
    e
}

fn cmp(neg: bool, data: &[u8]) -> ExprBox {
    let e = ExprBox::new("cmp");
    e.u32(sys::NFTNL_EXPR_CMP_SREG, NFT_REG_1)
        .u32(
            sys::NFTNL_EXPR_CMP_OP,
            if neg { cmp_op::NEQ } else { cmp_op::EQ },
        )
        .data(sys::NFTNL_EXPR_CMP_DATA, data);
    e
}

fn payload(base: u32, offset: u32, len: u32) -> ExprBox {
    let e = ExprBox::new("payload");
    e.u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base)
        .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
        .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
    e
}

fn bitwise(mask: &[u8]) -> ExprBox {
    let e = ExprBox::new("bitwise");
    let xor = vec![0u8; mask.len()];
    e.u32(sys::NFTNL_EXPR_BITWISE_SREG, NFT_REG_1)
        .u32(sys::NFTNL_EXPR_BITWISE_DREG, NFT_REG_1)
        .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
        .data(sys::NFTNL_EXPR_BITWISE_MASK, mask)
        .data(sys::NFTNL_EXPR_BITWISE_XOR, &xor);
    e
}

fn xt_match(name: &str, rev: u32, info: &[u8]) -> ExprBox {
    let e = ExprBox::new("match");
    e.str(sys::NFTNL_EXPR_MT_NAME, name)
        .u32(sys::NFTNL_EXPR_MT_REV, rev)
        .info(sys::NFTNL_EXPR_MT_INFO, info);
    e
}

fn xt_target(name: &str, rev: u32, info: &[u8]) -> ExprBox {
    let e = ExprBox::new("target");
    e.str(sys::NFTNL_EXPR_TG_NAME, name)
        .u32(sys::NFTNL_EXPR_TG_REV, rev)
        .info(sys::NFTNL_EXPR_TG_INFO, info);
    e
}

fn verdict_expr(code: i32, chain: Option<&str>) -> ExprBox {
    let e = ExprBox::new("immediate");
    e.u32(sys::NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT)
        .u32(sys::NFTNL_EXPR_IMM_VERDICT, code as u32);
    if let Some(c) = chain {
        e.str(sys::NFTNL_EXPR_IMM_CHAIN, c);
    }
    e
}

/// `-i`/`-o`: an exact name compares the name and its NUL; a `+` prefix compares only
/// the prefix bytes (iptables `add_iniface`).
fn iface(key: u32, i: &Neg<Iface>) -> [ExprBox; 2] {
    let data: Vec<u8> = match &i.value {
        Iface::Exact(n) => n.bytes().chain(std::iter::once(0)).collect(),
        Iface::Prefix(p) => p.as_bytes().to_vec(),
    };
    [meta(key), cmp(i.negate, &data)]
}

/// `-s`/`-d` (iptables `add_addr`): a byte-aligned prefix loads only its bytes; any
/// other loads the whole address, masks it, then compares.
fn addr(rule: &mut RuleBox, offset: u32, a: &Neg<IpNet>) {
    let (net, mask): (Vec<u8>, Vec<u8>) = match a.value {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let plen = a.value.prefix_len() as usize;
    if plen == 0 {
        // iptables omits a /0 match entirely (and nothing can negate it meaningfully).
        return;
    }
    if plen % 8 == 0 {
        let n = plen / 8;
        rule.push(payload(1, offset, n as u32));
        rule.push(cmp(a.negate, &net[..n]));
    } else {
        rule.push(payload(1, offset, net.len() as u32));
        rule.push(bitwise(&mask));
        rule.push(cmp(a.negate, &net));
    }
}

/// TCP/UDP `--sport/--dport` (iptables `add_proto` + `add_cmp_u16` / `add_range`).
fn port(rule: &mut RuleBox, offset: u32, p: &Neg<PortRange>) {
    rule.push(payload(2, offset, 2));
    if p.value.is_single() {
        rule.push(cmp(p.negate, &p.value.first.to_be_bytes()));
    } else {
        let e = ExprBox::new("range");
        e.u32(sys::NFTNL_EXPR_RANGE_SREG, NFT_REG_1)
            .u32(
                sys::NFTNL_EXPR_RANGE_OP,
                if p.negate {
                    range_op::NEQ
                } else {
                    range_op::EQ
                },
            )
            .data(
                sys::NFTNL_EXPR_RANGE_FROM_DATA,
                &p.value.first.to_be_bytes(),
            )
            .data(sys::NFTNL_EXPR_RANGE_TO_DATA, &p.value.last.to_be_bytes());
        rule.push(e);
    }
}

/// Checks what the kernel or iptables-nft-save would refuse or silently change, so that
/// nothing invalid reaches a batch.
///
/// # Errors
/// [`Error::Invalid`] naming the field.
pub fn validate(rule: &Rule, family: Family) -> Result<(), Error> {
    let bad = |what: &str, why: String| Err(Error::invalid(format!("rule {what}"), why));
    for (what, i) in [("-i", &rule.in_iface), ("-o", &rule.out_iface)] {
        if let Some(i) = i {
            let n = match &i.value {
                Iface::Exact(n) | Iface::Prefix(n) => n,
            };
            if n.len() >= IFNAMSIZ || n.contains(['\0', '+']) || n.is_empty() {
                return bad(
                    what,
                    format!("interface name {n:?} is empty, too long or has + or NUL"),
                );
            }
        }
    }
    for (what, a) in [("-s", &rule.src), ("-d", &rule.dst)] {
        if let Some(a) = a {
            if Family::of(&a.value) != family {
                return bad(what, format!("{} is not a {family} address", a.value));
            }
            if a.value.prefix_len() == 0 && a.negate {
                return bad(
                    what,
                    "! 0/0 matches nothing; iptables can't express it".into(),
                );
            }
        }
    }
    let proto = rule.protocol.as_ref();
    if let Some(p) = proto {
        if matches!(p.value, Protocol::Other(0)) {
            return bad("-p", "protocol 0 means any protocol; leave -p out".into());
        }
    }
    for m in &rule.matches {
        match m {
            Match::Ports { sport, dport } => {
                let ok = proto.is_some_and(|p| !p.negate && p.value.has_ports());
                if !ok {
                    return bad("--sport/--dport", "needs -p tcp, udp or sctp".into());
                }
                if sport.is_none() && dport.is_none() {
                    return bad("--sport/--dport", "neither port is given".into());
                }
                for p in [sport, dport].into_iter().flatten() {
                    if p.value.first > p.value.last {
                        return bad("--sport/--dport", format!("range {} is empty", p.value));
                    }
                    if p.value.first == 0 && p.value.last == u16::MAX {
                        return bad(
                            "--sport/--dport",
                            "0:65535 matches every port; leave it out".into(),
                        );
                    }
                }
            }
            Match::Multiport { ports, .. } => {
                let ok = proto.is_some_and(|p| !p.negate && p.value.has_ports());
                if !ok {
                    return bad("-m multiport", "needs -p tcp, udp or sctp".into());
                }
                if ports.is_empty() || xt::multiport::slots(ports) > xt::multiport::SLOTS {
                    return bad(
                        "-m multiport",
                        format!("{} ports and ranges don't fit in 15 slots", ports.len()),
                    );
                }
                if ports.iter().any(|p| p.first > p.last) {
                    return bad("-m multiport", "a range is empty".into());
                }
            }
            Match::Set { name, dirs, .. } => {
                if name.is_empty() || name.len() > MAX_SET_NAME || name.contains('\0') {
                    return bad(
                        "--match-set",
                        format!("set name {name:?} must be 1..=31 bytes"),
                    );
                }
                if dirs.is_empty() || dirs.len() > 6 {
                    return bad("--match-set", "needs 1..=6 of src,dst".into());
                }
            }
            Match::Conntrack { states, .. } => {
                if states.0 == 0 {
                    return bad("--ctstate", "no state given".into());
                }
            }
            Match::Mark { .. } => {}
            Match::Comment(c) => {
                if c.len() > xt::comment::MAX_LEN || c.contains('\0') {
                    return bad(
                        "--comment",
                        format!("comment of {} bytes exceeds 255 or has NUL", c.len()),
                    );
                }
            }
        }
    }
    if let Some(c) = &rule.comment {
        if c.len() > udata::MAX_COMMENT_LEN || c.contains('\0') {
            return bad(
                "comment",
                format!(
                    "userdata comment of {} bytes exceeds {} or has NUL",
                    c.len(),
                    udata::MAX_COMMENT_LEN
                ),
            );
        }
    }
    let bad_chain = |c: &str| c.is_empty() || c.len() > MAX_CHAIN_NAME || c.contains('\0');
    let tcp = proto.is_some_and(|p| !p.negate && p.value == Protocol::Tcp);
    match &rule.target {
        Target::Jump(c) | Target::Goto(c) if bad_chain(c) => {
            return bad("-j/-g", format!("chain name {c:?} must be 1..=28 bytes"));
        }
        Target::Log {
            prefix: Some(p), ..
        } if p.len() > xt::log::MAX_PREFIX || p.contains('\0') => {
            return bad("--log-prefix", "longer than 29 bytes or has NUL".into());
        }
        Target::Log { level, .. } if *level > 7 => {
            return bad(
                "--log-level",
                format!("{level} is not a syslog level 0..=7"),
            );
        }
        Target::Nflog {
            prefix: Some(p), ..
        } if p.len() > 63 || p.contains('\0') => {
            return bad("--nflog-prefix", "longer than 63 bytes or has NUL".into());
        }
        Target::Reject(crate::nft::rule::RejectWith::TcpReset) if !tcp => {
            return bad("--reject-with tcp-reset", "needs -p tcp".into());
        }
        _ => {}
    }
    // Last, once every part is known to be well-formed: the whole rule must fit in one
    // kernel rule, and in the buffer libnftnl writes it into without bounds checks.
    footprint(rule)
        .check()
        .map_err(|why| Error::invalid("rule", why))
}

/// Builds the libnftnl rule (expressions and compat attribute) for `rule` in `family`.
/// Table, chain, handle and position are set by the caller.
///
/// # Errors
/// [`Error::Invalid`] from [`validate`], or the set lookup's error.
pub(crate) fn build(rule: &Rule, family: Family, sets: &dyn SetIndex) -> Result<RuleBox, Error> {
    validate(rule, family)?;
    let counted = footprint(rule).exprs;
    let v6 = family == Family::Ipv6;
    let mut r = RuleBox::new();
    r.set_u32(sys::NFTNL_RULE_FAMILY, family.nfproto() as u32);

    if let Some(i) = &rule.in_iface {
        let [a, b] = iface(meta_key::IIFNAME, i);
        r.push(a);
        r.push(b);
    }
    if let Some(i) = &rule.out_iface {
        let [a, b] = iface(meta_key::OIFNAME, i);
        r.push(a);
        r.push(b);
    }
    if let Some(p) = &rule.protocol {
        r.push(meta(meta_key::L4PROTO));
        r.push(cmp(p.negate, &[p.value.number()]));
    }
    // Source and destination address offsets: IPv4 header 12/16, IPv6 header 8/24.
    let (soff, doff) = if v6 { (8, 24) } else { (12, 16) };
    if let Some(a) = &rule.src {
        addr(&mut r, soff, a);
    }
    if let Some(a) = &rule.dst {
        addr(&mut r, doff, a);
    }
    let proto = rule.protocol.as_ref().map(|p| p.value);
    for m in &rule.matches {
        match m {
            Match::Ports { sport, dport } => {
                if proto == Some(Protocol::Sctp) {
                    let info = xt::sctp::encode(
                        sport.as_ref().map(|p| (p.value, p.negate)),
                        dport.as_ref().map(|p| (p.value, p.negate)),
                    );
                    r.push(xt_match(xt::sctp::NAME, 0, &info));
                } else {
                    if let Some(p) = sport {
                        port(&mut r, 0, p);
                    }
                    if let Some(p) = dport {
                        port(&mut r, 2, p);
                    }
                }
            }
            Match::Multiport { dir, negate, ports } => {
                let info = xt::multiport::encode(*dir, ports, *negate);
                r.push(xt_match(xt::multiport::NAME, xt::multiport::REV, &info));
            }
            Match::Set { negate, name, dirs } => {
                let index = sets.set_index(name)?;
                let info = xt::set::encode(index, dirs, *negate);
                r.push(xt_match(xt::set::NAME, xt::set::REV, &info));
            }
            Match::Conntrack { negate, states } => {
                let info = xt::conntrack::encode(*states, *negate);
                r.push(xt_match(xt::conntrack::NAME, xt::conntrack::REV, &info));
            }
            Match::Mark {
                negate,
                value,
                mask,
            } => {
                // iptables-nft's mark match is native: meta mark, bitwise, cmp.
                r.push(meta(meta_key::MARK));
                r.push(bitwise(&mask.to_ne_bytes()));
                r.push(cmp(*negate, &value.to_ne_bytes()));
            }
            Match::Comment(c) => {
                r.push(xt_match(xt::comment::NAME, 0, &xt::comment::encode(c)));
            }
        }
    }
    if let Some(c) = &rule.comment {
        r.set_data(sys::NFTNL_RULE_USERDATA, &udata::comment(c));
    }
    let ctr = ExprBox::new("counter");
    ctr.u64(sys::NFTNL_EXPR_CTR_PACKETS, 0)
        .u64(sys::NFTNL_EXPR_CTR_BYTES, 0);
    r.push(ctr);
    match &rule.target {
        Target::Accept => r.push(verdict_expr(verdict::ACCEPT, None)),
        Target::Drop => r.push(verdict_expr(verdict::DROP, None)),
        Target::Return => r.push(verdict_expr(verdict::RETURN, None)),
        Target::Jump(c) => r.push(verdict_expr(verdict::JUMP, Some(c))),
        Target::Goto(c) => r.push(verdict_expr(verdict::GOTO, Some(c))),
        Target::Reject(w) => r.push(xt_target(xt::reject::NAME, 0, &xt::reject::encode(*w, v6))),
        Target::SetXMark { value, mask } => r.push(xt_target(
            xt::mark::NAME,
            xt::mark::REV,
            &xt::mark::encode(*value, *mask),
        )),
        Target::Log { prefix, level } => r.push(xt_target(
            xt::log::NAME,
            0,
            &xt::log::encode(prefix.as_deref(), *level),
        )),
        Target::Nflog { group, prefix } => {
            // iptables-nft turns NFLOG into the native log expression.
            let e = ExprBox::new("log");
            if let Some(p) = prefix {
                e.str(sys::NFTNL_EXPR_LOG_PREFIX, p);
            }
            // Group and prefix only, as iptables-nft sends: a snaplen, even 0, would turn
            // on NF_LOG_F_COPY_LEN in the kernel.
            e.u16(sys::NFTNL_EXPR_LOG_GROUP, *group);
            r.push(e);
        }
    }
    if let Some(p) = &rule.protocol {
        r.set_u32(sys::NFTNL_RULE_COMPAT_PROTO, p.value.number() as u32);
        r.set_u32(
            sys::NFTNL_RULE_COMPAT_FLAGS,
            if p.negate {
                ipset_sys::NFT_RULE_COMPAT_F_INV
            } else {
                0
            },
        );
    }
    // validate()'s size bound holds only while footprint() counts what this function
    // builds: refuse to hand libnftnl a rule the bound did not cover.
    if r.1 != counted {
        return Err(Error::Encode {
            what: format!(
                "rule: {} expressions built where {counted} were counted (footprint() is out \
                 of step with build())",
                r.1
            ),
        });
    }
    Ok(r)
}
