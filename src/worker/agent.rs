//! The worker's side of the node protocol: register with every control
//! plane, heartbeat with the current load, retry with backoff while a
//! control plane is down, and say goodbye on shutdown.
//!
//! One loop per control-plane URL, independent of the others (control
//! planes are replicas without consensus; each learns the node from its own
//! registration). A loop registers, then heartbeats every interval; a
//! heartbeat answered 404 or 409 (the control plane forgot the node, or
//! knows another instance of it) makes it register again at once. Failures
//! back off exponentially from 200 ms up to the heartbeat interval, with
//! jitter, so a restarted control plane hears from every worker quickly
//! without a thundering herd.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::StatusCode;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::api::nodes_wire::{
    DeregisterRequest, HeartbeatRequest, RegisterRequest, RegisterResponse, ReportWire,
};
use crate::net::auth::ApiToken;
use crate::telemetry::metrics::{self as m, label, outcome};

/// What the worker reports about itself, read fresh for every message.
pub trait NodeReporter: Send + Sync {
    fn report(&self) -> ReportWire;
}

/// What the agent needs to know.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub node_id: String,
    /// The URL control planes dispatch to.
    pub advertise_url: String,
    pub control_urls: Vec<String>,
    pub heartbeat_interval: Duration,
    pub version: String,
}

/// How one control plane link is doing (for logs, `/readyz` and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStatus {
    pub url: String,
    pub registered: bool,
    /// Consecutive failed attempts.
    pub failures: u32,
    pub last_error: Option<String>,
    pub last_ok: Option<Instant>,
}

/// Why one request to a control plane failed.
#[derive(Debug, Clone)]
enum SendError {
    /// The control plane does not know this node (instance): register.
    NotRegistered,
    /// Refused (401, 400, ...); `outcome` is the metric label.
    Status(StatusCode, String),
    Transport {
        outcome: &'static str,
        message: String,
    },
}

impl SendError {
    fn outcome(&self) -> &'static str {
        match self {
            SendError::NotRegistered => outcome::REJECTED,
            SendError::Status(s, _) if s.is_server_error() => outcome::ERROR,
            SendError::Status(..) => outcome::REJECTED,
            SendError::Transport { outcome, .. } => outcome,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotRegistered => f.write_str("the control plane does not know this node"),
            SendError::Status(s, body) => write!(f, "HTTP {s}: {body}"),
            SendError::Transport { message, .. } => f.write_str(message),
        }
    }
}

struct Inner {
    settings: AgentSettings,
    instance_id: String,
    client: reqwest::Client,
    token: Option<Arc<ApiToken>>,
    reporter: Arc<dyn NodeReporter>,
    /// Strictly increasing over this process's life, across control planes.
    seq: AtomicU64,
    nudge: Notify,
    links: Vec<Mutex<LinkStatus>>,
}

/// The running agent. Dropping it stops the loops without a goodbye; call
/// [`Agent::deregister`] for a clean exit.
pub struct Agent {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
}

fn random_instance_id() -> String {
    let mut b = [0u8; 8];
    rand::rng().fill(&mut b);
    hex::encode(b)
}

impl Agent {
    /// Start one loop per control-plane URL. Must run inside a tokio runtime.
    pub fn start(
        settings: AgentSettings,
        client: reqwest::Client,
        token: Option<Arc<ApiToken>>,
        reporter: Arc<dyn NodeReporter>,
    ) -> Agent {
        let links = settings
            .control_urls
            .iter()
            .map(|u| {
                Mutex::new(LinkStatus {
                    url: u.trim_end_matches('/').to_string(),
                    registered: false,
                    failures: 0,
                    last_error: None,
                    last_ok: None,
                })
            })
            .collect();
        let inner = Arc::new(Inner {
            settings,
            instance_id: random_instance_id(),
            client,
            token,
            reporter,
            seq: AtomicU64::new(0),
            nudge: Notify::new(),
            links,
        });
        let (stop, stop_rx) = watch::channel(false);
        let loops = (0..inner.links.len())
            .map(|i| tokio::spawn(run_link(inner.clone(), i, stop_rx.clone())))
            .collect();
        Agent { inner, stop, loops }
    }

    /// Random per process start; control planes tell a restarted worker
    /// from its previous life by it.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Heartbeat every control plane now (after a state change such as the
    /// start of a drain), instead of at the next interval.
    pub fn nudge(&self) {
        self.inner.nudge.notify_waiters();
    }

    pub fn links(&self) -> Vec<LinkStatus> {
        self.inner
            .links
            .iter()
            .map(|l| l.lock().unwrap().clone())
            .collect()
    }

    /// Stop heartbeating and deregister from every control plane (all at
    /// once, each bounded by `timeout`). Returns the URLs that did not
    /// confirm.
    pub async fn deregister(mut self, timeout: Duration) -> Vec<String> {
        let _ = self.stop.send(true);
        for l in self.loops.drain(..) {
            let _ = l.await;
        }
        let inner = self.inner.clone();
        let calls = inner.links.iter().map(|l| {
            let url = l.lock().unwrap().url.clone();
            let inner = inner.clone();
            async move {
                let ok = tokio::time::timeout(timeout, inner.deregister_one(&url))
                    .await
                    .is_ok_and(|r| r.is_ok());
                (url, ok)
            }
        });
        let results = futures_util::future::join_all(calls).await;
        results
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(u, _)| u)
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for l in &self.loops {
            l.abort();
        }
    }
}

/// Exponential backoff with full jitter between `min` and `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn step(&mut self) -> Duration {
        let cap = self.next;
        self.next = (self.next * 2).min(self.max);
        let lo = cap / 2;
        lo + cap.mul_f64(rand::rng().random_range(0.0..0.5))
    }
}

impl Inner {
    fn request_timeout(&self) -> Duration {
        self.settings
            .heartbeat_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    fn post(&self, url: String) -> reqwest::RequestBuilder {
        let mut r = self.client.post(url).timeout(self.request_timeout());
        if let Some(t) = &self.token {
            r = r.header(reqwest::header::AUTHORIZATION, t.authorization());
        }
        r
    }

    async fn send<T: serde::Serialize>(
        &self,
        url: String,
        body: &T,
    ) -> Result<reqwest::Response, SendError> {
        let r = self.post(url).json(body).send().await.map_err(|e| {
            let outcome = if e.is_timeout() {
                outcome::TIMEOUT
            } else {
                outcome::UNREACHABLE
            };
            SendError::Transport {
                outcome,
                message: error_chain(&e),
            }
        })?;
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT {
            return Err(SendError::NotRegistered);
        }
        let mut body = r.text().await.unwrap_or_default();
        body.truncate(300);
        Err(SendError::Status(status, body))
    }

    async fn register(&self, base: &str) -> Result<RegisterResponse, SendError> {
        let body = RegisterRequest {
            node_id: self.settings.node_id.clone(),
            instance_id: self.instance_id.clone(),
            address: self.settings.advertise_url.clone(),
            version: self.settings.version.clone(),
            report: self.reporter.report(),
        };
        let r = self
            .send(format!("{base}/v2/nodes/register"), &body)
            .await?;
        r.json::<RegisterResponse>()
            .await
            .map_err(|e| SendError::Transport {
                outcome: outcome::ERROR,
                message: format!("unreadable registration answer: {e}"),
            })
    }

    async fn heartbeat(&self, base: &str) -> Result<(), SendError> {
        let body = HeartbeatRequest {
            instance_id: self.instance_id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            report: self.reporter.report(),
        };
        self.send(
            format!("{base}/v2/nodes/{}/heartbeat", self.settings.node_id),
            &body,
        )
        .await
        .map(drop)
    }

    async fn deregister_one(&self, base: &str) -> Result<(), SendError> {
        let body = DeregisterRequest {
            instance_id: Some(self.instance_id.clone()),
        };
        match self
            .send(
                format!("{base}/v2/nodes/{}/deregister", self.settings.node_id),
                &body,
            )
            .await
        {
            // Not known there: nothing to undo.
            Ok(_) | Err(SendError::NotRegistered) => {
                tracing::info!(
                    node_id = %self.settings.node_id,
                    control_plane = %base,
                    human = "deregistered from the control plane",
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    node_id = %self.settings.node_id,
                    control_plane = %base,
                    error = %e,
                    human = "could not deregister; the control plane will mark this node offline after its timeout",
                );
                Err(e)
            }
        }
    }

    fn record(&self, link: usize, res: Result<(), &SendError>, registered: bool) -> u32 {
        let mut l = self.links[link].lock().unwrap();
        l.registered = registered;
        match res {
            Ok(()) => {
                l.failures = 0;
                l.last_error = None;
                l.last_ok = Some(Instant::now());
            }
            Err(e) => {
                l.failures = l.failures.saturating_add(1);
                l.last_error = Some(e.to_string());
            }
        }
        l.failures
    }
}

/// The message and its causes on one line (reqwest hides the interesting
/// part, such as "connection refused", in the source chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn run_link(inner: Arc<Inner>, link: usize, mut stop: watch::Receiver<bool>) {
    let base = inner.links[link].lock().unwrap().url.clone();
    let node_id = inner.settings.node_id.clone();
    let interval = inner.settings.heartbeat_interval;
    let mut backoff = Backoff::new(Duration::from_millis(200), interval);
    let mut registered = false;
    // Wait before the next attempt: the interval after a success, the
    // backoff after a failure.
    let mut wait = Duration::ZERO;
    loop {
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = inner.nudge.notified(), if registered => {}
                _ = stop.changed() => return,
            }
        }
        if *stop.borrow() {
            return;
        }
        if !registered {
            let res = inner.register(&base).await;
            let label_value = match &res {
                Ok(_) => outcome::OK,
                Err(e) => e.outcome(),
            };
            metrics::counter!(m::WORKER_REGISTRATIONS_SENT_TOTAL, label::OUTCOME => label_value)
                .increment(1);
            match res {
                Ok(ans) => {
                    registered = true;
                    let was_failing = inner.record(link, Ok(()), true) > 0;
                    backoff.reset();
                    wait = interval;
                    tracing::info!(
                        node_id = %node_id,
                        control_plane = %base,
                        state = %ans.state,
                        human = if was_failing { "registered with the control plane after failures" } else { "registered with the control plane" },
                    );
                    if interval.as_millis() as u64 * 2 > ans.node_timeout_ms {
                        tracing::warn!(
                            node_id = %node_id,
                            control_plane = %base,
                            heartbeat_interval_ms = interval.as_millis() as u64,
                            node_timeout_ms = ans.node_timeout_ms,
                            human = "the heartbeat interval is more than half the control plane's node timeout; one lost heartbeat will mark this node offline",
                        );
                    }
                }
                Err(e) => {
                    let n = inner.record(link, Err(&e), false);
                    log_failure(&node_id, &base, "registration", &e, n);
                    wait = backoff.step();
                }
            }
            continue;
        }
        let res = inner.heartbeat(&base).await;
        let label_value = match &res {
            Ok(()) => outcome::OK,
            Err(e) => e.outcome(),
        };
        metrics::counter!(m::WORKER_HEARTBEATS_SENT_TOTAL, label::OUTCOME => label_value)
            .increment(1);
        match res {
            Ok(()) => {
                if inner.record(link, Ok(()), true) > 0 {
                    tracing::info!(
                        node_id = %node_id,
                        control_plane = %base,
                        human = "heartbeats reach the control plane again",
                    );
                }
                backoff.reset();
                wait = interval;
            }
            Err(SendError::NotRegistered) => {
                // Register again right away.
                registered = false;
                inner.record(link, Err(&SendError::NotRegistered), false);
                tracing::info!(
                    node_id = %node_id,
                    control_plane = %base,
                    human = "the control plane does not know this node; registering again",
                );
                wait = Duration::ZERO;
            }
            Err(e) => {
                let n = inner.record(link, Err(&e), true);
                log_failure(&node_id, &base, "heartbeat", &e, n);
                wait = backoff.step();
            }
        }
    }
}

/// Warn on the first failure of a streak and every 20th after, so a long
/// outage does not flood the log.
fn log_failure(node_id: &str, base: &str, what: &str, e: &SendError, n: u32) {
    if n == 1 || n.is_multiple_of(20) {
        tracing::warn!(
            node_id = %node_id,
            control_plane = %base,
            error = %e,
            failures = n,
            human = format!("{what} to the control plane failed; retrying with backoff"),
        );
    } else {
        tracing::debug!(node_id = %node_id, control_plane = %base, error = %e, failures = n, "{what} failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let steps: Vec<Duration> = (0..10).map(|_| b.step()).collect();
        assert!(steps[0] >= Duration::from_millis(100) && steps[0] < Duration::from_millis(200));
        assert!(steps.iter().all(|s| *s < Duration::from_secs(2)));
        assert!(steps[9] >= Duration::from_secs(1), "{steps:?}");
        b.reset();
        assert!(b.step() < Duration::from_millis(200));
    }
}
