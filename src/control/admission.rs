//! Admission: a bounded per-pool queue with two priorities, the full-queue
//! policy, the optional token-rate limit, and start-time predictions from
//! the pool's measured rates. Pure logic with no I/O, so it is unit-tested
//! directly; `service` holds one queue per pool behind a lock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::FullQueuePolicy;

/// Interactive tasks always leave the queue before batch tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Interactive,
    Batch,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }
}

/// The work a task asks for, used to predict when the tasks behind it start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Work {
    pub tokens_in: usize,
    pub max_tokens: usize,
}

/// A pool's measured speed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    /// Milliseconds per decode step; each running sequence gains one token
    /// per step.
    pub decode_step_ms: f64,
    /// Prompt tokens per second.
    pub prefill_tps: f64,
}

impl Rates {
    /// Predicted slot time of `w`, in milliseconds: its prefill plus its
    /// full token budget (an upper bound: tasks may stop early).
    pub fn work_ms(&self, w: Work) -> f64 {
        self.prefill_ms(w.tokens_in) + w.max_tokens as f64 * self.decode_step_ms
    }

    pub fn prefill_ms(&self, tokens: usize) -> f64 {
        if self.prefill_tps > 0.0 {
            tokens as f64 * 1000.0 / self.prefill_tps
        } else {
            // No prefill measured yet: a prompt token costs at most a decode step.
            tokens as f64 * self.decode_step_ms
        }
    }
}

/// One queued task and what the caller attached to it.
#[derive(Debug)]
pub struct Queued<T> {
    pub id: String,
    pub priority: Priority,
    pub work: Work,
    pub payload: T,
}

/// Why a task was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The queue is full (policy `reject`, or `drop-lru` with nothing of the
    /// same or lower priority to drop).
    QueueFull,
    /// The pool's token budget per second is spent.
    TokenRate,
}

impl RefusalReason {
    /// The `policy_label` of the 429 body.
    pub fn policy_label(self, policy: FullQueuePolicy) -> &'static str {
        match (self, policy) {
            (RefusalReason::TokenRate, _) => "token-rate",
            (RefusalReason::QueueFull, FullQueuePolicy::Reject) => "reject",
            (RefusalReason::QueueFull, FullQueuePolicy::DropLru) => "drop-lru",
        }
    }
}

/// The answer to [`AdmissionQueue::offer`] when the task got in.
#[derive(Debug)]
pub struct Admitted<T> {
    /// Tasks ahead of it in the queue (0: it starts next).
    pub position: usize,
    /// The task that `drop-lru` pushed out to make room.
    pub dropped: Option<Queued<T>>,
}

/// The answer when it did not.
#[derive(Debug)]
pub struct Refused<T> {
    pub reason: RefusalReason,
    /// Milliseconds until the token budget covers the task (token-rate
    /// refusals); queue-full refusals get theirs from [`retry_after_ms`].
    pub wait_ms: Option<u64>,
    pub task: Queued<T>,
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    level: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u64, burst: u64, now: Instant) -> TokenBucket {
        let burst = if burst == 0 { rate_per_sec } else { burst } as f64;
        TokenBucket {
            rate: rate_per_sec as f64,
            burst,
            level: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.rate).min(self.burst);
        self.at = now;
    }

    /// Take `n` tokens, or say how many milliseconds until they are there.
    /// A task larger than the whole burst needs a full bucket and takes it
    /// all, so big tasks are slowed, never refused forever.
    pub fn try_take(&mut self, n: u64, now: Instant) -> Result<(), u64> {
        self.refill(now);
        let need = (n as f64).min(self.burst);
        if self.level >= need {
            self.level -= need;
            Ok(())
        } else {
            let ms = ((need - self.level) / self.rate * 1000.0).ceil();
            Err((ms as u64).max(1))
        }
    }
}

/// A pool's admission queue.
#[derive(Debug)]
pub struct AdmissionQueue<T> {
    capacity: usize,
    policy: FullQueuePolicy,
    interactive: VecDeque<Queued<T>>,
    batch: VecDeque<Queued<T>>,
    bucket: Option<TokenBucket>,
}

impl<T> AdmissionQueue<T> {
    pub fn new(capacity: usize, policy: FullQueuePolicy, bucket: Option<TokenBucket>) -> Self {
        AdmissionQueue {
            capacity: capacity.max(1),
            policy,
            interactive: VecDeque::new(),
            batch: VecDeque::new(),
            bucket,
        }
    }

    pub fn len(&self) -> usize {
        self.interactive.len() + self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn policy(&self) -> FullQueuePolicy {
        self.policy
    }

    /// Offer a task. Checks the token budget, then room (making room under
    /// `drop-lru` by dropping the least recently enqueued task of the same
    /// or lower priority).
    pub fn offer(&mut self, task: Queued<T>, now: Instant) -> Result<Admitted<T>, Refused<T>> {
        let full = self.len() >= self.capacity;
        let victim_lane = if !full {
            None
        } else {
            match (self.policy, task.priority) {
                (FullQueuePolicy::Reject, _) => {
                    return Err(Refused {
                        reason: RefusalReason::QueueFull,
                        wait_ms: None,
                        task,
                    })
                }
                (FullQueuePolicy::DropLru, Priority::Interactive) if !self.batch.is_empty() => {
                    Some(Priority::Batch)
                }
                (FullQueuePolicy::DropLru, Priority::Interactive) => Some(Priority::Interactive),
                (FullQueuePolicy::DropLru, Priority::Batch) if !self.batch.is_empty() => {
                    Some(Priority::Batch)
                }
                (FullQueuePolicy::DropLru, Priority::Batch) => {
                    return Err(Refused {
                        reason: RefusalReason::QueueFull,
                        wait_ms: None,
                        task,
                    })
                }
            }
        };
        if let Some(bucket) = &mut self.bucket {
            let cost = (task.work.tokens_in + task.work.max_tokens) as u64;
            if let Err(ms) = bucket.try_take(cost, now) {
                return Err(Refused {
                    reason: RefusalReason::TokenRate,
                    wait_ms: Some(ms),
                    task,
                });
            }
        }
        let dropped = victim_lane.and_then(|lane| match lane {
            Priority::Interactive => self.interactive.pop_front(),
            Priority::Batch => self.batch.pop_front(),
        });
        let position = match task.priority {
            Priority::Interactive => {
                self.interactive.push_back(task);
                self.interactive.len() - 1
            }
            Priority::Batch => {
                self.batch.push_back(task);
                self.len() - 1
            }
        };
        Ok(Admitted { position, dropped })
    }

    /// The next task to run: the oldest interactive one, else the oldest batch one.
    pub fn pop(&mut self) -> Option<Queued<T>> {
        self.interactive
            .pop_front()
            .or_else(|| self.batch.pop_front())
    }

    /// Take a task out (canceled while queued).
    pub fn remove(&mut self, id: &str) -> Option<Queued<T>> {
        for lane in [&mut self.interactive, &mut self.batch] {
            if let Some(i) = lane.iter().position(|q| q.id == id) {
                return lane.remove(i);
            }
        }
        None
    }

    /// Tasks ahead of `id` (0: it starts next).
    pub fn position(&self, id: &str) -> Option<usize> {
        self.iter().position(|q| q.id == id)
    }

    /// Every queued task in the order they will start.
    pub fn iter(&self) -> impl Iterator<Item = &Queued<T>> {
        self.interactive.iter().chain(self.batch.iter())
    }

    /// Empty the queue (shutdown, drain deadline), in start order.
    pub fn drain_all(&mut self) -> Vec<Queued<T>> {
        let mut out: Vec<_> = self.interactive.drain(..).collect();
        out.extend(self.batch.drain(..));
        out
    }

    /// The work queued ahead of a new task of `priority`, in start order.
    pub fn work_ahead(&self, priority: Priority) -> impl Iterator<Item = Work> + '_ {
        let batch = match priority {
            Priority::Interactive => None,
            Priority::Batch => Some(self.batch.iter()),
        };
        self.interactive
            .iter()
            .chain(batch.into_iter().flatten())
            .map(|q| q.work)
    }
}

/// When a task starts, in milliseconds from now: the pool's `slots` run the
/// `running` tasks (their predicted remaining milliseconds) and then the
/// queued `ahead` tasks in order, each on the slot that frees first.
pub fn predict_start_ms(
    slots: usize,
    running_remaining_ms: impl IntoIterator<Item = f64>,
    ahead: impl IntoIterator<Item = Work>,
    rates: Rates,
) -> u64 {
    let slots = slots.max(1);
    let mut free_at: Vec<f64> = running_remaining_ms.into_iter().collect();
    free_at.truncate(slots);
    free_at.resize(slots, 0.0);
    let earliest = |free: &[f64]| {
        free.iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, &t)| (i, t))
            .unwrap_or((0, 0.0))
    };
    for w in ahead {
        let (i, t) = earliest(&free_at);
        free_at[i] = t + rates.work_ms(w);
    }
    earliest(&free_at).1.max(0.0).ceil() as u64
}

/// How long a refused client should wait before trying again: until the
/// first running task is predicted to free its slot (and so the head of the
/// queue leaves it), never less than one decode step or 1 ms.
pub fn retry_after_ms(
    running_remaining_ms: impl IntoIterator<Item = f64>,
    queue_len: usize,
    slots: usize,
    rates: Rates,
) -> u64 {
    let first_free = running_remaining_ms
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    let ms = if first_free.is_finite() && queue_len > 0 {
        first_free
    } else if queue_len > 0 {
        // Nothing running but a queue: it drains at the pool's pace.
        rates.decode_step_ms * slots.max(1) as f64
    } else {
        first_free.min(rates.decode_step_ms)
    };
    (ms.max(rates.decode_step_ms).ceil() as u64).max(1)
}

/// A suggested pause before the client sends its next task to this pool:
/// none while the queue has room to spare (under three quarters full), else
/// the predicted time until the queue moves.
pub fn backoff_ms(queue_len: usize, capacity: usize, retry_after_ms: u64) -> u64 {
    if queue_len * 4 < capacity * 3 {
        0
    } else {
        retry_after_ms
    }
}

/// Remaining slot time of a running task, in milliseconds.
pub fn remaining_ms(w: Work, tokens_out: usize, started: bool, rates: Rates) -> f64 {
    let prefill = if started {
        0.0
    } else {
        rates.prefill_ms(w.tokens_in)
    };
    prefill + w.max_tokens.saturating_sub(tokens_out) as f64 * rates.decode_step_ms
}

/// An estimate of the chance a running task ends within its deadline: the
/// time left divided by the predicted time still needed, capped at 1.
pub fn on_time_probability(
    deadline_ms: Option<u64>,
    elapsed: Duration,
    predicted_remaining_ms: f64,
) -> Option<f64> {
    let deadline = deadline_ms? as f64;
    let left = deadline - elapsed.as_secs_f64() * 1000.0;
    if left <= 0.0 {
        return Some(0.0);
    }
    if predicted_remaining_ms <= 0.0 {
        return Some(1.0);
    }
    Some((left / predicted_remaining_ms).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str, p: Priority) -> Queued<()> {
        Queued {
            id: id.into(),
            priority: p,
            work: Work {
                tokens_in: 10,
                max_tokens: 10,
            },
            payload: (),
        }
    }

    fn ids(queue: &AdmissionQueue<()>) -> Vec<&str> {
        queue.iter().map(|q| q.id.as_str()).collect()
    }

    #[test]
    fn interactive_goes_before_batch() {
        let now = Instant::now();
        let mut a = AdmissionQueue::new(8, FullQueuePolicy::Reject, None);
        assert_eq!(a.offer(q("b1", Priority::Batch), now).unwrap().position, 0);
        assert_eq!(a.offer(q("b2", Priority::Batch), now).unwrap().position, 1);
        // An interactive task jumps both batch tasks.
        assert_eq!(
            a.offer(q("i1", Priority::Interactive), now)
                .unwrap()
                .position,
            0
        );
        assert_eq!(
            a.offer(q("i2", Priority::Interactive), now)
                .unwrap()
                .position,
            1
        );
        assert_eq!(a.offer(q("b3", Priority::Batch), now).unwrap().position, 4);
        assert_eq!(ids(&a), ["i1", "i2", "b1", "b2", "b3"]);
        assert_eq!(a.position("b1"), Some(2));
        let order: Vec<String> = std::iter::from_fn(|| a.pop().map(|q| q.id)).collect();
        assert_eq!(order, ["i1", "i2", "b1", "b2", "b3"]);
    }

    #[test]
    fn reject_policy_refuses_when_full() {
        let now = Instant::now();
        let mut a = AdmissionQueue::new(2, FullQueuePolicy::Reject, None);
        a.offer(q("a", Priority::Batch), now).unwrap();
        a.offer(q("b", Priority::Batch), now).unwrap();
        let r = a.offer(q("c", Priority::Interactive), now).unwrap_err();
        assert_eq!(r.reason, RefusalReason::QueueFull);
        assert_eq!(r.task.id, "c");
        assert_eq!(r.reason.policy_label(a.policy()), "reject");
        assert_eq!(ids(&a), ["a", "b"]);
    }

    #[test]
    fn drop_lru_drops_the_oldest_of_same_or_lower_priority() {
        let now = Instant::now();
        let mut a = AdmissionQueue::new(3, FullQueuePolicy::DropLru, None);
        a.offer(q("i1", Priority::Interactive), now).unwrap();
        a.offer(q("b1", Priority::Batch), now).unwrap();
        a.offer(q("b2", Priority::Batch), now).unwrap();
        // Interactive: the oldest batch task goes first.
        let ad = a.offer(q("i2", Priority::Interactive), now).unwrap();
        assert_eq!(ad.dropped.unwrap().id, "b1");
        assert_eq!(ad.position, 1);
        assert_eq!(ids(&a), ["i1", "i2", "b2"]);
        // Batch: drops the oldest batch task.
        let ad = a.offer(q("b3", Priority::Batch), now).unwrap();
        assert_eq!(ad.dropped.unwrap().id, "b2");
        assert_eq!(ids(&a), ["i1", "i2", "b3"]);
        let ad = a.offer(q("i3", Priority::Interactive), now).unwrap();
        assert_eq!(ad.dropped.unwrap().id, "b3");
        // Only interactive left: a batch task cannot push one out.
        let r = a.offer(q("b4", Priority::Batch), now).unwrap_err();
        assert_eq!(r.reason, RefusalReason::QueueFull);
        assert_eq!(r.reason.policy_label(a.policy()), "drop-lru");
        // An interactive task drops the oldest interactive one.
        let ad = a.offer(q("i4", Priority::Interactive), now).unwrap();
        assert_eq!(ad.dropped.unwrap().id, "i1");
        assert_eq!(ids(&a), ["i2", "i3", "i4"]);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn remove_and_positions() {
        let now = Instant::now();
        let mut a = AdmissionQueue::new(8, FullQueuePolicy::Reject, None);
        for id in ["a", "b", "c"] {
            a.offer(q(id, Priority::Batch), now).unwrap();
        }
        assert_eq!(a.remove("b").unwrap().id, "b");
        assert!(a.remove("b").is_none());
        assert_eq!(a.position("c"), Some(1));
        assert_eq!(a.drain_all().len(), 2);
        assert!(a.is_empty());
    }

    #[test]
    fn token_rate_limits_and_refills() {
        let t0 = Instant::now();
        // 100 tokens/s, burst 100: each task costs 20.
        let bucket = TokenBucket::new(100, 0, t0);
        let mut a = AdmissionQueue::new(100, FullQueuePolicy::Reject, Some(bucket));
        for i in 0..5 {
            a.offer(q(&format!("t{i}"), Priority::Interactive), t0)
                .unwrap();
        }
        let r = a.offer(q("t5", Priority::Interactive), t0).unwrap_err();
        assert_eq!(r.reason, RefusalReason::TokenRate);
        assert_eq!(r.wait_ms, Some(200));
        assert_eq!(r.reason.policy_label(FullQueuePolicy::Reject), "token-rate");
        // 200 ms later 20 tokens are back.
        let t1 = t0 + Duration::from_millis(200);
        a.offer(q("t5", Priority::Interactive), t1).unwrap();
        assert!(a.offer(q("t6", Priority::Interactive), t1).is_err());
    }

    #[test]
    fn oversized_task_takes_a_full_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 10, t0);
        assert!(b.try_take(1000, t0).is_ok());
        assert_eq!(b.try_take(1000, t0), Err(1000));
        assert!(b.try_take(1000, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn predictions_follow_measured_rates() {
        let rates = Rates {
            decode_step_ms: 10.0,
            prefill_tps: 1000.0,
        };
        let w = Work {
            tokens_in: 100,
            max_tokens: 50,
        };
        // 100 ms prefill + 50 × 10 ms decode.
        assert_eq!(rates.work_ms(w), 600.0);
        // Idle pool with a free slot: starts now.
        assert_eq!(predict_start_ms(2, [], [], rates), 0);
        // One slot busy for 300 ms, one free: still now.
        assert_eq!(predict_start_ms(2, [300.0], [], rates), 0);
        // Both busy: the first to free.
        assert_eq!(predict_start_ms(2, [300.0, 200.0], [], rates), 200);
        // One task ahead takes the 200 ms slot until 800; next free is 300.
        assert_eq!(predict_start_ms(2, [300.0, 200.0], [w], rates), 300);
        // Two ahead: 200→800 and 300→900; next is 800.
        assert_eq!(predict_start_ms(2, [300.0, 200.0], [w, w], rates), 800);
        // Twice as slow a pool predicts twice the wait.
        let slow = Rates {
            decode_step_ms: 20.0,
            prefill_tps: 500.0,
        };
        assert_eq!(predict_start_ms(1, [0.0], [w, w], slow), 2400);
    }

    #[test]
    fn work_ahead_respects_priority() {
        let now = Instant::now();
        let mut a = AdmissionQueue::new(8, FullQueuePolicy::Reject, None);
        a.offer(q("b", Priority::Batch), now).unwrap();
        a.offer(q("i", Priority::Interactive), now).unwrap();
        assert_eq!(a.work_ahead(Priority::Interactive).count(), 1);
        assert_eq!(a.work_ahead(Priority::Batch).count(), 2);
    }

    #[test]
    fn retry_after_and_backoff() {
        let rates = Rates {
            decode_step_ms: 8.0,
            prefill_tps: 1000.0,
        };
        assert_eq!(retry_after_ms([500.0, 120.5], 4, 2, rates), 121);
        // Nothing running yet a queue: one decode step per slot.
        assert_eq!(retry_after_ms([], 4, 2, rates), 16);
        // No measurement at all still gives a positive wait.
        assert_eq!(retry_after_ms([], 4, 2, Rates::default()), 1);
        assert_eq!(backoff_ms(10, 256, 121), 0);
        assert_eq!(backoff_ms(200, 256, 121), 121);
    }

    #[test]
    fn remaining_and_on_time() {
        let rates = Rates {
            decode_step_ms: 10.0,
            prefill_tps: 1000.0,
        };
        let w = Work {
            tokens_in: 100,
            max_tokens: 50,
        };
        assert_eq!(remaining_ms(w, 0, false, rates), 600.0);
        assert_eq!(remaining_ms(w, 20, true, rates), 300.0);
        assert_eq!(on_time_probability(None, Duration::ZERO, 10.0), None);
        assert_eq!(
            on_time_probability(Some(1000), Duration::from_millis(400), 300.0),
            Some(1.0)
        );
        assert_eq!(
            on_time_probability(Some(1000), Duration::from_millis(850), 300.0),
            Some(0.5)
        );
        assert_eq!(
            on_time_probability(Some(1000), Duration::from_millis(1200), 300.0),
            Some(0.0)
        );
    }
}
