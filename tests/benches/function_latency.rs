//! `make bench-operator`: WasmFunction create → Ready on the local cluster with the real operator.
//!
//! Timed by a watch (`kubectl get wasmfunctions -w -o json`) from the moment the watch sees the
//! object added until it sees phase Ready, so `kubectl create`'s own start-up is not counted.
//! - a cache miss per language (a compile Job on the builder image; the builder is pulled onto
//!   both nodes first so no pull is counted);
//! - a cache hit: 20 functions with a source already compiled (p50, p99), and the ratio of the
//!   miss of the same source to the hit median.

use std::collections::HashMap;
use std::io::BufReader;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmfn_e2e::operator::{crds_dir, OperatorProcess};
use wasmfn_e2e::{percentile, Cluster, Kubectl};

const HITS: usize = 20;

/// Watches the namespace's functions; sends (name, phase, when) for every event.
fn watch(ns: &Kubectl, namespace: &str) -> mpsc::Receiver<(String, String, Instant)> {
    let (tx, rx) = mpsc::channel();
    let mut child = Command::new(ns.binary())
        .args(["--kubeconfig"])
        .arg(ns.kubeconfig())
        .args(["-n", namespace, "get", "wasmfunctions", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for object in
            serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>()
        {
            let Ok(object) = object else { break };
            let now = Instant::now();
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let phase = object["status"]["phase"]
                .as_str()
                .unwrap_or("Added")
                .to_owned();
            if tx.send((name, phase, now)).is_err() {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    });
    rx
}

/// Creates a function and returns its create→Ready time as the watch saw it.
fn time_to_ready(
    ns: &Kubectl,
    events: &mpsc::Receiver<(String, String, Instant)>,
    name: &str,
    language: &str,
    code: &str,
) -> Duration {
    // The source trees use the builder's lower-case names; the API spells them in PascalCase.
    let language: wasmfn_api::Language =
        serde_json::from_value(json!(language)).expect("a language the API knows");
    let manifest = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction", "metadata": {"name": name},
                          "spec": {"language": language, "source": {"code": code}}});
    ns.create(&manifest.to_string()).expect("create");
    let mut seen: HashMap<&str, Instant> = HashMap::new();
    loop {
        let (who, phase, at) = events
            .recv_timeout(Duration::from_secs(600))
            .expect("watch events");
        if who != name {
            continue;
        }
        let added = *seen.entry("added").or_insert(at);
        match phase.as_str() {
            "Ready" => return at - added,
            "Failed" => panic!("{name} failed to compile"),
            _ => {}
        }
    }
}

fn source(language: &str, file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runner-image/compile/tests/sources")
        .join(language)
        .join(file);
    std::fs::read_to_string(path).expect("source")
}

fn main() {
    let cluster = Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster")))
        .expect("start the cluster");
    cluster
        .kubectl()
        .run(&["apply", "-f", crds_dir().to_str().expect("utf-8")])
        .expect("CRDs");
    let mut operator = OperatorProcess::start(cluster.info(), "bench", &[]).expect("operator");
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("leads");
    let ns = cluster.namespace("bench-fn").expect("namespace");
    let events = watch(&ns, "bench-fn");

    // Pull the builder image onto both nodes (one compile each) before timing anything.
    for (index, node) in cluster.info().nodes.iter().enumerate() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pull-{index}")},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"kubernetes.io/hostname": node.name},
                     "containers": [{"name": "pull", "image": wasmfn_e2e::cluster::config::image_ref("builder"), "args": ["--version"]}]}});
        ns.create(&pod.to_string()).expect("pull pod");
        ns.wait_for(
            &["pod", &format!("pull-{index}")],
            Duration::from_secs(600),
            |p| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(()),
        )
        .expect("the builder image is pulled");
    }

    println!("cache miss (compile Job), create -> Ready:");
    let languages = [
        ("wat", "echo.wat"),
        ("rust", "echo.rs"),
        ("c", "echo.c"),
        ("cpp", "echo.cpp"),
        ("go", "echo.go"),
        ("assemblyscript", "echo.ts"),
        ("python", "echo.py"),
        ("javascript", "echo.js"),
    ];
    let mut wat_miss = Duration::ZERO;
    for (language, file) in languages {
        let elapsed = time_to_ready(
            &ns,
            &events,
            &format!("miss-{language}"),
            language,
            &source(language, file),
        );
        if language == "wat" {
            wat_miss = elapsed;
        }
        println!(
            "  {language:<15} {:>8.0} ms",
            elapsed.as_secs_f64() * 1000.0
        );
    }

    let wat = source("wat", "echo.wat");
    let mut hits: Vec<f64> = (0..HITS)
        .map(|i| {
            time_to_ready(&ns, &events, &format!("hit-{i}"), "wat", &wat).as_secs_f64() * 1000.0
        })
        .collect();
    hits.sort_by(f64::total_cmp);
    let p50 = percentile(&hits, 50.0);
    println!(
        "cache hit, create -> Ready over {HITS}: p50 {p50:.1} ms, p99 {:.1} ms (goal p50 <= 100 ms); \
         the same source's miss {:.0} ms is {:.0}x the hit median",
        percentile(&hits, 99.0),
        wat_miss.as_secs_f64() * 1000.0,
        wat_miss.as_secs_f64() * 1000.0 / p50
    );
    let started = Instant::now();
    operator.terminate(Duration::from_secs(20));
    drop(cluster);
    eprintln!("teardown {:.1} s", started.elapsed().as_secs_f64());
}
