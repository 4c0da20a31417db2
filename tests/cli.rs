//! The `netfence` binary end to end, as an operator uses it: manifests in, kernel state
//! out, checked with the iptables and ipset tools inside a sandbox namespace.
//!
//! Every test that touches a kernel makes its own network namespace ([`Sandbox`]) and
//! passes it with `--netns`; nothing touches the host's ruleset. Needs root (and
//! `setpriv` for the not-root cases).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::Sandbox;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_netfence");

/// A finished run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().expect("the binary exited (no signal)"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    }

    /// Asserts the exit code, showing the output when it is not the one expected.
    fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code {} (want {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `netfence args...`.
fn netfence(args: &[&str]) -> Run {
    Run::from(
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running netfence"),
    )
}

/// Runs `netfence args...` with `input` on standard input.
fn netfence_stdin(args: &[&str], input: &str) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running netfence");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    Run::from(child.wait_with_output().expect("waiting for netfence"))
}

/// A fixture's path.
fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cli")
        .join(name)
        .display()
        .to_string()
}

/// Lines of iptables-save or ipset save text without the `#` comments (which carry dates).
fn uncommented(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// What the kernel of the sandbox holds, as the tools print it: the rules exactly, the
/// sets sorted and without their random hash seeds (`initval`), since a set made again
/// lists the same members in another order.
fn kernel_text(sb: &Sandbox) -> String {
    let mut sets: Vec<String> = sb
        .sh("ipset", &["save"])
        .lines()
        .map(|l| match l.find(" initval ") {
            Some(i) => l[..i].to_owned(),
            None => l.to_owned(),
        })
        .collect();
    sets.sort();
    format!(
        "{}{}{}",
        uncommented(&sb.sh("iptables-nft-save", &[])),
        uncommented(&sb.sh("ip6tables-nft-save", &[])),
        sets.join("\n")
    )
}

/// Sorted `add` lines of `ipset save` text, for the sets named with netfence's prefix.
fn set_members(ipset_save: &str) -> Vec<String> {
    let mut v: Vec<String> = ipset_save
        .lines()
        .filter(|l| l.starts_with("add nf-"))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[test]
fn help_for_every_command() {
    let top = netfence(&["--help"]).expect(0);
    for cmd in ["apply", "diff", "render", "status", "flush", "demo"] {
        assert!(
            top.stdout.contains(cmd),
            "{cmd} missing in:\n{}",
            top.stdout
        );
        let h = netfence(&[cmd, "--help"]).expect(0);
        assert!(
            h.stdout.contains(&format!("Usage: netfence {cmd}")),
            "{}",
            h.stdout
        );
        assert!(h.stdout.contains("Exit codes:"), "{}", h.stdout);
        netfence(&["help", cmd]).expect(0);
        netfence(&[cmd, "-h"]).expect(0);
    }
    assert!(top.stdout.contains("2  kernel, permission or system error"));
    let v = netfence(&["--version"]).expect(0);
    assert!(v.stdout.starts_with("netfence "), "{}", v.stdout);
}

#[test]
fn usage_errors_are_invalid_input() {
    // clap's own code for these is 2, which netfence keeps for kernel errors.
    for args in [
        &["bogus"][..],
        &["apply", "--bogus", "-f", "x"],
        &["apply"],
        &[],
        &["render", "-f", "x", "-o", "yaml"],
        &["apply", "-f", "x", "--timeout", "soon"],
    ] {
        let r = netfence(args).expect(1);
        // Empty arguments get the help text; the others an error with a hint.
        assert!(
            r.stderr.contains("error:") || r.stderr.contains("Usage: netfence"),
            "{args:?}: {}",
            r.stderr
        );
    }
}

/// A pod with only the single-stack `status.podIP` (older kubelets fill nothing else)
/// counts: it used to be skipped as having no IP.
#[test]
fn a_pod_with_only_pod_ip_counts() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
                apiVersion: v1\nkind: Pod\nmetadata: {name: old, namespace: shop, labels: {app: db}}\n\
                spec: {containers: [{name: c, image: busybox}]}\n\
                status: {phase: Running, podIP: 10.244.1.77}\n---\n\
                apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                metadata: {name: deny, namespace: shop}\nspec: {podSelector: {}}\n";
    let r = netfence_stdin(&["render", "-f", "-"], yaml).expect(0);
    assert!(!r.stderr.contains("no IP"), "{}", r.stderr);
    assert!(
        r.stdout.contains("add nf-iso-in4 10.244.1.77"),
        "{}",
        r.stdout
    );
}

#[test]
fn render_needs_no_root_and_no_kernel() {
    let file = fixture("cluster.yaml");
    // As nobody, with no capabilities at all.
    let r = Run::from(as_nobody(&["render", "-f", &file])).expect(0);
    for line in [
        "# iptables-save (IPv4)",
        "*filter",
        ":nf-i-shop.db-from-web - [0:0]",
        "-A FORWARD -m comment --comment \"nf:",
        "-A nf-i-shop.db-from-web -p tcp -m tcp --dport 5432 -m set --match-set nf-",
        ".p4 src -m comment --comment \"nf:",
        "-j MARK --set-xmark 0x10000/0x10000",
        "# ip6tables-save (IPv6)",
        "# ipset save",
        "add nf-iso-in4 10.244.1.10",
        "add nf-iso-in6 fd00:10:244:1::a",
        " 192.0.2.128/25 nomatch",
        " 10.244.1.10,tcp:8080",
    ] {
        assert!(r.stdout.contains(line), "{line:?} missing:\n{}", r.stdout);
    }
    // The pending pod and the Service are skipped, with a warning each.
    assert!(
        r.stderr.contains("Pod shop/web-1 has no IP yet; skipped"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("kind Service (shop/web) skipped"),
        "{}",
        r.stderr
    );

    // The same objects from standard input, and split over a directory of YAML, typed
    // lists and JSON, render the same.
    let text = std::fs::read_to_string(&file).expect("reading the fixture");
    let stdin = netfence_stdin(&["render", "-f", "-"], &text).expect(0);
    assert_eq!(stdin.stdout, r.stdout);
    let dir = netfence(&["render", "-f", &fixture("split")]).expect(0);
    assert_eq!(dir.stdout, r.stdout);

    // --only gives restorable text; -o json the three parts.
    let only = netfence(&["render", "-f", &file, "--only", "ipset"]).expect(0);
    assert!(only.stdout.starts_with("create nf-"), "{}", only.stdout);
    let j = netfence(&["render", "-f", &file, "-o", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("render -o json");
    assert_eq!(v["ipset"].as_str(), Some(only.stdout.as_str()));
    assert!(v["iptables"]
        .as_str()
        .is_some_and(|s| s.contains("-j nf-fw")));

    // On another node none of the pods is local: nobody is isolated.
    let other = netfence(&["render", "-f", &file, "--node", "node-2"]).expect(0);
    assert!(!other.stdout.contains("add nf-iso-in4"), "{}", other.stdout);
}

#[test]
fn apply_converges_and_is_idempotent() {
    let sb = Sandbox::new("cli-apply");
    let file = fixture("cluster.yaml");
    let first = netfence(&["apply", "-f", &file, "--netns", &sb.name]).expect(0);
    assert!(first.stdout.starts_with("applied "), "{}", first.stdout);
    assert!(first.stderr.contains("kind Service (shop/web) skipped"));

    // The kernel holds exactly what render prints (the tools print it back the same).
    let render = |only: &str| {
        uncommented(
            &netfence(&["render", "-f", &file, "--only", only])
                .expect(0)
                .stdout,
        )
    };
    assert_eq!(
        uncommented(&sb.sh("iptables-nft-save", &[])),
        render("iptables")
    );
    assert_eq!(
        uncommented(&sb.sh("ip6tables-nft-save", &[])),
        render("ip6tables")
    );
    assert_eq!(
        set_members(&sb.sh("ipset", &["save"])),
        set_members(&render("ipset"))
    );
    let members = sb.sh("ipset", &["list", "nf-iso-in4"]);
    assert!(members.contains("10.244.1.11"), "{members}");

    // A second apply changes nothing, and says so; diff and status agree.
    let before = kernel_text(&sb);
    let again = netfence(&["apply", "-f", &file, "--netns", &sb.name, "-o", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&again.stdout).expect("apply -o json");
    assert_eq!(v["operations"], 0, "{}", again.stdout);
    assert_eq!(v["changed"], false);
    assert_eq!(kernel_text(&sb), before);
    let d = netfence(&["diff", "-f", &file, "--netns", &sb.name, "--exit-code"]).expect(0);
    assert!(d.stdout.contains("nothing to change"), "{}", d.stdout);
    let s = netfence(&["status", "--netns", &sb.name, "-f", &file]).expect(0);
    assert!(
        s.stdout.contains("compared with the files: in sync"),
        "{}",
        s.stdout
    );
    assert!(s.stdout.contains("status: in sync"), "{}", s.stdout);
    assert!(s.stdout.contains("ip filter FORWARD"), "{}", s.stdout);
}

/// A set the new files drop, still looked up by a rule netfence did not write: apply
/// says so and exits 2 soon, where it used to wait out its whole timeout and exit 0
/// (and `status` then said drift).
#[test]
fn apply_says_when_a_foreign_rule_holds_a_set_it_drops() {
    let sb = Sandbox::new("cli-held");
    let v1 = fixture("cluster.yaml");
    let v2 = fixture("cluster-v2.yaml");
    netfence(&["apply", "-f", &v1, "--netns", &sb.name]).expect(0);
    let d = netfence(&["diff", "-f", &v2, "--netns", &sb.name]).expect(0);
    let dropped = d
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ipset destroy "))
        // An IPv4 set of addresses (`.p4`), looked up with `src` from iptables-nft.
        .find(|n| n.ends_with(".p4"))
        .unwrap_or_else(|| panic!("v2 drops no IPv4 hash:ip set:\n{}", d.stdout))
        .to_owned();
    // Someone else's rule that looks the set up, added (`-A`) or deleted (`-D`).
    let foreign = |op: &str| {
        let rule = [
            "FORWARD",
            "-m",
            "set",
            "--match-set",
            &dropped,
            "src",
            "-j",
            "ACCEPT",
        ];
        sb.sh("iptables-nft", &[&[op][..], &rule].concat());
    };
    foreign("-A");
    let t0 = std::time::Instant::now();
    let r = netfence(&["apply", "-f", &v2, "--netns", &sb.name, "--timeout", "20"]).expect(2);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        r.stderr.contains("1 set that netfence no longer uses")
            && r.stderr
                .contains("a rule netfence did not write still looks the set up"),
        "{}",
        r.stderr
    );
    // Everything else is in place: once the rule goes, the next apply only destroys it.
    foreign("-D");
    netfence(&["apply", "-f", &v2, "--netns", &sb.name]).expect(0);
    netfence(&["status", "--netns", &sb.name, "-f", &v2]).expect(0);
}

#[test]
fn diff_shows_the_plan_and_a_changed_file_converges() {
    let sb = Sandbox::new("cli-change");
    let v1 = fixture("cluster.yaml");
    let v2 = fixture("cluster-v2.yaml");
    netfence(&["apply", "-f", &v1, "--netns", &sb.name]).expect(0);
    let before = kernel_text(&sb);

    let d = netfence(&["diff", "-f", &v2, "--netns", &sb.name]).expect(0);
    for line in [
        "operations to converge",
        "nf_tables batch (one atomic commit",
        "--dport 5433",
        "delete chain nf-i-shop.web-from-ops",
    ] {
        assert!(d.stdout.contains(line), "{line:?} missing:\n{}", d.stdout);
    }
    // web-1 got an address: it joins the peers of db-from-web. web-0 is selected by no
    // policy any more: it leaves the ingress isolation set, after the batch.
    assert!(
        d.stdout
            .lines()
            .any(|l| l.starts_with("  ipset add nf-") && l.ends_with(".p4 10.244.1.12")),
        "{}",
        d.stdout
    );
    assert!(
        d.stdout.contains("ipset del nf-iso-in4 10.244.1.10"),
        "{}",
        d.stdout
    );
    // The rule for port 5432 goes; the plan shows it, found by its handle.
    assert!(
        d.stdout
            .lines()
            .any(|l| (l.contains("-D nf-i-shop.db-from-web")
                || l.contains("-R nf-i-shop.db-from-web"))
                && l.contains("5432")),
        "{}",
        d.stdout
    );
    netfence(&["diff", "-f", &v2, "--netns", &sb.name, "--exit-code"]).expect(3);
    let j = netfence(&["diff", "-f", &v2, "--netns", &sb.name, "-o", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("diff -o json");
    assert_eq!(v["in_sync"], false);
    assert!(v["operations"].as_u64().is_some_and(|n| n > 0));
    assert!(v["batch"].as_array().is_some_and(|b| !b.is_empty()));
    // diff changed nothing.
    assert_eq!(kernel_text(&sb), before);

    netfence(&["apply", "-f", &v2, "--netns", &sb.name]).expect(0);
    let rules = sb.sh("iptables-nft-save", &[]);
    assert!(rules.contains("--dport 5433"), "{rules}");
    assert!(!rules.contains("--dport 5432"), "{rules}");
    assert!(!rules.contains("web-from-ops"), "{rules}");
    let sets = sb.sh("ipset", &["save"]);
    assert!(
        sets.lines()
            .any(|l| l.starts_with("add nf-") && l.ends_with(".p4 10.244.1.12")),
        "{sets}"
    );
    assert!(!sets.contains("add nf-iso-in4 10.244.1.10"), "{sets}");
    // The same files render what the kernel now holds.
    let render = netfence(&["render", "-f", &v2, "--only", "iptables"]).expect(0);
    assert_eq!(uncommented(&rules), uncommented(&render.stdout));
    netfence(&["diff", "-f", &v2, "--netns", &sb.name, "--exit-code"]).expect(0);
    // And back: the first state again, with nothing left of the second.
    netfence(&["apply", "-f", &v1, "--netns", &sb.name]).expect(0);
    assert_eq!(kernel_text(&sb), before);
}

#[test]
fn status_reports_drift_after_tampering() {
    let sb = Sandbox::new("cli-status");
    let file = fixture("cluster.yaml");
    let empty = netfence(&["status", "--netns", &sb.name]).expect(0);
    assert!(empty.stdout.contains("owns nothing"), "{}", empty.stdout);
    netfence(&["apply", "-f", &file, "--netns", &sb.name]).expect(0);
    let ok = netfence(&["status", "--netns", &sb.name]).expect(0);
    assert!(ok.stdout.contains("nf-iso-in4"), "{}", ok.stdout);
    assert!(ok.stdout.contains("2 members"), "{}", ok.stdout);

    // Someone empties a set: only the files can tell.
    sb.sh("ipset", &["flush", "nf-iso-in4"]);
    netfence(&["status", "--netns", &sb.name]).expect(0);
    let s = netfence(&["status", "--netns", &sb.name, "-f", &file]).expect(3);
    assert!(
        s.stdout.contains("drifted: 2 operations to converge"),
        "{}",
        s.stdout
    );
    // Someone adds a rule to netfence's chain and deletes its jump from FORWARD.
    sb.sh(
        "iptables-nft",
        &["-A", "nf-fw", "-s", "10.9.9.9", "-j", "ACCEPT"],
    );
    sb.sh("iptables-nft", &["-D", "FORWARD", "1"]);
    let s = netfence(&["status", "--netns", &sb.name]).expect(3);
    assert!(
        s.stdout.contains("-s 10.9.9.9/32 -j ACCEPT"),
        "{}",
        s.stdout
    );
    assert!(
        s.stdout.contains("chain ip filter nf-fw is unreachable"),
        "{}",
        s.stdout
    );
    let j = netfence(&["status", "--netns", &sb.name, "-f", &file, "-o", "json"]).expect(3);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("status -o json");
    assert_eq!(v["drifted"], true);
    assert_eq!(v["strays"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["files"]["in_sync"], false);
    assert_eq!(v["netns"], sb.name.as_str());

    // apply repairs all of it.
    netfence(&["apply", "-f", &file, "--netns", &sb.name]).expect(0);
    netfence(&["status", "--netns", &sb.name, "-f", &file]).expect(0);
}

#[test]
fn flush_removes_only_what_netfence_owns() {
    let sb = Sandbox::new("cli-flush");
    let file = fixture("cluster.yaml");
    // Someone else's chain, rule and set, before and around netfence's.
    sb.sh("iptables-nft", &["-N", "KUBE-FORWARD"]);
    sb.sh(
        "iptables-nft",
        &["-A", "KUBE-FORWARD", "-s", "198.51.100.0/24", "-j", "DROP"],
    );
    sb.sh("iptables-nft", &["-A", "FORWARD", "-j", "KUBE-FORWARD"]);
    sb.sh("ipset", &["create", "kube-foreign", "hash:ip"]);
    sb.sh("ipset", &["add", "kube-foreign", "203.0.113.7"]);
    let foreign_rules = uncommented(&sb.sh("iptables-nft-save", &[]));
    let foreign_sets = sb.sh("ipset", &["save"]);

    netfence(&["apply", "-f", &file, "--netns", &sb.name]).expect(0);
    let rules = sb.sh("iptables-nft-save", &[]);
    assert!(
        rules.contains("-j nf-fw") && rules.contains("-j KUBE-FORWARD"),
        "{rules}"
    );
    // A second instance under another prefix, flushed on its own, leaves the first whole.
    let with_first = kernel_text(&sb);
    netfence(&["apply", "-f", &file, "--netns", &sb.name, "--prefix", "xf-"]).expect(0);
    assert!(sb.sh("iptables-nft-save", &[]).contains("-j xf-fw"));
    // Each looks through the other's jump at the head of FORWARD: both are in sync,
    // and neither has anything to move (they used to put their own jump back in front
    // of the other's at every plan).
    for prefix in ["nf-", "xf-"] {
        let args = ["--netns", &sb.name, "-f", &file, "--prefix", prefix];
        netfence(&[&["status"][..], &args].concat()).expect(0);
        netfence(&[&["diff", "--exit-code"][..], &args].concat()).expect(0);
    }
    netfence(&["flush", "--netns", &sb.name, "--prefix", "xf-"]).expect(0);
    assert_eq!(kernel_text(&sb), with_first);

    let f = netfence(&["flush", "--netns", &sb.name]).expect(0);
    assert!(f.stdout.starts_with("removed from"), "{}", f.stdout);
    // 4 isolation sets, an IPv4 block set, and per family a named-port set, the pods of
    // `shop`, the pods of `ops`-team namespaces (web's peer), and what each of shop's two
    // policies selects: `app=db`, and `app=web`, which is also db's peer.
    assert!(f.stdout.contains("15 sets"), "{}", f.stdout);
    // Exactly the foreign state is left. (netfence made the ip6 filter table and its
    // built-in chains, and leaves them: a table is never deleted, someone may use it.)
    assert!(!kernel_text(&sb).contains("nf-"), "{}", kernel_text(&sb));
    assert_eq!(uncommented(&sb.sh("iptables-nft-save", &[])), foreign_rules);
    assert_eq!(sb.sh("ipset", &["save"]), foreign_sets);
    let s = netfence(&["status", "--netns", &sb.name]).expect(0);
    assert!(s.stdout.contains("owns nothing"), "{}", s.stdout);
    assert!(s.stdout.contains("1 set"), "{}", s.stdout);
    let again = netfence(&["flush", "--netns", &sb.name, "-o", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&again.stdout).expect("flush -o json");
    assert_eq!(v["operations"], 0);
}

#[test]
fn a_prefix_that_could_clash_with_another_is_refused() {
    // `nf_` would share `nf-`'s rule marker, and `nf-` would own all of `nf-b-`'s names:
    // either pair would delete each other's rules.
    for prefix in ["nf_", "nf.", "nf", "nf-b-"] {
        let r = netfence(&["render", "-f", &fixture("cluster.yaml"), "--prefix", prefix]).expect(1);
        assert!(r.stderr.contains("--prefix"), "{prefix}: {}", r.stderr);
        assert!(r.stderr.contains("then one '-'"), "{prefix}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{prefix}: {}", r.stdout);
    }
}

/// netfence's user chains that jump nowhere, from `iptables-nft-save`: a jump to one can't
/// close a loop.
fn leaf_chains(sb: &Sandbox) -> Vec<String> {
    let save = sb.sh("iptables-nft-save", &[]);
    save.lines()
        .filter_map(|l| l.strip_prefix(":nf-"))
        .filter_map(|l| l.split(' ').next())
        .map(|n| format!("nf-{n}"))
        .filter(|n| {
            let from = format!("-A {n} ");
            !save
                .lines()
                .any(|l| l.starts_with(&from) && l.contains("-j nf-"))
        })
        .collect()
}

/// A jump written by hand between two netfence chains no longer keeps `flush` from
/// deleting them (it failed with EBUSY and the hint "another writer kept changing the
/// ruleset"); one from someone else's chain leaves its target emptied, and `flush` says
/// which chain and why, without a retry loop, and `status` lists it as kept, not drift.
#[test]
fn flush_deletes_chains_a_hand_written_jump_joins() {
    let sb = Sandbox::new("cli-jump");
    let file = fixture("cluster.yaml");
    netfence(&["apply", "-f", &file, "--netns", &sb.name]).expect(0);
    let leaves = leaf_chains(&sb);
    assert!(leaves.len() >= 2, "{leaves:?}");
    sb.sh("iptables-nft", &["-A", &leaves[1], "-j", &leaves[0]]);
    let f = netfence(&["flush", "--netns", &sb.name]).expect(0);
    assert!(f.stdout.starts_with("removed from"), "{}", f.stdout);
    assert!(!kernel_text(&sb).contains("nf-"), "{}", kernel_text(&sb));

    netfence(&["apply", "-f", &file, "--netns", &sb.name]).expect(0);
    let target = leaf_chains(&sb).remove(0);
    sb.sh("iptables-nft", &["-N", "DOCKER-USER"]);
    sb.sh("iptables-nft", &["-A", "DOCKER-USER", "-j", &target]);
    let f = netfence(&["flush", "--netns", &sb.name]).expect(2);
    assert!(
        f.stderr
            .contains(&format!("kept ip filter {target}, emptied"))
            && f.stderr
                .contains("a rule outside netfence still jumps to it")
            && !f.stderr.contains("kept changing"),
        "{}",
        f.stderr
    );
    let save = sb.sh("iptables-nft-save", &[]);
    assert!(!save.contains("-A nf-"), "{save}");
    // The kept chain is no drift: no apply can remove it while the jump stands, and an
    // empty chain decides nothing. `status` said it was unreachable and exited 2.
    let st = netfence(&["status", "--netns", &sb.name]).expect(0);
    assert!(
        st.stdout
            .contains(&format!("ip filter {target}, empty: a rule in DOCKER-USER"))
            && !st.stdout.contains("unreachable")
            && st.stdout.contains("status: in sync"),
        "{}",
        st.stdout
    );
    sb.sh("iptables-nft", &["-D", "DOCKER-USER", "-j", &target]);
    netfence(&["flush", "--netns", &sb.name]).expect(0);
    assert!(!kernel_text(&sb).contains("nf-"), "{}", kernel_text(&sb));
}

/// Asserts that the sandbox holds nothing of netfence's.
fn untouched(sb: &Sandbox) {
    let k = kernel_text(sb);
    assert!(
        !k.contains("nf-") && !k.contains("nf:"),
        "the kernel was changed:\n{k}"
    );
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let sb = Sandbox::new("cli-yaml");
    let file = fixture("malformed.yaml");
    let r = netfence(&["apply", "-f", &file, "--netns", &sb.name]).expect(1);
    assert!(
        r.stderr.contains(&format!("{file}: document 2 line 11")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
    untouched(&sb);
    // A file that isn't there, and an empty directory, are invalid input too.
    let r = netfence(&[
        "diff",
        "-f",
        "/nonexistent/netfence.yaml",
        "--netns",
        &sb.name,
    ])
    .expect(1);
    assert!(
        r.stderr.contains("/nonexistent/netfence.yaml: cannot read"),
        "{}",
        r.stderr
    );
}

#[test]
fn invalid_cidr_names_file_object_and_field() {
    let sb = Sandbox::new("cli-cidr");
    // Together with a valid file: one invalid object fails everything.
    let r = netfence(&[
        "apply",
        "-f",
        &fixture("cluster.yaml"),
        "-f",
        &fixture("bad-cidr.yaml"),
        "--netns",
        &sb.name,
    ])
    .expect(1);
    assert!(
        r.stderr.contains(&format!(
            "{}: NetworkPolicy shop/bad-cidr: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR \"10.0.0.0/33\"",
            fixture("bad-cidr.yaml")
        )),
        "{}",
        r.stderr
    );
    untouched(&sb);
    // The namespace shop is in both files.
    assert!(
        r.stderr
            .contains("Namespace shop: metadata.name: defined again"),
        "{}",
        r.stderr
    );
    netfence(&["render", "-f", &fixture("bad-cidr.yaml")]).expect(1);
}

#[test]
fn invalid_name_names_file_object_and_field() {
    // Caught when the file is read, with the field; not by the compiler, which named
    // neither the file nor the field and called it a netfence bug.
    let file = fixture("bad-name.yaml");
    let r = netfence(&["render", "-f", &file]).expect(1);
    assert!(
        r.stderr.contains(&format!(
            "{file}: NetworkPolicy shop/Bad Name: metadata.name: invalid name \"Bad Name\": \
             must be a lowercase RFC 1123 subdomain"
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("netfence bug"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

#[test]
fn pod_in_a_missing_namespace_is_invalid() {
    let sb = Sandbox::new("cli-orphan");
    let file = fixture("orphan-pod.yaml");
    let r = netfence(&["apply", "-f", &file, "--netns", &sb.name]).expect(1);
    assert!(
        r.stderr.contains(&format!(
            "{file}: Pod ghost/lost-0: metadata.namespace: namespace \"ghost\" is not in the files"
        )),
        "{}",
        r.stderr
    );
    untouched(&sb);
}

/// Runs `netfence args...` as user and group nobody, with no supplementary groups and so
/// no capabilities. The binary and the files named in `args` are placed in a directory
/// of their own that nobody can read: the build directory may sit under a home directory
/// nobody can't enter.
fn as_nobody(args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);

    /// Removes the directory however the run ends.
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = Dir(std::env::temp_dir().join(format!(
        "netfence-cli-nobody-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )));
    let readable = |p: &PathBuf, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    std::fs::create_dir_all(&dir.0).expect("creating a temp dir");
    readable(&dir.0, 0o755);
    let bin = dir.0.join("netfence");
    // A hard link when the temp dir is on the same file system: the binary is large.
    if std::fs::hard_link(BIN, &bin).is_err() {
        std::fs::copy(BIN, &bin).expect("copying the binary");
    }
    readable(&bin, 0o755);
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            let p = PathBuf::from(a);
            if !p.is_file() {
                return (*a).to_owned();
            }
            let copy = dir.0.join(p.file_name().expect("a file name"));
            std::fs::copy(&p, &copy).expect("copying a fixture");
            readable(&copy, 0o644);
            copy.display().to_string()
        })
        .collect();
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(&args)
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .output()
        .expect("running setpriv (util-linux)")
}

#[test]
fn not_root_is_a_kernel_error_that_says_root() {
    let sb = Sandbox::new("cli-noroot");
    let file = fixture("cluster.yaml");
    for args in [
        vec!["apply", "-f", file.as_str(), "--netns", sb.name.as_str()],
        vec!["status", "--netns", sb.name.as_str()],
        vec!["flush", "--netns", sb.name.as_str()],
    ] {
        let r = Run::from(as_nobody(&args)).expect(2);
        assert!(r.stderr.contains("run as root"), "{args:?}: {}", r.stderr);
    }
    untouched(&sb);
}

#[test]
fn missing_namespace_is_a_kernel_error() {
    let name = format!("nf-cli-missing-{}", std::process::id());
    let r = netfence(&["status", "--netns", &name]).expect(2);
    assert!(
        r.stderr
            .contains(&format!("no such network namespace {name}")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("ip netns list"), "{}", r.stderr);
    // Invalid input is reported first: nothing is opened for files that can't be used.
    netfence(&["apply", "-f", &fixture("malformed.yaml"), "--netns", &name]).expect(1);
}

#[test]
fn apply_gives_up_with_exit_2_when_the_kernel_blocks_the_plan() {
    let sb = Sandbox::new("cli-blocked");
    // A set of a type netfence does not manage sits on one of its names.
    sb.sh("ipset", &["create", "nf-iso-in4", "list:set"]);
    let file = fixture("cluster.yaml");
    let r = netfence(&["apply", "-f", &file, "--netns", &sb.name, "--timeout", "10"]).expect(2);
    assert!(
        r.stderr.contains("set nf-iso-in4") && r.stderr.contains("destroy it first"),
        "{}",
        r.stderr
    );
    netfence(&["diff", "-f", &file, "--netns", &sb.name]).expect(2);
    let s = netfence(&["status", "--netns", &sb.name]).expect(3);
    assert!(s.stdout.contains("has type list:set"), "{}", s.stdout);
    // Once the squatter is gone, apply converges.
    sb.sh("ipset", &["destroy", "nf-iso-in4"]);
    netfence(&["apply", "-f", &file, "--netns", &sb.name]).expect(0);
}
