//! Planning one changed rule in a ruleset of 10,000 chains and 110,000 rules (10 rules a
//! chain, and a dispatch chain of 10,000 jumps), with 1,000 sets of 20 members.
//!
//! - `scoped`: what the sync layer runs: it knows which chain changed, so the planner
//!   looks at that chain alone.
//! - `full` (the baseline, measured in the same run): the planner compares everything, as
//!   a reconcile after a full dump does.
//!
//! Before the timings, the bench prints how many heap allocations one plan makes, counted
//! by a wrapping global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use ruleset::{
    plan, plan_scoped, BaseChain, Family, Hook, IpSet, Match, Member, Neg, Polarity, Policy,
    PortRange, Protocol, Rule, Ruleset, Scope, SetDir, SetType, TableId, Target,
};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CHAINS: usize = 10_000;
const RULES: usize = 10;
const SETS: usize = 1_000;

fn build(changed: Option<(usize, usize)>) -> Ruleset {
    let t = TableId::filter(Family::Ipv4);
    let mut rs = Ruleset::default();
    rs.add_chain(
        &t,
        "FORWARD",
        Some(BaseChain {
            hook: Hook::Forward,
            priority: 0,
            policy: Policy::Accept,
        }),
    )
    .unwrap();
    rs.add_chain(&t, "nf-fw", None).unwrap();
    rs.push_rule(&t, "FORWARD", Rule::new(Target::Jump("nf-fw".into())))
        .unwrap();
    for s in 0..SETS {
        let mut set = IpSet::new(Family::Ipv4, SetType::HashIp, Polarity::Grants);
        for m in 0..20 {
            let a = format!("10.{}.{}.{}", s / 250, s % 250, m + 1);
            set.insert(Member::Ip(a.parse().unwrap())).unwrap();
        }
        rs.add_set(&format!("nf-s{s}"), set).unwrap();
    }
    for c in 0..CHAINS {
        let name = format!("nf-p{c}");
        rs.add_chain(&t, &name, None).unwrap();
        let mut j = Rule::new(Target::Jump(name.clone()));
        j.matches.push(Match::Set {
            negate: false,
            name: format!("nf-s{}", c % SETS),
            dirs: vec![SetDir::Dst],
        });
        rs.push_rule(&t, "nf-fw", j).unwrap();
        for r in 0..RULES {
            let mut rule = Rule::new(Target::Accept);
            rule.protocol = Some(Neg::is(Protocol::Tcp));
            let port = if changed == Some((c, r)) {
                9999
            } else {
                1000 + r as u16
            };
            rule.matches.push(Match::Set {
                negate: false,
                name: format!("nf-s{}", (c + r) % SETS),
                dirs: vec![SetDir::Src],
            });
            rule.matches.push(Match::Ports {
                sport: None,
                dport: Some(Neg::is(PortRange::single(port))),
            });
            rs.push_rule(&t, &name, rule).unwrap();
        }
    }
    rs
}

fn bench(c: &mut Criterion) {
    let t = TableId::filter(Family::Ipv4);
    // The current state as the kernel would report it: every rule with a handle.
    let desired = build(None);
    let current = plan(&Ruleset::default(), &desired)
        .unwrap()
        .apply_in_memory(&Ruleset::default())
        .unwrap();
    let changed = build(Some((5_000, 3)));
    let mut scope = Scope::default();
    scope.chain(&t, "nf-p5000");

    for (what, f) in [
        (
            "scoped",
            Box::new(|| plan_scoped(&current, &changed, &scope).unwrap())
                as Box<dyn Fn() -> ruleset::Plan>,
        ),
        ("full", Box::new(|| plan(&current, &changed).unwrap())),
    ] {
        let before = ALLOCS.load(Ordering::Relaxed);
        let p = f();
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(p.cost(), 1, "one replace");
        eprintln!(
            "plan/{what}: {allocs} heap allocations for a one-rule change in {} rules",
            current.owned_rule_count()
        );
    }

    let mut g = c.benchmark_group("plan_one_rule_change_110k_rules");
    g.bench_function("scoped", |b| {
        b.iter(|| plan_scoped(&current, &changed, &scope).unwrap())
    });
    g.bench_function("full_baseline", |b| {
        b.iter(|| plan(&current, &changed).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
