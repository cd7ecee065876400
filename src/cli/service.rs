//! `credwatch run`: the service until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::http::Endpoint;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::sink::webhook::Webhooks;

/// Runs the service until a signal; then drains, commits and leaves the
/// group within `kafka.drain_timeout_secs` (plus a little) and returns.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let metrics = Arc::new(Metrics::new());
    let endpoint = rt.block_on(Endpoint::bind(&settings.config.http, metrics.clone()))?;
    tracing::info!(addr = %endpoint.addr, "Serving /metrics, /healthz and /readyz.");
    let Started {
        service,
        hooks,
        policy,
    } = start(&rt, &settings, &metrics, &endpoint)?;
    let stopped_by_itself = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("Interrupted: stopping.");
                    return anyhow::Ok(false);
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: stopping.");
                    return anyhow::Ok(false);
                }
                _ = tick.tick() => {
                    if service.stopped() {
                        return anyhow::Ok(true);
                    }
                }
            }
        }
    })?;
    let result = service.shutdown();
    if let Some(p) = &policy {
        p.flush(Duration::from_secs(5));
    }
    if let Some(h) = hooks {
        rt.block_on(h.shutdown());
    }
    if stopped_by_itself && result.is_ok() {
        anyhow::bail!("the consumer stopped unexpectedly");
    }
    Ok(result?)
}

/// What [`start`] started.
pub struct Started {
    pub service: Service,
    pub hooks: Option<Webhooks>,
    /// The policy servers, when `[dovecot_policy]` or `[postfix_policy]`
    /// has a `listen`.
    pub policy: Option<crate::enforce::Servers>,
}

/// Starts the service, its webhook delivery and its policy servers (on
/// `rt`), and points `/readyz` at the service: what `run` and `demo` both
/// start.
pub fn start(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    metrics: &Arc<Metrics>,
    endpoint: &Endpoint,
) -> anyhow::Result<Started> {
    let service = Service::start(settings.clone(), metrics.clone())?;
    endpoint.set_status(service.status());
    let policy = match service.locks() {
        Some(locks) => Some(rt.block_on(crate::enforce::Servers::start(
            settings,
            metrics.clone(),
            locks.clone(),
        ))?),
        None => None,
    };
    let hooks = rt.block_on(async {
        Webhooks::start(
            &settings.config.webhook,
            &settings.config.kafka,
            metrics.clone(),
        )
    })?;
    Ok(Started {
        service,
        hooks,
        policy,
    })
}
