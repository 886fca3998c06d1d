//! `make bench-compile`: what compiling costs.
//!
//! - cold compile per language (no artifact cache; Go with its build cache warm, as in the
//!   builder image whose seed holds the standard library, and once with it empty);
//! - a cache hit, in-process and as a whole `wasmfn compile` process, against a Rust miss
//!   (goal: a hit ≤ 50 ms and ≥ 100× faster than the Rust miss);
//! - the builder image's size (`buildah images`).
//!
//! Prints median and p99 of each series and the ratios.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmfn_compile::{
    BuildOptions, Cache, CacheConfig, CacheOutcome, CompileLimits, CompileRequest, Compiler,
    IdentityMemo, Language, ModuleKind, SourceInput, Toolchains,
};

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sources")
}

fn compiler(cache_dir: &Path, go_cache: &Path, enabled: bool) -> Compiler {
    let mut toolchains = Toolchains::from_env();
    toolchains.go_cache = Some(go_cache.to_path_buf());
    let cache = Cache::new(CacheConfig {
        enabled,
        dir: cache_dir.to_path_buf(),
        ttl: Duration::from_secs(3600),
        max_bytes: 1 << 30,
    });
    Compiler {
        toolchains,
        identities: IdentityMemo::persistent(cache.identity_dir()),
        cache,
        work_root: std::env::temp_dir(),
    }
}

fn request(
    language: Language,
    source: SourceInput,
    out: &Path,
    kind: ModuleKind,
) -> CompileRequest {
    CompileRequest {
        language,
        source,
        options: BuildOptions {
            module_kind: kind,
            ..BuildOptions::default()
        },
        limits: CompileLimits::default(),
        output_dir: out.to_path_buf(),
    }
}

/// (median, p99) in milliseconds.
fn stats(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut wasmfn = None;
    while let Some(arg) = args.next() {
        if arg == "--wasmfn" {
            wasmfn = args.next().map(PathBuf::from);
        }
    }
    let scratch = tempfile::tempdir().unwrap();
    let go_cache = scratch.path().join("go-build");
    let languages: Vec<(&str, Language, SourceInput, ModuleKind, usize)> = vec![
        (
            "rust (file)",
            Language::Rust,
            SourceInput::File(sources().join("rust/echo.rs")),
            ModuleKind::Command,
            5,
        ),
        (
            "rust (cargo)",
            Language::Rust,
            SourceInput::Directory(sources().join("cargo-hello")),
            ModuleKind::Command,
            3,
        ),
        (
            "c",
            Language::C,
            SourceInput::File(sources().join("c/echo.c")),
            ModuleKind::Command,
            5,
        ),
        (
            "cpp",
            Language::Cpp,
            SourceInput::File(sources().join("cpp/echo.cpp")),
            ModuleKind::Command,
            3,
        ),
        (
            "go",
            Language::Go,
            SourceInput::File(sources().join("go/echo.go")),
            ModuleKind::Command,
            5,
        ),
        (
            "assemblyscript",
            Language::AssemblyScript,
            SourceInput::File(sources().join("assemblyscript/echo.ts")),
            ModuleKind::Command,
            3,
        ),
        (
            "assemblyscript (library)",
            Language::AssemblyScript,
            SourceInput::File(sources().join("assemblyscript/library.ts")),
            ModuleKind::Library,
            3,
        ),
        (
            "wat",
            Language::Wat,
            SourceInput::File(sources().join("wat/echo.wat")),
            ModuleKind::Command,
            10,
        ),
        (
            "python",
            Language::Python,
            SourceInput::File(sources().join("python/echo.py")),
            ModuleKind::Command,
            3,
        ),
        (
            "javascript",
            Language::JavaScript,
            SourceInput::File(sources().join("javascript/echo.js")),
            ModuleKind::Command,
            5,
        ),
    ];

    // Go once with an empty build cache: what a compile Job pays without the image's seed.
    {
        let empty_go_cache = scratch.path().join("go-build-empty");
        let compiler = compiler(&scratch.path().join("unused"), &empty_go_cache, false);
        let started = Instant::now();
        compiler
            .compile(&request(
                Language::Go,
                SourceInput::File(sources().join("go/echo.go")),
                &scratch.path().join("go-cold"),
                ModuleKind::Command,
            ))
            .unwrap();
        println!(
            "go with an empty Go build cache: {:.0} ms (one run)",
            ms(started.elapsed())
        );
    }

    println!("\ncold compile (no artifact cache), per language:");
    println!(
        "  {:<26} {:>5} {:>10} {:>10} {:>10}",
        "language", "runs", "median ms", "p99 ms", "size"
    );
    let mut rust_miss_median = 0.0;
    for (name, language, source, kind, runs) in &languages {
        let compiler = compiler(&scratch.path().join("unused"), &go_cache, false);
        // One warm-up: fills the Go build cache and the version memo, pages the toolchain in.
        let warm = compiler
            .compile(&request(
                *language,
                source.clone(),
                &scratch.path().join("warm"),
                *kind,
            ))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut samples = Vec::new();
        for run in 0..*runs {
            let out = scratch.path().join(format!("cold-{run}"));
            let started = Instant::now();
            let outcome = compiler
                .compile(&request(*language, source.clone(), &out, *kind))
                .unwrap();
            samples.push(ms(started.elapsed()));
            assert_eq!(outcome.manifest.cache, CacheOutcome::Disabled);
        }
        let (median, p99) = stats(&mut samples);
        if *name == "rust (file)" {
            rust_miss_median = median;
        }
        println!(
            "  {:<26} {:>5} {:>10.1} {:>10.1} {:>10}",
            name, runs, median, p99, warm.manifest.artifact.size
        );
    }

    // Cache hits: the same Rust source, cache enabled.
    let cache_dir = scratch.path().join("cache");
    let compiler = compiler(&cache_dir, &go_cache, true);
    let rust = SourceInput::File(sources().join("rust/echo.rs"));
    let first = compiler
        .compile(&request(
            Language::Rust,
            rust.clone(),
            &scratch.path().join("fill"),
            ModuleKind::Command,
        ))
        .unwrap();
    assert_eq!(first.manifest.cache, CacheOutcome::Miss);
    let mut hits = Vec::new();
    for run in 0..100 {
        let out = scratch.path().join(format!("hit-{run}"));
        let started = Instant::now();
        let outcome = compiler
            .compile(&request(
                Language::Rust,
                rust.clone(),
                &out,
                ModuleKind::Command,
            ))
            .unwrap();
        hits.push(ms(started.elapsed()));
        assert_eq!(outcome.manifest.cache, CacheOutcome::Hit);
    }
    let (hit_median, hit_p99) = stats(&mut hits);
    println!(
        "\ncache hit (rust, in-process, 100 runs): median {hit_median:.2} ms, p99 {hit_p99:.2} ms"
    );
    println!(
        "  rust miss / hit: {:.0}x (goal >= 100x); hit <= 50 ms: {}",
        rust_miss_median / hit_median,
        if hit_p99 <= 50.0 { "yes" } else { "NO" }
    );

    if let Some(wasmfn) = wasmfn {
        let mut process_hits = Vec::new();
        for run in 0..30 {
            let out = scratch.path().join(format!("cli-hit-{run}"));
            let started = Instant::now();
            let status = Command::new(&wasmfn)
                .args(["compile", "--language", "rust", "--termination-log", "-"])
                .arg(sources().join("rust/echo.rs"))
                .arg("--out")
                .arg(&out)
                .arg("--cache-dir")
                .arg(&cache_dir)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            process_hits.push(ms(started.elapsed()));
            assert!(status.success());
        }
        let (median, p99) = stats(&mut process_hits);
        println!(
            "cache hit (`wasmfn compile` process, 30 runs): median {median:.1} ms, p99 {p99:.1} ms; rust miss / hit: {:.0}x",
            rust_miss_median / median
        );
    }

    match Command::new("buildah")
        .args([
            "images",
            "--format",
            "{{.Size}}",
            "wasmfn.local/builder:dev",
        ])
        .output()
    {
        Ok(output) if output.status.success() && !output.stdout.is_empty() => println!(
            "\nbuilder image wasmfn.local/builder:dev: {}",
            String::from_utf8_lossy(&output.stdout).trim()
        ),
        _ => println!("\nbuilder image wasmfn.local/builder:dev: not built (run `make images`)"),
    }
}
