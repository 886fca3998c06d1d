//! `make bench-executions`: WasmExecution latency on the local cluster with the real operator.
//!
//! Everything is timed from watch events (`kubectl get -w`), so `kubectl create`'s own start-up
//! is not counted: an execution's clock starts when the execution watch sees it ADDED.
//! - create → final phase through each path, alternating in the same run: `Auto` (a Wasm pod on
//!   the WasmEdge node A) and `Container` (the runner image), p50/p99 over 50 each, and their
//!   ratio;
//! - operator overhead: execution ADDED → its pod ADDED (pod watch), p50/p99 per path;
//! - 200 executions submitted at once (parallel `kubectl create`s): wall time from the first
//!   submission until the last reaches a final phase, and how many never did (lost).

#[path = "../tests/common/executions.rs"]
mod executions;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use executions::{cluster_with_hello, execution, is_final, list, Watch, WatchEvent};
use serde_json::{json, Value};
use wasmfn_e2e::{percentile, Cluster, Kubectl};

const RUNS: usize = 50;
const BURST: usize = 200;
const SUBMITTERS: usize = 8;
const NAMESPACE: &str = "bench-wex";

/// One timed execution.
struct Sample {
    total_ms: f64,
    overhead_ms: Option<f64>,
    runtime: String,
    phase: String,
}

fn final_event(executions: &Watch, name: &str, timeout: Duration) -> Option<WatchEvent> {
    executions.wait_first(timeout, |e| e.name() == name && is_final(&e.object))
}

fn added(executions: &Watch, name: &str) -> Option<Instant> {
    executions
        .wait_first(Duration::from_secs(30), |e| e.name() == name)
        .map(|e| e.at)
}

fn pod_added(pods: &Watch, name: &str, timeout: Duration) -> Option<Instant> {
    pods.wait_first(timeout, |e| {
        e.object["metadata"]["labels"]["wasmfn.dev/execution"] == name
    })
    .map(|e| e.at)
}

/// Creates one execution and waits for it to finish.
fn timed_run(ns: &Kubectl, executions: &Watch, pods: &Watch, name: &str, runtime: &str) -> Sample {
    ns.create(&execution(name, "hello", json!({"runtime": runtime})).to_string())
        .expect("create");
    let done = final_event(executions, name, Duration::from_secs(300))
        .unwrap_or_else(|| panic!("{name} did not finish in 300 s"));
    let start = added(executions, name).expect("the watch saw it added");
    let pod = pod_added(pods, name, Duration::from_secs(5));
    Sample {
        total_ms: ms(done.at - start),
        overhead_ms: pod.map(|p| ms(p.saturating_duration_since(start))),
        runtime: done.object["status"]["runtime"]
            .as_str()
            .unwrap_or("?")
            .to_owned(),
        phase: done.object["status"]["phase"]
            .as_str()
            .unwrap_or("?")
            .to_owned(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn counts<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for item in items {
        *map.entry(item.to_owned()).or_insert(0) += 1;
    }
    map
}

/// Pulls `image` onto every node with a pod pinned to it.
fn pull_everywhere(cluster: &Cluster, ns: &Kubectl, image: &str) {
    for (index, node) in cluster.info().nodes.iter().enumerate() {
        let name = format!("pull-{index}");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
                     "nodeSelector": {"kubernetes.io/hostname": node.name},
                     "containers": [{"name": "pull", "image": image, "args": ["--version"]}]}});
        ns.create(&pod.to_string()).expect("pull pod");
        ns.wait_for(&["pod", &name], Duration::from_secs(600), |p| {
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(())
        })
        .expect("the image is pulled");
        ns.run(&["delete", "pod", &name, "--wait=false"])
            .expect("delete the pull pod");
    }
}

fn row(label: &str, samples: &[Sample]) -> (f64, f64) {
    let totals = sorted(samples.iter().map(|s| s.total_ms).collect());
    let overheads = sorted(samples.iter().filter_map(|s| s.overhead_ms).collect());
    let (p50, p99) = (percentile(&totals, 50.0), percentile(&totals, 99.0));
    let overhead = if overheads.is_empty() {
        "n/a".to_owned()
    } else {
        format!(
            "{:>7.0} {:>7.0}",
            percentile(&overheads, 50.0),
            percentile(&overheads, 99.0)
        )
    };
    let runtimes = counts(samples.iter().map(|s| s.runtime.as_str()));
    let phases = counts(samples.iter().map(|s| s.phase.as_str()));
    println!(
        "  {label:<26} {:>4} {p50:>8.0} {p99:>8.0}   {overhead:<15}  {runtimes:?} {phases:?}",
        samples.len()
    );
    (p50, p99)
}

fn main() {
    let (cluster, mut operator, ns) = cluster_with_hello("bench-executions", NAMESPACE);
    let executions = Watch::start(&ns, NAMESPACE, "wasmexecutions");
    let pods = Watch::start(&ns, NAMESPACE, "pods");

    // Images on both nodes and one run per path before anything is timed.
    pull_everywhere(
        &cluster,
        &ns,
        &wasmfn_e2e::cluster::config::image_ref("runner"),
    );
    for runtime in ["Auto", "Container"] {
        let warm = timed_run(
            &ns,
            &executions,
            &pods,
            &format!("warm-{}", runtime.to_lowercase()),
            runtime,
        );
        eprintln!(
            "warm-up {runtime}: {:.0} ms on {}",
            warm.total_ms, warm.runtime
        );
    }

    let mut auto = Vec::new();
    let mut container = Vec::new();
    for i in 0..RUNS {
        auto.push(timed_run(
            &ns,
            &executions,
            &pods,
            &format!("auto-{i}"),
            "Auto",
        ));
        container.push(timed_run(
            &ns,
            &executions,
            &pods,
            &format!("container-{i}"),
            "Container",
        ));
    }

    // The burst: SUBMITTERS parallel `kubectl create`s of BURST/SUBMITTERS executions each.
    let names: Vec<String> = (0..BURST).map(|i| format!("burst-{i}")).collect();
    let submitted = Instant::now();
    std::thread::scope(|scope| {
        for chunk in names.chunks(BURST.div_ceil(SUBMITTERS)) {
            let ns = ns.clone();
            scope.spawn(move || {
                let items = chunk
                    .iter()
                    .map(|n| execution(n, "hello", json!({})))
                    .collect();
                ns.create(&list(items)).expect("create a burst chunk");
            });
        }
    });
    let all_created = submitted.elapsed();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut finished: BTreeMap<String, WatchEvent> = BTreeMap::new();
    while finished.len() < BURST && Instant::now() < deadline {
        for event in executions.events() {
            if event.name().starts_with("burst-") && is_final(&event.object) {
                finished.entry(event.name().to_owned()).or_insert(event);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let last = finished.values().map(|e| e.at).max();
    let wall = last.map(|t| t - submitted).unwrap_or_default();
    let lost = BURST - finished.len();
    let burst_latencies = sorted(
        finished
            .iter()
            .filter_map(|(name, done)| added(&executions, name).map(|a| ms(done.at - a)))
            .collect(),
    );
    let burst_phases = counts(
        finished
            .values()
            .map(|e| e.object["status"]["phase"].as_str().unwrap_or("?")),
    );
    let burst_reasons = counts(
        finished
            .values()
            .map(|e| e.object["status"]["reason"].as_str().unwrap_or("?")),
    );
    let burst_runtimes = counts(
        finished
            .values()
            .map(|e| e.object["status"]["runtime"].as_str().unwrap_or("?")),
    );

    println!();
    println!("WasmExecution latency (hello module, real operator, local two-node cluster)");
    println!(
        "  {:<26} {:>4} {:>8} {:>8}   {:<15}  runtimes / phases",
        "create -> final (ms)", "runs", "p50", "p99", "overhead p50 p99"
    );
    let (auto_p50, auto_p99) = row("Auto (WasmEdge node A)", &auto);
    let (container_p50, container_p99) = row("Container (runner image)", &container);
    println!(
        "  ratio Container / WasmEdge: p50 {:.2}x, p99 {:.2}x",
        container_p50 / auto_p50,
        container_p99 / auto_p99
    );
    println!("  overhead = execution ADDED -> its pod ADDED (watch events), the operator's share");
    println!(
        "burst: {BURST} executions submitted at once ({SUBMITTERS} parallel creates, all created after {:.1} s)",
        all_created.as_secs_f64()
    );
    let succeeded = burst_phases.get("Succeeded").copied().unwrap_or(0);
    println!(
        "  wall time to the last final phase {:.1} s ({:.1} executions/s), lost {lost} (never final), \
         succeeded {succeeded}/{BURST}",
        wall.as_secs_f64(),
        finished.len() as f64 / wall.as_secs_f64().max(0.001)
    );
    if !burst_latencies.is_empty() {
        println!(
            "  per execution create -> final: p50 {:.0} ms, p99 {:.0} ms; phases {burst_phases:?}; reasons {burst_reasons:?}; runtimes {burst_runtimes:?}",
            percentile(&burst_latencies, 50.0),
            percentile(&burst_latencies, 99.0)
        );
    }
    if lost > 0 {
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !finished.contains_key(*n))
            .take(10)
            .collect();
        println!("  not final after 900 s (first 10): {missing:?}");
        let status: Value = ns
            .json(&["get", "wasmexecution", missing[0]])
            .unwrap_or_default();
        println!("  e.g. {}", status["status"]);
    }
    println!("operator log: {}", operator.log.display());
    let started = Instant::now();
    drop(pods);
    drop(executions);
    operator.terminate(Duration::from_secs(20));
    drop(cluster);
    eprintln!("teardown {:.1} s", started.elapsed().as_secs_f64());
}
