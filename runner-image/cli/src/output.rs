//! Where a result document (or a compile's termination message) goes. Inside a pod that is
//! `/dev/termination-log`, which the kubelet provides and the operator reads; outside one the
//! document goes to stderr or to the file `--result` names, and nothing is ever created in
//! `/dev`.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};

/// Kubernetes' default `terminationMessagePath`; the kubelet creates it in every container.
pub(crate) const TERMINATION_LOG: &str = "/dev/termination-log";

/// What to do when the termination log is not there (running outside a pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// Print the document to stderr instead.
    Stderr,
    /// Drop it (the command printed what matters elsewhere).
    Nothing,
}

/// Writes `document` to `target`: `-` is stdout, `/dev/stdout` and `/dev/stderr` are this
/// process's streams (appended to, never truncated), other paths under `/dev/` must already
/// exist, and any other path is created or replaced. The termination log, when it cannot be
/// opened, takes `fallback`.
pub(crate) fn write_document(target: &str, document: &str, fallback: Fallback) -> Result<()> {
    match target {
        "-" | "/dev/stdout" => {
            println!("{document}");
            return Ok(());
        }
        "/dev/stderr" => {
            eprintln!("{document}");
            return Ok(());
        }
        _ => {}
    }
    let path = Path::new(target);
    if !path.starts_with("/dev") {
        return std::fs::write(path, document).with_context(|| format!("writing {target}"));
    }
    // In /dev only what exists is written: opening without O_CREAT never makes a file there.
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path);
    match opened {
        Ok(mut file) => file
            .write_all(document.as_bytes())
            .with_context(|| format!("writing {target}")),
        Err(_) if target == TERMINATION_LOG => {
            if fallback == Fallback::Stderr {
                eprintln!("{document}");
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!("{target} does not exist, and wasmfn creates no files in /dev")
        }
        Err(error) => Err(error).with_context(|| format!("writing {target}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_path_is_refused_not_created() {
        let target = format!("/dev/wasmfn-test-{}", std::process::id());
        let error = write_document(&target, "{}", Fallback::Stderr).expect_err("refused");
        assert!(
            error.to_string().contains("creates no files in /dev"),
            "{error}"
        );
        assert!(!Path::new(&target).exists());
    }

    #[test]
    fn an_ordinary_path_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("result.json");
        write_document(
            target.to_str().expect("utf-8"),
            "{\"a\":1}",
            Fallback::Stderr,
        )
        .expect("written");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "{\"a\":1}");
    }
}
