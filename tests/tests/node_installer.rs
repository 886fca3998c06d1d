//! The node installer as the chart deploys it: `helm install` with `nodeInstaller.enabled`, run
//! from the image `make images` built, turns node B — a plain node — into a WasmEdge node, and a
//! `runtimeClassName: wasmfn` pod then runs a Wasm module there through the freshly installed
//! shim. On this machine a node's root is the machine's root, so the chart's `/` host mount is
//! real; the values point the installer at node B's containerd config and socket and at a
//! scratch install directory, and reach the apiserver over the host network.
//!
//! The restart command is the test's: it fails until the test allows it (so the failed-restart
//! path runs through the DaemonSet's own retry), then only leaves a request, which the test
//! serves by having the cluster's supervisor restart node B's containerd, as
//! `systemctl restart containerd` would on a real node. The node must stay unlabelled until
//! containerd's CRI shows the handler.

mod common;

use common::hardened_pod::{config_map, HardenedPod};
use common::{cluster, namespace, terminated};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wasmfn_e2e::cluster::layout::WASM_RUNTIME_CLASS;
use wasmfn_e2e::helm::{chart_dir, Helm};

const RELEASE: &str = "wasmfn-installer";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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

/// The installer's init container status of the DaemonSet's one pod.
fn installer_status(pod: &Value) -> &Value {
    &pod["status"]["initContainerStatuses"][0]
}

#[test]
fn the_charts_installer_labels_a_plain_node_only_once_containerd_loaded_the_handler_and_wasm_pods_run_there(
) {
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
    let original_config = std::fs::read_to_string(&config_path).expect("node B config");
    assert!(
        !original_config.contains("io.containerd.wasmfn.v1"),
        "node B starts as a plain node"
    );

    let ns = namespace("installer");
    let ns_name = ns
        .namespace_name()
        .expect("a namespaced kubectl")
        .to_owned();
    let allow = scratch.join("allow-restart");
    let requested = scratch.join("restart-requested");
    let restart_command = format!(
        "test -e /host{} && touch /host{}",
        allow.display(),
        requested.display()
    );
    let kubeconfig = cluster().info().kubeconfig();
    let helm = Helm::new().expect("helm").with_kubeconfig(&kubeconfig);
    let settings = [
        "operator.replicas=0".to_string(),
        "agent.enabled=false".to_string(),
        "wasmedge.runtimeClass.create=false".to_string(),
        "metrics.service.enabled=false".to_string(),
        "nodeInstaller.enabled=true".to_string(),
        format!(
            "nodeInstaller.installDir={}",
            scratch.join("opt/wasmfn").display()
        ),
        format!("nodeInstaller.containerdConfig={}", config_path.display()),
        format!(
            "nodeInstaller.criSocket={}",
            node_b.containerd_socket.display()
        ),
        format!("nodeInstaller.restartCommand={restart_command}"),
        "localCluster.hostNetwork=true".to_string(),
        "localCluster.apiServerHost=127.0.0.1".to_string(),
        format!("localCluster.apiServerPort={apiserver_port}"),
    ];
    let chart = chart_dir();
    let mut args = vec![
        "install",
        RELEASE,
        chart.to_str().expect("utf-8"),
        "--namespace",
        &ns_name,
    ];
    for setting in &settings {
        args.extend(["--set", setting.as_str()]);
    }
    helm.run(&args).expect("helm install");

    // Opt node B in, as an administrator would.
    let admin = cluster().kubectl();
    admin
        .run(&[
            "label",
            "node",
            &node_b.name,
            "wasmfn.dev/node-installer=enabled",
        ])
        .expect("opt node B in");
    let selector = ["pods", "-l", "app.kubernetes.io/component=node-installer"];
    let failed_pod = ns
        .wait_for(&selector, Duration::from_secs(180), |list| {
            let pod = list["items"].as_array()?.first()?.clone();
            let status = installer_status(&pod);
            let failed = [
                &status["state"]["terminated"],
                &status["lastState"]["terminated"],
            ]
            .into_iter()
            .any(|t| !t.is_null() && t["exitCode"] != 0);
            failed.then_some(pod)
        })
        .expect("the installer's first run fails: its restart command is refused");
    assert_eq!(failed_pod["spec"]["nodeName"], node_b.name.as_str());
    let pod_name = failed_pod["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let restarted_once = installer_status(&failed_pod)["restartCount"]
        .as_i64()
        .unwrap_or_default()
        > 0;
    let mut first_log_args = vec!["logs", pod_name.as_str(), "-c", "install"];
    if restarted_once {
        first_log_args.push("--previous");
    }
    let first_log = ns.run(&first_log_args).expect("first installer log");
    assert!(
        first_log.contains("handler wasmfn registered")
            && first_log.contains("starts (host check)")
            && first_log.matches("the restart failed").count() == 2,
        "{first_log}"
    );
    let labels = node_labels(&node_b.name);
    assert!(
        labels.get("wasmfn.dev/wasmedge").is_none(),
        "no label after a failed restart: {labels}"
    );

    // Allow the restart: the DaemonSet runs the installer again, which restarts (its pending
    // marker says the config is ahead of containerd) and then waits for the CRI.
    std::fs::write(&allow, "").expect("allow the restart");
    assert!(
        wait_for_file(&requested, Duration::from_secs(180)),
        "the installer ran again and asked for a restart"
    );
    std::thread::sleep(Duration::from_secs(2));
    let labels = node_labels(&node_b.name);
    assert!(
        labels.get("wasmfn.dev/wasmedge").is_none(),
        "no label while containerd has not loaded the handler: {labels}"
    );
    cluster()
        .restart_containerd(&node_b.name)
        .expect("restart node B's containerd");
    let installer_pod = ns
        .wait_for(&["pod", &pod_name], Duration::from_secs(180), |pod| {
            let done = &installer_status(pod)["state"]["terminated"];
            (!done.is_null() && done["exitCode"] == 0).then(|| pod.clone())
        })
        .expect("the installer's second run succeeds");
    let log = ns
        .run(&["logs", &pod_name, "-c", "install"])
        .expect("installer log");
    assert!(log.contains("an earlier restart failed"), "{log}");
    assert!(
        log.contains("containerd has loaded handler wasmfn (CRI status)"),
        "{log}"
    );

    let labels = node_labels(&node_b.name);
    assert_eq!(labels["wasmfn.dev/wasmedge"], "true", "{labels}");
    assert_eq!(labels["wasmfn"], "provisioned", "{labels}");

    let shim = scratch.join("opt/wasmfn/bin/containerd-shim-wasmfn-v1");
    assert!(shim.is_file(), "the shim is installed on the host");
    let config = std::fs::read_to_string(&config_path).expect("config");
    assert!(config.starts_with(&original_config), "{config}");
    assert!(
        config.contains(&format!("runtime_path = \"{}\"", shim.display())),
        "{config}"
    );
    let loaded = std::fs::read_to_string(&containerd_log).expect("containerd log");
    let starts: Vec<&str> = loaded
        .lines()
        .filter(|l| l.contains("Start cri plugin with config"))
        .collect();
    assert!(
        starts.len() >= 2
            && starts[starts.len() - 1].contains(&format!(
                "wasmfn:{{Type:io.containerd.wasmfn.v1 Path:{}",
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
    let pod = HardenedPod::new("wasm-on-b", &common::image("wasm-pod"))
        .runtime_class(WASM_RUNTIME_CLASS)
        .on_node(&node_b.name)
        .command(&["/artifact/probe.wasm", "from", "node-b"])
        .env("WASMFN_TIMEOUT_MS", "10000")
        .volume(config_map("artifact", "modules"), "/artifact", false);
    ns.create(&pod.manifest()).expect("wasm pod");
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

    // Uninstall with the chart's pod template: labels, handler and files go.
    let mut spec = installer_pod["spec"].clone();
    let mut container = spec["initContainers"][0].clone();
    container["args"][0] = json!("uninstall");
    spec["restartPolicy"] = json!("Never");
    spec["nodeName"] = json!(node_b.name);
    spec["containers"] = json!([container]);
    for field in ["initContainers", "nodeSelector", "tolerations"] {
        spec.as_object_mut().expect("spec").remove(field);
    }
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
        labels.get("wasmfn.dev/wasmedge").is_none() && labels.get("wasmfn").is_none(),
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
