//! TLS on both legs. Every rustls config in the workspace is built with the ring provider
//! (see the workspace Cargo.toml for why ring).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::{TlsConfig, UpstreamTlsMode};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Largest plaintext Sluice puts in one TLS record, on both legs.
///
/// libpq's asynchronous API (pgbench, psycopg's async connections, anything built on
/// `PQconsumeInput`) reads once into the 8 KiB it keeps free in its input buffer and then polls
/// the socket. OpenSSL decrypts a whole record at a time, so the part of a larger record that did
/// not fit stays inside OpenSSL where poll cannot see it: when that record ends the server's
/// answer, the client waits forever for bytes it already holds. rustls fills records to the TLS
/// maximum of 16 KiB, which hung pgbench on large results within seconds. Records of at most
/// 8 KiB always fit, as those Postgres writes from its 8 KiB send buffer do. (A known libpq
/// limitation: pgsql-hackers, "Process buffered SSL read bytes to support records >8kB on async
/// API"; clients in the field will carry it for years.)
pub const MAX_RECORD_PLAINTEXT: usize = 8192;

/// `max_fragment_size` in rustls counts the 5-byte record header.
const MAX_FRAGMENT_SIZE: usize = MAX_RECORD_PLAINTEXT + 5;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate and its key, both PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generates a self-signed certificate for `names` (DNS names or IP addresses).
pub fn generate_self_signed(names: &[&str]) -> Result<SelfSigned, TlsError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    })
}

/// The server config for client connections: the configured certificate, or a self-signed one
/// kept in `data_dir` (generated on first start, reused after).
pub fn server_config(
    tls: &TlsConfig,
    data_dir: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert_path, key_path) = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => ensure_self_signed(data_dir)?,
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Read {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // Clients using Postgres 17's direct TLS negotiation must offer this ALPN protocol.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    config.max_fragment_size = Some(MAX_FRAGMENT_SIZE);
    Ok(Arc::new(config))
}

fn ensure_self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = data_dir.join("server.crt");
    let key_path = data_dir.join("server.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let generated = generate_self_signed(&["localhost", "127.0.0.1", "::1"])?;
    write_private(&key_path, &generated.key_pem)?;
    std::fs::write(&cert_path, &generated.cert_pem).map_err(|source| TlsError::Write {
        path: cert_path.clone(),
        source,
    })?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

/// Writes a secret file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })
}

/// The client config for an upstream, or `None` when TLS is disabled. `prefer` and `require`
/// encrypt without checking the certificate, as libpq does; `verify-full` checks chain and name.
pub fn upstream_config(
    mode: UpstreamTlsMode,
    ca_file: Option<&Path>,
) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let mut config = match mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyFull => {
            let path = ca_file.ok_or_else(|| TlsError::Read {
                path: PathBuf::from("ca_file"),
                reason: "verify-full needs ca_file".into(),
            })?;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TlsError::Read {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            for cert in certs {
                roots.add(cert)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    // The upstream may itself be a pooler or proxy that reads as libpq does.
    config.max_fragment_size = Some(MAX_FRAGMENT_SIZE);
    Ok(Some(Arc::new(config)))
}

/// Accepts any certificate but still checks the handshake signatures, so the session is
/// encrypted to whoever holds the presented key: libpq's `sslmode=require`.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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
