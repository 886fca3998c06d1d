//! The agent's metrics, in Prometheus text at `GET /metrics`: runs by outcome, queue depth,
//! in-flight runs, module cache hits and misses.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label of [`Metrics::runs`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The result document's reason (`Completed`, `Trap`, …).
    pub reason: String,
}

/// Every metric the agent keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Runs finished, by reason.
    pub runs: Family<ReasonLabel, Counter>,
    /// Runs waiting for a slot.
    pub queued: Gauge,
    /// Runs executing.
    pub in_flight: Gauge,
    /// Run requests whose module was cached.
    pub cache_hits: Counter,
    /// Run requests whose module was not (the operator then sends it).
    pub cache_misses: Counter,
    /// Modules added to the cache (verified and AOT-compiled).
    pub modules_added: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wasmfn_agent");
        let runs = Family::<ReasonLabel, Counter>::default();
        registry.register("runs", "Runs finished, by result reason", runs.clone());
        let queued = Gauge::default();
        registry.register(
            "queue_depth",
            "Runs waiting for a free slot",
            queued.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("in_flight_runs", "Runs executing now", in_flight.clone());
        let cache_hits = Counter::default();
        registry.register(
            "module_cache_hits",
            "Run requests whose module was in the cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "module_cache_misses",
            "Run requests whose module was not in the cache",
            cache_misses.clone(),
        );
        let modules_added = Counter::default();
        registry.register(
            "modules_added",
            "Modules verified, AOT-compiled and added to the cache",
            modules_added.clone(),
        );
        Metrics {
            registry,
            runs,
            queued,
            in_flight,
            cache_hits,
            cache_misses,
            modules_added,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::{Metrics, ReasonLabel};

    #[test]
    fn the_exposition_names_every_metric_with_its_help_type_and_value() {
        let metrics = Metrics::default();
        let completed = ReasonLabel {
            reason: "Completed".to_owned(),
        };
        metrics.runs.get_or_create(&completed).inc();
        metrics.runs.get_or_create(&completed).inc();
        metrics
            .runs
            .get_or_create(&ReasonLabel {
                reason: "Trap".to_owned(),
            })
            .inc();
        metrics.queued.set(3);
        metrics.in_flight.inc();
        metrics.in_flight.inc();
        metrics.cache_hits.inc_by(5);
        metrics.cache_misses.inc();
        metrics.modules_added.inc_by(4);

        let text = metrics.render();
        let mut lines: Vec<&str> = text.lines().collect();
        // The family's label sets come out in hash order; everything else in registration order.
        let runs_at = lines
            .iter()
            .position(|line| line.starts_with("wasmfn_agent_runs_total"))
            .expect("runs are exposed");
        lines[runs_at..runs_at + 2].sort_unstable();
        assert_eq!(
            lines,
            [
                "# HELP wasmfn_agent_runs Runs finished, by result reason.",
                "# TYPE wasmfn_agent_runs counter",
                "wasmfn_agent_runs_total{reason=\"Completed\"} 2",
                "wasmfn_agent_runs_total{reason=\"Trap\"} 1",
                "# HELP wasmfn_agent_queue_depth Runs waiting for a free slot.",
                "# TYPE wasmfn_agent_queue_depth gauge",
                "wasmfn_agent_queue_depth 3",
                "# HELP wasmfn_agent_in_flight_runs Runs executing now.",
                "# TYPE wasmfn_agent_in_flight_runs gauge",
                "wasmfn_agent_in_flight_runs 2",
                "# HELP wasmfn_agent_module_cache_hits Run requests whose module was in the cache.",
                "# TYPE wasmfn_agent_module_cache_hits counter",
                "wasmfn_agent_module_cache_hits_total 5",
                "# HELP wasmfn_agent_module_cache_misses Run requests whose module was not in the cache.",
                "# TYPE wasmfn_agent_module_cache_misses counter",
                "wasmfn_agent_module_cache_misses_total 1",
                "# HELP wasmfn_agent_modules_added Modules verified, AOT-compiled and added to the cache.",
                "# TYPE wasmfn_agent_modules_added counter",
                "wasmfn_agent_modules_added_total 4",
                "# EOF",
            ]
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
