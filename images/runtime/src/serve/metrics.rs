//! Prometheus metrics of the server, served on `GET /metrics`.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric, cheap to clone (the collectors are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    batch_size: HistogramVec,
    load_seconds: HistogramVec,
    errors: IntCounterVec,
    pub models_loaded: IntGauge,
    pub model_bytes: IntGauge,
    pub evictions: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("kiln_serve".into()), None).expect("a valid metric prefix");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "HTTP requests by route and status code"),
            &["route", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "time from the request's arrival to its response, by route",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new(
                "batch_size",
                "requests answered by one forward pass, by model",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["model"],
        )
        .expect("valid metric");
        let load_seconds = HistogramVec::new(
            HistogramOpts::new("model_load_seconds", "time to load a model, by model").buckets(
                vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0],
            ),
            &["model"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new("errors_total", "requests refused or failed, by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let models_loaded =
            IntGauge::new("models_loaded", "models in memory").expect("valid metric");
        let model_bytes = IntGauge::new("model_bytes", "bytes of the loaded models' tensors")
            .expect("valid metric");
        let evictions = IntGauge::new(
            "model_evictions",
            "models unloaded to make room (least recently used first)",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(batch_size.clone()),
            Box::new(load_seconds.clone()),
            Box::new(errors.clone()),
            Box::new(models_loaded.clone()),
            Box::new(model_bytes.clone()),
            Box::new(evictions.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Metrics {
            registry,
            requests,
            latency,
            batch_size,
            load_seconds,
            errors,
            models_loaded,
            model_bytes,
            evictions,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, route: &str, code: u16, elapsed: Duration) {
        let mut buf = itoa_buf(code);
        self.requests
            .with_label_values(&[route, code_str(&mut buf)])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one refused or failed request.
    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    /// The batch-size histogram of one model (held by its worker).
    pub fn batch_size(&self, model: &str) -> Histogram {
        self.batch_size.with_label_values(&[model])
    }

    pub fn model_loaded(&self, model: &str, took: Duration) {
        self.load_seconds
            .with_label_values(&[model])
            .observe(took.as_secs_f64());
    }

    /// Forgets the per-model series of an unloaded model.
    pub fn forget_model(&self, model: &str) {
        let _ = self.batch_size.remove_label_values(&[model]);
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

fn itoa_buf(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

fn code_str(buf: &mut [u8; 3]) -> &str {
    std::str::from_utf8(buf).unwrap_or("000")
}
