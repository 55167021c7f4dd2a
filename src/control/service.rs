//! The control side as one service: guardrails, placement, admission, a
//! dispatcher per pool, task records and their frames, cancel, sessions,
//! drain and reload. It reaches pools only through `transport::PoolClient`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::admission::{
    self, AdmissionQueue, Priority, Queued, Rates, RefusalReason, TokenBucket, Work,
};
use super::placement::{self, Candidate, Mode, PlacementError};
use super::sessions::{SessionStore, SessionView};
use super::tasks::{EndFrame, Frame, MetricsFrame, Phase, TaskInfo, TaskRecord, TaskStore};
use super::ControlError;
use crate::config::{AdmissionConfig, SessionConfig};
use crate::telemetry::logging::task_span;
use crate::telemetry::metrics::{self as m, label};
use crate::transport::{
    Determinism, ErrorCode, ExecuteRequest, GenerationParams, PlacementHints, PoolClient,
    PoolState, PoolStatus, PrepareRequest, PromptInput, TaskEvent, TransportError,
};

/// Is a model id known to the catalog, and may it be served?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLookup {
    Active,
    Retired,
    Unknown,
}

/// The catalog as admission sees it (the redb catalog in practice).
pub trait ModelCatalog: Send + Sync {
    fn lookup(&self, model_id: &str) -> ModelLookup;
}

/// How `max_tokens` defaults when a request leaves it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensDefault {
    /// This many, capped by what is left of the context.
    Fixed(usize),
    /// All that is left of the context.
    RestOfContext,
}

/// Sampling as asked; `None` takes the defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SamplingSpec {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub logprobs: Option<usize>,
}

/// Defaults for unset sampling fields (the native API and the OpenAI
/// surface differ).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
}

impl SamplingDefaults {
    /// llama.cpp's defaults (the native API).
    pub const NATIVE: SamplingDefaults = SamplingDefaults {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        repeat_penalty: 1.0,
    };
    /// OpenAI's: temperature 1, nucleus 1, nothing else.
    pub const OPENAI: SamplingDefaults = SamplingDefaults {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
    };
}

/// Placement wishes of a request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlacementSpec {
    pub mode: Mode,
    pub pin_pool_id: Option<String>,
    pub pin_node_id: Option<String>,
    pub prefer_pools: Vec<String>,
    pub avoid_pools: Vec<String>,
    pub allow_fallback: bool,
}

/// A task as a client asked for it, wire-independent.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub task_id: Option<String>,
    pub correlation_id: String,
    pub session_id: Option<String>,
    pub model_ref: Option<String>,
    /// Context the task needs at least (prompt + max_tokens must fit).
    pub ctx: Option<usize>,
    pub priority: Priority,
    pub input: PromptInput,
    pub max_tokens: Option<usize>,
    pub max_tokens_default: MaxTokensDefault,
    /// Milliseconds from admission by which the task should have ended.
    pub deadline_ms: Option<u64>,
    pub sampling: SamplingSpec,
    pub sampling_defaults: SamplingDefaults,
    pub placement: PlacementSpec,
    pub determinism: Determinism,
}

/// A task that got in.
#[derive(Debug, Clone)]
pub struct Admission {
    pub task: Arc<TaskRecord>,
    pub queue_position: usize,
    pub predicted_start_ms: u64,
    pub backoff_ms: u64,
}

/// Settings of the control side.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub admission: AdmissionConfig,
    pub sessions: SessionConfig,
    /// How long ended tasks stay readable.
    pub task_retention: Duration,
    /// How many ended tasks stay readable at most.
    pub max_retained_tasks: usize,
    /// How often pools are health-checked (their status refreshed).
    pub health_interval: Duration,
    /// Token frames between two `metrics` frames.
    pub metrics_every_tokens: usize,
    /// The pools are cluster pools that pick a node per task (cloud
    /// control plane): placement here only chooses the model's pool, and
    /// node pins, preferences and avoidances travel to it as hints. Such
    /// pools count their own dispatches per node.
    pub pools_span_nodes: bool,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            admission: AdmissionConfig::default(),
            sessions: SessionConfig::default(),
            task_retention: Duration::from_secs(300),
            max_retained_tasks: 10_000,
            health_interval: Duration::from_secs(1),
            metrics_every_tokens: 32,
            pools_span_nodes: false,
        }
    }
}

struct QueuedTask {
    record: Arc<TaskRecord>,
    exec: ExecuteRequest,
}

struct PoolInner {
    queue: AdmissionQueue<QueuedTask>,
    status: PoolStatus,
    /// Tasks handed to the pool and not yet ended.
    running: HashMap<String, Arc<TaskRecord>>,
    /// Set by a drain: when it must be over.
    drain_deadline: Option<Instant>,
}

struct PoolEntry {
    id: String,
    client: Arc<dyn PoolClient>,
    inner: Mutex<PoolInner>,
    /// Wakes the dispatcher (one waiter; `notify_one` keeps a permit).
    wake: Notify,
}

impl PoolEntry {
    fn lock(&self) -> MutexGuard<'_, PoolInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PoolInner {
    fn rates(&self) -> Rates {
        Rates {
            decode_step_ms: self.status.decode_step_ms,
            prefill_tps: self.status.prefill_tps,
        }
    }

    fn running_remaining(&self) -> Vec<f64> {
        let rates = self.rates();
        self.running
            .values()
            .map(|r| {
                let started = r.lock().started_at.is_some();
                admission::remaining_ms(
                    r.info.work,
                    r.tokens_out.load(Ordering::Relaxed),
                    started,
                    rates,
                )
            })
            .collect()
    }

    fn accepting(&self) -> bool {
        self.status.state == PoolState::Ready && self.drain_deadline.is_none()
    }
}

/// A pool as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    pub status: PoolStatus,
    /// Ready and accepting (not draining).
    pub accepting: bool,
    pub draining: bool,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub running: usize,
}

/// The control side.
pub struct Control {
    settings: ControlSettings,
    pools: RwLock<Vec<Arc<PoolEntry>>>,
    tasks: TaskStore,
    sessions: SessionStore,
    catalog: Option<Arc<dyn ModelCatalog>>,
    shutting_down: AtomicBool,
    background: Mutex<Vec<JoinHandle<()>>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh task id: `t-` and 24 hex digits.
pub fn new_task_id() -> String {
    format!("t-{:024x}", rand::random::<u128>() >> 32)
}

fn refused(code: ErrorCode, message: impl Into<String>) -> ControlError {
    ControlError::Refused {
        code,
        message: message.into(),
        retry_after_ms: None,
    }
}

impl From<TransportError> for ControlError {
    fn from(e: TransportError) -> Self {
        refused(e.code, e.message)
    }
}

impl Control {
    /// Build the control side over `pools` (their status is read once here)
    /// and start its dispatchers and housekeeping. Must run inside a tokio
    /// runtime.
    pub async fn start(
        settings: ControlSettings,
        pools: Vec<Arc<dyn PoolClient>>,
        catalog: Option<Arc<dyn ModelCatalog>>,
    ) -> Arc<Control> {
        let ctl = Arc::new(Control {
            tasks: TaskStore::new(settings.task_retention, settings.max_retained_tasks),
            sessions: SessionStore::new(
                Duration::from_secs(settings.sessions.ttl_secs),
                settings.sessions.max_turns,
                settings.sessions.max_sessions,
            ),
            settings,
            pools: RwLock::new(Vec::new()),
            catalog,
            shutting_down: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
        });
        for p in pools {
            ctl.add_pool(p).await;
        }
        let weak = Arc::downgrade(&ctl);
        let interval = ctl.settings.health_interval;
        let housekeeping = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(ctl) = weak.upgrade() else { return };
                ctl.health_check_all().await;
                let now = Instant::now();
                ctl.tasks.sweep(now);
                ctl.sessions.sweep(now);
            }
        });
        ctl.background_tasks().push(housekeeping);
        ctl
    }

    /// Add a pool (the cloud profile adds remote pools as nodes register).
    pub async fn add_pool(self: &Arc<Self>, client: Arc<dyn PoolClient>) {
        let id = client.pool_id().to_string();
        let status = match client.status().await {
            Ok(s) => s,
            Err(e) => {
                warn!(pool_id = %id, error = %e, "pool status unavailable");
                unreachable_status(&id)
            }
        };
        let a = &self.settings.admission;
        let bucket = (a.tokens_per_second > 0)
            .then(|| TokenBucket::new(a.tokens_per_second, a.token_burst, Instant::now()));
        let entry = Arc::new(PoolEntry {
            id: id.clone(),
            client,
            inner: Mutex::new(PoolInner {
                queue: AdmissionQueue::new(a.queue_capacity, a.full_policy, bucket),
                status,
                running: HashMap::new(),
                drain_deadline: None,
            }),
            wake: Notify::new(),
        });
        metrics::gauge!(m::ADMISSION_QUEUE_CAPACITY, label::POOL_ID => id.clone())
            .set(a.queue_capacity as f64);
        metrics::gauge!(m::ADMISSION_QUEUE_DEPTH, label::POOL_ID => id.clone()).set(0.0);
        self.record_pool_gauges(&entry);
        self.pools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry.clone());
        let handle = tokio::spawn(dispatch_loop(Arc::downgrade(self), entry));
        self.background_tasks().push(handle);
    }

    fn background_tasks(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.background.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pools(&self) -> Vec<Arc<PoolEntry>> {
        self.pools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn pool(&self, id: &str) -> Option<Arc<PoolEntry>> {
        self.pools().into_iter().find(|p| p.id == id)
    }

    pub fn settings(&self) -> &ControlSettings {
        &self.settings
    }

    // ---- reading state ----

    pub fn task(&self, id: &str) -> Option<Arc<TaskRecord>> {
        self.tasks.get(id)
    }

    /// The task's current queue position, while queued.
    pub fn queue_position(&self, rec: &TaskRecord) -> Option<usize> {
        let p = self.pool(&rec.info.pool_id)?;
        let inner = p.lock();
        inner.queue.position(&rec.info.id)
    }

    pub fn session(&self, id: &str) -> Option<SessionView> {
        self.sessions.get(id, Instant::now())
    }

    pub fn delete_session(&self, id: &str) -> bool {
        self.sessions.remove(id, Instant::now())
    }

    pub fn pool_views(&self) -> Vec<PoolView> {
        let mut v: Vec<PoolView> = self.pools().iter().map(|p| view(&p.lock())).collect();
        v.sort_by(|a, b| a.status.pool_id.cmp(&b.status.pool_id));
        v
    }

    pub fn pool_view(&self, id: &str) -> Option<PoolView> {
        self.pool(id).map(|p| view(&p.lock()))
    }

    /// At least one pool is Ready and accepting, and we are not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire)
            && self.pools().iter().any(|p| p.lock().accepting())
    }

    /// Model ids served by some pool, sorted, without duplicates.
    pub fn served_models(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for p in self.pools() {
            let st = p.lock().status.clone();
            if st.model_id.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(m, _)| *m == st.model_id) {
                Some((_, ctx)) => *ctx = (*ctx).max(st.ctx),
                None => out.push((st.model_id.clone(), st.ctx)),
            }
        }
        out.sort();
        out
    }

    /// Tasks not yet ended.
    pub fn live_tasks(&self) -> usize {
        self.tasks.live().len()
    }

    // ---- admission ----

    /// Run the guardrails, place, and enqueue. Answers 202-style with the
    /// queue position and predicted start, or refuses.
    pub async fn submit(self: &Arc<Self>, spec: TaskSpec) -> Result<Admission, ControlError> {
        let res = self.admit(spec).await;
        if let Err(e) = &res {
            metrics::counter!(m::ADMISSION_REJECTED_TOTAL,
                label::REASON => m::code_label(e.code().as_str()))
            .increment(1);
        }
        res
    }

    async fn admit(self: &Arc<Self>, mut spec: TaskSpec) -> Result<Admission, ControlError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(refused(
                ErrorCode::PoolUnavailable,
                "the server is shutting down",
            ));
        }
        let task_id = match &spec.task_id {
            Some(id) => {
                crate::config::validate_id(id)
                    .map_err(|m| refused(ErrorCode::InvalidParams, format!("task_id {m}")))?;
                id.clone()
            }
            None => new_task_id(),
        };
        if let Some(s) = &spec.session_id {
            crate::config::validate_id(s)
                .map_err(|m| refused(ErrorCode::InvalidParams, format!("session_id {m}")))?;
        }
        validate_sampling(&spec)?;
        let model_id = self.resolve_model(spec.model_ref.as_deref())?;
        let now = Instant::now();
        let session_pool = match &spec.session_id {
            Some(s) => self
                .sessions
                .affinity(s, now)
                .map_err(|e| refused(ErrorCode::InvalidParams, e.to_string()))?,
            None => None,
        };

        // Place once with what we know, tokenize on that pool, then check
        // the context and place again if the task needs a bigger one.
        let mut preq = if self.settings.pools_span_nodes {
            // The cluster pool of the model places on nodes itself.
            placement::Request {
                model_id: model_id.clone(),
                ctx_needed: spec.ctx.unwrap_or(0),
                session_pool,
                ..Default::default()
            }
        } else {
            placement::Request {
                model_id: model_id.clone(),
                ctx_needed: spec.ctx.unwrap_or(0),
                mode: spec.placement.mode,
                pin_pool_id: spec.placement.pin_pool_id.clone(),
                pin_node_id: spec.placement.pin_node_id.clone(),
                prefer_pools: spec.placement.prefer_pools.clone(),
                avoid_pools: spec.placement.avoid_pools.clone(),
                allow_fallback: spec.placement.allow_fallback,
                session_pool,
            }
        };
        let mut candidates = self.candidates();
        let mut decision = match placement::place(&preq, &candidates) {
            Ok(d) => d,
            Err(PlacementError::NoReadyPool(_)) => {
                // The periodic health check may not have seen a pool that
                // just became ready (say, a node's first heartbeat after a
                // control-plane restart): look at this model's pools now.
                self.check_model_pools(&model_id).await;
                candidates = self.candidates();
                placement::place(&preq, &candidates).map_err(placement_error)?
            }
            Err(e) => return Err(placement_error(e)),
        };
        let entry = self
            .pool(&decision.pool_id)
            .ok_or_else(|| refused(ErrorCode::PoolUnavailable, "the chosen pool went away"))?;
        let prepared = entry
            .client
            .prepare(PrepareRequest {
                model_id: model_id.clone(),
                // The prompt is not needed past this point; do not copy it.
                input: std::mem::replace(&mut spec.input, PromptInput::Text(String::new())),
            })
            .await?;
        let tokens_in = prepared.tokens.len();
        let mut entry = entry;
        let mut ctx = prepared.ctx;
        let needed = tokens_in + spec.max_tokens.unwrap_or(1);
        if needed > ctx {
            // A pool of the same model with a longer context may fit it.
            preq.ctx_needed = needed;
            if let Ok(d) = placement::place(&preq, &candidates) {
                if let (Some(e), Some(c)) = (
                    self.pool(&d.pool_id),
                    candidates.iter().find(|c| c.pool_id == d.pool_id),
                ) {
                    entry = e;
                    ctx = c.ctx;
                    decision = d;
                }
            }
        }
        let room = ctx.saturating_sub(tokens_in);
        let max_tokens = match (spec.max_tokens, spec.max_tokens_default) {
            (Some(n), _) => n,
            (None, MaxTokensDefault::Fixed(n)) => n.min(room),
            (None, MaxTokensDefault::RestOfContext) => room,
        };
        if max_tokens == 0 || tokens_in + max_tokens > ctx {
            return Err(refused(
                ErrorCode::CtxExceeded,
                format!(
                    "prompt ({tokens_in} tokens) + max_tokens ({max_tokens}) exceeds the context of {ctx} tokens"
                ),
            ));
        }
        let work = Work {
            tokens_in,
            max_tokens,
        };

        let span = task_span(&spec.correlation_id, &task_id);
        span.record("pool_id", entry.id.as_str());
        span.record("node_id", decision.node_id.as_str());
        span.record("tokens_in", tokens_in);
        if let Some(s) = &spec.session_id {
            span.record("session_id", s.as_str());
        }
        let info = TaskInfo {
            id: task_id.clone(),
            correlation_id: spec.correlation_id.clone(),
            pool_id: entry.id.clone(),
            node_id: decision.node_id.clone(),
            model_id: model_id.clone(),
            session_id: spec.session_id.clone(),
            priority: spec.priority,
            work,
            deadline_ms: spec.deadline_ms,
            created_unix_ms: unix_ms(),
            created: now,
        };
        let record = Arc::new(TaskRecord::new(info, span.clone(), 0, 0));
        self.tasks
            .insert(record.clone())
            .map_err(|e| ControlError::Conflict(e.to_string()))?;
        if let Some(s) = &spec.session_id {
            if let Err(e) = self.sessions.commit_turn(s, &entry.id, &task_id, now) {
                self.tasks.remove(&task_id);
                return Err(refused(ErrorCode::InvalidParams, e.to_string()));
            }
        }
        let exec = ExecuteRequest {
            task_id: task_id.clone(),
            model_id,
            prompt: prepared.tokens,
            params: generation_params(&spec, max_tokens),
            session_id: spec.session_id.clone(),
            correlation_id: spec.correlation_id.clone(),
            hints: PlacementHints {
                pin: spec.placement.mode == Mode::Pin,
                pin_node_id: spec.placement.pin_node_id.clone(),
                pin_pool_id: spec.placement.pin_pool_id.clone(),
                prefer: spec.placement.prefer_pools.clone(),
                avoid: spec.placement.avoid_pools.clone(),
                allow_fallback: spec.placement.allow_fallback,
            },
        };
        let undo = |ctl: &Control| {
            ctl.tasks.remove(&task_id);
            if let Some(s) = &spec.session_id {
                ctl.sessions.rollback_turn(s);
            }
        };

        let outcome = {
            let mut p = entry.lock();
            if !p.accepting() {
                drop(p);
                undo(self);
                return Err(refused(
                    ErrorCode::PoolUnavailable,
                    format!("pool {} is not accepting tasks", entry.id),
                ));
            }
            let rates = p.rates();
            let running = p.running_remaining();
            let slots = p.status.slots_total;
            let predicted = admission::predict_start_ms(
                slots,
                running.iter().copied(),
                p.queue.work_ahead(spec.priority),
                rates,
            );
            if let Some(deadline) = spec.deadline_ms {
                let need = rates.work_ms(work).ceil() as u64;
                if predicted + need > deadline {
                    let retriable = need <= deadline;
                    drop(p);
                    undo(self);
                    return Err(ControlError::Refused {
                        code: ErrorCode::DeadlineUnmet,
                        message: format!(
                            "deadline of {deadline} ms cannot be met: predicted start in {predicted} ms and {need} ms of work"
                        ),
                        retry_after_ms: retriable.then_some(predicted.max(1)),
                    });
                }
            }
            let queued = Queued {
                id: task_id.clone(),
                priority: spec.priority,
                work,
                payload: QueuedTask {
                    record: record.clone(),
                    exec,
                },
            };
            match p.queue.offer(queued, now) {
                Ok(ad) => {
                    let retry = admission::retry_after_ms(
                        running.iter().copied(),
                        p.queue.len(),
                        slots,
                        rates,
                    );
                    let backoff = admission::backoff_ms(p.queue.len(), p.queue.capacity(), retry);
                    // Still under the pool lock, so the dispatcher cannot
                    // start the task before its first frame is there.
                    {
                        let mut st = record.lock();
                        st.queue_position = ad.position;
                        st.predicted_start_ms = predicted;
                        record.push(
                            &mut st,
                            Frame::Started {
                                queue_position: ad.position,
                                predicted_start_ms: predicted,
                            },
                        );
                    }
                    metrics::gauge!(m::ADMISSION_QUEUE_DEPTH, label::POOL_ID => entry.id.clone())
                        .set(p.queue.len() as f64);
                    Ok((ad.position, predicted, backoff, ad.dropped))
                }
                Err(r) => {
                    let retry = r.wait_ms.unwrap_or_else(|| {
                        admission::retry_after_ms(
                            running.iter().copied(),
                            p.queue.len(),
                            slots,
                            rates,
                        )
                    });
                    Err((r.reason, r.reason.policy_label(p.queue.policy()), retry))
                }
            }
        };
        match outcome {
            Ok((position, predicted, backoff, dropped)) => {
                entry.wake.notify_one();
                metrics::counter!(m::ADMISSION_ENQUEUED_TOTAL).increment(1);
                span.record("queue_position", position);
                span.record("predicted_start_ms", predicted);
                // Logged once admitted, so that refusals under saturation
                // cost no log line.
                info!(
                    parent: &span,
                    human = %format!("placed on pool {} ({})", entry.id, decision.reason.as_str()),
                    "task placed"
                );
                info!(
                    parent: &span,
                    human = %format!(
                        "admitted to pool {} at queue position {position}, predicted to start in {predicted} ms",
                        entry.id
                    ),
                    priority = spec.priority.as_str(),
                    "task admitted"
                );
                if let Some(d) = dropped {
                    self.end_dropped(d.payload.record);
                }
                Ok(Admission {
                    task: record,
                    queue_position: position,
                    predicted_start_ms: predicted,
                    backoff_ms: backoff,
                })
            }
            Err((reason, policy_label, retry_after_ms)) => {
                undo(self);
                let (code, why) = match reason {
                    RefusalReason::QueueFull => (
                        ErrorCode::AdmissionReject,
                        format!("the queue of pool {} is full", entry.id),
                    ),
                    RefusalReason::TokenRate => (
                        ErrorCode::AdmissionReject,
                        format!("pool {} is over its token rate", entry.id),
                    ),
                };
                tracing::debug!(parent: &span, policy_label, retry_after_ms, "task refused");
                Err(ControlError::Backpressure {
                    code,
                    message: format!("{why}; retry after {retry_after_ms} ms"),
                    retry_after_ms,
                    policy_label,
                })
            }
        }
    }

    fn resolve_model(&self, model_ref: Option<&str>) -> Result<String, ControlError> {
        let served = self.served_models();
        let id = match model_ref {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => match served.as_slice() {
                [(only, _)] => only.clone(),
                [] => return Err(refused(ErrorCode::PoolUnavailable, "no pool is loaded")),
                _ => {
                    return Err(refused(
                        ErrorCode::InvalidParams,
                        "several models are served: name one in model_ref (or model)",
                    ))
                }
            },
        };
        let is_served = served.iter().any(|(m, _)| *m == id);
        match self.catalog.as_ref().map(|c| c.lookup(&id)) {
            Some(ModelLookup::Unknown) => Err(refused(
                ErrorCode::ModelNotFound,
                format!("model {id:?} is not in the catalog"),
            )),
            Some(ModelLookup::Retired) => Err(refused(
                ErrorCode::ModelNotFound,
                format!("model {id:?} is retired"),
            )),
            None if !is_served => Err(refused(
                ErrorCode::ModelNotFound,
                format!("model {id:?} is not served here"),
            )),
            _ => Ok(id),
        }
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.pools()
            .iter()
            .map(|p| {
                let inner = p.lock();
                Candidate {
                    pool_id: p.id.clone(),
                    node_id: inner.status.node_id.clone(),
                    model_id: inner.status.model_id.clone(),
                    accepting: inner.accepting(),
                    ctx: inner.status.ctx,
                    slots_total: inner.status.slots_total,
                    slots_busy: inner.running.len(),
                    queue_depth: inner.queue.len(),
                    vram_free_bytes: inner.status.vram_free_bytes,
                }
            })
            .collect()
    }

    fn end_dropped(&self, rec: Arc<TaskRecord>) {
        let ended = {
            let mut st = rec.lock();
            rec.finish(
                &mut st,
                Phase::Failed,
                Frame::Error {
                    code: ErrorCode::QueueFullDropLru,
                    message: "dropped from a full queue to admit a newer task".into(),
                    retriable: true,
                },
            )
        };
        if ended {
            finished_metrics(&rec, "queue_full_drop_lru");
            info!(
                parent: &rec.span,
                human = "dropped from the full queue (drop-lru) to make room for a newer task",
                "task dropped"
            );
        }
    }

    // ---- cancel ----

    /// Cancel a task. Race-free: once this returns, no token frame follows.
    /// Ended tasks are left as they are.
    pub async fn cancel(&self, task_id: &str) -> Result<(), ControlError> {
        let rec = self
            .tasks
            .get(task_id)
            .ok_or_else(|| ControlError::NotFound {
                kind: "task",
                id: task_id.to_string(),
            })?;
        let stage = {
            let mut st = rec.lock();
            let stage = match st.phase {
                Phase::Queued => "queued",
                Phase::Running => "running",
                _ => return Ok(()),
            };
            rec.finish(
                &mut st,
                Phase::Canceled,
                Frame::Error {
                    code: ErrorCode::Canceled,
                    message: "canceled by the client".into(),
                    retriable: false,
                },
            );
            stage
        };
        metrics::counter!(m::TASKS_CANCELED_TOTAL, label::STAGE => stage).increment(1);
        finished_metrics(&rec, "canceled");
        let tokens = rec.tokens_out.load(Ordering::Relaxed);
        info!(
            parent: &rec.span,
            human = %format!("canceled by the client while {stage}, after {tokens} tokens"),
            tokens_out = tokens,
            "task canceled"
        );
        if let Some(p) = self.pool(&rec.info.pool_id) {
            if stage == "queued" {
                let mut inner = p.lock();
                inner.queue.remove(task_id);
                metrics::gauge!(m::ADMISSION_QUEUE_DEPTH, label::POOL_ID => p.id.clone())
                    .set(inner.queue.len() as f64);
            } else if let Err(e) = p.client.cancel(task_id).await {
                warn!(parent: &rec.span, error = %e, "pool did not take the cancel");
            }
            if let Some(s) = &rec.info.session_id {
                self.sessions.touch(s, Instant::now());
            }
        }
        Ok(())
    }

    // ---- pools ----

    /// Stop admitting to a pool; queued and running tasks go on until
    /// `deadline`, after which the rest are ended with POOL_UNAVAILABLE.
    /// The pool itself is drained once its work is done.
    pub fn drain(
        self: &Arc<Self>,
        pool_id: &str,
        deadline: Duration,
    ) -> Result<PoolView, ControlError> {
        let entry = self.pool(pool_id).ok_or_else(|| ControlError::NotFound {
            kind: "pool",
            id: pool_id.to_string(),
        })?;
        let until = Instant::now() + deadline;
        let view = {
            let mut inner = entry.lock();
            inner.drain_deadline = Some(until);
            view(&inner)
        };
        info!(pool_id, deadline_ms = deadline.as_millis() as u64,
            human = %format!("draining pool {pool_id}: no new tasks, {} ms for the rest", deadline.as_millis()),
            "pool draining");
        let ctl = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
            loop {
                let (idle, overdue, still) = {
                    let inner = entry.lock();
                    (
                        inner.queue.is_empty() && inner.running.is_empty(),
                        Instant::now() >= until,
                        inner.drain_deadline == Some(until),
                    )
                };
                if !still {
                    return; // reloaded (or drained again) meanwhile
                }
                if idle || overdue {
                    if let Some(ctl) = ctl.upgrade() {
                        if overdue {
                            ctl.end_pool_work(
                                &entry,
                                ErrorCode::PoolUnavailable,
                                "the pool was drained",
                            )
                            .await;
                        }
                        match entry.client.drain().await {
                            Ok(s) => entry.lock().status = s,
                            Err(e) => warn!(pool_id = %entry.id, error = %e, "pool drain failed"),
                        }
                        ctl.record_pool_gauges(&entry);
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        self.background_tasks().push(handle);
        Ok(view)
    }

    /// Load another model into a pool atomically; on failure the pool keeps
    /// serving what it had. A drained pool accepts tasks again afterwards.
    pub async fn reload(&self, pool_id: &str, model_id: &str) -> Result<PoolView, ControlError> {
        let entry = self.pool(pool_id).ok_or_else(|| ControlError::NotFound {
            kind: "pool",
            id: pool_id.to_string(),
        })?;
        crate::config::validate_id(model_id)
            .map_err(|m| refused(ErrorCode::InvalidParams, format!("new_model_ref {m}")))?;
        match self.catalog.as_ref().map(|c| c.lookup(model_id)) {
            Some(ModelLookup::Unknown) => {
                return Err(refused(
                    ErrorCode::ModelNotFound,
                    format!("model {model_id:?} is not in the catalog"),
                ))
            }
            Some(ModelLookup::Retired) => {
                return Err(refused(
                    ErrorCode::ModelNotFound,
                    format!("model {model_id:?} is retired"),
                ))
            }
            _ => {}
        }
        let old = entry.lock().status.model_id.clone();
        info!(pool_id, human = %format!("reloading pool {pool_id}: {old} → {model_id}"), "pool reload");
        match entry.client.reload(model_id).await {
            Ok(status) => {
                let v = {
                    let mut inner = entry.lock();
                    inner.status = status;
                    inner.drain_deadline = None;
                    view(&inner)
                };
                entry.wake.notify_one();
                self.record_pool_gauges(&entry);
                info!(pool_id, human = %format!("pool {pool_id} now serves {model_id}"), "pool reloaded");
                Ok(v)
            }
            Err(e) => {
                warn!(pool_id, error = %e,
                    human = %format!("reload of pool {pool_id} to {model_id} failed; still serving {old}"),
                    "pool reload failed");
                Err(ControlError::Refused {
                    code: e.code,
                    message: format!(
                        "reload failed, pool {pool_id} still serves {old}: {}",
                        e.message
                    ),
                    retry_after_ms: None,
                })
            }
        }
    }

    /// End every queued and running task of a pool with `code`.
    async fn end_pool_work(&self, entry: &PoolEntry, code: ErrorCode, why: &str) {
        let (queued, running): (Vec<_>, Vec<_>) = {
            let mut inner = entry.lock();
            let q = inner.queue.drain_all();
            (q, inner.running.values().cloned().collect())
        };
        metrics::gauge!(m::ADMISSION_QUEUE_DEPTH, label::POOL_ID => entry.id.clone()).set(0.0);
        for rec in queued.into_iter().map(|q| q.payload.record).chain(running) {
            let ended = {
                let mut st = rec.lock();
                rec.finish(
                    &mut st,
                    Phase::Failed,
                    Frame::Error {
                        code,
                        message: why.to_string(),
                        retriable: code.retriable(),
                    },
                )
            };
            if ended {
                finished_metrics(&rec, &m::code_label(code.as_str()));
                let _ = entry.client.cancel(&rec.info.id).await;
            }
        }
    }

    /// Refresh every pool's status; emit pool and admission gauges.
    pub async fn health_check_all(&self) {
        for entry in self.pools() {
            self.health_check(&entry, Duration::from_secs(5)).await;
        }
    }

    /// Refresh the status of the pools serving `model_id`, with a short
    /// timeout: an admission waits on it.
    async fn check_model_pools(&self, model_id: &str) {
        for entry in self.pools() {
            if entry.lock().status.model_id == model_id {
                self.health_check(&entry, Duration::from_secs(1)).await;
            }
        }
    }

    async fn health_check(&self, entry: &Arc<PoolEntry>, limit: Duration) {
        let t0 = std::time::Instant::now();
        let res = tokio::time::timeout(limit, entry.client.status()).await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let outcome = match res {
            Ok(Ok(s)) => {
                entry.lock().status = s;
                m::outcome::OK
            }
            Ok(Err(_)) => {
                entry.lock().status.state = PoolState::Unreachable;
                m::outcome::ERROR
            }
            Err(_) => {
                entry.lock().status.state = PoolState::Unreachable;
                m::outcome::TIMEOUT
            }
        };
        metrics::counter!(m::POOL_HEALTH_CHECKS_TOTAL,
            label::POOL_ID => entry.id.clone(), label::OUTCOME => outcome)
        .increment(1);
        metrics::histogram!(m::POOL_HEALTH_CHECK_DURATION_MS, label::POOL_ID => entry.id.clone())
            .record(ms);
        self.record_pool_gauges(entry);
        // A pool that became Ready may take queued work now.
        entry.wake.notify_one();
    }

    fn record_pool_gauges(&self, entry: &PoolEntry) {
        let inner = entry.lock();
        let id = entry.id.clone();
        metrics::gauge!(m::POOLS_AVAILABLE, label::POOL_ID => id.clone())
            .set(if inner.accepting() { 1.0 } else { 0.0 });
        metrics::gauge!(m::ADMISSION_QUEUE_DEPTH, label::POOL_ID => id)
            .set(inner.queue.len() as f64);
    }

    // ---- shutdown ----

    /// Refuse new tasks from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Wait until no task is queued or running, or `grace` has passed; then
    /// end what is left with CANCELED. Returns how many were cut short.
    pub async fn finish_in_flight(&self, grace: Duration) -> usize {
        let until = Instant::now() + grace;
        while self.live_tasks() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut cut = 0;
        for entry in self.pools() {
            let n = {
                let inner = entry.lock();
                inner.queue.len() + inner.running.len()
            };
            if n > 0 {
                cut += n;
                self.end_pool_work(&entry, ErrorCode::Canceled, "the server is shutting down")
                    .await;
            }
        }
        cut
    }

    /// Stop the background tasks (dispatchers, housekeeping).
    pub fn stop(&self) {
        for h in self.background_tasks().drain(..) {
            h.abort();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        for h in self
            .background
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }
}

fn view(inner: &PoolInner) -> PoolView {
    PoolView {
        status: inner.status.clone(),
        accepting: inner.accepting(),
        draining: inner.drain_deadline.is_some() || inner.status.state == PoolState::Draining,
        queue_depth: inner.queue.len(),
        queue_capacity: inner.queue.capacity(),
        running: inner.running.len(),
    }
}

fn unreachable_status(id: &str) -> PoolStatus {
    PoolStatus {
        pool_id: id.to_string(),
        node_id: String::new(),
        model_id: String::new(),
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
        device: String::new(),
        vram_total_bytes: 0,
        vram_free_bytes: 0,
        engine: String::new(),
        engine_version: String::new(),
    }
}

fn placement_error(e: PlacementError) -> ControlError {
    let code = match &e {
        PlacementError::NoPoolForModel(_) | PlacementError::NoReadyPool(_) => {
            ErrorCode::PoolUnavailable
        }
        PlacementError::CtxTooSmall { .. } => ErrorCode::CtxExceeded,
        PlacementError::PinnedUnknown(_) | PlacementError::AllAvoided => ErrorCode::InvalidParams,
        PlacementError::PinnedUnavailable(_) => ErrorCode::PoolUnready,
    };
    refused(code, e.to_string())
}

fn validate_sampling(spec: &TaskSpec) -> Result<(), ControlError> {
    let s = &spec.sampling;
    let bad = |m: String| Err(refused(ErrorCode::InvalidParams, m));
    if let Some(t) = s.temperature {
        if !(0.0..=100.0).contains(&t) {
            return bad(format!("temperature {t} is outside 0..=100"));
        }
    }
    if let Some(p) = s.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return bad(format!("top_p {p} is outside (0, 1]"));
        }
    }
    if let Some(p) = s.min_p {
        if !(0.0..=1.0).contains(&p) {
            return bad(format!("min_p {p} is outside 0..=1"));
        }
    }
    if let Some(r) = s.repeat_penalty {
        if !(r > 0.0 && r.is_finite()) {
            return bad(format!("repeat_penalty {r} must be positive"));
        }
    }
    if s.stop.len() > 16 || s.stop.iter().any(|x| x.is_empty() || x.len() > 256) {
        return bad("stop: at most 16 non-empty strings of at most 256 bytes".into());
    }
    if s.logprobs.is_some_and(|n| n > 20) {
        return bad("top_logprobs: at most 20".into());
    }
    if spec.max_tokens == Some(0) {
        return bad("max_tokens must be at least 1".into());
    }
    Ok(())
}

fn generation_params(spec: &TaskSpec, max_tokens: usize) -> GenerationParams {
    let s = &spec.sampling;
    let d = spec.sampling_defaults;
    GenerationParams {
        temperature: s.temperature.unwrap_or(d.temperature),
        top_k: s.top_k.unwrap_or(d.top_k),
        top_p: s.top_p.unwrap_or(d.top_p),
        min_p: s.min_p.unwrap_or(d.min_p),
        repeat_penalty: s.repeat_penalty.unwrap_or(d.repeat_penalty),
        seed: s.seed.unwrap_or_else(rand::random),
        max_tokens,
        stop: s.stop.clone(),
        logprobs: s.logprobs,
        determinism: spec.determinism,
    }
}

fn finished_metrics(rec: &TaskRecord, outcome: &str) {
    metrics::counter!(m::TASKS_FINISHED_TOTAL, label::OUTCOME => outcome.to_string()).increment(1);
    metrics::histogram!(m::TASK_DURATION_SECONDS, label::POOL_ID => rec.info.pool_id.clone())
        .record(rec.info.created.elapsed().as_secs_f64());
}

/// Hands queued tasks to the pool as its slots free up.
async fn dispatch_loop(ctl: std::sync::Weak<Control>, entry: Arc<PoolEntry>) {
    loop {
        let next = {
            let mut inner = entry.lock();
            let ready = matches!(inner.status.state, PoolState::Ready);
            if ready && inner.running.len() < inner.status.slots_total {
                let q = inner.queue.pop();
                if let Some(q) = &q {
                    inner.running.insert(q.id.clone(), q.payload.record.clone());
                    metrics::gauge!(m::ADMISSION_QUEUE_DEPTH, label::POOL_ID => entry.id.clone())
                        .set(inner.queue.len() as f64);
                }
                q
            } else {
                None
            }
        };
        match next {
            Some(q) => {
                let Some(c) = ctl.upgrade() else { return };
                tokio::spawn(run_task(c, entry.clone(), q.payload));
            }
            None => entry.wake.notified().await,
        }
    }
}

/// Runs one task on its pool and turns its events into frames.
async fn run_task(ctl: Arc<Control>, entry: Arc<PoolEntry>, q: QueuedTask) {
    let rec = q.record;
    let go = {
        let mut st = rec.lock();
        if st.phase == Phase::Queued {
            st.phase = Phase::Running;
            st.queue_position = 0;
            true
        } else {
            false
        }
    };
    if go {
        drive(&ctl, &entry, &rec, q.exec).await;
    }
    if let Some(s) = &rec.info.session_id {
        ctl.sessions.touch(s, Instant::now());
    }
    entry.lock().running.remove(&rec.info.id);
    entry.wake.notify_one();
}

async fn drive(ctl: &Control, entry: &PoolEntry, rec: &Arc<TaskRecord>, exec: ExecuteRequest) {
    let node = rec.info.node_id.clone();
    let pool_id = rec.info.pool_id.clone();
    // Cluster pools count their dispatches per real node themselves.
    let count = !ctl.settings.pools_span_nodes;
    let mut stream = match entry.client.execute(exec).await {
        Ok(s) => {
            if count {
                metrics::counter!(m::TASKS_DISPATCHED_TOTAL,
                    label::NODE_ID => node, label::OUTCOME => m::outcome::OK)
                .increment(1);
            }
            s
        }
        Err(e) => {
            if count {
                metrics::counter!(m::TASKS_DISPATCHED_TOTAL,
                    label::NODE_ID => node, label::OUTCOME => m::outcome::REJECTED)
                .increment(1);
            }
            fail(rec, e.code, &e.message);
            return;
        }
    };
    let every = ctl.settings.metrics_every_tokens.max(1);
    while let Some(ev) = stream.next().await {
        match ev {
            TaskEvent::Started {
                reused_tokens,
                queue_ms: _,
            } => {
                let now = Instant::now();
                let wait = now.saturating_duration_since(rec.info.created);
                metrics::counter!(m::TASKS_STARTED_TOTAL, label::POOL_ID => pool_id.clone())
                    .increment(1);
                metrics::counter!(m::TOKENS_IN_TOTAL, label::POOL_ID => pool_id.clone())
                    .increment(rec.info.work.tokens_in as u64);
                metrics::histogram!(m::QUEUE_WAIT_SECONDS, label::POOL_ID => pool_id.clone())
                    .record(wait.as_secs_f64());
                if let Some(s) = &rec.info.session_id {
                    ctl.sessions.record_start(s, &pool_id, reused_tokens, now);
                }
                let frame = metrics_frame(
                    ctl,
                    entry,
                    rec,
                    format!(
                        "started on pool {pool_id} after {} ms in queue; {reused_tokens} prompt tokens reused",
                        wait.as_millis()
                    ),
                    Some(reused_tokens),
                );
                let live = {
                    let mut st = rec.lock();
                    st.started_at = Some(now);
                    st.kv_warmth = reused_tokens > 0;
                    st.reused_tokens = reused_tokens;
                    let live = st.phase == Phase::Running;
                    if live {
                        rec.push(&mut st, Frame::Metrics(frame.clone()));
                    }
                    live
                };
                if !live {
                    break;
                }
                info!(parent: &rec.span, human = %frame.human, "stream started");
            }
            TaskEvent::Token(t) => {
                let now = Instant::now();
                let (live, index, prev) = {
                    let mut st = rec.lock();
                    if st.phase != Phase::Running {
                        (false, 0, None)
                    } else {
                        let index = rec.tokens_out.fetch_add(1, Ordering::Relaxed);
                        let prev = st.last_token_at.replace(now);
                        rec.push(
                            &mut st,
                            Frame::Token {
                                index,
                                text: t.text,
                                token_id: t.id,
                                logprob: t.logprob,
                                top_logprobs: t.top_logprobs,
                            },
                        );
                        (true, index, prev)
                    }
                };
                if !live {
                    // Canceled or ended meanwhile: dropping the stream stops the task.
                    break;
                }
                metrics::counter!(m::TOKENS_OUT_TOTAL, label::POOL_ID => pool_id.clone())
                    .increment(1);
                match prev {
                    None => metrics::histogram!(m::TIME_TO_FIRST_TOKEN_SECONDS,
                        label::POOL_ID => pool_id.clone())
                    .record(
                        now.saturating_duration_since(rec.info.created)
                            .as_secs_f64(),
                    ),
                    Some(p) => metrics::histogram!(m::INTER_TOKEN_LATENCY_SECONDS,
                        label::POOL_ID => pool_id.clone())
                    .record(now.saturating_duration_since(p).as_secs_f64()),
                }
                if (index + 1) % every == 0 {
                    let frame = metrics_frame(
                        ctl,
                        entry,
                        rec,
                        format!("{} tokens generated", index + 1),
                        None,
                    );
                    let mut st = rec.lock();
                    if st.phase == Phase::Running {
                        rec.push(&mut st, Frame::Metrics(frame));
                    }
                }
            }
            TaskEvent::Finished(s) => {
                let end = {
                    let mut st = rec.lock();
                    let queue_ms = st
                        .started_at
                        .map(|t| t.saturating_duration_since(rec.info.created).as_millis() as u64)
                        .unwrap_or(0);
                    let kv_warmth = st.kv_warmth;
                    let reason = s.reason;
                    st.finish_reason = reason;
                    match reason {
                        Some(reason) if !s.canceled => {
                            let done = rec.finish(
                                &mut st,
                                Phase::Completed,
                                Frame::End(EndFrame {
                                    tokens_in: s.tokens_in,
                                    tokens_out: s.tokens_out,
                                    decode_ms: s.decode_ms,
                                    prefill_ms: s.prefill_ms,
                                    queue_ms,
                                    reused_tokens: s.reused_tokens,
                                    kv_warmth,
                                    finish_reason: reason,
                                }),
                            );
                            done.then_some((reason, s.tokens_out, s.decode_ms))
                        }
                        _ => {
                            rec.finish(
                                &mut st,
                                Phase::Canceled,
                                Frame::Error {
                                    code: ErrorCode::Canceled,
                                    message: "canceled by the pool".into(),
                                    retriable: false,
                                },
                            );
                            None
                        }
                    }
                };
                if let Some((reason, tokens_out, decode_ms)) = end {
                    finished_metrics(rec, m::outcome::OK);
                    rec.span.record("tokens_out", tokens_out);
                    rec.span.record("decode_time_ms", decode_ms);
                    info!(
                        parent: &rec.span,
                        human = %format!(
                            "finished: {tokens_out} tokens in {decode_ms} ms of decoding ({})",
                            reason.as_str()
                        ),
                        "task finished"
                    );
                }
                return;
            }
            TaskEvent::Failed(e) => {
                fail(rec, e.code, &e.message);
                return;
            }
            TaskEvent::Dispatched { node_id, pool_id } => {
                rec.span.record("node_id", node_id.as_str());
                info!(
                    parent: &rec.span,
                    human = %format!("dispatched to pool {pool_id} on node {node_id}"),
                    "task dispatched"
                );
            }
        }
    }
    // The stream ended early: canceled (we stopped reading) or the pool went away.
    fail(
        rec,
        ErrorCode::WorkerLost,
        "the pool stopped streaming this task",
    );
}

fn fail(rec: &TaskRecord, code: ErrorCode, message: &str) {
    let ended = {
        let mut st = rec.lock();
        rec.finish(
            &mut st,
            Phase::Failed,
            Frame::Error {
                code,
                message: message.to_string(),
                retriable: code.retriable(),
            },
        )
    };
    if ended {
        finished_metrics(rec, &m::code_label(code.as_str()));
        warn!(parent: &rec.span, code = code.as_str(), error = message,
            human = %format!("failed: {message}"), "task failed");
    }
}

fn metrics_frame(
    ctl: &Control,
    entry: &PoolEntry,
    rec: &TaskRecord,
    human: String,
    reused: Option<usize>,
) -> MetricsFrame {
    let (queue_depth, rates) = {
        let inner = entry.lock();
        (inner.queue.len(), inner.rates())
    };
    let _ = ctl;
    let out = rec.tokens_out.load(Ordering::Relaxed);
    let left = rec.info.work.max_tokens.saturating_sub(out);
    let kv_warmth = match reused {
        Some(n) => n > 0,
        None => rec.lock().kv_warmth,
    };
    MetricsFrame {
        queue_depth,
        on_time_probability: admission::on_time_probability(
            rec.info.deadline_ms,
            rec.info.created.elapsed(),
            left as f64 * rates.decode_step_ms,
        ),
        kv_warmth,
        tokens_budget_remaining: left,
        human,
    }
}
