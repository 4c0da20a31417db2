//! A deterministic cluster generator: namespaces, pods and NetworkPolicies as
//! `k8s-openapi` objects, the shape a benchmark feeds to netfence's converters.
//!
//! Everything derives from [`ClusterSpec::seed`]: object `i` of a kind is drawn
//! from its own PRNG stream (seed, kind, i), so pod 17 is the same pod whatever
//! the cluster's size, and [`Generated::extra_pod`]`(i)` is exactly the pod that a
//! cluster one pod larger would hold at index `pods + i`.
//!
//! The shape, chosen to look like a real multi-team cluster:
//!
//! * namespaces `<team>-<i>`, labelled `team` (10 teams) and `env` (prod/staging),
//!   plus `kubernetes.io/metadata.name` as the API server sets it;
//! * apps: `max(pods / 20, namespaces)` of them, app `j` living in namespace
//!   `j % namespaces`, with a fixed tier (web/api/db), a named port `http` (TCP
//!   8080 or 8081), on half of them `metrics` (TCP 9090), on a sixth `dns` (UDP 53);
//! * pods: each picks an app at random and lives in the app's namespace; labels
//!   `app`, `tier`, `team` (the namespace's) and `pod-template-hash`; IPv4 from
//!   10.64.0.0/10 (pod `i` holds 10.64.0.0 + i + 1), IPv6 (dual stack) from
//!   fd00:10:64::/48; `spec.nodeName` = [`ClusterSpec::node`]; annotation
//!   `netfence.io/host-interface` = `cali` + 11 hex chars of a hash of
//!   `<namespace>.<name>`, the way Calico names a pod's host-side veth;
//! * policies: a mixture of app-to-app in one namespace, from a team's
//!   namespaces, namespaceSelector AND podSelector (with matchExpressions),
//!   ipBlocks with excepts (IPv6 ones too on dual stack), default deny, same-namespace
//!   access to databases, multi-peer multi-port rules (TCP 80/443, named `http`,
//!   UDP 53, a 30000-30100 `endPort` range) and open HTTPS; about a fifth also
//!   restrict egress (DNS, HTTPS to 0.0.0.0/0 but the metadata address, an app's
//!   named port).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Pod, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use policy::HOST_INTERFACE_ANNOTATION;
use sha2::{Digest, Sha256};

/// The teams; a namespace's `team` label is one of these.
pub const TEAMS: [&str; 10] = [
    "payments", "search", "identity", "platform", "data", "growth", "mlops", "infra", "mobile",
    "web",
];

const APP_WORDS: [&str; 16] = [
    "checkout", "cart", "catalog", "auth", "gateway", "orders", "billing", "ledger", "index",
    "ranker", "profile", "session", "notify", "reports", "images", "feed",
];

const TIERS: [&str; 3] = ["web", "api", "db"];

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Number of pods.
    pub pods: usize,
    /// Number of namespaces (at least 1).
    pub namespaces: usize,
    /// Number of NetworkPolicies.
    pub policies: usize,
    /// Pods get an IPv6 address next to the IPv4 one, and ipBlocks come in both families.
    pub dual_stack: bool,
    /// The seed every object derives from.
    pub seed: u64,
    /// `spec.nodeName` of every pod (`None`: pods carry no node name).
    pub node: Option<String>,
}

impl ClusterSpec {
    /// A single-stack cluster with seed 1 and every pod on node `node-1`.
    pub fn new(pods: usize, namespaces: usize, policies: usize) -> Self {
        ClusterSpec {
            pods,
            namespaces,
            policies,
            dual_stack: false,
            seed: 1,
            node: Some("node-1".to_owned()),
        }
    }
}

/// A splitmix64 PRNG: tiny, fast and good enough to pick labels.
#[derive(Clone, Debug)]
pub struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// An independent stream for object `index` of kind `stream`.
    pub fn derive(seed: u64, stream: u64, index: u64) -> Self {
        Rng(mix(seed
            ^ mix(
                stream.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ mix(index)
            )))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

const POD_STREAM: u64 = 1;
const POLICY_STREAM: u64 = 2;
const NAMESPACE_STREAM: u64 = 3;

/// An application: a Deployment's worth of identical pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// The `app` label value.
    pub name: String,
    /// Index of the namespace it lives in.
    pub namespace: usize,
    /// The `tier` label value.
    pub tier: &'static str,
    /// The container port named `http` (TCP).
    pub http_port: u16,
    /// Whether it declares `metrics` (TCP 9090).
    pub metrics: bool,
    /// Whether it declares `dns` (UDP 53).
    pub dns: bool,
    /// The `pod-template-hash` label value.
    pub template_hash: String,
}

/// A generated cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// What it was generated from.
    pub spec: ClusterSpec,
    /// The namespaces, by index.
    pub namespaces: Vec<Namespace>,
    /// The pods, by index.
    pub pods: Vec<Pod>,
    /// The policies, by index.
    pub policies: Vec<NetworkPolicy>,
    /// The apps pods are drawn from.
    pub apps: Vec<App>,
    /// App indices per namespace index.
    apps_in: Vec<Vec<usize>>,
}

/// Generates the cluster `spec` describes.
pub fn generate(spec: &ClusterSpec) -> Generated {
    assert!(spec.namespaces > 0, "a cluster needs a namespace");
    let m = spec.namespaces;
    let app_count = (spec.pods / 20).max(m);
    let apps: Vec<App> = (0..app_count)
        .map(|j| {
            let mut r = Rng::derive(spec.seed, 0xa99, j as u64);
            App {
                name: format!("{}-{j}", APP_WORDS[j % APP_WORDS.len()]),
                namespace: j % m,
                tier: TIERS[r.below(3)],
                http_port: 8080 + (j % 2) as u16,
                metrics: j % 2 == 0,
                dns: j % 6 == 0,
                template_hash: format!("{:010x}", r.next_u64() & 0xff_ffff_ffff),
            }
        })
        .collect();
    let mut apps_in = vec![Vec::new(); m];
    for (j, a) in apps.iter().enumerate() {
        apps_in[a.namespace].push(j);
    }
    let mut g = Generated {
        spec: spec.clone(),
        namespaces: Vec::with_capacity(m),
        pods: Vec::with_capacity(spec.pods),
        policies: Vec::with_capacity(spec.policies),
        apps,
        apps_in,
    };
    g.namespaces = (0..m).map(|i| g.namespace(i)).collect();
    g.pods = (0..spec.pods).map(|i| g.pod(i)).collect();
    g.policies = (0..spec.policies).map(|i| g.policy(i)).collect();
    g
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        match_expressions: None,
    }
}

fn match_in(key: &str, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.to_owned(),
            operator: "In".to_owned(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }]),
    }
}

fn pods_peer(sel: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(sel),
        ..Default::default()
    }
}

fn ns_peer(ns: LabelSelector, pods: Option<LabelSelector>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(ns),
        pod_selector: pods,
        ..Default::default()
    }
}

fn block_peer(cidr: &str, except: &[String]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: (!except.is_empty()).then(|| except.to_vec()),
        }),
        ..Default::default()
    }
}

fn port(protocol: &str, port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(port.into())),
        end_port: None,
    }
}

fn named(protocol: &str, name: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::String(name.to_owned())),
        end_port: None,
    }
}

fn range(protocol: &str, start: u16, end: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        end_port: Some(end.into()),
        ..port(protocol, start)
    }
}

fn ingress(
    from: Vec<NetworkPolicyPeer>,
    ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: (!from.is_empty()).then_some(from),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

fn egress(to: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: (!to.is_empty()).then_some(to),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

/// The Calico-style host-side interface name of a pod: `cali` + 11 hex chars of a
/// hash of `<namespace>.<name>` (Calico uses SHA-1; any stable hash does).
pub fn host_interface(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}.{name}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 || out.len() < width {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

impl Generated {
    fn namespace(&self, i: usize) -> Namespace {
        let mut r = Rng::derive(self.spec.seed, NAMESPACE_STREAM, i as u64);
        let team = TEAMS[i % TEAMS.len()];
        let name = format!("{team}-{i}");
        let env = if r.percent(70) { "prod" } else { "staging" };
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels(&[
                    ("team", team),
                    ("env", env),
                    ("kubernetes.io/metadata.name", &name),
                ])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn ns_name(&self, i: usize) -> String {
        format!("{}-{i}", TEAMS[i % TEAMS.len()])
    }

    fn ns_team(&self, i: usize) -> &'static str {
        TEAMS[i % TEAMS.len()]
    }

    /// The pod at index `i` (`i` may be past the cluster's pods).
    fn pod(&self, i: usize) -> Pod {
        let mut r = Rng::derive(self.spec.seed, POD_STREAM, i as u64);
        let app = &self.apps[r.below(self.apps.len())];
        let namespace = self.ns_name(app.namespace);
        let name = format!("{}-{}-{}", app.name, app.template_hash, base36(i as u64, 5));
        let v4 = std::net::Ipv4Addr::from(0x0a40_0000u32 + i as u32 + 1);
        let mut pod_ips = vec![PodIP { ip: v4.to_string() }];
        if self.spec.dual_stack {
            let v6 = std::net::Ipv6Addr::from(
                0xfd00_0010_0064_0000_0000_0000_0000_0000u128 + i as u128 + 1,
            );
            pod_ips.push(PodIP { ip: v6.to_string() });
        }
        let mut ports = vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: app.http_port.into(),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }];
        if app.metrics {
            ports.push(ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: 9090,
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            });
        }
        if app.dns {
            ports.push(ContainerPort {
                name: Some("dns".to_owned()),
                container_port: 53,
                protocol: Some("UDP".to_owned()),
                ..Default::default()
            });
        }
        // An unnamed port: not part of policy, but real pods have them.
        ports.push(ContainerPort {
            container_port: 8443,
            ..Default::default()
        });
        Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels: Some(labels(&[
                    ("app", &app.name),
                    ("tier", app.tier),
                    ("team", self.ns_team(app.namespace)),
                    ("pod-template-hash", &app.template_hash),
                ])),
                annotations: Some(labels(&[(
                    HOST_INTERFACE_ANNOTATION,
                    &host_interface(&namespace, &name),
                )])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".to_owned(),
                    image: Some(format!("registry.example/{}:1.0", app.name)),
                    ports: Some(ports),
                    ..Default::default()
                }],
                node_name: self.spec.node.clone(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".to_owned()),
                pod_ip: Some(v4.to_string()),
                pod_ips: Some(pod_ips),
                ..Default::default()
            }),
        }
    }

    /// A random app of namespace `ns` (any app if it has none).
    fn app_in(&self, ns: usize, r: &mut Rng) -> &App {
        let list = &self.apps_in[ns];
        if list.is_empty() {
            &self.apps[r.below(self.apps.len())]
        } else {
            &self.apps[list[r.below(list.len())]]
        }
    }

    /// The policy at index `i` (`i` may be past the cluster's policies).
    fn policy(&self, i: usize) -> NetworkPolicy {
        let mut r = Rng::derive(self.spec.seed, POLICY_STREAM, i as u64);
        let m = self.spec.namespaces;
        let ns = i % m;
        let dual = self.spec.dual_stack;
        let target = self.app_in(ns, &mut r).name.clone();
        let peer_app = self.app_in(ns, &mut r).name.clone();
        let team = TEAMS[r.below(TEAMS.len())];
        let app_sel = match_labels(&[("app", &target)]);
        let mut types = vec!["Ingress"];
        let shape = r.below(100);
        let (kind, pod_selector, ingress_rules) = match shape {
            0..25 => {
                let p = if r.percent(50) {
                    named("TCP", "http")
                } else {
                    port("TCP", 8080)
                };
                let rule = ingress(
                    vec![pods_peer(match_labels(&[("app", &peer_app)]))],
                    vec![p],
                );
                ("allow-app", app_sel, vec![rule])
            }
            25..40 => {
                let rule = ingress(
                    vec![ns_peer(match_labels(&[("team", team)]), None)],
                    vec![port("TCP", 80), port("TCP", 443)],
                );
                ("allow-team", app_sel, vec![rule])
            }
            40..52 => {
                let rule = ingress(
                    vec![ns_peer(
                        match_labels(&[("team", team)]),
                        Some(match_labels(&[("tier", "web")])),
                    )],
                    vec![named("TCP", "http")],
                );
                (
                    "allow-team-web",
                    match_in("tier", &["api", "db"]),
                    vec![rule],
                )
            }
            52..62 => {
                let mut from = vec![block_peer(
                    "10.0.0.0/8",
                    &[
                        format!("10.{}.0.0/16", r.below(64)),
                        format!("10.64.{}.0/24", r.below(256)),
                    ],
                )];
                if dual {
                    from.push(block_peer(
                        "fd00::/8",
                        &[format!("fd00:10:64::{:x}00/120", r.below(256))],
                    ));
                }
                let rule = ingress(from, vec![port("TCP", 443)]);
                ("allow-cidr", app_sel, vec![rule])
            }
            62..68 => {
                if r.percent(30) {
                    types.push("Egress");
                }
                ("default-deny", LabelSelector::default(), vec![])
            }
            68..76 => {
                let rule = ingress(
                    vec![pods_peer(LabelSelector::default())],
                    vec![port("TCP", 5432), port("TCP", 6379)],
                );
                ("allow-db", match_labels(&[("tier", "db")]), vec![rule])
            }
            76..90 => {
                let other_ns = self.ns_name(r.below(m));
                let a = self.app_in(r.below(m), &mut r).name.clone();
                let b = self.app_in(r.below(m), &mut r).name.clone();
                let rules = vec![
                    ingress(
                        vec![
                            pods_peer(match_labels(&[("app", &peer_app)])),
                            ns_peer(
                                match_labels(&[("kubernetes.io/metadata.name", &other_ns)]),
                                None,
                            ),
                            ns_peer(
                                match_labels(&[("env", "prod")]),
                                Some(match_in("app", &[&a, &b])),
                            ),
                        ],
                        vec![
                            port("TCP", 80),
                            port("TCP", 443),
                            named("TCP", "http"),
                            port("UDP", 53),
                            range("TCP", 30000, 30100),
                        ],
                    ),
                    ingress(
                        vec![pods_peer(match_labels(&[("tier", "web")]))],
                        vec![named("TCP", "metrics")],
                    ),
                ];
                ("allow-multi", app_sel, rules)
            }
            _ => {
                let rule = ingress(vec![], vec![port("TCP", 443), port("TCP", 8443)]);
                ("allow-https", app_sel, vec![rule])
            }
        };
        let mut egress_rules = None;
        if (shape >= 68 && r.percent(25)) || (shape < 62 && r.percent(18)) {
            types.push("Egress");
            let dns_ns = self.ns_name(0);
            let mut https = vec![block_peer("0.0.0.0/0", &["169.254.169.254/32".to_owned()])];
            if dual {
                https.push(block_peer("::/0", &["fd00:ec2::254/128".to_owned()]));
            }
            let backend = self.app_in(ns, &mut r).name.clone();
            egress_rules = Some(vec![
                egress(
                    vec![ns_peer(
                        match_labels(&[("kubernetes.io/metadata.name", &dns_ns)]),
                        Some(match_labels(&[("tier", "api")])),
                    )],
                    vec![port("UDP", 53), port("TCP", 53)],
                ),
                egress(https, vec![port("TCP", 443)]),
                egress(
                    vec![pods_peer(match_labels(&[("app", &backend)]))],
                    vec![named("TCP", "http"), named("UDP", "dns")],
                ),
            ]);
        }
        // Half the ingress-only policies leave policyTypes to the API default.
        let policy_types = if types.len() == 1 && r.percent(50) {
            None
        } else {
            Some(types.iter().map(|t| t.to_string()).collect())
        };
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(format!("{kind}-{i}")),
                namespace: Some(self.ns_name(ns)),
                ..Default::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(pod_selector),
                ingress: Some(ingress_rules),
                egress: egress_rules,
                policy_types,
            }),
        }
    }

    /// A pod that is not in the cluster, shaped like the others, with a unique
    /// name and unique addresses: the pod at index `pods + i`.
    pub fn extra_pod(&self, i: usize) -> Pod {
        self.pod(self.spec.pods + i)
    }

    /// A policy that is not in the cluster: the policy at index `policies + i`.
    pub fn extra_policy(&self, i: usize) -> NetworkPolicy {
        self.policy(self.spec.policies + i)
    }

    /// `pod` with its `app` label moved to another existing app, one of its own
    /// namespace if there is another there.
    pub fn relabel_pod(&self, pod: &Pod) -> Pod {
        let mut pod = pod.clone();
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        let current = labels.get("app").cloned().unwrap_or_default();
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let local: Vec<usize> = self
            .namespaces
            .iter()
            .position(|n| n.metadata.name.as_deref() == Some(ns))
            .map(|k| self.apps_in[k].clone())
            .unwrap_or_default();
        let others = |list: Vec<usize>| -> Vec<usize> {
            list.into_iter()
                .filter(|&j| self.apps[j].name != current)
                .collect()
        };
        let mut candidates = others(local);
        if candidates.is_empty() {
            candidates = others((0..self.apps.len()).collect());
        }
        let value = match candidates.first() {
            // The first other app after the current one, cyclically.
            Some(&first) => {
                let now = self.apps.iter().position(|a| a.name == current);
                let next = candidates
                    .iter()
                    .find(|&&j| Some(j) > now)
                    .unwrap_or(&first);
                self.apps[*next].name.clone()
            }
            // A single-app cluster: a value no selector names.
            None => format!("{current}-relabelled"),
        };
        labels.insert("app".to_owned(), value);
        pod
    }

    /// `ns` with its `team` label moved to the next team.
    pub fn relabel_namespace(&self, ns: &Namespace) -> Namespace {
        let mut ns = ns.clone();
        let labels = ns.metadata.labels.get_or_insert_with(BTreeMap::new);
        let current = labels.get("team").cloned().unwrap_or_default();
        let at = TEAMS.iter().position(|t| *t == current).unwrap_or(0);
        labels.insert("team".to_owned(), TEAMS[(at + 1) % TEAMS.len()].to_owned());
        ns
    }

    /// `np` with TCP 8443 added to its first ingress rule (or, for a policy with no
    /// ingress rule, a new rule admitting the namespace's pods on TCP 8443). The
    /// change always alters what the policy admits.
    pub fn changed_policy(&self, np: &NetworkPolicy) -> NetworkPolicy {
        let mut np = np.clone();
        let spec = np.spec.get_or_insert_with(Default::default);
        let rules = spec.ingress.get_or_insert_with(Vec::new);
        match rules.first_mut() {
            Some(rule) => rule
                .ports
                .get_or_insert_with(Vec::new)
                .push(port("TCP", 8443)),
            None => rules.push(ingress(
                vec![pods_peer(LabelSelector::default())],
                vec![port("TCP", 8443)],
            )),
        }
        // Make sure the ingress rules take effect.
        if let Some(types) = &mut spec.policy_types {
            if !types.iter().any(|t| t == "Ingress") {
                types.push("Ingress".to_owned());
            }
        }
        np
    }

    /// A pod added, a policy added, a pod relabelled, a namespace relabelled, a pod
    /// deleted and a policy deleted, in that order, each valid on the state the ones
    /// before leave: the baselines' chained-delta tests walk this one sequence so that
    /// they check their renderers against the same history.
    pub fn chained_changes(&self) -> Vec<ClusterChange<'_>> {
        vec![
            Box::new(|c| {
                c.upsert_pod(to_pod(&self.extra_pod(2)));
            }),
            Box::new(|c| {
                c.upsert_policy(to_policy(&self.extra_policy(2)));
            }),
            Box::new(|c| {
                c.upsert_pod(to_pod(&self.relabel_pod(&self.pods[3])));
            }),
            Box::new(|c| {
                c.upsert_namespace(to_namespace(&self.relabel_namespace(&self.namespaces[1])));
            }),
            Box::new(|c| {
                c.delete_pod(&policy::ObjectKey::new(
                    self.pods[4].metadata.namespace.clone().unwrap(),
                    self.pods[4].metadata.name.clone().unwrap(),
                ));
            }),
            Box::new(|c| {
                c.delete_policy(&to_policy(&self.policies[0]).key());
            }),
        ]
    }

    /// The cluster in netfence's model. Panics if any object fails to convert.
    pub fn cluster(&self) -> policy::Cluster {
        let (cluster, errors) =
            policy::Cluster::from_k8s(&self.namespaces, &self.pods, &self.policies);
        assert!(
            errors.is_empty(),
            "generated objects must convert: {errors:?}"
        );
        cluster
    }
}

/// One change to netfence's model of a cluster.
pub type ClusterChange<'a> = Box<dyn Fn(&mut policy::Cluster) + 'a>;

/// Converts one generated pod; panics if it does not convert.
pub fn to_pod(pod: &Pod) -> policy::Pod {
    policy::Pod::try_from(pod).expect("generated pod converts")
}

/// Converts one generated namespace; panics if it does not convert.
pub fn to_namespace(ns: &Namespace) -> policy::Namespace {
    policy::Namespace::try_from(ns).expect("generated namespace converts")
}

/// Converts one generated policy; panics if it does not convert.
pub fn to_policy(np: &NetworkPolicy) -> policy::Policy {
    policy::Policy::try_from(np).expect("generated policy converts")
}
