//! The GGUF file format: parsing (over an mmap), writing, and GGML tensor
//! types. Knows nothing of models, tokenizers or HTTP.

pub mod file;
pub mod reader;
pub mod summary;
pub mod types;
pub mod writer;

pub use file::{GgufFile, GgufFileError};
pub use reader::{Array, Gguf, GgufError, TensorInfo, Value, ValueType};
pub use summary::GgufSummary;
pub use types::{GgmlType, QK_K};
pub use writer::{GgufWriter, TensorLayout};

#[cfg(test)]
mod reader_tests;
