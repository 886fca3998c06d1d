//! `wasmfn-operator run`: check the CRDs, serve probes, win the Lease, re-spell old enum values
//! ([`crate::respell`]), then run the controllers (functions, executions) and the artifact
//! garbage collector until shutdown or lost leadership.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::health::{self, Health};
use crate::leader::{LeaderElector, Leadership};
use crate::metrics::Metrics;
use crate::registry_auth::Credentials;
use crate::store::oci::OciStore;
use crate::store::{gc, Stores};
use crate::telemetry::{otlp_config, Tracer};

/// The CRDs the operator needs.
const REQUIRED_CRDS: [&str; 2] = ["wasmfunctions.wasmfn.dev", "wasmexecutions.wasmfn.dev"];

/// Longest the controllers wait for the startup re-spelling pass ([`crate::respell`]).
const RESPELL_HEAD_START: Duration = Duration::from_secs(30);

/// Fails with [`Error::MissingCrd`] when a CRD is not installed.
pub async fn check_crds(client: &Client) -> Result<()> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for name in REQUIRED_CRDS {
        if crds.get_opt(name).await?.is_none() {
            return Err(Error::MissingCrd(name.to_owned()));
        }
    }
    Ok(())
}

fn identity(config: &Config) -> String {
    config.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "wasmfn-operator".to_owned());
        format!("{host}-{}", std::process::id())
    })
}

/// The namespace this pod runs in (its service account's), or `default` outside a pod.
pub fn own_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|ns| ns.trim().to_owned())
        .unwrap_or_else(|_| "default".to_owned())
}

fn lease_namespace(config: &Config) -> String {
    config.lease_namespace.clone().unwrap_or_else(own_namespace)
}

/// Runs the operator until SIGTERM/SIGINT (exit 0) or a fatal error.
pub async fn run(config: Config) -> Result<()> {
    config.validate()?;
    // A tracing setting that cannot work stops the start, rather than losing every span quietly.
    let otlp = otlp_config::from_env(|name| std::env::var(name).ok()).map_err(Error::Config)?;
    let client = Client::try_default().await?;
    check_crds(&client).await?;

    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());
    health.ready.store(true, Ordering::Relaxed);
    let listener = health::bind(config.health_addr).await?;
    tokio::spawn(health::serve(listener, health.clone(), metrics.clone()));

    let identity = identity(&config);
    let elector = LeaderElector::new(
        client.clone(),
        &lease_namespace(&config),
        &config.lease_name,
        &identity,
        Duration::from_secs(config.lease_seconds),
    );
    // A renewal vouches for a third of the Lease less than its duration: the elector renews
    // every third and gives up after two thirds without one.
    let leadership = Arc::new(Leadership::new(
        Duration::from_secs(config.lease_seconds) * 2 / 3,
    ));
    tokio::select! {
        acquired = elector.acquire(&leadership) => acquired?,
        () = shutdown_signal() => {
            info!("stopping while standing by");
            return Ok(());
        }
    }
    health.leading.store(true, Ordering::Relaxed);

    let oci = (!config.oci_registry.is_empty()).then(|| {
        OciStore::new(
            &config.oci_registry,
            config.oci_pull_registry(),
            &config.oci_repository,
            config.oci_insecure,
            Credentials::new(config.registry_auth_file.as_deref()),
        )
    });
    let stores = Stores::new(client.clone(), oci);
    let tracer = match otlp {
        Some(otlp) => {
            info!(endpoint = %otlp.endpoint, service = %otlp.service_name, "exporting spans over OTLP");
            Tracer::start(otlp, metrics.clone())
        }
        None => Tracer::disabled(),
    };
    let agents = if config.agent_enabled {
        let namespace = config
            .agent_namespace
            .clone()
            .unwrap_or_else(|| lease_namespace(&config));
        info!(%namespace, selector = %config.agent_selector, "handing runs to warm agents");
        Some(crate::agent::Agents::start(
            client.clone(),
            &config,
            &namespace,
            metrics.clone(),
        )?)
    } else {
        None
    };
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            config.clone(),
            stores,
            metrics,
            tracer.clone(),
            &identity,
        )
        .with_agents(agents)
        .with_leadership(leadership.clone()),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    // Old-case enum values are re-spelled before the controllers start, so their first status
    // writes are accepted; a pass slower than RESPELL_HEAD_START carries on beside them.
    let (respelled_tx, respelled_rx) = watch::channel(false);
    let respelling = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            crate::respell::stored::respell_stored(&ctx).await;
            let _ = respelled_tx.send(true);
        }
    });
    let after_respelling = |mut done: watch::Receiver<bool>| async move {
        let _ = tokio::time::timeout(RESPELL_HEAD_START, done.wait_for(|d| *d)).await;
    };
    let functions = tokio::spawn({
        let (ctx, start, stop) = (
            ctx.clone(),
            after_respelling(respelled_rx.clone()),
            stopped(stop_rx.clone()),
        );
        async move {
            start.await;
            crate::function::run(ctx, stop).await;
        }
    });
    let executions = tokio::spawn({
        let (ctx, start, stop) = (
            ctx.clone(),
            after_respelling(respelled_rx),
            stopped(stop_rx.clone()),
        );
        async move {
            start.await;
            crate::execution::run(ctx, stop).await;
        }
    });
    let collector = tokio::spawn(collect_garbage(client.clone(), config.clone(), stop_rx));

    let outcome = tokio::select! {
        lost = elector.hold(&leadership) => Err(lost),
        () = shutdown_signal() => Ok(()),
    };
    let _ = stop_tx.send(true);
    match &outcome {
        Ok(()) => {
            info!("shutting down: finishing in-flight reconciles");
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                let _ = tokio::join!(functions, executions);
            })
            .await;
            collector.abort();
            respelling.abort();
            tracer.flush(Duration::from_secs(5)).await;
            if let Err(error) = elector.release().await {
                warn!(%error, "could not release the lease");
            }
        }
        Err(error) => error!(%error, "stopping at once so two replicas never act together"),
    }
    outcome
}

async fn collect_garbage(client: Client, config: Config, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(config.gc_interval());
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match gc::sweep(&client, config.cache_ttl()).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "artifact garbage collection"),
            Err(error) => warn!(%error, "artifact garbage collection failed"),
        }
    }
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
