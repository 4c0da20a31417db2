//! The compiler's layout and its incremental behaviour: config validation,
//! the skeleton, pod churn that only touches set members, incremental
//! updates equal to a full compile (with a scope that plans the same), and
//! the compiled ruleset against the reference evaluator on random clusters.

#[path = "conformance/cases.rs"]
mod cases;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use policy::{
    allowed, egress_allows, ingress_allows, Cluster, Compiler, CompilerConfig, ContainerPort,
    Endpoint, Family, IpBlock, LabelSelector, Namespace, NamespaceScope, ObjectKey, Peer, Pod,
    Policy, Port, PortRule, Protocol, Rule, NAMESPACE_NAME_LABEL,
};
use proptest::prelude::*;
use ruleset::sim::{verdict, Packet, Verdict};
use ruleset::{
    plan, plan_batch_scoped, plan_scoped, plan_sets_scoped, CtState, Hook, Plan, Ruleset, SetOp,
    TableId,
};

// ---------------------------------------------------------------------------
// Helpers.

fn compiler(node: Option<&str>) -> Compiler {
    compiler_flat(node, CompilerConfig::default().dispatch_flat_max)
}

/// [`compiler`] with `nf-ingress` / `nf-egress` bucketed past `flat_max`
/// namespaces: the property tests' three namespaces take 0 or 1 to be
/// bucketed at all.
fn compiler_flat(node: Option<&str>, flat_max: usize) -> Compiler {
    Compiler::new(CompilerConfig {
        node: node.map(String::from),
        dispatch_flat_max: flat_max,
        ..CompilerConfig::default()
    })
    .unwrap()
}

/// Flat dispatch (the default at three namespaces), or buckets: past 0 or 1
/// namespaces, two or three namespaces share one bucket, and one has a bucket
/// of its own, which is its plain line.
fn arb_flat_max() -> impl Strategy<Value = usize> {
    prop::sample::select(&[0usize, 1, 6][..])
}

/// `rs` as the kernel would hold it after applying it to an empty namespace:
/// with handles, which `plan` needs for its current state.
fn observed(rs: &Ruleset) -> Ruleset {
    let empty = Ruleset::new(rs.prefix()).unwrap();
    plan(&empty, rs).unwrap().apply_in_memory(&empty).unwrap()
}

/// Whether a plan changes set members only: no nf_tables operation, no set
/// created or destroyed.
fn members_only(p: &Plan) -> bool {
    p.batch.is_empty()
        && p.before
            .iter()
            .chain(&p.after)
            .all(|op| matches!(op, SetOp::Add { .. } | SetOp::Del { .. }))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ns(name: &str, extra: &[(&str, &str)]) -> Namespace {
    let mut l = labels(extra);
    l.insert(NAMESPACE_NAME_LABEL.into(), name.into());
    Namespace {
        name: name.into(),
        labels: l,
    }
}

fn pod(ns: &str, name: &str, l: &[(&str, &str)], host: u8) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(l),
        ipv4: Some(Ipv4Addr::new(10, 244, 0, host)),
        ipv6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, host.into())),
        named_ports: BTreeMap::new(),
        node_name: Some("n1".into()),
        host_interface: None,
    }
}

fn sel(s: &str) -> LabelSelector {
    s.parse().unwrap()
}

fn deny_ingress(ns: &str, name: &str, selector: &str) -> Policy {
    Policy {
        namespace: ns.into(),
        name: name.into(),
        pod_selector: sel(selector),
        ingress: Some(vec![]),
        egress: None,
    }
}

/// Pods of `ns` picked by `selector` take ingress from the pods of `ns` picked by
/// `from`, on any port.
fn allow_from(ns: &str, name: &str, selector: &str, from: &str) -> Policy {
    Policy {
        ingress: Some(vec![Rule {
            peers: vec![Peer::Pods {
                namespaces: NamespaceScope::Only(ns.into()),
                pods: sel(from),
            }],
            ports: vec![],
        }]),
        ..deny_ingress(ns, name, selector)
    }
}

fn nft_protocol(p: Protocol) -> ruleset::Protocol {
    match p {
        Protocol::Tcp => ruleset::Protocol::Tcp,
        Protocol::Udp => ruleset::Protocol::Udp,
        Protocol::Sctp => ruleset::Protocol::Sctp,
    }
}

// ---------------------------------------------------------------------------
// Config and skeleton.

#[test]
fn config_is_validated_field_by_field() {
    let bad = |c: CompilerConfig, field: &str| {
        let e = Compiler::new(c).unwrap_err();
        assert!(
            matches!(&e, policy::Error::Config { field: f, .. } if *f == field),
            "{e}"
        );
        assert!(e.to_string().contains(field), "{e}");
    };
    let d = CompilerConfig::default;
    bad(
        CompilerConfig {
            prefix: "".into(),
            ..d()
        },
        "prefix",
    );
    bad(
        CompilerConfig {
            prefix: "a prefix".into(),
            ..d()
        },
        "prefix",
    );
    bad(
        CompilerConfig {
            families: vec![],
            ..d()
        },
        "families",
    );
    bad(
        CompilerConfig {
            families: vec![Family::Ipv6, Family::Ipv6],
            ..d()
        },
        "families",
    );
    bad(
        CompilerConfig {
            node: Some(String::new()),
            ..d()
        },
        "node",
    );
    bad(
        CompilerConfig {
            ingress_mark: 0,
            ..d()
        },
        "ingress_mark",
    );
    bad(
        CompilerConfig {
            egress_mark: 0,
            ..d()
        },
        "egress_mark",
    );
    bad(
        CompilerConfig {
            ingress_mark: 0x30000,
            egress_mark: 0x20000,
            ..d()
        },
        "egress_mark",
    );
    bad(
        CompilerConfig {
            hooks: vec![],
            ..d()
        },
        "hooks",
    );
    for prefix in ["", "a/b", "cali0123456789a"] {
        bad(
            CompilerConfig {
                pod_interface_prefix: Some(prefix.into()),
                ..d()
            },
            "pod_interface_prefix",
        );
    }
    bad(
        CompilerConfig {
            hooks: vec![Hook::Prerouting],
            ..d()
        },
        "hooks",
    );
    bad(
        CompilerConfig {
            hooks: vec![Hook::Forward, Hook::Input, Hook::Forward],
            ..d()
        },
        "hooks",
    );
    // Multi-bit marks that share nothing are fine, and so is one family.
    Compiler::new(CompilerConfig {
        ingress_mark: 0x3,
        egress_mark: 0xc,
        families: vec![Family::Ipv6],
        prefix: "nfx-".into(),
        node: Some("n1".into()),
        hooks: vec![Hook::Output],
        pod_interface_prefix: Some("cali".into()),
        dispatch_flat_max: 0,
    })
    .unwrap();
}

#[test]
fn every_hook_point_jumps_to_the_same_chain() {
    let mut c = Compiler::new(CompilerConfig {
        hooks: vec![Hook::Forward, Hook::Input, Hook::Output],
        ..CompilerConfig::default()
    })
    .unwrap();
    c.upsert_namespace(ns("a", &[]));
    c.upsert_pod(pod("a", "p", &[], 1));
    c.upsert_policy(deny_ingress("a", "deny", "")).unwrap();
    let text = ruleset::render::iptables_save(c.ruleset(), ruleset::Family::Ipv4);
    for chain in ["INPUT", "FORWARD", "OUTPUT"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("-A {chain} ")) && l.ends_with("-j nf-fw")),
            "{chain}:\n{text}"
        );
    }
    // The node talking to an isolated pod (OUTPUT) meets its ingress policy.
    let p = Packet::tcp(
        "192.0.2.1".parse().unwrap(),
        "10.244.0.1".parse().unwrap(),
        80,
    );
    assert_eq!(verdict(c.ruleset(), Hook::Output, &p), Verdict::Drop);
    assert_eq!(verdict(c.ruleset(), Hook::Forward, &p), Verdict::Drop);
}

/// iptables-save text without netfence's identity comments (`-m comment --comment
/// "nf:..."`), so that a test can look for a rule's matches and target together.
fn without_ids(text: &str) -> String {
    const ID: &str = " -m comment --comment \"nf:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ID) {
        out.push_str(&rest[..at]);
        let after = &rest[at + ID.len()..];
        rest = after.find('"').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    out
}

#[test]
fn an_empty_cluster_compiles_to_the_skeleton() {
    let mut c = compiler(None);
    let rs = c.compile(&Cluster::new()).unwrap().clone();
    for f in [ruleset::Family::Ipv4, ruleset::Family::Ipv6] {
        let t = TableId::filter(f);
        let chains: Vec<&String> = rs.table(&t).unwrap().chains.keys().collect();
        assert_eq!(chains, ["FORWARD", "nf-egress", "nf-fw", "nf-ingress"]);
        let text = without_ids(&ruleset::render::iptables_save(&rs, f));
        assert!(text.contains("-A FORWARD -j nf-fw"), "{text}");
        let v = if f == ruleset::Family::Ipv4 { '4' } else { '6' };
        for line in [
            "-A FORWARD ".to_string(),
            "-j nf-fw".into(),
            "--ctstate RELATED,ESTABLISHED -j RETURN".into(),
            "--ctstate INVALID -j DROP".into(),
            "-j MARK --set-xmark 0x0/0x30000".into(),
            format!("--match-set nf-iso-eg{v} src -j nf-egress"),
            format!("--match-set nf-iso-in{v} dst -j nf-ingress"),
            "-A nf-ingress -m mark".into(),
            "--mark 0x0/0x10000 -j DROP".into(),
            "--mark 0x0/0x20000 -j DROP".into(),
        ] {
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
        assert_eq!(rs.chain(&t, "nf-fw").unwrap().owned().count(), 5);
        assert_eq!(rs.chain(&t, "nf-ingress").unwrap().owned().count(), 1);
        assert_eq!(rs.chain(&t, "nf-egress").unwrap().owned().count(), 1);
        assert_eq!(rs.chain(&t, "FORWARD").unwrap().owned().count(), 1);
    }
    let sets: Vec<&String> = rs.sets().keys().collect();
    assert_eq!(
        sets,
        ["nf-iso-eg4", "nf-iso-eg6", "nf-iso-in4", "nf-iso-in6"]
    );
    assert!(rs.sets().values().all(|s| s.is_empty()));
    assert!(rs
        .sets()
        .values()
        .all(|s| s.polarity == ruleset::Polarity::Restricts));
    rs.validate().unwrap();
    // `new` gives the same skeleton, and a scope that plans all of it.
    let mut fresh = compiler(None);
    assert_eq!(fresh.ruleset(), &rs);
    let scope = fresh.take_scope();
    let empty = Ruleset::default();
    assert_eq!(
        plan_scoped(&empty, fresh.ruleset(), &scope).unwrap(),
        plan(&empty, fresh.ruleset()).unwrap()
    );
    assert!(fresh.take_scope().is_empty());
}

/// Held dispatch: a burst of policy deltas in one namespace (the last one
/// deleting the namespace's first policy) settles to what the same deltas
/// give one by one, and a full compile inside the burst keeps the hold.
#[test]
fn held_dispatch_settles_to_the_unheld_ruleset() {
    let burst = |c: &mut Compiler| {
        c.upsert_policy(deny_ingress("a", "p1", "app=web")).unwrap();
        c.upsert_policy(deny_ingress("a", "p2", "app=db")).unwrap();
        c.upsert_policy(deny_ingress("a", "p3", "")).unwrap();
        c.delete_policy(&ObjectKey::new("a", "p1")).unwrap();
    };
    let mut base = Cluster::new();
    base.upsert_namespace(ns("a", &[]));
    base.upsert_pod(pod("a", "w", &[("app", "web")], 1));
    base.upsert_pod(pod("a", "d", &[("app", "db")], 2));
    base.upsert_policy(deny_ingress("a", "p0", "app=web"));
    let mut eager = compiler(None);
    eager.compile(&base).unwrap();
    burst(&mut eager);
    let mut held = compiler(None);
    held.compile(&base).unwrap();
    held.take_scope();
    held.hold_dispatch();
    burst(&mut held);
    held.settle().unwrap();
    assert_eq!(held.ruleset().owned_view(), eager.ruleset().owned_view());
    held.ruleset().validate().unwrap();
    // Settling again, with nothing held, changes nothing.
    held.take_scope();
    held.settle().unwrap();
    assert!(held.take_scope().is_empty());

    let mut again = compiler(None);
    again.hold_dispatch();
    again.compile(&base).unwrap();
    burst(&mut again);
    again.settle().unwrap();
    assert_eq!(again.ruleset().owned_view(), eager.ruleset().owned_view());
}

/// A full `compile()` keeps in the scope what deltas touched before it and nobody took:
/// a policy's chains and sets that a delta removed are in neither the old nor the new
/// ruleset, and a scoped plan left them in the kernel for good.
#[test]
fn a_compile_keeps_the_scope_nobody_took() {
    let mut c = compiler(None);
    let egress_only = Policy {
        egress: Some(vec![]),
        ingress: None,
        ..deny_ingress("a", "np1", "")
    };
    c.upsert_policy(egress_only.clone()).unwrap();
    let cur = observed(c.ruleset());
    c.take_scope();
    let none = Policy {
        egress: None,
        ..egress_only
    };
    let mut cluster = policy::Cluster::new();
    cluster.upsert_policy(none.clone());
    c.upsert_policy(none).unwrap();
    c.compile(&cluster).unwrap();
    let scope = c.take_scope();
    let whole = plan(&cur, c.ruleset()).unwrap();
    assert!(
        !whole.batch.is_empty() && !whole.after.is_empty(),
        "{whole}"
    );
    assert_eq!(plan_scoped(&cur, c.ruleset(), &scope).unwrap(), whole);
}

#[test]
fn one_family_builds_one_table() {
    let mut c = Compiler::new(CompilerConfig {
        families: vec![Family::Ipv4],
        ..CompilerConfig::default()
    })
    .unwrap();
    c.upsert_namespace(ns("a", &[]));
    c.upsert_pod(pod("a", "p", &[("app", "web")], 1));
    c.upsert_policy(deny_ingress("a", "deny", "")).unwrap();
    let rs = c.ruleset();
    assert_eq!(rs.tables().len(), 1);
    assert!(
        rs.sets().keys().all(|s| !s.contains('6')),
        "{:?}",
        rs.sets().keys()
    );
}

// ---------------------------------------------------------------------------
// What changes what.

/// A small world: namespaces a (env=prod) and b, pods in both, one policy in
/// a admitting pods of b labelled app=client, and one in b.
fn world() -> Compiler {
    let mut c = compiler(Some("n1"));
    c.upsert_namespace(ns("a", &[("env", "prod")]));
    c.upsert_namespace(ns("b", &[]));
    c.upsert_pod(pod("a", "web", &[("app", "web")], 1));
    c.upsert_pod(pod("b", "client", &[("app", "client")], 2));
    c.upsert_pod(pod("b", "other", &[("app", "other")], 3));
    c.upsert_policy(Policy {
        namespace: "a".into(),
        name: "allow-clients".into(),
        pod_selector: sel("app=web"),
        ingress: Some(vec![Rule {
            peers: vec![Peer::Pods {
                namespaces: NamespaceScope::Selected(sel("kubernetes.io/metadata.name=b")),
                pods: sel("app=client"),
            }],
            ports: vec![PortRule {
                protocol: Protocol::Tcp,
                port: Port::Range { start: 80, end: 80 },
            }],
        }]),
        egress: None,
    })
    .unwrap();
    c.upsert_policy(Policy {
        namespace: "b".into(),
        name: "egress-to-prod".into(),
        pod_selector: sel(""),
        ingress: None,
        egress: Some(vec![Rule {
            peers: vec![Peer::Pods {
                namespaces: NamespaceScope::Selected(sel("env=prod")),
                pods: sel(""),
            }],
            ports: vec![],
        }]),
    })
    .unwrap();
    c
}

/// A delta to apply to a compiler.
type Change = Box<dyn FnOnce(&mut Compiler)>;

/// Applies `delta` to a copy of `c` and returns the plan from `c`'s state
/// (as the kernel holds it) to the new one, checking that the scoped plan
/// is the same.
fn plan_of(c: &Compiler, delta: impl FnOnce(&mut Compiler)) -> Plan {
    let mut next = Compiler::new(c.config().clone()).unwrap();
    next.compile(c.cluster()).unwrap();
    assert_eq!(next.ruleset().owned_view(), c.ruleset().owned_view());
    let cur = observed(next.ruleset());
    next.take_scope();
    delta(&mut next);
    let scope = next.take_scope();
    let full = plan(&cur, next.ruleset()).unwrap();
    assert_eq!(plan_scoped(&cur, next.ruleset(), &scope).unwrap(), full);
    full
}

#[test]
fn pod_and_namespace_churn_changes_set_members_only() {
    let c = world();
    let deltas: Vec<(&str, Change)> = vec![
        (
            "new selected pod",
            Box::new(|c| c.upsert_pod(pod("a", "web-2", &[("app", "web")], 9))),
        ),
        (
            "new peer pod",
            Box::new(|c| c.upsert_pod(pod("b", "client-2", &[("app", "client")], 9))),
        ),
        (
            "relabel into a peer",
            Box::new(|c| c.upsert_pod(pod("b", "other", &[("app", "client")], 3))),
        ),
        (
            "relabel out of the selection",
            Box::new(|c| c.upsert_pod(pod("a", "web", &[("app", "db")], 1))),
        ),
        (
            "new address",
            Box::new(|c| c.upsert_pod(pod("a", "web", &[("app", "web")], 77))),
        ),
        (
            "delete pods",
            Box::new(|c| {
                c.delete_pod(&ObjectKey::new("a", "web"));
                c.delete_pod(&ObjectKey::new("b", "client"));
            }),
        ),
        (
            "moves to another node",
            Box::new(|c| {
                let mut p = pod("a", "web", &[("app", "web")], 1);
                p.node_name = Some("n2".into());
                c.upsert_pod(p);
            }),
        ),
        (
            "namespace relabel",
            Box::new(|c| c.upsert_namespace(ns("b", &[("env", "prod")]))),
        ),
        ("namespace delete", Box::new(|c| c.delete_namespace("b"))),
    ];
    for (what, delta) in deltas {
        let p = plan_of(&c, delta);
        assert!(!p.is_empty(), "{what}: nothing changed");
        assert!(
            members_only(&p),
            "{what}: plan changes more than members:\n{p}"
        );
    }
}

#[test]
fn policy_changes_change_rules_and_dispatch_lines() {
    let c = world();
    // A rule change rewrites the policy's chain, not the dispatch chains.
    let p = plan_of(&c, |c| {
        let mut pol = (**c
            .cluster()
            .policy(&ObjectKey::new("a", "allow-clients"))
            .unwrap())
        .clone();
        pol.ingress.as_mut().unwrap()[0].ports[0].port = Port::Range { start: 81, end: 81 };
        c.upsert_policy(pol).unwrap();
    });
    assert!(!p.batch.is_empty());
    let text = p.to_string();
    assert!(!text.contains("nf-ingress"), "{text}");
    // The first policy of a namespace adds dispatch lines ...
    let mut c2 = world();
    let p = plan_of(&c2, |c| {
        c.upsert_policy(deny_ingress("c", "deny", "")).unwrap()
    });
    assert!(p.to_string().contains("nf-ingress"), "{p}");
    // ... and deleting the last one removes them, with its chains and sets.
    let before = c2.ruleset().clone();
    c2.upsert_policy(deny_ingress("c", "deny", "")).unwrap();
    let p = plan_of(&c2, |c| {
        c.delete_policy(&ObjectKey::new("c", "deny")).unwrap()
    });
    assert!(p.to_string().contains("nf-ingress"), "{p}");
    c2.delete_policy(&ObjectKey::new("c", "deny")).unwrap();
    assert_eq!(c2.ruleset().owned_view(), before.owned_view());
}

/// The verdict on a forwarded TCP connect from `src` to port 80 of `dst`.
fn tcp_80(rs: &Ruleset, src: &str, dst: &str) -> Verdict {
    verdict(
        rs,
        Hook::Forward,
        &Packet::tcp(src.parse().unwrap(), dst.parse().unwrap(), 80),
    )
}

/// The jump targets and set lookups of every owned rule of `chain` in the
/// IPv4 table, as (targets, sets) in order.
fn chain_refs(rs: &Ruleset, chain: &str) -> (Vec<String>, Vec<String>) {
    let t = TableId::filter(ruleset::Family::Ipv4);
    let c = rs
        .chain(&t, chain)
        .unwrap_or_else(|| panic!("no chain {chain}"));
    let mut targets = Vec::new();
    let mut sets = Vec::new();
    for r in c.owned() {
        targets.extend(r.rule.jump_target().map(String::from));
        for m in &r.rule.matches {
            if let ruleset::Match::Set { name, .. } = m {
                sets.push(name.clone());
            }
        }
    }
    (targets, sets)
}

#[test]
fn dispatch_goes_by_namespace_and_a_namespace_chain_holds_only_its_policies() {
    let mut c = compiler(Some("n1"));
    for n in ["a", "b"] {
        c.upsert_namespace(ns(n, &[]));
    }
    c.upsert_pod(pod("a", "web", &[("app", "web")], 1));
    c.upsert_pod(pod("b", "db", &[("app", "db")], 2));
    c.upsert_policy(deny_ingress("a", "web", "app=web"))
        .unwrap();
    c.upsert_policy(deny_ingress("a", "all", "")).unwrap();
    c.upsert_policy(deny_ingress("b", "db", "app=db")).unwrap();
    let rs = c.ruleset();
    let t = TableId::filter(ruleset::Family::Ipv4);
    // nf-ingress: one goto per namespace, to its chain, by its namespace set.
    let top = rs.chain(&t, "nf-ingress").unwrap();
    let lines: Vec<&ruleset::OwnedRule> = top.owned().collect();
    assert_eq!(lines.len(), 3, "{top:?}");
    for (l, n) in lines.iter().zip(["a", "b"]) {
        assert_eq!(l.rule.target, ruleset::Target::Goto(format!("nf-in-{n}")));
    }
    let (_, top_sets) = chain_refs(rs, "nf-ingress");
    assert_eq!(top_sets.len(), 2);
    // A's chain holds a's two policies, and the one that selects everyone
    // looks no set up: its selection is the namespace set.
    let (targets, sets) = chain_refs(rs, "nf-in-a");
    assert_eq!(targets, ["nf-i-a.all", "nf-i-a.web"]);
    assert_eq!(sets.len(), 1);
    assert!(!sets.contains(&top_sets[0]));
    let (targets, _) = chain_refs(rs, "nf-in-b");
    assert_eq!(targets, ["nf-i-b.db"]);
    // No egress policy: nf-egress only drops, and no egress namespace chain.
    assert_eq!(rs.chain(&t, "nf-egress").unwrap().owned().count(), 1);
    assert!(rs.chain(&t, "nf-eg-a").is_none());
    // The namespace set holds the namespace's local pods.
    let a_set = rs.set(&top_sets[0]).unwrap();
    assert!(a_set.matches("10.244.0.1".parse().unwrap()));
    assert!(!a_set.matches("10.244.0.2".parse().unwrap()));
    // A packet walks only its namespace's chain, and is dropped there.
    let v = |dst: &str| {
        verdict(
            c.ruleset(),
            Hook::Forward,
            &Packet::tcp("192.0.2.1".parse().unwrap(), dst.parse().unwrap(), 80),
        )
    };
    assert_eq!(v("10.244.0.1"), Verdict::Drop);
    assert_eq!(v("10.244.0.2"), Verdict::Drop);
    // A rule change in a rewrites a's policy chain only; a new policy in a
    // rewrites a's namespace chain, neither nf-ingress nor b's chain.
    let p = plan_of(&c, |c| {
        let mut pol = deny_ingress("a", "web", "app=web");
        pol.ingress = Some(vec![Rule {
            peers: vec![],
            ports: vec![],
        }]);
        c.upsert_policy(pol).unwrap();
    });
    let text = p.to_string();
    assert!(text.contains("nf-i-a.web"), "{text}");
    assert!(
        !text.contains("nf-in-a") && !text.contains("nf-ingress"),
        "{text}"
    );
    let p = plan_of(&c, |c| {
        c.upsert_policy(deny_ingress("a", "more", "app=more"))
            .unwrap()
    });
    let text = p.to_string();
    assert!(text.contains("nf-in-a"), "{text}");
    assert!(
        !text.contains("nf-ingress") && !text.contains("nf-in-b"),
        "{text}"
    );
}

#[test]
fn pod_churn_in_a_namespace_with_policies_changes_set_members_only() {
    let mut c = compiler(Some("n1"));
    c.upsert_namespace(ns("a", &[]));
    c.upsert_pod(pod("a", "web", &[("app", "web")], 1));
    c.upsert_policy(deny_ingress("a", "web", "app=web"))
        .unwrap();
    let deltas: Vec<(&str, Change)> = vec![
        (
            "new pod of the namespace",
            Box::new(|c| c.upsert_pod(pod("a", "other", &[("app", "other")], 7))),
        ),
        (
            "new selected pod",
            Box::new(|c| c.upsert_pod(pod("a", "web-2", &[("app", "web")], 8))),
        ),
        (
            "delete the selected pod",
            Box::new(|c| c.delete_pod(&ObjectKey::new("a", "web"))),
        ),
        (
            "moves to another node",
            Box::new(|c| {
                let mut p = pod("a", "web", &[("app", "web")], 1);
                p.node_name = Some("n2".into());
                c.upsert_pod(p);
            }),
        ),
    ];
    for (what, delta) in deltas {
        let p = plan_of(&c, delta);
        assert!(!p.is_empty(), "{what}: nothing changed");
        assert!(members_only(&p), "{what}: more than members:\n{p}");
    }
    // A new pod joins its namespace set.
    c.upsert_pod(pod("a", "other", &[("app", "other")], 7));
    let (_, sets) = chain_refs(c.ruleset(), "nf-ingress");
    assert!(c
        .ruleset()
        .set(&sets[0])
        .unwrap()
        .matches("10.244.0.7".parse().unwrap()));
}

/// The sync engine takes a held burst's sets before it settles (to plan
/// them, and send their first phase, while it settles and plans the chains
/// on another thread) and the chains after: the two halves make the plan one
/// scope makes. What the burst let go of waits in the garbage, and the
/// ruleset is the one a compiler that frees at once builds.
#[test]
fn a_burst_planned_in_halves_around_settling_plans_the_same() {
    let c = world();
    let cur = observed(c.ruleset());
    let burst = |n: &mut Compiler| {
        n.upsert_policy(deny_ingress("a", "p1", "app=web")).unwrap();
        n.delete_policy(&ObjectKey::new("a", "allow-clients"))
            .unwrap();
        n.upsert_pod(pod("b", "client2", &[("app", "client")], 9));
        n.upsert_pod(pod("a", "web", &[("app", "web"), ("v", "2")], 1));
        n.delete_pod(&ObjectKey::new("b", "other"));
    };
    let fresh = || {
        let mut n = Compiler::new(c.config().clone()).unwrap();
        n.compile(c.cluster()).unwrap();
        n.take_scope();
        n
    };
    let mut next = fresh();
    next.keep_garbage(true);
    next.hold_dispatch();
    burst(&mut next);
    let sets = next.take_set_scope();
    assert!(sets.chains.is_empty() && !(sets.sets.is_empty() && sets.members.is_empty()));
    let mut p = plan_sets_scoped(&cur, next.unsettled_ruleset(), &sets).unwrap();
    next.settle().unwrap();
    let chains = next.take_scope();
    assert!(chains.sets.is_empty() && chains.members.is_empty() && !chains.chains.is_empty());
    let mut scope = sets;
    scope.merge(chains);
    p.batch = plan_batch_scoped(&cur, next.ruleset(), &scope).unwrap();
    assert_eq!(p, plan(&cur, next.ruleset()).unwrap());

    let garbage = next.take_garbage();
    assert!(
        !garbage.is_empty(),
        "the burst replaced and deleted objects"
    );
    assert!(next.take_garbage().is_empty());
    let mut eager = fresh();
    eager.hold_dispatch();
    burst(&mut eager);
    eager.settle().unwrap();
    assert!(eager.take_garbage().is_empty(), "nothing kept unless asked");
    assert_eq!(eager.ruleset(), next.ruleset());
}

/// Hundreds of pod deltas between two takes of the scope: the compiler
/// keeps the changed members per set and compacts them as they pile up, and
/// the scope it finally hands over still plans what a full plan does.
#[test]
fn a_scope_taken_after_many_deltas_plans_the_same() {
    let c = {
        let mut c = compiler(Some("n1"));
        c.upsert_namespace(ns("a", &[]));
        c.upsert_policy(deny_ingress("a", "web", "app=web"))
            .unwrap();
        c
    };
    // The even hosts of 1..=200.
    let stays = 100;
    let p = plan_of(&c, |c| {
        // Each pod comes and goes and comes back; every other one stays.
        for round in 0..3 {
            for host in 1..=200u8 {
                let name = format!("web-{host}");
                if round == 1 {
                    c.delete_pod(&ObjectKey::new("a", &name));
                } else if round == 0 || host % 2 == 0 {
                    c.upsert_pod(pod("a", &name, &[("app", "web")], host));
                }
            }
        }
    });
    assert!(members_only(&p), "more than members:\n{p}");
    // Per family, each staying pod joins the namespace, selected and
    // isolation sets, and nothing else is added or removed.
    let added: usize = p
        .before
        .iter()
        .chain(&p.after)
        .map(|op| match op {
            SetOp::Add { members, .. } => members.len(),
            SetOp::Del { members, .. } => panic!("a member removed: {members:?}"),
            _ => 0,
        })
        .sum();
    assert_eq!(added, stays * 3 * 2);
}

#[test]
fn policies_with_one_selector_share_one_lookup_through_a_selector_chain() {
    let mut c = compiler(Some("n1"));
    c.upsert_namespace(ns("a", &[]));
    c.upsert_pod(pod("a", "web", &[("app", "web")], 1));
    c.upsert_pod(pod("a", "db", &[("app", "db")], 2));
    let before = c.ruleset().clone();
    // web: two policies, one set; db: one policy, its own line.
    c.upsert_policy(allow_from("a", "web-1", "app=web", "app=db"))
        .unwrap();
    c.upsert_policy(deny_ingress("a", "db", "app=db")).unwrap();
    c.upsert_policy(allow_from("a", "web-2", "app=web", "app=web"))
        .unwrap();
    let rs = c.ruleset();
    let (targets, sets) = chain_refs(rs, "nf-in-a");
    assert_eq!(targets.len(), 2, "{targets:?}");
    assert_eq!(targets[0], "nf-i-a.db");
    assert_eq!(sets.len(), 2);
    let selector = targets[1].clone();
    assert!(selector.starts_with("nf-_"), "{selector}");
    let (inner, inner_sets) = chain_refs(rs, &selector);
    assert_eq!(inner, ["nf-i-a.web-1", "nf-i-a.web-2"]);
    assert!(inner_sets.is_empty(), "one lookup for both: {inner_sets:?}");
    // Both policies still decide: db may reach web (web-1), web may reach
    // web (web-2, from a second web pod), db is isolated by its own.
    c.upsert_pod(pod("a", "web2", &[("app", "web")], 3));
    let v = |src: &str, dst: &str| tcp_80(c.ruleset(), src, dst);
    assert_eq!(v("10.244.0.2", "10.244.0.1"), Verdict::Accept);
    assert_eq!(v("10.244.0.3", "10.244.0.1"), Verdict::Accept);
    assert_eq!(v("192.0.2.1", "10.244.0.1"), Verdict::Drop);
    assert_eq!(v("10.244.0.1", "10.244.0.2"), Verdict::Drop);
    // Down to one web policy: back to a line of its own, and the selector
    // chain goes, in a plan that touches only a's chains.
    let p = plan_of(&c, |c| {
        c.delete_policy(&ObjectKey::new("a", "web-2")).unwrap()
    });
    assert!(p.to_string().contains(&selector), "{p}");
    c.delete_policy(&ObjectKey::new("a", "web-2")).unwrap();
    let t = TableId::filter(ruleset::Family::Ipv4);
    assert!(c.ruleset().chain(&t, &selector).is_none());
    assert_eq!(
        chain_refs(c.ruleset(), "nf-in-a").0,
        ["nf-i-a.db", "nf-i-a.web-1"]
    );
    // And back: the same selector chain, by name.
    c.upsert_policy(allow_from("a", "web-2", "app=web", "app=web"))
        .unwrap();
    assert_eq!(chain_refs(c.ruleset(), "nf-in-a").0[1], selector);
    for name in ["web-1", "web-2", "db"] {
        c.delete_policy(&ObjectKey::new("a", name)).unwrap();
    }
    c.delete_pod(&ObjectKey::new("a", "web2"));
    assert_eq!(c.ruleset().owned_view(), before.owned_view());
}

/// The namespaces `nf-ingress` reaches, through bucket chains or directly,
/// in order, with the set each bucket line looks up (`None` for a direct
/// namespace line).
fn ingress_dispatch(rs: &Ruleset) -> Vec<(Option<String>, Vec<String>)> {
    let (targets, sets) = chain_refs(rs, "nf-ingress");
    assert_eq!(
        targets.len(),
        sets.len(),
        "a set on every line but the drop"
    );
    targets
        .into_iter()
        .zip(sets)
        .map(|(t, set)| match t.strip_prefix("nf-ingress-") {
            Some(_) => {
                let (inner, inner_sets) = chain_refs(rs, &t);
                assert_eq!(inner.len(), inner_sets.len());
                assert!(inner.len() > 1, "a bucket of one is a direct line: {t}");
                (Some(set), inner)
            }
            None => (None, vec![t]),
        })
        .collect()
}

#[test]
fn past_the_flat_limit_namespaces_dispatch_through_buckets() {
    let mut c = compiler(Some("n1"));
    let names: Vec<String> = (0..20).map(|i| format!("ns{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        let i = u8::try_from(i).unwrap();
        c.upsert_namespace(ns(n, &[]));
        c.upsert_pod(pod(n, "web", &[("app", "web")], 2 * i + 1));
        c.upsert_pod(pod(n, "db", &[("app", "db")], 2 * i + 2));
    }
    let before = c.ruleset().clone();
    let web = |i: u8| format!("10.244.0.{}", 2 * i + 1);
    let db = |i: u8| format!("10.244.0.{}", 2 * i + 2);
    for n in &names[..CompilerConfig::default().dispatch_flat_max] {
        c.upsert_policy(allow_from(n, "p", "app=web", "app=db"))
            .unwrap();
    }
    // Up to the limit: a line per namespace.
    let flat = ingress_dispatch(c.ruleset());
    assert_eq!(flat.len(), 6);
    assert!(flat.iter().all(|(set, _)| set.is_none()), "{flat:?}");
    for n in &names[6..] {
        c.upsert_policy(allow_from(n, "p", "app=web", "app=db"))
            .unwrap();
    }
    // Twenty: four buckets (4² is the greatest square of a power of two up
    // to 20), each namespace in exactly one, each bucket set the pods of its
    // namespaces.
    let rs = c.ruleset();
    let top = ingress_dispatch(rs);
    assert!(top.len() <= 4, "{top:?}");
    let mut reached: Vec<String> = top.iter().flat_map(|(_, ns)| ns.clone()).collect();
    reached.sort();
    let mut want: Vec<String> = names.iter().map(|n| format!("nf-in-{n}")).collect();
    want.sort();
    assert_eq!(reached, want);
    let mut buckets = Vec::new();
    for (set, chains) in &top {
        let Some(set) = set else { continue };
        let mut members: Vec<String> = rs
            .set(set)
            .unwrap()
            .members()
            .filter(|m| matches!(m, ruleset::Member::Ip(IpAddr::V4(_))))
            .map(|m| m.to_string())
            .collect();
        members.sort();
        let mut pods: Vec<String> = Vec::new();
        for ch in chains {
            let i: u8 = ch.strip_prefix("nf-in-ns").unwrap().parse().unwrap();
            pods.extend([web(i), db(i)]);
        }
        pods.sort();
        assert_eq!(members, pods, "{set}");
        buckets.push(set.clone());
    }
    assert!(!buckets.is_empty(), "20 namespaces in 4 buckets share some");
    // Each web pod takes from its own namespace's db only.
    for i in 0..20u8 {
        assert_eq!(tcp_80(rs, &db(i), &web(i)), Verdict::Accept, "ns{i}");
        assert_eq!(
            tcp_80(rs, &db((i + 1) % 20), &web(i)),
            Verdict::Drop,
            "ns{i}"
        );
        assert_eq!(tcp_80(rs, "192.0.2.1", &web(i)), Verdict::Drop, "ns{i}");
        assert_eq!(tcp_80(rs, &web(i), &db(i)), Verdict::Accept, "ns{i}");
    }
    // A new pod joins its namespace's set and its bucket's, and nothing else
    // changes but members.
    let (bucket_set, chains) = top.iter().find(|(s, _)| s.is_some()).unwrap().clone();
    let n = chains[0].strip_prefix("nf-in-").unwrap().to_owned();
    let p = plan_of(&c, |c| {
        c.upsert_pod(pod(&n, "web2", &[("app", "web")], 200))
    });
    assert!(members_only(&p), "{p}");
    let text = p.to_string();
    assert!(text.contains(&bucket_set.unwrap()), "{p}");
    // Back to six namespaces: flat again, the bucket chains and sets gone.
    for n in &names[6..] {
        c.delete_policy(&ObjectKey::new(n.as_str(), "p")).unwrap();
    }
    assert_eq!(ingress_dispatch(c.ruleset()), flat);
    for set in &buckets {
        assert!(c.ruleset().set(set).is_none(), "{set}");
    }
    let t = TableId::filter(ruleset::Family::Ipv4);
    let left: Vec<&String> = c.ruleset().tables()[&t]
        .chains
        .keys()
        .filter(|ch| ch.starts_with("nf-ingress-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for n in &names[..6] {
        c.delete_policy(&ObjectKey::new(n.as_str(), "p")).unwrap();
    }
    assert_eq!(c.ruleset().owned_view(), before.owned_view());
}

#[test]
fn a_namespace_losing_its_last_policy_loses_its_line_chain_and_set() {
    let mut c = compiler(Some("n1"));
    for n in ["a", "b"] {
        c.upsert_namespace(ns(n, &[]));
    }
    c.upsert_pod(pod("a", "web", &[("app", "web")], 1));
    c.upsert_policy(deny_ingress("b", "deny", "")).unwrap();
    let before = c.ruleset().clone();
    c.upsert_policy(deny_ingress("a", "one", "app=web"))
        .unwrap();
    c.upsert_policy(Policy {
        egress: Some(vec![]),
        ..deny_ingress("a", "two", "")
    })
    .unwrap();
    let t = TableId::filter(ruleset::Family::Ipv4);
    assert!(c.ruleset().chain(&t, "nf-eg-a").is_some());
    let (_, top) = chain_refs(c.ruleset(), "nf-ingress");
    let a_set = top
        .iter()
        .find(|s| !before.sets().contains_key(*s))
        .unwrap()
        .clone();
    // Its last egress policy gone, a keeps its ingress dispatch and its set.
    let mut only_ingress = deny_ingress("a", "two", "");
    only_ingress.ingress = Some(vec![]);
    c.upsert_policy(only_ingress).unwrap();
    assert!(c.ruleset().chain(&t, "nf-eg-a").is_none());
    assert_eq!(
        c.ruleset().chain(&t, "nf-egress").unwrap().owned().count(),
        1
    );
    assert!(c.ruleset().set(&a_set).is_some());
    // Its last policy gone: no line, no chain, no set, the ruleset as before.
    c.delete_policy(&ObjectKey::new("a", "one")).unwrap();
    assert!(c.ruleset().chain(&t, "nf-in-a").is_some());
    let p = plan_of(&c, |c| {
        c.delete_policy(&ObjectKey::new("a", "two")).unwrap()
    });
    assert!(p.to_string().contains("nf-in-a"), "{p}");
    c.delete_policy(&ObjectKey::new("a", "two")).unwrap();
    assert!(c.ruleset().chain(&t, "nf-in-a").is_none());
    assert!(c.ruleset().set(&a_set).is_none());
    assert_eq!(chain_refs(c.ruleset(), "nf-ingress").1.len(), 1);
    assert_eq!(c.ruleset().owned_view(), before.owned_view());
}

#[test]
fn long_namespace_names_give_hashed_namespace_chains() {
    let mut c = compiler(None);
    let long = "n".repeat(63);
    c.upsert_namespace(ns(&long, &[]));
    c.upsert_pod(pod(&long, "web", &[], 1));
    c.upsert_policy(deny_ingress(&long, "deny", "")).unwrap();
    let (targets, _) = chain_refs(c.ruleset(), "nf-ingress");
    assert_eq!(targets.len(), 1);
    assert!(
        targets[0].len() <= 28 && targets[0].starts_with("nf-_"),
        "{targets:?}"
    );
    c.ruleset().validate().unwrap();
}

#[test]
fn equal_selectors_share_sets_and_rule_order_renames_nothing() {
    let mut c = world();
    let base = c.ruleset().sets().len();
    // A second policy with the same selection and peer adds no set.
    let mut twin = (**c
        .cluster()
        .policy(&ObjectKey::new("a", "allow-clients"))
        .unwrap())
    .clone();
    twin.name = "twin".into();
    c.upsert_policy(twin.clone()).unwrap();
    assert_eq!(c.ruleset().sets().len(), base);
    // Reordering rules keeps every set name.
    let names: Vec<String> = c.ruleset().sets().keys().cloned().collect();
    let rules = twin.ingress.as_mut().unwrap();
    rules.push(Rule {
        peers: vec![Peer::IpBlock(IpBlock {
            cidr: "192.0.2.0/24".parse().unwrap(),
            except: vec![],
        })],
        ports: vec![],
    });
    c.upsert_policy(twin.clone()).unwrap();
    let with_block: Vec<String> = c.ruleset().sets().keys().cloned().collect();
    twin.ingress.as_mut().unwrap().reverse();
    c.upsert_policy(twin.clone()).unwrap();
    assert_eq!(
        c.ruleset().sets().keys().cloned().collect::<Vec<_>>(),
        with_block
    );
    // Dropping the twin drops the block set it alone used, and nothing else.
    c.delete_policy(&twin.key()).unwrap();
    assert_eq!(
        c.ruleset().sets().keys().cloned().collect::<Vec<_>>(),
        names
    );
    assert!(c.ruleset().sets().keys().all(|n| n.len() <= 31));
}

#[test]
fn overlapping_blocks_of_two_peers_do_not_cancel_each_other() {
    // Peer 1 allows 10.0.0.0/8 except 10.1.0.0/16; peer 2 allows 10.1.2.0/24.
    // 10.1.2.3 is allowed by peer 2; 10.1.3.3 by neither; 10.2.0.1 by peer 1.
    let mut c = compiler(None);
    c.upsert_namespace(ns("a", &[]));
    c.upsert_pod(pod("a", "web", &[], 1));
    c.upsert_policy(Policy {
        namespace: "a".into(),
        name: "blocks".into(),
        pod_selector: sel(""),
        ingress: Some(vec![Rule {
            peers: vec![
                Peer::IpBlock(IpBlock {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    except: vec!["10.1.0.0/16".parse().unwrap()],
                }),
                Peer::IpBlock(IpBlock {
                    cidr: "10.1.2.0/24".parse().unwrap(),
                    except: vec![],
                }),
                Peer::IpBlock(IpBlock {
                    cidr: "::/0".parse().unwrap(),
                    except: vec!["::/1".parse().unwrap()],
                }),
            ],
            ports: vec![],
        }]),
        egress: None,
    })
    .unwrap();
    let rs = c.ruleset();
    let v = |src: &str, dst: &str| tcp_80(rs, src, dst);
    assert_eq!(v("10.1.2.3", "10.244.0.1"), Verdict::Accept);
    assert_eq!(v("10.1.3.3", "10.244.0.1"), Verdict::Drop);
    assert_eq!(v("10.2.0.1", "10.244.0.1"), Verdict::Accept);
    // ::/0 except ::/1 is the upper half, held as a /1 (hash:net has no /0).
    assert_eq!(v("8000::1", "fd00::1"), Verdict::Accept);
    assert_eq!(v("2001:db8::1", "fd00::1"), Verdict::Drop);
}

#[test]
fn only_local_pods_are_isolated_and_remote_peers_still_count() {
    let mut c = compiler(Some("n1"));
    c.upsert_namespace(ns("a", &[]));
    let mut remote = pod("a", "remote", &[("app", "client")], 2);
    remote.node_name = Some("n2".into());
    c.upsert_pod(pod("a", "local", &[("app", "web")], 1));
    c.upsert_pod(remote);
    c.upsert_policy(Policy {
        namespace: "a".into(),
        name: "p".into(),
        pod_selector: sel(""),
        ingress: Some(vec![Rule {
            peers: vec![Peer::Pods {
                namespaces: NamespaceScope::Only("a".into()),
                pods: sel("app=client"),
            }],
            ports: vec![],
        }]),
        egress: None,
    })
    .unwrap();
    let iso = c.ruleset().set("nf-iso-in4").unwrap();
    assert_eq!(iso.len(), 1);
    assert!(iso.matches("10.244.0.1".parse().unwrap()));
    let v = |src: &str, dst: &str| tcp_80(c.ruleset(), src, dst);
    assert_eq!(v("10.244.0.2", "10.244.0.1"), Verdict::Accept);
    assert_eq!(v("192.0.2.1", "10.244.0.1"), Verdict::Drop);
    // The remote pod is not isolated here: its own node enforces it.
    assert_eq!(v("192.0.2.1", "10.244.0.2"), Verdict::Accept);
}

#[test]
fn a_selection_and_a_same_namespace_peer_with_its_selector_share_one_set() {
    let mut c = compiler(Some("n1"));
    c.upsert_namespace(ns("a", &[]));
    c.upsert_pod(pod("a", "web", &[("app", "web")], 1));
    c.upsert_pod(pod("a", "client", &[("app", "client")], 2));
    let mut remote = pod("a", "remote-web", &[("app", "web")], 3);
    remote.node_name = Some("n2".into());
    c.upsert_pod(remote);
    c.upsert_policy(allow_from("a", "web", "app=web", "app=client"))
        .unwrap();
    c.upsert_policy(allow_from("a", "client", "app=client", "app=web"))
        .unwrap();
    // Per family: the namespace's pods, app=web and app=client, each once,
    // where a set of local pods per selection made it five.
    let grants: Vec<(&String, usize)> = c
        .ruleset()
        .sets()
        .iter()
        .filter(|(n, s)| n.ends_with('4') && s.polarity == ruleset::Polarity::Grants)
        .map(|(n, s)| (n, s.len()))
        .collect();
    assert_eq!(grants.len(), 3, "{grants:?}");
    let mut sizes: Vec<usize> = grants.iter().map(|g| g.1).collect();
    sizes.sort();
    assert_eq!(sizes, [1, 2, 3], "{grants:?}");
    let iso = c.ruleset().set("nf-iso-in4").unwrap();
    assert_eq!(iso.len(), 2, "only the local pods are isolated");
    let v = |src: &str, dst: &str| tcp_80(c.ruleset(), src, dst);
    assert_eq!(v("10.244.0.2", "10.244.0.1"), Verdict::Accept);
    assert_eq!(v("10.244.0.3", "10.244.0.2"), Verdict::Accept);
    // The remote web pod is a member of the set web's policy selects with,
    // but that selects nothing here: it is not isolated on this node, and
    // as a source it is web, not client.
    assert_eq!(v("192.0.2.1", "10.244.0.3"), Verdict::Accept);
    assert_eq!(v("10.244.0.3", "10.244.0.1"), Verdict::Drop);
    assert_eq!(v("192.0.2.1", "10.244.0.1"), Verdict::Drop);
}

#[test]
fn a_shared_address_stays_while_one_pod_still_has_it() {
    let mut c = compiler(None);
    c.upsert_namespace(ns("a", &[]));
    c.upsert_pod(pod("a", "old", &[], 1));
    c.upsert_pod(pod("a", "new", &[], 1));
    c.upsert_policy(deny_ingress("a", "deny", "")).unwrap();
    c.delete_pod(&ObjectKey::new("a", "old"));
    assert!(c
        .ruleset()
        .set("nf-iso-in4")
        .unwrap()
        .matches("10.244.0.1".parse().unwrap()));
    c.delete_pod(&ObjectKey::new("a", "new"));
    assert!(c.ruleset().set("nf-iso-in4").unwrap().is_empty());
}

#[test]
fn anti_spoofing_follows_local_pods_with_a_host_interface() {
    let mut c = Compiler::new(CompilerConfig {
        node: Some("n1".into()),
        pod_interface_prefix: Some("vp".into()),
        ..CompilerConfig::default()
    })
    .unwrap();
    let text = without_ids(&ruleset::render::iptables_save(
        c.ruleset(),
        ruleset::Family::Ipv4,
    ));
    assert!(
        text.contains("-A nf-fw -i vp+ -m set ! --match-set nf-podsrc4 src,src -j DROP"),
        "{text}"
    );
    c.upsert_namespace(ns("a", &[]));
    let with_iface = |name: &str, host: u8, iface: &str| {
        let mut p = pod("a", name, &[], host);
        p.host_interface = Some(iface.into());
        p
    };
    c.upsert_pod(with_iface("p1", 1, "vp1"));
    let mut remote = with_iface("remote", 2, "vp2");
    remote.node_name = Some("n2".into());
    c.upsert_pod(remote);
    let mut v4only = with_iface("p3", 3, "vp3");
    v4only.ipv6 = None;
    c.upsert_pod(v4only.clone());
    c.upsert_pod(pod("a", "plain", &[], 4));

    let members = |set: &str| -> Vec<String> {
        let mut m: Vec<String> = c
            .ruleset()
            .set(set)
            .unwrap()
            .members()
            .map(|m| m.to_string())
            .collect();
        m.sort();
        m
    };
    assert_eq!(members("nf-podsrc4"), ["10.244.0.1,vp1", "10.244.0.3,vp3"]);
    // p3 has no IPv6 address: every IPv6 source on its interface is forged.
    assert_eq!(members("nf-podsrc6"), ["fd00::1,vp1"]);

    let v = |c: &Compiler, src: &str, iface: &str, ct: CtState| {
        let mut p = Packet::tcp(src.parse().unwrap(), "192.0.2.1".parse().unwrap(), 80);
        p.in_iface = Some(iface.into());
        p.ct = ct;
        verdict(c.ruleset(), Hook::Forward, &p)
    };
    assert_eq!(v(&c, "10.244.0.1", "vp1", CtState::NEW), Verdict::Accept);
    assert_eq!(v(&c, "fd00::1", "vp1", CtState::NEW), Verdict::Accept);
    // Another pod's address, or any other, from vp1: dropped, also when it
    // would ride an established connection.
    assert_eq!(v(&c, "10.244.0.3", "vp1", CtState::NEW), Verdict::Drop);
    assert_eq!(
        v(&c, "198.51.100.7", "vp1", CtState::ESTABLISHED),
        Verdict::Drop
    );
    assert_eq!(v(&c, "fd00::3", "vp3", CtState::NEW), Verdict::Drop);
    // A pod interface no local pod claims (yet) sends nothing; other interfaces
    // are not netfence's to police.
    assert_eq!(v(&c, "10.244.0.2", "vp2", CtState::NEW), Verdict::Drop);
    assert_eq!(v(&c, "198.51.100.7", "eth0", CtState::NEW), Verdict::Accept);

    // Pod churn touches members only: a new address, a new interface, a
    // deletion.
    let mut moved = v4only.clone();
    moved.ipv4 = Some(Ipv4Addr::new(10, 244, 0, 9));
    let p = plan_of(&c, |c| c.upsert_pod(moved.clone()));
    assert!(members_only(&p), "{p:?}");
    moved.host_interface = Some("vp9".into());
    let p = plan_of(&c, |c| c.upsert_pod(moved.clone()));
    assert!(members_only(&p), "{p:?}");
    let p = plan_of(&c, |c| c.delete_pod(&ObjectKey::new("a", "p1")));
    assert!(members_only(&p), "{p:?}");

    // Two pods on one interface (a misconfiguration, or a pod being replaced):
    // the halves stay while one of them is there.
    c.upsert_pod(with_iface("p1b", 5, "vp1"));
    c.delete_pod(&ObjectKey::new("a", "p1"));
    assert_eq!(v(&c, "10.244.0.5", "vp1", CtState::NEW), Verdict::Accept);
    assert_eq!(v(&c, "10.244.0.1", "vp1", CtState::NEW), Verdict::Drop);
    c.delete_pod(&ObjectKey::new("a", "p1b"));
    c.delete_pod(&ObjectKey::new("a", "p3"));
    for set in ["nf-podsrc4", "nf-podsrc6"] {
        assert!(c.ruleset().set(set).unwrap().is_empty(), "{set}");
    }
}

// ---------------------------------------------------------------------------
// Conformance clusters under churn: every case's cluster, with each of its
// pods relabelled, re-addressed and deleted, and each namespace relabelled.

#[test]
fn churn_in_every_conformance_cluster_changes_members_only() {
    let mut checked = 0;
    for case in cases::all() {
        let cluster = case.cluster();
        let mut c = compiler(None);
        c.compile(&cluster).unwrap();
        let pods: Vec<Arc<Pod>> = cluster.pods().cloned().collect();
        let namespaces: Vec<Arc<Namespace>> = cluster.namespaces().cloned().collect();
        let mut deltas: Vec<Change> = Vec::new();
        for p in pods {
            let key = p.key();
            let mut relabelled = (*p).clone();
            relabelled.labels.clear();
            relabelled.labels.insert("churn".into(), "x".into());
            deltas.push(Box::new(move |c| c.upsert_pod(relabelled)));
            let mut moved = (*p).clone();
            moved.ipv4 = Some(Ipv4Addr::new(10, 99, 0, 1));
            moved.ipv6 = None;
            deltas.push(Box::new(move |c| c.upsert_pod(moved)));
            let mut twin = (*p).clone();
            twin.name.push_str("-twin");
            twin.ipv4 = Some(Ipv4Addr::new(10, 99, 0, 2));
            deltas.push(Box::new(move |c| c.upsert_pod(twin)));
            deltas.push(Box::new(move |c| c.delete_pod(&key)));
        }
        for n in namespaces {
            let mut relabelled = (*n).clone();
            relabelled.labels.retain(|k, _| k == NAMESPACE_NAME_LABEL);
            relabelled.labels.insert("churn".into(), "x".into());
            deltas.push(Box::new(move |c| c.upsert_namespace(relabelled)));
            let name = n.name.clone();
            deltas.push(Box::new(move |c| c.delete_namespace(&name)));
        }
        for delta in deltas {
            let p = plan_of(&c, delta);
            assert!(members_only(&p), "case {}: {p}", case.name);
            checked += 1;
        }
    }
    assert!(checked > 500, "{checked}");
}

// ---------------------------------------------------------------------------
// Random clusters and deltas.

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const SELECTORS: [&str; 8] = [
    "",
    "app=web",
    "app=db",
    "tier",
    "!tier",
    "app in (web,db),tier=x",
    "app!=web",
    "env=prod",
];

fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        prop::option::of(prop::sample::select(&["web", "db"][..])),
        prop::option::of(prop::sample::select(&["x", "y"][..])),
    )
        .prop_map(|(app, tier)| {
            let mut l = BTreeMap::new();
            if let Some(a) = app {
                l.insert("app".to_string(), a.to_string());
            }
            if let Some(t) = tier {
                l.insert("tier".to_string(), t.to_string());
            }
            l
        })
}

fn arb_namespace() -> impl Strategy<Value = Namespace> {
    (prop::sample::select(&NAMESPACES[..]), any::<bool>())
        .prop_map(|(n, prod)| ns(n, if prod { &[("env", "prod")] } else { &[] }))
}

fn arb_pod() -> impl Strategy<Value = Pod> {
    (
        prop::sample::select(&NAMESPACES[..]),
        0..5u8,
        arb_labels(),
        // Eight addresses for up to fifteen pods: some share one. Either family may be
        // missing, so that a pod gains or loses an address.
        (1..9u8, any::<bool>(), prop::bool::weighted(0.8)),
        prop::sample::select(&[None, Some("n1"), Some("n2")][..]),
        // Host interfaces, some shared, to churn the anti-spoofing sets.
        prop::sample::select(&[None, Some("vp1"), Some("vp2"), Some("vp3")][..]),
        prop::collection::vec(
            prop::sample::select(
                &[
                    ("http", Protocol::Tcp, 80),
                    ("http", Protocol::Tcp, 8080),
                    ("http", Protocol::Udp, 80),
                    ("dns", Protocol::Udp, 53),
                    ("http", Protocol::Sctp, 80),
                ][..],
            ),
            0..3,
        ),
    )
        .prop_map(|(n, i, labels, (host, v6, v4), node, iface, ports)| {
            let mut p = pod(n, &format!("p{i}"), &[], host);
            p.host_interface = iface.map(String::from);
            p.labels = labels;
            if !v6 {
                p.ipv6 = None;
            }
            if !v4 {
                p.ipv4 = None;
            }
            p.node_name = node.map(String::from);
            for (name, protocol, port) in ports {
                p.named_ports
                    .entry(name.to_string())
                    .or_default()
                    .insert(ContainerPort { protocol, port });
            }
            p
        })
}

type Block = (&'static str, &'static [&'static str]);
const BLOCKS: [Block; 5] = [
    ("10.244.0.0/29", &["10.244.0.4/30"]),
    ("0.0.0.0/0", &["10.244.0.0/30"]),
    // A /0 goes in as two halves; an except that is one of them replaces it.
    ("0.0.0.0/0", &["0.0.0.0/1"]),
    ("10.244.0.0/28", &[]),
    ("fd00::/125", &["fd00::4/126"]),
];

fn arb_peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        (
            prop::sample::select(&NAMESPACES[..]),
            prop::sample::select(&SELECTORS[..])
        )
            .prop_map(|(n, s)| Peer::Pods {
                namespaces: NamespaceScope::Only(n.into()),
                pods: sel(s),
            }),
        (
            prop::sample::select(&SELECTORS[..]),
            prop::sample::select(&SELECTORS[..])
        )
            .prop_map(|(n, s)| Peer::Pods {
                namespaces: NamespaceScope::Selected(sel(n)),
                pods: sel(s),
            }),
        prop::sample::select(&BLOCKS[..]).prop_map(|(cidr, except)| Peer::IpBlock(IpBlock {
            cidr: cidr.parse().unwrap(),
            except: except.iter().map(|e| e.parse().unwrap()).collect(),
        })),
    ]
}

fn arb_port() -> impl Strategy<Value = PortRule> {
    const PORTS: [(Protocol, Option<u16>, Option<&str>); 6] = [
        (Protocol::Tcp, None, None),
        (Protocol::Tcp, Some(80), None),
        (Protocol::Udp, Some(50), None),
        (Protocol::Tcp, None, Some("http")),
        (Protocol::Udp, None, Some("http")),
        (Protocol::Udp, None, Some("dns")),
    ];
    prop::sample::select(&PORTS[..]).prop_map(|(protocol, port, name)| PortRule {
        protocol,
        port: match (port, name) {
            (_, Some(n)) => Port::Named(n.into()),
            (Some(p), None) if protocol == Protocol::Udp => Port::Range { start: p, end: 90 },
            (Some(p), None) => Port::Range { start: p, end: p },
            (None, None) => Port::Any,
        },
    })
}

fn arb_rules() -> impl Strategy<Value = Option<Vec<Rule>>> {
    prop::option::of(prop::collection::vec(
        (
            prop::collection::vec(arb_peer(), 0..3),
            prop::collection::vec(arb_port(), 0..3),
        )
            .prop_map(|(peers, ports)| Rule { peers, ports }),
        0..3,
    ))
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop::sample::select(&NAMESPACES[..]),
        0..3u8,
        prop::sample::select(&SELECTORS[..]),
        arb_rules(),
        arb_rules(),
    )
        .prop_map(|(n, i, s, ingress, egress)| Policy {
            namespace: n.into(),
            name: format!("np{i}"),
            pod_selector: sel(s),
            ingress,
            egress,
        })
}

#[derive(Clone, Debug)]
enum Delta {
    Pod(Pod),
    DelPod(String, u8),
    Ns(Namespace),
    DelNs(String),
    Policy(Policy),
    DelPolicy(String, u8),
}

fn arb_delta() -> impl Strategy<Value = Delta> {
    let name = prop::sample::select(&NAMESPACES[..]).prop_map(String::from);
    prop_oneof![
        4 => arb_pod().prop_map(Delta::Pod),
        2 => (name.clone(), 0..5u8).prop_map(|(n, i)| Delta::DelPod(n, i)),
        2 => arb_namespace().prop_map(Delta::Ns),
        1 => name.clone().prop_map(Delta::DelNs),
        2 => arb_policy().prop_map(Delta::Policy),
        1 => (name, 0..3u8).prop_map(|(n, i)| Delta::DelPolicy(n, i)),
    ]
}

fn apply(c: &mut Compiler, cluster: &mut Cluster, d: &Delta) {
    match d.clone() {
        Delta::Pod(p) => {
            cluster.upsert_pod(p.clone());
            c.upsert_pod(p);
        }
        Delta::DelPod(n, i) => {
            let k = ObjectKey::new(n, format!("p{i}"));
            cluster.delete_pod(&k);
            c.delete_pod(&k);
        }
        Delta::Ns(n) => {
            cluster.upsert_namespace(n.clone());
            c.upsert_namespace(n);
        }
        Delta::DelNs(n) => {
            cluster.delete_namespace(&n);
            c.delete_namespace(&n);
        }
        Delta::Policy(p) => {
            cluster.upsert_policy(p.clone());
            c.upsert_policy(p).unwrap();
        }
        Delta::DelPolicy(n, i) => {
            let k = ObjectKey::new(n, format!("np{i}"));
            cluster.delete_policy(&k);
            c.delete_policy(&k).unwrap();
        }
    }
}

fn is_churn(d: &Delta) -> bool {
    !matches!(d, Delta::Policy(_) | Delta::DelPolicy(..))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Deltas applied one by one give the ruleset a full compile of the
    /// final cluster gives; the accumulated scope plans what a full plan
    /// does; and pod and namespace deltas alone never change a rule. The
    /// same holds when the deltas come as one burst with dispatch held, as
    /// the sync engine applies them.
    #[test]
    fn incremental_equals_full_and_scope_plans_the_same(
        start in prop::collection::vec(arb_delta(), 0..25),
        deltas in prop::collection::vec(arb_delta(), 1..25),
        held in any::<bool>(),
        flat_max in arb_flat_max(),
    ) {
        let mut c = compiler_flat(Some("n1"), flat_max);
        let mut cluster = Cluster::new();
        for d in &start {
            apply(&mut c, &mut cluster, d);
        }
        let cur = observed(c.ruleset());
        c.take_scope();
        if held {
            c.hold_dispatch();
        }
        for d in &deltas {
            apply(&mut c, &mut cluster, d);
        }
        // Held, the burst is taken as the sync engine's two-thread commit takes it:
        // the sets (with the dispatch's own) first, then the chains, which must then
        // touch no set.
        let mut set_plan = None;
        let scope = if held {
            c.settle_sets().unwrap();
            let mut sets = c.take_set_scope();
            // What the engine plans the sets from, before it settles.
            set_plan = Some(plan_sets_scoped(&cur, c.unsettled_ruleset(), &sets).unwrap());
            c.settle().unwrap();
            let chains = c.take_scope();
            prop_assert!(
                chains.sets.is_empty() && chains.members.is_empty(),
                "settling touched sets after settle_sets"
            );
            sets.merge(chains);
            sets
        } else {
            c.settle().unwrap();
            c.take_scope()
        };
        let mut full = compiler_flat(Some("n1"), flat_max);
        full.compile(&cluster).unwrap();
        prop_assert_eq!(c.ruleset().owned_view(), full.ruleset().owned_view());
        let whole = plan(&cur, c.ruleset()).unwrap();
        prop_assert_eq!(plan_scoped(&cur, c.ruleset(), &scope).unwrap(), whole.clone());
        if let Some(sets) = set_plan {
            prop_assert_eq!(&sets.before, &whole.before);
            prop_assert_eq!(&sets.after, &whole.after);
        }
        if deltas.iter().all(is_churn) {
            prop_assert!(members_only(&whole), "churn changed more than members:\n{}", whole);
        }
        // The plan really gets the kernel there.
        let after = whole.apply_in_memory(&cur).unwrap();
        prop_assert_eq!(after.owned_view(), c.ruleset().owned_view());
    }

    /// The compiled ruleset of a random cluster (built by deltas) allows
    /// exactly what the reference evaluator allows, for every pair of pods
    /// and some hosts, over every protocol and a few ports, in both families.
    #[test]
    fn compiled_ruleset_agrees_with_the_evaluator(
        deltas in prop::collection::vec(arb_delta(), 1..30),
        flat_max in arb_flat_max(),
    ) {
        let mut c = compiler_flat(None, flat_max);
        let mut cluster = Cluster::new();
        for d in &deltas {
            apply(&mut c, &mut cluster, d);
        }
        let mut eps: Vec<Endpoint> = cluster.pods().map(|p| Endpoint::Pod(p.key())).collect();
        for h in ["10.244.0.5", "192.0.2.1", "fd00::5", "2001:db8::1"] {
            eps.push(Endpoint::External(h.parse::<IpAddr>().unwrap()));
        }
        let rs = c.ruleset();
        for family in Family::ALL {
            // Addresses two pods share make a probe ambiguous: skip them.
            let mut owners: BTreeMap<IpAddr, usize> = BTreeMap::new();
            for p in cluster.pods() {
                if let Some(ip) = p.ip(family) {
                    *owners.entry(ip).or_default() += 1;
                }
            }
            let addr = |e: &Endpoint| policy::address(&cluster, e, family);
            for src in &eps {
                for dst in &eps {
                    let (Some(s), Some(d)) = (addr(src), addr(dst)) else { continue };
                    // A pod to itself crosses the node only through a Service's
                    // hairpin, which policy judges like any other connection.
                    let hairpin = src == dst && matches!(src, Endpoint::Pod(_));
                    if owners.get(&s) > Some(&1) || owners.get(&d) > Some(&1)
                        || owners.contains_key(&s) && matches!(src, Endpoint::External(_))
                        || owners.contains_key(&d) && matches!(dst, Endpoint::External(_))
                        || s == d && !hairpin
                    {
                        continue;
                    }
                    for protocol in Protocol::ALL {
                        for port in [53, 80, 8080] {
                            let want = if hairpin {
                                egress_allows(&cluster, src, dst, protocol, port, family)
                                    && ingress_allows(&cluster, src, dst, protocol, port, family)
                            } else {
                                allowed(&cluster, src, dst, protocol, port, family)
                            };
                            let pkt = Packet {
                                src: s,
                                dst: d,
                                protocol: nft_protocol(protocol),
                                sport: 40000,
                                dport: port,
                                in_iface: None,
                                out_iface: None,
                                ct: CtState::NEW,
                                mark: 0,
                            };
                            let seen = verdict(rs, Hook::Forward, &pkt) == Verdict::Accept;
                            prop_assert_eq!(
                                seen, want,
                                "{} -> {} {}/{} {}\n{}", src, dst, protocol, port, family,
                                ruleset::render::iptables_save(rs, match family {
                                    Family::Ipv4 => ruleset::Family::Ipv4,
                                    Family::Ipv6 => ruleset::Family::Ipv6,
                                })
                            );
                        }
                    }
                }
            }
        }
    }
}
