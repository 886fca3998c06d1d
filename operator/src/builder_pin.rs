//! The builder image pinned to a digest. A tag such as `builder:dev` can be moved to a rebuilt
//! image with other toolchains; a cache key that named the tag would then hand out modules the
//! new toolchains never built. So the operator looks the tag up in the registry, keys on the
//! digest it points to, and runs compile Jobs on that exact image (`repository@sha256:…`).
//!
//! A lookup is trusted for `--builder-pin-seconds`; a reference that already names a digest is
//! used as it is and never looked up. When the registry cannot answer, the last digest seen is
//! kept; before any lookup has succeeded, functions that need a compile wait (`BuilderUnresolved`).

use std::time::{Duration, Instant};

use oci_client::Reference;
use tracing::{info, warn};

use crate::config::Config;
use crate::registry_auth::Credentials;

/// How the configured builder image is turned into a digest reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The reference names a digest already: nothing to look up.
    Fixed(String),
    /// Ask `endpoint` (host[:port]) for the digest `tag` of `repository` points to; the pinned
    /// reference keeps the image's own `registry` name, which nodes pull from.
    Lookup {
        /// The registry name in the image reference.
        registry: String,
        /// Where the operator reaches that registry.
        endpoint: String,
        /// Plain HTTP to `endpoint`.
        insecure: bool,
        /// The repository.
        repository: String,
        /// The tag to resolve.
        tag: String,
    },
}

/// Where the registry of a builder image is reached from the operator.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints<'a> {
    /// `--builder-registry`: an explicit endpoint for the builder's registry.
    pub builder_registry: Option<&'a str>,
    /// `--builder-registry-insecure`.
    pub builder_insecure: bool,
    /// The OCI store's pull name, its push endpoint and whether that is plain HTTP: an image
    /// named after the pull name is looked up at the push endpoint, as modules are.
    pub oci: Option<(&'a str, &'a str, bool)>,
}

/// Decides how `image` is pinned (pure).
pub fn plan(image: &str, endpoints: Endpoints<'_>) -> Result<Plan, String> {
    let reference: Reference = image
        .parse()
        .map_err(|error| format!("builder image {image:?} is not an image reference: {error}"))?;
    if reference.digest().is_some() {
        return Ok(Plan::Fixed(image.to_owned()));
    }
    let registry = reference.registry().to_owned();
    let (endpoint, insecure) = match (endpoints.builder_registry, endpoints.oci) {
        (Some(endpoint), _) if !endpoint.is_empty() => {
            (endpoint.to_owned(), endpoints.builder_insecure)
        }
        (_, Some((pull, push, insecure))) if pull == registry && !push.is_empty() => {
            (push.to_owned(), insecure)
        }
        _ => (registry.clone(), endpoints.builder_insecure),
    };
    Ok(Plan::Lookup {
        registry,
        endpoint,
        insecure,
        repository: reference.repository().to_owned(),
        tag: reference.tag().unwrap_or("latest").to_owned(),
    })
}

/// The reference compile Jobs run: the image's registry and repository at `digest`.
pub fn pinned(registry: &str, repository: &str, digest: &str) -> String {
    format!("{registry}/{repository}@{digest}")
}

/// A pin found, and when.
#[derive(Debug, Clone)]
struct Found {
    reference: String,
    at: Instant,
}

/// What the pin remembers between lookups.
#[derive(Debug, Default)]
struct Memory {
    /// The last digest reference a lookup returned.
    found: Option<Found>,
    /// When a lookup last failed (lookups pause for [`RETRY_AFTER_FAILURE`] after one).
    failed: Option<(Instant, String)>,
}

/// After a failed lookup, how long the operator waits before asking the registry again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// The builder image of compile Jobs, pinned to a digest.
pub struct BuilderPin {
    image: String,
    plan: Result<Plan, String>,
    trust: Duration,
    credentials: Credentials,
    memory: tokio::sync::Mutex<Memory>,
}

impl std::fmt::Debug for BuilderPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuilderPin")
            .field("image", &self.image)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl BuilderPin {
    /// The pin of the configured builder image.
    pub fn new(config: &Config) -> Self {
        let endpoints = Endpoints {
            builder_registry: config.builder_registry.as_deref(),
            builder_insecure: config.builder_registry_insecure,
            oci: (!config.oci_registry.is_empty()).then(|| {
                (
                    config.oci_pull_registry(),
                    config.oci_registry.as_str(),
                    config.oci_insecure,
                )
            }),
        };
        let plan = plan(&config.builder_image, endpoints);
        BuilderPin {
            image: config.builder_image.clone(),
            plan,
            trust: Duration::from_secs(config.builder_pin_seconds),
            credentials: Credentials::new(config.registry_auth_file.as_deref()),
            memory: tokio::sync::Mutex::default(),
        }
    }

    /// The builder image by digest, or why it cannot be named yet (a message for the status).
    pub async fn resolve(&self) -> Result<String, String> {
        let (registry, endpoint, insecure, repository, tag) = match &self.plan {
            Err(message) => return Err(message.clone()),
            Ok(Plan::Fixed(reference)) => return Ok(reference.clone()),
            Ok(Plan::Lookup {
                registry,
                endpoint,
                insecure,
                repository,
                tag,
            }) => (registry, endpoint, *insecure, repository, tag),
        };
        // One lookup at a time; the others wait for it and use its answer.
        let mut memory = self.memory.lock().await;
        let now = Instant::now();
        let fresh = memory
            .found
            .as_ref()
            .filter(|found| now.duration_since(found.at) < self.trust);
        if let Some(found) = fresh {
            return Ok(found.reference.clone());
        }
        if let Some((at, message)) = &memory.failed {
            if now.duration_since(*at) < RETRY_AFTER_FAILURE {
                return memory
                    .found
                    .as_ref()
                    .map(|found| found.reference.clone())
                    .ok_or_else(|| message.clone());
            }
        }
        let lookup = Reference::with_tag(endpoint.clone(), repository.clone(), tag.clone());
        // A client per lookup (one a minute at most): the TLS setup is made only when needed.
        let client = crate::registry_auth::client(insecure);
        let answer = match self.credentials.for_registry(endpoint) {
            Ok(auth) => client
                .fetch_manifest_digest(&lookup, &auth)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(format!("credentials: {error}")),
        };
        match answer {
            Ok(digest) => {
                let reference = pinned(registry, repository, &digest);
                if memory.found.as_ref().map(|f| &f.reference) != Some(&reference) {
                    info!(image = %self.image, %reference, "builder image pinned");
                }
                memory.failed = None;
                memory.found = Some(Found {
                    reference: reference.clone(),
                    at: now,
                });
                Ok(reference)
            }
            Err(error) => {
                let message = format!(
                    "cannot pin the builder image {} to a digest: looking up tag {tag} at \
                     {endpoint}: {error}; set --builder-registry (chart: compile.builderRegistry) to \
                     where the operator reaches that registry, or name the image by digest",
                    self.image
                );
                warn!(%message, kept = ?memory.found.as_ref().map(|f| &f.reference), "builder lookup failed");
                memory.failed = Some((now, message.clone()));
                memory
                    .found
                    .as_ref()
                    .map(|found| found.reference.clone())
                    .ok_or(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Endpoints<'static> = Endpoints {
        builder_registry: None,
        builder_insecure: false,
        oci: None,
    };

    fn lookup(plan: Result<Plan, String>) -> (String, String, bool, String, String) {
        match plan.expect("a plan") {
            Plan::Lookup {
                registry,
                endpoint,
                insecure,
                repository,
                tag,
            } => (registry, endpoint, insecure, repository, tag),
            Plan::Fixed(reference) => panic!("fixed {reference}"),
        }
    }

    #[test]
    fn an_image_named_by_digest_is_used_as_it_is() {
        let image = format!("wasmfn.local/builder@sha256:{}", "a".repeat(64));
        assert_eq!(plan(&image, NONE), Ok(Plan::Fixed(image.clone())));
        let both = format!("wasmfn.local/builder:dev@sha256:{}", "b".repeat(64));
        assert_eq!(plan(&both, NONE), Ok(Plan::Fixed(both.clone())));
    }

    #[test]
    fn a_tag_is_looked_up_at_the_registry_the_image_names() {
        let (registry, endpoint, insecure, repository, tag) =
            lookup(plan("registry.example:5000/wasmfn/builder:1.2", NONE));
        assert_eq!(registry, "registry.example:5000");
        assert_eq!(endpoint, "registry.example:5000");
        assert!(!insecure);
        assert_eq!(repository, "wasmfn/builder");
        assert_eq!(tag, "1.2");
    }

    #[test]
    fn an_image_without_a_tag_is_looked_up_as_latest() {
        let (_, _, _, _, tag) = lookup(plan("registry.example/builder", NONE));
        assert_eq!(tag, "latest");
    }

    #[test]
    fn an_image_under_the_oci_stores_pull_name_is_looked_up_where_modules_are_pushed() {
        let endpoints = Endpoints {
            oci: Some(("wasmfn.local", "127.0.0.1:5000", true)),
            ..NONE
        };
        let (registry, endpoint, insecure, _, _) =
            lookup(plan("wasmfn.local/builder:dev", endpoints));
        assert_eq!(
            (registry.as_str(), endpoint.as_str(), insecure),
            ("wasmfn.local", "127.0.0.1:5000", true)
        );
        let (_, elsewhere, plain, _, _) = lookup(plan("other.example/builder:dev", endpoints));
        assert_eq!((elsewhere.as_str(), plain), ("other.example", false));
    }

    #[test]
    fn an_explicit_builder_registry_wins_over_the_oci_store() {
        let endpoints = Endpoints {
            builder_registry: Some("127.0.0.1:6000"),
            builder_insecure: true,
            oci: Some(("wasmfn.local", "127.0.0.1:5000", false)),
        };
        let (registry, endpoint, insecure, _, _) =
            lookup(plan("wasmfn.local/builder:dev", endpoints));
        assert_eq!(
            (registry.as_str(), endpoint.as_str(), insecure),
            ("wasmfn.local", "127.0.0.1:6000", true)
        );
    }

    #[test]
    fn a_malformed_image_is_refused_with_its_name() {
        let error = plan("Not A Reference", NONE).expect_err("not a reference");
        assert!(error.contains("\"Not A Reference\""), "{error}");
    }

    #[test]
    fn the_pinned_reference_keeps_the_name_nodes_pull_from() {
        assert_eq!(
            pinned("wasmfn.local", "builder", "sha256:00"),
            "wasmfn.local/builder@sha256:00"
        );
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_reported_with_the_image_and_where_it_was_asked() {
        // Port 9 on loopback (discard) refuses the connection: nothing leaves the machine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = crate::scenario::default_config();
        config.builder_image = "wasmfn.local/builder:dev".into();
        config.builder_registry = Some("127.0.0.1:9".into());
        config.builder_registry_insecure = true;
        let pin = BuilderPin::new(&config);
        let error = pin.resolve().await.expect_err("nothing listens");
        assert!(error.contains("127.0.0.1:9"), "{error}");
        assert!(error.contains("wasmfn.local/builder:dev"), "{error}");
        // Within the pause after a failure, the same answer comes without a lookup.
        assert_eq!(pin.resolve().await, Err(error));
    }
}
