//! Task records: each admitted task's state and its event log (the frames
//! that SSE and the OpenAI surface render), plus the store that keeps them
//! for a while after they end so clients can read or resume them.
//!
//! Race-free cancel rests on one rule: frames are only appended under the
//! record's lock, and a token frame only while the task is live. Cancel
//! takes the same lock, appends the terminal frame and marks the task
//! canceled, so once it returns no token frame can follow.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::admission::{Priority, Work};
use crate::transport::{ErrorCode, FinishReason, TokenLogprob};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Canceled => "canceled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Canceled)
    }
}

/// The numbers of a task that ended normally.
#[derive(Debug, Clone, PartialEq)]
pub struct EndFrame {
    pub tokens_in: usize,
    pub tokens_out: usize,
    pub decode_ms: u64,
    pub prefill_ms: u64,
    /// From admission until a slot took the task.
    pub queue_ms: u64,
    pub reused_tokens: usize,
    pub kv_warmth: bool,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsFrame {
    pub queue_depth: usize,
    /// Present when the task has a deadline.
    pub on_time_probability: Option<f64>,
    pub kv_warmth: bool,
    pub tokens_budget_remaining: usize,
    pub human: String,
}

/// One event of a task's stream. Frame `n` has SSE id `n`.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Admission: where the task stands in the queue.
    Started {
        queue_position: usize,
        predicted_start_ms: u64,
    },
    Token {
        /// 0-based index of the generated token.
        index: usize,
        text: String,
        token_id: u32,
        logprob: Option<TokenLogprob>,
        top_logprobs: Vec<TokenLogprob>,
    },
    Metrics(MetricsFrame),
    End(EndFrame),
    Error {
        code: ErrorCode,
        message: String,
        retriable: bool,
    },
}

impl Frame {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Frame::End(_) | Frame::Error { .. })
    }
}

/// What the task asked for, fixed at admission.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub id: String,
    pub correlation_id: String,
    pub pool_id: String,
    pub node_id: String,
    pub model_id: String,
    pub session_id: Option<String>,
    pub priority: Priority,
    pub work: Work,
    pub deadline_ms: Option<u64>,
    pub created_unix_ms: u64,
    pub created: Instant,
}

/// Mutable state, behind the record's lock.
#[derive(Debug)]
pub struct TaskState {
    pub phase: Phase,
    pub frames: Vec<Frame>,
    pub started_at: Option<Instant>,
    pub ended_at: Option<Instant>,
    pub kv_warmth: bool,
    pub reused_tokens: usize,
    pub queue_position: usize,
    pub predicted_start_ms: u64,
    pub finish_reason: Option<FinishReason>,
    pub error: Option<(ErrorCode, String)>,
    pub last_token_at: Option<Instant>,
}

/// One admitted task.
pub struct TaskRecord {
    pub info: TaskInfo,
    /// The task's log span (carries the BRIEF section 5 fields).
    pub span: tracing::Span,
    /// Tokens generated so far (read by predictions without the lock).
    pub tokens_out: AtomicUsize,
    state: Mutex<TaskState>,
    /// Frame count, for readers waiting for more.
    frames_tx: watch::Sender<usize>,
}

impl std::fmt::Debug for TaskRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRecord")
            .field("id", &self.info.id)
            .finish()
    }
}

impl TaskRecord {
    pub fn new(info: TaskInfo, span: tracing::Span, position: usize, predicted: u64) -> TaskRecord {
        let (frames_tx, _) = watch::channel(0);
        TaskRecord {
            info,
            span,
            tokens_out: AtomicUsize::new(0),
            state: Mutex::new(TaskState {
                phase: Phase::Queued,
                frames: Vec::new(),
                started_at: None,
                ended_at: None,
                kv_warmth: false,
                reused_tokens: 0,
                queue_position: position,
                predicted_start_ms: predicted,
                finish_reason: None,
                error: None,
                last_token_at: None,
            }),
            frames_tx,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, TaskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// Append a frame (with the lock held) and wake readers.
    pub fn push(&self, st: &mut TaskState, frame: Frame) {
        st.frames.push(frame);
        self.frames_tx.send_replace(st.frames.len());
    }

    /// End the task with `phase` and a terminal frame, unless it already
    /// ended. Returns false if it had.
    pub fn finish(&self, st: &mut TaskState, phase: Phase, frame: Frame) -> bool {
        if st.phase.is_terminal() {
            return false;
        }
        debug_assert!(phase.is_terminal() && frame.is_terminal());
        st.phase = phase;
        st.ended_at = Some(Instant::now());
        if let Frame::Error { code, message, .. } = &frame {
            st.error = Some((*code, message.clone()));
        }
        self.push(st, frame);
        true
    }

    /// Frames from index `from`, and whether the log is complete.
    pub fn frames_from(&self, from: usize) -> (Vec<Frame>, bool) {
        let st = self.lock();
        let done = st.phase.is_terminal();
        let frames = st
            .frames
            .get(from..)
            .map(<[Frame]>::to_vec)
            .unwrap_or_default();
        (frames, done)
    }

    /// Wakes when frames are appended.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.frames_tx.subscribe()
    }
}

/// Every admitted task, kept `retention` after it ends, at most `max_kept`
/// ended tasks (the oldest ended ones go first).
pub struct TaskStore {
    map: RwLock<HashMap<String, Arc<TaskRecord>>>,
    retention: Duration,
    max_kept: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task id {0:?} is already in use")]
pub struct DuplicateTask(pub String);

impl TaskStore {
    pub fn new(retention: Duration, max_kept: usize) -> TaskStore {
        TaskStore {
            map: RwLock::new(HashMap::new()),
            retention,
            max_kept: max_kept.max(1),
        }
    }

    pub fn insert(&self, rec: Arc<TaskRecord>) -> Result<(), DuplicateTask> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&rec.info.id) {
            return Err(DuplicateTask(rec.info.id.clone()));
        }
        map.insert(rec.info.id.clone(), rec);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Arc<TaskRecord>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn remove(&self, id: &str) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Tasks not yet ended.
    pub fn live(&self) -> Vec<Arc<TaskRecord>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| !r.phase().is_terminal())
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget ended tasks past their retention, and the oldest ended ones
    /// beyond `max_kept`. Returns how many went.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        let mut ended: Vec<(Instant, String)> = Vec::new();
        map.retain(|id, r| match r.lock().ended_at {
            Some(t) if now.saturating_duration_since(t) >= self.retention => false,
            Some(t) => {
                ended.push((t, id.clone()));
                true
            }
            None => true,
        });
        if ended.len() > self.max_kept {
            ended.sort();
            for (_, id) in &ended[..ended.len() - self.max_kept] {
                map.remove(id);
            }
        }
        before - map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Arc<TaskRecord> {
        Arc::new(TaskRecord::new(
            TaskInfo {
                id: id.into(),
                correlation_id: "c".into(),
                pool_id: "p".into(),
                node_id: "local".into(),
                model_id: "m".into(),
                session_id: None,
                priority: Priority::Interactive,
                work: Work::default(),
                deadline_ms: None,
                created_unix_ms: 0,
                created: Instant::now(),
            },
            tracing::Span::none(),
            0,
            0,
        ))
    }

    fn token(i: usize) -> Frame {
        Frame::Token {
            index: i,
            text: "x".into(),
            token_id: 1,
            logprob: None,
            top_logprobs: vec![],
        }
    }

    #[tokio::test]
    async fn frames_are_read_from_an_index_and_wake_readers() {
        let r = record("t");
        let mut rx = r.subscribe();
        {
            let mut st = r.lock();
            r.push(
                &mut st,
                Frame::Started {
                    queue_position: 0,
                    predicted_start_ms: 0,
                },
            );
            r.push(&mut st, token(0));
        }
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 2);
        let (f, done) = r.frames_from(1);
        assert_eq!(f, vec![token(0)]);
        assert!(!done);
        let (f, _) = r.frames_from(5);
        assert!(f.is_empty());
    }

    #[test]
    fn finish_happens_once() {
        let r = record("t");
        let mut st = r.lock();
        let cancel = Frame::Error {
            code: ErrorCode::Canceled,
            message: "x".into(),
            retriable: false,
        };
        assert!(r.finish(&mut st, Phase::Canceled, cancel.clone()));
        assert!(!r.finish(&mut st, Phase::Failed, cancel));
        assert_eq!(st.phase, Phase::Canceled);
        assert_eq!(st.frames.len(), 1);
        assert_eq!(st.error.as_ref().unwrap().0, ErrorCode::Canceled);
    }

    #[tokio::test(start_paused = true)]
    async fn store_retains_then_forgets() {
        let s = TaskStore::new(Duration::from_secs(60), 2);
        for id in ["a", "b", "c", "d"] {
            s.insert(record(id)).unwrap();
        }
        assert_eq!(s.insert(record("a")), Err(DuplicateTask("a".into())));
        let end = |id: &str| {
            let r = s.get(id).unwrap();
            let mut st = r.lock();
            r.finish(
                &mut st,
                Phase::Completed,
                Frame::Error {
                    code: ErrorCode::Internal,
                    message: String::new(),
                    retriable: false,
                },
            );
        };
        end("a");
        tokio::time::advance(Duration::from_secs(1)).await;
        end("b");
        tokio::time::advance(Duration::from_secs(1)).await;
        end("c");
        // Three ended, two kept: the oldest ended goes.
        assert_eq!(s.sweep(Instant::now()), 1);
        assert!(s.get("a").is_none());
        assert_eq!(s.live().len(), 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(s.sweep(Instant::now()), 2);
        assert_eq!(s.len(), 1);
        assert!(s.get("d").is_some());
    }
}
