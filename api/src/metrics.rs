//! Prometheus metrics of one server instance, served on `GET /metrics`.
//! Each `App` owns its registry, so several apps in one process (tests,
//! benches) never mix their counts.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub db_statements: IntCounterVec,
    pub db_duration: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("trackingbms".into()), None)
            .expect("static registry prefix is valid");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests served, by route and status",
            ),
            &["route", "status"],
        )
        .expect("static metric definition");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency, by route",
            ),
            &["route"],
        )
        .expect("static metric definition");
        let db_statements = IntCounterVec::new(
            Opts::new("db_statements_total", "SQL statements executed, by outcome"),
            &["outcome"],
        )
        .expect("static metric definition");
        let db_duration = HistogramVec::new(
            HistogramOpts::new("db_statement_duration_seconds", "SQL statement latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(db_statements.clone()),
            Box::new(db_duration.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            http_requests,
            http_duration,
            db_statements,
            db_duration,
        }
    }

    pub fn observe_db(&self, elapsed: Duration, failed: bool) {
        let outcome = if failed { "error" } else { "ok" };
        self.db_statements.with_label_values(&[outcome]).inc();
        self.db_duration
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }

    /// Statements executed so far (successful and failed).
    pub fn db_statement_count(&self) -> u64 {
        ["ok", "error"]
            .iter()
            .map(|o| self.db_statements.with_label_values(&[o]).get())
            .sum()
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(%err, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
