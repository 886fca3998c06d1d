//! A function's source as files, and the checks a spec must pass before anything is built.
//! Pure: the reconciler fetches a referenced ConfigMap and hands its data in.

use std::collections::BTreeMap;

use base64::Engine as _;
use wasmfn_api::function::MAX_INLINE_SOURCE_BYTES;
use wasmfn_api::{ArtifactStore, Language, WasmFunctionSpec};
use wasmfn_artifact::{check_no_native_code, NativeCodeError, NATIVE_CODE_REASON};

use crate::config::parse_quantity;

/// Largest source tree accepted from a ConfigMap (all keys together).
pub const MAX_SOURCE_TREE_BYTES: usize = 1 << 20;

/// What the compile sees: relative path → bytes, in path order.
pub type SourceFiles = BTreeMap<String, Vec<u8>>;

/// Why a spec cannot be built. `reason` is the condition/event reason (CamelCase, fixed set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Fixed reason: `InvalidSpec`, `SourceTooLarge`, `StoreUnavailable`, `InvalidModule`,
    /// `NativeCodeSection`.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

impl Invalid {
    fn spec(message: impl Into<String>) -> Invalid {
        Invalid {
            reason: "InvalidSpec",
            message: message.into(),
        }
    }
}

/// What the spec asks to build.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceRequest {
    /// Files to compile are in the spec itself.
    Files(SourceFiles),
    /// Files come from this ConfigMap.
    ConfigMap(String),
    /// A prebuilt module: no compile.
    Prebuilt(Vec<u8>),
}

/// Checks a spec; returns what to fetch or build. `oci_available` says whether the operator has
/// an OCI registry configured.
pub fn validate(spec: &WasmFunctionSpec, oci_available: bool) -> Result<SourceRequest, Invalid> {
    let source = &spec.source;
    let given: Vec<&str> = [
        source.code.as_ref().map(|_| "code"),
        source.config_map_ref.as_ref().map(|_| "configMapRef"),
        source.base64.as_ref().map(|_| "base64"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() != 1 {
        return Err(Invalid::spec(format!(
            "spec.source must set exactly one of code, configMapRef, base64 (found {})",
            if given.is_empty() {
                "none".to_owned()
            } else {
                given.join(", ")
            }
        )));
    }
    if spec.artifact_store == Some(ArtifactStore::Oci) && !oci_available {
        return Err(Invalid {
            reason: "StoreUnavailable",
            message: "spec.artifactStore is Oci but the operator has no OCI registry configured \
                      (--oci-registry); use ConfigMap or configure a registry"
                .into(),
        });
    }
    if let Some(limit) = &spec.defaults.memory_limit {
        parse_quantity(limit)
            .map_err(|e| Invalid::spec(format!("spec.defaults.memoryLimit: {e}")))?;
    }
    if spec.defaults.timeout_millis.is_some_and(|t| t <= 0) {
        return Err(Invalid::spec(
            "spec.defaults.timeoutMillis must be positive",
        ));
    }
    if let Some(timeout) = spec.build.timeout_seconds {
        if !(10..=3600).contains(&timeout) {
            return Err(Invalid::spec(
                "spec.build.timeoutSeconds must be between 10 and 3600",
            ));
        }
    }
    let prebuilt = spec.language == Language::Wasm;
    if let Some(encoded) = &source.base64 {
        if !prebuilt {
            return Err(Invalid::spec(format!(
                "spec.source.base64 holds a prebuilt module, which needs language wasm (not {})",
                spec.language.as_str()
            )));
        }
        if encoded.len() > MAX_INLINE_SOURCE_BYTES {
            return Err(too_large(
                "spec.source.base64",
                encoded.len(),
                MAX_INLINE_SOURCE_BYTES,
            ));
        }
        let compact: String = encoded.split_ascii_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| Invalid::spec(format!("spec.source.base64 is not base64: {e}")))?;
        if !bytes.starts_with(b"\0asm") {
            return Err(Invalid {
                reason: "InvalidModule",
                message:
                    "spec.source.base64 does not decode to a WebAssembly binary (no \\0asm header)"
                        .into(),
            });
        }
        return prebuilt_module(bytes, "spec.source.base64");
    }
    if prebuilt && source.config_map_ref.is_none() {
        return Err(Invalid::spec(
            "language wasm takes its module from spec.source.base64 or a ConfigMap's binaryData",
        ));
    }
    if let Some(code) = &source.code {
        if code.trim().is_empty() {
            return Err(Invalid::spec("spec.source.code is empty"));
        }
        if code.len() > MAX_INLINE_SOURCE_BYTES {
            return Err(too_large(
                "spec.source.code",
                code.len(),
                MAX_INLINE_SOURCE_BYTES,
            ));
        }
        let name = source
            .file_name
            .clone()
            .unwrap_or_else(|| spec.language.default_file_name().to_owned());
        return Ok(SourceRequest::Files(SourceFiles::from([(
            name,
            code.clone().into_bytes(),
        )])));
    }
    if source.file_name.is_some() {
        return Err(Invalid::spec(
            "spec.source.fileName only applies to spec.source.code",
        ));
    }
    let reference = source
        .config_map_ref
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_default();
    Ok(SourceRequest::ConfigMap(reference))
}

/// A prebuilt module is stored only when it carries no native code of its own (see
/// [`wasmfn_artifact::native_code`]) and its sections parse.
fn prebuilt_module(bytes: Vec<u8>, what: &str) -> Result<SourceRequest, Invalid> {
    match check_no_native_code(&bytes) {
        Ok(()) => Ok(SourceRequest::Prebuilt(bytes)),
        Err(refusal @ NativeCodeError::Found { .. }) => Err(Invalid {
            reason: NATIVE_CODE_REASON,
            message: format!("{what}: {refusal}"),
        }),
        Err(refusal @ NativeCodeError::Malformed { .. }) => Err(Invalid {
            reason: "InvalidModule",
            message: format!("{what} is not a valid WebAssembly module: {refusal}"),
        }),
    }
}

fn too_large(field: &str, size: usize, limit: usize) -> Invalid {
    Invalid {
        reason: "SourceTooLarge",
        message: format!("{field} is {size} bytes; the limit is {limit}"),
    }
}

/// Turns a ConfigMap's `data` and `binaryData` into source files (`__` in a key stands for `/`).
/// A `wasm` function takes its module from the ConfigMap's one binaryData key instead.
pub fn files_from_config_map(
    language: Language,
    name: &str,
    data: &BTreeMap<String, String>,
    binary: &BTreeMap<String, Vec<u8>>,
) -> Result<SourceRequest, Invalid> {
    if language == Language::Wasm {
        let mut modules = binary.values().filter(|b| b.starts_with(b"\0asm"));
        return match (modules.next(), modules.next()) {
            (Some(module), None) => {
                prebuilt_module(module.clone(), &format!("the module in ConfigMap {name}"))
            }
            _ => Err(Invalid::spec(format!(
                "ConfigMap {name} must hold exactly one WebAssembly module in binaryData for language wasm"
            ))),
        };
    }
    let mut files = SourceFiles::new();
    for (key, bytes) in data
        .iter()
        .map(|(k, v)| (k, v.as_bytes()))
        .chain(binary.iter().map(|(k, v)| (k, v.as_slice())))
    {
        let path = key.replace("__", "/");
        if path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(Invalid::spec(format!(
                "ConfigMap {name}: key {key:?} is not a usable file path"
            )));
        }
        files.insert(path, bytes.to_vec());
    }
    if files.is_empty() {
        return Err(Invalid::spec(format!(
            "ConfigMap {name} holds no source files"
        )));
    }
    let total: usize = files.values().map(Vec::len).sum();
    if total > MAX_SOURCE_TREE_BYTES {
        return Err(too_large(
            &format!("ConfigMap {name}"),
            total,
            MAX_SOURCE_TREE_BYTES,
        ));
    }
    Ok(SourceRequest::Files(files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfn_api::{ConfigMapSource, FunctionSource};

    fn spec(language: Language, source: FunctionSource) -> WasmFunctionSpec {
        WasmFunctionSpec {
            language,
            source,
            entrypoint: None,
            build: Default::default(),
            defaults: Default::default(),
            artifact_store: None,
        }
    }

    fn code(text: &str) -> FunctionSource {
        FunctionSource {
            code: Some(text.into()),
            ..Default::default()
        }
    }

    #[test]
    fn inline_code_becomes_one_file_named_for_the_language() {
        let request = validate(&spec(Language::Rust, code("fn main() {}")), false).expect("valid");
        assert_eq!(
            request,
            SourceRequest::Files(SourceFiles::from([(
                "main.rs".into(),
                b"fn main() {}".to_vec()
            )]))
        );
        let mut named = code("package main");
        named.file_name = Some("hello.go".into());
        let SourceRequest::Files(files) =
            validate(&spec(Language::Go, named), false).expect("valid")
        else {
            panic!("files expected");
        };
        assert!(files.contains_key("hello.go"));
    }

    #[test]
    fn exactly_one_source_is_required() {
        let none =
            validate(&spec(Language::C, FunctionSource::default()), false).expect_err("none");
        assert_eq!(none.reason, "InvalidSpec");
        assert!(none.message.contains("found none"), "{}", none.message);
        let mut two = code("int main(){}");
        two.config_map_ref = Some(ConfigMapSource { name: "src".into() });
        let both = validate(&spec(Language::C, two), false).expect_err("two");
        assert!(
            both.message.contains("code, configMapRef"),
            "{}",
            both.message
        );
    }

    #[test]
    fn empty_and_oversized_code_are_refused_with_their_own_reasons() {
        assert_eq!(
            validate(&spec(Language::C, code("  \n")), false)
                .expect_err("empty")
                .reason,
            "InvalidSpec"
        );
        let big = "x".repeat(MAX_INLINE_SOURCE_BYTES + 1);
        assert_eq!(
            validate(&spec(Language::C, code(&big)), false)
                .expect_err("big")
                .reason,
            "SourceTooLarge"
        );
    }

    #[test]
    fn the_oci_store_needs_a_configured_registry() {
        let mut s = spec(Language::C, code("int main(){}"));
        s.artifact_store = Some(ArtifactStore::Oci);
        assert_eq!(
            validate(&s, false).expect_err("no registry").reason,
            "StoreUnavailable"
        );
        assert!(validate(&s, true).is_ok());
    }

    #[test]
    fn prebuilt_modules_must_be_wasm_and_base64_wasm_must_be_prebuilt() {
        let module = base64::engine::general_purpose::STANDARD.encode(b"\0asm\x01\0\0\0");
        let source = FunctionSource {
            base64: Some(module.clone()),
            ..Default::default()
        };
        assert_eq!(
            validate(&spec(Language::Wasm, source.clone()), false).expect("valid"),
            SourceRequest::Prebuilt(b"\0asm\x01\0\0\0".to_vec())
        );
        assert_eq!(
            validate(&spec(Language::Rust, source), false)
                .expect_err("rust")
                .reason,
            "InvalidSpec"
        );
        let not_wasm = FunctionSource {
            base64: Some(base64::engine::general_purpose::STANDARD.encode(b"hello")),
            ..Default::default()
        };
        assert_eq!(
            validate(&spec(Language::Wasm, not_wasm), false)
                .expect_err("magic")
                .reason,
            "InvalidModule"
        );
        let garbage = FunctionSource {
            base64: Some("***".into()),
            ..Default::default()
        };
        assert_eq!(
            validate(&spec(Language::Wasm, garbage), false)
                .expect_err("b64")
                .reason,
            "InvalidSpec"
        );
        assert_eq!(
            validate(&spec(Language::Wasm, code("(module)")), false)
                .expect_err("code")
                .reason,
            "InvalidSpec"
        );
    }

    #[test]
    fn defaults_and_build_limits_are_checked() {
        let mut s = spec(Language::C, code("int main(){}"));
        s.defaults.memory_limit = Some("lots".into());
        assert!(validate(&s, false)
            .expect_err("quantity")
            .message
            .contains("memoryLimit"));
        s.defaults.memory_limit = Some("64Mi".into());
        s.defaults.timeout_millis = Some(0);
        assert!(validate(&s, false)
            .expect_err("timeout")
            .message
            .contains("timeoutMillis"));
        s.defaults.timeout_millis = None;
        s.build.timeout_seconds = Some(5);
        assert!(validate(&s, false)
            .expect_err("build")
            .message
            .contains("timeoutSeconds"));
    }

    #[test]
    fn a_config_map_reference_is_returned_for_fetching_and_its_keys_become_paths() {
        let source = FunctionSource {
            config_map_ref: Some(ConfigMapSource {
                name: "hello-src".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            validate(&spec(Language::Rust, source), false).expect("valid"),
            SourceRequest::ConfigMap("hello-src".into())
        );
        let data = BTreeMap::from([
            ("Cargo.toml".to_owned(), "[package]".to_owned()),
            ("src__main.rs".to_owned(), "fn main() {}".to_owned()),
        ]);
        let SourceRequest::Files(files) =
            files_from_config_map(Language::Rust, "cm", &data, &BTreeMap::new()).expect("files")
        else {
            panic!("files expected");
        };
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["Cargo.toml", "src/main.rs"]
        );
    }

    #[test]
    fn config_map_sources_reject_escaping_paths_empty_maps_and_ambiguous_modules() {
        let bad = BTreeMap::from([("a____b".to_owned(), "x".to_owned())]);
        assert!(files_from_config_map(Language::C, "cm", &bad, &BTreeMap::new()).is_err());
        let dots = BTreeMap::from([("..__etc".to_owned(), "x".to_owned())]);
        assert!(files_from_config_map(Language::C, "cm", &dots, &BTreeMap::new()).is_err());
        assert!(
            files_from_config_map(Language::C, "cm", &BTreeMap::new(), &BTreeMap::new()).is_err()
        );
        let modules = BTreeMap::from([
            ("a.wasm".to_owned(), b"\0asm1".to_vec()),
            ("b.wasm".to_owned(), b"\0asm2".to_vec()),
        ]);
        assert!(files_from_config_map(Language::Wasm, "cm", &BTreeMap::new(), &modules).is_err());
        let one = BTreeMap::from([("a.wasm".to_owned(), b"\0asm\x01\0\0\0".to_vec())]);
        assert_eq!(
            files_from_config_map(Language::Wasm, "cm", &BTreeMap::new(), &one).expect("one"),
            SourceRequest::Prebuilt(b"\0asm\x01\0\0\0".to_vec())
        );
    }

    /// A module whose last section is a `wasmedge` custom section (what `wasmedge compile`
    /// appends), with a type section before it.
    const UNIVERSAL: &[u8] = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x00\x0b\x08wasmedge\x7fE";

    #[test]
    fn a_prebuilt_module_carrying_native_code_is_refused_from_either_source() {
        let source = FunctionSource {
            base64: Some(base64::engine::general_purpose::STANDARD.encode(UNIVERSAL)),
            ..Default::default()
        };
        let refused = validate(&spec(Language::Wasm, source), false).expect_err("native code");
        assert_eq!(refused.reason, "NativeCodeSection");
        assert!(
            refused.message.starts_with("spec.source.base64: "),
            "{}",
            refused.message
        );
        let map = BTreeMap::from([("m.wasm".to_owned(), UNIVERSAL.to_vec())]);
        let refused = files_from_config_map(Language::Wasm, "cm", &BTreeMap::new(), &map)
            .expect_err("native code");
        assert_eq!(refused.reason, "NativeCodeSection");
        assert!(
            refused.message.contains("ConfigMap cm"),
            "{}",
            refused.message
        );
        let truncated = BTreeMap::from([("m.wasm".to_owned(), UNIVERSAL[..20].to_vec())]);
        assert_eq!(
            files_from_config_map(Language::Wasm, "cm", &BTreeMap::new(), &truncated)
                .expect_err("cut")
                .reason,
            "InvalidModule"
        );
    }
}
