use super::*;

const SHIM: &str = "/opt/wasmfn/bin/containerd-shim-wasmfn-v1";

fn ours() -> Handler {
    Handler::wasmfn(Some(SHIM.to_string()))
}

fn add(text: &str) -> Result<Edit, Error> {
    add_handler(text, &ours(), SchemaVersion::V2, ExistingHandler::Refuse)
}

/// The string at a dotted path of plain keys (each element one key, dots allowed inside).
fn lookup(text: &str, path: &[&str]) -> Option<String> {
    let doc: DocumentMut = text.parse().expect("valid TOML");
    let mut item = doc.as_item();
    for key in path {
        item = item.as_table_like()?.get(key)?;
    }
    item.as_str().map(str::to_string)
}

fn handler_path<'a>(plugin: &'a str, key: &'a str) -> [&'a str; 6] {
    ["plugins", plugin, "containerd", "runtimes", "wasmfn", key]
}

/// containerd 1.7's `config default` layout, abbreviated, with a node owner's comments.
const V2: &str = r#"# Managed by the node image; local changes are kept.
version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.8"
    # runc is the default runtime
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true   # cgroup v2 nodes

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"#;

/// containerd 2.x's layout (schema 3, single-quoted plugin keys).
const V3: &str = r#"version = 3
root = '/var/lib/containerd'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
"#;

/// A schema 1 file (no `version`), as containerd 1.2–1.4 wrote them.
const V1: &str = r#"root = "/var/lib/containerd"

[plugins.cri.containerd]
  snapshotter = "overlayfs"
[plugins.cri.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
"#;

/// Several runtimes already registered (GPU and sandboxed ones), in the compact style.
const MANY_RUNTIMES: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "nvidia"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
BinaryName = "/usr/bin/nvidia-container-runtime"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
runtime_type = "io.containerd.kata.v2"
privileged_without_host_devices = true
[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = "/opt/cni/bin"
"#;

/// Just a version and a CRI setting: the whole `containerd.runtimes` path is missing.
const NO_RUNTIMES: &str = r#"version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
"#;

const DOTTED: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
runtimes.runc.runtime_type = "io.containerd.runc.v2"
snapshotter = "overlayfs"
"#;

const INLINE: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
runtimes = { runc = { runtime_type = "io.containerd.runc.v2" } }
"#;

const FIXTURES: &[(&str, &str)] = &[
    ("v2", V2),
    ("v3", V3),
    ("v1", V1),
    ("many runtimes", MANY_RUNTIMES),
    ("no runtimes", NO_RUNTIMES),
    ("dotted", DOTTED),
    ("inline", INLINE),
];

#[test]
fn a_v2_file_gets_the_handler_after_the_last_runtime_and_nothing_else_changes() {
    let edit = add(V2).expect("edit");
    assert!(edit.changed);
    assert_eq!(edit.version, Some(SchemaVersion::V2));
    let expected = V2.replace(
        "            SystemdCgroup = true   # cgroup v2 nodes\n",
        &format!(
            "            SystemdCgroup = true   # cgroup v2 nodes\n\
             \n{MARKER}\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmfn]\n\
             runtime_type = \"io.containerd.wasmfn.v1\"\n\
             runtime_path = \"{SHIM}\"\n"
        ),
    );
    assert_eq!(edit.text, expected);
}

#[test]
fn a_v3_file_gets_the_handler_under_the_cri_runtime_plugin_in_its_own_quoting() {
    let edit = add(V3).expect("edit");
    assert_eq!(edit.version, Some(SchemaVersion::V3));
    let expected = V3.replace(
        "          runtime_type = 'io.containerd.runc.v2'\n",
        &format!(
            "          runtime_type = 'io.containerd.runc.v2'\n\
             \n{MARKER}\n\
             [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasmfn]\n\
             runtime_type = \"io.containerd.wasmfn.v1\"\n\
             runtime_path = \"{SHIM}\"\n"
        ),
    );
    assert_eq!(edit.text, expected);
    // Not under the v2 plugin name, which containerd 2.x keeps for the CRI gRPC service only.
    assert_eq!(
        lookup(
            &edit.text,
            &handler_path("io.containerd.grpc.v1.cri", "runtime_type")
        ),
        None
    );
}

#[test]
fn a_file_without_version_is_schema_1_and_uses_the_cri_plugin() {
    let edit = add(V1).expect("edit");
    assert_eq!(edit.version, Some(SchemaVersion::V1));
    assert!(!edit.text.contains("version"), "{}", edit.text);
    assert_eq!(
        lookup(&edit.text, &handler_path("cri", "runtime_type")).as_deref(),
        Some(RUNTIME_TYPE)
    );
    assert!(
        edit.text.starts_with(V1),
        "appended after the runc table:\n{}",
        edit.text
    );
}

#[test]
fn every_fixture_gets_the_handler_at_its_schemas_path() {
    for (name, text) in FIXTURES {
        let edit = add(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let plugin = edit.version.expect("version").cri_runtime_plugin();
        assert_eq!(
            lookup(&edit.text, &handler_path(plugin, "runtime_type")).as_deref(),
            Some(RUNTIME_TYPE),
            "{name}:\n{}",
            edit.text
        );
        assert_eq!(
            lookup(&edit.text, &handler_path(plugin, "runtime_path")).as_deref(),
            Some(SHIM),
            "{name}"
        );
    }
}

#[test]
fn existing_runtimes_and_settings_keep_their_values() {
    let edit = add(MANY_RUNTIMES).expect("edit");
    let cri = "io.containerd.grpc.v1.cri";
    for (path, expected) in [
        (
            vec!["plugins", cri, "containerd", "default_runtime_name"],
            "nvidia",
        ),
        (
            vec![
                "plugins",
                cri,
                "containerd",
                "runtimes",
                "nvidia",
                "options",
                "BinaryName",
            ],
            "/usr/bin/nvidia-container-runtime",
        ),
        (
            vec![
                "plugins",
                cri,
                "containerd",
                "runtimes",
                "kata",
                "runtime_type",
            ],
            "io.containerd.kata.v2",
        ),
        (vec!["plugins", cri, "cni", "bin_dir"], "/opt/cni/bin"),
    ] {
        assert_eq!(
            lookup(&edit.text, &path).as_deref(),
            Some(expected),
            "{path:?}"
        );
    }
    assert!(edit.text.contains("privileged_without_host_devices = true"));
}

#[test]
fn comments_stay_where_they_were() {
    let edit = add(V2).expect("edit");
    for comment in [
        "# Managed by the node image; local changes are kept.\nversion = 2\n",
        "    # runc is the default runtime\n    [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n",
        "SystemdCgroup = true   # cgroup v2 nodes\n",
    ] {
        assert!(edit.text.contains(comment), "lost {comment:?}:\n{}", edit.text);
    }
}

#[test]
fn a_second_run_changes_nothing() {
    for (name, text) in FIXTURES {
        let first = add(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let second = add(&first.text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!second.changed, "{name}: second run changed the file");
        assert_eq!(second.text, first.text, "{name}");
    }
}

#[test]
fn removing_undoes_adding_byte_for_byte() {
    for (name, text) in FIXTURES {
        let added = add(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let removed =
            remove_handler(&added.text, &ours()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(removed.changed, "{name}");
        assert_eq!(removed.text, *text, "{name}");
        let again = remove_handler(&removed.text, &ours()).expect("second removal");
        assert!(!again.changed, "{name}: second removal changed the file");
        assert_eq!(again.text, *text);
    }
}

#[test]
fn dotted_and_inline_runtimes_get_an_entry_in_the_same_style() {
    let dotted = add(DOTTED).expect("dotted");
    assert!(
        dotted
            .text
            .contains("runtimes.wasmfn.runtime_type = \"io.containerd.wasmfn.v1\"\n"),
        "{}",
        dotted.text
    );
    assert!(!dotted
        .text
        .contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes"));
    let inline = add(INLINE).expect("inline");
    assert!(
        inline
            .text
            .contains("wasmfn = { runtime_type = \"io.containerd.wasmfn.v1\""),
        "{}",
        inline.text
    );
}

#[test]
fn a_missing_or_empty_file_becomes_a_file_of_the_chosen_schema() {
    for (version, plugin) in [
        (SchemaVersion::V2, "io.containerd.grpc.v1.cri"),
        (SchemaVersion::V3, "io.containerd.cri.v1.runtime"),
    ] {
        let edit = add_handler("", &ours(), version, ExistingHandler::Refuse).expect("edit");
        assert!(edit.changed);
        assert!(
            edit.text
                .starts_with(&format!("version = {}\n", version.number())),
            "{}",
            edit.text
        );
        assert_eq!(
            lookup(&edit.text, &handler_path(plugin, "runtime_type")).as_deref(),
            Some(RUNTIME_TYPE)
        );
        let second =
            add_handler(&edit.text, &ours(), version, ExistingHandler::Refuse).expect("second");
        assert!(!second.changed);
    }
}

#[test]
fn a_file_of_only_comments_keeps_them_above_the_new_settings() {
    let text = "# containerd config, see containerd-config.toml(5)\n# (defaults apply)\n";
    let edit = add(text).expect("edit");
    assert!(
        edit.text.starts_with(&format!("{text}version = 2\n")),
        "{}",
        edit.text
    );
}

#[test]
fn the_handler_without_a_runtime_path_is_completed_and_its_other_settings_kept() {
    let text = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmfn]
  # pinned by the platform team
  runtime_type = "io.containerd.wasmfn.v1"
  pod_annotations = ["wasmfn.dev/*"]
"#;
    let edit = add(text).expect("edit");
    assert!(edit.changed);
    assert!(edit
        .text
        .contains("  pod_annotations = [\"wasmfn.dev/*\"]\n"));
    assert!(edit.text.contains("  # pinned by the platform team\n"));
    assert_eq!(
        lookup(
            &edit.text,
            &handler_path("io.containerd.grpc.v1.cri", "runtime_path")
        )
        .as_deref(),
        Some(SHIM)
    );
    // Without a runtime path to add, the same file is already complete.
    let without_path = add_handler(
        text,
        &Handler::wasmfn(None),
        SchemaVersion::V2,
        ExistingHandler::Refuse,
    )
    .expect("edit");
    assert!(!without_path.changed);
    assert_eq!(without_path.text, text);
}

const FOREIGN_SAME_NAME: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmfn]
runtime_type = "io.containerd.wasmedge.v1"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmfn.options]
SystemdCgroup = false
"#;

#[test]
fn a_same_named_handler_of_another_runtime_is_refused_unless_taken_over() {
    match add(FOREIGN_SAME_NAME) {
        Err(Error::HandlerTaken {
            name,
            existing,
            wanted,
        }) => {
            assert_eq!(name, "wasmfn");
            assert_eq!(existing, "io.containerd.wasmedge.v1");
            assert_eq!(wanted, RUNTIME_TYPE);
        }
        other => panic!("expected HandlerTaken, got {other:?}"),
    }
    let taken = add_handler(
        FOREIGN_SAME_NAME,
        &ours(),
        SchemaVersion::V2,
        ExistingHandler::TakeOver,
    )
    .expect("take over");
    assert!(taken.changed);
    assert_eq!(
        lookup(
            &taken.text,
            &handler_path("io.containerd.grpc.v1.cri", "runtime_type")
        )
        .as_deref(),
        Some(RUNTIME_TYPE)
    );
    assert!(taken.text.contains("SystemdCgroup = false"), "options kept");
    // Uninstalling never removes someone else's handler.
    assert!(matches!(
        remove_handler(FOREIGN_SAME_NAME, &ours()),
        Err(Error::HandlerTaken { .. })
    ));
}

#[test]
fn removal_from_files_without_the_handler_changes_nothing() {
    for text in ["", "# nothing\n", V1, V2, V3, NO_RUNTIMES, INLINE] {
        let edit = remove_handler(text, &ours()).expect("remove");
        assert!(!edit.changed);
        assert_eq!(edit.text, text);
    }
}

#[test]
fn malformed_files_are_clear_errors() {
    let cases: &[(&str, &str)] = &[
        ("version = 2\n[plugins\nfoo = 1\n", "not valid TOML"),
        ("version = 2\nroot = \"/var/lib/containerd\n", "line 2"),
        ("version = 2\nversion = 2\n", "not valid TOML"),
        ("version = 4\n", "`version = 4`"),
        ("version = \"2\"\n", "`version = \"2\"`"),
        ("version = 2\nplugins = \"cri\"\n", "`plugins` is string"),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = []\n",
            "`plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes` is array",
        ),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\nwasmfn = \"x\"\n",
            "runtimes.wasmfn` is string",
        ),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmfn]\nruntime_type = 5\n",
            "runtime_type` is integer, where containerd expects a string",
        ),
        (
            "version = 2\ndisabled_plugins = [\"cri\"]\n",
            "disables containerd's CRI plugin",
        ),
    ];
    for (text, message) in cases {
        let error = add(text).expect_err(text).to_string();
        assert!(error.contains(message), "{text:?}: {error}");
    }
}

/// KWasm's and SpinKube's handler for their own WasmEdge shim.
const KWASM: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmedge]
runtime_type = "io.containerd.wasmedge.v1"
"#;

#[test]
fn a_kwasm_wasmedge_handler_is_left_alone_and_ours_is_added_beside_it() {
    let edit = add(KWASM).expect("edit");
    assert!(edit.changed);
    assert!(edit.text.starts_with(KWASM), "{}", edit.text);
    assert_eq!(
        lookup(
            &edit.text,
            &handler_path("io.containerd.grpc.v1.cri", "runtime_type")
        )
        .as_deref(),
        Some(RUNTIME_TYPE)
    );
    let (retired, not_foreign) =
        remove_retired_handlers(&edit.text, HANDLER_NAME, RETIRED_HANDLER_NAMES).expect("edit");
    assert!(!retired.changed, "KWasm's handler is not ours to remove");
    assert_eq!(retired.text, edit.text);
    assert!(not_foreign.is_empty(), "{not_foreign:?}");
}

#[test]
fn an_upgraded_node_loses_the_handler_an_earlier_version_registered_under_wasmedge() {
    let earlier = add_handler(
        V2,
        &Handler {
            name: "wasmedge".into(),
            ..ours()
        },
        SchemaVersion::V2,
        ExistingHandler::Refuse,
    )
    .expect("earlier install");
    let upgraded = add(&earlier.text).expect("install");
    let (retired, not_foreign) =
        remove_retired_handlers(&upgraded.text, HANDLER_NAME, RETIRED_HANDLER_NAMES).expect("edit");
    assert!(retired.changed);
    assert_eq!(not_foreign, ["wasmedge"]);
    assert_eq!(retired.text, add(V2).expect("fresh install").text);
}

#[test]
fn retiring_changes_nothing_without_an_old_handler_and_never_removes_the_current_name() {
    let installed = add(V2).expect("install").text;
    let (edit, not_foreign) =
        remove_retired_handlers(&installed, HANDLER_NAME, RETIRED_HANDLER_NAMES).expect("edit");
    assert!(!edit.changed);
    assert_eq!(edit.text, installed);
    assert_eq!(not_foreign, ["wasmedge"], "absent, so its label is stale");
    let (edit, not_foreign) =
        remove_retired_handlers(&installed, HANDLER_NAME, &[HANDLER_NAME]).expect("edit");
    assert!(!edit.changed && not_foreign.is_empty());
}
