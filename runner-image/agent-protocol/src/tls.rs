//! Mutual TLS between the operator and the agents. Both sides load three PEM files the chart
//! mounts from Secrets: the CA certificate, their own certificate and its key. The agent
//! requires a client certificate signed by the CA; the operator requires the agent's
//! certificate to be signed by the CA and to name [`crate::SERVER_NAME`].

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::Error;

/// The PEM material of one side.
#[derive(Clone)]
pub struct Identity {
    /// The CA that signs both sides.
    pub ca: Vec<u8>,
    /// This side's certificate (chain).
    pub cert: Vec<u8>,
    /// This side's private key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// File names inside a mounted TLS directory (a `kubernetes.io/tls` Secret plus `ca.crt`).
pub const CA_FILE: &str = "ca.crt";
/// The certificate's file.
pub const CERT_FILE: &str = "tls.crt";
/// The key's file.
pub const KEY_FILE: &str = "tls.key";

impl Identity {
    /// Reads `ca.crt`, `tls.crt` and `tls.key` from `dir`.
    pub fn read_dir(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| Error::Pem {
                what: path.display().to_string(),
                message: e.to_string(),
            })
        };
        Ok(Identity {
            ca: read(CA_FILE)?,
            cert: read(CERT_FILE)?,
            key: read(KEY_FILE)?,
        })
    }

    fn roots(&self) -> Result<RootCertStore, Error> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(&self.ca, "CA certificate")? {
            roots.add(cert)?;
        }
        Ok(roots)
    }

    fn chain(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
        let chain = certificates(&self.cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| Error::Pem {
            what: "private key".into(),
            message: e.to_string(),
        })?;
        Ok((chain, key))
    }

    /// The agent's server configuration: a client certificate from the CA is required.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| Error::Pem {
            what: "CA certificate".into(),
            message: e.to_string(),
        })?;
        let (chain, key) = self.chain()?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The operator's client configuration: presents its certificate, trusts only the CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let (chain, key) = self.chain()?;
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(self.roots()?)
                .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what: what.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what: what.into(),
            message: "no certificate in the PEM data".into(),
        });
    }
    Ok(certs)
}

/// A client configuration that presents no certificate and accepts any server certificate:
/// only for probing an agent (which then refuses the connection), never for sending work.
pub fn anonymous_client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
