//! The reconciler: fetch (the source, the stored artifact, the Job) → [`decide`] → apply.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument, warn};
use wasmfn_api::{CompileStatus, FunctionPhase, WasmFunction, WasmFunctionStatus, API_VERSION};
use wasmfn_artifact::sha256_digest;

use super::cache_key::{cache_key, private_key, KeyInputs};
use super::compile_job::{compile_job, job_name, source_config_map, CompileJobInputs, CONTAINER};
use super::compile_output::{
    parse_failure, parse_success, refuse_native_code, CompileFailure, CompiledModule,
};
use super::decision::{decide, JobState, Observation, Step};
use super::source::{files_from_config_map, validate, SourceFiles, SourceRequest};
use super::status::StatusUpdate;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::idempotent::{create_if_absent, delete_if_present};
use crate::metrics::ActiveReconcile;
use crate::store::{ModuleToStore, FIELD_MANAGER};
use crate::telemetry::object_spans::{nanos, CompileEnd, FunctionTrace, Reconcile};

/// How often a function with a running compile is looked at even without a Job event.
const COMPILE_POLL: Duration = Duration::from_secs(15);
/// How often a function waiting for its source ConfigMap looks again.
const SOURCE_POLL: Duration = Duration::from_secs(10);

/// Reconciles one function.
#[instrument(skip(function, ctx), fields(namespace = function.namespace(), name = function.name_any()))]
pub async fn reconcile(function: Arc<WasmFunction>, ctx: Arc<Context>) -> Result<Action> {
    let _active = ActiveReconcile::start(&ctx.metrics, "function");
    let started = Timestamp::now();
    let result = reconcile_inner(&function, &ctx).await;
    trace_reconcile(&ctx, &function, started, result.as_ref().err());
    let action = result?;
    ctx.succeeded(&backoff_key(&function));
    Ok(action)
}

/// Whether the function's status already describes its current generation's final outcome.
fn is_settled(function: &WasmFunction) -> bool {
    function.status.as_ref().is_some_and(|s| {
        s.observed_generation == function.metadata.generation
            && matches!(s.phase, Some(FunctionPhase::Ready | FunctionPhase::Failed))
    })
}

/// A span for the reconcile under the generation's compile span (none for the quiet
/// reconciles of a generation that is already settled).
fn trace_reconcile(
    ctx: &Context,
    function: &WasmFunction,
    started: Timestamp,
    error: Option<&Error>,
) {
    let Some(service) = ctx.tracer.service() else {
        return;
    };
    if error.is_none() && is_settled(function) {
        return;
    }
    let namespace = function.namespace().unwrap_or_default();
    let name = function.name_any();
    let span = FunctionTrace::of(function).reconcile_span(
        service,
        &Reconcile {
            namespace: &namespace,
            name: &name,
            started: nanos(started),
            ended: nanos(Timestamp::now()),
            error: error.map(ToString::to_string),
        },
    );
    ctx.tracer.record(None, [span]);
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

/// Retries a failed reconcile with per-object exponential backoff.
pub fn error_policy(function: Arc<WasmFunction>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.inc(
        "wasmfn_reconcile_errors_total",
        &[
            ("controller", "function"),
            ("category", error.metric_label()),
        ],
    );
    let delay = ctx.backoff(&backoff_key(&function));
    warn!(name = function.name_any(), %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

fn backoff_key(function: &WasmFunction) -> String {
    format!(
        "{}/{}",
        function.namespace().unwrap_or_default(),
        function.name_any()
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
    let step = decide(Observation {
        generation,
        status: current,
        key: &key,
        stored_digest: stored.as_ref().map(|r| r.digest.as_str()),
        prebuilt: prebuilt.is_some(),
        job: job.as_ref().map(|j| job_state(j, &uid)),
    });
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
        Step::StartCompile => {
            ctx.metrics.inc("wasmfn_cache_total", &[("result", "miss")]);
            let name = start_compile(ctx, function, &jobs, &namespace, &key, &files).await?;
            let status = update.compiling(&key, &name, None);
            if write_status(ctx, &functions, function, status).await? {
                let note = format!(
                    "compile Job {name} started ({} with {})",
                    function.spec.language.as_str(),
                    ctx.config.builder_image
                );
                ctx.event(function, false, "CompileStarted", "Compile", note)
                    .await;
            }
            Ok(Action::requeue(COMPILE_POLL))
        }
        Step::JoinCompile => {
            let job = job.ok_or_else(|| Error::Invariant("JoinCompile without a Job".into()))?;
            join_compile(&jobs, &job, owner_reference(function, false)?).await?;
            let name = job.name_any();
            let start = job.status.as_ref().and_then(|s| s.start_time.clone());
            let status = update.compiling(&key, &name, start);
            if write_status(ctx, &functions, function, status).await? {
                let note =
                    format!("sharing compile Job {name} with another function of the same source");
                ctx.event(function, false, "CompileShared", "Compile", note)
                    .await;
            }
            Ok(Action::requeue(COMPILE_POLL))
        }
        Step::WaitForCompile => {
            let job = job.ok_or_else(|| Error::Invariant("WaitForCompile without a Job".into()))?;
            let start = job.status.as_ref().and_then(|s| s.start_time.clone());
            let status = update.compiling(&key, &job.name_any(), start);
            write_status(ctx, &functions, function, status).await?;
            Ok(Action::requeue(COMPILE_POLL))
        }
        Step::CollectSuccess => {
            let job = job.ok_or_else(|| Error::Invariant("CollectSuccess without a Job".into()))?;
            let (pod, log) = compile_pod_log(ctx, &namespace, &job).await?;
            let module = parse_success(&log).map_err(|message| Error::CompileOutput {
                job: job.name_any(),
                message,
            })?;
            if let Some(failure) = refuse_native_code(&module) {
                // The builder ran the author's code; what it produced is checked like a
                // prebuilt module. The Job stays, like a failed one, for other owners to see.
                record_compile_failure(ctx, function, update, &key, &job, failure).await?;
                return Ok(Action::await_change());
            }
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
            };
            let note = format!(
                "compiled in {:.0} ms by {pod}: module {} ({} bytes) stored in {} {}",
                module.compile_ms,
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
        Step::CollectFailure => {
            let job = job.ok_or_else(|| Error::Invariant("CollectFailure without a Job".into()))?;
            let pod = latest_pod(ctx, &namespace, &job).await?;
            let terminated = pod
                .as_ref()
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.iter().find(|c| c.name == CONTAINER))
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.clone());
            let job_reason = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"))
                .and_then(|c| c.reason.clone());
            let failure = parse_failure(
                terminated.as_ref().and_then(|t| t.message.as_deref()),
                terminated.as_ref().and_then(|t| t.reason.as_deref()),
                job_reason.as_deref(),
            );
            record_compile_failure(ctx, function, update, &key, &job, failure).await?;
            // The failed Job stays (owned by its functions) so `kubectl logs` shows the compiler.
            Ok(Action::await_change())
        }
    }
}

/// Records a failed compile of `job`: Failed status, metrics, the compile span and a Warning
/// event.
async fn record_compile_failure(
    ctx: &Context,
    function: &WasmFunction,
    update: StatusUpdate,
    key: &str,
    job: &Job,
    failure: CompileFailure,
) -> Result<()> {
    let namespace = function.namespace().unwrap_or_default();
    let functions = Api::<WasmFunction>::namespaced(ctx.client.clone(), &namespace);
    let compile = CompileStatus {
        job_name: Some(job.name_any()),
        start_time: job.status.as_ref().and_then(|s| s.start_time.clone()),
        ..Default::default()
    };
    let note = format!("{} (kubectl logs job/{})", failure.message, job.name_any());
    let status = update.compile_failed(key, compile, &failure);
    if write_status(ctx, &functions, function, status).await? {
        ctx.metrics.inc(
            "wasmfn_compiles_total",
            &[
                ("language", function.spec.language.as_str()),
                ("outcome", &failure.reason),
            ],
        );
        trace_compile(
            ctx,
            function,
            &CompileEnd {
                source: "compiled",
                outcome: &failure.reason,
                job: Some(&job.name_any()),
                started: job_started(job, Timestamp::now()),
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

fn owner_reference(function: &WasmFunction, controller: bool) -> Result<OwnerReference> {
    Ok(OwnerReference {
        api_version: API_VERSION.to_owned(),
        kind: WasmFunction::kind(&()).into_owned(),
        name: function.name_any(),
        uid: function
            .uid()
            .ok_or_else(|| Error::Invariant("a WasmFunction without a uid".into()))?,
        controller: Some(controller),
        block_owner_deletion: Some(true),
    })
}

/// Creates the Job and then its source ConfigMap (owned by the Job, so it goes with it; the
/// kubelet waits for the volume until it exists). Another function or replica winning the race
/// for the Job's name is fine: the Job is the same.
async fn start_compile(
    ctx: &Context,
    function: &WasmFunction,
    jobs: &Api<Job>,
    namespace: &str,
    key: &str,
    files: &SourceFiles,
) -> Result<String> {
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
    });
    let name = job_name(key);
    crate::network_policy::ensure(ctx, namespace, function).await?;
    let created = match jobs.create(&PostParams::default(), &job).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => jobs.get(&name).await?,
        Err(error) => return Err(error.into()),
    };
    let job_owner = OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: name.clone(),
        uid: created
            .uid()
            .ok_or_else(|| Error::Invariant("a Job without a uid".into()))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let source = source_config_map(key, files, job_owner);
    let maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
    create_if_absent(&maps, &source).await?;
    Ok(name)
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
    Ok(listed
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0)))
}

/// The compile pod's name and its container log.
async fn compile_pod_log(ctx: &Context, namespace: &str, job: &Job) -> Result<(String, String)> {
    let pod = latest_pod(ctx, namespace, job)
        .await?
        .ok_or_else(|| Error::CompileOutput {
            job: job.name_any(),
            message: "the Job succeeded but its pod is gone".into(),
        })?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let params = LogParams {
        container: Some(CONTAINER.to_owned()),
        ..Default::default()
    };
    let log = pods.logs(&pod.name_any(), &params).await?;
    Ok((pod.name_any(), log))
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
