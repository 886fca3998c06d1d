//! The labels that mark a node as a WasmEdge node once the shim is installed, as JSON merge
//! patches of the Node object (a plain `PATCH`, which every apiserver since 1.0 accepts).
//!
//! Two labels:
//! - `wasmfn.dev/wasmedge=true`: the project's own; the `wasmedge` RuntimeClass schedules onto it
//!   and the operator's placement looks for it.
//! - `<handler>=provisioned` (here `wasmedge=provisioned`): runtime-class-manager's convention,
//!   the successor of the KWasm operator. Its install Job controller sets the node label whose
//!   key is the shim's name to `provisioned` once the shim is installed (`pending` while
//!   installing, `failed` on failure) and deletes the label on uninstall — see
//!   `ProvisioningStatusProvisioned` and `updateNodeLabels` in
//!   `spinkube/runtime-class-manager/internal/controller/shim_controller.go` and
//!   `job_controller.go`. Tooling that counts provisioned nodes that way recognises ours.
//!   (The older KWasm operator's `kwasm.sh/kwasm-provisioned=<node>` label is its own trigger
//!   for its install Job, set by that operator, so it is not ours to set.)

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The project's WasmEdge node label.
pub const WASMEDGE_NODE_LABEL: &str = "wasmfn.dev/wasmedge";
/// runtime-class-manager's value for a node whose shim is installed.
pub const PROVISIONED: &str = "provisioned";

/// The labels an installed node carries, for handler `handler`.
pub fn installed_labels(handler: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (WASMEDGE_NODE_LABEL.to_string(), "true".to_string()),
        (handler.to_string(), PROVISIONED.to_string()),
    ])
}

/// Whether `current` already carries every installed label with its value.
pub fn has_installed_labels(current: &BTreeMap<String, String>, handler: &str) -> bool {
    installed_labels(handler)
        .iter()
        .all(|(key, value)| current.get(key) == Some(value))
}

/// Whether `current` carries any label the installer sets.
pub fn has_any_installed_label(current: &BTreeMap<String, String>, handler: &str) -> bool {
    installed_labels(handler)
        .keys()
        .any(|key| current.contains_key(key))
}

/// Merge patch adding the installed labels (other labels untouched).
pub fn install_patch(handler: &str) -> Value {
    let labels: Map<String, Value> = installed_labels(handler)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    json!({ "metadata": { "labels": labels } })
}

/// Merge patch removing the installed labels (`null` deletes a key in a merge patch).
pub fn uninstall_patch(handler: &str) -> Value {
    let labels: Map<String, Value> = installed_labels(handler)
        .into_keys()
        .map(|k| (k, Value::Null))
        .collect();
    json!({ "metadata": { "labels": labels } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_sets_both_labels_and_uninstall_deletes_exactly_them() {
        assert_eq!(
            install_patch("wasmedge"),
            json!({"metadata": {"labels": {"wasmfn.dev/wasmedge": "true", "wasmedge": "provisioned"}}})
        );
        assert_eq!(
            uninstall_patch("wasmedge"),
            json!({"metadata": {"labels": {"wasmfn.dev/wasmedge": null, "wasmedge": null}}})
        );
    }

    #[test]
    fn a_node_counts_as_labelled_only_with_both_values() {
        let mut labels = BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]);
        assert!(!has_installed_labels(&labels, "wasmedge"));
        assert!(!has_any_installed_label(&labels, "wasmedge"));
        labels.insert("wasmedge".into(), "pending".into());
        labels.insert("wasmfn.dev/wasmedge".into(), "true".into());
        assert!(
            !has_installed_labels(&labels, "wasmedge"),
            "pending is not provisioned"
        );
        assert!(has_any_installed_label(&labels, "wasmedge"));
        labels.insert("wasmedge".into(), "provisioned".into());
        assert!(has_installed_labels(&labels, "wasmedge"));
    }
}
