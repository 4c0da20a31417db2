//! Golden compatibility: for every rule shape of the vocabulary, the rule netfence writes
//! must be the rule `iptables-nft-restore` writes for its iptables-save line, byte for byte
//! (`nft --debug=netlink` and raw netlink attributes), `iptables-nft-save` must print that
//! line back, and netfence's own dump must decode to the rule it wrote.
//!
//! Needs root: each shape runs in two fresh network namespaces.

mod common;

use std::str::FromStr;

use common::Sandbox;
use ipnet::IpNet;
use netfilter::nft::{
    self, ChainSpec, CtState, Family, Iface, Match, Neg, Op, PortDir, PortRange, Position,
    Protocol, RejectWith, Rule, SetDir, Target, Transaction,
};
use netfilter::NetlinkSocket;

const CHAIN: &str = "nf-golden";
const CHAIN2: &str = "nf-golden-2";
/// Sets every sandbox creates in this order, so both namespaces give them the same index.
const SETS: [(&str, &str, &str); 4] = [
    ("nf-s4", "hash:ip", "inet"),
    ("nf-n4", "hash:net", "inet"),
    ("nf-s6", "hash:ip", "inet6"),
    ("nf-n6", "hash:net", "inet6"),
];

fn net(s: &str) -> IpNet {
    IpNet::from_str(s).unwrap()
}

fn r(target: Target) -> Rule {
    Rule::new(target)
}

fn proto(p: Protocol) -> Option<Neg<Protocol>> {
    Some(Neg::is(p))
}

fn dport(p: u16) -> Match {
    Match::Ports {
        sport: None,
        dport: Some(Neg::is(PortRange::single(p))),
    }
}

fn set(name: &str, dirs: &[SetDir], negate: bool) -> Match {
    Match::Set {
        negate,
        name: name.into(),
        dirs: dirs.to_vec(),
    }
}

/// The shapes: every item of the vocabulary, alone and combined, in both families.
fn shapes() -> Vec<(Family, Rule)> {
    use Family::{Ipv4 as V4, Ipv6 as V6};
    let mut v = Vec::new();
    let mut add = |f, rule| v.push((f, rule));

    add(
        V4,
        Rule {
            src: Some(Neg::is(net("10.63.48.0/22"))),
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            src: Some(Neg::is(net("10.63.48.0/24"))),
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            src: Some(Neg::is(net("10.0.0.0/9"))),
            ..r(Target::Drop)
        },
    );
    add(
        V4,
        Rule {
            dst: Some(Neg::not(net("10.1.2.3/32"))),
            ..r(Target::Drop)
        },
    );
    add(
        V4,
        Rule {
            src: Some(Neg::is(net("1.2.3.4/32"))),
            dst: Some(Neg::is(net("10.0.0.0/8"))),
            ..r(Target::Return)
        },
    );
    add(
        V6,
        Rule {
            src: Some(Neg::is(net("fd00:10::/64"))),
            ..r(Target::Accept)
        },
    );
    add(
        V6,
        Rule {
            dst: Some(Neg::not(net("fd00::1/128"))),
            ..r(Target::Drop)
        },
    );
    add(
        V6,
        Rule {
            src: Some(Neg::is(net("fd00:ab80::/41"))),
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            in_iface: Some(Neg::is(Iface::parse("eth0"))),
            ..r(Target::Return)
        },
    );
    add(
        V4,
        Rule {
            out_iface: Some(Neg::is(Iface::parse("cali+"))),
            ..r(Target::Return)
        },
    );
    add(
        V4,
        Rule {
            in_iface: Some(Neg::not(Iface::parse("veth+"))),
            ..r(Target::Return)
        },
    );
    add(
        V6,
        Rule {
            out_iface: Some(Neg::not(Iface::parse("nf-pod1"))),
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            protocol: proto(Protocol::Tcp),
            matches: vec![dport(80)],
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            protocol: proto(Protocol::Udp),
            matches: vec![Match::Ports {
                sport: Some(Neg::is(PortRange::range(1000, 2000))),
                dport: None,
            }],
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            protocol: proto(Protocol::Tcp),
            matches: vec![Match::Ports {
                sport: Some(Neg::is(PortRange::single(5))),
                dport: Some(Neg::not(PortRange::range(10, 20))),
            }],
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            protocol: proto(Protocol::Sctp),
            matches: vec![dport(5000)],
            ..r(Target::Accept)
        },
    );
    add(
        V6,
        Rule {
            protocol: proto(Protocol::Sctp),
            matches: vec![Match::Ports {
                sport: Some(Neg::not(PortRange::range(1, 5))),
                dport: None,
            }],
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            protocol: proto(Protocol::Icmp),
            ..r(Target::Accept)
        },
    );
    add(
        V6,
        Rule {
            protocol: proto(Protocol::Icmpv6),
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            protocol: proto(Protocol::Other(47)),
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            protocol: Some(Neg::not(Protocol::Tcp)),
            ..r(Target::Drop)
        },
    );
    add(
        V6,
        Rule {
            protocol: proto(Protocol::Udp),
            matches: vec![dport(53)],
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            protocol: proto(Protocol::Tcp),
            matches: vec![Match::Multiport {
                dir: PortDir::Destination,
                negate: false,
                ports: vec![
                    PortRange::single(80),
                    PortRange::single(443),
                    PortRange::range(8000, 8080),
                ],
            }],
            ..r(Target::Accept)
        },
    );
    add(
        V6,
        Rule {
            protocol: proto(Protocol::Udp),
            matches: vec![Match::Multiport {
                dir: PortDir::Source,
                negate: true,
                ports: vec![PortRange::single(1), PortRange::single(2)],
            }],
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            matches: vec![set("nf-s4", &[SetDir::Src], false)],
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            matches: vec![set("nf-n4", &[SetDir::Dst], true)],
            ..r(Target::Drop)
        },
    );
    add(
        V6,
        Rule {
            matches: vec![set("nf-s6", &[SetDir::Src], false)],
            ..r(Target::Accept)
        },
    );
    add(
        V6,
        Rule {
            matches: vec![set("nf-n6", &[SetDir::Dst], false)],
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            matches: vec![Match::Conntrack {
                negate: false,
                states: CtState::RELATED.or(CtState::ESTABLISHED),
            }],
            ..r(Target::Accept)
        },
    );
    add(
        V4,
        Rule {
            matches: vec![Match::Conntrack {
                negate: false,
                states: CtState::INVALID,
            }],
            ..r(Target::Drop)
        },
    );
    add(
        V6,
        Rule {
            matches: vec![Match::Conntrack {
                negate: true,
                states: CtState::NEW,
            }],
            ..r(Target::Drop)
        },
    );
    add(
        V4,
        Rule {
            matches: vec![Match::Mark {
                negate: false,
                value: 0x10000,
                mask: 0x10000,
            }],
            ..r(Target::Return)
        },
    );
    add(
        V4,
        Rule {
            matches: vec![Match::Mark {
                negate: true,
                value: 0,
                mask: 0x20000,
            }],
            ..r(Target::Return)
        },
    );
    add(
        V4,
        Rule {
            matches: vec![Match::Comment("nf:abc".into())],
            ..r(Target::Accept)
        },
    );
    add(
        V6,
        Rule {
            matches: vec![Match::Comment("plain_comment-1".into())],
            ..r(Target::Accept)
        },
    );
    add(V4, r(Target::Reject(RejectWith::PortUnreachable)));
    add(V4, r(Target::Reject(RejectWith::AdminProhibited)));
    add(V6, r(Target::Reject(RejectWith::PortUnreachable)));
    add(
        V4,
        Rule {
            protocol: proto(Protocol::Tcp),
            ..r(Target::Reject(RejectWith::TcpReset))
        },
    );
    add(V4, r(Target::Jump(CHAIN2.into())));
    add(V6, r(Target::Goto(CHAIN2.into())));
    add(
        V4,
        r(Target::SetXMark {
            value: 0x10000,
            mask: 0x10000,
        }),
    );
    add(
        V6,
        r(Target::SetXMark {
            value: 0,
            mask: 0xe0000,
        }),
    );
    add(
        V4,
        r(Target::Log {
            prefix: Some("nf: ".into()),
            level: 4,
        }),
    );
    add(
        V4,
        r(Target::Log {
            prefix: None,
            level: 6,
        }),
    );
    add(
        V4,
        r(Target::Nflog {
            group: 5,
            prefix: Some("x".into()),
        }),
    );
    add(
        V6,
        r(Target::Nflog {
            group: 0,
            prefix: None,
        }),
    );
    // Calico-like combinations.
    add(
        V4,
        Rule {
            protocol: proto(Protocol::Tcp),
            matches: vec![
                Match::Comment("nf:tw:abc".into()),
                set("nf-s4", &[SetDir::Src], false),
                Match::Multiport {
                    dir: PortDir::Destination,
                    negate: false,
                    ports: vec![PortRange::single(80)],
                },
            ],
            ..r(Target::SetXMark {
                value: 0x10000,
                mask: 0x10000,
            })
        },
    );
    add(
        V4,
        Rule {
            in_iface: Some(Neg::is(Iface::parse("x"))),
            out_iface: Some(Neg::is(Iface::parse("y+"))),
            protocol: proto(Protocol::Tcp),
            src: Some(Neg::is(net("1.2.3.4/32"))),
            dst: Some(Neg::is(net("10.0.0.0/8"))),
            matches: vec![
                Match::Comment("hi there".into()),
                Match::Ports {
                    sport: Some(Neg::is(PortRange::single(5))),
                    dport: Some(Neg::is(PortRange::range(10, 20))),
                },
                Match::Mark {
                    negate: false,
                    value: 0,
                    mask: 0x20000,
                },
            ],
            target: Target::Jump(CHAIN2.into()),
        },
    );
    add(
        V6,
        Rule {
            protocol: proto(Protocol::Udp),
            matches: vec![
                Match::Comment("nf:pi:x".into()),
                set("nf-s6", &[SetDir::Src], false),
                set("nf-n6", &[SetDir::Dst], true),
                dport(53),
            ],
            ..r(Target::Return)
        },
    );
    v
}

/// One namespace loaded through iptables-nft-restore, one through netfence.
struct Pair {
    oracle: Sandbox,
    ours: Sandbox,
}

fn setup(tag: &str) -> Pair {
    let p = Pair {
        oracle: Sandbox::new(&format!("{tag}o")),
        ours: Sandbox::new(&format!("{tag}n")),
    };
    for sb in [&p.oracle, &p.ours] {
        for (name, ty, fam) in SETS {
            sb.sh("ipset", &["create", name, ty, "family", fam]);
        }
    }
    p
}

fn set_index(name: &str) -> Result<u16, netfilter::Error> {
    SETS.iter()
        .position(|(n, _, _)| *n == name)
        .map(|i| i as u16)
        .ok_or_else(|| netfilter::Error::Invalid {
            object: format!("set {name}"),
            reason: "unknown".into(),
        })
}

fn set_name(i: u16) -> Option<String> {
    SETS.get(i as usize).map(|s| s.0.to_string())
}

/// `nft --debug=netlink list ruleset` without handles, which differ by creation history.
fn netlink_dump(sb: &Sandbox) -> String {
    sb.sh("nft", &["--debug=netlink", "list", "ruleset"])
        .lines()
        .filter(|l| !l.starts_with("# Warning"))
        .map(|l| {
            // Rule headers are "ip filter CHAIN HANDLE [POSITION]".
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() >= 4
                && (w[0] == "ip" || w[0] == "ip6")
                && !l.starts_with(' ')
                && w[3].parse::<u64>().is_ok()
            {
                format!("{} {} {}", w[0], w[1], w[2])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn save_cmd(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "iptables-nft-save",
        Family::Ipv6 => "ip6tables-nft-save",
    }
}

fn restore_cmd(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "iptables-nft-restore",
        Family::Ipv6 => "ip6tables-nft-restore",
    }
}

fn check(i: usize, family: Family, rule: &Rule) -> Result<(), String> {
    let p = setup(&format!("g{i}"));
    let line = rule.to_iptables(family);
    let restore =
        format!("*filter\n:{CHAIN} - [0:0]\n:{CHAIN2} - [0:0]\n-A {CHAIN} {line}\nCOMMIT\n");
    let out = p.oracle.run_stdin(restore_cmd(family), &[], &restore);
    if !out.status.success() {
        return Err(format!(
            "{} refused the rendered line: {}",
            restore_cmd(family),
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    let mut sock = NetlinkSocket::open(&p.ours.netns()).map_err(|e| e.to_string())?;
    let mut tx = Transaction::new();
    tx.push(Op::AddTable {
        family,
        table: "filter".into(),
    });
    for c in [CHAIN, CHAIN2] {
        tx.push(Op::AddChain {
            family,
            table: "filter".into(),
            chain: ChainSpec {
                name: c.into(),
                base: None,
            },
        });
    }
    let add = tx.push(Op::AddRule {
        family,
        table: "filter".into(),
        chain: CHAIN.into(),
        rule: rule.clone(),
        position: Position::Append,
    });
    let committed = tx
        .commit(&mut sock, None, &set_index)
        .map_err(|e| format!("commit: {e}"))?;
    let handle = committed.handles[add].ok_or("no handle echoed for the new rule")?;

    let a = netlink_dump(&p.oracle);
    let b = netlink_dump(&p.ours);
    if a != b {
        return Err(format!(
            "nft --debug=netlink differs:\n--- iptables-nft-restore\n{a}\n--- netfence\n{b}"
        ));
    }

    let mut osock = NetlinkSocket::open(&p.oracle.netns()).map_err(|e| e.to_string())?;
    let theirs = nft::list_rules(&mut osock, family, "filter", Some(CHAIN), &set_name)
        .map_err(|e| e.to_string())?;
    let ours = nft::list_rules(&mut sock, family, "filter", Some(CHAIN), &set_name)
        .map_err(|e| e.to_string())?;
    if theirs.len() != 1 || ours.len() != 1 {
        return Err(format!(
            "expected one rule each, got {} and {}",
            theirs.len(),
            ours.len()
        ));
    }
    if theirs[0].raw != ours[0].raw {
        return Err(format!(
            "raw attributes differ:\n{:?}\n{:?}",
            theirs[0].raw, ours[0].raw
        ));
    }
    if ours[0].handle != handle {
        return Err(format!(
            "echoed handle {handle} but the dump says {}",
            ours[0].handle
        ));
    }
    if ours[0].rule.as_ref() != Some(rule) {
        return Err(format!("decoded {:?}", ours[0].rule));
    }
    if theirs[0].rule.as_ref() != Some(rule) {
        return Err(format!(
            "decoding iptables-nft's rule gave {:?}",
            theirs[0].rule
        ));
    }

    let save = p.ours.sh(save_cmd(family), &[]);
    if save.contains("incompatible") {
        return Err(format!("iptables-nft-save refuses the table:\n{save}"));
    }
    let want = format!("-A {CHAIN} {line}");
    if !save.lines().any(|l| l == want) {
        return Err(format!(
            "iptables-nft-save does not print {want:?}:\n{save}"
        ));
    }
    Ok(())
}

#[test]
fn every_shape_matches_iptables_nft() {
    let shapes = shapes();
    assert!(shapes.len() >= 30, "the issue asks for at least 30 shapes");
    let mut failures = Vec::new();
    for (i, (family, rule)) in shapes.iter().enumerate() {
        if let Err(e) = check(i, *family, rule) {
            failures.push(format!(
                "shape #{i} ({family}) `{}`:\n{e}\n",
                rule.to_iptables(*family)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} shapes differ:\n{}",
        failures.len(),
        shapes.len(),
        failures.join("\n")
    );
}
