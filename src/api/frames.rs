//! Reading a task's frames as an async stream, from any index: the one
//! reader behind native SSE (with `Last-Event-ID`) and the OpenAI surface.
//! Optionally cancels the task when dropped before its end (OpenAI clients
//! that hang up).

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::stream::{self, Stream};

use crate::control::{Control, Frame, TaskRecord};

/// Cancels a task when dropped, unless disarmed (the task ended).
pub struct CancelOnDrop {
    control: Arc<Control>,
    task_id: String,
    armed: bool,
}

impl CancelOnDrop {
    pub fn new(control: Arc<Control>, task_id: &str) -> CancelOnDrop {
        CancelOnDrop {
            control,
            task_id: task_id.to_string(),
            armed: true,
        }
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let control = self.control.clone();
        let id = std::mem::take(&mut self.task_id);
        tracing::debug!(job_id = %id, "client went away; canceling its task");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = control.cancel(&id).await;
            });
        }
    }
}

struct Reader {
    rec: Arc<TaskRecord>,
    rx: tokio::sync::watch::Receiver<usize>,
    next: usize,
    pending: VecDeque<(usize, Frame)>,
    done: bool,
    guard: Option<CancelOnDrop>,
}

/// Frames of `rec` from index `from` on, each with its index; ends after
/// the terminal frame.
pub fn frames(
    rec: Arc<TaskRecord>,
    from: usize,
    guard: Option<CancelOnDrop>,
) -> impl Stream<Item = (usize, Frame)> + Send + 'static {
    let rx = rec.subscribe();
    let reader = Reader {
        rec,
        rx,
        next: from,
        pending: VecDeque::new(),
        done: false,
        guard,
    };
    stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(item) = r.pending.pop_front() {
                if item.1.is_terminal() {
                    if let Some(g) = &mut r.guard {
                        g.disarm();
                    }
                }
                return Some((item, r));
            }
            if r.done {
                if let Some(g) = &mut r.guard {
                    g.disarm();
                }
                return None;
            }
            // Mark what we have seen before reading, so no append is missed.
            r.rx.borrow_and_update();
            let (frames, terminal) = r.rec.frames_from(r.next);
            if !frames.is_empty() {
                for f in frames {
                    r.pending.push_back((r.next, f));
                    r.next += 1;
                }
                r.done = terminal;
                continue;
            }
            if terminal {
                r.done = true;
                continue;
            }
            if r.rx.changed().await.is_err() {
                r.done = true;
            }
        }
    })
}
