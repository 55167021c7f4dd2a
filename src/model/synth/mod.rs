//! Synthetic models: complete, runnable GGUF files of any shape and tensor
//! type, with random weights from a seed and a small real tokenizer. Tests,
//! benchmarks and GPU checks use them where the real models are too few.
//!
//! Tensor names and metadata keys are the ones real files use for each
//! architecture (llama.cpp's `llama-arch.cpp`), so a synthetic file loads
//! through the same code as a real one.
//!
//! ```no_run
//! use llorchd::model::synth::{SynthArch, SynthSpec, write_synthetic_model};
//! let mut spec = SynthSpec::tiny(SynthArch::Llama);
//! spec.ty = llorchd::gguf::GgmlType::Q4_K;
//! write_synthetic_model(&spec, std::path::Path::new("/tmp/tiny.gguf")).unwrap();
//! ```

pub mod vocab;
pub mod weights;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::gguf::summary::file_type_for;
use crate::gguf::{Array, GgmlType, GgufWriter, TensorLayout, Value};
use vocab::Vocab;
use weights::{tensor_rng, write_random, Init};

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synthetic model: {0}")]
    Invalid(String),
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// The architectures a synthetic model can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SynthArch {
    /// SmolLM2, TinyLlama, Llama 2/3, Mistral.
    Llama,
    /// Llama plus q/k/v biases.
    Qwen2,
    /// Per-head q/k norms, post-attention and post-FFN norms, sliding window.
    Gemma3,
}

impl SynthArch {
    pub const ALL: [SynthArch; 3] = [SynthArch::Llama, SynthArch::Qwen2, SynthArch::Gemma3];

    /// The `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            SynthArch::Llama => "llama",
            SynthArch::Qwen2 => "qwen2",
            SynthArch::Gemma3 => "gemma3",
        }
    }

    /// Gemma uses a SentencePiece vocab; the others byte-level BPE.
    pub fn uses_sentencepiece(self) -> bool {
        self == SynthArch::Gemma3
    }

    pub fn min_vocab(self) -> u64 {
        if self.uses_sentencepiece() {
            vocab::spm_min_vocab()
        } else {
            vocab::GPT2_MIN_VOCAB
        }
    }
}

impl fmt::Display for SynthArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SynthArch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SynthArch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown architecture {s:?} (llama, qwen2 or gemma3)"))
    }
}

/// The shape and types of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub arch: SynthArch,
    pub layers: u32,
    /// Embedding length.
    pub dim: u64,
    pub heads: u64,
    pub kv_heads: u64,
    /// Per-head dimension; `None` means `dim / heads`.
    pub head_dim: Option<u64>,
    /// Feed-forward length.
    pub ff: u64,
    pub vocab: u64,
    /// Context length the model declares.
    pub ctx: u64,
    /// Type of the layer matrices (attention and FFN weights).
    pub ty: GgmlType,
    /// Type of `token_embd` (and of `output` when untied).
    pub embd_ty: GgmlType,
    /// No `output` tensor: the output projection reuses `token_embd`.
    pub tied: bool,
    /// Gemma3 only: the local layers' attention window.
    pub sliding_window: u64,
    pub seed: u64,
}

impl SynthSpec {
    /// A small model: 2 layers, dim 256 (a whole K-quant block), 4 heads
    /// over 2 KV heads, FFN 512, vocab 512, context 512, Q8_0 weights.
    pub fn tiny(arch: SynthArch) -> SynthSpec {
        SynthSpec {
            arch,
            layers: 2,
            dim: 256,
            heads: 4,
            kv_heads: 2,
            head_dim: None,
            ff: 512,
            vocab: 512,
            ctx: 512,
            ty: GgmlType::Q8_0,
            embd_ty: GgmlType::Q8_0,
            tied: false,
            sliding_window: 64,
            seed: 42,
        }
    }

    pub fn head_dim(&self) -> u64 {
        self.head_dim.unwrap_or(self.dim / self.heads.max(1))
    }

    /// Every tensor, in the order it is written.
    pub fn tensors(&self) -> Vec<TensorLayout> {
        let t = |name: String, dims: &[u64], ty: GgmlType| TensorLayout {
            name,
            dims: dims.to_vec(),
            ty,
        };
        let (d, v, ff, hd) = (self.dim, self.vocab, self.ff, self.head_dim());
        let (q, kv) = (self.heads * hd, self.kv_heads * hd);
        let f32 = GgmlType::F32;
        let mut out = vec![t("token_embd.weight".into(), &[d, v], self.embd_ty)];
        for i in 0..self.layers {
            let b = |s: &str| format!("blk.{i}.{s}");
            out.push(t(b("attn_norm.weight"), &[d], f32));
            out.push(t(b("attn_q.weight"), &[d, q], self.ty));
            out.push(t(b("attn_k.weight"), &[d, kv], self.ty));
            out.push(t(b("attn_v.weight"), &[d, kv], self.ty));
            if self.arch == SynthArch::Qwen2 {
                out.push(t(b("attn_q.bias"), &[q], f32));
                out.push(t(b("attn_k.bias"), &[kv], f32));
                out.push(t(b("attn_v.bias"), &[kv], f32));
            }
            if self.arch == SynthArch::Gemma3 {
                out.push(t(b("attn_q_norm.weight"), &[hd], f32));
                out.push(t(b("attn_k_norm.weight"), &[hd], f32));
            }
            out.push(t(b("attn_output.weight"), &[q, d], self.ty));
            if self.arch == SynthArch::Gemma3 {
                out.push(t(b("post_attention_norm.weight"), &[d], f32));
            }
            out.push(t(b("ffn_norm.weight"), &[d], f32));
            out.push(t(b("ffn_gate.weight"), &[d, ff], self.ty));
            out.push(t(b("ffn_up.weight"), &[d, ff], self.ty));
            out.push(t(b("ffn_down.weight"), &[ff, d], self.ty));
            if self.arch == SynthArch::Gemma3 {
                out.push(t(b("post_ffw_norm.weight"), &[d], f32));
            }
        }
        out.push(t("output_norm.weight".into(), &[d], f32));
        if !self.tied {
            out.push(t("output.weight".into(), &[d, v], self.embd_ty));
        }
        out
    }

    /// Check the shape: positive sizes, heads that group evenly, rows that
    /// are whole blocks of their type, sizes that fit the file format.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Invalid(m));
        for (name, v) in [
            ("layers", self.layers as u64),
            ("dim", self.dim),
            ("heads", self.heads),
            ("kv-heads", self.kv_heads),
            ("ff", self.ff),
            ("ctx", self.ctx),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
            if v > u32::MAX as u64 {
                return bad(format!("{name} {v} is too large"));
            }
        }
        if self.heads % self.kv_heads != 0 {
            return bad(format!(
                "heads ({}) must be a multiple of kv-heads ({})",
                self.heads, self.kv_heads
            ));
        }
        let hd = self.head_dim();
        if self.head_dim.is_none() && self.dim % self.heads != 0 {
            return bad(format!(
                "dim ({}) is not a multiple of heads ({}); set a head dim",
                self.dim, self.heads
            ));
        }
        if hd == 0 || hd % 2 != 0 {
            return bad(format!(
                "head dim {hd} must be even and at least 2 (RoPE rotates pairs)"
            ));
        }
        if self.vocab < self.arch.min_vocab() {
            return bad(format!(
                "vocab {} is below the {} tokens the {} tokenizer needs",
                self.vocab,
                self.arch.min_vocab(),
                self.arch
            ));
        }
        if self.vocab > i32::MAX as u64 {
            return bad(format!("vocab {} is too large", self.vocab));
        }
        if self.arch == SynthArch::Gemma3 && self.sliding_window == 0 {
            return bad("sliding window must be at least 1".into());
        }
        for ty in [self.ty, self.embd_ty] {
            if !ty.is_supported() {
                return bad(format!(
                    "tensor type {ty} is not one the engine computes with ({})",
                    GgmlType::SUPPORTED.map(|t| t.name()).join(", ")
                ));
            }
        }
        let mut total = 0u64;
        for t in self.tensors() {
            let Some(size) = t.byte_size() else {
                return bad(format!(
                    "{}: rows of {} are not a whole number of {}-element {} blocks",
                    t.name,
                    t.dims[0],
                    t.ty.block_size(),
                    t.ty
                ));
            };
            total = match total.checked_add(size) {
                Some(n) => n,
                None => return bad("the model is too large".into()),
            };
        }
        Ok(())
    }

    /// The tokenizer the file carries.
    pub fn vocab(&self) -> Result<Vocab, SynthError> {
        let v = if self.arch.uses_sentencepiece() {
            vocab::sentencepiece(self.vocab)
        } else {
            vocab::gpt2(self.vocab)
        };
        v.map_err(SynthError::Invalid)
    }

    /// A writer holding every metadata key of the file (no tensors).
    pub fn metadata(&self) -> Result<GgufWriter, SynthError> {
        let vocab = self.vocab()?;
        let a = self.arch.name();
        let k = |key: &str| format!("{a}.{key}");
        let u32_of = |v: u64| v as u32; // validate() bounds every size by u32::MAX
        let mut w = GgufWriter::new();
        w.set_str("general.architecture", a)
            .set_str("general.type", "model")
            .set_str(
                "general.name",
                &format!("synthetic {a} {}x{} {}", self.layers, self.dim, self.ty),
            )
            .set_u32("general.quantization_version", 2);
        if let Some(ft) = file_type_for(self.ty) {
            w.set_u32("general.file_type", ft);
        }
        w.set_u32(&k("context_length"), u32_of(self.ctx))
            .set_u32(&k("embedding_length"), u32_of(self.dim))
            .set_u32(&k("block_count"), self.layers)
            .set_u32(&k("feed_forward_length"), u32_of(self.ff))
            .set_u32(&k("attention.head_count"), u32_of(self.heads))
            .set_u32(&k("attention.head_count_kv"), u32_of(self.kv_heads));
        let hd = u32_of(self.head_dim());
        match self.arch {
            SynthArch::Llama => {
                w.set_f32(&k("rope.freq_base"), 10_000.0)
                    .set_f32(&k("attention.layer_norm_rms_epsilon"), 1e-5)
                    .set_u32(&k("vocab_size"), u32_of(self.vocab))
                    .set_u32(&k("rope.dimension_count"), hd);
                if self.head_dim.is_some_and(|h| h != self.dim / self.heads) {
                    w.set_u32(&k("attention.key_length"), hd)
                        .set_u32(&k("attention.value_length"), hd);
                }
            }
            SynthArch::Qwen2 => {
                w.set_f32(&k("rope.freq_base"), 1_000_000.0)
                    .set_f32(&k("attention.layer_norm_rms_epsilon"), 1e-6);
                if self.head_dim.is_some_and(|h| h != self.dim / self.heads) {
                    w.set_u32(&k("attention.key_length"), hd)
                        .set_u32(&k("attention.value_length"), hd);
                }
            }
            SynthArch::Gemma3 => {
                w.set_f32(&k("rope.freq_base"), 1_000_000.0)
                    .set_f32(&k("attention.layer_norm_rms_epsilon"), 1e-6)
                    .set_u32(&k("attention.key_length"), hd)
                    .set_u32(&k("attention.value_length"), hd)
                    .set_u32(&k("attention.sliding_window"), u32_of(self.sliding_window));
            }
        }
        w.set_str("tokenizer.ggml.model", vocab.model);
        if let Some(pre) = vocab.pre {
            w.set_str("tokenizer.ggml.pre", pre);
        }
        w.set(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(vocab.tokens)),
        )
        .set(
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vocab.token_types)),
        );
        if let Some(s) = vocab.scores {
            w.set("tokenizer.ggml.scores", Value::Array(Array::F32(s)));
        }
        if let Some(m) = vocab.merges {
            w.set("tokenizer.ggml.merges", Value::Array(Array::String(m)));
        }
        w.set_u32("tokenizer.ggml.bos_token_id", vocab.bos)
            .set_u32("tokenizer.ggml.eos_token_id", vocab.eos);
        if let Some(u) = vocab.unk {
            w.set_u32("tokenizer.ggml.unknown_token_id", u);
        }
        if let Some(p) = vocab.pad {
            w.set_u32("tokenizer.ggml.padding_token_id", p);
        }
        w.set_bool("tokenizer.ggml.add_bos_token", vocab.add_bos)
            .set_bool("tokenizer.ggml.add_eos_token", false)
            .set_bool("tokenizer.ggml.add_space_prefix", false)
            .set_str("tokenizer.chat_template", vocab.chat_template);
        Ok(w)
    }

    /// Write the whole file to `out`; returns its length.
    pub fn write(&self, out: &mut dyn Write) -> Result<u64, SynthError> {
        self.validate()?;
        let w = self.metadata()?;
        let layouts = self.tensors();
        let seed = self.seed;
        w.write_streaming(&layouts, out, &mut |i, t, out| {
            let init = if t.name.ends_with("norm.weight") {
                Init::Norm
            } else {
                Init::Normal(0.02)
            };
            let rows = t.dims[1..].iter().product();
            write_random(
                t.ty,
                t.dims[0],
                rows,
                init,
                &mut tensor_rng(seed, i as u64),
                out,
            )
        })
        .map_err(|source| SynthError::Io {
            path: PathBuf::from("<output>"),
            source,
        })
    }
}

/// The whole file in memory (small models).
pub fn to_bytes(spec: &SynthSpec) -> Result<Vec<u8>, SynthError> {
    let mut out = Vec::new();
    spec.write(&mut out)?;
    Ok(out)
}

/// Write the model to `path`, streaming tensor by tensor, so models larger
/// than memory work. A partial file is removed on error. Returns its length.
pub fn write_synthetic_model(spec: &SynthSpec, path: &Path) -> Result<u64, SynthError> {
    spec.validate()?;
    let io_err = |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(io_err)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let result = spec
        .write(&mut out)
        .and_then(|n| out.flush().map(|_| n).map_err(io_err));
    match result {
        Ok(n) => Ok(n),
        Err(e) => {
            drop(out);
            let _ = fs::remove_file(path);
            Err(match e {
                SynthError::Io { source, .. } => io_err(source),
                e => e,
            })
        }
    }
}

#[cfg(test)]
mod tests;
