//! The prober: a whole matrix in parallel ([`World::probe`]), or TCP probes over a set of
//! cells again and again until told to stop ([`World::probe_continuously`]).
//!
//! Both are one thread and one `poll` loop over non-blocking sockets, created in the
//! source host's namespace; no process is started.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use policy::{Family, Protocol};

use super::sctp::{self, Init};
use super::sys;
use super::World;

/// One probe: from host `src` to host `dst`'s address of `family`, on `protocol`/`port`
/// (hosts are indexes into [`World::hosts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// The host that connects.
    pub src: usize,
    /// The host connected to.
    pub dst: usize,
    /// Layer-4 protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// IP family.
    pub family: Family,
}

/// What a probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The connection opened (TCP), the echo came back (UDP), the INIT arrived (SCTP).
    Allowed,
    /// The destination said no one listens there (TCP RST, ICMP port unreachable): the
    /// packet crossed the node.
    Refused,
    /// Nothing came back before the timeout.
    Dropped,
    /// Anything else (an ICMP unreachable from the node, a local error), with its errno.
    Failed(String),
}

impl Outcome {
    /// Whether the probe's packet reached the destination (allowed or refused).
    pub fn crossed(&self) -> bool {
        matches!(self, Outcome::Allowed | Outcome::Refused)
    }

    /// The outcome a probe should have: allowed, or dropped (every probed port has a
    /// listener, so a refusal is never right).
    pub fn expected(allowed: bool) -> Outcome {
        if allowed {
            Outcome::Allowed
        } else {
            Outcome::Dropped
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Allowed => f.write_str("allowed"),
            Outcome::Refused => f.write_str("refused"),
            Outcome::Dropped => f.write_str("dropped"),
            Outcome::Failed(e) => write!(f, "failed ({e})"),
        }
    }
}

/// A probe's outcome and, when something came back, how long that took.
#[derive(Clone, Debug)]
pub struct Observed {
    /// What was seen.
    pub outcome: Outcome,
    /// From the probe's first packet to its answer being seen; `None` when nothing came
    /// back. An upper bound: answers are read only once every probe is sent.
    pub latency: Option<Duration>,
    /// From the last probe of the matrix being sent to this answer being seen: the part of
    /// the wait the timeout bounds.
    pub waited: Option<Duration>,
}

/// One probe of a continuous run.
#[derive(Clone, Debug)]
pub struct Record {
    /// Index into the targets the run was given.
    pub target: usize,
    /// When the probe's socket was opened.
    pub start: Instant,
    /// When its outcome was known.
    pub end: Instant,
    /// What was seen (`Dropped` after the run's timeout).
    pub outcome: Outcome,
}

/// A probe in flight.
enum Pending {
    Tcp(OwnedFd),
    Udp(UdpSocket),
    /// Waiting for the INIT, sent from this source port, to show up on the destination's
    /// raw socket.
    Sctp(u16),
    Done,
}

/// The payload of a UDP probe (echoed back).
const UDP_PAYLOAD: &[u8] = b"netfence dataplane probe";

/// An SCTP probe's initiate tag: nonzero, and tied to its source port.
fn sctp_tag(src_port: u16) -> u32 {
    0x4e46_0000 | u32::from(src_port)
}

fn failed(e: &std::io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Outcome::Refused,
        Some(n) => Outcome::Failed(sys::errno_name(n)),
        None => Outcome::Failed(e.to_string()),
    }
}

/// The probes of one [`World::probe`] call, in flight.
struct Run<'a> {
    targets: &'a [Target],
    pending: Vec<Pending>,
    sent_at: Vec<Instant>,
    /// When the last probe was sent.
    all_sent: Instant,
    out: Vec<Option<Observed>>,
    /// (source address, source port) of each SCTP probe in flight -> its index.
    sctp: HashMap<(IpAddr, u16), usize>,
}

impl Run<'_> {
    fn resolve(&mut self, i: usize, outcome: Outcome, at: Instant) {
        self.pending[i] = Pending::Done;
        self.out[i] = Some(Observed {
            outcome,
            latency: Some(at.saturating_duration_since(self.sent_at[i])),
            waited: Some(at.saturating_duration_since(self.all_sent)),
        });
    }
}

impl World {
    /// The source and destination socket addresses of `t`, with a fresh source port.
    fn addresses(&self, t: &Target) -> (SocketAddr, SocketAddr) {
        let src = SocketAddr::new(self.hosts[t.src].ip(t.family), self.source_port(t.protocol));
        (src, SocketAddr::new(self.hosts[t.dst].ip(t.family), t.port))
    }

    /// Opens `t`'s socket and sends its first packet; must run in `t.src`'s namespace.
    fn start(&self, t: &Target) -> Result<Pending, Outcome> {
        let (src, dst) = self.addresses(t);
        match t.protocol {
            Protocol::Tcp => sys::tcp_connect(src, dst)
                .map(Pending::Tcp)
                .map_err(|e| failed(&e)),
            Protocol::Udp => (|| {
                let s = UdpSocket::bind(src)?;
                s.set_nonblocking(true)?;
                s.connect(dst)?;
                s.send(UDP_PAYLOAD)?;
                Ok(Pending::Udp(s))
            })()
            .map_err(|e| failed(&e)),
            Protocol::Sctp => (|| {
                let fd = sys::raw_socket(src.ip(), sctp::PROTOCOL)?;
                let init = Init {
                    src_port: src.port(),
                    dst_port: t.port,
                    tag: sctp_tag(src.port()),
                };
                sys::send_to(&fd, &init.packet(), SocketAddr::new(dst.ip(), 0))?;
                Ok(Pending::Sctp(src.port()))
            })()
            .map_err(|e| failed(&e)),
        }
    }

    /// Runs `f` in host `index`'s namespace.
    fn in_host<T>(&self, index: usize, f: impl FnOnce() -> T) -> T {
        let host = &self.hosts[index];
        host.pod
            .ns
            .netns()
            .enter(f)
            .unwrap_or_else(|e| panic!("entering the namespace of {}: {e}", host.label))
    }

    /// Raw SCTP sockets in each destination of the SCTP targets, per family: opened before
    /// any INIT is sent, they see every INIT that arrives.
    fn sctp_receivers(&self, targets: &[Target]) -> Vec<(OwnedFd, bool)> {
        let wanted: BTreeSet<(usize, Family)> = targets
            .iter()
            .filter(|t| t.protocol == Protocol::Sctp)
            .map(|t| (t.dst, t.family))
            .collect();
        wanted
            .into_iter()
            .map(|(dst, family)| {
                let ip = self.hosts[dst].ip(family);
                let fd = self
                    .in_host(dst, || sys::raw_socket(ip, sctp::PROTOCOL))
                    .unwrap_or_else(|e| panic!("raw SCTP socket on {ip}: {e}"));
                (fd, family == Family::Ipv6)
            })
            .collect()
    }

    /// Probes every target at once and waits at most `timeout` after the last first
    /// packet; one [`Observed`] per target, in order.
    ///
    /// # Panics
    /// When a namespace can't be entered or `poll` fails: the sandbox is broken.
    pub fn probe(&self, targets: &[Target], timeout: Duration) -> Vec<Observed> {
        let receivers = self.sctp_receivers(targets);
        let mut run = Run {
            targets,
            pending: targets.iter().map(|_| Pending::Done).collect(),
            sent_at: vec![Instant::now(); targets.len()],
            all_sent: Instant::now(),
            out: vec![None; targets.len()],
            sctp: HashMap::new(),
        };
        let mut by_src: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, t) in targets.iter().enumerate() {
            by_src.entry(t.src).or_default().push(i);
        }
        for (src, indexes) in by_src {
            let started: Vec<_> = self.in_host(src, || {
                indexes
                    .iter()
                    .map(|&i| (i, self.start(&targets[i]), Instant::now()))
                    .collect()
            });
            for (i, result, at) in started {
                run.sent_at[i] = at;
                match result {
                    Ok(Pending::Sctp(port)) => {
                        let t = &targets[i];
                        run.sctp.insert((self.hosts[t.src].ip(t.family), port), i);
                        run.pending[i] = Pending::Sctp(port);
                    }
                    Ok(p) => run.pending[i] = p,
                    Err(outcome) => {
                        run.out[i] = Some(Observed {
                            outcome,
                            latency: None,
                            waited: None,
                        })
                    }
                }
            }
        }
        run.all_sent = Instant::now();
        let deadline = run.all_sent + timeout;
        collect(&mut run, &receivers, deadline);
        run.out
            .into_iter()
            .map(|o| {
                o.unwrap_or(Observed {
                    outcome: Outcome::Dropped,
                    latency: None,
                    waited: None,
                })
            })
            .collect()
    }

    /// Probes `targets` (TCP only) over and over until `stop` is set, and returns every
    /// finished probe (those in flight when `stop` is seen are left out).
    ///
    /// Each target starts a new connection as soon as its last one has an outcome, and
    /// in any case every `interval` while its earlier ones are still waiting: so a target
    /// whose SYNs are dropped is still tried every `interval`, with up to
    /// `timeout / interval` attempts in flight, each recorded `Dropped` after `timeout`.
    /// A window in which the firewall lets such a target through is therefore seen if it
    /// lasts about `interval` (or as long as the prober needs to get round, when the
    /// machine is busy).
    ///
    /// # Panics
    /// When a target is not TCP, a namespace can't be entered or `poll` fails.
    pub fn probe_continuously(
        &self,
        targets: &[Target],
        interval: Duration,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> Vec<Record> {
        assert!(
            targets.iter().all(|t| t.protocol == Protocol::Tcp),
            "continuous probes are TCP"
        );
        /// A connection attempt in flight.
        struct Attempt {
            target: usize,
            fd: OwnedFd,
            start: Instant,
        }
        let max_in_flight = (timeout.as_nanos() / interval.as_nanos().max(1)).max(1) as usize + 1;
        let mut by_src: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, t) in targets.iter().enumerate() {
            by_src.entry(t.src).or_default().push(i);
        }
        let mut last_start: Vec<Option<Instant>> = vec![None; targets.len()];
        let mut in_flight = vec![0usize; targets.len()];
        let mut flying: Vec<Attempt> = Vec::new();
        let mut records = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            for (&src, indexes) in &by_src {
                let due: Vec<usize> = indexes
                    .iter()
                    .copied()
                    .filter(|&i| {
                        in_flight[i] == 0
                            || (in_flight[i] < max_in_flight
                                && last_start[i].is_none_or(|l| now - l >= interval))
                    })
                    .collect();
                if due.is_empty() {
                    continue;
                }
                let opened: Vec<_> = self.in_host(src, || {
                    due.iter()
                        .map(|&i| {
                            let (from, to) = self.addresses(&targets[i]);
                            (i, Instant::now(), sys::tcp_connect(from, to))
                        })
                        .collect()
                });
                for (target, start, result) in opened {
                    last_start[target] = Some(start);
                    match result {
                        Ok(fd) => {
                            in_flight[target] += 1;
                            flying.push(Attempt { target, fd, start });
                        }
                        Err(e) => records.push(Record {
                            target,
                            start,
                            end: start,
                            outcome: failed(&e),
                        }),
                    }
                }
            }
            let mut fds: Vec<libc::pollfd> = flying
                .iter()
                .map(|a| sys::pollfd(a.fd.as_raw_fd(), libc::POLLOUT))
                .collect();
            let now = Instant::now();
            let wait = flying
                .iter()
                .map(|a| (a.start + timeout).saturating_duration_since(now))
                .fold(interval, Duration::min);
            sys::poll(&mut fds, Some(wait)).expect("poll in the continuous prober");
            let now = Instant::now();
            let mut still = Vec::with_capacity(flying.len());
            for (a, f) in flying.into_iter().zip(&fds) {
                let outcome = if f.revents != 0 {
                    match sys::so_error(&a.fd) {
                        0 => Outcome::Allowed,
                        libc::ECONNREFUSED => Outcome::Refused,
                        e => Outcome::Failed(sys::errno_name(e)),
                    }
                } else if now >= a.start + timeout {
                    Outcome::Dropped
                } else {
                    still.push(a);
                    continue;
                };
                in_flight[a.target] -= 1;
                records.push(Record {
                    target: a.target,
                    start: a.start,
                    end: now,
                    outcome,
                });
            }
            flying = still;
        }
        records
    }
}

/// What a descriptor in [`collect`]'s poll set belongs to.
enum Polled {
    /// The probe with this index.
    Probe(usize),
    /// The SCTP receiver with this index.
    Receiver(usize),
}

/// The poll loop of [`World::probe`]: until every probe has an outcome or `deadline`.
fn collect(run: &mut Run<'_>, receivers: &[(OwnedFd, bool)], deadline: Instant) {
    let mut buf = [0u8; 2048];
    loop {
        let mut fds = Vec::new();
        let mut who = Vec::new();
        for (i, p) in run.pending.iter().enumerate() {
            match p {
                Pending::Tcp(fd) => {
                    fds.push(sys::pollfd(fd.as_raw_fd(), libc::POLLOUT));
                    who.push(Polled::Probe(i));
                }
                Pending::Udp(s) => {
                    fds.push(sys::pollfd(s.as_raw_fd(), libc::POLLIN));
                    who.push(Polled::Probe(i));
                }
                Pending::Sctp(_) | Pending::Done => {}
            }
        }
        if run.pending.iter().any(|p| matches!(p, Pending::Sctp(_))) {
            for (r, (fd, _)) in receivers.iter().enumerate() {
                fds.push(sys::pollfd(fd.as_raw_fd(), libc::POLLIN));
                who.push(Polled::Receiver(r));
            }
        }
        let now = Instant::now();
        if fds.is_empty() || now >= deadline {
            return;
        }
        sys::poll(&mut fds, Some(deadline - now)).expect("poll in the prober");
        let now = Instant::now();
        for (f, w) in fds.iter().zip(&who) {
            if f.revents == 0 {
                continue;
            }
            let i = match *w {
                Polled::Receiver(r) => {
                    drain_sctp(run, &receivers[r], &mut buf, now);
                    continue;
                }
                Polled::Probe(i) => i,
            };
            let outcome = match &run.pending[i] {
                Pending::Tcp(fd) => match sys::so_error(fd) {
                    0 => Outcome::Allowed,
                    libc::ECONNREFUSED => Outcome::Refused,
                    e => Outcome::Failed(sys::errno_name(e)),
                },
                Pending::Udp(s) => match s.recv(&mut buf) {
                    Ok(_) => Outcome::Allowed,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    Err(e) => failed(&e),
                },
                Pending::Sctp(_) | Pending::Done => continue,
            };
            run.resolve(i, outcome, now);
        }
    }
}

/// Reads every INIT waiting on one receiver and resolves the SCTP probe each belongs to:
/// the same source address and port, to the probe's destination port.
fn drain_sctp(run: &mut Run<'_>, (fd, v6): &(OwnedFd, bool), buf: &mut [u8], now: Instant) {
    loop {
        let (n, from) = match sys::recv_from(fd, buf) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => panic!("reading a raw SCTP socket: {e}"),
        };
        let Some((src, init)) = sctp::received(&buf[..n], *v6, from) else {
            continue;
        };
        let Some(&i) = run.sctp.get(&(src, init.src_port)) else {
            continue; // an INIT of another probe run, or not ours
        };
        if run.targets[i].port == init.dst_port
            && init.tag == sctp_tag(init.src_port)
            && matches!(run.pending[i], Pending::Sctp(_))
        {
            run.resolve(i, Outcome::Allowed, now);
        }
    }
}
