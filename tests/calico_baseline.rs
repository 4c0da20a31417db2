//! The shared benchmark cluster generator and the Calico-like baseline
//! (`benches/common`): generation is deterministic and converts through
//! netfence's converters; the baseline is what Kubernetes NetworkPolicy means
//! (a packet walk over the rendered rules against the reference evaluator); it
//! loads with `ipset restore` / `iptables-nft-restore` and reads back identically;
//! and every delta kind, applied with `--noflush`, leaves exactly the state a full
//! render of the changed cluster loads. Kernel tests run as root, each in its own
//! network namespace.

mod common;

#[path = "../benches/common/mod.rs"]
mod bench_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use bench_common::calico::{self, Baseline, CalicoConfig, Delta, SetKind, Table};
use bench_common::cluster::{self, ClusterSpec, Generated};
use common::Sandbox;
use ipnet::IpNet;
use policy::{Cluster, Endpoint, Family, Peer, Port, Protocol};

fn small_spec() -> ClusterSpec {
    ClusterSpec {
        pods: 200,
        namespaces: 10,
        policies: 20,
        dual_stack: true,
        seed: 7,
        node: Some("node-1".into()),
    }
}

fn cfg() -> CalicoConfig {
    CalicoConfig::new(Some("node-1".into()), true)
}

// ---------------------------------------------------------------- generation

#[test]
fn generation_is_deterministic() {
    let spec = small_spec();
    let a = cluster::generate(&spec);
    let b = cluster::generate(&spec);
    assert_eq!(a, b);
    assert_eq!(a.extra_pod(3), b.extra_pod(3));
    assert_eq!(a.extra_policy(3), b.extra_policy(3));
    let other = cluster::generate(&ClusterSpec {
        seed: 8,
        ..spec.clone()
    });
    assert_ne!(a.pods, other.pods);
    assert_ne!(a.policies, other.policies);
    // Object i does not depend on the cluster's size.
    let bigger = cluster::generate(&ClusterSpec {
        pods: spec.pods + 5,
        policies: spec.policies + 5,
        ..spec.clone()
    });
    assert_eq!(bigger.pods[..spec.pods], a.pods[..]);
    assert_eq!(bigger.pods[spec.pods], a.extra_pod(0));
    assert_eq!(bigger.policies[spec.policies], a.extra_policy(0));
    let cfg = cfg();
    assert_eq!(
        calico::render(&a.cluster(), &cfg),
        calico::render(&b.cluster(), &cfg)
    );
}

#[test]
fn every_generated_object_converts() {
    for dual_stack in [false, true] {
        let g = cluster::generate(&ClusterSpec {
            pods: 2000,
            namespaces: 40,
            policies: 400,
            dual_stack,
            ..small_spec()
        });
        let (c, errors) = Cluster::from_k8s(&g.namespaces, &g.pods, &g.policies);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.namespaces().count(), 40);
        assert_eq!(c.pods().count(), 2000);
        assert_eq!(c.policies().count(), 400);
        let mut v4 = BTreeSet::new();
        let mut v6 = BTreeSet::new();
        let mut ifaces = BTreeSet::new();
        for p in c.pods() {
            assert!(v4.insert(p.ipv4.expect("every pod has IPv4")));
            assert_eq!(p.ipv6.is_some(), dual_stack);
            v6.extend(p.ipv6);
            let iface = p.host_interface.clone().expect("host interface");
            assert!(iface.starts_with("cali") && iface.len() == 15, "{iface}");
            assert!(ifaces.insert(iface));
            assert_eq!(p.node_name.as_deref(), Some("node-1"));
            for key in ["app", "tier", "team"] {
                assert!(p.labels.contains_key(key), "{key} on {}", p.name);
            }
            assert!(p.resolve_named_port("http", Protocol::Tcp).next().is_some());
        }
        // Labels: ~pods/20 apps, 3 tiers, 10 teams.
        let apps: BTreeSet<_> = c.pods().map(|p| p.labels["app"].clone()).collect();
        assert!((60..=100).contains(&apps.len()), "{} apps", apps.len());
        let tiers: BTreeSet<_> = c.pods().map(|p| p.labels["tier"].clone()).collect();
        assert_eq!(tiers.len(), 3);
        let teams: BTreeSet<_> = c.namespaces().map(|n| n.labels["team"].clone()).collect();
        assert_eq!(teams.len(), 10);
        assert!(c
            .pods()
            .any(|p| p.resolve_named_port("dns", Protocol::Udp).next() == Some(53)));

        // The deltas' objects convert, and are what they claim to be.
        for i in 0..5 {
            let extra = cluster::to_pod(&g.extra_pod(i));
            assert!(c.pod(&extra.key()).is_none());
            assert!(!v4.contains(&extra.ipv4.unwrap()));
            assert!(extra.ipv6.is_none_or(|a| !v6.contains(&a)));
            assert!(!ifaces.contains(extra.host_interface.as_ref().unwrap()));
            let np = cluster::to_policy(&g.extra_policy(i));
            assert!(c.policy(&np.key()).is_none());
        }
        for pod in g.pods.iter().step_by(97) {
            let old = cluster::to_pod(pod);
            let new = cluster::to_pod(&g.relabel_pod(pod));
            assert_eq!(old.key(), new.key());
            assert_ne!(old.labels["app"], new.labels["app"]);
            assert!(apps.contains(&new.labels["app"]));
        }
        for ns in &g.namespaces {
            let old = cluster::to_namespace(ns);
            let new = cluster::to_namespace(&g.relabel_namespace(ns));
            assert_ne!(old.labels["team"], new.labels["team"]);
        }
        for np in &g.policies {
            let old = cluster::to_policy(np);
            let new = cluster::to_policy(&g.changed_policy(np));
            assert_eq!(old.key(), new.key());
            assert_ne!(old, new);
        }
    }
}

#[test]
fn policies_have_realistic_shapes() {
    let g = cluster::generate(&ClusterSpec {
        pods: 2000,
        namespaces: 40,
        policies: 1000,
        ..small_spec()
    });
    let c = g.cluster();
    let n = c.policies().count();
    let mut count = BTreeMap::<&str, usize>::new();
    for p in c.policies() {
        let mut has = |k| *count.entry(k).or_default() += 1;
        if p.egress.is_some() {
            has("egress");
        }
        if p.ingress.as_ref().is_some_and(|r| r.is_empty()) {
            has("deny-all");
        }
        let rules = p.ingress.iter().chain(p.egress.iter()).flatten();
        let peers: Vec<&Peer> = rules.clone().flat_map(|r| &r.peers).collect();
        let ports: Vec<&Port> = rules
            .clone()
            .flat_map(|r| &r.ports)
            .map(|p| &p.port)
            .collect();
        if peers
            .iter()
            .any(|p| matches!(p, Peer::IpBlock(b) if !b.except.is_empty()))
        {
            has("ipblock-except");
        }
        if peers.iter().any(|p| {
            matches!(p, Peer::Pods { namespaces: policy::NamespaceScope::Selected(_), pods } if !pods.is_everything())
        }) {
            has("ns-and-pod-selector");
        }
        if ports.iter().any(|p| matches!(p, Port::Named(_))) {
            has("named-port");
        }
        if ports
            .iter()
            .any(|p| matches!(p, Port::Range { start, end } if start != end))
        {
            has("end-port");
        }
        if rules
            .flat_map(|r| &r.ports)
            .any(|p| p.protocol == Protocol::Udp)
        {
            has("udp");
        }
    }
    eprintln!("{n} policies: {count:?}");
    let egress = count["egress"] * 100 / n;
    assert!((12..=30).contains(&egress), "egress on {egress}%");
    for k in [
        "deny-all",
        "ipblock-except",
        "ns-and-pod-selector",
        "named-port",
        "end-port",
        "udp",
    ] {
        assert!(
            count.get(k).copied().unwrap_or(0) * 100 / n >= 5,
            "{k}: {count:?}"
        );
    }
}

// ---------------------------------------------------------- rendering (pure)

fn targets(rule: &str) -> Option<&str> {
    let w: Vec<&str> = rule.split_whitespace().collect();
    w.windows(2)
        .find(|p| p[0] == "-j" || p[0] == "-g")
        .map(|p| p[1])
}

#[test]
fn rendering_is_well_formed() {
    let g = cluster::generate(&small_spec());
    let c = g.cluster();
    let r = calico::render_state(&c, &cfg());
    let v6 = r.v6.as_ref().expect("dual stack renders IPv6");
    for (table, family) in [(&r.v4, Family::Ipv4), (v6, Family::Ipv6)] {
        for (name, rules) in &table.chains {
            assert!(name.len() <= calico::MAX_CHAIN_NAME, "{name}");
            for rule in rules {
                let t = targets(rule).unwrap_or_else(|| panic!("no target: {rule}"));
                assert!(
                    ["ACCEPT", "DROP", "RETURN", "MARK"].contains(&t)
                        || table.chains.contains_key(t),
                    "{name}: {rule}"
                );
                let w: Vec<&str> = rule.split_whitespace().collect();
                for p in w.windows(2).filter(|p| p[0] == "--match-set") {
                    let set = r
                        .sets
                        .get(p[1])
                        .unwrap_or_else(|| panic!("no set {}", p[1]));
                    assert_eq!(set.family, family, "{rule}");
                }
            }
        }
        // One endpoint chain pair per local pod, dispatch from both directions.
        for p in c.pods() {
            let iface = p.host_interface.as_ref().unwrap();
            assert!(table.chains.contains_key(&format!("cali-tw-{iface}")));
            assert!(table.chains.contains_key(&format!("cali-fw-{iface}")));
        }
        let dispatch_rules = |root: &str| {
            table
                .chains
                .iter()
                .filter(|(n, _)| n.starts_with(root))
                .flat_map(|(_, r)| r)
                .filter(|r| r.contains(" -g cali-tw-") || r.contains(" -g cali-fw-"))
                .count()
        };
        assert_eq!(dispatch_rules("cali-to-wl-dispatch"), 200);
        assert_eq!(dispatch_rules("cali-from-wl-dispatch"), 200);
    }
    for (name, set) in &r.sets {
        assert!(name.len() <= calico::MAX_SET_NAME, "{name}");
        if set.kind == SetKind::Net {
            assert!(set.members.iter().any(|m| m.ends_with("nomatch")), "{name}");
        }
    }
    assert!(r
        .sets
        .values()
        .any(|s| s.kind == SetKind::IpPort && !s.members.is_empty()));
    // A node that holds none of the pods renders no endpoints, hence no policies.
    let remote = calico::render_state(&c, &CalicoConfig::new(Some("elsewhere".into()), false));
    assert!(remote.v6.is_none());
    assert!(!remote
        .v4
        .chains
        .keys()
        .any(|n| n.starts_with("cali-tw-") || n.starts_with("cali-pi-")));
}

/// A packet's walk through a rendered table: the iptables semantics the baseline
/// uses (interfaces with `+`, `-p`, sets src/dst/`dst,dst` with hash:net `nomatch`,
/// multiport, mark, conntrack for a NEW packet, jump, goto, MARK).
struct Walk<'a> {
    table: &'a BTreeMap<String, Vec<Vec<String>>>,
    sets: &'a BTreeMap<String, calico::IpSet>,
    iif: &'a str,
    oif: &'a str,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    dport: u16,
    mark: u32,
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Accept,
    Drop,
    Continue,
}

fn words(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in rule.chars() {
        match ch {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn hex(s: &str) -> (u32, u32) {
    let (v, m) = s.split_once('/').unwrap();
    let p = |x: &str| u32::from_str_radix(x.trim_start_matches("0x"), 16).unwrap();
    (p(v), p(m))
}

fn iface_matches(pattern: &str, iface: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => iface.starts_with(prefix),
        None => pattern == iface,
    }
}

impl Walk<'_> {
    fn in_set(&self, name: &str, dirs: &str) -> bool {
        let set = &self.sets[name];
        let ip = if dirs.starts_with("src") {
            self.src
        } else {
            self.dst
        };
        match set.kind {
            SetKind::Ip => set.members.contains(&ip.to_string()),
            SetKind::IpPort => {
                let proto = format!("{:?}", self.proto).to_lowercase();
                set.members
                    .contains(&format!("{ip},{proto}:{}", self.dport))
            }
            SetKind::Net => {
                // The most specific entry decides; `nomatch` entries say no.
                let mut best: Option<(u8, bool)> = None;
                for m in &set.members {
                    let (net, nomatch) = match m.strip_suffix(" nomatch") {
                        Some(n) => (n, true),
                        None => (m.as_str(), false),
                    };
                    let net: IpNet = net.parse().unwrap();
                    if net.contains(&ip) && best.is_none_or(|(l, _)| net.prefix_len() > l) {
                        best = Some((net.prefix_len(), !nomatch));
                    }
                }
                best.is_some_and(|(_, ok)| ok)
            }
        }
    }

    fn matches(&self, w: &[String]) -> bool {
        let mut i = 0;
        while i < w.len() {
            let a = w[i].as_str();
            let next = || w[i + 1].as_str();
            match a {
                "-i" if !iface_matches(next(), self.iif) => return false,
                "-o" if !iface_matches(next(), self.oif) => return false,
                "-p" if next() != format!("{:?}", self.proto).to_lowercase() => return false,
                "--ctstate" if !next().split(',').any(|s| s == "NEW") => return false,
                "--match-set" => {
                    if !self.in_set(next(), &w[i + 2]) {
                        return false;
                    }
                    i += 1;
                }
                "--dports" => {
                    let ok = next().split(',').any(|p| match p.split_once(':') {
                        Some((s, e)) => {
                            (s.parse().unwrap()..=e.parse().unwrap()).contains(&self.dport)
                        }
                        None => p.parse::<u16>().unwrap() == self.dport,
                    });
                    if !ok {
                        return false;
                    }
                }
                "--mark" => {
                    let (v, m) = hex(next());
                    if self.mark & m != v {
                        return false;
                    }
                }
                "-j" | "-g" => return true,
                _ => {}
            }
            i += 1;
        }
        true
    }

    fn run(&mut self, chain: &str, depth: usize) -> Verdict {
        assert!(depth < 16, "loop at {chain}");
        for w in &self.table[chain] {
            if !self.matches(w) {
                continue;
            }
            let at = w.iter().position(|x| x == "-j" || x == "-g").unwrap();
            let (goto, target) = (w[at] == "-g", w[at + 1].as_str());
            match target {
                "ACCEPT" => return Verdict::Accept,
                "DROP" => return Verdict::Drop,
                "RETURN" => return Verdict::Continue,
                "MARK" => {
                    let (v, m) = hex(&w[at + 3]);
                    self.mark = (self.mark & !m) ^ v;
                }
                chain => {
                    let v = self.run(chain, depth + 1);
                    if goto || v != Verdict::Continue {
                        return v;
                    }
                }
            }
        }
        Verdict::Continue
    }
}

#[test]
fn baseline_enforces_network_policy() {
    let g = cluster::generate(&ClusterSpec {
        pods: 120,
        namespaces: 4,
        policies: 40,
        ..small_spec()
    });
    let c = g.cluster();
    let r = calico::render_state(&c, &cfg());
    let pods: Vec<_> = c.pods().step_by(3).cloned().collect();
    let externals: Vec<IpAddr> = [
        "10.9.1.1",
        "10.200.0.1",
        "169.254.169.254",
        "8.8.8.8",
        "fd00:ec2::254",
        "fd00:99::1",
        "2001:db8::1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let ports = [
        (Protocol::Tcp, 80),
        (Protocol::Tcp, 443),
        (Protocol::Tcp, 8080),
        (Protocol::Tcp, 8081),
        (Protocol::Tcp, 9090),
        (Protocol::Tcp, 5432),
        (Protocol::Tcp, 30050),
        (Protocol::Tcp, 8443),
        (Protocol::Tcp, 53),
        (Protocol::Udp, 53),
        (Protocol::Tcp, 1234),
    ];
    let mut eps: Vec<(Endpoint, Option<&str>)> = pods
        .iter()
        .map(|p| (Endpoint::Pod(p.key()), p.host_interface.as_deref()))
        .collect();
    eps.extend(externals.iter().map(|a| (Endpoint::External(*a), None)));
    let (mut probes, mut allowed_count) = (0, 0);
    for family in Family::ALL {
        let table: &Table = match family {
            Family::Ipv4 => &r.v4,
            Family::Ipv6 => r.v6.as_ref().unwrap(),
        };
        let table: BTreeMap<String, Vec<Vec<String>>> = table
            .chains
            .iter()
            .map(|(n, rules)| (n.clone(), rules.iter().map(|r| words(r)).collect()))
            .collect();
        for (src, sif) in &eps {
            for (dst, dif) in &eps {
                if src == dst || (sif.is_none() && dif.is_none()) {
                    continue;
                }
                let (Some(sa), Some(da)) = (
                    policy::address(&c, src, family),
                    policy::address(&c, dst, family),
                ) else {
                    continue;
                };
                for &(proto, port) in &ports {
                    let want = policy::allowed(&c, src, dst, proto, port, family);
                    let mut walk = Walk {
                        table: &table,
                        sets: &r.sets,
                        iif: sif.unwrap_or("eth0"),
                        oif: dif.unwrap_or("eth0"),
                        src: sa,
                        dst: da,
                        proto,
                        dport: port,
                        mark: 0,
                    };
                    // FORWARD's policy is ACCEPT.
                    let got = walk.run("FORWARD", 0) != Verdict::Drop;
                    assert_eq!(got, want, "{src} -> {dst} {proto} {port} ({family})");
                    probes += 1;
                    allowed_count += usize::from(want);
                }
            }
        }
    }
    eprintln!("{probes} probes, {allowed_count} allowed");
    assert!(allowed_count > probes / 10 && allowed_count < probes * 9 / 10);
}

// ---------------------------------------------------------------- kernel

/// Runs `steps` in the sandbox. A set's last rule reference is dropped
/// asynchronously, so a `destroy` may fail "in use" for a moment: retry those.
fn run_steps(sb: &Sandbox, steps: &[calico::Step]) {
    for s in steps {
        let mut input = s.input.to_owned();
        for attempt in 0.. {
            let out = sb.run_stdin(s.program, s.args, &input);
            if out.status.success() {
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                attempt < 100 && input.starts_with("destroy ") && err.contains("in use"),
                "{} {:?} failed: {err}\ninput:\n{input}",
                s.program,
                s.args
            );
            // Keep the destroys of sets that still exist.
            let live = sb.sh("ipset", &["list", "-n"]);
            let live: BTreeSet<&str> = live.lines().collect();
            input = input
                .lines()
                .filter(|l| live.contains(l.trim_start_matches("destroy ")))
                .map(|l| format!("{l}\n"))
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn load(tag: &str, b: &Baseline) -> Sandbox {
    let sb = Sandbox::new(tag);
    run_steps(&sb, &b.steps());
    sb
}

type Chains = BTreeMap<String, Vec<String>>;

/// `iptables-save` text as chain -> rules, comments, counters and headers aside.
fn parse_save(text: &str) -> Chains {
    let mut chains = Chains::new();
    for l in text.lines() {
        if let Some(decl) = l.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap();
            chains.entry(name.to_owned()).or_default();
        } else if let Some(rule) = l.strip_prefix("-A ") {
            let (chain, rest) = rule.split_once(' ').unwrap();
            chains
                .get_mut(chain)
                .expect("declared")
                .push(rest.to_owned());
        }
    }
    chains
}

fn kernel_tables(sb: &Sandbox) -> (Chains, Chains) {
    (
        parse_save(&sb.sh("iptables-nft-save", &[])),
        parse_save(&sb.sh("ip6tables-nft-save", &[])),
    )
}

/// `ipset save` as set -> (type and family, sorted members).
/// Set name -> (type and family, members).
type KernelSets = BTreeMap<String, (String, BTreeSet<String>)>;

fn kernel_sets(sb: &Sandbox) -> KernelSets {
    let mut sets = BTreeMap::new();
    for l in sb.sh("ipset", &["save"]).lines() {
        let w: Vec<&str> = l.splitn(3, ' ').collect();
        match w[0] {
            "create" => {
                let opts: Vec<&str> = w[2].split_whitespace().collect();
                sets.insert(
                    w[1].to_owned(),
                    (format!("{} {}", opts[0], opts[2]), BTreeSet::new()),
                );
            }
            "add" => {
                sets.get_mut(w[1]).unwrap().1.insert(w[2].to_owned());
            }
            _ => {}
        }
    }
    sets
}

fn assert_same_kernel_state(got: &Sandbox, want: &Sandbox, what: &str) {
    let (g4, g6) = kernel_tables(got);
    let (w4, w6) = kernel_tables(want);
    for (family, g, w) in [("v4", &g4, &w4), ("v6", &g6, &w6)] {
        let gk: BTreeSet<_> = g.keys().collect();
        let wk: BTreeSet<_> = w.keys().collect();
        assert_eq!(
            gk.symmetric_difference(&wk).collect::<Vec<_>>(),
            Vec::<&&String>::new(),
            "{what}: {family} chains differ"
        );
        for (chain, rules) in w {
            assert_eq!(&g[chain], rules, "{what}: {family} chain {chain}");
        }
    }
    let gs = kernel_sets(got);
    let ws = kernel_sets(want);
    assert_eq!(
        gs.keys().collect::<Vec<_>>(),
        ws.keys().collect::<Vec<_>>(),
        "{what}: sets"
    );
    for (name, set) in &ws {
        assert_eq!(&gs[name], set, "{what}: set {name}");
    }
}

#[test]
fn full_baseline_loads_and_reads_back() {
    let g = cluster::generate(&small_spec());
    let r = calico::render_state(&g.cluster(), &cfg());
    let s = r.stats();
    eprintln!("baseline at 200 pods / 20 policies: {s:?}");
    let sb = load("calico-full", &r.baseline());
    let (v4, v6) = kernel_tables(&sb);
    // What the kernel holds reads back as exactly the rendered text.
    assert_eq!(v4, r.v4.chains);
    assert_eq!(&v6, &r.v6.as_ref().unwrap().chains);
    for chain in [
        "cali-FORWARD",
        "cali-INPUT",
        "cali-wl-to-host",
        "cali-from-wl-dispatch",
        "cali-to-wl-dispatch",
    ] {
        assert!(v4.contains_key(chain) && v6.contains_key(chain), "{chain}");
    }
    for prefix in [
        "cali-tw-cali",
        "cali-fw-cali",
        "cali-pi-_",
        "cali-po-_",
        "cali-pri-kns.",
    ] {
        assert!(v4.keys().any(|c| c.starts_with(prefix)), "{prefix}");
    }
    let sets = kernel_sets(&sb);
    assert_eq!(sets.len(), r.sets.len());
    for (name, set) in &r.sets {
        let family = if set.family == Family::Ipv4 {
            "inet"
        } else {
            "inet6"
        };
        assert_eq!(
            sets[name].0,
            format!("{} {family}", set.kind.as_str()),
            "{name}"
        );
        assert_eq!(sets[name].1.len(), set.members.len(), "{name}");
    }
}

/// The cluster before, after, and the delta between them.
struct Case {
    before: Cluster,
    after: Cluster,
    delta: Delta,
}

fn generated() -> (Generated, Cluster) {
    let g = cluster::generate(&small_spec());
    let c = g.cluster();
    (g, c)
}

fn case(before: Cluster, change: impl FnOnce(&mut Cluster), delta: Delta) -> Case {
    let mut after = before.clone();
    change(&mut after);
    let full = calico::delta(&before, &after, &cfg());
    assert_eq!(
        delta, full,
        "the helper's delta is the diff of full renders"
    );
    assert!(!delta.is_empty());
    Case {
        before,
        after,
        delta,
    }
}

fn check(tag: &str, c: &Case) {
    let cfg = cfg();
    let (il, sl) = c.delta.line_counts();
    eprintln!("{tag}: {il} iptables lines, {sl} ipset lines");
    let sb = load(tag, &calico::render(&c.before, &cfg));
    run_steps(&sb, &c.delta.steps());
    let after = calico::render_state(&c.after, &cfg);
    let reference = load(&format!("{tag}-ref"), &after.baseline());
    assert_same_kernel_state(&sb, &reference, tag);
    let (v4, _) = kernel_tables(&sb);
    assert_eq!(
        v4, after.v4.chains,
        "{tag}: reads back as the rendered after-state"
    );
}

#[test]
fn delta_pod_added() {
    let (g, before) = generated();
    let pod = cluster::to_pod(&g.extra_pod(0));
    let d = calico::pod_added(&before, &pod, &cfg());
    let iface = pod.host_interface.clone().unwrap();
    assert!(d.iptables.contains(&format!(":cali-tw-{iface} - [0:0]")));
    assert!(d.iptables.contains(&format!(":cali-fw-{iface} - [0:0]")));
    assert!(d.iptables.contains(&format!("-g cali-tw-{iface}")));
    assert!(d.ipset.contains(&format!(" {}\n", pod.ipv4.unwrap())));
    assert!(!d.iptables.contains("-X "));
    let c = case(
        before,
        |c| {
            c.upsert_pod(pod);
        },
        d,
    );
    check("calico-pod-add", &c);
}

#[test]
fn delta_pod_deleted() {
    let (g, before) = generated();
    let pod = cluster::to_pod(&g.pods[7]);
    let d = calico::pod_deleted(&before, &pod.key(), &cfg());
    let iface = pod.host_interface.clone().unwrap();
    assert!(d.iptables.contains(&format!("-X cali-tw-{iface}\n")));
    assert!(d.ipset.contains(&format!(" {}\n", pod.ipv4.unwrap())));
    let c = case(
        before,
        |c| {
            c.delete_pod(&pod.key());
        },
        d,
    );
    check("calico-pod-del", &c);
}

#[test]
fn delta_pod_relabelled() {
    let (g, before) = generated();
    // A pod whose relabel changes which policies select it, so rules change too.
    let (pod, d) = g
        .pods
        .iter()
        .map(|p| cluster::to_pod(&g.relabel_pod(p)))
        .map(|p| {
            let d = calico::pod_relabelled(&before, &p, &cfg());
            (p, d)
        })
        .find(|(_, d)| !d.iptables.is_empty() && !d.ipset.is_empty())
        .expect("some relabel changes rules and sets");
    let c = case(
        before,
        |c| {
            c.upsert_pod(pod);
        },
        d,
    );
    check("calico-pod-relabel", &c);
}

#[test]
fn delta_namespace_relabelled() {
    let (g, before) = generated();
    let (ns, d) = g
        .namespaces
        .iter()
        .map(|n| cluster::to_namespace(&g.relabel_namespace(n)))
        .map(|n| {
            let d = calico::namespace_relabelled(&before, &n, &cfg());
            (n, d)
        })
        .find(|(_, d)| !d.ipset.is_empty())
        .expect("some namespace relabel changes set members");
    // Calico: only set members change.
    assert!(
        d.iptables.is_empty() && d.ip6tables.is_empty(),
        "{}",
        d.iptables
    );
    let c = case(
        before,
        |c| {
            c.upsert_namespace(ns);
        },
        d,
    );
    check("calico-ns-relabel", &c);
}

#[test]
fn delta_policy_added() {
    let (g, before) = generated();
    let np = cluster::to_policy(&g.extra_policy(1));
    let d = calico::policy_added(&before, &np, &cfg());
    assert!(d
        .iptables
        .contains(&format!(":{} - [0:0]", calico::policy_chain(&np, true))));
    let c = case(
        before,
        |c| {
            c.upsert_policy(np);
        },
        d,
    );
    check("calico-pol-add", &c);
}

#[test]
fn delta_policy_changed() {
    let (g, before) = generated();
    // The first policy that selects some pod (a policy selecting none has no chains).
    let (np, d) = g
        .policies
        .iter()
        .map(|np| cluster::to_policy(&g.changed_policy(np)))
        .map(|np| {
            let d = calico::policy_changed(&before, &np, &cfg());
            (np, d)
        })
        .find(|(_, d)| !d.iptables.is_empty())
        .expect("some policy is active");
    let c = case(
        before,
        |c| {
            c.upsert_policy(np);
        },
        d,
    );
    check("calico-pol-change", &c);
}

#[test]
fn delta_policy_deleted() {
    let (g, before) = generated();
    // A policy whose deletion leaves sets unused, so the cleanup step runs too.
    let (key, d) = g
        .policies
        .iter()
        .map(|np| cluster::to_policy(np).key())
        .map(|k| {
            let d = calico::policy_deleted(&before, &k, &cfg());
            (k, d)
        })
        .find(|(_, d)| !d.ipset_cleanup.is_empty())
        .expect("some policy owns sets alone");
    assert!(d.iptables.contains("-X cali-pi-"));
    let c = case(
        before,
        |c| {
            c.delete_policy(&key);
        },
        d,
    );
    check("calico-pol-del", &c);
}

#[test]
fn deltas_chain_in_one_namespace() {
    // Several deltas in a row, each against the state the previous one left.
    let (g, mut state) = generated();
    let cfg = cfg();
    let sb = load("calico-chain", &calico::render(&state, &cfg));
    for step in g.chained_changes() {
        let mut after = state.clone();
        step(&mut after);
        run_steps(&sb, &calico::delta(&state, &after, &cfg).steps());
        state = after;
    }
    let reference = load("calico-chain-ref", &calico::render(&state, &cfg));
    assert_same_kernel_state(&sb, &reference, "chained deltas");
}

/// Sizes and render time at benchmark scale (10k pods, 100 namespaces, 1k policies,
/// dual stack), with the size of every delta kind. Not a benchmark; run with
/// `cargo test --release --test calico_baseline -- --ignored --nocapture scale`.
#[test]
#[ignore]
fn scale_report() {
    use std::time::Instant;
    let spec = ClusterSpec {
        pods: 10_000,
        namespaces: 100,
        policies: 1_000,
        dual_stack: true,
        seed: 1,
        node: Some("node-1".into()),
    };
    let t = Instant::now();
    let g = cluster::generate(&spec);
    let generate = t.elapsed();
    let t = Instant::now();
    let c = g.cluster();
    let convert = t.elapsed();
    let cfg = cfg();
    let t = Instant::now();
    let r = calico::render_state(&c, &cfg);
    let render = t.elapsed();
    let t = Instant::now();
    let b = r.baseline();
    let text = t.elapsed();
    eprintln!("generate {generate:?}, convert {convert:?}, render {render:?}, text {text:?}");
    eprintln!("{:?}", r.stats());
    let v6 = b.ip6tables.as_deref().unwrap_or_default();
    eprintln!(
        "iptables {} lines / {} bytes, ip6tables {} lines / {} bytes, ipset {} lines / {} bytes",
        b.iptables.lines().count(),
        b.iptables.len(),
        v6.lines().count(),
        v6.len(),
        b.ipset.lines().count(),
        b.ipset.len()
    );
    let count = |prefix: &str| r.v4.chains.keys().filter(|c| c.starts_with(prefix)).count();
    eprintln!(
        "v4 chains: {} tw, {} pi, {} po, {} dispatch; sets: {} hash:ip, {} hash:net, {} hash:ip,port",
        count("cali-tw-"),
        count("cali-pi-"),
        count("cali-po-"),
        count("cali-from-wl-dispatch") + count("cali-to-wl-dispatch"),
        r.sets.values().filter(|s| s.kind == SetKind::Ip).count(),
        r.sets.values().filter(|s| s.kind == SetKind::Net).count(),
        r.sets.values().filter(|s| s.kind == SetKind::IpPort).count(),
    );
    let report = |what: &str, d: Delta| {
        let (i, s) = d.line_counts();
        eprintln!("{what}: {i} iptables lines, {s} ipset lines");
    };
    let t = Instant::now();
    let add = calico::pod_added(&c, &cluster::to_pod(&g.extra_pod(0)), &cfg);
    eprintln!("(computing one delta: {:?})", t.elapsed());
    report("pod added", add.clone());
    // Into the kernel: the full sync, then the pod's delta.
    let sb = Sandbox::new("calico-scale");
    for s in b.steps() {
        let t = Instant::now();
        run_steps(&sb, &[s]);
        eprintln!("full sync: {} {:?}: {:?}", s.program, s.args, t.elapsed());
    }
    for s in add.steps() {
        let t = Instant::now();
        run_steps(&sb, &[s]);
        eprintln!("pod added: {} {:?}: {:?}", s.program, s.args, t.elapsed());
    }
    drop(sb);
    report(
        "pod deleted",
        calico::pod_deleted(&c, &cluster::to_pod(&g.pods[42]).key(), &cfg),
    );
    report(
        "pod relabelled",
        calico::pod_relabelled(&c, &cluster::to_pod(&g.relabel_pod(&g.pods[42])), &cfg),
    );
    report(
        "namespace relabelled",
        calico::namespace_relabelled(
            &c,
            &cluster::to_namespace(&g.relabel_namespace(&g.namespaces[3])),
            &cfg,
        ),
    );
    report(
        "policy added",
        calico::policy_added(&c, &cluster::to_policy(&g.extra_policy(0)), &cfg),
    );
    report(
        "policy changed",
        calico::policy_changed(
            &c,
            &cluster::to_policy(&g.changed_policy(&g.policies[1])),
            &cfg,
        ),
    );
    report(
        "policy deleted",
        calico::policy_deleted(&c, &cluster::to_policy(&g.policies[1]).key(), &cfg),
    );
}
