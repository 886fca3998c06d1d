//! Reading the standard OpenTelemetry environment variables into an exporter configuration.
//! Pure: the environment comes in as a lookup function.
//!
//! Tracing is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Spans go out over OTLP/HTTP
//! with protobuf bodies (`http/protobuf`, the specification's default) or JSON (`http/json`),
//! which every OpenTelemetry Collector accepts on its HTTP port (4318); `grpc` is a startup error
//! rather than silence.

use std::time::Duration;

/// Service name of the operator's own spans when neither `OTEL_SERVICE_NAME` nor a
/// `service.name` resource attribute says otherwise.
pub const DEFAULT_SERVICE: &str = "wasmfn-operator";

/// Which traces are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// This fraction of traces, chosen by trace id (so every span of a trace agrees).
    Ratio(f64),
    /// The caller's sampled flag when there is a caller, else the inner rule.
    ParentBased(Root),
}

/// The rule of a parent-based sampler for traces that start here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    /// Keep them.
    AlwaysOn,
    /// Drop them.
    AlwaysOff,
    /// Keep this fraction.
    Ratio(f64),
}

impl Sampler {
    /// Whether the trace `trace_id` is kept; `caller_sampled` is the flag of the caller's
    /// traceparent, when the trace came from one.
    pub fn keeps(&self, trace_id: &[u8; 16], caller_sampled: Option<bool>) -> bool {
        match (*self, caller_sampled) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::AlwaysOff, _) => false,
            (Sampler::Ratio(ratio), _) => ratio_keeps(trace_id, ratio),
            (Sampler::ParentBased(_), Some(sampled)) => sampled,
            (Sampler::ParentBased(Root::AlwaysOn), None) => true,
            (Sampler::ParentBased(Root::AlwaysOff), None) => false,
            (Sampler::ParentBased(Root::Ratio(ratio)), None) => ratio_keeps(trace_id, ratio),
        }
    }
}

/// The last 8 bytes of a trace id are random (W3C level 2): compare them with the ratio.
fn ratio_keeps(trace_id: &[u8; 16], ratio: f64) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let value = u64::from_be_bytes(low) >> 11; // 53 bits, exact in an f64
    (value as f64) < ratio.clamp(0.0, 1.0) * (1u64 << 53) as f64
}

/// How export requests are encoded (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`: the specification's default.
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub endpoint: String,
    /// The body encoding.
    pub protocol: Protocol,
    /// Extra request headers (authentication, tenant).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// `service.name` of the operator's spans.
    pub service_name: String,
    /// Other resource attributes of the operator's spans.
    pub resource: Vec<(String, String)>,
    /// Which traces are kept.
    pub sampler: Sampler,
    /// How long a span waits to be batched.
    pub schedule_delay: Duration,
    /// Spans queued at most; more are dropped (and counted).
    pub max_queue: usize,
    /// Spans per request at most.
    pub max_batch: usize,
}

/// Reads the configuration; `Ok(None)` means tracing is off.
pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>, String> {
    let get = |name: &str| {
        var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let traces_or_general = |suffix: &str| {
        get(&format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"))
            .or_else(|| get(&format!("OTEL_EXPORTER_OTLP_{suffix}")))
    };
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match get("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={other}: the operator exports only otlp (or none)"
            ))
        }
    }
    let endpoint = match (
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(traces), _) => traces,
        (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
        (None, None) => return Ok(None),
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!(
            "OTLP endpoint {endpoint:?} is not an http:// or https:// URL"
        ));
    }
    let protocol = match traces_or_general("PROTOCOL").as_deref() {
        None | Some("http/protobuf") => Protocol::HttpProtobuf,
        Some("http/json") => Protocol::HttpJson,
        Some(other) => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other}: the operator sends OTLP over HTTP; set it \
                 to http/protobuf or http/json and point the endpoint at the collector's HTTP port (4318)"
            ))
        }
    };
    let headers = match traces_or_general("HEADERS") {
        Some(text) => key_values(&text, "OTEL_EXPORTER_OTLP_HEADERS")?,
        None => Vec::new(),
    };
    let timeout = match traces_or_general("TIMEOUT") {
        Some(ms) => Duration::from_millis(number(&ms, "OTEL_EXPORTER_OTLP_TIMEOUT")?),
        None => Duration::from_secs(10),
    };
    let mut resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
        Some(text) => key_values(&text, "OTEL_RESOURCE_ATTRIBUTES")?,
        None => Vec::new(),
    };
    let from_resource = resource
        .iter()
        .position(|(k, _)| k == "service.name")
        .map(|i| resource.remove(i).1);
    let service_name = get("OTEL_SERVICE_NAME")
        .or(from_resource)
        .unwrap_or_else(|| DEFAULT_SERVICE.to_owned());
    let sampler = sampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?;
    let millis = |name: &str, default: u64| -> Result<u64, String> {
        get(name).map_or(Ok(default), |v| number(&v, name))
    };
    let max_queue = millis("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?.max(1) as usize;
    Ok(Some(OtlpConfig {
        endpoint,
        protocol,
        headers,
        timeout,
        service_name,
        resource,
        sampler,
        schedule_delay: Duration::from_millis(millis("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
        max_queue,
        max_batch: (millis("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.max(1) as usize).min(max_queue),
    }))
}

fn number(text: &str, name: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{name}={text:?} is not a whole number"))
}

/// `key=value,key=value` with percent-encoded values (the W3C baggage form the spec uses).
fn key_values(text: &str, name: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), percent_decode(value.trim())))
            }
            _ => Err(format!("{name}: {item:?} is not key=value")),
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sampler(name: Option<String>, arg: Option<String>) -> Result<Sampler, String> {
    let ratio = || -> Result<f64, String> {
        match &arg {
            None => Ok(1.0),
            Some(text) => match text.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!(
                    "OTEL_TRACES_SAMPLER_ARG={text:?} is not a ratio between 0 and 1"
                )),
            },
        }
    };
    Ok(match name.as_deref() {
        None | Some("parentbased_always_on") => Sampler::ParentBased(Root::AlwaysOn),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::Ratio(ratio()?),
        Some("parentbased_always_off") => Sampler::ParentBased(Root::AlwaysOff),
        Some("parentbased_traceidratio") => Sampler::ParentBased(Root::Ratio(ratio()?)),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER={other}: supported are always_on, always_off, traceidratio \
                 and their parentbased_ forms"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<OtlpConfig>, String> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_env(|name| env.get(name).cloned())
    }

    fn on(pairs: &[(&str, &str)]) -> OtlpConfig {
        read(pairs).expect("valid").expect("tracing on")
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]), Ok(None));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(read(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]), Ok(None));
        assert_eq!(
            read(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(None)
        );
        assert!(read(&[endpoint, ("OTEL_SDK_DISABLED", "false")])
            .expect("valid")
            .is_some());
    }

    #[test]
    fn the_general_endpoint_gets_the_traces_path_and_the_specific_one_is_used_as_is() {
        let config = on(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
        assert_eq!(config.endpoint, "http://collector:4318/v1/traces");
        let config = on(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://traces.example/otlp",
            ),
        ]);
        assert_eq!(config.endpoint, "https://traces.example/otlp");
    }

    #[test]
    fn defaults_follow_the_specification() {
        let config = on(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        assert_eq!(config.service_name, DEFAULT_SERVICE);
        assert_eq!(config.protocol, Protocol::HttpProtobuf);
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.schedule_delay, Duration::from_millis(5000));
        assert_eq!((config.max_queue, config.max_batch), (2048, 512));
        assert_eq!(config.sampler, Sampler::ParentBased(Root::AlwaysOn));
        assert!(config.headers.is_empty() && config.resource.is_empty());
    }

    #[test]
    fn headers_resource_service_and_batching_are_read() {
        let config = on(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20abc, x-tenant=a",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-only=traces"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-resource,deployment.environment=prod",
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1000"),
        ]);
        // the traces-specific variable wins over the general one
        assert_eq!(config.headers, [("x-only".to_owned(), "traces".to_owned())]);
        assert_eq!(config.timeout, Duration::from_millis(2500));
        assert_eq!(config.service_name, "from-resource");
        assert_eq!(
            config.resource,
            [("deployment.environment".to_owned(), "prod".to_owned())]
        );
        assert_eq!(config.schedule_delay, Duration::from_millis(200));
        assert_eq!((config.max_queue, config.max_batch), (100, 100));
        let config = on(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20abc"),
            ("OTEL_SERVICE_NAME", "ops-wasmfn"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored"),
        ]);
        assert_eq!(config.headers[0].1, "Bearer abc");
        assert_eq!(config.service_name, "ops-wasmfn");
        let json = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json");
        let config = on(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), json]);
        assert_eq!(config.protocol, Protocol::HttpJson);
    }

    #[test]
    fn what_cannot_work_is_an_error_that_says_what_to_change() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        for (pairs, expected) in [
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "http/protobuf or http/json",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "http://",
            ),
            (
                vec![endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")],
                "only otlp",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "key=value",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                "whole number",
            ),
            (
                vec![endpoint, ("OTEL_TRACES_SAMPLER", "sometimes")],
                "supported",
            ),
            (
                vec![
                    endpoint,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "ratio",
            ),
        ] {
            let error = read(&pairs).expect_err(expected);
            assert!(error.contains(expected), "{pairs:?}: {error}");
        }
    }

    #[test]
    fn samplers_decide_by_the_caller_or_the_trace_id() {
        let low = [0u8; 16];
        let mut high = [0u8; 16];
        high[8..].copy_from_slice(&[0xff; 8]);
        let parent_based = Sampler::ParentBased(Root::AlwaysOn);
        assert!(parent_based.keeps(&high, None));
        assert!(!parent_based.keeps(&high, Some(false)));
        assert!(Sampler::ParentBased(Root::AlwaysOff).keeps(&high, Some(true)));
        assert!(!Sampler::ParentBased(Root::AlwaysOff).keeps(&high, None));
        assert!(Sampler::AlwaysOn.keeps(&high, Some(false)));
        assert!(!Sampler::AlwaysOff.keeps(&low, Some(true)));
        let half = Sampler::Ratio(0.5);
        assert!(half.keeps(&low, None) && !half.keeps(&high, None));
        assert!(!Sampler::Ratio(0.0).keeps(&low, None));
        assert!(Sampler::ParentBased(Root::Ratio(0.5)).keeps(&high, Some(true)));
        assert!(!Sampler::ParentBased(Root::Ratio(0.5)).keeps(&high, None));
        let config = on(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]);
        assert_eq!(config.sampler, Sampler::ParentBased(Root::Ratio(0.25)));
    }
}
