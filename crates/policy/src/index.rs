//! Inverted indexes on labels: from labels to the selectors that can match
//! them ([`SelectorIndex`]), and from selectors to the pods they can match
//! ([`PodIndex`]).
//!
//! A pod delta must cost time in proportion to the selectors it touches, not
//! to the number of selectors in the cluster. Every selector that matches a
//! label set has each of its positive requirements satisfied by it, so it is
//! enough to file a selector under *one* positive requirement: an `In` under
//! each of its `(key, value)` pairs, an `Exists` under its key. A label set
//! then finds its candidates by looking up each of its own pairs and keys.
//! Selectors without a positive requirement (empty, or only `NotIn` /
//! `DoesNotExist`) can match label sets that share nothing with them, so they
//! are candidates for every lookup; they are rare in practice.
//!
//! Candidates are a superset of the matches: the caller still evaluates
//! [`LabelSelector::matches`] on each.

use std::collections::{BTreeSet, HashMap};

use crate::model::Pod;
use crate::selector::{LabelSelector, Labels, Operator};

/// Where a selector is filed.
enum Slot<'a> {
    /// Under every `(key, value)` of an `In` requirement.
    Values(&'a str, &'a BTreeSet<String>),
    /// Under the key of an `Exists` requirement.
    Key(&'a str),
    /// No positive requirement: a candidate for every label set.
    Always,
}

/// Prefers an `In` requirement (its values usually narrow the candidates to
/// few pods) over an `Exists` (which only narrows by key). The selector is
/// canonical, so the choice is deterministic and the same on insert and remove.
fn slot(sel: &LabelSelector) -> Slot<'_> {
    let mut exists = None;
    for r in sel.requirements() {
        match r.operator() {
            Operator::In(values) => return Slot::Values(r.key(), values),
            Operator::Exists if exists.is_none() => exists = Some(r.key()),
            _ => {}
        }
    }
    exists.map_or(Slot::Always, Slot::Key)
}

/// Selectors filed by one positive requirement each, with an id per selector.
///
/// The same selector may be filed under several ids (for example one per
/// namespace scope); each id is filed and removed on its own. Ids are kept in
/// sorted `Vec`s: filing is rare (a policy change), looking up is per pod
/// delta, and a lookup then reads contiguous memory.
#[derive(Clone, Debug)]
pub struct SelectorIndex<T> {
    by_key: HashMap<String, Bucket<T>>,
    always: Vec<T>,
}

/// The selectors filed under one label key: by `Exists`, and by `In` value.
/// Nested maps let a lookup borrow the pod's strings instead of copying them.
#[derive(Clone, Debug)]
struct Bucket<T> {
    exists: Vec<T>,
    values: HashMap<String, Vec<T>>,
}

impl<T> Default for Bucket<T> {
    fn default() -> Self {
        Bucket {
            exists: Vec::new(),
            values: HashMap::new(),
        }
    }
}

impl<T> Bucket<T> {
    fn is_empty(&self) -> bool {
        self.exists.is_empty() && self.values.is_empty()
    }
}

impl<T> Default for SelectorIndex<T> {
    fn default() -> Self {
        SelectorIndex {
            by_key: HashMap::new(),
            always: Vec::new(),
        }
    }
}

/// Adds `id` to a sorted list, once.
fn file<T: Ord>(ids: &mut Vec<T>, id: T) {
    if let Err(at) = ids.binary_search(&id) {
        ids.insert(at, id);
    }
}

/// Takes `id` out of a sorted list.
fn unfile<T: Ord>(ids: &mut Vec<T>, id: &T) {
    if let Ok(at) = ids.binary_search(id) {
        ids.remove(at);
    }
}

impl<T: Ord + Clone> SelectorIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Files `id` as a user of `sel`.
    pub fn insert(&mut self, sel: &LabelSelector, id: T) {
        match slot(sel) {
            Slot::Values(key, values) => {
                let b = self.by_key.entry(key.to_owned()).or_default();
                for v in values {
                    file(b.values.entry(v.clone()).or_default(), id.clone());
                }
            }
            Slot::Key(key) => {
                let b = self.by_key.entry(key.to_owned()).or_default();
                file(&mut b.exists, id);
            }
            Slot::Always => file(&mut self.always, id),
        }
    }

    /// Unfiles `id`, which must have been filed with this same `sel`.
    pub fn remove(&mut self, sel: &LabelSelector, id: &T) {
        let key = match slot(sel) {
            Slot::Always => {
                unfile(&mut self.always, id);
                return;
            }
            Slot::Values(key, _) | Slot::Key(key) => key,
        };
        let Some(b) = self.by_key.get_mut(key) else {
            return;
        };
        match slot(sel) {
            Slot::Values(_, values) => {
                for v in values {
                    // Empty buckets go, so that the index does not grow with
                    // every label value ever seen.
                    if let Some(ids) = b.values.get_mut(v) {
                        unfile(ids, id);
                        if ids.is_empty() {
                            b.values.remove(v);
                        }
                    }
                }
            }
            _ => unfile(&mut b.exists, id),
        }
        if b.is_empty() {
            self.by_key.remove(key);
        }
    }

    /// Calls `f` on every id whose selector may match `labels`: a superset
    /// of the matching ones, found in time proportional to the number of
    /// labels plus the candidates visited. Each id comes at most once: it is
    /// filed under one key, and `labels` has one value per key.
    pub fn for_each_candidate(&self, labels: &Labels, mut f: impl FnMut(&T)) {
        self.always.iter().for_each(&mut f);
        for (k, v) in labels {
            if let Some(b) = self.by_key.get(k) {
                b.exists.iter().for_each(&mut f);
                if let Some(ids) = b.values.get(v) {
                    ids.iter().for_each(&mut f);
                }
            }
        }
    }

    /// Adds to `out` every id whose selector may match `labels` (see
    /// [`Self::for_each_candidate`]).
    pub fn candidates(&self, labels: &Labels, out: &mut BTreeSet<T>) {
        self.for_each_candidate(labels, |id| {
            out.insert(id.clone());
        });
    }

    /// Whether nothing is filed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty() && self.always.is_empty()
    }
}

/// The pods of each namespace, whole and by label, as ids of the caller's
/// choosing: where a new group looks for its members.
///
/// A policy delta creates groups, and each new group used to test every pod
/// of every namespace it may hold against its pod selector: about 3,100 pods
/// per namespace-selected group at 10,000 pods, which was a fifth of the
/// compiler's time in a burst. Filed by `(key, value)`, a selector's
/// candidates are the pods that carry the label it is filed under in
/// [`SelectorIndex`] (an `In` value, an `Exists` key), usually a few of the
/// namespace's pods. A selector with no positive requirement gets every pod
/// of the namespace, labelled or not.
///
/// It files ids, not pods: the compiler's small pod ids, so that a new
/// group's members are found without a key lookup or a key copy per pod.
#[derive(Debug)]
pub struct PodIndex<I> {
    by_ns: HashMap<String, NsPods<I>>,
}

/// One namespace's pods.
#[derive(Debug)]
struct NsPods<I> {
    /// Every pod, in no order.
    all: Vec<I>,
    /// The pods by label key, then value.
    by_label: HashMap<String, HashMap<String, Vec<I>>>,
}

impl<I> Default for PodIndex<I> {
    fn default() -> Self {
        PodIndex {
            by_ns: HashMap::new(),
        }
    }
}

impl<I: Copy + PartialEq> PodIndex<I> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Files `pod` as `id` under its namespace and each of its labels.
    pub fn insert(&mut self, pod: &Pod, id: I) {
        // Look up before inserting, here and below: a pod delta copies the
        // namespace, key and value strings only for a bucket that is new.
        let ns = match self.by_ns.get_mut(&pod.namespace) {
            Some(ns) => ns,
            None => self.by_ns.entry(pod.namespace.clone()).or_insert(NsPods {
                all: Vec::new(),
                by_label: HashMap::new(),
            }),
        };
        ns.all.push(id);
        for (k, v) in &pod.labels {
            let values = match ns.by_label.get_mut(k) {
                Some(values) => values,
                None => ns.by_label.entry(k.clone()).or_default(),
            };
            match values.get_mut(v) {
                Some(ids) => ids.push(id),
                None => {
                    values.insert(v.clone(), vec![id]);
                }
            }
        }
    }

    /// Unfiles `id`, filed as `pod` (the same namespace and labels). Buckets
    /// that empty go, so that the index does not grow with every label value
    /// ever seen.
    pub fn remove(&mut self, pod: &Pod, id: I) {
        let Some(ns) = self.by_ns.get_mut(&pod.namespace) else {
            return;
        };
        // Buckets are in no order, and a scan of small ids is short even
        // over a namespace's every pod.
        let unfile = |ids: &mut Vec<I>| {
            if let Some(at) = ids.iter().position(|i| *i == id) {
                ids.swap_remove(at);
            }
        };
        unfile(&mut ns.all);
        if ns.all.is_empty() {
            self.by_ns.remove(&pod.namespace);
            return;
        }
        for (k, v) in &pod.labels {
            let Some(values) = ns.by_label.get_mut(k) else {
                continue;
            };
            if let Some(ids) = values.get_mut(v) {
                unfile(ids);
                if ids.is_empty() {
                    values.remove(v);
                }
            }
            if values.is_empty() {
                ns.by_label.remove(k);
            }
        }
    }

    /// The namespaces with a pod.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.by_ns.keys().map(String::as_str)
    }

    /// Every pod of namespace `ns`, in no order.
    pub fn pods_in(&self, ns: &str) -> &[I] {
        self.by_ns.get(ns).map_or(&[], |n| n.all.as_slice())
    }

    /// Calls `f` on every pod of namespace `ns` that `sel` may match, each
    /// once: a superset of the matches, as for [`SelectorIndex`]. Without a
    /// positive requirement in `sel` that is every pod of the namespace.
    pub fn for_each_candidate(&self, ns: &str, sel: &LabelSelector, mut f: impl FnMut(I)) {
        let Some(ns) = self.by_ns.get(ns) else {
            return;
        };
        match slot(sel) {
            Slot::Values(key, wanted) => {
                let Some(values) = ns.by_label.get(key) else {
                    return;
                };
                // A pod has one value per key: the buckets are disjoint.
                for v in wanted {
                    values.get(v).into_iter().flatten().for_each(|i| f(*i));
                }
            }
            Slot::Key(key) => {
                ns.by_label
                    .get(key)
                    .into_iter()
                    .flatten()
                    .flat_map(|(_, ids)| ids)
                    .for_each(|i| f(*i));
            }
            Slot::Always => ns.all.iter().for_each(|i| f(*i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn candidates_cover_matches_and_skip_unrelated_selectors() {
        let sels: Vec<LabelSelector> = [
            "app=web",
            "app in (web,db),tier",
            "tier",
            "!canary",
            "",
            "app!=web",
            "team=a",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut idx = SelectorIndex::new();
        for (i, s) in sels.iter().enumerate() {
            idx.insert(s, i);
        }
        let l = labels(&[("app", "web")]);
        let mut out = BTreeSet::new();
        idx.candidates(&l, &mut out);
        for (i, s) in sels.iter().enumerate() {
            if s.matches(&l) {
                assert!(out.contains(&i), "{s} matches but is no candidate");
            }
        }
        // Selectors on other values and keys are not looked at.
        assert!(!out.contains(&2) && !out.contains(&6), "{out:?}");
        for (i, s) in sels.iter().enumerate() {
            idx.remove(s, &i);
        }
        assert!(idx.is_empty());
    }

    fn pod(ns: &str, name: &str, l: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            labels: labels(l),
            ipv4: None,
            ipv6: None,
            named_ports: Default::default(),
            node_name: None,
            host_interface: None,
        }
    }

    /// The pods filed as their index in `pods`, by name.
    fn names(idx: &PodIndex<usize>, pods: &[Pod], ns: &str, sel: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        idx.for_each_candidate(ns, &sel.parse().unwrap(), |i| {
            assert!(
                out.insert(pods[i].name.clone()),
                "{} came twice",
                pods[i].name
            );
        });
        out
    }

    #[test]
    fn pod_candidates_cover_matches_by_namespace_and_label() {
        let mut pods = vec![
            pod("a", "web1", &[("app", "web"), ("tier", "fe")]),
            pod("a", "web2", &[("app", "web")]),
            pod("a", "db", &[("app", "db"), ("tier", "be")]),
            pod("b", "web3", &[("app", "web")]),
            pod("a", "bare", &[]),
        ];
        let mut idx = PodIndex::new();
        for (i, p) in pods.iter().enumerate() {
            idx.insert(p, i);
        }
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(names(&idx, &pods, "a", "app=web"), set(&["web1", "web2"]));
        assert_eq!(
            names(&idx, &pods, "a", "app in (web,db)"),
            set(&["web1", "web2", "db"])
        );
        assert_eq!(names(&idx, &pods, "a", "tier"), set(&["web1", "db"]));
        assert_eq!(names(&idx, &pods, "b", "app=web,tier=fe"), set(&["web3"]));
        assert_eq!(names(&idx, &pods, "c", "app=web"), set(&[]));
        // Without a positive requirement every pod of the namespace is a
        // candidate, labelled or not.
        let all_a = set(&["web1", "web2", "db", "bare"]);
        for sel in ["", "!tier", "app!=web"] {
            assert_eq!(names(&idx, &pods, "a", sel), all_a, "{sel}");
        }
        assert_eq!(names(&idx, &pods, "b", ""), set(&["web3"]));
        // A relabel is a remove as filed and an insert as it is now.
        let moved = pod("a", "web2", &[("app", "db")]);
        idx.remove(&pods[1], 1);
        idx.insert(&moved, 1);
        pods[1] = moved;
        assert_eq!(names(&idx, &pods, "a", "app=web"), set(&["web1"]));
        assert_eq!(names(&idx, &pods, "a", "app=db"), set(&["db", "web2"]));
        assert_eq!(idx.pods_in("a").len(), 4);
        // Emptied buckets and namespaces go.
        for (i, p) in pods.iter().enumerate() {
            idx.remove(p, i);
        }
        assert!(idx.by_ns.is_empty(), "{:?}", idx.by_ns);
        assert_eq!(idx.namespaces().count(), 0);
    }
}
