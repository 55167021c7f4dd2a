//! [`PoolClient`] over HTTP for one pool of a remote worker (cloud
//! profile): prepare, execute with the events streamed back as
//! newline-delimited JSON, cancel, status. Wire shapes are
//! `api::worker_wire`'s.
//!
//! A worker that cannot be reached, or whose stream breaks or falls silent
//! (no keepalive within the client's read timeout), is reported as
//! `WORKER_LOST`; a worker that answers with an error passes its code on.

use std::sync::Arc;

use axum::body::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::{
    BoxFuture, ErrorCode, ExecuteRequest, PoolClient, PoolStatus, PrepareRequest, Prepared,
    TaskEvent, TaskEvents, TransportError,
};
use crate::api::worker_wire::{
    parse_code, ErrorWire, EventWire, ExecuteWire, PrepareWire, PreparedWire, WorkerPoolWire,
    MAX_EVENT_LINE,
};
use crate::net::auth::ApiToken;

/// One pool of one remote worker.
pub struct RemotePool {
    client: reqwest::Client,
    token: Option<Arc<ApiToken>>,
    node_id: String,
    /// Base URL of the worker, without a trailing `/`.
    address: String,
    pool_id: String,
}

impl std::fmt::Debug for RemotePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePool")
            .field("node_id", &self.node_id)
            .field("address", &self.address)
            .field("pool_id", &self.pool_id)
            .finish()
    }
}

/// The message of an error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl RemotePool {
    pub fn new(
        client: reqwest::Client,
        token: Option<Arc<ApiToken>>,
        node_id: &str,
        address: &str,
        pool_id: &str,
    ) -> RemotePool {
        RemotePool {
            client,
            token,
            node_id: node_id.to_string(),
            address: address.trim_end_matches('/').to_string(),
            pool_id: pool_id.to_string(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn lost(&self, what: &str, e: &reqwest::Error) -> TransportError {
        TransportError::new(
            ErrorCode::WorkerLost,
            format!(
                "{what} worker {} ({}): {}",
                self.node_id,
                self.address,
                chain(e)
            ),
        )
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(t) = &self.token {
            r = r.header(reqwest::header::AUTHORIZATION, t.authorization());
        }
        r
    }

    /// Turn a non-success answer into the worker's error.
    async fn refusal(&self, resp: reqwest::Response) -> TransportError {
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<ErrorWire>(&body) {
            Ok(e) => TransportError::new(
                parse_code(&e.code).unwrap_or(ErrorCode::Internal),
                format!("worker {}: {}", self.node_id, e.message),
            ),
            Err(_) => TransportError::new(
                if status.is_server_error() {
                    ErrorCode::WorkerLost
                } else {
                    ErrorCode::Internal
                },
                format!(
                    "worker {} answered HTTP {status}: {}",
                    self.node_id,
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            ),
        }
    }
}

/// Splits a byte stream into NDJSON events; ends with a `Failed` event if
/// the stream breaks or stops before a terminal event.
struct EventReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
    node_id: String,
    tokens: usize,
    done: bool,
}

impl EventReader {
    fn lost(&mut self, why: String) -> TaskEvent {
        self.done = true;
        TaskEvent::Failed(TransportError::new(
            ErrorCode::WorkerLost,
            format!(
                "worker {} was lost after {} token(s): {why}",
                self.node_id, self.tokens
            ),
        ))
    }

    async fn next_event(&mut self) -> Option<TaskEvent> {
        if self.done {
            return None;
        }
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed = serde_json::from_slice::<EventWire>(line)
                    .map_err(|e| e.to_string())
                    .and_then(EventWire::into_event);
                match parsed {
                    Ok(None) => continue, // keepalive
                    Ok(Some(ev)) => {
                        match &ev {
                            TaskEvent::Token(_) => self.tokens += 1,
                            TaskEvent::Finished(_) | TaskEvent::Failed(_) => self.done = true,
                            _ => {}
                        }
                        return Some(ev);
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(TaskEvent::Failed(TransportError::new(
                            ErrorCode::Internal,
                            format!("worker {} sent an unreadable event: {e}", self.node_id),
                        )));
                    }
                }
            }
            if self.buf.len() > MAX_EVENT_LINE {
                self.done = true;
                return Some(TaskEvent::Failed(TransportError::new(
                    ErrorCode::Internal,
                    format!(
                        "worker {} sent an event line longer than {MAX_EVENT_LINE} bytes",
                        self.node_id
                    ),
                )));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    let why = if e.is_timeout() {
                        "the stream fell silent".to_string()
                    } else {
                        chain(&e)
                    };
                    return Some(self.lost(why));
                }
                None => return Some(self.lost("the stream ended early".into())),
            }
        }
    }
}

impl PoolClient for RemotePool {
    fn pool_id(&self) -> &str {
        &self.pool_id
    }

    fn status(&self) -> BoxFuture<'_, Result<PoolStatus, TransportError>> {
        Box::pin(async move {
            let resp = self
                .request(reqwest::Method::GET, "/v2/worker/pools")
                .send()
                .await
                .map_err(|e| self.lost("cannot reach", &e))?;
            if !resp.status().is_success() {
                return Err(self.refusal(resp).await);
            }
            let pools: Vec<WorkerPoolWire> = resp
                .json()
                .await
                .map_err(|e| self.lost("unreadable status from", &e))?;
            pools
                .into_iter()
                .find(|p| p.pool_id == self.pool_id)
                .map(PoolStatus::from)
                .ok_or_else(|| {
                    TransportError::new(
                        ErrorCode::PoolUnavailable,
                        format!("worker {} has no pool {}", self.node_id, self.pool_id),
                    )
                })
        })
    }

    fn prepare(&self, req: PrepareRequest) -> BoxFuture<'_, Result<Prepared, TransportError>> {
        Box::pin(async move {
            let resp = self
                .request(
                    reqwest::Method::POST,
                    &format!("/v2/worker/pools/{}/prepare", self.pool_id),
                )
                .json(&PrepareWire::from(&req))
                .send()
                .await
                .map_err(|e| self.lost("cannot reach", &e))?;
            if !resp.status().is_success() {
                return Err(self.refusal(resp).await);
            }
            let p: PreparedWire = resp
                .json()
                .await
                .map_err(|e| self.lost("unreadable answer from", &e))?;
            Ok(p.into())
        })
    }

    fn execute(&self, req: ExecuteRequest) -> BoxFuture<'_, Result<TaskEvents, TransportError>> {
        Box::pin(async move {
            let mut r = self
                .request(
                    reqwest::Method::POST,
                    &format!("/v2/worker/pools/{}/execute", self.pool_id),
                )
                .json(&ExecuteWire::from(&req));
            if !req.correlation_id.is_empty() {
                r = r.header("x-correlation-id", &req.correlation_id);
            }
            let resp = r.send().await.map_err(|e| self.lost("cannot reach", &e))?;
            if !resp.status().is_success() {
                return Err(self.refusal(resp).await);
            }
            let reader = EventReader {
                body: resp.bytes_stream().boxed(),
                buf: Vec::new(),
                node_id: self.node_id.clone(),
                tokens: 0,
                done: false,
            };
            Ok(futures_util::stream::unfold(reader, |mut r| async move {
                r.next_event().await.map(|ev| (ev, r))
            })
            .boxed())
        })
    }

    fn cancel(&self, task_id: &str) -> BoxFuture<'_, Result<(), TransportError>> {
        let path = format!("/v2/worker/tasks/{task_id}/cancel");
        Box::pin(async move {
            let resp = self
                .request(reqwest::Method::POST, &path)
                .send()
                .await
                .map_err(|e| self.lost("cannot reach", &e))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(self.refusal(resp).await)
            }
        })
    }

    fn drain(&self) -> BoxFuture<'_, Result<PoolStatus, TransportError>> {
        Box::pin(async move {
            Err(TransportError::new(
                ErrorCode::InvalidParams,
                format!(
                    "pool {} on worker {} is drained on the worker (stop it with SIGTERM)",
                    self.pool_id, self.node_id
                ),
            ))
        })
    }

    fn reload(&self, _model_id: &str) -> BoxFuture<'_, Result<PoolStatus, TransportError>> {
        Box::pin(async move {
            Err(TransportError::new(
                ErrorCode::InvalidParams,
                format!(
                    "pool {} on worker {} is reloaded on the worker (change its config and restart it)",
                    self.pool_id, self.node_id
                ),
            ))
        })
    }
}
