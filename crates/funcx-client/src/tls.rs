//! Whom an `https://` gateway must be certified by (feature `tls`).
//!
//! [`EndpointDial`](crate::EndpointDial) and [`RemoteConfig`](crate::RemoteConfig) trust
//! either the CA file they are given (a self-signed gateway, or its private CA) or the
//! Mozilla roots (a gateway with a certificate from a public CA). PEM files are read and
//! rustls configurations built by `funcx_transport::tls`, as for manager connections.

use std::io;
use std::path::Path;
use std::sync::Arc;

use funcx_transport::tls::{load_certificates, root_store};
use funcx_transport::TransportError;

/// The rustls version this crate builds on, for configurations made by hand.
pub use rustls;

/// A client configuration trusting the CA certificates in the PEM file `ca_file` (the
/// certificate of a self-signed gateway, or the CA that signed it).
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let roots = root_store(load_certificates(ca_file)?)?;
    Ok(Arc::new(funcx_transport::tls::client_config(roots)?))
}

/// A client configuration trusting the Mozilla root CAs (`webpki-roots`), for a gateway
/// whose certificate comes from a public CA. Compiled in rather than read from the
/// operating system, so that it behaves the same in a minimal container.
pub fn client_config_with_public_roots() -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(Arc::new(funcx_transport::tls::client_config(roots)?))
}

/// The name a certificate must be valid for, from a URL's host (`[::1]` loses its brackets).
pub(crate) fn server_name(host: &str) -> io::Result<rustls_pki_types::ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    rustls_pki_types::ServerName::try_from(bare.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} is not a DNS name or IP address: {e}"),
        )
    })
}

/// Whether `error`, or one of its causes, is a TLS failure (a certificate not trusted, a
/// handshake refused); its text then says which.
pub(crate) fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<rustls::Error>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps, and rustls errors arrive wrapped in
        // `io::Error`s (twice through hyper-rustls): look inside them instead.
        current = match error.downcast_ref::<io::Error>() {
            Some(io_error) => io_error
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_found_inside_io_errors() {
        let rustls_error = rustls::Error::General("bad".into());
        let once = io::Error::new(io::ErrorKind::InvalidData, rustls_error.clone());
        let twice = io::Error::other(once);
        assert!(is_tls_failure(&twice));
        assert!(is_tls_failure(&rustls_error));
        assert!(!is_tls_failure(&io::Error::other("refused")));
    }

    #[test]
    fn server_names_lose_ipv6_brackets() {
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("localhost").is_ok());
        assert!(server_name("not a name!").is_err());
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let error = client_config(Path::new("/nonexistent/gateway.crt")).unwrap_err();
        assert!(
            error.is_tls() && error.to_string().contains("gateway.crt"),
            "{error}"
        );
        client_config_with_public_roots().unwrap();
    }
}
