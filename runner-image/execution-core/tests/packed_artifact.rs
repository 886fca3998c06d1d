//! A packed artifact of the ConfigMap store (manifest + gzip parts in one directory, as a
//! projected volume of the artifact's ConfigMaps mounts it) runs like the plain module, and any
//! damage to it ends the run with a message naming what is wrong — before guest code runs.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::{Path, PathBuf};

use support::*;
use wasmfn_execution::artifact::{is_packed, ModuleBytes};
use wasmfn_execution::{ModuleSource, Reason, RunRequest};

/// Packs `module` into `dir` in parts of `part_bytes`.
fn packed(module: &Path, dir: &Path, part_bytes: usize) -> wasmfn_artifact::Packed {
    let bytes = std::fs::read(module).unwrap();
    let packed = wasmfn_artifact::pack(&bytes, wasmfn_artifact::WASM_MEDIA_TYPE, part_bytes);
    packed.write_dir(dir).unwrap();
    packed
}

fn run(path: &Path) -> wasmfn_execution::Execution {
    exec(&RunRequest::command(ModuleSource::Path(path.to_path_buf())))
}

#[test]
fn a_packed_module_runs_from_its_directory_or_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let module = guest("rust/probe");
    let artifact = dir.path().join("artifact");
    let packed = packed(&module, &artifact, 4096);
    assert!(packed.parts.len() >= 3, "{} parts", packed.parts.len());
    let plain = run(&module);
    assert_eq!(plain.document.reason, Reason::Completed);

    for path in [artifact.clone(), artifact.join("artifact.json")] {
        assert!(is_packed(&path));
        let execution = run(&path);
        assert_eq!(
            execution.document.reason,
            Reason::Completed,
            "{}",
            execution.document.message
        );
        assert_eq!(execution.document.exit_code, Some(0));
        let info = execution.document.module.as_ref().unwrap();
        assert_eq!(
            info.sha256, packed.manifest.digest,
            "the unpacked module's digest"
        );
        assert_eq!(info.size, packed.manifest.size);
        assert_eq!(stdout_text(&execution), stdout_text(&plain));
        assert!(!execution.document.runtime.aot);
    }
    assert_eq!(
        ModuleBytes::read(&artifact).unwrap().bytes(),
        std::fs::read(&module).unwrap()
    );
}

#[test]
fn a_named_aot_form_of_the_unpacked_module_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let module = guest("wat/hello");
    let artifact = dir.path().join("artifact");
    packed(&module, &artifact, 64);
    let mut request = RunRequest::command(ModuleSource::Path(artifact));
    request.aot = Some(aot_of(&module));
    let execution = exec(&request);
    assert_eq!(execution.document.reason, Reason::Completed);
    assert!(
        execution.document.runtime.aot,
        "the AOT form is bound to the module digest, which the packed form keeps: {:?}",
        execution.document.runtime.aot_rejected
    );
    assert_eq!(stdout_text(&execution), "hello\n");
}

fn damaged(damage: impl FnOnce(&Path)) -> wasmfn_execution::Execution {
    let dir = tempfile::tempdir().unwrap();
    let artifact: PathBuf = dir.path().join("artifact");
    packed(&guest("rust/probe"), &artifact, 4096);
    damage(&artifact);
    let execution = run(&artifact);
    assert_eq!(execution.document.reason, Reason::InvalidModule);
    assert!(execution.document.module.is_none(), "nothing ran");
    execution
}

#[test]
fn a_corrupt_part_is_refused_with_the_part_and_both_digests() {
    let execution = damaged(|dir| {
        let part = dir.join("module.gz.001");
        let mut bytes = std::fs::read(&part).unwrap();
        bytes[100] ^= 0x55;
        std::fs::write(&part, bytes).unwrap();
    });
    let message = &execution.document.message;
    assert!(message.contains("module.gz.001"), "{message}");
    assert!(message.contains("digest mismatch"), "{message}");
    assert_eq!(message.matches("sha256:").count(), 2, "{message}");
}

#[test]
fn a_missing_part_is_refused_by_name() {
    let execution = damaged(|dir| std::fs::remove_file(dir.join("module.gz.002")).unwrap());
    let message = &execution.document.message;
    assert!(message.contains("module.gz.002"), "{message}");
    assert!(message.contains("missing"), "{message}");
}

#[test]
fn a_manifest_of_another_version_is_refused() {
    let execution = damaged(|dir| {
        let path = dir.join("artifact.json");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(path, text.replace("wasmfn.dev/v1alpha1", "wasmfn.dev/v9")).unwrap();
    });
    assert!(
        execution.document.message.contains("wasmfn.dev/v9"),
        "{}",
        execution.document.message
    );
}

#[test]
fn a_directory_without_a_manifest_is_not_a_module() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!is_packed(dir.path()));
    let execution = run(dir.path());
    assert_eq!(execution.document.reason, Reason::InvalidModule);
}
