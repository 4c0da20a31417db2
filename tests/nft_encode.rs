//! The encoder and decoder, byte for byte, without root: every golden shape must encode to
//! exactly the expression bytes iptables-nft-restore 1.8.9 wrote for it (captured in
//! `tests/fixtures/iptables-nft-1.8.9.exprs` by `nft_golden::capture_fixtures`), and
//! those bytes must decode back to the shape. Also pins the batch framing.

#[path = "common/shapes.rs"]
mod shapes;

use netfilter::nft::{self, expr, Family, Op, Position, Transaction};
use netfilter::nl;
use shapes::{shapes, CHAIN, SETS};

fn set_index(name: &str) -> Result<u16, netfilter::Error> {
    Ok(SETS.iter().position(|s| s.0 == name).expect("known set") as u16)
}

fn set_name(i: u16) -> Option<String> {
    SETS.get(i as usize).map(|s| s.0.to_string())
}

fn fixtures() -> Vec<(Family, Vec<u8>)> {
    include_str!("fixtures/iptables-nft-1.8.9.exprs")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            let fam = if w[1] == "ip" {
                Family::Ipv4
            } else {
                Family::Ipv6
            };
            let bytes = (0..w[2].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&w[2][i..i + 2], 16).unwrap())
                .collect();
            (fam, bytes)
        })
        .collect()
}

/// The NFTA_RULE_EXPRESSIONS payload of the one NEWRULE message in a batch.
fn exprs_of(batch: &[u8]) -> (u16, Vec<u8>) {
    let msgs: Vec<_> = nl::messages(batch).collect::<Result<_, _>>().unwrap();
    assert_eq!(msgs.len(), 3, "begin, rule, end");
    let m = msgs[1];
    assert_eq!(m.ty, (10 << 8) | 6, "NFT_MSG_NEWRULE");
    let e = m
        .attrs(4)
        .flatten()
        .find(|a| a.ty == 4)
        .expect("NFTA_RULE_EXPRESSIONS");
    (m.flags, e.data.to_vec())
}

#[test]
fn every_shape_encodes_to_iptables_nft_bytes() {
    let shapes = shapes();
    let fixtures = fixtures();
    assert_eq!(shapes.len(), fixtures.len(), "regenerate the fixtures");
    for (i, ((family, rule), (ffam, want))) in shapes.iter().zip(&fixtures).enumerate() {
        assert_eq!(family, ffam, "shape #{i}");
        let mut tx = Transaction::new();
        tx.push(Op::AddRule {
            family: *family,
            table: "filter".into(),
            chain: CHAIN.into(),
            rule: rule.clone(),
            position: Position::Append,
        });
        let batch = tx.encode(100, None, &set_index, true).unwrap();
        let (flags, got) = exprs_of(&batch);
        assert_eq!(
            flags,
            nl::NLM_F_REQUEST
                | nl::NLM_F_ACK
                | nl::NLM_F_ECHO
                | nl::NLM_F_CREATE
                | nl::NLM_F_APPEND
        );
        assert_eq!(got, *want, "shape #{i} `{}`", rule.to_iptables(*family));
    }
}

#[test]
fn iptables_nft_bytes_decode_to_every_shape() {
    for (i, ((family, rule), (_, bytes))) in shapes().iter().zip(fixtures()).enumerate() {
        let exprs = expr::decode_exprs(&bytes).unwrap();
        let (got, counters) = nft::decode::lift(&exprs, *family, &set_name)
            .unwrap_or_else(|| panic!("shape #{i} does not decode: {exprs:?}"));
        assert_eq!(&got, rule, "shape #{i}");
        assert_eq!(counters, (0, 0));
    }
}

#[test]
fn batch_framing() {
    let mut tx = Transaction::new();
    tx.push(Op::AddTable {
        family: Family::Ipv4,
        table: "filter".into(),
    });
    let b = tx.encode(7, Some(0x0102_0304), &set_index, true).unwrap();
    let begin: Vec<u8> = [
        &28u32.to_ne_bytes()[..],
        &0x10u16.to_ne_bytes(), // NFNL_MSG_BATCH_BEGIN
        &nl::NLM_F_REQUEST.to_ne_bytes(),
        &7u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &[0, 0, 0, 10], // AF_UNSPEC, v0, res_id = NFNL_SUBSYS_NFTABLES (big-endian)
        &8u16.to_ne_bytes(),
        &1u16.to_ne_bytes(), // NFNL_BATCH_GENID
        &[1, 2, 3, 4],
    ]
    .concat();
    assert_eq!(&b[..28], &begin[..]);
    let table: Vec<u8> = [
        &40u32.to_ne_bytes()[..],
        &(10u16 << 8).to_ne_bytes(), // NFT_MSG_NEWTABLE (0) of subsystem 10
        &(nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_CREATE).to_ne_bytes(),
        &8u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &[2, 0, 0, 0],
        &11u16.to_ne_bytes(),
        &1u16.to_ne_bytes(),
        b"filter\0\0",
        &8u16.to_ne_bytes(),
        &2u16.to_ne_bytes(),
        &[0, 0, 0, 0],
    ]
    .concat();
    assert_eq!(&b[28..68], &table[..]);
    assert_eq!(&b[68..72], &20u32.to_ne_bytes());
    assert_eq!(&b[72..74], &0x11u16.to_ne_bytes()); // NFNL_MSG_BATCH_END
    assert_eq!(&b[76..80], &9u32.to_ne_bytes());
    assert_eq!(b.len(), 88);
}

#[test]
fn invalid_rules_are_refused_before_encoding() {
    use netfilter::nft::{Match, Neg, PortRange, Protocol, Rule, Target};
    let bad = [
        Rule {
            matches: vec![Match::Ports {
                sport: None,
                dport: Some(Neg::is(PortRange::single(80))),
            }],
            ..Rule::new(Target::Accept)
        },
        Rule {
            matches: vec![Match::Comment("x".repeat(256))],
            ..Rule::new(Target::Accept)
        },
        Rule::new(Target::Jump("c".repeat(29))),
        Rule {
            protocol: Some(Neg::is(Protocol::Udp)),
            ..Rule::new(Target::Reject(nft::RejectWith::TcpReset))
        },
        Rule {
            src: Some(Neg::is("fd00::/8".parse().unwrap())),
            ..Rule::new(Target::Accept)
        },
    ];
    for r in bad {
        let mut tx = Transaction::new();
        tx.push(Op::AddRule {
            family: Family::Ipv4,
            table: "filter".into(),
            chain: "c".into(),
            rule: r.clone(),
            position: Position::Append,
        });
        let e = tx.encode(1, None, &set_index, true).unwrap_err();
        assert!(matches!(e, netfilter::Error::Invalid { .. }), "{r:?}: {e}");
        assert!(e.to_string().contains("rule"), "{e}");
    }
}
