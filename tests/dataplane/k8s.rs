//! The cluster side of a dataplane test: Kubernetes objects, their model for the
//! evaluator, and netfence's engine programming the node through its public API.

use std::collections::BTreeMap;

use policy::k8s_openapi::api::core::v1 as core;
use policy::k8s_openapi::api::networking::v1 as net;
use policy::{Cluster, HOST_INTERFACE_ANNOTATION};
use sync::{Completion, Engine, EngineConfig};

use super::{Role, World};

/// The objects an agent would have listed.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Namespaces.
    pub namespaces: Vec<core::Namespace>,
    /// Pods.
    pub pods: Vec<core::Pod>,
    /// NetworkPolicies.
    pub policies: Vec<net::NetworkPolicy>,
}

/// "ns/name" (or "name") of an object.
fn key(meta: &policy::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        None => meta.name.clone().unwrap_or_default(),
    }
}

/// One change an agent would send.
#[derive(Clone, Debug)]
pub enum Delta {
    /// A namespace created or changed.
    UpsertNamespace(Box<core::Namespace>),
    /// A namespace removed, by name.
    DeleteNamespace(String),
    /// A pod created or changed.
    UpsertPod(Box<core::Pod>),
    /// A pod removed: namespace and name.
    DeletePod(String, String),
    /// A policy created or changed.
    UpsertPolicy(Box<net::NetworkPolicy>),
    /// A policy removed: namespace and name.
    DeletePolicy(String, String),
}

/// What changes from `old` to `new` among objects keyed by `name`: the new or changed
/// ones, and the keys of those gone.
fn changes<'a, T: PartialEq>(
    old: &'a [T],
    new: &'a [T],
    name: impl Fn(&T) -> String,
) -> (Vec<&'a T>, Vec<&'a T>) {
    let old: BTreeMap<String, &T> = old.iter().map(|o| (name(o), o)).collect();
    let new: BTreeMap<String, &T> = new.iter().map(|o| (name(o), o)).collect();
    let upserts = new
        .iter()
        .filter(|(k, o)| old.get(*k) != Some(o))
        .map(|(_, o)| *o)
        .collect();
    let deletes = old
        .iter()
        .filter(|(k, _)| !new.contains_key(*k))
        .map(|(_, o)| *o)
        .collect();
    (upserts, deletes)
}

fn ns_name(
    meta: &policy::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Objects {
    /// The cluster model, as the evaluator sees it.
    ///
    /// # Panics
    /// When an object is invalid.
    pub fn cluster(&self) -> Cluster {
        let (cluster, errors) = Cluster::from_k8s(&self.namespaces, &self.pods, &self.policies);
        assert!(errors.is_empty(), "invalid objects: {errors:?}");
        cluster
    }

    /// The same objects with each pod carrying the `netfence.io/host-interface` annotation
    /// of its veth in `world`, as a CNI plugin's agent would set it: so that netfence's
    /// anti-spoofing is on for every pod while policies are checked.
    pub fn wired(&self, world: &World) -> Objects {
        let mut out = self.clone();
        for pod in &mut out.pods {
            let model = policy::Pod::try_from(&*pod).expect("a valid pod");
            let Some(host) = world
                .hosts
                .iter()
                .find(|h| h.role == Role::Pod(model.key()))
            else {
                continue;
            };
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(
                    HOST_INTERFACE_ANNOTATION.to_owned(),
                    host.host_if().to_owned(),
                );
        }
        out
    }

    /// Every object as an upsert: a full list.
    pub fn list(&self) -> Vec<Delta> {
        Objects::default().diff(self)
    }

    /// The deltas that take an agent from `self` to `new`: upserts of what is new or
    /// changed (namespaces, then pods, then policies), then deletes of what is gone
    /// (policies, then pods, then namespaces).
    pub fn diff(&self, new: &Objects) -> Vec<Delta> {
        let (ns_up, ns_del) = changes(&self.namespaces, &new.namespaces, |o| key(&o.metadata));
        let (pod_up, pod_del) = changes(&self.pods, &new.pods, |o| key(&o.metadata));
        let (pol_up, pol_del) = changes(&self.policies, &new.policies, |o| key(&o.metadata));
        let mut v: Vec<Delta> = Vec::new();
        v.extend(
            ns_up
                .into_iter()
                .map(|o| Delta::UpsertNamespace(Box::new(o.clone()))),
        );
        v.extend(
            pod_up
                .into_iter()
                .map(|o| Delta::UpsertPod(Box::new(o.clone()))),
        );
        v.extend(
            pol_up
                .into_iter()
                .map(|o| Delta::UpsertPolicy(Box::new(o.clone()))),
        );
        v.extend(pol_del.into_iter().map(|p| {
            let (ns, name) = ns_name(&p.metadata);
            Delta::DeletePolicy(ns, name)
        }));
        v.extend(pod_del.into_iter().map(|p| {
            let (ns, name) = ns_name(&p.metadata);
            Delta::DeletePod(ns, name)
        }));
        v.extend(
            ns_del
                .into_iter()
                .map(|n| Delta::DeleteNamespace(n.metadata.name.clone().unwrap_or_default())),
        );
        v
    }
}

impl Delta {
    /// Hands the delta to the engine.
    pub fn submit(&self, engine: &Engine) -> Completion {
        match self {
            Delta::UpsertNamespace(n) => engine.upsert_namespace(n),
            Delta::DeleteNamespace(name) => engine.delete_namespace(name),
            Delta::UpsertPod(p) => engine.upsert_pod(p),
            Delta::DeletePod(ns, name) => engine.delete_pod(ns, name),
            Delta::UpsertPolicy(p) => engine.upsert_policy(p),
            Delta::DeletePolicy(ns, name) => engine.delete_policy(ns, name),
        }
    }
}

impl std::fmt::Display for Delta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delta::UpsertNamespace(n) => write!(f, "upsert namespace {}", key(&n.metadata)),
            Delta::DeleteNamespace(n) => write!(f, "delete namespace {n}"),
            Delta::UpsertPod(p) => write!(f, "upsert pod {}", key(&p.metadata)),
            Delta::DeletePod(ns, n) => write!(f, "delete pod {ns}/{n}"),
            Delta::UpsertPolicy(p) => write!(f, "upsert policy {}", key(&p.metadata)),
            Delta::DeletePolicy(ns, n) => write!(f, "delete policy {ns}/{n}"),
        }
    }
}

/// Starts netfence's engine on the world's node: every pod local, no periodic reconcile.
///
/// # Panics
/// When the engine can't start.
pub fn start_engine(world: &World) -> Engine {
    start_engine_flat(world, policy::DISPATCH_FLAT_MAX)
}

/// [`start_engine`] with namespaces bucketed in `nf-ingress` / `nf-egress` past
/// `flat_max` of them ([`policy::CompilerConfig::dispatch_flat_max`]): a test with a few
/// namespaces passes 0 to have them bucketed.
///
/// # Panics
/// When the engine can't start.
pub fn start_engine_flat(world: &World, flat_max: usize) -> Engine {
    let mut config = EngineConfig {
        netns: world.node.netns(),
        reconcile_interval: None,
        ..EngineConfig::default()
    };
    config.compiler.dispatch_flat_max = flat_max;
    // Pods' host interfaces are named p<index>-..., externals' x<index>-...: anti-spoofing
    // on for every pod, as a CNI agent would configure it.
    config.compiler.pod_interface_prefix = Some("p".into());
    Engine::start(config)
        .unwrap_or_else(|e| panic!("starting the engine on {}: {e}", world.node.name))
}

/// Submits `deltas` and waits until the kernel holds all of them.
///
/// # Panics
/// When the engine rejects or fails one.
pub fn apply(engine: &Engine, deltas: &[Delta]) {
    let pending: Vec<(String, Completion)> = deltas
        .iter()
        .map(|d| (d.to_string(), d.submit(engine)))
        .collect();
    for (what, c) in pending {
        c.wait().unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// Feeds a full list, opens the gate ([`Engine::ready`]) and waits until the kernel holds
/// it all.
///
/// # Panics
/// When the engine rejects or fails something.
pub fn converge(engine: &Engine, objects: &Objects) {
    let pending: Vec<(String, Completion)> = objects
        .list()
        .iter()
        .map(|d| (d.to_string(), d.submit(engine)))
        .collect();
    engine
        .ready()
        .wait()
        .unwrap_or_else(|e| panic!("first convergence: {e}"));
    for (what, c) in pending {
        c.wait().unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}
