//! The node's filesystem as the installer sees it: the host's root mounted at `host_root` (the
//! DaemonSet mounts `/` at `/host`), with every path the installer is told about given as the
//! host sees it, so the paths it writes into containerd's config are valid on the host.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Host {
    pub root: PathBuf,
}

impl Host {
    /// Where host path `path` is in the installer's view.
    pub fn path(&self, path: &Path) -> PathBuf {
        let relative: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        self.root.join(relative)
    }

    /// The file behind host path `path`, following symbolic links the way the host would
    /// (an absolute link target is a host path too), so writing it replaces the file containerd
    /// reads rather than the link.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf> {
        let mut host_path = path.to_path_buf();
        for _ in 0..16 {
            let seen = self.path(&host_path);
            match std::fs::symlink_metadata(&seen) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = std::fs::read_link(&seen)
                        .with_context(|| format!("read link {}", seen.display()))?;
                    host_path = match host_path.parent() {
                        Some(parent) if target.is_relative() => parent.join(target),
                        _ => target,
                    };
                }
                _ => return Ok(seen),
            }
        }
        bail!("too many symbolic links behind {}", path.display())
    }
}

/// Reads a config file; a missing file reads as `None`.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// The backup the installer keeps of a config file before changing it.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".wasmfn-backup");
    path.with_file_name(name)
}

/// Replaces `path` with `text` atomically (a temporary file in the same directory, renamed over
/// it) after copying the previous contents `old`, if any, to [`backup_path`]. The new file keeps
/// the old one's permissions. Returns the backup's path.
pub fn replace_with_backup(path: &Path, old: Option<&str>, text: &str) -> Result<Option<PathBuf>> {
    let parent = path
        .parent()
        .with_context(|| format!("{} has no directory", path.display()))?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o644);
    let backup = match old {
        Some(old) => {
            let backup = backup_path(path);
            write_synced(&backup, old, mode)?;
            Some(backup)
        }
        None => None,
    };
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".wasmfn-new");
    let temporary = path.with_file_name(name);
    write_synced(&temporary, text, mode)?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("rename {} to {}", temporary.display(), path.display()))?;
    Ok(backup)
}

fn write_synced(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Runs a shell command line (the restart command), failing with its output.
pub fn run_shell(command_line: &str) -> Result<()> {
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(command_line)
        .output()
        .with_context(|| format!("run `{command_line}`"))?;
    if !output.status.success() {
        bail!(
            "`{command_line}` failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_land_under_the_root_even_with_dot_dots() {
        let host = Host {
            root: PathBuf::from("/host"),
        };
        assert_eq!(
            host.path(Path::new("/etc/containerd/config.toml")),
            Path::new("/host/etc/containerd/config.toml")
        );
        assert_eq!(host.path(Path::new("/../../etc")), Path::new("/host/etc"));
    }

    #[test]
    fn a_symlinked_config_is_written_where_it_points_and_backed_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = Host {
            root: dir.path().to_path_buf(),
        };
        std::fs::create_dir_all(dir.path().join("etc/containerd")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("var/lib/rancher")).expect("mkdir");
        std::fs::write(
            dir.path().join("var/lib/rancher/config.toml"),
            "version = 2\n",
        )
        .expect("write");
        // An absolute target is a host path: it must resolve under the host root.
        std::os::unix::fs::symlink(
            "/var/lib/rancher/config.toml",
            dir.path().join("etc/containerd/config.toml"),
        )
        .expect("symlink");
        let real = host
            .resolve(Path::new("/etc/containerd/config.toml"))
            .expect("resolve");
        assert_eq!(real, dir.path().join("var/lib/rancher/config.toml"));
        let old = read_optional(&real).expect("read");
        let backup = replace_with_backup(&real, old.as_deref(), "version = 2\n# new\n")
            .expect("replace")
            .expect("backup");
        assert_eq!(
            std::fs::read_to_string(&backup).expect("backup"),
            "version = 2\n"
        );
        assert_eq!(
            std::fs::read_to_string(&real).expect("read"),
            "version = 2\n# new\n"
        );
        let link = dir.path().join("etc/containerd/config.toml");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink(),
            "the link stays a link"
        );
    }

    #[test]
    fn a_missing_config_reads_as_none() {
        assert_eq!(
            read_optional(Path::new("/nonexistent/wasmfn/config.toml")).expect("read"),
            None
        );
    }
}
