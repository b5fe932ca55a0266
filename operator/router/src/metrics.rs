//! The router's Prometheus metrics, served on the admin port's `GET /metrics`.

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The `variant` label of requests refused before a variant was chosen
/// (an unknown target variant, no variant taking traffic).
pub const NO_VARIANT: &str = "none";

/// Every metric, cheap to clone (the collectors are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    shadows: IntCounterVec,
    capture: IntCounterVec,
    revision: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of a status code as the `code` label writes it.
pub fn code_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "kiln_router_requests_total",
                "requests answered, by the variant that answered and the status class",
            ),
            &["endpoint", "variant", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "kiln_router_request_duration_seconds",
                "time from a request's arrival until its response was sent, by variant",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5,
                0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
            ]),
            &["endpoint", "variant"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "kiln_router_in_flight_requests",
                "requests being answered now, by variant",
            ),
            &["endpoint", "variant"],
        )
        .expect("valid metric");
        let shadows = IntCounterVec::new(
            Opts::new(
                "kiln_router_shadow_requests_total",
                "copies of requests for shadow variants: sent, dropped (the shadow's limit of \
                 copies in flight was reached), error (sent, but no answer or a 5xx)",
            ),
            &["endpoint", "variant", "outcome"],
        )
        .expect("valid metric");
        let capture = IntCounterVec::new(
            Opts::new(
                "kiln_router_capture_records_total",
                "data capture records: written, dropped (the queue was full), failed (the \
                 store refused them)",
            ),
            &["endpoint", "outcome"],
        )
        .expect("valid metric");
        let revision = IntGauge::new(
            "kiln_router_config_revision",
            "the Endpoint revision of the applied configuration",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(shadows.clone()),
            Box::new(capture.clone()),
            Box::new(revision.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Metrics {
            registry,
            requests,
            duration,
            in_flight,
            shadows,
            capture,
            revision,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, endpoint: &str, variant: &str, status: u16) {
        self.requests
            .with_label_values(&[endpoint, variant, code_class(status)])
            .inc();
    }

    /// Starts timing a request routed to `variant`, counted in flight until
    /// the returned guard drops (when the response body has been sent).
    pub fn flight(&self, endpoint: &str, variant: &str) -> Flight {
        let gauge = self.in_flight.with_label_values(&[endpoint, variant]);
        gauge.inc();
        Flight {
            gauge,
            duration: self.duration.with_label_values(&[endpoint, variant]),
            start: Instant::now(),
        }
    }

    /// Counts one shadow copy's outcome: `sent`, `dropped` or `error`.
    pub fn shadow(&self, endpoint: &str, shadow: &str, outcome: &str) {
        self.shadows
            .with_label_values(&[endpoint, shadow, outcome])
            .inc();
    }

    /// Counts `n` capture records' outcome: `written`, `dropped` or `failed`.
    pub fn capture(&self, endpoint: &str, outcome: &str, n: u64) {
        self.capture
            .with_label_values(&[endpoint, outcome])
            .inc_by(n);
    }

    pub fn set_revision(&self, revision: i64) {
        self.revision.set(revision);
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// A request in flight (see [`Metrics::flight`]).
pub struct Flight {
    gauge: IntGauge,
    duration: prometheus::Histogram,
    start: Instant,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.gauge.dec();
        self.duration.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_flights() {
        assert_eq!(code_class(200), "2xx");
        assert_eq!(code_class(204), "2xx");
        assert_eq!(code_class(413), "4xx");
        assert_eq!(code_class(504), "5xx");
        let m = Metrics::new();
        {
            let _f = m.flight("ep", "a");
            let text = String::from_utf8(m.render()).unwrap();
            assert!(
                text.contains(r#"kiln_router_in_flight_requests{endpoint="ep",variant="a"} 1"#)
            );
        }
        m.request("ep", "a", 200);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(r#"kiln_router_in_flight_requests{endpoint="ep",variant="a"} 0"#));
        assert!(
            text.contains(r#"kiln_router_requests_total{code="2xx",endpoint="ep",variant="a"} 1"#)
        );
        assert!(text.contains(
            r#"kiln_router_request_duration_seconds_count{endpoint="ep",variant="a"} 1"#
        ));
    }
}
