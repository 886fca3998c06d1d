//! A finished span and its OTLP/JSON encoding (an `ExportTraceServiceRequest`). Pure.
//!
//! OTLP/JSON differs from plain protobuf-to-JSON in two ways that matter here: trace and span
//! ids are hex strings, and 64-bit integers (timestamps, integer attributes) are strings.

use serde_json::{json, Value};

/// A value of a span attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A flag.
    Bool(bool),
}

impl From<&str> for AttributeValue {
    fn from(text: &str) -> Self {
        AttributeValue::Text(text.to_owned())
    }
}

impl From<String> for AttributeValue {
    fn from(text: String) -> Self {
        AttributeValue::Text(text)
    }
}

impl From<i64> for AttributeValue {
    fn from(value: i64) -> Self {
        AttributeValue::Int(value)
    }
}

impl From<bool> for AttributeValue {
    fn from(value: bool) -> Self {
        AttributeValue::Bool(value)
    }
}

/// The OTLP span kinds wasmfn uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside a component.
    Internal = 1,
    /// Work done for a request from elsewhere (a run, done for the operator).
    Server = 2,
}

/// A finished span, ready to export.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// `service.name` of the component that did the work.
    pub service: String,
    /// The trace.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// The parent span, if any.
    pub parent: Option<[u8; 8]>,
    /// What the work was.
    pub name: String,
    /// Its kind.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch (never before the start).
    pub end_unix_nano: u64,
    /// Attributes, in order.
    pub attributes: Vec<(&'static str, AttributeValue)>,
    /// Set when the work failed: what went wrong.
    pub error: Option<String>,
}

impl Span {
    /// Adds an attribute.
    pub fn with(mut self, key: &'static str, value: impl Into<AttributeValue>) -> Self {
        self.attributes.push((key, value.into()));
        self
    }
}

fn attribute(key: &str, value: &AttributeValue) -> Value {
    let value = match value {
        AttributeValue::Text(text) => json!({ "stringValue": text }),
        AttributeValue::Int(number) => json!({ "intValue": number.to_string() }),
        AttributeValue::Bool(flag) => json!({ "boolValue": flag }),
    };
    json!({ "key": key, "value": value })
}

fn encode_span(span: &Span) -> Value {
    let mut out = json!({
        "traceId": hex::encode(span.trace_id),
        "spanId": hex::encode(span.span_id),
        "name": span.name,
        "kind": span.kind as i32,
        "startTimeUnixNano": span.start_unix_nano.to_string(),
        "endTimeUnixNano": span.end_unix_nano.max(span.start_unix_nano).to_string(),
        "attributes": span.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
        "status": match &span.error {
            None => json!({ "code": 1 }),
            Some(message) => json!({ "code": 2, "message": message }),
        },
    });
    if let Some(parent) = span.parent {
        out["parentSpanId"] = json!(hex::encode(parent));
    }
    out
}

/// The request body for `spans`: one resource per service, in order of first appearance;
/// `resource` (from `OTEL_RESOURCE_ATTRIBUTES`) is added to every resource.
pub fn export_request(spans: &[Span], resource: &[(String, String)]) -> Value {
    let mut services: Vec<&str> = Vec::new();
    for span in spans {
        if !services.contains(&span.service.as_str()) {
            services.push(&span.service);
        }
    }
    let resource_spans: Vec<Value> = services
        .iter()
        .map(|service| {
            let mut attributes = vec![attribute("service.name", &(*service).into())];
            attributes.extend(
                resource
                    .iter()
                    .map(|(k, v)| attribute(k, &v.as_str().into())),
            );
            let spans: Vec<Value> = spans
                .iter()
                .filter(|s| s.service == *service)
                .map(encode_span)
                .collect();
            json!({
                "resource": { "attributes": attributes },
                "scopeSpans": [{
                    "scope": { "name": "wasmfn", "version": env!("CARGO_PKG_VERSION") },
                    "spans": spans,
                }],
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(service: &str, name: &str) -> Span {
        Span {
            service: service.into(),
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            parent: None,
            name: name.into(),
            kind: SpanKind::Internal,
            start_unix_nano: 1_700_000_000_000_000_000,
            end_unix_nano: 1_700_000_000_500_000_000,
            attributes: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn spans_are_grouped_by_service_with_otlp_json_conventions() {
        let mut run = span("wasmfn-runner", "run").with("k8s.pod.name", "p");
        run.parent = Some([0x02; 8]);
        run.kind = SpanKind::Server;
        let failed = Span {
            error: Some("Trap: unreachable".into()),
            ..span("wasmfn-operator", "execution")
                .with("wasmfn.attempts", 2i64)
                .with("wasmfn.cache.hit", false)
        };
        let resource = [("deployment.environment".to_owned(), "test".to_owned())];
        let body = export_request(
            &[failed, run, span("wasmfn-operator", "reconcile")],
            &resource,
        );
        let groups = body["resourceSpans"].as_array().expect("array");
        assert_eq!(groups.len(), 2);
        let operator = &groups[0];
        assert_eq!(
            operator["resource"]["attributes"],
            json!([
                {"key": "service.name", "value": {"stringValue": "wasmfn-operator"}},
                {"key": "deployment.environment", "value": {"stringValue": "test"}},
            ])
        );
        let spans = operator["scopeSpans"][0]["spans"]
            .as_array()
            .expect("spans");
        assert_eq!(spans.len(), 2);
        let first = &spans[0];
        assert_eq!(first["traceId"], "ab".repeat(16));
        assert_eq!(first["spanId"], "01".repeat(8));
        assert!(first.get("parentSpanId").is_none());
        assert_eq!(first["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(
            first["status"],
            json!({"code": 2, "message": "Trap: unreachable"})
        );
        assert_eq!(
            first["attributes"],
            json!([
                {"key": "wasmfn.attempts", "value": {"intValue": "2"}},
                {"key": "wasmfn.cache.hit", "value": {"boolValue": false}},
            ])
        );
        assert_eq!(spans[1]["status"], json!({"code": 1}));
        let runner = &groups[1]["scopeSpans"][0]["spans"][0];
        assert_eq!(runner["parentSpanId"], "02".repeat(8));
        assert_eq!(runner["kind"], 2);
    }

    #[test]
    fn an_end_before_the_start_is_clamped() {
        let mut backwards = span("s", "x");
        backwards.end_unix_nano = 5;
        let body = export_request(&[backwards], &[]);
        let encoded = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(encoded["endTimeUnixNano"], encoded["startTimeUnixNano"]);
    }
}
