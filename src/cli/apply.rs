//! `netfence apply`: the product path. The files are validated and compiled first (so an
//! invalid input changes nothing), then fed to the engine as an agent's first full list
//! would be, and the engine converges the kernel: it adopts what is there, plans the whole
//! difference, and applies it in fail-closed order.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use netfence::ruleset::Netns;
use netfence::sync::{Engine, EngineConfig};
use serde::Serialize;

use super::error::{CliError, EXIT_OK};
use super::input::{plural, Input};
use super::{compile, warn, write_json, CompileArgs, FilesArg, Format, NetnsArg, OutputArg};

/// Arguments of `netfence apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The manifests.
    #[command(flatten)]
    pub files: FilesArg,
    /// The namespace.
    #[command(flatten)]
    pub netns: NetnsArg,
    /// Compiler flags.
    #[command(flatten)]
    pub compile: CompileArgs,
    /// Give up (exit 2) when the kernel has not converged after this many seconds of
    /// retrying (another writer keeps committing, or the kernel keeps refusing).
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = super::seconds)]
    pub timeout: Duration,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArg,
}

/// What `apply -o json` prints.
#[derive(Debug, Serialize)]
struct Report {
    /// `--netns` as given; `null` for the current namespace.
    netns: Option<String>,
    namespaces: usize,
    pods: usize,
    policies: usize,
    /// Operations the engine ran: set elements, sets, nf_tables operations.
    operations: u64,
    /// Commits that took them (0 when nothing changed).
    commits: u64,
    changed: bool,
    chains: usize,
    sets: usize,
    rules: usize,
    warnings: Vec<String>,
}

/// Runs `apply`.
///
/// # Errors
/// [`CliError::Invalid`] or [`CliError::Flag`] before anything is touched;
/// [`CliError::Kernel`] when the namespace can't be programmed.
pub fn run(args: &ApplyArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let input = Input::load(&args.files.files)?;
    warn(&input.warnings);
    let config = args.compile.config();
    // Compiling here too is cheap, and it catches a refusal of the compiler before the
    // engine starts: the engine would reject that policy alone and apply the rest.
    let desired = compile(&input, config.clone())?;
    let netns = args.netns.resolve()?;
    let engine = Engine::start(EngineConfig {
        netns: netns.clone(),
        compiler: config,
        // One convergence, then exit: no periodic reconcile thread work.
        reconcile_interval: None,
        ..EngineConfig::default()
    })
    .map_err(|e| CliError::engine(format!("opening {netns}"), &netns, &e))?;

    let mut fed = Vec::new();
    fed.extend(input.namespaces.iter().map(|n| engine.upsert_namespace(n)));
    fed.extend(input.pods.iter().map(|p| engine.upsert_pod(p)));
    fed.extend(input.policies.iter().map(|p| engine.upsert_policy(p)));
    wait_converged(&engine, &netns, args.timeout)?;
    let mut problems = Vec::new();
    for c in fed {
        // The commit that completed `ready` completed these too.
        if let Err(e) = c.wait() {
            problems.push(e.to_string());
        }
    }
    let metrics = engine.metrics();
    engine.shutdown();
    if !problems.is_empty() {
        // Unreachable while the CLI validates as the engine does; if they ever disagree,
        // say so rather than report success.
        return Err(CliError::Invalid { problems });
    }

    let report = Report {
        netns: super::netns_id(&netns),
        namespaces: input.namespaces.len(),
        pods: input.pods.len(),
        policies: input.policies.len(),
        operations: metrics.operations,
        commits: metrics.commits,
        changed: metrics.operations > 0,
        chains: desired.owned_chains().len(),
        sets: desired.sets().len(),
        rules: desired.owned_rule_count(),
        warnings: input.warnings.clone(),
    };
    match args.output.output {
        Format::Json => write_json(out, &report)?,
        Format::Text if report.changed => writeln!(
            out,
            "applied {} ({}) to {}: netfence now holds {}, {} and {}",
            plural(report.operations as usize, "operation", "operations"),
            input.summary(),
            netns,
            plural(report.chains, "chain", "chains"),
            plural(report.sets, "set", "sets"),
            plural(report.rules, "rule", "rules"),
        )?,
        Format::Text => writeln!(
            out,
            "{} already matches the files ({}): nothing changed",
            netns,
            input.summary()
        )?,
    }
    Ok(EXIT_OK)
}

/// How long a converged apply waits for sets the kernel still holds as referenced.
const DEFERRED_GRACE: Duration = Duration::from_secs(2);

/// Waits for the engine's first convergence. The engine retries a failed commit forever
/// (right for an agent); a one-shot command gives up at the first failure that is not a
/// concurrent writer (errors that are not conflicts), or at the timeout.
fn wait_converged(engine: &Engine, netns: &Netns, timeout: Duration) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    let mut pending = engine.ready();
    loop {
        match pending.wait_timeout(Duration::from_millis(20)) {
            Ok(Ok(())) => {
                // Enforced; a set the kernel still held as referenced goes on the engine's
                // next retry, which the process must live to see. The kernel lets go of
                // the references of deleted rules within milliseconds: a set still held
                // after the grace is referenced by a rule netfence did not write, and no
                // wait helps (it used to wait out the whole timeout, then exit 0).
                let grace = Instant::now() + DEFERRED_GRACE;
                let mut left = engine.status().deferred_destroys;
                while left > 0 && Instant::now() < grace.min(deadline) {
                    std::thread::sleep(Duration::from_millis(10));
                    left = engine.status().deferred_destroys;
                }
                if left == 0 {
                    return Ok(());
                }
                return Err(CliError::Kernel {
                    what: format!("converging {netns}"),
                    detail: format!(
                        "{} that netfence no longer uses can't be destroyed: the kernel \
                         says {} still referenced",
                        plural(left, "set", "sets"),
                        if left == 1 { "it is" } else { "they are" }
                    ),
                    hint: Some(
                        "the rules are in place and enforce the files; a rule netfence did \
                         not write still looks the set up: find it (`iptables-nft-save | grep \
                         -- --match-set`, `netfence diff` names the set), delete it, then run \
                         the command again"
                            .into(),
                    ),
                });
            }
            Ok(Err(e)) => {
                return Err(CliError::engine(format!("converging {netns}"), netns, &e));
            }
            Err(again) => pending = again,
        }
        let last = engine.status().last_error;
        // A refusal no retry cures ends the wait now; a race with another writer is
        // waited out until the deadline.
        let failed = last.as_ref().is_some_and(|e| !e.retryable);
        if failed || Instant::now() >= deadline {
            return Err(CliError::Kernel {
                what: format!("converging {netns}"),
                detail: last.map_or_else(|| "no commit succeeded".into(), |e| e.message),
                hint: Some(if failed {
                    "netfence could not converge; whatever it applied leaves the kernel \
                     fail-closed. `netfence status` shows what it holds"
                        .into()
                } else {
                    format!(
                        "gave up after {timeout:?}: another writer kept changing the \
                         ruleset; run the command again"
                    )
                }),
            });
        }
    }
}
