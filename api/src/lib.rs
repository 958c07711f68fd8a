//! TrackingBMS server library. `App::build` wires the parts in the order
//! data flows through them:
//!
//! config → database (+ migrations) → identity (who is calling: tokens, API
//! keys, SSO; rate limits) → services (hierarchy; telemetry's ingestor and
//! its single writer) → GraphQL schema → HTTP routes, where every data route
//! first turns the bearer token into an `auth::Principal` whose role and
//! scope every service call and query then applies. Plugins (`plugins`)
//! run uploaded WebAssembly components over the same data, sandboxed.
//! Samples from every source (`ingestSamples`, `POST /ingest`, the demo
//! simulator) take the same path: `ingest` → `telemetry::pipeline` (resolve,
//! check) → `telemetry::writer` (batch, commit, acknowledge) → `bus` (in
//! process, or Redis across replicas) → live subscriptions, and
//! `predict` (the committed batteries' forecasts refreshed through ONNX
//! Runtime → the `predictions` subscription).
//!
//! Each module owns one capability; see its doc comment.

pub mod audit;
pub mod auth;
pub mod bus;
pub mod clock;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod fixtures;
pub mod graphql;
pub mod hierarchy;
pub mod http;
pub mod ids;
pub mod ingest;
pub mod loader;
pub mod metrics;
pub mod pagination;
pub mod plugins;
pub mod predict;
pub mod telemetry;
pub mod validate;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use entities::tenant;
use poem::listener::{Acceptor, Listener, TcpListener};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

pub use config::Config;

use crate::auth::Principal;
use crate::bus::Bus;
use crate::graphql::AppSchema;
use crate::hierarchy::HierarchyService;
use crate::hierarchy::graphql::MaxPageSize;
use crate::metrics::Metrics;
use crate::telemetry::Ingestor;
use crate::telemetry::graphql::MaxSamplePage;

/// A topic shared by every replica (through Redis when configured) on the
/// channel `<live.redis_channel>:<name>`.
async fn topic<T>(config: &Config, name: &str) -> anyhow::Result<bus::topic::Topic<T>>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let capacity = config.live.subscriber_queue;
    Ok(
        match config.redis_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => {
                let channel = format!("{}:{name}", config.live.redis_channel);
                bus::topic::Topic::redis(url, &channel, capacity).await?
            }
            None => bus::topic::Topic::local(capacity),
        },
    )
}

/// One running instance: its configuration, database pool, services and schema.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub metrics: Metrics,
    pub hierarchy: HierarchyService,
    pub ingestor: Ingestor,
    pub bus: Bus,
    pub register_maps: Arc<ingest::modbus::Registry>,
    pub modbus_status: Arc<ingest::modbus::StatusRegistry>,
    /// This replica's claim on Modbus units (see `ingest::modbus::lease`).
    pub poll_leases: ingest::modbus::Leases,
    pub schema: AppSchema,
    pub identity: auth::Identity,
    pub plugins: plugins::Plugins,
    pub predictor: predict::Predictor,
    /// Id of the tenant a fresh deployment starts with (slug `default`).
    pub default_tenant: i64,
}

impl App {
    /// Connects to the database, applies migrations when configured, and
    /// assembles services and schema.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let url = config.effective_database_url();
        let db = db::connect(&url, config.db_max_connections, &metrics).await?;
        if config.run_migrations {
            db::migrate(&db).await.context("applying migrations")?;
        }
        let default_tenant = tenant::Entity::find()
            .filter(tenant::Column::Slug.eq("default"))
            .one(&db)
            .await
            .context("reading the default tenant (has `trackingbms migrate` been run?)")?
            .context("the default tenant is missing; run `trackingbms migrate`")?
            .id;
        let register_maps = Arc::new(ingest::modbus::Registry::load(
            config.modbus.register_maps_dir.as_deref(),
        )?);
        let identity = auth::Identity::new(db.clone(), &config, default_tenant).await?;
        let plugins = plugins::Plugins::new(db.clone(), &config.plugins, &config.data_dir)?;
        let hierarchy = HierarchyService::new(db.clone(), register_maps.clone());
        let modbus_status = Arc::new(ingest::modbus::StatusRegistry::new(
            config.modbus.offline_after_failures,
            topic(&config, "bms-status").await?,
        ));
        let bus = match config.redis_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => Bus::redis(url, &config.live.redis_channel).await?,
            None => Bus::local(),
        };
        let writes = db::writer_connection(&url, &db, &metrics).await?;
        let ingestor = Ingestor::new(
            db.clone(),
            writes,
            config.ingest.clone(),
            bus.clone(),
            metrics.clone(),
        );
        let predictor = predict::Predictor::new(
            db.clone(),
            config.predictions.clone(),
            topic(&config, "predictions").await?,
        );
        let mut schema = graphql::builder(&config.limits);
        if !config.http.introspection {
            schema = schema.disable_introspection();
        }
        let schema = schema
            .data(identity.clone())
            .data(plugins.clone())
            .data(predictor.clone())
            .data(hierarchy.clone())
            .data(ingestor.clone())
            .data(bus.clone())
            .data(register_maps.clone())
            .data(modbus_status.clone())
            .data(config.live.clone())
            .data(MaxPageSize(config.limits.max_page_size))
            .data(MaxSamplePage(config.limits.max_sample_page_size))
            .finish();
        let poll_leases = ingest::modbus::Leases::new(
            db.clone(),
            ingest::modbus::Leases::replica_name(),
            std::time::Duration::from_secs(config.modbus.lease_secs.max(1)),
        );
        Ok(Self {
            config: Arc::new(config),
            db,
            metrics,
            hierarchy,
            ingestor,
            bus,
            register_maps,
            modbus_status,
            poll_leases,
            schema,
            identity,
            plugins,
            predictor,
            default_tenant,
        })
    }

    /// Starts polling Modbus units (when enabled); abort the handle to stop.
    pub fn start_modbus(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.config.modbus.enabled.then(|| {
            ingest::modbus::supervisor::spawn(
                self.db.clone(),
                self.ingestor.clone(),
                self.register_maps.clone(),
                self.modbus_status.clone(),
                self.poll_leases.clone(),
                self.config.modbus.clone(),
            )
        })
    }

    /// Starts refreshing predictions (batteries with new samples, and the
    /// whole fleet periodically) unless predictions are off.
    pub fn start_predictions(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.predictor.start(&self.bus)
    }

    /// The scheduler of plugin work (KPI history, report schedules).
    pub fn scheduler(&self) -> plugins::scheduler::Scheduler {
        plugins::scheduler::Scheduler::new(self.plugins.clone())
    }

    /// Starts running scheduled plugin work; abort the handle to stop.
    pub fn start_scheduler(&self) -> tokio::task::JoinHandle<()> {
        self.scheduler().start()
    }

    /// Starts MQTT ingestion when configured; abort the handle to stop.
    pub fn start_mqtt(&self) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(config) = self.config.mqtt.clone() else {
            return Ok(None);
        };
        ingest::mqtt::spawn(config, self.ingestor.clone(), self.system("mqtt")).map(Some)
    }

    /// The principal used by the server's own jobs (demo generator, …).
    pub fn system(&self, what: &str) -> Principal {
        Principal::operator(self.default_tenant, format!("system:{what}"))
    }

    /// Serves HTTP on the configured address until `shutdown` completes,
    /// then drains in-flight requests (up to 10 s).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let acceptor = TcpListener::bind(self.config.bind)
            .into_acceptor()
            .await
            .with_context(|| format!("cannot listen on {}", self.config.bind))?;
        for addr in acceptor.local_addr() {
            tracing::info!(address = %addr, "listening");
        }
        poem::Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                http::routes(self),
                shutdown,
                Some(std::time::Duration::from_secs(10)),
            )
            .await?;
        Ok(())
    }
}
