//! Delta-to-kernel latency of one pod add and one pod delete through the engine's public
//! API, at 1k, 5k and 10k pods (each with 100 and with 1,000 policies), next to the same
//! delta applied the way Calico applies it, in the same run.
//!
//! * **netfence** (`sync/pod_add/netfence/<pods>p_<policies>np`, `sync/pod_delete/...`): a
//!   [`sync::Engine`] in a namespace of its own, fed the whole generated cluster, then
//!   `ready().wait()`. One iteration is one call to `upsert_pod` (or `delete_pod`) of a
//!   pod that is not in the cluster, timed until its [`sync::Completion::wait`] returns:
//!   the conversion from the k8s object, the hand-off to the sync thread, the incremental
//!   recompile, the plan, the kernel commit and the wake-up of the caller. The opposite
//!   delta follows, untimed, so that every iteration starts from the same cluster.
//!   Iterations take turns over [`PODS`] such pods ([`Size::extra`]: generator extra
//!   pods, each with an existing app, and so that app's sets), so that a size's figure is
//!   not one pod's luck. They are picked so that each size's pods change as many set
//!   members as 1,000 pods' first [`PODS`] extra pods do
//!   ([`common::harness::matched_extra`]): the generator spreads a size's policies over
//!   `pods / 20` apps, so a pod drawn at random at 10k pods joins fewer sets than one at
//!   1k, and "flat from 1k to 10k" would compare lighter work at 10k.
//! * **calico-iptables** (`sync/pod_add/calico-iptables/...`): the Calico-like baseline of
//!   the same cluster ([`calico::render`]) loaded once into a second namespace; one
//!   iteration applies the pod's delta in [`calico::Delta::steps`] order (`ipset restore`
//!   of the set members, `iptables-nft-restore --noflush` of the per-endpoint chains and
//!   dispatch rules), timed from the first process start to the last exit. The tools run
//!   directly in the namespace (setns between fork and exec, as Felix runs them in its
//!   own namespace), so no `ip netns exec` is charged to them. The opposite delta follows,
//!   untimed. Every delta is computed before any timing (one at 10k pods takes about half
//!   a second to render).
//! * **nft** (`sync/pod_add/nft/...`): the same Calico-like state written in native nft
//!   syntax ([`common::nft_native::render`]) loaded into a third namespace; one iteration
//!   is one `nft -f -` of the pod's delta ([`common::nft_native::diff`], one
//!   transaction), run as the baseline's tools are, after the same pause.
//!
//! Every pod lives on the node netfence and the baseline enforce for (all pods local, the
//! worst case for set and chain counts). Single stack IPv4 by default (netfence programs
//! `ip filter` only, the baseline renders no `ip6tables`); `NETFENCE_BENCH_DUAL_STACK=1`
//! makes both dual stack.
//!
//! netfence runs with anti-spoofing on (pod interface prefix `cali`, each pod's
//! `netfence.io/host-interface` annotation naming its interface), as the baseline runs its
//! per-interface chains. `NETFENCE_BENCH_NO_ANTISPOOF=1` feeds netfence its pods without
//! the annotation.
//!
//! nf_tables frees a deleted rule after an RCU grace period and the next commit waits
//! for it, so the baseline sleeps [`SETTLE`] untimed before each of its deltas (without
//! the pause its deltas measured about 10% slower at 5k pods), and so does nft; netfence's
//! pod deltas change only set members, and get no pause.
//!
//! `cargo bench --bench sync` (root; about 7 minutes; each size's namespaces are built on
//! first use, so a filter such as `-- 5000p` skips the others). With `--quick`, in
//! `cargo test` mode, or with `NETFENCE_BENCH_SMOKE=1`, only 1,000 pods / 100 policies
//! run (CI: `-- --quick --warm-up-time 0.2 --measurement-time 0.5`, under 10 s). A table
//! of medians and ratios goes to stderr at the end. Every timed delta (warm-up included)
//! also goes to `target/netfence-bench/sync.jsonl` ([`record`]; scenarios `pod_add` and
//! `pod_delete`, systems `netfence`, `calico-iptables` and `nft`) for the report, which
//! reads the other scenarios from the `scenarios` bench.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::harness::{
    bench_wanted, holds, remove_stale_namespaces, Baseline, BaselineNs, DeltaPair, FullLoad, Mode,
    NetfenceSide, Size, PODS, SETTLE,
};
use common::record::{Record, Recorder};
use common::{calico, cluster, harness, record};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};

/// The bench's name: its namespaces' prefix and its records' file.
const BENCH: &str = "sync";

/// Timed baseline deltas per measurement, about: criterion takes 10 samples of a few.
const BASELINE_DELTAS: u32 = 30;

// ---------------------------------------------------------------------------------------
// The baselines

/// What both baselines need of one size, computed once before either is timed: the
/// cluster's rendered state and each extra pod's (add, delete) deltas.
struct PodDeltas {
    /// The whole state, as each baseline loads it.
    full: FullLoad,
    stats: calico::Stats,
    /// Extra pod `k`'s (add, delete).
    pairs: Vec<DeltaPair>,
    rendered: Duration,
}

impl PodDeltas {
    fn new(size: &Size) -> Self {
        let t0 = Instant::now();
        let before = size.gen.cluster();
        let cfg = size.calico_config();
        let r_before = calico::render_state(&before, &cfg);
        let pairs = size
            .extra
            .iter()
            .map(|pod| {
                let mut after = before.clone();
                after.upsert_pod(cluster::to_pod(pod));
                DeltaPair::new(&r_before, &calico::render_state(&after, &cfg))
            })
            .collect();
        Self {
            full: FullLoad::new(&r_before),
            stats: r_before.stats(),
            pairs,
            rendered: t0.elapsed(),
        }
    }
}

/// A baseline's namespace, loaded with the whole cluster.
struct BaselineSide {
    base: BaselineNs,
    /// The wall time of one iteration (both deltas and both pauses), from a first untimed
    /// add and delete: criterion sizes its warm-up and samples in wall time.
    iteration: Duration,
}

impl BaselineSide {
    fn new(size: &Size, which: Baseline, deltas: &PodDeltas) -> Self {
        let (base, loaded) = BaselineNs::new(BENCH, which, &deltas.full);
        let mean = |f: &dyn Fn(&DeltaPair) -> usize| {
            deltas.pairs.iter().map(f).sum::<usize>() / deltas.pairs.len()
        };
        let inverse_lines = |d: &DeltaPair| match which {
            Baseline::Calico => {
                let (rules, sets) = d.calico.1.line_counts();
                rules + sets
            }
            Baseline::Nft => d.nft.1.lines().count(),
        };
        let s = deltas.stats;
        eprintln!(
            "{} {}: {} chains, {} rules, {} sets, {} members; rendered with {} pod deltas \
             (both baselines) in {:.2} s, loaded in {:.2} s; a pod add is {} lines of input, \
             a delete {} (means)",
            which.system(),
            size.label(),
            s.chains,
            s.rules,
            s.sets,
            s.members,
            deltas.pairs.len(),
            deltas.rendered.as_secs_f64(),
            loaded.as_secs_f64(),
            mean(&|d| d.lines(which)),
            mean(&inverse_lines),
        );
        let mut side = Self {
            base,
            iteration: Duration::ZERO,
        };
        // The first pod's deltas apply, and do what they say.
        let ip = size.extra_ip(0);
        std::thread::sleep(SETTLE);
        let a = side.apply(deltas, 0, true);
        assert!(
            side.holds(&ip),
            "the added pod {ip} is in no {} set",
            which.system()
        );
        std::thread::sleep(SETTLE);
        let d = side.apply(deltas, 0, false);
        assert!(
            !side.holds(&ip),
            "the deleted pod {ip} is still in a {} set",
            which.system()
        );
        side.iteration = a + d + 2 * SETTLE;
        side
    }

    /// Applies extra pod `k`'s add (or delete) delta; the time from the first process
    /// start to the last exit.
    fn apply(&self, deltas: &PodDeltas, k: usize, add: bool) -> Duration {
        self.base.apply(&deltas.pairs[k], add)
    }

    /// Whether some set holds address `ip`.
    fn holds(&self, ip: &str) -> bool {
        match self.base.which {
            Baseline::Calico => holds(&self.base.ns, ip),
            // Elements print as `ip`, `ip . proto . port` or in ranges `a-b`: an exact
            // address between separators (a pod address is never a range's end here).
            Baseline::Nft => self
                .base
                .ns
                .sh("nft", &["list", "ruleset"], "")
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .any(|w| w == ip),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measurement

/// Every timed delta of one bench ID, warm-up included, for the summary.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn median(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    fn quantile(&self, q: f64) -> Option<Duration> {
        let mut v = self.0.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        Some(v[i])
    }
}

#[derive(Default)]
struct Row {
    label: String,
    nf_add: Samples,
    nf_del: Samples,
    nf_spaced_add: Samples,
    cal_add: Samples,
    cal_del: Samples,
    nft_add: Samples,
    nft_del: Samples,
    /// netfence's own view over the measured deltas: commits, mean commit time, mean
    /// operations per commit.
    nf_commits: Option<(u64, f64, f64)>,
    /// The baselines' tools' peak RSS over each (scenario, system)'s deltas, in bytes.
    tool_rss: Vec<(&'static str, &'static str, u64)>,
}

impl Row {
    fn baseline(&mut self, which: Baseline, add: bool) -> &mut Samples {
        match (which, add) {
            (Baseline::Calico, true) => &mut self.cal_add,
            (Baseline::Calico, false) => &mut self.cal_del,
            (Baseline::Nft, true) => &mut self.nft_add,
            (Baseline::Nft, false) => &mut self.nft_del,
        }
    }

    /// The report's records of this size: one per (scenario, system) that ran.
    fn write(&self, out: &mut Recorder, size: &Size, smoke: bool) {
        let series = [
            ("pod_add", "netfence", &self.nf_add),
            ("pod_delete", "netfence", &self.nf_del),
            ("pod_add", Baseline::Calico.system(), &self.cal_add),
            ("pod_delete", Baseline::Calico.system(), &self.cal_del),
            ("pod_add", Baseline::Nft.system(), &self.nft_add),
            ("pod_delete", Baseline::Nft.system(), &self.nft_del),
        ];
        for (scenario, system, samples) in series {
            if samples.0.is_empty() {
                continue;
            }
            let mut r = Record::new(BENCH, scenario, system, size.pods, size.policies);
            r.smoke = smoke;
            for d in &samples.0 {
                r.push(*d);
            }
            if let Some((.., peak)) = self
                .tool_rss
                .iter()
                .find(|(o, sys, _)| *o == scenario && *sys == system)
            {
                r.set("tool_rss_bytes", *peak as f64);
            }
            if system == "netfence" {
                if let Some((commits, secs, ops)) = self.nf_commits {
                    // Over both directions' measured deltas: the engine counts commits,
                    // not which caller they served.
                    r.set("commits", commits as f64);
                    r.set("mean_commit_s", secs);
                    r.set("ops_per_commit", ops);
                }
            }
            out.write(&r);
        }
    }
}

fn bench(c: &mut Criterion) {
    let started = Instant::now();
    let mode = Mode::from_env(BENCH);
    remove_stale_namespaces(BENCH);
    let mut recorder = Recorder::new(BENCH);
    let sizes = common::harness::sizes(&mode);
    let mut rows = Vec::new();
    for &(pods, policies) in sizes {
        let size = Size::new(pods, policies, &mode);
        let label = size.label();
        let mut row = Row {
            label: label.clone(),
            ..Row::default()
        };

        // netfence: built on first use, so a filter that leaves it out costs nothing.
        let mut nf: Option<NetfenceSide> = None;
        let mut before: Option<sync::MetricsSnapshot> = None;
        let mut side = |nf: &mut Option<NetfenceSide>| {
            if nf.is_none() {
                let s = NetfenceSide::new(&size, BENCH);
                before = Some(s.engine.metrics());
                *nf = Some(s);
            }
        };
        // Built before the first group when it will run, so that a quick pass, which
        // stops on wall time, does not spend its first sample on the load.
        if bench_wanted(&format!("sync/pod_add/netfence/{label}"))
            || bench_wanted(&format!("sync/pod_delete/netfence/{label}"))
        {
            side(&mut nf);
        }
        // Which extra pod the next iteration uses: every loop below takes turns.
        let mut turn = 0;
        for (op, add) in [("pod_add", true), ("pod_delete", false)] {
            let mut g = c.benchmark_group(format!("sync/{op}"));
            let samples = if add {
                &mut row.nf_add
            } else {
                &mut row.nf_del
            };
            g.bench_function(BenchmarkId::new("netfence", &label), |b| {
                side(&mut nf);
                let s = nf.as_ref().expect("built");
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let k = turn % PODS;
                        turn += 1;
                        // Each iteration starts and ends without the pod; only `op` is
                        // timed.
                        let t = if add {
                            let t = s.add(&size, k);
                            s.delete(&size, k);
                            t
                        } else {
                            s.add(&size, k);
                            s.delete(&size, k)
                        };
                        samples.0.push(t);
                        total += t;
                    }
                    total
                });
            });
            g.finish();
        }
        if let (Some(s), Some(b)) = (&nf, &before) {
            let m = s.engine.metrics();
            let commits = m.commits - b.commits;
            if commits > 0 {
                let secs = m.commit_duration.sum - b.commit_duration.sum;
                let ops = m.operations - b.operations;
                row.nf_commits =
                    Some((commits, secs / commits as f64, ops as f64 / commits as f64));
            }
            if !mode.smoke {
                // Deltas that come one at a time: the sync thread and the caller wake from
                // an idle wait, as on a node where pods start seconds apart.
                for i in 0..100 {
                    std::thread::sleep(Duration::from_millis(5));
                    row.nf_spaced_add.0.push(s.add(&size, i % PODS));
                    std::thread::sleep(Duration::from_millis(5));
                    s.delete(&size, i % PODS);
                }
            }
        }
        drop(nf);

        // The baselines, each in its own namespace, one after the other and after
        // netfence's is gone. A side is built before its first group when it will run,
        // so that the measurement can be sized from one iteration; otherwise on first
        // use. Their deltas are computed once, for both.
        let mut deltas: Option<PodDeltas> = None;
        for which in Baseline::ALL {
            let system = which.system();
            let mut base: Option<BaselineSide> = None;
            for (op, add) in [("pod_add", true), ("pod_delete", false)] {
                let group = format!("sync/{op}");
                if base.is_none() && bench_wanted(&format!("{group}/{system}/{label}")) {
                    let d = deltas.get_or_insert_with(|| PodDeltas::new(&size));
                    base = Some(BaselineSide::new(&size, which, d));
                }
                // The tools' peak RSS from here on is the deltas', not the load's.
                harness::take_tool_peak_rss();
                let mut g = c.benchmark_group(group);
                g.sample_size(10).sampling_mode(SamplingMode::Flat);
                if let (Some(s), false) = (&base, mode.smoke) {
                    // Three warm-up iterations (1, then 2: criterion sizes its samples
                    // from their mean wall time), then about BASELINE_DELTAS timed deltas
                    // in 10 samples. A quick pass keeps the command line's times.
                    g.warm_up_time(s.iteration * 2)
                        .measurement_time(s.iteration * BASELINE_DELTAS);
                }
                let samples = row.baseline(which, add);
                g.bench_function(BenchmarkId::new(system, &label), |b| {
                    let d = deltas.get_or_insert_with(|| PodDeltas::new(&size));
                    if base.is_none() {
                        base = Some(BaselineSide::new(&size, which, d));
                        harness::take_tool_peak_rss();
                    }
                    let s = base.as_ref().expect("built");
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let k = turn % PODS;
                            turn += 1;
                            // Each iteration starts and ends without the pod; only `op`
                            // is timed.
                            if !add {
                                std::thread::sleep(SETTLE);
                                s.apply(d, k, true);
                            }
                            std::thread::sleep(SETTLE);
                            let t = s.apply(d, k, add);
                            samples.0.push(t);
                            total += t;
                            if add {
                                std::thread::sleep(SETTLE);
                                s.apply(d, k, false);
                            }
                        }
                        total
                    });
                });
                g.finish();
                row.tool_rss
                    .push((op, system, harness::take_tool_peak_rss()));
            }
        }
        drop(deltas);
        row.write(&mut recorder, &size, mode.smoke);
        rows.push(row);
    }
    summary(&rows, &mode, started.elapsed());
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.3}", d.as_secs_f64() * 1e3),
    )
}

fn ratio(base: Option<Duration>, nf: Option<Duration>) -> String {
    match (base, nf) {
        (Some(b), Some(n)) if !n.is_zero() => format!("{:.0}x", b.as_secs_f64() / n.as_secs_f64()),
        _ => "-".to_owned(),
    }
}

fn summary(rows: &[Row], mode: &Mode, elapsed: Duration) {
    let ran = |r: &&Row| {
        [
            &r.nf_add, &r.nf_del, &r.cal_add, &r.cal_del, &r.nft_add, &r.nft_del,
        ]
        .iter()
        .any(|s| !s.0.is_empty())
    };
    if !rows.iter().any(|r| ran(&r)) {
        return;
    }
    eprintln!();
    eprintln!(
        "sync: delta-to-kernel latency of one pod, medians in ms ({}, {} run, {:.0} s)",
        if mode.dual_stack {
            "dual stack"
        } else {
            "IPv4 only"
        },
        if mode.smoke { "smoke" } else { "full" },
        elapsed.as_secs_f64()
    );
    eprintln!(
        "{:<14} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} \
         {:>9}",
        "size",
        "nf add",
        "nf del",
        "nf p99",
        "nf idle",
        "cal add",
        "cal del",
        "add x",
        "del x",
        "nft add",
        "nft del",
        "nft add x",
        "nft del x",
        "commit"
    );
    for r in rows.iter().filter(ran) {
        let p99 = r.nf_add.quantile(0.99).max(r.nf_del.quantile(0.99));
        let commit = r.nf_commits.map_or_else(
            || "-".to_owned(),
            |(_, s, ops)| format!("{:.3}/{ops:.0}", s * 1e3),
        );
        eprintln!(
            "{:<14} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} \
             {:>9} {:>9}",
            r.label,
            ms(r.nf_add.median()),
            ms(r.nf_del.median()),
            ms(p99),
            ms(r.nf_spaced_add.median()),
            ms(r.cal_add.median()),
            ms(r.cal_del.median()),
            ratio(r.cal_add.median(), r.nf_add.median()),
            ratio(r.cal_del.median(), r.nf_del.median()),
            ms(r.nft_add.median()),
            ms(r.nft_del.median()),
            ratio(r.nft_add.median(), r.nf_add.median()),
            ratio(r.nft_del.median(), r.nf_del.median()),
            commit,
        );
    }
    eprintln!(
        "(nf p99: the worse of add and delete; nf idle: add after 5 ms idle; x: baseline \
         median / netfence median; commit: mean kernel apply in ms / operations, from the \
         engine's metrics; records in {})",
        record::dir().join(format!("{BENCH}.jsonl")).display()
    );
    let medians: Vec<Duration> = rows
        .iter()
        .flat_map(|r| [r.nf_add.median(), r.nf_del.median()])
        .flatten()
        .collect();
    if let (Some(lo), Some(hi)) = (medians.iter().min(), medians.iter().max()) {
        let target = Duration::from_micros(200);
        eprintln!(
            "target median < 0.2 ms: {} (max {} ms); spread {:.2}x from fastest to slowest",
            if *hi < target { "met" } else { "MISSED" },
            ms(Some(*hi)),
            hi.as_secs_f64() / lo.as_secs_f64().max(1e-9)
        );
    }
    for r in rows.iter().filter(|r| r.label.starts_with("5000p")) {
        let worst = [
            ratio_value(r.cal_add.median(), r.nf_add.median()),
            ratio_value(r.cal_del.median(), r.nf_del.median()),
        ]
        .into_iter()
        .flatten()
        .fold(f64::INFINITY, f64::min);
        if worst.is_finite() {
            eprintln!(
                "target >= 50x faster at {}: {} (worst {:.0}x)",
                r.label,
                if worst >= 50.0 { "met" } else { "MISSED" },
                worst
            );
        }
    }
}

fn ratio_value(base: Option<Duration>, nf: Option<Duration>) -> Option<f64> {
    Some(base?.as_secs_f64() / nf?.as_secs_f64())
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
