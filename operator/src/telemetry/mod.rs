//! OpenTelemetry tracing: spans for reconciles, compiles, executions and their attempts, plus
//! the runners' own spans, exported over OTLP/HTTP when the standard `OTEL_*` variables name a
//! collector (and not at all otherwise).
//!
//! [`otlp_config`] reads the environment, [`span`] is the span and its wire form,
//! [`object_spans`] decides which spans an object produces and where they sit in a trace, and
//! [`Tracer`] queues and sends them. All but the last are pure.

mod export;
pub mod object_spans;
pub mod otlp_config;
pub mod span;

pub use export::Tracer;
