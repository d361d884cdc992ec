//! Logins and bearer tokens.
//!
//! Passwords are stored as salted PBKDF2-HMAC-SHA256 hashes; tokens are random, handed
//! out at login (Flight SQL Basic handshake, REST `/api/v1/login`) and kept in the
//! catalog as SHA-256 hashes, so they survive a coordinator restart but a stolen catalog
//! does not reveal them.

use std::num::NonZeroU32;
use std::time::Duration;

use quarry_catalog::{Catalog, TokenRecord, UserRecord};
use quarry_common::{ErrorCode, QuarryError};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};

use crate::cluster::now_ms;

/// The user of requests when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

const PBKDF2_ROUNDS: u32 = 100_000;
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug)]
pub struct Auth {
    enabled: bool,
    catalog: Catalog,
    random: SystemRandom,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

fn rounds() -> NonZeroU32 {
    NonZeroU32::new(PBKDF2_ROUNDS).unwrap_or(NonZeroU32::MIN)
}

fn unauthenticated(message: &str) -> QuarryError {
    QuarryError::new(ErrorCode::Unauthenticated, message)
}

impl Auth {
    pub fn new(enabled: bool, catalog: Catalog) -> Self {
        Auth {
            enabled,
            catalog,
            random: SystemRandom::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn random_hex(&self, len: usize) -> Result<String, QuarryError> {
        let mut bytes = vec![0u8; len];
        self.random
            .fill(&mut bytes)
            .map_err(|_| QuarryError::internal("no randomness available"))?;
        Ok(hex(&bytes))
    }

    /// Create a user, or set an existing user's password.
    pub fn set_password(&self, user: &str, password: &str) -> Result<(), QuarryError> {
        if password.is_empty() {
            return Err(QuarryError::invalid("a password cannot be empty"));
        }
        let salt = self.random_hex(16)?;
        let mut hash = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds(),
            salt.as_bytes(),
            password.as_bytes(),
            &mut hash,
        );
        self.catalog
            .put_user(UserRecord {
                name: user.to_string(),
                password_hash: hex(&hash),
                salt,
            })
            .map_err(|e| QuarryError::internal(e.to_string()))?;
        Ok(())
    }

    /// Check a password and hand out a token.
    pub fn login(&self, user: &str, password: &str) -> Result<String, QuarryError> {
        if !self.enabled {
            return self.issue_token(if user.is_empty() { ANONYMOUS } else { user });
        }
        let record = self
            .catalog
            .get_user(user)
            .map_err(|e| QuarryError::internal(e.to_string()))?
            .ok_or_else(|| unauthenticated("wrong user name or password"))?
            .record;
        let expected = unhex(&record.password_hash)
            .ok_or_else(|| QuarryError::internal("corrupt password hash"))?;
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds(),
            record.salt.as_bytes(),
            password.as_bytes(),
            &expected,
        )
        .map_err(|_| unauthenticated("wrong user name or password"))?;
        self.issue_token(user)
    }

    /// A new token for `user`.
    pub fn issue_token(&self, user: &str) -> Result<String, QuarryError> {
        let token = self.random_hex(24)?;
        self.catalog
            .put_token(
                &token_key(&token),
                TokenRecord {
                    user: user.to_string(),
                    expires_ms: now_ms() + TOKEN_LIFETIME.as_millis() as u64,
                },
            )
            .map_err(|e| QuarryError::internal(e.to_string()))?;
        Ok(token)
    }

    /// The user a token belongs to.
    pub fn verify(&self, token: &str) -> Result<String, QuarryError> {
        let record = self
            .catalog
            .get_token(&token_key(token))
            .map_err(|e| QuarryError::internal(e.to_string()))?
            .ok_or_else(|| unauthenticated("unknown or expired token; log in again"))?;
        if record.expires_ms < now_ms() {
            let _ = self.catalog.delete_token(&token_key(token));
            return Err(unauthenticated("unknown or expired token; log in again"));
        }
        Ok(record.user)
    }

    pub fn logout(&self, token: &str) {
        let _ = self.catalog.delete_token(&token_key(token));
    }
}

fn token_key(token: &str) -> String {
    hex(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens() -> Result<(), QuarryError> {
        let dir = tempfile::tempdir().map_err(|e| QuarryError::internal(e.to_string()))?;
        let catalog =
            Catalog::open(dir.path()).map_err(|e| QuarryError::internal(e.to_string()))?;
        let auth = Auth::new(true, catalog);
        auth.set_password("ada", "s3cret")?;
        assert_eq!(
            auth.login("ada", "nope").unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        assert_eq!(
            auth.login("bob", "s3cret").unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        let token = auth.login("ada", "s3cret")?;
        assert_eq!(auth.verify(&token)?, "ada");
        assert!(auth.verify("forged").is_err());
        auth.logout(&token);
        assert!(auth.verify(&token).is_err());
        Ok(())
    }
}
