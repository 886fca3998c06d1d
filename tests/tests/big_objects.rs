//! Bounded memory: the operator holding 1,000 finished executions of 256 KiB stdin and 64 KiB
//! stdout each (320 MiB of payload in the API server) stays under the chart's memory limit for
//! it (256 Mi) and still records a new execution within 10 s.
//!
//! The executions fail at once (their function does not compile), then get 64 KiB of stdout in
//! their status from this test (as a run would leave it), so no pod has to run 1,000 times. The
//! operator's caches keep trimmed copies (`wasmfn.dev/cache-trimmed`): its resident memory is
//! read from `/proc` after the payloads arrived and at its peak (`VmHWM`).

mod common;

use std::time::{Duration, Instant};

use common::burst::create_all;
use common::executions::{client, execution, prebuilt_function, HELLO};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use wasmfn_api::WasmExecution;
use wasmfn_e2e::observability::scrape;
use wasmfn_e2e::operator::OperatorProcess;

const EXECUTIONS: usize = 1000;
const STDIN_BYTES: usize = 256 << 10;
const STDOUT_BYTES: usize = 64 << 10;
/// The chart's memory limit for the operator.
const LIMIT_MIB: f64 = 256.0;
const NAMESPACE: &str = "big-objects";

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Waits until the operator's cache shows `count` executions in `phase`.
fn wait_phase(operator: &OperatorProcess, phase: &str, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = scrape(operator.health_port)
            .map(|m| m.sum("wasmfn_executions", &[("phase", phase)]))
            .unwrap_or(0.0);
        if seen >= count as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{seen} of {count} executions {phase}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_thousand_finished_executions_with_big_payloads_stay_under_the_limit_and_new_work_is_recorded()
{
    let mut operator = common::leading_operator("big-objects", &[]);
    let ns = common::cluster().namespace(NAMESPACE).expect("namespace");
    let broken = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
        "metadata": {"name": "broken"},
        "spec": {"language": "wat", "source": {"code": "(module (func $oops (result i32)))"}}});
    ns.create(&broken.to_string())
        .expect("create the broken function");
    ns.wait_for(&["wasmfunction", "broken"], Duration::from_secs(300), |f| {
        (f["status"]["phase"] == "Failed").then_some(())
    })
    .expect("the function fails to compile");

    let stdin = "i".repeat(STDIN_BYTES);
    let manifests = (0..EXECUTIONS)
        .map(|i| execution(&format!("big-{i}"), "broken", json!({"stdin": stdin})))
        .collect();
    let created = create_all(&ns, NAMESPACE, manifests);
    println!("{EXECUTIONS} executions of 256 KiB stdin created in {created:?}");
    wait_phase(&operator, "Failed", EXECUTIONS, Duration::from_secs(600));

    // Each gets the 64 KiB of stdout a run could leave.
    let stdout = "o".repeat(STDOUT_BYTES);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let api = kube::Api::<WasmExecution>::namespaced(client(&ns).await, NAMESPACE);
        let patch =
            Patch::Merge(json!({"status": {"stdout": stdout, "stdoutBytes": STDOUT_BYTES}}));
        let mut tasks = Vec::new();
        for chunk in (0..EXECUTIONS).collect::<Vec<_>>().chunks(EXECUTIONS / 8) {
            let (api, patch, chunk) = (api.clone(), patch.clone(), chunk.to_vec());
            tasks.push(tokio::spawn(async move {
                for i in chunk {
                    api.patch_status(&format!("big-{i}"), &PatchParams::default(), &patch)
                        .await
                        .expect("patch a status");
                }
            }));
        }
        for task in tasks {
            task.await.expect("patcher");
        }
    });
    std::thread::sleep(Duration::from_secs(15));
    let (rss, peak) = operator.memory().expect("the operator's memory");
    println!(
        "operator RSS with {EXECUTIONS} finished big executions: {:.1} MiB (peak {:.1} MiB)",
        mib(rss),
        mib(peak)
    );
    assert!(
        mib(peak) < LIMIT_MIB,
        "the operator's peak {:.1} MiB stays under its {LIMIT_MIB} MiB limit",
        mib(peak)
    );

    ns.create(&prebuilt_function("hello", HELLO, json!({})))
        .expect("create hello");
    ns.wait_for(&["wasmfunction", "hello"], Duration::from_secs(60), |f| {
        (f["status"]["phase"] == "Ready").then_some(())
    })
    .expect("hello is Ready");
    let asked = Instant::now();
    ns.create(&execution("fresh", "hello", json!({})).to_string())
        .expect("create a new execution");
    ns.wait_for(&["wasmexecution", "fresh"], Duration::from_secs(10), |e| {
        e["status"]["phase"].as_str().map(str::to_owned)
    })
    .expect("the new execution is recorded within 10 s");
    println!("new execution recorded after {:?}", asked.elapsed());
    assert!(
        operator.exit_status().is_none(),
        "the operator is still running"
    );
}
