//! A cluster pool: one [`PoolClient`] for every worker pool that serves a
//! model, on a cloud control plane. The control side sees one pool per
//! model (its admission queue, predictions and sessions work as at home);
//! this pool picks the node for each task with `node_placement`, talks to
//! it through `transport::http::RemotePool`, and hides the loss of a worker
//! before the first token:
//!
//! - a worker that cannot be reached, refuses because it is not ready, or
//!   whose stream breaks before the first token, is left out and the task
//!   is placed again on another holder (up to `cloud.dispatch_attempts`
//!   nodes); the client sees one stream;
//! - a worker lost after the first token ends the task with `WORKER_LOST`
//!   (retriable);
//! - a task still queued on the control plane when its worker dies is
//!   simply placed on another holder when its turn comes.
//!
//! Status comes from the node registry (heartbeats), never from a round
//! trip: slots are the sum over the available holders.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tracing::{info, warn};

use super::node_placement::{Mode, NodePlacementError, NodePlacementRequest};
use super::nodes::NodeService;
use crate::net::auth::ApiToken;
use crate::telemetry::metrics::{self as m, label, outcome};
use crate::transport::http::RemotePool;
use crate::transport::{
    BoxFuture, ErrorCode, ExecuteRequest, PoolClient, PoolState, PoolStatus, PrepareRequest,
    Prepared, TaskEvent, TaskEvents, TransportError,
};

/// Sessions whose node is remembered, at most.
const MAX_SESSIONS: usize = 10_000;

/// How the control plane reaches workers.
#[derive(Clone)]
pub struct WorkerAccess {
    pub client: reqwest::Client,
    pub token: Option<Arc<ApiToken>>,
}

struct Shared {
    model_id: String,
    nodes: Arc<NodeService>,
    access: WorkerAccess,
    attempts: u32,
    /// Running tasks: where they run (for cancel).
    running: Mutex<HashMap<String, Arc<RemotePool>>>,
    /// Session id → node and pool of its last turn, with a use stamp.
    sessions: Mutex<HashMap<String, (String, String, u64)>>,
    stamp: std::sync::atomic::AtomicU64,
}

/// The cluster pool of one model.
pub struct ClusterPool {
    shared: Arc<Shared>,
}

impl ClusterPool {
    pub fn new(
        model_id: &str,
        nodes: Arc<NodeService>,
        access: WorkerAccess,
        attempts: u32,
    ) -> ClusterPool {
        ClusterPool {
            shared: Arc::new(Shared {
                model_id: model_id.to_string(),
                nodes,
                access,
                attempts: attempts.max(1),
                running: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                stamp: Default::default(),
            }),
        }
    }
}

fn placement_error(e: NodePlacementError) -> TransportError {
    let code = match &e {
        NodePlacementError::NoHolder(_) | NodePlacementError::NoneAvailable(_) => {
            ErrorCode::PoolUnavailable
        }
        NodePlacementError::CtxTooSmall { .. } => ErrorCode::CtxExceeded,
        NodePlacementError::PinnedUnknown(_) | NodePlacementError::AllAvoided => {
            ErrorCode::InvalidParams
        }
        NodePlacementError::PinnedUnavailable(_) => ErrorCode::PoolUnready,
    };
    TransportError::new(code, e.to_string())
}

/// Worth trying another node for (nothing was generated yet).
fn try_elsewhere(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::WorkerLost | ErrorCode::PoolUnready | ErrorCode::PoolUnavailable
    )
}

impl Shared {
    fn remote(&self, node_id: &str, pool_id: &str) -> Option<Arc<RemotePool>> {
        let address = self.nodes.address(node_id)?;
        Some(Arc::new(RemotePool::new(
            self.access.client.clone(),
            self.access.token.clone(),
            node_id,
            &address,
            pool_id,
        )))
    }

    fn session_node(&self, session: Option<&str>) -> Option<(String, String)> {
        let s = session?;
        let mut map = self.sessions.lock().unwrap();
        let e = map.get_mut(s)?;
        e.2 = self
            .stamp
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some((e.0.clone(), e.1.clone()))
    }

    fn remember_session(&self, session: Option<&str>, node: &str, pool: &str) {
        let Some(s) = session else { return };
        let stamp = self
            .stamp
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.sessions.lock().unwrap();
        if map.len() >= MAX_SESSIONS && !map.contains_key(s) {
            // Forget the least recently used tenth.
            let mut stamps: Vec<u64> = map.values().map(|v| v.2).collect();
            stamps.sort_unstable();
            let cut = stamps[stamps.len() / 10];
            map.retain(|_, v| v.2 > cut);
        }
        map.insert(s.to_string(), (node.to_string(), pool.to_string(), stamp));
    }

    /// Place among the holders, leaving out `excluded` nodes.
    fn place(
        &self,
        req: &ExecuteRequest,
        ctx_needed: u64,
        excluded: &[String],
    ) -> Result<(String, String), TransportError> {
        let h = &req.hints;
        // `pin_pool_id` may name one pool of one node as `node/pool`.
        let (pin_node, pin_pool) = match h.pin_pool_id.as_deref().and_then(|p| p.split_once('/')) {
            Some((n, p)) => (Some(n), Some(p)),
            None => (h.pin_node_id.as_deref(), h.pin_pool_id.as_deref()),
        };
        let session = self.session_node(req.session_id.as_deref());
        let preq = NodePlacementRequest {
            model_id: &self.model_id,
            ctx_needed,
            mode: if h.pin {
                Mode::Pin
            } else if h.prefer.is_empty() {
                Mode::Auto
            } else {
                Mode::Prefer
            },
            pin_node_id: pin_node,
            pin_pool_id: pin_pool,
            prefer: &h.prefer,
            avoid: &h.avoid,
            allow_fallback: h.allow_fallback,
            session: session.as_ref().map(|(n, p)| (n.as_str(), p.as_str())),
            exclude_nodes: excluded,
        };
        let d = self.nodes.place(&preq).map_err(placement_error)?;
        Ok((d.node_id, d.pool_id))
    }
}

fn count(node_id: &str, o: &'static str) {
    metrics::counter!(m::TASKS_DISPATCHED_TOTAL,
        label::NODE_ID => node_id.to_string(), label::OUTCOME => o)
    .increment(1);
}

/// One task's life on the cluster: the current worker stream, the nodes
/// that failed it, what was already passed on.
struct Run {
    shared: Arc<Shared>,
    req: ExecuteRequest,
    current: Option<(String, String, TaskEvents)>,
    excluded: Vec<String>,
    tries: u32,
    tokens: usize,
    started_sent: bool,
    pending: VecDeque<TaskEvent>,
    done: bool,
}

impl Run {
    /// Hand the task to a worker, trying others while one cannot take it.
    async fn dispatch(&mut self) -> Result<(), TransportError> {
        let ctx_needed = (self.req.prompt.len() + self.req.params.max_tokens) as u64;
        let mut last: Option<TransportError> = None;
        while self.tries < self.shared.attempts {
            let (node, pool) = match self.shared.place(&self.req, ctx_needed, &self.excluded) {
                Ok(x) => x,
                // Nowhere left to go: the last worker's error says more.
                Err(e) => return Err(last.unwrap_or(e)),
            };
            self.tries += 1;
            let Some(remote) = self.shared.remote(&node, &pool) else {
                self.excluded.push(node);
                continue;
            };
            self.shared.nodes.reserve(&node, &pool);
            match remote.execute(self.req.clone()).await {
                Ok(stream) => {
                    count(&node, outcome::OK);
                    self.shared
                        .running
                        .lock()
                        .unwrap()
                        .insert(self.req.task_id.clone(), remote);
                    self.shared
                        .remember_session(self.req.session_id.as_deref(), &node, &pool);
                    self.pending.push_back(TaskEvent::Dispatched {
                        node_id: node.clone(),
                        pool_id: pool.clone(),
                    });
                    self.current = Some((node, pool, stream));
                    return Ok(());
                }
                Err(e) => {
                    self.shared.nodes.release(&node, &pool);
                    let lost = e.code == ErrorCode::WorkerLost;
                    count(
                        &node,
                        if lost {
                            outcome::UNREACHABLE
                        } else {
                            outcome::REJECTED
                        },
                    );
                    if lost {
                        self.shared.nodes.mark_unreachable(&node);
                    }
                    if !try_elsewhere(e.code) {
                        return Err(e);
                    }
                    warn!(
                        task_id = %self.req.task_id,
                        correlation_id = %self.req.correlation_id,
                        node_id = %node,
                        error = %e.message,
                        human = "worker could not take the task; placing it on another node",
                    );
                    self.excluded.push(node);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            TransportError::new(ErrorCode::PoolUnavailable, "no node could take the task")
        }))
    }

    /// Forget the current worker (its stream ended or broke).
    fn leave_current(&mut self) -> Option<(String, String)> {
        let (node, pool, _) = self.current.take()?;
        self.shared.nodes.release(&node, &pool);
        self.shared
            .running
            .lock()
            .unwrap()
            .remove(&self.req.task_id);
        Some((node, pool))
    }

    async fn next_event(&mut self) -> Option<TaskEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.done {
                return None;
            }
            if self.current.is_none() {
                if let Err(e) = self.dispatch().await {
                    self.done = true;
                    return Some(TaskEvent::Failed(e));
                }
                continue;
            }
            // A stream that ends without a terminal event lost its worker.
            let ev = self.current.as_mut().expect("dispatched").2.next().await;
            let ev = ev.unwrap_or_else(|| {
                TaskEvent::Failed(TransportError::new(
                    ErrorCode::WorkerLost,
                    "the worker stopped streaming this task",
                ))
            });
            match ev {
                TaskEvent::Started { .. } if self.started_sent => continue,
                ev @ TaskEvent::Started { .. } => {
                    self.started_sent = true;
                    return Some(ev);
                }
                ev @ TaskEvent::Token(_) => {
                    self.tokens += 1;
                    return Some(ev);
                }
                ev @ TaskEvent::Finished(_) => {
                    self.done = true;
                    self.leave_current();
                    return Some(ev);
                }
                TaskEvent::Dispatched { .. } => continue,
                TaskEvent::Failed(e) => {
                    let (node, _) = self.leave_current().expect("dispatched");
                    if e.code == ErrorCode::WorkerLost {
                        count(&node, outcome::WORKER_LOST);
                        self.shared.nodes.mark_unreachable(&node);
                    }
                    if self.tokens == 0
                        && try_elsewhere(e.code)
                        && self.tries < self.shared.attempts
                    {
                        info!(
                            task_id = %self.req.task_id,
                            correlation_id = %self.req.correlation_id,
                            node_id = %node,
                            error = %e.message,
                            human = "worker lost before the first token; placing the task on another node",
                        );
                        self.excluded.push(node);
                        continue;
                    }
                    self.done = true;
                    return Some(TaskEvent::Failed(e));
                }
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.leave_current();
    }
}

impl ClusterPool {
    fn status_now(&self) -> PoolStatus {
        let sh = &self.shared;
        sh.nodes.read(|r, now| {
            let mut st = PoolStatus {
                pool_id: sh.model_id.clone(),
                node_id: String::new(),
                model_id: sh.model_id.clone(),
                model_digest: String::new(),
                state: PoolState::Unreachable,
                ctx: 0,
                slots_total: 0,
                slots_busy: 0,
                waiting: 0,
                kv_used_tokens: 0,
                kv_capacity_tokens: 0,
                decode_step_ms: 0.0,
                prefill_tps: 0.0,
                device: "cluster".into(),
                vram_total_bytes: 0,
                vram_free_bytes: 0,
                engine: "llorchd".into(),
                engine_version: env!("CARGO_PKG_VERSION").into(),
            };
            let (mut n_rates, mut any_loading) = (0usize, false);
            let mut decode = 0.0;
            let mut prefill = 0.0;
            for (_, p, available) in r.serving(&sh.model_id, now) {
                if st.model_digest.is_empty() {
                    st.model_digest = p.model_digest.clone();
                }
                any_loading |= p.state == "loading";
                if !available {
                    continue;
                }
                st.state = PoolState::Ready;
                st.ctx = st.ctx.max(p.ctx as usize);
                st.slots_total += p.slots_total as usize;
                st.slots_busy += p.slots_busy as usize;
                st.waiting += p.queue_depth as usize;
                st.vram_total_bytes += p.vram_total_bytes;
                st.vram_free_bytes += p.vram_free_bytes;
                if p.decode_step_ms > 0.0 {
                    decode += p.decode_step_ms;
                    prefill += p.prefill_tps;
                    n_rates += 1;
                }
            }
            if st.state != PoolState::Ready && any_loading {
                st.state = PoolState::Loading;
            }
            if n_rates > 0 {
                st.decode_step_ms = decode / n_rates as f64;
                st.prefill_tps = prefill / n_rates as f64;
            }
            st
        })
    }
}

impl PoolClient for ClusterPool {
    fn pool_id(&self) -> &str {
        &self.shared.model_id
    }

    fn status(&self) -> BoxFuture<'_, Result<PoolStatus, TransportError>> {
        let st = self.status_now();
        Box::pin(async move { Ok(st) })
    }

    fn prepare(&self, req: PrepareRequest) -> BoxFuture<'_, Result<Prepared, TransportError>> {
        Box::pin(async move {
            let sh = &self.shared;
            let probe = ExecuteRequest {
                task_id: String::new(),
                model_id: sh.model_id.clone(),
                prompt: Vec::new(),
                params: crate::transport::GenerationParams {
                    temperature: 0.0,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    repeat_penalty: 1.0,
                    seed: 0,
                    max_tokens: 0,
                    stop: Vec::new(),
                    logprobs: None,
                    determinism: Default::default(),
                },
                session_id: None,
                correlation_id: String::new(),
                hints: Default::default(),
            };
            let mut excluded = Vec::new();
            let mut last = None;
            for _ in 0..sh.attempts {
                let (node, pool) = match sh.place(&probe, 0, &excluded) {
                    Ok(x) => x,
                    Err(e) => return Err(last.unwrap_or(e)),
                };
                let Some(remote) = sh.remote(&node, &pool) else {
                    excluded.push(node);
                    continue;
                };
                match remote.prepare(req.clone()).await {
                    Ok(p) => return Ok(p),
                    Err(e) if try_elsewhere(e.code) => {
                        if e.code == ErrorCode::WorkerLost {
                            sh.nodes.mark_unreachable(&node);
                        }
                        warn!(
                            node_id = %node,
                            error = %e.message,
                            human = "worker could not tokenize the prompt; trying another node",
                        );
                        excluded.push(node);
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                TransportError::new(
                    ErrorCode::PoolUnavailable,
                    "no node could tokenize the prompt",
                )
            }))
        })
    }

    fn execute(&self, req: ExecuteRequest) -> BoxFuture<'_, Result<TaskEvents, TransportError>> {
        Box::pin(async move {
            let mut run = Run {
                shared: self.shared.clone(),
                req,
                current: None,
                excluded: Vec::new(),
                tries: 0,
                tokens: 0,
                started_sent: false,
                pending: VecDeque::new(),
                done: false,
            };
            run.dispatch().await?;
            Ok(futures_util::stream::unfold(run, |mut run| async move {
                run.next_event().await.map(|ev| (ev, run))
            })
            .boxed())
        })
    }

    fn cancel(&self, task_id: &str) -> BoxFuture<'_, Result<(), TransportError>> {
        let remote = self.shared.running.lock().unwrap().get(task_id).cloned();
        let task_id = task_id.to_string();
        Box::pin(async move {
            match remote {
                Some(r) => r.cancel(&task_id).await,
                None => Ok(()),
            }
        })
    }

    fn drain(&self) -> BoxFuture<'_, Result<PoolStatus, TransportError>> {
        // The control side stops admitting to this pool; workers drain on
        // their own (SIGTERM).
        let st = self.status_now();
        Box::pin(async move { Ok(st) })
    }

    fn reload(&self, model_id: &str) -> BoxFuture<'_, Result<PoolStatus, TransportError>> {
        let msg = format!(
            "pool {} spans the workers that serve {}; reload pools on the workers (to {model_id})",
            self.shared.model_id, self.shared.model_id
        );
        Box::pin(async move { Err(TransportError::new(ErrorCode::InvalidParams, msg)) })
    }
}
