//! The control plane's node service: the registry state machine behind a
//! lock, persisted in the store, swept and flushed by an upkeep task, and
//! mirrored into the node metrics.
//!
//! Durability: a registration or deregistration is written before it is
//! answered; heartbeats only change memory, and the upkeep task writes what
//! changed significantly (state, pools, models) at most one period later,
//! in one transaction. So a restart loses at most a period of load
//! figures, never a node.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::{NodeRecord, NodeStore, StoreError};
use crate::telemetry::metrics::{self as m, label, node_state};

use super::node_placement::{NodeDecision, NodePlacementError, NodePlacementRequest};
use super::node_registry::{
    Changes, Clock, Heartbeat, HeartbeatOutcome, NodeRegistry, NodeState, Now, RegisterOutcome,
    Registration, RegistryError, Transition,
};
use super::service::{ModelCatalog, ModelLookup};

pub struct NodeService {
    reg: Mutex<NodeRegistry>,
    store: Option<NodeStore>,
    clock: Arc<dyn Clock>,
    /// Serialises taking changes and writing them, so writes land in order.
    flush: tokio::sync::Mutex<()>,
    /// `orchd_pools_available` series set last time (to zero the ones gone).
    pool_series: Mutex<HashSet<String>>,
    /// The registry's (models, availability) versions, published when
    /// either changes.
    topology: tokio::sync::watch::Sender<(u64, u64)>,
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService")
            .field("nodes", &self.reg.lock().unwrap().len())
            .finish()
    }
}

fn log_transition(t: &Transition) {
    let human = match (t.from, t.to) {
        (_, NodeState::Offline) => "node went offline: no heartbeat within the node timeout",
        (NodeState::Offline, NodeState::Online) => "node is back online",
        (NodeState::Stale, NodeState::Online) => "node confirmed after the restart",
        (_, NodeState::Draining) => "node is draining",
        (NodeState::Draining, NodeState::Online) => "node stopped draining",
        _ => "node changed state",
    };
    if t.to == NodeState::Offline {
        tracing::warn!(node_id = %t.node_id, from = %t.from, to = %t.to, human);
    } else {
        tracing::info!(node_id = %t.node_id, from = %t.from, to = %t.to, human);
    }
}

impl NodeService {
    /// A service over `store` (None keeps the registry in memory only),
    /// restoring the nodes a previous run persisted (stale until they
    /// speak).
    pub fn open(
        store: Option<NodeStore>,
        timeout_ms: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<NodeService>, StoreError> {
        let mut reg = NodeRegistry::new(timeout_ms);
        if let Some(s) = &store {
            let loaded = s.load_all()?;
            for (id, problem) in &loaded.corrupt {
                tracing::warn!(node_id = %id, problem = %problem, human = "skipped an unreadable node record");
            }
            if !loaded.nodes.is_empty() {
                tracing::info!(
                    nodes = loaded.nodes.len(),
                    human =
                        "restored the node registry; nodes stay stale until their next heartbeat",
                );
            }
            reg.restore(loaded.nodes, clock.now());
        }
        let svc = Arc::new(NodeService {
            reg: Mutex::new(reg),
            store,
            clock,
            flush: tokio::sync::Mutex::new(()),
            pool_series: Mutex::new(HashSet::new()),
            topology: tokio::sync::watch::channel((0, 0)).0,
        });
        svc.publish_topology();
        svc.record_gauges();
        Ok(svc)
    }

    /// Changes whenever a model id starts or stops being served by some
    /// node (the control profile adds a cluster pool per served model), or
    /// a node or pool may have become available or unavailable (it
    /// refreshes the cluster pools' status at once).
    pub fn watch_topology(&self) -> tokio::sync::watch::Receiver<(u64, u64)> {
        self.topology.subscribe()
    }

    fn publish_topology(&self) {
        let v = {
            let r = self.reg.lock().unwrap();
            (r.models_version(), r.availability_version())
        };
        self.topology.send_if_modified(|cur| {
            let changed = *cur != v;
            *cur = v;
            changed
        });
    }

    pub fn now(&self) -> Now {
        self.clock.now()
    }

    pub fn timeout_ms(&self) -> u64 {
        self.reg.lock().unwrap().timeout_ms()
    }

    /// Read the registry under its lock (keep `f` short).
    pub fn read<R>(&self, f: impl FnOnce(&NodeRegistry, Now) -> R) -> R {
        let now = self.clock.now();
        f(&self.reg.lock().unwrap(), now)
    }

    /// Accept a registration, durably. Returns how it was taken and the
    /// node's state now.
    pub async fn register(
        &self,
        reg: Registration,
    ) -> Result<(RegisterOutcome, NodeState), StoreError> {
        let node_id = reg.node_id.clone();
        let (outcome, state) = {
            let mut r = self.reg.lock().unwrap();
            let outcome = r.register(reg, self.clock.now());
            (
                outcome,
                r.get(&node_id).map_or(NodeState::Online, |e| e.state),
            )
        };
        let human = match outcome {
            RegisterOutcome::New => "node registered",
            RegisterOutcome::Returned {
                from: NodeState::Offline,
            } => "node registered again after being offline: back online",
            RegisterOutcome::Returned { .. } => "node registered again",
            RegisterOutcome::Restarted {
                from: NodeState::Offline,
            } => "node registered again after a worker restart: back online",
            RegisterOutcome::Restarted { .. } => "node registered again after a worker restart",
        };
        tracing::info!(node_id = %node_id, state = %state, human);
        self.publish_topology();
        self.flush().await?;
        self.record_gauges();
        Ok((outcome, state))
    }

    pub fn heartbeat(
        &self,
        node_id: &str,
        hb: Heartbeat,
    ) -> Result<HeartbeatOutcome, RegistryError> {
        let out = self
            .reg
            .lock()
            .unwrap()
            .heartbeat(node_id, hb, self.clock.now());
        if let Ok(HeartbeatOutcome::Accepted { from, to }) = out {
            self.publish_topology();
            if from != to {
                log_transition(&Transition {
                    node_id: node_id.to_string(),
                    from,
                    to,
                });
                self.record_gauges();
            }
        }
        out
    }

    /// Forget a node, durably.
    pub async fn deregister(
        &self,
        node_id: &str,
        instance_id: Option<&str>,
    ) -> Result<Result<NodeRecord, RegistryError>, StoreError> {
        let out = self.reg.lock().unwrap().deregister(node_id, instance_id);
        if out.is_ok() {
            tracing::info!(node_id = %node_id, human = "node deregistered");
            self.publish_topology();
            self.flush().await?;
            self.record_gauges();
        }
        Ok(out)
    }

    pub fn place(
        &self,
        req: &NodePlacementRequest<'_>,
    ) -> Result<NodeDecision, NodePlacementError> {
        let now = self.clock.now();
        self.reg.lock().unwrap().place(req, now)
    }

    /// The dispatch address of a node.
    pub fn address(&self, node_id: &str) -> Option<String> {
        self.reg
            .lock()
            .unwrap()
            .get(node_id)
            .map(|e| e.record.address.clone())
    }

    pub fn reserve(&self, node_id: &str, pool_id: &str) {
        self.reg.lock().unwrap().reserve(node_id, pool_id);
    }

    pub fn release(&self, node_id: &str, pool_id: &str) {
        self.reg.lock().unwrap().release(node_id, pool_id);
    }

    /// A dispatch could not reach the node: offline until it heartbeats.
    pub fn mark_unreachable(&self, node_id: &str) {
        let t = self.reg.lock().unwrap().mark_unreachable(node_id);
        if let Some(t) = t {
            tracing::warn!(
                node_id = %t.node_id,
                from = %t.from,
                to = %t.to,
                human = "node marked offline: a dispatch could not reach it",
            );
            self.publish_topology();
            self.record_gauges();
        }
    }

    /// Sweep timeouts, write what changed, refresh the gauges.
    pub async fn upkeep(&self) -> Result<Vec<Transition>, StoreError> {
        let transitions = self.reg.lock().unwrap().sweep(self.clock.now());
        for t in &transitions {
            log_transition(t);
        }
        self.publish_topology();
        self.flush().await?;
        self.record_gauges();
        Ok(transitions)
    }

    /// Run [`NodeService::upkeep`] every `period` until the returned task
    /// is aborted.
    pub fn spawn_upkeep(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = svc.upkeep().await {
                    tracing::error!(error = %e, human = "could not persist the node registry; retrying");
                }
            }
        })
    }

    /// Write pending changes. On failure they are put back for the next
    /// attempt.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _g = self.flush.lock().await;
        let changes = self.reg.lock().unwrap().take_changes();
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        if changes.is_empty() {
            return Ok(());
        }
        let Changes { put, remove } = changes;
        let res = tokio::task::spawn_blocking({
            let (put, remove) = (put.clone(), remove.clone());
            move || store.apply(&put, &remove)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::CorruptEntry {
                id: String::new(),
                message: format!("store writer panicked: {e}"),
            })
        });
        if res.is_err() {
            self.reg.lock().unwrap().requeue(Changes { put, remove });
        }
        res
    }

    /// Set `orchd_nodes{state}`, `orchd_nodes_online` and
    /// `orchd_pools_available{pool_id}` (pool ids as `node_id/pool_id`).
    pub fn record_gauges(&self) {
        let now = self.clock.now();
        let (counts, pools) = {
            let r = self.reg.lock().unwrap();
            let mut pools = Vec::new();
            for e in r.nodes() {
                let node_ok = r.is_available(&e.record.node_id, now);
                for p in &e.record.pools {
                    pools.push((
                        format!("{}/{}", e.record.node_id, p.pool_id),
                        node_ok && p.state == "ready",
                    ));
                }
            }
            (r.counts(), pools)
        };
        for (s, name) in [
            (NodeState::Online, node_state::ONLINE),
            (NodeState::Stale, node_state::STALE),
            (NodeState::Offline, node_state::OFFLINE),
            (NodeState::Draining, node_state::DRAINING),
        ] {
            metrics::gauge!(m::NODES, label::STATE => name).set(counts.get(s) as f64);
        }
        metrics::gauge!(m::NODES_ONLINE).set(counts.get(NodeState::Online) as f64);
        let mut series = self.pool_series.lock().unwrap();
        let current: HashSet<String> = pools.iter().map(|(id, _)| id.clone()).collect();
        for gone in series.difference(&current) {
            metrics::gauge!(m::POOLS_AVAILABLE, label::POOL_ID => gone.clone()).set(0.0);
        }
        for (id, ok) in pools {
            metrics::gauge!(m::POOLS_AVAILABLE, label::POOL_ID => id).set(if ok {
                1.0
            } else {
                0.0
            });
        }
        *series = current;
    }
}

/// Model lookups for admission on a control plane: a model is known when
/// some node holds it.
impl ModelCatalog for NodeService {
    fn lookup(&self, model_id: &str) -> ModelLookup {
        if self.read(|r, _| r.holds(model_id)) {
            ModelLookup::Active
        } else {
            ModelLookup::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::node_registry::{ManualClock, NodeReport};
    use crate::store::{Catalog, PoolRecord};

    fn registration(id: &str) -> Registration {
        Registration {
            node_id: id.into(),
            instance_id: "i".into(),
            address: format!("http://{id}:1"),
            version: "v".into(),
            report: NodeReport {
                gpus: vec![],
                pools: vec![PoolRecord {
                    pool_id: "p".into(),
                    model_id: "m".into(),
                    model_digest: "d".into(),
                    state: "ready".into(),
                    ctx: 100,
                    slots_total: 1,
                    slots_busy: 0,
                    queue_depth: 0,
                    device: "cpu".into(),
                    vram_total_bytes: 0,
                    vram_free_bytes: 0,
                    decode_step_ms: 0.0,
                    prefill_tps: 0.0,
                }],
                models: vec![],
                draining: false,
            },
        }
    }

    #[tokio::test]
    async fn registrations_survive_a_restart_and_come_back_stale() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::default();
        {
            let cat = Catalog::open(dir.path()).unwrap();
            let svc =
                NodeService::open(Some(cat.node_store()), 1000, Arc::new(clock.clone())).unwrap();
            svc.register(registration("a")).await.unwrap();
            svc.register(registration("b")).await.unwrap();
            svc.deregister("b", Some("i")).await.unwrap().unwrap();
            // Offline is persisted by the upkeep.
            svc.register(registration("c")).await.unwrap();
            clock.advance(500);
            svc.heartbeat(
                "a",
                Heartbeat {
                    instance_id: "i".into(),
                    seq: 1,
                    report: registration("a").report,
                },
            )
            .unwrap();
            clock.advance(600);
            let t = svc.upkeep().await.unwrap();
            assert_eq!(t.len(), 1);
            assert_eq!(t[0].node_id, "c");
        }
        let cat = Catalog::open(dir.path()).unwrap();
        let svc = NodeService::open(Some(cat.node_store()), 1000, Arc::new(clock.clone())).unwrap();
        let states: Vec<(String, NodeState)> = svc.read(|r, _| {
            r.nodes()
                .iter()
                .map(|e| (e.record.node_id.clone(), e.state))
                .collect()
        });
        assert_eq!(
            states,
            vec![
                ("a".to_string(), NodeState::Stale),
                ("c".to_string(), NodeState::Offline)
            ]
        );
        assert_eq!(svc.address("a").as_deref(), Some("http://a:1"));
    }
}
