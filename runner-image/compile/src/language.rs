//! The languages a function can be written in (one definition, `wasmfn_api::Language`, shared
//! with the operator and the CLI), and what kind of artifact each produces.

pub use wasmfn_api::Language;

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

/// What kind of artifact `language` produces.
pub fn artifact_kind(language: Language) -> ArtifactKind {
    match language {
        Language::Wasm => ArtifactKind::PrebuiltModule,
        Language::Python | Language::JavaScript => ArtifactKind::Script,
        _ => ArtifactKind::CompiledModule,
    }
}

/// Whether `language`'s sources are text (line endings are normalised) rather than binary.
pub fn is_text(language: Language) -> bool {
    language != Language::Wasm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_kinds() {
        assert_eq!(artifact_kind(Language::Wasm), ArtifactKind::PrebuiltModule);
        assert_eq!(artifact_kind(Language::Python), ArtifactKind::Script);
        assert_eq!(artifact_kind(Language::Go), ArtifactKind::CompiledModule);
        assert_eq!(
            artifact_kind(Language::TypeScript),
            ArtifactKind::CompiledModule
        );
        assert!(!is_text(Language::Wasm));
        assert!(is_text(Language::Wat));
    }
}
