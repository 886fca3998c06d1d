//! Losing a kubelet: its node goes NotReady while the other node keeps running pods. A test binary
//! of its own, so its cluster is not shared with tests that need both nodes.

mod common;

use common::{cluster, namespace, probe_pod};
use std::time::Duration;

fn ready(node: &serde_json::Value) -> Option<String> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(String::from))
}

#[test]
fn stopping_one_kubelet_makes_its_node_not_ready_while_the_other_keeps_running_pods() {
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
