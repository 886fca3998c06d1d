//! Every language: a hello + stdin echo program compiled by the real toolchain and run by the
//! execution core with the expected output, and a compile error whose diagnostics point at the
//! right line.

mod support;

use support::*;
use wasmfn_compile::{
    BuildOptions, CacheOutcome, Error, Language, ModuleKind, Severity, SourceInput,
};
use wasmfn_execution::{execute, DiscardSink, Entry, Isolation, ModuleSource, RunRequest};

const STDIN: &[u8] = b"first line\nsecond line \xc3\xa9\n";

fn hello_and_echo(language: Language, input: SourceInput, greeting: &str) {
    let (outcome, _dir) = compile_fresh(language, input, BuildOptions::default());
    let outcome = outcome.unwrap_or_else(|e| panic!("{language} compile failed: {e}"));
    let manifest = &outcome.manifest;
    assert_eq!(manifest.language, language.as_str());
    assert_eq!(manifest.cache, CacheOutcome::Miss);
    assert!(manifest.artifact.digest.starts_with("sha256:"));
    assert!(manifest.cache_key.starts_with("sha256:"));
    assert!(!manifest.toolchain.is_empty());
    assert!(manifest.toolchain_invocations >= 1);
    let on_disk = std::fs::read(&outcome.artifact).expect("artifact");
    assert_eq!(on_disk.len() as u64, manifest.artifact.size);
    let written: wasmfn_compile::Manifest = serde_json::from_str(
        &std::fs::read_to_string(outcome.artifact.with_file_name("manifest.json"))
            .expect("manifest"),
    )
    .expect("manifest parses");
    assert_eq!(written.artifact, manifest.artifact);
    let stdout = stdout_of(&run(language, &outcome, STDIN));
    assert_eq!(
        stdout,
        format!("{greeting}\n{}", String::from_utf8_lossy(STDIN)),
        "{language} output"
    );
}

fn compile_error_at(language: Language, input: SourceInput, file: &str, line: u32) {
    let (outcome, _dir) = compile_fresh(language, input, BuildOptions::default());
    let error = outcome.expect_err("the source has an error");
    assert!(error.is_user_error(), "{error}");
    let Error::CompileFailed { diagnostics } = &error else {
        panic!("expected a compile error, got {error:?}");
    };
    let first = diagnostics
        .first_error()
        .unwrap_or_else(|| panic!("no error parsed: {error}"));
    assert_eq!(first.severity, Severity::Error);
    assert_eq!((first.file.as_str(), first.line), (file, line), "{error}");
    let rendered = diagnostics.render();
    assert!(
        rendered.starts_with(&format!("{file}:{line}:")),
        "rendered: {rendered}"
    );
}

fn inline(language: Language, relative: &str) -> SourceInput {
    SourceInput::Inline {
        file_name: language.default_file_name().to_owned(),
        content: std::fs::read(sources_dir().join(relative)).expect("test source"),
    }
}

#[test]
fn rust_single_file() {
    hello_and_echo(Language::Rust, source("rust/echo.rs"), "hello from rust");
    compile_error_at(
        Language::Rust,
        inline(Language::Rust, "rust/error.rs"),
        "main.rs",
        3,
    );
}

#[test]
fn rust_cargo_project() {
    let project = sources_dir().join("cargo-hello");
    hello_and_echo(
        Language::Rust,
        SourceInput::Directory(project.clone()),
        "hello from cargo",
    );
    // The same project with an error in its second module.
    let broken = scratch();
    std::fs::create_dir_all(broken.path().join("src")).expect("mkdir");
    for file in ["Cargo.toml", "src/main.rs"] {
        std::fs::copy(project.join(file), broken.path().join(file)).expect("copy");
    }
    std::fs::write(
        broken.path().join("src/greeting.rs"),
        "pub fn text() -> &'static str {\n    missing_function()\n}\n",
    )
    .expect("write");
    compile_error_at(
        Language::Rust,
        SourceInput::Directory(broken.path().to_path_buf()),
        "src/greeting.rs",
        2,
    );
}

#[test]
fn c() {
    hello_and_echo(Language::C, source("c/echo.c"), "hello from c");
    compile_error_at(Language::C, inline(Language::C, "c/error.c"), "main.c", 4);
}

#[test]
fn cpp() {
    hello_and_echo(Language::Cpp, source("cpp/echo.cpp"), "hello from cpp");
    compile_error_at(
        Language::Cpp,
        inline(Language::Cpp, "cpp/error.cpp"),
        "main.cpp",
        5,
    );
}

#[test]
fn go() {
    hello_and_echo(Language::Go, source("go/echo.go"), "hello from go");
    compile_error_at(
        Language::Go,
        inline(Language::Go, "go/error.go"),
        "main.go",
        6,
    );
}

#[test]
fn assemblyscript_command_module() {
    hello_and_echo(
        Language::AssemblyScript,
        source("assemblyscript/echo.ts"),
        "hello from assemblyscript",
    );
    compile_error_at(
        Language::AssemblyScript,
        inline(Language::AssemblyScript, "assemblyscript/error.ts"),
        "main.ts",
        3,
    );
}

#[test]
fn assemblyscript_library_module() {
    let options = BuildOptions {
        module_kind: ModuleKind::Library,
        ..BuildOptions::default()
    };
    let (outcome, _dir) = compile_fresh(
        Language::AssemblyScript,
        source("assemblyscript/library.ts"),
        options,
    );
    let outcome = outcome.expect("compiles");
    let mut request = RunRequest::command(ModuleSource::Path(outcome.artifact.clone()));
    request.entry = Entry::Invoke {
        export: "multiply".into(),
        args: vec![6.into(), 7.into()],
    };
    let execution = execute(&request, Isolation::Fork, &mut DiscardSink);
    assert!(
        execution.document.reason.succeeded(),
        "{:?}",
        execution.document
    );
    assert_eq!(
        serde_json::to_value(&execution.document.returns).expect("json"),
        serde_json::json!([42])
    );
}

#[test]
fn wat() {
    hello_and_echo(Language::Wat, source("wat/echo.wat"), "hello from wat");
    compile_error_at(
        Language::Wat,
        inline(Language::Wat, "wat/error.wat"),
        "main.wat",
        3,
    );
}

#[test]
fn prebuilt_wasm_is_validated_and_kept_byte_for_byte() {
    let wat_text = std::fs::read_to_string(sources_dir().join("wat/echo.wat")).expect("wat");
    let module = wat::parse_str(&wat_text).expect("assemble");
    let (outcome, _dir) = compile_fresh(
        Language::Wasm,
        SourceInput::Inline {
            file_name: "module.wasm".into(),
            content: module.clone(),
        },
        BuildOptions::default(),
    );
    let outcome = outcome.expect("valid module");
    assert_eq!(std::fs::read(&outcome.artifact).expect("artifact"), module);
    let stdout = stdout_of(&run(Language::Wasm, &outcome, STDIN));
    assert_eq!(
        stdout,
        format!("hello from wat\n{}", String::from_utf8_lossy(STDIN))
    );

    let mut broken = module.clone();
    broken.truncate(module.len() - 3);
    let (outcome, _dir) = compile_fresh(
        Language::Wasm,
        SourceInput::Inline {
            file_name: "module.wasm".into(),
            content: broken,
        },
        BuildOptions::default(),
    );
    let error = outcome.expect_err("truncated module");
    assert!(error.is_user_error());
    assert!(
        error
            .to_string()
            .starts_with("compile failed:\nmodule.wasm:0:0: error: invalid module"),
        "{error}"
    );
}

#[test]
fn python() {
    hello_and_echo(
        Language::Python,
        source("python/echo.py"),
        "hello from python",
    );
    compile_error_at(
        Language::Python,
        inline(Language::Python, "python/error.py"),
        "main.py",
        3,
    );
}

#[test]
fn javascript() {
    hello_and_echo(
        Language::JavaScript,
        source("javascript/echo.js"),
        "hello from javascript",
    );
    compile_error_at(
        Language::JavaScript,
        inline(Language::JavaScript, "javascript/error.js"),
        "main.js",
        3,
    );
}
