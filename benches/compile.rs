//! The policy compiler at 10,000 pods in 100 namespaces and 1,000 policies (every pod
//! local, the worst case for set sizes): a pod delta (relabel, add and delete) recompiles
//! incrementally, next to the full compile of the same cluster as the baseline, measured
//! in the same run.
//!
//! The cluster is generated deterministically: labels `app` (50 values), `tier` (web, api,
//! db) and `team` (10 values); each namespace labelled with a team; policies select an
//! app and admit another app of the namespace, a team's namespaces, or an ipBlock with
//! an except, on TCP 80, 443 or the named port `http`; a fifth of them also restrict
//! egress.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use policy::{
    Cluster, Compiler, CompilerConfig, ContainerPort, IpBlock, LabelSelector, Namespace,
    NamespaceScope, ObjectKey, Peer, Pod, Policy, Port, PortRule, Protocol, Rule,
};

const PODS: u32 = 10_000;
const NAMESPACES: u32 = 100;
const POLICIES: u32 = 1_000;

fn sel(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector::from_labels(pairs.iter().map(|(k, v)| (k.to_string(), v.clone()))).unwrap()
}

fn pod(i: u32, app: u32) -> Pod {
    let ns = i % NAMESPACES;
    let labels = BTreeMap::from([
        ("app".to_string(), format!("app{app}")),
        (
            "tier".to_string(),
            ["web", "api", "db"][(i % 3) as usize].to_string(),
        ),
        ("team".to_string(), format!("t{}", ns % 10)),
    ]);
    let http = ContainerPort {
        protocol: Protocol::Tcp,
        port: 8080 + (i % 2) as u16,
    };
    Pod {
        namespace: format!("ns{ns}"),
        name: format!("pod{i}"),
        labels,
        ipv4: Some(Ipv4Addr::from(0x0a64_0000 + i + 1)),
        ipv6: Some(Ipv6Addr::from(
            0xfd00_0000_0000_0000_0000_0000_0000_0000u128 + u128::from(i) + 1,
        )),
        named_ports: BTreeMap::from([("http".to_string(), BTreeSet::from([http]))]),
        node_name: Some("node".into()),
        host_interface: None,
    }
}

fn cluster() -> Cluster {
    let mut c = Cluster::new();
    for n in 0..NAMESPACES {
        let labels = BTreeMap::from([
            ("team".to_string(), format!("t{}", n % 10)),
            ("kubernetes.io/metadata.name".to_string(), format!("ns{n}")),
        ]);
        c.upsert_namespace(Namespace {
            name: format!("ns{n}"),
            labels,
        });
    }
    for i in 0..PODS {
        c.upsert_pod(pod(i, i % 50));
    }
    for p in 0..POLICIES {
        let ns = p % NAMESPACES;
        let port = match p % 3 {
            0 => Port::Range { start: 80, end: 80 },
            1 => Port::Range {
                start: 443,
                end: 443,
            },
            _ => Port::Named("http".into()),
        };
        let peer = match p % 4 {
            0 | 1 => Peer::Pods {
                namespaces: NamespaceScope::Only(format!("ns{ns}")),
                pods: sel(&[("app", format!("app{}", (p + 7) % 50))]),
            },
            2 => Peer::Pods {
                namespaces: NamespaceScope::Selected(sel(&[("team", format!("t{}", p % 10))])),
                pods: LabelSelector::everything(),
            },
            _ => Peer::IpBlock(IpBlock {
                cidr: "10.0.0.0/8".parse().unwrap(),
                except: vec![format!("10.{}.0.0/16", p % 200).parse().unwrap()],
            }),
        };
        let rule = Rule {
            peers: vec![peer],
            ports: vec![PortRule {
                protocol: Protocol::Tcp,
                port,
            }],
        };
        let egress = (p % 5 == 0).then(|| {
            vec![Rule {
                peers: vec![Peer::IpBlock(IpBlock {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    except: vec![],
                })],
                ports: vec![],
            }]
        });
        c.upsert_policy(Policy {
            namespace: format!("ns{ns}"),
            name: format!("pol{p}"),
            pod_selector: sel(&[("app", format!("app{}", p % 50))]),
            ingress: Some(vec![rule]),
            egress,
        });
    }
    c
}

fn bench(c: &mut Criterion) {
    let cl = cluster();
    let mut g = c.benchmark_group("compile_10k_pods_1k_policies");
    g.sample_size(10);
    g.bench_function("full_compile_baseline", |b| {
        b.iter(|| {
            let mut k = Compiler::new(CompilerConfig::default()).unwrap();
            k.compile(&cl).unwrap().owned_rule_count()
        })
    });
    g.finish();

    let mut k = Compiler::new(CompilerConfig::default()).unwrap();
    let rs = k.compile(&cl).unwrap();
    eprintln!(
        "compiled: {} rules, {} sets",
        rs.owned_rule_count(),
        rs.sets().len()
    );
    k.take_scope();
    let mut g = c.benchmark_group("pod_delta_10k_pods_1k_policies");
    let mut flip = false;
    g.bench_function("relabel", |b| {
        b.iter(|| {
            flip = !flip;
            k.upsert_pod(Arc::new(pod(4242, if flip { 7 } else { 4242 % 50 })));
            k.take_scope()
        })
    });
    g.bench_function("add_then_delete", |b| {
        b.iter(|| {
            k.upsert_pod(Arc::new(pod(PODS + 1, 3)));
            k.delete_pod(&ObjectKey::new(
                format!("ns{}", (PODS + 1) % NAMESPACES),
                format!("pod{}", PODS + 1),
            ));
            k.take_scope()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
