//! The run contract: the settings of one run as the operator decides them and every runner takes
//! them, with one encoding per transport — `wasmfn exec` flags for container pods, `WASMFN_*`
//! container variables for Wasm pods (the shim), and this type's JSON for anything that speaks
//! serde. A setting added here reaches every runner or fails the round-trip tests; that is how
//! `maxOutputBytes` once got lost on the Wasm-pod path.

use serde::{Deserialize, Serialize};

use crate::trace::TRACEPARENT_ENV;

/// Settings of one run. Limits left out take the runner's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSettings {
    /// Wall-clock limit in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Linear-memory cap in bytes (whole 64 KiB pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Bytes of each stream the result document keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// A library module's export to call instead of `_start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke: Option<Invoke>,
    /// A file (inside the runner's view) whose contents are the guest's stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_file: Option<String>,
    /// The guest's whole environment, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// The guest's arguments after `argv[0]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// W3C traceparent the run's spans belong under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A reactor call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoke {
    /// The export.
    pub export: String,
    /// Its arguments (JSON numbers), checked against the export's signature by the runner:
    /// anything else ends the run with reason BadArguments.
    pub args: Vec<serde_json::Value>,
}

/// The shim's variable names (also what `wasmfn exec` would call them).
pub mod env_names {
    /// Every setting's prefix; variables with it are never the guest's.
    pub const SETTINGS_PREFIX: &str = "WASMFN_";
    /// [`super::RunSettings::timeout_ms`].
    pub const TIMEOUT_MS: &str = "WASMFN_TIMEOUT_MS";
    /// [`super::RunSettings::memory_bytes`].
    pub const MEMORY_BYTES: &str = "WASMFN_MEMORY_BYTES";
    /// [`super::RunSettings::max_output_bytes`].
    pub const MAX_OUTPUT_BYTES: &str = "WASMFN_MAX_OUTPUT_BYTES";
    /// [`super::Invoke::export`].
    pub const INVOKE: &str = "WASMFN_INVOKE";
    /// [`super::Invoke::args`], a JSON array.
    pub const INVOKE_ARGS: &str = "WASMFN_INVOKE_ARGS";
    /// [`super::RunSettings::stdin_file`].
    pub const STDIN_FILE: &str = "WASMFN_STDIN_FILE";
    /// [`super::RunSettings::env`], a JSON array of `KEY=VALUE` strings.
    pub const GUEST_ENV: &str = "WASMFN_GUEST_ENV";
}

/// A setting the shim could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadSetting(pub String);

impl RunSettings {
    /// A value with every field set, to values an encoding must take care with (spaces, `=`,
    /// a leading dash, unicode, an empty value): the round-trip tests of every transport use it,
    /// so a field one encoding forgets fails its test.
    pub fn every_field_set() -> RunSettings {
        RunSettings {
            timeout_ms: Some(1500),
            memory_bytes: Some(32 << 20),
            max_output_bytes: Some(777),
            invoke: Some(Invoke {
                export: "add".into(),
                args: vec![3.into(), (-1.5).into()],
            }),
            stdin_file: Some("/inputs/stdin".into()),
            env: vec![
                ("B".into(), "2".into()),
                ("A".into(), "x=y z".into()),
                ("EMPTY".into(), String::new()),
            ],
            args: vec!["--flag".into(), "two words".into(), "ünï".into()],
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        }
    }

    /// `wasmfn exec` arguments (after `wasmfn`) that run `module` with these settings.
    pub fn to_exec_args(&self, module: &str) -> Vec<String> {
        let mut args = vec!["exec".to_owned()];
        if let Some(ms) = self.timeout_ms {
            args.push(format!("--timeout={ms}ms"));
        }
        if let Some(bytes) = self.memory_bytes {
            args.push(format!("--memory={bytes}"));
        }
        if let Some(bytes) = self.max_output_bytes {
            args.push(format!("--max-output={bytes}"));
        }
        if let Some(path) = &self.stdin_file {
            args.push(format!("--stdin-file={path}"));
        }
        if let Some(parent) = &self.traceparent {
            args.push(format!("--traceparent={parent}"));
        }
        if let Some(invoke) = &self.invoke {
            args.push(format!("--invoke={}", invoke.export));
            args.push(format!("--args={}", numbers_json(&invoke.args)));
        }
        for (key, value) in &self.env {
            args.push(format!("--env={key}={value}"));
        }
        args.push(module.to_owned());
        args.push("--".to_owned());
        args.extend(self.args.iter().cloned());
        args
    }

    /// The shim's container variables for these settings. The guest's arguments travel in the
    /// container's command instead (after the module).
    pub fn to_shim_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        let mut push = |name: &str, value: String| env.push((name.to_owned(), value));
        if let Some(ms) = self.timeout_ms {
            push(env_names::TIMEOUT_MS, ms.to_string());
        }
        if let Some(bytes) = self.memory_bytes {
            push(env_names::MEMORY_BYTES, bytes.to_string());
        }
        if let Some(bytes) = self.max_output_bytes {
            push(env_names::MAX_OUTPUT_BYTES, bytes.to_string());
        }
        let guest_env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        push(
            env_names::GUEST_ENV,
            serde_json::to_string(&guest_env).unwrap_or_else(|_| "[]".to_owned()),
        );
        if let Some(path) = &self.stdin_file {
            push(env_names::STDIN_FILE, path.clone());
        }
        if let Some(parent) = &self.traceparent {
            push(TRACEPARENT_ENV, parent.clone());
        }
        if let Some(invoke) = &self.invoke {
            push(env_names::INVOKE, invoke.export.clone());
            push(env_names::INVOKE_ARGS, numbers_json(&invoke.args));
        }
        env
    }

    /// Reads the settings from a container's variables and the guest arguments from its
    /// command. Without `WASMFN_GUEST_ENV`, the guest gets the variables that are not settings
    /// (those without the `WASMFN_` prefix). `export_in_command` is the runwasi convention
    /// (`module.wasm#export`); `WASMFN_INVOKE` wins over it, and `_start` means no call.
    pub fn from_shim_env(
        env: &[(String, String)],
        args: Vec<String>,
        export_in_command: Option<String>,
    ) -> Result<Self, BadSetting> {
        let setting = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let number = |name: &str| {
            setting(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| BadSetting(format!("{name}={v:?} is not a whole number")))
                })
                .transpose()
        };
        let export = setting(env_names::INVOKE)
            .map(str::to_owned)
            .or(export_in_command)
            .filter(|e| e != "_start");
        let invoke = match export {
            None => None,
            Some(export) => {
                let text = setting(env_names::INVOKE_ARGS).unwrap_or("[]");
                let args = serde_json::from_str(text).map_err(|e| {
                    BadSetting(format!(
                        "{} is not a JSON array: {e}",
                        env_names::INVOKE_ARGS
                    ))
                })?;
                Some(Invoke { export, args })
            }
        };
        let guest_env = match setting(env_names::GUEST_ENV) {
            Some(json) => guest_env_from_json(json)?,
            None => env
                .iter()
                .filter(|(k, _)| !k.starts_with(env_names::SETTINGS_PREFIX))
                .cloned()
                .collect(),
        };
        Ok(RunSettings {
            timeout_ms: number(env_names::TIMEOUT_MS)?,
            memory_bytes: number(env_names::MEMORY_BYTES)?,
            max_output_bytes: number(env_names::MAX_OUTPUT_BYTES)?,
            invoke,
            stdin_file: setting(env_names::STDIN_FILE)
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
            env: guest_env,
            args,
            traceparent: setting(TRACEPARENT_ENV).map(str::to_owned),
        })
    }
}

fn numbers_json(numbers: &[serde_json::Value]) -> String {
    serde_json::to_string(numbers).unwrap_or_else(|_| "[]".to_owned())
}

fn guest_env_from_json(json: &str) -> Result<Vec<(String, String)>, BadSetting> {
    let entries: Vec<String> = serde_json::from_str(json).map_err(|e| {
        BadSetting(format!(
            "{} is not a JSON array of KEY=VALUE strings: {e}",
            env_names::GUEST_ENV
        ))
    })?;
    entries
        .into_iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(BadSetting(format!(
                "{} entry {entry:?} is not KEY=VALUE",
                env_names::GUEST_ENV
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_variables_carry_every_setting_back() {
        for settings in [RunSettings::every_field_set(), RunSettings::default()] {
            let env = settings.to_shim_env();
            let back =
                RunSettings::from_shim_env(&env, settings.args.clone(), None).expect("readable");
            assert_eq!(back, settings, "{env:?}");
        }
    }

    #[test]
    fn the_json_encoding_carries_every_setting_back() {
        let settings = RunSettings::every_field_set();
        let json = serde_json::to_string(&settings).expect("json");
        assert_eq!(
            serde_json::from_str::<RunSettings>(&json).expect("parse"),
            settings
        );
    }

    #[test]
    fn without_a_guest_environment_the_other_variables_are_the_guests_and_the_command_may_name_the_export(
    ) {
        let env = vec![
            ("WASMFN_TIMEOUT_MS".to_owned(), "10".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let settings =
            RunSettings::from_shim_env(&env, Vec::new(), Some("add".into())).expect("readable");
        assert_eq!(settings.env, [("PATH".to_owned(), "/bin".to_owned())]);
        assert_eq!(settings.invoke.expect("invoke").export, "add");
        let start = RunSettings::from_shim_env(&env, Vec::new(), Some("_start".into()));
        assert_eq!(start.expect("readable").invoke, None);
    }

    #[test]
    fn unreadable_variables_are_named_in_the_error() {
        let cases = [
            ("WASMFN_TIMEOUT_MS", "soon"),
            ("WASMFN_MAX_OUTPUT_BYTES", "-1"),
            ("WASMFN_GUEST_ENV", "[\"NOEQUALS\"]"),
            ("WASMFN_GUEST_ENV", "{}"),
        ];
        for (name, value) in cases {
            let env = vec![(name.to_owned(), value.to_owned())];
            let BadSetting(message) =
                RunSettings::from_shim_env(&env, Vec::new(), None).expect_err(value);
            assert!(message.contains(name), "{message}");
        }
        let env = vec![
            ("WASMFN_INVOKE".to_owned(), "f".to_owned()),
            ("WASMFN_INVOKE_ARGS".to_owned(), "{\"one\": 1}".to_owned()),
        ];
        let BadSetting(message) =
            RunSettings::from_shim_env(&env, Vec::new(), None).expect_err("an object");
        assert!(message.contains("WASMFN_INVOKE_ARGS"), "{message}");
    }
}
