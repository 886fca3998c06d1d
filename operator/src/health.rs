//! `/healthz`, `/readyz` and `/metrics`, served by axum.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::metrics::{self, Metrics};

/// What the endpoints report.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the CRDs were found and the replica is leading or standing by.
    pub ready: AtomicBool,
    /// Set while this replica leads.
    pub leading: AtomicBool,
}

#[derive(Clone)]
struct Endpoints {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

fn text(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, PLAIN_TEXT)], body).into_response()
}

async fn alive() -> Response {
    text(StatusCode::OK, "ok\n".to_owned())
}

async fn ready(State(endpoints): State<Endpoints>) -> Response {
    let health = &endpoints.health;
    if !health.ready.load(Ordering::Relaxed) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: checking CRDs\n".to_owned(),
        );
    }
    let role = if health.leading.load(Ordering::Relaxed) {
        "leader"
    } else {
        "standby"
    };
    text(StatusCode::OK, format!("ok ({role})\n"))
}

async fn scrape(State(endpoints): State<Endpoints>) -> Response {
    let leading = endpoints.health.leading.load(Ordering::Relaxed);
    endpoints.metrics.leader.set(i64::from(leading));
    let body = endpoints.metrics.render();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n".to_owned())
}

/// The endpoints' routes.
fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(alive))
        .route("/livez", get(alive))
        .route("/readyz", get(ready))
        .route("/metrics", get(scrape))
        .fallback(not_found)
        .with_state(Endpoints { health, metrics })
}

/// Binds the endpoint (failing early, before the operator does anything else).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(Error::io(format!("listen on {addr}")))?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    Ok(listener)
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, health: Arc<Health>, metrics: Arc<Metrics>) {
    if let Err(error) = axum::serve(listener, router(health, metrics)).await {
        warn!(%error, "the health and metrics endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(health: Arc<Health>) -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(serve(listener, health, Arc::new(Metrics::default())));
        addr
    }

    /// Sends `pieces` as one request, pausing between them; the whole response.
    async fn exchange(addr: SocketAddr, pieces: &[&str]) -> String {
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for piece in pieces {
            client.write_all(piece.as_bytes()).await.expect("write");
            client.flush().await.expect("flush");
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        let mut response = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_string(&mut response),
        )
        .await
        .expect("the server closes the connection")
        .expect("response");
        response
    }

    /// `GET path` over HTTP/1.0, as the end-to-end harness and simple probes send it.
    async fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let request = format!("GET {path} HTTP/1.0\r\nhost: x\r\n\r\n");
        let response = exchange(addr, &[&request]).await;
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        (head.to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn probes_answer_by_state() {
        let health = Arc::new(Health::default());
        let addr = start(health.clone()).await;
        let (head, body) = get(addr, "/healthz").await;
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert_eq!(body, "ok\n");
        assert!(get(addr, "/livez").await.0.contains(" 200 OK\r\n"));
        let (head, body) = get(addr, "/readyz").await;
        assert!(head.contains(" 503 Service Unavailable\r\n"), "{head}");
        assert_eq!(body, "not ready: checking CRDs\n");
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(addr, "/readyz").await.1, "ok (standby)\n");
        health.leading.store(true, Ordering::Relaxed);
        assert_eq!(get(addr, "/readyz").await.1, "ok (leader)\n");
        let (head, body) = get(addr, "/nope").await;
        assert!(head.contains(" 404 Not Found\r\n"), "{head}");
        assert_eq!(body, "not found\n");
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics_and_say_whether_this_replica_leads() {
        let health = Arc::new(Health::default());
        let addr = start(health.clone()).await;
        let (head, body) = get(addr, "/metrics").await;
        assert!(head.contains(" 200 OK\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {}\r\n", metrics::CONTENT_TYPE)),
            "{head}"
        );
        assert!(body.lines().any(|l| l == "wasmfn_leader 0"), "{body}");
        assert!(body.contains("# TYPE wasmfn_leader gauge\n"));
        assert!(body.ends_with("# EOF\n"));
        health.leading.store(true, Ordering::Relaxed);
        let (_, body) = get(addr, "/metrics").await;
        assert!(body.lines().any(|l| l == "wasmfn_leader 1"), "{body}");
    }

    #[tokio::test]
    async fn a_request_sent_in_pieces_is_answered() {
        let health = Arc::new(Health::default());
        health.ready.store(true, Ordering::Relaxed);
        let addr = start(health).await;
        let response = exchange(
            addr,
            &[
                "GET /re",
                "adyz HT",
                "TP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            ],
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("ok (standby)\n"), "{response}");
    }
}
