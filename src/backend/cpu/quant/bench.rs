//! `cargo test --release --lib quant::bench -- --ignored --nocapture`: one
//! thread, matrix-vector (decode) and 8-column (prefill-like) gemm speed per
//! type and ISA, over weights large enough to stream from memory.

use super::tests::rand_row;
use super::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn weights(ty: GgmlType, n: usize, bytes: usize) -> (Vec<u8>, usize) {
    let rb = row_bytes(ty, n).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // A few hundred distinct rows, repeated: realistic blocks without
    // quantizing hundreds of megabytes.
    let distinct: Vec<Vec<u8>> = (0..256)
        .map(|i| {
            let x = rand_row(&mut rng, n, i % 3);
            let mut q = vec![0u8; rb];
            quantize_row_ref(ty, &x, &mut q).unwrap();
            q
        })
        .collect();
    let rows = bytes / rb;
    let mut w = Vec::with_capacity(rows * rb);
    for r in 0..rows {
        w.extend_from_slice(&distinct[r % distinct.len()]);
    }
    (w, rows)
}

/// Best time of `f` over short trials: the machine is shared, and the best
/// trial is the closest to the kernel's own speed.
fn best_time(bytes: usize, mut f: impl FnMut()) -> f64 {
    f();
    let trials = ((512usize << 20) / bytes.max(1)).clamp(5, 500);
    let mut best = f64::MAX;
    for _ in 0..trials {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

#[test]
#[ignore]
fn matvec_bandwidth() {
    let n = 2048;
    for (size_name, bytes) in [("1 MiB", 1 << 20), ("256 MiB", 256 << 20)] {
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let (w, rows) = weights(ty, n, bytes);
            let rb = row_bytes(ty, n).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(10);
            for isa in Isa::all_available() {
                if isa == Isa::Scalar && bytes > (16 << 20) {
                    continue;
                }
                let k = kernels(isa, ty).unwrap();
                let ab = k.act_row_bytes(n).unwrap();
                let nc = 8;
                let mut acts = vec![0u8; ab * nc];
                for c in 0..nc {
                    k.quantize_act(&rand_row(&mut rng, n, 0), &mut acts[c * ab..(c + 1) * ab])
                        .unwrap();
                }
                let mut out = vec![0f32; rows * nc];
                let mut line = format!("{size_name:>8} {ty:5} {isa:7}");
                for cols in [1, nc] {
                    let s = best_time(w.len() * cols, || {
                        k.gemm(n, &w, rb, rows, &acts, ab, cols, &mut out, rows)
                            .unwrap()
                    });
                    let gbs = w.len() as f64 / s / 1e9;
                    let gmac = (rows * n * cols) as f64 / s / 1e9;
                    line += &format!("  nc={cols}: {gbs:6.1} GB/s {gmac:6.1} GMAC/s");
                }
                println!("{line}");
            }
        }
    }
}

#[test]
#[ignore]
fn probe_q4_1() {
    let n = 2048;
    let ty = std::env::var("PROBE_TYPE")
        .ok()
        .and_then(|v| GgmlType::from_name(&v))
        .unwrap_or(GgmlType::Q4_1);
    let mb: usize = std::env::var("PROBE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let (w, rows) = weights(ty, n, mb << 20);
    let rb = row_bytes(ty, n).unwrap();
    let isa = std::env::var("PROBE_ISA")
        .ok()
        .and_then(|v| Isa::from_name(&v))
        .unwrap_or(Isa::detect());
    let k = kernels(isa, ty).unwrap();
    let ab = k.act_row_bytes(n).unwrap();
    let mut acts = vec![0u8; ab];
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    k.quantize_act(&rand_row(&mut rng, n, 0), &mut acts)
        .unwrap();
    let mut out = vec![0f32; rows];
    // Best of many short trials: the machine is shared, so the best trial is
    // the closest to the kernel's own speed.
    let mut best = f64::MAX;
    // Short trials (well under a scheduler slice), many of them.
    let iters = ((1 << 20) / w.len()).max(1);
    let trials = ((512usize << 20) / (iters * w.len())).clamp(20, 2000);
    for _ in 0..trials {
        let t = Instant::now();
        for _ in 0..iters {
            k.gemm(n, &w, rb, rows, &acts, ab, 1, &mut out, rows)
                .unwrap();
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    let s = best;
    println!("{ty} {}: {:.2} GB/s", k.isa(), w.len() as f64 / s / 1e9);
}

/// Plain read bandwidth on this machine, for comparison with the kernels.
#[test]
#[ignore]
fn probe_read_bandwidth() {
    let mb: usize = std::env::var("PROBE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let v: Vec<u64> = (0..(mb << 17) as u64).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let mut acc = [0u64; 8];
        for ch in v.chunks_exact(8) {
            for i in 0..8 {
                acc[i] = acc[i].wrapping_add(ch[i]);
            }
        }
        let s = t.elapsed().as_secs_f64();
        std::hint::black_box(acc);
        best = best.max((v.len() * 8) as f64 / s / 1e9);
    }
    println!("read {mb} MiB: {best:.1} GB/s");
}
