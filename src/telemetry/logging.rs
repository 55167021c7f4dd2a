//! Structured logs with `tracing`: JSON lines, pretty text on a terminal, or
//! native journald fields, chosen from `config::LogFormat` and where stdout
//! goes.
//!
//! Field names live in [`field`]; a task's fields are declared once by
//! [`task_span`], so every line logged inside it carries them. JSON lines
//! flatten the fields of all enclosing spans into the top-level object, so
//! `jq 'select(.correlation_id == "…")'` finds all of a task's lines.
//!
//! Never log a token, a prompt or a secret: log [`fingerprint`] of a token.

use std::fmt;
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::TelemetryError;
use crate::config::{LogFormat, LoggingConfig};

/// Log field names (BRIEF section 5). Use these with `Span::record` and when
/// reading logs back; `tracing` macros need the same names as identifiers.
pub mod field {
    /// The task id (`task_id` on the API).
    pub const JOB_ID: &str = "job_id";
    pub const SESSION_ID: &str = "session_id";
    pub const ENGINE: &str = "engine";
    pub const ENGINE_VERSION: &str = "engine_version";
    pub const POOL_ID: &str = "pool_id";
    pub const NODE_ID: &str = "node_id";
    pub const QUEUE_POSITION: &str = "queue_position";
    pub const PREDICTED_START_MS: &str = "predicted_start_ms";
    pub const TOKENS_IN: &str = "tokens_in";
    pub const TOKENS_OUT: &str = "tokens_out";
    pub const DECODE_TIME_MS: &str = "decode_time_ms";
    /// `X-Correlation-Id`: joins a task's lines across control plane and worker.
    pub const CORRELATION_ID: &str = "correlation_id";
    /// A short natural-language narration at admission, placement, stream
    /// start, end and cancel.
    pub const HUMAN: &str = "human";
    /// [`super::fingerprint`] of a bearer token; never the token itself.
    pub const TOKEN_FINGERPRINT: &str = "token_fingerprint";

    /// The task fields of BRIEF section 5, in the order [`super::task_span`] declares them.
    pub const TASK: [&str; 13] = [
        CORRELATION_ID,
        JOB_ID,
        SESSION_ID,
        ENGINE,
        ENGINE_VERSION,
        POOL_ID,
        NODE_ID,
        QUEUE_POSITION,
        PREDICTED_START_MS,
        TOKENS_IN,
        TOKENS_OUT,
        DECODE_TIME_MS,
        HUMAN,
    ];
}

/// The span a task's work runs in, from admission to its last frame, on the
/// control side and on the worker alike. Fields not known yet start empty;
/// fill them with `span.record(field::POOL_ID, pool_id)` as they are decided.
/// `human` narration goes on the events: `info!(human = "…", "…")`.
pub fn task_span(correlation_id: &str, job_id: &str) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "task",
        correlation_id,
        job_id,
        session_id = Empty,
        engine = Empty,
        engine_version = Empty,
        pool_id = Empty,
        node_id = Empty,
        queue_position = Empty,
        predicted_start_ms = Empty,
        tokens_in = Empty,
        tokens_out = Empty,
        decode_time_ms = Empty,
        human = Empty,
    )
}

/// The first 6 hex digits of the SHA-256 of `secret`: enough to tell tokens
/// apart in logs, useless to an attacker.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    hex::encode(&digest[..3])
}

/// Where this process's output goes, as far as choosing a log format cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogTarget {
    pub stdout_is_terminal: bool,
    /// stdout or stderr is the journal stream systemd set up
    /// (`JOURNAL_STREAM` matches its device and inode).
    pub journal: bool,
}

impl LogTarget {
    /// Inspects this process's stdout and stderr. The binary calls it once at
    /// start with the value of `JOURNAL_STREAM` (read by the caller).
    pub fn detect(journal_stream: Option<&str>) -> LogTarget {
        let out = io::stdout();
        let err = io::stderr();
        LogTarget {
            stdout_is_terminal: out.is_terminal(),
            journal: journal_stream
                .is_some_and(|js| journal_stream_matches(js, &[out.as_fd(), err.as_fd()])),
        }
    }
}

/// Parses `JOURNAL_STREAM`, which systemd sets to `DEVICE:INODE` of the
/// stream it connected to stdout/stderr.
pub fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// Device and inode of an open file descriptor.
pub fn fd_identity(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// True if `journal_stream` names one of `fds`. systemd documents this check:
/// the variable is inherited by children whose output goes elsewhere, so its
/// presence alone does not mean our output reaches the journal.
pub fn journal_stream_matches(journal_stream: &str, fds: &[BorrowedFd<'_>]) -> bool {
    let Some(want) = parse_journal_stream(journal_stream) else {
        return false;
    };
    fds.iter().any(|fd| fd_identity(*fd) == Some(want))
}

/// The log output actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Pretty,
    Journald,
}

/// `auto`: journald when our output is the journal stream, pretty on a
/// terminal, JSON lines otherwise. Explicit formats win.
pub fn choose_output(format: LogFormat, target: LogTarget) -> Output {
    match format {
        LogFormat::Json => Output::Json,
        LogFormat::Pretty => Output::Pretty,
        LogFormat::Journald => Output::Journald,
        LogFormat::Auto if target.journal => Output::Journald,
        LogFormat::Auto if target.stdout_is_terminal => Output::Pretty,
        LogFormat::Auto => Output::Json,
    }
}

/// The level filter: `RUST_LOG` (passed in by the caller) when set and not
/// empty, else `logging.level`.
pub fn env_filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let (source_name, directive) = match rust_log.map(str::trim) {
        Some(v) if !v.is_empty() => ("RUST_LOG", v),
        _ => ("logging.level", level.trim()),
    };
    EnvFilter::builder()
        .parse(directive)
        .map_err(|e| TelemetryError::LogFilter {
            source_name,
            directive: directive.to_string(),
            message: e.to_string(),
        })
}

/// Syslog identifier and journald field prefix: fields appear as
/// `LLORCH_JOB_ID`, `LLORCH_CORRELATION_ID`, ..., so they never collide with
/// journald's own fields (`PRIORITY`, `MESSAGE`, `CODE_*`).
pub const JOURNALD_FIELD_PREFIX: &str = "LLORCH";
pub const SYSLOG_IDENTIFIER: &str = "llorchd";

/// Installs the global subscriber. Returns the output in use: `auto` falls
/// back to JSON when the journal socket cannot be reached; an explicit
/// `journald` fails instead.
pub fn init(
    cfg: &LoggingConfig,
    target: LogTarget,
    rust_log: Option<&str>,
) -> Result<Output, TelemetryError> {
    let filter = env_filter(&cfg.level, rust_log)?;
    let wanted = choose_output(cfg.format, target);
    let (output, layer, fallback) = match stdout_layer(wanted, target) {
        Ok(layer) => (wanted, layer, None),
        Err(e) if cfg.format == LogFormat::Auto => {
            (Output::Json, stdout_layer(Output::Json, target)?, Some(e))
        }
        Err(e) => return Err(e),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init()
        .map_err(|_| TelemetryError::SubscriberInstalled)?;
    if let Some(e) = fallback {
        tracing::warn!(error = %e, "journald unreachable; logging JSON lines to stdout");
    }
    Ok(output)
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn stdout_layer(output: Output, target: LogTarget) -> Result<BoxedLayer, TelemetryError> {
    Ok(match output {
        Output::Json => json_layer(io::stdout).boxed(),
        Output::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(io::stdout)
            .with_ansi(target.stdout_is_terminal)
            .boxed(),
        Output::Journald => tracing_journald::layer()
            .map_err(TelemetryError::Journald)?
            .with_field_prefix(Some(JOURNALD_FIELD_PREFIX.into()))
            .with_syslog_identifier(SYSLOG_IDENTIFIER.into())
            .boxed(),
    })
}

/// The JSON-lines layer, writing to `make_writer` (tests pass a buffer).
pub fn json_layer<S, W>(
    make_writer: W,
) -> tracing_subscriber::fmt::Layer<S, JsonFields, FlatJson, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .with_writer(make_writer)
}

/// One JSON object per line: `timestamp`, `level`, `target`, `span` (the
/// innermost span's name), then the fields of every enclosing span from the
/// root inwards and the event's own fields, innermost winning on a clash.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut obj = Map::new();
        let mut span_name = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                span_name = Some(span.name());
                let ext = span.extensions();
                // With `JsonFields`, a span's recorded fields are a JSON object.
                if let Some(f) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&f.fields) {
                        obj.extend(fields);
                    }
                }
            }
        }
        event.record(&mut JsonVisitor(&mut obj));

        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let meta = event.metadata();
        obj.insert("timestamp".into(), Value::String(ts));
        obj.insert("level".into(), Value::String(meta.level().to_string()));
        obj.insert("target".into(), Value::String(meta.target().to_string()));
        if let Some(name) = span_name {
            obj.insert("span".into(), Value::String(name.to_string()));
        }
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        self.0.insert(field.name().to_string(), v);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; keep them readable as strings.
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::info;

    /// Captures everything written into one shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<Value> {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(json_layer(buf.clone()));
        tracing::subscriber::with_default(subscriber, f);
        buf.lines()
    }

    #[test]
    fn json_lines_carry_every_task_field() {
        let lines = capture(|| {
            let span = task_span("corr-1", "task-7");
            span.record(field::SESSION_ID, "sess-2");
            span.record(field::ENGINE, "llorchd-cpu");
            span.record(field::ENGINE_VERSION, "0.1.0");
            span.record(field::POOL_ID, "pool-a");
            span.record(field::NODE_ID, "node-1");
            let _g = span.enter();
            info!(
                queue_position = 3u64,
                predicted_start_ms = 120u64,
                human = "admitted at position 3, start in about 120 ms",
                "admitted"
            );
            span.record(field::TOKENS_IN, 11u64);
            span.record(field::TOKENS_OUT, 5u64);
            span.record(field::DECODE_TIME_MS, 42u64);
            info!(human = "finished: 5 tokens in 42 ms", "end");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (admitted, end) = (&lines[0], &lines[1]);
        for (k, v) in [
            (field::CORRELATION_ID, Value::from("corr-1")),
            (field::JOB_ID, Value::from("task-7")),
            (field::SESSION_ID, Value::from("sess-2")),
            (field::ENGINE, Value::from("llorchd-cpu")),
            (field::ENGINE_VERSION, Value::from("0.1.0")),
            (field::POOL_ID, Value::from("pool-a")),
            (field::NODE_ID, Value::from("node-1")),
            (field::QUEUE_POSITION, Value::from(3)),
            (field::PREDICTED_START_MS, Value::from(120)),
        ] {
            assert_eq!(admitted[k], v, "admitted line field {k}: {admitted}");
        }
        assert_eq!(admitted["message"], "admitted");
        assert_eq!(admitted["level"], "INFO");
        assert_eq!(admitted["span"], "task");
        assert!(admitted["human"].as_str().unwrap().contains("position 3"));
        assert!(admitted["timestamp"]
            .as_str()
            .is_some_and(|t| t.contains('T')));
        assert_eq!(end[field::TOKENS_IN], 11);
        assert_eq!(end[field::TOKENS_OUT], 5);
        assert_eq!(end[field::DECODE_TIME_MS], 42);
        assert_eq!(end[field::CORRELATION_ID], "corr-1");
        assert_eq!(end[field::HUMAN], "finished: 5 tokens in 42 ms");
        // Every BRIEF field is on one of the task's lines.
        for k in field::TASK {
            assert!(
                admitted.get(k).is_some() || end.get(k).is_some(),
                "field {k} missing from both lines"
            );
        }
    }

    #[test]
    fn nested_spans_flatten_and_the_innermost_value_wins() {
        let lines = capture(|| {
            let outer = task_span("c", "j");
            outer.record(field::POOL_ID, "outer");
            let _o = outer.enter();
            let inner = tracing::info_span!("dispatch", pool_id = "inner", attempt = 2u64);
            let _i = inner.enter();
            info!(node_id = "n9", "placed");
        });
        let l = &lines[0];
        assert_eq!(l["pool_id"], "inner");
        assert_eq!(l["attempt"], 2);
        assert_eq!(l["correlation_id"], "c");
        assert_eq!(l["node_id"], "n9");
        assert_eq!(l["span"], "dispatch");
    }

    #[test]
    fn task_span_declares_exactly_the_task_fields() {
        // A subscriber must be active for the span to be enabled.
        capture(|| {
            let span = task_span("c", "j");
            let names: Vec<&str> = span
                .metadata()
                .expect("span enabled")
                .fields()
                .iter()
                .map(|f| f.name())
                .collect();
            assert_eq!(names, field::TASK.to_vec());
        });
    }

    #[test]
    fn messages_with_quotes_and_newlines_stay_one_valid_line() {
        let lines = capture(|| info!(human = "said \"hi\"\nthen left", "x\ny"));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "x\ny");
        assert_eq!(lines[0]["human"], "said \"hi\"\nthen left");
    }

    #[test]
    fn fingerprint_is_six_hex_digits_of_sha256() {
        // sha256("secret") = 2bb80d53...
        assert_eq!(fingerprint("secret"), "2bb80d");
        assert_eq!(fingerprint("secret").len(), 6);
        assert_ne!(fingerprint("secret"), fingerprint("secret2"));
    }

    #[test]
    fn journal_stream_parsing() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream(" 8:1\n"), Some((8, 1)));
        for bad in ["", "8", "8:", ":1", "a:1", "8:1:2", "-1:2"] {
            assert_eq!(parse_journal_stream(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn journal_stream_must_match_the_fd() {
        let f = tempfile::tempfile().unwrap();
        let g = tempfile::tempfile().unwrap();
        let (dev, ino) = fd_identity(f.as_fd()).unwrap();
        let js = format!("{dev}:{ino}");
        assert!(journal_stream_matches(&js, &[f.as_fd()]));
        assert!(journal_stream_matches(&js, &[g.as_fd(), f.as_fd()]));
        assert!(!journal_stream_matches(&js, &[g.as_fd()]));
        assert!(!journal_stream_matches("garbage", &[f.as_fd()]));
    }

    #[test]
    fn auto_format_follows_the_target() {
        let t = |tty, journal| LogTarget {
            stdout_is_terminal: tty,
            journal,
        };
        assert_eq!(
            choose_output(LogFormat::Auto, t(false, false)),
            Output::Json
        );
        assert_eq!(
            choose_output(LogFormat::Auto, t(true, false)),
            Output::Pretty
        );
        assert_eq!(
            choose_output(LogFormat::Auto, t(true, true)),
            Output::Journald
        );
        assert_eq!(choose_output(LogFormat::Json, t(true, true)), Output::Json);
        assert_eq!(
            choose_output(LogFormat::Pretty, t(false, false)),
            Output::Pretty
        );
        assert_eq!(
            choose_output(LogFormat::Journald, t(false, false)),
            Output::Journald
        );
    }

    #[test]
    fn rust_log_wins_over_the_config_level() {
        let f = env_filter("info", Some("llorchd=trace")).unwrap();
        assert!(f.to_string().contains("llorchd=trace"));
        let f = env_filter("warn", Some("  ")).unwrap();
        assert_eq!(f.to_string(), "warn");
        let f = env_filter("debug", None).unwrap();
        assert_eq!(f.to_string(), "debug");
    }

    #[test]
    fn bad_filters_name_their_source() {
        let e = env_filter("info", Some("llorchd=notalevel")).unwrap_err();
        assert!(e.to_string().contains("RUST_LOG"), "{e}");
        let e = env_filter("loud[", None).unwrap_err();
        assert!(e.to_string().contains("logging.level"), "{e}");
    }
}
