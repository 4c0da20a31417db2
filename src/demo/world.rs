//! The walkthrough's world: seed 000's namespaces, pods and policies from the manifests
//! under `demo/seed0/` (embedded at build time, parsed at run time like any user's), plus
//! the hosts outside the cluster that make the `ipBlock` visible.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy::k8s_openapi::api::core::v1 as core;
use policy::k8s_openapi::api::networking::v1 as net;
use policy::{Cluster, Endpoint, Family, ObjectKey, Protocol};

use crate::manifest::Manifest;

use super::DemoError;

/// The port every probe connects to: the seed's nginx port.
pub(crate) const PORT: u16 = 80;

/// The annotation that gives a pod its short name in the tables.
const KEY_ANNOTATION: &str = "demo.netfence.io/key";

/// The namespaces and pods.
const WORLD: (&str, &str) = (
    "demo/seed0/world.yaml",
    include_str!("../../demo/seed0/world.yaml"),
);

/// The hosts outside the cluster: key, description, IPv4, IPv6. One per side of the
/// `access-nginx-complex` ipBlock (inside, in its except, outside), as in the conformance
/// table's `seed0_world`. They share one namespace (one "internet"), each its own address.
const HOSTS: [(&str, &str, Ipv4Addr, Ipv6Addr); 3] = [
    (
        "IN",
        "host in 10.63.48.0/22",
        Ipv4Addr::new(10, 63, 48, 10),
        Ipv6Addr::new(0x2001, 0xdb8, 0x63, 0, 0, 0, 0, 0x10),
    ),
    (
        "EXC",
        "host in its except",
        Ipv4Addr::new(10, 63, 48, 4),
        Ipv6Addr::new(0x2001, 0xdb8, 0x63, 0, 0, 0, 0, 0x4),
    ),
    (
        "OUT",
        "host outside 10.0.0.0/8",
        Ipv4Addr::new(192, 0, 2, 10),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10),
    ),
];

/// One step of the walkthrough.
pub(crate) struct Step {
    /// Short title.
    pub title: &'static str,
    /// What to look for, one or two sentences.
    pub about: &'static str,
    /// The manifest applied at this step (file name, text), if any. Earlier steps'
    /// policies stay, as in the seed, where each `kubectl create` adds one.
    pub policy: Option<(&'static str, &'static str)>,
}

/// The seed's walkthrough.
pub(crate) const STEPS: [Step; 4] = [
    Step {
        title: "no policy",
        about: "Pods are non-isolated by default: every connection is allowed.",
        policy: None,
    },
    Step {
        title: "deny-all in alpha",
        about: "alpha-deny selects every pod of alpha for ingress: nothing gets in.
                Egress stays open, and beta and default are untouched.",
        policy: Some((
            "demo/seed0/1-alpha-deny.yaml",
            include_str!("../../demo/seed0/1-alpha-deny.yaml"),
        )),
    },
    Step {
        title: "access-nginx",
        about: "Admits pods labelled run=access to nginx, on any port: the podSelector
                peer only sees alpha's pods, so beta's access pod stays out.",
        policy: Some((
            "demo/seed0/2-access-nginx.yaml",
            include_str!("../../demo/seed0/2-access-nginx.yaml"),
        )),
    },
    Step {
        title: "access-nginx-complex",
        about: "Admits on TCP 80: 10.63.48.0/22 but 10.63.48.4, every pod of ns=a, and
                run=access of ns=b (beta's access gets in; default's does not). It also
                isolates nginx egress: TCP 80 to 10.0.0.0/8 only. Its ipBlocks hold no IPv6.",
        policy: Some((
            "demo/seed0/3-access-nginx-complex.yaml",
            include_str!("../../demo/seed0/3-access-nginx-complex.yaml"),
        )),
    },
];

/// A pod or an outside host: a row and a column of the matrices.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Short name, the tables' row and column header.
    pub key: String,
    /// "pod alpha/nginx-1" or the host's description.
    pub what: String,
    /// `k=v,k=v`, empty for hosts.
    pub labels: String,
    /// Its IPv4 address.
    pub v4: Ipv4Addr,
    /// Its IPv6 address.
    pub v6: Ipv6Addr,
    /// Whether something listens on [`PORT`] there (nginx pods, by their declared
    /// container port; the hosts, which stand for web servers).
    pub listens: bool,
    /// The pod, or `None` for a host.
    pub pod: Option<ObjectKey>,
}

impl Member {
    /// Its address in `family`.
    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::Ipv4 => IpAddr::V4(self.v4),
            Family::Ipv6 => IpAddr::V6(self.v6),
        }
    }

    /// The reference evaluator's name for it.
    fn endpoint(&self, family: Family) -> Endpoint {
        match &self.pod {
            Some(k) => Endpoint::Pod(k.clone()),
            None => Endpoint::External(self.ip(family)),
        }
    }
}

/// Everything the demo enforces and probes.
pub(crate) struct World {
    /// The namespaces.
    pub namespaces: Vec<core::Namespace>,
    /// The pods.
    pub pods: Vec<core::Pod>,
    /// Pods first (manifest order), then the hosts.
    pub members: Vec<Member>,
    /// Each step's policy object, parsed.
    pub policies: Vec<Option<net::NetworkPolicy>>,
}

impl World {
    /// Parses the embedded manifests, so that a broken one fails before anything is built.
    pub fn load() -> Result<Self, DemoError> {
        let m = Manifest::parse(WORLD.0, WORLD.1)?;
        if !m.warnings.is_empty() {
            return Err(DemoError::World(m.warnings.join("; ")));
        }
        let mut members = Vec::new();
        for pod in &m.pods {
            members.push(pod_member(pod)?);
        }
        for (key, what, v4, v6) in HOSTS {
            members.push(Member {
                key: key.into(),
                what: what.into(),
                labels: String::new(),
                v4,
                v6,
                listens: true,
                pod: None,
            });
        }
        let mut policies = Vec::new();
        for step in &STEPS {
            policies.push(match step.policy {
                None => None,
                Some((file, text)) => {
                    let mut p = Manifest::parse(file, text)?;
                    if p.policies.len() != 1 {
                        return Err(DemoError::World(format!(
                            "{file}: expected one NetworkPolicy, found {}",
                            p.policies.len()
                        )));
                    }
                    p.policies.pop()
                }
            });
        }
        Ok(Self {
            namespaces: m.namespaces,
            pods: m.pods,
            members,
            policies,
        })
    }

    /// The policies in force after step `step` (0-based): every one applied so far.
    pub fn policies_until(&self, step: usize) -> Vec<&net::NetworkPolicy> {
        self.policies[..=step].iter().flatten().collect()
    }

    /// The reference model after step `step`.
    pub fn cluster(&self, step: usize) -> Result<Cluster, DemoError> {
        let (cluster, errors) =
            Cluster::from_k8s(&self.namespaces, &self.pods, self.policies_until(step));
        match errors.first() {
            None => Ok(cluster),
            Some(e) => Err(DemoError::World(e.to_string())),
        }
    }

    /// What the Kubernetes semantics say a probe from `src` to `dst` must show: `ok` or
    /// `rst` (allowed; `rst` when nothing listens there) or `--` (dropped).
    pub fn expected(
        &self,
        cluster: &Cluster,
        src: &Member,
        dst: &Member,
        family: Family,
    ) -> &'static str {
        let allowed = policy::allowed(
            cluster,
            &src.endpoint(family),
            &dst.endpoint(family),
            Protocol::Tcp,
            PORT,
            family,
        );
        match (allowed, dst.listens) {
            (false, _) => "--",
            (true, true) => "ok",
            (true, false) => "rst",
        }
    }

    /// The namespaces as `alpha (ns=a), beta (ns=b), default`.
    pub fn namespace_line(&self) -> String {
        self.namespaces
            .iter()
            .map(|ns| {
                let name = ns.metadata.name.clone().unwrap_or_default();
                match labels(&ns.metadata.labels) {
                    l if l.is_empty() => name,
                    l => format!("{name} ({l})"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn labels(l: &Option<BTreeMap<String, String>>) -> String {
    l.iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn pod_member(pod: &core::Pod) -> Result<Member, DemoError> {
    let meta = &pod.metadata;
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let what = format!("pod {ns}/{name}");
    let key = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(KEY_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| name.clone());
    let (mut v4, mut v6) = (None, None);
    for ip in pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
    {
        match ip.ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => v4 = Some(a),
            Ok(IpAddr::V6(a)) => v6 = Some(a),
            Err(e) => return Err(DemoError::World(format!("{what}: podIP {}: {e}", ip.ip))),
        }
    }
    let (Some(v4), Some(v6)) = (v4, v6) else {
        // The sandbox wires both families, and every cell is probed in both.
        return Err(DemoError::World(format!(
            "{what}: the demo needs an IPv4 and an IPv6 address"
        )));
    };
    let listens = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .any(|p| {
            p.container_port == i32::from(PORT) && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        });
    Ok(Member {
        key,
        what,
        labels: labels(&meta.labels),
        v4,
        v6,
        listens,
        pod: Some(ObjectKey::new(ns, name)),
    })
}
