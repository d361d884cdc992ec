//! TLS for the user-facing listeners (Flight SQL and HTTP), with rustls on ring.
//!
//! Flight SQL uses tonic's own TLS (`ServerTlsConfig`). For HTTP, [`TlsListener`] is an
//! axum `Listener` whose handshakes run in tasks of their own (with a deadline), so one
//! slow or silent client never holds up the next connection; a client that speaks
//! plaintext to it fails its handshake and is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quarry_common::QuarryError;
use quarry_common::connections::{Counted, LimitedListener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::CoordinatorError;

/// A client has this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a listener's certificate chain and private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, QuarryError> {
    std::fs::read(path).map_err(|e| {
        QuarryError::invalid(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })
}

impl TlsFiles {
    /// The certificate and key as tonic takes them, checked to parse.
    pub fn tonic_config(&self) -> Result<tonic::transport::ServerTlsConfig, QuarryError> {
        // Parse once here so a bad file is reported at start, by name.
        self.rustls_config(Vec::new())?;
        let identity = tonic::transport::Identity::from_pem(
            read(&self.cert, "certificate")?,
            read(&self.key, "key")?,
        );
        Ok(tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT))
    }

    /// A rustls server configuration offering `alpn` protocols.
    pub fn rustls_config(
        &self,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<rustls::ServerConfig>, QuarryError> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&self.cert, "certificate")?)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    QuarryError::invalid(format!(
                        "the TLS certificate {} is not PEM: {e}",
                        self.cert.display()
                    ))
                })?;
        if certs.is_empty() {
            return Err(QuarryError::invalid(format!(
                "the TLS certificate file {} holds no certificate",
                self.cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "key")?).map_err(|e| {
            QuarryError::invalid(format!(
                "the TLS key {} is not a PEM private key: {e}",
                self.key.display()
            ))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                QuarryError::from(CoordinatorError::Tls(format!("protocol versions: {e}")))
            })?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                QuarryError::invalid(format!("the TLS certificate and key do not fit: {e}"))
            })?;
        config.alpn_protocols = alpn;
        Ok(Arc::new(config))
    }
}

/// Accepts TCP connections and hands on those whose TLS handshake succeeded.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<Counted<TcpStream>>, SocketAddr)>,
    /// The accept loop; stopped when the listener is dropped.
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl TlsListener {
    pub fn new(
        listener: LimitedListener,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<Self, QuarryError> {
        let local = listener.local_addr().map_err(|source| {
            QuarryError::from(CoordinatorError::Listener {
                what: "TLS",
                source,
            })
        })?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        // The listener owns its accept loop (aborted when it drops), and every handshake
        // ends within HANDSHAKE_TIMEOUT.
        #[allow(clippy::disallowed_methods)]
        let accepting = tokio::spawn(async move {
            loop {
                // Within the cap on open connections; failures to accept are waited out.
                let (tcp, peer) = listener.accept().await;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            acceptor: accepting,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Counted<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
