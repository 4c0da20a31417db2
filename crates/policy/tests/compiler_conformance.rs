//! The conformance table through the compiler: every probe of every case is
//! walked as a packet through the compiled ruleset (no kernel), and the
//! verdict must be the case's hand-written expectation.

#[path = "conformance/cases.rs"]
mod cases;

use policy::{address, Compiler, CompilerConfig, Endpoint, Family, Protocol};
use ruleset::sim::{verdict, Packet, Verdict};
use ruleset::{CtState, Hook};

fn nft_protocol(p: Protocol) -> ruleset::Protocol {
    match p {
        Protocol::Tcp => ruleset::Protocol::Tcp,
        Protocol::Udp => ruleset::Protocol::Udp,
        Protocol::Sctp => ruleset::Protocol::Sctp,
    }
}

fn nf_family(f: Family) -> ruleset::Family {
    match f {
        Family::Ipv4 => ruleset::Family::Ipv4,
        Family::Ipv6 => ruleset::Family::Ipv6,
    }
}

#[test]
fn compiled_rulesets_agree_with_every_conformance_probe() {
    let (mut pass, mut skipped, mut failures) = (0, 0, Vec::new());
    let cases = cases::all();
    for case in &cases {
        let cluster = case.cluster();
        let mut c = Compiler::new(CompilerConfig::default()).unwrap();
        let rs = c.compile(&cluster).unwrap().clone();
        for probe in &case.probes {
            if cases::Case::is_self_probe(probe) {
                skipped += 1;
                continue;
            }
            let ip = |e: &Endpoint| address(&cluster, e, probe.family).expect("table checks this");
            let pkt = Packet::new(
                ip(&probe.src),
                ip(&probe.dst),
                nft_protocol(probe.protocol),
                probe.port,
            );
            let seen = verdict(&rs, Hook::Forward, &pkt) == Verdict::Accept;
            if seen == probe.expected {
                pass += 1;
            } else {
                failures.push(format!(
                    "case {}: {probe}, compiled ruleset says {}\n{}",
                    case.name,
                    if seen { "allow" } else { "deny" },
                    ruleset::render::iptables_save(&rs, nf_family(probe.family)),
                ));
            }
        }
    }
    eprintln!(
        "{} cases: {pass} probes pass, {} fail, {skipped} self-probes skipped",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} probes disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn replies_of_any_connection_pass_and_invalid_packets_drop() {
    // The first case with a deny: its denied probe's reply direction passes
    // as ESTABLISHED, and an INVALID packet drops even where NEW is allowed.
    let cases = cases::all();
    let (case, probe) = cases
        .iter()
        .find_map(|c| {
            c.probes
                .iter()
                .find(|p| !p.expected && !cases::Case::is_self_probe(p))
                .map(|p| (c, p))
        })
        .expect("the table has denials");
    let cluster = case.cluster();
    let mut c = Compiler::new(CompilerConfig::default()).unwrap();
    let rs = c.compile(&cluster).unwrap();
    let ip = |e: &Endpoint| address(&cluster, e, probe.family).unwrap();
    let mut pkt = Packet::new(
        ip(&probe.src),
        ip(&probe.dst),
        nft_protocol(probe.protocol),
        probe.port,
    );
    assert_eq!(verdict(rs, Hook::Forward, &pkt), Verdict::Drop);
    pkt.ct = CtState::ESTABLISHED;
    assert_eq!(verdict(rs, Hook::Forward, &pkt), Verdict::Accept);
    pkt.ct = CtState::INVALID;
    assert_eq!(verdict(rs, Hook::Forward, &pkt), Verdict::Drop);
}
