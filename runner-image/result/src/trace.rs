//! Trace context for a run: the W3C `traceparent` the operator hands to a runner, and the spans
//! the runner reports back inside the result document.
//!
//! Run pods have no network egress, so runners never talk to a trace collector themselves: they
//! record their spans (the run and its load / instantiate / invoke phases) in the result document,
//! and the operator, which reads that document anyway, exports them under the runner's own
//! service name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Timings;

/// The environment variable (and `wasmfn exec` flag value) carrying the parent context of a run.
pub const TRACEPARENT_ENV: &str = "WASMFN_TRACEPARENT";

/// A W3C trace context: the trace, the parent span, and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The 16-byte trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The 8-byte id of the parent span (never all zero).
    pub span_id: [u8; 8],
    /// Whether the caller sampled this trace.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a version-00 `traceparent` header value (`00-<32 hex>-<16 hex>-<2 hex>`).
    /// Later versions are read by their first four fields, as the W3C specification asks.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('-').collect();
        let bad = |what: &str| Err(format!("traceparent {text:?}: {what}"));
        if parts.len() < 4 {
            return bad("expected version-traceid-spanid-flags");
        }
        let version = match decode_hex::<1>(parts[0]) {
            Some([v]) => v,
            None => return bad("the version is not two hex digits"),
        };
        if version == 0xff || (version == 0 && parts.len() != 4) {
            return bad("unsupported version");
        }
        let Some(trace_id) = decode_hex::<16>(parts[1]) else {
            return bad("the trace id is not 32 lowercase hex digits");
        };
        let Some(span_id) = decode_hex::<8>(parts[2]) else {
            return bad("the parent id is not 16 lowercase hex digits");
        };
        let Some([flags]) = decode_hex::<1>(parts[3]) else {
            return bad("the flags are not two hex digits");
        };
        if trace_id == [0; 16] || span_id == [0; 8] {
            return bad("an all-zero id is invalid");
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The header value (always version 00).
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }

    /// The same trace with `span_id` as the parent.
    pub fn with_parent(&self, span_id: [u8; 8]) -> Self {
        TraceParent { span_id, ..*self }
    }
}

/// Lowercase hex of exactly `N` bytes.
fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(text).ok()?.try_into().ok()
}

/// A fresh random span id from the kernel's generator (falls back to time and pid when
/// `/dev/urandom` cannot be read, which only costs uniqueness guarantees, never a run).
pub fn random_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut id));
    if read.is_err() || id == [0; 8] {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        id = ((nanos ^ (u64::from(std::process::id()) << 40)) | 1).to_be_bytes();
    }
    id
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// One finished span a runner reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanRecord {
    /// What the span covers: `run`, `load`, `instantiate` or `invoke`.
    pub name: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits: the operator's attempt span for `run`, `run` for the phases.
    pub parent_span_id: String,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

/// The spans of one run, as the result document carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTrace {
    /// 32 hex digits: the trace the operator's traceparent named.
    pub trace_id: String,
    /// The emitting component, used as the spans' service name (`wasmfn-runner`, `wasmfn-shim`).
    pub service: String,
    /// The run span first, then its phases in order.
    pub spans: Vec<SpanRecord>,
}

impl RunTrace {
    /// The spans of a run that started at `started` under `parent` and took `timings`. The
    /// phases are laid end to end so that they finish when the run does: what the run spent
    /// outside them (forking, isolation, reading stdin) comes first.
    pub fn from_timings(
        parent: &TraceParent,
        service: &str,
        started: SystemTime,
        timings: &Timings,
    ) -> Self {
        let ms = |ms: f64| Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        let start = unix_nanos(started);
        let end = start.saturating_add(unix_nanos(UNIX_EPOCH + ms(timings.total_ms)));
        let run_id = random_span_id();
        let run_hex = hex::encode(run_id);
        let phases = [
            ("load", timings.load_ms),
            ("instantiate", timings.instantiate_ms),
            ("invoke", timings.run_ms),
        ];
        let phase_total: u64 = phases
            .iter()
            .map(|(_, d)| unix_nanos(UNIX_EPOCH + ms(*d)))
            .sum();
        let mut cursor = end.saturating_sub(phase_total).max(start);
        let mut spans = vec![SpanRecord {
            name: "run".into(),
            span_id: run_hex.clone(),
            parent_span_id: hex::encode(parent.span_id),
            start_unix_nano: start,
            end_unix_nano: end,
        }];
        for (name, duration) in phases {
            let phase_end = cursor
                .saturating_add(unix_nanos(UNIX_EPOCH + ms(duration)))
                .min(end);
            spans.push(SpanRecord {
                name: name.into(),
                span_id: hex::encode(random_span_id()),
                parent_span_id: run_hex.clone(),
                start_unix_nano: cursor,
                end_unix_nano: phase_end,
            });
            cursor = phase_end;
        }
        RunTrace {
            trace_id: hex::encode(parent.trace_id),
            service: service.into(),
            spans,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let parent = TraceParent::parse(HEADER).expect("valid");
        assert_eq!(
            hex::encode(parent.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(hex::encode(parent.span_id), "00f067aa0ba902b7");
        assert!(parent.sampled);
        assert_eq!(parent.header(), HEADER);
        let unsampled = TraceParent::parse(&HEADER.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled);
    }

    #[test]
    fn malformed_headers_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "expected"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "expected",
            ),
            (
                "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "unsupported",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "unsupported",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
                "parent id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                "flags",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all-zero",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all-zero",
            ),
        ] {
            let error = TraceParent::parse(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
        // a future version may append fields
        assert!(TraceParent::parse(&format!("01{}-extra", &HEADER[2..])).is_ok());
    }

    #[test]
    fn run_spans_nest_under_the_parent_and_end_with_the_run() {
        let parent = TraceParent::parse(HEADER).expect("valid");
        let started = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let timings = Timings {
            load_ms: 2.0,
            instantiate_ms: 1.0,
            run_ms: 5.5,
            total_ms: 12.0,
        };
        let trace = RunTrace::from_timings(&parent, "wasmfn-runner", started, &timings);
        assert_eq!(trace.trace_id, hex::encode(parent.trace_id));
        let names: Vec<&str> = trace.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["run", "load", "instantiate", "invoke"]);
        let run = &trace.spans[0];
        assert_eq!(run.parent_span_id, "00f067aa0ba902b7");
        assert_eq!(run.end_unix_nano - run.start_unix_nano, 12_000_000);
        for phase in &trace.spans[1..] {
            assert_eq!(phase.parent_span_id, run.span_id);
            assert_ne!(phase.span_id, run.span_id);
        }
        // load starts after the 3.5 ms of overhead; the phases are contiguous and end with run
        assert_eq!(
            trace.spans[1].start_unix_nano - run.start_unix_nano,
            3_500_000
        );
        assert_eq!(trace.spans[1].end_unix_nano, trace.spans[2].start_unix_nano);
        assert_eq!(trace.spans[2].end_unix_nano, trace.spans[3].start_unix_nano);
        assert_eq!(trace.spans[3].end_unix_nano, run.end_unix_nano);
    }

    #[test]
    fn phases_longer_than_the_total_stay_inside_the_run() {
        let parent = TraceParent::parse(HEADER).expect("valid");
        let timings = Timings {
            load_ms: 10.0,
            instantiate_ms: 10.0,
            run_ms: 10.0,
            total_ms: 5.0,
        };
        let trace = RunTrace::from_timings(&parent, "wasmfn-shim", SystemTime::now(), &timings);
        let run = &trace.spans[0];
        for phase in &trace.spans[1..] {
            assert!(phase.start_unix_nano >= run.start_unix_nano);
            assert!(phase.end_unix_nano <= run.end_unix_nano);
        }
    }

    #[test]
    fn span_ids_are_distinct_and_never_zero() {
        let ids: std::collections::HashSet<[u8; 8]> = (0..100).map(|_| random_span_id()).collect();
        assert_eq!(ids.len(), 100);
        assert!(!ids.contains(&[0; 8]));
    }
}
