//! Registering the wasmfn runtime handler in containerd's configuration file: a pure edit of the
//! file's text with `toml_edit`, so everything else in the file — other runtimes, settings,
//! comments, key order, quoting — stays as the node's owner wrote it. No I/O here; the installer
//! reads and writes the file around these functions, and the local test cluster renders node A's
//! containerd config with them too.
//!
//! Where the handler goes follows the file's own schema version, not the containerd binary:
//! containerd 2.x migrates version 1 and 2 files in memory when it loads them, so a handler
//! written in the file's schema is found by every containerd that accepts the file.
//!
//! | `version` in the file | written by | handler table |
//! |---|---|---|
//! | absent (file not empty) | containerd 1.x, schema 1 | `plugins.cri.containerd.runtimes.<handler>` |
//! | `2` | containerd 1.5–1.7 | `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<handler>` |
//! | `3` | containerd 2.x | `plugins."io.containerd.cri.v1.runtime".containerd.runtimes.<handler>` |
//!
//! An empty or missing file gets `version = <caller's choice>` (2 is read by 1.6, 1.7 and 2.x).

use toml_edit::{value, DocumentMut, InlineTable, Item, Table, Value};

/// The RuntimeClass handler name Wasm pods use (`runtimeClassName: wasmfn`). It is the project's
/// own name, so it never meets the `wasmedge` handler KWasm and SpinKube install for their shims.
pub const HANDLER_NAME: &str = "wasmfn";
/// Names earlier versions of the installer registered the same runtime type under. An install
/// removes them when they still point at [`RUNTIME_TYPE`] (see [`remove_retired_handlers`]).
pub const RETIRED_HANDLER_NAMES: &[&str] = &["wasmedge"];
/// The runtime type containerd maps to the binary `containerd-shim-wasmfn-v1`.
pub const RUNTIME_TYPE: &str = "io.containerd.wasmfn.v1";
/// The comment above a handler table this module adds, so a person reading the file knows where
/// it came from and what removes it.
const MARKER: &str = "# Wasm pods (containerd-shim-wasmfn-v1); added by wasmfn-node-installer, removed by its --uninstall.";

/// One runtime handler entry: `[… .runtimes.<name>]` with `runtime_type` and, when given,
/// `runtime_path` (the shim binary's absolute path on the host, so containerd does not have to
/// find it on its `PATH`; supported since containerd 1.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub runtime_type: String,
    pub runtime_path: Option<String>,
}

impl Handler {
    /// The project's handler (`wasmfn` → `io.containerd.wasmfn.v1`).
    pub fn wasmfn(runtime_path: Option<String>) -> Handler {
        Handler {
            name: HANDLER_NAME.to_string(),
            runtime_type: RUNTIME_TYPE.to_string(),
            runtime_path,
        }
    }
}

/// containerd's configuration schema versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaVersion {
    V1,
    V2,
    V3,
}

impl SchemaVersion {
    pub fn from_number(number: i64) -> Option<SchemaVersion> {
        match number {
            1 => Some(SchemaVersion::V1),
            2 => Some(SchemaVersion::V2),
            3 => Some(SchemaVersion::V3),
            _ => None,
        }
    }

    pub fn number(self) -> i64 {
        match self {
            SchemaVersion::V1 => 1,
            SchemaVersion::V2 => 2,
            SchemaVersion::V3 => 3,
        }
    }

    /// The plugin whose `containerd.runtimes` table holds CRI runtime handlers.
    pub fn cri_runtime_plugin(self) -> &'static str {
        match self {
            SchemaVersion::V1 => "cri",
            SchemaVersion::V2 => "io.containerd.grpc.v1.cri",
            SchemaVersion::V3 => "io.containerd.cri.v1.runtime",
        }
    }
}

/// What to do when the file already has a handler of the same name with another runtime type
/// (possible when a handler name is configured that another tool uses, such as the `wasmedge`
/// handler of KWasm and SpinKube).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingHandler {
    /// Fail with [`Error::HandlerTaken`] and leave the file alone.
    Refuse,
    /// Replace its `runtime_type` (and `runtime_path`), keeping its other settings.
    TakeOver,
}

/// The result of an edit: the new text (the input itself when nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub text: String,
    pub changed: bool,
    /// The file's schema version (`None`: an empty file, nothing to remove from).
    pub version: Option<SchemaVersion>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the file is not valid TOML: {0}")]
    Parse(#[source] toml_edit::TomlError),
    #[error("`version = {found}` is not a containerd config schema version this installer knows (1, 2 or 3)")]
    UnknownVersion { found: String },
    #[error("`{path}` is {found}, where containerd expects a table")]
    NotATable { path: String, found: &'static str },
    #[error("`{path}` is {found}, where containerd expects a string")]
    NotAString { path: String, found: &'static str },
    #[error(
        "runtime handler `{name}` already exists with runtime_type `{existing}`, not `{wanted}`: \
         it belongs to another installation and is left alone (taking it over must be asked for)"
    )]
    HandlerTaken {
        name: String,
        existing: String,
        wanted: String,
    },
    #[error(
        "this file disables containerd's CRI plugin (`disabled_plugins` lists \"{plugin}\", as \
         Docker's containerd package ships it), so it is not the config of a Kubernetes node's \
         containerd"
    )]
    CriDisabled { plugin: String },
}

/// Adds (or completes) `handler` in the config `text`. An empty `text` (a missing file) becomes
/// a file of schema `version_for_empty_file`. Idempotent: a second call returns the same text
/// with `changed == false`.
pub fn add_handler(
    text: &str,
    handler: &Handler,
    version_for_empty_file: SchemaVersion,
    existing: ExistingHandler,
) -> Result<Edit, Error> {
    let mut doc: DocumentMut = text.parse().map_err(Error::Parse)?;
    let mut changed = false;
    let version = match schema_version(&doc)? {
        Some(version) => version,
        None => {
            insert_version(&mut doc, version_for_empty_file);
            changed = true;
            version_for_empty_file
        }
    };
    refuse_disabled_cri(&doc)?;

    let plugin = version.cri_runtime_plugin();
    let mut path = String::new();
    let mut item = doc.as_item_mut();
    for key in ["plugins", plugin, "containerd", "runtimes"] {
        item = child_table(item, key, &mut path, true)?;
    }
    let runtimes_path = path.clone();
    let new_entry = new_handler_entry(item);
    let runtimes = table_like(item, &runtimes_path)?;
    if !runtimes.contains_key(&handler.name) {
        runtimes.insert(&handler.name, new_entry);
        changed = true;
    }
    let entry = child_table(item, &handler.name, &mut path, false)?;
    let entry_path = path;
    let entry = table_like(entry, &entry_path)?;

    let type_path = format!("{entry_path}.runtime_type");
    match string_value(entry.get("runtime_type"), &type_path)? {
        Some(current) if current == handler.runtime_type => {}
        Some(current) if existing == ExistingHandler::Refuse => {
            return Err(Error::HandlerTaken {
                name: handler.name.clone(),
                existing: current.to_string(),
                wanted: handler.runtime_type.clone(),
            })
        }
        _ => {
            entry.insert("runtime_type", value(handler.runtime_type.as_str()));
            changed = true;
        }
    }
    if let Some(runtime_path) = &handler.runtime_path {
        let key_path = format!("{entry_path}.runtime_path");
        if string_value(entry.get("runtime_path"), &key_path)? != Some(runtime_path.as_str()) {
            entry.insert("runtime_path", value(runtime_path.as_str()));
            changed = true;
        }
    }
    Ok(Edit {
        text: if changed {
            doc.to_string()
        } else {
            text.to_string()
        },
        changed,
        version: Some(version),
    })
}

/// Removes `handler` from the config `text` when it is there with `handler.runtime_type`
/// (a same-named handler of another runtime type is someone else's: [`Error::HandlerTaken`]).
/// Tables this module created only to hold the handler disappear with it, so `remove_handler`
/// undoes `add_handler` exactly for every file that had a `version`.
pub fn remove_handler(text: &str, handler: &Handler) -> Result<Edit, Error> {
    let mut doc: DocumentMut = text.parse().map_err(Error::Parse)?;
    let unchanged = |version| Edit {
        text: text.to_string(),
        changed: false,
        version,
    };
    let Some(version) = schema_version(&doc)? else {
        return Ok(unchanged(None));
    };
    let mut path = String::new();
    let mut item = doc.as_item_mut();
    for key in [
        "plugins",
        version.cri_runtime_plugin(),
        "containerd",
        "runtimes",
    ] {
        if !table_like(item, &path)?.contains_key(key) {
            return Ok(unchanged(Some(version)));
        }
        item = child_table(item, key, &mut path, false)?;
    }
    let runtimes_path = path.clone();
    let runtimes = table_like(item, &runtimes_path)?;
    let entry_path = format!("{runtimes_path}.{}", quote_key(&handler.name));
    let current = {
        let Some(entry) = runtimes.get(&handler.name) else {
            return Ok(unchanged(Some(version)));
        };
        let entry = entry.as_table_like().ok_or(Error::NotATable {
            path: entry_path.clone(),
            found: entry.type_name(),
        })?;
        string_value(
            entry.get("runtime_type"),
            &format!("{entry_path}.runtime_type"),
        )?
        .map(str::to_string)
    };
    if current.as_deref() != Some(handler.runtime_type.as_str()) {
        return Err(Error::HandlerTaken {
            name: handler.name.clone(),
            existing: current.unwrap_or_default(),
            wanted: handler.runtime_type.clone(),
        });
    }
    runtimes.remove(&handler.name);
    Ok(Edit {
        text: doc.to_string(),
        changed: true,
        version: Some(version),
    })
}

/// Removes the handlers named in `retired` that point at [`RUNTIME_TYPE`] (an upgraded node's
/// handler under an earlier name; `current`, the name being installed, is never removed). A
/// retired name held by another runtime is someone else's and stays. Returns the edited text and
/// the names that are ours or absent, whose `<name>=provisioned` node label is then stale.
pub fn remove_retired_handlers(
    text: &str,
    current: &str,
    retired: &[&str],
) -> Result<(Edit, Vec<String>), Error> {
    let mut edit = Edit {
        text: text.to_string(),
        changed: false,
        version: None,
    };
    let mut not_foreign = Vec::new();
    for name in retired.iter().filter(|name| **name != current) {
        let handler = Handler {
            name: name.to_string(),
            runtime_type: RUNTIME_TYPE.to_string(),
            runtime_path: None,
        };
        match remove_handler(&edit.text, &handler) {
            Ok(removed) => {
                edit.changed |= removed.changed;
                edit.version = removed.version;
                edit.text = removed.text;
                not_foreign.push(name.to_string());
            }
            Err(Error::HandlerTaken { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    Ok((edit, not_foreign))
}

/// The file's schema version; `None` for a file with no settings at all (empty, or comments).
/// containerd reads a non-empty file without `version` as schema 1.
fn schema_version(doc: &DocumentMut) -> Result<Option<SchemaVersion>, Error> {
    match doc.get("version") {
        None if doc.is_empty() => Ok(None),
        None => Ok(Some(SchemaVersion::V1)),
        Some(item) => item
            .as_integer()
            .and_then(SchemaVersion::from_number)
            .map(Some)
            .ok_or_else(|| Error::UnknownVersion {
                found: item.to_string().trim().to_string(),
            }),
    }
}

/// `version = N` at the top of an empty document, keeping any comments above it.
fn insert_version(doc: &mut DocumentMut, version: SchemaVersion) {
    let trailing = doc.trailing().as_str().unwrap_or("").to_string();
    doc.set_trailing("");
    doc.insert("version", value(version.number()));
    let comments = if trailing.trim().is_empty() {
        String::new()
    } else if trailing.ends_with('\n') {
        trailing
    } else {
        format!("{trailing}\n")
    };
    if let Some(mut key) = doc.key_mut("version") {
        key.leaf_decor_mut().set_prefix(comments);
    }
}

fn refuse_disabled_cri(doc: &DocumentMut) -> Result<(), Error> {
    let disabled = doc
        .get("disabled_plugins")
        .and_then(Item::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    for plugin in disabled {
        if matches!(
            plugin,
            "cri" | "io.containerd.grpc.v1.cri" | "io.containerd.cri.v1.runtime"
        ) {
            return Err(Error::CriDisabled {
                plugin: plugin.to_string(),
            });
        }
    }
    Ok(())
}

fn table_like<'a>(
    item: &'a mut Item,
    path: &str,
) -> Result<&'a mut dyn toml_edit::TableLike, Error> {
    let found = item.type_name();
    item.as_table_like_mut().ok_or_else(|| Error::NotATable {
        path: display_path(path),
        found,
    })
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "(the file)".to_string()
    } else {
        path.to_string()
    }
}

/// The table-like child `key` of `parent`, created (when `create`) in the parent's own style: an
/// implicit table under a `[header]` table (it gets no header of its own unless it holds
/// values), a dotted table under a dotted one, an inline table inside an inline table.
fn child_table<'a>(
    parent: &'a mut Item,
    key: &str,
    path: &mut String,
    create: bool,
) -> Result<&'a mut Item, Error> {
    let new_child = match &*parent {
        Item::Value(Value::InlineTable(_)) => Item::Value(Value::InlineTable(InlineTable::new())),
        Item::Table(table) => {
            let mut child = Table::new();
            child.set_implicit(true);
            child.set_dotted(table.is_dotted());
            Item::Table(child)
        }
        _ => Item::None,
    };
    let parent_table = table_like(parent, path)?;
    if create && !parent_table.contains_key(key) {
        parent_table.insert(key, new_child);
    }
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(&quote_key(key));
    let child = parent_table.get_mut(key).ok_or_else(|| Error::NotATable {
        path: path.clone(),
        found: "missing",
    })?;
    if child.is_table_like() {
        Ok(child)
    } else {
        Err(Error::NotATable {
            path: path.clone(),
            found: child.type_name(),
        })
    }
}

fn quote_key(key: &str) -> String {
    if key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        key.to_string()
    } else {
        format!("\"{key}\"")
    }
}

/// A new handler entry in the style of its `runtimes` parent, marked with a comment when it gets
/// a header of its own.
fn new_handler_entry(runtimes: &Item) -> Item {
    match runtimes {
        Item::Value(Value::InlineTable(_)) => Item::Value(Value::InlineTable(InlineTable::new())),
        Item::Table(parent) if parent.is_dotted() => {
            let mut entry = Table::new();
            entry.set_dotted(true);
            Item::Table(entry)
        }
        _ => {
            let mut entry = Table::new();
            entry.decor_mut().set_prefix(format!("\n{MARKER}\n"));
            Item::Table(entry)
        }
    }
}

fn string_value<'a>(item: Option<&'a Item>, path: &str) -> Result<Option<&'a str>, Error> {
    match item {
        None => Ok(None),
        Some(item) => item.as_str().map(Some).ok_or_else(|| Error::NotAString {
            path: path.to_string(),
            found: item.type_name(),
        }),
    }
}

#[cfg(test)]
mod tests;
