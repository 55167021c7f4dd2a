//! [`PoolClient`] over an in-process [`worker::Pool`] (home profile, and the
//! worker side of the cloud profile): tokenization with the pool's own
//! tokenizer and chat template, submission to the engine thread, and the
//! conversion of engine events into transport events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{
    BoxFuture, Determinism, ErrorCode, ExecuteRequest, FinishReason, GeneratedToken,
    GenerationParams, PoolClient, PoolState, PoolStatus, PrepareRequest, Prepared, PromptInput,
    TaskEvent, TaskEvents, TaskSummary, TokenLogprob, TransportError,
};
use crate::model::chat_template::ChatMessage;
use crate::model::decode::{self, DecodeParams};
use crate::model::tokenizer::Tokenizer;
use crate::model::{Model, SamplingParams};
use crate::worker::{self, EngineEvent, EngineTask, Pool, PoolError, PoolSpec};

/// Where a model id's file is (the catalog in practice; tests may use a map).
pub trait ModelSource: Send + Sync {
    /// The staged file and its digest, or an error when the id is unknown or
    /// not Active.
    fn resolve(&self, model_id: &str) -> Result<ResolvedModel, TransportError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub path: PathBuf,
    pub sha256: String,
}

/// Prompts longer than this are tokenized on a blocking thread, so a big
/// prompt never stalls the async workers.
const INLINE_TOKENIZE_BYTES: usize = 8 * 1024;

/// An in-process pool.
pub struct LocalPool {
    pool: Arc<Pool>,
    node_id: String,
    models: Arc<dyn ModelSource>,
    /// Cancel flags of the tasks on the engine, by task id.
    cancels: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>,
    /// One reload at a time.
    reload_lock: tokio::sync::Mutex<()>,
}

impl LocalPool {
    pub fn new(pool: Arc<Pool>, node_id: &str, models: Arc<dyn ModelSource>) -> LocalPool {
        LocalPool {
            pool,
            node_id: node_id.to_string(),
            models,
            cancels: Arc::default(),
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The worker pool underneath (for shutdown).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// What the loaded engine accepts: (vocabulary size, context length);
    /// `None` while the pool is stopped.
    pub fn limits(&self) -> Option<(usize, usize)> {
        self.pool.engine().map(|e| (e.model.hparams.n_vocab, e.ctx))
    }

    fn engine(&self) -> Result<Arc<worker::Engine>, TransportError> {
        self.pool.engine().ok_or_else(|| {
            TransportError::new(
                ErrorCode::PoolUnavailable,
                format!("pool {} has no engine (stopped)", self.pool.id),
            )
        })
    }

    fn snapshot(&self) -> PoolStatus {
        let state = match self.pool.state() {
            worker::PoolState::Loading => PoolState::Loading,
            worker::PoolState::Ready => PoolState::Ready,
            worker::PoolState::Draining => PoolState::Draining,
            worker::PoolState::Stopped => PoolState::Stopped,
        };
        let engine = self.pool.engine();
        let stats = engine.as_ref().map(|e| e.stats.snapshot());
        PoolStatus {
            pool_id: self.pool.id.clone(),
            node_id: self.node_id.clone(),
            model_id: engine
                .as_ref()
                .map(|e| e.spec.model_id.clone())
                .unwrap_or_default(),
            model_digest: engine
                .as_ref()
                .map(|e| e.spec.model_digest.clone())
                .unwrap_or_default(),
            state: if engine.is_none() {
                PoolState::Stopped
            } else {
                state
            },
            ctx: engine.as_ref().map_or(0, |e| e.ctx),
            slots_total: stats.map_or(0, |s| s.slots_total),
            slots_busy: stats.map_or(0, |s| s.slots_busy),
            waiting: stats.map_or(0, |s| s.waiting),
            kv_used_tokens: stats.map_or(0, |s| s.kv_used_tokens),
            kv_capacity_tokens: stats.map_or(0, |s| s.kv_capacity_tokens),
            decode_step_ms: stats.map_or(0.0, |s| s.decode_step_ms),
            prefill_tps: stats.map_or(0.0, |s| s.prefill_tps),
            device: "cpu".into(),
            vram_total_bytes: 0,
            vram_free_bytes: 0,
            engine: ENGINE_NAME.into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

impl LocalPool {
    /// Set the pool gauges (BRIEF section 5) from the pool's live state.
    pub fn record_gauges(&self) {
        use crate::telemetry::metrics::{self as m, label};
        let s = self.snapshot();
        let id = self.pool.id.clone();
        let ready = if s.state == PoolState::Ready {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(m::POOL_SLOTS_TOTAL, label::POOL_ID => id.clone())
            .set(s.slots_total as f64);
        metrics::gauge!(m::POOL_SLOTS_FREE, label::POOL_ID => id.clone())
            .set(s.slots_free() as f64);
        metrics::gauge!(m::POOL_READY, label::POOL_ID => id.clone()).set(ready);
        metrics::gauge!(m::POOL_KV_CACHE_USAGE_RATIO, label::POOL_ID => id.clone())
            .set(s.kv_usage_ratio());
        for name in [
            m::POOL_VRAM_TOTAL_BYTES,
            m::POOL_VRAM_FREE_BYTES,
            m::POOL_GPU_UTILIZATION_RATIO,
        ] {
            metrics::gauge!(name, label::POOL_ID => id.clone(), label::DEVICE => s.device.clone())
                .set(0.0);
        }
    }
}

/// The engine name reported in status, capabilities and logs.
pub const ENGINE_NAME: &str = "llorchd-cpu";

fn pool_error(e: PoolError) -> TransportError {
    let code = match &e {
        PoolError::NotReady(..) => ErrorCode::PoolUnready,
        PoolError::EngineGone(_) => ErrorCode::PoolUnavailable,
        PoolError::Load(_) | PoolError::SelfTest(_) => ErrorCode::InvalidParams,
    };
    TransportError::new(code, e.to_string())
}

/// Text → tokens for `model`, rendering chat messages with its template.
fn tokenize(model: &Model, input: &PromptInput) -> Result<Vec<u32>, TransportError> {
    let text = match input {
        PromptInput::Text(t) => std::borrow::Cow::Borrowed(t.as_str()),
        PromptInput::Messages(msgs) => {
            let msgs: Vec<ChatMessage> = msgs
                .iter()
                .map(|m| ChatMessage::new(m.role.clone(), m.content.clone()))
                .collect();
            let rendered = model
                .chat_template
                .as_ref()
                .ok_or_else(|| {
                    TransportError::new(
                        ErrorCode::InvalidParams,
                        "this model has no usable chat template; send a prompt instead",
                    )
                })?
                .render(&msgs, true)
                .map_err(|e| TransportError::new(ErrorCode::InvalidParams, e.to_string()))?;
            std::borrow::Cow::Owned(rendered)
        }
    };
    let tokens = model.tokenizer.encode(&text, true, true);
    if tokens.is_empty() {
        return Err(TransportError::new(
            ErrorCode::InvalidParams,
            "the prompt is empty",
        ));
    }
    Ok(tokens)
}

fn input_bytes(input: &PromptInput) -> usize {
    match input {
        PromptInput::Text(t) => t.len(),
        PromptInput::Messages(m) => m.iter().map(|m| m.content.len() + m.role.len()).sum(),
    }
}

/// The engine's parameters for a task.
pub fn decode_params(p: &GenerationParams) -> DecodeParams {
    DecodeParams {
        sampling: SamplingParams {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            repeat_last_n: SamplingParams::default().repeat_last_n,
            seed: p.seed,
        },
        max_tokens: p.max_tokens,
        stop: p.stop.clone(),
        logprobs: p.logprobs,
    }
}

fn token_logprob(tok: &Tokenizer, id: u32, logprob: f32) -> TokenLogprob {
    let bytes = tok.token_to_piece(id).to_vec();
    TokenLogprob {
        token: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
        logprob,
    }
}

fn finish_reason(r: decode::FinishReason) -> FinishReason {
    match r {
        decode::FinishReason::Stop => FinishReason::Stop,
        decode::FinishReason::Length => FinishReason::Length,
    }
}

/// Engine event → transport event. Returns the event and whether it ends
/// the stream.
fn convert(tok: &Tokenizer, ev: EngineEvent) -> (TaskEvent, bool) {
    match ev {
        EngineEvent::Started {
            reused_tokens,
            queue_ms,
        } => (
            TaskEvent::Started {
                reused_tokens,
                queue_ms,
            },
            false,
        ),
        EngineEvent::Token(t) => (
            TaskEvent::Token(GeneratedToken {
                id: t.id,
                text: t.text,
                logprob: t.logprob.map(|lp| token_logprob(tok, t.id, lp)),
                top_logprobs: t
                    .top_logprobs
                    .iter()
                    .map(|&(id, lp)| token_logprob(tok, id, lp))
                    .collect(),
            }),
            false,
        ),
        EngineEvent::Finished(s) => (
            TaskEvent::Finished(TaskSummary {
                reason: (!s.canceled).then(|| finish_reason(s.reason)),
                tokens_in: s.tokens_in,
                tokens_out: s.tokens_out,
                reused_tokens: s.reused_tokens,
                prefill_ms: s.prefill_ms,
                decode_ms: s.decode_ms,
                canceled: s.canceled,
            }),
            true,
        ),
        EngineEvent::Failed { message } => (
            TaskEvent::Failed(TransportError::new(ErrorCode::Internal, message)),
            true,
        ),
    }
}

/// Cancels the engine task when its event stream is dropped early, and
/// forgets its cancel flag either way.
struct StreamGuard {
    task_id: String,
    flag: Arc<AtomicBool>,
    cancels: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>,
    done: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.done {
            self.flag.store(true, Ordering::Release);
        }
        let mut map = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.task_id)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flag))
        {
            map.remove(&self.task_id);
        }
    }
}

impl PoolClient for LocalPool {
    fn pool_id(&self) -> &str {
        &self.pool.id
    }

    fn status(&self) -> BoxFuture<'_, Result<PoolStatus, TransportError>> {
        Box::pin(async move { Ok(self.snapshot()) })
    }

    fn prepare(&self, req: PrepareRequest) -> BoxFuture<'_, Result<Prepared, TransportError>> {
        Box::pin(async move {
            let engine = self.engine()?;
            if engine.spec.model_id != req.model_id {
                return Err(TransportError::new(
                    ErrorCode::ModelNotFound,
                    format!(
                        "pool {} serves model {}, not {}",
                        self.pool.id, engine.spec.model_id, req.model_id
                    ),
                ));
            }
            let model = engine.model.clone();
            let tokens = if input_bytes(&req.input) <= INLINE_TOKENIZE_BYTES {
                tokenize(&model, &req.input)?
            } else {
                let input = req.input;
                tokio::task::spawn_blocking(move || tokenize(&model, &input))
                    .await
                    .map_err(|e| TransportError::new(ErrorCode::Internal, e.to_string()))??
            };
            Ok(Prepared {
                model_id: req.model_id,
                tokens,
                ctx: engine.ctx,
            })
        })
    }

    fn execute(&self, req: ExecuteRequest) -> BoxFuture<'_, Result<TaskEvents, TransportError>> {
        Box::pin(async move {
            let engine = self.engine()?;
            if engine.spec.model_id != req.model_id {
                return Err(TransportError::new(
                    ErrorCode::PoolUnavailable,
                    format!(
                        "pool {} now serves model {}, not {}",
                        self.pool.id, engine.spec.model_id, req.model_id
                    ),
                ));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let flag = Arc::new(AtomicBool::new(false));
            self.cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(req.task_id.clone(), flag.clone());
            let mut guard = StreamGuard {
                task_id: req.task_id.clone(),
                flag: flag.clone(),
                cancels: self.cancels.clone(),
                done: false,
            };
            let task = EngineTask {
                id: req.task_id,
                prompt: req.prompt,
                params: decode_params(&req.params),
                best_effort_reuse: req.params.determinism == Determinism::BestEffort,
                session: req.session_id,
                events: tx,
                cancel: flag,
                submitted_at: Instant::now(),
            };
            if let Err(e) = self.pool.submit(task) {
                guard.done = true;
                return Err(pool_error(e));
            }
            let tok = engine.model.tokenizer.clone();
            drop(engine);
            let stream = futures_util::stream::unfold(
                (guard, tok, rx),
                |(mut guard, tok, mut rx)| async move {
                    if guard.done {
                        return None;
                    }
                    let (ev, last) = match rx.recv().await {
                        Some(ev) => convert(&tok, ev),
                        None => (
                            TaskEvent::Failed(TransportError::new(
                                ErrorCode::Internal,
                                "the engine stopped before the task ended",
                            )),
                            true,
                        ),
                    };
                    guard.done = last;
                    Some((ev, (guard, tok, rx)))
                },
            );
            Ok(stream.boxed())
        })
    }

    fn cancel(&self, task_id: &str) -> BoxFuture<'_, Result<(), TransportError>> {
        let flag = self
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_id)
            .cloned();
        Box::pin(async move {
            if let Some(f) = flag {
                f.store(true, Ordering::Release);
            }
            Ok(())
        })
    }

    fn drain(&self) -> BoxFuture<'_, Result<PoolStatus, TransportError>> {
        Box::pin(async move {
            self.pool.begin_drain();
            Ok(self.snapshot())
        })
    }

    fn reload(&self, model_id: &str) -> BoxFuture<'_, Result<PoolStatus, TransportError>> {
        let model_id = model_id.to_string();
        Box::pin(async move {
            let _one = self.reload_lock.lock().await;
            let resolved = self.models.resolve(&model_id)?;
            let current = self.engine()?;
            let spec = PoolSpec {
                model_id: model_id.clone(),
                model_path: resolved.path,
                model_digest: resolved.sha256,
                ..current.spec.clone()
            };
            drop(current);
            let pool = self.pool.clone();
            tokio::task::spawn_blocking(move || pool.reload(spec))
                .await
                .map_err(|e| TransportError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(pool_error)?;
            self.pool.resume();
            Ok(self.snapshot())
        })
    }
}
