//! `netfence demo` end to end (needs root), and the route-netlink client it builds its
//! sandbox with, checked against `ip` as the oracle.

use std::process::Command;

use netfilter::rtnl::{Route, Rtnl};
use netfilter::Netns;

/// `ip ARGS...`; panics on failure, returns stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed (tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A namespace made with `ip netns add` (the oracle's way), removed on drop.
struct Scratch(String);

impl Scratch {
    fn new(tag: &str) -> Self {
        let name = format!("nfrtnl-{}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        Self(name)
    }

    fn netns(&self) -> Netns {
        Netns::Named(self.0.clone())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn demo_walks_the_seed_agrees_with_kubernetes_and_cleans_up() {
    let mut out = Vec::new();
    let t = std::time::Instant::now();
    let result = netfence::demo::run(&mut out);
    let took = t.elapsed();
    let text = String::from_utf8(out).expect("utf-8 output");
    assert!(result.is_ok(), "demo failed: {result:?}\n{text}");
    for step in [
        "Step 1/4: no policy",
        "Step 2/4: deny-all in alpha",
        "Step 3/4: access-nginx ",
        "Step 4/4: access-nginx-complex",
    ] {
        assert!(text.contains(step), "no {step:?} in\n{text}");
    }
    for file in [
        "kubectl create -f demo/seed0/1-alpha-deny.yaml",
        "kubectl create -f demo/seed0/2-access-nginx.yaml",
        "kubectl create -f demo/seed0/3-access-nginx-complex.yaml",
        "        - 10.63.48.4/32",
    ] {
        assert!(text.contains(file), "no {file:?} in\n{text}");
    }
    let agreed = text
        .matches("✓ matrix agrees with the Kubernetes semantics")
        .count();
    assert_eq!(agreed, 4, "every step's matrix must agree:\n{text}");
    assert!(!text.contains('✗'), "{text}");
    // The seed's point in step 4: beta's access pod gets in, default's does not, and the
    // excepted host stays out while its neighbour gets in.
    let step4 = &text[text.find("Step 4/4").expect("step 4")..];
    let row = |key: &str| -> Vec<&str> {
        step4
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no row {key} in step 4"))
            .split_whitespace()
            .collect()
    };
    assert_eq!(row("bac")[1..3], ["ok", "ok"], "beta/access -> nginx");
    assert_eq!(
        row("dac")[1..3],
        ["--", "--"],
        "default/access-default -> nginx"
    );
    assert_eq!(row("IN")[1..3], ["ok", "ok"], "10.63.48.10 -> nginx");
    assert_eq!(row("EXC")[1..3], ["--", "--"], "10.63.48.4 -> nginx");

    let prefix = format!("nfdemo-{}-", std::process::id());
    let left = ip(&["netns", "list"]);
    assert!(
        !left.lines().any(|l| l.starts_with(&prefix)),
        "namespaces left behind:\n{left}"
    );
    eprintln!("demo took {took:?}, {} lines", text.lines().count());
}

#[test]
fn rtnl_wires_a_pod_as_ip_would_and_ip_reads_it_back() {
    let node = Scratch::new("node");
    let pod = Scratch::new("pod");
    let mut n = Rtnl::open(&node.netns()).unwrap();
    n.add_veth("veth-pod", "eth0", &pod.netns()).unwrap();
    n.add_address("veth-pod", "169.254.1.1/32".parse().unwrap(), false)
        .unwrap();
    n.add_address("veth-pod", "fe80::1/64".parse().unwrap(), true)
        .unwrap();
    n.set_up("veth-pod").unwrap();
    let mut p = Rtnl::open(&pod.netns()).unwrap();
    p.set_up("lo").unwrap();
    p.add_address("eth0", "10.244.1.2/32".parse().unwrap(), false)
        .unwrap();
    p.add_address("eth0", "fd00:10:244:1::2/128".parse().unwrap(), true)
        .unwrap();
    p.set_up("eth0").unwrap();
    p.add_route(
        &Route::via(
            "0.0.0.0/0".parse().unwrap(),
            "169.254.1.1".parse().unwrap(),
            "eth0",
        )
        .onlink(),
    )
    .unwrap();
    p.add_route(&Route::via(
        "::/0".parse().unwrap(),
        "fe80::1".parse().unwrap(),
        "eth0",
    ))
    .unwrap();
    n.add_route(&Route::dev("10.244.1.2/32".parse().unwrap(), "veth-pod"))
        .unwrap();
    n.add_route(&Route::dev(
        "fd00:10:244:1::2/128".parse().unwrap(),
        "veth-pod",
    ))
    .unwrap();
    assert_eq!(
        p.link_index("eth0").unwrap().to_string(),
        ip(&["-n", &pod.0, "-o", "link", "show", "eth0"])
            .split(':')
            .next()
            .unwrap()
    );

    let pod_addrs = ip(&["-n", &pod.0, "addr", "show", "eth0"]);
    assert!(pod_addrs.contains("state UP"), "{pod_addrs}");
    assert!(pod_addrs.contains("inet 10.244.1.2/32"), "{pod_addrs}");
    assert!(
        pod_addrs.contains("inet6 fd00:10:244:1::2/128"),
        "{pod_addrs}"
    );
    let global6 = pod_addrs
        .lines()
        .find(|l| l.contains("fd00:10:244:1::2/128"))
        .unwrap();
    assert!(
        global6.contains("nodad") && !global6.contains("tentative"),
        "{global6}"
    );
    let node_addrs = ip(&["-n", &node.0, "addr", "show", "veth-pod"]);
    assert!(
        node_addrs.contains("link-netns"),
        "peer moved: {node_addrs}"
    );
    assert!(node_addrs.contains("inet 169.254.1.1/32"), "{node_addrs}");
    assert!(node_addrs.contains("inet6 fe80::1/64"), "{node_addrs}");
    let r4 = ip(&["-n", &pod.0, "-4", "route"]);
    assert!(
        r4.contains("default via 169.254.1.1 dev eth0 onlink"),
        "{r4}"
    );
    let r6 = ip(&["-n", &pod.0, "-6", "route"]);
    assert!(r6.contains("default via fe80::1 dev eth0"), "{r6}");
    let n4 = ip(&["-n", &node.0, "-4", "route"]);
    assert!(n4.contains("10.244.1.2 dev veth-pod scope link"), "{n4}");
    let n6 = ip(&["-n", &node.0, "-6", "route"]);
    assert!(n6.contains("fd00:10:244:1::2 dev veth-pod"), "{n6}");
}

#[test]
fn rtnl_errors_name_the_operation_the_link_and_the_namespace() {
    let node = Scratch::new("errs");
    let other = Scratch::new("other");
    let mut n = Rtnl::open(&node.netns()).unwrap();

    let e = n
        .add_address("eth9", "10.0.0.1/32".parse().unwrap(), false)
        .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.errno(), Some(libc::ENODEV), "{msg}");
    eprintln!("{msg}");
    for part in [
        "adding address 10.0.0.1/32 to link eth9",
        &node.0,
        "no link named eth9",
        "ENODEV",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg:?}");
    }

    let msg = n.set_up("nope0").unwrap_err().to_string();
    assert!(
        msg.contains("setting link nope0 up") && msg.contains("ENODEV"),
        "{msg}"
    );

    n.add_veth("dup0", "eth0", &other.netns()).unwrap();
    let e = n.add_veth("dup0", "eth1", &other.netns()).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.errno(), Some(libc::EEXIST), "{msg}");
    assert!(
        msg.contains("adding veth dup0") && msg.contains("EEXIST"),
        "{msg}"
    );

    // An onlink gateway on a link without carrier: the kernel says why in its extended
    // ACK, and the error quotes it.
    let e = n
        .add_route(
            &Route::via(
                "0.0.0.0/0".parse().unwrap(),
                "169.254.1.1".parse().unwrap(),
                "dup0",
            )
            .onlink(),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "adding route default via 169.254.1.1 dev dup0 onlink in network namespace"
        ),
        "{msg}"
    );
    assert!(msg.contains("(kernel: "), "no extended ACK text in {msg:?}");
    eprintln!("{msg}");

    let msg = n
        .add_veth("a-name-much-too-long", "eth0", &other.netns())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("a-name-much-too-long") && msg.contains("15 bytes"),
        "{msg}"
    );
}
