//! GGUF writer: builds files for tests, fuzz seeds and `llorchd models synth`.

use std::io::{self, Write};

use super::reader::{Array, Value, DEFAULT_ALIGNMENT};
use super::types::GgmlType;

/// A tensor to write: raw bytes already in the GGML layout of `ty`.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

/// An in-memory GGUF file under construction.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorSpec>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::String(v) => v.iter().for_each(|s| put_string(out, s)),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(&v.value_type().id().to_le_bytes());
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::Bool(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => put_array(out, a),
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set a metadata value, replacing an earlier one with the same key.
    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key.to_string(), value));
        }
        self
    }

    pub fn set_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.set(key, Value::String(v.to_string()))
    }

    pub fn set_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.set(key, Value::U32(v))
    }

    pub fn set_f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.set(key, Value::F32(v))
    }

    pub fn set_bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.set(key, Value::Bool(v))
    }

    /// Add a tensor. Panics if `data` does not match `dims` and `ty`: the
    /// writer is for building valid files (corrupt ones are made by editing
    /// the bytes afterwards).
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> &mut Self {
        let n: u64 = dims.iter().product();
        let expect = ty.row_bytes(dims[0]).expect("row length fits blocks") * (n / dims[0].max(1));
        assert_eq!(data.len() as u64, expect, "tensor {name}: data size");
        self.tensors.push(TensorSpec {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            data,
        });
        self
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        let mut meta = self.metadata.clone();
        if self.alignment != DEFAULT_ALIGNMENT
            && !meta.iter().any(|(k, _)| k == "general.alignment")
        {
            meta.push((
                "general.alignment".into(),
                Value::U32(self.alignment as u32),
            ));
        }
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in &meta {
            put_string(&mut out, k);
            put_value(&mut out, v);
        }
        let align = self.alignment as usize;
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            offsets.push(offset);
            offset = (offset + t.data.len()).next_multiple_of(align);
        }
        for (t, off) in self.tensors.iter().zip(&offsets) {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&(*off as u64).to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(align), 0);
        let data_start = out.len();
        for (t, off) in self.tensors.iter().zip(&offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }

    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::reader::{Gguf, GgufError};

    fn sample() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.set_str("general.architecture", "llama")
            .set_u32("llama.context_length", 128)
            .set_f32("llama.rope.freq_base", 10000.0)
            .set_bool("tokenizer.ggml.add_bos_token", true)
            .set(
                "tokenizer.ggml.tokens",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            )
            .set(
                "nested",
                Value::Array(Array::Array(vec![Array::I32(vec![1, -2])])),
            );
        w.add_tensor("a", &[4, 2], GgmlType::F32, vec![0u8; 32]);
        w.add_tensor("b", &[32], GgmlType::Q8_0, vec![1u8; 34]);
        w
    }

    #[test]
    fn round_trip() {
        let bytes = sample().to_bytes();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.get_u64("llama.context_length"), Some(128));
        assert_eq!(g.get_f64("llama.rope.freq_base"), Some(10000.0));
        assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(true));
        assert_eq!(g.get_array("tokenizer.ggml.tokens").unwrap().len(), 2);
        let b = g.tensor("b").unwrap();
        assert_eq!(b.ty, GgmlType::Q8_0);
        assert_eq!(g.tensor_data(&bytes, b), &[1u8; 34][..]);
        assert_eq!(g.parameter_count(), 8 + 32);
        assert_eq!(g.tensor_data(&bytes, g.tensor("a").unwrap()).len(), 32);
    }

    #[test]
    fn version_2_parses() {
        let mut w = sample();
        w.version = 2;
        assert_eq!(Gguf::parse(&w.to_bytes()).unwrap().version, 2);
    }

    #[test]
    fn custom_alignment_is_honoured() {
        let mut w = sample();
        w.alignment = 64;
        let bytes = w.to_bytes();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!(g.alignment, 64);
        assert_eq!(g.data_offset % 64, 0);
        assert!(g
            .tensors
            .iter()
            .all(|t| (t.offset - g.data_offset) % 64 == 0));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            let r = Gguf::parse(&bytes[..cut]);
            assert!(r.is_err(), "truncated at {cut} parsed");
        }
    }

    #[test]
    fn overlapping_tensors_are_refused() {
        let mut w = GgufWriter::new();
        w.add_tensor("a", &[64], GgmlType::F32, vec![0u8; 256]);
        w.add_tensor("b", &[8], GgmlType::F32, vec![0u8; 32]);
        let mut bytes = w.to_bytes();
        // Point b's offset (last 8 bytes of its info) at a's data.
        let needle = 256u64.to_le_bytes();
        let pos = bytes
            .windows(8)
            .rposition(|w| w == needle)
            .expect("b's offset in the header");
        bytes[pos..pos + 8].copy_from_slice(&32u64.to_le_bytes());
        assert!(matches!(
            Gguf::parse(&bytes),
            Err(GgufError::OverlappingTensors { .. })
        ));
    }
}
