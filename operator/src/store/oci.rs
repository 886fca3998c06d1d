//! The OCI store: the module pushed as an OCI Wasm artifact (config `architecture: wasm`,
//! `os: wasip1`, empty `diff_ids`; one `application/wasm` layer holding the raw module), which a
//! WasmEdge node's containerd pulls and the shim runs straight from the layer. The record keeps
//! the reference by manifest digest, as pods name the image.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use oci_client::client::{Config, ImageLayer, SizedStream};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::header::HeaderValue;
use wasmfn_api::ArtifactStore;
use wasmfn_artifact::MAX_MODULE_BYTES;

use super::record::{record_metadata, ArtifactRecord};
use super::ModuleToStore;
use crate::error::{Error, Result};
use crate::idempotent::create_if_absent;
use crate::registry_auth::Credentials;

/// The image config of the Wasm artifact holding the module `digest`. It names the module in a
/// label: the container runtime knows an image by its config's digest (the CRI image id), so
/// two modules under one config would be one image to a node, and a pod could be started with
/// the other's layer.
pub fn wasm_config(digest: &str) -> Vec<u8> {
    serde_json::json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {"Labels": {MODULE_LABEL: digest}},
        "rootfs": {"type": "layers", "diff_ids": []},
    })
    .to_string()
    .into_bytes()
}

/// The image config label naming the module's digest.
pub const MODULE_LABEL: &str = "dev.wasmfn.module.digest";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Registry settings.
#[derive(Clone)]
pub struct OciStore {
    client: Client,
    push_registry: String,
    pull_registry: String,
    repository: String,
    credentials: Credentials,
}

impl std::fmt::Debug for OciStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciStore")
            .field("push_registry", &self.push_registry)
            .field("pull_registry", &self.pull_registry)
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

/// The tag a module is pushed under: its digest, `sha256-<hex>`.
pub fn tag_for(digest: &str) -> String {
    digest.replace(':', "-")
}

impl OciStore {
    /// A store pushing to `push_registry/repository`, naming images `pull_registry/repository`.
    pub fn new(
        push_registry: &str,
        pull_registry: &str,
        repository: &str,
        insecure: bool,
        credentials: Credentials,
    ) -> Self {
        OciStore {
            client: crate::registry_auth::client(insecure),
            push_registry: push_registry.to_owned(),
            pull_registry: pull_registry.to_owned(),
            repository: repository.to_owned(),
            credentials,
        }
    }

    /// How this store authenticates to its registry.
    fn auth(&self) -> Result<RegistryAuth> {
        self.credentials
            .for_registry(&self.push_registry)
            .map_err(|message| self.registry_error(format!("credentials: {message}")))
    }

    /// Hands the client the credentials for pushes made blob by blob.
    async fn authenticate(&self) -> Result<()> {
        let auth = self.auth()?;
        self.client
            .store_auth_if_needed(&self.push_registry, &auth)
            .await;
        Ok(())
    }

    fn registry_error(&self, message: impl std::fmt::Display) -> Error {
        Error::Registry {
            registry: self.push_registry.clone(),
            message: message.to_string(),
        }
    }

    /// Pushes the module and writes the record.
    pub async fn store(
        &self,
        api: &Api<ConfigMap>,
        name: &str,
        key: &str,
        module: ModuleToStore<'_>,
    ) -> Result<ArtifactRecord> {
        let reference = self.reference(module.digest)?;
        let layers = [ImageLayer::new(
            module.bytes.to_vec(),
            wasmfn_artifact::WASM_MEDIA_TYPE.to_owned(),
            None,
        )];
        let config = Config::new(
            wasm_config(module.digest),
            CONFIG_MEDIA_TYPE.to_owned(),
            None,
        );
        let manifest = OciImageManifest::build(&layers, &config, None);
        // The manifest's digest is that of the bytes pushed, computed here: a lookup by tag
        // afterwards could see another push of the tag.
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| self.registry_error(format!("encode the manifest: {e}")))?;
        let manifest_digest = wasmfn_artifact::sha256_digest(&manifest_bytes);
        self.authenticate().await?;
        let push_error = |e| self.registry_error(format!("push {reference}: {e}"));
        for (data, digest) in [
            (layers[0].data.clone(), &manifest.layers[0].digest),
            (config.data.clone(), &manifest.config.digest),
        ] {
            self.client
                .push_blob(&reference, data, digest)
                .await
                .map_err(push_error)?;
        }
        let content_type = HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
        self.client
            .push_manifest_raw(&reference, manifest_bytes, content_type)
            .await
            .map_err(push_error)?;
        let record = ArtifactRecord {
            name: name.to_owned(),
            store: ArtifactStore::Oci,
            digest: module.digest.to_owned(),
            size: module.bytes.len() as u64,
            media_type: module.media_type.to_owned(),
            location: format!(
                "{}/{}@{manifest_digest}",
                self.pull_registry, self.repository
            ),
            config_maps: Vec::new(),
        };
        let map = ConfigMap {
            metadata: record_metadata(&record, key),
            immutable: Some(true),
            ..Default::default()
        };
        create_if_absent(api, &map).await?;
        Ok(record)
    }

    /// The module with `digest` as it arrives from the registry, chunk by chunk (nothing is
    /// held but the chunk in hand), with its size from the image manifest. The stream ends in
    /// an error when the bytes do not match the layer's digest; the manifest must name that
    /// digest, one `application/wasm` layer, and at most [`MAX_MODULE_BYTES`].
    pub async fn fetch_stream(&self, digest: &str) -> Result<(u64, SizedStream)> {
        let reference = self.reference(digest)?;
        let auth = self.auth()?;
        let (manifest, _) = self
            .client
            .pull_image_manifest(&reference, &auth)
            .await
            .map_err(|e| self.registry_error(format!("pull the manifest of {reference}: {e}")))?;
        let layer = wasm_layer(&manifest.layers, digest)
            .map_err(|message| self.registry_error(format!("{reference}: {message}")))?;
        let size = u64::try_from(layer.size).unwrap_or_default();
        let stream = self
            .client
            .pull_blob_stream(&reference, layer)
            .await
            .map_err(|e| self.registry_error(format!("pull {reference}: {e}")))?;
        Ok((size, stream))
    }

    /// Pulls the module with `digest` back from the registry into one buffer of its size,
    /// verified against the digest.
    pub async fn fetch(&self, digest: &str) -> Result<Vec<u8>> {
        let (size, mut stream) = self.fetch_stream(digest).await?;
        let mut module = Vec::with_capacity(usize::try_from(size).unwrap_or_default());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.registry_error(format!("pull {digest}: {e}")))?;
            if (module.len() + chunk.len()) as u64 > size {
                return Err(self.registry_error(format!(
                    "{digest}: the registry sent more bytes, expected {size} (the manifest's size)"
                )));
            }
            module.extend_from_slice(&chunk);
        }
        let actual = wasmfn_artifact::sha256_digest(&module);
        if actual != digest {
            return Err(
                self.registry_error(format!("the registry holds {actual}, expected {digest}"))
            );
        }
        Ok(module)
    }

    fn reference(&self, digest: &str) -> Result<Reference> {
        format!(
            "{}/{}:{}",
            self.push_registry,
            self.repository,
            tag_for(digest)
        )
        .parse()
        .map_err(|e| self.registry_error(format!("bad reference: {e}")))
    }

    /// The error for a registry (or what it sent) that failed, by message.
    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        self.registry_error(message)
    }
}

/// The one Wasm layer of a stored module's manifest, checked against the module's digest and
/// the largest module a runner accepts. Pure.
pub fn wasm_layer<'a>(
    layers: &'a [OciDescriptor],
    digest: &str,
) -> std::result::Result<&'a OciDescriptor, String> {
    let wasm: Vec<&OciDescriptor> = layers
        .iter()
        .filter(|l| l.media_type == wasmfn_artifact::WASM_MEDIA_TYPE)
        .collect();
    let [layer] = wasm.as_slice() else {
        return Err(format!("{} Wasm layers, expected one", wasm.len()));
    };
    if layer.digest != digest {
        return Err(format!(
            "the Wasm layer is {}, expected {digest}",
            layer.digest
        ));
    }
    if !(0..=MAX_MODULE_BYTES as i64).contains(&layer.size) {
        return Err(format!(
            "the Wasm layer is {} bytes, expected at most {MAX_MODULE_BYTES} (the largest module a runner accepts)",
            layer.size
        ));
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(media_type: &str, digest: &str, size: i64) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size,
            ..Default::default()
        }
    }

    #[test]
    fn the_module_is_the_one_wasm_layer_of_its_digest_within_the_runners_limit() {
        let wasm = wasmfn_artifact::WASM_MEDIA_TYPE;
        let config = layer("application/vnd.oci.image.config.v1+json", "sha256:c", 70);
        let good = [config.clone(), layer(wasm, "sha256:a", 60 << 20)];
        assert_eq!(wasm_layer(&good, "sha256:a").map(|l| l.size), Ok(60 << 20));
        assert!(wasm_layer(&good, "sha256:b")
            .expect_err("another digest")
            .contains("expected sha256:b"));
        let two = [layer(wasm, "sha256:a", 1), layer(wasm, "sha256:a", 1)];
        assert!(wasm_layer(&two, "sha256:a")
            .expect_err("two layers")
            .starts_with("2 Wasm layers"));
        assert!(wasm_layer(&[config], "sha256:a")
            .expect_err("none")
            .starts_with("0 Wasm layers"));
        let huge = [layer(wasm, "sha256:a", MAX_MODULE_BYTES as i64 + 1)];
        assert!(wasm_layer(&huge, "sha256:a")
            .expect_err("too big")
            .contains("at most"));
        assert!(wasm_layer(&[layer(wasm, "sha256:a", -1)], "sha256:a").is_err());
    }

    #[test]
    fn tags_are_digests_with_a_dash() {
        assert_eq!(tag_for("sha256:abc"), "sha256-abc");
    }

    #[test]
    fn the_config_is_a_wasm_image_config_with_no_layers_to_diff_naming_its_module() {
        let config: serde_json::Value =
            serde_json::from_slice(&wasm_config("sha256:a")).expect("json");
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([]));
        assert_eq!(config["config"]["Labels"][MODULE_LABEL], "sha256:a");
    }

    #[test]
    fn two_modules_never_share_a_config_so_a_node_never_takes_one_image_for_the_other() {
        assert_ne!(wasm_config("sha256:a"), wasm_config("sha256:b"));
    }
}
