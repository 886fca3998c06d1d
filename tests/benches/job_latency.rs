//! `make bench-cluster`: Job create → Complete latency on the local cluster, 20 Jobs one after
//! another (each from the probe image built by `make images`), timed from `kubectl create` until a
//! watch (`kubectl wait`) sees the Complete condition.

use std::time::{Duration, Instant};
use wasmfn_e2e::{percentile, Cluster};

const RUNS: usize = 20;

fn main() {
    let started = Instant::now();
    let cluster = Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster")))
        .expect("start the local cluster");
    println!(
        "cluster up (both nodes Ready) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let ns = cluster.namespace("bench").expect("namespace");
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
    let samples: Vec<Duration> = (0..RUNS).map(|i| run(&format!("job-{i}"), "")).collect();
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "job create->Complete over {RUNS} Jobs: p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms[0],
        ms[RUNS - 1],
    );
}
