//! The parts of the WasmFunction / WasmExecution manifests `wasmfn run` needs. Field names
//! follow the API (ARCHITECTURE.md §4) so the same YAML applies to a cluster; fields this
//! command does not use are ignored.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

const API_VERSION: &str = "wasmfn.dev/v1alpha1";

/// A Kubernetes-style object with a spec.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object<S> {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    spec: S,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
}

/// `WasmFunction.spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionSpec {
    /// Source language (`wat`, `wasm`, `python`, `javascript`, …).
    pub(crate) language: String,
    /// Where the source is.
    pub(crate) source: Source,
    /// Export to call; `_start` (a WASI command) when absent.
    #[serde(default)]
    pub(crate) entrypoint: Option<String>,
    /// Defaults for executions.
    #[serde(default)]
    pub(crate) defaults: ExecutionDefaults,
}

/// `WasmFunction.spec.source`: exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Source {
    /// Inline source text.
    #[serde(default)]
    pub(crate) code: Option<String>,
    /// A prebuilt module, base64.
    #[serde(default)]
    pub(crate) base64: Option<String>,
    /// References resolved only in a cluster.
    #[serde(default)]
    pub(crate) config_map_ref: Option<serde_yaml::Value>,
    #[serde(default)]
    pub(crate) url: Option<String>,
    #[serde(default)]
    pub(crate) oci: Option<String>,
}

/// `WasmFunction.spec.defaults`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecutionDefaults {
    #[serde(default)]
    pub(crate) timeout: Option<String>,
    #[serde(default)]
    pub(crate) memory_limit: Option<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
}

/// `WasmExecution.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecutionSpec {
    #[serde(default)]
    pub(crate) args: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) stdin: Option<String>,
    /// Structured input, passed to the guest as JSON on stdin.
    #[serde(default)]
    pub(crate) input: Option<serde_yaml::Value>,
    #[serde(default)]
    pub(crate) timeout: Option<String>,
    #[serde(default)]
    pub(crate) memory_limit: Option<String>,
    #[serde(default)]
    pub(crate) max_output_bytes: Option<u64>,
}

/// A parsed WasmFunction.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub(crate) name: String,
    pub(crate) spec: FunctionSpec,
}

fn parse_object<S: serde::de::DeserializeOwned>(text: &str, kind: &str) -> Result<(String, S)> {
    let object: Object<S> =
        serde_yaml::from_str(text).with_context(|| format!("not a valid {kind} manifest"))?;
    if object.api_version != API_VERSION || object.kind != kind {
        bail!(
            "expected apiVersion {API_VERSION} kind {kind}, got {} {}",
            object.api_version,
            object.kind
        );
    }
    Ok((object.metadata.name, object.spec))
}

/// Parses a WasmFunction manifest and checks its source.
pub(crate) fn parse_function(text: &str) -> Result<Function> {
    let (name, spec): (String, FunctionSpec) = parse_object(text, "WasmFunction")?;
    let source = &spec.source;
    let given = [
        source.code.is_some(),
        source.base64.is_some(),
        source.config_map_ref.is_some(),
        source.url.is_some(),
        source.oci.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        bail!("spec.source must set exactly one of code, base64, configMapRef, url, oci");
    }
    Ok(Function { name, spec })
}

/// Parses a WasmExecution manifest.
pub(crate) fn parse_execution(text: &str) -> Result<ExecutionSpec> {
    Ok(parse_object(text, "WasmExecution")?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_function() {
        let function = parse_function(
            "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nmetadata: {name: hi}\n\
             spec:\n  language: wat\n  source:\n    code: '(module)'\n",
        )
        .expect("valid");
        assert_eq!(function.name, "hi");
        assert_eq!(function.spec.language, "wat");
        assert!(parse_function(
            "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nspec:\n  language: wat\n  source: {}\n"
        )
        .is_err());
        assert!(parse_function("apiVersion: v1\nkind: Pod\nspec: {}\n").is_err());
    }
}
