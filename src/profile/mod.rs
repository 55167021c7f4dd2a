//! Wiring a process from its `Config`: which parts run, and how they are
//! connected.
//!
//! - `home`: the control side and in-process pools in one process, talking
//!   through `transport::LocalPool`.
//! - `control`: a cloud control plane: the node registry, one cluster pool
//!   per model served by the workers, the same client API as at home.
//! - `worker`: a cloud worker: pools, the dispatch endpoints, and the agent
//!   that registers with the control planes.
//!
//! The client API is served the same way by home and control planes
//! ([`serve_api`]): TLS when configured, the bearer token when it listens
//! beyond loopback, a graceful shutdown that lets in-flight tasks finish.

pub mod control;
pub mod home;
pub mod worker;

pub use control::{ControlOptions, ControlPlane};
pub use home::{Home, HomeOptions};
pub use worker::{Worker, WorkerOptions};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::control::Control;
use crate::net::auth::{self, ApiToken, AuthError};
use crate::net::client::ClientError;
use crate::net::tls::TlsError;
use crate::store::StoreError;
use crate::telemetry::systemd::Notifier;
use crate::worker::PoolError;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("model store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "pool {pool}: model {model:?} is not in the catalog (stage it with `llorchd models stage`)"
    )]
    ModelNotStaged { pool: String, model: String },
    #[error(
        "pool {pool}: model {model:?} is retired (activate it with `llorchd models activate`)"
    )]
    ModelRetired { pool: String, model: String },
    #[error("pool {pool}: {source}")]
    Pool {
        pool: String,
        /// Boxed: a pool error is large and this path is rare.
        source: Box<PoolError>,
    },
    #[error("pool {pool}: device {device:?} is not available in this build (cpu only)")]
    Device { pool: String, device: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Runtime(String),
}

/// The token the client API must require, if it must: when it listens
/// beyond loopback, or `auth.require_on_loopback` says so. Then a token is
/// mandatory.
pub(crate) fn client_api_token(
    cfg: &Config,
    token: Option<&Arc<ApiToken>>,
) -> Result<Option<Arc<ApiToken>>, ProfileError> {
    if !auth::client_api_needs_token(cfg.server.bind, cfg.auth.require_on_loopback) {
        return Ok(None);
    }
    match token {
        Some(t) => Ok(Some(t.clone())),
        None => Err(AuthError::Missing {
            what: format!("the client API on {}", cfg.server.bind),
        }
        .into()),
    }
}

/// `router` behind the bearer token when `token` is set (probes stay open).
pub(crate) fn guard_client_api(router: Router, token: Option<Arc<ApiToken>>) -> Router {
    match token {
        Some(t) => router.layer(axum::middleware::from_fn_with_state(
            t,
            auth::require_bearer_except_probes,
        )),
        None => router,
    }
}

/// How a control side serves its API.
pub(crate) struct ApiServing {
    /// The client API, guarded as it must be.
    pub router: Router,
    /// Served without a token on `server.metrics_bind`.
    pub metrics_router: Router,
    pub tls: Option<Arc<ServerConfig>>,
    pub grace: Duration,
    pub control: Arc<Control>,
    pub notifier: Option<Notifier>,
}

/// Serve the API on `listener` (and the metrics router on
/// `metrics_listener`) until `shutdown` resolves; then stop admitting, let
/// in-flight tasks finish within the grace, cancel the rest, and return
/// once the HTTP server has closed.
pub(crate) async fn serve_api(
    s: ApiServing,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProfileError> {
    let addr = listener.local_addr()?;
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    let control = s.control.clone();
    let notifier = s.notifier.clone();
    let grace = s.grace;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // On the signal: refuse new tasks, give the running ones their grace,
    // then let the HTTP server close.
    let drain = async move {
        shutdown.await;
        info!(
            human = "shutting down: no new tasks; finishing in-flight work",
            "shutdown started"
        );
        if let Some(n) = &notifier {
            let _ = n.notify_stopping();
        }
        control.begin_shutdown();
        let cut = control.finish_in_flight(grace).await;
        if cut > 0 {
            warn!(tasks = cut, human = %format!("{cut} task(s) canceled at the end of the shutdown grace"), "tasks cut short");
        }
        let _ = stop_tx.send(true);
    };
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics_server = metrics_listener.map(|l| {
        tokio::spawn(crate::net::server::serve(
            l,
            s.metrics_router,
            None,
            stopped(stop_rx.clone()),
            Duration::from_secs(1),
        ))
    });
    if let Some(n) = &s.notifier {
        let ready = s
            .control
            .pool_views()
            .iter()
            .filter(|v| v.accepting)
            .count();
        let _ = n.notify_status(&format!("serving on {addr}; {ready} pool(s) ready"));
        if let Err(e) = n.notify_ready() {
            warn!(error = %e, "could not notify systemd");
        }
    }
    info!(addr = %addr, human = %format!("listening on {scheme}://{addr}"), "listening");
    // Streams of ended tasks close on their own; do not wait forever for a
    // client that keeps a connection open.
    let server = crate::net::server::serve(
        listener,
        s.router,
        s.tls,
        stopped(stop_rx),
        Duration::from_secs(5),
    );
    let (left, ()) = tokio::join!(server, drain);
    if left > 0 {
        warn!(
            connections = left,
            "connections still open after shutdown; closed"
        );
    }
    if let Some(m) = metrics_server {
        m.abort();
    }
    Ok(())
}
