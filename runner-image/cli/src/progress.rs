//! Progress lines on a terminal: one line per phase of a command that takes a while (a compile
//! takes seconds to minutes), written to stderr only when stderr is a terminal, dimmed unless
//! `NO_COLOR` is set. Nothing is written otherwise, so logs and pipes see exactly what they did
//! before.

use std::io::IsTerminal as _;

/// Where progress lines go (or that they go nowhere).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    enabled: bool,
    color: bool,
}

impl Progress {
    /// Lines on stderr when it is a terminal; colour unless `NO_COLOR` is set to a non-empty
    /// value (<https://no-color.org>).
    pub(crate) fn for_stderr() -> Progress {
        Progress::new(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        )
    }

    /// Lines when `terminal`; colour unless `no_color` (the variable's value) is non-empty.
    fn new(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> Progress {
        Progress {
            enabled: terminal,
            color: terminal && no_color.is_none_or(|value| value.is_empty()),
        }
    }

    /// Writes one phase's line.
    pub(crate) fn phase(&self, text: &str) {
        if self.enabled {
            eprintln!("{}", line(text, self.color));
        }
    }

    /// Writes the line of a step inside a compile ([`wasmfn_compile::Phase`]).
    pub(crate) fn step(&self, step: wasmfn_compile::Phase<'_>) {
        if self.enabled {
            self.phase(&step_phase(step));
        }
    }

    /// Whether lines are written (callers skip work that only feeds them).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }
}

/// One progress line: `wasmfn: <text>`, dim when `color`.
pub(crate) fn line(text: &str, color: bool) -> String {
    if color {
        format!("\x1b[2mwasmfn: {text}\x1b[0m")
    } else {
        format!("wasmfn: {text}")
    }
}

/// The compile phase: `compiling main.go with go 1.24.4…`, `checking main.py with python
/// 3.11…` (a script is only checked), without the tools when they are unknown.
pub(crate) fn compile_phase(script: bool, file: &str, tools: &[String]) -> String {
    let verb = if script { "checking" } else { "compiling" };
    if tools.is_empty() {
        format!("{verb} {file}…")
    } else {
        format!("{verb} {file} with {}…", tools.join(", "))
    }
}

/// A step inside a compile: `running cargo…`, `AOT-compiling the module (5.5Mi) for this
/// machine…` (LLVM takes seconds to minutes on a large module).
pub(crate) fn step_phase(step: wasmfn_compile::Phase<'_>) -> String {
    match step {
        wasmfn_compile::Phase::Tool(program) => format!("  running {program}…"),
        wasmfn_compile::Phase::Aot(bytes) => format!(
            "  AOT-compiling the module ({}) for this machine…",
            human_bytes(bytes)
        ),
    }
}

/// The end of the compile phase.
pub(crate) fn compiled_phase(cache_hit: bool, seconds: f64, bytes: u64) -> String {
    let how = if cache_hit {
        "taken from the compile cache"
    } else {
        "compiled"
    };
    format!("{how} in {seconds:.1}s ({})", human_bytes(bytes))
}

/// The run phase: `running order-total (timeout 10s, memory 128Mi)…`.
pub(crate) fn run_phase(name: &str, timeout_ms: u128, memory_bytes: u64) -> String {
    let timeout = if timeout_ms.is_multiple_of(1000) {
        format!("{}s", timeout_ms / 1000)
    } else {
        format!("{timeout_ms}ms")
    };
    format!(
        "running {name} (timeout {timeout}, memory {})…",
        human_bytes(memory_bytes)
    )
}

/// `128Mi`, `2.4Mi`, `18Ki`, `512 bytes`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")];
    for (size, unit) in UNITS {
        if bytes >= size {
            return if bytes.is_multiple_of(size) {
                format!("{}{unit}", bytes / size)
            } else {
                format!("{:.1}{unit}", bytes as f64 / size as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_dimmed_only_with_colour() {
        assert_eq!(line("checking", false), "wasmfn: checking");
        assert_eq!(line("checking", true), "\x1b[2mwasmfn: checking\x1b[0m");
    }

    #[test]
    fn phases_name_the_file_the_tools_and_the_limits() {
        assert_eq!(
            compile_phase(false, "main.go", &["go 1.24.4".to_owned()]),
            "compiling main.go with go 1.24.4…"
        );
        assert_eq!(compile_phase(true, "main.py", &[]), "checking main.py…");
        assert_eq!(
            compiled_phase(false, 3.04, 2_500_000),
            "compiled in 3.0s (2.4Mi)"
        );
        assert_eq!(
            compiled_phase(true, 0.02, 512),
            "taken from the compile cache in 0.0s (512 bytes)"
        );
        assert_eq!(
            step_phase(wasmfn_compile::Phase::Tool("wasm-opt")),
            "  running wasm-opt…"
        );
        assert_eq!(
            step_phase(wasmfn_compile::Phase::Aot(5_728_424)),
            "  AOT-compiling the module (5.5Mi) for this machine…"
        );
        assert_eq!(
            run_phase("order-total", 10_000, 128 << 20),
            "running order-total (timeout 10s, memory 128Mi)…"
        );
        assert_eq!(
            run_phase("f", 1500, 16 << 20),
            "running f (timeout 1500ms, memory 16Mi)…"
        );
    }

    #[test]
    fn no_color_turns_colour_off_and_no_terminal_turns_lines_off() {
        use std::ffi::OsStr;
        let on_terminal = Progress::new(true, None);
        assert!(on_terminal.enabled && on_terminal.color);
        let no_color = Progress::new(true, Some(OsStr::new("1")));
        assert!(no_color.enabled && !no_color.color);
        // An empty NO_COLOR does not count (no-color.org).
        assert!(Progress::new(true, Some(OsStr::new(""))).color);
        let piped = Progress::new(false, None);
        assert!(!piped.enabled() && !piped.color);
    }
}
