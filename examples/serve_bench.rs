//! Serving benchmarks on a real model, in one process (see ci/bench/ and
//! docs/BENCHMARKS.md):
//!
//! - `ttft`: time to first token through HTTP (POST /v2/tasks, then the SSE
//!   stream's first token frame) against a direct submit to the same pool's
//!   engine, alternating, with a fresh prompt each time.
//! - `streams`: aggregate generated tokens per second with 1, 4 and 8
//!   concurrent SSE streams.
//!
//! `cargo run --release --example serve_bench -- ttft --model FILE`

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use llorchd::config::{Config, PoolConfig};
use llorchd::model::decode::DecodeParams;
use llorchd::model::SamplingParams;
use llorchd::profile::{Home, HomeOptions};
use llorchd::store::Catalog;
use llorchd::worker::{EngineEvent, EngineTask};
use serde_json::json;

struct Args {
    mode: String,
    model: std::path::PathBuf,
    threads: usize,
    reps: usize,
    tokens: usize,
}

fn args() -> Args {
    let mut a = Args {
        mode: String::new(),
        model: llorchd::testing::model_cache_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        reps: 20,
        tokens: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || it.next().expect("a value after the flag");
        match x.as_str() {
            "--model" => a.model = val().into(),
            "--threads" => a.threads = val().parse().expect("threads"),
            "--reps" => a.reps = val().parse().expect("reps"),
            "--tokens" => a.tokens = val().parse().expect("tokens"),
            m if a.mode.is_empty() && !m.starts_with('-') => a.mode = m.to_string(),
            other => panic!("unknown argument {other}; usage: serve_bench ttft|streams [--model FILE] [--threads N] [--reps N] [--tokens N]"),
        }
    }
    a
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.9), v[0])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    Catalog::open(dir.path())
        .unwrap()
        .stage(&a.model, Some("bench"), None, "bench", &|_, _| {})
        .expect("stage the model");
    let mut cfg = Config::default();
    cfg.store.dir = dir.path().into();
    cfg.pools = vec![PoolConfig {
        id: "p0".into(),
        model: "bench".into(),
        slots: 8,
        ctx: 1024,
        threads: a.threads,
        ..PoolConfig::default()
    }];
    cfg.admission.queue_capacity = 64;
    let home = Home::start(cfg, HomeOptions::default()).await.unwrap();
    let pool = home.pools[0].pool().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(home.serve(listener, None, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    println!(
        "model {} · {} engine thread(s) · {} CPUs",
        a.model.display(),
        a.threads,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // First token of an HTTP task, from the POST to its first token frame.
    let http_ttft = |prompt: String, max_tokens: usize| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let t0 = Instant::now();
            let r: serde_json::Value = client
                .post(format!("{base}/v2/tasks"))
                .json(&json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = r["task_id"].as_str().expect("admitted").to_string();
            let resp = client
                .get(format!("{base}/v2/tasks/{id}/events"))
                .send()
                .await
                .unwrap();
            let mut body = resp.bytes_stream();
            let mut buf = Vec::new();
            let mut first = None;
            let mut n = 0usize;
            while let Some(c) = body.next().await {
                buf.extend_from_slice(&c.unwrap());
                let text = String::from_utf8_lossy(&buf);
                let tokens = text.matches("event: token").count();
                if tokens > 0 && first.is_none() {
                    first = Some(t0.elapsed());
                }
                n = tokens;
                if text.contains("event: end") || text.contains("event: error") {
                    break;
                }
            }
            (first.unwrap_or_default(), n, t0.elapsed())
        }
    };

    match a.mode.as_str() {
        "ttft" => {
            let tok = pool.engine().unwrap().model.tokenizer.clone();
            let (mut direct, mut http) = (Vec::new(), Vec::new());
            for r in 0..a.reps + 2 {
                let text = format!(
                    "Request {r}: summarize the history of the printing press in a few sentences."
                );
                // Direct: straight to the engine thread.
                let prompt = tok.encode(&format!("D{text}"), true, true);
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let t0 = Instant::now();
                pool.submit(EngineTask {
                    id: format!("d{r}"),
                    prompt,
                    params: DecodeParams {
                        sampling: SamplingParams::greedy(),
                        max_tokens: 1,
                        stop: vec![],
                        logprobs: None,
                    },
                    session: None,
                    events: tx,
                    cancel: Arc::new(AtomicBool::new(false)),
                    submitted_at: t0,
                    best_effort_reuse: false,
                })
                .unwrap();
                let mut d = Duration::ZERO;
                while let Some(ev) = rx.recv().await {
                    match ev {
                        EngineEvent::Token(_) if d.is_zero() => d = t0.elapsed(),
                        EngineEvent::Finished(_) | EngineEvent::Failed { .. } => break,
                        _ => {}
                    }
                }
                let (h, _, _) = http_ttft(format!("H{text}"), 1).await;
                if r >= 2 {
                    // The first two are warm-up.
                    direct.push(d.as_secs_f64() * 1000.0);
                    http.push(h.as_secs_f64() * 1000.0);
                }
            }
            let diffs: Vec<f64> = http.iter().zip(&direct).map(|(h, d)| h - d).collect();
            let (dm, d90, dmin) = stats(direct);
            let (hm, h90, hmin) = stats(http);
            let (diff_med, diff_90, _) = stats(diffs);
            println!("time to first token over {} runs (ms):", a.reps);
            println!("| path | median | p90 | min |");
            println!("| --- | ---: | ---: | ---: |");
            println!("| direct engine submit | {dm:.2} | {d90:.2} | {dmin:.2} |");
            println!("| HTTP POST + SSE | {hm:.2} | {h90:.2} | {hmin:.2} |");
            println!(
                "HTTP overhead: median of paired differences {diff_med:.2} ms (p90 {diff_90:.2}); difference of medians {:.2} ms",
                hm - dm
            );
        }
        "streams" => {
            println!(
                "| concurrent streams | tokens | wall s | aggregate tok/s | per stream tok/s | median first token ms |"
            );
            println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
            let mut single = 0.0;
            for c in [1usize, 4, 8] {
                let t0 = Instant::now();
                let runs: Vec<_> = (0..c)
                    .map(|i| {
                        tokio::spawn(http_ttft(
                            format!(
                                "Story {i}: Write a long story about a dragon who learns to cook."
                            ),
                            a.tokens,
                        ))
                    })
                    .collect();
                let (mut total, mut firsts) = (0, Vec::new());
                for r in runs {
                    let (first, n, _) = r.await.unwrap();
                    total += n;
                    firsts.push(first.as_secs_f64() * 1000.0);
                }
                let wall = t0.elapsed().as_secs_f64();
                let agg = total as f64 / wall;
                if c == 1 {
                    single = agg;
                }
                println!(
                    "| {c} | {total} | {wall:.2} | {agg:.1} | {:.1} | {:.0} |",
                    agg / c as f64,
                    stats(firsts).0
                );
                if c == 8 && single > 0.0 {
                    println!("8 streams / 1 stream: {:.2}x", agg / single);
                }
            }
        }
        m => panic!("unknown mode {m:?}: ttft or streams"),
    }
    let _ = stop.send(());
    let _ = server.await;
}
