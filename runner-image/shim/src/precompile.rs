//! AOT for Wasm pods from the OCI store, through `containerd-shim-wasm`'s precompile hook.
//!
//! The hook runs in the shim's host process (root, outside any container) when an image's Wasm
//! layer first runs with this shim version, and containerd keeps what it returns in its content
//! store in place of the layer, for every later container of that image. We return an
//! [`AotBundle`] (the module, its AOT library and their metadata) once the node-local cache holds
//! that AOT form; the container then loads the library from memory ([`crate::sandbox`]). Nothing
//! the pod names or writes is ever loaded as native code: the library comes from containerd's
//! store, the bundle's module must match the layer's digest, and the metadata must match the
//! module and the runtime.
//!
//! Compiling takes from under a second to about a minute (a Go module), too long to hold up a
//! container's creation: on a miss the hook starts a background compile (this binary again,
//! `--wasmfn-precompile`) into the cache and returns nothing, so that run is interpreted as
//! before. A later container of the image finds the entry and gets the bundle.
//!
//! The cache is `aot-cache/` next to the shim's `bin/` directory (`/opt/wasmfn/aot-cache` where
//! the node installer puts the shim), owned by root with mode 0700: the same verified,
//! bounded [`ModuleCache`] the agent keeps, shared by every shim process on the node.

use std::hash::Hash;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use containerd_shim_wasm::sandbox::context::WasmLayer;
use containerd_shim_wasm::shim::Compiler;
use wasmfn_execution::aot::AotBundle;
use wasmfn_execution::artifact::ModuleBytes;
use wasmfn_execution::module_cache::ModuleCache;

/// The first argument that makes this binary a background compile rather than a shim.
pub(crate) const PRECOMPILE_FLAG: &str = "--wasmfn-precompile";

/// Upper bound of the node-local AOT cache.
const CACHE_BYTES: u64 = 4 << 30;

/// A compile that has held its marker this long is taken to have died.
const STALE_COMPILE: Duration = Duration::from_secs(15 * 60);

/// The precompile hook of one shim installation.
#[derive(Debug)]
pub(crate) struct Precompiler {
    cache_dir: PathBuf,
}

impl Precompiler {
    /// The hook for the installed shim: its cache is `aot-cache/` beside the shim's directory.
    pub(crate) fn for_installation() -> Option<Self> {
        let exe = std::env::current_exe().ok()?;
        let root = exe.parent()?.parent()?;
        Some(Precompiler {
            cache_dir: root.join("aot-cache"),
        })
    }

    fn cache(&self) -> Result<ModuleCache, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.cache_dir)
            .map_err(|e| format!("{}: {e}", self.cache_dir.display()))?;
        ModuleCache::shared(&self.cache_dir, CACHE_BYTES).map_err(|e| e.to_string())
    }

    /// The bundle for one layer when the cache holds its AOT form; otherwise starts compiling it
    /// in the background and returns `None` (this run is interpreted).
    fn precompiled(&self, layer: &WasmLayer) -> Result<Option<Vec<u8>>, String> {
        if layer.precompiled || AotBundle::is_bundle(&layer.layer) {
            return Ok(None);
        }
        let module = ModuleBytes::new(layer.layer.clone());
        module
            .verify(layer.config.digest().as_ref())
            .map_err(|e| e.to_string())?;
        // Computed, so it is well-formed where it names files.
        let digest = module.sha256();
        let cache = self.cache()?;
        match cache.lookup(&digest).map_err(|e| e.to_string())? {
            Some(cached) => match cached.aot {
                Some(library) => Ok(Some(AotBundle::from_files(&module, &library)?.encode())),
                // Cached without an AOT form: WasmEdge could not compile it; interpret.
                None => Ok(None),
            },
            None => {
                self.start_compile(&digest, &module)?;
                Ok(None)
            }
        }
    }

    /// Hands the module to a detached `--wasmfn-precompile` process, unless one is already at
    /// work on this digest.
    fn start_compile(&self, digest: &str, module: &ModuleBytes) -> Result<(), String> {
        let hex = digest.trim_start_matches("sha256:");
        let marker = self.cache_dir.join(format!(".compiling-{hex}"));
        let fresh = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .is_some_and(|age| age < STALE_COMPILE);
        if fresh {
            return Ok(());
        }
        let mut input = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&marker)
            .map_err(|e| format!("{}: {e}", marker.display()))?;
        std::io::Write::write_all(&mut input, module.bytes())
            .map_err(|e| format!("{}: {e}", marker.display()))?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg(PRECOMPILE_FLAG)
            .arg(&self.cache_dir)
            .arg(digest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: signals meant for the shim's container do not reach it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting the background AOT compile: {e}"))?;
        // Reap it whenever it ends (the shim may exit first; then init does).
        std::thread::spawn(move || child.wait());
        Ok(())
    }
}

impl Compiler for Precompiler {
    fn cache_key(&self) -> impl Hash {
        (
            env!("CARGO_PKG_VERSION"),
            AotBundle::FORMAT,
            wasmfn_execution::runtime::runtime_version(),
            std::env::consts::ARCH,
        )
    }

    async fn compile(&self, layers: &[WasmLayer]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        Ok(layers
            .iter()
            .map(|layer| {
                self.precompiled(layer).unwrap_or_else(|why| {
                    eprintln!("wasmfn shim: no AOT form for this layer: {why}");
                    None
                })
            })
            .collect())
    }
}

/// `--wasmfn-precompile <cache dir> <digest>`: compiles the module left in the digest's marker
/// file into the cache, then removes the marker. Returns the process exit code.
pub(crate) fn run_background_compile(args: &[String]) -> i32 {
    let [dir, digest] = args else {
        eprintln!("usage: {PRECOMPILE_FLAG} <cache dir> <sha256:digest>");
        return 2;
    };
    let dir = Path::new(dir);
    let marker = dir.join(format!(
        ".compiling-{}",
        digest.trim_start_matches("sha256:")
    ));
    let result = ModuleCache::shared(dir, CACHE_BYTES).and_then(|cache| {
        cache.get(digest, || {
            let mut bytes = Vec::new();
            std::fs::File::open(&marker)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(|e| format!("{}: {e}", marker.display()))?;
            Ok(bytes)
        })
    });
    let _ = std::fs::remove_file(&marker);
    match result {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("wasmfn shim: background AOT compile of {digest} failed: {e}");
            1
        }
    }
}
