//! The agent's HTTP/2-over-mutual-TLS server: the routes of [`wasmfn_agent_protocol`], the
//! capacity limit with its queue, and the module cache.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Semaphore;
use tracing::{info, warn};
use wasmfn_agent_protocol::tls::Identity;
use wasmfn_agent_protocol::{
    AgentRefusal, AgentStatus, RunAssignment, MAX_BODY_BYTES, MODULES_PATH, MODULE_MISSING,
    RUNS_PATH, SCRIPTS_PATH, STATUS_PATH,
};
use wasmfn_execution::interpreter::ScriptLanguage;
use wasmfn_execution::module_cache::{CachedModule, ModuleCache};
use wasmfn_execution::result::trace::{random_span_id, SpanRecord, TraceParent};
use wasmfn_execution::Error as CacheError;
use wasmfn_execution::ResultDocument;

use crate::metrics::{Metrics, ReasonLabel};
use crate::zygote::{Job, Zygote};
use crate::{AgentConfig, Error};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// [`AgentRefusal::reason`] when the same attempt is already running here.
pub const ALREADY_RUNNING: &str = "AlreadyRunning";
/// [`AgentRefusal::reason`] when the run's supervisor died without a result (the attempt is lost).
pub const RUN_LOST: &str = "RunLost";

/// An AOT compile this process started (each digest is tried once).
#[derive(Debug)]
struct Compile {
    started: Instant,
    /// `Some` once the compile ended: the AOT form it produced, if any.
    done: tokio::sync::watch::Receiver<Option<Option<PathBuf>>>,
}

/// The agent's shared state.
#[derive(Debug)]
pub struct Agent {
    cache: Arc<ModuleCache>,
    zygote: Zygote,
    slots: Semaphore,
    capacity: u32,
    running: Mutex<HashSet<(String, i32)>>,
    /// Digests whose AOT compile this process has started (each is tried once).
    compiling: Mutex<HashMap<String, Compile>>,
    /// How long adding a module waits for its AOT compile. Small modules compile well within
    /// it and run native code from their first run; a large one (a Go module takes about a
    /// minute) runs interpreted until its compile finishes, rather than holding its first run
    /// past its timeout.
    aot_wait: Duration,
    metrics: Metrics,
}

/// Serves until the process is killed.
pub async fn serve(config: AgentConfig, zygote: Zygote) -> Result<(), Error> {
    let tls = Identity::read_dir(&config.tls_dir)?.server_config()?;
    // Without its zygotes the agent can run nothing: exit, so that the kubelet restarts it.
    for zygote_pid in zygote.pids() {
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(zygote_pid, &mut status, 0) };
            tracing::error!(status, "a zygote exited; the agent stops");
            std::process::exit(70);
        });
    }
    let agent = Arc::new(Agent::new(&config, zygote)?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(std::path::Path::new(&config.listen.to_string()), e))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io(std::path::Path::new("SIGTERM handler"), e))?;
    // The bound address, so that `--listen 127.0.0.1:0` says which port it got.
    let listen = listener.local_addr().unwrap_or(config.listen);
    info!(%listen, capacity = config.capacity, "agent ready");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = terminate.recv() => drain(&agent).await,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let agent = agent.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                // A bare TCP connect (the kubelet's probe) ends before any TLS.
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    tracing::debug!(%peer, "a connection closed before its TLS handshake");
                    return;
                }
                Ok(Err(error)) => {
                    warn!(%peer, %error, "refused a connection: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    warn!(%peer, "refused a connection: TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let agent = agent.clone();
                async move { Ok::<_, std::convert::Infallible>(agent.handle(request).await) }
            });
            if let Err(error) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                info!(%peer, %error, "connection ended");
            }
        });
    }
}

/// How long a stopping agent waits for the runs it took (its pod's grace period is 30 s).
const DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// On SIGTERM: takes no more connections, lets the runs it took (running or queued) answer,
/// for at most [`DRAIN_LIMIT`], and exits 0. Runs still going then are lost to the operator
/// (`AgentLost`, retried) when the process ends. As PID 1 of its container the agent would
/// otherwise ignore SIGTERM and be killed only at the end of the grace period.
async fn drain(agent: &Agent) -> ! {
    let deadline = Instant::now() + DRAIN_LIMIT;
    info!(
        runs = agent.runs_taken(),
        "SIGTERM: finishing the runs taken, then stopping"
    );
    while agent.runs_taken() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the answers just written a moment to leave on their connections.
    tokio::time::sleep(Duration::from_millis(100)).await;
    info!(left = agent.runs_taken(), "agent stopped");
    // The zygote and any run left die with this process (their parent-death signal).
    std::process::exit(0)
}

impl Agent {
    /// Runs taken and not answered yet (running or waiting for a slot).
    fn runs_taken(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The state for `config`, running jobs through `zygote`.
    pub fn new(config: &AgentConfig, zygote: Zygote) -> Result<Self, Error> {
        let cache = ModuleCache::open(&config.cache_dir, config.cache_max_bytes)?;
        // Run children run as another user: they must not read other tenants' modules.
        restrict_to_owner(&config.cache_dir)?;
        let capacity = config.capacity.max(1);
        Ok(Agent {
            cache: Arc::new(cache),
            zygote,
            slots: Semaphore::new(capacity as usize),
            capacity,
            running: Mutex::new(HashSet::new()),
            compiling: Mutex::new(HashMap::new()),
            aot_wait: config.aot_wait,
            metrics: Metrics::default(),
        })
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        match (method, path.as_str()) {
            (Method::POST, RUNS_PATH) => match body(request).await {
                Ok(bytes) => self.run(&bytes).await,
                Err(response) => response,
            },
            (Method::PUT, path) if path.starts_with(MODULES_PATH) => {
                let digest = path[MODULES_PATH.len()..].to_owned();
                match body(request).await {
                    Ok(bytes) => self.add_module(digest, bytes).await,
                    Err(response) => response,
                }
            }
            (Method::PUT, path) if path.starts_with(SCRIPTS_PATH) => {
                let digest = path[SCRIPTS_PATH.len()..].to_owned();
                let media_type = request
                    .headers()
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if ScriptLanguage::from_media_type(&media_type).is_none() {
                    return refuse(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "NotAScript",
                        format!("{media_type:?} is not a script type this agent runs"),
                    );
                }
                match body(request).await {
                    Ok(bytes) => self.add_script(digest, bytes).await,
                    Err(response) => response,
                }
            }
            (Method::GET, STATUS_PATH) => json(StatusCode::OK, &self.status()),
            (Method::GET, "/metrics") => Response::new(Full::new(self.metrics.render().into())),
            _ => refuse(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no route {path}"),
            ),
        }
    }

    fn status(&self) -> AgentStatus {
        let count = |gauge: &prometheus_client::metrics::gauge::Gauge| {
            u32::try_from(gauge.get()).unwrap_or(0)
        };
        AgentStatus {
            capacity: self.capacity,
            in_flight: count(&self.metrics.in_flight),
            queued: count(&self.metrics.queued),
            cached_modules: self
                .cache
                .len()
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            cache_bytes: self.cache.size().unwrap_or(0),
        }
    }

    async fn run(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let received = Instant::now();
        let received_at = SystemTime::now();
        let assignment: RunAssignment = match serde_json::from_slice(body) {
            Ok(assignment) => assignment,
            Err(error) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("run assignment: {error}"),
                )
            }
        };
        let stdin = match &assignment.stdin_base64 {
            Some(text) => match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => bytes,
                Err(error) => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("stdinBase64: {error}"),
                    )
                }
            },
            None => Vec::new(),
        };
        let cached = match self.cache.lookup(&assignment.module_digest) {
            Ok(Some(cached)) => cached,
            Ok(None) => {
                self.metrics.cache_misses.inc();
                return refuse(
                    StatusCode::CONFLICT,
                    MODULE_MISSING,
                    format!("{} is not cached here", assignment.module_digest),
                );
            }
            Err(error) => {
                return refuse(StatusCode::BAD_REQUEST, "BadDigest", error.to_string());
            }
        };
        if let Some(media_type) = &assignment.script_media_type {
            if ScriptLanguage::from_media_type(media_type).is_none() {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "NotAScript",
                    format!("{media_type:?} is not a script type this agent runs"),
                );
            }
        }
        self.metrics.cache_hits.inc();
        let mut cached = cached;
        // A script has no AOT form of its own: its interpreter's ships with the agent.
        if cached.aot.is_none() && assignment.script_media_type.is_none() {
            // Still compiling (a run arriving while its module was being sent), or added by an
            // earlier process whose compile did not finish.
            cached.aot = self.await_aot(&assignment.module_digest).await;
        }
        let key = (assignment.uid.clone(), assignment.attempt);
        let Some(_running) = RunningGuard::claim(&self.running, key) else {
            return refuse(
                StatusCode::CONFLICT,
                ALREADY_RUNNING,
                format!(
                    "attempt {} of {}/{} is already running here",
                    assignment.attempt, assignment.namespace, assignment.execution
                ),
            );
        };
        self.metrics.queued.inc();
        let permit = self.slots.acquire().await;
        self.metrics.queued.dec();
        let Ok(_permit) = permit else {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "ShuttingDown",
                "closed".into(),
            );
        };
        let queued_for = received.elapsed();
        self.metrics.in_flight.inc();
        let job = Job {
            module: cached.module,
            aot: cached.aot,
            script_media_type: assignment.script_media_type.clone(),
            settings: assignment.settings.clone(),
            stdin,
        };
        let started = SystemTime::now();
        let outcome = self.zygote.run(&job).await;
        self.metrics.in_flight.dec();
        let mut document = match outcome {
            Ok(document) => document,
            Err(error) => {
                warn!(execution = %assignment.execution, attempt = assignment.attempt, %error, "run lost");
                return refuse(StatusCode::SERVICE_UNAVAILABLE, RUN_LOST, error.to_string());
            }
        };
        self.metrics
            .runs
            .get_or_create(&ReasonLabel {
                reason: format!("{:?}", document.reason),
            })
            .inc();
        if let Some(parent) = assignment
            .settings
            .traceparent
            .as_deref()
            .and_then(|t| TraceParent::parse(t).ok())
        {
            attach_agent_trace(&mut document, &parent, received_at, queued_for, started);
        }
        info!(
            namespace = %assignment.namespace,
            execution = %assignment.execution,
            attempt = assignment.attempt,
            reason = ?document.reason,
            queued_ms = queued_for.as_millis() as u64,
            "ran"
        );
        json(StatusCode::OK, &document)
    }

    /// Starts compiling the AOT form of `digest` in the background unless this process already
    /// did, then waits for it to finish, but not past `aot_wait` after it started; returns the
    /// AOT form when it is ready by then.
    async fn await_aot(&self, digest: &str) -> Option<PathBuf> {
        let (started, mut done) = {
            let mut compiling = self.compiling.lock().unwrap_or_else(|e| e.into_inner());
            let compile = compiling.entry(digest.to_owned()).or_insert_with(|| {
                let (finished, done) = tokio::sync::watch::channel(None);
                let cache = self.cache.clone();
                let digest = digest.to_owned();
                tokio::task::spawn_blocking(move || {
                    let aot = cache.compile_aot(&digest).unwrap_or_else(|error| {
                        warn!(%digest, %error, "AOT compile failed; the module runs interpreted");
                        None
                    });
                    let _ = finished.send(Some(aot));
                });
                Compile {
                    started: Instant::now(),
                    done,
                }
            });
            (compile.started, compile.done.clone())
        };
        let left = self.aot_wait.saturating_sub(started.elapsed());
        let _ = tokio::time::timeout(left, done.wait_for(Option::is_some)).await;
        let finished = done.borrow().clone();
        finished.flatten()
    }

    async fn add_script(&self, digest: String, bytes: Bytes) -> Response<Full<Bytes>> {
        let cache = self.cache.clone();
        let added =
            tokio::task::spawn_blocking(move || cache.add_script(&digest, || Ok(bytes.to_vec())))
                .await;
        // A script has no AOT form of its own: its interpreter's ships with the agent.
        self.stored(added, "ScriptRefused", None).await
    }

    async fn add_module(&self, digest: String, bytes: Bytes) -> Response<Full<Bytes>> {
        let cache = self.cache.clone();
        let for_cache = digest.clone();
        let added =
            tokio::task::spawn_blocking(move || cache.add(&for_cache, || Ok(bytes.to_vec()))).await;
        self.stored(added, "ModuleRefused", Some(&digest)).await
    }

    /// The answer to a module or script upload; a new module's AOT compile (`compile`) is
    /// awaited, within the AOT wait, before answering.
    async fn stored(
        &self,
        added: Result<Result<CachedModule, CacheError>, tokio::task::JoinError>,
        refused: &str,
        compile: Option<&str>,
    ) -> Response<Full<Bytes>> {
        match added {
            Ok(Ok(cached)) => {
                if cached.added {
                    self.metrics.modules_added.inc();
                }
                if let (Some(digest), None) = (compile, &cached.aot) {
                    self.await_aot(digest).await;
                }
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default()
            }
            Ok(Err(error)) => refuse(StatusCode::UNPROCESSABLE_ENTITY, refused, error.to_string()),
            Err(error) => refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                error.to_string(),
            ),
        }
    }
}

/// The run's spans under the operator's attempt span: the core's run span and phases, and
/// `queued` (from the request's arrival until a slot was free).
fn attach_agent_trace(
    document: &mut ResultDocument,
    parent: &TraceParent,
    received: SystemTime,
    queued_for: Duration,
    started: SystemTime,
) {
    document.attach_trace(parent, "wasmfn-agent", started);
    if let Some(trace) = document.trace.as_mut() {
        let nanos = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        let start = nanos(received);
        trace.spans.push(SpanRecord {
            name: "queued".into(),
            span_id: random_span_id()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            parent_span_id: parent.span_id.iter().map(|b| format!("{b:02x}")).collect(),
            start_unix_nano: start,
            end_unix_nano: start.saturating_add(u64::try_from(queued_for.as_nanos()).unwrap_or(0)),
        });
    }
}

/// Removes `(uid, attempt)` from the running set when the run ends, however it ends.
struct RunningGuard<'a> {
    set: &'a Mutex<HashSet<(String, i32)>>,
    key: (String, i32),
}

impl<'a> RunningGuard<'a> {
    fn claim(set: &'a Mutex<HashSet<(String, i32)>>, key: (String, i32)) -> Option<Self> {
        let mut running = set.lock().unwrap_or_else(|e| e.into_inner());
        running
            .insert(key.clone())
            .then_some(RunningGuard { set, key })
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut running = self.set.lock().unwrap_or_else(|e| e.into_inner());
        running.remove(&self.key);
    }
}

async fn body(request: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|error| {
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BadRequest",
                format!("request body: {error}"),
            )
        })
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

fn refuse(status: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    json(
        status,
        &AgentRefusal {
            reason: reason.to_owned(),
            message,
        },
    )
}

fn restrict_to_owner(dir: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir, e))
}
