//! The `netfence` command line: argument parsing, the shared pieces of the commands
//! (input files, target namespace, compiler flags, output format), and exit codes.
//!
//! Each command lives in its own module. None of them starts a process: the kernel is
//! reached only through the library (netlink), which is what lets `render` run without
//! root and `diff`/`status` read without changing anything.

mod apply;
mod diff;
pub mod error;
mod flush;
pub mod input;
mod plan;
mod render;
mod status;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use netfence::policy::{Compiler, CompilerConfig};
use netfence::ruleset::{Netns, Ruleset};

use error::{CliError, EXIT_INVALID, EXIT_OK};
use input::Input;

/// What `--help` shows after the commands: the contract scripts rely on.
const EXIT_CODES: &str = "\
Exit codes:
  0  ok (status: no drift)
  1  invalid input: files, objects or flags; nothing was changed
  2  kernel, permission or system error (e.g. not root, no such network namespace)
  3  status: drift found; diff --exit-code: there are changes to make";

/// Enforces Kubernetes NetworkPolicy on a Linux node with nf_tables and ipset, spoken
/// over netlink (it never runs iptables, nft or ipset).
#[derive(Debug, Parser)]
#[command(
    name = "netfence",
    version,
    about = "Enforce Kubernetes NetworkPolicy with nf_tables and ipset, over netlink",
    long_about = "Enforce Kubernetes NetworkPolicy with nf_tables and ipset, over netlink.\n\n\
        netfence reads namespaces, pods and NetworkPolicies as `kubectl get \
        ns,pods,networkpolicies -A -o yaml` prints them, compiles them into iptables-nft \
        compatible chains and ipsets, and converges a network namespace to them. It owns \
        only the chains and sets named with its prefix and its own commented jump rules; \
        every other rule and set is left alone.",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge the kernel to the state in the files.
    #[command(
        long_about = "Converge the kernel to the state in the files.\n\n\
            The files hold the whole desired state: what they don't mention (a policy \
            deleted since the last apply) is removed. Every object is validated first; one \
            invalid object fails the command before anything is changed. The change is \
            applied by netfence's engine: it adopts what an earlier run left, and orders set \
            updates around one atomic nf_tables commit so that no moment of the update \
            allows more than the old or the new state.",
        after_help = EXIT_CODES
    )]
    Apply(apply::ApplyArgs),
    /// Print the plan that apply would run, without changing anything.
    #[command(
        long_about = "Print the plan that apply would run, without changing anything.\n\n\
            The plan is in execution order: set creations and member changes that close \
            traffic, then the one atomic nf_tables batch (as iptables rule lines), then the \
            member changes that open traffic and set destructions.",
        after_help = EXIT_CODES
    )]
    Diff(diff::DiffArgs),
    /// Print the iptables-save and ipset save text of the files (no root, no kernel).
    #[command(
        long_about = "Print the iptables-save and ipset save text of the files.\n\n\
            Needs no root and no kernel: the files are compiled in memory. The text is what \
            iptables-nft-save, ip6tables-nft-save and `ipset save` would print for \
            netfence's part of a namespace after `netfence apply` of the same files.",
        after_help = EXIT_CODES
    )]
    Render(render::RenderArgs),
    /// Print what netfence owns in the kernel, and whether it has drifted.
    #[command(
        long_about = "Print what netfence owns in the kernel, and whether it has drifted.\n\n\
            Lists netfence's chains (with rule counts), its sets (type, family, members), \
            its rules in the built-in chains, stray rules in its chains that it did not \
            write, broken or missing references, and a count of the foreign objects it \
            leaves alone. With -f, also compares the kernel with the compiled files: any \
            operation apply would run is drift.\n\n\
            Exits 0 when in sync and 3 when drifted, so it can serve as a health check.",
        after_help = EXIT_CODES
    )]
    Status(status::StatusArgs),
    /// Remove everything netfence owns, and nothing else.
    #[command(
        long_about = "Remove everything netfence owns, and nothing else.\n\n\
            Deletes netfence's jump rules from the built-in chains, then its chains, then \
            its sets. Foreign rules, chains, sets and tables stay as they are.",
        after_help = EXIT_CODES
    )]
    Flush(flush::FlushArgs),
    /// Run the NetworkPolicy walkthrough in a throwaway sandbox, then clean up.
    #[command(
        long_about = "Run the NetworkPolicy walkthrough in a throwaway sandbox, then clean up.\n\n\
            Builds its own network namespaces, so it needs root, and touches nothing else.",
        after_help = EXIT_CODES
    )]
    Demo,
}

/// Manifests to read: required by `apply`, `diff` and `render`.
#[derive(Debug, Args)]
pub struct FilesArg {
    /// Manifests: multi-document YAML or JSON, `kind: List` included, as `kubectl get
    /// ns,pods,networkpolicies -A -o yaml` prints them. `-` reads standard input; a
    /// directory reads every *.yaml, *.yml and *.json in it. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        required = true,
        num_args = 1..,
        action = ArgAction::Append
    )]
    pub files: Vec<String>,
}

/// The network namespace to work in.
#[derive(Debug, Args)]
pub struct NetnsArg {
    /// Network namespace to work in: a name under /run/netns (as `ip netns add` makes
    /// them) or a path such as /proc/PID/ns/net. Default: the current one.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
}

impl NetnsArg {
    /// The namespace, checked to exist: a missing one is an environment error (exit 2)
    /// with a hint, rather than the socket layer's bare ENOENT.
    pub fn resolve(&self) -> Result<Netns, CliError> {
        let netns = match self.netns.as_deref() {
            None => Netns::Current,
            Some("" | "." | "..") => {
                return Err(CliError::Flag {
                    flag: "--netns",
                    reason: "needs a namespace name or a path".into(),
                })
            }
            Some(p) if p.contains('/') => Netns::Path(p.into()),
            Some(n) => Netns::Named(n.into()),
        };
        if let Some(path) = netns.path() {
            if let Err(e) = std::fs::metadata(&path) {
                if e.kind() == io::ErrorKind::NotFound {
                    return Err(CliError::Kernel {
                        what: format!("opening {netns}"),
                        detail: format!("{} does not exist", path.display()),
                        hint: Some(error::missing_netns_hint(&netns)),
                    });
                }
            }
        }
        Ok(netns)
    }
}

/// The name prefix netfence owns.
#[derive(Debug, Args)]
pub struct PrefixArg {
    /// Prefix of every chain and set netfence owns: a letter, then letters or digits, then
    /// one `-`, at most 11 bytes. Its rules' comments start with the prefix's stem (`nf:`
    /// for `nf-`). Two instances with different prefixes coexist.
    #[arg(long, value_name = "PREFIX", default_value = netfence::ruleset::DEFAULT_PREFIX)]
    pub prefix: String,
}

/// How the files are compiled.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// This node's name: only pods with `spec.nodeName` equal to it are isolated here
    /// (pods elsewhere still count as peers). Default: every pod is local.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The name prefix.
    #[command(flatten)]
    pub prefix: PrefixArg,
}

impl CompileArgs {
    /// The compiler configuration these flags describe.
    pub fn config(&self) -> CompilerConfig {
        CompilerConfig {
            prefix: self.prefix.prefix.clone(),
            node: self.node.clone(),
            ..CompilerConfig::default()
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Plain text for people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// The `-o` flag.
#[derive(Debug, Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// Parses the command line, runs the command, prints errors, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap exits 2 on a usage error, which netfence reserves for kernel errors: a
            // bad flag is invalid input. Help and version are not errors.
            return ExitCode::from(if e.use_stderr() {
                EXIT_INVALID
            } else {
                EXIT_OK
            });
        }
    };
    // Not locked for the whole run: the demo may print from threads of its own, which
    // would block on a lock this thread holds. Each write takes the lock briefly.
    let mut out = io::stdout();
    let result = run(cli.command, &mut out).and_then(|code| {
        out.flush()?;
        Ok(code)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        // A reader that went away (`netfence render | head`) is not a failure.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("netfence: error: {e}");
            e.to_exit()
        }
    }
}

/// Runs one command, writing its report to `out`; returns the exit code on success.
fn run(command: Command, out: &mut dyn Write) -> Result<u8, CliError> {
    match command {
        Command::Apply(a) => apply::run(&a, out),
        Command::Diff(a) => diff::run(&a, out),
        Command::Render(a) => render::run(&a, out),
        Command::Status(a) => status::run(&a, out),
        Command::Flush(a) => flush::run(&a, out),
        Command::Demo => match netfence::demo::run(out) {
            Ok(()) => Ok(EXIT_OK),
            // The demo has cleaned up; a reader that went away is not its failure.
            Err(netfence::demo::DemoError::Output(e)) => Err(CliError::Output(e)),
            Err(e) => Err(CliError::Demo(e.to_string())),
        },
    }
}

/// Prints warnings on standard error, where they don't mix into text or JSON output.
pub fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("netfence: warning: {w}");
    }
}

/// Compiles the input in memory.
///
/// # Errors
/// [`CliError::Flag`] for a bad `--prefix` or `--node`; [`CliError::Invalid`] if the
/// compiler refuses the cluster (a netfence bug, since every object was validated, but
/// still nothing has been changed).
pub fn compile(input: &Input, config: CompilerConfig) -> Result<Ruleset, CliError> {
    let mut c = Compiler::new(config).map_err(config_error)?;
    c.compile(&input.cluster).cloned().map_err(|e| {
        CliError::invalid(format!(
            "the files can't be compiled (a netfence bug; please report it): {e}"
        ))
    })
}

/// A compiler config error as the flag it came from.
fn config_error(e: netfence::policy::Error) -> CliError {
    match e {
        netfence::policy::Error::Config { field, reason } => CliError::Flag {
            flag: match field {
                "prefix" => "--prefix",
                "node" => "--node",
                _ => "configuration",
            },
            reason,
        },
        other => CliError::invalid(other.to_string()),
    }
}

/// The namespace as scripts name it: the name or path given to `--netns`, `None` for the
/// current one. (Text output uses `Netns`'s `Display`, "network namespace NAME".)
pub fn netns_id(netns: &Netns) -> Option<String> {
    match netns {
        Netns::Current => None,
        Netns::Named(n) => Some(n.clone()),
        Netns::Path(p) => Some(p.display().to_string()),
    }
}

/// Writes `value` as pretty JSON and a newline.
pub fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// Parses a `--timeout` value in seconds.
fn seconds(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(n > 0.0 && n <= 86_400.0) {
        return Err("must be above 0 and at most 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn netns_names_and_paths() {
        let a = NetnsArg { netns: None };
        assert_eq!(a.resolve().ok(), Some(Netns::Current));
        let a = NetnsArg {
            netns: Some("surely-not-a-namespace-netfence".into()),
        };
        let e = a.resolve().expect_err("missing namespace");
        assert_eq!(e.exit_code(), error::EXIT_KERNEL);
        assert!(e.to_string().contains("ip netns list"), "{e}");
        let a = NetnsArg {
            netns: Some("/proc/self/ns/net".into()),
        };
        assert_eq!(
            a.resolve().ok(),
            Some(Netns::Path("/proc/self/ns/net".into()))
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("0").is_err());
        assert!(seconds("x").is_err());
    }
}
