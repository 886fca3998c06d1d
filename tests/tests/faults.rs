//! Faults during a burst: each test creates 30 hello executions at once (half `Auto`, half
//! `Container`, `retries: 2`), injects one fault while run pods are in flight, and then reads
//! the watch histories: every execution final, its status never changed once final, exactly one
//! finishing event for each success, attempts within `retries` plus the 3 extra tries a loss
//! before any guest ran may add, and every failure with a reason that names the fault.
//!
//! The faults run one at a time on the suite's cluster (they share its nodes and the operator
//! Lease). Restarting the API server, stopping a kubelet past the node grace period and killing
//! an agent are covered elsewhere or not yet (see the closing note).

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::burst::{create_all, manifests, wait_all_final, Report};
use common::executions::{events_for, prebuilt_function, Watch, HELLO};
use serde_json::json;
use wasmfn_e2e::Kubectl;

const COUNT: usize = 30;
const RETRIES: i32 = 2;
/// Attempts a loss before any guest ran may add beyond `retries`.
const START_RETRIES: i64 = 3;

/// One fault at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A namespace with the Ready function `hello`, and watches of its executions and pods.
fn setup(prefix: &str) -> (Kubectl, String, Watch, Watch) {
    let ns = common::namespace(prefix);
    let name = ns
        .namespace_name()
        .expect("a namespaced kubectl")
        .to_owned();
    ns.create(&prebuilt_function("hello", HELLO, json!({})))
        .expect("create hello");
    ns.wait_for(&["wasmfunction", "hello"], Duration::from_secs(120), |f| {
        (f["status"]["phase"] == "Ready").then_some(())
    })
    .expect("hello is Ready");
    let executions = Watch::start(&ns, &name, "wasmexecutions");
    let pods = Watch::start(&ns, &name, "pods");
    (ns, name, executions, pods)
}

/// Creates the burst and waits until `in_flight` of its run pods exist.
fn burst(ns: &Kubectl, namespace: &str, pods: &Watch, in_flight: usize) {
    create_all(ns, namespace, manifests(COUNT, "hello", RETRIES));
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let seen = pods.labelled("wasmfn.dev/attempt", "1").len();
        if seen >= in_flight {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{in_flight} run pods before the fault, saw {seen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for the burst to end and checks what every fault must leave; failures may only carry
/// one of `fault_reasons`. Returns the report and how long after `fault_at` the last execution
/// became final.
fn settled(
    ns: &Kubectl,
    executions: &Watch,
    pods: &Watch,
    fault_at: Instant,
    fault_reasons: &[&str],
) -> (Report, Duration) {
    wait_all_final(executions, COUNT, Duration::from_secs(900));
    let after = fault_at.elapsed();
    let report = Report::read(executions, pods);
    let summary = report.summary();
    println!("{summary}");
    assert_eq!(report.executions, COUNT, "{summary}");
    assert_eq!(
        report.phases.get("never final"),
        None,
        "every execution final\n{summary}"
    );
    assert!(report.went_back.is_empty(), "{:?}", report.went_back);
    let most = i64::from(RETRIES) + 1 + START_RETRIES;
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
    let succeeded: Vec<String> = (0..COUNT)
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
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut operator = common::leading_operator(&format!("faults-{prefix}"), &[]);
    let (ns, name, executions, pods) = setup(prefix);
    burst(&ns, &name, &pods, 6);
    let at = Instant::now();
    fault(&ns, &pods);
    let (report, _) = settled(&ns, &executions, &pods, at, fault_reasons);
    operator.terminate(Duration::from_secs(20));
    report
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
    settled(&ns, &executions, &pods, at, &[]);
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
    settled(&ns, &executions, &pods, at, &[]);
    let stopped = (0..30).any(|_| {
        std::thread::sleep(Duration::from_secs(1));
        leader.exit_status().is_some()
    });
    assert!(stopped, "the resumed leader stops instead of acting");
    standby.terminate(Duration::from_secs(20));
}
