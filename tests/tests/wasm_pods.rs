//! WasmEdge nodes: the same modules and inputs give the same result document through
//! `wasmfn exec` on this machine, a runner-image pod on node B, a Wasm pod run by the project's
//! containerd shim on node A (RuntimeClass `wasmfn`), and the warm agent on node A (the chart's
//! DaemonSet, handed the run over mutual TLS with the operator's certificate and client) —
//! timings and the runtime field aside.

mod common;

use common::executions::{execution, prebuilt_function, FINAL_PHASES, HELLO};
use common::hardened_pod::{config_map, HardenedPod};
use common::registry::{sha256, PrivateRegistry, Repository};
use common::{cluster, namespace, pod_processes, still_alive, terminated};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wasmfn_e2e::cluster::layout::WASM_RUNTIME_CLASS;
use wasmfn_e2e::operator::{crds_dir, OperatorProcess};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `wasmfn` is built into the same directory as the cluster supervisor.
fn wasmfn_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster")).with_file_name("wasmfn")
}

fn run(command: &mut Command) {
    let out = command.output().expect("spawn");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles the C probe and the Rust misbehaving guest with the real toolchains.
fn compile_guests(dir: &Path) {
    let guests = repo().join("runner-image/guests");
    run(Command::new("clang-19")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o"])
        .arg(dir.join("probe.wasm"))
        .arg(guests.join("c/probe.c")));
    run(Command::new("/usr/bin/rustc")
        // Debian ships the wasm linker as wasm-ld-19 (package lld-19), not rust-lld.
        .args([
            "--target",
            "wasm32-wasip1",
            "-O",
            "-C",
            "strip=symbols",
            "-C",
            "linker=wasm-ld-19",
            "-o",
        ])
        .arg(dir.join("misbehave.wasm"))
        .arg(guests.join("rust/misbehave.rs")));
    std::fs::write(dir.join("stdin.txt"), "line one\nline two\n").expect("stdin file");
    common::native_code::forge_module(dir);
}

/// One run: module, guest args, guest env, and run settings.
struct Case {
    name: &'static str,
    module: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    stdin: bool,
    timeout_ms: u64,
    memory: u64,
}

const CASES: &[Case] = &[
    Case {
        name: "hello",
        module: "probe.wasm",
        args: &[],
        env: &[],
        stdin: false,
        timeout_ms: 10_000,
        memory: 64 << 20,
    },
    Case {
        name: "stdin",
        module: "probe.wasm",
        args: &[],
        env: &[],
        stdin: true,
        timeout_ms: 10_000,
        memory: 64 << 20,
    },
    Case {
        name: "args",
        module: "probe.wasm",
        args: &["one", "two words", "--three"],
        env: &[],
        stdin: false,
        timeout_ms: 10_000,
        memory: 64 << 20,
    },
    Case {
        name: "env",
        module: "probe.wasm",
        args: &[],
        env: &[("GREETING", "hi there")],
        stdin: false,
        timeout_ms: 10_000,
        memory: 64 << 20,
    },
    Case {
        name: "exit3",
        module: "probe.wasm",
        args: &[],
        env: &[("EXIT_CODE", "3")],
        stdin: false,
        timeout_ms: 10_000,
        memory: 64 << 20,
    },
    Case {
        name: "trap",
        module: "misbehave.wasm",
        args: &["trap"],
        env: &[],
        stdin: false,
        timeout_ms: 10_000,
        memory: 64 << 20,
    },
    Case {
        name: "loop",
        module: "misbehave.wasm",
        args: &["loop"],
        env: &[],
        stdin: false,
        timeout_ms: 2_000,
        memory: 64 << 20,
    },
    Case {
        name: "native-code",
        module: "forged.wasm",
        args: &[],
        env: &[],
        stdin: false,
        timeout_ms: 10_000,
        memory: 64 << 20,
    },
    Case {
        name: "memory-bomb",
        module: "misbehave.wasm",
        args: &["memory-bomb"],
        env: &[],
        stdin: false,
        timeout_ms: 10_000,
        memory: 16 << 20,
    },
];

/// `wasmfn exec` flags for a case whose files live in `artifact` and `inputs`.
fn exec_args(case: &Case, artifact: &str, inputs: &str) -> Vec<String> {
    let mut args = vec![
        "exec".to_string(),
        format!("--timeout={}ms", case.timeout_ms),
        format!("--memory={}", case.memory),
    ];
    if case.stdin {
        args.push(format!("--stdin-file={inputs}/stdin.txt"));
    }
    for (k, v) in case.env {
        args.push(format!("--env={k}={v}"));
    }
    args.push(format!("{artifact}/{}", case.module));
    args.push("--".into());
    args.extend(case.args.iter().map(|a| a.to_string()));
    args
}

/// `pod` with the ConfigMaps `modules` at /artifact and `inputs` at /inputs.
fn with_modules_and_inputs(pod: HardenedPod) -> String {
    pod.volume(config_map("artifact", "modules"), "/artifact", false)
        .volume(config_map("inputs", "inputs"), "/inputs", false)
        .manifest()
}

fn runner_pod(case: &Case, node: &str) -> String {
    let mut command = vec!["wasmfn".to_string()];
    command.extend(exec_args(case, "/artifact", "/inputs"));
    let pod = HardenedPod::new(&format!("runner-{}", case.name), &common::image("runner"))
        .on_node(node)
        .command(&command);
    with_modules_and_inputs(pod)
}

fn wasm_pod(case: &Case) -> String {
    let mut command = vec![format!("/artifact/{}", case.module)];
    command.extend(case.args.iter().map(|a| a.to_string()));
    // The variables the operator writes, through its own encoder (the guest's environment in
    // WASMFN_GUEST_ENV), so the shim reads exactly what production pods carry.
    let settings = wasmfn_agent_protocol::RunSettings {
        timeout_ms: Some(case.timeout_ms),
        memory_bytes: Some(case.memory),
        stdin_file: case.stdin.then(|| "/inputs/stdin.txt".to_owned()),
        env: case
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let mut pod = HardenedPod::new(&format!("wasm-{}", case.name), &common::image("wasm-pod"))
        .runtime_class(WASM_RUNTIME_CLASS)
        .command(&command);
    for (name, value) in settings.to_shim_env() {
        pod = pod.env(&name, &value);
    }
    with_modules_and_inputs(pod)
}

/// The document without what legitimately differs between runners: timings, the runtime
/// (whether native code ran), and what only WasmEdge's interpreter adds to a trap's message
/// (the instruction and its bytecode offset; the agent runs its AOT form).
fn comparable(mut document: Value) -> Value {
    let object = document.as_object_mut().expect("document is an object");
    object.remove("timings");
    object.remove("runtime");
    if let Some(message) = object.get("message").and_then(Value::as_str) {
        let cut = message
            .split("; In instruction")
            .next()
            .unwrap_or(message)
            .to_owned();
        object.insert("message".into(), Value::String(cut));
    }
    document
}

/// The run contract of a case, as the operator hands it to an agent.
fn agent_assignment(case: &Case, dir: &Path) -> wasmfn_agent_protocol::RunAssignment {
    use base64::Engine as _;
    let module = std::fs::read(dir.join(case.module)).expect("module");
    let stdin = case.stdin.then(|| {
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.join("stdin.txt")).expect("stdin"))
    });
    wasmfn_agent_protocol::RunAssignment {
        namespace: "parity".into(),
        execution: case.name.into(),
        uid: format!("parity-{}", case.name),
        attempt: 1,
        module_digest: wasmfn_artifact::sha256_digest(&module),
        script_media_type: None,
        settings: wasmfn_agent_protocol::RunSettings {
            timeout_ms: Some(case.timeout_ms),
            memory_bytes: Some(case.memory),
            env: case
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: case.args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        },
        stdin_base64: stdin,
    }
}

/// Every case on the agent: the module sent when the agent asks for it, then the run.
fn agent_documents(agents: &wasmfn_e2e::agents::Agents, dir: &Path) -> Vec<Value> {
    use wasmfn_agent_protocol::client::{AgentClient, RunAnswer};
    let (_, _, ip) = agents.pods().expect("agent pods")[0].clone();
    let identity = wasmfn_agent_protocol::tls::Identity::read_dir(&agents.client_tls)
        .expect("the operator's certificate");
    let client = AgentClient::new(
        format!("{ip}:{}", wasmfn_e2e::agents::PORT),
        identity.client_config().expect("TLS"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut documents = Vec::new();
        for case in CASES {
            let assignment = agent_assignment(case, dir);
            let mut answer = client.run(&assignment).await.expect("run");
            if answer == RunAnswer::ModuleMissing {
                let module = std::fs::read(dir.join(case.module)).expect("module");
                let sent = client.put_module(&assignment.module_digest, module).await;
                if case.name == "native-code" {
                    // The agent refuses to cache it; the pod runners refuse to run it.
                    let refusal = sent.expect_err("the agent refuses a module with native code");
                    assert!(refusal.to_string().contains("wasmedge"), "{refusal}");
                    documents.push(Value::Null);
                    continue;
                }
                sent.expect("module");
                answer = client.run(&assignment).await.expect("run");
            }
            match answer {
                RunAnswer::Ran(document) => {
                    documents.push(serde_json::to_value(*document).expect("JSON"))
                }
                RunAnswer::ModuleMissing => panic!("{}: the agent lost the module", case.name),
            }
        }
        documents
    })
}

fn local_document(case: &Case, dir: &Path) -> Value {
    let result = dir.join(format!("{}.result.json", case.name));
    let dir_text = dir.display().to_string();
    let mut args = exec_args(case, &dir_text, &dir_text);
    args.insert(1, format!("--result={}", result.display()));
    let status = Command::new(wasmfn_binary())
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run wasmfn exec");
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(&result).expect("result document"))
            .expect("JSON");
    assert_eq!(
        status.code(),
        Some(expected_exit(&document)),
        "wasmfn exec's exit code mirrors the document for {}",
        case.name
    );
    document
}

fn expected_exit(document: &Value) -> i32 {
    if let Some(code) = document["exitCode"].as_i64() {
        return code as i32;
    }
    match document["reason"].as_str() {
        Some("Completed") => 0,
        Some("TimedOut") => 124,
        Some("Trap") | Some("StackOverflow") => 134,
        Some("MemoryLimitExceeded") => 137,
        Some("NativeCodeSection") => 126,
        other => panic!("unexpected reason {other:?}"),
    }
}

/// Waits for `pod` to terminate. A pod whose container the runtime could not even create
/// (containerd's "failed to create containerd task": no guest ran; a rare race in the container
/// library under concurrent creation) is created again from `manifest`, at most twice, as the
/// operator retries such an attempt.
fn terminated_state(ns: &wasmfn_e2e::Kubectl, pod: &str, manifest: &str) -> Value {
    for again in 0.. {
        let state = ns
            .wait_for(&["pod", pod], Duration::from_secs(120), terminated)
            .unwrap_or_else(|e| panic!("{pod} terminates: {e}"));
        let message = state["message"].as_str().unwrap_or_default();
        if again == 2 || !message.starts_with("failed to create containerd task") {
            return state;
        }
        eprintln!(
            "{pod}: the runtime could not create its container; creating it again: {message}"
        );
        ns.run(&["delete", "pod", pod, "--wait=true", "--timeout=60s"])
            .expect("delete the pod");
        ns.create(manifest).expect("create the pod again");
    }
    unreachable!("the loop returns")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmfn-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn create_configmaps(ns: &wasmfn_e2e::Kubectl, dir: &Path) {
    ns.run(&[
        "create",
        "configmap",
        "modules",
        &format!("--from-file={}", dir.join("probe.wasm").display()),
        &format!("--from-file={}", dir.join("misbehave.wasm").display()),
        &format!("--from-file={}", dir.join("forged.wasm").display()),
    ])
    .expect("modules configmap");
    ns.run(&[
        "create",
        "configmap",
        "inputs",
        &format!("--from-file={}", dir.join("stdin.txt").display()),
    ])
    .expect("inputs configmap");
}

#[test]
fn wasm_pods_runner_pods_and_wasmfn_exec_give_the_same_result_documents() {
    let dir = temp_dir("parity");
    compile_guests(&dir);
    let ns = namespace("parity");
    create_configmaps(&ns, &dir);
    let (node_a, node_b) = {
        let c = cluster();
        (
            c.info().wasmedge_node().name.clone(),
            c.info().plain_node().name.clone(),
        )
    };
    for case in CASES {
        ns.create(&runner_pod(case, &node_b)).expect("runner pod");
        ns.create(&wasm_pod(case)).expect("wasm pod");
    }
    let agents = {
        let c = cluster();
        wasmfn_e2e::agents::Agents::install(&c, "parity-agents", &dir).expect("agents")
    };
    let on_agent = agent_documents(&agents, &dir);
    for (case, agent) in CASES.iter().zip(on_agent) {
        let local = local_document(case, &dir);
        if case.name == "native-code" {
            // Refused before loading, so nothing ran: neither A's line nor B's.
            assert_eq!(local["reason"], "NativeCodeSection", "{local}");
            assert_eq!(local["stdout"]["size"], 0, "{local}");
        }
        let mut documents = Vec::new();
        for (pod, node, manifest) in [
            (
                format!("runner-{}", case.name),
                &node_b,
                runner_pod(case, &node_b),
            ),
            (format!("wasm-{}", case.name), &node_a, wasm_pod(case)),
        ] {
            let state = terminated_state(&ns, &pod, &manifest);
            let placed = ns.json(&["get", "pod", &pod]).expect("pod");
            assert_eq!(
                placed["spec"]["nodeName"],
                node.as_str(),
                "{pod} runs on node {node}"
            );
            let message = state["message"]
                .as_str()
                .unwrap_or_else(|| panic!("{pod} has a termination message: {state}"));
            let document: Value = serde_json::from_str(message).unwrap_or_else(|e| {
                panic!("{pod}'s termination message is the result document ({e}): {message}")
            });
            assert_eq!(
                state["exitCode"].as_i64(),
                Some(expected_exit(&document) as i64),
                "{pod}'s exit code mirrors the guest"
            );
            documents.push((pod, document));
        }
        if !agent.is_null() {
            documents.push(("the agent".into(), agent));
        }
        for (pod, document) in documents {
            assert_eq!(
                comparable(document),
                comparable(local.clone()),
                "{pod} and wasmfn exec disagree on case {}",
                case.name
            );
        }
    }
    // The guest's output is the container's output. The log interleaves the two streams line by
    // line in whatever order the runtime flushed them; without stderr's one line it is stdout.
    let logs = ns
        .run(&["logs", "wasm-stdin"])
        .expect("logs of the Wasm pod");
    assert!(
        logs.contains("probe done\n"),
        "stderr is in the log: {logs}"
    );
    assert_eq!(
        logs.replacen("probe done\n", "", 1),
        "hello from c\nargs:\nenv: \nstdin: line one\nline two\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs a Wasm pod (RuntimeClass `wasmfn`) from image `wasmfn.local/<image>:dev` with `args`
/// and `env`; returns its result document.
fn run_image_pod(
    ns: &wasmfn_e2e::Kubectl,
    pod: &str,
    image: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let mut manifest = HardenedPod::new(pod, &format!("wasmfn.local/{image}:dev"))
        .runtime_class(WASM_RUNTIME_CLASS)
        .args(args);
    for (name, value) in env {
        manifest = manifest.env(name, value);
    }
    ns.create(&manifest.manifest()).expect("pod");
    let state = ns
        .wait_for(&["pod", pod], Duration::from_secs(120), terminated)
        .expect("terminates");
    serde_json::from_str(state["message"].as_str().expect("message")).expect("document")
}

#[test]
fn a_module_from_a_registry_image_runs_in_a_wasm_pod() {
    let dir = temp_dir("image");
    compile_guests(&dir);
    let registry_port = cluster().info().registry_port;
    let name = format!("test-probe-module-{}", std::process::id());
    let out = Command::new("buildah")
        .args(["from", "scratch"])
        .output()
        .expect("buildah from");
    let container = String::from_utf8_lossy(&out.stdout).trim().to_string();
    run(Command::new("buildah")
        .arg("copy")
        .arg(&container)
        .arg(dir.join("probe.wasm"))
        .arg("/probe.wasm"));
    // The module is the entrypoint, so a pod's `args` become the guest's arguments.
    run(Command::new("buildah").args(["config", "--entrypoint", "[\"/probe.wasm\"]", &container]));
    run(Command::new("buildah").args([
        "commit",
        "-q",
        &container,
        &format!("wasmfn.local/{name}:dev"),
    ]));
    run(Command::new("buildah").args(["rm", &container]));
    run(Command::new("buildah").args([
        "push",
        "-q",
        "--tls-verify=false",
        &format!("wasmfn.local/{name}:dev"),
        &format!("docker://127.0.0.1:{registry_port}/{name}:dev"),
    ]));
    let ns = namespace("image");
    let document = run_image_pod(&ns, "from-image", &name, &["from", "the image"], &[]);
    assert_eq!(document["reason"], "Completed", "{document}");
    let logs = ns.run(&["logs", "from-image"]).expect("logs");
    assert!(
        logs.contains("hello from c\n") && logs.contains("args: from the image\n"),
        "{logs}"
    );
    let _ = Command::new("buildah")
        .args(["rmi", &format!("wasmfn.local/{name}:dev")])
        .output();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn deleting_a_running_wasm_pod_stops_the_guest() {
    let dir = temp_dir("delete");
    compile_guests(&dir);
    let ns = namespace("wasm-delete");
    create_configmaps(&ns, &dir);
    let case = Case {
        name: "spin",
        module: "misbehave.wasm",
        args: &["loop"],
        env: &[],
        stdin: false,
        timeout_ms: 600_000,
        memory: 64 << 20,
    };
    ns.create(&wasm_pod(&case)).expect("pod");
    let uid = ns
        .wait_for(&["pod", "wasm-spin"], Duration::from_secs(60), |p| {
            (p["status"]["phase"] == "Running")
                .then(|| p["metadata"]["uid"].as_str().map(String::from))?
        })
        .expect("runs");
    let node = cluster().info().wasmedge_node().clone();
    let processes = pod_processes(&node.pods_cgroup, &uid).unwrap_or_default();
    assert!(!processes.is_empty(), "the guest runs in the pod's cgroup");
    // What matters is the guest's death, not when the API object goes: on this busy machine the
    // kubelet can take most of a minute to confirm a deletion whose containers died at once.
    ns.run(&["delete", "pod", "wasm-spin", "--wait=false"])
        .expect("delete");
    // The processes seen must die, not merely leave the cgroup (or the cgroup vanish).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !still_alive(&processes).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the guest survived its pod: {:?}",
            still_alive(&processes)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Pushes `module` to the cluster's registry as an OCI Wasm artifact: config architecture `wasm`,
/// os `wasip1`, no rootfs layers, and one `application/wasm` layer holding the raw module.
fn push_wasm_artifact(registry_port: u16, name: &str, module: &[u8]) {
    Repository::new(registry_port, name).push_wasm_artifact("dev", module);
}

#[test]
fn an_oci_wasm_artifact_runs_from_its_wasm_layer() {
    let dir = temp_dir("artifact");
    compile_guests(&dir);
    let module = std::fs::read(dir.join("probe.wasm")).expect("module");
    let registry_port = cluster().info().registry_port;
    let name = format!("test-wasm-artifact-{}", std::process::id());
    push_wasm_artifact(registry_port, &name, &module);
    let ns = namespace("artifact");
    // No command: the module comes from the image's only layer; args[0] names the program.
    let document = run_image_pod(
        &ns,
        "artifact",
        &name,
        &["/probe.wasm", "layer", "args"],
        &[("GREETING", "from a layer")],
    );
    assert_eq!(document["reason"], "Completed", "{document}");
    use sha2::{Digest, Sha256};
    assert_eq!(
        document["module"]["sha256"],
        format!("sha256:{}", hex::encode(Sha256::digest(&module))),
        "the layer's module ran"
    );
    let logs = ns.run(&["logs", "artifact"]).expect("logs");
    assert!(
        logs.contains("args: layer args\nenv: from a layer\n"),
        "{logs}"
    );
    // The same way in, a module carrying its own native code is refused before it loads.
    let forged = format!("{name}-forged");
    push_wasm_artifact(
        registry_port,
        &forged,
        &std::fs::read(dir.join("forged.wasm")).expect("forged"),
    );
    let document = run_image_pod(&ns, "forged", &forged, &["/forged.wasm"], &[]);
    assert_eq!(document["reason"], "NativeCodeSection", "{document}");
    assert_eq!(document["stdout"]["size"], 0, "{document}");
    // Both images are on the node now; the first still runs its own module. (When every
    // artifact had the same config, the node knew them as one image and ran the forged one.)
    let document = run_image_pod(&ns, "artifact-again", &name, &["/probe.wasm"], &[]);
    assert_eq!(document["reason"], "Completed", "{document}");
    assert_eq!(
        document["module"]["sha256"],
        format!("sha256:{}", hex::encode(Sha256::digest(&module))),
        "the first image's module ran again"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_module_in_a_registry_that_needs_credentials_is_pushed_and_pulled_with_them() {
    let registry = PrivateRegistry::start("wasmfn", "pushes-and-pulls");
    let info = cluster().info().clone();
    registry.reachable_from(&info);
    let auth = tempfile::NamedTempFile::new().expect("auth file");
    std::fs::write(auth.path(), registry.docker_config()).expect("write the auth file");
    let host = registry.host();
    cluster()
        .kubectl()
        .run(&["apply", "-f", crds_dir().to_str().expect("utf-8 path")])
        .expect("apply the CRDs");
    let mut operator = OperatorProcess::start(
        &info,
        "private-registry",
        &[
            "--oci-registry",
            &host,
            "--oci-pull-registry",
            &host,
            "--oci-insecure",
            "true",
            "--registry-auth-file",
            auth.path().to_str().expect("utf-8 path"),
            "--image-pull-secrets",
            "registry-credentials",
        ],
    )
    .expect("start the operator");
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("the operator leads");
    let ns = namespace("private-registry");
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "registry-credentials"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": registry.docker_config()}});
    ns.create(&secret.to_string()).expect("the pull Secret");
    ns.create(&prebuilt_function(
        "hello",
        HELLO,
        json!({"artifactStore": "Oci"}),
    ))
    .expect("create the function");
    let location = ns
        .wait_for(&["wasmfunction", "hello"], Duration::from_secs(60), |f| {
            (f["status"]["phase"] == "Ready")
                .then(|| {
                    f["status"]["artifact"]["location"]
                        .as_str()
                        .map(str::to_owned)
                })
                .flatten()
        })
        .expect("hello is Ready from the private registry");
    let digest = location
        .strip_prefix(&format!("{host}/wasmfn/modules@"))
        .unwrap_or_else(|| panic!("the module is in the private registry: {location}"));
    // The digest the operator computed at push is the one the registry serves.
    let modules = Repository::new(registry.port, "wasmfn/modules");
    let (manifest, _) = modules
        .clone()
        .with_credentials(&registry.credentials)
        .manifest(digest);
    assert_eq!(sha256(&manifest), digest);
    let anonymous = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "http://{host}/v2/wasmfn/modules/manifests/{digest}"
        ))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&anonymous.stdout),
        "401",
        "the registry refuses anonymous pulls"
    );

    // The node pulls the module image with the Secret the operator names on the Wasm pod.
    let run = execution("hello-run", "hello", json!({"runtime": "WasmEdge"}));
    ns.create(&run.to_string()).expect("create the execution");
    let status = ns
        .wait_for(
            &["wasmexecution", "hello-run"],
            Duration::from_secs(120),
            |e| {
                FINAL_PHASES
                    .contains(&e["status"]["phase"].as_str()?)
                    .then(|| e["status"].clone())
            },
        )
        .expect("the execution finishes");
    assert_eq!(
        (
            status["phase"].as_str(),
            status["path"].as_str(),
            status["stdout"].as_str()
        ),
        (Some("Succeeded"), Some("WasmPod"), Some("hello\n")),
        "{status}"
    );
}
