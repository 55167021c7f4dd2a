//! How the control side reaches a pool: the one interface [`PoolClient`],
//! with wire-independent request, status and event types.
//!
//! `local` implements it over an in-process `worker::Pool` (home profile);
//! the cloud profile adds an HTTP implementation for remote workers. The
//! control side never sees which one it talks to, so there is no home-only
//! code path. JSON wire shapes live in `api`, not here.

pub mod http;
pub mod local;

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::BoxStream;

pub use local::LocalPool;

/// A boxed, sendable future: keeps [`PoolClient`] object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The events of one executed task, in order: `Started`, `Token`*, then one
/// of `Finished` or `Failed`. The stream ends after the last.
pub type TaskEvents = BoxStream<'static, TaskEvent>;

/// The stable error codes of the API (BRIEF section 3). Which HTTP status
/// each maps to is decided in `api` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidParams,
    CtxExceeded,
    DeadlineUnmet,
    ModelNotFound,
    PoolUnready,
    PoolUnavailable,
    AdmissionReject,
    QueueFullDropLru,
    Canceled,
    WorkerLost,
    VramOom,
    HostOom,
    CudaError,
    AuthFailed,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParams => "INVALID_PARAMS",
            ErrorCode::CtxExceeded => "CTX_EXCEEDED",
            ErrorCode::DeadlineUnmet => "DEADLINE_UNMET",
            ErrorCode::ModelNotFound => "MODEL_NOT_FOUND",
            ErrorCode::PoolUnready => "POOL_UNREADY",
            ErrorCode::PoolUnavailable => "POOL_UNAVAILABLE",
            ErrorCode::AdmissionReject => "ADMISSION_REJECT",
            ErrorCode::QueueFullDropLru => "QUEUE_FULL_DROP_LRU",
            ErrorCode::Canceled => "CANCELED",
            ErrorCode::WorkerLost => "WORKER_LOST",
            ErrorCode::VramOom => "VRAM_OOM",
            ErrorCode::HostOom => "HOST_OOM",
            ErrorCode::CudaError => "CUDA_ERROR",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidParams,
        ErrorCode::CtxExceeded,
        ErrorCode::DeadlineUnmet,
        ErrorCode::ModelNotFound,
        ErrorCode::PoolUnready,
        ErrorCode::PoolUnavailable,
        ErrorCode::AdmissionReject,
        ErrorCode::QueueFullDropLru,
        ErrorCode::Canceled,
        ErrorCode::WorkerLost,
        ErrorCode::VramOom,
        ErrorCode::HostOom,
        ErrorCode::CudaError,
        ErrorCode::AuthFailed,
        ErrorCode::Internal,
    ];

    /// Whether the same request may succeed if sent again later.
    pub fn retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::PoolUnready
                | ErrorCode::PoolUnavailable
                | ErrorCode::AdmissionReject
                | ErrorCode::QueueFullDropLru
                | ErrorCode::WorkerLost
                | ErrorCode::VramOom
                | ErrorCode::HostOom
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors at the transport boundary, each with its stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub code: ErrorCode,
    pub message: String,
}

impl TransportError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> TransportError {
        TransportError {
            code,
            message: message.into(),
        }
    }
}

/// A pool's lifecycle state as the control side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Loading,
    Ready,
    Draining,
    Stopped,
    /// The pool did not answer (remote pools only).
    Unreachable,
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Loading => "loading",
            PoolState::Ready => "ready",
            PoolState::Draining => "draining",
            PoolState::Stopped => "stopped",
            PoolState::Unreachable => "unreachable",
        }
    }
}

/// What a pool says about itself: identity, state and measured rates.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    pub pool_id: String,
    /// The node the pool runs on (`local` in the home profile).
    pub node_id: String,
    pub model_id: String,
    /// sha256 of the model file.
    pub model_digest: String,
    pub state: PoolState,
    /// Context length per slot, in tokens.
    pub ctx: usize,
    pub slots_total: usize,
    pub slots_busy: usize,
    /// Tasks handed to the pool and not yet in a slot.
    pub waiting: usize,
    pub kv_used_tokens: usize,
    pub kv_capacity_tokens: usize,
    /// Measured milliseconds per decode step (every decoding sequence
    /// advances one token per step).
    pub decode_step_ms: f64,
    /// Measured prompt tokens per second.
    pub prefill_tps: f64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub vram_total_bytes: u64,
    pub vram_free_bytes: u64,
    pub engine: String,
    pub engine_version: String,
}

impl PoolStatus {
    pub fn slots_free(&self) -> usize {
        self.slots_total.saturating_sub(self.slots_busy)
    }

    pub fn kv_usage_ratio(&self) -> f64 {
        if self.kv_capacity_tokens == 0 {
            0.0
        } else {
            self.kv_used_tokens as f64 / self.kv_capacity_tokens as f64
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// The input of a task before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Raw text, tokenized as is (BOS added as the model asks).
    Text(String),
    /// Chat messages, rendered with the model's chat template (with the
    /// generation prompt) and then tokenized.
    Messages(Vec<Message>),
}

/// What `prepare` needs: the input and the model it is meant for.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareRequest {
    pub model_id: String,
    pub input: PromptInput,
}

/// A tokenized prompt, checked to fit the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub model_id: String,
    pub tokens: Vec<u32>,
    /// The pool's context length, which `tokens` + max_tokens must fit.
    pub ctx: usize,
}

/// Sampling and limits for one task (the engine's `DecodeParams`, without
/// depending on `model`).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub min_p: f32,
    /// 1 disables.
    pub repeat_penalty: f32,
    pub seed: u64,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    pub determinism: Determinism,
}

/// How far a task may reuse KV cached by earlier tasks of its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Determinism {
    /// Reuse only cached prompt positions computed exactly as a fresh run
    /// would compute them: the tokens never depend on what ran before.
    #[default]
    Strict,
    /// Reuse every cached token that matches, generated ones included
    /// (faster multi-turn sessions; the arithmetic may differ in the last
    /// bits from a fresh run).
    BestEffort,
}

/// Placement wishes that a pool spanning several nodes honours when it
/// picks the node (the cloud profile's cluster pools); in-process pools
/// ignore them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlacementHints {
    /// `placement.mode` was `pin`.
    pub pin: bool,
    pub pin_node_id: Option<String>,
    pub pin_pool_id: Option<String>,
    pub prefer: Vec<String>,
    pub avoid: Vec<String>,
    pub allow_fallback: bool,
}

/// A task ready to run on a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteRequest {
    pub task_id: String,
    /// The model the prompt was tokenized for; a pool serving another model
    /// (after a reload) refuses the task.
    pub model_id: String,
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    /// Prefer the slot (and KV cache) this session used last.
    pub session_id: Option<String>,
    /// Forwarded to remote workers (`X-Correlation-Id`) so that logs join
    /// across processes.
    pub correlation_id: String,
    pub hints: PlacementHints,
}

/// Why generation ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A candidate token with its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text (lossy UTF-8 of its bytes).
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    pub id: u32,
    /// Text released by this token; may be empty while an incomplete UTF-8
    /// sequence or a possible stop string is held back.
    pub text: String,
    /// Present when logprobs were asked for.
    pub logprob: Option<TokenLogprob>,
    pub top_logprobs: Vec<TokenLogprob>,
}

/// The end of a task that ran.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSummary {
    /// None when canceled.
    pub reason: Option<FinishReason>,
    pub tokens_in: usize,
    pub tokens_out: usize,
    /// Prompt tokens whose KV cache was reused from an earlier sequence.
    pub reused_tokens: usize,
    pub prefill_ms: u64,
    pub decode_ms: u64,
    pub canceled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Started {
        reused_tokens: usize,
        /// Time spent waiting inside the pool before a slot took it.
        queue_ms: u64,
    },
    Token(GeneratedToken),
    Finished(TaskSummary),
    Failed(TransportError),
    /// A pool spanning nodes handed the task to a worker pool (again, when
    /// a worker was lost before the first token). In-process pools never
    /// send it; it may come before or after `Started`.
    Dispatched {
        node_id: String,
        pool_id: String,
    },
}

/// The control side's handle on one pool, local or remote.
///
/// Methods return boxed futures so that `Arc<dyn PoolClient>` works.
pub trait PoolClient: Send + Sync {
    /// The pool's id (stable for the client's life).
    fn pool_id(&self) -> &str;

    /// Current identity, state and measured rates (a health check).
    fn status(&self) -> BoxFuture<'_, Result<PoolStatus, TransportError>>;

    /// Tokenize `req` for the pool's model (rendering chat messages with its
    /// template) and report the context it must fit.
    fn prepare(&self, req: PrepareRequest) -> BoxFuture<'_, Result<Prepared, TransportError>>;

    /// Start a task; its events follow on the returned stream. Dropping the
    /// stream before its end cancels the task.
    fn execute(&self, req: ExecuteRequest) -> BoxFuture<'_, Result<TaskEvents, TransportError>>;

    /// Stop a task at the pool's next step. Unknown or finished ids are not
    /// an error.
    fn cancel(&self, task_id: &str) -> BoxFuture<'_, Result<(), TransportError>>;

    /// Stop taking new tasks; running ones continue.
    fn drain(&self) -> BoxFuture<'_, Result<PoolStatus, TransportError>>;

    /// Load `model_id` beside the current model and swap when it has passed
    /// its self-test; on failure the current model keeps serving. A drained
    /// pool is Ready again after a successful reload.
    fn reload(&self, model_id: &str) -> BoxFuture<'_, Result<PoolStatus, TransportError>>;
}
