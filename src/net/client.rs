//! The HTTP client llorchd processes use to talk to each other: reqwest
//! over rustls (ring), with the pure-Rust resolver, no proxy from the
//! environment, and timeouts that notice a dead peer.

use std::sync::Arc;
use std::time::Duration;

use crate::config::TlsConfig;

use super::dns::HickoryDns;
use super::tls::{self, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("building the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// How long to wait for a peer.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// Longest silence while reading a response (a stream's keep-alives
    /// arrive more often than this).
    pub read_idle: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            connect: Duration::from_secs(5),
            read_idle: Duration::from_secs(30),
        }
    }
}

/// A client that trusts `tls.ca` (or the Mozilla roots) for `https://`
/// peers and presents `tls.cert`/`tls.key` when a peer asks for a client
/// certificate. Plain `http://` works as well.
pub fn build_client(
    tls_cfg: &TlsConfig,
    dns: HickoryDns,
    timeouts: ClientTimeouts,
) -> Result<reqwest::Client, ClientError> {
    let tls = tls::client_config(tls_cfg)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .dns_resolver(Arc::new(dns))
        // Proxy settings would come from the environment, deep in a
        // library; node-to-node traffic goes direct.
        .no_proxy()
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read_idle)
        .tcp_keepalive(Duration::from_secs(15))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("llorchd/", env!("CARGO_PKG_VERSION")))
        .build()?)
}
