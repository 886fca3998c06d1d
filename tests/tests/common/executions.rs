//! WasmExecution fixtures shared by the executions suite and `make bench-executions`: small WAT
//! guests (prebuilt into `language: wasm` functions, so no compile Job is needed), manifests, and
//! a `kubectl get -w` recorder that timestamps every watch event.

#![allow(dead_code, unreachable_pub)]

use std::io::BufReader;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use wasmfn_e2e::operator::{crds_dir, OperatorProcess};
use wasmfn_e2e::{Cluster, Kubectl};

/// Writes `hello\n`.
pub const HELLO: &str = include_str!("../../../runner-image/guests/wat/hello.wat");
/// Calls `proc_exit(3)`.
pub const EXIT3: &str = include_str!("../../../runner-image/guests/wat/exit3.wat");
/// Never returns.
pub const LOOP: &str = include_str!("../../../runner-image/guests/wat/loop.wat");

/// The JSON document [`JSON_OUT`] prints.
pub const JSON_DOCUMENT: &str = r#"{"answer":42,"items":["a","b"],"nested":{"ok":true}}"#;

/// Prints [`JSON_DOCUMENT`] and a newline.
pub const JSON_OUT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{\"answer\":42,\"items\":[\"a\",\"b\"],\"nested\":{\"ok\":true}}\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 53))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// Bytes [`BIG_OUTPUT`] writes to stdout.
pub const BIG_OUTPUT_BYTES: usize = 1 << 20;

/// Writes 1 MiB of `x` to stdout (16 writes of a 64 KiB buffer, each retried until complete).
pub const BIG_OUTPUT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0..8 iovec, 8..12 bytes written, 65536..131072 the buffer
  (func (export "_start") (local $chunk i32) (local $done i32)
    (memory.fill (i32.const 65536) (i32.const 120) (i32.const 65536))
    (block $all
      (loop $chunks
        (br_if $all (i32.ge_u (local.get $chunk) (i32.const 16)))
        (local.set $done (i32.const 0))
        (block $written
          (loop $partial
            (br_if $written (i32.ge_u (local.get $done) (i32.const 65536)))
            (i32.store (i32.const 0) (i32.add (i32.const 65536) (local.get $done)))
            (i32.store (i32.const 4) (i32.sub (i32.const 65536) (local.get $done)))
            (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
              (then unreachable))
            (local.set $done (i32.add (local.get $done) (i32.load (i32.const 8))))
            (br $partial)))
        (local.set $chunk (i32.add (local.get $chunk) (i32.const 1)))
        (br $chunks)))))
"#;

/// Grows its memory one MiB at a time until a grow is refused, then traps.
pub const MEMORY_BOMB: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))
"#;

/// Sleeps `argv[1]` milliseconds (default 3000) with `poll_oneoff`, then prints `slept\n`.
pub const SLEEPER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 16..24 argc and argv size; 128..176 one clock subscription; 256..288 its event;
  ;; 300 events written; 512 the message; 1024.. argv pointers; 4096.. argv strings
  (data (i32.const 512) "slept\n")
  (func (export "_start") (local $ms i64) (local $p i32) (local $c i32)
    (local.set $ms (i64.const 3000))
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (if (i32.ge_u (i32.load (i32.const 16)) (i32.const 2))
      (then
        (drop (call $args_get (i32.const 1024) (i32.const 4096)))
        (local.set $p (i32.load (i32.const 1028)))
        (local.set $ms (i64.const 0))
        (block $end
          (loop $digit
            (local.set $c (i32.load8_u (local.get $p)))
            (br_if $end (i32.lt_u (local.get $c) (i32.const 48)))
            (br_if $end (i32.gt_u (local.get $c) (i32.const 57)))
            (local.set $ms (i64.add (i64.mul (local.get $ms) (i64.const 10))
                                    (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $digit)))))
    ;; subscription: userdata 0, tag 0 (clock), clock 1 (monotonic), relative timeout in ns
    (i64.store (i32.const 128) (i64.const 0))
    (i64.store (i32.const 136) (i64.const 0))
    (i32.store (i32.const 144) (i32.const 1))
    (i64.store (i32.const 152) (i64.mul (local.get $ms) (i64.const 1000000)))
    (i64.store (i32.const 160) (i64.const 0))
    (i64.store (i32.const 168) (i64.const 0))
    (drop (call $poll (i32.const 128) (i32.const 256) (i32.const 1) (i32.const 300)))
    (i32.store (i32.const 0) (i32.const 512))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// Phases after which nothing changes.
pub const FINAL_PHASES: [&str; 3] = ["Succeeded", "Failed", "TimedOut"];

/// A `language: wasm` function whose module is `wat` assembled here (Ready without a Job).
pub fn prebuilt_function(name: &str, wat: &str, extra_spec: Value) -> String {
    let module = wat::parse_str(wat).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut spec = json!({
        "language": "Wasm",
        "source": {"base64": base64::engine::general_purpose::STANDARD.encode(module)},
    });
    merge(&mut spec, extra_spec);
    json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
           "metadata": {"name": name}, "spec": spec})
    .to_string()
}

/// A WasmExecution of `function` with `extra_spec` merged into its spec.
pub fn execution(name: &str, function: &str, extra_spec: Value) -> Value {
    let mut spec = json!({"functionRef": {"name": function}});
    merge(&mut spec, extra_spec);
    json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmExecution",
           "metadata": {"name": name}, "spec": spec})
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        target.extend(extra);
    }
}

/// Several objects as one `kubectl create -f -` document.
pub fn list(items: Vec<Value>) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Whether the execution reached a phase that never changes.
pub fn is_final(execution: &Value) -> bool {
    execution["status"]["phase"]
        .as_str()
        .is_some_and(|phase| FINAL_PHASES.contains(&phase))
}

/// The execution's condition of type `kind`, when present.
pub fn condition(object: &Value, kind: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

/// Events (events.k8s.io) about object `name`: (type, reason, note, count), where count
/// includes the repeats an event series folded in.
pub fn events_for(ns: &Kubectl, name: &str) -> Vec<(String, String, String, u64)> {
    let events = ns
        .json(&["get", "events.events.k8s.io"])
        .expect("list events");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            let count = e["series"]["count"]
                .as_u64()
                .or_else(|| e["deprecatedCount"].as_u64())
                .unwrap_or(1)
                .max(1);
            (
                text(&e["type"]),
                text(&e["reason"]),
                text(&e["note"]),
                count,
            )
        })
        .collect()
}

/// An API client with `kubectl`'s credentials (for what `kubectl` does slowly: many creates,
/// status patches).
pub async fn client(kubectl: &Kubectl) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubectl.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// One watch event: when it arrived, ADDED/MODIFIED/DELETED, and the object.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub at: Instant,
    pub kind: String,
    pub object: Value,
}

impl WatchEvent {
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// `kubectl get RESOURCE -w --output-watch-events -o json` in one namespace, every event kept
/// with the time it arrived. The kubectl process is killed when this is dropped.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    events: Arc<Mutex<Vec<WatchEvent>>>,
}

impl Watch {
    /// Starts watching `resource` (e.g. `pods`, `wasmexecutions`) in `namespace`, and gives
    /// kubectl a moment to establish the watch.
    pub fn start(ns: &Kubectl, namespace: &str, resource: &str) -> Watch {
        let mut child = Command::new(ns.binary())
            .arg(format!("--kubeconfig={}", ns.kubeconfig().display()))
            .args(["-n", namespace, "get", resource])
            .args(["-w", "--output-watch-events", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl get -w");
        let stdout = child.stdout.take().expect("kubectl stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        std::thread::spawn(move || {
            let stream =
                serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
            for item in stream {
                let Ok(item) = item else { break };
                let event = WatchEvent {
                    at: Instant::now(),
                    kind: item["type"].as_str().unwrap_or_default().to_owned(),
                    object: item["object"].clone(),
                };
                sink.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(event);
            }
        });
        std::thread::sleep(Duration::from_millis(700));
        Watch { child, events }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<WatchEvent> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The events after the first `seen` (for loops that would otherwise copy every event on
    /// each pass).
    pub fn events_after(&self, seen: usize) -> Vec<WatchEvent> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        events.get(seen..).unwrap_or_default().to_vec()
    }

    /// The last state seen of each object whose label `key` equals `value`, by name, in the
    /// order the objects first appeared.
    pub fn labelled(&self, key: &str, value: &str) -> Vec<Value> {
        let mut names: Vec<String> = Vec::new();
        let mut last: std::collections::HashMap<String, Value> = Default::default();
        for event in self.events() {
            if event.object["metadata"]["labels"][key] != value {
                continue;
            }
            let name = event.name().to_owned();
            if !names.contains(&name) {
                names.push(name.clone());
            }
            last.insert(name, event.object);
        }
        names
            .into_iter()
            .filter_map(|name| last.remove(&name))
            .collect()
    }

    /// The first event matching `wanted`, waiting up to `timeout` for it.
    pub fn wait_first(
        &self,
        timeout: Duration,
        wanted: impl Fn(&WatchEvent) -> bool,
    ) -> Option<WatchEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .events
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .find(|e| wanted(e))
                .cloned();
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a DELETED event was seen for `name`.
    pub fn deleted(&self, name: &str) -> bool {
        self.events()
            .iter()
            .any(|e| e.kind == "DELETED" && e.name() == name)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// For the benchmarks: a fresh cluster with the CRDs, the operator (`identity`) leading, and
/// namespace `namespace` holding the Ready prebuilt function `hello`.
pub fn cluster_with_hello(identity: &str, namespace: &str) -> (Cluster, OperatorProcess, Kubectl) {
    let cluster = Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_wasmfn-cluster")))
        .expect("start the cluster");
    cluster
        .kubectl()
        .run(&["apply", "-f", crds_dir().to_str().expect("utf-8")])
        .expect("CRDs");
    let mut operator = OperatorProcess::start(cluster.info(), identity, &[]).expect("operator");
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("leads");
    let ns = cluster.namespace(namespace).expect("namespace");
    ns.create(&prebuilt_function("hello", HELLO, json!({})))
        .expect("function");
    ns.wait_for(&["wasmfunction", "hello"], Duration::from_secs(60), |f| {
        (f["status"]["phase"] == "Ready").then_some(())
    })
    .expect("the function is Ready");
    (cluster, operator, ns)
}
