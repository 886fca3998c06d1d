//! What a reconcile looks at before it decides: the source (read from its ConfigMap when the
//! spec names one), the cache key, the stored artifact, the compile Job and, once the decision
//! asks for it, what the finished Job left. The reads are async and kept short; turning the
//! objects read into the decision's terms is pure and tested below.

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};
use wasmfn_api::{ArtifactStore, Language, WasmFunction};

use super::cache_key::{cache_key, private_key, KeyInputs};
use super::compile_job::{job_name, CONTAINER};
use super::compile_output::{parse_failure, parse_success, refuse_native_code, CompileFailure};
use super::decision::{JobState, Observation, Outcome};
use super::source::{files_from_config_map, validate, Invalid, SourceFiles, SourceRequest};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::ArtifactRecord;
use crate::telemetry::object_spans::nanos;

/// What the reconcile found.
#[derive(Debug)]
pub enum Seen {
    /// The spec, or the ConfigMap it names, cannot be built as written. `recheck`: the
    /// source is a ConfigMap, which may be fixed without a new generation.
    Invalid {
        /// Why.
        invalid: Invalid,
        /// Look again later (the ConfigMap can change under the same spec).
        recheck: bool,
    },
    /// The source ConfigMap the spec names does not exist (yet).
    SourceMissing {
        /// Which one, for the status and the event.
        message: String,
    },
    /// The source needs a compile, and the builder image could not be pinned to a digest yet.
    BuilderUnresolved {
        /// Why, for the status and the event.
        message: String,
    },
    /// A source to build: everything the decision needs.
    Buildable(Box<Facts>),
}

/// The facts a buildable function is decided on.
#[derive(Debug)]
pub struct Facts {
    /// The function's namespace.
    pub namespace: String,
    /// The cache key of the current spec.
    pub key: String,
    /// The store the module belongs in.
    pub store: ArtifactStore,
    /// The files to compile (the module itself for a prebuilt one).
    pub files: SourceFiles,
    /// The builder image by digest (none for a prebuilt module, which no Job builds).
    pub builder: Option<String>,
    /// The module, when the spec carries one prebuilt.
    pub prebuilt: Option<Vec<u8>>,
    /// The artifact stored under the key, if any.
    pub stored: Option<ArtifactRecord>,
    /// The key's compile Job (only looked for while neither of the above settles it).
    pub job: Option<Job>,
    /// What the finished Job left, once [`read_outcome`] was asked for it.
    pub outcome: Option<Outcome>,
}

impl Facts {
    /// The facts in the decision's terms.
    pub fn observation<'a>(
        &'a self,
        function: &'a WasmFunction,
        now: Timestamp,
    ) -> Observation<'a> {
        let uid = function.uid().unwrap_or_default();
        Observation {
            generation: function.metadata.generation,
            status: function.status.as_ref(),
            key: &self.key,
            stored_digest: self.stored.as_ref().map(|r| r.digest.as_str()),
            prebuilt: self.prebuilt.is_some(),
            job: self.job.as_ref().map(|job| job_state(job, &uid)),
            outcome: self.outcome.as_ref(),
            now,
        }
    }

    /// The Job a step needs, which the decision saw (an invariant, hence an error if absent).
    pub fn job_for(&self, step: &str) -> Result<&Job> {
        self.job
            .as_ref()
            .ok_or_else(|| Error::Invariant(format!("{step} without a Job")))
    }
}

/// Reads what the decision needs about `function` (in `namespace`).
pub async fn observe(ctx: &Context, function: &WasmFunction, namespace: &str) -> Result<Seen> {
    let request = match validate(&function.spec, ctx.stores.oci_available()) {
        Ok(SourceRequest::ConfigMap(name)) => {
            let maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
            let Some(map) = maps.get_opt(&name).await? else {
                let message =
                    format!("source ConfigMap {name} does not exist in namespace {namespace}");
                return Ok(Seen::SourceMissing { message });
            };
            match request_from_config_map(function.spec.language, &name, map) {
                Ok(request) => request,
                Err(invalid) => {
                    return Ok(Seen::Invalid {
                        invalid,
                        recheck: true,
                    })
                }
            }
        }
        Ok(request) => request,
        Err(invalid) => {
            return Ok(Seen::Invalid {
                invalid,
                recheck: false,
            })
        }
    };
    let (files, prebuilt) = files_and_module(request)?;
    let builder = match prebuilt {
        Some(_) => None,
        None => match ctx.builder.resolve().await {
            Ok(pinned) => Some(pinned),
            Err(message) => return Ok(Seen::BuilderUnresolved { message }),
        },
    };
    let key = function_key(
        function,
        builder.as_deref(),
        ctx.config.cache_enabled,
        &files,
    );
    let store = function
        .spec
        .artifact_store
        .unwrap_or(ctx.config.default_store);
    let stored = ctx.stores.lookup(namespace, store, &key).await?;
    let job = if stored.is_none() && prebuilt.is_none() {
        let jobs = Api::<Job>::namespaced(ctx.client.clone(), namespace);
        jobs.get_opt(&job_name(&key)).await?
    } else {
        None
    };
    Ok(Seen::Buildable(Box::new(Facts {
        namespace: namespace.to_owned(),
        key,
        store,
        files,
        builder,
        prebuilt,
        stored,
        job,
        outcome: None,
    })))
}

/// Reads what the finished `job` left: the module in its pod's log, or why it failed.
pub async fn read_outcome(ctx: &Context, namespace: &str, job: &Job) -> Result<Outcome> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
        .await?;
    let pod = latest_pod(job, listed.items);
    if job_state(job, "") != JobState::Succeeded {
        return Ok(Outcome::Failure(failure_of(job, pod.as_ref())));
    }
    let Some(pod) = pod else {
        return Ok(Outcome::Unreadable(
            "the Job succeeded but its pod is gone".into(),
        ));
    };
    let params = LogParams {
        container: Some(CONTAINER.to_owned()),
        ..Default::default()
    };
    Ok(match pods.logs(&pod.name_any(), &params).await {
        Ok(log) => outcome_of_log(&log),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            Outcome::Unreadable(format!("the log of pod {} is gone", pod.name_any()))
        }
        Err(error) => Outcome::LogUnavailable {
            message: format!("fetching the log of pod {}: {error}", pod.name_any()),
            finished: job
                .status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| t.0),
        },
    })
}

/// The request a source ConfigMap makes: its text and binary entries as files.
pub fn request_from_config_map(
    language: Language,
    name: &str,
    map: ConfigMap,
) -> Result<SourceRequest, Invalid> {
    let binary = map
        .binary_data
        .unwrap_or_default()
        .into_iter()
        .map(|(file, bytes)| (file, bytes.0))
        .collect();
    files_from_config_map(language, name, &map.data.unwrap_or_default(), &binary)
}

/// The files the cache key is made of, and the module when the request is a prebuilt one.
pub fn files_and_module(request: SourceRequest) -> Result<(SourceFiles, Option<Vec<u8>>)> {
    match request {
        SourceRequest::Files(files) => Ok((files, None)),
        SourceRequest::Prebuilt(bytes) => Ok((
            SourceFiles::from([("module.wasm".to_owned(), bytes.clone())]),
            Some(bytes),
        )),
        SourceRequest::ConfigMap(_) => Err(Error::Invariant("source resolved twice".into())),
    }
}

/// The function's cache key; with the cache off, a key of its own (by uid) so that no other
/// function shares its Job or artifact.
pub fn function_key(
    function: &WasmFunction,
    builder_image: Option<&str>,
    cache_enabled: bool,
    files: &SourceFiles,
) -> String {
    let inputs = KeyInputs {
        language: function.spec.language,
        builder: builder_image,
        build: &function.spec.build,
    };
    let key = cache_key(inputs, files);
    if cache_enabled {
        key
    } else {
        private_key(&key, &function.uid().unwrap_or_default())
    }
}

/// The Job's state as the decision needs it.
pub fn job_state(job: &Job, function_uid: &str) -> JobState {
    let status = job.status.as_ref();
    if status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        return JobState::Succeeded;
    }
    if failed_condition(job).is_some() {
        return JobState::Failed;
    }
    JobState::Running {
        owned: job.owner_references().iter().any(|o| o.uid == function_uid),
    }
}

/// The `Failed` condition of a failed Job. Kubernetes names condition types and statuses as
/// strings; they are compared as such.
fn failed_condition(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
}

/// When the Job started, if it has.
pub fn job_start_time(job: &Job) -> Option<Time> {
    job.status.as_ref().and_then(|s| s.start_time.clone())
}

/// When the Job started, for a span, else `or`.
pub fn job_started_nanos(job: &Job, or: Timestamp) -> u64 {
    nanos(job_start_time(job).map_or(or, |t| t.0))
}

/// When the cluster stops `job` (its `activeDeadlineSeconds` after it started), once started.
pub fn job_deadline(job: &Job) -> Option<Time> {
    let started = job.status.as_ref()?.start_time.as_ref()?.0;
    let seconds = job.spec.as_ref()?.active_deadline_seconds?;
    started
        .checked_add(SignedDuration::from_secs(seconds))
        .ok()
        .map(Time)
}

/// The newest of `pods` that belongs to `job`: a pod of an earlier try's Job of the same name
/// may linger under the same `job-name` label.
pub fn latest_pod(job: &Job, pods: Vec<Pod>) -> Option<Pod> {
    let uid = job.uid();
    pods.into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
}

/// What a succeeded compile's log holds: the module, verified like a prebuilt one (the
/// builder ran the author's code), or why there is none.
pub fn outcome_of_log(log: &str) -> Outcome {
    match parse_success(log) {
        Err(message) => Outcome::Unreadable(message),
        Ok(module) => match refuse_native_code(&module) {
            Some(failure) => Outcome::Failure(failure),
            None => Outcome::Module(module),
        },
    }
}

/// Why a failed compile failed: the builder's termination message; else why its container
/// ended, or never started (ImagePullBackOff …), or its pod went (Evicted …); else the Job's
/// own reason (DeadlineExceeded …).
pub fn failure_of(job: &Job, pod: Option<&Pod>) -> CompileFailure {
    let pod_status = pod.and_then(|p| p.status.as_ref());
    let state = pod_status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref());
    let terminated = state.and_then(|s| s.terminated.as_ref());
    let container_reason = terminated
        .and_then(|t| t.reason.as_deref())
        .or_else(|| {
            state
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
        })
        .or_else(|| pod_status.and_then(|s| s.reason.as_deref()));
    let job_reason = failed_condition(job).and_then(|c| c.reason.as_deref());
    parse_failure(
        terminated.and_then(|t| t.message.as_deref()),
        container_reason,
        job_reason,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobSpec, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            uid: uid.into(),
            name: uid.into(),
            ..Default::default()
        }
    }

    fn job(status: JobStatus) -> Job {
        let mut job = Job {
            status: Some(status),
            ..Default::default()
        };
        job.metadata.uid = Some("job-uid".into());
        job.metadata.owner_references = Some(vec![owner("function-a")]);
        job
    }

    fn failed_with(reason: Option<&str>) -> JobStatus {
        JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: reason.map(Into::into),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("in range"))
    }

    fn pod(name: &str, owner_uid: &str, created: i64) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.owner_references = Some(vec![owner(owner_uid)]);
        pod.metadata.creation_timestamp = Some(at(created));
        pod
    }

    fn function(uid: &str) -> WasmFunction {
        let spec = serde_json::from_value(
            serde_json::json!({"language": "rust", "source": {"code": "fn main() {}"}}),
        )
        .expect("valid spec");
        let mut function = WasmFunction::new("f", spec);
        function.metadata.uid = Some(uid.into());
        function
    }

    #[test]
    fn a_job_with_a_succeeded_pod_is_succeeded_even_with_a_failed_condition() {
        let mut status = failed_with(Some("BackoffLimitExceeded"));
        status.succeeded = Some(1);
        assert_eq!(job_state(&job(status), "function-a"), JobState::Succeeded);
    }

    #[test]
    fn a_job_with_a_failed_condition_is_failed() {
        assert_eq!(
            job_state(&job(failed_with(None)), "function-a"),
            JobState::Failed
        );
    }

    #[test]
    fn a_running_job_is_owned_only_by_the_functions_among_its_owners() {
        let running = job(JobStatus::default());
        assert_eq!(
            job_state(&running, "function-a"),
            JobState::Running { owned: true }
        );
        assert_eq!(
            job_state(&running, "function-b"),
            JobState::Running { owned: false }
        );
    }

    #[test]
    fn a_started_jobs_deadline_is_its_active_deadline_after_its_start() {
        let mut started = job(JobStatus {
            start_time: Some(at(1_000)),
            ..Default::default()
        });
        started.spec = Some(JobSpec {
            active_deadline_seconds: Some(600),
            ..Default::default()
        });
        assert_eq!(job_deadline(&started), Some(at(1_600)));
        started.status = Some(JobStatus::default());
        assert_eq!(job_deadline(&started), None, "not started, no deadline yet");
    }

    #[test]
    fn the_latest_pod_is_the_newest_of_the_jobs_own() {
        let finished = job(JobStatus::default());
        let pods = vec![
            pod("first", "job-uid", 10),
            pod("second", "job-uid", 20),
            pod("earlier-tries", "old-job-uid", 30),
        ];
        assert_eq!(
            latest_pod(&finished, pods).map(|p| p.name_any()).as_deref(),
            Some("second")
        );
        assert!(latest_pod(&finished, vec![pod("other", "old-job-uid", 5)]).is_none());
    }

    #[test]
    fn a_log_without_a_module_is_unreadable() {
        assert!(matches!(
            outcome_of_log("error: no manifest here"),
            Outcome::Unreadable(message) if message.contains("CompileManifest")
        ));
    }

    #[test]
    fn a_failure_names_the_containers_reason_else_the_pods_else_the_jobs() {
        let failed = job(failed_with(Some("DeadlineExceeded")));
        let waiting = Pod {
            status: Some(PodStatus {
                reason: Some("Evicted".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ImagePullBackOff".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let evicted = Pod {
            status: Some(PodStatus {
                reason: Some("Evicted".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let named = |pod: Option<&Pod>| failure_of(&failed, pod).message;
        assert!(named(Some(&waiting)).contains("ImagePullBackOff"));
        assert!(!named(Some(&waiting)).contains("Evicted"));
        assert!(named(Some(&evicted)).contains("Evicted"));
        assert!(named(None).contains("no state"));
        assert_eq!(failure_of(&failed, None).reason, "DeadlineExceeded");
    }

    #[test]
    fn a_termination_message_from_the_builder_is_its_failure() {
        let failed = job(failed_with(Some("BackoffLimitExceeded")));
        let document = r#"{"kind":"CompileFailure","reason":"CompileError","userError":true,"message":"expected `;`"}"#;
        let ended = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 1,
                            reason: Some("Error".into()),
                            message: Some(document.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let failure = failure_of(&failed, Some(&ended));
        assert_eq!(
            (failure.reason.as_str(), failure.user_error),
            ("CompileError", true)
        );
    }

    #[test]
    fn a_config_maps_text_and_binary_entries_are_both_source_files() {
        let map = ConfigMap {
            data: Some(BTreeMap::from([("src/lib.rs".into(), "fn f() {}".into())])),
            binary_data: Some(BTreeMap::from([(
                "data.bin".into(),
                ByteString(vec![0, 1, 2]),
            )])),
            ..Default::default()
        };
        let Ok(SourceRequest::Files(files)) = request_from_config_map(Language::Rust, "src", map)
        else {
            panic!("a readable source ConfigMap");
        };
        assert_eq!(files.get("data.bin"), Some(&vec![0, 1, 2]));
        assert_eq!(
            files.get("src/lib.rs").map(Vec::as_slice),
            Some(&b"fn f() {}"[..])
        );
    }

    #[test]
    fn a_prebuilt_module_is_both_the_keys_only_file_and_the_module_to_store() {
        let (files, module) =
            files_and_module(SourceRequest::Prebuilt(b"\0asm".to_vec())).expect("resolved");
        assert_eq!(module.as_deref(), Some(&b"\0asm"[..]));
        assert_eq!(files.keys().collect::<Vec<_>>(), ["module.wasm"]);
        assert!(files_and_module(SourceRequest::ConfigMap("src".into())).is_err());
    }

    #[test]
    fn functions_of_one_source_share_a_key_unless_the_cache_is_off() {
        let files = SourceFiles::from([("main.rs".to_owned(), b"fn main() {}".to_vec())]);
        let (a, b) = (function("uid-a"), function("uid-b"));
        let shared = [&a, &b].map(|f| function_key(f, Some("builder@sha256:1"), true, &files));
        assert_eq!(shared[0], shared[1]);
        let private = [&a, &b].map(|f| function_key(f, Some("builder@sha256:1"), false, &files));
        assert_ne!(private[0], private[1]);
        assert_ne!(
            function_key(&a, Some("builder@sha256:2"), true, &files),
            shared[0],
            "a new builder image compiles again"
        );
    }
}
