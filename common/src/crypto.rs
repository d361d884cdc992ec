//! The TLS crypto provider of every Quarry process. rustls picks one by itself only when
//! exactly one is compiled in; deltalake-core's HTTP client brings aws-lc-rs next to our
//! ring, so each process names ring once, before any TLS client or server is built.

/// Make ring the process's TLS provider; later calls (and tests that start several
/// servers in one process) change nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
