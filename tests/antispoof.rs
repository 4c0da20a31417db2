//! Anti-spoofing on real packets: two pods wired to a node namespace, each with a host-side
//! interface named in its `netfence.io/host-interface` annotation. Before netfence, a
//! datagram with a forged source address crosses the node (forwarding on, reverse-path
//! filtering off, a route back to the forged address through the sender's interface);
//! after netfence programs the node, only the pod's own addresses get through, in IPv4 and
//! IPv6, and the plan that moved a pod to a new address changed set members only.
//!
//! Every namespace is made for the test and removed on drop. Needs root.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::net::{add_pod, make_node, Pod};
use common::Sandbox;
use policy::{Compiler, CompilerConfig, Pod as PodModel};
use ruleset::{plan, Kernel, SetOp, TableId};

const PORT: u16 = 9999;

fn model(name: &str, v4: Ipv4Addr, v6: Ipv6Addr, iface: &str) -> PodModel {
    PodModel {
        namespace: "default".into(),
        name: name.into(),
        labels: BTreeMap::new(),
        ipv4: Some(v4),
        ipv6: Some(v6),
        named_ports: BTreeMap::new(),
        node_name: None,
        host_interface: Some(iface.into()),
    }
}

/// A UDP socket bound inside `pod`'s namespace.
fn socket_in(pod: &Pod, addr: IpAddr, port: u16) -> UdpSocket {
    pod.ns
        .netns()
        .enter(|| UdpSocket::bind(SocketAddr::new(addr, port)))
        .unwrap()
        .unwrap()
}

/// Sends one datagram from `src` in `from` to `dst`, and says whether `rx` got it (and
/// from `src`).
fn crosses(from: &Pod, src: &str, dst: &str, rx: &UdpSocket) -> bool {
    let src: IpAddr = src.parse().unwrap();
    let tx = socket_in(from, src, 0);
    let payload = format!("from {src}");
    tx.send_to(
        payload.as_bytes(),
        SocketAddr::new(dst.parse().unwrap(), PORT),
    )
    .unwrap();
    let mut buf = [0u8; 64];
    loop {
        match rx.recv_from(&mut buf) {
            Ok((n, peer)) if &buf[..n] == payload.as_bytes() => {
                assert_eq!(peer.ip(), src);
                return true;
            }
            Ok(_) => continue, // a straggler of an earlier probe
            Err(_) => return false,
        }
    }
}

#[test]
fn forged_sources_from_pod_interfaces_are_dropped() {
    let node = Sandbox::new("spoof-node");
    make_node(&node);
    let (a4, a6) = (Ipv4Addr::new(10, 244, 0, 1), "fd00::1".parse().unwrap());
    let (b4, b6) = (Ipv4Addr::new(10, 244, 0, 2), "fd00::2".parse().unwrap());
    let (c4, c6) = (Ipv4Addr::new(10, 244, 0, 3), "fd00::3".parse().unwrap());
    let a = add_pod(&node, "vpod-a", a4, a6);
    let b = add_pod(&node, "vpod-b", b4, b6);
    let _c = add_pod(&node, "vpod-c", c4, c6);
    a.add_address(&node, "10.244.0.77");
    a.add_address(&node, "fd00::77");
    // a also sends as c, the forgery that matters most: another pod's address.
    a.ns.sh("ip", &["addr", "add", "10.244.0.3/32", "dev", "eth0"]);
    a.ns.sh(
        "ip",
        &["addr", "add", "fd00::3/128", "dev", "eth0", "nodad"],
    );

    let rx4 = socket_in(&b, IpAddr::V4(b4), PORT);
    let rx6 = socket_in(&b, IpAddr::V6(b6), PORT);
    for rx in [&rx4, &rx6] {
        rx.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
    }
    let probes = |expect_forged: bool| {
        assert!(crosses(&a, "10.244.0.1", "10.244.0.2", &rx4));
        assert!(crosses(&a, "fd00::1", "fd00::2", &rx6));
        assert_eq!(
            crosses(&a, "10.244.0.77", "10.244.0.2", &rx4),
            expect_forged
        );
        assert_eq!(crosses(&a, "fd00::77", "fd00::2", &rx6), expect_forged);
        assert_eq!(crosses(&a, "10.244.0.3", "10.244.0.2", &rx4), expect_forged);
        assert_eq!(crosses(&a, "fd00::3", "fd00::2", &rx6), expect_forged);
    };
    // The sandbox lets forged sources through: what follows is netfence's doing.
    probes(true);

    let mut c = Compiler::new(CompilerConfig {
        pod_interface_prefix: Some("vpod-".into()),
        ..CompilerConfig::default()
    })
    .unwrap();
    c.upsert_pod(model("a", a4, a6, &a.host_if));
    c.upsert_pod(model("b", b4, b6, &b.host_if));
    c.upsert_pod(model("c", c4, c6, "vpod-c"));
    let tables = [
        TableId::filter(ruleset::Family::Ipv4),
        TableId::filter(ruleset::Family::Ipv6),
    ];
    let mut k = Kernel::open(&node.netns()).unwrap();
    let mut cur = k.observe("nf-", &tables).unwrap();
    k.apply(&plan(&cur, c.ruleset()).unwrap(), &mut cur)
        .unwrap();
    let save = node.sh("iptables-nft-save", &[]);
    assert!(
        save.contains("-A nf-fw -i vpod-+ -m set ! --match-set nf-podsrc4 src,src -m comment"),
        "{save}"
    );
    probes(false);

    // The pod gets 10.244.0.77 as its address: a member change, and now that one passes
    // while the old one is forged.
    let mut moved = model("a", Ipv4Addr::new(10, 244, 0, 77), a6, &a.host_if);
    moved.ipv6 = Some("fd00::77".parse().unwrap());
    c.upsert_pod(moved);
    let p = plan(&cur, c.ruleset()).unwrap();
    assert!(p.batch.is_empty(), "{p:?}");
    assert!(p
        .before
        .iter()
        .chain(&p.after)
        .all(|op| matches!(op, SetOp::Add { .. } | SetOp::Del { .. })));
    k.apply(&p, &mut cur).unwrap();
    assert!(crosses(&a, "10.244.0.77", "10.244.0.2", &rx4));
    assert!(crosses(&a, "fd00::77", "fd00::2", &rx6));
    assert!(!crosses(&a, "10.244.0.1", "10.244.0.2", &rx4));
    assert!(!crosses(&a, "fd00::1", "fd00::2", &rx6));
}
