//! The ConfigMap store's artifact format: a module (or script) gzip-compressed, split into parts
//! small enough for one ConfigMap each, and described by a manifest that names the parts and
//! carries the digests every reader checks.
//!
//! The operator writes it ([`pack`]); a pod that runs the function mounts the ConfigMaps holding
//! the manifest and the parts into one directory (one projected volume), and the runners
//! (`wasmfn exec`, the containerd shim) read that directory back ([`read_dir`], or [`read`] with
//! the directory or its `artifact.json`). Nothing here depends on WasmEdge.
//!
//! A mounted artifact looks like this:
//!
//! ```text
//! /artifact/artifact.json     the manifest (ConfigMap key `artifact.json`)
//! /artifact/module.gz.000     bytes 0..921600 of the gzip stream (ConfigMap binaryData)
//! /artifact/module.gz.001     the next bytes …
//! ```
//!
//! ```json
//! {
//!   "apiVersion": "wasmfn.dev/v1alpha1",
//!   "kind": "ArtifactManifest",
//!   "digest": "sha256:<hex of the uncompressed module>",
//!   "size": 2621440,
//!   "mediaType": "application/wasm",
//!   "compression": "gzip",
//!   "compressedSize": 2622301,
//!   "parts": [ { "name": "module.gz.000", "digest": "sha256:<hex of this part>", "size": 921600 }, … ]
//! }
//! ```
//!
//! The concatenated parts are one ordinary gzip stream, so a person can check an artifact by hand:
//! `cat module.gz.* | gunzip | sha256sum` (or, from the ConfigMaps, `base64 -d | gunzip`).
//!
//! Reading is defensive: the manifest is validated before any part is read (version, digest
//! syntax, part names that are plain ConfigMap keys and cannot leave the directory, sizes within
//! [`MAX_MODULE_BYTES`]); each part is checked against its size and digest; decompression stops
//! at the size the manifest declares (no decompression bombs); the result must match the module
//! digest. Every failure names what to look at (which part, expected vs actual digest).

pub mod native_code;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use native_code::{check_no_native_code, NativeCodeError, NATIVE_CODE_REASON};

/// `apiVersion` of the manifest this crate writes and reads.
pub const API_VERSION: &str = "wasmfn.dev/v1alpha1";
/// `kind` of the manifest.
pub const KIND: &str = "ArtifactManifest";
/// Key (in the ConfigMap) and file name (in the mounted directory) of the manifest.
pub const MANIFEST_FILE: &str = "artifact.json";
/// Largest part [`pack`] produces by default: a ConfigMap holds at most 1 MiB, including
/// metadata and the base64 growth of `binaryData` in etcd's JSON is not counted against it.
pub const DEFAULT_PART_BYTES: usize = 900 * 1024;
/// Largest module a reader accepts (CPython-WASI is ~20 MB; anything far bigger is a mistake
/// or an attack). The execution core uses the same bound for plain module files.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;
/// Largest stored (compressed) form a reader accepts: gzip adds a little to incompressible data.
pub const MAX_STORED_BYTES: u64 = MAX_MODULE_BYTES + MAX_MODULE_BYTES / 64;
/// Largest manifest file a reader accepts.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Media type of a WebAssembly module.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// Media type of a Python function's artifact (the script).
pub const PYTHON_MEDIA_TYPE: &str = "text/x-python";
/// Media type of a JavaScript function's artifact (the script).
pub const JAVASCRIPT_MEDIA_TYPE: &str = "text/javascript";

/// Whether an artifact of this media type is a script (run by an interpreter module).
pub fn is_script_media_type(media_type: &str) -> bool {
    media_type == PYTHON_MEDIA_TYPE || media_type == JAVASCRIPT_MEDIA_TYPE
}

/// Longest part name (a ConfigMap key is at most 253 characters).
const MAX_PART_NAME: usize = 253;

/// How the module is stored in the parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// One gzip stream (RFC 1952) split across the parts.
    Gzip,
    /// The module's bytes as they are.
    None,
}

impl Compression {
    fn part_prefix(self) -> &'static str {
        match self {
            Compression::Gzip => "module.gz",
            Compression::None => "module",
        }
    }
}

/// The manifest: what the module is (digest, size, media type) and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactManifest {
    /// [`API_VERSION`].
    pub api_version: String,
    /// [`KIND`].
    pub kind: String,
    /// `sha256:<hex>` of the uncompressed module.
    pub digest: String,
    /// Bytes of the uncompressed module.
    pub size: u64,
    /// Media type of the module, e.g. [`WASM_MEDIA_TYPE`].
    pub media_type: String,
    /// How the parts encode the module.
    pub compression: Compression,
    /// Bytes of all parts together.
    pub compressed_size: u64,
    /// The parts, in order; concatenated they are the stored (compressed) form.
    pub parts: Vec<ArtifactPart>,
}

/// One part: a ConfigMap key / file name, and what its bytes must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactPart {
    /// Key and file name, e.g. `module.gz.000` (characters `[-._a-zA-Z0-9]` only).
    pub name: String,
    /// `sha256:<hex>` of this part's bytes.
    pub digest: String,
    /// Bytes in this part.
    pub size: u64,
}

/// A packed module: the manifest and the parts' bytes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The manifest (store it under [`MANIFEST_FILE`] as [`ArtifactManifest::to_json`]).
    pub manifest: ArtifactManifest,
    /// `(name, bytes)` of each part, in the manifest's order.
    pub parts: Vec<(String, Vec<u8>)>,
}

/// Why an artifact could not be read. Messages say which file or part, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory has no manifest.
    #[error("{}: no {MANIFEST_FILE} here, so this is not a packed artifact", dir.display())]
    MissingManifest {
        /// Where the manifest was looked for.
        dir: PathBuf,
    },
    /// The manifest is not JSON of the expected shape.
    #[error("artifact manifest is not a valid {KIND}: {0}")]
    ManifestSyntax(String),
    /// The manifest is of another version or kind.
    #[error(
        "artifact manifest is {api_version}/{kind}; this reader understands {API_VERSION}/{KIND} \
         (written by a newer or older wasmfn?)"
    )]
    UnsupportedManifest {
        /// The manifest's `apiVersion`.
        api_version: String,
        /// The manifest's `kind`.
        kind: String,
    },
    /// The manifest is well-formed JSON but describes something no writer produces.
    #[error("artifact manifest is invalid: {0}")]
    InvalidManifest(String),
    /// A part the manifest names is not there.
    #[error("artifact part {name:?} is missing ({detail})")]
    MissingPart {
        /// The part.
        name: String,
        /// Where it was looked for, or why it could not be fetched.
        detail: String,
    },
    /// A part has the wrong length (truncated, or another artifact's part).
    #[error("artifact part {name:?} is {actual} bytes, the manifest says {expected}")]
    PartSize {
        /// The part.
        name: String,
        /// What the manifest says.
        expected: u64,
        /// What was found.
        actual: u64,
    },
    /// A part's bytes do not match its digest (corrupted, or another artifact's part).
    #[error(
        "artifact part {name:?} is corrupt: digest mismatch, expected {expected}, got {actual}"
    )]
    PartDigest {
        /// The part.
        name: String,
        /// The manifest's digest for it.
        expected: String,
        /// The digest of the bytes found.
        actual: String,
    },
    /// The stored form is not a valid gzip stream.
    #[error("artifact does not decompress: {0}")]
    Decompress(String),
    /// The stored form expands past the size the manifest declares (a decompression bomb, or a
    /// wrong manifest); decompression stopped there.
    #[error("artifact decompresses to more than the {limit} bytes its manifest declares")]
    TooLarge {
        /// The declared size.
        limit: u64,
    },
    /// The module is shorter than the manifest declares.
    #[error("artifact decompresses to {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The declared size.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// The unpacked module is not the one the manifest names.
    #[error("module digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The manifest's digest.
        expected: String,
        /// The digest of the unpacked bytes.
        actual: String,
    },
}

impl Error {
    /// A fixed, low-cardinality name for the variant (metrics labels, event reasons).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Io { .. } => "Io",
            Error::MissingManifest { .. } => "MissingManifest",
            Error::ManifestSyntax(_) => "ManifestSyntax",
            Error::UnsupportedManifest { .. } => "UnsupportedManifest",
            Error::InvalidManifest(_) => "InvalidManifest",
            Error::MissingPart { .. } => "MissingPart",
            Error::PartSize { .. } => "PartSize",
            Error::PartDigest { .. } => "PartDigest",
            Error::Decompress(_) => "Decompress",
            Error::TooLarge { .. } => "TooLarge",
            Error::SizeMismatch { .. } => "SizeMismatch",
            Error::DigestMismatch { .. } => "DigestMismatch",
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Packs `module` gzip-compressed into parts of at most `part_bytes` bytes (0 counts as 1).
/// Deterministic: the same module always gives the same manifest and parts (the gzip header
/// carries no time or file name).
pub fn pack(module: &[u8], media_type: &str, part_bytes: usize) -> Packed {
    pack_with(module, media_type, part_bytes, Compression::Gzip)
}

/// [`pack`] with a choice of compression.
pub fn pack_with(
    module: &[u8],
    media_type: &str,
    part_bytes: usize,
    compression: Compression,
) -> Packed {
    let stored = match compression {
        Compression::Gzip => gzip(module),
        Compression::None => module.to_vec(),
    };
    let part_bytes = part_bytes.max(1);
    let chunks: Vec<&[u8]> = if stored.is_empty() {
        vec![&[]]
    } else {
        stored.chunks(part_bytes).collect()
    };
    let parts: Vec<(String, Vec<u8>)> = chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| {
            (
                format!("{}.{index:03}", compression.part_prefix()),
                chunk.to_vec(),
            )
        })
        .collect();
    let manifest = ArtifactManifest {
        api_version: API_VERSION.to_string(),
        kind: KIND.to_string(),
        digest: sha256_digest(module),
        size: module.len() as u64,
        media_type: media_type.to_string(),
        compression,
        compressed_size: stored.len() as u64,
        parts: parts
            .iter()
            .map(|(name, bytes)| ArtifactPart {
                name: name.clone(),
                digest: sha256_digest(bytes),
                size: bytes.len() as u64,
            })
            .collect(),
    };
    Packed { manifest, parts }
}

/// One gzip stream of `bytes` at the best compression, deterministic (no mtime, no file name).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    // GzEncoder's default header has no mtime and no file name, which keeps packing
    // deterministic. Writing into a Vec cannot fail.
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 2 + 64),
        flate2::Compression::best(),
    );
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .unwrap_or_else(|e| unreachable!("gzip into memory failed: {e}"))
}

/// [`pack`] for a module that arrives in pieces (a registry download): bytes go in with
/// [`PackWriter::write`] and every part comes out as soon as it is full, so packing holds about
/// one part whatever the module's size. The manifest and parts equal [`pack`]'s for the same
/// bytes, however they were split (so two writers racing to store one module write the same
/// parts).
pub struct PackWriter {
    encoder: GzEncoder<Vec<u8>>,
    module: Sha256,
    size: u64,
    media_type: String,
    part_bytes: usize,
    parts: Vec<ArtifactPart>,
    compressed: u64,
}

impl std::fmt::Debug for PackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackWriter")
            .field("size", &self.size)
            .field("parts", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl PackWriter {
    /// A writer for a module of `media_type`, in parts of at most `part_bytes` (0 counts as 1).
    pub fn new(media_type: &str, part_bytes: usize) -> Self {
        PackWriter {
            encoder: GzEncoder::new(Vec::new(), flate2::Compression::best()),
            module: Sha256::new(),
            size: 0,
            media_type: media_type.to_string(),
            part_bytes: part_bytes.max(1),
            parts: Vec::new(),
            compressed: 0,
        }
    }

    /// Bytes of the module taken so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Compressed bytes waiting for their part to fill (always less than one part).
    pub fn buffered(&self) -> usize {
        self.encoder.get_ref().len()
    }

    /// Takes the next bytes of the module; returns the parts that filled up, in order.
    pub fn write(&mut self, bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        self.module.update(bytes);
        self.size += bytes.len() as u64;
        let mut full = Vec::new();
        // At most a part's worth at a time: the output buffer stays under two parts.
        for piece in bytes.chunks(self.part_bytes) {
            self.encoder
                .write_all(piece)
                .unwrap_or_else(|e| unreachable!("gzip into memory failed: {e}"));
            while self.encoder.get_ref().len() >= self.part_bytes {
                let buffer = self.encoder.get_mut();
                let rest = buffer.split_off(self.part_bytes);
                let part = std::mem::replace(buffer, rest);
                full.push(self.name_part(part));
            }
        }
        full
    }

    /// Ends the module: the last parts, and the manifest of all of them.
    pub fn finish(mut self) -> (ArtifactManifest, Vec<(String, Vec<u8>)>) {
        let stored = std::mem::replace(
            &mut self.encoder,
            GzEncoder::new(Vec::new(), flate2::Compression::none()),
        )
        .finish()
        .unwrap_or_else(|e| unreachable!("gzip into memory failed: {e}"));
        let mut last: Vec<(String, Vec<u8>)> = Vec::new();
        for chunk in stored.chunks(self.part_bytes) {
            last.push(self.name_part(chunk.to_vec()));
        }
        if self.parts.is_empty() {
            last.push(self.name_part(Vec::new()));
        }
        let manifest = ArtifactManifest {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            digest: format!("sha256:{}", hex::encode(self.module.finalize())),
            size: self.size,
            media_type: self.media_type,
            compression: Compression::Gzip,
            compressed_size: self.compressed,
            parts: self.parts,
        };
        (manifest, last)
    }

    fn name_part(&mut self, bytes: Vec<u8>) -> (String, Vec<u8>) {
        let name = format!(
            "{}.{:03}",
            Compression::Gzip.part_prefix(),
            self.parts.len()
        );
        self.compressed += bytes.len() as u64;
        self.parts.push(ArtifactPart {
            name: name.clone(),
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
        });
        (name, bytes)
    }
}

/// Unpacks a module: validates the manifest, fetches each part with `read_part(name)`, checks
/// each part's size and digest, decompresses at most `manifest.size` bytes and checks the
/// module's digest. `read_part` may return [`Error::MissingPart`] for a part it cannot find.
pub fn unpack(
    manifest: &ArtifactManifest,
    mut read_part: impl FnMut(&str) -> Result<Vec<u8>, Error>,
) -> Result<Vec<u8>, Error> {
    manifest.validate()?;
    // Bounded by validate(): at most MAX_STORED_BYTES.
    let mut stored = Vec::with_capacity(manifest.compressed_size as usize);
    for part in &manifest.parts {
        let bytes = read_part(&part.name)?;
        if bytes.len() as u64 != part.size {
            return Err(Error::PartSize {
                name: part.name.clone(),
                expected: part.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = sha256_digest(&bytes);
        if actual != part.digest {
            return Err(Error::PartDigest {
                name: part.name.clone(),
                expected: part.digest.clone(),
                actual,
            });
        }
        stored.extend_from_slice(&bytes);
    }
    let module = match manifest.compression {
        Compression::None => stored,
        Compression::Gzip => gunzip_bounded(&stored, manifest.size)?,
    };
    if module.len() as u64 != manifest.size {
        return Err(Error::SizeMismatch {
            expected: manifest.size,
            actual: module.len() as u64,
        });
    }
    let actual = sha256_digest(&module);
    if actual != manifest.digest {
        return Err(Error::DigestMismatch {
            expected: manifest.digest.clone(),
            actual,
        });
    }
    Ok(module)
}

/// Decompresses one gzip stream, refusing to produce more than `limit` bytes.
pub fn gunzip_bounded(stored: &[u8], limit: u64) -> Result<Vec<u8>, Error> {
    let mut decoder = GzDecoder::new(stored).take(limit + 1);
    let mut module = Vec::with_capacity(limit as usize);
    decoder
        .read_to_end(&mut module)
        .map_err(|e| Error::Decompress(e.to_string()))?;
    if module.len() as u64 > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok(module)
}

/// Reads a packed artifact from a directory holding [`MANIFEST_FILE`] and the parts (the
/// ConfigMaps of one artifact mounted as one projected volume).
pub fn read_dir(dir: &Path) -> Result<(ArtifactManifest, Vec<u8>), Error> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_bytes = match read_bounded(&manifest_path, MAX_MANIFEST_BYTES) {
        Ok(bytes) => bytes,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingManifest {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(e),
    };
    let manifest = ArtifactManifest::from_json(&manifest_bytes)?;
    let module = unpack(&manifest, |name| {
        // validate() (inside unpack) has already checked that names are plain file names.
        let expected = manifest
            .parts
            .iter()
            .find(|p| p.name == name)
            .map_or(0, |p| p.size);
        let path = dir.join(name);
        let found = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingPart {
                name: name.to_string(),
                detail: format!("no file {}", path.display()),
            },
            _ => Error::io(&path, e),
        })?;
        if found.len() != expected {
            return Err(Error::PartSize {
                name: name.to_string(),
                expected,
                actual: found.len(),
            });
        }
        read_bounded(&path, expected)
    })?;
    Ok((manifest, module))
}

/// The media type a packed artifact's manifest records (its directory or its `artifact.json`),
/// read without unpacking the parts.
pub fn media_type(path: &Path) -> Result<String, Error> {
    let manifest = if is_manifest_file(path) {
        path.to_path_buf()
    } else {
        path.join(MANIFEST_FILE)
    };
    let bytes = read_bounded(&manifest, MAX_MANIFEST_BYTES)?;
    Ok(ArtifactManifest::from_json(&bytes)?.media_type)
}

/// Reads a packed artifact named by either its directory or its `artifact.json`.
pub fn read(path: &Path) -> Result<(ArtifactManifest, Vec<u8>), Error> {
    if is_manifest_file(path) {
        read_dir(path.parent().unwrap_or(Path::new(".")))
    } else {
        read_dir(path)
    }
}

/// Whether `path` names a packed artifact: a directory containing [`MANIFEST_FILE`], or that
/// file itself.
pub fn is_packed(path: &Path) -> bool {
    if path.is_dir() {
        path.join(MANIFEST_FILE).is_file()
    } else {
        is_manifest_file(path) && path.is_file()
    }
}

fn is_manifest_file(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == MANIFEST_FILE)
}

/// Reads a file of at most `limit` bytes (a longer file is an error, and is not read past the
/// limit).
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than the {limit} bytes expected"),
            ),
        ));
    }
    Ok(bytes)
}

impl ArtifactManifest {
    /// The manifest as stored under [`MANIFEST_FILE`] (indented, for people).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| unreachable!("a manifest always serialises: {e}"))
    }

    /// Parses and validates a stored manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        // Check the version first, so a future manifest gets "unsupported version" rather than
        // a complaint about a field this reader does not know.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Header {
            #[serde(default)]
            api_version: String,
            #[serde(default)]
            kind: String,
        }
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| Error::ManifestSyntax(e.to_string()))?;
        check_version(&header.api_version, &header.kind)?;
        let manifest: ArtifactManifest =
            serde_json::from_slice(bytes).map_err(|e| Error::ManifestSyntax(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks everything that can be checked without the parts: version, digests' syntax, part
    /// names (plain ConfigMap keys, unique, not the manifest's), sizes within the bounds.
    pub fn validate(&self) -> Result<(), Error> {
        check_version(&self.api_version, &self.kind)?;
        let invalid = |message: String| Err(Error::InvalidManifest(message));
        if !is_sha256_digest(&self.digest) {
            return invalid(format!(
                "digest {:?} is not sha256:<64 lower-case hex digits>",
                self.digest
            ));
        }
        if self.size > MAX_MODULE_BYTES {
            return invalid(format!(
                "the module is {} bytes, more than the {MAX_MODULE_BYTES}-byte limit",
                self.size
            ));
        }
        if self.compressed_size > MAX_STORED_BYTES {
            return invalid(format!(
                "compressedSize {} is more than the {MAX_STORED_BYTES}-byte limit",
                self.compressed_size
            ));
        }
        if self.compression == Compression::None && self.compressed_size != self.size {
            return invalid(format!(
                "compression is none but compressedSize {} differs from size {}",
                self.compressed_size, self.size
            ));
        }
        if self.parts.is_empty() {
            return invalid("it names no parts".into());
        }
        let mut names = HashSet::new();
        let mut total: u64 = 0;
        for part in &self.parts {
            if !is_part_name(&part.name) {
                return invalid(format!(
                    "part name {:?} is not a plain ConfigMap key ([-._a-zA-Z0-9], at most \
                     {MAX_PART_NAME} characters, not starting with \"..\", not {MANIFEST_FILE})",
                    part.name
                ));
            }
            if !names.insert(part.name.as_str()) {
                return invalid(format!("part {:?} is listed twice", part.name));
            }
            if !is_sha256_digest(&part.digest) {
                return invalid(format!(
                    "part {:?} has digest {:?}, not sha256:<64 lower-case hex digits>",
                    part.name, part.digest
                ));
            }
            total = total.saturating_add(part.size);
        }
        if total != self.compressed_size {
            return invalid(format!(
                "the parts add up to {total} bytes, compressedSize says {}",
                self.compressed_size
            ));
        }
        Ok(())
    }
}

fn check_version(api_version: &str, kind: &str) -> Result<(), Error> {
    if api_version == API_VERSION && kind == KIND {
        Ok(())
    } else {
        Err(Error::UnsupportedManifest {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })
    }
}

fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A ConfigMap key that is also a safe file name inside the mounted directory: no separators,
/// not `.`/`..`, not the kubelet's `..data`-style entries, not the manifest.
fn is_part_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PART_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && name != "."
        && !name.starts_with("..")
        && name != MANIFEST_FILE
}

impl Packed {
    /// Unpacks this artifact from memory (a check that a freshly packed artifact reads back).
    pub fn unpack(&self) -> Result<Vec<u8>, Error> {
        unpack(&self.manifest, |name| {
            self.parts
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, bytes)| bytes.clone())
                .ok_or_else(|| Error::MissingPart {
                    name: name.to_string(),
                    detail: "not among the packed parts".into(),
                })
        })
    }

    /// Writes the parts and then the manifest into `dir` (created if needed): the layout a
    /// projected volume of the artifact's ConfigMaps gives a pod.
    pub fn write_dir(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        for (name, bytes) in &self.parts {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        }
        let path = dir.join(MANIFEST_FILE);
        std::fs::write(&path, self.manifest.to_json()).map_err(|e| Error::io(&path, e))
    }
}

#[cfg(test)]
mod tests;
