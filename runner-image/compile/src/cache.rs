//! The local compile cache: one directory per cache key holding the artifact files and the
//! manifest, expired after a TTL (counted from when the entry was stored) and bounded in total
//! size (oldest entries go first).
//!
//! Knobs (carried over from the system this replaces): `WASM_CACHE_ENABLED` (default true),
//! `WASM_CACHE_TTL` in seconds (default 3600), `WASM_CACHE_DIR` (default
//! `$HOME/.cache/wasmfn/compile`), plus `WASM_CACHE_MAX_BYTES` (default 1 GiB).
//!
//! Entries are written to a temporary directory and renamed into place, so readers never see
//! half an entry and concurrent compiles of the same key are harmless (the first rename wins).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cache_key::CacheKey;
use crate::{Error, Result, MANIFEST_FILE};

/// Cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Whether lookups and stores happen at all.
    pub enabled: bool,
    /// The cache directory.
    pub dir: PathBuf,
    /// How long an entry is served after it was stored.
    pub ttl: Duration,
    /// Upper bound of the entries' total size.
    pub max_bytes: u64,
}

/// Default TTL (`WASM_CACHE_TTL`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Default size bound (`WASM_CACHE_MAX_BYTES`).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

impl CacheConfig {
    /// From the process environment.
    pub fn from_env() -> Result<CacheConfig> {
        CacheConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<CacheConfig> {
        let enabled = match lookup("WASM_CACHE_ENABLED") {
            None => true,
            Some(value) => parse_bool(&value).ok_or_else(|| {
                Error::Configuration(format!("WASM_CACHE_ENABLED={value:?}: use true or false"))
            })?,
        };
        let ttl = match lookup("WASM_CACHE_TTL") {
            None => DEFAULT_TTL,
            Some(value) => Duration::from_secs(value.trim().parse().map_err(|_| {
                Error::Configuration(format!("WASM_CACHE_TTL={value:?}: a number of seconds"))
            })?),
        };
        let max_bytes = match lookup("WASM_CACHE_MAX_BYTES") {
            None => DEFAULT_MAX_BYTES,
            Some(value) => value.trim().parse().map_err(|_| {
                Error::Configuration(format!("WASM_CACHE_MAX_BYTES={value:?}: a number of bytes"))
            })?,
        };
        let dir = match lookup("WASM_CACHE_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => match lookup("HOME").filter(|h| !h.is_empty()) {
                Some(home) => PathBuf::from(home).join(".cache/wasmfn/compile"),
                None => std::env::temp_dir().join("wasmfn-compile-cache"),
            },
        };
        Ok(CacheConfig {
            enabled,
            dir,
            ttl,
            max_bytes,
        })
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Whether an entry stored at `stored` has expired at `now`. An entry from the future (clock
/// skew) counts as fresh.
pub fn is_expired(stored: SystemTime, now: SystemTime, ttl: Duration) -> bool {
    now.duration_since(stored).is_ok_and(|age| age >= ttl)
}

/// Which entries to evict so the rest fits `max_bytes`: every expired one, then the oldest
/// until the total is within the bound. `entries` are (name, stored, size).
pub fn plan_eviction(
    entries: &[(String, SystemTime, u64)],
    now: SystemTime,
    ttl: Duration,
    max_bytes: u64,
) -> Vec<&str> {
    let mut evicted = Vec::new();
    let mut live: Vec<&(String, SystemTime, u64)> = Vec::new();
    for entry in entries {
        if is_expired(entry.1, now, ttl) {
            evicted.push(entry.0.as_str());
        } else {
            live.push(entry);
        }
    }
    live.sort_by_key(|entry| (entry.1, entry.0.clone()));
    let mut total: u64 = live.iter().map(|entry| entry.2).sum();
    for entry in live {
        if total <= max_bytes {
            break;
        }
        total -= entry.2;
        evicted.push(entry.0.as_str());
    }
    evicted
}

/// A cache entry found by [`Cache::lookup`].
#[derive(Debug, Clone)]
pub struct CacheEntry {
    /// The entry's directory (artifact files and `manifest.json`).
    pub dir: PathBuf,
}

/// The cache.
#[derive(Debug, Clone)]
pub struct Cache {
    config: CacheConfig,
}

impl Cache {
    /// A cache with these settings (nothing is created until the first store).
    pub fn new(config: CacheConfig) -> Cache {
        Cache { config }
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn entries_dir(&self) -> PathBuf {
        self.config.dir.join("entries")
    }

    /// Where toolchain versions are remembered.
    pub fn identity_dir(&self) -> PathBuf {
        self.config.dir.join("toolchains")
    }

    /// The live entry for `key`; an expired one is removed and reported as a miss.
    pub fn lookup(&self, key: &CacheKey) -> Option<CacheEntry> {
        self.lookup_at(key, SystemTime::now())
    }

    /// [`Cache::lookup`] at a given time.
    pub fn lookup_at(&self, key: &CacheKey, now: SystemTime) -> Option<CacheEntry> {
        if !self.config.enabled {
            return None;
        }
        let dir = self.entries_dir().join(key.hex());
        let stored = std::fs::metadata(dir.join(MANIFEST_FILE))
            .and_then(|m| m.modified())
            .ok()?;
        if is_expired(stored, now, self.config.ttl) {
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        Some(CacheEntry { dir })
    }

    /// Stores `files` (name, path) under `key`, then evicts what the TTL and size bound say.
    /// The manifest must be among the files: its modification time is the entry's age.
    pub fn store(&self, key: &CacheKey, files: &[(&str, &Path)]) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let entries = self.entries_dir();
        std::fs::create_dir_all(&entries).map_err(|e| Error::io(&entries, e))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&entries)
            .map_err(|e| Error::io(&entries, e))?;
        for (name, source) in files {
            let target = staging.path().join(name);
            std::fs::copy(source, &target).map_err(|e| Error::io(source, e))?;
        }
        let staging = staging.keep();
        let final_dir = entries.join(key.hex());
        if std::fs::rename(&staging, &final_dir).is_err() {
            // Another compile stored the same key first; its entry is as good as ours.
            let _ = std::fs::remove_dir_all(&staging);
        }
        self.evict(SystemTime::now());
        Ok(())
    }

    /// Removes expired entries and the oldest beyond the size bound; returns how many went.
    pub fn evict(&self, now: SystemTime) -> usize {
        let Ok(read) = std::fs::read_dir(self.entries_dir()) else {
            return 0;
        };
        let mut entries = Vec::new();
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(stored) = std::fs::metadata(path.join(MANIFEST_FILE)).and_then(|m| m.modified())
            else {
                continue;
            };
            entries.push((name, stored, directory_size(&path)));
        }
        let evicted = plan_eviction(&entries, now, self.config.ttl, self.config.max_bytes);
        for name in &evicted {
            let _ = std::fs::remove_dir_all(self.entries_dir().join(name));
        }
        evicted.len()
    }
}

fn directory_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|read| {
            read.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<CacheConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CacheConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_old_system() {
        let config = config(&[("HOME", "/home/u")]).expect("config");
        assert!(config.enabled);
        assert_eq!(config.ttl, Duration::from_secs(3600));
        assert_eq!(config.dir, PathBuf::from("/home/u/.cache/wasmfn/compile"));
        assert_eq!(config.max_bytes, DEFAULT_MAX_BYTES);
    }

    #[test]
    fn knobs_are_read() {
        let config = config(&[
            ("WASM_CACHE_ENABLED", "false"),
            ("WASM_CACHE_TTL", "60"),
            ("WASM_CACHE_DIR", "/cache"),
            ("WASM_CACHE_MAX_BYTES", "1000"),
        ])
        .expect("config");
        assert!(!config.enabled);
        assert_eq!(config.ttl, Duration::from_secs(60));
        assert_eq!(config.dir, PathBuf::from("/cache"));
        assert_eq!(config.max_bytes, 1000);
        for (name, value) in [
            ("WASM_CACHE_ENABLED", "maybe"),
            ("WASM_CACHE_TTL", "1h"),
            ("WASM_CACHE_MAX_BYTES", "-1"),
        ] {
            assert!(
                matches!(config_err(name, value), Error::Configuration(_)),
                "{name}={value}"
            );
        }
    }

    fn config_err(name: &str, value: &str) -> Error {
        config(&[(name, value)]).expect_err("invalid")
    }

    #[test]
    fn expiry() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ttl = Duration::from_secs(10);
        assert!(!is_expired(t0, t0, ttl));
        assert!(!is_expired(t0, t0 + Duration::from_secs(9), ttl));
        assert!(is_expired(t0, t0 + Duration::from_secs(10), ttl));
        assert!(!is_expired(t0 + Duration::from_secs(5), t0, ttl), "future");
        assert!(is_expired(t0, t0, Duration::ZERO), "TTL 0 serves nothing");
    }

    #[test]
    fn eviction_plan_drops_expired_then_oldest() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s| t0 + Duration::from_secs(s);
        let entries = vec![
            ("old".to_owned(), at(0), 10),
            ("a".to_owned(), at(100), 40),
            ("b".to_owned(), at(200), 40),
            ("c".to_owned(), at(300), 40),
        ];
        let now = at(350);
        let ttl = Duration::from_secs(300);
        assert_eq!(plan_eviction(&entries, now, ttl, 1000), ["old"]);
        assert_eq!(plan_eviction(&entries, now, ttl, 80), ["old", "a"]);
        assert_eq!(plan_eviction(&entries, now, ttl, 0), ["old", "a", "b", "c"]);
        assert!(plan_eviction(&[], now, ttl, 0).is_empty());
    }

    fn key(text: &str) -> CacheKey {
        use crate::language::Language;
        use crate::options::BuildOptions;
        use crate::source::SourceTree;
        let tree =
            SourceTree::from_files([("m.wat", text.as_bytes())], Language::Wat).expect("tree");
        CacheKey::compute(Language::Wat, &[], &BuildOptions::default(), &tree)
    }

    fn store_entry(cache: &Cache, key: &CacheKey, scratch: &Path, size: usize) {
        let module = scratch.join("module.wasm");
        let manifest = scratch.join(MANIFEST_FILE);
        std::fs::write(&module, vec![0u8; size]).expect("module");
        std::fs::write(&manifest, "{}").expect("manifest");
        cache
            .store(key, &[("module.wasm", &module), (MANIFEST_FILE, &manifest)])
            .expect("store");
    }

    #[test]
    fn store_lookup_and_ttl_eviction_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = tempfile::tempdir().expect("scratch");
        let cache = Cache::new(CacheConfig {
            enabled: true,
            dir: dir.path().to_path_buf(),
            ttl: Duration::from_secs(60),
            max_bytes: DEFAULT_MAX_BYTES,
        });
        let k = key("(module)");
        assert!(cache.lookup(&k).is_none());
        store_entry(&cache, &k, scratch.path(), 8);
        let entry = cache.lookup(&k).expect("hit");
        assert!(entry.dir.join("module.wasm").is_file());
        let later = SystemTime::now() + Duration::from_secs(61);
        assert!(cache.lookup_at(&k, later).is_none(), "expired");
        assert!(!entry.dir.exists(), "an expired entry is removed");
    }

    #[test]
    fn the_size_bound_evicts_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = tempfile::tempdir().expect("scratch");
        let cache = Cache::new(CacheConfig {
            enabled: true,
            dir: dir.path().to_path_buf(),
            ttl: Duration::from_secs(3600),
            max_bytes: 2500,
        });
        let (first, second) = (key("1"), key("2"));
        store_entry(&cache, &first, scratch.path(), 1000);
        // Make the first entry visibly older.
        let manifest = dir
            .path()
            .join("entries")
            .join(first.hex())
            .join(MANIFEST_FILE);
        let file = std::fs::File::options()
            .write(true)
            .open(&manifest)
            .expect("open");
        file.set_modified(SystemTime::now() - Duration::from_secs(100))
            .expect("set mtime");
        store_entry(&cache, &second, scratch.path(), 2000);
        assert!(cache.lookup(&first).is_none(), "oldest evicted");
        assert!(cache.lookup(&second).is_some());
    }

    #[test]
    fn a_disabled_cache_neither_stores_nor_finds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = tempfile::tempdir().expect("scratch");
        let cache = Cache::new(CacheConfig {
            enabled: false,
            dir: dir.path().to_path_buf(),
            ttl: DEFAULT_TTL,
            max_bytes: DEFAULT_MAX_BYTES,
        });
        let k = key("x");
        store_entry(&cache, &k, scratch.path(), 1);
        assert!(cache.lookup(&k).is_none());
        assert!(!dir.path().join("entries").exists());
    }
}
