//! `WasmFunction`: source code plus language, compiled once per distinct source into a stored
//! WebAssembly module.

#[cfg(feature = "kube")]
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
#[cfg(feature = "kube")]
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest inline source or prebuilt module accepted in a manifest (bytes of the field's text).
/// The apiserver's own request limit (~1.5 MiB) is the hard stop; this leaves room for the rest.
pub const MAX_INLINE_SOURCE_BYTES: usize = 1 << 20;

/// A function: source code and language, compiled by the operator into a WebAssembly module that
/// is stored as an artifact and run by `WasmExecution`s.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[cfg_attr(feature = "kube", derive(CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "wasmfn.dev",
        version = "v1alpha1",
        kind = "WasmFunction",
        namespaced,
        status = "WasmFunctionStatus",
        shortname = "wfn",
        category = "wasmfn",
        derive = "PartialEq",
        doc = "A function: source code and language, compiled once per distinct source into a stored WebAssembly module that WasmExecutions run.",
        printcolumn = r#"{"name":"Language","type":"string","jsonPath":".spec.language"}"#,
        printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
        printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.artifact.shortDigest"}"#,
        printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".status.artifact.size"}"#,
        printcolumn = r#"{"name":"Store","type":"string","priority":1,"jsonPath":".status.artifact.store"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WasmFunctionSpec {
    /// The source language. Compiled languages (`Rust`, `C`, `Cpp`, `Go`, `AssemblyScript`,
    /// `TypeScript`, `Wat`) become a new module; interpreted ones (`Python`, `JavaScript`) are
    /// checked and run by an interpreter module shipped in the runner image; `Wasm` is a prebuilt
    /// module.
    pub language: Language,
    /// Where the source comes from: exactly one of `code`, `configMapRef` or `base64` (the API
    /// server refuses none or more than one).
    pub source: FunctionSource,
    /// The export to call. Empty (default) runs a WASI command module's `_start`; a name calls
    /// that export of a library (reactor) module, e.g. an AssemblyScript `add`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.$-]*$")
    )]
    pub entrypoint: Option<String>,
    /// How to build the module.
    #[serde(default)]
    pub build: BuildOptions,
    /// Defaults for this function's executions; an execution's own values win.
    #[serde(default)]
    pub defaults: ExecutionDefaults,
    /// Where to store the compiled module: `ConfigMap` or `Oci`. Empty uses the operator's
    /// default store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ArtifactStore")]
    pub artifact_store: Option<ArtifactStore>,
}

/// A source language, one definition for the API, the compiler and the CLI. Written in
/// PascalCase like every enum value of the API (`Rust`, `AssemblyScript`, …); the lower-case
/// names of earlier releases are still read from stored objects, but the schema refuses them in
/// new ones.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Language {
    /// Rust, one file (`main.rs`) or a Cargo project without dependencies from the network.
    #[serde(alias = "rust")]
    Rust,
    /// C (clang + wasi-libc).
    #[serde(alias = "c")]
    C,
    /// C++ (clang + libc++ for WASI).
    #[serde(alias = "cpp")]
    Cpp,
    /// Go (`GOOS=wasip1 GOARCH=wasm`).
    #[serde(alias = "go")]
    Go,
    /// AssemblyScript.
    #[serde(alias = "assemblyscript")]
    AssemblyScript,
    /// TypeScript, compiled as AssemblyScript.
    #[serde(alias = "typescript")]
    TypeScript,
    /// JavaScript, run by the QuickJS interpreter module.
    #[serde(alias = "javascript")]
    JavaScript,
    /// Python, run by the CPython interpreter module.
    #[serde(alias = "python")]
    Python,
    /// WebAssembly text format.
    #[serde(alias = "wat")]
    Wat,
    /// A prebuilt WebAssembly binary module.
    #[serde(alias = "wasm")]
    Wasm,
}

impl Language {
    /// Every language, in documentation order.
    pub const ALL: [Language; 10] = [
        Language::Rust,
        Language::C,
        Language::Cpp,
        Language::Go,
        Language::AssemblyScript,
        Language::TypeScript,
        Language::Wat,
        Language::Wasm,
        Language::Python,
        Language::JavaScript,
    ];

    /// The name in manifests, on `wasmfn compile --language` and in cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::Go => "go",
            Language::AssemblyScript => "assemblyscript",
            Language::TypeScript => "typescript",
            Language::JavaScript => "javascript",
            Language::Python => "python",
            Language::Wat => "wat",
            Language::Wasm => "wasm",
        }
    }

    /// Parses a name as a person types it on a command line: any case, and the usual short
    /// forms (`rs`, `c++`, `ts`, `as`, `js`, `py`, `golang`).
    pub fn parse(name: &str) -> Option<Language> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "rust" | "rs" => Language::Rust,
            "c" => Language::C,
            "cpp" | "c++" | "cxx" => Language::Cpp,
            "go" | "golang" => Language::Go,
            "assemblyscript" | "as" => Language::AssemblyScript,
            "typescript" | "ts" => Language::TypeScript,
            "wat" => Language::Wat,
            "wasm" => Language::Wasm,
            "python" | "py" => Language::Python,
            "javascript" | "js" => Language::JavaScript,
            _ => return None,
        })
    }

    /// File name an inline source gets when the manifest names none.
    pub fn default_file_name(self) -> &'static str {
        match self {
            Language::Rust => "main.rs",
            Language::C => "main.c",
            Language::Cpp => "main.cpp",
            Language::Go => "main.go",
            Language::AssemblyScript | Language::TypeScript => "main.ts",
            Language::JavaScript => "main.js",
            Language::Python => "main.py",
            Language::Wat => "main.wat",
            Language::Wasm => "module.wasm",
        }
    }

    /// File extensions that hold this language's sources (the first is the preferred one).
    pub fn source_extensions(self) -> &'static [&'static str] {
        match self {
            Language::Rust => &["rs"],
            Language::C => &["c"],
            Language::Cpp => &["cpp", "cc", "cxx", "c++"],
            Language::Go => &["go"],
            Language::AssemblyScript | Language::TypeScript => &["ts"],
            Language::Wat => &["wat", "wast"],
            Language::Wasm => &["wasm"],
            Language::Python => &["py"],
            Language::JavaScript => &["js", "mjs"],
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a function's source comes from. Exactly one of `code`, `configMapRef` and `base64`
/// must be set; the schema says so with a `oneOf` of three `required` lists, so the API server
/// refuses a source with none or several.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [
    {"required": ["code"]},
    {"required": ["configMapRef"]},
    {"required": ["base64"]}
]))]
pub struct FunctionSource {
    /// The source text itself (up to 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 1048576))]
    pub code: Option<String>,
    /// File name for `code` (default `main.<ext>` for the language). Line numbers in compiler
    /// diagnostics refer to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub file_name: Option<String>,
    /// A ConfigMap in the function's namespace whose keys are the source files (a Rust Cargo
    /// project keeps `Cargo.toml` and `src/main.rs` as `Cargo.toml` and `src__main.rs`: `__` stands
    /// for a directory separator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ConfigMapSource")]
    pub config_map_ref: Option<ConfigMapSource>,
    /// A prebuilt module (language `Wasm`), base64-encoded (up to 1 MiB of text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 1048576))]
    pub base64: Option<String>,
}

/// A ConfigMap holding source files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// The ConfigMap's name (same namespace as the function).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Build options. They are part of the cache key: changing one recompiles.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildOptions {
    /// Optimisation: `Speed` (default), `Size` or `None`.
    #[serde(default)]
    pub optimization: Optimization,
    /// Build a library (reactor) module whose exports are called by name instead of a WASI
    /// command (AssemblyScript).
    #[serde(default)]
    pub library: bool,
    /// Wall-clock limit of the compile Job in seconds (default: the operator's, 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64", range(min = 10, max = 3600))]
    pub timeout_seconds: Option<i64>,
}

/// Optimisation level, in PascalCase (`Speed`, `Size`, `None`); the lower-case names of earlier
/// releases are still read from stored objects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Optimization {
    /// Optimise for speed (`-O2`, release).
    #[default]
    #[serde(alias = "speed")]
    Speed,
    /// Optimise for size (`-Os`/`-Oz`).
    #[serde(alias = "size")]
    Size,
    /// No optimisation (fastest compile).
    #[serde(alias = "none")]
    None,
}

impl Optimization {
    /// The value `wasmfn compile --opt-level` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Optimization::Speed => "speed",
            Optimization::Size => "size",
            Optimization::None => "none",
        }
    }
}

/// Most environment variables in one list (`env` of an execution, `defaults.env` of a function).
pub const MAX_ENV_VARS: usize = 64;

/// Most bytes of one environment variable's name.
pub const MAX_ENV_NAME_BYTES: usize = 256;

/// Most bytes of one environment variable's value. With [`MAX_ENV_VARS`] entries a list stays
/// near 147 KiB, so an execution at every limit (args 1 MiB, env, stdin 256 KiB) still fits
/// the API server's 1.5 MiB request limit.
pub const MAX_ENV_VALUE_BYTES: usize = 2048;

/// An environment variable for the guest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// The name (1 to 256 bytes, no `=`).
    #[schemars(length(min = 1, max = MAX_ENV_NAME_BYTES), regex(pattern = r"^[^=\x00]+$"))]
    pub name: String,
    /// The value (empty when unset; at most 2048 bytes). The runners also cap the whole
    /// environment at 128 KiB (it travels as one command-line string): larger values belong on
    /// stdin.
    // The one spec field left nullable: a Kubernetes 1.20 API server refuses an empty string in
    // a non-nullable string field ("must be of type string: null"), and `value: ""` is a
    // common way to write an empty variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ENV_VALUE_BYTES))]
    pub value: Option<String>,
}

/// Defaults for executions of a function.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDefaults {
    /// Wall-clock limit of a run in milliseconds (operator default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64", range(min = 1, max = crate::inputs::MAX_TIMEOUT_MILLIS))]
    pub timeout_millis: Option<i64>,
    /// Linear-memory limit of a run, as a quantity (`128Mi`; operator default 128 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", regex(pattern = r"^[0-9]+(Ki|Mi|Gi|k|M|G)?$"))]
    pub memory_limit: Option<String>,
    /// Environment variables every run gets (at most 64; an execution's own `env` entries win by
    /// name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV_VARS))]
    pub env: Vec<EnvVar>,
}

/// An artifact store.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ArtifactStore {
    /// ConfigMaps in the function's namespace: the module gzip-compressed, split into parts of
    /// at most 900 KiB, with a manifest naming the parts and the digest.
    ConfigMap,
    /// An OCI registry: the module as an OCI Wasm artifact that WasmEdge nodes run as an image.
    Oci,
}

impl ArtifactStore {
    /// Lower-case name used in labels and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactStore::ConfigMap => "configmap",
            ArtifactStore::Oci => "oci",
        }
    }
}

#[cfg(feature = "kube")]
/// What the operator has observed and done.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmFunctionStatus {
    /// Pending, Compiling, Ready or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<FunctionPhase>,
    /// `Ready` (the module is stored and executions can run) and `Compiled` (the last compile
    /// succeeded), with reasons a person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The stored module, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactStatus>,
    /// The last compile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<CompileStatus>,
    /// `sha256:<hex>` over language, builder image, build options and source: functions with the
    /// same key share one compile and one artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A function's lifecycle phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FunctionPhase {
    /// Seen, not yet acted on, waiting for its source, or waiting to try a compile again after
    /// the platform lost the last try (`compile.nextAttemptTime` says when).
    Pending,
    /// A compile Job is running.
    Compiling,
    /// The module is stored; executions can run.
    Ready,
    /// The spec is invalid or the compile failed; see the Ready condition and `compile`.
    Failed,
}

/// A stored module.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactStatus {
    /// `sha256:<hex>` of the module (or checked script) bytes.
    pub digest: String,
    /// The first 12 hex digits of the digest, for `kubectl get`.
    pub short_digest: String,
    /// Size in bytes, uncompressed.
    pub size: i64,
    /// `application/wasm`, or the script type for interpreted languages.
    pub media_type: String,
    /// The store holding it.
    pub store: String,
    /// Where: the manifest ConfigMap's name (ConfigMap store) or the image reference by digest
    /// (OCI store), as pods name it.
    pub location: String,
    /// The ConfigMaps a pod mounts (one projected volume) to read the module (ConfigMap store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_maps: Vec<String>,
}

#[cfg(feature = "kube")]
/// A compile's record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompileStatus {
    /// The compile Job (shared by functions with the same cache key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// True when no compile ran because the artifact was already stored.
    #[serde(default)]
    pub cache_hit: bool,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the operator finished collecting its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Time the toolchains took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Fixed reason of a failed compile (`CompileError`, `TimedOut`, `SourceTooLarge`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The compiler's messages, `file:line:col: severity: message`, trimmed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// The tools and versions that built the module.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toolchain: Vec<String>,
    /// Which try this is (or was), from 1. A compile the platform lost (the builder could not
    /// run or crashed, its pod was lost, the Job's deadline passed before the builder reported,
    /// its output could not be read) is tried again, 3 tries in all; a failure of the source is
    /// not. A change of the spec starts again from 1. 0 when no compile ran (cache hit,
    /// prebuilt module).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: i32,
    /// While waiting to try again after a lost try: when the next try starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
}

#[cfg(feature = "kube")]
fn is_zero(value: &i32) -> bool {
    *value == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_parses_back_from_its_name_in_any_case() {
        for language in Language::ALL {
            assert_eq!(Language::parse(language.as_str()), Some(language));
            let upper = language.as_str().to_uppercase();
            assert_eq!(Language::parse(&upper), Some(language));
        }
    }

    #[test]
    fn the_manifest_name_and_the_command_line_name_read_back_as_the_same_language() {
        for language in Language::ALL {
            let json = serde_json::to_value(language).expect("serialises");
            let manifest_name = json.as_str().expect("a string");
            assert_eq!(Language::parse(manifest_name), Some(language));
            let lower: Language =
                serde_json::from_value(language.as_str().into()).expect("the alias is read");
            assert_eq!(lower, language);
            assert_eq!(language.to_string(), language.as_str());
        }
    }

    #[test]
    fn short_forms_parse_and_unknown_names_do_not() {
        assert_eq!(Language::parse("ts"), Some(Language::TypeScript));
        assert_eq!(Language::parse(" c++ "), Some(Language::Cpp));
        assert_eq!(Language::parse("js"), Some(Language::JavaScript));
        assert_eq!(Language::parse("cobol"), None);
        assert_eq!(Language::parse(""), None);
    }

    #[test]
    fn typescript_is_compiled_from_the_same_files_as_assemblyscript() {
        assert_eq!(
            Language::TypeScript.default_file_name(),
            Language::AssemblyScript.default_file_name()
        );
        assert_eq!(
            Language::TypeScript.source_extensions(),
            Language::AssemblyScript.source_extensions()
        );
    }
}
