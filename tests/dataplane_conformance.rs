//! The policy compiler's conformance table on real packets.
//!
//! For every case of `crates/policy/tests/conformance/cases.rs`, a sandbox
//! (`tests/dataplane`) gets a node namespace and one namespace per pod and per external
//! host; netfence's engine programs the node through its public API with the case's
//! namespaces, pods and policies (each pod annotated with its veth, so anti-spoofing is on
//! too); then the whole matrix is probed with real TCP, UDP and SCTP packets, in IPv4 and
//! IPv6, and must equal the reference evaluator's (`policy::allowed`) cell for cell.
//!
//! The matrix of a case is every ordered pair of its hosts (pods to themselves included,
//! external host to external host left out: no policy governs that) on every protocol and
//! port any of its probes names, in both families: a superset of the case's hand-written
//! probes, each of which must also agree with the evaluator. Before netfence starts, the
//! same matrix is probed once and must be open everywhere: a broken sandbox is reported as
//! such, not as a policy mismatch.
//!
//! Cases run a few at a time, each in its own namespaces, so that the whole table costs a
//! few probe timeouts per worker rather than one per cell. Run with `--nocapture` for the
//! counts and timings. Needs root.

mod common;
mod dataplane;

#[path = "../crates/policy/tests/conformance/cases.rs"]
mod cases;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cases::Case;
use dataplane::k8s::{self, Objects};
use dataplane::{HostSpec, Outcome, Target, World};
use policy::{Family, Protocol};

/// How long a probe waits for an answer before it counts as dropped. An allowed probe
/// answers in well under a millisecond (the slowest is reported); the margin is for a
/// loaded CI machine, and costs one timeout per case, not per cell.
const TIMEOUT: Duration = Duration::from_millis(500);

/// Cases probed at the same time, at most: each holds up to about 1,000 sockets (one per
/// cell, 770 in the largest case, and the listeners), so fewer where the open-files limit
/// is lower.
const WORKERS: usize = 6;

/// Failing cases whose node dump is printed in full.
const DUMPS: usize = 3;

/// What one case showed.
#[derive(Default)]
struct Report {
    name: &'static str,
    /// Cells per (family, protocol): (probed, of which the evaluator allows).
    cells: BTreeMap<(Family, Protocol), (usize, usize)>,
    /// Hand-written probes checked.
    hand_written: usize,
    /// The slowest answer of an allowed probe: after it was sent, and after the last probe
    /// of its matrix was sent (the part the timeout bounds).
    slowest: (Duration, Duration),
    /// Wall time of the case, sandbox included.
    took: Duration,
    /// Cells probed (after netfence).
    total: usize,
    /// Mismatching cells, each on one line.
    mismatches: Vec<String>,
    /// The node's ruleset when something mismatched.
    dump: Option<String>,
}

/// The case's hosts: its pods, then its external hosts.
fn hosts(case: &Case) -> Vec<HostSpec> {
    let mut v: Vec<HostSpec> = case.pods.iter().map(HostSpec::pod).collect();
    v.extend(
        case.externals
            .iter()
            .map(|e| HostSpec::external(e.alias, e.ipv4, e.ipv6)),
    );
    v
}

fn run_case(case: &Case) -> Report {
    let start = Instant::now();
    let mut report = Report {
        name: case.name,
        ..Report::default()
    };
    let objects = Objects {
        namespaces: case.namespaces.clone(),
        pods: case.pods.clone(),
        policies: case.policies.clone(),
    };
    let cluster = objects.cluster();
    let ports: BTreeSet<(Protocol, u16)> =
        case.probes.iter().map(|p| (p.protocol, p.port)).collect();
    let world = World::build("dpc", &hosts(case), &ports);
    let cells = world.matrix(&ports);

    // The hand-written probes are cells of the matrix, and agree with the evaluator.
    let in_matrix: HashSet<&Target> = cells.iter().collect();
    for p in &case.probes {
        let t = Target {
            src: world.host_of(&p.src).expect("probe source is a host"),
            dst: world.host_of(&p.dst).expect("probe destination is a host"),
            protocol: p.protocol,
            port: p.port,
            family: p.family,
        };
        assert!(in_matrix.contains(&t), "{p} is not in the matrix");
        let evaluator = world.allowed(&cluster, &t);
        if evaluator != p.expected {
            report.mismatches.push(format!(
                "  the table expects {p}, the evaluator says {}",
                if evaluator { "allow" } else { "deny" }
            ));
        }
        report.hand_written += 1;
    }

    // Without netfence the sandbox is open everywhere.
    world.assert_open(&cells, TIMEOUT);

    let engine = k8s::start_engine(&world);
    k8s::converge(&engine, &objects.wired(&world));
    let seen = world.probe(&cells, TIMEOUT);
    for (t, o) in cells.iter().zip(&seen) {
        let allowed = world.allowed(&cluster, t);
        report.total += 1;
        let count = report.cells.entry((t.family, t.protocol)).or_default();
        count.0 += 1;
        count.1 += usize::from(allowed);
        if let (Outcome::Allowed, Some(l), Some(w)) = (&o.outcome, o.latency, o.waited) {
            report.slowest = (report.slowest.0.max(l), report.slowest.1.max(w));
        }
        let expected = Outcome::expected(allowed);
        if o.outcome != expected {
            report.mismatches.push(format!(
                "  {}: expected {expected}, seen {}",
                world.describe(t),
                o.outcome
            ));
        }
    }
    if !report.mismatches.is_empty() {
        report.dump = Some(world.node_dump());
    }
    drop(engine);
    drop(world);
    report.took = start.elapsed();
    report
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

#[test]
fn every_conformance_case_on_real_packets() {
    let workers = (dataplane::sys::raise_fd_limit() / 1500).clamp(1, WORKERS as u64) as usize;
    let started = Instant::now();
    let cases = cases::all();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { return };
                let report =
                    catch_unwind(AssertUnwindSafe(|| run_case(case))).unwrap_or_else(|e| Report {
                        name: case.name,
                        mismatches: vec![format!("  panicked: {}", panic_message(&*e))],
                        ..Report::default()
                    });
                reports.lock().unwrap().push(report);
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by_key(|r| cases.iter().position(|c| c.name == r.name));

    let mut totals: BTreeMap<(Family, Protocol), (usize, usize)> = BTreeMap::new();
    for r in &reports {
        for (k, (n, a)) in &r.cells {
            let t = totals.entry(*k).or_default();
            t.0 += n;
            t.1 += a;
        }
    }
    let cells: usize = totals.values().map(|(n, _)| n).sum();
    let slowest = reports
        .iter()
        .map(|r| r.slowest.0)
        .max()
        .unwrap_or_default();
    let waited = reports
        .iter()
        .map(|r| r.slowest.1)
        .max()
        .unwrap_or_default();
    let longest = reports.iter().max_by_key(|r| r.took);
    let largest = reports.iter().max_by_key(|r| r.total);
    eprintln!(
        "{} cases, {cells} cells probed after netfence (as many before it), {} hand-written \
         probes among them, in {:.1?} with {workers} workers and a {TIMEOUT:?} timeout",
        reports.len(),
        reports.iter().map(|r| r.hand_written).sum::<usize>(),
        started.elapsed()
    );
    for ((family, protocol), (n, allowed)) in &totals {
        eprintln!(
            "  {family} {protocol:<4} {n:>6} cells: {allowed:>6} allowed, {:>6} denied",
            n - allowed
        );
    }
    eprintln!(
        "  slowest allowed answer: {slowest:.1?} after its probe was sent, \
         {waited:.1?} after its matrix was all sent (the timeout bounds the latter)"
    );
    if let (Some(l), Some(c)) = (longest, largest) {
        eprintln!(
            "  longest case: {} ({:.1?}); largest: {} ({} cells)",
            l.name, l.took, c.name, c.total
        );
    }

    let failed: Vec<&Report> = reports
        .iter()
        .filter(|r| !r.mismatches.is_empty())
        .collect();
    if failed.is_empty() {
        return;
    }
    let mut msg = format!(
        "{} of {} cases disagree with the evaluator on real packets:\n",
        failed.len(),
        reports.len()
    );
    for (n, r) in failed.iter().enumerate() {
        let about = cases
            .iter()
            .find(|c| c.name == r.name)
            .map_or("", |c| c.about);
        msg += &format!(
            "\ncase {} ({about}): {} cells differ\n{}\n",
            r.name,
            r.mismatches.len(),
            r.mismatches.join("\n")
        );
        match (&r.dump, n < DUMPS) {
            (Some(d), true) => msg += d,
            (Some(_), false) => msg += "(node dump left out: see the first cases)\n",
            (None, _) => {}
        }
    }
    panic!("{msg}");
}

/// The prober itself: a closed port is a refusal, a policy's drop is a timeout, and an
/// SCTP INIT either arrives or not; in both families.
#[test]
fn prober_tells_allowed_refused_and_dropped_apart() {
    use common::k8s::{namespace, pod, policy, sel};

    let objects = Objects {
        namespaces: vec![namespace("a", &[])],
        pods: vec![
            pod(
                "a",
                "client",
                &[("app", "client")],
                &["10.244.9.1", "fd00:9::1"],
            ),
            pod(
                "a",
                "server",
                &[("app", "server")],
                &["10.244.9.2", "fd00:9::2"],
            ),
        ],
        policies: vec![],
    };
    let listen: BTreeSet<(Protocol, u16)> = [(Protocol::Tcp, 80), (Protocol::Udp, 53)].into();
    let specs: Vec<HostSpec> = objects.pods.iter().map(HostSpec::pod).collect();
    let world = World::build("dpself", &specs, &listen);
    let targets: Vec<Target> = [
        (Protocol::Tcp, 80),
        (Protocol::Tcp, 81),
        (Protocol::Udp, 53),
        (Protocol::Udp, 54),
        (Protocol::Sctp, 3868),
    ]
    .into_iter()
    .flat_map(|(protocol, port)| {
        Family::ALL.map(|family| Target {
            src: 0,
            dst: 1,
            protocol,
            port,
            family,
        })
    })
    .collect();
    let outcomes = |w: &World| -> Vec<Outcome> {
        w.probe(&targets, TIMEOUT)
            .into_iter()
            .map(|o| o.outcome)
            .collect()
    };
    use Outcome::{Allowed, Dropped, Refused};
    let open = [
        Allowed, Allowed, Refused, Refused, Allowed, Allowed, Refused, Refused, Allowed, Allowed,
    ];
    assert_eq!(outcomes(&world), open, "before netfence");

    let engine = k8s::start_engine(&world);
    k8s::converge(&engine, &objects.wired(&world));
    assert_eq!(outcomes(&world), open, "netfence without a policy");

    // Deny all ingress into the server: every probe to it is dropped, open or closed port.
    let deny = Objects {
        policies: vec![policy("a", "deny", sel(&[("app", "server")]), None, 80)],
        ..objects.clone()
    };
    k8s::apply(&engine, &objects.wired(&world).diff(&deny.wired(&world)));
    assert_eq!(outcomes(&world), vec![Dropped; 10], "server isolated");
}

/// Namespaces hashed into shared dispatch buckets (`dispatch_flat_max` 0 for five
/// namespaces: two buckets, so at least one holds several) decide real packets as the
/// evaluator does, in both directions and both families; and so they do again after
/// four namespaces lose their policies and dispatch goes back to one plain line.
#[test]
fn namespaces_in_shared_dispatch_buckets_decide_real_packets_as_the_evaluator() {
    use common::k8s::{namespace, pod, policy, sel};

    let names = ["a", "b", "c", "d", "e"];
    let mut objects = Objects::default();
    for (i, n) in names.iter().enumerate() {
        objects.namespaces.push(namespace(n, &[]));
        for (j, app) in ["client", "server"].iter().enumerate() {
            let host = 2 * i + j + 1;
            objects.pods.push(pod(
                n,
                app,
                &[("app", app)],
                &[&format!("10.244.10.{host}"), &format!("fd00:10::{host:x}")],
            ));
        }
        // Servers take TCP 80 from their own namespace's client; clients may send only
        // to their own namespace's server, on TCP 80.
        objects.policies.push(policy(
            n,
            "in",
            sel(&[("app", "server")]),
            Some(sel(&[("app", "client")])),
            80,
        ));
        let mut out = policy(
            n,
            "out",
            sel(&[("app", "client")]),
            Some(sel(&[("app", "server")])),
            80,
        );
        let spec = out.spec.as_mut().expect("policy() sets a spec");
        let rule = spec.ingress.take().expect("a rule")[0].clone();
        spec.egress = Some(vec![
            policy::k8s_openapi::api::networking::v1::NetworkPolicyEgressRule {
                to: rule.from,
                ports: rule.ports,
            },
        ]);
        spec.policy_types = Some(vec!["Egress".into()]);
        objects.policies.push(out);
    }
    let ports: BTreeSet<(Protocol, u16)> = [(Protocol::Tcp, 80)].into();
    let specs: Vec<HostSpec> = objects.pods.iter().map(HostSpec::pod).collect();
    let world = World::build("dpbkt", &specs, &ports);
    let cells = world.matrix(&ports);
    world.assert_open(&cells, TIMEOUT);
    let agree = |o: &Objects, what: &str| {
        let cluster = o.cluster();
        let seen = world.probe(&cells, TIMEOUT);
        let wrong: Vec<String> = cells
            .iter()
            .zip(&seen)
            .filter(|(t, s)| s.outcome != Outcome::expected(world.allowed(&cluster, t)))
            .map(|(t, s)| format!("  {}: seen {}", world.describe(t), s.outcome))
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}:\n{}\n{}",
            wrong.join("\n"),
            world.node_dump()
        );
        // Some allowed, some not: the probes would catch a layout that opens or
        // closes everything.
        let allowed = cells.iter().filter(|t| world.allowed(&cluster, t)).count();
        assert!(allowed > 0 && allowed < cells.len(), "{what}: {allowed}");
    };

    let engine = k8s::start_engine_flat(&world, 0);
    k8s::converge(&engine, &objects.wired(&world));
    let save = world.node.sh("iptables-nft-save", &[]);
    assert!(!save.contains("incompatible"), "{save}");
    for d in ["ingress", "egress"] {
        assert!(
            save.contains(&format!("-g nf-{d}-")),
            "no bucket line in nf-{d}:\n{save}"
        );
    }
    agree(&objects, "five namespaces in two buckets");

    // One namespace with policies left: a bucket of one is its plain line.
    let mut fewer = objects.clone();
    fewer
        .policies
        .retain(|p| p.metadata.namespace.as_deref() == Some("c"));
    k8s::apply(&engine, &objects.wired(&world).diff(&fewer.wired(&world)));
    let save = world.node.sh("iptables-nft-save", &[]);
    assert!(!save.contains(":nf-ingress-"), "{save}");
    assert!(!save.contains(":nf-egress-"), "{save}");
    agree(&fewer, "one namespace with policies");
}
