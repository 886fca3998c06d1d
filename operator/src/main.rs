//! `wasmfn-operator`: `run` the controllers, `crdgen` the CRD YAML, or `cleanup` what the operator
//! made before it is uninstalled.

mod cleanup;

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wasmfn_operator::config::Config;
use wasmfn_operator::{crdgen, operator};

#[derive(Debug, Parser)]
#[command(
    name = "wasmfn-operator",
    version,
    about = "Compiles WasmFunctions to WebAssembly and runs WasmExecutions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (leader-elected).
    Run(Box<Config>),
    /// Write the CRD YAML generated from the API types.
    Crdgen {
        /// Directory to write into; without it the YAML goes to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Delete the objects the operator made that nothing owns (its wasmfn-deny-egress
    /// NetworkPolicies and artifact ConfigMaps), cluster-wide; the chart's pre-delete hook runs
    /// it. With `--operator-deployment` it first scales the operator to zero and waits for its
    /// pods to go, so none makes a new object after the sweep. Never touches WasmFunctions,
    /// WasmExecutions or what they own.
    Cleanup(cleanup::CleanupArgs),
}

/// Runs `work` on a new async runtime, with the TLS provider the clients use.
fn block_on(
    work: impl std::future::Future<Output = wasmfn_operator::Result<()>>,
) -> wasmfn_operator::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(work),
        Err(error) => Err(wasmfn_operator::Error::io("start the async runtime")(error)),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Colour only for a person at a terminal: a pod's log (or a file) gets plain text, and
    // NO_COLOR turns colour off everywhere.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let result = match cli.command {
        Command::Crdgen { out: Some(dir) } => crdgen::write(&dir),
        Command::Crdgen { out: None } => crdgen::crds().iter().try_for_each(|(_, crd)| {
            println!("{}---", crdgen::render(crd)?);
            Ok(())
        }),
        Command::Run(config) => block_on(operator::run(*config)),
        Command::Cleanup(args) => block_on(cleanup::run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wasmfn-operator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
