//! The labels that mark a node as a WasmEdge node once the shim is installed, as JSON merge
//! patches of the Node object (a plain `PATCH`, which every apiserver since 1.0 accepts).
//!
//! Two labels:
//! - `wasmfn.dev/wasmedge=true`: the project's own; the `wasmfn` RuntimeClass schedules onto it
//!   and the operator's placement looks for it.
//! - `<handler>=provisioned` (here `wasmfn=provisioned`): runtime-class-manager's convention,
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

/// Merge patch adding the installed labels for `handler` and deleting `<name>=provisioned` for
/// each `stale` handler name (a retired name of this installer's handler); `None` when `current`
/// needs neither (other labels are never touched).
pub fn install_patch(
    current: &BTreeMap<String, String>,
    handler: &str,
    stale: &[String],
) -> Option<Value> {
    let stale: Vec<&String> = stale
        .iter()
        .filter(|name| {
            *name != handler && current.get(*name).map(String::as_str) == Some(PROVISIONED)
        })
        .collect();
    if has_installed_labels(current, handler) && stale.is_empty() {
        return None;
    }
    let mut labels: Map<String, Value> = installed_labels(handler)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    labels.extend(stale.into_iter().map(|name| (name.clone(), Value::Null)));
    Some(json!({ "metadata": { "labels": labels } }))
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
        let unlabelled = BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]);
        assert_eq!(
            install_patch(&unlabelled, "wasmfn", &[]),
            Some(
                json!({"metadata": {"labels": {"wasmfn.dev/wasmedge": "true", "wasmfn": "provisioned"}}})
            )
        );
        assert_eq!(
            uninstall_patch("wasmfn"),
            json!({"metadata": {"labels": {"wasmfn.dev/wasmedge": null, "wasmfn": null}}})
        );
        let labelled: BTreeMap<String, String> = unlabelled
            .into_iter()
            .chain(installed_labels("wasmfn"))
            .collect();
        assert_eq!(install_patch(&labelled, "wasmfn", &[]), None);
    }

    #[test]
    fn an_upgrade_deletes_the_provisioned_label_of_a_retired_handler_name_only() {
        let stale = ["wasmedge".to_string()];
        let mut labels = installed_labels("wasmfn");
        assert_eq!(
            install_patch(&labels, "wasmfn", &stale),
            None,
            "no old label"
        );
        labels.insert("wasmedge".into(), "provisioned".into());
        assert_eq!(
            install_patch(&labels, "wasmfn", &stale),
            Some(json!({"metadata": {"labels": {
                "wasmfn.dev/wasmedge": "true", "wasmfn": "provisioned", "wasmedge": null}}}))
        );
        // Another value is another tool's state (runtime-class-manager's `pending`, `failed`).
        labels.insert("wasmedge".into(), "pending".into());
        assert_eq!(install_patch(&labels, "wasmfn", &stale), None);
        // The name being installed is never deleted, even when listed as stale.
        assert_eq!(
            install_patch(&installed_labels("wasmedge"), "wasmedge", &stale),
            None
        );
    }

    #[test]
    fn a_node_counts_as_labelled_only_with_both_values() {
        let mut labels = BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]);
        assert!(!has_installed_labels(&labels, "wasmfn"));
        assert!(!has_any_installed_label(&labels, "wasmfn"));
        labels.insert("wasmfn".into(), "pending".into());
        labels.insert("wasmfn.dev/wasmedge".into(), "true".into());
        assert!(
            !has_installed_labels(&labels, "wasmfn"),
            "pending is not provisioned"
        );
        assert!(has_any_installed_label(&labels, "wasmfn"));
        labels.insert("wasmfn".into(), "provisioned".into());
        assert!(has_installed_labels(&labels, "wasmfn"));
    }
}
