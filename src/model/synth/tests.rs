use super::*;
use crate::gguf::{Gguf, GgufSummary};

fn parse(bytes: &[u8]) -> Gguf {
    Gguf::parse(bytes).unwrap_or_else(|e| panic!("synthetic model does not parse: {e}"))
}

fn expected_tensor_count(spec: &SynthSpec) -> usize {
    let per_layer = match spec.arch {
        SynthArch::Llama => 9,
        SynthArch::Qwen2 => 12,
        SynthArch::Gemma3 => 13,
    };
    2 + per_layer * spec.layers as usize + usize::from(!spec.tied)
}

#[test]
fn every_supported_type_and_arch_gives_a_right_file() {
    for arch in SynthArch::ALL {
        for (n, ty) in GgmlType::SUPPORTED.into_iter().enumerate() {
            let mut spec = SynthSpec::tiny(arch);
            spec.ty = ty;
            // Vary the embedding type too, and tie every other model.
            spec.embd_ty = GgmlType::SUPPORTED[(n + 5) % GgmlType::SUPPORTED.len()];
            spec.tied = n % 2 == 1;
            let bytes = to_bytes(&spec).unwrap_or_else(|e| panic!("{arch} {ty}: {e}"));
            let g = parse(&bytes);
            let s = GgufSummary::of(&g);
            let ctx = format!("{arch} {ty}");
            assert_eq!(s.architecture.as_deref(), Some(arch.name()), "{ctx}");
            assert_eq!(s.block_count, Some(2), "{ctx}");
            assert_eq!(s.embedding_length, Some(256), "{ctx}");
            assert_eq!(s.feed_forward_length, Some(512), "{ctx}");
            assert_eq!(s.head_count, Some(4), "{ctx}");
            assert_eq!(s.head_count_kv, Some(2), "{ctx}");
            assert_eq!(s.context_length, Some(512), "{ctx}");
            assert_eq!(s.vocab_size, Some(512), "{ctx}");
            assert_eq!(s.tensor_count, expected_tensor_count(&spec), "{ctx}");
            assert_eq!(
                s.tokenizer_model.as_deref(),
                Some(if arch == SynthArch::Gemma3 {
                    "llama"
                } else {
                    "gpt2"
                }),
                "{ctx}"
            );
            assert!(s.has_chat_template, "{ctx}");
            assert!(s.unsupported_types().is_empty(), "{ctx}");
            // Every tensor is where the spec says, with its shape and type.
            for want in spec.tensors() {
                let t = g
                    .tensor(&want.name)
                    .unwrap_or_else(|| panic!("{ctx}: no {}", want.name));
                assert_eq!(t.dims, want.dims, "{ctx} {}", want.name);
                assert_eq!(t.ty, want.ty, "{ctx} {}", want.name);
                if want.name.ends_with("norm.weight") || want.name.ends_with(".bias") {
                    assert_eq!(t.ty, GgmlType::F32, "{ctx} {}", want.name);
                }
            }
            assert_eq!(g.tensor("output.weight").is_some(), !spec.tied, "{ctx}");
            let q = g.tensor("blk.1.attn_q.weight").unwrap();
            assert_eq!(q.ty, ty, "{ctx}");
            assert_eq!(
                g.tensor("token_embd.weight").unwrap().ty,
                spec.embd_ty,
                "{ctx}"
            );
            match arch {
                SynthArch::Qwen2 => {
                    assert_eq!(g.tensor("blk.0.attn_k.bias").unwrap().dims, vec![128])
                }
                SynthArch::Gemma3 => {
                    assert_eq!(g.tensor("blk.0.attn_q_norm.weight").unwrap().dims, vec![64]);
                    assert!(g.tensor("blk.1.post_ffw_norm.weight").is_some());
                    assert_eq!(g.get_u64("gemma3.attention.key_length"), Some(64));
                    assert_eq!(g.get_u64("gemma3.attention.sliding_window"), Some(64));
                }
                SynthArch::Llama => assert_eq!(g.get_u64("llama.rope.dimension_count"), Some(64)),
            }
        }
    }
}

#[test]
fn norms_are_near_one_and_weights_small() {
    let mut spec = SynthSpec::tiny(SynthArch::Llama);
    spec.ty = GgmlType::F32;
    spec.embd_ty = GgmlType::F32;
    let bytes = to_bytes(&spec).unwrap();
    let g = parse(&bytes);
    let f32s = |name: &str| -> Vec<f32> {
        g.tensor_data(&bytes, g.tensor(name).unwrap())
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    assert!(f32s("blk.0.attn_norm.weight")
        .iter()
        .all(|&x| (0.85..1.15).contains(&x)));
    let w = f32s("blk.0.ffn_up.weight");
    let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    assert!((0.015..0.025).contains(&rms), "{rms}");
}

#[test]
fn tokenizer_metadata_is_complete() {
    let g = parse(&to_bytes(&SynthSpec::tiny(SynthArch::Qwen2)).unwrap());
    let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 512);
    assert_eq!(g.get_array("tokenizer.ggml.token_type").unwrap().len(), 512);
    assert!(g.get_array("tokenizer.ggml.merges").unwrap().len() > 100);
    assert_eq!(g.get_str("tokenizer.ggml.pre"), Some("default"));
    assert_eq!(g.get_u64("tokenizer.ggml.bos_token_id"), Some(1));
    assert_eq!(g.get_u64("tokenizer.ggml.eos_token_id"), Some(2));
    assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(false));

    let g = parse(&to_bytes(&SynthSpec::tiny(SynthArch::Gemma3)).unwrap());
    assert_eq!(g.get_array("tokenizer.ggml.scores").unwrap().len(), 512);
    assert!(g.get_array("tokenizer.ggml.merges").is_none());
    assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(true));
    assert_eq!(g.get_u64("tokenizer.ggml.bos_token_id"), Some(2));
}

#[test]
fn chat_templates_render() {
    for arch in SynthArch::ALL {
        let g = parse(&to_bytes(&SynthSpec::tiny(arch)).unwrap());
        let tpl = g.get_str("tokenizer.chat_template").unwrap();
        let mut env = minijinja::Environment::new();
        env.add_template("t", tpl).unwrap();
        let out = env
            .get_template("t")
            .unwrap()
            .render(minijinja::context! {
                messages => vec![
                    minijinja::context! { role => "user", content => "Hi there" },
                    minijinja::context! { role => "assistant", content => "Hello" },
                ],
                add_generation_prompt => true,
                bos_token => "<bos>",
            })
            .unwrap();
        assert!(
            out.contains("Hi there") && out.contains("Hello"),
            "{arch}: {out}"
        );
        if arch == SynthArch::Gemma3 {
            assert!(out.starts_with("<bos><start_of_turn>user\n"), "{out}");
            assert!(
                out.contains("<start_of_turn>model\nHello<end_of_turn>"),
                "{out}"
            );
            assert!(out.ends_with("<start_of_turn>model\n"), "{out}");
        } else {
            assert!(
                out.starts_with("<|im_start|>user\nHi there<|im_end|>\n"),
                "{out}"
            );
            assert!(out.ends_with("<|im_start|>assistant\n"), "{out}");
        }
    }
}

#[test]
fn the_seed_decides_the_bytes() {
    let spec = SynthSpec::tiny(SynthArch::Llama);
    let a = to_bytes(&spec).unwrap();
    assert_eq!(a, to_bytes(&spec).unwrap());
    let mut other = spec.clone();
    other.seed += 1;
    let b = to_bytes(&other).unwrap();
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b);
}

#[test]
fn bad_shapes_are_refused_with_a_reason() {
    let base = SynthSpec::tiny(SynthArch::Llama);
    let cases: Vec<(SynthSpec, &str)> = vec![
        (
            SynthSpec {
                dim: 96,
                ty: GgmlType::Q4_K,
                ..base.clone()
            },
            "whole number of 256-element Q4_K blocks",
        ),
        (
            SynthSpec {
                kv_heads: 3,
                ..base.clone()
            },
            "multiple of kv-heads",
        ),
        (
            SynthSpec {
                heads: 6,
                kv_heads: 3,
                ..base.clone()
            },
            "not a multiple of heads",
        ),
        (
            SynthSpec {
                head_dim: Some(7),
                ..base.clone()
            },
            "even",
        ),
        (
            SynthSpec {
                vocab: 100,
                ..base.clone()
            },
            "vocab 100",
        ),
        (
            SynthSpec {
                layers: 0,
                ..base.clone()
            },
            "layers must be at least 1",
        ),
        (
            SynthSpec {
                ty: GgmlType::IQ2_XS,
                ..base.clone()
            },
            "not one the engine computes with",
        ),
        (
            SynthSpec {
                embd_ty: GgmlType::Q8_1,
                ..base.clone()
            },
            "not one the engine computes with",
        ),
        (
            SynthSpec {
                dim: 1 << 33,
                ..base.clone()
            },
            "too large",
        ),
    ];
    for (spec, why) in cases {
        let e = to_bytes(&spec).unwrap_err().to_string();
        assert!(e.contains(why), "{spec:?}: {e}");
    }
}

#[test]
fn custom_head_dim_is_declared() {
    let mut spec = SynthSpec::tiny(SynthArch::Llama);
    spec.head_dim = Some(128);
    let g = parse(&to_bytes(&spec).unwrap());
    assert_eq!(g.get_u64("llama.attention.key_length"), Some(128));
    assert_eq!(
        g.tensor("blk.0.attn_q.weight").unwrap().dims,
        vec![256, 512]
    );
    assert_eq!(
        g.tensor("blk.0.attn_output.weight").unwrap().dims,
        vec![512, 256]
    );
}

#[test]
fn writing_a_file_matches_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = SynthSpec::tiny(SynthArch::Gemma3);
    let p = tmp.path().join("g.gguf");
    let n = write_synthetic_model(&spec, &p).unwrap();
    let on_disk = std::fs::read(&p).unwrap();
    assert_eq!(n, on_disk.len() as u64);
    assert_eq!(on_disk, to_bytes(&spec).unwrap());
    let e = write_synthetic_model(&spec, &tmp.path().join("no/such/dir/x.gguf")).unwrap_err();
    assert!(matches!(e, SynthError::Io { .. }), "{e}");
    let bad = SynthSpec {
        dim: 96,
        ty: GgmlType::Q4_K,
        ..spec
    };
    assert!(write_synthetic_model(&bad, &p).is_err());
    // A refused spec does not clobber what was there.
    assert_eq!(std::fs::read(&p).unwrap(), on_disk);
}
