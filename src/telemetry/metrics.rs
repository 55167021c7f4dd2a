//! Every metric llorchd exports, in one table, and the Prometheus recorder.
//!
//! Call sites record with the `metrics` macros and the constants here, e.g.
//! `metrics::counter!(TASKS_FINISHED_TOTAL, label::OUTCOME => outcome::OK).increment(1)`.
//! The dashboard, the alert rules and their tests use [`ALL`] as the list of
//! names that exist.
//!
//! Label cardinality is bounded by design: labels carry only ids from the
//! config or the node registry (`pool_id`, `node_id`, `device`) and small
//! closed sets (`outcome`, `reason`, `state`, `stage`). Never put a task id,
//! session id, correlation id, prompt, model path or token in a label: those
//! belong in logs (see `telemetry::logging::field`).

use std::time::Duration;

use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use super::{Periodic, TelemetryError};
use crate::config::{Config, Profile, Role};

/// The kind of a metric, as Prometheus exposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Which kind of llorchd process exports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRole {
    /// Home profile: control side and pools in one process.
    Home,
    /// Cloud control plane.
    Control,
    /// Cloud GPU worker.
    Worker,
}

impl ProcessRole {
    pub const ALL: [ProcessRole; 3] =
        [ProcessRole::Home, ProcessRole::Control, ProcessRole::Worker];

    /// The role a config runs as; `None` for a cloud config without a role
    /// (which `Config::validate` rejects).
    pub fn from_config(cfg: &Config) -> Option<ProcessRole> {
        match (cfg.profile, cfg.role) {
            (Profile::Home, _) => Some(ProcessRole::Home),
            (Profile::Cloud, Some(Role::Control)) => Some(ProcessRole::Control),
            (Profile::Cloud, Some(Role::Worker)) => Some(ProcessRole::Worker),
            (Profile::Cloud, None) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessRole::Home => "home",
            ProcessRole::Control => "control",
            ProcessRole::Worker => "worker",
        }
    }
}

/// One exported metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    /// Label keys, all of bounded cardinality.
    pub labels: &'static [&'static str],
    /// The processes that export it.
    pub roles: &'static [ProcessRole],
    /// Histogram bucket upper bounds (empty for counters and gauges).
    pub buckets: &'static [f64],
}

impl MetricDef {
    pub fn exported_by(&self, role: ProcessRole) -> bool {
        self.roles.contains(&role)
    }
}

/// Label keys.
pub mod label {
    pub const OUTCOME: &str = "outcome";
    pub const REASON: &str = "reason";
    pub const NODE_ID: &str = "node_id";
    pub const POOL_ID: &str = "pool_id";
    /// `cpu`, or the GPU ordinal such as `cuda:0`.
    pub const DEVICE: &str = "device";
    /// A node state, see [`super::node_state`].
    pub const STATE: &str = "state";
    /// Where a task was canceled: `queued` or `running`.
    pub const STAGE: &str = "stage";
    pub const VERSION: &str = "version";
    pub const ROLE: &str = "role";
}

/// Values of the `outcome` label. Task outcomes use `ok`, `canceled`, or the
/// stable API error code in lower case (see [`code_label`]).
pub mod outcome {
    pub const OK: &str = "ok";
    /// The request was refused (bad token, unknown node, invalid body).
    pub const REJECTED: &str = "rejected";
    /// The peer did not answer in time.
    pub const TIMEOUT: &str = "timeout";
    /// The peer could not be reached or the connection broke.
    pub const UNREACHABLE: &str = "unreachable";
    pub const ERROR: &str = "error";
    pub const CANCELED: &str = "canceled";
    pub const WORKER_LOST: &str = "worker_lost";
    pub const VRAM_OOM: &str = "vram_oom";
}

/// Values of the `state` label of [`NODES`]; the control plane sets every
/// one of them, zero included, so alerts see a series per state.
pub mod node_state {
    pub const ONLINE: &str = "online";
    /// Known from redb after a control-plane restart, no heartbeat yet.
    pub const STALE: &str = "stale";
    /// No heartbeat within the node timeout.
    pub const OFFLINE: &str = "offline";
    pub const DRAINING: &str = "draining";
    pub const ALL: [&str; 4] = [ONLINE, STALE, OFFLINE, DRAINING];
}

/// The label value for a stable API error code (`WORKER_LOST` → `worker_lost`),
/// used for task outcomes and admission rejection reasons.
pub fn code_label(code: &str) -> String {
    code.to_ascii_lowercase()
}

// ---- Cloud: node registry and pool health (BRIEF section 5 names) ----

pub const NODE_REGISTRATIONS_TOTAL: &str = "orchd_node_registrations_total";
pub const NODE_HEARTBEATS_TOTAL: &str = "orchd_node_heartbeats_total";
pub const NODE_DEREGISTRATIONS_TOTAL: &str = "orchd_node_deregistrations_total";
pub const POOL_HEALTH_CHECKS_TOTAL: &str = "orchd_pool_health_checks_total";
pub const NODES_ONLINE: &str = "orchd_nodes_online";
pub const POOLS_AVAILABLE: &str = "orchd_pools_available";
/// Milliseconds, as the seed named it (everything else is in seconds).
pub const POOL_HEALTH_CHECK_DURATION_MS: &str = "orchd_pool_health_check_duration_ms";
pub const NODES: &str = "orchd_nodes";

// ---- Admission and tasks ----

pub const ADMISSION_QUEUE_DEPTH: &str = "orchd_admission_queue_depth";
pub const ADMISSION_QUEUE_CAPACITY: &str = "orchd_admission_queue_capacity";
pub const ADMISSION_ENQUEUED_TOTAL: &str = "orchd_admission_enqueued_total";
pub const ADMISSION_REJECTED_TOTAL: &str = "orchd_admission_rejected_total";
pub const TASKS_DISPATCHED_TOTAL: &str = "orchd_tasks_dispatched_total";
pub const TASKS_STARTED_TOTAL: &str = "orchd_tasks_started_total";
pub const TASKS_CANCELED_TOTAL: &str = "orchd_tasks_canceled_total";
pub const TASKS_FINISHED_TOTAL: &str = "orchd_tasks_finished_total";
pub const TOKENS_IN_TOTAL: &str = "orchd_tokens_in_total";
pub const TOKENS_OUT_TOTAL: &str = "orchd_tokens_out_total";
pub const TIME_TO_FIRST_TOKEN_SECONDS: &str = "orchd_time_to_first_token_seconds";
pub const INTER_TOKEN_LATENCY_SECONDS: &str = "orchd_inter_token_latency_seconds";
pub const QUEUE_WAIT_SECONDS: &str = "orchd_queue_wait_seconds";
pub const TASK_DURATION_SECONDS: &str = "orchd_task_duration_seconds";

// ---- Pools (BRIEF names, no prefix) ----

pub const POOL_SLOTS_TOTAL: &str = "pool_slots_total";
pub const POOL_SLOTS_FREE: &str = "pool_slots_free";
pub const POOL_VRAM_TOTAL_BYTES: &str = "pool_vram_total_bytes";
pub const POOL_VRAM_FREE_BYTES: &str = "pool_vram_free_bytes";
pub const POOL_READY: &str = "pool_ready";
pub const POOL_KV_CACHE_USAGE_RATIO: &str = "pool_kv_cache_usage_ratio";
pub const POOL_GPU_UTILIZATION_RATIO: &str = "pool_gpu_utilization_ratio";

// ---- Worker side of the control-plane protocol ----

pub const WORKER_REGISTRATIONS_SENT_TOTAL: &str = "orchd_worker_registrations_sent_total";
pub const WORKER_HEARTBEATS_SENT_TOTAL: &str = "orchd_worker_heartbeats_sent_total";

// ---- Every process ----

pub const BUILD_INFO: &str = "orchd_build_info";

/// Time to first token: 5 ms .. 30 s (includes queue wait on a busy CPU pool).
pub const TTFT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Inter-token latency: 1 ms .. 1 s.
pub const ITL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0,
];
/// Queue wait: 1 ms .. 2 min.
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// End-to-end task duration: 50 ms .. 10 min.
pub const TASK_DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Pool health-check round trip in milliseconds: 1 ms .. 10 s.
pub const HEALTH_CHECK_MS_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

use MetricKind::{Counter, Gauge, Histogram};
use ProcessRole::{Control, Home, Worker};

const CONTROL: &[ProcessRole] = &[Control];
const CONTROL_SIDE: &[ProcessRole] = &[Home, Control];
const POOL_SIDE: &[ProcessRole] = &[Home, Worker];
const WORKER: &[ProcessRole] = &[Worker];
const EVERY: &[ProcessRole] = &[Home, Control, Worker];

const fn def(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    roles: &'static [ProcessRole],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        help,
        labels,
        roles,
        buckets: &[],
    }
}

const fn hist(
    name: &'static str,
    labels: &'static [&'static str],
    roles: &'static [ProcessRole],
    buckets: &'static [f64],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind: Histogram,
        help,
        labels,
        roles,
        buckets,
    }
}

/// Every metric llorchd exports.
#[rustfmt::skip]
pub const ALL: &[MetricDef] = &[
    def(NODE_REGISTRATIONS_TOTAL, Counter, &["outcome"], CONTROL,
        "Node registrations received, by outcome (ok, rejected)."),
    def(NODE_HEARTBEATS_TOTAL, Counter, &["node_id", "outcome"], CONTROL,
        "Node heartbeats received, by node and outcome (ok, rejected)."),
    def(NODE_DEREGISTRATIONS_TOTAL, Counter, &["outcome"], CONTROL,
        "Node deregistrations received, by outcome (ok, rejected)."),
    def(POOL_HEALTH_CHECKS_TOTAL, Counter, &["pool_id", "outcome"], CONTROL_SIDE,
        "Pool health checks run by the control side, by pool and outcome (ok, timeout, unreachable, error)."),
    def(NODES_ONLINE, Gauge, &[], CONTROL,
        "Registered nodes in state online: heartbeating within the node timeout and not draining."),
    def(NODES, Gauge, &["state"], CONTROL,
        "Registered nodes by state (online, stale, offline, draining); every state is always present."),
    def(POOLS_AVAILABLE, Gauge, &["pool_id"], CONTROL_SIDE,
        "1 if the pool is Ready on an online, non-draining node and accepts work, else 0."),
    hist(POOL_HEALTH_CHECK_DURATION_MS, &["pool_id"], CONTROL_SIDE, HEALTH_CHECK_MS_BUCKETS,
        "Pool health-check round trip in milliseconds."),
    def(ADMISSION_QUEUE_DEPTH, Gauge, &["pool_id"], CONTROL_SIDE,
        "Tasks waiting in the pool's admission queue."),
    def(ADMISSION_QUEUE_CAPACITY, Gauge, &["pool_id"], CONTROL_SIDE,
        "Capacity of the pool's admission queue (admission.queue_capacity)."),
    def(ADMISSION_ENQUEUED_TOTAL, Counter, &[], CONTROL_SIDE,
        "Tasks admitted into a queue (answered 202)."),
    def(ADMISSION_REJECTED_TOTAL, Counter, &["reason"], CONTROL_SIDE,
        "Tasks refused at admission, by reason (the lower-cased API error code, e.g. admission_reject)."),
    def(TASKS_DISPATCHED_TOTAL, Counter, &["node_id", "outcome"], CONTROL_SIDE,
        "Tasks handed to a node's pool, by node and outcome (ok, rejected, unreachable, worker_lost)."),
    def(TASKS_STARTED_TOTAL, Counter, &["pool_id"], CONTROL_SIDE,
        "Tasks that left the queue and started on a pool slot."),
    def(TASKS_CANCELED_TOTAL, Counter, &["stage"], CONTROL_SIDE,
        "Tasks canceled by the client, by stage (queued, running)."),
    def(TASKS_FINISHED_TOTAL, Counter, &["outcome"], CONTROL_SIDE,
        "Admitted tasks that ended, by outcome (ok, canceled, or the lower-cased API error code)."),
    def(TOKENS_IN_TOTAL, Counter, &["pool_id"], CONTROL_SIDE,
        "Prompt tokens processed."),
    def(TOKENS_OUT_TOTAL, Counter, &["pool_id"], CONTROL_SIDE,
        "Tokens generated and sent to clients."),
    hist(TIME_TO_FIRST_TOKEN_SECONDS, &["pool_id"], CONTROL_SIDE, TTFT_BUCKETS,
        "Seconds from admission to the first token sent, queue wait included."),
    hist(INTER_TOKEN_LATENCY_SECONDS, &["pool_id"], CONTROL_SIDE, ITL_BUCKETS,
        "Seconds between consecutive tokens of a stream."),
    hist(QUEUE_WAIT_SECONDS, &["pool_id"], CONTROL_SIDE, QUEUE_WAIT_BUCKETS,
        "Seconds a task waited in the admission queue before it started."),
    hist(TASK_DURATION_SECONDS, &["pool_id"], CONTROL_SIDE, TASK_DURATION_BUCKETS,
        "Seconds from admission to the end of the task (end-to-end latency)."),
    def(POOL_SLOTS_TOTAL, Gauge, &["pool_id"], POOL_SIDE,
        "Concurrent sequence slots of the pool."),
    def(POOL_SLOTS_FREE, Gauge, &["pool_id"], POOL_SIDE,
        "Slots of the pool not running a sequence."),
    def(POOL_VRAM_TOTAL_BYTES, Gauge, &["pool_id", "device"], POOL_SIDE,
        "Total VRAM of the pool's device in bytes (0 on CPU pools, device=\"cpu\")."),
    def(POOL_VRAM_FREE_BYTES, Gauge, &["pool_id", "device"], POOL_SIDE,
        "Free VRAM of the pool's device in bytes (0 on CPU pools, device=\"cpu\")."),
    def(POOL_READY, Gauge, &["pool_id"], POOL_SIDE,
        "1 if the pool has its model loaded and self-tested and accepts work, else 0."),
    def(POOL_KV_CACHE_USAGE_RATIO, Gauge, &["pool_id"], POOL_SIDE,
        "Fraction of the pool's KV-cache cells in use (0..1)."),
    def(POOL_GPU_UTILIZATION_RATIO, Gauge, &["pool_id", "device"], POOL_SIDE,
        "Fraction of time the pool's GPU was busy over the last sample (0..1; 0 on CPU pools)."),
    def(WORKER_REGISTRATIONS_SENT_TOTAL, Counter, &["outcome"], WORKER,
        "Registrations this worker sent to control planes, by outcome (ok, rejected, timeout, unreachable)."),
    def(WORKER_HEARTBEATS_SENT_TOTAL, Counter, &["outcome"], WORKER,
        "Heartbeats this worker sent to control planes, by outcome (ok, rejected, timeout, unreachable)."),
    def(BUILD_INFO, Gauge, &["version", "role"], EVERY,
        "Always 1; labels carry the llorchd version and process role."),
];

/// The definition of `name`, if llorchd exports it.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().find(|d| d.name == name)
}

/// How often [`spawn_upkeep`] drains recorded histogram samples.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// A Prometheus builder with the bucket layout of every histogram in [`ALL`]
/// and no HTTP listener (the api module serves `handle.render()`).
pub fn builder() -> Result<PrometheusBuilder, TelemetryError> {
    let mut b = PrometheusBuilder::new();
    for d in ALL.iter().filter(|d| d.kind == Histogram) {
        b = b.set_buckets_for_metric(Matcher::Full(d.name.to_string()), d.buckets)?;
    }
    Ok(b)
}

/// Builds a recorder for `role` without installing it globally: every metric
/// described, label-less metrics of the role present at 0, build info set.
/// Tests use it with `metrics::with_local_recorder`; any number can coexist.
pub fn build_recorder(role: ProcessRole) -> Result<PrometheusRecorder, TelemetryError> {
    let recorder = builder()?.build_recorder();
    prime(&recorder, role);
    Ok(recorder)
}

/// Builds the recorder for `role` and installs it as the process-global one.
/// The binary calls this once; a second call fails with `RecorderInstalled`.
/// Run [`spawn_upkeep`] on the handle (or call `run_upkeep` periodically).
pub fn install_recorder(role: ProcessRole) -> Result<PrometheusHandle, TelemetryError> {
    let recorder = build_recorder(role)?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| TelemetryError::RecorderInstalled)?;
    Ok(handle)
}

/// Drains histogram samples into their buckets every [`UPKEEP_PERIOD`] so a
/// long gap between scrapes does not grow memory. Stops on drop.
pub fn spawn_upkeep(handle: PrometheusHandle) -> Result<Periodic, TelemetryError> {
    Periodic::spawn("metrics-upkeep", UPKEEP_PERIOD, move || handle.run_upkeep())
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

fn prime(recorder: &PrometheusRecorder, role: ProcessRole) {
    for d in ALL {
        let name = KeyName::from_const_str(d.name);
        let help = SharedString::const_str(d.help);
        match d.kind {
            Counter => recorder.describe_counter(name, None, help),
            Gauge => recorder.describe_gauge(name, None, help),
            Histogram => recorder.describe_histogram(name, None, help),
        }
        // Series without labels exist from the start, so rate() and absence
        // checks work before the first event.
        if d.labels.is_empty() && d.exported_by(role) {
            let key = Key::from_static_name(d.name);
            match d.kind {
                Counter => recorder.register_counter(&key, &METADATA).absolute(0),
                Gauge => recorder.register_gauge(&key, &METADATA).set(0.0),
                Histogram => {}
            }
        }
    }
    let key = Key::from_parts(
        BUILD_INFO,
        vec![
            Label::from_static_parts(label::VERSION, env!("CARGO_PKG_VERSION")),
            Label::from_static_parts(label::ROLE, role.as_str()),
        ],
    );
    recorder.register_gauge(&key, &METADATA).set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// BRIEF section 5 fixes these names and labels.
    const BRIEF: &[(&str, &[&str])] = &[
        ("orchd_node_registrations_total", &["outcome"]),
        ("orchd_node_heartbeats_total", &["node_id", "outcome"]),
        ("orchd_node_deregistrations_total", &["outcome"]),
        ("orchd_pool_health_checks_total", &["pool_id", "outcome"]),
        ("orchd_nodes_online", &[]),
        ("orchd_pools_available", &["pool_id"]),
        ("orchd_pool_health_check_duration_ms", &["pool_id"]),
        ("orchd_admission_queue_depth", &["pool_id"]),
        ("orchd_admission_enqueued_total", &[]),
        ("orchd_admission_rejected_total", &["reason"]),
        ("orchd_tasks_dispatched_total", &["node_id", "outcome"]),
    ];

    #[test]
    fn brief_names_and_labels_are_kept() {
        for (name, labels) in BRIEF {
            let d = find(name).unwrap_or_else(|| panic!("{name} missing from ALL"));
            assert_eq!(d.labels, *labels, "{name}");
        }
        for name in [
            "pool_slots_total",
            "pool_slots_free",
            "pool_vram_total_bytes",
            "pool_vram_free_bytes",
            "pool_ready",
        ] {
            assert!(find(name).is_some(), "{name} missing");
        }
        for name in [POOL_VRAM_TOTAL_BYTES, POOL_VRAM_FREE_BYTES] {
            assert!(find(name).unwrap().labels.contains(&label::DEVICE));
        }
    }

    #[test]
    fn table_is_well_formed() {
        let mut seen = HashSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            let valid = |s: &str| {
                !s.is_empty()
                    && !s.starts_with(|c: char| c.is_ascii_digit())
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            assert!(valid(d.name), "bad name {}", d.name);
            assert!(!d.help.is_empty() && !d.roles.is_empty(), "{}", d.name);
            for l in d.labels {
                assert!(
                    valid(l) && !l.starts_with("__"),
                    "{}: bad label {l}",
                    d.name
                );
            }
            // `pool_slots_total` is a gauge whose name BRIEF section 5 fixes.
            if d.name != POOL_SLOTS_TOTAL {
                assert_eq!(d.name.ends_with("_total"), d.kind == Counter, "{}", d.name);
            }
            if d.kind == Histogram {
                assert!(!d.buckets.is_empty(), "{}", d.name);
                assert!(d.buckets.windows(2).all(|w| w[0] < w[1]), "{}", d.name);
                assert!(
                    d.name.ends_with("_seconds") || d.name.ends_with("_ms"),
                    "{}: histograms carry their unit",
                    d.name
                );
            } else {
                assert!(d.buckets.is_empty(), "{}", d.name);
            }
        }
    }

    #[test]
    fn no_unbounded_labels() {
        const FORBIDDEN: &[&str] = &[
            "task_id",
            "job_id",
            "session_id",
            "correlation_id",
            "prompt",
            "token",
            "model_path",
            "message",
        ];
        for d in ALL {
            for l in d.labels {
                assert!(!FORBIDDEN.contains(l), "{} has unbounded label {l}", d.name);
            }
        }
    }

    #[test]
    fn latency_buckets_span_the_required_ranges() {
        assert_eq!(TTFT_BUCKETS.first(), Some(&0.005));
        assert_eq!(TTFT_BUCKETS.last(), Some(&30.0));
        assert_eq!(ITL_BUCKETS.first(), Some(&0.001));
        assert_eq!(ITL_BUCKETS.last(), Some(&1.0));
    }

    #[test]
    fn roles_map_from_config() {
        let mut cfg = Config::default();
        assert_eq!(ProcessRole::from_config(&cfg), Some(ProcessRole::Home));
        cfg.profile = Profile::Cloud;
        assert_eq!(ProcessRole::from_config(&cfg), None);
        cfg.role = Some(Role::Worker);
        assert_eq!(ProcessRole::from_config(&cfg), Some(ProcessRole::Worker));
        cfg.role = Some(Role::Control);
        assert_eq!(ProcessRole::from_config(&cfg), Some(ProcessRole::Control));
    }

    fn render_with(role: ProcessRole, record: impl FnOnce()) -> String {
        let recorder = build_recorder(role).unwrap();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, record);
        handle.render()
    }

    #[test]
    fn histograms_render_with_their_buckets_and_help() {
        let text = render_with(ProcessRole::Home, || {
            metrics::histogram!(TIME_TO_FIRST_TOKEN_SECONDS, label::POOL_ID => "p0").record(0.3);
            metrics::histogram!(TIME_TO_FIRST_TOKEN_SECONDS, label::POOL_ID => "p0").record(7.0);
        });
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no line {needle} in\n{text}"))
                .to_string()
        };
        assert!(
            line("orchd_time_to_first_token_seconds_bucket{pool_id=\"p0\",le=\"0.25\"}")
                .ends_with(" 0")
        );
        assert!(
            line("orchd_time_to_first_token_seconds_bucket{pool_id=\"p0\",le=\"0.5\"}")
                .ends_with(" 1")
        );
        assert!(
            line("orchd_time_to_first_token_seconds_bucket{pool_id=\"p0\",le=\"10\"}")
                .ends_with(" 2")
        );
        assert!(line("orchd_time_to_first_token_seconds_count{pool_id=\"p0\"}").ends_with(" 2"));
        assert!(line("# TYPE orchd_time_to_first_token_seconds").ends_with("histogram"));
        assert!(line("# HELP orchd_time_to_first_token_seconds").contains("first token"));
    }

    #[test]
    fn label_less_metrics_of_the_role_start_at_zero() {
        let control = render_with(ProcessRole::Control, || {});
        assert!(
            control.lines().any(|l| l == "orchd_nodes_online 0"),
            "{control}"
        );
        assert!(control
            .lines()
            .any(|l| l == "orchd_admission_enqueued_total 0"));
        assert!(control.contains("orchd_build_info{version=\""));
        assert!(control.contains("role=\"control\"} 1"));
        let worker = render_with(ProcessRole::Worker, || {});
        assert!(!worker.contains("orchd_nodes_online"), "{worker}");
        assert!(!worker.contains("orchd_admission_enqueued_total"));
        assert!(worker.contains("role=\"worker\"} 1"));
    }

    #[test]
    fn recorders_are_independent() {
        let a = build_recorder(ProcessRole::Home).unwrap();
        let b = build_recorder(ProcessRole::Home).unwrap();
        metrics::with_local_recorder(&a, || {
            metrics::counter!(ADMISSION_ENQUEUED_TOTAL).increment(3);
        });
        assert!(a
            .handle()
            .render()
            .contains("orchd_admission_enqueued_total 3"));
        assert!(b
            .handle()
            .render()
            .contains("orchd_admission_enqueued_total 0"));
    }

    #[test]
    fn code_label_lowercases_api_codes() {
        assert_eq!(code_label("WORKER_LOST"), outcome::WORKER_LOST);
        assert_eq!(code_label("VRAM_OOM"), outcome::VRAM_OOM);
    }
}
