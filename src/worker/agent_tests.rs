//! The agent against in-process control planes served over real sockets:
//! registration, heartbeats, re-registration after the control plane
//! forgets the node, retries while it is down, a wrong token, goodbye.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::agent::{Agent, AgentSettings, NodeReporter};
use crate::api::nodes::node_routes;
use crate::api::nodes_wire::{PoolWire, ReportWire};
use crate::config::TlsConfig;
use crate::control::node_registry::{NodeState, SystemClock};
use crate::control::nodes::NodeService;
use crate::net::auth::ApiToken;
use crate::net::client::{build_client, ClientTimeouts};
use crate::net::dns::HickoryDns;
use crate::net::server::serve;
use crate::store::Catalog;

const TOKEN: &str = "agent-test-token-0123456789";

struct Reporter {
    draining: AtomicBool,
}

impl NodeReporter for Reporter {
    fn report(&self) -> ReportWire {
        ReportWire {
            gpus: vec![],
            pools: vec![PoolWire {
                pool_id: "default".into(),
                model_id: "m".into(),
                model_digest: "d".into(),
                state: "ready".into(),
                ctx: 512,
                slots_total: 2,
                slots_busy: 0,
                queue_depth: 0,
                device: "cpu".into(),
                vram_total_bytes: 0,
                vram_free_bytes: 0,
                decode_step_ms: 0.0,
                prefill_tps: 0.0,
            }],
            models: vec![],
            draining: self.draining.load(Ordering::SeqCst),
        }
    }
}

struct ControlPlane {
    svc: Arc<NodeService>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<usize>>,
}

impl ControlPlane {
    async fn start(listener: TcpListener, store: Option<&Catalog>, token: &str) -> ControlPlane {
        let svc = NodeService::open(
            store.map(|c| c.node_store()),
            2000,
            Arc::new(SystemClock::default()),
        )
        .unwrap();
        let app = node_routes(svc.clone(), Arc::new(ApiToken::new(token, "t").unwrap()));
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(serve(
            listener,
            app,
            None,
            async {
                let _ = rx.await;
            },
            Duration::from_millis(100),
        ));
        ControlPlane {
            svc,
            stop: Some(tx),
            done: Some(done),
        }
    }

    async fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap();
    }

    fn state(&self, node: &str) -> Option<NodeState> {
        self.svc.read(|r, _| r.get(node).map(|e| e.state))
    }
}

fn agent(urls: Vec<String>, token: &str, reporter: Arc<Reporter>) -> Agent {
    let client = build_client(
        &TlsConfig::default(),
        HickoryDns::from_system(),
        ClientTimeouts::default(),
    )
    .unwrap();
    Agent::start(
        AgentSettings {
            node_id: "w1".into(),
            advertise_url: "http://127.0.0.1:9".into(),
            control_urls: urls,
            heartbeat_interval: Duration::from_millis(100),
            version: "test".into(),
        },
        client,
        Some(Arc::new(ApiToken::new(token, "t").unwrap())),
        reporter,
    )
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn reporter() -> Arc<Reporter> {
    Arc::new(Reporter {
        draining: AtomicBool::new(false),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_every_control_plane_heartbeats_and_says_goodbye() {
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // One by name (resolved by hickory), one by address.
    let urls = vec![
        format!("http://localhost:{}", l1.local_addr().unwrap().port()),
        format!("http://127.0.0.1:{}/", l2.local_addr().unwrap().port()),
    ];
    let mut c1 = ControlPlane::start(l1, None, TOKEN).await;
    let mut c2 = ControlPlane::start(l2, None, TOKEN).await;
    let rep = reporter();
    let a = agent(urls, TOKEN, rep.clone());
    eventually("both registrations", || {
        c1.state("w1") == Some(NodeState::Online) && c2.state("w1") == Some(NodeState::Online)
    })
    .await;
    let instance = a.instance_id().to_string();
    assert_eq!(
        c1.svc
            .read(|r, _| r.get("w1").unwrap().record.instance_id.clone()),
        instance
    );
    // Heartbeats carry state changes; a nudge sends them at once.
    rep.draining.store(true, Ordering::SeqCst);
    a.nudge();
    eventually("draining seen by both", || {
        c1.state("w1") == Some(NodeState::Draining) && c2.state("w1") == Some(NodeState::Draining)
    })
    .await;
    // The control plane forgets the node: the next heartbeat gets 404 and
    // the agent registers again.
    c1.svc.deregister("w1", None).await.unwrap().unwrap();
    // The control plane records the node before the agent reads the answer.
    eventually("re-registration", || {
        c1.state("w1").is_some() && a.links().iter().all(|l| l.registered)
    })
    .await;
    // Goodbye removes it everywhere.
    let failed = a.deregister(Duration::from_secs(2)).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(c1.state("w1"), None);
    assert_eq!(c2.state("w1"), None);
    c1.stop().await;
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_while_the_control_plane_is_down_and_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Reserve a port, then close it: the control plane is down at first.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let a = agent(vec![format!("http://{addr}")], TOKEN, reporter());
    eventually("failed attempts", || a.links()[0].failures >= 2).await;
    let err = a.links()[0].last_error.clone().unwrap();
    assert!(err.to_lowercase().contains("connect"), "{err}");

    let cat = Catalog::open(dir.path()).unwrap();
    let mut c =
        ControlPlane::start(TcpListener::bind(addr).await.unwrap(), Some(&cat), TOKEN).await;
    eventually("registration after the outage", || {
        c.state("w1") == Some(NodeState::Online)
    })
    .await;
    // Restart the control plane on the same store: it knows the node at
    // once (stale), and the next heartbeat confirms it.
    c.stop().await;
    drop(c);
    let c2_svc = NodeService::open(
        Some(cat.node_store()),
        2000,
        Arc::new(SystemClock::default()),
    )
    .unwrap();
    assert_eq!(
        c2_svc.read(|r, _| r.get("w1").map(|e| e.state)),
        Some(NodeState::Stale)
    );
    drop(c2_svc);
    let c2 = ControlPlane::start(TcpListener::bind(addr).await.unwrap(), Some(&cat), TOKEN).await;
    eventually("online again after the restart", || {
        c2.state("w1") == Some(NodeState::Online)
    })
    .await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_registers_nothing() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    let mut c = ControlPlane::start(l, None, TOKEN).await;
    let a = agent(vec![url], "some-other-token-0123456789", reporter());
    eventually("refusals", || a.links()[0].failures >= 2).await;
    assert!(a.links()[0].last_error.as_deref().unwrap().contains("401"));
    assert!(c.svc.read(|r, _| r.is_empty()));
    drop(a);
    c.stop().await;
}
