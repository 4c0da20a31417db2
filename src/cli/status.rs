//! `netfence status`: what netfence owns in a namespace, read back from the kernel (the
//! only place its state lives), and whether it has drifted.
//!
//! Drift is anything the next `apply` would have to repair:
//! - stray rules: in netfence's chains but not written by it, or carrying its marker with
//!   an id that doesn't match the content (tampered);
//! - broken structure: a rule jumping to a chain that isn't there, a lookup of a set
//!   netfence doesn't hold, an owned chain nothing jumps to (e.g. its jump from
//!   `FORWARD` was deleted, which silently switches enforcement off), an owned set name of
//!   a type netfence does not manage;
//! - not drift: an owned chain that is empty and that only foreign rules (in chains
//!   netfence does not own) jump to. The planner keeps such a chain, emptied, where it would delete it, because
//!   the kernel refuses to delete a chain something jumps to; `apply` can't remove it
//!   while that jump stands, and an empty chain decides nothing. It is listed as kept.
//! - with `-f`: any operation between the kernel and the compiled files (a flushed set, a
//!   policy changed since the last apply).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use clap::Args;
use netfence::ruleset::{plan, Entry, Kernel, Ruleset, TableId};
use serde::Serialize;

use super::error::{CliError, EXIT_DRIFT, EXIT_OK};
use super::input::{plural, Input};
use super::plan::{hook_name, policy_name};
use super::{compile, warn, write_json, CompileArgs, Format, NetnsArg, OutputArg};

/// Arguments of `netfence status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The namespace.
    #[command(flatten)]
    pub netns: NetnsArg,
    /// Also compare the kernel with these manifests (see `apply -f`); any difference is
    /// drift. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", num_args = 1.., action = clap::ArgAction::Append)]
    pub files: Vec<String>,
    /// Compiler flags (with -f; the prefix always).
    #[command(flatten)]
    pub compile: CompileArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArg,
}

/// An owned chain.
#[derive(Debug, Serialize)]
struct ChainInfo {
    family: &'static str,
    table: String,
    name: String,
    /// `hook forward, priority 0, policy ACCEPT` for a base chain.
    base: Option<String>,
    rules: usize,
    strays: usize,
}

/// An owned set.
#[derive(Debug, Serialize)]
struct SetInfo {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    family: &'static str,
    members: usize,
    maxelem: u32,
    /// Owned rules that look it up.
    references: usize,
}

/// A rule, located.
#[derive(Debug, Serialize)]
struct RuleInfo {
    family: &'static str,
    table: String,
    chain: String,
    handle: Option<u64>,
    rule: String,
}

/// What netfence leaves alone.
#[derive(Debug, Default, Serialize)]
struct ForeignInfo {
    chains: usize,
    rules: usize,
    sets: usize,
}

/// The comparison with `-f`.
#[derive(Debug, Serialize)]
struct FilesInfo {
    in_sync: bool,
    /// Operations `apply` would run.
    operations: usize,
}

/// What `status` reports (`-o json` prints it as is).
#[derive(Debug, Serialize)]
struct Report {
    /// `--netns` as given; `null` for the current namespace.
    netns: Option<String>,
    /// "network namespace NAME", for the text.
    #[serde(skip)]
    place: String,
    prefix: String,
    owns_anything: bool,
    chains: Vec<ChainInfo>,
    sets: Vec<SetInfo>,
    /// netfence's rules in chains it does not own (its jumps from the built-in chains).
    hook_rules: Vec<RuleInfo>,
    strays: Vec<RuleInfo>,
    /// Broken references and unreachable chains, one sentence each.
    problems: Vec<String>,
    /// Empty owned chains that only foreign rules jump to, one sentence each: kept for
    /// that jump, not drift.
    kept: Vec<String>,
    foreign: ForeignInfo,
    files: Option<FilesInfo>,
    drifted: bool,
}

/// Runs `status`.
///
/// # Errors
/// [`CliError::Invalid`] or [`CliError::Flag`] for bad `-f` input or flags (checked before
/// the kernel is read); [`CliError::Kernel`] when the namespace can't be read.
pub fn run(args: &StatusArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let config = args.compile.config();
    let desired = if args.files.is_empty() {
        None
    } else {
        let input = Input::load(&args.files)?;
        warn(&input.warnings);
        Some(compile(&input, config.clone())?)
    };
    // Validate the prefix even without -f, so that a typo is exit 1, not an odd dump.
    netfence::ruleset::Ruleset::new(&config.prefix).map_err(|e| CliError::Flag {
        flag: "--prefix",
        reason: e.to_string(),
    })?;
    let netns = args.netns.resolve()?;
    let what = format!("reading {netns}");
    let mut kernel = Kernel::open(&netns).map_err(|e| CliError::ruleset(&what, &netns, &e))?;
    let current = kernel
        .observe(&config.prefix, &config.tables())
        .map_err(|e| CliError::ruleset(&what, &netns, &e))?;
    let files = match &desired {
        None => None,
        Some(d) => {
            let p = plan(&current, d)
                .map_err(|e| CliError::ruleset(format!("planning for {netns}"), &netns, &e))?;
            Some(FilesInfo {
                in_sync: p.is_empty(),
                operations: p.cost(),
            })
        }
    };
    let report = Report::new(&current, &netns, files);
    match args.output.output {
        Format::Json => write_json(out, &report)?,
        Format::Text => write!(out, "{}", report.text())?,
    }
    Ok(if report.drifted { EXIT_DRIFT } else { EXIT_OK })
}

impl Report {
    /// Reads the report off an observed state.
    fn new(rs: &Ruleset, netns: &netfence::ruleset::Netns, files: Option<FilesInfo>) -> Report {
        let refs = rs.set_references();
        let mut chains = Vec::new();
        let mut hook_rules = Vec::new();
        let mut strays = Vec::new();
        let mut problems = Vec::new();
        let mut kept = Vec::new();
        let mut foreign = ForeignInfo::default();
        for (tid, t) in rs.tables() {
            let family = tid.family.name();
            // Chains some owned rule of this table jumps or goes to.
            let targets: BTreeSet<&str> =
                t.chains.values().flat_map(|c| c.jump_targets()).collect();
            // Chains that a foreign rule jumps to, with the first such rule. Strays don't
            // count: apply deletes them, and the chain they jump to with them.
            let mut opaque: BTreeMap<&str, String> = BTreeMap::new();
            for (from, c) in t.chains.iter().filter(|(_, c)| c.has_opaque_jumps()) {
                for (e, to) in c.observed_jumps() {
                    if !matches!(e, Entry::Foreign(_)) {
                        continue;
                    }
                    opaque.entry(to).or_insert_with(|| {
                        let handle = e
                            .handle()
                            .map(|h| format!(" (handle {h})"))
                            .unwrap_or_default();
                        format!("a rule in {from}{handle}")
                    });
                }
            }
            for (name, c) in &t.chains {
                let owned = rs.owns(name);
                let locate = |handle, rule| RuleInfo {
                    family,
                    table: tid.name.clone(),
                    chain: name.clone(),
                    handle,
                    rule,
                };
                let mut n_strays = 0;
                for e in c.entries() {
                    match e {
                        Entry::Owned(r) => {
                            if !owned {
                                hook_rules.push(locate(
                                    r.handle,
                                    r.kernel_rule(rs.marker()).to_iptables(tid.family),
                                ));
                            }
                            check_references(rs, tid, name, r, &mut problems);
                        }
                        Entry::Stray(o) => {
                            n_strays += 1;
                            strays.push(locate(o.handle, o.text.clone()));
                        }
                        Entry::Foreign(_) => foreign.rules += 1,
                    }
                }
                if !owned {
                    foreign.chains += 1;
                    continue;
                }
                if c.base.is_none() && !targets.contains(name.as_str()) {
                    match opaque.get(name.as_str()) {
                        Some(from) if c.owned().next().is_none() => kept.push(format!(
                            "chain {tid} {name}, empty: {from} that netfence did not write \
                             jumps to it; the first apply after that jump goes deletes it"
                        )),
                        Some(from) => problems.push(format!(
                            "chain {tid} {name}: no netfence rule jumps to it, only {from} \
                             that netfence did not write"
                        )),
                        None => problems.push(format!(
                            "chain {tid} {name} is unreachable: no netfence rule jumps to it"
                        )),
                    }
                }
                chains.push(ChainInfo {
                    family,
                    table: tid.name.clone(),
                    name: name.clone(),
                    base: c.base.map(|b| {
                        format!(
                            "hook {}, priority {}, policy {}",
                            hook_name(b.hook),
                            b.priority,
                            policy_name(b)
                        )
                    }),
                    rules: c.owned().count(),
                    strays: n_strays,
                });
            }
        }
        let sets: Vec<SetInfo> = rs
            .sets()
            .iter()
            .map(|(name, s)| SetInfo {
                name: name.clone(),
                kind: s.kind.to_string(),
                family: s.family.ipset_name(),
                members: s.len(),
                maxelem: s.maxelem,
                references: refs.get(name.as_str()).copied().unwrap_or(0),
            })
            .collect();
        for (name, f) in rs.foreign_sets() {
            if rs.owns(name) {
                problems.push(format!(
                    "set {name} carries netfence's prefix but has type {}, which netfence does \
                     not manage; destroy it",
                    f.type_name
                ));
            } else {
                foreign.sets += 1;
            }
        }
        let drifted = !strays.is_empty()
            || !problems.is_empty()
            || files.as_ref().is_some_and(|f| !f.in_sync);
        Report {
            netns: super::netns_id(netns),
            place: netns.to_string(),
            prefix: rs.prefix().to_owned(),
            owns_anything: !chains.is_empty() || !sets.is_empty() || !hook_rules.is_empty(),
            chains,
            sets,
            hook_rules,
            strays,
            problems,
            kept,
            foreign,
            files,
            drifted,
        }
    }

    /// The report as text.
    fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if self.owns_anything {
            let _ = writeln!(s, "netfence (prefix {}) in {}:", self.prefix, self.place);
        } else {
            let _ = writeln!(
                s,
                "netfence (prefix {}) owns nothing in {}",
                self.prefix, self.place
            );
        }
        if !self.chains.is_empty() {
            let _ = writeln!(s, "chains ({}):", self.chains.len());
            let w = self.chains.iter().map(|c| c.name.len()).max().unwrap_or(0);
            for c in &self.chains {
                let _ = write!(
                    s,
                    "  {:<3} {} {:<w$}  {}",
                    c.family,
                    c.table,
                    c.name,
                    plural(c.rules, "rule", "rules")
                );
                if c.strays > 0 {
                    let _ = write!(s, ", {}", plural(c.strays, "stray", "strays"));
                }
                if let Some(b) = &c.base {
                    let _ = write!(s, " ({b})");
                }
                let _ = writeln!(s);
            }
        }
        if !self.sets.is_empty() {
            let _ = writeln!(s, "sets ({}):", self.sets.len());
            let w = self.sets.iter().map(|x| x.name.len()).max().unwrap_or(0);
            for x in &self.sets {
                let _ = writeln!(
                    s,
                    "  {:<w$}  {:<14} {:<5}  {}, used by {}",
                    x.name,
                    x.kind,
                    x.family,
                    plural(x.members, "member", "members"),
                    plural(x.references, "rule", "rules"),
                );
            }
        }
        let rules = |s: &mut String, title: &str, list: &[RuleInfo]| {
            if list.is_empty() {
                return;
            }
            let _ = writeln!(s, "{title} ({}):", list.len());
            for r in list {
                let handle = r
                    .handle
                    .map(|h| format!(" (handle {h})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  {} {} {}{handle}: {}",
                    r.family, r.table, r.chain, r.rule
                );
            }
        };
        rules(&mut s, "rules in built-in chains", &self.hook_rules);
        rules(
            &mut s,
            "strays: rules netfence did not write in its chains; apply removes them",
            &self.strays,
        );
        if !self.kept.is_empty() {
            let _ = writeln!(
                s,
                "kept: emptied chains a rule outside netfence still jumps to ({}):",
                self.kept.len()
            );
            for k in &self.kept {
                let _ = writeln!(s, "  {k}");
            }
        }
        if !self.problems.is_empty() {
            let _ = writeln!(s, "problems ({}):", self.problems.len());
            for p in &self.problems {
                let _ = writeln!(s, "  {p}");
            }
        }
        let _ = writeln!(
            s,
            "foreign, left alone: {}, {}, {}",
            plural(self.foreign.chains, "chain", "chains"),
            plural(self.foreign.rules, "rule", "rules"),
            plural(self.foreign.sets, "set", "sets"),
        );
        if let Some(f) = &self.files {
            if f.in_sync {
                let _ = writeln!(s, "compared with the files: in sync");
            } else {
                let _ = writeln!(
                    s,
                    "compared with the files: drifted: {} to converge (netfence diff shows them)",
                    plural(f.operations, "operation", "operations")
                );
            }
        }
        let _ = writeln!(
            s,
            "status: {}",
            if self.drifted { "drifted" } else { "in sync" }
        );
        s
    }
}

/// Records an owned rule's jump to a missing chain or lookup of a set netfence doesn't
/// hold. The kernel refuses both, so they mean a decoding gap or a half-read state, worth
/// surfacing rather than trusting.
fn check_references(
    rs: &Ruleset,
    tid: &TableId,
    chain: &str,
    r: &netfence::ruleset::OwnedRule,
    problems: &mut Vec<String>,
) {
    let handle = r
        .handle
        .map(|h| format!(" (handle {h})"))
        .unwrap_or_default();
    if let Some(j) = r.rule.jump_target() {
        if rs.chain(tid, j).is_none() {
            problems.push(format!(
                "rule {}{handle} in {tid} {chain} jumps to {j}, which is missing",
                r.id
            ));
        }
    }
    for set in r.rule.set_names() {
        if rs.set(set).is_none() {
            problems.push(format!(
                "rule {}{handle} in {tid} {chain} looks up set {set}, which netfence does not hold",
                r.id
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netfence::ruleset::{Family, Rule, Target};

    #[test]
    fn unreachable_chains_are_drift() {
        let t = TableId::filter(Family::Ipv4);
        let mut rs = Ruleset::default();
        rs.add_chain(&t, "nf-x", None).expect("chain");
        let n = netfence::ruleset::Netns::Named("n".into());
        let r = Report::new(&rs, &n, None);
        assert!(r.drifted);
        assert!(r.problems[0].contains("unreachable"), "{:?}", r.problems);
        rs.add_chain(&t, "nf-y", None).expect("chain");
        rs.push_rule(&t, "nf-y", Rule::new(Target::Jump("nf-x".into())))
            .expect("rule");
        let r = Report::new(&rs, &n, None);
        // nf-x is reached now; nf-y is not.
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("nf-y"));
        assert!(r.text().contains("status: drifted"));
    }

    #[test]
    fn empty_state_is_in_sync() {
        let n = netfence::ruleset::Netns::Named("n".into());
        let r = Report::new(&Ruleset::default(), &n, None);
        assert!(!r.drifted);
        assert!(r
            .text()
            .starts_with("netfence (prefix nf-) owns nothing in network namespace n"));
    }
}
