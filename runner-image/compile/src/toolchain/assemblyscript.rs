//! AssemblyScript (`typescript`) through `asc` on node. Command modules use
//! `@assemblyscript/wasi-shim` (stdin through `process.stdin`, `console.log`, exit codes);
//! library modules export functions and import nothing (stub runtime, no `env.abort`).

use std::path::{Path, PathBuf};

use super::{Build, Built, IdentityMemo, ToolchainIdentity, Toolchains};
use crate::options::{ModuleKind, OptimizationLevel};
use crate::{Error, Result};

fn package_dir(toolchains: &Toolchains, package: &str) -> PathBuf {
    toolchains.assemblyscript.join("node_modules").join(package)
}

/// `"version"` of an installed npm package (a file read, no process).
fn package_version(dir: &Path) -> Result<String> {
    let manifest = dir.join("package.json");
    let text = std::fs::read_to_string(&manifest).map_err(|source| Error::ToolchainMissing {
        program: manifest.display().to_string(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Internal(format!("{}: {e}", manifest.display())))?;
    value["version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Internal(format!("{} has no version", manifest.display())))
}

pub(super) fn identity(
    toolchains: &Toolchains,
    memo: &IdentityMemo,
) -> Result<Vec<ToolchainIdentity>> {
    Ok(vec![
        ToolchainIdentity {
            name: "assemblyscript".into(),
            version: package_version(&package_dir(toolchains, "assemblyscript"))?,
        },
        ToolchainIdentity {
            name: "@assemblyscript/wasi-shim".into(),
            version: package_version(&package_dir(toolchains, "@assemblyscript/wasi-shim"))?,
        },
        ToolchainIdentity {
            name: "node".into(),
            version: memo.version(&toolchains.node, &["--version"])?,
        },
    ])
}

pub(super) fn build(build: &Build<'_>) -> Result<Built> {
    let entry = build.entry_file(&["ts"], &["main.ts", "index.ts"])?;
    let toolchains = build.toolchains;
    let asc = package_dir(toolchains, "assemblyscript").join("bin/asc.js");
    let output = build.module_path();
    let mut command = build.command(&toolchains.node);
    command
        .arg(&asc)
        .arg(&entry)
        .arg("-o")
        .arg(&output)
        .arg("--noColors");
    match build.options.optimization {
        OptimizationLevel::None => {}
        OptimizationLevel::Speed => {
            command.arg("-O3");
        }
        OptimizationLevel::Size => {
            command.arg("-Oz");
        }
    }
    match build.options.module_kind {
        ModuleKind::Command => {
            // asc resolves the shim's `lib` directory correctly only when its config is named
            // by a path relative to the working directory, so the source directory gets a
            // `node_modules` link to the toolchain's.
            let link = build.source_dir.join("node_modules");
            if !link.exists() {
                std::os::unix::fs::symlink(toolchains.assemblyscript.join("node_modules"), &link)
                    .map_err(|e| Error::io(&link, e))?;
            }
            command
                .arg("--config")
                .arg("./node_modules/@assemblyscript/wasi-shim/asconfig.json");
        }
        ModuleKind::Library => {
            command.args(["--runtime", "stub", "--use", "abort="]);
        }
    }
    let outcome = build.run(&mut command)?;
    build.expect_output(&output)?;
    Ok(Built {
        artifact: output,
        warnings: build.warnings(&outcome),
    })
}
