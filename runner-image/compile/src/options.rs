//! Build options (`WasmFunction.spec.build`): they change the artifact, so they are part of the
//! cache key.

use serde::{Deserialize, Serialize};

/// How hard the compiler optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationLevel {
    /// No optimisation (fastest compile).
    None,
    /// Optimise for speed (the default).
    #[default]
    Speed,
    /// Optimise for size.
    Size,
}

impl OptimizationLevel {
    /// Parses `0`/`none`, `2`/`speed`/`release`, `s`/`z`/`size`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "0" | "none" | "debug" => OptimizationLevel::None,
            "1" | "2" | "3" | "speed" | "release" => OptimizationLevel::Speed,
            "s" | "z" | "size" => OptimizationLevel::Size,
            _ => return None,
        })
    }

    /// The name used in cache keys and manifests.
    pub fn name(self) -> &'static str {
        match self {
            OptimizationLevel::None => "none",
            OptimizationLevel::Speed => "speed",
            OptimizationLevel::Size => "size",
        }
    }
}

/// Whether the module is a WASI command (`_start`) or a library exporting functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleKind {
    /// A WASI command: stdin/stdout/args/env, run through `_start`.
    #[default]
    Command,
    /// A library (reactor) module whose exported functions are called with numbers. Only
    /// AssemblyScript builds differently for it (no WASI shim, stub runtime); other languages
    /// decide by their source (e.g. a Rust `cdylib`).
    Library,
}

impl ModuleKind {
    /// The name used in cache keys and manifests.
    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Command => "command",
            ModuleKind::Library => "library",
        }
    }
}

/// Everything besides the source that decides what a compile produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildOptions {
    /// Optimisation level.
    pub optimization: OptimizationLevel,
    /// Also produce the WasmEdge AOT form (`module.wasm.aot.so`) for this machine.
    pub aot: bool,
    /// Let toolchains reach the network (e.g. Cargo or Go dependencies). Off by default.
    pub allow_network: bool,
    /// Command or library module.
    pub module_kind: ModuleKind,
}

impl BuildOptions {
    /// `(name, value)` pairs for the cache key, in a fixed order.
    pub fn key_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("optimization", self.optimization.name().to_owned()),
            ("aot", self.aot.to_string()),
            ("allowNetwork", self.allow_network.to_string()),
            ("moduleKind", self.module_kind.name().to_owned()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimization_levels_parse() {
        assert_eq!(OptimizationLevel::parse("0"), Some(OptimizationLevel::None));
        assert_eq!(
            OptimizationLevel::parse("3"),
            Some(OptimizationLevel::Speed)
        );
        assert_eq!(OptimizationLevel::parse("Z"), Some(OptimizationLevel::Size));
        assert_eq!(OptimizationLevel::parse("fast"), None);
    }

    #[test]
    fn key_fields_are_stable() {
        let fields = BuildOptions::default().key_fields();
        assert_eq!(
            fields,
            [
                ("optimization", "speed".to_owned()),
                ("aot", "false".to_owned()),
                ("allowNetwork", "false".to_owned()),
                ("moduleKind", "command".to_owned()),
            ]
        );
    }
}
