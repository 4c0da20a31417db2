//! Metrics of the sync engine: lock-free counters and fixed-bucket histograms, read back
//! as a [`MetricsSnapshot`] or rendered in the Prometheus text exposition format 0.0.4.
//!
//! The engine's sync thread is the only writer and must never wait for a scrape, so every
//! update is a relaxed atomic on a value of its own; readers assemble a snapshot from
//! those atomics. A histogram keeps no count of its own: its count is the sum of its
//! buckets, so a snapshot's `+Inf` bucket always equals its count even while updates race
//! it (only `sum` can lag the buckets by the observations in flight).
//!
//! The text encoder is hand-written because `prometheus-client` 0.25 emits only the
//! OpenMetrics text format (counter families named without `_total`, a `# EOF` trailer)
//! and keeps its histogram behind a mutex with no public read of its buckets.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency and duration buckets, in nanoseconds: 25 µs doubling up to
/// about 13 s. The low end is fine-grained because the engine's target is sub-200-µs
/// deltas (200 µs is a bound), and the top is past any commit that didn't hang.
const DURATION_BOUNDS_NS: [u64; 20] = doubling(25_000);

/// Upper bounds of the operations-per-commit buckets: 1 doubling up to 65536, about the
/// size of a full resync of a large node.
const OPS_BOUNDS: [u64; 17] = doubling(1);

const NANOS_PER_SECOND: f64 = 1e9;

/// `first`, `2 × first`, `4 × first`, …: computed so that the bounds are exact integers
/// and print as short decimals once scaled.
const fn doubling<const N: usize>(first: u64) -> [u64; N] {
    let mut bounds = [0; N];
    let mut i = 0;
    while i < N {
        bounds[i] = first << i;
        i += 1;
    }
    bounds
}

/// Counters and histograms of one engine, shared (in an `Arc`) between its sync thread and
/// any number of readers.
///
/// Updates are single relaxed atomic operations: no value is published through a metric,
/// so no ordering between them is needed, and the writer never blocks on a reader.
#[derive(Debug)]
pub struct Metrics {
    delta_latency: Histogram,
    commit_duration: Histogram,
    ops_per_commit: Histogram,
    retries: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    conflicts: AtomicU64,
    reconciles: AtomicU64,
    repairs: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All counters at zero; allocates the bucket arrays once so that no update allocates.
    pub fn new() -> Self {
        Self {
            delta_latency: Histogram::new(&DURATION_BOUNDS_NS, NANOS_PER_SECOND),
            commit_duration: Histogram::new(&DURATION_BOUNDS_NS, NANOS_PER_SECOND),
            ops_per_commit: Histogram::new(&OPS_BOUNDS, 1.0),
            retries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            reconciles: AtomicU64::new(0),
            repairs: AtomicU64::new(0),
        }
    }

    /// One delta reached the kernel (or was settled without a kernel change); `latency`
    /// runs from its submission. The delta count is this histogram's count, so the two
    /// can't disagree.
    pub fn record_delta(&self, latency: Duration) {
        self.delta_latency.observe(duration_nanos(latency));
    }

    /// One kernel transaction (the nf_tables batch plus the ipset messages of one burst)
    /// completed in `duration` with `ops` operations. Commit and operation totals are the
    /// count and sum of these histograms rather than separate counters.
    pub fn record_commit(&self, duration: Duration, ops: usize) {
        self.commit_duration.observe(duration_nanos(duration));
        self.ops_per_commit
            .observe(u64::try_from(ops).unwrap_or(u64::MAX));
    }

    /// A commit attempt is being retried.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A commit attempt failed.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// An invalid delta was rejected before it reached the kernel.
    pub fn record_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// One reconcile pass ran and repaired `repairs` kernel objects that had drifted.
    pub fn record_reconcile(&self, repairs: usize) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        self.repairs.fetch_add(
            u64::try_from(repairs).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Another writer changed the ruleset, as the nf_tables generation id showed.
    pub fn record_conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values. Each value is read once, so a snapshot taken during updates
    /// may mix values from before and after an update, but each histogram's buckets stay
    /// cumulative and end at its count.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let delta_latency = self.delta_latency.snapshot();
        let commit_duration = self.commit_duration.snapshot();
        let (ops_per_commit, operations) = self.ops_per_commit.snapshot_with_raw_sum();
        MetricsSnapshot {
            deltas: delta_latency.count,
            commits: commit_duration.count,
            operations,
            retries: self.retries.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            reconciles: self.reconciles.load(Ordering::Relaxed),
            repairs: self.repairs.load(Ordering::Relaxed),
            delta_latency,
            commit_duration,
            ops_per_commit,
        }
    }

    /// The current values in the Prometheus text exposition format 0.0.4, ready to serve
    /// with `Content-Type: text/plain; version=0.0.4`.
    pub fn prometheus_text(&self) -> String {
        self.snapshot().prometheus_text()
    }
}

/// Saturates instead of wrapping: a duration past 584 years is a clock bug, and a huge
/// value shows it where a wrapped small one would hide it.
fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram over integer units (nanoseconds or operations), so that bucket placement is
/// exact at the bounds and the sum is an atomic integer.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, then the overflow (`+Inf`) bucket; not cumulative, so an
    /// observation is one increment.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// Units per reported unit: 1e9 to report nanoseconds as seconds, 1 for plain counts.
    scale: f64,
}

impl Histogram {
    fn new(bounds: &'static [u64], scale: f64) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    fn observe(&self, value: u64) {
        // `le` semantics: a value equal to a bound belongs to that bound's bucket.
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        // Saturating so that one absurd observation can't wrap the sum to a plausible
        // value; uncontended with a single writer, so the loop runs once.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(sum.saturating_add(value))
            });
    }

    fn snapshot(&self) -> HistogramSnapshot {
        self.snapshot_with_raw_sum().0
    }

    /// Also returns the sum in integer units, for totals that must stay exact.
    fn snapshot_with_raw_sum(&self) -> (HistogramSnapshot, u64) {
        let raw_sum = self.sum.load(Ordering::Relaxed);
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound as f64 / self.scale, cumulative));
        }
        let overflow = self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let snapshot = HistogramSnapshot {
            count: cumulative + overflow,
            sum: raw_sum as f64 / self.scale,
            buckets,
        };
        (snapshot, raw_sum)
    }
}

/// The values of [`Metrics`] at one moment, for tests, logs and health checks that want
/// numbers rather than text.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MetricsSnapshot {
    /// Deltas that reached the kernel or were settled (the count of `delta_latency`).
    pub deltas: u64,
    /// Kernel transactions (the count of `commit_duration`).
    pub commits: u64,
    /// Kernel operations over all transactions (the sum of `ops_per_commit`).
    pub operations: u64,
    /// Commit attempts retried.
    pub retries: u64,
    /// Failed commit attempts.
    pub errors: u64,
    /// Invalid deltas rejected before reaching the kernel.
    pub rejected: u64,
    /// Concurrent writers detected through the nf_tables generation id.
    pub conflicts: u64,
    /// Reconcile passes.
    pub reconciles: u64,
    /// Kernel objects repaired by reconcile passes.
    pub repairs: u64,
    /// Seconds from a delta's submission until it reached the kernel or was settled.
    pub delta_latency: HistogramSnapshot,
    /// Seconds per kernel transaction.
    pub commit_duration: HistogramSnapshot,
    /// Operations per kernel transaction.
    pub ops_per_commit: HistogramSnapshot,
}

/// A histogram's values at one moment, in Prometheus's shape so that encoding is a copy.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HistogramSnapshot {
    /// Observations, including those above the last bound (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations: seconds for durations, a plain count for operations.
    pub sum: f64,
    /// `(upper bound, observations ≤ upper bound)` in ascending bound order, cumulative
    /// as Prometheus's `le` buckets are; `+Inf` is left out because it equals `count`.
    pub buckets: Vec<(f64, u64)>,
}

impl HistogramSnapshot {
    /// An estimate of the `q`-quantile (`q` in `[0, 1]`): the upper bound of the bucket
    /// that holds the observation of rank `⌈q × count⌉`, so it never understates.
    ///
    /// `None` when there are no observations or `q` is outside `[0, 1]`;
    /// `Some(f64::INFINITY)` when that observation is above the last bound, rather than
    /// Prometheus's habit of reporting the last finite bound, which would understate it.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // At least rank 1, so that q = 0 names the smallest observation's bucket. The
        // product is at most `count`, so the conversion back is exact enough.
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let bound = self
            .buckets
            .iter()
            .find(|&&(_, cumulative)| cumulative >= rank)
            .map_or(f64::INFINITY, |&(bound, _)| bound);
        Some(bound)
    }
}

/// How a family is exposed: name (with the `netfence_` prefix) and help text, which must
/// not contain a backslash or a newline since they are written unescaped.
struct Family {
    name: &'static str,
    help: &'static str,
}

const DELTAS: Family = Family {
    name: "netfence_deltas_total",
    help: "Policy deltas that reached the kernel or were settled.",
};
const COMMITS: Family = Family {
    name: "netfence_commits_total",
    help: "Kernel transactions (one nf_tables batch plus the ipset messages of one burst).",
};
const OPERATIONS: Family = Family {
    name: "netfence_operations_total",
    help: "Kernel operations sent in transactions.",
};
const RETRIES: Family = Family {
    name: "netfence_retries_total",
    help: "Commit attempts retried.",
};
const ERRORS: Family = Family {
    name: "netfence_errors_total",
    help: "Failed commit attempts.",
};
const REJECTED: Family = Family {
    name: "netfence_rejected_deltas_total",
    help: "Invalid deltas rejected before reaching the kernel.",
};
const CONFLICTS: Family = Family {
    name: "netfence_conflicts_total",
    help: "Concurrent ruleset writers detected through the nf_tables generation id.",
};
const RECONCILES: Family = Family {
    name: "netfence_reconciles_total",
    help: "Reconcile passes.",
};
const REPAIRS: Family = Family {
    name: "netfence_reconcile_repairs_total",
    help: "Kernel objects repaired by reconcile passes.",
};
const DELTA_LATENCY: Family = Family {
    name: "netfence_delta_latency_seconds",
    help: "Time from a delta's submission until it reached the kernel or was settled.",
};
const COMMIT_DURATION: Family = Family {
    name: "netfence_commit_duration_seconds",
    help: "Duration of one kernel transaction.",
};
const COMMIT_OPERATIONS: Family = Family {
    name: "netfence_commit_operations",
    help: "Operations per kernel transaction.",
};

impl MetricsSnapshot {
    /// These values in the Prometheus text exposition format 0.0.4; a pure function of the
    /// snapshot, so a snapshot taken once can be both inspected and served.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.write_text(&mut out)
            .expect("formatting into a String does not fail");
        out
    }

    fn write_text(&self, out: &mut String) -> fmt::Result {
        let counters = [
            (&DELTAS, self.deltas),
            (&COMMITS, self.commits),
            (&OPERATIONS, self.operations),
            (&RETRIES, self.retries),
            (&ERRORS, self.errors),
            (&REJECTED, self.rejected),
            (&CONFLICTS, self.conflicts),
            (&RECONCILES, self.reconciles),
            (&REPAIRS, self.repairs),
        ];
        for (family, value) in counters {
            write_header(out, family, "counter")?;
            writeln!(out, "{} {value}", family.name)?;
        }
        let histograms = [
            (&DELTA_LATENCY, &self.delta_latency),
            (&COMMIT_DURATION, &self.commit_duration),
            (&COMMIT_OPERATIONS, &self.ops_per_commit),
        ];
        for (family, histogram) in histograms {
            write_header(out, family, "histogram")?;
            let name = family.name;
            // `{}` on f64 prints the shortest decimal that parses back to the same value,
            // without an exponent, which Prometheus's parser accepts.
            for (bound, cumulative) in &histogram.buckets {
                writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}")?;
            }
            writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", histogram.count)?;
            writeln!(out, "{name}_sum {}", histogram.sum)?;
            writeln!(out, "{name}_count {}", histogram.count)?;
        }
        Ok(())
    }
}

fn write_header(out: &mut String, family: &Family, kind: &str) -> fmt::Result {
    writeln!(out, "# HELP {} {}", family.name, family.help)?;
    writeln!(out, "# TYPE {} {kind}", family.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::thread;

    fn us(micros: u64) -> Duration {
        Duration::from_micros(micros)
    }

    /// Non-cumulative count of each finite bucket, then the overflow bucket.
    fn per_bucket(h: &HistogramSnapshot) -> Vec<u64> {
        let mut previous = 0;
        let mut counts: Vec<u64> = h
            .buckets
            .iter()
            .map(|&(_, cumulative)| {
                let n = cumulative - previous;
                previous = cumulative;
                n
            })
            .collect();
        counts.push(h.count - previous);
        counts
    }

    #[test]
    fn shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }

    #[test]
    fn bucket_bounds() {
        let s = Metrics::new().snapshot();
        let latency: Vec<f64> = s.delta_latency.buckets.iter().map(|b| b.0).collect();
        assert_eq!(latency.first(), Some(&0.000025));
        assert!(latency.contains(&0.0002), "200 µs, the target, is a bound");
        assert!(*latency.last().unwrap() >= 10.0);
        assert!(latency.windows(2).all(|w| w[1] == 2.0 * w[0]));
        let ops: Vec<f64> = s.ops_per_commit.buckets.iter().map(|b| b.0).collect();
        assert_eq!(ops.first(), Some(&1.0));
        assert_eq!(ops.last(), Some(&65536.0));
        assert_eq!(ops.len(), 17);
        assert_eq!(s.commit_duration.buckets, s.delta_latency.buckets);
    }

    #[test]
    fn bucket_placement_at_edges() {
        let m = Metrics::new();
        m.record_delta(Duration::ZERO); // first bucket
        m.record_delta(us(25)); // exactly the first bound: still the first bucket
        m.record_delta(us(25) + Duration::from_nanos(1)); // second
        m.record_delta(us(200)); // exactly 200 µs: the 200 µs bucket
        m.record_delta(Duration::from_nanos(13_107_200_000)); // the last bound
        m.record_delta(Duration::from_nanos(13_107_200_001)); // +Inf only
        m.record_delta(Duration::MAX); // +Inf only, and the sum saturates
        let h = m.snapshot().delta_latency;
        let counts = per_bucket(&h);
        assert_eq!(counts.len(), 21);
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 1);
        assert_eq!(h.buckets[3].0, 0.0002);
        assert_eq!(counts[3], 1);
        assert_eq!(counts[19], 1);
        assert_eq!(counts[20], 2);
        assert_eq!(counts.iter().sum::<u64>(), 7);
        assert_eq!(h.count, 7);
        assert_eq!(h.sum, u64::MAX as f64 / 1e9);

        let m = Metrics::new();
        m.record_commit(us(1), 0);
        m.record_commit(us(1), 1);
        m.record_commit(us(1), 2);
        m.record_commit(us(1), 3);
        m.record_commit(us(1), 65536);
        m.record_commit(us(1), 65537);
        let s = m.snapshot();
        let counts = per_bucket(&s.ops_per_commit);
        assert_eq!(&counts[..3], &[2, 1, 1]);
        assert_eq!(counts[16], 1);
        assert_eq!(counts[17], 1);
        assert_eq!(s.operations, 65536 + 65537 + 6);
        assert_eq!(s.ops_per_commit.sum, s.operations as f64);
        assert_eq!(s.commits, 6);
    }

    #[test]
    fn buckets_are_cumulative() {
        let m = Metrics::new();
        for ops in [1, 1, 3, 4, 5, 100, 100_000] {
            m.record_commit(Duration::from_millis(1), ops);
        }
        let h = m.snapshot().ops_per_commit;
        let cumulative: Vec<u64> = h.buckets.iter().map(|b| b.1).collect();
        // ≤1: 2, ≤2: 2, ≤4: 4, ≤8: 5, …, ≤128: 6 up to ≤65536, then +Inf: 7.
        assert_eq!(&cumulative[..8], &[2, 2, 4, 5, 5, 5, 5, 6]);
        assert!(cumulative[8..].iter().all(|&c| c == 6));
        assert_eq!(h.count, 7);

        let d = m.snapshot().commit_duration;
        // 1 ms lies in (800 µs, 1.6 ms].
        let first_nonzero = d.buckets.iter().position(|b| b.1 > 0).unwrap();
        assert_eq!(d.buckets[first_nonzero].0, 0.0016);
        assert!(d.buckets[first_nonzero..].iter().all(|b| b.1 == 7));
        assert!((d.sum - 0.007).abs() < 1e-12);
    }

    #[test]
    fn quantile_estimate() {
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);

        let m = Metrics::new();
        for _ in 0..90 {
            m.record_delta(us(30)); // ≤ 50 µs
        }
        for _ in 0..9 {
            m.record_delta(us(150)); // ≤ 200 µs
        }
        m.record_delta(Duration::from_secs(60)); // +Inf
        let h = m.snapshot().delta_latency;
        assert_eq!(h.quantile(0.0), Some(0.00005));
        assert_eq!(h.quantile(0.5), Some(0.00005));
        assert_eq!(h.quantile(0.9), Some(0.00005)); // rank 90, the last fast one
        assert_eq!(h.quantile(0.91), Some(0.0002));
        assert_eq!(h.quantile(0.99), Some(0.0002));
        assert_eq!(h.quantile(1.0), Some(f64::INFINITY));
        assert_eq!(h.quantile(-0.1), None);
        assert_eq!(h.quantile(1.1), None);
        assert_eq!(h.quantile(f64::NAN), None);

        let hand = HistogramSnapshot {
            count: 4,
            sum: 10.0,
            buckets: vec![(1.0, 1), (2.0, 1), (4.0, 4)],
        };
        assert_eq!(hand.quantile(0.25), Some(1.0));
        assert_eq!(hand.quantile(0.26), Some(4.0));
    }

    #[test]
    fn concurrent_updates_are_counted_exactly() {
        const THREADS: u64 = 8;
        const ROUNDS: u64 = 5_000;
        let m = Arc::new(Metrics::new());
        let reader = {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                let mut last = MetricsSnapshot::default();
                for _ in 0..200 {
                    let s = m.snapshot();
                    for h in [&s.delta_latency, &s.commit_duration, &s.ops_per_commit] {
                        assert!(h.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
                        assert!(h.buckets.last().unwrap().1 <= h.count);
                    }
                    assert!(s.deltas >= last.deltas && s.retries >= last.retries);
                    last = s;
                }
            })
        };
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let m = Arc::clone(&m);
                thread::spawn(move || {
                    for i in 0..ROUNDS {
                        m.record_delta(Duration::from_nanos(1_000 * (i % 100) + t));
                        m.record_commit(us(i % 7), (i % 5) as usize);
                        m.record_retry();
                        m.record_error();
                        m.record_rejected();
                        m.record_conflict();
                        m.record_reconcile(2);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        reader.join().unwrap();

        let n = THREADS * ROUNDS;
        let s = m.snapshot();
        assert_eq!(s.deltas, n);
        assert_eq!(s.commits, n);
        assert_eq!(
            s.operations,
            THREADS * (0..ROUNDS).map(|i| i % 5).sum::<u64>()
        );
        assert_eq!(s.retries, n);
        assert_eq!(s.errors, n);
        assert_eq!(s.rejected, n);
        assert_eq!(s.conflicts, n);
        assert_eq!(s.reconciles, n);
        assert_eq!(s.repairs, 2 * n);
        for h in [&s.delta_latency, &s.commit_duration, &s.ops_per_commit] {
            assert_eq!(h.count, n);
        }
        let expected_ns: u64 = (0..THREADS)
            .map(|t| (0..ROUNDS).map(|i| 1_000 * (i % 100) + t).sum::<u64>())
            .sum();
        assert_eq!(s.delta_latency.sum, expected_ns as f64 / 1e9);
        // Every delta was under 100 µs.
        assert_eq!(s.delta_latency.buckets[2], (0.0001, n));
    }

    /// One parsed sample line: metric name, labels, value.
    fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let labels = body
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label without =");
                        assert!(is_name(k), "bad label name in {line:?}");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label value: {line:?}"));
                        assert!(!v.contains(['"', '\\', '\n']), "{line:?}");
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        (name.to_owned(), labels, value)
    }

    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    #[test]
    fn prometheus_text_parses_back() {
        let m = Metrics::new();
        for i in 0..50 {
            m.record_delta(us(10 * i));
            m.record_commit(us(100 * i), i as usize * 3);
        }
        m.record_delta(Duration::from_secs(20));
        m.record_retry();
        m.record_error();
        m.record_error();
        m.record_rejected();
        m.record_conflict();
        m.record_reconcile(4);
        m.record_reconcile(0);
        let snapshot = m.snapshot();
        let text = m.prometheus_text();
        assert_eq!(text, snapshot.prometheus_text());
        assert!(text.ends_with('\n'));

        let mut helps = BTreeSet::new();
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples: BTreeMap<String, f64> = BTreeMap::new();
        let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP without text");
                assert!(!help.is_empty());
                assert!(helps.insert(name.to_owned()), "HELP twice for {name}");
                assert!(!types.contains_key(name), "HELP after TYPE for {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE without type");
                assert!(matches!(kind, "counter" | "histogram"), "{line:?}");
                assert!(helps.contains(name), "TYPE before HELP for {name}");
                let previous = types.insert(name.to_owned(), kind.to_owned());
                assert!(previous.is_none(), "TYPE twice for {name}");
            } else {
                assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
                let (name, labels, value) = parse_sample(line);
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        let base = name.strip_suffix(suffix)?;
                        (types.get(base)? == "histogram").then_some(base)
                    })
                    .unwrap_or(&name);
                let kind = types
                    .get(family)
                    .unwrap_or_else(|| panic!("sample before its TYPE: {line:?}"));
                if kind == "counter" {
                    assert!(name.ends_with("_total") && labels.is_empty(), "{line:?}");
                    assert!(value >= 0.0 && value.fract() == 0.0, "{line:?}");
                }
                if name.ends_with("_bucket") {
                    assert_eq!(labels.keys().collect::<Vec<_>>(), ["le"], "{line:?}");
                    let le = match labels["le"].as_str() {
                        "+Inf" => f64::INFINITY,
                        le => le.parse().unwrap_or_else(|_| panic!("bad le: {line:?}")),
                    };
                    buckets
                        .entry(family.to_owned())
                        .or_default()
                        .push((le, value));
                } else {
                    assert!(labels.is_empty(), "{line:?}");
                    assert!(samples.insert(name.clone(), value).is_none(), "{line:?}");
                }
            }
        }
        assert_eq!(helps.len(), types.len());

        let expected_counters = [
            ("netfence_deltas_total", snapshot.deltas),
            ("netfence_commits_total", snapshot.commits),
            ("netfence_operations_total", snapshot.operations),
            ("netfence_retries_total", 1),
            ("netfence_errors_total", 2),
            ("netfence_rejected_deltas_total", 1),
            ("netfence_conflicts_total", 1),
            ("netfence_reconciles_total", 2),
            ("netfence_reconcile_repairs_total", 4),
        ];
        for (name, value) in expected_counters {
            assert_eq!(
                types.get(name).map(String::as_str),
                Some("counter"),
                "{name}"
            );
            assert_eq!(samples[name], value as f64, "{name}");
        }
        assert_eq!(samples["netfence_deltas_total"], 51.0);
        assert_eq!(samples["netfence_operations_total"], 3.0 * 1225.0);

        let expected_histograms = [
            ("netfence_delta_latency_seconds", &snapshot.delta_latency),
            (
                "netfence_commit_duration_seconds",
                &snapshot.commit_duration,
            ),
            ("netfence_commit_operations", &snapshot.ops_per_commit),
        ];
        for (name, h) in expected_histograms {
            assert_eq!(
                types.get(name).map(String::as_str),
                Some("histogram"),
                "{name}"
            );
            let series = &buckets[name];
            assert!(
                series.windows(2).all(|w| w[0].0 < w[1].0),
                "{name}: le ascending"
            );
            assert!(
                series.windows(2).all(|w| w[0].1 <= w[1].1),
                "{name}: cumulative"
            );
            let (last_le, last_count) = *series.last().unwrap();
            assert_eq!(last_le, f64::INFINITY, "{name}: +Inf last");
            assert_eq!(last_count, samples[&format!("{name}_count")], "{name}");
            assert_eq!(last_count, h.count as f64, "{name}");
            assert_eq!(samples[&format!("{name}_sum")], h.sum, "{name}");
            let finite: Vec<(f64, u64)> = series[..series.len() - 1]
                .iter()
                .map(|&(le, c)| (le, c as u64))
                .collect();
            assert_eq!(finite, h.buckets, "{name}: le values parse back exactly");
        }
        assert_eq!(types.len(), 12);
    }

    #[test]
    fn help_texts_need_no_escaping() {
        let families = [
            &DELTAS,
            &COMMITS,
            &OPERATIONS,
            &RETRIES,
            &ERRORS,
            &REJECTED,
            &CONFLICTS,
            &RECONCILES,
            &REPAIRS,
            &DELTA_LATENCY,
            &COMMIT_DURATION,
            &COMMIT_OPERATIONS,
        ];
        for family in families {
            assert!(family.name.starts_with("netfence_") && is_name(family.name));
            assert!(!family.help.contains(['\\', '\n']), "{}", family.name);
        }
    }

    #[test]
    fn empty_metrics_render() {
        let text = Metrics::default().prometheus_text();
        assert!(text.contains("netfence_commits_total 0\n"));
        assert!(text.contains("netfence_delta_latency_seconds_bucket{le=\"0.000025\"} 0\n"));
        assert!(text.contains("netfence_commit_operations_bucket{le=\"65536\"} 0\n"));
        assert!(text.contains("netfence_commit_operations_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("netfence_commit_duration_seconds_sum 0\n"));
    }
}
