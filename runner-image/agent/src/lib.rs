//! The warm agent (`wasmfn agent`): a long-running executor on a WasmEdge node. The operator
//! hands it runs over mutual TLS ([`wasmfn_agent_protocol`]); it keeps verified, AOT-compiled
//! modules in a bounded on-disk cache by digest, runs at most `capacity` runs at once (the rest
//! wait in its queue), each in a sandboxed child forked by its [`zygote`], and answers with the
//! result document. It holds no Kubernetes credentials and writes nothing to the API: the
//! operator records results.
//!
//! Modules: [`zygote`] (the single-threaded forker), [`server`] (routes, capacity, the cache),
//! [`metrics`] (Prometheus counters and gauges).

pub mod metrics;
pub mod server;
pub mod zygote;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use wasmfn_execution::sandbox::ChildSandbox;

/// Errors of the agent's own operations (a run's problems end up in its result document).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or socket.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The zygote or a run's supervisor failed.
    #[error("zygote: {0}")]
    Zygote(String),
    /// The TLS material is unusable.
    #[error(transparent)]
    Protocol(#[from] wasmfn_agent_protocol::Error),
    /// The module cache failed.
    #[error(transparent)]
    Cache(#[from] wasmfn_execution::Error),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where it listens for the operator.
    pub listen: SocketAddr,
    /// The directory holding `ca.crt`, `tls.crt` and `tls.key`.
    pub tls_dir: PathBuf,
    /// The module cache's directory (a node-local path that survives restarts).
    pub cache_dir: PathBuf,
    /// The most bytes the cache may hold.
    pub cache_max_bytes: u64,
    /// Runs executed at once.
    pub capacity: u32,
    /// How long adding a module waits for its AOT compile before the module runs interpreted
    /// (the compile goes on in the background).
    pub aot_wait: std::time::Duration,
    /// How run children are confined (`None` only where the agent cannot be root, in tests).
    pub sandbox: Option<ChildSandbox>,
}

/// The number of CPUs this process may use (the default capacity).
pub fn available_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1)
}

/// Logs as JSON lines on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the agent until it is killed. Must be called while the process has one thread: the
/// zygote is forked first, then the async runtime starts.
pub fn run(config: AgentConfig) -> Result<(), Error> {
    std::fs::create_dir_all(&config.cache_dir).map_err(|e| Error::io(&config.cache_dir, e))?;
    let state_dir = config.cache_dir.join(".agent");
    std::fs::create_dir_all(&state_dir).map_err(|e| Error::io(&state_dir, e))?;
    let zygote = zygote::Zygote::start(&state_dir, config.sandbox)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(Path::new("tokio runtime"), e))?;
    runtime.block_on(server::serve(config, zygote))
}
