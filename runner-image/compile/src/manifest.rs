//! The compile manifest (`manifest.json` beside the artifact): what was built, from what, with
//! which tools, how big and how long. The operator verifies the artifact against `artifact.digest`
//! and reads the rest into `WasmFunction.status`.

use serde::{Deserialize, Serialize};

use crate::options::BuildOptions;
use crate::toolchain::ToolchainIdentity;

/// `apiVersion` of the manifest.
pub const API_VERSION: &str = "wasmfn.dev/v1alpha1";
/// `kind` of the manifest.
pub const KIND: &str = "CompileManifest";

/// One file of the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactFile {
    /// File name inside the artifact directory.
    pub file: String,
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// `application/wasm`, `text/x-python`, `text/javascript` or
    /// `application/vnd.wasmedge.aot` (the AOT shared object).
    pub media_type: String,
}

/// Whether the artifact came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// Served from the cache; no toolchain ran.
    Hit,
    /// Compiled now and stored.
    Miss,
    /// The cache is off.
    Disabled,
}

/// Sizes and durations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompileTimings {
    /// Time spent in toolchains when the artifact was built (kept on cache hits).
    pub compile_ms: f64,
    /// Time of this invocation, end to end.
    pub total_ms: f64,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// The language's canonical name.
    pub language: String,
    /// The artifact: the module, or the checked script for interpreted languages.
    pub artifact: ArtifactFile,
    /// The AOT-compiled module, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aot: Option<ArtifactFile>,
    /// `sha256:<hex>` content address of the inputs.
    pub cache_key: String,
    /// Hit, miss or disabled.
    pub cache: CacheOutcome,
    /// Every tool and its exact version.
    pub toolchain: Vec<ToolchainIdentity>,
    /// The build options.
    pub options: BuildOptions,
    /// Files in the source tree.
    pub source_files: usize,
    /// Bytes of the (normalised) source tree.
    pub source_bytes: u64,
    /// Toolchain processes (and in-process validations) this invocation started.
    pub toolchain_invocations: u32,
    /// Warnings kept from a successful compile.
    pub warnings: usize,
    /// Durations.
    pub timings: CompileTimings,
}

impl Manifest {
    /// Compact JSON (fits a Kubernetes termination message for any realistic toolchain list).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Pretty JSON for `manifest.json`.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_camel_case_fields() {
        let manifest = Manifest {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            language: "rust".into(),
            artifact: ArtifactFile {
                file: "module.wasm".into(),
                digest: "sha256:00".into(),
                size: 3,
                media_type: "application/wasm".into(),
            },
            aot: None,
            cache_key: "sha256:11".into(),
            cache: CacheOutcome::Miss,
            toolchain: vec![ToolchainIdentity {
                name: "rustc".into(),
                version: "rustc 1.85.1".into(),
            }],
            options: BuildOptions::default(),
            source_files: 1,
            source_bytes: 10,
            toolchain_invocations: 1,
            warnings: 0,
            timings: CompileTimings {
                compile_ms: 1.5,
                total_ms: 2.0,
            },
        };
        let json = manifest.to_json();
        assert!(json.contains("\"cacheKey\":\"sha256:11\""), "{json}");
        assert!(
            json.contains("\"mediaType\":\"application/wasm\""),
            "{json}"
        );
        assert!(json.contains("\"cache\":\"miss\""), "{json}");
        assert!(!json.contains("\"aot\":{"), "{json}");
        let back: Manifest = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, manifest);
    }
}
