//! Faults during a burst: each test creates a burst of executions at once (half `Auto`, half
//! `Container`, `retries: 2`), injects one fault while they are in flight, and then reads the
//! watch histories: every execution final, its status never changed once final, exactly one
//! finishing event for each success, attempts within `retries` plus the 3 extra tries a loss
//! before any guest ran may add, and every failure with a reason that names the fault. Each
//! prints how long after the fault the last execution became final.
//!
//! The faults: node A's containerd restarted; node B's kubelet restarted within the node grace
//! period, and stopped past it (node B goes NotReady, its runs are `NodeLost` and retried on
//! node A); run pods deleted at random; the API server restarted (every watch, the operator's
//! and the test's, breaks; the operator runs as the chart's two replicas, so losing its lease
//! meanwhile hands over); the leader killed, and paused past its lease; the warm agent's main
//! process killed with runs on it (the chart's agent, installed here for that test; its burst has
//! one retry, which the run lost with the agent spends, so a retry the dead agent refused before
//! any guest ran must not count).
//!
//! The faults run one at a time on the suite's cluster (they share its nodes and the operator
//! Lease).

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::burst::{create_all, manifests, wait_all_final, Report, NODE_LABEL};
use common::executions::{events_for, execution, prebuilt_function, Watch, HELLO, SLEEPER};
use serde_json::{json, Value};
use wasmfn_e2e::agents::Agents;
use wasmfn_e2e::operator::OperatorProcess;
use wasmfn_e2e::Kubectl;

const COUNT: usize = 30;
const RETRIES: i32 = 2;
/// Attempts a loss before any guest ran may add beyond `retries`.
const START_RETRIES: i64 = 3;
/// The agent fault's burst: fewer, longer runs (the sleeper), so that several are on the agent
/// (two at a time on its two CPUs, the rest queued there) when it dies.
const AGENT_COUNT: usize = 16;
const AGENT_RUN_MILLIS: &str = "4000";
/// One retry: the run lost with the agent spends it, so a retry refused by the dead agent (no
/// guest ran) must not count against it, or the execution fails.
const AGENT_RETRIES: i32 = 1;

/// One fault at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A namespace with the Ready function `hello`, and watches of its executions and pods.
fn setup(prefix: &str) -> (Kubectl, String, Watch, Watch) {
    setup_with(prefix, "hello", HELLO)
}

/// A namespace with the Ready function `function` (assembled from `wat`), and watches of its
/// executions and pods.
fn setup_with(prefix: &str, function: &str, wat: &str) -> (Kubectl, String, Watch, Watch) {
    let ns = common::namespace(prefix);
    let name = ns
        .namespace_name()
        .expect("a namespaced kubectl")
        .to_owned();
    ns.create(&prebuilt_function(function, wat, json!({})))
        .expect("create the function");
    ns.wait_for(&["wasmfunction", function], Duration::from_secs(120), |f| {
        (f["status"]["phase"] == "Ready").then_some(())
    })
    .expect("the function is Ready");
    let executions = Watch::start(&ns, &name, "wasmexecutions");
    let pods = Watch::start(&ns, &name, "pods");
    (ns, name, executions, pods)
}

/// Creates the burst and waits until `in_flight` of its run pods exist.
fn burst(ns: &Kubectl, namespace: &str, pods: &Watch, in_flight: usize) {
    burst_until(ns, namespace, pods, in_flight, |_| true);
}

/// Creates the burst and waits until `in_flight` of its run pods exist and `ready` holds of the
/// pod watch.
fn burst_until(
    ns: &Kubectl,
    namespace: &str,
    pods: &Watch,
    in_flight: usize,
    ready: impl Fn(&Watch) -> bool,
) {
    create_all(ns, namespace, manifests(COUNT, "hello", RETRIES));
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let seen = pods.labelled("wasmfn.dev/attempt", "1").len();
        if seen >= in_flight && ready(pods) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{in_flight} run pods (and the fault's own condition) before the fault, saw {seen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for the burst of `count` executions with `retries` to end and checks what every fault
/// must leave; failures may only carry one of `fault_reasons`. Returns the report and how long after `fault_at` the last
/// execution became final.
fn settled(
    ns: &Kubectl,
    executions: &Watch,
    pods: &Watch,
    count: usize,
    retries: i32,
    fault_at: Instant,
    fault_reasons: &[&str],
) -> (Report, Duration) {
    wait_all_final(executions, count, Duration::from_secs(900));
    let after = fault_at.elapsed();
    let report = Report::read(executions, pods);
    let summary = report.summary();
    println!("{summary}");
    assert_eq!(report.executions, count, "{summary}");
    assert_eq!(
        report.phases.get("never final"),
        None,
        "every execution final\n{summary}"
    );
    assert!(report.went_back.is_empty(), "{:?}", report.went_back);
    let most = i64::from(retries) + 1 + START_RETRIES;
    assert!(
        report.attempts.keys().all(|a| (1..=most).contains(a)),
        "attempts within 1..={most}: {:?}",
        report.attempts
    );
    for (reason, count) in &report.reasons {
        assert!(
            reason == "Succeeded" || fault_reasons.contains(&reason.as_str()),
            "{count} ended {reason}, which does not name the fault ({fault_reasons:?})\n{summary}"
        );
    }
    let succeeded: Vec<String> = (0..count)
        .map(|i| format!("burst-{i}"))
        .filter(|name| {
            executions
                .events()
                .iter()
                .rev()
                .find(|e| e.name() == name)
                .is_some_and(|e| e.object["status"]["phase"] == "Succeeded")
        })
        .collect();
    let mut finishing: BTreeMap<String, u64> = BTreeMap::new();
    for name in &succeeded {
        let count = events_for(ns, name)
            .iter()
            .filter(|(_, reason, _, _)| reason == "Succeeded")
            .map(|(_, _, _, count)| count)
            .sum();
        finishing.insert(name.clone(), count);
    }
    assert!(
        finishing.values().all(|count| *count == 1),
        "exactly one finishing event per success: {finishing:?}"
    );
    println!("every execution final {after:?} after the fault");
    (report, after)
}

/// One operator, one burst, `fault` injected once 6 run pods exist (given the namespace's
/// kubectl and its pod watch); what [`settled`] checks, failures only with `fault_reasons`.
fn under_fault(
    prefix: &str,
    fault: impl FnOnce(&Kubectl, &Watch),
    fault_reasons: &[&str],
) -> Report {
    under_fault_held(prefix, |_| true, fault, fault_reasons).0
}

/// [`under_fault`], the fault injected once `ready` also holds of the pod watch; returns what the
/// fault returned too (dropped by the caller after its own checks) and the namespace.
fn under_fault_held<T>(
    prefix: &str,
    ready: impl Fn(&Watch) -> bool,
    fault: impl FnOnce(&Kubectl, &Watch) -> T,
    fault_reasons: &[&str],
) -> (Report, T, Kubectl) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut operator = common::leading_operator(&format!("faults-{prefix}"), &[]);
    let (ns, name, executions, pods) = setup(prefix);
    burst_until(&ns, &name, &pods, 6, ready);
    let at = Instant::now();
    let held = fault(&ns, &pods);
    let (report, _) = settled(&ns, &executions, &pods, COUNT, RETRIES, at, fault_reasons);
    operator.terminate(Duration::from_secs(20));
    (report, held, ns)
}

/// The node a run pod is bound or admitted to.
fn pod_node(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"]
        .as_str()
        .or_else(|| pod["metadata"]["labels"][NODE_LABEL].as_str())
}

/// Whether a run pod (its last state seen) is neither finished nor being deleted.
fn pod_in_flight(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) && pod["metadata"]["deletionTimestamp"].is_null()
}

/// The executions' last states as listed now, by name.
fn executions_now(ns: &Kubectl) -> BTreeMap<String, Value> {
    let list = ns
        .json(&["get", "wasmexecutions"])
        .expect("list executions");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["metadata"]["name"].as_str().unwrap_or_default();
            (name.to_owned(), e.clone())
        })
        .collect()
}

/// Warning events with `reason` about executions in the namespace: (execution, note).
fn warnings(ns: &Kubectl, reason: &str) -> Vec<(String, String)> {
    let events = ns
        .json(&["get", "events.events.k8s.io"])
        .expect("list events");
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["type"] == "Warning"
                && e["reason"] == reason
                && e["regarding"]["kind"] == "WasmExecution"
        })
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (text(&e["regarding"]["name"]), text(&e["note"]))
        })
        .collect()
}

fn node_ready(node: &Value) -> Option<String> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(String::from))
}

/// A node's kubelet stopped for the guard's lifetime; started again (and awaited Ready) on drop,
/// so the suite's next test has both nodes.
struct KubeletStopped(String);

impl Drop for KubeletStopped {
    fn drop(&mut self) {
        if let Err(e) = common::cluster().start_kubelet(&self.0) {
            eprintln!("could not start node {}'s kubelet again: {e}", self.0);
            return;
        }
        let kubectl = common::cluster().kubectl();
        if let Err(e) = kubectl.wait_for(&["node", &self.0], Duration::from_secs(120), |n| {
            (node_ready(n).as_deref() == Some("True")).then_some(())
        }) {
            eprintln!("node {} did not become Ready again: {e}", self.0);
        }
    }
}

#[test]
fn containerd_restarting_on_node_a_mid_burst_loses_nothing() {
    under_fault(
        "containerd",
        |_, _| {
            let node_a = common::cluster().info().wasmedge_node().name.clone();
            common::cluster()
                .restart_containerd(&node_a)
                .expect("restart node A's containerd");
        },
        &["PodStartFailed", "PodDeleted", "ResultUnreadable"],
    );
}

#[test]
fn kubelet_restarting_on_node_b_mid_burst_loses_nothing() {
    under_fault(
        "kubelet",
        |_, _| {
            let node_b = common::cluster().info().plain_node().name.clone();
            common::cluster()
                .stop_kubelet(&node_b)
                .expect("stop node B's kubelet");
            std::thread::sleep(Duration::from_secs(3));
            common::cluster()
                .start_kubelet(&node_b)
                .expect("start node B's kubelet");
        },
        &["PodStartFailed", "PodDeleted", "NodeLost"],
    );
}

#[test]
fn node_b_kubelet_stopped_past_the_grace_period_mid_burst_loses_its_runs_to_node_a_and_nothing_else(
) {
    let (node_a, node_b) = {
        let cluster = common::cluster();
        (
            cluster.info().wasmedge_node().name.clone(),
            cluster.info().plain_node().name.clone(),
        )
    };
    let on_b = |pods: &Watch| -> Vec<String> {
        pods.labelled("wasmfn.dev/attempt", "1")
            .iter()
            .filter(|p| pod_node(p) == Some(node_b.as_str()) && pod_in_flight(p))
            .filter_map(|p| p["metadata"]["labels"]["wasmfn.dev/execution"].as_str())
            .map(str::to_owned)
            .collect()
    };
    let (report, (stopped, in_flight_on_b), ns) = under_fault_held(
        "kubelet-lost",
        |pods| !on_b(pods).is_empty(),
        |_, pods| {
            let in_flight = on_b(pods);
            common::cluster()
                .stop_kubelet(&node_b)
                .expect("stop node B's kubelet");
            let stopped = KubeletStopped(node_b.clone());
            // The node-lifecycle controller's grace period is 20 s on this cluster.
            common::cluster()
                .kubectl()
                .wait_for(&["node", &node_b], Duration::from_secs(90), |n| {
                    (node_ready(n).as_deref() != Some("True")).then_some(())
                })
                .expect("node B goes NotReady");
            (stopped, in_flight)
        },
        &["NodeLost"],
    );
    // The kubelet stayed stopped until every execution was final.
    drop(stopped);
    println!("run pods in flight on node B when its kubelet stopped: {in_flight_on_b:?}");
    let lost = warnings(&ns, "NodeLost");
    assert!(
        !lost.is_empty(),
        "runs in flight on node B ({in_flight_on_b:?}) were lost as NodeLost\n{}",
        report.summary()
    );
    let now = executions_now(&ns);
    for (name, note) in &lost {
        assert!(
            note.contains(&format!("its node {node_b} is not Ready"))
                || note.contains(&format!("node {node_b} stopped answering")),
            "{name}: {note}"
        );
        let status = &now[name]["status"];
        assert_eq!(status["phase"], "Succeeded", "{name}: {status:#}");
        assert_eq!(
            status["node"],
            node_a.as_str(),
            "retried on node A: {status:#}"
        );
    }
    println!("lost with node B: {lost:?}");
}

/// Statuses of executions that were final in `before` and later differ in `after` (a second
/// watch started after the first one broke).
fn changed_after_final(before: &Watch, after: &Watch) -> Vec<String> {
    let mut finals: BTreeMap<String, Value> = BTreeMap::new();
    for event in before.events() {
        if common::executions::is_final(&event.object) {
            finals
                .entry(event.name().to_owned())
                .or_insert_with(|| event.object["status"].clone());
        }
    }
    let mut changed: Vec<String> = after
        .events()
        .iter()
        .filter(|e| {
            finals
                .get(e.name())
                .is_some_and(|f| *f != e.object["status"])
        })
        .map(|e| {
            format!(
                "{}: final {}, then {}",
                e.name(),
                finals[e.name()],
                e.object["status"]
            )
        })
        .collect();
    changed.dedup();
    changed
}

#[test]
fn the_apiserver_restarting_mid_burst_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The chart's shape: two replicas. The leader may not renew its lease while the API server
    // is down; it then steps down (exits) and the standby takes over.
    let mut leader = common::leading_operator("faults-apiserver-one", &[]);
    let mut standby = common::operator_replica("faults-apiserver-two", &[]);
    let (ns, name, executions_before, pods_before) = setup("apiserver");
    burst(&ns, &name, &pods_before, 6);
    let at = Instant::now();
    common::cluster()
        .restart_apiserver()
        .expect("restart the API server");
    println!(
        "API server answering again {:?} after the restart began",
        at.elapsed()
    );
    // `kubectl get -w` ends with its connection; nothing is written while no API server runs,
    // so a second watch's first list picks up where the first ended.
    let executions = Watch::start(&ns, &name, "wasmexecutions");
    let pods = Watch::start(&ns, &name, "pods");
    settled(&ns, &executions, &pods, COUNT, RETRIES, at, &[]);
    let before = Report::read(&executions_before, &pods_before);
    assert!(before.went_back.is_empty(), "{:?}", before.went_back);
    let changed = changed_after_final(&executions_before, &executions);
    assert!(changed.is_empty(), "{changed:#?}");
    let handed_over = leader.exit_status().is_some();
    println!(
        "the first leader {}",
        if handed_over {
            "lost its lease during the restart and stepped down; the standby finished the burst"
        } else {
            "kept its lease through the restart"
        }
    );
    standby.terminate(Duration::from_secs(20));
    leader.terminate(Duration::from_secs(20));
}

/// The PID (on the host) of the main process of container `container_id` (`containerd://…`),
/// found in its cgroup below the node's pod cgroup: the one process there whose parent is not.
fn container_main_pid(pods_cgroup: &str, container_id: &str) -> Option<u32> {
    let id = container_id.rsplit("://").next()?;
    let container = common::find_cgroup(pods_cgroup, id)?;
    let procs = std::fs::read_to_string(container.join("cgroup.procs")).ok()?;
    let pids: Vec<u32> = procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    pids.iter()
        .copied()
        .find(|pid| parent(*pid).is_some_and(|p| !pids.contains(&p)))
}

/// A process's parent (field 4 of its stat).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn the_agent_killed_mid_burst_loses_its_runs_to_retries_and_nothing_is_lost() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let state = tempfile::tempdir().expect("state directory");
    let agents =
        Agents::install(&common::cluster(), "faults-agents", state.path()).expect("install agents");
    let flags = agents.operator_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut operator = {
        let cluster = common::cluster();
        common::burst::apply_crds(&cluster);
        OperatorProcess::start(cluster.info(), "faults-agent", &flags).expect("operator")
    };
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("the operator leads");
    let (ns, name, executions, pods) = setup_with("agent-killed", "sleeper", SLEEPER);
    let burst = (0..AGENT_COUNT)
        .map(|i| {
            let runtime = if i % 2 == 0 { "Auto" } else { "Container" };
            let spec =
                json!({"runtime": runtime, "retries": AGENT_RETRIES, "args": [AGENT_RUN_MILLIS]});
            execution(&format!("burst-{i}"), "sleeper", spec)
        })
        .collect();
    create_all(&ns, &name, burst);
    // The agent's runs show in status once they have run for 5 s.
    let on_agent = || -> Vec<String> {
        let mut last: BTreeMap<String, Value> = BTreeMap::new();
        for event in executions.events() {
            last.insert(event.name().to_owned(), event.object);
        }
        last.into_iter()
            .filter(|(_, e)| e["status"]["path"] == "Agent" && e["status"]["phase"] == "Running")
            .map(|(name, _)| name)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while on_agent().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "two runs on the agent, saw {:?}",
            on_agent()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let was_on_agent = on_agent();
    let pods_of_agent = agents.pods().expect("agent pods");
    assert_eq!(pods_of_agent.len(), 1, "one agent: {pods_of_agent:?}");
    let agent_pod = agents
        .namespace
        .json(&["get", "pod", &pods_of_agent[0].0])
        .expect("the agent pod");
    let container = agent_pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "agent")
        .expect("the agent container's status")
        .clone();
    let restarts = container["restartCount"].as_i64().unwrap_or(0);
    let pods_cgroup = common::cluster().info().wasmedge_node().pods_cgroup.clone();
    let pid = container_main_pid(
        &pods_cgroup,
        container["containerID"].as_str().expect("containerID"),
    )
    .expect("the agent's main process in its container's cgroup");
    let at = Instant::now();
    wasmfn_e2e::cluster::process::signal(pid, libc::SIGKILL);
    println!("killed the agent's main process, pid {pid}, with {was_on_agent:?} on it");
    settled(
        &ns,
        &executions,
        &pods,
        AGENT_COUNT,
        RETRIES,
        at,
        &["AgentLost"],
    );
    let lost = warnings(&ns, "AgentLost");
    println!("lost with the agent: {lost:?}");
    assert!(
        was_on_agent
            .iter()
            .all(|n| lost.iter().any(|(l, _)| l == n)),
        "every run noted on the agent was lost with it ({was_on_agent:?}): {lost:?}"
    );
    let now = executions_now(&ns);
    for (name, _) in &lost {
        let status = &now[name]["status"];
        assert_eq!(status["phase"], "Succeeded", "{name}: {status:#}");
        assert_eq!(status["stdout"], "slept\n", "{name}: {status:#}");
    }
    agents
        .wait_ready(Duration::from_secs(120))
        .expect("the agent is back");
    let pod = agents
        .namespace
        .json(&["get", "pod", &pods_of_agent[0].0])
        .expect("the agent pod");
    let restarted = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "agent")
        .and_then(|c| c["restartCount"].as_i64())
        .unwrap_or(0);
    assert!(
        restarted > restarts,
        "the kill restarted the agent container: {:#}",
        pod["status"]
    );
    operator.terminate(Duration::from_secs(20));
}

#[test]
fn run_pods_deleted_at_random_mid_burst_are_retried_and_nothing_is_lost() {
    let mut deleted = Vec::new();
    let report = under_fault(
        "deletions",
        |ns, pods| {
            // Every third run pod seen so far, whatever its state.
            deleted = pods
                .labelled("wasmfn.dev/attempt", "1")
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                .step_by(3)
                .collect();
            for victim in &deleted {
                let _ = ns.run(&["delete", "pod", victim, "--wait=false"]);
            }
        },
        &["PodDeleted"],
    );
    assert!(
        report.attempts.keys().any(|a| *a > 1) || deleted.is_empty(),
        "a deleted pod's execution ran again: {:?} (deleted {deleted:?})",
        report.attempts
    );
}

#[test]
fn the_leader_killed_mid_burst_hands_over_to_the_standby_and_nothing_is_lost() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut leader = common::leading_operator("faults-leader-one", &[]);
    let mut standby = common::operator_replica("faults-leader-two", &[]);
    let (ns, name, executions, pods) = setup("leader-killed");
    burst(&ns, &name, &pods, 6);
    let at = Instant::now();
    leader.kill();
    standby
        .wait_for_log("became the leader", Duration::from_secs(90))
        .expect("the standby takes over");
    settled(&ns, &executions, &pods, COUNT, RETRIES, at, &[]);
    standby.terminate(Duration::from_secs(20));
}

#[test]
fn the_leader_paused_past_its_lease_mid_burst_never_writes_after_the_standby_took_over() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut leader = common::leading_operator("faults-pause-one", &[]);
    let mut standby = common::operator_replica("faults-pause-two", &[]);
    let (ns, name, executions, pods) = setup("leader-paused");
    burst(&ns, &name, &pods, 6);
    let at = Instant::now();
    leader.signal(libc::SIGSTOP);
    standby
        .wait_for_log("became the leader", Duration::from_secs(90))
        .expect("the standby takes over");
    // Twice the default 10 s lease in all.
    let paused_for = at.elapsed();
    std::thread::sleep(Duration::from_secs(20).saturating_sub(paused_for));
    leader.signal(libc::SIGCONT);
    settled(&ns, &executions, &pods, COUNT, RETRIES, at, &[]);
    let stopped = (0..30).any(|_| {
        std::thread::sleep(Duration::from_secs(1));
        leader.exit_status().is_some()
    });
    assert!(stopped, "the resumed leader stops instead of acting");
    standby.terminate(Duration::from_secs(20));
}
