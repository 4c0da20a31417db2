//! Plans executed on a network namespace, and the kernel read back into the model.
//!
//! All I/O goes through `netfilter`; this module only sequences it. The kernel is the only
//! store of netfence's state: [`Kernel::observe`] rebuilds the model from dumps (rule
//! identities come from the rules' comments), so a restarted process adopts what an
//! earlier one left, and nothing is written to disk.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use netfilter::ipset::{self, CreateOptions, Exist, Ipset};
use netfilter::nft::{self, Op};
use netfilter::{NetlinkSocket, Netns};

use crate::error::Error;
use crate::model::{Chain, Entry, ForeignSet, IpSet, Polarity, Ruleset, TableId, KERNEL_MAXELEM};
use crate::plan::{apply_committed, apply_set_committed, Plan, SetOp, Step};

/// How often a set destroy refused as "in use" is retried, and how long apart at most: the
/// kernel releases an xt `set` match's reference after an RCU grace period, a few
/// milliseconds after the rule is deleted.
const DESTROY_TRIES: u32 = 40;
const DESTROY_BACKOFF_MAX: Duration = Duration::from_millis(25);

/// How many times a dump is retaken when another writer commits during it.
const OBSERVE_TRIES: u32 = 8;

/// What an applied plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Steps run.
    pub steps: usize,
    /// Operations in the nf_tables batch.
    pub batch_ops: usize,
    /// Bytes of the batch's one `sendmsg`.
    pub batch_bytes: usize,
    /// Set elements added or deleted.
    pub elements: usize,
    /// Sets that were still referenced after every retry: left in place (and in the
    /// state), to be destroyed by the next plan.
    pub deferred: Vec<String>,
}

/// What [`Kernel::execute`] has carried out of a plan, for [`Executed::record`] to write
/// into the state the plan was made from.
#[derive(Debug, Clone, Default)]
pub struct Executed {
    /// The figures of what ran.
    pub applied: Applied,
    /// The first step not (or not known to be) carried out.
    next: usize,
    /// The handles the kernel gave the batch's new rules, once the batch committed.
    handles: Vec<Option<u64>>,
    /// Whether some new rule's handle is unknown ([`netfilter::nft::Committed::incomplete`]).
    incomplete: bool,
    /// Whether changes past `next` may have landed: a member message that fails
    /// has applied the elements before the failing one, and the kernel goes on with
    /// the other messages of a pipelined run whatever one of them does; a batch whose
    /// replies were lost may have committed.
    partial: bool,
}

impl Executed {
    /// Whether the kernel may differ from the state the plan was made from: some step
    /// was carried out, or a failed one may have been in part.
    pub fn started(&self) -> bool {
        self.next > 0 || self.partial
    }

    /// Whether the record lacks the handle of some rule the batch added, so that the
    /// kernel must be read again before the next plan (which may need to delete or
    /// replace that rule). Never seen: see [`netfilter::nft::Committed::incomplete`].
    pub fn needs_observe(&self) -> bool {
        self.incomplete
    }

    /// Writes into `state` (the state the plan was made from, unchanged since) the steps
    /// of `plan` that were carried out, as [`Kernel::apply`] would have: member changes,
    /// set creations, the destroys the kernel did not defer, and the batch with the
    /// handles of its new rules.
    ///
    /// # Errors
    /// [`Error::Inapplicable`] if `plan` was not made from `state`.
    pub fn record(&self, plan: &Plan, state: &mut Ruleset) -> Result<(), Error> {
        for step in plan.steps().take(self.next) {
            match step {
                Step::Set(op) => self.record_set(op, state)?,
                Step::Batch(ops) => apply_committed(state, ops, &self.handles)?,
            }
        }
        Ok(())
    }

    /// Records one set step of the plan.
    fn record_set(&self, op: &SetOp, state: &mut Ruleset) -> Result<(), Error> {
        match op {
            // Still referenced a moment longer: the set stays, and the next plan
            // destroys it.
            SetOp::Destroy { name } if self.applied.deferred.iter().any(|d| d == name) => Ok(()),
            op => apply_set_committed(state, op),
        }
    }

    /// [`Self::record`], taking the plan: each step is dropped once recorded, so that a
    /// large plan's member lists are freed while `state` grows, not after it has. A full
    /// sync's plan holds every member of every set once more (about 8 MB per family at
    /// 10,000 pods and 1,000 policies); recorded from a borrow, the engine's peak held
    /// that plan and the whole recorded state at once.
    ///
    /// # Errors
    /// As [`Self::record`]. The steps after a failing one are dropped unrecorded.
    pub fn record_owned(&self, plan: Plan, state: &mut Ruleset) -> Result<(), Error> {
        let Plan {
            before,
            batch,
            after,
        } = plan;
        let mut left = self.next;
        self.record_sets(before, &mut left, state)?;
        if !batch.is_empty() && left > 0 {
            left -= 1;
            apply_committed(state, &batch, &self.handles)?;
        }
        drop(batch);
        self.record_sets(after, &mut left, state)
    }

    /// Records up to `left` of `ops` (counting them off), dropping each once recorded.
    fn record_sets(
        &self,
        ops: Vec<SetOp>,
        left: &mut usize,
        state: &mut Ruleset,
    ) -> Result<(), Error> {
        for op in ops {
            if *left == 0 {
                break;
            }
            *left -= 1;
            self.record_set(&op, state)?;
        }
        Ok(())
    }
}

/// How far [`Kernel::run`] goes.
#[derive(Clone, Copy)]
enum Until {
    /// To the end of the plan.
    End,
    /// To the end of the before phase, on purpose.
    Batch,
    /// Stop with [`Error::Stopped`] before this step (fault injection).
    Stop(usize),
}

/// What [`Kernel::flush`] removed.
#[derive(Debug, Clone)]
pub struct Flushed {
    /// The state found before the first attempt: what netfence owned.
    pub before: Ruleset,
    /// Operations applied over every attempt.
    pub operations: usize,
    /// Sets still referenced (so still there) after every attempt.
    pub left: Vec<String>,
    /// netfence's chains left in place, emptied, because a rule outside netfence still
    /// jumps to them (see [`crate::plan`]), as `family table name`.
    pub kept: Vec<String>,
}

/// How many times [`Kernel::flush`] observes and plans again: after another writer's
/// commit, or for set destroys the kernel deferred.
const FLUSH_TRIES: usize = 5;

/// netfence's handle on one network namespace's nf_tables and ipset.
///
/// It remembers the nf_tables generation its last observation (or its own last commit)
/// saw, and commits only on that generation: a batch planned on a state another writer
/// has since changed is refused whole ([`netfilter::Error::GenerationChanged`], which
/// [`Error::is_retryable`] reports), and the caller observes and plans again.
///
/// `!Send`: it holds netlink sockets bound to the thread that opened them.
#[derive(Debug)]
pub struct Kernel {
    nft: NetlinkSocket,
    ipset: Ipset,
    generation: Option<u32>,
    /// Whether [`Self::apply`] waits out a destroy refused as still referenced.
    patient_destroys: bool,
}

impl Kernel {
    /// Opens netfence's sockets in `netns`.
    ///
    /// # Errors
    /// [`Error::Netfilter`] when the namespace can't be entered (not root, no such
    /// namespace) or the kernel lacks nf_tables or ipset.
    pub fn open(netns: &Netns) -> Result<Self, Error> {
        let nft = NetlinkSocket::open(netns)?;
        let ipset = Ipset::open(netns)?;
        Ok(Self {
            nft,
            ipset,
            generation: None,
            patient_destroys: true,
        })
    }

    /// Whether [`Self::apply`] waits (up to about a second, with backoff) for a set whose
    /// last rule just went to be released, or reports it in [`Applied::deferred`] at the
    /// first refusal. The default waits. A caller that retries on its own schedule (the
    /// sync engine) turns waiting off, so that its commit, and every completion waiting on
    /// it, doesn't sleep through the kernel's release of the reference: 8 to 60 ms
    /// measured after a policy's rules go. [`Self::flush`] always waits.
    pub fn set_patient_destroys(&mut self, patient: bool) {
        self.patient_destroys = patient;
    }

    /// The namespace the handle works in.
    pub fn netns(&self) -> &Netns {
        self.nft.netns()
    }

    /// The nf_tables generation the handle's view is of, if it has one.
    pub fn generation(&self) -> Option<u32> {
        self.generation
    }

    /// Reads the kernel's current nf_tables generation (one round trip): the cheap check
    /// of whether anyone has committed since the last observation.
    ///
    /// # Errors
    /// [`Error::Netfilter`].
    pub fn read_generation(&mut self) -> Result<u32, Error> {
        Ok(nft::generation(&mut self.nft)?)
    }

    /// The ipset side of the handle, for cheap checks such as set sizes.
    pub fn ipset(&mut self) -> &mut Ipset {
        &mut self.ipset
    }

    /// Reads the kernel into a model owning `prefix`: every set, and the chains and rules
    /// of `tables` (tables not in the kernel are left out). Owned objects are decoded;
    /// foreign ones are recorded as opaque; rules in owned chains that netfence did not
    /// write are strays. A dump that another writer changed midway is taken again.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad prefix; [`Error::Netfilter`] when a dump fails, or when
    /// the generation kept changing over every retry.
    pub fn observe(&mut self, prefix: &str, tables: &[TableId]) -> Result<Ruleset, Error> {
        let mut last = 0;
        for _ in 0..OBSERVE_TRIES {
            let g0 = nft::generation(&mut self.nft)?;
            let rs = self.dump(prefix, tables)?;
            let g1 = nft::generation(&mut self.nft)?;
            if g0 == g1 {
                self.generation = Some(g0);
                return Ok(rs);
            }
            last = g1;
        }
        Err(Error::Netfilter(netfilter::Error::GenerationChanged {
            expected: last,
        }))
    }

    fn dump(&mut self, prefix: &str, tables: &[TableId]) -> Result<Ruleset, Error> {
        let mut rs = Ruleset::new(prefix)?;
        let listings = self.ipset.list_all()?;
        let by_index: HashMap<u16, String> = listings
            .iter()
            .filter_map(|l| Some((l.header.index?, l.header.name.clone())))
            .collect();
        for l in listings {
            let h = l.header;
            match (rs.owns(&h.name), h.set_type, h.family) {
                (true, Some(kind), Some(family)) => {
                    let mut s = IpSet::new(family, kind, Polarity::default());
                    s.maxelem = h.maxelem.unwrap_or(KERNEL_MAXELEM);
                    // Members that don't fit the set as netfence models it (an
                    // `icmp:echo-request` entry in a `hash:ip,port` set) are another
                    // writer's: the set is marked, not the observation failed, so that
                    // the planner can replace it.
                    let mut odd = l.unreadable;
                    for m in l.members {
                        if s.insert(m).is_err() {
                            odd += 1;
                        }
                    }
                    let mut extras = h.extras();
                    if odd > 0 {
                        extras.push(format!("{odd} members netfence does not write"));
                    }
                    if !extras.is_empty() {
                        s.unmodelled = Some(extras.join(", "));
                    }
                    rs.sets_mut().insert(h.name, s);
                }
                _ => rs.add_foreign_set(
                    &h.name,
                    ForeignSet {
                        type_name: h.type_name,
                    },
                ),
            }
        }
        let present: BTreeSet<TableId> = nft::list_tables(&mut self.nft, None)?
            .into_iter()
            .map(|t| TableId::new(t.family, t.name))
            .collect();
        let set_name = |i: u16| by_index.get(&i).cloned();
        for tid in tables.iter().filter(|t| present.contains(t)) {
            let chains = nft::list_chains(&mut self.nft, tid.family, &tid.name)?;
            let rules = nft::list_rules(&mut self.nft, tid.family, &tid.name, None, &set_name)?;
            let t = rs.add_table(tid.clone());
            for c in chains {
                t.chains.insert(c.name, Chain::new(c.base));
            }
            // Rules come grouped by chain, in order: classify each against the chain so
            // far (duplicates of one identity make the later ones strays).
            for r in rules {
                let Some(mut chain) = rs
                    .tables_mut()
                    .get_mut(tid)
                    .and_then(|t| t.chains.remove(&r.chain))
                else {
                    continue;
                };
                let handle = r.handle;
                let e = rs.classify(tid, &r.chain, &chain, r.rule.as_ref(), Some(handle), || {
                    format!(
                        "# handle {handle} in {}: not in the iptables vocabulary",
                        r.chain
                    )
                });
                let e = match r.rule {
                    None => with_raw_jump(e, &r.raw),
                    Some(_) => e,
                };
                chain.push(e);
                rs.tables_mut()
                    .get_mut(tid)
                    .expect("table added above")
                    .chains
                    .insert(r.chain, chain);
            }
        }
        Ok(rs)
    }

    /// Removes everything `prefix` owns in `tables` (its rules in built-in chains, its
    /// chains, its sets) and nothing else: observe, plan to an empty ruleset, apply, and
    /// again after a concurrent writer's commit or a deferred set destroy.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad prefix; the kernel's error when an attempt fails for a
    /// reason a retry can't cure, or the last attempt fails.
    pub fn flush(&mut self, prefix: &str, tables: &[TableId]) -> Result<Flushed, Error> {
        let empty = Ruleset::new(prefix)?;
        let mut flushed: Option<Flushed> = None;
        for attempt in 1..=FLUSH_TRIES {
            let mut current = self.observe(prefix, tables)?;
            let f = flushed.get_or_insert_with(|| Flushed {
                before: current.clone(),
                operations: 0,
                left: Vec::new(),
                kept: Vec::new(),
            });
            let p = crate::plan::plan(&current, &empty)?;
            f.kept = kept_chains(&current, &p);
            if p.is_empty() {
                f.left.clear();
                break;
            }
            let patient = std::mem::replace(&mut self.patient_destroys, true);
            let applied = self.apply(&p, &mut current);
            self.patient_destroys = patient;
            match applied {
                Ok(applied) => {
                    f.operations += p.cost();
                    f.left = applied.deferred;
                    if f.left.is_empty() {
                        break;
                    }
                }
                Err(e) if e.is_retryable() && attempt < FLUSH_TRIES => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(flushed.expect("at least one attempt"))
    }

    /// Runs `plan` and updates `state` (the state the plan was made from) to what the
    /// kernel now holds, with the handles it gave the new rules: [`Self::execute`], then
    /// [`Executed::record`].
    ///
    /// Consecutive member changes (ADD/DEL on any sets, all of one phase) go to the kernel
    /// in one round trip.
    ///
    /// On error, the steps before the failing one were applied, and `state` reflects them
    /// up to the start of the failing run of member changes; by the plan's ordering the
    /// kernel is fail-closed (see [`crate::plan`]). Observe again before planning anew: an
    /// ipset step that failed midway may have applied part of its elements, and the member
    /// changes after it in its run may have been applied.
    ///
    /// # Errors
    /// [`Error::Step`] naming the step and the kernel's error;
    /// [`Error::Inapplicable`] if `plan` was not made from `state`.
    pub fn apply(&mut self, plan: &Plan, state: &mut Ruleset) -> Result<Applied, Error> {
        self.apply_until(plan, state, usize::MAX)
    }

    /// As [`Self::apply`], but stops with [`Error::Stopped`] before step `limit` (from 0):
    /// the state a crash or failure at that point would leave. Tests use it to check the
    /// fail-closed invariant at every step.
    ///
    /// # Errors
    /// As [`Self::apply`], and [`Error::Stopped`].
    pub fn apply_until(
        &mut self,
        plan: &Plan,
        state: &mut Ruleset,
        limit: usize,
    ) -> Result<Applied, Error> {
        let mut ex = Executed::default();
        let ran = self.run(plan, &mut ex, plan.step_count(), Until::Stop(limit));
        // What ran is recorded even when a later step failed: the caller's state then
        // shows the kernel up to the failure.
        ex.record(plan, state)?;
        if ex.needs_observe() {
            let tables: Vec<TableId> = state.tables().keys().cloned().collect();
            let prefix = state.prefix().to_owned();
            *state = self.observe(&prefix, &tables)?;
        }
        ran.map(|()| ex.applied)
    }

    /// Runs `plan`'s steps in the kernel from where `ex` stopped (the first step, for a new
    /// [`Executed`]) to the end, without touching any model of the kernel: `ex` keeps
    /// what [`Executed::record`] needs to bring the plan's state up to date later.
    ///
    /// This is how a caller that others wait on commits: the kernel first, the
    /// bookkeeping (a burst's thousands of member changes, looked up in sets of thousands)
    /// once the waiters are told. On error, `ex` holds the steps known to be applied, as
    /// [`Self::apply`] describes.
    ///
    /// # Errors
    /// [`Error::Step`] naming the step and the kernel's error.
    pub fn execute(&mut self, plan: &Plan, ex: &mut Executed) -> Result<(), Error> {
        self.run(plan, ex, plan.step_count(), Until::End)
    }

    /// Runs only the before phase of `plan` (see [`crate::plan`]), from where `ex`
    /// stopped: the set creations and the closing member changes, which need nothing of
    /// the batch. A caller may run them while it is still making the batch on another
    /// thread, then put the batch in the plan and [`Self::execute`] the rest with the
    /// same `ex`. The plan must not gain or lose before-phase steps in between.
    ///
    /// # Errors
    /// As [`Self::execute`]; a step is numbered as if a batch followed.
    pub fn execute_before(&mut self, plan: &Plan, ex: &mut Executed) -> Result<(), Error> {
        let total = plan.before.len() + 1 + plan.after.len();
        self.run(plan, ex, total, Until::Batch)
    }

    /// Runs steps from `ex.next` on, as far as `until` says.
    fn run(
        &mut self,
        plan: &Plan,
        ex: &mut Executed,
        total: usize,
        until: Until,
    ) -> Result<(), Error> {
        let steps: Vec<Step<'_>> = plan.steps().collect();
        let limit = match until {
            Until::End => steps.len(),
            Until::Batch => plan.before.len(),
            Until::Stop(limit) => limit,
        };
        let mut i = ex.next;
        while i < steps.len() {
            if i >= limit {
                return match until {
                    Until::Stop(_) => Err(Error::Stopped { done: i, total }),
                    _ => Ok(()),
                };
            }
            // A run of member changes (one phase of the plan, on any number of sets) goes
            // in one round trip: any subset of a phase keeps the fail-closed invariant, so
            // the kernel going on after a failing message breaks nothing. A run never
            // crosses into the after phase, even with no batch between: its openings may
            // only land once every closing before them has.
            let phase_end = if i < plan.before.len() {
                plan.before.len()
            } else {
                steps.len()
            };
            let run = steps[i..phase_end.min(limit)]
                .iter()
                .take_while(|s| matches!(s, Step::Set(SetOp::Add { .. } | SetOp::Del { .. })))
                .count();
            if run > 1 {
                if let Err(e) = self.member_run(&steps[i..i + run], i, total, &mut ex.applied) {
                    ex.partial = true;
                    return Err(e);
                }
                i += run;
                ex.next = i;
                continue;
            }
            let fail = |source| Error::Step {
                step: i + 1,
                total,
                source,
            };
            match steps[i] {
                Step::Set(op) => {
                    if let Err(e) = self.set_op(op, &mut ex.applied) {
                        ex.partial |= matches!(op, SetOp::Add { .. } | SetOp::Del { .. });
                        return Err(fail(e));
                    }
                }
                Step::Batch(ops) => {
                    let committed = self.commit(ops).map_err(|e| {
                        // Replies were lost: the batch may have landed, so the record
                        // of the kernel must be read again before the next plan.
                        ex.partial |= e.outcome_unknown();
                        match chain_in_use(ops, &e) {
                            Some(chain) => Error::ChainInUse {
                                step: i + 1,
                                total,
                                chain,
                                source: Box::new(e),
                            },
                            None => fail(e),
                        }
                    })?;
                    if committed.incomplete {
                        tracing::warn!(
                            "the kernel's echoes did not bracket the batch's new rules; \
                             reading it again for their handles"
                        );
                    }
                    ex.handles = committed.handles;
                    ex.incomplete = committed.incomplete;
                    ex.applied.batch_ops = ops.len();
                    ex.applied.batch_bytes = committed.bytes;
                }
            }
            ex.applied.steps += 1;
            i += 1;
            ex.next = i;
        }
        Ok(())
    }

    /// Applies consecutive ADD/DEL steps (from step `first`) in one pipelined round trip.
    fn member_run(
        &mut self,
        run: &[Step<'_>],
        first: usize,
        total: usize,
        done: &mut Applied,
    ) -> Result<(), Error> {
        let ops: Vec<(ipset::wire::Adt, &str, &[ipset::Member])> = run
            .iter()
            .filter_map(|s| match s {
                Step::Set(SetOp::Add { name, members }) => {
                    Some((ipset::wire::Adt::Add, name.as_str(), members.as_slice()))
                }
                Step::Set(SetOp::Del { name, members }) => {
                    Some((ipset::wire::Adt::Del, name.as_str(), members.as_slice()))
                }
                _ => None,
            })
            .collect();
        // Idempotent, as for single steps: a retried plan may find its work done.
        if let Err((k, source)) = self.ipset.adt_pipelined(&ops, Exist::Ignore) {
            return Err(Error::Step {
                step: first + k + 1,
                total,
                source,
            });
        }
        for (_, _, members) in &ops {
            done.elements += members.len();
        }
        done.steps += run.len();
        Ok(())
    }

    /// Runs one set operation. A destroy the kernel deferred is listed in
    /// [`Applied::deferred`], and left out when the step is recorded.
    fn set_op(&mut self, op: &SetOp, done: &mut Applied) -> Result<(), netfilter::Error> {
        match op {
            SetOp::Create {
                name,
                family,
                kind,
                maxelem,
            } => {
                let opts = CreateOptions {
                    maxelem: Some(*maxelem),
                    ..CreateOptions::default()
                };
                self.ipset.create(name, *kind, *family, &opts)?;
            }
            SetOp::Add { name, members } => {
                // Idempotent: a retried plan may find elements already there, and an
                // element whose nomatch flag flips is re-added with the new flag.
                self.ipset.add(name, members, Exist::Ignore)?;
                done.elements += members.len();
            }
            SetOp::Del { name, members } => {
                self.ipset.del(name, members, Exist::Ignore)?;
                done.elements += members.len();
            }
            SetOp::Swap { name, with } => self.ipset.swap(name, with)?,
            SetOp::Destroy { name } => {
                let mut wait = Duration::from_millis(1);
                let tries = if self.patient_destroys {
                    DESTROY_TRIES
                } else {
                    1
                };
                for attempt in 0..tries {
                    match self.ipset.destroy(name, Exist::Ignore) {
                        Ok(()) => return Ok(()),
                        Err(e) if e.errno() == Some(ipset::IPSET_ERR_BUSY) => {
                            if attempt + 1 == tries {
                                break;
                            }
                            tracing::debug!(set = %name, attempt, "set still referenced; retrying");
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(DESTROY_BACKOFF_MAX);
                        }
                        Err(e) => return Err(e),
                    }
                }
                if self.patient_destroys {
                    tracing::warn!(set = %name, "set still referenced after every retry; left for the next plan");
                } else {
                    tracing::debug!(set = %name, "set still referenced; left for the next plan");
                }
                done.deferred.push(name.clone());
            }
        }
        Ok(())
    }

    /// Commits the batch on the observed generation.
    fn commit(&mut self, ops: &[Op]) -> Result<nft::Committed, netfilter::Error> {
        // xt `set` matches carry kernel set indexes: resolve them now, fresh, so that a
        // set destroyed and recreated by someone else is never referenced by a stale index.
        // All in one round trip: a burst's rules name hundreds of sets.
        let mut names: Vec<&str> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for op in ops {
            let rule = match op {
                Op::AddRule { rule, .. } | Op::ReplaceRule { rule, .. } => rule,
                _ => continue,
            };
            for s in rule.set_names() {
                if seen.insert(s) {
                    names.push(s);
                }
            }
        }
        let found = self.ipset.indexes_of(&names)?;
        let index: HashMap<&str, u16> = names.into_iter().zip(found).collect();
        let lookup = |n: &str| {
            index
                .get(n)
                .copied()
                .ok_or_else(|| netfilter::Error::Kernel {
                    op: format!("getting the index of set {n}"),
                    errno: libc::ENOENT,
                })
        };
        // Straight from the plan's operations: a full sync's batch holds every rule, and
        // a copy of it would only raise the peak.
        let committed = nft::commit_ops(ops, &mut self.nft, self.generation, &lookup)?;
        // A commit moves the generation by exactly one: expect that, so that a writer who
        // commits right after us is caught by our next batch rather than adopted unseen.
        self.generation = match self.generation {
            Some(g) => Some(match g.wrapping_add(1) {
                0 => 1,
                n => n,
            }),
            None => Some(nft::generation(&mut self.nft)?),
        };
        Ok(committed)
    }
}

/// The owned chains of `state` that `plan` leaves in place, as `family table name`.
fn kept_chains(state: &Ruleset, plan: &Plan) -> Vec<String> {
    let deleted: BTreeSet<(netfilter::Family, &str, &str)> = plan
        .batch
        .iter()
        .filter_map(|op| match op {
            Op::DelChain {
                family,
                table,
                chain,
            } => Some((*family, table.as_str(), chain.as_str())),
            _ => None,
        })
        .collect();
    state
        .owned_chains()
        .into_iter()
        .filter(|(t, c)| !deleted.contains(&(t.family, t.name.as_str(), c.as_str())))
        .map(|(t, c)| format!("{t} {c}"))
        .collect()
}

/// `e`, a rule outside the vocabulary (a native `nft` rule, say), with the chain its jump
/// or goto leads to: the planner must know it, or it would plan to delete a chain the
/// rule holds. The first such verdict wins; a verdict map's targets are not seen.
fn with_raw_jump(mut e: Entry, raw: &nft::RawRule) -> Entry {
    use nft::expr::{verdict, Expr};
    if let Entry::Foreign(o) | Entry::Stray(o) = &mut e {
        o.jump = nft::expr::decode_exprs(&raw.exprs)
            .ok()
            .into_iter()
            .flatten()
            .find_map(|x| match x {
                Expr::Verdict {
                    code: verdict::JUMP | verdict::GOTO,
                    chain,
                } => chain,
                _ => None,
            });
    }
    e
}

/// The chain, as `family table name`, when `e` is the kernel refusing one of `ops`'
/// chain deletions as still in use (`EBUSY`). The planner keeps every doomed chain that
/// an observed rule it leaves in place jumps to, and the batch commits only on the
/// observed generation, so what holds the chain is a rule whose jump the dump could not
/// show: someone else's, which no retry removes.
fn chain_in_use(ops: &[Op], e: &netfilter::Error) -> Option<String> {
    let netfilter::Error::Kernel {
        op: what,
        errno: libc::EBUSY,
    } = e
    else {
        return None;
    };
    ops.iter().find_map(|op| match op {
        Op::DelChain {
            family,
            table,
            chain,
        } if what.ends_with(&op.describe()) => Some(format!("{family} {table} {chain}")),
        _ => None,
    })
}
