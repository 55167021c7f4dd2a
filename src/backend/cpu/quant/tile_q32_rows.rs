//! AVX-512 VNNI multi-column kernel for the 32-wide types: two weight rows
//! per 512-bit vector.
//!
//! Per block, a (row, column) pair costs one 8-lane integer dot, its
//! conversion to float and one 8-lane FMA (see `tile_q32`). Here the eight
//! lanes of two rows are interleaved in one zmm (lane `2k + j` is row `j`'s
//! lane `k`, see `Q32::unpack_rows`), against one column's quants with each
//! dword duplicated, so one `vpdpbusd`, one conversion and one FMA serve
//! two pairs. Each lane still sees exactly its own pair's operations in the
//! same order: the bits equal the single-pair kernel's.
//!
//! Per tile of four rows by eight columns and per block:
//! - each row pair is unpacked once (two loads, a permute, the nibble
//!   split) and serves every column;
//! - the activation quants (dwords duplicated) and, for offset types, the
//!   integer correction (`-K * sum(a)` per lane) are laid out once per call
//!   in scratch, so the inner loop takes them as memory operands;
//! - the scale products `dw[r] * da[c]` of four rows and four columns are one
//!   16-lane multiply, stored, and each FMA takes its two rows' products as
//!   one 8-byte broadcast; the Q8_1 min term `m[r] * s[c]` is one 16-lane FMA
//!   chain per four rows and four columns. Both are computed one block
//!   ahead, so the FMAs never wait on the header loads.
//! - The first pass over a panel of rows prefetches ahead of itself (rows
//!   stream from memory then), and both rows of an accumulator are reduced
//!   at once at the end of a tile.
//!
//! Lane `4c + r` of the scale vectors is column `c`'s, row `r`'s.

use super::gemm::GemmArgs;
use super::simd::Vnni;
use super::tile_q32::{self, act_layout, panel_bytes, prefetch_enabled, quad, PREFETCH_AHEAD, Q32};
use core::arch::x86_64::*;
use std::cell::RefCell;

/// Columns per tile: two groups of four.
const CT: usize = 8;

/// Per-call activation tables, `[column tile][block][..]`, so that one
/// tile's data is contiguous.
#[derive(Default)]
struct Scratch {
    /// `[..][column]`: the quants, each dword duplicated.
    acts: Vec<__m512i>,
    /// `[..][column]`: the correction, laid out likewise.
    corr: Vec<__m512i>,
    /// `[..][group of four columns]`: their activation scales, lane `4c + r`
    /// column `c`'s (the same for the four rows `r`).
    da: Vec<__m512>,
    /// `[..][group]`: the Q8_1 sums `s`, laid out likewise.
    s: Vec<__m512>,
    /// What the tables hold: activation epoch (see
    /// `gemm::with_activation_epoch`), buffer, stride, columns, blocks,
    /// correction factor, min term. None: nothing reusable.
    of: Option<(u64, usize, usize, usize, usize, i32, bool)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn grow<T: Copy>(v: &mut Vec<T>, n: usize, zero: T) {
    if v.len() < n {
        v.resize(n, zero);
    }
}

/// An 8-byte pair of floats broadcast from memory to all 16 lanes:
/// `[x0 x1 x0 x1 ..]`. A volatile read, so the compiler keeps the products in
/// memory and this stays one broadcast load (forwarding the stored vector
/// would turn it into shuffles, on the port the permutes need).
#[inline(always)]
unsafe fn bcast_pair(p: *const f32) -> __m512 {
    unsafe { _mm512_castpd_ps(_mm512_set1_pd((p as *const f64).read_volatile())) }
}

/// `*acc = fma(d, f, *acc)`, accumulating in place (as asm, so that the
/// compiler keeps each accumulator in one register across the loop rather
/// than rotating registers with moves).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn fma_into(acc: &mut __m512, d: __m512, f: __m512) {
    unsafe {
        core::arch::asm!(
            "vfmadd231ps {a}, {d}, {f}",
            a = inout(zmm_reg) *acc,
            d = in(zmm_reg) d,
            f = in(zmm_reg) f,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
}

/// ggml's `hsum_float_8` of both rows of an accumulator at once: lanes 0
/// and 1 of the result are rows 0 and 1 (see `simd::hsum8` for the order).
#[inline(always)]
unsafe fn hsum8_rows(a: __m512) -> __m128 {
    unsafe {
        // Row j's lane k is lane 2k + j: halves pair lane k with k + 4, then
        // k with k + 2, then k with k + 1, as hsum8 does.
        let t = _mm256_add_ps(_mm512_extractf32x8_ps::<1>(a), _mm512_castps512_ps256(a));
        let u = _mm_add_ps(_mm256_extractf128_ps::<1>(t), _mm256_castps256_ps128(t));
        _mm_add_ps(_mm_movehl_ps(u, u), u)
    }
}

/// Gemm over all columns of `args`.
///
/// # Safety
/// Buffers validated by `Kernels::gemm`; AVX-512 F/BW/VL/DQ/VNNI and BMI2
/// available (the caller is compiled with them).
#[inline(always)]
pub(super) unsafe fn gemm<W: Q32>(args: &GemmArgs<'_>, out: &mut [f32]) {
    // As in `tile_q32`: the body must be inlined into the caller's
    // target-feature context, and gemm never re-enters on a thread.
    let s = SCRATCH.with(|s| s.as_ptr());
    unsafe { gemm_in::<W>(args, out, &mut *s) }
}

#[inline(always)]
unsafe fn gemm_in<W: Q32>(args: &GemmArgs<'_>, out: &mut [f32], s: &mut Scratch) {
    unsafe {
        let k = tile_q32::corr_k::<W, Vnni>();
        let (nb, nc) = (args.nb, args.nc);
        // The tiles prefetch `PREFETCH_AHEAD` bytes ahead of themselves; the
        // first rows are fetched here, while the tables are laid out.
        if args.w_stride == args.wb && prefetch_enabled() {
            let w = args.w.as_ptr();
            let n = PREFETCH_AHEAD.min(args.nr * args.wb);
            for off in (0..n).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(w.add(off) as *const i8);
            }
        }
        let epoch = super::gemm::activation_epoch();
        let of = (
            epoch,
            args.acts.as_ptr() as usize,
            args.act_stride,
            nc,
            nb,
            k,
            W::MIN,
        );
        if epoch == 0 || s.of != Some(of) {
            s.of = None;
            lay_out::<W>(args, s, k);
            if epoch != 0 {
                s.of = Some(of);
            }
        }
        let t = Tables {
            nb,
            acts: s.acts.as_ptr(),
            corr: s.corr.as_ptr(),
            da: s.da.as_ptr(),
            s: s.s.as_ptr(),
        };

        // Panels of rows stay in L2 while every column tile passes over
        // them; the first pass streams them in, with software prefetch.
        let nr = args.nr;
        let panel = (panel_bytes() / args.wb.max(1)).max(4) / 4 * 4;
        let mut p0 = 0;
        while p0 < nr {
            let p1 = nr.min(p0 + panel);
            let mut c = 0;
            while c + CT <= nc {
                rows::<W, CT>(args, out, &t, p0, p1, c, c == 0);
                c += CT;
            }
            // The rest in tiles of 4, 2, 1 columns: none straddles a group.
            for w in [4, 2, 1] {
                if nc - c >= w {
                    match w {
                        4 => rows::<W, 4>(args, out, &t, p0, p1, c, c == 0),
                        2 => rows::<W, 2>(args, out, &t, p0, p1, c, c == 0),
                        _ => rows::<W, 1>(args, out, &t, p0, p1, c, c == 0),
                    }
                    c += w;
                }
            }
            p0 = p1;
        }
    }
}

/// Lays out the activation tables of `args`'s columns in `s`.
#[inline(always)]
unsafe fn lay_out<W: Q32>(args: &GemmArgs<'_>, s: &mut Scratch, k: i32) {
    unsafe {
        let (asz, aqs) = act_layout(W::MIN);
        let (nb, nc) = (args.nb, args.nc);
        let tiles = nc.div_ceil(CT);
        grow(&mut s.acts, tiles * CT * nb, _mm512_setzero_si512());
        grow(&mut s.da, tiles * 2 * nb, _mm512_setzero_ps());
        if k != 0 {
            grow(&mut s.corr, tiles * CT * nb, _mm512_setzero_si512());
        }
        if W::MIN {
            grow(&mut s.s, tiles * 2 * nb, _mm512_setzero_ps());
        }
        let ones = _mm512_set1_epi8(1);
        let negk = _mm512_set1_epi32(-k);
        let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        for c in 0..nc {
            let a = args.act_row(c).as_ptr();
            let base = (c / CT) * nb * CT + c % CT;
            for b in 0..nb {
                let i = base + b * CT;
                let q = _mm256_loadu_si256(a.add(b * asz + aqs) as *const __m256i);
                let q = _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(q));
                *s.acts.as_mut_ptr().add(i) = q;
                if k != 0 {
                    let sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, q);
                    *s.corr.as_mut_ptr().add(i) = _mm512_mullo_epi32(sum, negk);
                }
            }
        }
        // Each column's scale (and sum) four times over, per group of four.
        let lo = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(4));
        let spread = |h: &[u16; CT], at: *mut __m512| {
            let f = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(
                h.as_ptr() as *const __m128i
            )));
            *at = _mm512_permutexvar_ps(lo, f);
            *at.add(1) = _mm512_permutexvar_ps(hi, f);
        };
        for tile in 0..tiles {
            for b in 0..nb {
                let (mut d, mut sv) = ([0u16; CT], [0u16; CT]);
                for j in 0..CT.min(nc - tile * CT) {
                    let a = args.act_row(tile * CT + j).as_ptr().add(b * asz);
                    d[j] = (a as *const u16).read_unaligned();
                    if W::MIN {
                        sv[j] = (a.add(2) as *const u16).read_unaligned();
                    }
                }
                let i = (tile * nb + b) * 2;
                spread(&d, s.da.as_mut_ptr().add(i));
                if W::MIN {
                    spread(&sv, s.s.as_mut_ptr().add(i));
                }
            }
        }
    }
}

/// Per-call activation tables (see `Scratch`).
struct Tables {
    nb: usize,
    acts: *const __m512i,
    /// Unused when the type has no correction.
    corr: *const __m512i,
    da: *const __m512,
    s: *const __m512,
}

/// Rows `r0..r1` against columns `c..c + C`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<W: Q32, const C: usize>(
    args: &GemmArgs<'_>,
    out: &mut [f32],
    t: &Tables,
    r0: usize,
    r1: usize,
    c: usize,
    stream: bool,
) {
    unsafe {
        let mut r = r0;
        while r + 4 <= r1 {
            tile::<W, 2, C>(args, out, t, r, 4, c, stream);
            r += 4;
        }
        if r < r1 {
            tile::<W, 1, C>(args, out, t, r, r1 - r, c, stream);
            if r + 2 < r1 {
                tile::<W, 1, C>(args, out, t, r + 2, r1 - r - 2, c, stream);
            }
        }
    }
}

/// Rows `r0..r0 + n` (`n <= 2 * RP`, the rest padding) against columns
/// `c0..c0 + C`, `RP` row pairs.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile<W: Q32, const RP: usize, const C: usize>(
    args: &GemmArgs<'_>,
    out: &mut [f32],
    t: &Tables,
    r0: usize,
    n: usize,
    c0: usize,
    stream: bool,
) {
    unsafe {
        let nb = t.nb;
        // Rows past `n` repeat the last one: computed, never written.
        let mut wp = [core::ptr::null::<u8>(); 4];
        for (r, p) in wp.iter_mut().enumerate() {
            *p = args.w_row(r0 + r.min(n.min(2 * RP) - 1)).as_ptr();
        }
        let g0 = c0 / 4;
        let groups = (c0 + C - 1) / 4 - g0 + 1;
        // Column c's scale products start at lane `base[c]` of `dd`.
        let base = |c: usize| 4 * (c0 + c - 4 * g0);
        let mut acc = [[_mm512_setzero_ps(); C]; RP];
        let mut summs = [_mm512_setzero_ps(); 2];
        // Scale products of two blocks: block b's are computed (and its min
        // term accumulated) during block b - 1, so the FMAs never wait on
        // the header loads.
        let mut dd = [[0f32; 32]; 2];
        // [d0 m0 d1 m1 d2 m2 d3 m3] to [d0 d1 d2 d3] (or m) four times.
        let pick_d = _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6);
        let pick_m = _mm512_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7, 1, 3, 5, 7, 1, 3, 5, 7);
        macro_rules! scales {
            ($b:expr) => {{
                let b = $b;
                let h = _mm512_castps256_ps512(_mm256_cvtph_ps(quad::<4>(&wp, b * W::SIZE, 0)));
                let dw = _mm512_permutexvar_ps(pick_d, h);
                let mw = _mm512_permutexvar_ps(pick_m, h);
                let slot = dd[b & 1].as_mut_ptr();
                for g in 0..groups {
                    let i = ((c0 / CT) * nb + b) * 2 + (c0 % CT) / 4 + g;
                    _mm512_storeu_ps(slot.add(16 * g), _mm512_mul_ps(dw, *t.da.add(i)));
                    if W::MIN {
                        // ggml: summs += m * s, one contracted FMA per block.
                        summs[g] = _mm512_fmadd_ps(mw, *t.s.add(i), summs[g]);
                    }
                }
            }};
        }
        let contiguous = stream && args.w_stride == args.wb && prefetch_enabled();
        let mut pf = wp[0].wrapping_add(PREFETCH_AHEAD);
        scales!(0);
        for b in 0..nb {
            let off = b * W::SIZE;
            if contiguous {
                let end = wp[0].wrapping_add(PREFETCH_AHEAD + (b + 1) * 2 * RP * W::SIZE);
                while pf < end {
                    _mm_prefetch::<_MM_HINT_T0>(pf as *const i8);
                    pf = pf.wrapping_add(64);
                }
            }
            if b + 1 < nb {
                scales!(b + 1);
            }
            let dd = dd[b & 1].as_ptr();
            let mut w = [_mm512_setzero_si512(); RP];
            for (rp, v) in w.iter_mut().enumerate() {
                *v = W::unpack_rows(wp[2 * rp].add(off), wp[2 * rp + 1].add(off));
                if W::SIGNED {
                    *v = _mm512_xor_si512(*v, _mm512_set1_epi8(-128));
                }
            }
            let i0 = ((c0 / CT) * nb + b) * CT + c0 % CT;
            for c in 0..C {
                let av = *t.acts.add(i0 + c);
                let init = if tile_q32::corr_k::<W, Vnni>() == 0 {
                    _mm512_setzero_si512()
                } else {
                    *t.corr.add(i0 + c)
                };
                for (rp, wv) in w.iter().enumerate() {
                    let l = _mm512_dpbusd_epi32(init, *wv, av);
                    let d = bcast_pair(dd.add(base(c) + 2 * rp));
                    fma_into(&mut acc[rp][c], d, _mm512_cvtepi32_ps(l));
                }
            }
        }
        let mut sm = [0f32; 32];
        for (g, v) in summs.iter().enumerate() {
            _mm512_storeu_ps(sm.as_mut_ptr().add(16 * g), *v);
        }
        for (rp, accr) in acc.iter().enumerate() {
            let r = 2 * rp;
            if r >= n {
                break;
            }
            for (c, a) in accr.iter().enumerate() {
                let mut v = hsum8_rows(*a);
                if W::MIN {
                    v = _mm_add_ps(
                        v,
                        _mm_castpd_ps(_mm_load_sd(sm.as_ptr().add(base(c) + r) as *const f64)),
                    );
                }
                let o = out.as_mut_ptr().add((c0 + c) * args.out_stride + r0 + r);
                if r + 1 < n {
                    _mm_store_sd(o as *mut f64, _mm_castps_pd(v));
                } else {
                    *o = _mm_cvtss_f32(v);
                }
            }
        }
    }
}
