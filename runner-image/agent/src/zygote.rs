//! The zygote: a single-threaded process the agent forks before its async runtime starts, so
//! that every run child is forked from a process with one thread (a fork copies only the
//! calling thread; forking from the runtime's threads could inherit locks some other thread
//! held). The agent connects to a zygote's Unix socket once per run and sends a [`Job`]; the
//! zygote forks a supervisor per connection, which runs the job with the execution core's
//! sandboxed isolation (the run child confines itself, and is killed hard at the timeout) and
//! answers with the result document. The zygote dies with the agent (`PR_SET_PDEATHSIG`), and
//! each supervisor with the zygote.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmfn_execution::interpreter::{self, ScriptLanguage, StagedScript};
use wasmfn_execution::result::run_settings::RunSettings;
use wasmfn_execution::sandbox::ChildSandbox;
use wasmfn_execution::ResultDocument;
use wasmfn_execution::{
    execute, execute_prepared, prepare, DiscardSink, Entry, Isolation, ModuleSource,
    PreparedModule, RunRequest, StdinSource,
};

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
    /// When `module` is a script: its media type (its interpreter runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_media_type: Option<String>,
    /// The run contract's settings.
    pub settings: RunSettings,
    /// The guest's stdin (base64 on the wire: up to 256 KiB would be a megabyte of JSON numbers).
    #[serde(default, with = "base64_bytes")]
    pub stdin: Vec<u8>,
}

/// Bytes as a base64 string in the zygote's job documents.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
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

    /// The request to execute: [`Job::request`], or for a script its interpreter's request with
    /// the script staged where the run child (another user) can read it and nothing else can
    /// list it. The staged copy lives as long as the returned value.
    pub fn resolve(&self) -> std::io::Result<(RunRequest, Option<StagedScript>)> {
        let request = self.request();
        let Some(language) = self
            .script_media_type
            .as_deref()
            .and_then(ScriptLanguage::from_media_type)
        else {
            return Ok((request, None));
        };
        let script = std::fs::read(&self.module)?;
        let parent = std::env::temp_dir().join("wasmfn-scripts");
        std::fs::create_dir_all(&parent)?;
        // Traversable, not listable: a run child finds only the directory it is given.
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o711))?;
        let staged = StagedScript::write(&parent, language, &script)?;
        staged.share_read_only()?;
        let request = interpreter::script_request(
            request,
            language,
            &interpreter::interpreters_dir(),
            staged.path(),
        );
        Ok((request, Some(staged)))
    }
}

/// The agent's handle on its zygotes: one for modules and one for scripts.
///
/// They are two processes because a fork copies the forking process's page tables: the script
/// zygote holds both interpreters loaded (CPython alone is tens of MiB of WasmEdge state), and
/// forking it for every module run took two thirds of a hello run's CPU (`copy_page_range`, the
/// agent's runs/s fell by a third). The module zygote stays small; only script runs pay for the
/// loaded interpreters, and they save their load by it.
#[derive(Debug)]
pub struct Zygote {
    modules: Forker,
    scripts: Forker,
}

/// One zygote process and the socket it accepts jobs on.
#[derive(Debug)]
struct Forker {
    socket: PathBuf,
    pid: libc::pid_t,
}

impl Forker {
    /// Forks a zygote listening at `socket`, which loads the interpreters first when `warm`.
    ///
    /// The calling process must have one thread.
    fn start(socket: PathBuf, sandbox: Option<ChildSandbox>, warm: bool) -> Result<Forker, Error> {
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
            serve(listener, sandbox, agent, warm)
        }
        Ok(Forker { socket, pid })
    }

    /// Sends `job` and reads the result document its supervisor answers with.
    async fn run(&self, job: &Job) -> Result<ResultDocument, Error> {
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

impl Drop for Forker {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Zygote {
    /// Starts both zygotes, listening in `dir`; run children confine themselves with `sandbox`
    /// (`None`: plain fork isolation, for tests that cannot be root).
    ///
    /// Must be called while the process has one thread (before any async runtime starts).
    pub fn start(dir: &Path, sandbox: Option<ChildSandbox>) -> Result<Zygote, Error> {
        Ok(Zygote {
            modules: Forker::start(dir.join("zygote.sock"), sandbox, false)?,
            scripts: Forker::start(dir.join("zygote-scripts.sock"), sandbox, true)?,
        })
    }

    /// The zygotes' process ids.
    pub fn pids(&self) -> [libc::pid_t; 2] {
        [self.modules.pid, self.scripts.pid]
    }

    /// Runs `job` in a fresh sandboxed child and returns its result document.
    pub async fn run(&self, job: &Job) -> Result<ResultDocument, Error> {
        match job.script_media_type {
            Some(_) => self.scripts.run(job).await,
            None => self.modules.run(job).await,
        }
    }
}

/// The zygote's loop: accept, fork a supervisor, repeat. Never returns.
fn serve(
    listener: UnixListener,
    sandbox: Option<ChildSandbox>,
    agent: libc::pid_t,
    warm: bool,
) -> ! {
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
    let sandbox = sandbox.map(enter_empty_network);
    let warm = match warm {
        true => WarmInterpreters::load(&interpreter::interpreters_dir()),
        false => WarmInterpreters { loaded: Vec::new() },
    };
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
            supervise(connection, sandbox, &warm);
            // SAFETY: leaving without running the zygote's destructors or atexit handlers.
            unsafe { libc::_exit(0) }
        }
        drop(connection);
    }
}

/// Moves the zygote, and with it every supervisor and run it forks, into one new network
/// namespace with nothing in it (a loopback that is down), and returns `sandbox` without its
/// own per-run namespace. A namespace per run cost its creation on the run's path and its
/// teardown in kernel workers (a few ms of CPU each, in bursts); runs sharing an empty one
/// cannot reach each other through it either, since the seccomp filter refuses every socket.
/// Should the namespace not be made, each run makes its own as before.
fn enter_empty_network(sandbox: ChildSandbox) -> ChildSandbox {
    if !sandbox.isolate_network {
        return sandbox;
    }
    // SAFETY: a namespace change of this single-threaded process; the result is checked.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return sandbox;
    }
    ChildSandbox {
        isolate_network: false,
        ..sandbox
    }
}

/// A result document for a run that could not start.
fn internal_error(message: String) -> ResultDocument {
    let mut document = ResultDocument::new(
        wasmfn_execution::Reason::InternalError,
        wasmfn_execution::engine::runtime_info(),
    );
    document.set_message(message);
    document
}

/// The interpreter modules, loaded (with their AOT forms) once when the zygote starts: every
/// supervisor it forks inherits them, so a script's run loads nothing (CPython's load is most of
/// a cold Python run's time).
struct WarmInterpreters {
    loaded: Vec<(ScriptLanguage, PathBuf, PreparedModule)>,
}

impl WarmInterpreters {
    fn load(dir: &Path) -> Self {
        let loaded = [ScriptLanguage::Python, ScriptLanguage::JavaScript]
            .into_iter()
            .filter_map(|language| {
                let module = interpreter::interpreter_module(dir, language);
                let mut request = RunRequest::command(ModuleSource::Path(module.clone()));
                let aot = wasmfn_execution::aot::default_path_for(&module);
                request.aot = aot.is_file().then_some(aot);
                // Only an AOT-loaded interpreter is worth keeping; without one each run loads it.
                let prepared = prepare(&request).ok().filter(|p| p.runtime.aot)?;
                Some((language, module, prepared))
            })
            .collect();
        WarmInterpreters { loaded }
    }

    /// The loaded interpreter `request` runs, ready for its limits.
    fn for_request(&self, request: &RunRequest) -> Option<PreparedModule> {
        let ModuleSource::Path(path) = &request.module else {
            return None;
        };
        let (_, _, prepared) = self
            .loaded
            .iter()
            .find(|(_, module, _)| module == path && request.entry == Entry::Command)?;
        prepared.with_limits(&request.limits).ok()
    }
}

/// One supervisor: read the job, run it, answer.
fn supervise(mut connection: UnixStream, sandbox: Option<ChildSandbox>, warm: &WarmInterpreters) {
    let mut request = Vec::new();
    if connection.read_to_end(&mut request).is_err() {
        return;
    }
    let document = match serde_json::from_slice::<Job>(&request) {
        Ok(job) => {
            let isolation = sandbox.map_or(Isolation::Fork, Isolation::Sandboxed);
            match job.resolve() {
                Ok((request, _staged)) => match warm.for_request(&request) {
                    Some(prepared) => {
                        let started = std::time::Instant::now();
                        execute_prepared(&prepared, &request, isolation, &mut DiscardSink, started)
                            .document
                    }
                    None => execute(&request, isolation, &mut DiscardSink).document,
                },
                Err(error) => internal_error(format!("the agent cannot stage the script: {error}")),
            }
        }
        Err(error) => internal_error(format!("the agent sent a job that does not parse: {error}")),
    };
    let _ = connection.write_all(document.to_json().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_stdin_crosses_to_the_zygote_as_base64_and_comes_back_byte_for_byte() {
        let stdin: Vec<u8> = (0..=255).cycle().take(3000).collect();
        let job = Job {
            module: "/cache/m.wasm".into(),
            aot: None,
            script_media_type: None,
            settings: RunSettings::default(),
            stdin: stdin.clone(),
        };
        let wire = serde_json::to_value(&job).expect("serialises");
        let text = wire["stdin"].as_str().expect("stdin is one string");
        assert!(text.len() < stdin.len() * 4 / 3 + 4, "{} bytes", text.len());
        let back: Job = serde_json::from_value(wire).expect("parses");
        assert_eq!(back.stdin, stdin);
        let without: Job = serde_json::from_value(serde_json::json!({
            "module": "/cache/m.wasm", "aot": null, "settings": {}
        }))
        .expect("stdin may be left out");
        assert!(without.stdin.is_empty());
    }

    /// The interfaces of the calling process's network namespace and whether any is up.
    fn interfaces() -> (Vec<String>, bool) {
        let dev = std::fs::read_to_string("/proc/self/net/dev").expect("/proc/self/net/dev");
        let names: Vec<String> = dev
            .lines()
            .skip(2)
            .filter_map(|line| line.split(':').next())
            .map(|name| name.trim().to_owned())
            .collect();
        // SAFETY: a socket of our own to ask for interface flags; closed below.
        let probe = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(probe >= 0, "a probe socket");
        let up = names.iter().any(|name| {
            // SAFETY: an all-zero ifreq is valid; the name is copied in within its bounds.
            let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
            for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes().take(15)) {
                *slot = byte as libc::c_char;
            }
            // SAFETY: SIOCGIFFLAGS fills the flags of the named interface into `request`.
            let asked = unsafe { libc::ioctl(probe, libc::SIOCGIFFLAGS, &mut request) };
            // SAFETY: the union's flags member is the one SIOCGIFFLAGS sets.
            asked == 0
                && unsafe { request.ifr_ifru.ifru_flags } & libc::IFF_UP as libc::c_short != 0
        });
        // SAFETY: closing our own socket.
        unsafe { libc::close(probe) };
        (names, up)
    }

    #[test]
    fn the_zygote_and_every_run_it_forks_share_one_network_namespace_with_nothing_up() {
        let outside = std::fs::read_link("/proc/self/ns/net").expect("own namespace");
        // SAFETY: the child only reads files and exits; it never returns into the test harness.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let sandbox = enter_empty_network(ChildSandbox::for_user(61000, 61000));
            let inside = std::fs::read_link("/proc/self/ns/net").expect("own namespace");
            let (names, up) = interfaces();
            // A run forked from here (as the zygote's supervisors and runs are) inherits it.
            // SAFETY: as above.
            let run = unsafe { libc::fork() };
            if run == 0 {
                let same = std::fs::read_link("/proc/self/ns/net").ok() == Some(inside.clone());
                // SAFETY: leaving the forked run without the harness's destructors.
                unsafe { libc::_exit(if same { 0 } else { 1 }) }
            }
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(run, &mut status, 0) };
            let code = if inside == outside {
                10
            } else if names != ["lo"] || up {
                11
            } else if sandbox.isolate_network {
                12
            } else if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                13
            } else {
                0
            };
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "the probe child died: {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "10: no new namespace, 11: an interface other than a down loopback, 12: runs would \
             still make their own, 13: a forked run is elsewhere"
        );
    }
}
