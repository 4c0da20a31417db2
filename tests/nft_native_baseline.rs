//! The native-nft baseline (`benches/common/nft_native.rs`): every rule the
//! Calico-like baseline renders translates; `hash:net` sets with `nomatch`
//! excepts keep their membership as interval sets; a full render loads with
//! `nft -f` and reads back with the expected chains, rules, sets and elements;
//! and every delta kind, applied as one `nft -f` script, leaves exactly the state
//! a fresh render of the changed cluster loads. Kernel tests run as root, each in
//! its own network namespace.

mod common;

#[path = "../benches/common/mod.rs"]
mod bench_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr as _;

use bench_common::calico::{self, CalicoConfig, Rendered, SetKind};
use bench_common::cluster::{self, ClusterSpec, Generated};
use bench_common::nft_native;
use common::Sandbox;
use ipnet::IpNet;
use policy::{Cluster, Family};
use serde_json::Value;

fn small_spec() -> ClusterSpec {
    ClusterSpec {
        dual_stack: true,
        seed: 7,
        ..ClusterSpec::new(200, 10, 30)
    }
}

fn cfg() -> CalicoConfig {
    CalicoConfig::new(Some("node-1".into()), true)
}

// ---------------------------------------------------------------- pure

#[test]
fn every_rendered_rule_translates() {
    for dual_stack in [false, true] {
        let g = cluster::generate(&ClusterSpec {
            dual_stack,
            ..ClusterSpec::new(2000, 40, 400)
        });
        let r = calico::render_state(&g.cluster(), &CalicoConfig::new(None, dual_stack));
        let tables = [(Family::Ipv4, Some(&r.v4)), (Family::Ipv6, r.v6.as_ref())];
        let mut n = 0;
        for (family, table) in tables {
            for rules in table.into_iter().flat_map(|t| t.chains.values()) {
                for text in rules {
                    let nft = nft_native::rule(text, family)
                        .unwrap_or_else(|e| panic!("{family:?}: {e}"));
                    assert!(nft.ends_with('"'), "the comment survives: {nft}");
                    n += 1;
                }
            }
        }
        assert_eq!(n, r.stats().rules);
        let script = nft_native::render(&r);
        assert_eq!(
            script
                .lines()
                .filter(|l| l.starts_with("add rule "))
                .count(),
            n
        );
        // The whole vocabulary shows up.
        for needle in [
            "iifname \"cali*\" ",
            "oifname \"cali",
            "ct state related,established accept",
            "ct state invalid drop",
            "meta mark set meta mark & 0xfffeffff",
            "meta mark set meta mark | 0x00010000",
            "meta mark & 0x00010000 == 0x00010000 return",
            "meta l4proto tcp th dport { ",
            "meta l4proto udp",
            "ip saddr @cali40s_",
            "ip daddr @cali40s_",
            "ip daddr . meta l4proto . th dport @cali40n_",
            "goto cali-tw-",
            "jump cali-pi-_",
            "drop comment",
            "accept comment",
            "add chain ip calico FORWARD { type filter hook forward priority filter; policy accept; }",
        ] {
            assert!(script.contains(needle), "{needle:?} (dual stack {dual_stack})");
        }
        if dual_stack {
            assert!(script.contains("ip6 saddr @cali60s_"));
            assert!(script.contains("add table ip6 calico\n"));
        } else {
            assert!(!script.contains(" ip6 "));
        }
    }
}

#[test]
fn untranslatable_rules_are_errors() {
    for text in [
        "-m comment --comment \"x\" -j REJECT",
        "-s 10.0.0.0/8 -j ACCEPT",
        "-m set ! --match-set s src -j ACCEPT",
        "-m set --match-set s src,dst -j ACCEPT",
        "-m multiport --dports 80 -j ACCEPT",
        "-p icmp -j ACCEPT",
        "-m conntrack --ctstate DNAT -j ACCEPT",
        "-j ACCEPT -j DROP",
        "-m comment --comment \"open",
        "",
    ] {
        assert!(
            nft_native::rule(text, Family::Ipv4).is_err(),
            "{text:?} translated"
        );
    }
}

/// ipset's `hash:net` verdict: the most specific entry containing `a` decides.
fn hash_net_matches(members: &BTreeSet<String>, a: IpAddr) -> bool {
    members
        .iter()
        .map(|m| match m.strip_suffix(" nomatch") {
            Some(net) => (IpNet::from_str(net).unwrap(), false),
            None => (IpNet::from_str(m).unwrap(), true),
        })
        .filter(|(net, _)| net.contains(&a))
        .max_by_key(|(net, _)| net.prefix_len())
        .is_some_and(|(_, positive)| positive)
}

/// Addresses at and around every boundary of `net`.
fn probes(net: IpNet) -> Vec<IpAddr> {
    let step = |a: IpAddr, up: bool| -> Option<IpAddr> {
        match a {
            IpAddr::V4(v) => {
                let n = u32::from(v);
                Some(IpAddr::V4(
                    if up {
                        n.checked_add(1)?
                    } else {
                        n.checked_sub(1)?
                    }
                    .into(),
                ))
            }
            IpAddr::V6(v) => {
                let n = u128::from(v);
                Some(IpAddr::V6(
                    if up {
                        n.checked_add(1)?
                    } else {
                        n.checked_sub(1)?
                    }
                    .into(),
                ))
            }
        }
    };
    let (lo, hi) = (net.network(), net.broadcast());
    [
        Some(lo),
        Some(hi),
        step(lo, false),
        step(lo, true),
        step(hi, false),
        step(hi, true),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[test]
fn net_sets_keep_hash_net_membership() {
    let g = cluster::generate(&ClusterSpec {
        dual_stack: true,
        ..ClusterSpec::new(2000, 40, 400)
    });
    let r = calico::render_state(&g.cluster(), &CalicoConfig::new(None, true));
    let mut with_except = 0;
    for (name, set) in r.sets.iter().filter(|(_, s)| s.kind == SetKind::Net) {
        let nets: Vec<IpNet> = nft_native::elements(set)
            .iter()
            .map(|e| IpNet::from_str(e).unwrap())
            .collect();
        for (i, a) in nets.iter().enumerate() {
            assert!(
                nets[i + 1..]
                    .iter()
                    .all(|b| !a.contains(b) && !b.contains(a)),
                "{name}: {a} overlaps"
            );
        }
        with_except += set.members.iter().any(|m| m.ends_with("nomatch")) as usize;
        let mut points: Vec<IpAddr> = Vec::new();
        for m in &set.members {
            points.extend(probes(
                IpNet::from_str(m.trim_end_matches(" nomatch")).unwrap(),
            ));
        }
        for n in &nets {
            points.extend(probes(*n));
        }
        for a in points {
            assert_eq!(
                nets.iter().any(|n| n.contains(&a)),
                hash_net_matches(&set.members, a),
                "{name} {:?} at {a}",
                set.members
            );
        }
    }
    assert!(with_except > 0, "some ipBlock has excepts");
    // Nested positives and a /0 split in halves, by hand.
    let set = calico::IpSet {
        kind: SetKind::Net,
        family: Family::Ipv4,
        members: [
            "0.0.0.0/1",
            "128.0.0.0/1",
            "10.0.0.0/8 nomatch",
            "10.1.0.0/16",
            "10.1.2.0/24 nomatch",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    };
    let nets: Vec<IpNet> = nft_native::elements(&set)
        .iter()
        .map(|e| IpNet::from_str(e).unwrap())
        .collect();
    for a in [
        "10.1.1.1",
        "10.2.0.0",
        "10.1.2.9",
        "9.255.255.255",
        "200.0.0.1",
    ] {
        let a = IpAddr::from_str(a).unwrap();
        assert_eq!(
            nets.iter().any(|n| n.contains(&a)),
            hash_net_matches(&set.members, a),
            "{a}"
        );
    }
}

// ---------------------------------------------------------------- kernel

/// Feeds `script` to `nft -f` inside `sb`: one transaction, as the baseline applies it.
fn apply(sb: &Sandbox, script: &str) {
    sb.sh_stdin("nft", &["-f", "-"], script);
}

fn load(tag: &str, state: &Rendered) -> Sandbox {
    let sb = Sandbox::new(tag);
    apply(&sb, &nft_native::render(state));
    sb
}

/// One family's table as the kernel holds it: chains (hook, rules) and sets
/// (type and flags, elements), rule and element order and handles aside where
/// they depend on history.
#[derive(Debug, Default, PartialEq, Eq)]
struct KernelTable {
    /// Chain -> (hook or "", rules as JSON of expressions and comment).
    chains: BTreeMap<String, (String, Vec<String>)>,
    /// Set -> (type and flags as JSON, elements as JSON).
    sets: BTreeMap<String, (String, BTreeSet<String>)>,
}

/// `nft -j list ruleset`, by family name.
fn kernel(sb: &Sandbox) -> BTreeMap<String, KernelTable> {
    let json: Value =
        serde_json::from_str(&sb.sh("nft", &["-j", "list", "ruleset"])).expect("nft JSON");
    let mut out: BTreeMap<String, KernelTable> = BTreeMap::new();
    for item in json["nftables"].as_array().expect("nftables array") {
        let (kind, obj) = item.as_object().unwrap().iter().next().unwrap();
        if kind == "metainfo" {
            continue;
        }
        let family = obj["family"].as_str().unwrap().to_owned();
        let str_of = |k: &str| obj[k].as_str().unwrap().to_owned();
        match kind.as_str() {
            "table" => {
                assert_eq!(obj["name"], nft_native::TABLE, "only our table");
                out.entry(family).or_default();
            }
            "chain" => {
                let hook = obj
                    .get("hook")
                    .map(|h| format!("{} {} {} {}", h, obj["type"], obj["prio"], obj["policy"]));
                out.get_mut(&family)
                    .unwrap()
                    .chains
                    .insert(str_of("name"), (hook.unwrap_or_default(), Vec::new()));
            }
            "rule" => {
                let body = serde_json::json!({"expr": obj["expr"], "comment": obj.get("comment")});
                out.get_mut(&family)
                    .unwrap()
                    .chains
                    .get_mut(&str_of("chain"))
                    .expect("chain listed before its rules")
                    .1
                    .push(body.to_string());
            }
            "set" => {
                let spec = serde_json::json!({"type": obj["type"], "flags": obj.get("flags")});
                let elems = obj
                    .get("elem")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(Value::to_string).collect())
                    .unwrap_or_default();
                out.get_mut(&family)
                    .unwrap()
                    .sets
                    .insert(str_of("name"), (spec.to_string(), elems));
            }
            other => panic!("unexpected {other} in the ruleset"),
        }
    }
    out
}

/// The kernel holds what `state` renders: the same chains with as many rules,
/// the same sets with as many elements.
fn assert_counts(sb: &Sandbox, state: &Rendered, what: &str) {
    let k = kernel(sb);
    let families = [("ip", Some(&state.v4)), ("ip6", state.v6.as_ref())];
    assert_eq!(
        k.keys().map(String::as_str).collect::<Vec<_>>(),
        families
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(f, _)| *f)
            .collect::<Vec<_>>(),
        "{what}: tables"
    );
    for (fam, table) in families {
        let Some(table) = table else { continue };
        let kt = &k[fam];
        let got: BTreeMap<&str, usize> = kt
            .chains
            .iter()
            .map(|(n, (_, r))| (n.as_str(), r.len()))
            .collect();
        let want: BTreeMap<&str, usize> = table
            .chains
            .iter()
            .map(|(n, r)| (n.as_str(), r.len()))
            .collect();
        assert_eq!(got, want, "{what}: {fam} chains and rule counts");
        for base in ["INPUT", "FORWARD", "OUTPUT"] {
            assert!(
                kt.chains[base].0.contains("\"filter\" 0 \"accept\""),
                "{base}"
            );
        }
        let family = if fam == "ip" {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        let want: BTreeMap<String, usize> = state
            .sets
            .iter()
            .filter(|(_, s)| s.family == family)
            .map(|(n, s)| (nft_native::set_name(n), nft_native::elements(s).len()))
            .collect();
        let got: BTreeMap<String, usize> = kt
            .sets
            .iter()
            .map(|(n, (_, e))| (n.clone(), e.len()))
            .collect();
        assert_eq!(got, want, "{what}: {fam} sets and element counts");
    }
}

fn generated() -> (Generated, Cluster) {
    let g = cluster::generate(&small_spec());
    let c = g.cluster();
    (g, c)
}

/// `before` with `change` applied.
fn changed(before: &Cluster, change: impl FnOnce(&mut Cluster)) -> Cluster {
    let mut after = before.clone();
    change(&mut after);
    after
}

/// The first of `before` changed by `change` with each of `items` whose render
/// `wanted` accepts next to `before`'s (both with [`cfg`]): not every generated change
/// reaches what a test is about (a relabel of a pod no policy selects changes no rule).
fn first_changed<T>(
    before: &Cluster,
    items: impl IntoIterator<Item = T>,
    change: impl Fn(&mut Cluster, T),
    wanted: impl Fn(&Rendered, &Rendered) -> bool,
) -> Option<Cluster> {
    let cfg = cfg();
    let b = calico::render_state(before, &cfg);
    items
        .into_iter()
        .map(|item| changed(before, |c| change(c, item)))
        .find(|after| wanted(&b, &calico::render_state(after, &cfg)))
}

/// `sb` holds what `state` renders, and exactly what a fresh load of it holds (loaded
/// into a namespace of its own, `<tag>-ref`).
fn assert_as_fresh(sb: &Sandbox, state: &Rendered, tag: &str, what: &str) {
    let reference = load(&format!("{tag}-ref"), state);
    assert_counts(sb, state, what);
    assert_eq!(
        kernel(sb),
        kernel(&reference),
        "{what}: differs from a fresh render"
    );
}

/// Loads `before`, applies the diff to `after` as one `nft -f`, and compares the
/// namespace with one `after` was loaded into directly.
fn check(tag: &str, before: &Cluster, after: &Cluster, cfg: &CalicoConfig) {
    let (b, a) = (
        calico::render_state(before, cfg),
        calico::render_state(after, cfg),
    );
    let script = nft_native::diff(&b, &a);
    assert!(!script.is_empty(), "{tag}: something changes");
    eprintln!("{tag}: {} nft lines", script.lines().count());
    let sb = load(tag, &b);
    apply(&sb, &script);
    assert_as_fresh(&sb, &a, tag, tag);
}

#[test]
fn full_render_loads_and_reads_back() {
    let (_, c) = generated();
    let r = calico::render_state(&c, &cfg());
    let script = nft_native::render(&r);
    eprintln!(
        "render at 200 pods / 30 policies: {:?}, {} nft lines, {} bytes",
        r.stats(),
        script.lines().count(),
        script.len()
    );
    let sb = load("nftn-full", &r);
    assert_counts(&sb, &r, "full render");
    let k = kernel(&sb);
    for fam in ["ip", "ip6"] {
        for prefix in ["cali-tw-cali", "cali-fw-cali", "cali-pi-_", "cali-pri-kns."] {
            assert!(
                k[fam].chains.keys().any(|c| c.starts_with(prefix)),
                "{prefix}"
            );
        }
        assert!(k[fam]
            .sets
            .values()
            .any(|(spec, _)| spec.contains("interval")));
        assert!(k[fam]
            .sets
            .values()
            .any(|(spec, _)| spec.contains("inet_service")));
    }
    // The kernel answers set lookups as ipset would: the first address of every
    // except is out, the first of every CIDR in unless excepted.
    let mut probed = 0;
    for (name, set) in r.sets.iter().filter(|(_, s)| s.kind == SetKind::Net) {
        let fam = nft_native::family_name(set.family);
        let nft_name = nft_native::set_name(name);
        for m in &set.members {
            let addr = IpNet::from_str(m.trim_end_matches(" nomatch"))
                .unwrap()
                .network();
            let want = hash_net_matches(&set.members, addr);
            let got = sb
                .run(
                    "nft",
                    &[
                        "get",
                        "element",
                        fam,
                        nft_native::TABLE,
                        &nft_name,
                        &format!("{{ {addr} }}"),
                    ],
                )
                .status
                .success();
            assert_eq!(got, want, "{name}: {addr}");
            probed += 1;
        }
    }
    assert!(probed > 0);
}

#[test]
fn delta_pod_added() {
    let (g, before) = generated();
    let after = changed(&before, |c| {
        c.upsert_pod(cluster::to_pod(&g.extra_pod(0)));
    });
    check("nftn-pod-add", &before, &after, &cfg());
}

#[test]
fn delta_pod_deleted() {
    let (g, before) = generated();
    let after = changed(&before, |c| {
        c.delete_pod(&cluster::to_pod(&g.pods[7]).key());
    });
    check("nftn-pod-del", &before, &after, &cfg());
}

#[test]
fn delta_pod_relabelled() {
    let (g, before) = generated();
    // A relabel that changes rules as well as set members.
    let after = first_changed(
        &before,
        &g.pods,
        |c, p| {
            c.upsert_pod(cluster::to_pod(&g.relabel_pod(p)));
        },
        |b, a| a.v4 != b.v4 && a.sets != b.sets,
    )
    .expect("some relabel changes rules and sets");
    check("nftn-pod-relabel", &before, &after, &cfg());
}

#[test]
fn delta_namespace_relabelled() {
    let (g, before) = generated();
    let cfg = cfg();
    let b = calico::render_state(&before, &cfg);
    let after = first_changed(
        &before,
        &g.namespaces,
        |c, n| {
            c.upsert_namespace(cluster::to_namespace(&g.relabel_namespace(n)));
        },
        |b, a| a.sets != b.sets,
    )
    .expect("some namespace relabel changes set members");
    let script = nft_native::diff(&b, &calico::render_state(&after, &cfg));
    assert!(
        script.lines().all(|l| l.contains(" element ")),
        "only elements change:\n{script}"
    );
    check("nftn-ns-relabel", &before, &after, &cfg);
}

#[test]
fn delta_policy_added() {
    let (g, before) = generated();
    let after = changed(&before, |c| {
        c.upsert_policy(cluster::to_policy(&g.extra_policy(1)));
    });
    check("nftn-pol-add", &before, &after, &cfg());
}

#[test]
fn delta_policy_changed() {
    let (g, before) = generated();
    let after = first_changed(
        &before,
        &g.policies,
        |c, np| {
            c.upsert_policy(cluster::to_policy(&g.changed_policy(np)));
        },
        |b, a| a.v4 != b.v4,
    )
    .expect("some policy is active");
    check("nftn-pol-change", &before, &after, &cfg());
}

#[test]
fn delta_policy_deleted() {
    let (g, before) = generated();
    let cfg = cfg();
    let b = calico::render_state(&before, &cfg);
    // A policy whose deletion removes chains and sets, so the deletes run too.
    let after = first_changed(
        &before,
        &g.policies,
        |c, np| {
            c.delete_policy(&cluster::to_policy(np).key());
        },
        |b, a| a.sets.len() < b.sets.len() && a.v4.chains.len() < b.v4.chains.len(),
    )
    .expect("some policy owns chains and sets alone");
    let script = nft_native::diff(&b, &calico::render_state(&after, &cfg));
    assert!(script.contains("\ndelete chain ip calico cali-pi-"));
    assert!(script.contains("\ndelete set ip calico cali40"));
    check("nftn-pol-del", &before, &after, &cfg);
}

#[test]
fn delta_ipv6_table_added_and_removed() {
    let (_, c) = generated();
    let v4 = CalicoConfig::new(Some("node-1".into()), false);
    let (single, dual) = (
        calico::render_state(&c, &v4),
        calico::render_state(&c, &cfg()),
    );
    let sb = load("nftn-v6", &single);
    apply(&sb, &nft_native::diff(&single, &dual));
    assert_counts(&sb, &dual, "v6 added");
    let script = nft_native::diff(&dual, &single);
    assert_eq!(script, "delete table ip6 calico\n");
    apply(&sb, &script);
    assert_counts(&sb, &single, "v6 removed");
}

#[test]
fn deltas_chain_in_one_namespace() {
    // Several deltas in a row, each against the state the previous one left.
    let (g, mut state) = generated();
    let cfg = cfg();
    let sb = load("nftn-chain", &calico::render_state(&state, &cfg));
    let mut steps = g.chained_changes();
    steps.push(Box::new(|c| {
        c.upsert_policy(cluster::to_policy(&g.changed_policy(&g.policies[1])));
    }));
    for step in steps {
        let after = changed(&state, step);
        let script = nft_native::diff(
            &calico::render_state(&state, &cfg),
            &calico::render_state(&after, &cfg),
        );
        if !script.is_empty() {
            apply(&sb, &script);
        }
        state = after;
    }
    let after = calico::render_state(&state, &cfg);
    assert_as_fresh(&sb, &after, "nftn-chain", "chained deltas");
}
