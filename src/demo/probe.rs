//! Real TCP traffic for the matrices: listeners that accept and close, and a prober that
//! opens every cell's connection at once and waits for all of them together, so a whole
//! matrix costs one timeout whatever its size.

use std::io;
use std::net::{IpAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netfilter::Netns;

use super::DemoError;

/// What one connection attempt saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handshake completed: the SYN got through and something listens.
    Connected,
    /// A RST came back: the SYN got through, nothing listens.
    Refused,
    /// No answer within the timeout: the SYN (or its answer) was dropped.
    Dropped,
    /// Anything else, with its errno (`EHOSTUNREACH` when wiring is broken).
    Failed(i32),
}

impl Outcome {
    /// The table's mark: `ok`, `rst`, `--`, or `e` and the errno.
    pub fn mark(self) -> String {
        match self {
            Self::Connected => "ok".into(),
            Self::Refused => "rst".into(),
            Self::Dropped => "--".into(),
            Self::Failed(errno) => format!("e{errno}"),
        }
    }
}

/// One connection to attempt: from `src` (bound, so that a namespace holding several
/// addresses sends from the right one) in namespace `from`, to `dst`:`port`.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// Where the connecting socket lives.
    pub from: Netns,
    /// Its source address.
    pub src: IpAddr,
    /// The destination.
    pub dst: IpAddr,
    /// The destination port.
    pub port: u16,
}

/// `struct sockaddr_in` / `sockaddr_in6` for `ip`:`port`.
fn sockaddr(ip: IpAddr, port: u16) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match ip {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = port.to_be();
            sin6.sin6_addr.s6_addr = a.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A non-blocking TCP socket of `ip`'s family, in the calling thread's namespace.
fn tcp_socket(ip: IpAddr) -> io::Result<OwnedFd> {
    let family = if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, ip: IpAddr, port: u16) -> io::Result<()> {
    let (ss, len) = sockaddr(ip, port);
    // SAFETY: a valid sockaddr of `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds and starts connecting; `Ok(None)` while the handshake is under way.
fn start(p: &Probe) -> io::Result<(OwnedFd, Option<Outcome>)> {
    let fd = tcp_socket(p.src)?;
    bind(&fd, p.src, 0)?;
    let (ss, len) = sockaddr(p.dst, p.port);
    // SAFETY: a valid sockaddr of `len` bytes.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc == 0 {
        return Ok((fd, Some(Outcome::Connected)));
    }
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let outcome = match errno {
        libc::EINPROGRESS => None,
        libc::ECONNREFUSED => Some(Outcome::Refused),
        e => Some(Outcome::Failed(e)),
    };
    Ok((fd, outcome))
}

/// `SO_ERROR` of a socket whose connect finished.
fn so_error(fd: &OwnedFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int-sized option into an int.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        err
    }
}

/// Attempts every probe at once and waits at most `timeout` for all of them; a probe
/// with no answer by then was dropped.
pub(crate) fn run(probes: &[Probe], timeout: Duration) -> Result<Vec<Outcome>, DemoError> {
    let mut outcomes = vec![Outcome::Dropped; probes.len()];
    let mut pending: Vec<(usize, OwnedFd)> = Vec::new();
    // One namespace switch per source namespace, not per probe.
    let mut order: Vec<usize> = (0..probes.len()).collect();
    order.sort_by_key(|&i| probes[i].from.path());
    let mut i = 0;
    while i < order.len() {
        let ns = probes[order[i]].from.clone();
        let group: Vec<usize> = order[i..]
            .iter()
            .copied()
            .take_while(|&j| probes[j].from == ns)
            .collect();
        i += group.len();
        let started = ns.enter(|| -> io::Result<Vec<(usize, OwnedFd, Option<Outcome>)>> {
            group
                .iter()
                .map(|&j| start(&probes[j]).map(|(fd, o)| (j, fd, o)))
                .collect()
        })?;
        for (j, fd, o) in started.map_err(|e| DemoError::Sandbox {
            what: format!("opening probe sockets in {ns}"),
            source: e,
        })? {
            match o {
                Some(o) => outcomes[j] = o,
                None => pending.push((j, fd)),
            }
        }
    }
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfds: Vec<libc::pollfd> = pending
            .iter()
            .map(|(_, fd)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds.
        let rc = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                left.as_millis().max(1) as i32,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(DemoError::Sandbox {
                what: "waiting for probes".into(),
                source: e,
            });
        }
        let mut still = Vec::with_capacity(pending.len());
        for ((j, fd), pfd) in pending.into_iter().zip(&pfds) {
            if pfd.revents == 0 {
                still.push((j, fd));
                continue;
            }
            outcomes[j] = match so_error(&fd) {
                0 => Outcome::Connected,
                libc::ECONNREFUSED => Outcome::Refused,
                e => Outcome::Failed(e),
            };
        }
        pending = still;
    }
    Ok(outcomes)
}

/// TCP listeners that accept and close at once, served by one thread until dropped.
#[derive(Debug)]
pub(crate) struct Listeners {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A listening socket on `ip`:`port`; IPv6 ones are IPv6-only, so that an IPv4 listener
/// beside them can bind the same port whatever `net.ipv6.bindv6only` says.
fn listen(ip: IpAddr, port: u16) -> io::Result<TcpListener> {
    let fd = tcp_socket(ip)?;
    let one: libc::c_int = 1;
    let set = |level, opt| {
        // SAFETY: an int option.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    if ip.is_ipv6() {
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?;
    }
    bind(&fd, ip, port)?;
    // SAFETY: listen on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

impl Listeners {
    /// Listens on `port`, IPv4 and IPv6, in each namespace of `at`.
    pub fn start(at: &[Netns], port: u16) -> Result<Self, DemoError> {
        let mut socks = Vec::new();
        for ns in at {
            for any in [IpAddr::from([0u8; 4]), IpAddr::from([0u16; 8])] {
                let l = ns
                    .enter(|| listen(any, port))?
                    .map_err(|e| DemoError::Sandbox {
                        what: format!("listening on TCP {port} in {ns}"),
                        source: e,
                    })?;
                socks.push(l);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("netfence-demo-listen".into())
            .spawn(move || serve(&socks, &flag))
            .map_err(|e| DemoError::Sandbox {
                what: "spawning the listener thread".into(),
                source: e,
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// Accepts and closes whatever connects, checking `stop` every 50 ms.
fn serve(socks: &[TcpListener], stop: &AtomicBool) {
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: a valid array of pollfds. EINTR (a Ctrl-C) just loops.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) };
        if rc <= 0 {
            continue;
        }
        for (s, pfd) in socks.iter().zip(&mut pfds) {
            if pfd.revents != 0 {
                // Dropping the stream closes it: the handshake is all a probe needs.
                let _ = s.accept();
            }
            pfd.revents = 0;
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
