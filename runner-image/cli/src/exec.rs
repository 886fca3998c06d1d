//! `wasmfn exec` and `wasmfn aot`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use wasmfn_execution::artifact::ModuleBytes;
use wasmfn_execution::interpreter;
use wasmfn_execution::result::run_settings::{Invoke, RunSettings};
use wasmfn_execution::result::trace::{TraceParent, TRACEPARENT_ENV};
use wasmfn_execution::{
    aot, execute, DiscardSink, Execution, ForwardSink, Isolation, Limits, ModuleSource, OutputSink,
    Preopen, RunRequest, StdinSource,
};

use crate::options::{parse_duration, parse_env, parse_size, ScriptArg};
use crate::output::{write_document, Fallback, TERMINATION_LOG};

/// Limits shared by `exec` and `run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LimitArgs {
    /// Wall-clock timeout (e.g. 30s, 500ms); the guest is killed when it expires.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,
    /// Linear-memory limit (e.g. 128Mi); enforced as a WebAssembly page cap.
    #[arg(long, value_parser = parse_size)]
    pub(crate) memory: Option<u64>,
    /// Bytes of each stream kept in the result (the full stream still goes to stdout/stderr).
    #[arg(long, value_parser = parse_size)]
    pub(crate) max_output: Option<u64>,
    /// Bytes a guest may write to stdout or stderr before it is stopped ("none" for no limit).
    #[arg(long)]
    pub(crate) output_limit: Option<String>,
}

impl LimitArgs {
    /// Applies these options over `limits`.
    pub(crate) fn apply(&self, mut limits: Limits) -> Result<Limits> {
        if let Some(timeout) = self.timeout {
            limits.timeout = timeout;
        }
        if let Some(memory) = self.memory {
            limits.memory_bytes = memory;
        }
        if let Some(max_output) = self.max_output {
            limits.capture_bytes = usize::try_from(max_output).unwrap_or(usize::MAX);
        }
        if let Some(limit) = &self.output_limit {
            limits.output_limit_bytes =
                match limit.as_str() {
                    "none" | "unlimited" => None,
                    text => Some(parse_size(text).map_err(|error| {
                        crate::exit::usage(format!("--output-limit: {error:#}"))
                    })?),
                };
        }
        Ok(limits)
    }
}

/// How the result document and the streams are published.
#[derive(Debug, Clone, Args)]
pub(crate) struct OutputArgs {
    /// Where to write the result document: a file, or "-" for stdout after the guest's
    /// output. Default: /dev/termination-log when it exists (inside a pod, where the operator
    /// reads it), else stderr; nothing is ever created in /dev.
    #[arg(long)]
    pub(crate) result: Option<String>,
    /// Do not copy the guest's stdout/stderr to this process's stdout/stderr.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Run in this process instead of a forked child (lower overhead; buffered output; the
    /// timeout relies on WasmEdge's interruption).
    #[arg(long)]
    pub(crate) in_process: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Guest environment variable KEY=VALUE (repeatable). The host environment is not passed.
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Directory to make visible to the guest, GUEST:HOST (repeatable). None by default.
    #[arg(long = "dir")]
    dirs: Vec<String>,
    /// File whose contents are the guest's stdin.
    #[arg(long, conflicts_with = "stdin")]
    stdin_file: Option<PathBuf>,
    /// Text that is the guest's stdin.
    #[arg(long)]
    stdin: Option<String>,
    /// Call this export of a library (reactor) module instead of `_start`.
    #[arg(long)]
    invoke: Option<String>,
    /// Arguments for `--invoke` as a JSON array of numbers, e.g. '[1, 2]'.
    #[arg(long, requires = "invoke")]
    args: Option<String>,
    /// AOT form to use when it matches the module (default: MODULE.aot.so when present; none
    /// for a packed artifact).
    #[arg(long, conflicts_with = "no_aot")]
    aot: Option<PathBuf>,
    /// Always use the interpreter.
    #[arg(long)]
    no_aot: bool,
    /// Treat MODULE as a script in this language, run by its interpreter module.
    #[arg(long, value_enum)]
    language: Option<ScriptArg>,
    /// Refuse to run unless the module has this digest (sha256:<hex>).
    #[arg(long)]
    expect_digest: Option<String>,
    /// W3C traceparent of the caller: the result document then carries this run's spans
    /// (run, load, instantiate, invoke) as its children. An invalid value only costs the spans.
    #[arg(long, env = TRACEPARENT_ENV)]
    traceparent: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// The module (.wasm), a packed artifact (its directory or artifact.json, as the ConfigMap
    /// store's volume mounts it), or a script.
    module: PathBuf,
    /// Arguments passed to the guest (after `--` when they start with a dash).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    guest_args: Vec<String>,
}

impl ExecArgs {
    /// The run contract these flags carry: what the operator wrote with
    /// [`RunSettings::to_exec_args`] (the flags outside the contract — `--stdin`, `--dir`,
    /// `--output-limit`, AOT and output options — are this command's own).
    fn settings(&self) -> Result<RunSettings> {
        let invoke = match &self.invoke {
            Some(export) => Some(Invoke {
                export: export.clone(),
                args: parse_invoke_args(self.args.as_deref())?,
            }),
            None => None,
        };
        Ok(RunSettings {
            timeout_ms: self
                .limits
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            memory_bytes: self.limits.memory,
            max_output_bytes: self.limits.max_output,
            invoke,
            stdin_file: self
                .stdin_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            env: self.env.clone(),
            args: self.guest_args.clone(),
            traceparent: self.traceparent.clone(),
        })
    }
}

/// `wasmfn exec`: returns the exit code to leave with.
pub(crate) fn exec(args: ExecArgs) -> Result<i32> {
    let settings = args.settings()?;
    let program_name = args
        .module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "main.wasm".into());
    let mut request = RunRequest::with_settings(
        ModuleSource::Path(args.module.clone()),
        program_name,
        &settings,
    );
    if let Some(text) = &args.stdin {
        request.stdin = StdinSource::Bytes(text.clone().into_bytes());
    }
    request.preopens = args.dirs.iter().map(|d| Preopen::parse(d)).collect();
    request.limits = args.limits.apply(request.limits)?;
    // The digest names what was stored (module or script), so it is checked before a script's
    // request is rewritten to run its interpreter.
    if let Some(expected) = &args.expect_digest {
        if let Err(error) = ModuleBytes::from_source(&request.module)?.verify(expected) {
            anyhow::bail!("{error}");
        }
    }
    let mut _staged = None;
    if let Some(language) = args.language {
        request = interpreter::script_request(
            request,
            language.script_language(),
            &interpreter::interpreters_dir(),
            &args.module,
        );
        if args.no_aot {
            request.aot = None;
        }
    } else {
        // A stored script (the packed form with a script's media type) runs under its
        // interpreter; the script is staged in the temporary directory for the run.
        let resolved = interpreter::resolve_stored_script(
            request,
            &interpreter::interpreters_dir(),
            &std::env::temp_dir(),
        )
        .context("cannot stage the script in the temporary directory")?;
        request = resolved.request;
        if resolved.staged.is_some() {
            if args.no_aot {
                request.aot = None;
            }
        } else if !args.no_aot {
            request.aot = match &args.aot {
                Some(path) => Some(path.clone()),
                None => aot::implicit_for(&args.module),
            };
        }
        _staged = resolved.staged;
    }
    let parent = settings.traceparent.as_deref().and_then(|text| {
        TraceParent::parse(text)
            .inspect_err(|error| eprintln!("wasmfn: no spans recorded: {error}"))
            .ok()
    });
    let started = std::time::SystemTime::now();
    let mut execution = run_request(&request, &args.output);
    if let Some(parent) = &parent {
        execution
            .document
            .attach_trace(parent, "wasmfn-runner", started);
    }
    publish(&execution, args.output.result.as_deref())?;
    Ok(execution.document.process_exit_code())
}

/// Runs a request with the output options (shared by `exec` and `run`).
pub(crate) fn run_request(request: &RunRequest, output: &OutputArgs) -> Execution {
    let isolation = if output.in_process {
        Isolation::InProcess
    } else {
        Isolation::Fork
    };
    let mut forward = ForwardSink;
    let mut discard = DiscardSink;
    let sink: &mut dyn OutputSink = if output.quiet {
        &mut discard
    } else {
        &mut forward
    };
    execute(request, isolation, sink)
}

/// Writes the result document where asked: by default the termination log inside a pod (the
/// operator reads it there), and stderr outside one.
pub(crate) fn publish(execution: &Execution, target: Option<&str>) -> Result<()> {
    write_document(
        target.unwrap_or(TERMINATION_LOG),
        &execution.document.to_json(),
        Fallback::Stderr,
    )
    .context("writing the result document")
}

fn parse_invoke_args(text: Option<&str>) -> Result<Vec<serde_json::Value>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|error| crate::exit::usage(format!("--args {text:?} is not JSON: {error}")))?;
    match value {
        serde_json::Value::Array(values) => Ok(values),
        single => Ok(vec![single]),
    }
}

#[derive(Debug, Args)]
pub(crate) struct AotArgs {
    /// The module to compile.
    module: PathBuf,
    /// Output file, named *.so (default: MODULE.aot.so); metadata goes to OUTPUT.json.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Compile even when OUTPUT already is a matching AOT form of this module.
    #[arg(long)]
    force: bool,
}

/// `wasmfn aot`.
pub(crate) fn aot(args: AotArgs) -> Result<i32> {
    let output = args
        .output
        .unwrap_or_else(|| aot::default_path_for(&args.module));
    let module = ModuleBytes::read(&args.module)?;
    if !args.force && aot::check(&output, &module).is_ok() {
        eprintln!(
            "wasmfn: {} is up to date for {} ({})",
            output.display(),
            args.module.display(),
            module.sha256()
        );
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let metadata = aot::compile(&module, &output)
        .with_context(|| format!("compiling {}", args.module.display()))?;
    eprintln!(
        "wasmfn: compiled {} ({}) to {} in {:.1}s with WasmEdge {}",
        args.module.display(),
        metadata.module_sha256,
        output.display(),
        started.elapsed().as_secs_f64(),
        metadata.wasmedge_version
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Exec {
        #[command(flatten)]
        args: ExecArgs,
    }

    /// Parses what the operator would write for a container pod (`wasmfn exec …`).
    fn parse(settings: &RunSettings) -> ExecArgs {
        let words = settings.to_exec_args("/artifact");
        assert_eq!(words[0], "exec");
        Exec::try_parse_from(
            std::iter::once("wasmfn-exec".to_owned()).chain(words.into_iter().skip(1)),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .args
    }

    #[test]
    fn the_exec_flags_carry_every_setting_of_the_run_contract_back() {
        for settings in [RunSettings::every_field_set(), RunSettings::default()] {
            let parsed = parse(&settings);
            assert_eq!(parsed.module, PathBuf::from("/artifact"));
            assert_eq!(parsed.settings().expect("settings"), settings);
        }
    }
}
