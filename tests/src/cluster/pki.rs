//! The cluster's own certificate authority and credentials, made with the `openssl` command: the
//! apiserver's serving certificate, the client certificate the apiserver presents to kubelets
//! (`system:masters`), the service-account signing key and random bearer tokens.

use super::process::run;
use crate::error::{Error, Result};
use std::path::Path;
use std::process::Command;

/// Subject alternative names of the apiserver: loopback, where everything here reaches it, and the
/// in-cluster service names.
const APISERVER_SANS: &str = "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,\
DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local";

/// Writes `ca.{crt,key}`, `apiserver.{crt,key}`, `kubelet-client.{crt,key}`, `sa.{key,pub}`.
pub fn generate(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let p = |name: &str| dir.join(name);
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .args(["-subj", "/CN=wasmfn-local-ca"])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")))?;
    sign(
        dir,
        "apiserver",
        "/CN=kube-apiserver",
        &format!("subjectAltName={APISERVER_SANS}\nextendedKeyUsage=serverAuth\n"),
    )?;
    sign(
        dir,
        "kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "extendedKeyUsage=clientAuth\n",
    )?;
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(p("sa.key"))
        .arg("2048"))?;
    run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(p("sa.key"))
        .arg("-out")
        .arg(p("sa.pub")))?;
    Ok(())
}

fn sign(dir: &Path, name: &str, subject: &str, extensions: &str) -> Result<()> {
    let p = |suffix: &str| dir.join(format!("{name}.{suffix}"));
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", subject])
        .arg("-keyout")
        .arg(p("key"))
        .arg("-out")
        .arg(p("csr")))?;
    std::fs::write(p("ext"), extensions).map_err(Error::io("write extensions"))?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "3650", "-CAcreateserial"])
        .arg("-in")
        .arg(p("csr"))
        .arg("-CA")
        .arg(dir.join("ca.crt"))
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .arg("-extfile")
        .arg(p("ext"))
        .arg("-out")
        .arg(p("crt")))?;
    Ok(())
}

/// 32 random hex characters from the kernel.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(Error::io("read /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
