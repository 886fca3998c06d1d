//! The `wasmfn.dev/v1alpha1` API: the [`WasmFunction`] and [`WasmExecution`] custom resources.
//!
//! This crate holds only types and the small pure helpers that belong to them (conditions,
//! well-known names), so a workflow engine can create executions and read their results by
//! depending on it alone. The CRD YAML in `crds/` is generated from these types by
//! `wasmfn-operator crdgen`; every `///` comment on a field becomes `kubectl explain` text.
//!
//! With default features off (no `kube`), the crate is the kube-free model the compiler and the
//! CLI share with the operator: the spec shapes (a manifest's `spec` parses into the same types
//! the apiserver's schema is generated from), [`Language`], the well-known names and the
//! rules that turn an execution's spec into its inputs and limits ([`inputs`]).

#[cfg(feature = "kube")]
pub mod condition;
pub mod execution;
pub mod function;
pub mod inputs;
#[cfg(feature = "kube")]
pub mod pod_security;
#[cfg(all(test, feature = "kube"))]
mod schema_tests;

#[cfg(feature = "kube")]
pub use condition::{set_condition, ConditionStatus};
pub use execution::{
    ExecutionPath, ExecutionPhase, ExecutionRuntime, FunctionReference, Runtime, WasmExecutionSpec,
};
#[cfg(feature = "kube")]
pub use execution::{WasmExecution, WasmExecutionStatus};
pub use function::{
    ArtifactStatus, ArtifactStore, BuildOptions, ConfigMapSource, EnvVar, ExecutionDefaults,
    FunctionPhase, FunctionSource, Language, Optimization, WasmFunctionSpec,
};
#[cfg(feature = "kube")]
pub use function::{CompileStatus, WasmFunction, WasmFunctionStatus};

/// The API group.
pub const GROUP: &str = "wasmfn.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of both kinds.
pub const API_VERSION: &str = "wasmfn.dev/v1alpha1";

/// Labels and annotations the operator puts on what it creates.
pub mod labels {
    /// `app.kubernetes.io/managed-by` value on every object the operator creates.
    pub const MANAGED_BY_VALUE: &str = "wasmfn-operator";
    /// The standard managed-by label.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// On compile Jobs and artifact records: the function's cache key (hex, 63 characters).
    pub const CACHE_KEY: &str = "wasmfn.dev/cache-key";
    /// On artifact records, one label per cache key that produced the module:
    /// `key.wasmfn.dev/<first 63 hex digits of the key>` (value empty). A cache lookup is a
    /// list call with this label as an existence selector.
    pub const CACHE_KEY_PREFIX: &str = "key.wasmfn.dev/";
    /// On artifact records: `true`.
    pub const ARTIFACT: &str = "wasmfn.dev/artifact";
    /// On artifact records: the store (`configmap` or `oci`).
    pub const STORE: &str = "wasmfn.dev/store";
    /// On artifact records: the module digest (hex, 63 characters).
    pub const DIGEST: &str = "wasmfn.dev/digest";
    /// On nodes: this node's containerd runs Wasm through the wasmfn shim.
    pub const WASMEDGE_NODE: &str = "wasmfn.dev/wasmedge";
    /// Annotation on artifact records: when the operator first saw no function use it (RFC 3339).
    pub const UNREFERENCED_SINCE: &str = "wasmfn.dev/unreferenced-since";
    /// Annotation a caller sets on a WasmExecution: a W3C `traceparent` (for example
    /// `00-<32 hex trace id>-<16 hex span id>-01`). The execution's spans, and the runner's,
    /// become children of that span when the operator exports traces.
    pub const TRACEPARENT: &str = "wasmfn.dev/traceparent";
    /// On run pods and input ConfigMaps: the execution's uid (the selector the operator lists
    /// an execution's pods by).
    pub const EXECUTION_UID: &str = "wasmfn.dev/execution-uid";
    /// On run pods: the execution's name (shortened with a hash beyond 63 characters).
    pub const EXECUTION: &str = "wasmfn.dev/execution";
    /// On run pods: the attempt number.
    pub const ATTEMPT: &str = "wasmfn.dev/attempt";
    /// On run pods: the node the pod was admitted to (and pinned on).
    pub const RUN_NODE: &str = "wasmfn.dev/node";
    /// Annotation on run pods: the runtime the pod was placed for (`WasmEdge` or `Container`).
    pub const RUNTIME: &str = "wasmfn.dev/runtime";
}
