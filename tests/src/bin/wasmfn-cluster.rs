//! `wasmfn-cluster`: brings the local two-node cluster up and down (`make cluster-up`,
//! `make cluster-down`), and is the supervisor process the test fixture starts.

use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use wasmfn_e2e::cluster::supervisor::{self, Control};
use wasmfn_e2e::cluster::{self, process, ClusterInfo, READY_LINE};

#[derive(Parser)]
#[command(about = "The local two-node Kubernetes cluster wasmfn is tested on")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster in the background and wait until both nodes are Ready.
    Up {
        #[arg(
            long,
            env = "WASMFN_CLUSTER_DIR",
            default_value = "/tmp/wasmfn-cluster"
        )]
        state_dir: PathBuf,
    },
    /// Stop the cluster started by `up` and every process and container it started.
    Down {
        #[arg(
            long,
            env = "WASMFN_CLUSTER_DIR",
            default_value = "/tmp/wasmfn-cluster"
        )]
        state_dir: PathBuf,
    },
    /// Print the shell exports for the running cluster.
    Env {
        #[arg(
            long,
            env = "WASMFN_CLUSTER_DIR",
            default_value = "/tmp/wasmfn-cluster"
        )]
        state_dir: PathBuf,
    },
    /// Own a cluster in the foreground: prints `READY <cluster.json>` once up, reads control
    /// commands from stdin and tears the cluster down when stdin closes (or on SIGTERM/SIGINT).
    Supervise {
        /// State directory (default: a fresh one under the temporary directory).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Ignore stdin; stop only on SIGTERM/SIGINT.
        #[arg(long)]
        detached: bool,
        /// Keep the state directory after teardown (for debugging).
        #[arg(long, env = "WASMFN_KEEP_CLUSTER_STATE")]
        keep_state: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Supervise {
            state_dir,
            detached,
            keep_state,
        } => supervise(state_dir.as_deref(), detached, keep_state),
        Cmd::Up { state_dir } => up(&state_dir),
        Cmd::Down { state_dir } => down(&state_dir),
        Cmd::Env { state_dir } => match running(&state_dir) {
            Some(info) => {
                print_exports(&info);
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("no cluster is running in {}", state_dir.display());
                ExitCode::FAILURE
            }
        },
    }
}

fn supervise(state_dir: Option<&Path>, detached: bool, keep_state: bool) -> ExitCode {
    let terminate = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, terminate.clone()) {
            eprintln!("cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let (tx, rx) = mpsc::channel();
    if detached {
        // Keep the sender alive so the channel never reports a disconnect.
        std::mem::forget(tx);
    } else {
        std::thread::spawn(move || {
            for line in BufReader::new(std::io::stdin()).lines() {
                let Ok(line) = line else { break };
                match Control::parse(&line) {
                    Some(c) => {
                        if tx.send(c).is_err() {
                            return;
                        }
                    }
                    None => eprintln!("unknown control command: {line}"),
                }
            }
            let _ = tx.send(Control::Shutdown);
        });
    }
    let info = match cluster::plan(state_dir) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("cannot plan a cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = supervisor::serve(info, keep_state, rx, terminate, |info| {
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "{READY_LINE} {}",
            ClusterInfo::info_file(&info.state_dir).display()
        );
        let _ = out.flush();
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn running(state_dir: &Path) -> Option<ClusterInfo> {
    let info = cluster::read_info(&ClusterInfo::info_file(state_dir)).ok()?;
    let pid = info.supervisor_pid?;
    process::is_running(pid, "wasmfn-cluster").then_some(info)
}

fn print_exports(info: &ClusterInfo) {
    println!("export KUBECONFIG={}", info.kubeconfig().display());
    println!("export PATH={}:$PATH", info.kube_bin_dir.display());
}

fn up(state_dir: &Path) -> ExitCode {
    if let Some(info) = running(state_dir) {
        eprintln!("a cluster is already running in {}", state_dir.display());
        print_exports(&info);
        return ExitCode::SUCCESS;
    }
    let _ = std::fs::remove_dir_all(state_dir);
    let logs = state_dir.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("cannot create {}: {e}", logs.display());
        return ExitCode::FAILURE;
    }
    let log = logs.join("supervisor.log");
    let Ok(log_file) = std::fs::File::create(&log) else {
        eprintln!("cannot create {}", log.display());
        return ExitCode::FAILURE;
    };
    let Ok(me) = std::env::current_exe() else {
        eprintln!("cannot find my own binary");
        return ExitCode::FAILURE;
    };
    let started = Instant::now();
    let mut command = Command::new(me);
    command
        .arg("supervise")
        .arg("--detached")
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from this terminal.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start the supervisor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.starts_with(READY_LINE) {
            eprintln!(
                "cluster up in {:.1}s (both nodes Ready); logs in {}",
                started.elapsed().as_secs_f64(),
                logs.display()
            );
            if let Some(info) = running(state_dir) {
                print_exports(&info);
                return ExitCode::SUCCESS;
            }
        }
    }
    let _ = child.wait();
    eprintln!("the cluster did not come up:\n{}", process::tail(&log, 40));
    ExitCode::FAILURE
}

fn down(state_dir: &Path) -> ExitCode {
    let Some(info) = running(state_dir) else {
        eprintln!("no cluster is running in {}", state_dir.display());
        return ExitCode::SUCCESS;
    };
    let Some(pid) = info.supervisor_pid else {
        return ExitCode::SUCCESS;
    };
    process::signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if !process::is_running(pid, "wasmfn-cluster") {
            eprintln!("cluster {} stopped", info.id);
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("the supervisor (pid {pid}) did not stop within 120s");
    ExitCode::FAILURE
}
