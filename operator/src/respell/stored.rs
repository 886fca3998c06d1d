//! The startup pass: once this replica leads, every stored WasmFunction and WasmExecution whose
//! spec holds an old-case enum value is merge-patched to the canonical spelling, with a Normal
//! `Respelled` event on it. Objects are listed untyped: a typed read would go through the
//! enums' serde aliases and hide the stored spelling.
//!
//! The cache key is unaffected: it is built from the parsed enums (`Language::as_str`,
//! `Optimization::as_str`), which are the same for `rust` and `Rust`, so a re-spelled function
//! finds its artifact and nothing recompiles. The patch changes the spec, so the object's
//! generation moves on and its next status write records the new one.

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::Resource;
use tracing::{info, warn};
use wasmfn_api::{WasmExecution, WasmFunction};

use super::{respell, Kind};
use crate::context::Context;
use crate::error::Error;
use crate::metrics::RespellLabels;
use crate::store::FIELD_MANAGER;

/// Objects listed per request.
const PAGE: u32 = 500;

/// Attempts per object when it changes between the read and the patch.
const ATTEMPTS: usize = 3;

/// What the pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Objects re-spelled.
    pub respelled: usize,
    /// Objects (or whole lists) that could not be re-spelled; each is logged.
    pub failed: usize,
}

fn api_resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::Function => ApiResource::erase::<WasmFunction>(&()),
        Kind::Execution => ApiResource::erase::<WasmExecution>(&()),
    }
}

/// Re-spells every stored object of both kinds that needs it. Errors are logged and counted
/// (`wasmfn_respelled_objects_total{outcome="failed"}`), never returned: an object left as it
/// was is no worse off than before the operator started.
pub async fn respell_stored(ctx: &Context) -> Tally {
    let mut tally = Tally::default();
    for kind in Kind::ALL {
        let resource = api_resource(kind);
        let all = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource);
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = match all.list(&params).await {
                Ok(page) => page,
                Err(error) => {
                    warn!(%error, kind = kind.name(), "could not list objects to re-spell their enum values");
                    count(ctx, kind, "failed");
                    tally.failed += 1;
                    break;
                }
            };
            for object in page.items {
                match respell_one(ctx, kind, &resource, object).await {
                    Ok(false) => {}
                    Ok(true) => {
                        count(ctx, kind, "respelled");
                        tally.respelled += 1;
                    }
                    Err((name, error)) => {
                        warn!(%error, kind = kind.name(), object = %name, "could not re-spell an object's enum values");
                        count(ctx, kind, "failed");
                        tally.failed += 1;
                    }
                }
            }
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    if tally != Tally::default() {
        info!(
            respelled = tally.respelled,
            failed = tally.failed,
            "re-spelled stored enum values"
        );
    }
    tally
}

fn count(ctx: &Context, kind: Kind, outcome: &'static str) {
    ctx.metrics
        .respelled_objects
        .get_or_create(&RespellLabels {
            kind: kind.name(),
            outcome,
        })
        .inc();
}

/// Patches one object if it needs it; `Ok(true)` when it was re-spelled. A conflict (the object
/// changed since it was read) reads it again, so a user's newer spec is never overwritten.
async fn respell_one(
    ctx: &Context,
    kind: Kind,
    resource: &ApiResource,
    mut object: DynamicObject,
) -> std::result::Result<bool, (String, Error)> {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let named = |error: Error| (format!("{namespace}/{name}"), error);
    let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, resource);
    for attempt in 1..=ATTEMPTS {
        let json = serde_json::to_value(&object).map_err(|e| named(Error::Serde(e.to_string())))?;
        let Some(respelling) = respell(kind, &json) else {
            return Ok(false);
        };
        ctx.ensure_leading().map_err(named)?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api
            .patch(&name, &params, &Patch::Merge(&respelling.patch))
            .await
        {
            Ok(patched) => {
                info!(kind = kind.name(), %namespace, %name, changes = %respelling.note(), "re-spelled");
                ctx.event_on(
                    &patched.object_ref(resource),
                    EventType::Normal,
                    "Respelled",
                    "Respell",
                    respelling.note(),
                )
                .await;
                return Ok(true);
            }
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {
                object = api.get(&name).await.map_err(|e| named(Error::Kube(e)))?;
            }
            // Deleted since it was listed: nothing left to re-spell.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
            Err(error) => return Err(named(Error::Kube(error))),
        }
    }
    Ok(false)
}
