//! A packet's walk through a ruleset, as netfilter's iptables-nft tables would walk it.
//!
//! This is how tests (and the policy compiler's tests) ask "what does this state allow?"
//! without a kernel: the fail-closed checks of [`crate::plan`] compare the verdicts of the
//! states a plan passes through. Only owned rules are walked: foreign rules are opaque, so
//! they are taken as matching nothing (the walk answers for netfence's part alone).

use std::net::IpAddr;

use netfilter::ipset::{IfName, SetType};
use netfilter::nft::{Hook, Iface, Match, Neg, Policy, Protocol, Rule, SetDir, Target};
use netfilter::Family;

use crate::model::{Chain, Entry, Ruleset, TableId};

/// What the walk looks at in a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Source address; its family picks the tables.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Layer-4 protocol.
    pub protocol: Protocol,
    /// Source port (0 when the protocol has none).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Input interface, if the hook has one.
    pub in_iface: Option<String>,
    /// Output interface, if the hook has one.
    pub out_iface: Option<String>,
    /// The conntrack state, one bit of [`netfilter::nft::CtState`].
    pub ct: netfilter::nft::CtState,
    /// The packet mark on entry.
    pub mark: u32,
}

impl Packet {
    /// A new TCP connection's first packet from `src` to `dst:dport`.
    pub fn tcp(src: IpAddr, dst: IpAddr, dport: u16) -> Self {
        Self::new(src, dst, Protocol::Tcp, dport)
    }

    /// A new connection's first packet from `src` to `dst:dport` over `protocol`, from an
    /// ephemeral source port, with no interfaces and no mark.
    pub fn new(src: IpAddr, dst: IpAddr, protocol: Protocol, dport: u16) -> Self {
        Self {
            src,
            dst,
            protocol,
            sport: 40000,
            dport,
            in_iface: None,
            out_iface: None,
            ct: netfilter::nft::CtState::NEW,
            mark: 0,
        }
    }
}

/// The outcome of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The packet goes on.
    Accept,
    /// Dropped or rejected.
    Drop,
}

/// How deep jumps may nest before the walk gives up (the kernel's own limit is 16 for
/// iptables-nft jump stacks; loops are refused when written).
const MAX_DEPTH: usize = 32;

/// The verdict of `hook` for `pkt`: every table of the packet's family with a base chain
/// on that hook, in priority order; a drop anywhere drops.
pub fn verdict(rs: &Ruleset, hook: Hook, pkt: &Packet) -> Verdict {
    let family = Family::of_addr(&pkt.src);
    let mut bases: Vec<(i32, &TableId, &str, &Chain)> = rs
        .tables()
        .iter()
        .filter(|(t, _)| t.family == family)
        .flat_map(|(t, tab)| {
            tab.chains.iter().filter_map(move |(n, c)| {
                let b = c.base?;
                (b.hook == hook).then_some((b.priority, t, n.as_str(), c))
            })
        })
        .collect();
    bases.sort_by_key(|(p, t, n, _)| (*p, (*t).clone(), n.to_string()));
    let mut mark = pkt.mark;
    for (_, t, _, c) in bases {
        let v = match walk(rs, t, c, pkt, &mut mark, 0) {
            Walk::Verdict(v) => v,
            Walk::Return => match c.base.map(|b| b.policy) {
                Some(Policy::Drop) => Verdict::Drop,
                _ => Verdict::Accept,
            },
        };
        if v == Verdict::Drop {
            return Verdict::Drop;
        }
    }
    Verdict::Accept
}

enum Walk {
    Verdict(Verdict),
    Return,
}

fn walk(rs: &Ruleset, t: &TableId, c: &Chain, pkt: &Packet, mark: &mut u32, depth: usize) -> Walk {
    if depth > MAX_DEPTH {
        return Walk::Verdict(Verdict::Drop);
    }
    for e in c.entries() {
        let Entry::Owned(r) = e else { continue };
        if !matches(rs, &r.rule, pkt, *mark) {
            continue;
        }
        match &r.rule.target {
            Target::Accept => return Walk::Verdict(Verdict::Accept),
            Target::Drop | Target::Reject(_) => return Walk::Verdict(Verdict::Drop),
            Target::Return => return Walk::Return,
            Target::Jump(j) | Target::Goto(j) => {
                let Some(next) = rs.chain(t, j) else { continue };
                match walk(rs, t, next, pkt, mark, depth + 1) {
                    Walk::Verdict(v) => return Walk::Verdict(v),
                    // A goto does not come back here: the caller's walk resumes.
                    Walk::Return if matches!(r.rule.target, Target::Goto(_)) => {
                        return Walk::Return
                    }
                    Walk::Return => {}
                }
            }
            Target::SetXMark { value, mask } => *mark = (*mark & !mask) ^ value,
            Target::Log { .. } | Target::Nflog { .. } => {}
        }
    }
    Walk::Return
}

fn neg<T>(n: &Neg<T>, hit: bool) -> bool {
    hit != n.negate
}

fn iface_hit(i: &Iface, name: Option<&str>) -> bool {
    match (i, name) {
        (Iface::Exact(x), Some(n)) => x == n,
        (Iface::Prefix(p), Some(n)) => n.starts_with(p.as_str()),
        (_, None) => false,
    }
}

/// Whether `rule`'s matches all hold for the packet.
pub fn matches(rs: &Ruleset, rule: &Rule, pkt: &Packet, mark: u32) -> bool {
    if let Some(i) = &rule.in_iface {
        if !neg(i, iface_hit(&i.value, pkt.in_iface.as_deref())) {
            return false;
        }
    }
    if let Some(i) = &rule.out_iface {
        if !neg(i, iface_hit(&i.value, pkt.out_iface.as_deref())) {
            return false;
        }
    }
    if let Some(p) = &rule.protocol {
        if !neg(p, p.value.number() == pkt.protocol.number()) {
            return false;
        }
    }
    for (a, addr) in [(&rule.src, pkt.src), (&rule.dst, pkt.dst)] {
        if let Some(a) = a {
            if !neg(a, a.value.contains(&addr)) {
                return false;
            }
        }
    }
    let has_ports = pkt.protocol.has_ports();
    for m in &rule.matches {
        let ok = match m {
            Match::Ports { sport, dport } => {
                has_ports
                    && sport
                        .as_ref()
                        .is_none_or(|p| neg(p, (p.value.first..=p.value.last).contains(&pkt.sport)))
                    && dport
                        .as_ref()
                        .is_none_or(|p| neg(p, (p.value.first..=p.value.last).contains(&pkt.dport)))
            }
            Match::Multiport { dir, negate, ports } => {
                let port = match dir {
                    netfilter::nft::PortDir::Source => pkt.sport,
                    netfilter::nft::PortDir::Destination => pkt.dport,
                };
                has_ports && (ports.iter().any(|r| (r.first..=r.last).contains(&port)) != *negate)
            }
            Match::Set { negate, name, dirs } => {
                let addr = match dirs.first() {
                    Some(SetDir::Dst) => pkt.dst,
                    _ => pkt.src,
                };
                // A second dimension is the port of a hash:ip,port set (with the protocol)
                // or the interface of a hash:net,iface set: `src` the one the packet came
                // in on, `dst` the one it leaves by. A hook without that interface makes
                // the kernel's lookup fail (-EINVAL), which is no match.
                let hit = rs.set(name).is_some_and(|s| match dirs.get(1) {
                    None => s.matches(addr),
                    Some(d) if s.kind == SetType::HashNetIface => {
                        let iface = if *d == SetDir::Src {
                            &pkt.in_iface
                        } else {
                            &pkt.out_iface
                        };
                        iface
                            .as_deref()
                            .and_then(|i| IfName::new(i).ok())
                            .is_some_and(|i| s.matches_net_iface(addr, &i))
                    }
                    Some(d) => {
                        let port = if *d == SetDir::Dst {
                            pkt.dport
                        } else {
                            pkt.sport
                        };
                        has_ports && s.matches_ip_port(addr, pkt.protocol.number(), port)
                    }
                });
                hit != *negate
            }
            Match::Conntrack { negate, states } => (states.0 & pkt.ct.0 != 0) != *negate,
            Match::Mark {
                negate,
                value,
                mask,
            } => ((mark & mask) == *value) != *negate,
            Match::Comment(_) => true,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpSet, Polarity};
    use netfilter::ipset::Member;
    use netfilter::nft::{BaseChain, CtState};

    fn base(hook: Hook, policy: Policy) -> Option<BaseChain> {
        Some(BaseChain {
            hook,
            priority: 0,
            policy,
        })
    }

    #[test]
    fn walks_jumps_returns_sets_and_marks() {
        let t = TableId::filter(Family::Ipv4);
        let mut rs = Ruleset::default();
        rs.add_chain(&t, "FORWARD", base(Hook::Forward, Policy::Accept))
            .unwrap();
        rs.add_chain(&t, "nf-fw", None).unwrap();
        let mut iso = IpSet::new(Family::Ipv4, SetType::HashIp, Polarity::Restricts);
        iso.insert(Member::Ip("10.0.0.2".parse().unwrap())).unwrap();
        rs.add_set("nf-iso", iso).unwrap();
        let mut peers = IpSet::new(Family::Ipv4, SetType::HashNet, Polarity::Grants);
        peers
            .insert(Member::net("10.0.0.0/24".parse().unwrap()))
            .unwrap();
        peers
            .insert(Member::nomatch("10.0.0.128/25".parse().unwrap()))
            .unwrap();
        rs.add_set("nf-peers", peers).unwrap();
        rs.push_rule(&t, "FORWARD", Rule::new(Target::Jump("nf-fw".into())))
            .unwrap();
        let mut est = Rule::new(Target::Accept);
        est.matches.push(Match::Conntrack {
            negate: false,
            states: CtState::ESTABLISHED,
        });
        rs.push_rule(&t, "nf-fw", est).unwrap();
        let mut not_iso = Rule::new(Target::Return);
        not_iso.matches.push(Match::Set {
            negate: true,
            name: "nf-iso".into(),
            dirs: vec![SetDir::Dst],
        });
        rs.push_rule(&t, "nf-fw", not_iso).unwrap();
        let mut mark = Rule::new(Target::SetXMark {
            value: 0x1000,
            mask: 0x1000,
        });
        mark.matches.push(Match::Set {
            negate: false,
            name: "nf-peers".into(),
            dirs: vec![SetDir::Src],
        });
        rs.push_rule(&t, "nf-fw", mark).unwrap();
        let mut marked = Rule::new(Target::Accept);
        marked.matches.push(Match::Mark {
            negate: false,
            value: 0x1000,
            mask: 0x1000,
        });
        rs.push_rule(&t, "nf-fw", marked).unwrap();
        rs.push_rule(&t, "nf-fw", Rule::new(Target::Drop)).unwrap();

        let p = |s: &str, d: &str| Packet::tcp(s.parse().unwrap(), d.parse().unwrap(), 80);
        let v = |pkt: &Packet| verdict(&rs, Hook::Forward, pkt);
        // Not isolated: returns to FORWARD, whose policy accepts.
        assert_eq!(v(&p("192.0.2.1", "10.0.0.3")), Verdict::Accept);
        // Isolated: only marked peers pass; the nomatch half of the /24 does not.
        assert_eq!(v(&p("10.0.0.5", "10.0.0.2")), Verdict::Accept);
        assert_eq!(v(&p("10.0.0.200", "10.0.0.2")), Verdict::Drop);
        assert_eq!(v(&p("192.0.2.1", "10.0.0.2")), Verdict::Drop);
        // Replies of anything pass.
        let mut reply = p("192.0.2.1", "10.0.0.2");
        reply.ct = CtState::ESTABLISHED;
        assert_eq!(v(&reply), Verdict::Accept);
        // Other hooks and families are not walked.
        assert_eq!(
            verdict(&rs, Hook::Input, &p("192.0.2.1", "10.0.0.2")),
            Verdict::Accept
        );
        assert_eq!(v(&p("fd00::1", "fd00::2")), Verdict::Accept);
    }

    #[test]
    fn ip_port_sets_match_address_protocol_and_port() {
        let t = TableId::filter(Family::Ipv4);
        let mut rs = Ruleset::default();
        rs.add_chain(&t, "FORWARD", base(Hook::Forward, Policy::Drop))
            .unwrap();
        let mut named = IpSet::new(Family::Ipv4, SetType::HashIpPort, Polarity::Grants);
        named
            .insert(Member::IpPort {
                ip: "10.0.0.2".parse().unwrap(),
                protocol: 6,
                port: 8080,
            })
            .unwrap();
        assert!(named
            .insert(Member::Ip("10.0.0.3".parse().unwrap()))
            .is_err());
        rs.add_set("nf-np", named).unwrap();
        let mut r = Rule::new(Target::Accept);
        r.matches.push(Match::Set {
            negate: false,
            name: "nf-np".into(),
            dirs: vec![SetDir::Dst, SetDir::Dst],
        });
        rs.push_rule(&t, "FORWARD", r).unwrap();
        let v = |dst: &str, port: u16, proto: Protocol| {
            let mut pk = Packet::tcp("10.0.0.1".parse().unwrap(), dst.parse().unwrap(), port);
            pk.protocol = proto;
            verdict(&rs, Hook::Forward, &pk)
        };
        assert_eq!(v("10.0.0.2", 8080, Protocol::Tcp), Verdict::Accept);
        assert_eq!(v("10.0.0.2", 8081, Protocol::Tcp), Verdict::Drop);
        assert_eq!(v("10.0.0.2", 8080, Protocol::Udp), Verdict::Drop);
        assert_eq!(v("10.0.0.3", 8080, Protocol::Tcp), Verdict::Drop);
    }

    #[test]
    fn net_iface_sets_match_the_source_on_its_incoming_interface() {
        let t = TableId::filter(Family::Ipv4);
        let mut rs = Ruleset::default();
        rs.add_chain(&t, "FORWARD", base(Hook::Forward, Policy::Accept))
            .unwrap();
        let mut spoof = IpSet::new(Family::Ipv4, SetType::HashNetIface, Polarity::Restricts);
        let pod = IfName::new("vpod").unwrap();
        for (net, nomatch) in [
            ("0.0.0.0/1", false),
            ("128.0.0.0/1", false),
            ("10.0.0.5/32", true),
        ] {
            spoof
                .insert(Member::NetIface {
                    net: net.parse().unwrap(),
                    iface: pod,
                    nomatch,
                })
                .unwrap();
        }
        assert!(spoof
            .insert(Member::Ip("10.0.0.3".parse().unwrap()))
            .is_err());
        rs.add_set("nf-spoof4", spoof).unwrap();
        let mut r = Rule::new(Target::Drop);
        r.matches.push(Match::Set {
            negate: false,
            name: "nf-spoof4".into(),
            dirs: vec![SetDir::Src, SetDir::Src],
        });
        rs.push_rule(&t, "FORWARD", r).unwrap();
        let v = |src: &str, iface: Option<&str>| {
            let mut pk = Packet::tcp(src.parse().unwrap(), "10.0.1.1".parse().unwrap(), 80);
            pk.in_iface = iface.map(str::to_owned);
            verdict(&rs, Hook::Forward, &pk)
        };
        assert_eq!(v("10.0.0.5", Some("vpod")), Verdict::Accept);
        assert_eq!(v("10.0.0.6", Some("vpod")), Verdict::Drop);
        assert_eq!(v("192.0.2.1", Some("vpod")), Verdict::Drop);
        assert_eq!(v("10.0.0.6", Some("eth0")), Verdict::Accept);
        assert_eq!(v("10.0.0.6", None), Verdict::Accept);

        // The kernel's quirk, modelled: 10.0.0.6/32 on another interface ends the search
        // at /32, so vpod's /1 no longer catches 10.0.0.6.
        rs.set_mut("nf-spoof4")
            .unwrap()
            .insert(Member::NetIface {
                net: "10.0.0.6/32".parse().unwrap(),
                iface: IfName::new("other").unwrap(),
                nomatch: true,
            })
            .unwrap();
        let mut pk = Packet::tcp("10.0.0.6".parse().unwrap(), "10.0.1.1".parse().unwrap(), 80);
        pk.in_iface = Some("vpod".into());
        assert_eq!(verdict(&rs, Hook::Forward, &pk), Verdict::Accept);
    }
}
