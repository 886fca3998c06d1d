//! `wasmfn-node-installer`: makes a Kubernetes node a WasmEdge node (or undoes it). Runs on the
//! node with the host's root filesystem mounted (the DaemonSet in `daemonset.yaml`):
//!
//! 1. copies the payload — `containerd-shim-wasmfn-v1` and the libraries it links — into a
//!    private directory on the host (`/opt/wasmfn/{bin,lib}`), and checks the installed shim
//!    starts there;
//! 2. registers runtime handler `wasmfn` → `io.containerd.wasmfn.v1` in containerd's config
//!    (schema 1, 2 or 3), keeping a backup, with `runtime_path` naming the installed shim;
//! 3. restarts containerd when its config changed (or an earlier restart failed, or the running
//!    containerd lacks the handler), and waits until containerd's CRI reports the handler loaded;
//! 4. labels the node `wasmfn.dev/wasmedge=true` and `wasmfn=provisioned` — only after 3.
//!
//! Every step is idempotent: a second run changes nothing and says so.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use wasmfn_node_installer::containerd_config::{
    self, ExistingHandler, Handler, SchemaVersion, HANDLER_NAME, RETIRED_HANDLER_NAMES,
};
use wasmfn_node_installer::cri::{self, HandlerState};
use wasmfn_node_installer::host::{self, Host};
use wasmfn_node_installer::{node_labels, payload};

const FIELD_MANAGER: &str = "wasmfn-node-installer";
const DEFAULT_RESTART: &str =
    "nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart containerd";

#[derive(Parser)]
#[command(name = "wasmfn-node-installer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the shim, register the `wasmfn` handler, restart containerd if its config
    /// changed, label the node.
    Install(NodeArgs),
    /// Undo `install`: remove the labels, the handler (restarting containerd) and the files.
    Uninstall(NodeArgs),
    /// Stage a payload (the shim and the libraries `ldd` finds for it, glibc excepted) into a
    /// directory; used when building the installer image.
    StagePayload {
        #[arg(long)]
        shim: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct NodeArgs {
    /// Where the host's root filesystem is mounted. All other paths are host paths.
    #[arg(long, env = "HOST_ROOT", default_value = "/host")]
    host_root: PathBuf,
    /// Host directory the shim (`bin/`) and its libraries (`lib/`) are installed into.
    #[arg(long, default_value = "/opt/wasmfn")]
    install_dir: PathBuf,
    /// The payload to install (in the installer's own filesystem).
    #[arg(long, default_value = "/usr/lib/wasmfn-node-installer/payload")]
    payload: PathBuf,
    /// containerd's config file on the host.
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    containerd_config: PathBuf,
    /// Schema version for a config file that is missing or empty (2 is read by containerd 1.6,
    /// 1.7 and 2.x; 3 only by 2.x).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i64).range(1..=3))]
    config_version_if_empty: i64,
    /// Replace a same-named handler of another runtime type instead of failing.
    #[arg(long)]
    take_over_handler: bool,
    /// Runtime handler name (the RuntimeClass `handler`).
    #[arg(long, default_value = HANDLER_NAME)]
    handler: String,
    /// Shell command that restarts containerd after its config changed; empty: do not restart
    /// (the change then takes effect at containerd's next start).
    #[arg(long, default_value = DEFAULT_RESTART)]
    restart_command: String,
    /// containerd's socket on the host. After a restart the installer asks the CRI there which
    /// runtime handlers containerd has loaded, and labels the node only once ours is among them.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    cri_socket: PathBuf,
    /// How long to wait after a restart for the CRI to show the handler before the run fails.
    #[arg(long, default_value_t = 120)]
    cri_wait_seconds: u64,
    /// How to check that the installed shim starts: `host` runs it chrooted into the host root
    /// (the host's own C library), `direct` runs it from the installer's filesystem.
    #[arg(long, value_enum, default_value_t = Verify::Host)]
    verify: Verify,
    /// The node to label (the DaemonSet passes `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Do not touch the node's labels (running outside a cluster).
    #[arg(long)]
    no_label: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Verify {
    Host,
    Direct,
    None,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Install(args) => run_async(install(args)),
        Cmd::Uninstall(args) => run_async(uninstall(args)),
        Cmd::StagePayload { shim, out } => stage(&shim, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmfn-node-installer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_async(task: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(task)
}

fn stage(shim: &Path, out: &Path) -> Result<()> {
    let libraries = payload::stage(shim, out)?;
    println!(
        "staged {} and {} libraries into {}: {}",
        payload::SHIM_BINARY,
        libraries.len(),
        out.display(),
        libraries.join(" ")
    );
    Ok(())
}

impl NodeArgs {
    fn host(&self) -> Host {
        Host {
            root: self.host_root.clone(),
        }
    }

    /// The installed shim, as a host path.
    fn shim_host_path(&self) -> PathBuf {
        self.install_dir.join("bin").join(payload::SHIM_BINARY)
    }

    fn handler(&self) -> Result<Handler> {
        let path = self.shim_host_path();
        let path = path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        Ok(Handler {
            name: self.handler.clone(),
            runtime_type: containerd_config::RUNTIME_TYPE.to_string(),
            runtime_path: Some(path.to_string()),
        })
    }

    fn node_name(&self) -> Result<Option<&str>> {
        match (&self.node_name, self.no_label) {
            (_, true) => Ok(None),
            (Some(name), false) => Ok(Some(name)),
            (None, false) => {
                bail!("no node to label: pass --node-name (NODE_NAME) or --no-label")
            }
        }
    }
}

async fn install(args: NodeArgs) -> Result<()> {
    let node = args.node_name()?;
    let host = args.host();
    let mut changes = 0;

    let target = host.path(&args.install_dir);
    let pending = target.join(RESTART_PENDING);
    let installed = payload::install(&args.payload, &target)?;
    println!(
        "files: {} written, {} unchanged, {} removed under {}",
        installed.written.len(),
        installed.unchanged,
        installed.removed.len(),
        args.install_dir.display()
    );
    changes += installed.written.len() + installed.removed.len();
    verify_shim(&args)?;

    let config_path = host.resolve(&args.containerd_config)?;
    let old = host::read_optional(&config_path)?;
    let version_if_empty = SchemaVersion::from_number(args.config_version_if_empty)
        .context("--config-version-if-empty")?;
    let existing = if args.take_over_handler {
        ExistingHandler::TakeOver
    } else {
        ExistingHandler::Refuse
    };
    let edit = containerd_config::add_handler(
        old.as_deref().unwrap_or(""),
        &args.handler()?,
        version_if_empty,
        existing,
    )
    .with_context(|| format!("containerd config {}", args.containerd_config.display()))?;
    let (retired, stale_labels) = containerd_config::remove_retired_handlers(
        &edit.text,
        &args.handler,
        RETIRED_HANDLER_NAMES,
    )
    .with_context(|| format!("containerd config {}", args.containerd_config.display()))?;
    if retired.changed {
        println!(
            "containerd config {}: removed this installer's earlier handler name(s) {}",
            args.containerd_config.display(),
            stale_labels.join(", ")
        );
    }
    let edit = containerd_config::Edit {
        changed: edit.changed || retired.changed,
        text: retired.text,
        version: edit.version,
    };
    let restart_pending = pending.exists();
    if edit.changed {
        let backup = host::replace_with_backup(&config_path, old.as_deref(), &edit.text)?;
        println!(
            "containerd config {} (schema {}): handler {} registered{}",
            args.containerd_config.display(),
            edit.version.map(SchemaVersion::number).unwrap_or_default(),
            args.handler,
            backup
                .map(|b| format!(", previous version kept as {}", b.display()))
                .unwrap_or_default()
        );
        changes += 1;
    } else if restart_pending {
        println!(
            "containerd config {}: handler {} registered, but containerd was not restarted since \
             (an earlier restart failed); restarting it now",
            args.containerd_config.display(),
            args.handler
        );
        changes += 1;
    } else {
        println!(
            "containerd config {}: handler {} already registered, unchanged",
            args.containerd_config.display(),
            args.handler
        );
    }
    if edit.changed || restart_pending {
        restart_until_loaded(&args, &pending).await?;
    } else {
        match handler_state(&args).await? {
            HandlerState::Loaded => println!(
                "containerd has loaded handler {} (CRI status); no restart",
                args.handler
            ),
            other => {
                // The file is right but the running containerd predates it: an earlier run's
                // restart command exited 0 without restarting, or someone restored an old config
                // and restarted by hand.
                println!(
                    "containerd runs without handler {} ({}) although its config has it; \
                     restarting it",
                    args.handler,
                    describe(&other)
                );
                changes += 1;
                restart_until_loaded(&args, &pending).await?;
            }
        }
    }

    if let Some(node) = node {
        if label(node, &args.handler, &stale_labels).await? {
            println!("node {node}: labelled {}", labels_text(&args.handler));
            changes += 1;
        } else {
            println!(
                "node {node}: already labelled {}",
                labels_text(&args.handler)
            );
        }
    }
    if changes == 0 {
        println!("nothing changed: the node was already set up");
    }
    Ok(())
}

async fn uninstall(args: NodeArgs) -> Result<()> {
    let node = args.node_name()?;
    let host = args.host();
    // Labels first, so nothing new is scheduled here while the handler goes away.
    if let Some(node) = node {
        if unlabel(node, &args.handler).await? {
            println!("node {node}: labels {} removed", labels_text(&args.handler));
        } else {
            println!("node {node}: had no installer labels");
        }
    }
    let config_path = host.resolve(&args.containerd_config)?;
    let old = host::read_optional(&config_path)?;
    match containerd_config::remove_handler(old.as_deref().unwrap_or(""), &args.handler()?) {
        Ok(edit) if edit.changed => {
            let backup = host::replace_with_backup(&config_path, old.as_deref(), &edit.text)?;
            println!(
                "containerd config {}: handler {} removed{}",
                args.containerd_config.display(),
                args.handler,
                backup
                    .map(|b| format!(", previous version kept as {}", b.display()))
                    .unwrap_or_default()
            );
            restart_containerd(&args)?;
        }
        Ok(_) => println!(
            "containerd config {}: no handler {} to remove",
            args.containerd_config.display(),
            args.handler
        ),
        Err(e @ containerd_config::Error::HandlerTaken { .. }) => {
            println!(
                "containerd config {}: {e}",
                args.containerd_config.display()
            )
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("containerd config {}", args.containerd_config.display()))
        }
    }
    let removed = payload::uninstall(&host.path(&args.install_dir))?;
    println!(
        "files: {} removed from {}",
        removed.len(),
        args.install_dir.display()
    );
    Ok(())
}

fn labels_text(handler: &str) -> String {
    node_labels::installed_labels(handler)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts the installed shim with `-v` (prints its version and exits), so a shim that cannot
/// load — a library missing from its private directory, a host C library older than the one it
/// was built against — fails the install before containerd is told about it.
fn verify_shim(args: &NodeArgs) -> Result<()> {
    let host = args.host();
    let mut command = match args.verify {
        Verify::None => return Ok(()),
        Verify::Direct => Command::new(host.path(&args.shim_host_path())),
        Verify::Host => {
            let mut chroot = Command::new("/usr/sbin/chroot");
            chroot.arg(&args.host_root).arg(args.shim_host_path());
            chroot
        }
    };
    let output = command
        .arg("-v")
        .env_clear()
        .output()
        .with_context(|| format!("start {command:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains("Version") {
        bail!(
            "the installed shim does not start ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let version = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .unwrap_or("")
        .trim();
    println!(
        "shim {} starts ({} check), version {version}",
        args.shim_host_path().display(),
        match args.verify {
            Verify::Host => "host",
            _ => "direct",
        }
    );
    Ok(())
}

/// Present in the install directory from a config change until containerd has been restarted
/// with it.
const RESTART_PENDING: &str = ".containerd-restart-pending";

/// Restart tries within one run; past them the run fails (the DaemonSet runs it again, and the
/// pending marker makes that run restart too).
const RESTART_TRIES: u32 = 3;

fn remove_pending(pending: &Path) -> Result<()> {
    std::fs::remove_file(pending).with_context(|| format!("remove {}", pending.display()))
}

fn restart_containerd(args: &NodeArgs) -> Result<()> {
    if args.restart_command.trim().is_empty() {
        println!(
            "containerd not restarted (no --restart-command): waiting for it to be restarted \
             by other means"
        );
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        println!("restarting containerd: {}", args.restart_command);
        let Err(error) = host::run_shell(&args.restart_command) else {
            return Ok(());
        };
        if attempt == RESTART_TRIES {
            return Err(error.context(format!(
                "containerd was not restarted after {RESTART_TRIES} tries; the node is not \
                 labelled, and the next run restarts it again"
            )));
        }
        println!("the restart failed ({error:#}); trying again in 5 s");
        std::thread::sleep(Duration::from_secs(5));
        attempt += 1;
    }
}

/// Restarts containerd and waits until its CRI shows the handler loaded. The pending marker is
/// written first and removed only once the handler is seen, so a run that fails anywhere here
/// leaves the next run to restart again, and the node is labelled by neither.
async fn restart_until_loaded(args: &NodeArgs, pending: &Path) -> Result<()> {
    std::fs::write(pending, args.containerd_config.display().to_string())
        .with_context(|| format!("write {}", pending.display()))?;
    restart_containerd(args)?;
    let deadline = Instant::now() + Duration::from_secs(args.cri_wait_seconds);
    let last = loop {
        let state = handler_state(args).await;
        match &state {
            Ok(HandlerState::Loaded) => break state,
            _ if Instant::now() >= deadline => break state,
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    if let Ok(HandlerState::Loaded) = last {
        println!(
            "containerd has loaded handler {} (CRI status)",
            args.handler
        );
        return remove_pending(pending);
    }
    let seen = match &last {
        Ok(state) => describe(state),
        Err(error) => format!("{error:#}"),
    };
    bail!(
        "containerd has not loaded handler {} within {}s of the restart ({seen}); the node is \
         not labelled, and the next run restarts containerd again",
        args.handler,
        args.cri_wait_seconds
    )
}

async fn handler_state(args: &NodeArgs) -> Result<HandlerState> {
    let socket = args.host().path(&args.cri_socket);
    let config = cri::status_config(&socket)
        .await
        .map_err(|e| anyhow!("CRI status from {}: {e}", args.cri_socket.display()))?;
    cri::handler_state(&config, &args.handler, containerd_config::RUNTIME_TYPE)
        .map_err(|e| anyhow!("CRI status from {}: {e}", args.cri_socket.display()))
}

fn describe(state: &HandlerState) -> String {
    match state {
        HandlerState::Loaded => "loaded".to_string(),
        HandlerState::Missing => "the CRI status lists no such handler".to_string(),
        HandlerState::OtherType(other) => {
            format!("the CRI status lists it with runtime type {other:?}")
        }
    }
}

/// Adds (`install`) or removes the installer's labels on `node`; `Ok(false)` when there was
/// nothing to do.
/// Sets the installed labels for `handler` and deletes `<name>=provisioned` for each `stale`
/// (retired) handler name; whether anything changed.
async fn label(node: &str, handler: &str, stale: &[String]) -> Result<bool> {
    patch_labels(node, |labels| {
        node_labels::install_patch(labels, handler, stale)
    })
    .await
}

/// Deletes the installed labels for `handler`; whether anything changed.
async fn unlabel(node: &str, handler: &str) -> Result<bool> {
    patch_labels(node, |labels| {
        node_labels::has_any_installed_label(labels, handler)
            .then(|| node_labels::uninstall_patch(handler))
    })
    .await
}

/// Reads node `node`'s labels and applies the merge patch `decide` returns for them, if any.
async fn patch_labels(
    node: &str,
    decide: impl FnOnce(&BTreeMap<String, String>) -> Option<serde_json::Value>,
) -> Result<bool> {
    let client = kube::Client::try_default()
        .await
        .context("connect to the Kubernetes API")?;
    let nodes: Api<Node> = Api::all(client);
    let current = nodes
        .get(node)
        .await
        .with_context(|| format!("read node {node}"))?;
    let labels = current.metadata.labels.unwrap_or_default();
    let Some(patch) = decide(&labels) else {
        return Ok(false);
    };
    nodes
        .patch(
            node,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("label node {node}"))?;
    Ok(true)
}
