//! The throwaway sandbox: named network namespaces made the way `ip netns add` makes them,
//! wired the way a CNI plugin wires pods (DESIGN.md, "Pod wiring that works"), with
//! netlink and `/proc/sys` writes only: this library starts no process.
//!
//! ```text
//!  pod ns  eth0 10.244.1.2/32 fd00:10:244:1::2/128      node ns  nfd-n1 169.254.1.1/32 fe80::1/64
//!          default via 169.254.1.1 onlink  ──── veth ────        10.244.1.2/32 dev nfd-n1
//!          default via fe80::1                                   fd00:10:244:1::2/128 dev nfd-n1
//! ```
//!
//! Every namespace is a [`NamedNetns`] guard: dropping the sandbox (also while unwinding
//! from a panic) unmounts and unlinks them, and the kernel frees each namespace, with its
//! veth ends, nf_tables tables and ipsets, once nothing else holds it.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use netfilter::rtnl::{Route, Rtnl};
use netfilter::Netns;

use super::world::Member;
use super::DemoError;

/// Where `ip netns` keeps its names.
const NETNS_RUN_DIR: &str = "/run/netns";

/// The node side's addresses on every veth: the pods' gateway, the same on each link.
const GATEWAY_V4: &str = "169.254.1.1";
const GATEWAY_V6: &str = "fe80::1";

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// Turns a libc return code into an `io::Result`.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A network namespace named under `/run/netns`, removed on drop.
#[derive(Debug)]
pub(crate) struct NamedNetns {
    name: String,
    path: PathBuf,
    removed: bool,
}

impl NamedNetns {
    /// Creates `/run/netns/NAME` as `ip netns add NAME` does (iproute2 `ip/ipnetns.c`):
    ///
    /// 1. `/run/netns` is made a shared mount, bind-mounting it on itself first if it is
    ///    not a mount point, so that the names propagate to mount namespaces cloned from
    ///    this one (and `ip netns exec` elsewhere sees them);
    /// 2. an empty file is created there, exclusively (a leftover name is an error);
    /// 3. a short-lived thread `unshare(CLONE_NEWNET)`s (only that thread moves) and
    ///    bind-mounts its `/proc/thread-self/ns/net` on the file. The mount keeps the
    ///    namespace alive after the thread ends.
    pub fn create(name: &str) -> Result<Self, DemoError> {
        let fail = |what: &str, e: io::Error| DemoError::Sandbox {
            what: format!("{what} for network namespace {name}"),
            source: e,
        };
        let run = Path::new(NETNS_RUN_DIR);
        match std::fs::create_dir(run) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail("creating /run/netns", e)),
        }
        make_shared(run).map_err(|e| fail("making /run/netns a shared mount", e))?;
        let path = run.join(name);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    fail(
                        &format!(
                            "creating {} (left by an earlier run? `ip netns del {name}`)",
                            path.display()
                        ),
                        e,
                    )
                } else {
                    fail(&format!("creating {}", path.display()), e)
                }
            })?;
        // From here on, the guard removes the file whatever fails.
        let ns = Self {
            name: name.to_owned(),
            path,
            removed: false,
        };
        let target = cstr(&ns.path).map_err(|e| fail("naming", e))?;
        let bound = std::thread::Builder::new()
            .name("netfence-netns".into())
            .spawn(move || -> io::Result<()> {
                // SAFETY: unshare affects only this thread, which ends right after.
                check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
                let source = c"/proc/thread-self/ns/net";
                // SAFETY: valid NUL-terminated strings; a plain bind mount.
                check(unsafe {
                    libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        c"none".as_ptr(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                })
            })
            .map_err(|e| fail("spawning the thread that makes it", e))?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread making it panicked")));
        bound.map_err(|e| fail("unshare and bind mount (needs root)", e))?;
        Ok(ns)
    }

    /// Its name under `/run/netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace, for netfence's API.
    pub fn netns(&self) -> Netns {
        Netns::Named(self.name.clone())
    }

    /// Removes it as `ip netns del` does: a lazy unmount (sockets still open in it keep
    /// the namespace itself alive until they close), then the file.
    pub fn remove(&mut self) -> io::Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let target = cstr(&self.path)?;
        // SAFETY: a valid path; MNT_DETACH only detaches.
        let unmounted = check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) });
        let unlinked = std::fs::remove_file(&self.path);
        // Unlinking matters most: a name left behind blocks nothing but confuses users.
        unlinked.and(unmounted)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// `mount --make-rshared /run/netns`, first turning it into a mount point if it is not
/// one (the kernel answers `EINVAL` for a plain directory).
fn make_shared(run: &Path) -> io::Result<()> {
    let dir = cstr(run)?;
    let shared = || {
        // SAFETY: valid strings; changes only the propagation type.
        check(unsafe {
            libc::mount(
                c"".as_ptr(),
                dir.as_ptr(),
                c"none".as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        })
    };
    match shared() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // SAFETY: binds the directory on itself, as iproute2 does.
            check(unsafe {
                libc::mount(
                    dir.as_ptr(),
                    dir.as_ptr(),
                    c"none".as_ptr(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            })?;
            shared()
        }
        other => other,
    }
}

/// Writes a sysctl under `/proc/sys/net` for `ns`. `/proc/sys/net` shows the network
/// namespace of the thread that opens it, so the write happens inside [`Netns::enter`].
fn sysctl(ns: &Netns, key: &str, value: &str) -> Result<(), DemoError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.enter(|| std::fs::write(&path, value))?
        .map_err(|e| DemoError::Sandbox {
            what: format!("setting {key}={value} in {ns}"),
            source: e,
        })
}

/// One wired namespace: a pod, or the hosts.
#[derive(Debug)]
pub(crate) struct Attached {
    /// Keys of the members living there.
    pub keys: Vec<String>,
    /// Its namespace.
    pub ns: NamedNetns,
    /// Whether it holds the outside hosts rather than a pod.
    pub hosts: bool,
}

/// The node and everything wired to it.
#[derive(Debug)]
pub(crate) struct Sandbox {
    /// The namespace netfence programs.
    pub node: NamedNetns,
    /// Pods first, then the hosts' namespace. Declared after `node` so that it drops
    /// after it; the order does not matter to the kernel, which frees each veth with
    /// whichever end goes first.
    pub attached: Vec<Attached>,
}

impl Sandbox {
    /// Builds the node, one namespace per pod, and one for all the outside hosts, named
    /// `PREFIX-node`, `PREFIX-KEY`, `PREFIX-hosts`.
    pub fn build(prefix: &str, members: &[Member]) -> Result<Self, DemoError> {
        let node = NamedNetns::create(&format!("{prefix}-node"))?;
        let mut sandbox = Sandbox {
            node,
            attached: Vec::new(),
        };
        let node_ns = sandbox.node.netns();
        // A router that forwards both families, and does not second-guess sources: what
        // a probe sees dropped must have been dropped by netfence.
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            sysctl(&node_ns, key, value)?;
        }
        let mut node = Rtnl::open(&node_ns)?;
        node.set_up("lo")?;

        let (pods, hosts): (Vec<&Member>, Vec<&Member>) =
            members.iter().partition(|m| m.pod.is_some());
        let mut groups: Vec<(String, Vec<&Member>)> = pods
            .into_iter()
            .map(|m| (m.key.to_lowercase(), vec![m]))
            .collect();
        let has_hosts = !hosts.is_empty();
        if has_hosts {
            groups.push(("hosts".into(), hosts));
        }
        let n = groups.len();
        for (g, (tag, group)) in groups.into_iter().enumerate() {
            let ns = NamedNetns::create(&format!("{prefix}-{tag}"))?;
            let host_if = format!("nfd-{tag}");
            // Pushed before wiring, so that a failure below still removes it.
            sandbox.attached.push(Attached {
                keys: group.iter().map(|m| m.key.clone()).collect(),
                ns,
                hosts: has_hosts && g == n - 1,
            });
            let ns = sandbox.attached.last().expect("just pushed").ns.netns();
            let mut addrs = Vec::new();
            for m in &group {
                addrs.push(host(IpAddr::V4(m.v4)));
                addrs.push(host(IpAddr::V6(m.v6)));
            }
            wire(&mut node, &host_if, &ns, &addrs)?;
        }
        Ok(sandbox)
    }

    /// The namespace a member lives in.
    pub fn netns_of(&self, key: &str) -> Option<Netns> {
        self.attached
            .iter()
            .find(|a| a.keys.iter().any(|k| k == key))
            .map(|a| a.ns.netns())
    }

    /// Every namespace's name, node first.
    pub fn names(&self) -> Vec<&str> {
        std::iter::once(self.node.name())
            .chain(self.attached.iter().map(|a| a.ns.name()))
            .collect()
    }

    /// Removes every namespace now, reporting the first failure (the rest are still
    /// tried). Returns how many there were.
    pub fn remove(mut self) -> Result<usize, DemoError> {
        let mut first = None;
        let mut n = 0;
        for ns in self
            .attached
            .iter_mut()
            .map(|a| &mut a.ns)
            .chain(std::iter::once(&mut self.node))
        {
            n += 1;
            if let Err(e) = ns.remove() {
                first.get_or_insert(DemoError::Sandbox {
                    what: format!("removing network namespace {}", ns.name()),
                    source: e,
                });
            }
        }
        first.map_or(Ok(n), Err)
    }
}

/// A host prefix: /32 or /128.
fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Wires namespace `ns` to the node through veth `host_if` (node side) / `eth0`, giving
/// `eth0` the addresses `addrs` and routing them back from the node.
///
/// The order matters to the kernel: an onlink gateway is refused (`ENETDOWN`) until both
/// ends of the veth are up, so routes come last.
fn wire(node: &mut Rtnl, host_if: &str, ns: &Netns, addrs: &[IpNet]) -> Result<(), DemoError> {
    let gw4: IpAddr = GATEWAY_V4.parse().expect("literal");
    let gw6: IpAddr = GATEWAY_V6.parse().expect("literal");
    node.add_veth(host_if, "eth0", ns)?;
    node.add_address(host_if, host(gw4), false)?;
    node.add_address(host_if, IpNet::new(gw6, 64).expect("/64"), true)?;
    node.set_up(host_if)?;

    let mut pod = Rtnl::open(ns)?;
    pod.set_up("lo")?;
    for a in addrs {
        // No DAD for IPv6: the address must work at once, and nothing else claims it.
        pod.add_address("eth0", *a, a.addr().is_ipv6())?;
    }
    pod.set_up("eth0")?;
    pod.add_route(&Route::via("0.0.0.0/0".parse().expect("literal"), gw4, "eth0").onlink())?;
    pod.add_route(&Route::via("::/0".parse().expect("literal"), gw6, "eth0"))?;
    for a in addrs {
        node.add_route(&Route::dev(*a, host_if))?;
    }
    Ok(())
}
