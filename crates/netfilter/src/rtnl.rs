//! A small `NETLINK_ROUTE` client: just enough to wire network namespaces together the way
//! a CNI plugin does (veth pairs across namespaces, addresses, routes, links up), so that
//! netfence's demo and tools build their sandboxes without starting `ip`.
//!
//! As elsewhere in this crate, the wire format is separate from the socket: [`wire`] holds
//! pure encoders that return message bytes, byte-for-byte what iproute2 6.1 (`ip`) sends
//! for the same command line (its tests hold the captures), and [`Rtnl`] moves them and
//! reads the kernel's ACKs. Every kernel error names the operation, the object and the
//! namespace, with the kernel's extended-ACK text when it gave one:
//!
//! ```text
//! adding address 10.0.0.1/32 to link eth9 in network namespace n1: no link named eth9: ENODEV (No such device)
//! ```
//!
//! ```no_run
//! use netfilter::rtnl::{Route, Rtnl};
//! use netfilter::Netns;
//!
//! let node = Netns::Named("node".into());
//! let pod = Netns::Named("pod".into());
//! let mut n = Rtnl::open(&node)?;
//! n.add_veth("veth-pod", "eth0", &pod)?;
//! n.add_address("veth-pod", "169.254.1.1/32".parse().unwrap(), false)?;
//! n.set_up("veth-pod")?;
//! let mut p = Rtnl::open(&pod)?;
//! p.add_address("eth0", "10.244.1.2/32".parse().unwrap(), false)?;
//! p.set_up("eth0")?;
//! p.add_route(&Route::via("0.0.0.0/0".parse().unwrap(), "169.254.1.1".parse().unwrap(), "eth0").onlink())?;
//! n.add_route(&Route::dev("10.244.1.2/32".parse().unwrap(), "veth-pod"))?;
//! # Ok::<(), netfilter::Error>(())
//! ```

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;

use crate::error::Error;
use crate::nl::{self, Msg};
use crate::socket::{Answers, NetlinkSocket, Netns};

/// Pure encoders of the route-netlink requests [`Rtnl`] sends, and the constants they use.
///
/// Layouts per `linux/rtnetlink.h` (`struct ifinfomsg`, `struct ifaddrmsg`, `struct
/// rtmsg`), `linux/if_link.h`, `linux/if_addr.h` and `linux/veth.h`; attribute order and
/// header fields as `ip` (iproute2 6.1) sends them, so that a capture of `ip` is the test
/// oracle.
pub mod wire {
    use std::net::IpAddr;
    use std::os::fd::RawFd;

    use ipnet::IpNet;

    use crate::error::Error;
    use crate::nl::{MsgWriter, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};

    /// The route-netlink message types used here (`linux/rtnetlink.h`, `RTM_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(u16)]
    pub enum MsgType {
        /// `RTM_NEWLINK`: create a link, or change one (up/down).
        NewLink = 16,
        /// `RTM_GETLINK`: look a link up.
        GetLink = 18,
        /// `RTM_NEWADDR`: add an address.
        NewAddr = 20,
        /// `RTM_NEWROUTE`: add a route.
        NewRoute = 24,
    }

    /// `AF_UNSPEC`: links belong to no address family.
    pub const AF_UNSPEC: u8 = 0;
    /// `AF_INET`.
    pub const AF_INET: u8 = 2;
    /// `AF_INET6`.
    pub const AF_INET6: u8 = 10;

    /// `IFLA_IFNAME` (`linux/if_link.h`): the link's name, NUL-terminated.
    pub const IFLA_IFNAME: u16 = 3;
    /// `IFLA_LINKINFO` (`linux/if_link.h`): nest of the link kind and its data.
    pub const IFLA_LINKINFO: u16 = 18;
    /// `IFLA_NET_NS_FD` (`linux/if_link.h`): a namespace file descriptor (u32) the link
    /// is created in, or moved to.
    pub const IFLA_NET_NS_FD: u16 = 28;
    /// `IFLA_EXT_MASK` (`linux/if_link.h`): what a GETLINK reply may leave out.
    pub const IFLA_EXT_MASK: u16 = 29;
    /// `IFLA_INFO_KIND` (`linux/if_link.h`, inside `IFLA_LINKINFO`): "veth".
    pub const IFLA_INFO_KIND: u16 = 1;
    /// `IFLA_INFO_DATA` (`linux/if_link.h`, inside `IFLA_LINKINFO`): the kind's own nest.
    pub const IFLA_INFO_DATA: u16 = 2;
    /// `VETH_INFO_PEER` (`linux/veth.h`, inside `IFLA_INFO_DATA`): a `struct ifinfomsg`
    /// followed by the peer's own `IFLA_*` attributes.
    pub const VETH_INFO_PEER: u16 = 1;
    /// `RTEXT_FILTER_VF` (`linux/rtnetlink.h`).
    pub const RTEXT_FILTER_VF: u32 = 1 << 0;
    /// `RTEXT_FILTER_SKIP_STATS` (`linux/rtnetlink.h`): keeps GETLINK replies small.
    pub const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
    /// `IFF_UP` (`linux/if.h`).
    pub const IFF_UP: u32 = 1;

    /// `IFA_ADDRESS` (`linux/if_addr.h`): the prefix address (the peer's on point-to-point
    /// links; the same as `IFA_LOCAL` here).
    pub const IFA_ADDRESS: u16 = 1;
    /// `IFA_LOCAL` (`linux/if_addr.h`): the interface's own address.
    pub const IFA_LOCAL: u16 = 2;
    /// `IFA_F_NODAD` (`linux/if_addr.h`): skip IPv6 duplicate address detection, so the
    /// address is usable at once instead of after about a second of DAD.
    pub const IFA_F_NODAD: u8 = 0x02;

    /// `RTA_DST` (`linux/rtnetlink.h`).
    pub const RTA_DST: u16 = 1;
    /// `RTA_OIF` (`linux/rtnetlink.h`): output interface index, u32.
    pub const RTA_OIF: u16 = 4;
    /// `RTA_GATEWAY` (`linux/rtnetlink.h`).
    pub const RTA_GATEWAY: u16 = 5;
    /// `RT_TABLE_MAIN` (`linux/rtnetlink.h`).
    pub const RT_TABLE_MAIN: u8 = 254;
    /// `RTPROT_BOOT` (`linux/rtnetlink.h`): what `ip route add` marks its routes with.
    pub const RTPROT_BOOT: u8 = 3;
    /// `RT_SCOPE_UNIVERSE` (`linux/rtnetlink.h`).
    pub const RT_SCOPE_UNIVERSE: u8 = 0;
    /// `RT_SCOPE_LINK` (`linux/rtnetlink.h`): an IPv4 route without a gateway.
    pub const RT_SCOPE_LINK: u8 = 253;
    /// `RTN_UNICAST` (`linux/rtnetlink.h`).
    pub const RTN_UNICAST: u8 = 1;
    /// `RTNH_F_ONLINK` (`linux/rtnetlink.h`): the gateway is on the link even though no
    /// address of the link covers it (169.254.1.1 seen from a pod's /32).
    pub const RTNH_F_ONLINK: u32 = 4;

    /// What `ip` asks of a request that creates: an ACK, and failure if it exists.
    const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;

    /// `IFNAMSIZ` (`linux/if.h`) less the NUL.
    pub const IFNAME_MAX: usize = 15;

    /// Checks a link name as the kernel's `dev_valid_name()` does, so that a bad name fails
    /// here with a reason instead of as a bare `EINVAL`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the link.
    pub fn check_ifname(name: &str) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::invalid(format!("link name {name:?}"), why));
        if name.is_empty() {
            return bad("empty");
        }
        if name.len() > IFNAME_MAX {
            return bad("longer than 15 bytes (IFNAMSIZ)");
        }
        if name == "." || name == ".." {
            return bad("reserved");
        }
        if name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
        {
            return bad("holds '/', ':', a NUL or whitespace");
        }
        Ok(())
    }

    /// `struct ifinfomsg` (16 bytes): family, pad, type, index, flags, change.
    fn ifinfomsg(w: &mut MsgWriter, index: u32, flags: u32, change: u32) {
        let mut b = [0u8; 16];
        b[0] = AF_UNSPEC;
        b[4..8].copy_from_slice(&index.to_ne_bytes());
        b[8..12].copy_from_slice(&flags.to_ne_bytes());
        b[12..16].copy_from_slice(&change.to_ne_bytes());
        w.raw(&b);
    }

    fn family(ip: IpAddr) -> u8 {
        match ip {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        }
    }

    fn octets(ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// `ip link show NAME`'s lookup: RTM_GETLINK by name. Without `NLM_F_ACK`, as `ip`
    /// sends it: the answer is one RTM_NEWLINK, or an error.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name.
    pub fn get_link(seq: u32, name: &str) -> Result<Vec<u8>, Error> {
        check_ifname(name)?;
        let mut w = MsgWriter::with_capacity(48);
        w.begin(MsgType::GetLink as u16, NLM_F_REQUEST, seq);
        ifinfomsg(&mut w, 0, 0, 0);
        w.attr(
            IFLA_EXT_MASK,
            &(RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS).to_ne_bytes(),
        )?;
        w.attr_strz(IFLA_IFNAME, name)?;
        w.end();
        Ok(w.into_bytes())
    }

    /// `ip link add NAME type veth peer name PEER [netns NS]`: the peer is created directly
    /// in the namespace `peer_netns_fd` refers to (an open `/run/netns/NS`), or beside
    /// `NAME` when `None`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name.
    pub fn new_veth(
        seq: u32,
        name: &str,
        peer: &str,
        peer_netns_fd: Option<RawFd>,
    ) -> Result<Vec<u8>, Error> {
        check_ifname(name)?;
        check_ifname(peer)?;
        let mut w = MsgWriter::with_capacity(96);
        w.begin(MsgType::NewLink as u16, CREATE, seq);
        ifinfomsg(&mut w, 0, 0, 0);
        w.attr_strz(IFLA_IFNAME, name)?;
        // rtnetlink parses nests with or without NLA_F_NESTED; `ip` leaves it off.
        let info = w.nest_begin(IFLA_LINKINFO);
        // The kind is not NUL-terminated in `ip`'s message (addattr_l with strlen).
        w.attr(IFLA_INFO_KIND, b"veth")?;
        let data = w.nest_begin(IFLA_INFO_DATA);
        let p = w.nest_begin(VETH_INFO_PEER);
        ifinfomsg(&mut w, 0, 0, 0);
        if let Some(fd) = peer_netns_fd {
            w.attr(IFLA_NET_NS_FD, &(fd as u32).to_ne_bytes())?;
        }
        w.attr_strz(IFLA_IFNAME, peer)?;
        w.nest_end(p)?;
        w.nest_end(data)?;
        w.nest_end(info)?;
        w.end();
        Ok(w.into_bytes())
    }

    /// `ip link set dev NAME up` once the index is known: RTM_NEWLINK with `IFF_UP` in
    /// both flags and change mask, so that no other flag changes.
    pub fn set_up(seq: u32, index: u32) -> Vec<u8> {
        let mut w = MsgWriter::with_capacity(32);
        w.begin(MsgType::NewLink as u16, NLM_F_REQUEST | NLM_F_ACK, seq);
        ifinfomsg(&mut w, index, IFF_UP, IFF_UP);
        w.end();
        w.into_bytes()
    }

    /// `ip addr add ADDR/LEN dev LINK [nodad]`: `IFA_LOCAL` then `IFA_ADDRESS`, both the
    /// address itself. `nodad` only means something for IPv6.
    ///
    /// # Errors
    /// Never in practice; the signature follows the writer's.
    pub fn new_addr(seq: u32, index: u32, addr: IpNet, nodad: bool) -> Result<Vec<u8>, Error> {
        let ip = addr.addr();
        let mut w = MsgWriter::with_capacity(64);
        w.begin(MsgType::NewAddr as u16, CREATE, seq);
        // struct ifaddrmsg: family, prefixlen, flags, scope, index.
        let mut h = [0u8; 8];
        h[0] = family(ip);
        h[1] = addr.prefix_len();
        h[2] = if nodad { IFA_F_NODAD } else { 0 };
        h[3] = RT_SCOPE_UNIVERSE;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        w.raw(&h);
        w.attr(IFA_LOCAL, &octets(ip))?;
        w.attr(IFA_ADDRESS, &octets(ip))?;
        w.end();
        Ok(w.into_bytes())
    }

    /// `ip route add DST [via GW] dev LINK [onlink]` in the main table.
    ///
    /// As `ip` does: an IPv4 route without a gateway gets link scope, every other route
    /// universe scope; `RTA_DST` is left out for an IPv4 default route but sent (as `::`)
    /// for an IPv6 one.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the gateway's family differs from the destination's.
    pub fn new_route(
        seq: u32,
        dst: IpNet,
        gateway: Option<IpAddr>,
        oif: u32,
        onlink: bool,
    ) -> Result<Vec<u8>, Error> {
        let fam = family(dst.addr());
        if let Some(gw) = gateway {
            if family(gw) != fam {
                return Err(Error::invalid(
                    format!("route to {dst}"),
                    format!("gateway {gw} is of the other address family"),
                ));
            }
        }
        let mut w = MsgWriter::with_capacity(80);
        w.begin(MsgType::NewRoute as u16, CREATE, seq);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        let mut h = [0u8; 12];
        h[0] = fam;
        h[1] = dst.prefix_len();
        h[4] = RT_TABLE_MAIN;
        h[5] = RTPROT_BOOT;
        h[6] = if gateway.is_none() && fam == AF_INET {
            RT_SCOPE_LINK
        } else {
            RT_SCOPE_UNIVERSE
        };
        h[7] = RTN_UNICAST;
        let flags = if onlink { RTNH_F_ONLINK } else { 0 };
        h[8..12].copy_from_slice(&flags.to_ne_bytes());
        w.raw(&h);
        if dst.prefix_len() > 0 || fam == AF_INET6 {
            w.attr(RTA_DST, &octets(dst.network()))?;
        }
        if let Some(gw) = gateway {
            w.attr(RTA_GATEWAY, &octets(gw))?;
        }
        w.attr(RTA_OIF, &oif.to_ne_bytes())?;
        w.end();
        Ok(w.into_bytes())
    }
}

/// `NLM_F_CAPPED` (`linux/netlink.h`): the error echoes only the request's header.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` (`linux/netlink.h`): extended-ACK attributes follow the error.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG` (`linux/netlink.h`): the kernel's text for an error.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// A route to add with [`Rtnl::add_route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination (`0.0.0.0/0` or `::/0` for a default route).
    pub dst: IpNet,
    /// The next hop, or `None` for a route straight out of the link.
    pub gateway: Option<IpAddr>,
    /// The link the route goes out of.
    pub link: String,
    /// Whether the gateway is taken to be on the link without a covering address.
    pub onlink: bool,
}

impl Route {
    /// A route to `dst` straight out of `link`.
    pub fn dev(dst: IpNet, link: &str) -> Self {
        Self {
            dst,
            gateway: None,
            link: link.into(),
            onlink: false,
        }
    }

    /// A route to `dst` via `gateway` out of `link`.
    pub fn via(dst: IpNet, gateway: IpAddr, link: &str) -> Self {
        Self {
            dst,
            gateway: Some(gateway),
            link: link.into(),
            onlink: false,
        }
    }

    /// The same route, with its gateway on the link (`onlink`).
    pub fn onlink(mut self) -> Self {
        self.onlink = true;
        self
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dst.prefix_len() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.link)?;
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// A `NETLINK_ROUTE` socket bound in one network namespace: a [`NetlinkSocket`] on the
/// route bus. `!Send`: open it on the thread that uses it.
#[derive(Debug)]
pub struct Rtnl {
    sock: NetlinkSocket,
}

impl Rtnl {
    /// Opens a route-netlink socket in `netns`; it stays there for its whole life.
    ///
    /// # Errors
    /// [`Error::Io`] when the namespace can't be entered or the socket can't be opened.
    pub fn open(netns: &Netns) -> Result<Self, Error> {
        Ok(Self {
            sock: NetlinkSocket::open_route(netns)?,
        })
    }

    /// The namespace this socket talks to.
    pub fn netns(&self) -> &Netns {
        self.sock.netns()
    }

    fn next_seq(&mut self) -> u32 {
        self.sock.next_seq()
    }

    /// The index of link `name`.
    ///
    /// # Errors
    /// [`Error::Kernel`] with `ENODEV` when there is no such link here.
    pub fn link_index(&mut self, name: &str) -> Result<u32, Error> {
        let ns = self.netns().clone();
        self.index_for(name, &|| format!("looking up link {name} in {ns}"))
    }

    /// Looks `name` up for the operation `op` describes, so that a missing link fails
    /// with the operation in its message.
    fn index_for(&mut self, name: &str, op: &dyn Fn() -> String) -> Result<u32, Error> {
        let seq = self.next_seq();
        let msg = wire::get_link(seq, name)?;
        let mut index = None;
        self.talk(
            &msg,
            &|| format!("{}: no link named {name}", op()),
            &mut |m| {
                if m.ty == wire::MsgType::NewLink as u16 && m.payload.len() >= 16 {
                    let i = u32::from_ne_bytes(m.payload[4..8].try_into().expect("4 bytes"));
                    index = Some(i);
                }
                Ok(index.is_some())
            },
        )?;
        index.ok_or_else(|| Error::malformed(format!("{}: no RTM_NEWLINK in the reply", op())))
    }

    /// Creates a veth pair: `name` here, `peer` in `peer_netns` (or here, for
    /// [`Netns::Current`]).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name; [`Error::Io`] when `peer_netns` can't be opened;
    /// [`Error::Kernel`] (`EEXIST` when a link of either name exists).
    pub fn add_veth(&mut self, name: &str, peer: &str, peer_netns: &Netns) -> Result<(), Error> {
        // The descriptor only has to live until the kernel has read the request.
        let file = match peer_netns.path() {
            Some(p) => {
                Some(File::open(&p).map_err(|e| Error::io(format!("opening {}", p.display()), e))?)
            }
            None => None,
        };
        let seq = self.next_seq();
        let msg = wire::new_veth(seq, name, peer, file.as_ref().map(|f| f.as_raw_fd()))?;
        let ns = self.netns().clone();
        let peer_ns = peer_netns.clone();
        self.talk(
            &msg,
            &|| format!("adding veth {name} in {ns} with peer {peer} in {peer_ns}"),
            &mut |_| Ok(false),
        )
    }

    /// Sets link `name` up.
    ///
    /// # Errors
    /// [`Error::Kernel`]: `ENODEV` when there is no such link.
    pub fn set_up(&mut self, name: &str) -> Result<(), Error> {
        let ns = self.netns().clone();
        let op = || format!("setting link {name} up in {ns}");
        let index = self.index_for(name, &op)?;
        let seq = self.next_seq();
        self.talk(&wire::set_up(seq, index), &op, &mut |_| Ok(false))
    }

    /// Adds `addr` (address and prefix length) to link `link`; `nodad` skips IPv6
    /// duplicate address detection so that the address works at once.
    ///
    /// # Errors
    /// [`Error::Kernel`]: `ENODEV` when there is no such link, `EEXIST` when the address
    /// is there already.
    pub fn add_address(&mut self, link: &str, addr: IpNet, nodad: bool) -> Result<(), Error> {
        let ns = self.netns().clone();
        let op = || format!("adding address {addr} to link {link} in {ns}");
        let index = self.index_for(link, &op)?;
        let seq = self.next_seq();
        let msg = wire::new_addr(seq, index, addr, nodad)?;
        self.talk(&msg, &op, &mut |_| Ok(false))
    }

    /// Adds a route to the main table.
    ///
    /// # Errors
    /// [`Error::Kernel`]: `ENODEV` when there is no such link, `EEXIST` when the route is
    /// there already, `ENETDOWN` for an onlink gateway on a link without carrier (set both
    /// ends of a veth up first).
    pub fn add_route(&mut self, route: &Route) -> Result<(), Error> {
        let ns = self.netns().clone();
        let op = || format!("adding route {route} in {ns}");
        let index = self.index_for(&route.link, &op)?;
        let seq = self.next_seq();
        let msg = wire::new_route(seq, route.dst, route.gateway, index, route.onlink)?;
        self.talk(&msg, &op, &mut |_| Ok(false))
    }

    /// Sends one request and reads until its ACK or error, or until `reply` says a reply
    /// message (for requests without `NLM_F_ACK`) was the answer.
    fn talk(
        &mut self,
        msg: &[u8],
        op: &dyn Fn() -> String,
        reply: &mut dyn FnMut(&Msg<'_>) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut outcome = Ok(());
        self.sock
            .exchange(msg, Answers::default(), &|_| op(), |_, m| {
                if m.ty != nl::NLMSG_ERROR {
                    return reply(m);
                }
                let (errno, _) = m.error()?;
                if errno != 0 {
                    let op = match ext_ack_message(m) {
                        Some(text) => format!("{} (kernel: {text})", op()),
                        None => op(),
                    };
                    outcome = Err(Error::Kernel { op, errno });
                }
                Ok(true)
            })
            .map_err(|(_, e)| e)?;
        outcome
    }
}

/// The kernel's text in an extended ACK (`NLMSGERR_ATTR_MSG`), if it sent one.
fn ext_ack_message<'a>(m: &Msg<'a>) -> Option<&'a str> {
    if m.flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // struct nlmsgerr { int error; struct nlmsghdr msg; } then the echoed payload (none
    // when capped), then the TLVs.
    let echoed = if m.flags & NLM_F_CAPPED != 0 {
        nl::NLMSG_HDRLEN
    } else {
        let len = m.payload.get(4..8)?;
        u32::from_ne_bytes(len.try_into().ok()?) as usize
    };
    let tlvs = m.payload.get(4 + nl::align(echoed)..)?;
    nl::attrs(tlvs)
        .filter_map(Result::ok)
        .find(|a| a.ty == NLMSGERR_ATTR_MSG)
        .and_then(|a| a.str().ok())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    //! Expected bytes are what `ip` (iproute2 6.1) sent for the same command, captured with
    //! `strace -f -xx -e trace=sendmsg -e write=3,4 ip ...` in a scratch namespace, and
    //! pasted as strace's hex dump. The sequence number is the clock for `ip` (here
    //! 0x6b016fd6) and a parameter here; the link index was 2 and the namespace fd 4.

    use super::wire::*;
    use super::*;

    const SEQ: u32 = 0x6b01_6fd6;

    /// Parses strace's `-e write=` dump lines (` | 00000  60 00 ...  text |`).
    fn hex(dump: &str) -> Vec<u8> {
        dump.lines()
            .filter_map(|l| l.trim().strip_prefix('|'))
            .flat_map(|l| {
                // offset, two spaces, 16 bytes in two groups, two spaces, text.
                let body = &l.trim_start()[5..];
                let cut = body.len().min(2 + 16 * 3 + 1);
                body[..cut]
                    .split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn constants_match_libc() {
        assert_eq!(MsgType::NewLink as u16, libc::RTM_NEWLINK);
        assert_eq!(MsgType::GetLink as u16, libc::RTM_GETLINK);
        assert_eq!(MsgType::NewAddr as u16, libc::RTM_NEWADDR);
        assert_eq!(MsgType::NewRoute as u16, libc::RTM_NEWROUTE);
        assert_eq!(RTA_DST, libc::RTA_DST);
        assert_eq!(RTA_OIF, libc::RTA_OIF);
        assert_eq!(RTA_GATEWAY, libc::RTA_GATEWAY);
        assert_eq!(RT_TABLE_MAIN, libc::RT_TABLE_MAIN);
        assert_eq!(RTPROT_BOOT, libc::RTPROT_BOOT);
        assert_eq!(RT_SCOPE_LINK, libc::RT_SCOPE_LINK);
        assert_eq!(RTN_UNICAST, libc::RTN_UNICAST);
        assert_eq!(IFF_UP, libc::IFF_UP as u32);
        assert_eq!(AF_INET, libc::AF_INET as u8);
        assert_eq!(AF_INET6, libc::AF_INET6 as u8);
        assert_eq!(RTEXT_FILTER_VF, libc::RTEXT_FILTER_VF as u32);
        assert_eq!(
            RTEXT_FILTER_SKIP_STATS,
            libc::RTEXT_FILTER_SKIP_STATS as u32
        );
    }

    #[test]
    fn veth_with_peer_in_a_namespace_matches_ip() {
        // ip link add h1 type veth peer name eth0 netns nfcap-b
        let want = hex("
 | 00000  60 00 00 00 10 00 05 06  d6 6f 01 6b 00 00 00 00  `........o.k.... |
 | 00010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  ................ |
 | 00020  07 00 03 00 68 31 00 00  38 00 12 00 08 00 01 00  ....h1..8....... |
 | 00030  76 65 74 68 2c 00 02 00  28 00 01 00 00 00 00 00  veth,...(....... |
 | 00040  00 00 00 00 00 00 00 00  00 00 00 00 08 00 1c 00  ................ |
 | 00050  04 00 00 00 09 00 03 00  65 74 68 30 00 00 00 00  ........eth0.... |");
        assert_eq!(want.len(), 0x60);
        assert_eq!(new_veth(SEQ, "h1", "eth0", Some(4)).unwrap(), want);
    }

    #[test]
    fn veth_without_namespace_leaves_the_fd_out() {
        let got = new_veth(SEQ, "h1", "eth0", None).unwrap();
        assert_eq!(got.len(), 0x60 - 8);
        assert!(!got.windows(4).any(|w| w == [8, 0, 28, 0]));
    }

    #[test]
    fn get_link_matches_ip() {
        // the lookup `ip link set h1 up` makes first
        let want = hex("
 | 00000  30 00 00 00 12 00 01 00  d6 6f 01 6b 00 00 00 00  0........o.k.... |
 | 00010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  ................ |
 | 00020  08 00 1d 00 09 00 00 00  07 00 03 00 68 31 00 00  ............h1.. |");
        assert_eq!(get_link(SEQ, "h1").unwrap(), want);
    }

    #[test]
    fn set_up_matches_ip() {
        // ip link set h1 up
        let want = hex("
 | 00000  20 00 00 00 10 00 05 00  d6 6f 01 6b 00 00 00 00   ........o.k.... |
 | 00010  00 00 00 00 02 00 00 00  01 00 00 00 01 00 00 00  ................ |");
        assert_eq!(set_up(SEQ, 2), want);
    }

    #[test]
    fn ipv4_address_matches_ip() {
        // ip addr add 169.254.1.1/32 dev h1
        let want = hex("
 | 00000  28 00 00 00 14 00 05 06  d6 6f 01 6b 00 00 00 00  (........o.k.... |
 | 00010  02 20 00 00 02 00 00 00  08 00 02 00 a9 fe 01 01  . .............. |
 | 00020  08 00 01 00 a9 fe 01 01                           ........         |");
        let got = new_addr(SEQ, 2, "169.254.1.1/32".parse().unwrap(), false).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn ipv6_address_nodad_matches_ip() {
        // ip addr add fe80::1/64 dev h1 nodad
        let want = hex("
 | 00000  40 00 00 00 14 00 05 06  d6 6f 01 6b 00 00 00 00  @........o.k.... |
 | 00010  0a 40 02 00 02 00 00 00  14 00 02 00 fe 80 00 00  .@.............. |
 | 00020  00 00 00 00 00 00 00 00  00 00 00 01 14 00 01 00  ................ |
 | 00030  fe 80 00 00 00 00 00 00  00 00 00 00 00 00 00 01  ................ |");
        let got = new_addr(SEQ, 2, "fe80::1/64".parse().unwrap(), true).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn ipv4_device_route_matches_ip() {
        // ip route add 10.244.1.2/32 dev h1
        let want = hex("
 | 00000  2c 00 00 00 18 00 05 06  d6 6f 01 6b 00 00 00 00  ,........o.k.... |
 | 00010  02 20 00 00 fe 03 fd 01  00 00 00 00 08 00 01 00  . .............. |
 | 00020  0a f4 01 02 08 00 04 00  02 00 00 00              ............     |");
        let got = new_route(SEQ, "10.244.1.2/32".parse().unwrap(), None, 2, false).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn ipv6_device_route_matches_ip() {
        // ip -6 route add fd00:10:244:1::2/128 dev h1
        let want = hex("
 | 00000  38 00 00 00 18 00 05 06  d6 6f 01 6b 00 00 00 00  8........o.k.... |
 | 00010  0a 80 00 00 fe 03 00 01  00 00 00 00 14 00 01 00  ................ |
 | 00020  fd 00 00 10 02 44 00 01  00 00 00 00 00 00 00 02  .....D.......... |
 | 00030  08 00 04 00 02 00 00 00                           ........         |");
        let dst = "fd00:10:244:1::2/128".parse().unwrap();
        assert_eq!(new_route(SEQ, dst, None, 2, false).unwrap(), want);
    }

    #[test]
    fn ipv4_onlink_default_route_matches_ip() {
        // ip route add default via 169.254.1.1 dev h1 onlink
        let want = hex("
 | 00000  2c 00 00 00 18 00 05 06  d6 6f 01 6b 00 00 00 00  ,........o.k.... |
 | 00010  02 00 00 00 fe 03 00 01  04 00 00 00 08 00 05 00  ................ |
 | 00020  a9 fe 01 01 08 00 04 00  02 00 00 00              ............     |");
        let got = new_route(
            SEQ,
            "0.0.0.0/0".parse().unwrap(),
            Some("169.254.1.1".parse().unwrap()),
            2,
            true,
        )
        .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn ipv6_default_route_matches_ip() {
        // ip -6 route add default via fe80::1 dev h1
        let want = hex("
 | 00000  4c 00 00 00 18 00 05 06  d6 6f 01 6b 00 00 00 00  L........o.k.... |
 | 00010  0a 00 00 00 fe 03 00 01  00 00 00 00 14 00 01 00  ................ |
 | 00020  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  ................ |
 | 00030  14 00 05 00 fe 80 00 00  00 00 00 00 00 00 00 00  ................ |
 | 00040  00 00 00 01 08 00 04 00  02 00 00 00              ............     |");
        let got = new_route(
            SEQ,
            "::/0".parse().unwrap(),
            Some("fe80::1".parse().unwrap()),
            2,
            false,
        )
        .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn bad_names_and_families_fail_before_sending() {
        let e = get_link(1, "a-name-longer-than-15")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a-name-longer-than-15") && e.contains("15 bytes"),
            "{e}"
        );
        assert!(new_veth(1, "ok", "bad/name", None).is_err());
        assert!(get_link(1, "").is_err());
        let e = new_route(
            1,
            "0.0.0.0/0".parse().unwrap(),
            Some("fe80::1".parse().unwrap()),
            2,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("other address family"), "{e}");
    }

    #[test]
    fn route_display_reads_like_ip() {
        let r = Route::via(
            "0.0.0.0/0".parse().unwrap(),
            "169.254.1.1".parse().unwrap(),
            "eth0",
        )
        .onlink();
        assert_eq!(r.to_string(), "default via 169.254.1.1 dev eth0 onlink");
        let r = Route::dev("10.244.1.2/32".parse().unwrap(), "veth1");
        assert_eq!(r.to_string(), "10.244.1.2/32 dev veth1");
    }

    #[test]
    fn extended_ack_text_is_found() {
        // An error for seq 7, capped, with NLMSGERR_ATTR_MSG "Nexthop device is not up".
        let text = b"Nexthop device is not up\0";
        let mut m = Vec::new();
        let len = 16 + 4 + 16 + 4 + nl::align(text.len());
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&nl::NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(-libc::ENETDOWN).to_ne_bytes());
        m.extend_from_slice(&[0u8; 16]);
        m.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        m.extend_from_slice(text);
        m.resize(len, 0);
        let msg = nl::messages(&m).next().unwrap().unwrap();
        assert_eq!(msg.error().unwrap().0, libc::ENETDOWN);
        assert_eq!(ext_ack_message(&msg), Some("Nexthop device is not up"));
    }
}
