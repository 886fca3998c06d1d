//! Ahead-of-time compilation and the binding between an AOT form and its module.
//!
//! An AOT form is a native shared library produced by WasmEdge's compiler. Loading one runs
//! native code with no check that it came from the module the caller thinks it did, and a
//! library built by another WasmEdge version may not load or behave. So every AOT form has a
//! metadata file next to it (`<aot>.json`) recording the module's sha256 and the WasmEdge
//! version that compiled it; the core uses the AOT form only when both match.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wasmedge_sdk::config::{CommonConfigOptions, CompilerConfigOptions, ConfigBuilder};
use wasmedge_sdk::{CompilerOptimizationLevel, CompilerOutputFormat};

use crate::artifact::ModuleBytes;
use crate::runtime::runtime_version;

use crate::Error;

/// Contents of the metadata file written next to an AOT form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AotMetadata {
    /// Format marker, `wasmfn.dev/aot-v1`.
    pub format: String,
    /// `sha256:<hex>` of the module that was compiled.
    pub module_sha256: String,
    /// WasmEdge version of the compiler.
    pub wasmedge_version: String,
    /// Target architecture (`std::env::consts::ARCH`).
    pub arch: String,
    /// Whether the code checks for interruption (needed for in-process timeouts).
    pub interruptible: bool,
}

const FORMAT: &str = "wasmfn.dev/aot-v1";

/// The metadata file that belongs to an AOT form.
pub fn metadata_path(aot: &Path) -> PathBuf {
    let mut name = aot.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// Compiles `module` to a native AOT form at `output` and writes its metadata next to it.
/// The code is interruptible, so in-process timeouts stop it too.
pub fn compile(module: &ModuleBytes, output: &Path) -> Result<AotMetadata, Error> {
    // WasmEdge links the native code with lld in-process, and lld keeps global state: two
    // compilations at once in one process fail ("unsupported e_machine value") and can take
    // the process down. One at a time.
    static COMPILER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = COMPILER.lock().unwrap_or_else(|e| e.into_inner());
    crate::runtime::silence_runtime_log();
    if !has_library_extension(output) {
        return Err(Error::Runtime(format!(
            "{}: AOT output must be named *.so (WasmEdge loads native code only from .so files)",
            output.display()
        )));
    }
    let config = ConfigBuilder::new(CommonConfigOptions::default())
        .with_compiler_config(
            CompilerConfigOptions::new()
                .out_format(CompilerOutputFormat::Native)
                .optimization_level(CompilerOptimizationLevel::O3)
                .interruptible(true),
        )
        .build()
        .map_err(|e| Error::Runtime(format!("compiler configuration: {e}")))?;
    let compiler = wasmedge_sdk::Compiler::new(Some(&config))
        .map_err(|e| Error::Runtime(format!("creating the AOT compiler: {e}")))?;
    // The SDK names the output `<dir>/<name>.so`; compile under a temporary name next to the
    // target and rename, so a half-written library is never picked up.
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temporary_name = format!(".wasmfn-aot-{}", std::process::id());
    let produced = compiler
        .compile_from_bytes(module.bytes(), &temporary_name, dir)
        .map_err(|e| Error::InvalidModule(format!("AOT compilation failed: {e}")))?;
    let metadata = AotMetadata {
        format: FORMAT.to_owned(),
        module_sha256: module.sha256(),
        wasmedge_version: runtime_version(),
        arch: std::env::consts::ARCH.to_owned(),
        interruptible: true,
    };
    let json = serde_json::to_vec_pretty(&metadata).map_err(|e| Error::Runtime(e.to_string()))?;
    // Readers check the metadata, then load the library: replace both atomically (library
    // first), so a reader never pairs new metadata with an old library.
    let meta_path = metadata_path(output);
    let meta_temporary = dir.join(format!("{temporary_name}.json"));
    std::fs::write(&meta_temporary, json).map_err(|e| Error::io(&meta_temporary, e))?;
    std::fs::rename(&produced, output).map_err(|e| Error::io(output, e))?;
    std::fs::rename(&meta_temporary, &meta_path).map_err(|e| Error::io(&meta_path, e))?;
    Ok(metadata)
}

/// Checks whether the AOT form at `aot` may run in place of `module`; the error text says why
/// not (it ends up in the result document's `runtime.aotRejected`). Returns the form's metadata.
pub fn check(aot: &Path, module: &ModuleBytes) -> Result<AotMetadata, String> {
    if !has_library_extension(aot) {
        return Err(format!("{} is not named *.so", aot.display()));
    }
    let meta_path = metadata_path(aot);
    let raw = std::fs::read(&meta_path)
        .map_err(|e| format!("no AOT metadata at {}: {e}", meta_path.display()))?;
    let metadata: AotMetadata =
        serde_json::from_slice(&raw).map_err(|e| format!("unreadable AOT metadata: {e}"))?;
    check_metadata(&metadata, module)?;
    if !aot.is_file() {
        return Err(format!("AOT form {} is missing", aot.display()));
    }
    Ok(metadata)
}

/// Checks that an AOT form with `metadata` belongs to `module` and to this runtime.
pub fn check_metadata(metadata: &AotMetadata, module: &ModuleBytes) -> Result<(), String> {
    if metadata.format != FORMAT {
        return Err(format!("unknown AOT metadata format {:?}", metadata.format));
    }
    let sha = module.sha256();
    if metadata.module_sha256 != sha {
        return Err(format!(
            "AOT form was compiled from {}, the module is {sha}",
            metadata.module_sha256
        ));
    }
    let version = runtime_version();
    if metadata.wasmedge_version != version {
        return Err(format!(
            "AOT form was compiled by WasmEdge {}, the runtime is {version}",
            metadata.wasmedge_version
        ));
    }
    if metadata.arch != std::env::consts::ARCH {
        return Err(format!("AOT form is for {}", metadata.arch));
    }
    Ok(())
}

/// An AOT form as one blob: its metadata, the module it was compiled from and the native
/// library. The shim's precompile hook stores this in containerd's content store in place of a
/// Wasm layer, so a Wasm pod gets native code without any file the pod could name or write.
/// Decoding checks only the framing; [`check_metadata`] (done when the run loads it) decides
/// whether the library may run for the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AotBundle {
    /// What compiled the library, from which module.
    pub metadata: AotMetadata,
    /// The module's bytes (the runner verifies them against the layer's digest).
    pub module: Vec<u8>,
    /// The native library WasmEdge loads.
    pub library: Vec<u8>,
}

/// First bytes of an encoded [`AotBundle`]; a Wasm module starts with `\0asm`, so the two never
/// mix up.
const BUNDLE_MAGIC: &[u8] = b"wasmfn-aot-bundle-v1\n";

impl AotBundle {
    /// The encoding's name and version (part of the shim's precompile cache key).
    pub const FORMAT: &'static str = "wasmfn-aot-bundle-v1";

    /// The bundle of a module and its AOT form on disk (checked with [`check`] first).
    pub fn from_files(module: &ModuleBytes, library: &Path) -> Result<Self, String> {
        let metadata = check(library, module)?;
        let library =
            std::fs::read(library).map_err(|e| format!("reading {}: {e}", library.display()))?;
        Ok(AotBundle {
            metadata,
            module: module.bytes().to_vec(),
            library,
        })
    }

    /// True when `bytes` look like an encoded bundle (rather than a module).
    pub fn is_bundle(bytes: &[u8]) -> bool {
        bytes.starts_with(BUNDLE_MAGIC)
    }

    /// Magic, then the metadata JSON, the module and the library, each after its length as a
    /// little-endian u64.
    pub fn encode(&self) -> Vec<u8> {
        let metadata = serde_json::to_vec(&self.metadata).unwrap_or_default();
        let mut out = Vec::with_capacity(
            BUNDLE_MAGIC.len() + 24 + metadata.len() + self.module.len() + self.library.len(),
        );
        out.extend_from_slice(BUNDLE_MAGIC);
        for part in [&metadata[..], &self.module, &self.library] {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// The bundle [`AotBundle::encode`] wrote; the error says what is wrong with the framing.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut rest = bytes
            .strip_prefix(BUNDLE_MAGIC)
            .ok_or("not a wasmfn AOT bundle (wrong magic)")?;
        let mut parts = Vec::with_capacity(3);
        for name in ["metadata", "module", "library"] {
            let (length, after) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| format!("AOT bundle ends before the {name}'s length"))?;
            let length = usize::try_from(u64::from_le_bytes(*length))
                .ok()
                .filter(|length| *length <= after.len())
                .ok_or_else(|| format!("AOT bundle's {name} runs past its end"))?;
            let (part, after) = after.split_at(length);
            parts.push(part);
            rest = after;
        }
        if !rest.is_empty() {
            return Err(format!(
                "AOT bundle has {} bytes after its library",
                rest.len()
            ));
        }
        let metadata = serde_json::from_slice(parts[0])
            .map_err(|e| format!("unreadable AOT bundle metadata: {e}"))?;
        Ok(AotBundle {
            metadata,
            module: parts[1].to_vec(),
            library: parts[2].to_vec(),
        })
    }

    /// The library in an anonymous in-memory file, and the path (`/proc/self/fd/<n>`) the
    /// loader opens it by while the file stays open. Nothing is written to any filesystem.
    pub fn library_file(&self) -> Result<(std::fs::File, PathBuf), String> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let mut file = crate::isolation::memfd("wasmfn-aot")
            .map_err(|e| format!("in-memory AOT file: {e}"))?;
        file.write_all(&self.library)
            .map_err(|e| format!("writing the in-memory AOT file: {e}"))?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Ok((file, path))
    }
}

/// The conventional AOT location for a module file: `<module>.aot.so` (metadata
/// `<module>.aot.so.json`). WasmEdge loads native code only from files named `*.so`.
pub fn default_path_for(module: &Path) -> PathBuf {
    let mut name = module.as_os_str().to_owned();
    name.push(".aot.so");
    PathBuf::from(name)
}

/// The AOT form to look for when none is named: [`default_path_for`] a module file, none for a
/// packed artifact (the ConfigMap store holds only the module; its AOT form, if any, must be
/// named explicitly).
pub fn default_for(module: &Path) -> Option<PathBuf> {
    (!crate::artifact::is_packed(module)).then(|| default_path_for(module))
}

/// The AOT form every front end uses for a module file when none is named: [`default_for`]
/// the module, when that file exists (one that does not is simply not offered, so the result
/// document carries no `aotRejected` for it).
pub fn implicit_for(module: &Path) -> Option<PathBuf> {
    default_for(module).filter(|path| path.is_file())
}

fn has_library_extension(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "so")
}
