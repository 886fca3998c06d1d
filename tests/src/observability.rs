//! What the suites observe the operator through besides the API: an OTLP/HTTP receiver on
//! loopback that keeps every span it is sent, and a `/metrics` scraper that reads the
//! Prometheus text format into numbers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// One span as a collector received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of its resource.
    pub service: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, when it has a parent.
    pub parent_span_id: Option<String>,
    /// Its name.
    pub name: String,
    /// String, integer (as text) and boolean attributes.
    pub attributes: BTreeMap<String, String>,
    /// OTLP status code (1 ok, 2 error).
    pub status_code: i64,
    /// Start and end, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End.
    pub end_unix_nano: u64,
}

/// A collector's OTLP/HTTP traces endpoint on 127.0.0.1 (protobuf or JSON bodies), answering 200 to every
/// export and keeping the spans until the receiver is dropped with the test process.
#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    /// `http://127.0.0.1:<port>`: the value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    rejected: Arc<Mutex<Vec<String>>>,
}

/// The span of `service` named `name` among `spans`; panics with every span when there is none.
pub fn span<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
        .unwrap_or_else(|| panic!("no {service} span {name:?} in {spans:#?}"))
}

impl OtlpReceiver {
    /// Binds a port and serves in background threads.
    pub fn start() -> Result<OtlpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind OTLP port"))?;
        let address = listener
            .local_addr()
            .map_err(Error::io("OTLP port address"))?;
        let receiver = OtlpReceiver {
            endpoint: format!("http://{address}"),
            spans: Arc::default(),
            rejected: Arc::default(),
        };
        let shared = receiver.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || shared.serve(stream));
            }
        });
        Ok(receiver)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests that were not a valid OTLP/JSON traces export (path, body), for failure output.
    pub fn rejected(&self) -> Vec<String> {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `done` holds for the spans of `trace_id`, then returns them.
    pub fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let spans: Vec<ReceivedSpan> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if done(&spans) {
                return Ok(spans);
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "spans of trace {trace_id} (have: {:?}; rejected requests: {:?})",
                        spans
                            .iter()
                            .map(|s| format!("{}:{}", s.service, s.name))
                            .collect::<Vec<_>>(),
                        self.rejected()
                    ),
                    seconds: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Serves one connection: HTTP/1.1 requests with a Content-Length, kept alive.
    fn serve(&self, stream: TcpStream) {
        let Ok(writer) = stream.try_clone() else {
            return;
        };
        let mut writer = writer;
        let mut reader = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0usize;
            let mut content_type = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "content-type" => content_type = value.trim().to_owned(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let accepted =
                request_line.starts_with("POST /v1/traces ") && self.accept(&content_type, &body);
            if !accepted {
                self.rejected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!(
                        "{} {content_type} {}",
                        request_line.trim_end(),
                        String::from_utf8_lossy(&body)
                    ));
            }
            let reply = if accepted {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
            } else {
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
            };
            if writer.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// Keeps the spans of an `ExportTraceServiceRequest` (OTLP/HTTP protobuf or JSON); false
    /// when the body is not one.
    fn accept(&self, content_type: &str, body: &[u8]) -> bool {
        let request = if content_type.starts_with("application/x-protobuf") {
            protobuf_as_json(body)
        } else if content_type.starts_with("application/json") {
            serde_json::from_slice::<Value>(body).ok()
        } else {
            None
        };
        let Some(request) = request else {
            return false;
        };
        let Some(spans) = parse_export(&request) else {
            return false;
        };
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(spans);
        true
    }
}

/// A protobuf `ExportTraceServiceRequest` in its OTLP/JSON form (hex ids, 64-bit integers as
/// strings), which [`parse_export`] reads.
fn protobuf_as_json(body: &[u8]) -> Option<Value> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let request = ExportTraceServiceRequest::decode(body).ok()?;
    serde_json::to_value(&request).ok()
}

fn attribute_text(value: &Value) -> Option<String> {
    if let Some(text) = value.get("stringValue").and_then(Value::as_str) {
        return Some(text.to_owned());
    }
    if let Some(number) = value.get("intValue") {
        return Some(
            number
                .as_str()
                .map_or_else(|| number.to_string(), str::to_owned),
        );
    }
    value
        .get("boolValue")
        .and_then(Value::as_bool)
        .map(|b| b.to_string())
}

fn attributes(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["key"].as_str()?.to_owned(), attribute_text(&a["value"])?)))
        .collect()
}

/// The spans of an OTLP/JSON export, or `None` when a required field is missing or malformed.
fn parse_export(request: &Value) -> Option<Vec<ReceivedSpan>> {
    let hex_of = |value: &Value, len: usize| {
        value
            .as_str()
            .filter(|t| t.len() == len && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
    };
    let nanos = |value: &Value| value.as_str()?.parse::<u64>().ok();
    let mut out = Vec::new();
    for resource in request["resourceSpans"].as_array()? {
        let service = attributes(&resource["resource"]["attributes"])
            .remove("service.name")
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array()? {
            for span in scope["spans"].as_array()? {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex_of(&span["traceId"], 32)?,
                    span_id: hex_of(&span["spanId"], 16)?,
                    // Absent or empty: a root span.
                    parent_span_id: match span.get("parentSpanId") {
                        None => None,
                        Some(parent) if parent == "" => None,
                        Some(parent) => Some(hex_of(parent, 16)?),
                    },
                    name: span["name"].as_str()?.to_owned(),
                    attributes: attributes(&span["attributes"]),
                    status_code: span["status"]["code"].as_i64().unwrap_or(0),
                    start_unix_nano: nanos(&span["startTimeUnixNano"])?,
                    end_unix_nano: nanos(&span["endTimeUnixNano"])?,
                });
            }
        }
    }
    Some(out)
}

/// `GET path` over HTTP/1.0 from `address` (`host:port`); the body.
pub fn http_get(address: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // One write: the operator's endpoint answers whatever its first read holds.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// A scrape: each sample line's series (`name{labels}` as written) and its value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape(pub BTreeMap<String, f64>);

impl Scrape {
    /// Parses the Prometheus or OpenMetrics text format (comments and exemplars skipped).
    pub fn parse(text: &str) -> Scrape {
        Scrape(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| {
                    let sample = l.split_once(" # ").map_or(l, |(sample, _exemplar)| sample);
                    let (series, value) = sample.rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The sum of every series of metric `name` whose labels include all of `labels`
    /// (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
                metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, value)| value)
            .sum()
    }
}

/// Scrapes `/metrics` on `127.0.0.1:port`.
pub fn scrape(port: u16) -> Result<Scrape> {
    let address = format!("127.0.0.1:{port}");
    let text = http_get(&address, "/metrics").map_err(Error::io(format!("scrape {address}")))?;
    Ok(Scrape::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_sums_series_by_label_subset() {
        let scrape = Scrape::parse(
            "# HELP x y\n# TYPE x counter\n\
             wasmfn_executions_total{runtime=\"WasmEdge\",outcome=\"Completed\"} 2\n\
             wasmfn_executions_total{runtime=\"Container\",outcome=\"Completed\"} 3\n\
             wasmfn_leader 1\n\
             d_bucket{le=\"0.25\",runtime=\"WasmEdge\"} 4 # {trace_id=\"ab\"} 0.2\n\
             # EOF\n",
        );
        assert_eq!(scrape.sum("d_bucket", &[("le", "0.25")]), 4.0);
        assert_eq!(scrape.sum("wasmfn_executions_total", &[]), 5.0);
        assert_eq!(
            scrape.sum("wasmfn_executions_total", &[("runtime", "WasmEdge")]),
            2.0
        );
        assert_eq!(scrape.sum("wasmfn_leader", &[]), 1.0);
        assert_eq!(scrape.sum("wasmfn_missing", &[]), 0.0);
    }

    #[test]
    fn the_receiver_keeps_valid_exports_and_refuses_others() {
        let receiver = OtlpReceiver::start().expect("start");
        let address = receiver.endpoint.trim_start_matches("http://").to_owned();
        let body = serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "ab".repeat(16), "spanId": "01".repeat(8), "parentSpanId": "02".repeat(8),
                "name": "run", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
                "attributes": [{"key": "n", "value": {"intValue": "7"}}], "status": {"code": 1}}]}]}]})
        .to_string();
        let mut stream = TcpStream::connect(&address).expect("connect");
        for (path, payload) in [("/v1/traces", body.as_str()), ("/v1/traces", "{}x")] {
            let request = format!(
                "POST {path} HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
                payload.len()
            );
            stream.write_all(request.as_bytes()).expect("write");
        }
        let spans = receiver
            .wait_for_trace(&"ab".repeat(16), Duration::from_secs(5), |s| !s.is_empty())
            .expect("the span arrives");
        assert_eq!(spans[0].service, "svc");
        assert_eq!(spans[0].parent_span_id.as_deref(), Some("0202020202020202"));
        assert_eq!(spans[0].attributes["n"], "7");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while receiver.rejected().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(receiver.rejected().len(), 1);
    }

    #[test]
    fn the_receiver_reads_protobuf_exports_as_the_operator_sends_them_by_default() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        use prost::Message as _;
        let text = |key: &str, text: &str| KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(text.to_owned())),
            }),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![text("service.name", "svc")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span {
                            trace_id: vec![0xcd; 16],
                            span_id: vec![0x01; 8],
                            parent_span_id: vec![0x02; 8],
                            name: "run".to_owned(),
                            start_time_unix_nano: 1,
                            end_time_unix_nano: 2,
                            attributes: vec![text("k8s.pod.name", "p")],
                            ..Default::default()
                        },
                        // A root span: no parent id at all.
                        Span {
                            trace_id: vec![0xcd; 16],
                            span_id: vec![0x02; 8],
                            name: "execution".to_owned(),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = request.encode_to_vec();
        let receiver = OtlpReceiver::start().expect("start");
        let address = receiver.endpoint.trim_start_matches("http://").to_owned();
        let mut stream = TcpStream::connect(&address).expect("connect");
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write");
        stream.write_all(&body).expect("write");
        let spans = receiver
            .wait_for_trace(&"cd".repeat(16), Duration::from_secs(5), |s| s.len() == 2)
            .expect("both spans arrive");
        assert_eq!(spans[0].service, "svc");
        assert_eq!(spans[0].name, "run");
        assert_eq!(spans[0].parent_span_id.as_deref(), Some("0202020202020202"));
        assert_eq!(spans[0].attributes["k8s.pod.name"], "p");
        assert_eq!(spans[0].end_unix_nano, 2);
        assert_eq!(spans[1].name, "execution");
        assert_eq!(spans[1].parent_span_id, None);
        assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());
    }
}
