//! `make bench-burst`: the `burst` suite's run at full size, on a fresh local cluster with no
//! image pulled beforehand. `WASMFN_BENCH_BURST` (default 1,000) hello executions, half `Auto`,
//! half `Container`, `retries: 0`, created by 8 clients; prints executions/s, the reasons,
//! phases, paths and attempts histograms, the most run pods in flight per node, and per-stage
//! latencies (create→pod, pod→started, started→finished, finished→recorded).
//! `WASMFN_BENCH_CAP` sets the operator's run pods per node (default the chart's 10; 0 measures
//! the operator without its admission queue, one pod per execution at once).

#[path = "../tests/common/burst.rs"]
mod burst;
#[path = "../tests/common/executions.rs"]
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
    let cap = std::env::var("WASMFN_BENCH_CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(burst::CAP);
    let cluster =
        wasmfn_e2e::Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster")))
            .expect("start the cluster");
    let (report, queued) = burst::run(
        &cluster,
        "bench-burst",
        "bench-burst",
        count,
        cap,
        Duration::from_secs(3600),
    );
    println!("== burst of {count} (cap {cap} run pods per node; 0: none) ==");
    print!("{}", report.summary());
    println!("queue gauge after the burst: {queued}");
}
