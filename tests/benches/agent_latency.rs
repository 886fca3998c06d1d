//! `make bench-agent`: the three run paths on one fresh local cluster, in one run.
//!
//! Timed from watch events (`kubectl get -w`): an execution's clock starts when the watch sees
//! it ADDED and stops at the event with its final phase.
//! - create → final, `WASMFN_BENCH_RUNS` (default 200) sequential executions per path and
//!   module (hello; fib(27) as a CPU-bound reactor call): the agent (operator with agents),
//!   then a Wasm pod and a container pod (the same cluster, the operator restarted without
//!   agents, so placement falls back exactly as it does when no agent is Ready);
//! - a burst of `WASMFN_BENCH_BURST` (default 1,000) hello executions created by 8 concurrent
//!   API clients in this process: executions/s from the first create to the last final phase,
//!   lost and failed, with the API requests per execution and the CPU each process used;
//! - the agent's RSS idle, after the burst and after 10,000 runs (the rest sent straight to it
//!   with the operator's client and certificate), and the operator's RSS.

#[path = "../tests/common/executions.rs"]
mod executions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use executions::{execution, is_final, prebuilt_function, Watch, WatchEvent, HELLO};
use serde_json::json;
use wasmfn_agent_protocol::client::{AgentClient, RunAnswer};
use wasmfn_agent_protocol::tls::Identity;
use wasmfn_agent_protocol::{RunAssignment, RunSettings};
use wasmfn_api::WasmExecution;
use wasmfn_e2e::agents::{Agents, PORT};
use wasmfn_e2e::operator::{crds_dir, process_memory, OperatorProcess};
use wasmfn_e2e::{percentile, Cluster, Kubectl};

const FIB: &str = include_str!("../../runner-image/guests/wat/fib.wat");
const NAMESPACE: &str = "bench-agent";
const SUBMITTERS: usize = 8;
const RSS_RUNS: usize = 10_000;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn added(watch: &Watch, name: &str) -> Option<Instant> {
    watch
        .wait_first(Duration::from_secs(30), |e| e.name() == name)
        .map(|e| e.at)
}

/// One execution, created and awaited: (ms, path, phase).
fn timed(
    ns: &Kubectl,
    watch: &Watch,
    name: &str,
    function: &str,
    spec: serde_json::Value,
) -> (f64, String, String) {
    ns.create(&execution(name, function, spec).to_string())
        .expect("create");
    let done = watch
        .wait_first(Duration::from_secs(300), |e| {
            e.name() == name && is_final(&e.object)
        })
        .unwrap_or_else(|| panic!("{name} did not finish"));
    let start = added(watch, name).expect("added");
    let status = &done.object["status"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    (
        ms(done.at - start),
        text(&status["path"]),
        text(&status["phase"]),
    )
}

/// `runs` sequential executions of `function` with `spec`; their latencies, sorted.
fn series(
    ns: &Kubectl,
    watch: &Watch,
    label: &str,
    runs: usize,
    function: &str,
    spec: &serde_json::Value,
    want_path: &str,
) -> Vec<f64> {
    let mut samples = Vec::with_capacity(runs);
    let mut paths = BTreeMap::new();
    for i in 0..runs {
        let (latency, path, phase) =
            timed(ns, watch, &format!("{label}-{i}"), function, spec.clone());
        assert_eq!(phase, "Succeeded", "{label}-{i}");
        *paths.entry(path).or_insert(0) += 1;
        samples.push(latency);
    }
    assert_eq!(
        paths.get(want_path).copied().unwrap_or(0),
        runs,
        "{label}: every run on {want_path}: {paths:?}"
    );
    samples.sort_by(f64::total_cmp);
    samples
}

/// Resident and peak memory of the agent's main process (the `wasmfn agent` whose parent is
/// not one), read from /proc.
fn agent_rss() -> Option<(u64, u64)> {
    let mut agents = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() >= 2 && args[0].ends_with(b"wasmfn") && args[1] == b"agent" {
            agents.push(pid);
        }
    }
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let main = agents
        .iter()
        .copied()
        .find(|pid| parent(*pid).is_none_or(|p| !agents.contains(&p)))?;
    process_memory(main)
}

fn mib(bytes: Option<(u64, u64)>) -> String {
    bytes.map_or("?".into(), |(rss, peak)| {
        format!(
            "{:.1} MiB (peak {:.1} MiB)",
            rss as f64 / 1048576.0,
            peak as f64 / 1048576.0
        )
    })
}

/// CPU seconds used so far by every process on the machine, summed by command name (kernel
/// workers in one sum: a worker's name changes with the work item it last ran).
fn cpu_by_command() -> BTreeMap<String, f64> {
    // USER_HZ is 100 on Linux.
    let mut used = BTreeMap::new();
    // The machine's busy time as a whole (it includes processes that ended, such as run
    // children): user, nice, system, irq, softirq and steal of /proc/stat's first line.
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        let busy: f64 = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .enumerate()
            .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum();
        used.insert("(whole machine)".to_owned(), busy / 100.0);
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return used;
    };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let name = if name.starts_with("kworker/") {
            "kernel workers".to_owned()
        } else {
            name
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        *used.entry(name).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    used
}

/// The API server's request counts by verb and resource (`apiserver_request_total`).
fn api_requests(cluster: &Kubectl) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    let Ok(text) = cluster.run(&["get", "--raw", "/metrics"]) else {
        return counts;
    };
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            let key = format!("{name}=\"");
            line.find(&key).map(|at| {
                let rest = &line[at + key.len()..];
                rest[..rest.find('"').unwrap_or(0)].to_owned()
            })
        };
        let (Some(verb), Some(resource), Some(value)) = (
            label("verb"),
            label("resource"),
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        let subresource = label("subresource").filter(|s| !s.is_empty());
        let key = match subresource {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        *counts.entry(key).or_insert(0.0) += value;
    }
    counts
}

/// What grew between two snapshots, largest first, as `name value` pairs above `floor`.
fn growth(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    per: f64,
    floor: f64,
) -> String {
    let mut grown: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0.0)) / per))
        .filter(|(_, v)| *v >= floor)
        .collect();
    grown.sort_by(|a, b| b.1.total_cmp(&a.1));
    grown
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The burst: `count` hello executions created by SUBMITTERS concurrent API clients (one
/// process, as a workflow engine would; a `kubectl` per batch would measure kubectl).
fn burst(ns: &Kubectl, watch: &Watch, count: usize) -> String {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let submitted = Instant::now();
    runtime.block_on(async {
        let api = kube::Api::<WasmExecution>::namespaced(executions::client(ns).await, NAMESPACE);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut submitters = Vec::new();
        for _ in 0..SUBMITTERS {
            let (api, next) = (api.clone(), next.clone());
            submitters.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let object: WasmExecution = serde_json::from_value(execution(
                        &format!("burst-{i}"),
                        "hello",
                        json!({}),
                    ))
                    .expect("an execution");
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
    let created = submitted.elapsed();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut finished: BTreeMap<String, WatchEvent> = BTreeMap::new();
    let mut seen = 0;
    while finished.len() < count && Instant::now() < deadline {
        let new = watch.events_after(seen);
        seen += new.len();
        for event in new {
            if event.name().starts_with("burst-") && is_final(&event.object) {
                finished.entry(event.name().to_owned()).or_insert(event);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = finished
        .values()
        .map(|e| e.at)
        .max()
        .map(|t| t - submitted)
        .unwrap_or_default();
    let mut phases = BTreeMap::new();
    let mut paths = BTreeMap::new();
    for event in finished.values() {
        let status = &event.object["status"];
        *phases
            .entry(status["phase"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
        *paths
            .entry(status["path"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    let succeeded = phases.get("Succeeded").copied().unwrap_or(0);
    format!(
        "{count} created in {:.1} s by {SUBMITTERS} clients; last final phase after {:.1} s: \
         {:.0} executions/s; lost {} (never final), failed {}; paths {paths:?}",
        created.as_secs_f64(),
        wall.as_secs_f64(),
        finished.len() as f64 / wall.as_secs_f64().max(0.001),
        count - finished.len(),
        finished.len() - succeeded,
    )
}

/// Runs straight to the agent until it has run `total` in all, 8 at a time; how many it sent
/// and how long they took.
fn drive_agent(
    agents: &Agents,
    address: &str,
    module: &[u8],
    done_already: usize,
    total: usize,
) -> (usize, Duration) {
    let identity = Identity::read_dir(&agents.client_tls).expect("client certificate");
    let client = Arc::new(AgentClient::new(
        address.to_owned(),
        identity.client_config().expect("TLS"),
    ));
    let digest = format!("sha256:{}", sha256_hex(module));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let remaining = total.saturating_sub(done_already);
    let started = Instant::now();
    runtime.block_on(async {
        client
            .put_module(&digest, module.to_vec())
            .await
            .expect("module");
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let client = client.clone();
            let digest = digest.clone();
            tasks.push(tokio::spawn(async move {
                for i in (worker..remaining).step_by(8) {
                    let assignment = RunAssignment {
                        namespace: "bench".into(),
                        execution: format!("direct-{i}"),
                        uid: format!("direct-{i}"),
                        attempt: 1,
                        module_digest: digest.clone(),
                        script_media_type: None,
                        settings: RunSettings::default(),
                        stdin_base64: None,
                    };
                    match client.run(&assignment).await.expect("run") {
                        RunAnswer::Ran(_) => {}
                        RunAnswer::ModuleMissing => panic!("the agent lost the module"),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("worker");
        }
    });
    (remaining, started.elapsed())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn main() {
    let runs = setting("WASMFN_BENCH_RUNS", 200);
    let burst_size = setting("WASMFN_BENCH_BURST", 1000);
    let cluster = Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster")))
        .expect("start the cluster");
    cluster
        .kubectl()
        .run(&["apply", "-f", crds_dir().to_str().expect("utf-8")])
        .expect("CRDs");
    let state = tempfile::tempdir().expect("state");
    let agents = Agents::install(&cluster, "wasmfn-agents", state.path()).expect("agents");
    let (_, _, ip) = agents.pods().expect("agent pods")[0].clone();
    let address = format!("{ip}:{PORT}");
    let agent_idle = agent_rss();

    let flags = agents.operator_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut operator =
        OperatorProcess::start(cluster.info(), "bench-agent", &flags).expect("operator");
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("leads");
    let ns = cluster.namespace(NAMESPACE).expect("namespace");
    ns.create(&prebuilt_function("hello", HELLO, json!({})))
        .expect("hello");
    ns.create(&prebuilt_function("fib", FIB, json!({"entrypoint": "fib"})))
        .expect("fib");
    for name in ["hello", "fib"] {
        ns.wait_for(&["wasmfunction", name], Duration::from_secs(60), |f| {
            (f["status"]["phase"] == "Ready").then_some(())
        })
        .expect("Ready");
    }
    let watch = Watch::start(&ns, NAMESPACE, "wasmexecutions");
    let cpu = json!({"invokeArgs": [27]});
    let hello = json!({});
    // Warm-up: each module reaches the agent once.
    series(&ns, &watch, "warm-agent-hello", 1, "hello", &hello, "Agent");
    series(&ns, &watch, "warm-agent-fib", 1, "fib", &cpu, "Agent");
    let agent_hello = series(&ns, &watch, "agent-hello", runs, "hello", &hello, "Agent");
    let agent_fib = series(&ns, &watch, "agent-fib", runs, "fib", &cpu, "Agent");
    let admin = cluster.kubectl();
    let (requests_before, cpu_before) = (api_requests(&admin), cpu_by_command());
    let burst_line = burst(&ns, &watch, burst_size);
    let (requests_after, cpu_after) = (api_requests(&admin), cpu_by_command());
    let burst_requests = growth(&requests_before, &requests_after, burst_size as f64, 0.05);
    let burst_cpu = growth(&cpu_before, &cpu_after, 1.0, 0.5);
    let agent_after_burst = agent_rss();
    let operator_after_burst = operator.memory();
    let through_operator = 2 * runs + 2 + burst_size;
    let cpu_before_direct = cpu_by_command();
    let (direct, direct_time) = drive_agent(
        &agents,
        &address,
        &wat::parse_str(HELLO).expect("hello"),
        through_operator,
        RSS_RUNS,
    );
    let direct_cpu = growth(&cpu_before_direct, &cpu_by_command(), 1.0, 0.5);
    let agent_after_all = agent_rss();

    // The same cluster without agents: the pod paths.
    operator.terminate(Duration::from_secs(20));
    let mut operator = OperatorProcess::start(cluster.info(), "bench-pods", &[]).expect("operator");
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("leads");
    series(&ns, &watch, "warm-wasm", 1, "hello", &hello, "WasmPod");
    series(
        &ns,
        &watch,
        "warm-container",
        1,
        "hello",
        &json!({"runtime": "Container"}),
        "ContainerPod",
    );
    let wasm_hello = series(&ns, &watch, "wasm-hello", runs, "hello", &hello, "WasmPod");
    let wasm_fib = series(&ns, &watch, "wasm-fib", runs, "fib", &cpu, "WasmPod");
    let container = json!({"runtime": "Container"});
    let container_hello = series(
        &ns,
        &watch,
        "container-hello",
        runs,
        "hello",
        &container,
        "ContainerPod",
    );
    let mut container_cpu = cpu.clone();
    container_cpu["runtime"] = json!("Container");
    let container_fib = series(
        &ns,
        &watch,
        "container-fib",
        runs,
        "fib",
        &container_cpu,
        "ContainerPod",
    );

    println!();
    println!("WasmExecution create -> final phase by path (watch events; {runs} sequential runs each; one cluster, one run)");
    println!(
        "  {:<34} {:>9} {:>9} {:>14}",
        "path / module", "p50 ms", "p99 ms", "vs agent p50"
    );
    let p50 = |s: &[f64]| percentile(s, 50.0);
    let p99 = |s: &[f64]| percentile(s, 99.0);
    for (label, samples, base) in [
        ("agent / hello", &agent_hello, &agent_hello),
        ("Wasm pod / hello", &wasm_hello, &agent_hello),
        ("container pod / hello", &container_hello, &agent_hello),
        ("agent / fib(27)", &agent_fib, &agent_fib),
        ("Wasm pod / fib(27)", &wasm_fib, &agent_fib),
        ("container pod / fib(27)", &container_fib, &agent_fib),
    ] {
        println!(
            "  {label:<34} {:>9.1} {:>9.1} {:>13.1}x",
            p50(samples),
            p99(samples),
            p50(samples) / p50(base)
        );
    }
    println!("burst on the agent path: {burst_line}");
    println!("  API requests per execution during the burst (every client): {burst_requests}");
    println!("  CPU seconds during the burst by process (2 cores): {burst_cpu}");
    println!(
        "the agent alone (hello, 8 at a time from one client, no operator): {direct} runs in {:.1} s, {:.0} runs/s",
        direct_time.as_secs_f64(),
        direct as f64 / direct_time.as_secs_f64().max(0.001)
    );
    println!("  CPU seconds during those runs by process: {direct_cpu}");
    println!(
        "agent RSS: idle {}; after the burst {}; after {RSS_RUNS} runs {}",
        mib(agent_idle),
        mib(agent_after_burst),
        mib(agent_after_all)
    );
    println!(
        "operator RSS after the burst: {}",
        mib(operator_after_burst)
    );
    println!("operator log: {}", operator.log.display());
    drop(watch);
    operator.terminate(Duration::from_secs(20));
    drop(cluster);
}
