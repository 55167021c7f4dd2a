//! A GGUF file mapped into memory: the parsed header plus the mmap it
//! points into. Tensor bytes are borrowed from the map, never copied.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::reader::{Gguf, GgufError, TensorInfo};

#[derive(Debug, thiserror::Error)]
pub enum GgufFileError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: GgufError },
}

/// An mmapped, validated GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    map: Mmap,
    pub header: Gguf,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile, GgufFileError> {
        let io = |source| GgufFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // Safety: the model store never rewrites a staged file in place
        // (staging writes a temp file and renames), so the mapping stays valid.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = Gguf::parse(&map).map_err(|source| GgufFileError::Format {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            header,
        })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A tensor's info and bytes by name.
    pub fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let t = self.header.tensor(name)?;
        Some((t, self.header.tensor_data(&self.map, t)))
    }
}
