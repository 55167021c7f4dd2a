//! The model's tensors, as typed views into the mmapped GGUF file. Shapes
//! and types are checked once here, so the forward pass can trust them.

use std::sync::Arc;

use crate::gguf::{GgmlType, GgufFile};

use super::hparams::{Arch, HParams};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WeightsError {
    #[error("missing tensor {0}")]
    Missing(String),
    #[error("tensor {name}: shape {got:?}, expected {want:?}")]
    Shape {
        name: String,
        got: Vec<u64>,
        want: Vec<u64>,
    },
    #[error("tensor {name}: type {ty} is not supported for this use")]
    Type { name: String, ty: GgmlType },
}

/// A 1-D or 2-D tensor in the mmap: `rows` rows of `cols` elements each
/// (GGML order: `cols` is `dims[0]`).
#[derive(Clone, Copy)]
pub struct Tensor {
    pub ty: GgmlType,
    pub cols: usize,
    pub rows: usize,
    ptr: *const u8,
    len: usize,
}

// Safety: a Tensor points into an immutable mmap that the owning
// `Weights` keeps alive (it holds the `Arc<GgufFile>`).
unsafe impl Send for Tensor {}
unsafe impl Sync for Tensor {}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {}x{})", self.ty, self.rows, self.cols)
    }
}

impl Tensor {
    pub fn data(&self) -> &[u8] {
        // Safety: see the Send/Sync note; ptr/len came from a checked slice.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn row_bytes(&self) -> usize {
        self.len / self.rows.max(1)
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data()[r * rb..(r + 1) * rb]
    }

    /// An F32 tensor's elements. Only valid for `ty == F32` (checked at load).
    pub fn f32s(&self) -> &[f32] {
        debug_assert_eq!(self.ty, GgmlType::F32);
        let d = self.data();
        // Tensor data offsets are aligned (GGUF alignment >= 32 is checked by
        // the reader only as a power of two, so check here too).
        let (pre, mid, post) = unsafe { d.align_to::<f32>() };
        assert!(pre.is_empty() && post.is_empty(), "misaligned F32 tensor");
        mid
    }
}

#[derive(Debug)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub bq: Option<Tensor>,
    pub bk: Option<Tensor>,
    pub bv: Option<Tensor>,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub post_attn_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub ffn_gate: Tensor,
    pub ffn_up: Tensor,
    pub ffn_down: Tensor,
    pub post_ffn_norm: Option<Tensor>,
}

#[derive(Debug)]
pub struct Weights {
    pub tok_embd: Tensor,
    pub output_norm: Tensor,
    /// The LM head; the token embedding when the model ties them.
    pub output: Tensor,
    /// Llama 3 RoPE frequency factors (`rope_freqs.weight`).
    pub rope_freqs: Option<Tensor>,
    pub layers: Vec<LayerWeights>,
    /// Keeps the mmap alive for every `Tensor` above.
    _file: Arc<GgufFile>,
}

struct Loader<'a> {
    file: &'a GgufFile,
}

impl Loader<'_> {
    fn get(&self, name: &str, want: &[usize]) -> Result<Tensor, WeightsError> {
        self.opt(name, want)?
            .ok_or_else(|| WeightsError::Missing(name.to_string()))
    }

    fn opt(&self, name: &str, want: &[usize]) -> Result<Option<Tensor>, WeightsError> {
        let Some((info, data)) = self.file.tensor(name) else {
            return Ok(None);
        };
        let got: Vec<u64> = info.dims.clone();
        let mut norm_got = got.clone();
        while norm_got.len() > want.len() && norm_got.last() == Some(&1) {
            norm_got.pop();
        }
        let want_u: Vec<u64> = want.iter().map(|&d| d as u64).collect();
        if norm_got != want_u {
            return Err(WeightsError::Shape {
                name: name.into(),
                got,
                want: want_u,
            });
        }
        if !info.ty.is_supported() {
            return Err(WeightsError::Type {
                name: name.into(),
                ty: info.ty,
            });
        }
        let cols = want[0];
        let rows = want.get(1).copied().unwrap_or(1);
        Ok(Some(Tensor {
            ty: info.ty,
            cols,
            rows,
            ptr: data.as_ptr(),
            len: data.len(),
        }))
    }

    /// A norm or bias vector: must be F32.
    fn vec_f32(&self, name: &str, n: usize) -> Result<Option<Tensor>, WeightsError> {
        match self.opt(name, &[n])? {
            Some(t) if t.ty != GgmlType::F32 => Err(WeightsError::Type {
                name: name.into(),
                ty: t.ty,
            }),
            other => Ok(other),
        }
    }

    fn req_vec_f32(&self, name: &str, n: usize) -> Result<Tensor, WeightsError> {
        self.vec_f32(name, n)?
            .ok_or_else(|| WeightsError::Missing(name.to_string()))
    }
}

impl Weights {
    pub fn load(file: Arc<GgufFile>, hp: &HParams) -> Result<Weights, WeightsError> {
        let l = Loader { file: &file };
        let (e, q, kv, ff, hd) = (hp.n_embd, hp.q_dim(), hp.kv_dim(), hp.n_ff, hp.head_dim);
        let tok_embd = l.get("token_embd.weight", &[e, hp.n_vocab])?;
        let output_norm = l.req_vec_f32("output_norm.weight", e)?;
        let output = l
            .opt("output.weight", &[e, hp.n_vocab])?
            .unwrap_or(tok_embd);
        let rope_freqs = l.vec_f32("rope_freqs.weight", hp.n_rot / 2)?;
        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let gemma = hp.arch == Arch::Gemma3;
            let lw = LayerWeights {
                attn_norm: l.req_vec_f32(&n("attn_norm.weight"), e)?,
                wq: l.get(&n("attn_q.weight"), &[e, q])?,
                wk: l.get(&n("attn_k.weight"), &[e, kv])?,
                wv: l.get(&n("attn_v.weight"), &[e, kv])?,
                wo: l.get(&n("attn_output.weight"), &[q, e])?,
                bq: l.vec_f32(&n("attn_q.bias"), q)?,
                bk: l.vec_f32(&n("attn_k.bias"), kv)?,
                bv: l.vec_f32(&n("attn_v.bias"), kv)?,
                q_norm: if gemma {
                    Some(l.req_vec_f32(&n("attn_q_norm.weight"), hd)?)
                } else {
                    None
                },
                k_norm: if gemma {
                    Some(l.req_vec_f32(&n("attn_k_norm.weight"), hd)?)
                } else {
                    None
                },
                post_attn_norm: if gemma {
                    Some(l.req_vec_f32(&n("post_attention_norm.weight"), e)?)
                } else {
                    None
                },
                ffn_norm: l.req_vec_f32(&n("ffn_norm.weight"), e)?,
                ffn_gate: l.get(&n("ffn_gate.weight"), &[e, ff])?,
                ffn_up: l.get(&n("ffn_up.weight"), &[e, ff])?,
                ffn_down: l.get(&n("ffn_down.weight"), &[ff, e])?,
                post_ffn_norm: if gemma {
                    Some(l.req_vec_f32(&n("post_ffw_norm.weight"), e)?)
                } else {
                    None
                },
            };
            if hp.arch == Arch::Qwen2 && (lw.bq.is_none() || lw.bk.is_none() || lw.bv.is_none()) {
                return Err(WeightsError::Missing(n("attn_q/k/v.bias")));
            }
            layers.push(lw);
        }
        Ok(Weights {
            tok_embd,
            output_norm,
            output,
            rope_freqs,
            layers,
            _file: file,
        })
    }
}
