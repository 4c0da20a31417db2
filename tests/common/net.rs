//! Pods wired to a node the way a CNI plugin wires them (DESIGN.md, "Pod wiring that
//! works"): the pod's `eth0` holds a /32 and a /128 with default routes via 169.254.1.1
//! (onlink) and fe80::1; the node side of the veth holds 169.254.1.1/32 and fe80::1/64 and
//! a host route to each pod address; the node forwards.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Sandbox;

/// Turns on forwarding in the node namespace. Reverse-path filtering is turned off, so that
/// what a test sees dropped was dropped by the ruleset under test.
pub fn make_node(node: &Sandbox) {
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        node.sh("sysctl", &["-qw", &format!("{key}={value}")]);
    }
    node.sh("ip", &["link", "set", "lo", "up"]);
}

/// A pod namespace wired to `node` through a veth pair named `host_if` on the node side.
pub struct Pod {
    /// The pod's own namespace.
    pub ns: Sandbox,
    /// The node-side interface.
    pub host_if: String,
}

/// Creates a pod namespace with `v4` and `v6` on its `eth0`, and the node's routes to them.
pub fn add_pod(node: &Sandbox, host_if: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Pod {
    let ns = Sandbox::new("pod");
    node.sh(
        "ip",
        &[
            "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ],
    );
    node.sh(
        "sysctl",
        &["-qw", &format!("net.ipv4.conf.{host_if}.rp_filter=0")],
    );
    node.sh("ip", &["addr", "add", "169.254.1.1/32", "dev", host_if]);
    node.sh(
        "ip",
        &["addr", "add", "fe80::1/64", "dev", host_if, "nodad"],
    );
    node.sh("ip", &["link", "set", host_if, "up"]);
    node.sh("ip", &["route", "add", &format!("{v4}/32"), "dev", host_if]);
    node.sh(
        "ip",
        &["-6", "route", "add", &format!("{v6}/128"), "dev", host_if],
    );
    ns.sh("ip", &["link", "set", "lo", "up"]);
    ns.sh("ip", &["addr", "add", &format!("{v4}/32"), "dev", "eth0"]);
    ns.sh(
        "ip",
        &["addr", "add", &format!("{v6}/128"), "dev", "eth0", "nodad"],
    );
    ns.sh("ip", &["link", "set", "eth0", "up"]);
    ns.sh(
        "ip",
        &[
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ],
    );
    ns.sh(
        "ip",
        &[
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ],
    );
    ns.sh(
        "ip",
        &[
            "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
        ],
    );
    Pod {
        ns,
        host_if: host_if.to_owned(),
    }
}

impl Pod {
    /// Gives the pod one more address on `eth0` (to send from it) and routes it back from
    /// the node, so that only a ruleset can tell it from the pod's own.
    pub fn add_address(&self, node: &Sandbox, addr: &str) {
        let (len, v6) = if addr.contains(':') {
            (128, true)
        } else {
            (32, false)
        };
        let mut args = vec!["addr", "add"];
        let net = format!("{addr}/{len}");
        args.extend([net.as_str(), "dev", "eth0"]);
        if v6 {
            args.push("nodad");
        }
        self.ns.sh("ip", &args);
        let fam = if v6 { "-6" } else { "-4" };
        node.sh("ip", &[fam, "route", "add", &net, "dev", &self.host_if]);
    }
}
