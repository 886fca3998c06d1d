//! `wasmfn run`: build a WasmFunction manifest locally and run it once — how a function author
//! tries a function without a cluster. The manifests are read with the API's types; the source
//! is compiled by the same pipeline as the cluster's builder (`wasmfn_compile`, the toolchains
//! `make setup` installs) and run by the same core, limits and result document as `wasmfn
//! exec`.
//!
//! Every spec field that means something on one machine is honoured: the function's
//! `language`, `source.code`/`fileName`/`base64`, `entrypoint`, `build` (optimization,
//! library, timeoutSeconds) and `defaults` (timeoutMillis, memoryLimit, env); the execution's
//! `functionRef` (checked against the function), `args`, `env`, `stdin`/`input`,
//! `invokeArgs`, `timeoutMillis`, `memoryLimit` and `maxOutputBytes`. Cluster-only fields are
//! ignored: `artifactStore`, `runtime`, `ttlSecondsAfterFinished` and `retries` (a local run
//! is one attempt with the embedded WasmEdge, like a container pod). `source.configMapRef`
//! needs `--source`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use clap::Args;
use wasmfn_api::{inputs, Language, WasmExecutionSpec, WasmFunctionSpec};
use wasmfn_compile::{
    BuildOptions, Cache, CacheConfig, CompileLimits, CompileRequest, Compiler, ModuleKind,
    SourceInput, SourceTree,
};
use wasmfn_execution::interpreter::{self, ScriptLanguage};
use wasmfn_execution::{Entry, Limits, ModuleSource, RunRequest, StdinSource};

use crate::exec::{run_request, LimitArgs, OutputArgs};
use crate::exit::usage;
use crate::manifest::{self, Manifest};
use crate::options::{optimization_level, parse_env};
use crate::output::{write_document, Fallback};
use crate::progress::{self, Progress};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The WasmFunction manifest (YAML, one WasmFunction).
    manifest: PathBuf,
    /// A WasmExecution manifest giving args, env, stdin or input, and limits (a file of
    /// several runs the first whose functionRef names the function).
    #[arg(long)]
    execution: Option<PathBuf>,
    /// Which WasmExecution of the --execution file to run (its metadata.name).
    #[arg(long, requires = "execution")]
    execution_name: Option<String>,
    /// Source file or directory to build instead of spec.source (e.g. for a configMapRef).
    #[arg(long)]
    source: Option<PathBuf>,
    /// Text for the guest's stdin (replaces the execution's stdin or input).
    #[arg(long)]
    stdin: Option<String>,
    /// Guest argument (repeatable; replaces the execution's args). For a library module's
    /// entrypoint: JSON numbers, replacing invokeArgs.
    #[arg(long = "arg")]
    args: Vec<String>,
    /// Guest environment variable KEY=VALUE (repeatable; wins over the manifests' by name).
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    env: Vec<(String, String)>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Do not use the compile cache (WASM_CACHE_DIR, default ~/.cache/wasmfn/compile).
    #[arg(long)]
    no_cache: bool,
    /// Where to write the result document: a file, or "-" for stdout after the guest's
    /// output. Default: stderr.
    #[arg(long)]
    result: Option<String>,
    /// Do not copy the guest's output to this process's stdout/stderr.
    #[arg(long)]
    quiet: bool,
}

/// What a local run takes from the two specs, by the operator's rules (`wasmfn_api::inputs`),
/// after the schema's range checks the cluster's API server would make. Limits neither spec
/// sets stay `None` and keep the runner's defaults (30 s, 128 MiB), which are the operator's
/// too.
#[derive(Debug, Default, PartialEq)]
struct Inputs {
    stdin: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    invoke_args: Vec<serde_json::Value>,
    timeout_ms: Option<u64>,
    memory_bytes: Option<u64>,
    max_output_bytes: Option<u64>,
}

fn resolve(function: &WasmFunctionSpec, execution: Option<&WasmExecutionSpec>) -> Result<Inputs> {
    let refused = |error: inputs::InputError| usage(error.message);
    inputs::admit(execution, function).map_err(refused)?;
    let resolved = inputs::resolve(execution, function).map_err(refused)?;
    Ok(Inputs {
        stdin: resolved.stdin.map(String::into_bytes),
        env: resolved.env,
        args: execution.map(|e| e.args.clone()).unwrap_or_default(),
        invoke_args: execution
            .map(|e| {
                e.invoke_args
                    .iter()
                    .cloned()
                    .map(serde_json::Value::Number)
                    .collect()
            })
            .unwrap_or_default(),
        timeout_ms: resolved.timeout_ms,
        memory_bytes: resolved.memory_bytes,
        max_output_bytes: resolved.max_output_bytes,
    })
}

impl RunArgs {
    /// The command line's values over the manifests'.
    fn apply(&self, inputs: &mut Inputs, library: bool) -> Result<()> {
        if let Some(text) = &self.stdin {
            inputs.stdin = Some(text.clone().into_bytes());
        }
        if !self.args.is_empty() {
            if library {
                inputs.invoke_args = self
                    .args
                    .iter()
                    .map(|a| {
                        serde_json::from_str(a)
                            .map_err(|_| usage(format!("--arg {a:?} is not a JSON number")))
                    })
                    .collect::<Result<_>>()?;
            } else {
                inputs.args = self.args.clone();
            }
        }
        for (name, value) in &self.env {
            wasmfn_api::inputs::set_env(&mut inputs.env, name, value.clone());
        }
        Ok(())
    }
}

pub(crate) fn run(args: RunArgs) -> Result<i32> {
    let progress = Progress::for_stderr();
    let function = manifest::read_function(&args.manifest)?;
    let execution = match &args.execution {
        Some(path) => {
            let (execution, count) = manifest::read_execution(
                path,
                &function.metadata.name,
                args.execution_name.as_deref(),
            )?;
            if count > 1 {
                progress.phase(&format!(
                    "{} holds {count} executions; running {} (--execution-name picks another)",
                    path.display(),
                    execution.metadata.name
                ));
            }
            Some(execution)
        }
        None => None,
    };
    let spec = &function.spec;
    let mut inputs = resolve(spec, execution.as_ref().map(|e| &e.spec))?;
    let library = spec.entrypoint.as_deref().is_some_and(|e| e != "_start");
    args.apply(&mut inputs, library)?;

    let workdir = tempfile::Builder::new()
        .prefix("wasmfn-run-")
        .tempdir()
        .context("creating a working directory")?;
    let mut request = match build(&function, &args, workdir.path(), progress)? {
        Built::Request(request) => *request,
        Built::CompileFailed(code) => return Ok(code),
    };

    let mut limits = Limits::default();
    if let Some(ms) = inputs.timeout_ms {
        limits.timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(bytes) = inputs.memory_bytes {
        limits.memory_bytes = bytes;
    }
    if let Some(bytes) = inputs.max_output_bytes {
        limits.capture_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    request.limits = args.limits.apply(limits)?;
    request.env.extend(inputs.env);
    request.stdin = match inputs.stdin {
        Some(bytes) => StdinSource::Bytes(bytes),
        None => StdinSource::Empty,
    };
    match &mut request.entry {
        Entry::Invoke { args: values, .. } => *values = inputs.invoke_args,
        Entry::Command => request.args.extend(inputs.args),
    }
    let name = match &execution {
        Some(execution) if !execution.metadata.name.is_empty() => &execution.metadata.name,
        _ => &function.metadata.name,
    };
    progress.phase(&progress::run_phase(
        if name.is_empty() {
            "the function"
        } else {
            name
        },
        request.limits.timeout.as_millis(),
        request.limits.memory_bytes,
    ));
    let output = OutputArgs {
        result: None,
        quiet: args.quiet,
        in_process: false,
    };
    let execution = run_request(&request, &output);
    let document = execution.document.to_json();
    write_document(
        args.result.as_deref().unwrap_or("/dev/stderr"),
        &document,
        Fallback::Stderr,
    )?;
    Ok(execution.document.process_exit_code())
}

/// What the build step produced.
enum Built {
    /// Ready to run.
    Request(Box<RunRequest>),
    /// The compile failed (reported on stderr); exit with this code.
    CompileFailed(i32),
}

/// Turns the function's source into a runnable request: a prebuilt module as given (as the
/// operator stores it), anything else through the compile pipeline.
fn build(
    function: &Manifest<WasmFunctionSpec>,
    args: &RunArgs,
    workdir: &Path,
    progress: Progress,
) -> Result<Built> {
    let spec = &function.spec;
    let source = &spec.source;
    let entry = match spec.entrypoint.as_deref() {
        None | Some("_start") => Entry::Command,
        Some(export) => Entry::Invoke {
            export: export.to_owned(),
            args: Vec::new(),
        },
    };
    let name = if function.metadata.name.is_empty() {
        "function"
    } else {
        &function.metadata.name
    };
    let given = [
        source.code.is_some(),
        source.base64.is_some(),
        source.config_map_ref.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    if args.source.is_none() && given != 1 {
        return Err(usage(
            "spec.source must set exactly one of code, configMapRef, base64",
        ));
    }
    if let (Language::Wasm, None) = (spec.language, &args.source) {
        let encoded = source.base64.as_deref().ok_or_else(|| {
            usage("language wasm takes its module from spec.source.base64 (or --source FILE)")
        })?;
        let compact: String = encoded.split_ascii_whitespace().collect();
        let module = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|error| usage(format!("spec.source.base64 is not base64: {error}")))?;
        let mut request = RunRequest::command(ModuleSource::Bytes(module));
        request.program_name = format!("{name}.wasm");
        request.entry = entry;
        return Ok(Built::Request(Box::new(request)));
    }
    let input = match (&args.source, &source.code) {
        (Some(path), _) if path.is_dir() => SourceInput::Directory(path.clone()),
        (Some(path), _) => SourceInput::File(path.clone()),
        (None, Some(code)) => SourceInput::Inline {
            file_name: source
                .file_name
                .clone()
                .unwrap_or_else(|| spec.language.default_file_name().to_owned()),
            content: code.clone().into_bytes(),
        },
        (None, None) if source.base64.is_some() => {
            return Err(usage(format!(
                "spec.source.base64 holds a prebuilt module, which needs language wasm (not {})",
                spec.language
            )))
        }
        (None, None) => {
            return Err(usage(
                "spec.source.configMapRef names a ConfigMap in the cluster; give its files with --source PATH",
            ))
        }
    };
    let defaults = CompileLimits::default();
    let request = CompileRequest {
        language: spec.language,
        source: input,
        options: BuildOptions {
            optimization: optimization_level(spec.build.optimization),
            aot: false,
            allow_network: false,
            module_kind: if spec.build.library {
                ModuleKind::Library
            } else {
                ModuleKind::Command
            },
        },
        limits: CompileLimits {
            wall_time: spec
                .build
                .timeout_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(std::time::Duration::from_secs)
                .unwrap_or(defaults.wall_time),
            ..defaults
        },
        output_dir: workdir.join("artifact"),
    };
    let mut compiler = Compiler::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.no_cache {
        let mut config: CacheConfig = compiler.cache.config().clone();
        config.enabled = false;
        compiler.cache = Cache::new(config);
    }
    let script = ScriptLanguage::parse(spec.language.as_str());
    if progress.enabled() {
        progress.phase(&compile_phase(&compiler, &request, script.is_some()));
    }
    let started = Instant::now();
    let outcome = match compiler.compile_reporting(&request, &|step| progress.step(step)) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("wasmfn run: {error}");
            return Ok(Built::CompileFailed(crate::compile::exit_code(&error)));
        }
    };
    if !outcome.warnings.is_empty() {
        eprint!("{}", outcome.warnings.render());
    }
    progress.phase(&progress::compiled_phase(
        outcome.manifest.cache == wasmfn_compile::CacheOutcome::Hit,
        started.elapsed().as_secs_f64(),
        outcome.manifest.artifact.size,
    ));
    let mut request = match script {
        Some(language) => {
            // The script's own directory: the guest sees it (read-only) and nothing else.
            let script_dir = workdir.join("script");
            std::fs::create_dir_all(&script_dir)
                .with_context(|| format!("creating {}", script_dir.display()))?;
            let bytes = std::fs::read(&outcome.artifact)
                .with_context(|| format!("reading {}", outcome.artifact.display()))?;
            let script = interpreter::write_script(&script_dir, language, &bytes)
                .context("writing the script")?;
            interpreter::script_request(
                RunRequest::command(ModuleSource::Bytes(Vec::new())),
                language,
                &interpreter::interpreters_dir(),
                &script,
            )
        }
        None => {
            let mut request = RunRequest::command(ModuleSource::Path(outcome.artifact.clone()));
            request.program_name = format!("{name}.wasm");
            request
        }
    };
    request.entry = entry;
    Ok(Built::Request(Box::new(request)))
}

/// The compile's progress line, naming the toolchain (asked only for this line, on a
/// terminal; a toolchain that cannot say is left out, the compile reports it).
fn compile_phase(compiler: &Compiler, request: &CompileRequest, script: bool) -> String {
    let tree = SourceTree::read(
        &request.source,
        request.language,
        request.limits.source_bytes,
    );
    let tools: Vec<String> = tree
        .ok()
        .and_then(|tree| {
            compiler
                .toolchains
                .identity(request.language, &tree, &compiler.identities)
                .ok()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|tool| {
            // `go version` already says "go version go1.24.4 …".
            if tool.version.contains(&tool.name) {
                tool.version
            } else {
                format!("{} {}", tool.name, tool.version)
            }
        })
        .collect();
    let file = match &request.source {
        SourceInput::Inline { file_name, .. } => file_name.clone(),
        SourceInput::File(path) | SourceInput::Directory(path) => path.display().to_string(),
    };
    progress::compile_phase(script, &file, &tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(yaml: &str) -> WasmFunctionSpec {
        serde_yaml::from_str(yaml).expect("function spec")
    }

    fn execution(yaml: &str) -> WasmExecutionSpec {
        serde_yaml::from_str(yaml).expect("execution spec")
    }

    #[test]
    fn the_execution_wins_over_the_function_defaults_field_by_field() {
        let f = function(
            "language: go\nsource: {code: x}\ndefaults:\n  timeoutMillis: 5000\n  memoryLimit: 16Mi\n  env: [{name: CURRENCY, value: EUR}, {name: KEEP, value: k}]\n",
        );
        let e = execution(
            "functionRef: {name: f}\nenv: [{name: CURRENCY, value: USD}, {name: EMPTY}]\ninput: {a: 1}\ntimeoutMillis: 10000\nmaxOutputBytes: 1024\nargs: [x]\ninvokeArgs: [1, 2.5]\n",
        );
        let inputs = resolve(&f, Some(&e)).expect("resolves");
        assert_eq!(
            inputs,
            Inputs {
                stdin: Some(b"{\"a\":1}".to_vec()),
                env: vec![
                    ("CURRENCY".into(), "USD".into()),
                    ("KEEP".into(), "k".into()),
                    ("EMPTY".into(), String::new()),
                ],
                args: vec!["x".into()],
                invoke_args: vec![serde_json::json!(1), serde_json::json!(2.5)],
                timeout_ms: Some(10_000),
                memory_bytes: Some(16 << 20),
                max_output_bytes: Some(1024),
            }
        );
        let alone = resolve(&f, None).expect("defaults alone");
        assert_eq!(
            (alone.timeout_ms, alone.memory_bytes),
            (Some(5000), Some(16 << 20))
        );
        assert_eq!(alone.env[0], ("CURRENCY".into(), "EUR".into()));
    }

    #[test]
    fn conflicting_or_impossible_values_are_usage_errors_naming_the_field() {
        let f = function("language: wat\nsource: {code: x}\n");
        for (yaml, expected) in [
            (
                "functionRef: {name: f}\nstdin: a\ninput: 1\n",
                "spec.stdin and spec.input",
            ),
            (
                "functionRef: {name: f}\ntimeoutMillis: 0\n",
                "spec.timeoutMillis 0 must be positive",
            ),
            (
                "functionRef: {name: f}\nmemoryLimit: 12X\n",
                "spec.memoryLimit: invalid size unit",
            ),
            (
                "functionRef: {name: f}\nmaxOutputBytes: -1\n",
                "spec.maxOutputBytes -1",
            ),
        ] {
            let error = resolve(&f, Some(&execution(yaml))).expect_err(yaml);
            assert_eq!(crate::exit::code_of(&error), crate::exit::USAGE);
            assert!(format!("{error:#}").contains(expected), "{error:#}");
        }
    }

    #[test]
    fn a_manifest_the_cluster_would_refuse_is_refused_here_with_the_clusters_reason() {
        // What the API server's schema or the operator refuses: before the rules were shared,
        // `wasmfn run` ran all of these.
        let f = function("language: wat\nsource: {code: x}\n");
        let big = "x".repeat(wasmfn_api::inputs::MAX_STDIN_BYTES + 1);
        for (yaml, expected) in [
            (
                format!("functionRef: {{name: f}}\nstdin: {big}\n"),
                "stdin is 262145 bytes",
            ),
            (
                "functionRef: {name: f}\nmemoryLimit: 1k\n".to_owned(),
                "memoryLimit 1000 bytes is below one WebAssembly page",
            ),
            (
                "functionRef: {name: f}\nmemoryLimit: 1K\n".to_owned(),
                "spec.memoryLimit: invalid size unit \"K\"",
            ),
            (
                "functionRef: {name: f}\nmaxOutputBytes: 65537\n".to_owned(),
                "spec.maxOutputBytes 65537 is over 65536",
            ),
            (
                "functionRef: {name: f}\ntimeoutMillis: 86400001\n".to_owned(),
                "spec.timeoutMillis 86400001 is over 86400000",
            ),
        ] {
            // Not `expect_err`: its message would print the whole stdin.
            let Err(error) = resolve(&f, Some(&execution(&yaml))) else {
                panic!("resolved, expected {expected:?}");
            };
            assert_eq!(crate::exit::code_of(&error), crate::exit::USAGE);
            assert!(format!("{error:#}").starts_with(expected), "{error:#}");
        }
        let at_bounds = execution(
            "functionRef: {name: f}\nmemoryLimit: 64Ki\nmaxOutputBytes: 65536\ntimeoutMillis: 86400000\n",
        );
        let inputs = resolve(&f, Some(&at_bounds)).expect("at the bounds");
        assert_eq!(
            (
                inputs.memory_bytes,
                inputs.max_output_bytes,
                inputs.timeout_ms
            ),
            (Some(64 << 10), Some(65536), Some(86_400_000))
        );
    }
}
