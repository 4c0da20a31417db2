//! The golden rule shapes: every item of the iptables-nft vocabulary, alone and combined,
//! in both families. Shared by the kernel golden test and the offline encoder test.

#![allow(dead_code)]

use std::str::FromStr;

use ipnet::IpNet;
use netfilter::nft::{
    CtState, Family, Iface, Match, Neg, PortDir, PortRange, Protocol, RejectWith, Rule, SetDir,
    Target,
};

/// The chain the shapes are appended to.
pub const CHAIN: &str = "nf-golden";
/// The chain jump and goto shapes name.
pub const CHAIN2: &str = "nf-golden-2";
/// Sets every sandbox creates in this order, so all namespaces give them the same index.
pub const SETS: [(&str, &str, &str); 4] = [
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
pub fn shapes() -> Vec<(Family, Rule)> {
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
    add(
        V4,
        Rule {
            matches: vec![set("nf-s4", &[SetDir::Src, SetDir::Dst], false)],
            ..r(Target::Accept)
        },
    );
    add(
        V6,
        Rule {
            matches: vec![set("nf-n6", &[SetDir::Dst, SetDir::Src], true)],
            ..r(Target::Drop)
        },
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
            comment: None,
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
