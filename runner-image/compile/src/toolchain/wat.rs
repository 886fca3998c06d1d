//! WebAssembly text through wabt's `wat2wasm` (which validates the module too).

use super::{Build, Built, IdentityMemo, ToolchainIdentity, Toolchains};
use crate::Result;

pub(super) fn identity(toolchains: &Toolchains, memo: &IdentityMemo) -> Result<ToolchainIdentity> {
    Ok(ToolchainIdentity {
        name: "wat2wasm".into(),
        version: memo.version(&toolchains.wat2wasm, &["--version"])?,
    })
}

pub(super) fn build(build: &Build<'_>) -> Result<Built> {
    let entry = build.entry_file(&["wat", "wast"], &["main.wat", "module.wat"])?;
    let output = build.module_path();
    let mut command = build.command(&build.toolchains.wat2wasm);
    command.arg(&entry).arg("-o").arg(&output);
    let outcome = build.run(&mut command)?;
    build.expect_output(&output)?;
    Ok(Built {
        artifact: output,
        warnings: build.warnings(&outcome),
    })
}
