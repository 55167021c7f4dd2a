//! Model hyperparameters read from GGUF metadata. The metadata keys the
//! engine understands are named here and nowhere else.

use crate::gguf::Gguf;

/// The architectures the engine runs, from `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, SmolLM2, TinyLlama, Mistral.
    Llama,
    /// Like llama, with biases on q/k/v and NeoX-style RoPE.
    Qwen2,
    /// Sliding-window layers, q/k norms, post-norms, scaled embeddings, GeGLU.
    Gemma3,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" | "mistral" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// How RoPE pairs dimensions: adjacent (`x[2i], x[2i+1]`) or split
    /// halves (`x[i], x[i + d/2]`, "NeoX").
    pub fn rope_neox(self) -> bool {
        !matches!(self, Arch::Llama)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HParamsError {
    #[error("missing general.architecture")]
    NoArchitecture,
    #[error("unsupported architecture {0:?} (supported: llama, qwen2, gemma3)")]
    UnsupportedArchitecture(String),
    #[error("missing or invalid metadata key {0}")]
    Missing(String),
    #[error("invalid hyperparameters: {0}")]
    Invalid(String),
}

/// The shape and numeric constants of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head dimension of queries/keys and of values.
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub n_ff: usize,
    /// From `tokenizer.ggml.tokens` (or `<arch>.vocab_size`).
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    pub norm_eps: f32,
    pub rope_freq_base: f32,
    /// Frequency base for sliding-window layers (gemma3).
    pub rope_freq_base_swa: f32,
    /// 1 / linear RoPE scaling factor.
    pub rope_freq_scale: f32,
    /// Dimensions rotated by RoPE (from the front of each head).
    pub n_rot: usize,
    /// Sliding window (tokens) for SWA layers; 0 when the model has none.
    pub n_swa: usize,
    /// Per layer: does it use the sliding window?
    pub swa_layers: Vec<bool>,
    /// Multiplier applied to queries before attention (scores are not
    /// scaled again).
    pub attn_scale: f32,
    /// Final logit soft-capping (0 = off).
    pub final_logit_softcap: f32,
}

fn key(arch: &str, k: &str) -> String {
    format!("{arch}.{k}")
}

impl HParams {
    pub fn from_gguf(g: &Gguf) -> Result<HParams, HParamsError> {
        let arch_name = g.architecture().ok_or(HParamsError::NoArchitecture)?;
        let arch = Arch::from_name(arch_name)
            .ok_or_else(|| HParamsError::UnsupportedArchitecture(arch_name.to_string()))?;
        let a = arch_name;
        let req = |k: &str| -> Result<usize, HParamsError> {
            let full = key(a, k);
            g.get_u64(&full)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or(HParamsError::Missing(full))
        };
        let opt = |k: &str| g.get_u64(&key(a, k)).and_then(|v| usize::try_from(v).ok());
        let optf = |k: &str| g.get_f64(&key(a, k)).map(|v| v as f32);

        let n_layer = req("block_count")?;
        let n_embd = req("embedding_length")?;
        let n_head = req("attention.head_count")?;
        let n_head_kv = opt("attention.head_count_kv").unwrap_or(n_head);
        let n_ff = req("feed_forward_length")?;
        let n_ctx_train = req("context_length")?;
        if n_head == 0 || n_head_kv == 0 || n_layer == 0 || n_embd == 0 {
            return Err(HParamsError::Invalid("zero-sized dimension".into()));
        }
        let head_dim = opt("attention.key_length").unwrap_or(n_embd / n_head);
        let head_dim_v = opt("attention.value_length").unwrap_or(head_dim);
        let n_rot = opt("rope.dimension_count").unwrap_or(head_dim);
        let n_vocab = g
            .get_array("tokenizer.ggml.tokens")
            .map(|t| t.len())
            .or_else(|| opt("vocab_size"))
            .ok_or_else(|| HParamsError::Missing("tokenizer.ggml.tokens".into()))?;
        let norm_eps = optf("attention.layer_norm_rms_epsilon")
            .ok_or_else(|| HParamsError::Missing(key(a, "attention.layer_norm_rms_epsilon")))?;
        let rope_freq_base = optf("rope.freq_base").unwrap_or(10000.0);
        let rope_freq_base_swa = optf("rope.freq_base_swa").unwrap_or(10000.0);
        let rope_freq_scale = match g.get_str(&key(a, "rope.scaling.type")) {
            None | Some("none") => 1.0,
            Some("linear") => {
                let f = optf("rope.scaling.factor").unwrap_or(1.0);
                if f > 0.0 {
                    1.0 / f
                } else {
                    1.0
                }
            }
            Some(other) => {
                return Err(HParamsError::Invalid(format!(
                    "RoPE scaling type {other:?} is not supported"
                )))
            }
        };
        if n_head % n_head_kv != 0 {
            return Err(HParamsError::Invalid(format!(
                "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )));
        }
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(HParamsError::Invalid(format!(
                "rope dimension {n_rot} does not fit head dimension {head_dim}"
            )));
        }
        if head_dim_v != head_dim {
            return Err(HParamsError::Invalid(
                "key and value head dimensions differ".into(),
            ));
        }

        let (n_swa, swa_layers, attn_scale) = match arch {
            Arch::Gemma3 => {
                let n_swa = opt("attention.sliding_window").unwrap_or(0);
                // Every sixth layer is global, the rest slide (llama.cpp's
                // default pattern for gemma3), unless the file says otherwise.
                let pattern = opt("attention.sliding_window_pattern").unwrap_or(6);
                let swa = (0..n_layer)
                    .map(|il| n_swa > 0 && (pattern == 0 || il % pattern < pattern - 1))
                    .collect();
                // 1/sqrt(query_pre_attn_scalar); the 27B model uses n_embd/n_head.
                let scale = if n_layer == 62 {
                    1.0 / ((n_embd / n_head) as f32).sqrt()
                } else {
                    1.0 / (head_dim as f32).sqrt()
                };
                (n_swa, swa, scale)
            }
            _ => (0, vec![false; n_layer], 1.0 / (head_dim as f32).sqrt()),
        };
        let final_logit_softcap = optf("final_logit_softcapping").unwrap_or(0.0);

        Ok(HParams {
            arch,
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            n_vocab,
            n_ctx_train,
            norm_eps,
            rope_freq_base,
            rope_freq_base_swa,
            rope_freq_scale,
            n_rot,
            n_swa,
            swa_layers,
            attn_scale,
            final_logit_softcap,
        })
    }

    /// Width of the key (and value) vectors of one token, all KV heads.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{Array, GgufWriter, Value};

    fn header(arch: &str, extra: &[(&str, u32)]) -> Gguf {
        let mut w = GgufWriter::new();
        w.set_str("general.architecture", arch);
        for (k, v) in extra {
            w.set_u32(&format!("{arch}.{k}"), *v);
        }
        w.set_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5);
        w.set(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(vec!["a".into(); 8])),
        );
        Gguf::parse(&w.to_bytes()).unwrap()
    }

    const LLAMA: &[(&str, u32)] = &[
        ("block_count", 2),
        ("embedding_length", 64),
        ("attention.head_count", 4),
        ("attention.head_count_kv", 2),
        ("feed_forward_length", 128),
        ("context_length", 256),
    ];

    #[test]
    fn unsupported_architecture_is_named() {
        let e = HParams::from_gguf(&header("mamba", LLAMA)).unwrap_err();
        assert_eq!(e, HParamsError::UnsupportedArchitecture("mamba".into()));
        assert!(e.to_string().contains("mamba"));
    }

    #[test]
    fn missing_key_is_named() {
        let e = HParams::from_gguf(&header("llama", &LLAMA[1..])).unwrap_err();
        assert_eq!(e, HParamsError::Missing("llama.block_count".into()));
    }

    #[test]
    fn gqa_must_divide() {
        let mut kv = LLAMA.to_vec();
        kv[3] = ("attention.head_count_kv", 3);
        assert!(matches!(
            HParams::from_gguf(&header("llama", &kv)),
            Err(HParamsError::Invalid(_))
        ));
    }

    #[test]
    fn llama_defaults() {
        let hp = HParams::from_gguf(&header("llama", LLAMA)).unwrap();
        assert_eq!(hp.head_dim, 16);
        assert_eq!(hp.kv_dim(), 32);
        assert_eq!(hp.n_vocab, 8);
        assert!(hp.swa_layers.iter().all(|s| !s));
        assert_eq!(hp.attn_scale, 0.25);
    }

    #[test]
    fn gemma3_swa_pattern_every_sixth_layer_global() {
        let mut kv = LLAMA.to_vec();
        kv[0] = ("block_count", 12);
        kv.push(("attention.sliding_window", 512));
        let hp = HParams::from_gguf(&header("gemma3", &kv)).unwrap();
        let global: Vec<usize> = (0..12).filter(|&i| !hp.swa_layers[i]).collect();
        assert_eq!(global, vec![5, 11]);
        assert_eq!(hp.n_swa, 512);
        assert_eq!(hp.rope_freq_base_swa, 10000.0);
    }
}
