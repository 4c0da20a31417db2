//! ipset element churn: netfence over netlink next to the `ipset` tool, in the same run
//! and the same namespace, against a `hash:ip` set that already holds 10,000 members.
//!
//! Each iteration adds then deletes the same elements, so the set is back to 10,000
//! members after every iteration. The tool runs directly in the namespace (setns before
//! exec), so its figures carry no `ip netns exec` process on top.
//!
//! `ipset/bound` measures what the kernel itself charges for the smallest messages, the
//! floor under every figure netfence can reach (issue #7): one round trip of
//! `IPSET_CMD_PROTOCOL`, which looks up no set, and one-element ADD/DEL round trips to the
//! set in the first, middle and last slot of a namespace holding 2,000 `hash:ip` sets
//! named the way netfence names them (`nf-`, 25 characters of a base64url SHA-256 and
//! `.p4`, 31 bytes). The kernel finds a set by name with a linear scan over its set slots
//! (`find_set_and_id()`, `net/netfilter/ipset/ip_set_core.c`, one `strncmp` per slot), so
//! the slot-0 and last-slot figures give the cost per slot. Messages are encoded with
//! netfence's own encoders ([`netfilter::ipset::wire`]) before the clock starts and sent
//! on a bare [`NetlinkSocket`], so a figure is one `sendmsg` and the reads up to the ACK.
//! One criterion iteration is one message (ADD and DEL alternate, so the set is empty
//! again after each pair). Every timed message also goes to
//! `target/netfence-bench/bound.jsonl` (bench `bound`, system `kernel`, scenarios
//! `ipset_protocol`, `ipset_add_slot_N`, `ipset_del_slot_N` with the extra figures `slot`
//! and `sets`), which `benches/nft.rs` shares for its `nft_*` scenarios.
//! With `--quick`, in `cargo test` mode, or with `NETFENCE_BENCH_SMOKE=1`, the namespace
//! holds 300 sets and slots 0 and 299 are measured.
//!
//! `cargo bench --bench ipset` (needs root); `-- --quick` for a fast pass; `-- bound` for
//! the kernel bounds alone (creating the 2,000 sets, untimed, took 0.3 s here: past 256,
//! every 64th create waits for an RCU grace period).

#[path = "../tests/common/mod.rs"]
mod common;
// Only `Record`, `smoke` and `write_merged` are used here; the rest serves the other benches.
#[path = "common/ns_command.rs"]
mod ns_command;
#[allow(dead_code)]
#[path = "common/record.rs"]
mod record;

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use netfilter::ipset::wire::{self, Adt, Req};
use netfilter::ipset::{CreateOptions, Exist, Family, Ipset, Member, SetType};
use netfilter::NetlinkSocket;
use record::Record;
use sha2::{Digest, Sha256};

const SET: &str = "nf-bench";

fn addr(base: u32, i: u32) -> Member {
    Member::Ip(IpAddr::V4(Ipv4Addr::from(base + i)))
}

/// Runs `ipset ARGS` inside the namespace `ns`, feeding `stdin`; panics on failure.
fn tool(ns: &File, args: &[&str], stdin: Option<&str>) {
    let mut cmd = ns_command::ns_command(ns.try_clone().expect("the namespace file"), "ipset");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running ipset");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("feeding ipset");
    }
    let out = child.wait_with_output().expect("waiting for ipset");
    assert!(
        out.status.success(),
        "ipset {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn churn(c: &mut Criterion) {
    let sb = common::Sandbox::new("bench-ips");
    let ns = File::open(format!("/run/netns/{}", sb.name)).expect("opening the namespace");
    let mut ips = Ipset::open(&sb.netns()).expect("opening ipset");
    let opts = CreateOptions {
        maxelem: Some(100_000),
        ..CreateOptions::default()
    };
    ips.create(SET, SetType::HashIp, Family::Ipv4, &opts)
        .expect("creating the set");
    let base: Vec<Member> = (1..=10_000).map(|i| addr(0x0a00_0000, i)).collect();
    ips.add(SET, &base, Exist::Fail).expect("filling the set");

    let one = [addr(0x0ac8_0000, 1)];
    let thousand: Vec<Member> = (1..=1000).map(|i| addr(0x0ac9_0000, i)).collect();
    let one_str = one[0].to_string();
    let add_script: String = thousand
        .iter()
        .map(|m| format!("add {SET} {m}\n"))
        .collect();
    let del_script: String = thousand
        .iter()
        .map(|m| format!("del {SET} {m}\n"))
        .collect();

    let mut g = c.benchmark_group("ipset_churn_10k_set");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    g.bench_function("netfence add+del 1", |b| {
        b.iter(|| {
            ips.add(SET, &one, Exist::Fail).expect("add");
            ips.del(SET, &one, Exist::Fail).expect("del");
        })
    });
    g.bench_function("ipset add+del 1 (one process each)", |b| {
        b.iter(|| {
            tool(&ns, &["add", SET, &one_str], None);
            tool(&ns, &["del", SET, &one_str], None);
        })
    });
    g.bench_function("netfence add+del 1000", |b| {
        b.iter(|| {
            ips.add(SET, &thousand, Exist::Fail).expect("add");
            ips.del(SET, &thousand, Exist::Fail).expect("del");
        })
    });
    g.bench_function("ipset restore add+del 1000 (-exist del)", |b| {
        b.iter(|| {
            tool(&ns, &["restore"], Some(&add_script));
            tool(&ns, &["restore", "-exist"], Some(&del_script));
        })
    });
    g.finish();

    // Every iteration undid itself.
    assert_eq!(ips.header(SET).expect("header").entries, 10_000);
}

// ---------------------------------------------------------------------------------------
// ipset/bound: the kernel's own cost per message

/// The bench name in the records, and the records' file (`bound.jsonl`).
const BOUND: &str = "bound";

/// Set `i`'s name in the shape of netfence's set names (`SetKey::name`,
/// crates/policy/src/compile.rs), stretched to 31 bytes (`IPSET_MAXNAMELEN` - 1): `nf-`, the
/// first 25 characters of a base64url SHA-256, and the tag `.p4`. Real names share the
/// prefix too, so the kernel's `strncmp` reads past it at every slot, as it does on a node.
/// (With the tag before the hash, `nf-p4_...`, a message to slot 1,999 took 27.0 µs
/// instead of 22.0: the shared bytes are read at every slot.)
fn set_name(i: usize) -> String {
    let hash = URL_SAFE_NO_PAD.encode(Sha256::digest(format!("bound/{i}").as_bytes()));
    format!("nf-{}.p4", &hash[..25])
}

/// A namespace holding `names.len()` empty `hash:ip` sets, set `i` in kernel slot `i`, and
/// a bare socket to time single messages on.
struct SlotLab {
    /// Dropped before the namespace goes.
    sock: NetlinkSocket,
    /// The ipset protocol the kernel agreed to.
    proto: u8,
    names: Vec<String>,
    /// Removes the namespace, with its sets, on drop (also when a panic unwinds).
    _sb: common::Sandbox,
}

impl SlotLab {
    fn new(sets: usize) -> Self {
        let sb = common::Sandbox::new("bound");
        let mut ips = Ipset::open(&sb.netns()).expect("opening ipset");
        let names: Vec<String> = (0..sets).map(set_name).collect();
        let t = Instant::now();
        for name in &names {
            ips.create(
                name,
                SetType::HashIp,
                Family::Ipv4,
                &CreateOptions::default(),
            )
            .unwrap_or_else(|e| panic!("creating set {name}: {e}"));
        }
        eprintln!(
            "ipset/bound: {sets} hash:ip sets created in {:.2} s (setup, not timed)",
            t.elapsed().as_secs_f64()
        );
        // The figures are read as "slot i"; a fresh namespace hands out slots in creation
        // order, and this makes sure of it.
        for i in [0, sets / 2, sets - 1] {
            let slot = ips.index_of(&names[i]).expect("index of a set");
            assert_eq!(usize::from(slot), i, "set {} is not in slot {i}", names[i]);
        }
        let proto = ips.protocol();
        drop(ips);
        let sock = NetlinkSocket::open(&sb.netns()).expect("opening a netlink socket");
        Self {
            sock,
            proto,
            names,
            _sb: sb,
        }
    }

    /// Sends `msg` (sequence number `seq`) and waits for the kernel's ACK: one round trip.
    fn round_trip(&mut self, msg: &[u8], seq: u32, what: &str) -> Duration {
        let t = Instant::now();
        self.sock
            .request(msg, seq, &|| what.to_owned(), |_| Ok(()))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        t.elapsed()
    }

    /// One `IPSET_CMD_PROTOCOL` round trip (a reply message, then the ACK).
    fn protocol(&mut self) -> Duration {
        let req = Req {
            seq: self.sock.next_seq(),
            proto: self.proto,
        };
        let msg = wire::encode_protocol(req);
        self.round_trip(&msg, req.seq, "IPSET_CMD_PROTOCOL")
    }

    /// One ADD or DEL of one IPv4 address to the set in `slot`.
    fn adt(&mut self, adt: Adt, slot: usize) -> Duration {
        let req = Req {
            seq: self.sock.next_seq(),
            proto: self.proto,
        };
        let member = [addr(0x0a00_0000, 1)];
        let msg = wire::encode_adt(req, adt, &self.names[slot], &member, 1, Exist::Fail)
            .expect("encoding one element");
        self.round_trip(&msg, req.seq, "one-element ADD/DEL")
    }
}

/// The record of one bound scenario, made on first use.
fn series<'a>(out: &'a mut Vec<Record>, scenario: &str, extra: &[(&str, f64)]) -> &'a mut Record {
    let i = match out.iter().position(|r| r.scenario == scenario) {
        Some(i) => i,
        None => {
            let mut r = Record::new(BOUND, scenario, "kernel", 0, 0);
            r.smoke = record::smoke();
            for (name, v) in extra {
                r.set(name, *v);
            }
            out.push(r);
            out.len() - 1
        }
    };
    &mut out[i]
}

fn bound(c: &mut Criterion) {
    let sets = if record::smoke() { 300 } else { 2_000 };
    let slots = if record::smoke() {
        vec![0, sets - 1]
    } else {
        vec![0, sets / 2, sets - 1]
    };
    // Built on first use: a filter that leaves the group out, or `--list`, costs nothing.
    let mut lab: Option<SlotLab> = None;
    let mut records: Vec<Record> = Vec::new();

    let mut g = c.benchmark_group("ipset/bound");
    // A message takes 4 to 30 µs: one second is 30k to 250k of them, every one recorded.
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1));
    g.bench_function("protocol", |b| {
        let lab = lab.get_or_insert_with(|| SlotLab::new(sets));
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = lab.protocol();
                series(&mut records, "ipset_protocol", &[("sets", sets as f64)]).push(t);
                total += t;
            }
            total
        })
    });
    for &slot in &slots {
        // One iteration is one message: ADD and DEL take turns, so criterion's figure is
        // per message, and the records keep the two commands apart.
        g.bench_function(format!("add_del_slot_{slot}"), |b| {
            let lab = lab.get_or_insert_with(|| SlotLab::new(sets));
            let extra = [("slot", slot as f64), ("sets", sets as f64)];
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for k in 0..iters {
                    let (adt, scenario) = if k % 2 == 0 {
                        (Adt::Add, format!("ipset_add_slot_{slot}"))
                    } else {
                        (Adt::Del, format!("ipset_del_slot_{slot}"))
                    };
                    let t = lab.adt(adt, slot);
                    series(&mut records, &scenario, &extra).push(t);
                    total += t;
                }
                if iters % 2 == 1 {
                    // Untimed: leave the set empty for the next call.
                    lab.adt(Adt::Del, slot);
                }
                total
            })
        });
    }
    g.finish();
    drop(lab);

    summarize_bound(&records);
    record::write_merged(BOUND, "ipset_", &records);
}

/// Medians per message and the cost per slot, to stderr.
fn summarize_bound(records: &[Record]) {
    let median = |scenario: &str| {
        records
            .iter()
            .find(|r| r.scenario == scenario)
            .and_then(Record::median)
    };
    let mut slots: Vec<usize> = records
        .iter()
        .filter_map(|r| r.get("slot"))
        .map(|s| s as usize)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    if records.is_empty() {
        return;
    }
    eprintln!("\nipset/bound: median per message (n timed)");
    for r in records {
        if let Some(m) = r.median() {
            eprintln!(
                "  {:<24} {:>9.2} µs  ({})",
                r.scenario,
                m.as_secs_f64() * 1e6,
                r.samples_ns.len()
            );
        }
    }
    if let (Some(&first), Some(&last)) = (slots.first(), slots.last()) {
        for cmd in ["add", "del"] {
            let a = median(&format!("ipset_{cmd}_slot_{first}"));
            let b = median(&format!("ipset_{cmd}_slot_{last}"));
            if let (Some(a), Some(b), true) = (a, b, last > first) {
                let per = (b.as_secs_f64() - a.as_secs_f64()) * 1e9 / (last - first) as f64;
                eprintln!("  {cmd}: {per:.1} ns per slot (slots {first} to {last})");
            }
        }
    }
    eprintln!(
        "  records: {}",
        record::dir().join(format!("{BOUND}.jsonl")).display()
    );
}

criterion_group!(benches, churn, bound);
criterion_main!(benches);
