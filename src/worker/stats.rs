//! Live numbers from a pool's engine thread, read by admission (to predict
//! start times from measured rates) and by metrics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct PoolStats {
    slots_total: AtomicUsize,
    slots_busy: AtomicUsize,
    waiting: AtomicUsize,
    kv_used: AtomicUsize,
    kv_capacity: AtomicUsize,
    tokens_processed: AtomicU64,
    rates: Mutex<Rates>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Rates {
    /// Exponential moving averages.
    step_ms: f64,
    /// Prompt tokens per second while prefilling.
    prefill_tps: f64,
    /// Decode steps: milliseconds per step with at least one decoding sequence.
    decode_step_ms: f64,
    samples: u64,
}

/// A consistent view of the stats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsSnapshot {
    pub slots_total: usize,
    pub slots_busy: usize,
    pub waiting: usize,
    pub kv_used_tokens: usize,
    pub kv_capacity_tokens: usize,
    /// Measured milliseconds per decode step (0 before the first).
    pub decode_step_ms: f64,
    /// Measured prompt tokens per second (0 before the first).
    pub prefill_tps: f64,
    pub tokens_processed: u64,
}

const ALPHA: f64 = 0.1;

impl PoolStats {
    pub fn set_slots(&self, total: usize, busy: usize) {
        self.slots_total.store(total, Ordering::Relaxed);
        self.slots_busy.store(busy, Ordering::Relaxed);
    }

    pub fn set_waiting(&self, n: usize) {
        self.waiting.store(n, Ordering::Relaxed);
    }

    pub fn set_kv(&self, used: usize, capacity: usize) {
        self.kv_used.store(used, Ordering::Relaxed);
        self.kv_capacity.store(capacity, Ordering::Relaxed);
    }

    /// Record one engine step of `n_tokens` tokens, `n_decode` of them
    /// decode tokens (one per decoding sequence).
    pub fn record_step(&self, took: Duration, n_tokens: usize, n_decode: usize) {
        self.tokens_processed
            .fetch_add(n_tokens as u64, Ordering::Relaxed);
        let ms = took.as_secs_f64() * 1000.0;
        let mut r = self.rates.lock().unwrap();
        let ema = |old: f64, new: f64, first: bool| {
            if first || old == 0.0 {
                new
            } else {
                old + ALPHA * (new - old)
            }
        };
        let first = r.samples == 0;
        r.step_ms = ema(r.step_ms, ms, first);
        let n_prefill = n_tokens - n_decode;
        if n_prefill > 0 && ms > 0.0 {
            r.prefill_tps = ema(r.prefill_tps, n_prefill as f64 / (ms / 1000.0), false);
        }
        if n_decode > 0 && n_prefill == 0 {
            r.decode_step_ms = ema(r.decode_step_ms, ms, false);
        }
        r.samples += 1;
    }

    /// A first measurement, taken at start-up: a decode step of `step` and
    /// a prefill rate of `prefill_tps`. Replaced by real measurements as
    /// they come.
    pub fn seed(&self, step: Duration, prefill_tps: f64) {
        let ms = step.as_secs_f64() * 1000.0;
        let mut r = self.rates.lock().unwrap();
        if r.decode_step_ms == 0.0 && ms > 0.0 {
            r.decode_step_ms = ms;
        }
        if r.prefill_tps == 0.0 && prefill_tps.is_finite() && prefill_tps > 0.0 {
            r.prefill_tps = prefill_tps;
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let r = *self.rates.lock().unwrap();
        StatsSnapshot {
            slots_total: self.slots_total.load(Ordering::Relaxed),
            slots_busy: self.slots_busy.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            kv_used_tokens: self.kv_used.load(Ordering::Relaxed),
            kv_capacity_tokens: self.kv_capacity.load(Ordering::Relaxed),
            decode_step_ms: r.decode_step_ms,
            prefill_tps: r.prefill_tps,
            tokens_processed: self.tokens_processed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_measurements() {
        let s = PoolStats::default();
        assert_eq!(s.snapshot().decode_step_ms, 0.0);
        s.record_step(Duration::from_millis(10), 4, 4);
        assert!((s.snapshot().decode_step_ms - 10.0).abs() < 1e-9);
        s.record_step(Duration::from_millis(100), 100, 0);
        assert!((s.snapshot().prefill_tps - 1000.0).abs() < 1e-6);
        for _ in 0..200 {
            s.record_step(Duration::from_millis(20), 4, 4);
        }
        assert!((s.snapshot().decode_step_ms - 20.0).abs() < 0.01);
        assert_eq!(s.snapshot().tokens_processed, 4 + 100 + 800);
    }

    #[test]
    fn seed_gives_a_first_rate_and_yields_to_measurements() {
        let s = PoolStats::default();
        s.seed(Duration::from_millis(20), 400.0);
        assert_eq!(s.snapshot().decode_step_ms, 20.0);
        assert_eq!(s.snapshot().prefill_tps, 400.0);
        s.record_step(Duration::from_millis(10), 3, 3);
        let d = s.snapshot().decode_step_ms;
        assert!(d < 20.0 && d > 10.0, "{d}");
    }
}
