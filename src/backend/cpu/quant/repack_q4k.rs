//! Q4_K prefill arithmetic: llama.cpp's repacked 4-column gemm, bit for bit.
//!
//! llama.cpp repacks Q4_K weights eight rows at a time (`block_q4_Kx8`,
//! whenever the row count is a multiple of 8 on an AVX2 machine). A mul_mat
//! with `n` activation columns then takes columns `0..n - n % 4` in groups
//! of four through `ggml_gemm_q4_K_8x8_q8_K` (ggml-cpu/arch/x86/repack.cpp,
//! driven by `forward_mul_mat` in ggml-cpu/repack.cpp) and the last `n % 4`
//! one at a time through `ggml_gemv_q4_K_8x8_q8_K` (our `vec_dot`, see
//! `dot_scalar::q4_k`). The two round differently, so a prompt token's value
//! depends on whether it falls in a group of four.
//!
//! What the gemm does for one (weight row, activation column) pair, in both
//! its AVX-512 (16 rows at a time) and AVX2 (8 rows) loops:
//!
//! - Per 64 elements `g` (sub-blocks `2g`, `2g+1`) of a super-block, an exact
//!   i32 `isum = sc[2g] * (q . a)[2g] + sc[2g+1] * (q . a)[2g+1]` (i16
//!   partial sums of at most 16 products `15 * 128` never wrap) and
//!   `imin = mn[2g] * bs[2g] + mn[2g+1] * bs[2g+1]`, where `bs[s]` is the
//!   i16 sum of the two 16-element `bsums` of sub-block `s`.
//! - Two FMAs per `g`, in order g = 0..4 within a super-block:
//!   `acc = fma(isum, d_w * d_a, acc)`, `acc_min = fma(imin, dmin_w * d_a,
//!   acc_min)` (the products `d_w * d_a` rounded to f32 first: the build's
//!   disassembly has one `vmulps` per FMA and no other float operation).
//! - The result is `acc - acc_min`. The gemv instead takes one FMA per
//!   super-block on the whole super-block's sums.
//!
//! Activations: the gemm reads four rows quantized together by
//! `ggml_quantize_mat_q8_K_4x8` (interleaved). Each row's `d`, quants and
//! 16-element sums are those of the per-row `quantize_row_q8_K` (our
//! `quantize_act`), except that when a super-block's largest magnitude
//! occurs both positive and negative, the 4x8 quantizer takes the positive
//! one where the per-row one takes the first. Then `d` and every quant and
//! sum flip sign together, and every integer sum and every `d_w * d_a`
//! flips with them, so each product and result is bit-identical: the kernel
//! here reads ordinary per-row Q8_K activations.
//!
//! Each column's value depends only on its own activation row (the four
//! rows are quantized independently and never mixed), so a group of four is
//! four independent pairs. [`pair`] is the specification; the x86 kernels
//! reproduce it bit for bit.

use super::blocks::*;
use super::gemm::GemmArgs;
use super::GemmFn;
use crate::backend::cpu::Isa;
use crate::gguf::GgmlType;

/// The prefill-quad kernel for `weight` on `isa`, where llama.cpp's x86
/// build has a 4-column arithmetic of its own (Q4_K). `None`: quads are
/// ordinary gemm columns.
///
/// Q4_0 (AVX2) and Q2_K (AVX-512) are also repacked by llama.cpp, but our
/// kernels follow their `ggml_vec_dot_*` for decode as well, not the
/// repacked gemv (see `golden_tests`), so no quad path is given for them.
pub(super) fn select(isa: Isa, weight: GgmlType) -> Option<GemmFn> {
    if weight != GgmlType::Q4_K {
        return None;
    }
    Some(match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::quads_avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::quads_avx2,
        _ => quads_scalar,
    })
}

/// The 16 `bsums` of a Q8_K block, pairwise summed per 32-element sub-block
/// with i16 wrap-around (`_mm_hadd_epi16`).
#[inline(always)]
fn sub_block_sums(ab: &[u8]) -> [i32; 8] {
    let mut s = [0i32; 8];
    for (k, v) in s.iter_mut().enumerate() {
        let lo = rd_i16(ab, q8_k::BSUMS + 4 * k);
        let hi = rd_i16(ab, q8_k::BSUMS + 4 * k + 2);
        *v = lo.wrapping_add(hi) as i32;
    }
    s
}

/// One (weight row, activation column) value of `ggml_gemm_q4_K_8x8_q8_K`:
/// `w` and `a` hold exactly `nb` Q4_K and Q8_K blocks.
pub(super) fn pair(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f32;
    let mut acc_min = 0f32;
    for i in 0..nb {
        let wb = &w[i * q4_k::SIZE..(i + 1) * q4_k::SIZE];
        let ab = &a[i * q8_k::SIZE..(i + 1) * q8_k::SIZE];
        let ad = rd_f32(ab, q8_k::D);
        let d = rd_f16(wb, q4_k::D) * ad;
        let dmin = rd_f16(wb, q4_k::DMIN) * ad;
        let scales = &wb[q4_k::SCALES..q4_k::SCALES + 12];
        let bs = sub_block_sums(ab);
        for g in 0..4 {
            let mut isum = 0i32;
            let mut imin = 0i32;
            for h in 0..2 {
                let s = 2 * g + h;
                let (sc, mn) = scale_min_k4(s, scales);
                let mut dot = 0i32;
                for b in 0..32 {
                    let byte = wb[q4_k::QS + 32 * g + b];
                    let q = if h == 0 { byte & 0xF } else { byte >> 4 } as i32;
                    dot += q * (ab[q8_k::QS + 32 * s + b] as i8 as i32);
                }
                // |dot| <= 32 * 15 * 128 and scales < 64: no i32 overflow.
                isum += sc as i32 * dot;
                imin += mn as i32 * bs[s];
            }
            acc = (isum as f32).mul_add(d, acc);
            acc_min = (imin as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

/// Portable quads: every column through [`pair`].
///
/// # Safety
/// See [`GemmFn`]; `args.nc` is a multiple of 4 (checked by the caller).
unsafe fn quads_scalar(args: &GemmArgs<'_>, out: &mut [f32]) {
    for c in 0..args.nc {
        let a = args.act_row(c);
        for r in 0..args.nr {
            out[c * args.out_stride + r] = pair(args.nb, args.w_row(r), a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Four columns per weight row: the sixteen (64-element group, column)
    //! integer sums of a super-block are reduced to four vectors with one
    //! lane per column, so the FMA chains of the four columns run side by
    //! side in one `__m128`.

    use super::super::gemm::GemmArgs;
    use super::super::simd::{Arch, Avx2, Vnni};
    use core::arch::x86_64::*;

    const W_SIZE: usize = 144;
    const A_SIZE: usize = 292;
    const A_QS: usize = 4;
    const A_BSUMS: usize = 260;

    #[inline(always)]
    unsafe fn load256(p: *const u8) -> __m256i {
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }

    /// `f16` at `p` as `f32` (exact).
    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        unsafe {
            let h = u16::from_le_bytes([*p, *p.add(1)]);
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
        }
    }

    /// The 6-bit scales (bytes 0..8) and mins (bytes 8..16) of a Q4_K block
    /// from its 12 packed bytes at `p` (ggml's `utmp` unpacking).
    #[inline(always)]
    unsafe fn scales_mins(p: *const u8) -> __m128i {
        unsafe {
            let rd = |o: usize| (p.add(o) as *const u32).read_unaligned();
            let (k1, k2, k3) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
            let (u0, u1, u2) = (rd(0), rd(4), rd(8));
            let u3 = ((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4);
            let s1 = (u2 & k2) | (((u0 >> 6) & k3) << 4);
            _mm_set_epi32(u3 as i32, (u1 & k1) as i32, s1 as i32, (u0 & k1) as i32)
        }
    }

    /// i16 scale `i` (0..8 of the eight in each 128-bit lane) in every i16.
    #[inline(always)]
    unsafe fn bcast16(v: __m256i, i: usize) -> __m256i {
        unsafe {
            let lo = (2 * i) as i16;
            _mm256_shuffle_epi8(v, _mm256_set1_epi16(lo | ((lo + 1) << 8)))
        }
    }

    /// Lane `c` of the result: the sum of the eight i32 lanes of `v[c]`
    /// (exact; integer order does not matter).
    #[inline(always)]
    unsafe fn reduce4(v: [__m256i; 4]) -> __m128i {
        unsafe {
            let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
            _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
        }
    }

    /// 4x4 transpose of i32 lanes.
    #[inline(always)]
    unsafe fn transpose4(m: [__m128i; 4]) -> [__m128i; 4] {
        unsafe {
            let t0 = _mm_unpacklo_epi32(m[0], m[1]);
            let t1 = _mm_unpacklo_epi32(m[2], m[3]);
            let t2 = _mm_unpackhi_epi32(m[0], m[1]);
            let t3 = _mm_unpackhi_epi32(m[2], m[3]);
            [
                _mm_unpacklo_epi64(t0, t1),
                _mm_unpackhi_epi64(t0, t1),
                _mm_unpacklo_epi64(t2, t3),
                _mm_unpackhi_epi64(t2, t3),
            ]
        }
    }

    /// Every aligned group of four columns against every row: rows eight at
    /// a time through `tile8`, the last `nr % 8` one at a time through
    /// `quad`.
    ///
    /// # Safety
    /// Buffers validated by `Kernels::gemm_quads` (`nc` a multiple of 4);
    /// the features of `A` available.
    #[inline(always)]
    unsafe fn quads<A: Arch>(args: &GemmArgs<'_>, out: &mut [f32]) {
        unsafe {
            let nr8 = args.nr / 8 * 8;
            for r0 in (0..nr8).step_by(8) {
                let w: [*const u8; 8] = core::array::from_fn(|j| args.w_row(r0 + j).as_ptr());
                for c0 in (0..args.nc).step_by(4) {
                    let a: [*const u8; 4] = core::array::from_fn(|c| args.act_row(c0 + c).as_ptr());
                    let v = tile8::<A>(w, a, args.nb);
                    for (c, x) in v.into_iter().enumerate() {
                        let o = (c0 + c) * args.out_stride + r0;
                        _mm256_storeu_ps(out[o..o + 8].as_mut_ptr(), x);
                    }
                }
            }
            for r in nr8..args.nr {
                let w = args.w_row(r).as_ptr();
                for c0 in (0..args.nc).step_by(4) {
                    let a: [*const u8; 4] = core::array::from_fn(|c| args.act_row(c0 + c).as_ptr());
                    let mut lanes = [0f32; 4];
                    _mm_storeu_ps(lanes.as_mut_ptr(), quad::<A>(w, a, args.nb));
                    for (c, x) in lanes.into_iter().enumerate() {
                        out[(c0 + c) * args.out_stride + r] = x;
                    }
                }
            }
        }
    }

    /// 4x4 transposes of i32 within each 128-bit lane: with `y[j]` holding
    /// dwords of row `j` (low lane) and row `j + 4` (high lane), result `k`
    /// holds dword `k` of rows 0..8 in order.
    #[inline(always)]
    unsafe fn transpose_lanes(y: [__m256i; 4]) -> [__m256i; 4] {
        unsafe {
            let t0 = _mm256_unpacklo_epi32(y[0], y[1]);
            let t1 = _mm256_unpacklo_epi32(y[2], y[3]);
            let t2 = _mm256_unpackhi_epi32(y[0], y[1]);
            let t3 = _mm256_unpackhi_epi32(y[2], y[3]);
            [
                _mm256_unpacklo_epi64(t0, t1),
                _mm256_unpackhi_epi64(t0, t1),
                _mm256_unpacklo_epi64(t2, t3),
                _mm256_unpackhi_epi64(t2, t3),
            ]
        }
    }

    /// Bytes `off..off + 16` of the eight rows `w[j]`, transposed: dword `k`
    /// of every row in result `k`, one row per i32 lane.
    #[inline(always)]
    unsafe fn rows16(w: &[*const u8; 8], off: usize) -> [__m256i; 4] {
        unsafe {
            transpose_lanes(core::array::from_fn(|j| {
                _mm256_loadu2_m128i(
                    w[j + 4].add(off) as *const __m128i,
                    w[j].add(off) as *const __m128i,
                )
            }))
        }
    }

    /// `pshufb` mask taking bytes `b[0..4]` of every dword (0x80: zero).
    #[inline(always)]
    unsafe fn dword_bytes(b: [u8; 4]) -> __m256i {
        unsafe {
            _mm256_add_epi8(
                _mm256_set1_epi32(i32::from_le_bytes(b)),
                _mm256_setr_epi32(
                    0,
                    0x0404_0404,
                    0x0808_0808,
                    0x0c0c_0c0c,
                    0,
                    0x0404_0404,
                    0x0808_0808,
                    0x0c0c_0c0c,
                ),
            )
        }
    }

    /// Eight weight rows against four activation rows, one row per lane (as
    /// llama.cpp's interleaved layout has it, so no horizontal sums): result
    /// `c`, lane `j` is `pair` of row `j`, column `c`.
    #[inline(always)]
    unsafe fn tile8<A: Arch>(w: [*const u8; 8], a: [*const u8; 4], nb: usize) -> [__m256; 4] {
        unsafe {
            let m4 = _mm256_set1_epi8(0x0F);
            let (k1, k2, k3) = (
                _mm256_set1_epi32(0x3f3f_3f3f),
                _mm256_set1_epi32(0x0f0f_0f0f),
                _mm256_set1_epi32(0x0303_0303),
            );
            let z = 0x80u8;
            // Per 64-element group g: its two scales (as i32, or for AVX2 as
            // an i16 pair each) and its two mins (an i16 pair).
            let sc_mask: [[__m256i; 2]; 2] = if A::VNNI {
                [
                    [dword_bytes([0, z, z, z]), dword_bytes([1, z, z, z])],
                    [dword_bytes([2, z, z, z]), dword_bytes([3, z, z, z])],
                ]
            } else {
                [
                    [dword_bytes([0, z, 0, z]), dword_bytes([1, z, 1, z])],
                    [dword_bytes([2, z, 2, z]), dword_bytes([3, z, 3, z])],
                ]
            };
            let mn_mask = [dword_bytes([0, z, 1, z]), dword_bytes([2, z, 3, z])];
            let dd_mask = _mm256_setr_epi8(
                0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2,
                3, 6, 7, 10, 11, 14, 15,
            );

            let mut acc = [_mm256_setzero_ps(); 4];
            let mut acc_min = [_mm256_setzero_ps(); 4];
            for b in 0..nb {
                let wb: [*const u8; 8] = core::array::from_fn(|j| w[j].add(b * W_SIZE));
                let ab: [*const u8; 4] = core::array::from_fn(|c| a[c].add(b * A_SIZE));

                // d, dmin and the 12 scale bytes of the eight rows.
                let [dm, u0, u1, u2] = rows16(&wb, 0);
                let dm =
                    _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(dm, dd_mask));
                let dw = _mm256_cvtph_ps(_mm256_castsi256_si128(dm));
                let dminw = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(dm));
                let sc = [
                    _mm256_and_si256(u0, k1),
                    _mm256_or_si256(
                        _mm256_and_si256(u2, k2),
                        _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(u0), k3)),
                    ),
                ];
                let mn = [
                    _mm256_and_si256(u1, k1),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi32::<4>(u2), k2),
                        _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(u1), k3)),
                    ),
                ];

                let mut d = [_mm256_setzero_ps(); 4];
                let mut dmin = [_mm256_setzero_ps(); 4];
                let mut bs = [_mm_setzero_si128(); 4];
                for c in 0..4 {
                    let ad = _mm256_set1_ps((ab[c] as *const f32).read_unaligned());
                    d[c] = _mm256_mul_ps(dw, ad);
                    dmin[c] = _mm256_mul_ps(dminw, ad);
                    let p = ab[c].add(A_BSUMS) as *const __m128i;
                    bs[c] = _mm_hadd_epi16(_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
                }

                for g in 0..4 {
                    let lo = rows16(&wb, 16 + 32 * g);
                    let hi = rows16(&wb, 32 + 32 * g);
                    let bits: [__m256i; 8] =
                        core::array::from_fn(|k| if k < 4 { lo[k] } else { hi[k - 4] });
                    let sc_g = sc[g / 2];
                    let scales = [
                        _mm256_shuffle_epi8(sc_g, sc_mask[g % 2][0]),
                        _mm256_shuffle_epi8(sc_g, sc_mask[g % 2][1]),
                    ];
                    let mins = _mm256_shuffle_epi8(mn[g / 2], mn_mask[g % 2]);
                    let mut isum = [_mm256_setzero_si256(); 4];
                    for h in 0..2 {
                        let q: [__m256i; 8] = core::array::from_fn(|k| {
                            if h == 0 {
                                _mm256_and_si256(bits[k], m4)
                            } else {
                                _mm256_and_si256(_mm256_srli_epi16::<4>(bits[k]), m4)
                            }
                        });
                        for c in 0..4 {
                            let act = ab[c].add(A_QS + 64 * g + 32 * h) as *const i32;
                            let bc = |k: usize| _mm256_set1_epi32(act.add(k).read_unaligned());
                            let part = if A::VNNI {
                                // u8 x i8 in 4-byte groups, exact in i32;
                                // the scale afterwards.
                                let mut s = _mm256_setzero_si256();
                                for (k, qk) in q.iter().enumerate() {
                                    s = A::dp_u8i8(s, *qk, bc(k));
                                }
                                _mm256_mullo_epi32(s, scales[h])
                            } else {
                                // i16 sums of at most 16 products 15 * 128:
                                // no wrap.
                                let mut s = _mm256_maddubs_epi16(q[0], bc(0));
                                for (k, qk) in q.iter().enumerate().skip(1) {
                                    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(*qk, bc(k)));
                                }
                                _mm256_madd_epi16(s, scales[h])
                            };
                            isum[c] = _mm256_add_epi32(isum[c], part);
                        }
                    }
                    for c in 0..4 {
                        let pair = _mm256_broadcastd_epi32(match g {
                            0 => bs[c],
                            1 => _mm_shuffle_epi32::<1>(bs[c]),
                            2 => _mm_shuffle_epi32::<2>(bs[c]),
                            _ => _mm_shuffle_epi32::<3>(bs[c]),
                        });
                        let imin = _mm256_madd_epi16(mins, pair);
                        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]), d[c], acc[c]);
                        acc_min[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), dmin[c], acc_min[c]);
                    }
                }
            }
            core::array::from_fn(|c| _mm256_sub_ps(acc[c], acc_min[c]))
        }
    }

    /// One weight row against four activation rows: lane `c` is `pair` of
    /// column `c`.
    #[inline(always)]
    unsafe fn quad<A: Arch>(w: *const u8, a: [*const u8; 4], nb: usize) -> __m128 {
        unsafe {
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = _mm_setzero_ps();
            let mut acc_min = _mm_setzero_ps();
            for b in 0..nb {
                let wb = w.add(b * W_SIZE);
                let ab: [*const u8; 4] = core::array::from_fn(|c| a[c].add(b * A_SIZE));
                let sm = scales_mins(wb.add(4));
                let sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
                let mins = _mm_cvtepu8_epi16(_mm_srli_si128::<8>(sm));

                // isum[g], one lane per column.
                let mut isum = [_mm_setzero_si128(); 4];
                for (g, s) in isum.iter_mut().enumerate() {
                    let bits = load256(wb.add(16 + 32 * g));
                    let lo = _mm256_and_si256(bits, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                    let (sl, sh) = (bcast16(sc, 2 * g), bcast16(sc, 2 * g + 1));
                    let v: [__m256i; 4] = core::array::from_fn(|c| {
                        let q = ab[c].add(A_QS + 64 * g);
                        let pl = _mm256_maddubs_epi16(lo, load256(q));
                        let ph = _mm256_maddubs_epi16(hi, load256(q.add(32)));
                        A::dp_i16(_mm256_madd_epi16(pl, sl), ph, sh)
                    });
                    *s = reduce4(v);
                }

                // imin[g] per column (lanes g), then one lane per column.
                let per_col: [__m128i; 4] = core::array::from_fn(|c| {
                    let bs = load256(ab[c].add(A_BSUMS));
                    let pairs = _mm_hadd_epi16(
                        _mm256_castsi256_si128(bs),
                        _mm256_extracti128_si256::<1>(bs),
                    );
                    _mm_madd_epi16(mins, pairs)
                });
                let imin = transpose4(per_col);

                let ad = _mm_setr_ps(
                    (ab[0] as *const f32).read_unaligned(),
                    (ab[1] as *const f32).read_unaligned(),
                    (ab[2] as *const f32).read_unaligned(),
                    (ab[3] as *const f32).read_unaligned(),
                );
                let d = _mm_mul_ps(_mm_set1_ps(f16_at(wb)), ad);
                let dmin = _mm_mul_ps(_mm_set1_ps(f16_at(wb.add(2))), ad);
                for g in 0..4 {
                    acc = _mm_fmadd_ps(_mm_cvtepi32_ps(isum[g]), d, acc);
                    acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(imin[g]), dmin, acc_min);
                }
            }
            _mm_sub_ps(acc, acc_min)
        }
    }

    /// # Safety
    /// See `quads`; AVX2, FMA and F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quads_avx2(args: &GemmArgs<'_>, out: &mut [f32]) {
        unsafe { quads::<Avx2>(args, out) }
    }

    /// # Safety
    /// See `quads`; the AVX-512 set of `Isa::Avx512` available.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn quads_avx512(args: &GemmArgs<'_>, out: &mut [f32]) {
        unsafe { quads::<Vnni>(args, out) }
    }
}
