//! The sync thread: the only owner of the netlink sockets, the compiler and the view of
//! the kernel.
//!
//! Each turn of its loop takes one burst: every command waiting (up to
//! [`MAX_BURST`]), applied to the compiler in order; then, if the engine is ready, one
//! plan over the chains and sets the burst touched and one application of it (so one
//! nf_tables batch, with ipset messages ordered around it by the planner's fail-closed
//! rule); then a reconcile if one is due. Commands that arrive meanwhile wait in the
//! channel for the next turn.
//!
//! Whatever nobody needs to wait for is kept off the path between a burst's last delta
//! and its completions:
//! - a large commit is made in two halves: the sets are planned first, and their before
//!   phase goes to the kernel while a second thread settles the dispatch chains and
//!   plans the batch (the kernel sees the same steps in the same order);
//! - the record of the applied plan in the view of the kernel, and the freeing of what
//!   the burst replaced ([`Compiler::keep_garbage`]), come after the completions fire.
//!
//! A failed commit leaves the kernel fail-closed (the plan's ordering), is reported, and
//! is retried after a fresh observation with exponential backoff; the deltas it carried
//! stay pending and complete with the commit that finally lands them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use policy::{Cluster, Compiler};
use ruleset::{
    plan, plan_batch_scoped, plan_sets_scoped, Executed, Kernel, Plan, Ruleset, Scope, TableId,
    KERNEL_MAXELEM,
};

use crate::completion::Ticket;
use crate::config::EngineConfig;
use crate::engine::{Command, CommitError, ReconcileReport, Shared};
use crate::error::Error;

/// Most commands taken into one burst: a storm that never pauses still gets a commit at
/// least every this many deltas, which bounds the latency of the first of them.
pub(crate) const MAX_BURST: usize = 10_000;

/// How soon a set destroy the kernel deferred (still referenced) is tried again.
const DEFERRED_RETRY: Duration = Duration::from_millis(50);

/// Fewest set operations in a plan's before phase for the commit to settle the dispatch
/// chains and plan the batch on a second thread while that phase is in the kernel. Each
/// member message costs the kernel a few microseconds and starting the thread some tens:
/// a pod delta (a dozen operations) stays on one thread, a burst (a thousand, about 8 ms
/// at 10,000 pods and 1,000 policies) takes the settle and the batch's planning (about
/// 4 ms) off its path.
const STAGE_MIN: usize = 64;

/// A call waiting for the next successful commit.
struct Waiting {
    ticket: Ticket,
    /// A delta (counted in the latency histogram), not a `ready` or `sync`.
    delta: bool,
}

pub(crate) struct Worker {
    config: EngineConfig,
    shared: Arc<Shared>,
    kernel: Kernel,
    compiler: Compiler,
    tables: Vec<TableId>,
    /// What the kernel holds, as far as netfence knows: observed at start and after every
    /// failure or detected drift, kept up to date by every applied plan.
    current: Ruleset,
    /// Whether `current` may be out of date (an observation failed).
    stale: bool,
    ready: bool,
    /// Whether a commit has succeeded since `ready`.
    converged: bool,
    waiting: Vec<Waiting>,
    /// Chains and sets changed since the last successful commit.
    scope: Scope,
    /// Plan everything, not just the scope: after `ready` and after every observation.
    full: bool,
    /// The commit being made settled set changes its plan left out (which can't happen,
    /// see [`settle_and_plan_batch`]): the next commit plans everything.
    full_next: bool,
    backoff: Duration,
    /// When a failed commit may be tried again: no commit runs before then.
    retry_at: Option<Instant>,
    /// When to try again the set destroys the kernel deferred, if no commit has by then.
    /// Unlike `retry_at` it holds nothing back: every commit tries them too.
    deferred_at: Option<Instant>,
    reconcile_at: Option<Instant>,
    last_error: Option<CommitError>,
    /// Set destroys the kernel deferred in the last commit (see [`crate::Status`]).
    deferred: usize,
    /// Before `ready`, the deltas' cluster: compiled from scratch at `ready`, which costs a
    /// third of compiling the first full list delta by delta (at 10k pods and 1,000
    /// policies, 0.4 s against 1.2 s), since nothing is written before then anyway.
    staged: Option<Cluster>,
}

/// What a burst asked beyond deltas.
#[derive(Default)]
struct Burst {
    reconciles: Vec<Ticket<ReconcileReport>>,
    flush: Option<Ticket>,
    shutdown: bool,
}

impl Worker {
    /// Opens the sockets in the configured namespace and observes it.
    pub(crate) fn start(config: EngineConfig, shared: Arc<Shared>) -> Result<Self, Error> {
        let mut kernel = Kernel::open(&config.netns).map_err(Error::Start)?;
        // A destroy the kernel refuses for a moment is retried on the engine's own timer
        // (DEFERRED_RETRY), not slept through inside the commit its deltas wait on.
        kernel.set_patient_destroys(false);
        let mut compiler = Compiler::new(config.compiler.clone()).map_err(|e| Error::Config {
            field: "compiler",
            reason: e.to_string(),
        })?;
        // Freed at the end of each turn, after the commit's completions.
        compiler.keep_garbage(true);
        let tables = config.compiler.tables();
        let current = kernel
            .observe(&config.compiler.prefix, &tables)
            .map_err(Error::Start)?;
        tracing::info!(
            netns = %config.netns,
            sets = current.sets().len(),
            chains = current.owned_chains().len(),
            "adopted the kernel's netfence state"
        );
        let backoff = config.retry_min;
        Ok(Self {
            config,
            shared,
            kernel,
            compiler,
            tables,
            current,
            stale: false,
            ready: false,
            converged: false,
            waiting: Vec::new(),
            scope: Scope::default(),
            full: true,
            full_next: false,
            backoff,
            retry_at: None,
            deferred_at: None,
            reconcile_at: None,
            last_error: None,
            deferred: 0,
            staged: Some(Cluster::default()),
        })
    }

    /// Runs until shutdown, flush, or every handle is gone.
    pub(crate) fn run(mut self, rx: &Receiver<Command>) {
        loop {
            let first = match self.deadline() {
                Some(d) => match rx.recv_deadline(d) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return,
                },
            };
            let mut burst = Burst::default();
            let mut taken = 0;
            // A burst's policy deltas rewrite each namespace's dispatch chains once.
            self.compiler.hold_dispatch();
            for cmd in first.into_iter().chain(rx.try_iter()) {
                self.take(cmd, &mut burst);
                taken += 1;
                if burst.shutdown || burst.flush.is_some() || taken >= MAX_BURST {
                    break;
                }
            }
            if burst.shutdown {
                tracing::info!("engine shut down; the kernel keeps its state");
                self.publish_stopped();
                return;
            }
            if let Some(t) = burst.flush {
                let flushed = self.flush();
                // Before the completion: its caller must see the engine stopped.
                self.publish_stopped();
                t.complete(flushed);
                return;
            }
            // A commit settles the dispatch chains itself, possibly on a second thread;
            // this settles what no commit did (a no-op otherwise), so every turn ends
            // settled.
            if self.ready && self.has_work() && self.retry_due() {
                // A failure is in the status and retried; the waiting deltas keep waiting.
                let _ = self.commit();
            }
            self.settle();
            let due = self.reconcile_at.is_some_and(|t| Instant::now() >= t);
            if !burst.reconciles.is_empty() || due {
                let report = self.reconcile();
                // As in `commit`: a caller woken by its completion must see the status
                // that the reconcile's commit left.
                self.publish();
                for t in burst.reconciles {
                    t.complete(match &report {
                        Ok(r) => Ok(*r),
                        Err(e) => Err(e.clone()),
                    });
                }
            }
            self.publish();
            // What the turn's deltas replaced, freed now that nobody waits on this thread.
            drop(self.compiler.take_garbage());
        }
    }

    /// Applies one command to the model (or notes what it asks for).
    fn take(&mut self, cmd: Command, burst: &mut Burst) {
        let delta = |ticket| Waiting {
            ticket,
            delta: true,
        };
        match cmd {
            Command::Pod(key, pod, t) => {
                match (pod, &mut self.staged) {
                    (Some(p), Some(c)) => {
                        c.upsert_pod(p);
                    }
                    (None, Some(c)) => {
                        c.delete_pod(&key);
                    }
                    (Some(p), None) => self.compiler.upsert_pod(p),
                    (None, None) => self.compiler.delete_pod(&key),
                }
                self.waiting.push(delta(t));
            }
            Command::Namespace(name, ns, t) => {
                match (ns, &mut self.staged) {
                    (Some(n), Some(c)) => {
                        c.upsert_namespace(n);
                    }
                    (None, Some(c)) => {
                        c.delete_namespace(&name);
                    }
                    (Some(n), None) => self.compiler.upsert_namespace(n),
                    (None, None) => self.compiler.delete_namespace(&name),
                }
                self.waiting.push(delta(t));
            }
            Command::Policy(key, p, t) if self.staged.is_some() => {
                let c = self.staged.as_mut().expect("checked");
                match p {
                    Some(p) => {
                        c.upsert_policy(p);
                    }
                    None => {
                        c.delete_policy(&key);
                    }
                }
                self.waiting.push(delta(t));
            }
            Command::Policy(key, p, t) => {
                let r = match p {
                    Some(p) => self.compiler.upsert_policy(p),
                    None => self.compiler.delete_policy(&key),
                };
                match r {
                    Ok(()) => self.waiting.push(delta(t)),
                    Err(e) => {
                        // A compiler refusal: a bug, reported on the delta that met it.
                        tracing::error!(policy = %key, error = %e, "policy not compiled");
                        self.shared.metrics.record_rejected();
                        t.complete(Err(Error::Rejected(e)));
                    }
                }
            }
            Command::Ready(t) => {
                if let Some(cluster) = self.staged.take() {
                    if let Err(e) = self.compiler.compile(&cluster) {
                        // Validation on the callers' threads leaves only compiler bugs here;
                        // the state is then rebuilt delta by delta so that each refused
                        // policy is named, and the rest still applies.
                        tracing::error!(error = %e, "compiling the first full list; retrying delta by delta");
                        self.replay(&cluster);
                    }
                }
                if !self.ready {
                    self.ready = true;
                    self.full = true;
                    self.reconcile_at = self.config.reconcile_interval.map(|i| Instant::now() + i);
                    // The view of the kernel is the one read at start, and the agent's
                    // first list takes seconds: on a node where kube-proxy commits
                    // meanwhile, the first commit would fail on the generation and wait a
                    // backoff to retry, with an error in the status, on nearly every
                    // restart. One round trip tells whether the view must be read again.
                    match self.kernel.read_generation() {
                        Ok(g) if Some(g) == self.kernel.generation() => {}
                        _ => self.stale = true,
                    }
                }
                self.waiting.push(Waiting {
                    ticket: t,
                    delta: false,
                });
            }
            Command::Sync(t) => self.waiting.push(Waiting {
                ticket: t,
                delta: false,
            }),
            Command::Reconcile(t) => burst.reconciles.push(t),
            Command::Flush(t) => burst.flush = Some(t),
            Command::Shutdown => burst.shutdown = true,
        }
    }

    /// Ends the compiler's hold on dispatch rewrites. Its error is a compiler bug that
    /// no single delta can be blamed for; the state is then rebuilt as after a failed
    /// first compile, and the next commit plans it whole.
    fn settle(&mut self) {
        if let Err(e) = self.compiler.settle() {
            self.rebuild(&e);
        }
    }

    /// Rebuilds the compiler delta by delta after it failed to settle, and plans
    /// everything next.
    fn rebuild(&mut self, e: &policy::Error) {
        tracing::error!(error = %e, "rewriting the dispatch chains; rebuilding delta by delta");
        let cluster = self.compiler.cluster().clone();
        self.replay(&cluster);
        self.full = true;
    }

    /// Feeds `cluster` to a fresh compiler one object at a time, logging each policy it
    /// refuses.
    fn replay(&mut self, cluster: &Cluster) {
        self.compiler =
            Compiler::new(self.config.compiler.clone()).expect("the config compiled before");
        self.compiler.keep_garbage(true);
        for ns in cluster.namespaces() {
            self.compiler.upsert_namespace(ns.clone());
        }
        for pod in cluster.pods() {
            self.compiler.upsert_pod(pod.clone());
        }
        for p in cluster.policies() {
            if let Err(e) = self.compiler.upsert_policy(p.clone()) {
                tracing::error!(policy = %p.key(), error = %e, "policy not compiled");
                self.shared.metrics.record_rejected();
            }
        }
    }

    /// When the loop must wake without a command: a retry, a deferred destroy, a
    /// reconcile.
    fn deadline(&self) -> Option<Instant> {
        if !self.ready {
            return None;
        }
        let retry = self.retry_at.filter(|_| self.has_work());
        [retry, self.deferred_at, self.reconcile_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn has_work(&self) -> bool {
        self.full || self.stale || !self.waiting.is_empty() || !self.scope.is_empty()
    }

    fn retry_due(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Plans the burst's change and applies it.
    ///
    /// The waiting calls complete as soon as the kernel holds the change; the record of
    /// it in `current` (for the next plan) is written after that. A failure is reported
    /// in the status and scheduled for a retry, and returned for a caller that waits on
    /// this very commit (a reconcile's repair).
    fn commit(&mut self) -> Result<(), ruleset::Error> {
        if self.last_error.is_some() {
            self.shared.metrics.record_retry();
        }
        if self.stale {
            if let Err(e) = self.observe() {
                tracing::warn!(error = %e, "observing the kernel");
                self.failed(&e, false);
                return Err(e);
            }
        }
        let t0 = Instant::now();
        let mut ex = Executed::default();
        let p = match self.plan_and_execute(&mut ex) {
            Ok(p) => p,
            Err(e) => {
                if let Some(p) = &e.plan {
                    // What ran is recorded, as far as it is known: the retry observes
                    // the kernel anyway, but a failure must not leave `current` behind
                    // the steps that landed.
                    let _ = ex.record(p, &mut self.current);
                }
                self.failed(&e.error, ex.started());
                return Err(e.error);
            }
        };
        let mut leftover = Scope::default();
        if !p.is_empty() {
            self.shared.metrics.record_commit(t0.elapsed(), p.cost());
            for name in &ex.applied.deferred {
                leftover.set(name);
            }
        }
        self.deferred = leftover.sets.len();
        let taken = std::mem::replace(&mut self.scope, leftover);
        self.full = std::mem::take(&mut self.full_next);
        self.backoff = self.config.retry_min;
        self.retry_at = None;
        // A wake-up, not a gate: holding commits back until then made the deltas behind
        // a policy delete (whose sets the kernel releases a moment after the rules) wait
        // up to DEFERRED_RETRY for nothing.
        self.deferred_at = (!self.scope.is_empty()).then(|| Instant::now() + DEFERRED_RETRY);
        self.last_error = None;
        self.converged = true;
        // Status first: a caller woken by its completion must see the state that fired it.
        let done = std::mem::take(&mut self.waiting);
        self.publish();
        for w in done {
            if w.delta {
                self.shared.metrics.record_delta(w.ticket.at.elapsed());
            }
            w.ticket.complete(Ok(()));
        }
        // The bookkeeping nobody waits for: the plan into `current` (a burst's thousands
        // of member changes, each looked up in a set of thousands), and dropping what
        // the commit used.
        if let Err(e) = ex.record_owned(p, &mut self.current) {
            // A planner bug: the kernel is right, the record is not. Read it again.
            tracing::error!(error = %e, "recording the applied plan; observing the kernel again");
            self.stale = true;
            self.full = true;
        } else if ex.needs_observe() {
            // A new rule's handle is unknown: the next plan reads the kernel first.
            self.stale = true;
        }
        drop(taken);
        Ok(())
    }

    /// Settles the compiler, plans, and runs the plan in the kernel (not yet recorded in
    /// `current`: see [`Executed::record`]).
    ///
    /// A scoped plan whose before phase is large is made in two halves: the sets first,
    /// then the dispatch chains are settled and the batch planned on a second thread
    /// while this one sends the before phase to the kernel. The kernel sees the same
    /// steps in the same order as from one plan; only netfence's own work moves.
    fn plan_and_execute(&mut self, ex: &mut Executed) -> Result<Plan, Box<Failed>> {
        // The dispatch's own sets (buckets) first: the set plan must hold every set the
        // chains settled later look up. A failure there plans everything (`rebuild`).
        if !self.full {
            if let Err(e) = self.compiler.settle_sets() {
                self.rebuild(&e);
            }
        }
        let p = if self.full {
            self.settle();
            self.full_plan()?
        } else {
            self.scope.merge(self.compiler.take_set_scope());
            let mut p = plan_sets_scoped(
                &self.current,
                self.compiler.unsettled_ruleset(),
                &self.scope,
            )
            .map_err(Failed::before)?;
            if p.before.len() >= STAGE_MIN {
                match self.staged(p, ex) {
                    Ok(done) => return done,
                    // No second thread: the rest on this one.
                    Err(back) => p = back,
                }
            }
            match settle_and_plan_batch(&mut self.compiler, &mut self.scope, &self.current) {
                Ok((ops, sets_left)) => {
                    self.full_next |= sets_left;
                    p.batch = ops;
                    p
                }
                Err(Staged::Settle(e)) => {
                    self.rebuild(&e);
                    self.full_plan()?
                }
                Err(Staged::Plan(e)) => return Err(Failed::before(e)),
            }
        };
        match self.kernel.execute(&p, ex) {
            Ok(()) => Ok(p),
            Err(error) => Err(Failed::during(error, p)),
        }
    }

    /// Everything the compiler holds against everything `current` holds.
    fn full_plan(&mut self) -> Result<Plan, Box<Failed>> {
        self.scope.merge(self.compiler.take_scope());
        plan(&self.current, self.compiler.ruleset()).map_err(Failed::before)
    }

    /// The two-thread commit of [`Self::plan_and_execute`]; the set plan back when no
    /// thread could be started (nothing has run then).
    fn staged(
        &mut self,
        mut p: Plan,
        ex: &mut Executed,
    ) -> Result<Result<Plan, Box<Failed>>, Plan> {
        let Worker {
            kernel,
            compiler,
            current,
            scope,
            ..
        } = self;
        let current = &*current;
        let (made, before) = std::thread::scope(|s| {
            let helper = std::thread::Builder::new()
                .name("netfence-plan".into())
                .spawn_scoped(s, || settle_and_plan_batch(compiler, scope, current));
            let Ok(helper) = helper else {
                return (None, Ok(()));
            };
            let before = kernel.execute_before(&p, ex);
            let made = match helper.join() {
                Ok(made) => made,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (Some(made), before)
        });
        let Some(made) = made else {
            return Err(p);
        };
        let failed = |error, p| Ok(Err(Failed::during(error, p)));
        let (ops, sets_left) = match (before, made) {
            (Ok(()), Ok(made)) => made,
            // The batch (if made) is not sent: the before phase alone is fail-closed.
            (Err(error), made) => {
                if let Err(Staged::Settle(e)) = made {
                    self.rebuild(&e);
                }
                return failed(error, p);
            }
            (Ok(()), Err(Staged::Plan(error))) => return failed(error, p),
            (Ok(()), Err(Staged::Settle(e))) => {
                // A compiler bug: record the before phase, rebuild, and plan everything
                // from what the kernel now holds.
                self.rebuild(&e);
                if let Err(e) = ex.record(&p, &mut self.current) {
                    return Ok(Err(Failed::before(e)));
                }
                *ex = Executed::default();
                return Ok(self.plan_and_execute(ex));
            }
        };
        self.full_next |= sets_left;
        p.batch = ops;
        Ok(match self.kernel.execute(&p, ex) {
            Ok(()) => Ok(p),
            Err(error) => Err(Failed::during(error, p)),
        })
    }

    /// Reports a failed commit and schedules a retry. The kernel is read again right
    /// before the retry, not now: it may hold part of the plan or another writer's
    /// change, and reading it late keeps the window between that reading and the retried
    /// commit short, which is what lets netfence through between a busy writer's commits.
    fn failed(&mut self, e: &ruleset::Error, applied_some: bool) {
        self.shared.metrics.record_error();
        if e.is_retryable() {
            self.shared.metrics.record_conflict();
        }
        tracing::warn!(error = %e, retry_in = ?self.backoff, "commit failed; the kernel is fail-closed");
        let failures = self.last_error.as_ref().map_or(0, |l| l.failures) + 1;
        self.last_error = Some(CommitError {
            message: e.to_string(),
            errno: e.errno(),
            retryable: e.is_retryable(),
            failures,
        });
        if applied_some || e.is_retryable() {
            self.stale = true;
        }
        self.full = true;
        self.full_next = false;
        self.retry_at = Some(Instant::now() + self.backoff);
        // The retry plans everything, the deferred destroys too.
        self.deferred_at = None;
        self.backoff = (self.backoff * 2).min(self.config.retry_max);
    }

    fn observe(&mut self) -> Result<(), ruleset::Error> {
        match self
            .kernel
            .observe(&self.config.compiler.prefix, &self.tables)
        {
            Ok(rs) => {
                self.current = rs;
                self.stale = false;
                self.full = true;
                Ok(())
            }
            Err(e) => {
                self.stale = true;
                Err(e)
            }
        }
    }

    /// The cheap check, then (on a change) a full observation and a convergent commit.
    fn reconcile(&mut self) -> Result<ReconcileReport, Error> {
        if !self.ready {
            return Err(Error::NotReady);
        }
        self.reconcile_at = self.config.reconcile_interval.map(|i| Instant::now() + i);
        let drifted = self.stale || self.cheap_check().map_err(reconcile_error)?;
        if !drifted {
            self.shared.metrics.record_reconcile(0);
            return Ok(ReconcileReport::default());
        }
        let believed = std::mem::take(&mut self.current);
        if let Err(e) = self.observe() {
            self.current = believed;
            return Err(reconcile_error(e));
        }
        // The drift is what turns the kernel back into what netfence believed it held.
        let repairs = plan(&self.current, &believed).map_or(0, |p| p.cost());
        tracing::info!(repairs, "reconcile found drift");
        self.retry_at = None;
        // A repair that did not land is no repair: the caller hears why, and the engine
        // retries it as any failed commit.
        let landed = self.commit();
        self.shared
            .metrics
            .record_reconcile(if landed.is_ok() { repairs } else { 0 });
        landed.map_err(reconcile_error)?;
        Ok(ReconcileReport {
            dumped: true,
            repairs,
        })
    }

    /// Whether the kernel may differ from `current`: the nf_tables generation moved since
    /// netfence last saw it, or an owned set's size (or the set itself) changed.
    fn cheap_check(&mut self) -> Result<bool, ruleset::Error> {
        let g = self.kernel.read_generation()?;
        if Some(g) != self.kernel.generation() {
            return Ok(true);
        }
        let mut owned = 0;
        for h in self.kernel.ipset().headers()? {
            if !self.current.owns(&h.name) {
                continue;
            }
            owned += 1;
            // A set swapped in under netfence's name (`ipset swap`) shows in its
            // definition even when its size happens to match, and one with a timeout
            // or a netmask in its options: ipset changes don't move the nf_tables
            // generation, so the header is all this check has.
            match self.current.set(&h.name) {
                Some(s)
                    if s.len() == h.entries as usize
                        && h.set_type == Some(s.kind)
                        && h.family == Some(s.family)
                        && h.maxelem.unwrap_or(KERNEL_MAXELEM) == s.maxelem
                        && (s.unmodelled.is_some() || h.extras().is_empty()) => {}
                _ => return Ok(true),
            }
        }
        Ok(owned != self.current.sets().len())
    }

    /// Removes everything netfence owns, from a fresh observation.
    fn flush(&mut self) -> Result<(), Error> {
        let t0 = Instant::now();
        let f = self
            .kernel
            .flush(&self.config.compiler.prefix, &self.tables)
            .map_err(|source| Error::Kernel {
                op: "flushing",
                source,
            })?;
        self.shared
            .metrics
            .record_commit(t0.elapsed(), f.operations);
        if !f.left.is_empty() {
            return Err(Error::FlushIncomplete { left: f.left });
        }
        if !f.kept.is_empty() {
            tracing::warn!(
                kept = ?f.kept,
                "flush kept these chains, emptied: a rule outside netfence still jumps to them"
            );
        }
        tracing::info!(
            operations = f.operations,
            "flushed everything netfence owned"
        );
        Ok(())
    }

    /// Says the engine stopped. An agent that reads the status for its health would
    /// otherwise go on seeing a flushed or shut-down engine as ready, with deltas
    /// pending that had all completed with `Stopped`.
    fn publish_stopped(&self) {
        let mut s = self.shared.status.lock();
        s.ready = false;
        s.stopped = true;
        s.pending = 0;
    }

    fn publish(&self) {
        let mut s = self.shared.status.lock();
        s.ready = self.ready && self.converged;
        s.pending = self.waiting.len();
        s.deferred_destroys = self.deferred;
        s.last_error.clone_from(&self.last_error);
    }
}

/// A commit that failed: the error, and the plan when some of it may have run.
struct Failed {
    error: ruleset::Error,
    plan: Option<Plan>,
}

impl Failed {
    /// A failure before anything ran (planning).
    fn before(error: ruleset::Error) -> Box<Self> {
        Box::new(Self { error, plan: None })
    }

    /// A failure once `plan` may have partly run.
    fn during(error: ruleset::Error, plan: Plan) -> Box<Self> {
        Box::new(Self {
            error,
            plan: Some(plan),
        })
    }
}

/// The second half of a scoped plan, after its sets were taken and planned: settles the
/// dispatch chains, adds the chains they touched to `scope`, and plans the batch. On the
/// sync thread or, in a staged commit, on the second one. Also true when settling
/// touched a set, which can't happen (after `Compiler::settle_sets`, settling rewrites
/// chains only); the next plan is then a full one, which puts any such set right.
fn settle_and_plan_batch(
    compiler: &mut Compiler,
    scope: &mut Scope,
    current: &Ruleset,
) -> Result<(Vec<netfilter::nft::Op>, bool), Staged> {
    compiler.settle().map_err(Staged::Settle)?;
    let chains = compiler.take_scope();
    debug_assert!(chains.sets.is_empty() && chains.members.is_empty());
    let sets_left = !chains.sets.is_empty() || !chains.members.is_empty();
    scope.merge(chains);
    plan_batch_scoped(current, compiler.ruleset(), scope)
        .map(|ops| (ops, sets_left))
        .map_err(Staged::Plan)
}

/// What settling and planning the batch can fail at.
enum Staged {
    Settle(policy::Error),
    Plan(ruleset::Error),
}

fn reconcile_error(source: ruleset::Error) -> Error {
    Error::Kernel {
        op: "reconciling",
        source,
    }
}
