//! Continuous batching over a pool's slots, on the pool's engine thread.
//!
//! Each step: take newly submitted tasks into free slots (reusing the
//! longest cached prefix), drop canceled tasks, then build one batch from
//! every running sequence: one token for those decoding, a chunk of prompt
//! for those prefilling (bounded per step, so a long prompt never stalls
//! running streams for long), run the forward pass, and sample. Sequences
//! join and leave between steps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::model::decode::{DecodeParams, FinishReason, SequenceDecoder, TokenOut};
use crate::model::forward::ubatch_of;
use crate::model::{BatchEntry, Forward, Model, SeqCache};

use super::stats::PoolStats;

/// A task as the engine runs it: prompt already tokenized and checked
/// against the context.
pub struct EngineTask {
    pub id: String,
    pub prompt: Vec<u32>,
    pub params: DecodeParams,
    /// Prefer the slot this session used last (its KV cache).
    pub session: Option<String>,
    pub events: UnboundedSender<EngineEvent>,
    pub cancel: Arc<AtomicBool>,
    pub submitted_at: Instant,
    /// `determinism: best_effort`: reuse every cached token that matches,
    /// including generated ones. Otherwise (strict) only cached prompt
    /// tokens computed exactly as a fresh run would compute them are
    /// reused, so results never depend on what ran before.
    pub best_effort_reuse: bool,
}

/// What a running task reports, in order: `Started`, `Token`*, then one of
/// `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    Started {
        /// Prompt tokens whose KV was reused from an earlier sequence.
        reused_tokens: usize,
        queue_ms: u64,
    },
    Token(TokenOut),
    Finished(TaskSummary),
    Failed {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskSummary {
    pub reason: FinishReason,
    pub tokens_in: usize,
    pub tokens_out: usize,
    pub reused_tokens: usize,
    /// From the first prompt chunk to the first generated token.
    pub prefill_ms: u64,
    /// From the first generated token to the last.
    pub decode_ms: u64,
    pub canceled: bool,
}

/// Messages to the engine thread.
pub enum EngineCommand {
    Submit(EngineTask),
    /// Finish what is running, accept nothing new, then exit.
    Shutdown,
}

struct Running {
    task: EngineTask,
    decoder: SequenceDecoder,
    /// Prompt tokens not yet in the cache.
    next_prompt: usize,
    /// The token to feed next when decoding.
    last: Option<u32>,
    reused: usize,
    started: Instant,
    first_token_at: Option<Instant>,
}

struct Slot {
    cache: SeqCache,
    /// Tokens whose KV is in `cache`, in order (for prefix reuse).
    tokens: Vec<u32>,
    /// Length of the prompt whose prefill filled the cache; cached tokens
    /// past it were generated (decode arithmetic) and are only reused by
    /// best-effort tasks.
    prompt_len: usize,
    session: Option<String>,
    last_used: Instant,
    running: Option<Running>,
}

/// One sequence's part of the next step.
struct Planned {
    slot: usize,
    tokens: Vec<u32>,
    want: bool,
    /// A prompt chunk (else one decode token).
    prefill: bool,
}

pub struct SchedulerConfig {
    pub slots: usize,
    pub ctx: usize,
    /// Prompt tokens processed per step across all sequences.
    pub prefill_chunk: usize,
}

pub struct Scheduler {
    model: Arc<Model>,
    fw: Forward,
    slots: Vec<Slot>,
    waiting: VecDeque<EngineTask>,
    cfg: SchedulerConfig,
    stats: Arc<PoolStats>,
}

/// Prompt chunks start at multiples of this and are a multiple of it long
/// (but for the prompt's last chunk). Some weight types use different, but
/// per-token deterministic, arithmetic for tokens in whole groups of four
/// of a prompt chunk (llama.cpp's repacked Q4_K gemm), so a token's
/// arithmetic is fixed by its position in its own prompt, never by what it
/// is batched with.
pub const PREFILL_ALIGN: usize = 4;

/// How many leading positions are computed with the same arithmetic in a
/// prompt of `old_len` tokens and one of `new_len` (capped at both). A
/// prompt position's arithmetic depends on the llama.cpp micro-batch it
/// falls in (its length decides tiled attention; groups of four are whole
/// or not), so only positions whose micro-batch role agrees can be reused
/// without changing results.
pub fn strict_reuse_limit(old_len: usize, new_len: usize) -> usize {
    let n = old_len.min(new_len);
    if n == 0 {
        return 0;
    }
    // Positions in whole micro-batches of the shorter prompt agree.
    let (start, _) = ubatch_of(n - 1, n);
    let role = |p: usize, len: usize| {
        let (s0, s1) = ubatch_of(p, len);
        (
            s1 - s0 >= 64,
            p / PREFILL_ALIGN * PREFILL_ALIGN + PREFILL_ALIGN <= s1,
        )
    };
    (start..n)
        .find(|&p| role(p, old_len) != role(p, new_len))
        .unwrap_or(n)
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Scheduler {
    pub fn new(
        model: Arc<Model>,
        fw: Forward,
        cfg: SchedulerConfig,
        stats: Arc<PoolStats>,
    ) -> Scheduler {
        let now = Instant::now();
        let slots = (0..cfg.slots)
            .map(|_| Slot {
                cache: model.new_cache(cfg.ctx),
                tokens: Vec::new(),
                prompt_len: 0,
                session: None,
                last_used: now,
                running: None,
            })
            .collect();
        stats.set_slots(cfg.slots, 0);
        Scheduler {
            model,
            fw,
            slots,
            waiting: VecDeque::new(),
            cfg,
            stats,
        }
    }

    /// The engine thread's loop. Returns when told to shut down and all
    /// running work is done, or when every sender is gone.
    pub fn run(mut self, rx: Receiver<EngineCommand>) {
        let mut shutting_down = false;
        loop {
            let busy = self.slots.iter().any(|s| s.running.is_some()) || !self.waiting.is_empty();
            // Block only when idle.
            let first = if busy {
                rx.try_recv().ok()
            } else if shutting_down {
                return;
            } else {
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let mut cmd = first;
            while let Some(c) = cmd.take() {
                match c {
                    EngineCommand::Submit(t) => {
                        if shutting_down {
                            let _ = t.events.send(EngineEvent::Failed {
                                message: "pool is shutting down".into(),
                            });
                        } else {
                            self.waiting.push_back(t);
                        }
                    }
                    EngineCommand::Shutdown => shutting_down = true,
                }
                cmd = rx.try_recv().ok();
            }
            self.step();
        }
    }

    /// Admit waiting tasks into free slots.
    fn admit(&mut self) {
        while let Some(task) = self.waiting.front() {
            if task.cancel.load(Ordering::Acquire) {
                let t = self.waiting.pop_front().unwrap();
                finish_canceled(&t, 0, 0, 0);
                continue;
            }
            // Prefer the session's slot, then the longest reusable prefix,
            // then the least recently used.
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.running.is_none())
                .max_by_key(|(i, s)| {
                    let same_session = task.session.is_some() && s.session == task.session;
                    let prefix = common_prefix(&s.tokens, &task.prompt);
                    (
                        same_session,
                        prefix,
                        std::cmp::Reverse(s.last_used),
                        std::cmp::Reverse(*i),
                    )
                })
                .map(|(i, _)| i);
            let Some(si) = best else { break };
            let task = self.waiting.pop_front().unwrap();
            let slot = &mut self.slots[si];
            // Keep at least one prompt token to compute, for its logits,
            // and keep chunks aligned.
            let mut reuse =
                common_prefix(&slot.tokens, &task.prompt).min(task.prompt.len().saturating_sub(1));
            if !task.best_effort_reuse {
                reuse = reuse.min(strict_reuse_limit(slot.prompt_len, task.prompt.len()));
            }
            reuse = reuse / PREFILL_ALIGN * PREFILL_ALIGN;
            slot.cache.truncate(reuse);
            slot.tokens.truncate(reuse);
            slot.prompt_len = task.prompt.len();
            slot.session = task.session.clone();
            let queue_ms = task.submitted_at.elapsed().as_millis() as u64;
            let _ = task.events.send(EngineEvent::Started {
                reused_tokens: reuse,
                queue_ms,
            });
            let decoder =
                SequenceDecoder::new(self.model.tokenizer.clone(), &task.params, &task.prompt);
            slot.running = Some(Running {
                task,
                decoder,
                next_prompt: reuse,
                last: None,
                reused: reuse,
                started: Instant::now(),
                first_token_at: None,
            });
        }
    }

    fn step(&mut self) {
        // Drop canceled sequences before doing work for them.
        for slot in &mut self.slots {
            let canceled = slot
                .running
                .as_ref()
                .is_some_and(|r| r.task.cancel.load(Ordering::Acquire));
            if canceled {
                let r = slot.running.take().unwrap();
                finish_canceled(
                    &r.task,
                    r.task.prompt.len(),
                    r.decoder.generated(),
                    r.reused,
                );
                slot.last_used = Instant::now();
            }
        }
        self.admit();

        // Plan the batch: every decoding sequence's next token, and whole
        // prompt chunks while the step's prompt budget lasts (at least one
        // chunk per step, so a long prompt always progresses). A sequence's
        // chunk boundaries depend only on its own prompt.
        let chunk_len = (self.cfg.prefill_chunk / PREFILL_ALIGN * PREFILL_ALIGN).max(PREFILL_ALIGN);
        let mut budget = self.cfg.prefill_chunk.max(chunk_len);
        let mut plan: Vec<Planned> = Vec::new();
        for (si, slot) in self.slots.iter().enumerate() {
            let Some(r) = &slot.running else { continue };
            if let Some(t) = r.last {
                plan.push(Planned {
                    slot: si,
                    tokens: vec![t],
                    want: true,
                    prefill: false,
                });
            } else {
                let left = r.task.prompt.len() - r.next_prompt;
                let n = left.min(chunk_len);
                if n > budget {
                    continue;
                }
                budget -= n;
                let chunk = r.task.prompt[r.next_prompt..r.next_prompt + n].to_vec();
                plan.push(Planned {
                    slot: si,
                    tokens: chunk,
                    want: n == left,
                    prefill: true,
                });
            }
        }
        let busy = self.slots.iter().filter(|s| s.running.is_some()).count();
        self.stats.set_slots(self.slots.len(), busy);
        self.stats.set_waiting(self.waiting.len());
        if plan.is_empty() {
            return;
        }

        // Run it.
        let t0 = Instant::now();
        let n_tokens: usize = plan.iter().map(|p| p.tokens.len()).sum();
        let n_decode = plan.iter().filter(|p| !p.prefill).count();
        let result = {
            let mut entries: Vec<BatchEntry> = Vec::with_capacity(plan.len());
            // Split borrows of distinct slots.
            let mut slot_refs: Vec<Option<&mut Slot>> = self.slots.iter_mut().map(Some).collect();
            for p in &plan {
                let slot = slot_refs[p.slot].take().expect("slot planned once");
                entries.push(BatchEntry {
                    cache: &mut slot.cache,
                    tokens: &p.tokens,
                    want_logits: p.want,
                    prompt_len: if p.prefill {
                        slot.running.as_ref().map_or(0, |r| r.task.prompt.len())
                    } else {
                        0
                    },
                });
            }
            self.model.forward(&mut self.fw, &mut entries)
        };
        let step_time = t0.elapsed();
        if let Err(e) = result {
            // A batch-level failure fails every sequence in it.
            for p in &plan {
                let slot = &mut self.slots[p.slot];
                if let Some(r) = slot.running.take() {
                    let _ = r.task.events.send(EngineEvent::Failed {
                        message: e.to_string(),
                    });
                }
                slot.tokens.clear();
                slot.prompt_len = 0;
                slot.cache.clear();
            }
            return;
        }
        self.stats.record_step(step_time, n_tokens, n_decode);

        // Consume the outputs.
        let mut logit_row = 0;
        let nv = self.model.hparams.n_vocab;
        for p in plan {
            let slot = &mut self.slots[p.slot];
            slot.tokens.extend_from_slice(&p.tokens);
            slot.last_used = Instant::now();
            let r = slot.running.as_mut().unwrap();
            if p.prefill {
                r.next_prompt += p.tokens.len();
            }
            if !p.want {
                continue;
            }
            let logits = self.fw.logits(logit_row, nv);
            logit_row += 1;
            let out = r.decoder.step(&self.model.tokenizer, logits);
            if r.first_token_at.is_none() {
                r.first_token_at = Some(Instant::now());
            }
            r.last = Some(out.id);
            let finish = out.finish;
            let _ = r.task.events.send(EngineEvent::Token(out));
            if let Some(reason) = finish {
                let r = slot.running.take().unwrap();
                let first = r.first_token_at.unwrap_or_else(Instant::now);
                let _ = r.task.events.send(EngineEvent::Finished(TaskSummary {
                    reason,
                    tokens_in: r.task.prompt.len(),
                    tokens_out: r.decoder.generated(),
                    reused_tokens: r.reused,
                    prefill_ms: first.duration_since(r.started).as_millis() as u64,
                    decode_ms: first.elapsed().as_millis() as u64,
                    canceled: false,
                }));
            } else if slot.tokens.len() >= slot.cache.ctx() {
                // Admission keeps prompt + max_tokens within ctx; this is a guard.
                let r = slot.running.take().unwrap();
                let _ = r.task.events.send(EngineEvent::Failed {
                    message: "context full".into(),
                });
            }
        }
        let busy = self.slots.iter().filter(|s| s.running.is_some()).count();
        self.stats.set_slots(self.slots.len(), busy);
        let kv: usize = self.slots.iter().map(|s| s.cache.len()).sum();
        self.stats.set_kv(kv, self.slots.len() * self.cfg.ctx);
    }
}

fn finish_canceled(t: &EngineTask, tokens_in: usize, tokens_out: usize, reused: usize) {
    let _ = t.events.send(EngineEvent::Finished(TaskSummary {
        reason: FinishReason::Stop,
        tokens_in,
        tokens_out,
        reused_tokens: reused,
        prefill_ms: 0,
        decode_ms: 0,
        canceled: true,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_reuse_respects_micro_batch_roles() {
        // Same length: everything agrees.
        assert_eq!(strict_reuse_limit(10, 10), 10);
        // 10 then 20 tokens: positions 8 and 9 were a tail of two in the
        // short prompt but sit in a whole group of four in the long one.
        assert_eq!(strict_reuse_limit(10, 20), 8);
        assert_eq!(strict_reuse_limit(20, 10), 8);
        // 40 then 100: the short prompt's attention was one-pass (< 64
        // tokens), the long one's tiled: nothing in that micro-batch agrees.
        assert_eq!(strict_reuse_limit(40, 100), 0);
        // 70 then 100: both tiled; whole groups agree.
        assert_eq!(strict_reuse_limit(70, 100), 68);
        // Across micro-batches: 600 then 1000 tokens. The first 512 agree;
        // the second micro-batch had 88 tokens (tiled) and will have 488.
        assert_eq!(strict_reuse_limit(600, 1000), 600);
        // 530 then 1000: the second micro-batch had 18 tokens (one-pass).
        assert_eq!(strict_reuse_limit(530, 1000), 512);
        assert_eq!(strict_reuse_limit(0, 5), 0);
    }
}
