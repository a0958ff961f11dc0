//! TLS for TCP connections (feature `tls`): configurations from PEM files.
//!
//! The listener presents a certificate chain and its private key
//! ([`TlsServerConfig::from_pem_files`]); the dialler trusts the CA that signed it
//! ([`TlsClientConfig::from_pem_file`]) and checks the name in it. The funcx handshake (version
//! and token) runs inside the encrypted stream, so with TLS the token is never sent in the
//! clear.
//!
//! Cryptography is rustls with its `ring` provider. Every configuration names its provider
//! instead of relying on a process-wide default, which would panic when two providers are
//! compiled in (`--all-features` can do that). The loading helpers ([`load_certificates`],
//! [`load_private_key`], [`client_config`], [`server_config`]) are the one place funcx reads
//! PEM and builds rustls configurations; the gateway and its clients use them too.
//!
//! ```no_run
//! # fn demo() -> Result<(), funcx_transport::TransportError> {
//! use funcx_transport::tls::{TlsClientConfig, TlsServerConfig};
//! use funcx_transport::TcpTransport;
//!
//! let endpoint = TcpTransport::builder()
//!     .token("s3cret")
//!     .tls_server(TlsServerConfig::from_pem_files("endpoint.crt", "endpoint.key")?)
//!     .build();
//! let manager = TcpTransport::builder()
//!     .token("s3cret")
//!     .tls_client(TlsClientConfig::from_pem_file("ca.crt", "endpoint.example.org")?)
//!     .build();
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::TransportError;

/// The rustls version this crate builds on, for configurations made by hand.
pub use rustls;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|e| {
        TransportError::tls(
            format!("could not read the {what} file {}", path.display()),
            Some(Box::new(e)),
        )
    })
}

/// The certificates in the PEM file `path` (a chain, leaf first, or CA certificates); an
/// error names the file, and a file without a `CERTIFICATE` block is one.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let what = format!("certificate file {}", path.display());
    certificates(&read_file(path, "certificate")?, &what)
}

/// The private key in the PEM file `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    private_key(
        &read_file(path, "key")?,
        &format!("key file {}", path.display()),
    )
}

fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        TransportError::tls(
            format!("could not read a private key from the {what}"),
            Some(Box::new(e)),
        )
    })
}

/// A client configuration that trusts `roots` and presents no certificate of its own.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TransportError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error("could not set up TLS"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A server configuration presenting `chain` (leaf first) with `key`, asking no certificate
/// of its clients.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, TransportError> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error("could not set up TLS"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(rustls_error(
            "the certificate and key do not make a usable pair",
        ))
}

/// The roots of trust made of the CA certificates `certs`.
pub fn root_store(
    certs: Vec<CertificateDer<'static>>,
) -> Result<rustls::RootCertStore, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(rustls_error("could not use a CA certificate"))?;
    }
    Ok(roots)
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::tls(format!("bad PEM in the {what}"), Some(Box::new(e))))?;
    if certs.is_empty() {
        return Err(TransportError::tls(
            format!("the {what} holds no CERTIFICATE block"),
            None,
        ));
    }
    Ok(certs)
}

fn rustls_error(what: &str) -> impl FnOnce(rustls::Error) -> TransportError + '_ {
    move |e| TransportError::tls(what.to_owned(), Some(Box::new(e)))
}

/// How a dialler sets up TLS: whom it trusts and which name it expects the listener to have.
#[derive(Clone)]
pub struct TlsClientConfig {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsClientConfig {
    /// Trusts the CA certificates in `ca_pem` and expects the listener's certificate to be
    /// valid for `server_name` (a DNS name or an IP address).
    pub fn from_pem(ca_pem: &[u8], server_name: &str) -> Result<Self, TransportError> {
        let roots = root_store(certificates(ca_pem, "CA file")?)?;
        Self::from_rustls(Arc::new(client_config(roots)?), server_name)
    }

    /// Like [`from_pem`](Self::from_pem), reading the CA certificates from a file.
    pub fn from_pem_file(
        ca_path: impl AsRef<Path>,
        server_name: &str,
    ) -> Result<Self, TransportError> {
        Self::from_pem(&read_file(ca_path.as_ref(), "CA")?, server_name)
    }

    /// Uses a rustls configuration made by hand (client certificates, custom verifiers).
    pub fn from_rustls(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self, TransportError> {
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            TransportError::tls(
                format!("{server_name:?} is not a DNS name or IP address"),
                Some(Box::new(e)),
            )
        })?;
        Ok(TlsClientConfig {
            config,
            server_name,
        })
    }

    pub(crate) async fn connect(
        &self,
        stream: TcpStream,
    ) -> Result<client::TlsStream<TcpStream>, TransportError> {
        TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(|e| TransportError::tls("the TLS handshake failed", Some(Box::new(e))))
    }
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// How a listener sets up TLS: the certificate chain it presents and its private key.
#[derive(Clone)]
pub struct TlsServerConfig {
    config: Arc<rustls::ServerConfig>,
}

impl TlsServerConfig {
    /// Presents the certificate chain in `cert_chain_pem` (leaf first) with the private key in
    /// `key_pem` (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TransportError> {
        let chain = certificates(cert_chain_pem, "certificate file")?;
        let key = private_key(key_pem, "key file")?;
        Ok(Self::from_rustls(Arc::new(server_config(chain, key)?)))
    }

    /// Like [`from_pem`](Self::from_pem), reading both from files.
    pub fn from_pem_files(
        cert_chain_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, TransportError> {
        Self::from_pem(
            &read_file(cert_chain_path.as_ref(), "certificate")?,
            &read_file(key_path.as_ref(), "key")?,
        )
    }

    /// Uses a rustls configuration made by hand (client certificate verification...).
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        TlsServerConfig { config }
    }

    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<server::TlsStream<TcpStream>, TransportError> {
        TlsAcceptor::from(self.config.clone())
            .accept(stream)
            .await
            .map_err(|e| TransportError::tls("the TLS handshake failed", Some(Box::new(e))))
    }
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inputs_are_tls_errors() {
        assert!(TlsClientConfig::from_pem(b"not pem", "localhost")
            .unwrap_err()
            .is_tls());
        assert!(TlsServerConfig::from_pem(b"", b"").unwrap_err().is_tls());
        let err = TlsClientConfig::from_pem_file("/nonexistent/ca.pem", "localhost").unwrap_err();
        assert!(
            err.is_tls() && err.to_string().contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn files_are_loaded_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("funcx-tls-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = dir.join("server.crt");
        let key_path = dir.join("server.key");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let chain = load_certificates(&cert_path).unwrap();
        let key = load_private_key(&key_path).unwrap();
        server_config(chain.clone(), key).unwrap();
        client_config(root_store(chain).unwrap()).unwrap();
        // A key where a certificate should be, and the other way round.
        let err = load_certificates(&key_path).unwrap_err();
        assert!(
            err.is_tls() && err.to_string().contains("server.key"),
            "{err}"
        );
        let err = load_private_key(&cert_path).unwrap_err();
        assert!(
            err.is_tls() && err.to_string().contains("server.crt"),
            "{err}"
        );
        let err = load_certificates(&dir.join("missing.crt")).unwrap_err();
        assert!(
            err.is_tls() && err.to_string().contains("missing.crt"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn configs_from_generated_pem() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_pem = cert.cert.pem();
        let key_pem = cert.signing_key.serialize_pem();
        TlsServerConfig::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        TlsClientConfig::from_pem(cert_pem.as_bytes(), "localhost").unwrap();
        assert!(
            TlsClientConfig::from_pem(cert_pem.as_bytes(), "not a name!")
                .unwrap_err()
                .is_tls()
        );
    }
}
