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
//!   Iterations take turns over [`PODS`] such pods
//!   ([`cluster::Generated::extra_pod`]`(0..PODS)`, each with its own app and so its own
//!   sets), so that a size's figure is not one pod's luck.
//! * **calico-iptables** (`sync/pod_add/calico-iptables/...`): the Calico-like baseline of
//!   the same cluster ([`calico::render`]) loaded once into a second namespace; one
//!   iteration applies the pod's delta in [`calico::Delta::steps`] order (`ipset restore`
//!   of the set members, `iptables-nft-restore --noflush` of the per-endpoint chains and
//!   dispatch rules), timed from the first process start to the last exit. The tools run
//!   directly in the namespace (setns between fork and exec, as Felix runs them in its
//!   own namespace), so no `ip netns exec` is charged to them. The opposite delta follows,
//!   untimed. Every delta is computed before any timing (one at 10k pods takes about half
//!   a second to render).
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
//! the pause its deltas measured about 10% slower at 5k pods); netfence's pod deltas
//! change only set members, and get no pause.
//!
//! `cargo bench --bench sync` (root; about 5 minutes; each size's namespaces are built on
//! first use, so a filter such as `-- 5000p` skips the others). With `--quick`, in
//! `cargo test` mode, or with `NETFENCE_BENCH_SMOKE=1`, only 1,000 pods / 100 policies
//! run (CI: `-- --quick --warm-up-time 0.2 --measurement-time 0.5`, under 10 s). A table
//! of medians and ratios goes to stderr at the end; criterion's output is the record.

#[path = "common/mod.rs"]
mod common;

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{calico, cluster};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use policy::k8s_openapi::api::core::v1::Pod;
use policy::{CompilerConfig, Family};
use sync::{Engine, EngineConfig};

/// (pods, policies); namespaces are pods / 100.
const SIZES: [(usize, usize); 6] = [
    (1_000, 100),
    (1_000, 1_000),
    (5_000, 100),
    (5_000, 1_000),
    (10_000, 100),
    (10_000, 1_000),
];

/// How many different pods the iterations take turns over.
const PODS: usize = 8;

/// Untimed pause before each baseline delta (see the module doc).
const SETTLE: Duration = Duration::from_millis(50);

/// Timed baseline deltas per measurement, about: criterion takes 10 samples of a few.
const BASELINE_DELTAS: u32 = 30;

/// Prefix of this bench's namespaces: `<prefix><pid>-<n>`.
const NETNS_PREFIX: &str = "nfb-sync-";

// ---------------------------------------------------------------------------------------
// Sandboxes

/// A network namespace made for this run, deleted on drop (also when a panic unwinds).
struct Netns {
    name: String,
    /// `/run/netns/<name>`, open for setns in the baseline's children.
    file: File,
}

impl Netns {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{NETNS_PREFIX}{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip netns add {name} failed (the bench needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // From here on the guard owns the namespace, even if opening it fails.
        let file = match File::open(format!("/run/netns/{name}")) {
            Ok(f) => f,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
                panic!("opening /run/netns/{name}: {e}");
            }
        };
        Self { name, file }
    }

    fn netns(&self) -> ruleset::Netns {
        ruleset::Netns::Named(self.name.clone())
    }

    /// `program args...` inside the namespace, with `input` on stdin; its stdout, or its
    /// stderr as the error.
    fn run(&self, program: &str, args: &[&str], input: &str) -> Result<String, String> {
        let fd = self.file.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only the async-signal-safe setns(2) runs between fork and exec; `fd`
        // stays open in the parent for as long as `self` lives.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {program}: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let fed = stdin.write_all(input.as_bytes());
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?} in {}: {}: {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        fed.map_err(|e| format!("feeding {program}: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// As [`Self::run`], panicking on failure.
    fn sh(&self, program: &str, args: &[&str], input: &str) -> String {
        self.run(program, args, input)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // ipsets and nf_tables tables live in the namespace and go with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Whether some set in `ns` has a member with address `ip` (`ipset save` spells members
/// `ip`, `ip/len`, `ip,proto:port` or `net,iface`).
fn holds(ns: &Netns, ip: &str) -> bool {
    ns.sh("ipset", &["save"], "")
        .lines()
        .filter(|l| l.starts_with("add "))
        .filter_map(|l| l.split(' ').nth(2))
        .any(|m| m.split([',', '/']).next() == Some(ip))
}

/// Deletes the namespaces an earlier run of this bench left behind when it was killed
/// (no unwinding on SIGINT/SIGKILL): those whose process is gone.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.starts_with("sync-"));
        if !alive {
            eprintln!("removing namespace {name} left by an earlier run");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The two sides

/// One cluster size, generated.
struct Size {
    pods: usize,
    policies: usize,
    dual_stack: bool,
    gen: cluster::Generated,
    /// The pods added and deleted, as the baseline sees them.
    extra: Vec<Pod>,
    /// The same pods as netfence is given them (see [`for_netfence`]).
    nf_extra: Vec<Pod>,
    /// Whether netfence's pods keep their host-interface annotation.
    host_interfaces: bool,
}

impl Size {
    fn new(pods: usize, policies: usize, mode: &Mode) -> Self {
        let dual_stack = mode.dual_stack;
        let gen = cluster::generate(&cluster::ClusterSpec {
            dual_stack,
            ..cluster::ClusterSpec::new(pods, pods / 100, policies)
        });
        let extra: Vec<Pod> = (0..PODS).map(|k| gen.extra_pod(k)).collect();
        let nf_extra = extra
            .iter()
            .map(|p| for_netfence(p, mode.host_interfaces))
            .collect();
        Self {
            pods,
            policies,
            dual_stack,
            gen,
            extra,
            nf_extra,
            host_interfaces: mode.host_interfaces,
        }
    }

    fn label(&self) -> String {
        format!("{}p_{}np", self.pods, self.policies)
    }

    fn extra_key(&self, k: usize) -> (String, String) {
        let m = &self.extra[k].metadata;
        (
            m.namespace.clone().expect("namespace"),
            m.name.clone().expect("name"),
        )
    }

    /// Extra pod `k`'s IPv4 address, as set members spell it.
    fn extra_ip(&self, k: usize) -> String {
        self.extra[k]
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("pod IP")
    }
}

/// `pod` as netfence is fed it: without the `netfence.io/host-interface` annotation
/// unless `keep` (the default; `NETFENCE_BENCH_NO_ANTISPOOF=1` drops it).
fn for_netfence(pod: &Pod, keep: bool) -> Pod {
    let mut pod = pod.clone();
    if !keep {
        if let Some(a) = pod.metadata.annotations.as_mut() {
            a.remove(policy::HOST_INTERFACE_ANNOTATION);
        }
    }
    pod
}

/// netfence's namespace: the engine holding the whole cluster.
struct NetfenceSide {
    // Dropped first: the sync thread stops before its namespace goes.
    engine: Engine,
    ns: Netns,
}

impl NetfenceSide {
    fn new(size: &Size) -> Self {
        let ns = Netns::new("nf");
        let t0 = Instant::now();
        let families = if size.dual_stack {
            Family::ALL.to_vec()
        } else {
            vec![Family::Ipv4]
        };
        let config = EngineConfig {
            netns: ns.netns(),
            reconcile_interval: None,
            compiler: CompilerConfig {
                families,
                node: size.gen.spec.node.clone(),
                // The generator names host interfaces as Calico does.
                pod_interface_prefix: Some("cali".into()),
                ..CompilerConfig::default()
            },
            ..EngineConfig::default()
        };
        let engine = Engine::start(config).expect("starting the engine");
        let g = &size.gen;
        let mut pending = Vec::with_capacity(g.namespaces.len() + g.pods.len() + g.policies.len());
        pending.extend(g.namespaces.iter().map(|n| engine.upsert_namespace(n)));
        pending.extend(
            g.pods
                .iter()
                .map(|p| engine.upsert_pod(&for_netfence(p, size.host_interfaces))),
        );
        pending.extend(g.policies.iter().map(|p| engine.upsert_policy(p)));
        await_engine(&engine, engine.ready(), "the first convergence");
        for c in pending {
            await_engine(&engine, c, "a cluster object");
        }
        let side = Self { engine, ns };
        let sets = side.ns.sh("ipset", &["list", "-n"], "").lines().count();
        let rules = side
            .ns
            .sh("iptables-nft-save", &["-t", "filter"], "")
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count();
        eprintln!(
            "netfence {}: {} sets, {} ip filter rules, loaded in {:.2} s",
            size.label(),
            sets,
            rules,
            t0.elapsed().as_secs_f64()
        );
        // Each delta reaches the kernel: the pod's address appears, then goes.
        for k in 0..PODS {
            let ip = size.extra_ip(k);
            side.add(size, k);
            assert!(
                holds(&side.ns, &ip),
                "the added pod {ip} is in no netfence set"
            );
            side.delete(size, k);
            assert!(
                !holds(&side.ns, &ip),
                "the deleted pod {ip} is still in a netfence set"
            );
        }
        side
    }

    /// Adds extra pod `k`; the time until the engine says it is in the kernel.
    fn add(&self, size: &Size, k: usize) -> Duration {
        let t0 = Instant::now();
        self.engine
            .upsert_pod(&size.nf_extra[k])
            .wait()
            .expect("pod add");
        t0.elapsed()
    }

    /// Deletes extra pod `k`; the time until the engine says it is out of the kernel.
    fn delete(&self, size: &Size, k: usize) -> Duration {
        let (ns, name) = size.extra_key(k);
        let t0 = Instant::now();
        self.engine
            .delete_pod(&ns, &name)
            .wait()
            .expect("pod delete");
        t0.elapsed()
    }
}

/// Waits for `c`. A commit that fails is retried forever, so this says what the engine
/// is stuck on every 10 s, and panics once the engine has reported an error for 30 s, or
/// after 5 minutes.
fn await_engine(engine: &Engine, mut c: sync::Completion, what: &str) {
    let t0 = Instant::now();
    let mut failing = 0;
    loop {
        match c.wait_timeout(Duration::from_secs(10)) {
            Ok(r) => return r.unwrap_or_else(|e| panic!("{what}: {e}")),
            Err(again) => c = again,
        }
        let st = engine.status();
        eprintln!(
            "still waiting for {what} after {:.0} s: {st:?}",
            t0.elapsed().as_secs_f64()
        );
        failing = if st.last_error.is_some() {
            failing + 1
        } else {
            0
        };
        assert!(
            failing < 3 && t0.elapsed() < Duration::from_secs(300),
            "{what} never completed: {:?}",
            st.last_error
        );
    }
}

/// The baseline's namespace: the Calico-like ruleset of the whole cluster, and each extra
/// pod's two deltas.
struct BaselineSide {
    /// (add, delete) of each extra pod.
    deltas: Vec<(calico::Delta, calico::Delta)>,
    /// The wall time of one iteration (both deltas and both pauses), from a first untimed
    /// add and delete: criterion sizes its warm-up and samples in wall time.
    iteration: Duration,
    ns: Netns,
}

impl BaselineSide {
    fn new(size: &Size) -> Self {
        let t0 = Instant::now();
        let before = size.gen.cluster();
        let cfg = calico::CalicoConfig::new(size.gen.spec.node.clone(), size.dual_stack);
        let r_before = calico::render_state(&before, &cfg);
        let deltas: Vec<_> = size
            .extra
            .iter()
            .map(|pod| {
                let mut after = before.clone();
                after.upsert_pod(cluster::to_pod(pod));
                let r_after = calico::render_state(&after, &cfg);
                (
                    calico::diff(&r_before, &r_after),
                    calico::diff(&r_after, &r_before),
                )
            })
            .collect();
        let stats = r_before.stats();
        let rendered = t0.elapsed();

        let ns = Netns::new("calico");
        let t0 = Instant::now();
        let baseline = r_before.baseline();
        for s in baseline.steps() {
            ns.sh(s.program, s.args, s.input);
        }
        let lines = |d: &calico::Delta| {
            let (rules, sets) = d.line_counts();
            rules + sets
        };
        let mean = |f: &dyn Fn(&(calico::Delta, calico::Delta)) -> usize| {
            deltas.iter().map(f).sum::<usize>() / deltas.len()
        };
        eprintln!(
            "calico-iptables {}: {} chains, {} rules, {} sets, {} members; rendered with {} \
             pod deltas in {:.2} s, loaded in {:.2} s; a pod add is {} lines of restore \
             input, a delete {} (means)",
            size.label(),
            stats.chains,
            stats.rules,
            stats.sets,
            stats.members,
            deltas.len(),
            rendered.as_secs_f64(),
            t0.elapsed().as_secs_f64(),
            mean(&|d| lines(&d.0)),
            mean(&|d| lines(&d.1)),
        );
        let mut side = Self {
            deltas,
            iteration: Duration::ZERO,
            ns,
        };
        // The first pod's deltas apply, and do what they say.
        let ip = size.extra_ip(0);
        std::thread::sleep(SETTLE);
        let a = side.apply(0, true);
        assert!(
            holds(&side.ns, &ip),
            "the added pod {ip} is in no baseline set"
        );
        std::thread::sleep(SETTLE);
        let d = side.apply(0, false);
        assert!(
            !holds(&side.ns, &ip),
            "the deleted pod {ip} is still in a baseline set"
        );
        side.iteration = a + d + 2 * SETTLE;
        side
    }

    /// Applies extra pod `k`'s add (or delete) delta, every step in order; the time from
    /// the first process start to the last exit.
    fn apply(&self, k: usize, add: bool) -> Duration {
        let (a, d) = &self.deltas[k];
        let delta = if add { a } else { d };
        let t0 = Instant::now();
        for s in delta.steps() {
            let mut tries = 0;
            // The kernel drops a set's last reference asynchronously: a destroy right
            // after the rule change may find it still in use.
            while let Err(e) = self.ns.run(s.program, s.args, s.input) {
                tries += 1;
                assert!(
                    tries < 100 && s.program == "ipset" && e.contains("in use"),
                    "{e}\ninput:\n{}",
                    s.input
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        t0.elapsed()
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
    /// netfence's own view over the measured deltas: commits, mean commit time, mean
    /// operations per commit.
    nf_commits: Option<(u64, f64, f64)>,
}

/// What this run measures.
struct Mode {
    smoke: bool,
    dual_stack: bool,
    host_interfaces: bool,
}

impl Mode {
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick");
        // Without --bench, criterion runs each routine once as a test.
        let test = !args.iter().any(|a| a == "--bench");
        let flag = |name| std::env::var(name).is_ok_and(|v| v == "1");
        Self {
            smoke: quick || test || flag("NETFENCE_BENCH_SMOKE"),
            dual_stack: flag("NETFENCE_BENCH_DUAL_STACK"),
            host_interfaces: !flag("NETFENCE_BENCH_NO_ANTISPOOF"),
        }
    }
}

fn bench(c: &mut Criterion) {
    let started = Instant::now();
    let mode = Mode::from_env();
    remove_stale_namespaces();
    let sizes: &[(usize, usize)] = if mode.smoke { &SIZES[..1] } else { &SIZES };
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
                let s = NetfenceSide::new(&size);
                before = Some(s.engine.metrics());
                *nf = Some(s);
            }
        };
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

        // The baseline, in its own namespace, after netfence's is gone. Built before its
        // first group when it will run, so that the measurement can be sized from one
        // iteration; otherwise on first use.
        let mut cal: Option<BaselineSide> = None;
        for (op, add) in [("pod_add", true), ("pod_delete", false)] {
            let group = format!("sync/{op}");
            if cal.is_none() && bench_wanted(&format!("{group}/calico-iptables/{label}")) {
                cal = Some(BaselineSide::new(&size));
            }
            let mut g = c.benchmark_group(group);
            g.sample_size(10).sampling_mode(SamplingMode::Flat);
            if let (Some(s), false) = (&cal, mode.smoke) {
                // Three warm-up iterations (1, then 2: criterion sizes its samples from
                // their mean wall time), then about BASELINE_DELTAS timed deltas in 10
                // samples. A quick pass keeps the command line's times.
                g.warm_up_time(s.iteration * 2)
                    .measurement_time(s.iteration * BASELINE_DELTAS);
            }
            let samples = if add {
                &mut row.cal_add
            } else {
                &mut row.cal_del
            };
            g.bench_function(BenchmarkId::new("calico-iptables", &label), |b| {
                let s = cal.get_or_insert_with(|| BaselineSide::new(&size));
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let k = turn % PODS;
                        turn += 1;
                        // Each iteration starts and ends without the pod; only `op` is
                        // timed.
                        if !add {
                            std::thread::sleep(SETTLE);
                            s.apply(k, true);
                        }
                        std::thread::sleep(SETTLE);
                        let t = s.apply(k, add);
                        samples.0.push(t);
                        total += t;
                        if add {
                            std::thread::sleep(SETTLE);
                            s.apply(k, false);
                        }
                    }
                    total
                });
            });
            g.finish();
        }
        drop(cal);
        rows.push(row);
    }
    summary(&rows, &mode, started.elapsed());
}

/// Whether criterion's filter (the first free argument, a regex) may select `id`: a
/// plain substring test, erring towards yes. Only used to size the baseline's
/// measurement before criterion asks for it.
fn bench_wanted(id: &str) -> bool {
    if std::env::args().any(|a| a == "--list") {
        return false;
    }
    let mut args = std::env::args().skip(1);
    let mut filter = None;
    while let Some(a) = args.next() {
        if a.starts_with("--") {
            // Options that take a value.
            if matches!(
                a.as_str(),
                "--warm-up-time"
                    | "--measurement-time"
                    | "--sample-size"
                    | "--save-baseline"
                    | "--baseline"
                    | "--load-baseline"
                    | "--color"
                    | "--output-format"
                    | "--plotting-backend"
                    | "--profile-time"
                    | "--noise-threshold"
                    | "--confidence-level"
                    | "--significance-level"
                    | "--nresamples"
                    | "--format"
                    | "--logfile"
            ) {
                args.next();
            }
            continue;
        }
        filter = Some(a);
        break;
    }
    match filter {
        None => true,
        Some(f) => {
            let plain = f
                .chars()
                .all(|ch| ch.is_alphanumeric() || "_-/".contains(ch));
            !plain || id.contains(&f)
        }
    }
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
        [&r.nf_add, &r.nf_del, &r.cal_add, &r.cal_del]
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
        "{:<14} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "size",
        "nf add",
        "nf del",
        "nf p99",
        "nf idle",
        "cal add",
        "cal del",
        "add x",
        "del x",
        "commit"
    );
    for r in rows.iter().filter(ran) {
        let p99 = r.nf_add.quantile(0.99).max(r.nf_del.quantile(0.99));
        let commit = r.nf_commits.map_or_else(
            || "-".to_owned(),
            |(_, s, ops)| format!("{:.3}/{ops:.0}", s * 1e3),
        );
        eprintln!(
            "{:<14} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8} {:>9}",
            r.label,
            ms(r.nf_add.median()),
            ms(r.nf_del.median()),
            ms(p99),
            ms(r.nf_spaced_add.median()),
            ms(r.cal_add.median()),
            ms(r.cal_del.median()),
            ratio(r.cal_add.median(), r.nf_add.median()),
            ratio(r.cal_del.median(), r.nf_del.median()),
            commit,
        );
    }
    eprintln!(
        "(nf p99: the worse of add and delete; nf idle: add after 5 ms idle; commit: mean \
         kernel apply in ms / operations, from the engine's metrics)"
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
