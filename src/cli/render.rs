//! `netfence render`: the files compiled in memory and printed as the text the iptables
//! and ipset tools would print after an apply. No kernel, no root: it is how to review a
//! change before it reaches a node, or to feed the result to other tooling.

use std::io::Write;

use clap::{Args, ValueEnum};
use netfence::ruleset::render::{ipset_save, iptables_save};
use netfence::ruleset::Family;
use serde_json::json;

use super::error::{CliError, EXIT_OK};
use super::input::Input;
use super::{compile, warn, write_json, CompileArgs, FilesArg, Format, OutputArg};

/// One part of the rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// `iptables-save` text (IPv4).
    Iptables,
    /// `ip6tables-save` text (IPv6).
    Ip6tables,
    /// `ipset save` text (both families).
    Ipset,
}

/// Arguments of `netfence render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The manifests.
    #[command(flatten)]
    pub files: FilesArg,
    /// Compiler flags.
    #[command(flatten)]
    pub compile: CompileArgs,
    /// Print only these parts, with no section headers, so that the text can go straight
    /// to `iptables-restore` or `ipset restore`. Repeatable. Default: all three, each
    /// under a `#` header.
    #[arg(long, value_enum, value_name = "PART")]
    pub only: Vec<Part>,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Runs `render`.
///
/// # Errors
/// [`CliError::Invalid`] or [`CliError::Flag`] for bad input.
pub fn run(args: &RenderArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let input = Input::load(&args.files.files)?;
    warn(&input.warnings);
    let rs = compile(&input, args.compile.config())?;
    let v4 = iptables_save(&rs, Family::Ipv4);
    let v6 = iptables_save(&rs, Family::Ipv6);
    let sets = ipset_save(&rs);
    match args.output.output {
        Format::Json => write_json(
            out,
            &json!({
                "iptables": v4, "ip6tables": v6, "ipset": sets,
                "warnings": input.warnings,
            }),
        )?,
        Format::Text if args.only.is_empty() => {
            writeln!(out, "# iptables-save (IPv4)")?;
            write!(out, "{v4}")?;
            writeln!(out, "# ip6tables-save (IPv6)")?;
            write!(out, "{v6}")?;
            writeln!(out, "# ipset save")?;
            write!(out, "{sets}")?;
        }
        Format::Text => {
            for part in [Part::Iptables, Part::Ip6tables, Part::Ipset] {
                if args.only.contains(&part) {
                    write!(
                        out,
                        "{}",
                        match part {
                            Part::Iptables => &v4,
                            Part::Ip6tables => &v6,
                            Part::Ipset => &sets,
                        }
                    )?;
                }
            }
        }
    }
    Ok(EXIT_OK)
}
