//! ipset element churn: netfence over netlink next to the `ipset` tool, in the same run
//! and the same namespace, against a `hash:ip` set that already holds 10,000 members.
//!
//! Each iteration adds then deletes the same elements, so the set is back to 10,000
//! members after every iteration. The tool runs directly in the namespace (setns before
//! exec), so its figures carry no `ip netns exec` process on top.
//!
//! `cargo bench --bench ipset` (needs root); `-- --quick` for a fast pass.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use netfilter::ipset::{CreateOptions, Exist, Family, Ipset, Member, SetType};

const SET: &str = "nf-bench";

fn addr(base: u32, i: u32) -> Member {
    Member::Ip(IpAddr::V4(Ipv4Addr::from(base + i)))
}

/// Runs `ipset ARGS` inside the namespace `ns`, feeding `stdin`; panics on failure.
fn tool(ns: &File, args: &[&str], stdin: Option<&str>) {
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new("ipset");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe setns between fork and exec; `fd` stays open in the
    // parent for the whole benchmark.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
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

criterion_group!(benches, churn);
criterion_main!(benches);
