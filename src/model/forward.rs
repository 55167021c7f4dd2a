//! The transformer forward pass for llama, qwen2 and gemma3, over a batch of
//! sequences at different positions.
//!
//! Arithmetic follows llama.cpp's CPU backend so that greedy tokens match:
//! activations are quantized to the weight type's activation format (Q8_0,
//! Q8_1, Q8_K) and multiplied with integer dot products; the KV cache is
//! F16; attention is llama.cpp's one-pass online softmax with an F16 value
//! accumulator; RMS norm sums squares in f64.
//!
//! Every per-token computation is independent of the rest of the batch, so
//! a sequence gets bit-identical results alone or batched with others.

use crate::backend::cpu::matmul::{matmul, MatJob, Matrix};
use crate::backend::cpu::quant::{self, Kernels};
use crate::backend::cpu::threadpool::{split_range, SharedMut, ThreadPool};
use crate::backend::cpu::vec;
use crate::backend::cpu::Isa;

use super::attention::{self, KvSpan, TiledScratch, FA_TILE_Q};
use super::hparams::{Arch, HParams};
use super::kv_cache::{KvError, SeqCache};
use super::weights::{Tensor, Weights};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ForwardError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    #[error("empty batch entry")]
    Empty,
}

/// One sequence's part of a batch: new tokens to append to its cache.
pub struct BatchEntry<'a> {
    pub cache: &'a mut SeqCache,
    pub tokens: &'a [u32],
    /// Compute logits for the last of `tokens`.
    pub want_logits: bool,
    /// Nonzero: `tokens` are part of a prompt of this many tokens (prefill);
    /// zero: generated tokens fed back (decode). llama.cpp computes prompt
    /// tokens with different, multi-token arithmetic in places (attention
    /// over ubatches of 64 or more tokens; repacked Q4_K in groups of four);
    /// we reproduce that per token from its position in its own prompt, so
    /// a token's arithmetic never depends on the rest of the batch.
    pub prompt_len: usize,
}

impl Tensor {
    fn matrix(&self) -> Matrix<'_> {
        Matrix {
            ty: self.ty,
            cols: self.cols,
            rows: self.rows,
            data: self.data(),
        }
    }

    fn kernels(&self, isa: Isa) -> Kernels {
        quant::kernels(isa, self.ty).expect("tensor types are checked when the model loads")
    }
}

/// A product job for `t` over quantized activations `x`.
fn job<'a>(
    isa: Isa,
    t: &'a Tensor,
    x: &'a [u8],
    x_stride: usize,
    out: &mut [f32],
    out_stride: usize,
    quads: Option<&'a [bool]>,
) -> MatJob<'a> {
    MatJob {
        quads,
        w: t.matrix(),
        k: t.kernels(isa),
        x,
        x_stride,
        out: SharedMut::new(out),
        out_stride,
    }
}

/// Scratch buffers, grown to the largest batch seen.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    hidden: Vec<f32>,
    /// Quantized activations, one buffer per activation type in use.
    xq: Vec<u8>,
    hq: Vec<u8>,
    logits: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Runs the forward pass of one model on a thread pool.
pub struct Forward {
    pub isa: Isa,
    pool: ThreadPool,
    s: Scratch,
    /// Per RoPE base: `theta_scale = base^(-2/n_rot)`.
    n_logit_rows: usize,
}

/// Where each token of the flattened batch comes from.
#[derive(Clone, Copy)]
struct TokenSlot {
    entry: usize,
    pos: usize,
    /// Attention with llama.cpp's tiled prompt arithmetic (see `attend_tiled`).
    tiled: bool,
}

/// llama.cpp splits a prompt into micro-batches of this many tokens
/// (`n_ubatch`), counted from the start of the sequence.
pub const UBATCH: usize = 512;

/// The micro-batch `[start, end)` that prompt position `pos` falls in, for a
/// prompt of `prompt_len` tokens.
pub fn ubatch_of(pos: usize, prompt_len: usize) -> (usize, usize) {
    let start = pos / UBATCH * UBATCH;
    (start, (start + UBATCH).min(prompt_len.max(pos + 1)))
}

impl Forward {
    pub fn new(n_threads: usize, isa: Isa) -> Forward {
        Forward {
            isa,
            pool: ThreadPool::new(n_threads),
            s: Scratch::default(),
            n_logit_rows: 0,
        }
    }

    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Logits of the i-th entry that asked for them (in batch order).
    pub fn logits(&self, i: usize, n_vocab: usize) -> &[f32] {
        assert!(i < self.n_logit_rows);
        &self.s.logits[i * n_vocab..(i + 1) * n_vocab]
    }

    /// Run the batch: append every entry's tokens to its cache and compute
    /// the logits asked for. On error nothing is appended to any cache.
    pub fn forward(
        &mut self,
        hp: &HParams,
        w: &Weights,
        batch: &mut [BatchEntry],
    ) -> Result<(), ForwardError> {
        for e in batch.iter() {
            if e.tokens.is_empty() {
                return Err(ForwardError::Empty);
            }
            e.cache.check_room(e.tokens.len())?;
            if let Some(&id) = e.tokens.iter().find(|&&t| t as usize >= hp.n_vocab) {
                return Err(ForwardError::BadToken {
                    id,
                    n_vocab: hp.n_vocab,
                });
            }
        }
        let mut slots = Vec::new();
        let mut out_rows = Vec::new(); // flat token index of each logits row
        for (ei, e) in batch.iter().enumerate() {
            let base = e.cache.len();
            for j in 0..e.tokens.len() {
                let pos = base + j;
                let tiled = e.prompt_len > 0 && {
                    let (s0, s1) = ubatch_of(pos, e.prompt_len);
                    s1 - s0 >= FA_TILE_Q
                };
                slots.push(TokenSlot {
                    entry: ei,
                    pos,
                    tiled,
                });
            }
            if e.want_logits {
                out_rows.push(slots.len() - 1);
            }
        }
        let n_tok = slots.len();
        // Prompt tokens in a whole aligned group of four of their own
        // micro-batch, all in this entry: the quad arithmetic of some kernels.
        let mut quad = vec![false; n_tok];
        {
            let mut t = 0;
            for e in batch.iter() {
                let (first, end) = (e.cache.len(), e.cache.len() + e.tokens.len());
                for j in 0..e.tokens.len() {
                    let pos = first + j;
                    if e.prompt_len > 0 {
                        let (_, ub_end) = ubatch_of(pos, e.prompt_len);
                        let q0 = pos / 4 * 4;
                        quad[t] = q0 >= first && q0 + 4 <= end.min(ub_end);
                    }
                    t += 1;
                }
            }
        }
        let (ne, nq, nkv, nff) = (hp.n_embd, hp.q_dim(), hp.kv_dim(), hp.n_ff);
        let s = &mut self.s;
        grow(&mut s.x, n_tok * ne);
        grow(&mut s.q, n_tok * nq);
        grow(&mut s.k, n_tok * nkv);
        grow(&mut s.v, n_tok * nkv);
        grow(&mut s.attn, n_tok * nq);
        grow(&mut s.proj, n_tok * ne);
        grow(&mut s.gate, n_tok * nff);
        grow(&mut s.up, n_tok * nff);
        grow(&mut s.hidden, n_tok * nff);

        // Embeddings.
        let embd_scale = if hp.arch == Arch::Gemma3 {
            (ne as f32).sqrt()
        } else {
            1.0
        };
        {
            let mut t = 0;
            for e in batch.iter() {
                for &id in e.tokens {
                    let row = &mut s.x[t * ne..(t + 1) * ne];
                    quant::dequantize_row(w.tok_embd.ty, w.tok_embd.row(id as usize), row)
                        .expect("embedding rows are checked when the model loads");
                    if embd_scale != 1.0 {
                        row.iter_mut().for_each(|v| *v *= embd_scale);
                    }
                    t += 1;
                }
            }
        }

        let isa = self.isa;
        let n_layer = hp.n_layer;
        // The previous block's output, not yet added to the residual stream
        // (with that block's post-norm): the next block's input pass adds it.
        let mut pending: Option<Option<&Tensor>> = None;
        for (il, lw) in w.layers.iter().enumerate() {
            // Q, K, V projections in one parallel region.
            {
                let k = lw.wq.kernels(isa);
                let stride = block_input(
                    &mut self.pool,
                    &mut s.x[..n_tok * ne],
                    pending.map(|post| (&s.proj[..n_tok * ne], post)),
                    ne,
                    lw.attn_norm.f32s(),
                    hp.norm_eps,
                    &k,
                    &mut s.xq,
                );
                let jobs = [
                    job(isa, &lw.wq, &s.xq, stride, &mut s.q, nq, Some(&quad)),
                    job(isa, &lw.wk, &s.xq, stride, &mut s.k, nkv, Some(&quad)),
                    job(isa, &lw.wv, &s.xq, stride, &mut s.v, nkv, Some(&quad)),
                ];
                matmul(&mut self.pool, &jobs, n_tok);
            }
            if let (Some(bq), Some(bk), Some(bv)) = (&lw.bq, &lw.bk, &lw.bv) {
                add_bias_rows(&mut s.q[..n_tok * nq], bq.f32s());
                add_bias_rows(&mut s.k[..n_tok * nkv], bk.f32s());
                add_bias_rows(&mut s.v[..n_tok * nkv], bv.f32s());
            }
            let hd = hp.head_dim;
            if let Some(qn) = &lw.q_norm {
                rms_norm_in_place(
                    &mut self.pool,
                    &mut s.q[..n_tok * nq],
                    hd,
                    qn.f32s(),
                    hp.norm_eps,
                );
            }
            if let Some(kn) = &lw.k_norm {
                rms_norm_in_place(
                    &mut self.pool,
                    &mut s.k[..n_tok * nkv],
                    hd,
                    kn.f32s(),
                    hp.norm_eps,
                );
            }
            let swa = hp.swa_layers[il];
            let base = if swa {
                hp.rope_freq_base_swa
            } else {
                hp.rope_freq_base
            };
            let ff = w.rope_freqs.as_ref().map(|t| t.f32s());
            // RoPE, Gemma's query scale, and K and V stored (as F16) at each
            // token's position: per token, so across the pool for prefill.
            {
                let kv: Vec<(SharedMut<u16>, SharedMut<u16>)> = batch
                    .iter_mut()
                    .map(|e| {
                        (
                            SharedMut::new(&mut e.cache.k[il]),
                            SharedMut::new(&mut e.cache.v[il]),
                        )
                    })
                    .collect();
                let (qs, ks, vs) = (
                    SharedMut::new(&mut s.q),
                    SharedMut::new(&mut s.k),
                    SharedMut::new(&mut s.v),
                );
                let slots = &slots;
                let q_scale = (hp.arch == Arch::Gemma3).then_some(hp.attn_scale);
                let neox = hp.arch.rope_neox();
                par_rows(&mut self.pool, n_tok, nq + 2 * nkv, &|tr| {
                    for t in tr {
                        let slot = slots[t];
                        // Safety: token t's rows and its cache position are
                        // touched by this task only.
                        let (q, k, v) = unsafe {
                            (
                                qs.slice(t * nq, nq),
                                ks.slice(t * nkv, nkv),
                                vs.slice(t * nkv, nkv),
                            )
                        };
                        let rope = RopeRow::new(slot.pos, base, hp.rope_freq_scale, hp.n_rot, ff);
                        for qh in q.chunks_exact_mut(hd) {
                            rope.apply(qh, neox);
                        }
                        for kh in k.chunks_exact_mut(hd) {
                            rope.apply(kh, neox);
                        }
                        if let Some(sc) = q_scale {
                            q.iter_mut().for_each(|x| *x *= sc);
                        }
                        let (kd, vd) = unsafe {
                            (
                                kv[slot.entry].0.slice(slot.pos * nkv, nkv),
                                kv[slot.entry].1.slice(slot.pos * nkv, nkv),
                            )
                        };
                        vec::fp32_to_fp16_bits(k, kd);
                        vec::fp32_to_fp16_bits(v, vd);
                    }
                });
            }

            // Attention. In the last layer only rows that produce logits matter.
            let last = il == n_layer - 1;
            // In the last layer only rows that produce logits matter after
            // the output projection; an output row in a prompt quad brings
            // its whole quad, since the projection computes quads together
            // (llama.cpp selects the rows after it).
            let rows: Vec<usize> = if last {
                let mut r = Vec::new();
                for &t in &out_rows {
                    let lo = if quad[t] { t - slots[t].pos % 4 } else { t };
                    let hi = if quad[t] { lo + 4 } else { t + 1 };
                    for i in lo..hi {
                        if r.last().is_none_or(|&l| l < i) {
                            r.push(i);
                        }
                    }
                }
                r
            } else {
                (0..n_tok).collect()
            };
            let row_quads: Vec<bool> = rows.iter().map(|&t| quad[t]).collect();
            let kq_scale = if hp.arch == Arch::Gemma3 {
                1.0
            } else {
                hp.attn_scale
            };
            let window = if swa { hp.n_swa } else { usize::MAX };
            {
                let caches: Vec<&SeqCache> = batch.iter().map(|e| &*e.cache).collect();
                let attn_out = SharedMut::new(&mut s.attn);
                let q = &s.q;
                let (n_kv, group) = (hp.n_head_kv, hp.n_head / hp.n_head_kv);
                // Work items: a row's query heads that share a KV head,
                // split into smaller sets of heads when there would be
                // too few items to keep every thread busy.
                let nth = self.pool.n_threads();
                let mut per = group;
                while per > 1 && rows.len() * n_kv * group.div_ceil(per) < 2 * nth {
                    per = per.div_ceil(2);
                }
                let sets = group.div_ceil(per);
                let work = rows.len() * n_kv * sets;
                // A few tasks per thread, so a descheduled thread holds
                // up little.
                let n_tasks = work.min(nth * 4);
                self.pool.run_tasks(n_tasks, &|task| {
                    let mut tile = TiledScratch::new(hd);
                    for wi in split_range(work, task, n_tasks, 1) {
                        let (ri, kvh, set) = (wi / (n_kv * sets), wi / sets % n_kv, wi % sets);
                        let h0 = kvh * group + set * per;
                        let nh = per.min(group - set * per);
                        let t = rows[ri];
                        let slot = slots[t];
                        let cache = caches[slot.entry];
                        let (k, v) = (&cache.k[il][..], &cache.v[il][..]);
                        let kv = KvSpan::new(k, v, nkv, kvh * hd, slot.pos, window);
                        // Safety: each (row, head) pair is written by one thread.
                        let out = unsafe { attn_out.slice(ri * nq + h0 * hd, nh * hd) };
                        let qrow = &q[t * nq + h0 * hd..t * nq + (h0 + nh) * hd];
                        if slot.tiled {
                            for (qh, oh) in qrow.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
                                attention::attend_tiled(isa, qh, &kv, kq_scale, &mut tile, oh);
                            }
                        } else {
                            attention::decode(isa, qrow, &kv, hd, kq_scale, out);
                        }
                    }
                });
            }
            let n_rows = rows.len();
            // Output projection.
            {
                let k = lw.wo.kernels(isa);
                let stride =
                    quantize_rows(&mut self.pool, &k, &s.attn[..n_rows * nq], nq, &mut s.xq);
                let jobs = [job(
                    isa,
                    &lw.wo,
                    &s.xq,
                    stride,
                    &mut s.proj,
                    ne,
                    Some(&row_quads),
                )];
                matmul(&mut self.pool, &jobs, n_rows);
            }
            let n_rows = if last && out_rows.len() != n_tok {
                // Keep only the rows that continue: the output rows.
                for (k, &t) in out_rows.iter().enumerate() {
                    let ri = rows.binary_search(&t).expect("output row was computed");
                    s.proj.copy_within(ri * ne..(ri + 1) * ne, k * ne);
                    s.x.copy_within(t * ne..(t + 1) * ne, k * ne);
                }
                out_rows.len()
            } else {
                n_rows
            };
            // After the last layer's selection every row stands alone.
            let ffn_quads = if last { None } else { Some(&quad[..]) };

            // Feed-forward block.
            {
                let k = lw.ffn_gate.kernels(isa);
                let stride = block_input(
                    &mut self.pool,
                    &mut s.x[..n_rows * ne],
                    Some((&s.proj[..n_rows * ne], lw.post_attn_norm.as_ref())),
                    ne,
                    lw.ffn_norm.f32s(),
                    hp.norm_eps,
                    &k,
                    &mut s.xq,
                );
                let jobs = [
                    job(
                        isa,
                        &lw.ffn_gate,
                        &s.xq,
                        stride,
                        &mut s.gate,
                        nff,
                        ffn_quads,
                    ),
                    job(isa, &lw.ffn_up, &s.xq, stride, &mut s.up, nff, ffn_quads),
                ];
                matmul(&mut self.pool, &jobs, n_rows);
            }
            {
                // The gated activation and its quantization, row by row
                // (each row's SIMD body and tail as in ggml).
                let k = lw.ffn_down.kernels(isa);
                let stride = act_rows(&k, nff, n_rows, &mut s.hq);
                let (h, hq) = (
                    SharedMut::new(&mut s.hidden[..n_rows * nff]),
                    SharedMut::new(&mut s.hq),
                );
                let (g, u) = (&s.gate, &s.up);
                let gemma = hp.arch == Arch::Gemma3;
                par_rows(&mut self.pool, n_rows, nff, &|rr| {
                    for r in rr {
                        let o = r * nff;
                        // Safety: each row is written by one task.
                        let (hr, qr) = unsafe { (h.slice(o, nff), hq.slice(r * stride, stride)) };
                        let (gr, ur) = (&g[o..o + nff], &u[o..o + nff]);
                        if gemma {
                            vec::vec_geglu_f32(hr, gr, ur);
                        } else {
                            vec::vec_swiglu_f32(isa, hr, gr, ur);
                        }
                        k.quantize_act(hr, qr)
                            .expect("activation buffers are sized above");
                    }
                });
                let jobs = [job(
                    isa,
                    &lw.ffn_down,
                    &s.hq,
                    stride,
                    &mut s.proj,
                    ne,
                    ffn_quads,
                )];
                matmul(&mut self.pool, &jobs, n_rows);
            }
            pending = Some(lw.post_ffn_norm.as_ref());
        }

        // Output head for the rows that want logits (now rows 0..n_out of x).
        let n_out = out_rows.len();
        self.n_logit_rows = n_out;
        if n_out > 0 {
            let nv = hp.n_vocab;
            grow(&mut s.logits, n_out * nv);
            let k = w.output.kernels(isa);
            let stride = block_input(
                &mut self.pool,
                &mut s.x[..n_out * ne],
                pending.map(|post| (&s.proj[..n_out * ne], post)),
                ne,
                w.output_norm.f32s(),
                hp.norm_eps,
                &k,
                &mut s.xq,
            );
            let jobs = [job(isa, &w.output, &s.xq, stride, &mut s.logits, nv, None)];
            matmul(&mut self.pool, &jobs, n_out);
            if hp.final_logit_softcap > 0.0 {
                let c = hp.final_logit_softcap;
                for v in &mut s.logits[..n_out * nv] {
                    *v = (*v / c).tanh() * c;
                }
            }
        }

        for e in batch.iter_mut() {
            e.cache.advance(e.tokens.len());
        }
        Ok(())
    }
}

/// Elements per task for the row-wise passes (norms, quantization, RoPE,
/// gated activations): one token's passes, and other passes this small, run
/// on the calling thread, where a parallel region costs more than it saves;
/// a batch of decode tokens splits by rows.
const PAR_GRAIN: usize = 2 * 1024;

/// Runs `f` on row ranges that cover `0..n_rows` (rows of `row_len`
/// elements), across the pool when the pass is large enough. Rows are
/// independent, so the split does not change any result.
fn par_rows(
    pool: &mut ThreadPool,
    n_rows: usize,
    row_len: usize,
    f: &(dyn Fn(std::ops::Range<usize>) + Sync),
) {
    let n_tasks = (n_rows * row_len / PAR_GRAIN)
        .min(n_rows)
        .min(pool.n_threads() * 4);
    if n_tasks <= 1 || pool.n_threads() == 1 {
        return f(0..n_rows);
    }
    pool.run_tasks(n_tasks, &|t| f(split_range(n_rows, t, n_tasks, 1)));
}

/// Sizes `buf` for `rows` activation rows of `n` elements in `k`'s format;
/// returns the row stride.
fn act_rows(k: &Kernels, n: usize, rows: usize, buf: &mut Vec<u8>) -> usize {
    let stride = k
        .act_row_bytes(n)
        .expect("activation rows are whole blocks");
    if buf.len() < rows * stride {
        buf.resize(rows * stride, 0);
    }
    stride
}

/// Quantize `x` (rows of `n`) for kernels `k` into `out`; returns the row stride.
fn quantize_rows(
    pool: &mut ThreadPool,
    k: &Kernels,
    x: &[f32],
    n: usize,
    out: &mut Vec<u8>,
) -> usize {
    let rows = x.len() / n;
    let stride = act_rows(k, n, rows, out);
    let o = SharedMut::new(out);
    par_rows(pool, rows, n, &|rr| {
        for r in rr {
            // Safety: each row is written by one task.
            let dst = unsafe { o.slice(r * stride, stride) };
            k.quantize_act(&x[r * n..(r + 1) * n], dst)
                .expect("activation buffers are sized above");
        }
    });
    stride
}

/// A block's input, row by row across the pool: the previous block's
/// output `add` (after that block's post-norm, if it has one) joins the
/// residual stream `x`, which is then normalized with `norm` and quantized
/// for `k` into `xq`. Returns the quantized row stride.
#[allow(clippy::too_many_arguments)]
fn block_input(
    pool: &mut ThreadPool,
    x: &mut [f32],
    add: Option<(&[f32], Option<&Tensor>)>,
    n: usize,
    norm: &[f32],
    eps: f32,
    k: &Kernels,
    xq: &mut Vec<u8>,
) -> usize {
    let rows = x.len() / n;
    let stride = act_rows(k, n, rows, xq);
    let (xs, q) = (SharedMut::new(x), SharedMut::new(xq));
    par_rows(pool, rows, n, &|rr| {
        let mut tmp = vec![0.0f32; n];
        for r in rr {
            // Safety: each row is touched by one task.
            let (xr, qr) = unsafe { (xs.slice(r * n, n), q.slice(r * stride, stride)) };
            if let Some((p, post)) = add {
                let pr = &p[r * n..(r + 1) * n];
                match post {
                    Some(w) => {
                        vec::rms_norm_mul(&mut tmp, pr, w.f32s(), eps);
                        add_assign(xr, &tmp);
                    }
                    None => add_assign(xr, pr),
                }
            }
            vec::rms_norm_mul(&mut tmp, xr, norm, eps);
            k.quantize_act(&tmp, qr)
                .expect("activation buffers are sized above");
        }
    });
    stride
}

fn rms_norm_in_place(pool: &mut ThreadPool, x: &mut [f32], n: usize, w: &[f32], eps: f32) {
    let rows = x.len() / n;
    let xs = SharedMut::new(x);
    par_rows(pool, rows, n, &|rr| {
        let mut tmp = vec![0.0f32; n];
        for r in rr {
            // Safety: each row is touched by one task.
            let xr = unsafe { xs.slice(r * n, n) };
            vec::rms_norm_mul(&mut tmp, xr, w, eps);
            xr.copy_from_slice(&tmp);
        }
    });
}

fn add_assign(y: &mut [f32], x: &[f32]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

fn add_bias_rows(x: &mut [f32], b: &[f32]) {
    for xr in x.chunks_exact_mut(b.len()) {
        add_assign(xr, b);
    }
}

/// RoPE cos/sin for one position, computed like ggml: theta starts at the
/// position and is multiplied by `base^(-2/n_rot)` per dimension pair.
struct RopeRow {
    cs: Vec<(f32, f32)>,
}

impl RopeRow {
    fn new(
        pos: usize,
        base: f32,
        freq_scale: f32,
        n_rot: usize,
        freq_factors: Option<&[f32]>,
    ) -> RopeRow {
        let theta_scale = base.powf(-2.0 / n_rot as f32);
        let mut theta = pos as f32;
        let mut cs = Vec::with_capacity(n_rot / 2);
        for i in 0..n_rot / 2 {
            let ff = freq_factors.map_or(1.0, |f| f[i]);
            let th = freq_scale * (theta / ff);
            cs.push((th.cos(), th.sin()));
            theta *= theta_scale;
        }
        RopeRow { cs }
    }

    /// Rotate one head. The multiply-adds are fused exactly where GCC fuses
    /// them in ggml's `rotate_pairs` (checked against llama.cpp's build for
    /// both pairings), so results match bit for bit.
    fn apply(&self, x: &mut [f32], neox: bool) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: FMA is available.
            return unsafe { self.apply_fma(x, neox) };
        }
        self.apply_generic(x, neox);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    unsafe fn apply_fma(&self, x: &mut [f32], neox: bool) {
        self.apply_generic(x, neox);
    }

    #[inline(always)]
    fn apply_generic(&self, x: &mut [f32], neox: bool) {
        let n_rot = self.cs.len() * 2;
        for (i, &(c, s)) in self.cs.iter().enumerate() {
            let (a, b) = if neox {
                (i, i + n_rot / 2)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0.mul_add(c, -(x1 * s));
            x[b] = x0.mul_add(s, x1 * c);
        }
    }
}
