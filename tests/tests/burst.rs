//! Nothing lost in a burst: hello executions created at once on a fresh cluster (no image pulled
//! beforehand), half `Auto` (Wasm pods on node A), half `Container` (either node), all with
//! `retries: 0`. Admission keeps at most the cap of run pods in flight per node; the rest wait
//! `Queued` with no pod and no deadline running. CI runs `WASMFN_BURST` (default 100)
//! executions; `make bench-burst` runs 1,000 with the same code and prints the same report.

mod common;

use std::time::Duration;

use common::burst::{run, CAP};

#[test]
fn a_cold_burst_without_retries_succeeds_at_the_first_attempt_within_the_per_node_cap() {
    let count = std::env::var("WASMFN_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let cluster = common::cluster();
    let (report, queued) = run(
        &cluster,
        "burst-suite",
        "burst",
        count,
        CAP,
        Duration::from_secs(900),
    );
    let summary = report.summary();
    println!("{summary}");
    assert_eq!(report.executions, count, "{summary}");
    assert_eq!(
        report.phases.get("Succeeded").copied(),
        Some(count),
        "every execution Succeeded\n{summary}"
    );
    assert_eq!(
        report.attempts.get(&1).copied(),
        Some(count),
        "all at the first attempt\n{summary}"
    );
    assert!(
        report.deadline_exceeded.is_empty(),
        "no run pod stopped at its deadline: {:?}",
        report.deadline_exceeded
    );
    assert!(report.went_back.is_empty(), "{:?}", report.went_back);
    assert_eq!(report.pods, count, "one run pod per execution\n{summary}");
    assert!(
        report.max_in_flight.values().all(|most| *most <= CAP),
        "at most {CAP} run pods in flight per node: {:?}",
        report.max_in_flight
    );
    assert_eq!(
        report.max_in_flight.values().max().copied(),
        Some(CAP),
        "the burst filled a node to the cap\n{summary}"
    );
    assert!(
        report.queued > 0,
        "executions beyond the cap were queued\n{summary}"
    );
    for path in ["WasmPod", "ContainerPod"] {
        assert!(
            report.paths.get(path).copied().unwrap_or(0) > 0,
            "both halves ran on their path: {:?}",
            report.paths
        );
    }
    assert_eq!(queued, 0.0, "the queue gauge is back to 0");
}
