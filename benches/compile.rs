//! The policy compiler alone (pure CPU, no kernel): a pod delta (add then delete, relabel)
//! recompiled incrementally at 10,000 pods with 1,000 and with 100 policies, next to the
//! full compile of the 1,000-policy cluster as the baseline, measured in the same run.
//!
//! The clusters come from the shared generator (`benches/common/cluster.rs`), the one
//! `benches/sync.rs` feeds the engine, and the compiler is configured as the sync bench
//! configures it: every pod on this node (the worst case for set sizes) and anti-spoofing
//! on, fed by the pods' `netfence.io/host-interface` annotations. The pods added and
//! deleted are the generator's extra pods, each new to the cluster.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use common::cluster;
use criterion::{criterion_group, criterion_main, Criterion};
use policy::{Compiler, CompilerConfig, Family, Pod};

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
}

fn bench(c: &mut Criterion) {
    let mut big = Setup::new(PODS, 1_000);
    big.full_compile(c);
    big.add_then_delete(c);
    big.relabel(c);
    drop(big);
    let mut small = Setup::new(PODS, 100);
    small.add_then_delete(c);
    small.relabel(c);
}

criterion_group!(benches, bench);
criterion_main!(benches);
