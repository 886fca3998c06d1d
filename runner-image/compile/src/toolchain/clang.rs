//! C and C++ through clang with Debian's wasi-libc (and libc++ for C++). The target is spelled
//! `wasm32-wasi`: with `wasm32-wasip1` Debian's clang-19 looks for its builtins in the wrong
//! place and the link fails. C++ builds without exceptions (the wasm libc++ has none).

use std::path::Path;

use super::{Build, Built, IdentityMemo, ToolchainIdentity};
use crate::options::OptimizationLevel;
use crate::Result;

pub(super) fn identity(compiler: &Path, memo: &IdentityMemo) -> Result<ToolchainIdentity> {
    Ok(ToolchainIdentity {
        name: compiler
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "clang".into()),
        version: memo.version(compiler, &["--version"])?,
    })
}

pub(super) fn build(build: &Build<'_>, cpp: bool) -> Result<Built> {
    let (compiler, extensions): (&Path, &[&str]) = if cpp {
        (&build.toolchains.clangxx, &["cpp", "cc", "cxx", "c++"])
    } else {
        (&build.toolchains.clang, &["c"])
    };
    // Every top-level translation unit is compiled and linked together.
    let units = build.source.top_level_with_extension(extensions);
    if units.is_empty() {
        build.entry_file(extensions, &[])?;
    }
    let output = build.module_path();
    let mut command = build.command(compiler);
    command
        .arg("--target=wasm32-wasi")
        .arg(format!(
            "--sysroot={}",
            build.toolchains.wasi_sysroot.display()
        ))
        .arg(match build.options.optimization {
            OptimizationLevel::None => "-O0",
            OptimizationLevel::Speed => "-O2",
            OptimizationLevel::Size => "-Oz",
        })
        .args(["-fno-color-diagnostics", "-s"]);
    if cpp {
        command.arg("-fno-exceptions");
    }
    command.args(&units).arg("-o").arg(&output);
    let outcome = build.run(&mut command)?;
    build.expect_output(&output)?;
    Ok(Built {
        artifact: output,
        warnings: build.warnings(&outcome),
    })
}
