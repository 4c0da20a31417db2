//! The listeners of a world: on every host, a TCP listener and a UDP echo socket on each
//! probed port, in both families, all served by one thread.
//!
//! TCP needs no answer beyond the kernel's handshake: a connection counts as allowed once
//! it is established, and the thread only accepts and closes, so that the accept queue
//! never fills (a full queue drops SYNs, which would look like a firewall's drop). UDP
//! needs the echo: a datagram counts as allowed when its echo comes back. SCTP has no
//! listener here: its probes open a raw socket in the destination for the time of a
//! matrix (see `probe`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::thread::JoinHandle;

use policy::Protocol;

use super::sys;
use super::Host;

enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Listener {
    fn fd(&self) -> i32 {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Udp(s) => s.as_raw_fd(),
        }
    }

    /// Serves everything waiting: accepts and closes connections, echoes datagrams.
    fn serve(&self) {
        match self {
            Listener::Tcp(l) => loop {
                match l.accept() {
                    Ok((conn, _)) => drop(conn),
                    // Nothing more, or a connection reset before it was accepted (the
                    // prober saw its handshake already): `poll` says when there is more.
                    Err(_) => return,
                }
            },
            Listener::Udp(s) => {
                let mut buf = [0u8; 2048];
                loop {
                    match s.recv_from(&mut buf) {
                        Ok((n, peer)) => {
                            let _ = s.send_to(&buf[..n], peer);
                        }
                        // Nothing more, or an ICMP error an earlier echo left queued on the
                        // socket (reading it cleared it): `poll` says when there is more.
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

/// The serving thread and the means to stop it. Dropping it stops the thread and closes
/// every listener.
pub struct Responder {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// Opens the listeners of every host on every TCP and UDP port of `ports` (SCTP ports
    /// are skipped), bound to the host's own addresses, and starts serving them.
    ///
    /// # Panics
    /// When a namespace can't be entered or a port can't be bound.
    pub fn start(hosts: &[Host], ports: &BTreeSet<(Protocol, u16)>) -> Responder {
        let mut listeners = Vec::new();
        for host in hosts {
            let opened = host
                .pod
                .ns
                .netns()
                .enter(|| -> std::io::Result<Vec<Listener>> {
                    let mut v = Vec::new();
                    for &(protocol, port) in ports {
                        for ip in [IpAddr::V4(host.v4), IpAddr::V6(host.v6)] {
                            let addr = SocketAddr::new(ip, port);
                            let l = match protocol {
                                Protocol::Tcp => Listener::Tcp(TcpListener::bind(addr)?),
                                Protocol::Udp => Listener::Udp(UdpSocket::bind(addr)?),
                                Protocol::Sctp => continue,
                            };
                            match &l {
                                Listener::Tcp(t) => t.set_nonblocking(true)?,
                                Listener::Udp(u) => u.set_nonblocking(true)?,
                            }
                            v.push(l);
                        }
                    }
                    Ok(v)
                })
                .unwrap_or_else(|e| panic!("entering {}: {e}", host.label))
                .unwrap_or_else(|e| panic!("listeners of {}: {e}", host.label));
            listeners.extend(opened);
        }
        let stop = sys::eventfd().expect("eventfd");
        let stop_fd = stop.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("dataplane-responder".into())
            .spawn(move || serve(&listeners, stop_fd))
            .expect("spawning the responder");
        Responder {
            stop,
            thread: Some(thread),
        }
    }
}

/// Serves `listeners` until `stop` is readable.
fn serve(listeners: &[Listener], stop: i32) {
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| sys::pollfd(l.fd(), libc::POLLIN))
        .collect();
    fds.push(sys::pollfd(stop, libc::POLLIN));
    loop {
        for f in &mut fds {
            f.revents = 0;
        }
        sys::poll(&mut fds, None).expect("poll in the responder");
        if fds.last().is_some_and(|f| f.revents != 0) {
            return;
        }
        for (l, f) in listeners.iter().zip(&fds) {
            if f.revents != 0 {
                l.serve();
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        sys::signal(&self.stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
