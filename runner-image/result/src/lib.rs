//! The result document: what one run of a function produced, as every front end reports it.
//!
//! It is the contract between the data plane (`wasmfn exec`, the containerd shim, later the agent)
//! and the operator, which reads it from the pod's termination message. Kubernetes truncates
//! termination messages at 4096 bytes, so [`ResultDocument::to_json`] — the one serializer — always
//! produces at most [`MAX_DOCUMENT_BYTES`] bytes: it trims the stdout/stderr heads (never the sizes,
//! digests or flags) until the document fits.

pub mod run_settings;
pub mod trace;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the document's schema; bump when a field changes meaning.
pub const API_VERSION: &str = "wasmfn.dev/v1alpha1";
/// Kind of the document, so a reader can tell it from other JSON in a termination message.
pub const KIND: &str = "WasmExecutionResult";
/// The Kubernetes termination-message limit; the serialized document never exceeds it.
pub const MAX_DOCUMENT_BYTES: usize = 4096;
/// Longest `message` kept; a trap text longer than this is cut (at a character boundary).
const MAX_MESSAGE_BYTES: usize = 600;

/// Why a run ended. Each bad input maps to exactly one reason; the names are stable (metrics
/// labels, status fields) and never carry free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The guest finished with exit code 0 (or a reactor export returned).
    Completed,
    /// The guest called `proc_exit` with a non-zero code.
    NonZeroExit,
    /// The guest trapped (unreachable, out-of-bounds access, division by zero, …).
    Trap,
    /// The guest exhausted its call stack.
    StackOverflow,
    /// The wall-clock timeout expired and the guest was stopped.
    TimedOut,
    /// The guest needed more linear memory than the limit allows.
    MemoryLimitExceeded,
    /// The guest wrote more to stdout or stderr than the output limit allows and was stopped.
    OutputLimitExceeded,
    /// The module is not valid WebAssembly (not Wasm at all, truncated, fails validation,
    /// or needs imports the runtime does not provide).
    InvalidModule,
    /// The module carries native code of its own (a custom section named `wasmedge`, which
    /// WasmEdge would run instead of the module's WebAssembly); refused before loading.
    NativeCodeSection,
    /// The requested export (`_start` or a named function) does not exist.
    MissingExport,
    /// The arguments do not match the export's signature (count or types).
    BadArguments,
    /// The stdin source could not be read.
    InputUnreadable,
    /// The runner process running the guest died unexpectedly (signal, crash inside the runtime).
    Crashed,
    /// Anything else that went wrong in the runner itself; the message says what.
    InternalError,
}

impl Reason {
    /// A fixed name, usable as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Completed => "Completed",
            Reason::NonZeroExit => "NonZeroExit",
            Reason::Trap => "Trap",
            Reason::StackOverflow => "StackOverflow",
            Reason::TimedOut => "TimedOut",
            Reason::MemoryLimitExceeded => "MemoryLimitExceeded",
            Reason::OutputLimitExceeded => "OutputLimitExceeded",
            Reason::InvalidModule => "InvalidModule",
            Reason::NativeCodeSection => "NativeCodeSection",
            Reason::MissingExport => "MissingExport",
            Reason::BadArguments => "BadArguments",
            Reason::InputUnreadable => "InputUnreadable",
            Reason::Crashed => "Crashed",
            Reason::InternalError => "InternalError",
        }
    }

    /// Whether the run counts as a success.
    pub fn succeeded(self) -> bool {
        self == Reason::Completed
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runtime that ran the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeInfo {
    /// Always `wasmedge` today.
    pub name: String,
    /// The WasmEdge library version actually loaded (not the one compiled against).
    pub version: String,
    /// True when ahead-of-time compiled native code ran; false for the interpreter.
    pub aot: bool,
    /// Where the native code came from when `aot` is true: the AOT file a runner compiled from
    /// the module's verified bytes, and the digest and WasmEdge version it was compiled from
    /// (never a section inside the module: those are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aot_source: Option<String>,
    /// Why an AOT form was not used, when one was offered (digest or version mismatch, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aot_rejected: Option<String>,
}

/// Durations of the phases of a run, in milliseconds (fractions kept: runs are often sub-ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// Reading, parsing and validating the module (or mapping its AOT form).
    pub load_ms: f64,
    /// Instantiating it with its WASI imports.
    pub instantiate_ms: f64,
    /// Running the entry point.
    pub run_ms: f64,
    /// Everything, including isolation overhead.
    pub total_ms: f64,
}

/// One captured output stream: complete size and digest, plus as much of its beginning as fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamSummary {
    /// Total bytes the guest wrote (even beyond every cap).
    pub size: u64,
    /// `sha256:<hex>` of the complete stream, so a reader can verify the full log.
    pub sha256: String,
    /// True when `head` holds fewer bytes than `size`.
    pub truncated: bool,
    /// How `head` is encoded: `utf8` (verbatim text) or `base64` (binary output).
    pub encoding: HeadEncoding,
    /// The beginning of the stream.
    pub head: String,
}

/// Encoding of a [`StreamSummary::head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadEncoding {
    /// The head is valid UTF-8 and stored as is.
    Utf8,
    /// The head is binary and stored as standard base64.
    Base64,
}

impl StreamSummary {
    /// Summary of an empty stream.
    pub fn empty() -> Self {
        Self::from_parts(0, &Sha256::new().finalize(), &[])
    }

    /// Builds a summary from the stream's total size, its sha256 and its captured head.
    pub fn from_parts(size: u64, digest: &[u8], head: &[u8]) -> Self {
        let mut summary = StreamSummary {
            size,
            sha256: format!("sha256:{}", hex::encode(digest)),
            truncated: false,
            encoding: HeadEncoding::Utf8,
            head: String::new(),
        };
        summary.set_head(head);
        summary
    }

    /// Summary of a complete, in-memory stream.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self::from_parts(bytes.len() as u64, &Sha256::digest(bytes), bytes)
    }

    fn set_head(&mut self, head: &[u8]) {
        let (encoding, text) = encode_head(head);
        self.encoding = encoding;
        self.head = text;
        self.truncated = (self.head_len() as u64) < self.size;
    }

    /// Number of raw stream bytes `head` represents.
    pub fn head_len(&self) -> usize {
        match self.encoding {
            HeadEncoding::Utf8 => self.head.len(),
            HeadEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&self.head)
                .map(|b| b.len())
                .unwrap_or(0),
        }
    }

    /// The raw bytes of `head`.
    pub fn head_bytes(&self) -> Vec<u8> {
        match self.encoding {
            HeadEncoding::Utf8 => self.head.as_bytes().to_vec(),
            HeadEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&self.head)
                .unwrap_or_default(),
        }
    }

    /// Keeps at most `max` raw bytes of the head.
    fn shrink_head(&mut self, max: usize) {
        let raw = self.head_bytes();
        self.shrink_head_from(&raw, max);
    }

    /// Sets the head to the first `len` bytes of `raw` (the original head).
    fn shrink_head_from(&mut self, raw: &[u8], len: usize) {
        self.set_head(&raw[..len.min(raw.len())]);
    }
}

/// Text heads stay readable; a head that is not UTF-8 (after dropping a character cut in half at
/// the end) is binary output and goes out as base64 rather than lossily "fixed".
fn encode_head(head: &[u8]) -> (HeadEncoding, String) {
    match std::str::from_utf8(head) {
        Ok(text) => (HeadEncoding::Utf8, text.to_owned()),
        Err(error) if error.error_len().is_none() => {
            // Only the last character is incomplete (the cut fell inside it): keep the valid part.
            let valid = &head[..error.valid_up_to()];
            (
                HeadEncoding::Utf8,
                String::from_utf8(valid.to_vec()).unwrap_or_default(),
            )
        }
        Err(_) => (
            HeadEncoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(head),
        ),
    }
}

/// The module that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    /// `sha256:<hex>` of the `.wasm` bytes.
    pub sha256: String,
    /// Size of the `.wasm` bytes.
    pub size: u64,
    /// The export that was called (`_start` for a command module).
    pub entrypoint: String,
}

/// The script a run's interpreter module ran (Python or JavaScript functions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptInfo {
    /// `sha256:<hex>` of the script's bytes: the function's artifact digest.
    pub sha256: String,
    /// Size of the script.
    pub size: u64,
    /// `python` or `javascript`.
    pub language: String,
}

/// A value a reactor export returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReturnValue {
    /// i32 / i64 results.
    Integer(i64),
    /// f32 / f64 results that JSON can carry.
    Float(f64),
    /// NaN, infinities and reference values, spelled out.
    Text(String),
}

/// The result of one run. See the module documentation for the size guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultDocument {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// Why the run ended.
    pub reason: Reason,
    /// The guest's exit code (`proc_exit` value, 0 on a normal return); absent when the guest did
    /// not get to exit (trap, timeout, invalid module, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Human-readable detail (trap text, validation error, …), trimmed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Values returned by a reactor export.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returns: Vec<ReturnValue>,
    /// The module that ran (absent when it could not even be read): for a script, its
    /// interpreter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleInfo>,
    /// The script the interpreter module ran, for a Python or JavaScript function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptInfo>,
    /// The runtime and whether AOT code ran.
    pub runtime: RuntimeInfo,
    /// Phase durations.
    pub timings: Timings,
    /// The guest's stdout.
    pub stdout: StreamSummary,
    /// The guest's stderr.
    pub stderr: StreamSummary,
    /// The runner's spans, when the operator asked for them with a traceparent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<trace::RunTrace>,
}

impl ResultDocument {
    /// A document for `reason` with empty streams and zero timings; fill in the rest.
    pub fn new(reason: Reason, runtime: RuntimeInfo) -> Self {
        ResultDocument {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            reason,
            exit_code: None,
            message: String::new(),
            returns: Vec::new(),
            module: None,
            script: None,
            runtime,
            timings: Timings::default(),
            stdout: StreamSummary::empty(),
            stderr: StreamSummary::empty(),
            trace: None,
        }
    }

    /// The exit code a front end should exit with to mirror the guest: the guest's own code when
    /// it exited, 0 for a completed reactor call, otherwise a fixed code per failure class
    /// (like shells: 124 for a timeout, 125 for a runner-side problem, 126 for an unrunnable
    /// module, 128+9 for a killed guest, 134 for a trap).
    pub fn process_exit_code(&self) -> i32 {
        match (self.reason, self.exit_code) {
            (Reason::Completed, code) => return code.unwrap_or(0),
            // A failure never exits 0, even when the guest itself said 0.
            (_, Some(code)) if code != 0 => return code,
            _ => {}
        }
        match self.reason {
            Reason::Completed => 0,
            Reason::NonZeroExit => 1,
            Reason::TimedOut => 124,
            Reason::InternalError | Reason::InputUnreadable | Reason::Crashed => 125,
            Reason::InvalidModule
            | Reason::NativeCodeSection
            | Reason::MissingExport
            | Reason::BadArguments => 126,
            Reason::MemoryLimitExceeded | Reason::OutputLimitExceeded => 137,
            Reason::Trap | Reason::StackOverflow => 134,
        }
    }

    /// Records the run's spans as children of `parent`, `service` naming the runner; `started`
    /// is when the run began (see [`trace`]).
    pub fn attach_trace(
        &mut self,
        parent: &trace::TraceParent,
        service: &str,
        started: std::time::SystemTime,
    ) {
        self.trace = Some(trace::RunTrace::from_timings(
            parent,
            service,
            started,
            &self.timings,
        ));
    }

    /// Sets `message`, cut to a bounded length at a character boundary.
    pub fn set_message(&mut self, message: impl Into<String>) {
        let mut message = message.into();
        truncate_at_char_boundary(&mut message, MAX_MESSAGE_BYTES);
        self.message = message;
    }

    /// Serializes to JSON of at most [`MAX_DOCUMENT_BYTES`] bytes. The stream heads share what
    /// the rest of the document leaves (a head that needs less than half gives the rest to the
    /// other); each head is cut to the longest prefix whose JSON encoding fits its share.
    pub fn to_json(&self) -> String {
        let mut doc = self.clone();
        truncate_at_char_boundary(&mut doc.message, MAX_MESSAGE_BYTES);
        doc.returns.truncate(16);
        let full = serde_json::to_string(&doc).unwrap_or_default();
        if full.len() <= MAX_DOCUMENT_BYTES {
            return full;
        }
        let raw_out = doc.stdout.head_bytes();
        let raw_err = doc.stderr.head_bytes();
        doc.stdout.shrink_head(0);
        doc.stderr.shrink_head(0);
        let skeleton = serde_json::to_string(&doc).unwrap_or_default().len();
        // Each empty head serializes as `""`; those two bytes are part of the skeleton.
        let available = MAX_DOCUMENT_BYTES.saturating_sub(skeleton);
        let need_out = encoded_head_len(&raw_out, raw_out.len());
        let need_err = encoded_head_len(&raw_err, raw_err.len());
        let (budget_out, budget_err) = if need_out + need_err <= available {
            (need_out, need_err)
        } else if need_out <= available / 2 {
            (need_out, available - need_out)
        } else if need_err <= available / 2 {
            (available - need_err, need_err)
        } else {
            (available / 2, available - available / 2)
        };
        doc.stdout
            .shrink_head_from(&raw_out, longest_prefix(&raw_out, budget_out));
        doc.stderr
            .shrink_head_from(&raw_err, longest_prefix(&raw_err, budget_err));
        loop {
            let json = serde_json::to_string(&doc).unwrap_or_default();
            if json.len() <= MAX_DOCUMENT_BYTES {
                return json;
            }
            // Only reachable through rounding at the cut points; shave a little more.
            let (out_len, err_len) = (doc.stdout.head_len(), doc.stderr.head_len());
            if out_len == 0 && err_len == 0 {
                doc.message.clear();
                doc.runtime.aot_rejected = None;
                doc.returns.clear();
                doc.trace = None;
                if serde_json::to_string(&doc).unwrap_or_default().len() > MAX_DOCUMENT_BYTES {
                    doc.module = None;
                }
                return serde_json::to_string(&doc).unwrap_or_default();
            }
            if out_len >= err_len {
                doc.stdout.shrink_head_from(&raw_out, out_len * 7 / 8);
            } else {
                doc.stderr.shrink_head_from(&raw_err, err_len * 7 / 8);
            }
        }
    }
}

/// Length of the JSON string that encodes the first `len` raw bytes as a head.
fn encoded_head_len(raw: &[u8], len: usize) -> usize {
    let (_, text) = encode_head(&raw[..len.min(raw.len())]);
    serde_json::to_string(&text)
        .map(|s| s.len())
        .unwrap_or(usize::MAX)
}

/// The largest prefix length whose encoding (quotes included) fits in `budget` bytes.
fn longest_prefix(raw: &[u8], budget: usize) -> usize {
    // Every raw byte costs at least one encoded byte, so longer prefixes never fit.
    let raw = &raw[..raw.len().min(budget)];
    if encoded_head_len(raw, raw.len()) <= budget {
        return raw.len();
    }
    let (mut low, mut high) = (0usize, raw.len());
    while low < high {
        let middle = (low + high).div_ceil(2);
        if encoded_head_len(raw, middle) <= budget {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    low
}

fn truncate_at_char_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> RuntimeInfo {
        RuntimeInfo {
            name: "wasmedge".into(),
            version: "0.14.1".into(),
            aot: true,
            aot_source: None,
            aot_rejected: Some("x".repeat(300)),
        }
    }

    fn document(stdout: &[u8], stderr: &[u8]) -> ResultDocument {
        let mut doc = ResultDocument::new(Reason::Trap, runtime());
        doc.exit_code = Some(3);
        doc.set_message("é".repeat(5000));
        doc.module = Some(ModuleInfo {
            sha256: format!("sha256:{}", "a".repeat(64)),
            size: 123,
            entrypoint: "_start".into(),
        });
        doc.returns = vec![ReturnValue::Float(f64::MAX); 100];
        doc.stdout = StreamSummary::from_bytes(stdout);
        doc.stderr = StreamSummary::from_bytes(stderr);
        let parent =
            trace::TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .expect("valid traceparent");
        doc.trace = Some(trace::RunTrace::from_timings(
            &parent,
            "wasmfn-runner",
            std::time::SystemTime::now(),
            &doc.timings,
        ));
        doc
    }

    fn check_bound(stdout: &[u8], stderr: &[u8]) -> ResultDocument {
        let doc = document(stdout, stderr);
        let json = doc.to_json();
        assert!(json.len() <= MAX_DOCUMENT_BYTES, "{} bytes", json.len());
        let back: ResultDocument = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(back.stdout.size, stdout.len() as u64);
        assert_eq!(back.stderr.size, stderr.len() as u64);
        assert_eq!(back.stdout.sha256, doc.stdout.sha256);
        // the spans are never traded for output
        assert_eq!(back.trace, doc.trace);
        // the kept head is a prefix of the real stream, and the flag says whether it is complete
        let head = back.stdout.head_bytes();
        assert!(stdout.starts_with(&head));
        assert_eq!(back.stdout.truncated, head.len() < stdout.len());
        let head = back.stderr.head_bytes();
        assert!(stderr.starts_with(&head));
        assert_eq!(back.stderr.truncated, head.len() < stderr.len());
        back
    }

    #[test]
    fn small_output_is_kept_whole() {
        let back = check_bound(b"hello\n", b"");
        assert_eq!(back.stdout.head, "hello\n");
        assert!(!back.stdout.truncated);
        assert_eq!(back.stdout.encoding, HeadEncoding::Utf8);
    }

    #[test]
    fn huge_output_fits_and_keeps_a_useful_head() {
        let big = vec![b'x'; 10 << 20];
        let back = check_bound(&big, &big);
        assert!(back.stdout.truncated && back.stderr.truncated);
        assert!(
            back.stdout.head.len() > 500,
            "heads should share the budget"
        );
        assert!(back.stderr.head.len() > 500);
    }

    #[test]
    fn multibyte_utf8_is_cut_at_character_boundaries() {
        let text = "日本語テキスト🎉".repeat(2000);
        let back = check_bound(text.as_bytes(), "ü".repeat(3000).as_bytes());
        assert_eq!(back.stdout.encoding, HeadEncoding::Utf8);
        assert!(text.starts_with(&back.stdout.head));
    }

    #[test]
    fn binary_and_control_characters_fit() {
        let binary: Vec<u8> = (0..=255u8).cycle().take(50_000).collect();
        let back = check_bound(&binary, &vec![0u8; 50_000]);
        assert_eq!(back.stdout.encoding, HeadEncoding::Base64);
        // NUL bytes are valid UTF-8 but escape to six characters each in JSON
        assert_eq!(back.stderr.encoding, HeadEncoding::Utf8);
        let quotes = "\"\\".repeat(10_000);
        check_bound(quotes.as_bytes(), b"\x01\x02\x7f");
    }

    #[test]
    fn every_prefix_length_of_mixed_output_fits() {
        let mixed: Vec<u8> = "a\u{0}\"é🎉\n\x07".bytes().cycle().take(9000).collect();
        for len in (0..mixed.len()).step_by(397) {
            check_bound(&mixed[..len], &mixed[..mixed.len() - len]);
        }
    }

    #[test]
    fn process_exit_code_mirrors_the_guest() {
        let mut doc = ResultDocument::new(Reason::NonZeroExit, runtime());
        doc.exit_code = Some(3);
        assert_eq!(doc.process_exit_code(), 3);
        let doc = ResultDocument::new(Reason::TimedOut, runtime());
        assert_eq!(doc.process_exit_code(), 124);
        let mut doc = ResultDocument::new(Reason::MemoryLimitExceeded, runtime());
        doc.exit_code = Some(0);
        assert_eq!(doc.process_exit_code(), 137);
    }
}
