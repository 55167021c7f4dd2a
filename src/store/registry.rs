//! The persisted node registry of a control plane: what each known worker
//! last reported (address, GPUs, pools, staged models) and the state this
//! control plane last gave it, in table `registry_nodes` of the store
//! database. A restarted control plane reads it back and knows its nodes at
//! once (the registry logic marks them stale until their next heartbeat).
//!
//! Only plain data and persistence live here; the state machine is
//! `control::node_registry`.

use std::path::PathBuf;
use std::sync::Arc;

use redb::{Database, ReadableTable};
use serde::{Deserialize, Serialize};

use super::schema::NODES;
use super::{Catalog, StoreError};

/// A node's state as persisted. `Stale` is never written: it is what a
/// restarted control plane gives nodes it has not heard from yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersistedNodeState {
    Online,
    Offline,
    Draining,
}

/// One GPU (or the CPU, with device `cpu` and zero VRAM) of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRecord {
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub name: String,
    pub vram_total_bytes: u64,
    pub vram_free_bytes: u64,
}

/// One pool of a node, with its load at the last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub pool_id: String,
    pub model_id: String,
    /// sha256 of the model file.
    pub model_digest: String,
    /// `loading`, `ready`, `draining` or `stopped`.
    pub state: String,
    /// Context length per slot.
    pub ctx: u64,
    pub slots_total: u64,
    pub slots_busy: u64,
    /// Tasks handed to the pool and not yet in a slot.
    pub queue_depth: u64,
    pub device: String,
    pub vram_total_bytes: u64,
    pub vram_free_bytes: u64,
    /// Measured milliseconds per decode step (0 before the first).
    #[serde(default)]
    pub decode_step_ms: f64,
    /// Measured prompt tokens per second (0 before the first).
    #[serde(default)]
    pub prefill_tps: f64,
}

/// A model staged in a node's store (whether or not a pool serves it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedModelRecord {
    pub model_id: String,
    pub sha256: String,
    pub bytes: u64,
    /// `Active` or `Retired`.
    pub state: String,
}

/// Everything a control plane keeps about one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    /// Random per worker process start; tells a restarted worker from a
    /// delayed message of its previous life.
    pub instance_id: String,
    /// Base URL the control plane dispatches to.
    pub address: String,
    /// llorchd version of the worker.
    pub version: String,
    pub gpus: Vec<GpuRecord>,
    pub pools: Vec<PoolRecord>,
    #[serde(default)]
    pub models: Vec<StagedModelRecord>,
    /// The worker said it is draining.
    pub draining: bool,
    pub state: PersistedNodeState,
    /// Unix time in milliseconds.
    pub registered_at_ms: u64,
    /// Unix time in milliseconds of the last registration or heartbeat.
    pub last_heartbeat_ms: u64,
}

impl NodeRecord {
    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a node record always serialises")
    }

    fn from_json(id: &str, b: &[u8]) -> Result<NodeRecord, StoreError> {
        serde_json::from_slice(b).map_err(|e| StoreError::CorruptEntry {
            id: id.to_string(),
            message: format!("node record: {e}"),
        })
    }
}

/// What [`NodeStore::load_all`] read back.
#[derive(Debug, Default)]
pub struct LoadedNodes {
    pub nodes: Vec<NodeRecord>,
    /// Rows that could not be decoded (node id, problem). They are left in
    /// place; the next write of that node replaces them.
    pub corrupt: Vec<(String, String)>,
}

/// The node-registry table, sharing the catalog's database. Cheap to clone.
#[derive(Clone)]
pub struct NodeStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for NodeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStore")
            .field("path", &self.path)
            .finish()
    }
}

impl Catalog {
    /// The node registry stored in the same database as the catalog.
    pub fn node_store(&self) -> NodeStore {
        NodeStore {
            db: self.database().clone(),
            path: self.db_path().to_path_buf(),
        }
    }
}

impl NodeStore {
    fn db(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }

    /// Every stored node, in node-id order.
    pub fn load_all(&self) -> Result<LoadedNodes, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db(e))?;
        let t = txn.open_table(NODES).map_err(|e| self.db(e))?;
        let mut out = LoadedNodes::default();
        for row in t.iter().map_err(|e| self.db(e))? {
            let (k, v) = row.map_err(|e| self.db(e))?;
            match NodeRecord::from_json(k.value(), v.value()) {
                Ok(n) if n.node_id == k.value() => out.nodes.push(n),
                Ok(n) => out.corrupt.push((
                    k.value().to_string(),
                    format!("stored under another id ({:?})", n.node_id),
                )),
                Err(e) => out.corrupt.push((k.value().to_string(), e.to_string())),
            }
        }
        Ok(out)
    }

    pub fn get(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db(e))?;
        let t = txn.open_table(NODES).map_err(|e| self.db(e))?;
        let v = t.get(node_id).map_err(|e| self.db(e))?;
        v.map(|v| NodeRecord::from_json(node_id, v.value()))
            .transpose()
    }

    /// Write (insert or replace) records and delete ids, all in one durable
    /// transaction: a control plane batches heartbeats this way instead of
    /// paying an fsync per heartbeat.
    pub fn apply(&self, put: &[NodeRecord], remove: &[String]) -> Result<(), StoreError> {
        if put.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.db(e))?;
        {
            let mut t = txn.open_table(NODES).map_err(|e| self.db(e))?;
            for n in put {
                t.insert(n.node_id.as_str(), n.to_json().as_slice())
                    .map_err(|e| self.db(e))?;
            }
            for id in remove {
                t.remove(id.as_str()).map_err(|e| self.db(e))?;
            }
        }
        txn.commit().map_err(|e| self.db(e))?;
        Ok(())
    }

    pub fn put(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.apply(std::slice::from_ref(node), &[])
    }

    pub fn remove(&self, node_id: &str) -> Result<(), StoreError> {
        self.apply(&[], &[node_id.to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(id: &str) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            instance_id: "i-1".into(),
            address: format!("http://{id}:9000"),
            version: "0.1.0".into(),
            gpus: vec![GpuRecord {
                device: "cpu".into(),
                name: "cpu".into(),
                vram_total_bytes: 0,
                vram_free_bytes: 0,
            }],
            pools: vec![PoolRecord {
                pool_id: "default".into(),
                model_id: "smollm2".into(),
                model_digest: "ab".repeat(32),
                state: "ready".into(),
                ctx: 2048,
                slots_total: 4,
                slots_busy: 1,
                queue_depth: 0,
                device: "cpu".into(),
                vram_total_bytes: 0,
                vram_free_bytes: 0,
                decode_step_ms: 0.0,
                prefill_tps: 0.0,
            }],
            models: vec![StagedModelRecord {
                model_id: "smollm2".into(),
                sha256: "ab".repeat(32),
                bytes: 98_362_432,
                state: "Active".into(),
            }],
            draining: false,
            state: PersistedNodeState::Online,
            registered_at_ms: 1,
            last_heartbeat_ms: 2,
        }
    }

    #[test]
    fn nodes_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cat = Catalog::open(dir.path()).unwrap();
            let s = cat.node_store();
            s.put(&sample("b")).unwrap();
            let mut a = sample("a");
            a.state = PersistedNodeState::Offline;
            s.apply(&[a, sample("c")], &["b".to_string()]).unwrap();
        }
        let cat = Catalog::open(dir.path()).unwrap();
        let loaded = cat.node_store().load_all().unwrap();
        assert!(loaded.corrupt.is_empty());
        let ids: Vec<_> = loaded.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(loaded.nodes[0].state, PersistedNodeState::Offline);
        assert_eq!(loaded.nodes[1], sample("c"));
        assert_eq!(cat.node_store().get("c").unwrap(), Some(sample("c")));
        assert_eq!(cat.node_store().get("b").unwrap(), None);
    }

    #[test]
    fn a_corrupt_row_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let s = cat.node_store();
        s.put(&sample("good")).unwrap();
        {
            let txn = cat.database().begin_write().unwrap();
            {
                let mut t = txn.open_table(NODES).unwrap();
                t.insert("bad", b"{not json".as_slice()).unwrap();
                t.insert("alias", sample("other").to_json().as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let loaded = s.load_all().unwrap();
        assert_eq!(loaded.nodes.len(), 1);
        let bad: Vec<_> = loaded.corrupt.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(bad, ["alias", "bad"]);
        // Writing the node again heals the row.
        s.put(&sample("bad")).unwrap();
        assert_eq!(s.load_all().unwrap().nodes.len(), 2);
    }
}
