//! Tiled kernels for the 32-wide block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
//! against Q8_0/Q8_1 activations, generic over the ISA (`Arch`).
//!
//! Per (row, column) pair the arithmetic is exactly `dot_scalar`'s: eight
//! integer lane sums per block, `acc = fma(dw * da, lanes, acc)` block after
//! block, `hsum8(acc) (+ summs)`. Tiles only interleave independent pairs:
//! one weight block is unpacked once and used for every column of the tile,
//! one activation block is loaded once for every row.
//!
//! Per block, the f16 headers of the tile's rows are converted together
//! (one `vcvtph2ps` for four rows), multiplied by each column's activation
//! scale and kept on the stack, so each pair's FMA takes its scale as a
//! broadcast load. Activation scales (and Q8_1 sums, and the integer
//! correction for offset types) are converted once per call into scratch.
//! No gathers: they are slow on current Intel microcode and stall streaming.

use super::gemm::GemmArgs;
use super::simd::{bytes_from_bits32, dp_i8i8_avx2, hsum8, nibbles32, Arch};
use core::arch::x86_64::*;
use std::cell::RefCell;

/// A 32-wide weight block type.
pub(super) trait Q32 {
    /// Block bytes.
    const SIZE: usize;
    /// Has an f16 min at byte 2 (Q4_1, Q5_1), paired with Q8_1 activations.
    const MIN: bool;
    /// The unpacked unsigned value minus `OFFSET` is the quant (8 for Q4_0,
    /// 16 for Q5_0); 0 for the types with a min.
    const OFFSET: i32;
    /// Q8_0: the unpacked bytes are signed.
    const SIGNED: bool;
    /// The block's 32 quants in element order.
    unsafe fn unpack(p: *const u8) -> __m256i;
    /// Two consecutive blocks (`p`, `p + SIZE`) in one 512-bit vector, as
    /// `unpack` lays each out. Only called from AVX-512 code.
    unsafe fn unpack2(p: *const u8) -> __m512i;
    /// The same block of two rows (`a`, `b`) in one 512-bit vector, dwords
    /// interleaved: lane `2k + j` is dword `k` of row `j`'s `unpack`. Only
    /// called from AVX-512 VNNI code.
    unsafe fn unpack_rows(a: *const u8, b: *const u8) -> __m512i;
}

/// Nibbles of one block of two rows, quant bytes at `a` and `b`, in the
/// `unpack_rows` layout: lanes 0..8 the low nibbles of dwords 0..4,
/// lanes 8..16 the high nibbles, rows alternating.
#[inline(always)]
unsafe fn nibbles_rows(a: *const u8, b: *const u8) -> __m512i {
    unsafe {
        let x = _mm512_castsi128_si512(_mm_loadu_si128(a as *const __m128i));
        let y = _mm512_castsi128_si512(_mm_loadu_si128(b as *const __m128i));
        let idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 0, 16, 1, 17, 2, 18, 3, 19);
        let v = _mm512_permutex2var_epi32(x, idx, y);
        // Dword shifts move bits across bytes; the mask drops them.
        let v = _mm512_mask_srli_epi32::<4>(v, 0xFF00, v);
        _mm512_and_si512(v, _mm512_set1_epi8(0x0F))
    }
}

/// Sets bit 4 of each byte of a `unpack_rows` vector whose element's bit is
/// set in its row's `qh` word (`qa` for row 0, `qb` for row 1).
#[inline(always)]
unsafe fn with_high_bits_rows(v: __m512i, qa: *const u8, qb: *const u8) -> __m512i {
    unsafe {
        // Element 4k + i of row j sits at byte 8k + 4j + i.
        let a = (qa as *const u32).read_unaligned() as u64;
        let b = (qb as *const u32).read_unaligned() as u64;
        let k = _pdep_u64(a, 0x0F0F_0F0F_0F0F_0F0F) | _pdep_u64(b, 0xF0F0_F0F0_F0F0_F0F0);
        _mm512_mask_or_epi8_compat(v, k)
    }
}

/// Nibbles of two blocks whose 16 quant bytes start at `p` and `p + size`:
/// 128-bit lanes `[lo(p), hi(p), lo(p+size), hi(p+size)]`.
#[inline(always)]
unsafe fn nibbles64(p: *const u8, size: usize) -> __m512i {
    unsafe {
        let a = _mm512_broadcast_i32x4(_mm_loadu_si128(p as *const __m128i));
        let v =
            _mm512_mask_broadcast_i32x4(a, 0xFF00, _mm_loadu_si128(p.add(size) as *const __m128i));
        let shift = _mm512_set_epi64(
            4 * 0x0001_0001_0001_0001,
            4 * 0x0001_0001_0001_0001,
            0,
            0,
            4 * 0x0001_0001_0001_0001,
            4 * 0x0001_0001_0001_0001,
            0,
            0,
        );
        _mm512_and_si512(_mm512_srlv_epi16(v, shift), _mm512_set1_epi8(0x0F))
    }
}

/// Sets bit 4 of each byte whose bit in the two blocks' `qh` words is set.
#[inline(always)]
unsafe fn with_high_bits(v: __m512i, qh0: *const u8, qh1: *const u8) -> __m512i {
    unsafe {
        let lo = (qh0 as *const u32).read_unaligned() as u64;
        let hi = (qh1 as *const u32).read_unaligned() as u64;
        _mm512_mask_or_epi8_compat(v, lo | (hi << 32))
    }
}

#[inline(always)]
unsafe fn _mm512_mask_or_epi8_compat(v: __m512i, k: u64) -> __m512i {
    // No byte-masked OR in AVX-512BW; a byte-masked add of 16 to values
    // below 16 is the same thing.
    unsafe { _mm512_mask_add_epi8(v, k, v, _mm512_set1_epi8(0x10)) }
}

pub(super) struct Q4_0;
pub(super) struct Q4_1;
pub(super) struct Q5_0;
pub(super) struct Q5_1;
pub(super) struct Q8_0;

impl Q32 for Q4_0 {
    const SIZE: usize = 18;
    const MIN: bool = false;
    const OFFSET: i32 = 8;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> __m256i {
        unsafe { nibbles32(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn unpack2(p: *const u8) -> __m512i {
        unsafe { nibbles64(p.add(2), Self::SIZE) }
    }
    #[inline(always)]
    unsafe fn unpack_rows(a: *const u8, b: *const u8) -> __m512i {
        unsafe { nibbles_rows(a.add(2), b.add(2)) }
    }
}

impl Q32 for Q4_1 {
    const SIZE: usize = 20;
    const MIN: bool = true;
    const OFFSET: i32 = 0;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> __m256i {
        unsafe { nibbles32(p.add(4)) }
    }
    #[inline(always)]
    unsafe fn unpack2(p: *const u8) -> __m512i {
        unsafe { nibbles64(p.add(4), Self::SIZE) }
    }
    #[inline(always)]
    unsafe fn unpack_rows(a: *const u8, b: *const u8) -> __m512i {
        unsafe { nibbles_rows(a.add(4), b.add(4)) }
    }
}

impl Q32 for Q5_0 {
    const SIZE: usize = 22;
    const MIN: bool = false;
    const OFFSET: i32 = 16;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> __m256i {
        unsafe {
            let qh = u32::from_le_bytes([*p.add(2), *p.add(3), *p.add(4), *p.add(5)]);
            let hi = _mm256_and_si256(bytes_from_bits32(qh), _mm256_set1_epi8(0x10));
            _mm256_or_si256(nibbles32(p.add(6)), hi)
        }
    }
    #[inline(always)]
    unsafe fn unpack2(p: *const u8) -> __m512i {
        unsafe {
            with_high_bits(
                nibbles64(p.add(6), Self::SIZE),
                p.add(2),
                p.add(Self::SIZE + 2),
            )
        }
    }
    #[inline(always)]
    unsafe fn unpack_rows(a: *const u8, b: *const u8) -> __m512i {
        unsafe { with_high_bits_rows(nibbles_rows(a.add(6), b.add(6)), a.add(2), b.add(2)) }
    }
}

impl Q32 for Q5_1 {
    const SIZE: usize = 24;
    const MIN: bool = true;
    const OFFSET: i32 = 0;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> __m256i {
        unsafe {
            let qh = u32::from_le_bytes([*p.add(4), *p.add(5), *p.add(6), *p.add(7)]);
            let hi = _mm256_and_si256(bytes_from_bits32(qh), _mm256_set1_epi8(0x10));
            _mm256_or_si256(nibbles32(p.add(8)), hi)
        }
    }
    #[inline(always)]
    unsafe fn unpack2(p: *const u8) -> __m512i {
        unsafe {
            with_high_bits(
                nibbles64(p.add(8), Self::SIZE),
                p.add(4),
                p.add(Self::SIZE + 4),
            )
        }
    }
    #[inline(always)]
    unsafe fn unpack_rows(a: *const u8, b: *const u8) -> __m512i {
        unsafe { with_high_bits_rows(nibbles_rows(a.add(8), b.add(8)), a.add(4), b.add(4)) }
    }
}

impl Q32 for Q8_0 {
    const SIZE: usize = 34;
    const MIN: bool = false;
    const OFFSET: i32 = 0;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> __m256i {
        unsafe { _mm256_loadu_si256(p.add(2) as *const __m256i) }
    }
    #[inline(always)]
    unsafe fn unpack2(p: *const u8) -> __m512i {
        unsafe {
            let lo = _mm512_castsi256_si512(_mm256_loadu_si256(p.add(2) as *const __m256i));
            _mm512_inserti64x4::<1>(
                lo,
                _mm256_loadu_si256(p.add(Self::SIZE + 2) as *const __m256i),
            )
        }
    }
    #[inline(always)]
    unsafe fn unpack_rows(a: *const u8, b: *const u8) -> __m512i {
        unsafe {
            let x = _mm512_castsi256_si512(_mm256_loadu_si256(a.add(2) as *const __m256i));
            let y = _mm512_castsi256_si512(_mm256_loadu_si256(b.add(2) as *const __m256i));
            let idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            _mm512_permutex2var_epi32(x, idx, y)
        }
    }
}

/// Activation block bytes and quant offset (Q8_1 with a min, else Q8_0).
pub(super) const fn act_layout(min: bool) -> (usize, usize) {
    if min {
        (36, 4)
    } else {
        (34, 2)
    }
}

/// The correction folded into the integer dot: `-K * sum(a)` per lane, with
/// `K` the weight offset, or 128 for Q8_0 on VNNI (weights fed as `w ^ 0x80`).
pub(super) const fn corr_k<W: Q32, A: Arch>() -> i32 {
    if W::SIGNED {
        if A::VNNI {
            128
        } else {
            0
        }
    } else {
        W::OFFSET
    }
}

#[derive(Default)]
struct Scratch {
    f: Vec<f32>,
    i: Vec<i32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[inline(always)]
pub(super) unsafe fn f16_to_f32(p: *const u8) -> f32 {
    unsafe {
        let h = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }
}

#[inline(always)]
unsafe fn rd_u32(p: *const u8) -> i32 {
    unsafe { (p as *const i32).read_unaligned() }
}

/// Lane of row `r` in the vectors `headers` returns.
#[inline(always)]
pub(super) const fn lane(r: usize) -> usize {
    [0, 1, 4, 5, 2, 3, 6, 7][r]
}

/// The header u32s of rows `k..k+4` (those below `R`). A function, not a
/// closure: closures would not inherit the caller's target features.
#[inline(always)]
pub(super) unsafe fn quad<const R: usize>(wp: &[*const u8; R], off: usize, k: usize) -> __m128i {
    unsafe {
        let mut h = _mm_cvtsi32_si128(rd_u32(wp[k].add(off)));
        if k + 1 < R {
            h = _mm_insert_epi32::<1>(h, rd_u32(wp[k + 1].add(off)));
        }
        if k + 2 < R {
            h = _mm_insert_epi32::<2>(h, rd_u32(wp[k + 2].add(off)));
        }
        if k + 3 < R {
            h = _mm_insert_epi32::<3>(h, rd_u32(wp[k + 3].add(off)));
        }
        h
    }
}

/// The f16 `d` (low half) and `m` (high half) of block `off` of up to eight
/// rows, as f32 vectors with row `r` in lane `lane(r)`.
#[inline(always)]
pub(super) unsafe fn headers<const R: usize>(wp: &[*const u8; R], off: usize) -> (__m256, __m256) {
    unsafe {
        // [d0 m0 d1 m1 | d2 m2 d3 m3] for rows 0..4, likewise rows 4..8.
        let x = _mm256_cvtph_ps(quad::<R>(wp, off, 0));
        let y = if R > 4 {
            _mm256_cvtph_ps(quad::<R>(wp, off, 4))
        } else {
            x
        };
        (
            _mm256_shuffle_ps::<0x88>(x, y),
            _mm256_shuffle_ps::<0xDD>(x, y),
        )
    }
}

/// Gemm driver: `RD` rows per tile when there is one column (decode), `RT`
/// rows by `CT` columns otherwise.
///
/// # Safety
/// Buffers validated by `Kernels::gemm`; the features of `A` available.
#[inline(always)]
pub(super) unsafe fn gemm<W: Q32, A: Arch, const RD: usize, const RT: usize, const CT: usize>(
    args: &GemmArgs<'_>,
    out: &mut [f32],
) {
    // The work must run in this function's body, not in a closure: closures
    // do not inherit `#[target_feature]`, and the intrinsics would become
    // calls. gemm never re-enters on a thread, so the pointer is unique.
    if A::VNNI && CT > 1 && args.nc >= 2 && row_pairs_enabled() {
        // Two weight rows share each 512-bit vector.
        return unsafe { super::tile_q32_rows::gemm::<W>(args, out) };
    }
    let s = SCRATCH.with(|s| s.as_ptr());
    unsafe { gemm_in::<W, A, RD, RT, CT>(args, out, &mut *s) }
}

#[inline(always)]
unsafe fn gemm_in<W: Q32, A: Arch, const RD: usize, const RT: usize, const CT: usize>(
    args: &GemmArgs<'_>,
    out: &mut [f32],
    s: &mut Scratch,
) {
    unsafe {
        let (asz, aqs) = act_layout(W::MIN);
        let (nb, nr, nc) = (args.nb, args.nr, args.nc);
        let k = corr_k::<W, A>();
        // f32 scratch: da [nc][nb], then (Q8_1) s [nc][nb].
        let f_len = nc * nb * if W::MIN { 2 } else { 1 };
        if s.f.len() < f_len {
            s.f.resize(f_len, 0.0);
        }
        let i_len = if k != 0 { nc * nb * 8 } else { 0 };
        if s.i.len() < i_len {
            s.i.resize(i_len, 0);
        }
        let f = s.f.as_mut_ptr();
        let ic = s.i.as_mut_ptr();
        let o_s = nc * nb;

        for c in 0..nc {
            let a = args.act_row(c).as_ptr();
            for b in 0..nb {
                *f.add(c * nb + b) = f16_to_f32(a.add(b * asz));
                if W::MIN {
                    *f.add(o_s + c * nb + b) = f16_to_f32(a.add(b * asz + 2));
                }
            }
            if k != 0 {
                let ones = _mm256_set1_epi8(1);
                let negk = _mm256_set1_epi32(-k);
                for b in 0..nb {
                    let q = _mm256_loadu_si256(a.add(b * asz + aqs) as *const __m256i);
                    let sum = A::dp_u8i8(_mm256_setzero_si256(), ones, q);
                    _mm256_storeu_si256(
                        ic.add((c * nb + b) * 8) as *mut __m256i,
                        _mm256_mullo_epi32(sum, negk),
                    );
                }
            }
        }

        let x = Ctx {
            nb,
            asz,
            aqs,
            f,
            ic,
            o_s,
            corr: k != 0,
        };
        if nc == 1 || CT <= 1 {
            for c in 0..nc {
                column::<W, A, RD>(args, out, &x, 0, nr, c);
            }
        } else {
            // Panels of rows that stay in L2 while every column tile passes
            // over them; a column tile's activations stay in L1.
            let panel = (panel_bytes() / args.wb.max(1)).max(RT) / RT * RT;
            let nct = nc / CT * CT;
            let mut p0 = 0;
            while p0 < nr {
                let p1 = nr.min(p0 + panel);
                let mut c0 = 0;
                while c0 < nct {
                    let mut r0 = p0;
                    while r0 + RT <= p1 {
                        tile::<W, A, RT, CT>(args, out, &x, r0, c0);
                        r0 += RT;
                    }
                    while r0 < p1 {
                        tile::<W, A, 1, CT>(args, out, &x, r0, c0);
                        r0 += 1;
                    }
                    c0 += CT;
                }
                for c in nct..nc {
                    column::<W, A, RD>(args, out, &x, p0, p1, c);
                }
                p0 = p1;
            }
        }
    }
}

/// Weight bytes per panel in the multi-column path (about half an L2).
#[cfg(not(test))]
pub(super) fn panel_bytes() -> usize {
    512 << 10
}

/// Tiny panels under test, so the batch-invariance tests cross panel edges;
/// the speed probes set the real size.
#[cfg(test)]
pub(super) static TEST_PANEL_BYTES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(200);

/// The speed probes compare with and without the row-pair kernel.
#[cfg(test)]
pub(super) static TEST_NO_ROW_PAIRS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

#[inline(always)]
fn row_pairs_enabled() -> bool {
    #[cfg(test)]
    return !TEST_NO_ROW_PAIRS.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(test))]
    true
}

#[cfg(test)]
pub(super) fn panel_bytes() -> usize {
    TEST_PANEL_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// How far ahead of the weights being read the decode path prefetches.
pub(super) const PREFETCH_AHEAD: usize = 4096;

/// The speed probes compare with and without prefetching.
#[cfg(test)]
pub(super) static TEST_NO_PREFETCH: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

#[inline(always)]
pub(super) fn prefetch_enabled() -> bool {
    #[cfg(test)]
    return !TEST_NO_PREFETCH.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(test))]
    true
}

/// Rows `r0..r1` against one column, `RD` rows at a time.
#[inline(always)]
unsafe fn column<W: Q32, A: Arch, const RD: usize>(
    args: &GemmArgs<'_>,
    out: &mut [f32],
    x: &Ctx,
    r0: usize,
    r1: usize,
    c: usize,
) {
    unsafe {
        let mut r = r0;
        while r + RD <= r1 {
            tile::<W, A, RD, 1>(args, out, x, r, c);
            r += RD;
        }
        while r < r1 {
            tile::<W, A, 1, 1>(args, out, x, r, c);
            r += 1;
        }
    }
}

/// Per-call activation tables and layout.
struct Ctx {
    nb: usize,
    asz: usize,
    aqs: usize,
    /// da [nc][nb], then s [nc][nb] at `o_s`.
    f: *mut f32,
    /// Correction lanes [nc][nb][8].
    ic: *mut i32,
    o_s: usize,
    corr: bool,
}

/// One `R x C` tile: rows `r0..r0+R`, columns `c0..c0+C`.
#[inline(always)]
unsafe fn tile<W: Q32, A: Arch, const R: usize, const C: usize>(
    args: &GemmArgs<'_>,
    out: &mut [f32],
    x: &Ctx,
    r0: usize,
    c0: usize,
) {
    if A::VNNI {
        // SAFETY: VNNI implies the AVX-512 features of `tile_zmm`.
        return unsafe { tile_zmm::<W, R, C>(args, out, x, r0, c0) };
    }
    unsafe {
        let nb = x.nb;
        let mut wp = [core::ptr::null::<u8>(); R];
        for (r, p) in wp.iter_mut().enumerate() {
            *p = args.w_row(r0 + r).as_ptr();
        }
        let mut ap = [core::ptr::null::<u8>(); C];
        let mut cp = [core::ptr::null::<i32>(); C];
        let mut dap = [core::ptr::null::<f32>(); C];
        let mut sp = [core::ptr::null::<f32>(); C];
        for c in 0..C {
            ap[c] = args.act_row(c0 + c).as_ptr().add(x.aqs);
            cp[c] = x.ic.add((c0 + c) * nb * 8);
            dap[c] = x.f.add((c0 + c) * nb);
            sp[c] = x.f.add(x.o_s + (c0 + c) * nb);
        }
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        // Q8_1 min term per column, row r in lane `lane(r)`.
        let mut summs = [_mm256_setzero_ps(); C];
        // Scale products of this block, [c][lane].
        let mut dd = [[0f32; 8]; C];
        for b in 0..nb {
            let (dw, mw) = headers::<R>(&wp, b * W::SIZE);
            for c in 0..C {
                let da = _mm256_set1_ps(*dap[c].add(b));
                _mm256_storeu_ps(dd[c].as_mut_ptr(), _mm256_mul_ps(dw, da));
                if W::MIN {
                    // ggml: summs += m * s, one contracted FMA per block.
                    summs[c] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*sp[c].add(b)), summs[c]);
                }
            }
            // Keep the scale products in memory: the FMAs then take them as
            // broadcast loads, where register broadcasts would saturate the
            // shuffle port (the compiler would otherwise forward the stores).
            core::hint::black_box(&mut dd);
            let mut av = [_mm256_setzero_si256(); C];
            let mut cv = [_mm256_setzero_si256(); C];
            for c in 0..C {
                av[c] = _mm256_loadu_si256(ap[c].add(b * x.asz) as *const __m256i);
                if x.corr {
                    cv[c] = _mm256_loadu_si256(cp[c].add(b * 8) as *const __m256i);
                }
            }
            for r in 0..R {
                let q = W::unpack(wp[r].add(b * W::SIZE));
                for c in 0..C {
                    let l = if W::SIGNED && !A::VNNI {
                        dp_i8i8_avx2(_mm256_setzero_si256(), q, av[c])
                    } else if W::SIGNED {
                        A::dp_u8i8(cv[c], _mm256_xor_si256(q, _mm256_set1_epi8(-128)), av[c])
                    } else {
                        A::dp_u8i8(cv[c], q, av[c])
                    };
                    let d = _mm256_set1_ps(dd[c][lane(r)]);
                    acc[r][c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(l), acc[r][c]);
                }
            }
        }
        let mut sm = [[0f32; 8]; C];
        for c in 0..C {
            _mm256_storeu_ps(sm[c].as_mut_ptr(), summs[c]);
        }
        for r in 0..R {
            for c in 0..C {
                let mut v = hsum8(acc[r][c]);
                if W::MIN {
                    v += sm[c][lane(r)];
                }
                out[(c0 + c) * args.out_stride + r0 + r] = v;
            }
        }
    }
}

/// `tile` for AVX-512: two blocks per 512-bit integer dot and conversion,
/// then the two blocks' FMAs in order, so each pair sees exactly the
/// operations of `tile` (and of `dot_scalar`). An odd last block goes
/// through the 256-bit body.
#[inline(always)]
unsafe fn tile_zmm<W: Q32, const R: usize, const C: usize>(
    args: &GemmArgs<'_>,
    out: &mut [f32],
    x: &Ctx,
    r0: usize,
    c0: usize,
) {
    unsafe {
        let nb = x.nb;
        let mut wp = [core::ptr::null::<u8>(); R];
        for (r, p) in wp.iter_mut().enumerate() {
            *p = args.w_row(r0 + r).as_ptr();
        }
        let mut ap = [core::ptr::null::<u8>(); C];
        let mut cp = [core::ptr::null::<i32>(); C];
        let mut dap = [core::ptr::null::<f32>(); C];
        let mut sp = [core::ptr::null::<f32>(); C];
        for c in 0..C {
            ap[c] = args.act_row(c0 + c).as_ptr().add(x.aqs);
            cp[c] = x.ic.add((c0 + c) * nb * 8);
            dap[c] = x.f.add((c0 + c) * nb);
            sp[c] = x.f.add(x.o_s + (c0 + c) * nb);
        }
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut summs = [_mm256_setzero_ps(); C];
        let mut dd = [[[0f32; 8]; C]; 2];
        // One column (decode) streams weights from memory: prefetch the
        // tile's bytes a few KiB ahead, which also crosses the page
        // boundaries that the hardware prefetcher stops at. Rows are
        // contiguous in the file, so the tile is one linear range.
        let contiguous = C == 1 && args.w_stride == args.wb && prefetch_enabled();
        let mut pf = wp[0].wrapping_add(PREFETCH_AHEAD);
        let mut b = 0;
        while b < nb {
            if contiguous {
                let end = wp[0].wrapping_add(PREFETCH_AHEAD + (b + 2) * R * W::SIZE);
                while pf < end {
                    _mm_prefetch::<_MM_HINT_T0>(pf as *const i8);
                    pf = pf.wrapping_add(64);
                }
            }
            let two = b + 1 < nb;
            let steps = if two { 2 } else { 1 };
            for (k, ddk) in dd.iter_mut().enumerate().take(steps) {
                let (dw, mw) = headers::<R>(&wp, (b + k) * W::SIZE);
                for c in 0..C {
                    let da = _mm256_set1_ps(*dap[c].add(b + k));
                    _mm256_storeu_ps(ddk[c].as_mut_ptr(), _mm256_mul_ps(dw, da));
                    if W::MIN {
                        summs[c] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*sp[c].add(b + k)), summs[c]);
                    }
                }
            }
            core::hint::black_box(&mut dd);
            if two {
                let mut av = [_mm512_setzero_si512(); C];
                let mut cv = [_mm512_setzero_si512(); C];
                for c in 0..C {
                    let a0 = _mm256_loadu_si256(ap[c].add(b * x.asz) as *const __m256i);
                    let a1 = _mm256_loadu_si256(ap[c].add((b + 1) * x.asz) as *const __m256i);
                    av[c] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a0), a1);
                    if x.corr {
                        cv[c] = _mm512_loadu_si512(cp[c].add(b * 8) as *const __m512i);
                    }
                }
                for r in 0..R {
                    let mut q = W::unpack2(wp[r].add(b * W::SIZE));
                    if W::SIGNED {
                        q = _mm512_xor_si512(q, _mm512_set1_epi8(-128));
                    }
                    for c in 0..C {
                        let f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(cv[c], q, av[c]));
                        let d0 = _mm256_set1_ps(dd[0][c][lane(r)]);
                        let d1 = _mm256_set1_ps(dd[1][c][lane(r)]);
                        acc[r][c] = _mm256_fmadd_ps(d0, _mm512_castps512_ps256(f), acc[r][c]);
                        acc[r][c] = _mm256_fmadd_ps(d1, _mm512_extractf32x8_ps::<1>(f), acc[r][c]);
                    }
                }
            } else {
                for r in 0..R {
                    let mut q = W::unpack(wp[r].add(b * W::SIZE));
                    if W::SIGNED {
                        q = _mm256_xor_si256(q, _mm256_set1_epi8(-128));
                    }
                    for c in 0..C {
                        let a = _mm256_loadu_si256(ap[c].add(b * x.asz) as *const __m256i);
                        let cv = if x.corr {
                            _mm256_loadu_si256(cp[c].add(b * 8) as *const __m256i)
                        } else {
                            _mm256_setzero_si256()
                        };
                        let f = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(cv, q, a));
                        let d0 = _mm256_set1_ps(dd[0][c][lane(r)]);
                        acc[r][c] = _mm256_fmadd_ps(d0, f, acc[r][c]);
                    }
                }
            }
            b += steps;
        }
        let mut sm = [[0f32; 8]; C];
        for c in 0..C {
            _mm256_storeu_ps(sm[c].as_mut_ptr(), summs[c]);
        }
        for r in 0..R {
            for c in 0..C {
                let mut v = hsum8(acc[r][c]);
                if W::MIN {
                    v += sm[c][lane(r)];
                }
                out[(c0 + c) * args.out_stride + r0 + r] = v;
            }
        }
    }
}
