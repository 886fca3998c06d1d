//! Every bad input ends in its own reason — never a crash or a hang of the runner.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use support::*;
use wasmfn_execution::result::MAX_DOCUMENT_BYTES;
use wasmfn_execution::{Isolation, ModuleSource, Reason, RunRequest, StdinSource};

fn assert_reason(execution: &wasmfn_execution::Execution, reason: Reason) {
    assert_eq!(
        execution.document.reason,
        reason,
        "message: {} / stderr: {}",
        execution.document.message,
        String::from_utf8_lossy(&execution.stderr.head)
    );
    assert!(execution.document.to_json().len() <= MAX_DOCUMENT_BYTES);
}

#[test]
fn not_a_wasm_file() {
    let execution = exec(&RunRequest::command(ModuleSource::Bytes(
        b"#!/bin/sh\necho this is not wasm\n".to_vec(),
    )));
    assert_reason(&execution, Reason::InvalidModule);
    assert!(execution.document.message.contains("magic"));
}

#[test]
fn truncated_module() {
    let bytes = std::fs::read(guest("rust/probe")).unwrap();
    let execution = exec(&RunRequest::command(ModuleSource::Bytes(
        bytes[..bytes.len() / 2].to_vec(),
    )));
    assert_reason(&execution, Reason::InvalidModule);
}

#[test]
fn module_file_missing() {
    let execution = exec(&request(std::path::Path::new("/nonexistent/module.wasm")));
    assert_reason(&execution, Reason::InvalidModule);
}

#[test]
fn infinite_loop_times_out_interpreted_and_aot() {
    let module = guest("wat/loop");
    for aot in [None, Some(aot_of(&module))] {
        let mut request = request(&module);
        request.aot = aot;
        request.limits.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let execution = exec(&request);
        assert_reason(&execution, Reason::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}

#[test]
fn infinite_loop_times_out_in_process() {
    let module = guest("rust/misbehave");
    let mut request = request(&module);
    request.args = vec!["loop".into()];
    request.aot = Some(aot_of(&module));
    request.limits.timeout = Duration::from_millis(300);
    let execution = wasmfn_execution::execute(
        &request,
        Isolation::InProcess,
        &mut wasmfn_execution::DiscardSink,
    );
    assert_reason(&execution, Reason::TimedOut);
}

#[test]
fn memory_bomb() {
    let module = guest("rust/misbehave");
    for aot in [None, Some(aot_of(&module))] {
        let mut request = request(&module);
        request.aot = aot;
        request.args = vec!["memory-bomb".into()];
        request.limits.memory_bytes = 32 << 20;
        let execution = exec(&request);
        assert_reason(&execution, Reason::MemoryLimitExceeded);
    }
}

#[test]
fn memory_bomb_in_process() {
    let module = guest("rust/misbehave");
    let mut request = request(&module);
    request.aot = Some(aot_of(&module));
    request.args = vec!["memory-bomb".into()];
    request.limits.memory_bytes = 32 << 20;
    let execution = wasmfn_execution::execute(
        &request,
        Isolation::InProcess,
        &mut wasmfn_execution::DiscardSink,
    );
    assert_reason(&execution, Reason::MemoryLimitExceeded);
}

#[test]
fn initial_memory_over_the_limit() {
    let mut request = request(&guest("wat/big-memory"));
    request.limits.memory_bytes = 16 << 20;
    assert_reason(&exec(&request), Reason::MemoryLimitExceeded);
    // the same module under a limit that fits runs
    request.limits.memory_bytes = 512 << 20;
    assert_reason(&exec(&request), Reason::Completed);
}

#[test]
fn stack_overflow() {
    for name in ["wat/recursion", "rust/misbehave"] {
        let module = guest(name);
        for aot in [None, Some(aot_of(&module))] {
            let mut request = request(&module);
            request.aot = aot;
            request.args = vec!["stack-overflow".into()];
            request.limits.timeout = Duration::from_secs(20);
            let started = Instant::now();
            let execution = exec(&request);
            assert_reason(&execution, Reason::StackOverflow);
            assert!(started.elapsed() < Duration::from_secs(15), "{name}");
        }
    }
}

#[test]
fn stdout_flood_is_stopped_at_the_output_limit() {
    let mut request = request(&guest("rust/misbehave"));
    request.args = vec!["flood".into(), "100".into()];
    request.limits.output_limit_bytes = Some(16 << 20);
    let execution = exec(&request);
    assert_reason(&execution, Reason::OutputLimitExceeded);
    assert!(execution.document.stdout.size > 16 << 20);
    assert_eq!(execution.stdout.head.len(), request.limits.capture_bytes);
}

#[test]
fn stdout_flood_without_a_limit_is_streamed_in_constant_memory() {
    let mut request = request(&guest("rust/misbehave"));
    request.args = vec!["flood".into(), "100".into()];
    request.limits.output_limit_bytes = None;
    request.limits.capture_bytes = 4096;
    let execution = exec(&request);
    assert_reason(&execution, Reason::Completed);
    let expected = vec![b'x'; 100 << 20];
    assert_eq!(execution.document.stdout.size, 100 << 20);
    assert_eq!(
        execution.document.stdout.sha256,
        wasmfn_execution::result::StreamSummary::from_bytes(&expected).sha256
    );
    assert!(execution.document.stdout.truncated);
    assert_eq!(execution.stdout.head.len(), 4096);
}

#[test]
fn proc_exit_3() {
    let execution = exec(&request(&guest("wat/exit3")));
    assert_reason(&execution, Reason::NonZeroExit);
    assert_eq!(execution.document.exit_code, Some(3));
}

#[test]
fn trap() {
    let execution = exec(&request(&guest("wat/trap")));
    assert_reason(&execution, Reason::Trap);
    assert!(
        execution.document.message.contains("unreachable"),
        "{}",
        execution.document.message
    );
    let mut request = request(&guest("rust/misbehave"));
    request.args = vec!["trap".into()];
    let execution = exec(&request);
    assert_reason(&execution, Reason::Trap);
}

#[test]
fn unreadable_stdin_file() {
    for path in ["/nonexistent/input.txt", "/"] {
        let mut request = request(&guest("rust/probe"));
        request.stdin = StdinSource::File(path.into());
        let execution = exec(&request);
        assert_reason(&execution, Reason::InputUnreadable);
        assert!(execution.document.message.contains(path));
    }
}

#[test]
fn concurrent_runs_are_independent() {
    // Concurrent runs from one process are independent: a stuck guest started while another
    // runs delays neither its result nor its timing.
    let busy = {
        let mut request = request(&guest("wat/fib"));
        request.entry = wasmfn_execution::Entry::Invoke {
            export: "fib".into(),
            args: vec![serde_json::json!(31)],
        };
        std::thread::spawn(move || {
            let started = Instant::now();
            (exec(&request), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let mut stuck = request(&guest("wat/loop"));
    stuck.limits.timeout = Duration::from_secs(10);
    let stuck_execution = exec(&stuck);
    let (busy_execution, busy_elapsed) = busy.join().unwrap();
    assert_reason(&busy_execution, Reason::Completed);
    assert_reason(&stuck_execution, Reason::TimedOut);
    assert!(
        busy_elapsed < Duration::from_secs(8),
        "the busy run took {busy_elapsed:?} (run {} ms): it waited for the stuck one",
        busy_execution.document.timings.run_ms
    );
}
