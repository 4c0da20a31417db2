//! `netfence demo`: seed 000's NetworkPolicy walkthrough, enforced by the real engine on
//! real packets in a throwaway sandbox.
//!
//! [`run`] builds a node network namespace, one namespace per pod and one for the hosts
//! outside the cluster (all with netlink: no process is started), starts a
//! [`sync::Engine`] on the node, feeds it the world of `demo/seed0/world.yaml`, then
//! applies the seed's policies one step at a time. After each step it connects from every
//! pod and host to every other over TCP 80, IPv4 and IPv6, prints the matrix, and checks
//! every cell against the reference evaluator [`policy::allowed`]. It removes everything
//! it made at the end, also on error, on panic, and on Ctrl-C.
//!
//! While it runs, `ip netns list` shows the sandbox (`nfdemo-PID-*`), and
//! `ip netns exec nfdemo-PID-node iptables-nft-save` what netfence wrote.

mod probe;
mod sandbox;
mod world;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use policy::Family;
use sync::{Completion, Engine, EngineConfig};

use probe::{Listeners, Outcome, Probe};
use sandbox::Sandbox;
use world::{Member, World, PORT, STEPS};

/// How long a probe waits for the handshake before calling the SYN dropped. Local veths
/// answer in well under a millisecond; 300 ms leaves room for a loaded machine.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// How long a delta may take to reach the kernel before the demo gives up.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set (to anything) to pause after each step, so that the sandbox can be looked at while
/// it holds that step's rules; Enter goes on.
const PAUSE_ENV: &str = "NETFENCE_DEMO_PAUSE";

/// The families every cell is probed in, IPv4 first (the seed's family).
const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

/// Why the demo stopped. Whatever it is, the sandbox is gone by the time the caller sees it.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Not root: namespaces, mounts and nf_tables need it.
    #[error("netfence demo needs root: it creates network namespaces and programs nf_tables in them (try: sudo netfence demo)")]
    NotRoot,

    /// An embedded manifest did not parse.
    #[error("demo manifest: {0}")]
    Manifest(#[from] crate::manifest::ManifestError),

    /// The embedded world is not what the demo can build (a pod without two addresses).
    #[error("demo world: {0}")]
    World(String),

    /// Building or removing the sandbox failed at a system call.
    #[error("sandbox: {what}: {source}")]
    Sandbox {
        /// What was being done, with the namespace.
        what: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },

    /// A netlink request failed (wiring the sandbox); the message names the operation,
    /// the object and the namespace.
    #[error("sandbox: {0}")]
    Netlink(#[from] netfilter::Error),

    /// The engine refused or failed a call.
    #[error("engine: {what}: {source}")]
    Engine {
        /// The call.
        what: String,
        /// The engine's error (boxed: it is large, and errors travel by value).
        #[source]
        source: Box<sync::Error>,
    },

    /// The engine did not get a delta into the kernel in time.
    #[error("engine: {0} not in the kernel after {COMMIT_TIMEOUT:?}")]
    Timeout(String),

    /// Writing the report failed (a closed pipe).
    #[error("writing the demo's output: {0}")]
    Output(#[from] std::io::Error),

    /// Ctrl-C.
    #[error("interrupted (Ctrl-C); the sandbox was removed")]
    Interrupted,

    /// Some cells differed from the Kubernetes semantics: a netfence bug.
    #[error("{cells} probe(s) in step(s) {steps} disagree with the Kubernetes semantics (see the ✗ lines above)")]
    Disagreement {
        /// How many cells, over all steps and families.
        cells: usize,
        /// The steps, as `3, 4`.
        steps: String,
    },
}

/// Runs the demo, writing its report to `out`: about 150 lines, in about a second.
///
/// # Errors
/// [`DemoError`]: not root, a sandbox or engine failure, Ctrl-C, or a matrix that
/// disagrees with the Kubernetes semantics (reported after the whole walkthrough). The
/// sandbox is removed in every case.
pub fn run(out: &mut dyn Write) -> Result<(), DemoError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DemoError::NotRoot);
    }
    let t0 = Instant::now();
    let world = World::load()?;
    let _sigint = SigintGuard::install();
    // Unique per process, and per run within one (a second run gets `-1`, ...).
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let prefix = match RUNS.fetch_add(1, Ordering::Relaxed) {
        0 => format!("nfdemo-{}", std::process::id()),
        n => format!("nfdemo-{}-{n}", std::process::id()),
    };

    writeln!(
        out,
        "netfence demo: seed 000's NetworkPolicy walkthrough, enforced on real packets"
    )?;
    let sandbox = Sandbox::build(&prefix, &world.members)?;
    interrupted()?;
    header(out, &world, &sandbox)?;

    // Declared after the sandbox, so both drop before it: nothing may hold a namespace
    // open while it is removed, or the kernel keeps it (unnamed) until that goes too.
    let mut listening = Vec::new();
    for m in world.members.iter().filter(|m| m.listens) {
        if let Some(ns) = sandbox.netns_of(&m.key) {
            if !listening.contains(&ns) {
                listening.push(ns);
            }
        }
    }
    let listeners = Listeners::start(&listening, PORT)?;
    let engine = start_engine(out, &world, &sandbox)?;

    let mut bad_steps = Vec::new();
    let mut bad_cells = 0;
    for i in 0..STEPS.len() {
        interrupted()?;
        let wrong = run_step(out, &world, &sandbox, &engine, i)?;
        if wrong > 0 {
            bad_steps.push((i + 1).to_string());
            bad_cells += wrong;
        }
        if std::env::var_os(PAUSE_ENV).is_some() {
            pause(out, sandbox.node.name())?;
        }
    }

    // The engine's sockets and the listeners hold the namespaces: close them first.
    drop(engine);
    drop(listeners);
    let names = sandbox.names().len();
    let removed = sandbox.remove()?;
    debug_assert_eq!(names, removed);
    writeln!(out)?;
    writeln!(
        out,
        "Cleaned up: engine stopped, {removed} network namespaces removed ({prefix}-*)."
    )?;
    if bad_cells > 0 {
        writeln!(
            out,
            "✗ {bad_cells} probe(s) disagreed. {:.1} s.",
            secs(t0.elapsed())
        )?;
        return Err(DemoError::Disagreement {
            cells: bad_cells,
            steps: bad_steps.join(", "),
        });
    }
    writeln!(
        out,
        "All {} steps agree with the Kubernetes semantics. {:.1} s in all.",
        STEPS.len(),
        secs(t0.elapsed())
    )?;
    Ok(())
}

/// Waits for Enter, checking for Ctrl-C meanwhile (a blocking read would swallow it:
/// std retries reads that a signal interrupts).
fn pause(out: &mut dyn Write, node: &str) -> Result<(), DemoError> {
    writeln!(
        out,
        "  [paused: try `ip netns exec {node} iptables-nft-save`; Enter goes on]"
    )?;
    out.flush()?;
    loop {
        interrupted()?;
        let mut pfd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
        if rc > 0 {
            let mut line = String::new();
            // End of input (not a terminal) goes on too.
            std::io::stdin().read_line(&mut line)?;
            return Ok(());
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The sandbox and the world, as a legend for the tables.
fn header(out: &mut dyn Write, world: &World, sandbox: &Sandbox) -> Result<(), DemoError> {
    let node = sandbox.node.name();
    let prefix = node.trim_end_matches("-node");
    let pods: Vec<&str> = sandbox
        .attached
        .iter()
        .filter(|a| !a.hosts)
        .map(|a| {
            a.ns.name()
                .trim_start_matches(prefix)
                .trim_start_matches('-')
        })
        .collect();
    let mut rows = vec![(
        node.to_owned(),
        "the node: netfence programs nf_tables and ipsets here".to_owned(),
    )];
    if !pods.is_empty() {
        rows.push((
            format!("{prefix}-{{{}}}", pods.join(",")),
            "one per pod, its eth0 wired by veth to the node".into(),
        ));
    }
    if let Some(h) = sandbox.attached.iter().find(|a| a.hosts) {
        rows.push((
            h.ns.name().to_owned(),
            format!("outside the cluster: {}", h.keys.join(", ")),
        ));
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    writeln!(out)?;
    writeln!(out, "Sandbox (network namespaces, removed at the end):")?;
    for (name, what) in rows {
        writeln!(out, "  {name:<w$}  {what}")?;
    }
    writeln!(
        out,
        "  Look inside with `ip netns exec NAME ...`; {PAUSE_ENV}=1 pauses after each step."
    )?;

    writeln!(out)?;
    writeln!(
        out,
        "The world (demo/seed0/world.yaml): namespaces {}",
        world.namespace_line()
    )?;
    let cols: Vec<[String; 5]> =
        std::iter::once(["key", "pod / host", "labels", "IPv4", "IPv6"].map(String::from))
            .chain(world.members.iter().map(|m| {
                [
                    m.key.clone(),
                    m.what.trim_start_matches("pod ").to_owned(),
                    m.labels.clone(),
                    m.v4.to_string(),
                    m.v6.to_string(),
                ]
            }))
            .collect();
    let widths: Vec<usize> = (0..5)
        .map(|i| cols.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let listens = std::iter::once(false).chain(world.members.iter().map(|m| m.listens));
    for (row, listens) in cols.iter().zip(listens) {
        let mut line = String::from(" ");
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, " {cell:<w$}");
        }
        if listens {
            line.push_str(" listens on 80");
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Matrices: TCP {PORT} from row to column, IPv4 and IPv6, checked against policy::allowed."
    )?;
    writeln!(
        out,
        "  ok = connected   rst = reached, nothing listens   -- = dropped (no answer in {} ms)",
        PROBE_TIMEOUT.as_millis()
    )?;
    Ok(())
}

/// Waits for a completion, timing it.
fn settle(c: Completion, what: impl Fn() -> String) -> Result<Duration, DemoError> {
    let t = Instant::now();
    match c.wait_timeout(COMMIT_TIMEOUT) {
        Ok(Ok(())) => Ok(t.elapsed()),
        Ok(Err(source)) => Err(DemoError::Engine {
            what: what(),
            source: Box::new(source),
        }),
        Err(_) => Err(DemoError::Timeout(what())),
    }
}

/// Starts the engine on the node and gives it the world.
fn start_engine(
    out: &mut dyn Write,
    world: &World,
    sandbox: &Sandbox,
) -> Result<Engine, DemoError> {
    let t = Instant::now();
    let engine = Engine::start(EngineConfig {
        netns: sandbox.node.netns(),
        reconcile_interval: None,
        ..Default::default()
    })
    .map_err(|source| DemoError::Engine {
        what: format!("starting in {}", sandbox.node.name()),
        source: Box::new(source),
    })?;
    let mut pending = Vec::new();
    for ns in &world.namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        pending.push((format!("namespace {name}"), engine.upsert_namespace(ns)));
    }
    for pod in &world.pods {
        let m = &pod.metadata;
        let key = format!(
            "pod {}/{}",
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or("")
        );
        pending.push((key, engine.upsert_pod(pod)));
    }
    settle(engine.ready(), || "the first convergence (ready)".into())?;
    for (what, c) in pending {
        settle(c, || format!("upserting {what}"))?;
    }
    writeln!(
        out,
        "\nnetfence: engine started on {}, {} namespaces and {} pods in, ready in {:.1} ms.",
        sandbox.node.name(),
        world.namespaces.len(),
        world.pods.len(),
        ms(t.elapsed())
    )?;
    Ok(engine)
}

/// One matrix: the mark of every probed cell, by (row, column).
type Matrix = BTreeMap<(usize, usize), String>;

/// Applies step `i`, probes, prints; returns how many cells disagreed.
fn run_step(
    out: &mut dyn Write,
    world: &World,
    sandbox: &Sandbox,
    engine: &Engine,
    i: usize,
) -> Result<usize, DemoError> {
    let step = &STEPS[i];
    writeln!(out)?;
    let title = format!("== Step {}/{}: {} ", i + 1, STEPS.len(), step.title);
    writeln!(out, "{title:=<80}")?;
    for line in step.about.lines() {
        writeln!(out, "{}", line.trim())?;
    }
    if let (Some((file, text)), Some(np)) = (step.policy, &world.policies[i]) {
        writeln!(out, "  $ kubectl create -f {file}")?;
        for line in text.lines() {
            writeln!(out, "    {line}")?;
        }
        let name = np.metadata.name.clone().unwrap_or_default();
        let took = settle(engine.upsert_policy(np), || {
            format!("upserting policy {name}")
        })?;
        let n = world.policies_until(i).len();
        writeln!(
            out,
            "  netfence: committed {:.1} ms after the upsert ({n} {} in force)",
            ms(took),
            if n == 1 { "policy" } else { "policies" }
        )?;
    }

    // Every ordered pair but a pod with itself (loopback never meets a firewall) and two
    // hosts (one namespace: their traffic never crosses the node).
    let members = &world.members;
    let mut cells = Vec::new();
    let mut probes = Vec::new();
    for f in FAMILIES {
        for (r, src) in members.iter().enumerate() {
            for (c, dst) in members.iter().enumerate() {
                if r == c || (src.pod.is_none() && dst.pod.is_none()) {
                    continue;
                }
                let from = sandbox
                    .netns_of(&src.key)
                    .expect("every member lives in the sandbox");
                cells.push((f, r, c));
                probes.push(Probe {
                    from,
                    src: src.ip(f),
                    dst: dst.ip(f),
                    port: PORT,
                });
            }
        }
    }
    let outcomes = probe::run(&probes, PROBE_TIMEOUT)?;
    interrupted()?;

    let cluster = world.cluster(i)?;
    let mut seen: BTreeMap<Family, Matrix> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (&(f, r, c), outcome) in cells.iter().zip(&outcomes) {
        let want = world.expected(&cluster, &members[r], &members[c], f);
        let got = outcome.mark();
        if got != want {
            wrong.push((f, r, c, want, *outcome));
        }
        seen.entry(f).or_default().insert((r, c), got);
    }
    let flagged: Vec<(Family, usize, usize)> = wrong.iter().map(|w| (w.0, w.1, w.2)).collect();

    writeln!(out)?;
    let v4 = &seen[&Family::Ipv4];
    let v6 = &seen[&Family::Ipv6];
    table(out, members, "IPv4", v4, Family::Ipv4, &flagged, None)?;
    let differ: Vec<usize> = (0..members.len())
        .filter(|&r| {
            (0..members.len()).any(|c| {
                v4.get(&(r, c)) != v6.get(&(r, c)) || flagged.contains(&(Family::Ipv6, r, c))
            })
        })
        .collect();
    let v6_note = if differ.is_empty() {
        "IPv6 the same"
    } else {
        table(
            out,
            members,
            "IPv6",
            v6,
            Family::Ipv6,
            &flagged,
            Some(&differ),
        )?;
        "other IPv6 rows as IPv4"
    };
    if wrong.is_empty() {
        writeln!(
            out,
            "  ✓ matrix agrees with the Kubernetes semantics ({} probes; {v6_note})",
            cells.len()
        )?;
    } else {
        writeln!(
            out,
            "  ✗ {} of {} probes disagree with the Kubernetes semantics (marked *):",
            wrong.len(),
            cells.len()
        )?;
        for (f, r, c, want, got) in &wrong {
            writeln!(
                out,
                "    {f} {} -> {}: expected {want}, saw {}",
                members[*r].key,
                members[*c].key,
                describe(*got)
            )?;
        }
    }
    Ok(wrong.len())
}

fn describe(o: Outcome) -> String {
    match o {
        Outcome::Failed(errno) => format!("{}", std::io::Error::from_raw_os_error(errno)),
        other => other.mark(),
    }
}

/// Prints a matrix: `rows` limits it to some rows (the IPv6 rows that differ).
fn table(
    out: &mut dyn Write,
    members: &[Member],
    label: &str,
    m: &Matrix,
    family: Family,
    flagged: &[(Family, usize, usize)],
    rows: Option<&[usize]>,
) -> Result<(), DemoError> {
    let mut head = format!("  {:<10}", format!("{label} from"));
    for dst in members {
        let _ = write!(head, "{:<5}", dst.key);
    }
    writeln!(out, "{}", head.trim_end())?;
    for (r, src) in members.iter().enumerate() {
        if rows.is_some_and(|rows| !rows.contains(&r)) {
            continue;
        }
        let mut line = format!("  {:<10}", src.key);
        for c in 0..members.len() {
            let mark = m.get(&(r, c)).map_or(".", String::as_str);
            let star = if flagged.contains(&(family, r, c)) {
                "*"
            } else {
                ""
            };
            let _ = write!(line, "{:<5}", format!("{mark}{star}"));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Set by the SIGINT handler; read between steps.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> Result<(), DemoError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(DemoError::Interrupted)
    } else {
        Ok(())
    }
}

/// Catches the first Ctrl-C while the demo runs, so that it stops at the next check (at
/// most one probe round, 300 ms, away) and its guards remove the sandbox. The handler is
/// one-shot (`SA_RESETHAND`): a second Ctrl-C kills the process the usual way, leaving the
/// namespaces for `ip netns del`. The previous handler comes back on drop.
struct SigintGuard {
    old: libc::sigaction,
}

impl SigintGuard {
    fn install() -> Option<Self> {
        INTERRUPTED.store(false, Ordering::SeqCst);
        // SAFETY: a zeroed sigaction is valid; we fill handler, mask and flags.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as usize;
        // SA_RESTART: other threads' blocking calls (the engine's) resume instead of
        // failing with EINTR; poll() never resumes, and every poll here loops on EINTR.
        sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
        // SAFETY: valid pointers to sigaction structs.
        unsafe {
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGINT, &sa, &mut old) != 0 {
                return None;
            }
            Some(Self { old })
        }
    }
}

impl Drop for SigintGuard {
    fn drop(&mut self) {
        // SAFETY: restores what install() saved.
        unsafe {
            libc::sigaction(libc::SIGINT, &self.old, std::ptr::null_mut());
        }
    }
}
