//! `trackingbms`: the command line. `serve` runs the server (optionally with
//! a simulated demo fleet), `migrate` applies database migrations,
//! `export-schema` prints the GraphQL SDL, `create-api-key` prints a new
//! API key (for bootstrapping and integrations), `replay-cells` measures the
//! prediction models end to end on lab cells.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use trackingbms_api::auth::{Principal, api_keys, policy};
use trackingbms_api::config::{Config, LogFormat};
use trackingbms_api::{App, db, demo, graphql, ids, predict, telemetry};

#[derive(Parser)]
#[command(
    name = "trackingbms",
    version,
    about = "Monitoring and analytics backend for battery fleets"
)]
struct Cli {
    /// Configuration file (TOML). Default: $TRACKINGBMS_CONFIG, else ./trackingbms.toml if present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the GraphQL server.
    Serve {
        /// Address to listen on [env: TRACKINGBMS_BIND] [default: 127.0.0.1:8080]
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
        /// Directory for the embedded database [env: TRACKINGBMS_DATA_DIR] [default: ./data]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Create a simulated fleet on an empty database and keep feeding it live samples.
        #[arg(long)]
        demo: bool,
        /// Do not apply pending migrations at start-up.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        /// Directory for the embedded database [env: TRACKINGBMS_DATA_DIR]
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the GraphQL schema (SDL) that the server serves.
    ExportSchema,
    /// Create an API key and print it (shown once) on standard output.
    CreateApiKey(ApiKeyArgs),
    /// Replay lab cells (`cells.csv` schema) as batteries, cut their histories
    /// and compare GraphQL's predictions with what the cells did next.
    ReplayCells {
        /// A `cells.csv` (see api/models/data/battery-aging/README.md).
        file: PathBuf,
        /// Cell ids to replay (repeatable). Default: the cells the built-in
        /// models were not trained on.
        #[arg(long = "cell")]
        cells: Vec<String>,
        /// Days between two cuts of a history.
        #[arg(long, default_value_t = 20)]
        cut_every_days: i64,
        /// Database to replay into. Default: a fresh SQLite file in a temporary directory.
        #[arg(long)]
        database_url: Option<String>,
    },
}

/// Row id from a global id or a plain number.
fn row_id(kind: ids::Kind, text: &str) -> anyhow::Result<i64> {
    match text.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => ids::decode(kind, text).map_err(|e| anyhow::anyhow!("{e}")),
    }
}

async fn create_api_key(config: &Config, args: ApiKeyArgs) -> anyhow::Result<String> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let metrics = trackingbms_api::metrics::Metrics::new();
    let conn = db::connect(&config.effective_database_url(), 2, &metrics).await?;
    if config.run_migrations {
        db::migrate(&conn).await.context("applying migrations")?;
    }
    let tenant = entities::tenant::Entity::find()
        .filter(entities::tenant::Column::Slug.eq(&args.tenant))
        .one(&conn)
        .await?
        .with_context(|| format!("no tenant with slug '{}'", args.tenant))?;
    let role = policy::parse_role(&args.role).with_context(|| {
        format!(
            "'{}' is not a role (SUPER_ADMIN, CLIENT_ADMIN, SITE_MANAGER, TECHNICIAN, OBSERVER)",
            args.role
        )
    })?;
    let list = |kind, items: &[String]| -> anyhow::Result<Option<Vec<i64>>> {
        if items.is_empty() {
            return Ok(None);
        }
        items
            .iter()
            .map(|t| row_id(kind, t))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Some)
    };
    let grant = policy::Grant {
        role,
        clients: list(ids::Kind::Client, &args.clients)?,
        sites: list(ids::Kind::Site, &args.sites)?,
    };
    let expires = args
        .expires_in_days
        .map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d)));
    let who = Principal::operator(tenant.id, "cli");
    let (_, key) = api_keys::create(&conn, &who, &args.name, grant, expires)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(key)
}

#[derive(clap::Args)]
struct ApiKeyArgs {
    /// SUPER_ADMIN, CLIENT_ADMIN, SITE_MANAGER, TECHNICIAN or OBSERVER.
    #[arg(long)]
    role: String,
    /// Slug of the tenant the key acts in.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// A name that says what the key is for.
    #[arg(long, default_value = "created with the CLI")]
    name: String,
    /// Limit the key to this client (global id or row id); repeatable.
    #[arg(long = "client")]
    clients: Vec<String>,
    /// Limit the key to this site (global id or row id); repeatable.
    #[arg(long = "site")]
    sites: Vec<String>,
    /// Days until the key expires (default: never).
    #[arg(long)]
    expires_in_days: Option<u32>,
    /// Directory for the embedded database [env: TRACKINGBMS_DATA_DIR]
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; draining");
}

/// The demo accounts, on standard output (demo mode only).
fn print_demo_users(users: &[demo::users::DemoUser]) {
    println!("Demo accounts (POST /auth/login with email and password; demo mode only):");
    for u in users {
        println!(
            "  {:<14} {:<44} password {:<20} scope: {}",
            policy::role_name(u.role),
            u.email,
            u.password,
            u.scope
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::ExportSchema = cli.command {
        print!("{}", graphql::sdl());
        return Ok(());
    }
    let mut config =
        Config::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    init_logging(&config);
    match cli.command {
        Command::Serve {
            bind,
            data_dir,
            demo: with_demo,
            no_migrate,
        } => {
            if let Some(bind) = bind {
                config.bind = bind;
            }
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            if no_migrate {
                config.run_migrations = false;
            }
            tracing::info!(database = %db::redact(&config.effective_database_url()), "starting");
            let app = App::build(config).await?;
            let predictions = app.start_predictions();
            let scheduler = app.start_scheduler();
            let demo_task = if with_demo {
                let task = demo::start(&app).await?;
                print_demo_users(&demo::users::ensure(&app).await?);
                Some(task)
            } else {
                None
            };
            let retention =
                telemetry::retention::spawn(app.db.clone(), app.config.retention.clone());
            let modbus = app.start_modbus();
            let mqtt = app.start_mqtt()?;
            let leases = app.poll_leases.clone();
            app.serve(shutdown_signal()).await?;
            retention.abort();
            scheduler.abort();
            let polled = modbus.is_some();
            for task in modbus.into_iter().chain(mqtt).chain(predictions) {
                task.abort();
            }
            // Other replicas take our units at their next rescan.
            if polled && let Err(err) = leases.release_all().await {
                tracing::warn!(%err, "cannot release Modbus poll leases; they expire on their own");
            }
            if let Some(task) = demo_task {
                task.stop().await;
            }
            tracing::info!("stopped");
        }
        Command::Migrate { data_dir } => {
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            let metrics = trackingbms_api::metrics::Metrics::new();
            let conn = db::connect(&config.effective_database_url(), 2, &metrics).await?;
            db::migrate(&conn).await.context("applying migrations")?;
            tracing::info!("migrations applied");
        }
        Command::CreateApiKey(args) => {
            if let Some(dir) = args.data_dir.clone() {
                config.data_dir = dir;
            }
            println!("{}", create_api_key(&config, args).await?);
        }
        Command::ReplayCells {
            file,
            cells,
            cut_every_days,
            database_url,
        } => {
            let scratch = tempfile::tempdir().context("creating a scratch directory")?;
            match database_url {
                Some(url) => config.database_url = Some(url),
                None => {
                    config.data_dir = scratch.path().to_path_buf();
                    config.database_url = None;
                }
            }
            config.run_migrations = true;
            let app = App::build(config).await?;
            let cells = if cells.is_empty() {
                app.predictor.manifest().test_cells.clone()
            } else {
                cells
            };
            predict::replay::run(&app, &file, &cells, cut_every_days).await?;
        }
        Command::ExportSchema => unreachable!("handled above"),
    }
    Ok(())
}
