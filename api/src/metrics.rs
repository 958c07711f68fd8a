//! Prometheus metrics of one server instance, served on `GET /metrics`.
//! Each `App` owns its registry, so several apps in one process (tests,
//! benches) never mix their counts.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub db_statements: IntCounterVec,
    pub db_duration: HistogramVec,
    /// The sample writer's transactions, and the samples they stored: its
    /// statements bypass sea-orm (SQLite's through rusqlite, PostgreSQL's
    /// `COPY`), so `db_statements` does not see them.
    pub sample_writes: IntCounterVec,
    pub sample_write_duration: HistogramVec,
    pub samples_stored: IntCounter,
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
        let sample_writes = IntCounterVec::new(
            Opts::new(
                "sample_writes_total",
                "Transactions of the sample writer, by outcome",
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        let sample_write_duration = HistogramVec::new(
            HistogramOpts::new(
                "sample_write_duration_seconds",
                "Time a transaction of the sample writer took, to its commit",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0,
            ]),
            &["outcome"],
        )
        .expect("static metric definition");
        let samples_stored = IntCounter::new(
            "samples_stored_total",
            "New samples committed (duplicates of stored ones are not counted)",
        )
        .expect("static metric definition");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(db_statements.clone()),
            Box::new(db_duration.clone()),
            Box::new(sample_writes.clone()),
            Box::new(sample_write_duration.clone()),
            Box::new(samples_stored.clone()),
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
            sample_writes,
            sample_write_duration,
            samples_stored,
        }
    }

    /// One transaction of the sample writer: `stored` new samples, or
    /// `None` when it failed (its producers were told to retry).
    pub fn observe_sample_write(&self, elapsed: Duration, stored: Option<u64>) {
        let outcome = if stored.is_some() { "ok" } else { "error" };
        self.sample_writes.with_label_values(&[outcome]).inc();
        self.sample_write_duration
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
        self.samples_stored.inc_by(stored.unwrap_or(0));
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
