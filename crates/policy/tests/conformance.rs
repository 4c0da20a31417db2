//! Runs the conformance table against the reference evaluator.

#[path = "conformance/cases.rs"]
mod cases;

use std::collections::BTreeSet;

use policy::{address, allowed};

#[test]
fn evaluator_agrees_with_every_hand_written_expectation() {
    let mut failures = Vec::new();
    let mut probes = 0;
    let cases = cases::all();
    let count = cases.len();
    for case in cases {
        let cluster = case.cluster();
        for probe in &case.probes {
            probes += 1;
            let got = allowed(
                &cluster,
                &probe.src,
                &probe.dst,
                probe.protocol,
                probe.port,
                probe.family,
            );
            if got != probe.expected {
                failures.push(format!(
                    "{}: {probe}, evaluator says {}",
                    case.name,
                    if got { "allow" } else { "deny" }
                ));
            }
        }
    }
    eprintln!("{count} cases, {probes} probes");
    assert!(
        failures.is_empty(),
        "{} of {probes} probes disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn table_is_large_and_well_formed() {
    let cases = cases::all();
    assert!(cases.len() >= 70, "only {} cases", cases.len());
    let mut names = BTreeSet::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
        assert!(
            !case.about.is_empty(),
            "{} says nothing about itself",
            case.name
        );
        // A dataplane test wires one network namespace per pod.
        assert!(
            case.pods.len() <= 8,
            "{} has {} pods",
            case.name,
            case.pods.len()
        );
        let cluster = case.cluster();
        assert_eq!(
            cluster.pods().count(),
            case.pods.len(),
            "{}: pod lost in conversion",
            case.name
        );
        assert_eq!(
            cluster.policies().count(),
            case.policies.len(),
            "{}: duplicate policy key",
            case.name
        );
        for pod in cluster.pods() {
            assert!(
                pod.ipv4.is_some() && pod.ipv6.is_some(),
                "{}: {} is not dual-stack",
                case.name,
                pod.key()
            );
        }
        // A probe whose endpoint has no address in its family tests nothing.
        for probe in &case.probes {
            assert!(
                address(&cluster, &probe.src, probe.family).is_some()
                    && address(&cluster, &probe.dst, probe.family).is_some(),
                "{}: {probe} has an endpoint without an address",
                case.name
            );
        }
    }
}

#[test]
fn table_has_both_outcomes_in_every_family_and_protocol() {
    // A table that only ever expects "allow" (or only "deny") for a family or a
    // protocol would pass an evaluator that ignores it.
    let cases = cases::all();
    for family in policy::Family::ALL {
        for protocol in policy::Protocol::ALL {
            for expected in [true, false] {
                let n = cases
                    .iter()
                    .flat_map(|c| &c.probes)
                    .filter(|p| {
                        p.family == family && p.protocol == protocol && p.expected == expected
                    })
                    .count();
                assert!(n > 0, "no {protocol} {family} probe expects {expected}");
            }
        }
    }
}
