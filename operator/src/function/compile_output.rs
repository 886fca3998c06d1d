//! Reading what a compile Job produced: the manifest line and the base64 artifact block in the
//! container log (`wasmfn compile --log-artifact`), or the `CompileFailure` document in the
//! termination message. Pure: the reconciler fetches the log and pod status and hands them in.

use base64::Engine as _;
use serde::Deserialize;
use wasmfn_artifact::{check_no_native_code, sha256_digest, NativeCodeError, NATIVE_CODE_REASON};

/// The reasons a builder's `CompileFailure` document may give (`wasmfn-compile`'s
/// `Error::reason`). The document is the builder container's termination message, which the
/// author's build script could also write: a reason outside this set is never passed on into
/// a condition reason, an event reason or a metric label ([`BUILDER_FAILED`] instead).
pub const BUILDER_REASONS: [&str; 10] = [
    "UnsupportedLanguage",
    "InvalidSource",
    "SourceTooLarge",
    "CompileError",
    "ToolchainCrashed",
    "TimedOut",
    "ArtifactTooLarge",
    "ToolchainMissing",
    "Configuration",
    "InternalError",
];
/// The reason of a builder that ended without a usable result.
pub const BUILDER_FAILED: &str = "BuilderFailed";

/// Longest diagnostics list kept in status.
const MAX_DIAGNOSTICS: usize = 20;
/// Longest diagnostic line kept in status.
const MAX_DIAGNOSTIC_CHARS: usize = 400;

/// A successful compile's output.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledModule {
    /// The module (or checked script) bytes, digest-verified.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Media type from the manifest.
    pub media_type: String,
    /// Toolchain time in milliseconds.
    pub compile_ms: f64,
    /// `name version` of each tool.
    pub toolchain: Vec<String>,
}

/// A failed compile, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileFailure {
    /// Fixed reason (`CompileError`, `TimedOut`, `OutOfMemory`, …).
    pub reason: String,
    /// True when the function's source is at fault (final at once); false when the platform
    /// is (the builder could not run or crashed: the compile is tried again).
    pub user_error: bool,
    /// One line.
    pub message: String,
    /// `file:line:col: severity: message` lines, trimmed.
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestLine {
    kind: String,
    artifact: ManifestArtifact,
    #[serde(default)]
    toolchain: Vec<ToolIdentity>,
    #[serde(default)]
    timings: Option<Timings>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestArtifact {
    digest: String,
    size: u64,
    media_type: String,
}

#[derive(Debug, Deserialize)]
struct ToolIdentity {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Timings {
    compile_ms: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailureDocument {
    kind: String,
    reason: String,
    #[serde(default)]
    user_error: bool,
    #[serde(default)]
    message: String,
    #[serde(default)]
    diagnostics: Vec<String>,
}

/// Reads a successful compile from its container log. Errors say what was missing or wrong.
pub fn parse_success(log: &str) -> Result<CompiledModule, String> {
    let manifest = log
        .lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str::<ManifestLine>(line).ok())
        .find(|m| m.kind == "CompileManifest")
        .ok_or(
            "the log holds no CompileManifest line (a log rotated past the kubelet's \
             containerLogMaxSize keeps only its end: a module too large to travel in the log)",
        )?;
    let mut lines = log.lines();
    let header = lines
        .find(|l| l.starts_with("-----BEGIN WASMFN ARTIFACT "))
        .ok_or("the log holds no artifact block (was --log-artifact given?)")?;
    let gzipped = header.trim_end_matches('-').split_whitespace().last() == Some("gzip");
    // Decoded line by line (whole groups of four characters at a time), so the module is in
    // memory once beside the log, not also as one long base64 string.
    let mut bytes = Vec::with_capacity(
        usize::try_from(manifest.artifact.size)
            .unwrap_or_default()
            .min(log.len()),
    );
    let mut pending = String::new();
    let mut ended = false;
    for line in lines {
        if line.starts_with("-----END WASMFN ARTIFACT") {
            ended = true;
            break;
        }
        pending.push_str(line.trim());
        let whole = pending.len() - pending.len() % 4;
        decode_into(&pending[..whole], &mut bytes)?;
        pending.drain(..whole);
    }
    if !ended {
        return Err("the artifact block in the log is cut off (log rotated or truncated?)".into());
    }
    decode_into(&pending, &mut bytes)?;
    if gzipped {
        bytes = wasmfn_artifact::gunzip_bounded(&bytes, wasmfn_artifact::MAX_MODULE_BYTES)
            .map_err(|e| format!("the logged artifact does not decompress: {e}"))?;
    }
    let digest = sha256_digest(&bytes);
    if digest != manifest.artifact.digest || bytes.len() as u64 != manifest.artifact.size {
        return Err(format!(
            "the logged artifact ({} bytes, {digest}) does not match the manifest ({} bytes, {})",
            bytes.len(),
            manifest.artifact.size,
            manifest.artifact.digest
        ));
    }
    Ok(CompiledModule {
        bytes,
        digest,
        media_type: manifest.artifact.media_type,
        compile_ms: manifest.timings.map(|t| t.compile_ms).unwrap_or_default(),
        toolchain: manifest
            .toolchain
            .into_iter()
            .map(|t| format!("{} {}", t.name, t.version))
            .collect(),
    })
}

fn decode_into(text: &str, bytes: &mut Vec<u8>) -> Result<(), String> {
    base64::engine::general_purpose::STANDARD
        .decode_vec(text.as_bytes(), bytes)
        .map_err(|e| format!("the artifact block is not base64: {e}"))
}

/// The failure to record instead of storing `module` when it carries native code of its own
/// (a `wasmedge` custom section) or its sections do not parse. Scripts (interpreted languages)
/// are not Wasm and pass; anything that starts like a module is checked, whatever media type
/// the builder claimed, because the builder ran the author's code.
pub fn refuse_native_code(module: &CompiledModule) -> Option<CompileFailure> {
    if !module.bytes.starts_with(b"\0asm") {
        return None;
    }
    let refusal = check_no_native_code(&module.bytes).err()?;
    let reason = match refusal {
        NativeCodeError::Found { .. } => NATIVE_CODE_REASON,
        NativeCodeError::Malformed { .. } => "InvalidModule",
    };
    Some(CompileFailure {
        reason: reason.to_owned(),
        user_error: true,
        message: format!("the compiled module was not stored: {refusal}"),
        diagnostics: Vec::new(),
    })
}

/// Reads a failed compile from the container's termination message, else from the
/// container's state (`OOMKilled`, `Error`, or why it never started: `ImagePullBackOff`, …) and
/// the Job's failure reason (`DeadlineExceeded`, `BackoffLimitExceeded`).
///
/// Without a document from the builder only an out-of-memory kill blames the source. A Job
/// that passed its deadline without one is the platform's failure: the builder stops the
/// toolchain 15 s before the deadline and reports `TimedOut` itself, so a silent deadline means
/// the pod did not start in time (image pull, scheduling) or the builder hung.
pub fn parse_failure(
    termination_message: Option<&str>,
    container_reason: Option<&str>,
    job_reason: Option<&str>,
) -> CompileFailure {
    if let Some(document) = termination_message
        .and_then(|m| serde_json::from_str::<FailureDocument>(m).ok())
        .filter(|d| d.kind == "CompileFailure")
    {
        let known = BUILDER_REASONS.contains(&document.reason.as_str());
        let message = if known {
            trim(&document.message)
        } else {
            trim(&format!(
                "the builder reported the unknown reason {:?}: {}",
                document.reason, document.message
            ))
        };
        return CompileFailure {
            reason: if known {
                document.reason
            } else {
                BUILDER_FAILED.to_owned()
            },
            user_error: document.user_error,
            message,
            diagnostics: document
                .diagnostics
                .iter()
                .take(MAX_DIAGNOSTICS)
                .map(|d| trim(d))
                .collect(),
        };
    }
    let (reason, user_error, message) = match (container_reason, job_reason) {
        (Some("OOMKilled"), _) => (
            "OutOfMemory",
            true,
            "the compiler ran out of memory (the compile Job's memory limit)".to_owned(),
        ),
        (container, Some("DeadlineExceeded")) => (
            "DeadlineExceeded",
            false,
            format!(
                "the compile Job passed its deadline before the builder reported a result \
                 (container: {}); did its pod start? (image pull, scheduling)",
                container.unwrap_or("no state")
            ),
        ),
        (container, job) => (
            BUILDER_FAILED,
            false,
            format!(
                "the builder ended without a result (container: {}, job: {})",
                container.unwrap_or("no state"),
                job.unwrap_or("no reason")
            ),
        ),
    };
    CompileFailure {
        reason: reason.to_owned(),
        user_error,
        message,
        diagnostics: Vec::new(),
    }
}

fn trim(text: &str) -> String {
    match text.char_indices().nth(MAX_DIAGNOSTIC_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_for(bytes: &[u8], digest: &str, size: usize, ended: bool) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut log = format!(
            "warning: unused variable\n{{\"apiVersion\":\"wasmfn.dev/v1alpha1\",\"kind\":\"CompileManifest\",\
             \"artifact\":{{\"file\":\"module.wasm\",\"digest\":\"{digest}\",\"size\":{size},\
             \"mediaType\":\"application/wasm\"}},\"toolchain\":[{{\"name\":\"rustc\",\"version\":\"1.85\"}}],\
             \"timings\":{{\"compileMs\":321.5,\"totalMs\":400.0}}}}\n\
             -----BEGIN WASMFN ARTIFACT module.wasm {digest}-----\n"
        );
        for chunk in encoded.as_bytes().chunks(76) {
            log.push_str(std::str::from_utf8(chunk).expect("ascii"));
            log.push('\n');
        }
        if ended {
            log.push_str("-----END WASMFN ARTIFACT-----\n");
        }
        log
    }

    #[test]
    fn a_logged_artifact_is_decoded_and_verified() {
        let module: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let digest = sha256_digest(&module);
        let parsed = parse_success(&log_for(&module, &digest, module.len(), true)).expect("parsed");
        assert_eq!(parsed.bytes, module);
        assert_eq!(parsed.digest, digest);
        assert_eq!(parsed.media_type, "application/wasm");
        assert_eq!(parsed.compile_ms, 321.5);
        assert_eq!(parsed.toolchain, ["rustc 1.85"]);
    }

    /// `log_for` as the builder writes it now: the block gzipped and marked so.
    fn gzipped_log_for(module: &[u8], digest: &str) -> String {
        let plain = log_for(&wasmfn_artifact::gzip(module), digest, module.len(), true);
        plain.replace(
            &format!("{digest}-----\n"),
            &format!("{digest} gzip-----\n"),
        )
    }

    #[test]
    fn a_gzipped_block_is_decompressed_and_verified_against_the_uncompressed_digest() {
        // Compressible, as modules are: the log carries far fewer base64 lines than the module.
        let module: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let digest = sha256_digest(&module);
        let log = gzipped_log_for(&module, &digest);
        assert!(log.len() < module.len() / 10, "{} bytes of log", log.len());
        let parsed = parse_success(&log).expect("parsed");
        assert_eq!(parsed.bytes, module);
        assert_eq!(parsed.digest, digest);
        // The gzip marker is what asks for decompression: without it the bytes do not match.
        let unmarked = log.replace(" gzip-----", "-----");
        assert!(parse_success(&unmarked)
            .expect_err("compressed bytes")
            .contains("does not match"));
        let not_gzip = log_for(&module, &digest, module.len(), true).replace(
            &format!("{digest}-----\n"),
            &format!("{digest} gzip-----\n"),
        );
        assert!(parse_success(&not_gzip)
            .expect_err("not gzip")
            .contains("does not decompress"));
    }

    #[test]
    fn a_block_wrapped_at_any_width_decodes_to_the_same_module() {
        let module: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let digest = sha256_digest(&module);
        let log = log_for(&module, &digest, module.len(), true);
        let (head, rest) = log.split_at(log.find("-----BEGIN").expect("block"));
        let (begin, rest) = rest.split_at(rest.find('\n').expect("line") + 1);
        let (body, end) = rest.split_at(rest.find("-----END").expect("end"));
        let flat: String = body.split_whitespace().collect();
        for width in [1, 3, 50, 77, flat.len()] {
            let mut wrapped = format!("{head}{begin}");
            for chunk in flat.as_bytes().chunks(width) {
                wrapped.push_str(std::str::from_utf8(chunk).expect("ascii"));
                wrapped.push_str("  \n");
            }
            wrapped.push_str(end);
            let parsed = parse_success(&wrapped).unwrap_or_else(|e| panic!("width {width}: {e}"));
            assert_eq!(parsed.bytes, module, "width {width}");
        }
        let mut broken = log.clone();
        broken.insert_str(broken.find("-----END").expect("end"), "!!!!\n");
        assert!(parse_success(&broken)
            .expect_err("not base64")
            .contains("not base64"));
    }

    #[test]
    fn a_wrong_digest_a_cut_block_or_a_missing_manifest_is_an_error() {
        let module = b"\0asm\x01\0\0\0".to_vec();
        let digest = sha256_digest(&module);
        let wrong = sha256_digest(b"other");
        assert!(parse_success(&log_for(&module, &wrong, module.len(), true))
            .expect_err("digest")
            .contains("does not match"));
        assert!(parse_success(&log_for(&module, &digest, 3, true)).is_err());
        assert!(
            parse_success(&log_for(&module, &digest, module.len(), false))
                .expect_err("cut")
                .contains("cut off")
        );
        assert!(parse_success("just text\n")
            .expect_err("none")
            .contains("CompileManifest"));
    }

    fn compiled(bytes: &[u8]) -> CompiledModule {
        CompiledModule {
            bytes: bytes.to_vec(),
            digest: sha256_digest(bytes),
            media_type: "application/wasm".into(),
            compile_ms: 1.0,
            toolchain: Vec::new(),
        }
    }

    #[test]
    fn a_compiled_module_with_a_wasmedge_section_is_refused_and_a_clean_one_or_a_script_is_not() {
        let clean = b"\0asm\x01\0\0\0\x00\x05\x04name";
        assert_eq!(refuse_native_code(&compiled(clean)), None);
        assert_eq!(refuse_native_code(&compiled(b"print('hi')\n")), None);
        let native = b"\0asm\x01\0\0\0\x00\x0b\x08wasmedge\x7fE";
        let failure = refuse_native_code(&compiled(native)).expect("refused");
        assert_eq!(failure.reason, "NativeCodeSection");
        assert!(failure.user_error);
        assert!(
            failure.message.contains("\"wasmedge\""),
            "{}",
            failure.message
        );
        let cut = b"\0asm\x01\0\0\0\x00\x7f";
        assert_eq!(
            refuse_native_code(&compiled(cut)).expect("refused").reason,
            "InvalidModule"
        );
    }

    #[test]
    fn a_failure_document_is_taken_as_written_and_trimmed() {
        let long = "x".repeat(1000);
        let message = format!(
            "{{\"apiVersion\":\"wasmfn.dev/v1alpha1\",\"kind\":\"CompileFailure\",\"reason\":\"CompileError\",\
             \"userError\":true,\"message\":\"compile failed: main.rs:3:5: error: oops\",\
             \"diagnostics\":[\"main.rs:3:5: error: oops\",\"{long}\"]}}"
        );
        let failure = parse_failure(Some(&message), Some("Error"), Some("BackoffLimitExceeded"));
        assert_eq!(failure.reason, "CompileError");
        assert!(failure.user_error);
        assert_eq!(failure.diagnostics[0], "main.rs:3:5: error: oops");
        assert_eq!(
            failure.diagnostics[1].chars().count(),
            MAX_DIAGNOSTIC_CHARS + 1
        );
    }

    #[test]
    fn a_timed_out_document_blames_the_source_even_when_the_job_deadline_passed_too() {
        let message = "{\"kind\":\"CompileFailure\",\"reason\":\"TimedOut\",\"userError\":true,\
                       \"message\":\"the toolchain ran past 585s\"}";
        let failure = parse_failure(Some(message), Some("Error"), Some("DeadlineExceeded"));
        assert_eq!(failure.reason, "TimedOut");
        assert!(failure.user_error);
    }

    #[test]
    fn without_a_document_the_pod_and_job_reasons_decide() {
        assert_eq!(
            parse_failure(None, Some("OOMKilled"), None).reason,
            "OutOfMemory"
        );
        let deadline = parse_failure(
            Some("garbage"),
            Some("ImagePullBackOff"),
            Some("DeadlineExceeded"),
        );
        assert_eq!(deadline.reason, "DeadlineExceeded");
        assert!(!deadline.user_error, "a silent deadline is the platform's");
        assert!(
            deadline.message.contains("ImagePullBackOff"),
            "{}",
            deadline.message
        );
        let other = parse_failure(None, Some("Error"), Some("BackoffLimitExceeded"));
        assert_eq!(other.reason, "BuilderFailed");
        assert!(!other.user_error);
        assert!(other.message.contains("Error") && other.message.contains("BackoffLimitExceeded"));
    }

    #[test]
    fn a_reason_outside_the_builders_set_becomes_builder_failed_and_is_quoted_in_the_message() {
        let forged =
            "{\"kind\":\"CompileFailure\",\"reason\":\"pwned-0001 label\",\"userError\":true,\
                      \"message\":\"written by a build script\"}";
        let failure = parse_failure(Some(forged), Some("Error"), None);
        assert_eq!(failure.reason, BUILDER_FAILED);
        assert!(
            failure.message.contains("\"pwned-0001 label\"")
                && failure.message.contains("written by a build script"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn every_reason_the_builder_gives_is_kept() {
        for reason in BUILDER_REASONS {
            let document = format!("{{\"kind\":\"CompileFailure\",\"reason\":\"{reason}\"}}");
            assert_eq!(parse_failure(Some(&document), None, None).reason, reason);
        }
    }
}
