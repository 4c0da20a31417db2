//! `BENCHMARKS.md`: everything but the notes section is generated.

use std::fmt::Write as _;

use crate::env::RunEnv;
use crate::stats::{Data, Summary, CONNTRACK_XT, NETFENCE, SCENARIO_ORDER};
use crate::targets::{self, Status};

/// Opens the hand-written section that regeneration keeps.
pub const NOTES_BEGIN: &str = "<!-- notes -->";
/// Closes it.
pub const NOTES_END: &str = "<!-- /notes -->";

const DEFAULT_NOTES: &str = "_No analysis yet: write it here. This section (between the \
notes markers) is kept when the report is regenerated; the rest of the file is not._";

/// A plot the report links to.
#[derive(Clone, Debug)]
pub struct Plotted {
    /// The scenario it shows.
    pub scenario: String,
    /// Its caption.
    pub title: String,
    /// Its path relative to the report.
    pub link: String,
}

/// The notes of an existing report: the text between the markers, untouched.
pub fn extract_notes(existing: &str) -> Option<&str> {
    let start = existing.find(NOTES_BEGIN)? + NOTES_BEGIN.len();
    let len = existing[start..].find(NOTES_END)?;
    Some(&existing[start..start + len])
}

/// A duration in ns with three significant digits and a unit that fits.
pub fn ns(v: f64) -> String {
    let (x, unit) = if v < 1e3 {
        return format!("{v:.0} ns");
    } else if v < 1e6 {
        (v / 1e3, "µs")
    } else if v < 1e9 {
        (v / 1e6, "ms")
    } else {
        (v / 1e9, "s")
    };
    // Rounding may carry into the next digit (999.96 µs → "1000 µs"): acceptable
    // for a table, and clearer than switching units at a rounded boundary.
    if x >= 100.0 {
        format!("{x:.0} {unit}")
    } else if x >= 10.0 {
        format!("{x:.1} {unit}")
    } else {
        format!("{x:.2} {unit}")
    }
}

/// A named figure, in the unit its name implies.
fn extra(name: &str, v: f64) -> String {
    if name.ends_with("_bytes") {
        format!("{:.1} MB", v / 1e6)
    } else if name.ends_with("_per_sec") {
        format!("{}/s", thousands(v.round() as u64))
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let sign = if v < 0.0 { "-" } else { "" };
        format!("{sign}{}", thousands(v.abs() as u64))
    } else {
        format!("{v:.2}")
    }
}

/// An integer with thousands separators: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn or_unknown(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("unknown")
}

/// What each scenario measures, in a line; the bench's module doc has the method.
fn describe(scenario: &str) -> &'static str {
    match scenario {
        "pod_add" => "One pod created in a running cluster, from the call to the delta being in the kernel (`benches/sync.rs`).",
        "pod_delete" => "One pod deleted, from the call to the delta being in the kernel (`benches/sync.rs`).",
        "pod_relabel" => "One pod's labels changed, until the delta is in the kernel (`benches/scenarios.rs`).",
        "namespace_relabel" => "One namespace's labels changed, until the delta is in the kernel (`benches/scenarios.rs`).",
        "policy_add" => "One NetworkPolicy created, until its rules are in the kernel (`benches/scenarios.rs`).",
        "policy_change" => "One NetworkPolicy changed, until the change is in the kernel (`benches/scenarios.rs`).",
        "policy_delete" => "One NetworkPolicy deleted, until its rules are gone from the kernel (`benches/scenarios.rs`).",
        "burst" => "1,000 mixed changes submitted at once, until the last is in the kernel; `commits` is the mean number of kernel commits a burst took, `commits_max` the most; `netfence-commit` is netfence's plan for the same burst committed alone, without compiling or planning: the kernel's share (`benches/scenarios.rs`).",
        "full_sync" => "The whole cluster into an empty kernel (`calico-full`, `nft-full`: the baselines' full restore) (`benches/scenarios.rs`).",
        "restart" => "The engine shut down without flushing and a new one started over the kernel's state, handed the same cluster, until ready and converged; `calico-restart` and `nft-restart` are the reads the baselines' agents must make before they can tell what to write, which is nothing here: a floor under their restart (`benches/scenarios.rs`).",
        "rss" => "Memory: the peak RSS of an agent process holding the cluster and an engine (`peak_rss_bytes`), the agent's own before the engine started (`agent_rss_bytes`), and the difference, the engine's (`engine_rss_bytes`) (`benches/scenarios.rs`).",
        "tcp_connect" => "Data path: TCP connections through the node's forward path; samples are the mean time per connect of each sample. A size's systems stand side by side and are measured in turns, `rounds` rounds of ten samples each in a rotated order, so that a slow spell of the machine is shared (`benches/datapath.rs`).",
        _ => "See the bench that wrote it.",
    }
}

/// The systems' meanings, for the legend of every table.
const SYSTEMS: [(&str, &str); 11] = [
    ("netfence", "the engine, through its public API, committing over netlink"),
    (
        "netfence-commit",
        "(burst only) netfence's own plan for the same burst, compiled and planned untimed, then committed as the engine commits it: the kernel's work and netlink encoding alone, the floor under netfence's figure",
    ),
    (
        "calico-iptables",
        "the same delta as Calico's Felix applies it: `ipset restore` and `iptables-nft-restore --noflush`",
    ),
    (
        "nft",
        "the Calico-like state in native nftables syntax through `nft -f`, one transaction per delta; a changed chain is flushed and written whole (as knftables-based agents do), so a pod delta rewrites both dispatch sub-chains, about 1,300 rules at 10k pods, where the Calico-like delta replaces 12 to 118",
    ),
    ("calico-full", "the Calico-like baseline's full restore of the ruleset"),
    ("nft-full", "the whole ruleset through `nft -f`"),
    (
        "calico-restart",
        "(restart only) the loaded Calico-like state read back with `iptables-nft-save` and `ipset save`, as Felix reads it when it restarts; its parsing and comparing are not in it",
    ),
    (
        "nft-restart",
        "(restart only) the loaded native ruleset read back with `nft list ruleset`",
    ),
    ("none", "no ruleset (data path reference)"),
    (
        "conntrack-only",
        "(data path) one native nft chain that accepts established connections: conntrack's own cost, the least any stateful filter adds",
    ),
    (
        CONNTRACK_XT,
        "(data path) the same two rules as iptables-nft writes them, with the xt `conntrack` match: the least a stateful filter adds when `iptables-nft-save` must read it, as it must read netfence's rules",
    ),
];

/// The whole report.
pub fn render(d: &Data, env: &RunEnv, notes: Option<&str>, plots: &[Plotted]) -> String {
    let mut o = String::new();
    let w = &mut o;
    // Writing to a String can't fail.
    let _ = writeln!(w, "# netfence benchmarks\n");
    let _ = writeln!(
        w,
        "<!-- Generated by `scripts/bench.sh` (crates/bench-report) from the records in \
         target/netfence-bench/. Only the notes section is kept when it is regenerated. -->\n"
    );
    let _ = writeln!(
        w,
        "Figures of one run on {}, commit `{}`. Regenerate with `./scripts/bench.sh` \
         (measure and report) or `./scripts/bench.sh --report-only` (report from the last records).\n",
        or_unknown(&env.date),
        or_unknown(&env.git)
    );
    if d.is_empty() {
        let _ = writeln!(w, "**No records found: nothing was measured.**\n");
    }
    if d.any_smoke() {
        let _ = writeln!(
            w,
            "**Some figures come from a smoke pass (marked _smoke_): they are not \
             comparable, and no target is judged on them.**\n"
        );
    }

    let _ = writeln!(w, "## Targets (issue #7)\n");
    let _ = writeln!(w, "| target | measured | status |\n| --- | --- | --- |");
    for t in targets::evaluate(d) {
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            t.target,
            t.measured,
            t.status.label()
        );
    }
    let count = |s: Status| {
        targets::evaluate(d)
            .iter()
            .filter(|t| t.status == s)
            .count()
    };
    let _ = writeln!(
        w,
        "\n{} met, {} missed, {} not measured. Latencies are medians unless the target \
         says p99; \"flat\" is read as the 10k-pod median at most {}× the 1k-pod one.\n",
        count(Status::Met),
        count(Status::Missed),
        count(Status::NotMeasured),
        targets::FLAT_FACTOR
    );

    let _ = writeln!(w, "## Notes\n");
    // The notes carry their own line breaks, so that they come back byte for byte.
    let _ = write!(w, "{NOTES_BEGIN}");
    match notes {
        Some(n) => {
            let _ = write!(w, "{n}");
        }
        None => {
            let _ = writeln!(w, "\n{DEFAULT_NOTES}\n");
        }
    }
    let _ = writeln!(w, "{NOTES_END}\n");

    let _ = writeln!(w, "{}", crate::bounds::section(d));

    let _ = writeln!(w, "## Machine and versions\n");
    let _ = writeln!(w, "| | |\n| --- | --- |");
    let _ = writeln!(w, "| CPU | {} |", or_unknown(&env.cpu));
    let _ = writeln!(w, "| logical CPUs | {} |", or_unknown(&env.cores));
    let _ = writeln!(w, "| memory | {} |", or_unknown(&env.memory));
    let _ = writeln!(w, "| kernel | {} |", or_unknown(&env.kernel));
    let _ = writeln!(w, "| commit | `{}` |", or_unknown(&env.git));
    let _ = writeln!(w, "| date | {} |", or_unknown(&env.date));
    for (tool, version) in &env.tools {
        let _ = writeln!(w, "| {tool} | {version} |");
    }
    if env.tools.is_empty() {
        let _ = writeln!(
            w,
            "| tools | unknown (no env.txt: run `scripts/bench.sh`) |"
        );
    }

    let _ = writeln!(w, "\n## Reproducing\n");
    let _ = writeln!(
        w,
        "On Debian 12, as root (the benches build network namespaces of their own and \
         touch nothing else):\n\n\
         ```sh\n\
         ./scripts/setup.sh                 # build dependencies and the baselines' tools\n\
         ./scripts/bench.sh                 # cargo bench --locked --bench sync --bench scenarios --bench datapath --bench ipset --bench nft, then this report\n\
         ./scripts/bench.sh -- 10000p       # extra arguments go to the benches (here a criterion filter)\n\
         ./scripts/bench.sh --report-only   # this file and docs/bench/*.svg from the records already there\n\
         ```\n\n\
         Each bench leaves its records in `target/netfence-bench/<bench>.jsonl` (one JSON \
         line per scenario, size and system, every timed iteration included) and the \
         script adds `env.txt` (tool versions, commit, machine); `bench-report` reads \
         nothing else."
    );
    if let Some(c) = &env.command {
        let _ = writeln!(w, "\nThis run: `{c}`.");
    }

    let _ = writeln!(w, "\n## Systems\n");
    for (name, what) in SYSTEMS {
        let _ = writeln!(w, "- **{name}**: {what}.");
    }
    let _ = writeln!(
        w,
        "\nIn the tables, `× netfence` is the system's median over netfence's at the same \
         size: how many times longer it takes. Medians and p99 are nearest-rank over every \
         timed iteration, `n` being their count, except for `tcp_connect`, whose samples \
         are criterion's (each the mean time per connect of one sample).\n\n\
         Memory, per scenario: `engine_rss_bytes` (netfence) is the peak RSS of an agent \
         process running the scenario once, minus what the agent held before its engine \
         started (see `rss`; the peak mark is reset before each scenario, so a figure is \
         the resident set the scenario started from plus what it added). \
         `tool_rss_bytes` (baselines) is the largest peak RSS of any process the \
         baseline ran for the scenario (`iptables-nft-restore`, `ipset`, `nft`), from \
         `wait4`; the daemon that would drive those tools (Felix) is not included."
    );

    let _ = writeln!(w, "\n## Scenarios");
    let mut scenarios: Vec<String> = SCENARIO_ORDER.iter().map(|s| (*s).to_owned()).collect();
    for s in d.scenarios() {
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    for scenario in &scenarios {
        let _ = writeln!(w, "\n### {scenario}\n\n{}\n", describe(scenario));
        let rows = d.of(scenario);
        if rows.is_empty() {
            let _ = writeln!(w, "Not measured.");
            continue;
        }
        for p in plots.iter().filter(|p| &p.scenario == scenario) {
            let _ = writeln!(w, "![{}]({})\n", p.title, p.link);
        }
        table(w, d, &rows);
    }
    o
}

fn table(w: &mut String, d: &Data, rows: &[&Summary]) {
    let mut extras: Vec<&str> = Vec::new();
    for s in rows {
        for (n, _) in &s.extra {
            if !extras.contains(&n.as_str()) {
                extras.push(n);
            }
        }
    }
    let _ = write!(
        w,
        "| pods | policies | system | median | p99 | n | × netfence |"
    );
    for e in &extras {
        let _ = write!(w, " {e} |");
    }
    let _ = write!(w, "\n| ---: | ---: | --- | ---: | ---: | ---: | ---: |");
    for _ in &extras {
        let _ = write!(w, " ---: |");
    }
    let _ = writeln!(w);
    let dash = || "—".to_owned();
    for s in rows {
        let k = &s.key;
        let system = if s.smoke {
            format!("{} _smoke_", k.system)
        } else {
            k.system.clone()
        };
        let ratio = if k.system == NETFENCE {
            dash()
        } else {
            d.ratio_to_netfence(k)
                .map(|r| format!("{r:.2}×"))
                .unwrap_or_else(dash)
        };
        let _ = write!(
            w,
            "| {} | {} | {system} | {} | {} | {} | {ratio} |",
            thousands(k.pods as u64),
            thousands(k.policies as u64),
            s.median_ns.map(|v| ns(v as f64)).unwrap_or_else(dash),
            s.p99_ns.map(|v| ns(v as f64)).unwrap_or_else(dash),
            s.n,
        );
        for e in &extras {
            let _ = write!(
                w,
                " {} |",
                s.get(e).map(|v| extra(e, v)).unwrap_or_else(dash)
            );
        }
        let _ = writeln!(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;
    use crate::stats::tests::rec;

    #[test]
    fn units() {
        assert_eq!(ns(850.0), "850 ns");
        assert_eq!(ns(150_000.0), "150 µs");
        assert_eq!(ns(1_234_567.0), "1.23 ms");
        assert_eq!(ns(20_000_000.0), "20.0 ms");
        assert_eq!(ns(2.5e9), "2.50 s");
        assert_eq!(extra("peak_rss_bytes", 81_234_567.0), "81.2 MB");
        assert_eq!(extra("connects_per_sec", 19_999.6), "20,000/s");
        assert_eq!(extra("commits", 3.0), "3");
        assert_eq!(extra("commits", 3.25), "3.25");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(100), "100");
    }

    #[test]
    fn notes_survive_regeneration() {
        let d = summarize(vec![rec("pod_add", NETFENCE, 1000, 100, &[100_000])]);
        let env = RunEnv::default();
        let first = render(&d, &env, None, &[]);
        assert!(first.contains(DEFAULT_NOTES));
        // Someone writes the analysis, with markdown of its own, then regenerates.
        let notes = "\nAt 10k pods the **commit** dominates.\n\n| a | b |\n| - | - |\n";
        let edited = first.replace(extract_notes(&first).unwrap(), notes);
        let kept = extract_notes(&edited).unwrap();
        assert_eq!(kept, notes);
        let second = render(&d, &env, Some(kept), &[]);
        assert_eq!(extract_notes(&second), Some(notes));
        assert!(!second.contains(DEFAULT_NOTES));
        assert_eq!(extract_notes("no markers"), None);
        assert_eq!(extract_notes("<!-- notes --> unterminated"), None);
    }

    #[test]
    fn tables_ratios_and_missing_scenarios() {
        let mut smoke = rec("policy_add", NETFENCE, 1000, 100, &[2_000_000]);
        smoke.smoke = true;
        let mut burst = rec("burst", NETFENCE, 1000, 100, &[30_000_000]);
        burst.extra = vec![("commits".into(), 4.0)];
        let d = summarize(vec![
            rec("pod_add", NETFENCE, 10_000, 1000, &[100_000, 120_000]),
            rec("pod_add", "calico-iptables", 10_000, 1000, &[25_000_000]),
            smoke,
            burst,
        ]);
        let env = RunEnv {
            git: Some("abc123".into()),
            tools: vec![("nft".into(), "nftables v1.0.6".into())],
            ..RunEnv::default()
        };
        let plots = [Plotted {
            scenario: "pod_add".into(),
            title: "pod_add: median latency".into(),
            link: "docs/bench/pod_add.svg".into(),
        }];
        let md = render(&d, &env, None, &plots);
        assert!(md.contains("commit `abc123`"), "{md}");
        assert!(md.contains("| nft | nftables v1.0.6 |"));
        assert!(
            md.contains("| 10,000 | 1,000 | netfence | 100 µs | 120 µs | 2 | — |"),
            "{md}"
        );
        assert!(
            md.contains("| 10,000 | 1,000 | calico-iptables | 25.0 ms | 25.0 ms | 1 | 250.00× |")
        );
        assert!(md.contains("![pod_add: median latency](docs/bench/pod_add.svg)"));
        assert!(
            md.contains("| 1,000 | 100 | netfence | 30.0 ms | 30.0 ms | 1 | — | 4 |"),
            "{md}"
        );
        assert!(md.contains("netfence _smoke_"));
        assert!(md.contains("smoke pass"));
        // Scenarios without records are listed, as not measured.
        let restart = md.split("### restart").nth(1).unwrap();
        assert!(restart
            .split("###")
            .next()
            .unwrap()
            .contains("Not measured."));
        assert!(md.contains("| memory | unknown |"));
        // No kernel bounds were recorded: their section says so, after the notes.
        let bounds = md.split("## Kernel bounds").nth(1).unwrap();
        assert!(bounds
            .split("\n## ")
            .next()
            .unwrap()
            .contains("Not measured"));
        assert!(md.find(NOTES_END).unwrap() < md.find("## Kernel bounds").unwrap());
    }

    #[test]
    fn kernel_bounds_get_their_section_not_a_scenario() {
        let mut b = rec("ipset_add_slot_0", "kernel", 0, 0, &[3_700]);
        b.bench = crate::stats::BOUND.into();
        let d = summarize(vec![b, rec("pod_add", NETFENCE, 1000, 100, &[100_000])]);
        let md = render(&d, &RunEnv::default(), None, &[]);
        assert!(
            md.contains("| `ipset_add_slot_0` | one-element ADD"),
            "{md}"
        );
        assert!(!md.contains("### ipset_add_slot_0"), "{md}");
    }
}
