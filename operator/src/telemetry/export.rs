//! The exporter: spans are queued without waiting (a full queue drops them and counts it) and a
//! background task sends them in batches, as the OpenTelemetry batch span processor does.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::otlp_config::{OtlpConfig, Sampler};
use super::span::{export_request, Span};
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
            match send(&client, &config, &batch).await {
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

async fn send(client: &reqwest::Client, config: &OtlpConfig, spans: &[Span]) -> Result<(), String> {
    let body = export_request(spans, &config.resource).to_string();
    let mut request = client
        .post(&config.endpoint)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in &config.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let text = response.text().await.unwrap_or_default();
        Err(format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        ))
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

    #[test]
    fn a_disabled_tracer_keeps_nothing() {
        let tracer = Tracer::disabled();
        assert_eq!(tracer.service(), None);
        assert!(!tracer.keeps(&[1; 16], Some(true)));
        tracer.record(Some(true), [span(1)]);
    }
}
