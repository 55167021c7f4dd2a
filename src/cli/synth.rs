//! `llorchd models synth`: write a synthetic model GGUF.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use llorchd::gguf::GgmlType;
use llorchd::model::synth::{write_synthetic_model, SynthArch, SynthError, SynthSpec};

use super::{usage, Context, Run};

fn parse_type(s: &str) -> Result<GgmlType, String> {
    GgmlType::from_name(s)
        .filter(|t| t.is_supported())
        .ok_or_else(|| {
            format!(
                "unknown or unsupported tensor type {s:?} (one of {})",
                GgmlType::SUPPORTED.map(|t| t.name()).join(", ")
            )
        })
}

/// Defaults are `SynthSpec::tiny`: a 2-layer, 256-wide model.
#[derive(Debug, Args)]
pub struct Synth {
    /// Architecture: llama, qwen2 or gemma3.
    #[arg(long, default_value = "llama")]
    arch: SynthArch,
    /// Transformer blocks.
    #[arg(long, default_value_t = 2)]
    layers: u32,
    /// Embedding length.
    #[arg(long, default_value_t = 256)]
    dim: u64,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: u64,
    /// Key/value heads (heads must be a multiple).
    #[arg(long, default_value_t = 2)]
    kv_heads: u64,
    /// Per-head dimension (default: dim / heads).
    #[arg(long)]
    head_dim: Option<u64>,
    /// Feed-forward length.
    #[arg(long, default_value_t = 512)]
    ff: u64,
    /// Vocabulary size (at least 259 for llama/qwen2, 357 for gemma3).
    #[arg(long, default_value_t = 512)]
    vocab: u64,
    /// Context length the model declares.
    #[arg(long, default_value_t = 512)]
    ctx: u64,
    /// Tensor type of the layer matrices (norms stay F32).
    #[arg(long = "type", default_value = "Q8_0", value_parser = parse_type)]
    ty: GgmlType,
    /// Tensor type of token_embd and output (default: --type).
    #[arg(long, value_parser = parse_type)]
    embd_type: Option<GgmlType>,
    /// Leave out output.weight: the output projection reuses token_embd.
    #[arg(long)]
    tied: bool,
    /// Gemma3 only: sliding-window length of the local layers.
    #[arg(long, default_value_t = 64)]
    sliding_window: u64,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the GGUF file.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

impl Run for Synth {
    fn run(self, _ctx: &Context) -> anyhow::Result<ExitCode> {
        let spec = SynthSpec {
            arch: self.arch,
            layers: self.layers,
            dim: self.dim,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            ff: self.ff,
            vocab: self.vocab,
            ctx: self.ctx,
            ty: self.ty,
            embd_ty: self.embd_type.unwrap_or(self.ty),
            tied: self.tied,
            sliding_window: self.sliding_window,
            seed: self.seed,
        };
        let n = write_synthetic_model(&spec, &self.out).map_err(|e| match e {
            SynthError::Invalid(_) => usage(e.to_string()),
            e => e.into(),
        })?;
        println!(
            "wrote {} ({} bytes): {} {} layers, dim {}, {} tensors, vocab {}",
            self.out.display(),
            n,
            spec.arch,
            spec.layers,
            spec.dim,
            spec.tensors().len(),
            spec.vocab
        );
        Ok(ExitCode::SUCCESS)
    }
}
