//! Re-spelling stored objects' enum values to the casing the schema asks for.
//!
//! Earlier releases wrote some enum values in lower case (`language: rust`,
//! `build.optimization: speed`). The operator still reads them, but the API server refuses every
//! update of such an object, its status writes included, until they are re-spelled. At startup the
//! leader patches each stored object that needs it ([`stored`]); this module decides what to patch.
//!
//! The canonical spellings are not listed here: they are the `enum` values of the generated CRD
//! schema, which `schemars` derives from the `wasmfn-api` enums' serde names, so a new enum
//! field or value is covered without touching this file. A stored value is re-spelled when it
//! differs from exactly one canonical value by ASCII case alone; anything else is left for the
//! operator's normal validation to report.

pub mod stored;

use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Map, Value};
use wasmfn_api::{WasmExecution, WasmFunction};

/// The two kinds whose specs carry enum values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `WasmFunction`.
    Function,
    /// `WasmExecution`.
    Execution,
}

impl Kind {
    /// Both kinds.
    pub const ALL: [Kind; 2] = [Kind::Function, Kind::Execution];

    /// The kind's name, as in `kind:` (also the metric label).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Function => "WasmFunction",
            Kind::Execution => "WasmExecution",
        }
    }

    fn crd(self) -> CustomResourceDefinition {
        match self {
            Kind::Function => WasmFunction::crd(),
            Kind::Execution => WasmExecution::crd(),
        }
    }
}

/// An enum field of a spec: where it is under `spec`, and its canonical values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumField {
    /// Property names from `spec` down, e.g. `["build", "optimization"]`.
    pub path: Vec<String>,
    /// The values the schema accepts, spelled as the API writes them.
    pub values: Vec<String>,
}

impl EnumField {
    /// The field as a person names it: `spec.build.optimization`.
    pub fn display(&self) -> String {
        format!("spec.{}", self.path.join("."))
    }
}

static FUNCTION_FIELDS: LazyLock<Vec<EnumField>> = LazyLock::new(|| enum_fields_of(Kind::Function));
static EXECUTION_FIELDS: LazyLock<Vec<EnumField>> =
    LazyLock::new(|| enum_fields_of(Kind::Execution));

/// Every enum field of `kind`'s spec, read from its generated schema.
pub fn enum_fields(kind: Kind) -> &'static [EnumField] {
    match kind {
        Kind::Function => &FUNCTION_FIELDS,
        Kind::Execution => &EXECUTION_FIELDS,
    }
}

fn spec_schema(kind: Kind) -> Value {
    let crd = kind.crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|version| version.schema.as_ref())
        .and_then(|schema| schema.open_api_v3_schema.as_ref())
        .and_then(|schema| serde_json::to_value(schema).ok())
        .unwrap_or(Value::Null);
    schema["properties"]["spec"].clone()
}

fn enum_fields_of(kind: Kind) -> Vec<EnumField> {
    let mut fields = Vec::new();
    collect_enum_fields(&spec_schema(kind), &mut Vec::new(), &mut fields);
    fields
}

/// Walks nested objects only. An enum inside a list would need the whole list in a merge
/// patch; no spec has one (a test checks), so lists are not walked.
fn collect_enum_fields(schema: &Value, path: &mut Vec<String>, fields: &mut Vec<EnumField>) {
    if let Some(values) = schema["enum"].as_array() {
        fields.push(EnumField {
            path: path.clone(),
            values: values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        });
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        path.push(name.clone());
        collect_enum_fields(property, path, fields);
        path.pop();
    }
}

/// The canonical spelling of `stored` when it differs from exactly one of `values` by case
/// alone; `None` when it is already canonical or is no spelling of any value.
pub fn canonical_spelling<'a>(values: &'a [String], stored: &str) -> Option<&'a str> {
    let mut matches = values.iter().filter(|v| v.eq_ignore_ascii_case(stored));
    let only = matches.next()?;
    if matches.next().is_some() || only == stored {
        return None;
    }
    Some(only)
}

/// One re-spelled field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The field, e.g. `spec.language`.
    pub field: String,
    /// The stored spelling.
    pub from: String,
    /// The canonical spelling.
    pub to: String,
}

/// What to write to bring one object to the canonical spellings.
#[derive(Clone, Debug, PartialEq)]
pub struct Respelling {
    /// A JSON merge patch setting each re-spelled field, and the object's `resourceVersion`
    /// when it has one, so the patch only applies to the version it was computed from.
    pub patch: Value,
    /// The fields it changes, in schema order.
    pub changes: Vec<Change>,
}

impl Respelling {
    /// The event note: `spec.language rust → Rust, spec.build.optimization speed → Speed`.
    pub fn note(&self) -> String {
        let changes: Vec<String> = self
            .changes
            .iter()
            .map(|c| format!("{} {} → {}", c.field, c.from, c.to))
            .collect();
        format!(
            "re-spelled {} as the schema asks, so updates and status writes are accepted",
            changes.join(", ")
        )
    }
}

/// The merge patch that re-spells every enum field of `object`'s spec (the object as the API
/// serves it, `kind` its kind) whose stored value has a non-canonical case; `None` when no field
/// needs it. Missing fields and values that are no spelling of an enum value are left alone.
pub fn respell(kind: Kind, object: &Value) -> Option<Respelling> {
    let spec = object.get("spec")?;
    let mut patch = Map::new();
    let mut changes = Vec::new();
    for field in enum_fields(kind) {
        let Some(stored) = lookup(spec, &field.path).and_then(Value::as_str) else {
            continue;
        };
        let Some(canonical) = canonical_spelling(&field.values, stored) else {
            continue;
        };
        insert(&mut patch, &field.path, Value::from(canonical));
        changes.push(Change {
            field: field.display(),
            from: stored.to_owned(),
            to: canonical.to_owned(),
        });
    }
    if changes.is_empty() {
        return None;
    }
    let mut document = Map::new();
    if let Some(version) = object["metadata"]["resourceVersion"].as_str() {
        document.insert(
            "metadata".to_owned(),
            serde_json::json!({ "resourceVersion": version }),
        );
    }
    document.insert("spec".to_owned(), Value::Object(patch));
    Some(Respelling {
        patch: Value::Object(document),
        changes,
    })
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, name| node.get(name))
}

fn insert(patch: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = patch;
    for name in parents {
        let child = node
            .entry(name.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        let Value::Object(map) = child else {
            return;
        };
        node = map;
    }
    node.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasmfn_api::{
        ArtifactStore, ExecutionRuntime, Language, Optimization, WasmExecutionSpec,
        WasmFunctionSpec,
    };

    fn function(spec: Value) -> Value {
        json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
               "metadata": {"name": "f", "namespace": "ns", "resourceVersion": "41"},
               "spec": spec})
    }

    fn execution(spec: Value) -> Value {
        json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmExecution",
               "metadata": {"name": "e", "namespace": "ns", "resourceVersion": "42"},
               "spec": spec})
    }

    fn paths(kind: Kind) -> Vec<String> {
        enum_fields(kind).iter().map(EnumField::display).collect()
    }

    fn values(kind: Kind, field: &str) -> Vec<String> {
        enum_fields(kind)
            .iter()
            .find(|f| f.display() == field)
            .unwrap_or_else(|| panic!("{field} is an enum field"))
            .values
            .clone()
    }

    /// Serde's name for a value of an API enum.
    fn written<T: serde::Serialize>(value: T) -> String {
        serde_json::to_value(value)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn the_function_spec_has_three_enum_fields_and_the_execution_spec_one() {
        assert_eq!(
            paths(Kind::Function),
            [
                "spec.artifactStore",
                "spec.build.optimization",
                "spec.language"
            ]
        );
        assert_eq!(paths(Kind::Execution), ["spec.runtime"]);
    }

    #[test]
    fn the_canonical_values_are_the_names_the_api_enums_are_written_with() {
        let mut languages: Vec<String> = Language::ALL.into_iter().map(written).collect();
        let mut schema = values(Kind::Function, "spec.language");
        languages.sort();
        schema.sort();
        assert_eq!(schema, languages);
        assert_eq!(
            values(Kind::Function, "spec.build.optimization"),
            [
                written(Optimization::Speed),
                written(Optimization::Size),
                written(Optimization::None)
            ]
        );
        assert_eq!(
            values(Kind::Function, "spec.artifactStore"),
            [
                written(ArtifactStore::ConfigMap),
                written(ArtifactStore::Oci)
            ]
        );
        assert_eq!(
            values(Kind::Execution, "spec.runtime"),
            [
                written(ExecutionRuntime::Auto),
                written(ExecutionRuntime::WasmEdge),
                written(ExecutionRuntime::Container)
            ]
        );
    }

    #[test]
    fn no_spec_has_an_enum_inside_a_list_which_the_walk_would_miss() {
        fn lists_with_enums(schema: &Value, found: &mut usize) {
            if let Some(items) = schema.get("items") {
                let mut inner = Vec::new();
                collect_enum_fields(items, &mut Vec::new(), &mut inner);
                *found += inner.len();
            }
            for (_, property) in schema["properties"].as_object().into_iter().flatten() {
                lists_with_enums(property, found);
            }
        }
        for kind in Kind::ALL {
            let mut found = 0;
            lists_with_enums(&spec_schema(kind), &mut found);
            assert_eq!(found, 0, "{kind:?}");
        }
    }

    #[test]
    fn every_lower_case_language_the_api_reads_is_respelled_to_the_name_it_writes() {
        for language in Language::ALL {
            let old = language.as_str();
            assert_eq!(Language::parse(old), Some(language), "{old}");
            let read: Language = serde_json::from_value(json!(old)).expect("the alias is read");
            assert_eq!(read, language);
            let object = function(json!({"language": old, "source": {"code": "x"}}));
            let respelling = respell(Kind::Function, &object).expect(old);
            assert_eq!(
                respelling.patch,
                json!({"metadata": {"resourceVersion": "41"},
                       "spec": {"language": written(language)}}),
                "{old}"
            );
        }
    }

    #[test]
    fn every_lower_case_optimization_is_respelled_inside_build_and_nothing_else_is_touched() {
        for level in [Optimization::Speed, Optimization::Size, Optimization::None] {
            let old = level.as_str();
            let object = function(json!({"language": "Rust", "source": {"code": "x"},
                                         "build": {"optimization": old, "library": true}}));
            let respelling = respell(Kind::Function, &object).expect(old);
            assert_eq!(
                respelling.patch["spec"],
                json!({"build": {"optimization": written(level)}}),
                "a merge patch keeps build.library as stored"
            );
            assert_eq!(
                respelling.changes,
                [Change {
                    field: "spec.build.optimization".into(),
                    from: old.into(),
                    to: written(level)
                }]
            );
        }
    }

    #[test]
    fn an_artifact_store_in_another_case_is_respelled() {
        for (stored, canonical) in [("oci", "Oci"), ("configmap", "ConfigMap"), ("OCI", "Oci")] {
            let object = function(
                json!({"language": "Wat", "source": {"code": "x"}, "artifactStore": stored}),
            );
            let respelling = respell(Kind::Function, &object).expect(stored);
            assert_eq!(
                respelling.patch["spec"],
                json!({"artifactStore": canonical})
            );
        }
    }

    #[test]
    fn an_execution_runtime_in_another_case_is_respelled() {
        for (stored, canonical) in [
            ("auto", "Auto"),
            ("wasmedge", "WasmEdge"),
            ("container", "Container"),
        ] {
            let object = execution(json!({"functionRef": {"name": "f"}, "runtime": stored}));
            let respelling = respell(Kind::Execution, &object).expect(stored);
            assert_eq!(
                respelling.patch,
                json!({"metadata": {"resourceVersion": "42"}, "spec": {"runtime": canonical}})
            );
            let spec: WasmExecutionSpec =
                serde_json::from_value(json!({"functionRef": {"name": "f"}, "runtime": canonical}))
                    .expect("the canonical spelling is read");
            assert_eq!(written(spec.runtime), canonical);
        }
    }

    #[test]
    fn every_old_field_of_a_function_is_respelled_in_one_patch_that_names_them_all() {
        let object = function(
            json!({"language": "assemblyscript", "source": {"code": "x"},
                                     "build": {"optimization": "size"}, "artifactStore": "oci"}),
        );
        let respelling = respell(Kind::Function, &object).expect("three fields");
        assert_eq!(
            respelling.patch,
            json!({"metadata": {"resourceVersion": "41"},
                   "spec": {"artifactStore": "Oci", "build": {"optimization": "Size"},
                            "language": "AssemblyScript"}})
        );
        assert_eq!(
            respelling.note(),
            "re-spelled spec.artifactStore oci → Oci, spec.build.optimization size → Size, \
             spec.language assemblyscript → AssemblyScript as the schema asks, so updates and \
             status writes are accepted"
        );
        // The patched spec reads as the same function as before.
        let mut patched = object["spec"].clone();
        patched["language"] = json!("AssemblyScript");
        patched["build"]["optimization"] = json!("Size");
        patched["artifactStore"] = json!("Oci");
        let before: Result<WasmFunctionSpec, _> = serde_json::from_value(json!({
            "language": "assemblyscript", "source": {"code": "x"},
            "build": {"optimization": "size"}, "artifactStore": "Oci"}));
        let after: WasmFunctionSpec = serde_json::from_value(patched).expect("canonical");
        assert_eq!(before.expect("the old spellings are read"), after);
    }

    #[test]
    fn an_object_already_in_canonical_spelling_needs_no_patch() {
        let canonical = function(json!({"language": "Rust", "source": {"code": "x"},
                                        "build": {"optimization": "Speed"},
                                        "artifactStore": "ConfigMap"}));
        assert_eq!(respell(Kind::Function, &canonical), None);
        let canonical = execution(json!({"functionRef": {"name": "f"}, "runtime": "WasmEdge"}));
        assert_eq!(respell(Kind::Execution, &canonical), None);
    }

    #[test]
    fn unknown_values_are_left_for_the_operators_validation() {
        let object = function(json!({"language": "cobol", "source": {"code": "x"},
                                     "build": {"optimization": "fast"}, "artifactStore": "s3"}));
        assert_eq!(respell(Kind::Function, &object), None);
        // A short form the command line accepts is not a stored spelling either.
        assert_eq!(Language::parse("rs"), Some(Language::Rust));
        let object = function(json!({"language": "rs", "source": {"code": "x"}}));
        assert_eq!(respell(Kind::Function, &object), None);
        let object = execution(json!({"functionRef": {"name": "f"}, "runtime": "docker"}));
        assert_eq!(respell(Kind::Execution, &object), None);
    }

    #[test]
    fn an_unknown_value_beside_an_old_one_stays_and_the_old_one_is_respelled() {
        let object = function(json!({"language": "rust", "source": {"code": "x"},
                                     "build": {"optimization": "fast"}}));
        let respelling = respell(Kind::Function, &object).expect("language");
        assert_eq!(respelling.patch["spec"], json!({"language": "Rust"}));
    }

    #[test]
    fn missing_fields_and_a_missing_spec_are_left_alone() {
        let object = function(json!({"source": {"code": "x"}}));
        assert_eq!(respell(Kind::Function, &object), None);
        let object = function(json!({"language": "Go", "source": {"code": "x"}, "build": {}}));
        assert_eq!(respell(Kind::Function, &object), None);
        let object = execution(json!({"functionRef": {"name": "f"}}));
        assert_eq!(respell(Kind::Execution, &object), None);
        assert_eq!(
            respell(Kind::Function, &json!({"metadata": {"name": "f"}})),
            None
        );
        // A value of the wrong type is no spelling at all.
        let object = function(json!({"language": 7, "source": {"code": "x"},
                                     "build": {"optimization": null}}));
        assert_eq!(respell(Kind::Function, &object), None);
    }

    #[test]
    fn an_object_without_a_resource_version_gets_a_patch_without_one() {
        let object = json!({"spec": {"language": "wat"}});
        let respelling = respell(Kind::Function, &object).expect("language");
        assert_eq!(respelling.patch, json!({"spec": {"language": "Wat"}}));
    }

    #[test]
    fn a_spelling_that_matches_two_values_by_case_is_ambiguous_and_left_alone() {
        let values = vec!["Abc".to_owned(), "ABC".to_owned()];
        assert_eq!(canonical_spelling(&values, "abc"), None);
        assert_eq!(canonical_spelling(&values, "Abc"), None);
        let values = vec!["Abc".to_owned()];
        assert_eq!(canonical_spelling(&values, "aBC"), Some("Abc"));
        assert_eq!(canonical_spelling(&values, "Abc"), None);
    }
}
