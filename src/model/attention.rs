//! Attention of one token's query heads over its sequence's F16 KV cache,
//! with llama.cpp's CPU flash-attention arithmetic, so greedy tokens match:
//!
//! - decode and short prompt micro-batches: one pass over the keys, online
//!   softmax with libm's `expf`, an F16 value accumulator
//!   ([`decode`]; on AVX-512 the query heads of a GQA group go through
//!   `attention_avx512` together, with the same bits);
//! - prompt micro-batches of [`FA_TILE_Q`] tokens or more: ggml's tiled
//!   path, f32 throughout, softmax per tile of [`FA_TILE_KV`] keys
//!   ([`attend_tiled`]).

use std::cell::RefCell;

use half::f16;

use crate::backend::cpu::vec;
use crate::backend::cpu::Isa;

#[cfg(target_arch = "x86_64")]
#[path = "attention_avx512.rs"]
mod avx512;

/// Prompt micro-batches of at least this many tokens take llama.cpp's
/// tiled attention (`GGML_FA_TILE_Q`), else its one-pass path.
pub(super) const FA_TILE_Q: usize = 64;
/// Keys per tile of the tiled attention (`GGML_FA_TILE_KV`).
pub(super) const FA_TILE_KV: usize = 64;

/// One KV head of one sequence's layer cache, and the positions
/// `first..=last` a query at position `last` sees.
#[derive(Clone, Copy)]
pub(super) struct KvSpan<'a> {
    /// Keys and values as F16 bits, `stride` elements per position.
    pub k: &'a [u16],
    pub v: &'a [u16],
    pub stride: usize,
    /// Offset of this KV head within a position.
    pub head_off: usize,
    pub first: usize,
    pub last: usize,
}

impl<'a> KvSpan<'a> {
    /// The span of a query at `pos` in a layer with a sliding `window`
    /// (`usize::MAX`: none).
    pub fn new(
        k: &'a [u16],
        v: &'a [u16],
        stride: usize,
        head_off: usize,
        pos: usize,
        window: usize,
    ) -> KvSpan<'a> {
        let first = if window == usize::MAX {
            0
        } else {
            (pos + 1).saturating_sub(window)
        };
        KvSpan {
            k,
            v,
            stride,
            head_off,
            first,
            last: pos,
        }
    }

    fn key(&self, p: usize, hd: usize) -> &'a [f16] {
        let off = p * self.stride + self.head_off;
        as_f16(&self.k[off..off + hd])
    }

    fn value(&self, p: usize, hd: usize) -> &'a [f16] {
        let off = p * self.stride + self.head_off;
        as_f16(&self.v[off..off + hd])
    }
}

/// Per-thread buffers of [`decode`].
#[derive(Default)]
struct DecodeScratch {
    qh: Vec<f16>,
    acc: Vec<f16>,
    #[cfg(target_arch = "x86_64")]
    group: avx512::GroupScratch,
}

/// Query heads `q` (`nh` heads of `hd`, consecutive) that share the KV head
/// `kv`, one pass each over its keys and values; results to `out` (same
/// layout). Each head's bits are those of [`decode_one`] whatever the
/// other heads, the ISA's SIMD level allowing.
pub(super) fn decode(isa: Isa, q: &[f32], kv: &KvSpan, hd: usize, kq_scale: f32, out: &mut [f32]) {
    thread_local! {
        static SCRATCH: RefCell<DecodeScratch> = RefCell::new(DecodeScratch::default());
    }
    SCRATCH.with_borrow_mut(|sc| decode_with(isa, q, kv, hd, kq_scale, sc, out));
}

fn decode_with(
    isa: Isa,
    q: &[f32],
    kv: &KvSpan,
    hd: usize,
    kq_scale: f32,
    sc: &mut DecodeScratch,
    out: &mut [f32],
) {
    assert!(hd > 0 && q.len() % hd == 0 && out.len() == q.len());
    assert!(kv.first <= kv.last && (kv.last + 1) * kv.stride <= kv.k.len().min(kv.v.len()));
    assert!(kv.head_off + hd <= kv.stride);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && isa.available() && hd % 64 == 0 {
        // SAFETY: AVX-512 is available, `hd` is a multiple of 64 and the
        // span lies inside the cache (asserted above).
        return unsafe { avx512::decode_group(q, kv, hd, kq_scale, &mut sc.group, out) };
    }
    if sc.qh.len() != hd {
        sc.qh = vec![f16::ZERO; hd];
        sc.acc = vec![f16::ZERO; hd];
    }
    for (qh, oh) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
        decode_one(isa, qh, kv, kq_scale, &mut sc.qh, &mut sc.acc, oh);
    }
}

/// One query head: llama.cpp's single-pass softmax with an F16 value
/// accumulator, one key at a time.
pub(super) fn decode_one(
    isa: Isa,
    q: &[f32],
    kv: &KvSpan,
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
    for p in kv.first..=kv.last {
        let s = vec::vec_dot_f16(isa, kv.key(p, hd), qh) * kq_scale;
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
        vec::vec_mad_f16(acc, kv.value(p, hd), vs);
        // ggml's compiled code fuses this multiply-add.
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, a) in out.iter_mut().zip(acc.iter()) {
        *o = a.to_f32() * inv;
    }
}

/// Keys one task keeps converted per KV head; longer spans convert tile by
/// tile for each query.
pub(super) const TILED_CACHE_KEYS: usize = 4096;

/// One KV head's keys and values as f32, converted once for all the
/// queries of a task that read them (the heads of a group, the tokens of a
/// prompt). Keys are transposed per tile: dimension `d` of key `j` of tile
/// `i` at `k[(i * hd + d) * FA_TILE_KV + j]`; values by position.
#[derive(Default)]
struct KvTiles {
    cache: usize,
    base: usize,
    hi: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Per-task buffers of [`attend_tiled`].
pub(super) struct TiledScratch {
    heads: Vec<KvTiles>,
    /// One tile, for spans too long for `heads`.
    one: KvTiles,
    k: Vec<f32>,
    kq: Vec<f32>,
    kq_in: Vec<f32>,
    acc: Vec<f32>,
}

impl TiledScratch {
    pub fn new(hd: usize) -> TiledScratch {
        TiledScratch {
            heads: Vec::new(),
            one: KvTiles::default(),
            k: vec![0.0; hd],
            kq: vec![0.0; FA_TILE_KV],
            kq_in: vec![0.0; FA_TILE_KV],
            acc: vec![0.0; hd],
        }
    }
}

impl KvTiles {
    /// Makes keys and values `a..b` of `kv`'s head available; false when
    /// the span is too long to keep.
    #[inline(always)]
    fn ensure(&mut self, kv: &KvSpan, k_row: &mut [f32], a: usize, b: usize) -> bool {
        use half::slice::HalfFloatSliceExt;
        let hd = k_row.len();
        let id = kv.k.as_ptr() as usize;
        if self.cache != id || a < self.base || a > self.hi {
            self.cache = id;
            self.base = a / FA_TILE_KV * FA_TILE_KV;
            self.hi = a;
        }
        if b <= self.hi {
            return true;
        }
        let span = b - self.base;
        if span > TILED_CACHE_KEYS {
            return false;
        }
        let tiles = span.div_ceil(FA_TILE_KV);
        if self.k.len() < tiles * hd * FA_TILE_KV {
            self.k.resize(tiles * hd * FA_TILE_KV, 0.0);
        }
        if self.v.len() < span * hd {
            self.v.resize(tiles * FA_TILE_KV * hd, 0.0);
        }
        for p in self.hi..b {
            let (i, j) = ((p - self.base) / FA_TILE_KV, (p - self.base) % FA_TILE_KV);
            kv.key(p, hd).convert_to_f32_slice(k_row);
            let kt = &mut self.k[i * hd * FA_TILE_KV..(i + 1) * hd * FA_TILE_KV];
            for (d, &x) in k_row.iter().enumerate() {
                kt[d * FA_TILE_KV + j] = x;
            }
            let vo = (p - self.base) * hd;
            kv.value(p, hd)
                .convert_to_f32_slice(&mut self.v[vo..vo + hd]);
        }
        self.hi = b;
        true
    }
}

/// One query head as llama.cpp's tiled flash attention computes prompt
/// micro-batches of 64 or more tokens: f32 query, keys and values (from the
/// F16 cache), scores by an FMA chain per key, online softmax per tile of
/// 64 keys (tiles counted from position 0) with ggml's vector `expf`, and an
/// f32 value accumulator updated by an FMA chain per key.
pub(super) fn attend_tiled(
    isa: Isa,
    q: &[f32],
    kv: &KvSpan,
    kq_scale: f32,
    t: &mut TiledScratch,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        // SAFETY: the AVX2 and AVX-512 levels include AVX2, FMA and F16C.
        return unsafe { attend_tiled_fma(isa, q, kv, kq_scale, t, out) };
    }
    attend_tiled_body(isa, q, kv, kq_scale, t, out);
}

/// `attend_tiled_body` compiled with FMA, so `mul_add` is one instruction
/// and the loops over keys and dimensions vectorize (each lane keeps its
/// own FMA chain, so the bits do not change).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_tiled_fma(
    isa: Isa,
    q: &[f32],
    kv: &KvSpan,
    kq_scale: f32,
    t: &mut TiledScratch,
    out: &mut [f32],
) {
    attend_tiled_body(isa, q, kv, kq_scale, t, out);
}

#[inline(always)]
fn attend_tiled_body(
    isa: Isa,
    q: &[f32],
    kv: &KvSpan,
    kq_scale: f32,
    t: &mut TiledScratch,
    out: &mut [f32],
) {
    let hd = q.len();
    let (first, pos) = (kv.first, kv.last);
    let TiledScratch {
        heads,
        one,
        k: k_row,
        kq,
        kq_in,
        acc,
    } = t;
    let kvh = kv.head_off / hd;
    if heads.len() <= kvh {
        heads.resize_with(kvh + 1, KvTiles::default);
    }
    let kept = heads[kvh].ensure(kv, k_row, first, pos + 1);
    acc.iter_mut().for_each(|a| *a = 0.0);
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    let mut tile0 = first / FA_TILE_KV * FA_TILE_KV;
    while tile0 <= pos {
        // Keys of this tile the query sees: tile0 + (j0..j1).
        let (j0, j1) = (first.max(tile0) - tile0, (pos + 1 - tile0).min(FA_TILE_KV));
        let (kt, vt, vbase) = if kept {
            let h = &heads[kvh];
            let i = (tile0 - h.base) / FA_TILE_KV;
            let kt = &h.k[i * hd * FA_TILE_KV..(i + 1) * hd * FA_TILE_KV];
            (kt, &h.v[..], h.base)
        } else {
            // Too long to keep: this tile alone, for this query.
            one.cache = 0;
            one.ensure(kv, k_row, tile0 + j0, tile0 + j1);
            (&one.k[..hd * FA_TILE_KV], &one.v[..], tile0)
        };
        kq.iter_mut().for_each(|x| *x = 0.0);
        for (d, &qd) in q.iter().enumerate() {
            let row = &kt[d * FA_TILE_KV + j0..d * FA_TILE_KV + j1];
            for (a, &kd) in kq[j0..j1].iter_mut().zip(row) {
                *a = kd.mul_add(qd, *a);
            }
        }
        for (j, x) in kq.iter_mut().enumerate() {
            *x = if (j0..j1).contains(&j) {
                *x * kq_scale
            } else {
                f32::NEG_INFINITY
            };
        }
        let tile_max = kq.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if tile_max != f32::NEG_INFINITY {
            let m_new = m.max(tile_max);
            if m_new > m {
                let ms = (m - m_new).exp();
                vec::vec_scale_f32(acc, ms);
                sum *= ms;
            }
            m = m_new;
            kq_in.copy_from_slice(kq);
            sum = (sum as f64 + vec::soft_max_f32(isa, kq, kq_in, m_new)) as f32;
            // Keys outside j0..j1 weigh 0: ggml's FMA adds exactly nothing.
            for j in j0..j1 {
                let vo = (tile0 + j - vbase) * hd;
                let w = kq[j];
                for (a, &vd) in acc.iter_mut().zip(&vt[vo..vo + hd]) {
                    *a = vd.mul_add(w, *a);
                }
            }
        }
        tile0 += FA_TILE_KV;
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = a * inv;
    }
}

fn as_f16(bits: &[u16]) -> &[f16] {
    // Safety: f16 is a transparent wrapper over u16.
    unsafe { std::slice::from_raw_parts(bits.as_ptr() as *const f16, bits.len()) }
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
