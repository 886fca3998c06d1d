//! The WasmFunction controller end to end: the real operator (one replica for this suite, with a
//! short cache TTL) against the local cluster, compile Jobs running the real builder image on
//! real nodes, artifacts in ConfigMaps and in the cluster's registry.

mod common;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmfn_e2e::cluster::layout::WASM_RUNTIME_CLASS;
use wasmfn_e2e::operator::{crds_dir, OperatorProcess};
use wasmfn_e2e::Kubectl;

/// Seconds an unreferenced artifact survives in this suite.
const CACHE_TTL_SECONDS: u64 = 20;
/// Long enough for a first pull of the builder image onto a node plus a Go compile.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(420);

static OPERATOR: OnceLock<Mutex<OperatorProcess>> = OnceLock::new();

/// The suite's operator (started once, after the CRDs are applied).
fn operator() -> MutexGuard<'static, OperatorProcess> {
    OPERATOR
        .get_or_init(|| {
            let cluster = common::cluster();
            let crds = crds_dir();
            cluster
                .kubectl()
                .run(&["apply", "-f", crds.to_str().expect("utf-8 path")])
                .expect("apply the CRDs");
            let ttl = CACHE_TTL_SECONDS.to_string();
            let mut operator = OperatorProcess::start(
                cluster.info(),
                "functions-suite",
                &["--cache-ttl-seconds", &ttl, "--gc-interval-seconds", "2"],
            )
            .expect("start the operator");
            operator
                .wait_for_log("became the leader", Duration::from_secs(60))
                .expect("the operator leads");
            Mutex::new(operator)
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn namespace(prefix: &str) -> Kubectl {
    drop(operator());
    common::namespace(prefix)
}

fn source(language: &str, file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../runner-image/compile/tests/sources")
        .join(language)
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn function(name: &str, language: &str, code: &str, extra_spec: Value) -> String {
    let mut spec =
        json!({"language": common::api_objects::language(language), "source": {"code": code}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

/// Waits for the function to reach `phase` for its current generation; returns the object.
fn wait_phase(ns: &Kubectl, name: &str, phase: &str, timeout: Duration) -> Value {
    ns.wait_for(&["wasmfunction", name], timeout, |f| {
        let current = f["status"]["observedGeneration"] == f["metadata"]["generation"];
        (current && f["status"]["phase"] == phase).then(|| f.clone())
    })
    .unwrap_or_else(|e| panic!("{name} never reached {phase}: {e}"))
}

fn jobs(ns: &Kubectl) -> Vec<Value> {
    ns.json(&["get", "jobs"]).expect("jobs")["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn events_for(ns: &Kubectl, name: &str) -> Vec<(String, String, String)> {
    let events = ns.json(&["get", "events.events.k8s.io"]).expect("events");
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn assert_ready_with_digest(function: &Value) {
    let artifact = &function["status"]["artifact"];
    let digest = artifact["digest"].as_str().expect("digest");
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{artifact}"
    );
    assert!(
        artifact["size"].as_i64().is_some_and(|s| s > 0),
        "{artifact}"
    );
    let ready = function["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .expect("Ready condition");
    assert_eq!(ready["status"], "True", "{ready}");
}

#[test]
fn rust_c_go_assemblyscript_and_python_functions_each_reach_ready_with_a_digest() {
    let ns = namespace("fn-languages");
    let cases = [
        ("rust", "rust", "echo.rs"),
        ("c", "c", "echo.c"),
        ("go", "go", "echo.go"),
        ("assemblyscript", "assemblyscript", "echo.ts"),
        ("python", "python", "echo.py"),
    ];
    let started = Instant::now();
    for (name, language, file) in cases {
        ns.create(&function(
            name,
            language,
            &source(language, file),
            json!({}),
        ))
        .expect("create");
    }
    for (name, _, _) in cases {
        let ready = wait_phase(&ns, name, "Ready", COMPILE_TIMEOUT);
        assert_ready_with_digest(&ready);
        assert_eq!(
            ready["status"]["compile"]["cacheHit"], false,
            "{}",
            ready["status"]
        );
        assert!(ready["status"]["compile"]["jobName"]
            .as_str()
            .is_some_and(|j| j.starts_with("wasmfn-compile-")));
        let record = ready["status"]["artifact"]["location"]
            .as_str()
            .expect("location");
        ns.json(&["get", "configmap", record])
            .expect("the artifact record exists");
        let reasons: Vec<String> = events_for(&ns, name)
            .into_iter()
            .map(|(_, reason, _)| reason)
            .collect();
        assert!(
            reasons.contains(&"CompileStarted".to_owned())
                && reasons.contains(&"Compiled".to_owned()),
            "{reasons:?}"
        );
        eprintln!(
            "{name}: Ready {:.1} s after creation",
            started.elapsed().as_secs_f64()
        );
    }
    // Collected Jobs are deleted; their pods and source ConfigMaps go with them.
    ns.wait_for(&["jobs"], Duration::from_secs(60), |list| {
        list["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .expect("compile Jobs are cleaned up after collection");
}

#[test]
fn a_second_function_with_identical_source_is_ready_from_the_cache_without_a_job() {
    let ns = namespace("fn-cache");
    let code = source("wat", "echo.wat");
    ns.create(&function("first", "wat", &code, json!({})))
        .expect("create first");
    let first = wait_phase(&ns, "first", "Ready", COMPILE_TIMEOUT);
    ns.wait_for(&["jobs"], Duration::from_secs(60), |l| {
        l["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .expect("the first compile's Job is cleaned up");
    let started = Instant::now();
    ns.create(&function("second", "wat", &code, json!({})))
        .expect("create second");
    let second = wait_phase(&ns, "second", "Ready", Duration::from_secs(30));
    eprintln!(
        "cache hit: Ready {} ms after creation (kubectl polling included)",
        started.elapsed().as_millis()
    );
    assert_eq!(
        second["status"]["compile"]["cacheHit"], true,
        "{}",
        second["status"]
    );
    assert_eq!(
        second["status"]["artifact"]["digest"],
        first["status"]["artifact"]["digest"]
    );
    assert_eq!(second["status"]["cacheKey"], first["status"]["cacheKey"]);
    assert!(jobs(&ns).is_empty(), "a cache hit creates no Job");
    let reasons: Vec<String> = events_for(&ns, "second")
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    assert_eq!(reasons, ["CacheHit"]);
    // Deleting one function never breaks the other: the artifact is shared, not owned.
    ns.run(&["delete", "wasmfunction", "first", "--wait=true"])
        .expect("delete first");
    std::thread::sleep(Duration::from_secs(CACHE_TTL_SECONDS + 6));
    let record = second["status"]["artifact"]["location"]
        .as_str()
        .expect("location");
    ns.json(&["get", "configmap", record])
        .expect("the shared artifact survives the TTL while used");
    let still = ns.json(&["get", "wasmfunction", "second"]).expect("second");
    assert_eq!(still["status"]["phase"], "Ready");
}

#[test]
fn a_compile_error_ends_in_failed_with_the_compilers_line_number() {
    let ns = namespace("fn-error");
    ns.create(&function(
        "broken",
        "rust",
        &source("rust", "error.rs"),
        json!({}),
    ))
    .expect("create");
    let failed = wait_phase(&ns, "broken", "Failed", COMPILE_TIMEOUT);
    let status = &failed["status"];
    assert_eq!(status["compile"]["reason"], "CompileError", "{status}");
    let diagnostics = status["compile"]["diagnostics"]
        .as_array()
        .expect("diagnostics");
    assert!(
        diagnostics
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.starts_with("main.rs:3:"))),
        "{diagnostics:?}"
    );
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .expect("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "CompileError");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("main.rs:3")),
        "{ready}"
    );
    let warnings: Vec<_> = events_for(&ns, "broken")
        .into_iter()
        .filter(|(t, _, _)| t == "Warning")
        .collect();
    assert!(warnings.iter().any(|(_, reason, note)| reason == "CompileError" && note.contains("kubectl logs job/")), "{warnings:?}");
    // Failed stays failed: no second compile of the same source, no crash loop.
    let job_names: Vec<String> = jobs(&ns)
        .iter()
        .map(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(job_names.len(), 1, "{job_names:?}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(jobs(&ns).len(), 1);
    assert_eq!(
        ns.json(&["get", "wasmfunction", "broken"]).expect("get")["status"]["phase"],
        "Failed"
    );
}

#[test]
fn an_invalid_spec_fails_with_a_reason_and_an_event_and_starts_nothing() {
    let ns = namespace("fn-invalid");
    // Two sources are refused by the API server (bad_inputs covers that); a prebuilt module
    // under a compiled language passes the schema and is refused by the operator.
    let manifest = json!({
        "apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction", "metadata": {"name": "prebuilt-c"},
        "spec": {"language": "C", "source": {"base64": "AGFzbQEAAAA="}}
    });
    ns.create(&manifest.to_string()).expect("create");
    let failed = wait_phase(&ns, "prebuilt-c", "Failed", Duration::from_secs(30));
    let ready = failed["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .expect("Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("needs language wasm")),
        "{ready}"
    );
    assert!(events_for(&ns, "prebuilt-c")
        .iter()
        .any(|(t, r, _)| t == "Warning" && r == "InvalidSpec"));
    assert!(jobs(&ns).is_empty());
    // A missing source ConfigMap waits (Pending) and recovers once it exists.
    let pending = json!({
        "apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction", "metadata": {"name": "later"},
        "spec": {"language": "Wat", "source": {"configMapRef": {"name": "later-src"}}}
    });
    ns.create(&pending.to_string()).expect("create");
    wait_phase(&ns, "later", "Pending", Duration::from_secs(30));
    let map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later-src"},
                     "data": {"main.wat": source("wat", "echo.wat")}});
    ns.create(&map.to_string()).expect("create the source");
    assert_ready_with_digest(&wait_phase(&ns, "later", "Ready", COMPILE_TIMEOUT));
}

/// The function's Ready condition once it failed with `reason`, after checking the Warning
/// event of the same reason.
fn assert_failed_with(ns: &Kubectl, name: &str, reason: &str, timeout: Duration) -> Value {
    let failed = wait_phase(ns, name, "Failed", timeout);
    let ready = failed["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .expect("Ready");
    assert_eq!(ready["reason"], reason, "{ready}");
    assert!(
        failed["status"]["artifact"].is_null(),
        "nothing stored: {failed}"
    );
    let events = events_for(ns, name);
    assert!(
        events
            .iter()
            .any(|(t, r, note)| t == "Warning" && r == reason && note.contains("\"wasmedge\"")),
        "{events:?}"
    );
    ready
}

#[test]
fn a_module_carrying_native_code_is_refused_whether_prebuilt_or_compiled() {
    use base64::Engine as _;
    let ns = namespace("fn-native");
    let dir = tempfile::tempdir().expect("temp dir");
    let forged = common::native_code::forge_module(dir.path());
    let prebuilt = json!({
        "apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction", "metadata": {"name": "forged"},
        "spec": {"language": "Wasm", "source": {
            "base64": base64::engine::general_purpose::STANDARD.encode(forged)}}
    });
    ns.create(&prebuilt.to_string()).expect("create");
    ns.create(&function(
        "linked",
        "rust",
        &source("rust", "native_section.rs"),
        json!({}),
    ))
    .expect("create");
    let ready = assert_failed_with(&ns, "forged", "NativeCodeSection", Duration::from_secs(60));
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("spec.source.base64: ")),
        "{ready}"
    );
    let compiled = assert_failed_with(&ns, "linked", "NativeCodeSection", COMPILE_TIMEOUT);
    assert!(
        compiled["message"]
            .as_str()
            .is_some_and(|m| m.contains("the compiled module was not stored")),
        "{compiled}"
    );
    // A prebuilt refusal starts nothing; the compiled one used exactly its own Job.
    assert_eq!(jobs(&ns).len(), 1);
}

#[test]
fn a_go_module_over_two_mebibytes_is_stored_in_parts_and_reads_back_bit_exact() {
    let ns = namespace("fn-parts");
    // Enough of the standard library that the module stays over 900 KiB after gzip.
    let code = r#"package main

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"text/template"
)

func main() {
	sum := sha256.Sum256([]byte("wasmfn"))
	data, _ := json.Marshal(map[string]string{"digest": fmt.Sprintf("%x", sum)})
	re := regexp.MustCompile(`[a-f0-9]+`)
	tpl := template.Must(template.New("t").Parse("{{.}}\n"))
	_ = tpl.Execute(os.Stdout, re.FindString(string(data)))
	_ = gzip.NewWriter(os.Stdout)
}
"#;
    ns.create(&function("big-go", "go", code, json!({})))
        .expect("create");
    let ready = wait_phase(&ns, "big-go", "Ready", COMPILE_TIMEOUT);
    let artifact = &ready["status"]["artifact"];
    assert!(
        artifact["size"].as_i64().is_some_and(|s| s > 2 << 20),
        "{artifact}"
    );
    let maps: Vec<String> = artifact["configMaps"]
        .as_array()
        .expect("configMaps")
        .iter()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    assert!(
        maps.len() >= 2,
        "a module this big needs several ConfigMaps: {maps:?}"
    );
    let manifest_text = ns.json(&["get", "configmap", &maps[0]]).expect("record")["data"]
        ["artifact.json"]
        .as_str()
        .expect("artifact.json")
        .to_owned();
    let manifest: wasmfn_artifact::ArtifactManifest =
        serde_json::from_str(&manifest_text).expect("manifest");
    let mut parts = std::collections::BTreeMap::new();
    for map in &maps {
        let object = ns.json(&["get", "configmap", map]).expect("part");
        for (key, value) in object["binaryData"].as_object().expect("binaryData") {
            let bytes = base64_decode(value.as_str().expect("base64"));
            parts.insert(key.clone(), bytes);
        }
    }
    let module = wasmfn_artifact::unpack(&manifest, |name| {
        parts
            .get(name)
            .cloned()
            .ok_or_else(|| wasmfn_artifact::Error::MissingPart {
                name: name.to_owned(),
                detail: "not in any ConfigMap".into(),
            })
    })
    .expect("the parts unpack and verify");
    assert_eq!(
        wasmfn_artifact::sha256_digest(&module),
        artifact["digest"].as_str().expect("digest")
    );
    assert_eq!(
        module.len() as i64,
        artifact["size"].as_i64().expect("size")
    );
    assert!(module.starts_with(b"\0asm"));
}

#[test]
fn a_function_in_the_oci_store_is_pushed_and_runs_as_a_wasm_image_on_the_wasmedge_node() {
    let ns = namespace("fn-oci");
    let code = source("wat", "echo.wat");
    ns.create(&function(
        "hello-oci",
        "wat",
        &code,
        json!({"artifactStore": "Oci"}),
    ))
    .expect("create");
    let ready = wait_phase(&ns, "hello-oci", "Ready", COMPILE_TIMEOUT);
    let artifact = &ready["status"]["artifact"];
    assert_eq!(artifact["store"], "oci");
    let image = artifact["location"].as_str().expect("location");
    assert!(
        image.starts_with("wasmfn.local/wasmfn/modules@sha256:"),
        "{image}"
    );
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "from-registry"},
        "spec": {"restartPolicy": "Never", "runtimeClassName": WASM_RUNTIME_CLASS, "automountServiceAccountToken": false,
                 "containers": [{"name": "fn", "image": image, "command": ["module.wasm"]}]}
    });
    let run = |name: &str| -> Value {
        let mut pod = pod.clone();
        pod["metadata"]["name"] = json!(name);
        ns.create(&pod.to_string()).expect("create the Wasm pod");
        let (phase, document) = ns
            .wait_for(&["pod", name], Duration::from_secs(120), |p| {
                let phase = p["status"]["phase"].as_str()?;
                let message = p["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
                    .as_str()?;
                let document = serde_json::from_str(message).unwrap_or(json!({}));
                (phase == "Succeeded" || phase == "Failed").then(|| (phase.to_owned(), document))
            })
            .expect("the pod finishes");
        let log = ns.run(&["logs", name]).expect("logs");
        assert_eq!(phase, "Succeeded", "{document}\n{log}");
        assert!(
            !log.trim().is_empty(),
            "the module's output reaches kubectl logs"
        );
        document
    };
    run("from-registry");
    // The first run of the image started the shim's background AOT compile; a later container
    // of the same image gets the native code through containerd's content store.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut runs = 1;
    let document = loop {
        runs += 1;
        let document = run(&format!("from-registry-{runs}"));
        if document["runtime"]["aot"] == true || Instant::now() > deadline {
            break document;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(
        document["runtime"]["aot"], true,
        "after {runs} runs: {document}"
    );
    let source = document["runtime"]["aotSource"]
        .as_str()
        .unwrap_or_default();
    assert!(
        source.starts_with("precompiled layer (compiled by wasmfn from sha256:"),
        "{source}"
    );
    assert_eq!(document["reason"], "Completed", "{document}");
}

#[test]
fn a_spec_update_recompiles_to_a_new_digest() {
    let ns = namespace("fn-update");
    let code = source("wat", "echo.wat");
    ns.create(&function("changing", "wat", &code, json!({})))
        .expect("create");
    let before = wait_phase(&ns, "changing", "Ready", COMPILE_TIMEOUT);
    // A new definition after the imports, so the module (not just the source text) changes.
    let end = code
        .trim_end()
        .rfind(')')
        .expect("the module's closing parenthesis");
    let changed = format!("{}\n  (global $changed i32 (i32.const 7)))\n", &code[..end]);
    let patch = json!({"spec": {"source": {"code": changed}}}).to_string();
    ns.run(&[
        "patch",
        "wasmfunction",
        "changing",
        "--type",
        "merge",
        "-p",
        &patch,
    ])
    .expect("patch");
    let after = wait_phase(&ns, "changing", "Ready", COMPILE_TIMEOUT);
    assert_eq!(after["status"]["observedGeneration"], 2);
    assert_ne!(
        after["status"]["artifact"]["digest"],
        before["status"]["artifact"]["digest"]
    );
    assert_ne!(after["status"]["cacheKey"], before["status"]["cacheKey"]);
}

#[test]
fn an_artifact_no_function_uses_is_deleted_after_the_ttl() {
    let ns = namespace("fn-gc");
    let code = format!(";; unique to the gc test\n{}", source("wat", "echo.wat"));
    ns.create(&function("short-lived", "wat", &code, json!({})))
        .expect("create");
    let ready = wait_phase(&ns, "short-lived", "Ready", COMPILE_TIMEOUT);
    let record = ready["status"]["artifact"]["location"]
        .as_str()
        .expect("location")
        .to_owned();
    ns.run(&["delete", "wasmfunction", "short-lived", "--wait=true"])
        .expect("delete");
    let deleted = Instant::now();
    ns.wait_for(
        &["configmaps"],
        Duration::from_secs(CACHE_TTL_SECONDS + 30),
        |list| {
            let names: Vec<&str> = list["items"]
                .as_array()?
                .iter()
                .filter_map(|m| m["metadata"]["name"].as_str())
                .collect();
            (!names.contains(&record.as_str())).then_some(())
        },
    )
    .expect("the unreferenced artifact is collected");
    let after = deleted.elapsed();
    assert!(
        after >= Duration::from_secs(CACHE_TTL_SECONDS - 1),
        "collected after {after:?}, before the TTL"
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}
