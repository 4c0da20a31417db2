//! `bench-report`: reads the JSON-lines records the benchmarks leave in
//! `target/netfence-bench/` and writes `BENCHMARKS.md` (machine, versions, commands,
//! a table per scenario, the targets judged from the data) and the SVG plots
//! under `docs/bench/`.
//!
//! It never starts a process: tool versions and the git commit come from the
//! `env.txt` that `scripts/bench.sh` writes beside the records; the machine and
//! kernel are read from `/proc` when `env.txt` doesn't name them.

#[path = "../../../benches/common/record.rs"]
pub mod record;

pub mod bounds;
pub mod env;
pub mod plot;
pub mod report;
pub mod stats;
pub mod targets;
