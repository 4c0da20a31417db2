//! What the kernel benches (`sync`, `scenarios`) share: network namespaces made for the
//! run and the tools run inside them, the generated cluster at one size, netfence's
//! engine loaded with it, and the two baselines (Calico-like `iptables-nft-restore` +
//! `ipset restore`, and native `nft -f`) loaded with the same cluster.
//!
//! Everything here runs programs only inside namespaces it created; the host's ruleset
//! is never touched.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use policy::k8s_openapi::api::core::v1::Pod;
use policy::{Compiler, CompilerConfig, Family};
use regex::Regex;
use sync::{Engine, EngineConfig};

use super::{calico, cluster, nft_native};

/// How many different extra pods a size holds ready ([`Size::extra`]).
pub const PODS: usize = 8;

/// The size whose first [`PODS`] extra pods set the work of every size's
/// ([`Size::extra`]): the smallest of the report's.
pub const REFERENCE_PODS: usize = 1_000;

/// How many of the generator's extra pods [`Size::new`] may weigh to find [`PODS`] that
/// do the reference size's work. Pods that add anything to the cluster in the benches
/// (the burst's new ones) come from past them, so that no bench adds a pod another one
/// holds ready.
pub const CANDIDATES: usize = 4_096;

/// Untimed pause before each baseline delta: nf_tables frees a deleted rule after an RCU
/// grace period and the next commit waits for it (without the pause, baseline deltas
/// measured about 10% slower at 5k pods).
pub const SETTLE: Duration = Duration::from_millis(50);

/// [`SETTLE`], then until `engine` has no set destroy left from its last commit (the
/// kernel releases a deleted rule's set references a moment after the commit, and the
/// engine retries such destroys 50 ms later): the delta timed next then starts from an
/// engine with nothing of the previous delta's left to do, and its commit count holds
/// only its own commits. Gives up after a second, leaving the destroys to the timed
/// delta, as an agent's next delta would find them.
pub fn settle_engine(engine: &Engine) {
    std::thread::sleep(SETTLE);
    let give_up = std::time::Instant::now() + Duration::from_secs(1);
    while engine.status().deferred_destroys > 0 && std::time::Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------
// Sandboxes

/// A network namespace made for this run, deleted on drop (also when a panic unwinds).
pub struct Netns {
    name: String,
    /// `/run/netns/<name>`, open for setns in the children.
    file: File,
}

impl Netns {
    /// A new namespace `nfb-<bench>-<pid>-<n>-<tag>`; `bench` is the bench binary's name,
    /// which lets [`remove_stale_namespaces`] tell a live run's namespaces from a dead
    /// one's.
    pub fn new(bench: &str, tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{}{}-{}-{tag}",
            prefix(bench),
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

    /// The namespace as an engine is configured with it.
    pub fn netns(&self) -> ruleset::Netns {
        ruleset::Netns::Named(self.name.clone())
    }

    /// `program args...` inside the namespace, with `input` on stdin; its stdout, or its
    /// stderr as the error. The program's peak RSS goes into [`take_tool_peak_rss`]'s
    /// running maximum.
    pub fn run(&self, program: &str, args: &[&str], input: &str) -> Result<String, String> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", self.name))?;
        let mut cmd = super::ns_command::ns_command(file, program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {program}: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let fed = stdin.write_all(input.as_bytes());
        drop(stdin);
        // Read both pipes to the end before reaping, as `wait_with_output` does, but reap
        // with `wait4` for the child's resource usage, which `std` does not expose.
        let mut stderr = child.stderr.take().expect("piped stderr");
        let errors = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            v
        });
        let mut stdout = Vec::new();
        let read = child
            .stdout
            .take()
            .expect("piped stdout")
            .read_to_end(&mut stdout);
        let stderr = errors.join().unwrap_or_default();
        let (status, maxrss_kib) =
            reap(&child).map_err(|e| format!("waiting for {program}: {e}"))?;
        TOOL_PEAK_RSS.fetch_max(maxrss_kib.saturating_mul(1024), Ordering::Relaxed);
        if status != Some(0) {
            let how = status.map_or("killed by a signal".to_owned(), |c| {
                format!("exit status {c}")
            });
            return Err(format!(
                "{program} {args:?} in {}: {how}: {}",
                self.name,
                String::from_utf8_lossy(&stderr).trim()
            ));
        }
        read.map_err(|e| format!("reading {program}'s output: {e}"))?;
        fed.map_err(|e| format!("feeding {program}: {e}"))?;
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }

    /// As [`Self::run`], panicking on failure.
    pub fn sh(&self, program: &str, args: &[&str], input: &str) -> String {
        self.run(program, args, input)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The largest peak RSS of any program [`Netns::run`] ran since the last call, in bytes:
/// what the baselines' tools (`iptables-nft-restore`, `ipset`, `nft`) held at most.
pub fn take_tool_peak_rss() -> u64 {
    TOOL_PEAK_RSS.swap(0, Ordering::Relaxed)
}

static TOOL_PEAK_RSS: AtomicU64 = AtomicU64::new(0);

/// Waits for `child` to end: its exit code (`None` if a signal ended it) and its peak
/// RSS in KiB (`ru_maxrss`).
fn reap(child: &std::process::Child) -> std::io::Result<(Option<i32>, u64)> {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    let mut status = 0;
    // SAFETY: rusage is plain data, and all zeroes is a valid value of it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: the pointers are to live locals; `pid` is our own unreaped child, and
        // `std` never reaps it behind our back (its `Child` is only dropped after this).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Ok((code, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

impl Drop for Netns {
    fn drop(&mut self) {
        // ipsets and nf_tables tables live in the namespace and go with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn prefix(bench: &str) -> String {
    format!("nfb-{bench}-")
}

/// Whether some set in `ns` has a member with address `ip` (`ipset save` spells members
/// `ip`, `ip/len`, `ip,proto:port` or `net,iface`).
pub fn holds(ns: &Netns, ip: &str) -> bool {
    ns.sh("ipset", &["save"], "")
        .lines()
        .filter(|l| l.starts_with("add "))
        .filter_map(|l| l.split(' ').nth(2))
        .any(|m| m.split([',', '/']).next() == Some(ip))
}

/// Deletes the namespaces an earlier run of `bench` left behind when it was killed (no
/// unwinding on SIGINT/SIGKILL): those whose process is gone, or is no longer this bench
/// (a pid reused since).
pub fn remove_stale_namespaces(bench: &str) {
    remove_stale_namespaces_named(&prefix(bench), bench);
}

/// As [`remove_stale_namespaces`], for namespaces named `<prefix><pid>-…` by another
/// scheme than [`Netns`]'s: the datapath bench makes its own with `tests/common`'s
/// sandboxes.
pub fn remove_stale_namespaces_named(prefix: &str, bench: &str) {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        // Cargo names a bench binary `<bench>-<hash>`, which is what comm holds.
        let alive = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.starts_with(&format!("{bench}-")));
        if !alive {
            eprintln!("removing namespace {name} left by an earlier run");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

// ---------------------------------------------------------------------------------------
// What a run measures

/// What this run measures.
pub struct Mode {
    /// The bench binary's name (`sync`, `scenarios`): names its namespaces and records.
    pub bench: &'static str,
    /// The CI smoke pass: 1,000 pods / 100 policies only, few iterations.
    pub smoke: bool,
    /// Whether `--quick` was given (criterion then stops on wall time).
    pub quick: bool,
    /// `NETFENCE_BENCH_DUAL_STACK=1`: both sides dual stack.
    pub dual_stack: bool,
    /// netfence's pods keep their host-interface annotation (anti-spoofing on), unless
    /// `NETFENCE_BENCH_NO_ANTISPOOF=1`.
    pub host_interfaces: bool,
}

impl Mode {
    /// From the command line and the environment.
    pub fn from_env(bench: &'static str) -> Self {
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick");
        // Without --bench, criterion runs each routine once as a test.
        let test = !args.iter().any(|a| a == "--bench");
        let flag = |name| std::env::var(name).is_ok_and(|v| v == "1");
        Self {
            bench,
            smoke: quick || test || flag("NETFENCE_BENCH_SMOKE"),
            quick,
            dual_stack: flag("NETFENCE_BENCH_DUAL_STACK"),
            host_interfaces: !flag("NETFENCE_BENCH_NO_ANTISPOOF"),
        }
    }
}

/// Whether criterion will run the benchmark `id` (its full ID, `group/function/value`):
/// the same test criterion makes, on the same command line. Used to leave out the set-up
/// of work criterion will not ask for, and to size a measurement before it asks.
///
/// An approximation is not enough here: a filter such as `'pod_(add|delete)/netfence/'`
/// once counted as "may select anything", and the scenarios bench then built and loaded
/// every size and every baseline for over 17 minutes before measuring the two it wanted.
pub fn bench_wanted(id: &str) -> bool {
    static FILTER: OnceLock<Filter> = OnceLock::new();
    FILTER
        .get_or_init(|| Filter::parse(std::env::args().skip(1)))
        .wants(id)
}

/// Which benchmarks criterion runs, as `Criterion::configure_from_args` reads it.
#[derive(Debug)]
enum Filter {
    /// No filter.
    All,
    /// `--list` or `--ignored`: nothing is measured.
    Nothing,
    /// The filter with `--exact`: the whole ID.
    Exact(String),
    /// The filter: a regex matched anywhere in the ID.
    Regex(Regex),
}

impl Filter {
    /// Criterion's options that take a value, so that the value is not taken for the
    /// filter (the first free argument).
    const VALUED: &'static [&'static str] = &[
        "-c",
        "--color",
        "--colour",
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--format",
        "--profile-time",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
        "--logfile",
    ];

    fn parse(args: impl IntoIterator<Item = String>) -> Self {
        let mut args = args.into_iter();
        let (mut filter, mut exact, mut nothing) = (None, false, false);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--list" | "--ignored" => nothing = true,
                "--exact" => exact = true,
                // `--opt value`: the next argument is the value, not the filter.
                _ if Self::VALUED.contains(&a.as_str()) => {
                    args.next();
                }
                // Flags, and `--opt=value`, which carries its value (`-` alone is no
                // option).
                _ if a.starts_with('-') && a.len() > 1 => {}
                _ if filter.is_none() => filter = Some(a),
                _ => {}
            }
        }
        match filter {
            _ if nothing => Filter::Nothing,
            None => Filter::All,
            Some(f) if exact => Filter::Exact(f),
            // Criterion refuses a filter that is no regex (it panics before any
            // benchmark runs), so `All` here only decides nothing.
            Some(f) => Regex::new(&f).map_or(Filter::All, Filter::Regex),
        }
    }

    fn wants(&self, id: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Nothing => false,
            Filter::Exact(e) => id == e,
            Filter::Regex(r) => r.is_match(id),
        }
    }
}

#[cfg(test)]
mod filter_tests {
    use super::Filter;

    fn parse(args: &[&str]) -> Filter {
        Filter::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn a_regex_filter_selects_only_what_criterion_runs() {
        let f = parse(&["--bench", "pod_(add|delete)/netfence/10000p_1000np"]);
        assert!(f.wants("sync/pod_add/netfence/10000p_1000np"));
        assert!(f.wants("sync/pod_delete/netfence/10000p_1000np"));
        assert!(!f.wants("sync/pod_add/netfence/1000p_1000np_x"));
        assert!(!f.wants("sync/pod_add/calico-iptables/10000p_1000np"));
        assert!(!f.wants("scenarios/burst/netfence/10000p_1000np"));
    }

    #[test]
    fn a_plain_filter_is_a_substring() {
        let f = parse(&["--bench", "burst/netfence/"]);
        assert!(f.wants("scenarios/burst/netfence/1000p_100np"));
        // `netfence-commit` is another system: the slash keeps it out.
        assert!(!f.wants("scenarios/burst/netfence-commit/1000p_100np"));
    }

    #[test]
    fn option_values_are_not_the_filter() {
        let f = parse(&["--bench", "--baseline", "head", "-s", "x", "plan/burst"]);
        assert!(f.wants("compile/plan/burst_1000p_100np"));
        assert!(!f.wants("compile/burst_1000p_100np"));
        let f = parse(&["--bench", "--save-baseline=head", "plan/burst"]);
        assert!(!f.wants("compile/burst_1000p_100np"));
    }

    #[test]
    fn exact_list_and_no_filter() {
        let f = parse(&["--bench", "--exact", "sync/pod_add/netfence/1000p_100np"]);
        assert!(f.wants("sync/pod_add/netfence/1000p_100np"));
        assert!(!f.wants("sync/pod_add/netfence/1000p_100np2"));
        assert!(!parse(&["--bench", "--list"]).wants("sync/pod_add/netfence/1000p_100np"));
        assert!(parse(&["--bench"]).wants("anything"));
        assert!(parse(&["--bench", "--quick"]).wants("anything"));
    }
}

// ---------------------------------------------------------------------------------------
// The cluster

/// One cluster size, generated.
pub struct Size {
    /// Pods in the cluster.
    pub pods: usize,
    /// Policies in the cluster.
    pub policies: usize,
    /// Whether both sides are dual stack.
    pub dual_stack: bool,
    /// The cluster.
    pub gen: cluster::Generated,
    /// [`PODS`] pods not in the cluster, as the baseline sees them: the generator's extra
    /// pods whose adds change as many set members as the first [`PODS`] extra pods' do at
    /// [`REFERENCE_PODS`] pods and the same policies (see [`matched_extra`]).
    pub extra: Vec<Pod>,
    /// The same pods as netfence is given them (see [`for_netfence`]).
    pub nf_extra: Vec<Pod>,
    /// Whether netfence's pods keep their host-interface annotation.
    pub host_interfaces: bool,
}

impl Size {
    /// Generates the cluster (`pods / 100` namespaces) and picks its extra pods.
    pub fn new(pods: usize, policies: usize, mode: &Mode) -> Self {
        let dual_stack = mode.dual_stack;
        let gen = cluster::generate(&cluster::ClusterSpec {
            dual_stack,
            ..cluster::ClusterSpec::new(pods, pods / 100, policies)
        });
        let matched = matched_extra(&gen, mode.host_interfaces);
        eprintln!(
            "{pods}p_{policies}np: extra pods {:?} (index, set members an add changes)",
            matched
        );
        let extra: Vec<Pod> = matched.iter().map(|&(i, _)| gen.extra_pod(i)).collect();
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

    /// `<pods>p_<policies>np`, the second half of a bench ID.
    pub fn label(&self) -> String {
        format!("{}p_{}np", self.pods, self.policies)
    }

    /// Extra pod `k`'s (namespace, name).
    pub fn extra_key(&self, k: usize) -> (String, String) {
        let m = &self.extra[k].metadata;
        (
            m.namespace.clone().expect("namespace"),
            m.name.clone().expect("name"),
        )
    }

    /// Extra pod `k`'s IPv4 address, as set members spell it.
    pub fn extra_ip(&self, k: usize) -> String {
        self.extra[k]
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("pod IP")
    }

    /// `pod` as netfence is fed it, without a copy when nothing is dropped.
    pub fn nf_pod<'a>(&self, pod: &'a Pod) -> Cow<'a, Pod> {
        if self.host_interfaces {
            Cow::Borrowed(pod)
        } else {
            Cow::Owned(for_netfence(pod, false))
        }
    }

    /// The Calico-like baseline's configuration for this cluster.
    pub fn calico_config(&self) -> calico::CalicoConfig {
        calico::CalicoConfig::new(self.gen.spec.node.clone(), self.dual_stack)
    }

    /// netfence's configuration for an engine on `ns`.
    pub fn engine_config(&self, ns: &Netns) -> EngineConfig {
        EngineConfig {
            netns: ns.netns(),
            reconcile_interval: None,
            compiler: compiler_config(&self.gen),
            ..EngineConfig::default()
        }
    }
}

/// The compiler's configuration for `gen`, as the benches' engines run it.
fn compiler_config(gen: &cluster::Generated) -> CompilerConfig {
    let families = if gen.spec.dual_stack {
        Family::ALL.to_vec()
    } else {
        vec![Family::Ipv4]
    };
    CompilerConfig {
        families,
        node: gen.spec.node.clone(),
        // The generator names host interfaces as Calico does.
        pod_interface_prefix: Some("cali".into()),
        ..CompilerConfig::default()
    }
}

/// [`PODS`] extra pods of `gen` (index, and the set members its add changes), each doing
/// the work of its namesake at [`REFERENCE_PODS`] pods.
///
/// The generator spreads a cluster's policies over `pods / 20` apps, so a random extra
/// pod at 10k pods joins fewer sets than one at 1k (6.0 set members an add against 9.6
/// at 100 policies). Pod deltas picked at random then made "flat from 1k to 10k" compare
/// lighter work at 10k. So the reference size's first [`PODS`] extra pods set the work,
/// and each size takes, in index order, the first of its extra pods whose add changes as
/// many set members as the reference pod's; at the reference size that is extra pods
/// `0..PODS` themselves. The count is the compiler's, which is what the engine commits
/// (an ipset operation a member), not a timing, so the choice cannot favour fast pods.
/// Some counts are rare at 10k pods: a target no candidate meets takes the nearest, and
/// the difference is added to the next pod's target, so that the [`PODS`] pods together
/// change as many members as the reference's whenever the last pod can make it up (what
/// is left over is printed).
pub fn matched_extra(gen: &cluster::Generated, host_interfaces: bool) -> Vec<(usize, usize)> {
    let mut w = weigher(gen, host_interfaces);
    let mut work: Vec<usize> = Vec::new();
    let targets: Vec<usize> = if gen.spec.pods == REFERENCE_PODS {
        // Its own first pods, weighed once: the search below finds them in the cache.
        work.extend((0..PODS).map(&mut w));
        work.clone()
    } else {
        let reference = cluster::generate(&cluster::ClusterSpec {
            pods: REFERENCE_PODS,
            namespaces: REFERENCE_PODS / 100,
            ..gen.spec.clone()
        });
        (0..PODS)
            .map(weigher(&reference, host_interfaces))
            .collect()
    };
    let mut taken = vec![false; CANDIDATES];
    let mut picked = Vec::with_capacity(PODS);
    // What earlier pods fell short of their targets by (negative: went over).
    let mut owed: isize = 0;
    for reference in targets {
        let target = reference.saturating_add_signed(owed);
        let found = (0..CANDIDATES).find(|&i| {
            if i == work.len() {
                work.push(w(i));
            }
            !taken[i] && work[i] == target
        });
        let (i, got) = match found {
            Some(i) => (i, target),
            None => work
                .iter()
                .copied()
                .enumerate()
                .filter(|&(i, _)| !taken[i])
                .min_by_key(|&(_, got)| got.abs_diff(target))
                .expect("more candidates than pods"),
        };
        taken[i] = true;
        owed = target as isize - got as isize;
        picked.push((i, got));
    }
    if owed != 0 {
        eprintln!(
            "{}p_{}np: the extra pods' adds change {} set members {} the reference's \
             ({CANDIDATES} candidates)",
            gen.spec.pods,
            gen.spec.policies,
            owed.unsigned_abs(),
            if owed > 0 { "fewer than" } else { "more than" },
        );
    }
    picked
}

/// `gen` compiled, and a function of `i` that says how many set members an add of
/// `gen`'s extra pod `i` changes ([`add_work`]).
fn weigher(gen: &cluster::Generated, host_interfaces: bool) -> impl FnMut(usize) -> usize {
    let mut c = Compiler::new(compiler_config(gen)).expect("valid config");
    c.compile(&gen.cluster()).expect("the cluster compiles");
    c.take_scope();
    let gen = gen.clone();
    move |i| add_work(&mut c, &for_netfence(&gen.extra_pod(i), host_interfaces))
}

/// The set members, chains and whole sets an add of `pod` changes, as the compiler
/// hands them to the planner; `pod` is deleted again after.
fn add_work(c: &mut Compiler, pod: &Pod) -> usize {
    let pod = Arc::new(cluster::to_pod(pod));
    let key = pod.key();
    c.upsert_pod(pod);
    let s = c.take_scope();
    c.delete_pod(&key);
    c.take_scope();
    s.chains.len() + s.sets.len() + s.members.values().map(Vec::len).sum::<usize>()
}

/// `pod` as netfence is fed it: without the `netfence.io/host-interface` annotation
/// unless `keep` (the default; `NETFENCE_BENCH_NO_ANTISPOOF=1` drops it).
pub fn for_netfence(pod: &Pod, keep: bool) -> Pod {
    let mut pod = pod.clone();
    if !keep {
        if let Some(a) = pod.metadata.annotations.as_mut() {
            a.remove(policy::HOST_INTERFACE_ANNOTATION);
        }
    }
    pod
}

// ---------------------------------------------------------------------------------------
// netfence

/// Hands `engine` the whole cluster as an agent's first list does, opens the gate with
/// `ready()`, and returns once every object is in the kernel.
pub fn load_cluster(engine: &Engine, size: &Size) {
    let g = &size.gen;
    let mut pending = Vec::with_capacity(g.namespaces.len() + g.pods.len() + g.policies.len());
    pending.extend(g.namespaces.iter().map(|n| engine.upsert_namespace(n)));
    pending.extend(g.pods.iter().map(|p| engine.upsert_pod(&size.nf_pod(p))));
    pending.extend(g.policies.iter().map(|p| engine.upsert_policy(p)));
    await_engine(engine, engine.ready(), "the first convergence");
    for c in pending {
        await_engine(engine, c, "a cluster object");
    }
}

/// netfence's namespace: the engine holding the whole cluster.
pub struct NetfenceSide {
    // Dropped first: the sync thread stops before its namespace goes.
    /// The engine.
    pub engine: Engine,
    /// Its namespace.
    pub ns: Netns,
}

impl NetfenceSide {
    /// A namespace of `bench`'s with an engine loaded with the cluster; checks that each
    /// extra pod's add and delete reach the kernel.
    pub fn new(size: &Size, bench: &str) -> Self {
        let ns = Netns::new(bench, "nf");
        let t0 = Instant::now();
        let engine = Engine::start(size.engine_config(&ns)).expect("starting the engine");
        load_cluster(&engine, size);
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
    pub fn add(&self, size: &Size, k: usize) -> Duration {
        let t0 = Instant::now();
        self.engine
            .upsert_pod(&size.nf_extra[k])
            .wait()
            .expect("pod add");
        t0.elapsed()
    }

    /// Deletes extra pod `k`; the time until the engine says it is out of the kernel.
    pub fn delete(&self, size: &Size, k: usize) -> Duration {
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
pub fn await_engine(engine: &Engine, mut c: sync::Completion, what: &str) {
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

// ---------------------------------------------------------------------------------------
// The baselines

/// One of the baselines netfence is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// Calico-like: `ipset restore` + `iptables-nft-restore --noflush` of the delta.
    Calico,
    /// `nft -f` of the same delta in native nft syntax.
    Nft,
}

impl Baseline {
    /// Both, in the order they run.
    pub const ALL: [Baseline; 2] = [Baseline::Calico, Baseline::Nft];

    /// Its system name in bench IDs and records.
    pub fn system(self) -> &'static str {
        match self {
            Baseline::Calico => "calico-iptables",
            Baseline::Nft => "nft",
        }
    }

    /// Its system name for a full load into an empty namespace.
    pub fn full_system(self) -> &'static str {
        match self {
            Baseline::Calico => "calico-full",
            Baseline::Nft => "nft-full",
        }
    }

    /// Its system name for a restart's read-back ([`BaselineNs::read_back`]).
    pub fn restart_system(self) -> &'static str {
        match self {
            Baseline::Calico => "calico-restart",
            Baseline::Nft => "nft-restart",
        }
    }
}

/// One change as both baselines apply it, forward and back, computed from the rendered
/// states before and after (about half a second per render at 10k pods, so always
/// before any timing).
pub struct DeltaPair {
    /// Calico-like (forward, inverse).
    pub calico: (calico::Delta, calico::Delta),
    /// Native nft (forward, inverse), each one `nft -f` transaction.
    pub nft: (String, String),
}

impl DeltaPair {
    /// The deltas between two rendered states.
    pub fn new(before: &calico::Rendered, after: &calico::Rendered) -> Self {
        Self {
            calico: (calico::diff(before, after), calico::diff(after, before)),
            nft: (
                nft_native::diff(before, after),
                nft_native::diff(after, before),
            ),
        }
    }

    /// Lines of input `which` feeds its tools for the forward delta.
    pub fn lines(&self, which: Baseline) -> usize {
        match which {
            Baseline::Calico => {
                let (rules, sets) = self.calico.0.line_counts();
                rules + sets
            }
            Baseline::Nft => self.nft.0.lines().count(),
        }
    }

    /// Whether `which`'s forward delta changes nothing.
    pub fn is_empty(&self, which: Baseline) -> bool {
        match which {
            Baseline::Calico => self.calico.0.is_empty(),
            Baseline::Nft => self.nft.0.trim().is_empty(),
        }
    }
}

/// A whole rendered state as both baselines load it into an empty namespace.
pub struct FullLoad {
    /// `ipset restore` then `iptables-nft-restore` (and `ip6tables-nft-restore`).
    pub calico: calico::Baseline,
    /// One `nft -f` file.
    pub nft: String,
}

impl FullLoad {
    /// Renders both.
    pub fn new(state: &calico::Rendered) -> Self {
        Self {
            calico: state.baseline(),
            nft: nft_native::render(state),
        }
    }

    /// Loads `which`'s full state into `ns` (empty); the time from the first process
    /// start to the last exit.
    pub fn load(&self, which: Baseline, ns: &Netns) -> Duration {
        let t0 = Instant::now();
        match which {
            Baseline::Calico => {
                for s in self.calico.steps() {
                    ns.sh(s.program, s.args, s.input);
                }
            }
            Baseline::Nft => {
                ns.sh("nft", &["-f", "-"], &self.nft);
            }
        }
        t0.elapsed()
    }
}

/// A namespace holding one baseline's ruleset of the whole cluster.
pub struct BaselineNs {
    /// Which baseline.
    pub which: Baseline,
    /// Its namespace.
    pub ns: Netns,
    /// Whether the load had an IPv6 table.
    v6: bool,
}

impl BaselineNs {
    /// A namespace of `bench`'s with `full` loaded the way `which` loads it; also the
    /// load time.
    pub fn new(bench: &str, which: Baseline, full: &FullLoad) -> (Self, Duration) {
        let tag = match which {
            Baseline::Calico => "calico",
            Baseline::Nft => "nft",
        };
        let ns = Netns::new(bench, tag);
        let took = full.load(which, &ns);
        let v6 = full.calico.ip6tables.is_some();
        (Self { which, ns, v6 }, took)
    }

    /// Reads the whole state back, as the baseline's agent must when it restarts before
    /// it can tell what to write: `iptables-nft-save` of table `filter` (and
    /// `ip6tables-nft-save` when the load had IPv6) and `ipset save` for Calico, whose
    /// Felix reads both and then rewrites only what differs; `nft list ruleset` for nft.
    /// The time from the first process start to the last exit. The agent's parsing and
    /// comparing are not in it, so it is a floor under that agent's restart.
    pub fn read_back(&self) -> Duration {
        let t0 = Instant::now();
        self.saved();
        t0.elapsed()
    }

    /// What the tools print of the namespace's whole state, one text per tool:
    /// `ipset save`, then `iptables-nft-save -t filter` (and `ip6tables-nft-save` when
    /// the load had IPv6) for Calico; `nft list ruleset` for nft.
    fn saved(&self) -> Vec<String> {
        match self.which {
            Baseline::Calico => {
                let mut out = vec![
                    self.ns.sh("ipset", &["save"], ""),
                    self.ns.sh("iptables-nft-save", &["-t", "filter"], ""),
                ];
                if self.v6 {
                    out.push(self.ns.sh("ip6tables-nft-save", &["-t", "filter"], ""));
                }
                out
            }
            Baseline::Nft => vec![self.ns.sh("nft", &["list", "ruleset"], "")],
        }
    }

    /// Applies `d` forward (or its inverse), every step in order; the time from the
    /// first process start to the last exit.
    pub fn apply(&self, d: &DeltaPair, forward: bool) -> Duration {
        match self.which {
            Baseline::Calico => self.apply_calico(if forward { &d.calico.0 } else { &d.calico.1 }),
            Baseline::Nft => self.apply_nft(if forward { &d.nft.0 } else { &d.nft.1 }),
        }
    }

    fn apply_calico(&self, delta: &calico::Delta) -> Duration {
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

    fn apply_nft(&self, text: &str) -> Duration {
        let t0 = Instant::now();
        if !text.trim().is_empty() {
            if let Err(e) = self.ns.run("nft", &["-f", "-"], text) {
                panic!("{e}\ninput:\n{text}");
            }
        }
        t0.elapsed()
    }

    /// What the namespace holds, in a form that changes when any rule, set or member
    /// does (for checking that a delta took effect).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for text in self.saved() {
            // Without the iptables-save header comments, which carry the time of the
            // dump (`ipset save` and `nft` print none).
            for l in text.lines().filter(|l| !l.starts_with('#')) {
                s.push_str(&without_initval(l));
                s.push('\n');
            }
        }
        s
    }
}

/// An `ipset save` line without a hash set's `initval`: the kernel draws that seed at
/// random when a set is created without one (Felix gives none, nor does the baseline), so
/// a set that a delta destroys and its inverse creates again differs in it alone. Kept,
/// it made every burst whose forward delta destroys a set report that the inverse did
/// not restore the state.
fn without_initval(line: &str) -> std::borrow::Cow<'_, str> {
    match line
        .split_once(" initval ")
        .filter(|_| line.starts_with("create "))
    {
        Some((head, tail)) => match tail.split_once(' ') {
            Some((_, rest)) => format!("{head} {rest}").into(),
            None => head.into(),
        },
        None => line.into(),
    }
}

/// Issue #7's grid, (pods, policies), for the latency benches; namespaces are pods / 100.
pub const SIZES: [(usize, usize); 6] = [
    (1_000, 100),
    (1_000, 1_000),
    (5_000, 100),
    (5_000, 1_000),
    (10_000, 100),
    (10_000, 1_000),
];

/// The sizes a run measures: the smallest only in a smoke run.
pub fn sizes(mode: &Mode) -> &'static [(usize, usize)] {
    if mode.smoke {
        &SIZES[..1]
    } else {
        &SIZES
    }
}

#[cfg(test)]
mod matched_extra_tests {
    // Each test imports what it uses: a bench built with `cfg(test)` but without the test
    // harness drops the `#[test]` functions, and module-level imports would go unused.
    use super::cluster;

    fn generate(pods: usize, policies: usize) -> cluster::Generated {
        cluster::generate(&cluster::ClusterSpec::new(pods, pods / 100, policies))
    }

    fn total(m: &[(usize, usize)]) -> usize {
        m.iter().map(|&(_, w)| w).sum()
    }

    #[test]
    fn the_reference_size_keeps_its_first_pods() {
        use super::{matched_extra, PODS, REFERENCE_PODS};
        let got = matched_extra(&generate(REFERENCE_PODS, 100), true);
        let indices: Vec<usize> = got.iter().map(|&(i, _)| i).collect();
        assert_eq!(indices, (0..PODS).collect::<Vec<_>>());
    }

    #[test]
    fn a_larger_size_adds_distinct_pods_of_the_reference_work() {
        use super::{matched_extra, weigher, PODS, REFERENCE_PODS};
        let reference = matched_extra(&generate(REFERENCE_PODS, 100), true);
        let large = generate(10_000, 100);
        // The bias the matching removes: the first extra pods at 10k pods do less.
        let first: usize = (0..PODS).map(weigher(&large, true)).sum();
        assert!(first < total(&reference), "{first} against {reference:?}");
        let matched = matched_extra(&large, true);
        assert_eq!(
            total(&matched),
            total(&reference),
            "{matched:?} against {reference:?}"
        );
        let mut w = weigher(&large, true);
        for &(i, work) in &matched {
            assert_eq!(w(i), work, "extra pod {i}");
        }
        let mut indices: Vec<usize> = matched.iter().map(|&(i, _)| i).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), PODS, "each pod once: {matched:?}");
    }
}
