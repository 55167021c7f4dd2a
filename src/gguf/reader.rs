//! GGUF parser over a byte slice (normally an mmap). Knows nothing of models.
//!
//! Every count, length, offset and size is checked against the input with
//! overflow-safe arithmetic before use, and allocations are bounded by the
//! input length, so no input can panic, hang or exhaust memory.

use std::collections::HashMap;

use super::types::GgmlType;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// GGML tensors have at most four dimensions.
pub const MAX_DIMS: u32 = 4;
/// Arrays nested deeper than this are refused (real files nest at most once).
pub const MAX_ARRAY_DEPTH: u32 = 4;
/// ggml keeps tensor names in a 64-byte buffer with a terminating NUL.
pub const MAX_TENSOR_NAME: usize = 63;
/// Up-front capacity for vectors sized by a count read from the file. Counts
/// are already checked against the bytes left, but a corrupt count in a
/// multi-gigabyte file could still ask for gigabytes at once: beyond this,
/// vectors grow only as elements are actually read.
const MAX_PREALLOC: usize = 4096;

fn prealloc(n: u64) -> usize {
    (n as usize).min(MAX_PREALLOC)
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("file truncated: {what} needs {need} bytes at offset {at}, file has {len}; the file is incomplete or corrupt")]
    Truncated {
        what: String,
        at: u64,
        need: u64,
        len: u64,
    },
    #[error("{what}: count {count} is impossible for a file of {len} bytes (corrupt file)")]
    AbsurdCount { what: String, count: u64, len: u64 },
    #[error("{what}: invalid UTF-8")]
    BadUtf8 { what: String },
    #[error("metadata key {key:?}: unknown value type {ty}")]
    UnknownValueType { key: String, ty: u32 },
    #[error("metadata key {key:?}: arrays nested deeper than {MAX_ARRAY_DEPTH}")]
    NestingTooDeep { key: String },
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("metadata key #{0} is empty")]
    EmptyKey(u64),
    #[error("tensor #{index}: name is {len} bytes long (at most {MAX_TENSOR_NAME})")]
    TensorNameTooLong { index: u64, len: usize },
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("general.alignment {0} must be a non-zero power of two")]
    BadAlignment(u64),
    #[error("metadata key general.alignment has type {0}, expected u32")]
    BadAlignmentType(&'static str),
    #[error("tensor {name:?}: unknown tensor type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor {name:?}: {n_dims} dimensions (at most {MAX_DIMS})")]
    TooManyDims { name: String, n_dims: u32 },
    #[error("tensor {name:?}: bad shape {dims:?}: {why}")]
    BadShape {
        name: String,
        dims: Vec<u64>,
        why: String,
    },
    #[error("tensor {name:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor {name:?}: data [{start}, {end}) lies outside the data section [{data_start}, {file_len}); the file is corrupt or incomplete")]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        data_start: u64,
        file_len: u64,
    },
    #[error("tensors {a:?} and {b:?} overlap")]
    OverlappingTensors { a: String, b: String },
}

/// The type tag of a metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        use ValueType::*;
        match self {
            U8 => 0,
            I8 => 1,
            U16 => 2,
            I16 => 3,
            U32 => 4,
            I32 => 5,
            F32 => 6,
            Bool => 7,
            String => 8,
            Array => 9,
            U64 => 10,
            I64 => 11,
            F64 => 12,
        }
    }

    /// Encoded size of one scalar of this type; strings and arrays report
    /// their smallest possible encoding (an empty one).
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }

    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

/// A metadata value. Arrays are typed so that memory stays proportional to
/// the bytes they were read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    /// Integer elements widened to i64 (None for non-integer arrays).
    pub fn as_i64s(&self) -> Option<Vec<i64>> {
        Some(match self {
            Array::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Array::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Array::U16(v) => v.iter().map(|&x| x as i64).collect(),
            Array::I16(v) => v.iter().map(|&x| x as i64).collect(),
            Array::U32(v) => v.iter().map(|&x| x as i64).collect(),
            Array::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Array::U64(v) => v.iter().map(|&x| x as i64).collect(),
            Array::I64(v) => v.clone(),
            _ => return None,
        })
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value that fits in u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I64(v) => Some(v),
            _ => self.as_u64().map(|v| v as i64).or(match *self {
                Value::I8(v) => Some(v as i64),
                Value::I16(v) => Some(v as i64),
                Value::I32(v) => Some(v as i64),
                _ => None,
            }),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short human rendering: scalars in full, arrays summarised.
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) => {
                if s.chars().count() > 60 {
                    format!("{:?}…", s.chars().take(60).collect::<String>())
                } else {
                    format!("{s:?}")
                }
            }
            Value::Array(a) => format!("[{}; {}]", a.elem_type().name(), a.len()),
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
        }
    }
}

/// Where one tensor's data lies, checked against the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGML order: `dims[0]` is the innermost (row length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (`dims[0]`) and number of rows (product of the rest).
    pub fn rows(&self) -> (usize, usize) {
        let n = self.dims.first().copied().unwrap_or(1) as usize;
        let r = self.dims.iter().skip(1).product::<u64>() as usize;
        (n, r)
    }
}

/// A parsed GGUF header: metadata and tensor infos. The tensor data is not
/// copied; [`Gguf::tensor_data`] slices it out of the same bytes.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Length of the input the header was checked against.
    pub file_len: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn need(&self, n: u64, what: &dyn Fn() -> String) -> Result<(), GgufError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(GgufError::Truncated {
                what: what(),
                at: self.pos as u64,
                need: n,
                len: self.buf.len() as u64,
            });
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        self.need(n, what)?;
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let b = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// A count of items each at least `min_size` bytes long, read and then
    /// checked against what is left of the input.
    fn count(&mut self, min_size: u64, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        let n = self.u64(what)?;
        self.check_count(n, min_size, what)?;
        Ok(n)
    }

    /// `n` items of at least `min_size` bytes must fit in what is left. A
    /// count that could not fit even the whole input is absurd; one that
    /// merely runs past the end means the input is truncated.
    fn check_count(
        &self,
        n: u64,
        min_size: u64,
        what: &dyn Fn() -> String,
    ) -> Result<(), GgufError> {
        match n.checked_mul(min_size) {
            Some(b) if b <= self.remaining() => Ok(()),
            Some(b) if b <= self.buf.len() as u64 => Err(GgufError::Truncated {
                what: what(),
                at: self.pos as u64,
                need: b,
                len: self.buf.len() as u64,
            }),
            _ => Err(GgufError::AbsurdCount {
                what: what(),
                count: n,
                len: self.buf.len() as u64,
            }),
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        let b = self.bytes(n, what)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(GgufError::BadUtf8 { what: what() }),
        }
    }
}

macro_rules! read_vec {
    ($c:expr, $n:expr, $ty:ty, $what:expr) => {{
        let b = $c.bytes($n * std::mem::size_of::<$ty>() as u64, $what)?;
        b.chunks_exact(std::mem::size_of::<$ty>())
            .map(|ch| <$ty>::from_le_bytes(ch.try_into().unwrap()))
            .collect::<Vec<$ty>>()
    }};
}

fn read_scalar(
    c: &mut Cursor,
    ty: ValueType,
    what: &dyn Fn() -> String,
) -> Result<Value, GgufError> {
    Ok(match ty {
        ValueType::U8 => Value::U8(c.array::<1>(what)?[0]),
        ValueType::I8 => Value::I8(c.array::<1>(what)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(what)?)),
        // GGUF bools are one byte; anything but 0/1 is tolerated as true,
        // like ggml does.
        ValueType::Bool => Value::Bool(c.array::<1>(what)?[0] != 0),
        ValueType::String => Value::String(c.string(what)?),
        ValueType::Array => unreachable!("arrays are read by read_array"),
    })
}

fn read_array(c: &mut Cursor, key: &str, depth: u32) -> Result<Array, GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep { key: key.into() });
    }
    let what = || format!("metadata key {key:?} (array)");
    let ty_id = c.u32(&what)?;
    let ty = ValueType::from_id(ty_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.into(),
        ty: ty_id,
    })?;
    let n = c.count(ty.min_size(), &what)?;
    Ok(match ty {
        ValueType::U8 => Array::U8(c.bytes(n, &what)?.to_vec()),
        ValueType::I8 => Array::I8(c.bytes(n, &what)?.iter().map(|&b| b as i8).collect()),
        ValueType::Bool => Array::Bool(c.bytes(n, &what)?.iter().map(|&b| b != 0).collect()),
        ValueType::U16 => Array::U16(read_vec!(c, n, u16, &what)),
        ValueType::I16 => Array::I16(read_vec!(c, n, i16, &what)),
        ValueType::U32 => Array::U32(read_vec!(c, n, u32, &what)),
        ValueType::I32 => Array::I32(read_vec!(c, n, i32, &what)),
        ValueType::F32 => Array::F32(read_vec!(c, n, f32, &what)),
        ValueType::U64 => Array::U64(read_vec!(c, n, u64, &what)),
        ValueType::I64 => Array::I64(read_vec!(c, n, i64, &what)),
        ValueType::F64 => Array::F64(read_vec!(c, n, f64, &what)),
        ValueType::String => {
            let mut v = Vec::with_capacity(prealloc(n));
            for i in 0..n {
                v.push(c.string(&|| format!("metadata key {key:?} element {i}"))?);
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(prealloc(n));
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

impl Gguf {
    /// Parse and validate a whole GGUF file held in `buf`.
    pub fn parse(buf: &[u8]) -> Result<Gguf, GgufError> {
        let mut c = Cursor { buf, pos: 0 };
        let file_len = buf.len() as u64;
        let magic: [u8; 4] = c.array(&|| "magic".into())?;
        if &magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        // The smallest key-value pair is 8 (key) + 4 + 1 bytes; the smallest
        // tensor info is 8 (name) + 4 + 4 + 8 bytes. The tensor count is
        // checked where the tensor infos start, against what is left there.
        let n_tensors = c.u64(&|| "tensor count".into())?;
        let n_kv = c.count(13, &|| "metadata count".into())?;

        let mut metadata = Vec::with_capacity(prealloc(n_kv));
        let mut index = HashMap::with_capacity(prealloc(n_kv));
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata key #{i}"))?;
            if key.is_empty() {
                return Err(GgufError::EmptyKey(i));
            }
            let what = || format!("metadata key {key:?}");
            let ty_id = c.u32(&what)?;
            let ty = ValueType::from_id(ty_id).ok_or_else(|| GgufError::UnknownValueType {
                key: key.clone(),
                ty: ty_id,
            })?;
            let value = if ty == ValueType::Array {
                Value::Array(read_array(&mut c, &key, 1)?)
            } else {
                read_scalar(&mut c, ty, &what)?
            };
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) => *a as u64,
            Some(v) => return Err(GgufError::BadAlignmentType(v.value_type().name())),
        };
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::BadAlignment(alignment));
        }

        struct Raw {
            name: String,
            dims: Vec<u64>,
            ty: GgmlType,
            rel: u64,
        }
        c.check_count(n_tensors, 24, &|| "tensor count".into())?;
        let mut raw = Vec::with_capacity(prealloc(n_tensors));
        let mut tensor_index = HashMap::with_capacity(prealloc(n_tensors));
        for i in 0..n_tensors {
            let name = c.string(&|| format!("tensor #{i} name"))?;
            if name.len() > MAX_TENSOR_NAME {
                return Err(GgufError::TensorNameTooLong {
                    index: i,
                    len: name.len(),
                });
            }
            let what = || format!("tensor {name:?} info");
            let n_dims = c.u32(&what)?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let ty_id = c.u32(&what)?;
            let rel = c.u64(&what)?;
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownTensorType {
                name: name.clone(),
                id: ty_id,
            })?;
            if tensor_index.insert(name.clone(), raw.len()).is_some() {
                return Err(GgufError::DuplicateTensor(name));
            }
            raw.push(Raw {
                name,
                dims,
                ty,
                rel,
            });
        }

        // The data section starts at the next multiple of the alignment.
        let header_end = c.pos as u64;
        let data_offset = header_end
            .checked_next_multiple_of(alignment)
            .ok_or(GgufError::BadAlignment(alignment))?;
        if data_offset > file_len && n_tensors > 0 {
            return Err(GgufError::Truncated {
                what: "padding before the data section".into(),
                at: header_end,
                need: data_offset - header_end,
                len: file_len,
            });
        }

        let mut tensors = Vec::with_capacity(raw.len());
        for r in raw {
            let bad = |why: String| GgufError::BadShape {
                name: r.name.clone(),
                dims: r.dims.clone(),
                why,
            };
            // ggml keeps dimensions and element counts in i64.
            if let Some(d) = r.dims.iter().find(|&&d| d > i64::MAX as u64) {
                return Err(bad(format!(
                    "dimension {d} is negative as a signed 64-bit count"
                )));
            }
            let n_el = r
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| bad("element count overflows".into()))?;
            let inner = r.dims.first().copied().unwrap_or(1);
            let row = r.ty.row_bytes(inner).ok_or_else(|| {
                bad(format!(
                    "row length {inner} is not a multiple of the {} block size {}",
                    r.ty,
                    r.ty.block_size()
                ))
            })?;
            let rows = n_el.checked_div(inner).unwrap_or(0);
            let size = row
                .checked_mul(rows)
                .ok_or_else(|| bad("byte size overflows".into()))?;
            if r.rel % alignment != 0 {
                return Err(GgufError::MisalignedTensor {
                    name: r.name,
                    offset: r.rel,
                    alignment,
                });
            }
            let start = data_offset.checked_add(r.rel);
            let end = start.and_then(|s| s.checked_add(size));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => tensors.push(TensorInfo {
                    name: r.name,
                    dims: r.dims,
                    ty: r.ty,
                    offset: start,
                    size,
                }),
                _ => {
                    return Err(GgufError::TensorOutOfBounds {
                        name: r.name,
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        data_start: data_offset,
                        file_len,
                    })
                }
            }
        }

        // No two tensors may share bytes.
        let mut order: Vec<usize> = (0..tensors.len())
            .filter(|&i| tensors[i].size > 0)
            .collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            if a.offset + a.size > b.offset {
                return Err(GgufError::OverlappingTensors {
                    a: a.name.clone(),
                    b: b.name.clone(),
                });
            }
        }

        Ok(Gguf {
            version,
            metadata,
            index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
            file_len,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Option<&Array> {
        self.get(key).and_then(Value::as_array)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor, sliced from the same buffer that was parsed.
    pub fn tensor_data<'b>(&self, buf: &'b [u8], t: &TensorInfo) -> &'b [u8] {
        assert_eq!(
            buf.len() as u64,
            self.file_len,
            "tensor_data: not the parsed buffer"
        );
        &buf[t.offset as usize..(t.offset + t.size) as usize]
    }

    /// `general.architecture`, if present.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Total elements over all tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::n_elements).sum()
    }

    /// Tensor types with how many tensors use each, most common first.
    pub fn tensor_type_counts(&self) -> Vec<(GgmlType, usize)> {
        let mut m: HashMap<GgmlType, usize> = HashMap::new();
        for t in &self.tensors {
            *m.entry(t.ty).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}
