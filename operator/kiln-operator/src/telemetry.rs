//! Logs, spans and metrics.

use std::io::IsTerminal;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{Config, LogFormat};

/// Installs the global tracing subscriber: JSON or text lines on stderr,
/// filtered by `--log-level`.
pub fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", config.log_level))?;
    let registry = tracing_subscriber::registry().with(filter);
    match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
    }
    Ok(())
}

/// The operator's own metrics, registered in one registry served on `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// Times this replica became leader.
    pub leader_acquisitions: IntCounter,
    /// 1 while the API server answers.
    pub api_server_reachable: IntGauge,
    /// Reconciles by kind and result (ok, error).
    pub reconciles: IntCounterVec,
    /// Reconcile errors by kind and reason.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile duration by kind.
    pub reconcile_duration: HistogramVec,
    /// Pods created, by the kind that owns them.
    pub pods_created: IntCounterVec,
    /// Objects by kind and state.
    pub jobs: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("kiln_operator".into()), None)?;
        let build = IntGaugeVec::new(
            Opts::new("build_info", "Build information, always 1"),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let leader = IntGauge::new("leader", "1 while this replica holds the leader Lease")?;
        let leader_acquisitions = IntCounter::new(
            "leader_acquisitions_total",
            "Times this replica became leader",
        )?;
        let api_server_reachable = IntGauge::new(
            "api_server_reachable",
            "1 while the Kubernetes API server answers",
        )?;
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "Reconciles by kind and result"),
            &["kind", "result"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Reconcile errors by kind and reason",
            ),
            &["kind", "reason"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Time one reconcile takes").buckets(
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            &["kind"],
        )?;
        let pods_created = IntCounterVec::new(
            Opts::new(
                "pods_created_total",
                "Pods created, by the kind that owns them",
            ),
            &["kind"],
        )?;
        let jobs = IntGaugeVec::new(
            Opts::new(
                "objects",
                "Objects by kind and state, from the controller's cache",
            ),
            &["kind", "state"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(pods_created.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(build))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(leader_acquisitions.clone()))?;
        registry.register(Box::new(api_server_reachable.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            leader,
            leader_acquisitions,
            api_server_reachable,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            pods_created,
            jobs,
        })
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_the_prefix() {
        let m = Metrics::new().unwrap();
        m.leader.set(1);
        m.leader_acquisitions.inc();
        let text = m.render();
        assert!(text.contains("# TYPE kiln_operator_leader gauge"), "{text}");
        assert!(text.contains("kiln_operator_leader 1"), "{text}");
        assert!(
            text.contains("kiln_operator_leader_acquisitions_total 1"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "kiln_operator_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
