//! The ipset netlink protocol, spoken directly: `hash:ip`, `hash:net`, `hash:ip,port` and
//! `hash:net,iface` sets, IPv4 and IPv6, with many elements per message.
//!
//! [`Ipset`] is the handle: it owns a [`NetlinkSocket`] in some network namespace and
//! agrees on the protocol once (7, or 6 on kernels that only speak 6). [`wire`] holds the
//! pure encoders and decoders, tested byte for byte against what the `ipset` tool sends.
//!
//! Adding or deleting many elements costs one message per 64 KiB of elements (about 2,700
//! IPv4 addresses) and one round trip per message: 1,000 elements are one round trip.
//! Messages go one at a time, each waiting for its ACK, because the kernel processes every
//! message of a `sendmsg` even after one failed; waiting is what makes "the elements
//! before the failing one, and only those, were applied" true across messages.

pub mod wire;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use ipset_sys as sys;

use self::wire::{Adt, CreateParams, ListChunk, ListWhat, Req};
use crate::error::Error;
use crate::nl::{self, Msg};
use crate::socket::{Answers, NetlinkSocket, Netns};

pub use crate::family::Family;

/// The set types netfence creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetType {
    /// `hash:ip`: host addresses (pods).
    HashIp,
    /// `hash:net`: networks, optionally `nomatch` (ipBlock with except).
    HashNet,
    /// `hash:ip,port`: (address, protocol, port) entries. Named ports resolve to a
    /// different number per pod, so one rule matches them all through
    /// `--match-set S dst,dst` instead of one rule per distinct port.
    HashIpPort,
    /// `hash:net,iface`: (network, interface) pairs, optionally `nomatch`. Matched
    /// `src,src` it asks "did this source address arrive on that interface", which is
    /// what anti-spoofing needs: one rule for every pod interface.
    HashNetIface,
}

impl SetType {
    /// The kernel's type name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::HashIp => "hash:ip",
            Self::HashNet => "hash:net",
            Self::HashIpPort => "hash:ip,port",
            Self::HashNetIface => "hash:net,iface",
        }
    }

    /// The type named `name`, if netfence speaks it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "hash:ip" => Some(Self::HashIp),
            "hash:net" => Some(Self::HashNet),
            "hash:ip,port" => Some(Self::HashIpPort),
            "hash:net,iface" => Some(Self::HashNetIface),
            _ => None,
        }
    }

    /// The newest revision ipset 7.17 creates (the last `ipset_type` registered by its
    /// `lib/ipset_hash_ip.c`, `ipset_hash_net.c`, `ipset_hash_ipport.c` and
    /// `ipset_hash_netiface.c`): hash:ip 6 (bitmask), hash:net 7 (bucketsize, initval),
    /// hash:ip,port 7 (netmask and bitmask; also the kernel's `IPSET_TYPE_REV_MAX` in
    /// `ip_set_hash_ipport.c`), hash:net,iface 8 (bucketsize, initval; what
    /// `ipset create` makes on kernel 6.18). A newer revision would make `ipset list`
    /// refuse the set as unknown to the tool.
    pub const fn known_revision(self) -> u8 {
        match self {
            Self::HashIp => 6,
            Self::HashNet => 7,
            Self::HashIpPort => 7,
            Self::HashNetIface => 8,
        }
    }

    /// How many packet fields one lookup reads: the number of `src`/`dst` directions an
    /// xt `set` match on this set needs (`IPSET_DIM_*`). hash:ip,port takes two, so the
    /// usual match is `dst,dst`: destination address, destination port.
    pub const fn dimension(self) -> usize {
        match self {
            Self::HashIp | Self::HashNet => 1,
            Self::HashIpPort | Self::HashNetIface => 2,
        }
    }

    /// Whether a set of this type stores `m` as given. The kernel would refuse some of
    /// the others, but not all: an address sent to a `hash:net` set is stored as a host
    /// network, so this is stricter than the kernel, and what a model of the set should
    /// check.
    pub const fn accepts(self, m: &Member) -> bool {
        matches!(
            (self, m),
            (Self::HashIp, Member::Ip(_))
                | (Self::HashNet, Member::Net { .. })
                | (Self::HashIpPort, Member::IpPort { .. })
                | (Self::HashNetIface, Member::NetIface { .. })
        )
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A network interface name as the kernel keeps it: 1 to 15 bytes (`IFNAMSIZ` - 1), not
/// `.` or `..`, without `/`, `:`, NUL or whitespace (`dev_valid_name()`). `Copy`, so that
/// [`Member`] stays `Copy`; ordered and compared as the string.
#[derive(Clone, Copy)]
pub struct IfName {
    len: u8,
    bytes: [u8; IfName::MAX],
}

impl IfName {
    /// The longest name: `IFNAMSIZ` (16) less the NUL.
    pub const MAX: usize = 15;

    /// Checks `name` as the kernel would before it names a device.
    ///
    /// # Errors
    /// [`Error::Invalid`] saying what is wrong with the name.
    pub fn new(name: &str) -> Result<Self, Error> {
        if let Err(why) = Self::check(name) {
            return Err(Error::invalid(format!("interface name {name:?}"), why));
        }
        let mut bytes = [0; Self::MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Self {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The rule `name` breaks, if any; for callers with error types of their own.
    pub fn check(name: &str) -> Result<(), &'static str> {
        if name.is_empty() {
            return Err("must not be empty");
        }
        if name.len() > Self::MAX {
            return Err("must be at most 15 bytes (IFNAMSIZ)");
        }
        if name == "." || name == ".." {
            return Err("must not be '.' or '..'");
        }
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        {
            return Err("must not contain '/', ':', NUL or whitespace");
        }
        Ok(())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Built from a &str in `new` and never changed: always UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl PartialEq for IfName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for IfName {}

impl std::hash::Hash for IfName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for IfName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IfName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IfName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// One element of a set.
///
/// A batch holds one kind only: addresses for `hash:ip` (a `hash:net` set takes them too,
/// as host networks), networks for `hash:net`, address-protocol-port entries for
/// `hash:ip,port`, network-interface pairs for `hash:net,iface`. An element of the wrong
/// kind is refused by the kernel rather than read as an address range (see
/// [`wire::encode_adt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    /// A host address.
    Ip(IpAddr),
    /// A network. `nomatch` makes it an exception: addresses in it do not match the set,
    /// even when a shorter prefix in the set covers them.
    Net {
        /// The network; host bits are masked off when sent, as the kernel would.
        net: IpNet,
        /// `IPSET_FLAG_NOMATCH`.
        nomatch: bool,
    },
    /// A `hash:ip,port` entry: packets to (or from) `ip` over `protocol` on `port`.
    IpPort {
        /// The host address.
        ip: IpAddr,
        /// The IP protocol number: [`IPPROTO_TCP`], [`IPPROTO_UDP`], [`IPPROTO_SCTP`] or
        /// [`IPPROTO_UDPLITE`]. Others are refused before sending: the kernel keeps no port
        /// for them (it stores 0, or an ICMP type and code), so the entry would not list
        /// back as written.
        protocol: u8,
        /// The port, in host order.
        port: u16,
    },
    /// A `hash:net,iface` entry: `net` seen on interface `iface` (the incoming one when
    /// matched `src,src`). `nomatch` makes it an exception, as for [`Member::Net`]; the
    /// longest prefix among the entries of the same interface decides.
    NetIface {
        /// The network; host bits are masked off when sent.
        net: IpNet,
        /// The interface.
        iface: IfName,
        /// `IPSET_FLAG_NOMATCH`.
        nomatch: bool,
    },
}

/// `IPPROTO_TCP`: 6.
pub const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
/// `IPPROTO_UDP`: 17.
pub const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;
/// `IPPROTO_SCTP`: 132.
pub const IPPROTO_SCTP: u8 = libc::IPPROTO_SCTP as u8;
/// `IPPROTO_UDPLITE`: 136.
pub const IPPROTO_UDPLITE: u8 = libc::IPPROTO_UDPLITE as u8;

/// The protocols whose port the kernel stores in `hash:*,port` sets
/// (`ip_set_proto_with_ports()`, `ip_set_getport.h`).
pub const fn protocol_has_ports(protocol: u8) -> bool {
    matches!(
        protocol,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE
    )
}

/// The name `ipset` prints for a protocol (it asks `getprotobynumber()`, i.e.
/// `/etc/protocols`); `None` for protocols outside this short list.
fn protocol_name(protocol: u8) -> Option<&'static str> {
    Some(match protocol {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_SCTP => "sctp",
        IPPROTO_UDPLITE => "udplite",
        1 => "icmp",
        58 => "ipv6-icmp",
        _ => return None,
    })
}

impl Member {
    /// A network that matches.
    pub fn net(net: IpNet) -> Self {
        Self::Net {
            net,
            nomatch: false,
        }
    }

    /// A `nomatch` network: an exception inside a matching one.
    pub fn nomatch(net: IpNet) -> Self {
        Self::Net { net, nomatch: true }
    }

    /// A `hash:ip,port` entry; see [`Member::IpPort`] for the protocols allowed.
    pub const fn ip_port(ip: IpAddr, protocol: u8, port: u16) -> Self {
        Self::IpPort { ip, protocol, port }
    }

    /// A TCP `hash:ip,port` entry.
    pub const fn tcp(ip: IpAddr, port: u16) -> Self {
        Self::ip_port(ip, IPPROTO_TCP, port)
    }

    /// A UDP `hash:ip,port` entry.
    pub const fn udp(ip: IpAddr, port: u16) -> Self {
        Self::ip_port(ip, IPPROTO_UDP, port)
    }

    /// A `hash:net,iface` entry that matches.
    pub const fn net_iface(net: IpNet, iface: IfName) -> Self {
        Self::NetIface {
            net,
            iface,
            nomatch: false,
        }
    }

    /// An SCTP `hash:ip,port` entry.
    pub const fn sctp(ip: IpAddr, port: u16) -> Self {
        Self::ip_port(ip, IPPROTO_SCTP, port)
    }

    /// The element's family.
    pub fn family(&self) -> Family {
        match self {
            Self::Ip(a) | Self::IpPort { ip: a, .. } => Family::of_addr(a),
            Self::Net { net, .. } | Self::NetIface { net, .. } => Family::of(net),
        }
    }

    /// The set type whose elements look like this one. An address fits a `hash:net` set
    /// too (see [`SetType::accepts`]); this names the type it was made for.
    pub const fn set_type(&self) -> SetType {
        match self {
            Self::Ip(_) => SetType::HashIp,
            Self::Net { .. } => SetType::HashNet,
            Self::IpPort { .. } => SetType::HashIpPort,
            Self::NetIface { .. } => SetType::HashNetIface,
        }
    }
}

impl From<IpAddr> for Member {
    fn from(a: IpAddr) -> Self {
        Self::Ip(a)
    }
}

impl From<IpNet> for Member {
    fn from(net: IpNet) -> Self {
        Self::net(net)
    }
}

/// As `ipset list` prints it (and `ipset add` reads it): `10.0.0.1`, `10.0.0.0/8`,
/// `10.1.0.0/16 nomatch`, a host-length network without its prefix, `10.0.0.1,tcp:80`,
/// `fd00::1,udp:53`, `10.0.0.1,sctp:9` (IPv6 without brackets), and `0.0.0.0/1,veth0`,
/// `10.0.0.5,veth0 nomatch`.
///
/// Entries netfence can't write print close to, but not exactly as, the tool does: an ICMP
/// "port" as `icmp:8/0` where the tool names it (`icmp:echo-request`), and protocols
/// outside a short list by number where the tool asks `/etc/protocols`.
impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Net { net, nomatch } => {
                write_net(f, net)?;
                if *nomatch {
                    f.write_str(" nomatch")?;
                }
                Ok(())
            }
            Self::NetIface {
                net,
                iface,
                nomatch,
            } => {
                write_net(f, net)?;
                write!(f, ",{iface}")?;
                if *nomatch {
                    f.write_str(" nomatch")?;
                }
                Ok(())
            }
            Self::IpPort { ip, protocol, port } => {
                write!(f, "{ip},")?;
                match protocol_name(*protocol) {
                    Some(name) => f.write_str(name)?,
                    None => write!(f, "{protocol}")?,
                }
                if matches!(protocol, 1 | 58) {
                    // ICMP keeps type << 8 | code where the port would be.
                    write!(f, ":{}/{}", port >> 8, port & 0xff)
                } else {
                    write!(f, ":{port}")
                }
            }
        }
    }
}

/// A request [`NetlinkSocket::exchange`] saw answered by `NLMSG_DONE`, which ipset sends
/// only to end a dump: no ACK said whether it was applied.
fn no_ack() -> Error {
    Error::malformed("an ipset request was answered with NLMSG_DONE, not an ACK")
}

/// How errors name an ADD or DEL: "adding to set X", "deleting from set X".
fn adt_verb(adt: Adt) -> &'static str {
    match adt {
        Adt::Add => "adding to",
        Adt::Del => "deleting from",
    }
}

/// What a refused ADD/DEL message means, from its errno and the line number the kernel
/// blamed: an element of `members[range]` failed and those before it were applied
/// ([`Error::IpsetPartial`]), or the message failed whole ([`Error::Kernel`] when nothing
/// of the command was applied before it, `first`; otherwise partial at its first element).
/// A reply that blames a line outside the message, which the kernel never sends, is
/// [`Error::Malformed`].
fn adt_failure(
    adt: Adt,
    set: &str,
    members: &[Member],
    range: std::ops::Range<usize>,
    errno: i32,
    lineno: Option<u32>,
    first: bool,
) -> Error {
    let opname = adt_verb(adt);
    let cmd = adt.cmd();
    let failed = match lineno {
        Some(l) if (range.start as u64 + 1..=range.end as u64).contains(&u64::from(l)) => {
            l as usize - 1
        }
        Some(l) => {
            return Error::malformed(format!(
                "{opname} set {set}: the kernel blamed element line {l}, outside the {}..={} \
                 sent",
                range.start + 1,
                range.end
            ))
        }
        // The message failed as a whole (set gone, protocol error): nothing of it was
        // applied. Before the first message, nothing at all was.
        None if first => {
            return with_ipset_text(
                Error::Kernel {
                    op: format!("{opname} set {set} ({} elements)", members.len()),
                    errno,
                },
                cmd,
            )
        }
        None => range.start,
    };
    Error::IpsetPartial {
        op: opname,
        set: set.to_string(),
        failed,
        element: members[failed].to_string(),
        applied: failed,
        errno,
    }
}

/// A network as `ipset` prints it: truncated, and a host network without its prefix.
fn write_net(f: &mut fmt::Formatter<'_>, net: &IpNet) -> fmt::Result {
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        write!(f, "{}", net.addr())
    } else {
        write!(f, "{net}")
    }
}

/// What to do when the kernel already is as asked: a set of the same name exists
/// (create), an element is already there (add) or already gone (del), a set is already
/// gone (destroy). The `ipset -exist` switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Exist {
    /// Fail: the caller expected a change.
    #[default]
    Fail,
    /// Succeed: the operation is idempotent. A create still fails when the existing set
    /// differs (type, family, hashsize, maxelem).
    Ignore,
}

/// How to create a set. The defaults are the kernel's: hashsize 1024, maxelem 65536, the
/// newest revision both the kernel and ipset 7.17 know, fail if the set exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Initial number of hash buckets; the kernel rounds it up to a power of two, >= 64.
    pub hashsize: Option<u32>,
    /// Most elements the set may hold; adds beyond fail with "Hash is full".
    pub maxelem: Option<u32>,
    /// Set-type revision; `None` asks the kernel (once per type and family per handle).
    pub revision: Option<u8>,
    /// Whether an identical existing set is fine.
    pub exist: Exist,
}

/// A set's header, as `ipset list -t` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetHeader {
    /// The set's name.
    pub name: String,
    /// The kernel's type name, e.g. `hash:ip`.
    pub type_name: String,
    /// The type, when netfence speaks it.
    pub set_type: Option<SetType>,
    /// The family; `None` for family-less types such as `list:set`.
    pub family: Option<Family>,
    /// Type revision.
    pub revision: u8,
    /// Kernel index (listed with protocol 7 only): what the xt `set` match refers to.
    pub index: Option<u16>,
    /// Bucket count, for hash types.
    pub hashsize: Option<u32>,
    /// Capacity, for hash types.
    pub maxelem: Option<u32>,
    /// Bucket size (hash revisions with bucketsize support).
    pub bucketsize: Option<u8>,
    /// Hash seed (hash revisions with initval support).
    pub initval: Option<u32>,
    /// References from the kernel (xt `set` matches, `list:set` sets).
    pub references: u32,
    /// Number of entries.
    pub entries: u32,
    /// Size in memory, bytes.
    pub memsize: u32,
    /// Default member timeout in seconds (`timeout`): members expire.
    pub timeout: Option<u32>,
    /// Netmask (`netmask`): addresses are stored masked to it.
    pub netmask: Option<u8>,
    /// Extension flags (`IPSET_ATTR_CADT_FLAGS` of the header: counters, comment,
    /// forceadd, skbinfo); 0 when the set has none.
    pub cadt_flags: u32,
    /// Create-time attributes the kernel listed that netfence doesn't name (a bitmask, a
    /// markmask, or one a newer kernel adds), by number.
    pub other_options: Vec<u16>,
}

impl SetHeader {
    /// The set's options that change what it holds or how it matches and that netfence
    /// never gives a set (`timeout 3`, `netmask 16`, `forceadd`, ...), in the words of
    /// `ipset create`; empty for a set made with type, family, hashsize and maxelem
    /// alone. netfence reuses an owned set in place only when this is empty: a timeout
    /// lets members expire (an isolated pod would stop being isolated), a netmask
    /// widens every address to its network, forceadd evicts members when the set is
    /// full.
    pub fn extras(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = self.timeout {
            out.push(format!("timeout {t}"));
        }
        if let Some(n) = self.netmask {
            out.push(format!("netmask {n}"));
        }
        let mut flags = self.cadt_flags;
        for (bit, word) in [
            (sys::IPSET_FLAG_WITH_COUNTERS, "counters"),
            (sys::IPSET_FLAG_WITH_COMMENT, "comment"),
            (sys::IPSET_FLAG_WITH_FORCEADD, "forceadd"),
            (sys::IPSET_FLAG_WITH_SKBINFO, "skbinfo"),
        ] {
            if flags & bit != 0 {
                out.push(word.to_string());
                flags &= !bit;
            }
        }
        if flags != 0 {
            out.push(format!("flags {flags:#x}"));
        }
        out.extend(self.other_options.iter().map(|a| format!("attribute {a}")));
        out
    }
}

/// A set with its members, as `ipset list NAME` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetListing {
    /// The header.
    pub header: SetHeader,
    /// The members, in the kernel's (hash) order. Empty for types netfence doesn't speak.
    pub members: Vec<Member>,
    /// Members the kernel listed that [`Member`] can't represent (an interface name
    /// netfence refuses, a wildcard or physdev interface, a port without a protocol):
    /// left out of `members`, counted here, so that one odd element in someone else's
    /// set doesn't make the whole listing fail.
    pub unreadable: usize,
}

/// A handle on the ipset subsystem of one network namespace.
///
/// `!Send`, like its socket: open it on the thread that uses it.
pub struct Ipset {
    sock: NetlinkSocket,
    proto: u8,
    /// Revisions the kernel offered, asked once per (type, family).
    revisions: Vec<((SetType, Family), u8)>,
}

impl fmt::Debug for Ipset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipset")
            .field("netns", self.sock.netns())
            .field("protocol", &self.proto)
            .finish()
    }
}

impl Ipset {
    /// Opens a socket in `netns` and agrees on the protocol.
    ///
    /// # Errors
    /// [`Error::Io`] when the socket can't be opened there; [`Error::Kernel`] when the
    /// kernel has no ipset or speaks no protocol netfence does.
    pub fn open(netns: &Netns) -> Result<Self, Error> {
        Self::with_socket(NetlinkSocket::open(netns)?)
    }

    /// Uses an open socket (it keeps its namespace) and agrees on the protocol: the
    /// kernel answers `IPSET_CMD_PROTOCOL` with its newest and oldest versions, and
    /// netfence speaks 7 if the kernel does, else 6.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn with_socket(mut sock: NetlinkSocket) -> Result<Self, Error> {
        // Ask in protocol 7; a kernel that refused the attribute value itself (none known
        // does: ip_set_protocol() only needs it present) is asked again in 6.
        let (max, min) = match handshake(&mut sock, wire::PROTOCOL) {
            Err(Error::Kernel { errno, .. }) if errno == IPSET_ERR_PROTOCOL => {
                handshake(&mut sock, wire::PROTOCOL_MIN)?
            }
            r => r?,
        };
        let proto = wire::negotiate(max, min)?;
        tracing::debug!(kernel_max = max, kernel_min = ?min, proto, "ipset protocol agreed");
        Ok(Self {
            sock,
            proto,
            revisions: Vec::new(),
        })
    }

    /// The protocol version in use: 7, or 6 on old kernels.
    pub fn protocol(&self) -> u8 {
        self.proto
    }

    /// The namespace this handle works in.
    pub fn netns(&self) -> &Netns {
        self.sock.netns()
    }

    fn req(&mut self) -> Req {
        Req {
            seq: self.sock.next_seq(),
            proto: self.proto,
        }
    }

    /// Sends one request that is answered by an ACK (and possibly replies fed to `f`),
    /// naming `op` and adding ipset's text for `cmd` to kernel errors.
    fn call(
        &mut self,
        cmd: wire::Cmd,
        msg: &[u8],
        seq: u32,
        op: &dyn Fn() -> String,
        f: impl FnMut(Msg<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.sock
            .request(msg, seq, op, f)
            .map_err(|e| with_ipset_text(e, cmd))
    }

    fn revision(&mut self, ty: SetType, family: Family) -> Result<u8, Error> {
        if let Some((_, r)) = self.revisions.iter().find(|(k, _)| *k == (ty, family)) {
            return Ok(*r);
        }
        let req = self.req();
        let msg = wire::encode_type(req, ty, family);
        let mut got = None;
        let op = || {
            format!(
                "asking the kernel's revisions of {ty} family {}",
                family.ipset_name()
            )
        };
        self.call(wire::Cmd::Type, &msg, req.seq, &op, |m| {
            got = Some(wire::decode_type(&m)?);
            Ok(())
        })?;
        let (max, min) = got.ok_or_else(|| Error::malformed("no reply to IPSET_CMD_TYPE"))?;
        let rev = wire::choose_revision(ty, max, min);
        self.revisions.push(((ty, family), rev));
        Ok(rev)
    }

    /// Creates set `name`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or option (nothing is sent); [`Error::Kernel`]
    /// "creating set NAME ...", e.g. when it exists and `opts.exist` is
    /// [`Exist::Fail`], or exists with other parameters.
    pub fn create(
        &mut self,
        name: &str,
        ty: SetType,
        family: Family,
        opts: &CreateOptions,
    ) -> Result<(), Error> {
        wire::validate_name(name)?;
        let revision = match opts.revision {
            Some(r) => r,
            None => self.revision(ty, family)?,
        };
        let req = self.req();
        let params = CreateParams {
            hashsize: opts.hashsize,
            maxelem: opts.maxelem,
        };
        let msg = wire::encode_create(req, name, ty, family, revision, params, opts.exist)?;
        let op = || format!("creating set {name} ({ty} family {family})");
        self.call(wire::Cmd::Create, &msg, req.seq, &op, |_| Ok(()))
    }

    /// Destroys set `name`; with [`Exist::Ignore`] a missing set is fine. A set that a
    /// rule still references can't be destroyed (`EBUSY`-like ipset error, retryable: the
    /// kernel drops references asynchronously after the rule goes).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name; [`Error::Kernel`] "destroying set NAME ...".
    pub fn destroy(&mut self, name: &str, exist: Exist) -> Result<(), Error> {
        let req = self.req();
        let msg = wire::encode_destroy(req, name, exist)?;
        let op = || format!("destroying set {name}");
        self.call(wire::Cmd::Destroy, &msg, req.seq, &op, |_| Ok(()))
    }

    /// Removes every element of set `name`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name; [`Error::Kernel`] "flushing set NAME ...".
    pub fn flush(&mut self, name: &str) -> Result<(), Error> {
        let req = self.req();
        let msg = wire::encode_flush(req, name)?;
        let op = || format!("flushing set {name}");
        self.call(wire::Cmd::Flush, &msg, req.seq, &op, |_| Ok(()))
    }

    /// Renames set `from` to `to`; refused while a rule references `from`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name; [`Error::Kernel`] "renaming set A to B ...".
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), Error> {
        let req = self.req();
        let msg = wire::encode_rename(req, from, to)?;
        let op = || format!("renaming set {from} to {to}");
        self.call(wire::Cmd::Rename, &msg, req.seq, &op, |_| Ok(()))
    }

    /// Swaps sets `a` and `b` (same type and family): their contents trade names, and
    /// rules that referenced `a` now see `b`'s former contents, atomically.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name; [`Error::Kernel`] "swapping sets A and B ...".
    pub fn swap(&mut self, a: &str, b: &str) -> Result<(), Error> {
        let req = self.req();
        let msg = wire::encode_swap(req, a, b)?;
        let op = || format!("swapping sets {a} and {b}");
        self.call(wire::Cmd::Swap, &msg, req.seq, &op, |_| Ok(()))
    }

    /// Adds `members` to set `set`, in order, in as few messages as fit (one per 64 KiB).
    /// With [`Exist::Ignore`] elements already present are skipped silently.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or batch, before anything is sent;
    /// [`Error::IpsetPartial`] when the kernel refused an element: `failed` is its index in
    /// `members`, and exactly the `applied` elements before it were added;
    /// [`Error::Kernel`] when the first message was refused as a whole (e.g. no such set):
    /// nothing was added.
    pub fn add(&mut self, set: &str, members: &[Member], exist: Exist) -> Result<(), Error> {
        self.adt(Adt::Add, set, members, exist)
    }

    /// Deletes `members` from set `set`, as [`Self::add`] adds them. With
    /// [`Exist::Ignore`] elements already absent are skipped silently.
    ///
    /// # Errors
    /// As [`Self::add`], with "deleting from".
    pub fn del(&mut self, set: &str, members: &[Member], exist: Exist) -> Result<(), Error> {
        self.adt(Adt::Del, set, members, exist)
    }

    /// Runs several ADD/DEL commands, on any sets, in one `sendmsg` and then reads every
    /// ACK: one round trip instead of one per command, which is what a pod delta touching
    /// a dozen sets pays for otherwise.
    ///
    /// The kernel goes on with the later messages of a `sendmsg` after one fails, so on
    /// error the commands after the failing one may have been applied too (and those
    /// before it were). Use it only for commands that may apply in any subset, such as the
    /// member changes of one phase of a plan.
    ///
    /// # Errors
    /// [`Error::Invalid`] before anything is sent; otherwise the first failing command's
    /// error, as [`Self::add`] / [`Self::del`] report it, with its index in `ops`.
    pub fn adt_pipelined(
        &mut self,
        ops: &[(Adt, &str, &[Member])],
        exist: Exist,
    ) -> Result<(), (usize, Error)> {
        // Each message with the command it belongs to and the members it carries.
        let mut msgs: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for (i, (adt, set, members)) in ops.iter().enumerate() {
            wire::validate_name(set).map_err(|e| (i, e))?;
            wire::validate_members(set, members).map_err(|e| (i, e))?;
            for range in wire::plan_adt(members) {
                let msg = self.adt_message(*adt, set, members, range.clone(), exist);
                buf.extend_from_slice(&msg.map_err(|e| (i, e))?);
                msgs.push((i, range));
            }
        }
        self.adt_run(ops, &msgs, &mut buf)
    }

    /// Adds or deletes `members` one message at a time, each answered before the next
    /// goes, so that a refused element stops the rest: the kernel would go on with later
    /// messages of one send.
    fn adt(&mut self, adt: Adt, set: &str, members: &[Member], exist: Exist) -> Result<(), Error> {
        wire::validate_name(set)?;
        wire::validate_members(set, members)?;
        for range in wire::plan_adt(members) {
            let mut msg = self.adt_message(adt, set, members, range.clone(), exist)?;
            self.adt_run(&[(adt, set, members)], &[(0, range)], &mut msg)
                .map_err(|(_, e)| e)?;
        }
        Ok(())
    }

    /// Sends the ADD/DEL messages in `buf` in one exchange. Message `k` belongs to command
    /// `msgs[k].0` of `ops` and carries its members `msgs[k].1`. The error is the first
    /// refused message's, with the index of its command.
    ///
    /// The kernel answers only the refused messages and the last of each send
    /// ([`NetlinkSocket::exchange_quiet`]): an ACK per message cost the kernel about a
    /// microsecond each (an skb built and queued) and the engine a receive, 1,700 of them
    /// in a burst of 1,000 deltas at 10,000 pods.
    fn adt_run(
        &mut self,
        ops: &[(Adt, &str, &[Member])],
        msgs: &[(usize, std::ops::Range<usize>)],
        buf: &mut [u8],
    ) -> Result<(), (usize, Error)> {
        let mut outcomes: Vec<Option<(i32, Option<u32>)>> = vec![None; msgs.len()];
        let what = |k: usize| {
            let (adt, set, _) = ops[msgs[k].0];
            format!("waiting for the ACK of {} set {set}", adt_verb(adt))
        };
        self.sock
            .exchange_quiet(buf, Answers::default(), &what, |k, m| {
                match m.ty {
                    nl::NLMSG_ERROR => outcomes[k] = Some(wire::decode_adt_error(m)?),
                    nl::NLMSG_DONE => return Err(no_ack()),
                    _ => {}
                }
                Ok(false)
            })
            .map_err(|(k, e)| (msgs[k].0, e))?;
        // A message without an answer succeeded.
        for ((i, range), outcome) in msgs.iter().zip(outcomes) {
            let Some((errno, lineno)) = outcome else {
                continue;
            };
            if errno == 0 {
                continue;
            }
            let (adt, set, members) = ops[*i];
            let first = range.start == 0;
            let err = adt_failure(adt, set, members, range.clone(), errno, lineno, first);
            return Err((*i, err));
        }
        Ok(())
    }

    /// The ADD/DEL message for `members[range]`. Its line numbers are 1-based indexes
    /// into `members`, so that the kernel's report of a failing element names it there
    /// (0 would turn the report off).
    fn adt_message(
        &mut self,
        adt: Adt,
        set: &str,
        members: &[Member],
        range: std::ops::Range<usize>,
        exist: Exist,
    ) -> Result<Vec<u8>, Error> {
        let req = self.req();
        let first_line = range.start as u32 + 1;
        wire::encode_adt(req, adt, set, &members[range], first_line, exist)
    }

    /// Whether `member` is in set `set`. For a `hash:net` set an address matches when a
    /// network of the set covers it and no `nomatch` one does; a `nomatch` network tests
    /// for that exception itself. A `hash:ip,port` entry matches only with the same
    /// protocol and port.
    ///
    /// A member of the wrong kind is not always an error: the kernel refuses attributes
    /// the set type doesn't know (a network or a port entry sent to a set of another
    /// type), but once they parse it answers any element error of a TEST with "not in
    /// set" (`ip_set_utest()`, `ip_set_core.c`), so a bare address tested against a
    /// `hash:ip,port` set is `Ok(false)`. Check the kind with [`SetType::accepts`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or element; [`Error::Kernel`] "testing ...".
    pub fn test(&mut self, set: &str, member: &Member) -> Result<bool, Error> {
        let req = self.req();
        let msg = wire::encode_test(req, set, member)?;
        let op = || format!("testing element {member} in set {set}");
        match self.call(wire::Cmd::Test, &msg, req.seq, &op, |_| Ok(())) {
            Ok(()) => Ok(true),
            // ip_set_utest() answers "not in set" with IPSET_ERR_EXIST.
            Err(Error::Kernel { errno, .. }) if errno == IPSET_ERR_EXIST => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn dump(&mut self, name: Option<&str>, what: ListWhat) -> Result<Vec<ListChunk>, Error> {
        let req = self.req();
        let msg = wire::encode_list(req, name, what)?;
        let mut chunks = Vec::new();
        let op = || match name {
            Some(n) => format!("listing set {n}"),
            None => "listing sets".to_string(),
        };
        self.call(wire::Cmd::List, &msg, req.seq, &op, |m| {
            chunks.push(wire::decode_list(&m)?);
            Ok(())
        })?;
        Ok(chunks)
    }

    /// The names of all sets, in kernel index order.
    ///
    /// # Errors
    /// [`Error::Kernel`] "listing sets ..."; [`Error::Malformed`].
    pub fn list_names(&mut self) -> Result<Vec<String>, Error> {
        let mut names: Vec<String> = Vec::new();
        for c in self.dump(None, ListWhat::Names)? {
            if names.last() != Some(&c.name) {
                names.push(c.name);
            }
        }
        Ok(names)
    }

    /// Set `name`'s header, without its members.
    ///
    /// # Errors
    /// [`Error::Kernel`] "listing set NAME: The set with the given name does not exist".
    pub fn header(&mut self, name: &str) -> Result<SetHeader, Error> {
        let chunks = self.dump(Some(name), ListWhat::Headers)?;
        chunks
            .into_iter()
            .find_map(|c| c.header)
            .ok_or_else(|| Error::malformed(format!("listing set {name}: no header in the dump")))
    }

    /// Every set's header without its members (`ipset list -t`), in kernel index order:
    /// the cheap way to read all set sizes at once.
    ///
    /// # Errors
    /// [`Error::Kernel`] "listing sets ..."; [`Error::Malformed`].
    pub fn headers(&mut self) -> Result<Vec<SetHeader>, Error> {
        Ok(self
            .dump(None, ListWhat::Headers)?
            .into_iter()
            .filter_map(|c| c.header)
            .collect())
    }

    /// Set `name` with its members.
    ///
    /// # Errors
    /// As [`Self::header`].
    pub fn list(&mut self, name: &str) -> Result<SetListing, Error> {
        let chunks = self.dump(Some(name), ListWhat::Everything)?;
        assemble(chunks)
            .into_iter()
            .next()
            .ok_or_else(|| Error::malformed(format!("listing set {name}: no header in the dump")))
    }

    /// Every set with its members, in kernel index order.
    ///
    /// # Errors
    /// [`Error::Kernel`] "listing sets ..."; [`Error::Malformed`].
    pub fn list_all(&mut self) -> Result<Vec<SetListing>, Error> {
        let chunks = self.dump(None, ListWhat::Everything)?;
        Ok(assemble(chunks))
    }

    /// The kernel index of set `name` (`IPSET_CMD_GET_BYNAME`): what an xt `set` match
    /// (`-m set --match-set`) stores. Needs protocol 7.
    ///
    /// # Errors
    /// [`Error::Kernel`] "getting the index of set NAME: The set with the given name does
    /// not exist", or `EPROTONOSUPPORT` under protocol 6.
    pub fn index_of(&mut self, name: &str) -> Result<u16, Error> {
        // One mechanism for GET_BYNAME, so one and many answer and fail alike.
        Ok(self.indexes_of(&[name])?[0])
    }

    /// The kernel indexes of `names` (`IPSET_CMD_GET_BYNAME`), in their order, with every
    /// request in one `sendmsg` and the replies read after: one round trip instead of one
    /// per set. An nf_tables batch that writes the rules of a burst needs
    /// the index of every set those rules name, hundreds at 1,000 policies.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name, before anything is sent; otherwise the error of
    /// the first name (in `names` order) the kernel refused, as [`Self::index_of`] reports it.
    pub fn indexes_of(&mut self, names: &[&str]) -> Result<Vec<u16>, Error> {
        let Some(first) = names.first() else {
            return Ok(Vec::new());
        };
        self.need_protocol_7(|| format!("getting the index of set {first}"))?;
        let mut buf = Vec::with_capacity(names.len() * 40);
        for name in names {
            let req = self.req();
            buf.extend_from_slice(&wire::encode_get_byname(req, name)?);
        }
        let mut outcomes: Vec<Option<Result<u16, i32>>> = vec![None; names.len()];
        let mut replies: Vec<Option<u16>> = vec![None; names.len()];
        // Each answer is a reply and an ACK.
        let answers = Answers {
            messages: 2,
            bytes: 64,
        };
        let what = |k: usize| format!("getting the index of set {}", names[k]);
        self.sock
            .exchange(&buf, answers, &what, |k, m| {
                if m.ty != nl::NLMSG_ERROR {
                    replies[k] = Some(wire::decode_get_byname(m)?.0);
                    return Ok(false);
                }
                outcomes[k] = Some(match (m.error()?.0, replies[k]) {
                    (0, Some(i)) => Ok(i),
                    (0, None) => return Err(Error::malformed("no reply to IPSET_CMD_GET_BYNAME")),
                    (e, _) => Err(e),
                });
                Ok(false)
            })
            .map_err(|(_, e)| e)?;
        names
            .iter()
            .zip(outcomes)
            .map(|(name, o)| match o.ok_or_else(no_ack)? {
                Ok(i) => Ok(i),
                Err(errno) => Err(with_ipset_text(
                    Error::Kernel {
                        op: format!("getting the index of set {name}"),
                        errno,
                    },
                    wire::Cmd::GetByName,
                )),
            })
            .collect()
    }

    /// The name of the set at kernel index `index` (`IPSET_CMD_GET_BYINDEX`), to decode a
    /// dumped `-m set` rule. Needs protocol 7.
    ///
    /// # Errors
    /// [`Error::Kernel`] with `ENOENT` when no set has that index, or `EPROTONOSUPPORT`
    /// under protocol 6.
    pub fn name_of(&mut self, index: u16) -> Result<String, Error> {
        self.need_protocol_7(|| format!("getting the name of set index {index}"))?;
        let req = self.req();
        let msg = wire::encode_get_byindex(req, index);
        let mut name = None;
        let op = || format!("getting the name of set index {index}");
        self.call(wire::Cmd::GetByIndex, &msg, req.seq, &op, |m| {
            name = Some(wire::decode_get_byindex(&m)?);
            Ok(())
        })?;
        name.ok_or_else(|| Error::malformed("no reply to IPSET_CMD_GET_BYINDEX"))
    }

    fn need_protocol_7(&self, op: impl Fn() -> String) -> Result<(), Error> {
        if self.proto < 7 {
            return Err(Error::Kernel {
                op: format!(
                    "{}: the kernel speaks ipset protocol {}, this needs 7",
                    op(),
                    self.proto
                ),
                errno: libc::EPROTONOSUPPORT,
            });
        }
        Ok(())
    }
}

/// One `IPSET_CMD_PROTOCOL` exchange: the kernel's (newest, oldest) protocol.
fn handshake(sock: &mut NetlinkSocket, proto: u8) -> Result<(u8, Option<u8>), Error> {
    let seq = sock.next_seq();
    let msg = wire::encode_protocol(Req { seq, proto });
    let mut range = None;
    let ns = sock.netns().clone();
    let op = || format!("asking the ipset protocol version in {ns}");
    sock.request(&msg, seq, &op, |m| {
        range = Some(wire::decode_protocol(&m)?);
        Ok(())
    })?;
    range.ok_or_else(|| Error::malformed("no reply to IPSET_CMD_PROTOCOL"))
}

/// Merges dump chunks into sets: a big set spans several messages, the first with the
/// header.
fn assemble(chunks: Vec<ListChunk>) -> Vec<SetListing> {
    let mut out: Vec<SetListing> = Vec::new();
    for c in chunks {
        match c.header {
            Some(header) => {
                let mut members = c.members;
                let mut unreadable = c.unreadable;
                if header.set_type.is_none() {
                    members.clear();
                    unreadable = 0;
                } else {
                    members.reserve(header.entries as usize);
                }
                out.push(SetListing {
                    header,
                    members,
                    unreadable,
                });
            }
            None => {
                if let Some(last) = out.last_mut().filter(|l| l.header.name == c.name) {
                    if last.header.set_type.is_some() {
                        last.members.extend(c.members);
                        last.unreadable += c.unreadable;
                    }
                }
            }
        }
    }
    out
}

/// Appends ipset's own text for errnos below 4096 that it words per command (ENOENT:
/// "The set with the given name does not exist"), since `Errno` would print only the
/// generic C text for them.
fn with_ipset_text(e: Error, cmd: wire::Cmd) -> Error {
    match e {
        Error::Kernel { op, errno } if errno < IPSET_ERR_PRIVATE => {
            match ipset_errno_text_for(cmd, errno) {
                Some(text) => Error::Kernel {
                    op: format!("{op}: {text}"),
                    errno,
                },
                None => Error::Kernel { op, errno },
            }
        }
        e => e,
    }
}

// ipset's private errnos (`enum ipset_errno`, `ip_set.h`).
const IPSET_ERR_PRIVATE: i32 = sys::IPSET_ERR_PRIVATE as i32;
const IPSET_ERR_PROTOCOL: i32 = sys::IPSET_ERR_PROTOCOL as i32;
const IPSET_ERR_FIND_TYPE: i32 = sys::IPSET_ERR_FIND_TYPE as i32;
const IPSET_ERR_MAX_SETS: i32 = sys::IPSET_ERR_MAX_SETS as i32;
/// `IPSET_ERR_BUSY`: a destroy refused because a rule still references the set; the kernel
/// drops references asynchronously after the rule goes, so retrying later succeeds.
pub const IPSET_ERR_BUSY: i32 = sys::IPSET_ERR_BUSY as i32;
const IPSET_ERR_EXIST_SETNAME2: i32 = sys::IPSET_ERR_EXIST_SETNAME2 as i32;
const IPSET_ERR_TYPE_MISMATCH: i32 = sys::IPSET_ERR_TYPE_MISMATCH as i32;
/// `IPSET_ERR_EXIST`: "already added" on add, "not added" on del, "not in set" on test.
pub const IPSET_ERR_EXIST: i32 = sys::IPSET_ERR_EXIST as i32;
const IPSET_ERR_INVALID_CIDR: i32 = sys::IPSET_ERR_INVALID_CIDR as i32;
const IPSET_ERR_INVALID_NETMASK: i32 = sys::IPSET_ERR_INVALID_NETMASK as i32;
const IPSET_ERR_INVALID_FAMILY: i32 = sys::IPSET_ERR_INVALID_FAMILY as i32;
const IPSET_ERR_TIMEOUT: i32 = sys::IPSET_ERR_TIMEOUT as i32;
const IPSET_ERR_REFERENCED: i32 = sys::IPSET_ERR_REFERENCED as i32;
const IPSET_ERR_IPADDR_IPV4: i32 = sys::IPSET_ERR_IPADDR_IPV4 as i32;
const IPSET_ERR_IPADDR_IPV6: i32 = sys::IPSET_ERR_IPADDR_IPV6 as i32;
const IPSET_ERR_COUNTER: i32 = sys::IPSET_ERR_COUNTER as i32;
const IPSET_ERR_COMMENT: i32 = sys::IPSET_ERR_COMMENT as i32;
const IPSET_ERR_INVALID_MARKMASK: i32 = sys::IPSET_ERR_INVALID_MARKMASK as i32;
const IPSET_ERR_SKBINFO: i32 = sys::IPSET_ERR_SKBINFO as i32;
const IPSET_ERR_TYPE_SPECIFIC: i32 = sys::IPSET_ERR_TYPE_SPECIFIC as i32;
// Hash-type errnos (`linux/netfilter/ipset/ip_set_hash.h`, not vendored: only hash types
// are created by netfence, so type-specific codes are read as these).
/// `IPSET_ERR_HASH_FULL`: the set holds `maxelem` elements.
pub const IPSET_ERR_HASH_FULL: i32 = IPSET_ERR_TYPE_SPECIFIC;
const IPSET_ERR_HASH_ELEM: i32 = IPSET_ERR_TYPE_SPECIFIC + 1;
const IPSET_ERR_INVALID_PROTO: i32 = IPSET_ERR_TYPE_SPECIFIC + 2;
const IPSET_ERR_MISSING_PROTO: i32 = IPSET_ERR_TYPE_SPECIFIC + 3;
const IPSET_ERR_HASH_RANGE_UNSUPPORTED: i32 = IPSET_ERR_TYPE_SPECIFIC + 4;
const IPSET_ERR_HASH_RANGE: i32 = IPSET_ERR_TYPE_SPECIFIC + 5;

/// ipset's private error codes (`IPSET_ERR_*`, 4096 and up) as the `ipset` tool words
/// them (its `lib/errcode.c`); `None` below 4096, where the errno's own name applies.
///
/// Codes above 4352 are type-specific; they are read as the `hash:*` codes, the only types
/// netfence creates. Where the tool words a code per command and the command isn't known
/// here, both wordings are given; [`ipset_errno_text_for`] picks one.
pub fn ipset_errno_text(errno: i32) -> Option<&'static str> {
    Some(match errno {
        IPSET_ERR_PROTOCOL => "Kernel error received: ipset protocol error",
        IPSET_ERR_FIND_TYPE => "Kernel error received: set type not supported",
        IPSET_ERR_MAX_SETS => {
            "Kernel error received: maximal number of sets reached, cannot create more."
        }
        IPSET_ERR_BUSY => "Set cannot be destroyed: it is in use by a kernel component",
        IPSET_ERR_EXIST_SETNAME2 => {
            "Set cannot be renamed: a set with the new name already exists; or sets cannot \
             be swapped: the second set does not exist"
        }
        IPSET_ERR_TYPE_MISMATCH => "The sets cannot be swapped: their type does not match",
        IPSET_ERR_EXIST => {
            "Element cannot be added to the set: it's already added; or cannot be deleted \
             from the set: it's not added"
        }
        IPSET_ERR_INVALID_CIDR => "The value of the CIDR parameter of the IP address is invalid",
        IPSET_ERR_INVALID_NETMASK => "The value of the netmask parameter is invalid",
        IPSET_ERR_INVALID_FAMILY => "Protocol family not supported by the set type",
        IPSET_ERR_TIMEOUT => "Timeout cannot be used: set was created without timeout support",
        IPSET_ERR_REFERENCED => "Set cannot be renamed: it is in use by another system",
        IPSET_ERR_IPADDR_IPV4 => "An IPv4 address is expected, but not received",
        IPSET_ERR_IPADDR_IPV6 => "An IPv6 address is expected, but not received",
        IPSET_ERR_COUNTER => {
            "Packet/byte counters cannot be used: set was created without counter support"
        }
        IPSET_ERR_COMMENT => "Comment string is too long!",
        IPSET_ERR_INVALID_MARKMASK => "The value of the markmask parameter is invalid",
        IPSET_ERR_SKBINFO => {
            "Skbinfo mapping cannot be used: set was created without skbinfo support"
        }
        IPSET_ERR_HASH_FULL => "Hash is full, cannot add more elements",
        IPSET_ERR_HASH_ELEM => "Null-valued element, cannot be stored in a hash type of set",
        IPSET_ERR_INVALID_PROTO => "Invalid protocol specified",
        IPSET_ERR_MISSING_PROTO => "Protocol missing, but must be specified",
        IPSET_ERR_HASH_RANGE_UNSUPPORTED => {
            "Range is not supported in the \"net\" component of the element"
        }
        IPSET_ERR_HASH_RANGE => "Invalid range, covers the whole address space",
        _ => return None,
    })
}

/// ipset's text for `errno` answering command `cmd`, exactly as the `ipset` tool prints
/// it, including the few errnos below 4096 it words itself (`ENOENT`: "The set with the
/// given name does not exist").
pub fn ipset_errno_text_for(cmd: wire::Cmd, errno: i32) -> Option<&'static str> {
    use wire::Cmd;
    Some(match (cmd, errno) {
        (Cmd::Create, libc::EEXIST) => {
            "Set cannot be created: set with the same name already exists"
        }
        (Cmd::Type, libc::EEXIST) => "Kernel error received: set type does not supported",
        (_, libc::ENOENT) => "The set with the given name does not exist",
        (_, libc::EMSGSIZE) => "Kernel error received: message could not be created",
        (Cmd::Rename, IPSET_ERR_EXIST_SETNAME2) => {
            "Set cannot be renamed: a set with the new name already exists"
        }
        (Cmd::Swap, IPSET_ERR_EXIST_SETNAME2) => {
            "Sets cannot be swapped: the second set does not exist"
        }
        (Cmd::Add, IPSET_ERR_EXIST) => "Element cannot be added to the set: it's already added",
        (Cmd::Del, IPSET_ERR_EXIST) => "Element cannot be deleted from the set: it's not added",
        (Cmd::Test, IPSET_ERR_EXIST) => "The element is NOT in the set",
        _ => return ipset_errno_text(errno),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_display_is_ipsets() {
        let m = |s: &str, nomatch| Member::Net {
            net: s.parse().unwrap(),
            nomatch,
        };
        assert_eq!(
            Member::Ip("10.0.0.1".parse().unwrap()).to_string(),
            "10.0.0.1"
        );
        assert_eq!(m("10.0.0.1/32", false).to_string(), "10.0.0.1");
        assert_eq!(m("10.1.2.3/16", true).to_string(), "10.1.0.0/16 nomatch");
        assert_eq!(m("2001:db8:0:1::/128", false).to_string(), "2001:db8:0:1::");
        assert_eq!(
            m("2001:db8:0:2:0:1::/96", false).to_string(),
            "2001:db8:0:2:0:1::/96"
        );
    }

    #[test]
    fn ip_port_display_is_ipsets() {
        let m = |ip: &str, protocol, port| Member::IpPort {
            ip: ip.parse().unwrap(),
            protocol,
            port,
        };
        assert_eq!(m("10.0.0.1", 6, 80).to_string(), "10.0.0.1,tcp:80");
        assert_eq!(m("fd00::1", 17, 53).to_string(), "fd00::1,udp:53");
        assert_eq!(m("10.0.0.1", 132, 9).to_string(), "10.0.0.1,sctp:9");
        assert_eq!(m("10.0.0.6", 136, 7).to_string(), "10.0.0.6,udplite:7");
        assert_eq!(m("10.0.0.5", 6, 0).to_string(), "10.0.0.5,tcp:0");
        // Not written by netfence, shown close to the tool's text.
        assert_eq!(m("10.0.0.4", 1, 0x0800).to_string(), "10.0.0.4,icmp:8/0");
        assert_eq!(m("10.0.0.4", 47, 0).to_string(), "10.0.0.4,47:0");
    }

    #[test]
    fn set_types_and_members_agree() {
        for ty in [
            SetType::HashIp,
            SetType::HashNet,
            SetType::HashIpPort,
            SetType::HashNetIface,
        ] {
            assert_eq!(SetType::from_name(ty.name()), Some(ty));
        }
        assert_eq!(SetType::HashIpPort.to_string(), "hash:ip,port");
        assert_eq!(SetType::from_name("hash:net,port"), None);
        assert_eq!(SetType::HashIpPort.known_revision(), 7);
        assert_eq!(SetType::HashIpPort.dimension(), 2);
        assert_eq!(SetType::HashNet.dimension(), 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let p = Member::tcp(a, 80);
        assert_eq!(p.family(), Family::Ipv4);
        assert_eq!(
            Member::udp("fd00::1".parse().unwrap(), 53).family(),
            Family::Ipv6
        );
        assert_eq!(p.set_type(), SetType::HashIpPort);
        assert!(SetType::HashIpPort.accepts(&p));
        assert!(!SetType::HashIpPort.accepts(&Member::Ip(a)));
        assert!(!SetType::HashIpPort.accepts(&Member::net("10.0.0.0/8".parse().unwrap())));
        assert!(!SetType::HashIp.accepts(&p));
        assert!(!SetType::HashNet.accepts(&p));
        assert!(protocol_has_ports(IPPROTO_SCTP) && !protocol_has_ports(1));
    }

    #[test]
    fn errno_texts() {
        assert_eq!(ipset_errno_text(libc::ENOENT), None);
        assert!(ipset_errno_text(IPSET_ERR_EXIST)
            .unwrap()
            .contains("it's already added"));
        assert_eq!(
            ipset_errno_text(4352),
            Some("Hash is full, cannot add more elements")
        );
        assert_eq!(
            ipset_errno_text_for(wire::Cmd::Del, IPSET_ERR_EXIST),
            Some("Element cannot be deleted from the set: it's not added")
        );
        assert_eq!(
            ipset_errno_text_for(wire::Cmd::Flush, libc::ENOENT),
            Some("The set with the given name does not exist")
        );
        let e = Error::IpsetPartial {
            op: "adding to",
            set: "nf-x".into(),
            failed: 3,
            element: "10.0.0.4".into(),
            applied: 3,
            errno: IPSET_ERR_HASH_FULL,
        };
        assert_eq!(
            e.to_string(),
            "adding to set nf-x: element #3 (10.0.0.4) failed: Hash is full, cannot add more \
             elements (ipset error 4352); 3 element(s) before it were applied"
        );
        let k = with_ipset_text(
            Error::Kernel {
                op: "flushing set nf-x".into(),
                errno: libc::ENOENT,
            },
            wire::Cmd::Flush,
        );
        assert_eq!(
            k.to_string(),
            "flushing set nf-x: The set with the given name does not exist: ENOENT (No such \
             file or directory)"
        );
    }

    #[test]
    fn assemble_merges_split_sets() {
        let h = |name: &str| SetHeader {
            name: name.into(),
            type_name: "hash:ip".into(),
            set_type: Some(SetType::HashIp),
            ..SetHeader::default()
        };
        let ip = |s: &str| Member::Ip(s.parse().unwrap());
        let chunks = vec![
            ListChunk {
                name: "a".into(),
                header: Some(h("a")),
                members: vec![ip("10.0.0.1")],
                unreadable: 0,
            },
            ListChunk {
                name: "a".into(),
                header: None,
                members: vec![ip("10.0.0.2")],
                unreadable: 1,
            },
            ListChunk {
                name: "b".into(),
                header: Some(h("b")),
                members: vec![],
                unreadable: 0,
            },
        ];
        let sets = assemble(chunks);
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].members, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!((sets[0].unreadable, sets[1].unreadable), (1, 0));
        assert!(sets[1].members.is_empty());
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for good in ["eth0", "cali0123456789a", "veth-pod.1", "x"] {
            assert_eq!(IfName::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            ".",
            "..",
            "cali0123456789ab",
            "a/b",
            "a:b",
            "a b",
            "a\0",
        ] {
            let e = IfName::new(bad).unwrap_err().to_string();
            assert!(e.contains("interface name"), "{bad:?}: {e}");
        }
        let (a, b) = (IfName::new("eth1").unwrap(), IfName::new("eth10").unwrap());
        assert!(a < b && a != b && a == "eth1".parse().unwrap());
        let m = Member::NetIface {
            net: "10.0.0.5/32".parse().unwrap(),
            iface: a,
            nomatch: true,
        };
        assert_eq!(m.to_string(), "10.0.0.5,eth1 nomatch");
        assert_eq!(
            Member::net_iface("10.1.2.3/1".parse().unwrap(), b).to_string(),
            "0.0.0.0/1,eth10"
        );
        assert_eq!(m.set_type(), SetType::HashNetIface);
        assert!(SetType::HashNetIface.accepts(&m));
        assert!(!SetType::HashNet.accepts(&m));
        assert_eq!(SetType::HashNetIface.dimension(), 2);
    }
}
