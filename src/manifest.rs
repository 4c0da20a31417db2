//! Kubernetes manifests in, the objects netfence enforces out: multi-document YAML (or
//! JSON), `kind: List` included, as `kubectl get ns,pods,networkpolicies -A -o yaml`
//! prints it. Pure: text in, objects and warnings out.

use policy::k8s_openapi::api::core::v1 as core;
use policy::k8s_openapi::api::networking::v1 as net;
use serde::Deserialize;

/// What a set of manifests holds for netfence.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// Namespaces.
    pub namespaces: Vec<core::Namespace>,
    /// Pods that have at least one address in `status.podIPs`.
    pub pods: Vec<core::Pod>,
    /// NetworkPolicies.
    pub policies: Vec<net::NetworkPolicy>,
    /// Objects skipped, and why: other kinds, pods without addresses.
    pub warnings: Vec<String>,
}

/// A manifest that can't be read. Names the file, the document (from 1) and, where the
/// parser knows it, the line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {place}: {reason}")]
pub struct ManifestError {
    /// The file (or `-` for standard input).
    pub file: String,
    /// Where: `document 2`, `document 1 line 14`, `document 1 item 3 (Pod default/web)`.
    pub place: String,
    /// What is wrong.
    pub reason: String,
}

impl Manifest {
    /// Reads every document of `text` (from `file`, named in messages) into `self`.
    ///
    /// # Errors
    /// [`ManifestError`] for YAML that does not parse, a document without `kind`, or an
    /// object of a known kind that does not match its schema. Nothing of `text` is added
    /// then.
    pub fn add(&mut self, file: &str, text: &str) -> Result<(), ManifestError> {
        let mut next = Manifest::default();
        let error = |place: String, line: Option<usize>, e: &dyn std::fmt::Display| ManifestError {
            file: file.into(),
            place: match line {
                Some(l) => format!("{place} line {l}"),
                None => place,
            },
            reason: e.to_string(),
        };
        if text.trim_start().starts_with('{') {
            // JSON objects one after another (`kubectl get -o json` output concatenated,
            // or `jq -c`): one JSON text may hold several, which YAML reads as one
            // malformed document.
            let stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
            for (i, value) in stream.enumerate() {
                let place = format!("document {}", i + 1);
                let value = value.map_err(|e| error(place.clone(), Some(e.line()), &e))?;
                next.object(file, &place, value)?;
            }
        } else {
            for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
                let place = format!("document {}", i + 1);
                let value = serde_json::Value::deserialize(doc)
                    .map_err(|e| error(place.clone(), e.location().map(|l| l.line()), &e))?;
                if value.is_null() {
                    continue;
                }
                next.object(file, &place, value)?;
            }
        }
        self.namespaces.append(&mut next.namespaces);
        self.pods.append(&mut next.pods);
        self.policies.append(&mut next.policies);
        self.warnings.append(&mut next.warnings);
        Ok(())
    }

    /// Parses `text` alone.
    ///
    /// # Errors
    /// As [`Self::add`].
    pub fn parse(file: &str, text: &str) -> Result<Manifest, ManifestError> {
        let mut m = Manifest::default();
        m.add(file, text)?;
        Ok(m)
    }

    fn object(
        &mut self,
        file: &str,
        place: &str,
        value: serde_json::Value,
    ) -> Result<(), ManifestError> {
        let bad = |reason: String| ManifestError {
            file: file.into(),
            place: place.into(),
            reason,
        };
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| bad("no kind: not a Kubernetes object".into()))?
            .to_owned();
        let name = describe(&value);
        match kind.as_str() {
            "List" | "NamespaceList" | "PodList" | "NetworkPolicyList" => {
                let items = match value.get("items") {
                    Some(serde_json::Value::Array(items)) => items.clone(),
                    None | Some(serde_json::Value::Null) => Vec::new(),
                    Some(_) => return Err(bad(format!("{kind}: items is not a list"))),
                };
                for (j, mut item) in items.into_iter().enumerate() {
                    // Typed lists may leave kind and apiVersion out of their items.
                    if let (Some(obj), Some(k)) = (item.as_object_mut(), kind.strip_suffix("List"))
                    {
                        if !k.is_empty() {
                            obj.entry("kind").or_insert_with(|| k.into());
                            obj.entry("apiVersion").or_insert_with(|| {
                                if k == "NetworkPolicy" {
                                    "networking.k8s.io/v1"
                                } else {
                                    "v1"
                                }
                                .into()
                            });
                        }
                    }
                    self.object(file, &format!("{place} item {}", j + 1), item)?;
                }
            }
            "Namespace" => self
                .namespaces
                .push(typed(value, &kind, &name).map_err(bad)?),
            "Pod" => {
                let pod: core::Pod = typed(value, &kind, &name).map_err(bad)?;
                // `podIPs`, or the single-stack `podIP` that older kubelets fill alone
                // (the model reads either).
                let has_ip = pod.status.as_ref().is_some_and(|s| {
                    s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
                        || s.pod_ip.as_ref().is_some_and(|ip| !ip.is_empty())
                });
                if has_ip {
                    self.pods.push(pod);
                } else {
                    self.warnings.push(format!(
                        "{file}: {place}: Pod {name} has no IP yet; skipped"
                    ));
                }
            }
            "NetworkPolicy" => self.policies.push(typed(value, &kind, &name).map_err(bad)?),
            other => self
                .warnings
                .push(format!("{file}: {place}: kind {other} ({name}) skipped")),
        }
        Ok(())
    }
}

/// `namespace/name` (or `name`) of an untyped object, for messages.
fn describe(v: &serde_json::Value) -> String {
    let meta = v.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(|x| x.as_str());
    match (field("namespace"), field("name")) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.to_owned(),
        _ => "without a name".to_owned(),
    }
}

/// `v` as the typed object, or an error naming the field that does not fit its schema
/// (`spec.ports[0].port: invalid type: string "80", expected i32`).
fn typed<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    kind: &str,
    name: &str,
) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        let e = e.into_inner();
        if field == "." {
            format!("{kind} {name}: {e}")
        } else {
            format!("{kind} {name}: {field}: {e}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_skips() {
        let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: alpha, labels: {team: a}}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: alpha, labels: {app: web}}
  status: {podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: pending, namespace: alpha}
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: alpha}
---
kind: NetworkPolicyList
apiVersion: networking.k8s.io/v1
items:
- metadata: {name: deny, namespace: alpha}
  spec: {podSelector: {}}
---
"#;
        let m = Manifest::parse("x.yaml", text).unwrap();
        assert_eq!(m.namespaces.len(), 1);
        assert_eq!(m.pods.len(), 1);
        assert_eq!(m.policies.len(), 1);
        assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("Pod alpha/pending has no IP"));
        assert!(m.warnings[1].contains("kind Service (alpha/web) skipped"));
        assert!(m.warnings[1].starts_with("x.yaml: document 2 item 3"));
    }

    #[test]
    fn json_objects_one_after_another() {
        let text = "{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"a\"}}\n\
                    {\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"b\"}}\n";
        let m = Manifest::parse("x.json", text).unwrap();
        assert_eq!(m.namespaces.len(), 2);
        let e = Manifest::parse("x.json", "{\"kind\": \"Namespace\"}\n{\"kind\": \n").unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.place.as_str()),
            ("x.json", "document 2 line 3")
        );
    }

    #[test]
    fn errors_name_file_document_and_line() {
        let e = Manifest::parse(
            "bad.yaml",
            "kind: Namespace\nmetadata: {name: a}\n---\nkind: [\n",
        )
        .unwrap_err();
        assert_eq!(e.file, "bad.yaml");
        assert!(e.place.starts_with("document 2"), "{e}");
        let e = Manifest::parse("f.yaml", "metadata: {name: a}\n").unwrap_err();
        assert!(e.to_string().contains("no kind"), "{e}");
        let e = Manifest::parse(
            "f.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: d}\nspec: {containers: 3}\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("Pod d/p: spec.containers: invalid type"),
            "{e}"
        );
        let e = Manifest::parse(
            "f.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: d}\n\
             spec: {podSelector: {}, ingress: [{ports: [{port: 80, protocol: [TCP]}]}]}\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("NetworkPolicy d/p: spec.ingress[0].ports[0].protocol: invalid type"),
            "{e}"
        );
        // An error in a later document leaves the manifest as it was.
        let mut m = Manifest::default();
        m.add(
            "ok.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        assert!(m
            .add(
                "f.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\nx: ["
            )
            .is_err());
        assert_eq!(m.namespaces.len(), 1);
    }
}
