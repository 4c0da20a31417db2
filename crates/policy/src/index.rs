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
use std::sync::Arc;

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

/// The pods of each namespace by label: where a new group looks for its
/// members.
///
/// A policy delta creates groups, and each new group used to test every pod
/// of every namespace it may hold against its pod selector: about 3,100 pods
/// per namespace-selected group at 10,000 pods, which was a fifth of the
/// compiler's time in a burst. Filed by `(key, value)`, a selector's
/// candidates are the pods that carry the label it is filed under in
/// [`SelectorIndex`] (an `In` value, an `Exists` key), usually a few of the
/// namespace's pods. It holds the cluster's own `Arc`s: a pointer per label
/// of each pod, and a bucket per label value of a namespace.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_ns: HashMap<String, ByLabel>,
}

/// One namespace's pods, by label key, then value.
type ByLabel = HashMap<String, HashMap<String, Vec<Arc<Pod>>>>;

impl PodIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Files `pod` under each of its labels.
    pub fn insert(&mut self, pod: &Arc<Pod>) {
        if pod.labels.is_empty() {
            return;
        }
        // Look up before inserting, here and below: a pod delta copies the
        // namespace, key and value strings only for a bucket that is new.
        let labels = match self.by_ns.get_mut(&pod.namespace) {
            Some(labels) => labels,
            None => self.by_ns.entry(pod.namespace.clone()).or_default(),
        };
        for (k, v) in &pod.labels {
            let values = match labels.get_mut(k) {
                Some(values) => values,
                None => labels.entry(k.clone()).or_default(),
            };
            match values.get_mut(v) {
                Some(pods) => pods.push(pod.clone()),
                None => {
                    values.insert(v.clone(), vec![pod.clone()]);
                }
            }
        }
    }

    /// Unfiles `pod`, the very `Arc` that was filed. Buckets that empty go,
    /// so that the index does not grow with every label value ever seen.
    pub fn remove(&mut self, pod: &Arc<Pod>) {
        let Some(labels) = self.by_ns.get_mut(&pod.namespace) else {
            return;
        };
        for (k, v) in &pod.labels {
            let Some(values) = labels.get_mut(k) else {
                continue;
            };
            if let Some(pods) = values.get_mut(v) {
                // A bucket holds the pods of one namespace with one label
                // value: a short scan, and order means nothing.
                if let Some(at) = pods.iter().position(|p| Arc::ptr_eq(p, pod)) {
                    pods.swap_remove(at);
                }
                if pods.is_empty() {
                    values.remove(v);
                }
            }
            if values.is_empty() {
                labels.remove(k);
            }
        }
        if labels.is_empty() {
            self.by_ns.remove(&pod.namespace);
        }
    }

    /// The namespaces with a pod that has a label.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.by_ns.keys().map(String::as_str)
    }

    /// Whether `sel` has a positive requirement to find its candidates by.
    /// Without one every pod is a candidate, even one with no label, which
    /// the index does not hold: scan the namespace instead.
    pub fn narrows(sel: &LabelSelector) -> bool {
        !matches!(slot(sel), Slot::Always)
    }

    /// Calls `f` on every pod of namespace `ns` that `sel` may match, each
    /// once: a superset of the matches, as for [`SelectorIndex`]. Calls
    /// nothing for a selector that does not [narrow](Self::narrows).
    pub fn for_each_candidate(&self, ns: &str, sel: &LabelSelector, mut f: impl FnMut(&Arc<Pod>)) {
        let Some(labels) = self.by_ns.get(ns) else {
            return;
        };
        match slot(sel) {
            Slot::Values(key, wanted) => {
                let Some(values) = labels.get(key) else {
                    return;
                };
                // A pod has one value per key: the buckets are disjoint.
                for v in wanted {
                    values.get(v).into_iter().flatten().for_each(&mut f);
                }
            }
            Slot::Key(key) => {
                labels
                    .get(key)
                    .into_iter()
                    .flatten()
                    .flat_map(|(_, p)| p)
                    .for_each(f);
            }
            Slot::Always => {}
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

    fn pod(ns: &str, name: &str, l: &[(&str, &str)]) -> Arc<Pod> {
        Arc::new(Pod {
            namespace: ns.into(),
            name: name.into(),
            labels: labels(l),
            ipv4: None,
            ipv6: None,
            named_ports: Default::default(),
            node_name: None,
            host_interface: None,
        })
    }

    fn names(idx: &PodIndex, ns: &str, sel: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        idx.for_each_candidate(ns, &sel.parse().unwrap(), |p| {
            assert!(out.insert(p.name.clone()), "{} came twice", p.name);
        });
        out
    }

    #[test]
    fn pod_candidates_cover_matches_by_namespace_and_label() {
        let pods = [
            pod("a", "web1", &[("app", "web"), ("tier", "fe")]),
            pod("a", "web2", &[("app", "web")]),
            pod("a", "db", &[("app", "db"), ("tier", "be")]),
            pod("b", "web3", &[("app", "web")]),
            pod("a", "bare", &[]),
        ];
        let mut idx = PodIndex::new();
        for p in &pods {
            idx.insert(p);
        }
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(names(&idx, "a", "app=web"), set(&["web1", "web2"]));
        assert_eq!(
            names(&idx, "a", "app in (web,db)"),
            set(&["web1", "web2", "db"])
        );
        assert_eq!(names(&idx, "a", "tier"), set(&["web1", "db"]));
        assert_eq!(names(&idx, "b", "app=web,tier=fe"), set(&["web3"]));
        assert_eq!(names(&idx, "c", "app=web"), set(&[]));
        // Without a positive requirement every pod is a candidate, labelled
        // or not: the caller scans instead.
        for sel in ["", "!tier", "app!=web"] {
            assert!(!PodIndex::narrows(&sel.parse().unwrap()), "{sel}");
        }
        // A relabel is a remove of the old Arc and an insert of the new.
        let moved = pod("a", "web2", &[("app", "db")]);
        idx.remove(&pods[1]);
        idx.insert(&moved);
        assert_eq!(names(&idx, "a", "app=web"), set(&["web1"]));
        assert_eq!(names(&idx, "a", "app=db"), set(&["db", "web2"]));
        // Emptied buckets and namespaces go.
        for p in [&pods[0], &pods[2], &moved, &pods[3], &pods[4]] {
            idx.remove(p);
        }
        assert!(idx.by_ns.is_empty(), "{:?}", idx.by_ns);
    }
}
