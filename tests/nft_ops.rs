//! nf_tables operations on a real kernel: positions, replace and delete by handle,
//! generation conflicts, error mapping and atomicity, coexistence with iptables-nft
//! writers, foreign rules kept opaque, and a batch of 100k rules.

mod common;

use common::Sandbox;
use netfilter::nft::{
    self, BaseChain, ChainSpec, Family, Hook, Match, Op, Policy, Position, Rule, RuleRef, Target,
    Transaction,
};
use netfilter::{Error, NetlinkSocket};

const T: &str = "filter";
const V4: Family = Family::Ipv4;

fn no_sets(name: &str) -> Result<u16, Error> {
    Err(Error::Invalid {
        object: format!("set {name}"),
        reason: "no sets in this test".into(),
    })
}

fn no_names(_: u16) -> Option<String> {
    None
}

fn tagged(tag: &str) -> Rule {
    Rule {
        matches: vec![Match::Comment(tag.into())],
        ..Rule::new(Target::Accept)
    }
}

fn add_rule(chain: &str, tag: &str, position: Position) -> Op {
    Op::AddRule {
        family: V4,
        table: T.into(),
        chain: chain.into(),
        rule: tagged(tag),
        position,
    }
}

fn base(tx: &mut Transaction, chain: &str) {
    tx.push(Op::AddTable {
        family: V4,
        table: T.into(),
    });
    tx.push(Op::AddChain {
        family: V4,
        table: T.into(),
        chain: ChainSpec {
            name: chain.into(),
            base: None,
        },
    });
}

/// The comments of a chain's rules, in order (`?` for undecoded rules).
fn tags(sock: &mut NetlinkSocket, chain: &str) -> Vec<String> {
    nft::list_rules(sock, V4, T, Some(chain), &no_names)
        .unwrap()
        .iter()
        .map(|r| {
            r.rule
                .as_ref()
                .and_then(|r| r.comment())
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

fn handle_of(sock: &mut NetlinkSocket, chain: &str, tag: &str) -> u64 {
    nft::list_rules(sock, V4, T, Some(chain), &no_names)
        .unwrap()
        .into_iter()
        .find(|r| r.rule.as_ref().and_then(|r| r.comment()) == Some(tag))
        .unwrap()
        .handle
}

#[test]
fn positions_replace_and_delete() {
    let sb = Sandbox::new("pos");
    let mut s = NetlinkSocket::open(&sb.netns()).unwrap();
    let mut tx = Transaction::new();
    base(&mut tx, "nf-c");
    let a = tx.push(add_rule("nf-c", "a", Position::Append));
    tx.push(add_rule("nf-c", "b", Position::Append));
    tx.push(add_rule("nf-c", "p", Position::Prepend));
    // Placed relative to a rule of the same batch, through NFTA_RULE_POSITION_ID.
    tx.push(add_rule("nf-c", "a2", Position::After(RuleRef::New(a))));
    tx.push(add_rule("nf-c", "a0", Position::Before(RuleRef::New(a))));
    let done = tx.commit(&mut s, None, &no_sets).unwrap();
    assert_eq!(tags(&mut s, "nf-c"), ["p", "a0", "a", "a2", "b"]);
    let ha = done.handles[a].unwrap();
    assert_eq!(ha, handle_of(&mut s, "nf-c", "a"));

    // Relative to kernel handles, replace in place, delete.
    let hb = handle_of(&mut s, "nf-c", "b");
    let mut tx = Transaction::new();
    tx.push(add_rule("nf-c", "x", Position::Before(RuleRef::Handle(hb))));
    tx.push(add_rule("nf-c", "y", Position::After(RuleRef::Handle(hb))));
    tx.push(Op::ReplaceRule {
        family: V4,
        table: T.into(),
        chain: "nf-c".into(),
        handle: ha,
        rule: tagged("A"),
    });
    tx.push(Op::DelRule {
        family: V4,
        table: T.into(),
        chain: "nf-c".into(),
        handle: handle_of(&mut s, "nf-c", "p"),
    });
    let done = tx.commit(&mut s, None, &no_sets).unwrap();
    assert_eq!(tags(&mut s, "nf-c"), ["a0", "A", "a2", "x", "b", "y"]);
    // A replaced rule keeps its place and its handle.
    assert_eq!(done.handles[2], Some(ha));
    assert_eq!(done.handles[2], Some(handle_of(&mut s, "nf-c", "A")));
    assert!(done.handles[3].is_none());
    // Only the first and last new rules were echoed; the handle of each one between
    // follows from them, and is the kernel's.
    for (i, tag) in [(0, "x"), (1, "y")] {
        assert_eq!(done.handles[i], Some(handle_of(&mut s, "nf-c", tag)));
    }
    assert!(!done.incomplete);

    // New chains and rules interleaved: every derived handle is the one the kernel gave.
    let mut tx = Transaction::new();
    let mut added = Vec::new();
    for c in 0..4 {
        let chain = format!("nf-n{c}");
        tx.push(Op::AddChain {
            family: V4,
            table: T.into(),
            chain: ChainSpec {
                name: chain.clone(),
                base: None,
            },
        });
        for r in 0..3 {
            let tag = format!("n{c}-{r}");
            added.push((
                tx.push(add_rule(&chain, &tag, Position::Append)),
                chain.clone(),
                tag,
            ));
        }
    }
    let done = tx.commit(&mut s, None, &no_sets).unwrap();
    assert!(!done.incomplete);
    for (i, chain, tag) in added {
        assert_eq!(
            done.handles[i],
            Some(handle_of(&mut s, &chain, &tag)),
            "{tag}"
        );
    }

    // A chain the batch "creates" already exists and takes no handle: the echoes of the
    // first and last new rules then disagree with the count, and the rule between them
    // is left without a handle rather than given a wrong one.
    let mut tx = Transaction::new();
    let first = tx.push(add_rule("nf-c", "f", Position::Append));
    tx.push(Op::AddChain {
        family: V4,
        table: T.into(),
        chain: ChainSpec {
            name: "nf-n0".into(),
            base: None,
        },
    });
    let mid = tx.push(add_rule("nf-c", "m", Position::Append));
    let last = tx.push(add_rule("nf-c", "l", Position::Append));
    let done = tx.commit(&mut s, None, &no_sets).unwrap();
    assert!(done.incomplete);
    assert_eq!(done.handles[first], Some(handle_of(&mut s, "nf-c", "f")));
    assert_eq!(done.handles[mid], None);
    assert_eq!(done.handles[last], Some(handle_of(&mut s, "nf-c", "l")));
}

#[test]
fn generation_conflict_is_retryable_and_applies_nothing() {
    let sb = Sandbox::new("gen");
    let mut s = NetlinkSocket::open(&sb.netns()).unwrap();
    let mut tx = Transaction::new();
    base(&mut tx, "nf-g");
    tx.commit(&mut s, None, &no_sets).unwrap();

    let g = nft::generation(&mut s).unwrap();
    sb.sh(
        "iptables-nft",
        &["-A", "FORWARD", "-s", "10.9.9.9", "-j", "DROP"],
    );
    assert_ne!(
        nft::generation(&mut s).unwrap(),
        g,
        "a foreign commit bumps the generation"
    );
    let mut tx = Transaction::new();
    tx.push(add_rule("nf-g", "mine", Position::Append));
    let err = tx.commit(&mut s, Some(g), &no_sets).unwrap_err();
    assert!(matches!(err, Error::GenerationChanged { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(
        tags(&mut s, "nf-g").is_empty(),
        "nothing of the batch was applied"
    );

    let g = nft::generation(&mut s).unwrap();
    tx.commit(&mut s, Some(g), &no_sets).unwrap();
    assert_eq!(tags(&mut s, "nf-g"), ["mine"]);
}

#[test]
fn kernel_errors_name_the_operation_and_the_batch_is_atomic() {
    let sb = Sandbox::new("err");
    let mut s = NetlinkSocket::open(&sb.netns()).unwrap();
    let mut tx = Transaction::new();
    base(&mut tx, "nf-e");
    tx.push(add_rule("nf-e", "first", Position::Append));
    tx.push(Op::AddRule {
        family: V4,
        table: T.into(),
        chain: "nf-e".into(),
        rule: Rule::new(Target::Jump("nf-missing".into())),
        position: Position::Append,
    });
    let err = tx.commit(&mut s, None, &no_sets).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("operation #4"), "{msg}");
    assert!(msg.contains("chain ip filter nf-e"), "{msg}");
    assert!(msg.contains("ENOENT"), "{msg}");
    assert_eq!(err.errno(), Some(libc::ENOENT));
    // Not even the table of the failed batch exists.
    assert!(nft::list_tables(&mut s, Some(V4)).unwrap().is_empty());

    // Invalid input never reaches the kernel.
    let mut tx = Transaction::new();
    base(&mut tx, "a-chain-name-that-is-much-too-long-for-iptables");
    let err = tx.commit(&mut s, None, &no_sets).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("chain"), "{err}");
    assert!(nft::list_tables(&mut s, Some(V4)).unwrap().is_empty());
}

/// The largest rules the validator lets through commit and are read back whole, with the
/// rule after them, by netfence and by `iptables-nft-save`: one of 128 expressions (the
/// kernel's NFT_RULE_MAXEXPRS, counter and verdict included), and one of as many 255-byte
/// comment matches as fit in a dump message. One match more is refused before anything
/// is sent, naming the rule; nothing is committed then.
#[test]
fn the_largest_rules_commit_and_list_back() {
    let sb = Sandbox::new("maxx");
    let mut s = NetlinkSocket::open(&sb.netns()).unwrap();
    let mut tx = Transaction::new();
    base(&mut tx, "nf-x");
    tx.commit(&mut s, None, &no_sets).unwrap();
    let mark = Match::Mark {
        negate: false,
        value: 1,
        mask: 1,
    };
    let most_exprs = Rule {
        matches: vec![mark; (nft::MAX_EXPRS - 2) / 3],
        comment: Some("most-exprs".into()),
        ..Rule::new(Target::Accept)
    };
    let mut most_bytes = Rule {
        matches: Vec::new(),
        comment: Some("most-bytes".into()),
        ..Rule::new(Target::Accept)
    };
    let long = Match::Comment("c".repeat(255));
    while nft::validate(&most_bytes, V4).is_ok() {
        most_bytes.matches.push(long.clone());
    }
    most_bytes.matches.pop();
    let add = |r: &Rule| Op::AddRule {
        family: V4,
        table: T.into(),
        chain: "nf-x".into(),
        rule: r.clone(),
        position: Position::Append,
    };
    for big in [&most_exprs, &most_bytes] {
        let mut tx = Transaction::new();
        tx.push(add(big));
        tx.push(add_rule("nf-x", "after", Position::Append));
        tx.commit(&mut s, None, &no_sets).unwrap();
        let rules = nft::list_rules(&mut s, V4, T, Some("nf-x"), &no_names).unwrap();
        assert_eq!(rules.len(), 2, "{}", big.comment().unwrap());
        assert_eq!(rules[0].rule.as_ref(), Some(big));
        let saved = sb.sh("iptables-nft-save", &[]);
        assert_eq!(
            saved.lines().filter(|l| l.starts_with("-A nf-x")).count(),
            2
        );

        let g = nft::generation(&mut s).unwrap();
        let mut bigger = big.clone();
        bigger.matches.push(Match::Comment("one more".into()));
        let mut tx = Transaction::new();
        tx.push(add(&bigger));
        let err = tx.commit(&mut s, None, &no_sets).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert!(err.to_string().contains(big.comment().unwrap()), "{err}");
        assert_eq!(
            nft::generation(&mut s).unwrap(),
            g,
            "something was committed"
        );

        let mut tx = Transaction::new();
        for r in rules {
            tx.push(Op::DelRule {
                family: V4,
                table: T.into(),
                chain: "nf-x".into(),
                handle: r.handle,
            });
        }
        tx.commit(&mut s, None, &no_sets).unwrap();
    }
}

/// A batch of thousands of failing operations: nfnetlink queues one error for each,
/// more than the receive buffer holds once there are enough of them. The batch still
/// reports its first failing operation (not ENOBUFS), and the next batch on the same
/// socket is not mistaken for a failure by replies left over from the first.
#[test]
fn a_flood_of_errors_reports_the_first_and_spares_the_next_batch() {
    let sb = Sandbox::new("flood");
    let mut s = NetlinkSocket::open(&sb.netns()).unwrap();
    let mut tx = Transaction::new();
    base(&mut tx, "nf-f");
    tx.commit(&mut s, None, &no_sets).unwrap();
    // 8000 overflowed the buffer before errors had room reserved; 60000 overflows it
    // still, past what is reserved.
    for n in [8_000u64, 60_000] {
        let mut bad = Transaction::new();
        for h in 0..n {
            bad.push(Op::DelRule {
                family: V4,
                table: T.into(),
                chain: "nf-f".into(),
                handle: 1_000_000 + h,
            });
        }
        let err = bad.commit(&mut s, None, &no_sets).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("operation #1 of the batch"), "{n}: {msg}");
        assert!(msg.contains("handle 1000000"), "{n}: {msg}");
        assert_eq!(err.errno(), Some(libc::ENOENT), "{n}: {msg}");
        assert!(!err.is_retryable(), "{n}: {msg}");

        let tag = format!("good-{n}");
        let mut good = Transaction::new();
        good.push(add_rule("nf-f", &tag, Position::Append));
        let done = good.commit(&mut s, None, &no_sets).unwrap();
        assert_eq!(done.handles[0], Some(handle_of(&mut s, "nf-f", &tag)));
    }
    assert_eq!(tags(&mut s, "nf-f"), ["good-8000", "good-60000"]);
}

#[test]
fn coexists_with_iptables_nft_writers() {
    let sb = Sandbox::new("coex");
    // A foreign writer's state before netfence arrives.
    sb.sh_stdin(
        "iptables-nft-restore",
        &[],
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n\
         -A FORWARD -m comment --comment \"kube\" -j KUBE-FORWARD\n\
         -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n",
    );
    // A foreign native nft rule (in its own table: in `filter` it would make
    // iptables-nft-save refuse the table): netfence keeps it opaque, never misreads it.
    sb.sh("nft", &["add", "table", "ip", "other"]);
    sb.sh("nft", &["add", "chain", "ip", "other", "native"]);
    sb.sh(
        "nft",
        &[
            "add",
            "rule",
            "ip",
            "other",
            "native",
            "ct",
            "state",
            "established",
            "accept",
        ],
    );
    let mut s = NetlinkSocket::open(&sb.netns()).unwrap();
    let foreign = |s: &mut NetlinkSocket| -> Vec<nft::RawRule> {
        nft::list_rules(s, V4, T, None, &no_names)
            .unwrap()
            .into_iter()
            .filter(|r| {
                !r.chain.starts_with("nf-")
                    && r.rule.as_ref().and_then(|r| r.comment()) != Some("nf:jump")
            })
            .map(|r| r.raw)
            .collect()
    };
    let before = foreign(&mut s);
    assert_eq!(before.len(), 3);
    let native = nft::list_rules(&mut s, V4, "other", Some("native"), &no_names).unwrap();
    assert!(
        native[0].rule.is_none(),
        "a native ct rule is opaque, not decoded"
    );
    assert!(!native[0].raw.exprs.is_empty(), "its bytes are kept");

    // netfence: its chain, its jump from FORWARD (and FORWARD's policy stays), then churn.
    let mut tx = Transaction::new();
    tx.push(Op::AddTable {
        family: V4,
        table: T.into(),
    });
    tx.push(Op::AddChain {
        family: V4,
        table: T.into(),
        chain: ChainSpec {
            name: "FORWARD".into(),
            base: Some(BaseChain {
                hook: Hook::Forward,
                priority: 0,
                policy: Policy::Drop,
            }),
        },
    });
    tx.push(Op::AddChain {
        family: V4,
        table: T.into(),
        chain: ChainSpec {
            name: "nf-fwd".into(),
            base: None,
        },
    });
    tx.push(add_rule("nf-fwd", "n1", Position::Append));
    tx.push(add_rule("nf-fwd", "n2", Position::Append));
    tx.push(Op::AddRule {
        family: V4,
        table: T.into(),
        chain: "FORWARD".into(),
        rule: Rule {
            matches: vec![Match::Comment("nf:jump".into())],
            ..Rule::new(Target::Jump("nf-fwd".into()))
        },
        position: Position::Prepend,
    });
    let g = nft::generation(&mut s).unwrap();
    tx.commit(&mut s, Some(g), &no_sets).unwrap();
    let h1 = handle_of(&mut s, "nf-fwd", "n1");
    let mut tx = Transaction::new();
    tx.push(Op::ReplaceRule {
        family: V4,
        table: T.into(),
        chain: "nf-fwd".into(),
        handle: h1,
        rule: tagged("n1b"),
    });
    tx.push(Op::DelRule {
        family: V4,
        table: T.into(),
        chain: "nf-fwd".into(),
        handle: handle_of(&mut s, "nf-fwd", "n2"),
    });
    tx.commit(&mut s, None, &no_sets).unwrap();
    assert_eq!(
        before,
        foreign(&mut s),
        "foreign rules are untouched, byte for byte"
    );
    assert_eq!(
        native,
        nft::list_rules(&mut s, V4, "other", Some("native"), &no_names).unwrap()
    );
    let save = sb.sh("iptables-nft-save", &[]);
    assert!(save.contains(":FORWARD DROP"), "{save}");
    assert!(
        save.contains("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"),
        "{save}"
    );

    // Someone else appends and deletes around netfence's rules.
    sb.sh(
        "iptables-nft",
        &["-A", "FORWARD", "-s", "10.1.1.1", "-j", "DROP"],
    );
    sb.sh(
        "iptables-nft",
        &["-I", "FORWARD", "1", "-d", "10.2.2.2", "-j", "ACCEPT"],
    );
    sb.sh(
        "iptables-nft",
        &["-D", "FORWARD", "-s", "10.1.1.1", "-j", "DROP"],
    );
    sb.sh("iptables-nft", &["-A", "nf-fwd", "-j", "RETURN"]);
    sb.sh("iptables-nft", &["-D", "nf-fwd", "-j", "RETURN"]);
    assert_eq!(tags(&mut s, "nf-fwd"), ["n1b"]);
    let fwd = tags(&mut s, "FORWARD");
    assert!(fwd.contains(&"nf:jump".to_string()), "{fwd:?}");
}

#[test]
fn one_batch_of_100k_rules() {
    let sb = Sandbox::new("big");
    let mut s = NetlinkSocket::open(&sb.netns()).unwrap();
    let mut tx = Transaction::new();
    base(&mut tx, "nf-big");
    const N: usize = 100_000;
    for i in 0..N {
        tx.push(add_rule("nf-big", &format!("r{i}"), Position::Append));
    }
    let done = tx.commit(&mut s, None, &no_sets).unwrap();
    let handles: Vec<u64> = done.handles.iter().flatten().copied().collect();
    assert_eq!(handles.len(), N, "every new rule's handle is echoed");
    let dumped = nft::list_rules(&mut s, V4, T, Some("nf-big"), &no_names).unwrap();
    assert_eq!(dumped.len(), N);
    assert_eq!(dumped.iter().map(|r| r.handle).collect::<Vec<_>>(), handles);
}

#[test]
fn tables_and_chains_dump_with_hooks_and_delete() {
    let sb = Sandbox::new("chains");
    let mut s = NetlinkSocket::open(&sb.netns()).unwrap();
    let mut tx = Transaction::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        tx.push(Op::AddTable {
            family,
            table: T.into(),
        });
        tx.push(Op::AddChain {
            family,
            table: T.into(),
            chain: ChainSpec {
                name: "INPUT".into(),
                base: Some(BaseChain {
                    hook: Hook::Input,
                    priority: 0,
                    policy: Policy::Drop,
                }),
            },
        });
        for c in ["nf-a", "nf-b"] {
            tx.push(Op::AddChain {
                family,
                table: T.into(),
                chain: ChainSpec {
                    name: c.into(),
                    base: None,
                },
            });
        }
        tx.push(Op::AddRule {
            family,
            table: T.into(),
            chain: "INPUT".into(),
            rule: Rule::new(Target::Jump("nf-a".into())),
            position: Position::Append,
        });
    }
    tx.commit(&mut s, None, &no_sets).unwrap();

    let tables = nft::list_tables(&mut s, None).unwrap();
    assert_eq!(tables.len(), 2);
    for family in [Family::Ipv4, Family::Ipv6] {
        let chains = nft::list_chains(&mut s, family, T).unwrap();
        let by = |n: &str| chains.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!(
            by("INPUT").base,
            Some(BaseChain {
                hook: Hook::Input,
                priority: 0,
                policy: Policy::Drop
            })
        );
        assert_eq!(by("nf-a").base, None);
        assert_eq!(by("nf-a").references, 1, "INPUT jumps to nf-a");
        assert_eq!(by("nf-b").references, 0);
        // The iptables tools agree.
        let save = sb.sh(
            if family == Family::Ipv4 {
                "iptables-nft-save"
            } else {
                "ip6tables-nft-save"
            },
            &[],
        );
        assert!(
            save.contains(":INPUT DROP") && save.contains("-A INPUT -j nf-a"),
            "{save}"
        );

        // A referenced chain can't go; an unreferenced one can.
        let mut del = Transaction::new();
        del.push(Op::DelChain {
            family,
            table: T.into(),
            chain: "nf-a".into(),
        });
        let err = del.commit(&mut s, None, &no_sets).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
        let mut del = Transaction::new();
        del.push(Op::DelChain {
            family,
            table: T.into(),
            chain: "nf-b".into(),
        });
        del.commit(&mut s, None, &no_sets).unwrap();
        let names: Vec<String> = nft::list_chains(&mut s, family, T)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert!(!names.contains(&"nf-b".to_string()) && names.contains(&"nf-a".to_string()));
    }
}

/// The kernel sizes a socket's first dump message before it knows how big a buffer the
/// reader brings (`netlink_dump()` allocates `NLMSG_GOODSIZE`, about 3.7 KiB, until a
/// `recvmsg` has shown a larger one), and `nf_tables_dump_rules()` ends the dump at a
/// rule that doesn't fit. On a fresh socket, a first rule of more than that used to come
/// back as no rules at all, the rest of the chain with it: an empty chain, not an error.
#[test]
fn a_fresh_socket_lists_a_large_first_rule() {
    let sb = Sandbox::new("nft-fresh");
    let comments: String = (0..16)
        .map(|i| {
            format!(
                " -m comment --comment {}",
                format!("{i:x}").repeat(200 / format!("{i:x}").len())
            )
        })
        .collect();
    sb.sh_stdin(
        "iptables-nft-restore",
        &[],
        &format!(
            "*filter\n:big - [0:0]\n-A big -s 10.0.0.1/32{comments} -j ACCEPT\n\
             -A big -s 10.0.0.2/32 -j DROP\nCOMMIT\n"
        ),
    );
    let mut s = NetlinkSocket::open(&sb.netns()).unwrap();
    let rules = nft::list_rules(&mut s, V4, T, Some("big"), &no_names).unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(
        rules[0].raw.exprs.len() > 4096,
        "{}",
        rules[0].raw.exprs.len()
    );
}
