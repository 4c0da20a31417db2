//! The CLI's one error type, and the exit code of each kind of failure.
//!
//! The exit code is the CLI's contract with scripts: 1 says "fix your files, nothing was
//! changed", 2 says "fix the environment (privileges, namespace, kernel)". Each variant
//! maps to exactly one of them, so a new failure can't leave the code to chance.

use std::io;
use std::process::ExitCode;

use netfence::ruleset::Netns;

/// Success: the command did what it was asked, and (for `status`) found no drift.
pub const EXIT_OK: u8 = 0;
/// Invalid input: files, objects or flags. Nothing was changed.
pub const EXIT_INVALID: u8 = 1;
/// The kernel, the privileges or the system stood in the way.
pub const EXIT_KERNEL: u8 = 2;
/// `status` found drift, or `diff --exit-code` found a change to make.
pub const EXIT_DRIFT: u8 = 3;

/// What can make a `netfence` command fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Files or objects that can't be used; every problem found is listed, each naming
    /// the file, the object and the field. Nothing was changed.
    #[error("invalid input; nothing was changed:\n{}", .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// One line per problem.
        problems: Vec<String>,
    },

    /// A flag value the engine's configuration refuses (a bad `--prefix` or `--node`).
    #[error("invalid {flag}: {reason}")]
    Flag {
        /// The flag, e.g. `--prefix`.
        flag: &'static str,
        /// Why.
        reason: String,
    },

    /// The kernel (or the privileges to reach it) refused: `what` was being done, `detail`
    /// is the library's message, `hint` what the operator can do about it.
    #[error("{what}: {detail}{}", .hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
    Kernel {
        /// What netfence was doing, with the namespace.
        what: String,
        /// The underlying error.
        detail: String,
        /// What to do, when known.
        hint: Option<String>,
    },

    /// The demo failed (it builds its own sandbox, so this is an environment problem).
    #[error("demo failed: {0}")]
    Demo(String),

    /// Writing the output failed (other than a closed pipe, which is not an error).
    #[error("writing the output: {0}")]
    Output(#[from] io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Invalid { .. } | CliError::Flag { .. } => EXIT_INVALID,
            CliError::Kernel { .. } | CliError::Demo(_) | CliError::Output(_) => EXIT_KERNEL,
        }
    }

    /// One invalid-input problem.
    pub fn invalid(problem: impl Into<String>) -> Self {
        CliError::Invalid {
            problems: vec![problem.into()],
        }
    }

    /// A kernel-side failure of the library, with a hint derived from its errno.
    pub fn ruleset(what: impl Into<String>, netns: &Netns, e: &netfence::ruleset::Error) -> Self {
        // Its EBUSY is no race: the generic hint would send the operator to retry.
        let hint = match e {
            netfence::ruleset::Error::ChainInUse { chain, .. } => Some(foreign_jump_hint(chain)),
            _ => netfilter_cause(e).and_then(|n| hint(n, netns)),
        };
        CliError::Kernel {
            what: what.into(),
            detail: e.to_string(),
            hint,
        }
    }

    /// A failure of the sync engine (start, commit), with a hint where its cause says one.
    pub fn engine(what: impl Into<String>, netns: &Netns, e: &netfence::sync::Error) -> Self {
        use netfence::sync::Error as E;
        match e {
            E::Config { field, reason } => CliError::Flag {
                flag: flag_of(field),
                reason: reason.clone(),
            },
            E::Start(inner) | E::Plan(inner) => CliError::ruleset(what, netns, inner),
            other => CliError::Kernel {
                what: what.into(),
                detail: other.to_string(),
                hint: None,
            },
        }
    }

    /// The `ExitCode` to end the process with.
    pub fn to_exit(&self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}

/// The CLI flag behind an engine config field.
fn flag_of(field: &str) -> &'static str {
    match field {
        "compiler.prefix" | "prefix" => "--prefix",
        "compiler.node" | "node" => "--node",
        _ => "configuration",
    }
}

/// The netfilter error under a ruleset error, where there is one.
fn netfilter_cause(e: &netfence::ruleset::Error) -> Option<&netfence::netfilter::Error> {
    use netfence::ruleset::Error as E;
    match e {
        E::Netfilter(n) | E::Step { source: n, .. } => Some(n),
        _ => None,
    }
}

/// What the operator can do about a netfilter error.
fn hint(e: &netfence::netfilter::Error, netns: &Netns) -> Option<String> {
    let errno = e.errno();
    if matches!(errno, Some(libc::EPERM | libc::EACCES)) {
        return Some(
            "run as root: netfence needs CAP_NET_ADMIN, and CAP_SYS_ADMIN to enter another \
             network namespace"
                .into(),
        );
    }
    if errno == Some(libc::ENOENT) {
        if let netfence::netfilter::Error::Io { .. } = e {
            return Some(missing_netns_hint(netns));
        }
    }
    if matches!(errno, Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT)) {
        return Some(
            "the kernel lacks nf_tables or ipset: load nf_tables, nft_compat, ip_set and xt_set"
                .into(),
        );
    }
    if e.is_retryable() {
        return Some("another writer kept changing the ruleset; run the command again".into());
    }
    None
}

/// What to do about a rule outside netfence that jumps to netfence's chain `chain`
/// (`family table name`).
pub fn foreign_jump_hint(chain: &str) -> String {
    let name = chain.rsplit(' ').next().unwrap_or(chain);
    format!(
        "a rule netfence did not write jumps to {chain}, and netfence never deletes another \
         writer's rules: find it (`nft list ruleset | grep {name}`), delete it, then run the \
         command again"
    )
}

/// The hint for a namespace that is not there.
pub fn missing_netns_hint(netns: &Netns) -> String {
    match netns {
        Netns::Named(n) => format!("no such network namespace {n} (see `ip netns list`)"),
        Netns::Path(p) => format!("no such network namespace file {}", p.display()),
        Netns::Current => "the current network namespace can't be read".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::invalid("x").exit_code(), 1);
        let e = CliError::Kernel {
            what: "w".into(),
            detail: "d".into(),
            hint: Some("run as root".into()),
        };
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "w: d\nhint: run as root");
    }

    #[test]
    fn permission_errors_say_root() {
        let e = netfence::ruleset::Error::Netfilter(netfence::netfilter::Error::Io {
            what: "entering".into(),
            source: io::Error::from_raw_os_error(1),
        });
        let c = CliError::ruleset("opening", &Netns::Named("x".into()), &e);
        assert_eq!(c.exit_code(), EXIT_KERNEL);
        assert!(c.to_string().contains("run as root"), "{c}");
    }

    #[test]
    fn invalid_lists_every_problem() {
        let e = CliError::Invalid {
            problems: vec!["a.yaml: one".into(), "b.yaml: two".into()],
        };
        assert_eq!(
            e.to_string(),
            "invalid input; nothing was changed:\n  a.yaml: one\n  b.yaml: two"
        );
    }
}
