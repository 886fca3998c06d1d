//! Registry credentials: a docker config JSON, the `.dockerconfigjson` key of a
//! `kubernetes.io/dockerconfigjson` Secret the chart mounts as a file. The operator uses them
//! for everything it asks a registry itself (module pushes and pulls, builder digest lookups);
//! pods get the same Secret by name as `imagePullSecrets`, so the kubelet pulls with them too.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use serde::Deserialize;

/// A registry client speaking HTTPS, or plain HTTP when `insecure` (loopback test registries).
pub fn client(insecure: bool) -> Client {
    Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    })
}

/// The parts of a docker config JSON that name credentials.
#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, Entry>,
}

#[derive(Debug, Default, Deserialize)]
struct Entry {
    /// base64 of `user:password`.
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The registry host an `auths` key names: keys may carry a scheme and a path, as
/// `https://index.docker.io/v1/` does.
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// The user and password `config` (a docker config JSON) holds for `registry` (host[:port]),
/// if any. Pure.
pub fn credentials_for(config: &str, registry: &str) -> Result<Option<(String, String)>, String> {
    let config: DockerConfig = serde_json::from_str(config)
        .map_err(|error| format!("not a docker config JSON: {error}"))?;
    let Some((_, entry)) = config
        .auths
        .iter()
        .find(|(key, _)| key_host(key) == registry)
    else {
        return Ok(None);
    };
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some((user.clone(), password.clone())));
    }
    let encoded = entry
        .auth
        .as_deref()
        .ok_or_else(|| format!("the entry for {registry} has neither auth nor a password"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|error| format!("the auth of {registry} is not base64: {error}"))?;
    let text =
        String::from_utf8(decoded).map_err(|_| format!("the auth of {registry} is not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| format!("the auth of {registry} is not user:password"))?;
    Ok(Some((user.to_owned(), password.to_owned())))
}

/// Where the operator's registry credentials are, if it has any.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    file: Option<PathBuf>,
}

impl Credentials {
    /// Credentials read from `file` (none: every registry is asked anonymously).
    pub fn new(file: Option<&Path>) -> Self {
        Credentials {
            file: file.map(Path::to_path_buf),
        }
    }

    /// How to authenticate to `registry` (host[:port]): basic auth when the file names it,
    /// else anonymous. The file is read at each call, so a rotated Secret applies to the next
    /// client that asks.
    pub fn for_registry(&self, registry: &str) -> Result<RegistryAuth, String> {
        let Some(file) = &self.file else {
            return Ok(RegistryAuth::Anonymous);
        };
        let text = std::fs::read_to_string(file)
            .map_err(|error| format!("reading {}: {error}", file.display()))?;
        Ok(
            match credentials_for(&text, registry)
                .map_err(|error| format!("{}: {error}", file.display()))?
            {
                Some((user, password)) => RegistryAuth::Basic(user, password),
                None => RegistryAuth::Anonymous,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn the_auth_field_is_decoded_for_the_registry_it_is_keyed_by() {
        let config = format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}, "other.example": {{"auth": "{}"}}}}}}"#,
            encoded("wasmfn:s3cret:with-colon"),
            encoded("someone:else")
        );
        assert_eq!(
            credentials_for(&config, "127.0.0.1:5000"),
            Ok(Some(("wasmfn".into(), "s3cret:with-colon".into())))
        );
        assert_eq!(credentials_for(&config, "127.0.0.1:5001"), Ok(None));
    }

    #[test]
    fn keys_with_a_scheme_or_a_path_name_their_host() {
        let config = format!(
            r#"{{"auths": {{"https://registry.example:443/v1/": {{"auth": "{}"}}}}}}"#,
            encoded("u:p")
        );
        assert_eq!(
            credentials_for(&config, "registry.example:443"),
            Ok(Some(("u".into(), "p".into())))
        );
    }

    #[test]
    fn a_username_and_password_win_over_nothing_else() {
        let config = r#"{"auths": {"r.example": {"username": "u", "password": "p"}}}"#;
        assert_eq!(
            credentials_for(config, "r.example"),
            Ok(Some(("u".into(), "p".into())))
        );
    }

    #[test]
    fn broken_entries_are_reported_with_the_registry() {
        for entry in [
            r#"{}"#.to_owned(),
            r#"{"auth": "%%%"}"#.to_owned(),
            format!(r#"{{"auth": "{}"}}"#, encoded("no-colon")),
        ] {
            let config = format!(r#"{{"auths": {{"r.example": {entry}}}}}"#);
            let error = credentials_for(&config, "r.example").expect_err(&entry);
            assert!(error.contains("r.example"), "{error}");
        }
        assert!(credentials_for("not json", "r.example").is_err());
    }

    #[test]
    fn without_a_file_every_registry_is_anonymous_and_a_missing_file_is_an_error() {
        assert!(matches!(
            Credentials::new(None).for_registry("r.example"),
            Ok(RegistryAuth::Anonymous)
        ));
        let missing = Credentials::new(Some(Path::new("/nonexistent/wasmfn/auth.json")));
        let error = missing.for_registry("r.example").expect_err("missing file");
        assert!(error.contains("/nonexistent/wasmfn/auth.json"), "{error}");
    }
}
