//! One typed configuration, read from (lowest to highest precedence) built-in
//! defaults, a TOML file (`--config`, `TRACKINGBMS_CONFIG`, or
//! `trackingbms.toml` in the working directory when present), environment
//! variables `TRACKINGBMS_*` (nested keys with `__`, e.g.
//! `TRACKINGBMS_LIMITS__MAX_BODY_BYTES`) plus `DATABASE_URL` / `REDIS_URL`,
//! and finally command-line flags. `deploy/CONFIGURATION.md` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// Directory for the embedded SQLite database and other local state.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; defaults to `<data_dir>/trackingbms.db`.
    pub database_url: Option<String>,
    /// Redis for cross-replica fan-out (used by later slices).
    pub redis_url: Option<String>,
    /// Apply pending migrations when `serve` starts.
    pub run_migrations: bool,
    /// Maximum open database connections.
    pub db_max_connections: u32,
    pub log: LogConfig,
    pub limits: Limits,
    pub ingest: IngestConfig,
    pub retention: RetentionConfig,
    pub live: LiveConfig,
    pub modbus: ModbusConfig,
    pub mqtt: Option<MqttConfig>,
    pub demo: DemoConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub plugins: PluginsConfig,
    pub predictions: PredictionsConfig,
}

/// Battery predictions (ONNX models served with ONNX Runtime).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictionsConfig {
    /// Serve predictions at all.
    pub enabled: bool,
    /// ONNX Runtime shared library (`libonnxruntime.so.1.31.1`). Default:
    /// `$ORT_DYLIB_PATH`, else `.ort/libonnxruntime.so` (made by
    /// `scripts/setup-python.sh`), else next to the executable.
    pub ort_library: Option<PathBuf>,
    /// Whole-fleet refresh period.
    pub refresh_interval_secs: u64,
    /// Batteries that received samples are refreshed this long after.
    pub debounce_ms: u64,
    /// Inference sessions per model (concurrent batches).
    pub sessions: usize,
    /// Largest model accepted at upload.
    pub max_model_bytes: usize,
    /// End of life, SOH %, when the chemistry has no entry in `end_of_life_pct`.
    pub default_end_of_life_pct: f64,
    /// End of life, SOH %, by chemistry (`LFP = 70.0`).
    pub end_of_life_pct: std::collections::BTreeMap<String, f64>,
    /// Remaining life (days) under which the risk level is HIGH.
    pub risk_high_days: f64,
    /// Remaining life (days) under which the risk level is MEDIUM.
    pub risk_medium_days: f64,
}

impl Default for PredictionsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ort_library: None,
            refresh_interval_secs: 3600,
            debounce_ms: 2000,
            sessions: 2,
            max_model_bytes: 32 * 1024 * 1024,
            default_end_of_life_pct: 80.0,
            end_of_life_pct: Default::default(),
            risk_high_days: 30.0,
            risk_medium_days: 90.0,
        }
    }
}

impl PredictionsConfig {
    /// End of life of `chemistry`, as a SOH fraction.
    pub fn end_of_life(&self, chemistry: &str) -> f64 {
        self.end_of_life_pct
            .get(chemistry)
            .copied()
            .unwrap_or(self.default_end_of_life_pct)
            / 100.0
    }
}

/// WebAssembly plugins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Largest component accepted at upload.
    pub max_component_bytes: usize,
    /// Limits of every call.
    pub limits: PluginLimits,
    /// Limits of one tenant's calls instead of `limits`, by tenant slug
    /// (`[plugins.tenant_limits.acme]`).
    pub tenant_limits: std::collections::BTreeMap<String, PluginLimits>,
    /// When enabled KPI plugins run for the history (cron, UTC; five
    /// fields, or six with seconds first). Empty: never.
    pub kpi_schedule: String,
    /// The period each scheduled KPI run covers, ending at its slot.
    pub kpi_window_hours: u32,
    /// Scheduled KPI values older than this are deleted.
    pub kpi_retention_days: u32,
    /// How long a scheduled report is kept (and its links work).
    pub report_retention_days: u32,
    /// How often a replica looks for due schedules.
    pub scheduler_poll_secs: u64,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            max_component_bytes: 20 * 1024 * 1024,
            limits: PluginLimits::default(),
            tenant_limits: Default::default(),
            kpi_schedule: "0 1 * * *".into(),
            kpi_window_hours: 24,
            kpi_retention_days: 400,
            report_retention_days: 90,
            scheduler_poll_secs: 30,
        }
    }
}

/// What one plugin call may use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Wall-clock time of a call.
    pub timeout_ms: u64,
    /// Fuel (roughly, WebAssembly instructions) of a call.
    pub fuel: u64,
    /// Linear memory of the plugin.
    pub memory_bytes: usize,
    /// Size of what a call returns.
    pub max_output_bytes: usize,
    /// Size of the data handed to a call.
    pub max_input_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            timeout_ms: 2_000,
            fuel: 10_000_000_000,
            memory_bytes: 64 * 1024 * 1024,
            max_output_bytes: 1024 * 1024,
            max_input_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Sign-in, sessions and single sign-on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted as a SUPER_ADMIN API key of the default tenant, to bootstrap
    /// a deployment without a UI (`TRACKINGBMS_ADMIN_API_KEY`). At least 16
    /// characters.
    pub admin_api_key: Option<String>,
    /// Lifetime of an access token.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token (each refresh issues a new one).
    pub refresh_token_ttl_secs: u64,
    /// Failed sign-ins in a row before an account is locked.
    pub max_failed_logins: u32,
    /// How long a locked account stays locked.
    pub lockout_secs: u64,
    /// Sign-in attempts per minute from one address (`POST /auth/login`,
    /// `/auth/refresh`, `/oauth/token`).
    pub login_attempts_per_minute: u32,
    /// OpenID Connect providers for single sign-on.
    pub oidc: Vec<OidcProviderConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_api_key: None,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 86_400,
            max_failed_logins: 5,
            lockout_secs: 900,
            login_attempts_per_minute: 20,
            oidc: Vec::new(),
        }
    }
}

/// One OpenID Connect provider (`[[auth.oidc]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Short name used in the URLs: `/auth/oidc/<name>/login`.
    pub name: String,
    /// Issuer URL; its `/.well-known/openid-configuration` is read at start.
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// This server's callback, `https://…/auth/oidc/<name>/callback`.
    pub redirect_url: String,
    /// Slug of the tenant whose users sign in through this provider.
    #[serde(default = "default_tenant_slug")]
    pub tenant: String,
    /// Extra scopes besides `openid` (e.g. `email`, `profile`, `groups`).
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// Claim of the ID token (or userinfo) that lists the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Group → role (`SUPER_ADMIN`, …, `OBSERVER`); the highest matching role wins.
    #[serde(default)]
    pub role_mapping: std::collections::BTreeMap<String, String>,
    /// Role of a user in no mapped group; none refuses them.
    #[serde(default)]
    pub default_role: Option<String>,
}

fn default_tenant_slug() -> String {
    "default".into()
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

fn default_groups_claim() -> String {
    "groups".into()
}

/// The HTTP surface.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve GraphiQL on `GET /graphql` (turn off in production).
    pub graphiql: bool,
    /// Answer GraphQL introspection queries (turn off in production).
    pub introspection: bool,
    /// Origins allowed by CORS; empty allows any origin (no cookies are used,
    /// credentials travel in the `Authorization` header).
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            graphiql: true,
            introspection: true,
            cors_origins: Vec::new(),
        }
    }
}

/// MQTT ingestion; off unless a `[mqtt]` section (or `TRACKINGBMS_MQTT__URL`) is given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker, `mqtt://host:port`.
    pub url: String,
    /// Topic filter to subscribe to (MQTT wildcards `+` and `#` allowed).
    #[serde(default = "default_mqtt_topic")]
    pub topic: String,
    #[serde(default = "default_mqtt_client_id")]
    pub client_id: String,
}

fn default_mqtt_topic() -> String {
    "trackingbms/+/samples".into()
}

fn default_mqtt_client_id() -> String {
    format!("trackingbms-{:08x}", rand::random::<u32>())
}

/// Modbus TCP polling of BMS units whose protocol is `MODBUS_TCP`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// Poll devices from this replica. Any number of replicas may enable
    /// it: each unit is polled by the one replica holding its lease.
    pub enabled: bool,
    /// Timeout of a connection attempt and of each read.
    pub timeout_ms: u64,
    /// Longest wait between two reconnection attempts.
    pub max_backoff_secs: u64,
    /// Consecutive failed polls before a unit is OFFLINE and reconnected.
    pub offline_after_failures: u32,
    /// How often the unit list is re-read (changes apply without restart)
    /// and poll leases renewed.
    pub rescan_ms: u64,
    /// How long a poll lease lasts without renewal: when the replica
    /// polling a unit stops, another takes it over within this time.
    /// Keep it several times `rescan_ms`.
    pub lease_secs: u64,
    /// Extra register maps (`*.toml`), added to the built-in ones.
    pub register_maps_dir: Option<PathBuf>,
}

impl Default for ModbusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout_ms: 2_000,
            max_backoff_secs: 30,
            offline_after_failures: 3,
            rescan_ms: 5_000,
            lease_secs: 20,
            register_maps_dir: None,
        }
    }
}

/// Live subscriptions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// Events queued per subscriber before it is marked as lagging and
    /// further events are dropped for it (counted in `missed`).
    pub subscriber_queue: usize,
    /// Most stored samples replayed to a subscriber that resumes with `since`.
    pub max_replay: usize,
    /// Redis pub/sub channel shared by the replicas of one deployment.
    pub redis_channel: String,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            subscriber_queue: 1_024,
            max_replay: 100_000,
            redis_channel: "trackingbms:samples".into(),
        }
    }
}

/// How long raw samples are kept (roll-ups are kept for good).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw samples older than this many days are deleted.
    pub raw_days: u32,
    /// Seconds between two retention runs (at least 60).
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            raw_days: 90,
            interval_secs: 3600,
        }
    }
}

/// Telemetry ingestion: validation bounds, batching and backpressure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Samples stamped further than this in the future are rejected.
    pub max_future_secs: i64,
    /// Most rows the writer puts in one transaction (it coalesces submissions).
    pub batch_rows: usize,
    /// Write transactions in flight at once on PostgreSQL (SQLite has one).
    pub writers: usize,
    /// How often the roll-up backlog is added to the hourly and daily
    /// roll-ups and moves battery pointers (`lastSampleAt`, `sohPct`);
    /// reads of roll-ups also add it first.
    pub rollup_fold_ms: u64,
    /// Submissions that may wait for the writer; beyond that producers wait.
    pub queue_depth: usize,
    /// How long a producer waits for room before getting `RETRY_LATER`.
    pub enqueue_timeout_ms: u64,
    /// Records per chunk of a `POST /ingest` body (bounds memory per request;
    /// a chunk is one write, so larger chunks mean fewer transactions: 5,000
    /// gave 177k samples/s on PostgreSQL where 20,000 gave 234–254k).
    pub chunk_records: usize,
    /// Longest accepted line of a `POST /ingest` body.
    pub max_line_bytes: usize,
    /// Rejected records listed in a response; the count is always exact.
    pub max_rejects_listed: usize,
    /// Largest `ingestSamples` batch.
    pub max_graphql_batch: usize,
    /// Physical bounds per chemistry (`LFP`, `NMC`, `NCA`, `LTO`, `LEAD_ACID`,
    /// `OTHER`); missing ones use the built-in values.
    pub chemistry: std::collections::BTreeMap<String, ChemistryLimits>,
}

/// Physical bounds of one chemistry, per cell; a pack's cell count is its
/// nominal voltage divided by `nominal_cell_v`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChemistryLimits {
    pub nominal_cell_v: f64,
    /// Below this a sample counts as an under-voltage event.
    pub min_cell_v: f64,
    /// Above this (plus 10 %) a reading is physically implausible and rejected.
    pub max_cell_v: f64,
    /// Above this a sample counts as an over-temperature event.
    pub max_temp_c: f64,
    /// Largest plausible current, in multiples of the nominal capacity (C-rate).
    pub max_c_rate: f64,
}

impl ChemistryLimits {
    /// Built-in bounds from typical datasheets.
    pub fn builtin(chemistry: &str) -> Self {
        let (nominal, min, max, temp, c) = match chemistry {
            "LFP" => (3.2, 2.5, 3.65, 55.0, 5.0),
            "NMC" | "NCA" => (3.7, 3.0, 4.25, 55.0, 5.0),
            "LTO" => (2.3, 1.5, 2.8, 60.0, 10.0),
            "LEAD_ACID" => (2.0, 1.75, 2.45, 50.0, 2.0),
            _ => (3.2, 2.0, 4.4, 60.0, 10.0),
        };
        Self {
            nominal_cell_v: nominal,
            min_cell_v: min,
            max_cell_v: max,
            max_temp_c: temp,
            max_c_rate: c,
        }
    }
}

impl IngestConfig {
    pub fn limits_for(&self, chemistry: &str) -> ChemistryLimits {
        self.chemistry
            .get(chemistry)
            .copied()
            .unwrap_or_else(|| ChemistryLimits::builtin(chemistry))
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_future_secs: 300,
            batch_rows: 20_000,
            writers: 2,
            rollup_fold_ms: 1_000,
            queue_depth: 16,
            enqueue_timeout_ms: 10_000,
            chunk_records: 20_000,
            max_line_bytes: 64 * 1024,
            max_rejects_listed: 1_000,
            max_graphql_batch: 10_000,
            chemistry: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,trackingbms_api=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted HTTP request body on `/graphql`.
    pub max_body_bytes: usize,
    /// Deepest accepted GraphQL selection.
    pub max_query_depth: usize,
    /// Largest accepted GraphQL complexity: each field costs 1 and a
    /// connection costs its page size times the cost of one node, so this
    /// bounds the rows a single query can ask for (the default is about
    /// 500,000 nodes of ten fields each).
    pub max_query_complexity: usize,
    /// Largest page a connection returns (`first`/`last`).
    pub max_page_size: usize,
    /// Largest page of `batteryMetrics`.
    pub max_sample_page_size: usize,
    /// Requests per minute of one user or API key (GraphQL, ingest); 0
    /// turns the limit off. Shared by replicas through Redis when configured.
    pub requests_per_minute: u32,
    /// Prefix of the rate-limit counters in Redis (one per deployment
    /// sharing a Redis server).
    pub redis_key_prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Seconds between two simulated samples of each demo battery.
    pub sample_interval_secs: u64,
    /// Hours of history generated when the demo fleet is created.
    pub backfill_hours: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            redis_url: None,
            run_migrations: true,
            db_max_connections: 16,
            log: LogConfig::default(),
            limits: Limits::default(),
            ingest: IngestConfig::default(),
            retention: RetentionConfig::default(),
            live: LiveConfig::default(),
            modbus: ModbusConfig::default(),
            mqtt: None,
            demo: DemoConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            plugins: PluginsConfig::default(),
            predictions: PredictionsConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_query_depth: 24,
            max_query_complexity: 5_000_000,
            max_page_size: 100,
            max_sample_page_size: 5000,
            requests_per_minute: 1200,
            redis_key_prefix: "trackingbms:rl".into(),
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            sample_interval_secs: 5,
            backfill_hours: 6,
        }
    }
}

impl Config {
    /// Loads defaults < file < environment. `file` overrides the discovery of
    /// the configuration file.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        let env_file = std::env::var_os("TRACKINGBMS_CONFIG").map(PathBuf::from);
        match file.map(Path::to_path_buf).or(env_file) {
            Some(path) => fig = fig.merge(Toml::file_exact(path)),
            None => fig = fig.merge(Toml::file("trackingbms.toml")),
        }
        fig = fig
            .merge(
                Env::prefixed("TRACKINGBMS_")
                    .ignore(&["CONFIG", "ADMIN_API_KEY"])
                    .split("__"),
            )
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL", "REDIS_URL"])
                    .lowercase(true),
            )
            .merge(
                Env::raw()
                    .only(&["TRACKINGBMS_ADMIN_API_KEY"])
                    .map(|_| "auth.admin_api_key".into()),
            );
        fig.extract().map_err(Box::new)
    }

    /// The database to use: the explicit URL, or a SQLite file in the data directory.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("trackingbms.db").display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "bind = \"0.0.0.0:9000\"\n[limits]\nmax_query_depth = 5\n",
            )?;
            jail.set_env("TRACKINGBMS_LIMITS__MAX_QUERY_DEPTH", "7");
            jail.set_env("DATABASE_URL", "postgres://db/x");
            jail.set_env("TRACKINGBMS_ADMIN_API_KEY", "bootstrap-key-0123456789");
            let cfg = Config::load(Some(Path::new("custom.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                cfg.auth.admin_api_key.as_deref(),
                Some("bootstrap-key-0123456789")
            );
            assert_eq!(cfg.bind.port(), 9000);
            assert_eq!(cfg.limits.max_query_depth, 7);
            assert_eq!(cfg.limits.max_body_bytes, Limits::default().max_body_bytes);
            assert_eq!(cfg.effective_database_url(), "postgres://db/x");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn unknown_keys_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "bnd = \"0.0.0.0:9000\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(err.to_string().contains("bnd"), "{err}");
            Ok(())
        });
    }
}
