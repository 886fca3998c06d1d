//! What containerd has actually loaded, asked through the CRI — the same API the kubelet uses.
//! A config file that names our handler proves nothing until containerd has been restarted with
//! it (a restart command can exit 0 without restarting anything), so the installer labels a node
//! only after `RuntimeService/Status` (verbose) shows the handler with our runtime type.
//!
//! The two messages are declared here with `prost` rather than generated from the CRI's
//! `api.proto`: only `verbose` (field 1 of the request) and `info` (field 2 of the response,
//! a string map whose `config` entry is the CRI plugin's configuration as JSON) are read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::Value;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Endpoint, Uri};

/// The CRI's v1 status call (containerd 1.5 and later).
const STATUS_METHOD: &str = "/runtime.v1.RuntimeService/Status";

/// How long one status call may take before it counts as unanswered.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {
    #[prost(bool, tag = "1")]
    verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(map = "string, string", tag = "2")]
    info: HashMap<String, String>,
}

/// What the CRI says about one runtime handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerState {
    /// Loaded with the expected runtime type.
    Loaded,
    /// containerd runs without it (it has not reread its config since the handler was added).
    Missing,
    /// Loaded, but with another runtime type (a config older than the one on disk, or another
    /// project's handler of the same name).
    OtherType(String),
}

/// Reads the handler's state from the `config` entry of a verbose CRI status: the runtimes map
/// sits at `containerd.runtimes` (containerd 1.x); any object named `runtimes` that holds the
/// handler is accepted, so later layouts of the same config are read too.
pub fn handler_state(
    config_json: &str,
    handler: &str,
    runtime_type: &str,
) -> Result<HandlerState, String> {
    let config: Value = serde_json::from_str(config_json)
        .map_err(|e| format!("the CRI status's config is not JSON: {e}"))?;
    let Some(entry) = find_runtime(&config, handler) else {
        return Ok(HandlerState::Missing);
    };
    let loaded_type = entry
        .get("runtimeType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(if loaded_type == runtime_type {
        HandlerState::Loaded
    } else {
        HandlerState::OtherType(loaded_type.to_string())
    })
}

fn find_runtime<'a>(value: &'a Value, handler: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    if let Some(entry) = object
        .get("runtimes")
        .and_then(|runtimes| runtimes.get(handler))
    {
        return Some(entry);
    }
    object
        .values()
        .find_map(|child| find_runtime(child, handler))
}

/// Asks the containerd behind `socket` for its CRI status and returns the `config` entry.
pub async fn status_config(socket: &Path) -> Result<String, String> {
    let call = async {
        let socket: PathBuf = socket.to_path_buf();
        // The URI is required by the API but unused: every connection goes to the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    tokio::net::UnixStream::connect(socket)
                        .await
                        .map(TokioIo::new)
                }
            }))
            .await
            .map_err(|e| format!("connect: {}", error_chain(&e)))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| format!("connect: {}", error_chain(&e)))?;
        let response: tonic::Response<StatusResponse> = grpc
            .unary(
                tonic::Request::new(StatusRequest { verbose: true }),
                PathAndQuery::from_static(STATUS_METHOD),
                tonic::codec::ProstCodec::default(),
            )
            .await
            .map_err(|status| format!("{}: {}", status.code(), status.message()))?;
        let mut info = response.into_inner().info;
        info.remove("config")
            .ok_or_else(|| "the CRI status has no config entry".to_string())
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {}s", CALL_TIMEOUT.as_secs()))?
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real containerd 1.7 `RuntimeService/Status` (verbose) answer.
    const CONFIG_WITH_HANDLER: &str = r#"{
      "containerd": {
        "snapshotter": "overlayfs",
        "defaultRuntimeName": "runc",
        "runtimes": {
          "runc": {"runtimeType": "io.containerd.runc.v2", "runtimePath": ""},
          "wasmedge": {"runtimeType": "io.containerd.wasmfn.v1",
                       "runtimePath": "/opt/wasmfn/bin/containerd-shim-wasmfn-v1"}
        }
      },
      "cni": {"binDir": "/opt/cni/bin"}
    }"#;

    #[test]
    fn a_handler_loaded_with_our_runtime_type_is_loaded() {
        assert_eq!(
            handler_state(CONFIG_WITH_HANDLER, "wasmedge", "io.containerd.wasmfn.v1"),
            Ok(HandlerState::Loaded)
        );
    }

    #[test]
    fn a_handler_containerd_has_not_loaded_is_missing() {
        assert_eq!(
            handler_state(CONFIG_WITH_HANDLER, "wasmfn", "io.containerd.wasmfn.v1"),
            Ok(HandlerState::Missing)
        );
    }

    #[test]
    fn a_handler_of_another_runtime_type_is_named() {
        assert_eq!(
            handler_state(CONFIG_WITH_HANDLER, "runc", "io.containerd.wasmfn.v1"),
            Ok(HandlerState::OtherType("io.containerd.runc.v2".into()))
        );
    }

    #[test]
    fn runtimes_under_another_plugin_layout_are_found() {
        let config = r#"{"runtime": {"containerd": {"runtimes": {
            "wasmedge": {"runtimeType": "io.containerd.wasmfn.v1"}}}}}"#;
        assert_eq!(
            handler_state(config, "wasmedge", "io.containerd.wasmfn.v1"),
            Ok(HandlerState::Loaded)
        );
    }

    #[test]
    fn a_config_that_is_not_json_is_an_error() {
        let result = handler_state("{", "wasmedge", "io.containerd.wasmfn.v1");
        assert!(
            matches!(&result, Err(error) if error.contains("not JSON")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_reported_as_a_connect_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = status_config(&dir.path().join("absent.sock")).await;
        assert!(
            matches!(&result, Err(error) if error.starts_with("connect: ")),
            "{result:?}"
        );
    }
}
