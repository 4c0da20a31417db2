//! The `NETLINK_NETFILTER` socket, opened in a chosen network namespace.
//!
//! `mnl::Socket` is `!Send`; so is [`NetlinkSocket`]. Open it on the thread that uses it.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use mnl::mnl_sys;

use crate::error::Error;
use crate::nl::{self, Msg};

/// The network namespace a socket talks to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Netns {
    /// The namespace of the calling thread.
    #[default]
    Current,
    /// A namespace made by `ip netns add NAME`: `/run/netns/NAME`.
    Named(String),
    /// A namespace file, e.g. `/proc/PID/ns/net`.
    Path(PathBuf),
}

impl Netns {
    /// The file naming the namespace, or `None` for the current one.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Self::Current => None,
            Self::Named(name) => Some(PathBuf::from("/run/netns").join(name)),
            Self::Path(p) => Some(p.clone()),
        }
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Current => f.write_str("the current network namespace"),
            Self::Named(n) => write!(f, "network namespace {n}"),
            Self::Path(p) => write!(f, "network namespace {}", p.display()),
        }
    }
}

impl Netns {
    /// Runs `f` with the calling thread switched into this namespace, then switches back.
    /// A socket created inside stays bound to the namespace for its whole life, so this is
    /// how to get a socket of any kind (netlink, UDP, raw) into a namespace without a
    /// thread living there.
    ///
    /// # Errors
    /// [`Error::Io`] when the namespace can't be opened or entered (entering needs
    /// `CAP_SYS_ADMIN`).
    ///
    /// # Panics
    /// When the thread can't return to its original namespace, which would leave it
    /// working in the wrong one.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> Result<T, Error> {
        in_netns(self, f)
    }
}

fn in_netns<T>(ns: &Netns, f: impl FnOnce() -> T) -> Result<T, Error> {
    let Some(path) = ns.path() else {
        return Ok(f());
    };
    let target =
        File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let orig = File::open("/proc/thread-self/ns/net")
        .map_err(|e| Error::io("opening /proc/thread-self/ns/net", e))?;
    // SAFETY: setns on valid fds we own; CLONE_NEWNET only moves this thread.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::io(
            format!("entering {ns} (needs root / CAP_SYS_ADMIN)"),
            std::io::Error::last_os_error(),
        ));
    }
    let out = f();
    // SAFETY: as above. Returning to the namespace we came from can't lack privilege,
    // since we just used it to leave; failing here would strand the thread elsewhere.
    if unsafe { libc::setns(orig.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        panic!("cannot return to the original network namespace: {e}");
    }
    Ok(out)
}

/// Receive buffer size: large enough that one `recv` takes a full dump skb.
const RECV_BUF: usize = 1 << 20;
/// What the kernel keeps beside the payload of each queued skb: the socket buffers are
/// sized in truesize, not payload bytes.
const SKB_OVERHEAD: usize = 1024;
/// How long [`NetlinkSocket::request`] and [`NetlinkSocket::exchange`] wait for the kernel
/// to say anything. It answers within the `sendmsg` that carried the request; ten seconds
/// means it never will.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most request bytes one `sendmsg` of [`NetlinkSocket::exchange`] carries. The
/// kernel answers a send before the next goes, so a window bounds the answers queued at
/// once as well as the send buffer.
const SEND_WINDOW: usize = 256 * 1024;

/// A `NETLINK_NETFILTER` socket (nf_tables and ipset share the bus) with its own sequence
/// numbers and a receive buffer aligned for `nlmsghdr`.
pub struct NetlinkSocket {
    sock: mnl::Socket,
    netns: Netns,
    seq: u32,
    buf: Vec<u64>,
    sndbuf: usize,
    rcvbuf: usize,
    /// A receive failed (`ENOBUFS`: the kernel dropped replies; or a reply did not
    /// decode), so the caller gave up with replies possibly still queued.
    unread: bool,
    /// Whether anything was received yet (see [`Self::has_received`]).
    received: bool,
}

impl std::fmt::Debug for NetlinkSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkSocket")
            .field("netns", &self.netns)
            .field("portid", &self.sock.portid())
            .finish()
    }
}

impl NetlinkSocket {
    /// Opens and binds a socket in `netns`.
    ///
    /// # Errors
    /// [`Error::Io`] when the namespace can't be entered or the socket can't be opened.
    pub fn open(netns: &Netns) -> Result<Self, Error> {
        Self::open_bus(netns, mnl::Bus::Netfilter, "netfilter")
    }

    /// Opens and binds a `NETLINK_ROUTE` socket in `netns` (links, addresses, routes),
    /// with the same framing, sequence numbers and ACK handling.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_route(netns: &Netns) -> Result<Self, Error> {
        Self::open_bus(netns, mnl::Bus::Route, "route")
    }

    fn open_bus(netns: &Netns, bus: mnl::Bus, what: &str) -> Result<Self, Error> {
        let sock = in_netns(netns, || mnl::Socket::new(bus))?
            .map_err(|e| Error::io(format!("opening a {what} netlink socket in {netns}"), e))?;
        let mut s = Self {
            sock,
            netns: netns.clone(),
            // Start from the clock, as libmnl users do, so that a restarted process does
            // not mistake stale replies for its own.
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            buf: vec![0u64; RECV_BUF / 8],
            sndbuf: 0,
            rcvbuf: 0,
            unread: false,
            received: false,
        };
        // Reporting errors (ENOBUFS) is what we want; ask for extended ACKs so the kernel
        // can say more, and cap ACKs to the header so big batches don't echo themselves.
        s.setsockopt(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)?;
        s.setsockopt(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1)?;
        s.reserve(1 << 20, 4 << 20)?;
        Ok(s)
    }

    /// The namespace this socket talks to.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    fn fd(&self) -> libc::c_int {
        // SAFETY: the pointer is valid for the life of `self.sock`.
        unsafe { mnl_sys::mnl_socket_get_fd(self.sock.as_raw_socket()) }
    }

    fn setsockopt(&self, level: i32, opt: i32, val: i32) -> Result<(), Error> {
        // SAFETY: plain setsockopt with an int option.
        let rc = unsafe {
            libc::setsockopt(
                self.fd(),
                level,
                opt,
                (&val as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(Error::io(
                format!("setsockopt({level}, {opt}, {val}) on the netlink socket"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Makes sure one `sendmsg` of `send` bytes is accepted and `recv` bytes of replies can
    /// queue without loss. Uses the `FORCE` variants (root) since a batch of 100k rules is
    /// far above the default `wmem_max`/`rmem_max`.
    ///
    /// # Errors
    /// [`Error::Io`] when the options can't be set.
    pub fn reserve(&mut self, send: usize, recv: usize) -> Result<(), Error> {
        const CAP: usize = 1 << 30;
        // netlink_sendmsg refuses len > sk_sndbuf - 32; the kernel doubles what we set.
        let send = (send + 64 * 1024).min(CAP);
        if send > self.sndbuf {
            self.setsockopt(
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (send / 2 + 1) as i32,
            )
            .or_else(|_| self.setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUF, send as i32))?;
            self.sndbuf = send;
        }
        let recv = recv.min(CAP);
        if recv > self.rcvbuf {
            self.setsockopt(
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (recv / 2 + 1) as i32,
            )
            .or_else(|_| self.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, recv as i32))?;
            self.rcvbuf = recv;
        }
        Ok(())
    }

    /// Room in the receive buffer for `n` replies of about `size` bytes each.
    pub(crate) fn reserve_replies(&mut self, n: usize, size: usize) -> Result<(), Error> {
        self.reserve_reply_kinds(&[(n, size)])
    }

    /// Room in the receive buffer for replies of several kinds at once: `n` of about
    /// `size` bytes each, for every `(n, size)`.
    pub(crate) fn reserve_reply_kinds(&mut self, kinds: &[(usize, usize)]) -> Result<(), Error> {
        let want = kinds.iter().fold(4 << 20, |sum: usize, &(n, size)| {
            sum.saturating_add(n.saturating_mul(size + SKB_OVERHEAD))
        });
        self.reserve(0, want)
    }

    /// A fresh sequence number.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    /// Reserves `n` consecutive sequence numbers and returns the first, for a batch that
    /// numbers its messages `first, first + 1, ..`.
    pub fn next_seqs(&mut self, n: u32) -> u32 {
        let mut first = self.seq.wrapping_add(1);
        if first == 0 || first.checked_add(n).is_none() {
            // Keep a batch's numbers increasing: restart below the wrap.
            first = 1;
        }
        self.seq = first + n.saturating_sub(1);
        first
    }

    /// Sends `bytes` in one `sendmsg`, growing the send buffer first if needed.
    ///
    /// # Errors
    /// [`Error::Io`] on a send failure, or when the kernel took less than all of it.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.unread {
            self.discard_queued()?;
        }
        self.reserve(bytes.len(), 0)?;
        let n = self
            .sock
            .send(bytes)
            .map_err(|e| Error::io(format!("sending {} bytes of netlink", bytes.len()), e))?;
        if n != bytes.len() {
            return Err(Error::io(
                "sending netlink",
                std::io::Error::other(format!("sent {n} of {} bytes", bytes.len())),
            ));
        }
        Ok(())
    }

    /// Whether the socket has received anything yet. Until it has, the kernel doesn't
    /// know how large a buffer its reader brings, and sizes each message of a dump to
    /// about 3.7 KiB (`NLMSG_GOODSIZE`; `netlink_dump()` uses the largest `recvmsg`
    /// length seen on the socket, up to 32 KiB, once there is one).
    pub fn has_received(&self) -> bool {
        self.received
    }

    /// Reads and drops whatever is queued, without waiting: replies to requests whose
    /// caller gave up on a receive error. Every request on this socket is answered before
    /// the next is sent, and the kernel answers netfilter requests within the `sendmsg`
    /// that carried them (a dump goes on as it is read, up to its end), so everything
    /// queued before a send belongs to an earlier request. Dropped here rather than left
    /// to each reader's sequence number filter: left queued, such replies take room the
    /// next request's answers need (the kernel then drops those, and the next request
    /// times out although the kernel answered it), and an unfinished dump makes the
    /// kernel refuse the next dump with `EBUSY`. Drained rather than reopened: the
    /// socket keeps its port id and buffer sizes, and callers holding it (`!Send`, made
    /// in a namespace) need not learn that it changed.
    fn discard_queued(&mut self) -> Result<(), Error> {
        let fd = self.fd();
        let bytes = self.buf.len() * 8;
        loop {
            // SAFETY: recv into our own buffer, of its length in bytes.
            let rc =
                unsafe { libc::recv(fd, self.buf.as_mut_ptr().cast(), bytes, libc::MSG_DONTWAIT) };
            if rc >= 0 {
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // ENOBUFS again only says more of the stale replies were dropped.
                Some(libc::EINTR | libc::ENOBUFS) => continue,
                Some(libc::EAGAIN) => break,
                _ => return Err(Error::io("draining the netlink socket", e)),
            }
        }
        self.unread = false;
        Ok(())
    }

    /// Receives one datagram (it may hold many messages) and hands each message to `f`.
    /// Returns `Ok(false)` when nothing arrived within `wait` (`Duration::ZERO`: don't wait).
    /// After an error, what is still queued is dropped before the next send.
    ///
    /// # Errors
    /// [`Error::Io`] on a receive failure, `ENOBUFS` meaning replies were lost (those
    /// still queued can be read after it); whatever `f` returns.
    pub fn recv(
        &mut self,
        wait: Duration,
        f: impl FnMut(Msg<'_>) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        let got = self.recv_one(wait, f);
        if got.is_err() {
            self.unread = true;
        }
        got
    }

    fn recv_one(
        &mut self,
        wait: Duration,
        mut f: impl FnMut(Msg<'_>) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        {
            let mut pfd = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = wait.as_millis().min(i32::MAX as u128) as i32;
            loop {
                // SAFETY: one valid pollfd.
                let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
                if rc < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(Error::io("polling the netlink socket", e));
                }
                if rc == 0 {
                    return Ok(false);
                }
                break;
            }
        }
        let bytes: &mut [u8] = {
            let b = self.buf.as_mut_slice();
            // SAFETY: u64 storage viewed as bytes; alignment only grows.
            unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<u8>(), b.len() * 8) }
        };
        let fd = self.fd();
        let n = loop {
            // SAFETY: recv into our own buffer.
            let rc = unsafe {
                libc::recv(
                    fd,
                    bytes.as_mut_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(false),
                _ => return Err(Error::io("receiving from the netlink socket", e)),
            }
        };
        self.received = true;
        for m in nl::messages(&bytes[..n]) {
            f(m?)?;
        }
        Ok(true)
    }

    /// Sends `msg` and feeds every reply with sequence number `seq` to `f`, until the
    /// kernel's ACK, error or `NLMSG_DONE` for it. `msg` may hold several messages that
    /// one answer concludes, such as an nf_tables batch acknowledged at its end; requests
    /// that are each answered go through [`Self::exchange`]. The message answered must
    /// carry `NLM_F_ACK` or `NLM_F_DUMP`, or this waits for 10 s and fails.
    ///
    /// # Errors
    /// [`Error::Kernel`] with `op` when the kernel answers with an errno; [`Error::Io`]
    /// when it doesn't answer at all within 10 s.
    pub fn request(
        &mut self,
        msg: &[u8],
        seq: u32,
        op: &dyn Fn() -> String,
        mut f: impl FnMut(Msg<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.send(msg)?;
        let mut done = false;
        let mut result = Ok(());
        while !done {
            let got = self.recv(REPLY_TIMEOUT, |m| {
                if m.seq != seq {
                    // A late reply to an earlier request that gave up; not ours.
                    return Ok(());
                }
                match m.ty {
                    nl::NLMSG_ERROR => {
                        let (errno, _) = m.error()?;
                        if errno != 0 {
                            result = Err(Error::Kernel { op: op(), errno });
                        }
                        done = true;
                    }
                    nl::NLMSG_DONE => done = true,
                    _ => f(m)?,
                }
                Ok(())
            })?;
            if !got {
                return Err(no_reply(op()));
            }
        }
        result
    }

    /// Sends many requests and reads their answers: one round trip for all of them where
    /// one each would cost a kernel crossing and a wake-up per request. `requests` holds
    /// whole netlink messages back to back, each with a sequence number of its own.
    ///
    /// Every message the kernel sends with the sequence number of a request not yet
    /// answered goes to `on_msg(k, msg)`, `k` being the request's place in `requests`.
    /// Request `k` is answered by its `NLMSG_ERROR` (an ACK or an error) or `NLMSG_DONE`,
    /// or by any message for which `on_msg` returns `true` (a request without `NLM_F_ACK`
    /// whose reply is the answer). Messages with other sequence numbers are late answers
    /// to requests an earlier call gave up on, and are dropped.
    ///
    /// The requests go in sends of at most 256 KiB of whole messages, each answered in
    /// full before the next is sent, with room reserved for `answers` of each: the
    /// kernel drops answers that find the receive buffer full. The kernel handles a send's
    /// messages one by one and goes on after one fails, so the requests must be ones that
    /// may apply in any subset; a caller that must stop at the first failure sends one
    /// request per call.
    ///
    /// # Errors
    /// With the place of the request it concerns (for a failed send or receive, the first
    /// request not yet answered): whatever `on_msg` returns; [`Error::Malformed`] when
    /// `requests` is not a run of whole messages; [`Error::Io`] on a socket failure, or,
    /// named by `what(k)`, when request `k` is not answered within 10 s.
    pub fn exchange(
        &mut self,
        requests: &[u8],
        answers: Answers,
        what: &dyn Fn(usize) -> String,
        on_msg: impl FnMut(usize, &Msg<'_>) -> Result<bool, Error>,
    ) -> Result<(), (usize, Error)> {
        self.exchange_in(Requests::Answered(requests), answers, what, on_msg)
    }

    /// [`Self::exchange`] for requests the kernel need only answer when they fail: each
    /// send's last request goes with `NLM_F_ACK` and every other without (this sets the
    /// flags in `requests`), so a send of a thousand requests that all succeed is answered
    /// by one ACK, not a thousand. A request without `NLM_F_ACK` is still answered when
    /// it fails (`netlink_rcv_skb()` acks any error, and ipset sends its own error with
    /// the failing element's line number), and the kernel handles a send's requests in
    /// order and answers on one socket in order, so when the last request's answer
    /// arrives, every error of the send has arrived before it.
    ///
    /// `on_msg` sees the answers that come (errors, and the ACK of each send's last
    /// request); a request with none succeeded. Only for requests whose success carries
    /// no reply.
    ///
    /// # Errors
    /// As [`Self::exchange`].
    pub fn exchange_quiet(
        &mut self,
        requests: &mut [u8],
        answers: Answers,
        what: &dyn Fn(usize) -> String,
        on_msg: impl FnMut(usize, &Msg<'_>) -> Result<bool, Error>,
    ) -> Result<(), (usize, Error)> {
        self.exchange_in(Requests::Quiet(requests), answers, what, on_msg)
    }

    fn exchange_in(
        &mut self,
        mut requests: Requests<'_>,
        answers: Answers,
        what: &dyn Fn(usize) -> String,
        mut on_msg: impl FnMut(usize, &Msg<'_>) -> Result<bool, Error>,
    ) -> Result<(), (usize, Error)> {
        // Where each request starts and ends, and whose sequence number is whose.
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut place: HashMap<u32, usize> = HashMap::new();
        let bytes = requests.bytes();
        for m in nl::messages(bytes) {
            let m = m.map_err(|e| (ends.len(), e))?;
            let start = m.bytes.as_ptr() as usize - bytes.as_ptr() as usize;
            let end = start + m.bytes.len();
            if place.insert(m.seq, ends.len()).is_some() {
                return Err((
                    ends.len(),
                    Error::malformed(format!("sequence number {} used twice", m.seq)),
                ));
            }
            starts.push(start);
            ends.push(nl::align(end).min(bytes.len()));
        }
        let quiet = matches!(requests, Requests::Quiet(_));
        let mut answered = vec![false; ends.len()];
        let mut first = 0;
        while first < ends.len() {
            let start = if first == 0 { 0 } else { ends[first - 1] };
            // Whole messages, at least one, up to the window.
            let mut last = first;
            while last + 1 < ends.len() && ends[last + 1] - start <= SEND_WINDOW {
                last += 1;
            }
            let window = first..last + 1;
            if let Requests::Quiet(buf) = &mut requests {
                for k in window.clone() {
                    nl::set_ack(&mut buf[starts[k]..], k == last);
                }
            }
            let reserved = self
                .reserve_replies(window.len() * answers.messages, answers.bytes)
                .and_then(|()| self.send(&requests.bytes()[start..ends[last]]));
            reserved.map_err(|e| (first, e))?;
            // Quiet, only the last request must be answered; the others are answered
            // only if they fail, and before it.
            let mut pending = if quiet { 1 } else { window.len() };
            while pending > 0 {
                let mut erred = None;
                let got = self.recv(REPLY_TIMEOUT, |m| {
                    let Some(&k) = place.get(&m.seq) else {
                        return Ok(());
                    };
                    if !window.contains(&k) || answered[k] {
                        return Ok(());
                    }
                    let done = on_msg(k, &m).inspect_err(|_| erred = Some(k))?;
                    if done || m.ty == nl::NLMSG_ERROR || m.ty == nl::NLMSG_DONE {
                        answered[k] = true;
                        if !quiet || k == last {
                            pending -= 1;
                        }
                    }
                    Ok(())
                });
                // Only on the way out: a scan per answer would be quadratic in a window of
                // thousands.
                let waiting = || {
                    if quiet {
                        return last;
                    }
                    window.clone().find(|&k| !answered[k]).unwrap_or(first)
                };
                if !got.map_err(|e| (erred.unwrap_or_else(waiting), e))? {
                    let k = waiting();
                    return Err((k, no_reply(what(k))));
                }
            }
            first = last + 1;
        }
        Ok(())
    }
}

/// The requests of an exchange: sent as they are, each to be answered, or
/// [`NetlinkSocket::exchange_quiet`]'s, whose `NLM_F_ACK` flags it sets.
enum Requests<'a> {
    Answered(&'a [u8]),
    Quiet(&'a mut [u8]),
}

impl Requests<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Requests::Answered(b) => b,
            Requests::Quiet(b) => b,
        }
    }
}

/// The error for a request `op` the kernel did not answer within [`REPLY_TIMEOUT`].
fn no_reply(op: String) -> Error {
    Error::io(
        op,
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no netlink reply in {REPLY_TIMEOUT:?}"),
        ),
    )
}

/// What [`NetlinkSocket::exchange`] reserves receive buffer room for, per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answers {
    /// Messages the kernel queues in answer to one request (each its own skb), ACK
    /// included.
    pub messages: usize,
    /// Bytes of each, about.
    pub bytes: usize,
}

impl Default for Answers {
    /// One ACK: what a request with `NLM_F_ACK` and no reply queues. Dumps queue more,
    /// but read as they come, one request at a time, and need no more than the buffer
    /// every socket starts with.
    fn default() -> Self {
        Self {
            messages: 1,
            bytes: 64,
        }
    }
}
