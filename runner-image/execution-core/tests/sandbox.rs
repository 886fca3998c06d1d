//! The run sandbox, property by property: a child forked here enters it and then probes what a
//! guest that broke out of WebAssembly could do (a native test hook in the child), and a real
//! guest still runs inside it. Needs root, as the agent does (CI runs as root).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;

use support::*;
use wasmfn_execution::sandbox::ChildSandbox;
use wasmfn_execution::{execute, DiscardSink, Isolation, Reason, StdinSource};

const UID: u32 = 61_001;

/// The agent's defaults, with a smaller address space for the probes.
fn sandbox() -> ChildSandbox {
    ChildSandbox {
        address_space_bytes: 8 << 30,
        ..agent_sandbox()
    }
}

/// The sandbox exactly as the agent configures it.
fn agent_sandbox() -> ChildSandbox {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the sandbox tests need root, as the agent does (CI runs as root)"
    );
    ChildSandbox::for_user(UID, UID)
}

/// Forks a child that enters `sandbox` and then runs `probe`; returns what the probe reported.
fn probe_in(sandbox: ChildSandbox, probe: fn() -> String) -> String {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let report = match sandbox.enter() {
            Ok(()) => probe(),
            Err(error) => format!("enter failed: {error}"),
        };
        unsafe {
            libc::write(write.as_raw_fd(), report.as_ptr().cast(), report.len());
            libc::_exit(0);
        }
    }
    drop(write);
    let mut report = String::new();
    std::fs::File::from(read)
        .read_to_string(&mut report)
        .unwrap();
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    report
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[test]
fn the_child_runs_as_its_own_unprivileged_user_without_groups() {
    let report = probe_in(sandbox(), || unsafe {
        format!(
            "uid={} euid={} gid={} groups={}",
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getgroups(0, std::ptr::null_mut())
        )
    });
    assert_eq!(report, format!("uid={UID} euid={UID} gid={UID} groups=0"));
}

#[test]
fn the_child_has_no_network_interfaces_and_cannot_open_sockets() {
    let report = probe_in(sandbox(), || {
        // /proc/self/net/dev lists the interfaces of the child's network namespace.
        let devices = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
        let names: Vec<&str> = devices
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        format!("interfaces={names:?} socket={socket} errno={}", errno())
    });
    assert_eq!(
        report,
        format!("interfaces=[\"lo\"] socket=-1 errno={}", libc::EPERM)
    );
    // A new namespace, not the host's with sockets refused: its only interface is down.
    let report = probe_in(sandbox(), || {
        let flags = std::fs::read_to_string("/sys/class/net/lo/operstate").unwrap_or_default();
        format!("lo={}", flags.trim())
    });
    assert!(report == "lo=down" || report == "lo=unknown", "{report}");
}

#[test]
fn the_child_cannot_start_processes_or_programs_or_trace_its_parent() {
    let report = probe_in(sandbox(), || unsafe {
        let fork = libc::fork();
        let fork_errno = errno();
        let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
        let exec = libc::execve(c"/bin/true".as_ptr(), argv.as_ptr(), std::ptr::null());
        let exec_errno = errno();
        let trace = libc::ptrace(libc::PTRACE_ATTACH, libc::getppid(), 0, 0);
        format!(
            "fork={fork}/{fork_errno} exec={exec}/{exec_errno} ptrace={trace}/{}",
            errno()
        )
    });
    let eperm = libc::EPERM;
    assert_eq!(
        report,
        format!("fork=-1/{eperm} exec=-1/{eperm} ptrace=-1/{eperm}")
    );
}

#[test]
fn the_child_gets_few_descriptors_and_a_bounded_address_space() {
    let report = probe_in(sandbox(), || unsafe {
        let mut opened = 0;
        while libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) >= 0 {
            opened += 1;
        }
        let open_errno = errno();
        let huge = libc::mmap(
            std::ptr::null_mut(),
            16 << 30,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        format!(
            "opened<32={} open_errno={open_errno} mmap_16g_failed={}",
            opened < 32,
            huge == libc::MAP_FAILED
        )
    });
    assert_eq!(
        report,
        format!(
            "opened<32=true open_errno={} mmap_16g_failed=true",
            libc::EMFILE
        )
    );
}

#[test]
fn the_child_cannot_read_credentials_or_other_runs_inputs() {
    // What the agent keeps private (its TLS key, another run's stdin): files only it may read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.path().join("tls.key");
    std::fs::write(&secret, "private").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    static PATH: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();
    PATH.set(std::ffi::CString::new(secret.to_str().unwrap()).unwrap())
        .unwrap();
    let report = probe_in(sandbox(), || unsafe {
        let fd = libc::open(PATH.get().unwrap().as_ptr(), libc::O_RDONLY);
        format!("open={fd} errno={}", errno())
    });
    assert_eq!(report, format!("open=-1 errno={}", libc::EACCES));
}

#[test]
fn a_guest_runs_inside_the_sandbox_with_its_stdin_and_output() {
    let mut with_stdin = request(&guest("c/probe"));
    with_stdin.stdin = StdinSource::Bytes(b"sandboxed\n".to_vec());
    let execution = execute(
        &with_stdin,
        Isolation::Sandboxed(agent_sandbox()),
        &mut DiscardSink,
    );
    assert_eq!(
        execution.document.reason,
        Reason::Completed,
        "{:?}",
        execution.document
    );
    assert!(
        stdout_text(&execution).contains("stdin: sandboxed\n"),
        "{}",
        stdout_text(&execution)
    );
    // AOT code runs inside it too.
    let module = guest("wat/hello");
    let mut with_aot = request(&module);
    with_aot.aot = Some(aot_of(&module));
    let execution = execute(
        &with_aot,
        Isolation::Sandboxed(agent_sandbox()),
        &mut DiscardSink,
    );
    assert_eq!(execution.document.reason, Reason::Completed);
    assert!(execution.document.runtime.aot);
    assert_eq!(stdout_text(&execution), "hello\n");
}

#[test]
fn a_sandbox_that_cannot_be_entered_never_runs_the_guest() {
    let root = ChildSandbox::for_user(0, 0);
    let execution = execute(
        &request(&guest("wat/hello")),
        Isolation::Sandboxed(root),
        &mut DiscardSink,
    );
    assert_eq!(execution.document.reason, Reason::InternalError);
    assert!(execution.document.message.contains("must not be root"));
    assert_eq!(execution.stdout.head, b"");
}

#[test]
fn the_child_still_dies_with_its_parent_after_dropping_its_credentials() {
    // A credential change clears the parent-death signal; the sandbox arms it again, so a
    // guest whose supervisor is killed cannot run on unsupervised.
    let report = probe_in(sandbox(), || {
        let mut signal: libc::c_int = 0;
        let got = unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut signal as *mut libc::c_int) };
        format!("prctl={got} signal={signal}")
    });
    assert_eq!(report, format!("prctl=0 signal={}", libc::SIGKILL));
}
