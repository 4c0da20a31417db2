//! The iptables-nft rule vocabulary: what netfence writes, and what it can read back.
//!
//! A [`Rule`] is one `iptables` rule: the header matches (`-i -o -p -s -d`), then
//! extension matches in order (`-m ...`), then a target (`-j` / `-g`). Every rule written
//! carries a `counter`, as iptables-nft's do. [`Rule::to_iptables`] renders the
//! `iptables-save` arguments, which is what `iptables-nft-save` prints for the bytecode
//! the encoder emits.

use std::fmt::{self, Write as _};

use ipnet::IpNet;

pub use crate::family::Family;

/// A match that `!` can invert.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neg<T> {
    /// True for `! ...`.
    pub negate: bool,
    /// What is matched.
    pub value: T,
}

impl<T> Neg<T> {
    /// A positive match.
    pub fn is(value: T) -> Self {
        Self {
            negate: false,
            value,
        }
    }

    /// An inverted match.
    pub fn not(value: T) -> Self {
        Self {
            negate: true,
            value,
        }
    }
}

/// An interface match, `-i eth0` or `-i veth+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Iface {
    /// The exact name.
    Exact(String),
    /// Every name starting with this (written with a trailing `+`).
    Prefix(String),
}

impl Iface {
    /// Parses the iptables form: a trailing `+` makes a prefix.
    pub fn parse(s: &str) -> Self {
        match s.strip_suffix('+') {
            Some(p) => Self::Prefix(p.to_owned()),
            None => Self::Exact(s.to_owned()),
        }
    }
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Prefix(p) => write!(f, "{p}+"),
        }
    }
}

/// `-p`: a layer-4 protocol (`IPPROTO_*` numbers, `netinet/in.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// 6.
    Tcp,
    /// 17.
    Udp,
    /// 132.
    Sctp,
    /// 1.
    Icmp,
    /// 58.
    Icmpv6,
    /// Any other protocol number.
    Other(u8),
}

impl Protocol {
    /// The protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
            Self::Icmp => 1,
            Self::Icmpv6 => 58,
            Self::Other(n) => n,
        }
    }

    /// The protocol with number `n`.
    pub const fn from_number(n: u8) -> Self {
        match n {
            6 => Self::Tcp,
            17 => Self::Udp,
            132 => Self::Sctp,
            1 => Self::Icmp,
            58 => Self::Icmpv6,
            n => Self::Other(n),
        }
    }

    /// Whether `--sport/--dport` and multiport apply.
    pub const fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp)
    }

    /// The name `iptables-save` prints: it looks numbers up with `getprotobynumber`, so
    /// this mirrors Debian's `/etc/protocols` (package netbase); the number otherwise.
    pub fn save_name(self) -> String {
        const NAMES: &[(u8, &str)] = &[
            (1, "icmp"),
            (2, "igmp"),
            (3, "ggp"),
            (4, "ipencap"),
            (5, "st"),
            (6, "tcp"),
            (8, "egp"),
            (9, "igp"),
            (12, "pup"),
            (17, "udp"),
            (20, "hmp"),
            (22, "xns-idp"),
            (27, "rdp"),
            (29, "iso-tp4"),
            (33, "dccp"),
            (36, "xtp"),
            (37, "ddp"),
            (38, "idpr-cmtp"),
            (41, "ipv6"),
            (43, "ipv6-route"),
            (44, "ipv6-frag"),
            (45, "idrp"),
            (46, "rsvp"),
            (47, "gre"),
            (50, "esp"),
            (51, "ah"),
            (57, "skip"),
            (58, "ipv6-icmp"),
            (59, "ipv6-nonxt"),
            (60, "ipv6-opts"),
            (73, "rspf"),
            (81, "vmtp"),
            (88, "eigrp"),
            (89, "ospf"),
            (93, "ax.25"),
            (94, "ipip"),
            (97, "etherip"),
            (98, "encap"),
            (103, "pim"),
            (108, "ipcomp"),
            (112, "vrrp"),
            (115, "l2tp"),
            (124, "isis"),
            (132, "sctp"),
            (133, "fc"),
            (135, "mobility-header"),
            (136, "udplite"),
            (137, "mpls-in-ip"),
            (138, "manet"),
            (139, "hip"),
            (140, "shim6"),
            (141, "wesp"),
            (142, "rohc"),
            (143, "ethernet"),
        ];
        let n = self.number();
        match NAMES.binary_search_by_key(&n, |(k, _)| *k) {
            Ok(i) => NAMES[i].1.to_owned(),
            Err(_) => n.to_string(),
        }
    }
}

/// A port or an inclusive range `first:last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port, `>= first`.
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub const fn single(p: u16) -> Self {
        Self { first: p, last: p }
    }

    /// An inclusive range.
    pub const fn range(first: u16, last: u16) -> Self {
        Self { first, last }
    }

    /// Whether it is one port.
    pub const fn is_single(&self) -> bool {
        self.first == self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// Which packet field a multiport match reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortDir {
    /// `--sports`.
    Source,
    /// `--dports`.
    Destination,
}

/// One direction of an `-m set` lookup (`src` or `dst`), per dimension of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetDir {
    /// `src`.
    Src,
    /// `dst`.
    Dst,
}

/// Conntrack states for `--ctstate` (bits of `xt_conntrack.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CtState(pub u16);

impl CtState {
    /// `INVALID`.
    pub const INVALID: Self = Self(1);
    /// `ESTABLISHED`: `XT_CONNTRACK_STATE_BIT(IP_CT_ESTABLISHED)`.
    pub const ESTABLISHED: Self = Self(1 << 1);
    /// `RELATED`.
    pub const RELATED: Self = Self(1 << 2);
    /// `NEW`.
    pub const NEW: Self = Self(1 << 3);
    /// `SNAT`.
    pub const SNAT: Self = Self(1 << 6);
    /// `DNAT`.
    pub const DNAT: Self = Self(1 << 7);
    /// `UNTRACKED`.
    pub const UNTRACKED: Self = Self(1 << 8);

    /// The union of two state sets.
    pub const fn or(self, o: Self) -> Self {
        Self(self.0 | o.0)
    }

    /// Names in the order libxt_conntrack prints them.
    const NAMES: [(Self, &'static str); 7] = [
        (Self::INVALID, "INVALID"),
        (Self::NEW, "NEW"),
        (Self::RELATED, "RELATED"),
        (Self::ESTABLISHED, "ESTABLISHED"),
        (Self::UNTRACKED, "UNTRACKED"),
        (Self::SNAT, "SNAT"),
        (Self::DNAT, "DNAT"),
    ];
}

impl fmt::Display for CtState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.0 & bit.0 != 0 {
                if !first {
                    f.write_char(',')?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// An extension match, `-m ...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Match {
    /// `-m tcp|udp|sctp --sport/--dport`: the protocol comes from the rule's `-p`.
    Ports {
        /// `--sport`.
        sport: Option<Neg<PortRange>>,
        /// `--dport`.
        dport: Option<Neg<PortRange>>,
    },
    /// `-m multiport --sports|--dports` (revision 1; at most 15 slots, a range takes 2).
    Multiport {
        /// Which port.
        dir: PortDir,
        /// `!`.
        negate: bool,
        /// Ports and ranges.
        ports: Vec<PortRange>,
    },
    /// `-m set [!] --match-set NAME src|dst[,...]` (revision 4).
    Set {
        /// `!`.
        negate: bool,
        /// The ipset's name; the encoder resolves its kernel index.
        name: String,
        /// One direction per set dimension.
        dirs: Vec<SetDir>,
    },
    /// `-m conntrack [!] --ctstate ...` (revision 3).
    Conntrack {
        /// `!`.
        negate: bool,
        /// The states.
        states: CtState,
    },
    /// `-m mark [!] --mark value/mask` (native `meta mark` in iptables-nft).
    Mark {
        /// `!`.
        negate: bool,
        /// Value.
        value: u32,
        /// Mask.
        mask: u32,
    },
    /// `-m comment --comment TEXT` (at most 255 bytes).
    Comment(String),
}

/// `--reject-with` (`ipt_REJECT.h`, `ip6t_REJECT.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RejectWith {
    /// `icmp-port-unreachable` / `icmp6-port-unreachable` (the default).
    #[default]
    PortUnreachable,
    /// `icmp-host-prohibited` / `icmp6-adm-prohibited`.
    AdminProhibited,
    /// `icmp-net-unreachable` / `icmp6-no-route`.
    NetUnreachable,
    /// `icmp-host-unreachable` / `icmp6-addr-unreachable`.
    HostUnreachable,
    /// `tcp-reset`.
    TcpReset,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j RETURN`.
    Return,
    /// `-j REJECT --reject-with ...`.
    Reject(RejectWith),
    /// `-j CHAIN`.
    Jump(String),
    /// `-g CHAIN`.
    Goto(String),
    /// `-j MARK --set-xmark value/mask`: zero the mask bits, then xor the value.
    SetXMark {
        /// Value.
        value: u32,
        /// Mask.
        mask: u32,
    },
    /// `-j LOG [--log-prefix P] [--log-level L]`.
    Log {
        /// At most 29 bytes.
        prefix: Option<String>,
        /// syslog level, 0..=7 (default 4).
        level: u8,
    },
    /// `-j NFLOG [--nflog-group G] [--nflog-prefix P]`.
    Nflog {
        /// The nfnetlink_log group.
        group: u16,
        /// At most 63 bytes.
        prefix: Option<String>,
    },
}

/// One rule: header matches, extension matches in order, a target, and a counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    /// `-i`.
    pub in_iface: Option<Neg<Iface>>,
    /// `-o`.
    pub out_iface: Option<Neg<Iface>>,
    /// `-p`.
    pub protocol: Option<Neg<Protocol>>,
    /// `-s`.
    pub src: Option<Neg<IpNet>>,
    /// `-d`.
    pub dst: Option<Neg<IpNet>>,
    /// `-m ...`, in order.
    pub matches: Vec<Match>,
    /// A comment kept in the rule's userdata (`NFTA_RULE_USERDATA`), where `nft` keeps
    /// `comment "..."`, rather than in an expression. A `-m comment` match is an xt match
    /// that the kernel calls for every packet the rule sees; this costs packets nothing.
    /// `iptables-nft-save` prints it as a `-m comment --comment` after the other matches.
    pub comment: Option<String>,
    /// `-j` / `-g`.
    pub target: Target,
}

impl Rule {
    /// A rule with no match.
    pub fn new(target: Target) -> Self {
        Self {
            in_iface: None,
            out_iface: None,
            protocol: None,
            src: None,
            dst: None,
            matches: Vec::new(),
            comment: None,
            target,
        }
    }

    /// The userdata comment, or else the text of the first `-m comment`: how a reader
    /// names the rule.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref().or_else(|| {
            self.matches.iter().find_map(|m| match m {
                Match::Comment(c) => Some(c.as_str()),
                _ => None,
            })
        })
    }

    /// The chain this rule jumps or goes to, if any.
    pub fn jump_target(&self) -> Option<&str> {
        match &self.target {
            Target::Jump(c) | Target::Goto(c) => Some(c),
            _ => None,
        }
    }

    /// The sets this rule looks up.
    pub fn set_names(&self) -> impl Iterator<Item = &str> {
        self.matches.iter().filter_map(|m| match m {
            Match::Set { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }

    /// The rule's arguments as `iptables-nft-save` (or `ip6tables-nft-save` for
    /// [`Family::Ipv6`]) prints them, after `-A CHAIN`.
    pub fn to_iptables(&self, family: Family) -> String {
        let mut s = String::new();
        let neg = |s: &mut String, n: bool| {
            if n {
                s.push_str(" !");
            }
        };
        // iptables-save prints addresses before interfaces and protocol, whatever the
        // bytecode order (nft_ipv4_save_rule / save_ipv4_addr).
        if let Some(a) = &self.src {
            neg(&mut s, a.negate);
            let _ = write!(s, " -s {}", save_net(&a.value));
        }
        if let Some(a) = &self.dst {
            neg(&mut s, a.negate);
            let _ = write!(s, " -d {}", save_net(&a.value));
        }
        if let Some(i) = &self.in_iface {
            neg(&mut s, i.negate);
            let _ = write!(s, " -i {}", i.value);
        }
        if let Some(i) = &self.out_iface {
            neg(&mut s, i.negate);
            let _ = write!(s, " -o {}", i.value);
        }
        if let Some(p) = &self.protocol {
            neg(&mut s, p.negate);
            let _ = write!(s, " -p {}", p.value.save_name());
        }
        let proto = self.protocol.as_ref().map(|p| p.value);
        for m in &self.matches {
            match m {
                Match::Ports { sport, dport } => {
                    let name = proto.map(|p| p.save_name()).unwrap_or_else(|| "tcp".into());
                    let _ = write!(s, " -m {name}");
                    if let Some(p) = sport {
                        neg(&mut s, p.negate);
                        let _ = write!(s, " --sport {}", p.value);
                    }
                    if let Some(p) = dport {
                        neg(&mut s, p.negate);
                        let _ = write!(s, " --dport {}", p.value);
                    }
                }
                Match::Multiport { dir, negate, ports } => {
                    s.push_str(" -m multiport");
                    neg(&mut s, *negate);
                    let flag = match dir {
                        PortDir::Source => "--sports",
                        PortDir::Destination => "--dports",
                    };
                    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
                    let _ = write!(s, " {flag} {}", list.join(","));
                }
                Match::Set { negate, name, dirs } => {
                    s.push_str(" -m set");
                    neg(&mut s, *negate);
                    let d: Vec<&str> = dirs
                        .iter()
                        .map(|d| match d {
                            SetDir::Src => "src",
                            SetDir::Dst => "dst",
                        })
                        .collect();
                    let _ = write!(s, " --match-set {name} {}", d.join(","));
                }
                Match::Conntrack { negate, states } => {
                    s.push_str(" -m conntrack");
                    neg(&mut s, *negate);
                    let _ = write!(s, " --ctstate {states}");
                }
                Match::Mark {
                    negate,
                    value,
                    mask,
                } => {
                    s.push_str(" -m mark");
                    neg(&mut s, *negate);
                    if *mask == u32::MAX {
                        let _ = write!(s, " --mark {value:#x}");
                    } else {
                        let _ = write!(s, " --mark {value:#x}/{mask:#x}");
                    }
                }
                Match::Comment(c) => {
                    let _ = write!(s, " -m comment --comment {}", save_quote(c));
                }
            }
        }
        // iptables-nft-save appends the userdata comment to the matches it decoded.
        if let Some(c) = &self.comment {
            let _ = write!(s, " -m comment --comment {}", save_quote(c));
        }
        match &self.target {
            Target::Accept => s.push_str(" -j ACCEPT"),
            Target::Drop => s.push_str(" -j DROP"),
            Target::Return => s.push_str(" -j RETURN"),
            Target::Reject(w) => {
                let v6 = family == Family::Ipv6;
                let _ = write!(s, " -j REJECT --reject-with {}", reject_name(*w, v6));
            }
            Target::Jump(c) => {
                let _ = write!(s, " -j {c}");
            }
            Target::Goto(c) => {
                let _ = write!(s, " -g {c}");
            }
            Target::SetXMark { value, mask } => {
                let _ = write!(s, " -j MARK --set-xmark {value:#x}/{mask:#x}");
            }
            Target::Log { prefix, level } => {
                s.push_str(" -j LOG");
                if let Some(p) = prefix {
                    let _ = write!(s, " --log-prefix {}", save_quote(p));
                }
                if *level != 4 {
                    let _ = write!(s, " --log-level {level}");
                }
            }
            Target::Nflog { group, prefix } => {
                s.push_str(" -j NFLOG");
                if let Some(p) = prefix {
                    let _ = write!(s, " --nflog-prefix {}", save_quote(p));
                }
                if *group != 0 {
                    let _ = write!(s, " --nflog-group {group}");
                }
            }
        }
        s.trim_start().to_owned()
    }
}

/// The `--reject-with` name iptables-save prints.
pub fn reject_name(w: RejectWith, v6: bool) -> &'static str {
    match (w, v6) {
        (RejectWith::PortUnreachable, false) => "icmp-port-unreachable",
        (RejectWith::AdminProhibited, false) => "icmp-host-prohibited",
        (RejectWith::NetUnreachable, false) => "icmp-net-unreachable",
        (RejectWith::HostUnreachable, false) => "icmp-host-unreachable",
        (RejectWith::PortUnreachable, true) => "icmp6-port-unreachable",
        (RejectWith::AdminProhibited, true) => "icmp6-adm-prohibited",
        (RejectWith::NetUnreachable, true) => "icmp6-no-route",
        (RejectWith::HostUnreachable, true) => "icmp6-addr-unreachable",
        (RejectWith::TcpReset, _) => "tcp-reset",
    }
}

/// An address as iptables-save prints it: always with its prefix length.
fn save_net(n: &IpNet) -> String {
    format!("{}/{}", n.network(), n.prefix_len())
}

/// Quotes a comment or prefix the way iptables-save does (`xtables_save_string` in
/// libxtables): bare when made only of letters, digits, `_` and `-`; otherwise
/// double-quoted, with `"`, `\\` and `'` escaped.
pub fn save_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if safe {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
