//! An execution's effective inputs and limits: its own settings over the function's defaults
//! (the rules of `wasmfn_api::inputs`, shared with `wasmfn run`) over the operator's. Pure;
//! problems come back as a condition reason and a message.

use wasmfn_api::inputs::{self, Refusal, MAX_OUTPUT_BYTES};
use wasmfn_api::{WasmExecutionSpec, WasmFunctionSpec};

use super::reasons::Failure;

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

/// Resolves the inputs, or says why they cannot run. The operator's defaults meet the same
/// bounds as a spec's values: at least a page of memory, at most [`MAX_OUTPUT_BYTES`] kept.
pub fn resolve(
    execution: &WasmExecutionSpec,
    function: &WasmFunctionSpec,
    defaults: Defaults,
) -> Result<RunInputs, (Failure, String)> {
    let refused = |error: inputs::InputError| {
        let failure = match error.refusal {
            Refusal::InvalidSpec => Failure::InvalidSpec,
            Refusal::InputTooLarge => Failure::InputTooLarge,
        };
        (failure, error.message)
    };
    let resolved = inputs::resolve(Some(execution), function).map_err(refused)?;
    let memory_bytes = match resolved.memory_bytes {
        Some(bytes) => bytes,
        None => inputs::check_memory(defaults.memory_bytes).map_err(refused)?,
    };
    Ok(RunInputs {
        stdin: resolved.stdin,
        env: resolved.env,
        timeout_ms: resolved.timeout_ms.unwrap_or(defaults.timeout_ms),
        memory_bytes,
        max_output_bytes: resolved
            .max_output_bytes
            .unwrap_or(defaults.max_output_bytes.min(MAX_OUTPUT_BYTES)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfn_api::inputs::{
        MAX_ARG_BYTES, MAX_ENV_JSON_BYTES, MAX_OUTPUT_BYTES as MAX_OUTPUT_CAP, MAX_STDIN_BYTES,
    };
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

    #[test]
    fn values_the_api_server_would_refuse_are_clamped_and_the_operators_defaults_bounded() {
        // The schema keeps these out of a cluster; `wasmfn run` refuses them (`admit`). The
        // operator clamps, as it did before the rules moved to wasmfn-api.
        let mut e = execution();
        e.timeout_millis = Some(0);
        e.max_output_bytes = Some(-1);
        let inputs = resolve(&e, &function(), DEFAULTS).expect("clamped");
        assert_eq!((inputs.timeout_ms, inputs.max_output_bytes), (1, 0));
        let generous = Defaults {
            max_output_bytes: 1 << 20,
            ..DEFAULTS
        };
        let inputs = resolve(&execution(), &function(), generous).expect("valid");
        assert_eq!(inputs.max_output_bytes, MAX_OUTPUT_CAP);
        let tiny = Defaults {
            memory_bytes: 4096,
            ..DEFAULTS
        };
        let (reason, message) = resolve(&execution(), &function(), tiny).expect_err("refused");
        assert_eq!(reason, Failure::InvalidSpec);
        assert!(message.contains("below one WebAssembly page"), "{message}");
        let mut e = execution();
        e.memory_limit = Some("1Mi".into());
        assert_eq!(
            resolve(&e, &function(), tiny)
                .expect("the spec's own")
                .memory_bytes,
            1 << 20
        );
    }
}
