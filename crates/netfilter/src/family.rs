//! The address family shared by the nf_tables and ipset layers.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The two address families netfence programs (`NFPROTO_IPV4`, `NFPROTO_IPV6` in
/// `linux/netfilter.h`), for nf_tables tables and ipsets alike. Displays as nft names
/// (`ip`, `ip6`); [`Family::ipset_name`] gives ipset's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Table family `ip` (iptables).
    Ipv4,
    /// Table family `ip6` (ip6tables).
    Ipv6,
}

impl Family {
    /// The `NFPROTO_*` value.
    pub const fn nfproto(self) -> u8 {
        match self {
            Self::Ipv4 => libc::NFPROTO_IPV4 as u8,
            Self::Ipv6 => libc::NFPROTO_IPV6 as u8,
        }
    }

    /// The family whose `NFPROTO_*` value is `v`.
    pub const fn from_nfproto(v: u8) -> Option<Self> {
        match v as i32 {
            libc::NFPROTO_IPV4 => Some(Self::Ipv4),
            libc::NFPROTO_IPV6 => Some(Self::Ipv6),
            _ => None,
        }
    }

    /// The family a network belongs to.
    pub fn of(net: &IpNet) -> Self {
        Self::of_addr(&net.addr())
    }

    /// The family an address belongs to.
    pub const fn of_addr(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }

    /// The name `ipset` gives the family (`family inet|inet6`).
    pub const fn ipset_name(self) -> &'static str {
        match self {
            Self::Ipv4 => "inet",
            Self::Ipv6 => "inet6",
        }
    }

    /// The `nft` name of the family.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ip",
            Self::Ipv6 => "ip6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
