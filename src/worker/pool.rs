//! A pool: one model, N slots, one engine thread. Lifecycle: load → one-token
//! self-test → Ready; drain; atomic reload (the new model loads and passes
//! its self-test beside the old one, which keeps serving until the swap; a
//! failed reload leaves the old one in place).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::cpu::Isa;
use crate::model::{BatchEntry, Forward, Model, ModelError};

use super::scheduler::{EngineCommand, EngineEvent, EngineTask, Scheduler, SchedulerConfig};
use super::stats::{PoolStats, StatsSnapshot};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("loading model: {0}")]
    Load(#[from] ModelError),
    #[error("self-test failed: {0}")]
    SelfTest(String),
    #[error("pool {0} is not ready ({1})")]
    NotReady(String, &'static str),
    #[error("engine thread for pool {0} has stopped")]
    EngineGone(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Loading,
    Ready,
    Draining,
    Stopped,
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Loading => "loading",
            PoolState::Ready => "ready",
            PoolState::Draining => "draining",
            PoolState::Stopped => "stopped",
        }
    }
}

/// What a pool is built from.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub id: String,
    pub model_id: String,
    pub model_path: PathBuf,
    /// Content digest of the model file (sha256 hex), for registration.
    pub model_digest: String,
    pub slots: usize,
    /// 0: the model's training context, capped at 4096.
    pub ctx: usize,
    pub prefill_chunk: usize,
    pub threads: usize,
    pub isa: Isa,
}

/// One loaded model with its engine thread.
pub struct Engine {
    pub spec: PoolSpec,
    pub model: Arc<Model>,
    pub ctx: usize,
    pub stats: Arc<PoolStats>,
    tx: Sender<EngineCommand>,
    thread: Option<JoinHandle<()>>,
    pub loaded_at: Instant,
}

impl Engine {
    /// Load the model, run a one-token self-test, start the engine thread.
    pub fn start(spec: PoolSpec) -> Result<Engine, PoolError> {
        let model = Model::load(&spec.model_path)?;
        let ctx = if spec.ctx == 0 {
            model.hparams.n_ctx_train.min(4096)
        } else {
            spec.ctx.min(model.hparams.n_ctx_train.max(1))
        };
        let mut fw = Forward::new(spec.threads.max(1), spec.isa);
        self_test(&model, &mut fw)?;
        let stats = Arc::new(PoolStats::default());
        // Admission predicts start times from measured rates; until real
        // traffic is measured, a short warm measurement stands in.
        let (prefill_tps, step) = measure_rates(&model, &mut fw)?;
        stats.seed(step, prefill_tps);
        let (tx, rx) = mpsc::channel();
        let sched = Scheduler::new(
            model.clone(),
            fw,
            SchedulerConfig {
                slots: spec.slots,
                ctx,
                prefill_chunk: spec.prefill_chunk,
            },
            stats.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("llorchd-pool-{}", spec.id))
            .spawn(move || sched.run(rx))
            .map_err(|e| PoolError::SelfTest(format!("spawn engine thread: {e}")))?;
        Ok(Engine {
            spec,
            model,
            ctx,
            stats,
            tx,
            thread: Some(thread),
            loaded_at: Instant::now(),
        })
    }

    pub fn submit(&self, task: EngineTask) -> Result<(), PoolError> {
        self.tx
            .send(EngineCommand::Submit(task))
            .map_err(|_| PoolError::EngineGone(self.spec.id.clone()))
    }

    /// Let running work finish, then stop the thread (blocks until it has).
    pub fn shutdown(mut self) {
        let _ = self.tx.send(EngineCommand::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.tx.send(EngineCommand::Shutdown);
    }
}

/// Decode one token from BOS (or token 0) and check the logits are finite.
fn self_test(model: &Model, fw: &mut Forward) -> Result<(), PoolError> {
    let mut cache = model.new_cache(2);
    let tok = model.tokenizer.bos().unwrap_or(0);
    let mut batch = [BatchEntry {
        cache: &mut cache,
        tokens: &[tok],
        want_logits: true,
        prompt_len: 1,
    }];
    model
        .forward(fw, &mut batch)
        .map_err(|e| PoolError::SelfTest(e.to_string()))?;
    let logits = fw.logits(0, model.hparams.n_vocab);
    if logits.iter().any(|l| !l.is_finite()) {
        return Err(PoolError::SelfTest("non-finite logits".into()));
    }
    Ok(())
}

/// Tokens in the start-up prefill measurement.
const MEASURE_PREFILL: usize = 16;

/// One prefill of a few tokens and one decode step on a warm model (after
/// the self-test touched every weight): prompt tokens per second and the
/// duration of a decode step.
fn measure_rates(model: &Model, fw: &mut Forward) -> Result<(f64, Duration), PoolError> {
    let n = MEASURE_PREFILL
        .min(model.hparams.n_ctx_train.saturating_sub(1))
        .max(1);
    let mut cache = model.new_cache(n + 1);
    let tok = model.tokenizer.bos().unwrap_or(0);
    let prompt = vec![tok; n];
    let mut run = |tokens: &[u32], prompt_len: usize, cache: &mut crate::model::SeqCache| {
        let t0 = Instant::now();
        let mut batch = [BatchEntry {
            cache,
            tokens,
            want_logits: true,
            prompt_len,
        }];
        model
            .forward(fw, &mut batch)
            .map_err(|e| PoolError::SelfTest(e.to_string()))?;
        Ok::<_, PoolError>(t0.elapsed())
    };
    let prefill = run(&prompt, n, &mut cache)?;
    let step = run(&[tok], 0, &mut cache)?;
    let tps = n as f64 / prefill.as_secs_f64().max(1e-6);
    Ok((tps, step))
}

/// A pool as the rest of the worker sees it: a stable id and state around a
/// swappable engine.
pub struct Pool {
    pub id: String,
    engine: RwLock<Option<Arc<Engine>>>,
    state: RwLock<PoolState>,
    draining: AtomicBool,
}

impl Pool {
    /// Load and self-test; the pool is Ready when this returns Ok.
    pub fn start(spec: PoolSpec) -> Result<Arc<Pool>, PoolError> {
        let id = spec.id.clone();
        let engine = Engine::start(spec)?;
        Ok(Arc::new(Pool {
            id,
            engine: RwLock::new(Some(Arc::new(engine))),
            state: RwLock::new(PoolState::Ready),
            draining: AtomicBool::new(false),
        }))
    }

    pub fn state(&self) -> PoolState {
        *self.state.read().unwrap()
    }

    pub fn is_ready(&self) -> bool {
        self.state() == PoolState::Ready
    }

    /// The current engine (model, context, stats).
    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.engine.read().unwrap().clone()
    }

    pub fn stats(&self) -> Option<StatsSnapshot> {
        self.engine().map(|e| e.stats.snapshot())
    }

    pub fn submit(&self, task: EngineTask) -> Result<(), PoolError> {
        match self.state() {
            PoolState::Ready => {}
            s => {
                let _ = task.events.send(EngineEvent::Failed {
                    message: format!("pool {} is {}", self.id, s.as_str()),
                });
                return Err(PoolError::NotReady(self.id.clone(), s.as_str()));
            }
        }
        let engine = self
            .engine()
            .ok_or_else(|| PoolError::EngineGone(self.id.clone()))?;
        engine.submit(task)
    }

    /// Stop accepting new work; running and queued work continues.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
        *self.state.write().unwrap() = PoolState::Draining;
    }

    /// Accept work again after a drain.
    pub fn resume(&self) {
        self.draining.store(false, Ordering::Release);
        let mut st = self.state.write().unwrap();
        if *st == PoolState::Draining {
            *st = PoolState::Ready;
        }
    }

    /// Replace the model. The new engine loads and self-tests while the old
    /// one keeps serving; on success new tasks go to the new engine and the
    /// old one finishes its running work in the background. On failure
    /// nothing changes.
    pub fn reload(&self, spec: PoolSpec) -> Result<(), PoolError> {
        let new = Arc::new(Engine::start(spec)?);
        let old = self.engine.write().unwrap().replace(new);
        if let Some(old) = old {
            std::thread::spawn(move || {
                if let Ok(e) = Arc::try_unwrap(old) {
                    e.shutdown();
                }
            });
        }
        Ok(())
    }

    /// Stop the engine after its running work (blocks).
    pub fn stop(&self) {
        *self.state.write().unwrap() = PoolState::Stopped;
        if let Some(e) = self.engine.write().unwrap().take() {
            if let Ok(e) = Arc::try_unwrap(e) {
                e.shutdown();
            }
        }
    }
}
