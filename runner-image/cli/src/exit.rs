//! Exit codes: one table for every subcommand, shown by `--help` and kept true by the tests in
//! `tests/cli.rs`.

use std::fmt;

/// Success.
pub(crate) const OK: i32 = 0;
/// The function's source did not compile (`compile`, `run`); the agent did not answer
/// (`agent-status`).
pub(crate) const FAILED: i32 = 1;
/// An unknown option or value, or an invalid manifest (clap uses 2 for its own errors too).
pub(crate) const USAGE: i32 = 2;
/// A time limit passed: the guest's or the compile's.
pub(crate) const TIMED_OUT: i32 = 124;
/// wasmfn itself failed: unreadable or corrupt input, a missing toolchain, an I/O error.
pub(crate) const INTERNAL: i32 = 125;

/// The table `--help` shows after the options of every command.
pub(crate) const TABLE: &str = "\
Exit codes (the same for every command):
  0    success: the guest completed, or the command did what it was asked
  1    compile, run: the function's source did not compile; agent-status: no answer
  2    usage: an unknown option or value, or an invalid manifest
  124  a time limit passed: the guest's (exec, run) or the compile's (compile, run)
  125  wasmfn itself failed: unreadable or corrupt input, a missing toolchain, an I/O error
  126  exec, run: the module cannot run (invalid, native code section, missing export,
       bad arguments)
  134  exec, run: the guest trapped or overflowed its stack
  137  exec, run: the guest passed its memory or output limit
  other  exec, run: the guest's own non-zero exit code (modulo 256)";

/// An error that is the caller's mistake (a bad manifest, conflicting fields): exit 2.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error carrying `message`.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// The exit code for an error a command returned.
pub(crate) fn code_of(error: &anyhow::Error) -> i32 {
    if error.chain().any(|cause| cause.is::<Usage>()) {
        USAGE
    } else {
        INTERNAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_usage_error_keeps_exit_2_under_added_context() {
        let error = Err::<(), _>(usage("spec.language: unknown"))
            .context("reading f.yaml")
            .expect_err("an error");
        assert_eq!(code_of(&error), USAGE);
        assert_eq!(code_of(&anyhow::anyhow!("disk full")), INTERNAL);
    }

    #[test]
    fn the_table_lists_every_code_the_commands_return() {
        for code in [OK, FAILED, USAGE, TIMED_OUT, INTERNAL, 126, 134, 137] {
            assert!(
                TABLE
                    .lines()
                    .any(|line| line.trim_start().starts_with(&format!("{code} "))),
                "{code} is not in the table"
            );
        }
    }
}
