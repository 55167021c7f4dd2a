//! A cloud control plane: no model is loaded here. It keeps the node
//! registry (persisted in the store's redb, restored stale on start),
//! serves the node endpoints (bearer token always) and the same client API
//! as the home profile, whose pools are one cluster pool per model that
//! some worker serves.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::info;

use super::{client_api_token, guard_client_api, serve_api, ApiServing, ProfileError};
use crate::api::nodes::node_routes;
use crate::api::{self, AppState};
use crate::config::Config;
use crate::control::cluster::{ClusterPool, WorkerAccess};
use crate::control::node_registry::SystemClock;
use crate::control::nodes::NodeService;
use crate::control::{Control, ControlSettings};
use crate::net::auth::{ApiToken, AuthError};
use crate::net::client::{build_client, ClientTimeouts};
use crate::net::dns::HickoryDns;
use crate::net::tls;
use crate::store::Catalog;
use crate::telemetry::systemd::Notifier;
use crate::transport::PoolClient;

#[derive(Clone, Default)]
pub struct ControlOptions {
    pub metrics: Option<PrometheusHandle>,
    pub notifier: Option<Notifier>,
    /// Required: workers and this control plane authenticate each other
    /// with it.
    pub token: Option<Arc<ApiToken>>,
}

/// A started control plane.
pub struct ControlPlane {
    pub control: Arc<Control>,
    pub nodes: Arc<NodeService>,
    pub state: AppState,
    token: Arc<ApiToken>,
    client_token: Option<Arc<ApiToken>>,
    config: Config,
    notifier: Option<Notifier>,
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Keeps the store (and its redb lock) open for the registry.
    _catalog: Arc<Catalog>,
}

/// How often the registry is swept and written: a fraction of the node
/// timeout, so a silent node goes offline within timeout + one period.
fn upkeep_period(timeout_ms: u64) -> Duration {
    Duration::from_millis((timeout_ms / 10).clamp(20, 1000))
}

impl ControlPlane {
    pub async fn start(cfg: Config, opts: ControlOptions) -> Result<ControlPlane, ProfileError> {
        let t0 = Instant::now();
        let token = opts.token.clone().ok_or_else(|| AuthError::Missing {
            what: "a cloud control plane".into(),
        })?;
        let client_token = client_api_token(&cfg, Some(&token))?;
        let dir = cfg.store.dir.clone();
        let catalog = Arc::new(
            tokio::task::spawn_blocking(move || Catalog::open(&dir))
                .await
                .map_err(|e| ProfileError::Runtime(e.to_string()))??,
        );
        let nodes = NodeService::open(
            Some(catalog.node_store()),
            cfg.cloud.node_timeout_ms,
            Arc::new(SystemClock::default()),
        )?;
        let known = nodes.read(|r, _| r.len());
        let upkeep = nodes.spawn_upkeep(upkeep_period(cfg.cloud.node_timeout_ms));
        // A dispatch stream silent for as long as a heartbeat may be is a
        // lost worker (workers send keepalives far more often).
        let client = build_client(
            &cfg.tls,
            HickoryDns::from_system(),
            ClientTimeouts {
                connect: Duration::from_millis(cfg.cloud.node_timeout_ms.clamp(500, 5000)),
                read_idle: Duration::from_millis(cfg.cloud.node_timeout_ms.max(2000)),
            },
        )?;
        let access = WorkerAccess {
            client,
            token: Some(token.clone()),
        };
        let settings = ControlSettings {
            admission: cfg.admission.clone(),
            sessions: cfg.sessions.clone(),
            task_retention: Duration::from_secs(cfg.admission.task_retention_secs),
            max_retained_tasks: cfg.admission.max_retained_tasks,
            pools_span_nodes: true,
            ..ControlSettings::default()
        };
        let attempts = cfg.cloud.dispatch_attempts;
        let cluster = |model: &str| -> Arc<dyn PoolClient> {
            Arc::new(ClusterPool::new(
                model,
                nodes.clone(),
                access.clone(),
                attempts,
            ))
        };
        let initial: Vec<String> = nodes.read(|r, _| r.served_models());
        let control = Control::start(
            settings,
            initial.iter().map(|m| cluster(m)).collect(),
            Some(nodes.clone()),
        )
        .await;
        // A cluster pool for every model a node starts serving; every
        // pool's status refreshed at once when availability changes (not
        // only at the next health check), so a node that just came online
        // takes tasks right away.
        let watcher = {
            let control = Arc::downgrade(&control);
            let nodes = nodes.clone();
            let mut rx = nodes.watch_topology();
            let mut have: HashSet<String> = initial.into_iter().collect();
            tokio::spawn(async move {
                loop {
                    rx.borrow_and_update();
                    let served = nodes.read(|r, _| r.served_models());
                    let Some(ctl) = control.upgrade() else { return };
                    for m in served {
                        if have.insert(m.clone()) {
                            info!(model_id = %m, human = %format!("a node serves {m}: adding its cluster pool"), "cluster pool added");
                            ctl.add_pool(Arc::new(ClusterPool::new(
                                &m,
                                nodes.clone(),
                                access.clone(),
                                attempts,
                            )))
                            .await;
                        }
                    }
                    ctl.health_check_all().await;
                    drop(ctl);
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
        };
        let state = AppState {
            control: control.clone(),
            catalog: None,
            metrics: opts.metrics.clone(),
            max_body_bytes: cfg.server.max_body_bytes,
            node_id: "control".into(),
            started: t0,
            nodes: Some(nodes.clone()),
        };
        info!(
            nodes = known,
            token_fingerprint = %token.fingerprint(),
            human = %format!("control plane started with {known} known node(s)"),
            "control plane started"
        );
        Ok(ControlPlane {
            control,
            nodes,
            state,
            token,
            client_token,
            config: cfg,
            notifier: opts.notifier,
            background: vec![upkeep, watcher],
            _catalog: catalog,
        })
    }

    /// Serve the client API and the node endpoints until `shutdown`.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProfileError> {
        let client_api =
            guard_client_api(api::router(self.state.clone()), self.client_token.clone());
        let router = node_routes(self.nodes.clone(), self.token.clone()).merge(client_api);
        let serving = ApiServing {
            router,
            metrics_router: api::metrics_router(self.state.clone()),
            tls: tls::server_config(&self.config.tls)?,
            grace: Duration::from_millis(self.config.server.shutdown_grace_ms),
            control: self.control.clone(),
            notifier: self.notifier.clone(),
        };
        serve_api(serving, listener, metrics_listener, shutdown).await?;
        self.shutdown().await;
        Ok(())
    }

    /// Write what the registry holds and stop the background work.
    pub async fn shutdown(&mut self) {
        for h in self.background.drain(..) {
            h.abort();
        }
        self.control.stop();
        if let Err(e) = self.nodes.flush().await {
            tracing::error!(error = %e, "could not write the node registry at shutdown");
        }
        info!(human = "stopped", "shutdown complete");
    }
}
