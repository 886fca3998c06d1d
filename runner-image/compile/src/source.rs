//! A function's source as a normalised tree of files: read from a file, a directory or inline
//! text, bounded in size, with one canonical form (sorted `/`-separated relative paths, LF line
//! endings for text languages) so equal sources hash equally whatever machine they came from.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::language::Language;
use crate::{Error, Result};

/// Where the source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceInput {
    /// One file; the tree holds it under its own file name.
    File(PathBuf),
    /// A directory (e.g. a Cargo project); every file below it except [`IGNORED_DIRECTORIES`].
    Directory(PathBuf),
    /// Text given directly (e.g. `spec.source.code`), stored under `file_name`.
    Inline {
        /// The file name it gets (see [`Language::default_file_name`]).
        file_name: String,
        /// The bytes.
        content: Vec<u8>,
    },
}

/// Directory names never taken into a source tree: build output and VCS metadata, which would
/// make the cache key depend on local state.
pub const IGNORED_DIRECTORIES: [&str; 4] = [".git", "target", "node_modules", "__pycache__"];

/// Most files a source tree may hold.
pub const MAX_FILES: usize = 1000;

/// Deepest directory nesting read.
pub const MAX_DEPTH: usize = 32;

/// A normalised source tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceTree {
    files: BTreeMap<String, Vec<u8>>,
}

impl SourceTree {
    /// Reads `input` for `language`, rejecting trees larger than `limit_bytes` (the sum of the
    /// normalised file sizes) before reading more than the limit.
    pub fn read(input: &SourceInput, language: Language, limit_bytes: u64) -> Result<SourceTree> {
        let mut tree = SourceTree::default();
        match input {
            SourceInput::Inline { file_name, content } => {
                check_size(content.len() as u64, limit_bytes)?;
                tree.insert(file_name, content.clone(), language)?;
            }
            SourceInput::File(path) => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        Error::InvalidSource(format!("{} names no file", path.display()))
                    })?;
                let size = std::fs::metadata(path)
                    .map_err(|e| Error::InvalidSource(format!("{}: {e}", path.display())))?
                    .len();
                check_size(size, limit_bytes)?;
                let content = std::fs::read(path)
                    .map_err(|e| Error::InvalidSource(format!("{}: {e}", path.display())))?;
                tree.insert(&name, content, language)?;
            }
            SourceInput::Directory(root) => {
                let mut total = 0u64;
                tree.read_directory(root, root, language, limit_bytes, &mut total)?;
            }
        }
        if tree.files.is_empty() {
            return Err(Error::InvalidSource("the source holds no files".into()));
        }
        check_size(tree.total_bytes(), limit_bytes)?;
        Ok(tree)
    }

    /// A tree from in-memory files (tests, callers that already hold the files).
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        language: Language,
    ) -> Result<SourceTree> {
        let mut tree = SourceTree::default();
        for (path, content) in files {
            tree.insert(path, content.to_vec(), language)?;
        }
        Ok(tree)
    }

    fn read_directory(
        &mut self,
        root: &Path,
        dir: &Path,
        language: Language,
        limit_bytes: u64,
        total: &mut u64,
    ) -> Result<()> {
        // Followed links could form a loop; no real source tree is this deep.
        if dir.strip_prefix(root).map_or(0, |r| r.components().count()) > MAX_DEPTH {
            return Err(Error::InvalidSource(format!(
                "the source is nested more than {MAX_DEPTH} directories deep"
            )));
        }
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::InvalidSource(format!("{}: {e}", dir.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::InvalidSource(format!("{}: {e}", dir.display())))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes' atomic-writer internals of a ConfigMap volume (`..data`, `..2024_…`):
            // the visible names are links into them.
            if name.starts_with("..") {
                continue;
            }
            // Links are followed (a ConfigMap volume is made of them); what they point at is
            // read like any other file, and counted against the size limit.
            let metadata = std::fs::metadata(&path)
                .map_err(|e| Error::InvalidSource(format!("{}: {e}", path.display())))?;
            if metadata.is_dir() {
                if !IGNORED_DIRECTORIES.contains(&name.as_str()) {
                    self.read_directory(root, &path, language, limit_bytes, total)?;
                }
            } else if metadata.is_file() {
                *total += metadata.len();
                check_size(*total, limit_bytes)?;
                let relative = path
                    .strip_prefix(root)
                    .map_err(|_| Error::InvalidSource(format!("{} escapes", path.display())))?;
                let relative = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let content = std::fs::read(&path)
                    .map_err(|e| Error::InvalidSource(format!("{}: {e}", path.display())))?;
                self.insert(&relative, content, language)?;
            }
        }
        Ok(())
    }

    fn insert(&mut self, path: &str, content: Vec<u8>, language: Language) -> Result<()> {
        let path = normalise_path(path)?;
        if self.files.len() >= MAX_FILES {
            return Err(Error::InvalidSource(format!(
                "the source holds more than {MAX_FILES} files"
            )));
        }
        let content = if crate::language::is_text(language) {
            normalise_line_endings(content)
        } else {
            content
        };
        self.files.insert(path, content);
        Ok(())
    }

    /// The files, sorted by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(p, c)| (p.as_str(), c.as_slice()))
    }

    /// One file's content.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Whether the tree holds `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Sum of the file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|c| c.len() as u64).sum()
    }

    /// Paths (sorted) whose extension is one of `extensions`, at the top level only.
    pub fn top_level_with_extension(&self, extensions: &[&str]) -> Vec<&str> {
        self.files
            .keys()
            .filter(|p| !p.contains('/'))
            .filter(|p| {
                Path::new(p.as_str())
                    .extension()
                    .is_some_and(|e| extensions.iter().any(|x| e == *x))
            })
            .map(String::as_str)
            .collect()
    }

    /// Writes the tree below `dir` (which must exist).
    pub fn write_to(&self, dir: &Path) -> Result<()> {
        for (path, content) in &self.files {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::write(&target, content).map_err(|e| Error::io(&target, e))?;
        }
        Ok(())
    }
}

fn check_size(size: u64, limit: u64) -> Result<()> {
    if size > limit {
        return Err(Error::SourceTooLarge { size, limit });
    }
    Ok(())
}

/// Turns a relative path into its canonical `a/b/c` form; rejects absolute paths, `..` and
/// empty names, which could write outside the build directory.
pub fn normalise_path(path: &str) -> Result<String> {
    let unified = path.replace('\\', "/");
    let mut parts = Vec::new();
    for component in Path::new(&unified).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Error::InvalidSource(format!(
                    "source path {path:?} must be relative and stay inside the source"
                )))
            }
        }
    }
    if parts.is_empty() {
        return Err(Error::InvalidSource(format!(
            "source path {path:?} names no file"
        )));
    }
    Ok(parts.join("/"))
}

/// CRLF and lone CR become LF (editors on other systems must not change the cache key or the
/// line numbers of diagnostics).
pub fn normalise_line_endings(content: Vec<u8>) -> Vec<u8> {
    if !content.contains(&b'\r') {
        return content;
    }
    let mut out = Vec::with_capacity(content.len());
    let mut bytes = content.iter().peekable();
    while let Some(&byte) = bytes.next() {
        if byte == b'\r' {
            if bytes.peek() == Some(&&b'\n') {
                bytes.next();
            }
            out.push(b'\n');
        } else {
            out.push(byte);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings() {
        assert_eq!(
            normalise_line_endings(b"a\r\nb\rc\n".to_vec()),
            b"a\nb\nc\n"
        );
        assert_eq!(normalise_line_endings(b"\r\r\n".to_vec()), b"\n\n");
        assert_eq!(normalise_line_endings(b"plain\n".to_vec()), b"plain\n");
        assert_eq!(normalise_line_endings(Vec::new()), b"");
    }

    #[test]
    fn paths() {
        assert_eq!(normalise_path("./src//main.rs").expect("ok"), "src/main.rs");
        assert_eq!(normalise_path("src\\lib.rs").expect("ok"), "src/lib.rs");
        for bad in ["/etc/passwd", "../x", "a/../../x", "", "."] {
            assert!(
                matches!(normalise_path(bad), Err(Error::InvalidSource(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn inline_sources_are_normalised_and_bounded() {
        let input = SourceInput::Inline {
            file_name: "main.c".into(),
            content: b"int main(){}\r\n".to_vec(),
        };
        let tree = SourceTree::read(&input, Language::C, 100).expect("read");
        assert_eq!(tree.get("main.c"), Some(&b"int main(){}\n"[..]));
        match SourceTree::read(&input, Language::C, 10) {
            Err(Error::SourceTooLarge {
                size: 14,
                limit: 10,
            }) => {}
            other => panic!("expected SourceTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn binary_sources_keep_their_bytes() {
        let tree =
            SourceTree::from_files([("m.wasm", &b"\0asm\r\n"[..])], Language::Wasm).expect("tree");
        assert_eq!(tree.get("m.wasm"), Some(&b"\0asm\r\n"[..]));
    }

    #[test]
    fn directories_skip_build_output_and_sort() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::create_dir_all(root.join("target/debug")).expect("mkdir");
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::write(root.join("Cargo.toml"), "[package]\r\n").expect("write");
        std::fs::write(root.join("src/main.rs"), "fn main(){}").expect("write");
        std::fs::write(root.join("target/debug/big"), vec![0u8; 4096]).expect("write");
        std::fs::write(root.join(".git/HEAD"), "ref").expect("write");
        let tree = SourceTree::read(&SourceInput::Directory(root.into()), Language::Rust, 1000)
            .expect("read");
        let paths: Vec<&str> = tree.files().map(|(p, _)| p).collect();
        assert_eq!(paths, ["Cargo.toml", "src/main.rs"]);
        assert_eq!(tree.get("Cargo.toml"), Some(&b"[package]\n"[..]));
        assert_eq!(tree.total_bytes(), 10 + 11);
        assert!(matches!(
            SourceTree::read(&SourceInput::Directory(root.into()), Language::Rust, 15),
            Err(Error::SourceTooLarge { .. })
        ));
    }

    #[test]
    fn configmap_volume_layouts_are_read_through_their_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let data = root.join("..2026_11_25_10_00_00.123");
        std::fs::create_dir_all(&data).expect("mkdir");
        std::fs::write(data.join("main.go"), "package main\n").expect("write");
        std::os::unix::fs::symlink("..2026_11_25_10_00_00.123", root.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/main.go", root.join("main.go")).expect("link");
        let tree = SourceTree::read(&SourceInput::Directory(root.into()), Language::Go, 100)
            .expect("read");
        let paths: Vec<&str> = tree.files().map(|(p, _)| p).collect();
        assert_eq!(paths, ["main.go"]);
        std::os::unix::fs::symlink(".", root.join("loop")).expect("link");
        assert!(matches!(
            SourceTree::read(&SourceInput::Directory(root.into()), Language::Go, 1 << 20),
            Err(Error::InvalidSource(_))
        ));
    }

    #[test]
    fn oversized_files_are_rejected_before_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.py");
        std::fs::write(&path, vec![b'#'; 2048]).expect("write");
        let error = SourceTree::read(&SourceInput::File(path), Language::Python, 1024)
            .expect_err("too large");
        assert_eq!(
            error.to_string(),
            "source is 2048 bytes, more than the limit of 1024 bytes"
        );
    }

    #[test]
    fn empty_and_missing_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            SourceTree::read(&SourceInput::Directory(dir.path().into()), Language::C, 10),
            Err(Error::InvalidSource(_))
        ));
        assert!(matches!(
            SourceTree::read(
                &SourceInput::File(dir.path().join("nope.c")),
                Language::C,
                10
            ),
            Err(Error::InvalidSource(_))
        ));
    }

    #[test]
    fn top_level_files_by_extension() {
        let tree = SourceTree::from_files(
            [
                ("b.c", &b""[..]),
                ("a.c", &b""[..]),
                ("x.h", &b""[..]),
                ("sub/c.c", &b""[..]),
            ],
            Language::C,
        )
        .expect("tree");
        assert_eq!(tree.top_level_with_extension(&["c"]), ["a.c", "b.c"]);
    }
}
