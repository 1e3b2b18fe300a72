//! TLS settings for Redis connections: the PEM files named in the config (CA bundle, optional
//! client certificate and key), read once at start into one rustls client configuration that
//! every connection shares, and the name each endpoint's certificate must be valid for.
//!
//! rustls with the `ring` provider only: no OpenSSL and no aws-lc (which needs cmake) in the
//! build or the image. Server-name verification is always on; there is no switch to turn it
//! off. What a file holds is never put in an error: a key file's text is a secret, and a
//! malformed PEM line could be part of it.

use rustls::ClientConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file a [`TlsError`] is about, so the config error can name its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    Cert,
    Key,
}

/// Why the TLS settings could not be built: which file, and a reason that holds none of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub file: TlsFile,
    pub reason: String,
}

/// The shared client configuration and the name override; clones share the configuration.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    /// `--redis-tls-server-name`: verified instead of each address's host.
    server_name: Option<ServerName<'static>>,
    /// For the startup summary: where the settings came from (paths only).
    ca: PathBuf,
    client_cert: Option<PathBuf>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Paths only: the configuration holds the client's private key.
        write!(f, "TLS (CA {}", self.ca.display())?;
        if let Some(cert) = &self.client_cert {
            write!(f, ", client certificate {}", cert.display())?;
        }
        if let Some(name) = &self.server_name {
            write!(f, ", server name {}", name.to_str())?;
        }
        f.write_str(")")
    }
}

impl Tls {
    /// Reads and checks the files: `ca` a PEM bundle of one or more CA certificates; `client` a
    /// PEM certificate chain and its PEM private key, for servers that ask for one.
    pub fn load(
        ca: &Path,
        client: Option<(&Path, &Path)>,
        server_name: Option<ServerName<'static>>,
    ) -> Result<Tls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(ca, TlsFile::Ca)? {
            roots
                .add(cert)
                .map_err(|e| TlsError { file: TlsFile::Ca, reason: format!("a certificate is unusable: {e}") })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError { file: TlsFile::Ca, reason: format!("no protocol version available: {e}") })?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert, TlsFile::Cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| TlsError { file: TlsFile::Key, reason: pem_reason(&e, "private key") })?;
                // rustls's error says what is wrong with the key (type, mismatch), not what it holds.
                builder.with_client_auth_cert(chain, key).map_err(|e| TlsError {
                    file: TlsFile::Key,
                    reason: format!("the key does not fit the client certificate: {e}"),
                })?
            }
        };
        Ok(Tls {
            config: Arc::new(config),
            server_name,
            ca: ca.to_owned(),
            client_cert: client.map(|(cert, _)| cert.to_owned()),
        })
    }

    /// The name a certificate of `host` must be valid for: the override, else the host itself
    /// (an IP address is checked against the certificate's IP addresses).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => ServerName::try_from(host.to_owned()).map_err(|e| e.to_string()),
        }
    }

    pub(crate) fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path, file: TlsFile) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let reason = |e: pem::Error| TlsError { file, reason: pem_reason(&e, "certificate") };
    let certs = CertificateDer::pem_file_iter(path).map_err(reason)?.collect::<Result<Vec<_>, _>>().map_err(reason)?;
    if certs.is_empty() {
        return Err(TlsError { file, reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into() });
    }
    Ok(certs)
}

/// What went wrong reading PEM, without any of the file's text (pem errors may carry a line).
fn pem_reason(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("no PEM {what} in it"),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        _ => format!("not a PEM {what}"),
    }
}
