//! The OpenAI-compatible surface: `/v1/chat/completions`, `/v1/completions`
//! and `/v1/models`, through the same admission path as `/v2/tasks` (so the
//! same queue, guardrails and 429s). A client that hangs up, streaming or
//! not, cancels its task.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{stream, StreamExt};

use super::error::ApiError;
use super::extract::{ApiJson, CorrelationId};
use super::frames::{self, CancelOnDrop};
use super::openai_wire::*;
use super::AppState;
use crate::control::{
    Frame, MaxTokensDefault, PlacementSpec, Priority, SamplingDefaults, SamplingSpec, TaskRecord,
    TaskSpec,
};
use crate::transport::{Determinism, ErrorCode, PromptInput, TokenLogprob};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// What the handler needs besides the task.
struct Shape {
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    logprobs: bool,
}

const FINGERPRINT: &str = concat!("llorchd-", env!("CARGO_PKG_VERSION"));

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `X-Session-Id` keeps a conversation on the pool with its KV cache.
fn session_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub async fn chat_completions(
    State(app): State<AppState>,
    CorrelationId(cid): CorrelationId,
    headers: HeaderMap,
    body: Result<ApiJson<ChatRequest>, ApiError>,
) -> Response {
    let req = match body {
        Ok(ApiJson(r)) => r,
        Err(e) => return e.openai().into_response(),
    };
    match chat(app, cid, &headers, req).await {
        Ok(r) => r,
        Err(e) => e.openai().into_response(),
    }
}

async fn chat(
    app: AppState,
    cid: String,
    headers: &HeaderMap,
    req: ChatRequest,
) -> Result<Response, ApiError> {
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n must be 1"));
    }
    let logprobs = req.logprobs.unwrap_or(false);
    if req.top_logprobs.is_some() && !logprobs {
        return Err(ApiError::invalid("top_logprobs needs logprobs: true"));
    }
    let messages = chat_messages(req.messages)?;
    let spec = TaskSpec {
        task_id: None,
        correlation_id: cid,
        session_id: session_header(headers),
        model_ref: req.model.clone(),
        ctx: None,
        priority: Priority::Interactive,
        input: PromptInput::Messages(messages),
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        max_tokens_default: MaxTokensDefault::RestOfContext,
        deadline_ms: None,
        sampling: sampling(
            req.temperature,
            req.top_p,
            req.seed,
            req.stop,
            logprobs.then_some(req.top_logprobs.unwrap_or(0)),
        )?,
        sampling_defaults: SamplingDefaults::OPENAI,
        placement: PlacementSpec::default(),
        determinism: Determinism::Strict,
    };
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    run(app, spec, req.stream, Kind::Chat, include_usage, logprobs).await
}

pub async fn completions(
    State(app): State<AppState>,
    CorrelationId(cid): CorrelationId,
    headers: HeaderMap,
    body: Result<ApiJson<CompletionRequest>, ApiError>,
) -> Response {
    let req = match body {
        Ok(ApiJson(r)) => r,
        Err(e) => return e.openai().into_response(),
    };
    match completion(app, cid, &headers, req).await {
        Ok(r) => r,
        Err(e) => e.openai().into_response(),
    }
}

async fn completion(
    app: AppState,
    cid: String,
    headers: &HeaderMap,
    req: CompletionRequest,
) -> Result<Response, ApiError> {
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n must be 1"));
    }
    if req.echo == Some(true) {
        return Err(ApiError::invalid("echo is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix is not supported"));
    }
    let prompt = match req.prompt {
        PromptIn::One(p) => p,
        PromptIn::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptIn::Many(_) => {
            return Err(ApiError::invalid("prompt: exactly one prompt per request"))
        }
    };
    if req.logprobs.is_some_and(|n| n > 5) {
        return Err(ApiError::invalid("logprobs: at most 5"));
    }
    let spec = TaskSpec {
        task_id: None,
        correlation_id: cid,
        session_id: session_header(headers),
        model_ref: req.model.clone(),
        ctx: None,
        priority: Priority::Interactive,
        input: PromptInput::Text(prompt),
        max_tokens: req.max_tokens,
        max_tokens_default: MaxTokensDefault::Fixed(COMPLETIONS_DEFAULT_MAX_TOKENS),
        deadline_ms: None,
        sampling: sampling(req.temperature, req.top_p, req.seed, req.stop, req.logprobs)?,
        sampling_defaults: SamplingDefaults::OPENAI,
        placement: PlacementSpec::default(),
        determinism: Determinism::Strict,
    };
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let logprobs = req.logprobs.is_some();
    run(
        app,
        spec,
        req.stream,
        Kind::Completion,
        include_usage,
        logprobs,
    )
    .await
}

fn sampling(
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<super::wire::OneOrMany>,
    logprobs: Option<usize>,
) -> Result<SamplingSpec, ApiError> {
    let stop = stop.map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > 4 {
        return Err(ApiError::invalid("stop: at most 4 sequences"));
    }
    Ok(SamplingSpec {
        // OpenAI allows 0..=2.
        temperature,
        top_p,
        seed,
        stop,
        logprobs,
        ..SamplingSpec::default()
    })
}

async fn run(
    app: AppState,
    spec: TaskSpec,
    streaming: bool,
    kind: Kind,
    include_usage: bool,
    logprobs: bool,
) -> Result<Response, ApiError> {
    if let Some(t) = spec.sampling.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(format!(
                "temperature {t} is outside 0..=2"
            )));
        }
    }
    let ad = app.control.submit(spec).await?;
    let rec = ad.task.clone();
    let guard = CancelOnDrop::new(app.control.clone(), &rec.info.id);
    let shape = Shape {
        kind,
        id: match kind {
            Kind::Chat => format!("chatcmpl-{}", rec.info.id),
            Kind::Completion => format!("cmpl-{}", rec.info.id),
        },
        model: rec.info.model_id.clone(),
        created: now_secs(),
        include_usage,
        logprobs,
    };
    if streaming {
        Ok(stream_response(rec, guard, shape))
    } else {
        collect_response(rec, guard, shape).await
    }
}

fn top_out(t: &TokenLogprob) -> TopLogprobOut {
    TopLogprobOut {
        token: t.token.clone(),
        logprob: t.logprob,
        bytes: t.bytes.clone(),
    }
}

fn chat_logprob(lp: &Option<TokenLogprob>, top: &[TokenLogprob]) -> Option<TokenLogprobOut> {
    lp.as_ref().map(|lp| TokenLogprobOut {
        token: lp.token.clone(),
        logprob: lp.logprob,
        bytes: lp.bytes.clone(),
        top_logprobs: top.iter().map(top_out).collect(),
    })
}

fn push_completion_logprob(
    out: &mut CompletionLogprobs,
    lp: &Option<TokenLogprob>,
    top: &[TokenLogprob],
    offset: usize,
) {
    if let Some(lp) = lp {
        out.tokens.push(lp.token.clone());
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs.push(
            top.iter()
                .map(|t| (t.token.clone(), serde_json::json!(t.logprob)))
                .collect(),
        );
        out.text_offset.push(offset);
    }
}

fn error_from_frame(code: ErrorCode, message: String) -> ApiError {
    ApiError::new(code, message)
}

async fn collect_response(
    rec: Arc<TaskRecord>,
    guard: CancelOnDrop,
    shape: Shape,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut chat_lp: Vec<TokenLogprobOut> = Vec::new();
    let mut comp_lp = CompletionLogprobs::default();
    let mut s = std::pin::pin!(frames::frames(rec.clone(), 0, Some(guard)));
    let mut end = None;
    while let Some((_, f)) = s.next().await {
        match f {
            Frame::Token {
                text: t,
                logprob,
                top_logprobs,
                ..
            } => {
                if shape.logprobs {
                    match shape.kind {
                        Kind::Chat => chat_lp.extend(chat_logprob(&logprob, &top_logprobs)),
                        Kind::Completion => push_completion_logprob(
                            &mut comp_lp,
                            &logprob,
                            &top_logprobs,
                            text.len(),
                        ),
                    }
                }
                text.push_str(&t);
            }
            Frame::End(e) => end = Some(e),
            Frame::Error { code, message, .. } => return Err(error_from_frame(code, message)),
            Frame::Started { .. } | Frame::Metrics(_) => {}
        }
    }
    let e =
        end.ok_or_else(|| ApiError::new(ErrorCode::Internal, "the task ended without a result"))?;
    let usage = Usage::new(e.tokens_in, e.tokens_out);
    let finish = Some(e.finish_reason.as_str());
    Ok(match shape.kind {
        Kind::Chat => Json(ChatCompletion {
            id: shape.id,
            object: "chat.completion",
            created: shape.created,
            model: shape.model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                },
                logprobs: shape.logprobs.then_some(ChatLogprobs { content: chat_lp }),
                finish_reason: finish,
            }],
            usage,
            system_fingerprint: FINGERPRINT.into(),
        })
        .into_response(),
        Kind::Completion => Json(Completion {
            id: shape.id,
            object: "text_completion",
            created: shape.created,
            model: shape.model,
            choices: vec![CompletionChoice {
                text,
                index: 0,
                logprobs: shape.logprobs.then_some(comp_lp),
                finish_reason: finish,
            }],
            usage: Some(usage),
            system_fingerprint: FINGERPRINT.into(),
        })
        .into_response(),
    })
}

fn data(v: &impl serde::Serialize) -> Event {
    Event::default().data(serde_json::to_string(v).unwrap_or_else(|_| "{}".into()))
}

fn stream_response(rec: Arc<TaskRecord>, guard: CancelOnDrop, shape: Shape) -> Response {
    let shape = Arc::new(shape);
    let chunk = {
        let shape = shape.clone();
        move |delta: Delta,
              text: String,
              lp: Option<TokenLogprobOut>,
              comp_lp: Option<CompletionLogprobs>,
              finish: Option<&'static str>| match shape.kind {
            Kind::Chat => data(&ChatChunk {
                id: shape.id.clone(),
                object: "chat.completion.chunk",
                created: shape.created,
                model: shape.model.clone(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta,
                    logprobs: lp.map(|l| ChatLogprobs { content: vec![l] }),
                    finish_reason: finish,
                }],
                usage: None,
                system_fingerprint: FINGERPRINT.into(),
            }),
            Kind::Completion => data(&Completion {
                id: shape.id.clone(),
                object: "text_completion",
                created: shape.created,
                model: shape.model.clone(),
                choices: vec![CompletionChoice {
                    text,
                    index: 0,
                    logprobs: comp_lp,
                    finish_reason: finish,
                }],
                usage: None,
                system_fingerprint: FINGERPRINT.into(),
            }),
        }
    };
    let first = match shape.kind {
        Kind::Chat => Some(chunk(
            Delta {
                role: Some("assistant"),
                content: Some(String::new()),
            },
            String::new(),
            None,
            None,
            None,
        )),
        Kind::Completion => None,
    };
    let mut offset = 0usize;
    let body = {
        let shape = shape.clone();
        frames::frames(rec, 0, Some(guard)).flat_map(move |(_, f)| {
            let events: Vec<Event> = match f {
                Frame::Token {
                    text,
                    logprob,
                    top_logprobs,
                    ..
                } => {
                    let lp = shape.logprobs.then(|| chat_logprob(&logprob, &top_logprobs)).flatten();
                    let comp_lp = (shape.logprobs && shape.kind == Kind::Completion).then(|| {
                        let mut c = CompletionLogprobs::default();
                        push_completion_logprob(&mut c, &logprob, &top_logprobs, offset);
                        c
                    });
                    offset += text.len();
                    if text.is_empty() && lp.is_none() {
                        vec![]
                    } else {
                        vec![chunk(
                            Delta {
                                role: None,
                                content: Some(text.clone()),
                            },
                            text,
                            if shape.kind == Kind::Chat { lp } else { None },
                            comp_lp,
                            None,
                        )]
                    }
                }
                Frame::End(e) => {
                    let mut v = vec![chunk(
                        Delta::default(),
                        String::new(),
                        None,
                        None,
                        Some(e.finish_reason.as_str()),
                    )];
                    if shape.include_usage {
                        let usage = Usage::new(e.tokens_in, e.tokens_out);
                        v.push(match shape.kind {
                            Kind::Chat => data(&ChatChunk {
                                id: shape.id.clone(),
                                object: "chat.completion.chunk",
                                created: shape.created,
                                model: shape.model.clone(),
                                choices: vec![],
                                usage: Some(usage),
                                system_fingerprint: FINGERPRINT.into(),
                            }),
                            Kind::Completion => data(&Completion {
                                id: shape.id.clone(),
                                object: "text_completion",
                                created: shape.created,
                                model: shape.model.clone(),
                                choices: vec![],
                                usage: Some(usage),
                                system_fingerprint: FINGERPRINT.into(),
                            }),
                        });
                    }
                    v
                }
                Frame::Error { code, message, .. } => {
                    let e = error_from_frame(code, message);
                    vec![data(&serde_json::json!({"error": {
                        "message": e.message,
                        "type": if e.status.is_server_error() { "server_error" } else { "invalid_request_error" },
                        "param": null,
                        "code": code.as_str().to_ascii_lowercase(),
                    }}))]
                }
                Frame::Started { .. } | Frame::Metrics(_) => vec![],
            };
            stream::iter(events)
        })
    };
    let all = stream::iter(first)
        .chain(body)
        .chain(stream::once(async { Event::default().data("[DONE]") }))
        .map(Ok::<_, Infallible>);
    Sse::new(all)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

pub async fn models(State(app): State<AppState>) -> Json<serde_json::Value> {
    let created = now_secs();
    let data: Vec<serde_json::Value> = app
        .control
        .served_models()
        .into_iter()
        .map(|(id, ctx)| {
            serde_json::json!({
                "id": id,
                "object": "model",
                "created": created,
                "owned_by": "llorchd",
                "context_length": ctx,
            })
        })
        .collect();
    Json(serde_json::json!({"object": "list", "data": data}))
}
