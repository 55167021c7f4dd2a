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

/// Decode streaming with and without software prefetch, alternating in one
/// process (`PROBE_TYPE`, `PROBE_MB` as for `probe_q4_1`).
#[test]
#[ignore]
fn probe_prefetch() {
    let env = |k: &str| std::env::var(k).ok();
    let ty = env("PROBE_TYPE")
        .and_then(|v| GgmlType::from_name(&v))
        .unwrap_or(GgmlType::Q4_1);
    let mb: usize = env("PROBE_MB").and_then(|v| v.parse().ok()).unwrap_or(96);
    let n = if ty.block_size() == 256 { 1024 } else { 576 };
    let (w, rows) = weights(ty, n, mb << 20);
    let rb = row_bytes(ty, n).unwrap();
    let k = kernels(Isa::detect(), ty).unwrap();
    let ab = k.act_row_bytes(n).unwrap();
    let mut acts = vec![0u8; ab];
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    k.quantize_act(&rand_row(&mut rng, n, 0), &mut acts)
        .unwrap();
    let mut out = vec![0f32; rows];
    let mut best = [f64::MAX; 2];
    for round in 0..20 {
        let off = round % 2 == 1;
        super::tile_q32::TEST_NO_PREFETCH.store(off, std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        k.gemm(n, &w, rb, rows, &acts, ab, 1, &mut out, rows)
            .unwrap();
        let dt = t.elapsed().as_secs_f64();
        best[usize::from(off)] = best[usize::from(off)].min(dt);
    }
    super::tile_q32::TEST_NO_PREFETCH.store(false, std::sync::atomic::Ordering::Relaxed);
    let gbs = |s: f64| w.len() as f64 / s / 1e9;
    println!(
        "{ty} {mb} MiB: prefetch {:.2} GB/s, without {:.2} GB/s",
        gbs(best[0]),
        gbs(best[1])
    );
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

/// Multi-column gemm speed, one thread, weights resident in cache:
/// `PROBE_TYPE` (Q4_1), `PROBE_N` (576 elements per row), `PROBE_KB` (512 KiB
/// of weights), `PROBE_NC` (comma-separated column counts; 1,2,8,16,64).
#[test]
#[ignore]
fn probe_gemm() {
    let env = |k: &str| std::env::var(k).ok();
    let ty = env("PROBE_TYPE")
        .and_then(|v| GgmlType::from_name(&v))
        .unwrap_or(GgmlType::Q4_1);
    let n: usize = env("PROBE_N").and_then(|v| v.parse().ok()).unwrap_or(576);
    let kb: usize = env("PROBE_KB").and_then(|v| v.parse().ok()).unwrap_or(512);
    let ncs: Vec<usize> = env("PROBE_NC")
        .unwrap_or("1,2,8,16,64".into())
        .split(',')
        .filter_map(|v| v.parse().ok())
        .collect();
    super::tile_q32::TEST_PANEL_BYTES.store(512 << 10, std::sync::atomic::Ordering::Relaxed);
    let old = env("PROBE_OLD").is_some_and(|v| !v.is_empty());
    super::tile_q32::TEST_NO_ROW_PAIRS.store(old, std::sync::atomic::Ordering::Relaxed);
    let (w, rows) = weights(ty, n, kb << 10);
    let rb = row_bytes(ty, n).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let isa = env("PROBE_ISA")
        .and_then(|v| Isa::from_name(&v))
        .unwrap_or(Isa::detect());
    let k = kernels(isa, ty).unwrap();
    let ab = k.act_row_bytes(n).unwrap();
    let max_nc = ncs.iter().copied().max().unwrap_or(1);
    let mut acts = vec![0u8; ab * max_nc];
    for c in 0..max_nc {
        k.quantize_act(&rand_row(&mut rng, n, 0), &mut acts[c * ab..(c + 1) * ab])
            .unwrap();
    }
    let mut out = vec![0f32; rows * max_nc];
    let mut line = format!("{ty} {isa} n={n} {kb} KiB:");
    for nc in ncs {
        let s = best_time(w.len() * nc * 4, || {
            k.gemm(n, &w, rb, rows, &acts, ab, nc, &mut out, rows)
                .unwrap()
        });
        let gmac = (rows * n * nc) as f64 / s / 1e9;
        line += &format!("  nc={nc}: {gmac:.1} GMAC/s");
    }
    super::tile_q32::TEST_PANEL_BYTES.store(200, std::sync::atomic::Ordering::Relaxed);
    super::tile_q32::TEST_NO_ROW_PAIRS.store(false, std::sync::atomic::Ordering::Relaxed);
    println!(
        "{line}{}",
        if old {
            " (without the row-pair kernel)"
        } else {
            ""
        }
    );
}
