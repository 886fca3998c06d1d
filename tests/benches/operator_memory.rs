//! `make bench-operator-memory`: the release operator's resident memory on the local cluster,
//! idle (leading, one Ready function, nothing to do) and holding 1,000 finished executions
//! (real runs of the hello module through both paths, kept: no `ttlSecondsAfterFinished`).
//! Memory is `VmRSS` of the operator process, read 15 s after the work settled; `VmHWM` is the
//! peak the process ever reached.

#[path = "../tests/common/executions.rs"]
mod executions;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use executions::{cluster_with_hello, execution, is_final, list, Watch};
use serde_json::json;

const EXECUTIONS: usize = 1000;
const SUBMITTERS: usize = 8;
const NAMESPACE: &str = "bench-memory";
const SETTLE: Duration = Duration::from_secs(15);

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() {
    let (cluster, mut operator, ns) = cluster_with_hello("bench-memory", NAMESPACE);
    std::thread::sleep(SETTLE);
    let (idle, idle_peak) = operator.memory().expect("the operator's memory");

    let executions = Watch::start(&ns, NAMESPACE, "wasmexecutions");
    let names: Vec<String> = (0..EXECUTIONS).map(|i| format!("run-{i}")).collect();
    let submitted = Instant::now();
    // Half Auto (a WasmEdge node while node A has room), half Container.
    std::thread::scope(|scope| {
        for (index, chunk) in names.chunks(EXECUTIONS.div_ceil(SUBMITTERS)).enumerate() {
            let ns = ns.clone();
            scope.spawn(move || {
                for part in chunk.chunks(25) {
                    let runtime = if index % 2 == 0 { "Auto" } else { "Container" };
                    let items = part
                        .iter()
                        .map(|n| execution(n, "hello", json!({"runtime": runtime})))
                        .collect();
                    ns.create(&list(items)).expect("create executions");
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut finished = BTreeSet::new();
    let mut peak_while_running = 0;
    while finished.len() < EXECUTIONS && Instant::now() < deadline {
        for event in executions.events() {
            if is_final(&event.object) {
                finished.insert(event.name().to_owned());
            }
        }
        if let Some((rss, _)) = operator.memory() {
            peak_while_running = peak_while_running.max(rss);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let wall = submitted.elapsed();
    std::thread::sleep(SETTLE);
    let (loaded, peak) = operator.memory().expect("the operator's memory");
    let stored = ns
        .json(&["get", "wasmexecutions"])
        .expect("list executions");
    let items = stored["items"].as_array().cloned().unwrap_or_default();
    let succeeded = items
        .iter()
        .filter(|e| e["status"]["phase"] == "Succeeded")
        .count();

    println!();
    println!("Operator memory (release build, real operator, local two-node cluster)");
    println!(
        "  idle (leading, 1 function):            RSS {:.1} MiB (peak so far {:.1} MiB)",
        mib(idle),
        mib(idle_peak)
    );
    println!(
        "  with {} finished executions:         RSS {:.1} MiB (peak {:.1} MiB; highest RSS seen while running {:.1} MiB)",
        finished.len(),
        mib(loaded),
        mib(peak),
        mib(peak_while_running)
    );
    println!(
        "  per finished execution: {:.1} KiB; {succeeded}/{} stored executions Succeeded; the {EXECUTIONS} took {:.0} s ({:.1}/s)",
        (loaded.saturating_sub(idle)) as f64 / 1024.0 / finished.len().max(1) as f64,
        items.len(),
        wall.as_secs_f64(),
        finished.len() as f64 / wall.as_secs_f64().max(0.001)
    );
    println!("operator log: {}", operator.log.display());
    drop(executions);
    operator.terminate(Duration::from_secs(20));
    drop(cluster);
}
