//! `-f FILE...` in, a validated cluster out, or every problem in the files at once.
//!
//! The whole input is checked before any command touches the kernel: a single invalid
//! object fails the command with exit code 1, and the message names the file, the object
//! and the field. The files describe the desired state of the node completely, so an
//! object that the engine would skip on its own (it rejects an invalid delta and goes
//! on) is an error here: applying the rest would converge to a state the user did not
//! write down.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use netfence::manifest::Manifest;
use netfence::policy::k8s_openapi::api::core::v1 as core;
use netfence::policy::k8s_openapi::api::networking::v1 as net;
use netfence::policy::{self, Cluster};

use super::error::CliError;

/// The validated content of the files.
#[derive(Debug, Default)]
pub struct Input {
    /// Namespaces, as read (the engine takes `k8s-openapi` objects).
    pub namespaces: Vec<core::Namespace>,
    /// Pods that netfence enforces: with an address, not host-network, not terminated.
    pub pods: Vec<core::Pod>,
    /// NetworkPolicies.
    pub policies: Vec<net::NetworkPolicy>,
    /// The same objects, converted and validated.
    pub cluster: Cluster,
    /// Objects skipped, and why (each names its file).
    pub warnings: Vec<String>,
}

/// Where each object came from, to name the file in duplicate and namespace errors.
type Seen = BTreeMap<String, String>;

/// One source of manifests: a file, or standard input.
struct Source {
    /// The name in messages: the path as given (or found in a directory), or `-`.
    name: String,
    /// The path to read; `None` for standard input.
    path: Option<PathBuf>,
}

impl Input {
    /// Reads and validates `files`: paths, `-` for standard input, and directories (every
    /// `*.yaml`, `*.yml` and `*.json` directly inside, in name order).
    ///
    /// # Errors
    /// [`CliError::Invalid`] listing every unreadable file, every manifest that does not
    /// parse, every invalid object, every object given twice and every pod or policy
    /// whose namespace is not in the files.
    pub fn load(files: &[String]) -> Result<Input, CliError> {
        let mut problems = Vec::new();
        let sources = expand(files, &mut problems);
        let mut stdin_read = false;
        let mut input = Input::default();
        let mut namespaces = Seen::new();
        let mut pods = Seen::new();
        let mut policies = Seen::new();
        for src in sources {
            let text = match &src.path {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| format!("{}: cannot read: {e}", src.name)),
                None if stdin_read => Err("-: standard input can be read only once".into()),
                None => {
                    stdin_read = true;
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .map(|_| s)
                        .map_err(|e| format!("-: cannot read standard input: {e}"))
                }
            };
            let text = match text {
                Ok(t) => t,
                Err(p) => {
                    problems.push(p);
                    continue;
                }
            };
            let m = match Manifest::parse(&src.name, &text) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            input.take(
                &src.name,
                m,
                &mut problems,
                &mut namespaces,
                &mut pods,
                &mut policies,
            );
        }
        input.check_namespaces(&namespaces, &pods, &policies, &mut problems);
        if problems.is_empty() {
            Ok(input)
        } else {
            Err(CliError::Invalid { problems })
        }
    }

    /// Validates one file's objects into `self`.
    fn take(
        &mut self,
        file: &str,
        m: Manifest,
        problems: &mut Vec<String>,
        namespaces: &mut Seen,
        pods: &mut Seen,
        policies: &mut Seen,
    ) {
        self.warnings.extend(m.warnings);
        for ns in m.namespaces {
            match policy::Namespace::try_from(&ns) {
                Ok(n) => {
                    if once(
                        namespaces,
                        n.name.clone(),
                        file,
                        &format!("Namespace {}", n.name),
                        problems,
                    ) {
                        self.cluster.upsert_namespace(n);
                        self.namespaces.push(ns);
                    }
                }
                Err(e) => problems.push(format!("{file}: {e}")),
            }
        }
        for pod in m.pods {
            if let Some(why) = not_enforced(&pod) {
                self.warnings.push(format!(
                    "{file}: Pod {}: {why}; skipped",
                    describe(&pod.metadata)
                ));
                continue;
            }
            match policy::Pod::try_from(&pod) {
                Ok(p) => {
                    let key = p.key().to_string();
                    if once(pods, key.clone(), file, &format!("Pod {key}"), problems) {
                        self.cluster.upsert_pod(p);
                        self.pods.push(pod);
                    }
                }
                Err(e) => problems.push(format!("{file}: {e}")),
            }
        }
        for np in m.policies {
            match policy::Policy::try_from(&np) {
                Ok(p) => {
                    let key = p.key().to_string();
                    if once(
                        policies,
                        key.clone(),
                        file,
                        &format!("NetworkPolicy {key}"),
                        problems,
                    ) {
                        self.cluster.upsert_policy(p);
                        self.policies.push(np);
                    }
                }
                Err(e) => problems.push(format!("{file}: {e}")),
            }
        }
    }

    /// Every pod and policy must have its namespace in the files. The API server admits no
    /// object into a namespace that does not exist, so a missing one means the files are
    /// an incomplete listing: the namespace's labels decide which `namespaceSelector`s
    /// pick its pods, and guessing them (or treating them as empty) would enforce a policy
    /// the cluster does not have.
    fn check_namespaces(
        &self,
        namespaces: &Seen,
        pods: &Seen,
        policies: &Seen,
        problems: &mut Vec<String>,
    ) {
        let kinds = [("Pod", pods), ("NetworkPolicy", policies)];
        for (kind, seen) in kinds {
            for (key, file) in seen {
                let Some((ns, _)) = key.split_once('/') else {
                    continue;
                };
                if !namespaces.contains_key(ns) {
                    problems.push(format!(
                        "{file}: {kind} {key}: metadata.namespace: namespace {ns:?} is not in \
                         the files; add it (kubectl get namespace {ns} -o yaml)"
                    ));
                }
            }
        }
    }

    /// A one-line summary: "2 namespaces, 5 pods, 1 NetworkPolicy".
    pub fn summary(&self) -> String {
        format!(
            "{}, {}, {}",
            plural(self.namespaces.len(), "namespace", "namespaces"),
            plural(self.pods.len(), "pod", "pods"),
            plural(self.policies.len(), "NetworkPolicy", "NetworkPolicies"),
        )
    }
}

/// `1 pod`, `2 pods`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Records that `key` comes from `file`; a second definition is a problem (which of two
/// differing copies is the truth can't be guessed).
fn once(seen: &mut Seen, key: String, file: &str, what: &str, problems: &mut Vec<String>) -> bool {
    match seen.get(&key) {
        Some(first) => {
            problems.push(format!(
                "{file}: {what}: metadata.name: defined again (first in {first}); give each \
                 object once"
            ));
            false
        }
        None => {
            seen.insert(key, file.to_owned());
            true
        }
    }
}

/// Why a pod with an address is still not one NetworkPolicy applies to, if it isn't.
fn not_enforced(pod: &core::Pod) -> Option<&'static str> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        // Its address is the node's, so the model counts it without one (`Pod::try_from`);
        // skipping it here only tells the operator so.
        return Some("host-network pod (NetworkPolicy does not apply to it)");
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        // A finished pod keeps its status.podIPs, but the address may already belong to a
        // new pod; enforcing on it would apply the old pod's policies to the new one.
        Some("Succeeded" | "Failed") => Some("terminated pod (its address may be reused)"),
        _ => None,
    }
}

/// `namespace/name` of an object, for messages.
fn describe(
    m: &netfence::policy::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    let name = m.name.as_deref().unwrap_or("<unnamed>");
    match m.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// The sources `files` name, directories expanded; unreadable directories are problems.
fn expand(files: &[String], problems: &mut Vec<String>) -> Vec<Source> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut push = |name: String, path: Option<PathBuf>, out: &mut Vec<Source>| {
        // The same file named twice (directly and through its directory) is read once, so
        // that its objects don't count as duplicates of themselves.
        if let Some(p) = &path {
            let key = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            if !seen.insert(key) {
                return;
            }
        }
        out.push(Source { name, path });
    };
    for f in files {
        if f == "-" {
            push(f.clone(), None, &mut out);
            continue;
        }
        let path = Path::new(f);
        if !path.is_dir() {
            push(f.clone(), Some(path.to_path_buf()), &mut out);
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{f}: cannot read the directory: {e}"));
                continue;
            }
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
            })
            .collect();
        found.sort();
        if found.is_empty() {
            problems.push(format!(
                "{f}: no *.yaml, *.yml or *.json files in the directory"
            ));
        }
        for p in found {
            push(p.display().to_string(), Some(p), &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("writing a test file");
        p.display().to_string()
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netfence-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("creating a temp dir");
        d
    }

    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nstatus: {podIPs: [{ip: 10.0.0.1}]}\n";

    #[test]
    fn loads_and_validates() {
        let d = tmp("ok");
        let f = write(&d, "a.yaml", &format!("{NS}---\n{POD}"));
        let i = Input::load(&[f]).expect("valid input");
        assert_eq!(i.summary(), "1 namespace, 1 pod, 0 NetworkPolicies");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_namespace_duplicates_and_bad_objects_are_all_listed() {
        let d = tmp("bad");
        let a = write(&d, "a.yaml", POD);
        let b = write(&d, "b.yaml", &format!("{POD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: x, namespace: shop}}\nstatus: {{podIPs: [{{ip: nope}}]}}\n"));
        let Err(CliError::Invalid { problems }) = Input::load(&[a.clone(), b.clone()]) else {
            panic!("expected invalid input");
        };
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with(&format!(
            "{b}: Pod shop/web: metadata.name: defined again (first in {a})"
        )));
        assert!(
            problems[1].contains("Pod shop/x: status.podIPs[0].ip: invalid IP address"),
            "{}",
            problems[1]
        );
        assert!(
            problems[2].contains(
                "Pod shop/web: metadata.namespace: namespace \"shop\" is not in the files"
            ),
            "{}",
            problems[2]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn directories_and_skips() {
        let d = tmp("dir");
        write(&d, "1-ns.yaml", NS);
        write(&d, "2-pods.yml", &format!("{POD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: h, namespace: shop}}\nspec: {{hostNetwork: true, containers: []}}\nstatus: {{podIPs: [{{ip: 192.168.1.1}}]}}\n"));
        write(&d, "notes.txt", "not a manifest");
        let dir = d.display().to_string();
        // The directory and one of its files: read once.
        let i = Input::load(&[dir, d.join("1-ns.yaml").display().to_string()]).expect("valid");
        assert_eq!(i.pods.len(), 1);
        assert_eq!(i.namespaces.len(), 1);
        assert_eq!(i.warnings.len(), 1, "{:?}", i.warnings);
        assert!(i.warnings[0].contains("host-network"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
