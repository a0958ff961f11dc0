//! The OAuth2 client-credentials grant, served by the gateway so that the SDK's `ClientApp`
//! (`GLOBUS_COMPUTE_CLIENT_ID` / `GLOBUS_COMPUTE_CLIENT_SECRET`, with
//! `GLOBUS_SDK_SERVICE_URL_AUTH` pointing at the gateway) gets a token without Globus Auth.
//!
//! Tokens are stateless: `gcc1.<client id, base64url>.<expiry, Unix seconds>.<MAC>`, the MAC
//! a keyed BLAKE3 hash of the client id and expiry under a key derived from the client's
//! secret. A gateway restart keeps issued tokens valid; changing a client's secret revokes
//! them; nothing is stored.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use subtle::ConstantTimeEq;

use super::config::ComputeClientConfig;
use crate::auth::User;

/// How long an issued token is valid (Globus Auth's own access tokens last 48 hours).
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(48 * 3600);

const PREFIX: &str = "gcc1.";

/// The Globus Compute scope, and the resource server it belongs to.
pub(crate) const COMPUTE_SCOPE: &str =
    "https://auth.globus.org/scopes/facd7ccc-c5f4-42aa-916b-a0e270e2c2a9/all";
pub(crate) const COMPUTE_RESOURCE_SERVER: &str = "funcx_service";

/// The configured clients, by id.
pub(crate) struct Clients {
    by_id: HashMap<String, Client>,
}

struct Client {
    key: [u8; 32],
    secret_hash: [u8; 32],
    user: String,
}

fn secret_hash(secret: &str) -> [u8; 32] {
    blake3::derive_key(
        "funcx-gateway globus-compute client secret v1",
        secret.as_bytes(),
    )
}

impl Clients {
    pub(crate) fn new(clients: &[ComputeClientConfig]) -> Clients {
        let by_id = clients
            .iter()
            .map(|client| {
                (
                    client.client_id.clone(),
                    Client {
                        key: blake3::derive_key(
                            "funcx-gateway globus-compute token key v1",
                            client.client_secret.as_bytes(),
                        ),
                        secret_hash: secret_hash(&client.client_secret),
                        user: client.user.clone(),
                    },
                )
            })
            .collect();
        Clients { by_id }
    }

    /// A token for client `id` if `secret` is its secret.
    pub(crate) fn issue(&self, id: &str, secret: &str, now: SystemTime) -> Option<String> {
        let client = self.by_id.get(id)?;
        if !bool::from(client.secret_hash.ct_eq(&secret_hash(secret))) {
            return None;
        }
        let expiry = now
            .checked_add(TOKEN_LIFETIME)?
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let id64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
        let mac = mac(&client.key, id, expiry);
        Some(format!("{PREFIX}{id64}.{expiry}.{mac}"))
    }

    /// Whether `token` has this module's form (then only [`Clients::verify`] can accept it).
    pub(crate) fn is_client_token(token: &str) -> bool {
        token.starts_with(PREFIX)
    }

    /// The user a valid, unexpired token acts as.
    pub(crate) fn verify(&self, token: &str, now: SystemTime) -> Option<User> {
        let rest = token.strip_prefix(PREFIX)?;
        let mut parts = rest.split('.');
        let (id64, expiry, given) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id64)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())?;
        let expiry: u64 = expiry.parse().ok()?;
        let client = self.by_id.get(&id)?;
        let expected = mac(&client.key, &id, expiry);
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return None;
        }
        let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        (now < expiry).then(|| User::new(client.user.clone()))
    }
}

fn mac(key: &[u8; 32], id: &str, expiry: u64) -> String {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(id.as_bytes());
    hasher.update(b"\n");
    hasher.update(expiry.to_string().as_bytes());
    hasher.finalize().to_hex().to_string()
}

/// The resource server a scope string belongs to, as Globus Auth groups them: the SDK
/// wants exactly one token per resource server.
pub(crate) fn resource_server(scope: &str) -> String {
    if scope == COMPUTE_SCOPE {
        return COMPUTE_RESOURCE_SERVER.to_owned();
    }
    if matches!(scope, "openid" | "profile" | "email")
        || scope.starts_with("urn:globus:auth:scope:auth.globus.org:")
    {
        return "auth.globus.org".to_owned();
    }
    if let Some(rest) = scope.strip_prefix("urn:globus:auth:scope:") {
        if let Some((server, _)) = rest.split_once(':') {
            return server.to_owned();
        }
    }
    if let Some(rest) = scope.strip_prefix("https://auth.globus.org/scopes/") {
        if let Some((server, _)) = rest.split_once('/') {
            return server.to_owned();
        }
    }
    scope.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Clients {
        Clients::new(&[ComputeClientConfig {
            client_id: "c0ffee00-0000-4000-8000-000000000001".into(),
            client_secret: "the-secret-of-this-client".into(),
            user: "alice".into(),
        }])
    }

    #[test]
    fn a_token_is_issued_for_the_right_secret_only_and_names_its_user() {
        let clients = clients();
        let now = SystemTime::now();
        let id = "c0ffee00-0000-4000-8000-000000000001";
        assert!(clients
            .issue(id, "wrong-secret-of-this-client", now)
            .is_none());
        assert!(clients
            .issue("another-client", "the-secret-of-this-client", now)
            .is_none());
        let token = clients.issue(id, "the-secret-of-this-client", now).unwrap();
        assert!(Clients::is_client_token(&token));
        assert_eq!(clients.verify(&token, now), Some(User::new("alice")));
        // Expired, tampered with, or signed with another secret: refused.
        assert_eq!(clients.verify(&token, now + TOKEN_LIFETIME), None);
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('0') { '1' } else { '0' });
        assert_eq!(clients.verify(&tampered, now), None);
        let other = Clients::new(&[ComputeClientConfig {
            client_id: id.into(),
            client_secret: "a-rotated-secret-for-the-client".into(),
            user: "alice".into(),
        }]);
        assert_eq!(other.verify(&token, now), None);
        for junk in ["", "gcc1.", "gcc1.a.b.c", "gcc1.!!.1.x", "gcc1.YQ.1.x.y"] {
            assert_eq!(clients.verify(junk, now), None, "{junk}");
        }
    }

    #[test]
    fn scopes_group_by_resource_server() {
        assert_eq!(resource_server(COMPUTE_SCOPE), "funcx_service");
        assert_eq!(resource_server("openid"), "auth.globus.org");
        assert_eq!(
            resource_server("urn:globus:auth:scope:auth.globus.org:manage_projects"),
            "auth.globus.org"
        );
        assert_eq!(
            resource_server("urn:globus:auth:scope:transfer.api.globus.org:all"),
            "transfer.api.globus.org"
        );
    }
}
