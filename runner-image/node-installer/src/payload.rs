//! The payload: the shim binary and the shared libraries it needs at run time, laid out as
//! `bin/containerd-shim-wasmfn-v1` and `lib/*.so*`. The shim is linked with
//! `RPATH=$ORIGIN/../lib` (see `runner-image/shim/build.rs`), so wherever the payload is copied
//! the shim loads libwasmedge and its dependencies (LLVM, libstdc++ …) from the `lib/` beside it,
//! never from the host's library path — a node without WasmEdge, or with another WasmEdge
//! version, runs it the same.
//!
//! The C library itself (glibc and its loader) is *not* bundled: it must match the host's
//! dynamic loader. The host needs a glibc at least as new as the one the shim was built against
//! (Debian trixie's, 2.41); the installer checks by starting the installed shim before it
//! registers it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shim binary's name (containerd derives it from runtime type `io.containerd.wasmfn.v1`).
pub const SHIM_BINARY: &str = "containerd-shim-wasmfn-v1";

/// Libraries of the C runtime, which must come from the host's glibc (they go with its loader).
const HOST_LIBRARIES: &[&str] = &[
    "linux-vdso.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "libanl.so.1",
];

/// One line of `ldd` output that names a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The name the loader looks for (the library's soname, as the binary's NEEDED entries say).
    pub name: String,
    /// Where `ldd` found it; `None` for "not found".
    pub path: Option<PathBuf>,
}

/// Parses `ldd` output (`name => /path (0x…)`, `name => not found`, `/lib64/ld-linux… (0x…)`,
/// `linux-vdso.so.1 (0x…)`).
pub fn parse_ldd(output: &str) -> Vec<Dependency> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (name, rest) = match line.split_once(" => ") {
                Some((name, rest)) => (name.trim(), rest.trim()),
                None => {
                    let name = line.split_whitespace().next()?;
                    let name = Path::new(name).file_name()?.to_str()?;
                    return Some(Dependency {
                        name: name.to_string(),
                        path: None,
                    })
                    .filter(|_| is_host_library(name));
                }
            };
            let path = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
                .map(PathBuf::from);
            Some(Dependency {
                name: name.to_string(),
                path,
            })
        })
        .collect()
}

pub fn is_host_library(name: &str) -> bool {
    HOST_LIBRARIES.contains(&name)
}

/// Stages a payload at `out` from the `shim` binary: the shim in `bin/`, and every library `ldd`
/// resolves for it except glibc's in `lib/` (symlinks followed, named by soname).
pub fn stage(shim: &Path, out: &Path) -> Result<Vec<String>> {
    let output = Command::new("ldd")
        .arg(shim)
        .output()
        .with_context(|| format!("run ldd {}", shim.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "ldd {} failed: {}{}",
            shim.display(),
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dependencies = parse_ldd(&text);
    let missing: Vec<&str> = dependencies
        .iter()
        .filter(|d| d.path.is_none() && !is_host_library(&d.name))
        .map(|d| d.name.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} needs libraries this machine lacks: {}",
            shim.display(),
            missing.join(", ")
        );
    }
    let bin = out.join("bin");
    let lib = out.join("lib");
    for dir in [&bin, &lib] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    copy(shim, &bin.join(SHIM_BINARY))?;
    let mut staged = Vec::new();
    for dependency in dependencies {
        if is_host_library(&dependency.name) {
            continue;
        }
        if let Some(path) = dependency.path {
            copy(&path, &lib.join(&dependency.name))?;
            staged.push(dependency.name);
        }
    }
    staged.sort();
    Ok(staged)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))
}

/// What installing a payload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Installed {
    pub written: Vec<PathBuf>,
    pub unchanged: usize,
    pub removed: Vec<PathBuf>,
}

/// Copies the payload tree `from` into `to` (created if needed): files whose content differs are
/// replaced by rename, so a shim binary that running pods execute is never overwritten in place;
/// files in `to/bin` and `to/lib` that the payload no longer has are removed.
pub fn install(from: &Path, to: &Path) -> Result<Installed> {
    let mut result = Installed::default();
    for dir in ["bin", "lib"] {
        let source = from.join(dir);
        let target = to.join(dir);
        std::fs::create_dir_all(&target).with_context(|| format!("create {}", target.display()))?;
        let mut wanted = Vec::new();
        for entry in read_dir(&source)? {
            let name = entry.file_name();
            let source_file = source.join(&name);
            let target_file = target.join(&name);
            wanted.push(name.clone());
            let new = std::fs::read(&source_file)
                .with_context(|| format!("read {}", source_file.display()))?;
            if std::fs::read(&target_file).ok().as_deref() == Some(new.as_slice()) {
                result.unchanged += 1;
                continue;
            }
            let temporary = target.join(format!(".{}.wasmfn-new", name.to_string_lossy()));
            std::fs::write(&temporary, &new)
                .with_context(|| format!("write {}", temporary.display()))?;
            let mode = std::fs::metadata(&source_file)
                .with_context(|| format!("stat {}", source_file.display()))?
                .permissions();
            std::fs::set_permissions(&temporary, mode)
                .with_context(|| format!("chmod {}", temporary.display()))?;
            std::fs::rename(&temporary, &target_file)
                .with_context(|| format!("rename to {}", target_file.display()))?;
            result.written.push(target_file);
        }
        for entry in read_dir(&target)? {
            if !wanted.contains(&entry.file_name()) {
                let stale = entry.path();
                std::fs::remove_file(&stale)
                    .with_context(|| format!("remove {}", stale.display()))?;
                result.removed.push(stale);
            }
        }
    }
    Ok(result)
}

/// Removes an installed payload: `to/bin`, `to/lib` and `to` itself when nothing else is left in
/// it. Returns the files removed.
pub fn uninstall(to: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for dir in ["bin", "lib"] {
        let target = to.join(dir);
        if !target.exists() {
            continue;
        }
        for entry in read_dir(&target)? {
            let path = entry.path();
            std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
            removed.push(path);
        }
        std::fs::remove_dir(&target).with_context(|| format!("remove {}", target.display()))?;
    }
    // Only an empty directory: whatever else someone keeps there stays.
    let _ = std::fs::remove_dir(to);
    Ok(removed)
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("read {}", dir.display()))?;
    entries.retain(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false));
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd5a9f3000)
\tlibwasmedge.so.0 => /usr/lib/x86_64-linux-gnu/libwasmedge.so.0 (0x00007f2c1a000000)
\tlibgcc_s.so.1 => /usr/lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f2c19fd0000)
\tlibc.so.6 => /usr/lib/x86_64-linux-gnu/libc.so.6 (0x00007f2c19c00000)
\tlibLLVM.so.19.1 => not found
\t/lib64/ld-linux-x86-64.so.2 (0x00007f2c1c1e0000)
";

    #[test]
    fn ldd_output_names_each_library_and_where_it_was_found() {
        let deps = parse_ldd(LDD);
        let names: Vec<&str> = deps.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "linux-vdso.so.1",
                "libwasmedge.so.0",
                "libgcc_s.so.1",
                "libc.so.6",
                "libLLVM.so.19.1",
                "ld-linux-x86-64.so.2"
            ]
        );
        assert_eq!(
            deps[1].path.as_deref(),
            Some(Path::new("/usr/lib/x86_64-linux-gnu/libwasmedge.so.0"))
        );
        assert_eq!(deps[4].path, None, "not found");
    }

    #[test]
    fn glibc_stays_with_the_host_and_everything_else_is_bundled() {
        for name in [
            "libc.so.6",
            "libm.so.6",
            "ld-linux-x86-64.so.2",
            "linux-vdso.so.1",
        ] {
            assert!(is_host_library(name), "{name}");
        }
        for name in [
            "libwasmedge.so.0",
            "libstdc++.so.6",
            "libgcc_s.so.1",
            "libLLVM.so.19.1",
        ] {
            assert!(!is_host_library(name), "{name}");
        }
    }

    #[test]
    fn installing_replaces_changed_files_keeps_equal_ones_and_drops_stale_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let payload = dir.path().join("payload");
        let target = dir.path().join("opt/wasmfn");
        for (path, content) in [
            ("bin/shim", "v1"),
            ("lib/liba.so", "a"),
            ("lib/libb.so", "b"),
        ] {
            let path = payload.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, content).expect("write");
        }
        let first = install(&payload, &target).expect("install");
        assert_eq!(first.written.len(), 3);
        let second = install(&payload, &target).expect("again");
        assert_eq!((second.written.len(), second.unchanged), (0, 3));

        std::fs::write(payload.join("bin/shim"), "v2").expect("write");
        std::fs::remove_file(payload.join("lib/libb.so")).expect("rm");
        let update = install(&payload, &target).expect("update");
        assert_eq!(update.written, [target.join("bin/shim")]);
        assert_eq!(update.removed, [target.join("lib/libb.so")]);
        assert_eq!(
            std::fs::read_to_string(target.join("bin/shim")).expect("read"),
            "v2"
        );

        std::fs::write(target.join("keep-me"), "someone else's").expect("write");
        let removed = uninstall(&target).expect("uninstall");
        assert_eq!(removed.len(), 2);
        assert!(!target.join("bin").exists() && !target.join("lib").exists());
        assert!(target.join("keep-me").exists(), "foreign files stay");
    }
}
