//! The operator's metrics on `prometheus-client`: one typed family per metric, so a metric or a
//! label name is a field the compiler checks, and label values are low-cardinality (never error
//! text, never object names). `/metrics` serves them as OpenMetrics text.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Histogram bucket bounds in seconds: from sub-millisecond runs to multi-minute compiles.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A reconcile's controller (`function`, `execution`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

/// A failed reconcile: its controller and the error's fixed category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

/// Whether an artifact cache lookup found the module.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
}

/// An artifact cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub result: CacheResult,
}

/// A compile's source language.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LanguageLabels {
    pub language: &'static str,
}

/// A finished compile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompileLabels {
    pub language: &'static str,
    pub outcome: String,
}

/// A finished execution: the runtime it ran on and its outcome reason (a fixed set of names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub runtime: &'static str,
    pub outcome: String,
}

/// The exemplar of an execution's duration: the trace its spans belong to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}

/// Executions in a phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

/// A run pod's runtime.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    pub runtime: &'static str,
}

/// A warm agent, by pod name (a handful per cluster).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub agent: String,
}

/// Why an attempt was lost.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LossLabels {
    pub reason: &'static str,
}

/// Stored objects the startup pass re-spelled or failed to: their kind and `respelled` / `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RespellLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// What became of spans handed to the OTLP exporter.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SpanResult {
    Exported,
    Failed,
    /// Dropped because the export queue was full.
    Dropped,
}

/// Spans handed to the OTLP exporter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanLabels {
    pub result: SpanResult,
}

/// The label values the metrics have always exposed are lower case.
macro_rules! lower_case_label_value {
    ($kind:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl EncodeLabelValue for $kind {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                use std::fmt::Write as _;
                encoder.write_str(match self {
                    $(Self::$variant => $text),+
                })
            }
        }
    };
}
lower_case_label_value!(CacheResult { Hit => "hit", Miss => "miss" });
lower_case_label_value!(SpanResult { Exported => "exported", Failed => "failed", Dropped => "dropped" });

fn seconds_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

fn seconds_histogram_with_exemplars() -> HistogramWithExemplars<TraceLabels> {
    HistogramWithExemplars::new(BUCKETS.into_iter())
}

type Seconds = Family<LanguageLabels, Histogram, fn() -> Histogram>;
type OutcomeSeconds = Family<OutcomeLabels, Histogram, fn() -> Histogram>;
type TracedOutcomeSeconds = Family<
    OutcomeLabels,
    HistogramWithExemplars<TraceLabels>,
    fn() -> HistogramWithExemplars<TraceLabels>,
>;

/// The operator's metrics; each field is registered once, under the name in its doc comment.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `wasmfn_reconciles_total`
    pub reconciles: Family<ControllerLabels, Counter>,
    /// `wasmfn_reconcile_errors_total`
    pub reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    /// `wasmfn_reconciles_active`
    pub reconciles_active: Family<ControllerLabels, Gauge>,
    /// `wasmfn_cache_total`
    pub cache: Family<CacheLabels, Counter>,
    /// `wasmfn_compile_duration_seconds`
    pub compile_duration: Seconds,
    /// `wasmfn_compiles_total`
    pub compiles: Family<CompileLabels, Counter>,
    /// `wasmfn_executions_total`
    pub executions_finished: Family<OutcomeLabels, Counter>,
    /// `wasmfn_execution_duration_seconds`, with the execution's trace id as exemplar.
    pub execution_duration: TracedOutcomeSeconds,
    /// `wasmfn_execution_latency_seconds`
    pub execution_latency: OutcomeSeconds,
    /// `wasmfn_executions_in_phase` (OpenMetrics gives the name `wasmfn_executions` to the
    /// counter of finished executions, exposed as `wasmfn_executions_total`).
    pub executions_in_phase: Family<PhaseLabels, Gauge>,
    /// `wasmfn_executions_queued`
    pub executions_queued: Gauge,
    /// `wasmfn_run_pods_created_total`
    pub run_pods_created: Family<RuntimeLabels, Counter>,
    /// `wasmfn_agent_runs_dispatched_total`
    pub agent_runs_dispatched: Family<AgentLabels, Counter>,
    /// `wasmfn_agent_pending_runs`
    pub agent_pending_runs: Family<AgentLabels, Gauge>,
    /// `wasmfn_run_attempts_lost_total`
    pub run_attempts_lost: Family<LossLabels, Counter>,
    /// `wasmfn_trace_spans_total`
    pub trace_spans: Family<SpanLabels, Counter>,
    /// `wasmfn_leader`: 1 on the replica that acts.
    pub leader: Gauge,
    /// `wasmfn_respelled_objects_total`
    pub respelled_objects: Family<RespellLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconciles_active: Family::default(),
            cache: Family::default(),
            compile_duration: Family::new_with_constructor(seconds_histogram),
            compiles: Family::default(),
            executions_finished: Family::default(),
            execution_duration: Family::new_with_constructor(seconds_histogram_with_exemplars),
            execution_latency: Family::new_with_constructor(seconds_histogram),
            executions_in_phase: Family::default(),
            executions_queued: Gauge::default(),
            run_pods_created: Family::default(),
            agent_runs_dispatched: Family::default(),
            agent_pending_runs: Family::default(),
            run_attempts_lost: Family::default(),
            trace_spans: Family::default(),
            leader: Gauge::default(),
            respelled_objects: Family::default(),
        };
        metrics.register();
        metrics
    }
}

impl Metrics {
    /// Registers every field (counters without `_total`: the encoder adds it to their samples).
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "wasmfn_reconciles",
            "Reconciles run, by controller",
            self.reconciles.clone(),
        );
        r.register(
            "wasmfn_reconcile_errors",
            "Reconciles that failed and will be retried, by controller and error category",
            self.reconcile_errors.clone(),
        );
        r.register(
            "wasmfn_reconciles_active",
            "Reconciles in progress, by controller",
            self.reconciles_active.clone(),
        );
        r.register(
            "wasmfn_cache",
            "Artifact cache lookups, by result (hit, miss)",
            self.cache.clone(),
        );
        r.register(
            "wasmfn_compile_duration_seconds",
            "Compile time of successful compile Jobs, by language",
            self.compile_duration.clone(),
        );
        r.register(
            "wasmfn_compiles",
            "Finished compiles, by language and outcome",
            self.compiles.clone(),
        );
        r.register(
            "wasmfn_executions",
            "Finished executions, by runtime and outcome reason",
            self.executions_finished.clone(),
        );
        r.register(
            "wasmfn_execution_duration_seconds",
            "Guest run time of finished executions, by runtime and outcome (exemplar: trace id)",
            self.execution_duration.clone(),
        );
        r.register(
            "wasmfn_execution_latency_seconds",
            "Execution creation to result recorded, by runtime and outcome",
            self.execution_latency.clone(),
        );
        r.register(
            "wasmfn_executions_in_phase",
            "Executions the operator sees, by phase (Pending is the queue, Scheduled and Running are in flight)",
            self.executions_in_phase.clone(),
        );
        r.register(
            "wasmfn_executions_queued",
            "Executions waiting for room for a run pod (at most the configured run pods per node are in flight)",
            self.executions_queued.clone(),
        );
        r.register(
            "wasmfn_run_pods_created",
            "Run pods created, by runtime",
            self.run_pods_created.clone(),
        );
        r.register(
            "wasmfn_agent_runs_dispatched",
            "Runs handed to a warm agent, by agent pod",
            self.agent_runs_dispatched.clone(),
        );
        r.register(
            "wasmfn_agent_pending_runs",
            "Runs handed to an agent and not answered yet (running or in its queue), by agent pod",
            self.agent_pending_runs.clone(),
        );
        r.register(
            "wasmfn_run_attempts_lost",
            "Attempts lost to the platform, by reason",
            self.run_attempts_lost.clone(),
        );
        r.register(
            "wasmfn_trace_spans",
            "Spans handed to the OTLP exporter, by result (exported, failed, dropped when the queue was full)",
            self.trace_spans.clone(),
        );
        r.register(
            "wasmfn_leader",
            "1 on the replica that leads and acts, 0 on a standby",
            self.leader.clone(),
        );
        r.register(
            "wasmfn_respelled_objects",
            "Stored objects whose old-case enum values the leader re-spelled at startup, by kind and outcome (respelled, failed)",
            self.respelled_objects.clone(),
        );
    }

    /// OpenMetrics text exposition of every metric, ending in `# EOF`.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The spans counter for `result`.
    pub fn spans(&self, result: SpanResult) -> Counter {
        self.trace_spans
            .get_or_create(&SpanLabels { result })
            .clone()
    }

    /// Counts one artifact cache lookup.
    pub fn cache_lookup(&self, result: CacheResult) {
        self.cache.get_or_create(&CacheLabels { result }).inc();
    }

    /// Counts one finished execution: its run time (with its trace id as exemplar) and its
    /// latency from creation.
    pub fn execution_finished(
        &self,
        labels: &OutcomeLabels,
        duration_seconds: Option<f64>,
        latency_seconds: Option<f64>,
        trace_id: Option<String>,
    ) {
        self.executions_finished.get_or_create(labels).inc();
        if let Some(seconds) = duration_seconds {
            let exemplar = trace_id.map(|trace_id| TraceLabels { trace_id });
            self.execution_duration
                .get_or_create(labels)
                .observe(seconds, exemplar, None);
        }
        if let Some(seconds) = latency_seconds {
            self.execution_latency
                .get_or_create(labels)
                .observe(seconds);
        }
    }
}

/// Counts a reconcile as active while it lives.
#[derive(Debug)]
pub struct ActiveReconcile<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
}

impl<'a> ActiveReconcile<'a> {
    /// Counts one reconcile of `controller` (also in `wasmfn_reconciles_total`).
    pub fn start(metrics: &'a Metrics, controller: &'static str) -> Self {
        let labels = ControllerLabels { controller };
        metrics.reconciles.get_or_create(&labels).inc();
        metrics.reconciles_active.get_or_create(&labels).inc();
        ActiveReconcile { metrics, labels }
    }
}

impl Drop for ActiveReconcile<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconciles_active
            .get_or_create(&self.labels)
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(runtime: &'static str, outcome: &str) -> OutcomeLabels {
        OutcomeLabels {
            runtime,
            outcome: outcome.to_owned(),
        }
    }

    #[test]
    fn counters_are_exposed_with_total_and_a_family_appears_once_it_has_a_value() {
        let metrics = Metrics::default();
        let function = ControllerLabels {
            controller: "function",
        };
        metrics.reconciles.get_or_create(&function).inc();
        metrics.reconciles.get_or_create(&function).inc();
        metrics.cache_lookup(CacheResult::Hit);
        metrics
            .executions_in_phase
            .get_or_create(&PhaseLabels { phase: "Running" })
            .set(3);
        metrics.leader.set(1);
        let text = metrics.render();
        assert!(
            text.contains("# HELP wasmfn_reconciles Reconciles run, by controller.\n# TYPE wasmfn_reconciles counter\n"),
            "{text}"
        );
        assert!(text.contains("\nwasmfn_reconciles_total{controller=\"function\"} 2\n"));
        assert!(text.contains("\nwasmfn_cache_total{result=\"hit\"} 1\n"));
        assert!(text.contains(
            "# TYPE wasmfn_executions_in_phase gauge\nwasmfn_executions_in_phase{phase=\"Running\"} 3\n"
        ));
        assert!(text.contains("\nwasmfn_leader 1\n"));
        assert!(text.contains("\nwasmfn_executions_queued 0\n"));
        assert!(!text.contains("wasmfn_compiles"), "no compile yet: {text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_metric_is_registered_under_its_documented_name() {
        let metrics = Metrics::default();
        let runtime = "WasmEdge";
        metrics.execution_finished(&outcome(runtime, "Completed"), Some(0.1), Some(0.2), None);
        let _active = ActiveReconcile::start(&metrics, "execution");
        let error = ReconcileErrorLabels {
            controller: "execution",
            category: "kube",
        };
        metrics.reconcile_errors.get_or_create(&error).inc();
        metrics.cache_lookup(CacheResult::Miss);
        let language = LanguageLabels { language: "rust" };
        metrics
            .compile_duration
            .get_or_create(&language)
            .observe(1.0);
        let compile = CompileLabels {
            language: "rust",
            outcome: "Succeeded".to_owned(),
        };
        metrics.compiles.get_or_create(&compile).inc();
        let phase = PhaseLabels { phase: "Pending" };
        metrics.executions_in_phase.get_or_create(&phase).set(1);
        metrics
            .run_pods_created
            .get_or_create(&RuntimeLabels { runtime })
            .inc();
        let agent = AgentLabels {
            agent: "agent-0".to_owned(),
        };
        metrics.agent_runs_dispatched.get_or_create(&agent).inc();
        metrics.agent_pending_runs.get_or_create(&agent).set(1);
        let loss = LossLabels { reason: "NodeLost" };
        metrics.run_attempts_lost.get_or_create(&loss).inc();
        metrics.spans(SpanResult::Dropped).inc();
        let text = metrics.render();
        let samples = [
            "wasmfn_reconciles_total{controller=\"execution\"} 1",
            "wasmfn_reconcile_errors_total{controller=\"execution\",category=\"kube\"} 1",
            "wasmfn_reconciles_active{controller=\"execution\"} 1",
            "wasmfn_cache_total{result=\"miss\"} 1",
            "wasmfn_compile_duration_seconds_count{language=\"rust\"} 1",
            "wasmfn_compiles_total{language=\"rust\",outcome=\"Succeeded\"} 1",
            "wasmfn_executions_total{runtime=\"WasmEdge\",outcome=\"Completed\"} 1",
            "wasmfn_execution_duration_seconds_count{runtime=\"WasmEdge\",outcome=\"Completed\"} 1",
            "wasmfn_execution_latency_seconds_count{runtime=\"WasmEdge\",outcome=\"Completed\"} 1",
            "wasmfn_executions_in_phase{phase=\"Pending\"} 1",
            "wasmfn_executions_queued 0",
            "wasmfn_run_pods_created_total{runtime=\"WasmEdge\"} 1",
            "wasmfn_agent_runs_dispatched_total{agent=\"agent-0\"} 1",
            "wasmfn_agent_pending_runs{agent=\"agent-0\"} 1",
            "wasmfn_run_attempts_lost_total{reason=\"NodeLost\"} 1",
            "wasmfn_trace_spans_total{result=\"dropped\"} 1",
            "wasmfn_leader 0",
        ];
        for sample in samples {
            assert!(text.lines().any(|l| l == sample), "{sample}: {text}");
        }
        assert_eq!(text.matches("# HELP ").count(), samples.len(), "{text}");
    }

    #[test]
    fn a_finished_execution_is_counted_as_wasmfn_executions_total_with_its_outcome() {
        let metrics = Metrics::default();
        metrics.execution_finished(&outcome("WasmEdge", "Completed"), None, None, None);
        let text = metrics.render();
        assert!(
            text.contains(
                "wasmfn_executions_total{runtime=\"WasmEdge\",outcome=\"Completed\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("wasmfn_execution_duration_seconds_count"),
            "no run time, no observation: {text}"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count_and_carry_the_trace_id_as_exemplar() {
        let metrics = Metrics::default();
        let labels = outcome("WasmEdge", "Succeeded");
        let trace = "ab".repeat(16);
        metrics.execution_finished(&labels, Some(0.003), Some(0.5), None);
        metrics.execution_finished(&labels, Some(0.2), Some(0.5), Some(trace.clone()));
        metrics.execution_finished(&labels, Some(1000.0), None, None);
        let text = metrics.render();
        let bucket = |le: &str| {
            format!("wasmfn_execution_duration_seconds_bucket{{le=\"{le}\",runtime=\"WasmEdge\",outcome=\"Succeeded\"}}")
        };
        assert!(text.contains(&format!("{} 0\n", bucket("0.001"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("0.005"))));
        assert!(text.contains(&format!(
            "{} 2 # {{trace_id=\"{trace}\"}} 0.2\n",
            bucket("0.25")
        )));
        assert!(text.contains(&format!("{} 2\n", bucket("300.0"))));
        assert!(text.contains(&format!("{} 3\n", bucket("+Inf"))));
        assert!(text.contains(
            "wasmfn_execution_duration_seconds_count{runtime=\"WasmEdge\",outcome=\"Succeeded\"} 3\n"
        ));
        assert!(text.contains(
            "wasmfn_execution_latency_seconds_count{runtime=\"WasmEdge\",outcome=\"Succeeded\"} 2\n"
        ));
    }

    #[test]
    fn active_reconciles_go_up_and_back_down() {
        let metrics = Metrics::default();
        let execution = ControllerLabels {
            controller: "execution",
        };
        {
            let _a = ActiveReconcile::start(&metrics, "execution");
            let _b = ActiveReconcile::start(&metrics, "execution");
            assert_eq!(metrics.reconciles_active.get_or_create(&execution).get(), 2);
        }
        assert_eq!(metrics.reconciles_active.get_or_create(&execution).get(), 0);
        assert_eq!(metrics.reconciles.get_or_create(&execution).get(), 2);
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.execution_finished(&outcome("WasmEdge", "a\"b\\c\nd"), None, None, None);
        assert!(metrics.render().contains(
            "wasmfn_executions_total{runtime=\"WasmEdge\",outcome=\"a\\\"b\\\\c\\nd\"} 1\n"
        ));
    }
}
