//! Toolchain versions, asked once per binary and remembered: starting `rustc --version` or
//! `node --version` costs tens of milliseconds, more than a whole cache hit may take.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Remembers tool versions in memory and, when given a directory, on disk.
#[derive(Debug, Default)]
pub struct IdentityMemo {
    dir: Option<PathBuf>,
    known: Mutex<HashMap<String, String>>,
    /// How many version queries actually started a process (observable in tests).
    queries: Mutex<u32>,
}

impl IdentityMemo {
    /// A memo persisted under `dir` (created on demand; an unwritable directory only costs
    /// repeated queries).
    pub fn persistent(dir: PathBuf) -> Self {
        IdentityMemo {
            dir: Some(dir),
            ..IdentityMemo::default()
        }
    }

    /// How many processes the memo started.
    pub fn queries(&self) -> u32 {
        *self.queries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version line `program args…` prints (first non-empty line of stdout, else stderr),
    /// remembered by the program file's fingerprint.
    pub fn version(&self, program: &Path, args: &[&str]) -> Result<String> {
        let fingerprint =
            file_fingerprint(program, args).map_err(|source| Error::ToolchainMissing {
                program: program.display().to_string(),
                source,
            })?;
        self.remembered(&fingerprint, || {
            *self.queries.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let output = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                // cargo refuses to start without a home directory, and the builder's user has
                // no passwd entry to find one in.
                .env(
                    "HOME",
                    std::env::var_os("HOME").unwrap_or_else(|| std::env::temp_dir().into()),
                )
                .output()
                .map_err(|source| Error::ToolchainMissing {
                    program: program.display().to_string(),
                    source,
                })?;
            let text = if output.stdout.iter().any(|b| !b.is_ascii_whitespace()) {
                output.stdout
            } else {
                output.stderr
            };
            let text = String::from_utf8_lossy(&text);
            let line = text.lines().map(str::trim).find(|l| !l.is_empty());
            match (output.status.success(), line) {
                (true, Some(line)) => Ok(line.to_owned()),
                _ => Err(Error::Internal(format!(
                    "{} {} did not report a version ({})",
                    program.display(),
                    args.join(" "),
                    output.status
                ))),
            }
        })
    }

    /// `compute()`'s result for a file's content digest (interpreter modules), remembered by the
    /// file's fingerprint.
    pub fn file_digest(&self, path: &Path) -> Result<String> {
        let fingerprint =
            file_fingerprint(path, &["sha256"]).map_err(|source| Error::ToolchainMissing {
                program: path.display().to_string(),
                source,
            })?;
        self.remembered(&fingerprint, || {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            Ok(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
        })
    }

    fn remembered(
        &self,
        fingerprint: &str,
        compute: impl FnOnce() -> Result<String>,
    ) -> Result<String> {
        if let Some(known) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(fingerprint)
        {
            return Ok(known.clone());
        }
        let file = self.dir.as_ref().map(|dir| dir.join(fingerprint));
        if let Some(value) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
            self.remember(fingerprint, &value);
            return Ok(value);
        }
        let value = compute()?;
        if let (Some(dir), Some(file)) = (&self.dir, &file) {
            let temporary = dir.join(format!("{fingerprint}.{}.tmp", std::process::id()));
            let written = std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(&temporary, &value))
                .and_then(|_| std::fs::rename(&temporary, file));
            if written.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
        }
        self.remember(fingerprint, &value);
        Ok(value)
    }

    fn remember(&self, fingerprint: &str, value: &str) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fingerprint.to_owned(), value.to_owned());
    }
}

/// sha256 over the canonical path, size, modification time and inode of `program` (a
/// reinstalled or upgraded tool gets a new fingerprint) and the query's arguments.
fn file_fingerprint(program: &Path, args: &[&str]) -> std::io::Result<String> {
    let canonical = std::fs::canonicalize(program)?;
    let metadata = std::fs::metadata(&canonical)?;
    let mut hasher = Sha256::new();
    hasher.update(canonical.to_string_lossy().as_bytes());
    hasher.update([0]);
    hasher.update(metadata.len().to_le_bytes());
    hasher.update(metadata.mtime().to_le_bytes());
    hasher.update(metadata.mtime_nsec().to_le_bytes());
    hasher.update(metadata.ino().to_le_bytes());
    for arg in args {
        hasher.update([0]);
        hasher.update(arg.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_asked_once_and_persisted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memo = IdentityMemo::persistent(dir.path().to_path_buf());
        let sh = Path::new("/bin/sh");
        let first = memo
            .version(sh, &["-c", "echo tool 1.2.3"])
            .expect("version");
        assert_eq!(first, "tool 1.2.3");
        assert_eq!(
            memo.version(sh, &["-c", "echo tool 1.2.3"]).expect("again"),
            first
        );
        assert_eq!(memo.queries(), 1);
        let fresh = IdentityMemo::persistent(dir.path().to_path_buf());
        assert_eq!(
            fresh.version(sh, &["-c", "echo tool 1.2.3"]).expect("disk"),
            first
        );
        assert_eq!(fresh.queries(), 0, "read back from disk, no process");
    }

    #[test]
    fn failures_are_not_remembered() {
        let memo = IdentityMemo::default();
        assert!(memo
            .version(Path::new("/bin/sh"), &["-c", "exit 1"])
            .is_err());
        assert!(matches!(
            memo.version(Path::new("/no/such/tool"), &["--version"]),
            Err(Error::ToolchainMissing { .. })
        ));
    }
}
