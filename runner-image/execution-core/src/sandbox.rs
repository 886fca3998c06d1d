//! Confinement of a forked run child, for front ends that run many tenants' guests from one
//! long-lived process (the warm agent). The child enters it right after the fork, before the
//! guest is instantiated; WebAssembly's own sandbox stays the first wall, this is the second:
//! should a runtime bug let a guest run native code, that code finds
//!
//! - no network: a new network namespace with nothing in it but a loopback that is down;
//! - nobody's files: its own unprivileged uid/gid (distinct from the front end's), no
//!   supplementary groups, no capabilities, `no_new_privs`;
//! - no new processes and few descriptors: `RLIMIT_NPROC` 0, `RLIMIT_NOFILE`, and an address-space
//!   cap (`RLIMIT_AS`);
//! - a seccomp filter that refuses, with EPERM, the system calls a guest never needs and an
//!   escape would: sockets, exec, new processes or namespaces, tracing other processes,
//!   mounts, keyrings, BPF, perf, module loading.
//!
//! Entering needs root (or CAP_SYS_ADMIN, CAP_SETUID and CAP_SETGID) in the front end.

use std::io;

/// How a run child is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildSandbox {
    /// The uid the child runs as: unprivileged and not the front end's.
    pub uid: u32,
    /// The gid the child runs as.
    pub gid: u32,
    /// Enter a new, empty network namespace.
    pub isolate_network: bool,
    /// `RLIMIT_AS` in bytes. WasmEdge reserves about 8 GiB of address space per linear memory
    /// (its guard region; an 8 GiB cap fails instantiation), so this is a backstop against
    /// runaway mappings, not the memory limit: that is the page cap.
    pub address_space_bytes: u64,
    /// `RLIMIT_NOFILE`: the child needs its three stdio pipes, the report pipe and a few of
    /// WasmEdge's own.
    pub open_files: u64,
}

impl ChildSandbox {
    /// A sandbox for `uid`/`gid` with the defaults the agent uses.
    pub fn for_user(uid: u32, gid: u32) -> Self {
        ChildSandbox {
            uid,
            gid,
            isolate_network: true,
            address_space_bytes: 64 << 30,
            open_files: 32,
        }
    }

    /// Confines the calling process. Meant for a freshly forked, single-threaded child: it
    /// changes process-wide state for good. On error the child must not run the guest.
    pub fn enter(&self) -> Result<(), SandboxError> {
        if self.uid == 0 || self.gid == 0 {
            return Err(SandboxError::new(
                "the child's uid and gid must not be root",
                0,
            ));
        }
        // SAFETY: plain system calls on this process's own attributes; every result is checked.
        unsafe {
            let parent = libc::getppid();
            if self.isolate_network && libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(SandboxError::last("unshare(CLONE_NEWNET)"));
            }
            set_limit(libc::RLIMIT_AS, self.address_space_bytes)?;
            set_limit(libc::RLIMIT_NOFILE, self.open_files)?;
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(SandboxError::last("setgroups"));
            }
            if libc::setresgid(self.gid, self.gid, self.gid) != 0 {
                return Err(SandboxError::last("setresgid"));
            }
            if libc::setresuid(self.uid, self.uid, self.uid) != 0 {
                return Err(SandboxError::last("setresuid"));
            }
            // Changing credentials clears the parent-death signal: arm it again, or a child
            // whose supervisor is killed would run its guest on with nobody to stop it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(SandboxError::last("PR_SET_PDEATHSIG"));
            }
            if libc::getppid() != parent {
                return Err(SandboxError::new(
                    "the parent exited while the child confined itself",
                    0,
                ));
            }
            // After the uid change (root is exempt from it): no process may be created at all.
            set_limit(libc::RLIMIT_NPROC, 0)?;
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(SandboxError::last("PR_SET_NO_NEW_PRIVS"));
            }
        }
        seccomp::install()
    }
}

/// Why a sandbox could not be entered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entering the run sandbox: {step}: {}", std::io::Error::from_raw_os_error(*.errno))]
pub struct SandboxError {
    /// What failed.
    pub step: &'static str,
    /// The OS error number (0 when the configuration itself is refused).
    pub errno: i32,
}

impl SandboxError {
    fn new(step: &'static str, errno: i32) -> Self {
        SandboxError { step, errno }
    }

    fn last(step: &'static str) -> Self {
        Self::new(step, io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

unsafe fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> Result<(), SandboxError> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(SandboxError::last("setrlimit"));
    }
    Ok(())
}

mod seccomp {
    //! A classic-BPF seccomp filter: the wrong architecture kills the process; each listed
    //! system call fails with EPERM; everything else is allowed (WasmEdge's own needs — memory
    //! mapping, signals for traps, reading and writing the stdio pipes — vary by version, so an
    //! allow list would break on upgrades, while this deny list names what an escape needs).

    use super::SandboxError;

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;

    /// Refused system calls (both architectures).
    const DENIED: &[libc::c_long] = &[
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
    ];

    /// Only x86_64 has these (aarch64 has only clone).
    #[cfg(target_arch = "x86_64")]
    const DENIED_ARCH: &[libc::c_long] = &[libc::SYS_fork, libc::SYS_vfork];
    #[cfg(target_arch = "aarch64")]
    const DENIED_ARCH: &[libc::c_long] = &[];

    const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    /// Offsets in `struct seccomp_data`.
    const NR_OFFSET: u32 = 0;
    const ARCH_OFFSET: u32 = 4;

    fn statement(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jump_if_equal(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }

    /// The filter program.
    pub(super) fn program() -> Vec<libc::sock_filter> {
        let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret = libc::BPF_RET | libc::BPF_K;
        let mut program = vec![
            statement(load, ARCH_OFFSET),
            jump_if_equal(AUDIT_ARCH, 1, 0),
            statement(ret, SECCOMP_RET_KILL_PROCESS),
            statement(load, NR_OFFSET),
        ];
        for nr in DENIED.iter().chain(DENIED_ARCH) {
            // Equal: fall through to the EPERM return; otherwise skip it.
            program.push(jump_if_equal(*nr as u32, 0, 1));
            program.push(statement(ret, SECCOMP_RET_ERRNO | libc::EPERM as u32));
        }
        program.push(statement(ret, SECCOMP_RET_ALLOW));
        program
    }

    pub(super) fn install() -> Result<(), SandboxError> {
        let mut filter = program();
        let fprog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: `fprog` points at `filter`, alive for the call; no_new_privs is already set.
        let installed = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
                0,
                0,
            )
        };
        if installed != 0 {
            return Err(SandboxError::last("seccomp filter"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_checks_the_architecture_first_and_ends_by_allowing() {
        let program = seccomp::program();
        assert_eq!(program[0].k, 4, "loads seccomp_data.arch");
        assert_eq!(program[2].k, 0x8000_0000, "a foreign architecture kills");
        assert_eq!(program.last().map(|s| s.k), Some(0x7fff_0000));
        // Every denied call is a compare followed by an EPERM return.
        let denials = program
            .iter()
            .filter(|s| s.k == 0x0005_0000 | libc::EPERM as u32)
            .count();
        assert_eq!(denials, (program.len() - 5) / 2);
        assert!(
            program.len() < 256,
            "short enough to stay cheap per system call"
        );
    }

    #[test]
    fn a_root_child_is_refused_before_anything_changes() {
        let error = ChildSandbox::for_user(0, 1000).enter().expect_err("root");
        assert_eq!(error.step, "the child's uid and gid must not be root");
    }
}
