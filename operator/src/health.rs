//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1 (probes and Prometheus only need a
//! status line and a body).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What the endpoints report.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the CRDs were found and the replica is leading or standing by.
    pub ready: AtomicBool,
    /// Set while this replica leads.
    pub leading: AtomicBool,
}

/// The response for a request line's path. Pure.
pub fn respond(path: &str, health: &Health, metrics: &Metrics) -> (u16, String) {
    match path {
        "/healthz" | "/livez" => (200, "ok\n".to_owned()),
        "/readyz" if health.ready.load(Ordering::Relaxed) => {
            let role = if health.leading.load(Ordering::Relaxed) {
                "leader"
            } else {
                "standby"
            };
            (200, format!("ok ({role})\n"))
        }
        "/readyz" => (503, "not ready: checking CRDs\n".to_owned()),
        "/metrics" => {
            let leading = u8::from(health.leading.load(Ordering::Relaxed));
            (
                200,
                format!(
                    "# TYPE wasmfn_leader gauge\nwasmfn_leader {leading}\n{}",
                    metrics.render()
                ),
            )
        }
        _ => (404, "not found\n".to_owned()),
    }
}

/// Binds the endpoint (failing early, before the operator does anything else).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(Error::io(format!("listen on {addr}")))?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    Ok(listener)
}

/// Reads until the request line is complete (a client may send it in pieces), within a
/// bounded size and time; `None` when the client sends none.
async fn read_request_line(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buffer = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let reading = async {
        while !buffer.contains(&b'\n') && buffer.len() < 8192 {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reading).await;
    let end = buffer.iter().position(|b| *b == b'\n')?;
    Some(
        String::from_utf8_lossy(&buffer[..end])
            .trim_end()
            .to_owned(),
    )
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, health: Arc<Health>, metrics: Arc<Metrics>) {
    loop {
        let (mut socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accept failed");
                continue;
            }
        };
        let health = health.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let Some(line) = read_request_line(&mut socket).await else {
                return;
            };
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (code, body) = respond(path, &health, &metrics);
            let reason = match code {
                200 => "OK",
                404 => "Not Found",
                _ => "Service Unavailable",
            };
            let response = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_answer_by_state() {
        let health = Health::default();
        let metrics = Metrics::default();
        assert_eq!(respond("/healthz", &health, &metrics).0, 200);
        assert_eq!(respond("/readyz", &health, &metrics).0, 503);
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(
            respond("/readyz", &health, &metrics),
            (200, "ok (standby)\n".to_owned())
        );
        health.leading.store(true, Ordering::Relaxed);
        assert_eq!(
            respond("/readyz", &health, &metrics),
            (200, "ok (leader)\n".to_owned())
        );
        assert!(respond("/metrics", &health, &metrics)
            .1
            .contains("wasmfn_leader 1"));
        assert_eq!(respond("/nope", &health, &metrics).0, 404);
    }

    #[tokio::test]
    async fn a_request_sent_in_pieces_is_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let health = Arc::new(Health::default());
        health.ready.store(true, Ordering::Relaxed);
        tokio::spawn(serve(listener, health, Arc::new(Metrics::default())));
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for piece in ["GET /re", "adyz HT", "TP/1.1\r\nhost: x\r\n\r\n"] {
            client.write_all(piece.as_bytes()).await.expect("write");
            client.flush().await.expect("flush");
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        let mut response = String::new();
        client
            .read_to_string(&mut response)
            .await
            .expect("response");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("ok (standby)\n"), "{response}");
    }
}
