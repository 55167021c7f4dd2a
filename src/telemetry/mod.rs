//! Telemetry: Prometheus metrics (names in one place), structured logs
//! (JSON, pretty, journald) and systemd notifications.
//!
//! Nothing here reads environment variables: the binary reads `RUST_LOG`,
//! `JOURNAL_STREAM`, `NOTIFY_SOCKET` and `WATCHDOG_USEC` and passes the values
//! in, so tests can drive every path without touching process state.
//!
//! - `metrics`: every metric name, its kind, help, labels and exporting roles
//!   (`metrics::ALL`); building and installing the Prometheus recorder.
//! - `logging`: the `tracing` subscriber and the log field names.
//! - `systemd`: `sd_notify` messages and the watchdog thread.

pub mod logging;
pub mod metrics;
pub mod systemd;

mod periodic;

pub use periodic::Periodic;

/// Errors at the telemetry boundary.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid Prometheus exporter setup: {0}")]
    Exporter(#[from] metrics_exporter_prometheus::BuildError),
    #[error("a global metrics recorder is already installed")]
    RecorderInstalled,
    /// `source` names where the directive came from (`RUST_LOG` or `logging.level`).
    #[error("invalid log filter in {source_name} ({directive:?}): {message}")]
    LogFilter {
        source_name: &'static str,
        directive: String,
        message: String,
    },
    #[error("a global tracing subscriber is already installed")]
    SubscriberInstalled,
    #[error("cannot reach journald at /run/systemd/journal/socket: {0}")]
    Journald(std::io::Error),
    #[error("invalid NOTIFY_SOCKET {0:?}: expected an absolute path or @abstract name")]
    NotifySocket(String),
    #[error("cannot send to the systemd notify socket: {0}")]
    Notify(std::io::Error),
    #[error("invalid WATCHDOG_USEC {0:?}: expected a positive integer")]
    WatchdogUsec(String),
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
}
