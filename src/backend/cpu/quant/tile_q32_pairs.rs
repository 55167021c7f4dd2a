//! AVX-512 VNNI multi-column kernel for the 32-wide types: two columns per
//! 512-bit vector.
//!
//! Per block, a (row, column) pair costs one 8-lane integer dot, its
//! conversion to float and one 8-lane FMA (see `tile_q32`). Here the eight
//! lanes of two columns are interleaved in one zmm (lane `2k + j` is column
//! `j`'s lane `k`), so one `vpdpbusd`, one conversion and one FMA serve two
//! pairs, and each lane still sees exactly its own pair's operations in the
//! same order: the bits equal the single-pair kernel's.
//!
//! - Weights: each row's block is unpacked once per tile and its dwords
//!   duplicated (`[q0 q0 q1 q1 ..]`), then used by every column pair.
//! - Activations: quants interleaved by dword per column pair, the integer
//!   correction (`-K * sum(a)` per lane) and the scales are laid out once
//!   per call in scratch, so the inner loop only loads them.
//! - Scales: per block, `dw[r] * da[c]` for the tile's rows and a column
//!   pair is one 16-lane multiply, stored and read back as 8-byte broadcasts.

use super::gemm::GemmArgs;
use super::simd::hsum8;
use super::tile_q32::{act_layout, f16_to_f32, headers, lane, panel_bytes, Q32};
use core::arch::x86_64::*;
use std::cell::RefCell;

/// Rows per tile.
const R: usize = 4;
/// Column pairs per tile.
const P: usize = 4;

#[derive(Default)]
struct Scratch {
    /// Interleaved activation quants, `[pair][block]`.
    acts: Vec<__m512i>,
    /// Interleaved corrections, `[pair][block]` (types with one).
    corr: Vec<__m512i>,
    /// `[pair][block][j]`: activation scale, then (Q8_1) its sum `s`.
    da: Vec<[f32; 2]>,
    s: Vec<[f32; 2]>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn grow<T: Copy>(v: &mut Vec<T>, n: usize, zero: T) {
    if v.len() < n {
        v.resize(n, zero);
    }
}

/// Lane `2k + j` takes dword `k` of column `j` (`j` = 0 from the first
/// operand, 1 from the second).
#[inline(always)]
unsafe fn interleave_idx() -> __m512i {
    unsafe { _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23) }
}

/// Lanes `2k` and `2k + 1` take dword `k`.
#[inline(always)]
unsafe fn dup_idx() -> __m512i {
    unsafe { _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7) }
}

/// Lanes `2r` and `2r + 1` take the `headers` lane of row `r`.
#[inline(always)]
unsafe fn row_dup_idx() -> __m512i {
    unsafe {
        let l = |r: usize| lane(r) as i32;
        _mm512_setr_epi32(
            l(0),
            l(0),
            l(1),
            l(1),
            l(2),
            l(2),
            l(3),
            l(3),
            l(4),
            l(4),
            l(5),
            l(5),
            l(6),
            l(6),
            l(7),
            l(7),
        )
    }
}

/// An 8-byte pair of floats broadcast to all 16 lanes: `[x0 x1 x0 x1 ..]`.
#[inline(always)]
unsafe fn bcast_pair(p: *const [f32; 2]) -> __m512 {
    unsafe { _mm512_castpd_ps(_mm512_set1_pd((p as *const f64).read_unaligned())) }
}

/// Gemm over columns `0..2 * n_pairs` of `args`, two at a time.
///
/// # Safety
/// Buffers validated by `Kernels::gemm`; AVX-512 F/BW/VL/DQ/VNNI available
/// (the caller is compiled with them).
#[inline(always)]
pub(super) unsafe fn gemm<W: Q32>(args: &GemmArgs<'_>, n_pairs: usize, out: &mut [f32], k: i32) {
    // As in `tile_q32`: the body must be inlined into the caller's
    // target-feature context, and gemm never re-enters on a thread.
    let s = SCRATCH.with(|s| s.as_ptr());
    unsafe { gemm_in::<W>(args, n_pairs, out, k, &mut *s) }
}

#[inline(always)]
unsafe fn gemm_in<W: Q32>(
    args: &GemmArgs<'_>,
    n_pairs: usize,
    out: &mut [f32],
    k: i32,
    s: &mut Scratch,
) {
    unsafe {
        let (asz, aqs) = act_layout(W::MIN);
        let nb = args.nb;
        let n = n_pairs * nb;
        grow(&mut s.acts, n, _mm512_setzero_si512());
        grow(&mut s.da, n, [0.0; 2]);
        if k != 0 {
            grow(&mut s.corr, n, _mm512_setzero_si512());
        }
        if W::MIN {
            grow(&mut s.s, n, [0.0; 2]);
        }
        let ones = _mm512_set1_epi8(1);
        let negk = _mm512_set1_epi32(-k);
        let il = interleave_idx();
        for p in 0..n_pairs {
            let a0 = args.act_row(2 * p).as_ptr();
            let a1 = args.act_row(2 * p + 1).as_ptr();
            for b in 0..nb {
                let i = p * nb + b;
                let q0 = _mm256_loadu_si256(a0.add(b * asz + aqs) as *const __m256i);
                let q1 = _mm256_loadu_si256(a1.add(b * asz + aqs) as *const __m256i);
                let q = _mm512_permutex2var_epi32(
                    _mm512_castsi256_si512(q0),
                    il,
                    _mm512_castsi256_si512(q1),
                );
                *s.acts.as_mut_ptr().add(i) = q;
                if k != 0 {
                    let sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, q);
                    *s.corr.as_mut_ptr().add(i) = _mm512_mullo_epi32(sum, negk);
                }
                *s.da.as_mut_ptr().add(i) =
                    [f16_to_f32(a0.add(b * asz)), f16_to_f32(a1.add(b * asz))];
                if W::MIN {
                    *s.s.as_mut_ptr().add(i) = [
                        f16_to_f32(a0.add(b * asz + 2)),
                        f16_to_f32(a1.add(b * asz + 2)),
                    ];
                }
            }
        }
        let t = Tables {
            nb,
            acts: s.acts.as_ptr(),
            corr: if k != 0 {
                s.corr.as_ptr()
            } else {
                core::ptr::null()
            },
            da: s.da.as_ptr(),
            s: s.s.as_ptr(),
        };

        // Panels of rows stay in L2 while every column tile passes over
        // them; a tile's activation tables stay in L1.
        let nr = args.nr;
        let panel = (panel_bytes() / args.wb.max(1)).max(R) / R * R;
        let full = n_pairs / P * P;
        let mut p0 = 0;
        while p0 < nr {
            let p1 = nr.min(p0 + panel);
            let mut c = 0;
            while c < full {
                rows::<W, P>(args, out, &t, p0, p1, c);
                c += P;
            }
            while c < n_pairs {
                rows::<W, 1>(args, out, &t, p0, p1, c);
                c += 1;
            }
            p0 = p1;
        }
    }
}

/// Per-call activation tables (see `Scratch`).
struct Tables {
    nb: usize,
    acts: *const __m512i,
    /// Null when the type has no correction.
    corr: *const __m512i,
    da: *const [f32; 2],
    s: *const [f32; 2],
}

/// Rows `r0..r1` against column pairs `c..c + PT`.
#[inline(always)]
unsafe fn rows<W: Q32, const PT: usize>(
    args: &GemmArgs<'_>,
    out: &mut [f32],
    t: &Tables,
    r0: usize,
    r1: usize,
    c: usize,
) {
    unsafe {
        let mut r = r0;
        while r + R <= r1 {
            tile::<W, R, PT>(args, out, t, r, c);
            r += R;
        }
        while r < r1 {
            tile::<W, 1, PT>(args, out, t, r, c);
            r += 1;
        }
    }
}

/// Rows `r0..r0 + RT` against column pairs `c0..c0 + PT`.
#[inline(always)]
unsafe fn tile<W: Q32, const RT: usize, const PT: usize>(
    args: &GemmArgs<'_>,
    out: &mut [f32],
    t: &Tables,
    r0: usize,
    c0: usize,
) {
    unsafe {
        let nb = t.nb;
        let mut wp = [core::ptr::null::<u8>(); RT];
        for (r, p) in wp.iter_mut().enumerate() {
            *p = args.w_row(r0 + r).as_ptr();
        }
        let (rdup, wdup) = (row_dup_idx(), dup_idx());
        // Q8_1 min term per pair, lane 2r + j: its own chain, computed
        // first so the main loop has the registers for the accumulators.
        let mut summs = [_mm512_setzero_ps(); PT];
        if W::MIN {
            for b in 0..nb {
                let (_, mw) = headers::<RT>(&wp, b * W::SIZE);
                let mw = _mm512_permutexvar_ps(rdup, _mm512_castps256_ps512(mw));
                for (p, sp) in summs.iter_mut().enumerate() {
                    // ggml: summs += m * s, one contracted FMA per block.
                    *sp = _mm512_fmadd_ps(mw, bcast_pair(t.s.add((c0 + p) * nb + b)), *sp);
                }
            }
        }
        let mut sms = [[0f32; 16]; PT];
        for p in 0..PT {
            _mm512_storeu_ps(sms[p].as_mut_ptr(), summs[p]);
        }
        let mut acc = [[_mm512_setzero_ps(); PT]; RT];
        // Scale products of this block, [pair][2r + j].
        let mut dd = [[0f32; 16]; PT];
        for b in 0..nb {
            let (dw, _) = headers::<RT>(&wp, b * W::SIZE);
            let dw = _mm512_permutexvar_ps(rdup, _mm512_castps256_ps512(dw));
            for (p, ddp) in dd.iter_mut().enumerate() {
                let i = (c0 + p) * nb + b;
                _mm512_storeu_ps(ddp.as_mut_ptr(), _mm512_mul_ps(dw, bcast_pair(t.da.add(i))));
            }
            // Keep the products in memory: the FMAs take them as broadcast
            // loads rather than shuffles.
            core::hint::black_box(&mut dd);
            for r in 0..RT {
                let q = W::unpack(wp[r].add(b * W::SIZE));
                let mut w = _mm512_permutexvar_epi32(wdup, _mm512_castsi256_si512(q));
                if W::SIGNED {
                    w = _mm512_xor_si512(w, _mm512_set1_epi8(-128));
                }
                for p in 0..PT {
                    let i = (c0 + p) * nb + b;
                    let init = if t.corr.is_null() {
                        _mm512_setzero_si512()
                    } else {
                        *t.corr.add(i)
                    };
                    let l = _mm512_dpbusd_epi32(init, w, *t.acts.add(i));
                    let d = bcast_pair(dd[p].as_ptr().add(2 * r) as *const [f32; 2]);
                    acc[r][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(l), acc[r][p]);
                }
            }
        }
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
        for (p, sm) in sms.iter().enumerate() {
            for (r, accr) in acc.iter().enumerate() {
                for (j, idx) in [even, odd].into_iter().enumerate() {
                    let a = _mm512_castps512_ps256(_mm512_permutexvar_ps(idx, accr[p]));
                    let mut v = hsum8(a);
                    if W::MIN {
                        v += sm[2 * r + j];
                    }
                    out[(2 * (c0 + p) + j) * args.out_stride + r0 + r] = v;
                }
            }
        }
    }
}
