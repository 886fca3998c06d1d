//! How an execution's inputs and limits follow from its spec and its function's: the rules the
//! operator applies before a run and `wasmfn run` applies on one machine. Kube-free and pure;
//! each caller supplies its own defaults for what neither spec sets.
//!
//! - The guest environment is the function's `defaults.env`, then the execution's `env`; an
//!   entry replaces an earlier one of the same name in place ([`set_env`]).
//! - Stdin is `stdin` as text or `input` as JSON, never both, at most [`MAX_STDIN_BYTES`].
//! - `timeoutMillis` and `memoryLimit` come from the execution, else the function's defaults.
//! - Arguments and the environment must fit a runner's command line ([`MAX_ARG_BYTES`],
//!   [`MAX_ARGS_BYTES`], [`MAX_ENV_JSON_BYTES`]).
//!
//! In a cluster the API server first enforces the schema's ranges; [`admit`] is that check for
//! a caller with no API server in front of it.

use std::fmt;

use crate::{WasmExecutionSpec, WasmFunctionSpec};

/// Longest stdin an execution carries (its input ConfigMap leaves room; larger inputs belong
/// in a store).
pub const MAX_STDIN_BYTES: usize = 256 << 10;

/// Most bytes of each stream an execution may keep (the schema's `maxOutputBytes` maximum).
pub const MAX_OUTPUT_BYTES: u64 = 65536;

/// Longest `timeoutMillis` the schema admits (one day).
pub const MAX_TIMEOUT_MILLIS: i64 = 86_400_000;

/// Smallest memory limit: one WebAssembly page.
pub const MIN_MEMORY_BYTES: u64 = 64 << 10;

/// Most bytes of one argument: the kernel refuses to `execve` a longer string (`MAX_ARG_STRLEN`,
/// 128 KiB with its NUL), and a container pod passes args on the runner's command line.
pub const MAX_ARG_BYTES: usize = 128 * 1024 - 1;

/// Most bytes of all arguments together (well inside `ARG_MAX`, which also holds the pod's
/// environment).
pub const MAX_ARGS_BYTES: usize = 1 << 20;

/// Most bytes of the guest environment as a Wasm pod carries it: one variable holding the JSON
/// list of `NAME=value` entries, itself one `execve` string.
pub const MAX_ENV_JSON_BYTES: usize = 128 * 1024 - 64;

/// Why a spec's inputs cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The spec asks for something impossible (both stdin and input, a memory limit that does
    /// not parse or is below a page, a value outside the schema's range).
    InvalidSpec,
    /// Stdin, arguments or the environment are larger than a run can be handed.
    InputTooLarge,
}

/// A refusal and the message that says what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    /// Which kind of problem.
    pub refusal: Refusal,
    /// What is wrong and what to do, naming the field.
    pub message: String,
}

impl InputError {
    fn invalid(message: impl Into<String>) -> Self {
        InputError {
            refusal: Refusal::InvalidSpec,
            message: message.into(),
        }
    }

    fn too_large(message: impl Into<String>) -> Self {
        InputError {
            refusal: Refusal::InputTooLarge,
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

/// What the two specs give a run. A limit is `None` when neither spec sets it: the caller's
/// default applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// Stdin text, when any.
    pub stdin: Option<String>,
    /// Guest environment in order: the function's defaults, then the execution's.
    pub env: Vec<(String, String)>,
    /// Wall-clock limit, ms (at least 1).
    pub timeout_ms: Option<u64>,
    /// Linear-memory cap, bytes (at least [`MIN_MEMORY_BYTES`]).
    pub memory_bytes: Option<u64>,
    /// Bytes of each stream kept (at most [`MAX_OUTPUT_BYTES`]).
    pub max_output_bytes: Option<u64>,
}

/// Resolves an execution's inputs over its function's defaults (`execution` `None`: a run with
/// the function's defaults alone), or says why they cannot run.
pub fn resolve(
    execution: Option<&WasmExecutionSpec>,
    function: &WasmFunctionSpec,
) -> Result<Inputs, InputError> {
    let defaults = &function.defaults;
    let stdin = match execution {
        Some(execution) => stdin(execution)?,
        None => None,
    };
    let mut env = Vec::new();
    let execution_env = execution.map_or(&[][..], |e| &e.env[..]);
    for var in defaults.env.iter().chain(execution_env) {
        set_env(&mut env, &var.name, var.value.clone().unwrap_or_default());
    }
    check_arguments(execution.map_or(&[][..], |e| &e.args[..]), &env)?;
    let timeout_ms = execution
        .and_then(|e| e.timeout_millis)
        .or(defaults.timeout_millis)
        .map(|ms| u64::try_from(ms).unwrap_or(1).max(1));
    let memory = match execution.and_then(|e| e.memory_limit.as_deref()) {
        Some(text) => Some((text, "spec.memoryLimit")),
        None => defaults
            .memory_limit
            .as_deref()
            .map(|text| (text, "the function's spec.defaults.memoryLimit")),
    };
    let memory_bytes = match memory {
        Some((text, field)) => {
            Some(check_memory(parse_quantity(text).map_err(|e| {
                InputError::invalid(format!("{field}: {e}"))
            })?)?)
        }
        None => None,
    };
    let max_output_bytes = execution
        .and_then(|e| e.max_output_bytes)
        .map(|bytes| u64::try_from(bytes).unwrap_or(0).min(MAX_OUTPUT_BYTES));
    Ok(Inputs {
        stdin,
        env,
        timeout_ms,
        memory_bytes,
        max_output_bytes,
    })
}

/// The execution's stdin: `stdin` as given or `input` as compact JSON, never both, bounded.
pub fn stdin(execution: &WasmExecutionSpec) -> Result<Option<String>, InputError> {
    let stdin = match (&execution.stdin, &execution.input) {
        (Some(_), Some(_)) => {
            return Err(InputError::invalid(
                "set at most one of spec.stdin and spec.input",
            ))
        }
        (Some(text), None) => Some(text.clone()),
        (None, Some(value)) => Some(value.to_string()),
        (None, None) => None,
    };
    if let Some(text) = &stdin {
        if text.len() > MAX_STDIN_BYTES {
            return Err(InputError::too_large(format!(
                "stdin is {} bytes; at most {MAX_STDIN_BYTES} (256 KiB) travel with an execution — pass larger inputs by reference",
                text.len()
            )));
        }
    }
    Ok(stdin)
}

/// Sets `name` in an ordered environment: an existing entry of that name takes the value in
/// place, a new name goes last.
pub fn set_env(env: &mut Vec<(String, String)>, name: &str, value: String) {
    match env.iter_mut().find(|(existing, _)| existing == name) {
        Some(entry) => entry.1 = value,
        None => env.push((name.to_owned(), value)),
    }
}

/// A memory limit a run can have: at least one WebAssembly page.
pub fn check_memory(bytes: u64) -> Result<u64, InputError> {
    if bytes < MIN_MEMORY_BYTES {
        return Err(InputError::invalid(format!(
            "memoryLimit {bytes} bytes is below one WebAssembly page (64Ki)"
        )));
    }
    Ok(bytes)
}

/// Whether args and the guest environment fit what every runner can be handed.
pub fn check_arguments(args: &[String], env: &[(String, String)]) -> Result<(), InputError> {
    if let Some((index, arg)) = args
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() > MAX_ARG_BYTES)
    {
        return Err(InputError::too_large(format!(
            "args[{index}] is {} bytes; one argument may have at most {MAX_ARG_BYTES} (the kernel's limit for a command-line string) — pass large values on stdin",
            arg.len()
        )));
    }
    let total: usize = args.iter().map(|a| a.len() + 1).sum();
    if total > MAX_ARGS_BYTES {
        return Err(InputError::too_large(format!(
            "args total {total} bytes; at most {MAX_ARGS_BYTES} (1 MiB) — pass large values on stdin"
        )));
    }
    let entries: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let encoded = serde_json::to_string(&entries).map_or(usize::MAX, |e| e.len());
    if encoded > MAX_ENV_JSON_BYTES {
        return Err(InputError::too_large(format!(
            "the guest environment is {encoded} bytes encoded; at most {MAX_ENV_JSON_BYTES} (it travels as one variable) — pass large values on stdin"
        )));
    }
    Ok(())
}

/// The schema's ranges for the limits, which an API server enforces before the operator sees
/// a spec: `timeoutMillis` 1 to [`MAX_TIMEOUT_MILLIS`] (the execution's and the function's
/// default), `maxOutputBytes` 0 to [`MAX_OUTPUT_BYTES`]. For callers that read manifests
/// without one.
pub fn admit(
    execution: Option<&WasmExecutionSpec>,
    function: &WasmFunctionSpec,
) -> Result<(), InputError> {
    let timeouts = [
        (
            execution.and_then(|e| e.timeout_millis),
            "spec.timeoutMillis",
        ),
        (
            function.defaults.timeout_millis,
            "the function's spec.defaults.timeoutMillis",
        ),
    ];
    for (value, field) in timeouts {
        match value {
            Some(ms) if ms < 1 => {
                return Err(InputError::invalid(format!(
                    "{field} {ms} must be positive"
                )))
            }
            Some(ms) if ms > MAX_TIMEOUT_MILLIS => {
                return Err(InputError::invalid(format!(
                    "{field} {ms} is over {MAX_TIMEOUT_MILLIS} (one day)"
                )))
            }
            _ => {}
        }
    }
    match execution.and_then(|e| e.max_output_bytes) {
        Some(bytes) if bytes < 0 => Err(InputError::invalid(format!(
            "spec.maxOutputBytes {bytes} must not be negative"
        ))),
        Some(bytes) if bytes.unsigned_abs() > MAX_OUTPUT_BYTES => Err(InputError::invalid(
            format!("spec.maxOutputBytes {bytes} is over {MAX_OUTPUT_BYTES}"),
        )),
        _ => Ok(()),
    }
}

/// Parses a byte size: plain bytes or a quantity with one of the units `k`, `M`, `G`, `Ki`,
/// `Mi`, `Gi` (the units the schema's `memoryLimit` pattern allows).
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (use bytes or a quantity like 128Mi)"))?;
    let multiplier: u64 = match unit {
        "" => 1,
        "k" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?} (use k, M, G, Ki, Mi, Gi)"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(json: serde_json::Value) -> WasmExecutionSpec {
        let mut spec = serde_json::json!({"functionRef": {"name": "f"}});
        spec.as_object_mut()
            .expect("object")
            .extend(json.as_object().expect("object").clone());
        serde_json::from_value(spec).expect("an execution spec")
    }

    fn function(defaults: serde_json::Value) -> WasmFunctionSpec {
        serde_json::from_value(serde_json::json!({
            "language": "wat",
            "source": {"code": "(module)"},
            "defaults": defaults,
        }))
        .expect("a function spec")
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_bare_execution_of_a_function_without_defaults_leaves_every_limit_to_the_caller() {
        let inputs = resolve(
            Some(&execution(serde_json::json!({}))),
            &function(serde_json::json!({})),
        )
        .expect("resolves");
        assert_eq!(inputs, Inputs::default());
    }

    #[test]
    fn the_executions_env_replaces_a_default_of_the_same_name_in_place_and_appends_new_names() {
        let f = function(serde_json::json!({"env": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C"}
        ]}));
        let e = execution(serde_json::json!({"env": [
            {"name": "B", "value": "x"}, {"name": "D"}, {"name": "A", "value": "y"}
        ]}));
        let inputs = resolve(Some(&e), &f).expect("resolves");
        assert_eq!(
            inputs.env,
            pairs(&[("A", "y"), ("B", "x"), ("C", ""), ("D", "")])
        );
        let alone = resolve(None, &f).expect("resolves");
        assert_eq!(alone.env, pairs(&[("A", "1"), ("B", "2"), ("C", "")]));
    }

    #[test]
    fn a_name_repeated_within_one_list_keeps_its_first_place_and_its_last_value() {
        let e = execution(serde_json::json!({"env": [
            {"name": "X", "value": "1"}, {"name": "Y", "value": "2"}, {"name": "X", "value": "3"}
        ]}));
        let inputs = resolve(Some(&e), &function(serde_json::json!({}))).expect("resolves");
        assert_eq!(inputs.env, pairs(&[("X", "3"), ("Y", "2")]));
    }

    #[test]
    fn the_executions_limits_win_over_the_functions_defaults_field_by_field() {
        let f = function(serde_json::json!({"timeoutMillis": 5000, "memoryLimit": "64Mi"}));
        let alone = resolve(Some(&execution(serde_json::json!({}))), &f).expect("resolves");
        assert_eq!(
            (alone.timeout_ms, alone.memory_bytes),
            (Some(5000), Some(64 << 20))
        );
        let e = execution(serde_json::json!({"timeoutMillis": 100}));
        let inputs = resolve(Some(&e), &f).expect("resolves");
        assert_eq!(
            (inputs.timeout_ms, inputs.memory_bytes),
            (Some(100), Some(64 << 20))
        );
        let e = execution(serde_json::json!({"memoryLimit": "1M", "maxOutputBytes": 10}));
        let inputs = resolve(Some(&e), &f).expect("resolves");
        assert_eq!(
            (
                inputs.timeout_ms,
                inputs.memory_bytes,
                inputs.max_output_bytes
            ),
            (Some(5000), Some(1_000_000), Some(10))
        );
    }

    #[test]
    fn stdin_is_the_text_or_the_input_as_compact_json_and_never_both() {
        let text = execution(serde_json::json!({"stdin": "hi\n"}));
        assert_eq!(stdin(&text), Ok(Some("hi\n".to_owned())));
        let json = execution(serde_json::json!({"input": {"n": [1, 2]}}));
        assert_eq!(stdin(&json), Ok(Some(r#"{"n":[1,2]}"#.to_owned())));
        let both = execution(serde_json::json!({"stdin": "a", "input": 1}));
        let error = stdin(&both).expect_err("both");
        assert_eq!(error.refusal, Refusal::InvalidSpec);
        assert!(
            error.message.contains("spec.stdin and spec.input"),
            "{error}"
        );
    }

    #[test]
    fn stdin_over_256_kib_is_too_large_and_exactly_256_kib_is_not() {
        let at = execution(serde_json::json!({"stdin": "x".repeat(MAX_STDIN_BYTES)}));
        assert_eq!(
            stdin(&at).expect("fits").map(|s| s.len()),
            Some(MAX_STDIN_BYTES)
        );
        let over = execution(serde_json::json!({"input": "x".repeat(MAX_STDIN_BYTES)}));
        let error = stdin(&over).expect_err("two quotes over");
        assert_eq!(error.refusal, Refusal::InputTooLarge);
        assert!(
            error.message.starts_with("stdin is 262146 bytes"),
            "{error}"
        );
    }

    #[test]
    fn an_argument_or_an_environment_too_big_for_a_command_line_is_too_large() {
        let fits = vec!["a".repeat(MAX_ARG_BYTES)];
        assert_eq!(check_arguments(&fits, &[]), Ok(()));
        let long = vec!["a".repeat(MAX_ARG_BYTES + 1)];
        let error = check_arguments(&long, &[]).expect_err("one too long");
        assert_eq!(error.refusal, Refusal::InputTooLarge);
        assert!(
            error.message.starts_with("args[0] is 131072 bytes"),
            "{error}"
        );
        let many = vec!["a".repeat(100_000); 11];
        let error = check_arguments(&many, &[]).expect_err("too many");
        assert!(
            error.message.starts_with("args total 1100011 bytes"),
            "{error}"
        );
        // ["K=<value>"]: 6 bytes besides the value.
        let env = pairs(&[("K", &"v".repeat(MAX_ENV_JSON_BYTES - 6))]);
        assert_eq!(check_arguments(&[], &env), Ok(()));
        let env = pairs(&[("K", &"v".repeat(MAX_ENV_JSON_BYTES - 5))]);
        let error = check_arguments(&[], &env).expect_err("one byte over");
        assert_eq!(error.refusal, Refusal::InputTooLarge);
        assert!(
            error
                .message
                .contains("the guest environment is 131009 bytes"),
            "{error}"
        );
    }

    #[test]
    fn the_layered_environment_is_what_is_measured_not_each_list_alone() {
        let half = "v".repeat(MAX_ENV_JSON_BYTES / 2);
        let f = function(serde_json::json!({"env": [{"name": "A", "value": half}]}));
        let replaces = execution(serde_json::json!({"env": [{"name": "A", "value": half}]}));
        assert!(resolve(Some(&replaces), &f).is_ok(), "one variable");
        let adds = execution(serde_json::json!({"env": [{"name": "B", "value": half}]}));
        let error = resolve(Some(&adds), &f).expect_err("two variables");
        assert_eq!(error.refusal, Refusal::InputTooLarge);
    }

    #[test]
    fn memory_limits_parse_as_quantities_and_below_one_page_are_refused_naming_the_field() {
        let e = execution(serde_json::json!({"memoryLimit": "64Ki"}));
        let inputs = resolve(Some(&e), &function(serde_json::json!({}))).expect("one page");
        assert_eq!(inputs.memory_bytes, Some(64 << 10));
        for (spec, defaults, says) in [
            (
                "1k",
                None,
                "memoryLimit 1000 bytes is below one WebAssembly page",
            ),
            ("12X", None, "spec.memoryLimit: invalid size unit \"X\""),
            ("12Ti", None, "spec.memoryLimit: invalid size unit \"Ti\""),
            ("1K", None, "spec.memoryLimit: invalid size unit \"K\""),
            (
                "",
                Some("64"),
                "memoryLimit 64 bytes is below one WebAssembly page",
            ),
            (
                "",
                Some("lots"),
                "the function's spec.defaults.memoryLimit: \"lots\" is not a size",
            ),
        ] {
            let e = if spec.is_empty() {
                execution(serde_json::json!({}))
            } else {
                execution(serde_json::json!({"memoryLimit": spec}))
            };
            let f = function(serde_json::json!({"memoryLimit": defaults}));
            let error = resolve(Some(&e), &f).expect_err(spec);
            assert_eq!(error.refusal, Refusal::InvalidSpec, "{spec}");
            assert!(error.message.starts_with(says), "{spec}: {error}");
        }
    }

    #[test]
    fn values_outside_the_schemas_ranges_resolve_clamped_as_the_operator_always_did() {
        // The API server refuses these before the operator sees them; a caller that skips
        // `admit` gets the operator's clamps.
        let e = execution(serde_json::json!({"timeoutMillis": 0, "maxOutputBytes": -1}));
        let inputs = resolve(Some(&e), &function(serde_json::json!({}))).expect("clamped");
        assert_eq!(
            (inputs.timeout_ms, inputs.max_output_bytes),
            (Some(1), Some(0))
        );
        let e = execution(serde_json::json!({"timeoutMillis": -5, "maxOutputBytes": 1 << 20}));
        let inputs = resolve(Some(&e), &function(serde_json::json!({}))).expect("clamped");
        assert_eq!(
            (inputs.timeout_ms, inputs.max_output_bytes),
            (Some(1), Some(MAX_OUTPUT_BYTES))
        );
    }

    #[test]
    fn admit_refuses_what_the_schema_refuses_naming_the_field_and_passes_its_bounds() {
        let f = function(serde_json::json!({}));
        for (spec, says) in [
            (
                serde_json::json!({"timeoutMillis": 0}),
                "spec.timeoutMillis 0 must be positive",
            ),
            (
                serde_json::json!({"timeoutMillis": 86_400_001}),
                "spec.timeoutMillis 86400001 is over 86400000",
            ),
            (
                serde_json::json!({"maxOutputBytes": -1}),
                "spec.maxOutputBytes -1 must not be negative",
            ),
            (
                serde_json::json!({"maxOutputBytes": 65537}),
                "spec.maxOutputBytes 65537 is over 65536",
            ),
        ] {
            let error = admit(Some(&execution(spec.clone())), &f).expect_err(&spec.to_string());
            assert_eq!(error.refusal, Refusal::InvalidSpec);
            assert_eq!(error.message.split(" (").next(), Some(says), "{spec}");
        }
        let bounds = [
            serde_json::json!({"timeoutMillis": 1, "maxOutputBytes": 0}),
            serde_json::json!({"timeoutMillis": MAX_TIMEOUT_MILLIS, "maxOutputBytes": MAX_OUTPUT_BYTES}),
        ];
        for spec in bounds {
            assert_eq!(admit(Some(&execution(spec.clone())), &f), Ok(()), "{spec}");
        }
        let bad_default = function(serde_json::json!({"timeoutMillis": -1}));
        let error = admit(None, &bad_default).expect_err("function default");
        assert_eq!(
            error.message,
            "the function's spec.defaults.timeoutMillis -1 must be positive"
        );
    }

    #[test]
    fn quantities_take_the_schemas_units_and_refuse_the_rest() {
        for (text, bytes) in [
            ("134217728", 134_217_728),
            ("128Mi", 128 << 20),
            ("2Gi", 2 << 30),
            ("500k", 500_000),
            ("3M", 3_000_000),
            ("1G", 1_000_000_000),
            ("4Ki", 4096),
        ] {
            assert_eq!(parse_quantity(text), Ok(bytes), "{text}");
        }
        for bad in [
            "12Ti",
            "Mi",
            "-1",
            "1K",
            "1.5Gi",
            "99999999999999999999Gi",
            "99999999999Gi",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_env_keeps_the_order_of_first_appearance() {
        let mut env = Vec::new();
        set_env(&mut env, "B", "1".into());
        set_env(&mut env, "A", "2".into());
        set_env(&mut env, "B", "3".into());
        assert_eq!(env, pairs(&[("B", "3"), ("A", "2")]));
    }
}
