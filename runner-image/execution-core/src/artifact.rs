//! The artifact reader: a module's bytes and their identity (sha256), read once per run.
//!
//! A module path names either a plain `.wasm` file or a packed artifact of the ConfigMap store
//! (the format of the `wasmfn-artifact` crate: a directory holding `artifact.json` and the
//! gzip-compressed parts, or that `artifact.json` itself). A packed artifact is unpacked in
//! memory, each part and the module checked against the manifest's digests; any mismatch is an
//! error naming the part, never a module that runs anyway.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::request::ModuleSource;
use crate::Error;

/// Largest module accepted (CPython-WASI is ~20 MB; anything far bigger is a mistake or an
/// attack). The same bound applies to packed artifacts.
pub const MAX_MODULE_BYTES: u64 = wasmfn_artifact::MAX_MODULE_BYTES;

/// A module's bytes with their digest.
#[derive(Debug, Clone)]
pub struct ModuleBytes {
    bytes: Vec<u8>,
    sha256_hex: String,
}

impl ModuleBytes {
    /// Wraps bytes already in memory.
    pub fn new(bytes: Vec<u8>) -> Self {
        let sha256_hex = digest_hex(&bytes);
        ModuleBytes { bytes, sha256_hex }
    }

    /// Reads a module file (bounded by [`MAX_MODULE_BYTES`]), or unpacks and verifies a packed
    /// artifact when `path` is one (see [`is_packed`]).
    pub fn read(path: &Path) -> Result<Self, Error> {
        if is_packed(path) {
            let (_, bytes) = wasmfn_artifact::read(path).map_err(|source| Error::Artifact {
                path: path.display().to_string(),
                source,
            })?;
            return Ok(Self::new(bytes));
        }
        let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if metadata.len() > MAX_MODULE_BYTES {
            return Err(Error::InvalidModule(format!(
                "{} is {} bytes, more than the {MAX_MODULE_BYTES}-byte limit",
                path.display(),
                metadata.len()
            )));
        }
        Ok(Self::new(
            std::fs::read(path).map_err(|e| Error::io(path, e))?,
        ))
    }

    /// Reads whatever the source names.
    pub fn from_source(source: &ModuleSource) -> Result<Self, Error> {
        match source {
            ModuleSource::Path(path) => Self::read(path),
            ModuleSource::Bytes(bytes) => Ok(Self::new(bytes.clone())),
        }
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `sha256:<hex>`.
    pub fn sha256(&self) -> String {
        format!("sha256:{}", self.sha256_hex)
    }

    /// Checks the bytes against an expected `sha256:<hex>` (or bare hex) digest, as an artifact
    /// store promised it.
    pub fn verify(&self, expected: &str) -> Result<(), Error> {
        let expected = expected.strip_prefix("sha256:").unwrap_or(expected);
        if expected.eq_ignore_ascii_case(&self.sha256_hex) {
            Ok(())
        } else {
            Err(Error::InvalidModule(format!(
                "digest mismatch: expected sha256:{expected}, got {}",
                self.sha256()
            )))
        }
    }
}

/// Whether `path` names a packed artifact (a directory with `artifact.json`, or that file)
/// rather than a plain module file.
pub fn is_packed(path: &Path) -> bool {
    wasmfn_artifact::is_packed(path)
}

/// Lower-case hex sha256 of `bytes`.
pub fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
