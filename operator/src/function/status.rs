//! The function status each outcome produces. Pure: the reconciler applies the result.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use wasmfn_api::{
    set_condition, ArtifactStatus, CompileStatus, ConditionStatus, FunctionPhase,
    WasmFunctionStatus,
};

use super::compile_output::CompileFailure;
use super::decision::{COMPILE_TRIES, RETRYING};

/// Condition: the module is stored and executions can run.
pub const READY: &str = "Ready";
/// Condition: the last compile succeeded.
pub const COMPILED: &str = "Compiled";

/// A status update in the making: starts from the current status so conditions keep their
/// transition times.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    status: WasmFunctionStatus,
    generation: Option<i64>,
    now: Time,
}

impl StatusUpdate {
    /// Starts from `current` for the object at `generation`.
    pub fn new(current: Option<&WasmFunctionStatus>, generation: Option<i64>, now: Time) -> Self {
        let mut status = current.cloned().unwrap_or_default();
        status.observed_generation = generation;
        StatusUpdate {
            status,
            generation,
            now,
        }
    }

    fn condition(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) {
        set_condition(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
            self.generation,
            self.now.clone(),
        );
    }

    /// The spec cannot be built as written.
    pub fn invalid(mut self, key: Option<&str>, reason: &str, message: &str) -> WasmFunctionStatus {
        self.status.phase = Some(FunctionPhase::Failed);
        self.status.cache_key = key.map(str::to_owned);
        self.status.artifact = None;
        self.condition(READY, ConditionStatus::False, reason, message);
        self.status
    }

    /// Waiting for something outside the operator (a source ConfigMap).
    pub fn pending(mut self, reason: &str, message: &str) -> WasmFunctionStatus {
        self.status.phase = Some(FunctionPhase::Pending);
        self.condition(READY, ConditionStatus::False, reason, message);
        self.status
    }

    /// Try `try_number` of the compile runs in Job `job_name`, which the cluster stops at
    /// `deadline` (known once the Job has started).
    pub fn compiling(
        mut self,
        key: &str,
        job_name: &str,
        start_time: Option<Time>,
        try_number: u32,
        deadline: Option<Time>,
    ) -> WasmFunctionStatus {
        self.status.phase = Some(FunctionPhase::Compiling);
        self.status.cache_key = Some(key.to_owned());
        self.status.compile = Some(CompileStatus {
            job_name: Some(job_name.to_owned()),
            start_time,
            attempts: attempts(try_number),
            ..Default::default()
        });
        let ends = deadline
            .map(|d| format!(", deadline {}", d.0))
            .unwrap_or_default();
        self.condition(
            READY,
            ConditionStatus::False,
            "Compiling",
            &format!(
                "compile Job {job_name} is running (try {try_number} of {COMPILE_TRIES}{ends})"
            ),
        );
        self.condition(COMPILED, ConditionStatus::Unknown, "Compiling", "");
        self.status
    }

    /// The compile Job finished but its log could not be fetched: asked for again until
    /// `give_up_at`.
    pub fn reading_output(
        mut self,
        key: &str,
        job_name: &str,
        message: &str,
        give_up_at: &Time,
    ) -> WasmFunctionStatus {
        self.status.phase = Some(FunctionPhase::Compiling);
        self.status.cache_key = Some(key.to_owned());
        self.condition(
            READY,
            ConditionStatus::False,
            "ReadingOutput",
            &format!(
                "compile Job {job_name} finished but its log could not be read ({message}); \
                 asking again until {}, then the try counts as lost",
                give_up_at.0
            ),
        );
        self.status
    }

    /// What every failed compile records: `phase`, no artifact, the failure's reason and
    /// diagnostics, and when it ended.
    fn failure(
        &mut self,
        phase: FunctionPhase,
        key: &str,
        compile: &mut CompileStatus,
        failure: &CompileFailure,
    ) {
        self.status.phase = Some(phase);
        self.status.cache_key = Some(key.to_owned());
        self.status.artifact = None;
        compile.reason = Some(failure.reason.clone());
        compile.diagnostics = failure.diagnostics.clone();
        compile.completion_time = Some(self.now.clone());
    }

    /// The platform lost try `try_number` (`failure` says how): the next starts at
    /// `next_attempt`, `delay` from now.
    pub fn retrying(
        mut self,
        key: &str,
        mut compile: CompileStatus,
        failure: &CompileFailure,
        try_number: u32,
        next_attempt: Time,
        delay: Duration,
    ) -> WasmFunctionStatus {
        self.failure(FunctionPhase::Pending, key, &mut compile, failure);
        compile.attempts = attempts(try_number);
        compile.next_attempt_time = Some(next_attempt);
        self.status.compile = Some(compile);
        self.condition(
            READY,
            ConditionStatus::False,
            RETRYING,
            &retry_message(failure, try_number, delay),
        );
        self.condition(
            COMPILED,
            ConditionStatus::False,
            &failure.reason,
            &failure.message,
        );
        self.status
    }

    /// The module is stored. `compile` is `None` for a cache hit (the record of an earlier compile
    /// of the same key is not ours to show).
    pub fn ready(
        mut self,
        key: &str,
        artifact: ArtifactStatus,
        compile: Option<CompileStatus>,
    ) -> WasmFunctionStatus {
        let cache_hit = compile.is_none();
        let message = format!(
            "module {} ({} bytes) stored in {} {}",
            artifact.digest, artifact.size, artifact.store, artifact.location
        );
        self.status.phase = Some(FunctionPhase::Ready);
        self.status.cache_key = Some(key.to_owned());
        self.status.artifact = Some(artifact);
        self.status.compile = Some(compile.unwrap_or(CompileStatus {
            cache_hit: true,
            completion_time: Some(self.now.clone()),
            ..Default::default()
        }));
        let reason = if cache_hit { "CacheHit" } else { "Compiled" };
        self.condition(READY, ConditionStatus::True, reason, &message);
        self.condition(COMPILED, ConditionStatus::True, reason, "");
        self.status
    }

    /// The compile failed.
    pub fn compile_failed(
        mut self,
        key: &str,
        mut compile: CompileStatus,
        failure: &CompileFailure,
    ) -> WasmFunctionStatus {
        self.failure(FunctionPhase::Failed, key, &mut compile, failure);
        self.status.compile = Some(compile);
        self.condition(
            READY,
            ConditionStatus::False,
            &failure.reason,
            &failure.message,
        );
        self.condition(
            COMPILED,
            ConditionStatus::False,
            &failure.reason,
            &failure.message,
        );
        self.status
    }
}

/// What the Ready condition and the event say while waiting to try again after try
/// `try_number` was lost: the cause, the delay and the try to come.
pub fn retry_message(failure: &CompileFailure, try_number: u32, delay: Duration) -> String {
    format!(
        "{} ({}); retrying in {}s (try {} of {COMPILE_TRIES})",
        failure.message,
        failure.reason,
        delay.as_secs(),
        try_number + 1
    )
}

fn attempts(try_number: u32) -> i32 {
    i32::try_from(try_number).unwrap_or(i32::MAX)
}

pub use crate::naming::short_digest;

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("time"))
    }

    fn artifact() -> ArtifactStatus {
        ArtifactStatus {
            digest: "sha256:0123456789abcdef".into(),
            short_digest: short_digest("sha256:0123456789abcdef"),
            size: 42,
            media_type: "application/wasm".into(),
            store: "configmap".into(),
            location: "wasmfn-artifact-0123".into(),
            config_maps: vec!["wasmfn-artifact-0123".into()],
        }
    }

    fn condition<'a>(
        status: &'a WasmFunctionStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition")
    }

    #[test]
    fn compiling_then_ready_moves_the_ready_condition_and_keeps_generation() {
        let compiling = StatusUpdate::new(None, Some(3), at(10)).compiling(
            "sha256:k",
            "wasmfn-compile-k",
            Some(at(9)),
            1,
            Some(at(609)),
        );
        assert_eq!(compiling.phase, Some(FunctionPhase::Compiling));
        assert_eq!(
            condition(&compiling, READY).message,
            "compile Job wasmfn-compile-k is running (try 1 of 3, deadline 1970-01-01T00:10:09Z)"
        );
        assert_eq!(compiling.compile.as_ref().expect("compile").attempts, 1);
        assert_eq!(compiling.observed_generation, Some(3));
        assert_eq!(condition(&compiling, READY).status, "False");
        assert_eq!(condition(&compiling, COMPILED).status, "Unknown");
        let record = CompileStatus {
            job_name: Some("wasmfn-compile-k".into()),
            duration_ms: Some(300),
            ..Default::default()
        };
        let ready = StatusUpdate::new(Some(&compiling), Some(3), at(20)).ready(
            "sha256:k",
            artifact(),
            Some(record),
        );
        assert_eq!(ready.phase, Some(FunctionPhase::Ready));
        assert_eq!(condition(&ready, READY).status, "True");
        assert_eq!(condition(&ready, READY).reason, "Compiled");
        assert_eq!(condition(&ready, READY).last_transition_time, at(20));
        assert!(!ready.compile.as_ref().expect("compile").cache_hit);
        assert_eq!(
            ready.artifact.as_ref().map(|a| a.short_digest.as_str()),
            Some("0123456789ab")
        );
    }

    #[test]
    fn a_cache_hit_says_so() {
        let ready = StatusUpdate::new(None, Some(1), at(5)).ready("sha256:k", artifact(), None);
        assert_eq!(condition(&ready, READY).reason, "CacheHit");
        assert!(ready.compile.as_ref().expect("compile").cache_hit);
    }

    #[test]
    fn a_compile_failure_carries_reason_and_diagnostics_and_drops_the_old_artifact() {
        let ready = StatusUpdate::new(None, Some(1), at(5)).ready("sha256:old", artifact(), None);
        let failure = CompileFailure {
            reason: "CompileError".into(),
            user_error: true,
            message: "compile failed: main.rs:3:5: error: x".into(),
            diagnostics: vec!["main.rs:3:5: error: x".into()],
        };
        let failed = StatusUpdate::new(Some(&ready), Some(2), at(9)).compile_failed(
            "sha256:new",
            CompileStatus::default(),
            &failure,
        );
        assert_eq!(failed.phase, Some(FunctionPhase::Failed));
        assert_eq!(failed.artifact, None);
        assert_eq!(failed.cache_key.as_deref(), Some("sha256:new"));
        assert_eq!(condition(&failed, READY).reason, "CompileError");
        assert!(condition(&failed, READY).message.contains("main.rs:3:5"));
        assert_eq!(
            failed.compile.as_ref().expect("compile").diagnostics,
            failure.diagnostics
        );
    }

    #[test]
    fn a_lost_try_waits_pending_with_the_next_try_in_the_condition_then_compiles_again() {
        let first = StatusUpdate::new(None, Some(1), at(10)).compiling(
            "sha256:k",
            "wasmfn-compile-k",
            Some(at(9)),
            1,
            None,
        );
        let lost = CompileFailure {
            reason: "BuilderFailed".into(),
            user_error: false,
            message:
                "the builder ended without a result (container: Error, job: BackoffLimitExceeded)"
                    .into(),
            diagnostics: Vec::new(),
        };
        let compile = first.compile.clone().expect("compile");
        let waiting = StatusUpdate::new(Some(&first), Some(1), at(20)).retrying(
            "sha256:k",
            compile,
            &lost,
            1,
            at(30),
            Duration::from_secs(10),
        );
        assert_eq!(waiting.phase, Some(FunctionPhase::Pending));
        let ready = condition(&waiting, READY);
        assert_eq!(ready.reason, "Retrying");
        assert_eq!(
            ready.message,
            "the builder ended without a result (container: Error, job: BackoffLimitExceeded) \
             (BuilderFailed); retrying in 10s (try 2 of 3)"
        );
        assert_eq!(condition(&waiting, COMPILED).reason, "BuilderFailed");
        let record = waiting.compile.as_ref().expect("compile");
        assert_eq!(record.attempts, 1);
        assert_eq!(record.next_attempt_time, Some(at(30)));
        assert_eq!(record.job_name.as_deref(), Some("wasmfn-compile-k"));

        let second = StatusUpdate::new(Some(&waiting), Some(1), at(31)).compiling(
            "sha256:k",
            "wasmfn-compile-k",
            None,
            2,
            None,
        );
        let record = second.compile.as_ref().expect("compile");
        assert_eq!(
            (record.attempts, record.next_attempt_time.clone()),
            (2, None)
        );
        assert_eq!(
            condition(&second, READY).message,
            "compile Job wasmfn-compile-k is running (try 2 of 3)"
        );
    }

    #[test]
    fn an_unreadable_log_says_until_when_it_is_asked_for() {
        let reading = StatusUpdate::new(None, Some(1), at(10)).reading_output(
            "sha256:k",
            "wasmfn-compile-k",
            "connection refused",
            &at(70),
        );
        assert_eq!(reading.phase, Some(FunctionPhase::Compiling));
        let ready = condition(&reading, READY);
        assert_eq!(ready.reason, "ReadingOutput");
        assert!(
            ready.message.contains("until 1970-01-01T00:01:10Z"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn invalid_and_pending_set_phase_and_reason() {
        let invalid =
            StatusUpdate::new(None, Some(1), at(1)).invalid(None, "InvalidSpec", "fix it");
        assert_eq!(invalid.phase, Some(FunctionPhase::Failed));
        assert_eq!(condition(&invalid, READY).reason, "InvalidSpec");
        let pending =
            StatusUpdate::new(None, Some(1), at(1)).pending("SourceNotFound", "create it");
        assert_eq!(pending.phase, Some(FunctionPhase::Pending));
        assert_eq!(condition(&pending, READY).message, "create it");
    }
}
