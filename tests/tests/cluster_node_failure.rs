//! Losing a kubelet: its node goes NotReady while the other node keeps running pods, and a run
//! on it is lost as `NodeLost` and retried elsewhere. A test binary of its own, so its cluster is
//! not shared with tests that need both nodes; its tests take turns.

mod common;

use common::executions::{events_for, execution, is_final, prebuilt_function, SLEEPER};
use common::{cluster, namespace, probe_pod};
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;
use wasmfn_e2e::operator::{crds_dir, OperatorProcess};

/// One node down at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A node's kubelet stopped for the guard's lifetime; started again (and awaited Ready) on drop.
struct KubeletStopped(String);

impl KubeletStopped {
    fn stop(node: &str) -> KubeletStopped {
        cluster().stop_kubelet(node).expect("stop the kubelet");
        KubeletStopped(node.to_owned())
    }
}

impl Drop for KubeletStopped {
    fn drop(&mut self) {
        if let Err(e) = cluster().start_kubelet(&self.0) {
            eprintln!("could not start node {}'s kubelet again: {e}", self.0);
            return;
        }
        let kubectl = cluster().kubectl();
        if let Err(e) = kubectl.wait_for(&["node", &self.0], Duration::from_secs(90), |n| {
            (ready(n).as_deref() == Some("True")).then_some(())
        }) {
            eprintln!("node {} did not become Ready again: {e}", self.0);
        }
    }
}

fn ready(node: &serde_json::Value) -> Option<String> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(String::from))
}

#[test]
fn stopping_one_kubelet_makes_its_node_not_ready_while_the_other_keeps_running_pods() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let ns = namespace("failure");
    let (a, b) = {
        let c = cluster();
        (
            c.info().wasmedge_node().name.clone(),
            c.info().plain_node().name.clone(),
        )
    };
    ns.create(&probe_pod("survivor", Some(&b), &["sleep", "600"], ""))
        .expect("create pod on node B");
    ns.wait_for(&["pod", "survivor"], Duration::from_secs(60), |p| {
        (p["status"]["phase"] == "Running").then_some(())
    })
    .expect("pod on B runs");

    cluster().stop_kubelet(&a).expect("stop node A's kubelet");
    let kubectl = cluster().kubectl();
    // The node-lifecycle controller's grace period is 20 s here.
    kubectl
        .wait_for(&["node", &a], Duration::from_secs(90), |n| {
            (ready(n).as_deref() != Some("True")).then_some(())
        })
        .expect("node A goes NotReady");
    let node_b = kubectl.json(&["get", "node", &b]).expect("get node B");
    assert_eq!(
        ready(&node_b).as_deref(),
        Some("True"),
        "node B stays Ready"
    );
    let pod = ns.json(&["get", "pod", "survivor"]).expect("get pod");
    assert_eq!(
        pod["status"]["phase"], "Running",
        "the pod on node B keeps running"
    );
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);

    cluster()
        .start_kubelet(&a)
        .expect("start node A's kubelet again");
    kubectl
        .wait_for(&["node", &a], Duration::from_secs(90), |n| {
            (ready(n).as_deref() == Some("True")).then_some(())
        })
        .expect("node A is Ready again");
}

#[test]
fn a_run_on_a_node_that_stops_answering_is_node_lost_and_retried_on_the_other_node() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    cluster()
        .kubectl()
        .run(&["apply", "-f", crds_dir().to_str().expect("utf-8")])
        .expect("CRDs");
    let ns = namespace("nodelost");
    let mut operator =
        OperatorProcess::start(cluster().info(), "node-failure", &[]).expect("operator");
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("the operator leads");
    ns.create(&prebuilt_function("sleeper", SLEEPER, json!({})))
        .expect("function");
    ns.wait_for(&["wasmfunction", "sleeper"], Duration::from_secs(60), |f| {
        (f["status"]["phase"] == "Ready").then_some(())
    })
    .expect("the function is Ready");
    // The guest only has to be running when its kubelet stops: from then on nothing it does
    // reaches the API.
    let spec =
        json!({"runtime": "Container", "retries": 1, "args": ["20000"], "timeoutMillis": 60000});
    ns.create(&execution("far", "sleeper", spec).to_string())
        .expect("execution");
    let running = ns
        .wait_for(&["wasmexecution", "far"], Duration::from_secs(180), |e| {
            (e["status"]["phase"] == "Running").then(|| e.clone())
        })
        .expect("the first attempt runs");
    let lost_node = running["status"]["node"]
        .as_str()
        .expect("status.node")
        .to_owned();

    let stopped = KubeletStopped::stop(&lost_node);
    // Node grace 20 s, then the run pod's 30 s toleration of the unreachable taint.
    let done = ns
        .wait_for(&["wasmexecution", "far"], Duration::from_secs(240), |e| {
            is_final(e).then(|| e.clone())
        })
        .expect("the execution finishes");
    drop(stopped);
    operator.terminate(Duration::from_secs(20));

    let status = &done["status"];
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    assert_eq!(status["attempts"], 2, "{status:#}");
    assert_eq!(status["stdout"], "slept\n", "{status:#}");
    assert_ne!(status["node"], lost_node.as_str(), "{status:#}");
    let losses: Vec<String> = events_for(&ns, "far")
        .into_iter()
        .filter(|(_, reason, _, _)| reason == "NodeLost")
        .map(|(_, _, note, _)| note)
        .collect();
    assert_eq!(losses.len(), 1, "{losses:#?}");
    assert!(
        losses[0].starts_with("attempt 1 was lost")
            && losses[0].contains(&format!("its node {lost_node} is not Ready")),
        "{losses:#?}"
    );
}
