//! JSON shapes of the native v2 API (BRIEF section 3), and their
//! conversion to and from the control side's types.

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::control::placement::Mode;
use crate::control::{
    EndFrame, Frame, MaxTokensDefault, MetricsFrame, PlacementSpec, PoolView, Priority,
    SamplingDefaults, SamplingSpec, TaskSpec,
};
use crate::transport::{Determinism, Message, PromptInput};

/// A string or a list of strings (`stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorityWire {
    Interactive,
    Batch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeterminismWire {
    Strict,
    BestEffort,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementModeWire {
    Pin,
    Prefer,
    Auto,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementWire {
    pub mode: Option<PlacementModeWire>,
    pub pin_pool_id: Option<String>,
    pub pin_node_id: Option<String>,
    pub prefer_pools: Vec<String>,
    pub avoid_pools: Vec<String>,
    pub allow_fallback: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageWire {
    pub role: String,
    pub content: String,
}

/// `POST /v2/tasks`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskRequest {
    pub task_id: Option<String>,
    pub session_id: Option<String>,
    /// Only `completion`.
    pub workload: Option<String>,
    pub model_ref: Option<String>,
    pub ctx: Option<usize>,
    pub priority: Option<PriorityWire>,
    pub seed: Option<u64>,
    /// `strict` (default): the tokens never depend on other tasks or on
    /// what the slot ran before. `best_effort`: a session may reuse its
    /// generated tokens' KV as they are.
    pub determinism: Option<DeterminismWire>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<MessageWire>>,
    pub max_tokens: Option<usize>,
    pub deadline_ms: Option<u64>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub stop: Option<OneOrMany>,
    pub placement: Option<PlacementWire>,
}

/// Native default for `max_tokens`.
pub const DEFAULT_MAX_TOKENS: usize = 256;

impl TaskRequest {
    pub fn into_spec(self, correlation_id: String) -> Result<TaskSpec, ApiError> {
        if let Some(w) = &self.workload {
            if w != "completion" {
                return Err(ApiError::invalid(format!(
                    "workload {w:?} is not supported (only \"completion\")"
                )));
            }
        }
        let input = match (self.prompt, self.messages) {
            (Some(p), None) => PromptInput::Text(p),
            (None, Some(m)) if !m.is_empty() => PromptInput::Messages(
                m.into_iter()
                    .map(|m| Message {
                        role: m.role,
                        content: m.content,
                    })
                    .collect(),
            ),
            (None, Some(_)) => return Err(ApiError::invalid("messages is empty")),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "give either prompt or messages, not both",
                ))
            }
            (None, None) => return Err(ApiError::invalid("prompt or messages is required")),
        };
        let placement = self.placement.unwrap_or_default();
        let mode = match placement.mode {
            Some(PlacementModeWire::Pin) => Mode::Pin,
            Some(PlacementModeWire::Prefer) => Mode::Prefer,
            Some(PlacementModeWire::Auto) | None => Mode::Auto,
        };
        if mode == Mode::Pin && placement.pin_pool_id.is_none() && placement.pin_node_id.is_none() {
            return Err(ApiError::invalid(
                "placement.mode \"pin\" needs pin_pool_id or pin_node_id",
            ));
        }
        Ok(TaskSpec {
            task_id: self.task_id,
            correlation_id,
            session_id: self.session_id,
            model_ref: self.model_ref,
            ctx: self.ctx,
            priority: match self.priority {
                Some(PriorityWire::Batch) => Priority::Batch,
                _ => Priority::Interactive,
            },
            input,
            max_tokens: self.max_tokens,
            max_tokens_default: MaxTokensDefault::Fixed(DEFAULT_MAX_TOKENS),
            deadline_ms: self.deadline_ms,
            sampling: SamplingSpec {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                seed: self.seed,
                stop: self.stop.map(OneOrMany::into_vec).unwrap_or_default(),
                logprobs: None,
            },
            sampling_defaults: SamplingDefaults::NATIVE,
            placement: PlacementSpec {
                mode,
                pin_pool_id: placement.pin_pool_id,
                pin_node_id: placement.pin_node_id,
                prefer_pools: placement.prefer_pools,
                avoid_pools: placement.avoid_pools,
                allow_fallback: placement.allow_fallback,
            },
            determinism: match self.determinism {
                Some(DeterminismWire::BestEffort) => Determinism::BestEffort,
                _ => Determinism::Strict,
            },
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Streams {
    pub sse: String,
}

/// `202` to `POST /v2/tasks`.
#[derive(Debug, Serialize)]
pub struct TaskAccepted {
    pub task_id: String,
    pub queue_position: usize,
    pub predicted_start_ms: u64,
    pub backoff_ms: u64,
    pub pool_id: String,
    pub streams: Streams,
}

#[derive(Debug, Serialize)]
pub struct ErrorWire {
    pub code: &'static str,
    pub message: String,
    pub retriable: bool,
}

/// `GET /v2/tasks/{id}`.
#[derive(Debug, Serialize)]
pub struct TaskStatusWire {
    pub task_id: String,
    pub state: &'static str,
    pub pool_id: String,
    pub node_id: String,
    pub model_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub priority: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    pub predicted_start_ms: u64,
    pub tokens_in: usize,
    pub tokens_out: usize,
    pub max_tokens: usize,
    pub kv_warmth: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorWire>,
    pub created_at_ms: u64,
    /// Frames so far; the last SSE id is `events - 1`.
    pub events: usize,
}

/// An SSE frame's event name and JSON data.
pub fn frame_event(frame: &Frame) -> (&'static str, serde_json::Value) {
    use serde_json::json;
    match frame {
        Frame::Started {
            queue_position,
            predicted_start_ms,
        } => (
            "started",
            json!({"queue_position": queue_position, "predicted_start_ms": predicted_start_ms}),
        ),
        Frame::Token { index, text, .. } => ("token", json!({"t": text, "i": index})),
        Frame::Metrics(MetricsFrame {
            queue_depth,
            on_time_probability,
            kv_warmth,
            tokens_budget_remaining,
            human,
        }) => (
            "metrics",
            json!({
                "queue_depth": queue_depth,
                "on_time_probability": on_time_probability,
                "kv_warmth": kv_warmth,
                "tokens_budget_remaining": tokens_budget_remaining,
                "human": human,
            }),
        ),
        Frame::End(EndFrame {
            tokens_in,
            tokens_out,
            decode_ms,
            prefill_ms,
            queue_ms,
            reused_tokens,
            kv_warmth,
            finish_reason,
        }) => (
            "end",
            json!({
                "tokens_out": tokens_out,
                "decode_ms": decode_ms,
                "tokens_in": tokens_in,
                "prefill_ms": prefill_ms,
                "queue_ms": queue_ms,
                "reused_tokens": reused_tokens,
                "kv_warmth": kv_warmth,
                "finish_reason": finish_reason.as_str(),
            }),
        ),
        Frame::Error {
            code,
            message,
            retriable,
        } => (
            "error",
            json!({"code": code.as_str(), "message": message, "retriable": retriable}),
        ),
    }
}

/// A pool in `GET /v2/pools` and after drain/reload.
pub fn pool_json(v: &PoolView) -> serde_json::Value {
    let s = &v.status;
    let state = if v.draining && s.state.as_str() == "ready" {
        "draining"
    } else {
        s.state.as_str()
    };
    serde_json::json!({
        "pool_id": s.pool_id,
        "node_id": s.node_id,
        "model_id": s.model_id,
        "model_digest": s.model_digest,
        "state": state,
        "ready": v.accepting,
        "draining": v.draining,
        "device": s.device,
        "engine": s.engine,
        "engine_version": s.engine_version,
        "ctx": s.ctx,
        "slots_total": s.slots_total,
        "slots_free": s.slots_total.saturating_sub(v.running),
        "running": v.running,
        "queue_depth": v.queue_depth,
        "queue_capacity": v.queue_capacity,
        "decode_step_ms": s.decode_step_ms,
        "prefill_tps": s.prefill_tps,
        "kv_usage_ratio": s.kv_usage_ratio(),
        "vram_total_bytes": s.vram_total_bytes,
        "vram_free_bytes": s.vram_free_bytes,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// How long queued and running tasks may take; default 30 s.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    pub new_model_ref: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageModelRequest {
    /// Catalog id; derived from the file name when absent.
    pub id: Option<String>,
    /// A path on this host.
    pub source: String,
    pub sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelStateRequest {
    /// `Active` or `Retired` (any case).
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_request_maps_to_a_spec() {
        let r: TaskRequest = serde_json::from_str(
            r#"{"prompt":"hi","max_tokens":5,"priority":"batch","seed":7,"stop":"\n",
                "placement":{"mode":"prefer","prefer_pools":["p1"]}}"#,
        )
        .unwrap();
        let s = r.into_spec("c".into()).unwrap();
        assert_eq!(s.priority, Priority::Batch);
        assert_eq!(s.sampling.seed, Some(7));
        assert_eq!(s.sampling.stop, vec!["\n"]);
        assert_eq!(s.placement.mode, Mode::Prefer);
        assert_eq!(s.input, PromptInput::Text("hi".into()));
    }

    #[test]
    fn bad_requests_are_refused() {
        let parse = |j: &str| serde_json::from_str::<TaskRequest>(j);
        assert!(parse(r#"{"prompt":"x","bogus":1}"#).is_err());
        assert!(parse(r#"{"prompt":"x","priority":"urgent"}"#).is_err());
        let spec = |j: &str| parse(j).unwrap().into_spec("c".into());
        assert!(spec(r#"{}"#).is_err());
        assert!(spec(r#"{"prompt":"a","messages":[{"role":"user","content":"b"}]}"#).is_err());
        assert!(spec(r#"{"prompt":"a","workload":"embedding"}"#).is_err());
        assert!(spec(r#"{"prompt":"a","placement":{"mode":"pin"}}"#).is_err());
    }
}
