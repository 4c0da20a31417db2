//! Adding one rule to a small chain: netfence (one batch, one sendmsg, handle echoed)
//! next to `iptables-nft -A` for the same rule, in the same run and namespace.
//!
//! The rules a sample added are deleted after it, in one batch, and the kernel is given
//! 50 ms to settle, untimed, for both sides alike: nf_tables defers destroying a deleted
//! rule past an RCU grace period, and the next commit waits for it (measured: an add right
//! after a delete took ~15 ms, an add alone ~20 µs). The chain holds 10 to ~50 rules.
//!
//! `nft/bound` measures the floor of any nf_tables commit: the round trip of the
//! smallest batch the kernel accepts, `NFNL_MSG_BATCH_BEGIN` then `NFNL_MSG_BATCH_END` with
//! nothing between (END asks for the ACK, which the kernel sends for batch messages since
//! 6.10, commit bf2ac490d28c; an older one would leave this waiting 10 s, then failing),
//! in a namespace whose `ip filter` table holds no chain, and in one whose
//! table holds 5,000 rules in 1,000 chains. One criterion iteration is one batch; every
//! timed batch also goes to `target/netfence-bench/bound.jsonl` (bench `bound`, system
//! `kernel`, scenarios `nft_empty_batch` and `nft_empty_batch_5000_rules`, with the extra
//! figures `rules` and `chains`), beside `benches/ipset.rs`'s `ipset_*` records.
//! `-- bound` runs it alone.

#[path = "../tests/common/mod.rs"]
mod common;
// Only `Record`, `smoke` and `write_merged` are used here; the rest serves the other benches.
#[path = "common/ns_command.rs"]
mod ns_command;
#[allow(dead_code)]
#[path = "common/record.rs"]
mod record;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use netfilter::nft::{
    self, ChainSpec, Family, Match, Op, Position, Rule, SetDir, Target, Transaction,
};
use netfilter::nl::{self, MsgWriter};
use netfilter::{Error, NetlinkSocket};
use record::Record;

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
                let st = ns_command::ns_command(
                    std::fs::File::open(format!("/run/netns/{}", sb.name)).expect("netns file"),
                    "iptables-nft",
                )
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

// ---------------------------------------------------------------------------------------
// nft/bound: the kernel's floor per batch

/// The bench name in the records, and the records' file (`bound.jsonl`).
const BOUND: &str = "bound";

/// `NFNL_MSG_BATCH_BEGIN` / `NFNL_MSG_BATCH_END` (`linux/netfilter/nfnetlink.h`).
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNL_SUBSYS_NFTABLES` (`linux/netfilter/nfnetlink.h`): the batch's `res_id`.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// BATCH_BEGIN and BATCH_END, numbered `first` and `first + 1`, nothing between. Only END
/// asks for an ACK: the kernel answers it once the (empty) commit is done, so its ACK is the
/// end of the round trip.
fn empty_batch(first: u32) -> Vec<u8> {
    let mut w = MsgWriter::with_capacity(64);
    w.begin(NFNL_MSG_BATCH_BEGIN, nl::NLM_F_REQUEST, first);
    w.nfgenmsg(libc::AF_UNSPEC as u8, 0, NFNL_SUBSYS_NFTABLES);
    w.end();
    w.begin(
        NFNL_MSG_BATCH_END,
        nl::NLM_F_REQUEST | nl::NLM_F_ACK,
        first.wrapping_add(1),
    );
    w.nfgenmsg(libc::AF_UNSPEC as u8, 0, NFNL_SUBSYS_NFTABLES);
    w.end();
    w.into_bytes()
}

/// A namespace with an `ip filter` table of `chains` chains of `per_chain` rules each,
/// loaded in one transaction, and a socket to time batches on.
struct BatchLab {
    /// Dropped before the namespace goes.
    sock: NetlinkSocket,
    /// Removes the namespace, with its ruleset, on drop (also when a panic unwinds).
    _sb: common::Sandbox,
}

impl BatchLab {
    fn new(chains: usize, per_chain: usize) -> Self {
        let sb = common::Sandbox::new("bnftb");
        let mut sock = NetlinkSocket::open(&sb.netns()).expect("socket");
        let mut tx = Transaction::new();
        tx.push(Op::AddTable {
            family: Family::Ipv4,
            table: "filter".into(),
        });
        for c in 0..chains {
            let chain = format!("nf-b{c}");
            tx.push(Op::AddChain {
                family: Family::Ipv4,
                table: "filter".into(),
                chain: ChainSpec {
                    name: chain.clone(),
                    base: None,
                },
            });
            for r in 0..per_chain {
                tx.push(Op::AddRule {
                    family: Family::Ipv4,
                    table: "filter".into(),
                    chain: chain.clone(),
                    rule: Rule {
                        protocol: Some(netfilter::nft::Neg::is(netfilter::nft::Protocol::Tcp)),
                        matches: vec![Match::Comment(format!("nf:b{c}-{r}"))],
                        ..Rule::new(Target::Accept)
                    },
                    position: Position::Append,
                });
            }
        }
        let idx = |_: &str| -> Result<u16, Error> { Ok(0) };
        let t = Instant::now();
        tx.commit(&mut sock, None, &idx)
            .expect("loading the ruleset");
        eprintln!(
            "nft/bound: {} rules in {chains} chains loaded in {:.0} ms (setup, not timed)",
            chains * per_chain,
            t.elapsed().as_secs_f64() * 1e3
        );
        // Let the kernel's deferred work after the load (RCU callbacks, the transaction's
        // cleanup) finish before the first timed batch.
        std::thread::sleep(Duration::from_millis(50));
        Self { sock, _sb: sb }
    }

    /// One empty batch, sent and acknowledged.
    fn empty_batch(&mut self) -> Duration {
        let first = self.sock.next_seqs(2);
        let msg = empty_batch(first);
        let t = Instant::now();
        self.sock
            .request(
                &msg,
                first.wrapping_add(1),
                &|| "an empty batch".into(),
                |_| Ok(()),
            )
            .expect("an empty batch");
        t.elapsed()
    }
}

fn bound(c: &mut Criterion) {
    // (criterion name, scenario, chains, rules per chain)
    let cases = [
        ("empty_batch/empty_table", "nft_empty_batch", 0, 0),
        (
            "empty_batch/5000_rules",
            "nft_empty_batch_5000_rules",
            1_000,
            5,
        ),
    ];
    let mut records: Vec<Record> = Vec::new();
    let mut g = c.benchmark_group("nft/bound");
    // A batch takes a few µs: one second is a few hundred thousand, every one recorded.
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1));
    for (name, scenario, chains, per_chain) in cases {
        // Built on first use: a filter that leaves the case out, or `--list`, costs
        // nothing. Dropped (namespace removed) when the case is done.
        let mut lab: Option<BatchLab> = None;
        let mut rec = Record::new(BOUND, scenario, "kernel", 0, 0);
        rec.smoke = record::smoke();
        rec.set("chains", chains as f64);
        rec.set("rules", (chains * per_chain) as f64);
        g.bench_function(name, |b| {
            let lab = lab.get_or_insert_with(|| BatchLab::new(chains, per_chain));
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = lab.empty_batch();
                    rec.push(t);
                    total += t;
                }
                total
            })
        });
        if !rec.samples_ns.is_empty() {
            eprintln!(
                "nft/bound: {scenario}: median {:.2} µs over {} batches",
                rec.median().unwrap_or_default().as_secs_f64() * 1e6,
                rec.samples_ns.len()
            );
            records.push(rec);
        }
    }
    g.finish();
    record::write_merged(BOUND, "nft_", &records);
}

criterion_group!(benches, bench, bound);
criterion_main!(benches);
