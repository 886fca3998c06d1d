//! Hostile functions are contained: a Rust function whose build script tries to reach a pod on
//! its node's bridge, starts processes until it cannot and writes until it may not, ends
//! `Failed` with what happened in its diagnostics, inside its deadline; both nodes stay Ready and
//! an execution running meanwhile succeeds.
//!
//! What holds it: the compile pod's network is taken down by an init container before the build
//! (`wasmfn isolate-network`), the kubelet caps a pod's processes (`podPidsLimit`, the pids
//! cgroup), and the compile driver caps the size of any file a toolchain writes (1 GiB). Each is
//! checked against a control: an ordinary pod on the same node does reach the listener.

mod common;

use std::time::{Duration, Instant};

use common::executions::{execution, prebuilt_function, HELLO};
use serde_json::{json, Value};
use wasmfn_e2e::Kubectl;

const PORT: u16 = 8080;
/// The kubelet's `podPidsLimit` on the local cluster.
const POD_PIDS: usize = 1024;
/// The compile driver's `RLIMIT_FSIZE`.
const FILE_LIMIT: u64 = 1 << 30;
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

const CARGO_TOML: &str = "[package]\nname = \"hostile\"\nversion = \"0.1.0\"\nedition = \"2021\"\n";
const MAIN_RS: &str = "fn main() {\n    println!(\"never built\");\n}\n";

/// The build script: each finding is a located error line, so it reaches the diagnostics.
fn build_rs(targets: &[String]) -> String {
    let targets = targets
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"use std::net::{{SocketAddr, TcpStream}};
use std::process::{{Child, Command, Stdio}};
use std::time::Duration;

fn report(what: &str) {{
    eprintln!("build.rs:1:1: error: HOSTILE {{what}}");
}}

fn main() {{
    for target in [{targets}] {{
        let address: SocketAddr = target.parse().expect("an address");
        match TcpStream::connect_timeout(&address, Duration::from_secs(3)) {{
            Ok(_) => report(&format!("connected to {{target}}")),
            Err(e) => report(&format!("no connection to {{target}}: {{e}}")),
        }}
    }}
    let mut children: Vec<Child> = Vec::new();
    let stop = loop {{
        if children.len() >= 5000 {{
            break "nothing stopped it".to_owned();
        }}
        let spawned = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {{
            Ok(child) => children.push(child),
            Err(e) => break e.to_string(),
        }}
    }};
    report(&format!("started {{}} processes, then: {{stop}}", children.len()));
    for child in &mut children {{
        let _ = child.kill();
        let _ = child.wait();
    }}
    let path = format!("{{}}/filler", std::env::var("OUT_DIR").unwrap_or_else(|_| "/tmp".into()));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c 8589934592 /dev/zero > {{path}}"))
        .status();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let ended = match status {{
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    }};
    report(&format!("the writer ended ({{ended}}) at {{size}} bytes"));
    std::process::exit(1);
}}
"#
    )
}

fn pinned_probe(name: &str, node: &str, args: &[&str]) -> String {
    common::probe_pod(name, Some(node), args, "")
}

fn pod_ip(ns: &Kubectl, name: &str) -> String {
    ns.wait_for(&["pod", name], Duration::from_secs(240), |p| {
        (p["status"]["phase"] == "Running")
            .then(|| p["status"]["podIP"].as_str().map(str::to_owned))
            .flatten()
    })
    .unwrap_or_else(|e| panic!("{name} running: {e}"))
}

fn finished_pod(ns: &Kubectl, name: &str) -> Value {
    ns.wait_for(&["pod", name], Duration::from_secs(240), |p| {
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then(|| p.clone())
    })
    .unwrap_or_else(|e| panic!("{name} finished: {e}"))
}

fn nodes_ready(ns: &Kubectl) -> Vec<(String, String)> {
    let nodes: Value = serde_json::from_str(
        &ns.run(&["get", "nodes", "-o", "json"])
            .expect("kubectl get nodes"),
    )
    .expect("json");
    nodes["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            let ready = n["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"].as_str().unwrap_or("?").to_owned())
                .unwrap_or_default();
            (
                n["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
                ready,
            )
        })
        .collect()
}

#[test]
fn a_build_script_that_dials_out_forks_and_fills_the_disk_fails_contained_while_others_run() {
    let _operator = common::leading_operator("hostile-suite", &[]);
    let nodes: Vec<String> = common::cluster()
        .info()
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let ns = common::namespace("hostile");

    // A listener on each node's bridge, and proof an ordinary pod there reaches it.
    let mut targets = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let listener = format!("listener-{index}");
        ns.create(&pinned_probe(
            &listener,
            node,
            &["listen", &PORT.to_string()],
        ))
        .expect("create a listener");
        let ip = pod_ip(&ns, &listener);
        let control = format!("control-{index}");
        ns.create(&pinned_probe(
            &control,
            node,
            &["connect", &ip, &PORT.to_string()],
        ))
        .expect("create a control pod");
        let pod = finished_pod(&ns, &control);
        let log = ns.run(&["logs", &control]).unwrap_or_default();
        assert_eq!(
            pod["status"]["phase"], "Succeeded",
            "an ordinary pod on {node} reaches {ip}:{PORT}: {log}"
        );
        assert!(log.contains("connected: hello"), "{log}");
        targets.push(format!("{ip}:{PORT}"));
    }

    let source = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hostile-src"},
        "data": {"Cargo.toml": CARGO_TOML, "build.rs": build_rs(&targets), "src__main.rs": MAIN_RS}});
    ns.create(&source.to_string()).expect("create the source");
    let function = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
        "metadata": {"name": "hostile"},
        "spec": {"language": "rust", "source": {"configMapRef": {"name": "hostile-src"}},
                 "build": {"timeoutSeconds": BUILD_TIMEOUT.as_secs()}}});
    let started = Instant::now();
    ns.create(&function.to_string())
        .expect("create the hostile function");

    // Another tenant's execution runs meanwhile.
    ns.create(&prebuilt_function("bystander", HELLO, json!({})))
        .expect("create the bystander function");
    ns.wait_for(
        &["wasmfunction", "hostile"],
        Duration::from_secs(240),
        |f| (f["status"]["phase"] == "Compiling").then_some(()),
    )
    .expect("the hostile compile runs");
    ns.create(&execution("bystander-run", "bystander", json!({})).to_string())
        .expect("create the bystander execution");

    let failed = ns
        .wait_for(
            &["wasmfunction", "hostile"],
            BUILD_TIMEOUT + Duration::from_secs(120),
            |f| {
                matches!(f["status"]["phase"].as_str(), Some("Failed" | "Ready")).then(|| f.clone())
            },
        )
        .expect("the hostile function ends");
    let took = started.elapsed();
    let status = &failed["status"];
    let diagnostics: Vec<String> = status["compile"]["diagnostics"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let text = diagnostics.join("\n");
    println!("hostile function after {took:?}: {}\n{text}", status);
    assert_eq!(status["phase"], "Failed", "{status}");
    assert_eq!(status["compile"]["reason"], "CompileError", "{status}");
    assert!(took < BUILD_TIMEOUT, "ended inside its deadline: {took:?}");
    for target in &targets {
        assert!(
            text.contains(&format!("HOSTILE no connection to {target}")),
            "the build reached no pod on the bridge ({target}):\n{text}"
        );
    }
    assert!(!text.contains("HOSTILE connected"), "{text}");
    let started_line = text
        .lines()
        .find(|l| l.contains("HOSTILE started"))
        .unwrap_or_else(|| panic!("the fork report:\n{text}"));
    let count: usize = started_line
        .split("HOSTILE started ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a process count in {started_line}"));
    assert!(
        count > 10 && count < POD_PIDS && !started_line.contains("nothing stopped it"),
        "the pod's process cap stopped the fork loop: {started_line}"
    );
    assert!(
        text.contains(&format!("at {FILE_LIMIT} bytes")),
        "the file-size cap stopped the writer at 1 GiB:\n{text}"
    );

    let bystander = ns
        .wait_for(
            &["wasmexecution", "bystander-run"],
            Duration::from_secs(240),
            |e| common::executions::is_final(e).then(|| e.clone()),
        )
        .expect("the bystander ends");
    assert_eq!(
        bystander["status"]["phase"], "Succeeded",
        "{}",
        bystander["status"]
    );
    for (node, ready) in nodes_ready(&ns) {
        assert_eq!(ready, "True", "node {node} stays Ready");
    }
}
