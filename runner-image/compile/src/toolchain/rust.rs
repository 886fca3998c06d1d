//! Rust: a single `.rs` file goes through `rustc`; a tree with a `Cargo.toml` through `cargo
//! build` (offline unless the network is allowed, so only path dependencies and none at all
//! work by default). Debian's rustc carries the wasm32-wasip1 standard library; its linker is
//! lld's `wasm-ld-19`.

use std::path::PathBuf;

use super::{Build, Built, IdentityMemo, ToolchainIdentity, Toolchains};
use crate::options::OptimizationLevel;
use crate::source::SourceTree;
use crate::{Error, Result};

const TARGET: &str = "wasm32-wasip1";

fn is_cargo_project(source: &SourceTree) -> bool {
    source.contains("Cargo.toml")
}

pub(super) fn identity(
    toolchains: &Toolchains,
    source: &SourceTree,
    memo: &IdentityMemo,
) -> Result<Vec<ToolchainIdentity>> {
    let mut tools = vec![ToolchainIdentity {
        name: "rustc".into(),
        version: memo.version(&toolchains.rustc, &["--version"])?,
    }];
    if is_cargo_project(source) {
        tools.push(ToolchainIdentity {
            name: "cargo".into(),
            version: memo.version(&toolchains.cargo, &["--version"])?,
        });
    }
    Ok(tools)
}

fn opt_level(level: OptimizationLevel) -> &'static str {
    match level {
        OptimizationLevel::None => "0",
        OptimizationLevel::Speed => "3",
        OptimizationLevel::Size => "s",
    }
}

pub(super) fn build(build: &Build<'_>) -> Result<Built> {
    if is_cargo_project(build.source) {
        return build_cargo_project(build);
    }
    let entry = build.entry_file(&["rs"], &["main.rs", "lib.rs"])?;
    let output = build.module_path();
    let mut command = build.command(&build.toolchains.rustc);
    command
        .args(["--target", TARGET, "--edition", "2021", "--color", "never"])
        .arg("-C")
        .arg(format!(
            "opt-level={}",
            opt_level(build.options.optimization)
        ))
        .args(["-C", "strip=symbols", "-C"])
        .arg(format!("linker={}", build.toolchains.wasm_linker.display()))
        .args(["--crate-name", "function"])
        .arg(&entry)
        .arg("-o")
        .arg(&output);
    let outcome = build.run(&mut command)?;
    build.expect_output(&output)?;
    Ok(Built {
        artifact: output,
        warnings: build.warnings(&outcome),
    })
}

fn build_cargo_project(build: &Build<'_>) -> Result<Built> {
    let target_dir = build.scratch_dir.join("cargo-target");
    let mut command = build.command(&build.toolchains.cargo);
    command
        .args(["build", "--release", "--target", TARGET, "--color", "never"])
        .env("RUSTC", &build.toolchains.rustc)
        .env("CARGO_HOME", build.scratch_dir.join("cargo-home"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "CARGO_TARGET_WASM32_WASIP1_LINKER",
            &build.toolchains.wasm_linker,
        )
        .env(
            "CARGO_PROFILE_RELEASE_OPT_LEVEL",
            opt_level(build.options.optimization),
        )
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env("CARGO_TERM_COLOR", "never");
    if !build.options.allow_network {
        command.arg("--offline").env("CARGO_NET_OFFLINE", "true");
    }
    let outcome = build.run(&mut command)?;
    let release = target_dir.join(TARGET).join("release");
    let modules: Vec<PathBuf> = std::fs::read_dir(&release)
        .map_err(|e| Error::io(&release, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "wasm"))
        .collect();
    let module =
        match modules.as_slice() {
            [single] => single.clone(),
            [] => return Err(Error::InvalidSource(
                "the Cargo project built no .wasm (it needs a binary target, or a cdylib library)"
                    .into(),
            )),
            several => {
                return Err(Error::InvalidSource(format!(
                    "the Cargo project builds {} modules; keep one binary or cdylib target",
                    several.len()
                )))
            }
        };
    let output = build.module_path();
    std::fs::copy(&module, &output).map_err(|e| Error::io(&module, e))?;
    Ok(Built {
        artifact: output,
        warnings: build.warnings(&outcome),
    })
}
