//! The content address of a compile: sha256 over (language, toolchain identity, build options,
//! normalised source tree). Every field is length-prefixed, so no two different inputs can
//! produce the same byte stream (`"ab" + "c"` never collides with `"a" + "bc"`).

use sha2::{Digest, Sha256};

use crate::language::Language;
use crate::options::BuildOptions;
use crate::source::SourceTree;
use crate::toolchain::ToolchainIdentity;

/// Bumped whenever the pipeline's output for the same inputs changes (new flags, new layout),
/// so old cache entries stop matching.
pub const PIPELINE_VERSION: &str = "wasmfn-compile/1";

/// A cache key, `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// Computes the key.
    pub fn compute(
        language: Language,
        toolchain: &[ToolchainIdentity],
        options: &BuildOptions,
        source: &SourceTree,
    ) -> CacheKey {
        let mut hasher = KeyHasher::default();
        hasher.field("pipeline", PIPELINE_VERSION.as_bytes());
        hasher.field("language", language.as_str().as_bytes());
        for tool in toolchain {
            hasher.field("tool", tool.name.as_bytes());
            hasher.field("version", tool.version.as_bytes());
        }
        for (name, value) in options.key_fields() {
            hasher.field(name, value.as_bytes());
        }
        for (path, content) in source.files() {
            hasher.field("path", path.as_bytes());
            hasher.field("content", content);
        }
        CacheKey(format!("sha256:{}", hex::encode(hasher.0.finalize())))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex digest alone (a file name).
    pub fn hex(&self) -> &str {
        self.0.trim_start_matches("sha256:")
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Default)]
struct KeyHasher(Sha256);

impl KeyHasher {
    fn field(&mut self, name: &str, value: &[u8]) {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{ModuleKind, OptimizationLevel};

    fn tool(version: &str) -> Vec<ToolchainIdentity> {
        vec![ToolchainIdentity {
            name: "rustc".into(),
            version: version.into(),
        }]
    }

    fn tree(files: &[(&str, &str)]) -> SourceTree {
        SourceTree::from_files(
            files.iter().map(|(p, c)| (*p, c.as_bytes())),
            Language::Rust,
        )
        .expect("tree")
    }

    fn key(
        language: Language,
        version: &str,
        options: &BuildOptions,
        source: &SourceTree,
    ) -> String {
        CacheKey::compute(language, &tool(version), options, source)
            .as_str()
            .to_owned()
    }

    #[test]
    fn equal_inputs_give_equal_keys_and_the_format_is_sha256() {
        let options = BuildOptions::default();
        let a = key(
            Language::Rust,
            "1.85",
            &options,
            &tree(&[("main.rs", "fn main(){}")]),
        );
        let b = key(
            Language::Rust,
            "1.85",
            &options,
            &tree(&[("main.rs", "fn main(){}")]),
        );
        assert_eq!(a, b);
        assert!(a.starts_with("sha256:"));
        assert_eq!(a.len(), "sha256:".len() + 64);
    }

    #[test]
    fn line_ending_differences_do_not_change_the_key() {
        let options = BuildOptions::default();
        let unix = key(
            Language::Rust,
            "1",
            &options,
            &tree(&[("main.rs", "a\nb\n")]),
        );
        let windows = key(
            Language::Rust,
            "1",
            &options,
            &tree(&[("main.rs", "a\r\nb\r\n")]),
        );
        assert_eq!(unix, windows);
    }

    #[test]
    fn every_input_changes_the_key() {
        let options = BuildOptions::default();
        let source = tree(&[("main.rs", "fn main(){}")]);
        let base = key(Language::Rust, "1.85", &options, &source);
        let variants = [
            key(Language::C, "1.85", &options, &source),
            key(Language::Rust, "1.86", &options, &source),
            key(
                Language::Rust,
                "1.85",
                &BuildOptions {
                    optimization: OptimizationLevel::Size,
                    ..BuildOptions::default()
                },
                &source,
            ),
            key(
                Language::Rust,
                "1.85",
                &BuildOptions {
                    aot: true,
                    ..BuildOptions::default()
                },
                &source,
            ),
            key(
                Language::Rust,
                "1.85",
                &BuildOptions {
                    allow_network: true,
                    ..BuildOptions::default()
                },
                &source,
            ),
            key(
                Language::Rust,
                "1.85",
                &BuildOptions {
                    module_kind: ModuleKind::Library,
                    ..BuildOptions::default()
                },
                &source,
            ),
            key(
                Language::Rust,
                "1.85",
                &options,
                &tree(&[("main.rs", "fn main(){ }")]),
            ),
            key(
                Language::Rust,
                "1.85",
                &options,
                &tree(&[("lib.rs", "fn main(){}")]),
            ),
            key(
                Language::Rust,
                "1.85",
                &options,
                &tree(&[("main.rs", "fn main(){}"), ("extra.rs", "")]),
            ),
        ];
        for (index, variant) in variants.iter().enumerate() {
            assert_ne!(&base, variant, "variant {index} collides with the base key");
        }
        let unique: std::collections::HashSet<_> = variants.iter().collect();
        assert_eq!(
            unique.len(),
            variants.len(),
            "variants collide with each other"
        );
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let options = BuildOptions::default();
        let split_one = key(Language::C, "1", &options, &tree(&[("ab", "c")]));
        let split_two = key(Language::C, "1", &options, &tree(&[("a", "bc")]));
        assert_ne!(split_one, split_two);
    }

    #[test]
    fn file_order_of_input_does_not_matter() {
        let options = BuildOptions::default();
        let one = key(
            Language::C,
            "1",
            &options,
            &tree(&[("a.c", "1"), ("b.c", "2")]),
        );
        let two = key(
            Language::C,
            "1",
            &options,
            &tree(&[("b.c", "2"), ("a.c", "1")]),
        );
        assert_eq!(one, two);
    }

    #[test]
    fn hex_is_the_file_name_part() {
        let k = CacheKey::compute(
            Language::Wat,
            &[],
            &BuildOptions::default(),
            &tree(&[("m.wat", "(module)")]),
        );
        assert_eq!(format!("sha256:{}", k.hex()), k.as_str());
        assert_eq!(k.to_string(), k.as_str());
    }
}
