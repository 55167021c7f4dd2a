//! The node endpoints over HTTP: status codes and bodies, auth, the shapes
//! of `GET /v2/nodes` and `GET /v2/catalog/availability`; and (ignored) how
//! many heartbeats a second the control plane absorbs while placing tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::nodes::{availability_routes, node_routes};
use crate::config::TlsConfig;
use crate::control::node_placement::NodePlacementRequest;
use crate::control::node_registry::SystemClock;
use crate::control::nodes::NodeService;
use crate::net::auth::ApiToken;
use crate::net::client::{build_client, ClientTimeouts};
use crate::net::dns::HickoryDns;
use crate::net::server::serve;

const TOKEN: &str = "nodes-test-token-0123456789";

struct Server {
    base: String,
    svc: Arc<NodeService>,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(timeout_ms: u64) -> Server {
    let svc = NodeService::open(None, timeout_ms, Arc::new(SystemClock::default())).unwrap();
    let app = node_routes(svc.clone(), Arc::new(ApiToken::new(TOKEN, "t").unwrap()))
        .merge(availability_routes(svc.clone()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        l,
        app,
        None,
        async {
            let _ = rx.await;
        },
        Duration::from_millis(100),
    ));
    Server {
        base,
        svc,
        client: build_client(
            &TlsConfig::default(),
            HickoryDns::from_system(),
            ClientTimeouts::default(),
        )
        .unwrap(),
        _stop: tx,
    }
}

impl Server {
    async fn post(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut r = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn registration(node: &str, model: &str) -> Value {
    json!({
        "node_id": node,
        "instance_id": "inst-1",
        "address": format!("http://{node}.example:9000"),
        "version": "0.1.0",
        "gpus": [{"device": "cpu", "name": "cpu", "vram_total_bytes": 0, "vram_free_bytes": 0}],
        "pools": [{"pool_id": "default", "model_id": model, "model_digest": "abc",
                   "state": "ready", "ctx": 2048, "slots_total": 4}],
        "models": [{"model_id": model, "sha256": "abc", "bytes": 10, "state": "Active"}],
    })
}

fn heartbeat(seq: u64) -> Value {
    json!({"instance_id": "inst-1", "seq": seq, "pools": [], "draining": false})
}

#[tokio::test]
async fn registration_heartbeat_listing_and_availability() {
    let s = start(30_000).await;
    let (st, v) = s
        .post(
            "/v2/nodes/register",
            registration("gpu-1", "m"),
            Some(TOKEN),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "online");
    assert_eq!(v["node_timeout_ms"], 30_000);
    s.post(
        "/v2/nodes/register",
        registration("gpu-2", "m"),
        Some(TOKEN),
    )
    .await;
    s.post(
        "/v2/nodes/register",
        registration("gpu-3", "solo"),
        Some(TOKEN),
    )
    .await;

    let (st, v) = s.get("/v2/nodes", Some(TOKEN)).await;
    assert_eq!(st, 200);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let n = &nodes[0];
    assert_eq!(n["node_id"], "gpu-1");
    assert_eq!(n["state"], "online");
    assert_eq!(n["address"], "http://gpu-1.example:9000");
    assert_eq!(n["pools"][0]["model_id"], "m");
    assert!(n["last_heartbeat_ms"].as_u64().unwrap() > 1_600_000_000_000);

    let (st, v) = s.get("/v2/catalog/availability", None).await;
    assert_eq!(st, 200);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["model_id"], "m");
    assert_eq!(models[0]["availability"], "replicated");
    assert_eq!(models[0]["ready_nodes"], 2);
    assert_eq!(models[1]["model_id"], "solo");
    assert_eq!(models[1]["availability"], "single");
    assert_eq!(models[1]["nodes"][0]["node_id"], "gpu-3");

    // A heartbeat that drains.
    let mut hb = heartbeat(1);
    hb["draining"] = json!(true);
    let (st, v) = s.post("/v2/nodes/gpu-1/heartbeat", hb, Some(TOKEN)).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("draining")));
    // A repeated sequence number is accepted but changes nothing.
    let (st, v) = s
        .post("/v2/nodes/gpu-1/heartbeat", heartbeat(1), Some(TOKEN))
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("draining")));
}

#[tokio::test]
async fn errors_have_codes_and_statuses() {
    let s = start(30_000).await;
    // No token, wrong token: 401 and nothing registered.
    for tok in [None, Some("wrong-token-0123456789")] {
        let (st, v) = s
            .post("/v2/nodes/register", registration("gpu-1", "m"), tok)
            .await;
        assert_eq!((st, v["code"].as_str()), (401, Some("AUTH_FAILED")));
        let (st, _) = s.get("/v2/nodes", tok).await;
        assert_eq!(st, 401);
    }
    assert!(s.svc.read(|r, _| r.is_empty()));
    // Invalid bodies: 400 INVALID_PARAMS naming the problem.
    let mut bad = registration("../etc", "m");
    let (st, v) = s.post("/v2/nodes/register", bad.clone(), Some(TOKEN)).await;
    assert_eq!((st, v["code"].as_str()), (400, Some("INVALID_PARAMS")));
    assert!(v["message"].as_str().unwrap().contains("node_id"), "{v}");
    bad = registration("gpu-1", "m");
    bad["address"] = json!("gpu-1:9000");
    let (st, v) = s.post("/v2/nodes/register", bad, Some(TOKEN)).await;
    assert_eq!(st, 400);
    assert!(v["message"].as_str().unwrap().contains("address"), "{v}");
    let (st, _) = s
        .post("/v2/nodes/register", json!({"node_id": 5}), Some(TOKEN))
        .await;
    assert_eq!(st, 400);
    assert!(s.svc.read(|r, _| r.is_empty()));
    // Unknown node: 404 (the worker registers again on that).
    let (st, v) = s
        .post("/v2/nodes/ghost/heartbeat", heartbeat(1), Some(TOKEN))
        .await;
    assert_eq!((st, v["code"].as_str()), (404, Some("INVALID_PARAMS")));
    // Another instance of a registered node: 409.
    s.post(
        "/v2/nodes/register",
        registration("gpu-1", "m"),
        Some(TOKEN),
    )
    .await;
    let mut other = heartbeat(1);
    other["instance_id"] = json!("inst-2");
    let (st, _) = s
        .post("/v2/nodes/gpu-1/heartbeat", other, Some(TOKEN))
        .await;
    assert_eq!(st, 409);
    let (st, _) = s
        .post(
            "/v2/nodes/gpu-1/deregister",
            json!({"instance_id": "inst-2"}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(st, 409);
    // Goodbye with an empty body.
    let resp = s
        .client
        .post(format!("{}/v2/nodes/gpu-1/deregister", s.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(s.svc.read(|r, _| r.is_empty()));
}

/// `cargo test --lib heartbeat_throughput -- --ignored --nocapture`: 1,000
/// registered nodes heartbeat as fast as 32 connections allow for three
/// seconds, while another task places a task every millisecond. Client and
/// server share the same cores, so the rate is a lower bound.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn heartbeat_throughput() {
    const NODES: usize = 1000;
    const CONNS: usize = 32;
    let s = Arc::new(start(30_000).await);
    for i in 0..NODES {
        let (st, _) = s
            .post(
                "/v2/nodes/register",
                registration(&format!("node-{i:04}"), "m"),
                Some(TOKEN),
            )
            .await;
        assert_eq!(st, 200);
    }
    let until = Instant::now() + Duration::from_secs(3);
    let placer = {
        let svc = s.svc.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                svc.place(&NodePlacementRequest {
                    model_id: "m",
                    ctx_needed: 100,
                    ..Default::default()
                })
                .unwrap();
                lat.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            lat.sort();
            (lat[lat.len() / 2], lat[lat.len() * 99 / 100], lat.len())
        })
    };
    let mut workers = Vec::new();
    for c in 0..CONNS {
        let s = s.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut seq = 1u64;
            while Instant::now() < until {
                let node = format!("node-{:04}", (c + n as usize * CONNS) % NODES);
                seq += 1;
                let mut hb = heartbeat(seq);
                hb["pools"] = registration(&node, "m")["pools"].clone();
                hb["pools"][0]["slots_busy"] = json!(seq % 4);
                let (st, _) = s
                    .post(&format!("/v2/nodes/{node}/heartbeat"), hb, Some(TOKEN))
                    .await;
                assert_eq!(st, 200);
                n += 1;
            }
            n
        }));
    }
    let t0 = Instant::now();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let (p50, p99, n) = placer.await.unwrap();
    println!(
        "heartbeats absorbed: {:.0}/s ({total} in {secs:.1} s, {NODES} nodes, {CONNS} connections); \
         placement meanwhile: median {:.1} us, p99 {:.1} us over {n} placements",
        total as f64 / secs,
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}
