//! Terse builders of the Kubernetes objects the engine takes.

use std::collections::BTreeMap;

use policy::k8s_openapi::api::core::v1 as core;
use policy::k8s_openapi::api::networking::v1 as net;
use policy::k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use policy::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// A namespace with labels.
pub fn namespace(name: &str, l: &[(&str, &str)]) -> core::Namespace {
    core::Namespace {
        metadata: meta::ObjectMeta {
            name: Some(name.into()),
            labels: labels(l),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A running pod with labels and the given addresses.
pub fn pod(ns: &str, name: &str, l: &[(&str, &str)], ips: &[&str]) -> core::Pod {
    core::Pod {
        metadata: meta::ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: labels(l),
            ..Default::default()
        },
        spec: Some(core::PodSpec::default()),
        status: Some(core::PodStatus {
            pod_ips: Some(
                ips.iter()
                    .map(|ip| core::PodIP { ip: ip.to_string() })
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

/// A selector from equality pairs (empty: everything).
pub fn sel(pairs: &[(&str, &str)]) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: if pairs.is_empty() {
            None
        } else {
            labels(pairs)
        },
        match_expressions: None,
    }
}

/// A policy selecting `selector` in `ns`, admitting pods of the namespace that match
/// `from` on TCP `port` (no ingress rule at all when `from` is `None`: deny all ingress).
pub fn policy(
    ns: &str,
    name: &str,
    selector: meta::LabelSelector,
    from: Option<meta::LabelSelector>,
    port: i32,
) -> net::NetworkPolicy {
    net::NetworkPolicy {
        metadata: meta::ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(net::NetworkPolicySpec {
            pod_selector: Some(selector),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: from.map(|f| {
                vec![net::NetworkPolicyIngressRule {
                    from: Some(vec![net::NetworkPolicyPeer {
                        pod_selector: Some(f),
                        ..Default::default()
                    }]),
                    ports: Some(vec![net::NetworkPolicyPort {
                        protocol: Some("TCP".into()),
                        port: Some(IntOrString::Int(port)),
                        end_port: None,
                    }]),
                }]
            }),
            egress: None,
        }),
    }
}
