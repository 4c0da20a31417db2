//! Adding one rule to a small chain: netfence (one batch, one sendmsg, handle echoed)
//! next to `iptables-nft -A` for the same rule, in the same run and namespace.
//!
//! The rules a sample added are deleted after it, in one batch, and the kernel is given
//! 50 ms to settle, untimed, for both sides alike: nf_tables defers destroying a deleted
//! rule past an RCU grace period, and the next commit waits for it (measured: an add right
//! after a delete took ~15 ms, an add alone ~20 µs). The chain holds 10 to ~50 rules.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use netfilter::nft::{
    self, ChainSpec, Family, Match, Op, Position, Rule, SetDir, Target, Transaction,
};
use netfilter::{Error, NetlinkSocket};

/// A command that runs inside the namespace: setns in the child, so the baseline pays
/// for iptables-nft itself and not for `ip netns exec`.
pub fn ns_command(ns: &str, prog: &str) -> Command {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
    let mut c = Command::new(prog);
    // SAFETY: setns is async-signal-safe; the fd stays open until spawn returns.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

fn rule() -> Rule {
    Rule {
        protocol: Some(netfilter::nft::Neg::is(netfilter::nft::Protocol::Tcp)),
        matches: vec![
            Match::Comment("nf:bench".into()),
            Match::Set {
                negate: false,
                name: "nf-bench".into(),
                dirs: vec![SetDir::Src],
            },
        ],
        ..Rule::new(Target::Accept)
    }
}

fn bench(c: &mut Criterion) {
    let sb = common::Sandbox::new("bnft");
    sb.sh("ipset", &["create", "nf-bench", "hash:ip"]);
    let mut s = NetlinkSocket::open(&sb.netns()).expect("socket");
    let idx = |_: &str| -> Result<u16, Error> { Ok(0) };
    let mut tx = Transaction::new();
    tx.push(Op::AddTable {
        family: Family::Ipv4,
        table: "filter".into(),
    });
    tx.push(Op::AddChain {
        family: Family::Ipv4,
        table: "filter".into(),
        chain: ChainSpec {
            name: "nf-bench".into(),
            base: None,
        },
    });
    for _ in 0..10 {
        tx.push(Op::AddRule {
            family: Family::Ipv4,
            table: "filter".into(),
            chain: "nf-bench".into(),
            rule: Rule::new(Target::Return),
            position: Position::Append,
        });
    }
    tx.commit(&mut s, None, &idx).expect("setup");
    let line = rule().to_iptables(Family::Ipv4);
    let args: Vec<&str> = line.split(' ').map(|a| a.trim_matches('"')).collect();

    let cleanup = |s: &mut NetlinkSocket| {
        let mut del = Transaction::new();
        for r in nft::list_rules(s, Family::Ipv4, "filter", Some("nf-bench"), &|_| {
            Some("nf-bench".into())
        })
        .expect("list")
        {
            if r.rule.as_ref().and_then(|r| r.comment()) == Some("nf:bench") {
                del.push(Op::DelRule {
                    family: Family::Ipv4,
                    table: "filter".into(),
                    chain: "nf-bench".into(),
                    handle: r.handle,
                });
            }
        }
        del.commit(s, None, &idx).expect("cleanup");
        std::thread::sleep(Duration::from_millis(50));
    };

    let mut g = c.benchmark_group("add one rule to a chain of 10");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("netfence", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let mut tx = Transaction::new();
                tx.push(Op::AddRule {
                    family: Family::Ipv4,
                    table: "filter".into(),
                    chain: "nf-bench".into(),
                    rule: rule(),
                    position: Position::Append,
                });
                let t = Instant::now();
                tx.commit(&mut s, None, &idx).expect("add");
                total += t.elapsed();
            }
            cleanup(&mut s);
            total
        })
    });
    g.bench_function("iptables-nft -A (baseline)", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let t = Instant::now();
                let st = ns_command(&sb.name, "iptables-nft")
                    .args(["-A", "nf-bench"])
                    .args(&args)
                    .status()
                    .expect("iptables-nft");
                total += t.elapsed();
                assert!(st.success());
            }
            cleanup(&mut s);
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
