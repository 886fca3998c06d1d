//! Parsing of the human-friendly values the commands accept (durations, sizes, `K=V`) and the
//! closed sets of values (languages, optimisation levels), which clap checks and lists in
//! `--help`, so a wrong one is a usage error (exit 2).

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::builder::PossibleValue;
use clap::ValueEnum;
use wasmfn_api::{Language, Optimization};

/// A `--language` value: every [`Language`] by its manifest name, with the short forms
/// [`Language::parse`] accepts as hidden aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LanguageArg(pub(crate) Language);

const LANGUAGE_ARGS: [LanguageArg; Language::ALL.len()] = {
    let mut args = [LanguageArg(Language::Rust); Language::ALL.len()];
    let mut index = 0;
    while index < Language::ALL.len() {
        args[index] = LanguageArg(Language::ALL[index]);
        index += 1;
    }
    args
};

/// The short forms of a language name people type (each parses back with [`Language::parse`]).
fn language_aliases(language: Language) -> &'static [&'static str] {
    match language {
        Language::Rust => &["rs"],
        Language::Cpp => &["c++", "cxx"],
        Language::Go => &["golang"],
        Language::AssemblyScript => &["as"],
        Language::TypeScript => &["ts"],
        Language::Python => &["py"],
        Language::JavaScript => &["js"],
        Language::C | Language::Wat | Language::Wasm => &[],
    }
}

impl ValueEnum for LanguageArg {
    fn value_variants<'a>() -> &'a [Self] {
        &LANGUAGE_ARGS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.as_str()).aliases(language_aliases(self.0).iter().copied()))
    }
}

/// `--opt-level`: the API's [`Optimization`] names, plus the compiler-style `0`/`2`/`s`/`z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OptLevel {
    /// Optimise for speed (-O2, release).
    #[value(alias = "2", alias = "1", alias = "3", alias = "release")]
    Speed,
    /// Optimise for size (-Os/-Oz).
    #[value(alias = "s", alias = "z")]
    Size,
    /// No optimisation (fastest compile).
    #[value(alias = "0", alias = "debug")]
    None,
}

impl OptLevel {
    /// The API's value.
    pub(crate) fn optimization(self) -> Optimization {
        match self {
            OptLevel::Speed => Optimization::Speed,
            OptLevel::Size => Optimization::Size,
            OptLevel::None => Optimization::None,
        }
    }
}

/// The compiler's level for the API's value.
pub(crate) fn optimization_level(value: Optimization) -> wasmfn_compile::OptimizationLevel {
    match value {
        Optimization::Speed => wasmfn_compile::OptimizationLevel::Speed,
        Optimization::Size => wasmfn_compile::OptimizationLevel::Size,
        Optimization::None => wasmfn_compile::OptimizationLevel::None,
    }
}

/// `exec --language`: the script languages an interpreter module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScriptArg {
    /// Python 3.11 (CPython for WASI).
    #[value(alias = "py")]
    Python,
    /// JavaScript (QuickJS).
    #[value(alias = "js")]
    Javascript,
}

impl ScriptArg {
    /// The execution core's language.
    pub(crate) fn script_language(self) -> wasmfn_execution::interpreter::ScriptLanguage {
        match self {
            ScriptArg::Python => wasmfn_execution::interpreter::ScriptLanguage::Python,
            ScriptArg::Javascript => wasmfn_execution::interpreter::ScriptLanguage::JavaScript,
        }
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds (`1.5`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = split_unit(text);
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("invalid duration unit {other:?} in {text:?} (use ms, s, m or h)"),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        bail!("duration {text:?} must be positive");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a byte size: `128Mi`, `64M`, `1Gi`, `65536` (Kubernetes quantity suffixes).
pub(crate) fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let (number, unit) = split_unit(text);
    let value: u64 = number
        .parse()
        .with_context(|| format!("invalid size {text:?}"))?;
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => bail!("invalid size unit {other:?} in {text:?} (use Ki, Mi, Gi, K, M or G)"),
    };
    value
        .checked_mul(factor)
        .with_context(|| format!("size {text:?} is too large"))
}

fn split_unit(text: &str) -> (&str, &str) {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    (&text[..split], &text[split..])
}

/// Parses `KEY=VALUE`.
pub(crate) fn parse_env(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => bail!("environment entries are KEY=VALUE, got {text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_and_alias_is_a_value_and_parses_back_to_the_same_language() {
        for language in Language::ALL {
            let arg = LanguageArg::from_str(language.as_str(), false).expect("listed");
            assert_eq!(arg.0, language);
            for alias in language_aliases(language) {
                assert_eq!(Language::parse(alias), Some(language), "{alias}");
                assert_eq!(
                    LanguageArg::from_str(alias, false).expect("alias").0,
                    language
                );
            }
        }
        assert_eq!(LANGUAGE_ARGS.len(), Language::ALL.len());
        assert!(LanguageArg::from_str("cobol", false).is_err());
    }

    #[test]
    fn opt_levels_map_onto_the_api_and_the_compiler_alike() {
        for (text, level) in [
            ("0", wasmfn_compile::OptimizationLevel::None),
            ("speed", wasmfn_compile::OptimizationLevel::Speed),
            ("z", wasmfn_compile::OptimizationLevel::Size),
        ] {
            let arg = OptLevel::from_str(text, false).expect("a level");
            assert_eq!(optimization_level(arg.optimization()), level);
            assert_eq!(wasmfn_compile::OptimizationLevel::parse(text), Some(level));
        }
        // The operator passes the API's names.
        for value in [Optimization::Speed, Optimization::Size, Optimization::None] {
            assert_eq!(
                OptLevel::from_str(value.as_str(), false)
                    .expect("the API's name")
                    .optimization(),
                value
            );
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            parse_duration("500ms").expect("ms"),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("2").expect("bare"), Duration::from_secs(2));
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_size("128Mi").expect("Mi"), 128 << 20);
        assert_eq!(parse_size("1G").expect("G"), 1_000_000_000);
        assert!(parse_size("12X").is_err());
        assert_eq!(
            parse_env("A=b=c").expect("env"),
            ("A".to_owned(), "b=c".to_owned())
        );
    }
}
