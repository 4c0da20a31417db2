//! Property tests: selector syntax round trips, and algebraic properties of
//! the evaluator over random small clusters (union of policies, what adding
//! a policy can and cannot change).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use policy::k8s_openapi::api::core::v1 as core;
use policy::k8s_openapi::api::networking::v1 as net;
use policy::k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use policy::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use policy::{
    allowed, egress_allows, ingress_allows, is_isolated, Cluster, Direction, Endpoint, Family,
    Kind, LabelSelector, ObjectRef, Operator, Policy, Protocol, Requirement,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Selectors.

const KEYS: [&str; 4] = ["app", "tier", "team.example.com/owner", "a_b.c-d"];
const VALUES: [&str; 5] = ["", "x", "y", "web", "v1.2_3-z"];

fn arb_value() -> impl Strategy<Value = String> {
    prop::sample::select(&VALUES[..]).prop_map(String::from)
}

fn arb_values() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set(arb_value(), 1..3)
}

fn arb_requirement() -> impl Strategy<Value = Requirement> {
    let op = prop_oneof![
        arb_values().prop_map(Operator::In),
        arb_values().prop_map(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist),
    ];
    (prop::sample::select(&KEYS[..]), op)
        .prop_map(|(k, op)| Requirement::new(k, op).expect("valid by construction"))
}

fn arb_selector() -> impl Strategy<Value = LabelSelector> {
    prop::collection::vec(arb_requirement(), 0..4).prop_map(LabelSelector::new)
}

fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(&KEYS[..]).prop_map(String::from),
        arb_value(),
        0..4,
    )
}

fn obj() -> ObjectRef {
    ObjectRef {
        kind: Kind::NetworkPolicy,
        namespace: Some("a".into()),
        name: "p".into(),
    }
}

proptest! {
    #[test]
    fn selector_string_round_trips(sel in arb_selector()) {
        let text = sel.to_string();
        let back: LabelSelector = text.parse().map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(back, sel);
    }

    #[test]
    fn selector_k8s_round_trips(sel in arb_selector()) {
        let back = LabelSelector::from_k8s(&sel.to_k8s(), &obj(), "spec.podSelector").unwrap();
        prop_assert_eq!(back, sel);
    }

    #[test]
    fn selector_is_a_conjunction(sel in arb_selector(), labels in arb_labels()) {
        // Matching is the AND of the requirements, each evaluated on its own
        // one-requirement selector: canonicalisation must not change meaning.
        let each = sel.requirements().iter().all(|r| LabelSelector::new([r.clone()]).matches(&labels));
        prop_assert_eq!(sel.matches(&labels), each);
    }

    #[test]
    fn match_labels_is_subset(want in arb_labels(), have in arb_labels()) {
        let sel = LabelSelector::from_labels(want.clone()).unwrap();
        let subset = want.iter().all(|(k, v)| have.get(k) == Some(v));
        prop_assert_eq!(sel.matches(&have), subset);
    }
}

// ---------------------------------------------------------------------------
// Random clusters, built as Kubernetes objects so that conversion is exercised.

const NAMESPACES: [&str; 2] = ["a", "b"];
/// (cidr, except) pairs that the API server accepts.
const BLOCKS: [(&str, &[&str]); 6] = [
    ("10.244.0.0/16", &[]),
    ("10.244.0.0/24", &["10.244.0.0/30"]),
    ("0.0.0.0/0", &["10.244.0.0/16"]),
    ("192.0.2.0/24", &["192.0.2.0/31"]),
    ("fd00:10:244::/48", &["fd00:10:244::/126"]),
    ("::/0", &[]),
];

fn k8s_selector() -> impl Strategy<Value = meta::LabelSelector> {
    arb_selector().prop_map(|s| s.to_k8s())
}

fn arb_protocol() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("TCP".into())),
        Just(Some("UDP".into())),
        Just(Some("SCTP".into()))
    ]
}

fn arb_port() -> impl Strategy<Value = net::NetworkPolicyPort> {
    let port = prop_oneof![
        Just((None, None)),
        prop::sample::select(vec![53, 80, 8080]).prop_map(|p| (Some(IntOrString::Int(p)), None)),
        (50..=90i32, 0..=40i32).prop_map(|(p, w)| (Some(IntOrString::Int(p)), Some(p + w))),
        prop::sample::select(vec!["http", "dns"])
            .prop_map(|n| (Some(IntOrString::String(n.into())), None)),
    ];
    (arb_protocol(), port).prop_map(|(protocol, (port, end_port))| net::NetworkPolicyPort {
        protocol,
        port,
        end_port,
    })
}

fn arb_peer() -> impl Strategy<Value = net::NetworkPolicyPeer> {
    prop_oneof![
        k8s_selector().prop_map(|s| net::NetworkPolicyPeer {
            pod_selector: Some(s),
            ..Default::default()
        }),
        k8s_selector().prop_map(|s| net::NetworkPolicyPeer {
            namespace_selector: Some(s),
            ..Default::default()
        }),
        (k8s_selector(), k8s_selector()).prop_map(|(n, p)| net::NetworkPolicyPeer {
            namespace_selector: Some(n),
            pod_selector: Some(p),
            ..Default::default()
        }),
        prop::sample::select(&BLOCKS[..]).prop_map(|(cidr, except)| net::NetworkPolicyPeer {
            ip_block: Some(net::IPBlock {
                cidr: cidr.into(),
                except: Some(except.iter().map(|e| e.to_string()).collect()),
            }),
            ..Default::default()
        }),
    ]
}

type RuleParts = (Vec<net::NetworkPolicyPeer>, Vec<net::NetworkPolicyPort>);

fn arb_rules() -> impl Strategy<Value = Option<Vec<RuleParts>>> {
    let rule = (
        prop::collection::vec(arb_peer(), 0..3),
        prop::collection::vec(arb_port(), 0..3),
    );
    prop::option::of(prop::collection::vec(rule, 0..3))
}

fn arb_types() -> impl Strategy<Value = Option<Vec<String>>> {
    prop::sample::select(vec![
        None,
        Some(vec!["Ingress"]),
        Some(vec!["Egress"]),
        Some(vec!["Ingress", "Egress"]),
    ])
    .prop_map(|t| t.map(|t| t.into_iter().map(String::from).collect()))
}

fn make_policy(
    ns: &str,
    name: &str,
    sel: meta::LabelSelector,
    types: Option<Vec<String>>,
    ingress: Option<Vec<RuleParts>>,
    egress: Option<Vec<RuleParts>>,
) -> net::NetworkPolicy {
    net::NetworkPolicy {
        metadata: meta::ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(net::NetworkPolicySpec {
            pod_selector: Some(sel),
            policy_types: types,
            ingress: ingress.map(|rs| {
                rs.into_iter()
                    .map(|(from, ports)| net::NetworkPolicyIngressRule {
                        from: Some(from),
                        ports: Some(ports),
                    })
                    .collect()
            }),
            egress: egress.map(|rs| {
                rs.into_iter()
                    .map(|(to, ports)| net::NetworkPolicyEgressRule {
                        to: Some(to),
                        ports: Some(ports),
                    })
                    .collect()
            }),
        }),
    }
}

fn arb_policy(name: &'static str) -> impl Strategy<Value = net::NetworkPolicy> {
    (
        prop::sample::select(&NAMESPACES[..]),
        k8s_selector(),
        arb_types(),
        arb_rules(),
        arb_rules(),
    )
        .prop_map(move |(ns, sel, types, i, e)| make_policy(ns, name, sel, types, i, e))
}

fn arb_pod(i: u8) -> impl Strategy<Value = core::Pod> {
    let http = prop::sample::select(vec![
        None,
        Some(("TCP", 80)),
        Some(("TCP", 8080)),
        Some(("UDP", 8080)),
    ]);
    let dns = prop::bool::ANY;
    (
        prop::sample::select(&NAMESPACES[..]),
        arb_labels(),
        http,
        dns,
    )
        .prop_map(move |(ns, labels, http, dns)| {
            let mut ports = Vec::new();
            if let Some((proto, port)) = http {
                ports.push(core::ContainerPort {
                    name: Some("http".into()),
                    protocol: Some(proto.into()),
                    container_port: port,
                    ..Default::default()
                });
            }
            if dns {
                ports.push(core::ContainerPort {
                    name: Some("dns".into()),
                    protocol: Some("UDP".into()),
                    container_port: 53,
                    ..Default::default()
                });
            }
            core::Pod {
                metadata: meta::ObjectMeta {
                    namespace: Some(ns.into()),
                    name: Some(format!("p{i}")),
                    labels: Some(labels),
                    ..Default::default()
                },
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: "c".into(),
                        ports: Some(ports),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: Some(core::PodStatus {
                    pod_ips: Some(vec![
                        core::PodIP {
                            ip: format!("10.244.0.{}", i + 1),
                        },
                        core::PodIP {
                            ip: format!("fd00:10:244::{}", i + 1),
                        },
                    ]),
                    ..Default::default()
                }),
            }
        })
}

fn arb_namespaces() -> impl Strategy<Value = Vec<core::Namespace>> {
    let env = prop::sample::select(vec![None, Some("prod"), Some("dev")]);
    (env.clone(), env).prop_map(|(ea, eb)| {
        [("a", ea), ("b", eb)]
            .into_iter()
            .map(|(name, env)| core::Namespace {
                metadata: meta::ObjectMeta {
                    name: Some(name.into()),
                    labels: Some(
                        env.map(|e| ("app".to_string(), e.to_string()))
                            .into_iter()
                            .collect(),
                    ),
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect()
    })
}

fn arb_pods() -> impl Strategy<Value = Vec<core::Pod>> {
    (
        arb_pod(0),
        arb_pod(1),
        arb_pod(2),
        arb_pod(3),
        arb_pod(4),
        1..=5usize,
    )
        .prop_map(|(a, b, c, d, e, n)| {
            let mut v = vec![a, b, c, d, e];
            v.truncate(n);
            v
        })
}

fn build(ns: &[core::Namespace], pods: &[core::Pod], policies: &[net::NetworkPolicy]) -> Cluster {
    let (cluster, errors) = Cluster::from_k8s(ns, pods, policies);
    assert!(
        errors.is_empty(),
        "generated objects are valid, yet: {errors:?}"
    );
    cluster
}

struct Probe {
    src: Endpoint,
    dst: Endpoint,
    protocol: Protocol,
    port: u16,
    family: Family,
}

fn probes(cluster: &Cluster) -> Vec<Probe> {
    let mut out = Vec::new();
    for family in Family::ALL {
        let mut eps: Vec<Endpoint> = cluster.pods().map(|p| Endpoint::Pod(p.key())).collect();
        let hosts: [IpAddr; 2] = match family {
            Family::Ipv4 => [
                "192.0.2.1".parse().unwrap(),
                "198.51.100.1".parse().unwrap(),
            ],
            Family::Ipv6 => [
                "2001:db8::1".parse().unwrap(),
                "fd00:10:244::ff".parse().unwrap(),
            ],
        };
        eps.extend(hosts.map(Endpoint::External));
        for src in &eps {
            for dst in &eps {
                if src == dst {
                    continue;
                }
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    for port in [53, 80, 8080] {
                        out.push(Probe {
                            src: src.clone(),
                            dst: dst.clone(),
                            protocol,
                            port,
                            family,
                        });
                    }
                }
            }
        }
    }
    out
}

fn side(c: &Cluster, p: &Probe, direction: Direction) -> bool {
    match direction {
        Direction::Egress => egress_allows(c, &p.src, &p.dst, p.protocol, p.port, p.family),
        Direction::Ingress => ingress_allows(c, &p.src, &p.dst, p.protocol, p.port, p.family),
    }
}

/// The pod whose policies govern `direction` of the probe, if any.
fn subject<'a>(c: &'a Cluster, p: &Probe, direction: Direction) -> Option<&'a policy::Pod> {
    let ep = match direction {
        Direction::Egress => &p.src,
        Direction::Ingress => &p.dst,
    };
    match ep {
        Endpoint::Pod(k) => c.pod(k).map(|p| &**p),
        Endpoint::External(_) => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn allowed_is_both_sides(ns in arb_namespaces(), pods in arb_pods(), pols in prop::collection::vec(arb_policy("p"), 0..4)) {
        let pols: Vec<_> = pols.into_iter().enumerate().map(|(i, mut p)| { p.metadata.name = Some(format!("p{i}")); p }).collect();
        let c = build(&ns, &pods, &pols);
        for p in probes(&c) {
            let both = side(&c, &p, Direction::Egress) && side(&c, &p, Direction::Ingress);
            prop_assert_eq!(allowed(&c, &p.src, &p.dst, p.protocol, p.port, p.family), both);
        }
    }

    /// Two policies with the same podSelector and policyTypes, on top of any
    /// others: each direction under both is the OR of each alone.
    #[test]
    fn policies_are_a_union(
        ns in arb_namespaces(),
        pods in arb_pods(),
        base in prop::collection::vec(arb_policy("base"), 0..3),
        space in prop::sample::select(&NAMESPACES[..]),
        sel in k8s_selector(),
        types in arb_types(),
        (ai, ae, bi, be) in (arb_rules(), arb_rules(), arb_rules(), arb_rules()),
    ) {
        let base: Vec<_> = base.into_iter().enumerate().map(|(i, mut p)| { p.metadata.name = Some(format!("base{i}")); p }).collect();
        // Egress rules change the defaulted types, so pin types when they are absent.
        let types = types.or_else(|| Some(vec!["Ingress".to_string()]));
        let a = make_policy(space, "pa", sel.clone(), types.clone(), ai, ae);
        let b = make_policy(space, "pb", sel, types, bi, be);
        let with = |extra: &[&net::NetworkPolicy]| {
            let mut all = base.clone();
            all.extend(extra.iter().map(|p| (*p).clone()));
            build(&ns, &pods, &all)
        };
        let (ca, cb, cab) = (with(&[&a]), with(&[&b]), with(&[&a, &b]));
        for p in probes(&cab) {
            for d in [Direction::Ingress, Direction::Egress] {
                prop_assert_eq!(side(&cab, &p, d), side(&ca, &p, d) || side(&cb, &p, d));
            }
        }
    }

    /// Adding a policy: a pod it does not select keeps its answers; a pod
    /// that was already isolated loses nothing; a pod that it newly isolates
    /// had everything before, and now has exactly what the new policy alone
    /// grants, whatever other policies say about other pods.
    #[test]
    fn adding_a_policy(
        ns in arb_namespaces(),
        pods in arb_pods(),
        base in prop::collection::vec(arb_policy("base"), 0..3),
        added in arb_policy("added"),
    ) {
        let base: Vec<_> = base.into_iter().enumerate().map(|(i, mut p)| { p.metadata.name = Some(format!("base{i}")); p }).collect();
        let before = build(&ns, &pods, &base);
        let mut all = base.clone();
        all.push(added.clone());
        let after = build(&ns, &pods, &all);
        let only = build(&ns, &pods, std::slice::from_ref(&added));
        let added = Policy::try_from(&added).unwrap();
        for p in probes(&after) {
            for d in [Direction::Ingress, Direction::Egress] {
                let (old, new) = (side(&before, &p, d), side(&after, &p, d));
                match subject(&after, &p, d) {
                    None => prop_assert!(old && new, "an external end is never policed"),
                    Some(pod) if !(added.selects(pod) && added.rules(d).is_some()) => prop_assert_eq!(old, new),
                    Some(pod) if is_isolated(&before, pod, d) => prop_assert!(!old || new, "isolated pod lost access"),
                    Some(_) => {
                        prop_assert!(old, "a pod that was not isolated was open");
                        prop_assert_eq!(new, side(&only, &p, d));
                    }
                }
            }
        }
    }

    /// Removing every policy opens everything that has addresses.
    #[test]
    fn no_policy_no_isolation(ns in arb_namespaces(), pods in arb_pods()) {
        let c = build(&ns, &pods, &[]);
        for p in probes(&c) {
            prop_assert!(allowed(&c, &p.src, &p.dst, p.protocol, p.port, p.family));
        }
    }
}

#[test]
fn requirement_constructor_checks_syntax() {
    assert!(Requirement::new("bad key", Operator::Exists).is_err());
    assert!(Requirement::new("app", Operator::In(BTreeSet::new())).is_err());
    assert!(Requirement::new("app", Operator::NotIn(BTreeSet::from(["-x".to_string()]))).is_err());
    assert!(Requirement::new("example.com/app", Operator::DoesNotExist).is_ok());
}
