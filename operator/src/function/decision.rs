//! What a function needs next, as a pure function of what the reconciler observed. Every path
//! of the compile pipeline is decided here and tested below; the reconciler only fetches the
//! observation and carries the step out.

use wasmfn_api::{FunctionPhase, WasmFunctionStatus};

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
}

/// The next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Status already describes this spec; nothing to do.
    UpToDate,
    /// An artifact for this key is stored: Ready without a compile.
    UseStored,
    /// Store the prebuilt module from the spec.
    StorePrebuilt,
    /// Create the compile Job (and its source ConfigMap).
    StartCompile,
    /// A Job for this key is running for another function: become one of its owners.
    JoinCompile,
    /// Our Job is running: wait for it.
    WaitForCompile,
    /// The Job succeeded: read its output, verify, store, become Ready.
    CollectSuccess,
    /// The Job failed: read the diagnostics, become Failed.
    CollectFailure,
}

/// Decides the next step.
pub fn decide(observation: Observation<'_>) -> Step {
    let current = observation.status.filter(|s| {
        s.observed_generation == observation.generation
            && s.cache_key.as_deref() == Some(observation.key)
    });
    let phase = current.and_then(|s| s.phase);
    // A failed compile of these exact inputs stays failed until the spec changes: compiling
    // the same source again would fail the same way.
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
    match observation.job {
        None => Step::StartCompile,
        Some(JobState::Running { owned: false }) => Step::JoinCompile,
        Some(JobState::Running { owned: true }) => Step::WaitForCompile,
        Some(JobState::Succeeded) => Step::CollectSuccess,
        Some(JobState::Failed) => Step::CollectFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfn_api::ArtifactStatus;

    const KEY: &str = "sha256:aa";

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
        }
    }

    #[test]
    fn a_new_function_without_a_stored_artifact_starts_a_compile() {
        assert_eq!(decide(observe(None, None, None)), Step::StartCompile);
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
    fn a_ready_function_whose_artifact_vanished_compiles_again() {
        let ready = status(FunctionPhase::Ready, 2, KEY, Some("sha256:d"));
        assert_eq!(
            decide(observe(Some(&ready), None, None)),
            Step::StartCompile
        );
    }

    #[test]
    fn a_spec_change_recompiles_even_after_ready_or_failed() {
        let old_generation = status(FunctionPhase::Ready, 1, KEY, Some("sha256:d"));
        assert_eq!(
            decide(observe(Some(&old_generation), None, None)),
            Step::StartCompile
        );
        let old_key = status(FunctionPhase::Failed, 2, "sha256:bb", None);
        assert_eq!(
            decide(observe(Some(&old_key), None, None)),
            Step::StartCompile
        );
        let old_failure = status(FunctionPhase::Failed, 1, KEY, None);
        assert_eq!(
            decide(observe(Some(&old_failure), None, Some(JobState::Failed))),
            Step::CollectFailure
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
    fn a_running_job_is_joined_or_waited_for() {
        assert_eq!(
            decide(observe(
                None,
                None,
                Some(JobState::Running { owned: false })
            )),
            Step::JoinCompile
        );
        let compiling = status(FunctionPhase::Compiling, 2, KEY, None);
        assert_eq!(
            decide(observe(
                Some(&compiling),
                None,
                Some(JobState::Running { owned: true })
            )),
            Step::WaitForCompile
        );
    }

    #[test]
    fn a_finished_job_is_collected() {
        let compiling = status(FunctionPhase::Compiling, 2, KEY, None);
        assert_eq!(
            decide(observe(Some(&compiling), None, Some(JobState::Succeeded))),
            Step::CollectSuccess
        );
        assert_eq!(
            decide(observe(Some(&compiling), None, Some(JobState::Failed))),
            Step::CollectFailure
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
}
