//! The operator's side: one HTTP/2 connection per agent over mutual TLS, opened on first use
//! and again after it breaks; concurrent runs share it as streams.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::sync::Mutex;

use crate::{
    AgentRefusal, AgentStatus, Error, ResultDocument, RunAssignment, MODULES_PATH, RUNS_PATH,
    SCRIPTS_PATH, SERVER_NAME, STATUS_PATH,
};

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A client of one agent.
pub struct AgentClient {
    address: String,
    tls: Arc<ClientConfig>,
    sender: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// What a run request came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAnswer {
    /// The run happened: its result document.
    Ran(Box<ResultDocument>),
    /// The agent lacks the module; send it with [`AgentClient::put_module`] and ask again.
    ModuleMissing,
}

impl AgentClient {
    /// A client for the agent at `address` (`ip:port`); nothing is dialled yet.
    pub fn new(address: String, tls: Arc<ClientConfig>) -> Self {
        AgentClient {
            address,
            tls,
            sender: Mutex::new(None),
        }
    }

    /// The agent's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Hands a run to the agent and waits for its result.
    pub async fn run(&self, assignment: &RunAssignment) -> Result<RunAnswer, Error> {
        let body = serde_json::to_vec(assignment).map_err(|e| Error::BadAnswer(e.to_string()))?;
        let (status, body) = self.send(Method::POST, RUNS_PATH, body).await?;
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map(|document| RunAnswer::Ran(Box::new(document)))
                .map_err(|e| Error::BadAnswer(format!("result document: {e}"))),
            _ => match refusal(status, &body) {
                refusal if refusal.reason == crate::MODULE_MISSING => Ok(RunAnswer::ModuleMissing),
                refusal => Err(Error::Refused(refusal)),
            },
        }
    }

    /// Gives the agent a module's bytes (it verifies them against `digest`).
    pub async fn put_module(&self, digest: &str, bytes: Vec<u8>) -> Result<(), Error> {
        let path = format!("{MODULES_PATH}{digest}");
        let (status, body) = self.send(Method::PUT, &path, bytes).await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(Error::Refused(refusal(status, &body))),
        }
    }

    /// Gives the agent a script's bytes and media type (it verifies them against `digest`).
    pub async fn put_script(
        &self,
        digest: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), Error> {
        let path = format!("{SCRIPTS_PATH}{digest}");
        let (status, body) = self
            .send_typed(Method::PUT, &path, media_type, bytes)
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(Error::Refused(refusal(status, &body))),
        }
    }

    /// The agent's capacity and load.
    pub async fn status(&self) -> Result<AgentStatus, Error> {
        let (status, body) = self.send(Method::GET, STATUS_PATH, Vec::new()).await?;
        if status != StatusCode::OK {
            return Err(Error::Refused(refusal(status, &body)));
        }
        serde_json::from_slice(&body).map_err(|e| Error::BadAnswer(format!("status: {e}")))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), Error> {
        self.send_typed(method, path, "application/json", body)
            .await
    }

    async fn send_typed(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let mut sender = self.sender().await?;
        let request = Request::builder()
            .method(method)
            .uri(format!("https://{SERVER_NAME}{path}"))
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.broken(e))?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                // The connection is unusable: forget it so the next request dials again.
                self.sender.lock().await.take();
                return Err(self.broken(error));
            }
        };
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.broken(e))?
            .to_bytes();
        Ok((status, body))
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let mut slot = self.sender.lock().await;
        if let Some(sender) = slot.as_ref() {
            if !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| self.unreached("connecting timed out"))??;
        *slot = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let tcp = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| self.unreached(e))?;
        tcp.set_nodelay(true).map_err(|e| self.unreached(e))?;
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| self.unreached(e))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| self.unreached(format!("TLS: {e}")))?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| self.unreached(e))?;
        tokio::spawn(async move {
            // Ends when the agent goes away; the next request notices and dials again.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// The connection broke while a request was on it: it may have reached the agent.
    fn broken(&self, error: impl std::fmt::Display) -> Error {
        Error::Connection {
            address: self.address.clone(),
            message: error.to_string(),
            unreached: false,
        }
    }

    /// No connection could be made: nothing reached the agent.
    fn unreached(&self, error: impl std::fmt::Display) -> Error {
        Error::Connection {
            address: self.address.clone(),
            message: error.to_string(),
            unreached: true,
        }
    }
}

fn refusal(status: StatusCode, body: &[u8]) -> AgentRefusal {
    serde_json::from_slice(body).unwrap_or_else(|_| AgentRefusal {
        reason: format!("Http{}", status.as_u16()),
        message: String::from_utf8_lossy(body).into_owned(),
    })
}
