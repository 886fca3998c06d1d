//! The exporter: spans are queued without waiting (a full queue drops them and counts it) and a
//! background task sends them in batches, as the OpenTelemetry batch span processor does, through
//! `opentelemetry-otlp`'s HTTP transport (one exporter per service, as each is a resource of its
//! own: the operator and the runners whose spans it forwards).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::otlp_config::{self, OtlpConfig, Sampler};
use super::span::{AttributeValue, Span, SpanKind};
use crate::metrics::{Metrics, SpanResult};

enum Message {
    Span(Box<Span>),
    Flush(oneshot::Sender<()>),
}

/// Records spans; a clone is cheap. A disabled tracer records nothing and costs nothing.
#[derive(Clone, Debug)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::Sender<Message>,
    service: String,
    sampler: Sampler,
    metrics: Arc<Metrics>,
}

impl Tracer {
    /// A tracer that records nothing.
    pub fn disabled() -> Self {
        Tracer { inner: None }
    }

    /// Starts the export task (on the current Tokio runtime).
    pub fn start(config: OtlpConfig, metrics: Arc<Metrics>) -> Self {
        let (queue, receiver) = mpsc::channel(config.max_queue);
        let inner = Inner {
            queue,
            service: config.service_name.clone(),
            sampler: config.sampler,
            metrics: metrics.clone(),
        };
        tokio::spawn(export_loop(config, receiver, metrics));
        Tracer {
            inner: Some(Arc::new(inner)),
        }
    }

    /// The operator's service name, or `None` when tracing is off.
    pub fn service(&self) -> Option<&str> {
        self.inner.as_ref().map(|i| i.service.as_str())
    }

    /// Whether spans of `trace_id` are exported (tracing on and the sampler keeps the trace).
    pub fn keeps(&self, trace_id: &[u8; 16], caller_sampled: Option<bool>) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.sampler.keeps(trace_id, caller_sampled))
    }

    /// Queues `spans` of one trace for export when the trace is kept.
    pub fn record(&self, caller_sampled: Option<bool>, spans: impl IntoIterator<Item = Span>) {
        let Some(inner) = &self.inner else {
            return;
        };
        for span in spans {
            if !inner.sampler.keeps(&span.trace_id, caller_sampled) {
                continue;
            }
            if inner.queue.try_send(Message::Span(Box::new(span))).is_err() {
                inner.metrics.spans(SpanResult::Dropped).inc();
            }
        }
    }

    /// Sends what is queued and waits for it (at most `limit`): called on shutdown.
    pub async fn flush(&self, limit: Duration) {
        let Some(inner) = &self.inner else {
            return;
        };
        let (done, wait) = oneshot::channel();
        if inner.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}

async fn export_loop(
    config: OtlpConfig,
    mut receiver: mpsc::Receiver<Message>,
    metrics: Arc<Metrics>,
) {
    // reqwest is built without a TLS provider of its own; use the process's (ring), installing
    // it when nothing has yet (main does; a second install is a harmless no-op error).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().timeout(config.timeout).build() {
        Ok(client) => client,
        Err(error) => {
            warn!(%error, "cannot build the OTLP client; spans will be dropped");
            return;
        }
    };
    let mut transport = Transport::new(&config, client);
    let mut batch: Vec<Span> = Vec::new();
    let mut warned = false;
    loop {
        // Wait for the first span of a batch, then at most the schedule delay for more.
        let flushed = match receiver.recv().await {
            None => return,
            Some(Message::Flush(done)) => Some(done),
            Some(Message::Span(span)) => {
                batch.push(*span);
                let deadline = tokio::time::Instant::now() + config.schedule_delay;
                let mut flushed = None;
                while batch.len() < config.max_batch {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(Message::Span(span))) => batch.push(*span),
                        Ok(Some(Message::Flush(done))) => {
                            flushed = Some(done);
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                flushed
            }
        };
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(config.max_batch));
            let count = batch.len() as u64;
            match transport.send(&batch).await {
                Ok(()) => {
                    metrics.spans(SpanResult::Exported).inc_by(count);
                    warned = false;
                }
                Err(error) => {
                    metrics.spans(SpanResult::Failed).inc_by(count);
                    // One warning per outage, not one per batch.
                    if !warned {
                        warn!(endpoint = %config.endpoint, %error, "exporting spans failed");
                        warned = true;
                    }
                }
            }
            batch = rest;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

/// The OTLP exporters, one per service (each a resource of its own), made on first use.
struct Transport {
    config: OtlpConfig,
    client: reqwest::Client,
    scope: InstrumentationScope,
    exporters: HashMap<String, opentelemetry_otlp::SpanExporter>,
}

impl Transport {
    fn new(config: &OtlpConfig, client: reqwest::Client) -> Self {
        Transport {
            config: config.clone(),
            client,
            scope: InstrumentationScope::builder("wasmfn")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            exporters: HashMap::new(),
        }
    }

    fn exporter(&mut self, service: &str) -> Result<&opentelemetry_otlp::SpanExporter, String> {
        if !self.exporters.contains_key(service) {
            let config = &self.config;
            let protocol = match config.protocol {
                otlp_config::Protocol::HttpProtobuf => Protocol::HttpBinary,
                otlp_config::Protocol::HttpJson => Protocol::HttpJson,
            };
            // The batch loop counts a failed batch and moves on; it does not retry.
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(self.client.clone())
                .with_endpoint(config.endpoint.clone())
                .with_protocol(protocol)
                .with_timeout(config.timeout)
                .with_headers(config.headers.iter().cloned().collect())
                .with_retry_policy(RetryPolicy::disabled())
                .build()
                .map_err(|e| e.to_string())?;
            let attributes =
                (config.resource.iter()).map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
            let resource = Resource::builder_empty()
                .with_service_name(service.to_owned())
                .with_attributes(attributes)
                .build();
            exporter.set_resource(&resource);
            self.exporters.insert(service.to_owned(), exporter);
        }
        self.exporters
            .get(service)
            .ok_or_else(|| format!("no exporter for {service}"))
    }

    /// Sends `spans`, one request per service in order of first appearance.
    async fn send(&mut self, spans: &[Span]) -> Result<(), String> {
        let mut services: Vec<&str> = Vec::new();
        for span in spans {
            if !services.contains(&span.service.as_str()) {
                services.push(&span.service);
            }
        }
        for service in services {
            let batch = (spans.iter())
                .filter(|s| s.service == service)
                .map(|s| span_data(s, &self.scope))
                .collect();
            self.exporter(service)?
                .export(batch)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The SDK's form of one of our spans: ids, times and attributes as the span model made them.
fn span_data(span: &Span, scope: &InstrumentationScope) -> SpanData {
    let context = SpanContext::new(
        TraceId::from_bytes(span.trace_id),
        SpanId::from_bytes(span.span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let attributes = (span.attributes.iter())
        .map(|(key, value)| match value {
            AttributeValue::Text(text) => KeyValue::new(*key, text.clone()),
            AttributeValue::Int(number) => KeyValue::new(*key, *number),
            AttributeValue::Bool(flag) => KeyValue::new(*key, *flag),
        })
        .collect();
    SpanData {
        span_context: context,
        parent_span_id: span.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: false,
        span_kind: match span.kind {
            SpanKind::Internal => opentelemetry::trace::SpanKind::Internal,
            SpanKind::Server => opentelemetry::trace::SpanKind::Server,
        },
        name: span.name.clone().into(),
        start_time: UNIX_EPOCH + Duration::from_nanos(span.start_unix_nano),
        end_time: UNIX_EPOCH + Duration::from_nanos(span.end_unix_nano.max(span.start_unix_nano)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &span.error {
            None => Status::Ok,
            Some(message) => Status::error(message.clone()),
        },
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::otlp_config::Root;
    use super::super::span::SpanKind;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn span(trace: u8) -> Span {
        Span {
            service: "wasmfn-operator".into(),
            trace_id: [trace; 16],
            span_id: [1; 8],
            parent: None,
            name: "test".into(),
            kind: SpanKind::Internal,
            start_unix_nano: 1,
            end_unix_nano: 2,
            attributes: Vec::new(),
            error: None,
        }
    }

    /// A one-request-at-a-time HTTP server on loopback that hands over each request's body.
    async fn receiver(status: &'static str) -> (String, mpsc::Receiver<(String, String)>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut data = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = stream.read(&mut chunk).await.expect("read");
                    data.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&data).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break (head.to_owned(), body.to_owned());
                        }
                    }
                    if n == 0 {
                        break (text, String::new());
                    }
                };
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = tx.send((head, body)).await;
            }
        });
        (url, rx)
    }

    /// The next request the receiver got; a test never waits for one forever.
    async fn next_request(
        requests: &mut mpsc::Receiver<(String, String)>,
    ) -> Option<(String, String)> {
        tokio::time::timeout(Duration::from_secs(10), requests.recv())
            .await
            .expect("the exporter sent a request within 10 s")
    }

    fn config(endpoint: String) -> OtlpConfig {
        OtlpConfig {
            endpoint,
            protocol: super::super::otlp_config::Protocol::HttpJson,
            headers: vec![("x-tenant".into(), "blue".into())],
            timeout: Duration::from_secs(5),
            service_name: "wasmfn-operator".into(),
            resource: Vec::new(),
            sampler: Sampler::ParentBased(Root::AlwaysOn),
            schedule_delay: Duration::from_millis(50),
            max_queue: 64,
            max_batch: 2,
        }
    }

    #[tokio::test]
    async fn spans_are_posted_in_batches_with_the_configured_headers() {
        let (url, mut requests) = receiver("200 OK").await;
        let metrics = Arc::new(Metrics::default());
        let tracer = Tracer::start(config(url), metrics.clone());
        tracer.record(None, [span(1), span(2), span(3)]);
        // the caller did not sample this trace: it is not exported
        tracer.record(Some(false), [span(4)]);
        tracer.flush(Duration::from_secs(5)).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (head, body) = next_request(&mut requests).await.expect("a request");
            assert!(head.starts_with("POST /v1/traces "), "{head}");
            assert!(
                head.to_ascii_lowercase().contains("x-tenant: blue"),
                "{head}"
            );
            assert!(head
                .to_ascii_lowercase()
                .contains("content-type: application/json"));
            let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
            for span in body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .expect("spans")
            {
                ids.push(span["traceId"].as_str().expect("id")[..2].to_owned());
            }
        }
        assert_eq!(ids, ["01", "02", "03"]);
        assert_eq!(metrics.spans(SpanResult::Exported).get(), 3);
    }

    #[tokio::test]
    async fn a_failing_collector_is_counted_not_fatal() {
        let (url, mut requests) = receiver("503 Service Unavailable").await;
        let metrics = Arc::new(Metrics::default());
        let tracer = Tracer::start(config(url), metrics.clone());
        tracer.record(None, [span(1)]);
        tracer.flush(Duration::from_secs(5)).await;
        assert!(next_request(&mut requests).await.is_some());
        assert_eq!(metrics.spans(SpanResult::Failed).get(), 1);
        // the exporter is still there for the next batch
        tracer.record(None, [span(2)]);
        tracer.flush(Duration::from_secs(5)).await;
        assert_eq!(metrics.spans(SpanResult::Failed).get(), 2);
    }

    fn value_of<'a>(list: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
        let list = list.as_array().expect("a key-value list");
        let found = list.iter().find(|kv| kv["key"] == key);
        &found.unwrap_or_else(|| panic!("{key} in {list:?}"))["value"]
    }

    #[tokio::test]
    async fn spans_reach_the_collector_as_otlp_json_one_resource_per_service() {
        let (url, mut requests) = receiver("200 OK").await;
        let mut config = config(url);
        config.resource = vec![("deployment.environment".into(), "test".into())];
        config.max_batch = 16;
        let tracer = Tracer::start(config, Arc::new(Metrics::default()));
        let mut run = span(2).with("k8s.pod.name", "p");
        run.service = "wasmfn-runner".into();
        run.parent = Some([0x02; 8]);
        run.kind = SpanKind::Server;
        run.end_unix_nano = 0;
        let failed = Span {
            error: Some("Trap: unreachable".into()),
            start_unix_nano: 1_700_000_000_000_000_000,
            ..span(0xab)
                .with("wasmfn.attempts", 2i64)
                .with("wasmfn.cache.hit", false)
        };
        tracer.record(None, [failed, run, span(3)]);
        tracer.flush(Duration::from_secs(5)).await;
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let (_, body) = next_request(&mut requests).await.expect("a request");
            let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
            bodies.push(body["resourceSpans"][0].clone());
        }
        let operator = &bodies[0];
        let resource = &operator["resource"]["attributes"];
        assert_eq!(
            value_of(resource, "service.name")["stringValue"],
            "wasmfn-operator"
        );
        assert_eq!(
            value_of(resource, "deployment.environment")["stringValue"],
            "test"
        );
        assert_eq!(operator["scopeSpans"][0]["scope"]["name"], "wasmfn");
        let spans = operator["scopeSpans"][0]["spans"]
            .as_array()
            .expect("spans");
        assert_eq!(spans.len(), 2, "{operator}");
        let first = &spans[0];
        assert_eq!(first["traceId"], "ab".repeat(16));
        assert_eq!(first["spanId"], "01".repeat(8));
        assert!(first.get("parentSpanId").is_none_or(|p| p == ""), "{first}");
        assert_eq!(first["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(first["status"]["code"], 2);
        assert_eq!(first["status"]["message"], "Trap: unreachable");
        let attributes = &first["attributes"];
        assert_eq!(value_of(attributes, "wasmfn.attempts")["intValue"], "2");
        assert_eq!(value_of(attributes, "wasmfn.cache.hit")["boolValue"], false);
        assert_eq!(spans[1]["status"]["code"], 1);
        let runner = &bodies[1];
        let resource = &runner["resource"]["attributes"];
        assert_eq!(
            value_of(resource, "service.name")["stringValue"],
            "wasmfn-runner"
        );
        let run = &runner["scopeSpans"][0]["spans"][0];
        assert_eq!(run["parentSpanId"], "02".repeat(8));
        assert_eq!(run["kind"], 2);
        // An end before the start is clamped to the start.
        assert_eq!(run["endTimeUnixNano"], run["startTimeUnixNano"]);
    }

    #[tokio::test]
    async fn the_default_protocol_sends_protobuf() {
        let (url, mut requests) = receiver("200 OK").await;
        let mut config = config(url);
        config.protocol = super::super::otlp_config::Protocol::HttpProtobuf;
        let tracer = Tracer::start(config, Arc::new(Metrics::default()));
        let mut named = span(7);
        named.name = "compile demo/hello".into();
        tracer.record(None, [named]);
        tracer.flush(Duration::from_secs(5)).await;
        let (head, body) = next_request(&mut requests).await.expect("a request");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/x-protobuf"),
            "{head}"
        );
        assert!(body.contains("compile demo/hello") && !body.starts_with('{'));
    }

    #[test]
    fn a_disabled_tracer_keeps_nothing() {
        let tracer = Tracer::disabled();
        assert_eq!(tracer.service(), None);
        assert!(!tracer.keeps(&[1; 16], Some(true)));
        tracer.record(Some(true), [span(1)]);
    }
}
