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
    let output = Command::new("curl")
        .args(["-sS", "-f"])
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
}

impl Repository {
    /// `name` (e.g. `wasmfn/modules`) on the registry at `127.0.0.1:port`.
    pub fn new(port: u16, name: &str) -> Self {
        Repository {
            port,
            name: name.to_owned(),
        }
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

    /// Uploads `bytes` as a blob; returns its digest and size.
    pub fn upload(&self, bytes: &[u8]) -> (String, usize) {
        let digest = sha256(bytes);
        let headers = curl(&[
            "-X",
            "POST",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{}/blobs/uploads/", self.base()),
        ]);
        let location = self.absolute(header(&headers, "location").expect("an upload location"));
        let separator = if location.contains('?') { '&' } else { '?' };
        let file = tempfile::NamedTempFile::new().expect("blob file");
        std::fs::write(file.path(), bytes).expect("write the blob");
        curl(&[
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
        let headers = curl(&[
            "-X",
            "POST",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{}/blobs/uploads/?mount={digest}&from={from}", self.base()),
        ]);
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
        let headers = curl(&[
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
        curl(&[
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
        curl(&[
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
        let source = Repository::new(self.port, from);
        let (manifest, media_type) = source.manifest(tag);
        let parsed: Value = serde_json::from_slice(&manifest).expect("manifest JSON");
        for blob in blobs_of(&parsed) {
            self.mount(&blob, from);
        }
        self.put_manifest(tag, &manifest, &media_type)
    }
}

/// The config and layer digests a single-image manifest names.
pub fn blobs_of(manifest: &Value) -> Vec<String> {
    std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
        .filter_map(|descriptor| descriptor["digest"].as_str().map(str::to_owned))
        .collect()
}
