//! What a function needs next, as a pure function of what the reconciler observed. Every path
//! of the compile pipeline is decided here and tested below; the reconciler only fetches the
//! observation and carries the step out.
//!
//! A compile the platform loses is tried again: the builder could not run or crashed, its pod
//! was lost, the Job passed its deadline before the builder reported, the Job vanished, or the
//! module in its log was cut or unreadable. [`COMPILE_TRIES`] tries in all, [`retry_delay`]
//! apart; only then is the function Failed. A failure of the source is final at once: the same
//! inputs would fail the same way. The try count lives in the status (`compile.attempts`,
//! `compile.nextAttemptTime`), so a restarted operator carries on where it was, and a new
//! generation or cache key starts again from one.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use wasmfn_api::{FunctionPhase, WasmFunctionStatus};

use super::compile_output::{CompileFailure, CompiledModule};

/// Compile tries in all when the platform keeps losing them.
pub const COMPILE_TRIES: u32 = 3;
/// The delay after the first lost try; it doubles after each further one.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(10);
/// How long after its Job finished a compile log that cannot be fetched is asked for again
/// before the try counts as lost.
pub const LOG_READ_GRACE: Duration = Duration::from_secs(60);
/// The Ready condition's reason while waiting to try a lost compile again.
pub const RETRYING: &str = "Retrying";
/// The reason when a finished compile's log holds no usable module.
pub const OUTPUT_UNREADABLE: &str = "OutputUnreadable";
/// The reason when the compile Job vanished before its result was read.
pub const JOB_LOST: &str = "CompileJobLost";

/// The delay before the next try after `failed_tries` lost ones: 10 s, 20 s, 40 s …
pub fn retry_delay(failed_tries: u32) -> Duration {
    FIRST_RETRY_DELAY * 2u32.pow(failed_tries.saturating_sub(1).min(6))
}

/// The compile Job for the function's cache key, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Still running; `owned` says whether this function is among its owners.
    Running {
        /// This function is an owner.
        owned: bool,
    },
    /// Completed: its output waits in the pod's log.
    Succeeded,
    /// Failed: the reason waits in the termination message.
    Failed,
}

/// What a finished compile Job left, read by the reconciler once [`Step::Collect`] asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The log held a verified module.
    Module(CompiledModule),
    /// The Job failed (or produced a module that must not be stored); `user_error` says whose
    /// fault it is.
    Failure(CompileFailure),
    /// The Job succeeded but its log holds no usable module (cut, unverifiable) or its pod is
    /// gone.
    Unreadable(String),
    /// The log could not be fetched (the API server or kubelet did not answer): asked for again
    /// until [`LOG_READ_GRACE`] after `finished`, then the try is lost.
    LogUnavailable {
        /// Why.
        message: String,
        /// When the Job finished, if it says.
        finished: Option<Timestamp>,
    },
}

/// What the reconciler saw.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The current status.
    pub status: Option<&'a WasmFunctionStatus>,
    /// The cache key of the current spec.
    pub key: &'a str,
    /// Digest of an artifact stored under this key in the function's store, if any.
    pub stored_digest: Option<&'a str>,
    /// The spec carries a prebuilt module (no compile).
    pub prebuilt: bool,
    /// The compile Job named by the key, if it exists.
    pub job: Option<JobState>,
    /// What the finished Job left; `None` until [`Step::Collect`] asked for it (reading it
    /// costs a log or pod fetch).
    pub outcome: Option<&'a Outcome>,
    /// Now.
    pub now: Timestamp,
}

/// The next step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Status already describes this spec; nothing to do.
    UpToDate,
    /// An artifact for this key is stored: Ready without a compile.
    UseStored,
    /// Store the prebuilt module from the spec.
    StorePrebuilt,
    /// Create the compile Job (and its source ConfigMap) for this try.
    StartCompile {
        /// The try, from 1.
        try_number: u32,
        /// A finished Job of an earlier try holds the key's Job name: delete it (and its
        /// source ConfigMap) first.
        replace: bool,
    },
    /// A Job for this key is running for another function: become one of its owners.
    JoinCompile {
        /// The try this Job is for us.
        try_number: u32,
    },
    /// Our Job is running: wait for it (its `activeDeadlineSeconds` bounds the wait).
    WaitForCompile {
        /// The try.
        try_number: u32,
    },
    /// The Job finished: read what it left and decide again with the [`Outcome`].
    Collect,
    /// Store the compiled module and become Ready.
    StoreModule {
        /// The try that produced it.
        try_number: u32,
    },
    /// The compile failed for good: become Failed.
    Fail {
        /// Why; for a platform failure the message names the tries made.
        failure: CompileFailure,
        /// Tries made.
        try_number: u32,
    },
    /// The platform lost this try: wait `delay`, then try again.
    Retry {
        /// How it was lost.
        failure: CompileFailure,
        /// The lost try.
        try_number: u32,
        /// How long to wait before the next.
        delay: Duration,
    },
    /// Waiting between tries.
    BackOff {
        /// How long is left.
        remaining: Duration,
    },
    /// The finished Job's log could not be fetched: ask again (the condition says until when).
    ReadAgain {
        /// Why it could not be read.
        message: String,
        /// When the try counts as lost if the log still cannot be read.
        give_up_at: Timestamp,
    },
}

/// Where this spec's compile stands, from a status that describes it.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Tries started (including a running one).
    tries: u32,
    /// Between tries: when the next one starts.
    retry_at: Option<Timestamp>,
}

impl Progress {
    /// A compile in progress is Compiling, or Pending between tries (or while its source
    /// ConfigMap is missing). After Ready or Failed a new compile starts from one.
    fn of(current: Option<&WasmFunctionStatus>) -> Progress {
        let Some(status) = current else {
            return Progress::default();
        };
        let Some(compile) = status.compile.as_ref() else {
            return Progress::default();
        };
        match status.phase {
            Some(FunctionPhase::Compiling) => Progress {
                tries: u32::try_from(compile.attempts).unwrap_or(0),
                retry_at: None,
            },
            Some(FunctionPhase::Pending) => Progress {
                tries: u32::try_from(compile.attempts).unwrap_or(0),
                retry_at: compile.next_attempt_time.as_ref().map(|t| t.0),
            },
            _ => Progress::default(),
        }
    }

    /// The running (or last) try's number.
    fn this_try(self) -> u32 {
        self.tries.max(1)
    }
}

/// Decides the next step.
pub fn decide(observation: Observation<'_>) -> Step {
    let current = observation.status.filter(|s| {
        s.observed_generation == observation.generation
            && s.cache_key.as_deref() == Some(observation.key)
    });
    let phase = current.and_then(|s| s.phase);
    // A failed compile of these exact inputs stays failed until the spec changes: compiling
    // the same source again would fail the same way, and a platform failure has had its tries.
    if phase == Some(FunctionPhase::Failed) {
        return Step::UpToDate;
    }
    if let Some(digest) = observation.stored_digest {
        let shown = current
            .and_then(|s| s.artifact.as_ref())
            .map(|a| a.digest.as_str());
        return if phase == Some(FunctionPhase::Ready) && shown == Some(digest) {
            Step::UpToDate
        } else {
            Step::UseStored
        };
    }
    if observation.prebuilt {
        return Step::StorePrebuilt;
    }
    let progress = Progress::of(current);
    if let Some(outcome) = observation.outcome {
        return judge(outcome, progress, observation.now);
    }
    if let Some(at) = progress.retry_at {
        // Between tries. The lost try's Job stays until the next starts, for `kubectl logs`;
        // a Job of this key that succeeded meanwhile (another function's) is used at once.
        let next = progress.tries + 1;
        return match observation.job {
            Some(JobState::Succeeded) => Step::Collect,
            _ if at > observation.now => back_off(at, observation.now),
            None => Step::StartCompile {
                try_number: next,
                replace: false,
            },
            Some(JobState::Failed) => Step::StartCompile {
                try_number: next,
                replace: true,
            },
            Some(JobState::Running { owned: false }) => Step::JoinCompile { try_number: next },
            Some(JobState::Running { owned: true }) => Step::WaitForCompile { try_number: next },
        };
    }
    match observation.job {
        None if progress.tries == 0 => Step::StartCompile {
            try_number: 1,
            replace: false,
        },
        // Compiling, and the Job is gone without its result having been read.
        None => lost(
            CompileFailure {
                reason: JOB_LOST.to_owned(),
                user_error: false,
                message: "the compile Job disappeared before its result was read".to_owned(),
                diagnostics: Vec::new(),
            },
            progress.tries,
        ),
        Some(JobState::Running { owned: false }) => Step::JoinCompile {
            try_number: progress.this_try(),
        },
        Some(JobState::Running { owned: true }) => Step::WaitForCompile {
            try_number: progress.this_try(),
        },
        Some(JobState::Succeeded | JobState::Failed) => Step::Collect,
    }
}

/// The step for what a finished Job left.
fn judge(outcome: &Outcome, progress: Progress, now: Timestamp) -> Step {
    let failure = match outcome {
        Outcome::Module(_) => {
            return Step::StoreModule {
                try_number: progress.this_try(),
            }
        }
        Outcome::Failure(failure) if failure.user_error => {
            return Step::Fail {
                failure: failure.clone(),
                try_number: progress.this_try(),
            }
        }
        Outcome::Failure(failure) => failure.clone(),
        Outcome::Unreadable(message) => unreadable(message),
        Outcome::LogUnavailable { message, finished } => {
            let give_up_at = finished.and_then(|t| t.checked_add(signed(LOG_READ_GRACE)).ok());
            match give_up_at {
                Some(give_up_at) if give_up_at > now && progress.retry_at.is_none() => {
                    return Step::ReadAgain {
                        message: message.clone(),
                        give_up_at,
                    }
                }
                _ => unreadable(&format!(
                    "{message} (still, {}s after the Job finished)",
                    LOG_READ_GRACE.as_secs()
                )),
            }
        }
    };
    if let Some(at) = progress.retry_at {
        // A Job of this key that is no use either (the lost try's own, read again, or another
        // function's): the next try goes on as planned.
        return if at > now {
            back_off(at, now)
        } else {
            Step::StartCompile {
                try_number: progress.tries + 1,
                replace: true,
            }
        };
    }
    if progress.tries == 0 {
        // A Job of this key left from before this spec (or by another function): its loss
        // does not count against this spec, which tries afresh.
        return Step::StartCompile {
            try_number: 1,
            replace: true,
        };
    }
    lost(failure, progress.tries)
}

/// Try `tries` was lost to the platform: try again, or give up after the last try.
fn lost(failure: CompileFailure, tries: u32) -> Step {
    if tries >= COMPILE_TRIES {
        let message = format!("{}; gave up after {tries} tries", failure.message);
        Step::Fail {
            failure: CompileFailure { message, ..failure },
            try_number: tries,
        }
    } else {
        Step::Retry {
            failure,
            try_number: tries,
            delay: retry_delay(tries),
        }
    }
}

fn unreadable(message: &str) -> CompileFailure {
    CompileFailure {
        reason: OUTPUT_UNREADABLE.to_owned(),
        user_error: false,
        message: format!("the compile Job succeeded but its output could not be read: {message}"),
        diagnostics: Vec::new(),
    }
}

fn back_off(at: Timestamp, now: Timestamp) -> Step {
    Step::BackOff {
        remaining: Duration::try_from(at.duration_since(now)).unwrap_or(Duration::from_secs(1)),
    }
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use wasmfn_api::{ArtifactStatus, CompileStatus};

    const KEY: &str = "sha256:aa";

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("valid time")
    }

    fn at(seconds_from_now: i64) -> Timestamp {
        now()
            .checked_add(SignedDuration::from_secs(seconds_from_now))
            .expect("valid time")
    }

    fn status(
        phase: FunctionPhase,
        generation: i64,
        key: &str,
        digest: Option<&str>,
    ) -> WasmFunctionStatus {
        WasmFunctionStatus {
            phase: Some(phase),
            observed_generation: Some(generation),
            cache_key: Some(key.into()),
            artifact: digest.map(|d| ArtifactStatus {
                digest: d.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Compiling this spec, on try `tries`.
    fn compiling(tries: i32) -> WasmFunctionStatus {
        WasmFunctionStatus {
            compile: Some(CompileStatus {
                job_name: Some("wasmfn-compile-aa".into()),
                attempts: tries,
                ..Default::default()
            }),
            ..status(FunctionPhase::Compiling, 2, KEY, None)
        }
    }

    /// Waiting to start the try after `lost` lost ones, `in_seconds` from now.
    fn between_tries(lost: i32, in_seconds: i64) -> WasmFunctionStatus {
        WasmFunctionStatus {
            compile: Some(CompileStatus {
                job_name: Some("wasmfn-compile-aa".into()),
                attempts: lost,
                next_attempt_time: Some(Time(at(in_seconds))),
                reason: Some("BuilderFailed".into()),
                ..Default::default()
            }),
            ..status(FunctionPhase::Pending, 2, KEY, None)
        }
    }

    fn observe<'a>(
        status: Option<&'a WasmFunctionStatus>,
        stored: Option<&'a str>,
        job: Option<JobState>,
    ) -> Observation<'a> {
        Observation {
            generation: Some(2),
            status,
            key: KEY,
            stored_digest: stored,
            prebuilt: false,
            job,
            outcome: None,
            now: now(),
        }
    }

    /// What `status` leads to once the finished Job's `outcome` is read.
    fn collect(status: Option<&WasmFunctionStatus>, job: JobState, outcome: &Outcome) -> Step {
        let observation = observe(status, None, Some(job));
        assert_eq!(decide(observation), Step::Collect);
        decide(Observation {
            outcome: Some(outcome),
            ..observation
        })
    }

    fn failure(reason: &str, user_error: bool) -> CompileFailure {
        CompileFailure {
            reason: reason.into(),
            user_error,
            message: format!("{reason} happened"),
            diagnostics: Vec::new(),
        }
    }

    fn module() -> CompiledModule {
        CompiledModule {
            bytes: b"\0asm\x01\0\0\0".to_vec(),
            digest: "sha256:d".into(),
            media_type: "application/wasm".into(),
            compile_ms: 1.0,
            toolchain: Vec::new(),
        }
    }

    fn first_try() -> Step {
        Step::StartCompile {
            try_number: 1,
            replace: false,
        }
    }

    #[test]
    fn a_new_function_without_a_stored_artifact_starts_a_compile() {
        assert_eq!(decide(observe(None, None, None)), first_try());
    }

    #[test]
    fn a_stored_artifact_makes_a_new_function_ready_without_a_job() {
        assert_eq!(
            decide(observe(None, Some("sha256:d"), None)),
            Step::UseStored
        );
        // Even when a Job for the key is still around.
        assert_eq!(
            decide(observe(None, Some("sha256:d"), Some(JobState::Succeeded))),
            Step::UseStored
        );
    }

    #[test]
    fn a_ready_function_whose_status_matches_is_up_to_date() {
        let ready = status(FunctionPhase::Ready, 2, KEY, Some("sha256:d"));
        assert_eq!(
            decide(observe(Some(&ready), Some("sha256:d"), None)),
            Step::UpToDate
        );
    }

    #[test]
    fn a_ready_function_whose_artifact_vanished_compiles_again_from_the_first_try() {
        let mut ready = status(FunctionPhase::Ready, 2, KEY, Some("sha256:d"));
        ready.compile = Some(CompileStatus {
            attempts: 2,
            ..Default::default()
        });
        assert_eq!(decide(observe(Some(&ready), None, None)), first_try());
    }

    #[test]
    fn a_spec_change_recompiles_even_after_ready_or_failed() {
        let old_generation = status(FunctionPhase::Ready, 1, KEY, Some("sha256:d"));
        assert_eq!(
            decide(observe(Some(&old_generation), None, None)),
            first_try()
        );
        let old_key = status(FunctionPhase::Failed, 2, "sha256:bb", None);
        assert_eq!(decide(observe(Some(&old_key), None, None)), first_try());
        let old_failure = status(FunctionPhase::Failed, 1, KEY, None);
        assert_eq!(
            decide(observe(Some(&old_failure), None, Some(JobState::Failed))),
            Step::Collect
        );
    }

    #[test]
    fn a_failed_compile_of_the_same_inputs_is_not_retried() {
        let failed = status(FunctionPhase::Failed, 2, KEY, None);
        assert_eq!(
            decide(observe(Some(&failed), None, Some(JobState::Failed))),
            Step::UpToDate
        );
        assert_eq!(decide(observe(Some(&failed), None, None)), Step::UpToDate);
    }

    #[test]
    fn a_running_job_is_joined_or_waited_for_under_the_current_try() {
        assert_eq!(
            decide(observe(
                None,
                None,
                Some(JobState::Running { owned: false })
            )),
            Step::JoinCompile { try_number: 1 }
        );
        let second = compiling(2);
        assert_eq!(
            decide(observe(
                Some(&second),
                None,
                Some(JobState::Running { owned: true })
            )),
            Step::WaitForCompile { try_number: 2 }
        );
    }

    #[test]
    fn a_finished_job_is_collected_and_its_module_stored() {
        let first = compiling(1);
        assert_eq!(
            collect(
                Some(&first),
                JobState::Succeeded,
                &Outcome::Module(module())
            ),
            Step::StoreModule { try_number: 1 }
        );
        assert_eq!(
            decide(observe(Some(&first), None, Some(JobState::Failed))),
            Step::Collect
        );
    }

    #[test]
    fn a_prebuilt_module_is_stored_directly_unless_already_stored() {
        let mut observation = observe(None, None, None);
        observation.prebuilt = true;
        assert_eq!(decide(observation), Step::StorePrebuilt);
        observation.stored_digest = Some("sha256:d");
        assert_eq!(decide(observation), Step::UseStored);
    }

    #[test]
    fn a_compile_error_fails_at_once_without_a_retry() {
        let first = compiling(1);
        let error = failure("CompileError", true);
        assert_eq!(
            collect(
                Some(&first),
                JobState::Failed,
                &Outcome::Failure(error.clone())
            ),
            Step::Fail {
                failure: error.clone(),
                try_number: 1
            }
        );
        // So does a module the builder produced that must not be stored.
        let native = failure("NativeCodeSection", true);
        assert_eq!(
            collect(
                Some(&first),
                JobState::Succeeded,
                &Outcome::Failure(native.clone())
            ),
            Step::Fail {
                failure: native,
                try_number: 1
            }
        );
    }

    #[test]
    fn a_platform_failure_before_the_last_try_is_retried_with_a_doubling_delay() {
        let lost = failure("BuilderFailed", false);
        for (tries, delay) in [(1, 10), (2, 20)] {
            let status = compiling(tries);
            assert_eq!(
                collect(
                    Some(&status),
                    JobState::Failed,
                    &Outcome::Failure(lost.clone())
                ),
                Step::Retry {
                    failure: lost.clone(),
                    try_number: tries as u32,
                    delay: Duration::from_secs(delay),
                }
            );
        }
    }

    #[test]
    fn a_platform_failure_of_the_last_try_fails_naming_the_cause_and_the_tries() {
        let last = compiling(COMPILE_TRIES as i32);
        let step = collect(
            Some(&last),
            JobState::Failed,
            &Outcome::Failure(failure("DeadlineExceeded", false)),
        );
        let Step::Fail {
            failure,
            try_number,
        } = step
        else {
            panic!("{step:?}");
        };
        assert_eq!(try_number, COMPILE_TRIES);
        assert_eq!(failure.reason, "DeadlineExceeded");
        assert_eq!(
            failure.message,
            "DeadlineExceeded happened; gave up after 3 tries"
        );
    }

    #[test]
    fn a_cut_log_is_a_lost_try_and_never_an_endless_compile() {
        let cut = Outcome::Unreadable("the artifact block in the log is cut off".into());
        let first = compiling(1);
        match collect(Some(&first), JobState::Succeeded, &cut) {
            Step::Retry {
                failure,
                try_number: 1,
                delay,
            } => {
                assert_eq!(failure.reason, OUTPUT_UNREADABLE);
                assert!(!failure.user_error);
                assert!(failure.message.contains("cut off"), "{}", failure.message);
                assert_eq!(delay, Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
        let last = compiling(3);
        match collect(Some(&last), JobState::Succeeded, &cut) {
            Step::Fail { failure, .. } => {
                assert_eq!(failure.reason, OUTPUT_UNREADABLE);
                assert!(failure.message.ends_with("gave up after 3 tries"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unfetchable_log_is_asked_for_again_until_its_grace_ends_then_the_try_is_lost() {
        let first = compiling(1);
        let recent = Outcome::LogUnavailable {
            message: "the kubelet did not answer".into(),
            finished: Some(at(-10)),
        };
        assert_eq!(
            collect(Some(&first), JobState::Succeeded, &recent),
            Step::ReadAgain {
                message: "the kubelet did not answer".into(),
                give_up_at: at(50),
            }
        );
        for finished in [Some(at(-61)), None] {
            let stale = Outcome::LogUnavailable {
                message: "the kubelet did not answer".into(),
                finished,
            };
            assert!(matches!(
                collect(Some(&first), JobState::Succeeded, &stale),
                Step::Retry { ref failure, .. } if failure.reason == OUTPUT_UNREADABLE
            ));
        }
    }

    #[test]
    fn between_tries_the_function_waits_then_replaces_the_lost_try_s_job() {
        let waiting = between_tries(1, 7);
        assert_eq!(
            decide(observe(Some(&waiting), None, Some(JobState::Failed))),
            Step::BackOff {
                remaining: Duration::from_secs(7)
            }
        );
        let due = between_tries(1, 0);
        assert_eq!(
            decide(observe(Some(&due), None, Some(JobState::Failed))),
            Step::StartCompile {
                try_number: 2,
                replace: true
            }
        );
        assert_eq!(
            decide(observe(Some(&due), None, None)),
            Step::StartCompile {
                try_number: 2,
                replace: false
            }
        );
        // Another function of the same source started the next Job meanwhile.
        assert_eq!(
            decide(observe(
                Some(&due),
                None,
                Some(JobState::Running { owned: false })
            )),
            Step::JoinCompile { try_number: 2 }
        );
    }

    #[test]
    fn a_job_that_succeeded_between_tries_is_used_at_once() {
        let waiting = between_tries(2, 15);
        assert_eq!(
            collect(
                Some(&waiting),
                JobState::Succeeded,
                &Outcome::Module(module())
            ),
            Step::StoreModule { try_number: 2 }
        );
        // Unless it is unreadable too: then the wait goes on as planned.
        assert_eq!(
            collect(
                Some(&waiting),
                JobState::Succeeded,
                &Outcome::Unreadable("cut".into())
            ),
            Step::BackOff {
                remaining: Duration::from_secs(15)
            }
        );
    }

    #[test]
    fn a_vanished_job_is_a_lost_try() {
        let second = compiling(2);
        match decide(observe(Some(&second), None, None)) {
            Step::Retry {
                failure,
                try_number: 2,
                delay,
            } => {
                assert_eq!(failure.reason, JOB_LOST);
                assert_eq!(delay, Duration::from_secs(20));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_spec_change_resets_the_try_count() {
        // The status counts tries of generation 1; the spec is at generation 2 now.
        let mut old = between_tries(2, 15);
        old.observed_generation = Some(1);
        assert_eq!(decide(observe(Some(&old), None, None)), first_try());
        assert_eq!(
            collect(
                Some(&old),
                JobState::Failed,
                &Outcome::Failure(failure("BuilderFailed", false))
            ),
            Step::StartCompile {
                try_number: 1,
                replace: true
            }
        );
        // The same for a new cache key (a source change) at the last try.
        let mut other_key = compiling(3);
        other_key.cache_key = Some("sha256:bb".into());
        assert_eq!(
            decide(observe(
                Some(&other_key),
                None,
                Some(JobState::Running { owned: true })
            )),
            Step::WaitForCompile { try_number: 1 }
        );
    }

    #[test]
    fn a_lost_job_left_by_another_function_is_tried_afresh_but_a_compile_error_is_taken() {
        assert_eq!(
            collect(
                None,
                JobState::Failed,
                &Outcome::Failure(failure("ImagePull", false))
            ),
            Step::StartCompile {
                try_number: 1,
                replace: true
            }
        );
        let error = failure("CompileError", true);
        assert_eq!(
            collect(None, JobState::Failed, &Outcome::Failure(error.clone())),
            Step::Fail {
                failure: error,
                try_number: 1
            }
        );
    }

    #[test]
    fn the_retry_delay_doubles_from_ten_seconds() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(3), Duration::from_secs(40));
    }
}
