//! The installer command against a scratch host root: the real shim and the libraries `ldd`
//! finds for it, a containerd config edited on disk, and a real containerd (Debian's, with its
//! own root, state and socket under the scratch host's `/run`) whose CRI the installer asks
//! whether the handler is loaded. The installer's restart command only leaves a request; the test
//! restarts containerd when it sees one, as systemd would on a node. The
//! shim's libraries that the installer itself does not need are hidden from the default library
//! path while the installer and the installed shim run, so the shim can only find them in its
//! private directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const INSTALLER: &str = env!("CARGO_BIN_EXE_wasmfn-node-installer");
const INSTALL_DIR: &str = "/opt/wasmfn";
const CONFIG: &str = "/etc/containerd/config.toml";
/// containerd's socket, as a host path.
const SOCKET: &str = "/run/containerd/containerd.sock";

/// The shim `cargo build` puts next to this binary (`make test` builds every binary first), or
/// the one named by `WASMFN_SHIM_BINARY`.
fn shim() -> PathBuf {
    let path = std::env::var_os("WASMFN_SHIM_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(INSTALLER).with_file_name("containerd-shim-wasmfn-v1"));
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p containerd-shim-wasmfn`",
        path.display()
    );
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn success(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Names of the libraries `ldd` resolves for `binary`.
fn libraries(binary: &Path) -> Vec<String> {
    let out = success(
        Command::new("ldd").arg(binary).output().expect("ldd"),
        "ldd",
    );
    out.lines()
        .filter_map(|l| {
            l.split_once(" => ")
                .map(|(name, _)| name.trim().to_string())
        })
        .collect()
}

/// Runs `program args` in a private mount namespace where each file of `hidden` reads as empty,
/// as on a host without those libraries.
fn without_system_copies(hidden: &[PathBuf], program: &Path, args: &[&str]) -> Output {
    hiding(hidden, program, args)
        .output()
        .expect("run under unshare")
}

fn hiding(hidden: &[PathBuf], program: &Path, args: &[&str]) -> Command {
    let script = "for f in $HIDE; do mount --bind /dev/null \"$f\" || exit 97; done; exec \"$@\"";
    let hide: Vec<String> = hidden.iter().map(|p| p.display().to_string()).collect();
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
            "sh",
        ])
        .arg(program)
        .args(args)
        .env("HIDE", hide.join(" "));
    command
}

/// A scratch node: a host root with a containerd config of schema 2, and a payload.
struct Scratch {
    dir: tempfile::TempDir,
    original_config: String,
    hidden: Vec<PathBuf>,
}

impl Scratch {
    fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }
    fn payload(&self) -> PathBuf {
        self.dir.path().join("payload")
    }
    fn config(&self) -> PathBuf {
        self.host().join(CONFIG.trim_start_matches('/'))
    }
    fn restarted(&self) -> PathBuf {
        self.dir.path().join("restarted")
    }
    fn socket(&self) -> PathBuf {
        self.host().join(SOCKET.trim_start_matches('/'))
    }

    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("wasmfn-installer-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().display();
        let original_config = format!(
            r#"# Node config of a test node; the installer must keep this comment.
version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"

[grpc]
  address = "{d}/host/run/containerd/containerd.sock"

[ttrpc]
  address = "{d}/host/run/containerd/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{d}/cni"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"   # the default runtime
"#
        );
        let scratch = Scratch {
            dir,
            original_config,
            hidden: Vec::new(),
        };
        std::fs::create_dir_all(scratch.config().parent().expect("parent")).expect("mkdir");
        std::fs::create_dir_all(scratch.dir.path().join("cni")).expect("mkdir");
        std::fs::write(scratch.config(), &scratch.original_config).expect("config");
        scratch
    }

    /// Stages the payload with the installer's own `stage-payload`, and picks the system copies
    /// of its libraries to hide (those the installer binary itself does not load).
    fn stage(&mut self) -> Vec<String> {
        let shim = shim();
        let payload = self.payload();
        success(
            Command::new(INSTALLER)
                .args(["stage-payload", "--shim"])
                .arg(&shim)
                .arg("--out")
                .arg(&payload)
                .output()
                .expect("stage"),
            "stage-payload",
        );
        let mut staged: Vec<String> = std::fs::read_dir(payload.join("lib"))
            .expect("payload lib")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        staged.sort();
        let own = libraries(Path::new(INSTALLER));
        let ldd_shim = success(Command::new("ldd").arg(&shim).output().expect("ldd"), "ldd");
        self.hidden = ldd_shim
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.split_once(" => ")?;
                let path = rest.split_whitespace().next()?;
                (staged.contains(&name.trim().to_string())
                    && !own.contains(&name.trim().to_string()))
                .then(|| PathBuf::from(path))
            })
            .collect();
        staged
    }

    fn installer(&self, command: &str, extra: &[&str]) -> Output {
        let restart = format!("touch {}", self.restarted().display());
        self.installer_restarting_with(command, &restart, extra)
    }

    fn installer_restarting_with(&self, command: &str, restart: &str, extra: &[&str]) -> Output {
        let (host, payload) = (self.host(), self.payload());
        let args = Self::installer_args(&host, &payload, command, restart, extra);
        without_system_copies(&self.hidden, Path::new(INSTALLER), &args)
    }

    /// Runs the installer while acting as the node's service manager: each restart it requests
    /// (the request file appearing) restarts `containerd`. Returns the output and the restarts.
    fn installer_serving_restarts(
        &self,
        command: &str,
        containerd: &mut Option<Containerd>,
        extra: &[&str],
    ) -> (Output, usize) {
        let (host, payload) = (self.host(), self.payload());
        let restart = format!("touch {}", self.restarted().display());
        let args = Self::installer_args(&host, &payload, command, &restart, extra);
        let mut child = hiding(&self.hidden, Path::new(INSTALLER), &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the installer");
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut restarts = 0;
        while child.try_wait().expect("installer status").is_none() {
            assert!(Instant::now() < deadline, "the installer did not finish");
            if self.restarted().exists() {
                std::fs::remove_file(self.restarted()).expect("take the request");
                drop(containerd.take());
                *containerd = Some(Containerd::start(self));
                restarts += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (
            child.wait_with_output().expect("installer output"),
            restarts,
        )
    }

    fn installer_args<'a>(
        host: &'a Path,
        payload: &'a Path,
        command: &'a str,
        restart: &'a str,
        extra: &[&'a str],
    ) -> Vec<&'a str> {
        let mut args = vec![
            command,
            "--host-root",
            host.to_str().expect("utf-8"),
            "--install-dir",
            INSTALL_DIR,
            "--payload",
            payload.to_str().expect("utf-8"),
            "--containerd-config",
            CONFIG,
            "--restart-command",
            restart,
            "--cri-socket",
            SOCKET,
            "--verify",
            "direct",
            "--no-label",
        ];
        if !extra.contains(&"--cri-wait-seconds") {
            args.extend(["--cri-wait-seconds", "20"]);
        }
        args.extend_from_slice(extra);
        args
    }

    fn installed_shim(&self) -> PathBuf {
        self.host()
            .join(INSTALL_DIR.trim_start_matches('/'))
            .join("bin/containerd-shim-wasmfn-v1")
    }
}

/// containerd started on the scratch config; killed (by its pid) when dropped.
struct Containerd {
    child: Child,
    log: PathBuf,
}

impl Containerd {
    fn start(scratch: &Scratch) -> Containerd {
        let log = scratch.dir.path().join("containerd.log");
        // A killed containerd leaves its socket behind; wait for the new one.
        let _ = std::fs::remove_file(scratch.socket());
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(scratch.config())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start containerd");
        let mut containerd = Containerd { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !scratch.socket().exists() {
            if let Ok(Some(status)) = containerd.child.try_wait() {
                panic!("containerd exited ({status}):\n{}", containerd.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                containerd.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The line in which containerd logs the CRI configuration it parsed at start.
    fn cri_config_line(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log_text();
            if let Some(line) = log
                .lines()
                .find(|l| l.contains("Start cri plugin with config"))
            {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no CRI config in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn install_registers_the_handler_with_a_real_containerd_and_uninstall_undoes_it() {
    let mut scratch = Scratch::new();
    let staged = scratch.stage();
    for library in ["libwasmedge.so.0", "libLLVM.so.19.1", "libstdc++.so.6"] {
        assert!(
            staged.iter().any(|s| s == library),
            "{library} staged: {staged:?}"
        );
    }
    assert!(
        !staged
            .iter()
            .any(|s| s == "libc.so.6" || s.starts_with("ld-linux")),
        "glibc stays the host's: {staged:?}"
    );
    assert!(
        scratch
            .hidden
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "libwasmedge.so.0")),
        "the system libwasmedge is hidden while the installer runs: {:?}",
        scratch.hidden
    );

    // First run: files, config, a restart, and the CRI of the restarted containerd shows the
    // handler before the run ends.
    let mut containerd = Some(Containerd::start(&scratch));
    let (output, restarts) = scratch.installer_serving_restarts("install", &mut containerd, &[]);
    let first = success(output, "install");
    assert!(first.contains("handler wasmfn registered"), "{first}");
    assert!(
        first.contains("shim /opt/wasmfn/bin/containerd-shim-wasmfn-v1 starts"),
        "{first}"
    );
    assert_eq!(
        restarts, 1,
        "containerd restarted after the change:\n{first}"
    );
    assert!(
        first.contains("containerd has loaded handler wasmfn (CRI status)"),
        "{first}"
    );
    let config = std::fs::read_to_string(scratch.config()).expect("config");
    assert!(
        config.starts_with(&scratch.original_config),
        "the rest of the file, comments included, is kept:\n{config}"
    );
    assert!(config.contains(
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmfn]\n\
         runtime_type = \"io.containerd.wasmfn.v1\"\n\
         runtime_path = \"/opt/wasmfn/bin/containerd-shim-wasmfn-v1\"\n"
    ));
    let backup = scratch.config().with_file_name("config.toml.wasmfn-backup");
    assert_eq!(
        std::fs::read_to_string(&backup).expect("backup"),
        scratch.original_config
    );
    // What the installer read through the CRI, containerd's own log says too.
    let loaded = containerd.as_ref().expect("running").cri_config_line();
    assert!(
        loaded.contains(
            "wasmfn:{Type:io.containerd.wasmfn.v1 Path:/opt/wasmfn/bin/containerd-shim-wasmfn-v1"
        ),
        "containerd loaded the handler: {loaded}"
    );
    assert!(
        loaded.contains("runc:{Type:io.containerd.runc.v2"),
        "{loaded}"
    );

    // The installed shim starts with its libraries found only in its private directory.
    let installed = scratch.installed_shim();
    let version = success(
        without_system_copies(&scratch.hidden, &installed, &["-v"]),
        "installed shim -v",
    );
    assert!(version.contains("Version:"), "{version}");
    let private_lib = scratch.host().join("opt/wasmfn/lib");
    let ldd = success(
        Command::new("ldd").arg(&installed).output().expect("ldd"),
        "ldd installed shim",
    );
    for library in &staged {
        let line = ldd
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{library} => ")))
            .unwrap_or_else(|| panic!("{library} in ldd output:\n{ldd}"));
        // The loader names it through the RPATH: `<dir>/bin/../lib/<library>`.
        let found = line
            .split(" => ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|path| std::fs::canonicalize(path).expect("resolved library exists"));
        assert_eq!(
            found,
            Some(
                private_lib
                    .join(library)
                    .canonicalize()
                    .expect("private copy")
            ),
            "{library} is loaded from the private directory: {line}"
        );
    }

    // Second run: nothing to do, no restart; the CRI still shows the handler.
    let (output, restarts) = scratch.installer_serving_restarts("install", &mut containerd, &[]);
    let second = success(output, "second install");
    assert!(second.contains("already registered, unchanged"), "{second}");
    assert!(
        second.contains("containerd has loaded handler wasmfn (CRI status); no restart"),
        "{second}"
    );
    assert!(second.contains("nothing changed"), "{second}");
    assert_eq!(restarts, 0, "no restart without a change");
    assert_eq!(
        std::fs::read_to_string(scratch.config()).expect("config"),
        config
    );

    // A containerd running an older config (started before the file was edited back in): the
    // file is unchanged, yet the installer sees through the CRI that the handler is missing and
    // restarts it.
    std::fs::write(scratch.config(), &scratch.original_config).expect("old config");
    drop(containerd.take());
    containerd = Some(Containerd::start(&scratch));
    std::fs::write(scratch.config(), &config).expect("edited config again");
    let (output, restarts) = scratch.installer_serving_restarts("install", &mut containerd, &[]);
    let stale = success(output, "install against a stale containerd");
    assert!(
        stale.contains(
            "containerd runs without handler wasmfn (the CRI status lists no such handler) \
             although its config has it; restarting it"
        ),
        "{stale}"
    );
    assert_eq!(restarts, 1, "{stale}");
    assert!(
        stale.contains("containerd has loaded handler wasmfn (CRI status)"),
        "{stale}"
    );
    drop(containerd.take());

    // Uninstall: the original file, byte for byte, and no files left.
    let removed = success(scratch.installer("uninstall", &[]), "uninstall");
    assert!(removed.contains("handler wasmfn removed"), "{removed}");
    assert!(
        scratch.restarted().exists(),
        "restart after removing the handler"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.config()).expect("config"),
        scratch.original_config
    );
    assert!(!scratch.host().join("opt/wasmfn").exists(), "files removed");
}

#[test]
fn a_failed_restart_fails_the_run_and_the_next_run_restarts_before_the_node_counts_as_set_up() {
    let mut scratch = Scratch::new();
    scratch.stage();
    let pending = scratch
        .host()
        .join(INSTALL_DIR.trim_start_matches('/'))
        .join(".containerd-restart-pending");
    let mut containerd = Some(Containerd::start(&scratch));

    let failed = scratch.installer_restarting_with("install", "false", &[]);
    assert!(!failed.status.success(), "{}", text(&failed.stdout));
    assert!(
        text(&failed.stderr).contains("containerd was not restarted after 3 tries"),
        "{}",
        text(&failed.stderr)
    );
    assert_eq!(
        text(&failed.stdout)
            .matches("restarting containerd: false")
            .count(),
        3,
        "{}",
        text(&failed.stdout)
    );
    assert!(pending.exists(), "the pending restart is remembered");

    // A restart command that exits 0 without restarting anything: the CRI never shows the
    // handler, so the run fails and the restart stays pending.
    let silent = scratch.installer_restarting_with("install", "true", &["--cri-wait-seconds", "3"]);
    assert!(!silent.status.success(), "{}", text(&silent.stdout));
    assert!(
        text(&silent.stderr).contains(
            "containerd has not loaded handler wasmfn within 3s of the restart (the CRI status \
             lists no such handler); the node is not labelled"
        ),
        "{}",
        text(&silent.stderr)
    );
    assert!(pending.exists(), "the pending restart is still remembered");

    // The config is already edited, yet the next run restarts containerd.
    let (output, restarts) = scratch.installer_serving_restarts("install", &mut containerd, &[]);
    let again = success(output, "install again");
    assert!(again.contains("an earlier restart failed"), "{again}");
    assert_eq!(restarts, 1, "{again}");
    assert!(!pending.exists());

    let (output, restarts) = scratch.installer_serving_restarts("install", &mut containerd, &[]);
    let third = success(output, "install a third time");
    assert!(third.contains("already registered, unchanged"), "{third}");
    assert_eq!(restarts, 0, "{third}");
}

#[test]
fn a_malformed_config_fails_clearly_and_stays_untouched() {
    let mut scratch = Scratch::new();
    scratch.stage();
    let broken = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\nsandbox_image = 1\n";
    std::fs::write(scratch.config(), broken).expect("write");
    let output = scratch.installer("install", &[]);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("containerd config /etc/containerd/config.toml")
            && stderr.contains("not valid TOML")
            && stderr.contains("line 2"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.config()).expect("config"),
        broken
    );
    assert!(!scratch
        .config()
        .with_file_name("config.toml.wasmfn-backup")
        .exists());
    assert!(!scratch.restarted().exists());
}

#[test]
fn a_shim_that_cannot_start_is_not_registered() {
    let mut scratch = Scratch::new();
    scratch.stage();
    // A payload missing libwasmedge: with the system copy hidden, the shim cannot load.
    std::fs::remove_file(scratch.payload().join("lib/libwasmedge.so.0")).expect("remove");
    let output = scratch.installer("install", &[]);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the installed shim does not start") && stderr.contains("libwasmedge.so.0"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.config()).expect("config"),
        scratch.original_config,
        "containerd is not told about a shim that does not start"
    );
}
