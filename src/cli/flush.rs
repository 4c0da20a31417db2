//! `netfence flush`: everything netfence owns goes, nothing else does.
//!
//! It plans from the observed state to an empty ruleset with the same prefix, as the
//! engine's own flush does, so the planner's ownership rules decide what is removed:
//! netfence's jump rules (recognised by their comments) first with its chains in one
//! atomic batch, then its sets once no rule references them. Run directly on a kernel
//! handle rather than through the engine so that a failure keeps its errno (and so its
//! hint: run as root, no such namespace).

use std::io::Write;

use clap::Args;
use netfence::ruleset::{plan, Entry, Kernel, Netns, Ruleset, TableId};
use serde::Serialize;

use super::error::{CliError, EXIT_OK};
use super::input::plural;
use super::{write_json, Format, NetnsArg, OutputArg, PrefixArg};

/// How many times a flush observes and plans again after a concurrent writer got in
/// first, or after a set destroy the kernel deferred (it releases a set's last reference
/// asynchronously).
const TRIES: usize = 5;

/// Arguments of `netfence flush`.
#[derive(Debug, Args)]
pub struct FlushArgs {
    /// The namespace.
    #[command(flatten)]
    pub netns: NetnsArg,
    /// The prefix whose objects go.
    #[command(flatten)]
    pub prefix: PrefixArg,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArg,
}

/// What `flush -o json` prints: what was removed.
#[derive(Debug, Default, Serialize)]
struct Report {
    /// `--netns` as given; `null` for the current namespace.
    netns: Option<String>,
    chains: usize,
    sets: usize,
    /// netfence's rules removed from built-in chains (rules in its own chains go with them).
    hook_rules: usize,
    operations: usize,
}

/// Runs `flush`.
///
/// # Errors
/// [`CliError::Flag`] for a bad prefix; [`CliError::Kernel`] when the namespace can't be
/// read or changed.
pub fn run(args: &FlushArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let prefix = &args.prefix.prefix;
    let empty = Ruleset::new(prefix).map_err(|e| CliError::Flag {
        flag: "--prefix",
        reason: e.to_string(),
    })?;
    let netns = args.netns.resolve()?;
    let tables = [
        TableId::filter(netfence::ruleset::Family::Ipv4),
        TableId::filter(netfence::ruleset::Family::Ipv6),
    ];
    let fail =
        |e: &netfence::ruleset::Error| CliError::ruleset(format!("flushing {netns}"), &netns, e);
    let mut kernel = Kernel::open(&netns).map_err(|e| fail(&e))?;
    let mut report = Report {
        netns: super::netns_id(&netns),
        ..Report::default()
    };
    for attempt in 1..=TRIES {
        let mut current = kernel.observe(prefix, &tables).map_err(|e| fail(&e))?;
        if attempt == 1 {
            count(&current, &mut report);
        }
        let p = plan(&current, &empty).map_err(|e| fail(&e))?;
        if p.is_empty() {
            break;
        }
        match kernel.apply(&p, &mut current) {
            Ok(applied) => {
                report.operations += p.cost();
                if applied.deferred.is_empty() {
                    break;
                }
                // A set still referenced for an instant: the next round destroys it.
            }
            Err(e) if e.is_retryable() && attempt < TRIES => continue,
            Err(e) => return Err(fail(&e)),
        }
        if attempt == TRIES {
            return Err(left_over(&netns));
        }
    }
    match args.output.output {
        Format::Json => write_json(out, &report)?,
        Format::Text if report.operations == 0 => {
            writeln!(out, "netfence (prefix {prefix}) owned nothing in {netns}")?;
        }
        Format::Text => writeln!(
            out,
            "removed from {netns}: {}, {}, {} in built-in chains",
            plural(report.chains, "chain", "chains"),
            plural(report.sets, "set", "sets"),
            plural(report.hook_rules, "netfence rule", "netfence rules"),
        )?,
    }
    Ok(EXIT_OK)
}

/// Counts what netfence owns in `rs` into `report`.
fn count(rs: &Ruleset, report: &mut Report) {
    report.chains = rs.owned_chains().len();
    report.sets = rs.sets().len();
    report.hook_rules = rs
        .tables()
        .values()
        .flat_map(|t| t.chains.iter())
        .filter(|(name, _)| !rs.owns(name))
        .flat_map(|(_, c)| c.entries())
        .filter(|e| matches!(e, Entry::Owned(_)))
        .count();
}

/// The error for sets that outlived every retry.
fn left_over(netns: &Netns) -> CliError {
    CliError::Kernel {
        what: format!("flushing {netns}"),
        detail: "some sets were still referenced after every retry".into(),
        hint: Some("run netfence flush again; netfence status shows what is left".into()),
    }
}
