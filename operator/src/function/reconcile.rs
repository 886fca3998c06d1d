//! The reconciler: fetch (the source, the stored artifact, the Job) → [`decide`] → apply.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{
    DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{info, instrument};
use wasmfn_api::{CompileStatus, FunctionPhase, WasmFunction, WasmFunctionStatus, API_VERSION};
use wasmfn_artifact::sha256_digest;

use super::cache_key::{cache_key, private_key, KeyInputs};
use super::compile_job::{
    compile_job, job_name, source_config_map, source_config_map_name, CompileJobInputs, CONTAINER,
};
use super::compile_output::{
    parse_failure, parse_success, refuse_native_code, CompileFailure, CompiledModule,
};
use super::decision::{decide, JobState, Observation, Outcome, Step, COMPILE_TRIES};
use super::source::{files_from_config_map, validate, SourceFiles, SourceRequest};
use super::status::{retry_message, StatusUpdate};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::idempotent::{create_if_absent, delete_if_present};
use crate::reconciler::{self, owner_reference, Reconciled};
use crate::store::{ModuleToStore, FIELD_MANAGER};
use crate::telemetry::object_spans::{
    nanos, CompileEnd, FunctionTrace, Reconcile as ReconcileSpan,
};
use crate::telemetry::span::Span;

/// How often a function with a running compile is looked at even without a Job event.
const COMPILE_POLL: Duration = Duration::from_secs(15);
/// How often a function waiting for its source ConfigMap looks again.
const SOURCE_POLL: Duration = Duration::from_secs(10);
/// How often a finished compile's log that could not be fetched is asked for again.
const LOG_POLL: Duration = Duration::from_secs(5);
/// How soon a new try looks again when the finished Job of the last one still holds the name.
const NAME_HELD_POLL: Duration = Duration::from_secs(2);

/// Reconciles one function.
#[instrument(skip(function, ctx), fields(namespace = function.namespace(), name = function.name_any()))]
pub async fn reconcile(function: Arc<WasmFunction>, ctx: Arc<Context>) -> Result<Action> {
    reconciler::run(function, ctx, |function, ctx, _| async move {
        reconcile_inner(&function, &ctx).await
    })
    .await
}

impl Reconciled for WasmFunction {
    type Status = WasmFunctionStatus;
    const CONTROLLER: &'static str = "function";

    fn status(&self) -> Option<&WasmFunctionStatus> {
        self.status.as_ref()
    }

    fn set_status(&mut self, status: WasmFunctionStatus) {
        self.status = Some(status);
    }

    fn settled(&self) -> bool {
        is_settled(self)
    }

    fn reconcile_span(&self, service: &str, reconcile: &ReconcileSpan<'_>) -> (Span, Option<bool>) {
        (
            FunctionTrace::of(self).reconcile_span(service, reconcile),
            None,
        )
    }
}

/// Whether the function's status already describes its current generation's final outcome.
fn is_settled(function: &WasmFunction) -> bool {
    function.status.as_ref().is_some_and(|s| {
        s.observed_generation == function.metadata.generation
            && matches!(s.phase, Some(FunctionPhase::Ready | FunctionPhase::Failed))
    })
}

/// The generation's compile span, once it has its module or has failed. It starts when the
/// compile Job started, else when this reconcile did.
fn trace_compile(ctx: &Context, function: &WasmFunction, end: &CompileEnd<'_>) {
    if let Some(service) = ctx.tracer.service() {
        let span = FunctionTrace::of(function).compile_span(service, function, end);
        ctx.tracer.record(None, [span]);
    }
}

fn job_started(job: &Job, or: Timestamp) -> u64 {
    nanos(
        job.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or(or, |t| t.0),
    )
}

async fn reconcile_inner(function: &WasmFunction, ctx: &Context) -> Result<Action> {
    let namespace = function
        .namespace()
        .ok_or_else(|| Error::Invariant("a WasmFunction without a namespace".into()))?;
    let functions = Api::<WasmFunction>::namespaced(ctx.client.clone(), &namespace);
    let current = function.status.as_ref();
    let generation = function.metadata.generation;
    let now = Timestamp::now();
    let update = StatusUpdate::new(current, generation, Time(now));

    // Validate, then resolve the source into files.
    let request = match validate(&function.spec, ctx.stores.oci_available()) {
        Ok(request) => request,
        Err(invalid) => {
            let status = update.invalid(None, invalid.reason, &invalid.message);
            if write_status(ctx, &functions, function, status).await? {
                ctx.event(function, true, invalid.reason, "Validate", invalid.message)
                    .await;
            }
            return Ok(Action::await_change());
        }
    };
    let request = match request {
        SourceRequest::ConfigMap(name) => {
            let maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
            let Some(map) = maps.get_opt(&name).await? else {
                let message =
                    format!("source ConfigMap {name} does not exist in namespace {namespace}");
                let status = update.pending("SourceNotFound", &message);
                if write_status(ctx, &functions, function, status).await? {
                    ctx.event(function, true, "SourceNotFound", "Validate", message)
                        .await;
                }
                return Ok(Action::requeue(SOURCE_POLL));
            };
            let binary = map
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            match files_from_config_map(
                function.spec.language,
                &name,
                &map.data.unwrap_or_default(),
                &binary,
            ) {
                Ok(request) => request,
                Err(invalid) => {
                    let status = update.invalid(None, invalid.reason, &invalid.message);
                    if write_status(ctx, &functions, function, status).await? {
                        ctx.event(function, true, invalid.reason, "Validate", invalid.message)
                            .await;
                    }
                    return Ok(Action::requeue(SOURCE_POLL));
                }
            }
        }
        other => other,
    };
    let (files, prebuilt) = match request {
        SourceRequest::Files(files) => (files, None),
        SourceRequest::Prebuilt(bytes) => (
            SourceFiles::from([("module.wasm".to_owned(), bytes.clone())]),
            Some(bytes),
        ),
        SourceRequest::ConfigMap(_) => {
            return Err(Error::Invariant("source resolved twice".into()))
        }
    };

    // The cache key, the stored artifact and the Job.
    let inputs = KeyInputs {
        language: function.spec.language,
        builder_image: &ctx.config.builder_image,
        build: &function.spec.build,
    };
    let mut key = cache_key(inputs, &files);
    if !ctx.config.cache_enabled {
        key = private_key(&key, &function.uid().unwrap_or_default());
    }
    let store = function
        .spec
        .artifact_store
        .unwrap_or(ctx.config.default_store);
    let stored = ctx.stores.lookup(&namespace, store, &key).await?;
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
    let job = if stored.is_none() && prebuilt.is_none() {
        jobs.get_opt(&job_name(&key)).await?
    } else {
        None
    };
    let uid = function.uid().unwrap_or_default();
    let observation = Observation {
        generation,
        status: current,
        key: &key,
        stored_digest: stored.as_ref().map(|r| r.digest.as_str()),
        prebuilt: prebuilt.is_some(),
        job: job.as_ref().map(|j| job_state(j, &uid)),
        outcome: None,
        now,
    };
    let mut step = decide(observation);
    // A finished Job's output is read only when the decision needs it, then decided on.
    let outcome = match (&step, &job) {
        (Step::Collect, Some(finished)) => Some(read_outcome(ctx, &namespace, finished).await?),
        (Step::Collect, None) => return Err(Error::Invariant("Collect without a Job".into())),
        _ => None,
    };
    if let Some(outcome) = &outcome {
        step = decide(Observation {
            outcome: Some(outcome),
            ..observation
        });
    }
    info!(?step, key = %key, "decided");

    match step {
        Step::UpToDate => Ok(Action::await_change()),
        Step::UseStored => {
            let record =
                stored.ok_or_else(|| Error::Invariant("UseStored without a record".into()))?;
            ctx.metrics.inc("wasmfn_cache_total", &[("result", "hit")]);
            let note = format!(
                "module {} already stored ({}); no compile needed",
                record.digest, record.location
            );
            let status = update.ready(&key, record.to_status(), None);
            if write_status(ctx, &functions, function, status).await? {
                trace_compile(
                    ctx,
                    function,
                    &CompileEnd {
                        source: "hit",
                        outcome: "Succeeded",
                        job: None,
                        started: nanos(now),
                        ended: nanos(Timestamp::now()),
                        error: None,
                    },
                );
                ctx.event(function, false, "CacheHit", "Store", note).await;
            }
            Ok(Action::await_change())
        }
        Step::StorePrebuilt => {
            let bytes = prebuilt.unwrap_or_default();
            let digest = sha256_digest(&bytes);
            let module = ModuleToStore {
                bytes: &bytes,
                digest: &digest,
                media_type: wasmfn_artifact::WASM_MEDIA_TYPE,
            };
            let record = ctx.stores.put(&namespace, store, &key, module).await?;
            let compile = CompileStatus {
                completion_time: Some(Time(Timestamp::now())),
                ..Default::default()
            };
            let note = format!(
                "prebuilt module {} stored in {} {}",
                record.digest,
                record.store.as_str(),
                record.location
            );
            let status = update.ready(&key, record.to_status(), Some(compile));
            if write_status(ctx, &functions, function, status).await? {
                trace_compile(
                    ctx,
                    function,
                    &CompileEnd {
                        source: "prebuilt",
                        outcome: "Succeeded",
                        job: None,
                        started: nanos(now),
                        ended: nanos(Timestamp::now()),
                        error: None,
                    },
                );
                ctx.event(function, false, "Stored", "Store", note).await;
            }
            Ok(Action::await_change())
        }
        Step::StartCompile {
            try_number,
            replace,
        } => {
            if try_number == 1 {
                ctx.metrics.inc("wasmfn_cache_total", &[("result", "miss")]);
            }
            if let (true, Some(finished)) = (replace, &job) {
                replace_finished_job(&jobs, finished).await?;
            }
            let Some(name) = start_compile(ctx, function, &jobs, &namespace, &key, &files).await?
            else {
                // The finished Job of an earlier try still holds the name: being deleted.
                return Ok(Action::requeue(NAME_HELD_POLL));
            };
            let status = update.compiling(&key, &name, None, try_number, None);
            if write_status(ctx, &functions, function, status).await? {
                let again = if try_number > 1 {
                    format!("; try {try_number} of {COMPILE_TRIES}")
                } else {
                    String::new()
                };
                let note = format!(
                    "compile Job {name} started ({} with {}{again})",
                    function.spec.language.as_str(),
                    ctx.config.builder_image
                );
                ctx.event(function, false, "CompileStarted", "Compile", note)
                    .await;
            }
            Ok(Action::requeue(COMPILE_POLL))
        }
        Step::JoinCompile { try_number } => {
            let job = job.ok_or_else(|| Error::Invariant("JoinCompile without a Job".into()))?;
            join_compile(&jobs, &job, owner_reference(function, false)?).await?;
            let name = job.name_any();
            let start = job.status.as_ref().and_then(|s| s.start_time.clone());
            let status = update.compiling(&key, &name, start, try_number, job_deadline(&job));
            if write_status(ctx, &functions, function, status).await? {
                let note =
                    format!("sharing compile Job {name} with another function of the same source");
                ctx.event(function, false, "CompileShared", "Compile", note)
                    .await;
            }
            Ok(Action::requeue(COMPILE_POLL))
        }
        Step::WaitForCompile { try_number } => {
            let job = job.ok_or_else(|| Error::Invariant("WaitForCompile without a Job".into()))?;
            let start = job.status.as_ref().and_then(|s| s.start_time.clone());
            let status =
                update.compiling(&key, &job.name_any(), start, try_number, job_deadline(&job));
            write_status(ctx, &functions, function, status).await?;
            Ok(Action::requeue(COMPILE_POLL))
        }
        Step::Collect => Err(Error::Invariant(
            "Collect decided again with the outcome in hand".into(),
        )),
        Step::StoreModule { try_number } => {
            let job = job.ok_or_else(|| Error::Invariant("StoreModule without a Job".into()))?;
            let Some(Outcome::Module(module)) = outcome else {
                return Err(Error::Invariant("StoreModule without a module".into()));
            };
            let record = ctx
                .stores
                .put(&namespace, store, &key, to_store(&module))
                .await?;
            let compile = CompileStatus {
                job_name: Some(job.name_any()),
                cache_hit: false,
                start_time: job.status.as_ref().and_then(|s| s.start_time.clone()),
                completion_time: Some(Time(Timestamp::now())),
                duration_ms: Some(module.compile_ms.round() as i64),
                reason: None,
                diagnostics: Vec::new(),
                toolchain: module.toolchain.clone(),
                attempts: i32::try_from(try_number).unwrap_or(i32::MAX),
                next_attempt_time: None,
            };
            let note = format!(
                "compiled in {:.0} ms by Job {}: module {} ({} bytes) stored in {} {}",
                module.compile_ms,
                job.name_any(),
                record.digest,
                record.size,
                record.store.as_str(),
                record.location
            );
            let status = update.ready(&key, record.to_status(), Some(compile));
            if write_status(ctx, &functions, function, status).await? {
                let language = [("language", function.spec.language.as_str())];
                ctx.metrics.observe(
                    "wasmfn_compile_duration_seconds",
                    &language,
                    module.compile_ms / 1000.0,
                );
                ctx.metrics.inc(
                    "wasmfn_compiles_total",
                    &[language[0], ("outcome", "Succeeded")],
                );
                trace_compile(
                    ctx,
                    function,
                    &CompileEnd {
                        source: "compiled",
                        outcome: "Succeeded",
                        job: Some(&job.name_any()),
                        started: job_started(&job, now),
                        ended: nanos(Timestamp::now()),
                        error: None,
                    },
                );
                ctx.event(function, false, "Compiled", "Compile", note)
                    .await;
            }
            // The module is stored; the Job's pod and source ConfigMap have done their work.
            delete_job(&jobs, &job.name_any()).await?;
            Ok(Action::await_change())
        }
        Step::Fail {
            failure,
            try_number,
        } => {
            // The failed Job stays (owned by its functions) so `kubectl logs` shows the compiler.
            let tried = TriedJob::of(job.as_ref(), current);
            record_compile_failure(ctx, function, update, &key, &tried, failure, try_number)
                .await?;
            Ok(Action::await_change())
        }
        Step::Retry {
            failure,
            try_number,
            delay,
        } => {
            // The lost try's Job stays until the next try replaces it, for `kubectl logs`.
            let tried = TriedJob::of(job.as_ref(), current);
            let next = now
                .checked_add(SignedDuration::try_from(delay).unwrap_or_default())
                .unwrap_or(now);
            let compile = CompileStatus {
                job_name: tried.name.clone(),
                start_time: tried.start_time.clone(),
                ..Default::default()
            };
            let status = update.retrying(&key, compile, &failure, try_number, Time(next), delay);
            if write_status(ctx, &functions, function, status).await? {
                ctx.metrics.inc(
                    "wasmfn_compiles_total",
                    &[
                        ("language", function.spec.language.as_str()),
                        ("outcome", "Retried"),
                    ],
                );
                let note = format!(
                    "{}{}",
                    retry_message(&failure, try_number, delay),
                    tried.logs_hint()
                );
                ctx.event(function, true, &failure.reason, "Compile", note)
                    .await;
            }
            Ok(Action::requeue(delay))
        }
        Step::BackOff { remaining } => Ok(Action::requeue(remaining)),
        Step::ReadAgain {
            message,
            give_up_at,
        } => {
            let name = job.as_ref().map(ResourceExt::name_any).unwrap_or_default();
            let status = update.reading_output(&key, &name, &message, &Time(give_up_at));
            if write_status(ctx, &functions, function, status).await? {
                let note = format!("compile Job {name} finished; reading its log: {message}");
                ctx.event(function, true, "ReadingOutput", "Compile", note)
                    .await;
            }
            Ok(Action::requeue(LOG_POLL))
        }
    }
}

/// The Job a try ran in, as a failure record names it: the Job seen now, else the one the
/// status last named (a Job that vanished).
struct TriedJob {
    name: Option<String>,
    start_time: Option<Time>,
}

impl TriedJob {
    fn of(job: Option<&Job>, status: Option<&WasmFunctionStatus>) -> TriedJob {
        match job {
            Some(job) => TriedJob {
                name: Some(job.name_any()),
                start_time: job.status.as_ref().and_then(|s| s.start_time.clone()),
            },
            None => {
                let compile = status.and_then(|s| s.compile.as_ref());
                TriedJob {
                    name: compile.and_then(|c| c.job_name.clone()),
                    start_time: compile.and_then(|c| c.start_time.clone()),
                }
            }
        }
    }

    /// Where to read more, for an event.
    fn logs_hint(&self) -> String {
        self.name
            .as_deref()
            .map(|name| format!(" (kubectl logs job/{name})"))
            .unwrap_or_default()
    }
}

/// When the cluster stops `job` (its `activeDeadlineSeconds` after it started), once started.
fn job_deadline(job: &Job) -> Option<Time> {
    let started = job.status.as_ref()?.start_time.as_ref()?.0;
    let seconds = job.spec.as_ref()?.active_deadline_seconds?;
    started
        .checked_add(SignedDuration::from_secs(seconds))
        .ok()
        .map(Time)
}

/// Reads what the finished `job` left: the module in its pod's log, or why it failed.
async fn read_outcome(ctx: &Context, namespace: &str, job: &Job) -> Result<Outcome> {
    let pod = latest_pod(ctx, namespace, job).await?;
    if job_state(job, "") == JobState::Succeeded {
        let Some(pod) = pod else {
            return Ok(Outcome::Unreadable(
                "the Job succeeded but its pod is gone".into(),
            ));
        };
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
        let params = LogParams {
            container: Some(CONTAINER.to_owned()),
            ..Default::default()
        };
        let log = match pods.logs(&pod.name_any(), &params).await {
            Ok(log) => log,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Ok(Outcome::Unreadable(format!(
                    "the log of pod {} is gone",
                    pod.name_any()
                )))
            }
            Err(error) => {
                return Ok(Outcome::LogUnavailable {
                    message: format!("fetching the log of pod {}: {error}", pod.name_any()),
                    finished: job
                        .status
                        .as_ref()
                        .and_then(|s| s.completion_time.as_ref())
                        .map(|t| t.0),
                })
            }
        };
        return Ok(match parse_success(&log) {
            Err(message) => Outcome::Unreadable(message),
            // The builder ran the author's code; what it produced is checked like a prebuilt
            // module.
            Ok(module) => match refuse_native_code(&module) {
                Some(failure) => Outcome::Failure(failure),
                None => Outcome::Module(module),
            },
        });
    }
    let pod_status = pod.as_ref().and_then(|p| p.status.as_ref());
    let state = pod_status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref());
    let terminated = state.and_then(|s| s.terminated.as_ref());
    // Why the container ended, else why it never started (ImagePullBackOff …), else why the
    // pod went (Evicted …).
    let container_reason = terminated
        .and_then(|t| t.reason.as_deref())
        .or_else(|| {
            state
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
        })
        .or_else(|| pod_status.and_then(|s| s.reason.as_deref()));
    let job_reason = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"))
        .and_then(|c| c.reason.as_deref());
    Ok(Outcome::Failure(parse_failure(
        terminated.and_then(|t| t.message.as_deref()),
        container_reason,
        job_reason,
    )))
}

/// Records a failed compile: Failed status, metrics, the compile span and a Warning event.
async fn record_compile_failure(
    ctx: &Context,
    function: &WasmFunction,
    update: StatusUpdate,
    key: &str,
    tried: &TriedJob,
    failure: CompileFailure,
    try_number: u32,
) -> Result<()> {
    let namespace = function.namespace().unwrap_or_default();
    let functions = Api::<WasmFunction>::namespaced(ctx.client.clone(), &namespace);
    let compile = CompileStatus {
        job_name: tried.name.clone(),
        start_time: tried.start_time.clone(),
        attempts: i32::try_from(try_number).unwrap_or(i32::MAX),
        ..Default::default()
    };
    let note = format!("{}{}", failure.message, tried.logs_hint());
    let status = update.compile_failed(key, compile, &failure);
    if write_status(ctx, &functions, function, status).await? {
        ctx.metrics.inc(
            "wasmfn_compiles_total",
            &[
                ("language", function.spec.language.as_str()),
                ("outcome", &failure.reason),
            ],
        );
        let started = tried
            .start_time
            .as_ref()
            .map_or_else(|| nanos(Timestamp::now()), |t| nanos(t.0));
        trace_compile(
            ctx,
            function,
            &CompileEnd {
                source: "compiled",
                outcome: &failure.reason,
                job: tried.name.as_deref(),
                started,
                ended: nanos(Timestamp::now()),
                error: Some(failure.message.clone()),
            },
        );
        ctx.event(function, true, &failure.reason, "Compile", note)
            .await;
    }
    Ok(())
}

fn to_store(module: &CompiledModule) -> ModuleToStore<'_> {
    ModuleToStore {
        bytes: &module.bytes,
        digest: &module.digest,
        media_type: &module.media_type,
    }
}

/// The Job's state as [`decide`] needs it.
fn job_state(job: &Job, function_uid: &str) -> JobState {
    let status = job.status.as_ref();
    if status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        return JobState::Succeeded;
    }
    let failed = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Failed" && c.status == "True"));
    if failed {
        return JobState::Failed;
    }
    JobState::Running {
        owned: job.owner_references().iter().any(|o| o.uid == function_uid),
    }
}

/// Creates the Job and then its source ConfigMap (owned by the Job, so it goes with it; the
/// kubelet waits for the volume until it exists). Another function or replica winning the race
/// for the Job's name is fine: the Job is the same. Returns the Job's name, or `None` while the
/// name is still held by the finished Job of an earlier try (being deleted).
async fn start_compile(
    ctx: &Context,
    function: &WasmFunction,
    jobs: &Api<Job>,
    namespace: &str,
    key: &str,
    files: &SourceFiles,
) -> Result<Option<String>> {
    let deadline = function
        .spec
        .build
        .timeout_seconds
        .unwrap_or(i64::try_from(ctx.config.compile_timeout_seconds).unwrap_or(600));
    let job = compile_job(&CompileJobInputs {
        key,
        language: function.spec.language,
        build: &function.spec.build,
        files,
        builder_image: &ctx.config.builder_image,
        deadline_seconds: deadline,
        memory_bytes: ctx.config.compile_memory,
        owner: owner_reference(function, true)?,
        isolate_network: ctx.config.compile_isolate_network,
    });
    let name = job_name(key);
    ctx.ensure_network_policy(namespace, function).await?;
    let created = match jobs.create(&PostParams::default(), &job).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = jobs.get(&name).await?;
            let finished = !matches!(job_state(&existing, ""), JobState::Running { .. });
            if finished || existing.metadata.deletion_timestamp.is_some() {
                return Ok(None);
            }
            existing
        }
        Err(error) => return Err(error.into()),
    };
    let job_uid = created
        .uid()
        .ok_or_else(|| Error::Invariant("a Job without a uid".into()))?;
    let job_owner = OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: name.clone(),
        uid: job_uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let source = source_config_map(key, files, job_owner);
    let maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
    if !create_if_absent(&maps, &source).await? {
        // A source ConfigMap of an earlier try's Job would go with that Job (the garbage
        // collector deletes it by uid) and leave this Job's pod without its source: replace it.
        let map_name = source_config_map_name(key);
        let stale = maps
            .get_opt(&map_name)
            .await?
            .is_some_and(|map| !map.owner_references().iter().any(|o| o.uid == job_uid));
        if stale {
            delete_if_present(&maps, &map_name, &DeleteParams::default()).await?;
            create_if_absent(&maps, &source).await?;
        }
    }
    Ok(Some(name))
}

/// Adds `owner` to a running Job's owners (optimistic: a concurrent change makes this fail and
/// the reconcile retry).
async fn join_compile(jobs: &Api<Job>, job: &Job, owner: OwnerReference) -> Result<()> {
    let mut owners = job.owner_references().to_vec();
    if owners.iter().any(|o| o.uid == owner.uid) {
        return Ok(());
    }
    owners.push(owner);
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": job.resource_version(), "ownerReferences": owners}
    });
    jobs.patch(
        &job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn latest_pod(ctx: &Context, namespace: &str, job: &Job) -> Result<Option<Pod>> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
        .await?;
    // Only this Job's: a pod of an earlier try's Job of the same name may linger.
    let uid = job.uid();
    Ok(listed
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0)))
}

/// Deletes the finished Job of an earlier try, which holds the key's Job name (its source
/// ConfigMap goes with it). Only that Job: one another function started since under the same
/// name is left alone (the uid precondition fails), and [`start_compile`] then finds it.
async fn replace_finished_job(jobs: &Api<Job>, finished: &Job) -> Result<()> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: finished.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match jobs.delete(&finished.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn delete_job(jobs: &Api<Job>, name: &str) -> Result<()> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    delete_if_present(jobs, name, &params).await
}

/// Writes the status with server-side apply when it differs (and this replica still leads);
/// returns whether it changed.
async fn write_status(
    ctx: &Context,
    api: &Api<WasmFunction>,
    function: &WasmFunction,
    status: WasmFunctionStatus,
) -> Result<bool> {
    if function.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    ctx.ensure_leading()?;
    let patch = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "WasmFunction",
        "status": status,
    });
    api.patch_status(
        &function.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}
