//! A cloud worker: open the model store, load and self-test its pools,
//! serve the dispatch endpoints (bearer token always), and register with
//! every control plane through the agent.
//!
//! On shutdown (SIGTERM): the pools stop taking new tasks and the control
//! planes hear at once that the node is draining; running tasks get
//! `server.shutdown_grace_ms` to finish; then the worker deregisters and
//! stops.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::home::{load_pools, CatalogSource, LOCAL_NODE_ID};
use super::{guard_client_api, ProfileError};
use crate::api::nodes_wire::{GpuWire, PoolWire, ReportWire, StagedModelWire};
use crate::api::worker::{worker_routes, WorkerApi};
use crate::backend::cpu::Isa;
use crate::config::Config;
use crate::net::auth::{self, ApiToken, AuthError};
use crate::net::client::{build_client, ClientTimeouts};
use crate::net::dns::HickoryDns;
use crate::net::tls;
use crate::store::Catalog;
use crate::telemetry::systemd::Notifier;
use crate::transport::local::LocalPool;
use crate::transport::{PoolClient, PoolState};
use crate::worker::agent::{Agent, AgentSettings, NodeReporter};

/// A keepalive line goes out on a silent dispatch stream this often.
const KEEPALIVE: Duration = Duration::from_millis(500);

#[derive(Clone, Default)]
pub struct WorkerOptions {
    pub metrics: Option<PrometheusHandle>,
    pub isa: Option<Isa>,
    pub notifier: Option<Notifier>,
    /// Required: control planes and this worker authenticate each other
    /// with it.
    pub token: Option<Arc<ApiToken>>,
}

/// A started worker.
pub struct Worker {
    pub pools: Vec<Arc<LocalPool>>,
    pub catalog: Arc<Catalog>,
    node_id: String,
    token: Arc<ApiToken>,
    config: Config,
    notifier: Option<Notifier>,
    metrics: Option<PrometheusHandle>,
    reporter: Arc<PoolsReporter>,
    gauges: Option<tokio::task::JoinHandle<()>>,
}

/// What the agent reports: the pools' live status, the staged models, the
/// devices (the CPU, with no VRAM, in this build).
struct PoolsReporter {
    pools: Vec<Arc<LocalPool>>,
    catalog: Arc<Catalog>,
    draining: AtomicBool,
}

impl NodeReporter for PoolsReporter {
    fn report(&self) -> ReportWire {
        let pools = self
            .pools
            .iter()
            .filter_map(|p| p.status().now_or_never().and_then(Result::ok))
            .map(|s| PoolWire {
                pool_id: s.pool_id,
                model_id: s.model_id,
                model_digest: s.model_digest,
                state: s.state.as_str().to_string(),
                ctx: s.ctx as u64,
                slots_total: s.slots_total as u64,
                slots_busy: s.slots_busy as u64,
                queue_depth: s.waiting as u64,
                device: s.device,
                vram_total_bytes: s.vram_total_bytes,
                vram_free_bytes: s.vram_free_bytes,
                decode_step_ms: s.decode_step_ms,
                prefill_tps: s.prefill_tps,
            })
            .collect();
        let models = self
            .catalog
            .list()
            .map(|l| {
                l.into_iter()
                    .map(|e| StagedModelWire {
                        model_id: e.id,
                        sha256: e.sha256,
                        bytes: e.bytes,
                        state: e.state.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        ReportWire {
            gpus: vec![GpuWire {
                device: "cpu".into(),
                name: "cpu".into(),
                vram_total_bytes: 0,
                vram_free_bytes: 0,
            }],
            pools,
            models,
            draining: self.draining.load(Ordering::Acquire),
        }
    }
}

#[derive(Clone)]
struct OpsState {
    pools: Vec<Arc<LocalPool>>,
    metrics: Option<PrometheusHandle>,
    started: Instant,
    draining: Arc<PoolsReporter>,
}

async fn healthz(State(s): State<OpsState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "uptime_ms": s.started.elapsed().as_millis() as u64}))
}

async fn readyz(State(s): State<OpsState>) -> Response {
    let mut ready = 0;
    for p in &s.pools {
        if p.status()
            .await
            .is_ok_and(|st| st.state == PoolState::Ready)
        {
            ready += 1;
        }
    }
    if ready > 0 && !s.draining.draining.load(Ordering::Acquire) {
        Json(serde_json::json!({"status": "ready", "pools_ready": ready})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"code": "POOL_UNREADY", "message": "no pool is Ready", "retriable": true})),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<OpsState>) -> Response {
    match &s.metrics {
        Some(h) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn ops_routes(s: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(s)
}

/// The URL control planes reach this worker at.
fn advertise_url(cfg: &Config, bound: std::net::SocketAddr, tls: bool) -> String {
    if let Some(u) = &cfg.cloud.advertise_url {
        return u.trim_end_matches('/').to_string();
    }
    let scheme = if tls { "https" } else { "http" };
    if bound.ip().is_unspecified() {
        let host = nix_hostname().unwrap_or_else(|| "localhost".into());
        return format!("{scheme}://{host}:{}", bound.port());
    }
    format!("{scheme}://{bound}")
}

fn nix_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let s = std::str::from_utf8(&buf[..end]).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

impl Worker {
    /// Open the store and load every pool; they are Ready when this returns.
    pub async fn start(cfg: Config, opts: WorkerOptions) -> Result<Worker, ProfileError> {
        let t0 = Instant::now();
        let token = opts.token.clone().ok_or_else(|| AuthError::Missing {
            what: "a cloud worker".into(),
        })?;
        let dir = cfg.store.dir.clone();
        let catalog = Arc::new(
            tokio::task::spawn_blocking(move || Catalog::open(&dir))
                .await
                .map_err(|e| ProfileError::Runtime(e.to_string()))??,
        );
        let node_id = cfg
            .cloud
            .node_id
            .clone()
            .unwrap_or_else(|| LOCAL_NODE_ID.to_string());
        let isa = opts.isa.unwrap_or_else(Isa::detect);
        let source = Arc::new(CatalogSource(catalog.clone()));
        let pools = load_pools(&cfg, &catalog, source, &node_id, isa).await?;
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
        info!(
            node_id = %node_id,
            pools = pools.len(),
            human = %format!("worker {node_id}: {} pool(s) Ready in {} ms", pools.len(), t0.elapsed().as_millis()),
            "worker started"
        );
        let reporter = Arc::new(PoolsReporter {
            pools: pools.clone(),
            catalog: catalog.clone(),
            draining: AtomicBool::new(false),
        });
        Ok(Worker {
            pools,
            catalog,
            node_id,
            token,
            config: cfg,
            notifier: opts.notifier,
            metrics: opts.metrics,
            reporter,
            gauges: Some(gauges),
        })
    }

    /// Serve the dispatch endpoints on `listener`, register with the
    /// control planes, and run until `shutdown` resolves; then drain,
    /// deregister and stop.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProfileError> {
        let cfg = &self.config;
        let server_tls = tls::server_config(&cfg.tls)?;
        let bound = listener.local_addr()?;
        let client = build_client(
            &cfg.tls,
            HickoryDns::from_system(),
            ClientTimeouts::default(),
        )?;
        let ops = OpsState {
            pools: self.pools.clone(),
            metrics: self.metrics.clone(),
            started: Instant::now(),
            draining: self.reporter.clone(),
        };
        let api = Arc::new(WorkerApi {
            node_id: self.node_id.clone(),
            pools: self
                .pools
                .iter()
                .map(|p| (p.pool_id().to_string(), p.clone()))
                .collect::<BTreeMap<_, _>>(),
            keepalive: KEEPALIVE,
        });
        let ops_token = auth::client_api_needs_token(cfg.server.bind, cfg.auth.require_on_loopback)
            .then(|| self.token.clone());
        let router = worker_routes(api, self.token.clone())
            .merge(guard_client_api(ops_routes(ops.clone()), ops_token))
            .layer(axum::middleware::from_fn(crate::api::extract::correlation));
        let advertise = advertise_url(cfg, bound, server_tls.is_some());
        let agent = Agent::start(
            AgentSettings {
                node_id: self.node_id.clone(),
                advertise_url: advertise.clone(),
                control_urls: cfg.cloud.control_urls.clone(),
                heartbeat_interval: Duration::from_secs(cfg.cloud.heartbeat_interval_secs),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
            client,
            Some(self.token.clone()),
            self.reporter.clone(),
        );
        info!(
            node_id = %self.node_id,
            addr = %bound,
            advertise = %advertise,
            token_fingerprint = %self.token.fingerprint(),
            human = %format!("worker {} serving dispatch on {advertise}", self.node_id),
            "listening"
        );
        if let Some(n) = &self.notifier {
            let _ = n.notify_status(&format!("worker {} serving on {bound}", self.node_id));
            if let Err(e) = n.notify_ready() {
                warn!(error = %e, "could not notify systemd");
            }
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics_server = metrics_listener.map(|l| {
            let mut rx = stop_rx.clone();
            tokio::spawn(crate::net::server::serve(
                l,
                ops_routes(ops.clone()),
                None,
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                },
                Duration::from_secs(1),
            ))
        });
        let grace = Duration::from_millis(cfg.server.shutdown_grace_ms);
        let pools = self.pools.clone();
        let reporter = self.reporter.clone();
        let notifier = self.notifier.clone();
        let node_id = self.node_id.clone();
        let drain = async move {
            shutdown.await;
            info!(node_id = %node_id, human = "shutting down: draining, then deregistering", "shutdown started");
            if let Some(n) = &notifier {
                let _ = n.notify_stopping();
            }
            reporter.draining.store(true, Ordering::Release);
            for p in &pools {
                p.pool().begin_drain();
            }
            agent.nudge();
            let until = Instant::now() + grace;
            while Instant::now() < until && pools.iter().any(|p| busy(p)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if pools.iter().any(|p| busy(p)) {
                warn!(node_id = %node_id, human = "tasks still running at the end of the shutdown grace; stopping anyway", "drain cut short");
            }
            let failed = agent.deregister(Duration::from_secs(3)).await;
            if !failed.is_empty() {
                warn!(node_id = %node_id, control_planes = ?failed, "could not deregister from every control plane");
            }
            let _ = stop_tx.send(true);
        };
        let mut rx = stop_rx;
        let server = crate::net::server::serve(
            listener,
            router,
            server_tls,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
            Duration::from_secs(2),
        );
        let (_, ()) = tokio::join!(server, drain);
        if let Some(m) = metrics_server {
            m.abort();
        }
        self.shutdown().await;
        Ok(())
    }

    /// Stop the pools (waits for the engine threads).
    pub async fn shutdown(&mut self) {
        if let Some(g) = self.gauges.take() {
            g.abort();
        }
        let pools: Vec<_> = self.pools.iter().map(|p| p.pool().clone()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for p in pools {
                p.stop();
            }
        })
        .await;
        info!(node_id = %self.node_id, human = "stopped", "shutdown complete");
    }
}

/// A pool with a task running or waiting.
fn busy(p: &LocalPool) -> bool {
    p.pool()
        .stats()
        .is_some_and(|s| s.slots_busy > 0 || s.waiting > 0)
}
