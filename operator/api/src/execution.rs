//! `WasmExecution`: one run of one function with its input and limits, and its result.

#[cfg(feature = "kube")]
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
#[cfg(feature = "kube")]
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::function::{EnvVar, MAX_ENV_VARS};

/// Most guest arguments of one execution.
pub const MAX_ARGS: usize = 256;

/// Most bytes of one guest argument. [`MAX_ARGS`] of them make 1 MiB, the runners' limit for
/// all arguments together, and leave room in the API server's 1.5 MiB request limit for stdin
/// (256 KiB) and env.
pub const MAX_ARG_BYTES: usize = 4096;

/// One run of a function. The operator places it on a WasmEdge node when the cluster has one
/// (or on a container pod that embeds WasmEdge) and writes the result into the status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[cfg_attr(feature = "kube", derive(CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "wasmfn.dev",
        version = "v1alpha1",
        kind = "WasmExecution",
        namespaced,
        status = "WasmExecutionStatus",
        shortname = "wex",
        category = "wasmfn",
        derive = "PartialEq",
        doc = "One run of a WasmFunction with its input and limits; the status holds the result (exit code, output, timings, the runtime used).",
        printcolumn = r#"{"name":"Function","type":"string","jsonPath":".spec.functionRef.name"}"#,
        printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
        printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".status.runtime"}"#,
        printcolumn = r#"{"name":"Path","type":"string","jsonPath":".status.path"}"#,
        printcolumn = r#"{"name":"Exit","type":"integer","jsonPath":".status.exitCode"}"#,
        printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".status.duration"}"#,
        printcolumn = r#"{"name":"Node","type":"string","priority":1,"jsonPath":".status.node"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("not" = {"required": ["stdin", "input"]}))]
pub struct WasmExecutionSpec {
    /// The function to run (same namespace). The execution waits, Pending, until it is Ready.
    pub function_ref: FunctionReference,
    /// Guest arguments (`argv[1..]`): at most 256, each at most 4096 bytes (1 MiB together).
    /// Larger values belong on stdin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ARGS), inner(length(max = MAX_ARG_BYTES)))]
    pub args: Vec<String>,
    /// Guest environment (at most 64 entries); entries win over the function's `defaults.env`
    /// by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV_VARS))]
    pub env: Vec<EnvVar>,
    /// Text given to the guest on stdin, at most 256 KiB. At most one of `stdin` and `input`
    /// may be set (the API server refuses both). Leave it out for no input: a Kubernetes 1.20
    /// API server refuses an empty string here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = crate::inputs::MAX_STDIN_BYTES))]
    pub stdin: Option<String>,
    /// A JSON value serialised onto the guest's stdin (at most one of `stdin` and `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub input: Option<serde_json::Value>,
    /// Arguments for a library module's export (the function's `entrypoint`), as JSON numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub invoke_args: Vec<serde_json::Number>,
    /// Wall-clock limit in milliseconds (default: the function's, else the operator's 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64", range(min = 1, max = crate::inputs::MAX_TIMEOUT_MILLIS))]
    pub timeout_millis: Option<i64>,
    /// Linear-memory limit as a quantity (`64Mi`; default: the function's, else 128 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", regex(pattern = r"^[0-9]+(Ki|Mi|Gi|k|M|G)?$"))]
    pub memory_limit: Option<String>,
    /// Where to run: `Auto` (a WasmEdge node when there is one, else a container pod),
    /// `WasmEdge` (never falls back; waits with a condition) or `Container`.
    #[serde(default)]
    pub runtime: ExecutionRuntime,
    /// Cap on the stdout and stderr kept in status, bytes each (default 4096; the full sizes and
    /// digests are reported either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64", range(min = 0, max = crate::inputs::MAX_OUTPUT_BYTES))]
    pub max_output_bytes: Option<i64>,
    /// Delete the execution this many seconds after it finishes (default: the operator's
    /// `--finished-ttl-seconds`, 7 days in the chart; 0 there keeps it until deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64", range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Extra attempts when the run is lost to the platform (pod evicted, node gone); a guest's
    /// own failure is never retried.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,
}

/// A reference to a function.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionReference {
    /// The WasmFunction's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where an execution may run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExecutionRuntime {
    /// A WasmEdge node when the cluster has a Ready one, else a container pod.
    #[default]
    Auto,
    /// Only a WasmEdge node.
    WasmEdge,
    /// Only a container pod running the runner image.
    Container,
}

/// The runtime that ran an attempt: `WasmEdge` (the warm agent or a Wasm pod on a WasmEdge
/// node) or `Container` (a container pod running the runner image, WasmEdge embedded).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Runtime {
    /// WasmEdge on a WasmEdge node: the warm agent or a Wasm pod.
    WasmEdge,
    /// A container pod running the runner image (WasmEdge embedded).
    Container,
}

impl Runtime {
    /// As written in status, annotations and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::WasmEdge => "WasmEdge",
            Runtime::Container => "Container",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "WasmEdge" => Ok(Runtime::WasmEdge),
            "Container" => Ok(Runtime::Container),
            other => Err(format!(
                "{other:?} is not a runtime (WasmEdge or Container)"
            )),
        }
    }
}

/// Which of the three run paths ran an attempt.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ExecutionPath {
    /// The warm agent on a WasmEdge node (`wasmfn agent`): no pod per run.
    Agent,
    /// A Wasm pod on a WasmEdge node, run by wasmfn's containerd shim.
    WasmPod,
    /// A container pod running the runner image (WasmEdge embedded).
    ContainerPod,
}

/// An execution's lifecycle phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ExecutionPhase {
    /// Waiting for the function or for a place to run.
    Pending,
    /// A pod was created for it.
    Scheduled,
    /// The guest is running.
    Running,
    /// The guest exited with code 0.
    Succeeded,
    /// The guest failed (non-zero exit, trap, memory limit, invalid module) or the run was lost.
    Failed,
    /// The guest ran past its timeout and was stopped.
    TimedOut,
}

#[cfg(feature = "kube")]
/// What happened to an execution.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmExecutionStatus {
    /// Pending, Scheduled, Running, Succeeded, Failed or TimedOut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExecutionPhase>,
    /// `Succeeded`: Unknown while it waits or runs (reasons FunctionNotReady, FunctionNotFound,
    /// Unschedulable, Retrying, Scheduled, Running), True when the guest completed, False with
    /// the failure's reason (NonZeroExit, Trap, TimedOut, MemoryLimitExceeded, OOMKilled,
    /// PodEvicted, PodDeleted, NodeLost, FunctionFailed, InputTooLarge, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The runtime that ran it: `WasmEdge` (the agent or a Wasm pod on a WasmEdge node) or
    /// `Container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// The path that ran the current attempt: `Agent`, `WasmPod` or `ContainerPod`.
    /// `placementReason` says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<ExecutionPath>,
    /// The agent pod that ran it, when `path` is `Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Why that runtime and path were chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_reason: Option<String>,
    /// The node it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The run pod that ran it (none on the agent path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// When the guest started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Run time of the guest in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// `durationMs` for people (`12ms`, `1.4s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The guest's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Fixed reason of the outcome (`Completed`, `NonZeroExit`, `Trap`, `TimedOut`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The start of the guest's stdout (up to `maxOutputBytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// The start of the guest's stderr (up to `maxOutputBytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// True when `stdout` holds less than the guest wrote.
    #[serde(default)]
    pub stdout_truncated: bool,
    /// True when `stderr` holds less than the guest wrote.
    #[serde(default)]
    pub stderr_truncated: bool,
    /// Full size of the guest's stdout in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_bytes: Option<i64>,
    /// Full size of the guest's stderr in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_bytes: Option<i64>,
    /// stdout parsed as JSON, when it is JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub result: Option<serde_json::Value>,
    /// A sentence about the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Attempts made (1 + retries used).
    #[serde(default)]
    pub attempts: i32,
    /// After an attempt was lost to the platform: when the next one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// The module digest that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_digest: Option<String>,
    /// True when native (AOT-compiled) code ran, false when WasmEdge interpreted the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aot: Option<bool>,
    /// Where the native code came from when `aot` is true: the AOT file the runner compiled
    /// from the module's verified bytes. Native code never comes from the module itself: a
    /// module carrying a `wasmedge` section is refused (reason NativeCodeSection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aot_source: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
