//! `netfence diff`: the plan `apply` would run, read-only. It observes the kernel and plans
//! exactly as the engine does on its first convergence (a full plan from the observed
//! state), and sends nothing but dump requests.

use std::io::Write;

use clap::Args;
use netfence::ruleset::{plan, Kernel};
use serde_json::json;

use super::error::{CliError, EXIT_DRIFT, EXIT_OK};
use super::input::Input;
use super::{compile, warn, write_json, CompileArgs, FilesArg, Format, NetnsArg, OutputArg};

/// Arguments of `netfence diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The manifests.
    #[command(flatten)]
    pub files: FilesArg,
    /// The namespace.
    #[command(flatten)]
    pub netns: NetnsArg,
    /// Compiler flags.
    #[command(flatten)]
    pub compile: CompileArgs,
    /// Exit 3 when there is something to change (as `git diff --exit-code`), 0 when not.
    #[arg(long)]
    pub exit_code: bool,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Runs `diff`.
///
/// # Errors
/// [`CliError::Invalid`] or [`CliError::Flag`] for bad input; [`CliError::Kernel`] when
/// the namespace can't be read, or the plan is impossible (a set that must change type
/// while rules use it).
pub fn run(args: &DiffArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let input = Input::load(&args.files.files)?;
    warn(&input.warnings);
    let config = args.compile.config();
    let desired = compile(&input, config.clone())?;
    let netns = args.netns.resolve()?;
    let what = format!("reading {netns}");
    let mut kernel = Kernel::open(&netns).map_err(|e| CliError::ruleset(&what, &netns, &e))?;
    let current = kernel
        .observe(&config.prefix, &config.tables())
        .map_err(|e| CliError::ruleset(&what, &netns, &e))?;
    let p = plan(&current, &desired)
        .map_err(|e| CliError::ruleset(format!("planning for {netns}"), &netns, &e))?;
    match args.output.output {
        Format::Text => write!(
            out,
            "{}",
            super::plan::text(&p, &current, &netns.to_string())
        )?,
        Format::Json => {
            let mut v = super::plan::json(&p, &current);
            v["netns"] = json!(super::netns_id(&netns));
            v["warnings"] = json!(input.warnings);
            write_json(out, &v)?;
        }
    }
    Ok(if args.exit_code && !p.is_empty() {
        EXIT_DRIFT
    } else {
        EXIT_OK
    })
}
