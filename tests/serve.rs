//! The home profile end to end: a real server on 127.0.0.1:0 with the real
//! SmolLM2 model (BRIEF section 7), driven over HTTP.
//!
//! Each test starts its own server (own store, own config), so tests can
//! run in parallel and in any order. Generation lengths stay small. Each
//! engine uses one thread: tests run side by side on a few shared cores,
//! where a spinning fork-join pool per server would only oversubscribe.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use llorchd::config::{Config, FullQueuePolicy, PoolConfig};
use llorchd::profile::{Home, HomeOptions};
use llorchd::store::Catalog;
use llorchd::telemetry::metrics::{install_recorder, ProcessRole};
use llorchd::testing::{real_model, RealModel};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

const MODEL: &str = "smollm2";

/// One recorder per test process (the `metrics` facade is global).
fn metrics_handle() -> PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| install_recorder(ProcessRole::Home).expect("recorder"))
        .clone()
}

struct Server {
    base: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Stage the real model under `ids` into a fresh store.
fn stage(dir: &Path, ids: &[&str]) {
    let cat = Catalog::open(dir).expect("open catalog");
    let src = real_model(RealModel::Smollm2);
    for id in ids {
        cat.stage(
            &src,
            Some(id),
            Some(RealModel::Smollm2.sha256()),
            "test",
            &|_, _| {},
        )
        .expect("stage");
    }
}

fn config(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut cfg = Config::default();
    cfg.store.dir = dir.to_path_buf();
    cfg.pools = vec![PoolConfig {
        id: "p0".into(),
        model: MODEL.into(),
        slots: 4,
        ctx: 512,
        prefill_chunk: 256,
        threads: 1,
        device: "cpu".into(),
    }];
    cfg.server.shutdown_grace_ms = 2_000;
    tweak(&mut cfg);
    cfg
}

impl Server {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
        Server::start_with(&[MODEL], tweak).await
    }

    async fn start_with(models: &[&str], tweak: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let ids: Vec<String> = models.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            stage(&d, &ids)
        })
        .await
        .unwrap();
        let cfg = config(dir.path(), tweak);
        let home = Home::start(
            cfg,
            HomeOptions {
                metrics: Some(metrics_handle()),
                ..HomeOptions::default()
            },
        )
        .await
        .expect("home profile starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            home.serve(listener, None, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Server {
            base,
            client: reqwest::Client::new(),
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, headers, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Submit a task; panics unless 202.
    async fn submit(&self, body: Value) -> String {
        let (s, _, v) = self.post("/v2/tasks", body).await;
        assert_eq!(s, 202, "{v}");
        v["task_id"].as_str().unwrap().to_string()
    }

    /// All frames of a task's SSE stream until it ends.
    async fn events(&self, id: &str, last_event_id: Option<u64>) -> Vec<Frame> {
        let mut req = self.client.get(self.url(&format!("/v2/tasks/{id}/events")));
        if let Some(n) = last_event_id {
            req = req.header("last-event-id", n.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        read_sse(resp, usize::MAX).await
    }

    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("server stops within its grace")
                .unwrap();
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Frame {
    event: String,
    id: Option<u64>,
    data: Value,
}

/// Parse up to `max` SSE frames (comments skipped) from a response.
async fn read_sse(resp: reqwest::Response, max: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while out.len() < max {
        let Some(chunk) = body.next().await else {
            break;
        };
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut f = Frame {
                event: "message".into(),
                id: None,
                data: Value::Null,
            };
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    f.event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    f.id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if data.is_empty() {
                continue; // keep-alive comment
            }
            f.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
            out.push(f);
            if out.len() >= max {
                break;
            }
        }
    }
    out
}

fn text_of(frames: &[Frame]) -> String {
    frames
        .iter()
        .filter(|f| f.event == "token")
        .map(|f| f.data["t"].as_str().unwrap())
        .collect()
}

fn tokens(frames: &[Frame]) -> usize {
    frames.iter().filter(|f| f.event == "token").count()
}

fn last(frames: &[Frame]) -> &Frame {
    frames.last().expect("at least one frame")
}

/// `llorchd generate` on the same model and prompt, greedy.
fn generate_cli(prompt: &str, n: usize) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llorchd"))
        .args(["generate", "-m"])
        .arg(real_model(RealModel::Smollm2))
        .args([
            "-p",
            prompt,
            "-n",
            &n.to_string(),
            "--temperature",
            "0",
            "-t",
            "1",
        ])
        .output()
        .expect("run llorchd generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    s.strip_suffix('\n').unwrap_or(&s).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_streams_end_to_end_and_matches_generate() {
    let srv = Server::start(|_| {}).await;
    let prompt = "The capital of France is";
    let (s, h, v) = srv
        .post(
            "/v2/tasks",
            json!({"prompt": prompt, "max_tokens": 8, "temperature": 0, "model_ref": MODEL}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert!(h.contains_key("x-correlation-id"));
    let id = v["task_id"].as_str().unwrap().to_string();
    assert_eq!(v["queue_position"], 0);
    assert!(v["predicted_start_ms"].is_u64());
    assert!(v["backoff_ms"].is_u64());
    assert_eq!(v["streams"]["sse"], format!("/v2/tasks/{id}/events"));

    let frames = srv.events(&id, None).await;
    // started first, then tokens with consecutive indexes, then end.
    assert_eq!(frames[0].event, "started", "{frames:?}");
    assert!(frames[0].data["predicted_start_ms"].is_u64());
    for (n, f) in frames.iter().enumerate() {
        assert_eq!(f.id, Some(n as u64), "frame ids are consecutive");
    }
    let idx: Vec<u64> = frames
        .iter()
        .filter(|f| f.event == "token")
        .map(|f| f.data["i"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, (0..idx.len() as u64).collect::<Vec<_>>());
    let end = last(&frames);
    assert_eq!(end.event, "end", "{frames:?}");
    assert_eq!(end.data["tokens_out"].as_u64().unwrap() as usize, idx.len());
    assert!(end.data["tokens_in"].as_u64().unwrap() > 0);
    assert!(end.data["decode_ms"].is_u64());
    assert!(frames.iter().any(|f| f.event == "metrics"));

    let (s, st) = srv.get(&format!("/v2/tasks/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(st["state"], "completed");
    assert_eq!(st["tokens_out"], end.data["tokens_out"]);
    assert_eq!(st["pool_id"], "p0");

    // Greedy output equals `llorchd generate`'s.
    let text = text_of(&frames);
    let cli = tokio::task::spawn_blocking(move || generate_cli(prompt, 8))
        .await
        .unwrap();
    assert_eq!(text, cli);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sampling_is_identical_alone_and_under_load() {
    let srv = Server::start(|c| c.pools[0].slots = 8).await;
    let seeded = json!({"prompt": "Once upon a time", "max_tokens": 8,
        "temperature": 0.9, "top_k": 40, "top_p": 0.95, "seed": 1234});
    let alone = {
        let id = srv.submit(seeded.clone()).await;
        srv.events(&id, None).await
    };
    let alone_ids = text_of(&alone);
    assert_eq!(tokens(&alone), 8);

    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            srv.submit(
                json!({"prompt": format!("Story number {i}:"), "max_tokens": 8,
                "temperature": 1.0, "seed": i}),
            )
            .await,
        );
    }
    let mine = srv.submit(seeded).await;
    let srv = Arc::new(srv);
    let readers: Vec<_> = ids
        .iter()
        .map(|id| {
            let (srv, id) = (srv.clone(), id.clone());
            tokio::spawn(async move { srv.events(&id, None).await })
        })
        .collect();
    let loaded = srv.events(&mine, None).await;
    for r in readers {
        assert_eq!(last(&r.await.unwrap()).event, "end");
    }
    assert_eq!(
        text_of(&loaded),
        alone_ids,
        "same seed, same tokens under load"
    );
    let (_, pools) = srv.get("/v2/pools").await;
    assert_eq!(pools["pools"][0]["slots_total"], 8);
    Arc::try_unwrap(srv).ok().unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_start_and_mid_stream() {
    let srv = Server::start(|c| c.pools[0].slots = 1).await;
    let long = srv
        .submit(json!({"prompt": "Count to one hundred:", "max_tokens": 200, "temperature": 0}))
        .await;
    let queued = srv
        .submit(json!({"prompt": "Hello", "max_tokens": 50, "priority": "batch"}))
        .await;
    // Wait for the long task's first tokens.
    let resp = srv
        .client
        .get(srv.url(&format!("/v2/tasks/{long}/events")))
        .send()
        .await
        .unwrap();
    let mut live = resp.bytes_stream();
    let mut seen = String::new();
    while seen.matches("event: token").count() < 3 {
        seen.push_str(std::str::from_utf8(&live.next().await.unwrap().unwrap()).unwrap());
    }
    let (_, st) = srv.get(&format!("/v2/tasks/{queued}")).await;
    assert_eq!(st["state"], "queued");
    assert_eq!(st["queue_position"], 0);

    // Cancel the queued one: it never produces a token.
    let r = srv
        .client
        .post(srv.url(&format!("/v2/tasks/{queued}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let f = srv.events(&queued, None).await;
    assert_eq!(tokens(&f), 0, "{f:?}");
    assert_eq!(last(&f).event, "error");
    assert_eq!(last(&f).data["code"], "CANCELED");

    // Cancel the running one: nothing after the cancel returns.
    let r = srv
        .client
        .post(srv.url(&format!("/v2/tasks/{long}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, st) = srv.get(&format!("/v2/tasks/{long}")).await;
    let events_at_cancel = st["events"].as_u64().unwrap();
    let tokens_at_cancel = st["tokens_out"].as_u64().unwrap();
    assert_eq!(st["state"], "canceled");
    assert!(tokens_at_cancel < 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, st) = srv.get(&format!("/v2/tasks/{long}")).await;
    assert_eq!(st["events"].as_u64().unwrap(), events_at_cancel);
    assert_eq!(st["tokens_out"].as_u64().unwrap(), tokens_at_cancel);
    // The live stream ends with the error frame and no token after it.
    while let Some(c) = live.next().await {
        seen.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
    }
    let tail = &seen[seen.rfind("event: error").expect("error frame")..];
    assert!(
        tail.contains("CANCELED") && !tail.contains("event: token"),
        "{tail}"
    );
    let full = srv.events(&long, None).await;
    assert_eq!(last(&full).data["code"], "CANCELED");
    assert_eq!(tokens(&full) as u64, tokens_at_cancel);
    // Cancel is idempotent; unknown ids are 404.
    let r = srv
        .client
        .post(srv.url(&format!("/v2/tasks/{long}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, body, _) = {
        let r = srv
            .client
            .post(srv.url("/v2/tasks/nope/cancel"))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap(), ())
    };
    assert_eq!(s, 404);
    assert_eq!(body["code"], "INVALID_PARAMS");
    srv.shutdown().await;
}

fn check_429(status: u16, h: &reqwest::header::HeaderMap, v: &Value, label: &str) {
    assert_eq!(status, 429, "{v}");
    let ra: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    let backoff: u64 = h["x-backoff-ms"].to_str().unwrap().parse().unwrap();
    assert!(ra >= 1);
    assert!(backoff >= 1);
    assert_eq!(ra, backoff.div_ceil(1000).max(1));
    assert_eq!(v["code"], "ADMISSION_REJECT");
    assert_eq!(v["retriable"], true);
    assert_eq!(v["retry_after_ms"].as_u64(), Some(backoff));
    assert_eq!(v["policy_label"], label);
    assert!(h.contains_key("x-correlation-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturation_answers_429_with_backoff_and_no_5xx() {
    let srv = Arc::new(
        Server::start(|c| {
            c.pools[0].slots = 1;
            c.admission.queue_capacity = 2;
        })
        .await,
    );
    let mut handles = Vec::new();
    for i in 0..40 {
        let srv = srv.clone();
        handles.push(tokio::spawn(async move {
            srv.post(
                "/v2/tasks",
                json!({"prompt": format!("Task {i}"), "max_tokens": 64}),
            )
            .await
        }));
    }
    let mut admitted = Vec::new();
    let mut rejected = 0;
    for h in handles {
        let (s, headers, v) = h.await.unwrap();
        assert!(s < 500, "no 5xx under saturation: {s} {v}");
        if s == 202 {
            admitted.push(v["task_id"].as_str().unwrap().to_string());
        } else {
            check_429(s, &headers, &v, "reject");
            rejected += 1;
        }
    }
    assert!(rejected >= 30, "{rejected} rejected");
    assert!(!admitted.is_empty() && admitted.len() <= 10);
    // OpenAI requests share the queue and its 429s.
    let r = srv
        .client
        .post(srv.url("/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "x", "max_tokens": 8}))
        .send()
        .await
        .unwrap();
    if r.status() == 429 {
        assert!(r.headers().contains_key("retry-after"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "admission_reject");
    }
    let (_, m) = (
        0,
        srv.client
            .get(srv.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        m.contains("orchd_admission_rejected_total{reason=\"admission_reject\"}"),
        "{m}"
    );
    for id in &admitted {
        srv.client
            .post(srv.url(&format!("/v2/tasks/{id}/cancel")))
            .send()
            .await
            .unwrap();
    }
    Arc::try_unwrap(srv).ok().unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_lru_pushes_out_the_oldest_batch_task() {
    let srv = Server::start(|c| {
        c.pools[0].slots = 1;
        c.admission.queue_capacity = 2;
        c.admission.full_policy = FullQueuePolicy::DropLru;
    })
    .await;
    let running = srv
        .submit(json!({"prompt": "Tell me a story", "max_tokens": 100}))
        .await;
    // Let the dispatcher take it, so the queue holds only what follows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.get(&format!("/v2/tasks/{running}")).await.1["state"] != "running" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b1 = srv
        .submit(json!({"prompt": "a", "max_tokens": 8, "priority": "batch"}))
        .await;
    let b2 = srv
        .submit(json!({"prompt": "b", "max_tokens": 8, "priority": "batch"}))
        .await;
    let (s, _, v) = srv
        .post(
            "/v2/tasks",
            json!({"prompt": "c", "max_tokens": 8, "priority": "interactive"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["queue_position"], 0, "interactive goes first");
    let f = srv.events(&b1, None).await;
    assert_eq!(last(&f).data["code"], "QUEUE_FULL_DROP_LRU");
    assert_eq!(last(&f).data["retriable"], true);
    assert_eq!(
        srv.get(&format!("/v2/tasks/{b2}")).await.1["state"],
        "queued"
    );
    // Another interactive task pushes out the last batch task.
    srv.submit(json!({"prompt": "c2", "max_tokens": 8})).await;
    assert_eq!(
        last(&srv.events(&b2, None).await).data["code"],
        "QUEUE_FULL_DROP_LRU"
    );
    // Nothing of the same or lower priority is left for a batch task to
    // push out: 429 under the drop-lru policy.
    let (s, h, v) = srv
        .post(
            "/v2/tasks",
            json!({"prompt": "d", "max_tokens": 8, "priority": "batch"}),
        )
        .await;
    check_429(s, &h, &v, "drop-lru");
    srv.client
        .post(srv.url(&format!("/v2/tasks/{running}/cancel")))
        .send()
        .await
        .unwrap();
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_with_last_event_id() {
    let srv = Server::start(|_| {}).await;
    let id = srv
        .submit(json!({"prompt": "List three colors:", "max_tokens": 10, "temperature": 0}))
        .await;
    let resp = srv
        .client
        .get(srv.url(&format!("/v2/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    let first = read_sse(resp, 5).await; // then hang up
    assert_eq!(first.len(), 5);
    let last_id = first.last().unwrap().id.unwrap();
    let rest = srv.events(&id, Some(last_id)).await;
    assert_eq!(rest[0].id, Some(last_id + 1), "resumes right after");
    let joined: Vec<Frame> = first.into_iter().chain(rest).collect();
    for (n, f) in joined.iter().enumerate() {
        assert_eq!(f.id, Some(n as u64), "no gap, no repeat");
    }
    assert_eq!(last(&joined).event, "end");
    let whole = srv.events(&id, None).await;
    assert_eq!(joined, whole);
    // Resuming after the end yields nothing more; a bad id is a 400.
    let after = srv.events(&id, Some(last(&whole).id.unwrap())).await;
    assert!(after.is_empty());
    let r = srv
        .client
        .get(srv.url(&format!("/v2/tasks/{id}/events")))
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_turns_reuse_kv_cache() {
    let srv = Server::start(|_| {}).await;
    let p1 = "<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n";
    let id1 = srv
        .submit(json!({"prompt": p1, "max_tokens": 6, "temperature": 0, "session_id": "chat-1"}))
        .await;
    let f1 = srv.events(&id1, None).await;
    assert_eq!(last(&f1).event, "end");
    assert_eq!(last(&f1).data["kv_warmth"], false);
    let (s, sess) = srv.get("/v2/sessions/chat-1").await;
    assert_eq!(s, 200);
    assert_eq!(sess["turns"], 1);
    assert_eq!(sess["pool_id"], "p0");
    assert!(sess["ttl_remaining_ms"].as_u64().unwrap() > 590_000);

    let p2 = format!(
        "{p1}{}<|im_end|>\n<|im_start|>user\nAnother one.<|im_end|>\n<|im_start|>assistant\n",
        text_of(&f1)
    );
    let id2 = srv
        .submit(json!({"prompt": p2, "max_tokens": 4, "temperature": 0, "session_id": "chat-1"}))
        .await;
    let f2 = srv.events(&id2, None).await;
    let end = last(&f2);
    assert_eq!(end.event, "end", "{f2:?}");
    assert_eq!(end.data["kv_warmth"], true);
    assert!(end.data["reused_tokens"].as_u64().unwrap() >= 10);
    let m = f2.iter().find(|f| f.event == "metrics").unwrap();
    assert_eq!(m.data["kv_warmth"], true);
    let (_, sess) = srv.get("/v2/sessions/chat-1").await;
    assert_eq!(sess["turns"], 2);
    assert_eq!(sess["kv_warmth"], true);
    assert_eq!(sess["last_task_id"], id2.as_str());

    // Strict (the default): the warm turn says what a cold run says.
    let cold = srv
        .submit(json!({"prompt": p2, "max_tokens": 4, "temperature": 0}))
        .await;
    let fc = srv.events(&cold, None).await;
    assert_eq!(text_of(&fc), text_of(&f2));

    // best_effort reuses the generated tokens' KV as well.
    for (i, p) in [p1.to_string(), p2.clone()].iter().enumerate() {
        let id = srv
            .submit(
                json!({"prompt": p, "max_tokens": 6 - 2 * i, "temperature": 0,
                           "session_id": "chat-2", "determinism": "best_effort"}),
            )
            .await;
        let f = srv.events(&id, None).await;
        if i == 1 {
            let strict = end.data["reused_tokens"].as_u64().unwrap();
            let loose = last(&f).data["reused_tokens"].as_u64().unwrap();
            assert!(
                loose > strict,
                "best_effort reused {loose}, strict {strict}"
            );
        }
    }

    let r = srv
        .client
        .delete(srv.url("/v2/sessions/chat-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(srv.get("/v2/sessions/chat-1").await.0, 404);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_turns_are_bounded() {
    let srv = Server::start(|c| c.sessions.max_turns = 2).await;
    for _ in 0..2 {
        let id = srv
            .submit(json!({"prompt": "Hi", "max_tokens": 2, "session_id": "s"}))
            .await;
        srv.events(&id, None).await;
    }
    let (s, _, v) = srv
        .post(
            "/v2/tasks",
            json!({"prompt": "Hi", "max_tokens": 2, "session_id": "s"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["code"], "INVALID_PARAMS");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_reload_with_a_failing_reload_that_rolls_back() {
    let srv = Server::start_with(&[MODEL, "smollm2-b", "broken"], |c| {
        c.pools[0].slots = 2;
    })
    .await;
    // Break the staged copy so that loading it fails.
    let broken = srv.dir.path().join("models/broken.gguf");
    let len = std::fs::metadata(&broken).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&broken)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let (s, _, v) = srv
        .post("/v2/pools/p0/reload", json!({"new_model_ref": "broken"}))
        .await;
    assert!((400..500).contains(&s), "{s} {v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("still serves smollm2"),
        "{v}"
    );
    let (s, _, v) = srv
        .post("/v2/pools/p0/reload", json!({"new_model_ref": "missing"}))
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("MODEL_NOT_FOUND")));
    // The old model still serves.
    let (_, pools) = srv.get("/v2/pools").await;
    assert_eq!(pools["pools"][0]["model_id"], MODEL);
    assert_eq!(pools["pools"][0]["state"], "ready");
    let running = srv
        .submit(json!({"prompt": "Hello there", "max_tokens": 6, "temperature": 0}))
        .await;

    // Drain: the running task finishes; new tasks are refused.
    let (s, _, v) = srv
        .post("/v2/pools/p0/drain", json!({"deadline_ms": 120000}))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["draining"], true);
    let (s, _, v) = srv
        .post("/v2/tasks", json!({"prompt": "x", "max_tokens": 4}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("POOL_UNAVAILABLE")),
        "{v}"
    );
    let f = srv.events(&running, None).await;
    assert_eq!(
        last(&f).event,
        "end",
        "in-flight work completes during a drain"
    );
    assert_eq!(tokens(&f), 6);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h) = srv.get("/v2/pools/p0/health").await;
        if h["state"] == "draining" && h["running"] == 0 {
            assert_eq!(h["ready"], false);
            break;
        }
        assert!(Instant::now() < deadline, "{h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(srv.get("/readyz").await.0, 503);

    // A good reload makes it Ready again with the new model.
    let (s, _, v) = srv
        .post("/v2/pools/p0/reload", json!({"new_model_ref": "smollm2-b"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model_id"], "smollm2-b");
    assert_eq!(v["state"], "ready");
    assert_eq!(srv.get("/readyz").await.0, 200);
    let id = srv
        .submit(json!({"prompt": "Hello", "max_tokens": 4, "model_ref": "smollm2-b"}))
        .await;
    assert_eq!(last(&srv.events(&id, None).await).event, "end");
    let (s, _, v) = srv
        .post(
            "/v2/tasks",
            json!({"prompt": "Hello", "max_tokens": 4, "model_ref": MODEL}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("POOL_UNAVAILABLE")),
        "{v}"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_stable_codes() {
    let srv = Server::start(|c| c.server.max_body_bytes = 4096).await;
    let raw = |body: &'static str| {
        srv.client
            .post(srv.url("/v2/tasks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = raw("{not json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().contains_key("x-correlation-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "INVALID_PARAMS");
    assert_eq!(v["retriable"], false);
    let r = raw("").await.unwrap();
    assert_eq!(r.status(), 400);

    let big = "x".repeat(10_000);
    let (s, _, v) = srv.post("/v2/tasks", json!({"prompt": big})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (413, Some("INVALID_PARAMS")),
        "{v}"
    );

    let cases = [
        (
            json!({"prompt": "hi", "model_ref": "nope"}),
            404,
            "MODEL_NOT_FOUND",
        ),
        (
            json!({"prompt": "hi", "max_tokens": 600}),
            400,
            "CTX_EXCEEDED",
        ),
        (json!({"prompt": "word ".repeat(600)}), 400, "CTX_EXCEEDED"),
        (
            json!({"prompt": "hi", "max_tokens": 400, "deadline_ms": 1}),
            400,
            "DEADLINE_UNMET",
        ),
        (
            json!({"prompt": "hi", "surprise": true}),
            400,
            "INVALID_PARAMS",
        ),
        (
            json!({"prompt": "hi", "temperature": -1}),
            400,
            "INVALID_PARAMS",
        ),
        (
            json!({"prompt": "hi", "task_id": "../x"}),
            400,
            "INVALID_PARAMS",
        ),
        (json!({"messages": []}), 400, "INVALID_PARAMS"),
        (
            json!({"prompt": "hi", "placement": {"mode": "pin", "pin_pool_id": "zz"}}),
            400,
            "INVALID_PARAMS",
        ),
    ];
    for (body, status, code) in cases {
        let (s, _, v) = srv.post("/v2/tasks", body.clone()).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (status, Some(code)),
            "{body} → {v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(srv.get("/v2/tasks/unknown").await.0, 404);
    assert_eq!(srv.get("/v2/tasks/unknown/events").await.0, 404);
    assert_eq!(srv.get("/v2/nothing-here").await.0, 404);

    // Correlation ids are echoed, or made up.
    let r = srv
        .client
        .get(srv.url("/healthz"))
        .header("x-correlation-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-correlation-id"], "abc-123");
    // OpenAI routes answer in OpenAI's shape.
    let (s, _, v) = srv
        .post(
            "/v1/chat/completions",
            json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    // A task id may be chosen by the client, once.
    let id = srv
        .submit(json!({"prompt": "hi", "max_tokens": 1, "task_id": "mine-1"}))
        .await;
    assert_eq!(id, "mine-1");
    let (s, _, v) = srv
        .post(
            "/v2/tasks",
            json!({"prompt": "hi", "max_tokens": 1, "task_id": "mine-1"}),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("INVALID_PARAMS")));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_surface_with_reqwest() {
    let srv = Server::start(|_| {}).await;
    let (s, models) = srv.get("/v1/models").await;
    assert_eq!(s, 200);
    assert_eq!(models["data"][0]["id"], MODEL);

    let (s, _, v) = srv
        .post(
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}],
                   "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 2}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let usage = &v["usage"];
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=4).contains(&completion));
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + completion
    );
    let lp = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(lp.len() as u64, completion);
    assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 2);
    assert!(lp[0]["logprob"].as_f64().unwrap() <= 0.0);

    // Streaming chat: role first, content deltas, finish, usage, [DONE].
    let resp = srv
        .client
        .post(srv.url("/v1/chat/completions"))
        .json(
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}],
                      "max_tokens": 4, "temperature": 0, "stream": true,
                      "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let chunks = read_sse(resp, usize::MAX).await;
    assert_eq!(chunks.last().unwrap().data, Value::String("[DONE]".into()));
    assert_eq!(chunks[0].data["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c.data["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(chunks
        .iter()
        .any(|c| c.data["choices"][0]["finish_reason"].is_string()));
    assert!(chunks
        .iter()
        .any(|c| c.data["usage"]["total_tokens"].is_u64()));

    let (s, _, v) = srv
        .post(
            "/v1/completions",
            json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8,
                   "temperature": 0, "logprobs": 1}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let cli = tokio::task::spawn_blocking(|| generate_cli("The capital of France is", 8))
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), cli);
    assert_eq!(
        v["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    srv.shutdown().await;
}

/// Is the pool idle (nothing running or queued)?
async fn idle(srv: &Server) -> bool {
    let (_, p) = srv.get("/v2/pools").await;
    p["pools"][0]["running"] == 0 && p["pools"][0]["queue_depth"] == 0
}

async fn wait_idle(srv: &Server, within: Duration) {
    let until = Instant::now() + within;
    while !idle(srv).await {
        assert!(Instant::now() < until, "the pool is still busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_clients_that_hang_up_cancel_their_work() {
    let srv = Server::start(|_| {}).await;
    // Greedy replies that run to max_tokens (a sampled one may end early).
    // Streaming: read a few chunks, then drop the connection.
    let resp = srv
        .client
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "Write a long story."}],
                      "max_tokens": 400, "temperature": 0, "stream": true}))
        .send()
        .await
        .unwrap();
    let chunks = read_sse(resp, 4).await;
    let task = chunks[0].data["id"]
        .as_str()
        .unwrap()
        .strip_prefix("chatcmpl-")
        .unwrap()
        .to_string();
    wait_idle(&srv, Duration::from_secs(10)).await;
    let (_, st) = srv.get(&format!("/v2/tasks/{task}")).await;
    assert_eq!(st["state"], "canceled", "{st}");
    assert!(st["tokens_out"].as_u64().unwrap() < 400);

    // Non-streaming: the client gives up before the answer.
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let r = short
        .post(srv.url("/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0}))
        .send()
        .await;
    assert!(r.is_err(), "the request should time out on the client");
    wait_idle(&srv, Duration::from_secs(10)).await;
    srv.shutdown().await;
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LLORCH_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// The official `openai` Python client (ci/test.sh installs it) streams a
/// chat completion and a completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_client_streams() {
    let srv = Server::start(|_| {}).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let base = srv.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .arg(format!("{base}/v1"))
            .arg(MODEL)
            .output()
            .expect("run python (set LLORCH_PYTHON, or run ci/test.sh)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(v["chat_chunks"].as_u64().unwrap() >= 2, "{v}");
    assert!(!v["chat_text"].as_str().unwrap().is_empty());
    assert!(v["completion_chunks"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["usage_total"].as_u64().unwrap() > 0);
    assert_eq!(v["rate_limited"], false);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_catalog_and_metrics() {
    // Its own pool id: the metrics recorder is per process, and tests may
    // share a process.
    let srv = Server::start(|c| c.pools[0].id = "ops".into()).await;
    let (s, h) = srv.get("/healthz").await;
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
    let (s, r) = srv.get("/readyz").await;
    assert_eq!((s, r["pools_ready"].as_u64()), (200, Some(1)));
    let (s, caps) = srv.get("/v2/meta/capabilities").await;
    assert_eq!(s, 200);
    assert_eq!(caps["api_version"], "v2");
    assert_eq!(caps["models"][0]["id"], MODEL);
    assert_eq!(caps["models"][0]["ctx_max"], 512);
    assert_eq!(caps["workloads"][0], "completion");
    assert_eq!(caps["concurrency"]["total_slots"], 4);
    let (s, h) = srv.get("/v2/pools/ops/health").await;
    assert_eq!(
        (s, h["live"].as_bool(), h["ready"].as_bool()),
        (200, Some(true), Some(true))
    );
    assert!(
        h["decode_step_ms"].as_f64().unwrap() > 0.0,
        "rates measured at start: {h}"
    );

    // Catalog.
    let (s, list) = srv.get("/v2/catalog/models").await;
    assert_eq!(s, 200);
    assert_eq!(list["models"][0]["id"], MODEL);
    assert_eq!(list["models"][0]["sha256"], RealModel::Smollm2.sha256());
    let (s, _, v) = srv
        .post(&format!("/v2/catalog/models/{MODEL}/verify"), json!({}))
        .await;
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "{v}");
    let (s, av) = srv.get("/v2/catalog/availability").await;
    assert_eq!(s, 200);
    assert_eq!(av["models"][0]["nodes"][0]["pools"][0], "ops");
    assert_eq!(av["models"][0]["replicated"], false);
    let (s, _, v) = srv
        .post(
            &format!("/v2/catalog/models/{MODEL}/state"),
            json!({"state": "Retired"}),
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("Retired")));
    let (s, _, v) = srv
        .post("/v2/tasks", json!({"prompt": "x", "max_tokens": 2}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (404, Some("MODEL_NOT_FOUND")),
        "{v}"
    );
    srv.post(
        &format!("/v2/catalog/models/{MODEL}/state"),
        json!({"state": "active"}),
    )
    .await;
    let r = srv
        .client
        .delete(srv.url(&format!("/v2/catalog/models/{MODEL}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a served model cannot be removed");
    let (s, _, v) = srv
        .post(
            "/v2/catalog/models",
            json!({"id": "copy", "source": real_model(RealModel::Smollm2)}),
        )
        .await;
    assert_eq!((s, v["id"].as_str()), (201, Some("copy")), "{v}");
    let r = srv
        .client
        .delete(srv.url("/v2/catalog/models/copy"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(srv.get("/v2/catalog/models/copy").await.0, 404);
    let (s, _, v) = srv
        .post("/v2/catalog/models", json!({"source": "/nonexistent.gguf"}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("INVALID_PARAMS")),
        "{v}"
    );

    // Metrics after a task.
    let id = srv.submit(json!({"prompt": "Hi", "max_tokens": 4})).await;
    srv.events(&id, None).await;
    // Pool gauges refresh every second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let m = srv
        .client
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "orchd_admission_enqueued_total ",
        "orchd_tasks_finished_total{outcome=\"ok\"}",
        "orchd_tasks_started_total{pool_id=\"ops\"}",
        "orchd_tokens_out_total{pool_id=\"ops\"}",
        "orchd_time_to_first_token_seconds_bucket{pool_id=\"ops\"",
        "pool_slots_total{pool_id=\"ops\"} 4",
        "pool_ready{pool_id=\"ops\"} 1",
        "orchd_admission_queue_depth{pool_id=\"ops\"}",
        "orchd_tasks_dispatched_total{node_id=\"local\",outcome=\"ok\"}",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_then_cancels() {
    let srv = Server::start(|c| {
        c.pools[0].slots = 1;
        c.server.shutdown_grace_ms = 300;
    })
    .await;
    // Greedy counting runs to max_tokens (a sampled reply may end early).
    let long = srv
        .submit(json!({
            "prompt": "Count from 1 to 1000: 1, 2, 3, 4,",
            "max_tokens": 400,
            "temperature": 0.0
        }))
        .await;
    let resp = srv
        .client
        .get(srv.url(&format!("/v2/tasks/{long}/events")))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(read_sse(resp, usize::MAX));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = srv.client.clone();
    let url = srv.url("/v2/tasks");
    let t0 = Instant::now();
    srv.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    let frames = reader.await.unwrap();
    assert_eq!(last(&frames).event, "error");
    assert_eq!(last(&frames).data["code"], "CANCELED");
    // The listener is gone.
    assert!(client
        .post(url)
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .is_err());
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The binary: `llorchd serve --config FILE` tells systemd READY=1 only
/// once it serves, answers, serves `/metrics` alone on `metrics_bind`, logs
/// JSON, and exits 0 on SIGTERM.
#[test]
fn binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), &[MODEL]);
    let port = free_port();
    let metrics_port = free_port();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cfg = dir.path().join("llorchd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\nmetrics_bind = \"127.0.0.1:{metrics_port}\"\n[store]\ndir = \"{}\"\n[logging]\nformat = \"json\"\n[[pools]]\nid = \"p0\"\nmodel = \"{MODEL}\"\nslots = 2\nctx = 256\nthreads = 1\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // systemd's side: every notification, and whether the pools were
    // Ready (asked at once, before anything else) when READY=1 came.
    let ready_seen = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut msgs = Vec::new();
        let mut pools = None;
        while let Ok(n) = notify.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if pools.is_none() && msg.lines().any(|l| l == "READY=1") {
                pools = Some(http_get(port, "/v2/pools"));
            }
            msgs.push(msg);
            // Then a watchdog ping (WATCHDOG_USEC is set below).
            if pools.is_some() && msgs.iter().any(|m| m == "WATCHDOG=1") {
                break;
            }
        }
        (msgs, pools)
    });
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_llorchd"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (msgs, pools_at_ready) = ready_seen.join().unwrap();
    assert!(
        msgs.iter().any(|m| m.starts_with("STATUS=")),
        "no STATUS= line: {msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m == "WATCHDOG=1"),
        "no watchdog ping: {msgs:?}"
    );
    let pools_at_ready =
        pools_at_ready.unwrap_or_else(|| panic!("no READY=1 within 30 s; got {msgs:?}"));
    let (status, body) = pools_at_ready;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["pools"][0]["state"], "ready",
        "READY=1 before the pool: {v}"
    );

    const TASKS: u64 = 3;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ok, tokens_out, texts, scrape) = rt.block_on(async {
        let c = reqwest::Client::new();
        let mut tokens_out = 0;
        let mut texts = Vec::new();
        for i in 0..TASKS {
            let r = c
                .post(format!("http://127.0.0.1:{port}/v1/completions"))
                .json(
                    &json!({"prompt": format!("Hello quokka-{i}, tell me a story."),
                              "max_tokens": 12, "temperature": 0}),
                )
                .send()
                .await
                .unwrap();
            if r.status() != 200 {
                return (false, 0, texts, String::new());
            }
            let v: Value = r.json().await.unwrap();
            tokens_out += v["usage"]["completion_tokens"].as_u64().unwrap();
            texts.push(v["choices"][0]["text"].as_str().unwrap().to_string());
        }
        // Pool gauges refresh every second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let scrape = c
            .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (true, tokens_out, texts, scrape)
    });
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        ok,
        "server did not serve:\n{logs}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "exit {:?}\n{logs}", out.status);
    // JSON log lines with the task fields and a narration; no prompt text.
    let admitted = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "task admitted" || v["fields"]["message"] == "task admitted")
        .unwrap_or_else(|| panic!("no admission log line:\n{logs}"));
    let flat = admitted.to_string();
    for f in [
        "correlation_id",
        "job_id",
        "pool_id",
        "queue_position",
        "human",
    ] {
        assert!(flat.contains(f), "{f} missing: {flat}");
    }
    assert!(!logs.contains("quokka"), "the prompt leaked into the logs");
    for t in texts.iter().map(|t| t.trim()).filter(|t| t.len() >= 12) {
        assert!(
            !logs.contains(t),
            "generated text {t:?} leaked into the logs"
        );
    }

    // The scrape counts what ran and shows the pool as configured.
    let value = |series: &str| -> f64 {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing from\n{scrape}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("orchd_tasks_finished_total{outcome=\"ok\"}"),
        TASKS as f64
    );
    assert_eq!(
        value("orchd_tasks_started_total{pool_id=\"p0\"}"),
        TASKS as f64
    );
    assert_eq!(value("orchd_admission_enqueued_total"), TASKS as f64);
    assert_eq!(
        value("orchd_tasks_dispatched_total{node_id=\"local\",outcome=\"ok\"}"),
        TASKS as f64
    );
    assert_eq!(
        value("orchd_tokens_out_total{pool_id=\"p0\"}"),
        tokens_out as f64
    );
    assert_eq!(value("pool_slots_total{pool_id=\"p0\"}"), 2.0);
    assert_eq!(value("pool_slots_free{pool_id=\"p0\"}"), 2.0);
    assert_eq!(value("pool_ready{pool_id=\"p0\"}"), 1.0);
    assert_eq!(value("orchd_admission_queue_depth{pool_id=\"p0\"}"), 0.0);
    assert_eq!(
        value("orchd_time_to_first_token_seconds_count{pool_id=\"p0\"}"),
        TASKS as f64
    );
    if let Err(e) = llorchd::testing::promtool_check_metrics(&scrape) {
        panic!("{e}\n{scrape}");
    }
}

/// A blocking HTTP/1.0 GET on 127.0.0.1 (for threads outside the runtime).
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}
