//! `wasmfn`: the data-plane command. `exec` runs one module (the runner pod's entry point),
//! `aot` compiles a module ahead of time, `run` builds and runs a WasmFunction manifest locally,
//! `compile` is the compile Job's entry point, `artifact` packs and unpacks the ConfigMap
//! store's form of a module, `agent` runs the warm agent, `completions` prints shell
//! completions.

mod agent;
mod artifact;
mod compile;
mod exec;
mod exit;
mod isolate;
mod manifest;
mod options;
mod output;
mod progress;
mod run;

use std::process::ExitCode;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Runs WebAssembly functions with WasmEdge, the way wasmfn's runners do.
#[derive(Debug, Parser)]
#[command(name = "wasmfn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a module (or a Python/JavaScript script) once and write the result document.
    Exec(exec::ExecArgs),
    /// Compile a module ahead of time (native code bound to the module's digest).
    Aot(exec::AotArgs),
    /// Build and run a WasmFunction manifest locally, without a cluster.
    Run(run::RunArgs),
    /// Compile a function's source to a checked artifact (module or script) with a manifest.
    Compile(compile::CompileArgs),
    /// Pack a module the way the ConfigMap store holds it, or unpack and verify such an artifact.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCommand),
    /// Run the warm agent: executions the operator hands over mutual TLS, each in a sandbox.
    Agent(agent::AgentArgs),
    /// Ask a running agent for its capacity, load and cache (mutual TLS, like the operator).
    AgentStatus(agent::AgentStatusArgs),
    /// Take every network interface but loopback down (a compile Job's init container, with
    /// NET_ADMIN, so the build that follows reaches nothing).
    IsolateNetwork,
    /// Print a shell completion script, e.g. `wasmfn completions bash > /etc/bash_completion.d/wasmfn`.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// The command-line definition, with the exit-code table after every command's help.
fn command() -> clap::Command {
    fn with_table(command: clap::Command) -> clap::Command {
        command.after_help(exit::TABLE).mut_subcommands(with_table)
    }
    with_table(Cli::command())
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let result = match cli.command {
        Command::Exec(args) => exec::exec(args),
        Command::Aot(args) => exec::aot(args),
        Command::Run(args) => run::run(args),
        Command::Compile(args) => compile::compile(args),
        Command::Artifact(command) => artifact::artifact(command),
        Command::Agent(args) => agent::agent(args),
        Command::AgentStatus(args) => agent::agent_status(args),
        Command::IsolateNetwork => isolate::isolate_network(),
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut command(), "wasmfn", &mut std::io::stdout());
            Ok(exit::OK)
        }
    };
    match result {
        // Exit codes are 0..=255; a guest's larger or negative code is reported modulo 256 like
        // a shell would, the exact value stays in the result document.
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            let code = exit::code_of(&error);
            eprintln!("wasmfn: {error:#}");
            if code == exit::USAGE {
                eprintln!("(see wasmfn --help)");
            }
            ExitCode::from(code as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn every_command_shows_the_exit_codes() {
        let mut command = command();
        for sub in command.get_subcommands_mut() {
            let help = sub.render_long_help().to_string();
            assert!(help.contains("Exit codes"), "{}", sub.get_name());
        }
    }
}
