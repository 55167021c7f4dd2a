//! Vector helpers for the forward pass, matching ggml-cpu's `vec.h`/`vec.cpp`
//! on x86 bit for bit (FMA contraction included, as GCC builds them).
//!
//! Reductions (dot products, softmax sums) depend on the SIMD width ggml was
//! built for: `Isa::Avx2` follows ggml's AVX2 build (8 lanes), `Isa::Avx512`
//! its AVX-512 build (16 lanes, what llama.cpp's native build uses on these
//! machines), and `Isa::Scalar` emulates the AVX-512 build in portable code.
//! Element-wise helpers (`vec_mad_*`, `vec_scale_*`) give the same bits on
//! every ISA.
//!
//! Length mismatches between slices are programming errors and panic.

use super::isa::Isa;
use super::quant::fp32_to_bf16;
use half::f16;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
#[path = "vec_x86.rs"]
pub(crate) mod x86;

// ---------------------------------------------------------------------------
// Reductions in ggml's orders.

/// `GGML_F32x8_REDUCE`'s last step (AVX build): `hadd` of the two halves.
#[inline(always)]
fn reduce8(v: &[f32; 8]) -> f32 {
    let t = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// GCC's `_mm512_reduce_add_ps`.
#[inline(always)]
fn reduce16(v: &[f32; 16]) -> f32 {
    let mut t3 = [0f32; 8];
    for i in 0..8 {
        t3[i] = v[8 + i] + v[i];
    }
    let mut t6 = [0f32; 4];
    for i in 0..4 {
        t6[i] = t3[4 + i] + t3[i];
    }
    (t6[0] + t6[2]) + (t6[1] + t6[3])
}

/// `hsum_float_8` / the AVX2 softmax sum (same association as `reduce8` but
/// written as ggml writes it there).
#[inline(always)]
fn hsum8(v: &[f32; 8]) -> f32 {
    let t = [v[4] + v[0], v[5] + v[1], v[6] + v[2], v[7] + v[3]];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// ggml's `GGML_F32_VEC_REDUCE` over 4 accumulators of `W` lanes.
#[inline(always)]
fn reduce_arr<const W: usize>(s: [[f32; W]; 4]) -> f32 {
    let [mut s0, mut s1, s2, s3] = s;
    for l in 0..W {
        s0[l] += s2[l];
        s1[l] += s3[l];
    }
    for (a, b) in s0.iter_mut().zip(&s1) {
        *a += b;
    }
    if W == 16 {
        let mut v = [0f32; 16];
        v.copy_from_slice(&s0[..16]);
        reduce16(&v)
    } else {
        let mut v = [0f32; 8];
        v.copy_from_slice(&s0[..8]);
        reduce8(&v)
    }
}

/// `ggml_vec_dot_f32` / `ggml_vec_dot_f16` built for `W` lanes: four
/// accumulators, FMA, reduce, then the tail. `f32_tail` selects the f32
/// variant (f32 running sum, contracted FMA) over the f16 one (f64 sum).
#[inline(always)]
fn dot_emul<const W: usize>(
    n: usize,
    x: impl Fn(usize) -> f32,
    y: impl Fn(usize) -> f32,
    f32_tail: bool,
) -> f32 {
    let step = 4 * W;
    let np = n - n % step;
    let mut s = [[0f32; W]; 4];
    let mut i = 0;
    while i < np {
        for (j, sj) in s.iter_mut().enumerate() {
            for (l, acc) in sj.iter_mut().enumerate() {
                let k = i + j * W + l;
                *acc = x(k).mul_add(y(k), *acc);
            }
        }
        i += step;
    }
    let r = reduce_arr::<W>(s);
    if f32_tail {
        let mut sumf = r;
        let fused_from = f32_tail_fused_from(np, n);
        for k in np..fused_from {
            sumf += x(k) * y(k);
        }
        for k in fused_from..n {
            sumf = x(k).mul_add(y(k), sumf);
        }
        sumf
    } else {
        let mut sumf = r as f64;
        for k in np..n {
            sumf += (x(k) * y(k)) as f64;
        }
        sumf as f32
    }
}

/// Where `ggml_vec_dot_f32`'s tail `sumf += x[i]*y[i]` switches from
/// unfused to fused arithmetic. GCC vectorizes the tail's multiplies in
/// chunks of 16 and then one of 8 (adding the products one by one, in
/// order), and contracts only the last fewer-than-8 elements into FMAs
/// (checked against llama.cpp's AVX-512 build).
#[inline(always)]
pub(crate) fn f32_tail_fused_from(np: usize, n: usize) -> usize {
    let t = n - np;
    let mut unfused = t / 16 * 16;
    if t - unfused >= 8 {
        unfused += 8;
    }
    np + unfused
}

fn lanes_of(isa: Isa) -> usize {
    if isa == Isa::Avx2 {
        8
    } else {
        16
    }
}

// ---------------------------------------------------------------------------
// Dot products.

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).to_f32()
}

#[inline(always)]
fn bf16_at(b: &[u8], i: usize) -> f32 {
    f32::from_bits((u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32) << 16)
}

#[inline(always)]
fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// `ggml_vec_dot_f32` (f32 weights against f32 activations).
pub fn vec_dot_f32(isa: Isa, x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f32 lengths");
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && isa.available() {
        // SAFETY: the ISA is available; slices are equal length.
        return unsafe {
            x86::dot_f32(
                isa,
                x.len(),
                x.as_ptr() as *const u8,
                y.as_ptr() as *const u8,
            )
        };
    }
    let n = x.len();
    if lanes_of(isa) == 8 {
        dot_emul::<8>(n, |i| x[i], |i| y[i], true)
    } else {
        dot_emul::<16>(n, |i| x[i], |i| y[i], true)
    }
}

/// `ggml_vec_dot_f16`: f16 inputs, f32 lanes, f64 tail and result sum.
pub fn vec_dot_f16(isa: Isa, x: &[f16], y: &[f16]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f16 lengths");
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && isa.available() {
        // SAFETY: as above.
        return unsafe {
            x86::dot_f16(
                isa,
                x.len(),
                x.as_ptr() as *const u8,
                y.as_ptr() as *const u8,
            )
        };
    }
    let n = x.len();
    if lanes_of(isa) == 8 {
        dot_emul::<8>(n, |i| x[i].to_f32(), |i| y[i].to_f32(), false)
    } else {
        dot_emul::<16>(n, |i| x[i].to_f32(), |i| y[i].to_f32(), false)
    }
}

/// `ggml_vec_dot_bf16` as built for AVX-512 BF16 (`vdpbf16ps`: per f32 lane,
/// the odd pair's product is added first, then the even one's) or, for
/// `Isa::Avx2`, ggml's AVX2 build (four 8-lane mul+add accumulators).
fn dot_bf16_emul(isa: Isa, n: usize, x: impl Fn(usize) -> f32, y: impl Fn(usize) -> f32) -> f32 {
    let mut i = 0;
    let mut sumf = 0f64;
    if isa == Isa::Avx2 {
        let mut c = [[0f32; 8]; 4];
        while i + 32 <= n {
            for (j, cj) in c.iter_mut().enumerate() {
                for (l, acc) in cj.iter_mut().enumerate() {
                    let k = i + 8 * j + l;
                    *acc += x(k) * y(k);
                }
            }
            i += 32;
        }
        let mut v = [0f32; 8];
        for l in 0..8 {
            v[l] = (c[0][l] + c[2][l]) + (c[1][l] + c[3][l]);
        }
        sumf += hsum8(&v) as f64;
    } else {
        let mut c = [[0f32; 16]; 2];
        while i + 64 <= n {
            for (j, cj) in c.iter_mut().enumerate() {
                for (l, acc) in cj.iter_mut().enumerate() {
                    let k = i + 32 * j + 2 * l;
                    *acc = (*acc + x(k + 1) * y(k + 1)) + x(k) * y(k);
                }
            }
            i += 64;
        }
        sumf += reduce16(&c[0]) as f64;
        sumf += reduce16(&c[1]) as f64;
    }
    for k in i..n {
        sumf += (x(k) * y(k)) as f64;
    }
    sumf as f32
}

/// Byte-row forms used by the weight dot products (rows come from the file).
pub(crate) fn dot_f32_bytes(isa: Isa, n: usize, w: &[u8], a: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && isa.available() {
        assert!(w.len() >= 4 * n && a.len() >= 4 * n);
        // SAFETY: lengths checked, ISA available.
        return unsafe { x86::dot_f32(isa, n, w.as_ptr(), a.as_ptr()) };
    }
    if lanes_of(isa) == 8 {
        dot_emul::<8>(n, |i| f32_at(w, i), |i| f32_at(a, i), true)
    } else {
        dot_emul::<16>(n, |i| f32_at(w, i), |i| f32_at(a, i), true)
    }
}

pub(crate) fn dot_f16_bytes(isa: Isa, n: usize, w: &[u8], a: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && isa.available() {
        assert!(w.len() >= 2 * n && a.len() >= 2 * n);
        // SAFETY: lengths checked, ISA available.
        return unsafe { x86::dot_f16(isa, n, w.as_ptr(), a.as_ptr()) };
    }
    if lanes_of(isa) == 8 {
        dot_emul::<8>(n, |i| f16_at(w, i), |i| f16_at(a, i), false)
    } else {
        dot_emul::<16>(n, |i| f16_at(w, i), |i| f16_at(a, i), false)
    }
}

pub(crate) fn dot_bf16_bytes(isa: Isa, n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot_bf16_emul(isa, n, |i| bf16_at(w, i), |i| bf16_at(a, i))
}

// ---------------------------------------------------------------------------
// Element-wise helpers (same bits on every ISA: ggml's SIMD body and its
// scalar tail both compute one FMA or one multiply per element).

/// `ggml_vec_mad_f16`: `y[i] = f16(fma(x[i], v, y[i]))`.
pub fn vec_mad_f16(y: &mut [f16], x: &[f16], v: f32) {
    assert_eq!(y.len(), x.len(), "vec_mad_f16 lengths");
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        // SAFETY: AVX2/F16C/FMA available; equal lengths.
        return unsafe { x86::mad_f16(y, x, v) };
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = f16::from_f32(xi.to_f32().mul_add(v, yi.to_f32()));
    }
}

/// `ggml_vec_scale_f16`: `y[i] = f16(y[i] * v)`.
pub fn vec_scale_f16(y: &mut [f16], v: f32) {
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        // SAFETY: AVX2/F16C available.
        return unsafe { x86::scale_f16(y, v) };
    }
    for yi in y.iter_mut() {
        *yi = f16::from_f32(yi.to_f32() * v);
    }
}

/// `ggml_vec_mad_f32`: `y[i] = fma(x[i], v, y[i])`.
pub fn vec_mad_f32(y: &mut [f32], x: &[f32], v: f32) {
    assert_eq!(y.len(), x.len(), "vec_mad_f32 lengths");
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = xi.mul_add(v, *yi);
    }
}

/// `ggml_vec_scale_f32`: `y[i] *= v`.
pub fn vec_scale_f32(y: &mut [f32], v: f32) {
    for yi in y.iter_mut() {
        *yi *= v;
    }
}

/// f32 to f16, round to nearest even (ggml's `ggml_cpu_fp32_to_fp16`).
pub fn fp32_to_fp16_row(x: &[f32], y: &mut [f16]) {
    assert_eq!(x.len(), y.len(), "fp32_to_fp16_row lengths");
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = f16::from_f32(*xi);
    }
}

/// f32 to f16 bits, round to nearest even, as `fp32_to_fp16_row` (F16C
/// where available: the same conversion, eight at a time).
pub fn fp32_to_fp16_bits(x: &[f32], y: &mut [u16]) {
    assert_eq!(x.len(), y.len(), "fp32_to_fp16_bits lengths");
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() != Isa::Scalar {
        // SAFETY: F16C available (every non-scalar level has it); equal lengths.
        i = unsafe { x86::f32_to_f16_body(x, y) };
    }
    for (yi, xi) in y[i..].iter_mut().zip(&x[i..]) {
        *yi = f16::from_f32(*xi).to_bits();
    }
}

/// f32 to bf16 as ggml's `GGML_FP32_TO_BF16`.
pub fn fp32_to_bf16_row(x: &[f32], y: &mut [half::bf16]) {
    assert_eq!(x.len(), y.len(), "fp32_to_bf16_row lengths");
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = half::bf16::from_bits(fp32_to_bf16(*xi));
    }
}

// ---------------------------------------------------------------------------
// Norms and activations.

/// The RMS-norm scale of `ggml_compute_forward_rms_norm_f32`: the sum of
/// squares runs in f64 over f32 products; `1 / sqrt(mean + eps)` in f32.
/// The normalized row is then `x[i] * scale` (times the weight, in that
/// order: `(x * scale) * w`).
pub fn rms_norm_scale(x: &[f32], eps: f32) -> f32 {
    let mut sum = 0f64;
    for v in x {
        sum += (v * v) as f64;
    }
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// `y[i] = (x[i] * scale) * w[i]`: the fused rms_norm + mul of ggml.
pub fn rms_norm_mul(y: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    assert!(
        y.len() == x.len() && w.len() == x.len(),
        "rms_norm_mul lengths"
    );
    let scale = rms_norm_scale(x, eps);
    for ((yi, xi), wi) in y.iter_mut().zip(x).zip(w) {
        *yi = xi * scale * wi;
    }
}

/// ggml's vectorized `ggml_v_expf` as built for AVX-512 (one lane).
#[inline(always)]
pub(crate) fn v_expf_512(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // 0x1.715476p+0
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),                  // 0x1.7f7d1cp-20
        (-n).mul_add(f32::from_bits(0x3f31_7200), x), // 0x1.62e4p-1
    );
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010) // 0x1.0e4020p-7
        .mul_add(b, f32::from_bits(0x3d2b_9f17)) // 0x1.573e2ep-5
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)), // 0x1.555e66p-3, 0x1.fffdb6p-2
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6).mul_add(b, 1.0)); // 0x1.ffffecp-1
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    scalef(j, n)
}

/// `vscalefps` for an integral `n` with |n| <= 192: `j * 2^n`, one rounding.
#[inline(always)]
fn scalef(j: f32, n: f32) -> f32 {
    if n.is_nan() || j.is_nan() {
        return f32::NAN;
    }
    ((j as f64) * (n as f64).exp2()) as f32
}

/// ggml's vectorized `ggml_v_expf` as built for AVX2+FMA (one lane).
#[inline(always)]
pub(crate) fn v_expf_256(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000);
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    );
    let e = z.to_bits().wrapping_shl(23);
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)),
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b);
    let an = n.abs();
    // `an > 126` is false for NaN too, as the vector compare is.
    let big = an > 126.0;
    if !big {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if an > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `x[i] = x[i].exp()`, bit for bit libm's `expf` (glibc's), vectorized on
/// AVX-512.
pub fn exp_in_place(isa: Isa, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && isa.available() {
        // SAFETY: AVX-512 is available.
        return unsafe { x86::exp_in_place_512(x) };
    }
    for v in x {
        *v = v.exp();
    }
}

/// `ggml_vec_soft_max_f32`: `y[i] = exp(x[i] - max)`, returns the f64 sum.
/// Full SIMD chunks use ggml's vector `expf`, the tail libm's `expf`.
pub fn soft_max_f32(isa: Isa, y: &mut [f32], x: &[f32], max: f32) -> f64 {
    assert_eq!(y.len(), x.len(), "soft_max_f32 lengths");
    let n = x.len();
    let (mut i, mut sum) = (0, 0f64);
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && isa.available() {
        // SAFETY: the ISA is available; lengths are equal.
        (i, sum) = unsafe { x86::soft_max_body(isa, y, x, max) };
    }
    let w = lanes_of(isa);
    while i + w <= n {
        if w == 16 {
            let mut v = [0f32; 16];
            for l in 0..16 {
                v[l] = v_expf_512(x[i + l] - max);
                y[i + l] = v[l];
            }
            sum += reduce16(&v) as f64;
        } else {
            let mut v = [0f32; 8];
            for l in 0..8 {
                v[l] = v_expf_256(x[i + l] - max);
                y[i + l] = v[l];
            }
            sum += hsum8(&v) as f64;
        }
        i += w;
    }
    for k in i..n {
        let v = (x[k] - max).exp();
        sum += v as f64;
        y[k] = v;
    }
    sum
}

#[inline(always)]
fn v_silu(isa: Isa, x: f32) -> f32 {
    let e = if lanes_of(isa) == 16 {
        v_expf_512(0.0 - x)
    } else {
        v_expf_256(0.0 - x)
    };
    x / (1.0 + e)
}

/// ggml's scalar `ggml_silu_f32`: `x / (1 + expf(-x))`.
#[inline(always)]
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `ggml_vec_silu_f32`.
pub fn vec_silu_f32(isa: Isa, y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "vec_silu_f32 lengths");
    silu_impl(isa, y, x, None);
}

/// `ggml_vec_swiglu_f32`: `y = silu(x) * g`.
pub fn vec_swiglu_f32(isa: Isa, y: &mut [f32], x: &[f32], g: &[f32]) {
    assert!(
        y.len() == x.len() && g.len() == x.len(),
        "vec_swiglu_f32 lengths"
    );
    silu_impl(isa, y, x, Some(g));
}

fn silu_impl(isa: Isa, y: &mut [f32], x: &[f32], g: Option<&[f32]>) {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && isa.available() {
        // SAFETY: the ISA is available; lengths checked by the callers.
        i = unsafe { x86::silu_body(isa, y, x, g) };
    }
    let w = lanes_of(isa);
    let full = x.len() - x.len() % w;
    for k in i..x.len() {
        let s = if k < full {
            v_silu(isa, x[k])
        } else {
            silu_f32(x[k])
        };
        y[k] = match g {
            Some(g) => s * g[k],
            None => s,
        };
    }
}

/// ggml's `ggml_gelu_f32` (tanh approximation) as GCC contracts it.
pub fn gelu_f32_exact(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    // ggml's SQRT_2_OVER_PI literal rounded to f32.
    let sqrt_2_over_pi = f32::from_bits(0x3f4c_422a);
    let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
    0.5 * x * (1.0 + (sqrt_2_over_pi * x * inner).tanh())
}

/// ggml's `ggml_table_gelu_f16`: gelu of every f16 value, rounded to f16.
pub(crate) fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|i| {
                let g = gelu_f32_exact(f16::from_bits(i).to_f32());
                if g.is_nan() {
                    // ggml's software FP32_TO_FP16 canonicalizes NaN payloads.
                    ((g.to_bits() >> 16) as u16 & 0x8000) | 0x7e00
                } else {
                    f16::from_f32(g).to_bits()
                }
            })
            .collect()
    })
}

#[inline(always)]
fn gelu_lookup(table: &[u16], x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        f16::from_bits(table[f16::from_f32(x).to_bits() as usize]).to_f32()
    }
}

/// `ggml_vec_gelu_f32` with `GGML_GELU_FP16` (ggml's default): the input is
/// rounded to f16 and looked up in the f16 table.
pub fn vec_gelu_f32(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "vec_gelu_f32 lengths");
    let t = gelu_table();
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = gelu_lookup(t, *xi);
    }
}

/// `ggml_vec_geglu_f32` (gemma's FFN): `y = gelu(x) * g` with the table.
pub fn vec_geglu_f32(y: &mut [f32], x: &[f32], g: &[f32]) {
    assert!(
        y.len() == x.len() && g.len() == x.len(),
        "vec_geglu_f32 lengths"
    );
    let t = gelu_table();
    for ((yi, xi), gi) in y.iter_mut().zip(x).zip(g) {
        *yi = if *xi <= -10.0 {
            0.0
        } else if *xi >= 10.0 {
            xi * gi
        } else {
            gelu_lookup(t, *xi) * gi
        };
    }
}

#[cfg(test)]
#[path = "vec_tests.rs"]
mod tests;
