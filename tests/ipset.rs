//! ipset over netlink against the real kernel, with the `ipset` tool as the oracle.
//!
//! Every test makes its own network namespace (sets live per namespace) and works only
//! there. Needs root.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use common::ipset_oracle::*;
use common::Sandbox;
use ipnet::IpNet;
use netfilter::ipset::{
    CreateOptions, Exist, Family, Member, SetType, IPSET_ERR_EXIST, IPSET_ERR_HASH_FULL,
};
use netfilter::Error;

fn ip(s: &str) -> Member {
    Member::Ip(s.parse().unwrap())
}

fn net(s: &str) -> Member {
    Member::net(s.parse().unwrap())
}

fn nomatch(s: &str) -> Member {
    Member::nomatch(s.parse().unwrap())
}

fn v4(i: u32) -> Member {
    Member::Ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
}

#[test]
fn protocol_7_is_agreed() {
    let sb = Sandbox::new("ips-proto");
    let ips = open(&sb);
    assert_eq!(ips.protocol(), 7);
}

#[test]
fn what_netfence_creates_ipset_lists_identically() {
    let sb = Sandbox::new("ips-mk");
    let mut ips = open(&sb);
    let custom = CreateOptions {
        hashsize: Some(4096),
        maxelem: Some(100_000),
        ..CreateOptions::default()
    };
    ips.create("nf-ip4", SetType::HashIp, Family::Ipv4, &custom)
        .unwrap();
    ips.create(
        "nf-ip6",
        SetType::HashIp,
        Family::Ipv6,
        &CreateOptions::default(),
    )
    .unwrap();
    ips.create(
        "nf-net4",
        SetType::HashNet,
        Family::Ipv4,
        &CreateOptions::default(),
    )
    .unwrap();
    let small = CreateOptions {
        hashsize: Some(64),
        maxelem: Some(1000),
        ..CreateOptions::default()
    };
    ips.create("nf-net6", SetType::HashNet, Family::Ipv6, &small)
        .unwrap();

    let ip4: Vec<Member> = (1..=300).map(v4).collect();
    ips.add("nf-ip4", &ip4, Exist::Fail).unwrap();
    let ip6 = [ip("2001:db8::1"), ip("2001:db8::2"), ip("fd00::a:b")];
    ips.add("nf-ip6", &ip6, Exist::Fail).unwrap();
    let net4 = [
        net("10.0.0.0/8"),
        nomatch("10.1.0.0/16"),
        net("192.168.7.7/32"),
        nomatch("10.1.2.0/24"),
    ];
    ips.add("nf-net4", &net4, Exist::Fail).unwrap();
    let net6 = [
        net("2001:db8::/32"),
        nomatch("2001:db8:1::/48"),
        net("fd00::1/128"),
    ];
    ips.add("nf-net6", &net6, Exist::Fail).unwrap();

    let ours = ips.list_all().unwrap();
    assert_eq!(
        ours.iter()
            .map(|l| l.header.name.as_str())
            .collect::<Vec<_>>(),
        ["nf-ip4", "nf-ip6", "nf-net4", "nf-net6"]
    );
    let h = &ours[0].header;
    assert_eq!(h.set_type, Some(SetType::HashIp));
    assert_eq!(
        (h.hashsize, h.maxelem, h.entries),
        (Some(4096), Some(100_000), 300)
    );
    assert_eq!(ours[3].header.hashsize, Some(64));
    assert_eq!(ours[3].header.family, Some(Family::Ipv6));
    assert_eq!(display_set(&ours[2].members), display_set(&net4));
    assert!(ours[2].members.contains(&nomatch("10.1.0.0/16")));

    // `ipset list`, header fields and members, set by set.
    let tool = normalize_list(&sb.sh("ipset", &["list"]));
    let mine: Vec<String> = ours.iter().map(render_list).collect();
    assert_eq!(mine, tool);
    // One set by name, as netfence lists it alone.
    let one = ips.list("nf-net6").unwrap();
    assert_eq!(
        render_list(&one),
        normalize_list(&sb.sh("ipset", &["list", "nf-net6"]))[0]
    );
    // `ipset save`.
    let mine: Vec<String> = {
        let mut v: Vec<String> = ours.iter().flat_map(render_save).collect();
        v.sort();
        v
    };
    assert_eq!(mine, sorted_lines(&sb.sh("ipset", &["save"])));
    // Names.
    assert_eq!(
        ips.list_names().unwrap(),
        sorted_lines(&sb.sh("ipset", &["list", "-n"]))
    );
    // The header alone agrees with the full listing.
    let mut hdr = ips.header("nf-ip4").unwrap();
    assert_eq!(hdr, ours[0].header);
    hdr.entries = 0;
    assert_ne!(hdr, ours[0].header);
}

#[test]
fn what_ipset_restores_netfence_lists_identically() {
    let sb = Sandbox::new("ips-rs");
    let script = "\
create r-ip4 hash:ip family inet hashsize 2048 maxelem 5000
add r-ip4 192.0.2.1
add r-ip4 192.0.2.200
add r-ip4 198.51.100.7
create r-ip6 hash:ip family inet6 hashsize 1024 maxelem 65536
add r-ip6 2001:db8::7
add r-ip6 ::ffff:10.0.0.1
create r-net4 hash:net family inet hashsize 128 maxelem 70
add r-net4 172.16.0.0/12
add r-net4 172.16.5.0/24 nomatch
add r-net4 172.16.5.5 nomatch
add r-net4 203.0.113.0/25
create r-net6 hash:net family inet6
add r-net6 2001:db8::/32
add r-net6 2001:db8:aaaa::/64 nomatch
add r-net6 2001:db8:aaaa::1
";
    sb.sh_stdin("ipset", &["restore"], script);
    let mut ips = open(&sb);
    assert_eq!(
        ips.list_names().unwrap(),
        ["r-ip4", "r-ip6", "r-net4", "r-net6"]
    );
    let all = ips.list_all().unwrap();
    let mine: Vec<String> = all.iter().map(render_list).collect();
    assert_eq!(mine, normalize_list(&sb.sh("ipset", &["list"])));
    let mut save: Vec<String> = all.iter().flat_map(render_save).collect();
    save.sort();
    assert_eq!(save, sorted_lines(&sb.sh("ipset", &["save"])));

    let h = &all[2].header;
    assert_eq!(h.type_name, "hash:net");
    assert_eq!(
        (h.family, h.hashsize, h.maxelem, h.entries),
        (Some(Family::Ipv4), Some(128), Some(70), 4)
    );
    let m: BTreeSet<Member> = all[2].members.iter().copied().collect();
    let want: BTreeSet<Member> = [
        net("172.16.0.0/12"),
        nomatch("172.16.5.0/24"),
        nomatch("172.16.5.5/32"),
        net("203.0.113.0/25"),
    ]
    .into_iter()
    .collect();
    assert_eq!(m, want);
    let m: BTreeSet<Member> = all[1].members.iter().copied().collect();
    assert_eq!(
        m,
        [ip("2001:db8::7"), ip("::ffff:10.0.0.1")]
            .into_iter()
            .collect()
    );
    assert_eq!(all[0].header.set_type, Some(SetType::HashIp));
}

#[test]
fn hundred_thousand_elements_in_one_call() {
    let sb = Sandbox::new("ips-100k");
    let mut ips = open(&sb);
    let opts = CreateOptions {
        maxelem: Some(200_000),
        hashsize: Some(65536),
        ..CreateOptions::default()
    };
    ips.create("nf-big", SetType::HashIp, Family::Ipv4, &opts)
        .unwrap();
    let members: Vec<Member> = (1..=100_000).map(v4).collect();

    let t = Instant::now();
    ips.add("nf-big", &members, Exist::Fail).unwrap();
    let add = t.elapsed();
    assert_eq!(entries(&sb, "nf-big"), 100_000);
    assert_eq!(ips.header("nf-big").unwrap().entries, 100_000);
    let listed = ips.list("nf-big").unwrap();
    assert_eq!(listed.members.len(), 100_000);
    assert_eq!(
        listed.members.iter().copied().collect::<BTreeSet<_>>(),
        members.iter().copied().collect::<BTreeSet<_>>()
    );
    // The tool agrees on every member.
    assert_eq!(members_by_tool(&sb, "nf-big"), display_set(&members));

    // Idempotent re-add of all of them, then delete all in one call.
    ips.add("nf-big", &members, Exist::Ignore).unwrap();
    let t = Instant::now();
    ips.del("nf-big", &members, Exist::Fail).unwrap();
    let del = t.elapsed();
    assert_eq!(entries(&sb, "nf-big"), 0);
    assert!(ips.list("nf-big").unwrap().members.is_empty());
    eprintln!("100k IPv4: add {add:?}, del {del:?}");
}

#[test]
fn full_set_fails_at_the_first_element_over_maxelem() {
    let sb = Sandbox::new("ips-full");
    let mut ips = open(&sb);
    let opts = CreateOptions {
        maxelem: Some(10),
        ..CreateOptions::default()
    };
    ips.create("nf-small", SetType::HashIp, Family::Ipv4, &opts)
        .unwrap();
    let members: Vec<Member> = (1..=15).map(v4).collect();
    let err = ips.add("nf-small", &members, Exist::Fail).unwrap_err();
    match &err {
        Error::IpsetPartial {
            op,
            set,
            failed,
            element,
            applied,
            errno,
        } => {
            assert_eq!((*op, set.as_str()), ("adding to", "nf-small"));
            assert_eq!((*failed, *applied), (10, 10));
            assert_eq!(element, "10.0.0.11");
            assert_eq!(*errno, IPSET_ERR_HASH_FULL);
        }
        e => panic!("expected IpsetPartial, got {e:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("adding to set nf-small: element #10 (10.0.0.11) failed"),
        "{text}"
    );
    assert!(text.contains("Hash is full"), "{text}");
    assert!(
        text.contains("10 element(s) before it were applied"),
        "{text}"
    );
    assert_eq!(
        members_by_tool(&sb, "nf-small"),
        display_set(&members[..10])
    );
}

#[test]
fn failure_in_a_later_message_counts_across_messages() {
    let sb = Sandbox::new("ips-split");
    let mut ips = open(&sb);
    let opts = CreateOptions {
        maxelem: Some(4000),
        ..CreateOptions::default()
    };
    ips.create("nf-split", SetType::HashIp, Family::Ipv4, &opts)
        .unwrap();
    // 6,000 addresses are three messages (2,730 each); the 4,001st fails in the second.
    let members: Vec<Member> = (1..=6000).map(v4).collect();
    let err = ips.add("nf-split", &members, Exist::Fail).unwrap_err();
    let Error::IpsetPartial {
        failed,
        applied,
        errno,
        ..
    } = err
    else {
        panic!("expected IpsetPartial, got {err:?}");
    };
    // Past 1,024 buckets the kernel counts elements per lock region (mtype_add() in
    // ip_set_hash_gen.h), so a few more than maxelem may get in, depending on the set's
    // random seed. What netfence guarantees: the element named failed, in the second
    // message, and exactly the elements before it were applied.
    assert_eq!(errno, IPSET_ERR_HASH_FULL);
    assert!((4000..4100).contains(&failed), "failed at {failed}");
    assert!(failed >= 2730, "the failure is in the second message");
    assert_eq!(applied, failed);
    assert_eq!(entries(&sb, "nf-split"), failed as u32);
    assert_eq!(
        members_by_tool(&sb, "nf-split"),
        display_set(&members[..failed])
    );
}

#[test]
fn existing_and_missing_elements_fail_unless_ignored() {
    let sb = Sandbox::new("ips-exist");
    let mut ips = open(&sb);
    ips.create(
        "nf-e",
        SetType::HashIp,
        Family::Ipv4,
        &CreateOptions::default(),
    )
    .unwrap();
    let abcd = [
        ip("10.0.0.1"),
        ip("10.0.0.2"),
        ip("10.0.0.3"),
        ip("10.0.0.4"),
    ];
    ips.add("nf-e", &abcd, Exist::Fail).unwrap();

    // Re-adding: the first new one goes in, then the duplicate stops the batch.
    let err = ips
        .add(
            "nf-e",
            &[ip("10.0.0.9"), ip("10.0.0.2"), ip("10.0.0.8")],
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
        (1, 1, IPSET_ERR_EXIST, "10.0.0.2")
    );
    assert!(err.to_string().contains("already added"), "{err}");
    assert_eq!(entries(&sb, "nf-e"), 5);
    ips.add(
        "nf-e",
        &[ip("10.0.0.9"), ip("10.0.0.2"), ip("10.0.0.8")],
        Exist::Ignore,
    )
    .unwrap();
    assert_eq!(entries(&sb, "nf-e"), 6);

    // Deleting a missing element stops the batch there.
    let err = ips
        .del(
            "nf-e",
            &[ip("10.0.0.1"), ip("10.0.0.77"), ip("10.0.0.3")],
            Exist::Fail,
        )
        .unwrap_err();
    let Error::IpsetPartial {
        op,
        failed,
        applied,
        errno,
        ..
    } = err
    else {
        panic!("expected IpsetPartial, got {err:?}");
    };
    assert_eq!(
        (op, failed, applied, errno),
        ("deleting from", 1, 1, IPSET_ERR_EXIST)
    );
    let held = members_by_tool(&sb, "nf-e");
    assert_eq!(
        held,
        display_set(&[
            ip("10.0.0.2"),
            ip("10.0.0.3"),
            ip("10.0.0.4"),
            ip("10.0.0.8"),
            ip("10.0.0.9")
        ])
    );
    // With Exist::Ignore the missing one is skipped and the rest goes.
    ips.del(
        "nf-e",
        &[ip("10.0.0.1"), ip("10.0.0.77"), ip("10.0.0.3")],
        Exist::Ignore,
    )
    .unwrap();
    assert_eq!(
        members_by_tool(&sb, "nf-e"),
        display_set(&[
            ip("10.0.0.2"),
            ip("10.0.0.4"),
            ip("10.0.0.8"),
            ip("10.0.0.9")
        ])
    );
}

#[test]
fn wrong_family_or_kind_or_missing_set_applies_nothing() {
    let sb = Sandbox::new("ips-fam");
    let mut ips = open(&sb);
    ips.create(
        "nf-v4",
        SetType::HashIp,
        Family::Ipv4,
        &CreateOptions::default(),
    )
    .unwrap();
    ips.create(
        "nf-n4",
        SetType::HashNet,
        Family::Ipv4,
        &CreateOptions::default(),
    )
    .unwrap();

    // IPv6 addresses into an inet set: the kernel refuses the first element.
    let err = ips
        .add(
            "nf-v4",
            &[ip("2001:db8::1"), ip("2001:db8::2")],
            Exist::Fail,
        )
        .unwrap_err();
    match &err {
        Error::IpsetPartial {
            failed: 0,
            applied: 0,
            ..
        } => {}
        e => panic!("expected a failure at element 0, got {e:?}"),
    }
    assert_eq!(entries(&sb, "nf-v4"), 0);

    // Networks into a hash:ip set are refused, not added as ranges.
    let err = ips
        .add(
            "nf-v4",
            &[net("10.0.0.0/30"), net("10.1.0.0/16")],
            Exist::Fail,
        )
        .unwrap_err();
    assert!(err.to_string().contains("adding to set nf-v4"), "{err}");
    assert_eq!(entries(&sb, "nf-v4"), 0);
    assert!(ips.test("nf-v4", &net("10.0.0.0/30")).is_err());
    // Addresses into a hash:net set are host networks.
    ips.add("nf-n4", &[ip("10.9.9.9")], Exist::Fail).unwrap();
    assert_eq!(
        members_by_tool(&sb, "nf-n4"),
        display_set(&[ip("10.9.9.9")])
    );

    // No such set: one error naming it, nothing partial.
    let err = ips
        .add("nf-nope", &[ip("10.0.0.1")], Exist::Fail)
        .unwrap_err();
    match &err {
        Error::Kernel { errno, .. } => assert_eq!(*errno, libc::ENOENT),
        e => panic!("expected Kernel, got {e:?}"),
    }
    assert!(err.to_string().contains("adding to set nf-nope"), "{err}");
    assert!(
        err.to_string()
            .contains("The set with the given name does not exist"),
        "{err}"
    );
}

#[test]
fn destroy_flush_rename_swap_test() {
    let sb = Sandbox::new("ips-ops");
    let mut ips = open(&sb);
    let d = CreateOptions::default();
    ips.create("nf-a", SetType::HashNet, Family::Ipv4, &d)
        .unwrap();
    ips.create("nf-b", SetType::HashNet, Family::Ipv4, &d)
        .unwrap();
    ips.add(
        "nf-a",
        &[net("10.0.0.0/8"), nomatch("10.1.0.0/16")],
        Exist::Fail,
    )
    .unwrap();
    ips.add("nf-b", &[net("192.168.0.0/16")], Exist::Fail)
        .unwrap();

    // test: an address inside, one in the nomatch hole, the hole itself, one outside.
    assert!(ips.test("nf-a", &ip("10.2.3.4")).unwrap());
    assert!(!ips.test("nf-a", &ip("10.1.3.4")).unwrap());
    assert!(ips.test("nf-a", &nomatch("10.1.0.0/16")).unwrap());
    assert!(ips.test("nf-a", &net("10.0.0.0/8")).unwrap());
    assert!(!ips.test("nf-a", &ip("11.0.0.1")).unwrap());
    // The tool agrees.
    assert!(sb
        .run("ipset", &["test", "nf-a", "10.2.3.4"])
        .status
        .success());
    assert!(!sb
        .run("ipset", &["test", "nf-a", "10.1.3.4"])
        .status
        .success());

    // Create is idempotent only when asked and only for the same set.
    let again = ips
        .create("nf-a", SetType::HashNet, Family::Ipv4, &d)
        .unwrap_err();
    assert_eq!(again.errno(), Some(libc::EEXIST));
    assert!(
        again
            .to_string()
            .contains("set with the same name already exists"),
        "{again}"
    );
    let ignore = CreateOptions {
        exist: Exist::Ignore,
        ..d
    };
    ips.create("nf-a", SetType::HashNet, Family::Ipv4, &ignore)
        .unwrap();
    let other = CreateOptions {
        maxelem: Some(7),
        ..ignore
    };
    assert!(ips
        .create("nf-a", SetType::HashNet, Family::Ipv4, &other)
        .is_err());
    assert_eq!(entries(&sb, "nf-a"), 2);

    // swap: contents trade names.
    let index_a = ips.index_of("nf-a").unwrap();
    ips.swap("nf-a", "nf-b").unwrap();
    assert_eq!(
        members_by_tool(&sb, "nf-a"),
        display_set(&[net("192.168.0.0/16")])
    );
    assert_eq!(
        ips.index_of("nf-a").unwrap(),
        index_a,
        "the index stays with the name"
    );
    let mismatch = ips
        .create("nf-c", SetType::HashIp, Family::Ipv4, &d)
        .and_then(|()| ips.swap("nf-a", "nf-c"));
    assert!(mismatch
        .unwrap_err()
        .to_string()
        .contains("swapping sets nf-a and nf-c"));

    // rename.
    ips.rename("nf-b", "nf-renamed").unwrap();
    assert_eq!(ips.list_names().unwrap(), ["nf-a", "nf-renamed", "nf-c"]);
    let clash = ips.rename("nf-renamed", "nf-a").unwrap_err();
    assert!(
        clash
            .to_string()
            .contains("renaming set nf-renamed to nf-a"),
        "{clash}"
    );

    // flush.
    ips.flush("nf-renamed").unwrap();
    assert_eq!(entries(&sb, "nf-renamed"), 0);
    assert_eq!(ips.header("nf-renamed").unwrap().entries, 0);

    // destroy; a second time fails unless missing is fine.
    ips.destroy("nf-renamed", Exist::Fail).unwrap();
    assert_eq!(sb.sh("ipset", &["list", "-n"]), "nf-a\nnf-c\n");
    let gone = ips.destroy("nf-renamed", Exist::Fail).unwrap_err();
    assert_eq!(gone.errno(), Some(libc::ENOENT));
    assert!(
        gone.to_string().contains("destroying set nf-renamed"),
        "{gone}"
    );
    ips.destroy("nf-renamed", Exist::Ignore).unwrap();
    let e = ips.flush("nf-renamed").unwrap_err();
    assert!(
        e.to_string()
            .contains("flushing set nf-renamed: The set with the given name does not exist"),
        "{e}"
    );
    let e = ips.list("nf-renamed").unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
}

#[test]
fn index_by_name_and_name_by_index() {
    let sb = Sandbox::new("ips-idx");
    let mut ips = open(&sb);
    let d = CreateOptions::default();
    for name in ["nf-i0", "nf-i1", "nf-i2"] {
        ips.create(name, SetType::HashIp, Family::Ipv4, &d).unwrap();
    }
    let mut seen = BTreeSet::new();
    for l in ips.list_all().unwrap() {
        let idx = ips.index_of(&l.header.name).unwrap();
        assert_eq!(Some(idx), l.header.index, "GET_BYNAME agrees with the dump");
        assert_eq!(ips.name_of(idx).unwrap(), l.header.name);
        seen.insert(idx);
    }
    assert_eq!(seen.len(), 3);
    let i1 = ips.index_of("nf-i1").unwrap();
    ips.destroy("nf-i1", Exist::Fail).unwrap();
    let e = ips.name_of(i1).unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
    let e = ips.index_of("nf-i1").unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
    assert!(
        e.to_string().contains("getting the index of set nf-i1"),
        "{e}"
    );
    // A freed index is reused by the next set.
    ips.create("nf-i3", SetType::HashNet, Family::Ipv6, &d)
        .unwrap();
    assert_eq!(ips.index_of("nf-i3").unwrap(), i1);
    assert!(ips.name_of(60_000).is_err());
}

#[test]
fn indexes_in_one_round_trip_agree_with_one_by_one() {
    let sb = Sandbox::new("ips-idxs");
    let mut ips = open(&sb);
    let d = CreateOptions::default();
    // More sets than the kernel's first slot array (256), so indexes past a growth count.
    let names: Vec<String> = (0..600).map(|i| format!("nf-x{i}")).collect();
    for n in &names {
        ips.create(n, SetType::HashIp, Family::Ipv4, &d).unwrap();
    }
    // Out of creation order, with a repeat: answers come back matched by sequence number.
    let mut asked: Vec<&str> = names.iter().rev().map(String::as_str).collect();
    asked.push("nf-x7");
    let got = ips.indexes_of(&asked).unwrap();
    assert_eq!(got.len(), asked.len());
    for (name, idx) in asked.iter().zip(&got) {
        assert_eq!(*idx, ips.index_of(name).unwrap(), "{name}");
    }
    assert!(ips.indexes_of(&[]).unwrap().is_empty());

    // One missing set fails the call, naming that set, and the socket stays usable.
    let e = ips
        .indexes_of(&["nf-x1", "nf-missing", "nf-x2"])
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
    assert!(
        e.to_string()
            .contains("getting the index of set nf-missing"),
        "{e}"
    );
    assert_eq!(
        ips.indexes_of(&["nf-x2"]).unwrap(),
        [ips.index_of("nf-x2").unwrap()]
    );
    let long = "x".repeat(40);
    assert!(matches!(
        ips.indexes_of(&["nf-x1", &long]),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn invalid_input_is_rejected_and_changes_nothing() {
    let sb = Sandbox::new("ips-inv");
    let mut ips = open(&sb);
    let d = CreateOptions::default();
    ips.create("nf-ok", SetType::HashNet, Family::Ipv4, &d)
        .unwrap();
    ips.add("nf-ok", &[net("10.0.0.0/8")], Exist::Fail).unwrap();
    let before = sb.sh("ipset", &["save"]);

    let long = "n".repeat(32);
    let e = ips
        .create(&long, SetType::HashIp, Family::Ipv4, &d)
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("at most 31"), "{e}");
    assert!(ips
        .create(&"n".repeat(31), SetType::HashIp, Family::Ipv4, &d)
        .is_ok());
    ips.destroy(&"n".repeat(31), Exist::Fail).unwrap();

    let e = ips
        .add(
            "nf-ok",
            &[net("10.1.0.0/16"), net("0.0.0.0/0")],
            Exist::Fail,
        )
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    assert!(
        e.to_string().contains("set nf-ok element #1 (0.0.0.0/0)"),
        "{e}"
    );

    let e = ips
        .add(
            "nf-ok",
            &[net("10.1.0.0/16"), net("2001:db8::/32")],
            Exist::Fail,
        )
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("element #1 (2001:db8::/32)"), "{e}");

    let e = ips
        .add("nf-ok", &[net("10.1.0.0/16"), ip("10.2.0.1")], Exist::Fail)
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");

    let e = ips
        .del(&long, &[net("10.1.0.0/16")], Exist::Fail)
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    let e = ips.destroy("", Exist::Ignore).unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    let zero = CreateOptions {
        maxelem: Some(0),
        ..d
    };
    assert!(matches!(
        ips.create("nf-z", SetType::HashIp, Family::Ipv4, &zero),
        Err(Error::Invalid { .. })
    ));

    assert_eq!(sb.sh("ipset", &["save"]), before);
    // An empty batch is a no-op, not an error.
    ips.add("nf-ok", &[], Exist::Fail).unwrap();
}

#[test]
fn ipv6_sets_in_bulk() {
    let sb = Sandbox::new("ips-v6");
    let mut ips = open(&sb);
    ips.create(
        "nf-v6",
        SetType::HashNet,
        Family::Ipv6,
        &CreateOptions::default(),
    )
    .unwrap();
    // 5,000 /112 networks, every third nomatch: several messages.
    let members: Vec<Member> = (1..=5000u128)
        .map(|i| Member::Net {
            net: IpNet::new(
                IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | i << 16)),
                112,
            )
            .unwrap(),
            nomatch: i % 3 == 0,
        })
        .collect();
    ips.add("nf-v6", &members, Exist::Fail).unwrap();
    assert_eq!(members_by_tool(&sb, "nf-v6"), display_set(&members));
    let listed = ips.list("nf-v6").unwrap();
    assert_eq!(
        listed.members.iter().copied().collect::<BTreeSet<_>>(),
        members.iter().copied().collect::<BTreeSet<_>>()
    );
    ips.del("nf-v6", &members[..2500], Exist::Fail).unwrap();
    assert_eq!(entries(&sb, "nf-v6"), 2500);
}

#[test]
fn pipelined_commands_take_one_round_trip_and_report_the_failing_one() {
    use netfilter::ipset::wire::Adt;
    let sb = Sandbox::new("ipset-pipe");
    let mut ips = open(&sb);
    let opts = CreateOptions::default();
    ips.create("nf-a", SetType::HashIp, Family::Ipv4, &opts)
        .unwrap();
    ips.create("nf-b", SetType::HashNet, Family::Ipv4, &opts)
        .unwrap();
    let (a1, a2, a3) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
    let net: Member = Member::net("10.1.0.0/16".parse().unwrap());
    // Several sets, adds and deletes, one big enough to need two messages.
    let many: Vec<Member> = (0..3000u32)
        .map(|i| Member::Ip(IpAddr::V4(Ipv4Addr::from(0x0a02_0000 + i))))
        .collect();
    ips.adt_pipelined(
        &[
            (Adt::Add, "nf-a", &[a1, a2][..]),
            (Adt::Add, "nf-b", &[net][..]),
            (Adt::Add, "nf-a", &many[..]),
            (Adt::Del, "nf-a", &[a2][..]),
        ],
        Exist::Fail,
    )
    .unwrap();
    assert_eq!(entries(&sb, "nf-a"), 3001);
    assert_eq!(members_by_tool(&sb, "nf-b"), display_set(&[net]));

    // A command on a missing set fails; the kernel still ran the ones after it, and the
    // error names the command and its index.
    let (k, e) = ips
        .adt_pipelined(
            &[
                (Adt::Del, "nf-a", &many[..]),
                (Adt::Add, "nf-missing", &[a3][..]),
                (Adt::Add, "nf-a", &[a3][..]),
            ],
            Exist::Fail,
        )
        .unwrap_err();
    assert_eq!(k, 1);
    assert!(e.to_string().contains("nf-missing"), "{e}");
    assert_eq!(members_by_tool(&sb, "nf-a"), display_set(&[a1, a3]));
    // A member the set's type refuses fails its command, and only that.
    let (k, _) = ips
        .adt_pipelined(&[(Adt::Add, "nf-a", &[net][..])], Exist::Fail)
        .unwrap_err();
    assert_eq!(k, 0);
    assert_eq!(entries(&sb, "nf-a"), 2);

    // More than one send's worth (256 KiB): every ACK of every window is collected, and
    // a failure in the second window still names its own command.
    let lots: Vec<Member> = (0..24_000u32)
        .map(|i| Member::Ip(IpAddr::V4(Ipv4Addr::from(0x0a10_0000 + i))))
        .collect();
    let (k, e) = ips
        .adt_pipelined(
            &[
                (Adt::Add, "nf-a", &lots[..]),
                (Adt::Add, "nf-missing", &[a2][..]),
                (Adt::Del, "nf-a", &[a1][..]),
            ],
            Exist::Fail,
        )
        .unwrap_err();
    assert_eq!(k, 1);
    assert!(e.to_string().contains("nf-missing"), "{e}");
    assert_eq!(entries(&sb, "nf-a"), 24_001);
}

#[test]
fn exchange_answers_every_request_in_its_place_and_refuses_a_reused_sequence_number() {
    use netfilter::ipset::wire::{self, Adt, Req};
    use netfilter::{nl, Answers, NetlinkSocket};
    let sb = Sandbox::new("ipset-xchg");
    let mut ips = open(&sb);
    let d = CreateOptions::default();
    ips.create("nf-a", SetType::HashIp, Family::Ipv4, &d)
        .unwrap();
    let proto = ips.protocol();
    let mut sock = NetlinkSocket::open(&sb.netns()).unwrap();
    let add = |seq: u32, set: &str, m: Member| {
        let req = Req { seq, proto };
        wire::encode_adt(req, Adt::Add, set, &[m], 1, Exist::Fail).unwrap()
    };
    let seq = sock.next_seqs(3);

    // Two requests under one sequence number: their answers could not be told apart, so
    // neither is sent.
    let twice = [add(seq, "nf-a", v4(1)), add(seq, "nf-a", v4(2))].concat();
    let (k, e) = sock
        .exchange(&twice, Answers::default(), &|_| String::new(), |_, _| {
            Ok(false)
        })
        .unwrap_err();
    assert_eq!(k, 1);
    assert!(matches!(e, Error::Malformed(_)), "{e}");
    assert_eq!(entries(&sb, "nf-a"), 0);

    // Three requests, the middle one refused: each answer reaches its own place, and the
    // kernel went on past the refusal.
    let three = [
        add(seq, "nf-a", v4(1)),
        add(seq + 1, "nf-missing", v4(2)),
        add(seq + 2, "nf-a", v4(3)),
    ]
    .concat();
    let mut errnos = [None; 3];
    sock.exchange(
        &three,
        Answers::default(),
        &|k| format!("request {k}"),
        |k, m| {
            if m.ty == nl::NLMSG_ERROR {
                errnos[k] = Some(m.error()?.0);
            }
            Ok(false)
        },
    )
    .unwrap();
    assert_eq!(errnos[0], Some(0));
    assert!(errnos[1].is_some_and(|e| e != 0), "{errnos:?}");
    assert_eq!(errnos[2], Some(0));
    assert_eq!(members_by_tool(&sb, "nf-a"), display_set(&[v4(1), v4(3)]));

    // Quiet, the same requests (new sequence numbers) are answered only where they fail
    // and at the end: the refusal in its place, then the last request's ACK.
    let seq = sock.next_seqs(3);
    let mut three = [
        add(seq, "nf-a", v4(4)),
        add(seq + 1, "nf-missing", v4(5)),
        add(seq + 2, "nf-a", v4(6)),
    ]
    .concat();
    let mut answers = Vec::new();
    sock.exchange_quiet(
        &mut three,
        Answers::default(),
        &|k| format!("request {k}"),
        |k, m| {
            answers.push((k, m.error()?.0));
            Ok(false)
        },
    )
    .unwrap();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].0 == 1 && answers[0].1 != 0, "{answers:?}");
    assert_eq!(answers[1], (2, 0));
    assert_eq!(
        members_by_tool(&sb, "nf-a"),
        display_set(&[v4(1), v4(3), v4(4), v4(6)])
    );
}

/// Headers say what netfence never gives a set: every option `ipset create` has that
/// changes what a set holds or how it matches shows in `extras()`, and a set netfence
/// makes, of each type it speaks, shows none (so that it is never taken for a stranger's).
#[test]
fn header_extras_name_the_options_netfence_never_sets() {
    let sb = Sandbox::new("ips-extras");
    let mut ips = open(&sb);
    for (name, kind, family) in [
        ("nf-ip4", SetType::HashIp, Family::Ipv4),
        ("nf-ip6", SetType::HashIp, Family::Ipv6),
        ("nf-net4", SetType::HashNet, Family::Ipv4),
        ("nf-ipp6", SetType::HashIpPort, Family::Ipv6),
        ("nf-nif4", SetType::HashNetIface, Family::Ipv4),
    ] {
        let opts = CreateOptions {
            maxelem: Some(1 << 20),
            ..CreateOptions::default()
        };
        ips.create(name, kind, family, &opts).unwrap();
    }
    sb.sh_stdin(
        "ipset",
        &["restore"],
        "create t-timeout hash:ip timeout 30\n\
         create t-netmask hash:ip netmask 24\n\
         create t-ext hash:net counters comment skbinfo\n\
         create t-force hash:ip,port forceadd\n",
    );
    let extras: std::collections::BTreeMap<String, Vec<String>> = ips
        .headers()
        .unwrap()
        .into_iter()
        .map(|h| (h.name.clone(), h.extras()))
        .collect();
    for name in ["nf-ip4", "nf-ip6", "nf-net4", "nf-ipp6", "nf-nif4"] {
        assert!(extras[name].is_empty(), "{name}: {:?}", extras[name]);
    }
    assert_eq!(extras["t-timeout"], ["timeout 30"]);
    assert_eq!(extras["t-netmask"], ["netmask 24"]);
    assert_eq!(extras["t-ext"], ["counters", "comment", "skbinfo"]);
    assert_eq!(extras["t-force"], ["forceadd"]);
}
