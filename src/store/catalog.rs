//! The model catalog: which GGUF files are staged, under which ids, with
//! which digest and state. Safe to share between threads (`Catalog: Sync`);
//! redb serialises writers and gives readers snapshots.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, DatabaseError, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::schema::{self, MODELS};
use super::staging::{self, TempModelFile};
use super::{StoreError, DB_FILE, MODELS_DIR};
use crate::config::validate_id;
use crate::gguf::{GgufFile, GgufSummary};

/// Whether a staged model may be given to pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelState {
    Active,
    /// Kept on disk and in the catalog, but not loaded by new pools.
    Retired,
}

impl fmt::Display for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelState::Active => "Active",
            ModelState::Retired => "Retired",
        })
    }
}

impl FromStr for ModelState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "active" => Ok(ModelState::Active),
            "retired" => Ok(ModelState::Retired),
            _ => Err(format!("unknown model state {s:?} (Active or Retired)")),
        }
    }
}

/// One staged model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: String,
    /// Name of the file in the store's models folder.
    pub file_name: String,
    /// Lower-case hex.
    pub sha256: String,
    pub bytes: u64,
    /// `general.architecture`.
    pub architecture: String,
    /// Tensor types with counts, most common first: `Q4_1 (210), F32 (61)`.
    pub quantization: String,
    pub context_length: Option<u64>,
    pub parameter_count: u64,
    pub state: ModelState,
    /// Unix time in milliseconds.
    pub staged_at_ms: u64,
    /// Where it was staged from: the original path or URL.
    pub source: String,
}

impl CatalogEntry {
    pub(super) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a catalog entry always serialises")
    }

    fn from_json(id: &str, b: &[u8]) -> Result<CatalogEntry, StoreError> {
        serde_json::from_slice(b).map_err(|e| StoreError::CorruptEntry {
            id: id.to_string(),
            message: e.to_string(),
        })
    }
}

/// What re-hashing a staged file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Same size and digest as when staged.
    Ok,
    /// The file is gone.
    Missing,
    SizeMismatch {
        expected: u64,
        actual: u64,
    },
    DigestMismatch {
        expected: String,
        actual: String,
    },
}

impl VerifyOutcome {
    pub fn is_ok(&self) -> bool {
        *self == VerifyOutcome::Ok
    }
}

impl fmt::Display for VerifyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyOutcome::Ok => f.write_str("ok"),
            VerifyOutcome::Missing => f.write_str("file missing"),
            VerifyOutcome::SizeMismatch { expected, actual } => {
                write!(f, "size changed: staged {expected} bytes, now {actual}")
            }
            VerifyOutcome::DigestMismatch { expected, actual } => {
                write!(f, "sha256 changed: staged {expected}, now {actual}")
            }
        }
    }
}

/// What to stage, for [`Catalog::stage_reader`].
#[derive(Debug, Clone, Copy)]
pub struct StageRequest<'a> {
    pub id: &'a str,
    /// When given, a different digest aborts the stage.
    pub expect_sha256: Option<&'a str>,
    /// Recorded as the entry's source (a path or URL).
    pub source: &'a str,
    /// Expected length, for progress only (0 when unknown).
    pub total_bytes: u64,
}

/// The catalog over one store directory.
pub struct Catalog {
    dir: PathBuf,
    models_dir: PathBuf,
    db_path: PathBuf,
    db: Arc<Database>,
    /// Ids being staged right now in this process. The database lock keeps
    /// other processes out; this keeps two requests here from racing for
    /// the same final file name.
    staging: Mutex<HashSet<String>>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog").field("dir", &self.dir).finish()
    }
}

/// Releases an id reserved for staging.
struct Reservation<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A model id from a file name: the name without `.gguf`, lower-cased, with
/// every character an id may not hold replaced by `-`, cut to 64.
pub fn derive_model_id(file_name: &str) -> String {
    let stem = match file_name.len().checked_sub(5) {
        Some(i)
            if file_name.is_char_boundary(i) && file_name[i..].eq_ignore_ascii_case(".gguf") =>
        {
            &file_name[..i]
        }
        _ => file_name,
    };
    let mut id: String = stem
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .collect();
    id = id.trim_start_matches('.').to_string();
    id.truncate(64);
    if id.is_empty() {
        id = "model".into();
    }
    id
}

fn check_sha256(s: &str) -> Result<String, StoreError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(StoreError::InvalidSha256(s.to_string()))
    }
}

fn check_id(id: &str) -> Result<(), StoreError> {
    validate_id(id).map_err(|reason| StoreError::InvalidId {
        id: id.to_string(),
        reason,
    })
}

impl Catalog {
    /// Open (creating if needed) the store in `dir`: the models folder, the
    /// database, its schema (migrating an older one), and a sweep of files
    /// an interrupted stage or removal left behind.
    pub fn open(dir: &Path) -> Result<Catalog, StoreError> {
        let models_dir = dir.join(MODELS_DIR);
        fs::create_dir_all(&models_dir).map_err(StoreError::io("create", &models_dir))?;
        let db_path = dir.join(DB_FILE);
        let db = Database::create(&db_path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: db_path.clone(),
            },
            e => StoreError::Database {
                path: db_path.clone(),
                source: Box::new(e.into()),
            },
        })?;
        schema::prepare(&db, &db_path)?;
        let cat = Catalog {
            dir: dir.to_path_buf(),
            models_dir,
            db_path,
            db: Arc::new(db),
            staging: Mutex::new(HashSet::new()),
        };
        let referenced: HashSet<String> = cat.list()?.into_iter().map(|e| e.file_name).collect();
        for p in staging::sweep(&cat.models_dir, &referenced)? {
            tracing::warn!(path = %p.display(), "removed a file left by an interrupted stage or removal");
        }
        Ok(cat)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Where an entry's file lives.
    pub fn model_path(&self, entry: &CatalogEntry) -> PathBuf {
        self.models_dir.join(&entry.file_name)
    }

    /// The database, for other tables of the store (the node registry).
    pub(in crate::store) fn database(&self) -> &Arc<Database> {
        &self.db
    }

    fn db_err<E: Into<redb::Error>>(&self) -> impl Fn(E) -> StoreError + '_ {
        move |e| StoreError::Database {
            path: self.db_path.clone(),
            source: Box::new(e.into()),
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<CatalogEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err())?;
        let t = txn.open_table(MODELS).map_err(self.db_err())?;
        match t.get(id).map_err(self.db_err())? {
            Some(v) => Ok(Some(CatalogEntry::from_json(id, v.value())?)),
            None => Ok(None),
        }
    }

    /// All entries, ordered by id.
    pub fn list(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(self.db_err())?;
        let t = txn.open_table(MODELS).map_err(self.db_err())?;
        let mut out = Vec::with_capacity(t.len().map_err(self.db_err())? as usize);
        for row in t.iter().map_err(self.db_err())? {
            let (k, v) = row.map_err(self.db_err())?;
            out.push(CatalogEntry::from_json(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Stage a file: copy it into the store while hashing it, check the
    /// digest against `expect_sha256`, check that it parses as a GGUF
    /// model, then record it. `id` defaults to one derived from the file
    /// name. On any error the catalog and the models folder are unchanged.
    /// `progress(done, total)` is called as bytes are copied.
    pub fn stage(
        &self,
        src: &Path,
        id: Option<&str>,
        expect_sha256: Option<&str>,
        source: &str,
        progress: &dyn Fn(u64, u64),
    ) -> Result<CatalogEntry, StoreError> {
        let id = match id {
            Some(id) => id.to_string(),
            None => derive_model_id(
                &src.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        };
        // Validate what the caller gave before touching the file.
        check_id(&id)?;
        if let Some(s) = expect_sha256 {
            check_sha256(s)?;
        }
        let mut f = File::open(src).map_err(StoreError::io("open", src))?;
        let meta = f.metadata().map_err(StoreError::io("stat", src))?;
        if !meta.is_file() {
            return Err(StoreError::InvalidModel {
                source_name: src.display().to_string(),
                reason: "not a regular file".into(),
            });
        }
        let req = StageRequest {
            id: &id,
            expect_sha256,
            source,
            total_bytes: meta.len(),
        };
        self.stage_reader(&mut f, &src.display().to_string(), &req, progress)
    }

    /// Stage from any reader (an upload, a download). `src_name` names the
    /// input in errors. Same guarantees as [`Catalog::stage`].
    pub fn stage_reader(
        &self,
        src: &mut dyn Read,
        src_name: &str,
        req: &StageRequest<'_>,
        progress: &dyn Fn(u64, u64),
    ) -> Result<CatalogEntry, StoreError> {
        check_id(req.id)?;
        let expect = req.expect_sha256.map(check_sha256).transpose()?;
        let _reservation = self.reserve(req.id)?;
        if self.get(req.id)?.is_some() {
            return Err(StoreError::AlreadyExists(req.id.to_string()));
        }

        let mut tmp = TempModelFile::create(&self.models_dir, req.id)?;
        let (bytes, sha256) = tmp.fill(src, src_name, req.total_bytes, progress)?;
        if let Some(expected) = expect {
            if expected != sha256 {
                return Err(StoreError::Sha256Mismatch {
                    source_name: src_name.to_string(),
                    expected,
                    actual: sha256,
                });
            }
        }
        let summary = {
            let invalid = |reason: String| StoreError::InvalidModel {
                source_name: src_name.to_string(),
                reason,
            };
            let g = GgufFile::open(tmp.path()).map_err(|e| match e {
                crate::gguf::GgufFileError::Format { source, .. } => invalid(source.to_string()),
                crate::gguf::GgufFileError::Io { path, source } => StoreError::Io {
                    op: "map",
                    path,
                    source,
                },
            })?;
            let s = GgufSummary::of(&g.header);
            if s.architecture.is_none() {
                return Err(invalid("it has no general.architecture".into()));
            }
            if s.tensor_count == 0 {
                return Err(invalid("it has no tensors".into()));
            }
            s
        };

        let entry = CatalogEntry {
            id: req.id.to_string(),
            file_name: format!("{}.gguf", req.id),
            sha256,
            bytes,
            architecture: summary.architecture.clone().unwrap_or_default(),
            quantization: summary.quantization(),
            context_length: summary.context_length,
            parameter_count: summary.parameter_count,
            state: ModelState::Active,
            staged_at_ms: now_ms(),
            source: req.source.to_string(),
        };
        let dest = self.model_path(&entry);
        tmp.persist(&dest)?;
        // The file is in place; a crash from here to the commit leaves an
        // unreferenced .gguf that the next open sweeps away.
        if let Err(e) = self.insert_new(&entry) {
            let _ = fs::remove_file(&dest);
            return Err(e);
        }
        Ok(entry)
    }

    fn reserve(&self, id: &str) -> Result<Reservation<'_>, StoreError> {
        let mut set = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(id.to_string()) {
            return Err(StoreError::StagingInProgress(id.to_string()));
        }
        Ok(Reservation {
            set: &self.staging,
            id: id.to_string(),
        })
    }

    fn insert_new(&self, entry: &CatalogEntry) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(self.db_err())?;
        {
            let mut t = txn.open_table(MODELS).map_err(self.db_err())?;
            if t.get(entry.id.as_str()).map_err(self.db_err())?.is_some() {
                return Err(StoreError::AlreadyExists(entry.id.clone()));
            }
            t.insert(entry.id.as_str(), entry.to_json().as_slice())
                .map_err(self.db_err())?;
        }
        txn.commit().map_err(self.db_err())?;
        Ok(())
    }

    /// Re-hash a staged file and compare it with what was recorded.
    pub fn verify(&self, id: &str) -> Result<VerifyOutcome, StoreError> {
        self.verify_with_progress(id, &|_, _| {})
    }

    pub fn verify_with_progress(
        &self,
        id: &str,
        progress: &dyn Fn(u64, u64),
    ) -> Result<VerifyOutcome, StoreError> {
        let entry = self
            .get(id)?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let path = self.model_path(&entry);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(VerifyOutcome::Missing)
            }
            Err(e) => return Err(StoreError::io("stat", &path)(e)),
        };
        if len != entry.bytes {
            return Ok(VerifyOutcome::SizeMismatch {
                expected: entry.bytes,
                actual: len,
            });
        }
        let (_, actual) =
            staging::hash_file(&path, progress).map_err(StoreError::io("read", &path))?;
        Ok(if actual == entry.sha256 {
            VerifyOutcome::Ok
        } else {
            VerifyOutcome::DigestMismatch {
                expected: entry.sha256,
                actual,
            }
        })
    }

    /// Set a model's state; returns the updated entry.
    pub fn set_state(&self, id: &str, state: ModelState) -> Result<CatalogEntry, StoreError> {
        let txn = self.db.begin_write().map_err(self.db_err())?;
        let entry = {
            let mut t = txn.open_table(MODELS).map_err(self.db_err())?;
            let mut entry = match t.get(id).map_err(self.db_err())? {
                Some(v) => CatalogEntry::from_json(id, v.value())?,
                None => return Err(StoreError::NotFound(id.to_string())),
            };
            entry.state = state;
            t.insert(id, entry.to_json().as_slice())
                .map_err(self.db_err())?;
            entry
        };
        txn.commit().map_err(self.db_err())?;
        Ok(entry)
    }

    /// Delete a model's entry, then its file. Returns the removed entry.
    pub fn remove(&self, id: &str) -> Result<CatalogEntry, StoreError> {
        let txn = self.db.begin_write().map_err(self.db_err())?;
        let entry = {
            let mut t = txn.open_table(MODELS).map_err(self.db_err())?;
            let removed = t.remove(id).map_err(self.db_err())?;
            match removed {
                Some(v) => CatalogEntry::from_json(id, v.value())?,
                None => return Err(StoreError::NotFound(id.to_string())),
            }
        };
        txn.commit().map_err(self.db_err())?;
        // Entry first: a crash before the unlink leaves an unreferenced
        // file, which the next open sweeps, never an entry without a file.
        let path = self.model_path(&entry);
        match fs::remove_file(&path) {
            Ok(()) => {
                let _ = staging::sync_dir(&self.models_dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove", &path)(e)),
        }
        Ok(entry)
    }
}
