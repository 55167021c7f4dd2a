//! Tables, the schema version and migrations of the store database.
//!
//! The version in `meta["schema_version"]` covers the whole database. Opening
//! a database runs, in one write transaction, every migration from its
//! version up to [`SCHEMA_VERSION`]; a crash mid-migration leaves the old
//! version intact. A newer version is refused, never guessed at.
//!
//! To change a table's layout: bump `SCHEMA_VERSION`, keep the old table's
//! definition here, and add a step to `migrate_step`. A new table still gets
//! a version and a step (creating it empty), so an older llorchd refuses a
//! database whose tables it does not know rather than ignoring them.
//!
//! History: 1 → 2 rewrote the catalog (see `v1`); 2 → 3 added the node
//! registry (`registry_nodes`).

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::Deserialize;

use super::catalog::{CatalogEntry, ModelState};
use super::StoreError;

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 3;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";

/// Catalog entries by model id, as JSON (`CatalogEntry`).
pub(super) const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("catalog_models");

/// Known cloud nodes by node id, as JSON (`NodeRecord`). Since version 3.
pub(super) const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_nodes");

/// Version 1, the layout of the first development builds. It survives as the
/// worked example of a migration: entries as JSON in table `models`, with a
/// `retired` flag, `staged_at` in seconds, and no source.
pub(super) mod v1 {
    use super::*;

    pub const MODELS: TableDefinition<&str, &str> = TableDefinition::new("models");

    #[derive(Debug, Deserialize, serde::Serialize)]
    pub struct Entry {
        pub id: String,
        pub file: String,
        pub sha256: String,
        pub bytes: u64,
        pub arch: String,
        pub quant: String,
        pub ctx: Option<u64>,
        pub params: u64,
        pub retired: bool,
        pub staged_at: u64,
    }
}

fn db_err(path: &Path) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |source| StoreError::Database {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// Bring a freshly opened database to [`SCHEMA_VERSION`]: initialise an
/// empty one, migrate an older one, refuse a newer one.
pub(super) fn prepare(db: &Database, path: &Path) -> Result<(), StoreError> {
    let err = db_err(path);
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    let found = {
        let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let v = meta.get(SCHEMA_KEY).map_err(|e| err(e.into()))?;
        v.map(|v| v.value())
    };
    match found {
        Some(v) if v == SCHEMA_VERSION => {
            txn.abort().map_err(|e| err(e.into()))?;
            return Ok(());
        }
        Some(v) if v > SCHEMA_VERSION => {
            let _ = txn.abort();
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        Some(0) => {
            let _ = txn.abort();
            return Err(StoreError::NotACatalog {
                path: path.to_path_buf(),
                reason: "schema version 0".into(),
            });
        }
        Some(old) => {
            for from in old..SCHEMA_VERSION {
                migrate_step(&txn, from, path)?;
            }
        }
        None => {
            // No version: only an empty database (just created) is ours to
            // initialise. Anything else is someone else's file.
            let others: Vec<String> = txn
                .list_tables()
                .map_err(|e| err(e.into()))?
                .map(|t| t.name().to_string())
                .filter(|n| n != META.name())
                .collect();
            if !others.is_empty() {
                let _ = txn.abort();
                return Err(StoreError::NotACatalog {
                    path: path.to_path_buf(),
                    reason: format!("it has tables {others:?} but no schema version"),
                });
            }
            txn.open_table(MODELS).map_err(|e| err(e.into()))?;
            txn.open_table(NODES).map_err(|e| err(e.into()))?;
        }
    }
    {
        let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        meta.insert(SCHEMA_KEY, SCHEMA_VERSION)
            .map_err(|e| err(e.into()))?;
    }
    txn.commit().map_err(|e| err(e.into()))?;
    Ok(())
}

/// Migrate from version `from` to `from + 1` inside `txn`.
fn migrate_step(txn: &WriteTransaction, from: u64, path: &Path) -> Result<(), StoreError> {
    let err = db_err(path);
    match from {
        1 => {
            let mut rows = Vec::new();
            {
                let old = txn.open_table(v1::MODELS).map_err(|e| err(e.into()))?;
                for row in old.iter().map_err(|e| err(e.into()))? {
                    let (k, v) = row.map_err(|e| err(e.into()))?;
                    let e: v1::Entry =
                        serde_json::from_str(v.value()).map_err(|e| StoreError::CorruptEntry {
                            id: k.value().to_string(),
                            message: format!("schema 1 entry: {e}"),
                        })?;
                    rows.push(CatalogEntry {
                        id: e.id,
                        file_name: e.file,
                        sha256: e.sha256,
                        bytes: e.bytes,
                        architecture: e.arch,
                        quantization: e.quant,
                        context_length: e.ctx,
                        parameter_count: e.params,
                        state: if e.retired {
                            ModelState::Retired
                        } else {
                            ModelState::Active
                        },
                        staged_at_ms: e.staged_at.saturating_mul(1000),
                        source: "unknown (staged before schema 2)".into(),
                    });
                }
            }
            let mut new = txn.open_table(MODELS).map_err(|e| err(e.into()))?;
            for e in rows {
                new.insert(e.id.as_str(), e.to_json().as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            drop(new);
            txn.delete_table(v1::MODELS).map_err(|e| err(e.into()))?;
            Ok(())
        }
        2 => {
            txn.open_table(NODES).map_err(|e| err(e.into()))?;
            Ok(())
        }
        _ => Err(StoreError::NotACatalog {
            path: path.to_path_buf(),
            reason: format!("no migration from schema version {from}"),
        }),
    }
}
