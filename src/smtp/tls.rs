//! TLS for both sides: the certificate Kala offers with STARTTLS, and the client settings for
//! STARTTLS to the downstream.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::{DownstreamSettings, DownstreamTls, SmtpTlsSettings};

/// The server side: the configured certificate, or a self-signed one kept in `data_dir/tls`
/// (generated on first start) so STARTTLS works out of the box.
pub fn server_config(
    tls: &SmtpTlsSettings,
    data_dir: &Path,
    hostname: &str,
) -> anyhow::Result<Arc<ServerConfig>> {
    crate::install_crypto_provider();
    let (cert_path, key_path) = match &tls.cert_and_key {
        Some((c, k)) => (c.clone(), k.clone()),
        None => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let generated = rcgen::generate_simple_self_signed(vec![hostname.to_string()])?;
                std::fs::write(&c, generated.cert.pem())?;
                write_private(&k, generated.signing_key.serialize_pem().as_bytes())?;
                tracing::info!(cert = %c.display(), "generated a self-signed certificate for STARTTLS; set smtp.tls.cert_file to use your own");
            }
            (c, k)
        }
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "reading certificate {} (smtp.tls.cert_file)",
                cert_path.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(&key_path).with_context(|| {
        format!(
            "reading private key {} (smtp.tls.key_file)",
            key_path.display()
        )
    })?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match (smtp.tls)")?;
    Ok(Arc::new(config))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// The client side for the downstream, or `None` when TLS is off.
pub fn client_config(settings: &DownstreamSettings) -> anyhow::Result<Option<Arc<ClientConfig>>> {
    crate::install_crypto_provider();
    let config = match settings.tls {
        DownstreamTls::Off => return Ok(None),
        DownstreamTls::Opportunistic => ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate::new()))
            .with_no_client_auth(),
        DownstreamTls::Required => {
            let mut roots = RootCertStore::empty();
            match &settings.ca_file {
                Some(path) => {
                    for cert in CertificateDer::pem_file_iter(path)
                        .with_context(|| format!("reading downstream.ca_file {}", path.display()))?
                    {
                        roots
                            .add(cert?)
                            .context("downstream.ca_file holds an unusable certificate")?;
                    }
                }
                None => {
                    let native = rustls_native_certs::load_native_certs();
                    for cert in native.certs {
                        let _ = roots.add(cert);
                    }
                }
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "downstream.tls = \"required\" but no trusted CA was found; set downstream.ca_file"
            );
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// The name to check the downstream certificate against.
pub fn server_name(name: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(name.to_string()).with_context(|| {
        format!("`{name}` is not a valid TLS server name (downstream.tls_server_name)")
    })
}

/// Opportunistic TLS: encrypt, but accept any certificate, as MTAs do without DANE or MTA-STS.
/// Signatures are still checked, so the handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AnyCertificate {
    fn new() -> AnyCertificate {
        AnyCertificate(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
