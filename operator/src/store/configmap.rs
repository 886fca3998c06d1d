//! The ConfigMap store: the module gzip-compressed and split into parts of at most 900 KiB
//! (a ConfigMap holds at most 1 MiB), the first part in the record beside the manifest
//! (`artifact.json`), each further part in a ConfigMap of its own. A pod mounts them all as one
//! projected volume and the runner reads the directory with `wasmfn_artifact::read_dir`, which
//! verifies every part and the module digest.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::Api;
use wasmfn_api::{labels, ArtifactStore};
use wasmfn_artifact::{pack, DEFAULT_PART_BYTES, MANIFEST_FILE};

use super::record::{record_metadata, ArtifactRecord, PART_OF_LABEL};
use super::ModuleToStore;
use crate::error::Result;
use crate::idempotent::create_if_absent;

/// The ConfigMaps for `module`: parts first, the record last. Pure.
pub fn config_maps(
    name: &str,
    key: &str,
    module: ModuleToStore<'_>,
    part_bytes: usize,
) -> (ArtifactRecord, Vec<ConfigMap>) {
    let packed = pack(module.bytes, module.media_type, part_bytes);
    let part_names: Vec<String> = (1..packed.parts.len())
        .map(|i| format!("{name}-{i}"))
        .collect();
    let record = ArtifactRecord {
        name: name.to_owned(),
        store: ArtifactStore::ConfigMap,
        digest: module.digest.to_owned(),
        size: module.bytes.len() as u64,
        media_type: module.media_type.to_owned(),
        location: name.to_owned(),
        config_maps: std::iter::once(name.to_owned())
            .chain(part_names.iter().cloned())
            .collect(),
    };
    let mut maps = Vec::with_capacity(packed.parts.len());
    let mut parts = packed.parts.into_iter();
    let first = parts.next();
    for (part_name, (key_name, bytes)) in part_names.iter().zip(parts) {
        maps.push(ConfigMap {
            metadata: ObjectMeta {
                name: Some(part_name.clone()),
                labels: Some(BTreeMap::from([
                    (
                        labels::MANAGED_BY.to_owned(),
                        labels::MANAGED_BY_VALUE.to_owned(),
                    ),
                    (PART_OF_LABEL.to_owned(), name.to_owned()),
                ])),
                ..Default::default()
            },
            binary_data: Some(BTreeMap::from([(key_name, ByteString(bytes))])),
            immutable: Some(true),
            ..Default::default()
        });
    }
    maps.push(ConfigMap {
        metadata: record_metadata(&record, key),
        data: Some(BTreeMap::from([(
            MANIFEST_FILE.to_owned(),
            packed.manifest.to_json(),
        )])),
        binary_data: first.map(|(key_name, bytes)| BTreeMap::from([(key_name, ByteString(bytes))])),
        immutable: Some(true),
    });
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
