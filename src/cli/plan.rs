//! A plan as people and scripts read it: ipset lines for set steps, iptables rule lines for
//! the nf_tables batch, in execution order.
//!
//! The library's own `Display` for a plan names an owned rule by its comment only; here
//! every rule is shown in full (`-A chain ...`), and a rule the plan deletes or replaces is
//! looked up by its handle in the observed state, so the reader sees what goes away.

use std::fmt::Write as _;

use netfence::netfilter::nft::{BaseChain, ChainSpec, Op, Position, RuleRef};
use netfence::ruleset::{Entry, Family, Hook, Plan, Policy, Ruleset, SetOp, TableId};
use serde_json::{json, Value};

/// The plan as text: a headline, then the three phases.
pub fn text(plan: &Plan, current: &Ruleset, target: &str) -> String {
    let mut s = String::new();
    if plan.is_empty() {
        let _ = writeln!(s, "{target} matches the files: nothing to change");
        return s;
    }
    let _ = writeln!(
        s,
        "{target}: {} operations to converge, in {} steps",
        plan.cost(),
        plan.step_count()
    );
    let sets = |s: &mut String, title: &str, ops: &[SetOp]| {
        if ops.is_empty() {
            return;
        }
        let _ = writeln!(s, "{title}:");
        for op in ops {
            for line in op.to_string().lines() {
                let _ = writeln!(s, "  ipset {line}");
            }
        }
    };
    sets(&mut s, "before the nf_tables batch", &plan.before);
    if !plan.batch.is_empty() {
        let _ = writeln!(
            s,
            "nf_tables batch (one atomic commit, {} operations):",
            plan.batch.len()
        );
        for op in &plan.batch {
            let _ = writeln!(s, "  {}", op_text(op, current));
        }
    }
    sets(&mut s, "after the nf_tables batch", &plan.after);
    s
}

/// The plan as JSON.
pub fn json(plan: &Plan, current: &Ruleset) -> Value {
    json!({
        "in_sync": plan.is_empty(),
        "operations": plan.cost(),
        "steps": plan.step_count(),
        "before": plan.before.iter().map(set_json).collect::<Vec<_>>(),
        "batch": plan.batch.iter().map(|op| op_json(op, current)).collect::<Vec<_>>(),
        "after": plan.after.iter().map(set_json).collect::<Vec<_>>(),
    })
}

fn set_json(op: &SetOp) -> Value {
    match op {
        SetOp::Create {
            name,
            family,
            kind,
            maxelem,
        } => json!({
            "op": "create_set", "set": name, "type": kind.to_string(),
            "family": family.ipset_name(), "maxelem": maxelem,
        }),
        SetOp::Add { name, members } => json!({
            "op": "add_members", "set": name,
            "members": members.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        SetOp::Del { name, members } => json!({
            "op": "delete_members", "set": name,
            "members": members.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        SetOp::Destroy { name } => json!({"op": "destroy_set", "set": name}),
        SetOp::Swap { name, with } => json!({"op": "swap_sets", "set": name, "with": with}),
    }
}

fn op_json(op: &Op, current: &Ruleset) -> Value {
    match op {
        Op::AddTable { family, table } => {
            json!({"op": "add_table", "family": family.name(), "table": table})
        }
        Op::AddChain {
            family,
            table,
            chain,
        } => {
            let base = chain.base.map(|b| {
                json!({"hook": hook_name(b.hook), "priority": b.priority, "policy": policy_name(b)})
            });
            json!({"op": "add_chain", "family": family.name(), "table": table,
                   "chain": chain.name, "base": base})
        }
        Op::DelChain {
            family,
            table,
            chain,
        } => json!({"op": "delete_chain", "family": family.name(), "table": table, "chain": chain}),
        Op::AddRule {
            family,
            table,
            chain,
            rule,
            position,
        } => json!({
            "op": "add_rule", "family": family.name(), "table": table, "chain": chain,
            "rule": rule.to_iptables(*family), "position": position_text(*position),
        }),
        Op::ReplaceRule {
            family,
            table,
            chain,
            handle,
            rule,
        } => json!({
            "op": "replace_rule", "family": family.name(), "table": table, "chain": chain,
            "handle": handle, "rule": rule.to_iptables(*family),
            "old": old_rule(current, *family, table, chain, *handle),
        }),
        Op::DelRule {
            family,
            table,
            chain,
            handle,
        } => json!({
            "op": "delete_rule", "family": family.name(), "table": table, "chain": chain,
            "handle": handle, "rule": old_rule(current, *family, table, chain, *handle),
        }),
    }
}

/// One batch operation as an iptables-like line, prefixed with its table.
fn op_text(op: &Op, current: &Ruleset) -> String {
    match op {
        Op::AddTable { family, table } => format!("{family} {table}: create table"),
        Op::AddChain {
            family,
            table,
            chain: ChainSpec { name, base },
        } => match base {
            Some(b) => format!(
                "{family} {table}: create chain {name} (hook {}, priority {}, policy {})",
                hook_name(b.hook),
                b.priority,
                policy_name(*b)
            ),
            None => format!("{family} {table}: create chain {name}"),
        },
        Op::DelChain {
            family,
            table,
            chain,
        } => format!("{family} {table}: delete chain {chain}"),
        Op::AddRule {
            family,
            table,
            chain,
            rule,
            position,
        } => {
            let flag = match position {
                Position::Append => format!("-A {chain}"),
                other => format!("-I {chain} ({})", position_text(*other)),
            };
            format!("{family} {table}: {flag} {}", rule.to_iptables(*family))
        }
        Op::ReplaceRule {
            family,
            table,
            chain,
            handle,
            rule,
        } => {
            let old = old_rule(current, *family, table, chain, *handle)
                .map(|o| format!(" (was: {o})"))
                .unwrap_or_default();
            format!(
                "{family} {table}: -R {chain} (handle {handle}) {}{old}",
                rule.to_iptables(*family)
            )
        }
        Op::DelRule {
            family,
            table,
            chain,
            handle,
        } => {
            let old = old_rule(current, *family, table, chain, *handle).unwrap_or_default();
            format!("{family} {table}: -D {chain} (handle {handle}) {old}")
        }
    }
}

/// Where an inserted rule goes.
fn position_text(p: Position) -> String {
    let r = |r: RuleRef| match r {
        RuleRef::Handle(h) => format!("handle {h}"),
        RuleRef::New(n) => format!("the rule of batch operation {}", n + 1),
    };
    match p {
        Position::Append => "append".into(),
        Position::Prepend => "first".into(),
        Position::Before(x) => format!("before {}", r(x)),
        Position::After(x) => format!("after {}", r(x)),
    }
}

/// The text of the rule with `handle` in the observed state, as iptables-save prints it.
fn old_rule(
    current: &Ruleset,
    family: Family,
    table: &str,
    chain: &str,
    handle: u64,
) -> Option<String> {
    let c = current.chain(&TableId::new(family, table), chain)?;
    let e = c.entries().get(c.position_of(handle)?)?;
    Some(match e {
        Entry::Owned(r) => r.kernel_rule(current.marker()).to_iptables(family),
        Entry::Foreign(o) | Entry::Stray(o) => o.text.clone(),
    })
}

/// nft's name of a hook.
pub fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    }
}

/// iptables' name of a base chain's policy.
pub fn policy_name(b: BaseChain) -> &'static str {
    match b.policy {
        Policy::Accept => "ACCEPT",
        Policy::Drop => "DROP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netfence::ruleset::{Rule, Target};

    #[test]
    fn empty_and_simple_plans() {
        let empty = Ruleset::default();
        assert_eq!(
            text(&Plan::default(), &empty, "network namespace x"),
            "network namespace x matches the files: nothing to change\n"
        );
        let t = TableId::filter(Family::Ipv4);
        let mut desired = Ruleset::default();
        desired.add_chain(&t, "nf-x", None).expect("chain");
        desired
            .push_rule(&t, "nf-x", Rule::new(Target::Drop))
            .expect("rule");
        let p = netfence::ruleset::plan(&empty, &desired).expect("plan");
        let s = text(&p, &empty, "n");
        assert!(s.contains("ip filter: create chain nf-x"), "{s}");
        assert!(
            s.contains("ip filter: -A nf-x -m comment --comment \"nf:"),
            "{s}"
        );
        let j = json(&p, &empty);
        assert_eq!(j["in_sync"], false);
        assert_eq!(j["batch"][0]["op"], "add_table");
    }
}
