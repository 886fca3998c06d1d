//! `wasmfn run`: build a WasmFunction manifest locally and run it once — how a function author
//! tries a function without a cluster. Same core, limits and result document as `wasmfn exec`.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use clap::Args;
use wasmfn_execution::interpreter::{self, ScriptLanguage};
use wasmfn_execution::{Entry, Limits, ModuleSource, RunRequest, StdinSource};

use crate::exec::{publish, run_request, LimitArgs, OutputArgs};
use crate::manifest::{self, ExecutionSpec, Function};
use crate::options::{parse_duration, parse_size};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The WasmFunction manifest (YAML).
    manifest: PathBuf,
    /// A WasmExecution manifest giving args, env, stdin and limits.
    #[arg(long)]
    execution: Option<PathBuf>,
    /// Text for the guest's stdin (overrides the execution's).
    #[arg(long)]
    stdin: Option<String>,
    /// Guest argument (repeatable; JSON numbers for a reactor entrypoint).
    #[arg(long = "arg")]
    args: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Where to write the result document ("-" = stdout after the guest's output; default
    /// stderr).
    #[arg(long, default_value = "/dev/stderr")]
    result: String,
    /// Do not copy the guest's output to this process's stdout/stderr.
    #[arg(long)]
    quiet: bool,
}

/// Languages `run` can build locally today; the others need the compile pipeline's builders.
const LOCAL_LANGUAGES: &str = "wat, wasm, python, javascript";

pub(crate) fn run(args: RunArgs) -> Result<i32> {
    let text = std::fs::read_to_string(&args.manifest)
        .with_context(|| format!("reading {}", args.manifest.display()))?;
    let function = manifest::parse_function(&text)?;
    let execution = match &args.execution {
        Some(path) => manifest::parse_execution(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?,
        None => ExecutionSpec::default(),
    };
    let workdir = tempdir()?;
    let mut request = build(&function, &workdir)?;

    let mut limits = Limits::default();
    let defaults = &function.spec.defaults;
    if let Some(timeout) = execution.timeout.as_ref().or(defaults.timeout.as_ref()) {
        limits.timeout = parse_duration(timeout)?;
    }
    if let Some(memory) = execution
        .memory_limit
        .as_ref()
        .or(defaults.memory_limit.as_ref())
    {
        limits.memory_bytes = parse_size(memory)?;
    }
    if let Some(max) = execution.max_output_bytes {
        limits.capture_bytes = usize::try_from(max).unwrap_or(usize::MAX);
    }
    request.limits = args.limits.apply(limits)?;

    let mut env: Vec<(String, String)> = defaults.env.clone().into_iter().collect();
    env.extend(execution.env.clone());
    request.env.extend(env);
    let mut guest_args: Vec<String> = execution.args.iter().map(yaml_to_arg).collect();
    guest_args.extend(args.args.iter().cloned());
    request.stdin = match (&args.stdin, &execution.stdin, &execution.input) {
        (Some(text), _, _) | (None, Some(text), _) => StdinSource::Bytes(text.clone().into_bytes()),
        (None, None, Some(input)) => StdinSource::Bytes(serde_json::to_vec(input)?),
        (None, None, None) => StdinSource::Empty,
    };
    match &mut request.entry {
        Entry::Invoke { args: values, .. } => {
            *values = guest_args
                .iter()
                .map(|a| {
                    serde_json::from_str(a)
                        .with_context(|| format!("argument {a:?} is not a JSON number"))
                })
                .collect::<Result<_>>()?;
        }
        Entry::Command => request.args.extend(guest_args),
    }
    let output = OutputArgs {
        result: args.result.clone(),
        quiet: args.quiet,
        in_process: false,
    };
    let execution = run_request(&request, &output);
    publish(&execution, &args.result)?;
    let _ = std::fs::remove_dir_all(&workdir);
    Ok(execution.document.process_exit_code())
}

/// Turns the function's source into a runnable request (the local "compile" step).
fn build(function: &Function, workdir: &std::path::Path) -> Result<RunRequest> {
    let spec = &function.spec;
    let source = &spec.source;
    if source.code.is_none() && source.base64.is_none() {
        bail!("wasmfn run builds inline sources only (spec.source.code or spec.source.base64)");
    }
    let entry = match spec.entrypoint.as_deref() {
        None | Some("_start") => Entry::Command,
        Some(export) => Entry::Invoke {
            export: export.to_owned(),
            args: Vec::new(),
        },
    };
    let name = if function.name.is_empty() {
        "function"
    } else {
        &function.name
    };
    // The API spells languages in PascalCase (`Wat`); earlier manifests in lower case.
    let language = spec.language.to_ascii_lowercase();
    let module = match language.as_str() {
        "wat" => {
            let code = source
                .code
                .as_deref()
                .context("a wat function needs spec.source.code")?;
            wat::parse_str(code).map_err(|e| anyhow::anyhow!("compile error: {e}"))?
        }
        "wasm" => {
            let encoded = source
                .base64
                .as_deref()
                .context("a wasm function needs spec.source.base64")?;
            let cleaned: String = encoded.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .context("spec.source.base64 is not valid base64")?
        }
        language => {
            let Some(script_language) = ScriptLanguage::parse(language) else {
                bail!("language {language:?} cannot be built locally yet (supported: {LOCAL_LANGUAGES})");
            };
            let code = source
                .code
                .as_deref()
                .context("a script function needs spec.source.code")?;
            // The script's own directory: the guest sees it (read-only) and nothing else.
            let script_dir = workdir.join("script");
            std::fs::create_dir_all(&script_dir)?;
            let script = interpreter::write_script(&script_dir, script_language, code.as_bytes())?;
            let mut request = RunRequest::command(ModuleSource::Bytes(Vec::new()));
            request.entry = entry;
            return Ok(interpreter::script_request(
                request,
                script_language,
                &interpreter::interpreters_dir(),
                &script,
            ));
        }
    };
    let mut request = RunRequest::command(ModuleSource::Bytes(module));
    request.program_name = format!("{name}.wasm");
    request.entry = entry;
    Ok(request)
}

fn yaml_to_arg(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::String(text) => text.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default(),
    }
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wasmfn-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
