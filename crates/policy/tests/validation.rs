//! Each validation rule, shown by one malformed object whose error names the
//! object and the field; plus conversion of well-formed objects.

use policy::k8s_openapi::api::core::v1 as core;
use policy::k8s_openapi::api::networking::v1 as net;
use policy::{Cluster, Error, Family, NamespaceScope, ObjectKey, Peer, Policy, Port, Protocol};
use serde_json::{json, Value};

fn np(spec: Value) -> net::NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "x"},
        "spec": spec,
    }))
    .expect("well-typed NetworkPolicy JSON")
}

fn pod(v: Value) -> core::Pod {
    serde_json::from_value(v).expect("well-typed Pod JSON")
}

fn policy_err(spec: Value) -> Error {
    Policy::try_from(&np(spec)).expect_err("must be rejected")
}

/// The error names the object and exactly this field, in message and accessors.
#[track_caller]
fn names(err: &Error, object: &str, field: &str) {
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{object}: {field}: ")),
        "message {msg:?} should name {object} and {field}"
    );
    assert_eq!(err.field(), Some(field), "{msg}");
    assert_eq!(
        err.object().map(ToString::to_string).as_deref(),
        Some(object),
        "{msg}"
    );
}

const P: &str = "NetworkPolicy x/p";

fn ingress_from(peer: Value) -> Value {
    json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}, peer]}]})
}

fn ingress_port(port: Value) -> Value {
    json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}, port]}]})
}

#[test]
fn label_key_syntax() {
    let e = policy_err(json!({"podSelector": {"matchLabels": {"bad key": "v"}}}));
    names(&e, P, "spec.podSelector.matchLabels");
    assert!(e.to_string().contains("\"bad key\""), "{e}");
    for key in ["/app", "a/b/c", "Example.com/app", &"k".repeat(64), "-app"] {
        let e = policy_err(json!({"podSelector": {"matchLabels": {key: "v"}}}));
        assert!(matches!(e, Error::LabelKey { .. }), "{key}: {e}");
    }
}

#[test]
fn label_value_syntax() {
    let e = policy_err(json!({"podSelector": {"matchLabels": {"app": "-web"}}}));
    names(&e, P, "spec.podSelector.matchLabels[app]");
    let e = policy_err(json!({"podSelector": {"matchLabels": {"app": "v".repeat(64)}}}));
    assert!(e.to_string().contains("63"), "{e}");
}

#[test]
fn expression_key_and_values_syntax() {
    let e = policy_err(ingress_from(json!({"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "Exists"},
        {"key": "a b", "operator": "Exists"}
    ]}})));
    names(
        &e,
        P,
        "spec.ingress[0].from[1].podSelector.matchExpressions[1].key",
    );
    let e = policy_err(ingress_from(
        json!({"namespaceSelector": {"matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "no way"]}
        ]}}),
    ));
    names(
        &e,
        P,
        "spec.ingress[0].from[1].namespaceSelector.matchExpressions[0].values[1]",
    );
}

#[test]
fn unknown_operator() {
    for op in ["Equals", "in", ""] {
        let e = policy_err(ingress_from(json!({"podSelector": {"matchExpressions": [
            {"key": "app", "operator": op, "values": ["a"]}
        ]}})));
        names(
            &e,
            P,
            "spec.ingress[0].from[1].podSelector.matchExpressions[0].operator",
        );
        assert!(
            e.to_string().contains("In, NotIn, Exists or DoesNotExist"),
            "{e}"
        );
    }
}

#[test]
fn in_and_notin_need_values() {
    for (op, values) in [("In", json!(null)), ("NotIn", json!([]))] {
        let e = policy_err(json!({"podSelector": {"matchExpressions": [
            {"key": "app", "operator": op, "values": values}
        ]}}));
        names(&e, P, "spec.podSelector.matchExpressions[0].values");
        assert!(
            e.to_string()
                .contains(&format!("operator {op} requires at least one value")),
            "{e}"
        );
    }
}

#[test]
fn exists_and_doesnotexist_take_no_values() {
    for op in ["Exists", "DoesNotExist"] {
        let e = policy_err(json!({"podSelector": {"matchExpressions": [
            {"key": "app", "operator": op, "values": ["a"]}
        ]}}));
        names(&e, P, "spec.podSelector.matchExpressions[0].values");
        assert!(
            e.to_string()
                .contains(&format!("operator {op} takes no values")),
            "{e}"
        );
    }
}

#[test]
fn cidr_must_parse() {
    for cidr in [
        "10.0.0.0/33",
        "10.0.0.1",
        "banana",
        "10.0.0.0/-1",
        "fd00::/129",
    ] {
        let e = policy_err(ingress_from(json!({"ipBlock": {"cidr": cidr}})));
        names(&e, P, "spec.ingress[0].from[1].ipBlock.cidr");
        assert!(matches!(e, Error::Cidr { .. }), "{cidr}: {e}");
    }
    let e = policy_err(ingress_from(json!({"ipBlock": {"cidr": ""}})));
    names(&e, P, "spec.ingress[0].from[1].ipBlock.cidr");
    assert!(matches!(e, Error::Missing { .. }), "{e}");
    let e = policy_err(ingress_from(
        json!({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "x"]}}),
    ));
    names(&e, P, "spec.ingress[0].from[1].ipBlock.except[1]");
    assert!(matches!(e, Error::Cidr { .. }), "{e}");
}

#[test]
fn except_must_be_strictly_inside_cidr() {
    for except in [
        "192.168.0.0/16",
        "10.0.0.0/8",
        "10.0.0.0/7",
        "0.0.0.0/0",
        "fd00::/64",
        "::ffff:10.0.0.0/104",
    ] {
        let e = policy_err(json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {
            "cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", except]
        }}]}]}));
        names(&e, P, "spec.egress[0].to[0].ipBlock.except[1]");
        assert!(
            e.to_string()
                .contains("must be a strict subset of cidr 10.0.0.0/8"),
            "{except}: {e}"
        );
    }
    // Inside is fine, including with host bits set, which are cleared.
    let p = Policy::try_from(&np(
        json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {
            "cidr": "10.9.9.9/8", "except": ["10.1.2.3/16"]
        }}]}]}),
    ))
    .unwrap();
    let rules = p.egress.as_ref().unwrap();
    let Peer::IpBlock(b) = &rules[0].peers[0] else {
        panic!("{rules:?}")
    };
    assert_eq!(b.cidr.to_string(), "10.0.0.0/8");
    assert_eq!(b.except[0].to_string(), "10.1.0.0/16");
    assert_eq!(b.family(), Family::Ipv4);
}

#[test]
fn port_range_1_to_65535() {
    for port in [0, -1, 65536] {
        let e = policy_err(ingress_port(json!({"port": port})));
        names(&e, P, "spec.ingress[0].ports[1].port");
        assert!(e.to_string().contains("between 1 and 65535"), "{e}");
    }
    let e = policy_err(ingress_port(json!({"port": 80, "endPort": 65536})));
    names(&e, P, "spec.ingress[0].ports[1].endPort");
}

#[test]
fn end_port_at_least_port() {
    let e = policy_err(ingress_port(json!({"port": 8080, "endPort": 8000})));
    names(&e, P, "spec.ingress[0].ports[1].endPort");
    assert!(
        e.to_string()
            .contains("endPort 8000 must be greater than or equal to port 8080"),
        "{e}"
    );
}

#[test]
fn end_port_only_with_numeric_port() {
    let e = policy_err(ingress_port(json!({"port": "http", "endPort": 8080})));
    names(&e, P, "spec.ingress[0].ports[1].endPort");
    assert!(matches!(e, Error::EndPortNamedPort { .. }), "{e}");
    let e = policy_err(ingress_port(json!({"protocol": "TCP", "endPort": 8080})));
    names(&e, P, "spec.ingress[0].ports[1].endPort");
    assert!(matches!(e, Error::EndPortWithoutPort { .. }), "{e}");
}

#[test]
fn named_port_syntax() {
    for name in ["HTTP", "a--b", "-web", "80", "this-is-too-long"] {
        let e = policy_err(ingress_port(json!({"port": name})));
        names(&e, P, "spec.ingress[0].ports[1].port");
        assert!(matches!(e, Error::PortName { .. }), "{name}: {e}");
    }
}

#[test]
fn protocol_tcp_udp_sctp_only() {
    for proto in ["tcp", "ICMP", ""] {
        let e = policy_err(ingress_port(json!({"protocol": proto, "port": 80})));
        names(&e, P, "spec.ingress[0].ports[1].protocol");
        assert!(e.to_string().contains("must be TCP, UDP or SCTP"), "{e}");
    }
}

#[test]
fn policy_types_ingress_or_egress() {
    let e = policy_err(json!({"podSelector": {}, "policyTypes": ["Ingress", "Both"]}));
    names(&e, P, "spec.policyTypes[1]");
    let e = policy_err(json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]}));
    names(&e, P, "spec.policyTypes");
}

#[test]
fn peer_is_one_kind() {
    let e = policy_err(ingress_from(
        json!({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
    ));
    names(&e, P, "spec.ingress[0].from[1]");
    assert!(
        e.to_string()
            .contains("may not specify both ipBlock and another peer"),
        "{e}"
    );
    let e = policy_err(ingress_from(json!({})));
    names(&e, P, "spec.ingress[0].from[1]");
    assert!(e.to_string().contains("must specify a peer"), "{e}");
}

#[test]
fn policy_needs_name_and_namespace() {
    let mut p = np(json!({}));
    p.metadata.namespace = None;
    let e = Policy::try_from(&p).unwrap_err();
    assert_eq!(e.field(), Some("metadata.namespace"));
    p.metadata.name = None;
    let e = Policy::try_from(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "NetworkPolicy <unnamed>: metadata.name: required value is missing"
    );
}

/// Names the API server refuses for a kind whose names are at most `max` characters:
/// too long, uppercase, a space, a leading '-', an empty part between dots.
fn bad_names(max: usize) -> [String; 5] {
    [
        "x".repeat(max + 1),
        "Web".into(),
        "bad name".into(),
        "-web".into(),
        "a..b".into(),
    ]
}

/// Asserts that `e` rejects `value` as the name in `field` of `object`.
#[track_caller]
fn bad_name(e: &Error, object: &str, field: &str, value: &str) {
    names(e, object, field);
    assert!(matches!(e, Error::Name { .. }), "{e}");
    assert!(e.to_string().contains(&format!("{value:?}")), "{e}");
    assert!(!e.to_string().contains("required"), "{e}");
}

fn namespace(name: &str) -> core::Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("well-typed Namespace")
}

#[test]
fn namespace_name_is_a_dns_label() {
    for bad in bad_names(63)
        .iter()
        .map(String::as_str)
        .chain(["a.b", "web-"])
    {
        let e = policy::Namespace::try_from(&namespace(bad)).unwrap_err();
        bad_name(&e, &format!("Namespace {bad}"), "metadata.name", bad);
    }
    let e = policy::Namespace::try_from(&namespace(&"x".repeat(64))).unwrap_err();
    assert!(e.to_string().contains("no more than 63 characters"), "{e}");
    for good in ["x".repeat(63), "kube-system".into(), "0-a".into()] {
        let ns = policy::Namespace::try_from(&namespace(&good)).unwrap();
        assert_eq!(ns.name, good);
    }
}

#[test]
fn pod_name_is_a_dns_subdomain_and_its_namespace_a_dns_label() {
    for bad in bad_names(253) {
        let e = pod_err(|v| v["metadata"]["name"] = json!(bad));
        bad_name(&e, &format!("Pod x/{bad}"), "metadata.name", &bad);
    }
    let e = pod_err(|v| v["metadata"]["name"] = json!("x".repeat(254)));
    assert!(e.to_string().contains("no more than 253 characters"), "{e}");
    for bad in bad_names(63).iter().map(String::as_str).chain(["a.b"]) {
        let e = pod_err(|v| v["metadata"]["namespace"] = json!(bad));
        bad_name(&e, &format!("Pod {bad}/web"), "metadata.namespace", bad);
    }
    let longest = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    for good in [longest.as_str(), "web-0.shop", "0"] {
        let mut v = good_pod();
        v["metadata"]["name"] = json!(good);
        v["metadata"]["namespace"] = json!("x".repeat(63));
        let p = policy::Pod::try_from(&pod(v)).unwrap();
        assert_eq!(p.key(), ObjectKey::new("x".repeat(63), good));
    }
}

#[test]
fn policy_name_is_a_dns_subdomain_and_its_namespace_a_dns_label() {
    for bad in bad_names(253) {
        let mut p = np(json!({}));
        p.metadata.name = Some(bad.clone());
        let e = Policy::try_from(&p).unwrap_err();
        bad_name(&e, &format!("NetworkPolicy x/{bad}"), "metadata.name", &bad);
    }
    for bad in bad_names(63)
        .iter()
        .map(String::as_str)
        .chain(["Bad NS", "a.b"])
    {
        let mut p = np(json!({}));
        p.metadata.namespace = Some(bad.into());
        let e = Policy::try_from(&p).unwrap_err();
        bad_name(
            &e,
            &format!("NetworkPolicy {bad}/p"),
            "metadata.namespace",
            bad,
        );
    }
    let mut p = np(json!({}));
    p.metadata.name = Some("Bad Name".into());
    p.metadata.namespace = Some("shop".into());
    let e = Policy::try_from(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "NetworkPolicy shop/Bad Name: metadata.name: invalid name \"Bad Name\": must be a \
         lowercase RFC 1123 subdomain: lowercase alphanumeric characters, '-' or '.', \
         starting and ending with an alphanumeric character"
    );
    let longest = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    p.metadata.name = Some(longest.clone());
    p.metadata.namespace = Some("x".repeat(63));
    assert_eq!(Policy::try_from(&p).unwrap().name, longest);
}

#[test]
fn a_delete_key_is_checked_as_the_object_it_names() {
    use policy::convert::check_key;
    use policy::Kind;
    for bad in bad_names(63) {
        let e = check_key(Kind::Namespace, None, &bad).unwrap_err();
        // The same error as the conversion gives the object with that name.
        let from_object = policy::Namespace::try_from(&namespace(&bad)).unwrap_err();
        assert_eq!(e.to_string(), from_object.to_string());
        bad_name(&e, &format!("Namespace {bad}"), "metadata.name", &bad);
        for kind in [Kind::Pod, Kind::NetworkPolicy] {
            let e = check_key(kind, Some(&bad), "web").unwrap_err();
            bad_name(&e, &format!("{kind} {bad}/web"), "metadata.namespace", &bad);
        }
    }
    for bad in bad_names(253) {
        for kind in [Kind::Pod, Kind::NetworkPolicy] {
            let e = check_key(kind, Some("shop"), &bad).unwrap_err();
            bad_name(&e, &format!("{kind} shop/{bad}"), "metadata.name", &bad);
        }
    }
    let e = check_key(Kind::Pod, Some("shop"), "").unwrap_err();
    assert!(matches!(e, Error::Missing { .. }), "{e}");
    let longest = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    for kind in [Kind::Pod, Kind::NetworkPolicy] {
        check_key(kind, Some(&"x".repeat(63)), &longest).unwrap();
        check_key(kind, Some("kube-system"), "web-0.shop").unwrap();
    }
    check_key(Kind::Namespace, None, &"x".repeat(63)).unwrap();
}

#[test]
fn names_inside_selectors_are_label_values_not_object_names() {
    // `kubernetes.io/metadata.name` values and other label values follow the label
    // syntax (uppercase, '_' and '.' allowed), not the name rules: a selector naming a
    // namespace that can't exist is valid, and selects nothing.
    let p = Policy::try_from(&np(ingress_from(json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "Not_A.Name"}},
        "podSelector": {"matchExpressions": [{
            "key": "statefulset.kubernetes.io/pod-name", "operator": "In", "values": ["Web_0"]
        }]}
    }))))
    .unwrap();
    assert_eq!(p.ingress.as_ref().map(Vec::len), Some(1));
}

fn good_pod() -> Value {
    json!({
        "metadata": {
            "name": "web", "namespace": "x", "labels": {"app": "web"},
            "annotations": {"netfence.io/host-interface": "veth1234"}
        },
        "spec": {"nodeName": "node-1", "containers": [
            {"name": "a", "ports": [
                {"name": "http", "containerPort": 8080},
                {"containerPort": 9999, "protocol": "bogus"},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"}
            ]},
            {"name": "b", "ports": [{"name": "http", "containerPort": 8081, "protocol": "TCP"}]}
        ]},
        "status": {"podIP": "10.244.1.10", "podIPs": [{"ip": "10.244.1.10"}, {"ip": "fd00:10:244:1::10"}]}
    })
}

fn pod_err(edit: impl FnOnce(&mut Value)) -> Error {
    let mut v = good_pod();
    edit(&mut v);
    policy::Pod::try_from(&pod(v)).expect_err("must be rejected")
}

#[test]
fn pod_converts_with_everything_policy_needs() {
    let p = policy::Pod::try_from(&pod(good_pod())).unwrap();
    assert_eq!(p.key(), ObjectKey::new("x", "web"));
    assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(p.ipv4, Some("10.244.1.10".parse().unwrap()));
    assert_eq!(p.ipv6, Some("fd00:10:244:1::10".parse().unwrap()));
    assert_eq!(p.node_name.as_deref(), Some("node-1"));
    assert_eq!(p.host_interface.as_deref(), Some("veth1234"));
    // `http` is declared by two containers; both numbers count. The unnamed
    // port with a bogus protocol is ignored: no policy can name it.
    assert_eq!(
        p.resolve_named_port("http", Protocol::Tcp)
            .collect::<Vec<_>>(),
        [8080, 8081]
    );
    assert_eq!(
        p.resolve_named_port("dns", Protocol::Udp)
            .collect::<Vec<_>>(),
        [53]
    );
    assert_eq!(p.resolve_named_port("dns", Protocol::Tcp).count(), 0);
}

#[test]
fn pod_ip_falls_back_to_pod_ip_field() {
    let mut v = good_pod();
    v["status"] = json!({"podIP": "fd00::7"});
    let p = policy::Pod::try_from(&pod(v)).unwrap();
    assert_eq!((p.ipv4, p.ipv6), (None, Some("fd00::7".parse().unwrap())));
    let mut v = good_pod();
    v["status"] = json!({});
    let p = policy::Pod::try_from(&pod(v)).unwrap();
    assert_eq!((p.ipv4, p.ipv6), (None, None));
}

#[test]
fn a_finished_pod_has_no_addresses() {
    for phase in ["Succeeded", "Failed"] {
        let mut v = good_pod();
        v["status"]["phase"] = json!(phase);
        // The addresses are released, so even one that would not parse is no error.
        v["status"]["podIPs"][1]["ip"] = json!("fd00::zz");
        let p = policy::Pod::try_from(&pod(v)).unwrap();
        assert_eq!((p.ipv4, p.ipv6), (None, None), "{phase}");
        // Everything else is kept: the pod is still an object of the cluster.
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(p.node_name.as_deref(), Some("node-1"));
    }
    for phase in ["Pending", "Running", "Unknown"] {
        let mut v = good_pod();
        v["status"]["phase"] = json!(phase);
        let p = policy::Pod::try_from(&pod(v)).unwrap();
        assert_eq!(p.ipv4, Some("10.244.1.10".parse().unwrap()), "{phase}");
    }
}

#[test]
fn a_host_network_pod_has_no_addresses() {
    let mut v = good_pod();
    v["spec"]["hostNetwork"] = json!(true);
    // Its addresses are its node's, listed in status like a pod's own.
    v["status"]["podIPs"] = json!([{"ip": "192.168.0.11"}]);
    let p = policy::Pod::try_from(&pod(v)).unwrap();
    assert_eq!((p.ipv4, p.ipv6), (None, None));
    // Still a pod of the cluster, with its labels, node and named ports.
    assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(p.node_name.as_deref(), Some("node-1"));
    let mut v = good_pod();
    v["spec"]["hostNetwork"] = json!(false);
    let p = policy::Pod::try_from(&pod(v)).unwrap();
    assert_eq!(p.ipv4, Some("10.244.1.10".parse().unwrap()));
}

#[test]
fn a_sidecar_s_named_ports_are_the_pod_s() {
    let mut v = good_pod();
    v["spec"]["initContainers"] = json!([
        {"name": "setup", "ports": [{"name": "setup", "containerPort": 7000}]},
        {"name": "mesh", "restartPolicy": "Always",
         "ports": [{"name": "metrics", "containerPort": 15090}]}
    ]);
    let p = policy::Pod::try_from(&pod(v)).unwrap();
    let ports = |name| {
        p.resolve_named_port(name, Protocol::Tcp)
            .collect::<Vec<_>>()
    };
    assert_eq!(ports("metrics"), vec![15090]);
    // An init container that runs to completion first serves nothing later.
    assert!(ports("setup").is_empty());
    assert_eq!(ports("http"), vec![8080, 8081]);
    // A sidecar's bad port is named at its own path.
    let e = pod_err(|v| {
        v["spec"]["initContainers"] = json!([{"name": "mesh", "restartPolicy": "Always",
            "ports": [{"name": "metrics", "containerPort": 0}]}]);
    });
    names(
        &e,
        "Pod x/web",
        "spec.initContainers[0].ports[0].containerPort",
    );
}

#[test]
fn pod_ips_must_parse() {
    let e = pod_err(|v| v["status"]["podIPs"][1]["ip"] = json!("fd00::zz"));
    names(&e, "Pod x/web", "status.podIPs[1].ip");
    let e = pod_err(|v| v["status"] = json!({"podIP": "10.244.1.300"}));
    names(&e, "Pod x/web", "status.podIP");
    let e = pod_err(|v| v["status"]["podIPs"][1]["ip"] = json!("10.244.1.11"));
    names(&e, "Pod x/web", "status.podIPs[1].ip");
    assert!(matches!(e, Error::PodIpFamily { .. }), "{e}");
}

#[test]
fn pod_labels_and_named_container_ports() {
    let e = pod_err(|v| v["metadata"]["labels"] = json!({"app": "a b"}));
    names(&e, "Pod x/web", "metadata.labels[app]");
    let e = pod_err(|v| v["spec"]["containers"][1]["ports"][0]["name"] = json!("HTTP"));
    names(&e, "Pod x/web", "spec.containers[1].ports[0].name");
    let e = pod_err(|v| v["spec"]["containers"][0]["ports"][2]["containerPort"] = json!(0));
    names(&e, "Pod x/web", "spec.containers[0].ports[2].containerPort");
    let e = pod_err(|v| v["spec"]["containers"][0]["ports"][2]["protocol"] = json!("ICMP"));
    names(&e, "Pod x/web", "spec.containers[0].ports[2].protocol");
}

#[test]
fn host_interface_is_a_linux_interface_name() {
    for bad in ["", "eth/0", "a:b", "0123456789abcdef", ".."] {
        let e =
            pod_err(|v| v["metadata"]["annotations"]["netfence.io/host-interface"] = json!(bad));
        names(
            &e,
            "Pod x/web",
            "metadata.annotations[netfence.io/host-interface]",
        );
    }
}

#[test]
fn namespace_labels_and_name_label() {
    let ns: core::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "x", "labels": {"a": "b c"}}})).unwrap();
    let e = policy::Namespace::try_from(&ns).unwrap_err();
    names(&e, "Namespace x", "metadata.labels[a]");
    // The API server owns kubernetes.io/metadata.name; a user value is overwritten.
    let ns: core::Namespace = serde_json::from_value(
        json!({"metadata": {"name": "x", "labels": {"kubernetes.io/metadata.name": "y", "env": "prod"}}}),
    )
    .unwrap();
    let ns = policy::Namespace::try_from(&ns).unwrap();
    assert_eq!(
        ns.labels
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("x")
    );
    assert_eq!(ns.labels.get("env").map(String::as_str), Some("prod"));
}

#[test]
fn policy_types_defaults() {
    let types = |spec: Value| Policy::try_from(&np(spec)).unwrap().policy_types();
    // Absent and empty both default: Ingress always, Egress iff egress rules exist.
    let t = types(json!({"podSelector": {}}));
    assert!(t.ingress && !t.egress);
    let t = types(json!({"podSelector": {}, "policyTypes": [], "egress": []}));
    assert!(t.ingress && !t.egress);
    let t = types(json!({"podSelector": {}, "egress": [{}]}));
    assert!(t.ingress && t.egress);
    let t = types(json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}));
    assert!(!t.ingress && t.egress);
    // No spec at all: select everything, deny ingress.
    let p = Policy::try_from(&net::NetworkPolicy {
        metadata: np(json!({})).metadata,
        spec: None,
    })
    .unwrap();
    assert!(p.pod_selector.is_everything());
    assert_eq!(p.ingress.as_deref(), Some(&[][..]));
    assert_eq!(p.egress, None);
}

#[test]
fn peers_and_ports_convert_to_the_model() {
    let p = Policy::try_from(&np(json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{
        "from": [
            {"podSelector": {"matchLabels": {"role": "fe"}}},
            {"namespaceSelector": {}},
            {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "podSelector": {}}
        ],
        "ports": [{}, {"protocol": "UDP"}, {"port": "http"}, {"protocol": "SCTP", "port": 7, "endPort": 9}]
    }]})))
    .unwrap();
    let rule = &p.ingress.as_ref().unwrap()[0];
    assert_eq!(p.pod_selector.to_string(), "app=web");
    let Peer::Pods {
        namespaces: NamespaceScope::Only(ns),
        pods,
    } = &rule.peers[0]
    else {
        panic!("{rule:?}")
    };
    assert_eq!((ns.as_str(), pods.to_string().as_str()), ("x", "role=fe"));
    let Peer::Pods {
        namespaces: NamespaceScope::Selected(ns),
        pods,
    } = &rule.peers[1]
    else {
        panic!("{rule:?}")
    };
    assert!(ns.is_everything() && pods.is_everything());
    let Peer::Pods {
        namespaces: NamespaceScope::Selected(ns),
        pods,
    } = &rule.peers[2]
    else {
        panic!("{rule:?}")
    };
    assert_eq!(ns.to_string(), "env=prod");
    assert!(pods.is_everything());
    let ports: Vec<_> = rule
        .ports
        .iter()
        .map(|p| (p.protocol, p.port.clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (Protocol::Tcp, Port::Any),
            (Protocol::Udp, Port::Any),
            (Protocol::Tcp, Port::Named("http".into())),
            (Protocol::Sctp, Port::Range { start: 7, end: 9 }),
        ]
    );
}

#[test]
fn an_invalid_object_is_rejected_alone() {
    let good = np(json!({"podSelector": {}}));
    let mut bad = np(json!({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}));
    bad.metadata.name = Some("bad".into());
    let mut other = np(json!({"podSelector": {"matchLabels": {"app": "a"}}}));
    other.metadata.name = Some("other".into());
    let ns: core::Namespace = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    let bad_pod = pod(json!({"metadata": {"name": "nameless-ns"}}));
    let good_pod = pod(good_pod());
    let (cluster, errors) = Cluster::from_k8s([&ns], [&bad_pod, &good_pod], [&good, &bad, &other]);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "Pod nameless-ns: metadata.namespace: required value is missing"
    );
    names(
        &errors[1],
        "NetworkPolicy x/bad",
        "spec.ingress[0].ports[0].port",
    );
    assert_eq!(cluster.pods().count(), 1);
    let keys: Vec<_> = cluster.policies().map(|p| p.key().to_string()).collect();
    assert_eq!(keys, ["x/other", "x/p"]);
}
