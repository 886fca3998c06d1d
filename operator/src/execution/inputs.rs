//! An execution's effective inputs and limits: its own settings over the function's defaults
//! over the operator's. Pure; problems come back as a condition reason and a message.

use wasmfn_api::{WasmExecutionSpec, WasmFunctionSpec};

use super::reasons::Failure;
use super::run_pod::MAX_STDIN_BYTES;
use crate::config::parse_quantity;

/// Most bytes of each stream an execution may keep in its status.
pub const MAX_OUTPUT_CAP: u64 = 65536;

/// Most bytes of one argument: the kernel refuses to `execve` a longer string (`MAX_ARG_STRLEN`,
/// 128 KiB with its NUL), and a container pod passes args on the runner's command line.
pub const MAX_ARG_BYTES: usize = 128 * 1024 - 1;

/// Most bytes of all arguments together (well inside `ARG_MAX`, which also holds the pod's
/// environment).
pub const MAX_ARGS_BYTES: usize = 1 << 20;

/// Most bytes of the guest environment as a Wasm pod carries it: one variable holding the JSON
/// list of `NAME=value` entries, itself one `execve` string.
pub const MAX_ENV_JSON_BYTES: usize = 128 * 1024 - 64;

/// Whether args and the guest environment fit what every runner can be handed.
fn check_arguments(args: &[String], env: &[(String, String)]) -> Result<(), String> {
    if let Some((index, arg)) = args
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() > MAX_ARG_BYTES)
    {
        return Err(format!(
            "args[{index}] is {} bytes; one argument may have at most {MAX_ARG_BYTES} (the kernel's limit for a command-line string) — pass large values on stdin",
            arg.len()
        ));
    }
    let total: usize = args.iter().map(|a| a.len() + 1).sum();
    if total > MAX_ARGS_BYTES {
        return Err(format!(
            "args total {total} bytes; at most {MAX_ARGS_BYTES} (1 MiB) — pass large values on stdin"
        ));
    }
    let entries: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let encoded = serde_json::to_string(&entries).map_or(usize::MAX, |e| e.len());
    if encoded > MAX_ENV_JSON_BYTES {
        return Err(format!(
            "the guest environment is {encoded} bytes encoded; at most {MAX_ENV_JSON_BYTES} (it travels as one variable) — pass large values on stdin"
        ));
    }
    Ok(())
}

/// What the run pod gets.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInputs {
    /// Stdin text, when any.
    pub stdin: Option<String>,
    /// Guest environment in order: the function's defaults, then the execution's (an entry of
    /// the execution replaces the default of the same name in place).
    pub env: Vec<(String, String)>,
    /// Wall-clock limit.
    pub timeout_ms: u64,
    /// Linear-memory cap.
    pub memory_bytes: u64,
    /// Bytes of each stream kept in status.
    pub max_output_bytes: u64,
}

/// The operator-wide defaults.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// Timeout, ms.
    pub timeout_ms: u64,
    /// Memory cap, bytes.
    pub memory_bytes: u64,
    /// Output cap, bytes.
    pub max_output_bytes: u64,
}

/// Resolves the inputs, or says why they cannot run.
pub fn resolve(
    execution: &WasmExecutionSpec,
    function: &WasmFunctionSpec,
    defaults: Defaults,
) -> Result<RunInputs, (Failure, String)> {
    let stdin = match (&execution.stdin, &execution.input) {
        (Some(_), Some(_)) => {
            return Err((
                Failure::InvalidSpec,
                "set at most one of spec.stdin and spec.input".into(),
            ))
        }
        (Some(text), None) => Some(text.clone()),
        (None, Some(value)) => Some(value.to_string()),
        (None, None) => None,
    };
    if let Some(stdin) = &stdin {
        if stdin.len() > MAX_STDIN_BYTES {
            return Err((
                Failure::InputTooLarge,
                format!(
                    "stdin is {} bytes; at most {MAX_STDIN_BYTES} (256 KiB) travel with an execution — pass larger inputs by reference",
                    stdin.len()
                ),
            ));
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for var in function.defaults.env.iter().chain(&execution.env) {
        let value = var.value.clone().unwrap_or_default();
        match env.iter_mut().find(|(name, _)| *name == var.name) {
            Some(existing) => existing.1 = value,
            None => env.push((var.name.clone(), value)),
        }
    }
    check_arguments(&execution.args, &env).map_err(|message| (Failure::InputTooLarge, message))?;
    let timeout_ms = execution
        .timeout_millis
        .or(function.defaults.timeout_millis)
        .map(|ms| u64::try_from(ms).unwrap_or(1).max(1))
        .unwrap_or(defaults.timeout_ms);
    let memory_bytes = match execution
        .memory_limit
        .as_deref()
        .or(function.defaults.memory_limit.as_deref())
    {
        Some(text) => {
            parse_quantity(text).map_err(|e| (Failure::InvalidSpec, format!("memoryLimit: {e}")))?
        }
        None => defaults.memory_bytes,
    };
    if memory_bytes < 64 << 10 {
        return Err((
            Failure::InvalidSpec,
            format!("memoryLimit {memory_bytes} bytes is below one WebAssembly page (64Ki)"),
        ));
    }
    let max_output_bytes = execution
        .max_output_bytes
        .map(|b| u64::try_from(b).unwrap_or(0))
        .unwrap_or(defaults.max_output_bytes)
        .min(MAX_OUTPUT_CAP);
    Ok(RunInputs {
        stdin,
        env,
        timeout_ms,
        memory_bytes,
        max_output_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfn_api::{EnvVar, FunctionReference};

    fn execution() -> WasmExecutionSpec {
        serde_json::from_value(serde_json::json!({"functionRef": {"name": "f"}})).expect("valid")
    }

    fn function() -> WasmFunctionSpec {
        serde_json::from_value(serde_json::json!({
            "language": "wat",
            "source": {"code": "(module)"}
        }))
        .expect("valid")
    }

    const DEFAULTS: Defaults = Defaults {
        timeout_ms: 30_000,
        memory_bytes: 128 << 20,
        max_output_bytes: 4096,
    };

    fn refusal(spec: &WasmExecutionSpec) -> String {
        match resolve(spec, &function(), DEFAULTS) {
            Err((Failure::InputTooLarge, message)) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn args_and_env_beyond_what_a_runner_can_be_handed_are_refused_with_what_to_do() {
        let mut spec = execution();
        spec.args = vec!["a".repeat(MAX_ARG_BYTES)];
        assert!(
            resolve(&spec, &function(), DEFAULTS).is_ok(),
            "at the limit"
        );
        spec.args = vec!["ok".into(), "a".repeat(MAX_ARG_BYTES + 1)];
        let message = refusal(&spec);
        assert!(message.starts_with("args[1] is 131072 bytes"), "{message}");
        assert!(message.contains("pass large values on stdin"), "{message}");
        spec.args = vec!["a".repeat(100_000); 11];
        assert!(refusal(&spec).starts_with("args total 1100011 bytes"));
        let mut spec = execution();
        spec.env = vec![EnvVar {
            name: "BIG".into(),
            value: Some("v".repeat(MAX_ENV_JSON_BYTES)),
        }];
        assert!(refusal(&spec).contains("the guest environment is"));
    }

    fn var(name: &str, value: Option<&str>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(String::from),
        }
    }

    #[test]
    fn the_operator_defaults_apply_to_a_bare_execution() {
        let inputs = resolve(&execution(), &function(), DEFAULTS).expect("valid");
        assert_eq!(
            inputs,
            RunInputs {
                stdin: None,
                env: vec![],
                timeout_ms: 30_000,
                memory_bytes: 128 << 20,
                max_output_bytes: 4096,
            }
        );
        assert_eq!(
            execution().function_ref,
            FunctionReference { name: "f".into() }
        );
    }

    #[test]
    fn the_execution_wins_over_the_function_which_wins_over_the_operator() {
        let mut f = function();
        f.defaults.timeout_millis = Some(5000);
        f.defaults.memory_limit = Some("64Mi".into());
        f.defaults.env = vec![var("A", Some("1")), var("B", Some("2"))];
        let inputs = resolve(&execution(), &f, DEFAULTS).expect("valid");
        assert_eq!((inputs.timeout_ms, inputs.memory_bytes), (5000, 64 << 20));
        let mut e = execution();
        e.timeout_millis = Some(100);
        e.memory_limit = Some("16Mi".into());
        e.env = vec![var("B", Some("x")), var("C", None)];
        e.max_output_bytes = Some(1 << 20);
        let inputs = resolve(&e, &f, DEFAULTS).expect("valid");
        assert_eq!((inputs.timeout_ms, inputs.memory_bytes), (100, 16 << 20));
        assert_eq!(
            inputs.env,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x".to_string()),
                ("C".to_string(), String::new())
            ]
        );
        assert_eq!(inputs.max_output_bytes, MAX_OUTPUT_CAP, "capped");
    }

    #[test]
    fn stdin_comes_from_text_or_json_and_is_bounded() {
        let mut e = execution();
        e.stdin = Some("hello\n".into());
        assert_eq!(
            resolve(&e, &function(), DEFAULTS)
                .expect("valid")
                .stdin
                .as_deref(),
            Some("hello\n")
        );
        let mut e = execution();
        e.input = Some(serde_json::json!({"n": 3}));
        assert_eq!(
            resolve(&e, &function(), DEFAULTS)
                .expect("valid")
                .stdin
                .as_deref(),
            Some(r#"{"n":3}"#)
        );
        e.stdin = Some("x".into());
        assert_eq!(
            resolve(&e, &function(), DEFAULTS).expect_err("rejected").0,
            Failure::InvalidSpec
        );
        let mut e = execution();
        e.stdin = Some("x".repeat(MAX_STDIN_BYTES));
        assert!(
            resolve(&e, &function(), DEFAULTS).is_ok(),
            "exactly the limit is fine"
        );
        e.stdin = Some("x".repeat(MAX_STDIN_BYTES + 1));
        let (reason, message) = resolve(&e, &function(), DEFAULTS).expect_err("rejected");
        assert_eq!(reason, Failure::InputTooLarge);
        assert!(message.contains("262145"), "{message}");
    }

    #[test]
    fn unusable_memory_limits_are_refused() {
        for bad in ["12Ti", "1k"] {
            let mut e = execution();
            e.memory_limit = Some(bad.into());
            assert_eq!(
                resolve(&e, &function(), DEFAULTS).expect_err("rejected").0,
                Failure::InvalidSpec,
                "{bad}"
            );
        }
    }
}
