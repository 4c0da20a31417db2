//! `bench-report`: `BENCHMARKS.md` and `docs/bench/*.svg` from the benchmarks' records.
//! `scripts/bench.sh` runs it after the benches; `scripts/bench.sh --report-only` runs
//! it alone.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use bench_report::{env, plot, record, report, stats};
use clap::Parser;

/// Writes BENCHMARKS.md and its plots from the records in target/netfence-bench/.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The workspace root: where BENCHMARKS.md, docs/bench/ and .git are.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The records' directory [default: $NETFENCE_BENCH_DIR, else
    /// $CARGO_TARGET_DIR/netfence-bench, else ROOT/target/netfence-bench].
    #[arg(long)]
    records: Option<PathBuf>,
    /// `key=value` lines from scripts/bench.sh (tool versions, commit, machine)
    /// [default: RECORDS/env.txt].
    #[arg(long)]
    env: Option<PathBuf>,
    /// The report [default: ROOT/BENCHMARKS.md].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the plots go [default: ROOT/docs/bench].
    #[arg(long)]
    plots: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    // The binary lives two levels below the workspace root; `cargo run` from anywhere
    // in the workspace then still finds it.
    let root = args
        .root
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let root = root.canonicalize().unwrap_or(root);
    let records_dir = args.records.unwrap_or_else(|| {
        std::env::var_os("NETFENCE_BENCH_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(|t| PathBuf::from(t).join("netfence-bench"))
            })
            .unwrap_or_else(|| root.join("target/netfence-bench"))
    });
    let env_file = args.env.unwrap_or_else(|| records_dir.join("env.txt"));
    let out = args.out.unwrap_or_else(|| root.join("BENCHMARKS.md"));
    let plots_dir = args.plots.unwrap_or_else(|| root.join("docs/bench"));

    let records = match record::read_all_in(&records_dir) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!(
                "bench-report: no records in {} (run scripts/bench.sh): every figure will read \"not measured\"",
                records_dir.display()
            );
            Vec::new()
        }
        Err(e) => return Err(format!("reading records in {}: {e}", records_dir.display())),
    };
    let n_records = records.len();
    let data = stats::summarize(records);

    let entries = match fs::read_to_string(&env_file) {
        Ok(t) => env::parse(&t),
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", env_file.display())),
    };
    let mut run_env = env::RunEnv::from_entries(&entries);
    run_env.fill_from_host(&root, newest_record(&records_dir));

    fs::create_dir_all(&plots_dir).map_err(|e| format!("{}: {e}", plots_dir.display()))?;
    let mut plotted = Vec::new();
    for spec in plot::specs(&data) {
        let path =
            plot::render(&data, &spec, &plots_dir).map_err(|e| format!("{}: {e}", spec.file))?;
        plotted.push(report::Plotted {
            scenario: spec.scenario.clone(),
            title: spec.title.clone(),
            link: link(&out, &path),
        });
    }

    let existing = match fs::read_to_string(&out) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", out.display())),
    };
    let notes = existing.as_deref().and_then(report::extract_notes);
    if existing.is_some() && notes.is_none() {
        eprintln!(
            "bench-report: {} has no notes markers; starting an empty notes section",
            out.display()
        );
    }
    let text = report::render(&data, &run_env, notes, &plotted);

    // Written beside and renamed over, so that a failed write never loses the notes.
    let tmp = out.with_extension("md.tmp");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &out))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "bench-report: {} records, {} series, {} plots -> {}",
        n_records,
        data.scenarios()
            .iter()
            .map(|s| data.of(s).len())
            .sum::<usize>()
            + data.bounds().len(),
        plotted.len(),
        out.display()
    );
    Ok(())
}

/// When the last record was written: the run's date when env.txt has none.
fn newest_record(dir: &Path) -> Option<SystemTime> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

/// `plot`'s path as the report links it: relative to the report's directory when it
/// is below it, so that the link works on a forge as well as locally.
fn link(report: &Path, plot: &Path) -> String {
    let base = report
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (base.canonicalize(), plot.canonicalize()) {
        (Ok(b), Ok(p)) => p
            .strip_prefix(&b)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string()),
        _ => plot.display().to_string(),
    }
}
