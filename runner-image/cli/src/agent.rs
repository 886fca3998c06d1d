//! `wasmfn agent`: the warm agent's command line (see the `wasmfn-agent` crate).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use wasmfn_execution::sandbox::ChildSandbox;

/// Options of `wasmfn agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// Address to listen on for the operator.
    #[arg(long, env = "WASMFN_AGENT_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Directory with `ca.crt`, `tls.crt` and `tls.key` (mutual TLS with the operator).
    #[arg(
        long,
        env = "WASMFN_AGENT_TLS_DIR",
        default_value = "/etc/wasmfn/agent-tls"
    )]
    tls_dir: PathBuf,
    /// Node-local directory of the module cache (survives restarts).
    #[arg(
        long,
        env = "WASMFN_AGENT_CACHE_DIR",
        default_value = "/var/lib/wasmfn/agent"
    )]
    cache_dir: PathBuf,
    /// Most bytes the module cache keeps (least recently used entries go first).
    #[arg(long, env = "WASMFN_AGENT_CACHE_MAX_BYTES", default_value_t = 2 << 30)]
    cache_max_bytes: u64,
    /// Runs executed at once; 0 means one per CPU this process may use.
    #[arg(long, env = "WASMFN_AGENT_CAPACITY", default_value_t = 0)]
    capacity: u32,
    /// How long (ms) adding a module waits for its AOT compile; a longer compile goes on in the
    /// background while the module runs interpreted.
    #[arg(long, env = "WASMFN_AGENT_AOT_WAIT_MS", default_value_t = 5000)]
    aot_wait_ms: u64,
    /// The unprivileged uid (and gid) run children switch to; must not be the agent's own.
    #[arg(long, env = "WASMFN_AGENT_RUN_UID", default_value_t = 61000)]
    run_uid: u32,
    /// Run children without the sandbox (only for trying the agent as a non-root user).
    #[arg(long)]
    no_sandbox: bool,
}

/// Runs the agent until killed.
pub(crate) fn agent(args: AgentArgs) -> Result<i32> {
    let capacity = match args.capacity {
        0 => wasmfn_agent::available_cpus(),
        n => n,
    };
    // SAFETY: reading this process's own ids.
    let own_uid = unsafe { libc::geteuid() };
    anyhow::ensure!(
        args.no_sandbox || args.run_uid != own_uid,
        "--run-uid {} is the agent's own uid: run children need a user of their own",
        args.run_uid
    );
    let config = wasmfn_agent::AgentConfig {
        listen: args.listen,
        tls_dir: args.tls_dir,
        cache_dir: args.cache_dir,
        cache_max_bytes: args.cache_max_bytes,
        capacity,
        aot_wait: std::time::Duration::from_millis(args.aot_wait_ms),
        sandbox: (!args.no_sandbox).then(|| ChildSandbox::for_user(args.run_uid, args.run_uid)),
    };
    wasmfn_agent::init_logging();
    wasmfn_agent::run(config).context("agent")?;
    Ok(0)
}

/// Options of `wasmfn agent-status`.
#[derive(Debug, Args)]
pub(crate) struct AgentStatusArgs {
    /// The agent's `ip:port`.
    #[arg(long)]
    address: String,
    /// Directory with the client's `ca.crt`, `tls.crt` and `tls.key`; without it the request
    /// goes out with no client certificate (and the agent refuses it).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

/// Asks an agent for its status and prints it (JSON); exit 1 when the agent cannot be asked.
pub(crate) fn agent_status(args: AgentStatusArgs) -> Result<i32> {
    use wasmfn_agent_protocol::client::AgentClient;
    let tls = match &args.tls_dir {
        Some(dir) => wasmfn_agent_protocol::tls::Identity::read_dir(dir)?.client_config()?,
        None => wasmfn_agent_protocol::tls::anonymous_client_config(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = AgentClient::new(args.address, tls);
    match runtime.block_on(client.status()) {
        Ok(status) => {
            println!("{}", serde_json::to_string(&status)?);
            Ok(0)
        }
        Err(error) => {
            eprintln!("wasmfn: {error}");
            Ok(1)
        }
    }
}
