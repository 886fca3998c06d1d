//! A finished span as the project's span model makes it (ids derived from object uids, runner
//! spans taken from result documents); the exporter hands it to the OTLP transport. Pure.

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
