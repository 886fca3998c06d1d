//! Scenario tests' side of the API server: a mocked client whose every request a scenario
//! script answers in order ([`ApiServer::answer`], checked by method and path), a context with
//! the default settings around it, and [`play`], which runs one reconcile against the script
//! within a time bound. A request the script does not expect fails the scenario, and so does one
//! it expects that never comes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde_json::{json, Value};

use crate::config::Config;
use crate::context::Context;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::store::Stores;
use crate::telemetry::Tracer;

/// How long a scenario may take before it counts as stuck.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one reconcile of `object` by `reconcile` while `script` plays the API server;
/// returns the reconcile's action and what the script returned.
pub async fn play<K, R, RF, S, F, T>(reconcile: R, object: K, script: S) -> (Action, T)
where
    R: FnOnce(Arc<K>, Arc<Context>) -> RF,
    RF: Future<Output = Result<Action>>,
    S: FnOnce(ApiServer) -> F,
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    play_with(|_| {}, reconcile, object, script).await
}

/// [`play`] with the test context's settings changed by `settings` first.
pub async fn play_with<K, R, RF, S, F, T>(
    settings: impl FnOnce(&mut Config),
    reconcile: R,
    object: K,
    script: S,
) -> (Action, T)
where
    R: FnOnce(Arc<K>, Arc<Context>) -> RF,
    RF: Future<Output = Result<Action>>,
    S: FnOnce(ApiServer) -> F,
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Arc::new(test_context_with(Client::new(service, "default"), settings));
    let scenario = async move {
        let answering = tokio::spawn(script(ApiServer(handle)));
        // The reconcile holds the last handles on the client: once it returns, the script's
        // `nothing_more` sees the client closed.
        let action = reconcile(Arc::new(object), ctx).await;
        let seen = match answering.await {
            Ok(seen) => seen,
            Err(failed) => std::panic::resume_unwind(failed.into_panic()),
        };
        (action.expect("the reconcile succeeded"), seen)
    };
    tokio::time::timeout(SCENARIO_TIMEOUT, scenario)
        .await
        .expect("the scenario finished in time")
}

/// The API server's side of a scenario.
#[allow(missing_debug_implementations)] // the mock handle has no Debug
pub struct ApiServer(tower_test::mock::Handle<Request<Body>, Response<Body>>);

/// What the API server answers a request with.
#[derive(Debug)]
pub enum Answer {
    /// The object.
    Object(Value),
    /// A list of these items.
    List(Vec<Value>),
    /// The request's own body, as a create or replace returns what it wrote.
    Echo,
    /// Plain text (a log).
    Text(String),
    /// 404 Not Found.
    NotFound,
    /// 409 Conflict: the write's resourceVersion is not the object's any more.
    Conflict,
}

/// A request the API server saw.
#[derive(Debug)]
pub struct Seen {
    /// The query string.
    pub query: String,
    /// The body as JSON (null when empty).
    pub body: Value,
}

impl ApiServer {
    /// Takes the next request, checks it is `expected` ("METHOD /path") and answers it.
    pub async fn answer(&mut self, expected: &str, answer: Answer) -> Seen {
        let Some((request, respond)) = self.0.next_request().await else {
            panic!("the reconcile ended without {expected}");
        };
        let (parts, body) = request.into_parts();
        assert_eq!(format!("{} {}", parts.method, parts.uri.path()), expected);
        let bytes = body.collect_bytes().await.expect("a readable request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        let (status, text) = match answer {
            Answer::Object(object) => (StatusCode::OK, object.to_string()),
            Answer::List(items) => {
                let list =
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items});
                (StatusCode::OK, list.to_string())
            }
            Answer::Echo => (StatusCode::OK, body.to_string()),
            Answer::Text(text) => (StatusCode::OK, text),
            Answer::NotFound => failure(StatusCode::NOT_FOUND, "NotFound"),
            Answer::Conflict => failure(StatusCode::CONFLICT, "Conflict"),
        };
        let response = Response::builder()
            .status(status)
            .body(Body::from(text.into_bytes()))
            .expect("a response");
        respond.send_response(response);
        Seen {
            query: parts.uri.query().unwrap_or_default().to_owned(),
            body,
        }
    }

    /// Checks that the reconcile made no further request before it returned.
    pub async fn nothing_more(mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!(
                "an unexpected request: {} {}",
                request.method(),
                request.uri()
            );
        }
    }
}

/// A failure as the API server reports it: a `Status` object with the code and reason.
fn failure(code: StatusCode, reason: &str) -> (StatusCode, String) {
    let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
        "reason": reason, "code": code.as_u16(), "message": reason});
    (code, status.to_string())
}

/// The builder image of scenarios: named by digest, so nothing is looked up.
pub const BUILDER: &str =
    "wasmfn.local/builder@sha256:0000000000000000000000000000000000000000000000000000000000000b1d";

/// A context with the default settings (the builder by digest), no registry, no tracing, and
/// leadership held.
pub fn test_context(client: Client) -> Context {
    test_context_with(client, |_| {})
}

/// [`test_context`] with its settings changed by `settings`.
pub fn test_context_with(client: Client, settings: impl FnOnce(&mut Config)) -> Context {
    let mut config = default_config();
    config.builder_image = BUILDER.to_owned();
    settings(&mut config);
    Context::new(
        client.clone(),
        config,
        Stores::new(client, None),
        Arc::new(Metrics::default()),
        Tracer::disabled(),
        "scenario",
    )
}

pub fn default_config() -> Config {
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        config: Config,
    }
    Flags::try_parse_from(["wasmfn-operator"])
        .expect("the defaults parse")
        .config
}

/// `object` as the API server would send it.
pub fn json_of<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("serialisable")
}
