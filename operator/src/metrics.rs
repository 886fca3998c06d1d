//! Counters served as Prometheus text on `/metrics`. Labels are fixed names, never error text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The operator's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Metrics {
    /// Adds one to `name{label}`.
    pub fn inc(&self, name: &'static str, label: &str) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *counters.entry((name, label.to_owned())).or_insert(0) += 1;
    }

    /// The value of `name{label}`.
    pub fn get(&self, name: &'static str, label: &str) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters
            .get(&(name, label.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut last = "";
        for ((name, label), value) in counters.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{kind=\"{label}\"}} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.inc("wasmfn_reconciles_total", "function");
        metrics.inc("wasmfn_reconciles_total", "function");
        metrics.inc("wasmfn_cache_total", "hit");
        assert_eq!(metrics.get("wasmfn_reconciles_total", "function"), 2);
        assert_eq!(
            metrics.render(),
            "# TYPE wasmfn_cache_total counter\nwasmfn_cache_total{kind=\"hit\"} 1\n\
             # TYPE wasmfn_reconciles_total counter\nwasmfn_reconciles_total{kind=\"function\"} 2\n"
        );
    }
}
