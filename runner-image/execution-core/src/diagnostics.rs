//! Reading WasmEdge's own log during a run, without letting it reach the guest's stdout.
//!
//! WasmEdge 0.14 logs through spdlog's default logger, which writes to the C `stdout` stream —
//! fd 1, the same fd WASI uses for the guest's stdout. Some facts exist only in that log (a
//! `memory.grow` refused because of the page limit is invisible to the API: the guest just gets
//! -1). So for the duration of a run we point the C `stdout` stream (not fd 1) at a private
//! memfd: the `FILE` keeps its buffer and lock, only its file descriptor changes. glibc exposes
//! that descriptor as the `_fileno` member of `struct _IO_FILE` (offset 112 on x86_64); we only
//! touch it after checking it holds what `fileno(stdout)` reports, and otherwise leave logging
//! off (memory-limit detection then falls back to the instantiation error alone).
//!
//! The C stream is process-wide: only one run at a time per process may use this, which holds
//! for the forked child and for the single-threaded in-process mode.

use std::io::{Read as _, Seek as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// At most this much of the log is read back.
const MAX_LOG_BYTES: u64 = 64 << 10;

/// An active redirection of WasmEdge's log; call [`DiagnosticLog::finish`] to get the text.
#[derive(Debug)]
pub(crate) struct DiagnosticLog {
    capture: Option<(OwnedFd, libc::c_int)>,
}

#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
mod c_stdout {
    extern "C" {
        #[link_name = "stdout"]
        static mut C_STDOUT: *mut libc::FILE;
    }
    const FILENO_OFFSET: usize = 112;

    /// The `_fileno` slot of the C `stdout` stream, when its layout is the expected one.
    pub(super) fn fileno_slot() -> Option<*mut libc::c_int> {
        // SAFETY: reading the `stdout` pointer glibc initialises before main; the slot is only
        // returned when the int at the documented offset equals `fileno(stdout)`.
        unsafe {
            let stream = C_STDOUT;
            if stream.is_null() {
                return None;
            }
            let slot = (stream as *mut u8).add(FILENO_OFFSET) as *mut libc::c_int;
            let fd = libc::fileno(stream);
            (fd >= 0 && *slot == fd).then_some(slot)
        }
    }

    pub(super) fn flush() {
        // SAFETY: flushing the process's C stdout stream.
        unsafe {
            libc::fflush(C_STDOUT);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64")))]
mod c_stdout {
    pub(super) fn fileno_slot() -> Option<*mut libc::c_int> {
        None
    }
    pub(super) fn flush() {}
}

impl DiagnosticLog {
    /// Starts capturing WasmEdge's error log (no-op where the stream layout is unknown).
    pub(crate) fn begin() -> Self {
        let Some(slot) = c_stdout::fileno_slot() else {
            return DiagnosticLog { capture: None };
        };
        // SAFETY: creating a memfd; the name is a valid C string.
        let fd = unsafe { libc::memfd_create(c"wasmfn-runtime-log".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return DiagnosticLog { capture: None };
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        c_stdout::flush();
        // SAFETY: `slot` was validated by `fileno_slot`; we restore it in `finish`.
        let saved = unsafe {
            let saved = *slot;
            *slot = memfd.as_raw_fd();
            saved
        };
        wasmedge_sys::utils::log_error_info();
        DiagnosticLog {
            capture: Some((memfd, saved)),
        }
    }

    /// Stops capturing, turns the log off again and returns what was logged.
    pub(crate) fn finish(self) -> String {
        let Some((memfd, saved)) = self.capture else {
            return String::new();
        };
        c_stdout::flush();
        wasmedge_sys::utils::log_off();
        if let Some(slot) = c_stdout::fileno_slot() {
            // SAFETY: validated slot; puts back the descriptor we replaced.
            unsafe { *slot = saved };
        }
        let mut file = std::fs::File::from(memfd);
        let mut text = Vec::new();
        if file.rewind().is_ok() {
            let _ = file.take(MAX_LOG_BYTES).read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}
