//! Which spans wasmfn's objects produce, and where they sit in a trace. Pure.
//!
//! Span ids are derived from object uids rather than stored: any replica, before or after a
//! failover, names an execution's span (and each attempt's) the same way, so reconciles, attempts
//! and runner spans always find their parent without a status field to carry it.
//!
//! ```text
//! caller's span (wasmfn.dev/traceparent)         — or none: the trace then starts here
//! └── execution <ns>/<name>                      operator, creation → final phase
//!     ├── reconcile WasmExecution                operator, one per reconcile
//!     └── attempt N                              operator, hand-over or pod creation → result
//!         ├── queued                             wasmfn-agent (waiting for a free run slot)
//!         └── run                                wasmfn-runner, wasmfn-shim or wasmfn-agent
//!             ├── load
//!             ├── instantiate
//!             └── invoke
//! compile <ns>/<name> (generation G)             operator, per function generation
//! └── reconcile WasmFunction
//! ```

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use wasmfn_api::{labels, ExecutionPhase, WasmExecution, WasmExecutionStatus, WasmFunction};
use wasmfn_result::trace::{RunTrace, TraceParent};

use super::span::{Span, SpanKind};

/// `N` bytes of the digest of `parts`, never all zero.
fn derive<const N: usize>(parts: &[&str]) -> [u8; N] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut id = [0u8; N];
    id.copy_from_slice(&digest[..N]);
    if id.iter().all(|b| *b == 0) {
        id[N - 1] = 1;
    }
    id
}

/// Nanoseconds since the Unix epoch.
pub fn nanos(time: Timestamp) -> u64 {
    u64::try_from(time.as_nanosecond()).unwrap_or(0)
}

/// Where an execution's spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutionTrace {
    /// The caller's trace, or one derived from the execution's uid.
    pub trace_id: [u8; 16],
    /// The execution span.
    pub span_id: [u8; 8],
    /// The caller's span, the execution span's parent.
    pub caller: Option<[u8; 8]>,
    /// The caller's sampled flag.
    pub caller_sampled: Option<bool>,
}

impl ExecutionTrace {
    /// The trace of `execution`. An unreadable annotation does not stop anything: the execution
    /// then starts a trace of its own, and the error says what was wrong with the annotation.
    pub fn of(execution: &WasmExecution) -> (Self, Option<String>) {
        let uid = execution.uid().unwrap_or_default();
        let own = ExecutionTrace {
            trace_id: derive(&["trace", &uid]),
            span_id: derive(&["execution", &uid]),
            caller: None,
            caller_sampled: None,
        };
        match execution.annotations().get(labels::TRACEPARENT) {
            None => (own, None),
            Some(text) => match TraceParent::parse(text) {
                Ok(caller) => (
                    ExecutionTrace {
                        trace_id: caller.trace_id,
                        caller: Some(caller.span_id),
                        caller_sampled: Some(caller.sampled),
                        ..own
                    },
                    None,
                ),
                Err(error) => (
                    own,
                    Some(format!("annotation {}: {error}", labels::TRACEPARENT)),
                ),
            },
        }
    }

    /// The span of attempt `attempt` of the execution with `uid`.
    pub fn attempt_span_id(&self, uid: &str, attempt: i32) -> [u8; 8] {
        derive(&["attempt", uid, &attempt.to_string()])
    }

    /// The traceparent a run pod gets: its runner's spans become children of the attempt.
    pub fn attempt_traceparent(&self, uid: &str, attempt: i32) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.attempt_span_id(uid, attempt),
            sampled: true,
        }
    }

    fn span(&self, service: &str, span_id: [u8; 8], parent: Option<[u8; 8]>, name: String) -> Span {
        Span {
            service: service.to_owned(),
            trace_id: self.trace_id,
            span_id,
            parent,
            name,
            kind: SpanKind::Internal,
            start_unix_nano: 0,
            end_unix_nano: 0,
            attributes: Vec::new(),
            error: None,
        }
    }

    /// The execution span, once `status` is final; it ends at the completion time (or `now`).
    pub fn execution_span(
        &self,
        service: &str,
        execution: &WasmExecution,
        status: &WasmExecutionStatus,
        now: Timestamp,
    ) -> Span {
        let namespace = execution.namespace().unwrap_or_default();
        let name = execution.name_any();
        let mut span = self
            .span(
                service,
                self.span_id,
                self.caller,
                format!("execution {namespace}/{name}"),
            )
            .with("k8s.namespace.name", namespace)
            .with("wasmfn.execution", name)
            .with("wasmfn.function", execution.spec.function_ref.name.as_str())
            .with("wasmfn.attempts", i64::from(status.attempts));
        let end = status.completion_time.as_ref().map_or(now, |t| t.0);
        span.end_unix_nano = nanos(end);
        span.start_unix_nano = execution
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(span.end_unix_nano, |t| nanos(t.0));
        if let Some(phase) = status.phase {
            span = span.with("wasmfn.phase", format!("{phase:?}"));
        }
        for (key, value) in [
            ("wasmfn.reason", &status.reason),
            (
                "wasmfn.runtime",
                &status.runtime.map(|r| r.as_str().to_owned()),
            ),
            ("k8s.node.name", &status.node),
            ("k8s.pod.name", &status.pod_name),
        ] {
            if let Some(value) = value {
                span = span.with(key, value.as_str());
            }
        }
        if let Some(code) = status.exit_code {
            span = span.with("process.exit.code", i64::from(code));
        }
        if status.phase != Some(ExecutionPhase::Succeeded) {
            span.error = Some(
                status
                    .message
                    .clone()
                    .or_else(|| status.reason.clone())
                    .unwrap_or_else(|| "failed".to_owned()),
            );
        }
        span
    }

    /// The span of an attempt that ended.
    pub fn attempt_span(&self, service: &str, uid: &str, attempt: &AttemptEnd<'_>) -> Span {
        let mut span = self
            .span(
                service,
                self.attempt_span_id(uid, attempt.attempt),
                Some(self.span_id),
                format!("attempt {}", attempt.attempt),
            )
            .with("wasmfn.attempt", i64::from(attempt.attempt))
            .with("wasmfn.runtime", attempt.runtime)
            .with("k8s.pod.name", attempt.pod)
            .with("wasmfn.reason", attempt.reason);
        if let Some(node) = attempt.node {
            span = span.with("k8s.node.name", node);
        }
        span.start_unix_nano = attempt.started;
        span.end_unix_nano = attempt.ended;
        span.error = attempt.error.clone();
        span
    }

    /// The runner's spans from an attempt's result document, as spans of `service` (the
    /// runner's own name). Spans that do not belong under this attempt — another trace, another
    /// parent, malformed ids — are left out: a document is only trusted for its own attempt.
    pub fn runner_spans(&self, uid: &str, attempt: i32, run: &RunTrace, pod: &str) -> Vec<Span> {
        if run.trace_id != hex::encode(self.trace_id) {
            return Vec::new();
        }
        let Some(root) = run.spans.first() else {
            return Vec::new();
        };
        if root.parent_span_id != hex::encode(self.attempt_span_id(uid, attempt)) {
            return Vec::new();
        }
        let service = match run.service.as_str() {
            "wasmfn-runner" | "wasmfn-shim" | "wasmfn-agent" => run.service.as_str(),
            _ => "wasmfn-runner",
        };
        run.spans
            .iter()
            .take(16)
            .filter_map(|record| {
                let id =
                    |text: &str| -> Option<[u8; 8]> { hex::decode(text).ok()?.try_into().ok() };
                let mut span = self.span(
                    service,
                    id(&record.span_id)?,
                    Some(id(&record.parent_span_id)?),
                    record.name.chars().take(64).collect(),
                );
                span.start_unix_nano = record.start_unix_nano;
                span.end_unix_nano = record.end_unix_nano;
                if record.span_id == root.span_id {
                    span.kind = SpanKind::Server;
                    span = span.with("k8s.pod.name", pod);
                }
                Some(span)
            })
            .collect()
    }

    /// A reconcile of the execution.
    pub fn reconcile_span(&self, service: &str, reconcile: &Reconcile<'_>) -> Span {
        reconcile.span(service, self.trace_id, self.span_id, "WasmExecution")
    }
}

/// How an attempt ended, for its span.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd<'a> {
    /// The attempt's number.
    pub attempt: i32,
    /// Its pod.
    pub pod: &'a str,
    /// Where it ran, if it got a node.
    pub node: Option<&'a str>,
    /// `WasmEdge` or `Container`.
    pub runtime: &'a str,
    /// The outcome reason (`Completed`, `Trap`, `PodEvicted`, …).
    pub reason: &'a str,
    /// When the pod was created.
    pub started: u64,
    /// When the attempt ended.
    pub ended: u64,
    /// What went wrong, when it failed.
    pub error: Option<String>,
}

/// One reconcile, for its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconcile<'a> {
    /// The object's namespace.
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// When it began.
    pub started: u64,
    /// When it ended.
    pub ended: u64,
    /// The error it failed with.
    pub error: Option<String>,
}

impl Reconcile<'_> {
    fn span(&self, service: &str, trace_id: [u8; 16], parent: [u8; 8], kind: &str) -> Span {
        Span {
            service: service.to_owned(),
            trace_id,
            span_id: wasmfn_result::trace::random_span_id(),
            parent: Some(parent),
            name: format!("reconcile {kind}"),
            kind: SpanKind::Internal,
            start_unix_nano: self.started,
            end_unix_nano: self.ended,
            attributes: vec![
                ("k8s.namespace.name", self.namespace.into()),
                ("k8s.object.name", self.name.into()),
            ],
            error: self.error.clone(),
        }
    }
}

/// Where a function generation's spans go: its compile (or store) span and its reconciles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionTrace {
    /// One trace per function generation.
    pub trace_id: [u8; 16],
    /// The compile span.
    pub span_id: [u8; 8],
}

/// How a function generation got its module, for the compile span.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileEnd<'a> {
    /// `hit` (stored module reused), `prebuilt` or `compiled`.
    pub source: &'a str,
    /// The outcome: `Succeeded` or the failure reason.
    pub outcome: &'a str,
    /// The compile Job, when one ran.
    pub job: Option<&'a str>,
    /// When the work began.
    pub started: u64,
    /// When it ended.
    pub ended: u64,
    /// What went wrong, when it failed.
    pub error: Option<String>,
}

impl FunctionTrace {
    /// The trace of `function`'s current generation.
    pub fn of(function: &WasmFunction) -> Self {
        let uid = function.uid().unwrap_or_default();
        let generation = function.metadata.generation.unwrap_or(0).to_string();
        FunctionTrace {
            trace_id: derive(&["function", &uid, &generation]),
            span_id: derive(&["compile", &uid, &generation]),
        }
    }

    /// The compile span of the generation.
    pub fn compile_span(
        &self,
        service: &str,
        function: &WasmFunction,
        end: &CompileEnd<'_>,
    ) -> Span {
        let namespace = function.namespace().unwrap_or_default();
        let name = function.name_any();
        let mut span = Span {
            service: service.to_owned(),
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: None,
            name: format!("compile {namespace}/{name}"),
            kind: SpanKind::Internal,
            start_unix_nano: end.started,
            end_unix_nano: end.ended,
            attributes: Vec::new(),
            error: end.error.clone(),
        }
        .with("k8s.namespace.name", namespace)
        .with("wasmfn.function", name)
        .with("wasmfn.language", function.spec.language.as_str())
        .with(
            "wasmfn.generation",
            function.metadata.generation.unwrap_or(0),
        )
        .with("wasmfn.cache.hit", end.source == "hit")
        .with("wasmfn.module.source", end.source)
        .with("wasmfn.outcome", end.outcome);
        if let Some(job) = end.job {
            span = span.with("k8s.job.name", job);
        }
        span
    }

    /// A reconcile of the function.
    pub fn reconcile_span(&self, service: &str, reconcile: &Reconcile<'_>) -> Span {
        reconcile.span(service, self.trace_id, self.span_id, "WasmFunction")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;
    use wasmfn_api::WasmExecutionSpec;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn execution(uid: &str, annotation: Option<&str>) -> WasmExecution {
        let spec: WasmExecutionSpec =
            serde_json::from_value(serde_json::json!({"functionRef": {"name": "hello"}}))
                .expect("valid spec");
        let mut execution = WasmExecution::new("run-1", spec);
        execution.metadata.namespace = Some("team".into());
        execution.metadata.uid = Some(uid.into());
        execution.metadata.creation_timestamp =
            Some(Time(Timestamp::from_second(1_700_000_000).expect("valid")));
        if let Some(text) = annotation {
            execution.metadata.annotations = Some(BTreeMap::from([(
                labels::TRACEPARENT.to_owned(),
                text.to_owned(),
            )]));
        }
        execution
    }

    #[test]
    fn a_caller_traceparent_makes_the_execution_its_child() {
        let (trace, problem) = ExecutionTrace::of(&execution("u-1", Some(CALLER)));
        assert_eq!(problem, None);
        assert_eq!(
            hex::encode(trace.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            trace.caller.map(hex::encode).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(trace.caller_sampled, Some(true));
        // the same execution seen again (another replica, another reconcile) gets the same ids
        assert_eq!(ExecutionTrace::of(&execution("u-1", Some(CALLER))).0, trace);
        // another execution under the same caller is a sibling, not the same span
        let (other, _) = ExecutionTrace::of(&execution("u-2", Some(CALLER)));
        assert_eq!(other.trace_id, trace.trace_id);
        assert_ne!(other.span_id, trace.span_id);
    }

    #[test]
    fn without_a_usable_annotation_the_execution_starts_its_own_trace() {
        let (plain, problem) = ExecutionTrace::of(&execution("u-1", None));
        assert_eq!((plain.caller, problem), (None, None));
        let (broken, problem) = ExecutionTrace::of(&execution("u-1", Some("00-xyz")));
        assert_eq!(broken, plain);
        let problem = problem.expect("the annotation problem is reported");
        assert!(problem.contains(labels::TRACEPARENT), "{problem}");
        assert_ne!(
            ExecutionTrace::of(&execution("u-2", None)).0.trace_id,
            plain.trace_id
        );
    }

    #[test]
    fn attempts_hang_under_the_execution_and_runs_under_their_attempt() {
        let (trace, _) = ExecutionTrace::of(&execution("u-1", Some(CALLER)));
        let parent = trace.attempt_traceparent("u-1", 2);
        assert_eq!(parent.trace_id, trace.trace_id);
        assert_ne!(parent.span_id, trace.attempt_span_id("u-1", 1));
        let end = AttemptEnd {
            attempt: 2,
            pod: "run-1-run-2",
            node: Some("node-a"),
            runtime: "WasmEdge",
            reason: "Completed",
            started: 10,
            ended: 20,
            error: None,
        };
        let attempt = trace.attempt_span("wasmfn-operator", "u-1", &end);
        assert_eq!(attempt.span_id, parent.span_id);
        assert_eq!(attempt.parent, Some(trace.span_id));
        assert_eq!((attempt.start_unix_nano, attempt.end_unix_nano), (10, 20));

        let timings = wasmfn_result::Timings {
            load_ms: 1.0,
            instantiate_ms: 1.0,
            run_ms: 1.0,
            total_ms: 4.0,
        };
        let run = RunTrace::from_timings(
            &parent,
            "wasmfn-shim",
            std::time::SystemTime::now(),
            &timings,
        );
        let spans = trace.runner_spans("u-1", 2, &run, "run-1-run-2");
        assert_eq!(spans.len(), 4);
        assert!(spans
            .iter()
            .all(|s| s.service == "wasmfn-shim" && s.trace_id == trace.trace_id));
        assert_eq!(spans[0].parent, Some(attempt.span_id));
        assert_eq!(spans[0].kind, SpanKind::Server);
        assert_eq!(spans[1].parent, Some(spans[0].span_id));
        // a document from another attempt or trace contributes nothing
        assert!(trace.runner_spans("u-1", 1, &run, "p").is_empty());
        let (other, _) = ExecutionTrace::of(&execution("u-9", None));
        assert!(other.runner_spans("u-1", 2, &run, "p").is_empty());
        let mut odd = run.clone();
        odd.service = "guest".into();
        odd.spans[1].span_id = "not-hex".into();
        let spans = trace.runner_spans("u-1", 2, &odd, "p");
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0].service, "wasmfn-runner");
        // each of the three runners keeps its own name
        for runner in ["wasmfn-runner", "wasmfn-shim", "wasmfn-agent"] {
            let mut named = run.clone();
            named.service = runner.into();
            let spans = trace.runner_spans("u-1", 2, &named, "p");
            assert!(spans.iter().all(|s| s.service == runner), "{runner}");
        }
    }

    #[test]
    fn the_execution_span_covers_creation_to_completion_and_says_how_it_ended() {
        let execution = execution("u-1", Some(CALLER));
        let (trace, _) = ExecutionTrace::of(&execution);
        let completed = Timestamp::from_second(1_700_000_003).expect("valid");
        let status = WasmExecutionStatus {
            phase: Some(ExecutionPhase::Failed),
            reason: Some("Trap".into()),
            message: Some("unreachable executed".into()),
            runtime: Some(wasmfn_api::Runtime::Container),
            exit_code: Some(134),
            attempts: 1,
            completion_time: Some(Time(completed)),
            ..Default::default()
        };
        let span = trace.execution_span("wasmfn-operator", &execution, &status, Timestamp::now());
        assert_eq!(span.parent, trace.caller);
        assert_eq!(span.name, "execution team/run-1");
        assert_eq!(span.end_unix_nano - span.start_unix_nano, 3_000_000_000);
        assert_eq!(span.error.as_deref(), Some("unreachable executed"));
        let keys: Vec<&str> = span.attributes.iter().map(|(k, _)| *k).collect();
        for key in [
            "wasmfn.function",
            "wasmfn.phase",
            "wasmfn.reason",
            "wasmfn.runtime",
            "process.exit.code",
        ] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        let succeeded = WasmExecutionStatus {
            phase: Some(ExecutionPhase::Succeeded),
            ..status
        };
        assert_eq!(
            trace
                .execution_span("s", &execution, &succeeded, Timestamp::now())
                .error,
            None
        );
    }

    #[test]
    fn a_function_generation_has_one_trace_for_its_compile_and_reconciles() {
        let mut function = WasmFunction::new(
            "hello",
            serde_json::from_value(
                serde_json::json!({"language": "rust", "source": {"code": "fn main() {}"}}),
            )
            .expect("valid spec"),
        );
        function.metadata.uid = Some("f-1".into());
        function.metadata.namespace = Some("team".into());
        function.metadata.generation = Some(1);
        let first = FunctionTrace::of(&function);
        function.metadata.generation = Some(2);
        let second = FunctionTrace::of(&function);
        assert_ne!(first.trace_id, second.trace_id);
        let end = CompileEnd {
            source: "compiled",
            outcome: "Succeeded",
            job: Some("wasmfn-compile-abc"),
            started: 1,
            ended: 2,
            error: None,
        };
        let compile = second.compile_span("wasmfn-operator", &function, &end);
        assert_eq!(
            (compile.trace_id, compile.span_id, compile.parent),
            (second.trace_id, second.span_id, None)
        );
        let reconcile = second.reconcile_span(
            "wasmfn-operator",
            &Reconcile {
                namespace: "team",
                name: "hello",
                started: 1,
                ended: 2,
                error: Some("conflict".into()),
            },
        );
        assert_eq!(reconcile.parent, Some(second.span_id));
        assert_eq!(reconcile.name, "reconcile WasmFunction");
        assert_eq!(reconcile.error.as_deref(), Some("conflict"));
    }
}
