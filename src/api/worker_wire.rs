//! JSON shapes of the dispatch protocol between a control plane and a
//! worker (`/v2/worker/...`), and their conversions to and from the
//! transport types.
//!
//! `execute` answers with a stream of newline-delimited JSON events
//! (`application/x-ndjson`), one [`EventWire`] per line; `keepalive` lines
//! flow while the task is silent (queued on the worker, or a long prefill)
//! so that a control plane can tell a quiet worker from a lost one.

use serde::{Deserialize, Serialize};

use crate::transport::{
    Determinism, ErrorCode, ExecuteRequest, FinishReason, GeneratedToken, GenerationParams,
    Message, PlacementHints, PoolState, PoolStatus, PrepareRequest, Prepared, PromptInput,
    TaskEvent, TaskSummary, TokenLogprob, TransportError,
};

/// Longest event line a control plane accepts from a worker.
pub const MAX_EVENT_LINE: usize = 1 << 20;
/// Largest prompt (in tokens) a worker accepts in one execute request.
pub const MAX_PROMPT_TOKENS: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageWire {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareWire {
    pub model_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageWire>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedWire {
    pub model_id: String,
    pub tokens: Vec<u32>,
    pub ctx: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamsWire {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub seed: u64,
    pub max_tokens: usize,
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub logprobs: Option<usize>,
    /// `strict` (the default when absent) or `best_effort`.
    #[serde(default)]
    pub determinism: DeterminismWire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeterminismWire {
    #[default]
    Strict,
    BestEffort,
}

impl From<Determinism> for DeterminismWire {
    fn from(d: Determinism) -> Self {
        match d {
            Determinism::Strict => DeterminismWire::Strict,
            Determinism::BestEffort => DeterminismWire::BestEffort,
        }
    }
}

impl From<DeterminismWire> for Determinism {
    fn from(d: DeterminismWire) -> Self {
        match d {
            DeterminismWire::Strict => Determinism::Strict,
            DeterminismWire::BestEffort => Determinism::BestEffort,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteWire {
    pub task_id: String,
    pub model_id: String,
    pub prompt: Vec<u32>,
    pub params: ParamsWire,
    #[serde(default)]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogprobWire {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// One line of an execute stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventWire {
    Started {
        reused_tokens: usize,
        queue_ms: u64,
    },
    Token {
        id: u32,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprob: Option<LogprobWire>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        top_logprobs: Vec<LogprobWire>,
    },
    Finished {
        /// `stop`, `length`, or absent when canceled.
        #[serde(default)]
        reason: Option<String>,
        tokens_in: usize,
        tokens_out: usize,
        reused_tokens: usize,
        prefill_ms: u64,
        decode_ms: u64,
        canceled: bool,
    },
    Failed {
        code: String,
        message: String,
    },
    Keepalive,
}

/// An error answer of the dispatch endpoints: `{code, message, retriable}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorWire {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub retriable: bool,
}

/// What `GET /v2/worker/pools` lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerPoolWire {
    pub pool_id: String,
    pub node_id: String,
    pub model_id: String,
    pub model_digest: String,
    pub state: String,
    pub ctx: usize,
    pub slots_total: usize,
    pub slots_busy: usize,
    pub waiting: usize,
    pub kv_used_tokens: usize,
    pub kv_capacity_tokens: usize,
    pub decode_step_ms: f64,
    pub prefill_tps: f64,
    pub device: String,
    pub vram_total_bytes: u64,
    pub vram_free_bytes: u64,
    pub engine: String,
    pub engine_version: String,
}

/// The stable code named `s`, if there is one.
pub fn parse_code(s: &str) -> Option<ErrorCode> {
    ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
}

fn parse_state(s: &str) -> PoolState {
    match s {
        "loading" => PoolState::Loading,
        "ready" => PoolState::Ready,
        "draining" => PoolState::Draining,
        "stopped" => PoolState::Stopped,
        _ => PoolState::Unreachable,
    }
}

impl From<&PrepareRequest> for PrepareWire {
    fn from(r: &PrepareRequest) -> Self {
        let (prompt, messages) = match &r.input {
            PromptInput::Text(t) => (Some(t.clone()), None),
            PromptInput::Messages(m) => (
                None,
                Some(
                    m.iter()
                        .map(|m| MessageWire {
                            role: m.role.clone(),
                            content: m.content.clone(),
                        })
                        .collect(),
                ),
            ),
        };
        PrepareWire {
            model_id: r.model_id.clone(),
            prompt,
            messages,
        }
    }
}

impl PrepareWire {
    pub fn into_request(self) -> Result<PrepareRequest, String> {
        let input = match (self.prompt, self.messages) {
            (Some(p), None) => PromptInput::Text(p),
            (None, Some(m)) => PromptInput::Messages(
                m.into_iter()
                    .map(|m| Message {
                        role: m.role,
                        content: m.content,
                    })
                    .collect(),
            ),
            _ => return Err("exactly one of prompt and messages is required".into()),
        };
        Ok(PrepareRequest {
            model_id: self.model_id,
            input,
        })
    }
}

impl From<Prepared> for PreparedWire {
    fn from(p: Prepared) -> Self {
        PreparedWire {
            model_id: p.model_id,
            tokens: p.tokens,
            ctx: p.ctx,
        }
    }
}

impl From<PreparedWire> for Prepared {
    fn from(p: PreparedWire) -> Self {
        Prepared {
            model_id: p.model_id,
            tokens: p.tokens,
            ctx: p.ctx,
        }
    }
}

impl From<&ExecuteRequest> for ExecuteWire {
    fn from(r: &ExecuteRequest) -> Self {
        let p = &r.params;
        ExecuteWire {
            task_id: r.task_id.clone(),
            model_id: r.model_id.clone(),
            prompt: r.prompt.clone(),
            params: ParamsWire {
                temperature: p.temperature,
                top_k: p.top_k,
                top_p: p.top_p,
                min_p: p.min_p,
                repeat_penalty: p.repeat_penalty,
                seed: p.seed,
                max_tokens: p.max_tokens,
                stop: p.stop.clone(),
                logprobs: p.logprobs,
                determinism: p.determinism.into(),
            },
            session_id: r.session_id.clone(),
        }
    }
}

impl ExecuteWire {
    /// The transport request; the correlation id travels as a header.
    pub fn into_request(self, correlation_id: String) -> ExecuteRequest {
        let p = self.params;
        ExecuteRequest {
            task_id: self.task_id,
            model_id: self.model_id,
            prompt: self.prompt,
            params: GenerationParams {
                temperature: p.temperature,
                top_k: p.top_k,
                top_p: p.top_p,
                min_p: p.min_p,
                repeat_penalty: p.repeat_penalty,
                seed: p.seed,
                max_tokens: p.max_tokens,
                stop: p.stop,
                logprobs: p.logprobs,
                determinism: p.determinism.into(),
            },
            session_id: self.session_id,
            correlation_id,
            hints: PlacementHints::default(),
        }
    }
}

fn lp_to_wire(l: &TokenLogprob) -> LogprobWire {
    LogprobWire {
        token: l.token.clone(),
        bytes: l.bytes.clone(),
        logprob: l.logprob,
    }
}

fn lp_from_wire(l: LogprobWire) -> TokenLogprob {
    TokenLogprob {
        token: l.token,
        bytes: l.bytes,
        logprob: l.logprob,
    }
}

impl EventWire {
    /// The wire form of a transport event (`Dispatched` is the control
    /// plane's own and never crosses the wire).
    pub fn from_event(ev: &TaskEvent) -> Option<EventWire> {
        Some(match ev {
            TaskEvent::Started {
                reused_tokens,
                queue_ms,
            } => EventWire::Started {
                reused_tokens: *reused_tokens,
                queue_ms: *queue_ms,
            },
            TaskEvent::Token(t) => EventWire::Token {
                id: t.id,
                text: t.text.clone(),
                logprob: t.logprob.as_ref().map(lp_to_wire),
                top_logprobs: t.top_logprobs.iter().map(lp_to_wire).collect(),
            },
            TaskEvent::Finished(s) => EventWire::Finished {
                reason: s.reason.map(|r| r.as_str().to_string()),
                tokens_in: s.tokens_in,
                tokens_out: s.tokens_out,
                reused_tokens: s.reused_tokens,
                prefill_ms: s.prefill_ms,
                decode_ms: s.decode_ms,
                canceled: s.canceled,
            },
            TaskEvent::Failed(e) => EventWire::Failed {
                code: e.code.as_str().to_string(),
                message: e.message.clone(),
            },
            TaskEvent::Dispatched { .. } => return None,
        })
    }

    /// The transport event; `None` for a keepalive.
    pub fn into_event(self) -> Result<Option<TaskEvent>, String> {
        Ok(Some(match self {
            EventWire::Started {
                reused_tokens,
                queue_ms,
            } => TaskEvent::Started {
                reused_tokens,
                queue_ms,
            },
            EventWire::Token {
                id,
                text,
                logprob,
                top_logprobs,
            } => TaskEvent::Token(GeneratedToken {
                id,
                text,
                logprob: logprob.map(lp_from_wire),
                top_logprobs: top_logprobs.into_iter().map(lp_from_wire).collect(),
            }),
            EventWire::Finished {
                reason,
                tokens_in,
                tokens_out,
                reused_tokens,
                prefill_ms,
                decode_ms,
                canceled,
            } => TaskEvent::Finished(TaskSummary {
                reason: match reason.as_deref() {
                    None => None,
                    Some("stop") => Some(FinishReason::Stop),
                    Some("length") => Some(FinishReason::Length),
                    Some(r) => return Err(format!("unknown finish reason {r:?}")),
                },
                tokens_in,
                tokens_out,
                reused_tokens,
                prefill_ms,
                decode_ms,
                canceled,
            }),
            EventWire::Failed { code, message } => TaskEvent::Failed(TransportError::new(
                parse_code(&code).unwrap_or(ErrorCode::Internal),
                message,
            )),
            EventWire::Keepalive => return Ok(None),
        }))
    }
}

impl From<&PoolStatus> for WorkerPoolWire {
    fn from(s: &PoolStatus) -> Self {
        WorkerPoolWire {
            pool_id: s.pool_id.clone(),
            node_id: s.node_id.clone(),
            model_id: s.model_id.clone(),
            model_digest: s.model_digest.clone(),
            state: s.state.as_str().to_string(),
            ctx: s.ctx,
            slots_total: s.slots_total,
            slots_busy: s.slots_busy,
            waiting: s.waiting,
            kv_used_tokens: s.kv_used_tokens,
            kv_capacity_tokens: s.kv_capacity_tokens,
            decode_step_ms: s.decode_step_ms,
            prefill_tps: s.prefill_tps,
            device: s.device.clone(),
            vram_total_bytes: s.vram_total_bytes,
            vram_free_bytes: s.vram_free_bytes,
            engine: s.engine.clone(),
            engine_version: s.engine_version.clone(),
        }
    }
}

impl From<WorkerPoolWire> for PoolStatus {
    fn from(w: WorkerPoolWire) -> Self {
        PoolStatus {
            state: parse_state(&w.state),
            pool_id: w.pool_id,
            node_id: w.node_id,
            model_id: w.model_id,
            model_digest: w.model_digest,
            ctx: w.ctx,
            slots_total: w.slots_total,
            slots_busy: w.slots_busy,
            waiting: w.waiting,
            kv_used_tokens: w.kv_used_tokens,
            kv_capacity_tokens: w.kv_capacity_tokens,
            decode_step_ms: w.decode_step_ms,
            prefill_tps: w.prefill_tps,
            device: w.device,
            vram_total_bytes: w.vram_total_bytes,
            vram_free_bytes: w.vram_free_bytes,
            engine: w.engine,
            engine_version: w.engine_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_lines() {
        let events = vec![
            TaskEvent::Started {
                reused_tokens: 3,
                queue_ms: 7,
            },
            TaskEvent::Token(GeneratedToken {
                id: 42,
                text: "hé".into(),
                logprob: Some(TokenLogprob {
                    token: "hé".into(),
                    bytes: "hé".as_bytes().to_vec(),
                    logprob: -0.5,
                }),
                top_logprobs: vec![],
            }),
            TaskEvent::Finished(TaskSummary {
                reason: Some(FinishReason::Length),
                tokens_in: 5,
                tokens_out: 1,
                reused_tokens: 3,
                prefill_ms: 2,
                decode_ms: 4,
                canceled: false,
            }),
            TaskEvent::Failed(TransportError::new(ErrorCode::VramOom, "oom")),
        ];
        for ev in events {
            let line = serde_json::to_string(&EventWire::from_event(&ev).unwrap()).unwrap();
            assert!(!line.contains('\n'));
            let back: EventWire = serde_json::from_str(&line).unwrap();
            assert_eq!(back.into_event().unwrap(), Some(ev));
        }
        let k: EventWire = serde_json::from_str(r#"{"event":"keepalive"}"#).unwrap();
        assert_eq!(k.into_event().unwrap(), None);
        let bad: EventWire = serde_json::from_str(
            r#"{"event":"finished","reason":"weird","tokens_in":1,"tokens_out":1,"reused_tokens":0,"prefill_ms":0,"decode_ms":0,"canceled":false}"#,
        )
        .unwrap();
        assert!(bad.into_event().is_err());
        // Unknown codes degrade to INTERNAL rather than failing the stream.
        let f: EventWire =
            serde_json::from_str(r#"{"event":"failed","code":"NEW_CODE","message":"m"}"#).unwrap();
        match f.into_event().unwrap() {
            Some(TaskEvent::Failed(e)) => assert_eq!(e.code, ErrorCode::Internal),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn execute_carries_determinism_and_defaults_to_strict() {
        let req = ExecuteRequest {
            task_id: "t".into(),
            model_id: "m".into(),
            prompt: vec![1, 2, 3],
            params: GenerationParams {
                temperature: 0.5,
                top_k: 40,
                top_p: 0.9,
                min_p: 0.05,
                repeat_penalty: 1.1,
                seed: 7,
                max_tokens: 16,
                stop: vec!["\n".into()],
                logprobs: Some(2),
                determinism: Determinism::BestEffort,
            },
            session_id: Some("s".into()),
            correlation_id: "c".into(),
            hints: PlacementHints::default(),
        };
        let line = serde_json::to_string(&ExecuteWire::from(&req)).unwrap();
        assert!(line.contains(r#""determinism":"best_effort""#), "{line}");
        let back: ExecuteWire = serde_json::from_str(&line).unwrap();
        assert_eq!(back.into_request("c".into()), req);
        // A peer that does not send the field gets strict.
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["params"].as_object_mut().unwrap().remove("determinism");
        let old: ExecuteWire = serde_json::from_value(v).unwrap();
        assert_eq!(
            old.into_request("c".into()).params.determinism,
            Determinism::Strict
        );
    }

    #[test]
    fn prepare_needs_exactly_one_input() {
        let both = PrepareWire {
            model_id: "m".into(),
            prompt: Some("a".into()),
            messages: Some(vec![]),
        };
        assert!(both.into_request().is_err());
        let none = PrepareWire {
            model_id: "m".into(),
            prompt: None,
            messages: None,
        };
        assert!(none.into_request().is_err());
        let req = PrepareRequest {
            model_id: "m".into(),
            input: PromptInput::Messages(vec![Message {
                role: "user".into(),
                content: "hi".into(),
            }]),
        };
        assert_eq!(PrepareWire::from(&req).into_request().unwrap(), req);
    }
}
