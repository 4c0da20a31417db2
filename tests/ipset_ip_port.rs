//! `hash:ip,port` sets (named ports) against the real kernel: netfence creates, fills, tests
//! and lists them; the `ipset` tool is the oracle for what the kernel holds; an xt `set`
//! match `dst,dst` on such a set, written by `iptables-nft` and by netfence, counts exactly
//! the packets whose (destination address, protocol, destination port) is a member.
//!
//! Every test makes its own network namespace and works only there. Needs root.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::ipset_oracle::*;
use common::Sandbox;
use netfilter::ipset::{
    CreateOptions, Exist, Family, Ipset, Member, SetListing, SetType, IPPROTO_UDPLITE,
    IPSET_ERR_BUSY, IPSET_ERR_EXIST, IPSET_ERR_HASH_FULL,
};
use netfilter::nft::{self, ChainSpec, Match, Op, Position, Rule, SetDir, Target, Transaction};
use netfilter::{Error, NetlinkSocket};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

fn ipp(ip: &str, protocol: u8, port: u16) -> Member {
    Member::IpPort {
        ip: ip.parse().unwrap(),
        protocol,
        port,
    }
}

fn ip(s: &str) -> Member {
    Member::Ip(s.parse().unwrap())
}

fn net(s: &str) -> Member {
    Member::net(s.parse().unwrap())
}

/// Entry `i` of a big IPv4 batch: 10.x.y.z, a protocol and a port that vary with `i`.
fn v4_entry(i: u32) -> Member {
    let protocol = [TCP, UDP, SCTP][i as usize % 3];
    Member::ip_port(
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
        protocol,
        1 + (i % 60_000) as u16,
    )
}

/// Entry `i` of a big IPv6 batch.
fn v6_entry(i: u32) -> Member {
    let protocol = [UDP, TCP][i as usize % 2];
    Member::ip_port(
        IpAddr::V6(Ipv6Addr::from(
            0xfd00_0000_0000_0000_0000_0000_0000_0000u128 | u128::from(i),
        )),
        protocol,
        (i % 7) as u16 * 1000,
    )
}

fn member_set(ms: &[Member]) -> BTreeSet<Member> {
    ms.iter().copied().collect()
}

fn tool_test(sb: &Sandbox, set: &str, m: &Member) -> bool {
    sb.run("ipset", &["test", set, &m.to_string()])
        .status
        .success()
}

#[test]
fn netfence_sets_list_as_ipset_lists_them() {
    let sb = Sandbox::new("ipp-mk");
    let mut ips = open(&sb);
    let custom = CreateOptions {
        hashsize: Some(2048),
        maxelem: Some(10_000),
        ..CreateOptions::default()
    };
    ips.create("nf-np4", SetType::HashIpPort, Family::Ipv4, &custom)
        .unwrap();
    ips.create(
        "nf-np6",
        SetType::HashIpPort,
        Family::Ipv6,
        &CreateOptions::default(),
    )
    .unwrap();
    let v4 = [
        ipp("10.0.0.1", TCP, 80),
        ipp("10.0.0.1", UDP, 80),
        ipp("10.0.0.1", TCP, 8080),
        ipp("10.0.0.2", SCTP, 9),
        ipp("10.0.0.3", TCP, 0),
        ipp("10.0.0.4", IPPROTO_UDPLITE, 7),
        ipp("192.168.1.1", UDP, 65535),
    ];
    ips.add("nf-np4", &v4, Exist::Fail).unwrap();
    let v6 = [
        ipp("fd00::1", UDP, 53),
        ipp("fd00::1", TCP, 53),
        ipp("2001:db8::7", SCTP, 3868),
        ipp("::ffff:10.0.0.1", TCP, 443),
    ];
    ips.add("nf-np6", &v6, Exist::Fail).unwrap();

    let ours = ips.list_all().unwrap();
    assert_eq!(ours.len(), 2);
    for (l, want, family) in [
        (&ours[0], &v4[..], Family::Ipv4),
        (&ours[1], &v6[..], Family::Ipv6),
    ] {
        let h = &l.header;
        assert_eq!(h.type_name, "hash:ip,port");
        assert_eq!(h.set_type, Some(SetType::HashIpPort));
        assert_eq!(h.family, Some(family));
        assert_eq!(
            h.revision, 7,
            "the newest revision both kernel 6.x and ipset 7.17 know"
        );
        assert_eq!(h.entries as usize, want.len());
        assert_eq!(member_set(&l.members), member_set(want), "lists back equal");
    }
    assert_eq!(
        (ours[0].header.hashsize, ours[0].header.maxelem),
        (Some(2048), Some(10_000))
    );

    // `ipset list`: header fields and members, set by set.
    let tool = normalize_list(&sb.sh("ipset", &["list"]));
    assert!(tool[0].contains("Revision: 7\n"), "{}", tool[0]);
    let mine: Vec<String> = ours.iter().map(render_list).collect();
    assert_eq!(mine, tool);
    assert_eq!(
        render_list(&ips.list("nf-np6").unwrap()),
        normalize_list(&sb.sh("ipset", &["list", "nf-np6"]))[0]
    );
    // `ipset save`, which `ipset restore` reads back.
    let script: Vec<String> = ours.iter().flat_map(render_save).collect();
    let mut mine = script.clone();
    mine.sort();
    assert_eq!(mine, sorted_lines(&sb.sh("ipset", &["save"])));
    // What netfence displays, the tool parses to the same entries.
    let sb2 = Sandbox::new("ipp-mk2");
    sb2.sh_stdin("ipset", &["restore"], &(script.join("\n") + "\n"));
    let mut again: Vec<SetListing> = open(&sb2).list_all().unwrap();
    for (a, b) in again.iter_mut().zip(&ours) {
        assert_eq!(member_set(&a.members), member_set(&b.members));
    }
    // The header alone agrees with the listing.
    assert_eq!(ips.header("nf-np4").unwrap(), ours[0].header);
}

#[test]
fn ipset_restored_sets_list_back_equal() {
    let sb = Sandbox::new("ipp-rs");
    let script = "\
create r-np4 hash:ip,port family inet hashsize 128 maxelem 500
add r-np4 192.0.2.1,tcp:80
add r-np4 192.0.2.1,udp:80
add r-np4 192.0.2.2,sctp:9
add r-np4 192.0.2.3,8080
create r-np6 hash:ip,port family inet6
add r-np6 2001:db8::1,udp:53
add r-np6 2001:db8::1,tcp:53
create r-icmp hash:ip,port family inet
add r-icmp 192.0.2.9,icmp:echo-request
add r-icmp 192.0.2.9,gre:0
";
    sb.sh_stdin("ipset", &["restore"], script);
    let mut ips = open(&sb);
    let all = ips.list_all().unwrap();
    assert_eq!(
        all.iter()
            .map(|l| l.header.name.as_str())
            .collect::<Vec<_>>(),
        ["r-np4", "r-np6", "r-icmp"]
    );
    assert_eq!(
        member_set(&all[0].members),
        member_set(&[
            ipp("192.0.2.1", TCP, 80),
            ipp("192.0.2.1", UDP, 80),
            ipp("192.0.2.2", SCTP, 9),
            // A bare port is TCP, as the tool reads it.
            ipp("192.0.2.3", TCP, 8080),
        ])
    );
    assert_eq!(
        member_set(&all[1].members),
        member_set(&[ipp("2001:db8::1", UDP, 53), ipp("2001:db8::1", TCP, 53)])
    );
    // The port protocols list and save exactly as the tool does.
    let tool = normalize_list(&sb.sh("ipset", &["list"]));
    assert_eq!(render_list(&all[0]), tool[0]);
    assert_eq!(render_list(&all[1]), tool[1]);
    // Entries netfence refuses to write still decode: ICMP keeps type << 8 | code where
    // the port would be, other protocols port 0.
    assert_eq!(
        member_set(&all[2].members),
        member_set(&[ipp("192.0.2.9", 1, 0x0800), ipp("192.0.2.9", 47, 0)])
    );
    // netfence tests what the tool restored.
    assert!(ips.test("r-np4", &ipp("192.0.2.1", UDP, 80)).unwrap());
    assert!(!ips.test("r-np4", &ipp("192.0.2.1", SCTP, 80)).unwrap());
    assert!(ips.test("r-np6", &ipp("2001:db8::1", TCP, 53)).unwrap());
}

#[test]
fn five_thousand_entries_in_one_call_v4_and_v6() {
    let sb = Sandbox::new("ipp-5k");
    let mut ips = open(&sb);
    let d = CreateOptions::default();
    ips.create("nf-np4", SetType::HashIpPort, Family::Ipv4, &d)
        .unwrap();
    ips.create("nf-np6", SetType::HashIpPort, Family::Ipv6, &d)
        .unwrap();
    // 5,000 IPv4 entries are 200 KB of elements: four messages of up to 1,638.
    let v4: Vec<Member> = (1..=5000).map(v4_entry).collect();
    let v6: Vec<Member> = (1..=5000).map(v6_entry).collect();
    assert_eq!(netfilter::ipset::wire::plan_adt(&v4).len(), 4);
    assert_eq!(netfilter::ipset::wire::plan_adt(&v6).len(), 4);
    for (set, all) in [("nf-np4", &v4), ("nf-np6", &v6)] {
        ips.add(set, all, Exist::Fail).unwrap();
        assert_eq!(entries(&sb, set), 5000);
        assert_eq!(members_by_tool(&sb, set), display_set(all), "{set}");
        let listed = ips.list(set).unwrap();
        assert_eq!(listed.members.len(), 5000);
        assert_eq!(member_set(&listed.members), member_set(all), "{set}");

        // Re-adding all is idempotent when asked; deleting the first 2,500 leaves the rest.
        ips.add(set, all, Exist::Ignore).unwrap();
        ips.del(set, &all[..2500], Exist::Fail).unwrap();
        assert_eq!(entries(&sb, set), 2500);
        assert_eq!(members_by_tool(&sb, set), display_set(&all[2500..]));
        assert!(!ips.test(set, &all[0]).unwrap());
        assert!(ips.test(set, &all[4999]).unwrap());
        // Deleting all, the missing half included, only with Exist::Ignore.
        let err = ips.del(set, all, Exist::Fail).unwrap_err();
        assert!(
            matches!(
                err,
                Error::IpsetPartial {
                    failed: 0,
                    applied: 0,
                    errno: IPSET_ERR_EXIST,
                    ..
                }
            ),
            "{err:?}"
        );
        ips.del(set, all, Exist::Ignore).unwrap();
        assert_eq!(entries(&sb, set), 0);
        assert!(ips.list(set).unwrap().members.is_empty());
    }
}

#[test]
fn a_full_set_fails_at_the_right_element_across_messages() {
    let sb = Sandbox::new("ipp-full");
    let mut ips = open(&sb);
    let opts = CreateOptions {
        maxelem: Some(4000),
        ..CreateOptions::default()
    };
    ips.create("nf-np", SetType::HashIpPort, Family::Ipv4, &opts)
        .unwrap();
    // The 4,001st entry is in the third message (1,638 per message).
    //
    // Where exactly the kernel stops is its business: once the table has grown past 1,024
    // buckets it counts elements per lock region and checks only the region an entry falls
    // in against its share of maxelem, summing all regions only when that region is at its
    // share (`mtype_add()`, `ip_set_hash_gen.h`). So a few entries past maxelem may go in,
    // depending on the set's random hash seed. What netfence guarantees is exact: the
    // element it names failed, and precisely the ones before it were applied.
    let all: Vec<Member> = (1..=5000).map(v4_entry).collect();
    let err = ips.add("nf-np", &all, Exist::Fail).unwrap_err();
    let Error::IpsetPartial {
        failed,
        applied,
        errno,
        ref element,
        ..
    } = err
    else {
        panic!("expected IpsetPartial, got {err:?}");
    };
    assert_eq!((failed, errno), (applied, IPSET_ERR_HASH_FULL));
    assert!((4000..3 * 1638).contains(&failed), "failed at {failed}");
    assert_eq!(element, &all[failed].to_string());
    assert!(err.to_string().contains("Hash is full"), "{err}");
    assert_eq!(entries(&sb, "nf-np") as usize, applied);
    assert_eq!(members_by_tool(&sb, "nf-np"), display_set(&all[..applied]));
}

#[test]
fn add_del_test_follow_membership() {
    let sb = Sandbox::new("ipp-adt");
    let mut ips = open(&sb);
    ips.create(
        "nf-np",
        SetType::HashIpPort,
        Family::Ipv4,
        &CreateOptions::default(),
    )
    .unwrap();
    let first = [
        ipp("10.1.0.1", TCP, 80),
        ipp("10.1.0.1", UDP, 53),
        ipp("10.1.0.2", SCTP, 9),
    ];
    ips.add("nf-np", &first, Exist::Fail).unwrap();

    // An entry is the triple: the same address with another protocol or port is not in.
    for (m, want) in [
        (ipp("10.1.0.1", TCP, 80), true),
        (ipp("10.1.0.1", UDP, 53), true),
        (ipp("10.1.0.2", SCTP, 9), true),
        (ipp("10.1.0.1", UDP, 80), false),
        (ipp("10.1.0.1", TCP, 81), false),
        (ipp("10.1.0.2", TCP, 9), false),
        (ipp("10.1.0.3", TCP, 80), false),
    ] {
        assert_eq!(ips.test("nf-np", &m).unwrap(), want, "{m}");
        assert_eq!(tool_test(&sb, "nf-np", &m), want, "ipset test {m}");
    }

    // A duplicate stops the batch there; the entry before it stays.
    let err = ips
        .add(
            "nf-np",
            &[
                ipp("10.1.0.9", TCP, 80),
                ipp("10.1.0.1", UDP, 53),
                ipp("10.1.0.8", TCP, 80),
            ],
            Exist::Fail,
        )
        .unwrap_err();
    let Error::IpsetPartial {
        failed,
        applied,
        errno,
        ref element,
        ..
    } = err
    else {
        panic!("expected IpsetPartial, got {err:?}");
    };
    assert_eq!(
        (failed, applied, errno, element.as_str()),
        (1, 1, IPSET_ERR_EXIST, "10.1.0.1,udp:53")
    );
    assert!(err.to_string().contains("already added"), "{err}");
    assert_eq!(entries(&sb, "nf-np"), 4);

    // Deleting: a missing entry stops the batch; with Exist::Ignore it is skipped.
    let del = [
        ipp("10.1.0.1", TCP, 80),
        ipp("10.1.0.1", TCP, 53),
        ipp("10.1.0.2", SCTP, 9),
    ];
    let err = ips.del("nf-np", &del, Exist::Fail).unwrap_err();
    assert!(
        matches!(
            err,
            Error::IpsetPartial {
                op: "deleting from",
                failed: 1,
                applied: 1,
                ..
            }
        ),
        "{err:?}"
    );
    ips.del("nf-np", &del, Exist::Ignore).unwrap();
    assert_eq!(
        members_by_tool(&sb, "nf-np"),
        display_set(&[ipp("10.1.0.1", UDP, 53), ipp("10.1.0.9", TCP, 80)])
    );
    assert_eq!(
        member_set(&ips.list("nf-np").unwrap().members),
        member_set(&[ipp("10.1.0.1", UDP, 53), ipp("10.1.0.9", TCP, 80)])
    );
}

#[test]
fn wrong_kinds_are_refused_and_apply_nothing() {
    let sb = Sandbox::new("ipp-kind");
    let mut ips = open(&sb);
    let d = CreateOptions::default();
    ips.create("nf-np", SetType::HashIpPort, Family::Ipv4, &d)
        .unwrap();
    ips.create("nf-ip", SetType::HashIp, Family::Ipv4, &d)
        .unwrap();
    ips.create("nf-net", SetType::HashNet, Family::Ipv4, &d)
        .unwrap();
    // The kernel refuses such a message as a whole (its type checks come before it reads
    // the element's line number) or at its first element: nothing is applied either way.
    let refused_at_0 = |r: Result<(), Error>| match r {
        Err(Error::IpsetPartial {
            failed: 0,
            applied: 0,
            ..
        })
        | Err(Error::Kernel { .. }) => eprintln!("{}", r.unwrap_err()),
        other => panic!("expected nothing applied, got {other:?}"),
    };

    // Addresses and networks lack the port hash:ip,port requires: refused, and a network
    // is never expanded into a range of addresses.
    refused_at_0(ips.add(
        "nf-np",
        &[net("10.0.0.0/30"), net("10.1.0.0/16")],
        Exist::Fail,
    ));
    refused_at_0(ips.add("nf-np", &[ip("10.0.0.1"), ip("10.0.0.2")], Exist::Fail));
    assert_eq!(entries(&sb, "nf-np"), 0);
    // TEST: a network fails to parse (hash:ip,port has no CADT_FLAGS in its policy); an
    // address parses but lacks the port, and the kernel answers every such element error
    // of a TEST with "not in set" (ip_set_utest()), so it reads as false, not as an error.
    assert!(ips.test("nf-np", &net("10.0.0.0/30")).is_err());
    assert!(!ips.test("nf-np", &ip("10.0.0.1")).unwrap());
    // Entries with ports don't fit hash:ip or hash:net sets.
    for set in ["nf-ip", "nf-net"] {
        refused_at_0(ips.add(set, &[ipp("10.0.0.1", TCP, 80)], Exist::Fail));
        assert_eq!(entries(&sb, set), 0);
        assert!(ips.test(set, &ipp("10.0.0.1", TCP, 80)).is_err());
    }
    // The other family.
    refused_at_0(ips.add("nf-np", &[ipp("fd00::1", TCP, 80)], Exist::Fail));

    // Refused before sending: mixed kinds, protocols without ports, the zero address.
    let before = sb.sh("ipset", &["save"]);
    for batch in [
        vec![ipp("10.0.0.1", TCP, 80), ip("10.0.0.2")],
        vec![ipp("10.0.0.1", TCP, 80), ipp("10.0.0.2", 1, 0x0800)],
        vec![ipp("10.0.0.1", 0, 80)],
        vec![ipp("0.0.0.0", TCP, 80)],
    ] {
        let e = ips.add("nf-np", &batch, Exist::Fail).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    }
    assert_eq!(sb.sh("ipset", &["save"]), before);
    // SetType::accepts is what a model checks before it ever reaches the kernel.
    assert!(SetType::HashIpPort.accepts(&ipp("10.0.0.1", TCP, 80)));
    assert!(!SetType::HashIpPort.accepts(&net("10.0.0.0/8")));
}

/// The set's kernel index to name map, for decoding dumped `-m set` rules.
fn set_names(ips: &mut Ipset) -> Vec<(u16, String)> {
    ips.list_all()
        .unwrap()
        .into_iter()
        .map(|l| (l.header.index.expect("protocol 7"), l.header.name))
        .collect()
}

/// `[packets:bytes]` of the first `iptables-nft-save -c` line ending in `rule`.
fn saved_packets(sb: &Sandbox, rule: &str) -> u64 {
    let save = sb.sh("iptables-nft-save", &["-c"]);
    let line = save
        .lines()
        .find(|l| l.ends_with(rule))
        .unwrap_or_else(|| panic!("no {rule:?} in\n{save}"));
    line[1..line.find(':').unwrap()].parse().unwrap()
}

#[test]
fn dst_dst_set_match_counts_exactly_the_members() {
    let sb = Sandbox::new("ipp-xt");
    sb.sh("ip", &["link", "set", "lo", "up"]);
    let mut ips = open(&sb);
    ips.create(
        "nf-np",
        SetType::HashIpPort,
        Family::Ipv4,
        &CreateOptions::default(),
    )
    .unwrap();
    ips.add(
        "nf-np",
        &[ipp("127.0.0.1", TCP, 8080), ipp("127.0.0.1", UDP, 53)],
        Exist::Fail,
    )
    .unwrap();

    // iptables-nft writes a rule that only counts (it jumps to an empty chain and comes
    // back), then netfence appends its own rule on the same set to the chain iptables-nft
    // made.
    sb.sh("iptables-nft", &["-N", "nf-count"]);
    sb.sh(
        "iptables-nft",
        &[
            "-A",
            "OUTPUT",
            "-m",
            "set",
            "--match-set",
            "nf-np",
            "dst,dst",
            "-j",
            "nf-count",
        ],
    );
    let ours = Rule {
        matches: vec![
            Match::Set {
                negate: false,
                name: "nf-np".into(),
                dirs: vec![SetDir::Dst, SetDir::Dst],
            },
            Match::Comment("nf:named-port".into()),
        ],
        ..Rule::new(Target::Accept)
    };
    let mut sock = NetlinkSocket::open(&sb.netns()).unwrap();
    let mut tx = Transaction::new();
    let add = tx.push(Op::AddRule {
        family: Family::Ipv4,
        table: "filter".into(),
        chain: "OUTPUT".into(),
        rule: ours.clone(),
        position: Position::Append,
    });
    let index_of = |name: &str| -> Result<u16, Error> {
        let mut ips = Ipset::open(&sb.netns())?;
        ips.index_of(name)
    };
    let done = tx.commit(&mut sock, None, &index_of).unwrap();
    let handle = done.handles[add].expect("echoed handle");

    // Both rules reference the set; iptables-nft reads netfence's rule back.
    assert_eq!(ips.header("nf-np").unwrap().references, 2);
    let theirs_line = "-A OUTPUT -m set --match-set nf-np dst,dst -j nf-count";
    let ours_line = format!("-A OUTPUT {}", ours.to_iptables(Family::Ipv4));
    assert_eq!(
        ours_line,
        "-A OUTPUT -m set --match-set nf-np dst,dst -m comment --comment \"nf:named-port\" -j ACCEPT"
    );
    let save = sb.sh("iptables-nft-save", &[]);
    assert!(!save.contains("incompatible"), "{save}");
    assert!(save.lines().any(|l| l == theirs_line), "{save}");
    assert!(save.lines().any(|l| l == ours_line), "{save}");
    // netfence decodes both, its own rule to what it wrote.
    let names = set_names(&mut ips);
    let by_index = |i: u16| names.iter().find(|(n, _)| *n == i).map(|(_, s)| s.clone());
    let dumped =
        nft::list_rules(&mut sock, Family::Ipv4, "filter", Some("OUTPUT"), &by_index).unwrap();
    assert_eq!(dumped.len(), 2);
    assert_eq!(dumped[1].handle, handle);
    assert_eq!(dumped[1].rule.as_ref(), Some(&ours));
    assert_eq!(
        dumped[0].rule,
        Some(Rule {
            matches: vec![Match::Set {
                negate: false,
                name: "nf-np".into(),
                dirs: vec![SetDir::Dst, SetDir::Dst],
            }],
            ..Rule::new(Target::Jump("nf-count".into()))
        })
    );

    // Real packets: a TCP SYN to 127.0.0.1:8080 and a UDP datagram to 127.0.0.1:53 are
    // members; UDP to 8080, TCP to 53 or 8081, and anything to 127.0.0.2 are not. (The RST
    // and ICMP answers go out to the client's port, which is not in the set either.)
    let send = |what: &str| {
        // A refused connection is expected; only the packet matters.
        let _ = sb.run("bash", &["-c", &format!("echo x > /dev/{what}")]);
    };
    for what in [
        "tcp/127.0.0.1/8080",
        "udp/127.0.0.1/53",
        "udp/127.0.0.1/8080",
        "tcp/127.0.0.1/53",
        "tcp/127.0.0.1/8081",
        "tcp/127.0.0.2/8080",
        "udp/127.0.0.2/53",
    ] {
        send(what);
    }
    assert_eq!(saved_packets(&sb, theirs_line), 2);
    assert_eq!(saved_packets(&sb, &ours_line), 2);
    let dumped =
        nft::list_rules(&mut sock, Family::Ipv4, "filter", Some("OUTPUT"), &by_index).unwrap();
    assert_eq!(dumped[1].counters.0, 2);

    // Membership changes take effect at once, without touching a rule.
    ips.add("nf-np", &[ipp("127.0.0.2", TCP, 8080)], Exist::Fail)
        .unwrap();
    ips.del("nf-np", &[ipp("127.0.0.1", UDP, 53)], Exist::Fail)
        .unwrap();
    send("tcp/127.0.0.2/8080");
    send("udp/127.0.0.1/53");
    assert_eq!(saved_packets(&sb, &ours_line), 3);

    // A referenced set can't be destroyed.
    let busy = ips.destroy("nf-np", Exist::Fail).unwrap_err();
    assert_eq!(busy.errno(), Some(IPSET_ERR_BUSY), "{busy}");
}

#[test]
fn dst_dst_rule_is_the_one_iptables_nft_writes() {
    for (family, restore, other) in [
        (Family::Ipv4, "iptables-nft-restore", Family::Ipv6),
        (Family::Ipv6, "ip6tables-nft-restore", Family::Ipv4),
    ] {
        let oracle = Sandbox::new("ipp-go");
        let mine = Sandbox::new("ipp-gn");
        // Same sets in the same order in both namespaces: same kernel indexes. The first
        // set is of the other family, so that the index in the rule is not 0.
        for sb in [&oracle, &mine] {
            let mut ips = open(sb);
            ips.create("nf-other", SetType::HashIpPort, other, &Default::default())
                .unwrap();
            ips.create("nf-np", SetType::HashIpPort, family, &Default::default())
                .unwrap();
        }
        let rule = Rule {
            matches: vec![
                Match::Set {
                    negate: false,
                    name: "nf-np".into(),
                    dirs: vec![SetDir::Dst, SetDir::Dst],
                },
                Match::Comment("nf:np".into()),
            ],
            ..Rule::new(Target::Accept)
        };
        let line = rule.to_iptables(family);
        oracle.sh_stdin(
            restore,
            &[],
            &format!("*filter\n:nf-np-chain - [0:0]\n-A nf-np-chain {line}\nCOMMIT\n"),
        );
        let mut sock = NetlinkSocket::open(&mine.netns()).unwrap();
        let mut ips = open(&mine);
        let index = ips.index_of("nf-np").unwrap();
        assert_eq!(index, 1);
        let mut tx = Transaction::new();
        tx.push(Op::AddTable {
            family,
            table: "filter".into(),
        });
        tx.push(Op::AddChain {
            family,
            table: "filter".into(),
            chain: ChainSpec {
                name: "nf-np-chain".into(),
                base: None,
            },
        });
        tx.push(Op::AddRule {
            family,
            table: "filter".into(),
            chain: "nf-np-chain".into(),
            rule,
            position: Position::Append,
        });
        let sets = |name: &str| -> Result<u16, Error> {
            if name == "nf-np" {
                Ok(index)
            } else {
                Err(Error::Invalid {
                    object: format!("set {name}"),
                    reason: "not in this test".into(),
                })
            }
        };
        tx.commit(&mut sock, None, &sets).unwrap();
        assert_eq!(oracle.netlink_dump(), mine.netlink_dump(), "{family}");
    }
}
