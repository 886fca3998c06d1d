//! Bounded memory: the operator holding 1,000 finished executions of 256 KiB stdin and 64 KiB
//! stdout each (320 MiB of payload in the API server), plus a function with a 60 MiB module run
//! in a container pod and a Wasm pod, stays under the chart's memory limit for it (256 Mi) and
//! still records a new execution within 10 s.
//!
//! The executions fail at once (their function does not compile), then get 64 KiB of stdout in
//! their status from this test (as a run would leave it), so no pod has to run 1,000 times. The
//! operator's caches keep trimmed copies (`wasmfn.dev/cache-trimmed`): its resident memory is
//! read from `/proc` after the payloads arrived and at its peak (`VmHWM`).
//!
//! The 60 MiB module (the hello guest plus a 60 MiB custom section of incompressible bytes) is
//! in the OCI store, as the operator's `OciStore::store` leaves a module: the OCI Wasm artifact
//! in the cluster's registry under `wasmfn/modules:sha256-<hex>`, and a record ConfigMap
//! labelled with the cache key of the function's source. The test puts it there itself: a
//! compile hands its module to the operator through the compile pod's log, which the kubelet
//! rotates at 10 MiB, so no compile on this cluster can deliver 60 MiB, and a prebuilt module
//! in the spec is limited to 1 MiB. The function then finds it as a cache hit; its Wasm pod
//! runs the image, and its container pod makes the operator copy the module from the registry
//! into ConfigMap parts, which it streams part by part.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::burst::create_all;
use common::executions::{client, execution, prebuilt_function, HELLO};
use common::registry::{sha256, Repository};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use wasmfn_api::{labels, WasmExecution};
use wasmfn_artifact::DEFAULT_PART_BYTES;
use wasmfn_e2e::observability::scrape;
use wasmfn_e2e::operator::OperatorProcess;

const EXECUTIONS: usize = 1000;
const STDIN_BYTES: usize = 256 << 10;
const STDOUT_BYTES: usize = 64 << 10;
/// The chart's memory limit for the operator.
const LIMIT_MIB: f64 = 256.0;
const NAMESPACE: &str = "big-objects";
/// The big module's custom section.
const PAYLOAD_BYTES: usize = 60 << 20;
/// Where the operator keeps OCI-stored modules (`--oci-repository`'s default).
const REPOSITORY: &str = "wasmfn/modules";

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Waits until the operator's cache shows `count` executions in `phase`.
fn wait_phase(operator: &OperatorProcess, phase: &str, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = scrape(operator.health_port)
            .map(|m| m.sum("wasmfn_executions_in_phase", &[("phase", phase)]))
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
    std::thread::sleep(Duration::from_secs(5));
    let (idle, _) = operator.memory().expect("the operator's memory");
    println!("operator RSS idle: {:.1} MiB", mib(idle));
    let broken = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
        "metadata": {"name": "broken"},
        "spec": {"language": "Wat", "source": {"code": "(module (func $oops (result i32)))"}}});
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

    let handling = big_module_runs_in_both_pods(&ns, &operator);
    // Holding the module whole even once would add its 60 MiB.
    assert!(
        handling.saturating_sub(rss) < PAYLOAD_BYTES as u64,
        "handling the module took the operator from {:.1} MiB to {:.1} MiB: it holds the module, not a part at a time",
        mib(rss),
        mib(handling)
    );
    let (_, peak) = operator.memory().expect("the operator's memory");
    println!(
        "operator peak (VmHWM) after the 60 MiB module: {:.1} MiB",
        mib(peak)
    );
    assert!(
        mib(peak) < LIMIT_MIB,
        "the operator's peak {:.1} MiB, the 60 MiB module handled, stays under its {LIMIT_MIB} MiB limit",
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

/// The hello guest followed by a custom section `payload` of `payload_bytes` pseudo-random
/// (incompressible) bytes: a valid module of that size whose code is the hello guest's.
fn module_with_payload(payload_bytes: usize) -> Vec<u8> {
    let mut module = wat::parse_str(HELLO).expect("hello");
    let name = b"payload";
    let mut section = leb128(name.len() as u64);
    section.extend_from_slice(name);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let header = section.len();
    section.resize(header + payload_bytes, 0);
    for chunk in section[header..].chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    module.push(0);
    module.extend(leb128(section.len() as u64));
    module.extend(section);
    module
}

fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The operator's cache key (`operator/src/function/cache_key.rs`) of a one-file `wat` source
/// with default build options, compiled by `builder_image` (by digest, as the operator pins it). A mismatch shows as a compile instead of a cache hit, which the
/// test catches by the artifact's digest.
fn wat_cache_key(builder_image: &str, source: &str) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(b"wasmfn-cache-key/v2");
    field(b"wat");
    field(b"builder");
    field(builder_image.as_bytes());
    field(b"speed");
    field(b"command");
    field(&1u64.to_le_bytes());
    field(b"main.wat");
    field(source.as_bytes());
    format!("sha256:{}", hex::encode(hash.finalize()))
}

/// The record ConfigMap the OCI store writes for a module (`operator/src/store/record.rs`).
fn oci_record(key: &str, digest: &str, size: usize, location: &str) -> String {
    let hex = &digest["sha256:".len()..];
    let key_hex = &key["sha256:".len()..];
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": format!("wasmfn-oci-{}", &hex[..20]),
            "labels": {
                (labels::MANAGED_BY): labels::MANAGED_BY_VALUE,
                (labels::ARTIFACT): "true",
                (labels::STORE): "oci",
                (labels::DIGEST): &hex[..63],
                (format!("{}{}", labels::CACHE_KEY_PREFIX, &key_hex[..63])): "",
            },
            "annotations": {
                "wasmfn.dev/digest": digest,
                "wasmfn.dev/size": size.to_string(),
                "wasmfn.dev/media-type": "application/wasm",
                "wasmfn.dev/location": location,
                "wasmfn.dev/config-maps": "",
            },
        },
        "immutable": true})
    .to_string()
}

/// A function whose stored module is 60 MiB: it is Ready from the store, one execution runs it
/// in a container pod (the operator copies it into ConfigMaps) and one in a Wasm pod (the node
/// pulls the image); both print hello. Returns the highest resident memory of the operator,
/// sampled every 100 ms meanwhile.
fn big_module_runs_in_both_pods(ns: &wasmfn_e2e::Kubectl, operator: &OperatorProcess) -> u64 {
    let module = module_with_payload(PAYLOAD_BYTES);
    let digest = sha256(&module);
    let registry_port = common::cluster().info().registry_port;
    let pushed = Instant::now();
    let manifest_digest = Repository::new(registry_port, REPOSITORY)
        .push_wasm_artifact(&digest.replace(':', "-"), &module);
    println!(
        "{:.1} MiB module {digest} pushed in {:?}",
        mib(module.len() as u64),
        pushed.elapsed()
    );
    let builder = common::image("builder");
    let pull_registry = builder.split('/').next().unwrap_or_default();
    let (name, tag) = builder[pull_registry.len() + 1..]
        .split_once(':')
        .expect("a tagged builder image");
    let (manifest, _) = Repository::new(registry_port, name).manifest(tag);
    let pinned = format!("{pull_registry}/{name}@{}", sha256(&manifest));
    let source = format!(";; stands for a module with a 60 MiB custom section\n{HELLO}");
    let key = wat_cache_key(&pinned, &source);
    let location = format!("{pull_registry}/{REPOSITORY}@{manifest_digest}");
    ns.create(&oci_record(&key, &digest, module.len(), &location))
        .expect("the OCI record");

    let stop = AtomicBool::new(false);
    let (highest, (container, wasm)) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut highest = 0;
            while !stop.load(Ordering::Relaxed) {
                highest = highest.max(operator.memory().map_or(0, |(rss, _)| rss));
                std::thread::sleep(Duration::from_millis(100));
            }
            highest
        });
        let function = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
            "metadata": {"name": "big-module"},
            "spec": {"language": "Wat", "source": {"code": source}, "artifactStore": "Oci"}});
        ns.create(&function.to_string()).expect("create big-module");
        let artifact = ns
            .wait_for(
                &["wasmfunction", "big-module"],
                Duration::from_secs(60),
                |f| (f["status"]["phase"] == "Ready").then(|| f["status"]["artifact"].clone()),
            )
            .expect("big-module is Ready");
        assert_eq!(
            (artifact["digest"].as_str(), artifact["store"].as_str()),
            (Some(digest.as_str()), Some("oci")),
            "the function uses the stored 60 MiB module"
        );
        let started = Instant::now();
        // Room for the runner's copies of a 60 MiB module beside the guest.
        for (name, runtime) in [("big-container", "Container"), ("big-wasm", "WasmEdge")] {
            let spec = json!({"runtime": runtime, "memoryLimit": "256Mi"});
            ns.create(&execution(name, "big-module", spec).to_string())
                .expect("create a big-module execution");
        }
        let finished = |name: &str| {
            ns.wait_for(&["wasmexecution", name], Duration::from_secs(180), |e| {
                let phase = e["status"]["phase"].as_str()?;
                ["Succeeded", "Failed", "TimedOut"]
                    .contains(&phase)
                    .then(|| e["status"].clone())
            })
            .unwrap_or_else(|e| panic!("{name} finishes: {e}"))
        };
        let runs = (finished("big-container"), finished("big-wasm"));
        println!(
            "both big-module executions finished in {:?}",
            started.elapsed()
        );
        stop.store(true, Ordering::Relaxed);
        (sampler.join().expect("sampler"), runs)
    });
    println!(
        "operator RSS while handling the 60 MiB module: highest {:.1} MiB",
        mib(highest)
    );
    for (status, path) in [(&container, "ContainerPod"), (&wasm, "WasmPod")] {
        assert_eq!(
            (
                status["phase"].as_str(),
                status["path"].as_str(),
                status["stdout"].as_str()
            ),
            (Some("Succeeded"), Some(path), Some("hello\n")),
            "{status}"
        );
    }
    let copy = ns
        .json(&[
            "get",
            "configmap",
            &format!("wasmfn-artifact-{}", &digest[7..27]),
        ])
        .expect("the ConfigMap copy of the module");
    let parts = copy["metadata"]["annotations"]["wasmfn.dev/config-maps"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .count();
    assert!(
        parts >= module.len().div_ceil(DEFAULT_PART_BYTES),
        "{parts} ConfigMaps hold the incompressible {} bytes",
        module.len()
    );
    highest
}
