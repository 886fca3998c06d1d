//! Running a prepared module with its stdio captured, in one of two modes.
//!
//! **Isolated (default).** WasmEdge's WASI writes to the process's real fds 0/1/2, and its own
//! timeout cannot stop every kind of stuck guest safely. So each run happens in a forked child
//! whose fds 0/1/2 are three pipes; the parent feeds stdin and drains the others (hashing,
//! counting, keeping a head, forwarding to the sink — constant memory for any amount of output),
//! enforces the wall-clock timeout and the output limit with SIGKILL, and reads the structured
//! outcome from a fourth pipe. A guest that crashes the runtime takes only the child with it.
//! The parent must not hold locks other threads could own at fork time; `wasmfn exec` is
//! single-threaded, and a warm multi-threaded front end should fork from a dedicated thread
//! early or use a zygote process. The child is killed when the *thread* that forked it exits
//! (`PR_SET_PDEATHSIG` follows the thread), so fork from a long-lived thread, not from a
//! short-lived worker of a pool.
//!
//! **In-process.** For the lowest per-run overhead (benchmarks, trusted warm paths): fds 0/1/2
//! are swapped for memfds around the call and the timeout is WasmEdge's own interruption. The
//! whole output is buffered in memory and the process's stdio is borrowed, so one run at a time.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::capture::{CapturedStream, OutputSink, Stream, StreamCapture};
use crate::engine::{run_guest, GuestOutcome, GuestView, PreparedModule, Rejection};
use crate::request::{Limits, RunRequest, StdinSource};
use crate::result::{Reason, ResultDocument, Timings};
use crate::sandbox::ChildSandbox;

/// How a run is isolated from the calling process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// A forked child per run (hard kill, streamed capture).
    #[default]
    Fork,
    /// On the calling thread (lowest overhead, buffered capture).
    InProcess,
    /// A forked child per run that confines itself first (see [`crate::sandbox`]): for
    /// processes that run many tenants' guests.
    Sandboxed(ChildSandbox),
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The result document.
    pub document: ResultDocument,
    /// The captured stdout (head up to the capture cap, full size and digest).
    pub stdout: CapturedStream,
    /// The captured stderr.
    pub stderr: CapturedStream,
}

impl Execution {
    /// An execution that ended before the guest ran.
    pub fn rejected(rejection: Rejection, started: Instant) -> Self {
        let mut document = ResultDocument::new(rejection.reason, rejection.runtime);
        document.set_message(rejection.message);
        document.module = rejection.module;
        document.timings.load_ms = rejection.load_ms;
        document.timings.total_ms = elapsed_ms(started);
        let empty = || StreamCapture::new(0).finish();
        Execution {
            document,
            stdout: empty(),
            stderr: empty(),
        }
    }
}

/// Prepares and runs `request` (the one-shot path: `wasmfn exec`, the shim).
pub fn execute(request: &RunRequest, isolation: Isolation, sink: &mut dyn OutputSink) -> Execution {
    let started = Instant::now();
    match crate::engine::prepare(request) {
        Ok(prepared) => execute_prepared(&prepared, request, isolation, sink, started),
        Err(rejection) => {
            let mut execution = Execution::rejected(*rejection, started);
            execution.document.script = request.script.clone();
            execution
        }
    }
}

/// Runs an already prepared module (the warm path: prepare once, run many times).
pub fn execute_prepared(
    prepared: &PreparedModule,
    request: &RunRequest,
    isolation: Isolation,
    sink: &mut dyn OutputSink,
    started: Instant,
) -> Execution {
    let view = GuestView::from_request(request);
    let stdin = match open_stdin(&request.stdin) {
        Ok(fd) => fd,
        Err(message) => {
            let mut execution = Execution::rejected(
                Rejection {
                    reason: Reason::InputUnreadable,
                    message,
                    module: Some(prepared.info.clone()),
                    runtime: prepared.runtime.clone(),
                    load_ms: prepared.load_ms,
                },
                started,
            );
            execution.document.script = request.script.clone();
            return execution;
        }
    };
    let (outcome, stdout, stderr) = match isolation {
        Isolation::Fork => run_forked(prepared, &view, stdin, &request.limits, None, sink),
        Isolation::Sandboxed(sandbox) => {
            run_forked(prepared, &view, stdin, &request.limits, Some(sandbox), sink)
        }
        Isolation::InProcess => run_in_process(prepared, &view, stdin, &request.limits, sink),
    };
    let mut document = ResultDocument::new(outcome.reason, prepared.runtime.clone());
    document.exit_code = outcome.exit_code;
    document.set_message(outcome.message);
    document.returns = outcome.returns;
    document.module = Some(prepared.info.clone());
    document.script = request.script.clone();
    document.timings = Timings {
        load_ms: prepared.load_ms,
        instantiate_ms: outcome.instantiate_ms,
        run_ms: outcome.run_ms,
        total_ms: elapsed_ms(started),
    };
    document.stdout = stdout.summary.clone();
    document.stderr = stderr.summary.clone();
    Execution {
        document,
        stdout,
        stderr,
    }
}

/// Opens the guest's stdin as a descriptor: `/dev/null`, a memfd holding the bytes, or the file.
fn open_stdin(source: &StdinSource) -> Result<OwnedFd, String> {
    match source {
        StdinSource::Empty => File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| format!("/dev/null: {e}")),
        StdinSource::Bytes(bytes) => {
            let mut file = memfd("wasmfn-stdin").map_err(|e| format!("stdin buffer: {e}"))?;
            file.write_all(bytes)
                .and_then(|_| file.rewind())
                .map_err(|e| format!("stdin buffer: {e}"))?;
            Ok(OwnedFd::from(file))
        }
        StdinSource::File(path) => {
            let file = File::open(path).map_err(|e| format!("stdin {}: {e}", path.display()))?;
            let metadata = file
                .metadata()
                .map_err(|e| format!("stdin {}: {e}", path.display()))?;
            if metadata.is_dir() {
                return Err(format!("stdin {} is a directory", path.display()));
            }
            // Reading one byte (then rewinding) catches files that open but cannot be read.
            let mut probe = [0u8; 1];
            let mut file = file;
            file.read(&mut probe)
                .and_then(|_| file.rewind().map(|_| ()))
                .map_err(|e| format!("stdin {}: {e}", path.display()))?;
            Ok(OwnedFd::from(file))
        }
    }
}

/// An anonymous in-memory file (closed on exec).
pub(crate) fn memfd(name: &str) -> std::io::Result<File> {
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: valid C string; the returned descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned from here on.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

type StreamsAndOutcome = (GuestOutcome, CapturedStream, CapturedStream);

fn internal_failure(message: String, limits: &Limits) -> StreamsAndOutcome {
    (
        GuestOutcome {
            reason: Reason::InternalError,
            exit_code: None,
            message,
            returns: Vec::new(),
            instantiate_ms: 0.0,
            run_ms: 0.0,
        },
        StreamCapture::new(limits.capture_bytes).finish(),
        StreamCapture::new(limits.capture_bytes).finish(),
    )
}

fn run_forked(
    prepared: &PreparedModule,
    view: &GuestView,
    stdin: OwnedFd,
    limits: &Limits,
    sandbox: Option<ChildSandbox>,
    sink: &mut dyn OutputSink,
) -> StreamsAndOutcome {
    let pipes = (|| Ok::<_, std::io::Error>((pipe()?, pipe()?, pipe()?, pipe()?)))();
    let ((in_r, in_w), (out_r, out_w), (err_r, err_w), (res_r, res_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return internal_failure(format!("pipes: {e}"), limits),
    };
    // Flush our own buffered output so the child does not inherit (and repeat) it.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let started = Instant::now();
    // The runner may itself be pid 1 (a container's init), so "the parent died" is checked
    // against this pid rather than against init's.
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork; the child only calls into WasmEdge and async-signal-tolerant code, then
    // `_exit`s without running the parent's destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return internal_failure(format!("fork: {}", std::io::Error::last_os_error()), limits);
    }
    if pid == 0 {
        child_main(
            prepared,
            view,
            parent,
            [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
            res_w,
            sandbox,
        );
    }
    drop((in_r, out_w, err_w, res_w));
    // The guest's stdin is a pipe whatever the source: WasmEdge can poll a pipe, not /dev/null
    // or a regular file (a guest's `poll_oneoff` on fd 0 got EPERM). The feeder starts after the
    // fork, so the child is forked from a process without it. It ends at the source's end, or
    // with EPIPE once the child is gone (Rust programs ignore SIGPIPE) — so a guest that never
    // reads a large stdin cannot keep it alive past the run.
    let feeder = std::thread::Builder::new()
        .name("wasmfn-stdin".into())
        .spawn(move || {
            let _ = std::io::copy(&mut File::from(stdin), &mut File::from(in_w));
        });
    let streams = supervise(pid, started, out_r, err_r, res_r, limits, sink);
    if let Ok(feeder) = feeder {
        let _ = feeder.join();
    }
    streams
}

fn child_main(
    prepared: &PreparedModule,
    view: &GuestView,
    parent: libc::pid_t,
    [stdin, stdout, stderr]: [RawFd; 3],
    result: OwnedFd,
    sandbox: Option<ChildSandbox>,
) -> ! {
    // SAFETY: plain descriptor and process-attribute calls in the child.
    unsafe {
        // Die with the parent: a runner killed by its pod must not leave the guest running.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(125);
        }
        // dup2 clears O_CLOEXEC on the targets, so 0/1/2 survive; the originals do not matter.
        if libc::dup2(stdin, 0) < 0
            || libc::dup2(stdout, 1) < 0
            || libc::dup2(stderr, 2) < 0
            || libc::dup2(result.as_raw_fd(), REPORT_FD) < 0
        {
            libc::_exit(125);
        }
        // Close every other inherited descriptor: the guest's runtime sees nothing of the
        // parent's, and when a parent starts several runs at once, a child forked while another
        // run's pipes were being set up cannot hold that run's write ends (its parent would
        // then not see end-of-file until this child exits).
        close_from(REPORT_FD + 1);
    }
    // SAFETY: REPORT_FD is the duplicate made above and owned by this process from here on.
    let result = unsafe { OwnedFd::from_raw_fd(REPORT_FD) };
    limit_host_memory(prepared);
    let confined = sandbox.map_or(Ok(()), |sandbox| sandbox.enter());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match confined {
        Ok(()) => run_guest(prepared, view, None),
        // Never run the guest unconfined.
        Err(error) => GuestOutcome::failed(Reason::InternalError, error.to_string()),
    }))
    .unwrap_or_else(|_| GuestOutcome {
        reason: Reason::InternalError,
        exit_code: None,
        message: "the runner panicked while running the guest".into(),
        returns: Vec::new(),
        instantiate_ms: 0.0,
        run_ms: 0.0,
    });
    let mut file = File::from(result);
    let _ = serde_json::to_writer(&mut file, &outcome);
    drop(file);
    // SAFETY: leave without unwinding or running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}

/// Host memory the child may use beyond what it inherited and the guest's linear memory
/// (runtime bookkeeping, WASI buffers, the interpreter's call stack).
const HOST_MEMORY_HEADROOM: u64 = 256 << 20;

/// WasmEdge's interpreter keeps the guest's call stack on the host heap with no depth limit,
/// so unbounded recursion would eat host memory until the timeout. Capping the child's data
/// segment (what it inherited + the linear-memory limit + headroom) turns that into a quick
/// allocation failure, reported as a stack overflow by [`describe_death`].
fn limit_host_memory(prepared: &PreparedModule) {
    let Some(current) = vm_data_bytes() else {
        return;
    };
    let limit = current + prepared.memory_limit_bytes() + HOST_MEMORY_HEADROOM;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setting a resource limit of this (child) process.
    unsafe { libc::setrlimit(libc::RLIMIT_DATA, &rlimit) };
}

fn vm_data_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmData:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The child's end of the report pipe, right after the guest's stdio.
const REPORT_FD: RawFd = 3;

/// Closes every descriptor from `first` up.
///
/// # Safety
/// Only for a freshly forked child: descriptors owned by Rust objects become dangling.
unsafe fn close_from(first: RawFd) {
    // SAFETY: see the function's contract.
    if unsafe { libc::close_range(first as libc::c_uint, libc::c_uint::MAX, 0) } == 0 {
        return;
    }
    // Kernels before 5.9: close whatever is open, by number.
    // SAFETY: plain sysconf call.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 1 << 16) as RawFd;
    for fd in first..max {
        // SAFETY: see the function's contract.
        unsafe { libc::close(fd) };
    }
}

struct Channel {
    fd: OwnedFd,
    open: bool,
}

fn supervise(
    pid: libc::pid_t,
    started: Instant,
    out_r: OwnedFd,
    err_r: OwnedFd,
    res_r: OwnedFd,
    limits: &Limits,
    sink: &mut dyn OutputSink,
) -> StreamsAndOutcome {
    let mut channels = [
        Channel {
            fd: out_r,
            open: true,
        },
        Channel {
            fd: err_r,
            open: true,
        },
        Channel {
            fd: res_r,
            open: true,
        },
    ];
    let mut captures = [
        StreamCapture::new(limits.capture_bytes),
        StreamCapture::new(limits.capture_bytes),
    ];
    let mut report = Vec::new();
    let mut killed_for: Option<(Reason, String)> = None;
    let deadline = started + limits.timeout;
    let mut buffer = vec![0u8; 64 << 10];
    let kill = |pid| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    };

    while channels.iter().any(|c| c.open) {
        let now = Instant::now();
        if killed_for.is_none() && now >= deadline {
            kill(pid);
            killed_for = Some((
                Reason::TimedOut,
                format!("stopped after the {:?} timeout", limits.timeout),
            ));
        }
        // After a kill, keep draining until the pipes close (the child is gone within ms).
        let wait = if killed_for.is_some() {
            Duration::from_millis(50)
        } else {
            deadline.saturating_duration_since(now)
        };
        let mut pollfds: Vec<libc::pollfd> = channels
            .iter()
            .map(|c| libc::pollfd {
                fd: if c.open { c.fd.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout_ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `pollfds` is a valid array of pollfd.
        let ready = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as _, timeout_ms) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            kill(pid);
            killed_for = Some((Reason::InternalError, format!("poll: {error}")));
            break;
        }
        for (index, pollfd) in pollfds.iter().enumerate() {
            if !channels[index].open || pollfd.revents == 0 {
                continue;
            }
            // SAFETY: reading into our buffer from a descriptor we own.
            let n = unsafe {
                libc::read(
                    channels[index].fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                channels[index].open = false;
                continue;
            }
            if n == 0 {
                channels[index].open = false;
                continue;
            }
            let chunk = &buffer[..n as usize];
            match index {
                0 | 1 => {
                    let stream = if index == 0 {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    };
                    captures[index].push(chunk);
                    sink.write(stream, chunk);
                    if let Some(limit) = limits.output_limit_bytes {
                        if killed_for.is_none() && captures[index].size() > limit {
                            kill(pid);
                            killed_for = Some((
                                Reason::OutputLimitExceeded,
                                format!(
                                    "{} exceeded the output limit of {limit} bytes",
                                    if index == 0 { "stdout" } else { "stderr" }
                                ),
                            ));
                        }
                    }
                }
                _ => {
                    // The report is small; bound it anyway against a confused child.
                    if report.len() < (1 << 20) {
                        report.extend_from_slice(chunk);
                    }
                }
            }
        }
    }
    let status = wait_for(pid);
    let elapsed = elapsed_ms(started);
    let [stdout, stderr] = captures;
    let (stdout, stderr) = (stdout.finish(), stderr.finish());
    let reported: Option<GuestOutcome> = serde_json::from_slice(&report).ok();
    let outcome = match (killed_for, reported) {
        (Some((reason, message)), _) => GuestOutcome {
            reason,
            exit_code: None,
            message,
            returns: Vec::new(),
            instantiate_ms: 0.0,
            run_ms: elapsed,
        },
        (None, Some(outcome)) => outcome,
        (None, None) => GuestOutcome {
            reason: describe_death(status).0,
            exit_code: None,
            message: describe_death(status).1,
            returns: Vec::new(),
            instantiate_ms: 0.0,
            run_ms: elapsed,
        },
    };
    (outcome, stdout, stderr)
}

fn wait_for(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return status;
        }
    }
}

/// Why the child died without reporting. WasmEdge turns guest faults into traps itself, so a
/// child killed by SIGSEGV was almost always running AOT code whose native stack overflowed
/// (deep wasm recursion), and one that aborted had hit the data limit set by
/// [`limit_host_memory`] — in practice the interpreter's heap-allocated call stack.
fn describe_death(status: libc::c_int) -> (Reason, String) {
    let detail = describe_status(status);
    if libc::WIFSIGNALED(status) {
        match libc::WTERMSIG(status) {
            libc::SIGSEGV => {
                return (
                    Reason::StackOverflow,
                    format!("call stack exhausted (native stack overflow): {detail}"),
                )
            }
            libc::SIGABRT => {
                return (
                    Reason::StackOverflow,
                    format!("call stack exhausted (the runtime ran out of host memory): {detail}"),
                )
            }
            _ => {}
        }
    }
    (Reason::Crashed, detail)
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        let name = match signal {
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGKILL => "SIGKILL",
            libc::SIGILL => "SIGILL",
            libc::SIGFPE => "SIGFPE",
            _ => "signal",
        };
        format!("the runner's child process died from {name} ({signal}) while running the guest")
    } else {
        format!(
            "the runner's child process exited with {} without reporting a result",
            libc::WEXITSTATUS(status)
        )
    }
}

/// Swaps fds 0/1/2 for the duration of a call and puts the originals back.
struct StdioSwap {
    saved: [RawFd; 3],
}

impl StdioSwap {
    fn install(targets: [RawFd; 3]) -> std::io::Result<Self> {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // Built first so that a failure half-way restores what was already swapped (Drop).
        let mut swap = StdioSwap { saved: [-1; 3] };
        for (fd, target) in targets.iter().enumerate() {
            // SAFETY: duplicating and replacing standard descriptors of this process.
            unsafe {
                let saved = libc::fcntl(fd as RawFd, libc::F_DUPFD_CLOEXEC, 3);
                if saved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                swap.saved[fd] = saved;
                if libc::dup2(*target, fd as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(swap)
    }
}

impl Drop for StdioSwap {
    fn drop(&mut self) {
        for (fd, saved) in self.saved.iter().enumerate() {
            if *saved >= 0 {
                // SAFETY: restoring the descriptors saved in `install`.
                unsafe {
                    libc::dup2(*saved, fd as RawFd);
                    libc::close(*saved);
                }
            }
        }
    }
}

fn run_in_process(
    prepared: &PreparedModule,
    view: &GuestView,
    stdin: OwnedFd,
    limits: &Limits,
    sink: &mut dyn OutputSink,
) -> StreamsAndOutcome {
    let files = (|| Ok::<_, std::io::Error>((memfd("wasmfn-stdout")?, memfd("wasmfn-stderr")?)))();
    let (mut out, mut err) = match files {
        Ok(files) => files,
        Err(e) => return internal_failure(format!("output buffers: {e}"), limits),
    };
    // The process's stdio and WasmEdge's log are borrowed for the run, so in-process runs take
    // turns (two at once swapped each other's descriptors and lost the memory-limit log line).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = {
        let swap = StdioSwap::install([stdin.as_raw_fd(), out.as_raw_fd(), err.as_raw_fd()]);
        match swap {
            Ok(_swap) => run_guest(prepared, view, Some(limits.timeout)),
            Err(e) => return internal_failure(format!("redirecting stdio: {e}"), limits),
        }
    };
    let mut drain = |file: &mut File, stream: Stream| {
        let mut capture = StreamCapture::new(limits.capture_bytes);
        let mut buffer = vec![0u8; 64 << 10];
        if file.rewind().is_ok() {
            while let Ok(n) = file.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                capture.push(&buffer[..n]);
                sink.write(stream, &buffer[..n]);
            }
        }
        capture
    };
    let stdout = drain(&mut out, Stream::Stdout);
    let stderr = drain(&mut err, Stream::Stderr);
    let mut outcome = outcome;
    if let Some(limit) = limits.output_limit_bytes {
        // In-process the guest cannot be stopped mid-stream; report the overrun afterwards.
        if outcome.reason.succeeded() && (stdout.size() > limit || stderr.size() > limit) {
            outcome.reason = Reason::OutputLimitExceeded;
            outcome.message = format!("output exceeded the limit of {limit} bytes");
        }
    }
    (outcome, stdout.finish(), stderr.finish())
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
