//! The cache key: a content address over everything that decides a compile's output.
//!
//! The builder image stands for the toolchain versions (one image, one set of toolchains). It
//! enters the key by digest, never by tag ([`crate::builder_pin`]): a builder rebuilt under the
//! same tag is another image and recompiles. A prebuilt module has no builder. The compile
//! deadline is not part of the key: it changes whether a compile finishes, not what it produces.

use sha2::{Digest, Sha256};
use wasmfn_api::{BuildOptions, Language};

use super::source::SourceFiles;

/// Version of the key's framing; bump it when the inputs change meaning.
const FRAMING: &[u8] = b"wasmfn-cache-key/v2";

/// What goes into a key.
#[derive(Debug, Clone, Copy)]
pub struct KeyInputs<'a> {
    /// The language.
    pub language: Language,
    /// The builder image by digest (the toolchains); none for a prebuilt module.
    pub builder: Option<&'a str>,
    /// Build options.
    pub build: &'a BuildOptions,
}

/// `sha256:<hex>` over the inputs and every file (path and bytes, length-prefixed so no two
/// trees frame alike).
pub fn cache_key(inputs: KeyInputs<'_>, files: &SourceFiles) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(FRAMING);
    field(inputs.language.as_str().as_bytes());
    match inputs.builder {
        Some(builder) => {
            field(b"builder");
            field(builder.as_bytes());
        }
        None => field(b"prebuilt"),
    }
    field(inputs.build.optimization.as_str().as_bytes());
    field(if inputs.build.library {
        b"library"
    } else {
        b"command"
    });
    field(&(files.len() as u64).to_le_bytes());
    for (path, bytes) in files {
        field(path.as_bytes());
        field(bytes);
    }
    format!("sha256:{}", hex::encode(hash.finalize()))
}

/// The key of a function that must not share artifacts (the cache is off): the content key
/// salted with the function's UID, so it still finds its own artifact but no one else's.
pub fn private_key(key: &str, uid: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(key.as_bytes());
    hash.update(b"\0uid\0");
    hash.update(uid.as_bytes());
    format!("sha256:{}", hex::encode(hash.finalize()))
}

pub use crate::naming::{digest_hex as key_hex, label_form as key_label};

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfn_api::Optimization;

    fn files(entries: &[(&str, &str)]) -> SourceFiles {
        entries
            .iter()
            .map(|(p, b)| ((*p).to_owned(), b.as_bytes().to_vec()))
            .collect()
    }

    fn key(language: Language, image: &str, build: &BuildOptions, tree: &SourceFiles) -> String {
        cache_key(
            KeyInputs {
                language,
                builder: Some(image),
                build,
            },
            tree,
        )
    }

    #[test]
    fn the_same_inputs_give_the_same_key() {
        let build = BuildOptions::default();
        let tree = files(&[("main.rs", "fn main() {}")]);
        let a = key(Language::Rust, "b:1", &build, &tree);
        assert_eq!(a, key(Language::Rust, "b:1", &build, &tree.clone()));
        assert!(a.starts_with("sha256:") && a.len() == 71, "{a}");
        assert_eq!(key_label(&a).len(), 63);
        assert_eq!(key_hex(&a).len(), 64);
    }

    #[test]
    fn every_input_changes_the_key() {
        let build = BuildOptions::default();
        let tree = files(&[("main.rs", "fn main() {}")]);
        let base = key(Language::Rust, "b:1", &build, &tree);
        let size = BuildOptions {
            optimization: Optimization::Size,
            ..Default::default()
        };
        let library = BuildOptions {
            library: true,
            ..Default::default()
        };
        let variants = [
            key(Language::C, "b:1", &build, &tree),
            key(Language::Rust, "b:2", &build, &tree),
            key(Language::Rust, "b:1", &size, &tree),
            key(Language::Rust, "b:1", &library, &tree),
            key(
                Language::Rust,
                "b:1",
                &build,
                &files(&[("main.rs", "fn main() { }")]),
            ),
            key(
                Language::Rust,
                "b:1",
                &build,
                &files(&[("lib.rs", "fn main() {}")]),
            ),
            key(
                Language::Rust,
                "b:1",
                &build,
                &files(&[("main.rs", "fn main() {}"), ("x", "")]),
            ),
        ];
        for (index, variant) in variants.iter().enumerate() {
            assert_ne!(&base, variant, "variant {index}");
        }
    }

    #[test]
    fn a_module_without_a_builder_never_shares_a_key_with_a_built_one() {
        let build = BuildOptions::default();
        let tree = files(&[("module.wasm", "\0asm")]);
        let inputs = |builder| KeyInputs {
            language: Language::Wasm,
            builder,
            build: &build,
        };
        let prebuilt = cache_key(inputs(None), &tree);
        assert_ne!(prebuilt, cache_key(inputs(Some("prebuilt")), &tree));
        assert_ne!(prebuilt, cache_key(inputs(Some("")), &tree));
    }

    #[test]
    fn the_compile_deadline_is_not_part_of_the_key() {
        let tree = files(&[("main.c", "int main(){}")]);
        let slow = BuildOptions {
            timeout_seconds: Some(900),
            ..Default::default()
        };
        assert_eq!(
            key(Language::C, "b", &BuildOptions::default(), &tree),
            key(Language::C, "b", &slow, &tree)
        );
    }

    #[test]
    fn private_keys_differ_per_function_and_from_the_shared_key() {
        let shared = key(
            Language::C,
            "b",
            &BuildOptions::default(),
            &files(&[("a", "b")]),
        );
        let one = private_key(&shared, "uid-1");
        assert_ne!(one, shared);
        assert_ne!(one, private_key(&shared, "uid-2"));
        assert_eq!(one, private_key(&shared, "uid-1"));
    }

    #[test]
    fn file_boundaries_are_framed() {
        let build = BuildOptions::default();
        assert_ne!(
            key(Language::C, "b", &build, &files(&[("a", "bc")])),
            key(Language::C, "b", &build, &files(&[("ab", "c")]))
        );
    }
}
