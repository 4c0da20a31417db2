//! The handle agents hold: cheap to clone, `Send + Sync`, every call answered through a
//! [`Completion`].

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Sender};
use parking_lot::Mutex;
use policy::k8s_openapi::api::core::v1 as core;
use policy::k8s_openapi::api::networking::v1 as net;
use policy::ObjectKey;

use crate::completion::{pair, Completion, Ticket};
use crate::config::EngineConfig;
use crate::error::Error;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::worker::Worker;

/// What a reconcile found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Whether the cheap check (generation id, set sizes) saw a change, so that the kernel
    /// was dumped and compared in full.
    pub dumped: bool,
    /// Operations the repair applied: set elements added or deleted, sets created or
    /// destroyed, nf_tables operations. Zero when nothing had drifted.
    pub repairs: usize,
}

/// The engine's state, as the agent may want to show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Whether [`Engine::ready`] was called and its first convergence committed; false
    /// again once the engine stopped.
    pub ready: bool,
    /// Whether the engine stopped ([`Engine::shutdown`] or [`Engine::flush`]): it
    /// changes nothing in the kernel any more, and every delta not yet committed
    /// completed with [`crate::Error::Stopped`].
    pub stopped: bool,
    /// Deltas and waits not yet in the kernel.
    pub pending: usize,
    /// Sets that no rule uses any more but that the kernel still held as referenced when
    /// the engine destroyed them (it releases a rule's references shortly after the
    /// commit that deletes the rule); retried every 50 ms. Enforcement doesn't wait for
    /// them, but a process about to exit should, to leave no garbage.
    pub deferred_destroys: usize,
    /// The last failed commit, until a commit succeeds.
    pub last_error: Option<CommitError>,
}

/// Why the engine's last commit failed, and whether waiting is expected to help.
///
/// The engine retries every failure with backoff (up to
/// [`crate::EngineConfig::retry_max`] apart), since a later delta may cure even a refusal;
/// an agent that must not wait on a failure no retry cures (an `EPERM`, a missing kernel
/// module) tells the two apart here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitError {
    /// The error, naming the operation and the object.
    pub message: String,
    /// The kernel's errno, when the kernel refused something.
    pub errno: Option<i32>,
    /// Whether a retry alone is expected to succeed: another writer raced the commit, or
    /// the kernel was momentarily busy or short of buffers.
    pub retryable: bool,
    /// Commits failed in a row, this one included.
    pub failures: u32,
}

/// One message to the sync thread.
pub(crate) enum Command {
    Pod(ObjectKey, Option<Arc<policy::Pod>>, Ticket),
    Namespace(String, Option<Arc<policy::Namespace>>, Ticket),
    Policy(ObjectKey, Option<Arc<policy::Policy>>, Ticket),
    Ready(Ticket),
    Sync(Ticket),
    Reconcile(Ticket<ReconcileReport>),
    Flush(Ticket),
    Shutdown,
}

/// State shared by the handle's clones and the sync thread.
pub(crate) struct Shared {
    pub(crate) metrics: Metrics,
    pub(crate) status: Mutex<Status>,
}

struct Inner {
    tx: Sender<Command>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    /// The last clone going stops the sync thread and leaves the kernel as it is, for the
    /// next process to adopt.
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.get_mut().take() {
            let _ = t.join();
        }
    }
}

/// netfence's engine: deltas in, one kernel transaction per burst out.
///
/// Every call returns at once with a [`Completion`]; the sync thread (which alone holds
/// the netlink sockets) drains every waiting delta, recompiles incrementally, plans the
/// change and commits it. Until [`Engine::ready`] the kernel is left exactly as found
/// (the state an earlier process left is adopted, never flushed); after it, the kernel
/// follows the model, and a [`reconcile`](Engine::reconcile) repairs drift.
///
/// Dropping the last clone stops the thread and leaves the kernel state in place.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("status", &*self.inner.shared.status.lock())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the sync thread: it opens netlink sockets in the configured namespace and
    /// observes what netfence already owns there. Returns once that worked.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config; [`Error::Start`] when the namespace can't be
    /// entered or read (run as root, with nf_tables and ipset).
    pub fn start(config: EngineConfig) -> Result<Self, Error> {
        config.validate()?;
        let shared = Arc::new(Shared {
            metrics: Metrics::new(),
            status: Mutex::new(Status::default()),
        });
        let (tx, rx) = unbounded();
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("netfence-sync".into())
            .spawn(move || match Worker::start(config, thread_shared) {
                Ok(w) => {
                    let _ = started_tx.send(Ok(()));
                    w.run(&rx);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::Start(ruleset::Error::Netfilter(io_error(e))))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                inner: Arc::new(Inner {
                    tx,
                    shared,
                    thread: Mutex::new(Some(thread)),
                }),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Stopped)
            }
        }
    }

    fn send(&self, make: impl FnOnce(Ticket) -> Command) -> Completion {
        let (ticket, c) = pair();
        if let Err(e) = self.inner.tx.send(make(ticket)) {
            drop(e); // the ticket inside goes with it, which fires Stopped
        }
        c
    }

    /// Inserts or replaces a pod (`status.podIPs`, labels, named ports, node, and the
    /// `netfence.io/host-interface` annotation are what count). A pod whose
    /// `status.phase` is `Succeeded` or `Failed` counts without addresses: its network
    /// is gone and its addresses may already be another pod's. So does a
    /// `spec.hostNetwork` pod: its address is its node's, and its traffic is the node's.
    ///
    /// The object is validated here, on the caller's thread: an invalid one completes at
    /// once with [`Error::Rejected`] and never reaches the model.
    pub fn upsert_pod(&self, pod: &core::Pod) -> Completion {
        match policy::Pod::try_from(pod) {
            Ok(p) => self.send(|t| Command::Pod(p.key(), Some(Arc::new(p)), t)),
            Err(e) => self.reject(e),
        }
    }

    /// Removes a pod. A key no pod can have (an invalid name) is rejected as
    /// [`Self::upsert_pod`] rejects such a pod, rather than deleting nothing.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Completion {
        if let Err(e) = policy::convert::check_key(policy::Kind::Pod, Some(namespace), name) {
            return self.reject(e);
        }
        let key = ObjectKey::new(namespace, name);
        self.send(|t| Command::Pod(key, None, t))
    }

    /// Inserts or replaces a namespace (its labels are what count).
    pub fn upsert_namespace(&self, ns: &core::Namespace) -> Completion {
        match policy::Namespace::try_from(ns) {
            Ok(n) => self.send(|t| Command::Namespace(n.name.clone(), Some(Arc::new(n)), t)),
            Err(e) => self.reject(e),
        }
    }

    /// Removes a namespace. An invalid name is rejected, as at [`Self::delete_pod`].
    pub fn delete_namespace(&self, name: &str) -> Completion {
        if let Err(e) = policy::convert::check_key(policy::Kind::Namespace, None, name) {
            return self.reject(e);
        }
        let name = name.to_owned();
        self.send(|t| Command::Namespace(name, None, t))
    }

    /// Inserts or replaces a NetworkPolicy.
    pub fn upsert_policy(&self, np: &net::NetworkPolicy) -> Completion {
        match policy::Policy::try_from(np) {
            Ok(p) => self.send(|t| Command::Policy(p.key(), Some(Arc::new(p)), t)),
            Err(e) => self.reject(e),
        }
    }

    /// Removes a NetworkPolicy. An invalid key is rejected, as at [`Self::delete_pod`].
    pub fn delete_policy(&self, namespace: &str, name: &str) -> Completion {
        if let Err(e) =
            policy::convert::check_key(policy::Kind::NetworkPolicy, Some(namespace), name)
        {
            return self.reject(e);
        }
        let key = ObjectKey::new(namespace, name);
        self.send(|t| Command::Policy(key, None, t))
    }

    fn reject(&self, e: policy::Error) -> Completion {
        self.inner.shared.metrics.record_rejected();
        tracing::warn!(error = %e, "delta rejected");
        Completion::ready(Err(Error::Rejected(e)))
    }

    /// Says the agent's first full list is in: from now on the kernel follows the model.
    /// Completes when the first convergence is committed.
    ///
    /// Before it, deltas are compiled but nothing is written, so that a half-listed
    /// cluster never opens (or closes) anything the previous state decided.
    pub fn ready(&self) -> Completion {
        self.send(Command::Ready)
    }

    /// Completes when everything submitted before it is in the kernel (so, not before
    /// [`Self::ready`]).
    pub fn sync(&self) -> Completion {
        self.send(Command::Sync)
    }

    /// Checks the kernel for drift now and repairs it: the cheap check first, a full dump
    /// only when it saw a change. Completes with [`Error::NotReady`] before
    /// [`Self::ready`], and with [`Error::Kernel`] when the dump or the repair failed (the
    /// engine then retries the repair as it retries any failed commit).
    pub fn reconcile(&self) -> Completion<ReconcileReport> {
        let (ticket, c) = pair();
        if let Err(e) = self.inner.tx.send(Command::Reconcile(ticket)) {
            drop(e);
        }
        c
    }

    /// Removes everything netfence owns from the kernel (its rules in built-in chains,
    /// its chains, its sets), and nothing else, then stops the engine. Deltas still
    /// pending complete with [`Error::Stopped`].
    pub fn flush(&self) -> Completion {
        self.send(Command::Flush)
    }

    /// Stops the sync thread, leaving the kernel as it is for the next process to adopt,
    /// and waits for it. Pending deltas complete with [`Error::Stopped`]. Other clones'
    /// later calls do too.
    pub fn shutdown(&self) {
        let _ = self.inner.tx.send(Command::Shutdown);
        if let Some(t) = self.inner.thread.lock().take() {
            let _ = t.join();
        }
    }

    /// The metrics so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.shared.metrics.snapshot()
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn metrics_text(&self) -> String {
        self.inner.shared.metrics.prometheus_text()
    }

    /// The engine's state.
    pub fn status(&self) -> Status {
        self.inner.shared.status.lock().clone()
    }
}

fn io_error(e: std::io::Error) -> netfilter::Error {
    netfilter::Error::Io {
        what: "spawning the sync thread".into(),
        source: e,
    }
}
