//! Pods wired to a node the way a CNI plugin wires them (DESIGN.md, "Pod wiring that
//! works"): the pod's `eth0` holds a /32 and a /128 with default routes via 169.254.1.1
//! (onlink) and fe80::1; the node side of the veth holds 169.254.1.1/32 and fe80::1/64 and
//! a host route to each pod address; the node forwards.
//!
//! Three things make the wiring deterministic, so that the first packet a test sends is
//! treated like every later one:
//!
//! * IPv6 addresses are added `nodad` (no duplicate address detection);
//! * both sides get permanent neighbour entries for each other (fixed MAC addresses), so
//!   no packet waits in a neighbour queue for ARP or NDP, or is lost when that queue
//!   overflows under a burst of probes;
//! * [`add_pods`] returns only once the kernel has finished two things it does
//!   asynchronously, under the RTNL lock, so that on a busy machine where other namespaces
//!   are being torn down each can lag by tens of milliseconds or more, long enough for a
//!   probe to see a silent drop:
//!   - every veth end is operationally up. The end brought up first has no carrier yet,
//!     and its transmit queue keeps the `noop` qdisc, which drops everything, until the
//!     link watcher handles the carrier event (`linkwatch_do_dev()` sets the operational
//!     state and activates the qdisc together);
//!   - every pod address has its local route. An IPv6 address gets it only when its
//!     duplicate address detection completes, which for a `nodad` address is at once but
//!     still in the `addrconf` work queue; until then the pod doesn't take packets for
//!     it, tries to forward them, and drops them (forwarding is off in a pod:
//!     `ip6_forward()`, `IP_INADDRERRORS`).
//!
//! Namespaces are configured with `ip -n NAME -batch -`: one process per namespace, not
//! one per command, and no `ip netns exec` (which remounts `/sys`). Sysctls are written
//! from a thread inside the namespace, without a process at all.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::Sandbox;

/// The node's address on every pod link, the pods' IPv4 gateway.
pub const GATEWAY_V4: &str = "169.254.1.1";
/// The node's link-local address on every pod link, the pods' IPv6 gateway.
pub const GATEWAY_V6: &str = "fe80::1";

/// Writes `value` to the sysctl `key` (dotted, e.g. `net.ipv4.ip_forward`) of `ns`'s
/// network namespace. The write happens on this thread, moved into the namespace: the
/// `net.*` sysctls under `/proc/sys` are those of the writing thread's namespace.
pub fn sysctl(ns: &Sandbox, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.netns()
        .enter(|| std::fs::write(&path, value))
        .unwrap_or_else(|e| panic!("entering {}: {e}", ns.name))
        .unwrap_or_else(|e| panic!("sysctl {key}={value} in {}: {e}", ns.name));
}

/// Runs `script` through `ip -n <ns> -batch -`: one `ip` command per line, in `ns`.
/// Panics with `ip`'s message (which names the failing line) on failure.
pub fn ip_batch(ns: &Sandbox, script: &str) {
    let mut child = Command::new("ip")
        .args(["-n", &ns.name, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ip (tests need iproute2)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("writing ip's stdin");
    let out = child.wait_with_output().expect("waiting for ip");
    assert!(
        out.status.success(),
        "ip -n {} -batch failed: {}\nscript:\n{script}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Turns on forwarding in the node namespace. Reverse-path filtering is turned off, so that
/// what a test sees dropped was dropped by the ruleset under test.
pub fn make_node(node: &Sandbox) {
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        sysctl(node, key, value);
    }
    ip_batch(node, "link set lo up\n");
}

/// A pod namespace wired to a node through a veth pair named `host_if` on the node side.
pub struct Pod {
    /// The pod's own namespace.
    pub ns: Sandbox,
    /// The node-side interface.
    pub host_if: String,
    /// The MAC address of the pod's `eth0`.
    pub mac: String,
}

/// One pod to wire: the node-side interface name (at most 15 bytes) and the pod's
/// addresses.
#[derive(Clone, Debug)]
pub struct Wiring {
    /// The node side of the veth pair.
    pub host_if: String,
    /// The pod's IPv4 address (a /32 on `eth0`).
    pub v4: Ipv4Addr,
    /// The pod's IPv6 address (a /128 on `eth0`).
    pub v6: Ipv6Addr,
}

/// Creates a pod namespace with `v4` and `v6` on its `eth0`, and the node's routes to them.
pub fn add_pod(node: &Sandbox, host_if: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Pod {
    let wiring = Wiring {
        host_if: host_if.to_owned(),
        v4,
        v6,
    };
    add_pods(node, "pod", &[wiring]).pop().expect("one pod")
}

/// A MAC address per veth end that is unique in this process: `02:6e:66:HH:LL:SS`
/// (locally administered; "nf"; a counter; 01 for the node side, 02 for the pod side).
fn macs() -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (hi, lo) = ((n >> 8) & 0xff, n & 0xff);
    (
        format!("02:6e:66:{hi:02x}:{lo:02x}:01"),
        format!("02:6e:66:{hi:02x}:{lo:02x}:02"),
    )
}

/// Creates one namespace per entry of `pods` (named `nf-<tag>-...`) and wires each to
/// `node`: one `ip` process configures the node side of every pair, one more each pod.
/// The namespaces are removed when the returned pods are dropped, also on a panic here.
pub fn add_pods(node: &Sandbox, tag: &str, wirings: &[Wiring]) -> Vec<Pod> {
    let mut out = Vec::with_capacity(wirings.len());
    let mut node_script = String::new();
    for w in wirings {
        assert!(
            w.host_if.len() <= 15,
            "interface name {:?} is longer than 15 bytes",
            w.host_if
        );
        let ns = Sandbox::new(tag);
        let (node_mac, pod_mac) = macs();
        let (h, v4, v6) = (&w.host_if, w.v4, w.v6);
        node_script += &format!(
            "link add {h} address {node_mac} type veth peer name eth0 address {pod_mac} netns {pod}\n\
             addr add {GATEWAY_V4}/32 dev {h}\n\
             addr add {GATEWAY_V6}/64 dev {h} nodad\n\
             link set {h} up\n\
             route add {v4}/32 dev {h}\n\
             route add {v6}/128 dev {h}\n\
             neigh replace {v4} lladdr {pod_mac} dev {h} nud permanent\n\
             neigh replace {v6} lladdr {pod_mac} dev {h} nud permanent\n",
            pod = ns.name,
        );
        out.push((
            Pod {
                ns,
                host_if: h.clone(),
                mac: pod_mac,
            },
            node_mac,
            w,
        ));
    }
    ip_batch(node, &node_script);
    for (pod, _, _) in &out {
        sysctl(
            node,
            &format!("net.ipv4.conf.{}.rp_filter", pod.host_if),
            "0",
        );
    }
    let pods: Vec<Pod> = out
        .into_iter()
        .map(|(pod, node_mac, w)| {
            let (v4, v6) = (w.v4, w.v6);
            ip_batch(
                &pod.ns,
                &format!(
                    "link set lo up\n\
                     addr add {v4}/32 dev eth0\n\
                     addr add {v6}/128 dev eth0 nodad\n\
                     link set eth0 up\n\
                     route add {GATEWAY_V4} dev eth0 scope link\n\
                     route add default via {GATEWAY_V4} dev eth0\n\
                     route add default via {GATEWAY_V6} dev eth0\n\
                     neigh replace {GATEWAY_V4} lladdr {node_mac} dev eth0 nud permanent\n\
                     neigh replace {GATEWAY_V6} lladdr {node_mac} dev eth0 nud permanent\n"
                ),
            );
            pod
        })
        .collect();
    let host_ifs: Vec<&str> = pods.iter().map(|p| p.host_if.as_str()).collect();
    wait_until_ready(node, &host_ifs, &[]);
    for (pod, w) in pods.iter().zip(wirings) {
        wait_until_ready(&pod.ns, &["eth0"], &[IpAddr::V4(w.v4), IpAddr::V6(w.v6)]);
    }
    pods
}

impl Pod {
    /// Gives the pod one more address on `eth0` (to send from it) and routes it back from
    /// the node, so that only a ruleset can tell it from the pod's own.
    pub fn add_address(&self, node: &Sandbox, addr: &str) {
        let ip: IpAddr = addr.parse().expect("an IP address");
        let (len, nodad) = if ip.is_ipv6() {
            (128, " nodad")
        } else {
            (32, "")
        };
        ip_batch(
            &self.ns,
            &format!("addr add {addr}/{len} dev eth0{nodad}\n"),
        );
        let h = &self.host_if;
        ip_batch(
            node,
            &format!(
                "route add {addr}/{len} dev {h}\n\
                 neigh replace {addr} lladdr {} dev {h} nud permanent\n",
                self.mac
            ),
        );
        wait_until_ready(&self.ns, &[], &[ip]);
    }
}

/// How long wiring may take to settle before the sandbox counts as broken.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Waits until every link of `links` in `ns` is operationally up and every address of
/// `locals` has its local route (see the module docs for why each can lag); panics with
/// what is missing after [`READY_WITHIN`].
pub fn wait_until_ready(ns: &Sandbox, links: &[&str], locals: &[IpAddr]) {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let (up, local) = ns
            .netns()
            .enter(|| Ok::<_, io::Error>((links_up()?, local_addresses()?)))
            .unwrap_or_else(|e| panic!("entering {}: {e}", ns.name))
            .unwrap_or_else(|e| panic!("reading the links and routes of {}: {e}", ns.name));
        let down: Vec<&&str> = links
            .iter()
            .filter(|l| !up.iter().any(|u| u == *l))
            .collect();
        let unrouted: Vec<&IpAddr> = locals.iter().filter(|a| !local.contains(a)).collect();
        if down.is_empty() && unrouted.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready after {READY_WITHIN:?}: links not up {down:?}, addresses without a \
             local route {unrouted:?}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The route-netlink constants used here (`linux/rtnetlink.h`, `linux/netlink.h`,
/// `linux/if_link.h`, `linux/if.h`).
mod rt {
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLM_F_REQUEST: u16 = 1;
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_GETLINK: u16 = 18;
    pub const RTM_NEWROUTE: u16 = 24;
    pub const RTM_GETROUTE: u16 = 26;
    /// `sizeof(struct nlmsghdr)`.
    pub const NLMSG_HDR: usize = 16;
    /// `sizeof(struct ifinfomsg)`.
    pub const IFINFOMSG: usize = 16;
    /// `sizeof(struct rtmsg)`.
    pub const RTMSG: usize = 12;
    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_OPERSTATE: u16 = 16;
    /// `IF_OPER_UP`, RFC 2863 ifOperStatus "up".
    pub const IF_OPER_UP: u8 = 6;
    pub const RTA_DST: u16 = 1;
    pub const RTN_LOCAL: u8 = 2;
}

/// The names of the links of the calling thread's namespace that are operationally up.
fn links_up() -> io::Result<Vec<String>> {
    let mut up = Vec::new();
    for (ty, body) in dump(rt::RTM_GETLINK, &[0u8; rt::IFINFOMSG])? {
        if ty != rt::RTM_NEWLINK || body.len() < rt::IFINFOMSG {
            continue;
        }
        let (mut name, mut state) = (String::new(), 0u8);
        for (kind, payload) in attributes(&body[rt::IFINFOMSG..]) {
            match kind {
                rt::IFLA_IFNAME => {
                    name = String::from_utf8_lossy(payload)
                        .trim_end_matches('\0')
                        .to_owned()
                }
                rt::IFLA_OPERSTATE => state = payload.first().copied().unwrap_or(0),
                _ => {}
            }
        }
        if state == rt::IF_OPER_UP {
            up.push(name);
        }
    }
    Ok(up)
}

/// The addresses with a local route (`RTN_LOCAL`) in the calling thread's namespace: those
/// it accepts packets for.
fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut local = Vec::new();
    for (ty, body) in dump(rt::RTM_GETROUTE, &[0u8; rt::RTMSG])? {
        if ty != rt::RTM_NEWROUTE || body.len() < rt::RTMSG || body[7] != rt::RTN_LOCAL {
            continue;
        }
        for (kind, payload) in attributes(&body[rt::RTMSG..]) {
            if kind != rt::RTA_DST {
                continue;
            }
            if let Ok(b) = <[u8; 4]>::try_from(payload) {
                local.push(IpAddr::from(b));
            } else if let Ok(b) = <[u8; 16]>::try_from(payload) {
                local.push(IpAddr::from(b));
            }
        }
    }
    Ok(local)
}

/// The route-netlink attributes in `buf`: (type, payload).
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((u16::from_ne_bytes([buf[2], buf[3]]), &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

/// Sends a `NETLINK_ROUTE` dump request of `msg_type` with `header` (the family header,
/// all zero: every family) from the calling thread's namespace, and returns every answer
/// as (message type, body after the `nlmsghdr`).
fn dump(msg_type: u16, header: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
    // SAFETY: plain syscall; the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = Vec::with_capacity(rt::NLMSG_HDR + header.len());
    req.extend_from_slice(&((rt::NLMSG_HDR + header.len()) as u32).to_ne_bytes());
    req.extend_from_slice(&msg_type.to_ne_bytes());
    req.extend_from_slice(&(rt::NLM_F_REQUEST | rt::NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    req.extend_from_slice(header);
    // SAFETY: req is valid for its length.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        // SAFETY: buf is valid for writing its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= rt::NLMSG_HDR {
            let len = u32::from_ne_bytes(msgs[..4].try_into().expect("4 bytes")) as usize;
            if len < rt::NLMSG_HDR || len > msgs.len() {
                return Err(io::Error::other("truncated netlink message"));
            }
            let ty = u16::from_ne_bytes([msgs[4], msgs[5]]);
            let body = &msgs[rt::NLMSG_HDR..len];
            match ty {
                rt::NLMSG_DONE => return Ok(out),
                rt::NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                _ => out.push((ty, body.to_vec())),
            }
            msgs = &msgs[((len + 3) & !3).min(msgs.len())..];
        }
    }
}
