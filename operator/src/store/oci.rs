//! The OCI store: the module pushed as an OCI Wasm artifact (config `architecture: wasm`,
//! `os: wasip1`, empty `diff_ids`; one `application/wasm` layer holding the raw module), which a
//! WasmEdge node's containerd pulls and the shim runs straight from the layer. The record keeps
//! the reference by manifest digest, as pods name the image.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use wasmfn_api::ArtifactStore;

use super::record::{record_metadata, ArtifactRecord};
use super::ModuleToStore;
use crate::error::{Error, Result};
use crate::idempotent::create_if_absent;

/// The image config of a Wasm artifact.
const WASM_CONFIG: &[u8] =
    br#"{"architecture":"wasm","os":"wasip1","rootfs":{"type":"layers","diff_ids":[]}}"#;
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Registry settings.
#[derive(Clone)]
pub struct OciStore {
    client: Client,
    push_registry: String,
    pull_registry: String,
    repository: String,
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
    pub fn new(push_registry: &str, pull_registry: &str, repository: &str, insecure: bool) -> Self {
        let client = Client::new(ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            ..Default::default()
        });
        OciStore {
            client,
            push_registry: push_registry.to_owned(),
            pull_registry: pull_registry.to_owned(),
            repository: repository.to_owned(),
        }
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
        let reference: Reference = format!(
            "{}/{}:{}",
            self.push_registry,
            self.repository,
            tag_for(module.digest)
        )
        .parse()
        .map_err(|e| self.registry_error(format!("bad reference: {e}")))?;
        let layers = [ImageLayer::new(
            module.bytes.to_vec(),
            wasmfn_artifact::WASM_MEDIA_TYPE.to_owned(),
            None,
        )];
        let config = Config::new(WASM_CONFIG.to_vec(), CONFIG_MEDIA_TYPE.to_owned(), None);
        let manifest = OciImageManifest::build(&layers, &config, None);
        self.client
            .push(
                &reference,
                &layers,
                config,
                &RegistryAuth::Anonymous,
                Some(manifest),
            )
            .await
            .map_err(|e| self.registry_error(format!("push {reference}: {e}")))?;
        let manifest_digest = self
            .client
            .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
            .await
            .map_err(|e| self.registry_error(format!("resolve {reference}: {e}")))?;
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

    /// Pulls the module with `digest` back from the registry, verified against the digest.
    pub async fn fetch(&self, digest: &str) -> Result<Vec<u8>> {
        let reference: Reference = format!(
            "{}/{}:{}",
            self.push_registry,
            self.repository,
            tag_for(digest)
        )
        .parse()
        .map_err(|e| self.registry_error(format!("bad reference: {e}")))?;
        let image = self
            .client
            .pull(
                &reference,
                &RegistryAuth::Anonymous,
                vec![wasmfn_artifact::WASM_MEDIA_TYPE],
            )
            .await
            .map_err(|e| self.registry_error(format!("pull {reference}: {e}")))?;
        let [layer] = image.layers.as_slice() else {
            return Err(self.registry_error(format!(
                "{reference} has {} Wasm layers, expected one",
                image.layers.len()
            )));
        };
        let actual = wasmfn_artifact::sha256_digest(&layer.data);
        if actual != digest {
            return Err(
                self.registry_error(format!("{reference} holds {actual}, expected {digest}"))
            );
        }
        Ok(layer.data.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_digests_with_a_dash() {
        assert_eq!(tag_for("sha256:abc"), "sha256-abc");
    }

    #[test]
    fn the_config_is_a_wasm_image_config_with_no_layers_to_diff() {
        let config: serde_json::Value = serde_json::from_slice(WASM_CONFIG).expect("json");
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([]));
    }
}
