//! Embedding netfence in a node agent: start an engine on a network namespace, hand it the
//! first full list of namespaces, pods and policies, open the gate with `ready()`, then
//! stream deltas and wait for the ones that matter.
//!
//! ```text
//! ip netns add demo-node
//! cargo run --example embed -- demo-node
//! ip netns exec demo-node iptables-nft-save; ip netns exec demo-node ipset list -t
//! ip netns del demo-node
//! ```
//!
//! Without an argument it programs the current namespace: run it only where that is
//! what you want.

use std::collections::BTreeMap;

use netfence::policy::k8s_openapi::api::core::v1 as core;
use netfence::policy::k8s_openapi::api::networking::v1 as net;
use netfence::policy::k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use netfence::policy::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use netfence::ruleset::Netns;
use netfence::sync::{Engine, EngineConfig};

fn meta(ns: Option<&str>, name: &str, labels: &[(&str, &str)]) -> meta::ObjectMeta {
    meta::ObjectMeta {
        namespace: ns.map(String::from),
        name: Some(name.into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

fn pod(name: &str, app: &str, ip: &str) -> core::Pod {
    core::Pod {
        metadata: meta(Some("shop"), name, &[("app", app)]),
        spec: Some(core::PodSpec::default()),
        status: Some(core::PodStatus {
            pod_ips: Some(vec![core::PodIP { ip: ip.into() }]),
            ..Default::default()
        }),
    }
}

fn selector(app: &str) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
        match_expressions: None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let netns = match std::env::args().nth(1) {
        Some(name) => Netns::Named(name),
        None => Netns::Current,
    };
    let config = EngineConfig {
        netns,
        ..EngineConfig::default()
    };
    let engine = Engine::start(config)?;

    // The first full list, as an informer's initial sync delivers it.
    let _ = engine.upsert_namespace(&core::Namespace {
        metadata: meta(None, "shop", &[("team", "web")]),
        ..Default::default()
    });
    let _ = engine.upsert_pod(&pod("db-0", "db", "10.244.1.10"));
    let _ = engine.upsert_pod(&pod("api-0", "api", "10.244.1.11"));
    let _ = engine.upsert_policy(&net::NetworkPolicy {
        metadata: meta(Some("shop"), "db-from-api", &[]),
        spec: Some(net::NetworkPolicySpec {
            pod_selector: Some(selector("db")),
            ingress: Some(vec![net::NetworkPolicyIngressRule {
                from: Some(vec![net::NetworkPolicyPeer {
                    pod_selector: Some(selector("api")),
                    ..Default::default()
                }]),
                ports: Some(vec![net::NetworkPolicyPort {
                    protocol: Some("TCP".into()),
                    port: Some(IntOrString::Int(5432)),
                    end_port: None,
                }]),
            }]),
            ..Default::default()
        }),
    });
    engine.ready().wait()?;
    println!("ready: {:?}", engine.status());

    // A delta the agent wants to know has landed: a new api replica.
    engine
        .upsert_pod(&pod("api-1", "api", "10.244.1.12"))
        .wait()?;
    // An invalid object is refused alone, naming the field.
    if let Err(e) = engine.upsert_pod(&pod("bad", "api", "10.244.1.300")).wait() {
        println!("rejected: {e}");
    }
    let m = engine.metrics();
    println!(
        "{} deltas in {} commits; median delta-to-kernel latency {:?} s",
        m.deltas,
        m.commits,
        m.delta_latency.quantile(0.5)
    );
    // Dropping the engine leaves the kernel as it is, for the next process to adopt;
    // engine.flush() would remove everything netfence owns instead.
    Ok(())
}
