//! What the generated CRD schemas let the API server refuse at `kubectl apply`: the mutually
//! exclusive fields, one casing for enum values, size limits, and no `nullable` on spec fields
//! (the API server drops the type of a nullable field from `kubectl explain`).

use kube::CustomResourceExt;
use serde_json::{json, Value};

use crate::{Language, Optimization, WasmExecution, WasmFunction};

/// The `openAPIV3Schema` of a CRD.
fn schema<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).expect("the CRD serialises");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Whether `object` passes the schema's `required`, `oneOf`, `anyOf`, `allOf` and `not` rules
/// (the combinators the apiserver evaluates on presence of fields; values are not checked).
fn passes(schema: &Value, object: &Value) -> bool {
    let required = schema["required"].as_array().into_iter().flatten();
    let has_required = required
        .filter_map(Value::as_str)
        .all(|field| object.get(field).is_some());
    let branches = |key: &str| -> Vec<bool> {
        schema[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|branch| passes(branch, object))
            .collect()
    };
    let one_of = branches("oneOf");
    let any_of = branches("anyOf");
    let all_of = branches("allOf");
    has_required
        && (one_of.is_empty() || one_of.iter().filter(|ok| **ok).count() == 1)
        && (any_of.is_empty() || any_of.contains(&true))
        && all_of.iter().all(|ok| *ok)
        && !schema.get("not").is_some_and(|not| passes(not, object))
}

/// Every `(path, node)` under `node`, following properties, items and the combinators.
fn walk<'a>(path: String, node: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.clone(), node));
    if let Some(properties) = node["properties"].as_object() {
        for (name, child) in properties {
            walk(format!("{path}.{name}"), child, out);
        }
    }
    if node["items"].is_object() {
        walk(format!("{path}[]"), &node["items"], out);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for (i, branch) in node[key].as_array().into_iter().flatten().enumerate() {
            walk(format!("{path}/{key}[{i}]"), branch, out);
        }
    }
    if node["not"].is_object() {
        walk(format!("{path}/not"), &node["not"], out);
    }
}

fn nodes(schema: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    walk(String::new(), schema, &mut out);
    out
}

#[test]
fn the_source_schema_requires_exactly_one_of_code_config_map_ref_and_base64() {
    let root = schema::<WasmFunction>();
    let source = &root["properties"]["spec"]["properties"]["source"];
    let one = [
        json!({"code": "fn main() {}"}),
        json!({"configMapRef": {"name": "src"}}),
        json!({"base64": "AGFzbQEAAAA=", "fileName": "m.wasm"}),
        json!({"code": "x", "fileName": "main.rs"}),
    ];
    for object in &one {
        assert!(passes(source, object), "refused {object}: {source:#}");
    }
    let not_one = [
        json!({}),
        json!({"fileName": "main.rs"}),
        json!({"code": "x", "base64": "AA=="}),
        json!({"code": "x", "configMapRef": {"name": "src"}}),
        json!({"configMapRef": {"name": "src"}, "base64": "AA=="}),
        json!({"code": "x", "configMapRef": {"name": "src"}, "base64": "AA=="}),
    ];
    for object in &not_one {
        assert!(!passes(source, object), "accepted {object}: {source:#}");
    }
}

#[test]
fn the_execution_schema_refuses_stdin_and_input_together_but_not_either_alone() {
    let root = schema::<WasmExecution>();
    let spec = &root["properties"]["spec"];
    let reference = json!({"name": "f"});
    for object in [
        json!({"functionRef": reference}),
        json!({"functionRef": reference, "stdin": "text"}),
        json!({"functionRef": reference, "input": {"a": 1}}),
    ] {
        assert!(passes(spec, &object), "refused {object}");
    }
    let both = json!({"functionRef": reference, "stdin": "text", "input": {"a": 1}});
    assert!(!passes(spec, &both), "accepted {both}: {spec:#}");
}

#[test]
fn the_combinators_hold_only_required_lists_as_structural_schemas_demand() {
    for root in [schema::<WasmFunction>(), schema::<WasmExecution>()] {
        let mut combinators = 0;
        for (path, node) in nodes(&root) {
            let inside =
                path.contains("/oneOf") || path.contains("/anyOf") || path.contains("/not");
            if !inside {
                continue;
            }
            combinators += 1;
            let keys: Vec<&String> = node.as_object().expect("an object").keys().collect();
            assert!(
                keys.iter()
                    .all(|k| ["required", "not", "oneOf", "anyOf"].contains(&k.as_str())),
                "{path}: {keys:?} (a structural schema allows no type, description, nullable or default here)"
            );
        }
        assert!(combinators > 0, "no combinator found in {root:#}");
    }
}

/// The env value stays nullable: on a 1.20 API server a non-nullable string field refuses `""`.
const NULLABLE: [&str; 2] = [".env[].value", ".defaults.env[].value"];

#[test]
fn no_spec_field_but_env_values_is_nullable_and_each_has_a_type_for_kubectl_explain() {
    for root in [schema::<WasmFunction>(), schema::<WasmExecution>()] {
        for (path, node) in nodes(&root["properties"]["spec"]) {
            if path.contains('/') || NULLABLE.contains(&path.as_str()) {
                continue;
            }
            assert!(node.get("nullable").is_none(), "spec{path} is nullable");
            let open = node["x-kubernetes-preserve-unknown-fields"] == true;
            assert!(
                node["type"].is_string() || open,
                "spec{path} has no type: {node}"
            );
        }
    }
    let execution = schema::<WasmExecution>();
    let spec = &execution["properties"]["spec"]["properties"];
    for (field, kind) in [
        ("stdin", "string"),
        ("timeoutMillis", "integer"),
        ("memoryLimit", "string"),
        ("maxOutputBytes", "integer"),
        ("ttlSecondsAfterFinished", "integer"),
    ] {
        assert_eq!(spec[field]["type"], kind, "spec.{field}");
    }
}

#[test]
fn every_enum_value_of_either_kind_is_pascal_case() {
    let mut enums = 0;
    for root in [schema::<WasmFunction>(), schema::<WasmExecution>()] {
        for (path, node) in nodes(&root) {
            for value in node["enum"].as_array().into_iter().flatten() {
                enums += 1;
                let text = value.as_str().expect("string enum values");
                assert!(
                    text.starts_with(|c: char| c.is_ascii_uppercase())
                        && text.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{path}: {text:?} is not PascalCase"
                );
            }
            if let Some(default) = node["default"].as_str() {
                if node["enum"].is_array() {
                    assert!(
                        default.starts_with(|c: char| c.is_ascii_uppercase()),
                        "{path}: default {default:?}"
                    );
                }
            }
        }
    }
    // language 10, optimization 3, artifactStore 2, runtime 3 and the status enums.
    assert!(enums >= 18, "{enums} enum values found");
}

#[test]
fn lower_case_names_of_earlier_objects_still_read_and_pascal_case_is_written() {
    for (old, new, builder) in [
        ("rust", "Rust", "rust"),
        ("assemblyscript", "AssemblyScript", "assemblyscript"),
        ("typescript", "TypeScript", "typescript"),
        ("javascript", "JavaScript", "javascript"),
        ("wasm", "Wasm", "wasm"),
    ] {
        let read: Language = serde_json::from_value(json!(old)).expect(old);
        assert_eq!(read, serde_json::from_value(json!(new)).expect(new));
        assert_eq!(serde_json::to_value(read).expect("serialise"), json!(new));
        assert_eq!(read.as_str(), builder, "the builder's name is unchanged");
    }
    let size: Optimization = serde_json::from_value(json!("size")).expect("size");
    assert_eq!(
        serde_json::to_value(size).expect("serialise"),
        json!("Size")
    );
    assert_eq!(size.as_str(), "size");
}

#[test]
fn an_execution_at_every_size_limit_still_fits_the_api_servers_request_limit() {
    let execution = schema::<WasmExecution>();
    let spec = &execution["properties"]["spec"]["properties"];
    let number = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("a number: {v}"));
    let args = number(&spec["args"]["maxItems"]) * number(&spec["args"]["items"]["maxLength"]);
    assert_eq!(args, 1 << 20, "args: 256 × 4096 bytes");
    let var = &spec["env"]["items"]["properties"];
    let env = number(&spec["env"]["maxItems"])
        * (number(&var["name"]["maxLength"]) + number(&var["value"]["maxLength"]));
    let stdin = number(&spec["stdin"]["maxLength"]);
    let request_limit = 3 << 19; // 1.5 MiB
    let total = args + env + stdin;
    assert!(
        total + 16 * 1024 < request_limit,
        "args {args} + env {env} + stdin {stdin} = {total} bytes leave too little of {request_limit}"
    );
}
