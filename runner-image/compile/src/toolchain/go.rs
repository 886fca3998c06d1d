//! Go through Go's own `wasip1` port (`GOOS=wasip1 GOARCH=wasm`, Go 1.21+). TinyGo would give
//! much smaller modules but is in no package registry we can reach. A source without `go.mod`
//! gets a minimal one. Modules are resolved offline (`GOPROXY=off`) unless the network is
//! allowed; the build cache is kept between compiles (see [`super::Toolchains::go_cache`]).

use std::path::Path;

use super::{Build, Built, IdentityMemo, ToolchainIdentity, Toolchains};
use crate::options::OptimizationLevel;
use crate::{Error, Result};

pub(super) fn identity(toolchains: &Toolchains, memo: &IdentityMemo) -> Result<ToolchainIdentity> {
    Ok(ToolchainIdentity {
        name: "go".into(),
        version: memo.version(&toolchains.go, &["version"])?,
    })
}

pub(super) fn build(build: &Build<'_>) -> Result<Built> {
    if build.source.top_level_with_extension(&["go"]).is_empty() {
        build.entry_file(&["go"], &[])?;
    }
    if !build.source.contains("go.mod") {
        let go_mod = build.source_dir.join("go.mod");
        std::fs::write(&go_mod, "module function\n\ngo 1.21\n")
            .map_err(|e| Error::io(&go_mod, e))?;
    }
    let go_cache = build
        .toolchains
        .go_cache
        .clone()
        .unwrap_or_else(|| build.scratch_dir.join("go-build"));
    if let Some(seed) = &build.toolchains.go_cache_seed {
        if !go_cache.exists() && seed.is_dir() {
            seed_cache(seed, &go_cache)?;
        }
    }
    let output = build.module_path();
    let mut command = build.command(&build.toolchains.go);
    command
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", go_cache)
        .env("GOPATH", build.scratch_dir.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .env("GOFLAGS", "-mod=mod -buildvcs=false");
    if build.options.allow_network {
        for name in ["GOPROXY", "GOSUMDB", "GOPRIVATE"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
    } else {
        command.env("GOPROXY", "off").env("GOSUMDB", "off");
    }
    command.args(["build", "-trimpath", "-o"]).arg(&output);
    match build.options.optimization {
        OptimizationLevel::None => {
            command.arg("-gcflags=all=-N -l");
        }
        OptimizationLevel::Speed => {}
        OptimizationLevel::Size => {
            command.arg("-ldflags=-s -w");
        }
    }
    command.arg(".");
    let outcome = build.run(&mut command)?;
    build.expect_output(&output)?;
    Ok(Built {
        artifact: output,
        warnings: build.warnings(&outcome),
    })
}

/// Copies the seed into a fresh cache directory (written beside it, then renamed, so a
/// concurrent compile sees the whole seed or none).
fn seed_cache(seed: &Path, cache: &Path) -> Result<()> {
    let parent = cache.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".go-build-seed-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    copy_tree(seed, staging.path())?;
    let staging = staging.keep();
    if std::fs::rename(&staging, cache).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let target = to.join(entry.file_name());
        let file_type = entry.file_type().map_err(|e| Error::io(&entry.path(), e))?;
        if file_type.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
            copy_tree(&entry.path(), &target)?;
        } else if file_type.is_file() {
            std::fs::copy(entry.path(), &target).map_err(|e| Error::io(&target, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_copied_whole_into_a_missing_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(seed.join("0a")).expect("mkdir");
        std::fs::write(seed.join("0a/entry-d"), b"object").expect("write");
        std::fs::write(seed.join("README"), b"cache").expect("write");
        let cache = dir.path().join("cache/go-build");
        seed_cache(&seed, &cache).expect("seed");
        assert_eq!(
            std::fs::read(cache.join("0a/entry-d")).expect("copied"),
            b"object"
        );
        assert_eq!(
            std::fs::read(cache.join("README")).expect("copied"),
            b"cache"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .expect("parent")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, ["go-build"], "no staging directory left behind");
    }
}
