//! Artifact stores: where compiled modules live, shared by digest, found by cache key.
//!
//! Each stored module has a **record**: a ConfigMap in the function's namespace named after the
//! store and the module digest, labelled `wasmfn.dev/artifact=true`, `wasmfn.dev/store=<store>`
//! and one `key.wasmfn.dev/<key>` label per cache key that produced the module. A cache lookup
//! is one list call with those labels as selector. The ConfigMap store keeps the module itself
//! in the record and its part ConfigMaps; the OCI store keeps it in a registry and the record
//! says where. Records are never owned by functions (functions share them); the garbage
//! collector deletes records no function refers to after the cache TTL.

pub mod configmap;
pub mod gc;
pub mod oci;
pub mod record;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;

use wasmfn_api::{labels, ArtifactStatus, ArtifactStore};
use wasmfn_artifact::{ArtifactManifest, MANIFEST_FILE};

use crate::error::{Error, Result};
use crate::naming::label_form;
pub use record::ArtifactRecord;

/// The field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "wasmfn-operator";

/// A module to store.
#[derive(Debug, Clone, Copy)]
pub struct ModuleToStore<'a> {
    /// The bytes.
    pub bytes: &'a [u8],
    /// `sha256:<hex>` of the bytes (already verified by the caller).
    pub digest: &'a str,
    /// Media type.
    pub media_type: &'a str,
}

/// Both stores behind one front.
#[derive(Clone)]
pub struct Stores {
    client: Client,
    oci: Option<oci::OciStore>,
    /// Held while an OCI module is copied into ConfigMaps.
    copying: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("oci", &self.oci)
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// The stores; `oci` is `None` when no registry is configured.
    pub fn new(client: Client, oci: Option<oci::OciStore>) -> Self {
        Stores {
            client,
            oci,
            copying: Arc::default(),
        }
    }

    /// Whether the OCI store can be used.
    pub fn oci_available(&self) -> bool {
        self.oci.is_some()
    }

    fn records(&self, namespace: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The bytes of a function's stored module, verified against its digest: pulled from the
    /// registry, or reassembled from the ConfigMap store's parts.
    pub async fn module_bytes(
        &self,
        namespace: &str,
        artifact: &ArtifactStatus,
    ) -> Result<Vec<u8>> {
        if artifact.store == ArtifactStore::Oci.as_str() {
            let oci = self.oci.as_ref().ok_or_else(|| {
                Error::Config("the module is in the OCI store, which is not configured".into())
            })?;
            return oci.fetch(&artifact.digest).await;
        }
        let api = self.records(namespace);
        let mut manifest = None;
        let mut parts = BTreeMap::new();
        for name in &artifact.config_maps {
            let map = api.get(name).await?;
            if let Some(text) = map.data.as_ref().and_then(|d| d.get(MANIFEST_FILE)) {
                manifest = Some(ArtifactManifest::from_json(text.as_bytes())?);
            }
            for (key, bytes) in map.binary_data.unwrap_or_default() {
                parts.insert(key, bytes.0);
            }
        }
        let manifest = manifest.ok_or_else(|| {
            Error::Config(format!(
                "none of the ConfigMaps {} holds {MANIFEST_FILE}",
                artifact.config_maps.join(", ")
            ))
        })?;
        let module = wasmfn_artifact::unpack(&manifest, |name| {
            parts
                .remove(name)
                .ok_or_else(|| wasmfn_artifact::Error::MissingPart {
                    name: name.to_owned(),
                    detail: format!("not in ConfigMaps {}", artifact.config_maps.join(", ")),
                })
        })?;
        if wasmfn_artifact::sha256_digest(&module) != artifact.digest {
            return Err(Error::Config(format!(
                "the stored module is not {}",
                artifact.digest
            )));
        }
        Ok(module)
    }

    /// The record stored under `key` in `store`, if any.
    pub async fn lookup(
        &self,
        namespace: &str,
        store: ArtifactStore,
        key: &str,
    ) -> Result<Option<ArtifactRecord>> {
        let selector = format!(
            "{}=true,{}={},{}{}",
            labels::ARTIFACT,
            labels::STORE,
            store.as_str(),
            labels::CACHE_KEY_PREFIX,
            label_form(key)
        );
        let found = self
            .records(namespace)
            .list(&ListParams::default().labels(&selector))
            .await?;
        Ok(found.items.iter().find_map(ArtifactRecord::from_config_map))
    }

    /// Stores `module` in `store` under `key` (idempotent: a module already stored gains the key).
    pub async fn put(
        &self,
        namespace: &str,
        store: ArtifactStore,
        key: &str,
        module: ModuleToStore<'_>,
    ) -> Result<ArtifactRecord> {
        let api = self.records(namespace);
        let name = record::record_name(store, module.digest);
        if let Some(record) = self.existing(&api, &name, module.digest, key).await? {
            return Ok(record);
        }
        let record = match store {
            ArtifactStore::ConfigMap => configmap::store(&api, &name, key, module).await?,
            ArtifactStore::Oci => {
                let oci = self.oci.as_ref().ok_or_else(|| {
                    crate::error::Error::Config("the OCI store is not configured".into())
                })?;
                oci.store(&api, &name, key, module).await?
            }
        };
        Ok(record)
    }

    /// The ConfigMap-store copy of a module kept in the OCI store, made on first use: container
    /// pods mount modules from ConfigMaps, and run pods reach no registry. The copy is an
    /// ordinary record under the same key, so the garbage collector treats it like any other.
    ///
    /// The module streams from the registry into part ConfigMaps (see
    /// [`configmap::store_stream`]), and one copy runs at a time: however big the module and
    /// however many executions want it at once, the operator holds about two parts of it.
    pub async fn config_map_copy(
        &self,
        namespace: &str,
        key: &str,
        digest: &str,
        media_type: &str,
    ) -> Result<ArtifactRecord> {
        if let Some(record) = self.copied(namespace, key, digest).await? {
            return Ok(record);
        }
        let oci = self.oci.as_ref().ok_or_else(|| {
            crate::error::Error::Config(
                "the function's module is in the OCI store, which is not configured".into(),
            )
        })?;
        let _one_at_a_time = self.copying.lock().await;
        // Another execution may have made the copy while this one waited.
        if let Some(record) = self.copied(namespace, key, digest).await? {
            return Ok(record);
        }
        let api = self.records(namespace);
        let name = record::record_name(ArtifactStore::ConfigMap, digest);
        if let Some(record) = self.existing(&api, &name, digest, key).await? {
            return Ok(record);
        }
        let (size, stream) = oci.fetch_stream(digest).await?;
        let module = configmap::StreamedModule {
            digest,
            size,
            media_type,
        };
        configmap::store_stream(&api, &name, key, module, stream, |m| oci.error(m)).await
    }

    /// The ConfigMap copy under `key`, if it is of `digest`.
    async fn copied(
        &self,
        namespace: &str,
        key: &str,
        digest: &str,
    ) -> Result<Option<ArtifactRecord>> {
        Ok(self
            .lookup(namespace, ArtifactStore::ConfigMap, key)
            .await?
            .filter(|record| record.digest == digest))
    }

    /// The record `name` when it already stores `digest` (it gains `key`).
    async fn existing(
        &self,
        api: &Api<ConfigMap>,
        name: &str,
        digest: &str,
        key: &str,
    ) -> Result<Option<ArtifactRecord>> {
        let Some(existing) = api.get_opt(name).await? else {
            return Ok(None);
        };
        match ArtifactRecord::from_config_map(&existing) {
            Some(record) if record.digest == digest => {
                self.add_key(api, name, key).await?;
                Ok(Some(record))
            }
            _ => Ok(None),
        }
    }

    async fn add_key(&self, api: &Api<ConfigMap>, name: &str, key: &str) -> Result<()> {
        let patch = serde_json::json!({
            "metadata": {
                "labels": { format!("{}{}", labels::CACHE_KEY_PREFIX, label_form(key)): "" },
                "annotations": { labels::UNREFERENCED_SINCE: null }
            }
        });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}
