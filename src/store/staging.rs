//! The file side of staging. A model file is written under a temp name in
//! the models folder (same filesystem, so the final rename is atomic),
//! hashed while it is copied, fsynced, and only then renamed to its final
//! name; the folder is fsynced after the rename. Temp names start with
//! [`TEMP_PREFIX`] and never end in `.gguf`, so nothing takes a half-written
//! file for a model; whatever a crash leaves is swept by [`sweep`].

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::StoreError;

pub(super) const TEMP_PREFIX: &str = ".staging-";
const TEMP_SUFFIX: &str = ".tmp";
const CHUNK: usize = 1 << 20;

/// A temp file in the models folder, deleted on drop unless persisted.
pub(super) struct TempModelFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempModelFile {
    pub(super) fn create(models_dir: &Path, id: &str) -> Result<TempModelFile, StoreError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let path = models_dir.join(format!("{TEMP_PREFIX}{id}-{pid}-{n}{TEMP_SUFFIX}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempModelFile {
                        path,
                        file,
                        persisted: false,
                    })
                }
                // A leftover of an earlier process with the same pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io("create", path)(e)),
            }
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Copy `src` to the end into the file, hashing as it goes; `total` is
    /// only for progress. Returns the bytes written and the hex sha256.
    pub(super) fn fill(
        &mut self,
        src: &mut dyn Read,
        src_name: &str,
        total: u64,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(u64, String), StoreError> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        progress(0, total);
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("read", src_name)(e)),
            };
            hasher.update(&buf[..n]);
            self.file
                .write_all(&buf[..n])
                .map_err(StoreError::io("write", &self.path))?;
            done += n as u64;
            progress(done, total.max(done));
        }
        self.file
            .sync_all()
            .map_err(StoreError::io("fsync", &self.path))?;
        Ok((done, hex::encode(hasher.finalize())))
    }

    /// Rename to `dest` (same folder) and fsync the folder, so that after a
    /// crash the file is either wholly there under its final name or not.
    pub(super) fn persist(mut self, dest: &Path) -> Result<(), StoreError> {
        fs::rename(&self.path, dest).map_err(StoreError::io("rename into", dest))?;
        self.persisted = true;
        if let Some(dir) = dest.parent() {
            sync_dir(dir).map_err(StoreError::io("fsync", dir))?;
        }
        Ok(())
    }
}

impl Drop for TempModelFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Hash a whole file: its length and hex sha256.
pub(super) fn hash_file(path: &Path, progress: &dyn Fn(u64, u64)) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let total = f.metadata()?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    progress(0, total);
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done, total.max(done));
    }
    Ok((done, hex::encode(hasher.finalize())))
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Remove what an interrupted stage or removal left in the models folder:
/// temp files, and `.gguf` files that no catalog entry names (a crash
/// between the rename and the catalog commit, or between deleting an entry
/// and its file). Returns what was removed. Only safe while holding the
/// database open, which excludes every other llorchd process.
pub(super) fn sweep(
    models_dir: &Path,
    referenced: &HashSet<String>,
) -> Result<Vec<PathBuf>, StoreError> {
    let mut removed = Vec::new();
    let entries = fs::read_dir(models_dir).map_err(StoreError::io("list", models_dir))?;
    for entry in entries {
        let entry = entry.map_err(StoreError::io("list", models_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale_temp = name.starts_with(TEMP_PREFIX);
        let orphan = name.ends_with(".gguf") && !referenced.contains(name);
        if (stale_temp || orphan) && entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(models_dir).map_err(StoreError::io("fsync", models_dir))?;
    }
    Ok(removed)
}
