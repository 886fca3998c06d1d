//! The steps a function's reconcile carries out, one small async function per [`Step`] the
//! decision names (plus the two answers to a source that cannot be built). Each writes the
//! function's status at most once (the write is fenced on the resourceVersion the decision saw,
//! so a second write of the same pass would be refused as stale) and tells when to look again.
//!
//! [`Step`]: super::decision::Step

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use wasmfn_api::{CompileStatus, FunctionPhase, WasmFunction, WasmFunctionStatus};
use wasmfn_artifact::sha256_digest;

use super::compile_job::{
    compile_job, job_name, source_config_map, source_config_map_name, CompileJobInputs,
};
use super::compile_output::{CompileFailure, CompiledModule};
use super::decision::{JobState, Outcome, COMPILE_TRIES};
use super::observe::{job_deadline, job_start_time, job_started_nanos, job_state, Facts};
use super::source::{Invalid, SourceFiles};
use super::status::{retry_message, StatusUpdate};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::idempotent::{create_if_absent, delete_if_present};
use crate::metrics::{CacheResult, CompileLabels, LanguageLabels};
use crate::reconciler::{self, owner_reference};
use crate::store::ModuleToStore;
use crate::telemetry::object_spans::{nanos, CompileEnd, FunctionTrace};

/// How often a function with a running compile is looked at even without a Job event.
pub const COMPILE_POLL: Duration = Duration::from_secs(15);
/// How often a function waiting for its source ConfigMap looks again.
pub const SOURCE_POLL: Duration = Duration::from_secs(10);
/// How often a finished compile's log that could not be fetched is asked for again.
pub const LOG_POLL: Duration = Duration::from_secs(5);
/// How soon a new try looks again when the finished Job of the last one still holds the name.
pub const NAME_HELD_POLL: Duration = Duration::from_secs(2);
/// Reason of a function waiting for the builder image to be pinned to a digest.
pub const BUILDER_UNRESOLVED: &str = "BuilderUnresolved";

/// One reconcile pass of one function: what every step writes to and reports with.
#[derive(Debug)]
pub struct Pass<'a> {
    ctx: &'a Context,
    function: &'a WasmFunction,
    now: Timestamp,
    written: AtomicBool,
}

impl<'a> Pass<'a> {
    /// A pass over `function` as read, deciding at `now`.
    pub fn new(ctx: &'a Context, function: &'a WasmFunction, now: Timestamp) -> Self {
        Pass {
            ctx,
            function,
            now,
            written: AtomicBool::new(false),
        }
    }

    /// The time the pass decides at.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// A status update starting from the function's current status.
    fn update(&self) -> StatusUpdate {
        StatusUpdate::new(
            self.function.status.as_ref(),
            self.function.metadata.generation,
            Time(self.now),
        )
    }

    /// Writes `status` if it differs; returns whether it did (events and metrics follow only
    /// a change, so that a repeated reconcile does not repeat them).
    async fn write(&self, status: WasmFunctionStatus) -> Result<bool> {
        if self.written.swap(true, Ordering::SeqCst) {
            return Err(Error::Invariant(
                "a second status write in one reconcile would be refused as stale".into(),
            ));
        }
        let namespace = self.function.namespace().unwrap_or_default();
        let functions = Api::<WasmFunction>::namespaced(self.ctx.client.clone(), &namespace);
        let written =
            reconciler::write_status(self.ctx, &functions, self.function, &status).await?;
        Ok(written.is_some())
    }

    async fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        self.ctx
            .event(self.function, type_, reason, action, note)
            .await;
    }

    /// Counts a finished compile by language and outcome.
    fn count_compile(&self, outcome: &str) {
        let labels = CompileLabels {
            language: self.function.spec.language.as_str(),
            outcome: outcome.to_owned(),
        };
        self.ctx.metrics.compiles.get_or_create(&labels).inc();
    }

    /// The generation's compile span, once it has its module or has failed.
    fn trace_compile(&self, end: &CompileEnd<'_>) {
        if let Some(service) = self.ctx.tracer.service() {
            let span = FunctionTrace::of(self.function).compile_span(service, self.function, end);
            self.ctx.tracer.record(None, [span]);
        }
    }

    fn jobs(&self, facts: &Facts) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), &facts.namespace)
    }
}

/// The spec (or its source ConfigMap) cannot be built: Failed, with the reason.
pub async fn refuse(pass: &Pass<'_>, invalid: Invalid) -> Result<()> {
    let status = pass
        .update()
        .invalid(None, invalid.reason, &invalid.message);
    if pass.write(status).await? {
        pass.event(
            EventType::Warning,
            invalid.reason,
            "Validate",
            invalid.message,
        )
        .await;
    }
    Ok(())
}

/// The source ConfigMap is missing: Pending until it appears.
pub async fn wait_for_source(pass: &Pass<'_>, message: String) -> Result<Action> {
    let status = pass.update().pending("SourceNotFound", &message);
    if pass.write(status).await? {
        pass.event(EventType::Warning, "SourceNotFound", "Validate", message)
            .await;
    }
    Ok(Action::requeue(SOURCE_POLL))
}

/// The builder image cannot be pinned: a function already Ready for its generation keeps its
/// module and status; any other waits, with the reason in its status and an event.
pub async fn wait_for_builder(pass: &Pass<'_>, message: String) -> Result<Action> {
    let ready = pass.function.status.as_ref().is_some_and(|status| {
        status.phase == Some(FunctionPhase::Ready)
            && status.observed_generation == pass.function.metadata.generation
    });
    if !ready {
        let status = pass.update().pending(BUILDER_UNRESOLVED, &message);
        if pass.write(status).await? {
            pass.event(EventType::Warning, BUILDER_UNRESOLVED, "Compile", message)
                .await;
        }
    }
    Ok(Action::requeue(SOURCE_POLL))
}

/// An artifact for the key is stored already: Ready without a compile.
pub async fn use_stored(pass: &Pass<'_>, facts: &Facts) -> Result<Action> {
    let record = facts
        .stored
        .as_ref()
        .ok_or_else(|| Error::Invariant("UseStored without a record".into()))?;
    pass.ctx.metrics.cache_lookup(CacheResult::Hit);
    let note = format!(
        "module {} already stored ({}); no compile needed",
        record.digest, record.location
    );
    let status = pass.update().ready(&facts.key, record.to_status(), None);
    if pass.write(status).await? {
        pass.trace_compile(&CompileEnd {
            source: "hit",
            outcome: "Succeeded",
            job: None,
            started: nanos(pass.now),
            ended: nanos(Timestamp::now()),
            error: None,
        });
        pass.event(EventType::Normal, "CacheHit", "Store", note)
            .await;
    }
    Ok(Action::await_change())
}

/// Stores the module the spec carries: Ready without a compile.
pub async fn store_prebuilt(pass: &Pass<'_>, facts: &Facts) -> Result<Action> {
    let bytes = facts.prebuilt.as_deref().unwrap_or_default();
    let digest = sha256_digest(bytes);
    let module = ModuleToStore {
        bytes,
        digest: &digest,
        media_type: wasmfn_artifact::WASM_MEDIA_TYPE,
    };
    let record = pass
        .ctx
        .stores
        .put(&facts.namespace, facts.store, &facts.key, module)
        .await?;
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
    let status = pass
        .update()
        .ready(&facts.key, record.to_status(), Some(compile));
    if pass.write(status).await? {
        pass.trace_compile(&CompileEnd {
            source: "prebuilt",
            outcome: "Succeeded",
            job: None,
            started: nanos(pass.now),
            ended: nanos(Timestamp::now()),
            error: None,
        });
        pass.event(EventType::Normal, "Stored", "Store", note).await;
    }
    Ok(Action::await_change())
}

/// Starts try `try_number` of the compile; `replace`: the finished Job of an earlier try holds
/// the key's Job name and goes first.
pub async fn start_compile(
    pass: &Pass<'_>,
    facts: &Facts,
    try_number: u32,
    replace: bool,
) -> Result<Action> {
    if try_number == 1 {
        pass.ctx.metrics.cache_lookup(CacheResult::Miss);
    }
    let jobs = pass.jobs(facts);
    if let (true, Some(finished)) = (replace, &facts.job) {
        delete_finished_job(&jobs, finished).await?;
    }
    let Some(name) = create_compile_job(pass, facts, &jobs).await? else {
        // The finished Job of an earlier try still holds the name: being deleted.
        return Ok(Action::requeue(NAME_HELD_POLL));
    };
    let status = pass
        .update()
        .compiling(&facts.key, &name, None, try_number, None);
    if pass.write(status).await? {
        let again = if try_number > 1 {
            format!("; try {try_number} of {COMPILE_TRIES}")
        } else {
            String::new()
        };
        let note = format!(
            "compile Job {name} started ({} with {}{again})",
            pass.function.spec.language.as_str(),
            facts.builder.as_deref().unwrap_or_default()
        );
        pass.event(EventType::Normal, "CompileStarted", "Compile", note)
            .await;
    }
    Ok(Action::requeue(COMPILE_POLL))
}

/// Another function's Job for the same key is running: become one of its owners and wait.
pub async fn join_compile(pass: &Pass<'_>, facts: &Facts, try_number: u32) -> Result<Action> {
    let job = facts.job_for("JoinCompile")?;
    add_owner(
        &pass.jobs(facts),
        job,
        owner_reference(pass.function, false)?,
    )
    .await?;
    let name = job.name_any();
    let status = pass.update().compiling(
        &facts.key,
        &name,
        job_start_time(job),
        try_number,
        job_deadline(job),
    );
    if pass.write(status).await? {
        let note = format!("sharing compile Job {name} with another function of the same source");
        pass.event(EventType::Normal, "CompileShared", "Compile", note)
            .await;
    }
    Ok(Action::requeue(COMPILE_POLL))
}

/// Our Job is running (after a restart, perhaps one an earlier replica started): wait for it.
pub async fn wait_for_compile(pass: &Pass<'_>, facts: &Facts, try_number: u32) -> Result<Action> {
    let job = facts.job_for("WaitForCompile")?;
    let name = job.name_any();
    // A Job the status does not name was started by a replica that stopped before it said so:
    // this is the first the function's events hear of the compile.
    let adopted = pass
        .function
        .status
        .as_ref()
        .and_then(|s| s.compile.as_ref())
        .and_then(|c| c.job_name.as_deref())
        .is_none_or(|recorded| recorded != name);
    let status = pass.update().compiling(
        &facts.key,
        &name,
        job_start_time(job),
        try_number,
        job_deadline(job),
    );
    if pass.write(status).await? && adopted {
        let note = format!(
            "compile Job {name} ({}), started by an earlier operator replica, is followed to its end",
            pass.function.spec.language.as_str()
        );
        pass.event(EventType::Normal, "CompileStarted", "Compile", note)
            .await;
    }
    Ok(Action::requeue(COMPILE_POLL))
}

/// The Job left a verified module: store it, become Ready, and let the Job go.
pub async fn store_module(pass: &Pass<'_>, facts: &Facts, try_number: u32) -> Result<Action> {
    let job = facts.job_for("StoreModule")?;
    let Some(Outcome::Module(module)) = &facts.outcome else {
        return Err(Error::Invariant("StoreModule without a module".into()));
    };
    let record = pass
        .ctx
        .stores
        .put(&facts.namespace, facts.store, &facts.key, to_store(module))
        .await?;
    let note = format!(
        "compiled in {:.0} ms by Job {}: module {} ({} bytes) stored in {} {}",
        module.compile_ms,
        job.name_any(),
        record.digest,
        record.size,
        record.store.as_str(),
        record.location
    );
    let compile = compiled_status(job, module, try_number);
    let status = pass
        .update()
        .ready(&facts.key, record.to_status(), Some(compile));
    if pass.write(status).await? {
        let language = LanguageLabels {
            language: pass.function.spec.language.as_str(),
        };
        pass.ctx
            .metrics
            .compile_duration
            .get_or_create(&language)
            .observe(module.compile_ms / 1000.0);
        pass.count_compile("Succeeded");
        pass.trace_compile(&CompileEnd {
            source: "compiled",
            outcome: "Succeeded",
            job: Some(&job.name_any()),
            started: job_started_nanos(job, pass.now),
            ended: nanos(Timestamp::now()),
            error: None,
        });
        pass.event(EventType::Normal, "Compiled", "Compile", note)
            .await;
    }
    // The module is stored; the Job's pod and source ConfigMap have done their work.
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    delete_if_present(&pass.jobs(facts), &job.name_any(), &params).await?;
    Ok(Action::await_change())
}

/// The compile failed for good: Failed, with the cause. The failed Job stays (owned by its
/// functions) so that `kubectl logs` shows the compiler.
pub async fn fail(
    pass: &Pass<'_>,
    facts: &Facts,
    failure: CompileFailure,
    try_number: u32,
) -> Result<Action> {
    let tried = TriedJob::of(facts.job.as_ref(), pass.function.status.as_ref());
    let compile = CompileStatus {
        job_name: tried.name.clone(),
        start_time: tried.start_time.clone(),
        attempts: i32::try_from(try_number).unwrap_or(i32::MAX),
        ..Default::default()
    };
    let note = format!("{}{}", failure.message, tried.logs_hint());
    let status = pass.update().compile_failed(&facts.key, compile, &failure);
    if pass.write(status).await? {
        // A metric label: one of our reasons, or one of the builder's (anything else the
        // builder's document claims became BuilderFailed when it was read).
        pass.count_compile(&failure.reason);
        let started = tried
            .start_time
            .as_ref()
            .map_or_else(|| nanos(Timestamp::now()), |t| nanos(t.0));
        pass.trace_compile(&CompileEnd {
            source: "compiled",
            outcome: &failure.reason,
            job: tried.name.as_deref(),
            started,
            ended: nanos(Timestamp::now()),
            error: Some(failure.message.clone()),
        });
        pass.event(EventType::Warning, &failure.reason, "Compile", note)
            .await;
    }
    Ok(Action::await_change())
}

/// A try the platform lost, to be made again after a delay.
#[derive(Debug)]
pub struct LostTry {
    /// How it was lost.
    pub failure: CompileFailure,
    /// The lost try.
    pub try_number: u32,
    /// The wait before the next.
    pub delay: Duration,
}

/// The platform lost this try: Pending until the next. The lost try's Job stays until the next
/// try replaces it, for `kubectl logs`.
pub async fn retry(pass: &Pass<'_>, facts: &Facts, lost: LostTry) -> Result<Action> {
    let LostTry {
        failure,
        try_number,
        delay,
    } = lost;
    let tried = TriedJob::of(facts.job.as_ref(), pass.function.status.as_ref());
    let next = pass
        .now
        .checked_add(SignedDuration::try_from(delay).unwrap_or_default())
        .unwrap_or(pass.now);
    let compile = CompileStatus {
        job_name: tried.name.clone(),
        start_time: tried.start_time.clone(),
        ..Default::default()
    };
    let status =
        pass.update()
            .retrying(&facts.key, compile, &failure, try_number, Time(next), delay);
    if pass.write(status).await? {
        pass.count_compile("Retried");
        let note = format!(
            "{}{}",
            retry_message(&failure, try_number, delay),
            tried.logs_hint()
        );
        pass.event(EventType::Warning, &failure.reason, "Compile", note)
            .await;
    }
    Ok(Action::requeue(delay))
}

/// The finished Job's log could not be fetched: say so, and ask again soon.
pub async fn read_again(
    pass: &Pass<'_>,
    facts: &Facts,
    message: &str,
    give_up_at: Timestamp,
) -> Result<Action> {
    let name = facts
        .job
        .as_ref()
        .map(ResourceExt::name_any)
        .unwrap_or_default();
    let status = pass
        .update()
        .reading_output(&facts.key, &name, message, &Time(give_up_at));
    if pass.write(status).await? {
        let note = format!("compile Job {name} finished; reading its log: {message}");
        pass.event(EventType::Warning, "ReadingOutput", "Compile", note)
            .await;
    }
    Ok(Action::requeue(LOG_POLL))
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
                start_time: job_start_time(job),
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

/// The compile record of a Job that produced `module` on try `try_number`.
fn compiled_status(job: &Job, module: &CompiledModule, try_number: u32) -> CompileStatus {
    CompileStatus {
        job_name: Some(job.name_any()),
        cache_hit: false,
        start_time: job_start_time(job),
        completion_time: Some(Time(Timestamp::now())),
        duration_ms: Some(module.compile_ms.round() as i64),
        reason: None,
        diagnostics: Vec::new(),
        toolchain: module.toolchain.clone(),
        attempts: i32::try_from(try_number).unwrap_or(i32::MAX),
        next_attempt_time: None,
    }
}

fn to_store(module: &CompiledModule) -> ModuleToStore<'_> {
    ModuleToStore {
        bytes: &module.bytes,
        digest: &module.digest,
        media_type: &module.media_type,
    }
}

/// Creates the Job and then its source ConfigMap (owned by the Job, so it goes with it; the
/// kubelet waits for the volume until it exists). Another function or replica winning the race
/// for the Job's name is fine: the Job is the same. Returns the Job's name, or `None` while the
/// name is still held by the finished Job of an earlier try (being deleted).
async fn create_compile_job(
    pass: &Pass<'_>,
    facts: &Facts,
    jobs: &Api<Job>,
) -> Result<Option<String>> {
    let (ctx, function) = (pass.ctx, pass.function);
    let deadline = function
        .spec
        .build
        .timeout_seconds
        .unwrap_or(i64::try_from(ctx.config.compile_timeout_seconds).unwrap_or(600));
    let job = compile_job(&CompileJobInputs {
        key: &facts.key,
        language: function.spec.language,
        build: &function.spec.build,
        files: &facts.files,
        builder_image: facts
            .builder
            .as_deref()
            .ok_or_else(|| Error::Invariant("a compile Job without a builder".into()))?,
        deadline_seconds: deadline,
        memory_bytes: ctx.config.compile_memory,
        owner: owner_reference(function, true)?,
        isolate_network: ctx.config.compile_isolate_network,
        image_pull_secrets: &ctx.config.image_pull_secrets,
    });
    let name = job_name(&facts.key);
    ctx.ensure_network_policy(&facts.namespace, function)
        .await?;
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
    let maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &facts.namespace);
    write_source(&maps, &facts.key, &facts.files, &name, &job_uid).await?;
    Ok(Some(name))
}

/// Writes the source ConfigMap of Job `name` (uid `job_uid`), owned by it.
async fn write_source(
    maps: &Api<ConfigMap>,
    key: &str,
    files: &SourceFiles,
    name: &str,
    job_uid: &str,
) -> Result<()> {
    let job_owner = OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: name.to_owned(),
        uid: job_uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let source = source_config_map(key, files, job_owner);
    if create_if_absent(maps, &source).await? {
        return Ok(());
    }
    // A source ConfigMap of an earlier try's Job would go with that Job (the garbage collector
    // deletes it by uid) and leave this Job's pod without its source: replace it. The collector
    // may also have removed it since the create above found it, so an absent one is created
    // too (once it is this Job's, the collector's uid precondition never matches it).
    let map_name = source_config_map_name(key);
    match maps.get_opt(&map_name).await? {
        Some(map) if map.owner_references().iter().any(|o| o.uid == job_uid) => {}
        Some(_) => {
            delete_if_present(maps, &map_name, &DeleteParams::default()).await?;
            create_if_absent(maps, &source).await?;
        }
        None => {
            create_if_absent(maps, &source).await?;
        }
    }
    Ok(())
}

/// Adds `owner` to a running Job's owners (optimistic: a concurrent change makes this fail and
/// the reconcile retry).
async fn add_owner(jobs: &Api<Job>, job: &Job, owner: OwnerReference) -> Result<()> {
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

/// Deletes the finished Job of an earlier try, which holds the key's Job name (its source
/// ConfigMap goes with it). Only that Job: one another function started since under the same
/// name is left alone (the uid precondition fails), and [`create_compile_job`] then finds it.
async fn delete_finished_job(jobs: &Api<Job>, finished: &Job) -> Result<()> {
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
