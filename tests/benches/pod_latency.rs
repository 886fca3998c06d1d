//! `make bench-wasm-pods`: pod create → Succeeded for a hello module, a Wasm pod on node A (the
//! project's shim, no runtime image) against a runner-image pod on node B (`wasmfn exec`), 20 of
//! each in the same run. Phases come from a `kubectl get pods --watch` stream, so the timing is
//! event-driven rather than polled. Also reports the result documents' own total time (module
//! load + run inside the core) to show how much of a pod's life the run itself is.

use serde_json::Value;
use std::collections::HashMap;
use std::io::BufReader;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wasmfn_e2e::cluster::layout::WASM_RUNTIME_CLASS;
use wasmfn_e2e::{percentile, Cluster};

const RUNS: usize = 20;

fn pod(name: &str, wasm: bool, node_b: &str, image_runner: &str, image_wasm: &str) -> String {
    let (placement, image, command) = if wasm {
        (
            format!("  runtimeClassName: {WASM_RUNTIME_CLASS}\n"),
            image_wasm,
            r#"["/artifact/hello.wasm"]"#,
        )
    } else {
        (
            format!("  nodeSelector:\n    kubernetes.io/hostname: \"{node_b}\"\n"),
            image_runner,
            r#"["wasmfn", "exec", "/artifact/hello.wasm"]"#,
        )
    };
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
{placement}  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
  containers:
  - name: run
    image: {image}
    command: {command}
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
      name: hello
"
    )
}

fn main() {
    let cluster = Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster")))
        .expect("start the local cluster");
    let ns = cluster.namespace("bench").expect("namespace");
    let dir = std::env::temp_dir().join(format!("wasmfn-pod-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let hello = dir.join("hello.wasm");
    let wat = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runner-image/guests/wat/hello.wat");
    let status = Command::new("wat2wasm")
        .arg(&wat)
        .arg("-o")
        .arg(&hello)
        .status()
        .expect("wat2wasm");
    assert!(status.success(), "wat2wasm failed");
    ns.run(&[
        "create",
        "configmap",
        "hello",
        &format!("--from-file={}", hello.display()),
    ])
    .expect("configmap");

    // Watch every pod of the namespace; report the first moment each is seen Succeeded.
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let mut watch = Command::new(cluster.info().kubectl_path())
        .arg(format!(
            "--kubeconfig={}",
            cluster.info().kubeconfig().display()
        ))
        .args(["-n", "bench", "get", "pods", "--watch", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for pod in
            serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>()
        {
            let Ok(pod) = pod else { break };
            if pod["status"]["phase"] == "Succeeded" {
                let name = pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if tx.send((name, Instant::now())).is_err() {
                    break;
                }
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    let node_b = cluster.info().plain_node().name.clone();
    let runner = wasmfn_e2e::cluster::config::image_ref("runner");
    let wasm = wasmfn_e2e::cluster::config::image_ref("wasm-pod");
    let mut done: HashMap<String, Instant> = HashMap::new();
    let mut wait_for = |name: &str| -> Instant {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(t) = done.remove(name) {
                return t;
            }
            let (pod, t) = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("pod succeeds in time");
            done.entry(pod).or_insert(t);
        }
    };
    let mut run = |name: String, wasm_pod: bool| -> (f64, f64) {
        let created = Instant::now();
        ns.create(&pod(&name, wasm_pod, &node_b, &runner, &wasm))
            .expect("create pod");
        let finished = wait_for(&name);
        let state = ns.json(&["get", "pod", &name]).expect("pod");
        let message = state["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
            .as_str()
            .unwrap_or("{}")
            .to_string();
        let document: Value = serde_json::from_str(&message).unwrap_or(Value::Null);
        assert_eq!(document["reason"], "Completed", "{name}: {message}");
        (
            finished.duration_since(created).as_secs_f64() * 1000.0,
            document["timings"]["totalMs"].as_f64().unwrap_or(f64::NAN),
        )
    };
    // One warm-up each: the first pod on a node pulls its image.
    let (w, _) = run("warm-wasm".into(), true);
    let (r, _) = run("warm-runner".into(), false);
    println!("first pod (includes the image pull): Wasm pod {w:.0} ms, runner pod {r:.0} ms");
    let mut results = Vec::new();
    for (label, wasm_pod) in [
        ("Wasm pod on node A (shim)", true),
        ("runner pod on node B (wasmfn exec)", false),
    ] {
        let mut latencies = Vec::new();
        let mut core = Vec::new();
        for i in 0..RUNS {
            let (latency, total) = run(
                format!("{}-{i}", if wasm_pod { "wasm" } else { "runner" }),
                wasm_pod,
            );
            latencies.push(latency);
            core.push(total);
        }
        latencies.sort_by(f64::total_cmp);
        core.sort_by(f64::total_cmp);
        println!(
            "{label}: create->Succeeded p50 {:.0} ms, p99 {:.0} ms over {RUNS}; the core's own load+run p50 {:.2} ms",
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            percentile(&core, 50.0)
        );
        results.push(percentile(&latencies, 50.0));
    }
    println!(
        "ratio runner pod p50 / Wasm pod p50: {:.2}",
        results[1] / results[0]
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = std::fs::remove_dir_all(dir);
}
