//! The ruleset planner and executor on a real kernel, each test in its own namespace:
//! apply then observe, a second state next to foreign iptables-nft rules, adoption by a
//! new process, the rendered text against `iptables-nft-save`, drift repaired, failures
//! injected at every step (fail-closed, checked with the packet walk of `ruleset::sim`),
//! and real kernel failures midway.

mod common;

use std::net::IpAddr;

use common::Sandbox;
use ruleset::sim::{verdict, Packet, Verdict};
use ruleset::{
    plan, plan_batch_scoped, plan_scoped, plan_sets_scoped, render, BaseChain, Error, Executed,
    Family, Hook, IpSet, Kernel, Match, Member, Neg, Plan, Polarity, Policy, PortRange, Protocol,
    Rule, Ruleset, Scope, SetDir, SetType, TableId, Target,
};

fn tables() -> Vec<TableId> {
    vec![TableId::filter(Family::Ipv4), TableId::filter(Family::Ipv6)]
}

fn forward() -> Option<BaseChain> {
    Some(BaseChain {
        hook: Hook::Forward,
        priority: 0,
        policy: Policy::Accept,
    })
}

fn v4(n: u8) -> IpAddr {
    format!("10.9.0.{}", n + 1).parse().unwrap()
}

fn v6(n: u8) -> IpAddr {
    format!("fd00:9::{}", n + 1).parse().unwrap()
}

/// A policy-shaped state, in both families: FORWARD jumps to `nf-fw`; destinations outside
/// the isolated set return; each policy accepts a peer set towards a selected set on a
/// port; an ipBlock set with an except accepts on port 443; the rest drops.
#[derive(Clone)]
struct Shape {
    isolated: Vec<u8>,
    /// (selected, peers, port)
    policies: Vec<(Vec<u8>, Vec<u8>, u16)>,
    block_except: bool,
}

fn build(s: &Shape) -> Ruleset {
    let mut rs = Ruleset::default();
    for (t, fam, addr) in [
        (
            TableId::filter(Family::Ipv4),
            Family::Ipv4,
            v4 as fn(u8) -> IpAddr,
        ),
        (TableId::filter(Family::Ipv6), Family::Ipv6, v6),
    ] {
        let sfx = if fam == Family::Ipv4 { "4" } else { "6" };
        rs.add_chain(&t, "FORWARD", forward()).unwrap();
        rs.add_chain(&t, "nf-fw", None).unwrap();
        rs.push_rule(&t, "FORWARD", Rule::new(Target::Jump("nf-fw".into())))
            .unwrap();
        let mut est = Rule::new(Target::Accept);
        est.matches.push(Match::Conntrack {
            negate: false,
            states: ruleset::CtState::ESTABLISHED.or(ruleset::CtState::RELATED),
        });
        rs.push_rule(&t, "nf-fw", est).unwrap();
        let iso_name = format!("nf-iso{sfx}");
        let mut iso = IpSet::new(fam, SetType::HashIp, Polarity::Restricts);
        for a in &s.isolated {
            iso.insert(Member::Ip(addr(*a))).unwrap();
        }
        rs.add_set(&iso_name, iso).unwrap();
        let mut ret = Rule::new(Target::Return);
        ret.matches.push(Match::Set {
            negate: true,
            name: iso_name,
            dirs: vec![SetDir::Dst],
        });
        rs.push_rule(&t, "nf-fw", ret).unwrap();
        for (i, (sel, peers, port)) in s.policies.iter().enumerate() {
            for (kind, members) in [("sel", sel), ("peer", peers)] {
                let mut set = IpSet::new(fam, SetType::HashIp, Polarity::Grants);
                for a in members {
                    set.insert(Member::Ip(addr(*a))).unwrap();
                }
                rs.add_set(&format!("nf-{kind}{i}-{sfx}"), set).unwrap();
            }
            let chain = format!("nf-pol{i}");
            rs.add_chain(&t, &chain, None).unwrap();
            let mut j = Rule::new(Target::Jump(chain.clone()));
            j.matches.push(Match::Set {
                negate: false,
                name: format!("nf-sel{i}-{sfx}"),
                dirs: vec![SetDir::Dst],
            });
            rs.push_rule(&t, "nf-fw", j).unwrap();
            let mut r = Rule::new(Target::Accept);
            r.protocol = Some(Neg::is(Protocol::Tcp));
            r.matches.push(Match::Set {
                negate: false,
                name: format!("nf-peer{i}-{sfx}"),
                dirs: vec![SetDir::Src],
            });
            r.matches.push(Match::Ports {
                sport: None,
                dport: Some(Neg::is(PortRange::single(*port))),
            });
            rs.push_rule(&t, &chain, r).unwrap();
        }
        if s.block_except {
            let name = format!("nf-block-{sfx}");
            let mut b = IpSet::new(fam, SetType::HashNet, Polarity::Grants);
            let (net, except) = if fam == Family::Ipv4 {
                ("10.9.0.0/24", "10.9.0.4/30")
            } else {
                ("fd00:9::/120", "fd00:9::4/126")
            };
            b.insert(Member::net(net.parse().unwrap())).unwrap();
            b.insert(Member::nomatch(except.parse().unwrap())).unwrap();
            rs.add_set(&name, b).unwrap();
            let mut r = Rule::new(Target::Accept);
            r.protocol = Some(Neg::is(Protocol::Tcp));
            r.matches.push(Match::Set {
                negate: false,
                name,
                dirs: vec![SetDir::Src],
            });
            r.matches.push(Match::Ports {
                sport: None,
                dport: Some(Neg::is(PortRange::single(443))),
            });
            rs.push_rule(&t, "nf-fw", r).unwrap();
        }
        rs.push_rule(&t, "nf-fw", Rule::new(Target::Drop)).unwrap();
    }
    rs
}

fn old_shape() -> Shape {
    Shape {
        isolated: vec![1, 2],
        policies: vec![(vec![1], vec![0, 3], 80), (vec![2], vec![4], 8080)],
        block_except: false,
    }
}

/// The old shape changed everywhere at once: a pod isolated and one released, a policy
/// changed (port and members), one removed, one added, an ipBlock with an except added.
fn new_shape() -> Shape {
    Shape {
        isolated: vec![2, 3],
        policies: vec![
            (vec![3], vec![0, 5], 81),
            (vec![2, 3], vec![1], 8080),
            (vec![2], vec![0, 1, 4], 22),
        ],
        block_except: true,
    }
}

fn probes() -> Vec<Packet> {
    let mut out = Vec::new();
    for addr in [v4 as fn(u8) -> IpAddr, v6] {
        for s in 0..6 {
            for d in 0..6 {
                for port in [22, 80, 81, 443, 8080] {
                    out.push(Packet::tcp(addr(s), addr(d), port));
                }
            }
        }
    }
    out
}

fn allowed(rs: &Ruleset) -> Vec<bool> {
    probes()
        .iter()
        .map(|p| verdict(rs, Hook::Forward, p) == Verdict::Accept)
        .collect()
}

fn converge(k: &mut Kernel, desired: &Ruleset) -> Ruleset {
    let mut cur = k.observe("nf-", &tables()).unwrap();
    let p = plan(&cur, desired).unwrap();
    k.apply(&p, &mut cur).unwrap();
    cur
}

/// How many sets `p` replaces in place (`ipset swap`).
fn swaps(p: &Plan) -> usize {
    p.before
        .iter()
        .filter(|op| matches!(op, ruleset::SetOp::Swap { .. }))
        .count()
}

/// Saves without the timestamped comment lines.
fn save(sb: &Sandbox, cmd: &str) -> Vec<String> {
    sb.sh(cmd, &[])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn apply_observe_adopt_and_render() {
    let sb = Sandbox::new("rs-apply");
    let desired = build(&old_shape());
    let mut k = Kernel::open(&sb.netns()).unwrap();
    let tracked = converge(&mut k, &desired);
    // A commit moves the generation by exactly one: the handle expects that, so a writer
    // committing right after it is caught by its next batch.
    assert_eq!(Some(k.read_generation().unwrap()), k.generation());
    // What the executor tracked is what the kernel holds, and both are the desired state.
    let seen = k.observe("nf-", &tables()).unwrap();
    assert_eq!(seen.owned_view(), desired.owned_view());
    assert_eq!(
        seen, tracked,
        "tracked state (with handles) differs from a dump"
    );
    assert!(plan(&seen, &desired).unwrap().is_empty());

    // A new process (a new handle) adopts the state: nothing to do.
    drop(k);
    let mut k2 = Kernel::open(&sb.netns()).unwrap();
    let adopted = k2.observe("nf-", &tables()).unwrap();
    let p = plan(&adopted, &desired).unwrap();
    assert!(p.is_empty(), "adoption plan not empty:\n{p}");

    // iptables-nft-save prints exactly the rendered text, both families.
    for (fam, cmd) in [
        (Family::Ipv4, "iptables-nft-save"),
        (Family::Ipv6, "ip6tables-nft-save"),
    ] {
        let want: Vec<String> = render::iptables_save(&desired, fam)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert_eq!(save(&sb, cmd), want, "{cmd} differs from the rendered text");
    }
    // And the ipset text restores into an equal set of sets in a fresh namespace.
    let other = Sandbox::new("rs-ipset");
    other.sh_stdin("ipset", &["restore"], &render::ipset_save(&desired));
    let mut k3 = Kernel::open(&other.netns()).unwrap();
    let restored = k3.observe("nf-", &tables()).unwrap();
    assert_eq!(restored.sets(), desired.sets());
}

/// Sets made with the kernel's capacity (by an older netfence) get netfence's under the
/// rules that look them up, by a copy swapped in: no rule is touched, no member is lost,
/// and nothing is left behind.
#[test]
fn referenced_sets_get_a_new_capacity_in_place() {
    let sb = Sandbox::new("rs-capacity");
    let with_kernel_capacity = |mut rs: Ruleset| {
        let names: Vec<String> = rs.sets().keys().cloned().collect();
        for n in names {
            rs.set_mut(&n).unwrap().maxelem = ruleset::KERNEL_MAXELEM;
        }
        rs
    };
    let old = with_kernel_capacity(build(&old_shape()));
    let mut k = Kernel::open(&sb.netns()).unwrap();
    converge(&mut k, &old);
    let rules_before = save(&sb, "iptables-nft-save");
    let sets = old.sets().len();

    // The same content with netfence's capacity: only swaps, no batch.
    let desired = build(&old_shape());
    let mut cur = k.observe("nf-", &tables()).unwrap();
    let p = plan(&cur, &desired).unwrap();
    let swaps = swaps(&p);
    assert_eq!(swaps, sets, "{p}");
    assert!(p.batch.is_empty() && p.after.is_empty(), "{p}");
    k.apply(&p, &mut cur).unwrap();
    let seen = k.observe("nf-", &tables()).unwrap();
    assert_eq!(seen.owned_view(), desired.owned_view());
    assert_eq!(seen.sets().len(), sets, "a replaced set was left behind");
    assert!(seen
        .sets()
        .values()
        .all(|s| s.maxelem == ruleset::DEFAULT_MAXELEM));
    assert_eq!(save(&sb, "iptables-nft-save"), rules_before);
    assert_eq!(allowed(&seen), allowed(&old));

    // From the kernel's capacity straight to a changed state: swaps and member changes.
    let sb = Sandbox::new("rs-capacity2");
    let mut k = Kernel::open(&sb.netns()).unwrap();
    converge(&mut k, &old);
    let new = build(&new_shape());
    converge(&mut k, &new);
    let seen = k.observe("nf-", &tables()).unwrap();
    assert_eq!(seen.owned_view(), new.owned_view());
    assert_eq!(allowed(&seen), allowed(&new));
}

/// Sets someone changed under netfence's names in ways netfence never writes are read
/// (not a failed observation) and replaced under the rules that look them up: a copy
/// whose members expire, one with a netmask (10.9.0.1 stored as 10.9.0.0, matching all
/// of 10.9/16), and an ICMP entry in a `hash:ip,port` set. Foreign sets netfence can't
/// represent (a non-UTF-8 name, an interface name it refuses) don't stop it either.
#[test]
fn sets_holding_what_netfence_never_writes_are_replaced_in_place() {
    use std::os::unix::ffi::OsStrExt;

    let sb = Sandbox::new("rs-odd");
    let mut desired = build(&old_shape());
    let t = TableId::filter(Family::Ipv4);
    let mut ports = IpSet::new(Family::Ipv4, SetType::HashIpPort, Polarity::Grants);
    ports
        .insert(Member::IpPort {
            ip: v4(1),
            protocol: 6,
            port: 80,
        })
        .unwrap();
    desired.add_set("nf-ports4", ports).unwrap();
    let mut r = Rule::new(Target::Accept);
    r.matches.push(Match::Set {
        negate: false,
        name: "nf-ports4".into(),
        dirs: vec![SetDir::Dst, SetDir::Dst],
    });
    desired.push_rule(&t, "nf-fw", r).unwrap();
    let mut k = Kernel::open(&sb.netns()).unwrap();
    converge(&mut k, &desired);
    let rules_before = save(&sb, "iptables-nft-save");

    sb.sh_stdin(
        "ipset",
        &["restore"],
        "create t hash:ip family inet maxelem 1048576 timeout 600\n\
         add t 10.9.0.2\nadd t 10.9.0.3\nswap t nf-iso4\ndestroy t\n\
         create t hash:ip family inet maxelem 1048576 netmask 16\n\
         add t 10.9.0.1\nswap t nf-peer0-4\ndestroy t\n\
         add nf-ports4 10.9.9.9,icmp:echo-request\n\
         create foreign hash:net,iface\nadd foreign 10.0.0.0/8,eth0:1\n",
    );
    let odd_name = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &sb.name, "ipset", "create"])
        .arg(odd_name)
        .arg("hash:ip")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut cur = k.observe("nf-", &tables()).unwrap();
    let odd = |name: &str| {
        cur.set(name)
            .unwrap()
            .unmodelled
            .clone()
            .unwrap_or_default()
    };
    assert!(odd("nf-iso4").contains("timeout 600"), "{}", odd("nf-iso4"));
    assert!(
        odd("nf-peer0-4").contains("netmask 16"),
        "{}",
        odd("nf-peer0-4")
    );
    assert!(
        odd("nf-ports4").contains("1 members"),
        "{}",
        odd("nf-ports4")
    );
    assert!(cur.foreign_sets().contains_key("foreign"));
    assert!(cur.foreign_sets().contains_key("caf\u{fffd}"));

    let p = plan(&cur, &desired).unwrap();
    let swaps = swaps(&p);
    assert_eq!(swaps, 3, "{p}");
    assert!(p.batch.is_empty(), "{p}");
    k.apply(&p, &mut cur).unwrap();

    let seen = k.observe("nf-", &tables()).unwrap();
    assert_eq!(seen.owned_view(), desired.owned_view());
    assert!(seen.sets().values().all(|s| s.unmodelled.is_none()));
    assert!(plan(&seen, &desired).unwrap().is_empty());
    // Read lossily: the tools print the non-UTF-8 name as it is.
    let tool = |args: &[&str]| String::from_utf8_lossy(&sb.run("ipset", args).stdout).into_owned();
    let headers = tool(&["list", "-t"]);
    assert!(
        !headers.contains("timeout") && !headers.contains("netmask"),
        "{headers}"
    );
    assert_eq!(save(&sb, "iptables-nft-save"), rules_before);
    assert_eq!(allowed(&seen), allowed(&desired));
    // Someone else's sets are still theirs.
    let names = tool(&["list", "-n"]);
    assert!(names.lines().any(|l| l == "foreign"), "{names}");
}

#[test]
fn second_state_keeps_foreign_rules_chains_and_sets() {
    let sb = Sandbox::new("rs-foreign");
    // Someone else's rules first: kube-proxy-like chains and a FORWARD rule, an ipset.
    sb.sh_stdin(
        "iptables-nft-restore",
        &["--noflush"],
        "*filter\n:KUBE-FORWARD - [0:0]\n-A FORWARD -j KUBE-FORWARD\n-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n",
    );
    sb.sh("ipset", &["create", "KUBE-ips", "hash:ip"]);
    sb.sh("ipset", &["add", "KUBE-ips", "192.0.2.1"]);
    // A set type netfence doesn't speak, whose elements have no address at all.
    sb.sh(
        "ipset",
        &["create", "KUBE-ports", "bitmap:port", "range", "1-1000"],
    );
    sb.sh("ipset", &["add", "KUBE-ports", "80"]);
    let foreign_before = save(&sb, "iptables-nft-save");

    let mut k = Kernel::open(&sb.netns()).unwrap();
    converge(&mut k, &build(&old_shape()));
    // netfence's jump goes above the foreign one.
    let lines = save(&sb, "iptables-nft-save");
    let fwd: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    assert!(
        fwd[0].contains("-j nf-fw") && fwd[1] == "-A FORWARD -j KUBE-FORWARD",
        "{fwd:?}"
    );

    let desired = build(&new_shape());
    converge(&mut k, &desired);
    let seen = k.observe("nf-", &tables()).unwrap();
    assert_eq!(seen.owned_view(), desired.owned_view());
    assert!(plan(&seen, &desired).unwrap().is_empty());
    // Every foreign line is still there, in order, and the foreign set is untouched.
    let after = save(&sb, "iptables-nft-save");
    let foreign_after: Vec<&String> = after
        .iter()
        .filter(|l| !l.contains("nf-") && !l.contains("nf:"))
        .collect();
    let foreign_before: Vec<&String> = foreign_before.iter().collect();
    assert_eq!(foreign_after, foreign_before);
    assert!(sb.sh("ipset", &["list", "KUBE-ips"]).contains("192.0.2.1"));
    assert!(seen.foreign_sets().contains_key("KUBE-ips"));
    assert_eq!(seen.foreign_sets()["KUBE-ports"].type_name, "bitmap:port");

    // Emptying the desired state removes all that netfence owns, and nothing else.
    let empty = Ruleset::default();
    converge(&mut k, &empty);
    let cleaned = save(&sb, "iptables-nft-save");
    assert_eq!(cleaned.iter().collect::<Vec<_>>(), foreign_before);
    assert_eq!(
        sb.sh("ipset", &["list", "-n"]).trim(),
        "KUBE-ips\nKUBE-ports"
    );
}

#[test]
fn drift_is_repaired_and_strays_removed() {
    let sb = Sandbox::new("rs-drift");
    let desired = build(&old_shape());
    let mut k = Kernel::open(&sb.netns()).unwrap();
    converge(&mut k, &desired);
    // Tampering: an owned rule deleted, a rule added by hand to an owned chain, a member
    // added by hand, a set flushed, an owned chain's rule rewritten under its comment.
    let lines = save(&sb, "iptables-nft-save");
    let victim = lines
        .iter()
        .find(|l| l.starts_with("-A nf-pol0 "))
        .unwrap()
        .replacen("-A ", "-D ", 1);
    let args: Vec<&str> = victim
        .split_whitespace()
        .map(|a| a.trim_matches('"'))
        .collect();
    sb.sh("iptables-nft", &args);
    sb.sh(
        "iptables-nft",
        &["-A", "nf-fw", "-s", "192.0.2.9", "-j", "ACCEPT"],
    );
    sb.sh("ipset", &["add", "nf-iso4", "10.9.0.99"]);
    sb.sh("ipset", &["flush", "nf-peer1-6"]);
    let seen = k.observe("nf-", &tables()).unwrap();
    assert_ne!(seen.owned_view(), desired.owned_view());
    let p = plan(&seen, &desired).unwrap();
    // Exactly the drift: one rule back, one stray out, one member out, one set refilled.
    assert_eq!(p.batch.len(), 2, "{p}");
    assert_eq!(p.cost(), 2 + 1 + 1, "{p}");
    converge(&mut k, &desired);
    let seen = k.observe("nf-", &tables()).unwrap();
    assert_eq!(seen.owned_view(), desired.owned_view());
    assert!(!save(&sb, "iptables-nft-save")
        .iter()
        .any(|l| l.contains("192.0.2.9")));
}

/// Stops the old → new plan before each of its steps in a fresh namespace, reads the
/// kernel back, and checks that what it allows is within the old state's allowances
/// (before the batch) or the new state's (after it).
#[test]
fn a_failure_at_any_step_leaves_a_fail_closed_kernel() {
    let old = build(&old_shape());
    let new = build(&new_shape());
    let (va, vb) = (allowed(&old), allowed(&new));
    assert_ne!(va, vb, "the transition must change what is allowed");
    let probes = probes();
    let (batch_at, steps) = {
        let sb = Sandbox::new("rs-fc0");
        let mut k = Kernel::open(&sb.netns()).unwrap();
        let cur = converge(&mut k, &old);
        let p = plan(&cur, &new).unwrap();
        (p.before.len(), p.step_count())
    };
    assert!(
        batch_at >= 2 && steps >= batch_at + 3,
        "a transition with set changes on both sides of the batch"
    );
    for stop in 0..=steps {
        let sb = Sandbox::new("rs-fc");
        let mut k = Kernel::open(&sb.netns()).unwrap();
        let mut cur = converge(&mut k, &old);
        let p = plan(&cur, &new).unwrap();
        match k.apply_until(&p, &mut cur, stop) {
            Err(Error::Stopped { done, .. }) => assert_eq!(done, stop),
            Ok(_) => assert_eq!(stop, steps),
            Err(e) => panic!("{e}"),
        }
        let seen = k.observe("nf-", &tables()).unwrap();
        assert_eq!(
            seen.owned_view(),
            cur.owned_view(),
            "tracked state after {stop} steps"
        );
        let v = allowed(&seen);
        let bound = if stop <= batch_at { &va } else { &vb };
        for (i, pk) in probes.iter().enumerate() {
            assert!(
                !v[i] || bound[i],
                "stopped before step {stop}: {pk:?} allowed, but not by the {} state",
                if stop <= batch_at { "old" } else { "new" }
            );
        }
        // Whatever happened, the next plan converges.
        let p2 = plan(&seen, &new).unwrap();
        k.apply(&p2, &mut seen.clone()).unwrap();
        let last = k.observe("nf-", &tables()).unwrap();
        assert_eq!(last.owned_view(), new.owned_view());
    }
}

/// Real kernel failures, not injected ones: an ipset add refused midway (the set is full),
/// and a batch refused because another writer committed first. Both leave a fail-closed
/// kernel, and the batch applies nothing.
#[test]
fn kernel_failures_midway_are_fail_closed() {
    let old = build(&old_shape());
    let new = build(&new_shape());
    let (va, vb) = (allowed(&old), allowed(&new));
    let probes = probes();
    let check = |seen: &Ruleset, bound: &[bool], what: &str| {
        let v = allowed(seen);
        for (i, pk) in probes.iter().enumerate() {
            assert!(!v[i] || bound[i], "{what}: {pk:?} allowed beyond the bound");
        }
    };

    // 1. A set too small for the new members: the kernel refuses an ipset add ("Hash is
    //    full") before the batch.
    let sb = Sandbox::new("rs-full");
    let small = |mut rs: Ruleset| {
        rs.set_mut("nf-iso4").unwrap().maxelem = 2;
        rs
    };
    let mut k = Kernel::open(&sb.netns()).unwrap();
    let mut cur = converge(&mut k, &small(old.clone()));
    let p = plan(&cur, &small(new.clone())).unwrap();
    let e = k.apply(&p, &mut cur).unwrap_err();
    assert!(e.to_string().contains("nf-iso4"), "{e}");
    let seen = k.observe("nf-", &tables()).unwrap();
    // The batch never ran: the old rules are all there, the new chain is not.
    assert!(seen
        .chain(&TableId::filter(Family::Ipv4), "nf-pol2")
        .is_none());
    check(&seen, &va, "after a full set");

    // 2. Another writer commits between observe and apply: the batch is refused whole.
    let sb = Sandbox::new("rs-gen");
    let mut k = Kernel::open(&sb.netns()).unwrap();
    converge(&mut k, &old);
    let mut cur = k.observe("nf-", &tables()).unwrap();
    let p = plan(&cur, &new).unwrap();
    sb.sh(
        "iptables-nft",
        &["-A", "INPUT", "-s", "192.0.2.7", "-j", "DROP"],
    );
    let e = k.apply(&p, &mut cur).unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let seen = k.observe("nf-", &tables()).unwrap();
    // Sets moved in the closing direction only; rules are all old.
    check(&seen, &va, "after a generation conflict");
    assert!(seen
        .chain(&TableId::filter(Family::Ipv4), "nf-pol2")
        .is_none());
    // Re-planning on the fresh observation converges, and the foreign rule stays.
    let p = plan(&seen, &new).unwrap();
    k.apply(&p, &mut seen.clone()).unwrap();
    assert_eq!(
        k.observe("nf-", &tables()).unwrap().owned_view(),
        new.owned_view()
    );
    assert!(save(&sb, "iptables-nft-save")
        .iter()
        .any(|l| l.contains("192.0.2.7")));
    check(&k.observe("nf-", &tables()).unwrap(), &vb, "converged");
}

/// A plan of member changes only (no batch between its phases) still keeps its phases
/// apart: when a closing change fails, no opening change after it reaches the kernel, even
/// though the kernel goes on with the later messages of one `sendmsg`.
#[test]
fn a_failed_closing_member_change_stops_the_openings() {
    // Closing: pod 3 isolated, into a set the kernel can't grow ("Hash is full").
    // Opening: pod 2 selected by the policy.
    let shape = |isolated: Vec<u8>, sel: Vec<u8>| {
        let mut rs = build(&Shape {
            isolated,
            policies: vec![(sel, vec![0], 80)],
            block_except: false,
        });
        rs.set_mut("nf-iso4").unwrap().maxelem = 2;
        rs
    };
    let old = shape(vec![1, 2], vec![1]);
    let new = shape(vec![1, 2, 3], vec![1, 2]);
    let sb = Sandbox::new("rs-phases");
    let mut k = Kernel::open(&sb.netns()).unwrap();
    let mut cur = converge(&mut k, &old);
    let p = plan(&cur, &new).unwrap();
    assert!(p.batch.is_empty(), "{p:?}");
    let e = k.apply(&p, &mut cur).unwrap_err();
    assert!(e.to_string().contains("nf-iso4"), "{e}");
    let seen = k.observe("nf-", &tables()).unwrap();
    let sel = seen.set("nf-sel0-4").unwrap();
    assert!(sel.contains(&Member::Ip(v4(1))));
    assert!(!sel.contains(&Member::Ip(v4(2))), "an opening landed");
}

/// The sync engine's commit in parts: the before phase goes to the kernel while the batch
/// is still being planned, then the batch and the after phase, and the record of it all
/// in the state comes last. The kernel goes through the states one plan would take it
/// through, fail-closed in between, and the record equals a dump.
#[test]
fn the_before_phase_runs_ahead_of_the_batch_and_the_record_comes_last() {
    let sb = Sandbox::new("rs-staged");
    let (old, new) = (build(&old_shape()), build(&new_shape()));
    let mut k = Kernel::open(&sb.netns()).unwrap();
    let mut cur = converge(&mut k, &old);
    let untouched = cur.clone();
    let mut scope = Scope::default();
    for rs in [&cur, &new] {
        for (t, tab) in rs.tables() {
            for n in tab.chains.keys() {
                scope.chain(t, n);
            }
        }
        for n in rs.sets().keys() {
            scope.set(n);
        }
    }
    let mut p = plan_sets_scoped(&cur, &new, &scope).unwrap();
    assert!(!p.before.is_empty() && p.batch.is_empty() && !p.after.is_empty());
    let mut ex = Executed::default();
    k.execute_before(&p, &mut ex).unwrap();
    assert!(ex.started());
    // The before phase alone: old chains, closing set changes, nothing recorded yet.
    assert_eq!(cur, untouched);
    let before_only = Plan {
        before: p.before.clone(),
        ..Plan::default()
    };
    let mid = k.observe("nf-", &tables()).unwrap();
    assert_eq!(
        mid.owned_view(),
        before_only.apply_in_memory(&cur).unwrap().owned_view()
    );
    let (v_old, v_mid) = (allowed(&old), allowed(&mid));
    for (i, pk) in probes().iter().enumerate() {
        assert!(!v_mid[i] || v_old[i], "{pk:?} allowed mid-commit only");
    }
    p.batch = plan_batch_scoped(&cur, &new, &scope).unwrap();
    assert_eq!(p, plan_scoped(&cur, &new, &scope).unwrap());
    k.execute(&p, &mut ex).unwrap();
    assert_eq!(cur, untouched, "execute records nothing");
    let mut owned = cur.clone();
    ex.record(&p, &mut cur).unwrap();
    assert_eq!(k.observe("nf-", &tables()).unwrap(), cur);
    // The engine's way, dropping each step once recorded, records the same.
    ex.record_owned(p.clone(), &mut owned).unwrap();
    assert_eq!(owned, cur);
    let handles = |rs: &Ruleset| -> Vec<Option<u64>> {
        rs.tables()
            .values()
            .flat_map(|t| t.chains.values())
            .flat_map(|c| c.entries().iter().map(|e| e.handle()))
            .collect()
    };
    assert_eq!(handles(&owned), handles(&cur), "the same handles");
    assert_eq!(cur.owned_view(), new.owned_view());
    assert_eq!(ex.applied.batch_ops, p.batch.len());
}

/// One changed rule in a chain of 1,000 costs one replace in the kernel too, and the
/// replaced rule keeps its place.
#[test]
fn one_rule_of_a_thousand_is_replaced_in_place() {
    let sb = Sandbox::new("rs-big");
    let t = TableId::filter(Family::Ipv4);
    let mk = |changed: Option<u16>| {
        let mut rs = Ruleset::default();
        rs.add_chain(&t, "nf-big", None).unwrap();
        for i in 0..1000u16 {
            let mut r = Rule::new(Target::Accept);
            r.protocol = Some(Neg::is(Protocol::Tcp));
            let port = if changed == Some(i) { 9999 } else { 1 + i };
            r.matches.push(Match::Ports {
                sport: None,
                dport: Some(Neg::is(PortRange::single(port))),
            });
            rs.push_rule(&t, "nf-big", r).unwrap();
        }
        rs
    };
    let mut k = Kernel::open(&sb.netns()).unwrap();
    converge(&mut k, &mk(None));
    let mut cur = k.observe("nf-", &tables()).unwrap();
    let p = plan(&cur, &mk(Some(500))).unwrap();
    assert_eq!(p.cost(), 1, "{p}");
    k.apply(&p, &mut cur).unwrap();
    let lines = save(&sb, "iptables-nft-save");
    let rules: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("-A nf-big"))
        .collect();
    assert_eq!(rules.len(), 1000);
    assert!(rules[500].contains("--dport 9999"), "{}", rules[500]);
    assert_eq!(k.observe("nf-", &tables()).unwrap(), cur);
}

/// FORWARD jumps to each of `chains` (IPv4), and each accepts TCP to a port of its own.
fn jumped_chains(chains: &[&str]) -> Ruleset {
    let t = TableId::filter(Family::Ipv4);
    let mut rs = Ruleset::default();
    rs.add_chain(&t, "FORWARD", forward()).unwrap();
    for (i, c) in (0u16..).zip(chains) {
        rs.add_chain(&t, c, None).unwrap();
        rs.push_rule(&t, "FORWARD", Rule::new(Target::Jump((*c).into())))
            .unwrap();
        let mut r = Rule::new(Target::Accept);
        r.protocol = Some(Neg::is(Protocol::Tcp));
        r.matches.push(Match::Ports {
            sport: None,
            dport: Some(Neg::is(PortRange::single(8000 + i))),
        });
        rs.push_rule(&t, c, r).unwrap();
    }
    rs
}

/// The `nf-` chains `iptables-nft-save` shows.
fn nf_chains(sb: &Sandbox) -> Vec<String> {
    save(sb, "iptables-nft-save")
        .into_iter()
        .filter(|l| l.starts_with(":nf-"))
        .collect()
}

/// A jump an admin wrote between two netfence chains that both go (`-A nf-b -j nf-a`),
/// and one from a netfence chain to another before a flush: the kernel refuses to delete
/// a chain a live rule jumps to, so the stray must go before either chain. Ordered by
/// netfence's own jumps alone, the batch failed with EBUSY on every retry.
#[test]
fn stray_jumps_between_doomed_chains_do_not_block_their_deletion() {
    let sb = Sandbox::new("rs-strayjump");
    let mut k = Kernel::open(&sb.netns()).unwrap();
    converge(&mut k, &jumped_chains(&["nf-a", "nf-b", "nf-keep"]));
    sb.sh("iptables-nft", &["-A", "nf-b", "-j", "nf-a"]);
    // And one from a chain that stays to one that goes.
    sb.sh("iptables-nft", &["-A", "nf-keep", "-j", "nf-b"]);
    let desired = jumped_chains(&["nf-keep"]);
    let cur = converge(&mut k, &desired);
    assert_eq!(cur.owned_view(), desired.owned_view());
    assert_eq!(nf_chains(&sb), [":nf-keep - [0:0]"]);
    assert!(plan(&k.observe("nf-", &tables()).unwrap(), &desired)
        .unwrap()
        .is_empty());

    // The flush case: `-A nf-p -j nf-egress` between two chains it deletes.
    converge(&mut k, &jumped_chains(&["nf-egress", "nf-p"]));
    sb.sh("iptables-nft", &["-A", "nf-p", "-j", "nf-egress"]);
    let f = k.flush("nf-", &tables()).unwrap();
    assert!(f.left.is_empty() && f.kept.is_empty(), "{f:?}");
    assert!(nf_chains(&sb).is_empty(), "{:?}", nf_chains(&sb));
    assert!(k
        .observe("nf-", &tables())
        .unwrap()
        .owned_chains()
        .is_empty());
}

/// A foreign chain's rule jumping to a netfence chain (`-A DOCKER-USER -j nf-a`) is not
/// netfence's to delete: the chain it holds is emptied and kept, the rest goes, and the
/// chain goes at the first flush after the foreign rule does. A jump the dump can't show
/// (a native verdict map) makes the kernel refuse the chain's deletion: reported at once,
/// naming the chain, and not as a race to retry.
#[test]
fn a_foreign_jump_keeps_its_target_emptied_or_fails_clearly() {
    let sb = Sandbox::new("rs-foreignjump");
    let mut k = Kernel::open(&sb.netns()).unwrap();
    converge(&mut k, &jumped_chains(&["nf-a", "nf-b"]));
    sb.sh("iptables-nft", &["-N", "DOCKER-USER"]);
    sb.sh("iptables-nft", &["-A", "DOCKER-USER", "-j", "nf-a"]);
    let f = k.flush("nf-", &tables()).unwrap();
    assert_eq!(f.kept, ["ip filter nf-a"], "{f:?}");
    assert_eq!(nf_chains(&sb), [":nf-a - [0:0]"]);
    assert!(!save(&sb, "iptables-nft-save")
        .iter()
        .any(|l| l.starts_with("-A nf-")));
    // Nothing left to do while the foreign jump stays.
    let seen = k.observe("nf-", &tables()).unwrap();
    assert!(plan(&seen, &Ruleset::default()).unwrap().is_empty());
    sb.sh("iptables-nft", &["-D", "DOCKER-USER", "-j", "nf-a"]);
    let f = k.flush("nf-", &tables()).unwrap();
    assert!(f.kept.is_empty(), "{f:?}");
    assert!(nf_chains(&sb).is_empty());

    converge(&mut k, &jumped_chains(&["nf-a"]));
    sb.sh(
        "nft",
        &["add rule ip filter DOCKER-USER meta l4proto vmap { tcp : jump nf-a }"],
    );
    let e = k.flush("nf-", &tables()).unwrap_err();
    assert!(
        matches!(e, Error::ChainInUse { ref chain, .. } if chain == "ip filter nf-a"),
        "{e}"
    );
    assert!(!e.is_retryable());
    assert!(
        e.to_string()
            .contains("a rule outside netfence still jumps to it"),
        "{e}"
    );
}
