//! Typed configuration: one TOML file, defaults for every key, env overrides.
//!
//! Parsed once at start and handed down as typed pieces; nothing deeper in the
//! code reads env vars. Unknown keys are rejected with the line they are on.
//! Depends on nothing else in the crate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors from loading or validating a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A TOML syntax or type error; the message carries key, line and column.
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: key `{key}`{line}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        /// ` (line N)` when the key is found in the file, else empty.
        line: String,
        message: String,
    },
    #[error("invalid environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Everything in one process on one host.
    #[default]
    Home,
    /// A control plane and GPU workers on separate hosts.
    Cloud,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Control,
    Worker,
}

/// What a full admission queue does with one more task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FullQueuePolicy {
    /// Refuse the new task with 429 `ADMISSION_REJECT`.
    #[default]
    Reject,
    /// Admit the new task and drop the least recently enqueued task of the
    /// same or lower priority, which ends with `QUEUE_FULL_DROP_LRU`.
    DropLru,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Journald when `JOURNAL_STREAM` is set, pretty on a TTY, JSON otherwise.
    #[default]
    Auto,
    Json,
    Pretty,
    Journald,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub profile: Profile,
    /// Cloud only.
    pub role: Option<Role>,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub pools: Vec<PoolConfig>,
    pub admission: AdmissionConfig,
    pub sessions: SessionConfig,
    pub engine: EngineConfig,
    pub cloud: CloudConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub logging: LoggingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profile: Profile::Home,
            role: None,
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            pools: Vec::new(),
            admission: AdmissionConfig::default(),
            sessions: SessionConfig::default(),
            engine: EngineConfig::default(),
            cloud: CloudConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Client API (and, for workers, dispatch) address.
    pub bind: SocketAddr,
    /// Serve `/metrics` on a separate address as well (no token needed there).
    pub metrics_bind: Option<SocketAddr>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long graceful shutdown waits for in-flight work, in milliseconds.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_bind: None,
            max_body_bytes: 1 << 20,
            shutdown_grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Model files and the redb database live here.
    pub dir: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: PathBuf::from("/var/lib/llorchd"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub id: String,
    /// A catalog model id.
    pub model: String,
    /// Sequences decoded together (continuous batching width).
    pub slots: usize,
    /// Context length per slot; 0 means the model's own (capped at 4096).
    pub ctx: usize,
    /// Tokens per prefill chunk.
    pub prefill_chunk: usize,
    /// Engine threads; 0 means the engine default.
    pub threads: usize,
    /// `cpu`, or `cuda:N` with the `cuda` feature.
    pub device: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            id: "default".into(),
            model: String::new(),
            slots: 4,
            ctx: 0,
            prefill_chunk: 256,
            threads: 0,
            device: "cpu".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Bounded queue length per pool (both priorities together).
    pub queue_capacity: usize,
    pub full_policy: FullQueuePolicy,
    /// Optional per-pool token budget (prompt + max_tokens) per second; 0 is off.
    pub tokens_per_second: u64,
    /// Burst allowance for the token budget; 0 means one second's worth.
    pub token_burst: u64,
    /// How long an ended task's status and events stay readable, in seconds.
    pub task_retention_secs: u64,
    /// Ended tasks kept readable at most (the oldest go first).
    pub max_retained_tasks: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            queue_capacity: 256,
            full_policy: FullQueuePolicy::Reject,
            tokens_per_second: 0,
            token_burst: 0,
            task_retention_secs: 300,
            max_retained_tasks: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub ttl_secs: u64,
    pub max_turns: u32,
    /// Sessions kept at most; the least recently used goes first.
    pub max_sessions: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ttl_secs: 600,
            max_turns: 8,
            max_sessions: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Default engine threads; 0 means the cores available.
    pub threads: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// Worker: this node's id (env `POOL_MANAGERD_NODE_ID`).
    pub node_id: Option<String>,
    /// Worker: the control planes to register with (env `ORCHESTRATORD_URL`,
    /// comma separated).
    pub control_urls: Vec<String>,
    /// Worker: the URL control planes use to reach this worker; defaults to
    /// `http(s)://<server.bind>`, or `http(s)://<hostname>:<port>` when
    /// bound to all interfaces.
    pub advertise_url: Option<String>,
    /// Worker: heartbeat period (env `POOL_MANAGERD_HEARTBEAT_INTERVAL_SECS`).
    pub heartbeat_interval_secs: u64,
    /// Control: a node without a heartbeat for this long is offline
    /// (env `ORCHESTRATORD_NODE_TIMEOUT_MS`). A dispatch stream silent for
    /// this long counts as a lost worker too.
    pub node_timeout_ms: u64,
    /// Control: how many nodes a task is tried on before its first token
    /// (a worker lost before then is replaced without the client noticing).
    pub dispatch_attempts: u32,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            node_id: None,
            control_urls: Vec::new(),
            advertise_url: None,
            heartbeat_interval_secs: 10,
            node_timeout_ms: 30_000,
            dispatch_attempts: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// File holding the bearer token (env `LLORCH_API_TOKEN_FILE`). When unset,
    /// `$CREDENTIALS_DIRECTORY/llorch-api-token` is tried, then `LLORCH_API_TOKEN`.
    pub token_file: Option<PathBuf>,
    /// Require the token on the client API even on loopback.
    pub require_on_loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; TLS is on when `cert` and `key` are set.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// PEM CA bundle used to verify peers (workers' client certificates on a
    /// control plane; the control plane's certificate on a worker).
    pub ca: Option<PathBuf>,
    /// Control plane: require client certificates signed by `ca` (mTLS).
    pub require_client_cert: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `llorchd=debug` (env `RUST_LOG` wins).
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

/// Where the config comes from: `--config`, then `LLORCH_CONFIG`.
pub fn locate(cli: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    cli.map(Path::to_path_buf)
        .or_else(|| env("LLORCH_CONFIG").map(PathBuf::from))
}

impl Config {
    /// Load from a file (or defaults when `path` is None), apply env
    /// overrides from the process environment, then validate.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, &|k| std::env::var(k).ok())
    }

    /// As [`Config::load`], with the environment supplied (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (mut cfg, text, shown) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                (Self::parse_str(&text, p)?, text, p.to_path_buf())
            }
            None => (
                Config::default(),
                String::new(),
                PathBuf::from("<defaults>"),
            ),
        };
        cfg.apply_env(env)?;
        cfg.validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                line: line_of_key(&text, &key)
                    .map(|n| format!(" (line {n})"))
                    .unwrap_or_default(),
                path: shown,
                key,
                message,
            })?;
        Ok(cfg)
    }

    /// Parse TOML text (no env, no validation). Errors name key, line and
    /// column on one line.
    pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: one_line_toml_error(text, &e),
        })
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(var: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.trim().parse::<T>().map_err(|e| ConfigError::Env {
                var: var.into(),
                value: v.into(),
                message: e.to_string(),
            })
        }
        fn boolean(var: &str, v: &str) -> Result<bool, ConfigError> {
            match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" | "" => Ok(false),
                _ => Err(ConfigError::Env {
                    var: var.into(),
                    value: v.into(),
                    message: "expected true or false".into(),
                }),
            }
        }
        // Seed names first, then LLORCH_* (which win when both are set).
        if let Some(v) = env("ORCHESTRATORD_CLOUD_PROFILE") {
            self.profile = if boolean("ORCHESTRATORD_CLOUD_PROFILE", &v)? {
                Profile::Cloud
            } else {
                Profile::Home
            };
        }
        if let Some(v) = env("LLORCH_PROFILE") {
            self.profile = match v.trim() {
                "home" => Profile::Home,
                "cloud" => Profile::Cloud,
                _ => {
                    return Err(ConfigError::Env {
                        var: "LLORCH_PROFILE".into(),
                        value: v,
                        message: "expected home or cloud".into(),
                    })
                }
            };
        }
        if let Some(v) = env("LLORCH_ROLE") {
            self.role = Some(match v.trim() {
                "control" => Role::Control,
                "worker" => Role::Worker,
                _ => {
                    return Err(ConfigError::Env {
                        var: "LLORCH_ROLE".into(),
                        value: v,
                        message: "expected control or worker".into(),
                    })
                }
            });
        }
        for var in ["ORCHESTRATORD_BIND_ADDR", "LLORCH_BIND"] {
            if let Some(v) = env(var) {
                self.server.bind = parse(var, &v)?;
            }
        }
        if let Some(v) = env("LLORCH_METRICS_BIND") {
            self.server.metrics_bind = Some(parse("LLORCH_METRICS_BIND", &v)?);
        }
        if let Some(v) = env("LLORCH_STORE_DIR") {
            self.store.dir = PathBuf::from(v);
        }
        for var in ["ORCHESTRATORD_NODE_TIMEOUT_MS", "LLORCH_NODE_TIMEOUT_MS"] {
            if let Some(v) = env(var) {
                self.cloud.node_timeout_ms = parse(var, &v)?;
            }
        }
        for var in ["POOL_MANAGERD_NODE_ID", "LLORCH_NODE_ID"] {
            if let Some(v) = env(var) {
                self.cloud.node_id = Some(v.trim().to_string());
            }
        }
        for var in ["ORCHESTRATORD_URL", "LLORCH_CONTROL_URLS"] {
            if let Some(v) = env(var) {
                self.cloud.control_urls = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
            }
        }
        if let Some(v) = env("LLORCH_ADVERTISE_URL") {
            self.cloud.advertise_url = Some(v.trim().to_string());
        }
        for var in [
            "POOL_MANAGERD_HEARTBEAT_INTERVAL_SECS",
            "LLORCH_HEARTBEAT_INTERVAL_SECS",
        ] {
            if let Some(v) = env(var) {
                self.cloud.heartbeat_interval_secs = parse(var, &v)?;
            }
        }
        if let Some(v) = env("LLORCH_API_TOKEN_FILE") {
            self.auth.token_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("LLORCH_THREADS") {
            self.engine.threads = parse("LLORCH_THREADS", &v)?;
        }
        if let Some(v) = env("LLORCH_LOG_FORMAT") {
            self.logging.format = match v.trim() {
                "auto" => LogFormat::Auto,
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                "journald" => LogFormat::Journald,
                _ => {
                    return Err(ConfigError::Env {
                        var: "LLORCH_LOG_FORMAT".into(),
                        value: v,
                        message: "expected auto, json, pretty or journald".into(),
                    })
                }
            };
        }
        if let Some(v) = env("LLORCH_QUEUE_CAPACITY") {
            self.admission.queue_capacity = parse("LLORCH_QUEUE_CAPACITY", &v)?;
        }
        Ok(())
    }

    /// Semantic checks beyond types. Returns the dotted key and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        match (self.profile, self.role) {
            (Profile::Home, Some(_)) => {
                return err(
                    "role",
                    "only a cloud profile has a role; remove it or set profile = \"cloud\"",
                )
            }
            (Profile::Cloud, None) => {
                return err(
                    "role",
                    "a cloud profile needs role = \"control\" or \"worker\"",
                )
            }
            _ => {}
        }
        if self.server.max_body_bytes < 1024 {
            return err("server.max_body_bytes", "must be at least 1024");
        }
        if self.admission.queue_capacity == 0 {
            return err("admission.queue_capacity", "must be at least 1");
        }
        if self.sessions.max_turns == 0 {
            return err("sessions.max_turns", "must be at least 1");
        }
        if self.sessions.max_sessions == 0 {
            return err("sessions.max_sessions", "must be at least 1");
        }
        if self.admission.max_retained_tasks == 0 {
            return err("admission.max_retained_tasks", "must be at least 1");
        }
        if self.cloud.heartbeat_interval_secs == 0 {
            return err("cloud.heartbeat_interval_secs", "must be at least 1");
        }
        if self.cloud.node_timeout_ms < 100 {
            return err("cloud.node_timeout_ms", "must be at least 100");
        }
        let mut seen = BTreeMap::new();
        for (i, p) in self.pools.iter().enumerate() {
            let key = |f: &str| format!("pools[{i}].{f}");
            if let Err(m) = validate_id(&p.id) {
                return Err((key("id"), m));
            }
            if seen.insert(p.id.clone(), i).is_some() {
                return Err((key("id"), format!("duplicate pool id {:?}", p.id)));
            }
            if let Err(m) = validate_id(&p.model) {
                return Err((key("model"), m));
            }
            if p.slots == 0 || p.slots > 256 {
                return Err((key("slots"), "must be between 1 and 256".into()));
            }
            if p.prefill_chunk == 0 {
                return Err((key("prefill_chunk"), "must be at least 1".into()));
            }
            if p.device != "cpu" && !p.device.starts_with("cuda") {
                return Err((key("device"), "expected \"cpu\" or \"cuda:N\"".into()));
            }
        }
        let worker_like = self.profile == Profile::Home || self.role == Some(Role::Worker);
        if !worker_like && !self.pools.is_empty() {
            return err(
                "pools",
                "a control plane loads no model; pools belong on workers",
            );
        }
        if self.role == Some(Role::Worker) {
            if self.cloud.node_id.as_deref().unwrap_or("").is_empty() {
                return err(
                    "cloud.node_id",
                    "a worker needs a node id (or POOL_MANAGERD_NODE_ID)",
                );
            }
            if let Err(m) = validate_id(self.cloud.node_id.as_deref().unwrap_or("")) {
                return Err(("cloud.node_id".into(), m));
            }
            if self.cloud.control_urls.is_empty() {
                return err(
                    "cloud.control_urls",
                    "a worker needs at least one control-plane URL (or ORCHESTRATORD_URL)",
                );
            }
            for u in &self.cloud.control_urls {
                if let Err(m) = validate_base_url(u) {
                    return Err(("cloud.control_urls".into(), m));
                }
            }
            if let Some(u) = &self.cloud.advertise_url {
                if let Err(m) = validate_base_url(u) {
                    return Err(("cloud.advertise_url".into(), m));
                }
            }
        }
        if self.cloud.dispatch_attempts == 0 || self.cloud.dispatch_attempts > 16 {
            return err("cloud.dispatch_attempts", "must be between 1 and 16");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return err("tls", "set both cert and key, or neither");
        }
        if self.tls.require_client_cert && self.tls.ca.is_none() {
            return err(
                "tls.require_client_cert",
                "needs tls.ca to verify client certificates",
            );
        }
        Ok(())
    }

    /// The role this process plays, folding the home profile into one.
    pub fn is_control(&self) -> bool {
        self.profile == Profile::Home || self.role == Some(Role::Control)
    }

    pub fn is_worker(&self) -> bool {
        self.profile == Profile::Home || self.role == Some(Role::Worker)
    }
}

/// A base URL another llorchd is reached at: `http(s)://host[:port]`, with
/// nothing after the authority but an optional `/`.
pub fn validate_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty()
        || authority.len() > 255
        || authority
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{url:?} must be a base URL like http://host:port"));
    }
    Ok(())
}

/// Ids for models, pools and nodes: 1..=64 chars of `[A-Za-z0-9._-]`, not
/// starting with `.` (so never `.` or `..`), no path separators.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > 64 {
        return Err(format!("is {} characters long; at most 64", id.len()));
    }
    if id.starts_with('.') {
        return Err(format!("{id:?} must not start with '.'"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{id:?} contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// `line L, column C, key `k`: message` from a TOML error. The key is read
/// from the start of the line the error points at (TOML's messages name it
/// only for unknown fields).
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(k) => format!("line {line_no}, column {column}, key `{k}`: {message}"),
        None => format!("line {line_no}, column {column}: {message}"),
    }
}

/// The 1-based line where a dotted key (`pools[0].slots`, `server.bind`) is
/// set, found by scanning the TOML text. Best effort: None when not found.
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    // Split `pools[2].slots` into table `pools`, index 2, leaf `slots`.
    let (table, index, leaf) = {
        let mut parts = dotted.rsplitn(2, '.');
        let leaf = parts.next()?;
        match parts.next() {
            None => (None, None, leaf),
            Some(t) => match t.split_once('[') {
                Some((name, rest)) => (
                    Some(name),
                    rest.trim_end_matches(']').parse::<usize>().ok(),
                    leaf,
                ),
                None => (Some(t), None, leaf),
            },
        }
    };
    let mut current: Option<String> = None;
    let mut array_seen: usize = 0;
    let mut in_target = table.is_none();
    let mut header_line = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let name = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            let is_array = line.starts_with("[[");
            in_target = match table {
                None => false,
                Some(t) if name == t => {
                    if is_array {
                        let hit = Some(array_seen) == index || index.is_none();
                        array_seen += 1;
                        hit
                    } else {
                        true
                    }
                }
                _ => false,
            };
            if in_target {
                header_line = Some(n + 1);
            }
            current = Some(name);
            continue;
        }
        let _ = &current;
        if in_target {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim().trim_matches('"') == leaf {
                    return Some(n + 1);
                }
            }
        }
    }
    // The key is not written out (a default broke a rule): point at its table.
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_text(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load_with_env(Some(&p), env)
    }

    #[test]
    fn empty_file_is_a_valid_home_profile() {
        let c = load_text("", &no_env).unwrap();
        assert_eq!(c.profile, Profile::Home);
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admission.queue_capacity, 256);
        assert_eq!(c.sessions.ttl_secs, 600);
        assert_eq!(c.sessions.max_turns, 8);
    }

    #[test]
    fn minimal_operator_config_parses() {
        let text = r#"
profile = "home"
[server]
bind = "127.0.0.1:8080"
[store]
dir = "/var/lib/llorchd"
[[pools]]
id = "default"
model = "smollm2"
slots = 4
"#;
        let c = load_text(text, &no_env).unwrap();
        assert_eq!(c.pools.len(), 1);
        assert_eq!(c.pools[0].model, "smollm2");
        assert_eq!(c.pools[0].slots, 4);
        assert_eq!(c.store.dir, PathBuf::from("/var/lib/llorchd"));
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let text = "profile = \"home\"\n[server]\nbind = \"127.0.0.1:1\"\nbnid = 3\n";
        let e = load_text(text, &no_env).unwrap_err().to_string();
        assert!(e.contains("bnid"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = load_text(
            "[[pools]]\nid = \"a\"\nmodel = \"m\"\nslots = \"four\"\n",
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 4") && e.contains("`slots`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn syntax_error_is_one_line_with_its_line() {
        let e = load_text("[server]\nbind = \n", &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn semantic_error_names_key_and_line() {
        let text = "[[pools]]\nid = \"a\"\nmodel = \"m\"\n\n[[pools]]\nid = \"b\"\nmodel = \"m\"\nslots = 0\n";
        let e = load_text(text, &no_env).unwrap_err().to_string();
        assert!(e.contains("pools[1].slots"), "{e}");
        assert!(e.contains("line 8"), "{e}");
    }

    #[test]
    fn cloud_needs_a_role_and_home_has_none() {
        let e = load_text("profile = \"cloud\"\n", &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`role`"), "{e}");
        let e = load_text("role = \"worker\"\n", &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`role`") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn path_like_ids_are_rejected() {
        for bad in ["../x", "a/b", "..", ".hidden", "a\\b", "", &"x".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["smollm2", "gemma-3.270m_q4"] {
            validate_id(good).unwrap();
        }
        let e = load_text("[[pools]]\nid = \"p\"\nmodel = \"../etc\"\n", &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pools[0].model") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn seed_env_names_override() {
        let env = |k: &str| -> Option<String> {
            match k {
                "ORCHESTRATORD_CLOUD_PROFILE" => Some("true".into()),
                "LLORCH_ROLE" => Some("worker".into()),
                "ORCHESTRATORD_BIND_ADDR" => Some("0.0.0.0:9000".into()),
                "POOL_MANAGERD_NODE_ID" => Some("gpu-1".into()),
                "ORCHESTRATORD_URL" => Some("http://a:1, http://b:2".into()),
                "POOL_MANAGERD_HEARTBEAT_INTERVAL_SECS" => Some("3".into()),
                "ORCHESTRATORD_NODE_TIMEOUT_MS" => Some("5000".into()),
                _ => None,
            }
        };
        let c = load_text("", &env).unwrap();
        assert_eq!(c.profile, Profile::Cloud);
        assert_eq!(c.role, Some(Role::Worker));
        assert_eq!(c.server.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(c.cloud.node_id.as_deref(), Some("gpu-1"));
        assert_eq!(c.cloud.control_urls, vec!["http://a:1", "http://b:2"]);
        assert_eq!(c.cloud.heartbeat_interval_secs, 3);
        assert_eq!(c.cloud.node_timeout_ms, 5000);
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = |k: &str| (k == "ORCHESTRATORD_BIND_ADDR").then(|| "nonsense".to_string());
        let e = load_text("", &env).unwrap_err().to_string();
        assert!(e.contains("ORCHESTRATORD_BIND_ADDR"), "{e}");
    }

    #[test]
    fn worker_urls_are_checked() {
        let base = "profile = \"cloud\"\nrole = \"worker\"\n[cloud]\nnode_id = \"w\"\n";
        let ok = format!("{base}control_urls = [\"http://cp:8080\", \"https://cp2/\"]\n");
        load_text(&ok, &no_env).unwrap();
        let bad = format!("{base}control_urls = [\"cp:8080\"]\n");
        let e = load_text(&bad, &no_env).unwrap_err().to_string();
        assert!(
            e.contains("cloud.control_urls") && e.contains("line 5"),
            "{e}"
        );
        let bad = format!("{base}control_urls = [\"http://cp/x\"]\n");
        assert!(load_text(&bad, &no_env).is_err());
        let env = |k: &str| (k == "LLORCH_ADVERTISE_URL").then(|| "10.0.0.7:9000".to_string());
        let e = load_text(&ok, &env).unwrap_err().to_string();
        assert!(e.contains("cloud.advertise_url"), "{e}");
        let env =
            |k: &str| (k == "LLORCH_ADVERTISE_URL").then(|| "http://10.0.0.7:9000".to_string());
        load_text(&ok, &env).unwrap();
    }

    #[test]
    fn control_plane_rejects_pools() {
        let text =
            "profile = \"cloud\"\nrole = \"control\"\n[[pools]]\nid = \"p\"\nmodel = \"m\"\n";
        let e = load_text(text, &no_env).unwrap_err().to_string();
        assert!(e.contains("`pools`"), "{e}");
    }
}
