//! Sandboxes for tests that need root: each test gets its own uniquely named network
//! namespace, works only inside it, and removes it on drop (also when the test panics).
//! The CLI tools run here only as oracles.

#![allow(dead_code)]

pub mod ipset_oracle;
pub mod k8s;
pub mod net;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use netfilter::Netns;

/// A throwaway network namespace.
pub struct Sandbox {
    /// The namespace's name under `/run/netns`.
    pub name: String,
}

impl Sandbox {
    /// Creates `nft-<tag>-<pid>-<n>`. Panics (failing the test) when not root.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "nf-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip netns add {name} failed (tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name }
    }

    /// The namespace, for netfence's API.
    pub fn netns(&self) -> Netns {
        Netns::Named(self.name.clone())
    }

    /// Runs `cmd args...` inside the namespace.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
    }

    /// Runs a command inside the namespace and returns its stdout; panics on failure.
    pub fn sh(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.run(cmd, args);
        assert!(
            out.status.success(),
            "{cmd} {args:?} in {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs a command with `input` on stdin inside the namespace; panics on failure.
    pub fn sh_stdin(&self, cmd: &str, args: &[&str], input: &str) -> String {
        let out = self.run_stdin(cmd, args, input);
        assert!(
            out.status.success(),
            "{cmd} {args:?} in {} failed: {}\ninput:\n{input}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs a command with `input` on stdin inside the namespace.
    pub fn run_stdin(&self, cmd: &str, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
        child.wait_with_output().expect("waiting")
    }
}

impl Sandbox {
    /// `nft --debug=netlink list ruleset` without rule handles, which differ by creation
    /// history: what the golden tests compare.
    pub fn netlink_dump(&self) -> String {
        self.sh("nft", &["--debug=netlink", "list", "ruleset"])
            .lines()
            .filter(|l| !l.starts_with("# Warning"))
            .map(|l| {
                // Rule headers are "ip filter CHAIN HANDLE [POSITION]".
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.len() >= 4
                    && (w[0] == "ip" || w[0] == "ip6")
                    && !l.starts_with(' ')
                    && w[3].parse::<u64>().is_ok()
                {
                    format!("{} {} {}", w[0], w[1], w[2])
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // ipsets live in the namespace and go with it; nothing leaks to the host.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
