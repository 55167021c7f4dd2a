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

    /// Metadata as written: `general.alignment` is added when the alignment
    /// is not the default.
    fn metadata_to_write(&self) -> Vec<(String, Value)> {
        let mut meta = self.metadata.clone();
        if self.alignment != DEFAULT_ALIGNMENT
            && !meta.iter().any(|(k, _)| k == "general.alignment")
        {
            meta.push((
                "general.alignment".into(),
                Value::U32(self.alignment as u32),
            ));
        }
        meta
    }

    /// The header up to the data section (padding included) for tensors of
    /// the given layouts and byte sizes, and each tensor's offset in the
    /// data section.
    fn header(&self, tensors: &[(&str, &[u64], GgmlType, u64)]) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        let meta = self.metadata_to_write();
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in &meta {
            put_string(&mut out, k);
            put_value(&mut out, v);
        }
        let align = self.alignment;
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(tensors.len());
        for &(_, _, _, size) in tensors {
            offsets.push(offset);
            offset = (offset + size).next_multiple_of(align);
        }
        for (&(name, dims, ty, _), off) in tensors.iter().zip(&offsets) {
            put_string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(align as usize), 0);
        (out, offsets)
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let infos: Vec<_> = self
            .tensors
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.dims.as_slice(),
                    t.ty,
                    t.data.len() as u64,
                )
            })
            .collect();
        let (mut out, offsets) = self.header(&infos);
        let data_start = out.len();
        for (t, off) in self.tensors.iter().zip(&offsets) {
            out.resize(data_start + *off as usize, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }

    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&self.to_bytes())
    }

    /// Write a file whose tensors (`self.tensors` is ignored) are given by
    /// layout and produced one at a time by `fill`, so that files larger
    /// than memory can be written. `fill(i, layout, out)` must write exactly
    /// the layout's byte size. Returns the bytes written.
    pub fn write_streaming(
        &self,
        layouts: &[TensorLayout],
        out: &mut dyn Write,
        fill: &mut dyn FnMut(usize, &TensorLayout, &mut dyn Write) -> io::Result<()>,
    ) -> io::Result<u64> {
        let mut infos = Vec::with_capacity(layouts.len());
        for l in layouts {
            let size = l.byte_size().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "tensor {}: shape {:?} is not a whole number of {} blocks",
                        l.name, l.dims, l.ty
                    ),
                )
            })?;
            infos.push((l.name.as_str(), l.dims.as_slice(), l.ty, size));
        }
        let (header, offsets) = self.header(&infos);
        out.write_all(&header)?;
        let mut pos = 0u64;
        for (i, (l, off)) in layouts.iter().zip(&offsets).enumerate() {
            let pad = (off - pos) as usize;
            out.write_all(&vec![0u8; pad])?;
            let mut counted = CountingWriter { inner: out, n: 0 };
            fill(i, l, &mut counted)?;
            let size = infos[i].3;
            if counted.n != size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "tensor {}: wrote {} bytes, layout needs {size}",
                        l.name, counted.n
                    ),
                ));
            }
            pos = off + size;
        }
        Ok(header.len() as u64 + pos)
    }
}

/// A tensor's name, shape and type, without its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorLayout {
    pub name: String,
    /// GGML order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorLayout {
    /// Bytes of data, or None when rows are not whole blocks or it overflows.
    pub fn byte_size(&self) -> Option<u64> {
        let row = *self.dims.first()?;
        let rows = self.dims[1..]
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))?;
        self.ty.row_bytes(row)?.checked_mul(rows)
    }
}

struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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

    #[test]
    fn streaming_writes_the_same_bytes() {
        let w = sample();
        let layouts: Vec<TensorLayout> = w
            .tensors
            .iter()
            .map(|t| TensorLayout {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect();
        let mut out = Vec::new();
        let n = w
            .write_streaming(&layouts, &mut out, &mut |i, _, o| {
                o.write_all(&w.tensors[i].data)
            })
            .unwrap();
        // to_bytes ends at the last tensor's data, like the streaming writer.
        assert_eq!(out, w.to_bytes());
        assert_eq!(n, out.len() as u64);
        // A fill that writes the wrong amount is an error, not a bad file.
        let e = w
            .write_streaming(&layouts, &mut Vec::new(), &mut |_, _, o| {
                o.write_all(&[0; 3])
            })
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
