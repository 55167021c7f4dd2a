//! The cloud profile end to end: control planes and workers as real
//! `llorchd` processes on 127.0.0.1 ports (one test in a network namespace
//! of its own), the real SmolLM2 model staged on the workers that serve it,
//! short heartbeat intervals and node timeouts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use llorchd::testing::{real_model, RealModel};

const BIN: &str = env!("CARGO_BIN_EXE_llorchd");
const TOKEN: &str = "cloud-test-token-0123456789abcdef";
/// Node timeout of the control planes here, and the workers' heartbeat.
const TIMEOUT_MS: u64 = 2000;
const INTERVAL_S: u64 = 1;
/// A prompt SmolLM2 answers at length (greedy).
const LONG_PROMPT: &str = "Count from 1 to 500, separated by commas: 1, 2, 3,";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `llorchd serve`, killed when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    cfg: PathBuf,
    envs: Vec<(String, String)>,
    /// Run inside this network namespace (`ip netns exec`).
    netns: Option<String>,
}

impl Proc {
    fn spawn(name: &str, cfg: &Path, envs: &[(&str, &str)], netns: Option<&str>) -> Proc {
        let mut p = Proc {
            name: name.to_string(),
            child: None,
            log: cfg.with_extension("log"),
            cfg: cfg.to_path_buf(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            netns: netns.map(String::from),
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        c.args(["serve", "--config"])
            .arg(&self.cfg)
            .env_remove("LLORCH_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("LLORCH_API_TOKEN")
            .env_remove("LLORCH_API_TOKEN_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("LLORCH_API_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        self.child = Some(c.spawn().unwrap());
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > until {
                let _ = c.kill();
                panic!("{} did not stop on SIGTERM:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            unsafe {
                // A stopped process must be continued to die cleanly.
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
        }
        self.kill();
    }
}

/// Where one test keeps its files.
struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Stage SmolLM2 as `smollm2` in the store of `node`.
    fn stage_smollm2(&self, node: &str) {
        let out = Command::new(BIN)
            .args(["models", "stage", "--id", "smollm2"])
            .arg(real_model(RealModel::Smollm2))
            .env_remove("LLORCH_CONFIG")
            .env("LLORCH_STORE_DIR", self.path(node))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn control(&self, name: &str, bind: &str, extra: &str) -> PathBuf {
        let cfg = self.path(&format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "profile = \"cloud\"\nrole = \"control\"\n{extra}\n[server]\nbind = \"{bind}\"\nshutdown_grace_ms = 2000\n[store]\ndir = \"{}\"\n[cloud]\nnode_timeout_ms = {TIMEOUT_MS}\n[logging]\nformat = \"json\"\nlevel = \"info\"\n",
                self.path(name).display()
            ),
        )
        .unwrap();
        cfg
    }

    fn worker(
        &self,
        name: &str,
        bind: &str,
        controls: &[String],
        smollm2: bool,
        extra: &str,
    ) -> PathBuf {
        let cfg = self.path(&format!("{name}.toml"));
        let urls: Vec<String> = controls.iter().map(|c| format!("\"{c}\"")).collect();
        let pools = if smollm2 {
            "[[pools]]\nid = \"default\"\nmodel = \"smollm2\"\nslots = 1\nthreads = 1\nctx = 1024\n"
        } else {
            ""
        };
        std::fs::write(
            &cfg,
            format!(
                "profile = \"cloud\"\nrole = \"worker\"\n{extra}\n[server]\nbind = \"{bind}\"\nshutdown_grace_ms = 2000\n[store]\ndir = \"{}\"\n[cloud]\nnode_id = \"{name}\"\ncontrol_urls = [{}]\nheartbeat_interval_secs = {INTERVAL_S}\n[logging]\nformat = \"json\"\nlevel = \"info\"\n{pools}",
                self.path(name).display(),
                urls.join(", ")
            ),
        )
        .unwrap();
        cfg
    }

    /// A control plane `name` on a free port of 127.0.0.1, `extra` added to
    /// its config: the process and its URL.
    fn spawn_control(&self, name: &str, extra: &str) -> (Proc, String) {
        let port = free_port();
        let cfg = self.control(name, &format!("127.0.0.1:{port}"), extra);
        (
            Proc::spawn(name, &cfg, &[], None),
            format!("http://127.0.0.1:{port}"),
        )
    }

    /// A worker `name` on a free port of 127.0.0.1 that registers with
    /// `controls`, serving SmolLM2 if `smollm2`, `extra` added to its config.
    fn spawn_worker(&self, name: &str, controls: &[String], smollm2: bool, extra: &str) -> Proc {
        let bind = format!("127.0.0.1:{}", free_port());
        Proc::spawn(
            name,
            &self.worker(name, &bind, controls, smollm2, extra),
            &[],
            None,
        )
    }
}

/// An HTTP client for the tests: no proxy, optional TLS material.
fn client(tls: Option<(&Path, Option<(&Path, &Path)>)>) -> reqwest::Client {
    let mut cfg = llorchd::config::TlsConfig::default();
    if let Some((ca, cert)) = tls {
        cfg.ca = Some(ca.to_path_buf());
        if let Some((c, k)) = cert {
            cfg.cert = Some(c.to_path_buf());
            cfg.key = Some(k.to_path_buf());
        }
    }
    llorchd::net::client::build_client(
        &cfg,
        llorchd::net::dns::HickoryDns::from_system(),
        llorchd::net::client::ClientTimeouts {
            connect: Duration::from_secs(5),
            read_idle: Duration::from_secs(60),
        },
    )
    .unwrap()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            http: client(None),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        match r.send().await {
            Ok(resp) => {
                let s = resp.status().as_u16();
                (s, resp.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn post(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let s = resp.status().as_u16();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The state of `node` in `GET /v2/nodes`, if listed.
    async fn node_state(&self, node: &str) -> Option<String> {
        let (s, v) = self.get("/v2/nodes", Some(TOKEN)).await;
        if s != 200 {
            return None;
        }
        v["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node_id"] == node)
            .map(|n| n["state"].as_str().unwrap().to_string())
    }

    async fn node_ids(&self) -> Vec<String> {
        let (_, v) = self.get("/v2/nodes", Some(TOKEN)).await;
        v["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| n["node_id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn wait_state(&self, node: &str, state: &str, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.node_state(node).await.as_deref() == Some(state) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "{node} not {state} within {within:?} (now {:?})",
                self.node_state(node).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_up(&self) {
        let t0 = Instant::now();
        while self.get("/healthz", None).await.0 != 200 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{} never came up",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Submit a task; returns its id.
    async fn submit(&self, body: Value) -> String {
        let (s, v) = self.post("/v2/tasks", body, None).await;
        assert_eq!(s, 202, "{v}");
        v["task_id"].as_str().unwrap().to_string()
    }

    /// Read a task's SSE frames until `end` or `error`; `on_token` sees the
    /// token count after each token.
    async fn frames(&self, task: &str, mut on_token: impl FnMut(usize)) -> Vec<(String, Value)> {
        let resp = self
            .http
            .get(format!("{}/v2/tasks/{task}/events", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        let mut out = Vec::new();
        let mut tokens = 0;
        while let Some(chunk) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(i) = buf.find("\n\n") {
                let frame: String = buf.drain(..i + 2).collect();
                let mut event = String::new();
                let mut data = Value::Null;
                for line in frame.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = e.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(d).unwrap_or(Value::Null);
                    }
                }
                let last = event == "end" || event == "error";
                if event == "token" {
                    tokens += 1;
                    on_token(tokens);
                }
                out.push((event, data));
                if last {
                    return out;
                }
            }
        }
        out
    }
}

fn kinds(frames: &[(String, Value)]) -> Vec<&str> {
    frames.iter().map(|(e, _)| e.as_str()).collect()
}

fn last(frames: &[(String, Value)]) -> &(String, Value) {
    frames.last().expect("no frames")
}

/// `orchd_tasks_dispatched_total` for a node and outcome, from `/metrics`.
fn dispatched(metrics: &str, node: &str, outcome: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("orchd_tasks_dispatched_total{"))
        .filter(|l| {
            l.contains(&format!("node_id=\"{node}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn short_task(model: &str) -> Value {
    json!({"model_ref": model, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0})
}

fn long_task(max_tokens: usize) -> Value {
    json!({"model_ref": "smollm2", "prompt": LONG_PROMPT, "max_tokens": max_tokens, "temperature": 0})
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn registration_availability_placement_and_auth() {
    let d = Dir::new();
    d.stage_smollm2("w1");
    let (_cp, cp_url) = d.spawn_control("cp", "");
    // w1 holds SmolLM2; w2 holds nothing; w3 has the wrong token.
    let w1 = d.spawn_worker("w1", std::slice::from_ref(&cp_url), true, "");
    let mut w2 = d.spawn_worker("w2", std::slice::from_ref(&cp_url), false, "");
    let w3 = Proc::spawn(
        "w3",
        &d.worker(
            "w3",
            &format!("127.0.0.1:{}", free_port()),
            std::slice::from_ref(&cp_url),
            false,
            "",
        ),
        &[("LLORCH_API_TOKEN", "a-wrong-token-0123456789abcdef")],
        None,
    );
    rt().block_on(async {
        let api = Api::new(&cp_url);
        api.wait_up().await;
        api.wait_state("w1", "online", Duration::from_secs(30)).await;
        api.wait_state("w2", "online", Duration::from_secs(30)).await;

        // The node listing.
        let (s, v) = api.get("/v2/nodes", Some(TOKEN)).await;
        assert_eq!(s, 200);
        let w1_entry = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == "w1")
            .unwrap()
            .clone();
        assert!(w1_entry["address"].as_str().unwrap().starts_with("http://127.0.0.1:"));
        assert_eq!(w1_entry["pools"][0]["model_id"], "smollm2");
        assert_eq!(w1_entry["pools"][0]["state"], "ready");
        assert_eq!(w1_entry["gpus"][0]["device"], "cpu");
        assert_eq!(w1_entry["gpus"][0]["vram_total_bytes"], 0);
        assert!(w1_entry["last_heartbeat_ms"].as_u64().unwrap() > 0);

        // Availability: SmolLM2 on w1 only.
        let (s, v) = api.get("/v2/catalog/availability", None).await;
        assert_eq!(s, 200, "{v}");
        let m = v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model_id"] == "smollm2")
            .unwrap_or_else(|| panic!("{v}"));
        assert_eq!(m["availability"], "single");
        assert_eq!(m["replicated"], false);
        let holders: Vec<&str> = m["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_str().unwrap())
            .collect();
        assert_eq!(holders, ["w1"]);
        assert_eq!(m["sha256"], RealModel::Smollm2.sha256());

        // Placement on the holder, native and OpenAI.
        let id = api.submit(short_task("smollm2")).await;
        let f = api.frames(&id, |_| {}).await;
        assert_eq!(last(&f).0, "end", "{f:?}");
        let (s, v) = api
            .post(
                "/v1/chat/completions",
                json!({"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert!(v["choices"][0]["message"]["content"].is_string());
        let metrics = api.metrics().await;
        assert_eq!(dispatched(&metrics, "w1", "ok"), 2.0, "{metrics}");
        assert_eq!(dispatched(&metrics, "w2", "ok"), 0.0);
        assert!(metrics.contains("orchd_nodes_online 2"), "{metrics}");
        // An unknown model.
        let (s, v) = api.post("/v2/tasks", short_task("nope"), None).await;
        assert_eq!((s, v["code"].as_str()), (404, Some("MODEL_NOT_FOUND")), "{v}");

        // Missing or wrong token: 401 and nothing registered.
        let reg = json!({"node_id": "intruder", "instance_id": "x", "address": "http://10.9.9.9:1", "version": "0"});
        for tok in [None, Some("wrong-token-0123456789")] {
            let (s, v) = api.post("/v2/nodes/register", reg.clone(), tok).await;
            assert_eq!((s, v["code"].as_str()), (401, Some("AUTH_FAILED")));
            assert_eq!(api.get("/v2/nodes", tok).await.0, 401);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(api.node_ids().await, ["w1", "w2"]);
        let w3_log = w3.log();
        assert!(w3_log.contains("401"), "{w3_log}");
        assert!(!w3_log.contains("a-wrong-token"), "the token leaked into the log");

        // SIGTERM: w2 drains and deregisters.
        assert!(w2.terminate().success(), "{}", w2.log());
        assert_eq!(api.node_ids().await, ["w1"]);
        assert!(w2.log().contains("deregistered"));
    });
    drop(w1);
}

#[test]
fn a_worker_killed_mid_stream_is_lost_offline_and_accepted_back() {
    let d = Dir::new();
    d.stage_smollm2("w1");
    let (cp, cp_url) = d.spawn_control("cp", "");
    let w1_port = free_port();
    let mut w1 = Proc::spawn(
        "w1",
        &d.worker(
            "w1",
            &format!("127.0.0.1:{w1_port}"),
            std::slice::from_ref(&cp_url),
            true,
            "",
        ),
        &[],
        None,
    );
    rt().block_on(async {
        let api = Api::new(&cp_url);
        api.wait_up().await;
        api.wait_state("w1", "online", Duration::from_secs(30))
            .await;
        let id = api.submit(long_task(400)).await;
        let pid = w1.pid();
        let mut killed_at = None;
        let f = api
            .frames(&id, |n| {
                if n == 3 && killed_at.is_none() {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    killed_at = Some(Instant::now());
                }
            })
            .await;
        let killed_at = killed_at.expect("never reached 3 tokens");
        let (kind, data) = last(&f);
        assert_eq!(kind, "error", "{f:?}");
        assert_eq!(data["code"], "WORKER_LOST", "{data}");
        assert_eq!(data["retriable"], true);
        assert!(kinds(&f).iter().filter(|k| **k == "token").count() >= 3);
        // Offline within the node timeout plus one heartbeat interval.
        api.wait_state("w1", "offline", Duration::from_secs(30))
            .await;
        let took = killed_at.elapsed();
        assert!(
            took <= Duration::from_millis(TIMEOUT_MS + INTERVAL_S * 1000),
            "offline after {took:?}"
        );
        let metrics = api.metrics().await;
        assert!(metrics.contains("outcome=\"worker_lost\""), "{metrics}");

        // The worker comes back (a new process, same node id): accepted.
        w1.kill();
        w1.start();
        api.wait_state("w1", "online", Duration::from_secs(30))
            .await;
        // It stays online (no flapping) and serves.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(api.node_state("w1").await.as_deref(), Some("online"));
        }
        let id = api.submit(short_task("smollm2")).await;
        assert_eq!(last(&api.frames(&id, |_| {}).await).0, "end");
    });
    let log = cp.log();
    assert!(
        log.contains("back online") || log.contains("registered again"),
        "{log}"
    );
}

#[test]
fn a_frozen_worker_goes_offline_and_comes_back() {
    let d = Dir::new();
    let (_cp, cp_url) = d.spawn_control("cp", "");
    let w1 = d.spawn_worker("w1", std::slice::from_ref(&cp_url), false, "");
    rt().block_on(async {
        let api = Api::new(&cp_url);
        api.wait_up().await;
        api.wait_state("w1", "online", Duration::from_secs(30))
            .await;
        // Freeze it right after a heartbeat went out, then time the fall.
        w1.signal(libc::SIGSTOP);
        let t0 = Instant::now();
        let took = api
            .wait_state("w1", "offline", Duration::from_secs(10))
            .await;
        assert!(
            took <= Duration::from_millis(TIMEOUT_MS + INTERVAL_S * 1000),
            "offline after {took:?}"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(TIMEOUT_MS / 2),
            "offline too early"
        );
        w1.signal(libc::SIGCONT);
        api.wait_state("w1", "online", Duration::from_millis(TIMEOUT_MS + 2000))
            .await;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(api.node_state("w1").await.as_deref(), Some("online"));
        }
    });
}

#[test]
fn tasks_move_to_the_other_holder() {
    let d = Dir::new();
    d.stage_smollm2("w1");
    d.stage_smollm2("w2");
    let (cp, cp_url) = d.spawn_control("cp", "");
    let urls = [cp_url.clone()];
    let mut w1 = d.spawn_worker("w1", &urls, true, "");
    let _w2 = d.spawn_worker("w2", &urls, true, "");
    rt().block_on(async {
        let api = Api::new(&cp_url);
        api.wait_up().await;
        api.wait_state("w1", "online", Duration::from_secs(30))
            .await;
        api.wait_state("w2", "online", Duration::from_secs(30))
            .await;
        let (_, v) = api.get("/v2/catalog/availability", None).await;
        assert_eq!(v["models"][0]["availability"], "replicated", "{v}");

        // 1. Lost before the first token: the task prefers w1, which is
        // killed while it computes the (long) prompt; the task moves to
        // w2 and the client sees one clean stream.
        let mut t = json!({
            "model_ref": "smollm2",
            "prompt": "one two three four five six seven eight nine ten ".repeat(60),
            "max_tokens": 4,
            "temperature": 0,
        });
        t["placement"] = json!({"mode": "prefer", "prefer_pools": ["w1"]});
        let id = api.submit(t).await;
        let t0 = Instant::now();
        while !w1
            .log()
            .lines()
            .any(|l| l.contains("worker task started") && l.contains(&id))
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "w1 never started {id}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        w1.kill();
        let f = api.frames(&id, |_| {}).await;
        assert_eq!(last(&f).0, "end", "{f:?}");
        assert!(!kinds(&f).contains(&"error"));
        assert_eq!(
            kinds(&f).iter().filter(|k| **k == "started").count(),
            1,
            "{f:?}"
        );
        let metrics = api.metrics().await;
        assert_eq!(
            dispatched(&metrics, "w1", "worker_lost") + dispatched(&metrics, "w1", "unreachable"),
            1.0,
            "{metrics}"
        );
        assert_eq!(dispatched(&metrics, "w2", "ok"), 1.0, "{metrics}");
        w1.start();
        api.wait_state("w1", "online", Duration::from_secs(30))
            .await;

        // 2. Queued while its worker dies: one long task on each worker
        // fills both slots, a third waits in the control plane's queue;
        // w1 dies; the third runs on w2.
        let mut a = long_task(60);
        a["placement"] = json!({"mode": "pin", "pin_node_id": "w1"});
        let mut b = long_task(30);
        b["placement"] = json!({"mode": "pin", "pin_node_id": "w2"});
        let ta = api.submit(a).await;
        let tb = api.submit(b).await;
        let (s, v) = api.post("/v2/tasks", short_task("smollm2"), None).await;
        assert_eq!(s, 202, "{v}");
        let tc = v["task_id"].as_str().unwrap().to_string();
        // Both slots are taken: it waits in the control plane's queue.
        let (_, st) = api.get(&format!("/v2/tasks/{tc}"), None).await;
        assert_eq!(st["state"], "queued", "{st}");
        let w1_pid = w1.pid();
        let mut killed = false;
        let fa = api
            .frames(&ta, |n| {
                if n == 2 && !killed {
                    unsafe { libc::kill(w1_pid, libc::SIGKILL) };
                    killed = true;
                }
            })
            .await;
        assert_eq!(last(&fa).1["code"], "WORKER_LOST", "{fa:?}");
        let fc = api.frames(&tc, |_| {}).await;
        assert_eq!(last(&fc).0, "end", "{fc:?}");
        let fb = api.frames(&tb, |_| {}).await;
        assert_eq!(last(&fb).0, "end", "{fb:?}");
    });
    let log = cp.log();
    let dispatched_c = log
        .lines()
        .filter(|l| l.contains("task dispatched"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["human"].as_str().unwrap_or("").contains("on node w2"))
        .count();
    assert!(dispatched_c >= 3, "{log}");
    drop(w1);
}

#[test]
fn a_restarted_control_plane_knows_its_nodes_at_once() {
    let d = Dir::new();
    d.stage_smollm2("w1");
    let (mut cp, cp_url) = d.spawn_control("cp", "");
    let _w1 = d.spawn_worker("w1", std::slice::from_ref(&cp_url), true, "");
    rt().block_on(async {
        let api = Api::new(&cp_url);
        api.wait_up().await;
        api.wait_state("w1", "online", Duration::from_secs(30))
            .await;
        // A crash, not a clean stop: nothing is written at exit.
        cp.kill();
        cp.start();
        api.wait_up().await;
        let first = api.node_state("w1").await;
        assert!(
            matches!(first.as_deref(), Some("stale") | Some("online")),
            "after the restart: {first:?}\n{}",
            cp.log()
        );
        let (_, v) = api.get("/v2/catalog/availability", None).await;
        assert_eq!(v["models"][0]["model_id"], "smollm2", "{v}");
        api.wait_state("w1", "online", Duration::from_secs(10))
            .await;
        let id = api.submit(short_task("smollm2")).await;
        assert_eq!(last(&api.frames(&id, |_| {}).await).0, "end");
    });
    assert!(cp.log().contains("restored the node registry"));
}

#[test]
fn two_control_planes_share_the_same_workers() {
    let d = Dir::new();
    d.stage_smollm2("w1");
    let (p1, p2) = (free_port(), free_port());
    let (u1, u2) = (
        format!("http://127.0.0.1:{p1}"),
        format!("http://localhost:{p2}"),
    );
    let _cp1 = Proc::spawn(
        "cp1",
        &d.control("cp1", &format!("127.0.0.1:{p1}"), ""),
        &[],
        None,
    );
    let _cp2 = Proc::spawn(
        "cp2",
        &d.control("cp2", &format!("127.0.0.1:{p2}"), ""),
        &[],
        None,
    );
    // The seed name for the control-plane list, comma-separated; the
    // second one by host name, resolved without NSS.
    let _w1 = Proc::spawn(
        "w1",
        &d.worker("w1", &format!("127.0.0.1:{}", free_port()), &[], true, ""),
        &[("ORCHESTRATORD_URL", &format!("{u1},{u2}"))],
        None,
    );
    rt().block_on(async {
        for u in [&u1, &u2] {
            let api = Api::new(u);
            api.wait_up().await;
            api.wait_state("w1", "online", Duration::from_secs(30))
                .await;
        }
        let (a1, a2) = (Api::new(&u1), Api::new(&u2));
        let (i1, i2) = (
            a1.submit(short_task("smollm2")).await,
            a2.submit(short_task("smollm2")).await,
        );
        assert_eq!(last(&a1.frames(&i1, |_| {}).await).0, "end");
        assert_eq!(last(&a2.frames(&i2, |_| {}).await).0, "end");
    });
}

/// A CA and one certificate for `localhost` / 127.0.0.1 that serves both as
/// server and client certificate; and a client certificate from another CA.
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf = |ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        (
            p.signed_by(&key, ca, ca_key).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let (cert, key) = leaf(&ca, &ca_key);
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = other.self_signed(&other_key).unwrap();
    let (rogue, rogue_key) = leaf(&other, &other_key);
    let w = |n: &str, s: &str| {
        let p = dir.join(n);
        std::fs::write(&p, s).unwrap();
        p
    };
    (
        w("ca.pem", &ca.pem()),
        w("cert.pem", &cert),
        w("key.pem", &key),
        w("rogue.pem", &rogue),
        w("rogue-key.pem", &rogue_key),
    )
}

#[test]
fn tls_and_mutual_tls_between_nodes() {
    let d = Dir::new();
    d.stage_smollm2("w1");
    let (ca, cert, key, rogue, rogue_key) = pki(d.tmp.path());
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nrequire_client_cert = true\n",
        cert.display(),
        key.display(),
        ca.display()
    );
    let cp_port = free_port();
    let cp_url = format!("https://localhost:{cp_port}");
    let _cp = Proc::spawn(
        "cp",
        &d.control("cp", &format!("127.0.0.1:{cp_port}"), &tls),
        &[],
        None,
    );
    let _w1 = d.spawn_worker("w1", std::slice::from_ref(&cp_url), true, &tls);
    rt().block_on(async {
        let api = Api {
            base: cp_url.clone(),
            http: client(Some((&ca, Some((&cert, &key))))),
        };
        api.wait_up().await;
        api.wait_state("w1", "online", Duration::from_secs(30))
            .await;
        let (_, v) = api.get("/v2/nodes", Some(TOKEN)).await;
        assert!(
            v["nodes"][0]["address"]
                .as_str()
                .unwrap()
                .starts_with("https://"),
            "{v}"
        );
        // Dispatch to the worker goes over mutual TLS too.
        let id = api.submit(short_task("smollm2")).await;
        assert_eq!(last(&api.frames(&id, |_| {}).await).0, "end");
        // Without a client certificate, or with one from another CA, or
        // in plain HTTP: refused.
        let url = format!("{cp_url}/healthz");
        assert!(client(Some((&ca, None))).get(&url).send().await.is_err());
        assert!(client(Some((&ca, Some((&rogue, &rogue_key)))))
            .get(&url)
            .send()
            .await
            .is_err());
        assert!(client(None)
            .get(format!("http://127.0.0.1:{cp_port}/healthz"))
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true));
    });
}

/// Two network namespaces joined by a veth pair, both made by the test and
/// removed on drop: the control plane lives in one, the worker in the
/// other. Their addresses (`10.<a>.<b>.1` and `.2`, a /30) exist only on
/// that pair, so nothing outside the two namespaces is touched.
struct NetnsPair {
    /// The control plane's namespace and its end of the pair.
    cp: String,
    cp_if: String,
    /// The worker's namespace.
    w: String,
    cp_ip: String,
    w_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Cut (false) or heal (true) the link: its end in namespace `ns`.
fn set_link(ns: &str, dev: &str, up: bool) {
    ip(&["-n", ns, "link", "set", dev, if up { "up" } else { "down" }]).unwrap();
}

impl NetnsPair {
    /// Why namespaces cannot be made here, if they cannot.
    fn unavailable() -> Option<String> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
        if uid != "0" {
            return Some(format!("not root (uid {uid})"));
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Some("no `ip` command (iproute2)".into());
        }
        None
    }

    fn create(tag: u32) -> Result<NetnsPair, String> {
        let (a, b) = (200 + (tag >> 8) % 50, tag & 0xff);
        let pair = NetnsPair {
            cp: format!("llorch-cp{tag}"),
            cp_if: format!("llc{tag}"),
            w: format!("llorch-w{tag}"),
            cp_ip: format!("10.{a}.{b}.1"),
            w_ip: format!("10.{a}.{b}.2"),
        };
        let w_if = format!("llw{tag}");
        // Leftovers of an earlier run with the same pid.
        let _ = ip(&["netns", "del", &pair.cp]);
        let _ = ip(&["netns", "del", &pair.w]);
        // From here on, drop removes whatever was made.
        ip(&["netns", "add", &pair.cp])?;
        ip(&["netns", "add", &pair.w])?;
        ip(&[
            "-n",
            &pair.cp,
            "link",
            "add",
            &pair.cp_if,
            "type",
            "veth",
            "peer",
            "name",
            &w_if,
            "netns",
            &pair.w,
        ])?;
        for (ns, dev, addr) in [
            (&pair.cp, &pair.cp_if, &pair.cp_ip),
            (&pair.w, &w_if, &pair.w_ip),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Run `f` on a thread that lives in the control plane's namespace
    /// (sockets it opens are there), with a runtime of its own.
    fn in_cp<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        use std::os::fd::AsRawFd;
        let path = format!("/var/run/netns/{}", self.cp);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // setns moves only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the pair, and so the pair.
        let _ = ip(&["netns", "del", &self.cp]);
        let _ = ip(&["netns", "del", &self.w]);
    }
}

#[test]
fn a_partitioned_worker_goes_offline_and_heals() {
    if let Some(why) = NetnsPair::unavailable() {
        eprintln!("skipped: network namespaces are not available here: {why}");
        return;
    }
    let tag = std::process::id() % 10_000;
    let ns = match NetnsPair::create(tag) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipped: could not create network namespaces: {e}");
            return;
        }
    };
    let d = Dir::new();
    let cp_port = free_port();
    let cp_url = format!("http://{}:{cp_port}", ns.cp_ip);
    // Beyond loopback, so the client API wants the token too.
    let cp = Proc::spawn(
        "cp",
        &d.control("cp", &format!("{}:{cp_port}", ns.cp_ip), ""),
        &[],
        Some(&ns.cp),
    );
    let w1 = Proc::spawn(
        "w1",
        &d.worker(
            "w1",
            &format!("{}:{}", ns.w_ip, free_port()),
            std::slice::from_ref(&cp_url),
            false,
            "",
        ),
        &[],
        Some(&ns.w),
    );
    let url = cp_url.clone();
    let cp_ns = ns.cp.clone();
    let cp_if = ns.cp_if.clone();
    ns.in_cp(async move {
        let api = Api::new(&url);
        api.wait_up().await;
        assert_eq!(api.get("/v2/pools", None).await.0, 401);
        assert_eq!(api.get("/v2/pools", Some(TOKEN)).await.0, 200);
        api.wait_state("w1", "online", Duration::from_secs(30))
            .await;
        // Cut the link: the worker is alive but unreachable.
        set_link(&cp_ns, &cp_if, false);
        let took = api
            .wait_state("w1", "offline", Duration::from_secs(10))
            .await;
        assert!(
            took <= Duration::from_millis(TIMEOUT_MS + INTERVAL_S * 1000),
            "{took:?}"
        );
        // Heal: its heartbeats get through again, and it stays online.
        set_link(&cp_ns, &cp_if, true);
        api.wait_state("w1", "online", Duration::from_secs(15))
            .await;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(api.node_state("w1").await.as_deref(), Some("online"));
        }
    });
    let log = w1.log();
    assert!(log.contains("heartbeat"), "{log}");
    assert!(cp.log().contains("back online"), "{}", cp.log());
    drop(w1);
    drop(cp);
}

/// The sum of the samples of `name` whose labels include `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `promtool check metrics` on a scrape (the shared helper): no parse
/// error, and no lint finding beyond the names BRIEF section 5 fixes.
fn promtool_check(scrape: &str, what: &str) {
    if let Err(e) = llorchd::testing::promtool_check_metrics(scrape) {
        panic!("{what}: {e}\n{scrape}");
    }
}

/// The JSON lines of a log that carry `correlation_id`.
fn lines_with_correlation(log: &str, id: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["correlation_id"] == id)
        .collect()
}

#[test]
fn metrics_and_logs_of_the_cloud_roles() {
    let d = Dir::new();
    d.stage_smollm2("w1");
    let (cp, cp_url) = d.spawn_control("cp", "");
    let w1_url = format!("http://127.0.0.1:{}", free_port());
    let w1 = Proc::spawn(
        "w1",
        &d.worker(
            "w1",
            w1_url.trim_start_matches("http://"),
            std::slice::from_ref(&cp_url),
            true,
            "",
        ),
        &[],
        None,
    );
    let _w2 = d.spawn_worker("w2", std::slice::from_ref(&cp_url), false, "");
    // Words that must never reach a log.
    let secret = "quokka zanzibar marmalade";
    let correlation = "corr-cloud-metrics-4711";
    rt().block_on(async {
        let api = Api::new(&cp_url);
        api.wait_up().await;
        api.wait_state("w1", "online", Duration::from_secs(30)).await;
        api.wait_state("w2", "online", Duration::from_secs(30)).await;

        // Three tasks: two native (one with our correlation id), one OpenAI.
        let mut tokens_out = 0.0;
        let resp = api
            .http
            .post(format!("{cp_url}/v2/tasks"))
            .header("X-Correlation-Id", correlation)
            .json(&json!({"model_ref": "smollm2", "prompt": format!("Tell me about {secret}."), "max_tokens": 5, "temperature": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        assert_eq!(resp.headers()["x-correlation-id"], correlation);
        let v: Value = resp.json().await.unwrap();
        let ids = [
            v["task_id"].as_str().unwrap().to_string(),
            api.submit(short_task("smollm2")).await,
        ];
        for id in &ids {
            let f = api.frames(id, |_| {}).await;
            let (kind, end) = last(&f);
            assert_eq!(kind, "end", "{f:?}");
            tokens_out += end["tokens_out"].as_f64().unwrap();
        }
        let (s, v) = api
            .post(
                "/v1/chat/completions",
                json!({"model": "smollm2", "messages": [{"role": "user", "content": secret}], "max_tokens": 3}),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        tokens_out += v["usage"]["completion_tokens"].as_f64().unwrap();
        // The worker's pool gauges refresh every second.
        tokio::time::sleep(Duration::from_millis(1500)).await;

        // The control plane.
        let m = api.metrics().await;
        promtool_check(&m, "control plane");
        let all_dispatched = sample(&m, "orchd_tasks_dispatched_total", &[]);
        assert_eq!(all_dispatched, 3.0, "{m}");
        assert_eq!(dispatched(&m, "w1", "ok"), 3.0, "{m}");
        assert_eq!(sample(&m, "orchd_tasks_finished_total", &[("outcome", "ok")]), 3.0, "{m}");
        assert_eq!(sample(&m, "orchd_admission_enqueued_total", &[]), 3.0, "{m}");
        assert_eq!(sample(&m, "orchd_tasks_started_total", &[("pool_id", "smollm2")]), 3.0, "{m}");
        assert_eq!(sample(&m, "orchd_tokens_out_total", &[("pool_id", "smollm2")]), tokens_out, "{m}");
        assert_eq!(sample(&m, "orchd_nodes_online", &[]), 2.0, "{m}");
        assert_eq!(sample(&m, "orchd_nodes", &[("state", "online")]), 2.0, "{m}");
        assert_eq!(sample(&m, "orchd_nodes", &[("state", "offline")]), 0.0, "{m}");
        assert!(sample(&m, "orchd_node_registrations_total", &[("outcome", "ok")]) >= 2.0, "{m}");
        for node in ["w1", "w2"] {
            assert!(
                sample(&m, "orchd_node_heartbeats_total", &[("node_id", node), ("outcome", "ok")]) > 0.0,
                "{m}"
            );
        }
        assert_eq!(sample(&m, "orchd_pools_available", &[("pool_id", "w1/default")]), 1.0, "{m}");
        assert_eq!(sample(&m, "orchd_pools_available", &[("pool_id", "smollm2")]), 1.0, "{m}");
        assert!(sample(&m, "orchd_pool_health_checks_total", &[("pool_id", "smollm2"), ("outcome", "ok")]) > 0.0);

        // The worker: its pool gauges match its pools.
        let w = Api::new(&w1_url);
        let wm = w.metrics().await;
        promtool_check(&wm, "worker");
        let (s, pools) = w.get("/v2/worker/pools", Some(TOKEN)).await;
        assert_eq!(s, 200, "{pools}");
        let pools = pools.as_array().unwrap();
        assert_eq!(pools.len(), 1);
        for p in pools {
            let id = p["pool_id"].as_str().unwrap();
            let total = p["slots_total"].as_f64().unwrap();
            let busy = p["slots_busy"].as_f64().unwrap();
            let device = p["device"].as_str().unwrap();
            assert_eq!((id, total, busy, device), ("default", 1.0, 0.0, "cpu"));
            assert_eq!(sample(&wm, "pool_slots_total", &[("pool_id", id)]), total, "{wm}");
            assert_eq!(sample(&wm, "pool_slots_free", &[("pool_id", id)]), total - busy, "{wm}");
            assert_eq!(sample(&wm, "pool_ready", &[("pool_id", id)]), 1.0, "{wm}");
            for g in ["pool_vram_total_bytes", "pool_vram_free_bytes"] {
                assert!(wm.contains(&format!("{g}{{pool_id=\"{id}\",device=\"cpu\"}} 0")), "{wm}");
            }
        }
        assert!(sample(&wm, "orchd_worker_registrations_sent_total", &[("outcome", "ok")]) >= 1.0, "{wm}");
        assert!(sample(&wm, "orchd_worker_heartbeats_sent_total", &[("outcome", "ok")]) > 0.0, "{wm}");
        assert!(wm.contains("orchd_build_info{"), "{wm}");
        // Control-side series do not belong on a worker.
        assert!(!wm.contains("orchd_tasks_dispatched_total"), "{wm}");
    });

    // Logs: JSON lines; the task's correlation id joins its lines on the
    // control plane and on the worker; no prompt text anywhere.
    let (cp_log, w1_log) = (cp.log(), w1.log());
    let on_cp = lines_with_correlation(&cp_log, correlation);
    let on_w1 = lines_with_correlation(&w1_log, correlation);
    let messages = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .map(|v| v["message"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let (cp_msgs, w1_msgs) = (messages(&on_cp), messages(&on_w1));
    assert!(
        cp_msgs.iter().any(|m| m == "task dispatched"),
        "{cp_msgs:?}\n{cp_log}"
    );
    assert!(
        w1_msgs.iter().any(|m| m == "worker task started"),
        "{w1_msgs:?}\n{w1_log}"
    );
    assert!(
        w1_msgs.iter().any(|m| m == "worker task finished"),
        "{w1_msgs:?}\n{w1_log}"
    );
    let task_id = on_cp[0]["job_id"].clone();
    assert!(task_id.is_string(), "{:?}", on_cp[0]);
    for v in on_cp.iter().chain(&on_w1) {
        assert_eq!(v["job_id"], task_id, "{v}");
        assert!(v["human"].is_string() || v["message"].is_string(), "{v}");
    }
    assert!(
        on_w1
            .iter()
            .any(|v| v["node_id"] == "w1" && v["pool_id"] == "default"),
        "{on_w1:?}"
    );
    let finished = on_w1
        .iter()
        .find(|v| v["message"] == "worker task finished")
        .unwrap();
    assert!(finished["tokens_out"].as_u64().unwrap() > 0, "{finished}");
    for (name, log) in [("control plane", &cp_log), ("worker", &w1_log)] {
        for word in secret.split(' ') {
            assert!(
                !log.contains(word),
                "the prompt reached the {name} log:\n{log}"
            );
        }
        assert!(!log.contains(TOKEN), "the token reached the {name} log");
    }
}

/// `cargo test --release --test cloud heartbeats_absorbed_while_serving --
/// --ignored --nocapture` (docs/BENCHMARKS.md): a real control plane with
/// 1,000 registered nodes (a model of their own) and one real worker
/// serving SmolLM2. Tasks stream through the control plane back to back,
/// first alone, then while 32 connections send heartbeats for the 1,000
/// nodes as fast as they are answered. Prints heartbeats absorbed per
/// second and what the tasks saw. Client, control plane and worker share
/// the machine, so the rate is a lower bound.
#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn heartbeats_absorbed_while_serving() {
    const NODES: usize = 1000;
    const CONNS: usize = 32;
    const SECS: u64 = 5;
    let d = Dir::new();
    d.stage_smollm2("w1");
    let cp_port = free_port();
    let cp_url = format!("http://127.0.0.1:{cp_port}");
    let cfg = d.control("cp", &format!("127.0.0.1:{cp_port}"), "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &format!("node_timeout_ms = {TIMEOUT_MS}"),
            "node_timeout_ms = 30000",
        )
        .replace("level = \"info\"", "level = \"warn\"");
    std::fs::write(&cfg, text).unwrap();
    let _cp = Proc::spawn("cp", &cfg, &[], None);
    let _w1 = d.spawn_worker("w1", std::slice::from_ref(&cp_url), true, "");
    let pools = |node: &str| {
        json!([{"pool_id": "default", "model_id": "bench-model", "model_digest": "abc",
                "state": "ready", "ctx": 2048, "slots_total": 4, "slots_busy": node.len() % 4}])
    };
    rt().block_on(async {
        let api = std::sync::Arc::new(Api::new(&cp_url));
        api.wait_up().await;
        api.wait_state("w1", "online", Duration::from_secs(30)).await;
        for i in 0..NODES {
            let node = format!("fake-{i:04}");
            let (s, v) = api
                .post(
                    "/v2/nodes/register",
                    json!({"node_id": node, "instance_id": "i1", "address": format!("http://{node}.invalid:9"),
                           "version": "0", "gpus": [], "pools": pools(&node), "models": []}),
                    Some(TOKEN),
                )
                .await;
            assert_eq!(s, 200, "{v}");
        }
        // Tasks back to back for `secs`: (tasks, median time to first token).
        let serve = |api: std::sync::Arc<Api>, secs: u64| async move {
            let until = Instant::now() + Duration::from_secs(secs);
            let mut ttft = Vec::new();
            while Instant::now() < until {
                let t0 = Instant::now();
                let id = api.submit(short_task("smollm2")).await;
                let mut first = None;
                let f = api
                    .frames(&id, |n| {
                        if n == 1 {
                            first = Some(t0.elapsed());
                        }
                    })
                    .await;
                assert_eq!(last(&f).0, "end", "{f:?}");
                ttft.push(first.unwrap());
            }
            ttft.sort();
            (ttft.len(), ttft[ttft.len() / 2])
        };
        let (alone_n, alone_ttft) = serve(api.clone(), SECS).await;
        let until = Instant::now() + Duration::from_secs(SECS);
        let mut senders = Vec::new();
        for c in 0..CONNS {
            let api = api.clone();
            senders.push(tokio::spawn(async move {
                let (mut n, mut seq) = (0u64, 0u64);
                while Instant::now() < until {
                    // Each connection has nodes of its own, so sequence
                    // numbers grow per node.
                    let k = seq as usize % (NODES / CONNS);
                    let node = format!("fake-{:04}", c + CONNS * k);
                    seq += 1;
                    let hb = json!({"instance_id": "i1", "seq": seq,
                                    "pools": pools(&node), "draining": false});
                    let (s, v) = api
                        .post(&format!("/v2/nodes/{node}/heartbeat"), hb, Some(TOKEN))
                        .await;
                    assert_eq!(s, 200, "{v}");
                    n += 1;
                }
                n
            }));
        }
        let t0 = Instant::now();
        let (loaded_n, loaded_ttft) = serve(api.clone(), SECS).await;
        let mut total = 0;
        for s in senders {
            total += s.await.unwrap();
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "heartbeats absorbed: {:.0}/s ({total} in {secs:.1} s; {NODES} nodes, {CONNS} connections)",
            total as f64 / secs
        );
        println!(
            "tasks meanwhile: {loaded_n} in {SECS} s, median time to first token {:.1} ms \
             (alone: {alone_n} tasks, {:.1} ms)",
            loaded_ttft.as_secs_f64() * 1e3,
            alone_ttft.as_secs_f64() * 1e3
        );
        assert_eq!(api.node_ids().await.len(), NODES + 1);
    });
}
