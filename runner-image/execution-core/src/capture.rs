//! Capturing a guest's output stream: every byte is hashed and counted, the first bytes are kept
//! (up to a cap), and the whole stream can be forwarded to a sink as it arrives — so a 100 MB
//! flood costs a fixed amount of memory.

use sha2::{Digest, Sha256};

use crate::result::StreamSummary;

/// Which of the guest's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

/// Where the full streams go while the guest runs (e.g. `wasmfn exec` copies them to its own
/// stdout/stderr so pod logs carry them). Errors are ignored: a closed log must not change the
/// outcome of the run.
pub trait OutputSink {
    /// Called with each chunk the guest wrote, in order.
    fn write(&mut self, stream: Stream, bytes: &[u8]);
}

/// A sink that drops everything (only the captured heads are kept).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardSink;

impl OutputSink for DiscardSink {
    fn write(&mut self, _stream: Stream, _bytes: &[u8]) {}
}

/// Copies the guest's streams to this process's own stdout and stderr.
#[derive(Debug, Default, Clone, Copy)]
pub struct ForwardSink;

impl OutputSink for ForwardSink {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        use std::io::Write as _;
        let _ = match stream {
            Stream::Stdout => std::io::stdout().lock().write_all(bytes),
            Stream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    }
}

/// Running state of one captured stream.
#[derive(Debug)]
pub struct StreamCapture {
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
    cap: usize,
}

impl StreamCapture {
    /// Keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        StreamCapture {
            hasher: Sha256::new(),
            size: 0,
            head: Vec::new(),
            cap,
        }
    }

    /// Records a chunk.
    pub fn push(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        let room = self.cap.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }

    /// Total bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Finishes: the captured head and the summary for the result document.
    pub fn finish(self) -> CapturedStream {
        let digest = self.hasher.finalize();
        let summary = StreamSummary::from_parts(self.size, &digest, &self.head);
        CapturedStream {
            head: self.head,
            size: self.size,
            summary,
        }
    }
}

/// A finished stream.
#[derive(Debug, Clone)]
pub struct CapturedStream {
    /// The first bytes (up to the capture cap), byte-exact.
    pub head: Vec<u8>,
    /// Total size.
    pub size: u64,
    /// What goes into the result document.
    pub summary: StreamSummary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_head_and_counts_everything() {
        let mut capture = StreamCapture::new(4);
        capture.push(b"hel");
        capture.push(b"lo world");
        let done = capture.finish();
        assert_eq!(done.head, b"hell");
        assert_eq!(done.size, 11);
        assert!(done.summary.truncated);
        assert_eq!(
            done.summary.sha256,
            StreamSummary::from_bytes(b"hello world").sha256
        );
    }
}
