//! Configuration: flags, each with an environment variable. The defaults are the replaced
//! system's (`WASMEDGE_ENABLED`, `WASMEDGE_TIMEOUT` 30000 ms, `WASMEDGE_MEMORY_LIMIT` 128 MiB,
//! `WASM_CACHE_ENABLED`, `WASM_CACHE_TTL` 3600 s).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use wasmfn_api::ArtifactStore;

use crate::error::{Error, Result};
use crate::label_selector::LabelRequirement;

/// `wasmfn-operator run` settings.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Place executions on WasmEdge nodes when the cluster has them (false: container pods only).
    #[arg(long, env = "WASMEDGE_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub wasmedge_enabled: bool,
    /// Default wall-clock limit of an execution, milliseconds.
    #[arg(long, env = "WASMEDGE_TIMEOUT", default_value_t = 30_000)]
    pub wasmedge_timeout_ms: u64,
    /// Default linear-memory limit of an execution: bytes, or a quantity such as 128Mi.
    #[arg(long, env = "WASMEDGE_MEMORY_LIMIT", default_value = "134217728", value_parser = parse_quantity)]
    pub wasmedge_memory_limit: u64,
    /// Reuse stored artifacts for identical sources (false: every function compiles).
    #[arg(long, env = "WASM_CACHE_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub cache_enabled: bool,
    /// Seconds an artifact no function uses is kept before it is deleted.
    #[arg(long, env = "WASM_CACHE_TTL", default_value_t = 3600)]
    pub cache_ttl_seconds: u64,
    /// The builder image compile Jobs run (`wasmfn compile`). A tag is looked up in the
    /// registry and pinned to the digest it points to: Jobs run that digest and the cache key
    /// names it, so a builder rebuilt under the same tag recompiles.
    #[arg(
        long,
        env = "WASMFN_BUILDER_IMAGE",
        default_value = "wasmfn.local/builder:dev"
    )]
    pub builder_image: String,
    /// Where the operator reaches the builder image's registry to look its tag up, host[:port]
    /// (empty: the OCI store's registry when the image is named after its pull registry, else
    /// the registry the image names).
    #[arg(long, env = "WASMFN_BUILDER_REGISTRY")]
    pub builder_registry: Option<String>,
    /// Plain HTTP to `--builder-registry` (loopback test registries).
    #[arg(long, env = "WASMFN_BUILDER_REGISTRY_INSECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub builder_registry_insecure: bool,
    /// Seconds a looked-up builder digest is trusted before the tag is looked up again.
    #[arg(long, env = "WASMFN_BUILDER_PIN_SECONDS", default_value_t = 60)]
    pub builder_pin_seconds: u64,
    /// Default compile deadline, seconds.
    #[arg(long, env = "WASMFN_COMPILE_TIMEOUT", default_value_t = 600)]
    pub compile_timeout_seconds: u64,
    /// Memory limit of a compile Job's container: bytes or a quantity.
    #[arg(long, env = "WASMFN_COMPILE_MEMORY", default_value = "2Gi", value_parser = parse_quantity)]
    pub compile_memory: u64,
    /// Store used when a function names none: configmap or oci.
    #[arg(long, env = "WASMFN_DEFAULT_STORE", default_value = "configmap", value_parser = parse_store)]
    pub default_store: ArtifactStore,
    /// OCI store: registry host[:port] the operator pushes to (empty: the OCI store is off).
    #[arg(long, env = "WASMFN_OCI_REGISTRY", default_value = "")]
    pub oci_registry: String,
    /// OCI store: the registry name nodes pull from, when it differs from --oci-registry
    /// (a mirror name in containerd's config).
    #[arg(long, env = "WASMFN_OCI_PULL_REGISTRY")]
    pub oci_pull_registry: Option<String>,
    /// OCI store: repository for modules.
    #[arg(long, env = "WASMFN_OCI_REPOSITORY", default_value = "wasmfn/modules")]
    pub oci_repository: String,
    /// OCI store: talk plain HTTP to the registry (loopback test registries).
    #[arg(long, env = "WASMFN_OCI_INSECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub oci_insecure: bool,
    /// Registry credentials: a docker config JSON (the `.dockerconfigjson` of a
    /// `kubernetes.io/dockerconfigjson` Secret, mounted), used for the OCI store's pushes and
    /// pulls and for builder digest lookups. Empty: registries are asked anonymously.
    #[arg(long, env = "WASMFN_REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<std::path::PathBuf>,
    /// Secrets named as `imagePullSecrets` on every pod the operator creates (compile Jobs and
    /// run pods), comma-separated; each must exist in the pod's namespace.
    #[arg(long, env = "WASMFN_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub image_pull_secrets: Vec<String>,
    /// Reconciles run at once, per controller.
    #[arg(long, env = "WASMFN_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "WASMFN_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "WASMFN_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "WASMFN_LEASE_NAME", default_value = "wasmfn-operator")]
    pub lease_name: String,
    /// Seconds a leader's lease lasts without renewal; a standby takes over after it.
    #[arg(long, env = "WASMFN_LEASE_SECONDS", default_value_t = 10)]
    pub lease_seconds: u64,
    /// This replica's identity in the Lease (default: the pod or host name plus a random suffix).
    #[arg(long, env = "WASMFN_IDENTITY")]
    pub identity: Option<String>,
    /// Image of container run pods (the runner: `wasmfn exec` with WasmEdge embedded).
    #[arg(
        long,
        env = "WASMFN_RUNNER_IMAGE",
        default_value = "wasmfn.local/runner:dev"
    )]
    pub runner_image: String,
    /// Image a Wasm pod names when its module comes from the ConfigMap store (an empty root
    /// filesystem; the shim runs the mounted module).
    #[arg(
        long,
        env = "WASMFN_WASM_POD_IMAGE",
        default_value = "wasmfn.local/wasm-pod:dev"
    )]
    pub wasm_pod_image: String,
    /// Node labels marking WasmEdge nodes, `key=value` or `key` (comma-separated; any one
    /// suffices). `<handler>=provisioned` (the runtime-class-manager convention) always counts.
    #[arg(
        long,
        env = "WASMFN_WASMEDGE_NODE_SELECTORS",
        default_value = "wasmfn.dev/wasmedge=true",
        value_delimiter = ',',
        value_parser = parse_label_requirement
    )]
    pub wasmedge_node_selectors: Vec<LabelRequirement>,
    /// The containerd runtime handler of the wasmfn shim; RuntimeClasses with this handler
    /// are the ones Wasm pods use.
    #[arg(long, env = "WASMFN_WASMEDGE_HANDLER", default_value = "wasmfn")]
    pub wasmedge_handler: String,
    /// Keep run pods after their result is recorded (they go with their execution).
    #[arg(long, env = "WASMFN_KEEP_RUN_PODS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub keep_run_pods: bool,
    /// Default cap on the stdout and stderr kept in an execution's status, bytes each.
    #[arg(long, env = "WASMFN_MAX_OUTPUT_BYTES", default_value_t = 4096)]
    pub max_output_bytes: u64,
    /// Memory a run pod gets beyond the guest's linear-memory cap (the runtime itself).
    #[arg(long, env = "WASMFN_RUN_MEMORY_OVERHEAD", default_value = "96Mi", value_parser = parse_quantity)]
    pub run_memory_overhead: u64,
    /// Seconds a run pod may live beyond the execution's timeout before Kubernetes stops it: a
    /// backstop (the runner enforces the timeout itself) that must cover pulling the image on a
    /// cold node, since the pod's deadline counts from its start.
    #[arg(long, env = "WASMFN_RUN_DEADLINE_GRACE", default_value_t = 120)]
    pub run_deadline_grace_seconds: u64,
    /// Seconds a run pod may stay on its node without its container starting (image pull,
    /// sandbox, volumes). Past it the attempt is lost (`PodStartFailed`, with the pod's last
    /// warning event as the cause), its pod deleted and the run retried: no guest ran.
    #[arg(long, env = "WASMFN_START_DEADLINE", default_value_t = 120)]
    pub start_deadline_seconds: u64,
    /// Take a compile Job's network down before the build runs: an init container (root,
    /// `NET_ADMIN` only, the builder image's `wasmfn isolate-network`) leaves only loopback, so
    /// build scripts reach nothing even where no plugin enforces NetworkPolicy. Turn off where
    /// namespaces refuse root containers (then only the NetworkPolicy applies).
    #[arg(long, env = "WASMFN_COMPILE_ISOLATE_NETWORK", default_value_t = true, action = clap::ArgAction::Set)]
    pub compile_isolate_network: bool,
    /// Seconds a finished execution is kept when its spec sets no `ttlSecondsAfterFinished`
    /// (0: kept until deleted). Bounds what piles up in the API server and the operator's cache.
    #[arg(long, env = "WASMFN_FINISHED_TTL", default_value_t = 604_800)]
    pub finished_ttl_seconds: u64,
    /// Run pods in flight on one node at most (0: no cap). Executions beyond it are queued in
    /// the order they were created (condition reason `Queued`, no pod, no deadline running) and
    /// admitted as run pods finish; admitted pods are pinned to the node that had room.
    #[arg(long, env = "WASMFN_MAX_RUN_PODS_PER_NODE", default_value_t = 10)]
    pub max_run_pods_per_node: u32,
    /// CPU a run pod may use, as a Kubernetes quantity (empty: no limit), so a looping guest
    /// cannot starve its neighbours.
    #[arg(long, env = "WASMFN_RUN_CPU_LIMIT", default_value = "1", value_parser = parse_cpu)]
    pub run_cpu_limit: String,
    /// Seconds between artifact garbage-collection sweeps (default: a quarter of the TTL, at
    /// most 60).
    #[arg(long, env = "WASMFN_GC_INTERVAL")]
    pub gc_interval_seconds: Option<u64>,
    /// Before starting a compile Job or run pod in a namespace, make sure it has the
    /// NetworkPolicy `wasmfn-deny-egress`, which denies all egress to those pods.
    #[arg(long, env = "WASMFN_RUN_POD_NETWORK_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    pub run_pod_network_policy: bool,
    /// Hand `Auto` and `WasmEdge` executions to the warm agents (`wasmfn agent`) on WasmEdge
    /// nodes first; without a Ready agent with room, placement falls back to pods.
    #[arg(long, env = "WASMFN_AGENT_ENABLED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub agent_enabled: bool,
    /// Namespace of the agent pods (default: the operator's own).
    #[arg(long, env = "WASMFN_AGENT_NAMESPACE")]
    pub agent_namespace: Option<String>,
    /// Label selector of the agent pods.
    #[arg(
        long,
        env = "WASMFN_AGENT_SELECTOR",
        default_value = "app.kubernetes.io/component=agent"
    )]
    pub agent_selector: String,
    /// The agents' port.
    #[arg(long, env = "WASMFN_AGENT_PORT", default_value_t = wasmfn_agent_protocol::PORT)]
    pub agent_port: u16,
    /// Directory with the operator's client certificate for the agents (`ca.crt`, `tls.crt`,
    /// `tls.key`).
    #[arg(
        long,
        env = "WASMFN_AGENT_TLS_DIR",
        default_value = "/etc/wasmfn/agent-client-tls"
    )]
    pub agent_tls_dir: std::path::PathBuf,
    /// Most runs handed to one agent and not answered yet (its capacity plus its queue); beyond
    /// it, placement tries another agent, then a Wasm pod.
    #[arg(long, env = "WASMFN_AGENT_MAX_PENDING", default_value_t = 1024)]
    pub agent_max_pending: u32,
}

impl Config {
    /// The cache TTL.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_seconds)
    }

    /// Time between GC sweeps.
    pub fn gc_interval(&self) -> Duration {
        let seconds = self
            .gc_interval_seconds
            .unwrap_or((self.cache_ttl_seconds / 4).clamp(1, 60));
        Duration::from_secs(seconds.max(1))
    }

    /// The registry name nodes pull modules from.
    pub fn oci_pull_registry(&self) -> &str {
        self.oci_pull_registry
            .as_deref()
            .unwrap_or(&self.oci_registry)
    }

    /// Checks combinations clap cannot.
    pub fn validate(&self) -> Result<()> {
        if self.default_store == ArtifactStore::Oci && self.oci_registry.is_empty() {
            return Err(Error::Config(
                "the default store is oci but --oci-registry (WASMFN_OCI_REGISTRY) is empty".into(),
            ));
        }
        if self.lease_seconds < 3 {
            return Err(Error::Config("--lease-seconds must be at least 3".into()));
        }
        if self.concurrency == 0 {
            return Err(Error::Config("--concurrency must be at least 1".into()));
        }
        Ok(())
    }
}

/// Accepts a CPU quantity the API server takes for a limit: `2`, `0.5`, `500m`, or empty (none).
pub fn parse_cpu(text: &str) -> Result<String, String> {
    let text = text.trim();
    let number = text.strip_suffix('m').unwrap_or(text);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let valid = digits(whole) && digits(fraction) && !(text.ends_with('m') && number.contains('.'));
    match (text.is_empty(), valid) {
        (true, _) => Ok(String::new()),
        (false, true) if number.bytes().any(|b| (b'1'..=b'9').contains(&b)) => Ok(text.to_owned()),
        _ => Err(format!(
            "{text:?} is not a CPU limit (use cores like 1 or 0.5, millicores like 500m, or empty for none)"
        )),
    }
}

/// Byte sizes (flags and spec memory limits) parse by the API's rule.
pub use wasmfn_api::inputs::parse_quantity;

fn parse_label_requirement(text: &str) -> Result<LabelRequirement, String> {
    LabelRequirement::parse(text)
}

fn parse_store(text: &str) -> Result<ArtifactStore, String> {
    match text.to_ascii_lowercase().as_str() {
        "configmap" => Ok(ArtifactStore::ConfigMap),
        "oci" => Ok(ArtifactStore::Oci),
        other => Err(format!("unknown store {other:?}: use configmap or oci")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn cpu_limits_take_cores_millicores_or_nothing_and_refuse_the_rest() {
        for (text, parsed) in [("1", "1"), (" 0.5 ", "0.5"), ("500m", "500m"), ("", "")] {
            assert_eq!(parse_cpu(text).as_deref(), Ok(parsed), "{text:?}");
        }
        for bad in ["0", "0m", "one", "1.5m", "-1", "1Gi", ".5", "1."] {
            let error = parse_cpu(bad).expect_err(bad);
            assert!(error.contains("not a CPU limit"), "{error}");
        }
    }

    #[test]
    fn quantities_parse_in_bytes_and_binary_and_decimal_units() {
        assert_eq!(parse_quantity("134217728"), Ok(134_217_728));
        assert_eq!(parse_quantity("128Mi"), Ok(128 << 20));
        assert_eq!(parse_quantity("2Gi"), Ok(2 << 30));
        assert_eq!(parse_quantity("500k"), Ok(500_000));
        assert_eq!(parse_quantity("3M"), Ok(3_000_000));
        assert!(parse_quantity("12Ti").is_err());
        assert!(parse_quantity("Mi").is_err());
        assert!(parse_quantity("-1").is_err());
        assert!(parse_quantity("99999999999999999999Gi").is_err());
    }

    #[test]
    fn defaults_are_the_replaced_systems() {
        let config = Command::try_parse_from(["op"])
            .expect("defaults parse")
            .config;
        assert!(config.wasmedge_enabled);
        assert_eq!(config.wasmedge_timeout_ms, 30_000);
        assert_eq!(config.wasmedge_memory_limit, 128 << 20);
        assert!(config.cache_enabled);
        assert_eq!(config.cache_ttl(), Duration::from_secs(3600));
        assert_eq!(config.gc_interval(), Duration::from_secs(60));
        assert_eq!(config.default_store, ArtifactStore::ConfigMap);
        assert_eq!(
            config.wasmedge_node_selectors,
            vec![LabelRequirement::parse("wasmfn.dev/wasmedge=true").expect("valid")]
        );
        assert_eq!(config.wasmedge_handler, "wasmfn");
        assert!(!config.keep_run_pods);
        assert_eq!(config.max_output_bytes, 4096);
        assert_eq!(config.run_memory_overhead, 96 << 20);
        assert!(config.run_pod_network_policy);
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn flags_override_and_bad_combinations_are_refused() {
        let config = Command::try_parse_from([
            "op",
            "--cache-enabled",
            "false",
            "--wasmedge-memory-limit",
            "64Mi",
            "--cache-ttl-seconds",
            "8",
            "--default-store",
            "oci",
            "--wasmedge-node-selectors",
            "wasm=yes,pool",
            "--keep-run-pods",
        ])
        .expect("flags parse")
        .config;
        assert!(!config.cache_enabled);
        assert_eq!(
            config
                .wasmedge_node_selectors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["wasm=yes", "pool"]
        );
        assert!(config.keep_run_pods);
        assert_eq!(config.wasmedge_memory_limit, 64 << 20);
        assert_eq!(config.gc_interval(), Duration::from_secs(2));
        let error = config.validate().expect_err("oci without a registry");
        assert!(error.to_string().contains("--oci-registry"), "{error}");
        assert!(Command::try_parse_from(["op", "--default-store", "s3"]).is_err());
        assert!(Command::try_parse_from(["op", "--wasmedge-node-selectors", "=x"]).is_err());
    }
}
