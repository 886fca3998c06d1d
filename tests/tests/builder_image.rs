//! The builder image (`runner-image/Dockerfile.builder`, built by `make images`) compiles
//! functions as a pod on the local cluster the way compile Jobs will: non-root, read-only root
//! filesystem, no capabilities, no service-account token, no network, the source from a
//! ConfigMap volume or inline arguments; the manifest comes back as the termination message and
//! the module through the container log.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::hardened_pod::{self, empty_dir, HardenedPod};
use common::registry::{sha256, Repository};
use common::{namespace, terminated};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wasmfn_e2e::operator::{crds_dir, OperatorProcess};

fn compile_sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runner-image/compile/tests/sources")
        .canonicalize()
        .expect("compile test sources")
}

/// A pod running the builder image with `args`, hardened like a compile Job, with the ConfigMap
/// `source` (when given) mounted read-only at /src and an emptyDir at /tmp.
fn builder_pod(name: &str, args: &[&str], source_configmap: Option<&str>) -> HardenedPod {
    let mut pod = HardenedPod::new(name, &common::image("builder"))
        .container_name("builder")
        .args(args)
        .active_deadline(Duration::from_secs(600))
        .resources(ResourceRequirements {
            limits: Some([("memory".to_owned(), Quantity("2Gi".to_owned()))].into()),
            ..Default::default()
        })
        .volume(empty_dir("tmp"), "/tmp", false);
    if let Some(configmap) = source_configmap {
        pod = pod.volume(hardened_pod::config_map("source", configmap), "/src", true);
    }
    pod
}

fn configmap(name: &str, files: &[(&str, String)]) -> String {
    let data: serde_json::Map<String, Value> = files
        .iter()
        .map(|(key, text)| ((*key).to_owned(), Value::String(text.clone())))
        .collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
        .to_string()
}

/// Waits for the pod to end and returns (phase, its container's terminated state). A pod that
/// failed without a terminated container (evicted, say) returns its whole status instead, so the
/// caller's assertion shows why at once rather than after the timeout.
fn finished(ns: &wasmfn_e2e::Kubectl, pod: &str) -> (String, Value) {
    ns.wait_for(&["pod", pod], Duration::from_secs(300), |p| {
        let phase = p["status"]["phase"].as_str()?;
        match (phase, terminated(p)) {
            ("Succeeded" | "Failed", Some(state)) => Some((phase.to_owned(), state)),
            ("Failed", None) => Some((phase.to_owned(), p["status"].clone())),
            _ => None,
        }
    })
    .expect("the builder pod finishes")
}

/// Decodes standard base64 (the test crate has no base64 dependency).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let symbols: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(symbols.len() * 3 / 4);
    for chunk in symbols.chunks(4) {
        let mut bits = 0u32;
        for (index, symbol) in chunk.iter().enumerate() {
            bits |= value(*symbol) << (18 - 6 * index);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// The module between the `--log-artifact` markers of a log.
fn logged_artifact(log: &str) -> (String, Vec<u8>) {
    let mut lines = log.lines();
    let header = lines
        .find(|l| l.starts_with("-----BEGIN WASMFN ARTIFACT "))
        .unwrap_or_else(|| panic!("no artifact in the log:\n{log}"));
    // `… module.wasm sha256:… gzip-----`: the digest is the uncompressed module's.
    let words: Vec<&str> = header.trim_end_matches('-').split_whitespace().collect();
    let gzipped = words.last() == Some(&"gzip");
    let digest = words[words.len() - 1 - usize::from(gzipped)].to_owned();
    let body: String = lines
        .take_while(|l| !l.starts_with("-----END WASMFN ARTIFACT"))
        .collect();
    let bytes = decode_base64(&body);
    if !gzipped {
        return (digest, bytes);
    }
    let module = wasmfn_artifact::gunzip_bounded(&bytes, wasmfn_artifact::MAX_MODULE_BYTES)
        .expect("the logged artifact is gzip");
    (digest, module)
}

#[test]
fn base64_decoding() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGVs\nbG8h"), b"hello!");
    assert_eq!(decode_base64(""), b"");
}

#[test]
fn a_rust_function_from_a_configmap_compiles_in_the_builder_pod_and_its_module_runs() {
    let ns = namespace("builder");
    let source = std::fs::read_to_string(compile_sources().join("rust/echo.rs")).expect("source");
    ns.apply(&configmap("hello-rust", &[("main.rs", source)]))
        .expect("configmap");
    ns.create(
        &builder_pod(
            "compile-rust",
            &[
                "compile",
                "--language",
                "rust",
                "/src",
                "--out",
                "/tmp/out",
                "--log-artifact",
            ],
            Some("hello-rust"),
        )
        .manifest(),
    )
    .expect("pod");
    let (phase, state) = finished(&ns, "compile-rust");
    let log = ns.run(&["logs", "compile-rust"]).unwrap_or_default();
    assert_eq!(phase, "Succeeded", "state: {state}\nlog:\n{log}");
    let manifest: Value =
        serde_json::from_str(state["message"].as_str().expect("termination message"))
            .expect("the termination message is the manifest");
    assert_eq!(manifest["kind"], "CompileManifest");
    assert_eq!(manifest["language"], "rust");
    assert_eq!(manifest["cache"], "miss");
    assert_eq!(manifest["options"]["allowNetwork"], false);
    let digest = manifest["artifact"]["digest"].as_str().expect("digest");
    assert!(digest.starts_with("sha256:"), "{manifest}");
    assert!(
        manifest["toolchain"][0]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("rustc ")),
        "{manifest}"
    );

    // The module in the log is the one the manifest names, and it runs.
    let (logged_digest, module) = logged_artifact(&log);
    assert_eq!(logged_digest, digest);
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&module))),
        digest
    );
    assert_eq!(
        module.len() as u64,
        manifest["artifact"]["size"].as_u64().expect("size")
    );
    let dir = tempfile_dir();
    let module_path = dir.join("module.wasm");
    std::fs::write(&module_path, &module).expect("write module");
    let mut run = std::process::Command::new("wasmedge")
        .arg(&module_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wasmedge (make setup installs it)");
    use std::io::Write as _;
    run.stdin
        .take()
        .expect("stdin")
        .write_all(b"from the test\n")
        .expect("write stdin");
    let output = run.wait_with_output().expect("run");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from rust\nfrom the test\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wasmfn-builder-test-{}-{}",
        std::process::id(),
        wasmfn_e2e::cluster::pki::random_hex(4).expect("random")
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn a_compile_error_fails_the_pod_with_located_diagnostics_in_its_termination_message() {
    let ns = namespace("builder-error");
    ns.create(
        &builder_pod(
            "compile-c-error",
            &[
                "compile",
                "--language",
                "c",
                "--code",
                "int main(void) {\n    int count = 1;\n    return count + missing;\n}\n",
                "--out",
                "/tmp/out",
            ],
            None,
        )
        .manifest(),
    )
    .expect("pod");
    let (phase, state) = finished(&ns, "compile-c-error");
    assert_eq!(phase, "Failed", "{state}");
    assert_eq!(
        state["exitCode"], 1,
        "a user's compile error exits 1: {state}"
    );
    let failure: Value =
        serde_json::from_str(state["message"].as_str().expect("termination message"))
            .expect("the termination message is JSON");
    assert_eq!(failure["kind"], "CompileFailure");
    assert_eq!(failure["reason"], "CompileError");
    assert_eq!(failure["userError"], true);
    let first = failure["diagnostics"][0].as_str().expect("a diagnostic");
    assert!(
        first.starts_with("main.c:3:") && first.contains("missing"),
        "{failure}"
    );
}

#[test]
fn every_language_compiles_inside_the_builder_image() {
    let ns = namespace("builder-all");
    let sources = compile_sources();
    let read = |relative: &str| std::fs::read_to_string(sources.join(relative)).expect("source");
    // ConfigMap keys cannot hold '/', so each file is mounted flat and named per language.
    let files = [
        ("echo.rs", read("rust/echo.rs")),
        ("echo.c", read("c/echo.c")),
        ("echo.cpp", read("cpp/echo.cpp")),
        ("echo.go", read("go/echo.go")),
        ("echo.ts", read("assemblyscript/echo.ts")),
        ("library.ts", read("assemblyscript/library.ts")),
        ("echo.wat", read("wat/echo.wat")),
        ("echo.py", read("python/echo.py")),
        ("echo.js", read("javascript/echo.js")),
    ];
    ns.apply(&configmap("all-languages", &files))
        .expect("configmap");
    let script = "set -e
compile() { wasmfn compile --termination-log - --out \"/tmp/out-$1-$(basename \"$2\")\" --language \"$@\"; }
compile rust /src/echo.rs
compile c /src/echo.c
compile cpp /src/echo.cpp
compile go /src/echo.go
compile assemblyscript /src/echo.ts
compile assemblyscript /src/library.ts --library
compile wat /src/echo.wat
wasmfn compile --termination-log - --language wasm /tmp/out-wat-echo.wat/module.wasm --out /tmp/out-wasm
compile python /src/echo.py
compile javascript /src/echo.js
";
    let pod =
        builder_pod("compile-all", &[], Some("all-languages")).command(&["/bin/sh", "-c", script]);
    ns.create(&pod.manifest()).expect("pod");
    let (phase, state) = finished(&ns, "compile-all");
    let log = ns.run(&["logs", "compile-all"]).unwrap_or_default();
    assert_eq!(phase, "Succeeded", "state: {state}\nlog:\n{log}");
    let manifests: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value["kind"] == "CompileManifest")
        .collect();
    let languages: Vec<&str> = manifests
        .iter()
        .map(|m| m["language"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        languages,
        [
            "rust",
            "c",
            "cpp",
            "go",
            "assemblyscript",
            "assemblyscript",
            "wat",
            "wasm",
            "python",
            "javascript"
        ],
        "log:\n{log}"
    );
    for manifest in &manifests {
        assert!(
            manifest["artifact"]["digest"]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:")),
            "{manifest}"
        );
    }
}

/// The builder image of `repository:tag` plus one small layer (a file only): another image
/// under the same tag, as a rebuild with changed toolchain contents leaves it. Returns the new
/// manifest's digest.
fn push_rebuilt_builder(repository: &Repository, tag: &str) -> String {
    let (manifest, media_type) = repository.manifest(tag);
    let mut manifest: Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    let mut config: Value = serde_json::from_slice(
        &repository.blob(
            manifest["config"]["digest"]
                .as_str()
                .expect("config digest"),
        ),
    )
    .expect("config JSON");
    let dir = tempfile::tempdir().expect("layer dir");
    std::fs::write(dir.path().join("wasmfn-rebuilt"), "another toolchain\n").expect("write");
    let tar = std::process::Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(dir.path())
        .args(["-cf", "-", "wasmfn-rebuilt"])
        .output()
        .expect("tar");
    assert!(tar.status.success(), "tar: {tar:?}");
    let layer_type = manifest["layers"][0]["mediaType"]
        .as_str()
        .expect("layer media type")
        .to_owned();
    let layer = if layer_type.ends_with("gzip") {
        let mut gzip = std::process::Command::new("gzip")
            .args(["-n", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip");
        std::io::Write::write_all(&mut gzip.stdin.take().expect("stdin"), &tar.stdout)
            .expect("feed gzip");
        gzip.wait_with_output().expect("gzip output").stdout
    } else {
        tar.stdout.clone()
    };
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff_ids")
        .push(json!(sha256(&tar.stdout)));
    if let Some(history) = config["history"].as_array_mut() {
        history.push(json!({"created_by": "wasmfn e2e: the builder rebuilt"}));
    }
    let (layer_digest, layer_size) = repository.upload(&layer);
    let (config_digest, config_size) =
        repository.upload(&serde_json::to_vec(&config).expect("config"));
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_size);
    manifest["layers"]
        .as_array_mut()
        .expect("layers")
        .push(json!({"mediaType": layer_type, "digest": layer_digest, "size": layer_size}));
    repository.put_manifest(
        tag,
        &serde_json::to_vec(&manifest).expect("manifest"),
        &media_type,
    )
}

/// The note of the function's `CompileStarted` event, once there is one.
fn compile_started_note(ns: &wasmfn_e2e::Kubectl, function: &str) -> String {
    ns.wait_for(&["events.events.k8s.io"], Duration::from_secs(30), |list| {
        list["items"].as_array()?.iter().find_map(|event| {
            (event["regarding"]["name"] == function && event["reason"] == "CompileStarted")
                .then(|| event["note"].as_str().unwrap_or_default().to_owned())
        })
    })
    .unwrap_or_else(|e| panic!("no CompileStarted event for {function}: {e}"))
}

#[test]
fn a_builder_rebuilt_under_the_same_tag_recompiles_instead_of_serving_the_old_module() {
    // The builder under a repository of this test's own, so the rebuild touches no other suite.
    let (pull_registry, name, tag) = {
        let image = common::image("builder");
        let (registry, rest) = image.split_once('/').expect("registry/name:tag");
        let (name, tag) = rest.split_once(':').expect("a tag");
        (registry.to_owned(), name.to_owned(), tag.to_owned())
    };
    let port = common::cluster().info().registry_port;
    let repository = Repository::new(port, "wasmfn-e2e/rebuilt-builder");
    let original = repository.copy_image(&name, &tag);
    let image = format!("{pull_registry}/wasmfn-e2e/rebuilt-builder:{tag}");
    let _operator = {
        let cluster = common::cluster();
        cluster
            .kubectl()
            .run(&["apply", "-f", crds_dir().to_str().expect("utf-8 path")])
            .expect("apply the CRDs");
        let mut operator = OperatorProcess::start(
            cluster.info(),
            "rebuilt-builder",
            &["--builder-image", &image, "--builder-pin-seconds", "1"],
        )
        .expect("start the operator");
        operator
            .wait_for_log("became the leader", Duration::from_secs(60))
            .expect("the operator leads");
        operator
    };
    let ns = namespace("rebuilt-builder");
    let code = std::fs::read_to_string(compile_sources().join("wat/echo.wat")).expect("echo.wat");
    let function = |name: &str| {
        json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
            "metadata": {"name": name}, "spec": {"language": "Wat", "source": {"code": code}}})
        .to_string()
    };
    let ready = |name: &str| {
        ns.wait_for(&["wasmfunction", name], Duration::from_secs(420), |f| {
            (f["status"]["phase"] == "Ready").then(|| f["status"].clone())
        })
        .unwrap_or_else(|e| panic!("{name} is not Ready: {e}"))
    };

    ns.create(&function("before")).expect("create before");
    let before = ready("before");
    let note = compile_started_note(&ns, "before");
    assert!(
        note.contains(&format!("wasmfn-e2e/rebuilt-builder@{original}")),
        "the compile ran the builder by the digest its tag named: {note}"
    );

    let rebuilt = push_rebuilt_builder(&repository, &tag);
    assert_ne!(rebuilt, original);
    // Past the operator's trust in its lookup (one second here).
    std::thread::sleep(Duration::from_secs(2));
    ns.create(&function("after")).expect("create after");
    let after = ready("after");
    let note = compile_started_note(&ns, "after");
    assert!(
        note.contains(&format!("wasmfn-e2e/rebuilt-builder@{rebuilt}")),
        "the same source compiles again, on the rebuilt builder: {note}"
    );
    assert_eq!(after["compile"]["cacheHit"], false, "{after}");
    assert_ne!(after["cacheKey"], before["cacheKey"], "{after}");
    assert_eq!(
        after["artifact"]["digest"], before["artifact"]["digest"],
        "the extra file changes no compiler: the module is the same"
    );
}
