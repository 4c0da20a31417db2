//! The policy compiler alone (pure CPU, no kernel): a pod delta (add then delete, relabel)
//! recompiled incrementally at 10,000 pods with 1,000 and with 100 policies, next to the
//! full compile of the 1,000-policy cluster as the baseline, measured in the same run;
//! and a burst of 1,000 mixed deltas (the mix of `benches/scenarios.rs`'s burst) at
//! 1,000 pods / 100 and 1,000 policies, 10,000 / 100 and 10,000 / 1,000: the compiler's
//! share of that scenario; and the planning of that burst's commit (`plan/burst_*`,
//! `ruleset::plan_scoped` over the burst's scope, as the sync worker plans it), the
//! planner's share; and the conversion of that burst's API objects (`convert/burst_*`),
//! the share paid on the caller's thread.
//!
//! The clusters come from the shared generator (`benches/common/cluster.rs`), the one
//! `benches/sync.rs` feeds the engine, and the compiler is configured as the sync bench
//! configures it: every pod on this node (the worst case for set sizes) and anti-spoofing
//! on, fed by the pods' `netfence.io/host-interface` annotations. The pods added and
//! deleted are the generator's extra pods, each new to the cluster.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use std::time::{Duration, Instant};

use common::cluster;
use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use netfilter::ipset;
use policy::{Compiler, CompilerConfig, Family, Namespace, ObjectKey, Pod, Policy};
use ruleset::SetOp;

const PODS: usize = 10_000;
/// Extra pods cycled through by the add/delete bench, so that one iteration does not
/// always hit the same groups.
const EXTRA: usize = 64;

struct Setup {
    gen: cluster::Generated,
    config: CompilerConfig,
    compiler: Compiler,
    extra: Vec<Arc<Pod>>,
}

impl Setup {
    fn new(pods: usize, policies: usize) -> Self {
        let gen = cluster::generate(&cluster::ClusterSpec::new(pods, pods / 100, policies));
        let config = CompilerConfig {
            families: if gen.spec.dual_stack {
                Family::ALL.to_vec()
            } else {
                vec![Family::Ipv4]
            },
            node: gen.spec.node.clone(),
            // The generator names host interfaces as Calico does.
            pod_interface_prefix: Some("cali".into()),
            ..CompilerConfig::default()
        };
        let mut compiler = Compiler::new(config.clone()).expect("valid config");
        let rs = compiler.compile(&gen.cluster()).expect("compiles");
        eprintln!(
            "{pods} pods, {policies} policies: {} rules, {} sets",
            rs.owned_rule_count(),
            rs.sets().len()
        );
        compiler.take_scope();
        let extra = (0..EXTRA)
            .map(|i| Arc::new(cluster::to_pod(&gen.extra_pod(i))))
            .collect();
        Setup {
            gen,
            config,
            compiler,
            extra,
        }
    }

    fn label(&self) -> String {
        format!("{}p_{}np", self.gen.spec.pods, self.gen.spec.policies)
    }

    fn add_then_delete(&mut self, c: &mut Criterion) {
        let name = format!("pod_add_then_delete_{}", self.label());
        let mut i = 0;
        c.bench_function(&name, |b| {
            b.iter(|| {
                let pod = &self.extra[i % EXTRA];
                i += 1;
                self.compiler.upsert_pod(pod.clone());
                let added = self.compiler.take_scope();
                self.compiler.delete_pod(&pod.key());
                (added, self.compiler.take_scope())
            })
        });
    }

    fn relabel(&mut self, c: &mut Criterion) {
        let name = format!("pod_relabel_{}", self.label());
        let k = self.gen.pods.len() / 2 + 42;
        let before = Arc::new(cluster::to_pod(&self.gen.pods[k]));
        let after = Arc::new(cluster::to_pod(&self.gen.relabel_pod(&self.gen.pods[k])));
        let mut flip = false;
        c.bench_function(&name, |b| {
            b.iter(|| {
                flip = !flip;
                let pod = if flip { &after } else { &before };
                self.compiler.upsert_pod(pod.clone());
                self.compiler.take_scope()
            })
        });
        // Leave the cluster as generated for whatever runs next.
        self.compiler.upsert_pod(before);
        self.compiler.take_scope();
    }

    fn full_compile(&self, c: &mut Criterion) {
        let cl = self.gen.cluster();
        let mut g = c.benchmark_group("compile");
        g.sample_size(10);
        g.bench_function(format!("full_compile_baseline_{}", self.label()), |b| {
            b.iter(|| {
                let mut k = Compiler::new(self.config.clone()).expect("valid config");
                k.compile(&cl).expect("compiles").owned_rule_count()
            })
        });
        g.finish();
    }

    /// A burst of [`BURST`] deltas on distinct objects, shuffled, as `burst()` in
    /// `benches/scenarios.rs` builds it: 5 namespaces relabelled, 50 policies added, 100
    /// changed, 50 deleted, 200 pods relabelled, 150 deleted, and new pods for the rest.
    /// Returns it with its inverse, which puts the cluster back, as the API objects an
    /// agent hands the engine.
    fn burst_objects(&self) -> (Vec<Object>, Vec<Object>) {
        let g = &self.gen;
        let pick = |k: usize, of: usize, n: usize| ((2 * k + 1) * n / (2 * of)).min(n - 1);
        let (mut fwd, mut inv) = (Vec::new(), Vec::new());
        fn key(m: &ObjectMeta) -> ObjectKey {
            ObjectKey::new(
                m.namespace.clone().expect("namespace"),
                m.name.clone().expect("name"),
            )
        }
        let namespaces = 5.min(g.namespaces.len() / 2);
        for i in 0..namespaces {
            let n = &g.namespaces[pick(i, namespaces, g.namespaces.len())];
            fwd.push(Object::Namespace(g.relabel_namespace(n)));
            inv.push(Object::Namespace(n.clone()));
        }
        for i in 0..50 {
            // Past the extra policies any other bench uses.
            let np = g.extra_policy(1_000 + i);
            inv.push(Object::DeletePolicy(key(&np.metadata)));
            fwd.push(Object::Policy(np));
        }
        let half = g.policies.len() / 2;
        let changed = 100.min(g.policies.len() / 4);
        for i in 0..changed {
            let np = &g.policies[pick(i, changed, half)];
            fwd.push(Object::Policy(g.changed_policy(np)));
            inv.push(Object::Policy(np.clone()));
        }
        let deleted = 50.min(g.policies.len() / 4);
        for i in 0..deleted {
            let np = &g.policies[half + pick(i, deleted, g.policies.len() - half)];
            fwd.push(Object::DeletePolicy(key(&np.metadata)));
            inv.push(Object::Policy(np.clone()));
        }
        let half = g.pods.len() / 2;
        for i in 0..200 {
            let p = &g.pods[pick(i, 200, half)];
            fwd.push(Object::Pod(Box::new(g.relabel_pod(p))));
            inv.push(Object::Pod(Box::new(p.clone())));
        }
        for i in 0..150 {
            let p = &g.pods[half + pick(i, 150, g.pods.len() - half)];
            fwd.push(Object::DeletePod(key(&p.metadata)));
            inv.push(Object::Pod(Box::new(p.clone())));
        }
        for i in 0..BURST - fwd.len() {
            // Past the extra pods the pod benches cycle through.
            let p = g.extra_pod(EXTRA + i);
            inv.push(Object::DeletePod(key(&p.metadata)));
            fwd.push(Object::Pod(Box::new(p)));
        }
        let mut rng = cluster::Rng::new(0x0062_7572_7374);
        for i in (1..fwd.len()).rev() {
            fwd.swap(i, rng.below(i + 1));
        }
        (fwd, inv)
    }

    /// The burst's objects converted as the engine converts them, on the caller's thread
    /// (`convert/burst_*`): validation and conversion of every object the burst hands
    /// over. On two cores that caller shares a CPU with the sync thread while it
    /// submits, so this cost adds to the burst's latency rather than overlapping it.
    fn convert(&self, c: &mut Criterion, objects: &[Object]) {
        let mut g = c.benchmark_group("convert");
        g.sample_size(20);
        g.bench_function(format!("burst_{}", self.label()), |b| {
            b.iter(|| objects.iter().map(Object::convert).collect::<Vec<_>>())
        });
        g.finish();
    }

    /// The burst applied as the sync worker applies one: every delta with dispatch
    /// held, then `settle()`, `take_scope()` and `ruleset()`. Only the forward burst is
    /// timed; its inverse (untimed) restores the cluster for the next iteration.
    fn burst(&mut self, c: &mut Criterion) {
        let (fwd, inv) = self.burst_objects();
        self.convert(c, &fwd);
        let fwd: Vec<Delta> = fwd.iter().map(Object::convert).collect();
        let inv: Vec<Delta> = inv.iter().map(Object::convert).collect();
        let name = format!("burst_{}", self.label());
        self.burst_plan(c, &name, &fwd, &inv);
        let mut g = c.benchmark_group("compile");
        g.sample_size(20);
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let scope = apply(&mut self.compiler, &fwd);
                    spent += t0.elapsed();
                    drop(scope);
                    apply(&mut self.compiler, &inv);
                }
                spent
            })
        });
        g.finish();
    }
}

impl Setup {
    /// Prints what the burst asks of the kernel when it lands in one commit, as the sync
    /// worker plans it (`plan_scoped` over the compiler's scope): the message counts that,
    /// times the kernel's own cost per message (`ipset/bound`, `nft/bound`), bound the
    /// scenario from below whatever netfence's own CPU time. Then times that plan
    /// (`plan/burst_*`): the planner's share of the scenario, after the compiler's.
    fn burst_plan(&mut self, c: &mut Criterion, name: &str, fwd: &[Delta], inv: &[Delta]) {
        // The state as the kernel would hold it, with the rule handles a plan needs.
        let desired = self.compiler.ruleset();
        let empty = ruleset::Ruleset::new(desired.prefix()).expect("valid prefix");
        let before = ruleset::plan(&empty, desired)
            .and_then(|p| p.apply_in_memory(&empty))
            .expect("applies in memory");
        let scope = apply(&mut self.compiler, fwd);
        let p = ruleset::plan_scoped(&before, self.compiler.ruleset(), &scope).expect("plans");
        let (mut creates, mut destroys, mut messages, mut elements) = (0, 0, 0, 0);
        let mut touched = std::collections::BTreeSet::new();
        for op in p.before.iter().chain(&p.after) {
            match op {
                SetOp::Create { .. } => creates += 1,
                SetOp::Destroy { .. } => destroys += 1,
                // Only a set whose capacity changes is swapped, and these keep theirs.
                SetOp::Swap { .. } => panic!("a swap in the burst's plan: {op}"),
                SetOp::Add { name, members } | SetOp::Del { name, members } => {
                    // One message per ADT nest: 64 KiB, thousands of members.
                    messages += ipset::wire::plan_adt(members).len();
                    elements += members.len();
                    touched.insert(name.as_str());
                }
            }
        }
        eprintln!(
            "{name}: one commit is {messages} ipset member messages ({elements} elements, \
             {} of {} sets), {creates} creates, {destroys} destroys, and an nf_tables batch \
             of {} operations",
            touched.len(),
            self.compiler.ruleset().sets().len(),
            p.batch.len()
        );
        let mut g = c.benchmark_group("plan");
        g.sample_size(20);
        g.bench_function(name, |b| {
            b.iter(|| ruleset::plan_scoped(&before, self.compiler.ruleset(), &scope))
        });
        g.finish();
        apply(&mut self.compiler, inv);
    }
}

/// Deltas as an agent hands them to the engine.
enum Object {
    Namespace(k8s_openapi::api::core::v1::Namespace),
    Pod(Box<k8s_openapi::api::core::v1::Pod>),
    DeletePod(ObjectKey),
    Policy(NetworkPolicy),
    DeletePolicy(ObjectKey),
}

impl Object {
    /// The delta the engine passes to the compiler, converted as `Engine::upsert_*`
    /// converts it.
    fn convert(&self) -> Delta {
        match self {
            Object::Namespace(n) => Delta::Namespace(Arc::new(cluster::to_namespace(n))),
            Object::Pod(p) => Delta::Pod(Arc::new(cluster::to_pod(p))),
            Object::DeletePod(k) => {
                checked(policy::Kind::Pod, k);
                Delta::DeletePod(k.clone())
            }
            Object::Policy(np) => Delta::Policy(Arc::new(cluster::to_policy(np))),
            Object::DeletePolicy(k) => {
                checked(policy::Kind::NetworkPolicy, k);
                Delta::DeletePolicy(k.clone())
            }
        }
    }
}

/// Checks a delete's key as `Engine::delete_*` does.
fn checked(kind: policy::Kind, k: &ObjectKey) {
    policy::convert::check_key(kind, Some(&k.namespace), &k.name).expect("a valid key");
}

/// Deltas as the engine hands them to the compiler.
enum Delta {
    Namespace(Arc<Namespace>),
    Pod(Arc<Pod>),
    DeletePod(ObjectKey),
    Policy(Arc<Policy>),
    DeletePolicy(ObjectKey),
}

/// Deltas in a burst, as in `benches/scenarios.rs`.
const BURST: usize = 1_000;

/// Applies `deltas` and takes the scope, reading the ruleset as the worker does: with
/// dispatch held for the burst.
fn apply(c: &mut Compiler, deltas: &[Delta]) -> ruleset::Scope {
    c.hold_dispatch();
    for d in deltas {
        match d {
            Delta::Namespace(n) => c.upsert_namespace(n.clone()),
            Delta::Pod(p) => c.upsert_pod(p.clone()),
            Delta::DeletePod(k) => c.delete_pod(k),
            Delta::Policy(p) => c.upsert_policy(p.clone()).expect("compiles"),
            Delta::DeletePolicy(k) => c.delete_policy(k).expect("compiles"),
        }
    }
    c.settle().expect("the burst settles");
    let scope = c.take_scope();
    std::hint::black_box(c.ruleset());
    scope
}

fn bench(c: &mut Criterion) {
    let mut big = Setup::new(PODS, 1_000);
    big.full_compile(c);
    big.add_then_delete(c);
    big.relabel(c);
    big.burst(c);
    drop(big);
    let mut small = Setup::new(PODS, 100);
    small.add_then_delete(c);
    small.relabel(c);
    small.burst(c);
    drop(small);
    Setup::new(1_000, 100).burst(c);
    Setup::new(1_000, 1_000).burst(c);
}

criterion_group!(benches, bench);
criterion_main!(benches);
