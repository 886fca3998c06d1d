//! The WasmEdge embedding: preparing a module (load + validate, or map its AOT form, and check
//! the entry point and arguments) and running it once with WasmEdge's built-in WASI.
//!
//! Preparing and running are separate so a warm process can prepare once and run many times
//! (in a forked child per run, see [`crate::isolation`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmedge_sdk::config::Config;
use wasmedge_sdk::error::{CoreCommonError, CoreError, WasmEdgeError};
use wasmedge_sdk::wasi::WasiModule;
use wasmedge_sdk::{ExternalInstanceType, Module, Store, Vm, WasmValue};
use wasmfn_artifact::NativeCodeError;

use crate::aot;
use crate::arguments;
use crate::artifact::ModuleBytes;
use crate::diagnostics::DiagnosticLog;
use crate::request::{Entry, Limits, Preopen, RunRequest};
use crate::result::{ModuleInfo, Reason, ReturnValue, RuntimeInfo};
use crate::runtime::{config_for, runtime_version, silence_runtime_log, NativeCode};

/// A run that ended before the guest could start.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Why.
    pub reason: Reason,
    /// Detail for the result document.
    pub message: String,
    /// The module, when it could be read.
    pub module: Option<ModuleInfo>,
    /// Runtime details known so far.
    pub runtime: RuntimeInfo,
    /// Time spent loading.
    pub load_ms: f64,
}

/// A module ready to run: loaded and validated (or its AOT form mapped), entry point and
/// arguments checked against the export's signature.
#[derive(Debug, Clone)]
pub struct PreparedModule {
    module: Module,
    config: Config,
    params: Vec<WasmValue>,
    call_initialize: bool,
    entry: Entry,
    /// The module's identity, for the result document.
    pub info: ModuleInfo,
    /// Runtime name/version and whether AOT code will run.
    pub runtime: RuntimeInfo,
    /// How long loading took.
    pub load_ms: f64,
}

impl PreparedModule {
    /// The same loaded module for a run under `limits`: the page cap belongs to the store a run
    /// instantiates into, not to the loaded module, so a module loaded once (the agent's
    /// interpreters, loaded when its zygote starts) serves runs with any memory limit. The
    /// copy's load time is zero: this run loads nothing.
    pub fn with_limits(&self, limits: &Limits) -> Result<PreparedModule, crate::Error> {
        let native_code = if self.runtime.aot {
            NativeCode::FromVerifiedAot
        } else {
            NativeCode::Forbidden
        };
        Ok(PreparedModule {
            module: self.module.clone(),
            config: config_for(limits, native_code)?,
            params: self.params.clone(),
            call_initialize: self.call_initialize,
            entry: self.entry.clone(),
            info: self.info.clone(),
            runtime: self.runtime.clone(),
            load_ms: 0.0,
        })
    }

    /// The linear-memory limit in bytes (page cap × 64 KiB).
    pub fn memory_limit_bytes(&self) -> u64 {
        u64::from(self.config.max_memory_pages()) * crate::request::WASM_PAGE_BYTES
    }
}

/// The basic runtime description before any AOT decision.
pub fn runtime_info() -> RuntimeInfo {
    RuntimeInfo {
        name: "wasmedge".to_owned(),
        version: runtime_version(),
        aot: false,
        aot_source: None,
        aot_rejected: None,
    }
}

/// Loads, validates and checks a module for `request`.
pub fn prepare(request: &RunRequest) -> Result<PreparedModule, Box<Rejection>> {
    silence_runtime_log();
    let started = Instant::now();
    let mut runtime = runtime_info();
    let reject = |reason, message: String, module: Option<ModuleInfo>, runtime: &RuntimeInfo| {
        Box::new(Rejection {
            reason,
            message,
            module,
            runtime: runtime.clone(),
            load_ms: elapsed_ms(started),
        })
    };
    let bytes = ModuleBytes::from_source(&request.module)
        .map_err(|e| reject(Reason::InvalidModule, e.to_string(), None, &runtime))?;
    let info = ModuleInfo {
        sha256: bytes.sha256(),
        size: bytes.bytes().len() as u64,
        entrypoint: request.entry.export_name().to_owned(),
    };
    if !bytes.bytes().starts_with(b"\0asm") {
        return Err(reject(
            Reason::InvalidModule,
            "not a WebAssembly module (the file does not start with the \\0asm magic)".into(),
            Some(info),
            &runtime,
        ));
    }
    if let Err(refusal) = wasmfn_artifact::check_no_native_code(bytes.bytes()) {
        let (reason, message) = match refusal {
            NativeCodeError::Found { .. } => (Reason::NativeCodeSection, refusal.to_string()),
            // Worded like the loader's own refusals.
            NativeCodeError::Malformed { .. } => {
                (Reason::InvalidModule, format!("invalid module: {refusal}"))
            }
        };
        return Err(reject(reason, message, Some(info), &runtime));
    }

    let mut loaded = None;
    if let Some(aot_path) = &request.aot {
        let config = config_for(&request.limits, NativeCode::FromVerifiedAot)
            .map_err(|e| reject(Reason::InternalError, e.to_string(), None, &runtime))?;
        match load_aot(aot_path, request.aot_metadata.as_ref(), &bytes, &config) {
            Ok((module, source)) => {
                loaded = Some((module, config));
                runtime.aot = true;
                runtime.aot_source = Some(source);
            }
            Err(why) => runtime.aot_rejected = Some(why),
        }
    }
    let (module, config) = match loaded {
        Some(loaded) => loaded,
        None => load_untrusted(&bytes, &request.limits)
            .map_err(|(reason, message)| reject(reason, message, Some(info.clone()), &runtime))?,
    };

    let export = request.entry.export_name();
    let signature = match module.get_export(export) {
        Some(ExternalInstanceType::Func(signature)) => signature,
        Some(other) => {
            return Err(reject(
                Reason::MissingExport,
                format!("export {export:?} is not a function ({other:?})"),
                Some(info),
                &runtime,
            ))
        }
        None => {
            let functions: Vec<String> = module
                .exports()
                .iter()
                .filter(|e| matches!(e.ty(), Ok(ExternalInstanceType::Func(_))))
                .map(|e| e.name().into_owned())
                .take(20)
                .collect();
            return Err(reject(
                Reason::MissingExport,
                format!(
                    "the module has no function export {export:?} (function exports: {})",
                    functions.join(", ")
                ),
                Some(info),
                &runtime,
            ));
        }
    };
    let (params, call_initialize) = match &request.entry {
        Entry::Command => {
            if !signature.args().is_empty() {
                return Err(reject(
                    Reason::BadArguments,
                    "_start must take no parameters".into(),
                    Some(info),
                    &runtime,
                ));
            }
            (Vec::new(), false)
        }
        Entry::Invoke { args, .. } => {
            let params = arguments::to_wasm_values(signature.args(), args)
                .map_err(|e| reject(Reason::BadArguments, e, Some(info.clone()), &runtime))?;
            let has_initialize = matches!(
                module.get_export("_initialize"),
                Some(ExternalInstanceType::Func(_))
            );
            (params, has_initialize)
        }
    };
    Ok(PreparedModule {
        module,
        config,
        params,
        call_initialize,
        entry: request.entry.clone(),
        info,
        runtime,
        load_ms: elapsed_ms(started),
    })
}

/// Loads the AOT form at `aot_path` when it was compiled from exactly these bytes; returns the
/// module and where its native code came from (for the result document). `in_memory` is the
/// metadata of a form held in memory (its path names no file worth reporting).
fn load_aot(
    aot_path: &Path,
    in_memory: Option<&aot::AotMetadata>,
    bytes: &ModuleBytes,
    config: &Config,
) -> Result<(Module, String), String> {
    let (metadata, origin) = match in_memory {
        Some(metadata) => {
            aot::check_metadata(metadata, bytes)?;
            (metadata.clone(), "precompiled layer".to_owned())
        }
        None => (aot::check(aot_path, bytes)?, aot_path.display().to_string()),
    };
    let module = Module::from_file(Some(config), aot_path)
        .map_err(|e| format!("AOT form {origin} failed to load: {e}"))?;
    let source = format!(
        "{origin} (compiled by wasmfn from {} with WasmEdge {})",
        metadata.module_sha256, metadata.wasmedge_version
    );
    Ok((module, source))
}

/// Loads and validates module bytes a user supplied, with native code forbidden.
fn load_untrusted(
    bytes: &ModuleBytes,
    limits: &Limits,
) -> Result<(Module, Config), (Reason, String)> {
    let config = config_for(limits, NativeCode::Forbidden)
        .map_err(|e| (Reason::InternalError, e.to_string()))?;
    let module = Module::from_bytes(Some(&config), bytes.bytes())
        .map_err(|e| (Reason::InvalidModule, format!("invalid module: {e}")))?;
    Ok((module, config))
}

/// The guest's view of the host: argv, environment and directories.
#[derive(Debug, Clone, Default)]
pub struct GuestView {
    /// `argv`, including `argv[0]`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// `GUEST:HOST` strings.
    pub preopens: Vec<String>,
}

impl GuestView {
    /// The view a request describes.
    pub fn from_request(request: &RunRequest) -> Self {
        GuestView {
            argv: std::iter::once(request.program_name.clone())
                .chain(request.args.iter().cloned())
                .collect(),
            env: request
                .env
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
            preopens: request.preopens.iter().map(preopen_spec).collect(),
        }
    }
}

fn preopen_spec(preopen: &Preopen) -> String {
    let mode = if preopen.read_only { ":readonly" } else { "" };
    format!("{}:{}{mode}", preopen.guest, preopen.host.display())
}

/// What one run of a prepared module produced (streams aside). Crosses the pipe from the forked
/// child to the parent, hence serializable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestOutcome {
    /// Why the run ended.
    pub reason: Reason,
    /// The guest's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Trap or error detail.
    pub message: String,
    /// Reactor results.
    pub returns: Vec<ReturnValue>,
    /// Instantiation time.
    pub instantiate_ms: f64,
    /// Execution time.
    pub run_ms: f64,
}

impl GuestOutcome {
    /// An outcome for a run that ended before the guest ran.
    pub(crate) fn failed(reason: Reason, message: String) -> Self {
        GuestOutcome {
            reason,
            exit_code: None,
            message,
            returns: Vec::new(),
            instantiate_ms: 0.0,
            run_ms: 0.0,
        }
    }
}

/// Instantiates `prepared` with WASI (`view`) and runs its entry point on the calling thread.
///
/// The guest's stdio are this process's fds 0/1/2 (WasmEdge's WASI has no per-guest
/// redirection), so callers point those at the right place first. `timeout` uses WasmEdge's
/// own interruption (a signal-driven longjmp) and is meant for the in-process mode; the
/// isolated mode kills the child instead and passes `None`.
pub fn run_guest(
    prepared: &PreparedModule,
    view: &GuestView,
    timeout: Option<Duration>,
) -> GuestOutcome {
    let diagnostics = DiagnosticLog::begin();
    let mut outcome = run_guest_inner(prepared, view, timeout);
    let log = diagnostics.finish();
    // The memory limit shows only in WasmEdge's log, in two distinct lines: an initial memory
    // above the cap ("Limited N page in configuration"; WasmEdge then instantiates anyway, with
    // less memory than the module declared — never acceptable) and a refused `memory.grow`
    // ("Memory grow page failed"; the guest just sees -1), which counts only when the guest
    // then failed — an allocator may recover from a refused grow.
    let initial_over_cap = log.contains("Memory Instance: Limited");
    let grow_refused = log.contains("Memory grow page failed");
    let pages = prepared.config.max_memory_pages();
    if initial_over_cap {
        outcome.message = format!(
            "the module's initial memory is larger than the limit of {pages} pages ({} MiB)",
            pages / 16
        );
        outcome.reason = Reason::MemoryLimitExceeded;
    } else if grow_refused && !outcome.reason.succeeded() {
        outcome.message = format!(
            "memory limit of {pages} pages ({} MiB) exceeded: a memory.grow was refused and then {}",
            pages / 16,
            outcome_detail(&outcome)
        );
        outcome.reason = Reason::MemoryLimitExceeded;
    } else if outcome.reason == Reason::Trap && log.contains("Accessing offset from: 0xffff") {
        // Rust and C keep their stack in linear memory, growing down from a fixed address; a
        // stack that overflows wraps the stack pointer below zero, so the faulting access is
        // just under 4 GiB. No ordinary out-of-bounds access lands there.
        outcome.reason = Reason::StackOverflow;
        outcome.message = format!(
            "the guest's stack in linear memory overflowed ({})",
            compact_log(&log)
        );
    } else if outcome.reason == Reason::Trap && !log.is_empty() && outcome.message.len() < 200 {
        // The log says where the trap happened; worth keeping (trimmed) next to the trap kind.
        outcome.message = format!("{}; {}", outcome.message, compact_log(&log));
    }
    outcome
}

fn outcome_detail(outcome: &GuestOutcome) -> String {
    match outcome.exit_code {
        Some(code) => format!("the guest exited with {code}"),
        None if outcome.message.is_empty() => outcome.reason.to_string(),
        None => outcome.message.clone(),
    }
}

/// The imports no runner provides (anything outside WASI preview 1), named for the message of
/// a failed instantiation: `; the module imports env.nope, which runners do not provide (only
/// wasi_snapshot_preview1)`, or nothing when every import is WASI.
fn foreign_imports(imports: impl Iterator<Item = (String, String)>) -> String {
    const SHOWN: usize = 5;
    let foreign: Vec<String> = imports
        .filter(|(module, _)| module != "wasi_snapshot_preview1")
        .map(|(module, name)| format!("{module}.{name}"))
        .collect();
    if foreign.is_empty() {
        return String::new();
    }
    let more = foreign.len().saturating_sub(SHOWN);
    format!(
        "; the module imports {}{}, which runners do not provide (only wasi_snapshot_preview1)",
        foreign[..foreign.len().min(SHOWN)].join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

fn compact_log(log: &str) -> String {
    // Lines look like `[2026-01-01 00:00:00.000] [error] text`; keep the text.
    log.lines()
        .filter_map(|line| line.split("] ").last())
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .take(6)
        .collect::<Vec<_>>()
        .join("; ")
}

fn run_guest_inner(
    prepared: &PreparedModule,
    view: &GuestView,
    timeout: Option<Duration>,
) -> GuestOutcome {
    let mut wasi = match WasiModule::create(
        Some(as_refs(&view.argv)),
        Some(as_refs(&view.env)),
        Some(as_refs(&view.preopens)),
    ) {
        Ok(wasi) => wasi,
        Err(e) => return GuestOutcome::failed(Reason::InternalError, format!("WASI setup: {e}")),
    };
    let instantiate_started = Instant::now();
    let mut instances = HashMap::new();
    instances.insert("wasi_snapshot_preview1".to_owned(), wasi.as_mut());
    let store = match Store::new(Some(&prepared.config), instances) {
        Ok(store) => store,
        Err(e) => return GuestOutcome::failed(Reason::InternalError, format!("store: {e}")),
    };
    let mut vm = Vm::new(store);
    if let Err(e) = vm.register_module(None, prepared.module.clone()) {
        // Unknown or mistyped imports, data segments out of range, initial memory over the
        // limit: the module cannot run here.
        let foreign = foreign_imports(
            prepared
                .module
                .imports()
                .iter()
                .map(|i| (i.module_name().into_owned(), i.name().into_owned())),
        );
        let mut outcome = GuestOutcome::failed(
            Reason::InvalidModule,
            format!("instantiation failed: {e}{foreign}"),
        );
        outcome.instantiate_ms = elapsed_ms(instantiate_started);
        return outcome;
    }
    let instantiate_ms = elapsed_ms(instantiate_started);
    let run_started = Instant::now();
    let mut call = |name: &str, params: Vec<WasmValue>| match timeout {
        Some(timeout) => vm.run_func_with_timeout(None, name, params, timeout),
        None => vm.run_func(None, name, params),
    };
    let result = if prepared.call_initialize {
        call("_initialize", Vec::new())
    } else {
        Ok(Vec::new())
    }
    .and_then(|_| call(prepared.entry.export_name(), prepared.params.clone()));
    let run_ms = elapsed_ms(run_started);
    drop(vm);
    let mut outcome = GuestOutcome {
        reason: Reason::Completed,
        exit_code: None,
        message: String::new(),
        returns: Vec::new(),
        instantiate_ms,
        run_ms,
    };
    match result {
        Ok(values) => {
            if prepared.entry == Entry::Command {
                // The SDK reports `proc_exit` as success; the code is in the WASI module.
                let code = wasi.exit_code() as i32;
                outcome.exit_code = Some(code);
                if code != 0 {
                    outcome.reason = Reason::NonZeroExit;
                }
            }
            outcome.returns = values.iter().map(arguments::to_return_value).collect();
        }
        Err(error) => classify(&error, &wasi, &mut outcome),
    }
    outcome
}

fn classify(error: &WasmEdgeError, wasi: &WasiModule, outcome: &mut GuestOutcome) {
    match error {
        // proc_exit: WasmEdge unwinds with `Terminated` and keeps the code in the WASI module.
        WasmEdgeError::Core(CoreError::Common(CoreCommonError::Terminated)) => {
            let code = wasi.exit_code() as i32;
            outcome.exit_code = Some(code);
            outcome.reason = if code == 0 {
                Reason::Completed
            } else {
                Reason::NonZeroExit
            };
        }
        WasmEdgeError::ExecuteTimeout
        | WasmEdgeError::Core(CoreError::Common(CoreCommonError::Interrupted)) => {
            outcome.reason = Reason::TimedOut;
            outcome.message = "wall-clock timeout".into();
        }
        WasmEdgeError::Core(CoreError::Execution(trap)) => {
            outcome.reason = Reason::Trap;
            outcome.message = format!("trap: {trap}");
        }
        other => {
            outcome.reason = Reason::Trap;
            outcome.message = format!("runtime error: {other}");
        }
    }
}

fn as_refs(strings: &[String]) -> Vec<&str> {
    strings.iter().map(String::as_str).collect()
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::foreign_imports;

    fn imports(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(m, n)| (m.to_string(), n.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn a_failed_instantiation_names_the_imports_no_runner_provides() {
        assert_eq!(
            foreign_imports(imports(&[("wasi_snapshot_preview1", "fd_write"), ("env", "nope")])),
            "; the module imports env.nope, which runners do not provide (only wasi_snapshot_preview1)"
        );
        assert_eq!(
            foreign_imports(imports(&[("wasi_snapshot_preview1", "fd_write")])),
            "",
            "only WASI: nothing to name"
        );
        let many: Vec<(String, String)> = (0..7)
            .map(|i| ("env".to_string(), format!("f{i}")))
            .collect();
        let message = foreign_imports(many.into_iter());
        assert!(
            message.contains("env.f0, env.f1, env.f2, env.f3, env.f4 and 2 more"),
            "{message}"
        );
    }
}
