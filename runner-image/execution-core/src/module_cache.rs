//! The warm module cache (for the agent): modules kept on disk by digest, each verified and
//! AOT-compiled once from its verified bytes, bounded in total size, and found again after a
//! restart, so the second run of a digest fetches nothing and compiles nothing.
//!
//! Layout: `<dir>/<sha256 hex>/` holds `module.wasm`, its AOT form `module.wasm.aot.so` with
//! the metadata [`crate::aot`] writes, and `used` (its modification time orders eviction). An
//! entry is built in a temporary directory and renamed into place, so a crash never leaves a
//! half-written entry under a digest; leftovers are removed when the cache opens. The directory
//! should be the agent's own (mode 0700): entries are verified when they are added, not on
//! every run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use wasmfn_artifact::check_no_native_code;

use crate::aot;
use crate::artifact::ModuleBytes;
use crate::Error;

const MODULE_FILE: &str = "module.wasm";
const USED_FILE: &str = "used";
const TEMPORARY_PREFIX: &str = ".building-";

/// A bounded on-disk cache of verified, AOT-compiled modules.
#[derive(Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Serialises moving entries into place and eviction (hits take no lock).
    placing: Mutex<()>,
    next_temporary: AtomicU64,
}

/// A module ready to run from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModule {
    /// The module file.
    pub module: PathBuf,
    /// Its AOT form, when compiling it succeeded.
    pub aot: Option<PathBuf>,
    /// False on a hit: nothing was fetched or compiled.
    pub added: bool,
}

impl ModuleCache {
    /// Opens (creating) the cache at `dir`, holding at most `max_bytes` of entries, for one
    /// process: entries another run left half-built are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, Error> {
        Self::opened(dir, max_bytes, Duration::ZERO)
    }

    /// Opens the cache at `dir` for one of several processes that add to it at once (the
    /// shim's background compiles): another process's entry under construction is left alone,
    /// and only half-built entries older than an hour are removed.
    pub fn shared(dir: &Path, max_bytes: u64) -> Result<Self, Error> {
        Self::opened(dir, max_bytes, Duration::from_secs(3600))
    }

    fn opened(dir: &Path, max_bytes: u64, leftover_after: Duration) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| at.elapsed().ok())
                .unwrap_or(Duration::MAX);
            let temporary = entry
                .file_name()
                .to_string_lossy()
                .starts_with(TEMPORARY_PREFIX);
            if temporary && age >= leftover_after {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(ModuleCache {
            dir: dir.to_path_buf(),
            max_bytes,
            placing: Mutex::new(()),
            next_temporary: AtomicU64::new(0),
        })
    }

    /// The module with `digest` (`sha256:<hex>`): from the cache, or fetched with `fetch`,
    /// verified against the digest, refused when it carries native code of its own, compiled
    /// to its AOT form and stored. Errors name what was wrong; nothing is stored then.
    pub fn get(
        &self,
        digest: &str,
        fetch: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<CachedModule, Error> {
        let mut cached = self.add(digest, fetch)?;
        if cached.added && cached.aot.is_none() {
            cached.aot = self.compile_aot(digest)?;
        }
        Ok(cached)
    }

    /// Like [`ModuleCache::get`], but a new module is stored without its AOT form; call
    /// [`ModuleCache::compile_aot`] for that (it can take a minute), and run the module
    /// interpreted meanwhile.
    pub fn add(
        &self,
        digest: &str,
        fetch: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<CachedModule, Error> {
        self.insert(digest, fetch, |bytes| {
            check_no_native_code(bytes).map_err(|e| Error::InvalidModule(e.to_string()))
        })
    }

    /// Stores a Python or JavaScript script under its digest, verified, bounded and evicted like
    /// a module (its entry's file is the script; it has no AOT form: its interpreter has).
    pub fn add_script(
        &self,
        digest: &str,
        fetch: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<CachedModule, Error> {
        self.insert(digest, fetch, |_| Ok(()))
    }

    fn insert(
        &self,
        digest: &str,
        fetch: impl FnOnce() -> Result<Vec<u8>, String>,
        check: impl FnOnce(&[u8]) -> Result<(), Error>,
    ) -> Result<CachedModule, Error> {
        let hex = digest_hex(digest)?;
        let entry = self.dir.join(hex);
        if let Some(hit) = self.hit(&entry) {
            return Ok(hit);
        }
        let bytes = ModuleBytes::new(fetch().map_err(Error::Runtime)?);
        bytes.verify(digest)?;
        check(bytes.bytes())?;
        let temporary = self.dir.join(format!(
            "{TEMPORARY_PREFIX}{hex}-{}-{}",
            std::process::id(),
            self.next_temporary.fetch_add(1, Ordering::Relaxed)
        ));
        let module = temporary.join(MODULE_FILE);
        let built = std::fs::create_dir_all(&temporary)
            .and_then(|()| std::fs::write(&module, bytes.bytes()))
            .map_err(|e| Error::io(&module, e));
        if let Err(error) = built {
            let _ = std::fs::remove_dir_all(&temporary);
            return Err(error);
        }
        {
            let _placing = self.placing.lock().unwrap_or_else(|e| e.into_inner());
            // Another caller (or, in a shared cache, another process) may have added it
            // meanwhile: keep theirs.
            if entry.is_dir() {
                let _ = std::fs::remove_dir_all(&temporary);
            } else if let Err(e) = std::fs::rename(&temporary, &entry) {
                let _ = std::fs::remove_dir_all(&temporary);
                if !entry.is_dir() {
                    return Err(Error::io(&entry, e));
                }
            }
            self.evict(&entry)?;
        }
        let mut added = self
            .hit(&entry)
            .ok_or_else(|| Error::Runtime(format!("{} vanished", entry.display())))?;
        added.added = true;
        Ok(added)
    }

    /// Compiles the AOT form of the cached module `digest` from its stored (verified) bytes,
    /// unless it has one; returns it. `None` when the module is not cached or WasmEdge cannot
    /// compile it (it still runs, interpreted).
    pub fn compile_aot(&self, digest: &str) -> Result<Option<PathBuf>, Error> {
        let Some(cached) = self.lookup(digest)? else {
            return Ok(None);
        };
        if cached.aot.is_some() {
            return Ok(cached.aot);
        }
        let bytes = ModuleBytes::read(&cached.module)?;
        let library = aot::default_path_for(&cached.module);
        if aot::compile(&bytes, &library).is_err() {
            return Ok(None);
        }
        // The entry grew: keep the bound.
        let _placing = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = cached.module.parent() {
            self.evict(entry)?;
        }
        Ok(Some(library))
    }

    /// The module with `digest` when the cache holds it (nothing is fetched or compiled).
    pub fn lookup(&self, digest: &str) -> Result<Option<CachedModule>, Error> {
        Ok(self.hit(&self.dir.join(digest_hex(digest)?)))
    }

    /// How many modules the cache holds.
    pub fn len(&self) -> Result<usize, Error> {
        Ok(self.entries()?.len())
    }

    /// True when the cache holds no module.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// Total bytes the entries take.
    pub fn size(&self) -> Result<u64, Error> {
        Ok(self.entries()?.iter().map(|e| e.bytes).sum())
    }

    fn hit(&self, entry: &Path) -> Option<CachedModule> {
        let module = entry.join(MODULE_FILE);
        if !module.is_file() {
            return None;
        }
        let aot_path = aot::default_path_for(&module);
        let aot = aot::metadata_path(&aot_path).is_file().then_some(aot_path);
        // The modification time of `used` is the entry's last use.
        let _ = std::fs::File::create(entry.join(USED_FILE))
            .and_then(|f| f.set_modified(SystemTime::now()));
        Some(CachedModule {
            module,
            aot,
            added: false,
        })
    }

    /// Removes the least recently used entries (never `keep`) until the cache fits.
    fn evict(&self, keep: &Path) -> Result<(), Error> {
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        entries.sort_by_key(|e| e.used);
        for entry in entries {
            if total <= self.max_bytes {
                break;
            }
            if entry.path == keep {
                continue;
            }
            std::fs::remove_dir_all(&entry.path).map_err(|e| Error::io(&entry.path, e))?;
            total -= entry.bytes;
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Entry>, Error> {
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let item = item.map_err(|e| Error::io(&self.dir, e))?;
            let path = item.path();
            if !path.is_dir() || item.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let mut bytes = 0;
            for file in std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
                let file = file.map_err(|e| Error::io(&path, e))?;
                bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
            }
            let used = std::fs::metadata(path.join(USED_FILE))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push(Entry { path, bytes, used });
        }
        Ok(entries)
    }
}

struct Entry {
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

/// The hex part of a `sha256:<64 hex digits>` digest (which names a directory, so it is
/// checked strictly).
fn digest_hex(digest: &str) -> Result<&str, Error> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter(|hex| !hex.bytes().any(|b| b.is_ascii_uppercase()))
        .ok_or_else(|| Error::InvalidModule(format!("{digest:?} is not a sha256:<hex> digest")))
}
