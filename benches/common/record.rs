//! What a benchmark leaves for the report: one JSON line per (scenario, size, system),
//! appended to `target/netfence-bench/<bench>.jsonl`.
//!
//! Criterion keeps per-sample means; the report needs every timed delta (for the p99)
//! and figures criterion has no place for (commits per burst, peak RSS, connection
//! rates). Each bench therefore writes its own records beside criterion's, and
//! `bench-report` turns them into `BENCHMARKS.md` and the plots. A bench truncates its
//! file when it starts ([`Recorder::new`]), so the file holds one run.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One measured series.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record {
    /// The bench that wrote it (`sync`, `scenarios`, `datapath`).
    pub bench: String,
    /// What was measured, e.g. `pod_add`, `policy_change`, `full_sync`, `tcp_connect`.
    pub scenario: String,
    /// Who did it: `netfence`, `calico-iptables` (iptables-nft-restore --noflush +
    /// ipset restore), `nft` (`nft -f` of the same delta in native syntax),
    /// `calico-full` (full restore), `none` (no ruleset).
    pub system: String,
    /// Pods in the cluster.
    pub pods: usize,
    /// Policies in the cluster.
    pub policies: usize,
    /// Whether the run was the CI smoke pass (figures not comparable).
    pub smoke: bool,
    /// Every timed iteration, in nanoseconds, in the order taken. Empty for rate records.
    pub samples_ns: Vec<u64>,
    /// Further figures by name: `commits`, `peak_rss_bytes`, `connects_per_sec`, ...
    pub extra: Vec<(String, f64)>,
}

impl Record {
    /// A record with no samples yet.
    pub fn new(bench: &str, scenario: &str, system: &str, pods: usize, policies: usize) -> Self {
        Self {
            bench: bench.to_owned(),
            scenario: scenario.to_owned(),
            system: system.to_owned(),
            pods,
            policies,
            ..Self::default()
        }
    }

    /// Adds one timed iteration.
    pub fn push(&mut self, d: Duration) {
        self.samples_ns
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Sets a named figure, replacing an earlier one of the same name.
    pub fn set(&mut self, name: &str, value: f64) {
        self.extra.retain(|(n, _)| n != name);
        self.extra.push((name.to_owned(), value));
    }

    /// A named figure.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.extra.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The `q` quantile (0..=1) of the samples, nearest rank.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.samples_ns.is_empty() {
            return None;
        }
        let mut s = self.samples_ns.clone();
        s.sort_unstable();
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        Some(Duration::from_nanos(s[rank - 1]))
    }

    /// The median of the samples.
    pub fn median(&self) -> Option<Duration> {
        self.quantile(0.5)
    }
}

/// Where the records of one bench go: `$NETFENCE_BENCH_DIR` if set, else
/// `netfence-bench` in the target directory.
pub fn dir() -> PathBuf {
    // An explicit directory wins, so that a run (or the report's tests) can keep its
    // records apart from the usual ones.
    if let Some(d) = std::env::var_os("NETFENCE_BENCH_DIR") {
        return PathBuf::from(d);
    }
    // Benches run with the package root as the working directory; CARGO_TARGET_DIR
    // moves the target directory, as it moves criterion's.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("netfence-bench")
}

/// Whether this is a smoke pass: `--quick`, `cargo test` mode (no `--bench`: criterion
/// runs each routine once) or `NETFENCE_BENCH_SMOKE=1`.
pub fn smoke() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--quick")
        || !args.iter().any(|a| a == "--bench")
        || std::env::var("NETFENCE_BENCH_SMOKE").is_ok_and(|v| v == "1")
}

/// Writes `records` to `<file>.jsonl`, a file two benches share (`bound.jsonl`: the ipset
/// and nft benches): the other bench's lines are kept, and every earlier record of bench
/// `file` whose scenario starts with `prefix` is replaced, so that the file holds the last
/// run of each bench and no figures of two runs mix. [`Recorder::new`] would empty it.
pub fn write_merged(file: &str, prefix: &str, records: &[Record]) {
    if records.is_empty() {
        return;
    }
    let path = dir().join(format!("{file}.jsonl"));
    let mut text: String = fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !serde_json::from_str::<Record>(l)
                    .is_ok_and(|r| r.bench == file && r.scenario.starts_with(prefix))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    for r in records {
        text += &serde_json::to_string(r).expect("records serialize");
        text.push('\n');
    }
    // The records are a by-product of the measurement: a bench that can't write them
    // still ran, and says so.
    if let Err(e) = fs::create_dir_all(dir()).and_then(|()| fs::write(&path, text)) {
        eprintln!("records: can't write {}: {e}", path.display());
    }
}

/// Appends the records of one bench run to its file.
pub struct Recorder {
    file: Option<File>,
}

impl Recorder {
    /// Starts `bench`'s file afresh. A bench that can't write its records still runs
    /// (it says so once): the records are a by-product of the measurement.
    pub fn new(bench: &str) -> Self {
        let path = dir().join(format!("{bench}.jsonl"));
        let file = fs::create_dir_all(dir()).and_then(|()| File::create(&path));
        match file {
            Ok(f) => Self { file: Some(f) },
            Err(e) => {
                eprintln!("records: can't write {}: {e}", path.display());
                Self { file: None }
            }
        }
    }

    /// Appends one record (a line), flushed at once so that an interrupted run keeps
    /// what it measured.
    pub fn write(&mut self, r: &Record) {
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(r).expect("records serialize");
            if let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush()) {
                eprintln!("records: write failed: {e}");
                self.file = None;
            }
        }
    }
}

/// Reads every record in the directory's `*.jsonl` files (for the report).
pub fn read_all() -> std::io::Result<Vec<Record>> {
    read_all_in(&dir())
}

/// Reads every record in `dir`'s `*.jsonl` files: the report is built outside the
/// root package, where [`dir`]'s default would point elsewhere.
pub fn read_all_in(dir: &Path) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for p in paths {
        let text = fs::read_to_string(&p)?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let r = serde_json::from_str(line).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: {e}", p.display(), i + 1),
                )
            })?;
            out.push(r);
        }
    }
    Ok(out)
}

/// The process's peak resident set so far (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
