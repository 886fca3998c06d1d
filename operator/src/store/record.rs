//! The artifact record: naming and reading the ConfigMap that says where a module is stored.
//! Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmfn_api::{labels, ArtifactStatus, ArtifactStore};

use crate::naming::{digest_hex, label_form, short_digest};

/// Annotation: the full digest.
pub const DIGEST_ANNOTATION: &str = "wasmfn.dev/digest";
/// Annotation: size in bytes.
pub const SIZE_ANNOTATION: &str = "wasmfn.dev/size";
/// Annotation: media type.
pub const MEDIA_TYPE_ANNOTATION: &str = "wasmfn.dev/media-type";
/// Annotation: where the module is (record name, or image reference).
pub const LOCATION_ANNOTATION: &str = "wasmfn.dev/location";
/// Annotation: the ConfigMaps holding the module, comma-separated (ConfigMap store).
pub const PARTS_ANNOTATION: &str = "wasmfn.dev/config-maps";
/// Label on part ConfigMaps: the record they belong to.
pub const PART_OF_LABEL: &str = "wasmfn.dev/part-of";

/// A stored module as its record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    /// The record ConfigMap's name.
    pub name: String,
    /// The store.
    pub store: ArtifactStore,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// Record name (ConfigMap store) or image reference by digest (OCI store).
    pub location: String,
    /// The ConfigMaps to mount (ConfigMap store), record first.
    pub config_maps: Vec<String>,
}

/// `wasmfn-artifact-<20 hex>` (ConfigMap store) or `wasmfn-oci-<20 hex>` (OCI store).
pub fn record_name(store: ArtifactStore, digest: &str) -> String {
    let hex = digest_hex(digest);
    let prefix = match store {
        ArtifactStore::ConfigMap => "wasmfn-artifact",
        ArtifactStore::Oci => "wasmfn-oci",
    };
    format!("{prefix}-{}", &hex[..hex.len().min(20)])
}

/// Labels of a record.
pub fn record_labels(store: ArtifactStore, digest: &str, key: &str) -> BTreeMap<String, String> {
    let hex = digest_hex(digest);
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (labels::ARTIFACT.to_owned(), "true".to_owned()),
        (labels::STORE.to_owned(), store.as_str().to_owned()),
        (
            labels::DIGEST.to_owned(),
            hex[..hex.len().min(63)].to_owned(),
        ),
        (
            format!("{}{}", labels::CACHE_KEY_PREFIX, label_form(key)),
            String::new(),
        ),
    ])
}

/// Metadata of a record.
pub fn record_metadata(record: &ArtifactRecord, key: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(record.name.clone()),
        labels: Some(record_labels(record.store, &record.digest, key)),
        annotations: Some(BTreeMap::from([
            (DIGEST_ANNOTATION.to_owned(), record.digest.clone()),
            (SIZE_ANNOTATION.to_owned(), record.size.to_string()),
            (MEDIA_TYPE_ANNOTATION.to_owned(), record.media_type.clone()),
            (LOCATION_ANNOTATION.to_owned(), record.location.clone()),
            (PARTS_ANNOTATION.to_owned(), record.config_maps.join(",")),
        ])),
        ..Default::default()
    }
}

impl ArtifactRecord {
    /// Reads a record; `None` when the ConfigMap is not a complete record.
    pub fn from_config_map(map: &ConfigMap) -> Option<ArtifactRecord> {
        let meta = &map.metadata;
        let labels_ = meta.labels.as_ref()?;
        if labels_.get(labels::ARTIFACT).map(String::as_str) != Some("true") {
            return None;
        }
        let store = match labels_.get(labels::STORE)?.as_str() {
            "configmap" => ArtifactStore::ConfigMap,
            "oci" => ArtifactStore::Oci,
            _ => return None,
        };
        let annotations = meta.annotations.as_ref()?;
        Some(ArtifactRecord {
            name: meta.name.clone()?,
            store,
            digest: annotations.get(DIGEST_ANNOTATION)?.clone(),
            size: annotations.get(SIZE_ANNOTATION)?.parse().ok()?,
            media_type: annotations.get(MEDIA_TYPE_ANNOTATION)?.clone(),
            location: annotations.get(LOCATION_ANNOTATION)?.clone(),
            config_maps: annotations
                .get(PARTS_ANNOTATION)
                .map(|p| {
                    p.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The function status view.
    pub fn to_status(&self) -> ArtifactStatus {
        ArtifactStatus {
            digest: self.digest.clone(),
            short_digest: short_digest(&self.digest),
            size: i64::try_from(self.size).unwrap_or(i64::MAX),
            media_type: self.media_type.clone(),
            store: self.store.as_str().to_owned(),
            location: self.location.clone(),
            config_maps: self.config_maps.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const KEY: &str = "sha256:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn record(store: ArtifactStore) -> ArtifactRecord {
        let name = record_name(store, DIGEST);
        ArtifactRecord {
            name: name.clone(),
            store,
            digest: DIGEST.into(),
            size: 1234,
            media_type: "application/wasm".into(),
            location: name.clone(),
            config_maps: vec![name.clone(), format!("{name}-1")],
        }
    }

    #[test]
    fn names_carry_store_and_digest() {
        assert_eq!(
            record_name(ArtifactStore::ConfigMap, DIGEST),
            "wasmfn-artifact-00112233445566778899"
        );
        assert_eq!(
            record_name(ArtifactStore::Oci, DIGEST),
            "wasmfn-oci-00112233445566778899"
        );
    }

    #[test]
    fn a_record_round_trips_through_its_config_map() {
        for store in [ArtifactStore::ConfigMap, ArtifactStore::Oci] {
            let original = record(store);
            let map = ConfigMap {
                metadata: record_metadata(&original, KEY),
                ..Default::default()
            };
            let labels_ = map.metadata.labels.as_ref().expect("labels");
            assert!(labels_.contains_key(&format!("key.wasmfn.dev/{}", &KEY[7..70])));
            assert!(labels_
                .keys()
                .chain(labels_.values())
                .all(|s| s.len() <= 253));
            assert!(labels_.values().all(|v| v.len() <= 63));
            assert_eq!(
                ArtifactRecord::from_config_map(&map),
                Some(original.clone())
            );
            let status = original.to_status();
            assert_eq!(status.short_digest, "001122334455");
            assert_eq!(status.store, store.as_str());
        }
    }

    #[test]
    fn incomplete_or_foreign_config_maps_are_not_records() {
        let mut map = ConfigMap {
            metadata: record_metadata(&record(ArtifactStore::ConfigMap), KEY),
            ..Default::default()
        };
        map.metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .remove(SIZE_ANNOTATION);
        assert_eq!(ArtifactRecord::from_config_map(&map), None);
        assert_eq!(ArtifactRecord::from_config_map(&ConfigMap::default()), None);
    }
}
