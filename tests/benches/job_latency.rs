//! `make bench-cluster`: Job create → Complete latency on the local cluster, 20 Jobs one after
//! another (each from the probe image built by `make images`), timed from `kubectl create` until a
//! watch (`kubectl wait`) sees the Complete condition.

use std::time::{Duration, Instant};
use wasmfn_e2e::Cluster;

const RUNS: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let started = Instant::now();
    let cluster = Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster")))
        .expect("start the local cluster");
    println!(
        "cluster up (both nodes Ready) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let kubectl = cluster.kubectl();
    kubectl
        .run(&["create", "namespace", "bench"])
        .expect("namespace");
    let ns = kubectl.in_namespace("bench");
    ns.wait_for(
        &["serviceaccount", "default"],
        Duration::from_secs(30),
        |_| Some(()),
    )
    .expect("default service account");
    let image = wasmfn_e2e::cluster::config::image_ref("probe");
    let job = |name: &str, selector: &str| {
        format!(
            "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
{selector}      containers:
      - name: probe
        image: {image}
        args: [\"echo\", \"{name}\"]
"
        )
    };
    let run = |name: &str, selector: &str| {
        let t = Instant::now();
        ns.create(&job(name, selector)).expect("create job");
        ns.run(&[
            "wait",
            &format!("job/{name}"),
            "--for=condition=complete",
            "--timeout=120s",
        ])
        .expect("job completes");
        t.elapsed()
    };
    // The first Job on each node pulls the image; report those apart from the steady state.
    for node in &cluster.info().nodes {
        let selector = format!(
            "      nodeSelector:\n        kubernetes.io/hostname: \"{}\"\n",
            node.name
        );
        let first = run(&format!("warm-{}", node.key), &selector);
        println!(
            "first Job on node {} (includes the image pull): {:.0} ms",
            node.name,
            first.as_secs_f64() * 1000.0
        );
    }
    let mut samples: Vec<Duration> = (0..RUNS).map(|i| run(&format!("job-{i}"), "")).collect();
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "job create->Complete over {RUNS} Jobs: p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples[0]),
        ms(samples[RUNS - 1]),
    );
}
