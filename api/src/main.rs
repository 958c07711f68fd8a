//! `trackingbms`: the command line. `serve` runs the server (optionally with
//! a simulated demo fleet), `migrate` applies database migrations,
//! `export-schema` prints the GraphQL SDL.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use trackingbms_api::config::{Config, LogFormat};
use trackingbms_api::{App, db, demo, graphql, telemetry};

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
            let demo_task = if with_demo {
                Some(demo::start(&app).await?)
            } else {
                None
            };
            let retention =
                telemetry::retention::spawn(app.db.clone(), app.config.retention.clone());
            let modbus = app.start_modbus();
            let mqtt = app.start_mqtt()?;
            app.serve(shutdown_signal()).await?;
            retention.abort();
            for task in modbus.into_iter().chain(mqtt) {
                task.abort();
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
        Command::ExportSchema => unreachable!("handled above"),
    }
    Ok(())
}
