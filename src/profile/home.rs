//! The home profile: open the model store, load and self-test the pools
//! named in the config, start the control side over them, and serve the
//! API until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::{client_api_token, guard_client_api, serve_api, ApiServing, ProfileError};
use crate::api::{self, AppState};
use crate::backend::cpu::Isa;
use crate::config::{Config, PoolConfig};
use crate::control::{Control, ControlSettings, ModelCatalog, ModelLookup};
use crate::net::auth::ApiToken;
use crate::net::tls;
use crate::store::{Catalog, ModelState};
use crate::telemetry::systemd::Notifier;
use crate::transport::local::{LocalPool, ModelSource, ResolvedModel};
use crate::transport::{ErrorCode, PoolClient, TransportError};
use crate::worker::{Pool, PoolSpec};

/// The node id of a home profile, unless `cloud.node_id` names one.
pub const LOCAL_NODE_ID: &str = "local";

/// Knobs the binary and tests set besides the config.
#[derive(Clone, Default)]
pub struct HomeOptions {
    /// Renders `/metrics`; `None` serves 404 there.
    pub metrics: Option<PrometheusHandle>,
    /// SIMD level for every pool; `None` detects the best.
    pub isa: Option<Isa>,
    /// Told READY=1 once the pools are Ready and the API listens.
    pub notifier: Option<Notifier>,
    /// The bearer token (required when the API listens beyond loopback).
    pub token: Option<Arc<ApiToken>>,
}

/// A started home profile.
pub struct Home {
    pub control: Arc<Control>,
    pub pools: Vec<Arc<LocalPool>>,
    pub catalog: Arc<Catalog>,
    pub state: AppState,
    config: Config,
    notifier: Option<Notifier>,
    gauges: Option<tokio::task::JoinHandle<()>>,
    /// Set when the client API must require the token.
    client_token: Option<Arc<ApiToken>>,
}

/// The catalog as pools and admission see it.
pub(crate) struct CatalogSource(pub(crate) Arc<Catalog>);

impl ModelSource for CatalogSource {
    fn resolve(&self, model_id: &str) -> Result<ResolvedModel, TransportError> {
        let entry = self
            .0
            .get(model_id)
            .map_err(|e| TransportError::new(ErrorCode::Internal, e.to_string()))?
            .ok_or_else(|| {
                TransportError::new(
                    ErrorCode::ModelNotFound,
                    format!("model {model_id:?} is not in the catalog"),
                )
            })?;
        if entry.state != ModelState::Active {
            return Err(TransportError::new(
                ErrorCode::ModelNotFound,
                format!("model {model_id:?} is retired"),
            ));
        }
        Ok(ResolvedModel {
            path: self.0.model_path(&entry),
            sha256: entry.sha256,
        })
    }
}

impl ModelCatalog for CatalogSource {
    fn lookup(&self, model_id: &str) -> ModelLookup {
        match self.0.get(model_id) {
            Ok(Some(e)) if e.state == ModelState::Active => ModelLookup::Active,
            Ok(Some(_)) => ModelLookup::Retired,
            Ok(None) => ModelLookup::Unknown,
            // A store read error must not turn into "unknown model".
            Err(e) => {
                warn!(error = %e, "catalog lookup failed");
                ModelLookup::Active
            }
        }
    }
}

fn pool_spec(
    cfg: &Config,
    p: &PoolConfig,
    resolved: ResolvedModel,
    isa: Isa,
) -> Result<PoolSpec, ProfileError> {
    if p.device != "cpu" {
        return Err(ProfileError::Device {
            pool: p.id.clone(),
            device: p.device.clone(),
        });
    }
    let threads = match (p.threads, cfg.engine.threads) {
        (0, 0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        (0, t) => t,
        (t, _) => t,
    };
    Ok(PoolSpec {
        id: p.id.clone(),
        model_id: p.model.clone(),
        model_path: resolved.path,
        model_digest: resolved.sha256,
        slots: p.slots,
        ctx: p.ctx,
        prefill_chunk: p.prefill_chunk,
        threads,
        isa,
    })
}

/// Load and self-test every pool of the config (in parallel); they are
/// Ready when this returns. Shared by the home profile and cloud workers.
pub(crate) async fn load_pools(
    cfg: &Config,
    catalog: &Arc<Catalog>,
    source: Arc<CatalogSource>,
    node_id: &str,
    isa: Isa,
) -> Result<Vec<Arc<LocalPool>>, ProfileError> {
    let mut loading = Vec::new();
    for p in &cfg.pools {
        let resolved = match catalog.get(&p.model)? {
            None => {
                return Err(ProfileError::ModelNotStaged {
                    pool: p.id.clone(),
                    model: p.model.clone(),
                })
            }
            Some(e) if e.state != ModelState::Active => {
                return Err(ProfileError::ModelRetired {
                    pool: p.id.clone(),
                    model: p.model.clone(),
                })
            }
            Some(e) => ResolvedModel {
                path: catalog.model_path(&e),
                sha256: e.sha256,
            },
        };
        let spec = pool_spec(cfg, p, resolved, isa)?;
        let id = p.id.clone();
        loading.push((id, tokio::task::spawn_blocking(move || Pool::start(spec))));
    }
    let mut pools = Vec::new();
    for (id, h) in loading {
        let pool = h
            .await
            .map_err(|e| ProfileError::Runtime(e.to_string()))?
            .map_err(|source| ProfileError::Pool {
                pool: id.clone(),
                source: Box::new(source),
            })?;
        info!(pool_id = %id, human = %format!("pool {id} is Ready"), "pool ready");
        pools.push(Arc::new(LocalPool::new(pool, node_id, source.clone())));
    }
    Ok(pools)
}

impl Home {
    /// Open the store, load every pool (in parallel) and start the control
    /// side. Pools are Ready when this returns.
    pub async fn start(cfg: Config, opts: HomeOptions) -> Result<Home, ProfileError> {
        let t0 = Instant::now();
        let client_token = client_api_token(&cfg, opts.token.as_ref())?;
        let dir = cfg.store.dir.clone();
        let catalog = Arc::new(
            tokio::task::spawn_blocking(move || Catalog::open(&dir))
                .await
                .map_err(|e| ProfileError::Runtime(e.to_string()))??,
        );
        let source = Arc::new(CatalogSource(catalog.clone()));
        let node_id = cfg
            .cloud
            .node_id
            .clone()
            .unwrap_or_else(|| LOCAL_NODE_ID.to_string());
        let isa = opts.isa.unwrap_or_else(Isa::detect);
        let pools = load_pools(&cfg, &catalog, source.clone(), &node_id, isa).await?;

        let settings = ControlSettings {
            admission: cfg.admission.clone(),
            sessions: cfg.sessions.clone(),
            task_retention: Duration::from_secs(cfg.admission.task_retention_secs),
            max_retained_tasks: cfg.admission.max_retained_tasks,
            ..ControlSettings::default()
        };
        let clients: Vec<Arc<dyn PoolClient>> = pools
            .iter()
            .map(|p| p.clone() as Arc<dyn PoolClient>)
            .collect();
        let control = Control::start(settings, clients, Some(source)).await;

        let gauges = {
            let pools = pools.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    for p in &pools {
                        p.record_gauges();
                    }
                }
            })
        };
        let state = AppState {
            control: control.clone(),
            catalog: Some(catalog.clone()),
            metrics: opts.metrics.clone(),
            max_body_bytes: cfg.server.max_body_bytes,
            node_id: node_id.into(),
            started: t0,
            nodes: None,
        };
        info!(
            pools = pools.len(),
            human = %format!("{} pool(s) Ready in {} ms", pools.len(), t0.elapsed().as_millis()),
            "home profile started"
        );
        Ok(Home {
            control,
            pools,
            catalog,
            state,
            config: cfg,
            notifier: opts.notifier,
            gauges: Some(gauges),
            client_token,
        })
    }

    /// Serve the API on `listener` (and `/metrics` on `metrics_listener`)
    /// until `shutdown` resolves; then stop admitting, let in-flight tasks
    /// finish within `server.shutdown_grace_ms`, cancel the rest, stop the
    /// pools and return.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProfileError> {
        let serving = ApiServing {
            router: guard_client_api(api::router(self.state.clone()), self.client_token.clone()),
            metrics_router: api::metrics_router(self.state.clone()),
            tls: tls::server_config(&self.config.tls)?,
            grace: Duration::from_millis(self.config.server.shutdown_grace_ms),
            control: self.control.clone(),
            notifier: self.notifier.clone(),
        };
        // The pools stop even when the server failed.
        let result = serve_api(serving, listener, metrics_listener, shutdown).await;
        self.shutdown().await;
        result
    }

    /// Stop the control side and the pools (waits for the engine threads).
    pub async fn shutdown(&mut self) {
        if let Some(g) = self.gauges.take() {
            g.abort();
        }
        self.control.stop();
        let pools: Vec<_> = self.pools.iter().map(|p| p.pool().clone()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for p in pools {
                p.stop();
            }
        })
        .await;
        info!(human = "stopped", "shutdown complete");
    }
}
