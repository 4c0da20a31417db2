//! `hash:net,iface` sets (anti-spoofing) against the real kernel: netfence creates, fills,
//! tests and lists them, and the `ipset` tool is the oracle for what the kernel holds and
//! for what an element means. The ruleset model's lookup agrees with the kernel's on every
//! probe, including the two kernel facts that shaped the compiler's anti-spoofing layout:
//! an entry for the same network on *another* interface ends the search at that prefix
//! length, and the interface is not part of the hash key, so one network on many
//! interfaces fills one bucket.
//!
//! Every test makes its own network namespace and works only there. Needs root.

mod common;

use std::collections::BTreeSet;

use common::ipset_oracle::*;
use common::Sandbox;
use netfilter::ipset::{CreateOptions, Exist, Family, IfName, Member, SetType};
use ruleset::{IpSet, Polarity};

fn ni(net: &str, iface: &str, nomatch: bool) -> Member {
    Member::NetIface {
        net: net.parse().unwrap(),
        iface: IfName::new(iface).unwrap(),
        nomatch,
    }
}

fn tool_test(sb: &Sandbox, set: &str, entry: &str) -> bool {
    sb.run("ipset", &["test", set, entry]).status.success()
}

#[test]
fn net_iface_sets_list_test_and_save_as_the_tool_does() {
    let sb = Sandbox::new("nif");
    let mut ips = open(&sb);
    let opts = CreateOptions::default();
    ips.create("nf-spoof4", SetType::HashNetIface, Family::Ipv4, &opts)
        .unwrap();
    ips.create("nf-spoof6", SetType::HashNetIface, Family::Ipv6, &opts)
        .unwrap();
    let v4 = [
        ni("0.0.0.0/1", "vpod-a", false),
        ni("128.0.0.0/1", "vpod-a", false),
        ni("10.0.0.5/32", "vpod-a", true),
        ni("0.0.0.0/1", "cali0123456789a", false),
        ni("128.0.0.0/1", "cali0123456789a", false),
        ni("10.0.0.6/32", "cali0123456789a", true),
        ni("192.168.0.0/16", "eth1", false),
    ];
    let v6 = [
        ni("::/1", "vpod-a", false),
        ni("8000::/1", "vpod-a", false),
        ni("fd00::5/128", "vpod-a", true),
    ];
    ips.add("nf-spoof4", &v4, Exist::Fail).unwrap();
    ips.add("nf-spoof6", &v6, Exist::Fail).unwrap();
    // A batch of another kind, or a /0, is refused before anything is sent.
    assert!(ips
        .add("nf-spoof4", &[ni("0.0.0.0/0", "x", false)], Exist::Fail)
        .is_err());

    let ours = ips.list_all().unwrap();
    let want: [BTreeSet<Member>; 2] = [v4.into_iter().collect(), v6.into_iter().collect()];
    for (l, want) in ours.iter().zip(&want) {
        assert_eq!(l.header.set_type, Some(SetType::HashNetIface));
        assert_eq!(l.header.revision, 8);
        assert_eq!(&l.members.iter().copied().collect::<BTreeSet<_>>(), want);
    }
    // The header-only dump says the same sizes.
    let headers = ips.headers().unwrap();
    assert_eq!(
        headers
            .iter()
            .map(|h| (h.name.as_str(), h.entries))
            .collect::<Vec<_>>(),
        [("nf-spoof4", 7), ("nf-spoof6", 3)]
    );
    assert_eq!(headers[0], ours[0].header);
    let tool = normalize_list(&sb.sh("ipset", &["list"]));
    let mine: Vec<String> = ours.iter().map(render_list).collect();
    assert_eq!(mine, tool);
    let mut saved: Vec<String> = ours.iter().flat_map(render_save).collect();
    saved.sort();
    assert_eq!(saved, sorted_lines(&sb.sh("ipset", &["save"])));

    // What the entries mean, asked of the kernel by the tool and by netfence, and of the
    // model.
    let mut model = IpSet::new(Family::Ipv4, SetType::HashNetIface, Polarity::Restricts);
    for m in v4 {
        model.insert(m).unwrap();
    }
    for (addr, iface, hit) in [
        ("10.0.0.5", "vpod-a", false), // its nomatch
        // The quirk: 10.0.0.6/32 exists (as cali's nomatch), so the /1 of vpod-a is
        // never tried. Hence the compiler's two sets instead of nomatch members.
        ("10.0.0.6", "vpod-a", false),
        ("10.0.0.7", "vpod-a", true), // no /32 entry anywhere: the /1 decides
        ("200.1.1.1", "vpod-a", true),
        ("10.0.0.6", "cali0123456789a", false),
        ("10.0.0.7", "cali0123456789a", true),
        ("10.0.0.7", "vpod-b", false),
        ("192.168.3.4", "eth1", true),
        ("192.169.3.4", "eth1", false),
    ] {
        let entry = format!("{addr},{iface}");
        let member = ni(&format!("{addr}/32"), iface, false);
        assert_eq!(tool_test(&sb, "nf-spoof4", &entry), hit, "tool: {entry}");
        assert_eq!(ips.test("nf-spoof4", &member).unwrap(), hit, "{entry}");
        let (a, i) = (addr.parse().unwrap(), IfName::new(iface).unwrap());
        assert_eq!(model.matches_net_iface(a, &i), hit, "model: {entry}");
    }
    assert!(!tool_test(&sb, "nf-spoof6", "fd00::5,vpod-a"));
    assert!(tool_test(&sb, "nf-spoof6", "fd00::6,vpod-a"));

    // Deleting an exception: the halves decide again.
    ips.del("nf-spoof4", &[v4[2]], Exist::Fail).unwrap();
    assert!(tool_test(&sb, "nf-spoof4", "10.0.0.5,vpod-a"));
    assert_eq!(entries(&sb, "nf-spoof4"), 6);
}

#[test]
fn tool_restored_net_iface_sets_decode() {
    let sb = Sandbox::new("nif-rs");
    sb.sh_stdin(
        "ipset",
        &["restore"],
        "create s4 hash:net,iface family inet\n\
         add s4 10.0.0.0/8,eth0\n\
         add s4 10.1.2.3,veth12 nomatch\n\
         create s6 hash:net,iface family inet6\n\
         add s6 fd00::/64,eth0 nomatch\n",
    );
    let all = open(&sb).list_all().unwrap();
    let got: Vec<BTreeSet<Member>> = all
        .iter()
        .map(|l| l.members.iter().copied().collect())
        .collect();
    assert_eq!(
        got,
        vec![
            [
                ni("10.0.0.0/8", "eth0", false),
                ni("10.1.2.3/32", "veth12", true)
            ]
            .into_iter()
            .collect(),
            [ni("fd00::/64", "eth0", true)].into_iter().collect(),
        ]
    );
}

#[test]
fn one_network_on_many_interfaces_fills_one_bucket() {
    let sb = Sandbox::new("nif-full");
    let mut ips = open(&sb);
    ips.create(
        "nf-halves",
        SetType::HashNetIface,
        Family::Ipv4,
        &CreateOptions::default(),
    )
    .unwrap();
    // The same /1 on interface after interface: "every address on X" for many pods.
    let mut added = 0;
    let err = loop {
        let m = ni("0.0.0.0/1", &format!("cali{added}"), false);
        match ips.add("nf-halves", &[m], Exist::Fail) {
            Ok(()) => added += 1,
            Err(e) => break e,
        }
        assert!(added < 1000, "no limit found");
    };
    assert_eq!(added, 64, "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    // Distinct networks, one per interface (the pod-sources set), don't collide.
    let sources: Vec<Member> = (0..1000u32)
        .map(|i| {
            ni(
                &format!("10.{}.{}.1/32", i / 250, i % 250),
                &format!("cali{i}"),
                false,
            )
        })
        .collect();
    ips.create(
        "nf-sources",
        SetType::HashNetIface,
        Family::Ipv4,
        &CreateOptions::default(),
    )
    .unwrap();
    ips.add("nf-sources", &sources, Exist::Fail).unwrap();
    assert_eq!(entries(&sb, "nf-sources"), 1000);
}
