//! Logins and bearer tokens, shared by every frontend.
//!
//! Passwords are stored as salted PBKDF2-HMAC-SHA256 hashes. A password is verified once,
//! on a blocking thread, at most [`MAX_CONCURRENT_VERIFICATIONS`] at a time (so a flood of
//! failed logins takes one core, not the coordinator); the token it yields is cached in
//! memory, and so is the Basic credential that produced it, so later calls with either
//! cost a hash lookup. Tokens are kept in the catalog only as SHA-256 hashes, so they
//! survive a restart but a stolen catalog does not reveal them. With authentication off,
//! tokens only name sessions: they are never written anywhere.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use moka::sync::Cache;
use quarry_catalog::{Catalog, TokenRecord, UserRecord};
use quarry_common::{ErrorCode, QuarryError};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};
use tokio::sync::Semaphore;

use super::{ADMIN_ROLE, AccessControl};
use crate::error::CoordinatorError;
use crate::error::catalog_error;
use quarry_catalog::now_ms;

/// The user of requests when authentication is off.
pub(crate) const ANONYMOUS: &str = "anonymous";

const PBKDF2_ROUNDS: u32 = 100_000;
/// Login tokens last this long.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// A Basic credential verified once is trusted this long without verifying it again.
const CREDENTIAL_CACHE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Password checks running at once; more wait their turn.
pub(crate) const MAX_CONCURRENT_VERIFICATIONS: usize = 1;
/// After this many failed logins for one user name within [`FAILURE_WINDOW`], further
/// attempts are refused without checking the password (no CPU spent, nothing written),
/// except with a credential verified before; the window restarts with each failure.
pub(crate) const MAX_FAILED_LOGINS: u32 = 10;
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The one message for every failed login: it never says which part was wrong.
const LOGIN_FAILED: &str = "wrong user name or password";
const TOKEN_REFUSED: &str = "unknown, expired or revoked token; log in again";

/// Both padded and unpadded base64, as drivers send either (ADBC sends unpadded).
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What a request's `authorization` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl Credentials {
    /// Read an `authorization` header value (`Basic ...` or `Bearer ...`).
    pub fn parse(header: Option<&str>) -> Result<Credentials, QuarryError> {
        let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else {
            return Ok(Credentials::None);
        };
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Ok(Credentials::Bearer(rest.to_string()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let malformed = || unauthenticated("malformed Basic authorization header");
            let bytes = BASIC_BASE64.decode(rest).map_err(|_| malformed())?;
            let text = String::from_utf8(bytes).map_err(|_| malformed())?;
            let (user, password) = text.split_once(':').ok_or_else(malformed)?;
            return Ok(Credentials::Basic {
                user: user.to_string(),
                password: password.to_string(),
            });
        }
        Err(unauthenticated(
            "unsupported authorization header: send Basic credentials or a Bearer token",
        ))
    }
}

/// Who a request is from, once its credentials were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    /// The token its session is keyed by.
    pub token: String,
    /// Set when this request logged in (Basic) or was given a session: hand it back.
    pub issued: bool,
}

#[derive(Debug, Clone)]
struct CachedToken {
    user: String,
    expires_ms: u64,
}

/// What a SCRAM-SHA-256 login (the PostgreSQL protocol's) checks a password against. A
/// user record's PBKDF2-HMAC-SHA256 hash is exactly SCRAM's salted password, with the
/// record's salt and [`PBKDF2_ROUNDS`] iterations, so no second secret is stored.
#[derive(Clone)]
pub struct ScramSecret {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub salted_password: Vec<u8>,
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSecret").finish_non_exhaustive()
    }
}

/// A personal access token as listed to its owner (never the token itself).
#[derive(Debug, Clone)]
pub struct PersonalToken {
    pub id: String,
    pub user: String,
    pub name: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

#[derive(Debug)]
pub struct Auth {
    control: Arc<AccessControl>,
    random: SystemRandom,
    /// Token hash → owner; misses fall back to the catalog.
    tokens: Cache<String, CachedToken>,
    /// Hash of a verified `user:password` → the token it logged in with.
    credentials: Cache<String, String>,
    /// Recent failed logins by user name (memory only).
    failures: Cache<String, u32>,
    verifications: Arc<Semaphore>,
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
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

pub(crate) fn unauthenticated(message: &str) -> QuarryError {
    QuarryError::new(ErrorCode::Unauthenticated, message)
}

fn sha256_hex(text: &str) -> String {
    hex(digest::digest(&digest::SHA256, text.as_bytes()).as_ref())
}

/// Run blocking work (sled, PBKDF2) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, QuarryError> + Send + 'static,
) -> Result<T, QuarryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| QuarryError::from(CoordinatorError::crashed("a background task", e)))?
}

/// The salted hash of a password, as a user record stores it.
pub(crate) fn hash_password(
    random: &SystemRandom,
    password: &str,
) -> Result<(String, String), QuarryError> {
    if password.is_empty() {
        return Err(QuarryError::invalid("a password cannot be empty"));
    }
    let mut salt = [0u8; 16];
    random
        .fill(&mut salt)
        .map_err(|_| QuarryError::from(CoordinatorError::NoRandomness))?;
    let salt = hex(&salt);
    let mut hash = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds(),
        salt.as_bytes(),
        password.as_bytes(),
        &mut hash,
    );
    Ok((hex(&hash), salt))
}

fn password_matches(record: &UserRecord, password: &str) -> bool {
    let Some(expected) = unhex(&record.password_hash) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds(),
        record.salt.as_bytes(),
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

impl Auth {
    pub fn new(control: Arc<AccessControl>) -> Arc<Self> {
        Arc::new(Auth {
            control,
            random: SystemRandom::new(),
            tokens: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TOKEN_LIFETIME)
                .build(),
            credentials: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CREDENTIAL_CACHE_LIFETIME)
                .build(),
            failures: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(FAILURE_WINDOW)
                .build(),
            verifications: Arc::new(Semaphore::new(MAX_CONCURRENT_VERIFICATIONS)),
        })
    }

    pub fn enabled(&self) -> bool {
        self.control.enabled()
    }

    pub fn control(&self) -> &Arc<AccessControl> {
        &self.control
    }

    fn catalog(&self) -> &Catalog {
        self.control.catalog()
    }

    fn random_hex(&self, len: usize) -> Result<String, QuarryError> {
        let mut bytes = vec![0u8; len];
        self.random
            .fill(&mut bytes)
            .map_err(|_| QuarryError::from(CoordinatorError::NoRandomness))?;
        Ok(hex(&bytes))
    }

    /// Create the admin user at start, or reset its password (blocking).
    pub fn bootstrap_admin(&self, password: &str) -> Result<(), QuarryError> {
        let (password_hash, salt) = hash_password(&self.random, password)?;
        self.catalog()
            .put_user(UserRecord {
                name: "admin".to_string(),
                password_hash,
                salt,
                roles: vec![ADMIN_ROLE.to_string()],
            })
            .map_err(catalog_error)?;
        self.control.reload()
    }

    /// A new random password, for an admin nobody chose one for.
    pub fn generate_password(&self) -> Result<String, QuarryError> {
        self.random_hex(12)
    }

    /// Hash a password for a user record (blocking: PBKDF2).
    pub fn hash(&self, password: &str) -> Result<(String, String), QuarryError> {
        hash_password(&self.random, password)
    }

    /// Establish who a request is from.
    pub async fn authenticate(
        self: &Arc<Self>,
        credentials: Credentials,
    ) -> Result<Principal, QuarryError> {
        match credentials {
            Credentials::Bearer(token) => {
                let user = self.verify(&token).await?;
                Ok(Principal {
                    user,
                    token,
                    issued: false,
                })
            }
            Credentials::Basic { user, password } => {
                let token = self.login(&user, &password).await?;
                let user = if self.enabled() {
                    user
                } else {
                    ANONYMOUS.to_string()
                };
                Ok(Principal {
                    user,
                    token,
                    issued: true,
                })
            }
            Credentials::None if self.enabled() => Err(unauthenticated(
                "authentication required: log in with Basic credentials or send a Bearer token",
            )),
            Credentials::None => Ok(Principal {
                user: ANONYMOUS.to_string(),
                token: self.random_hex(24)?,
                issued: true,
            }),
        }
    }

    /// Check a password and hand out a token. A credential verified in the last minutes
    /// gets the same token back without another password check.
    pub async fn login(
        self: &Arc<Self>,
        user: &str,
        password: &str,
    ) -> Result<String, QuarryError> {
        if !self.enabled() {
            return self.random_hex(24);
        }
        let credential = sha256_hex(&format!("{user}\u{0}{password}"));
        if let Some(token) = self.credentials.get(&credential)
            && self.tokens.contains_key(&sha256_hex(&token))
            && self.control.user_exists(user)
        {
            return Ok(token);
        }
        if self.failures.get(user).unwrap_or(0) >= MAX_FAILED_LOGINS {
            return Err(unauthenticated(LOGIN_FAILED));
        }
        let _turn = self
            .verifications
            .acquire()
            .await
            .map_err(|_| QuarryError::unavailable("the coordinator is shutting down"))?;
        let auth = Arc::clone(self);
        let (user_name, password) = (user.to_string(), password.to_string());
        let token = blocking(move || {
            let record = auth.catalog().get_user(&user_name).map_err(catalog_error)?;
            // An unknown user costs the same check as a wrong password, so timing does
            // not tell them apart.
            let matches = match &record {
                Some(stored) => password_matches(&stored.record, &password),
                None => {
                    let decoy = UserRecord {
                        name: String::new(),
                        password_hash: "00".repeat(32),
                        salt: "decoy".to_string(),
                        roles: Vec::new(),
                    };
                    let _ = password_matches(&decoy, &password);
                    false
                }
            };
            if !matches {
                return Err(unauthenticated(LOGIN_FAILED));
            }
            auth.store_token(&user_name, None, TOKEN_LIFETIME)
                .map(|(token, _)| token)
        })
        .await;
        let token = match token {
            Ok(token) => token,
            Err(e) => {
                if e.code == ErrorCode::Unauthenticated {
                    let failed = self.failures.get(user).unwrap_or(0).saturating_add(1);
                    self.failures.insert(user.to_string(), failed);
                    crate::metrics::login_failed();
                }
                return Err(e);
            }
        };
        self.failures.invalidate(user);
        self.credentials.insert(credential, token.clone());
        Ok(token)
    }

    /// The SCRAM secret of `user`. An unknown user gets a made-up one, so the exchange
    /// fails at the proof like a wrong password does; a user with too many recent failed
    /// logins is refused before any exchange.
    pub async fn scram_secret(self: &Arc<Self>, user: &str) -> Result<ScramSecret, QuarryError> {
        if self.failures.get(user).unwrap_or(0) >= MAX_FAILED_LOGINS {
            return Err(unauthenticated(LOGIN_FAILED));
        }
        let auth = Arc::clone(self);
        let name = user.to_string();
        let record =
            blocking(move || auth.catalog().get_user(&name).map_err(catalog_error)).await?;
        let stored = record.and_then(|r| {
            let hash = unhex(&r.record.password_hash)?;
            Some(ScramSecret {
                salt: r.record.salt.into_bytes(),
                iterations: PBKDF2_ROUNDS,
                salted_password: hash,
            })
        });
        match stored {
            Some(secret) => Ok(secret),
            None => {
                let mut salt = [0u8; 16];
                let mut password = [0u8; 32];
                self.random
                    .fill(&mut salt)
                    .and_then(|_| self.random.fill(&mut password))
                    .map_err(|_| QuarryError::from(CoordinatorError::NoRandomness))?;
                Ok(ScramSecret {
                    salt: hex(&salt).into_bytes(),
                    iterations: PBKDF2_ROUNDS,
                    salted_password: password.to_vec(),
                })
            }
        }
    }

    /// Note how a login checked elsewhere (a SCRAM exchange) ended: failures count
    /// towards [`MAX_FAILED_LOGINS`] as failed password logins do.
    pub fn login_checked(&self, user: &str, succeeded: bool) {
        if succeeded {
            self.failures.invalidate(user);
        } else {
            let failed = self.failures.get(user).unwrap_or(0).saturating_add(1);
            self.failures.insert(user.to_string(), failed);
            crate::metrics::login_failed();
        }
    }

    /// Store a new token for `user` (blocking); returns it and its record.
    fn store_token(
        &self,
        user: &str,
        personal: Option<(String, String)>,
        lifetime: Duration,
    ) -> Result<(String, TokenRecord), QuarryError> {
        let token = self.random_hex(24)?;
        let now = now_ms();
        let (id, name) = match personal {
            Some((id, name)) => (Some(id), Some(name)),
            None => (None, None),
        };
        let record = TokenRecord {
            user: user.to_string(),
            expires_ms: now.saturating_add(lifetime.as_millis() as u64),
            id,
            name,
            created_ms: now,
        };
        let key = sha256_hex(&token);
        self.catalog()
            .put_token(&key, record.clone())
            .map_err(catalog_error)?;
        self.tokens.insert(
            key,
            CachedToken {
                user: user.to_string(),
                expires_ms: record.expires_ms,
            },
        );
        Ok((token, record))
    }

    /// The user a token belongs to.
    pub async fn verify(self: &Arc<Self>, token: &str) -> Result<String, QuarryError> {
        if !self.enabled() {
            return Ok(ANONYMOUS.to_string());
        }
        let key = sha256_hex(token);
        let cached = match self.tokens.get(&key) {
            Some(cached) => Some(cached),
            None => {
                let auth = Arc::clone(self);
                let lookup = key.clone();
                let stored =
                    blocking(move || auth.catalog().get_token(&lookup).map_err(catalog_error))
                        .await?;
                stored.map(|record| {
                    let cached = CachedToken {
                        user: record.user,
                        expires_ms: record.expires_ms,
                    };
                    self.tokens.insert(key.clone(), cached.clone());
                    cached
                })
            }
        };
        match cached {
            Some(c) if c.expires_ms >= now_ms() && self.control.user_exists(&c.user) => Ok(c.user),
            _ => Err(unauthenticated(TOKEN_REFUSED)),
        }
    }

    /// Forget a token everywhere.
    pub async fn revoke_token(self: &Arc<Self>, token_hash: String) -> Result<(), QuarryError> {
        self.tokens.invalidate(&token_hash);
        let auth = Arc::clone(self);
        blocking(move || {
            auth.catalog()
                .delete_token(&token_hash)
                .map_err(catalog_error)
        })
        .await
    }

    pub async fn logout(self: &Arc<Self>, token: &str) -> Result<(), QuarryError> {
        self.revoke_token(sha256_hex(token)).await
    }

    /// A personal access token for `user`, valid for `lifetime`; the token is shown once.
    pub async fn create_personal_token(
        self: &Arc<Self>,
        user: &str,
        name: &str,
        lifetime: Duration,
    ) -> Result<(String, PersonalToken), QuarryError> {
        if !self.enabled() {
            return Err(QuarryError::invalid(
                "personal access tokens need authentication on (--auth)",
            ));
        }
        let auth = Arc::clone(self);
        let (user, name) = (user.to_string(), name.to_string());
        blocking(move || {
            let id = auth.random_hex(8)?;
            let (token, record) =
                auth.store_token(&user, Some((id.clone(), name.clone())), lifetime)?;
            Ok((
                token,
                PersonalToken {
                    id,
                    user,
                    name,
                    created_ms: record.created_ms,
                    expires_ms: record.expires_ms,
                },
            ))
        })
        .await
    }

    /// Personal access tokens of `user`, or of everyone when None.
    pub async fn personal_tokens(
        self: &Arc<Self>,
        user: Option<String>,
    ) -> Result<Vec<(String, PersonalToken)>, QuarryError> {
        let auth = Arc::clone(self);
        blocking(move || {
            let tokens = auth.catalog().list_tokens().map_err(catalog_error)?;
            Ok(tokens
                .into_iter()
                .filter(|(_, t)| user.as_ref().is_none_or(|u| &t.user == u))
                .filter_map(|(key, t)| {
                    Some((
                        key,
                        PersonalToken {
                            id: t.id?,
                            user: t.user,
                            name: t.name.unwrap_or_default(),
                            created_ms: t.created_ms,
                            expires_ms: t.expires_ms,
                        },
                    ))
                })
                .collect())
        })
        .await
    }

    /// Revoke a personal access token by id; only its owner or an admin may.
    pub async fn revoke_personal_token(
        self: &Arc<Self>,
        id: &str,
        requester: &str,
        admin: bool,
    ) -> Result<(), QuarryError> {
        let owner = if admin {
            None
        } else {
            Some(requester.to_string())
        };
        let found = self
            .personal_tokens(owner)
            .await?
            .into_iter()
            .find(|(_, t)| t.id == id);
        match found {
            Some((key, _)) => self.revoke_token(key).await,
            None => Err(QuarryError::not_found(format!(
                "personal access token {id} does not exist"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
