//! Limits for one compile, and running a toolchain process under them.
//!
//! A toolchain runs as the leader of a new process group (`setsid`), so everything it starts —
//! cargo's rustc processes, build scripts, Go's compile/link steps, node — is in that group.
//! When the wall-clock limit expires, and also after the leader exits normally, the whole group
//! gets SIGKILL: no descendant outlives the compile. A descendant that deliberately starts a
//! session of its own (`setsid`) leaves the group and is not caught here; in a compile Job the
//! pod's end (and its cgroup) still stops it.
//!
//! Memory is bounded per process with `RLIMIT_DATA` (heap and private writable mappings; unlike
//! `RLIMIT_AS` it leaves the large `PROT_NONE` reservations of V8 and the Go runtime alone), the
//! size of any file a toolchain writes with `RLIMIT_FSIZE`, and the captured output is bounded.
//! In a compile Job the pod's memory limit bounds the sum over the process tree.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Limits for one compile. Defaults: 1 MiB of source, 300 s, 4 GiB per process, 64 MiB module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Most bytes of source (sum over the tree).
    pub source_bytes: u64,
    /// Wall-clock time for all toolchain runs of the compile together.
    pub wall_time: Duration,
    /// Data-segment limit for each toolchain process.
    pub memory_bytes: u64,
    /// Largest module (or script) accepted as the artifact.
    pub module_bytes: u64,
    /// Largest file a toolchain may write (intermediate files included).
    pub file_bytes: u64,
    /// Bytes of the toolchain's stdout+stderr kept for diagnostics.
    pub output_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            source_bytes: 1 << 20,
            wall_time: Duration::from_secs(300),
            memory_bytes: 4 << 30,
            module_bytes: 64 << 20,
            file_bytes: 1 << 30,
            output_bytes: 1 << 20,
        }
    }
}

/// What a finished toolchain process left.
#[derive(Debug)]
pub struct ProcessOutcome {
    /// Its exit status.
    pub status: ExitStatus,
    /// The first [`CompileLimits::output_bytes`] of stdout then stderr, lossily decoded.
    pub output: String,
    /// How long it ran.
    pub duration: Duration,
}

/// Runs `command` (its program, args, env and working directory already set) until it exits or
/// `deadline` passes; kills its whole process group either way. Stdout and stderr go to files
/// in `scratch` (never pipes, so a descendant holding them open cannot hang us), and only their
/// beginning is read back.
pub fn run_limited(
    command: &mut Command,
    limits: &CompileLimits,
    deadline: Instant,
    scratch: &Path,
) -> Result<ProcessOutcome> {
    let program = command.get_program().to_string_lossy().into_owned();
    let stdout_path = scratch.join("toolchain.stdout");
    let stderr_path = scratch.join("toolchain.stderr");
    let stdout = std::fs::File::create(&stdout_path).map_err(|e| Error::io(&stdout_path, e))?;
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| Error::io(&stderr_path, e))?;
    let memory = limits.memory_bytes;
    let file_size = limits.file_bytes;
    command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (setsid, setrlimit, prctl).
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            set_limit(libc::RLIMIT_DATA, memory)?;
            set_limit(libc::RLIMIT_FSIZE, file_size)?;
            // No core dumps of compilers into the build directory.
            set_limit(libc::RLIMIT_CORE, 0)?;
            // The leader dies with us (e.g. the compile command is killed).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command.spawn().map_err(|source| Error::ToolchainMissing {
        program: program.clone(),
        source,
    })?;
    let group = child.id() as libc::pid_t;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                kill_group(group);
                return Err(Error::Internal(format!("waiting for {program}: {e}")));
            }
        }
        if Instant::now() >= deadline {
            kill_group(group);
            let _ = child.wait();
            return Err(Error::TimedOut {
                limit: limits.wall_time,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Whatever the leader left behind in its group (daemons, stuck helpers) goes too.
    kill_group(group);
    let duration = started.elapsed();
    let mut output = read_head(&stdout_path, limits.output_bytes)?;
    let remaining = limits.output_bytes.saturating_sub(output.len() as u64);
    output.push_str(&read_head(&stderr_path, remaining)?);
    Ok(ProcessOutcome {
        status,
        output,
        duration,
    })
}

fn set_limit(resource: libc::__rlimit_resource_t, bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: plain system call with a valid pointer.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SIGKILL to every process of the group.
fn kill_group(group: libc::pid_t) {
    // SAFETY: plain system call; a group that no longer exists gives ESRCH, which is fine.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

fn read_head(path: &Path, max: u64) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn captures_output_and_status() {
        let dir = scratch();
        let outcome = run_limited(
            Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            &CompileLimits::default(),
            Instant::now() + Duration::from_secs(10),
            dir.path(),
        )
        .expect("run");
        assert_eq!(outcome.status.code(), Some(3));
        assert_eq!(outcome.output, "out\nerr\n");
    }

    #[test]
    fn output_is_bounded() {
        let dir = scratch();
        let limits = CompileLimits {
            output_bytes: 10,
            ..CompileLimits::default()
        };
        let outcome = run_limited(
            Command::new("/bin/sh").args(["-c", "head -c 100000 /dev/zero | tr '\\0' x"]),
            &limits,
            Instant::now() + Duration::from_secs(10),
            dir.path(),
        )
        .expect("run");
        assert_eq!(outcome.output, "xxxxxxxxxx");
    }

    #[test]
    fn the_deadline_kills_the_process_group() {
        let dir = scratch();
        let started = Instant::now();
        let error = run_limited(
            Command::new("/bin/sh").args(["-c", "sleep 30 & sleep 30"]),
            &CompileLimits::default(),
            Instant::now() + Duration::from_millis(300),
            dir.path(),
        )
        .expect_err("times out");
        assert!(matches!(error, Error::TimedOut { .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn file_size_limit_applies() {
        let dir = scratch();
        let limits = CompileLimits {
            file_bytes: 4096,
            ..CompileLimits::default()
        };
        let target = dir.path().join("big");
        let outcome = run_limited(
            Command::new("/bin/sh").args([
                "-c",
                &format!("head -c 100000 /dev/zero > {}", target.display()),
            ]),
            &limits,
            Instant::now() + Duration::from_secs(10),
            dir.path(),
        )
        .expect("run");
        assert!(!outcome.status.success());
        assert!(std::fs::metadata(&target).expect("file").len() <= 4096);
    }

    #[test]
    fn a_missing_program_is_reported_as_such() {
        let dir = scratch();
        let error = run_limited(
            &mut Command::new("/nonexistent/compiler"),
            &CompileLimits::default(),
            Instant::now() + Duration::from_secs(1),
            dir.path(),
        )
        .expect_err("missing");
        assert!(matches!(error, Error::ToolchainMissing { .. }), "{error:?}");
        assert!(!error.is_user_error());
    }
}
