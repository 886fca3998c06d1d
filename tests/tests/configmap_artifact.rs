//! The ConfigMap store's packed form on the cluster: a module over 2 MiB that gzip cannot shrink
//! below one ConfigMap is packed (`wasmfn artifact pack`) into a manifest and three or more parts,
//! stored as several ConfigMaps (parts in `binaryData`), and mounted as one projected volume. A
//! Wasm pod on node A (the shim) and a runner-image pod on node B (`wasmfn exec`) both unpack,
//! verify and run it, with the same result document as `wasmfn exec` here; a corrupted part ends
//! both pods with a termination message naming the part — never a hang.

mod common;

use common::hardened_pod::{empty_dir, projected_config_maps, HardenedPod};
use common::{cluster, namespace, terminated};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use wasmfn_e2e::cluster::layout::WASM_RUNTIME_CLASS;

/// Bytes of pseudo-random data in the module: well over 2 MiB and incompressible, so the gzip
/// stream needs three 900 KiB parts.
const DATA_BYTES: usize = 2560 * 1024;
/// Where the module's data segment starts (page 0 holds the hex table and the output buffer).
const DATA_OFFSET: usize = 65536;

/// `wasmfn` is built into the same directory as the cluster supervisor.
fn wasmfn_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster")).with_file_name("wasmfn")
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("spawn");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// xorshift64: the same "random" bytes on every run.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A WASI command whose data segment is `data` and which prints the FNV-1a hash of it as eight
/// hex digits and a newline.
fn checksum_module_wat(data: &[u8]) -> String {
    let pages = (DATA_OFFSET + data.len()).div_ceil(65536);
    let mut escaped = String::with_capacity(data.len() * 3);
    for byte in data {
        escaped.push_str(&format!("\\{byte:02x}"));
    }
    let len = data.len();
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const 0) "0123456789abcdef")
  (data (i32.const {DATA_OFFSET}) "{escaped}")
  (func (export "_start")
    (local $i i32) (local $hash i32) (local $n i32)
    (local.set $hash (i32.const 0x811c9dc5))
    (block $hashed
      (loop $next
        (br_if $hashed (i32.ge_u (local.get $i) (i32.const {len})))
        (local.set $hash
          (i32.mul
            (i32.xor (local.get $hash) (i32.load8_u offset={DATA_OFFSET} (local.get $i)))
            (i32.const 0x01000193)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; eight hex digits at 32..40, most significant nibble first, then a newline
    (block $written
      (loop $digit
        (br_if $written (i32.ge_u (local.get $n) (i32.const 8)))
        (i32.store8 offset=32 (local.get $n)
          (i32.load8_u
            (i32.and
              (i32.shr_u (local.get $hash)
                (i32.sub (i32.const 28) (i32.shl (local.get $n) (i32.const 2))))
              (i32.const 15))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $digit)))
    (i32.store8 (i32.const 40) (i32.const 10))
    (i32.store (i32.const 48) (i32.const 32))
    (i32.store (i32.const 52) (i32.const 9))
    (drop (call $fd_write (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 56)))))
"#
    )
}

/// Builds the module with `wat2wasm` and packs it into `dir/artifact`; returns the packed
/// directory and the expected output.
fn build_and_pack(dir: &Path) -> (PathBuf, String) {
    let data = pseudo_random(DATA_BYTES);
    let wat = dir.join("checksum.wat");
    std::fs::write(&wat, checksum_module_wat(&data)).expect("write wat");
    let module = dir.join("checksum.wasm");
    run(Command::new("wat2wasm").arg(&wat).arg("-o").arg(&module));
    assert!(
        std::fs::metadata(&module).expect("module").len() > 2 << 20,
        "the module is over 2 MiB"
    );
    let packed = dir.join("artifact");
    run(Command::new(wasmfn_binary())
        .args(["artifact", "pack", "-o"])
        .arg(&packed)
        .arg(&module));
    (packed, format!("{:08x}\n", fnv1a32(&data)))
}

fn manifest(packed: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(packed.join("artifact.json")).expect("manifest"))
        .expect("manifest JSON")
}

/// Stores the packed artifact as ConfigMaps `<prefix>-manifest` and `<prefix>-part-<i>` (one part
/// each, the way the operator's store splits it); returns their names.
fn store(ns: &wasmfn_e2e::Kubectl, prefix: &str, packed: &Path) -> Vec<String> {
    let mut names = vec![format!("{prefix}-manifest")];
    ns.run(&[
        "create",
        "configmap",
        &names[0],
        &format!("--from-file={}", packed.join("artifact.json").display()),
    ])
    .expect("manifest configmap");
    let parts = manifest(packed)["parts"].as_array().expect("parts").clone();
    for (index, part) in parts.iter().enumerate() {
        let key = part["name"].as_str().expect("part name");
        let name = format!("{prefix}-part-{index}");
        ns.run(&[
            "create",
            "configmap",
            &name,
            &format!("--from-file={key}={}", packed.join(key).display()),
        ])
        .expect("part configmap");
        let stored = ns.json(&["get", "configmap", &name]).expect("configmap");
        assert!(
            stored["binaryData"][key].is_string(),
            "the gzip part is binaryData: {}",
            stored["metadata"]
        );
        names.push(name);
    }
    names
}

/// `pod` with the artifact's ConfigMaps as one projected volume at /artifact and an emptyDir at
/// /tmp (where a runner stages a script, as the operator's run pods have).
fn with_artifact(pod: HardenedPod, configmaps: &[String]) -> String {
    pod.volume(
        projected_config_maps("artifact", configmaps),
        "/artifact",
        true,
    )
    .volume(empty_dir("scratch"), "/tmp", false)
    .manifest()
}

fn wasm_pod(name: &str, configmaps: &[String]) -> String {
    let pod = HardenedPod::new(name, &common::image("wasm-pod"))
        .runtime_class(WASM_RUNTIME_CLASS)
        .command(&["/artifact"])
        .env("WASMFN_TIMEOUT_MS", "60000");
    with_artifact(pod, configmaps)
}

fn runner_pod(name: &str, node: &str, configmaps: &[String]) -> String {
    let pod = HardenedPod::new(name, &common::image("runner"))
        .on_node(node)
        .command(&["wasmfn", "exec", "--timeout=60s", "/artifact"]);
    with_artifact(pod, configmaps)
}

/// Waits for the pod to end; checks its node; returns (exit code, result document).
fn outcome(ns: &wasmfn_e2e::Kubectl, pod: &str, node: &str) -> (i64, Value) {
    let state = ns
        .wait_for(&["pod", pod], Duration::from_secs(180), terminated)
        .unwrap_or_else(|e| panic!("{pod} terminates: {e}"));
    let placed = ns.json(&["get", "pod", pod]).expect("pod");
    assert_eq!(placed["spec"]["nodeName"], node, "{pod} runs on {node}");
    let message = state["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{pod} has a termination message: {state}"));
    let document = serde_json::from_str(message).unwrap_or_else(|e| {
        panic!("{pod}'s termination message is the result document ({e}): {message}")
    });
    (state["exitCode"].as_i64().expect("exit code"), document)
}

/// `wasmfn exec` here on the packed directory: (exit code, result document).
fn local(packed: &Path) -> (i32, Value) {
    let result = packed.with_file_name(format!(
        "{}.result.json",
        packed.file_name().expect("name").to_string_lossy()
    ));
    let status = Command::new(wasmfn_binary())
        .arg("exec")
        .arg(format!("--result={}", result.display()))
        .arg("--timeout=60s")
        .arg(packed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run wasmfn exec");
    let document = serde_json::from_str(&std::fs::read_to_string(&result).expect("result"))
        .expect("result JSON");
    (status.code().expect("exit code"), document)
}

/// The document without what legitimately differs between runners.
fn comparable(mut document: Value) -> Value {
    let object = document.as_object_mut().expect("document is an object");
    object.remove("timings");
    object.remove("runtime");
    document
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmfn-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn nodes() -> (String, String) {
    let c = cluster();
    (
        c.info().wasmedge_node().name.clone(),
        c.info().plain_node().name.clone(),
    )
}

#[test]
fn a_module_in_several_configmaps_runs_in_wasm_and_runner_pods() {
    let dir = temp_dir("configmap-artifact");
    let (packed, expected_stdout) = build_and_pack(&dir);
    let manifest = manifest(&packed);
    let parts = manifest["parts"].as_array().expect("parts").len();
    assert!(parts >= 3, "packed into {parts} parts: {manifest}");
    assert!(
        manifest["compressedSize"].as_u64().expect("compressedSize") > 2 << 20,
        "the data does not compress"
    );

    let ns = namespace("cm-artifact");
    let configmaps = store(&ns, "checksum", &packed);
    assert_eq!(configmaps.len(), parts + 1);
    let (node_a, node_b) = nodes();
    ns.create(&wasm_pod("wasm-packed", &configmaps))
        .expect("wasm pod");
    ns.create(&runner_pod("runner-packed", &node_b, &configmaps))
        .expect("runner pod");

    let (local_code, local_document) = local(&packed);
    assert_eq!(local_code, 0, "{local_document}");
    assert_eq!(local_document["reason"], "Completed");
    assert_eq!(local_document["stdout"]["head"], expected_stdout.as_str());
    assert_eq!(
        local_document["module"]["sha256"], manifest["digest"],
        "the document names the unpacked module"
    );
    for (pod, node) in [("wasm-packed", &node_a), ("runner-packed", &node_b)] {
        let (code, document) = outcome(&ns, pod, node);
        assert_eq!(code, 0, "{pod}: {document}");
        assert_eq!(
            comparable(document),
            comparable(local_document.clone()),
            "{pod} and wasmfn exec disagree"
        );
        let logs = ns.run(&["logs", pod]).expect("logs");
        assert_eq!(logs, expected_stdout, "{pod}'s log is the guest's output");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A Python script of over 2 MiB (a string literal of incompressible base64 text) packed like
/// the store packs a script, and what it prints: the literal's length and a checksum of it.
fn build_and_pack_script(dir: &Path) -> (PathBuf, String) {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(pseudo_random(DATA_BYTES));
    let script = dir.join("main.py");
    std::fs::write(
        &script,
        format!("DATA = \"{data}\"\nprint(len(DATA), sum(DATA.encode()) % 65521)\n"),
    )
    .expect("write the script");
    assert!(std::fs::metadata(&script).expect("script").len() > 2 << 20);
    let packed = dir.join("artifact");
    run(Command::new(wasmfn_binary())
        .args(["artifact", "pack", "--media-type", "text/x-python", "-o"])
        .arg(&packed)
        .arg(&script));
    let checksum = data.bytes().map(u64::from).sum::<u64>() % 65521;
    (packed, format!("{} {checksum}\n", data.len()))
}

#[test]
fn a_python_script_in_several_configmaps_runs_under_the_interpreter_in_wasm_and_runner_pods() {
    let dir = temp_dir("configmap-script");
    let (packed, expected_stdout) = build_and_pack_script(&dir);
    let manifest = manifest(&packed);
    assert_eq!(manifest["mediaType"], "text/x-python", "{manifest}");
    let parts = manifest["parts"].as_array().expect("parts").len();
    assert!(parts >= 2, "packed into {parts} parts: {manifest}");

    let ns = namespace("cm-script");
    let configmaps = store(&ns, "script", &packed);
    let (node_a, node_b) = nodes();
    ns.create(&wasm_pod("wasm-script", &configmaps))
        .expect("wasm pod");
    ns.create(&runner_pod("runner-script", &node_b, &configmaps))
        .expect("runner pod");

    let (local_code, local_document) = local(&packed);
    assert_eq!(local_code, 0, "{local_document}");
    assert_eq!(local_document["stdout"]["head"], expected_stdout.as_str());
    for (pod, node) in [("wasm-script", &node_a), ("runner-script", &node_b)] {
        let (code, document) = outcome(&ns, pod, node);
        assert_eq!(code, 0, "{pod}: {document}");
        assert_eq!(
            document["runtime"]["aot"], true,
            "{pod}: the interpreter runs its AOT form: {document}"
        );
        assert_eq!(
            comparable(document),
            comparable(local_document.clone()),
            "{pod} and wasmfn exec disagree"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_corrupted_part_ends_both_pods_with_a_digest_mismatch() {
    let dir = temp_dir("configmap-artifact-corrupt");
    let (packed, _) = build_and_pack(&dir);
    let part = packed.join("module.gz.001");
    let mut bytes = std::fs::read(&part).expect("part");
    bytes[4096] ^= 0x01;
    std::fs::write(&part, bytes).expect("corrupt the part");

    let ns = namespace("cm-corrupt");
    let configmaps = store(&ns, "corrupt", &packed);
    let (node_a, node_b) = nodes();
    ns.create(&wasm_pod("wasm-corrupt", &configmaps))
        .expect("wasm pod");
    ns.create(&runner_pod("runner-corrupt", &node_b, &configmaps))
        .expect("runner pod");

    let (local_code, local_document) = local(&packed);
    assert_eq!(local_code, 126, "{local_document}");
    let mut documents = Vec::new();
    for (pod, node) in [("wasm-corrupt", &node_a), ("runner-corrupt", &node_b)] {
        let (code, document) = outcome(&ns, pod, node);
        assert_eq!(code, 126, "{pod}: {document}");
        assert_eq!(document["reason"], "InvalidModule", "{pod}: {document}");
        let message = document["message"].as_str().expect("message");
        assert!(
            message.contains("module.gz.001") && message.contains("digest mismatch"),
            "{pod}'s message names the part and the mismatch: {message}"
        );
        assert!(
            document["module"].is_null(),
            "nothing ran in {pod}: {document}"
        );
        documents.push(comparable(document));
    }
    assert_eq!(
        documents[0], documents[1],
        "the shim and wasmfn exec report the same"
    );
    // Locally the message names the local path instead of /artifact; otherwise the same.
    let mut local_document = comparable(local_document);
    let local_message = local_document["message"]
        .as_str()
        .expect("message")
        .replace(&packed.display().to_string(), "/artifact");
    local_document["message"] = local_message.into();
    assert_eq!(local_document, documents[0]);
    let _ = std::fs::remove_dir_all(dir);
}
