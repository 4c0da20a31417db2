//! The planner: from what the kernel holds and what it should hold, the smallest ordered
//! sequence of operations, and its in-memory application.
//!
//! # Order
//! A plan has three phases, as DESIGN.md orders them:
//!
//! 1. **before**: create new sets and fill them; change the members of existing sets in
//!    the direction that closes (see below);
//! 2. **batch**: one atomic nf_tables transaction: tables and chains to create, rule
//!    replacements, deletions and insertions (among them the rules netfence did not write
//!    in each chain to delete), then deletions of the chains, each after those that jump
//!    to it. A chain is never deleted while a rule jumps to it: one that a rule the batch
//!    leaves in place still jumps to (a foreign rule) is kept, emptied, until a later plan
//!    finds it free;
//! 3. **after**: the remaining member changes, then destruction of the sets no rule
//!    references any more (a set is never destroyed while a rule references it).
//!
//! # The fail-closed invariant
//! Every state the kernel passes through while a plan applies, including the state left
//! when a step fails, allows no more than the old state before the batch commits, and no
//! more than the new state after it:
//!
//! * The batch is atomic, so every rule and chain is entirely old or entirely new.
//! * A set's members only move monotonically between the old and new contents, in the
//!   closing direction first. For a [`Polarity::Restricts`] set (more members, less
//!   traffic), additions go before the batch and removals after, so while old rules are
//!   live the set holds old ∪ new, and while new rules are live it shrinks from old ∪ new
//!   to new. For a [`Polarity::Grants`] set it is the reverse: removals first, additions
//!   last, so the set holds old ∩ new around the batch. `nomatch` elements of `hash:net`
//!   sets count the other way round (adding one removes addresses), and a flag that flips
//!   is placed by the direction it moves the matched addresses. For `hash:net`, whose
//!   longest matching prefix decides, this keeps the matched addresses between the old
//!   and new ones as well.
//! * New sets are created and filled before anything references them, so a new rule never
//!   sees a half-filled new set.
//!
//! So, when a set's polarity is true to how the rules use it, a failure at any step
//! leaves a state that allows a subset of what the old or the new state allows. The
//! polarity is the caller's statement; the planner can't infer it from arbitrary rules.
//!
//! # Minimality
//! Rules are matched by identity. Within a chain, the longest run of current rules
//! already in desired order is kept; between two kept rules, removed rules are replaced
//! in place by new ones where both exist, and the rest are deleted or inserted. So one
//! changed rule in a chain of 1,000 costs one replace, and a set that gains one member
//! costs one add of one element.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use netfilter::ipset::{Member, SetType};
use netfilter::nft::{ChainSpec, Op, Position, RuleRef};
use netfilter::Family;

use crate::error::Error;
use crate::model::{Chain, Entry, IpSet, MemberKey, OwnedRule, Polarity, Ruleset, Table, TableId};

/// One change to an ipset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOp {
    /// Create an empty set.
    Create {
        /// Name.
        name: String,
        /// Family.
        family: Family,
        /// Type.
        kind: SetType,
        /// Capacity.
        maxelem: u32,
    },
    /// Add members (an existing element takes the given `nomatch` flag).
    Add {
        /// Set name.
        name: String,
        /// The members.
        members: Vec<Member>,
    },
    /// Delete members.
    Del {
        /// Set name.
        name: String,
        /// The members.
        members: Vec<Member>,
    },
    /// Destroy a set.
    Destroy {
        /// Name.
        name: String,
    },
    /// Exchange two sets of the same type and family under their names (`ipset swap`):
    /// the rules that look `name` up see `with`'s set from then on, in one step. How a
    /// set that rules reference gets a new capacity.
    Swap {
        /// The set the rules look up.
        name: String,
        /// The replacement, which holds the old set afterwards.
        with: String,
    },
}

impl SetOp {
    /// The set the operation is on.
    pub fn set_name(&self) -> &str {
        match self {
            SetOp::Create { name, .. }
            | SetOp::Add { name, .. }
            | SetOp::Del { name, .. }
            | SetOp::Destroy { name }
            | SetOp::Swap { name, .. } => name,
        }
    }

    /// How many kernel elements or objects it changes.
    pub fn cost(&self) -> usize {
        match self {
            SetOp::Add { members, .. } | SetOp::Del { members, .. } => members.len(),
            _ => 1,
        }
    }
}

/// `ipset` restore syntax, one line per element.
impl fmt::Display for SetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetOp::Create {
                name,
                family,
                kind,
                maxelem,
            } => write!(
                f,
                "create {name} {kind} family {} maxelem {maxelem}",
                family.ipset_name()
            ),
            SetOp::Add { name, members } | SetOp::Del { name, members } => {
                let verb = if matches!(self, SetOp::Add { .. }) {
                    "add"
                } else {
                    "del"
                };
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{verb} {name} {m}")?;
                }
                Ok(())
            }
            SetOp::Destroy { name } => write!(f, "destroy {name}"),
            SetOp::Swap { name, with } => write!(f, "swap {name} {with}"),
        }
    }
}

/// One step of a plan, in execution order: a set operation, or the nf_tables batch.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// A set operation (before or after the batch).
    Set(&'a SetOp),
    /// The one atomic nf_tables batch.
    Batch(&'a [Op]),
}

impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Set(op) => match op {
                SetOp::Add { name, members } => write!(f, "add {} to {name}", members.len()),
                SetOp::Del { name, members } => {
                    write!(f, "delete {} from {name}", members.len())
                }
                op => write!(f, "{op}"),
            },
            Step::Batch(ops) => write!(f, "nf_tables batch of {} operations", ops.len()),
        }
    }
}

/// An ordered plan: set operations, one nf_tables batch, set operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Before the batch: set creations and the closing member changes.
    pub before: Vec<SetOp>,
    /// The atomic nf_tables batch.
    pub batch: Vec<Op>,
    /// After the batch: the opening member changes, then set destructions.
    pub after: Vec<SetOp>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.batch.is_empty() && self.after.is_empty()
    }

    /// The steps in execution order (the batch is one step, and is left out when empty).
    pub fn steps(&self) -> impl Iterator<Item = Step<'_>> {
        let batch = (!self.batch.is_empty()).then_some(Step::Batch(&self.batch));
        self.before
            .iter()
            .map(Step::Set)
            .chain(batch)
            .chain(self.after.iter().map(Step::Set))
    }

    /// Number of steps.
    pub fn step_count(&self) -> usize {
        self.before.len() + usize::from(!self.batch.is_empty()) + self.after.len()
    }

    /// The size of the change: elements added or deleted, sets created or destroyed, and
    /// nf_tables operations.
    pub fn cost(&self) -> usize {
        self.before
            .iter()
            .chain(&self.after)
            .map(SetOp::cost)
            .sum::<usize>()
            + self.batch.len()
    }

    /// Applies the whole plan to a copy of `state`, checking every step as the kernel
    /// would (see [`apply_step`]).
    ///
    /// # Errors
    /// [`Error::Inapplicable`] for the first step the kernel would refuse.
    pub fn apply_in_memory(&self, state: &Ruleset) -> Result<Ruleset, Error> {
        let mut s = state.clone();
        for step in self.steps() {
            apply_step(&mut s, step, None)?;
        }
        Ok(s)
    }
}

/// The plan as a human reads it: `ipset` lines, then the batch, then `ipset` lines.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.before {
            writeln!(f, "ipset {}", op.to_string().replace('\n', "\nipset "))?;
        }
        if !self.batch.is_empty() {
            writeln!(f, "nft batch ({} operations):", self.batch.len())?;
            for op in &self.batch {
                writeln!(f, "  {}", op.describe())?;
            }
        }
        for op in &self.after {
            writeln!(f, "ipset {}", op.to_string().replace('\n', "\nipset "))?;
        }
        Ok(())
    }
}

/// The objects a change may have touched: chains (by table and name) and sets. Planning
/// within a scope looks at nothing else, so its cost follows the size of the change, not
/// of the ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Chains to compare.
    pub chains: BTreeSet<(TableId, String)>,
    /// Sets to compare whole.
    pub sets: BTreeSet<String>,
    /// Sets of which only these members may differ (their `nomatch` flags aside): a
    /// caller that knows which members it changed lets the planner compare just those,
    /// so a one-pod change costs the same in a set of 10 as in one of 10,000. A set also
    /// in [`Self::sets`], or new, or redefined, is compared whole.
    ///
    /// Each list is sorted and without repeats ([`Self::member`] and [`Self::merge`]
    /// keep it so; the planner does not rely on it). A vector, not a tree: a burst
    /// names thousands of members in each of a thousand sets, and building trees of them
    /// was a share of the commit's time in the allocator.
    pub members: BTreeMap<String, Vec<Member>>,
}

impl Scope {
    /// Adds a chain.
    pub fn chain(&mut self, table: &TableId, name: &str) -> &mut Self {
        self.chains.insert((table.clone(), name.to_owned()));
        self
    }

    /// Adds a set.
    pub fn set(&mut self, name: &str) -> &mut Self {
        self.sets.insert(name.to_owned());
        self
    }

    /// Adds one member of a set.
    pub fn member(&mut self, set: &str, member: Member) -> &mut Self {
        if let Some(m) = self.members.get_mut(set) {
            if let Err(at) = m.binary_search(&member) {
                m.insert(at, member);
            }
        } else {
            self.members.insert(set.to_owned(), vec![member]);
        }
        self
    }

    /// Adds members of a set, sorted and without repeats (as [`Self::members`] keeps
    /// them), in one merge rather than one insert each.
    pub fn add_members(&mut self, set: &str, sorted: Vec<Member>) -> &mut Self {
        debug_assert!(sorted.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        match self.members.get_mut(set) {
            Some(have) => merge_sorted(have, sorted),
            None => {
                self.members.insert(set.to_owned(), sorted);
            }
        }
        self
    }

    /// Adds everything in `other`.
    ///
    /// The larger tree of each pair is kept and the smaller inserted into it: the sync
    /// layer merges a burst's scope (tens of thousands of members) into the few sets a
    /// last commit left over, and inserting the burst's members one by one into an
    /// empty scope was 0.8 ms of a 1,000-delta burst at 10,000 pods.
    pub fn merge(&mut self, other: Scope) {
        fn union<T: Ord>(into: &mut BTreeSet<T>, mut from: BTreeSet<T>) {
            if into.len() < from.len() {
                std::mem::swap(into, &mut from);
            }
            into.extend(from);
        }
        union(&mut self.chains, other.chains);
        union(&mut self.sets, other.sets);
        if self.members.len() < other.members.len() {
            let mine = std::mem::replace(&mut self.members, other.members);
            for (set, members) in mine {
                merge_sorted(self.members.entry(set).or_default(), members);
            }
        } else {
            for (set, members) in other.members {
                merge_sorted(self.members.entry(set).or_default(), members);
            }
        }
    }

    /// Whether nothing is in scope.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.members.is_empty()
    }
}

/// Merges sorted, repeat-free `from` into sorted, repeat-free `into`.
fn merge_sorted(into: &mut Vec<Member>, from: Vec<Member>) {
    if from.is_empty() {
        return;
    }
    if into.is_empty() {
        *into = from;
        return;
    }
    let mine = std::mem::take(into);
    into.reserve_exact(mine.len() + from.len());
    let (mut a, mut b) = (mine.into_iter().peekable(), from.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        into.extend(next);
    }
}

/// The plan that turns `current` into `desired`. Pure and deterministic.
///
/// `current` is normally observed from the kernel: rules the plan deletes, replaces or
/// inserts next to need their handles. Foreign objects in `current` are never touched,
/// and `desired` holds no foreign objects that matter (its foreign sets and foreign rules
/// are ignored).
///
/// # Errors
/// [`Error::Invalid`] when `desired` is inconsistent or the prefixes differ;
/// [`Error::SetRedefined`] when a referenced set must change type, family or capacity;
/// [`Error::NoHandle`] when a rule to change has no handle.
pub fn plan(current: &Ruleset, desired: &Ruleset) -> Result<Plan, Error> {
    plan_in(current, desired, None)
}

/// [`plan`] restricted to the chains and sets of `scope`: what a caller that knows which
/// objects it changed (the sync layer) uses, in time proportional to the change. Objects
/// outside the scope are assumed equal in both states; a chain or set in scope is
/// planned exactly as [`plan`] would.
///
/// # Errors
/// As [`plan`], for the objects in scope.
pub fn plan_scoped(current: &Ruleset, desired: &Ruleset, scope: &Scope) -> Result<Plan, Error> {
    plan_in(current, desired, Some(scope))
}

/// The set phases of [`plan_scoped`] alone (`before` and `after`; the batch is left
/// empty), from the sets of `scope`.
///
/// With [`plan_batch_scoped`] over the chains of the same change, it makes exactly the
/// plan [`plan_scoped`] makes: the two halves read the two states and nothing else. A
/// caller can therefore send this half's before phase to the kernel
/// ([`crate::Kernel::execute_before`]) while it is still making the batch, as long as
/// the sets of `desired` don't change meanwhile.
///
/// # Errors
/// As [`plan_scoped`], for the sets in scope.
pub fn plan_sets_scoped(
    current: &Ruleset,
    desired: &Ruleset,
    scope: &Scope,
) -> Result<Plan, Error> {
    same_prefix(current, desired)?;
    let mut p = Plan::default();
    plan_sets(current, desired, Some(scope), &mut p)?;
    Ok(p)
}

/// The nf_tables batch of [`plan_scoped`] alone, from the chains of `scope`: see
/// [`plan_sets_scoped`].
///
/// # Errors
/// As [`plan_scoped`], for the chains in scope.
pub fn plan_batch_scoped(
    current: &Ruleset,
    desired: &Ruleset,
    scope: &Scope,
) -> Result<Vec<Op>, Error> {
    same_prefix(current, desired)?;
    for (t, c) in &scope.chains {
        desired.validate_chain(t, c)?;
    }
    let mut ops = Vec::new();
    plan_batch(current, desired, Some(scope), &mut ops)?;
    Ok(ops)
}

fn same_prefix(current: &Ruleset, desired: &Ruleset) -> Result<(), Error> {
    if current.prefix() == desired.prefix() {
        return Ok(());
    }
    Err(Error::invalid(
        "desired ruleset",
        format!(
            "owns prefix {:?} but the current state was read for {:?}",
            desired.prefix(),
            current.prefix()
        ),
    ))
}

fn plan_in(current: &Ruleset, desired: &Ruleset, scope: Option<&Scope>) -> Result<Plan, Error> {
    same_prefix(current, desired)?;
    match scope {
        None => desired.validate()?,
        Some(s) => {
            for (t, c) in &s.chains {
                desired.validate_chain(t, c)?;
            }
        }
    }
    let mut p = Plan::default();
    plan_sets(current, desired, scope, &mut p)?;
    plan_batch(current, desired, scope, &mut p.batch)?;
    Ok(p)
}

/// Which way a member change moves the addresses a set matches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Grow,
    Shrink,
}

/// A set to plan: its name, its desired state, and the members the scope hints at
/// (`None`: compare it whole).
type ScopedSet<'a> = (&'a String, &'a IpSet, Option<&'a Vec<Member>>);

/// The desired sets a scope names, in name order, each with its hinted members unless
/// the scope asks for the whole set: one walk of the scope's two sorted lists, and one
/// lookup of each name in `desired`. Looking each name up in every map it may be in
/// (the scope's two, `desired` twice) was a quarter of the set planner's time at 10,000
/// pods, most of it comparing names.
fn scoped_sets<'a>(desired: &'a Ruleset, scope: &'a Scope) -> Vec<ScopedSet<'a>> {
    let mut whole = scope.sets.iter().peekable();
    let mut hinted = scope.members.iter().peekable();
    let mut out = Vec::with_capacity(scope.sets.len() + scope.members.len());
    loop {
        let (name, members) = match (whole.peek(), hinted.peek()) {
            (None, None) => break,
            (Some(w), Some((h, _))) if w == h => {
                // Whole wins over hinted.
                hinted.next();
                (whole.next().expect("peeked"), None)
            }
            (Some(w), Some((h, _))) if w > h => {
                let (h, m) = hinted.next().expect("peeked");
                (h, Some(m))
            }
            (Some(_), _) => (whole.next().expect("peeked"), None),
            (None, Some(_)) => {
                let (h, m) = hinted.next().expect("peeked");
                (h, Some(m))
            }
        };
        if let Some(d) = desired.set(name) {
            out.push((name, d, members));
        }
    }
    out
}

fn plan_sets(
    current: &Ruleset,
    desired: &Ruleset,
    scope: Option<&Scope>,
    p: &mut Plan,
) -> Result<(), Error> {
    let names = match scope {
        None => desired.sets().iter().map(|(n, d)| (n, d, None)).collect(),
        Some(s) => scoped_sets(desired, s),
    };
    // Sets to create, filled after the loop in the order the kernel should index them.
    let mut new_sets: Vec<(&String, &IpSet)> = Vec::new();
    // Leftover replacements destroyed before the batch: not again after it.
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    // Which sets rules look up: a walk of every rule, so made once, and only for a plan
    // that redefines a set (every set, once, after an upgrade that changed capacities).
    let mut referenced: Option<BTreeMap<&str, usize>> = None;
    let mut keys: Vec<MemberKey> = Vec::new();
    let mut moves: Vec<(usize, usize, Member)> = Vec::new();
    for (name, d, hinted) in names {
        if current.foreign_sets().contains_key(name) {
            return Err(Error::invalid(
                format!("set {name}"),
                "the name is taken by a set of a type netfence does not manage; destroy it first",
            ));
        }
        let Some(c) = current.set(name) else {
            new_sets.push((name, d));
            continue;
        };
        if !c.same_definition(d) {
            let refs = referenced.get_or_insert_with(|| current.set_references());
            if !refs.contains_key(name.as_str()) {
                // Nothing looks it up, so it can go and come back before the batch.
                p.before.push(SetOp::Destroy { name: name.clone() });
                new_sets.push((name, d));
                continue;
            }
            if (c.kind, c.family) != (d.kind, d.family) {
                return Err(Error::SetRedefined {
                    name: name.clone(),
                    from: c.definition(),
                    to: d.definition(),
                });
            }
            // Same type and family, but another capacity (a set made by an older
            // netfence), or options netfence never writes (another writer's set, with
            // a timeout or a netmask, or members netfence can't represent): a copy of
            // what the set holds now, as netfence models it and with the desired
            // definition, is swapped in under the rules. For a capacity alone no
            // packet sees a change of content; for the rest, only what netfence can't
            // represent goes (expiry, masking, another writer's odd entries). The
            // member changes below then go to the copy, in their phases as usual.
            let scratch = desired.set_name(&format!("_redefine:{name}"));
            if desired.set(&scratch).is_some() {
                return Err(Error::invalid(
                    format!("set {name}"),
                    format!("its replacement's name {scratch} is taken by a desired set"),
                ));
            }
            if current.set(&scratch).is_some() {
                // Left by a commit that failed half way; nothing looks it up.
                p.before.push(SetOp::Destroy {
                    name: scratch.clone(),
                });
                replaced.insert(scratch.clone());
            }
            p.before.push(SetOp::Create {
                name: scratch.clone(),
                family: d.family,
                kind: d.kind,
                maxelem: d.maxelem,
            });
            let mut fill: Vec<Member> = c.members().collect();
            if d.polarity == Polarity::Restricts {
                // A set that restricts closes first: what it must hold goes into the copy
                // too, before the copy goes under the rules. Otherwise replacing a set
                // whose options matched more than its members (a netmask) would let
                // through, between the swap and the adds, what both states restrict.
                let mut missing: Vec<(MemberKey, bool)> = d
                    .entries()
                    .iter()
                    .filter(|(k, _)| !c.entries().contains_key(k))
                    .collect();
                missing.sort_unstable();
                fill.extend(missing.into_iter().map(|(k, nomatch)| k.member(nomatch)));
            }
            if !fill.is_empty() {
                p.before.push(SetOp::Add {
                    name: scratch.clone(),
                    members: fill,
                });
            }
            p.before.push(SetOp::Swap {
                name: name.clone(),
                with: scratch.clone(),
            });
            p.before.push(SetOp::Destroy { name: scratch });
        }
        let mut changes: [[Vec<Member>; 2]; 2] = Default::default(); // [dir][add=0/del=1]
        let slot = |dir: Dir| usize::from(dir == Dir::Shrink);
        // A new element, or a flag flip (an add with the new flag): a matching element
        // grows the set, a nomatch one shrinks it. A removed one the reverse.
        let added = |k: &MemberKey, dflag: bool| match c.entries().get(k) {
            Some(cflag) if cflag == dflag => None,
            _ => Some((if dflag { Dir::Shrink } else { Dir::Grow }, k.member(dflag))),
        };
        let removed = |k: &MemberKey, cflag: bool| {
            (if cflag { Dir::Grow } else { Dir::Shrink }, k.member(cflag))
        };
        match hinted {
            // Only the hinted keys, in key order as the whole comparison would give them.
            Some(members) => {
                // A vector, sorted and deduplicated, is cheaper to build than a tree,
                // and the sort has little to do: `members` comes sorted, and its keys
                // only merge a network's match and nomatch members.
                // Scratch kept across sets: thousands of sets each allocating and
                // freeing two buffers were a large share of the planner's time in
                // glibc's allocator.
                keys.clear();
                keys.extend(
                    members
                        .iter()
                        .filter_map(|m| d.key(*m).or_else(|| c.key(*m))),
                );
                keys.sort_unstable();
                keys.dedup();
                // One lookup per side and key: in sets of thousands the lookups are
                // cache misses, most of the planner's time in a burst at 10,000 pods.
                // Adds and removals go to separate lists, each still in key order,
                // each allocated once at its size: growing thousands of lists by
                // doubling was a tenth of the planner's time in glibc's allocator.
                moves.clear();
                let mut sizes = [[0usize; 2]; 2];
                for k in &keys {
                    let (dir, side, m) = match (d.entries().get(k), c.entries().get(k)) {
                        (Some(dflag), cflag) if cflag != Some(dflag) => {
                            let dir = if dflag { Dir::Shrink } else { Dir::Grow };
                            (slot(dir), 0, k.member(dflag))
                        }
                        (None, Some(cflag)) => {
                            let (dir, m) = removed(k, cflag);
                            (slot(dir), 1, m)
                        }
                        _ => continue,
                    };
                    sizes[dir][side] += 1;
                    moves.push((dir, side, m));
                }
                for (lists, sizes) in changes.iter_mut().zip(sizes) {
                    for (list, n) in lists.iter_mut().zip(sizes) {
                        list.reserve_exact(n);
                    }
                }
                for &(dir, side, m) in &moves {
                    changes[dir][side].push(m);
                }
            }
            None => {
                for (k, dflag) in d.entries().iter() {
                    if let Some((dir, m)) = added(&k, dflag) {
                        changes[slot(dir)][0].push(m);
                    }
                }
                for (k, cflag) in c.entries().iter() {
                    if !d.entries().contains_key(&k) {
                        let (dir, m) = removed(&k, cflag);
                        changes[slot(dir)][1].push(m);
                    }
                }
                // The sets are hashed: put each list in key order, as the hinted path
                // gives it, so that a plan is the same whichever way it was made. A
                // member's key is found by checking it against its set, so once each.
                for list in changes.iter_mut().flatten() {
                    list.sort_by_cached_key(|m| d.key(*m).or_else(|| c.key(*m)));
                }
            }
        }
        // The closing direction goes first.
        let first = match d.polarity {
            Polarity::Restricts => Dir::Grow,
            Polarity::Grants => Dir::Shrink,
        };
        let second = if first == Dir::Grow {
            Dir::Shrink
        } else {
            Dir::Grow
        };
        for (dir, out) in [(first, &mut p.before), (second, &mut p.after)] {
            let [adds, dels] = std::mem::take(&mut changes[slot(dir)]);
            if !adds.is_empty() {
                out.push(SetOp::Add {
                    name: name.clone(),
                    members: adds,
                });
            }
            if !dels.is_empty() {
                out.push(SetOp::Del {
                    name: name.clone(),
                    members: dels,
                });
            }
        }
    }
    // The kernel looks a set up by name with a linear scan of its set slots, which it
    // fills in creation order, so every member change costs about 12 ns per set in a lower
    // slot (measured: 8 us per ADD round trip at slot 0, 33 us at slot 1,999). A pod delta
    // touches a set about as often as the set holds pods: the largest go first.
    new_sets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(b.0)));
    // Every create, then every fill: the fills are then one run of member changes, which
    // the executor sends in one round trip.
    for (name, d) in &new_sets {
        p.before.push(SetOp::Create {
            name: (*name).clone(),
            family: d.family,
            kind: d.kind,
            maxelem: d.maxelem,
        });
    }
    for (name, d) in new_sets.into_iter().filter(|(_, d)| !d.is_empty()) {
        p.before.push(SetOp::Add {
            name: name.clone(),
            members: d.members().collect(),
        });
    }
    let gone: Vec<&String> = match scope {
        None => current.sets().keys().collect(),
        Some(s) => s.sets.iter().filter(|n| current.set(n).is_some()).collect(),
    };
    for name in gone {
        if desired.set(name).is_none() && !replaced.contains(name) {
            p.after.push(SetOp::Destroy { name: name.clone() });
        }
    }
    Ok(())
}

fn plan_batch(
    current: &Ruleset,
    desired: &Ruleset,
    scope: Option<&Scope>,
    ops: &mut Vec<Op>,
) -> Result<(), Error> {
    let empty = Chain::default();
    let mut chain_adds = Vec::new();
    let mut rule_ops = Vec::new();
    let mut chain_dels = Vec::new();
    let marker = desired.marker();
    let table_ids: BTreeSet<&TableId> = match scope {
        None => current
            .tables()
            .keys()
            .chain(desired.tables().keys())
            .collect(),
        Some(s) => s.chains.iter().map(|(t, _)| t).collect(),
    };
    for tid in table_ids {
        let cur_t = current.table(tid);
        let des_t = desired.table(tid);
        if let Some(dt) = des_t {
            if cur_t.is_none() && !dt.chains.is_empty() {
                ops.push(Op::AddTable {
                    family: tid.family,
                    table: tid.name.clone(),
                });
            }
        }
        let names: BTreeSet<&String> = match scope {
            None => cur_t
                .into_iter()
                .flat_map(|t| t.chains.keys())
                .chain(des_t.into_iter().flat_map(|t| t.chains.keys()))
                .collect(),
            Some(s) => s
                .chains
                .range((tid.clone(), String::new())..)
                .take_while(|(t, _)| t == tid)
                .map(|(_, n)| n)
                .collect(),
        };
        let mut doomed = Vec::new();
        let table_ops = rule_ops.len();
        for name in names {
            let cur = cur_t.and_then(|t| t.chains.get(name));
            let des = des_t.and_then(|t| t.chains.get(name));
            let owned = desired.owns(name);
            match (cur, des) {
                (None, Some(d)) => {
                    chain_adds.push(Op::AddChain {
                        family: tid.family,
                        table: tid.name.clone(),
                        chain: ChainSpec {
                            name: name.clone(),
                            base: d.base,
                        },
                    });
                    diff_chain(tid, name, &empty, d, owned, marker, &mut rule_ops)?;
                }
                (Some(c), Some(d)) => {
                    if owned && c.base != d.base {
                        return Err(Error::invalid(
                            format!("chain {tid} {name}"),
                            "changes its hook, priority or policy; give the new chain a new name",
                        ));
                    }
                    diff_chain(tid, name, c, d, owned, marker, &mut rule_ops)?;
                }
                (Some(c), None) if owned => doomed.push((name.as_str(), c)),
                (Some(c), None) => diff_chain(tid, name, c, &empty, false, marker, &mut rule_ops)?,
                (None, None) => {}
            }
        }
        // A doomed chain still jumped to by a rule the batch leaves in place is emptied
        // and kept (see `still_jumped_to`).
        let kept = match cur_t {
            Some(t) if !doomed.is_empty() => still_jumped_to(t, &doomed, &rule_ops[table_ops..]),
            _ => BTreeSet::new(),
        };
        // A DelChain takes the chain's rules with it, and the chains go in an order in
        // which each follows the doomed chains whose own rules jump to it. Rules netfence
        // did not write are not in that order (an admin's `-A nf-b -j nf-a` between two
        // doomed chains held its target, and the kernel refused the whole batch on every
        // retry), so they go one by one first, among the rule operations, as does every
        // rule of a kept chain. Deleting netfence's own rules one by one too would be a
        // third more operations in a 1,000-delta burst's batch, for nothing.
        for (name, c) in &doomed {
            let emptied = kept.contains(name);
            for e in c.entries() {
                if emptied || !matches!(e, Entry::Owned(_)) {
                    rule_ops.push(Op::DelRule {
                        family: tid.family,
                        table: tid.name.clone(),
                        chain: (*name).to_owned(),
                        handle: need_handle(e, tid, name)?,
                    });
                }
            }
        }
        for name in delete_order(&doomed) {
            if kept.contains(name) {
                continue;
            }
            chain_dels.push(Op::DelChain {
                family: tid.family,
                table: tid.name.clone(),
                chain: name.to_owned(),
            });
        }
    }
    ops.extend(chain_adds);
    ops.extend(rule_ops);
    ops.extend(chain_dels);
    Ok(())
}

/// Chains to delete, each after the chains whose owned rules jump to it (a chain's rules
/// go with it; any other jump is removed earlier in the batch).
fn delete_order<'a>(doomed: &[(&'a str, &'a Chain)]) -> Vec<&'a str> {
    let names: BTreeSet<&str> = doomed.iter().map(|(n, _)| *n).collect();
    let mut indeg: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (n, c) in doomed {
        let targets: BTreeSet<&str> = c.jump_targets().filter(|t| names.contains(t)).collect();
        for t in targets {
            edges.entry(n).or_default().push(t);
            if let Some(d) = indeg.get_mut(t) {
                *d += 1;
            }
        }
    }
    let mut ready: BTreeSet<&str> = indeg
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut out = Vec::with_capacity(names.len());
    while let Some(n) = ready.pop_first() {
        out.push(n);
        for t in edges.get(n).into_iter().flatten() {
            let d = indeg.get_mut(t).expect("edge to a doomed chain");
            *d -= 1;
            if *d == 0 {
                ready.insert(t);
            }
        }
    }
    // The kernel refuses jump loops, so everything is ordered; if not, still delete all.
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// The doomed chains that a rule this batch leaves in place still jumps to: a foreign rule
/// (say `-A DOCKER-USER -j nf-egress`) or a stray, which the batch does not delete. Owned
/// rules are not looked at: a valid desired state jumps only to its own chains, so every
/// owned jump to a doomed chain is deleted or replaced in the batch, and the walk stays
/// a check of each rule's kind. `ops` are the batch's rule operations in the table.
///
/// Such a chain is kept, emptied by the batch, rather than deleted: the kernel would
/// refuse the DelChain, and with it the whole batch, on every retry, so nothing else
/// would ever land. An empty user chain returns at once to the rule after the jump, so
/// the kept chain enforces nothing, which is what its deletion meant; the first plan
/// after the jump goes deletes it.
fn still_jumped_to<'a>(
    table: &Table,
    doomed: &[(&'a str, &Chain)],
    ops: &[Op],
) -> BTreeSet<&'a str> {
    let names: BTreeSet<&'a str> = doomed.iter().map(|(n, _)| *n).collect();
    let deleted: HashSet<(&str, u64)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::DelRule { chain, handle, .. } | Op::ReplaceRule { chain, handle, .. } => {
                Some((chain.as_str(), *handle))
            }
            _ => None,
        })
        .collect();
    let mut kept = BTreeSet::new();
    for (cname, c) in &table.chains {
        if !c.has_opaque_jumps() || names.contains(cname.as_str()) {
            continue;
        }
        for e in c.entries() {
            let (Entry::Foreign(o) | Entry::Stray(o)) = e else {
                continue;
            };
            let Some(&doomed_name) = o.jump.as_deref().and_then(|t| names.get(t)) else {
                continue;
            };
            let goes = e
                .handle()
                .is_some_and(|h| deleted.contains(&(cname.as_str(), h)));
            if !goes {
                kept.insert(doomed_name);
            }
        }
    }
    kept
}

fn need_handle(e: &Entry, tid: &TableId, chain: &str) -> Result<u64, Error> {
    e.handle().ok_or_else(|| Error::NoHandle {
        what: match e {
            Entry::Owned(r) => format!("{} in chain {tid} {chain}", r.id),
            Entry::Foreign(o) | Entry::Stray(o) => format!("`{}` in chain {tid} {chain}", o.text),
        },
    })
}

/// The rule operations that turn chain `cur` into `des` (owned rules only).
///
/// In an owned chain every current entry is netfence's to keep or remove. In a foreign
/// (built-in) chain, netfence's rules form a block at its head, so that its verdicts come
/// before anyone else's; owned rules found further down are removed and re-inserted in
/// the block.
fn diff_chain(
    tid: &TableId,
    name: &str,
    cur: &Chain,
    des: &Chain,
    owned_chain: bool,
    marker: &str,
    ops: &mut Vec<Op>,
) -> Result<(), Error> {
    // Another netfence instance's rules in a built-in chain are looked through, neither
    // kept behind this block nor deleted: each instance keeps its own block ahead of the
    // other writers' rules, wherever the other instance's block is.
    let entries: Vec<&Entry> = cur
        .entries()
        .iter()
        .filter(|e| owned_chain || !matches!(e, Entry::Foreign(o) if o.peer))
        .collect();
    // Most chains are unchanged: the same owned rules in the same order, nothing else
    // (foreign rules after them in a built-in chain are fine).
    let want_n = des.owned().count();
    let unchanged = entries.len() >= want_n
        && entries
            .iter()
            .zip(des.owned())
            .all(|(e, d)| e.owned().is_some_and(|r| r.id == d.id))
        && entries[want_n..]
            .iter()
            .all(|e| !owned_chain && matches!(e, Entry::Foreign(_)));
    if unchanged {
        return Ok(());
    }
    let block_end = if owned_chain {
        entries.len()
    } else {
        entries
            .iter()
            .position(|e| matches!(e, Entry::Foreign(_)))
            .unwrap_or(entries.len())
    };
    let block = &entries[..block_end];
    let want: Vec<&OwnedRule> = des.owned().collect();
    let want_at: HashMap<_, usize> = want.iter().enumerate().map(|(i, r)| (&r.id, i)).collect();
    let candidates: Vec<(usize, usize)> = block
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((i, *want_at.get(&e.owned()?.id)?)))
        .collect();
    let kept = longest_increasing(&candidates);

    let tail_anchor = if owned_chain {
        None
    } else {
        entries
            .get(block_end)
            .map(|e| need_handle(e, tid, name))
            .transpose()?
    };
    let (fam, table, chain) = (tid.family, &tid.name, name);
    // Deletions go first, then replacements, then insertions: a rule that moves is then
    // gone before its new copy arrives.
    let mut dels_out = Vec::new();
    let mut repl_out = Vec::new();
    let mut ins_out = Vec::new();
    let (mut bi, mut wi) = (0, 0);
    for g in 0..=kept.len() {
        let (bend, wend, anchor) = match kept.get(g) {
            Some(&(b, w)) => (b, w, Some(need_handle(block[b], tid, name)?)),
            None => (block.len(), want.len(), tail_anchor),
        };
        let dels = &block[bi..bend];
        let ins = &want[wi..wend];
        let pairs = dels.len().min(ins.len());
        for (d, n) in dels.iter().zip(ins).take(pairs) {
            repl_out.push(Op::ReplaceRule {
                family: fam,
                table: table.clone(),
                chain: chain.to_owned(),
                handle: need_handle(d, tid, name)?,
                rule: n.kernel_rule(marker),
            });
        }
        for d in &dels[pairs..] {
            dels_out.push(Op::DelRule {
                family: fam,
                table: table.clone(),
                chain: chain.to_owned(),
                handle: need_handle(d, tid, name)?,
            });
        }
        // Extra rules go right before the next kept rule, in order: after the replaced
        // ones, without needing their new handles.
        for n in &ins[pairs..] {
            ins_out.push(Op::AddRule {
                family: fam,
                table: table.clone(),
                chain: chain.to_owned(),
                rule: n.kernel_rule(marker),
                position: match anchor {
                    Some(h) => Position::Before(RuleRef::Handle(h)),
                    None => Position::Append,
                },
            });
        }
        bi = bend + 1;
        wi = wend + 1;
    }
    for e in &entries[block_end..] {
        if !matches!(e, Entry::Foreign(_)) {
            dels_out.push(Op::DelRule {
                family: fam,
                table: table.clone(),
                chain: chain.to_owned(),
                handle: need_handle(e, tid, name)?,
            });
        }
    }
    ops.extend(dels_out);
    ops.extend(repl_out);
    ops.extend(ins_out);
    Ok(())
}

/// The length of [`longest_increasing`]'s result.
#[cfg(test)]
pub(crate) fn longest_increasing_len(seq: &[(usize, usize)]) -> usize {
    longest_increasing(seq).len()
}

/// The longest subsequence of `seq` (pairs sorted by their first element) whose second
/// elements increase: the rules that can stay where they are. O(n log n).
fn longest_increasing(seq: &[(usize, usize)]) -> Vec<(usize, usize)> {
    // tails[k]: index in seq of the smallest tail of an increasing run of length k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev: Vec<Option<usize>> = vec![None; seq.len()];
    for (i, &(_, w)) in seq.iter().enumerate() {
        let k = tails.partition_point(|&t| seq[t].1 < w);
        prev[i] = k.checked_sub(1).map(|k| tails[k]);
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut out = Vec::with_capacity(tails.len());
    let mut cur = tails.last().copied();
    while let Some(i) = cur {
        out.push(seq[i]);
        cur = prev[i];
    }
    out.reverse();
    out
}

/// Applies one step to an in-memory state, refusing what the kernel would refuse: a rule
/// in a missing chain, a jump to a missing chain, a lookup of a missing set, a position
/// next to a missing handle, deleting a chain something jumps to or a set a rule looks up,
/// creating a set that exists. A refused batch leaves `state` unchanged, as the kernel's.
///
/// New rules get `handles[i]` for batch operation `i` when given (what the kernel echoed),
/// and otherwise the table's next free handle.
///
/// # Errors
/// [`Error::Inapplicable`] naming the operation and the rule it breaks.
pub fn apply_step(
    state: &mut Ruleset,
    step: Step<'_>,
    handles: Option<&[Option<u64>]>,
) -> Result<(), Error> {
    match step {
        Step::Set(op) => apply_set_op(state, op, true).map_err(|reason| Error::Inapplicable {
            step: step.to_string(),
            reason,
        }),
        Step::Batch(ops) => {
            let mut next = state.clone();
            apply_ops(&mut next, ops, handles, true)?;
            *state = next;
            Ok(())
        }
    }
}

/// `check`: refuse what the kernel would refuse; off for a batch the kernel took, where
/// the one costly check (who jumps to a deleted chain: every rule of the table, for each
/// chain deleted) would only repeat the kernel's.
fn apply_ops(
    state: &mut Ruleset,
    ops: &[Op],
    handles: Option<&[Option<u64>]>,
    check: bool,
) -> Result<(), Error> {
    let mut fresh: HashMap<TableId, u64> = HashMap::new();
    let mut touched = BTreeSet::new();
    for (i, op) in ops.iter().enumerate() {
        let h = handles.and_then(|h| h.get(i).copied().flatten());
        apply_op(state, op, h, &mut fresh, check).map_err(|reason| Error::Inapplicable {
            step: format!("batch operation #{} ({})", i + 1, op.describe()),
            reason,
        })?;
        if let Op::AddRule {
            family,
            table,
            chain,
            ..
        }
        | Op::ReplaceRule {
            family,
            table,
            chain,
            ..
        } = op
        {
            touched.insert((TableId::new(*family, table.clone()), chain.as_str()));
        }
    }
    // A batch may insert a moved rule before it deletes the old copy; at its end, as in a
    // dump, only the first copy of an identity is netfence's.
    let marker = state.marker().to_owned();
    for (tid, chain) in touched {
        if let Some(c) = state.chain_mut(&tid, chain) {
            c.demote_duplicates(tid.family, &marker);
        }
    }
    Ok(())
}

/// Applies a batch that the kernel has already accepted, in place (no copy of the state),
/// with the handles the kernel echoed, without re-checking what the kernel checked: a
/// chain delete doesn't scan the table for jumps to the chain, which cost time in the
/// size of the ruleset for each chain a plan deleted.
///
/// # Errors
/// As [`apply_step`]; `state` may then be half-changed and must be observed again.
pub fn apply_committed(
    state: &mut Ruleset,
    ops: &[Op],
    handles: &[Option<u64>],
) -> Result<(), Error> {
    apply_ops(state, ops, Some(handles), false)
}

/// Records a set operation the kernel has already carried out, without re-checking what
/// the kernel checked: a destroy doesn't scan every rule for references, which would cost
/// time in the size of the ruleset on each applied plan.
///
/// # Errors
/// As [`apply_step`], for what the model itself refuses (a member of the wrong kind).
pub fn apply_set_committed(state: &mut Ruleset, op: &SetOp) -> Result<(), Error> {
    apply_set_op(state, op, false).map_err(|reason| Error::Inapplicable {
        step: Step::Set(op).to_string(),
        reason,
    })
}

fn apply_set_op(state: &mut Ruleset, op: &SetOp, check: bool) -> Result<(), String> {
    match op {
        SetOp::Create {
            name,
            family,
            kind,
            maxelem,
        } => {
            if state.set(name).is_some() || state.foreign_sets().contains_key(name) {
                return Err(format!("set {name} exists"));
            }
            let mut s = IpSet::new(*family, *kind, Polarity::default());
            s.maxelem = *maxelem;
            state.sets_mut().insert(name.clone(), s);
        }
        SetOp::Destroy { name } => {
            if state.set(name).is_none() {
                return Err(format!("no set {name}"));
            }
            if check {
                if let Some(n) = state.set_references().get(name.as_str()) {
                    return Err(format!("set {name} is in use by {n} rule(s)"));
                }
            }
            state.sets_mut().remove(name);
        }
        SetOp::Add { name, members } => {
            let s = state.set_mut(name).ok_or(format!("no set {name}"))?;
            for m in members {
                s.insert(*m).map_err(|e| e.to_string())?;
            }
            if s.len() > s.maxelem as usize {
                return Err(format!("set {name} is full"));
            }
        }
        SetOp::Del { name, members } => {
            let s = state.set_mut(name).ok_or(format!("no set {name}"))?;
            for m in members {
                s.remove(m);
            }
        }
        SetOp::Swap { name, with } => {
            let (Some(a), Some(b)) = (state.set(name), state.set(with)) else {
                return Err(format!("no set {name} or {with}"));
            };
            if (a.kind, a.family) != (b.kind, b.family) {
                return Err(format!("sets {name} and {with} differ in type or family"));
            }
            let sets = state.sets_mut();
            let a = sets.remove(name).expect("checked");
            let b = sets.insert(with.clone(), a).expect("checked");
            sets.insert(name.clone(), b);
        }
    }
    Ok(())
}

fn next_handle(state: &Ruleset, tid: &TableId, fresh: &mut HashMap<TableId, u64>) -> u64 {
    let n = fresh.entry(tid.clone()).or_insert_with(|| {
        state
            .table(tid)
            .into_iter()
            .flat_map(|t| t.chains.values())
            .flat_map(|c| c.entries().iter().filter_map(Entry::handle))
            .max()
            .unwrap_or(0)
    });
    *n += 1;
    *n
}

/// Puts a new rule (kernel form) into a chain at the index `at` picks (which may first
/// remove the rule being replaced), classified as the kernel would report it.
#[allow(clippy::too_many_arguments)]
fn place_rule(
    state: &mut Ruleset,
    family: Family,
    table: &str,
    chain: &str,
    rule: &netfilter::nft::Rule,
    handle: Option<u64>,
    fresh: &mut HashMap<TableId, u64>,
    at: impl FnOnce(&mut Chain) -> Result<usize, String>,
) -> Result<(), String> {
    let tid = TableId::new(family, table.to_owned());
    check_refs(state, &tid, rule)?;
    let h = match handle {
        Some(h) => h,
        None => next_handle(state, &tid, fresh),
    };
    let mut c = take_chain(state, &tid, chain)?;
    let index = at(&mut c);
    let index = match index {
        Ok(i) => i,
        Err(e) => {
            put_chain(state, &tid, chain, c);
            return Err(e);
        }
    };
    // Uniqueness of identities is restored at the end of the batch (demote_duplicates).
    let e = state.classify(
        &tid,
        chain,
        &Chain::default(),
        Some(rule),
        Some(h),
        String::new,
    );
    c.insert(index, e);
    put_chain(state, &tid, chain, c);
    Ok(())
}

/// Takes a chain out of the state, so that the state can classify rules into it.
fn take_chain(state: &mut Ruleset, tid: &TableId, chain: &str) -> Result<Chain, String> {
    state
        .tables_mut()
        .get_mut(tid)
        .and_then(|t| t.chains.remove(chain))
        .ok_or(format!("no chain {chain}"))
}

fn put_chain(state: &mut Ruleset, tid: &TableId, chain: &str, c: Chain) {
    state
        .tables_mut()
        .get_mut(tid)
        .expect("the chain was taken from this table")
        .chains
        .insert(chain.to_owned(), c);
}

fn check_refs(state: &Ruleset, tid: &TableId, rule: &netfilter::nft::Rule) -> Result<(), String> {
    if let Some(j) = rule.jump_target() {
        match state.chain(tid, j) {
            None => return Err(format!("jump to missing chain {j}")),
            Some(c) if c.base.is_some() => return Err(format!("jump to base chain {j}")),
            Some(_) => {}
        }
    }
    for s in rule.set_names() {
        match state.set(s) {
            Some(set) if set.family == tid.family => {}
            Some(_) => return Err(format!("set {s} has another family")),
            None if state.foreign_sets().contains_key(s) => {}
            None => return Err(format!("lookup of missing set {s}")),
        }
    }
    Ok(())
}

fn apply_op(
    state: &mut Ruleset,
    op: &Op,
    handle: Option<u64>,
    fresh: &mut HashMap<TableId, u64>,
    check: bool,
) -> Result<(), String> {
    match op {
        Op::AddTable { family, table } => {
            state.add_table(TableId::new(*family, table.clone()));
        }
        Op::AddChain {
            family,
            table,
            chain,
        } => {
            let tid = TableId::new(*family, table.clone());
            let t = state
                .tables_mut()
                .get_mut(&tid)
                .ok_or(format!("no table {tid}"))?;
            match t.chains.get_mut(&chain.name) {
                // The kernel updates an existing base chain's policy.
                Some(c) => {
                    if let (Some(b), Some(new)) = (&mut c.base, chain.base) {
                        b.policy = new.policy;
                    }
                }
                None => {
                    t.chains.insert(chain.name.clone(), Chain::new(chain.base));
                }
            }
        }
        Op::DelChain {
            family,
            table,
            chain,
        } => {
            let tid = TableId::new(*family, table.clone());
            let t = state.table(&tid).ok_or(format!("no table {tid}"))?;
            if !t.chains.contains_key(chain) {
                return Err(format!("no chain {chain}"));
            }
            if check {
                let users = t
                    .chains
                    .iter()
                    .filter(|(n, _)| *n != chain)
                    .flat_map(|(_, c)| c.observed_jumps())
                    .filter(|(_, j)| j == chain)
                    .count();
                if users > 0 {
                    return Err(format!("chain {chain} is the target of {users} jump(s)"));
                }
            }
            state
                .tables_mut()
                .get_mut(&tid)
                .expect("checked")
                .chains
                .remove(chain);
        }
        Op::AddRule {
            family,
            table,
            chain,
            rule,
            position,
        } => place_rule(state, *family, table, chain, rule, handle, fresh, |c| {
            match position {
                Position::Append => Some(c.entries().len()),
                Position::Prepend => Some(0),
                Position::After(RuleRef::Handle(x)) => c.position_of(*x).map(|i| i + 1),
                Position::Before(RuleRef::Handle(x)) => c.position_of(*x),
                _ => None,
            }
            .ok_or(format!("no rule at position {position:?}"))
        })?,
        Op::ReplaceRule {
            family,
            table,
            chain,
            handle: old,
            rule,
        } => place_rule(state, *family, table, chain, rule, handle, fresh, |c| {
            let at = c
                .position_of(*old)
                .ok_or(format!("no rule with handle {old}"))?;
            c.remove(at);
            Ok(at)
        })?,
        Op::DelRule {
            family,
            table,
            chain,
            handle: h,
        } => {
            let tid = TableId::new(*family, table.clone());
            let c = state
                .chain_mut(&tid, chain)
                .ok_or(format!("no chain {chain}"))?;
            let at = c
                .position_of(*h)
                .ok_or(format!("no rule with handle {h}"))?;
            c.remove(at);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_increasing_keeps_the_longest_ordered_run() {
        let seq = [(0, 3), (1, 0), (2, 1), (3, 4), (4, 2)];
        let l = longest_increasing(&seq);
        assert_eq!(l, vec![(1, 0), (2, 1), (4, 2)]);
        assert!(longest_increasing(&[]).is_empty());
    }

    #[test]
    fn merge_is_the_union_whichever_side_is_larger() {
        let t = TableId::new(crate::Family::Ipv4, "filter");
        let ip = |n: u8| Member::Ip(std::net::IpAddr::from([10, 0, 0, n]));
        let mut small = Scope::default();
        small.chain(&t, "a").set("s1").member("m1", ip(1));
        let mut large = Scope::default();
        large.chain(&t, "b").chain(&t, "c").set("s2").set("s3");
        large
            .member("m1", ip(2))
            .member("m1", ip(3))
            .member("m2", ip(4));
        let mut want = small.clone();
        for (tb, c) in &large.chains {
            want.chain(tb, c);
        }
        for s in &large.sets {
            want.set(s);
        }
        for (s, ms) in &large.members {
            for m in ms {
                want.member(s, *m);
            }
        }
        let mut a = small.clone();
        a.merge(large.clone());
        let mut b = large;
        b.merge(small);
        assert_eq!(a, want);
        assert_eq!(b, want);
        assert_eq!(want.members["m1"].len(), 3);
        // Sorted lists merge into sorted lists, repeats once.
        a.add_members("m1", vec![ip(0), ip(2), ip(9)]);
        assert_eq!(a.members["m1"], [0, 1, 2, 3, 9].map(ip));
    }
}
