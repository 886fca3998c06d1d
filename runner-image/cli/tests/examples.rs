//! `wasmfn run` on every file in `examples/`: each function with each WasmExecution of its
//! executions file, compiled by the real toolchains (`make setup`; a missing one fails, never
//! skips) into a compile cache of this test run, and checked for the output
//! `examples/README.md` describes. A new example file without an expectation here fails too.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("WASMFN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/wasmfn"))
}

/// What each example prints for its executions (every execution of a file runs the same input).
const EXPECTED: [(&str, &str); 10] = [
    (
        "rust",
        "{\"lines\":2,\"words\":15,\"bytes\":75,\"top\":[{\"word\":\"the\",\"count\":4},{\"word\":\"dog\",\"count\":2}]}\n",
    ),
    (
        "c",
        "{\"count\":6,\"min\":-2,\"max\":9,\"mean\":3.16667,\"sum\":19}\n",
    ),
    (
        "cpp",
        "[{\"city\":\"Lyon\",\"country\":\"FR\",\"population\":522969},{\"city\":\"Porto\",\"country\":\"PT\",\"population\":231800},{\"city\":\"Graz\",\"country\":\"AT\",\"population\":298479}]\n",
    ),
    (
        "go",
        "{\"items\":2,\"units\":3,\"subtotal\":21.99,\"discount\":2.2,\"total\":19.79,\"currency\":\"USD\"}\n",
    ),
    (
        "assemblyscript",
        "{\"n\":30,\"fib\":\"832040\",\"sequence\":[0,1,1,2,3,5,8,13,21,34,55,89,144,233,377,610,987,1597,2584,4181]}\n",
    ),
    (
        "typescript",
        "{\"bytes\":11,\"fnv1a32\":\"d58b3fa7\",\"adler32\":\"1a0b045d\"}\n",
    ),
    ("wat", "HELLO FROM A WASMEXECUTION\n"),
    ("wasm", "{\"bytes\":14,\"lines\":3}\n"),
    (
        "python",
        "{\"cellar\": {\"count\": 1, \"max\": 12.25, \"mean\": 12.25, \"min\": 12.25}, \"hall\": {\"count\": 2, \"max\": 21.5, \"mean\": 21.0, \"min\": 20.5}}\n",
    ),
    (
        "javascript",
        "{\"text\":\"Hello Ada, you have 3 new messages {emoji}\",\"missing\":[\"emoji\"]}\n",
    ),
];

/// The `metadata.name` of every document in an executions file.
fn execution_names(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            value["metadata"]["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn yaml_stems(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_example_file_has_an_expectation_and_a_partner() {
    let functions = yaml_stems(&examples_dir().join("functions"));
    let executions = yaml_stems(&examples_dir().join("executions"));
    let expected: BTreeSet<String> = EXPECTED.iter().map(|(l, _)| (*l).to_owned()).collect();
    assert_eq!(functions, expected, "examples/functions vs this test");
    assert_eq!(executions, expected, "examples/executions vs this test");
}

/// Runs every execution of `examples/executions/<example>.yaml` against its function.
fn runs_as_documented(example: &str) {
    let expected = EXPECTED.iter().find(|(l, _)| *l == example).unwrap().1;
    let function = examples_dir().join(format!("functions/{example}.yaml"));
    let executions = examples_dir().join(format!("executions/{example}.yaml"));
    let names = execution_names(&executions);
    assert_eq!(
        names.len(),
        2,
        "{example}: a WasmEdge and a Container execution"
    );
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(scratch).unwrap();
    let dir = tempfile::tempdir_in(scratch).unwrap();
    for name in &names {
        let result = dir.path().join(format!("{name}.json"));
        let output = Command::new(env!("CARGO_BIN_EXE_wasmfn"))
            .arg("run")
            .arg(&function)
            .arg("--execution")
            .arg(&executions)
            .args(["--execution-name", name, "--result"])
            .arg(&result)
            // A compile cache of this test's own (so the toolchains really run), Go's build
            // cache shared with the compile suites under the target directory.
            .env("WASM_CACHE_DIR", dir.path().join("compile-cache"))
            .env("WASMFN_GO_CACHE", scratch.join("go-build-cache"))
            .env("WASMFN_INTERPRETERS", cache_dir().join("interpreters"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{example} {name}: {stderr}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            expected,
            "{example} {name}"
        );
        // Not a terminal: nothing but the guest's own stderr (none here) on stderr.
        assert_eq!(stderr, "", "{example} {name}");
        let document: Value =
            serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
        assert_eq!(document["reason"], "Completed", "{example} {name}");
    }
}

#[test]
fn rust_example_runs_as_documented() {
    runs_as_documented("rust");
}

#[test]
fn c_example_runs_as_documented() {
    runs_as_documented("c");
}

#[test]
fn cpp_example_runs_as_documented() {
    runs_as_documented("cpp");
}

#[test]
fn go_example_runs_as_documented() {
    runs_as_documented("go");
}

#[test]
fn assemblyscript_example_runs_as_documented() {
    runs_as_documented("assemblyscript");
}

#[test]
fn typescript_example_runs_as_documented() {
    runs_as_documented("typescript");
}

#[test]
fn wat_example_runs_as_documented() {
    runs_as_documented("wat");
}

#[test]
fn wasm_example_runs_as_documented() {
    runs_as_documented("wasm");
}

#[test]
fn python_example_runs_as_documented() {
    runs_as_documented("python");
}

#[test]
fn javascript_example_runs_as_documented() {
    runs_as_documented("javascript");
}
