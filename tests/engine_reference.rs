//! The forward pass against an independent, naive f32 reference, on
//! synthetic models of every architecture: checks the architecture plumbing
//! (biases, q/k norms, post-norms, embedding scale, RoPE pairing and bases,
//! GQA head mapping, sliding windows) that llama.cpp parity on two real
//! models cannot cover. Also checks batch invariance and prefix-free
//! determinism on the same models.

use std::sync::Arc;

use llorchd::backend::cpu::quant::dequantize_row;
use llorchd::backend::cpu::Isa;
use llorchd::gguf::{GgmlType, GgufFile};
use llorchd::model::synth::{write_synthetic_model, SynthArch, SynthSpec};
use llorchd::model::{Arch, BatchEntry, Forward, HParams, Model};

fn tensor(f: &GgufFile, name: &str) -> Option<(Vec<f32>, usize, usize)> {
    let (info, data) = f.tensor(name)?;
    let (cols, rows) = info.rows();
    let mut out = vec![0f32; cols * rows];
    let rb = data.len() / rows;
    for r in 0..rows {
        dequantize_row(
            info.ty,
            &data[r * rb..(r + 1) * rb],
            &mut out[r * cols..(r + 1) * cols],
        )
        .unwrap();
    }
    Some((out, cols, rows))
}

fn mat(f: &GgufFile, name: &str) -> Vec<f32> {
    tensor(f, name).unwrap_or_else(|| panic!("{name}")).0
}

/// y = W x for W with `rows` rows of len x.
fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len())
        .map(|r| {
            r.iter()
                .zip(x)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum::<f64>() as f32
        })
        .collect()
}

fn rms(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + eps as f64).sqrt();
    x.iter()
        .zip(w)
        .map(|(v, w)| (*v as f64 * s) as f32 * w)
        .collect()
}

fn rope(x: &mut [f32], pos: usize, base: f32, n_rot: usize, neox: bool) {
    for i in 0..n_rot / 2 {
        let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / n_rot as f64);
        let (s, c) = theta.sin_cos();
        let (a, b) = if neox {
            (i, i + n_rot / 2)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (x[a] as f64, x[b] as f64);
        x[a] = (x0 * c - x1 * s) as f32;
        x[b] = (x0 * s + x1 * c) as f32;
    }
}

/// Logits for every position of `tokens`, computed naively in f32/f64.
fn reference_logits(f: &GgufFile, hp: &HParams, tokens: &[u32]) -> Vec<Vec<f32>> {
    let (ne, hd, nh, nkv) = (hp.n_embd, hp.head_dim, hp.n_head, hp.n_head_kv);
    let embd = mat(f, "token_embd.weight");
    let gemma = hp.arch == Arch::Gemma3;
    let mut xs: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| {
            let row = &embd[t as usize * ne..(t as usize + 1) * ne];
            row.iter()
                .map(|v| if gemma { v * (ne as f32).sqrt() } else { *v })
                .collect()
        })
        .collect();
    for il in 0..hp.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        let an = mat(f, &n("attn_norm.weight"));
        let (wq, wk, wv, wo) = (
            mat(f, &n("attn_q.weight")),
            mat(f, &n("attn_k.weight")),
            mat(f, &n("attn_v.weight")),
            mat(f, &n("attn_output.weight")),
        );
        let bias = |s: &str| tensor(f, &n(s)).map(|t| t.0);
        let (bq, bk, bv) = (
            bias("attn_q.bias"),
            bias("attn_k.bias"),
            bias("attn_v.bias"),
        );
        let swa = hp.swa_layers[il];
        let base = if swa {
            hp.rope_freq_base_swa
        } else {
            hp.rope_freq_base
        };
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let h = rms(x, &an, hp.norm_eps);
            let add = |mut v: Vec<f32>, b: &Option<Vec<f32>>| {
                if let Some(b) = b {
                    v.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                }
                v
            };
            let mut q = add(matvec(&wq, &h), &bq);
            let mut k = add(matvec(&wk, &h), &bk);
            let v = add(matvec(&wv, &h), &bv);
            if gemma {
                let qn = mat(f, &n("attn_q_norm.weight"));
                let kn = mat(f, &n("attn_k_norm.weight"));
                for c in q.chunks_exact_mut(hd) {
                    let r = rms(c, &qn, hp.norm_eps);
                    c.copy_from_slice(&r);
                }
                for c in k.chunks_exact_mut(hd) {
                    let r = rms(c, &kn, hp.norm_eps);
                    c.copy_from_slice(&r);
                }
            }
            for c in q.chunks_exact_mut(hd) {
                rope(c, p, base, hp.n_rot, hp.arch.rope_neox());
            }
            for c in k.chunks_exact_mut(hd) {
                rope(c, p, base, hp.n_rot, hp.arch.rope_neox());
            }
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let scale = if gemma {
            hp.attn_scale as f64
        } else {
            1.0 / (hd as f64).sqrt()
        };
        for p in 0..xs.len() {
            let mut att = vec![0f32; nh * hd];
            for h in 0..nh {
                let kh = h / (nh / nkv);
                let lo = if swa {
                    (p + 1).saturating_sub(hp.n_swa)
                } else {
                    0
                };
                let scores: Vec<f64> = (lo..=p)
                    .map(|j| {
                        (0..hd)
                            .map(|d| qs[p][h * hd + d] as f64 * ks[j][kh * hd + d] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    att[h * hd + d] = (lo..=p)
                        .zip(&e)
                        .map(|(j, w)| w / z * vs[j][kh * hd + d] as f64)
                        .sum::<f64>() as f32;
                }
            }
            let mut o = matvec(&wo, &att);
            if gemma {
                o = rms(&o, &mat(f, &n("post_attention_norm.weight")), hp.norm_eps);
            }
            xs[p].iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        }
        let fnw = mat(f, &n("ffn_norm.weight"));
        let (wg, wu, wd) = (
            mat(f, &n("ffn_gate.weight")),
            mat(f, &n("ffn_up.weight")),
            mat(f, &n("ffn_down.weight")),
        );
        for x in xs.iter_mut() {
            let h = rms(x, &fnw, hp.norm_eps);
            let g = matvec(&wg, &h);
            let u = matvec(&wu, &h);
            let act: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| {
                    let g = g as f64;
                    let a = if gemma {
                        0.5 * g
                            * (1.0
                                + ((2.0 / std::f64::consts::PI).sqrt()
                                    * (g + 0.044715 * g * g * g))
                                    .tanh())
                    } else {
                        g / (1.0 + (-g).exp())
                    };
                    (a * u as f64) as f32
                })
                .collect();
            let mut d = matvec(&wd, &act);
            if gemma {
                d = rms(&d, &mat(f, &n("post_ffw_norm.weight")), hp.norm_eps);
            }
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
    }
    let on = mat(f, "output_norm.weight");
    let out = tensor(f, "output.weight").map(|t| t.0).unwrap_or(embd);
    xs.iter()
        .map(|x| matvec(&out, &rms(x, &on, hp.norm_eps)))
        .collect()
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn synth(
    arch: SynthArch,
    ty: GgmlType,
    layers: u32,
    window: u64,
) -> (tempfile::TempDir, Arc<Model>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut spec = SynthSpec::tiny(arch);
    spec.ty = ty;
    spec.layers = layers;
    spec.sliding_window = window;
    write_synthetic_model(&spec, &path).unwrap();
    let m = Model::load(&path).unwrap();
    (dir, m)
}

fn check_against_reference(arch: SynthArch, ty: GgmlType, layers: u32, window: u64) {
    let (_d, model) = synth(arch, ty, layers, window);
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 500).collect();
    let reference = reference_logits(&model.file, &model.hparams, &tokens);
    let mut fw = Forward::new(2, Isa::detect());
    let mut cache = model.new_cache(32);
    // Prefill 8 tokens, then decode the rest one at a time.
    let nv = model.hparams.n_vocab;
    let mut b = [BatchEntry {
        cache: &mut cache,
        tokens: &tokens[..8],
        want_logits: true,
        prompt_len: 8,
    }];
    model.forward(&mut fw, &mut b).unwrap();
    let mut got = vec![fw.logits(0, nv).to_vec()];
    for t in &tokens[8..] {
        let mut b = [BatchEntry {
            cache: &mut cache,
            tokens: std::slice::from_ref(t),
            want_logits: true,
            prompt_len: 0,
        }];
        model.forward(&mut fw, &mut b).unwrap();
        got.push(fw.logits(0, nv).to_vec());
    }
    for (i, g) in got.iter().enumerate() {
        let e = rel_err(g, &reference[7 + i]);
        assert!(
            e < 0.03,
            "{arch:?} {ty}: position {}: relative error {e}",
            7 + i
        );
    }
}

#[test]
fn llama_matches_reference() {
    check_against_reference(SynthArch::Llama, GgmlType::Q8_0, 2, 0);
}

#[test]
fn qwen2_matches_reference() {
    check_against_reference(SynthArch::Qwen2, GgmlType::Q8_0, 2, 0);
}

#[test]
fn gemma3_with_sliding_window_matches_reference() {
    // Six layers: five slide over a 4-token window, the sixth is global.
    check_against_reference(SynthArch::Gemma3, GgmlType::Q8_0, 6, 4);
}

#[test]
fn f16_and_k_quant_weights_match_reference() {
    check_against_reference(SynthArch::Llama, GgmlType::F16, 1, 0);
    check_against_reference(SynthArch::Qwen2, GgmlType::Q6_K, 1, 0);
}

/// A sequence's logits are bit-identical whether it runs alone or batched
/// with others at different positions (and prefilled in different chunks).
#[test]
fn batch_invariance_on_synthetic_models() {
    for arch in [SynthArch::Llama, SynthArch::Gemma3] {
        let (_d, model) = synth(arch, GgmlType::Q4_K, 2, 8);
        let nv = model.hparams.n_vocab;
        let mut fw = Forward::new(2, Isa::detect());
        let prompt: Vec<u32> = (0..22).map(|i| (i * 13 + 3) % 500).collect();
        // Alone: prefill whole, then 6 greedy steps.
        let alone = {
            let mut c = model.new_cache(64);
            let mut out = Vec::new();
            let mut input = prompt.clone();
            for i in 0..6 {
                let mut b = [BatchEntry {
                    cache: &mut c,
                    tokens: &input,
                    want_logits: true,
                    prompt_len: if i == 0 { prompt.len() } else { 0 },
                }];
                model.forward(&mut fw, &mut b).unwrap();
                let l = fw.logits(0, nv).to_vec();
                let next = argmax(&l);
                out.push(l);
                input = vec![next];
            }
            out
        };
        // Batched: prefill in aligned chunks of 8 (as the scheduler does) beside
        // three other sequences.
        let mut main = model.new_cache(64);
        let mut others: Vec<_> = (0..3).map(|_| model.new_cache(64)).collect();
        let other_toks: Vec<Vec<u32>> = (0..3)
            .map(|s| (0..40).map(|i| ((i + s * 11) * 17 % 500) as u32).collect())
            .collect();
        let mut pos = 0;
        let mut got = Vec::new();
        let mut step = 0;
        let mut input: Vec<u32> = Vec::new();
        while got.len() < 6 {
            let prefill = pos < prompt.len();
            let (toks, want) = if prefill {
                let end = (pos + 8).min(prompt.len());
                let t = prompt[pos..end].to_vec();
                pos = end;
                (t, pos == prompt.len())
            } else {
                (input.clone(), true)
            };
            let mut entries = vec![BatchEntry {
                cache: &mut main,
                tokens: &toks,
                want_logits: want,
                prompt_len: if prefill { prompt.len() } else { 0 },
            }];
            for (c, t) in others.iter_mut().zip(&other_toks) {
                entries.push(BatchEntry {
                    cache: c,
                    tokens: &t[step..step + 1 + step % 2],
                    want_logits: true,
                    prompt_len: 0,
                });
            }
            // Put our sequence in a different place of the batch each step.
            entries.rotate_left(step % 4);
            let our_index = (4 - step % 4) % 4;
            model.forward(&mut fw, &mut entries).unwrap();
            if want {
                // Logit rows follow batch order among entries that asked.
                let l = fw.logits(our_index, nv).to_vec();
                input = vec![argmax(&l)];
                got.push(l);
            }
            step += 1;
        }
        for (i, (a, b)) in alone.iter().zip(&got).enumerate() {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{arch:?}: step {i} differs when batched"
            );
        }
    }
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in l.iter().enumerate() {
        if *v > l[best] {
            best = i;
        }
    }
    best as u32
}
