//! `llorchd serve`: run the home profile from the config until SIGTERM or
//! SIGINT, then shut down gracefully.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use llorchd::backend::cpu::Isa;
use llorchd::config::Profile;
use llorchd::profile::{Home, HomeOptions};
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
        if cfg.profile != Profile::Home {
            return Err(usage(
                "this build serves the home profile only (profile = \"home\")",
            ));
        }
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
        let handle = m::install_recorder(ProcessRole::Home)?;
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
            let home = Home::start(
                cfg,
                HomeOptions {
                    metrics: Some(handle),
                    isa,
                    notifier: Some(notifier),
                },
            )
            .await?;
            home.serve(listener, metrics_listener, shutdown_signal())
                .await?;
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
