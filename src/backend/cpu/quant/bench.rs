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

#[test]
#[ignore]
fn matvec_bandwidth() {
    let n = 2048;
    for (size_name, bytes) in [("8 MiB", 8 << 20), ("512 MiB", 512 << 20)] {
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let (w, rows) = weights(ty, n, bytes);
            let rb = row_bytes(ty, n).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(10);
            for isa in Isa::all_available() {
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
                    let iters = if isa == Isa::Scalar { 1 } else { 3 };
                    k.gemm(n, &w, rb, rows, &acts, ab, cols, &mut out, rows)
                        .unwrap();
                    let t = Instant::now();
                    for _ in 0..iters {
                        k.gemm(n, &w, rb, rows, &acts, ab, cols, &mut out, rows)
                            .unwrap();
                    }
                    let s = t.elapsed().as_secs_f64() / iters as f64;
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
    let ty = GgmlType::Q4_1;
    let mb: usize = std::env::var("PROBE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let (w, rows) = weights(ty, n, mb << 20);
    let rb = row_bytes(ty, n).unwrap();
    let k = kernels(Isa::detect(), ty).unwrap();
    let ab = k.act_row_bytes(n).unwrap();
    let mut acts = vec![0u8; ab];
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    k.quantize_act(&rand_row(&mut rng, n, 0), &mut acts)
        .unwrap();
    let mut out = vec![0f32; rows];
    let t = Instant::now();
    for _ in 0..20 {
        k.gemm(n, &w, rb, rows, &acts, ab, 1, &mut out, rows)
            .unwrap();
    }
    let s = t.elapsed().as_secs_f64() / 20.0;
    println!("q4_1 {}: {:.2} GB/s", k.isa(), w.len() as f64 / s / 1e9);
}
