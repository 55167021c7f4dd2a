//! What a GGUF file says about itself, read from its well-known metadata keys
//! (`general.*`, `<arch>.*`, `tokenizer.ggml.*`): what `models inspect` shows
//! and what the catalog records. Only reads keys; interprets no weights.

use serde::Serialize;

use super::reader::Gguf;
use super::types::GgmlType;

/// A summary of one GGUF file. Fields the file does not carry are `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GgufSummary {
    pub version: u32,
    pub architecture: Option<String>,
    pub name: Option<String>,
    /// `general.file_type` as llama.cpp names it (e.g. `Q4_K_M`).
    pub file_type: Option<String>,
    /// Elements over all tensors.
    pub parameter_count: u64,
    pub context_length: Option<u64>,
    pub block_count: Option<u64>,
    pub embedding_length: Option<u64>,
    pub feed_forward_length: Option<u64>,
    pub head_count: Option<u64>,
    pub head_count_kv: Option<u64>,
    pub key_length: Option<u64>,
    pub value_length: Option<u64>,
    pub sliding_window: Option<u64>,
    pub vocab_size: Option<u64>,
    pub tokenizer_model: Option<String>,
    pub tokenizer_pre: Option<String>,
    pub add_bos_token: Option<bool>,
    pub has_chat_template: bool,
    pub tensor_count: usize,
    /// Tensor types with how many tensors use each, most common first.
    pub tensor_types: Vec<TypeCount>,
    pub alignment: u64,
    pub data_offset: u64,
    pub file_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeCount {
    #[serde(rename = "type")]
    pub ty: String,
    pub count: usize,
}

impl GgufSummary {
    pub fn of(g: &Gguf) -> GgufSummary {
        let arch = g.architecture().map(str::to_string);
        // Per-architecture keys are `<arch>.<key>`; a file without an
        // architecture has none of them.
        let ak = |key: &str| -> Option<u64> {
            arch.as_deref()
                .and_then(|a| g.get_u64(&format!("{a}.{key}")))
        };
        // head_count_kv may be an array (one per layer) in some files; take
        // the first, which is what a uniform model has everywhere.
        let kv_heads = ak("attention.head_count_kv").or_else(|| {
            let a = arch.as_deref()?;
            g.get_array(&format!("{a}.attention.head_count_kv"))?
                .as_i64s()?
                .first()
                .and_then(|&v| u64::try_from(v).ok())
        });
        let vocab_size = g
            .get_array("tokenizer.ggml.tokens")
            .map(|a| a.len() as u64)
            .or_else(|| ak("vocab_size"));
        GgufSummary {
            version: g.version,
            name: g.get_str("general.name").map(str::to_string),
            file_type: g.get_u64("general.file_type").map(|ft| {
                file_type_name(ft).map_or_else(|| format!("unknown ({ft})"), str::to_string)
            }),
            parameter_count: g.parameter_count(),
            context_length: ak("context_length"),
            block_count: ak("block_count"),
            embedding_length: ak("embedding_length"),
            feed_forward_length: ak("feed_forward_length"),
            head_count: ak("attention.head_count"),
            head_count_kv: kv_heads,
            key_length: ak("attention.key_length"),
            value_length: ak("attention.value_length"),
            sliding_window: ak("attention.sliding_window"),
            vocab_size,
            tokenizer_model: g.get_str("tokenizer.ggml.model").map(str::to_string),
            tokenizer_pre: g.get_str("tokenizer.ggml.pre").map(str::to_string),
            add_bos_token: g.get_bool("tokenizer.ggml.add_bos_token"),
            has_chat_template: g.get_str("tokenizer.chat_template").is_some(),
            tensor_count: g.tensors.len(),
            tensor_types: g
                .tensor_type_counts()
                .into_iter()
                .map(|(t, count)| TypeCount {
                    ty: t.name().to_string(),
                    count,
                })
                .collect(),
            alignment: g.alignment,
            data_offset: g.data_offset,
            file_bytes: g.file_len,
            architecture: arch,
        }
    }

    /// Tensor types and counts, most common first: `Q4_1 (210), F32 (61)`.
    pub fn quantization(&self) -> String {
        if self.tensor_types.is_empty() {
            return "none".into();
        }
        self.tensor_types
            .iter()
            .map(|t| format!("{} ({})", t.ty, t.count))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Types a tensor of this file uses that the engine cannot compute with.
    pub fn unsupported_types(&self) -> Vec<&str> {
        self.tensor_types
            .iter()
            .filter(|t| GgmlType::from_name(&t.ty).is_none_or(|ty| !ty.is_supported()))
            .map(|t| t.ty.as_str())
            .collect()
    }
}

/// llama.cpp's name for a `general.file_type` value (its `llama_ftype`).
pub fn file_type_name(ft: u64) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

/// The `general.file_type` value that names a file whose matrices are all of
/// one type (what a quantizer writes for a uniform model).
pub fn file_type_for(ty: GgmlType) -> Option<u32> {
    use GgmlType::*;
    Some(match ty {
        F32 => 0,
        F16 => 1,
        Q4_0 => 2,
        Q4_1 => 3,
        Q8_0 => 7,
        Q5_0 => 8,
        Q5_1 => 9,
        Q2_K => 10,
        Q3_K => 12,
        Q4_K => 15,
        Q5_K => 17,
        Q6_K => 18,
        BF16 => 32,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::reader::{Array, Value};
    use crate::gguf::writer::GgufWriter;

    #[test]
    fn reads_arch_prefixed_keys_and_counts_types() {
        let mut w = GgufWriter::new();
        w.set_str("general.architecture", "qwen2")
            .set_u32("general.file_type", 15)
            .set_u32("qwen2.context_length", 4096)
            .set_u32("qwen2.block_count", 2)
            .set_u32("qwen2.attention.head_count", 8)
            .set(
                "qwen2.attention.head_count_kv",
                Value::Array(Array::U32(vec![2, 2])),
            )
            .set(
                "tokenizer.ggml.tokens",
                Value::Array(Array::String(vec!["a".into(); 5])),
            )
            .set_str("tokenizer.ggml.model", "gpt2");
        w.add_tensor("a", &[32], GgmlType::F32, vec![0; 128]);
        w.add_tensor("b", &[32], GgmlType::F32, vec![0; 128]);
        w.add_tensor("c", &[256], GgmlType::Q4_K, vec![0; 144]);
        let g = Gguf::parse(&w.to_bytes()).unwrap();
        let s = GgufSummary::of(&g);
        assert_eq!(s.architecture.as_deref(), Some("qwen2"));
        assert_eq!(s.file_type.as_deref(), Some("Q4_K_M"));
        assert_eq!(s.context_length, Some(4096));
        assert_eq!(s.block_count, Some(2));
        assert_eq!(s.head_count, Some(8));
        assert_eq!(s.head_count_kv, Some(2));
        assert_eq!(s.vocab_size, Some(5));
        assert_eq!(s.tokenizer_model.as_deref(), Some("gpt2"));
        assert_eq!(s.tensor_count, 3);
        assert_eq!(s.parameter_count, 32 + 32 + 256);
        assert_eq!(s.quantization(), "F32 (2), Q4_K (1)");
        assert!(s.unsupported_types().is_empty());
    }

    #[test]
    fn file_type_names_round_trip_for_uniform_types() {
        for t in GgmlType::SUPPORTED {
            let ft = file_type_for(t).unwrap();
            let name = file_type_name(ft as u64).unwrap();
            assert!(name.starts_with(t.name()), "{t}: {name}");
        }
    }
}
