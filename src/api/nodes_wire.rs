//! JSON shapes of the node protocol between workers and control planes:
//! `POST /v2/nodes/register`, `POST /v2/nodes/{id}/heartbeat`,
//! `POST /v2/nodes/{id}/deregister`, `GET /v2/nodes` and
//! `GET /v2/catalog/availability`.
//!
//! Requests tolerate unknown fields (a newer worker may send more) and are
//! validated before use: ids, URL, and bounded list lengths.

use serde::{Deserialize, Serialize};

use crate::config::{validate_base_url, validate_id};
use crate::control::node_registry::{
    Heartbeat, ModelHolder, NodeEntry, NodeReport, NodeState, Now, Registration,
};
use crate::store::{GpuRecord, PoolRecord, StagedModelRecord};

/// Bounds on what one node may report.
pub const MAX_GPUS: usize = 64;
pub const MAX_POOLS: usize = 256;
pub const MAX_MODELS: usize = 4096;
const MAX_TEXT: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuWire {
    /// `cpu` or `cuda:N`.
    pub device: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub vram_total_bytes: u64,
    #[serde(default)]
    pub vram_free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolWire {
    pub pool_id: String,
    pub model_id: String,
    #[serde(default)]
    pub model_digest: String,
    /// `loading`, `ready`, `draining` or `stopped`.
    pub state: String,
    #[serde(default)]
    pub ctx: u64,
    pub slots_total: u64,
    #[serde(default)]
    pub slots_busy: u64,
    #[serde(default)]
    pub queue_depth: u64,
    #[serde(default = "cpu")]
    pub device: String,
    #[serde(default)]
    pub vram_total_bytes: u64,
    #[serde(default)]
    pub vram_free_bytes: u64,
    /// Measured milliseconds per decode step (0 before the first).
    #[serde(default)]
    pub decode_step_ms: f64,
    /// Measured prompt tokens per second (0 before the first).
    #[serde(default)]
    pub prefill_tps: f64,
}

fn cpu() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedModelWire {
    pub model_id: String,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub bytes: u64,
    /// `Active` or `Retired`.
    #[serde(default)]
    pub state: String,
}

/// What a worker reports in a registration and in every heartbeat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReportWire {
    #[serde(default)]
    pub gpus: Vec<GpuWire>,
    #[serde(default)]
    pub pools: Vec<PoolWire>,
    #[serde(default)]
    pub models: Vec<StagedModelWire>,
    #[serde(default)]
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub node_id: String,
    pub instance_id: String,
    /// Base URL the control plane dispatches to (`http://host:port`).
    pub address: String,
    pub version: String,
    #[serde(flatten)]
    pub report: ReportWire,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: String,
    pub state: String,
    /// The control plane's node timeout: heartbeat well within it.
    pub node_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub instance_id: String,
    pub seq: u64,
    #[serde(flatten)]
    pub report: ReportWire,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeregisterRequest {
    /// When set, only this worker instance is removed.
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// One node in `GET /v2/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeWire {
    pub node_id: String,
    /// `online`, `stale`, `offline` or `draining`.
    pub state: String,
    pub address: String,
    pub version: String,
    pub instance_id: String,
    pub gpus: Vec<GpuWire>,
    pub pools: Vec<PoolWire>,
    pub models: Vec<StagedModelWire>,
    pub draining: bool,
    /// Unix milliseconds of the last registration or heartbeat.
    pub last_heartbeat_ms: u64,
    pub registered_at_ms: u64,
    /// Milliseconds since this control plane last heard from the node.
    pub silent_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodesResponse {
    pub nodes: Vec<NodeWire>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HolderWire {
    pub node_id: String,
    /// `online`, `stale`, `offline` or `draining`.
    pub state: String,
    pub online: bool,
    /// The node's pools that serve the model.
    pub pools: Vec<String>,
    /// A pool on the node serves the model (else it is only staged).
    pub served: bool,
    /// A pool serving it is Ready.
    pub ready: bool,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAvailabilityWire {
    pub model_id: String,
    /// The digest every holder reports; null when they disagree.
    pub sha256: Option<String>,
    /// `replicated` (more than one node holds it) or `single`.
    pub availability: String,
    pub replicated: bool,
    pub node_count: usize,
    /// Nodes online with a Ready pool serving it.
    pub ready_nodes: usize,
    pub nodes: Vec<HolderWire>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityResponse {
    pub models: Vec<ModelAvailabilityWire>,
}

fn check_text(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT {
        return Err(format!("{what} is longer than {MAX_TEXT} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} contains control characters"));
    }
    Ok(())
}

impl ReportWire {
    pub fn validate(&self) -> Result<(), String> {
        if self.gpus.len() > MAX_GPUS {
            return Err(format!("more than {MAX_GPUS} gpus"));
        }
        if self.pools.len() > MAX_POOLS {
            return Err(format!("more than {MAX_POOLS} pools"));
        }
        if self.models.len() > MAX_MODELS {
            return Err(format!("more than {MAX_MODELS} models"));
        }
        for g in &self.gpus {
            check_text("gpu device", &g.device)?;
            check_text("gpu name", &g.name)?;
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.pools {
            validate_id(&p.pool_id).map_err(|m| format!("pool_id {m}"))?;
            validate_id(&p.model_id).map_err(|m| format!("pool {} model_id {m}", p.pool_id))?;
            if !seen.insert(p.pool_id.as_str()) {
                return Err(format!("pool {:?} is listed twice", p.pool_id));
            }
            check_text("model_digest", &p.model_digest)?;
            check_text("pool state", &p.state)?;
            check_text("pool device", &p.device)?;
        }
        for m in &self.models {
            validate_id(&m.model_id).map_err(|e| format!("model_id {e}"))?;
            check_text("sha256", &m.sha256)?;
            check_text("model state", &m.state)?;
        }
        Ok(())
    }

    pub fn into_report(self) -> NodeReport {
        NodeReport {
            gpus: self.gpus.into_iter().map(GpuRecord::from).collect(),
            pools: self.pools.into_iter().map(PoolRecord::from).collect(),
            models: self
                .models
                .into_iter()
                .map(StagedModelRecord::from)
                .collect(),
            draining: self.draining,
        }
    }
}

impl RegisterRequest {
    pub fn validate(&self) -> Result<(), String> {
        validate_id(&self.node_id).map_err(|m| format!("node_id {m}"))?;
        if self.instance_id.is_empty() {
            return Err("instance_id must not be empty".into());
        }
        check_text("instance_id", &self.instance_id)?;
        check_text("version", &self.version)?;
        check_text("address", &self.address)?;
        validate_base_url(&self.address).map_err(|m| format!("address {m}"))?;
        self.report.validate()
    }

    pub fn into_registration(self) -> Registration {
        Registration {
            node_id: self.node_id,
            instance_id: self.instance_id,
            address: self.address.trim_end_matches('/').to_string(),
            version: self.version,
            report: self.report.into_report(),
        }
    }
}

impl HeartbeatRequest {
    pub fn validate(&self) -> Result<(), String> {
        check_text("instance_id", &self.instance_id)?;
        self.report.validate()
    }

    pub fn into_heartbeat(self) -> Heartbeat {
        Heartbeat {
            instance_id: self.instance_id,
            seq: self.seq,
            report: self.report.into_report(),
        }
    }
}

impl From<GpuWire> for GpuRecord {
    fn from(g: GpuWire) -> Self {
        GpuRecord {
            device: g.device,
            name: g.name,
            vram_total_bytes: g.vram_total_bytes,
            vram_free_bytes: g.vram_free_bytes,
        }
    }
}

impl From<&GpuRecord> for GpuWire {
    fn from(g: &GpuRecord) -> Self {
        GpuWire {
            device: g.device.clone(),
            name: g.name.clone(),
            vram_total_bytes: g.vram_total_bytes,
            vram_free_bytes: g.vram_free_bytes,
        }
    }
}

impl From<PoolWire> for PoolRecord {
    fn from(p: PoolWire) -> Self {
        PoolRecord {
            pool_id: p.pool_id,
            model_id: p.model_id,
            model_digest: p.model_digest,
            state: p.state,
            ctx: p.ctx,
            slots_total: p.slots_total,
            slots_busy: p.slots_busy,
            queue_depth: p.queue_depth,
            device: p.device,
            vram_total_bytes: p.vram_total_bytes,
            vram_free_bytes: p.vram_free_bytes,
            decode_step_ms: p.decode_step_ms,
            prefill_tps: p.prefill_tps,
        }
    }
}

impl From<&PoolRecord> for PoolWire {
    fn from(p: &PoolRecord) -> Self {
        PoolWire {
            pool_id: p.pool_id.clone(),
            model_id: p.model_id.clone(),
            model_digest: p.model_digest.clone(),
            state: p.state.clone(),
            ctx: p.ctx,
            slots_total: p.slots_total,
            slots_busy: p.slots_busy,
            queue_depth: p.queue_depth,
            device: p.device.clone(),
            vram_total_bytes: p.vram_total_bytes,
            vram_free_bytes: p.vram_free_bytes,
            decode_step_ms: p.decode_step_ms,
            prefill_tps: p.prefill_tps,
        }
    }
}

impl From<StagedModelWire> for StagedModelRecord {
    fn from(m: StagedModelWire) -> Self {
        StagedModelRecord {
            model_id: m.model_id,
            sha256: m.sha256,
            bytes: m.bytes,
            state: m.state,
        }
    }
}

impl From<&StagedModelRecord> for StagedModelWire {
    fn from(m: &StagedModelRecord) -> Self {
        StagedModelWire {
            model_id: m.model_id.clone(),
            sha256: m.sha256.clone(),
            bytes: m.bytes,
            state: m.state.clone(),
        }
    }
}

impl NodeWire {
    pub fn from_entry(e: &NodeEntry, now: Now) -> NodeWire {
        let r = &e.record;
        NodeWire {
            node_id: r.node_id.clone(),
            state: e.state.as_str().to_string(),
            address: r.address.clone(),
            version: r.version.clone(),
            instance_id: r.instance_id.clone(),
            gpus: r.gpus.iter().map(GpuWire::from).collect(),
            pools: r.pools.iter().map(PoolWire::from).collect(),
            models: r.models.iter().map(StagedModelWire::from).collect(),
            draining: r.draining,
            last_heartbeat_ms: r.last_heartbeat_ms,
            registered_at_ms: r.registered_at_ms,
            silent_ms: e.silent_for_ms(now),
        }
    }
}

impl ModelAvailabilityWire {
    pub fn new(model_id: String, holders: &[ModelHolder]) -> ModelAvailabilityWire {
        let replicated = holders.len() > 1;
        let sha256 = holders
            .first()
            .map(|h| h.sha256.clone())
            .filter(|d| holders.iter().all(|h| &h.sha256 == d));
        let online = |h: &ModelHolder| h.state == NodeState::Online;
        ModelAvailabilityWire {
            model_id,
            sha256,
            availability: if replicated { "replicated" } else { "single" }.into(),
            replicated,
            node_count: holders.len(),
            ready_nodes: holders.iter().filter(|h| h.ready && online(h)).count(),
            nodes: holders
                .iter()
                .map(|h| HolderWire {
                    node_id: h.node_id.clone(),
                    state: h.state.as_str().to_string(),
                    online: online(h),
                    pools: h.pools.clone(),
                    served: h.served,
                    ready: h.ready,
                    sha256: h.sha256.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RegisterRequest {
        serde_json::from_value(serde_json::json!({
            "node_id": "gpu-1",
            "instance_id": "abc",
            "address": "http://10.0.0.5:8081/",
            "version": "0.1.0",
            "gpus": [{"device": "cpu", "name": "cpu", "vram_total_bytes": 0, "vram_free_bytes": 0}],
            "pools": [{"pool_id": "default", "model_id": "smollm2", "state": "ready", "slots_total": 4}],
            "models": [{"model_id": "smollm2", "sha256": "ab"}],
            "future_field": 1,
        }))
        .unwrap()
    }

    #[test]
    fn a_registration_parses_validates_and_converts() {
        let r = req();
        r.validate().unwrap();
        let reg = r.into_registration();
        assert_eq!(reg.address, "http://10.0.0.5:8081");
        assert_eq!(reg.report.pools[0].device, "cpu");
        assert_eq!(reg.report.pools[0].slots_busy, 0);
        assert_eq!(reg.report.models[0].model_id, "smollm2");
    }

    type Mutation = Box<dyn Fn(&mut RegisterRequest)>;

    #[test]
    fn bad_registrations_are_refused_with_a_reason() {
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|r| r.node_id = "../x".into()), "node_id"),
            (Box::new(|r| r.instance_id.clear()), "instance_id"),
            (Box::new(|r| r.address = "ftp://x".into()), "http://"),
            (Box::new(|r| r.address = "http://a/b".into()), "base URL"),
            (Box::new(|r| r.address = "http://u@h:1".into()), "base URL"),
            (
                Box::new(|r| r.report.pools[0].model_id = "a/b".into()),
                "model_id",
            ),
            (
                Box::new(|r| {
                    let p = r.report.pools[0].clone();
                    r.report.pools.push(p)
                }),
                "twice",
            ),
            (
                Box::new(|r| r.report.gpus = vec![r.report.gpus[0].clone(); MAX_GPUS + 1]),
                "gpus",
            ),
            (Box::new(|r| r.version = "x".repeat(1000)), "longer"),
            (Box::new(|r| r.version = "a\nb".into()), "control"),
        ];
        for (mutate, needle) in cases {
            let mut r = req();
            mutate(&mut r);
            let e = r.validate().unwrap_err();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn heartbeat_body_is_flat() {
        let h = HeartbeatRequest {
            instance_id: "i".into(),
            seq: 3,
            report: ReportWire {
                draining: true,
                ..Default::default()
            },
        };
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["seq"], 3);
        assert_eq!(v["draining"], true);
        assert!(v["pools"].as_array().unwrap().is_empty());
    }
}
