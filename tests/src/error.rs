//! The harness's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while bringing up, driving or tearing down a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
    #[error("{what} exited early ({status}); last lines of {log}:\n{tail}")]
    ProcessExited {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("missing prerequisite: {0}")]
    Prerequisite(String),
    #[error("invalid JSON from {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Cluster(String),
}

/// Result with the harness's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
