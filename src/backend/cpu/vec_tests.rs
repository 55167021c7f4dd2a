use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_f16(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f16> {
    (0..n)
        .map(|_| f16::from_f32((rng.random::<f32>() - 0.5) * scale))
        .collect()
}

#[test]
fn f16_and_f32_dots_match_their_emulation_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for n in [0, 1, 5, 8, 31, 32, 63, 64, 65, 100, 256, 1000] {
        let x = rand_f16(&mut rng, n, 4.0);
        let y = rand_f16(&mut rng, n, 4.0);
        let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let yf: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
        let e8 = dot_emul::<8>(n, |i| xf[i], |i| yf[i], false);
        let e16 = dot_emul::<16>(n, |i| xf[i], |i| yf[i], false);
        let f8 = dot_emul::<8>(n, |i| xf[i], |i| yf[i], true);
        let f16_ = dot_emul::<16>(n, |i| xf[i], |i| yf[i], true);
        for isa in Isa::all_available() {
            let (want16, want32) = if isa == Isa::Avx2 {
                (e8, f8)
            } else {
                (e16, f16_)
            };
            assert_eq!(
                vec_dot_f16(isa, &x, &y).to_bits(),
                want16.to_bits(),
                "f16 {isa} n {n}"
            );
            assert_eq!(
                vec_dot_f32(isa, &xf, &yf).to_bits(),
                want32.to_bits(),
                "f32 {isa} n {n}"
            );
        }
        // And the value is right.
        let exact: f64 = xf.iter().zip(&yf).map(|(a, b)| *a as f64 * *b as f64).sum();
        let mag: f64 = xf
            .iter()
            .zip(&yf)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        assert!((e16 as f64 - exact).abs() <= 1e-6 * mag + 1e-30, "n {n}");
    }
}

#[test]
fn reductions_follow_ggml_association() {
    // Values chosen so that association order changes the result.
    let v16: [f32; 16] = [
        1e8, 1.0, -1e8, 1.0, 3.0, 1e-3, 7.0, -2.5, 1.0, 1e8, 1.0, -1e8, 0.5, 0.25, 2.0, 9.0,
    ];
    let t3: Vec<f32> = (0..8).map(|i| v16[8 + i] + v16[i]).collect();
    let t6: Vec<f32> = (0..4).map(|i| t3[4 + i] + t3[i]).collect();
    assert_eq!(reduce16(&v16), (t6[0] + t6[2]) + (t6[1] + t6[3]));
    let v8: [f32; 8] = [1e8, 1.0, -1e8, 1.0, 3.0, 1e-3, 7.0, -2.5];
    let t: Vec<f32> = (0..4).map(|i| v8[i] + v8[4 + i]).collect();
    assert_eq!(reduce8(&v8), (t[0] + t[1]) + (t[2] + t[3]));
}

#[test]
fn elementwise_f16_helpers_round_once_per_element() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for n in [0, 3, 8, 17, 256] {
        let x = rand_f16(&mut rng, n, 2.0);
        let y0 = rand_f16(&mut rng, n, 2.0);
        let v = 0.3712f32;
        let mut y = y0.clone();
        vec_mad_f16(&mut y, &x, v);
        for i in 0..n {
            let want = f16::from_f32(x[i].to_f32().mul_add(v, y0[i].to_f32()));
            assert_eq!(y[i].to_bits(), want.to_bits(), "mad n {n} i {i}");
        }
        let mut z = y0.clone();
        vec_scale_f16(&mut z, v);
        for i in 0..n {
            assert_eq!(z[i].to_bits(), f16::from_f32(y0[i].to_f32() * v).to_bits());
        }
    }
}

fn ulps(a: f32, b: f64) -> f64 {
    let b32 = b as f32;
    ((a as f64 - b).abs()) / (b32.abs().max(f32::MIN_POSITIVE) as f64 * f32::EPSILON as f64)
}

#[test]
fn vector_expf_is_accurate_and_saturates() {
    let mut x = -110.0f32;
    while x < 89.0 {
        let want = (x as f64).exp();
        for (name, got) in [("512", v_expf_512(x)), ("256", v_expf_256(x))] {
            if want > f32::MAX as f64 {
                assert_eq!(got, f32::INFINITY, "{name} exp({x})");
            } else if want < f32::MIN_POSITIVE as f64 {
                // Subnormal results: absolute error within one subnormal step.
                assert!(
                    (got as f64 - want).abs() <= 2.0 * 1.4e-45,
                    "{name} exp({x}) = {got}, want {want}"
                );
            } else {
                assert!(
                    ulps(got, want) <= 2.0,
                    "{name} exp({x}) = {got}, want {want}"
                );
            }
        }
        x += 0.173;
    }
    assert_eq!(v_expf_512(0.0), 1.0);
    assert_eq!(v_expf_256(0.0), 1.0);
    assert_eq!(v_expf_512(-1000.0), 0.0);
    assert_eq!(v_expf_256(-1000.0), 0.0);
    assert_eq!(v_expf_512(f32::NEG_INFINITY), 0.0);
    assert_eq!(v_expf_512(200.0), f32::INFINITY);
}

#[test]
fn softmax_uses_vector_exp_for_full_chunks_and_libm_for_the_tail() {
    let x: Vec<f32> = (0..21).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    for isa in Isa::ALL {
        let mut y = vec![0f32; x.len()];
        let sum = soft_max_f32(isa, &mut y, &x, max);
        let w = if isa == Isa::Avx2 { 8 } else { 16 };
        for i in 0..x.len() {
            let want = if i < x.len() / w * w {
                if w == 16 {
                    v_expf_512(x[i] - max)
                } else {
                    v_expf_256(x[i] - max)
                }
            } else {
                (x[i] - max).exp()
            };
            assert_eq!(y[i].to_bits(), want.to_bits(), "{isa} i {i}");
        }
        let s: f64 = y.iter().map(|v| *v as f64).sum();
        assert!((s - sum).abs() < 1e-6 * s);
    }
}

#[test]
fn silu_and_swiglu() {
    let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.4 - 7.0).collect();
    let g: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 * 0.01).collect();
    for isa in Isa::ALL {
        let mut y = vec![0f32; x.len()];
        vec_silu_f32(isa, &mut y, &x);
        let mut z = vec![0f32; x.len()];
        vec_swiglu_f32(isa, &mut z, &x, &g);
        for i in 0..x.len() {
            let exact = x[i] as f64 / (1.0 + (-x[i] as f64).exp());
            assert!(
                (y[i] as f64 - exact).abs() <= 4e-7 * exact.abs().max(1e-3),
                "{isa} {i}"
            );
            assert_eq!(z[i].to_bits(), (y[i] * g[i]).to_bits());
        }
    }
    assert_eq!(silu_f32(0.0), 0.0);
}

#[test]
fn gelu_goes_through_the_f16_table() {
    let x = [
        -12.0f32, -10.0, -3.3, -0.5, 0.0, 0.1234, 1.0, 2.5, 9.99, 10.0, 15.0,
    ];
    let mut y = [0f32; 11];
    vec_gelu_f32(&mut y, &x);
    assert_eq!(y[0], 0.0);
    assert_eq!(y[1], 0.0);
    assert_eq!(y[9], 10.0);
    assert_eq!(y[10], 15.0);
    for i in 2..9 {
        let want = f16::from_f32(gelu_f32_exact(f16::from_f32(x[i]).to_f32())).to_f32();
        assert_eq!(y[i], want);
        let exact = 0.5
            * x[i] as f64
            * (1.0 + (0.7978845608 * (x[i] as f64 + 0.044715 * (x[i] as f64).powi(3))).tanh());
        assert!(
            (y[i] as f64 - exact).abs() <= 2e-3 * exact.abs() + 1e-3,
            "gelu({})",
            x[i]
        );
    }
    let g = [2.0f32; 11];
    let mut z = [0f32; 11];
    vec_geglu_f32(&mut z, &x, &g);
    for i in 0..11 {
        assert_eq!(z[i], if x[i] >= 10.0 { x[i] * 2.0 } else { y[i] * 2.0 });
    }
}

#[test]
fn rms_norm_sums_in_f64() {
    let x = [3.0f32, 4.0];
    // mean of squares 12.5, eps 0.5 -> 1/sqrt(13).
    assert_eq!(rms_norm_scale(&x, 0.5), 1.0 / 13f32.sqrt());
    let mut y = [0f32; 2];
    rms_norm_mul(&mut y, &x, &[2.0, -1.0], 0.5);
    let s = 1.0 / 13f32.sqrt();
    assert_eq!(y, [3.0 * s * 2.0, -(4.0 * s)]);
}

#[test]
fn simd_expf_matches_its_emulation_over_the_whole_range() {
    // Includes the overflow/underflow branches (|n| > 126 and > 192).
    let mut x: Vec<f32> = (0..1200).map(|i| -150.0 + i as f32 * 0.2137).collect();
    x.extend([
        f32::NEG_INFINITY,
        -1e30,
        1e30,
        88.7,
        89.0,
        -87.4,
        -103.9,
        -104.0,
    ]);
    while !x.len().is_multiple_of(16) {
        x.push(0.5);
    }
    for isa in Isa::all_available() {
        let mut y = vec![0f32; x.len()];
        soft_max_f32(isa, &mut y, &x, 0.0);
        for (i, (xi, yi)) in x.iter().zip(&y).enumerate() {
            let want = if isa == Isa::Avx2 {
                v_expf_256(*xi)
            } else {
                v_expf_512(*xi)
            };
            assert_eq!(yi.to_bits(), want.to_bits(), "{isa} exp({xi}) at {i}");
        }
        let mut s = vec![0f32; x.len()];
        let finite: Vec<f32> = x.iter().map(|v| v.clamp(-80.0, 80.0)).collect();
        vec_silu_f32(isa, &mut s, &finite);
        for (xi, si) in finite.iter().zip(&s) {
            let e = if isa == Isa::Avx2 {
                v_expf_256(0.0 - xi)
            } else {
                v_expf_512(0.0 - xi)
            };
            assert_eq!(si.to_bits(), (xi / (1.0 + e)).to_bits(), "{isa} silu({xi})");
        }
    }
}

#[test]
fn fp32_to_fp16_bits_matches_scalar_rounding() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mut x: Vec<f32> = (0..1000)
        .map(|i| {
            let v: f32 = rng.random_range(-1.0..1.0);
            v * 10f32.powi(i % 12 - 8)
        })
        .collect();
    // Ties, subnormals, overflow, infinities and signed zeros.
    x.extend([
        1.0 + f32::EPSILON,
        f16::from_bits(0x3c01).to_f32() - 2f32.powi(-12),
        6.0e-8,
        -3.0e-5,
        65520.0,
        1.0e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        5.96e-8,
    ]);
    let mut y = vec![0u16; x.len()];
    fp32_to_fp16_bits(&x, &mut y);
    for (xi, yi) in x.iter().zip(&y) {
        assert_eq!(*yi, f16::from_f32(*xi).to_bits(), "{xi:e}");
    }
}

/// Checks `exp_in_place` against libm's `expf` for the inputs
/// `start, start + step, ...` (as bit patterns, wrapping) on every ISA.
fn check_exp_against_libm(start: u32, step: u32, count: u32) {
    const CHUNK: usize = 4096;
    for isa in Isa::all_available() {
        let mut bits = start;
        let mut left = count as usize;
        let mut x = vec![0f32; CHUNK];
        while left > 0 {
            // Odd lengths exercise the scalar tail as well.
            let n = left.min(CHUNK - 3);
            for v in &mut x[..n] {
                *v = f32::from_bits(bits);
                bits = bits.wrapping_add(step);
            }
            let orig = x[..n].to_vec();
            exp_in_place(isa, &mut x[..n]);
            for (o, y) in orig.iter().zip(&x[..n]) {
                let want = o.exp();
                assert!(
                    y.to_bits() == want.to_bits() || (y.is_nan() && want.is_nan()),
                    "{isa:?}: exp({o:e}) = {y:e}, libm {want:e}"
                );
            }
            left -= n;
        }
    }
}

#[test]
fn exp_in_place_equals_libm_expf() {
    // A spread over every bit pattern (both signs, subnormals, the special
    // paths), then every float attention feeds it near zero.
    check_exp_against_libm(0, 4099, (u32::MAX / 4099) + 1);
    check_exp_against_libm((-8.0f32).to_bits(), 1, 1 << 20);
    check_exp_against_libm(0x8000_0000, 1, 1 << 20);
    let edges = [
        0.0f32,
        -0.0,
        88.0,
        -88.0,
        88.72,
        -103.28,
        -103.97,
        -104.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
    ];
    for &e in &edges {
        check_exp_against_libm(e.to_bits().wrapping_sub(40), 1, 81);
    }
}

/// Every f32 input; about two minutes in a release build.
#[test]
#[ignore]
fn exp_in_place_equals_libm_expf_exhaustively() {
    check_exp_against_libm(0, 1, u32::MAX);
}
