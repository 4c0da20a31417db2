//! Every scenario of the benchmark plan through the engine's public API, at 1k, 5k and 10k
//! pods (each with 100 and with 1,000 policies), each next to its baselines in the same
//! run. One pod added or deleted is the `sync` bench's; this one has the rest.
//!
//! Scenarios (criterion groups `scenarios/<scenario>`, IDs `<system>/<pods>p_<policies>np`):
//!
//! * `pod_relabel`, `namespace_relabel`, `policy_add`, `policy_change`, `policy_delete`:
//!   one delta. For netfence, one iteration is the k8s object handed to
//!   [`sync::Engine`] until its [`sync::Completion`] fires: conversion, hand-off to the
//!   sync thread, incremental recompile, plan, kernel commit, wake-up. The inverse delta
//!   follows, untimed, so every iteration starts from the same cluster; iterations take
//!   turns over [`OBJECTS`] objects (pods, namespaces, policies spread over the cluster;
//!   new policies from [`cluster::Generated::extra_policy`]) so that a figure is not one
//!   object's luck.
//! * `burst`: 1,000 mixed deltas ([`burst`]: pods added, deleted and relabelled,
//!   policies added, changed and deleted, namespaces relabelled), submitted as fast as
//!   the caller can, timed until the last completion fires. Its inverse is a burst of
//!   1,000 mixed deltas too, so iterations alternate between the two, both timed. The
//!   record's `commits` is the mean number of kernel commits the engine used per burst
//!   (from its metrics).
//! * `full_sync`: a fresh engine in a fresh namespace, started, handed the whole
//!   cluster, `ready()`, timed until every object is in the kernel (the namespace is
//!   made and removed untimed).
//! * `restart`: the engine over the loaded namespace is shut down (not flushed: the
//!   kernel keeps its state, as when an agent is restarted) and a new one is started
//!   over it, handed the same cluster, timed until ready and converged.
//! * `rss` (a record, not a criterion bench): the peak resident set of an agent process
//!   holding the cluster's objects and an engine that loaded them and applied a few
//!   deltas; see [`rss_child`].
//!
//! Systems, each in a namespace of its own, one after the other:
//!
//! * `netfence`: as above.
//! * `netfence-commit` (`burst` only): netfence's own plan for the same burst, made
//!   untimed by a [`policy::Compiler`] fed the same deltas, then committed with
//!   [`ruleset::Kernel::apply`] as the engine's sync thread commits it. It times only the
//!   netlink encoding and the kernel's work: the floor under `netfence`'s burst for this
//!   layout, whatever the compiler and planner cost. See [`commit_floor`].
//! * `calico-iptables`: the Calico-like rendering of the same cluster
//!   ([`calico::render_state`]) loaded with `ipset restore` + `iptables-nft-restore`; one
//!   iteration applies the change's [`calico::Delta`] ([`calico::Delta::steps`]: `ipset
//!   restore`, `iptables-nft-restore --noflush`, `ipset restore` of the destroys), timed
//!   from the first process start to the last exit. A burst is one delta of the whole
//!   burst, as Felix batches what arrived while it was busy.
//! * `nft`: the same state in native nft syntax ([`common::nft_native::render`]); one iteration
//!   is one `nft -f -` of [`common::nft_native::diff`].
//! * `calico-full`, `nft-full` (`full_sync` only): the whole baseline loaded into an empty
//!   namespace (`ipset restore` + `iptables-nft-restore`, or one `nft -f`).
//! * `calico-restart`, `nft-restart` (`restart` only): the loaded baseline read back, as
//!   the agent must before it can tell what to write when it restarts over a kernel that
//!   is already right (`iptables-nft-save` and `ipset save`, or `nft list ruleset`; see
//!   [`BaselineNs::read_back`]). The agent's own parsing and comparing are not in it: a
//!   floor under its restart, where netfence's figure is its whole restart.
//!
//! The tools run directly in their namespace (setns between fork and exec), so no `ip
//! netns exec` is charged to them. Every baseline delta is computed before any timing
//! (one render at 10k pods takes about half a second).
//!
//! Each system sleeps [`SETTLE`] untimed before each timed delta (or burst): nf_tables
//! frees deleted objects after an RCU grace period and a commit right after may wait for
//! it; the untimed inverse runs straight after the timed delta. netfence then also waits
//! for the set destroys its last commit left to the engine's retry
//! ([`harness::settle_engine`]), so that no timed delta shares a commit with the previous
//! one's cleanup.
//!
//! Every timed iteration, warm-up included, goes to `target/netfence-bench/scenarios.jsonl`
//! ([`record`]) and to criterion; a summary table (median, p99, ratios to each baseline,
//! commits per burst, peak RSS) and a line per target go to stderr at the end.
//!
//! Memory: each baseline record carries `tool_rss_bytes`, the largest peak RSS of the
//! tools it ran ([`harness::take_tool_peak_rss`]); the engine's, per scenario and overall,
//! comes from a child process ([`rss_child`]), and joins each scenario's netfence record
//! as `engine_rss_bytes`.
//!
//! `cargo bench --bench scenarios` (root; about 30 minutes on two cores, most of it the baselines' bursts and full
//! loads at 10k pods; each size's
//! cluster and namespaces are built on first use, so a filter such as `-- 5000p_100np`
//! skips the others). With `--quick`, in `cargo test` mode, or with
//! `NETFENCE_BENCH_SMOKE=1`, only 1,000 pods / 100 policies run, briefly (CI: `-- --quick
//! --warm-up-time 0.2 --measurement-time 0.5`, under a minute). Iteration counts are
//! sized from a first untimed iteration so that each bench takes seconds: at 10k pods
//! the full loads run 10 times, one per criterion sample, and criterion says it can't
//! complete its samples in the target time: expected. `NETFENCE_BENCH_DUAL_STACK=1` and
//! `NETFENCE_BENCH_NO_ANTISPOOF=1` work as in the `sync` bench.

#[path = "common/mod.rs"]
mod common;

use std::cell::OnceCell;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::harness::{
    await_engine, bench_wanted, for_netfence, load_cluster, remove_stale_namespaces, settle_engine,
    Baseline, BaselineNs, DeltaPair, FullLoad, Mode, NetfenceSide, Netns, Size, SETTLE,
};
use common::record::{self, Record, Recorder};
use common::{calico, cluster, harness};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use policy::k8s_openapi::api::core::v1::{Namespace, Pod};
use policy::k8s_openapi::api::networking::v1::NetworkPolicy;
use policy::ObjectKey;
use sync::{Completion, Engine};

/// The bench's name: its namespaces' prefix and its records' file.
const BENCH: &str = "scenarios";

/// How many different objects the iterations of a one-delta scenario take turns over.
const OBJECTS: usize = 4;

/// Deltas in a burst.
const BURST: usize = 1_000;

/// Set in the environment of the child that measures peak RSS: `<pods>,<policies>`.
const RSS_CHILD_ENV: &str = "NETFENCE_BENCH_RSS_CHILD";

/// The size the targets are stated for.
const TARGET_SIZE: &str = "10000p_1000np";

// ---------------------------------------------------------------------------------------
// Scenarios and their deltas

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    PodRelabel,
    NamespaceRelabel,
    PolicyAdd,
    PolicyChange,
    PolicyDelete,
    Burst,
}

impl Scenario {
    /// The scenarios that are a change and its inverse, in the order they run.
    const CHANGES: [Scenario; 6] = [
        Scenario::PodRelabel,
        Scenario::NamespaceRelabel,
        Scenario::PolicyAdd,
        Scenario::PolicyChange,
        Scenario::PolicyDelete,
        Scenario::Burst,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::PodRelabel => "pod_relabel",
            Scenario::NamespaceRelabel => "namespace_relabel",
            Scenario::PolicyAdd => "policy_add",
            Scenario::PolicyChange => "policy_change",
            Scenario::PolicyDelete => "policy_delete",
            Scenario::Burst => "burst",
        }
    }

    fn index(self) -> usize {
        Self::CHANGES
            .iter()
            .position(|s| *s == self)
            .expect("a change scenario")
    }

    /// The changes its iterations take turns over.
    fn changes(self, size: &Size) -> Vec<Change> {
        if self == Scenario::Burst {
            return vec![burst(size)];
        }
        let g = &size.gen;
        let nf = |p: &Pod| for_netfence(p, size.host_interfaces);
        (0..OBJECTS)
            .map(|k| match self {
                Scenario::PodRelabel => {
                    let p = &g.pods[pick(k, OBJECTS, g.pods.len())];
                    let new = g.relabel_pod(p);
                    Change {
                        forward: vec![Op::Pod(Box::new((nf(&new), new)))],
                        inverse: vec![Op::Pod(Box::new((nf(p), p.clone())))],
                    }
                }
                Scenario::NamespaceRelabel => {
                    let n = &g.namespaces[pick(k, OBJECTS, g.namespaces.len())];
                    Change {
                        forward: vec![Op::Namespace(g.relabel_namespace(n))],
                        inverse: vec![Op::Namespace(n.clone())],
                    }
                }
                Scenario::PolicyAdd => {
                    let np = g.extra_policy(k);
                    Change {
                        inverse: vec![Op::DeletePolicy(policy_key(&np))],
                        forward: vec![Op::Policy(np)],
                    }
                }
                Scenario::PolicyChange => {
                    let np = &g.policies[pick(k, OBJECTS, g.policies.len())];
                    Change {
                        forward: vec![Op::Policy(g.changed_policy(np))],
                        inverse: vec![Op::Policy(np.clone())],
                    }
                }
                Scenario::PolicyDelete => {
                    let np = &g.policies[pick(k, OBJECTS, g.policies.len())];
                    Change {
                        forward: vec![Op::DeletePolicy(policy_key(np))],
                        inverse: vec![Op::Policy(np.clone())],
                    }
                }
                Scenario::Burst => unreachable!("built above"),
            })
            .collect()
    }
}

/// Object `k` of `of` spread evenly over `n`.
fn pick(k: usize, of: usize, n: usize) -> usize {
    ((2 * k + 1) * n / (2 * of)).min(n - 1)
}

fn policy_key(np: &NetworkPolicy) -> ObjectKey {
    ObjectKey::new(
        np.metadata.namespace.clone().expect("namespace"),
        np.metadata.name.clone().expect("name"),
    )
}

fn pod_key(p: &Pod) -> ObjectKey {
    ObjectKey::new(
        p.metadata.namespace.clone().expect("namespace"),
        p.metadata.name.clone().expect("name"),
    )
}

/// One delta, as the agent hands it to the engine and as it changes the baselines'
/// model of the cluster.
enum Op {
    /// Insert or replace a pod: (as netfence is fed it, as the baseline sees it), boxed
    /// as pods are much larger than the other variants.
    Pod(Box<(Pod, Pod)>),
    DeletePod(ObjectKey),
    Namespace(Namespace),
    Policy(NetworkPolicy),
    DeletePolicy(ObjectKey),
}

impl Op {
    fn submit(&self, e: &Engine) -> Completion {
        match self {
            Op::Pod(p) => e.upsert_pod(&p.0),
            Op::DeletePod(k) => e.delete_pod(&k.namespace, &k.name),
            Op::Namespace(n) => e.upsert_namespace(n),
            Op::Policy(np) => e.upsert_policy(np),
            Op::DeletePolicy(k) => e.delete_policy(&k.namespace, &k.name),
        }
    }

    fn apply(&self, c: &mut policy::Cluster) {
        match self {
            Op::Pod(p) => {
                c.upsert_pod(cluster::to_pod(&p.1));
            }
            Op::DeletePod(k) => {
                c.delete_pod(k);
            }
            Op::Namespace(n) => {
                c.upsert_namespace(cluster::to_namespace(n));
            }
            Op::Policy(np) => {
                c.upsert_policy(cluster::to_policy(np));
            }
            Op::DeletePolicy(k) => {
                c.delete_policy(k);
            }
        }
    }
}

/// A change and the change that undoes it.
struct Change {
    forward: Vec<Op>,
    inverse: Vec<Op>,
}

/// [`BURST`] mixed deltas on distinct objects, shuffled: namespaces relabelled (5),
/// policies added (50), changed (up to 100) and deleted (up to 50), pods relabelled
/// (200), deleted (150) and added (the rest, about 450).
fn burst(size: &Size) -> Change {
    let g = &size.gen;
    let nf = |p: &Pod| for_netfence(p, size.host_interfaces);
    let (mut forward, mut inverse) = (Vec::new(), Vec::new());
    let namespaces = 5.min(g.namespaces.len() / 2);
    for i in 0..namespaces {
        let n = &g.namespaces[pick(i, namespaces, g.namespaces.len())];
        forward.push(Op::Namespace(g.relabel_namespace(n)));
        inverse.push(Op::Namespace(n.clone()));
    }
    for i in 0..50 {
        // Past the policy_add scenario's, which are never in the cluster between
        // iterations either.
        let np = g.extra_policy(OBJECTS + i);
        inverse.push(Op::DeletePolicy(policy_key(&np)));
        forward.push(Op::Policy(np));
    }
    // Changed policies from the first half, deleted ones from the second.
    let half = g.policies.len() / 2;
    let changed = 100.min(g.policies.len() / 4);
    for i in 0..changed {
        let np = &g.policies[pick(i, changed, half)];
        forward.push(Op::Policy(g.changed_policy(np)));
        inverse.push(Op::Policy(np.clone()));
    }
    let deleted = 50.min(g.policies.len() / 4);
    for i in 0..deleted {
        let np = &g.policies[half + pick(i, deleted, g.policies.len() - half)];
        forward.push(Op::DeletePolicy(policy_key(np)));
        inverse.push(Op::Policy(np.clone()));
    }
    let half = g.pods.len() / 2;
    for i in 0..200 {
        let p = &g.pods[pick(i, 200, half)];
        let new = g.relabel_pod(p);
        forward.push(Op::Pod(Box::new((nf(&new), new))));
        inverse.push(Op::Pod(Box::new((nf(p), p.clone()))));
    }
    for i in 0..150 {
        let p = &g.pods[half + pick(i, 150, g.pods.len() - half)];
        forward.push(Op::DeletePod(pod_key(p)));
        inverse.push(Op::Pod(Box::new((nf(p), p.clone()))));
    }
    // New pods past the ones the sync bench and harness may hold ready.
    for i in 0..BURST - forward.len() {
        let p = g.extra_pod(common::harness::CANDIDATES + i);
        inverse.push(Op::DeletePod(pod_key(&p)));
        forward.push(Op::Pod(Box::new((nf(&p), p))));
    }
    // Mixed, as informers deliver them; the objects are distinct, so the order changes
    // nothing but the interleaving.
    let mut rng = cluster::Rng::new(0x0062_7572_7374);
    for i in (1..forward.len()).rev() {
        forward.swap(i, rng.below(i + 1));
    }
    Change { forward, inverse }
}

/// Hands `ops` to the engine at once; the time until the last completion fires.
fn submit(engine: &Engine, ops: &[Op]) -> Duration {
    let t0 = Instant::now();
    let pending: Vec<Completion> = ops.iter().map(|o| o.submit(engine)).collect();
    for c in pending {
        c.wait().unwrap_or_else(|e| panic!("a delta failed: {e}"));
    }
    t0.elapsed()
}

// ---------------------------------------------------------------------------------------
// One size

/// A size and everything built for it, each part on first use.
struct SizeRun {
    pods: usize,
    policies: usize,
    size: OnceCell<Size>,
    /// Each scenario's changes, by [`Scenario::index`].
    changes: OnceCell<Vec<Vec<Change>>>,
}

impl SizeRun {
    fn size(&self, mode: &Mode) -> &Size {
        self.size
            .get_or_init(|| Size::new(self.pods, self.policies, mode))
    }

    fn changes(&self, mode: &Mode, s: Scenario) -> &[Change] {
        &self.changes.get_or_init(|| {
            let size = self.size(mode);
            Scenario::CHANGES.iter().map(|s| s.changes(size)).collect()
        })[s.index()]
    }

    fn label(&self) -> String {
        format!("{}p_{}np", self.pods, self.policies)
    }
}

/// What both baselines need of one size, computed on first use and before any timing:
/// the model, its rendered state and full loads, and each scenario's deltas.
struct BaseData {
    cluster: policy::Cluster,
    state: calico::Rendered,
    full: FullLoad,
    /// By [`Scenario::index`].
    pairs: Vec<Option<Vec<DeltaPair>>>,
}

impl BaseData {
    fn new(size: &Size) -> Self {
        let t0 = Instant::now();
        let cluster = size.gen.cluster();
        let state = calico::render_state(&cluster, &size.calico_config());
        let full = FullLoad::new(&state);
        let s = state.stats();
        eprintln!(
            "baselines {}: {} chains, {} rules, {} sets, {} members; rendered in {:.2} s",
            size.label(),
            s.chains,
            s.rules,
            s.sets,
            s.members,
            t0.elapsed().as_secs_f64()
        );
        Self {
            cluster,
            state,
            full,
            pairs: Scenario::CHANGES.iter().map(|_| None).collect(),
        }
    }

    /// Scenario `s`'s deltas, computed on first use.
    fn pairs(&mut self, size: &Size, s: Scenario, changes: &[Change]) -> &[DeltaPair] {
        let Self {
            cluster,
            state,
            pairs,
            ..
        } = self;
        pairs[s.index()].get_or_insert_with(|| {
            let t0 = Instant::now();
            let cfg = size.calico_config();
            let out: Vec<DeltaPair> = changes
                .iter()
                .map(|ch| {
                    let mut after = cluster.clone();
                    for op in &ch.forward {
                        op.apply(&mut after);
                    }
                    DeltaPair::new(state, &calico::render_state(&after, &cfg))
                })
                .collect();
            let mean = |which: Baseline| {
                out.iter().map(|d| d.lines(which)).sum::<usize>() / out.len().max(1)
            };
            eprintln!(
                "baselines {} {}: {} deltas in {:.2} s; {} lines of calico input, {} of nft \
                 (means){}",
                size.label(),
                s.name(),
                out.len(),
                t0.elapsed().as_secs_f64(),
                mean(Baseline::Calico),
                mean(Baseline::Nft),
                if out.iter().any(|d| d.is_empty(Baseline::Calico)) {
                    "; some change nothing in the baseline"
                } else {
                    ""
                }
            );
            out
        })
    }
}

// ---------------------------------------------------------------------------------------
// Measurement

/// One untimed iteration's figures, to size a measurement before criterion runs it.
#[derive(Clone, Copy)]
struct Probe {
    /// The whole iteration, untimed work and pauses included.
    wall: Duration,
}

/// How long one bench may take, in wall time, and how many iterations it wants.
#[derive(Clone, Copy)]
struct Budget {
    wall: Duration,
    max: u32,
}

/// A single netfence delta: deltas are fast, so many of them.
const NF_DELTA: Budget = Budget {
    wall: Duration::from_secs(6),
    max: 200,
};
/// A single baseline delta (100–200 ms at 10k pods).
const BASE_DELTA: Budget = Budget {
    wall: Duration::from_secs(8),
    max: 30,
};
/// A burst.
const BURST_BUDGET: Budget = Budget {
    wall: Duration::from_secs(12),
    max: 50,
};
/// A full load or a restart: at least 10 (criterion's minimum), seconds each at 10k.
const FULL: Budget = Budget {
    wall: Duration::from_secs(20),
    max: 20,
};
/// In a smoke run without `--quick`: a handful of everything.
const SMOKE: Budget = Budget {
    wall: Duration::from_secs(1),
    max: 10,
};

/// Sets `g`'s sampling from `probe`: one warm-up iteration, then about as many timed
/// iterations as `budget` allows (10 at least: criterion's minimum sample count). With
/// `--quick` criterion stops on wall time, and the command line's times stay.
fn plan(g: &mut BenchmarkGroup<'_, WallTime>, mode: &Mode, probe: Option<Probe>, budget: Budget) {
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let Some(p) = probe else { return };
    if mode.quick {
        return;
    }
    let budget = if mode.smoke { SMOKE } else { budget };
    let wall = p.wall.max(Duration::from_micros(1));
    let n = (budget.wall.as_secs_f64() / wall.as_secs_f64()) as u32;
    let n = n.clamp(10, budget.max.max(10));
    // Criterion sizes warm-up and samples by the wall time of the routine (the untimed
    // undo and pauses included): half an iteration's worth of warm-up is one iteration,
    // and n iterations' worth of measurement is about n (at least one per sample).
    g.warm_up_time(wall / 2).measurement_time(wall * n);
}

/// Whether two dumps hold the same lines, in any order (a chain or set made again is
/// listed in another place).
fn same_lines(a: &str, b: &str) -> bool {
    fn sorted(s: &str) -> Vec<&str> {
        let mut v: Vec<&str> = s.lines().collect();
        v.sort_unstable();
        v
    }
    sorted(a) == sorted(b)
}

/// Runs one bench `scenarios/<scenario>/<system>/<label>`: `iteration` does one timed
/// iteration (and its untimed undo) and returns the timed part. Returns the record of
/// every timed iteration, if criterion ran any.
#[allow(clippy::too_many_arguments)]
fn run_bench(
    c: &mut Criterion,
    mode: &Mode,
    scenario: &str,
    system: &str,
    run: &SizeRun,
    probe: Option<Probe>,
    budget: Budget,
    mut iteration: impl FnMut() -> Duration,
) -> Option<Record> {
    let mut g = c.benchmark_group(format!("scenarios/{scenario}"));
    plan(&mut g, mode, probe, budget);
    let mut rec = Record::new(BENCH, scenario, system, run.pods, run.policies);
    rec.smoke = mode.smoke;
    g.bench_function(BenchmarkId::new(system, run.label()), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = iteration();
                rec.push(t);
                total += t;
            }
            total
        });
    });
    g.finish();
    (!rec.samples_ns.is_empty()).then_some(rec)
}

fn id(scenario: &str, system: &str, run: &SizeRun) -> String {
    format!("scenarios/{scenario}/{system}/{}", run.label())
}

/// Everything measured so far: records, also written to the bench's file as they come.
struct Results {
    records: Vec<Record>,
    out: Recorder,
}

impl Results {
    fn add(&mut self, r: Option<Record>) {
        if let Some(r) = r {
            self.out.write(&r);
            self.records.push(r);
        }
    }

    fn get(&self, scenario: &str, system: &str, label: &str) -> Option<&Record> {
        self.records.iter().find(|r| {
            r.scenario == scenario
                && r.system == system
                && format!("{}p_{}np", r.pods, r.policies) == label
        })
    }
}

// ---------------------------------------------------------------------------------------
// The systems

/// netfence's loaded namespace at one size, built on first use.
struct NfState {
    side: Option<NetfenceSide>,
    /// How long the side took to load: a full sync's worth, to size full_sync and
    /// restart.
    loaded: Option<Duration>,
}

impl NfState {
    fn side(&mut self, run: &SizeRun, mode: &Mode) -> &mut NetfenceSide {
        if self.side.is_none() {
            let t0 = Instant::now();
            self.side = Some(NetfenceSide::new(run.size(mode), BENCH));
            self.loaded = Some(t0.elapsed());
        }
        self.side.as_mut().expect("built")
    }
}

/// netfence's scenarios at one size: the change scenarios and restart over one loaded
/// namespace, then full syncs into fresh ones.
fn netfence(c: &mut Criterion, mode: &Mode, run: &SizeRun, results: &mut Results) {
    let mut st = NfState {
        side: None,
        loaded: None,
    };
    for s in Scenario::CHANGES {
        let wanted = bench_wanted(&id(s.name(), "netfence", run));
        let changes = run.changes(mode, s);
        // A burst's inverse is a burst too, so both directions are timed, in turn; the
        // other scenarios time the change and undo it untimed.
        let alternate = s == Scenario::Burst;
        let step = |side: &NetfenceSide, ops: &[Op]| {
            settle_engine(&side.engine);
            let before = side.engine.metrics().commits;
            let t = submit(&side.engine, ops);
            (t, side.engine.metrics().commits - before)
        };
        let probe = wanted.then(|| {
            let side = st.side(run, mode);
            let ch = &changes[0];
            let t0 = Instant::now();
            step(side, &ch.forward);
            if alternate {
                step(side, &ch.inverse);
            } else {
                submit(&side.engine, &ch.inverse);
            }
            let wall = t0.elapsed();
            Probe {
                wall: if alternate { wall / 2 } else { wall },
            }
        });
        let budget = if alternate { BURST_BUDGET } else { NF_DELTA };
        let (mut turn, mut commits) = (0, Vec::new());
        let rec = run_bench(c, mode, s.name(), "netfence", run, probe, budget, || {
            let side = st.side(run, mode);
            let (t, n) = if alternate {
                let ch = &changes[turn / 2 % changes.len()];
                let forward = turn % 2 == 0;
                turn += 1;
                step(side, if forward { &ch.forward } else { &ch.inverse })
            } else {
                let ch = &changes[turn % changes.len()];
                turn += 1;
                let r = step(side, &ch.forward);
                submit(&side.engine, &ch.inverse);
                r
            };
            commits.push(n);
            t
        });
        if alternate && turn % 2 == 1 {
            // Back to the cluster the next scenario starts from.
            let side = st.side(run, mode);
            submit(
                &side.engine,
                &changes[(turn - 1) / 2 % changes.len()].inverse,
            );
        }
        results.add(rec.map(|mut r| {
            if alternate && !commits.is_empty() {
                r.set(
                    "commits",
                    commits.iter().sum::<u64>() as f64 / commits.len() as f64,
                );
                r.set("commits_max", *commits.iter().max().expect("some") as f64);
            }
            r
        }));
    }

    // Restart: the engine goes (its sync thread stops, the kernel keeps what it wrote)
    // and a new one adopts the namespace.
    let wanted = bench_wanted(&id("restart", "netfence", run));
    let probe = wanted.then(|| {
        st.side(run, mode);
        let t = st.loaded.expect("loaded");
        Probe { wall: t * 2 }
    });
    let rec = run_bench(c, mode, "restart", "netfence", run, probe, FULL, || {
        let s = st.side(run, mode);
        let size = run.size(mode);
        s.engine.shutdown();
        let t0 = Instant::now();
        let engine = Engine::start(size.engine_config(&s.ns)).expect("restarting the engine");
        load_cluster(&engine, size);
        let t = t0.elapsed();
        s.engine = engine;
        t
    });
    results.add(rec);
    let loaded = st.loaded;
    drop(st);

    // Full sync: a fresh engine in a fresh namespace each time.
    let full_sync = || {
        let size = run.size(mode);
        let ns = Netns::new(BENCH, "full-nf");
        let t0 = Instant::now();
        let engine = Engine::start(size.engine_config(&ns)).expect("starting the engine");
        load_cluster(&engine, size);
        let t = t0.elapsed();
        // The engine stops before its namespace goes; neither is timed.
        drop(engine);
        drop(ns);
        t
    };
    let wanted = bench_wanted(&id("full_sync", "netfence", run));
    let probe = wanted.then(|| {
        let timed = loaded.unwrap_or_else(full_sync);
        Probe { wall: timed * 2 }
    });
    results.add(run_bench(
        c,
        mode,
        "full_sync",
        "netfence",
        run,
        probe,
        FULL,
        full_sync,
    ));
}

/// Feeds one delta to a compiler as the engine's sync thread does.
fn feed(c: &mut policy::Compiler, op: &Op) {
    match op {
        Op::Pod(p) => c.upsert_pod(Arc::new(cluster::to_pod(&p.0))),
        Op::DeletePod(k) => c.delete_pod(k),
        Op::Namespace(n) => c.upsert_namespace(Arc::new(cluster::to_namespace(n))),
        Op::Policy(np) => c
            .upsert_policy(Arc::new(cluster::to_policy(np)))
            .expect("a generated policy compiles"),
        Op::DeletePolicy(k) => c.delete_policy(k).expect("a policy delete compiles"),
    }
}

/// The burst with compile and plan taken out of the timing (system `netfence-commit`):
/// the kernel's share of netfence's burst, and so what bounds it from below whatever
/// netfence's own CPU time.
///
/// A compiler configured as the engine is holds the cluster, and a [`ruleset::Kernel`]
/// in a namespace of its own holds the compiler's ruleset. Each iteration feeds the
/// compiler the burst (or its inverse, in turn, as for `netfence`), plans it as the
/// engine's sync thread does (`plan_scoped` over the compiler's scope; set destroys the
/// kernel deferred are done before the next burst, as the bench waits for the engine's),
/// untimed; then times
/// [`ruleset::Kernel::execute`] of that plan: the ipset messages, the one nf_tables batch
/// and the set-index lookups the batch needs, encoded and sent, until the last ACK. The
/// record of the plan in the state comes after, untimed, as the engine writes it after
/// the completions fire.
fn commit_floor(c: &mut Criterion, mode: &Mode, run: &SizeRun, results: &mut Results) {
    if !bench_wanted(&id("burst", "netfence-commit", run)) {
        return;
    }
    let size = run.size(mode);
    let ch = &run.changes(mode, Scenario::Burst)[0];
    let ns = Netns::new(BENCH, "commit");
    let config = size.engine_config(&ns);
    let tables = config.compiler.tables();
    let prefix = config.compiler.prefix.clone();
    let mut compiler = policy::Compiler::new(config.compiler).expect("valid compiler config");
    let g = &size.gen;
    let pods: Vec<Pod> = g.pods.iter().map(|p| size.nf_pod(p).into_owned()).collect();
    let (cluster, errors) = policy::Cluster::from_k8s(&g.namespaces, &pods, &g.policies);
    assert!(errors.is_empty(), "generated objects convert: {errors:?}");
    drop(pods);
    compiler.compile(&cluster).expect("the cluster compiles");
    drop(cluster);
    compiler.take_scope();
    let mut kernel = ruleset::Kernel::open(&config.netns).expect("opening the kernel");
    // As the engine: a set the kernel still holds a reference to is retried by the next
    // plan, not waited for inside this one.
    kernel.set_patient_destroys(false);
    let mut state = kernel.observe(&prefix, &tables).expect("observing");
    let full = ruleset::plan(&state, compiler.ruleset()).expect("plans the cluster");
    kernel.apply(&full, &mut state).expect("loads the cluster");
    drop(full);
    let mut leftover = ruleset::Scope::default();
    // Untimed, as the bench waits for the engine's: SETTLE, then the set destroys the
    // kernel deferred in the last commit, retried until they land.
    let settle = |kernel: &mut ruleset::Kernel,
                  compiler: &policy::Compiler,
                  state: &mut ruleset::Ruleset,
                  leftover: &mut ruleset::Scope| {
        std::thread::sleep(SETTLE);
        for _ in 0..100 {
            if leftover.is_empty() {
                break;
            }
            let scope = std::mem::take(leftover);
            let p = ruleset::plan_scoped(state, compiler.ruleset(), &scope)
                .expect("plans the destroys");
            let applied = kernel.apply(&p, state).expect("destroys");
            for name in &applied.deferred {
                leftover.set(name);
            }
            if !leftover.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    // Untimed: the next plan, made from what the kernel holds now (new rules' handles
    // included).
    let next = |compiler: &mut policy::Compiler, state: &ruleset::Ruleset, ops: &[Op]| {
        compiler.hold_dispatch();
        for op in ops {
            feed(compiler, op);
        }
        compiler.settle().expect("the burst settles");
        let scope = compiler.take_scope();
        ruleset::plan_scoped(state, compiler.ruleset(), &scope).expect("plans the burst")
    };
    let commit = |kernel: &mut ruleset::Kernel,
                  state: &mut ruleset::Ruleset,
                  leftover: &mut ruleset::Scope,
                  p: &ruleset::Plan| {
        let t0 = Instant::now();
        let mut ex = ruleset::Executed::default();
        kernel.execute(p, &mut ex).expect("commits the burst");
        let t = t0.elapsed();
        ex.record(p, state).expect("records the burst");
        for name in &ex.applied.deferred {
            leftover.set(name);
        }
        t
    };
    let probe = {
        let t0 = Instant::now();
        settle(&mut kernel, &compiler, &mut state, &mut leftover);
        let p = next(&mut compiler, &state, &ch.forward);
        commit(&mut kernel, &mut state, &mut leftover, &p);
        let forward = t0.elapsed();
        // The kernel holds what the compiler wants: nothing is left to plan but the
        // destroys the kernel deferred.
        let observed = kernel.observe(&prefix, &tables).expect("observing");
        let rest = ruleset::plan(&observed, compiler.ruleset()).expect("plans");
        assert!(
            rest.batch.is_empty()
                && rest
                    .before
                    .iter()
                    .chain(&rest.after)
                    .all(|op| matches!(op, ruleset::SetOp::Destroy { .. })),
            "netfence-commit {}: the kernel differs from the compiler's ruleset after the burst",
            run.label()
        );
        let t1 = Instant::now();
        settle(&mut kernel, &compiler, &mut state, &mut leftover);
        let p = next(&mut compiler, &state, &ch.inverse);
        commit(&mut kernel, &mut state, &mut leftover, &p);
        // Criterion sizes the run by an iteration's whole wall time: the untimed
        // compile and plan count too.
        Probe {
            wall: (forward + t1.elapsed()) / 2,
        }
    };
    let mut turn = 0;
    let rec = run_bench(
        c,
        mode,
        "burst",
        "netfence-commit",
        run,
        Some(probe),
        BURST_BUDGET,
        || {
            let ops = if turn % 2 == 0 {
                &ch.forward
            } else {
                &ch.inverse
            };
            turn += 1;
            settle(&mut kernel, &compiler, &mut state, &mut leftover);
            let p = next(&mut compiler, &state, ops);
            commit(&mut kernel, &mut state, &mut leftover, &p)
        },
    );
    results.add(rec);
    // The kernel's sockets close before their namespace goes.
    drop(kernel);
    drop(ns);
}

/// One baseline's scenarios at one size: the change scenarios over one loaded
/// namespace, then full loads into fresh ones.
fn baseline(
    c: &mut Criterion,
    mode: &Mode,
    run: &SizeRun,
    which: Baseline,
    data: &mut Option<BaseData>,
    results: &mut Results,
) {
    let system = which.system();
    let mut side: Option<(BaselineNs, Duration)> = None;
    for s in Scenario::CHANGES {
        let wanted = bench_wanted(&id(s.name(), system, run));
        let changes = run.changes(mode, s);
        // The deltas first (rendering them takes seconds at 10k pods), then the
        // namespace.
        let prepare = |data: &mut Option<BaseData>, side: &mut Option<(BaselineNs, Duration)>| {
            let size = run.size(mode);
            data.get_or_insert_with(|| BaseData::new(size))
                .pairs(size, s, changes);
            if side.is_none() {
                let full = &data.as_ref().expect("rendered").full;
                *side = Some(BaselineNs::new(BENCH, which, full));
            }
        };
        // As for netfence: a burst is timed in both directions, in turn.
        let alternate = s == Scenario::Burst;
        // At 1k pods a baseline's burst takes seconds: a quick run skips its check.
        let check = wanted && !(mode.quick && alternate);
        let probe = check.then(|| {
            prepare(data, &mut side);
            // The tools' peak RSS from here on is this scenario's, not the load's.
            harness::take_tool_peak_rss();
            let ns = &side.as_ref().expect("loaded").0;
            let d = &data.as_ref().expect("rendered").pairs[s.index()]
                .as_ref()
                .expect("computed")[0];
            // The first change takes effect and its inverse undoes it.
            let before = ns.dump();
            std::thread::sleep(SETTLE);
            let t0 = Instant::now();
            ns.apply(d, true);
            let wall = t0.elapsed();
            let after = ns.dump();
            std::thread::sleep(SETTLE);
            let t0 = Instant::now();
            ns.apply(d, false);
            let back = t0.elapsed();
            if !d.is_empty(which) {
                assert!(
                    before != after,
                    "{system} {}: the delta changed nothing",
                    s.name()
                );
            }
            if !same_lines(&ns.dump(), &before) {
                eprintln!(
                    "{system} {} {}: the inverse delta did not restore the state exactly",
                    run.label(),
                    s.name()
                );
            }
            Probe {
                wall: SETTLE + if alternate { wall } else { wall + back },
            }
        });
        let budget = if alternate { BURST_BUDGET } else { BASE_DELTA };
        let mut turn = 0;
        let rec = run_bench(c, mode, s.name(), system, run, probe, budget, || {
            prepare(data, &mut side);
            let pairs = data.as_ref().expect("rendered").pairs[s.index()]
                .as_ref()
                .expect("computed");
            let ns = &side.as_ref().expect("loaded").0;
            let (d, forward) = if alternate {
                (&pairs[turn / 2 % pairs.len()], turn % 2 == 0)
            } else {
                (&pairs[turn % pairs.len()], true)
            };
            turn += 1;
            std::thread::sleep(SETTLE);
            let t = ns.apply(d, forward);
            if !alternate {
                ns.apply(d, false);
            }
            t
        });
        if alternate && turn % 2 == 1 {
            // Back to the cluster the next scenario starts from.
            let pairs = data.as_ref().expect("rendered").pairs[s.index()]
                .as_ref()
                .expect("computed");
            let ns = &side.as_ref().expect("loaded").0;
            ns.apply(&pairs[(turn - 1) / 2 % pairs.len()], false);
        }
        let tools = harness::take_tool_peak_rss();
        results.add(rec.map(|mut r| {
            r.set("tool_rss_bytes", tools as f64);
            r
        }));
    }
    // Restart: what a restarted agent of this kind must read back before it can tell
    // what to write (nothing here: the state is the cluster's).
    let restart_system = which.restart_system();
    let wanted = bench_wanted(&id("restart", restart_system, run));
    let loaded_ns = |data: &mut Option<BaseData>, side: &mut Option<(BaselineNs, Duration)>| {
        if side.is_none() {
            let size = run.size(mode);
            let full = &data.get_or_insert_with(|| BaseData::new(size)).full;
            *side = Some(BaselineNs::new(BENCH, which, full));
        }
    };
    let probe = wanted.then(|| {
        loaded_ns(data, &mut side);
        harness::take_tool_peak_rss();
        Probe {
            wall: side.as_ref().expect("loaded").0.read_back(),
        }
    });
    let rec = run_bench(c, mode, "restart", restart_system, run, probe, FULL, || {
        loaded_ns(data, &mut side);
        side.as_ref().expect("loaded").0.read_back()
    });
    let tools = harness::take_tool_peak_rss();
    results.add(rec.map(|mut r| {
        r.set("tool_rss_bytes", tools as f64);
        r
    }));
    let loaded = side.take().map(|(_, t)| t);

    // The whole baseline into an empty namespace.
    let full_load = |data: &mut Option<BaseData>| {
        let size = run.size(mode);
        let full = &data.get_or_insert_with(|| BaseData::new(size)).full;
        let ns = Netns::new(BENCH, "full-base");
        let t = full.load(which, &ns);
        drop(ns);
        t
    };
    let full_system = which.full_system();
    let wanted = bench_wanted(&id("full_sync", full_system, run));
    harness::take_tool_peak_rss();
    let probe = wanted.then(|| {
        let timed = loaded.unwrap_or_else(|| full_load(data));
        Probe {
            wall: timed + Duration::from_millis(50),
        }
    });
    let rec = run_bench(c, mode, "full_sync", full_system, run, probe, FULL, || {
        full_load(data)
    });
    let tools = harness::take_tool_peak_rss();
    results.add(rec.map(|mut r| {
        r.set("tool_rss_bytes", tools as f64);
        r
    }));
}

// ---------------------------------------------------------------------------------------
// Peak RSS

/// What the RSS child reports.
#[derive(serde::Serialize, serde::Deserialize)]
struct RssReport {
    /// Resident set once the cluster's objects are generated, before the engine starts.
    agent_rss_bytes: u64,
    /// The process's peak resident set over every scenario.
    peak_rss_bytes: u64,
    /// Whether the peak could be reset after generation (`/proc/self/clear_refs`); if
    /// not, `agent_rss_bytes` is the generation's peak, the differences understate, and
    /// every scenario's figure is the peak so far.
    hwm_reset: bool,
    /// The process's peak resident set during each scenario, by scenario name.
    scenarios: Vec<(String, u64)>,
}

/// The child's side of the RSS measurement (`NETFENCE_BENCH_RSS_CHILD=<pods>,<policies>`):
/// an agent process that holds the cluster's k8s objects, as an informer cache would,
/// and runs one engine.
///
/// It generates the cluster and the deltas it will apply, returns freed heap to the
/// kernel (`malloc_trim`) and resets the peak-RSS mark to the current resident set, which
/// it reports as `agent_rss_bytes`. It then runs the scenarios one after the other, each
/// once, and reports the process's peak (`VmHWM`) during each: the full sync (an engine
/// in a fresh namespace, handed the whole cluster, until ready and converged), a pod
/// added and one deleted, each change scenario (its change, then its inverse), and a
/// restart (that engine shut down, a new one adopting the namespace). Before each
/// scenario after the first, the heap is trimmed and the mark reset again, so that a
/// scenario's figure is the resident set it started from plus what it added; the
/// process's overall peak, `peak_rss_bytes`, is the largest of them. Each figure is read
/// after an [`Engine::sync`] has completed behind the scenario: the engine records a
/// commit in its view of the kernel, and frees what the commit used, after the
/// completions fire, and that bookkeeping is the scenario's, not the next one's. (Read at
/// the completions, the full sync's record, its largest transient, landed in `pod_add`.)
///
/// `peak - agent` is what the engine added at its peak over an agent that already holds
/// the objects: its model (the converted objects it keeps), the compiled ruleset, the
/// kernel state it mirrors, netlink buffers, its thread's stack, and the transient
/// copies the caller's conversions make. It is not an exact size of the engine: heap the
/// engine frees is kept by the allocator and counted, memory the generator freed but the
/// allocator kept (after the trim) may be reused by the engine and not counted, and
/// kernel memory (rules, sets) is not in any process's RSS.
fn rss_child(spec: &str) {
    let (pods, policies) = spec
        .split_once(',')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or_else(|| panic!("{RSS_CHILD_ENV}={spec}: expected <pods>,<policies>"));
    let mode = Mode::from_env(BENCH);
    let run = SizeRun {
        pods,
        policies,
        size: OnceCell::new(),
        changes: OnceCell::new(),
    };
    let size = run.size(&mode);
    let changes: Vec<(Scenario, &Change)> = Scenario::CHANGES
        .into_iter()
        .map(|s| (s, &run.changes(&mode, s)[0]))
        .collect();
    // "5" resets VmHWM to the current resident set (Linux 4.0 and later); the trim
    // first, so that the mark starts from what is really held.
    let reset = || {
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    };
    let hwm = || record::peak_rss_bytes().expect("VmHWM in /proc/self/status");
    // The peak once the engine is idle: its bookkeeping after the completions included.
    let settled = |engine: &Engine| {
        await_engine(engine, engine.sync(), "the engine's bookkeeping");
        hwm()
    };
    let hwm_reset = reset();
    let agent = hwm();

    let mut scenarios = Vec::new();
    let ns = Netns::new(BENCH, "rss");
    let engine = Engine::start(size.engine_config(&ns)).expect("starting the engine");
    load_cluster(&engine, size);
    scenarios.push(("full_sync".to_owned(), settled(&engine)));
    let (pod_ns, pod_name) = size.extra_key(0);
    reset();
    await_engine(&engine, engine.upsert_pod(&size.nf_extra[0]), "the pod add");
    scenarios.push(("pod_add".to_owned(), settled(&engine)));
    reset();
    await_engine(
        &engine,
        engine.delete_pod(&pod_ns, &pod_name),
        "the pod delete",
    );
    scenarios.push(("pod_delete".to_owned(), settled(&engine)));
    for (s, ch) in changes {
        reset();
        submit(&engine, &ch.forward);
        submit(&engine, &ch.inverse);
        scenarios.push((s.name().to_owned(), settled(&engine)));
    }
    engine.shutdown();
    drop(engine);
    reset();
    let engine = Engine::start(size.engine_config(&ns)).expect("restarting the engine");
    load_cluster(&engine, size);
    scenarios.push(("restart".to_owned(), settled(&engine)));
    drop(engine);
    drop(ns);
    let report = RssReport {
        agent_rss_bytes: agent,
        peak_rss_bytes: scenarios.iter().map(|(_, b)| *b).max().unwrap_or(agent),
        hwm_reset,
        scenarios,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("the report serializes")
    );
}

/// Runs the RSS child for `run`'s size and records what it says.
fn rss(mode: &Mode, run: &SizeRun, results: &mut Results) {
    if !bench_wanted(&id("rss", "netfence", run)) {
        return;
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    let out = Command::new(exe)
        .env(RSS_CHILD_ENV, format!("{},{}", run.pods, run.policies))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("starting the RSS child");
    assert!(out.status.success(), "the RSS child failed: {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report: RssReport = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the RSS child's report {line:?}: {e}"));
    let mut r = Record::new(BENCH, "rss", "netfence", run.pods, run.policies);
    r.smoke = mode.smoke;
    r.set("peak_rss_bytes", report.peak_rss_bytes as f64);
    r.set("agent_rss_bytes", report.agent_rss_bytes as f64);
    r.set(
        "engine_rss_bytes",
        report.peak_rss_bytes.saturating_sub(report.agent_rss_bytes) as f64,
    );
    if !report.hwm_reset {
        eprintln!(
            "rss {}: VmHWM could not be reset; the engine's share is understated",
            run.label()
        );
    }
    results.add(Some(r));
    // Each scenario's figure joins that scenario's own netfence record (the report
    // merges records of one key): a row with no samples of its own.
    for (scenario, peak) in &report.scenarios {
        let mut r = Record::new(BENCH, scenario, "netfence", run.pods, run.policies);
        r.smoke = mode.smoke;
        r.set(
            "engine_rss_bytes",
            peak.saturating_sub(report.agent_rss_bytes) as f64,
        );
        results.add(Some(r));
    }
}

// ---------------------------------------------------------------------------------------
// The run

fn bench(c: &mut Criterion) {
    let started = Instant::now();
    let mode = Mode::from_env(BENCH);
    remove_stale_namespaces(BENCH);
    let mut results = Results {
        records: Vec::new(),
        out: Recorder::new(BENCH),
    };
    let sizes = common::harness::sizes(&mode);
    for &(pods, policies) in sizes {
        let run = SizeRun {
            pods,
            policies,
            size: OnceCell::new(),
            changes: OnceCell::new(),
        };
        netfence(c, &mode, &run, &mut results);
        commit_floor(c, &mode, &run, &mut results);
        let mut data = None;
        for which in Baseline::ALL {
            baseline(c, &mode, &run, which, &mut data, &mut results);
        }
        drop(data);
        rss(&mode, &run, &mut results);
    }
    summary(&results, &mode, sizes, started.elapsed());
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.3}", d.as_secs_f64() * 1e3),
    )
}

fn ratio(base: Option<Duration>, nf: Option<Duration>) -> Option<f64> {
    let (b, n) = (base?, nf?);
    (!n.is_zero()).then(|| b.as_secs_f64() / n.as_secs_f64())
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}x"))
}

fn mb(bytes: Option<f64>) -> String {
    bytes.map_or_else(|| "-".to_owned(), |b| format!("{:.1}", b / 1e6))
}

fn summary(results: &Results, mode: &Mode, sizes: &[(usize, usize)], elapsed: Duration) {
    if results.records.is_empty() {
        return;
    }
    let labels: Vec<String> = sizes.iter().map(|(p, n)| format!("{p}p_{n}np")).collect();
    let median = |s: &str, sys: &str, l: &str| results.get(s, sys, l).and_then(Record::median);
    eprintln!();
    eprintln!(
        "scenarios: latency until converged, medians and p99 in ms ({}, {} run, {:.0} s)",
        if mode.dual_stack {
            "dual stack"
        } else {
            "IPv4 only"
        },
        if mode.smoke { "smoke" } else { "full" },
        elapsed.as_secs_f64()
    );
    eprintln!(
        "{:<18} {:<14} {:>9} {:>9} {:>10} {:>8} {:>10} {:>8} {:>8}",
        "scenario", "size", "nf", "nf p99", "calico", "cal x", "nft", "nft x", "commits"
    );
    let mut rows: Vec<(&str, &str, &str)> = Scenario::CHANGES
        .iter()
        .map(|s| (s.name(), Baseline::Calico.system(), Baseline::Nft.system()))
        .collect();
    rows.push((
        "restart",
        Baseline::Calico.restart_system(),
        Baseline::Nft.restart_system(),
    ));
    rows.push((
        "full_sync",
        Baseline::Calico.full_system(),
        Baseline::Nft.full_system(),
    ));
    for (scenario, cal, nft) in rows {
        for l in &labels {
            let nf = results.get(scenario, "netfence", l);
            let (cal_m, nft_m) = (median(scenario, cal, l), median(scenario, nft, l));
            if nf.is_none() && cal_m.is_none() && nft_m.is_none() {
                continue;
            }
            let nf_m = nf.and_then(Record::median);
            eprintln!(
                "{:<18} {:<14} {:>9} {:>9} {:>10} {:>8} {:>10} {:>8} {:>8}",
                scenario,
                l,
                ms(nf_m),
                ms(nf.and_then(|r| r.quantile(0.99))),
                ms(cal_m),
                times(ratio(cal_m, nf_m)),
                ms(nft_m),
                times(ratio(nft_m, nf_m)),
                nf.and_then(|r| r.get("commits"))
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
            );
        }
    }
    eprintln!(
        "(x: baseline median / netfence median; full_sync's baselines are calico-full and \
         nft-full, restart's calico-restart and nft-restart; commits: mean kernel commits \
         per burst)"
    );
    for l in &labels {
        if let Some(r) = results.get("rss", "netfence", l) {
            eprintln!(
                "rss {l}: peak {} MB for the agent process, {} MB of it the engine's (over \
                 {} MB of objects)",
                mb(r.get("peak_rss_bytes")),
                mb(r.get("engine_rss_bytes")),
                mb(r.get("agent_rss_bytes")),
            );
        }
    }
    eprintln!(
        "records in {}",
        record::dir().join(format!("{BENCH}.jsonl")).display()
    );

    // The targets are stated at 10k pods / 1k policies; other sizes say how close.
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let at = |l: &str| {
        if l == TARGET_SIZE {
            String::new()
        } else {
            format!(" (at {l}, not {TARGET_SIZE})")
        }
    };
    let largest = |scenario: &str, system: &str| {
        labels
            .iter()
            .rev()
            .find(|l| median(scenario, system, l).is_some())
            .or_else(|| labels.iter().find(|l| *l == TARGET_SIZE))
    };
    if let Some(l) = largest("policy_change", "netfence") {
        if let Some(m) = median("policy_change", "netfence", l) {
            eprintln!(
                "target policy change median < 5 ms: {} ({} ms){}",
                verdict(m < Duration::from_millis(5)),
                ms(Some(m)),
                at(l)
            );
        }
    }
    if let Some(l) = largest("full_sync", "netfence") {
        if let Some(m) = median("full_sync", "netfence", l) {
            let x = ratio(
                median("full_sync", Baseline::Calico.full_system(), l),
                Some(m),
            );
            eprintln!(
                "target full sync < 1 s and >= 3x faster than calico-full: {} ({} ms, {}){}",
                verdict(m < Duration::from_secs(1) && x.is_some_and(|x| x >= 3.0)),
                ms(Some(m)),
                times(x),
                at(l)
            );
        }
    }
    if let Some(l) = largest("burst", "netfence") {
        if let Some(m) = median("burst", "netfence", l) {
            // The commit alone, when measured: what no work on netfence's side removes.
            let floor = median("burst", "netfence-commit", l)
                .map(|f| format!("; its kernel commit alone {} ms", ms(Some(f))))
                .unwrap_or_default();
            eprintln!(
                "target burst of {BURST} converged < 50 ms: {} ({} ms{floor}){}",
                verdict(m < Duration::from_millis(50)),
                ms(Some(m)),
                at(l)
            );
        }
    }
    if let Some(l) = labels
        .iter()
        .rev()
        .find(|l| results.get("rss", "netfence", l).is_some())
    {
        let engine = results
            .get("rss", "netfence", l)
            .and_then(|r| r.get("engine_rss_bytes"));
        if let Some(b) = engine {
            eprintln!(
                "target engine peak RSS < 100 MB: {} ({} MB){}",
                verdict(b < 100e6),
                mb(Some(b)),
                at(l)
            );
        }
    }
}

fn main() {
    // The RSS child does its measurement and nothing else: no criterion, no records.
    if let Ok(spec) = std::env::var(RSS_CHILD_ENV) {
        rss_child(&spec);
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
