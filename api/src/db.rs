//! Database connection: SQLite (embedded default) or PostgreSQL, chosen by
//! URL, instrumented so every statement is counted in `/metrics`.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

use crate::metrics::Metrics;

mod nodelay;
pub mod wal;

/// SQLite's page cache per connection, KiB (filled only as pages are
/// read). The default, 2 MiB, held fewer index pages than a write of 1,000
/// batteries' samples touches, so each write read most of them again.
const SQLITE_CACHE_KIB: u32 = 8_192;

/// Opens a pool to `url`. For SQLite, creates the file's directory and turns
/// on write-ahead logging so readers never block the writer, checkpointed
/// by [`wal::spawn`]'s task rather than by the writer's commits.
pub async fn connect(
    url: &str,
    max_connections: u32,
    metrics: &Metrics,
) -> anyhow::Result<DatabaseConnection> {
    if let Some(dir) =
        sqlite_path(url).and_then(|p| std::path::Path::new(&p).parent().map(|d| d.to_path_buf()))
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", dir.display()))?;
    }
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .pragma("wal_autocheckpoint", wal::AUTOCHECKPOINT_PAGES.to_string())
                .pragma("cache_size", format!("-{SQLITE_CACHE_KIB}"))
                // Statement journals (a multi-row insert's, in a
                // transaction) in memory, not in a temporary file created
                // and deleted by every sample write.
                .pragma("temp_store", "memory")
        });
    if let Some(port) = postgres_tcp_port(url) {
        opts.map_sqlx_postgres_pool_opts(move |pool| {
            pool.after_connect(move |_, _| {
                Box::pin(async move {
                    nodelay::set_on_sockets_to(port);
                    Ok(())
                })
            })
        });
    }
    let mut db = Database::connect(opts)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database ({}): {e}", redact(url)))?;
    let metrics = metrics.clone();
    db.set_metric_callback(move |info| metrics.observe_db(info.elapsed, info.failed));
    Ok(db)
}

/// The connection the sample writer and its roll-up folds write through.
/// On a SQLite file, a pool of one connection of its own: SQLite keeps a
/// page cache per connection and drops it whenever another connection
/// has committed since, so a writer taking the pool's connections in turn
/// reads again every index page it touches (SQLite alone, writes of 250
/// samples over 1,000 batteries on 4 connections in turn: 24 µs of CPU a
/// sample, against 16 on one), and every connection of the pool filled a
/// cache of its own (the live bench's RSS at 25k samples/s: 235–283 MB,
/// 110 MB with this). Elsewhere (PostgreSQL, an in-memory SQLite
/// database, which a second pool would not share) `pool`.
pub async fn writer_connection(
    url: &str,
    pool: &DatabaseConnection,
    metrics: &Metrics,
) -> anyhow::Result<DatabaseConnection> {
    if pool.get_database_backend() == sea_orm::DbBackend::Sqlite && sqlite_path(url).is_some() {
        connect(url, 1, metrics).await
    } else {
        Ok(pool.clone())
    }
}

/// Starts a transaction that writes. On SQLite it takes the write lock at
/// once (`BEGIN IMMEDIATE`, waiting up to the busy timeout): a deferred
/// transaction that read first fails with `SQLITE_BUSY_SNAPSHOT` when
/// another connection committed in between, however long it would wait.
pub async fn begin_write(
    db: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        db.begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await
    } else {
        db.begin().await
    }
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None).await?;
    Ok(())
}

/// True when the database answers a trivial query (readiness probe).
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.execute_unprepared("SELECT 1").await.is_ok()
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// An error of a statement run with sqlx directly on sea-orm's pool (COPY,
/// array binds), as sea-orm's own error.
pub fn sqlx_error(e: sea_orm::sqlx::Error) -> sea_orm::DbErr {
    sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(e)))
}

/// Whether `err` is a unique-key violation (a sample stored already).
pub fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(err, sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        if e.as_database_error().is_some_and(|d| d.is_unique_violation()))
}

/// The TCP port of a PostgreSQL URL; `None` for other databases and for
/// Unix-socket connections.
fn postgres_tcp_port(url: &str) -> Option<u16> {
    use std::str::FromStr;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let options = sea_orm::sqlx::postgres::PgConnectOptions::from_str(url).ok()?;
    options.get_socket().is_none().then(|| options.get_port())
}

/// The URL without its password, for logs and error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Ids of ours (never a caller's text) as a SQL list, `1, 2, 3`, for
/// statements written by hand.
pub fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `column IN ids` for a statement on `backend`. On PostgreSQL the ids go
/// as one array parameter, unnested in a subquery, so the plan is a join
/// whatever it guesses of the array's length. A list of hundreds of
/// parameters (or `= ANY($1)`), once its plan was cached, could be tested
/// row by row against every id: resolving the batteries of 100 ingest calls
/// a second took most of the server's CPU. SQLite keeps the list.
pub fn id_in<C: sea_orm::ColumnTrait>(
    backend: sea_orm::DbBackend,
    column: C,
    ids: impl IntoIterator<Item = i64>,
) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{ArrayType, Expr, ExprTrait, Query, Value};
    if backend != sea_orm::DbBackend::Postgres {
        return column.is_in(ids);
    }
    let ids: Vec<Value> = ids.into_iter().map(|id| Value::BigInt(Some(id))).collect();
    let array = Value::Array(ArrayType::BigInt, Some(Box::new(ids)));
    Expr::col((column.entity_name(), column)).in_subquery(
        Query::select()
            .expr(Expr::cust_with_values("unnest($1::bigint[])", [array]))
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            sqlite_path("sqlite://./data/x.db?mode=rwc").as_deref(),
            Some("./data/x.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }

    #[test]
    fn postgres_port_only_over_tcp() {
        assert_eq!(postgres_tcp_port("postgres://u@h:6543/db"), Some(6543));
        assert_eq!(postgres_tcp_port("postgresql://u@h/db"), Some(5432));
        assert_eq!(
            postgres_tcp_port("postgres://u@localhost/db?host=/var/run/postgresql"),
            None
        );
        assert_eq!(postgres_tcp_port("sqlite://x.db"), None);
    }

    /// Every pooled connection to PostgreSQL over TCP has Nagle's
    /// algorithm off (see [`nodelay`]).
    #[tokio::test]
    async fn postgres_connections_have_nodelay() {
        let url = crate::fixtures::pg_base_url();
        let port = postgres_tcp_port(&url).expect("the test database is reached over TCP");
        let db = connect(&url, 3, &Metrics::default())
            .await
            .expect("PostgreSQL is reachable");
        // Three connections at once: the pool opens more than its first.
        let held: Vec<_> = futures_util::future::join_all(
            (0..3).map(|_| db.get_postgres_connection_pool().acquire()),
        )
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("connections");
        assert_eq!(held.len(), 3);
        let (sockets, turned_on) = nodelay::set_on_sockets_to(port);
        assert!(sockets >= 3, "{sockets} sockets to the database");
        assert_eq!(turned_on, 0, "every one already had TCP_NODELAY");
    }
}
