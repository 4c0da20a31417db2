//! `netfence flush`: everything netfence owns goes, nothing else does.
//!
//! `ruleset::Kernel::flush`, which the engine's flush also runs, plans from the observed
//! state to an empty ruleset with the same prefix, so the planner's ownership rules decide
//! what is removed, and retries after a concurrent writer or a deferred set destroy. Run
//! on a kernel handle rather than through the engine so that a failure keeps its errno
//! (and so its hint: run as root, no such namespace).

use std::io::Write;

use clap::Args;
use netfence::ruleset::{Entry, Kernel, Netns, Ruleset, TableId};
use serde::Serialize;

use super::error::{CliError, EXIT_OK};
use super::input::plural;
use super::{write_json, Format, NetnsArg, OutputArg, PrefixArg};

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
    Ruleset::new(prefix).map_err(|e| CliError::Flag {
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
    let flushed = kernel.flush(prefix, &tables).map_err(|e| fail(&e))?;
    if !flushed.left.is_empty() {
        return Err(left_over(&netns));
    }
    if let Some(chain) = flushed.kept.first() {
        return Err(CliError::Kernel {
            what: format!("flushing {netns}"),
            detail: format!(
                "kept {}, emptied: a rule outside netfence still jumps to {}",
                flushed.kept.join(", "),
                if flushed.kept.len() == 1 {
                    "it"
                } else {
                    "them"
                }
            ),
            hint: Some(super::error::foreign_jump_hint(chain)),
        });
    }
    let mut report = Report {
        netns: super::netns_id(&netns),
        operations: flushed.operations,
        ..Report::default()
    };
    count(&flushed.before, &mut report);
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
