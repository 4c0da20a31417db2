//! The data-path cost of the ruleset: how many new TCP connections per second two pods
//! can open through the node with netfence's ruleset, with the Calico-like baseline, and
//! with no ruleset at all, at 1k and 10k pods' worth of sets and policies (100 and 1,000
//! policies each).
//!
//! # The sandbox
//!
//! A node namespace with forwarding on, and three pod namespaces wired to it by veth
//! pairs exactly as the kernel tests wire pods (`tests/common/net.rs`, included here):
//! the *client*, the *server* and an *intruder*. All three are pods of the generated
//! cluster ([`cluster::generate`]): each pod namespace holds its pod's IPv4 address and
//! the node side of its veth is named after the pod's `netfence.io/host-interface`
//! annotation (`cali` + 11 hex characters), so netfence's anti-spoofing (prefix `cali`)
//! and the baseline's per-interface dispatch see the interfaces a CNI would have made.
//!
//! The pair is chosen with the reference evaluator ([`policy::allowed`]): the server is
//! isolated for ingress (some policy selects it), the client may open TCP to it on the
//! chosen port, and the intruder may not (the server's ingress rules leave it out), so a
//! connection walks the server's policy chains rather than a default accept. Clients that
//! are isolated for egress too are preferred, so that the client's egress chains are
//! walked as well.
//!
//! Each (size, system) pair gets its own sandbox, and a size's sandboxes stand side by
//! side while it is measured:
//!
//! * **none**: no ruleset in the node namespace (and so no conntrack there either);
//! * **conntrack-only**: one `nft` chain on the forward hook that accepts established
//!   traffic first and drops invalid packets, no policy: the least any stateful filter
//!   costs, so that the summary can say what a layout adds beyond it (`ct+`). Recorded
//!   like the others, as system `conntrack-only`;
//! * **conntrack-iptables**: the same two rules as `iptables-nft-restore` writes them
//!   (`-m conntrack --ctstate ...`, an xt match that `nft_compat` calls for every
//!   packet): the least a stateful filter costs when `iptables-nft-save` must read it,
//!   as every rule netfence writes must. A native `ct` expression would make the table
//!   unreadable to iptables, so this, not `conntrack-only`, is the floor under
//!   netfence's and the Calico-like layout's figures (`xt+`: what a layout adds beyond it);
//! * **netfence**: a [`sync::Engine`] on the node namespace, configured as `benches/sync.rs`
//!   does (every pod local, anti-spoofing on with prefix `cali`), fed the whole cluster,
//!   `ready()`, and every object's completion awaited;
//! * **calico-iptables**: the Calico-like baseline ([`calico::render`]) restored into the
//!   node namespace with `ipset restore` and `iptables-nft-restore`.
//!
//! Before measuring, each sandbox is checked: the client's connects succeed, and the
//! intruder's are refused or dropped under both rulesets (and succeed without policy),
//! so the ruleset is really in the path.
//!
//! # The measurement
//!
//! A thread accepts on the server's address and closes each connection at once. The
//! client, on the bench's main thread moved into the client namespace, opens a socket,
//! sets `SO_LINGER` 0, connects and closes: the close sends a reset, so no side keeps
//! `TIME_WAIT` and ephemeral ports never run out. One criterion iteration is one such
//! connect (`iter_custom`, time per connect; throughput in connects). Each connect is four
//! or five packets through the node (SYN, SYN-ACK, ACK, RST, and the server's FIN when
//! its close comes first); only the SYN is new to conntrack and walks the policy chains,
//! so the figures are the cost of one policy decision plus a few established-path
//! lookups.
//!
//! The kernel hands the freed ports out again at once, and a SYN that meets the conntrack
//! entry of a reset connection on the same ports replaces it, so the node's table holds
//! at most one entry per even ephemeral port (about 14,000, printed at the end), far
//! under `nf_conntrack_max`. Connects slower than [`STALL`] are counted: a dropped SYN
//! costs a one-second retransmission, which would swamp a mean; none should happen.
//!
//! The systems of a size take turns: [`ROUNDS`] rounds, each a criterion group
//! (`datapath/tcp_connect/r<round>`) that measures every system for ten samples, the
//! first system of each round being the next one along. On this shared machine the rate
//! with no ruleset once moved by a quarter between two sizes of one run; measured in one
//! long turn each, a slow spell fell on one system only and read as its cost. With turns
//! it falls on all, and the summary prints each round's difference beside the others, so
//! their spread shows how far a figure can be trusted.
//!
//! Each criterion sample's mean time per connect is recorded (`record::Recorder`,
//! `target/netfence-bench/datapath.jsonl`, scenario `tcp_connect`, every round's samples
//! together, extras `connects_per_sec` from the median sample, `failed_connects`,
//! `stalled_connects`, `rounds`).
//! A table of connects per second, and each system's cost per connect over none and
//! over conntrack-only, goes to stderr at the end, with the target: netfence within 10%
//! of none at 1k pods.
//!
//! `cargo bench --bench datapath` (root; about 6 minutes; each sandbox is built on first
//! use, so a filter such as `-- 1000p` skips the others). With `--quick`, in `cargo test`
//! mode, or with `NETFENCE_BENCH_SMOKE=1`, only 1,000 pods / 100 policies run, briefly
//! (the CI line takes about 5 s); their figures are not comparable.
//!
//! `NETFENCE_DATAPATH_DUMP=<dir>` writes each sandbox's `iptables-nft-save -c` to
//! `<dir>/<system>-<size>.save` before it goes: every rule's packet counter after the run,
//! which shows the rules a connection's packets met.
//!
//! `NETFENCE_DATAPATH_VARIANT=<script>` measures a layout netfence does not write, to
//! learn what a change would buy before building it. Once the engine has converged, the
//! script runs under `sh` in the node namespace, with `CLIENT`, `SERVER` and `INTRUDER`
//! set to the pair's and the intruder's IPv4 addresses (and `VARIANT_DIR` to the script's
//! directory, for what variants share), and may rewrite the ruleset with
//! the tools; the engine does not reconcile here, so the rewrite stays. The sandbox check
//! then runs on the rewritten ruleset, so a variant that lets the intruder in or keeps
//! the client out fails the bench. netfence's figures are then the variant's: printed
//! with its name, and not recorded for the report. `benches/datapath-variants/` holds the
//! variants measured so far; `scripts/test.sh` runs each briefly, so that they keep
//! applying to the ruleset netfence writes.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/common/mod.rs"]
mod sandbox;

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{calico, cluster, harness, record};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use policy::{CompilerConfig, Direction, Endpoint, Family, Protocol};
use sandbox::net::{self, Wiring};
use sandbox::Sandbox;
use sync::{Engine, EngineConfig};

/// (pods, policies); namespaces are pods / 100.
const SIZES: [(usize, usize); 4] = [(1_000, 100), (1_000, 1_000), (10_000, 100), (10_000, 1_000)];

/// [`CONNTRACK_ONLY`] as iptables-nft writes it: the xt `conntrack` match (revision 3)
/// in place of native `ct` expressions.
const CONNTRACK_IPTABLES: &str = "*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
";

/// The namespaces' tag: `tests/common` names them `nf-<tag>-<pid>-<n>`.
const TAG: &str = "dpath";

/// Ports tried for the pair, after the server's own `http` port: those the generator's
/// policies open.
const PORTS: [u16; 7] = [443, 80, 5432, 6379, 9090, 8443, 30000];

/// Ingress-isolated servers to try for a client that is isolated for egress too, once
/// some pair has been found.
const SERVER_BUDGET: usize = 200;

/// How long a sanity probe waits for a handshake before calling it dropped.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// The least a stateful filter does: conntrack in the forward path, established
/// traffic accepted first, everything else accepted after.
const CONNTRACK_ONLY: &str = "table ip filter {
    chain FORWARD {
        type filter hook forward priority filter; policy accept;
        ct state related,established accept
        ct state invalid drop
    }
}
";

/// Pause after a size's sandboxes are torn down: the kernel frees a deleted namespace (and the
/// baseline's tens of thousands of rules and members in it) in a worker, which would
/// otherwise run during the next measurement.
const SETTLE: Duration = Duration::from_secs(1);

/// Criterion's warm-up for one system in one of a full run's [`ROUNDS`]: its sandbox has
/// been idle while the others were measured.
const ROUND_WARM_UP: Duration = Duration::from_millis(500);
/// Criterion's measurement time for one system in one round: ten seconds of samples per
/// system over the [`ROUNDS`], as its one long turn had before.
const ROUND_TIME: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// Systems and sizes

/// What filters the node's forwarding path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    None,
    Conntrack,
    ConntrackXt,
    Netfence,
    Calico,
}

impl System {
    const ALL: [System; 5] = [
        System::None,
        System::Conntrack,
        System::ConntrackXt,
        System::Netfence,
        System::Calico,
    ];

    /// Whether this run measures a variant of this system's ruleset, not the ruleset
    /// itself: then its figures are not recorded and don't count toward the target.
    fn varied(self) -> bool {
        self == System::Netfence && variant().is_some()
    }

    /// The name the summary and the dumps give what was measured.
    fn shown(self) -> &'static str {
        if self.varied() {
            "netfence+variant"
        } else {
            self.name()
        }
    }

    fn name(self) -> &'static str {
        match self {
            System::None => "none",
            System::Conntrack => "conntrack-only",
            System::ConntrackXt => "conntrack-iptables",
            System::Netfence => "netfence",
            System::Calico => "calico-iptables",
        }
    }

    /// Whether the system enforces the cluster's policies.
    fn enforces(self) -> bool {
        matches!(self, System::Netfence | System::Calico)
    }
}

/// One pod of the probe: its address and host-side interface.
#[derive(Clone, Debug)]
struct ProbePod {
    key: String,
    v4: Ipv4Addr,
    host_if: String,
}

impl ProbePod {
    fn of(pod: &policy::Pod) -> Self {
        Self {
            key: format!("{}/{}", pod.namespace, pod.name),
            v4: pod.ipv4.expect("generated pods have an IPv4 address"),
            host_if: pod
                .host_interface
                .clone()
                .expect("generated pods name their host interface"),
        }
    }

    fn wiring(&self) -> Wiring {
        // The cluster is single stack; the wiring wants an IPv6 address all the same,
        // and one derived from the IPv4 one can't collide.
        let v6 = Ipv6Addr::from(0xfd00_0010_0064_u128 << 80 | u128::from(u32::from(self.v4)));
        Wiring {
            host_if: self.host_if.clone(),
            v4: self.v4,
            v6,
        }
    }
}

/// The probe's three pods and port.
struct Pair {
    client: ProbePod,
    server: ProbePod,
    intruder: ProbePod,
    port: u16,
    /// Whether the client is isolated for egress (its egress chains are walked too).
    client_egress: bool,
    /// The policies that select the server for ingress.
    server_policies: Vec<String>,
}

/// One cluster size, generated, with its probe pair.
struct Size {
    pods: usize,
    policies: usize,
    gen: cluster::Generated,
    model: policy::Cluster,
    pair: Pair,
}

impl Size {
    fn new(pods: usize, policies: usize) -> Self {
        let gen = cluster::generate(&cluster::ClusterSpec::new(pods, pods / 100, policies));
        let model = gen.cluster();
        let t0 = Instant::now();
        let pair = choose_pair(&gen, &model);
        eprintln!(
            "datapath {pods}p_{policies}np: client {} ({}, {}, egress {}) -> server {} \
             ({}, {}) on TCP {}, selected by {}; intruder {} ({}); chosen in {:.2} s",
            pair.client.key,
            pair.client.v4,
            pair.client.host_if,
            if pair.client_egress {
                "isolated"
            } else {
                "open"
            },
            pair.server.key,
            pair.server.v4,
            pair.server.host_if,
            pair.port,
            policy_list(&pair.server_policies),
            pair.intruder.key,
            pair.intruder.v4,
            t0.elapsed().as_secs_f64(),
        );
        Self {
            pods,
            policies,
            gen,
            model,
            pair,
        }
    }

    fn label(&self) -> String {
        label(self.pods, self.policies)
    }
}

/// `N policies (a, b, c, ...)`.
fn policy_list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    let more = if names.len() > shown.len() {
        ", ..."
    } else {
        ""
    };
    format!("{} policies ({}{more})", names.len(), shown.join(", "))
}

fn label(pods: usize, policies: usize) -> String {
    format!("{pods}p_{policies}np")
}

/// Picks the probe pair (see the module doc), deterministically: pods in the generator's
/// order, the server's `http` port first.
fn choose_pair(gen: &cluster::Generated, model: &policy::Cluster) -> Pair {
    let pods: Vec<&policy::Pod> = gen
        .pods
        .iter()
        .map(|p| {
            let key = policy::ObjectKey::new(
                p.metadata.namespace.as_deref().expect("namespace"),
                p.metadata.name.as_deref().expect("name"),
            );
            &**model
                .pod(&key)
                .expect("every generated pod is in the model")
        })
        .collect();
    let endpoint = |p: &policy::Pod| Endpoint::Pod(p.key());
    let egress: Vec<bool> = pods
        .iter()
        .map(|p| policy::is_isolated(model, p, Direction::Egress))
        .collect();
    let tcp4 = |src: &policy::Pod, dst: &policy::Pod, port| {
        policy::allowed(
            model,
            &endpoint(src),
            &endpoint(dst),
            Protocol::Tcp,
            port,
            Family::Ipv4,
        )
    };
    let refused_by_server = |src: &policy::Pod, dst: &policy::Pod, port| {
        !policy::ingress_allows(
            model,
            &endpoint(src),
            &endpoint(dst),
            Protocol::Tcp,
            port,
            Family::Ipv4,
        )
    };
    // (server, client, intruder, port) without an egress-isolated client.
    let mut fallback: Option<(usize, usize, usize, u16)> = None;
    let mut best = None;
    let mut tried = 0;
    'servers: for (s, server) in pods.iter().enumerate() {
        if !policy::is_isolated(model, server, Direction::Ingress) {
            continue;
        }
        if fallback.is_some() {
            tried += 1;
            if tried > SERVER_BUDGET {
                break;
            }
        }
        let http = server
            .resolve_named_port("http", Protocol::Tcp)
            .next()
            .into_iter();
        for port in http.chain(PORTS) {
            let (mut open_client, mut egress_client, mut intruder) = (None, None, None);
            for (k, other) in pods.iter().enumerate() {
                if k == s {
                    continue;
                }
                // The intruder is kept out by the server's ingress rules, the chain the
                // client walks (whatever its own egress says).
                if intruder.is_none() && refused_by_server(other, server, port) {
                    intruder = Some(k);
                } else if tcp4(other, server, port) {
                    if egress[k] {
                        egress_client.get_or_insert(k);
                    } else {
                        open_client.get_or_insert(k);
                    }
                }
                if intruder.is_some() && egress_client.is_some() {
                    break;
                }
            }
            match (egress_client, open_client, intruder) {
                (Some(c), _, Some(i)) => {
                    best = Some((s, c, i, port));
                    break 'servers;
                }
                (None, Some(c), Some(i)) if fallback.is_none() => {
                    fallback = Some((s, c, i, port));
                }
                _ => {}
            }
        }
    }
    let (s, c, i, port) = best
        .or(fallback)
        .expect("the cluster has an ingress-isolated pod with an allowed and a refused TCP client");
    let server_policies = model
        .policies_in(&pods[s].namespace)
        .filter(|p| p.selects(pods[s]) && p.ingress.is_some())
        .map(|p| p.name.clone())
        .collect();
    Pair {
        client: ProbePod::of(pods[c]),
        server: ProbePod::of(pods[s]),
        intruder: ProbePod::of(pods[i]),
        port,
        client_egress: egress[c],
        server_policies,
    }
}

// ---------------------------------------------------------------------------------------
// Sockets

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn check(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r)
    }
}

fn set_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int for the length given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(r, "setsockopt").map(drop)
}

/// Makes `fd`'s close send a reset, so that neither side keeps `TIME_WAIT`.
fn linger_zero(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` is a valid linger for the length given. A failure would only show as
    // ports running out, which the failure count reports.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn tcp_socket(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned from here on.
    let fd = check(
        unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
                0,
            )
        },
        "socket",
    )?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The accepting side: a thread that accepts on a listening socket and closes each
/// connection at once, until dropped.
struct Server {
    listener: OwnedFd,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Server {
    /// Listens on `ip:port` in `ns`.
    fn start(ns: &Sandbox, ip: Ipv4Addr, port: u16) -> Self {
        let listener = ns
            .netns()
            .enter(|| -> io::Result<OwnedFd> {
                let fd = tcp_socket(0)?;
                set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
                let addr = sockaddr(ip, port);
                // SAFETY: `addr` is a valid sockaddr_in for the length given.
                check(
                    unsafe {
                        libc::bind(
                            fd.as_raw_fd(),
                            (&addr as *const libc::sockaddr_in).cast(),
                            size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        )
                    },
                    "bind",
                )?;
                // A backlog as deep as somaxconn allows: a full accept queue drops SYNs,
                // and a dropped SYN costs the client a one-second retransmission.
                // SAFETY: plain syscall on our descriptor.
                check(unsafe { libc::listen(fd.as_raw_fd(), 4096) }, "listen")?;
                Ok(fd)
            })
            .unwrap_or_else(|e| panic!("entering {}: {e}", ns.name))
            .unwrap_or_else(|e| panic!("listening on {ip}:{port} in {}: {e}", ns.name));
        let stop = Arc::new(AtomicBool::new(false));
        let fd = listener.as_raw_fd();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("datapath-server".into())
            .spawn(move || {
                let mut accepted = 0;
                loop {
                    // SAFETY: `fd` stays open until this thread is joined (see Drop).
                    let c =
                        unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
                    if c >= 0 {
                        // SAFETY: a descriptor accept4 just gave us.
                        unsafe { libc::close(c) };
                        accepted += 1;
                        continue;
                    }
                    if flag.load(Ordering::Relaxed) {
                        return accepted;
                    }
                    // A connection reset before it was accepted, an interrupted call:
                    // the next accept goes on.
                    let e = io::Error::last_os_error();
                    if !matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO)
                    ) {
                        panic!("accept: {e}");
                    }
                }
            })
            .expect("spawning the server thread");
        Self {
            listener,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A shutdown wakes a blocked accept (with EINVAL) on Linux.
        // SAFETY: plain syscall on our descriptor.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one sanity probe saw.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Connected,
    Refused,
    Dropped,
    Failed(String),
}

/// One connect to `ip:port` from the calling thread's namespace, waiting at most
/// [`PROBE_TIMEOUT`].
fn probe(ip: Ipv4Addr, port: u16) -> Outcome {
    let fd = match tcp_socket(libc::SOCK_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    linger_zero(fd.as_raw_fd());
    let addr = sockaddr(ip, port);
    // SAFETY: `addr` is a valid sockaddr_in for the length given.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Outcome::Connected;
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINPROGRESS) {
        return Outcome::Failed(e.to_string());
    }
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, PROBE_TIMEOUT.as_millis() as libc::c_int) };
    if n == 0 {
        return Outcome::Dropped;
    }
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writing.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    match err {
        0 => Outcome::Connected,
        libc::ECONNREFUSED => Outcome::Refused,
        // An ICMP unreachable (a REJECT other than a TCP reset).
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM => Outcome::Refused,
        e => Outcome::Failed(io::Error::from_raw_os_error(e).to_string()),
    }
}

/// Connects that went wrong.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Connects that failed.
    failed: u64,
    /// Connects that took longer than [`STALL`]: a lost SYN costs a one-second
    /// retransmission, and a few of those make a mean.
    stalled: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.failed += o.failed;
        self.stalled += o.stalled;
    }
}

/// A connect slower than this counts as stalled (no scheduling hiccup lasts this long;
/// a SYN retransmission takes a second).
const STALL: Duration = Duration::from_millis(100);

/// `iters` blocking connects to `addr` from the calling thread's namespace, each closed
/// with a reset at once: the time they took, and what went wrong.
fn connects(addr: &libc::sockaddr_in, iters: u64) -> (Duration, Tally) {
    let mut tally = Tally::default();
    let t0 = Instant::now();
    let mut last = t0;
    for _ in 0..iters {
        let Ok(fd) = tcp_socket(0) else {
            tally.failed += 1;
            continue;
        };
        linger_zero(fd.as_raw_fd());
        // SAFETY: `addr` is a valid sockaddr_in for the length given.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (addr as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tally.failed += 1;
        }
        drop(fd);
        // A clock read per connect (tens of ns, in every system alike) finds stalls.
        let now = Instant::now();
        if now - last > STALL {
            tally.stalled += 1;
        }
        last = now;
    }
    (t0.elapsed(), tally)
}

// ---------------------------------------------------------------------------------------
// The sandbox

/// A node with the three probe pods and one system's ruleset, torn down on drop in field
/// order: the server's thread, the engine, the pods' namespaces, the node's.
struct World {
    /// Held for its drop: the accept thread stops first.
    _server: Server,
    /// Held for its drop: the sync thread stops before its namespace goes.
    _engine: Option<Engine>,
    /// Client, server, intruder.
    pods: Vec<net::Pod>,
    node: Sandbox,
    addr: libc::sockaddr_in,
}

impl World {
    fn build(size: &Size, system: System) -> Self {
        let t0 = Instant::now();
        let pair = &size.pair;
        let node = Sandbox::new(TAG);
        net::make_node(&node);
        let pods = net::add_pods(
            &node,
            TAG,
            &[
                pair.client.wiring(),
                pair.server.wiring(),
                pair.intruder.wiring(),
            ],
        );
        let engine = match system {
            System::None => None,
            System::Conntrack => {
                node.sh_stdin("nft", &["-f", "-"], CONNTRACK_ONLY);
                None
            }
            System::ConntrackXt => {
                node.sh_stdin("iptables-nft-restore", &[], CONNTRACK_IPTABLES);
                None
            }
            System::Netfence => {
                let engine = start_engine(&node, size);
                if let Some(script) = variant() {
                    rewrite(&node, pair, &script);
                }
                Some(engine)
            }
            System::Calico => {
                let cfg = calico::CalicoConfig::new(size.gen.spec.node.clone(), false);
                let baseline = calico::render(&size.model, &cfg);
                for s in baseline.steps() {
                    node.sh_stdin(s.program, s.args, s.input);
                }
                None
            }
        };
        let server = Server::start(&pods[1].ns, pair.server.v4, pair.port);
        let world = Self {
            _server: server,
            _engine: engine,
            pods,
            node,
            addr: sockaddr(pair.server.v4, pair.port),
        };
        // The ruleset is in the path: the pair connects, the intruder doesn't (unless
        // nothing filters).
        let allowed = world.probe_from(0);
        assert_eq!(
            allowed,
            Outcome::Connected,
            "{} {}: {} -> {}:{} should connect",
            system.name(),
            size.label(),
            pair.client.key,
            pair.server.v4,
            pair.port
        );
        let intruder = world.probe_from(2);
        let kept_out = matches!(intruder, Outcome::Refused | Outcome::Dropped);
        assert_eq!(
            kept_out,
            system.enforces(),
            "{} {}: {} -> {}:{}: {intruder:?}",
            system.name(),
            size.label(),
            pair.intruder.key,
            pair.server.v4,
            pair.port
        );
        eprintln!(
            "datapath {} {}: sandbox ready in {:.2} s (intruder {intruder:?})",
            system.name(),
            size.label(),
            t0.elapsed().as_secs_f64()
        );
        world
    }

    fn probe_from(&self, pod: usize) -> Outcome {
        let ns = &self.pods[pod].ns;
        ns.netns()
            .enter(|| probe(self.addr_ip(), self.port()))
            .unwrap_or_else(|e| panic!("entering {}: {e}", ns.name))
    }

    fn addr_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.addr.sin_addr.s_addr))
    }

    fn port(&self) -> u16 {
        u16::from_be(self.addr.sin_port)
    }

    /// `iters` connects from the client; the time they took, and what went wrong.
    fn connects(&self, iters: u64) -> (Duration, Tally) {
        let ns = &self.pods[0].ns;
        ns.netns()
            .enter(|| connects(&self.addr, iters))
            .unwrap_or_else(|e| panic!("entering {}: {e}", ns.name))
    }

    /// The node's conntrack entries (its namespace's count).
    fn conntrack_entries(&self) -> Option<u64> {
        self.node
            .netns()
            .enter(|| std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count"))
            .ok()?
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// The script of `NETFENCE_DATAPATH_VARIANT`, if set.
fn variant() -> Option<String> {
    std::env::var("NETFENCE_DATAPATH_VARIANT").ok()
}

/// Runs a variant's script in the node namespace, over the converged engine's ruleset.
fn rewrite(node: &Sandbox, pair: &Pair, script: &str) {
    let body = std::fs::read_to_string(script)
        .unwrap_or_else(|e| panic!("reading the variant {script}: {e}"));
    let dir = std::path::Path::new(script)
        .parent()
        .and_then(|d| d.canonicalize().ok())
        .unwrap_or_else(|| panic!("the variant {script} has no directory"));
    let input = format!(
        "CLIENT={} SERVER={} INTRUDER={} VARIANT_DIR='{}'\n{body}",
        pair.client.v4,
        pair.server.v4,
        pair.intruder.v4,
        dir.display()
    );
    let mut out = node.sh_stdin("sh", &["-s"], &input);
    // What the packets now meet first.
    out.push_str(&node.sh("iptables-nft", &["-t", "filter", "-S", "nf-fw"]));
    eprintln!("datapath: variant {script} applied:\n{}", out.trim_end());
}

/// An engine on `node` holding the whole cluster, converged.
fn start_engine(node: &Sandbox, size: &Size) -> Engine {
    let t0 = Instant::now();
    let config = EngineConfig {
        netns: node.netns(),
        reconcile_interval: None,
        compiler: CompilerConfig {
            families: vec![Family::Ipv4],
            node: size.gen.spec.node.clone(),
            pod_interface_prefix: Some("cali".into()),
            ..CompilerConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::start(config).expect("starting the engine");
    let g = &size.gen;
    let mut pending = Vec::with_capacity(g.namespaces.len() + g.pods.len() + g.policies.len());
    pending.extend(g.namespaces.iter().map(|n| engine.upsert_namespace(n)));
    pending.extend(g.pods.iter().map(|p| engine.upsert_pod(p)));
    pending.extend(g.policies.iter().map(|p| engine.upsert_policy(p)));
    pending.push(engine.ready());
    pending.push(engine.sync());
    for c in pending {
        match c.wait_timeout(Duration::from_secs(300)) {
            Ok(r) => r.unwrap_or_else(|e| panic!("loading the cluster into netfence: {e}")),
            Err(_) => panic!("netfence did not converge: {:?}", engine.status()),
        }
    }
    eprintln!(
        "datapath netfence {}: cluster loaded in {:.2} s",
        size.label(),
        t0.elapsed().as_secs_f64()
    );
    engine
}

// ---------------------------------------------------------------------------------------
// Measurement

/// What this run measures.
struct Mode {
    smoke: bool,
    /// Build each sandbox before criterion starts its clock: a quick pass (`--quick`)
    /// times whole calls, set-up included. Not when criterion only lists.
    eager: bool,
}

impl Mode {
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick");
        // Without --bench, criterion runs each routine once as a test.
        let test = !args.iter().any(|a| a == "--bench");
        let smoke = std::env::var("NETFENCE_BENCH_SMOKE").is_ok_and(|v| v == "1");
        let smoke = quick || test || smoke;
        Self {
            smoke,
            eager: smoke && !args.iter().any(|a| a == "--list"),
        }
    }
}

/// One (size, system) measured.
struct Measured {
    pods: usize,
    policies: usize,
    system: System,
    /// Mean time per connect of each sample, in ns, every round's.
    samples: Vec<f64>,
    /// Each round's median sample, in ns, in round order.
    round_medians: Vec<f64>,
    tally: Tally,
    conntrack: Option<u64>,
}

impl Measured {
    fn median_ns(&self) -> Option<f64> {
        median(&self.samples)
    }

    fn rate(&self) -> Option<f64> {
        self.median_ns().map(|ns| 1e9 / ns)
    }
}

/// The upper median of `v`.
fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The calls criterion made that are its samples: in flat sampling every measurement
/// sample has the same iteration count, and warm-up calls double theirs, so the trailing
/// run of equal counts. Quick and test runs sample otherwise; then every call counts.
fn samples_of(calls: &[(u64, Duration)]) -> Vec<f64> {
    let last = calls.last().map(|c| c.0);
    let run = calls.iter().rev().take_while(|c| Some(c.0) == last).count();
    let kept = if run >= 2 {
        &calls[calls.len() - run..]
    } else {
        calls
    };
    kept.iter()
        .map(|(iters, t)| t.as_nanos() as f64 / *iters as f64)
        .collect()
}

/// Rounds each system is measured in at a full run. A size's sandboxes all stand at once
/// and take turns, each round in a rotated order, so that a slow spell of the machine
/// (seen here as none's rate moving by a quarter between two sizes of one run) falls on
/// every system alike rather than on whichever was measured during it.
const ROUNDS: usize = 5;

fn bench(c: &mut Criterion) {
    let started = Instant::now();
    let mode = Mode::from_env();
    // No unwinding on SIGINT/SIGKILL: a killed run leaves its sandboxes behind.
    harness::remove_stale_namespaces_named(&format!("nf-{TAG}-"), "datapath");
    let mut recorder = record::Recorder::new("datapath");
    let sizes: &[(usize, usize)] = if mode.smoke { &SIZES[..1] } else { &SIZES };
    let rounds = if mode.smoke { 1 } else { ROUNDS };
    let mut results = Vec::new();
    for &(pods, policies) in sizes {
        let lbl = label(pods, policies);
        // Generated on first use, so that a filter that leaves the size out costs nothing.
        let mut size: Option<Size> = None;
        let mut worlds: [Option<World>; System::ALL.len()] = Default::default();
        if mode.eager {
            let s = size.get_or_insert_with(|| Size::new(pods, policies));
            for (w, system) in worlds.iter_mut().zip(System::ALL) {
                *w = Some(World::build(s, system));
            }
        }
        // Per system, per round: criterion's calls.
        let mut calls: [Vec<Vec<(u64, Duration)>>; System::ALL.len()] = Default::default();
        let mut tallies = [Tally::default(); System::ALL.len()];
        for round in 0..rounds {
            // One group per round: criterion wants an id once per group, and the
            // system/size part of it stays what filters match.
            let mut g = c.benchmark_group(format!("datapath/tcp_connect/r{round}"));
            g.throughput(Throughput::Elements(1))
                .sampling_mode(SamplingMode::Flat);
            if mode.smoke {
                g.sample_size(10)
                    .warm_up_time(Duration::from_millis(200))
                    .measurement_time(Duration::from_secs(1));
            } else {
                g.warm_up_time(ROUND_WARM_UP).measurement_time(ROUND_TIME);
            }
            for k in 0..System::ALL.len() {
                let i = (k + round) % System::ALL.len();
                let system = System::ALL[i];
                let mut round_calls = Vec::new();
                let world = &mut worlds[i];
                let tally = &mut tallies[i];
                g.bench_function(BenchmarkId::new(system.name(), &lbl), |b| {
                    let s = size.get_or_insert_with(|| Size::new(pods, policies));
                    let w = world.get_or_insert_with(|| World::build(s, system));
                    b.iter_custom(|iters| {
                        let (t, f) = w.connects(iters);
                        round_calls.push((iters, t));
                        *tally += f;
                        t
                    });
                });
                if !round_calls.is_empty() {
                    calls[i].push(round_calls);
                }
            }
            g.finish();
        }
        for (i, system) in System::ALL.into_iter().enumerate() {
            let Some(w) = worlds[i].take() else {
                continue;
            };
            let conntrack = w.conntrack_entries();
            if let Ok(dir) = std::env::var("NETFENCE_DATAPATH_DUMP") {
                // The rules' counters after the run: which rules the connects met.
                let out = w.node.sh("iptables-nft-save", &["-c"]);
                let file = format!("{dir}/{}-{lbl}.save", system.shown());
                if let Err(e) = std::fs::write(&file, out) {
                    eprintln!("datapath: writing {file}: {e}");
                }
            }
            drop(w);
            if calls[i].is_empty() {
                // Built eagerly, then left out by criterion's filter.
                continue;
            }
            let rounds: Vec<Vec<f64>> = calls[i].iter().map(|r| samples_of(r)).collect();
            let m = Measured {
                pods,
                policies,
                system,
                samples: rounds.concat(),
                round_medians: rounds.iter().filter_map(|r| median(r)).collect(),
                tally: tallies[i],
                conntrack,
            };
            let mut r =
                record::Record::new("datapath", "tcp_connect", system.name(), pods, policies);
            r.smoke = mode.smoke;
            for ns in &m.samples {
                r.push(Duration::from_nanos(*ns as u64));
            }
            if let Some(rate) = m.rate() {
                r.set("connects_per_sec", rate);
            }
            r.set("failed_connects", m.tally.failed as f64);
            r.set("stalled_connects", m.tally.stalled as f64);
            r.set("rounds", m.round_medians.len() as f64);
            // A variant is not what netfence writes: the report must not show it as such.
            if !system.varied() {
                recorder.write(&r);
            }
            results.push(m);
        }
        if !mode.smoke && calls.iter().any(|c| !c.is_empty()) {
            // The kernel frees the deleted namespaces (and the baseline's tens of
            // thousands of rules and members) in a worker, which would otherwise run
            // during the next size's measurements.
            std::thread::sleep(SETTLE);
        }
    }
    summary(&results, &mode, started.elapsed());
}

fn summary(results: &[Measured], mode: &Mode, elapsed: Duration) {
    if results.is_empty() {
        return;
    }
    eprintln!();
    eprintln!(
        "datapath: new TCP connections per second through the node, median sample ({} run, \
         {:.0} s)",
        if mode.smoke { "smoke" } else { "full" },
        elapsed.as_secs_f64()
    );
    eprintln!(
        "{:<14} {:<18} {:>8} {:>8} {:>17} {:>8} {:>8} {:>6} {:>7} {:>6}",
        "size",
        "system",
        "conn/s",
        "us/conn",
        "cost us (%)",
        "ct+ us",
        "xt+ us",
        "failed",
        "stalled",
        "ct"
    );
    let mut target: Option<bool> = None;
    for m in results {
        let of = |system| {
            results
                .iter()
                .find(|b| b.pods == m.pods && b.policies == m.policies && b.system == system)
                .and_then(Measured::median_ns)
        };
        let (base, ct, xt) = (
            of(System::None),
            of(System::Conntrack),
            of(System::ConntrackXt),
        );
        let ns = m.median_ns();
        let cost = match (ns, base) {
            (Some(n), Some(b)) if m.system != System::None => {
                format!("{:+.2} ({:+.1}%)", (n - b) / 1e3, (n - b) / b * 100.0)
            }
            _ => "-".to_owned(),
        };
        let over = |floor: Option<f64>| match (ns, floor) {
            (Some(n), Some(c)) if m.system.enforces() => format!("{:+.2}", (n - c) / 1e3),
            _ => "-".to_owned(),
        };
        eprintln!(
            "{:<14} {:<18} {:>8} {:>8} {:>17} {:>8} {:>8} {:>6} {:>7} {:>6}",
            label(m.pods, m.policies),
            m.system.shown(),
            m.rate().map_or("-".into(), |r| format!("{r:.0}")),
            ns.map_or("-".into(), |n| format!("{:.2}", n / 1e3)),
            cost,
            over(ct),
            over(xt),
            m.tally.failed,
            m.tally.stalled,
            m.conntrack.map_or("-".into(), |n| n.to_string()),
        );
        if m.pods == 1_000 && m.system == System::Netfence && !m.system.varied() {
            if let (Some(r), Some(b)) = (m.rate(), base.map(|b| 1e9 / b)) {
                let met = r >= 0.9 * b;
                target = Some(target.unwrap_or(true) && met);
            }
        }
    }
    paired_rounds(results);
    eprintln!(
        "(cost: time per connect over none; ct+: over conntrack-only, what the policy layout \
         adds to a stateful filter; xt+: over conntrack-iptables, what it adds to one \
         iptables-nft can read; stalled: connects over {} ms; ct: node conntrack entries)",
        STALL.as_millis()
    );
    if let Some(script) = variant() {
        eprintln!("netfence+variant: netfence's ruleset as rewritten by {script}");
    }
    if let Some(met) = target {
        eprintln!(
            "target within 10% of none at 1k pods: {}{}",
            if met { "met" } else { "MISSED" },
            if mode.smoke {
                " (smoke run: too short to tell)"
            } else {
                ""
            }
        );
    }
}

/// Each size's rounds side by side: per round, what netfence and the Calico-like layout
/// cost per connect over none and over `conntrack-iptables` measured in the same round.
/// Those differences are what the rotation protects from a slow spell; their spread is
/// how far one run's figure can be trusted.
fn paired_rounds(results: &[Measured]) {
    let mut sizes: Vec<(usize, usize)> = results.iter().map(|m| (m.pods, m.policies)).collect();
    sizes.dedup();
    for (pods, policies) in sizes {
        let of = |system| {
            results
                .iter()
                .find(|m| m.pods == pods && m.policies == policies && m.system == system)
                .filter(|m| m.round_medians.len() >= 2)
        };
        for floor in [System::None, System::ConntrackXt] {
            let Some(base) = of(floor) else { continue };
            for system in [System::Netfence, System::Calico] {
                let Some(m) = of(system) else { continue };
                let diffs: Vec<f64> = m
                    .round_medians
                    .iter()
                    .zip(&base.round_medians)
                    .map(|(n, b)| (n - b) / 1e3)
                    .collect();
                let shown: Vec<String> = diffs.iter().map(|d| format!("{d:+.2}")).collect();
                eprintln!(
                    "{:<14} {} over {} by round, us/conn: {} (median {:+.2})",
                    label(pods, policies),
                    m.system.shown(),
                    floor.name(),
                    shown.join(" "),
                    median(&diffs).unwrap_or(f64::NAN),
                );
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
