//! A burst of hello executions created at once, and what its watch histories say: shared by the
//! `burst` suite (a small burst in CI) and `make bench-burst` (1,000).
//!
//! Everything is read from `kubectl get -w` histories of the namespace's executions and pods, so
//! nothing the operator does between two reads is missed: each execution's final phase, reasons
//! and attempts, whether a status ever went back from a final phase, the run pods in flight per
//! node at every moment, pods Kubernetes stopped at their deadline, and the stages of each
//! pod-run execution (create→pod, pod→started, started→finished, finished→recorded).

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmfn_api::WasmExecution;
use wasmfn_e2e::{percentile, Kubectl};

use super::executions::{client, execution, is_final, Watch, WatchEvent, FINAL_PHASES};

/// Concurrent API clients creating the burst.
pub const SUBMITTERS: usize = 8;
/// The label admission puts on a run pod: the node it was admitted to.
pub const NODE_LABEL: &str = "wasmfn.dev/node";
const EXECUTION_LABEL: &str = "wasmfn.dev/execution";

/// The burst's executions: `burst-<i>`, of function `function`, the even ones `runtime: Auto`,
/// the odd ones `runtime: Container`, all with `retries`.
pub fn manifests(count: usize, function: &str, retries: i32) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let runtime = if i % 2 == 0 { "Auto" } else { "Container" };
            execution(
                &format!("burst-{i}"),
                function,
                json!({"runtime": runtime, "retries": retries}),
            )
        })
        .collect()
}

/// Creates `manifests` in `namespace` with [`SUBMITTERS`] clients; how long that took.
pub fn create_all(ns: &Kubectl, namespace: &str, manifests: Vec<Value>) -> Duration {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    runtime.block_on(async {
        let api = kube::Api::<WasmExecution>::namespaced(client(ns).await, namespace);
        let queue = Arc::new(std::sync::Mutex::new(manifests));
        let mut submitters = Vec::new();
        for _ in 0..SUBMITTERS {
            let (api, queue) = (api.clone(), queue.clone());
            submitters.push(tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some(manifest) = next else { return };
                    let object: WasmExecution =
                        serde_json::from_value(manifest).expect("an execution");
                    api.create(&Default::default(), &object)
                        .await
                        .expect("create a burst execution");
                }
            }));
        }
        for submitter in submitters {
            submitter.await.expect("submitter");
        }
    });
    started.elapsed()
}

/// Waits until every one of `count` burst executions has a final phase (or `timeout`).
pub fn wait_all_final(executions: &Watch, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut finished = HashSet::new();
    let mut seen = 0;
    while finished.len() < count && Instant::now() < deadline {
        let new = executions.events_after(seen);
        seen += new.len();
        for event in new {
            if event.name().starts_with("burst-") && is_final(&event.object) {
                finished.insert(event.name().to_owned());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Per-stage latencies of one pod-run execution, from watch arrival times.
#[derive(Clone, Debug, Default)]
struct Stages {
    added: Option<Instant>,
    pod: Option<Instant>,
    started: Option<Instant>,
    finished: Option<Instant>,
    recorded: Option<Instant>,
}

/// What a burst's histories say.
#[derive(Debug, Default)]
pub struct Report {
    /// Executions seen.
    pub executions: usize,
    /// Final phase (or "never final") → count.
    pub phases: BTreeMap<String, usize>,
    /// Final reason (`status.reason`, else the Succeeded condition's) → count.
    pub reasons: BTreeMap<String, usize>,
    /// `status.path` → count.
    pub paths: BTreeMap<String, usize>,
    /// `status.attempts` → count.
    pub attempts: BTreeMap<i64, usize>,
    /// Executions whose condition said `Queued` at some point.
    pub queued: usize,
    /// Executions whose status changed after it was final (must be none).
    pub went_back: Vec<String>,
    /// Run pods Kubernetes stopped at `activeDeadlineSeconds`.
    pub deadline_exceeded: Vec<String>,
    /// The most run pods in flight on each node at one moment.
    pub max_in_flight: BTreeMap<String, usize>,
    /// Run pods seen.
    pub pods: usize,
    /// From the first execution seen to the last final phase.
    pub wall: Duration,
    /// Stage → its latencies in ms (pod-run executions only).
    pub stages: BTreeMap<&'static str, Vec<f64>>,
}

fn ms(from: Option<Instant>, to: Option<Instant>) -> Option<f64> {
    Some(to?.checked_duration_since(from?)?.as_secs_f64() * 1000.0)
}

fn container_state(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]["state"]
}

fn pod_finished(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

fn pod_node(pod: &Value) -> Option<String> {
    pod["spec"]["nodeName"]
        .as_str()
        .or_else(|| pod["metadata"]["labels"][NODE_LABEL].as_str())
        .map(str::to_owned)
}

impl Report {
    /// Reads the histories of the burst's executions and run pods.
    pub fn read(executions: &Watch, pods: &Watch) -> Report {
        let mut report = Report::default();
        let mut stages: HashMap<String, Stages> = HashMap::new();
        let mut last: BTreeMap<String, Value> = BTreeMap::new();
        let mut final_phase: HashMap<String, String> = HashMap::new();
        let mut final_status: HashMap<String, Value> = HashMap::new();
        let mut changed = HashSet::new();
        let mut queued = HashSet::new();
        let (mut first, mut end) = (None::<Instant>, None::<Instant>);
        for event in executions.events() {
            let name = event.name().to_owned();
            if !name.starts_with("burst-") {
                continue;
            }
            first = Some(first.map_or(event.at, |f| f.min(event.at)));
            let entry = stages.entry(name.clone()).or_default();
            entry.added.get_or_insert(event.at);
            let status = &event.object["status"];
            let phase = status["phase"].as_str().unwrap_or_default().to_owned();
            if status["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "Queued"))
            {
                queued.insert(name.clone());
            }
            match final_phase.get(&name) {
                Some(was)
                    if final_status.get(&name) != Some(status) && changed.insert(name.clone()) =>
                {
                    report
                        .went_back
                        .push(format!("{name}: final {was}, then {status}"));
                }
                Some(_) => {}
                None if FINAL_PHASES.contains(&phase.as_str()) => {
                    final_phase.insert(name.clone(), phase.clone());
                    final_status.insert(name.clone(), status.clone());
                    entry.recorded = Some(event.at);
                    end = Some(end.map_or(event.at, |e| e.max(event.at)));
                }
                None => {}
            }
            last.insert(name, event.object);
        }
        report.executions = last.len();
        report.queued = queued.len();
        report.wall = match (first, end) {
            (Some(first), Some(end)) => end - first,
            _ => Duration::ZERO,
        };
        for (name, object) in &last {
            let status = &object["status"];
            let phase = final_phase
                .get(name)
                .cloned()
                .unwrap_or_else(|| "never final".to_owned());
            *report.phases.entry(phase).or_insert(0) += 1;
            let reason = status["reason"]
                .as_str()
                .or_else(|| {
                    status["conditions"]
                        .as_array()?
                        .iter()
                        .find(|c| c["type"] == "Succeeded")?["reason"]
                        .as_str()
                })
                .unwrap_or("?");
            *report.reasons.entry(reason.to_owned()).or_insert(0) += 1;
            *report
                .paths
                .entry(status["path"].as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
            *report
                .attempts
                .entry(status["attempts"].as_i64().unwrap_or(0))
                .or_insert(0) += 1;
        }
        // Pods: in flight from their first event until finished or deleted, on the node they
        // are bound or admitted to.
        let mut in_flight: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut seen_pods = HashSet::new();
        for event in pods.events() {
            let pod = &event.object;
            let Some(execution) = pod["metadata"]["labels"][EXECUTION_LABEL].as_str() else {
                continue;
            };
            let name = event.name().to_owned();
            seen_pods.insert(name.clone());
            if pod["status"]["reason"] == "DeadlineExceeded"
                && !report.deadline_exceeded.contains(&name)
            {
                report.deadline_exceeded.push(name.clone());
            }
            let gone = event.kind == "DELETED" || pod_finished(pod);
            if let Some(node) = pod_node(pod) {
                let here = in_flight.entry(node.clone()).or_default();
                if gone {
                    here.remove(&name);
                } else {
                    here.insert(name.clone());
                }
                let most = report.max_in_flight.entry(node).or_insert(0);
                *most = (*most).max(here.len());
            }
            // The execution label is the execution's name (short names are kept as they are).
            if let Some(stages) = stages.get_mut(execution) {
                stages.pod.get_or_insert(event.at);
                let state = container_state(pod);
                if !state["running"].is_null() || !state["terminated"].is_null() {
                    stages.started.get_or_insert(event.at);
                }
                if !state["terminated"].is_null() {
                    stages.finished.get_or_insert(event.at);
                }
            }
        }
        report.pods = seen_pods.len();
        for s in stages.values().filter(|s| s.pod.is_some()) {
            for (stage, value) in [
                ("create→pod", ms(s.added, s.pod)),
                ("pod→started", ms(s.pod, s.started)),
                ("started→finished", ms(s.started, s.finished)),
                ("finished→recorded", ms(s.finished, s.recorded)),
                ("create→recorded", ms(s.added, s.recorded)),
            ] {
                if let Some(value) = value {
                    report.stages.entry(stage).or_default().push(value);
                }
            }
        }
        report
    }

    /// Executions per second, first seen to last final.
    pub fn rate(&self) -> f64 {
        self.phases
            .iter()
            .filter(|(p, _)| p.as_str() != "never final")
            .map(|(_, n)| *n)
            .sum::<usize>() as f64
            / self.wall.as_secs_f64().max(0.001)
    }

    /// A few lines for a person: rate, histograms, in-flight maxima and stage percentiles.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} executions, last final after {:.1} s: {:.1} executions/s\n\
             phases {:?}\nreasons {:?}\npaths {:?}\nattempts {:?}\n\
             queued at some point: {}; run pods: {}; most in flight per node {:?}\n\
             pods stopped at their deadline: {}; statuses changed after final: {}\n",
            self.executions,
            self.wall.as_secs_f64(),
            self.rate(),
            self.phases,
            self.reasons,
            self.paths,
            self.attempts,
            self.queued,
            self.pods,
            self.max_in_flight,
            self.deadline_exceeded.len(),
            self.went_back.len(),
        );
        for (stage, values) in &self.stages {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            out.push_str(&format!(
                "  {stage:<18} p50 {:>8.0} ms  p99 {:>8.0} ms  max {:>8.0} ms  (n={})\n",
                percentile(&sorted, 50.0),
                percentile(&sorted, 99.0),
                sorted.last().copied().unwrap_or(0.0),
                sorted.len()
            ));
        }
        out
    }
}

/// Waits until the operator's `wasmfn_executions_queued` gauge reads 0 (it is refreshed every
/// few seconds); the last value read.
pub fn queue_drained(health_port: u16, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let value = wasmfn_e2e::observability::scrape(health_port)
            .map(|m| m.sum("wasmfn_executions_queued", &[]))
            .unwrap_or(f64::NAN);
        if value == 0.0 || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Events of `watch` (for a failure message: the last few).
pub fn tail(events: &[WatchEvent], n: usize) -> String {
    events
        .iter()
        .rev()
        .take(n)
        .map(|e| format!("{} {} {}", e.kind, e.name(), e.object["status"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cap on run pods per node the burst's operator runs with (the chart's default).
pub const CAP: usize = 10;

/// On `cluster` (CRDs applied here): starts the operator as `identity` with agents off and
/// `cap` run pods per node (0: no admission queue), creates the function `hello` and a burst of `count` executions in namespace
/// `namespace`, waits until all are final (at most `timeout`); the report and the queue gauge
/// read after the burst.
/// Applies the repository's CRDs (generated from the API types) to `cluster`.
pub fn apply_crds(cluster: &wasmfn_e2e::Cluster) {
    cluster
        .kubectl()
        .run(&[
            "apply",
            "-f",
            wasmfn_e2e::operator::crds_dir().to_str().expect("utf-8"),
        ])
        .expect("apply the CRDs");
}

pub fn run(
    cluster: &wasmfn_e2e::Cluster,
    identity: &str,
    namespace: &str,
    count: usize,
    cap: usize,
    timeout: Duration,
) -> (Report, f64) {
    apply_crds(cluster);
    let cap = cap.to_string();
    let mut operator = wasmfn_e2e::operator::OperatorProcess::start_with_env(
        cluster.info(),
        identity,
        &[],
        &[("WASMFN_MAX_RUN_PODS_PER_NODE", cap.as_str())],
    )
    .expect("start the operator");
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("the operator leads");
    let ns = cluster.namespace(namespace).expect("namespace");
    ns.create(&super::executions::prebuilt_function(
        "hello",
        super::executions::HELLO,
        json!({}),
    ))
    .expect("create the function");
    ns.wait_for(&["wasmfunction", "hello"], Duration::from_secs(60), |f| {
        (f["status"]["phase"] == "Ready").then_some(())
    })
    .expect("the function is Ready");
    let executions = Watch::start(&ns, namespace, "wasmexecutions");
    let pods = Watch::start(&ns, namespace, "pods");
    let created = create_all(&ns, namespace, manifests(count, "hello", 0));
    println!(
        "{count} executions created in {:.1} s by {SUBMITTERS} clients",
        created.as_secs_f64()
    );
    wait_all_final(&executions, count, timeout);
    // The last pod deletions reach the pod watch shortly after the last result.
    std::thread::sleep(Duration::from_secs(2));
    let report = Report::read(&executions, &pods);
    let queued = queue_drained(operator.health_port, Duration::from_secs(30));
    (report, queued)
}
