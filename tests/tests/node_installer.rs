//! The node installer on the local cluster: its DaemonSet manifest (`runner-image/node-installer/
//! daemonset.yaml`), run from the image `make images` built, turns node B — a plain node — into a
//! WasmEdge node, and a `runtimeClassName: wasmedge` pod then runs a Wasm module there through the
//! freshly installed shim. Node B's containerd config directory and a scratch directory standing
//! for the host's `/opt` are the only host paths the pod gets, mounted at their real paths under
//! `/host`, so the paths the installer writes into containerd's config are valid on this machine.
//! The installer's restart command leaves a marker; the test then has the cluster's supervisor
//! restart node B's containerd, as `systemctl restart containerd` would on a real node.

mod common;

use common::{cluster, namespace, terminated};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest_objects() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("runner-image/node-installer/daemonset.yaml"))
        .expect("daemonset.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let yaml = serde_yaml::Value::deserialize(doc).expect("YAML document");
            serde_json::to_value(yaml).expect("JSON")
        })
        .collect()
}

/// Adapts the manifest's pod template to this machine: node B's containerd config directory and
/// the scratch install directory mounted at their real paths under `/host` (instead of `/`),
/// the installer's flags for them, and the apiserver reachable from a pod (host network).
fn adapt_pod_spec(
    spec: &mut Value,
    command: &str,
    config_dir: &Path,
    scratch: &Path,
    apiserver_port: u16,
) {
    let config_path = config_dir.join("config.toml");
    let install_dir = scratch.join("opt/wasmfn");
    let marker = format!("/host{}/restart-requested-{command}", scratch.display());
    spec["hostNetwork"] = json!(true);
    spec["dnsPolicy"] = json!("ClusterFirstWithHostNet");
    spec["volumes"] = json!([
        {"name": "containerd-config", "hostPath": {"path": config_dir, "type": "Directory"}},
        {"name": "scratch", "hostPath": {"path": scratch, "type": "Directory"}},
    ]);
    let installer = &mut spec["initContainers"][0];
    installer["args"] = json!([
        command,
        "--host-root=/host",
        format!("--install-dir={}", install_dir.display()),
        format!("--containerd-config={}", config_path.display()),
        format!("--restart-command=touch {marker}"),
        // The pod sees only these two host directories, so the shim cannot be chrooted into the
        // host; it runs from the installer's filesystem, which has no libwasmedge either.
        "--verify=direct",
    ]);
    installer["volumeMounts"] = json!([
        {"name": "containerd-config", "mountPath": format!("/host{}", config_dir.display())},
        {"name": "scratch", "mountPath": format!("/host{}", scratch.display())},
    ]);
    installer["env"].as_array_mut().expect("env").extend([
        json!({"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}),
        json!({"name": "KUBERNETES_SERVICE_PORT", "value": apiserver_port.to_string()}),
    ]);
}

fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn node_labels(name: &str) -> Value {
    let node = cluster()
        .kubectl()
        .json(&["get", "node", name])
        .expect("node");
    node["metadata"]["labels"].clone()
}

#[test]
fn the_installer_daemonset_makes_a_plain_node_run_wasm_pods() {
    let scratch =
        std::env::temp_dir().join(format!("wasmfn-node-installer-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let module = scratch.join("probe.wasm");
    let compiled = Command::new("clang-19")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o"])
        .arg(&module)
        .arg(repo().join("runner-image/guests/c/probe.c"))
        .status()
        .expect("clang-19");
    assert!(compiled.success(), "compile the probe guest");

    let (node_b, apiserver_port, containerd_log) = {
        let c = cluster();
        let info = c.info();
        (
            info.plain_node().clone(),
            info.apiserver_port,
            info.logs_dir()
                .join(format!("containerd-{}.log", info.plain_node().key)),
        )
    };
    let config_path = node_b.containerd_config();
    let config_dir = config_path.parent().expect("config dir").to_path_buf();
    let original_config = std::fs::read_to_string(&config_path).expect("node B config");
    assert!(
        !original_config.contains("io.containerd.wasmfn.v1"),
        "node B starts as a plain node"
    );

    let ns = namespace("installer");
    let ns_name = ns.json(&["get", "serviceaccount", "default"]).expect("sa")["metadata"]
        ["namespace"]
        .as_str()
        .expect("namespace")
        .to_string();
    let admin = cluster().kubectl();
    let mut pod_template = Value::Null;
    for mut object in manifest_objects() {
        let kind = object["kind"].as_str().expect("kind").to_string();
        match kind.as_str() {
            "Namespace" => continue,
            "ClusterRoleBinding" => object["subjects"][0]["namespace"] = json!(ns_name),
            "DaemonSet" => {
                object["metadata"]["namespace"] = json!(ns_name);
                adapt_pod_spec(
                    &mut object["spec"]["template"]["spec"],
                    "install",
                    &config_dir,
                    &scratch,
                    apiserver_port,
                );
                pod_template = object["spec"]["template"].clone();
            }
            _ => {}
        }
        if object["metadata"]["namespace"].is_string() {
            object["metadata"]["namespace"] = json!(ns_name);
        }
        admin
            .apply(&object.to_string())
            .unwrap_or_else(|e| panic!("apply {kind}: {e}"));
    }

    // Opt node B in, as an administrator would.
    admin
        .run(&[
            "label",
            "node",
            &node_b.name,
            "wasmfn.dev/node-installer=enabled",
        ])
        .expect("opt node B in");
    let installer_pod = ns
        .wait_for(
            &["pods", "-l", "app.kubernetes.io/name=wasmfn-node-installer"],
            Duration::from_secs(180),
            |list| {
                let pod = list["items"].as_array()?.first()?.clone();
                let init = &pod["status"]["initContainerStatuses"][0]["state"]["terminated"];
                assert!(
                    init.is_null() || init["exitCode"] == 0,
                    "the installer failed: {pod}"
                );
                (!init.is_null()).then_some(pod)
            },
        )
        .expect("the installer ran");
    assert_eq!(installer_pod["spec"]["nodeName"], node_b.name.as_str());
    let pod_name = installer_pod["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let log = ns
        .run(&["logs", &pod_name, "-c", "install"])
        .expect("installer log");
    assert!(log.contains("handler wasmedge registered"), "{log}");
    assert!(log.contains("starts (direct check)"), "{log}");

    let labels = node_labels(&node_b.name);
    assert_eq!(labels["wasmfn.dev/wasmedge"], "true", "{labels}");
    assert_eq!(labels["wasmedge"], "provisioned", "{labels}");

    let shim = scratch.join("opt/wasmfn/bin/containerd-shim-wasmfn-v1");
    assert!(shim.is_file(), "the shim is installed on the host");
    let config = std::fs::read_to_string(&config_path).expect("config");
    assert!(config.starts_with(&original_config), "{config}");
    assert!(
        config.contains(&format!("runtime_path = \"{}\"", shim.display())),
        "{config}"
    );

    // The installer asked for a restart; the supervisor does it the way systemd would.
    assert!(
        wait_for_file(
            &scratch.join("restart-requested-install"),
            Duration::from_secs(10)
        ),
        "the installer ran its restart command"
    );
    cluster()
        .restart_containerd(&node_b.name)
        .expect("restart node B's containerd");
    let loaded = std::fs::read_to_string(&containerd_log).expect("containerd log");
    let starts: Vec<&str> = loaded
        .lines()
        .filter(|l| l.contains("Start cri plugin with config"))
        .collect();
    assert!(
        starts.len() >= 2
            && starts[starts.len() - 1].contains(&format!(
                "wasmedge:{{Type:io.containerd.wasmfn.v1 Path:{}",
                shim.display()
            )),
        "the restarted containerd loaded the handler: {starts:?}"
    );

    // A Wasm pod on node B runs through the installed shim.
    ns.run(&[
        "create",
        "configmap",
        "modules",
        &format!("--from-file={}", module.display()),
    ])
    .expect("module configmap");
    ns.create(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: wasm-on-b
spec:
  runtimeClassName: wasmedge
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
  nodeSelector:
    kubernetes.io/hostname: \"{node}\"
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
  containers:
  - name: run
    image: {image}
    command: [\"/artifact/probe.wasm\", \"from\", \"node-b\"]
    env:
    - name: WASMFN_TIMEOUT_MS
      value: \"10000\"
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop: [\"ALL\"]
    volumeMounts:
    - name: artifact
      mountPath: /artifact
  volumes:
  - name: artifact
    configMap:
      name: modules
",
        node = node_b.name,
        image = common::image("wasm-pod"),
    ))
    .expect("wasm pod");
    let state = ns
        .wait_for(&["pod", "wasm-on-b"], Duration::from_secs(180), terminated)
        .expect("the Wasm pod terminates");
    let placed = ns.json(&["get", "pod", "wasm-on-b"]).expect("pod");
    assert_eq!(placed["spec"]["nodeName"], node_b.name.as_str());
    assert_eq!(state["exitCode"], 0, "{state}");
    let document: Value =
        serde_json::from_str(state["message"].as_str().expect("termination message"))
            .expect("result document");
    assert_eq!(document["reason"], "Completed", "{document}");
    let logs = ns.run(&["logs", "wasm-on-b"]).expect("logs");
    assert!(
        logs.contains("hello from c\n") && logs.contains("args: from node-b\n"),
        "{logs}"
    );

    // Uninstall with the same image and mounts: labels, handler and files go.
    let mut spec = pod_template["spec"].clone();
    adapt_pod_spec(
        &mut spec,
        "uninstall",
        &config_dir,
        &scratch,
        apiserver_port,
    );
    spec["restartPolicy"] = json!("Never");
    spec["nodeName"] = json!(node_b.name);
    spec["containers"] = json!([spec["initContainers"][0].clone()]);
    spec.as_object_mut().expect("spec").remove("initContainers");
    spec.as_object_mut().expect("spec").remove("nodeSelector");
    let uninstall = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "uninstall"},
        "spec": spec,
    });
    ns.create(&uninstall.to_string()).expect("uninstall pod");
    let state = ns
        .wait_for(&["pod", "uninstall"], Duration::from_secs(120), terminated)
        .expect("uninstall terminates");
    let log = ns.run(&["logs", "uninstall"]).unwrap_or_default();
    assert_eq!(state["exitCode"], 0, "{state}\n{log}");
    let labels = node_labels(&node_b.name);
    assert!(
        labels.get("wasmfn.dev/wasmedge").is_none() && labels.get("wasmedge").is_none(),
        "{labels}"
    );
    assert_eq!(
        std::fs::read_to_string(&config_path).expect("config"),
        original_config,
        "the config is back to the harness's, byte for byte"
    );
    assert!(!shim.exists(), "the shim is removed");
    let _ = std::fs::remove_dir_all(&scratch);
}
