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

use half::f16;

use crate::backend::cpu::matmul::{matmul, MatJob, Matrix};
use crate::backend::cpu::quant::{self, Kernels};
use crate::backend::cpu::threadpool::{split_range, SharedMut, ThreadPool};
use crate::backend::cpu::vec;
use crate::backend::cpu::Isa;

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
) -> MatJob<'a> {
    MatJob {
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
    xn: Vec<f32>,
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
                slots.push(TokenSlot {
                    entry: ei,
                    pos: base + j,
                });
            }
            if e.want_logits {
                out_rows.push(slots.len() - 1);
            }
        }
        let n_tok = slots.len();
        let (ne, nq, nkv, nff) = (hp.n_embd, hp.q_dim(), hp.kv_dim(), hp.n_ff);
        let s = &mut self.s;
        grow(&mut s.x, n_tok * ne);
        grow(&mut s.xn, n_tok * ne);
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
        for (il, lw) in w.layers.iter().enumerate() {
            // Attention block input.
            rms_norm_rows(
                &s.x[..n_tok * ne],
                &mut s.xn[..n_tok * ne],
                ne,
                lw.attn_norm.f32s(),
                hp.norm_eps,
            );

            // Q, K, V projections in one parallel region.
            {
                let k = lw.wq.kernels(isa);
                let stride = quantize_rows(&k, &s.xn[..n_tok * ne], ne, &mut s.xq);
                let jobs = [
                    job(isa, &lw.wq, &s.xq, stride, &mut s.q, nq),
                    job(isa, &lw.wk, &s.xq, stride, &mut s.k, nkv),
                    job(isa, &lw.wv, &s.xq, stride, &mut s.v, nkv),
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
                rms_norm_in_place(&mut s.q[..n_tok * nq], hd, qn.f32s(), hp.norm_eps);
            }
            if let Some(kn) = &lw.k_norm {
                rms_norm_in_place(&mut s.k[..n_tok * nkv], hd, kn.f32s(), hp.norm_eps);
            }
            let swa = hp.swa_layers[il];
            let base = if swa {
                hp.rope_freq_base_swa
            } else {
                hp.rope_freq_base
            };
            let ff = w.rope_freqs.as_ref().map(|t| t.f32s());
            for (t, slot) in slots.iter().enumerate() {
                let rope = RopeRow::new(slot.pos, base, hp.rope_freq_scale, hp.n_rot, ff);
                for h in 0..hp.n_head {
                    rope.apply(
                        &mut s.q[t * nq + h * hd..t * nq + (h + 1) * hd],
                        hp.arch.rope_neox(),
                    );
                }
                for h in 0..hp.n_head_kv {
                    rope.apply(
                        &mut s.k[t * nkv + h * hd..t * nkv + (h + 1) * hd],
                        hp.arch.rope_neox(),
                    );
                }
            }
            if hp.arch == Arch::Gemma3 {
                let sc = hp.attn_scale;
                s.q[..n_tok * nq].iter_mut().for_each(|v| *v *= sc);
            }
            // Store K and V (as F16) at each token's position.
            for (t, slot) in slots.iter().enumerate() {
                let cache = &mut *batch[slot.entry].cache;
                let off = slot.pos * nkv;
                let kd = &mut cache.k[il][off..off + nkv];
                for (d, &v) in kd.iter_mut().zip(&s.k[t * nkv..(t + 1) * nkv]) {
                    *d = f16::from_f32(v).to_bits();
                }
                let vd = &mut cache.v[il][off..off + nkv];
                for (d, &v) in vd.iter_mut().zip(&s.v[t * nkv..(t + 1) * nkv]) {
                    *d = f16::from_f32(v).to_bits();
                }
            }

            // Attention. In the last layer only rows that produce logits matter.
            let last = il == n_layer - 1;
            let rows: Vec<usize> = if last {
                out_rows.clone()
            } else {
                (0..n_tok).collect()
            };
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
                let work = rows.len() * hp.n_head;
                let group = hp.n_head / hp.n_head_kv;
                self.pool.run(&|ith, nth| {
                    let mut qh = vec![f16::ZERO; hd];
                    let mut acc = vec![f16::ZERO; hd];
                    for wi in split_range(work, ith, nth, 1) {
                        let (ri, h) = (wi / hp.n_head, wi % hp.n_head);
                        let t = rows[ri];
                        let slot = slots[t];
                        let cache = caches[slot.entry];
                        // Safety: each (row, head) pair is written by one thread.
                        let out = unsafe { attn_out.slice(ri * nq + h * hd, hd) };
                        attend(
                            isa,
                            &q[t * nq + h * hd..t * nq + (h + 1) * hd],
                            &cache.k[il],
                            &cache.v[il],
                            nkv,
                            (h / group) * hd,
                            slot.pos,
                            window,
                            kq_scale,
                            &mut qh,
                            &mut acc,
                            out,
                        );
                    }
                });
            }
            let n_rows = rows.len();
            // Output projection.
            {
                let k = lw.wo.kernels(isa);
                let stride = quantize_rows(&k, &s.attn[..n_rows * nq], nq, &mut s.xq);
                let jobs = [job(isa, &lw.wo, &s.xq, stride, &mut s.proj, ne)];
                matmul(&mut self.pool, &jobs, n_rows);
            }
            if last && n_rows != n_tok {
                // Keep only the residual rows that continue.
                for (ri, &t) in rows.iter().enumerate() {
                    s.x.copy_within(t * ne..(t + 1) * ne, ri * ne);
                }
            }
            if let Some(pn) = &lw.post_attn_norm {
                rms_norm_in_place(&mut s.proj[..n_rows * ne], ne, pn.f32s(), hp.norm_eps);
            }
            add_assign(&mut s.x[..n_rows * ne], &s.proj[..n_rows * ne]);

            // Feed-forward block.
            rms_norm_rows(
                &s.x[..n_rows * ne],
                &mut s.xn[..n_rows * ne],
                ne,
                lw.ffn_norm.f32s(),
                hp.norm_eps,
            );
            {
                let k = lw.ffn_gate.kernels(isa);
                let stride = quantize_rows(&k, &s.xn[..n_rows * ne], ne, &mut s.xq);
                let jobs = [
                    job(isa, &lw.ffn_gate, &s.xq, stride, &mut s.gate, nff),
                    job(isa, &lw.ffn_up, &s.xq, stride, &mut s.up, nff),
                ];
                matmul(&mut self.pool, &jobs, n_rows);
            }
            {
                let n = n_rows * nff;
                let (h, g, u) = (&mut s.hidden[..n], &s.gate[..n], &s.up[..n]);
                match hp.arch {
                    Arch::Gemma3 => vec::vec_geglu_f32(h, g, u),
                    _ => vec::vec_swiglu_f32(isa, h, g, u),
                }
            }
            {
                let k = lw.ffn_down.kernels(isa);
                let stride = quantize_rows(&k, &s.hidden[..n_rows * nff], nff, &mut s.hq);
                let jobs = [job(isa, &lw.ffn_down, &s.hq, stride, &mut s.proj, ne)];
                matmul(&mut self.pool, &jobs, n_rows);
            }
            if let Some(pn) = &lw.post_ffn_norm {
                rms_norm_in_place(&mut s.proj[..n_rows * ne], ne, pn.f32s(), hp.norm_eps);
            }
            add_assign(&mut s.x[..n_rows * ne], &s.proj[..n_rows * ne]);
        }

        // Output head for the rows that want logits (now rows 0..n_out of x).
        let n_out = out_rows.len();
        self.n_logit_rows = n_out;
        if n_out > 0 {
            let nv = hp.n_vocab;
            grow(&mut s.logits, n_out * nv);
            rms_norm_rows(
                &s.x[..n_out * ne],
                &mut s.xn[..n_out * ne],
                ne,
                w.output_norm.f32s(),
                hp.norm_eps,
            );
            let k = w.output.kernels(isa);
            let stride = quantize_rows(&k, &s.xn[..n_out * ne], ne, &mut s.xq);
            let jobs = [job(isa, &w.output, &s.xq, stride, &mut s.logits, nv)];
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

/// Quantize `x` (rows of `n`) for kernels `k` into `out`; returns the row stride.
fn quantize_rows(k: &Kernels, x: &[f32], n: usize, out: &mut Vec<u8>) -> usize {
    let stride = k
        .act_row_bytes(n)
        .expect("activation rows are whole blocks");
    let rows = x.len() / n;
    if out.len() < rows * stride {
        out.resize(rows * stride, 0);
    }
    for r in 0..rows {
        k.quantize_act(
            &x[r * n..(r + 1) * n],
            &mut out[r * stride..(r + 1) * stride],
        )
        .expect("activation buffers are sized above");
    }
    stride
}

fn rms_norm_rows(x: &[f32], y: &mut [f32], n: usize, w: &[f32], eps: f32) {
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        vec::rms_norm_mul(yr, xr, w, eps);
    }
}

fn rms_norm_in_place(x: &mut [f32], n: usize, w: &[f32], eps: f32) {
    let mut tmp = vec![0.0f32; n];
    for xr in x.chunks_exact_mut(n) {
        vec::rms_norm_mul(&mut tmp, xr, w, eps);
        xr.copy_from_slice(&tmp);
    }
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

    fn apply(&self, x: &mut [f32], neox: bool) {
        let n_rot = self.cs.len() * 2;
        for (i, &(c, s)) in self.cs.iter().enumerate() {
            let (a, b) = if neox {
                (i, i + n_rot / 2)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }
}

/// One query head over its sequence's cached keys and values: llama.cpp's
/// single-pass softmax with an F16 value accumulator.
#[allow(clippy::too_many_arguments)]
fn attend(
    isa: Isa,
    q: &[f32],
    k_cache: &[u16],
    v_cache: &[u16],
    kv_stride: usize,
    head_off: usize,
    pos: usize,
    window: usize,
    kq_scale: f32,
    qh: &mut [f16],
    acc: &mut [f16],
    out: &mut [f32],
) {
    let hd = q.len();
    for (d, &v) in qh.iter_mut().zip(q) {
        *d = f16::from_f32(v);
    }
    acc.iter_mut().for_each(|a| *a = f16::ZERO);
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    let first = if window == usize::MAX {
        0
    } else {
        (pos + 1).saturating_sub(window)
    };
    for p in first..=pos {
        let off = p * kv_stride + head_off;
        let k = as_f16(&k_cache[off..off + hd]);
        let v = as_f16(&v_cache[off..off + hd]);
        let s = vec::vec_dot_f16(isa, k, qh) * kq_scale;
        let mut ms = 1.0f32;
        let mut vs = 1.0f32;
        if s > m {
            let m_old = m;
            m = s;
            ms = (m_old - m).exp();
            vec::vec_scale_f16(acc, ms);
        } else {
            vs = (s - m).exp();
        }
        vec::vec_mad_f16(acc, v, vs);
        // ggml's compiled code fuses this multiply-add.
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, a) in out.iter_mut().zip(acc.iter()) {
        *o = a.to_f32() * inv;
    }
}

fn as_f16(bits: &[u16]) -> &[f16] {
    // Safety: f16 is a transparent wrapper over u16.
    unsafe { std::slice::from_raw_parts(bits.as_ptr() as *const f16, bits.len()) }
}
