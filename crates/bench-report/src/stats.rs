//! Records grouped into one summary per (scenario, size, system): median, p99, count,
//! and the ratio of each system to netfence at the same size.

use std::collections::BTreeMap;

use crate::record::Record;

/// The system every other one is compared with.
pub const NETFENCE: &str = "netfence";

/// The data path's floor under any layout netfence may write: conntrack through the xt
/// match, as `iptables-nft-restore` writes it (`benches/datapath.rs`).
pub const CONNTRACK_XT: &str = "conntrack-iptables";

/// The bench name of the kernel bounds (`benches/ipset.rs` and `benches/nft.rs`, group
/// `bound`, file `bound.jsonl`): single messages, not scenarios of a cluster, so they get
/// a section of their own ([`crate::bounds`]) instead of a scenario table.
pub const BOUND: &str = "bound";

/// Scenarios in the order the report shows them; others follow, by name.
pub const SCENARIO_ORDER: [&str; 12] = [
    "pod_add",
    "pod_delete",
    "pod_relabel",
    "namespace_relabel",
    "policy_add",
    "policy_change",
    "policy_delete",
    "burst",
    "full_sync",
    "restart",
    "rss",
    "tcp_connect",
];

/// Systems in the order the report shows them; others follow, by name.
pub const SYSTEM_ORDER: [&str; 11] = [
    "none",
    "conntrack-only",
    CONNTRACK_XT,
    NETFENCE,
    "netfence-commit",
    "calico-iptables",
    "nft",
    "calico-full",
    "nft-full",
    "calico-restart",
    "nft-restart",
];

/// What identifies one series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// E.g. `pod_add`.
    pub scenario: String,
    /// Pods in the cluster.
    pub pods: usize,
    /// Policies in the cluster.
    pub policies: usize,
    /// E.g. `netfence`, `calico-iptables`.
    pub system: String,
}

impl Key {
    /// A key from its parts.
    pub fn new(scenario: &str, pods: usize, policies: usize, system: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            pods,
            policies,
            system: system.to_owned(),
        }
    }
}

/// One series, reduced.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Which series.
    pub key: Key,
    /// The bench(es) that wrote it, comma-separated.
    pub bench: String,
    /// Median of the samples (nearest rank), if there are samples.
    pub median_ns: Option<u64>,
    /// 99th percentile of the samples (nearest rank), if there are samples.
    pub p99_ns: Option<u64>,
    /// Number of samples.
    pub n: usize,
    /// Whether the figures come from a CI smoke pass (not comparable).
    pub smoke: bool,
    /// Named figures (`commits`, `peak_rss_bytes`, ...), in the order first written.
    pub extra: Vec<(String, f64)>,
}

impl Summary {
    /// A named figure.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.extra.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Whether the series is a kernel bound ([`BOUND`]).
    pub fn is_bound(&self) -> bool {
        self.bench.split(", ").any(|b| b == BOUND)
    }
}

/// Every series of a run.
#[derive(Clone, Debug, Default)]
pub struct Data {
    series: BTreeMap<Key, Summary>,
}

/// Reduces the records to one summary per key.
///
/// A full run and a smoke pass may both have left a record for the same key; the
/// smoke figures would only blur the full ones, so they are dropped there. Records of
/// the same key and kind (e.g. two benches measuring the same thing) pool their
/// samples.
pub fn summarize(records: Vec<Record>) -> Data {
    let mut groups: BTreeMap<Key, Vec<Record>> = BTreeMap::new();
    for r in records {
        let key = Key::new(&r.scenario, r.pods, r.policies, &r.system);
        groups.entry(key).or_default().push(r);
    }
    let mut series = BTreeMap::new();
    for (key, mut rs) in groups {
        if rs.iter().any(|r| !r.smoke) {
            rs.retain(|r| !r.smoke);
        }
        let mut merged = Record::new("", &key.scenario, &key.system, key.pods, key.policies);
        merged.smoke = rs.iter().all(|r| r.smoke);
        let mut benches: Vec<&str> = Vec::new();
        for r in &rs {
            if !benches.contains(&r.bench.as_str()) {
                benches.push(&r.bench);
            }
            merged.samples_ns.extend_from_slice(&r.samples_ns);
            for (name, v) in &r.extra {
                merged.set(name, *v);
            }
        }
        let as_ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let summary = Summary {
            bench: benches.join(", "),
            median_ns: merged.median().map(as_ns),
            p99_ns: merged.quantile(0.99).map(as_ns),
            n: merged.samples_ns.len(),
            smoke: merged.smoke,
            extra: merged.extra,
            key: key.clone(),
        };
        series.insert(key, summary);
    }
    Data { series }
}

fn rank(order: &[&str], name: &str) -> (usize, String) {
    let i = order.iter().position(|s| *s == name).unwrap_or(order.len());
    (i, name.to_owned())
}

impl Data {
    /// Whether nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Whether any series comes from a smoke pass.
    pub fn any_smoke(&self) -> bool {
        self.series.values().any(|s| s.smoke)
    }

    /// The series of one key.
    pub fn get(
        &self,
        scenario: &str,
        pods: usize,
        policies: usize,
        system: &str,
    ) -> Option<&Summary> {
        self.series.get(&Key::new(scenario, pods, policies, system))
    }

    /// Every scenario measured, in report order; the kernel bounds are not scenarios
    /// ([`Self::bounds`]).
    pub fn scenarios(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for s in self.series.values().filter(|s| !s.is_bound()) {
            if !v.contains(&s.key.scenario) {
                v.push(s.key.scenario.clone());
            }
        }
        v.sort_by_key(|s| rank(&SCENARIO_ORDER, s));
        v
    }

    /// The series of one scenario, by size then system (report order).
    pub fn of(&self, scenario: &str) -> Vec<&Summary> {
        let mut v: Vec<&Summary> = self
            .series
            .values()
            .filter(|s| s.key.scenario == scenario)
            .collect();
        v.sort_by_key(|s| {
            (
                s.key.pods,
                s.key.policies,
                rank(&SYSTEM_ORDER, &s.key.system),
            )
        });
        v
    }

    /// The kernel bounds' series ([`BOUND`]), by key.
    pub fn bounds(&self) -> Vec<&Summary> {
        self.series.values().filter(|s| s.is_bound()).collect()
    }

    /// The systems measured in one scenario, in report order.
    pub fn systems(&self, scenario: &str) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for s in self.of(scenario) {
            if !v.contains(&s.key.system) {
                v.push(s.key.system.clone());
            }
        }
        v.sort_by_key(|s| rank(&SYSTEM_ORDER, s));
        v
    }

    /// `system`'s median over netfence's at the same scenario and size: how many times
    /// slower the other system is (below 1: faster).
    pub fn ratio_to_netfence(&self, key: &Key) -> Option<f64> {
        let other = self.series.get(key)?.median_ns?;
        let base = self
            .get(&key.scenario, key.pods, key.policies, NETFENCE)?
            .median_ns?;
        ratio(other, base)
    }
}

/// `a / b`, if `b` is not zero.
pub fn ratio(a: u64, b: u64) -> Option<f64> {
    (b != 0).then(|| a as f64 / b as f64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rec(
        scenario: &str,
        system: &str,
        pods: usize,
        policies: usize,
        samples: &[u64],
    ) -> Record {
        let mut r = Record::new("test", scenario, system, pods, policies);
        r.samples_ns = samples.to_vec();
        r
    }

    #[test]
    fn median_and_p99_are_nearest_rank() {
        // 1..=100 shuffled: the nearest-rank median is the 50th value, p99 the 99th.
        let mut s: Vec<u64> = (1..=100).rev().collect();
        s.swap(3, 70);
        let d = summarize(vec![rec("pod_add", NETFENCE, 1000, 100, &s)]);
        let x = d.get("pod_add", 1000, 100, NETFENCE).unwrap();
        assert_eq!((x.median_ns, x.p99_ns, x.n), (Some(50), Some(99), 100));

        // Few samples: p99 is the largest, the median the lower middle one.
        let d = summarize(vec![rec("pod_add", NETFENCE, 1000, 100, &[30, 10, 20, 40])]);
        let x = d.get("pod_add", 1000, 100, NETFENCE).unwrap();
        assert_eq!((x.median_ns, x.p99_ns, x.n), (Some(20), Some(40), 4));

        let d = summarize(vec![rec("rss", NETFENCE, 1000, 100, &[])]);
        let x = d.get("rss", 1000, 100, NETFENCE).unwrap();
        assert_eq!((x.median_ns, x.p99_ns, x.n), (None, None, 0));
    }

    #[test]
    fn ratio_is_system_over_netfence_at_the_same_size() {
        let d = summarize(vec![
            rec("pod_add", NETFENCE, 1000, 100, &[100, 100, 100]),
            rec("pod_add", "calico-iptables", 1000, 100, &[25_000, 25_000]),
            rec("pod_add", "calico-iptables", 5000, 100, &[50_000]),
        ]);
        let r = d.ratio_to_netfence(&Key::new("pod_add", 1000, 100, "calico-iptables"));
        assert_eq!(r, Some(250.0));
        // No netfence series at 5k: no ratio rather than a made-up one.
        assert_eq!(
            d.ratio_to_netfence(&Key::new("pod_add", 5000, 100, "calico-iptables")),
            None
        );
        assert_eq!(ratio(1, 0), None);
    }

    #[test]
    fn full_runs_hide_smoke_passes_and_like_records_pool() {
        let mut smoke = rec("pod_add", NETFENCE, 1000, 100, &[1, 1, 1]);
        smoke.smoke = true;
        let d = summarize(vec![
            smoke.clone(),
            rec("pod_add", NETFENCE, 1000, 100, &[10, 30]),
            rec("pod_add", NETFENCE, 1000, 100, &[20]),
        ]);
        let x = d.get("pod_add", 1000, 100, NETFENCE).unwrap();
        assert_eq!((x.n, x.median_ns, x.smoke), (3, Some(20), false));
        let d = summarize(vec![smoke]);
        assert!(d.get("pod_add", 1000, 100, NETFENCE).unwrap().smoke);
        assert!(d.any_smoke());
    }

    #[test]
    fn a_figures_only_record_joins_the_timed_one_of_its_key() {
        // The RSS child's per-scenario memory: no samples, one figure, written by
        // another bench than the timings.
        let mut mem = rec("pod_add", NETFENCE, 1000, 100, &[]);
        mem.bench = "scenarios".into();
        mem.set("engine_rss_bytes", 5e6);
        let mut timed = rec("pod_add", NETFENCE, 1000, 100, &[10, 20, 30]);
        timed.bench = "sync".into();
        timed.set("commits", 3.0);
        let d = summarize(vec![timed, mem]);
        let x = d.get("pod_add", 1000, 100, NETFENCE).unwrap();
        assert_eq!((x.n, x.median_ns), (3, Some(20)));
        assert_eq!(
            (x.get("commits"), x.get("engine_rss_bytes")),
            (Some(3.0), Some(5e6))
        );
        assert_eq!(x.bench, "sync, scenarios");
    }

    #[test]
    fn order_follows_the_report_not_the_alphabet() {
        let d = summarize(vec![
            rec("tcp_connect", "none", 1000, 100, &[1]),
            rec("pod_add", "nft", 1000, 100, &[1]),
            rec("pod_add", "calico-iptables", 1000, 100, &[1]),
            rec("pod_add", NETFENCE, 1000, 100, &[1]),
            rec("zzz_new", NETFENCE, 1000, 100, &[1]),
        ]);
        assert_eq!(d.scenarios(), ["pod_add", "tcp_connect", "zzz_new"]);
        assert_eq!(d.systems("pod_add"), [NETFENCE, "calico-iptables", "nft"]);
    }

    #[test]
    fn kernel_bounds_are_not_scenarios() {
        let mut b = rec("ipset_protocol", "kernel", 0, 0, &[5_000]);
        b.bench = BOUND.into();
        let d = summarize(vec![b, rec("pod_add", NETFENCE, 1000, 100, &[1])]);
        assert_eq!(d.scenarios(), ["pod_add"]);
        let bounds = d.bounds();
        assert_eq!(bounds.len(), 1);
        assert!(bounds[0].is_bound() && bounds[0].key.scenario == "ipset_protocol");
        assert!(!d.of("pod_add")[0].is_bound());
    }
}
