//! A guest may wait for its stdin with `poll_oneoff` (C's `poll`) in every runner: WasmEdge
//! can poll a pipe but not `/dev/null` or an in-memory file (the guest got EPERM), so the forked
//! child's stdin is a pipe the parent feeds, whatever the source.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use support::*;
use wasmfn_execution::{Reason, StdinSource};

fn poll_with(stdin: StdinSource) -> String {
    let mut request = request(&guest("c/poll_stdin"));
    request.stdin = stdin;
    let execution = exec(&request);
    assert_eq!(
        execution.document.reason,
        Reason::Completed,
        "{:?} {}",
        execution.document,
        stdout_text(&execution)
    );
    stdout_text(&execution)
}

#[test]
fn a_guest_polling_its_stdin_sees_bytes_ready() {
    assert_eq!(
        poll_with(StdinSource::Bytes(b"line one\n".to_vec())),
        "ready=1 readable=1 read=line one\n"
    );
}

#[test]
fn a_guest_polling_a_stdin_file_sees_it_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stdin.txt");
    std::fs::write(&path, "from a file\n").unwrap();
    assert_eq!(
        poll_with(StdinSource::File(path)),
        "ready=1 readable=1 read=from a file\n"
    );
}

#[test]
fn a_guest_polling_an_empty_stdin_sees_end_of_file_at_once() {
    assert_eq!(poll_with(StdinSource::Empty), "ready=1 readable=1 read=");
}

#[test]
fn stdin_larger_than_a_pipe_buffer_arrives_whole() {
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut request = request(&guest("c/probe"));
    request.stdin = StdinSource::Bytes(big.clone());
    let execution = exec(&request);
    assert_eq!(execution.document.reason, Reason::Completed);
    // The probe echoes its stdin after a "stdin: " prefix.
    assert!(
        execution.document.stdout.size >= big.len() as u64,
        "{:?}",
        execution.document.stdout
    );
}
