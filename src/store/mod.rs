//! The model store: GGUF files under `<store.dir>/models/` and the redb
//! database `<store.dir>/llorchd.redb` that catalogs them.
//!
//! This is the only module that imports redb. The database carries a schema
//! version (see `schema`); later tables (the node registry) live in the same
//! database and are versioned with it.
//!
//! Layout:
//! - `catalog`: [`Catalog`], its entries, staging, verify, state, removal.
//! - `schema`: table definitions, the schema version and migrations.
//! - `staging`: the file side of staging: temp files, copy-while-hashing,
//!   fsync, and the clean-up of what a crash left behind.
//! - `registry`: [`NodeStore`], the control plane's persisted node registry.

mod catalog;
mod registry;
mod schema;
mod staging;

use std::io;
use std::path::PathBuf;

pub use catalog::{
    derive_model_id, Catalog, CatalogEntry, ModelState, StageRequest, VerifyOutcome,
};
pub use registry::{
    GpuRecord, LoadedNodes, NodeRecord, NodeStore, PersistedNodeState, PoolRecord,
    StagedModelRecord,
};
pub use schema::SCHEMA_VERSION;

/// File name of the database inside the store directory.
pub const DB_FILE: &str = "llorchd.redb";
/// Folder of model files inside the store directory. llorchd owns it: files
/// there that no catalog entry names are removed when the catalog opens.
pub const MODELS_DIR: &str = "models";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid model id {id:?}: {reason}")]
    InvalidId { id: String, reason: String },
    #[error("invalid sha256 {0:?}: expected 64 hexadecimal digits")]
    InvalidSha256(String),
    #[error("model {0:?} is not in the catalog")]
    NotFound(String),
    #[error("model {0:?} is already in the catalog (remove it first, or choose another id)")]
    AlreadyExists(String),
    #[error("model {0:?} is being staged by another request")]
    StagingInProgress(String),
    #[error(
        "sha256 mismatch for {source_name}: expected {expected}, got {actual}; nothing was staged"
    )]
    Sha256Mismatch {
        source_name: String,
        expected: String,
        actual: String,
    },
    #[error("{source_name} is not a usable GGUF model: {reason}")]
    InvalidModel { source_name: String, reason: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the model store database {} is in use by another llorchd process", path.display())]
    InUse { path: PathBuf },
    #[error("the model store database {} has schema version {found}, newer than the {supported} this llorchd understands: upgrade llorchd", path.display())]
    SchemaTooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("{} is not a llorchd database: {reason}", path.display())]
    NotACatalog { path: PathBuf, reason: String },
    #[error("model store database {}: {source}", path.display())]
    Database {
        path: PathBuf,
        /// Boxed: redb's error is large and this path is rare.
        #[source]
        source: Box<redb::Error>,
    },
    #[error("catalog entry {id:?} is unreadable: {message}")]
    CorruptEntry { id: String, message: String },
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}

#[cfg(test)]
mod tests;
