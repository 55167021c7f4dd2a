//! The cluster pool against scripted workers served over real sockets:
//! failover before the first token, `WORKER_LOST` after it, refusals,
//! prepare on another holder, status from the registry.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use tokio::net::TcpListener;

use super::cluster::{ClusterPool, WorkerAccess};
use super::node_registry::{NodeReport, Registration, SystemClock};
use super::nodes::NodeService;
use crate::config::TlsConfig;
use crate::net::client::{build_client, ClientTimeouts};
use crate::net::dns::HickoryDns;
use crate::store::PoolRecord;
use crate::transport::{
    ErrorCode, ExecuteRequest, GenerationParams, PlacementHints, PoolClient, PoolState,
    PrepareRequest, PromptInput, TaskEvent,
};

/// How a scripted worker behaves.
#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// Streams a start, three tokens and the end.
    Good,
    /// Starts, then the connection ends before any token.
    DropsBeforeToken,
    /// One token, then the connection ends.
    DropsAfterToken,
    /// Answers 503 POOL_UNREADY.
    Refuses,
}

fn line(v: serde_json::Value) -> Result<Bytes, std::convert::Infallible> {
    let mut s = v.to_string();
    s.push('\n');
    Ok(Bytes::from(s))
}

async fn execute(State(s): State<Script>) -> Response {
    let started = serde_json::json!({"event": "started", "reused_tokens": 0, "queue_ms": 0});
    let token = |i: u32| serde_json::json!({"event": "token", "id": i, "text": format!("t{i}")});
    let lines = match s {
        Script::Refuses => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"code": "POOL_UNREADY", "message": "draining", "retriable": true})),
            )
                .into_response()
        }
        Script::Good => vec![
            line(started),
            line(serde_json::json!({"event": "keepalive"})),
            line(token(1)),
            line(token(2)),
            line(token(3)),
            line(serde_json::json!({"event": "finished", "reason": "length", "tokens_in": 2,
                "tokens_out": 3, "reused_tokens": 0, "prefill_ms": 1, "decode_ms": 2, "canceled": false})),
        ],
        Script::DropsBeforeToken => vec![line(started)],
        Script::DropsAfterToken => vec![line(started), line(token(1))],
    };
    Body::from_stream(futures_util::stream::iter(lines)).into_response()
}

async fn prepare(State(s): State<Script>) -> Response {
    if s == Script::Refuses {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"code": "POOL_UNREADY", "message": "draining"})),
        )
            .into_response();
    }
    axum::Json(serde_json::json!({"model_id": "m", "tokens": [1, 2], "ctx": 512})).into_response()
}

/// A scripted worker; returns its base URL.
async fn worker(script: Script) -> String {
    let app = Router::new()
        .route("/v2/worker/pools/{pool}/execute", post(execute))
        .route("/v2/worker/pools/{pool}/prepare", post(prepare))
        .with_state(script);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

fn pool(ctx: u64) -> PoolRecord {
    PoolRecord {
        pool_id: "p".into(),
        model_id: "m".into(),
        model_digest: "d".into(),
        state: "ready".into(),
        ctx,
        slots_total: 2,
        slots_busy: 0,
        queue_depth: 0,
        device: "cpu".into(),
        vram_total_bytes: 0,
        vram_free_bytes: 0,
        decode_step_ms: 10.0,
        prefill_tps: 100.0,
    }
}

async fn cluster(nodes: &[(&str, Script)]) -> (ClusterPool, Arc<NodeService>) {
    let svc = NodeService::open(None, 30_000, Arc::new(SystemClock::default())).unwrap();
    for (id, script) in nodes {
        let address = match script {
            // Nobody listens there.
            _ if *id == "gone" => "http://127.0.0.1:9".to_string(),
            s => worker(*s).await,
        };
        svc.register(Registration {
            node_id: id.to_string(),
            instance_id: "i".into(),
            address,
            version: "v".into(),
            report: NodeReport {
                gpus: vec![],
                pools: vec![pool(512)],
                models: vec![],
                draining: false,
            },
        })
        .await
        .unwrap();
    }
    let client = build_client(
        &TlsConfig::default(),
        HickoryDns::from_system(),
        ClientTimeouts {
            connect: Duration::from_secs(2),
            read_idle: Duration::from_secs(5),
        },
    )
    .unwrap();
    let access = WorkerAccess {
        client,
        token: None,
    };
    (ClusterPool::new("m", svc.clone(), access, 3), svc)
}

fn request(prefer: &[&str]) -> ExecuteRequest {
    ExecuteRequest {
        task_id: "t1".into(),
        model_id: "m".into(),
        prompt: vec![1, 2],
        params: GenerationParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            seed: 1,
            max_tokens: 3,
            stop: vec![],
            logprobs: None,
            determinism: Default::default(),
        },
        session_id: None,
        correlation_id: "c1".into(),
        hints: PlacementHints {
            prefer: prefer.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    }
}

async fn run(pool: &ClusterPool, req: ExecuteRequest) -> Vec<TaskEvent> {
    pool.execute(req).await.unwrap().collect().await
}

fn dispatched_to(events: &[TaskEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::Dispatched { node_id, .. } => Some(node_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_worker_lost_before_the_first_token_is_replaced_unnoticed() {
    let (pool, svc) = cluster(&[
        ("a-bad", Script::DropsBeforeToken),
        ("b-good", Script::Good),
    ])
    .await;
    let events = run(&pool, request(&["a-bad"])).await;
    assert_eq!(dispatched_to(&events), ["a-bad", "b-good"]);
    let starts = events
        .iter()
        .filter(|e| matches!(e, TaskEvent::Started { .. }))
        .count();
    assert_eq!(starts, 1, "the client sees one start: {events:?}");
    assert!(!events.iter().any(|e| matches!(e, TaskEvent::Failed(_))));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, TaskEvent::Token(_)))
            .count(),
        3
    );
    assert!(matches!(events.last(), Some(TaskEvent::Finished(_))));
    // The lost worker is offline until it heartbeats again.
    assert!(!svc.read(|r, now| r.is_available("a-bad", now)));
    assert_eq!(svc.read(|r, _| r.inflight("b-good", "p")), 0);
}

#[tokio::test]
async fn unreachable_and_refusing_workers_are_skipped() {
    let (pool, _) = cluster(&[
        ("gone", Script::Good),
        ("no", Script::Refuses),
        ("yes", Script::Good),
    ])
    .await;
    let events = run(&pool, request(&["gone", "no"])).await;
    let to = dispatched_to(&events);
    assert_eq!(to.last().map(String::as_str), Some("yes"), "{events:?}");
    assert!(matches!(events.last(), Some(TaskEvent::Finished(_))));
    // Prepare also goes around them.
    let p = pool
        .prepare(PrepareRequest {
            model_id: "m".into(),
            input: PromptInput::Text("hi".into()),
        })
        .await
        .unwrap();
    assert_eq!(p.tokens, [1, 2]);
}

#[tokio::test]
async fn a_worker_lost_after_the_first_token_ends_the_task() {
    let (pool, svc) = cluster(&[("a", Script::DropsAfterToken), ("b", Script::Good)]).await;
    let events = run(&pool, request(&["a"])).await;
    assert_eq!(dispatched_to(&events), ["a"]);
    match events.last() {
        Some(TaskEvent::Failed(e)) => {
            assert_eq!(e.code, ErrorCode::WorkerLost);
            assert!(e.code.retriable());
            assert!(e.message.contains("after 1 token"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(!svc.read(|r, now| r.is_available("a", now)));
}

#[tokio::test]
async fn attempts_are_bounded_and_the_last_error_is_reported() {
    let (pool, _) = cluster(&[
        ("a", Script::DropsBeforeToken),
        ("b", Script::DropsBeforeToken),
        ("c", Script::DropsBeforeToken),
        ("d", Script::Good),
    ])
    .await;
    // Three attempts allowed: a, b, c all fail; d is never tried.
    let events = run(&pool, request(&["a", "b", "c"])).await;
    assert_eq!(dispatched_to(&events).len(), 3);
    match events.last() {
        Some(TaskEvent::Failed(e)) => assert_eq!(e.code, ErrorCode::WorkerLost),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn status_sums_the_available_holders() {
    let (pool, svc) = cluster(&[("a", Script::Good), ("b", Script::Good)]).await;
    let st = pool.status().await.unwrap();
    assert_eq!(st.state, PoolState::Ready);
    assert_eq!(st.slots_total, 4);
    assert_eq!(st.ctx, 512);
    assert!((st.decode_step_ms - 10.0).abs() < 1e-9);
    svc.mark_unreachable("a");
    assert_eq!(pool.status().await.unwrap().slots_total, 2);
    svc.mark_unreachable("b");
    assert_eq!(pool.status().await.unwrap().state, PoolState::Unreachable);
    // Nothing to dispatch to: refused at once.
    let e = pool.execute(request(&[])).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::PoolUnavailable);
}

#[tokio::test]
async fn pins_reach_the_node() {
    let (pool, _) = cluster(&[("a", Script::Good), ("b", Script::Good)]).await;
    let mut req = request(&[]);
    req.hints = PlacementHints {
        pin: true,
        pin_pool_id: Some("b/p".into()),
        ..Default::default()
    };
    assert_eq!(dispatched_to(&run(&pool, req.clone()).await), ["b"]);
    req.hints.pin_pool_id = Some("zz/p".into());
    let e = pool.execute(req).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidParams);
}
