//! The engine against the real kernel, through its public API: bursts coalesce into few
//! commits, a restart adopts and never opens a window, drift is repaired by one reconcile,
//! a concurrent iptables-nft writer loses nothing and neither does netfence, invalid
//! deltas are rejected alone, flush removes exactly what netfence owns, and a finished
//! pod's address grants nothing to the pod that gets it next.
//!
//! Each test makes its own network namespace and works only there. Needs root.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::k8s::{namespace, pod, policy, sel};
use common::Sandbox;
use policy::k8s_openapi::api::core::v1 as core;
use policy::k8s_openapi::api::networking::v1 as net;
use policy::{Cluster, Compiler, CompilerConfig};
use ruleset::sim::{verdict, Packet, Verdict};
use ruleset::{Hook, Kernel, Ruleset, TableId};
use sync::{Engine, EngineConfig, Error};

fn tables() -> [TableId; 2] {
    [
        TableId::filter(ruleset::Family::Ipv4),
        TableId::filter(ruleset::Family::Ipv6),
    ]
}

fn config(sb: &Sandbox) -> EngineConfig {
    EngineConfig {
        netns: sb.netns(),
        reconcile_interval: None,
        ..EngineConfig::default()
    }
}

/// The objects an agent has listed so far, keyed as the API server keys them.
#[derive(Default, Clone)]
struct World {
    namespaces: BTreeMap<String, core::Namespace>,
    pods: BTreeMap<(String, String), core::Pod>,
    policies: BTreeMap<(String, String), net::NetworkPolicy>,
}

impl World {
    fn ns(&mut self, n: core::Namespace) -> core::Namespace {
        self.namespaces
            .insert(n.metadata.name.clone().unwrap(), n.clone());
        n
    }

    fn pod(&mut self, p: core::Pod) -> core::Pod {
        let key = (
            p.metadata.namespace.clone().unwrap(),
            p.metadata.name.clone().unwrap(),
        );
        self.pods.insert(key, p.clone());
        p
    }

    fn policy(&mut self, p: net::NetworkPolicy) -> net::NetworkPolicy {
        let key = (
            p.metadata.namespace.clone().unwrap(),
            p.metadata.name.clone().unwrap(),
        );
        self.policies.insert(key, p.clone());
        p
    }

    /// Submits everything (a full list).
    fn feed(&self, e: &Engine) -> Vec<sync::Completion> {
        let mut out = Vec::new();
        out.extend(self.namespaces.values().map(|n| e.upsert_namespace(n)));
        out.extend(self.pods.values().map(|p| e.upsert_pod(p)));
        out.extend(self.policies.values().map(|p| e.upsert_policy(p)));
        out
    }

    /// What a compiler makes of it from scratch.
    fn compiled(&self) -> Ruleset {
        let ns: Vec<_> = self.namespaces.values().cloned().collect();
        let pods: Vec<_> = self.pods.values().cloned().collect();
        let pols: Vec<_> = self.policies.values().cloned().collect();
        let (cluster, errors) = Cluster::from_k8s(&ns, &pods, &pols);
        assert!(errors.is_empty(), "{errors:?}");
        let mut c = Compiler::new(CompilerConfig::default()).unwrap();
        c.compile(&cluster).unwrap().clone()
    }
}

fn observe(sb: &Sandbox) -> Ruleset {
    Kernel::open(&sb.netns())
        .unwrap()
        .observe("nf-", &tables())
        .unwrap()
}

fn assert_converged(sb: &Sandbox, w: &World) {
    assert_eq!(observe(sb).owned_view(), w.compiled().owned_view());
}

fn wait_all(cs: Vec<sync::Completion>) {
    for c in cs {
        c.wait().unwrap();
    }
}

/// Waits (up to 2 s) until the engine has destroyed the sets the kernel still held as
/// referenced when their commit ran: a later commit retries them.
fn wait_deferred_destroys(e: &Engine) {
    for _ in 0..100 {
        if e.status().deferred_destroys == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// An engine on `sb` that has taken `w` as its full list and committed it.
fn start_converged(sb: &Sandbox, w: &World) -> Engine {
    let e = Engine::start(config(sb)).unwrap();
    let cs = w.feed(&e);
    e.ready().wait().unwrap();
    wait_all(cs);
    e
}

/// The owned sets of `rs` that hold address `ip`.
fn holding(rs: &Ruleset, ip: &str) -> Vec<String> {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    rs.sets()
        .iter()
        .filter(|(_, s)| s.members().any(|m| m == ruleset::Member::Ip(ip)))
        .map(|(n, _)| n.clone())
        .collect()
}

fn ip4(i: u32) -> String {
    format!("10.244.{}.{}", i / 250, i % 250 + 1)
}

fn ip6(i: u32) -> String {
    format!("fd00::{:x}", i + 1)
}

/// Namespaces a and b, pods db (isolated: only app=api on 5432) and api in a, a deny-all
/// in b.
fn base_world() -> World {
    let mut w = World::default();
    w.ns(namespace("a", &[("team", "x")]));
    w.ns(namespace("b", &[]));
    w.pod(pod("a", "db", &[("app", "db")], &[&ip4(0), &ip6(0)]));
    w.pod(pod("a", "api", &[("app", "api")], &[&ip4(1), &ip6(1)]));
    w.policy(policy(
        "a",
        "db",
        sel(&[("app", "db")]),
        Some(sel(&[("app", "api")])),
        5432,
    ));
    w.policy(policy("b", "deny", sel(&[]), None, 0));
    w
}

#[test]
fn a_thousand_deltas_land_in_few_commits_and_equal_a_full_compile() {
    let sb = Sandbox::new("sync-burst");
    let e = Engine::start(config(&sb)).unwrap();
    let mut w = base_world();
    let cs = w.feed(&e);
    // Nothing before ready: the kernel still has no netfence object.
    thread::sleep(Duration::from_millis(20));
    assert!(observe(&sb).owned_view().sets().is_empty());
    e.ready().wait().unwrap();
    wait_all(cs);
    assert_converged(&sb, &w);
    assert!(e.status().ready);

    let before = e.metrics();
    let mut cs = Vec::new();
    let mut syncs = 0;
    for i in 0..1000u32 {
        let c = match i % 10 {
            // Adds, relabels and deletes of pods; namespace relabels; policy changes.
            0..=5 => {
                let app = ["web", "api", "db"][(i % 3) as usize];
                let ns = if i % 2 == 0 { "a" } else { "b" };
                e.upsert_pod(&w.pod(pod(
                    ns,
                    &format!("p{}", i % 400),
                    &[("app", app)],
                    &[&ip4(10 + i % 400), &ip6(10 + i % 400)],
                )))
            }
            6 | 7 => {
                let key = w.pods.keys().nth((i as usize * 7) % w.pods.len()).cloned();
                match key {
                    Some((ns, name)) if name != "db" && name != "api" => {
                        w.pods.remove(&(ns.clone(), name.clone()));
                        e.delete_pod(&ns, &name)
                    }
                    _ => {
                        syncs += 1;
                        e.sync()
                    }
                }
            }
            8 => e.upsert_namespace(&w.ns(namespace(
                if i % 20 == 8 { "a" } else { "b" },
                &[
                    ("team", ["x", "y"][(i % 2) as usize]),
                    ("v", &i.to_string()),
                ],
            ))),
            _ => e.upsert_policy(&w.policy(policy(
                "a",
                &format!("np{}", i % 7),
                sel(&[("app", "web")]),
                Some(sel(&[("app", ["api", "db"][(i % 2) as usize])])),
                8000 + (i % 5) as i32,
            ))),
        };
        cs.push(c);
    }
    wait_all(cs);
    let after = e.metrics();
    let commits = after.commits - before.commits;
    eprintln!(
        "1000 deltas: {commits} commits, p50 latency {:?} s, p99 {:?} s",
        after.delta_latency.quantile(0.5),
        after.delta_latency.quantile(0.99)
    );
    assert!((1..=100).contains(&commits), "{commits} commits");
    assert_eq!(after.deltas - before.deltas, 1000 - syncs);
    assert_converged(&sb, &w);
    // a's seven `app=web` policies share one lookup through a selector chain, and
    // iptables-nft reads it back like every other chain.
    let save = sb.sh("iptables-nft-save", &[]);
    assert!(!save.contains("incompatible"), "{save}");
    let selector_line = save
        .lines()
        .find(|l| l.starts_with("-A nf-in-a ") && l.contains("-j nf-_"))
        .unwrap_or_else(|| panic!("no selector chain line in nf-in-a:\n{save}"));
    let chain = selector_line.rsplit(' ').next().expect("a target");
    let jumps = save
        .lines()
        .filter(|l| l.starts_with(&format!("-A {chain} ")) && l.contains("-j nf-i-a.np"))
        .count();
    assert_eq!(jumps, 7, "{save}");
    let text = e.metrics_text();
    assert!(text.contains("netfence_commits_total"), "{text}");
    assert!(
        text.contains("netfence_delta_latency_seconds_bucket"),
        "{text}"
    );
}

/// A burst that creates and fills hundreds of sets: its commit is made in two halves (the
/// sets' first phase goes to the kernel while the dispatch chains are settled and the
/// batch planned on a second thread), and the kernel ends up as a full compile says, even
/// when another writer's commit makes the first attempt's batch fail after its first
/// phase; the same again when half of it goes.
#[test]
fn a_burst_of_hundreds_of_new_sets_converges_through_the_two_thread_commit() {
    let sb = Sandbox::new("sync-staged");
    let mut w = base_world();
    let e = start_converged(&sb, &w);
    // Another writer commits first: the burst's batch, made while its first ipset phase
    // was in the kernel, is refused as planned on an old generation. The engine reads
    // the kernel again and retries; nothing is lost on either side.
    sb.sh(
        "iptables-nft",
        &["-A", "FORWARD", "-s", "198.51.100.7", "-j", "DROP"],
    );
    let conflicts = e.metrics().conflicts;
    let mut cs = Vec::new();
    for i in 0..120u32 {
        // A set each for the selection and the peers, in both families: 480 creates and
        // fills, far over what the engine commits on one thread.
        let (s, r) = (format!("s{i}"), format!("r{i}"));
        cs.push(e.upsert_pod(&w.pod(pod(
            "a",
            &s,
            &[("app", &s)],
            &[&ip4(100 + i), &ip6(100 + i)],
        ))));
        cs.push(e.upsert_pod(&w.pod(pod(
            "b",
            &r,
            &[("role", &r)],
            &[&ip4(300 + i), &ip6(300 + i)],
        ))));
        cs.push(e.upsert_policy(&w.policy(policy(
            "a",
            &format!("np-{i}"),
            sel(&[("app", &s)]),
            Some(sel(&[("role", &r)])),
            1000 + i as i32,
        ))));
    }
    wait_all(cs);
    assert!(e.status().last_error.is_none(), "{:?}", e.status());
    assert_eq!(e.metrics().conflicts, conflicts + 1);
    assert_converged(&sb, &w);
    assert!(
        sb.sh("iptables-nft-save", &[])
            .contains("-A FORWARD -s 198.51.100.7/32 -j DROP"),
        "the other writer's rule stays"
    );

    let mut cs = Vec::new();
    for i in (0..120u32).step_by(2) {
        w.policies.remove(&("a".into(), format!("np-{i}")));
        cs.push(e.delete_policy("a", &format!("np-{i}")));
        w.pods.remove(&("b".into(), format!("r{i}")));
        cs.push(e.delete_pod("b", &format!("r{i}")));
    }
    wait_all(cs);
    assert!(e.status().last_error.is_none(), "{:?}", e.status());
    wait_deferred_destroys(&e);
    assert_converged(&sb, &w);
}

/// Twelve namespaces gain their first policy in one burst: past the flat limit, the
/// dispatch chains hash the fourteen namespaces into buckets, and the bucket sets they
/// look up go to the kernel in the burst's own set phase (the two-thread commit plans the
/// sets before it settles the chains), so that the batch never names a set that is not
/// there yet: no error, no retry, one convergence. Then back under the limit.
#[test]
fn namespaces_gaining_their_first_policies_bring_their_bucket_sets_with_them() {
    let sb = Sandbox::new("sync-buckets");
    let mut w = base_world();
    let e = start_converged(&sb, &w);
    let before = e.metrics();
    let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
    let mut cs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        cs.push(e.upsert_namespace(&w.ns(namespace(n, &[]))));
        for j in 0..6u32 {
            let at = 600 + 6 * i as u32 + j;
            cs.push(e.upsert_pod(&w.pod(pod(
                n,
                &format!("p{j}"),
                &[("app", "web")],
                &[&ip4(at), &ip6(at)],
            ))));
        }
        cs.push(e.upsert_policy(&w.policy(policy(n, "deny", sel(&[]), None, 0))));
    }
    wait_all(cs);
    let after = e.metrics();
    assert!(e.status().last_error.is_none(), "{:?}", e.status());
    assert_eq!(
        (after.errors, after.retries, after.conflicts),
        (before.errors, before.retries, before.conflicts)
    );
    assert_converged(&sb, &w);
    let save = sb.sh("iptables-nft-save", &[]);
    assert!(save.contains("-g nf-ingress-"), "{save}");

    // Eleven of them lose it: three namespaces, one line each again.
    let mut cs = Vec::new();
    for n in &names[1..] {
        w.policies.remove(&(n.clone(), "deny".into()));
        cs.push(e.delete_policy(n, "deny"));
    }
    wait_all(cs);
    wait_deferred_destroys(&e);
    assert!(e.status().last_error.is_none(), "{:?}", e.status());
    assert_converged(&sb, &w);
    assert!(!sb.sh("iptables-nft-save", &[]).contains(":nf-ingress-"));
}

#[test]
fn a_restart_adopts_without_flushing_and_never_opens_the_isolated_pod() {
    let sb = Sandbox::new("sync-restart");
    let mut w = base_world();
    let e1 = start_converged(&sb, &w);

    // Sample the kernel all through the restart: api may reach db on 5432, nobody else
    // may reach db at all.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, netns) = (stop.clone(), sb.netns());
        thread::spawn(move || {
            let mut k = Kernel::open(&netns).unwrap();
            let mut samples = 0;
            while !stop.load(Ordering::Relaxed) {
                let rs = k.observe("nf-", &tables()).unwrap();
                let v = |src: &str, port| {
                    let pkt = Packet::tcp(src.parse().unwrap(), ip4(0).parse().unwrap(), port);
                    verdict(&rs, Hook::Forward, &pkt)
                };
                assert_eq!(v(&ip4(1), 5432), Verdict::Accept, "sample {samples}");
                assert_eq!(v("192.0.2.1", 5432), Verdict::Drop, "sample {samples}");
                assert_eq!(v(&ip4(1), 22), Verdict::Drop, "sample {samples}");
                samples += 1;
            }
            samples
        })
    };

    // Mid-stream: deltas in flight when the engine goes.
    for i in 0..200u32 {
        let _ = e1.upsert_pod(&w.pod(pod(
            "b",
            &format!("q{i}"),
            &[("app", "web")],
            &[&ip4(500 + i), &ip6(500 + i)],
        )));
    }
    drop(e1);
    let k = &mut Kernel::open(&sb.netns()).unwrap();
    let g0 = k.read_generation().unwrap();
    let sets0 = observe(&sb).owned_view();

    let e2 = Engine::start(config(&sb)).unwrap();
    wait_all_but_ready(&w, &e2);
    // Before ready: not one write, though the model may differ from the kernel.
    assert_eq!(k.read_generation().unwrap(), g0);
    assert_eq!(observe(&sb).owned_view(), sets0);
    e2.ready().wait().unwrap();
    e2.sync().wait().unwrap();
    assert_converged(&sb, &w);

    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    assert!(samples > 3, "only {samples} samples");
    eprintln!("{samples} kernel samples during the restart, all isolated");
}

#[test]
fn a_finished_pods_address_grants_nothing_to_the_pod_that_gets_it_next() {
    let sb = Sandbox::new("sync-finished");
    let mut w = base_world();
    let e = start_converged(&sb, &w);
    let to_db = |rs: &Ruleset, src: &str| {
        let pkt = Packet::tcp(src.parse().unwrap(), ip4(0).parse().unwrap(), 5432);
        verdict(rs, Hook::Forward, &pkt)
    };
    assert_eq!(to_db(&observe(&sb), &ip4(1)), Verdict::Accept);
    assert!(!holding(&observe(&sb), &ip4(1)).is_empty());

    // api's Job-like end: the object stays, with its labels and its old addresses.
    let mut done = w.pods[&("a".to_owned(), "api".to_owned())].clone();
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    e.upsert_pod(&w.pod(done)).wait().unwrap();
    let rs = observe(&sb);
    assert_eq!(holding(&rs, &ip4(1)), Vec::<String>::new());
    assert_eq!(holding(&rs, &ip6(1)), Vec::<String>::new());
    assert_eq!(to_db(&rs, &ip4(1)), Verdict::Drop);

    // The address goes to a pod db does not admit.
    e.upsert_pod(&w.pod(pod("a", "web", &[("app", "web")], &[&ip4(1), &ip6(1)])))
        .wait()
        .unwrap();
    let rs = observe(&sb);
    assert_eq!(to_db(&rs, &ip4(1)), Verdict::Drop);
    assert_converged(&sb, &w);
}

#[test]
fn a_host_network_pod_lends_the_node_s_address_to_no_set() {
    let sb = Sandbox::new("sync-hostnet");
    let mut w = base_world();
    let e = start_converged(&sb, &w);
    let node = ["192.168.0.11", "fd00:ff::11"];
    // An agent on the host network, labelled as the pod db admits, and one in b, whose
    // policy isolates every pod: both report the node's addresses as theirs.
    for (ns, name, app) in [("a", "agent", "api"), ("b", "exporter", "x")] {
        let mut p = pod(ns, name, &[("app", app)], &node);
        p.spec.as_mut().unwrap().host_network = Some(true);
        e.upsert_pod(&w.pod(p)).wait().unwrap();
    }
    let rs = observe(&sb);
    for n in node {
        assert_eq!(holding(&rs, n), Vec::<String>::new(), "{n}");
    }
    // So the node's traffic is the node's: not admitted to db as the agent would be.
    let pkt = Packet::tcp(node[0].parse().unwrap(), ip4(0).parse().unwrap(), 5432);
    assert_eq!(verdict(&rs, Hook::Forward, &pkt), Verdict::Drop);
    assert_converged(&sb, &w);
}

#[test]
fn member_changes_a_failed_commit_landed_are_read_back_before_the_retry() {
    let sb = Sandbox::new("sync-partial");
    let mut w = base_world();
    let e = start_converged(&sb, &w);
    // A pod like api joins api's sets. One of them is swapped for a full one, so the
    // pod's member message fails there while the others of its run land.
    let joins = holding(&observe(&sb), &ip4(1));
    assert!(joins.len() >= 2, "{joins:?}");
    let full = &joins[0];
    for args in [
        &[
            "create",
            "kube-full",
            "hash:ip",
            "family",
            "inet",
            "maxelem",
            "1",
        ][..],
        &["add", "kube-full", "192.0.2.1"],
        &["swap", full, "kube-full"],
    ] {
        sb.sh("ipset", args);
    }
    let p = ip4(77);
    let added = e.upsert_pod(&w.pod(pod("a", "p", &[("app", "api")], &[&p])));
    // Its first commit fails (its retry may already have read the kernel back and
    // mended the set by the time this looks).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while e.metrics().errors == 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", e.status());
        thread::sleep(Duration::from_millis(1));
    }

    // The pod goes again. Read back, the kernel shows the full set under netfence's
    // name, and a copy with netfence's capacity is swapped in; nothing of the pod may
    // stay, in that set or in the ones the failed commit did reach.
    w.pods.remove(&("a".to_owned(), "p".to_owned()));
    let deleted = e.delete_pod("a", "p");
    for c in [added, deleted, e.sync()] {
        match c.wait_timeout(Duration::from_secs(10)) {
            Ok(r) => r.unwrap(),
            Err(_) => panic!("not converged in 10 s: {:?}", e.status()),
        }
    }
    assert_eq!(holding(&observe(&sb), &p), Vec::<String>::new());
    assert_converged(&sb, &w);
}

/// Feeds the world and checks that nothing completes before `ready`.
fn wait_all_but_ready(w: &World, e: &Engine) {
    let cs = w.feed(e);
    thread::sleep(Duration::from_millis(50));
    for c in &cs {
        assert!(c.try_result().is_none(), "a delta completed before ready");
    }
    assert_eq!(e.status().pending, cs.len());
}

#[test]
fn tampering_is_repaired_by_one_reconcile_each() {
    let sb = Sandbox::new("sync-tamper");
    let w = base_world();
    let e = start_converged(&sb, &w);
    assert_converged(&sb, &w);
    // Nothing changed: the cheap check says so and nothing is dumped.
    let r = e.reconcile().wait().unwrap();
    assert_eq!((r.dumped, r.repairs), (false, 0));

    let tamper: [(&str, &[&str]); 5] = [
        ("iptables-nft", &["-D", "nf-fw", "3"]),
        ("ipset", &["flush", "nf-iso-in4"]),
        ("ipset", &["add", "nf-iso-in4", "10.9.9.9"]),
        ("iptables-nft", &["-F", "nf-ingress"]),
        ("ip6tables-nft", &["-D", "FORWARD", "1"]),
    ];
    for (tool, args) in tamper {
        sb.sh(tool, args);
        assert_ne!(observe(&sb).owned_view(), w.compiled().owned_view());
        let r = e.reconcile().wait().unwrap();
        assert!(r.dumped && r.repairs > 0, "{tool} {args:?}: {r:?}");
        assert_converged(&sb, &w);
    }
    // The same members in a set whose members expire, swapped in: the size and the
    // nf_tables generation say nothing, the header's timeout does.
    let saved = sb.sh("ipset", &["save", "nf-iso-in4"]);
    let mut script = String::new();
    for l in saved.lines() {
        if l.starts_with("create ") {
            script.push_str("create t hash:ip family inet maxelem 1048576 timeout 600\n");
        } else if let Some(m) = l.strip_prefix("add nf-iso-in4 ") {
            script.push_str(&format!("add t {m}\n"));
        }
    }
    script.push_str("swap t nf-iso-in4\ndestroy t\n");
    sb.sh_stdin("ipset", &["restore"], &script);
    assert_ne!(observe(&sb).owned_view(), w.compiled().owned_view());
    let r = e.reconcile().wait().unwrap();
    assert!(r.dumped && r.repairs > 0, "timeout swapped in: {r:?}");
    assert_converged(&sb, &w);
    let header = sb.sh("ipset", &["list", "-t", "nf-iso-in4"]);
    assert!(!header.contains("timeout"), "{header}");

    // A foreign set and rule are left alone.
    sb.sh("ipset", &["create", "kube-x", "hash:ip"]);
    sb.sh(
        "iptables-nft",
        &["-A", "FORWARD", "-s", "198.51.100.1", "-j", "DROP"],
    );
    let r = e.reconcile().wait().unwrap();
    assert_eq!(r.repairs, 0, "{r:?}");
    assert!(sb
        .sh("iptables-nft-save", &[])
        .contains("-A FORWARD -s 198.51.100.1/32 -j DROP"));
    assert!(sb.sh("ipset", &["list", "-n"]).contains("kube-x"));
    let m = e.metrics();
    assert!(m.repairs >= 6 && m.reconciles == 8, "{m:?}");
}

#[test]
fn a_failure_no_retry_cures_is_reported_as_such_and_clears_on_success() {
    let sb = Sandbox::new("sync-hopeless");
    let w = base_world();
    let e = start_converged(&sb, &w);
    assert_eq!(e.status().last_error, None);

    // `ipset swap` puts a set of a type netfence does not manage under its referenced
    // set's name (the kernel swaps a `bitmap:ip` for a `hash:ip`: both hold addresses).
    // Neither a swap nor a destroy can take it back while rules use the name, so no
    // retry can cure it.
    sb.sh(
        "ipset",
        &["create", "kube-swap", "bitmap:ip", "range", "10.0.0.0/16"],
    );
    sb.sh("ipset", &["swap", "nf-iso-in4", "kube-swap"]);
    // The reconcile found the drift, and says that its repair did not land.
    let refused = e.reconcile().wait().expect_err("the repair failed");
    assert!(refused.to_string().contains("nf-iso-in4"), "{refused}");
    let first = e.status().last_error.expect("the commit failed");
    assert!(!first.retryable, "{first:?}");
    assert_eq!(first.errno, None, "{first:?}");
    assert!(first.message.contains("nf-iso-in4"), "{first:?}");
    // The engine goes on trying, with backoff, and counts the failures.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while e.status().last_error.is_some_and(|l| l.failures < 3) {
        assert!(std::time::Instant::now() < deadline, "{:?}", e.status());
        std::thread::sleep(Duration::from_millis(10));
    }

    // Undone by hand: the next commit succeeds and the error is gone.
    sb.sh("ipset", &["swap", "nf-iso-in4", "kube-swap"]);
    e.reconcile().wait().unwrap();
    e.sync().wait().unwrap();
    assert_eq!(e.status().last_error, None);
    assert_converged(&sb, &w);
}

#[test]
fn a_policy_delete_completes_without_waiting_for_its_sets_to_be_released() {
    let sb = Sandbox::new("sync-deferred");
    let mut w = base_world();
    let e = start_converged(&sb, &w);
    let sets_before = observe(&sb).sets().len();

    w.policies.remove(&("a".into(), "db".into())).unwrap();
    let before = observe(&sb).owned_chains();
    e.delete_policy("a", "db").wait().unwrap();
    // Enforced when the completion fires: the chains are already the new ones.
    let now = observe(&sb).owned_chains();
    assert_ne!(now, before);
    assert_eq!(now, w.compiled().owned_chains());
    // Its sets go on the engine's own retries, once the kernel releases them.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while e.status().deferred_destroys > 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", e.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(observe(&sb).sets().len() < sets_before);
    assert_converged(&sb, &w);
}

/// A set destroy the kernel defers (a rule still holds the set) is tried again later, but
/// it must not hold back the deltas that come meanwhile: each used to wait for that retry
/// (50 ms) before its commit ran.
#[test]
fn a_set_the_kernel_keeps_does_not_hold_back_later_deltas() {
    let sb = Sandbox::new("sync-held");
    let mut w = base_world();
    let e = start_converged(&sb, &w);

    // A rule of someone else's holds one of the sets that deleting a/db frees, so the
    // kernel refuses its destroy for as long as that rule stays.
    let with = w.compiled();
    w.policies.remove(&("a".into(), "db".into())).unwrap();
    let without = w.compiled();
    let held = with
        .sets()
        .iter()
        .find(|(n, s)| s.family == ruleset::Family::Ipv4 && without.set(n).is_none())
        .map(|(n, _)| n.clone())
        .expect("a/db has an IPv4 set of its own");
    let foreign = [
        "INPUT",
        "-m",
        "set",
        "--match-set",
        &held,
        "src",
        "-j",
        "ACCEPT",
    ];
    sb.sh("iptables-nft", &[&["-A"][..], &foreign].concat());
    e.delete_policy("a", "db").wait().unwrap();
    assert!(e.status().deferred_destroys > 0, "{:?}", e.status());

    let t0 = std::time::Instant::now();
    for i in 0..10u32 {
        e.upsert_pod(&w.pod(pod("b", &format!("h{i}"), &[], &[&ip4(200 + i)])))
            .wait()
            .unwrap();
    }
    let took = t0.elapsed();
    // Held back, ten deltas one after another took at least 10 x 50 ms.
    assert!(took < Duration::from_millis(250), "10 deltas took {took:?}");
    assert!(e.status().deferred_destroys > 0, "{:?}", e.status());

    // Released, the set goes with the engine's own retry.
    sb.sh("iptables-nft", &[&["-D"][..], &foreign].concat());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while e.status().deferred_destroys > 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", e.status());
        thread::sleep(Duration::from_millis(5));
    }
    assert_converged(&sb, &w);
}

#[test]
fn a_concurrent_iptables_writer_loses_nothing_and_neither_does_netfence() {
    let sb = Sandbox::new("sync-writer");
    let mut w = base_world();
    let e = start_converged(&sb, &w);
    sb.sh(
        "iptables-nft",
        &["-A", "FORWARD", "-s", "198.51.100.1", "-j", "DROP"],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, name) = (stop.clone(), sb.name.clone());
        thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let src = format!("203.0.113.{}", rounds % 250 + 1);
                for op in ["-A", "-D"] {
                    let out = std::process::Command::new("ip")
                        .args(["netns", "exec", &name, "iptables-nft", op, "FORWARD"])
                        .args(["-s", &src, "-j", "ACCEPT"])
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "iptables-nft {op}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                rounds += 1;
            }
            rounds
        })
    };
    // Pod deltas touch sets only; every fifth delta is a policy change, which needs an
    // nf_tables batch and so meets the writer's commits. Waiting on every fifth spreads
    // the 500 over many commits while the writer runs.
    for i in 0..500u32 {
        let c = if i % 5 == 4 {
            e.upsert_policy(&w.policy(policy(
                "a",
                &format!("wp{}", i % 3),
                sel(&[("app", "web")]),
                Some(sel(&[("app", "db")])),
                9000 + (i % 11) as i32,
            )))
        } else {
            e.upsert_pod(&w.pod(pod(
                "a",
                &format!("w{}", i % 150),
                &[("app", ["web", "db"][(i % 2) as usize])],
                &[&ip4(700 + i % 150), &ip6(700 + i % 150)],
            )))
        };
        if i % 5 == 4 {
            c.wait().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    e.sync().wait().unwrap();
    assert_converged(&sb, &w);
    let save = sb.sh("iptables-nft-save", &[]);
    assert!(
        save.contains("-A FORWARD -s 198.51.100.1/32 -j DROP"),
        "{save}"
    );
    assert!(!save.contains("203.0.113."), "{save}");
    let m = e.metrics();
    eprintln!(
        "{rounds} writer rounds; {} commits, {} conflicts, {} retries",
        m.commits, m.conflicts, m.retries
    );
    assert!(rounds >= 5, "the writer hardly ran: {rounds} rounds");
}

#[test]
fn invalid_deltas_are_rejected_alone_with_messages() {
    let sb = Sandbox::new("sync-invalid");
    let mut w = base_world();
    let e = start_converged(&sb, &w);

    let mut bad_cidr = policy("a", "bad-cidr", sel(&[]), Some(sel(&[])), 80);
    bad_cidr.spec.as_mut().unwrap().ingress.as_mut().unwrap()[0].from =
        Some(vec![net::NetworkPolicyPeer {
            ip_block: Some(net::IPBlock {
                cidr: "10.0.0.0/33".into(),
                except: None,
            }),
            ..Default::default()
        }]);
    let bad_port = policy("a", "bad-port", sel(&[]), Some(sel(&[])), 70000);
    let bad_ip = pod("a", "bad-ip", &[], &["10.0.0.300"]);
    let bad_label = namespace("c", &[("bad key!", "v")]);
    let bad_name = policy("a", "Bad Name", sel(&[]), Some(sel(&[])), 80);
    let bad_ns_name = namespace(&"n".repeat(64), &[]);

    let good1 = e.upsert_pod(&w.pod(pod("a", "ok1", &[("app", "web")], &[&ip4(40)])));
    let r1 = e.upsert_policy(&bad_cidr);
    let good2 = e.upsert_policy(&w.policy(policy(
        "a",
        "ok2",
        sel(&[("app", "web")]),
        Some(sel(&[])),
        80,
    )));
    let r2 = e.upsert_policy(&bad_port);
    let r3 = e.upsert_pod(&bad_ip);
    let r4 = e.upsert_namespace(&bad_label);
    let r5 = e.upsert_policy(&bad_name);
    let r6 = e.upsert_namespace(&bad_ns_name);
    let good3 = e.upsert_namespace(&w.ns(namespace("c", &[("ok", "yes")])));
    // Deletes of keys no object can have: a caller's bug, said as such.
    let r7 = e.delete_pod("a", "Web_0");
    let r8 = e.delete_policy("Bad NS", "ok2");
    let r9 = e.delete_namespace("");
    for (c, field) in [
        (r1, "cidr"),
        (r2, "port"),
        (r3, "podIPs"),
        (r4, "metadata.labels"),
        (r5, "NetworkPolicy a/Bad Name: metadata.name: invalid name"),
        (r6, "metadata.name: invalid name"),
        (r7, "Pod a/Web_0: metadata.name: invalid name"),
        (
            r8,
            "NetworkPolicy Bad NS/ok2: metadata.namespace: invalid name",
        ),
        (r9, "metadata.name"),
    ] {
        match c.wait() {
            Err(Error::Rejected(err)) => {
                let msg = err.to_string();
                assert!(msg.contains(field), "{field}: {msg}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    for c in [good1, good2, good3] {
        c.wait().unwrap();
    }
    assert_converged(&sb, &w);
    assert_eq!(e.metrics().rejected, 9);
}

#[test]
fn flush_removes_what_netfence_owns_and_nothing_else() {
    let sb = Sandbox::new("sync-flush");
    let w = base_world();
    sb.sh("ipset", &["create", "kube-x", "hash:ip"]);
    sb.sh(
        "iptables-nft",
        &["-A", "FORWARD", "-s", "198.51.100.1", "-j", "DROP"],
    );
    let e = start_converged(&sb, &w);
    assert!(sb.sh("iptables-nft-save", &[]).contains("nf-fw"));
    assert!(e.status().ready && !e.status().stopped, "{:?}", e.status());

    e.flush().wait().unwrap();
    // Its caller sees the engine stopped, not ready, with nothing pending.
    let s = e.status();
    assert!(s.stopped && !s.ready && s.pending == 0, "{s:?}");
    let save = sb.sh("iptables-nft-save", &[]);
    assert!(!save.contains("nf-"), "{save}");
    assert!(
        save.contains("-A FORWARD -s 198.51.100.1/32 -j DROP"),
        "{save}"
    );
    let sets = sb.sh("ipset", &["list", "-n"]);
    assert_eq!(sets.trim(), "kube-x");
    // The engine has stopped.
    assert!(matches!(e.sync().wait(), Err(Error::Stopped)));
    assert!(matches!(
        e.upsert_namespace(&namespace("z", &[])).wait(),
        Err(Error::Stopped)
    ));
}

/// Another writer's commit between the engine's start and `ready()` (kube-proxy's, on a
/// real node, while the agent lists) costs the first convergence no failed commit: the
/// engine sees the generation moved and reads the kernel again before it plans.
#[test]
fn a_commit_by_another_writer_before_ready_costs_no_failed_commit() {
    let sb = Sandbox::new("sync-gen");
    let w = base_world();
    let e = Engine::start(config(&sb)).unwrap();
    let cs = w.feed(&e);
    sb.sh(
        "iptables-nft",
        &["-A", "FORWARD", "-s", "198.51.100.1", "-j", "DROP"],
    );
    e.ready().wait().unwrap();
    wait_all(cs);
    assert_eq!(e.metrics().errors, 0, "{:?}", e.metrics());
    assert_eq!(e.status().last_error, None);
    assert_converged(&sb, &w);
}

/// A shut-down engine says so: an agent reading the status for its health must not see
/// it ready, nor deltas pending that all completed with `Stopped`.
#[test]
fn a_shut_down_engine_is_stopped_and_not_ready() {
    let sb = Sandbox::new("sync-down");
    let e = Engine::start(config(&sb)).unwrap();
    let before_ready: Vec<_> = (0..3)
        .map(|i| e.upsert_namespace(&namespace(&format!("n{i}"), &[])))
        .collect();
    let other = e.clone();
    e.shutdown();
    for c in before_ready {
        assert!(matches!(c.wait(), Err(Error::Stopped)));
    }
    let s = other.status();
    assert!(s.stopped && !s.ready && s.pending == 0, "{s:?}");
}

#[test]
fn start_errors_are_clear() {
    let bad = EngineConfig {
        netns: ruleset::Netns::Named("netfence-no-such-namespace".into()),
        ..EngineConfig::default()
    };
    let err = Engine::start(bad).unwrap_err().to_string();
    assert!(err.contains("netfence-no-such-namespace"), "{err}");
    let bad = EngineConfig {
        retry_min: Duration::ZERO,
        ..EngineConfig::default()
    };
    assert!(matches!(
        Engine::start(bad),
        Err(Error::Config {
            field: "retry_min",
            ..
        })
    ));
}
