//! From decoded expressions back to the rule vocabulary: the inverse of `encode`.
//!
//! Only the exact shapes the encoder (and iptables-nft) emit are recognised; anything
//! else returns `None`, and the caller keeps the rule as opaque bytes instead of guessing.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::expr::{cmp_op, meta_key, range_op, verdict, Expr, NFT_REG_1};
use super::rule::{Family, Iface, Match, Neg, PortRange, Protocol, Rule, Target};
use super::xt;

/// Recognises `exprs` as a netfence/iptables rule. `set_name` maps an ipset index back to
/// its name. Returns the rule and its counters.
pub fn lift(
    exprs: &[Expr],
    family: Family,
    set_name: &dyn Fn(u16) -> Option<String>,
) -> Option<(Rule, (u64, u64))> {
    let mut p = Parser {
        e: exprs,
        i: 0,
        family,
    };
    let mut rule = Rule::new(Target::Accept);
    // Header matches, in iptables-nft's order; each is optional.
    if let Some(i) = p.iface(meta_key::IIFNAME) {
        rule.in_iface = Some(i);
    }
    if let Some(i) = p.iface(meta_key::OIFNAME) {
        rule.out_iface = Some(i);
    }
    if let Some((neg, n)) = p.meta_cmp(meta_key::L4PROTO, 1) {
        rule.protocol = Some(Neg {
            negate: neg,
            value: Protocol::from_number(n[0]),
        });
    }
    let (soff, doff) = match family {
        Family::Ipv4 => (12, 16),
        Family::Ipv6 => (8, 24),
    };
    rule.src = p.addr(soff);
    rule.dst = p.addr(doff);
    let proto = rule.protocol.as_ref().map(|p| p.value);
    loop {
        match p.peek()? {
            // Native TCP/UDP ports: `-m tcp --sport --dport`, where the match stood.
            Expr::Payload { base: 2, .. }
                if matches!(proto, Some(Protocol::Tcp | Protocol::Udp)) =>
            {
                let sport = p.port(0);
                let dport = p.port(2);
                if sport.is_none() && dport.is_none() {
                    return None;
                }
                rule.matches.push(Match::Ports { sport, dport });
            }
            Expr::Counter { packets, bytes } => {
                let counters = (*packets, *bytes);
                p.i += 1;
                rule.target = p.target()?;
                if p.i != exprs.len() {
                    return None;
                }
                return Some((rule, counters));
            }
            Expr::Match { name, rev, info } => {
                let m = match (name.as_str(), *rev) {
                    (xt::comment::NAME, 0) => Match::Comment(xt::comment::decode(info)?),
                    (xt::set::NAME, xt::set::REV) => {
                        let (idx, dirs, negate) = xt::set::decode(info)?;
                        Match::Set {
                            negate,
                            name: set_name(idx)?,
                            dirs,
                        }
                    }
                    (xt::multiport::NAME, xt::multiport::REV) => {
                        let (dir, ports, negate) = xt::multiport::decode(info)?;
                        Match::Multiport { dir, negate, ports }
                    }
                    (xt::conntrack::NAME, xt::conntrack::REV) => {
                        let (states, negate) = xt::conntrack::decode(info)?;
                        Match::Conntrack { negate, states }
                    }
                    (xt::sctp::NAME, 0) if proto == Some(Protocol::Sctp) => {
                        let (s, d) = xt::sctp::decode(info)?;
                        let f = |x: Option<(PortRange, bool)>| {
                            x.map(|(value, negate)| Neg { negate, value })
                        };
                        Match::Ports {
                            sport: f(s),
                            dport: f(d),
                        }
                    }
                    _ => return None,
                };
                p.i += 1;
                rule.matches.push(m);
            }
            Expr::Meta {
                key: meta_key::MARK,
                ..
            } => {
                let (negate, value, mask) = p.mark()?;
                rule.matches.push(Match::Mark {
                    negate,
                    value,
                    mask,
                });
            }
            _ => return None,
        }
    }
}

struct Parser<'a> {
    e: &'a [Expr],
    i: usize,
    family: Family,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Expr> {
        self.e.get(self.i)
    }

    fn at(&self, k: usize) -> Option<&'a Expr> {
        self.e.get(self.i + k)
    }

    /// `meta load KEY; cmp eq|neq DATA` with DATA of `len` bytes (any length if 0).
    fn meta_cmp(&mut self, key: u32, len: usize) -> Option<(bool, Vec<u8>)> {
        match (self.at(0)?, self.at(1)?) {
            (
                Expr::Meta {
                    key: k,
                    dreg: NFT_REG_1,
                },
                Expr::Cmp {
                    sreg: NFT_REG_1,
                    op,
                    data,
                },
            ) if *k == key && (len == 0 || data.len() == len) && *op <= cmp_op::NEQ => {
                self.i += 2;
                Some((*op == cmp_op::NEQ, data.clone()))
            }
            _ => None,
        }
    }

    fn iface(&mut self, key: u32) -> Option<Neg<Iface>> {
        let save = self.i;
        let (negate, data) = self.meta_cmp(key, 0)?;
        let value = match data.split_last() {
            Some((0, name)) => Iface::Exact(String::from_utf8(name.to_vec()).ok()?),
            Some(_) => Iface::Prefix(String::from_utf8(data.clone()).ok()?),
            None => {
                self.i = save;
                return None;
            }
        };
        if data.len() > 16 {
            self.i = save;
            return None;
        }
        Some(Neg { negate, value })
    }

    fn addr(&mut self, offset: u32) -> Option<Neg<IpNet>> {
        let alen = match self.family {
            Family::Ipv4 => 4,
            Family::Ipv6 => 16,
        };
        let Expr::Payload {
            base: 1,
            offset: o,
            len,
            dreg: NFT_REG_1,
        } = self.at(0)?
        else {
            return None;
        };
        if *o != offset || *len == 0 || *len > alen {
            return None;
        }
        let len = *len as usize;
        let (mask, cmp_at) = match self.at(1)? {
            Expr::Bitwise {
                sreg: NFT_REG_1,
                dreg: NFT_REG_1,
                mask,
                xor,
            } if len == alen as usize
                && mask.len() == len
                && xor.iter().all(|&b| b == 0)
                && xor.len() == len =>
            {
                (Some(mask.clone()), 2)
            }
            _ => (None, 1),
        };
        let Expr::Cmp {
            sreg: NFT_REG_1,
            op,
            data,
        } = self.at(cmp_at)?
        else {
            return None;
        };
        if data.len() != len || *op > cmp_op::NEQ {
            return None;
        }
        let prefix = match &mask {
            // A contiguous mask of /n with n % 8 != 0 is the only bitwise iptables emits.
            Some(m) => {
                let ones: u32 = m.iter().map(|b| b.count_ones()).sum();
                let mut want = vec![0u8; len];
                for (i, w) in want.iter_mut().enumerate() {
                    let bits = (ones as usize).saturating_sub(i * 8).min(8);
                    *w = (0xffu16 << (8 - bits)) as u8;
                }
                if *m != want || ones % 8 == 0 {
                    return None;
                }
                ones as u8
            }
            None => (len * 8) as u8,
        };
        let mut full = vec![0u8; alen as usize];
        full[..len].copy_from_slice(data);
        let net = match self.family {
            Family::Ipv4 => IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(<[u8; 4]>::try_from(&full[..]).ok()?), prefix).ok()?,
            ),
            Family::Ipv6 => IpNet::V6(
                Ipv6Net::new(
                    Ipv6Addr::from(<[u8; 16]>::try_from(&full[..]).ok()?),
                    prefix,
                )
                .ok()?,
            ),
        };
        if net.network() != net.addr() {
            return None;
        }
        self.i += cmp_at + 1;
        Some(Neg {
            negate: *op == cmp_op::NEQ,
            value: net,
        })
    }

    fn port(&mut self, offset: u32) -> Option<Neg<PortRange>> {
        let Expr::Payload {
            base: 2,
            offset: o,
            len: 2,
            dreg: NFT_REG_1,
        } = self.at(0)?
        else {
            return None;
        };
        if *o != offset {
            return None;
        }
        let be = |d: &[u8]| -> Option<u16> { Some(u16::from_be_bytes(d.try_into().ok()?)) };
        let r = match self.at(1)? {
            Expr::Cmp {
                sreg: NFT_REG_1,
                op,
                data,
            } if *op <= cmp_op::NEQ => Neg {
                negate: *op == cmp_op::NEQ,
                value: PortRange::single(be(data)?),
            },
            Expr::Range {
                sreg: NFT_REG_1,
                op,
                from,
                to,
            } if *op <= range_op::NEQ => Neg {
                negate: *op == range_op::NEQ,
                value: PortRange::range(be(from)?, be(to)?),
            },
            _ => return None,
        };
        self.i += 2;
        Some(r)
    }

    fn mark(&mut self) -> Option<(bool, u32, u32)> {
        let (
            Expr::Meta {
                key: meta_key::MARK,
                dreg: NFT_REG_1,
            },
            Expr::Bitwise {
                sreg: NFT_REG_1,
                dreg: NFT_REG_1,
                mask,
                xor,
            },
            Expr::Cmp {
                sreg: NFT_REG_1,
                op,
                data,
            },
        ) = (self.at(0)?, self.at(1)?, self.at(2)?)
        else {
            return None;
        };
        let ne = |d: &[u8]| -> Option<u32> { Some(u32::from_ne_bytes(d.try_into().ok()?)) };
        if ne(xor)? != 0 || *op > cmp_op::NEQ {
            return None;
        }
        let r = (*op == cmp_op::NEQ, ne(data)?, ne(mask)?);
        self.i += 3;
        Some(r)
    }

    fn target(&mut self) -> Option<Target> {
        let t = match self.peek()? {
            Expr::Verdict { code, chain } => match (*code, chain) {
                (verdict::ACCEPT, None) => Target::Accept,
                (verdict::DROP, None) => Target::Drop,
                (verdict::RETURN, None) => Target::Return,
                (verdict::JUMP, Some(c)) => Target::Jump(c.clone()),
                (verdict::GOTO, Some(c)) => Target::Goto(c.clone()),
                _ => return None,
            },
            Expr::Target { name, rev, info } => match (name.as_str(), *rev) {
                (xt::reject::NAME, 0) => {
                    Target::Reject(xt::reject::decode(info, self.family == Family::Ipv6)?)
                }
                (xt::mark::NAME, xt::mark::REV) => {
                    let (value, mask) = xt::mark::decode(info)?;
                    Target::SetXMark { value, mask }
                }
                (xt::log::NAME, 0) => {
                    let (prefix, level) = xt::log::decode(info)?;
                    Target::Log { prefix, level }
                }
                _ => return None,
            },
            Expr::Log {
                group: Some(group),
                prefix,
                snaplen: None,
                qthreshold: None | Some(0),
                level: None,
                flags: None,
            } => Target::Nflog {
                group: *group,
                prefix: prefix.clone(),
            },
            _ => return None,
        };
        self.i += 1;
        Some(t)
    }
}
