//! Seed 000's walkthrough (`../shared/seeds/000_60a0dfe1a6adff69.txt`) on real packets,
//! step by step, and while each step commits.
//!
//! The walkthrough's states are the conformance cases `seed-000-1-no-policy`,
//! `seed-000-2-alpha-deny`, `seed-000-3-access-nginx` and
//! `seed-000-4-access-nginx-complex`: one world (namespaces alpha, beta, default; nginx
//! and access pods; hosts inside, in the except of, and outside the ipBlock), and each
//! state adds one policy. netfence's engine gets the first state as a full list, then each
//! step's deltas (the difference between two consecutive states); after the last step the
//! walkthrough is undone, state by state, back to no policy.
//!
//! After each step the whole matrix (TCP 80 and 443, UDP 53, SCTP 3868, IPv4 and IPv6)
//! is probed and must equal the reference evaluator's for the new state. While each step
//! commits, a prober connects over TCP (80 and 443, both families) between every pair of
//! distinct hosts in a tight loop, from before the deltas are submitted until after the
//! kernel holds them: every connection that gets through must be allowed by the old state
//! or by the new one. A window that opens something neither allows fails the test.
//!
//! Needs root. Run with `--nocapture` for the counts.

mod common;
mod dataplane;

#[path = "../crates/policy/tests/conformance/cases.rs"]
mod cases;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::k8s::{self, Objects};
use dataplane::{HostSpec, Outcome, Record, Target, World};
use policy::{Cluster, Protocol};

/// The walkthrough's states, in order.
const STATES: [&str; 4] = [
    "seed-000-1-no-policy",
    "seed-000-2-alpha-deny",
    "seed-000-3-access-nginx",
    "seed-000-4-access-nginx-complex",
];

/// The matrix probe's timeout (see `dataplane_conformance.rs`).
const TIMEOUT: Duration = Duration::from_millis(500);

/// How often the continuous prober tries each cell while its earlier attempts wait.
const INTERVAL: Duration = Duration::from_millis(1);

/// How long a continuous probe waits before it counts as dropped. Only connections that
/// get through are checked, so this bounds how late an answer may come and still be seen.
const LANE_TIMEOUT: Duration = Duration::from_millis(25);

/// How long the continuous prober runs before the deltas go in, and after they are in.
const MARGIN: Duration = Duration::from_millis(30);

/// Probes the whole matrix and compares it with the evaluator on `cluster`; the
/// mismatches, one per line.
fn check_matrix(world: &World, cells: &[Target], cluster: &Cluster) -> Vec<String> {
    let seen = world.probe(cells, TIMEOUT);
    cells
        .iter()
        .zip(seen)
        .filter_map(|(t, o)| {
            let expected = Outcome::expected(world.allowed(cluster, t));
            (o.outcome != expected).then(|| {
                format!(
                    "  {}: expected {expected}, seen {}",
                    world.describe(t),
                    o.outcome
                )
            })
        })
        .collect()
}

/// What the continuous prober saw during one step. A probe ran during the commit when its
/// SYN left between the submission of the deltas and their completion: the firewall's
/// verdict on a connection is the one on its SYN.
struct During {
    records: Vec<Record>,
    submitted: Instant,
    committed: Instant,
}

/// Sets its flag when dropped: stops the prober also when the test panics, so that the
/// scope it runs in can end.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Applies `deltas` while probing `lanes` continuously.
fn commit_while_probing(
    world: &World,
    engine: &sync::Engine,
    lanes: &[Target],
    deltas: &[k8s::Delta],
) -> During {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let prober = s.spawn(|| world.probe_continuously(lanes, INTERVAL, LANE_TIMEOUT, &stop));
        let guard = StopOnDrop(&stop);
        std::thread::sleep(MARGIN);
        let submitted = Instant::now();
        k8s::apply(engine, deltas);
        let committed = Instant::now();
        std::thread::sleep(MARGIN);
        drop(guard);
        During {
            records: prober.join().expect("the prober panicked"),
            submitted,
            committed,
        }
    })
}

#[test]
fn seed_000_walkthrough_step_by_step_and_during_commits() {
    dataplane::sys::raise_fd_limit();
    let started = Instant::now();
    let all = cases::all();
    let states: Vec<&cases::Case> = STATES
        .iter()
        .map(|name| {
            all.iter()
                .find(|c| c.name == *name)
                .unwrap_or_else(|| panic!("no case {name} in the conformance table"))
        })
        .collect();
    let first = states[0];
    for s in &states {
        assert!(
            s.namespaces == first.namespaces && s.pods == first.pods,
            "{} is not in {}'s world",
            s.name,
            first.name
        );
    }

    let mut specs: Vec<HostSpec> = first.pods.iter().map(HostSpec::pod).collect();
    specs.extend(
        first
            .externals
            .iter()
            .map(|e| HostSpec::external(e.alias, e.ipv4, e.ipv6)),
    );
    let ports: BTreeSet<(Protocol, u16)> = states
        .iter()
        .flat_map(|c| &c.probes)
        .map(|p| (p.protocol, p.port))
        .collect();
    let world = World::build("dpt", &specs, &ports);
    let cells = world.matrix(&ports);

    let objects = |c: &cases::Case| {
        Objects {
            namespaces: c.namespaces.clone(),
            pods: c.pods.clone(),
            policies: c.policies.clone(),
        }
        .wired(&world)
    };
    world.assert_open(&cells, TIMEOUT);
    let engine = k8s::start_engine(&world);
    k8s::converge(&engine, &objects(first));
    let mut failures = Vec::new();
    let mismatches = check_matrix(&world, &cells, &first.cluster());
    if !mismatches.is_empty() {
        failures.push(format!(
            "after the full list of {}:\n{}\n{}",
            first.name,
            mismatches.join("\n"),
            world.node_dump()
        ));
    }

    // Forward through the walkthrough, then back to no policy.
    let order = [0, 1, 2, 3, 2, 1, 0];
    let (mut during_total, mut forbidden_total, mut probes_total) = (0, 0, 0);
    for step in order.windows(2) {
        let (old, new) = (states[step[0]], states[step[1]]);
        let (old_cluster, new_cluster) = (old.cluster(), new.cluster());
        let deltas = objects(old).diff(&objects(new));
        // The TCP cells between distinct hosts, but those both states allow: they can't
        // show a violation, and answering at once they would take most of the prober's
        // time. Left: the cells neither state allows (any crossing is a violation) and
        // those the step opens or closes.
        let lanes: Vec<Target> = cells
            .iter()
            .filter(|t| {
                t.protocol == Protocol::Tcp
                    && t.src != t.dst
                    && !(world.allowed(&old_cluster, t) && world.allowed(&new_cluster, t))
            })
            .copied()
            .collect();
        let forbidden =
            |t: &Target| !world.allowed(&old_cluster, t) && !world.allowed(&new_cluster, t);
        let d = commit_while_probing(&world, &engine, &lanes, &deltas);

        let mut violations = Vec::new();
        let (mut during, mut during_forbidden) = (0, 0);
        for r in &d.records {
            let t = &lanes[r.target];
            if r.start >= d.submitted && r.start <= d.committed {
                during += 1;
                during_forbidden += usize::from(forbidden(t));
            }
            match &r.outcome {
                Outcome::Failed(e) => {
                    violations.push(format!("  {}: failed ({e})", world.describe(t)))
                }
                o if o.crossed() && forbidden(t) => violations.push(format!(
                    "  {}: {o}, SYN sent {} the deltas were submitted (the commit took \
                     {:.1?}), but neither state allows it",
                    world.describe(t),
                    if r.start >= d.submitted {
                        format!("{:.1?} after", r.start - d.submitted)
                    } else {
                        format!("{:.1?} before", d.submitted - r.start)
                    },
                    d.committed - d.submitted
                )),
                _ => {}
            }
        }
        let crossed = d.records.iter().filter(|r| r.outcome.crossed()).count();
        let n_forbidden = lanes.iter().filter(|t| forbidden(t)).count();
        eprintln!(
            "{} -> {}: {} committed in {:.1?}\n  {} cells probed continuously ({n_forbidden} \
             that neither state allows, {} that the step opens or closes): {} probes, \
             {crossed} through; {during} during the commit, {during_forbidden} of them on \
             cells neither state allows",
            old.name,
            new.name,
            deltas
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            d.committed - d.submitted,
            lanes.len(),
            lanes.len() - n_forbidden,
            d.records.len(),
        );
        during_total += during;
        forbidden_total += during_forbidden;
        probes_total += d.records.len();
        if !violations.is_empty() {
            violations.truncate(40);
            failures.push(format!(
                "while {} -> {} committed, probes got through that neither state allows \
                 (or failed):\n{}\nthe node after the step:\n{}",
                old.name,
                new.name,
                violations.join("\n"),
                world.node_dump()
            ));
        }
        let mismatches = check_matrix(&world, &cells, &new_cluster);
        if !mismatches.is_empty() {
            failures.push(format!(
                "after {} -> {}:\n{}\n{}",
                old.name,
                new.name,
                mismatches.join("\n"),
                world.node_dump()
            ));
        }
    }
    eprintln!(
        "{} steps, {} matrix cells after each (and after the full list), {probes_total} \
         continuous probes, {during_total} during commits ({forbidden_total} on cells \
         neither state allowed), in {:.1?}",
        order.len() - 1,
        cells.len(),
        started.elapsed()
    );
    assert!(
        forbidden_total > 0,
        "no probe of a forbidden cell ran while a step committed: the test shows nothing"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
