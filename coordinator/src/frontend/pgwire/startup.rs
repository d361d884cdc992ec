//! Logging in over the PostgreSQL protocol.
//!
//! With authentication on, a user logs in with SCRAM-SHA-256 (what psql, libpq and every
//! driver speak by default): the password never crosses the wire, and the proof is checked
//! against the user's stored hash (see `access::auth::ScramSecret`). A personal access token
//! is a password the server can only check in clear, so it is sent as the password of the
//! user `token` and accepted only over TLS or from loopback. Failed logins count towards the
//! same lockout as failed REST and Flight SQL logins. With authentication off every client
//! is let in as the anonymous user, as on the other doors.

use std::fmt::Debug;
use std::net::IpAddr;

use futures::{Sink, SinkExt};
use pgwire::api::auth::sasl::scram::{ScramServerAuth, ScramServerAuthWaitingForClientFinal};
use pgwire::api::auth::{
    DefaultServerParameterProvider, Password, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, METADATA_DATABASE, METADATA_USER, PgWireConnectionState};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use quarry_common::ErrorCode;

use super::encode::fatal;
use super::{Connection, lock};
use crate::service::SERVER_VERSION;
use crate::service::{Credentials, Frontend, Principal};

/// The user name under which the password is a personal access token.
pub(crate) const TOKEN_USER: &str = "token";
const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Where a connection's login stands.
pub(crate) enum Login {
    Initial,
    /// Waiting for a token as a cleartext password.
    Token,
    /// Waiting for SCRAM's client-first message.
    ScramFirst,
    /// Waiting for SCRAM's client-final message.
    ScramFinal(Box<ScramServerAuthWaitingForClientFinal>),
    Done,
}

fn login_failed(user: &str) -> PgWireError {
    fatal(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    )
}

#[async_trait::async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut login = self.login.lock().await;
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                if !matches!(*login, Login::Initial) {
                    return Err(fatal("08P01", "a second startup message"));
                }
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let user = user_of(client)?;
                if !self.service.auth_enabled() {
                    *login = Login::Done;
                    let principal = self
                        .service
                        .authenticate(Credentials::None)
                        .await
                        .map_err(|e| fatal("28000", e.message))?;
                    return self.open(client, principal).await;
                }
                if user == TOKEN_USER {
                    if !client.is_secure() && !is_loopback(client.socket_addr().ip()) {
                        return Err(fatal(
                            "28000",
                            "a token is sent in clear: connect with TLS (sslmode=require)",
                        ));
                    }
                    *login = Login::Token;
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                } else {
                    *login = Login::ScramFirst;
                    client
                        .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                            vec![SCRAM_SHA_256.to_string()],
                        )))
                        .await?;
                }
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let user = user_of(client)?;
                match std::mem::replace(&mut *login, Login::Done) {
                    Login::Token => {
                        let token = message.into_password()?.password;
                        let principal = self
                            .service
                            .authenticate(Credentials::Bearer(token))
                            .await
                            .map_err(|e| match e.code {
                                ErrorCode::Unauthenticated => login_failed(&user),
                                _ => fatal("28000", e.message),
                            })?;
                        self.open(client, principal).await
                    }
                    Login::ScramFirst => {
                        let initial = message.into_sasl_initial_response()?;
                        if initial.auth_method != SCRAM_SHA_256 {
                            return Err(PgWireError::UnsupportedSASLAuthMethod(
                                initial.auth_method,
                            ));
                        }
                        let first = initial.data.ok_or_else(|| {
                            PgWireError::InvalidScramMessage("empty client-first".to_string())
                        })?;
                        let secret = self
                            .service
                            .scram_secret(&user)
                            .await
                            .map_err(|_| login_failed(&user))?;
                        let mut server = ScramServerAuth::new();
                        server.set_iterations(secret.iterations as usize);
                        let (server_first, waiting) = server.on_client_first_message(
                            &first,
                            Password::new(Some(secret.salt), secret.salted_password),
                        )?;
                        *login = Login::ScramFinal(Box::new(waiting));
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into()),
                            ))
                            .await?;
                        Ok(())
                    }
                    Login::ScramFinal(waiting) => {
                        let response = message.into_sasl_response()?;
                        let verified = waiting.on_client_final_message(&response.data);
                        let principal = self
                            .service
                            .scram_finished(&user, verified.is_ok())
                            .ok_or_else(|| login_failed(&user))?;
                        let server_final = verified.map_err(|_| login_failed(&user))?;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(server_final.into()),
                            ))
                            .await?;
                        self.open(client, principal).await
                    }
                    Login::Initial | Login::Done => Err(PgWireError::InvalidSASLState),
                }
            }
            _ => Ok(()),
        }
    }
}

fn user_of<C: ClientInfo>(client: &C) -> PgWireResult<String> {
    client
        .metadata()
        .get(METADATA_USER)
        .filter(|u| !u.is_empty())
        .cloned()
        .ok_or(PgWireError::UserNameRequired)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl Connection {
    /// Logged in: open the session, hand out the backend key and tell the client the
    /// server's settings.
    async fn open<C>(&self, client: &mut C, principal: Principal) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.service.session(&principal, false, Frontend::PgWire);
        // A database named like a schema makes it the default schema (`psql -d demo`);
        // any other name is Quarry's one catalog.
        if let Some(database) = client.metadata().get(METADATA_DATABASE).cloned()
            && self.service.schema_names(&session).contains(&database)
        {
            let _ = self.service.use_schema(&session, &database);
        }
        let admin = self.service.access(&session).admin;
        let search_path = self.service.default_schema(&session);
        *lock(&self.session) = Some(session);
        let (pid, key) = self.backends.register(client, &self.running);
        *lock(&self.pid) = Some(pid);
        client.set_pid_and_secret_key(pid, key);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        parameters.search_path = search_path;
        parameters.is_superuser = admin;
        parameters.date_style = "ISO, MDY".to_string();
        finish_authentication(client, &parameters).await
    }
}
