//! The node registry of a control plane, as pure logic over an injected
//! clock: which workers exist, what they last reported, and their state.
//!
//! States:
//! - `online`: registered or heartbeating within the node timeout;
//! - `draining`: as online, but the worker said it is draining (no new work);
//! - `stale`: loaded from disk after a control-plane restart, not heard from
//!   since; it becomes online at its next heartbeat or registration;
//! - `offline`: no heartbeat within the node timeout.
//!
//! The state follows from two facts only, the time of the last accepted
//! message and the draining flag in it, so it cannot stick or flap: any
//! accepted heartbeat or registration makes a node online (or draining),
//! and only the timeout makes it offline. Heartbeats carry a sequence
//! number per worker instance, so a delayed or repeated one is ignored
//! instead of rolling the state back; a heartbeat from another instance
//! than the registered one is refused, which makes that worker register
//! again. A node offline for [`OFFLINE_RETENTION_MS`] is forgotten.
//!
//! Nodes live in a slab indexed by id, with an index from model id to the
//! nodes that have a pool serving it, so placement visits only holders.
//!
//! Persistence is the caller's: [`NodeRegistry::take_changes`] returns the
//! records to write and the ids to delete. Load figures and timestamps
//! alone do not make a record dirty (they are stale after a restart
//! anyway); state, address, pools, models and GPUs do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::store::{GpuRecord, NodeRecord, PersistedNodeState, PoolRecord, StagedModelRecord};

use super::node_placement::{
    self, NodeDecision, NodePlacementError, NodePlacementRequest, PoolCandidate,
};

/// An offline node is forgotten after this long (one day).
pub const OFFLINE_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    Online,
    Stale,
    Offline,
    Draining,
}

impl NodeState {
    pub const ALL: [NodeState; 4] = [
        NodeState::Online,
        NodeState::Stale,
        NodeState::Offline,
        NodeState::Draining,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Online => "online",
            NodeState::Stale => "stale",
            NodeState::Offline => "offline",
            NodeState::Draining => "draining",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn persisted(self) -> PersistedNodeState {
        match self {
            NodeState::Online | NodeState::Stale => PersistedNodeState::Online,
            NodeState::Offline => PersistedNodeState::Offline,
            NodeState::Draining => PersistedNodeState::Draining,
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point in time: monotonic milliseconds for timeouts (immune to clock
/// steps) and Unix milliseconds for what is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono_ms: u64,
    pub unix_ms: u64,
}

/// Where the registry gets the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Now;
}

/// The process clock.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            mono_ms: self.start.elapsed().as_millis() as u64,
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}

/// A clock tests move by hand.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn advance(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        let ms = self.ms.load(Ordering::SeqCst);
        Now {
            mono_ms: ms,
            unix_ms: 1_700_000_000_000 + ms,
        }
    }
}

/// What a worker says about itself, in a registration or a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    pub gpus: Vec<GpuRecord>,
    pub pools: Vec<PoolRecord>,
    pub models: Vec<StagedModelRecord>,
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub node_id: String,
    pub instance_id: String,
    pub address: String,
    pub version: String,
    pub report: NodeReport,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub instance_id: String,
    /// Increases with every heartbeat of one worker instance.
    pub seq: u64,
    pub report: NodeReport,
}

/// How a registration was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A node this control plane did not know.
    New,
    /// A known node, same worker instance (it lost contact, or this control
    /// plane restarted); `from` is the state it had.
    Returned { from: NodeState },
    /// A known node whose worker restarted (new instance).
    Restarted { from: NodeState },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    Accepted {
        from: NodeState,
        to: NodeState,
    },
    /// Older than or equal to one already accepted: ignored.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("node {0:?} is not registered")]
    UnknownNode(String),
    #[error("node {node_id:?} is registered by another worker instance; register again")]
    InstanceMismatch { node_id: String },
}

/// A change of state, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub node_id: String,
    pub from: NodeState,
    pub to: NodeState,
}

/// One known node.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub record: NodeRecord,
    pub state: NodeState,
    /// The node id, shared with the rows of the model index.
    id: Arc<str>,
    last_seen_mono: u64,
    last_seq: u64,
    /// For each pool of `record.pools`, its row in the index of its model.
    rows: Vec<u32>,
}

impl NodeEntry {
    /// Milliseconds since the last accepted message (by the monotonic clock).
    pub fn silent_for_ms(&self, now: Now) -> u64 {
        now.mono_ms.saturating_sub(self.last_seen_mono)
    }
}

/// Which nodes hold a model, for `GET /v2/catalog/availability`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelHolder {
    pub node_id: String,
    pub state: NodeState,
    /// The node's pools that serve the model (none when it is only staged).
    pub pools: Vec<String>,
    /// A pool on the node serves the model (else it is only staged there).
    pub served: bool,
    /// A pool serving it is Ready.
    pub ready: bool,
    pub sha256: String,
}

/// Records to persist and ids to delete.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub put: Vec<NodeRecord>,
    pub remove: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty()
    }
}

/// Counts of nodes by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateCounts([usize; 4]);

impl StateCounts {
    pub fn get(&self, s: NodeState) -> usize {
        self.0[s.index()]
    }
}

/// What placement reads about one node, kept dense (indexed by slot) so
/// that a scan over thousands of holders stays in cache.
#[derive(Debug, Clone, Copy, Default)]
struct NodeHot {
    online: bool,
    last_seen_mono: u64,
}

/// One pool in the index of its model, with the figures placement needs
/// copied in (refreshed by every heartbeat).
#[derive(Debug, Clone)]
struct Row {
    node: Arc<str>,
    pool: Arc<str>,
    slot: u32,
    /// Index into the node's `record.pools`.
    pool_index: u32,
    ready: bool,
    ctx: u64,
    slots_total: u64,
    /// Running plus queued, as the node reported.
    reported_load: u64,
    queue_depth: u64,
    vram_free_bytes: u64,
    /// Tasks this control plane runs there (counted into load between
    /// heartbeats).
    inflight: u32,
}

impl Row {
    fn refresh(&mut self, p: &PoolRecord) {
        self.ready = p.state == "ready";
        self.ctx = p.ctx;
        self.slots_total = p.slots_total;
        self.reported_load = p.slots_busy.saturating_add(p.queue_depth);
        self.queue_depth = p.queue_depth;
        self.vram_free_bytes = p.vram_free_bytes;
    }
}

/// The pools serving one model. Rows never move (removal leaves a hole that
/// the next insertion reuses), so nodes can keep their row numbers.
#[derive(Debug, Default)]
struct ModelIndex {
    rows: Vec<Option<Row>>,
    holes: Vec<u32>,
    live: usize,
}

impl ModelIndex {
    fn add(&mut self, row: Row) -> u32 {
        self.live += 1;
        match self.holes.pop() {
            Some(i) => {
                self.rows[i as usize] = Some(row);
                i
            }
            None => {
                self.rows.push(Some(row));
                (self.rows.len() - 1) as u32
            }
        }
    }

    fn take(&mut self, i: u32) -> Option<Row> {
        let r = self.rows.get_mut(i as usize)?.take();
        if r.is_some() {
            self.live -= 1;
            self.holes.push(i);
        }
        r
    }
}

#[derive(Debug)]
pub struct NodeRegistry {
    timeout_ms: u64,
    slots: Vec<Option<NodeEntry>>,
    hot: Vec<NodeHot>,
    free: Vec<usize>,
    ids: HashMap<String, usize>,
    by_model: HashMap<String, ModelIndex>,
    counts: StateCounts,
    dirty: HashSet<usize>,
    removed: Vec<String>,
    /// Bumped whenever the set of served model ids changes.
    models_version: u64,
    /// Bumped whenever a node or pool may have become available or
    /// unavailable (registration, state change, pool list or state change,
    /// removal); load figures do not count.
    availability_version: u64,
}

/// Identity of a pool list for the model index and persistence: what
/// changes rarely (load does not count).
fn same_pools_shape(a: &[PoolRecord], b: &[PoolRecord]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.pool_id == y.pool_id
                && x.model_id == y.model_id
                && x.model_digest == y.model_digest
                && x.state == y.state
                && x.ctx == y.ctx
                && x.slots_total == y.slots_total
                && x.device == y.device
                && x.vram_total_bytes == y.vram_total_bytes
        })
}

fn same_gpus_shape(a: &[GpuRecord], b: &[GpuRecord]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.device == y.device && x.name == y.name && x.vram_total_bytes == y.vram_total_bytes
        })
}

impl NodeRegistry {
    pub fn new(timeout_ms: u64) -> NodeRegistry {
        NodeRegistry {
            timeout_ms,
            slots: Vec::new(),
            hot: Vec::new(),
            free: Vec::new(),
            ids: HashMap::new(),
            by_model: HashMap::new(),
            counts: StateCounts::default(),
            dirty: HashSet::new(),
            removed: Vec::new(),
            models_version: 0,
            availability_version: 0,
        }
    }

    /// Changes whenever a model id starts or stops being served.
    pub fn models_version(&self) -> u64 {
        self.models_version
    }

    /// Changes whenever availability may have changed (see the field).
    pub fn availability_version(&self) -> u64 {
        self.availability_version
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn counts(&self) -> StateCounts {
        self.counts
    }

    /// Take back what a previous run persisted. Nodes that were online or
    /// draining come back stale (with their timeout counted from now);
    /// offline ones stay offline. Replaces nodes with the same id.
    pub fn restore(&mut self, records: Vec<NodeRecord>, now: Now) {
        for rec in records {
            let state = match rec.state {
                PersistedNodeState::Offline => NodeState::Offline,
                PersistedNodeState::Online | PersistedNodeState::Draining => NodeState::Stale,
            };
            if let Some(&slot) = self.ids.get(&rec.node_id) {
                self.remove_slot(slot);
            }
            self.insert(rec, state, now);
        }
        self.dirty.clear();
        self.removed.clear();
    }

    /// Accept a registration. Always succeeds: a worker that registers is
    /// taken at its word (after authentication), whatever its state was.
    pub fn register(&mut self, reg: Registration, now: Now) -> RegisterOutcome {
        let state = if reg.report.draining {
            NodeState::Draining
        } else {
            NodeState::Online
        };
        let (outcome, registered_at) = match self.ids.get(&reg.node_id) {
            None => (RegisterOutcome::New, now.unix_ms),
            Some(&slot) => {
                let e = self.slots[slot].as_ref().expect("indexed slot is live");
                let from = e.state;
                let (out, at) = if e.record.instance_id == reg.instance_id {
                    (
                        RegisterOutcome::Returned { from },
                        e.record.registered_at_ms,
                    )
                } else {
                    (RegisterOutcome::Restarted { from }, now.unix_ms)
                };
                self.remove_slot(slot);
                (out, at)
            }
        };
        let record = NodeRecord {
            node_id: reg.node_id,
            instance_id: reg.instance_id,
            address: reg.address,
            version: reg.version,
            gpus: reg.report.gpus,
            pools: reg.report.pools,
            models: reg.report.models,
            draining: reg.report.draining,
            state: state.persisted(),
            registered_at_ms: registered_at,
            last_heartbeat_ms: now.unix_ms,
        };
        let slot = self.insert(record, state, now);
        self.dirty.insert(slot);
        self.availability_version += 1;
        outcome
    }

    /// Accept a heartbeat from a registered node.
    pub fn heartbeat(
        &mut self,
        node_id: &str,
        hb: Heartbeat,
        now: Now,
    ) -> Result<HeartbeatOutcome, RegistryError> {
        let slot = *self
            .ids
            .get(node_id)
            .ok_or_else(|| RegistryError::UnknownNode(node_id.to_string()))?;
        let e = self.slots[slot].as_ref().expect("indexed slot is live");
        if e.record.instance_id != hb.instance_id {
            return Err(RegistryError::InstanceMismatch {
                node_id: node_id.to_string(),
            });
        }
        if hb.seq <= e.last_seq {
            return Ok(HeartbeatOutcome::Duplicate);
        }
        let from = e.state;
        let to = if hb.report.draining {
            NodeState::Draining
        } else {
            NodeState::Online
        };
        let pools_changed = !same_pools_shape(&e.record.pools, &hb.report.pools);
        let significant = pools_changed
            || from != to
            || e.record.draining != hb.report.draining
            || e.record.models != hb.report.models
            || !same_gpus_shape(&e.record.gpus, &hb.report.gpus);
        // Work this control plane has running there survives a change of
        // the pool list, pool by pool.
        let inflight: HashMap<String, u32> = if pools_changed {
            let kept = self.inflight_by_pool(slot);
            self.unindex(slot);
            kept
        } else {
            HashMap::new()
        };
        let e = self.slots[slot].as_mut().expect("indexed slot is live");
        e.record.gpus = hb.report.gpus;
        e.record.pools = hb.report.pools;
        e.record.models = hb.report.models;
        e.record.draining = hb.report.draining;
        e.record.state = to.persisted();
        e.record.last_heartbeat_ms = now.unix_ms;
        e.last_seen_mono = now.mono_ms;
        e.last_seq = hb.seq;
        e.state = to;
        self.hot[slot] = NodeHot {
            online: to == NodeState::Online,
            last_seen_mono: now.mono_ms,
        };
        if pools_changed {
            self.index(slot, &inflight);
        } else {
            let e = self.slots[slot].as_ref().expect("indexed slot is live");
            for (p, &row) in e.record.pools.iter().zip(&e.rows) {
                if let Some(r) = self
                    .by_model
                    .get_mut(p.model_id.as_str())
                    .and_then(|m| m.rows.get_mut(row as usize))
                    .and_then(Option::as_mut)
                {
                    r.refresh(p);
                }
            }
        }
        self.counts.0[from.index()] -= 1;
        self.counts.0[to.index()] += 1;
        if significant {
            self.dirty.insert(slot);
            self.availability_version += 1;
        }
        Ok(HeartbeatOutcome::Accepted { from, to })
    }

    /// Forget a node that says goodbye. With an instance id, only that
    /// instance may (a stale goodbye does not remove a restarted worker).
    pub fn deregister(
        &mut self,
        node_id: &str,
        instance_id: Option<&str>,
    ) -> Result<NodeRecord, RegistryError> {
        let slot = *self
            .ids
            .get(node_id)
            .ok_or_else(|| RegistryError::UnknownNode(node_id.to_string()))?;
        let e = self.slots[slot].as_ref().expect("indexed slot is live");
        if instance_id.is_some_and(|i| i != e.record.instance_id) {
            return Err(RegistryError::InstanceMismatch {
                node_id: node_id.to_string(),
            });
        }
        let rec = self.remove_slot(slot);
        self.removed.push(node_id.to_string());
        self.availability_version += 1;
        Ok(rec)
    }

    /// Mark nodes silent for longer than the timeout offline, and forget
    /// those offline for longer than [`OFFLINE_RETENTION_MS`].
    pub fn sweep(&mut self, now: Now) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut forget = Vec::new();
        for slot in 0..self.slots.len() {
            let Some(e) = self.slots[slot].as_ref() else {
                continue;
            };
            let silent = e.silent_for_ms(now);
            if e.state != NodeState::Offline && silent > self.timeout_ms {
                let id = e.record.node_id.clone();
                out.extend(self.go_offline(slot, id));
            } else if e.state == NodeState::Offline
                && silent > self.timeout_ms.saturating_add(OFFLINE_RETENTION_MS)
            {
                forget.push(slot);
            }
        }
        for slot in forget {
            let rec = self.remove_slot(slot);
            self.removed.push(rec.node_id);
            self.availability_version += 1;
        }
        out
    }

    /// Mark a node offline now, because talking to it failed (a dispatch
    /// found it unreachable). Its next heartbeat brings it back.
    pub fn mark_unreachable(&mut self, node_id: &str) -> Option<Transition> {
        let &slot = self.ids.get(node_id)?;
        self.go_offline(slot, node_id.to_string())
    }

    fn go_offline(&mut self, slot: usize, node_id: String) -> Option<Transition> {
        let e = self.slots[slot].as_mut()?;
        if e.state == NodeState::Offline {
            return None;
        }
        let from = e.state;
        e.state = NodeState::Offline;
        e.record.state = PersistedNodeState::Offline;
        self.hot[slot].online = false;
        self.counts.0[from.index()] -= 1;
        self.counts.0[NodeState::Offline.index()] += 1;
        self.dirty.insert(slot);
        self.availability_version += 1;
        Some(Transition {
            node_id,
            from,
            to: NodeState::Offline,
        })
    }

    /// What to persist since the last call.
    pub fn take_changes(&mut self) -> Changes {
        let mut put: Vec<NodeRecord> = self
            .dirty
            .drain()
            .filter_map(|s| self.slots[s].as_ref().map(|e| e.record.clone()))
            .collect();
        put.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Changes {
            put,
            remove: std::mem::take(&mut self.removed),
        }
    }

    /// Put back changes that could not be written; the next
    /// [`NodeRegistry::take_changes`] returns them again (with the nodes'
    /// current records).
    pub fn requeue(&mut self, failed: Changes) {
        for rec in failed.put {
            if let Some(&slot) = self.ids.get(&rec.node_id) {
                self.dirty.insert(slot);
            }
        }
        for id in failed.remove {
            if !self.ids.contains_key(&id) && !self.removed.contains(&id) {
                self.removed.push(id);
            }
        }
    }

    pub fn get(&self, node_id: &str) -> Option<&NodeEntry> {
        self.ids.get(node_id).and_then(|&s| self.slots[s].as_ref())
    }

    /// Every node, in node-id order.
    pub fn nodes(&self) -> Vec<&NodeEntry> {
        let mut v: Vec<&NodeEntry> = self.slots.iter().flatten().collect();
        v.sort_by(|a, b| a.record.node_id.cmp(&b.record.node_id));
        v
    }

    /// Can `node_id` take new work now?
    pub fn is_available(&self, node_id: &str, now: Now) -> bool {
        self.ids
            .get(node_id)
            .is_some_and(|&s| self.fresh_online(s, now))
    }

    fn fresh_online(&self, slot: usize, now: Now) -> bool {
        let h = &self.hot[slot];
        h.online && now.mono_ms.saturating_sub(h.last_seen_mono) <= self.timeout_ms
    }

    /// The pools serving `model_id`, as placement candidates. Placement
    /// never picks a node whose timeout ran out, even before a sweep.
    pub fn candidates<'a>(
        &'a self,
        model_id: &str,
        now: Now,
    ) -> impl Iterator<Item = PoolCandidate<'a>> + 'a {
        let rows: &[Option<Row>] = self.by_model.get(model_id).map_or(&[], |m| &m.rows);
        rows.iter().flatten().map(move |r| {
            let load = r.reported_load.max(r.inflight as u64);
            PoolCandidate {
                node_id: &r.node,
                pool_id: &r.pool,
                available: r.ready && self.fresh_online(r.slot as usize, now),
                ctx: r.ctx,
                free_slots: r.slots_total as i64 - load as i64,
                vram_free_bytes: r.vram_free_bytes,
                queue_depth: r.queue_depth,
            }
        })
    }

    /// The pools serving `model_id` with their node, and whether each can
    /// take work now (node online with a fresh heartbeat, pool Ready).
    pub fn serving<'a>(
        &'a self,
        model_id: &str,
        now: Now,
    ) -> impl Iterator<Item = (&'a NodeEntry, &'a PoolRecord, bool)> + 'a {
        let rows: &[Option<Row>] = self.by_model.get(model_id).map_or(&[], |m| &m.rows);
        rows.iter().flatten().map(move |r| {
            let e = self.slots[r.slot as usize]
                .as_ref()
                .expect("indexed slot is live");
            let p = &e.record.pools[r.pool_index as usize];
            (e, p, r.ready && self.fresh_online(r.slot as usize, now))
        })
    }

    /// Model ids that some pool of some node serves.
    pub fn served_models(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_model.keys().cloned().collect();
        v.sort();
        v
    }

    /// Does any node hold `model_id` (a pool serves it, or it is staged)?
    pub fn holds(&self, model_id: &str) -> bool {
        self.by_model.contains_key(model_id)
            || self
                .slots
                .iter()
                .flatten()
                .any(|e| e.record.models.iter().any(|m| m.model_id == model_id))
    }

    /// Place a task among the nodes serving its model.
    pub fn place(
        &self,
        req: &NodePlacementRequest<'_>,
        now: Now,
    ) -> Result<NodeDecision, NodePlacementError> {
        node_placement::place(req, self.candidates(req.model_id, now))
    }

    /// Count a task this control plane starts on a pool (until `release`).
    pub fn reserve(&mut self, node_id: &str, pool_id: &str) {
        if let Some(r) = self.row_mut(node_id, pool_id) {
            r.inflight += 1;
        }
    }

    pub fn release(&mut self, node_id: &str, pool_id: &str) {
        if let Some(r) = self.row_mut(node_id, pool_id) {
            r.inflight = r.inflight.saturating_sub(1);
        }
    }

    /// Tasks this control plane runs on a pool.
    pub fn inflight(&self, node_id: &str, pool_id: &str) -> u32 {
        let Some(e) = self.get(node_id) else { return 0 };
        let Some(i) = e.record.pools.iter().position(|p| p.pool_id == pool_id) else {
            return 0;
        };
        self.by_model
            .get(e.record.pools[i].model_id.as_str())
            .and_then(|m| m.rows.get(e.rows[i] as usize))
            .and_then(Option::as_ref)
            .map_or(0, |r| r.inflight)
    }

    fn row_mut(&mut self, node_id: &str, pool_id: &str) -> Option<&mut Row> {
        let e = self.slots[*self.ids.get(node_id)?].as_ref()?;
        let i = e.record.pools.iter().position(|p| p.pool_id == pool_id)?;
        self.by_model
            .get_mut(e.record.pools[i].model_id.as_str())?
            .rows
            .get_mut(e.rows[i] as usize)?
            .as_mut()
    }

    /// Per model id: the nodes that hold it (staged or served), by node id.
    pub fn availability(&self) -> BTreeMap<String, Vec<ModelHolder>> {
        let mut out: BTreeMap<String, BTreeMap<String, ModelHolder>> = BTreeMap::new();
        for e in self.slots.iter().flatten() {
            let node = &e.record.node_id;
            for m in &e.record.models {
                out.entry(m.model_id.clone())
                    .or_default()
                    .entry(node.clone())
                    .or_insert_with(|| ModelHolder {
                        node_id: node.clone(),
                        state: e.state,
                        pools: Vec::new(),
                        served: false,
                        ready: false,
                        sha256: m.sha256.clone(),
                    });
            }
            for p in &e.record.pools {
                let h = out
                    .entry(p.model_id.clone())
                    .or_default()
                    .entry(node.clone())
                    .or_insert_with(|| ModelHolder {
                        node_id: node.clone(),
                        state: e.state,
                        pools: Vec::new(),
                        served: false,
                        ready: false,
                        sha256: p.model_digest.clone(),
                    });
                h.served = true;
                h.pools.push(p.pool_id.clone());
                h.ready |= p.state == "ready";
            }
        }
        out.into_iter()
            .map(|(m, holders)| (m, holders.into_values().collect()))
            .collect()
    }

    fn insert(&mut self, record: NodeRecord, state: NodeState, now: Now) -> usize {
        let id: Arc<str> = Arc::from(record.node_id.as_str());
        // A node deregistered and back before the changes were written:
        // its row must not be deleted after the new one is written.
        self.removed.retain(|r| r != &record.node_id);
        let entry = NodeEntry {
            record,
            state,
            id,
            last_seen_mono: now.mono_ms,
            last_seq: 0,
            rows: Vec::new(),
        };
        let hot = NodeHot {
            online: state == NodeState::Online,
            last_seen_mono: now.mono_ms,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(entry);
                self.hot[s] = hot;
                s
            }
            None => {
                self.slots.push(Some(entry));
                self.hot.push(hot);
                self.slots.len() - 1
            }
        };
        let node_id = self.slots[slot]
            .as_ref()
            .expect("just set")
            .record
            .node_id
            .clone();
        self.ids.insert(node_id, slot);
        self.index(slot, &HashMap::new());
        self.counts.0[state.index()] += 1;
        slot
    }

    /// Add every pool of the node in `slot` to the model index.
    fn index(&mut self, slot: usize, inflight: &HashMap<String, u32>) {
        let e = self.slots[slot].as_mut().expect("indexing a live slot");
        e.rows.clear();
        for (i, p) in e.record.pools.iter().enumerate() {
            let mut row = Row {
                node: e.id.clone(),
                pool: Arc::from(p.pool_id.as_str()),
                slot: slot as u32,
                pool_index: i as u32,
                ready: false,
                ctx: 0,
                slots_total: 0,
                reported_load: 0,
                queue_depth: 0,
                vram_free_bytes: 0,
                inflight: inflight.get(&p.pool_id).copied().unwrap_or(0),
            };
            row.refresh(p);
            let idx = match self.by_model.get_mut(p.model_id.as_str()) {
                Some(m) => m,
                None => {
                    self.models_version += 1;
                    self.by_model.entry(p.model_id.clone()).or_default()
                }
            };
            e.rows.push(idx.add(row));
        }
    }

    /// Remove every pool of the node in `slot` from the model index.
    fn unindex(&mut self, slot: usize) {
        let e = self.slots[slot].as_mut().expect("unindexing a live slot");
        for (p, &row) in e.record.pools.iter().zip(&e.rows) {
            if let Some(m) = self.by_model.get_mut(p.model_id.as_str()) {
                m.take(row);
                if m.live == 0 {
                    self.by_model.remove(p.model_id.as_str());
                    self.models_version += 1;
                }
            }
        }
        e.rows.clear();
    }

    fn inflight_by_pool(&self, slot: usize) -> HashMap<String, u32> {
        let e = self.slots[slot].as_ref().expect("live slot");
        e.record
            .pools
            .iter()
            .zip(&e.rows)
            .filter_map(|(p, &row)| {
                let r = self
                    .by_model
                    .get(p.model_id.as_str())?
                    .rows
                    .get(row as usize)?
                    .as_ref()?;
                Some((p.pool_id.clone(), r.inflight))
            })
            .collect()
    }

    fn remove_slot(&mut self, slot: usize) -> NodeRecord {
        self.unindex(slot);
        let e = self.slots[slot].take().expect("removing a live slot");
        self.hot[slot] = NodeHot::default();
        self.ids.remove(&e.record.node_id);
        self.counts.0[e.state.index()] -= 1;
        self.dirty.remove(&slot);
        self.free.push(slot);
        e.record
    }
}

#[cfg(test)]
mod tests;
