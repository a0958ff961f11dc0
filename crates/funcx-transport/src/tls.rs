//! TLS for TCP connections (feature `tls`): configurations from PEM files.
//!
//! The listener presents a certificate chain and its private key
//! ([`TlsServerConfig::from_pem_files`]); the dialler trusts the CA that signed it
//! ([`TlsClientConfig::from_pem_file`]) and checks the name in it. The funcx handshake (version
//! and token) runs inside the encrypted stream, so with TLS the token is never sent in the
//! clear. Cryptography is rustls with its `ring` provider.
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
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(ca_pem, "CA file")? {
            roots
                .add(cert)
                .map_err(rustls_error("could not use a CA certificate"))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error("could not set up TLS"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::from_rustls(Arc::new(config), server_name)
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
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            TransportError::tls(
                "could not read a private key from the key file",
                Some(Box::new(e)),
            )
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error("could not set up TLS"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(rustls_error(
                "the certificate and key do not make a usable pair",
            ))?;
        Ok(Self::from_rustls(Arc::new(config)))
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
