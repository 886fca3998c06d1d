//! `make bench-burst`: the `burst` suite's run at full size, on a fresh local cluster with no
//! image pulled beforehand. `WASMFN_BENCH_BURST` (default 1,000) hello executions, half `Auto`,
//! half `Container`, `retries: 0`, created by 8 clients; prints executions/s, the reasons,
//! phases, paths and attempts histograms, the most run pods in flight per node, and per-stage
//! latencies (create→pod, pod→started, started→finished, finished→recorded).

#[path = "../tests/common/burst.rs"]
mod burst;
#[path = "../tests/common/executions.rs"]
#[allow(dead_code)]
mod executions;

use std::time::Duration;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count = std::env::var("WASMFN_BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cluster = wasmfn_e2e::Cluster::start(std::path::Path::new(env!(
        "CARGO_BIN_EXE_wasmfn-cluster"
    )))
    .expect("start the cluster");
    let (report, queued) = burst::run(
        &cluster,
        "bench-burst",
        "bench-burst",
        count,
        Duration::from_secs(3600),
    );
    println!("== burst of {count} (cap {} run pods per node) ==", burst::CAP);
    print!("{}", report.summary());
    println!("queue gauge after the burst: {queued}");
}
