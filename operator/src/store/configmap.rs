//! The ConfigMap store: the module gzip-compressed and split into parts of at most 900 KiB
//! (a ConfigMap holds at most 1 MiB), the first part in the record beside the manifest
//! (`artifact.json`), each further part in a ConfigMap of its own. A pod mounts them all as one
//! projected volume and the runner reads the directory with `wasmfn_artifact::read_dir`, which
//! verifies every part and the module digest. A module copied in from the OCI store streams
//! into its parts ([`store_stream`]): the operator never holds the whole module.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use tracing::warn;
use wasmfn_api::{labels, ArtifactStore};
use wasmfn_artifact::{pack, ArtifactManifest, PackWriter, DEFAULT_PART_BYTES, MANIFEST_FILE};

use super::record::{record_metadata, ArtifactRecord, PART_OF_LABEL};
use super::ModuleToStore;
use crate::error::{Error, Result};
use crate::idempotent::{create_if_absent, delete_if_present};

/// A part ConfigMap: `bytes` under the ConfigMap key `part` (the artifact's part name),
/// labelled as part of `record`. Pure.
pub fn part_config_map(map_name: &str, record: &str, part: String, bytes: Vec<u8>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(map_name.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_VALUE.to_owned(),
                ),
                (PART_OF_LABEL.to_owned(), record.to_owned()),
            ])),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(part, ByteString(bytes))])),
        immutable: Some(true),
        ..Default::default()
    }
}

/// The record ConfigMap: the manifest and the first part. Pure.
pub fn record_config_map(
    record: &ArtifactRecord,
    key: &str,
    manifest: &ArtifactManifest,
    first: Option<(String, Vec<u8>)>,
) -> ConfigMap {
    ConfigMap {
        metadata: record_metadata(record, key),
        data: Some(BTreeMap::from([(
            MANIFEST_FILE.to_owned(),
            manifest.to_json(),
        )])),
        binary_data: first.map(|(part, bytes)| BTreeMap::from([(part, ByteString(bytes))])),
        immutable: Some(true),
    }
}

/// The name of the ConfigMap holding part `index` (> 0) of record `name`.
pub fn part_map_name(name: &str, index: usize) -> String {
    format!("{name}-{index}")
}

fn record_of(name: &str, manifest: &ArtifactManifest, parts: usize) -> ArtifactRecord {
    ArtifactRecord {
        name: name.to_owned(),
        store: ArtifactStore::ConfigMap,
        digest: manifest.digest.clone(),
        size: manifest.size,
        media_type: manifest.media_type.clone(),
        location: name.to_owned(),
        config_maps: std::iter::once(name.to_owned())
            .chain((1..parts).map(|i| part_map_name(name, i)))
            .collect(),
    }
}

/// The ConfigMaps for `module`: parts first, the record last. Pure.
pub fn config_maps(
    name: &str,
    key: &str,
    module: ModuleToStore<'_>,
    part_bytes: usize,
) -> (ArtifactRecord, Vec<ConfigMap>) {
    let packed = pack(module.bytes, module.media_type, part_bytes);
    let record = record_of(name, &packed.manifest, packed.parts.len());
    let mut maps = Vec::with_capacity(packed.parts.len());
    let mut parts = packed.parts.into_iter();
    let first = parts.next();
    for (index, (part, bytes)) in parts.enumerate() {
        maps.push(part_config_map(
            &part_map_name(name, index + 1),
            name,
            part,
            bytes,
        ));
    }
    maps.push(record_config_map(&record, key, &packed.manifest, first));
    (record, maps)
}

/// Writes the ConfigMaps (an existing part with this name already holds these bytes: names
/// derive from the digest).
pub async fn store(
    api: &Api<ConfigMap>,
    name: &str,
    key: &str,
    module: ModuleToStore<'_>,
) -> Result<ArtifactRecord> {
    let (record, maps) = config_maps(name, key, module, DEFAULT_PART_BYTES);
    for map in &maps {
        create_if_absent(api, map).await?;
    }
    Ok(record)
}

/// Writes the module arriving as `chunks` (`module.size` bytes, which must hash to
/// `module.digest`) as [`store`] would, each part ConfigMap as soon as it is full: memory holds
/// the chunk in hand, the first part (kept for the record) and the part being filled, whatever
/// the module's size. The record is written last, once the whole module matched; when anything
/// fails before, the parts written are deleted again (callers run one copy at a time, so none
/// is another copy's). `fail` turns what went wrong with the bytes into the caller's error.
pub async fn store_stream<S, B, E>(
    api: &Api<ConfigMap>,
    name: &str,
    key: &str,
    module: StreamedModule<'_>,
    chunks: S,
    fail: impl Fn(String) -> Error,
) -> Result<ArtifactRecord>
where
    S: Stream<Item = std::result::Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut written = WrittenParts {
        api,
        name,
        first: None,
        count: 0,
    };
    let manifest = match write_parts(&mut written, module, chunks, &fail).await {
        Ok(manifest) => manifest,
        Err(error) => {
            written.delete().await;
            return Err(error);
        }
    };
    let record = record_of(name, &manifest, written.count);
    let map = record_config_map(&record, key, &manifest, written.first.take());
    if let Err(error) = create_if_absent(api, &map).await {
        written.delete().await;
        return Err(error);
    }
    Ok(record)
}

async fn write_parts<S, B, E>(
    written: &mut WrittenParts<'_>,
    module: StreamedModule<'_>,
    mut chunks: S,
    fail: &impl Fn(String) -> Error,
) -> Result<ArtifactManifest>
where
    S: Stream<Item = std::result::Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut writer = PackWriter::new(module.media_type, DEFAULT_PART_BYTES);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| fail(format!("reading {}: {e}", module.digest)))?;
        let bytes = chunk.as_ref();
        if writer.size() + bytes.len() as u64 > module.size {
            return Err(fail(format!(
                "{}: more bytes arrived, expected {} (the manifest's size)",
                module.digest, module.size
            )));
        }
        for part in writer.write(bytes) {
            written.put(part).await?;
        }
    }
    let (manifest, last) = writer.finish();
    for part in last {
        written.put(part).await?;
    }
    if manifest.digest != module.digest || manifest.size != module.size {
        return Err(fail(format!(
            "the module read is {} ({} bytes), expected {} ({} bytes)",
            manifest.digest, manifest.size, module.digest, module.size
        )));
    }
    Ok(manifest)
}

/// What [`store_stream`] expects to receive.
#[derive(Debug, Clone, Copy)]
pub struct StreamedModule<'a> {
    /// `sha256:<hex>` the bytes must have.
    pub digest: &'a str,
    /// Bytes expected.
    pub size: u64,
    /// Media type.
    pub media_type: &'a str,
}

/// The parts [`store_stream`] has written so far.
struct WrittenParts<'a> {
    api: &'a Api<ConfigMap>,
    name: &'a str,
    /// Part 0, which goes into the record.
    first: Option<(String, Vec<u8>)>,
    count: usize,
}

impl WrittenParts<'_> {
    async fn put(&mut self, (part, bytes): (String, Vec<u8>)) -> Result<()> {
        if self.count == 0 {
            self.first = Some((part, bytes));
        } else {
            let map_name = part_map_name(self.name, self.count);
            let map = part_config_map(&map_name, self.name, part, bytes);
            if !create_if_absent(self.api, &map).await? {
                // Left by a copy that failed without cleaning up (the operator was killed):
                // kept only when it holds these very bytes.
                let found = self.api.get_opt(&map_name).await?;
                if found.and_then(|f| f.binary_data) != map.binary_data {
                    delete_if_present(self.api, &map_name, &DeleteParams::default()).await?;
                    self.api.create(&PostParams::default(), &map).await?;
                }
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Deletes the part ConfigMaps written (best effort: a part left behind is not mounted
    /// without its record).
    async fn delete(&self) {
        for index in 1..self.count {
            let map_name = part_map_name(self.name, index);
            if let Err(error) =
                delete_if_present(self.api, &map_name, &DeleteParams::default()).await
            {
                warn!(config_map = %map_name, %error, "could not delete a part of a module copy that failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmfn_artifact::{sha256_digest, unpack, ArtifactManifest};

    const KEY: &str = "sha256:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn a_big_module_spreads_over_part_config_maps_and_reads_back_bit_exact() {
        let module = noise(2_500_000);
        let digest = sha256_digest(&module);
        let to_store = ModuleToStore {
            bytes: &module,
            digest: &digest,
            media_type: "application/wasm",
        };
        let (record, maps) = config_maps("wasmfn-artifact-x", KEY, to_store, DEFAULT_PART_BYTES);
        assert_eq!(maps.len(), 3, "2.5 MB of noise needs three 900 KiB parts");
        assert_eq!(
            record.config_maps,
            [
                "wasmfn-artifact-x",
                "wasmfn-artifact-x-1",
                "wasmfn-artifact-x-2"
            ]
        );
        let record_map = maps.last().expect("record");
        assert_eq!(
            record_map.metadata.name.as_deref(),
            Some("wasmfn-artifact-x")
        );
        assert_eq!(ArtifactRecord::from_config_map(record_map), Some(record));
        for map in &maps {
            let data_bytes: usize = map
                .data
                .iter()
                .flatten()
                .map(|(k, v)| k.len() + v.len())
                .sum();
            let binary_bytes: usize = map
                .binary_data
                .iter()
                .flatten()
                .map(|(k, v)| k.len() + v.0.len())
                .sum();
            assert!(
                data_bytes + binary_bytes < 1 << 20,
                "a ConfigMap holds at most 1 MiB"
            );
        }
        let manifest: ArtifactManifest =
            serde_json::from_str(&record_map.data.as_ref().expect("data")[MANIFEST_FILE])
                .expect("manifest");
        let all: BTreeMap<String, Vec<u8>> = maps
            .iter()
            .flat_map(|m| m.binary_data.clone().unwrap_or_default())
            .map(|(k, v)| (k, v.0))
            .collect();
        let back = unpack(&manifest, |part| Ok(all[part].clone())).expect("unpack");
        assert_eq!(back, module);
    }

    #[test]
    fn a_small_module_is_one_config_map() {
        let module = b"\0asm\x01\0\0\0".to_vec();
        let digest = sha256_digest(&module);
        let to_store = ModuleToStore {
            bytes: &module,
            digest: &digest,
            media_type: "application/wasm",
        };
        let (record, maps) = config_maps("wasmfn-artifact-y", KEY, to_store, DEFAULT_PART_BYTES);
        assert_eq!(maps.len(), 1);
        assert_eq!(record.config_maps, ["wasmfn-artifact-y"]);
        assert_eq!(record.size, 8);
    }
}
