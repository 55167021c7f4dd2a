//! `llorchd serve`: run the profile the config names (home, or a cloud
//! control plane or worker) until SIGTERM or SIGINT, then shut down
//! gracefully.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use llorchd::backend::cpu::Isa;
use std::sync::Arc;

use llorchd::config::{Profile, Role};
use llorchd::net::auth;
use llorchd::profile::{ControlOptions, ControlPlane, Home, HomeOptions, Worker, WorkerOptions};
use llorchd::telemetry::logging::{self, LogTarget};
use llorchd::telemetry::metrics::{self as m, ProcessRole};
use llorchd::telemetry::systemd::{self, Notifier};

use super::{usage, Context, Run};

#[derive(Debug, Args)]
pub struct Serve {
    /// SIMD level for the engine: avx512, avx2 or scalar (default: the best
    /// this CPU has).
    #[arg(long)]
    isa: Option<String>,
}

impl Run for Serve {
    fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let cfg = ctx.load_config()?;
        let role = ProcessRole::from_config(&cfg)
            .ok_or_else(|| usage("a cloud profile needs a role (control or worker)"))?;
        let isa = match &self.isa {
            None => None,
            Some(n) => Some(Isa::from_name(n).filter(|i| i.available()).ok_or_else(|| {
                usage(format!(
                    "--isa {n:?} is unknown or not available on this CPU"
                ))
            })?),
        };
        let env = |k: &str| std::env::var(k).ok();
        let target = LogTarget::detect(env("JOURNAL_STREAM").as_deref());
        logging::init(&cfg.logging, target, env("RUST_LOG").as_deref())
            .map_err(|e| usage(e.to_string()))?;
        // The token: a file (config, LLORCH_API_TOKEN_FILE), the systemd
        // credential, or LLORCH_API_TOKEN. Only its fingerprint is logged.
        let token = auth::load_token(
            cfg.auth.token_file.as_deref(),
            env("CREDENTIALS_DIRECTORY")
                .as_deref()
                .map(std::path::Path::new),
            env("LLORCH_API_TOKEN").as_deref(),
        )
        .map_err(|e| usage(e.to_string()))?
        .map(|(t, source)| {
            tracing::info!(
                token_fingerprint = %t.fingerprint(),
                source = %source,
                human = "bearer token loaded",
            );
            Arc::new(t)
        });
        let handle = m::install_recorder(role)?;
        let _upkeep = m::spawn_upkeep(handle.clone())?;
        let notifier = Notifier::new(env("NOTIFY_SOCKET").as_deref())?;
        let _watchdog = match systemd::watchdog_timeout(
            env("WATCHDOG_USEC").as_deref(),
            env("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )? {
            Some(t) => Some(systemd::spawn_watchdog(notifier.clone(), t, || true)?),
            None => None,
        };

        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("llorchd-api")
            .build()
            .context("starting the async runtime")?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(cfg.server.bind)
                .await
                .with_context(|| format!("binding {}", cfg.server.bind))?;
            let metrics_listener = match cfg.server.metrics_bind {
                Some(a) => Some(
                    tokio::net::TcpListener::bind(a)
                        .await
                        .with_context(|| format!("binding {a}"))?,
                ),
                None => None,
            };
            match (cfg.profile, cfg.role) {
                (Profile::Cloud, Some(Role::Control)) => {
                    let cp = ControlPlane::start(
                        cfg,
                        ControlOptions {
                            metrics: Some(handle),
                            notifier: Some(notifier),
                            token,
                        },
                    )
                    .await?;
                    cp.serve(listener, metrics_listener, shutdown_signal())
                        .await?;
                }
                (Profile::Cloud, _) => {
                    let w = Worker::start(
                        cfg,
                        WorkerOptions {
                            metrics: Some(handle),
                            isa,
                            notifier: Some(notifier),
                            token,
                        },
                    )
                    .await?;
                    w.serve(listener, metrics_listener, shutdown_signal())
                        .await?;
                }
                (Profile::Home, _) => {
                    let home = Home::start(
                        cfg,
                        HomeOptions {
                            metrics: Some(handle),
                            isa,
                            notifier: Some(notifier),
                            token,
                        },
                    )
                    .await?;
                    home.serve(listener, metrics_listener, shutdown_signal())
                        .await?;
                }
            }
            anyhow::Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
