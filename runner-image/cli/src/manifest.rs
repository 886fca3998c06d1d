//! Reading WasmFunction and WasmExecution manifests with the API's own spec types
//! ([`WasmFunctionSpec`], [`WasmExecutionSpec`] from `wasmfn-api`, which the CRDs are generated
//! from), so a file `wasmfn run` accepts is one the cluster accepts, field for field. Every
//! problem is a usage error naming the file, the document and the field.

use std::path::Path;

use anyhow::Result;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use wasmfn_api::{WasmExecutionSpec, WasmFunctionSpec, API_VERSION};

use crate::exit::usage;

/// A Kubernetes object of one of the two kinds: what `wasmfn run` reads of it (`apiVersion`
/// and `kind` are checked first, by [`Header`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest<S> {
    /// Only the name is used.
    #[serde(default)]
    pub(crate) metadata: Metadata,
    /// The spec, parsed by the API's type.
    pub(crate) spec: S,
}

/// `metadata`: the rest (namespace, labels, …) means nothing locally.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Metadata {
    /// `metadata.name`.
    #[serde(default)]
    pub(crate) name: String,
}

/// What a document says it is, read before its spec so a wrong kind is reported as such.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// The kind name of each spec type.
pub(crate) trait Kind: DeserializeOwned + schemars::JsonSchema {
    /// `kind` of the documents holding this spec.
    const KIND: &'static str;
}

impl Kind for WasmFunctionSpec {
    const KIND: &'static str = "WasmFunction";
}

impl Kind for WasmExecutionSpec {
    const KIND: &'static str = "WasmExecution";
}

/// The fields of `value` (a spec, at `path`) that `schema` (the JSON schema the CRD is
/// generated from) does not have. The apiserver would drop them without a word, so a misspelt
/// `timeoutMilis` would be lost; locally they are refused instead.
fn unknown_fields(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    root: &serde_json::Value,
    path: &str,
    found: &mut Vec<String>,
) {
    let schema = resolve(schema, root);
    match value {
        serde_json::Value::Object(fields) => {
            let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
                return; // free-form (e.g. `input`)
            };
            for (name, field) in fields {
                let at = format!("{path}.{name}");
                match properties.get(name) {
                    Some(property) => unknown_fields(field, property, root, &at, found),
                    None => found.push(at),
                }
            }
        }
        serde_json::Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (index, element) in items.iter().enumerate() {
                    unknown_fields(element, item, root, &format!("{path}[{index}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// `schema` itself, or what its `$ref` (directly or as the one non-null branch of an
/// `anyOf`/`oneOf`/`allOf`, as an optional field is written) points at.
fn resolve<'a>(
    schema: &'a serde_json::Value,
    root: &'a serde_json::Value,
) -> &'a serde_json::Value {
    if let Some(reference) = schema.get("$ref").and_then(|r| r.as_str()) {
        let name = reference.rsplit('/').next().unwrap_or_default();
        for definitions in ["$defs", "definitions"] {
            if let Some(target) = root.get(definitions).and_then(|d| d.get(name)) {
                return resolve(target, root);
            }
        }
        return schema;
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(branches) = schema.get(combinator).and_then(|b| b.as_array()) {
            if let Some(object) = branches
                .iter()
                .map(|branch| resolve(branch, root))
                .find(|branch| branch.get("properties").is_some())
            {
                return object;
            }
        }
    }
    schema
}

/// Refuses fields of the spec the API does not have.
fn check_fields<S: Kind>(value: &serde_yaml::Value, at: &str) -> Result<()> {
    let Some(spec) = value.get("spec") else {
        return Ok(());
    };
    let spec = serde_json::to_value(spec)
        .map_err(|error| usage(format!("{at}: spec is not JSON-compatible: {error}")))?;
    let schema = schemars::schema_for!(S);
    let root = schema.as_value();
    let mut found = Vec::new();
    unknown_fields(&spec, root, root, "spec", &mut found);
    if found.is_empty() {
        return Ok(());
    }
    Err(usage(format!(
        "{at}: {} {} of {} (see kubectl explain {}.spec)",
        found.join(", "),
        if found.len() == 1 {
            "is not a field"
        } else {
            "are not fields"
        },
        S::KIND,
        S::KIND.to_ascii_lowercase()
    )))
}

/// Every document of `text` (a file's contents; `---` separates documents), each checked to be
/// a `wasmfn.dev/v1alpha1` object of `S`'s kind and parsed. Empty documents are skipped.
pub(crate) fn documents<S: Kind>(file: &Path, text: &str) -> Result<Vec<Manifest<S>>> {
    let file = file.display();
    let mut parsed = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = format!("{file}: document {}", index + 1);
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|error| usage(format!("{at} is not YAML: {error}")))?;
        if value.is_null() {
            continue;
        }
        let header: Header = serde_yaml::from_value(value.clone()).map_err(|_| {
            usage(format!(
                "{at} is not a Kubernetes object (apiVersion, kind, spec)"
            ))
        })?;
        match header.api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(usage(format!(
                    "{at}: apiVersion is {other:?}; expected {API_VERSION}"
                )))
            }
            None => {
                return Err(usage(format!(
                    "{at}: apiVersion is missing; expected {API_VERSION}"
                )))
            }
        }
        match header.kind.as_deref() {
            Some(kind) if kind == S::KIND => {}
            Some(other) => {
                return Err(usage(format!(
                    "{at}: kind is {other:?}; expected {}",
                    S::KIND
                )))
            }
            None => {
                return Err(usage(format!(
                    "{at}: kind is missing; expected {}",
                    S::KIND
                )))
            }
        }
        check_fields::<S>(&value, &at)?;
        parsed.push(index);
    }
    // Parsed again from the text, so a bad field is reported with its line and column.
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        if !parsed.contains(&index) {
            continue;
        }
        let manifest = Manifest::<S>::deserialize(document).map_err(|error| {
            usage(format!(
                "{file}: document {} is not a valid {}: {error}",
                index + 1,
                S::KIND
            ))
        })?;
        manifests.push(manifest);
    }
    Ok(manifests)
}

/// Reads `path`.
fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|error| usage(format!("cannot read {}: {error}", path.display())))
}

/// The one WasmFunction in the file at `path`.
pub(crate) fn read_function(path: &Path) -> Result<Manifest<WasmFunctionSpec>> {
    let mut functions = documents::<WasmFunctionSpec>(path, &read(path)?)?;
    match functions.len() {
        1 => Ok(functions.remove(0)),
        0 => Err(usage(format!("{} holds no WasmFunction", path.display()))),
        count => Err(usage(format!(
            "{} holds {count} WasmFunctions; wasmfn run takes a file with one",
            path.display()
        ))),
    }
}

/// The WasmExecution of the file at `path` to run `function` with: the one named `name`, else
/// the first whose `spec.functionRef.name` is `function`. Also says how many the file held.
pub(crate) fn read_execution(
    path: &Path,
    function: &str,
    name: Option<&str>,
) -> Result<(Manifest<WasmExecutionSpec>, usize)> {
    let executions = documents::<WasmExecutionSpec>(path, &read(path)?)?;
    let count = executions.len();
    let file = path.display();
    let names = || {
        executions
            .iter()
            .map(|e| e.metadata.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = match name {
        Some(name) => executions
            .iter()
            .position(|e| e.metadata.name == name)
            .ok_or_else(|| usage(format!("{file} holds no WasmExecution named {name} (it holds: {})", names())))?,
        None => executions
            .iter()
            .position(|e| function.is_empty() || e.spec.function_ref.name == function)
            .ok_or_else(|| {
                if count == 0 {
                    usage(format!("{file} holds no WasmExecution"))
                } else {
                    usage(format!(
                        "no WasmExecution in {file} has spec.functionRef.name {function} (it holds: {})",
                        names()
                    ))
                }
            })?,
    };
    let execution = executions
        .into_iter()
        .nth(found)
        .ok_or_else(|| usage(format!("{file}: no execution {found}")))?;
    let reference = &execution.spec.function_ref.name;
    if !function.is_empty() && reference != function {
        return Err(usage(format!(
            "{file}: WasmExecution {} has spec.functionRef.name {reference}, but the function is {function}",
            execution.metadata.name
        )));
    }
    Ok((execution, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfn_api::Language;

    fn functions(text: &str) -> Result<Vec<Manifest<WasmFunctionSpec>>> {
        documents(Path::new("f.yaml"), text)
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        let error = result.expect_err("refused");
        assert_eq!(crate::exit::code_of(&error), crate::exit::USAGE, "{error}");
        format!("{error:#}")
    }

    #[test]
    fn a_function_parses_into_the_api_spec() {
        let parsed = functions(
            "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nmetadata: {name: hi}\n\
             spec:\n  language: go\n  defaults:\n    timeoutMillis: 5000\n    env:\n      - {name: A, value: b}\n  source:\n    code: package main\n",
        )
        .expect("valid");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].metadata.name, "hi");
        assert_eq!(parsed[0].spec.language, Language::Go);
        assert_eq!(parsed[0].spec.defaults.timeout_millis, Some(5000));
        assert_eq!(parsed[0].spec.defaults.env[0].name, "A");
    }

    #[test]
    fn a_wrong_kind_or_version_names_the_file_document_and_field() {
        let text = "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nspec: {language: wat, source: {code: x}}\n---\napiVersion: v1\nkind: Pod\nspec: {}\n";
        assert_eq!(
            message(functions(text)),
            "f.yaml: document 2: apiVersion is \"v1\"; expected wasmfn.dev/v1alpha1"
        );
        assert_eq!(
            message(functions(
                "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmExecution\nspec: {}\n"
            )),
            "f.yaml: document 1: kind is \"WasmExecution\"; expected WasmFunction"
        );
        assert_eq!(
            message(functions("kind: WasmFunction\nspec: {}\n")),
            "f.yaml: document 1: apiVersion is missing; expected wasmfn.dev/v1alpha1"
        );
    }

    #[test]
    fn a_field_the_api_does_not_have_is_refused_with_its_path() {
        let text = "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nspec:\n  language: wat\n  defaults:\n    timeoutMilis: 5\n    env: [{name: A, valu: b}]\n  source: {code: x}\n";
        assert_eq!(
            message(functions(text)),
            "f.yaml: document 1: spec.defaults.env[0].valu, spec.defaults.timeoutMilis are not fields of WasmFunction (see kubectl explain wasmfunction.spec)"
        );
        // `input` is free-form, as in the CRD.
        let executions = documents::<WasmExecutionSpec>(
            Path::new("e.yaml"),
            "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmExecution\nspec:\n  functionRef: {name: f}\n  input: {anything: {goes: [1]}}\n  timeout: 60s\n",
        );
        assert_eq!(
            message(executions),
            "e.yaml: document 1: spec.timeout is not a field of WasmExecution (see kubectl explain wasmexecution.spec)"
        );
    }

    #[test]
    fn a_bad_spec_field_is_reported_with_its_path_and_line() {
        let text = "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nspec:\n  language: cobol\n  source: {code: x}\n";
        let text = message(functions(text));
        assert!(
            text.starts_with("f.yaml: document 1 is not a valid WasmFunction: spec.language: unknown variant `cobol`"),
            "{text}"
        );
        assert!(text.contains("line 4"), "{text}");
        let text = "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmFunction\nspec:\n  language: wat\n  defaults: {timeoutMillis: soon}\n  source: {code: x}\n";
        assert!(message(functions(text)).contains("spec.defaults.timeoutMillis: invalid type"));
    }

    #[test]
    fn an_execution_is_picked_by_name_or_by_its_function() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.yaml");
        std::fs::write(
            &path,
            "apiVersion: wasmfn.dev/v1alpha1\nkind: WasmExecution\nmetadata: {name: one}\nspec: {functionRef: {name: other}}\n---\n\
             apiVersion: wasmfn.dev/v1alpha1\nkind: WasmExecution\nmetadata: {name: two}\nspec: {functionRef: {name: f}, args: [x]}\n---\n\
             apiVersion: wasmfn.dev/v1alpha1\nkind: WasmExecution\nmetadata: {name: three}\nspec: {functionRef: {name: f}}\n",
        )
        .expect("write");
        let (first, count) = read_execution(&path, "f", None).expect("by function");
        assert_eq!((first.metadata.name.as_str(), count), ("two", 3));
        assert_eq!(first.spec.args, ["x"]);
        let (named, _) = read_execution(&path, "f", Some("three")).expect("by name");
        assert_eq!(named.metadata.name, "three");
        let text = message(read_execution(&path, "f", Some("one")));
        assert!(
            text.ends_with(
                "WasmExecution one has spec.functionRef.name other, but the function is f"
            ),
            "{text}"
        );
        let text = message(read_execution(&path, "g", None));
        assert!(
            text.contains("no WasmExecution in") && text.ends_with("(it holds: one, two, three)"),
            "{text}"
        );
    }
}
