//! The cluster's registry through its HTTP API (curl on loopback): blobs, manifests and tags,
//! for suites that place images the way a push would.

use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Every manifest type the registry may hold for our images, as `Accept` asks for them.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Runs curl (failing on HTTP errors) and returns its output.
pub fn curl(args: &[&str]) -> String {
    curl_as(None, args)
}

/// [`curl`] with basic credentials (`user:password`) when given.
fn curl_as(credentials: Option<&str>, args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS", "-f"])
        .args(credentials.map(|c| ["-u", c]).into_iter().flatten())
        .args(args)
        .output()
        .expect("curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// One repository of the registry on `127.0.0.1:port`.
#[derive(Debug, Clone)]
pub struct Repository {
    port: u16,
    name: String,
    credentials: Option<String>,
}

impl Repository {
    /// `name` (e.g. `wasmfn/modules`) on the registry at `127.0.0.1:port`.
    pub fn new(port: u16, name: &str) -> Self {
        Repository {
            port,
            name: name.to_owned(),
            credentials: None,
        }
    }

    /// The same repository, asked with basic credentials (`user:password`).
    pub fn with_credentials(mut self, credentials: &str) -> Self {
        self.credentials = Some(credentials.to_owned());
        self
    }

    fn curl(&self, args: &[&str]) -> String {
        curl_as(self.credentials.as_deref(), args)
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v2/{}", self.port, self.name)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with('/') {
            format!("http://127.0.0.1:{}{location}", self.port)
        } else {
            location.to_owned()
        }
    }

    /// Starts a blob upload (`query` as the registry API takes it); returns the headers.
    fn start_upload(&self, query: &str) -> String {
        self.curl(&[
            "-X",
            "POST",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{}/blobs/uploads/{query}", self.base()),
        ])
    }

    /// Uploads `bytes` as a blob; returns its digest and size.
    pub fn upload(&self, bytes: &[u8]) -> (String, usize) {
        let digest = sha256(bytes);
        let headers = self.start_upload("");
        let location = self.absolute(header(&headers, "location").expect("an upload location"));
        let separator = if location.contains('?') { '&' } else { '?' };
        let file = tempfile::NamedTempFile::new().expect("blob file");
        std::fs::write(file.path(), bytes).expect("write the blob");
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "-T",
            file.path().to_str().expect("utf-8 path"),
            &format!("{location}{separator}digest={digest}"),
        ]);
        (digest, bytes.len())
    }

    /// Makes the blob `digest` of repository `from` (same registry) one of this repository's,
    /// without copying it.
    pub fn mount(&self, digest: &str, from: &str) {
        let headers = self.start_upload(&format!("?mount={digest}&from={from}"));
        let status = headers.lines().next().unwrap_or_default();
        assert!(
            status.contains(" 201"),
            "mount {digest} from {from} into {}: {status}",
            self.name
        );
    }

    /// The manifest `reference` (tag or digest) points to: its bytes and media type.
    pub fn manifest(&self, reference: &str) -> (Vec<u8>, String) {
        let body = tempfile::NamedTempFile::new().expect("manifest file");
        let headers = self.curl(&[
            "-H",
            &format!("Accept: {MANIFEST_TYPES}"),
            "-D",
            "-",
            "-o",
            body.path().to_str().expect("utf-8 path"),
            &format!("{}/manifests/{reference}", self.base()),
        ]);
        let media_type = header(&headers, "content-type")
            .expect("a manifest content type")
            .to_owned();
        (
            std::fs::read(body.path()).expect("read manifest"),
            media_type,
        )
    }

    /// A blob's bytes.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let body = tempfile::NamedTempFile::new().expect("blob file");
        self.curl(&[
            "-L",
            "-o",
            body.path().to_str().expect("utf-8 path"),
            &format!("{}/blobs/{digest}", self.base()),
        ]);
        std::fs::read(body.path()).expect("read blob")
    }

    /// Puts `manifest` (of `media_type`) under `reference`; returns its digest.
    pub fn put_manifest(&self, reference: &str, manifest: &[u8], media_type: &str) -> String {
        let file = tempfile::NamedTempFile::new().expect("manifest file");
        std::fs::write(file.path(), manifest).expect("write the manifest");
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media_type}"),
            "--data-binary",
            &format!("@{}", file.path().to_str().expect("utf-8 path")),
            &format!("{}/manifests/{reference}", self.base()),
        ]);
        sha256(manifest)
    }

    /// Copies the image `tag` of repository `from` here under the same tag (blobs mounted, the
    /// manifest byte for byte, so the digest is the same); returns the manifest's digest.
    pub fn copy_image(&self, from: &str, tag: &str) -> String {
        let source = Repository {
            name: from.to_owned(),
            ..self.clone()
        };
        let (manifest, media_type) = source.manifest(tag);
        let parsed: Value = serde_json::from_slice(&manifest).expect("manifest JSON");
        for blob in blobs_of(&parsed) {
            self.mount(&blob, from);
        }
        self.put_manifest(tag, &manifest, &media_type)
    }
}

impl Repository {
    /// Pushes `module` under `tag` as an OCI Wasm artifact, the way the operator's OCI store
    /// does (config `architecture: wasm`, one `application/wasm` layer); returns the manifest's
    /// digest.
    pub fn push_wasm_artifact(&self, tag: &str, module: &[u8]) -> String {
        // The module's digest in the config, as the operator's store writes it: a node knows an
        // image by its config digest, and two artifacts sharing one would be one image there.
        let config = serde_json::json!({"architecture": "wasm", "os": "wasip1",
            "config": {"Labels": {"dev.wasmfn.module.digest": sha256(module)}},
            "rootfs": {"type": "layers", "diff_ids": []}})
        .to_string();
        let (config_digest, config_size) = self.upload(config.as_bytes());
        let (layer_digest, layer_size) = self.upload(module);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/wasm", "digest": layer_digest, "size": layer_size}],
        })
        .to_string();
        self.put_manifest(
            tag,
            manifest.as_bytes(),
            "application/vnd.oci.image.manifest.v1+json",
        )
    }
}

/// The config and layer digests a single-image manifest names.
pub fn blobs_of(manifest: &Value) -> Vec<String> {
    std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
        .filter_map(|descriptor| descriptor["digest"].as_str().map(str::to_owned))
        .collect()
}

/// A registry of a test's own that needs credentials (htpasswd, bcrypt), on a free loopback
/// port with its own storage; stopped (by PID) when dropped.
#[derive(Debug)]
pub struct PrivateRegistry {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `user:password` it accepts.
    pub credentials: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PrivateRegistry {
    /// Starts one accepting `user` with `password`, and waits until it refuses an anonymous
    /// request.
    pub fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().expect("registry dir");
        let hash = bcrypt::hash(password, 6).expect("bcrypt");
        std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).expect("htpasswd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  \
             filesystem:\n    rootdirectory: {root}\nauth:\n  htpasswd:\n    realm: wasmfn-e2e\n    \
             path: {root}/htpasswd\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = PrivateRegistry {
            port,
            credentials: format!("{user}:{password}"),
            child,
            _dir: dir,
        };
        let url = format!("http://127.0.0.1:{port}/v2/");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let code = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .expect("curl");
            if String::from_utf8_lossy(&code.stdout) == "401" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the private registry never answered"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        registry
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A docker config JSON (`.dockerconfigjson`) holding its credentials.
    pub fn docker_config(&self) -> String {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(&self.credentials);
        serde_json::json!({"auths": {self.host(): {"auth": auth}}}).to_string()
    }

    /// Lets every node of `cluster` pull from it over plain HTTP (a containerd hosts entry).
    pub fn reachable_from(&self, cluster: &wasmfn_e2e::cluster::layout::ClusterInfo) {
        let host = self.host();
        for node in &cluster.nodes {
            let dir = node.registry_hosts_dir().join(&host);
            std::fs::create_dir_all(&dir).expect("hosts dir");
            let hosts = format!(
                "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            );
            std::fs::write(dir.join("hosts.toml"), hosts).expect("hosts.toml");
        }
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
