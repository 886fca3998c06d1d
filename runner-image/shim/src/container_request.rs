//! Turns a container's spec (args, env, the module source) into the execution core's
//! [`RunRequest`]. Pure apart from looking for an implicit AOT file; tested below.
//!
//! The container's `command[0]` names the module; the rest of the command line is the guest's
//! argv. The module is one of:
//!
//! | `command[0]` | the module |
//! |---|---|
//! | `/artifact/module.wasm` | a plain module file in the container's filesystem (e.g. one ConfigMap key) |
//! | `/artifact` (a directory holding `artifact.json`) or `/artifact/artifact.json` | a packed artifact of the ConfigMap store: the artifact's ConfigMaps mounted as one projected volume (manifest + gzip parts), unpacked and digest-verified before the run; a missing or corrupt part ends the run with reason `InvalidModule` and a message naming the part |
//! | anything, when the image is an OCI Wasm artifact | the image's Wasm layer |
//!
//! `module.wasm#export` names an export, as runwasi does. Run settings travel as container
//! environment variables (the same names `wasmfn exec` reads), which the guest does not see:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `WASMFN_TIMEOUT_MS` | wall-clock limit of the run | the core's default |
//! | `WASMFN_MEMORY_BYTES` | linear-memory cap (rounded down to whole 64 KiB pages) | the core's default |
//! | `WASMFN_MAX_OUTPUT_BYTES` | bytes of each stream the result document keeps | the core's default |
//! | `WASMFN_STDIN_FILE` | file whose contents are the guest's stdin (a mounted input volume) | empty stdin |
//! | `WASMFN_INVOKE` / `WASMFN_INVOKE_ARGS` | call this export of a library module with these JSON numbers | `_start` |
//! | `WASMFN_AOT` | AOT form to use when it matches the module and runtime | `<module>.aot.so` if that file exists (as for `wasmfn exec`); none for a packed artifact or a layer |
//! | `WASMFN_RESULT_PATH` | where the result document goes | `/dev/termination-log` |
//! | `WASMFN_TRACEPARENT` | W3C traceparent of the operator's attempt span: the result document then carries the run's spans as its children (an invalid value only costs the spans) | no spans |
//! | `WASMFN_GUEST_ENV` | the guest's whole environment as a JSON array of `KEY=VALUE` strings; the container's other variables (such as those the kubelet injects) are then not passed | the container's variables without the `WASMFN_` ones |

use std::path::{Path, PathBuf};
use wasmfn_execution::result::run_settings::RunSettings;
use wasmfn_execution::result::trace::TraceParent;
use wasmfn_execution::{aot, ModuleSource, RunRequest};

/// The Kubernetes default termination-message path.
pub(crate) const DEFAULT_RESULT_PATH: &str = "/dev/termination-log";

/// Where the module comes from, as the shim library hands it over.
#[derive(Debug)]
pub(crate) enum ModuleOrigin {
    /// A module file inside the container's filesystem.
    File(PathBuf),
    /// A packed artifact (directory or its `artifact.json`) inside the container's filesystem.
    Packed(PathBuf),
    /// The bytes of the image's Wasm layer.
    Layer(Vec<u8>),
}

/// A request plus where its result document goes.
#[derive(Debug)]
pub(crate) struct ContainerRun {
    pub(crate) request: RunRequest,
    pub(crate) result_path: PathBuf,
    /// The span the run's spans belong under, when one was given and is valid.
    pub(crate) traceparent: Option<TraceParent>,
}

/// Why a container cannot be turned into a run (reported in the result document): the run
/// contract's own error.
pub(crate) use wasmfn_execution::result::run_settings::BadSetting;

fn setting<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Builds the run for a container whose command line is `args` (argv[0] = the module) and whose
/// environment is `envs` (`KEY=VALUE` strings). The run settings are read through the run
/// contract ([`RunSettings::from_shim_env`]), the same type the operator wrote them from.
pub(crate) fn container_run(
    args: &[String],
    envs: &[String],
    origin: ModuleOrigin,
) -> Result<ContainerRun, BadSetting> {
    let env: Vec<(String, String)> = envs
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect();
    let program = args.first().map(String::as_str).unwrap_or("module.wasm");
    // `module.wasm#export` is the runwasi convention for naming an export in the command.
    let (program, export_in_command) = match program.split_once('#') {
        Some((path, export)) => (path, Some(export.to_string())),
        None => (program, None),
    };
    let program_name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module.wasm".into());
    let settings = RunSettings::from_shim_env(
        &env,
        args.iter().skip(1).cloned().collect(),
        export_in_command,
    )?;
    let named_aot = setting(&env, "WASMFN_AOT").map(PathBuf::from);
    let (module, aot) = match origin {
        // The same rule as `wasmfn exec`: a named form, else `<module>.aot.so` when it exists.
        ModuleOrigin::File(path) => {
            let aot = named_aot.or_else(|| aot::implicit_for(&path));
            (ModuleSource::Path(path), aot)
        }
        // The store holds no AOT form next to a packed module: only a named one is used.
        ModuleOrigin::Packed(path) => (ModuleSource::Path(path), named_aot),
        ModuleOrigin::Layer(bytes) => (ModuleSource::Bytes(bytes), named_aot),
    };
    let result_path = setting(&env, "WASMFN_RESULT_PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_RESULT_PATH)
        .into();
    let traceparent = settings
        .traceparent
        .as_deref()
        .and_then(|t| TraceParent::parse(t).ok());
    Ok(ContainerRun {
        request: RunRequest {
            aot,
            ..RunRequest::with_settings(module, program_name, &settings)
        },
        result_path,
        traceparent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wasmfn_execution::{Entry, StdinSource};

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_line_and_environment_become_the_guests_view() {
        let run = container_run(
            &strings(&["/artifact/module.wasm", "one", "--two"]),
            &strings(&[
                "PATH=/usr/bin",
                "GREETING=hi=there",
                "WASMFN_TIMEOUT_MS=1500",
            ]),
            ModuleOrigin::File("/artifact/module.wasm".into()),
        )
        .expect("valid");
        let r = &run.request;
        assert_eq!(r.program_name, "module.wasm");
        assert_eq!(r.args, strings(&["one", "--two"]));
        assert_eq!(
            r.env,
            vec![
                ("PATH".to_string(), "/usr/bin".to_string()),
                ("GREETING".to_string(), "hi=there".to_string())
            ],
            "run settings are not part of the guest's environment"
        );
        assert_eq!(r.entry, Entry::Command);
        assert_eq!(r.limits.timeout, Duration::from_millis(1500));
        assert!(
            matches!(&r.module, ModuleSource::Path(p) if p == Path::new("/artifact/module.wasm"))
        );
        assert_eq!(r.aot, None, "no AOT file next to the module: none offered");
        assert_eq!(run.result_path, PathBuf::from(DEFAULT_RESULT_PATH));
        assert!(matches!(r.stdin, StdinSource::Empty));
        assert_eq!(run.traceparent, None);
    }

    #[test]
    fn a_valid_traceparent_is_kept_and_an_invalid_one_never_stops_the_run() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let env = strings(&[&format!("WASMFN_TRACEPARENT={header}"), "A=b"]);
        let run = container_run(
            &strings(&["/m.wasm"]),
            &env,
            ModuleOrigin::File("/m.wasm".into()),
        )
        .expect("valid");
        assert_eq!(run.traceparent.map(|t| t.header()).as_deref(), Some(header));
        assert_eq!(run.request.env, vec![("A".to_string(), "b".to_string())]);
        let env = strings(&["WASMFN_TRACEPARENT=garbage"]);
        let run = container_run(
            &strings(&["/m.wasm"]),
            &env,
            ModuleOrigin::File("/m.wasm".into()),
        )
        .expect("a bad traceparent is not a bad setting");
        assert_eq!(run.traceparent, None);
    }

    #[test]
    fn settings_choose_stdin_memory_export_and_result_path() {
        let run = container_run(
            &strings(&["/m.wasm"]),
            &strings(&[
                "WASMFN_MEMORY_BYTES=1048576",
                "WASMFN_STDIN_FILE=/inputs/stdin",
                "WASMFN_INVOKE=add",
                "WASMFN_INVOKE_ARGS=[1, 2]",
                "WASMFN_RESULT_PATH=/results/doc.json",
            ]),
            ModuleOrigin::Layer(b"\0asm".to_vec()),
        )
        .expect("valid");
        let r = &run.request;
        assert_eq!(r.limits.memory_bytes, 1 << 20);
        assert!(matches!(&r.stdin, StdinSource::File(p) if p == Path::new("/inputs/stdin")));
        assert_eq!(
            r.entry,
            Entry::Invoke {
                export: "add".into(),
                args: vec![1.into(), 2.into()]
            }
        );
        assert!(matches!(&r.module, ModuleSource::Bytes(b) if b == b"\0asm"));
        assert_eq!(r.aot, None, "no AOT form unless named for layer modules");
        assert_eq!(run.result_path, PathBuf::from("/results/doc.json"));
    }

    #[test]
    fn an_aot_file_next_to_a_module_file_is_offered_as_wasmfn_exec_offers_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let module = dir.path().join("module.wasm");
        let implicit = aot::default_path_for(&module);
        std::fs::write(&implicit, b"").expect("aot file");
        let run = |env: &[&str]| {
            container_run(
                &strings(&[module.to_str().expect("utf-8")]),
                &strings(env),
                ModuleOrigin::File(module.clone()),
            )
            .expect("valid")
            .request
            .aot
        };
        assert_eq!(run(&[]), Some(implicit));
        assert_eq!(
            run(&["WASMFN_AOT=/aot/other.so"]),
            Some(PathBuf::from("/aot/other.so"))
        );
    }

    #[test]
    fn max_output_bytes_reaches_the_capture_limit() {
        let run = container_run(
            &strings(&["/artifact/module.wasm"]),
            &strings(&["WASMFN_MAX_OUTPUT_BYTES=777"]),
            ModuleOrigin::File("/artifact/module.wasm".into()),
        )
        .expect("valid");
        assert_eq!(run.request.limits.capture_bytes, 777);
    }

    #[test]
    fn a_packed_artifact_is_the_module_with_no_implicit_aot_form() {
        for command in ["/artifact", "/artifact/artifact.json"] {
            let run = container_run(
                &strings(&[command, "x"]),
                &[],
                ModuleOrigin::Packed(command.into()),
            )
            .expect("valid");
            let r = &run.request;
            assert!(matches!(&r.module, ModuleSource::Path(p) if p == Path::new(command)));
            assert_eq!(
                r.aot, None,
                "no AOT form is guessed next to a packed artifact"
            );
            assert_eq!(r.args, strings(&["x"]));
        }
        let run = container_run(
            &strings(&["/artifact"]),
            &strings(&["WASMFN_AOT=/aot/module.aot.so"]),
            ModuleOrigin::Packed("/artifact".into()),
        )
        .expect("valid");
        assert_eq!(
            run.request.aot.as_deref(),
            Some(Path::new("/aot/module.aot.so"))
        );
    }

    #[test]
    fn an_explicit_guest_environment_replaces_the_containers() {
        let run = container_run(
            &strings(&["/m.wasm"]),
            &strings(&[
                "KUBERNETES_SERVICE_HOST=10.0.0.1",
                r#"WASMFN_GUEST_ENV=["B=2", "A=x=y"]"#,
            ]),
            ModuleOrigin::File("/m.wasm".into()),
        )
        .expect("valid");
        assert_eq!(
            run.request.env,
            vec![
                ("B".to_string(), "2".to_string()),
                ("A".to_string(), "x=y".to_string())
            ]
        );
        for bad in [
            r#"WASMFN_GUEST_ENV={"A":"1"}"#,
            r#"WASMFN_GUEST_ENV=["=1"]"#,
        ] {
            let e = container_run(
                &strings(&["/m.wasm"]),
                &strings(&[bad]),
                ModuleOrigin::File("/m.wasm".into()),
            )
            .expect_err("rejected");
            assert!(e.0.contains("WASMFN_GUEST_ENV"), "{}", e.0);
        }
    }

    #[test]
    fn an_export_can_be_named_in_the_command() {
        let run = container_run(
            &strings(&["/lib.wasm#add"]),
            &[],
            ModuleOrigin::File("/lib.wasm".into()),
        )
        .expect("valid");
        assert_eq!(run.request.entry.export_name(), "add");
        assert_eq!(run.request.program_name, "lib.wasm");
    }

    #[test]
    fn malformed_settings_are_reported_not_ignored() {
        let bad = |env: &str| {
            container_run(
                &strings(&["/m.wasm"]),
                &strings(&[env]),
                ModuleOrigin::File("/m.wasm".into()),
            )
            .expect_err("rejected")
        };
        assert!(bad("WASMFN_TIMEOUT_MS=soon")
            .0
            .contains("WASMFN_TIMEOUT_MS"));
        assert!(bad("WASMFN_MEMORY_BYTES=-1")
            .0
            .contains("WASMFN_MEMORY_BYTES"));
        let e = container_run(
            &strings(&["/m.wasm"]),
            &strings(&["WASMFN_INVOKE=add", "WASMFN_INVOKE_ARGS={}"]),
            ModuleOrigin::File("/m.wasm".into()),
        )
        .expect_err("rejected");
        assert!(e.0.contains("WASMFN_INVOKE_ARGS"));
    }
}
