//! How the operator hands runs to the warm agent (`wasmfn agent`) and gets their results back.
//!
//! The operator is the only party that talks to an agent and the only writer of execution
//! status: it sends a [`RunAssignment`] and records the [`ResultDocument`] the agent answers
//! with. The agent holds no Kubernetes credentials; what stops anyone else from submitting work
//! is mutual TLS: both ends present certificates signed by the CA the chart generates, and the
//! agent accepts only client certificates from that CA ([`tls`]).
//!
//! The transport is HTTP/2 over that TLS connection, one connection per agent, many runs
//! multiplexed on it ([`client::AgentClient`]). Routes:
//!
//! - `POST /v1/runs` with a [`RunAssignment`]: the run's result document (200), or 409 with
//!   [`AgentRefusal`] reason [`MODULE_MISSING`] when the agent does not hold the module yet;
//! - `PUT /v1/modules/<digest>` with the module's bytes: verified, refused when it carries
//!   native code, AOT-compiled once and cached (204);
//! - `PUT /v1/scripts/<digest>` with a Python or JavaScript script's bytes and its media type as
//!   `Content-Type`: verified and kept for the interpreters the agent ships (204);
//! - `GET /v1/status`: [`AgentStatus`] (capacity, in-flight, queued, cache);
//! - `GET /metrics`: Prometheus text.

pub mod client;
pub mod tls;

use serde::{Deserialize, Serialize};
pub use wasmfn_result::run_settings::RunSettings;
pub use wasmfn_result::ResultDocument;

/// The agent's port.
pub const PORT: u16 = 8443;
/// The name in the agents' server certificate, which the operator checks whatever address it
/// dials (agents are reached by pod IP, which no certificate made at install time can name).
pub const SERVER_NAME: &str = "wasmfn-agent";
/// [`AgentRefusal::reason`] when the agent lacks the module: send it, then the run again.
pub const MODULE_MISSING: &str = "ModuleMissing";
/// Route for runs.
pub const RUNS_PATH: &str = "/v1/runs";
/// Route prefix for modules (the digest follows).
pub const MODULES_PATH: &str = "/v1/modules/";
/// Route prefix for scripts (the digest follows).
pub const SCRIPTS_PATH: &str = "/v1/scripts/";
/// Route for the agent's status.
pub const STATUS_PATH: &str = "/v1/status";
/// Largest request body the agent reads (a module at its largest plus slack).
pub const MAX_BODY_BYTES: usize = 300 << 20;

/// One attempt of one execution, as the operator hands it to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunAssignment {
    /// The execution's namespace (for the agent's logs and metrics only).
    pub namespace: String,
    /// The execution's name.
    pub execution: String,
    /// The execution's uid.
    pub uid: String,
    /// The attempt number; the agent runs `(uid, attempt)` at most once at a time.
    pub attempt: i32,
    /// `sha256:<hex>` of the module (or script).
    pub module_digest: String,
    /// The artifact's media type when it is a script (`text/x-python`, `text/javascript`),
    /// which the agent runs under its interpreter; absent for a WebAssembly module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_media_type: Option<String>,
    /// The run's settings (the run contract; `stdinFile` is not used here).
    pub settings: RunSettings,
    /// The guest's stdin, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_base64: Option<String>,
}

/// Why an agent refused a request (any status other than 200/204).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRefusal {
    /// Machine-readable reason, e.g. [`MODULE_MISSING`].
    pub reason: String,
    /// What a person should know.
    pub message: String,
}

/// What an agent reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Runs it executes at once.
    pub capacity: u32,
    /// Runs executing now.
    pub in_flight: u32,
    /// Runs waiting for a slot.
    pub queued: u32,
    /// Modules in its cache.
    pub cached_modules: u32,
    /// Bytes its cache takes.
    pub cache_bytes: u64,
}

/// Errors of the protocol's own operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM file could not be read or parsed.
    #[error("{what}: {message}")]
    Pem {
        /// Which file.
        what: String,
        /// The cause.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The agent could not be reached, or the connection broke (the run's fate is unknown).
    #[error("agent {address}: {message}")]
    Connection {
        /// The agent's address.
        address: String,
        /// The cause.
        message: String,
        /// No connection was made (TCP connect, TLS or HTTP/2 handshake failed, or timed out):
        /// nothing was sent, so the agent cannot have started the run.
        unreached: bool,
    },
    /// The agent answered with a refusal.
    #[error("agent refused ({}): {}", .0.reason, .0.message)]
    Refused(AgentRefusal),
    /// The agent's answer did not parse.
    #[error("agent answer: {0}")]
    BadAnswer(String),
}

/// The protocol's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_round_trips_through_json_with_every_setting() {
        let assignment = RunAssignment {
            namespace: "team-a".into(),
            execution: "order-1".into(),
            uid: "0f0e".into(),
            attempt: 2,
            module_digest: format!("sha256:{}", "ab".repeat(32)),
            script_media_type: Some("text/x-python".into()),
            settings: RunSettings::every_field_set(),
            stdin_base64: Some("aGk=".into()),
        };
        let json = serde_json::to_string(&assignment).unwrap_or_default();
        let back: RunAssignment = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, assignment);
        assert!(json.contains("\"moduleDigest\""), "{json}");
        assert!(json.contains("\"scriptMediaType\""), "{json}");
        // An assignment from an operator that knows nothing of scripts is a module's.
        let older = json.replace("\"scriptMediaType\":\"text/x-python\",", "");
        let back: RunAssignment = serde_json::from_str(&older).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.script_media_type, None);
    }
}
