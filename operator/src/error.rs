//! The operator's one error type.

use std::time::Duration;

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Talking to the OCI registry failed.
    #[error("OCI registry {registry}: {message}")]
    Registry {
        /// The registry.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// A stored artifact failed its checks.
    #[error("artifact: {0}")]
    Artifact(#[from] wasmfn_artifact::Error),
    /// What a compile Job produced could not be used (not the user's fault).
    #[error("compile output of Job {job}: {message}")]
    CompileOutput {
        /// The Job.
        job: String,
        /// What was wrong.
        message: String,
    },
    /// An object the operator needs is missing or malformed.
    #[error("{0}")]
    Invariant(String),
    /// The CRDs are not installed.
    #[error("the wasmfn CRDs are not installed: run `kubectl apply --server-side -f crds/` (missing {0})")]
    MissingCrd(String),
    /// Configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Serialising or parsing JSON/YAML.
    #[error("serialisation: {0}")]
    Serde(String),
    /// File or socket I/O.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The deny-egress NetworkPolicy of a namespace could not be read or written.
    #[error("NetworkPolicy wasmfn-deny-egress in namespace {namespace}: {source}")]
    NetworkPolicy {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Leadership was lost; the process stops so it can never act beside the new leader.
    #[error("lost the leader lease after {0:?}")]
    LostLeadership(Duration),
    /// The Lease was not renewed recently enough to be sure this replica still leads, so a
    /// result is not written (the next leader collects or retries the attempt).
    #[error("this replica cannot confirm it still holds the leader Lease; not writing results")]
    NotLeading,
    /// A status write was refused because the execution changed after it was read; the
    /// reconcile decides again on a fresh read.
    #[error("the execution changed after it was read; deciding again")]
    StaleRead,
}

impl Error {
    /// A fixed, low-cardinality name for metrics and event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Registry { .. } => "registry",
            Error::Artifact(_) => "artifact",
            Error::CompileOutput { .. } => "compile_output",
            Error::Invariant(_) => "invariant",
            Error::MissingCrd(_) => "missing_crd",
            Error::Config(_) => "config",
            Error::Serde(_) => "serde",
            Error::Io { .. } => "io",
            Error::NetworkPolicy { .. } => "network_policy",
            Error::LostLeadership(_) => "lost_leadership",
            Error::NotLeading => "not_leading",
            Error::StaleRead => "stale_read",
        }
    }

    /// Whether trying again later may succeed: the registry or the API server did not answer,
    /// was overloaded or failed on its side. A refusal that will be the same next time (a bad
    /// artifact, a missing object, a forbidden call, the configuration) is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(status)) => {
                status.code == 429 || status.code == 409 || status.code >= 500
            }
            Error::Kube(_) | Error::Io { .. } | Error::NetworkPolicy { .. } => true,
            // Registry errors carry the client's words only; a digest that does not match or a
            // layer count that is wrong is said by the store itself.
            Error::Registry { message, .. } => {
                !(message.contains(", expected ") || message.starts_with("bad reference"))
            }
            Error::Artifact(_)
            | Error::CompileOutput { .. }
            | Error::Invariant(_)
            | Error::MissingCrd(_)
            | Error::Config(_)
            | Error::Serde(_)
            | Error::LostLeadership(_)
            | Error::NotLeading
            | Error::StaleRead => false,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::Serde(error.to_string())
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        Error::Kube(kube::Error::Api(
            kube::core::Status::failure("m", "r")
                .with_code(code)
                .boxed(),
        ))
    }

    fn registry(message: &str) -> Error {
        Error::Registry {
            registry: "r:5000".into(),
            message: message.into(),
        }
    }

    #[test]
    fn an_unanswered_overloaded_or_failing_server_is_transient_and_a_refusal_is_not() {
        for transient in [
            api(500),
            api(503),
            api(429),
            api(409),
            registry("pull r:5000/m@sha256:ab: error sending request: connection refused"),
            Error::io("reading")(std::io::Error::other("reset")),
        ] {
            assert!(transient.is_transient(), "{transient}");
        }
        for lasting in [
            api(403),
            api(404),
            api(422),
            registry("r:5000/m@sha256:ab holds sha256:cd, expected sha256:ab"),
            registry("r:5000/m has 2 Wasm layers, expected one"),
            registry("bad reference: invalid"),
            Error::Config("the OCI store is not configured".into()),
            Error::Invariant("x".into()),
        ] {
            assert!(!lasting.is_transient(), "{lasting}");
        }
    }
}
