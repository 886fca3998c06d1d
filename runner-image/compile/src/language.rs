//! The languages a function can be written in, and what kind of artifact each produces.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A `WasmFunction.spec.language` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Rust: one `.rs` file (rustc) or a Cargo project (cargo).
    Rust,
    /// C (clang with wasi-libc).
    C,
    /// C++ (clang++ with wasi-libc and libc++, no exceptions).
    Cpp,
    /// Go through Go's own `wasip1` port (TinyGo is in no registry we can reach).
    Go,
    /// AssemblyScript (`typescript` is accepted as a synonym).
    AssemblyScript,
    /// WebAssembly text.
    Wat,
    /// A prebuilt module: validated only.
    Wasm,
    /// Python 3.11: syntax-checked, run by the CPython-WASI interpreter module.
    Python,
    /// JavaScript (ES2020 module): syntax-checked, run by the QuickJS interpreter module.
    JavaScript,
}

/// What the pipeline hands back for a language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A `.wasm` module produced by a compiler.
    CompiledModule,
    /// A `.wasm` module the user supplied.
    PrebuiltModule,
    /// A checked script run by an interpreter module.
    Script,
}

impl Language {
    /// Every language, in documentation order.
    pub const ALL: [Language; 9] = [
        Language::Rust,
        Language::C,
        Language::Cpp,
        Language::Go,
        Language::AssemblyScript,
        Language::Wat,
        Language::Wasm,
        Language::Python,
        Language::JavaScript,
    ];

    /// Parses a language name (case-insensitive; common synonyms accepted).
    pub fn parse(name: &str) -> Option<Language> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "rust" | "rs" => Language::Rust,
            "c" => Language::C,
            "cpp" | "c++" | "cxx" => Language::Cpp,
            "go" | "golang" => Language::Go,
            "assemblyscript" | "typescript" | "ts" | "as" => Language::AssemblyScript,
            "wat" => Language::Wat,
            "wasm" => Language::Wasm,
            "python" | "py" => Language::Python,
            "javascript" | "js" => Language::JavaScript,
            _ => return None,
        })
    }

    /// The canonical name (as in the CRD and in cache keys).
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::Go => "go",
            Language::AssemblyScript => "assemblyscript",
            Language::Wat => "wat",
            Language::Wasm => "wasm",
            Language::Python => "python",
            Language::JavaScript => "javascript",
        }
    }

    /// The file name an inline source gets.
    pub fn default_file_name(self) -> &'static str {
        match self {
            Language::Rust => "main.rs",
            Language::C => "main.c",
            Language::Cpp => "main.cpp",
            Language::Go => "main.go",
            Language::AssemblyScript => "main.ts",
            Language::Wat => "main.wat",
            Language::Wasm => "module.wasm",
            Language::Python => "main.py",
            Language::JavaScript => "main.js",
        }
    }

    /// File extensions that hold this language's sources (the first is the preferred one).
    pub fn source_extensions(self) -> &'static [&'static str] {
        match self {
            Language::Rust => &["rs"],
            Language::C => &["c"],
            Language::Cpp => &["cpp", "cc", "cxx", "c++"],
            Language::Go => &["go"],
            Language::AssemblyScript => &["ts"],
            Language::Wat => &["wat", "wast"],
            Language::Wasm => &["wasm"],
            Language::Python => &["py"],
            Language::JavaScript => &["js", "mjs"],
        }
    }

    /// What kind of artifact the language produces.
    pub fn artifact_kind(self) -> ArtifactKind {
        match self {
            Language::Wasm => ArtifactKind::PrebuiltModule,
            Language::Python | Language::JavaScript => ArtifactKind::Script,
            _ => ArtifactKind::CompiledModule,
        }
    }

    /// Whether sources are text (line endings are normalised) rather than binary.
    pub fn is_text(self) -> bool {
        self != Language::Wasm
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_canonical_name_parses_back() {
        for language in Language::ALL {
            assert_eq!(Language::parse(language.name()), Some(language));
            assert_eq!(
                Language::parse(&language.name().to_uppercase()),
                Some(language)
            );
        }
    }

    #[test]
    fn synonyms_and_unknown_names() {
        assert_eq!(
            Language::parse("typescript"),
            Some(Language::AssemblyScript)
        );
        assert_eq!(Language::parse(" c++ "), Some(Language::Cpp));
        assert_eq!(Language::parse("js"), Some(Language::JavaScript));
        assert_eq!(Language::parse("cobol"), None);
        assert_eq!(Language::parse(""), None);
    }

    #[test]
    fn artifact_kinds() {
        assert_eq!(Language::Wasm.artifact_kind(), ArtifactKind::PrebuiltModule);
        assert_eq!(Language::Python.artifact_kind(), ArtifactKind::Script);
        assert_eq!(Language::Go.artifact_kind(), ArtifactKind::CompiledModule);
        assert!(!Language::Wasm.is_text());
        assert!(Language::Wat.is_text());
    }
}
