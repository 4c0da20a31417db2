//! The ipset netlink wire format: pure encoders that return message bytes, and
//! bounds-checked decoders of the kernel's replies. No I/O here.
//!
//! The layouts mirror what the `ipset` 7.17 tool sends (captured with `strace -e sendto`)
//! and what `net/netfilter/ipset/ip_set_core.c` parses:
//!
//! - the message type is `NFNL_SUBSYS_IPSET << 8 | IPSET_CMD_*`; the `nfgenmsg` always
//!   says `NFPROTO_IPV4`, version 0, `res_id` 0, whatever the set's family, because the
//!   tool does so and the kernel ignores it (the set's family travels in
//!   `IPSET_ATTR_FAMILY`);
//! - every request starts with `IPSET_ATTR_PROTOCOL`;
//! - "exist is fine" is not an attribute: the kernel reads it from the *absence* of
//!   `NLM_F_EXCL` in the header (`flag_exist()` in `ip_set_core.c`);
//! - nests carry `NLA_F_NESTED` and integers `NLA_F_NET_BYTEORDER` (the kernel checks
//!   both for addresses and ports, `ip_set_attr_netorder()`); `IPSET_ATTR_CIDR` and
//!   `IPSET_ATTR_PROTO` are plain `u8`s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use ipnet::IpNet;
use ipset_sys as sys;

use super::{protocol_has_ports, Exist, Family, IfName, Member, SetHeader, SetType};
use crate::error::Error;
use crate::nl::{
    self, Msg, MsgWriter, NLA_F_NESTED, NLA_F_NET_BYTEORDER, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_EXCL, NLM_F_REQUEST,
};

/// The protocol netfence speaks first (`IPSET_PROTOCOL`, `ip_set.h`).
pub const PROTOCOL: u8 = sys::IPSET_PROTOCOL as u8;
/// The oldest protocol netfence accepts (`IPSET_PROTOCOL_MIN`, `ip_set.h`).
pub const PROTOCOL_MIN: u8 = sys::IPSET_PROTOCOL_MIN as u8;
/// Longest set or type name, without its NUL (`IPSET_MAXNAMELEN` - 1, `ip_set.h`).
pub const MAX_NAME_LEN: usize = sys::IPSET_MAXNAMELEN as usize - 1;
/// Largest `IPSET_ATTR_ADT` nest: `nla_len` is 16 bits.
pub const ADT_NEST_MAX: usize = u16::MAX as usize;

/// `NFPROTO_IPV4` (`linux/netfilter.h`): what the ipset tool puts in every `nfgenmsg`.
const NFGEN_FAMILY: u8 = libc::NFPROTO_IPV4 as u8;
/// `NFNETLINK_V0` (`linux/netfilter/nfnetlink.h`).
const NFNETLINK_V0: u8 = sys::NFNETLINK_V0 as u8;

// Command-level attributes (`ip_set.h`, first anonymous enum).
const ATTR_PROTOCOL: u16 = sys::IPSET_ATTR_PROTOCOL as u16;
const ATTR_SETNAME: u16 = sys::IPSET_ATTR_SETNAME as u16;
const ATTR_TYPENAME: u16 = sys::IPSET_ATTR_TYPENAME as u16;
const ATTR_SETNAME2: u16 = sys::IPSET_ATTR_SETNAME2 as u16;
const ATTR_REVISION: u16 = sys::IPSET_ATTR_REVISION as u16;
const ATTR_FAMILY: u16 = sys::IPSET_ATTR_FAMILY as u16;
const ATTR_FLAGS: u16 = sys::IPSET_ATTR_FLAGS as u16;
const ATTR_DATA: u16 = sys::IPSET_ATTR_DATA as u16;
const ATTR_ADT: u16 = sys::IPSET_ATTR_ADT as u16;
const ATTR_LINENO: u16 = sys::IPSET_ATTR_LINENO as u16;
const ATTR_PROTOCOL_MIN: u16 = sys::IPSET_ATTR_PROTOCOL_MIN as u16;
const ATTR_INDEX: u16 = sys::IPSET_ATTR_INDEX as u16;
// CADT attributes, inside IPSET_ATTR_DATA (`ip_set.h`, second anonymous enum).
const ATTR_IP: u16 = sys::IPSET_ATTR_IP as u16;
const ATTR_CIDR: u16 = sys::IPSET_ATTR_CIDR as u16;
const ATTR_PORT: u16 = sys::IPSET_ATTR_PORT as u16;
const ATTR_PROTO: u16 = sys::IPSET_ATTR_PROTO as u16;
const ATTR_IFACE: u16 = sys::IPSET_ATTR_IFACE as u16;
const ATTR_CADT_FLAGS: u16 = sys::IPSET_ATTR_CADT_FLAGS as u16;
const ATTR_CADT_LINENO: u16 = sys::IPSET_ATTR_CADT_LINENO as u16;
const ATTR_INITVAL: u16 = sys::IPSET_ATTR_INITVAL as u16;
const ATTR_HASHSIZE: u16 = sys::IPSET_ATTR_HASHSIZE as u16;
const ATTR_MAXELEM: u16 = sys::IPSET_ATTR_MAXELEM as u16;
const ATTR_BUCKETSIZE: u16 = sys::IPSET_ATTR_BUCKETSIZE as u16;
const ATTR_ELEMENTS: u16 = sys::IPSET_ATTR_ELEMENTS as u16;
const ATTR_REFERENCES: u16 = sys::IPSET_ATTR_REFERENCES as u16;
const ATTR_MEMSIZE: u16 = sys::IPSET_ATTR_MEMSIZE as u16;
const ATTR_TIMEOUT: u16 = sys::IPSET_ATTR_TIMEOUT as u16;
const ATTR_NETMASK: u16 = sys::IPSET_ATTR_NETMASK as u16;
// Inside IPSET_ATTR_IP (`ip_set.h`, IP specific attributes).
const ATTR_IPADDR_IPV4: u16 = sys::IPSET_ATTR_IPADDR_IPV4 as u16;
const ATTR_IPADDR_IPV6: u16 = sys::IPSET_ATTR_IPADDR_IPV6 as u16;

/// `IPSET_FLAG_NOMATCH` (`ip_set.h`, `enum ipset_cadt_flags`).
const FLAG_NOMATCH: u32 = sys::IPSET_FLAG_NOMATCH;
/// `IPSET_FLAG_LIST_SETNAME` (`ip_set.h`, `enum ipset_cmd_flags`): dump names only.
const FLAG_LIST_SETNAME: u32 = sys::IPSET_FLAG_LIST_SETNAME;
/// `IPSET_FLAG_LIST_HEADER` (`ip_set.h`, `enum ipset_cmd_flags`): dump headers only.
const FLAG_LIST_HEADER: u32 = sys::IPSET_FLAG_LIST_HEADER;

/// An ipset command (`enum ipset_cmd`, `ip_set.h`): the low byte of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cmd {
    /// `IPSET_CMD_PROTOCOL`: ask the kernel's protocol range.
    Protocol = sys::IPSET_CMD_PROTOCOL as u8,
    /// `IPSET_CMD_CREATE`.
    Create = sys::IPSET_CMD_CREATE as u8,
    /// `IPSET_CMD_DESTROY`.
    Destroy = sys::IPSET_CMD_DESTROY as u8,
    /// `IPSET_CMD_FLUSH`.
    Flush = sys::IPSET_CMD_FLUSH as u8,
    /// `IPSET_CMD_RENAME`.
    Rename = sys::IPSET_CMD_RENAME as u8,
    /// `IPSET_CMD_SWAP`.
    Swap = sys::IPSET_CMD_SWAP as u8,
    /// `IPSET_CMD_LIST`: a dump.
    List = sys::IPSET_CMD_LIST as u8,
    /// `IPSET_CMD_SAVE`: the same dump as LIST.
    Save = sys::IPSET_CMD_SAVE as u8,
    /// `IPSET_CMD_ADD`.
    Add = sys::IPSET_CMD_ADD as u8,
    /// `IPSET_CMD_DEL`.
    Del = sys::IPSET_CMD_DEL as u8,
    /// `IPSET_CMD_TEST`.
    Test = sys::IPSET_CMD_TEST as u8,
    /// `IPSET_CMD_HEADER`.
    Header = sys::IPSET_CMD_HEADER as u8,
    /// `IPSET_CMD_TYPE`: ask a set type's revision range.
    Type = sys::IPSET_CMD_TYPE as u8,
    /// `IPSET_CMD_GET_BYNAME` (protocol 7 only).
    GetByName = sys::IPSET_CMD_GET_BYNAME as u8,
    /// `IPSET_CMD_GET_BYINDEX` (protocol 7 only).
    GetByIndex = sys::IPSET_CMD_GET_BYINDEX as u8,
}

impl Cmd {
    /// The netlink message type: `NFNL_SUBSYS_IPSET << 8 | cmd`.
    pub const fn msg_type(self) -> u16 {
        ((sys::NFNL_SUBSYS_IPSET as u16) << 8) | self as u16
    }
}

/// What every request carries besides its command: the sequence number and the protocol
/// version agreed with the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Req {
    /// `nlmsg_seq`.
    pub seq: u32,
    /// The `IPSET_ATTR_PROTOCOL` value.
    pub proto: u8,
}

/// Checks a set (or type) name the way the kernel's `NLA_NUL_STRING` policy of
/// `IPSET_MAXNAMELEN - 1` would, so that a bad name is refused before anything is sent.
///
/// # Errors
/// [`Error::Invalid`] for an empty name, one over 31 bytes, or one holding a NUL.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "is empty".to_string()
    } else if name.len() > MAX_NAME_LEN {
        format!(
            "is {} bytes long; ipset allows at most {MAX_NAME_LEN}",
            name.len()
        )
    } else if name.contains('\0') {
        "contains a NUL byte".to_string()
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!("set name {name:?}"), reason))
}

/// Checks a batch of elements for set `set` before encoding: one family, one kind (all
/// addresses, all networks, or all address-protocol-port entries), no `/0` network (ipset
/// refuses it: `IPSET_ERR_INVALID_CIDR`), no all-zero address (`IPSET_ERR_HASH_ELEM` in
/// `hash:ip`, `EINVAL` in `hash:ip,port`), and only protocols whose port the kernel keeps
/// ([`protocol_has_ports`]): for the others it stores port 0, or reads the port as an ICMP
/// type and code, so the entry would not list back as written.
///
/// Mixing kinds is refused because each kind is encoded so that sets of the other types
/// reject it (see [`encode_adt`]); in a mixed batch that rejection would hit mid-message,
/// and a caller who mixed kinds by mistake would find half the batch applied. The set's
/// own type is not known here (it would cost a round trip); [`SetType::accepts`] checks
/// a member against it.
///
/// # Errors
/// [`Error::Invalid`] naming the set and the first offending element.
pub fn validate_members(set: &str, members: &[Member]) -> Result<(), Error> {
    let Some(first) = members.first() else {
        return Ok(());
    };
    let family = first.family();
    let kind = first.set_type();
    for (i, m) in members.iter().enumerate() {
        let bad = |reason: String| {
            Err(Error::invalid(
                format!("set {set} element #{i} ({m})"),
                reason,
            ))
        };
        if m.family() != family {
            return bad(format!(
                "family {} differs from element #0's {}; a set holds one family",
                m.family().ipset_name(),
                family.ipset_name()
            ));
        }
        if m.set_type() != kind {
            return bad(format!(
                "is a {} element, element #0 a {} one; a batch holds one kind",
                m.set_type(),
                kind
            ));
        }
        if let Some(reason) = check_member(m) {
            return bad(reason);
        }
    }
    if members.len() >= u32::MAX as usize {
        return Err(Error::invalid(
            format!("batch for set {set}"),
            format!("{} elements do not fit 32-bit line numbers", members.len()),
        ));
    }
    Ok(())
}

/// Why the kernel would refuse (or not list back as written) one element, whatever the
/// set: an all-zero address, a /0 network, a port entry for a protocol without ports.
/// `None` when the element is fine. Shared by [`validate_members`] and by callers that
/// check members before any batch exists (the ruleset model).
pub fn check_member(m: &Member) -> Option<String> {
    match m {
        Member::Ip(a) | Member::IpPort { ip: a, .. } if a.is_unspecified() => {
            Some("an all-zero address cannot be stored in a hash set".into())
        }
        Member::Net { net, .. } | Member::NetIface { net, .. } if net.prefix_len() == 0 => {
            Some("a /0 network is not allowed in ipset".into())
        }
        Member::IpPort { protocol, .. } if !protocol_has_ports(*protocol) => Some(format!(
            "protocol {protocol} has no ports; hash:ip,port entries must be tcp, udp, sctp or \
             udplite"
        )),
        _ => None,
    }
}

fn begin(w: &mut MsgWriter, req: Req, cmd: Cmd, flags: u16) {
    w.begin(cmd.msg_type(), NLM_F_REQUEST | flags, req.seq);
    w.nfgenmsg(NFGEN_FAMILY, NFNETLINK_V0, 0);
    w.attr_u8(ATTR_PROTOCOL, req.proto);
}

fn finish(mut w: MsgWriter) -> Vec<u8> {
    w.end();
    w.into_bytes()
}

fn be32(w: &mut MsgWriter, ty: u16, v: u32) {
    w.attr_u32_be(ty | NLA_F_NET_BYTEORDER, v);
}

/// `NLM_F_EXCL` unless the caller tolerates existence (`flag_exist()`, `ip_set_core.c`).
fn excl(exist: Exist) -> u16 {
    match exist {
        Exist::Fail => NLM_F_EXCL,
        Exist::Ignore => 0,
    }
}

/// `IPSET_CMD_PROTOCOL`: asks the kernel's protocol range, speaking `req.proto`. The tool
/// sends it without `NLM_F_ACK`; netfence asks for the ACK so that every request ends the
/// same way.
pub fn encode_protocol(req: Req) -> Vec<u8> {
    let mut w = MsgWriter::with_capacity(32);
    begin(&mut w, req, Cmd::Protocol, NLM_F_ACK);
    finish(w)
}

/// `IPSET_CMD_TYPE`: asks which revisions of `ty` for `family` the kernel supports.
pub fn encode_type(req: Req, ty: SetType, family: Family) -> Vec<u8> {
    let mut w = MsgWriter::with_capacity(64);
    begin(&mut w, req, Cmd::Type, NLM_F_ACK);
    w.attr_strz(ATTR_TYPENAME, ty.name())
        .expect("short static name");
    w.attr_u8(ATTR_FAMILY, family.nfproto());
    finish(w)
}

/// The set-type parameters of a CREATE, all optional: what is `None` is left to the
/// kernel's default, and not sent at all (as the tool does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateParams {
    /// `IPSET_ATTR_HASHSIZE`: initial bucket count (the kernel rounds it up to a power
    /// of two, at least 64; default 1024).
    pub hashsize: Option<u32>,
    /// `IPSET_ATTR_MAXELEM`: capacity (default 65536).
    pub maxelem: Option<u32>,
}

/// `IPSET_CMD_CREATE` of set `name`, as `ipset create [-exist] NAME TYPE family F
/// [hashsize H] [maxelem M]` sends it.
///
/// # Errors
/// [`Error::Invalid`] for a bad name or a zero hashsize / maxelem.
pub fn encode_create(
    req: Req,
    name: &str,
    ty: SetType,
    family: Family,
    revision: u8,
    params: CreateParams,
    exist: Exist,
) -> Result<Vec<u8>, Error> {
    validate_name(name)?;
    for (what, v) in [("hashsize", params.hashsize), ("maxelem", params.maxelem)] {
        if v == Some(0) {
            return Err(Error::invalid(
                format!("set {name} {what}"),
                "must be at least 1",
            ));
        }
    }
    let mut w = MsgWriter::with_capacity(96);
    begin(
        &mut w,
        req,
        Cmd::Create,
        NLM_F_ACK | NLM_F_CREATE | excl(exist),
    );
    w.attr_strz(ATTR_SETNAME, name)?;
    w.attr_strz(ATTR_TYPENAME, ty.name())?;
    w.attr_u8(ATTR_REVISION, revision);
    w.attr_u8(ATTR_FAMILY, family.nfproto());
    // The tool always sends the DATA nest, empty when no option is given.
    let data = w.nest_begin(ATTR_DATA | NLA_F_NESTED);
    if let Some(h) = params.hashsize {
        be32(&mut w, ATTR_HASHSIZE, h);
    }
    if let Some(m) = params.maxelem {
        be32(&mut w, ATTR_MAXELEM, m);
    }
    w.nest_end(data)?;
    Ok(finish(w))
}

/// A request that names one set and nothing else.
fn encode_named(req: Req, cmd: Cmd, flags: u16, name: &str) -> Result<Vec<u8>, Error> {
    validate_name(name)?;
    let mut w = MsgWriter::with_capacity(48);
    begin(&mut w, req, cmd, flags);
    w.attr_strz(ATTR_SETNAME, name)?;
    Ok(finish(w))
}

/// `IPSET_CMD_DESTROY` of set `name`. With [`Exist::Ignore`] a missing set is not an
/// error. There is deliberately no way to encode a destroy without a name: the kernel
/// reads that as "destroy every set in the namespace".
///
/// # Errors
/// [`Error::Invalid`] for a bad name.
pub fn encode_destroy(req: Req, name: &str, exist: Exist) -> Result<Vec<u8>, Error> {
    encode_named(req, Cmd::Destroy, NLM_F_ACK | excl(exist), name)
}

/// `IPSET_CMD_FLUSH` of set `name` (again never without a name, which flushes all sets).
///
/// # Errors
/// [`Error::Invalid`] for a bad name.
pub fn encode_flush(req: Req, name: &str) -> Result<Vec<u8>, Error> {
    encode_named(req, Cmd::Flush, NLM_F_ACK, name)
}

fn encode_two_names(req: Req, cmd: Cmd, a: &str, b: &str) -> Result<Vec<u8>, Error> {
    validate_name(a)?;
    validate_name(b)?;
    let mut w = MsgWriter::with_capacity(64);
    begin(&mut w, req, cmd, NLM_F_ACK);
    w.attr_strz(ATTR_SETNAME, a)?;
    w.attr_strz(ATTR_SETNAME2, b)?;
    Ok(finish(w))
}

/// `IPSET_CMD_RENAME` of set `from` to `to`.
///
/// # Errors
/// [`Error::Invalid`] for a bad name.
pub fn encode_rename(req: Req, from: &str, to: &str) -> Result<Vec<u8>, Error> {
    encode_two_names(req, Cmd::Rename, from, to)
}

/// `IPSET_CMD_SWAP` of sets `a` and `b`: names (and the kernel indexes rules refer to)
/// trade places atomically.
///
/// # Errors
/// [`Error::Invalid`] for a bad name.
pub fn encode_swap(req: Req, a: &str, b: &str) -> Result<Vec<u8>, Error> {
    encode_two_names(req, Cmd::Swap, a, b)
}

/// What a LIST dump returns per set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListWhat {
    /// Names only (`IPSET_FLAG_LIST_SETNAME`, as `ipset list -n`).
    Names,
    /// Headers only (`IPSET_FLAG_LIST_HEADER`, as `ipset list -t`).
    Headers,
    /// Headers and members (as `ipset list`).
    Everything,
}

/// `IPSET_CMD_LIST` dump of one set, or of all sets when `name` is `None`.
///
/// # Errors
/// [`Error::Invalid`] for a bad name.
pub fn encode_list(req: Req, name: Option<&str>, what: ListWhat) -> Result<Vec<u8>, Error> {
    let mut w = MsgWriter::with_capacity(48);
    begin(&mut w, req, Cmd::List, NLM_F_ACK | NLM_F_DUMP);
    if let Some(name) = name {
        validate_name(name)?;
        w.attr_strz(ATTR_SETNAME, name)?;
    }
    match what {
        ListWhat::Names => be32(&mut w, ATTR_FLAGS, FLAG_LIST_SETNAME),
        ListWhat::Headers => be32(&mut w, ATTR_FLAGS, FLAG_LIST_HEADER),
        ListWhat::Everything => {}
    }
    Ok(finish(w))
}

/// `IPSET_CMD_GET_BYNAME`: the kernel index of set `name`, which the xt `set` match
/// carries. Protocol 7 only (`protocol_failed()` in `ip_set_core.c`).
///
/// # Errors
/// [`Error::Invalid`] for a bad name.
pub fn encode_get_byname(req: Req, name: &str) -> Result<Vec<u8>, Error> {
    encode_named(req, Cmd::GetByName, NLM_F_ACK, name)
}

/// `IPSET_CMD_GET_BYINDEX`: the name of the set at kernel index `index`. Protocol 7 only.
pub fn encode_get_byindex(req: Req, index: u16) -> Vec<u8> {
    let mut w = MsgWriter::with_capacity(32);
    begin(&mut w, req, Cmd::GetByIndex, NLM_F_ACK);
    // NLA_U16 read with ip_set_get_h16(): big-endian.
    w.attr_u16_be(ATTR_INDEX | NLA_F_NET_BYTEORDER, index);
    finish(w)
}

/// `IPSET_ATTR_IP`: a nest holding one big-endian address attribute.
fn put_ip(w: &mut MsgWriter, addr: IpAddr) -> Result<(), Error> {
    let n = w.nest_begin(ATTR_IP | NLA_F_NESTED);
    match addr {
        IpAddr::V4(a) => w.attr(ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &a.octets())?,
        IpAddr::V6(a) => w.attr(ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &a.octets())?,
    }
    w.nest_end(n)
}

/// The element attributes inside one `IPSET_ATTR_DATA`, in the tool's order: IP, CIDR,
/// CADT_FLAGS for a network; IP, PORT, PROTO for a `hash:ip,port` entry; IP, CIDR,
/// CADT_FLAGS, IFACE (a NUL-terminated string) for a `hash:net,iface` entry; then
/// (ADD/DEL only) LINENO.
///
/// A network always carries `IPSET_ATTR_CADT_FLAGS`, 0 when not `nomatch` (the tool
/// leaves it out then). The kernel treats 0 as absent in `hash:net`, but `hash:ip` has no
/// CADT_FLAGS in its element policy, so its strict parse refuses the element
/// (`IPSET_ERR_PROTOCOL`) instead of reading `10.0.0.0/8` as a range of 16M addresses.
/// `hash:ip,port` refuses a network or an address as well: both lack the `IPSET_ATTR_PORT`
/// its `uadt` requires (`ip_set_hash_ipport.c`), which it checks before it would read
/// CIDR as a range. PORT is a big-endian `u16` flagged `NLA_F_NET_BYTEORDER`, which the
/// kernel insists on (`ip_set_attr_netorder()`); PROTO a plain `u8`.
fn put_member(w: &mut MsgWriter, m: &Member, lineno: Option<u32>) -> Result<(), Error> {
    match *m {
        Member::Ip(addr) => put_ip(w, addr)?,
        Member::Net { net, nomatch } => {
            let net = net.trunc();
            put_ip(w, net.addr())?;
            w.attr_u8(ATTR_CIDR, net.prefix_len());
            be32(w, ATTR_CADT_FLAGS, if nomatch { FLAG_NOMATCH } else { 0 });
        }
        Member::IpPort { ip, protocol, port } => {
            put_ip(w, ip)?;
            w.attr_u16_be(ATTR_PORT | NLA_F_NET_BYTEORDER, port);
            w.attr_u8(ATTR_PROTO, protocol);
        }
        Member::NetIface {
            net,
            iface,
            nomatch,
        } => {
            let net = net.trunc();
            put_ip(w, net.addr())?;
            w.attr_u8(ATTR_CIDR, net.prefix_len());
            be32(w, ATTR_CADT_FLAGS, if nomatch { FLAG_NOMATCH } else { 0 });
            w.attr_strz(ATTR_IFACE, iface.as_str())?;
        }
    }
    if let Some(l) = lineno {
        be32(w, ATTR_CADT_LINENO, l);
    }
    Ok(())
}

/// Bytes one element takes inside the `IPSET_ATTR_ADT` nest, headers and padding included.
pub fn adt_element_len(m: &Member) -> usize {
    const HDR: usize = 4;
    let ip = |a: &IpAddr| HDR + HDR + if a.is_ipv4() { 4 } else { 16 };
    let body = match m {
        Member::Ip(a) => ip(a),
        // CIDR is a u8 padded to 4; CADT_FLAGS a u32.
        Member::Net { net, .. } => ip(&net.addr()) + (HDR + 4) + (HDR + 4),
        // PORT is a u16 and PROTO a u8, each padded to 4.
        Member::IpPort { ip: a, .. } => ip(a) + (HDR + 4) + (HDR + 4),
        // IFACE is the name and its NUL, padded to 4.
        Member::NetIface { net, iface, .. } => {
            ip(&net.addr())
                + (HDR + 4)
                + (HDR + 4)
                + HDR
                + (iface.as_str().len() + 1).div_ceil(4) * 4
        }
    };
    // DATA nest header + body + LINENO.
    HDR + body + HDR + 4
}

/// Splits `members` into runs that each fit one `IPSET_ATTR_ADT` nest (64 KiB): 2,730 IPv4
/// addresses, 1,638 IPv4 `hash:ip,port` entries, or 1,260 IPv6 networks or `hash:ip,port`
/// entries per message.
pub fn plan_adt(members: &[Member]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 4; // the ADT nest's own header
    for (i, m) in members.iter().enumerate() {
        let len = adt_element_len(m);
        if used + len > ADT_NEST_MAX && i > start {
            out.push(start..i);
            start = i;
            used = 4;
        }
        used += len;
    }
    if start < members.len() {
        out.push(start..members.len());
    }
    out
}

/// An element command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adt {
    /// `IPSET_CMD_ADD`.
    Add,
    /// `IPSET_CMD_DEL`.
    Del,
}

impl Adt {
    /// The command the message carries.
    pub(crate) fn cmd(self) -> Cmd {
        match self {
            Self::Add => Cmd::Add,
            Self::Del => Cmd::Del,
        }
    }
}

/// One `IPSET_CMD_ADD`/`DEL` of many elements, as `ipset restore` sends it: a command-level
/// `IPSET_ATTR_LINENO` (required with an ADT list, and the slot where the kernel writes
/// the failing element's number back) and an `IPSET_ATTR_ADT` nest of `IPSET_ATTR_DATA`
/// nests, element `i` numbered `first_lineno + i`. Line numbers must not be 0: the kernel
/// reports a failing element only when its number is non-zero (`call_ad()`).
///
/// The kernel applies the elements in order and stops at the first failure, keeping the
/// earlier ones. With [`Exist::Ignore`] (no `NLM_F_EXCL`) an element already present
/// (add) or absent (del) is not a failure.
///
/// # Errors
/// [`Error::Invalid`] for a bad name or batch ([`validate_members`]); [`Error::Encode`]
/// when the elements do not fit one nest (use [`plan_adt`]).
pub fn encode_adt(
    req: Req,
    adt: Adt,
    set: &str,
    members: &[Member],
    first_lineno: u32,
    exist: Exist,
) -> Result<Vec<u8>, Error> {
    validate_name(set)?;
    validate_members(set, members)?;
    if first_lineno == 0 || first_lineno.checked_add(members.len() as u32).is_none() {
        return Err(Error::invalid(
            format!("batch for set {set}"),
            format!("line numbers from {first_lineno} must be non-zero and fit 32 bits"),
        ));
    }
    let size: usize = members.iter().map(adt_element_len).sum();
    let mut w = MsgWriter::with_capacity(64 + size);
    begin(&mut w, req, adt.cmd(), NLM_F_ACK | excl(exist));
    w.attr_strz(ATTR_SETNAME, set)?;
    be32(&mut w, ATTR_LINENO, first_lineno);
    let list = w.nest_begin(ATTR_ADT | NLA_F_NESTED);
    for (i, m) in members.iter().enumerate() {
        let data = w.nest_begin(ATTR_DATA | NLA_F_NESTED);
        put_member(&mut w, m, Some(first_lineno + i as u32))?;
        w.nest_end(data)?;
    }
    w.nest_end(list).map_err(|_| Error::Encode {
        what: format!(
            "{} elements for set {set}: {size} bytes exceed one 64 KiB ADT nest; split with plan_adt",
            members.len()
        ),
    })?;
    Ok(finish(w))
}

/// `IPSET_CMD_TEST` of one element, as `ipset test` sends it (a single `IPSET_ATTR_DATA`,
/// no line number). A `nomatch` network tests for the element stored as `nomatch`.
///
/// # Errors
/// [`Error::Invalid`] for a bad name or element.
pub fn encode_test(req: Req, set: &str, member: &Member) -> Result<Vec<u8>, Error> {
    validate_name(set)?;
    validate_members(set, std::slice::from_ref(member))?;
    let mut w = MsgWriter::with_capacity(80);
    begin(&mut w, req, Cmd::Test, NLM_F_ACK);
    w.attr_strz(ATTR_SETNAME, set)?;
    let data = w.nest_begin(ATTR_DATA | NLA_F_NESTED);
    put_member(&mut w, member, None)?;
    w.nest_end(data)?;
    Ok(finish(w))
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

fn check_reply(msg: &Msg<'_>, cmd: Cmd) -> Result<(), Error> {
    if msg.ty != cmd.msg_type() {
        return Err(Error::malformed(format!(
            "expected an ipset {cmd:?} reply (type {:#06x}), got type {:#06x}",
            cmd.msg_type(),
            msg.ty
        )));
    }
    if msg.payload.len() < 4 {
        return Err(Error::malformed("ipset reply shorter than its nfgenmsg"));
    }
    Ok(())
}

/// The kernel's answer to [`encode_protocol`]: its newest protocol and, when it says, its
/// oldest (`IPSET_ATTR_PROTOCOL_MIN`, absent from old kernels).
///
/// # Errors
/// [`Error::Malformed`] for a reply that is not a PROTOCOL reply or lacks the version.
pub fn decode_protocol(msg: &Msg<'_>) -> Result<(u8, Option<u8>), Error> {
    check_reply(msg, Cmd::Protocol)?;
    let (mut max, mut min) = (None, None);
    for a in msg.attrs(4) {
        let a = a?;
        match a.ty {
            ATTR_PROTOCOL => max = Some(a.u8()?),
            ATTR_PROTOCOL_MIN => min = Some(a.u8()?),
            _ => {}
        }
    }
    let max = max.ok_or_else(|| Error::malformed("PROTOCOL reply without IPSET_ATTR_PROTOCOL"))?;
    Ok((max, min))
}

/// The protocol to speak given the kernel's range: 7 when the kernel speaks it, else 6.
///
/// # Errors
/// [`Error::Kernel`] with `EPROTONOSUPPORT` when the ranges don't meet.
pub fn negotiate(kernel_max: u8, kernel_min: Option<u8>) -> Result<u8, Error> {
    let kernel_min = kernel_min.unwrap_or(kernel_max);
    let proto = kernel_max.min(PROTOCOL);
    if proto < PROTOCOL_MIN || proto < kernel_min {
        return Err(Error::Kernel {
            op: format!(
                "agreeing on the ipset protocol: the kernel speaks {kernel_min}..={kernel_max}, \
                 netfence {PROTOCOL_MIN}..={PROTOCOL}"
            ),
            errno: libc::EPROTONOSUPPORT,
        });
    }
    Ok(proto)
}

/// The kernel's answer to [`encode_type`]: (newest, oldest) revision of the type.
///
/// # Errors
/// [`Error::Malformed`] for a reply that lacks them.
pub fn decode_type(msg: &Msg<'_>) -> Result<(u8, u8), Error> {
    check_reply(msg, Cmd::Type)?;
    let (mut max, mut min) = (None, None);
    for a in msg.attrs(4) {
        let a = a?;
        match a.ty {
            ATTR_REVISION => max = Some(a.u8()?),
            ATTR_PROTOCOL_MIN => min = Some(a.u8()?), // = IPSET_ATTR_REVISION_MIN
            _ => {}
        }
    }
    match (max, min) {
        (Some(max), Some(min)) => Ok((max, min)),
        (Some(max), None) => Ok((max, 0)),
        _ => Err(Error::malformed("TYPE reply without IPSET_ATTR_REVISION")),
    }
}

/// The revision to create `ty` with: the newest the kernel supports, capped at the
/// newest ipset 7.17 knows (so that `ipset list` shows what the tool would have made).
pub fn choose_revision(ty: SetType, kernel_max: u8, kernel_min: u8) -> u8 {
    kernel_max.min(ty.known_revision()).max(kernel_min)
}

/// The kernel's answer to [`encode_get_byname`]: (index, `NFPROTO_*` family).
///
/// # Errors
/// [`Error::Malformed`] for a reply that lacks the index.
pub fn decode_get_byname(msg: &Msg<'_>) -> Result<(u16, u8), Error> {
    check_reply(msg, Cmd::GetByName)?;
    let (mut index, mut family) = (None, 0);
    for a in msg.attrs(4) {
        let a = a?;
        match a.ty {
            ATTR_INDEX => index = Some(a.u16_be()?),
            ATTR_FAMILY => family = a.u8()?,
            _ => {}
        }
    }
    let index = index.ok_or_else(|| Error::malformed("GET_BYNAME reply without an index"))?;
    Ok((index, family))
}

/// The kernel's answer to [`encode_get_byindex`]: the set's name.
///
/// # Errors
/// [`Error::Malformed`] for a reply that lacks the name.
pub fn decode_get_byindex(msg: &Msg<'_>) -> Result<String, Error> {
    check_reply(msg, Cmd::GetByIndex)?;
    for a in msg.attrs(4) {
        let a = a?;
        if a.ty == ATTR_SETNAME {
            return Ok(a.str()?.to_string());
        }
    }
    Err(Error::malformed("GET_BYINDEX reply without a set name"))
}

/// One message of a LIST dump. A set whose members don't fit one message comes as
/// several: the first carries the header, every one carries the name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListChunk {
    /// The set's name.
    pub name: String,
    /// The header, in the set's first message only (and absent from a names-only dump).
    pub header: Option<SetHeader>,
    /// Members in this message.
    pub members: Vec<Member>,
    /// Elements in this message that [`Member`] can't represent (see
    /// [`super::SetListing::unreadable`]).
    pub unreadable: usize,
}

/// Decodes one message of a LIST/SAVE dump.
///
/// Members are told apart by shape, which is exact for the three types netfence speaks:
/// `hash:net` lists every element with `IPSET_ATTR_CIDR`, `hash:net,iface` with
/// `IPSET_ATTR_CIDR` and `IPSET_ATTR_IFACE` (`hash_netiface4_data_list()`), `hash:ip,port`
/// with `IPSET_ATTR_PORT` and `IPSET_ATTR_PROTO` (`hash_ipport4_data_list()`), `hash:ip`
/// with none of them. Elements of other types are decoded on the same rule and should not be
/// trusted.
///
/// What other writers may put in the kernel and netfence can't represent does not fail
/// the dump, since one such object would stop netfence from reading any set: a name
/// that is not UTF-8 is read lossily (netfence's own names are ASCII, so it can't be
/// one of them), and an element [`Member`] can't hold is counted in
/// [`ListChunk::unreadable`].
///
/// # Errors
/// [`Error::Malformed`] for a message that does not parse as netlink attributes, or
/// whose addresses have the wrong size; never a panic.
pub fn decode_list(msg: &Msg<'_>) -> Result<ListChunk, Error> {
    if msg.ty != Cmd::List.msg_type() && msg.ty != Cmd::Save.msg_type() {
        return Err(Error::malformed(format!(
            "expected an ipset LIST reply, got type {:#06x}",
            msg.ty
        )));
    }
    let mut name = None;
    let mut h = SetHeader::default();
    let mut has_header = false;
    let mut members = Vec::new();
    let mut unreadable = 0;
    for a in msg.attrs(4) {
        let a = a?;
        match a.ty {
            ATTR_SETNAME => name = Some(lossy_str(a.data)),
            ATTR_TYPENAME => {
                has_header = true;
                h.type_name = lossy_str(a.data);
                h.set_type = SetType::from_name(&h.type_name);
            }
            ATTR_FAMILY => h.family = Family::from_nfproto(a.u8()?),
            ATTR_REVISION => h.revision = a.u8()?,
            ATTR_INDEX => h.index = Some(a.u16_be()?),
            ATTR_DATA => {
                for d in a.nested() {
                    let d = d?;
                    match d.ty {
                        ATTR_HASHSIZE => h.hashsize = Some(d.u32_be()?),
                        ATTR_MAXELEM => h.maxelem = Some(d.u32_be()?),
                        ATTR_BUCKETSIZE => h.bucketsize = Some(d.u8()?),
                        ATTR_INITVAL => h.initval = Some(d.u32_be()?),
                        ATTR_REFERENCES => h.references = d.u32_be()?,
                        ATTR_MEMSIZE => h.memsize = d.u32_be()?,
                        ATTR_ELEMENTS => h.entries = d.u32_be()?,
                        ATTR_TIMEOUT => h.timeout = Some(d.u32_be()?),
                        ATTR_NETMASK => h.netmask = Some(d.u8()?),
                        ATTR_CADT_FLAGS => h.cadt_flags = d.u32_be()?,
                        other => h.other_options.push(other),
                    }
                }
            }
            ATTR_ADT => {
                for d in a.nested() {
                    let d = d?;
                    if d.ty != ATTR_DATA {
                        return Err(Error::malformed(format!(
                            "attribute {} inside IPSET_ATTR_ADT",
                            d.ty
                        )));
                    }
                    match decode_member(d.data)? {
                        Element::Member(m) => members.push(m),
                        Element::Unreadable => unreadable += 1,
                        // Elements without an address (bitmap:port) belong to types
                        // netfence doesn't speak: skipped, so that listing every set
                        // still works.
                        Element::Other => {}
                    }
                }
            }
            _ => {}
        }
    }
    let name = name.ok_or_else(|| Error::malformed("LIST reply without a set name"))?;
    if has_header {
        h.name = name.clone();
    }
    Ok(ListChunk {
        name,
        header: has_header.then_some(h),
        members,
        unreadable,
    })
}

/// A name attribute's text up to its NUL, with bytes that are not UTF-8 replaced.
fn lossy_str(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// What one listed element is to netfence.
#[derive(Debug, PartialEq, Eq)]
enum Element {
    /// A member it can represent.
    Member(Member),
    /// An element of a set type netfence speaks that [`Member`] can't hold.
    Unreadable,
    /// An element without an address: a type netfence doesn't speak.
    Other,
}

fn decode_ip(data: &[u8]) -> Result<IpAddr, Error> {
    for a in nl::attrs(data) {
        let a = a?;
        match a.ty {
            ATTR_IPADDR_IPV4 => {
                let b: [u8; 4] = a
                    .data
                    .try_into()
                    .map_err(|_| Error::malformed("IPv4 address attribute not 4 bytes"))?;
                return Ok(IpAddr::V4(Ipv4Addr::from(b)));
            }
            ATTR_IPADDR_IPV6 => {
                let b: [u8; 16] = a
                    .data
                    .try_into()
                    .map_err(|_| Error::malformed("IPv6 address attribute not 16 bytes"))?;
                return Ok(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {}
        }
    }
    Err(Error::malformed("IPSET_ATTR_IP without an address"))
}

/// Decodes one listed element. Only a broken attribute stream or an address of the
/// wrong size is an error: the kernel never sends those. Anything well-formed that
/// [`Member`] can't represent is [`Element::Unreadable`].
fn decode_member(data: &[u8]) -> Result<Element, Error> {
    let (mut ip, mut cidr, mut flags) = (None, None, 0u32);
    let (mut port, mut proto, mut iface) = (None, None, None);
    for a in nl::attrs(data) {
        let a = a?;
        match a.ty {
            ATTR_IP => ip = Some(decode_ip(a.data)?),
            ATTR_CIDR => cidr = Some(a.u8()?),
            ATTR_CADT_FLAGS => flags = a.u32_be()?,
            ATTR_PORT => port = Some(a.u16_be()?),
            ATTR_PROTO => proto = Some(a.u8()?),
            ATTR_IFACE => iface = Some(a.data),
            _ => {}
        }
    }
    let Some(ip) = ip else {
        return Ok(Element::Other);
    };
    // A wildcard (`eth+`) or physdev interface: matching netfence can't express, so
    // never one of its members.
    if flags & !FLAG_NOMATCH != 0 {
        return Ok(Element::Unreadable);
    }
    let nomatch = flags & FLAG_NOMATCH != 0;
    let net = |len: u8| IpNet::new(ip, len).ok();
    let m = match (iface, cidr, port) {
        (Some(name), Some(len), _) => {
            let name = std::str::from_utf8(
                &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())],
            );
            match (net(len), name.ok().and_then(|n| IfName::new(n).ok())) {
                (Some(net), Some(iface)) => Some(Member::NetIface {
                    net,
                    iface,
                    nomatch,
                }),
                _ => None,
            }
        }
        (Some(_), None, _) => None,
        (None, None, None) => Some(Member::Ip(ip)),
        (None, None, Some(port)) => proto.map(|protocol| Member::IpPort { ip, protocol, port }),
        // hash:net,port and the like: not a type netfence speaks, and dropped by the
        // caller; decoded as the network so that listing all sets doesn't fail on them.
        (None, Some(len), _) => net(len).map(|net| Member::Net { net, nomatch }),
    };
    Ok(m.map_or(Element::Unreadable, Element::Member))
}

/// Decodes an `NLMSG_ERROR` answering an ADD/DEL: the errno (0 for an ACK) and, when the
/// kernel reported one, the line number of the element that failed.
///
/// On an element failure `call_ad()` (`ip_set_core.c`) does not let netlink send its
/// usual error: it sends its own `NLMSG_ERROR` holding the *whole* request (whatever
/// `NETLINK_CAP_ACK` says) with the command-level `IPSET_ATTR_LINENO` overwritten by the
/// failing element's number. It copies the value in host order after reading it in host
/// order, so the bytes come back exactly as sent: big-endian here.
///
/// # Errors
/// [`Error::Malformed`] when the message is not a well-formed `NLMSG_ERROR`.
pub fn decode_adt_error(msg: &Msg<'_>) -> Result<(i32, Option<u32>), Error> {
    let (errno, _) = msg.error()?;
    if errno == 0 {
        return Ok((0, None));
    }
    // struct nlmsgerr { int error; struct nlmsghdr msg; payload... }
    let inner = &msg.payload[4..];
    let Some(Ok(req)) = nl::messages(inner).next() else {
        // A capped error: only the header came back, so no line number.
        return Ok((errno, None));
    };
    let mut lineno = None;
    for a in req.attrs(4) {
        let Ok(a) = a else { break };
        if a.ty == ATTR_LINENO {
            lineno = a.u32_be().ok();
        }
    }
    Ok((errno, lineno))
}

#[cfg(test)]
mod tests {
    //! Expected bytes are what `ipset` 7.17 sent for the same command, captured with
    //! `strace -f -e trace=sendto -xx -s 8192 ipset ...` in a scratch namespace (sequence
    //! numbers aside, which are the clock for the tool and a parameter here).

    use super::*;

    const SEQ: u32 = 0x6b01_0203;
    const REQ: Req = Req { seq: SEQ, proto: 7 };

    /// nlmsghdr + nfgenmsg(AF_INET, 0, 0) + the given attribute bytes.
    fn msg(cmd: u8, flags: u16, attrs: &[u8]) -> Vec<u8> {
        let len = 16 + 4 + attrs.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&(0x0600u16 | cmd as u16).to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&SEQ.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&[2, 0, 0, 0]);
        v.extend_from_slice(attrs);
        v
    }

    /// A little-endian-host attribute header + payload + padding, as strace prints them
    /// (`{nla_len=5, nla_type=0x1}, "\x07"`).
    fn a(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn proto7() -> Vec<u8> {
        a(1, &[7])
    }

    const REQUEST_ACK: u16 = 0x5;

    #[test]
    fn msg_type_is_subsys_shifted() {
        assert_eq!(Cmd::Add.msg_type(), 0x0609);
        assert_eq!(Cmd::GetByIndex.msg_type(), 0x060f);
    }

    #[test]
    fn create_hash_ip_with_options_matches_ipset() {
        // ipset create s1 hash:ip family inet hashsize 1024 maxelem 65536
        let got = encode_create(
            REQ,
            "s1",
            SetType::HashIp,
            Family::Ipv4,
            6,
            CreateParams {
                hashsize: Some(1024),
                maxelem: Some(65536),
            },
            Exist::Fail,
        )
        .unwrap();
        let want = msg(
            2,
            REQUEST_ACK | 0x600,
            &[
                proto7(),
                a(2, b"s1\0"),
                a(3, b"hash:ip\0"),
                a(4, &[6]),
                a(5, &[2]),
                a(
                    0x8007,
                    b"\x08\x00\x12\x40\x00\x00\x04\x00\x08\x00\x13\x40\x00\x01\x00\x00",
                ),
            ]
            .concat(),
        );
        assert_eq!(got, want);
    }

    #[test]
    fn create_exist_and_inet6_match_ipset() {
        // ipset create -exist s1 hash:ip family inet: no NLM_F_EXCL, empty DATA nest.
        let got = encode_create(
            REQ,
            "s1",
            SetType::HashIp,
            Family::Ipv4,
            6,
            CreateParams::default(),
            Exist::Ignore,
        )
        .unwrap();
        let want = msg(
            2,
            REQUEST_ACK | 0x400,
            &[
                proto7(),
                a(2, b"s1\0"),
                a(3, b"hash:ip\0"),
                a(4, &[6]),
                a(5, &[2]),
                a(0x8007, &[]),
            ]
            .concat(),
        );
        assert_eq!(got, want);
        // ipset create s6 hash:net family inet6: nfgenmsg still says AF_INET.
        let got = encode_create(
            REQ,
            "s6",
            SetType::HashNet,
            Family::Ipv6,
            7,
            CreateParams::default(),
            Exist::Fail,
        )
        .unwrap();
        let want = msg(
            2,
            REQUEST_ACK | 0x600,
            &[
                proto7(),
                a(2, b"s6\0"),
                a(3, b"hash:net\0"),
                a(4, &[7]),
                a(5, &[10]),
                a(0x8007, &[]),
            ]
            .concat(),
        );
        assert_eq!(got, want);
    }

    #[test]
    fn simple_commands_match_ipset() {
        // ipset destroy s3 / ipset destroy -exist nosuch
        assert_eq!(
            encode_destroy(REQ, "s3", Exist::Fail).unwrap(),
            msg(3, REQUEST_ACK | 0x200, &[proto7(), a(2, b"s3\0")].concat())
        );
        assert_eq!(
            encode_destroy(REQ, "nosuch", Exist::Ignore).unwrap(),
            msg(3, REQUEST_ACK, &[proto7(), a(2, b"nosuch\0")].concat())
        );
        // ipset flush s1
        assert_eq!(
            encode_flush(REQ, "s1").unwrap(),
            msg(4, REQUEST_ACK, &[proto7(), a(2, b"s1\0")].concat())
        );
        // ipset rename s2 s3 / ipset swap s1 s3
        assert_eq!(
            encode_rename(REQ, "s2", "s3").unwrap(),
            msg(
                5,
                REQUEST_ACK,
                &[proto7(), a(2, b"s2\0"), a(3, b"s3\0")].concat()
            )
        );
        assert_eq!(
            encode_swap(REQ, "s1", "s3").unwrap(),
            msg(
                6,
                REQUEST_ACK,
                &[proto7(), a(2, b"s1\0"), a(3, b"s3\0")].concat()
            )
        );
    }

    #[test]
    fn list_requests_match_ipset() {
        let dump = REQUEST_ACK | 0x300;
        // ipset list -n
        assert_eq!(
            encode_list(REQ, None, ListWhat::Names).unwrap(),
            msg(7, dump, &[proto7(), a(0x4006, &[0, 0, 0, 2])].concat())
        );
        // ipset list -t s1
        assert_eq!(
            encode_list(REQ, Some("s1"), ListWhat::Headers).unwrap(),
            msg(
                7,
                dump,
                &[proto7(), a(2, b"s1\0"), a(0x4006, &[0, 0, 0, 4])].concat()
            )
        );
        // ipset list s6 / ipset list
        assert_eq!(
            encode_list(REQ, Some("s6"), ListWhat::Everything).unwrap(),
            msg(7, dump, &[proto7(), a(2, b"s6\0")].concat())
        );
        assert_eq!(
            encode_list(REQ, None, ListWhat::Everything).unwrap(),
            msg(7, dump, &proto7())
        );
    }

    #[test]
    fn queries_are_the_tools_plus_ack() {
        // The tool sends PROTOCOL and TYPE with NLM_F_REQUEST only; netfence adds NLM_F_ACK.
        assert_eq!(encode_protocol(REQ), msg(1, REQUEST_ACK, &proto7()));
        assert_eq!(
            encode_type(REQ, SetType::HashIp, Family::Ipv4),
            msg(
                1 + 12,
                REQUEST_ACK,
                &[proto7(), a(3, b"hash:ip\0"), a(5, &[2])].concat()
            )
        );
        // GET_BYNAME / GET_BYINDEX: not used by the tool; per ip_set_core.c's policies.
        assert_eq!(
            encode_get_byname(REQ, "nf-x").unwrap(),
            msg(14, REQUEST_ACK, &[proto7(), a(2, b"nf-x\0")].concat())
        );
        assert_eq!(
            encode_get_byindex(REQ, 0x0102),
            msg(15, REQUEST_ACK, &[proto7(), a(0x400b, &[1, 2])].concat())
        );
    }

    fn ip(s: &str) -> Member {
        Member::Ip(s.parse().unwrap())
    }
    fn net(s: &str, nomatch: bool) -> Member {
        Member::Net {
            net: s.parse().unwrap(),
            nomatch,
        }
    }

    #[test]
    fn adt_hash_ip_matches_ipset_restore() {
        // printf 'add nf-a 10.0.0.1\nadd nf-a 10.0.0.2\n' | ipset restore [-exist]
        let adt = a(
            0x8008,
            b"\x18\x00\x07\x80\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x01\x08\x00\x09\x40\x00\x00\x00\x01\
              \x18\x00\x07\x80\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x02\x08\x00\x09\x40\x00\x00\x00\x02",
        );
        let attrs = [proto7(), a(2, b"nf-a\0"), a(0x4009, &[0, 0, 0, 1]), adt].concat();
        let members = [ip("10.0.0.1"), ip("10.0.0.2")];
        assert_eq!(
            encode_adt(REQ, Adt::Add, "nf-a", &members, 1, Exist::Fail).unwrap(),
            msg(9, REQUEST_ACK | 0x200, &attrs)
        );
        assert_eq!(
            encode_adt(REQ, Adt::Add, "nf-a", &members, 1, Exist::Ignore).unwrap(),
            msg(9, REQUEST_ACK, &attrs)
        );
        // printf 'del nf-a 10.0.0.1\ndel nf-a 10.0.0.2\n' | ipset restore
        assert_eq!(
            encode_adt(REQ, Adt::Del, "nf-a", &members, 1, Exist::Fail).unwrap(),
            msg(10, REQUEST_ACK | 0x200, &attrs)
        );
    }

    #[test]
    fn adt_hash_net_v6_nomatch_matches_ipset_restore() {
        // printf 'add nf-b 2001:db8::/64 nomatch\n' | ipset restore
        let adt = a(
            0x8008,
            b"\x34\x00\x07\x80\x18\x00\x01\x80\x14\x00\x02\x40\x20\x01\x0d\xb8\x00\x00\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x03\x00\x40\x00\x00\x00\x08\x00\x08\x40\
              \x00\x00\x00\x04\x08\x00\x09\x40\x00\x00\x00\x01",
        );
        let want = msg(
            9,
            REQUEST_ACK | 0x200,
            &[proto7(), a(2, b"nf-b\0"), a(0x4009, &[0, 0, 0, 1]), adt].concat(),
        );
        let got = encode_adt(
            REQ,
            Adt::Add,
            "nf-b",
            &[net("2001:db8::/64", true)],
            1,
            Exist::Fail,
        )
        .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn adt_hash_net_v4_differs_from_ipset_only_by_zero_cadt_flags() {
        // printf 'add nf-c 10.1.0.0/16 nomatch\nadd nf-c 10.2.0.0/16\n' | ipset restore
        // sends no CADT_FLAGS for the second element; netfence sends CADT_FLAGS 0 there
        // (see put_member), 8 more bytes.
        let adt = a(
            0x8008,
            b"\x28\x00\x07\x80\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x01\x00\x00\x05\x00\x03\x00\
              \x10\x00\x00\x00\x08\x00\x08\x40\x00\x00\x00\x04\x08\x00\x09\x40\x00\x00\x00\x01\
              \x28\x00\x07\x80\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x02\x00\x00\x05\x00\x03\x00\
              \x10\x00\x00\x00\x08\x00\x08\x40\x00\x00\x00\x00\x08\x00\x09\x40\x00\x00\x00\x02",
        );
        let want = msg(
            9,
            REQUEST_ACK | 0x200,
            &[proto7(), a(2, b"nf-c\0"), a(0x4009, &[0, 0, 0, 1]), adt].concat(),
        );
        let members = [net("10.1.0.0/16", true), net("10.2.0.0/16", false)];
        assert_eq!(
            encode_adt(REQ, Adt::Add, "nf-c", &members, 1, Exist::Fail).unwrap(),
            want
        );
        // A host bit set in the network is masked off, as the kernel would.
        let sloppy = [net("10.1.2.3/16", true), net("10.2.0.0/16", false)];
        assert_eq!(
            encode_adt(REQ, Adt::Add, "nf-c", &sloppy, 1, Exist::Fail).unwrap(),
            want
        );
    }

    #[test]
    fn test_matches_ipset() {
        // ipset test nf-a 10.0.0.1
        assert_eq!(
            encode_test(REQ, "nf-a", &ip("10.0.0.1")).unwrap(),
            msg(
                11,
                REQUEST_ACK,
                &[
                    proto7(),
                    a(2, b"nf-a\0"),
                    a(0x8007, b"\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x01"),
                ]
                .concat()
            )
        );
        // ipset test nf-c 10.1.0.0/16 nomatch
        assert_eq!(
            encode_test(REQ, "nf-c", &net("10.1.0.0/16", true)).unwrap(),
            msg(
                11,
                REQUEST_ACK,
                &[
                    proto7(),
                    a(2, b"nf-c\0"),
                    a(
                        0x8007,
                        b"\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x01\x00\x00\x05\x00\x03\x00\
                          \x10\x00\x00\x00\x08\x00\x08\x40\x00\x00\x00\x04"
                    ),
                ]
                .concat()
            )
        );
    }

    #[test]
    fn protocol_byte_is_the_negotiated_one() {
        let got = encode_flush(Req { seq: SEQ, proto: 6 }, "s1").unwrap();
        assert_eq!(
            got,
            msg(4, REQUEST_ACK, &[a(1, &[6]), a(2, b"s1\0")].concat())
        );
    }

    #[test]
    fn invalid_input_is_refused_before_encoding() {
        let long = "x".repeat(32);
        assert!(encode_flush(REQ, &long).is_err());
        assert!(encode_flush(REQ, &"x".repeat(31)).is_ok());
        assert!(encode_flush(REQ, "").is_err());
        assert!(encode_flush(REQ, "a\0b").is_err());
        let e = encode_adt(
            REQ,
            Adt::Add,
            "s",
            &[net("0.0.0.0/0", false)],
            1,
            Exist::Fail,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("set s element #0 (0.0.0.0/0)"),
            "{e}"
        );
        let e = encode_adt(
            REQ,
            Adt::Add,
            "s",
            &[ip("10.0.0.1"), ip("::1")],
            1,
            Exist::Fail,
        )
        .unwrap_err();
        assert!(e.to_string().contains("element #1 (::1)"), "{e}");
        assert!(e.to_string().contains("family inet6"), "{e}");
        let e = encode_adt(
            REQ,
            Adt::Add,
            "s",
            &[ip("10.0.0.1"), net("10.0.0.0/8", false)],
            1,
            Exist::Fail,
        )
        .unwrap_err();
        assert!(e.to_string().contains("element #1"), "{e}");
        assert!(encode_adt(REQ, Adt::Add, "s", &[ip("0.0.0.0")], 1, Exist::Fail).is_err());
        assert!(encode_adt(REQ, Adt::Add, "s", &[ip("10.0.0.1")], 0, Exist::Fail).is_err());
        let params = CreateParams {
            hashsize: Some(0),
            maxelem: None,
        };
        assert!(encode_create(
            REQ,
            "s",
            SetType::HashIp,
            Family::Ipv4,
            6,
            params,
            Exist::Fail
        )
        .is_err());
    }

    #[test]
    fn element_lengths_are_exact() {
        for m in [
            ip("10.0.0.1"),
            ip("::1"),
            net("10.0.0.0/8", true),
            net("2001:db8::/32", false),
        ] {
            let one = encode_adt(REQ, Adt::Add, "s", &[m], 1, Exist::Fail).unwrap();
            let two = encode_adt(REQ, Adt::Add, "s", &[m, m], 1, Exist::Fail).unwrap();
            assert_eq!(two.len() - one.len(), adt_element_len(&m), "{m}");
        }
        assert_eq!(adt_element_len(&ip("10.0.0.1")), 24);
    }

    #[test]
    fn plan_fills_nests_without_overflow() {
        let v4: Vec<Member> = (1..=100_000u32)
            .map(|i| Member::Ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
            .collect();
        let plan = plan_adt(&v4);
        assert_eq!(plan[0], 0..2730); // (65535 - 4) / 24
        assert_eq!(plan.len(), 100_000usize.div_ceil(2730));
        assert_eq!(plan.last().unwrap().end, v4.len());
        for r in &plan {
            let m = encode_adt(
                REQ,
                Adt::Add,
                "s",
                &v4[r.clone()],
                r.start as u32 + 1,
                Exist::Fail,
            );
            assert!(m.is_ok());
        }
        let too_many = encode_adt(REQ, Adt::Add, "s", &v4[..2731], 1, Exist::Fail);
        assert!(matches!(too_many, Err(Error::Encode { .. })));
        assert!(plan_adt(&[]).is_empty());
        let v6: Vec<Member> = (1..=3000u128)
            .map(|i| Member::Net {
                net: IpNet::new(
                    IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | i << 16)),
                    112,
                )
                .unwrap(),
                nomatch: i % 2 == 0,
            })
            .collect();
        let plan = plan_adt(&v6);
        assert_eq!(plan[0], 0..(65531 / 52));
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[2].end, 3000);
    }

    /// The reply of `ipset list s6` captured from the kernel: header with index, then one
    /// `nomatch` IPv6 network.
    fn list_reply() -> Vec<u8> {
        let data = a(
            0x8007,
            b"\x08\x00\x12\x40\x00\x00\x04\x00\x08\x00\x13\x40\x00\x01\x00\x00\x05\x00\x15\x00\
              \x0c\x00\x00\x00\x08\x00\x11\x40\x27\x56\xba\x7d\x08\x00\x19\x40\x00\x00\x00\x00\
              \x08\x00\x1a\x40\x00\x00\x05\x20\x08\x00\x18\x40\x00\x00\x00\x01",
        );
        let adt = a(
            0x8008,
            b"\x2c\x00\x07\x80\x18\x00\x01\x80\x14\x00\x02\x00\x20\x01\x0d\xb8\x00\x00\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x03\x00\x40\x00\x00\x00\x08\x00\x08\x40\
              \x00\x00\x00\x04",
        );
        let m = msg(
            7,
            0x2,
            &[
                proto7(),
                a(2, b"s6\0"),
                a(3, b"hash:net\0"),
                a(5, &[10]),
                a(4, &[7]),
                a(0x400b, &[0, 1]),
                data,
                adt,
            ]
            .concat(),
        );
        assert_eq!(m.len(), 184); // as strace showed
        m
    }

    #[test]
    fn decode_list_reply() {
        let buf = list_reply();
        let msg = nl::messages(&buf).next().unwrap().unwrap();
        let chunk = decode_list(&msg).unwrap();
        assert_eq!(chunk.name, "s6");
        let h = chunk.header.unwrap();
        assert_eq!(h.name, "s6");
        assert_eq!(h.type_name, "hash:net");
        assert_eq!(h.set_type, Some(SetType::HashNet));
        assert_eq!(h.family, Some(Family::Ipv6));
        assert_eq!(h.revision, 7);
        assert_eq!(h.index, Some(1));
        assert_eq!(h.hashsize, Some(1024));
        assert_eq!(h.maxelem, Some(65536));
        assert_eq!(h.bucketsize, Some(12));
        assert_eq!(h.initval, Some(0x2756_ba7d));
        assert_eq!(h.references, 0);
        assert_eq!(h.memsize, 1312);
        assert_eq!(h.entries, 1);
        assert!(h.extras().is_empty(), "{:?}", h.extras());
        assert_eq!(chunk.members, vec![net("2001:db8::/64", true)]);
        assert_eq!(chunk.unreadable, 0);
    }

    #[test]
    fn decode_header_options_netfence_never_sets() {
        // `ipset create s hash:ip timeout 3 netmask 16 counters forceadd`, with a bitmask
        // attribute (12) standing for one a newer kernel may add.
        let be32 = |v: u32| v.to_be_bytes();
        let data = a(
            0x8007,
            &[
                a(0x4012, &be32(1024)),
                a(0x4013, &be32(65536)),
                a(0x4006, &be32(3)),
                a(0x14, &[16]),
                a(
                    0x4008,
                    &be32(sys::IPSET_FLAG_WITH_COUNTERS | sys::IPSET_FLAG_WITH_FORCEADD),
                ),
                a(0x800c, &a(0x4001, &[255, 255, 0, 0])),
                a(0x4018, &be32(0)),
            ]
            .concat(),
        );
        let buf = msg(
            7,
            0x2,
            &[
                proto7(),
                a(2, b"s\0"),
                a(3, b"hash:ip\0"),
                a(5, &[2]),
                a(4, &[6]),
                data,
            ]
            .concat(),
        );
        let m = nl::messages(&buf).next().unwrap().unwrap();
        let h = decode_list(&m).unwrap().header.unwrap();
        assert_eq!((h.timeout, h.netmask), (Some(3), Some(16)));
        assert_eq!(
            h.extras(),
            [
                "timeout 3",
                "netmask 16",
                "counters",
                "forceadd",
                "attribute 12"
            ]
        );
    }

    #[test]
    fn what_others_write_and_netfence_cannot_represent_does_not_fail_a_listing() {
        let ip4 = a(0x8001, &a(0x4001, &[10, 0, 0, 1]));
        let elem = |attrs: &[Vec<u8>]| a(0x8007, &attrs.concat());
        // A wildcard interface (`ipset add s 10.0.0.1,eth+`), an interface name netfence
        // refuses, a port without its protocol; then one member it reads.
        let adt = a(
            0x8008,
            &[
                elem(&[
                    ip4.clone(),
                    a(3, &[32]),
                    a(0x17, b"eth\0"),
                    a(0x4008, &sys::IPSET_FLAG_IFACE_WILDCARD.to_be_bytes()),
                ]),
                elem(&[ip4.clone(), a(3, &[32]), a(0x17, b"eth0:1\0")]),
                elem(&[ip4.clone(), a(0x4004, &80u16.to_be_bytes())]),
                elem(&[ip4.clone(), a(3, &[32]), a(0x17, b"eth0\0")]),
            ]
            .concat(),
        );
        // A set name that is not UTF-8.
        let buf = msg(7, 0x2, &[proto7(), a(2, b"caf\xe9\0"), adt].concat());
        let m = nl::messages(&buf).next().unwrap().unwrap();
        let c = decode_list(&m).unwrap();
        assert_eq!(c.name, "caf\u{fffd}");
        assert_eq!(c.unreadable, 3);
        assert_eq!(
            c.members,
            vec![Member::net_iface(
                "10.0.0.1/32".parse().unwrap(),
                IfName::new("eth0").unwrap()
            )]
        );
    }

    #[test]
    fn decode_names_only_chunk() {
        let buf = msg(7, 0x2, &[proto7(), a(2, b"s1\0")].concat());
        let m = nl::messages(&buf).next().unwrap().unwrap();
        let c = decode_list(&m).unwrap();
        assert_eq!(
            (c.name.as_str(), c.header, c.members.len()),
            ("s1", None, 0)
        );
    }

    #[test]
    fn decode_protocol_and_negotiate() {
        let buf = msg(1, 0, &[proto7(), a(10, &[6])].concat());
        let m = nl::messages(&buf).next().unwrap().unwrap();
        assert_eq!(decode_protocol(&m).unwrap(), (7, Some(6)));
        assert_eq!(negotiate(7, Some(6)).unwrap(), 7);
        // A future kernel that still speaks 7.
        assert_eq!(negotiate(9, Some(6)).unwrap(), 7);
        // A protocol-6 kernel: fall back.
        assert_eq!(negotiate(6, None).unwrap(), 6);
        assert_eq!(negotiate(6, Some(5)).unwrap(), 6);
        // Too old, or too new to meet.
        assert!(negotiate(5, None).is_err());
        assert!(negotiate(9, Some(8)).is_err());
    }

    #[test]
    fn decode_type_and_revision() {
        let buf = msg(
            13,
            0,
            &[
                proto7(),
                a(3, b"hash:ip\0"),
                a(5, &[2]),
                a(4, &[6]),
                a(10, &[0]),
            ]
            .concat(),
        );
        let m = nl::messages(&buf).next().unwrap().unwrap();
        assert_eq!(decode_type(&m).unwrap(), (6, 0));
        assert_eq!(choose_revision(SetType::HashIp, 6, 0), 6);
        assert_eq!(choose_revision(SetType::HashIp, 9, 0), 6);
        assert_eq!(choose_revision(SetType::HashNet, 9, 0), 7);
        assert_eq!(choose_revision(SetType::HashNet, 4, 0), 4);
    }

    #[test]
    fn decode_byname_byindex() {
        let buf = msg(14, 0, &[proto7(), a(5, &[2]), a(0x400b, &[0, 3])].concat());
        let m = nl::messages(&buf).next().unwrap().unwrap();
        assert_eq!(decode_get_byname(&m).unwrap(), (3, 2));
        let buf = msg(15, 0, &[proto7(), a(2, b"nf-x\0")].concat());
        let m = nl::messages(&buf).next().unwrap().unwrap();
        assert_eq!(decode_get_byindex(&m).unwrap(), "nf-x");
        assert!(decode_get_byindex(&nl::messages(&list_reply()).next().unwrap().unwrap()).is_err());
    }

    /// An `NLMSG_ERROR` as `call_ad()` builds it: errno, then the request with its
    /// command-level LINENO replaced.
    fn adt_error(errno: i32, request: &[u8], lineno: u32) -> Vec<u8> {
        let mut req = request.to_vec();
        // The command LINENO follows PROTOCOL (8 bytes) and SETNAME; find it by walking.
        let mut off = 20;
        while off < req.len() {
            let len = u16::from_ne_bytes([req[off], req[off + 1]]) as usize;
            let ty = u16::from_ne_bytes([req[off + 2], req[off + 3]]) & 0x3fff;
            if ty == 9 {
                req[off + 4..off + 8].copy_from_slice(&lineno.to_be_bytes());
            }
            off += nl::align(len);
        }
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + 4 + req.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&2u16.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&SEQ.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&(-errno).to_ne_bytes());
        v.extend_from_slice(&req);
        v
    }

    #[test]
    fn decode_adt_errors() {
        let req = encode_adt(
            REQ,
            Adt::Add,
            "s1",
            &[ip("10.0.0.4"), ip("10.0.0.2")],
            1,
            Exist::Fail,
        )
        .unwrap();
        let buf = adt_error(4103, &req, 2);
        let m = nl::messages(&buf).next().unwrap().unwrap();
        assert_eq!(decode_adt_error(&m).unwrap(), (4103, Some(2)));
        // A capped error (set missing): header only, no line number.
        let buf = adt_error(libc::ENOENT, &req[..16], 0);
        let m = nl::messages(&buf).next().unwrap().unwrap();
        assert_eq!(decode_adt_error(&m).unwrap(), (libc::ENOENT, None));
        // An ACK.
        let buf = adt_error(0, &req[..16], 0);
        let m = nl::messages(&buf).next().unwrap().unwrap();
        assert_eq!(decode_adt_error(&m).unwrap(), (0, None));
    }

    fn ipp(s: &str, protocol: u8, port: u16) -> Member {
        Member::IpPort {
            ip: s.parse().unwrap(),
            protocol,
            port,
        }
    }

    #[test]
    fn create_hash_ip_port_matches_ipset() {
        // ipset create s1 hash:ip,port family inet hashsize 1024 maxelem 65536
        let got = encode_create(
            REQ,
            "s1",
            SetType::HashIpPort,
            Family::Ipv4,
            7,
            CreateParams {
                hashsize: Some(1024),
                maxelem: Some(65536),
            },
            Exist::Fail,
        )
        .unwrap();
        let want = msg(
            2,
            REQUEST_ACK | 0x600,
            &[
                proto7(),
                a(2, b"s1\0"),
                a(3, b"hash:ip,port\0"),
                a(4, &[7]),
                a(5, &[2]),
                a(
                    0x8007,
                    b"\x08\x00\x12\x40\x00\x00\x04\x00\x08\x00\x13\x40\x00\x01\x00\x00",
                ),
            ]
            .concat(),
        );
        assert_eq!(got.len(), 92); // as strace showed
        assert_eq!(got, want);
        // ipset create s6 hash:ip,port family inet6
        let got = encode_create(
            REQ,
            "s6",
            SetType::HashIpPort,
            Family::Ipv6,
            7,
            CreateParams::default(),
            Exist::Fail,
        )
        .unwrap();
        let want = msg(
            2,
            REQUEST_ACK | 0x600,
            &[
                proto7(),
                a(2, b"s6\0"),
                a(3, b"hash:ip,port\0"),
                a(4, &[7]),
                a(5, &[10]),
                a(0x8007, &[]),
            ]
            .concat(),
        );
        assert_eq!(got.len(), 76);
        assert_eq!(got, want);
        // The revision query the tool sends first, plus netfence's ACK flag.
        assert_eq!(
            encode_type(REQ, SetType::HashIpPort, Family::Ipv4),
            msg(
                13,
                REQUEST_ACK,
                &[proto7(), a(3, b"hash:ip,port\0"), a(5, &[2])].concat()
            )
        );
    }

    #[test]
    fn adt_hash_net_iface_matches_ipset_restore() {
        // printf 'add x 0.0.0.0/1,veth0 nomatch\nadd x 10.0.0.7,veth12\n' | ipset restore
        // The first element is byte for byte the tool's: IP nest, CIDR, CADT_FLAGS
        // (NOMATCH), IFACE ("veth0\0" padded to 8), LINENO. For the second the tool leaves
        // out CIDR 32 and the zero flags; netfence always sends both, which the kernel reads
        // the same way (hash:net,iface has CADT_FLAGS in its element policy).
        let adt = a(
            0x8008,
            b"\x34\x00\x07\x80\x0c\x00\x01\x80\x08\x00\x01\x40\x00\x00\x00\x00\x05\x00\x03\x00\
              \x01\x00\x00\x00\x08\x00\x08\x40\x00\x00\x00\x04\x0a\x00\x17\x00\x76\x65\x74\x68\
              \x30\x00\x00\x00\x08\x00\x09\x40\x00\x00\x00\x01\
              \x34\x00\x07\x80\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x07\x05\x00\x03\x00\
              \x20\x00\x00\x00\x08\x00\x08\x40\x00\x00\x00\x00\x0b\x00\x17\x00\x76\x65\x74\x68\
              \x31\x32\x00\x00\x08\x00\x09\x40\x00\x00\x00\x02",
        );
        let attrs = [proto7(), a(2, b"x\0"), a(0x4009, &[0, 0, 0, 1]), adt].concat();
        let iface = |s: &str| IfName::new(s).unwrap();
        let members = [
            Member::NetIface {
                net: "0.0.0.0/1".parse().unwrap(),
                iface: iface("veth0"),
                nomatch: true,
            },
            Member::net_iface("10.0.0.7/32".parse().unwrap(), iface("veth12")),
        ];
        let got = encode_adt(REQ, Adt::Add, "x", &members, 1, Exist::Fail).unwrap();
        assert_eq!(got, msg(9, REQUEST_ACK | 0x200, &attrs));
        assert_eq!(
            members.iter().map(adt_element_len).sum::<usize>() + 4,
            0x6c,
            "the ADT nest's length"
        );
        // Host bits are masked as the kernel would: 10.0.0.0/1 is 0.0.0.0/1.
        let masked = Member::NetIface {
            net: "10.0.0.0/1".parse().unwrap(),
            iface: iface("veth0"),
            nomatch: true,
        };
        assert_eq!(
            encode_adt(REQ, Adt::Add, "x", &[masked, members[1]], 1, Exist::Fail).unwrap(),
            got
        );
        // And what the kernel lists decodes to the members (IP, CIDR, IFACE, FLAGS order
        // of hash_netiface6_data_list(), flags only when set).
        let data = [
            a(
                0x8001,
                &a(
                    0x4002,
                    &"8000::".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                ),
            ),
            a(3, &[1]),
            a(0x17, b"eth0\0"),
        ]
        .concat();
        assert_eq!(
            decode_member(&data).unwrap(),
            Element::Member(Member::net_iface(
                "8000::/1".parse().unwrap(),
                iface("eth0")
            ))
        );
        // An interface without a prefix is unreadable, not a panic.
        let data = [a(0x8001, &a(0x4001, &[10, 0, 0, 1])), a(0x17, b"eth0\0")].concat();
        assert_eq!(decode_member(&data).unwrap(), Element::Unreadable);
    }

    #[test]
    fn adt_hash_ip_port_v4_matches_ipset_restore() {
        // printf 'add s1 10.0.0.1,tcp:80\nadd s1 10.0.0.2,udp:53\nadd s1 10.0.0.3,sctp:9\n'
        //   | ipset restore
        // Each element: IP nest, PORT (0x4004, big-endian u16), PROTO (7, u8), LINENO.
        let adt = a(
            0x8008,
            b"\x28\x00\x07\x80\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x01\x06\x00\x04\x40\
              \x00\x50\x00\x00\x05\x00\x07\x00\x06\x00\x00\x00\x08\x00\x09\x40\x00\x00\x00\x01\
              \x28\x00\x07\x80\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x02\x06\x00\x04\x40\
              \x00\x35\x00\x00\x05\x00\x07\x00\x11\x00\x00\x00\x08\x00\x09\x40\x00\x00\x00\x02\
              \x28\x00\x07\x80\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x03\x06\x00\x04\x40\
              \x00\x09\x00\x00\x05\x00\x07\x00\x84\x00\x00\x00\x08\x00\x09\x40\x00\x00\x00\x03",
        );
        let attrs = [proto7(), a(2, b"s1\0"), a(0x4009, &[0, 0, 0, 1]), adt].concat();
        let members = [
            ipp("10.0.0.1", 6, 80),
            ipp("10.0.0.2", 17, 53),
            ipp("10.0.0.3", 132, 9),
        ];
        let got = encode_adt(REQ, Adt::Add, "s1", &members, 1, Exist::Fail).unwrap();
        assert_eq!(got.len(), 168); // as strace showed
        assert_eq!(got, msg(9, REQUEST_ACK | 0x200, &attrs));
        // The constructors build the same entries.
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            [
                Member::tcp(ip("10.0.0.1"), 80),
                Member::udp(ip("10.0.0.2"), 53),
                Member::sctp(ip("10.0.0.3"), 9)
            ],
            members
        );
        // printf 'del ...' | ipset restore -exist: DEL, no NLM_F_EXCL.
        assert_eq!(
            encode_adt(REQ, Adt::Del, "s1", &members, 1, Exist::Ignore).unwrap(),
            msg(10, REQUEST_ACK, &attrs)
        );
    }

    #[test]
    fn adt_hash_ip_port_v6_matches_ipset_restore() {
        // printf 'add s6 fd00::1,udp:53\n' | ipset restore
        let adt = a(
            0x8008,
            b"\x34\x00\x07\x80\x18\x00\x01\x80\x14\x00\x02\x40\xfd\x00\x00\x00\x00\x00\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x01\x06\x00\x04\x40\x00\x35\x00\x00\x05\x00\x07\x00\
              \x11\x00\x00\x00\x08\x00\x09\x40\x00\x00\x00\x01",
        );
        let want = msg(
            9,
            REQUEST_ACK | 0x200,
            &[proto7(), a(2, b"s6\0"), a(0x4009, &[0, 0, 0, 1]), adt].concat(),
        );
        assert_eq!(want.len(), 100); // as strace showed
        let got = encode_adt(
            REQ,
            Adt::Add,
            "s6",
            &[ipp("fd00::1", 17, 53)],
            1,
            Exist::Fail,
        )
        .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn test_hash_ip_port_matches_ipset() {
        // ipset test s1 10.0.0.1,tcp:80
        let got = encode_test(REQ, "s1", &ipp("10.0.0.1", 6, 80)).unwrap();
        let want = msg(
            11,
            REQUEST_ACK,
            &[
                proto7(),
                a(2, b"s1\0"),
                a(
                    0x8007,
                    b"\x0c\x00\x01\x80\x08\x00\x01\x40\x0a\x00\x00\x01\x06\x00\x04\x40\
                      \x00\x50\x00\x00\x05\x00\x07\x00\x06\x00\x00\x00",
                ),
            ]
            .concat(),
        );
        assert_eq!(want.len(), 68); // as strace showed
        assert_eq!(got, want);
    }

    #[test]
    fn hash_ip_port_batches_are_validated() {
        let err = |ms: &[Member]| {
            encode_adt(REQ, Adt::Add, "s", ms, 1, Exist::Fail)
                .unwrap_err()
                .to_string()
        };
        // Kinds don't mix, whichever comes first.
        let e = err(&[ipp("10.0.0.1", 6, 80), ip("10.0.0.2")]);
        assert!(e.contains("set s element #1 (10.0.0.2)"), "{e}");
        assert!(
            e.contains("hash:ip element, element #0 a hash:ip,port"),
            "{e}"
        );
        let e = err(&[net("10.0.0.0/8", false), ipp("10.0.0.1", 6, 80)]);
        assert!(e.contains("element #1 (10.0.0.1,tcp:80)"), "{e}");
        // One family.
        let e = err(&[ipp("10.0.0.1", 6, 80), ipp("fd00::1", 6, 80)]);
        assert!(e.contains("family inet6"), "{e}");
        // Protocols without ports, and protocol 0.
        for p in [0, 1, 47, 58] {
            let e = err(&[ipp("10.0.0.1", p, 0)]);
            assert!(e.contains(&format!("protocol {p} has no ports")), "{e}");
        }
        // The all-zero address (the kernel answers EINVAL).
        let e = err(&[ipp("0.0.0.0", 6, 80)]);
        assert!(e.contains("all-zero"), "{e}");
        assert!(encode_test(REQ, "s", &ipp("::", 17, 53)).is_err());
        // Port 0 is a port; udplite is a port protocol.
        assert!(encode_adt(
            REQ,
            Adt::Add,
            "s",
            &[ipp("10.0.0.1", 6, 0), ipp("10.0.0.1", 136, 7)],
            1,
            Exist::Fail
        )
        .is_ok());
    }

    #[test]
    fn hash_ip_port_plan_and_lengths() {
        assert_eq!(adt_element_len(&ipp("10.0.0.1", 6, 80)), 40);
        assert_eq!(adt_element_len(&ipp("fd00::1", 17, 53)), 52);
        for m in [ipp("10.0.0.1", 6, 80), ipp("fd00::1", 132, 9)] {
            let one = encode_adt(REQ, Adt::Add, "s", &[m], 1, Exist::Fail).unwrap();
            let two = encode_adt(REQ, Adt::Add, "s", &[m, m], 1, Exist::Fail).unwrap();
            assert_eq!(two.len() - one.len(), adt_element_len(&m), "{m}");
        }
        let v4: Vec<Member> = (1..=5000u32)
            .map(|i| Member::tcp(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 8080))
            .collect();
        let plan = plan_adt(&v4);
        assert_eq!(plan[0], 0..1638); // (65535 - 4) / 40
        assert_eq!(plan.len(), 4);
        for r in &plan {
            let first = r.start as u32 + 1;
            let m = encode_adt(REQ, Adt::Add, "s", &v4[r.clone()], first, Exist::Fail);
            assert!(m.is_ok());
        }
        let over = encode_adt(REQ, Adt::Add, "s", &v4[..1639], 1, Exist::Fail);
        assert!(matches!(over, Err(Error::Encode { .. })));
        let v6: Vec<Member> = (1..=3000u128)
            .map(|i| Member::udp(IpAddr::V6(Ipv6Addr::from(0xfd00u128 << 112 | i)), 53))
            .collect();
        let plan = plan_adt(&v6);
        assert_eq!(plan[0], 0..1260); // (65535 - 4) / 52
        assert_eq!(plan.len(), 3);
    }

    /// The reply of `ipset list s6` for a `hash:ip,port` set captured from the kernel:
    /// header with index, then `fd00::1,udp:53`. The kernel sends the IPv6 address without
    /// `NLA_F_NET_BYTEORDER`, the port with it.
    #[test]
    fn decode_hash_ip_port_list_reply() {
        let data = a(
            0x8007,
            b"\x08\x00\x12\x40\x00\x00\x04\x00\x08\x00\x13\x40\x00\x01\x00\x00\x05\x00\x15\x00\
              \x0c\x00\x00\x00\x08\x00\x11\x40\xc6\xde\x6d\xe7\x08\x00\x19\x40\x00\x00\x00\x00\
              \x08\x00\x1a\x40\x00\x00\x01\x30\x08\x00\x18\x40\x00\x00\x00\x01",
        );
        let adt = a(
            0x8008,
            b"\x2c\x00\x07\x80\x18\x00\x01\x80\x14\x00\x02\x00\xfd\x00\x00\x00\x00\x00\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x01\x06\x00\x04\x40\x00\x35\x00\x00\x05\x00\x07\x00\
              \x11\x00\x00\x00",
        );
        let buf = msg(
            7,
            0x2,
            &[
                proto7(),
                a(2, b"s6\0"),
                a(3, b"hash:ip,port\0"),
                a(5, &[10]),
                a(4, &[7]),
                a(0x400b, &[0, 1]),
                data,
                adt,
            ]
            .concat(),
        );
        assert_eq!(buf.len(), 188); // as strace showed
        let m = nl::messages(&buf).next().unwrap().unwrap();
        let chunk = decode_list(&m).unwrap();
        let h = chunk.header.unwrap();
        assert_eq!(
            (h.type_name.as_str(), h.set_type, h.family, h.revision),
            (
                "hash:ip,port",
                Some(SetType::HashIpPort),
                Some(Family::Ipv6),
                7
            )
        );
        assert_eq!(
            (h.index, h.initval, h.memsize),
            (Some(1), Some(0xc6de_6de7), 304)
        );
        assert_eq!(chunk.members, vec![ipp("fd00::1", 17, 53)]);
        assert_eq!(chunk.members[0].to_string(), "fd00::1,udp:53");
        // A port without its protocol is not an element netfence can name: counted,
        // not a failed listing.
        let bad = a(
            0x8008,
            &a(
                0x8007,
                &[a(0x8001, &a(0x4001, &[10, 0, 0, 1])), a(0x4004, &[0, 80])].concat(),
            ),
        );
        let buf = msg(7, 0x2, &[proto7(), a(2, b"s1\0"), bad].concat());
        let m = nl::messages(&buf).next().unwrap().unwrap();
        let c = decode_list(&m).unwrap();
        assert_eq!((c.members.len(), c.unreadable), (0, 1));
        assert_eq!(choose_revision(SetType::HashIpPort, 7, 0), 7);
        assert_eq!(choose_revision(SetType::HashIpPort, 9, 0), 7);
        assert_eq!(choose_revision(SetType::HashIpPort, 6, 0), 6);
    }

    proptest::proptest! {
        /// No reply, however mangled, makes a decoder panic.
        #[test]
        fn decoders_never_panic(buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            for m in nl::messages(&buf).take(16).flatten() {
                let _ = decode_list(&m);
                let _ = decode_protocol(&m);
                let _ = decode_type(&m);
                let _ = decode_get_byname(&m);
                let _ = decode_get_byindex(&m);
                let _ = decode_adt_error(&m);
            }
        }

        /// Mutating single bytes of a real reply never panics either (random bytes rarely
        /// get past the headers, so start from a valid one).
        #[test]
        fn mutated_list_replies_never_panic(
            edits in proptest::collection::vec((0usize..184, proptest::prelude::any::<u8>()), 1..8),
            cut in 0usize..=184,
        ) {
            let mut buf = list_reply();
            for (i, b) in edits { buf[i] = b; }
            buf.truncate(cut.max(16));
            for m in nl::messages(&buf).take(4).flatten() {
                let _ = decode_list(&m);
                let _ = decode_adt_error(&m);
            }
        }

        /// `hash:ip,port` entries survive encoding then decoding, in both families.
        #[test]
        fn ip_port_members_roundtrip(
            v6 in proptest::prelude::any::<u128>(),
            is_v6 in proptest::prelude::any::<bool>(),
            protocol in proptest::sample::select(vec![6u8, 17, 132, 136]),
            port in proptest::prelude::any::<u16>(),
        ) {
            let ip = if is_v6 {
                IpAddr::V6(Ipv6Addr::from(v6 | 1))
            } else {
                IpAddr::V4(Ipv4Addr::from(v6 as u32 | 1))
            };
            let m = Member::IpPort { ip, protocol, port };
            let req = encode_adt(REQ, Adt::Add, "s", &[m], 1, Exist::Fail).unwrap();
            let msg = nl::messages(&req).next().unwrap().unwrap();
            let adt = msg.attrs(4).flatten().find(|a| a.ty == ATTR_ADT).unwrap();
            let data = adt.nested().flatten().next().unwrap();
            proptest::prop_assert_eq!(decode_member(data.data).unwrap(), Element::Member(m));
        }

        /// Encoding then decoding elements gives them back (through a LIST-shaped message).
        #[test]
        fn members_roundtrip(v4 in proptest::prelude::any::<u32>(), len in 1u8..=32, nomatch in proptest::prelude::any::<bool>()) {
            let m = Member::Net { net: IpNet::new(IpAddr::V4(Ipv4Addr::from(v4)), len).unwrap().trunc(), nomatch };
            let req = encode_adt(REQ, Adt::Add, "s", &[m], 1, Exist::Fail).unwrap();
            let msg = nl::messages(&req).next().unwrap().unwrap();
            let adt = msg.attrs(4).flatten().find(|a| a.ty == ATTR_ADT).unwrap();
            let data = adt.nested().flatten().next().unwrap();
            proptest::prop_assert_eq!(decode_member(data.data).unwrap(), Element::Member(m));
        }
    }
}
