//! The operator's metrics, served as Prometheus text on `/metrics`: counters, gauges and
//! histograms with fixed label names and low-cardinality values (never error text, never object
//! names).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Every metric the operator exports, with its type and help text.
const CATALOGUE: &[(&str, Kind, &str)] = &[
    (
        "wasmfn_reconciles_total",
        Kind::Counter,
        "Reconciles run, by controller.",
    ),
    (
        "wasmfn_reconcile_errors_total",
        Kind::Counter,
        "Reconciles that failed and will be retried, by controller and error category.",
    ),
    (
        "wasmfn_reconciles_active",
        Kind::Gauge,
        "Reconciles in progress, by controller.",
    ),
    (
        "wasmfn_cache_total",
        Kind::Counter,
        "Artifact cache lookups, by result (hit, miss).",
    ),
    (
        "wasmfn_compile_duration_seconds",
        Kind::Histogram,
        "Compile time of successful compile Jobs, by language.",
    ),
    (
        "wasmfn_compiles_total",
        Kind::Counter,
        "Finished compiles, by language and outcome.",
    ),
    (
        "wasmfn_executions_total",
        Kind::Counter,
        "Finished executions, by runtime and outcome reason.",
    ),
    (
        "wasmfn_execution_duration_seconds",
        Kind::Histogram,
        "Guest run time of finished executions, by runtime and outcome.",
    ),
    (
        "wasmfn_execution_latency_seconds",
        Kind::Histogram,
        "Execution creation to result recorded, by runtime and outcome.",
    ),
    (
        "wasmfn_executions",
        Kind::Gauge,
        "Executions the operator sees, by phase (Pending is the queue, Scheduled and Running are in flight).",
    ),
    (
        "wasmfn_executions_queued",
        Kind::Gauge,
        "Executions waiting for room for a run pod (at most the configured run pods per node are in flight).",
    ),
    (
        "wasmfn_run_pods_created_total",
        Kind::Counter,
        "Run pods created, by runtime.",
    ),
    (
        "wasmfn_agent_runs_dispatched_total",
        Kind::Counter,
        "Runs handed to a warm agent, by agent pod.",
    ),
    (
        "wasmfn_agent_pending_runs",
        Kind::Gauge,
        "Runs handed to an agent and not answered yet (running or in its queue), by agent pod.",
    ),
    (
        "wasmfn_run_attempts_lost_total",
        Kind::Counter,
        "Attempts lost to the platform, by reason.",
    ),
    (
        "wasmfn_trace_spans_total",
        Kind::Counter,
        "Spans handed to the OTLP exporter, by result (exported, failed, dropped when the queue was full).",
    ),
];

/// Histogram bucket bounds in seconds: from sub-millisecond runs to multi-minute compiles.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label pairs, in the order given.
type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Series {
    values: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The operator's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<Series>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one to counter `name{labels}`.
    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)]) {
        self.add(name, pairs, 1.0);
    }

    /// Adds `delta` to counter or gauge `name{labels}`.
    pub fn add(&self, name: &'static str, pairs: &[(&'static str, &str)], delta: f64) {
        *self
            .lock()
            .values
            .entry((name, labels(pairs)))
            .or_insert(0.0) += delta;
    }

    /// Sets gauge `name{labels}`.
    pub fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        self.lock().values.insert((name, labels(pairs)), value);
    }

    /// Records `seconds` in histogram `name{labels}`.
    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], seconds: f64) {
        let mut series = self.lock();
        let histogram = series
            .histograms
            .entry((name, labels(pairs)))
            .or_insert_with(|| Histogram {
                counts: vec![0; BUCKETS.len()],
                ..Default::default()
            });
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// The value of counter or gauge `name{labels}` (0 when never set).
    pub fn get(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> f64 {
        self.lock()
            .values
            .get(&(name, labels(pairs)))
            .copied()
            .unwrap_or(0.0)
    }

    /// How many observations histogram `name{labels}` holds.
    pub fn observations(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> u64 {
        self.lock()
            .histograms
            .get(&(name, labels(pairs)))
            .map(|h| h.count)
            .unwrap_or(0)
    }

    /// Prometheus text exposition (format 0.0.4), every catalogued metric with HELP and TYPE.
    pub fn render(&self) -> String {
        let series = self.lock();
        let mut out = String::new();
        for (name, kind, help) in CATALOGUE {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            if *kind == Kind::Histogram {
                for ((_, labels), h) in series.histograms.iter().filter(|((n, _), _)| n == name) {
                    for (bound, count) in BUCKETS.iter().zip(&h.counts) {
                        let le = render_labels(labels, Some(("le", bound.to_string())));
                        let _ = writeln!(out, "{name}_bucket{le} {count}");
                    }
                    let inf = render_labels(labels, Some(("le", "+Inf".to_owned())));
                    let _ = writeln!(out, "{name}_bucket{inf} {}", h.count);
                    let plain = render_labels(labels, None);
                    let _ = writeln!(out, "{name}_sum{plain} {}", h.sum);
                    let _ = writeln!(out, "{name}_count{plain} {}", h.count);
                }
            } else {
                for ((_, labels), value) in series.values.iter().filter(|((n, _), _)| n == name) {
                    let _ = writeln!(out, "{name}{} {value}", render_labels(labels, None));
                }
            }
        }
        out
    }
}

/// Counts a reconcile as active while it lives.
#[derive(Debug)]
pub struct ActiveReconcile<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
}

impl<'a> ActiveReconcile<'a> {
    /// Counts one reconcile of `controller` (also in `wasmfn_reconciles_total`).
    pub fn start(metrics: &'a Metrics, controller: &'static str) -> Self {
        metrics.inc("wasmfn_reconciles_total", &[("controller", controller)]);
        metrics.add(
            "wasmfn_reconciles_active",
            &[("controller", controller)],
            1.0,
        );
        ActiveReconcile {
            metrics,
            controller,
        }
    }
}

impl Drop for ActiveReconcile<'_> {
    fn drop(&mut self) {
        self.metrics.add(
            "wasmfn_reconciles_active",
            &[("controller", self.controller)],
            -1.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_with_help_and_type() {
        let metrics = Metrics::default();
        metrics.inc("wasmfn_reconciles_total", &[("controller", "function")]);
        metrics.inc("wasmfn_reconciles_total", &[("controller", "function")]);
        metrics.inc("wasmfn_cache_total", &[("result", "hit")]);
        metrics.set("wasmfn_executions", &[("phase", "Running")], 3.0);
        assert_eq!(
            metrics.get("wasmfn_reconciles_total", &[("controller", "function")]),
            2.0
        );
        let text = metrics.render();
        assert!(text.contains("# TYPE wasmfn_reconciles_total counter\n"));
        assert!(text.contains("wasmfn_reconciles_total{controller=\"function\"} 2\n"));
        assert!(text.contains("wasmfn_cache_total{result=\"hit\"} 1\n"));
        assert!(text
            .contains("# TYPE wasmfn_executions gauge\nwasmfn_executions{phase=\"Running\"} 3\n"));
        // Every catalogued metric is announced even before it has a value.
        for (name, _, _) in CATALOGUE {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let metrics = Metrics::default();
        let labels = [("runtime", "WasmEdge"), ("outcome", "Succeeded")];
        metrics.observe("wasmfn_execution_duration_seconds", &labels, 0.003);
        metrics.observe("wasmfn_execution_duration_seconds", &labels, 0.2);
        metrics.observe("wasmfn_execution_duration_seconds", &labels, 1000.0);
        assert_eq!(
            metrics.observations("wasmfn_execution_duration_seconds", &labels),
            3
        );
        let text = metrics.render();
        let series =
            "wasmfn_execution_duration_seconds_bucket{runtime=\"WasmEdge\",outcome=\"Succeeded\"";
        assert!(
            text.contains(&format!("{series},le=\"0.001\"}} 0\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{series},le=\"0.005\"}} 1\n")));
        assert!(text.contains(&format!("{series},le=\"0.25\"}} 2\n")));
        assert!(text.contains(&format!("{series},le=\"300\"}} 2\n")));
        assert!(text.contains(&format!("{series},le=\"+Inf\"}} 3\n")));
        assert!(text.contains(
            "wasmfn_execution_duration_seconds_count{runtime=\"WasmEdge\",outcome=\"Succeeded\"} 3\n"
        ));
    }

    #[test]
    fn active_reconciles_go_up_and_back_down() {
        let metrics = Metrics::default();
        {
            let _a = ActiveReconcile::start(&metrics, "execution");
            let _b = ActiveReconcile::start(&metrics, "execution");
            assert_eq!(
                metrics.get("wasmfn_reconciles_active", &[("controller", "execution")]),
                2.0
            );
        }
        assert_eq!(
            metrics.get("wasmfn_reconciles_active", &[("controller", "execution")]),
            0.0
        );
        assert_eq!(
            metrics.get("wasmfn_reconciles_total", &[("controller", "execution")]),
            2.0
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.inc("wasmfn_executions_total", &[("outcome", "a\"b\\c\nd")]);
        assert!(metrics
            .render()
            .contains("wasmfn_executions_total{outcome=\"a\\\"b\\\\c\\nd\"} 1\n"));
    }
}
