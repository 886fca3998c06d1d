//! The Helm chart (`charts/wasmfn`): `helm lint`, the values schema, what `helm template`
//! renders (security contexts, the operator's RBAC and the roles aggregated into admin/edit/view,
//! images from repository + tag + appVersion, values reaching the operator's environment, the
//! NetworkPolicy, the RuntimeClass, the opt-in PodDisruptionBudget and ServiceMonitor, name
//! overrides, the uninstall cleanup hook, the CRD copies), and `helm install` onto the local
//! cluster with the images from `make images` (tag `WASMFN_IMAGE_TAG` when that is set, as for
//! `make images`): the harness's RuntimeClass is left alone (NOTES says so), one replica leads,
//! a function becomes Ready through it, a namespace viewer may read it, executions succeed in a
//! namespace it then guards with its deny-egress NetworkPolicy, and `helm uninstall` removes the
//! release's objects and, through the cleanup hook, the operator's policy and artifact
//! ConfigMaps, keeping the users' functions and executions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use wasmfn_api::labels;
use wasmfn_e2e::cluster::layout::WASM_RUNTIME_CLASS;
use wasmfn_e2e::helm::{chart_dir, Helm};
use wasmfn_e2e::observability::http_get;
use wasmfn_e2e::operator::crds_dir;

const RELEASE: &str = "wasmfn";

fn helm() -> Helm {
    Helm::new().expect("helm (make setup installs it)")
}

/// Every object `helm template` renders with `values`, parsed.
fn render(values: &[(&str, &str)]) -> Vec<Value> {
    let text = helm()
        .template(RELEASE, "wasmfn-system", values)
        .expect("helm template");
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("rendered YAML parses"))
        .filter(|object| !object.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn installer_daemonset(objects: &[Value]) -> &Value {
    of_kind(objects, "DaemonSet")
        .into_iter()
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "node-installer")
        .expect("the node installer's DaemonSet")
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The operator container's environment: name -> literal value (or the fieldRef path).
fn operator_env(objects: &[Value]) -> BTreeMap<String, String> {
    let deployment = one(objects, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let value = e["value"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    e["valueFrom"]["fieldRef"]["fieldPath"]
                        .as_str()
                        .map(|p| format!("fieldRef:{p}"))
                })
                .unwrap_or_default();
            (e["name"].as_str().expect("env name").to_owned(), value)
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn helm_lint_passes_with_the_defaults_and_with_every_option_on() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    let started = Instant::now();
    let out = helm()
        .run(&["lint", "--strict", chart])
        .expect("helm lint --strict");
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let all_on = [
        "--set",
        "nodeInstaller.enabled=true",
        "--set",
        "localCluster.hostNetwork=true",
        "--set",
        "localCluster.apiServerHost=127.0.0.1",
        "--set",
        "localCluster.apiServerPort=6443",
        "--set",
        "store.default=oci",
        "--set",
        "store.oci.registry=registry.example:5000",
        "--set",
        "cache.gcIntervalSeconds=30",
    ];
    let mut args = vec!["lint", "--strict", chart];
    args.extend(all_on);
    helm()
        .run(&args)
        .expect("helm lint --strict with every option on");
    eprintln!("helm lint (twice): {} ms", started.elapsed().as_millis());
}

#[test]
fn inconsistent_values_are_refused_at_render_time() {
    let half = helm().template(
        RELEASE,
        "wasmfn-system",
        &[("localCluster.apiServerHost", "127.0.0.1")],
    );
    let error = half.expect_err("a host without a port").to_string();
    assert!(error.contains("set both or neither"), "{error}");
    let oci = helm().template(RELEASE, "wasmfn-system", &[("store.default", "oci")]);
    let error = oci.expect_err("oci store without a registry").to_string();
    assert!(error.contains("store.oci.registry"), "{error}");
}

#[test]
fn the_defaults_render_the_operator_its_rbac_service_policy_runtime_class_and_lease() {
    let started = Instant::now();
    let objects = render(&[]);
    eprintln!(
        "helm template (defaults): {} ms",
        started.elapsed().as_millis()
    );
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    let expected: BTreeSet<&str> = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "RuntimeClass",
        "Lease",
        "DaemonSet",
        "Secret",
        // The uninstall cleanup hook.
        "Job",
    ]
    .into();
    assert_eq!(kinds, expected);
    let daemon_sets: Vec<&str> = of_kind(&objects, "DaemonSet")
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        daemon_sets,
        ["wasmfn-agent"],
        "the agent on by default, the node installer off"
    );
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "wasmfn.local/operator:dev");
    assert_eq!(pod["containers"][0]["args"], json!(["run"]));
    assert_eq!(pod["serviceAccountName"], "wasmfn-operator");
    assert!(
        pod["hostNetwork"].is_null(),
        "host network is off by default"
    );
    // Every namespaced object lands in the release namespace.
    for object in &objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let cluster_scoped = ["ClusterRole", "ClusterRoleBinding", "RuntimeClass"].contains(&kind);
        assert_eq!(
            object["metadata"]["namespace"].is_null(),
            cluster_scoped,
            "{kind} {}",
            object["metadata"]["name"]
        );
        if !cluster_scoped {
            assert_eq!(object["metadata"]["namespace"], "wasmfn-system", "{kind}");
        }
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/instance"], RELEASE,
            "{kind}: every object carries the release label (uninstall checks rely on it)"
        );
    }
    // The metrics Service reaches the operator's pods on the probe/metrics port.
    let service = one(&objects, "Service");
    let selector = service["spec"]["selector"].as_object().expect("selector");
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("labels");
    for (key, value) in selector {
        assert_eq!(pod_labels.get(key), Some(value), "service selector {key}");
    }
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    // The Lease the chart creates is the one the operator is told to use.
    let lease = one(&objects, "Lease");
    assert_eq!(
        operator_env(&objects)["WASMFN_LEASE_NAME"],
        lease["metadata"]["name"].as_str().expect("name")
    );
    assert!(lease["spec"].is_null(), "the operator writes the holder");
}

#[test]
fn every_container_is_restricted_except_the_node_installers_privileged_init_container() {
    let objects = render(&[("nodeInstaller.enabled", "true")]);
    let mut privileged = Vec::new();
    let mut checked = 0;
    let mut agents = 0;
    for workload in of_kind(&objects, "Deployment")
        .into_iter()
        .chain(of_kind(&objects, "DaemonSet"))
        .chain(of_kind(&objects, "Job"))
    {
        let kind = workload["kind"].as_str().expect("kind");
        let pod = &workload["spec"]["template"]["spec"];
        let containers = pod["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod["initContainers"].as_array().into_iter().flatten());
        for container in containers {
            let name = format!("{kind}/{}", container["name"].as_str().expect("name"));
            let security = &container["securityContext"];
            if security["privileged"] == true {
                privileged.push(name);
                continue;
            }
            if name == "DaemonSet/agent" {
                // Root only to confine its run children (see the agent's own test below).
                assert_agent_security(pod, container);
                agents += 1;
                continue;
            }
            let non_root =
                security["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true;
            assert!(non_root, "{name}: runAsNonRoot");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
            assert!(
                security["capabilities"]["add"].is_null(),
                "{name} adds capabilities"
            );
            let seccomp = if security["seccompProfile"].is_null() {
                &pod["securityContext"]["seccompProfile"]
            } else {
                &security["seccompProfile"]
            };
            assert_eq!(seccomp["type"], "RuntimeDefault", "{name}");
            assert!(
                container["resources"]["limits"]["memory"].is_string(),
                "{name}: memory limit"
            );
            checked += 1;
        }
        if kind == "Deployment" {
            assert!(pod["hostPID"].is_null() && pod["hostNetwork"].is_null());
            assert_eq!(
                pod["volumes"],
                json!([{"name": "agent-client-tls",
                        "secret": {"secretName": "wasmfn-agent-client-tls", "defaultMode": 288}}]),
                "the operator mounts only its client certificate for the agents"
            );
        }
    }
    assert_eq!(
        (checked, agents),
        (3, 1),
        "the operator, the installer's idle container and the cleanup hook; the agent"
    );
    assert_eq!(privileged, ["DaemonSet/install"]);
    // Without the node installer nothing is privileged; without the agent nothing runs as root.
    let defaults = render(&[("agent.enabled", "false")]);
    assert!(of_kind(&defaults, "DaemonSet").is_empty());
    assert!(of_kind(&defaults, "Secret").is_empty());
    assert_eq!(operator_env(&defaults)["WASMFN_AGENT_ENABLED"], "false");
    let deployment = one(&defaults, "Deployment");
    assert!(deployment["spec"]["template"]["spec"]["volumes"].is_null());
}

/// The agent's container: root with exactly the capabilities its run sandbox needs, nothing
/// else; no Kubernetes token; its key readable by root only.
fn assert_agent_security(pod: &Value, container: &Value) {
    let security = &container["securityContext"];
    assert_eq!(security["runAsUser"], 0);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        security["capabilities"]["add"],
        json!(["SYS_ADMIN", "SETUID", "SETGID", "KILL"])
    );
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(pod["automountServiceAccountToken"], false);
    let tls = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "tls")
        .expect("the agent's TLS volume");
    assert_eq!(tls["secret"]["secretName"], "wasmfn-agent-tls");
    assert_eq!(tls["secret"]["defaultMode"], 256, "0400");
}

#[test]
fn the_agent_daemonset_runs_on_wasmedge_nodes_with_certificates_from_one_generated_ca() {
    let objects = render(&[]);
    let agent = of_kind(&objects, "DaemonSet")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "wasmfn-agent")
        .expect("the agent DaemonSet");
    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({"wasmfn.dev/wasmedge": "true"}));
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "wasmfn.local/runner:dev");
    assert_eq!(container["args"], json!(["agent"]));
    let env: BTreeMap<String, String> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(env["WASMFN_AGENT_LISTEN"], "0.0.0.0:8443");
    assert_eq!(env["WASMFN_AGENT_CAPACITY"], "0");
    assert_eq!(env["WASMFN_AGENT_RUN_UID"], "61000");
    // The operator's selector finds exactly the DaemonSet's pods.
    let labels = agent["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("labels");
    let selector = operator_env(&objects)["WASMFN_AGENT_SELECTOR"].clone();
    for requirement in selector.split(',') {
        let (key, value) = requirement.split_once('=').expect("key=value");
        assert_eq!(
            labels.get(key).and_then(Value::as_str),
            Some(value),
            "{key}"
        );
    }
    // Both Secrets carry the same CA; the agent's certificate and the operator's differ.
    let secret = |name: &str| -> Value {
        of_kind(&objects, "Secret")
            .into_iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("Secret {name}"))
            .clone()
    };
    let server = secret("wasmfn-agent-tls");
    let client = secret("wasmfn-agent-client-tls");
    assert_eq!(server["data"]["ca.crt"], client["data"]["ca.crt"]);
    assert_ne!(server["data"]["tls.crt"], client["data"]["tls.crt"]);
    for data in [&server["data"], &client["data"]] {
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            assert!(data[key].as_str().is_some_and(|v| v.len() > 100), "{key}");
        }
    }
    // On the local cluster (host network) each agent listens on its node's address.
    let local = render(&[("localCluster.hostNetwork", "true")]);
    let agent = of_kind(&local, "DaemonSet")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "wasmfn-agent")
        .expect("the agent DaemonSet")
        .clone();
    assert_eq!(agent["spec"]["template"]["spec"]["hostNetwork"], true);
    let listen = agent["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "WASMFN_AGENT_LISTEN")
        .expect("listen")["value"]
        .clone();
    assert_eq!(listen, "$(NODE_IP):8443");
}

/// `(apiGroup, resource, verb, resourceNames)` for every rule.
fn rule_set(role: &Value) -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let names = strings(&rule["resourceNames"]);
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    assert_ne!(verb, "*", "no wildcard verbs");
                    assert_ne!(resource, "*", "no wildcard resources");
                    out.insert((group.clone(), resource.clone(), verb, names.clone()));
                }
            }
        }
    }
    out
}

fn rules(table: &[(&str, &str, &str, &[&str])]) -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for (group, resource, verbs, names) in table {
        for verb in verbs.split_whitespace() {
            out.insert((
                (*group).to_owned(),
                (*resource).to_owned(),
                verb.to_owned(),
                names.iter().map(|n| (*n).to_owned()).collect(),
            ));
        }
    }
    out
}

#[test]
fn the_operators_rbac_is_exactly_the_least_privilege_set() {
    let objects = render(&[("leaderElection.leaseName", "my-lease")]);
    let crds = ["wasmfunctions.wasmfn.dev", "wasmexecutions.wasmfn.dev"];
    let expected = rules(&[
        ("wasmfn.dev", "wasmfunctions", "get list watch patch", &[]),
        (
            "wasmfn.dev",
            "wasmexecutions",
            "get list watch patch delete",
            &[],
        ),
        (
            "wasmfn.dev",
            "wasmfunctions/status",
            "get patch update",
            &[],
        ),
        (
            "wasmfn.dev",
            "wasmexecutions/status",
            "get patch update",
            &[],
        ),
        ("batch", "jobs", "create get list watch delete patch", &[]),
        ("", "pods", "create get list watch delete", &[]),
        ("", "pods/log", "get", &[]),
        (
            "",
            "configmaps",
            "create get list watch update patch delete deletecollection",
            &[],
        ),
        ("", "nodes", "get list watch", &[]),
        ("node.k8s.io", "runtimeclasses", "get list watch", &[]),
        (
            "networking.k8s.io",
            "networkpolicies",
            "get create patch",
            &[],
        ),
        ("", "events", "create patch", &[]),
        ("events.k8s.io", "events", "create patch", &[]),
        (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "get",
            &crds,
        ),
    ]);
    let cluster_roles: BTreeSet<&str> = of_kind(&objects, "ClusterRole")
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        cluster_roles,
        [
            "wasmfn-edit",
            "wasmfn-operator",
            "wasmfn-operator-cleanup",
            "wasmfn-view"
        ]
        .into(),
        "the operator's, the uninstall hook's and the aggregated ones; not the installer's"
    );
    let operator_role = named(&objects, "ClusterRole", "wasmfn-operator");
    assert_eq!(rule_set(operator_role), expected);
    // Without the operator's own NetworkPolicies it gets no rule for them.
    let without = render(&[("networkPolicy.operatorManaged", "false")]);
    let role = named(&without, "ClusterRole", "wasmfn-operator");
    assert!(rule_set(role)
        .iter()
        .all(|(group, _, _, _)| group != "networking.k8s.io"));
    assert_eq!(
        operator_env(&without)["WASMFN_RUN_POD_NETWORK_POLICY"],
        "false"
    );
    // No secrets, no leases cluster-wide, nothing on RBAC itself.
    let lease_role = named(&objects, "Role", "wasmfn-operator-leader-election");
    assert_eq!(
        rule_set(lease_role),
        rules(&[
            ("coordination.k8s.io", "leases", "create", &[]),
            ("coordination.k8s.io", "leases", "get update", &["my-lease"]),
        ])
    );
    // Both bindings give their role to the service account the Deployment runs as, and nothing else.
    let account = one(&objects, "ServiceAccount");
    let deployment = one(&objects, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
    for (binding, role) in [
        (
            named(&objects, "ClusterRoleBinding", "wasmfn-operator"),
            operator_role,
        ),
        (
            named(&objects, "RoleBinding", "wasmfn-operator-leader-election"),
            lease_role,
        ),
    ] {
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(binding["roleRef"]["kind"], role["kind"]);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "wasmfn-system"}])
        );
    }
    // The node installer's role only labels nodes.
    let with_installer = render(&[("nodeInstaller.enabled", "true")]);
    let installer_role = of_kind(&with_installer, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "wasmfn-node-installer")
        .expect("installer role");
    assert_eq!(
        rule_set(installer_role),
        rules(&[("", "nodes", "get patch", &[])])
    );
}

#[test]
fn the_defaults_reach_the_operators_environment_as_the_replaced_systems_defaults() {
    let env = operator_env(&render(&[]));
    let expected = [
        ("WASMEDGE_ENABLED", "true"),
        ("WASMEDGE_TIMEOUT", "30000"),
        ("WASMEDGE_MEMORY_LIMIT", "128Mi"),
        ("WASM_CACHE_ENABLED", "true"),
        ("WASM_CACHE_TTL", "3600"),
        ("WASMFN_BUILDER_IMAGE", "wasmfn.local/builder:dev"),
        ("WASMFN_RUNNER_IMAGE", "wasmfn.local/runner:dev"),
        ("WASMFN_WASM_POD_IMAGE", "wasmfn.local/wasm-pod:dev"),
        ("WASMFN_WASMEDGE_NODE_SELECTORS", "wasmfn.dev/wasmedge=true"),
        ("WASMFN_WASMEDGE_HANDLER", "wasmfn"),
        ("WASMFN_KEEP_RUN_PODS", "false"),
        ("WASMFN_MAX_OUTPUT_BYTES", "4096"),
        ("WASMFN_RUN_MEMORY_OVERHEAD", "96Mi"),
        ("WASMFN_RUN_DEADLINE_GRACE", "120"),
        ("WASMFN_START_DEADLINE", "120"),
        ("WASMFN_FINISHED_TTL", "604800"),
        ("WASMFN_MAX_RUN_PODS_PER_NODE", "10"),
        ("WASMFN_RUN_CPU_LIMIT", "1"),
        ("WASMFN_RUN_POD_NETWORK_POLICY", "true"),
        ("WASMFN_COMPILE_TIMEOUT", "600"),
        ("WASMFN_COMPILE_MEMORY", "2Gi"),
        ("WASMFN_COMPILE_ISOLATE_NETWORK", "true"),
        ("WASMFN_BUILDER_REGISTRY_INSECURE", "false"),
        ("WASMFN_BUILDER_PIN_SECONDS", "60"),
        ("WASMFN_DEFAULT_STORE", "configmap"),
        ("WASMFN_OCI_REGISTRY", ""),
        ("WASMFN_OCI_REPOSITORY", "wasmfn/modules"),
        ("WASMFN_OCI_INSECURE", "false"),
        ("WASMFN_CONCURRENCY", "8"),
        ("WASMFN_HEALTH_ADDR", "0.0.0.0:8080"),
        ("WASMFN_LEASE_NAME", "wasmfn-operator"),
        ("WASMFN_LEASE_NAMESPACE", "wasmfn-system"),
        ("WASMFN_LEASE_SECONDS", "10"),
        ("POD_NAME", "fieldRef:metadata.name"),
        ("RUST_LOG", "info,kube=warn"),
        ("WASMFN_AGENT_ENABLED", "true"),
        ("WASMFN_AGENT_NAMESPACE", "wasmfn-system"),
        (
            "WASMFN_AGENT_SELECTOR",
            "app.kubernetes.io/name=wasmfn,app.kubernetes.io/instance=wasmfn,app.kubernetes.io/component=agent",
        ),
        ("WASMFN_AGENT_PORT", "8443"),
        ("WASMFN_AGENT_MAX_PENDING", "1024"),
        ("WASMFN_AGENT_TLS_DIR", "/etc/wasmfn/agent-client-tls"),
    ];
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(env, expected);
}

#[test]
fn every_value_flows_into_the_operators_environment() {
    let objects = render(&[
        (
            "images.builder.repository",
            "registry.example/wasmfn/builder",
        ),
        ("images.builder.tag", "1.2"),
        ("images.runner.repository", "registry.example/wasmfn/runner"),
        ("images.runner.tag", "1.2"),
        (
            "images.wasmPod.repository",
            "registry.example/wasmfn/wasm-pod",
        ),
        ("images.wasmPod.tag", "1.2"),
        (
            "images.operator.repository",
            "registry.example/wasmfn/operator",
        ),
        ("images.operator.tag", "1.2"),
        ("execution.wasmedgeEnabled", "false"),
        ("execution.timeoutMs", "5000"),
        ("execution.memoryLimit", "64Mi"),
        ("execution.maxOutputBytes", "65536"),
        ("execution.keepRunPods", "true"),
        ("execution.runMemoryOverhead", "128Mi"),
        ("execution.runDeadlineGraceSeconds", "45"),
        ("execution.startDeadlineSeconds", "20"),
        ("execution.maxRunPodsPerNode", "4"),
        ("execution.finishedTtlSeconds", "0"),
        ("execution.runCpuLimit", "500m"),
        ("compile.timeoutSeconds", "120"),
        ("compile.memory", "1Gi"),
        ("compile.isolateNetwork", "false"),
        ("compile.builderRegistry", "registry.example:5001"),
        ("compile.builderRegistryInsecure", "true"),
        ("compile.builderPinSeconds", "5"),
        ("registryCredentials.secretName", "registry-credentials"),
        ("registryCredentials.podPullSecrets[0]", "pull-only"),
        ("registryCredentials.podPullSecrets[1]", "another"),
        ("cache.enabled", "false"),
        ("cache.ttlSeconds", "60"),
        ("cache.gcIntervalSeconds", "15"),
        ("store.default", "oci"),
        ("store.oci.registry", "registry.example:5000"),
        ("store.oci.pullRegistry", "mirror.example"),
        ("store.oci.repository", "team/modules"),
        ("store.oci.insecure", "true"),
        (
            "wasmedge.nodeSelectors",
            "{a=b,kwasm.sh/kwasm-provisioned=true}",
        ),
        ("wasmedge.handler", "wasmfn-custom"),
        ("operator.concurrency", "3"),
        ("operator.logLevel", "debug"),
        ("metrics.port", "9100"),
        ("leaderElection.leaseSeconds", "15"),
        ("networkPolicy.operatorManaged", "false"),
        ("agent.port", "9443"),
        ("agent.maxPending", "32"),
        ("operator.extraEnv[0].name", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ("operator.extraEnv[0].value", "http://collector:4317"),
    ]);
    let env = operator_env(&objects);
    for (name, value) in [
        (
            "WASMFN_BUILDER_IMAGE",
            "registry.example/wasmfn/builder:1.2",
        ),
        ("WASMFN_RUNNER_IMAGE", "registry.example/wasmfn/runner:1.2"),
        (
            "WASMFN_WASM_POD_IMAGE",
            "registry.example/wasmfn/wasm-pod:1.2",
        ),
        ("WASMEDGE_ENABLED", "false"),
        ("WASMEDGE_TIMEOUT", "5000"),
        ("WASMEDGE_MEMORY_LIMIT", "64Mi"),
        ("WASMFN_MAX_OUTPUT_BYTES", "65536"),
        ("WASMFN_KEEP_RUN_PODS", "true"),
        ("WASMFN_RUN_MEMORY_OVERHEAD", "128Mi"),
        ("WASMFN_RUN_DEADLINE_GRACE", "45"),
        ("WASMFN_START_DEADLINE", "20"),
        ("WASMFN_FINISHED_TTL", "0"),
        ("WASMFN_MAX_RUN_PODS_PER_NODE", "4"),
        ("WASMFN_RUN_CPU_LIMIT", "500m"),
        ("WASMFN_COMPILE_TIMEOUT", "120"),
        ("WASMFN_COMPILE_MEMORY", "1Gi"),
        ("WASMFN_COMPILE_ISOLATE_NETWORK", "false"),
        ("WASMFN_BUILDER_REGISTRY", "registry.example:5001"),
        ("WASMFN_BUILDER_REGISTRY_INSECURE", "true"),
        ("WASMFN_BUILDER_PIN_SECONDS", "5"),
        (
            "WASMFN_REGISTRY_AUTH_FILE",
            "/etc/wasmfn/registry/config.json",
        ),
        ("WASMFN_IMAGE_PULL_SECRETS", "pull-only,another"),
        ("WASM_CACHE_ENABLED", "false"),
        ("WASM_CACHE_TTL", "60"),
        ("WASMFN_GC_INTERVAL", "15"),
        ("WASMFN_DEFAULT_STORE", "oci"),
        ("WASMFN_OCI_REGISTRY", "registry.example:5000"),
        ("WASMFN_OCI_PULL_REGISTRY", "mirror.example"),
        ("WASMFN_OCI_REPOSITORY", "team/modules"),
        ("WASMFN_OCI_INSECURE", "true"),
        (
            "WASMFN_WASMEDGE_NODE_SELECTORS",
            "a=b,kwasm.sh/kwasm-provisioned=true",
        ),
        ("WASMFN_WASMEDGE_HANDLER", "wasmfn-custom"),
        ("WASMFN_CONCURRENCY", "3"),
        ("RUST_LOG", "debug"),
        ("WASMFN_HEALTH_ADDR", "0.0.0.0:9100"),
        ("WASMFN_LEASE_SECONDS", "15"),
        ("WASMFN_RUN_POD_NETWORK_POLICY", "false"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("WASMFN_AGENT_PORT", "9443"),
        ("WASMFN_AGENT_MAX_PENDING", "32"),
    ] {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
    let deployment = one(&objects, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/wasmfn/operator:1.2");
    assert_eq!(container["ports"][0]["containerPort"], 9100);
    assert_eq!(one(&objects, "Service")["spec"]["ports"][0]["port"], 9100);
    // The RuntimeClass follows the handler value.
    assert_eq!(one(&objects, "RuntimeClass")["handler"], "wasmfn-custom");
}

/// The settings the chart deliberately leaves to the operator: its identity in the Lease is the
/// pod name plus the process id (from POD_NAME), which a value shared by both replicas cannot give.
const SETTINGS_NOT_IN_THE_CHART: [&str; 1] = ["WASMFN_IDENTITY"];

#[test]
fn the_chart_sets_exactly_the_settings_the_operator_reads() {
    let binary = wasmfn_e2e::operator::operator_binary().expect("the operator binary");
    let output = std::process::Command::new(&binary)
        .args(["run", "--help"])
        .env_clear()
        .output()
        .expect("wasmfn-operator run --help");
    assert!(output.status.success());
    // clap lists each flag's variable as `[env: NAME=]`; lines may wrap anywhere there is a space.
    let help = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let read: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(name, _)| name.to_owned()))
        .collect();
    assert!(read.len() >= 20, "{help}");
    // Every option on, so the conditional variables render too.
    let objects = render(&[
        ("cache.gcIntervalSeconds", "30"),
        ("store.oci.pullRegistry", "mirror.example"),
        ("compile.builderRegistry", "registry.example:5001"),
        ("registryCredentials.secretName", "registry-credentials"),
        ("registryCredentials.podPullSecrets[0]", "pull-only"),
    ]);
    let not_settings = [
        "POD_NAME",
        "NODE_IP",
        "RUST_LOG",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
    ];
    // The standard OTEL_* variables are read by the tracing setup, not by flags (see
    // tracing_values_become_the_standard_otel_variables).
    let set: BTreeSet<String> = operator_env(&objects)
        .into_keys()
        .filter(|name| !not_settings.contains(&name.as_str()) && !name.starts_with("OTEL_"))
        .collect();
    let unknown: Vec<&String> = set.difference(&read).collect();
    assert!(
        unknown.is_empty(),
        "the chart sets variables the operator does not read: {unknown:?}"
    );
    let missing: Vec<&String> = read
        .difference(&set)
        .filter(|name| !SETTINGS_NOT_IN_THE_CHART.contains(&name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "operator settings without a chart value: {missing:?}"
    );
}

#[test]
fn tracing_values_become_the_standard_otel_variables_and_are_off_by_default() {
    let defaults = operator_env(&render(&[]));
    assert!(
        defaults.keys().all(|name| !name.starts_with("OTEL_")),
        "no tracing unless asked: {defaults:?}"
    );
    let env = operator_env(&render(&[
        (
            "tracing.otlpEndpoint",
            "http://collector.observability:4318",
        ),
        ("tracing.sampler", "parentbased_traceidratio"),
        ("tracing.samplerArg", "0.25"),
    ]));
    let otel: BTreeMap<&str, &str> = env
        .iter()
        .filter(|(name, _)| name.starts_with("OTEL_"))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        otel,
        BTreeMap::from([
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://collector.observability:4318"
            ),
            ("OTEL_SERVICE_NAME", "wasmfn-operator"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
    );
}

#[test]
fn local_cluster_values_put_the_operator_on_the_host_network_with_an_explicit_apiserver() {
    let objects = render(&[
        ("localCluster.hostNetwork", "true"),
        ("localCluster.apiServerHost", "127.0.0.1"),
        ("localCluster.apiServerPort", "34567"),
        ("metrics.port", "18080"),
    ]);
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let env = operator_env(&objects);
    assert_eq!(env["KUBERNETES_SERVICE_HOST"], "127.0.0.1");
    assert_eq!(env["KUBERNETES_SERVICE_PORT"], "34567");
    assert_eq!(env["NODE_IP"], "fieldRef:status.hostIP");
    assert_eq!(env["WASMFN_HEALTH_ADDR"], "$(NODE_IP):18080");
    // $(NODE_IP) expands only when NODE_IP is defined before the variable that uses it.
    let order: Vec<String> = pod["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_owned())
        .collect();
    let position = |n: &str| order.iter().position(|o| o == n).expect(n);
    assert!(
        position("NODE_IP") < position("WASMFN_HEALTH_ADDR"),
        "{order:?}"
    );
    // And none of it by default.
    let env = operator_env(&render(&[]));
    for name in [
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "NODE_IP",
    ] {
        assert!(!env.contains_key(name), "{name} is set by default");
    }
}

#[test]
fn the_network_policy_denies_all_traffic_to_the_pods_the_operator_starts() {
    let objects = render(&[]);
    let policy = one(&objects, "NetworkPolicy");
    // Exactly the label the operator puts on compile Jobs' and execution pods.
    assert_eq!(
        policy["spec"]["podSelector"],
        json!({"matchLabels": {labels::MANAGED_BY: labels::MANAGED_BY_VALUE}})
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(policy["spec"]["ingress"].is_null() && policy["spec"]["egress"].is_null());
    // The operator's own pods are not selected by it.
    let pod_labels = &one(&objects, "Deployment")["spec"]["template"]["metadata"]["labels"];
    assert_ne!(pod_labels[labels::MANAGED_BY], labels::MANAGED_BY_VALUE);
    // One policy per namespace that holds functions.
    let listed = render(&[("networkPolicy.namespaces", "{team-a,team-b}")]);
    let namespaces: Vec<&Value> = of_kind(&listed, "NetworkPolicy")
        .iter()
        .map(|p| &p["metadata"]["namespace"])
        .collect();
    assert_eq!(namespaces, [&json!("team-a"), &json!("team-b")]);
    assert!(of_kind(
        &render(&[("networkPolicy.enabled", "false")]),
        "NetworkPolicy"
    )
    .is_empty());
}

#[test]
fn the_runtime_class_sends_wasm_pods_to_wasmedge_nodes_and_is_configurable() {
    let runtime_class = one(&render(&[]), "RuntimeClass").clone();
    assert_eq!(runtime_class["metadata"]["name"], "wasmfn");
    assert_eq!(runtime_class["handler"], "wasmfn");
    assert_eq!(
        runtime_class["scheduling"]["nodeSelector"],
        json!({labels::WASMEDGE_NODE: "true"})
    );
    let objects = render(&[
        ("wasmedge.runtimeClass.name", "wasm"),
        ("wasmedge.runtimeClass.nodeSelector.pool", "wasm"),
    ]);
    let renamed = one(&objects, "RuntimeClass");
    assert_eq!(renamed["metadata"]["name"], "wasm");
    assert_eq!(renamed["scheduling"]["nodeSelector"]["pool"], "wasm");
    assert!(of_kind(
        &render(&[("wasmedge.runtimeClass.create", "false")]),
        "RuntimeClass"
    )
    .is_empty());
}

#[test]
fn the_node_installer_takes_its_restart_command_cri_socket_and_local_cluster_settings_from_values()
{
    let values = [
        ("nodeInstaller.enabled", "true"),
        (
            "nodeInstaller.criSocket",
            "/run/k3s/containerd/containerd.sock",
        ),
        (
            "nodeInstaller.restartCommand",
            "test -e /host/ok && touch /host/restart",
        ),
        ("localCluster.hostNetwork", "true"),
        ("localCluster.apiServerHost", "127.0.0.1"),
        ("localCluster.apiServerPort", "34567"),
    ];
    let objects = render(&values);
    let pod = &installer_daemonset(&objects)["spec"]["template"]["spec"];
    let installer = &pod["initContainers"][0];
    let args: Vec<&str> = installer["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string"))
        .collect();
    assert!(
        args.contains(&"--cri-socket=/run/k3s/containerd/containerd.sock")
            && args.contains(&"--restart-command=test -e /host/ok && touch /host/restart"),
        "{args:?}"
    );
    assert_eq!(pod["hostNetwork"], true);
    let env: Vec<(&str, &str)> = installer["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert!(
        env.contains(&("KUBERNETES_SERVICE_HOST", "127.0.0.1"))
            && env.contains(&("KUBERNETES_SERVICE_PORT", "34567")),
        "{env:?}"
    );

    // By default: the installer's own restart command, the standard socket, the pod network.
    let objects = render(&[("nodeInstaller.enabled", "true")]);
    let pod = &installer_daemonset(&objects)["spec"]["template"]["spec"];
    let args = pod["initContainers"][0]["args"].to_string();
    assert!(
        !args.contains("--restart-command")
            && args.contains("--cri-socket=/run/containerd/containerd.sock"),
        "{args}"
    );
    assert!(pod["hostNetwork"].is_null(), "{pod}");
}

#[test]
fn the_node_installer_renders_the_standalone_manifests_daemonset() {
    let objects = render(&[
        ("nodeInstaller.enabled", "true"),
        ("agent.enabled", "false"),
    ]);
    let rendered = one(&objects, "DaemonSet");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runner-image/node-installer/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("daemonset.yaml");
    let standalone: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("yaml"))
        .collect();
    let standalone = one(&standalone, "DaemonSet");
    let (mine, theirs) = (
        &rendered["spec"]["template"]["spec"],
        &standalone["spec"]["template"]["spec"],
    );
    for field in [
        "hostPID",
        "nodeSelector",
        "tolerations",
        "volumes",
        "terminationGracePeriodSeconds",
    ] {
        assert_eq!(mine[field], theirs[field], "{field}");
    }
    for list in ["initContainers", "containers"] {
        let (a, b) = (&mine[list][0], &theirs[list][0]);
        for field in [
            "name",
            "image",
            "args",
            "command",
            "env",
            "resources",
            "volumeMounts",
        ] {
            assert_eq!(a[field], b[field], "{list}.{field}");
        }
        assert_eq!(
            a["securityContext"]["privileged"] == true,
            b["securityContext"]["privileged"] == true,
            "{list}: privileged"
        );
    }
    assert_eq!(
        rendered["spec"]["updateStrategy"],
        standalone["spec"]["updateStrategy"]
    );
}

#[test]
fn the_charts_crds_are_byte_identical_to_the_generated_crds() {
    let read = |dir: std::path::PathBuf| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let entry = entry.expect("entry");
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read(entry.path()).expect("read"),
                )
            })
            .collect()
    };
    let generated = read(crds_dir());
    let shipped = read(chart_dir().join("crds"));
    assert!(generated.len() >= 2, "{:?}", generated.keys());
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>(),
        "charts/wasmfn/crds must hold exactly crds/*.yaml: run `make crds`"
    );
    for (name, bytes) in &generated {
        assert!(
            shipped[name] == *bytes,
            "charts/wasmfn/crds/{name} differs from crds/{name}: run `make crds`"
        );
    }
}

/// The chart's appVersion (Chart.yaml): the images' default tag.
fn app_version() -> String {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml");
    let chart: Value = serde_yaml::from_str(&text).expect("Chart.yaml parses");
    chart["appVersion"].as_str().expect("appVersion").to_owned()
}

/// What `helm template` says about `values`, which must fail.
fn refused(values: &[(&str, &str)]) -> String {
    helm()
        .template(RELEASE, "wasmfn-system", values)
        .expect_err("helm template should refuse these values")
        .to_string()
}

#[test]
fn values_of_the_wrong_type_an_unknown_enum_value_or_an_unknown_key_are_refused_by_the_schema() {
    for (key, value, at) in [
        ("operator.replicas", "abc", "/operator/replicas"),
        ("metrics.port", "http", "/metrics/port"),
        ("execution.keepRunPods", "maybe", "/execution/keepRunPods"),
        ("store.default", "s3", "/store/default"),
        ("images.pullPolicy", "Sometimes", "/images/pullPolicy"),
        ("tracing.sampler", "sometimes", "/tracing/sampler"),
        // The images' former shape (one string each) is refused, not silently misread.
        (
            "images.operator",
            "registry.example/operator:1.0",
            "/images/operator",
        ),
        ("images.runner.digest", "latest", "/images/runner/digest"),
        // A misspelt key.
        ("operator.replica", "2", "/operator"),
    ] {
        let error = refused(&[(key, value)]);
        assert!(
            error.contains("values don't meet the specifications of the schema"),
            "{key}={value}: {error}"
        );
        assert!(
            error.contains(&format!("at '{at}'")),
            "{key}={value}: {error}"
        );
    }
    // The same keys with values of the right type and in the enums render.
    render(&[
        ("operator.replicas", "3"),
        ("metrics.port", "9100"),
        ("execution.keepRunPods", "true"),
        ("store.default", "oci"),
        ("store.oci.registry", "registry.example:5000"),
        ("images.pullPolicy", "Always"),
        ("tracing.sampler", "parentbased_traceidratio"),
        ("images.operator.repository", "registry.example/operator"),
        (
            "images.runner.digest",
            &format!("sha256:{}", "0f".repeat(32)),
        ),
    ]);
}

#[test]
fn images_are_repository_and_tag_the_tag_defaulting_to_the_app_version_and_a_digest_pinning_one() {
    let version = app_version();
    // appVersion is the tag `make images` builds unless told otherwise.
    let images_sh = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/images.sh"),
    )
    .expect("images.sh");
    assert!(
        images_sh.contains(&format!("tag=${{WASMFN_IMAGE_TAG:-{version}}}")),
        "appVersion {version} is not the default tag of tests/harness/images.sh"
    );
    let objects = render(&[("nodeInstaller.enabled", "true")]);
    let env = operator_env(&objects);
    let pod_image = |kind: &str, name: &str| {
        named(&objects, kind, name)["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .expect("image")
            .to_owned()
    };
    let expected = |name: &str| format!("wasmfn.local/{name}:{version}");
    assert_eq!(
        pod_image("Deployment", "wasmfn-operator"),
        expected("operator")
    );
    assert_eq!(
        pod_image("Job", "wasmfn-operator-cleanup"),
        expected("operator")
    );
    assert_eq!(pod_image("DaemonSet", "wasmfn-agent"), expected("runner"));
    assert_eq!(
        pod_image("DaemonSet", "wasmfn-node-installer"),
        expected("node-installer")
    );
    assert_eq!(env["WASMFN_BUILDER_IMAGE"], expected("builder"));
    assert_eq!(env["WASMFN_RUNNER_IMAGE"], expected("runner"));
    assert_eq!(env["WASMFN_WASM_POD_IMAGE"], expected("wasm-pod"));

    // A repository and tag per image (a number from --set too); a digest wins over the tag.
    let digest = format!("sha256:{}", "ab".repeat(32));
    let objects = render(&[
        (
            "images.operator.repository",
            "registry.example/wasmfn/operator",
        ),
        ("images.operator.tag", "1.4.0"),
        ("images.builder.tag", "7"),
        ("images.runner.tag", "1.4.0"),
        ("images.runner.digest", &digest),
    ]);
    let env = operator_env(&objects);
    let image = |kind: &str, name: &str| {
        named(&objects, kind, name)["spec"]["template"]["spec"]["containers"][0]["image"].clone()
    };
    assert_eq!(
        image("Deployment", "wasmfn-operator"),
        "registry.example/wasmfn/operator:1.4.0"
    );
    assert_eq!(
        image("Job", "wasmfn-operator-cleanup"),
        "registry.example/wasmfn/operator:1.4.0"
    );
    assert_eq!(env["WASMFN_BUILDER_IMAGE"], "wasmfn.local/builder:7");
    assert_eq!(
        env["WASMFN_RUNNER_IMAGE"],
        format!("wasmfn.local/runner@{digest}")
    );
    assert_eq!(
        image("DaemonSet", "wasmfn-agent"),
        format!("wasmfn.local/runner@{digest}")
    );
    assert_eq!(env["WASMFN_WASM_POD_IMAGE"], expected("wasm-pod"));
}

#[test]
fn the_pod_disruption_budget_and_the_service_monitor_render_only_when_enabled() {
    let defaults = render(&[]);
    assert!(of_kind(&defaults, "PodDisruptionBudget").is_empty());
    assert!(of_kind(&defaults, "ServiceMonitor").is_empty());

    let objects = render(&[
        ("operator.podDisruptionBudget.enabled", "true"),
        ("metrics.serviceMonitor.enabled", "true"),
        ("metrics.serviceMonitor.labels.release", "prometheus"),
        ("metrics.serviceMonitor.interval", "15s"),
    ]);
    let budget = one(&objects, "PodDisruptionBudget");
    assert_eq!(budget["apiVersion"], "policy/v1");
    assert_eq!(budget["metadata"]["namespace"], "wasmfn-system");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert!(budget["spec"]["maxUnavailable"].is_null());
    // It covers exactly the operator's pods.
    let deployment = one(&objects, "Deployment");
    assert_eq!(budget["spec"]["selector"], deployment["spec"]["selector"]);

    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], "wasmfn-system");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}])
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": ["wasmfn-system"]})
    );
    // It selects the metrics Service (by its labels) and scrapes the Service's named port.
    let service = one(&objects, "Service");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");

    // maxUnavailable instead of minAvailable.
    let objects = render(&[
        ("operator.podDisruptionBudget.enabled", "true"),
        ("operator.podDisruptionBudget.maxUnavailable", "1"),
    ]);
    let budget = one(&objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert!(budget["spec"]["minAvailable"].is_null());
    // A ServiceMonitor without the Service it selects is refused.
    let error = refused(&[
        ("metrics.serviceMonitor.enabled", "true"),
        ("metrics.service.enabled", "false"),
    ]);
    assert!(error.contains("needs metrics.service.enabled"), "{error}");
}

#[test]
fn name_overrides_rename_the_releases_objects_and_service_account_annotations_reach_the_account() {
    let defaults = render(&[]);
    assert!(one(&defaults, "ServiceAccount")["metadata"]["annotations"].is_null());

    let objects = render(&[
        ("fullnameOverride", "fn"),
        (
            "serviceAccount.annotations.iam\\.example\\.com/role",
            "wasmfn-operator",
        ),
    ]);
    let account = one(&objects, "ServiceAccount");
    assert_eq!(account["metadata"]["name"], "fn-operator");
    assert_eq!(
        account["metadata"]["annotations"],
        json!({"iam.example.com/role": "wasmfn-operator"})
    );
    let deployment = named(&objects, "Deployment", "fn-operator");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "fn-operator"
    );
    named(&objects, "DaemonSet", "fn-agent");
    named(&objects, "Job", "fn-operator-cleanup");
    named(&objects, "ClusterRole", "fn-edit");
    named(&objects, "NetworkPolicy", "fn-deny-workloads");

    // nameOverride replaces the chart's name in the base name and in the name label, which the
    // selectors (the operator's agent selector too) follow.
    let objects = render(&[("nameOverride", "functions")]);
    let deployment = named(&objects, "Deployment", "wasmfn-functions-operator");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "functions"
    );
    for object in &objects {
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/name"], "functions",
            "{} {}",
            object["kind"], object["metadata"]["name"]
        );
    }
    assert!(operator_env(&objects)["WASMFN_AGENT_SELECTOR"]
        .starts_with("app.kubernetes.io/name=functions,"));
}

#[test]
fn namespace_admins_and_editors_manage_functions_and_viewers_read_them_through_aggregated_roles() {
    let objects = render(&[]);
    let aggregation_labels = |role: &Value| -> BTreeSet<String> {
        role["metadata"]["labels"]
            .as_object()
            .expect("labels")
            .iter()
            .filter(|(key, value)| key.contains("aggregate-to-") && *value == "true")
            .map(|(key, _)| key.clone())
            .collect()
    };
    let edit = named(&objects, "ClusterRole", "wasmfn-edit");
    assert_eq!(
        aggregation_labels(edit),
        [
            "rbac.authorization.k8s.io/aggregate-to-admin".to_owned(),
            "rbac.authorization.k8s.io/aggregate-to-edit".to_owned()
        ]
        .into()
    );
    let all = "get list watch create update patch delete deletecollection";
    assert_eq!(
        rule_set(edit),
        rules(&[
            ("wasmfn.dev", "wasmfunctions", all, &[]),
            ("wasmfn.dev", "wasmexecutions", all, &[]),
        ]),
        "full use of the kinds, and no status writes (those are the operator's)"
    );
    let view = named(&objects, "ClusterRole", "wasmfn-view");
    assert_eq!(
        aggregation_labels(view),
        ["rbac.authorization.k8s.io/aggregate-to-view".to_owned()].into()
    );
    let read = "get list watch";
    assert_eq!(
        rule_set(view),
        rules(&[
            ("wasmfn.dev", "wasmfunctions", read, &[]),
            ("wasmfn.dev", "wasmexecutions", read, &[]),
            ("wasmfn.dev", "wasmfunctions/status", read, &[]),
            ("wasmfn.dev", "wasmexecutions/status", read, &[]),
        ])
    );
    let off = render(&[("rbac.aggregateToDefaultRoles", "false")]);
    assert!(of_kind(&off, "ClusterRole")
        .iter()
        .all(|r| aggregation_labels(r).is_empty()));
}

fn hook_weight(object: &Value) -> i64 {
    object["metadata"]["annotations"]["helm.sh/hook-weight"]
        .as_str()
        .expect("hook weight")
        .parse()
        .expect("a number")
}

#[test]
fn uninstall_runs_the_operators_cleanup_in_a_pre_delete_hook_with_only_the_rights_it_needs() {
    let objects = render(&[]);
    let job = one(&objects, "Job");
    let role = named(&objects, "ClusterRole", "wasmfn-operator-cleanup");
    let binding = named(&objects, "ClusterRoleBinding", "wasmfn-operator-cleanup");
    let stop_role = named(&objects, "Role", "wasmfn-operator-cleanup");
    let stop_binding = named(&objects, "RoleBinding", "wasmfn-operator-cleanup");
    for hook in [job, role, binding, stop_role, stop_binding] {
        let annotations = &hook["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/hook"], "pre-delete", "{hook}");
        assert_eq!(
            annotations["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded",
            "{hook}"
        );
    }
    // The rights exist before the Job starts.
    for rights in [role, binding, stop_role, stop_binding] {
        assert!(hook_weight(rights) < hook_weight(job), "{rights}");
    }
    assert_eq!(
        rule_set(role),
        rules(&[
            ("networking.k8s.io", "networkpolicies", "list delete", &[]),
            ("", "configmaps", "list delete", &[]),
        ])
    );
    // Stopping the operator first: the scale of its own Deployment, and the pods of the
    // release namespace to wait for.
    assert_eq!(stop_role["metadata"]["namespace"], "wasmfn-system");
    assert_eq!(
        rule_set(stop_role),
        rules(&[
            (
                "apps",
                "deployments/scale",
                "get patch",
                &["wasmfn-operator"]
            ),
            ("", "pods", "list", &[]),
        ])
    );
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "wasmfn-operator");
    for (binding, kind) in [(binding, "ClusterRole"), (stop_binding, "Role")] {
        assert_eq!(binding["roleRef"]["name"], "wasmfn-operator-cleanup");
        assert_eq!(binding["roleRef"]["kind"], kind);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "wasmfn-operator", "namespace": "wasmfn-system"}])
        );
    }
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "wasmfn-operator");
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    assert_eq!(
        container["args"],
        json!([
            "cleanup",
            "--operator-deployment=wasmfn-operator",
            "--operator-namespace=wasmfn-system"
        ])
    );
    assert_eq!(
        container["image"],
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert!(job["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|s| s > 0));

    // On the local cluster it reaches the apiserver the way the operator does.
    let local = render(&[
        ("localCluster.hostNetwork", "true"),
        ("localCluster.apiServerHost", "127.0.0.1"),
        ("localCluster.apiServerPort", "34567"),
    ]);
    let pod = &one(&local, "Job")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let env = &pod["containers"][0]["env"];
    assert!(
        env.as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "KUBERNETES_SERVICE_PORT" && e["value"] == "34567"),
        "{env}"
    );

    // Off: no Job and no extra rights.
    let off = render(&[("cleanup.enabled", "false")]);
    assert!(of_kind(&off, "Job").is_empty());
    for kind in ["ClusterRole", "Role"] {
        assert!(of_kind(&off, kind)
            .iter()
            .all(|r| r["metadata"]["name"] != "wasmfn-operator-cleanup"));
    }

    // The operator binary has the subcommand the hook runs.
    let binary = wasmfn_e2e::operator::operator_binary().expect("the operator binary");
    let output = std::process::Command::new(&binary)
        .args(["cleanup", "--help"])
        .output()
        .expect("wasmfn-operator cleanup --help");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--operator-deployment", "--operator-namespace"] {
        assert!(
            help.contains(flag),
            "the flag the hook passes: {flag}\n{help}"
        );
    }
}

// ---------------------------------------------------------------- on the local cluster

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `GET path` over plain HTTP/1.0; the body.
fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn helm_install_runs_the_operator_image_leader_elected_and_uninstall_leaves_nothing() {
    let helm = helm();
    let namespace = format!(
        "wasmfn-system-{}",
        wasmfn_e2e::cluster::pki::random_hex(3).expect("random")
    );
    let (kubectl, info, release_ns) = {
        let cluster = common::cluster();
        let ns = cluster.namespace(&namespace).expect("release namespace");
        (cluster.kubectl(), cluster.info().clone(), ns)
    };
    let helm = helm.with_kubeconfig(&info.kubeconfig());

    // The documented CRD install/upgrade path; the chart then finds them present.
    let crds = crds_dir();
    kubectl
        .run(&[
            "apply",
            "--server-side",
            "-f",
            crds.to_str().expect("utf-8"),
        ])
        .expect("kubectl apply --server-side -f crds/");
    // The harness made a RuntimeClass `wasmfn` of its own (not Helm's): the install must
    // neither fail on it nor take it over.
    let harness_runtime_class = kubectl
        .json(&["get", "runtimeclass", WASM_RUNTIME_CLASS])
        .expect("the harness's RuntimeClass");
    assert!(
        harness_runtime_class["metadata"]["annotations"]["meta.helm.sh/release-name"].is_null()
    );

    let metrics_port = free_port();
    let chart = chart_dir();
    let apiserver_port = info.apiserver_port.to_string();
    let port = metrics_port.to_string();
    // The images `make images` built: its WASMFN_IMAGE_TAG, else the chart's appVersion.
    let tag = std::env::var("WASMFN_IMAGE_TAG").unwrap_or_else(|_| app_version());
    let mut settings = vec![
        "localCluster.hostNetwork=true".to_owned(),
        "localCluster.apiServerHost=127.0.0.1".to_owned(),
        format!("localCluster.apiServerPort={apiserver_port}"),
        format!("metrics.port={port}"),
        // The operator pins the builder's tag to a digest through the cluster's registry.
        format!("compile.builderRegistry=127.0.0.1:{}", info.registry_port),
        "compile.builderRegistryInsecure=true".to_owned(),
    ];
    for image in ["operator", "builder", "runner", "wasmPod", "nodeInstaller"] {
        settings.push(format!("images.{image}.tag={tag}"));
    }
    let mut args = vec![
        "install",
        RELEASE,
        chart.to_str().expect("utf-8"),
        "--namespace",
        &namespace,
    ];
    for setting in &settings {
        args.extend(["--set", setting.as_str()]);
    }
    let started = Instant::now();
    let out = helm.run(&args).expect("helm install");
    let helm_returned = started.elapsed();
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains(&format!(
            "RuntimeClass {WASM_RUNTIME_CLASS} already exists and is not this release's"
        )),
        "NOTES say the RuntimeClass was left alone:\n{out}"
    );
    let runtime_class = kubectl
        .json(&["get", "runtimeclass", WASM_RUNTIME_CLASS])
        .expect("the RuntimeClass");
    assert_eq!(
        runtime_class["metadata"]["uid"], harness_runtime_class["metadata"]["uid"],
        "the chart neither replaced nor adopted it"
    );
    assert!(runtime_class["metadata"]["labels"]["app.kubernetes.io/instance"].is_null());

    // Both replicas Ready (the port is a host port, so the scheduler puts them on both nodes).
    release_ns
        .wait_for(
            &["deployment", "wasmfn-operator"],
            Duration::from_secs(240),
            |d| (d["status"]["readyReplicas"] == 2).then_some(()),
        )
        .unwrap_or_else(|e| {
            let pods = release_ns
                .run(&["get", "pods", "-o", "wide"])
                .unwrap_or_default();
            let events = release_ns.run(&["get", "events"]).unwrap_or_default();
            panic!("the operator never became ready: {e}\n{pods}\n{events}")
        });
    let pods = items(
        &release_ns
            .json(&["get", "pods", "-l", "app.kubernetes.io/component=operator"])
            .expect("pods"),
    );
    assert_eq!(pods.len(), 2);
    let mut nodes = BTreeSet::new();
    for pod in &pods {
        assert_eq!(
            pod["spec"]["containers"][0]["image"],
            format!("wasmfn.local/operator:{tag}").as_str()
        );
        assert_eq!(pod["spec"]["hostNetwork"], true);
        nodes.insert(pod["spec"]["nodeName"].as_str().expect("node").to_owned());
    }
    assert_eq!(nodes.len(), 2, "one replica per node: {nodes:?}");

    // One leader: the Lease names it and only its /metrics says wasmfn_leader 1.
    let holder = release_ns
        .wait_for(
            &["lease", "wasmfn-operator"],
            Duration::from_secs(60),
            |l| {
                l["spec"]["holderIdentity"]
                    .as_str()
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
            },
        )
        .expect("a replica holds the Lease");
    let ready_after = started.elapsed();
    let mut leaders = Vec::new();
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().expect("name");
        let address = format!(
            "{}:{metrics_port}",
            pod["status"]["hostIP"].as_str().expect("hostIP")
        );
        let metrics = http_get(&address, "/metrics").expect("scrape /metrics");
        if metrics.lines().any(|l| l == "wasmfn_leader 1") {
            leaders.push(name.to_owned());
        } else {
            assert!(metrics.lines().any(|l| l == "wasmfn_leader 0"), "{metrics}");
        }
    }
    assert_eq!(leaders.len(), 1, "exactly one leader: {leaders:?}");
    assert!(
        holder.starts_with(&format!("{}-", leaders[0])),
        "Lease holder {holder} is the replica whose metrics say it leads ({})",
        leaders[0]
    );
    eprintln!(
        "helm install returned in {} ms; both replicas Ready and one leading {} ms after it started",
        helm_returned.as_millis(),
        ready_after.as_millis()
    );

    // A function becomes Ready through the chart's operator.
    let functions = common::namespace("helm-fn");
    let code = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../runner-image/compile/tests/sources/wat/echo.wat"),
    )
    .expect("echo.wat");
    let function = json!({
        "apiVersion": "wasmfn.dev/v1alpha1",
        "kind": "WasmFunction",
        "metadata": {"name": "echo"},
        "spec": {"language": "Wat", "source": {"code": code}}
    });
    let created = Instant::now();
    functions
        .create(&function.to_string())
        .expect("create the function");
    let ready = functions
        .wait_for(&["wasmfunction", "echo"], Duration::from_secs(420), |f| {
            (f["status"]["phase"] == "Ready"
                && f["status"]["observedGeneration"] == f["metadata"]["generation"])
                .then(|| f.clone())
        })
        .unwrap_or_else(|e| {
            let logs = release_ns
                .run(&[
                    "logs",
                    "-l",
                    "app.kubernetes.io/component=operator",
                    "--tail=40",
                ])
                .unwrap_or_default();
            panic!("the function never became Ready: {e}\n{logs}")
        });
    assert!(ready["status"]["artifact"]["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    eprintln!(
        "wat function Ready through the chart's operator in {} ms",
        created.elapsed().as_millis()
    );
    // Executions run through it on both paths, with stdin reaching the guest.
    let executions = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmExecution",
             "metadata": {"name": "echo-wasm"},
             "spec": {"functionRef": {"name": "echo"}, "stdin": "via the chart\n", "runtime": "WasmEdge"}},
            {"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmExecution",
             "metadata": {"name": "echo-container"},
             "spec": {"functionRef": {"name": "echo"}, "stdin": "via the chart\n", "runtime": "Container"}}
        ]
    });
    functions
        .create(&executions.to_string())
        .expect("create the executions");
    for (name, runtime) in [("echo-wasm", "WasmEdge"), ("echo-container", "Container")] {
        let done = functions
            .wait_for(&["wasmexecution", name], Duration::from_secs(300), |e| {
                matches!(
                    e["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed" | "TimedOut")
                )
                .then(|| e.clone())
            })
            .unwrap_or_else(|e| panic!("{name} never finished: {e}"));
        let status = &done["status"];
        assert_eq!(status["phase"], "Succeeded", "{name}: {status:#}");
        assert_eq!(status["runtime"], runtime, "{name}: {status:#}");
        assert_eq!(
            status["stdout"], "hello from wat\nvia the chart\n",
            "{name}: {status:#}"
        );
    }

    // The operator denied egress in the functions' namespace before its first pod there, though
    // the chart's own policies cover only the release namespace.
    let policy = functions
        .json(&["get", "networkpolicy", "wasmfn-deny-egress"])
        .expect("the operator's NetworkPolicy in the executions' namespace");
    assert_eq!(
        policy["spec"]["podSelector"],
        json!({"matchLabels": {labels::MANAGED_BY: labels::MANAGED_BY_VALUE}}),
        "{policy:#}"
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        json!(["Egress"]),
        "{policy:#}"
    );
    assert!(
        policy["spec"]["egress"].is_null() && policy["spec"]["ingress"].is_null(),
        "{policy:#}"
    );

    // A namespace viewer (the built-in `view` role) may read functions but not create them; an
    // editor (`edit`) may create them: the chart's roles are aggregated into both.
    let functions_ns = functions.namespace_name().expect("namespace").to_owned();
    for (account, role) in [("viewer", "view"), ("editor", "edit")] {
        functions
            .run(&["create", "serviceaccount", account])
            .expect("service account");
        functions
            .run(&[
                "create",
                "rolebinding",
                account,
                &format!("--clusterrole={role}"),
                &format!("--serviceaccount={functions_ns}:{account}"),
            ])
            .expect("role binding");
    }
    let as_account = |account: &str| format!("--as=system:serviceaccount:{functions_ns}:{account}");
    let aggregated = Instant::now() + Duration::from_secs(30);
    while !can_i(
        &functions,
        "list",
        "wasmfunctions.wasmfn.dev",
        &as_account("viewer"),
    ) {
        assert!(
            Instant::now() < aggregated,
            "a namespace viewer still may not list WasmFunctions"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(can_i(
        &functions,
        "get",
        "wasmexecutions.wasmfn.dev",
        &as_account("viewer")
    ));
    assert!(!can_i(
        &functions,
        "create",
        "wasmfunctions.wasmfn.dev",
        &as_account("viewer")
    ));
    while !can_i(
        &functions,
        "create",
        "wasmexecutions.wasmfn.dev",
        &as_account("editor"),
    ) {
        assert!(
            Instant::now() < aggregated,
            "a namespace editor still may not create WasmExecutions"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!can_i(
        &functions,
        "patch",
        "wasmfunctions.wasmfn.dev/status",
        &as_account("editor")
    ));
    let listed = std::process::Command::new(functions.binary())
        .arg(format!("--kubeconfig={}", functions.kubeconfig().display()))
        .args(["get", "wasmfunctions", "-n", &functions_ns, "-o", "name"])
        .arg(as_account("viewer"))
        .output()
        .expect("kubectl get as the viewer");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "wasmfunction.wasmfn.dev/echo",
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // The function's stored module: the operator's artifact record (and parts, if any).
    let artifact_selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let artifacts = || -> Vec<String> {
        items(
            &functions
                .json(&["get", "configmaps", "-l", &artifact_selector])
                .expect("configmaps"),
        )
        .iter()
        .filter(|m| m["metadata"]["ownerReferences"].is_null())
        .filter_map(|m| m["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
    };
    let stored = artifacts();
    assert!(
        stored
            .iter()
            .any(|name| name.starts_with("wasmfn-artifact-")),
        "{stored:?}"
    );
    // Look-alikes of the users: a ConfigMap named like an artifact and a policy of the
    // operator's name, neither carrying the operator's label. The cleanup must keep them.
    let users_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wasmfn-artifact-users-own"}, "data": {"a": "b"}});
    functions
        .create(&users_map.to_string())
        .expect("the user's look-alike ConfigMap");
    // (In the release namespace, where the operator started no pods and so made no policy.)
    let users_policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "wasmfn-deny-egress"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
    release_ns
        .create(&users_policy.to_string())
        .expect("the user's look-alike policy");

    // The chart's RBAC was enough: the operators were never refused anything.
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().expect("name");
        let log = release_ns.run(&["logs", name]).expect("operator log");
        assert!(
            !log.contains("forbidden"),
            "{name} was refused something:\n{log}"
        );
    }

    // Helm's release record, which uninstall must remove too.
    let records = release_ns
        .json(&["get", "secrets", "-l", "owner=helm"])
        .expect("secrets");
    assert_eq!(items(&records).len(), 1, "{records}");

    // Uninstall: nothing of the release is left, in its namespace or cluster-wide.
    let uninstalled = Instant::now();
    helm.run(&["uninstall", RELEASE, "--namespace", &namespace])
        .expect("helm uninstall");
    eprintln!(
        "helm uninstall (with its cleanup hook) returned in {} ms",
        uninstalled.elapsed().as_millis()
    );
    // The pre-delete hook removed what the operator made and nothing owns, before the operator
    // went: its policy in the functions' namespace and the artifact ConfigMaps.
    assert!(
        functions
            .run(&["get", "networkpolicy", "wasmfn-deny-egress"])
            .is_err(),
        "the operator's NetworkPolicy is left after helm uninstall"
    );
    let left = artifacts();
    assert!(left.is_empty(), "artifact ConfigMaps left: {left:?}");
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let leftovers = || -> Vec<String> {
        let mut names = Vec::new();
        for (client, kinds) in [
            (
                &release_ns,
                "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,leases,networkpolicies,daemonsets,configmaps",
            ),
            (&kubectl, "clusterroles,clusterrolebindings,runtimeclasses"),
        ] {
            let list = client.json(&["get", kinds, "-l", &selector]).expect("list");
            names.extend(items(&list).iter().map(|o| {
                format!("{}/{}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"].as_str().unwrap_or("?"))
            }));
        }
        // Pods lose the instance label's owner chain last; look for the operator's by name too.
        let pods = items(&release_ns.json(&["get", "pods"]).expect("pods"));
        names.extend(
            pods.iter()
                .map(|p| format!("Pod/{}", p["metadata"]["name"].as_str().unwrap_or("?"))),
        );
        if release_ns
            .json(&["get", "lease", "wasmfn-operator"])
            .is_ok()
        {
            names.push("Lease/wasmfn-operator".to_owned());
        }
        names.sort();
        names.dedup();
        names
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = leftovers();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after helm uninstall: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "helm uninstall: nothing left {} ms after it started",
        uninstalled.elapsed().as_millis()
    );
    // No release in any state, and no release record (Helm keeps them as Secrets).
    let releases = helm
        .run(&[
            "list",
            "--namespace",
            &namespace,
            "-q",
            "--deployed",
            "--failed",
            "--pending",
            "--superseded",
            "--uninstalled",
            "--uninstalling",
        ])
        .expect("helm list");
    assert!(releases.trim().is_empty(), "{releases}");
    let records = release_ns
        .json(&["get", "secrets", "-l", "owner=helm"])
        .expect("secrets");
    assert!(items(&records).is_empty(), "{records}");
    // The users' look-alikes and the harness's RuntimeClass are untouched.
    functions
        .json(&["get", "configmap", "wasmfn-artifact-users-own"])
        .expect("the user's ConfigMap is kept");
    release_ns
        .json(&["get", "networkpolicy", "wasmfn-deny-egress"])
        .expect("the user's policy of the operator's name is kept");
    assert_eq!(
        kubectl
            .json(&["get", "runtimeclass", WASM_RUNTIME_CLASS])
            .expect("the harness's RuntimeClass is kept")["metadata"]["uid"],
        harness_runtime_class["metadata"]["uid"]
    );
    // The CRDs (and so the users' functions) stay: Helm never deletes CRDs.
    kubectl
        .run(&[
            "get",
            "crd",
            "wasmfunctions.wasmfn.dev",
            "wasmexecutions.wasmfn.dev",
        ])
        .expect("CRDs kept");
    functions
        .json(&["get", "wasmfunction", "echo"])
        .expect("the function is kept");
    let executions = items(
        &functions
            .json(&["get", "wasmexecutions"])
            .expect("executions"),
    );
    assert_eq!(executions.len(), 2, "the executions are kept");
}

/// `kubectl auth can-i VERB RESOURCE` in `namespace`'s namespace as `as_flag` (`--as=...`);
/// `RESOURCE` may name a subresource as `resource/subresource`.
fn can_i(namespace: &wasmfn_e2e::Kubectl, verb: &str, resource: &str, as_flag: &str) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, subresource)) => (resource, Some(subresource)),
        None => (resource, None),
    };
    let output = std::process::Command::new(namespace.binary())
        .arg(format!("--kubeconfig={}", namespace.kubeconfig().display()))
        .args(["auth", "can-i", verb, resource])
        .args(subresource.map(|s| format!("--subresource={s}")))
        .arg(format!(
            "--namespace={}",
            namespace.namespace_name().expect("namespace")
        ))
        .arg(as_flag)
        .output()
        .expect("kubectl auth can-i");
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {verb} {resource}: {answer} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    answer == "yes"
}

#[test]
fn registry_credentials_are_mounted_into_the_operator_only_when_named() {
    let pod = |objects: &[Value]| one(objects, "Deployment")["spec"]["template"]["spec"].clone();
    let none = render(&[("agent.enabled", "false")]);
    assert!(pod(&none)["volumes"].is_null(), "{}", pod(&none));
    assert!(!operator_env(&none).contains_key("WASMFN_REGISTRY_AUTH_FILE"));
    let named = render(&[
        ("agent.enabled", "false"),
        ("registryCredentials.secretName", "registry-credentials"),
    ]);
    let spec = pod(&named);
    assert_eq!(
        spec["volumes"][0]["secret"],
        json!({"secretName": "registry-credentials", "defaultMode": 288,
               "items": [{"key": ".dockerconfigjson", "path": "config.json"}]})
    );
    let mount = &spec["containers"][0]["volumeMounts"][0];
    assert_eq!(
        (
            mount["name"].as_str(),
            mount["mountPath"].as_str(),
            mount["readOnly"].as_bool()
        ),
        (
            Some("registry-credentials"),
            Some("/etc/wasmfn/registry"),
            Some(true)
        )
    );
    assert_eq!(
        operator_env(&named)["WASMFN_REGISTRY_AUTH_FILE"],
        "/etc/wasmfn/registry/config.json"
    );
    // Beside the agent's client certificate, both are mounted.
    let both = render(&[("registryCredentials.secretName", "registry-credentials")]);
    assert_eq!(pod(&both)["volumes"].as_array().map(Vec::len), Some(2));
}
