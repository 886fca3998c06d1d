//! `helm` as the suites run it: the official binary `make setup` unpacks into the cache
//! (`$WASMFN_CACHE/helm/bin/helm`, or `WASMFN_HELM`), against the repository's chart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cluster::cache_dir;
use crate::error::{Error, Result};

/// The repository's chart.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/wasmfn")
}

/// `WASMFN_HELM`, else the binary `make setup` installed. Missing is an error, never a skip.
pub fn helm_binary() -> Result<PathBuf> {
    let binary = std::env::var_os("WASMFN_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("helm/bin/helm"));
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(Error::Prerequisite(format!(
            "{} is missing: run `make setup` (tests/harness/setup-helm.sh installs it)",
            binary.display()
        )))
    }
}

/// A helm client, optionally bound to a cluster's kubeconfig.
#[derive(Clone, Debug)]
pub struct Helm {
    binary: PathBuf,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    /// Helm for offline commands (`lint`, `template`).
    pub fn new() -> Result<Helm> {
        Ok(Helm {
            binary: helm_binary()?,
            kubeconfig: None,
        })
    }

    /// The same helm, talking to the cluster of `kubeconfig`.
    pub fn with_kubeconfig(&self, kubeconfig: &Path) -> Helm {
        Helm {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            ..self.clone()
        }
    }

    /// Runs `helm ARGS`; stdout on success, an error carrying stdout and stderr otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(&self.binary);
        if let Some(kubeconfig) = &self.kubeconfig {
            command.arg("--kubeconfig").arg(kubeconfig);
        }
        // Helm's own caches and repository config stay out of the user's home.
        let home = std::env::temp_dir().join("wasmfn-helm-home");
        let output = command
            .args(args)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io(format!("run {}", self.binary.display())))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(Error::Command {
                command: format!("helm {}", args.join(" ")),
                status: output.status.to_string(),
                stderr: format!("{}{}", String::from_utf8_lossy(&output.stderr), stdout)
                    .trim()
                    .to_owned(),
            });
        }
        Ok(stdout)
    }

    /// `helm template RELEASE CHART --namespace NAMESPACE --set K=V…`: the rendered manifests.
    pub fn template(
        &self,
        release: &str,
        namespace: &str,
        values: &[(&str, &str)],
    ) -> Result<String> {
        let chart = chart_dir();
        let mut args = vec![
            "template".to_owned(),
            release.to_owned(),
            chart.display().to_string(),
            "--namespace".to_owned(),
            namespace.to_owned(),
        ];
        for (key, value) in values {
            args.push("--set".to_owned());
            args.push(format!("{key}={value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)
    }
}
