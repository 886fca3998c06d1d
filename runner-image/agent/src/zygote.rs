//! The zygote: a single-threaded process the agent forks before its async runtime starts, so
//! that every run child is forked from a process with one thread (a fork copies only the
//! calling thread; forking from the runtime's threads could inherit locks some other thread
//! held). The agent connects to the zygote's Unix socket once per run and sends a [`Job`]; the
//! zygote forks a supervisor per connection, which runs the job with the execution core's
//! sandboxed isolation (the run child confines itself, and is killed hard at the timeout) and
//! answers with the result document. The zygote dies with the agent (`PR_SET_PDEATHSIG`), and
//! each supervisor with the zygote.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmfn_execution::result::run_settings::RunSettings;
use wasmfn_execution::sandbox::ChildSandbox;
use wasmfn_execution::ResultDocument;
use wasmfn_execution::{execute, DiscardSink, Isolation, ModuleSource, RunRequest, StdinSource};

use crate::Error;

/// The program name guests see in `argv[0]` (what the pod paths call the module too).
pub const PROGRAM_NAME: &str = "module.wasm";

/// One run, as the agent hands it to the zygote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// The verified module in the agent's cache.
    pub module: PathBuf,
    /// Its AOT form, compiled by the agent from those bytes.
    pub aot: Option<PathBuf>,
    /// The run contract's settings.
    pub settings: RunSettings,
    /// The guest's stdin.
    #[serde(default)]
    pub stdin: Vec<u8>,
}

impl Job {
    /// The execution core's request for this job.
    pub fn request(&self) -> RunRequest {
        let mut request = RunRequest::with_settings(
            ModuleSource::Path(self.module.clone()),
            PROGRAM_NAME.to_owned(),
            &self.settings,
        );
        request.aot = self.aot.clone();
        if !self.stdin.is_empty() {
            request.stdin = StdinSource::Bytes(self.stdin.clone());
        }
        request
    }
}

/// The agent's handle on its zygote.
#[derive(Debug)]
pub struct Zygote {
    socket: PathBuf,
    pid: libc::pid_t,
}

impl Zygote {
    /// Starts the zygote listening at `dir/zygote.sock`; run children confine themselves with
    /// `sandbox` (`None`: plain fork isolation, for tests that cannot be root).
    ///
    /// Must be called while the process has one thread (before any async runtime starts).
    pub fn start(dir: &Path, sandbox: Option<ChildSandbox>) -> Result<Zygote, Error> {
        let socket = dir.join("zygote.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|e| Error::io(&socket, e))?;
        // SAFETY: reading our own pid.
        let agent = unsafe { libc::getpid() };
        // SAFETY: the caller guarantees a single-threaded process, so the child may go on
        // running ordinary Rust code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::io(&socket, std::io::Error::last_os_error()));
        }
        if pid == 0 {
            serve(listener, sandbox, agent)
        }
        Ok(Zygote { socket, pid })
    }

    /// The zygote's process id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Runs `job` in a fresh sandboxed child and returns its result document.
    pub async fn run(&self, job: &Job) -> Result<ResultDocument, Error> {
        let broken = |e: std::io::Error| Error::io(&self.socket, e);
        let request = serde_json::to_vec(job).map_err(|e| Error::Zygote(e.to_string()))?;
        let mut stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(broken)?;
        stream.write_all(&request).await.map_err(broken)?;
        stream.shutdown().await.map_err(broken)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.map_err(broken)?;
        serde_json::from_slice(&answer).map_err(|e| {
            Error::Zygote(format!(
                "the run's supervisor gave no result document ({e}); it was killed or crashed"
            ))
        })
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The zygote's loop: accept, fork a supervisor, repeat. Never returns.
fn serve(listener: UnixListener, sandbox: Option<ChildSandbox>, agent: libc::pid_t) -> ! {
    // SAFETY: process attributes of this freshly forked, single-threaded child. SIGCHLD ignored
    // makes the kernel reap supervisors; each supervisor restores it before it forks its run.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The agent died before the death signal was armed. (It may well be pid 1: the first
        // process of its container.)
        if libc::getppid() != agent {
            libc::_exit(0);
        }
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    loop {
        let Ok((connection, _)) = listener.accept() else {
            continue;
        };
        // SAFETY: this process has one thread.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(listener);
            // SAFETY: as above, in the supervisor.
            unsafe {
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            }
            supervise(connection, sandbox);
            // SAFETY: leaving without running the zygote's destructors or atexit handlers.
            unsafe { libc::_exit(0) }
        }
        drop(connection);
    }
}

/// One supervisor: read the job, run it, answer.
fn supervise(mut connection: UnixStream, sandbox: Option<ChildSandbox>) {
    let mut request = Vec::new();
    if connection.read_to_end(&mut request).is_err() {
        return;
    }
    let document = match serde_json::from_slice::<Job>(&request) {
        Ok(job) => {
            let isolation = sandbox.map_or(Isolation::Fork, Isolation::Sandboxed);
            execute(&job.request(), isolation, &mut DiscardSink).document
        }
        Err(error) => {
            let mut document = ResultDocument::new(
                wasmfn_execution::Reason::InternalError,
                wasmfn_execution::engine::runtime_info(),
            );
            document.set_message(format!("the agent sent a job that does not parse: {error}"));
            document
        }
    };
    let _ = connection.write_all(document.to_json().as_bytes());
}
