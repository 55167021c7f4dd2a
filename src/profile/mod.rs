//! Wiring a process from its `Config`: which parts run, and how they are
//! connected. `home` is the control side and in-process pools in one
//! process, talking through `transport::LocalPool`.

pub mod home;

pub use home::{Home, HomeOptions};

use crate::store::StoreError;
use crate::worker::PoolError;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("model store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "pool {pool}: model {model:?} is not in the catalog (stage it with `llorchd models stage`)"
    )]
    ModelNotStaged { pool: String, model: String },
    #[error(
        "pool {pool}: model {model:?} is retired (activate it with `llorchd models activate`)"
    )]
    ModelRetired { pool: String, model: String },
    #[error("pool {pool}: {source}")]
    Pool { pool: String, source: PoolError },
    #[error("pool {pool}: device {device:?} is not available in this build (cpu only)")]
    Device { pool: String, device: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Runtime(String),
}
