//! What a front end asks the core to run: the module, its entry point, the guest's WASI view
//! (args, env, stdin, directories) and the limits. Front-end neutral: no CLI or Kubernetes types.

use std::path::PathBuf;
use std::time::Duration;

use wasmfn_result::run_settings::RunSettings;

/// Where the module's bytes come from.
#[derive(Debug, Clone)]
pub enum ModuleSource {
    /// A `.wasm` file, or a packed artifact from the ConfigMap store (its directory or its
    /// `artifact.json`, e.g. the artifact's ConfigMaps mounted as one projected volume), which
    /// is unpacked and digest-verified on read.
    Path(PathBuf),
    /// `.wasm` bytes already in memory.
    Bytes(Vec<u8>),
}

/// Which export to call.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A WASI command: call `_start`, the guest's exit code is the result.
    Command,
    /// A library (reactor) module: call `_initialize` when exported, then `export` with typed
    /// numeric arguments given as JSON numbers (checked against the export's signature).
    Invoke {
        /// Name of the export to call.
        export: String,
        /// One JSON number per parameter.
        args: Vec<serde_json::Value>,
    },
}

impl Entry {
    /// The export this entry calls.
    pub fn export_name(&self) -> &str {
        match self {
            Entry::Command => "_start",
            Entry::Invoke { export, .. } => export,
        }
    }
}

/// The guest's stdin.
#[derive(Debug, Clone, Default)]
pub enum StdinSource {
    /// Empty stdin (reads see end of file).
    #[default]
    Empty,
    /// These bytes.
    Bytes(Vec<u8>),
    /// The contents of this file, opened before the guest starts (an unreadable file ends the
    /// run with reason `InputUnreadable` before any guest code runs).
    File(PathBuf),
}

/// A host directory made visible to the guest. None are given unless asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// Path the guest sees.
    pub guest: String,
    /// Directory on the host.
    pub host: PathBuf,
    /// Whether the guest may only read it (WASI refuses writes, creates and renames).
    pub read_only: bool,
}

impl Preopen {
    /// A directory the guest may read and write.
    pub fn read_write(guest: impl Into<String>, host: impl Into<PathBuf>) -> Self {
        Preopen {
            guest: guest.into(),
            host: host.into(),
            read_only: false,
        }
    }

    /// A directory the guest may only read.
    pub fn read_only(guest: impl Into<String>, host: impl Into<PathBuf>) -> Self {
        Preopen {
            read_only: true,
            ..Preopen::read_write(guest, host)
        }
    }

    /// Parses the `GUEST:HOST[:readonly]` form used by `--dir` (a bare path maps to itself).
    pub fn parse(spec: &str) -> Self {
        let (spec, read_only) = match spec.strip_suffix(":readonly") {
            Some(rest) => (rest, true),
            None => (spec, false),
        };
        let preopen = match spec.split_once(':') {
            Some((guest, host)) => Preopen::read_write(guest, host),
            None => Preopen::read_write(spec, spec),
        };
        Preopen {
            read_only,
            ..preopen
        }
    }
}

/// Limits for one run. Defaults follow the operator's defaults (30 s, 128 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock limit for instantiation plus the guest's execution; the guest is stopped
    /// (killed, in the isolated mode) when it expires.
    pub timeout: Duration,
    /// Linear-memory limit in bytes, enforced as a page cap (rounded down to 64 KiB pages).
    pub memory_bytes: u64,
    /// How many bytes of each stream the core keeps in memory (the stream is still hashed,
    /// counted and forwarded to the output sinks in full).
    pub capture_bytes: usize,
    /// Total bytes a guest may write to stdout or stderr before it is stopped with reason
    /// `OutputLimitExceeded`; `None` means unlimited (bytes are streamed, never buffered).
    pub output_limit_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: 128 << 20,
            capture_bytes: 1 << 20,
            output_limit_bytes: Some(64 << 20),
        }
    }
}

/// Size of a WebAssembly page.
pub const WASM_PAGE_BYTES: u64 = 64 << 10;

impl Limits {
    /// These limits with the run contract's over them (a limit the settings leave out stays).
    pub fn with_settings(mut self, settings: &RunSettings) -> Self {
        if let Some(ms) = settings.timeout_ms {
            self.timeout = Duration::from_millis(ms);
        }
        if let Some(bytes) = settings.memory_bytes {
            self.memory_bytes = bytes;
        }
        if let Some(bytes) = settings.max_output_bytes {
            self.capture_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        self
    }

    /// The memory limit as a WasmEdge page cap (at least one page).
    pub fn memory_pages(&self) -> u32 {
        (self.memory_bytes / WASM_PAGE_BYTES).clamp(1, 65536) as u32
    }
}

/// One run of one function.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The module.
    pub module: ModuleSource,
    /// A candidate AOT-compiled form (see [`crate::aot`]); used only when its metadata matches
    /// the module's digest and the runtime version, otherwise the interpreter runs it and the
    /// result says why the AOT form was rejected.
    pub aot: Option<PathBuf>,
    /// The metadata of `aot` when it has no `<aot>.json` next to it: an AOT form held in memory
    /// (see [`crate::aot::AotBundle`]). Checked against the module exactly as the file is.
    pub aot_metadata: Option<crate::aot::AotMetadata>,
    /// What to call.
    pub entry: Entry,
    /// `argv[0]` as the guest sees it.
    pub program_name: String,
    /// Guest arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Guest environment (`KEY`, `VALUE`); the host's environment is never passed through.
    pub env: Vec<(String, String)>,
    /// Guest stdin.
    pub stdin: StdinSource,
    /// Directories visible to the guest.
    pub preopens: Vec<Preopen>,
    /// Limits.
    pub limits: Limits,
    /// The script `module` (an interpreter) runs, reported in the result document.
    pub script: Option<wasmfn_result::ScriptInfo>,
}

impl RunRequest {
    /// A command run of `module` with defaults everywhere else.
    pub fn command(module: ModuleSource) -> Self {
        RunRequest {
            module,
            aot: None,
            aot_metadata: None,
            entry: Entry::Command,
            program_name: "main.wasm".to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: StdinSource::Empty,
            preopens: Vec::new(),
            limits: Limits::default(),
            script: None,
        }
    }

    /// A run of `module` (named `program_name` in `argv[0]`) with the run contract's settings
    /// over the core's defaults. Every front end builds its request here, so a setting means
    /// the same whichever runner gets it. The AOT form is the front end's to choose.
    pub fn with_settings(
        module: ModuleSource,
        program_name: String,
        settings: &RunSettings,
    ) -> Self {
        let entry = match &settings.invoke {
            None => Entry::Command,
            Some(invoke) => Entry::Invoke {
                export: invoke.export.clone(),
                args: invoke.args.clone(),
            },
        };
        RunRequest {
            entry,
            program_name,
            args: settings.args.clone(),
            env: settings.env.clone(),
            stdin: settings
                .stdin_file
                .as_ref()
                .map_or(StdinSource::Empty, |path| StdinSource::File(path.into())),
            limits: Limits::default().with_settings(settings),
            ..RunRequest::command(module)
        }
    }
}
