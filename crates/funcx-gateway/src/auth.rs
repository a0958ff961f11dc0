//! Who is calling: [`Authenticator`] maps a bearer token to a [`User`]; [`RateLimiter`] keeps
//! each user to its share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use subtle::ConstantTimeEq;

use crate::config::RateLimitConfig;
use crate::store::{hash_token, StoreError, TaskStore};

/// An authenticated caller of the API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    name: String,
}

impl User {
    /// A user called `name`: the name every record of the store refers to.
    pub fn new(name: impl Into<String>) -> User {
        User { name: name.into() }
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Maps a bearer token to a user, or refuses it.
///
/// The gateway runs it on every request but `/health` and the endpoints' own route. The
/// default, [`TokenAuthenticator`], knows the tokens in the store; a deployment with an
/// identity provider implements this trait to validate OIDC or JWT tokens instead, and
/// returns the user name its records should be kept under.
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(Some(user))` for a valid token, `Ok(None)` to refuse it (401); `Err` when the
    /// check itself failed (500).
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>>;
}

/// Checks tokens against the hashed tokens of the store's users.
///
/// The token is hashed (BLAKE3) and looked up by hash; the stored hash is then compared
/// with the computed one in constant time. The lookup's timing depends only on the hash,
/// which tells an attacker nothing about which tokens exist.
#[derive(Clone)]
pub struct TokenAuthenticator {
    store: Arc<dyn TaskStore>,
}

impl TokenAuthenticator {
    /// Authenticates against the users of `store`.
    pub fn new(store: Arc<dyn TaskStore>) -> TokenAuthenticator {
        TokenAuthenticator { store }
    }
}

impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthenticator").finish_non_exhaustive()
    }
}

impl Authenticator for TokenAuthenticator {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>> {
        Box::pin(async move {
            let hash = hash_token(token);
            let user = self.store.user_by_token(hash).await?;
            Ok(user
                .filter(|user| bool::from(user.token_hash.ct_eq(&hash)))
                .map(|user| User::new(user.name)))
        })
    }
}

/// A fresh secret token: 32 random bytes from the operating system, as 64 hex digits.
pub fn new_token() -> Result<String, StoreError> {
    funcx_transport::new_token().map_err(StoreError::backend)
}

/// A fresh random id: 16 random bytes as 32 hex digits.
pub(crate) fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StoreError::backend(format!("no randomness for an id: {e}")))?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A token bucket per user: each request takes a token; tokens come back at
/// `per_second` up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    config: Option<RateLimitConfig>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter with `config`; `None` lets everything through.
    pub fn new(config: Option<RateLimitConfig>) -> RateLimiter {
        RateLimiter {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `user`: `Ok` to proceed, `Err(seconds)` to wait that long first.
    pub fn check(&self, user: &str) -> Result<(), u64> {
        let Some(config) = self.config else {
            return Ok(());
        };
        let burst = f64::from(config.burst);
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned limiter limits nothing rather than refusing everyone.
            return Ok(());
        };
        let bucket = buckets.entry(user.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * config.per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / config.per_second;
            // Retry-After is whole seconds; round up so that a retry then succeeds.
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, UserRecord};

    #[tokio::test]
    async fn tokens_authenticate_their_user_only() {
        let store = Arc::new(MemoryStore::new());
        let token = new_token().unwrap();
        assert_eq!(token.len(), 64);
        store
            .put_user(UserRecord {
                name: "alice".into(),
                token_hash: hash_token(&token),
            })
            .await
            .unwrap();
        let auth = TokenAuthenticator::new(store);
        assert_eq!(
            auth.authenticate(&token).await.unwrap(),
            Some(User::new("alice"))
        );
        assert_eq!(auth.authenticate("nope").await.unwrap(), None);
        assert_eq!(auth.authenticate("").await.unwrap(), None);
    }

    #[test]
    fn the_bucket_empties_and_says_when_to_come_back() {
        let limiter = RateLimiter::new(Some(RateLimitConfig {
            per_second: 0.5,
            burst: 2,
        }));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert_eq!(limiter.check("a"), Err(2));
        // Buckets are per user.
        assert!(limiter.check("b").is_ok());
        assert!(RateLimiter::new(None).check("a").is_ok());
    }
}
