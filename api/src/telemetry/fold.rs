//! The fold of partial roll-up buckets into `battery_rollups`.
//!
//! A sample write appends its hourly partial buckets as one row of
//! [`BATCHES`] ([`rollup_batch::encode`]), and a fold takes every pending row,
//! adds the partial buckets up in memory per hour and per day, and merges
//! each bucket once into the stored ones, in one transaction that also
//! empties [`BATCHES`]: each partial bucket is added exactly once, a crash
//! leaves it pending for the next fold, and replicas folding at once take
//! turns (an advisory lock on PostgreSQL; SQLite has one writer). On
//! SQLite the periodic fold goes a slice of batteries per transaction
//! ([`fold_in_slices`]), so that sample writes are not held up behind
//! it. Writers never queue on the same roll-up rows, and a bucket is
//! rewritten once per fold rather than once per write. Adding up in memory, rather than
//! in SQL over one row per partial bucket, made the fold several times
//! cheaper: at 50k samples/s it ran on the writers' cores for 200 ms a
//! second.
//!
//! The same fold moves each battery's pointers (`last_sample_at`, and
//! `soh_pct` from the newest sample that has one) forward to the newest
//! of its partial buckets', never backwards: a battery row is rewritten
//! once per fold rather than by every write.
//!
//! A fold runs every `ingest.rollup_fold_ms` and before every read of
//! roll-ups (`batteryMetrics` at HOUR/DAY, prediction histories, plugin
//! inputs), so a reader sees every sample committed before it asked. A
//! battery's `lastSampleAt` and `sohPct` are as of the last fold;
//! `latestSample` reads the samples. Partial buckets of a battery deleted
//! meanwhile are dropped. The periodic fold on PostgreSQL is paced
//! ([`Pace::Shared`]) so that the writes beside it keep their latency; a
//! reader's fold is not.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sea_orm::sea_query::{Alias, ArrayType, Query, SimpleExpr, Value};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
};
use tokio::sync::mpsc::WeakSender;

use super::rollup::{self, BACKLOG, BATCHES, Bucket, DAY, HOUR, KEY_COLUMNS};
use super::rollup_batch;
use crate::error::ApiResult;

/// SQLite has one write lock, and a connection waiting for it polls
/// (sleeping up to 100 ms between tries): a fold waiting so behind
/// back-to-back sample writes took seconds, and writes waited as long
/// behind it. The sample writer and folds take turns here first (in the
/// order they ask), so neither polls for the other. One per process (a
/// SQLite deployment is one process).
pub(super) static SQLITE_WRITE_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serialises folds across replicas on PostgreSQL (one key among the
/// project's advisory locks).
const FOLD_LOCK: i64 = 7_202_612;

/// SQLite: buckets per upsert (44 values each). Each connection keeps
/// its prepared statements, whose size grows with their values: at 500
/// buckets they took megabytes of an idle server.
const BUCKETS_PER_STATEMENT: usize = 100;

/// PostgreSQL: buckets per upsert, the steps of a [`Pace::Shared`] fold.
const PG_BUCKETS_PER_STATEMENT: usize = 125;

/// SQLite: batteries a periodic fold merges per transaction. In one
/// transaction, a fold of 1,000 batteries' hour (2,000 buckets) held the
/// one write lock for 50–110 ms a second at 25k samples/s, and the sample
/// writes behind it waited as long (a live subscriber too). In slices,
/// the live bench's p99 at 20k samples/s went from 49–58 ms to 34–67
/// (median 54 to 45, four runs each, alternated).
const SQLITE_BATTERIES_PER_TRANSACTION: usize = 100;

/// Encoded partial buckets above which a fold adds them up on a blocking
/// thread (about 4,000 partial buckets).
const OFFLOAD_BYTES: usize = 1 << 20;

/// Battery pointers per update (4 values each; see
/// [`BUCKETS_PER_STATEMENT`]).
const POINTERS_PER_STATEMENT: usize = 250;

/// Adds every pending partial bucket to the roll-ups and moves battery
/// pointers; returns how many buckets were written (0 when nothing was
/// pending).
pub async fn fold(db: &DatabaseConnection) -> ApiResult<u64> {
    fold_at(db, Pace::Full, usize::MAX).await
}

/// [`fold`] in transactions of at most `batteries` batteries each, in
/// battery order; between two, sample writes take their turn. The first
/// takes every pending batch, adds it up once, and puts it back as one
/// batch per slice of batteries; each next one takes its slice's batch
/// alone, and merges it (unless a reader's fold took it meanwhile), so
/// each partial bucket is still added exactly once. Everything pending
/// when it starts is folded when it returns. The periodic fold on SQLite
/// goes this way; on PostgreSQL, whose writes do not wait for a fold, it
/// is one transaction.
pub async fn fold_in_slices(db: &DatabaseConnection, batteries: usize) -> ApiResult<u64> {
    fold_at(db, Pace::Full, batteries.max(1)).await
}

/// How a fold shares the machine with the sample writers beside it.
#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// As fast as it can: a reader waits for it.
    Full,
    /// The periodic fold: on PostgreSQL it rests after each statement
    /// writing roll-ups or pointers as long as the statement took, so
    /// that it keeps a core busy half the time at most. At full pace its
    /// merge of 2,000 buckets held a core for 50 ms, and the writes
    /// committing meanwhile took up to 25 ms rather than 4: the live
    /// bench's p99 at 50k samples/s went from 21–68 ms to 10–20 ms in
    /// most runs. SQLite does not rest (its fold holds the write lock):
    /// it folds [`SQLITE_BATTERIES_PER_TRANSACTION`] batteries at a time
    /// ([`fold_in_slices`]).
    Shared,
}

/// Folds in transactions of at most `batteries` batteries each (on
/// SQLite; PostgreSQL folds in one, its writes do not wait for it).
async fn fold_at(db: &DatabaseConnection, pace: Pace, batteries: usize) -> ApiResult<u64> {
    let (batches, legacy) = pending(db).await?;
    if !batches && !legacy {
        return Ok(0);
    }
    let backend = db.get_database_backend();
    let mut written = 0;
    let slices = {
        let _turn = write_turn(backend).await;
        let txn = crate::db::begin_write(db).await?;
        if backend == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({FOLD_LOCK})"))
                .await?;
        }
        if legacy {
            for statement in super::fold_legacy::statements(backend) {
                written += txn.execute_unprepared(&statement).await?.rows_affected();
            }
            if backend != DbBackend::Postgres {
                txn.execute_unprepared(&format!("DELETE FROM {BACKLOG}"))
                    .await?;
            }
        }
        let mut slices = Vec::new();
        if batches {
            let (hours, openings) = take_all(&txn).await?;
            let batteries = if backend == DbBackend::Postgres {
                usize::MAX
            } else {
                batteries
            };
            match split(hours, openings, batteries) {
                Split::Whole((hours, openings)) => {
                    written += merge(&txn, pace, hours, openings).await?;
                }
                Split::Parts(parts) => slices = put_back(&txn, parts).await?,
            }
        }
        txn.commit().await?;
        slices
    };
    for slice in slices {
        let _turn = write_turn(backend).await;
        let txn = crate::db::begin_write(db).await?;
        // Gone if a reader's fold took it meanwhile.
        if let Some(batch) = take_one(&txn, slice).await? {
            let (hours, openings) = add_up(&[batch])?;
            written += merge(&txn, pace, hours, openings).await?;
        }
        txn.commit().await?;
    }
    Ok(written)
}

/// SQLite: the sample writer's and folds' turn at the write lock
/// ([`SQLITE_WRITE_TURN`]); none on PostgreSQL.
async fn write_turn(backend: DbBackend) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    match backend {
        DbBackend::Postgres => None,
        _ => Some(SQLITE_WRITE_TURN.lock().await),
    }
}

/// Whether roll-up batches, and rows of the older backlog, are pending.
async fn pending(db: &DatabaseConnection) -> ApiResult<(bool, bool)> {
    let pending = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT (SELECT 1 FROM {BATCHES} LIMIT 1), (SELECT 1 FROM {BACKLOG} LIMIT 1)"),
        ))
        .await?;
    Ok(match pending {
        Some(row) => (
            row.try_get_by_index::<Option<i32>>(0)?.is_some(),
            row.try_get_by_index::<Option<i32>>(1)?.is_some(),
        ),
        None => (false, false),
    })
}

/// Takes every pending batch and adds its partial buckets up per battery
/// and hour.
async fn take_all(txn: &DatabaseTransaction) -> ApiResult<AddedUp> {
    let rows = txn
        .query_all_raw(Statement::from_string(
            txn.get_database_backend(),
            format!("DELETE FROM {BATCHES} RETURNING partials"),
        ))
        .await?;
    let batches = rows
        .into_iter()
        .map(|row| row.try_get_by_index::<Vec<u8>>(0))
        .collect::<Result<Vec<_>, _>>()?;
    // Decoding and adding up tens of thousands of partial buckets is CPU
    // work: off the async workers, which serve ingestion and subscribers.
    // A small fold stays on its worker (a blocking thread costs a
    // hand-off, and its own allocator arena: 4 MB of an idle server).
    let bytes: usize = batches.iter().map(Vec::len).sum();
    if bytes > OFFLOAD_BYTES {
        tokio::task::spawn_blocking(move || add_up(&batches))
            .await
            .map_err(|e| DbErr::Custom(format!("adding up partial buckets: {e}")))?
    } else {
        add_up(&batches)
    }
}

/// Added-up partial buckets and openings, as a fold merges them.
enum Split {
    /// In one transaction.
    Whole(AddedUp),
    /// A transaction per part, in battery order.
    Parts(Vec<AddedUp>),
}

/// The added-up partial buckets and openings whole when they hold at
/// most `batteries` batteries; otherwise in parts of `batteries`
/// batteries each.
fn split(
    hours: BTreeMap<(i64, DateTime<Utc>), Bucket>,
    openings: Vec<(i64, rollup::Opening)>,
    batteries: usize,
) -> Split {
    let mut pending: Vec<i64> = hours.keys().map(|(b, _)| *b).collect();
    pending.dedup();
    if pending.len() <= batteries {
        return Split::Whole((hours, openings));
    }
    // The last battery of each part.
    let bounds: Vec<i64> = pending
        .chunks(batteries.max(1))
        .filter_map(|c| c.last().copied())
        .collect();
    let part_of = |b: i64| {
        bounds
            .partition_point(|last| *last < b)
            .min(bounds.len().saturating_sub(1))
    };
    let mut parts: Vec<AddedUp> = bounds
        .iter()
        .map(|_| (BTreeMap::new(), Vec::new()))
        .collect();
    for (key, bucket) in hours {
        parts[part_of(key.0)].0.insert(key, bucket);
    }
    for (battery, opening) in openings {
        parts[part_of(battery)].1.push((battery, opening));
    }
    Split::Parts(parts)
}

/// Puts each part back as a batch of its own; returns their row ids, in
/// order, for [`take_one`]. SQLite only (`rowid`).
async fn put_back(txn: &DatabaseTransaction, parts: Vec<AddedUp>) -> ApiResult<Vec<i64>> {
    let mut ids = Vec::with_capacity(parts.len());
    for (hours, openings) in &parts {
        let batch = rollup_batch::encode_parts(
            hours.iter().map(|((b, hour), bucket)| (*b, *hour, bucket)),
            openings.iter().map(|(b, o)| (*b, o)),
        )?;
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                txn.get_database_backend(),
                format!("{} RETURNING rowid", rollup::APPEND),
                [batch.into()],
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("a put-back roll-up batch has no row id".into()))?;
        ids.push(row.try_get_by_index::<i64>(0)?);
    }
    Ok(ids)
}

/// Takes the batch [`put_back`] as `id`, if still pending.
async fn take_one(txn: &DatabaseTransaction, id: i64) -> ApiResult<Option<Vec<u8>>> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            format!("DELETE FROM {BATCHES} WHERE rowid = $1 RETURNING partials"),
            [id.into()],
        ))
        .await?;
    Ok(row.map(|r| r.try_get_by_index::<Vec<u8>>(0)).transpose()?)
}

/// Merges added-up partial buckets into the stored buckets, per hour and
/// per day, and moves their batteries' pointers; returns how many buckets
/// were written.
async fn merge(
    txn: &DatabaseTransaction,
    pace: Pace,
    mut hours: BTreeMap<(i64, DateTime<Utc>), Bucket>,
    openings: Vec<(i64, rollup::Opening)>,
) -> ApiResult<u64> {
    let backend = txn.get_database_backend();
    let folded = existing_batteries(txn, hours.keys().map(|(b, _)| *b)).await?;
    hours.retain(|(battery, _), _| folded.contains_key(battery));
    let newest_folded: HashMap<i64, DateTime<Utc>> = folded
        .into_iter()
        .filter_map(|(battery, at)| at.map(|at| (battery, at)))
        .collect();
    for (battery, hour, kwh) in rollup::stitch(&openings, &newest_folded) {
        // Its opening came with a partial bucket of that hour.
        if let Some(bucket) = hours.get_mut(&(battery, hour)) {
            bucket.add_energy(kwh);
        }
    }

    let mut days: BTreeMap<(i64, DateTime<Utc>), Bucket> = BTreeMap::new();
    let mut newest: BTreeMap<i64, Bucket> = BTreeMap::new();
    for ((battery, hour), bucket) in &hours {
        let day = hour.duration_trunc(TimeDelta::days(1)).unwrap_or(*hour);
        days.entry((*battery, day)).or_default().merge(bucket);
        newest.entry(*battery).or_default().merge(bucket);
    }
    // In key order, as the stored buckets are locked.
    let mut buckets: Vec<(rollup::BucketKey, &Bucket)> = days
        .iter()
        .map(|((b, t), v)| ((*b, DAY, *t), v))
        .chain(hours.iter().map(|((b, t), v)| ((*b, HOUR, *t), v)))
        .collect();
    buckets.sort_unstable_by_key(|(key, _)| *key);
    if buckets.is_empty() {
        return Ok(0);
    }
    let postgres = backend == DbBackend::Postgres;
    let per_statement = if postgres {
        PG_BUCKETS_PER_STATEMENT
    } else {
        BUCKETS_PER_STATEMENT
    };
    for chunk in buckets.chunks(per_statement) {
        let statement = if postgres {
            pg_upsert(chunk)
        } else {
            upsert(backend, chunk)
        };
        step(txn, pace, statement).await?;
    }
    let pointers: Vec<(i64, &Bucket)> = newest.iter().map(|(b, v)| (*b, v)).collect();
    for chunk in pointers.chunks(POINTERS_PER_STATEMENT) {
        step(txn, pace, move_pointers(backend, chunk)).await?;
    }
    Ok(buckets.len() as u64)
}

/// Runs one statement of a fold, then, at [`Pace::Shared`] on
/// PostgreSQL, rests as long as it took.
async fn step(txn: &DatabaseTransaction, pace: Pace, statement: Statement) -> Result<(), DbErr> {
    let started = std::time::Instant::now();
    txn.execute_raw(statement).await?;
    if pace == Pace::Shared && txn.get_database_backend() == DbBackend::Postgres {
        tokio::time::sleep(started.elapsed()).await;
    }
    Ok(())
}

/// Hourly buckets per battery, and the writes' openings.
type AddedUp = (
    BTreeMap<(i64, DateTime<Utc>), Bucket>,
    Vec<(i64, rollup::Opening)>,
);

/// The partial buckets of `batches`, added up per battery and hour, and
/// their openings.
fn add_up(batches: &[Vec<u8>]) -> ApiResult<AddedUp> {
    let mut hours: BTreeMap<(i64, DateTime<Utc>), Bucket> = BTreeMap::new();
    let mut openings = Vec::new();
    for batch in batches {
        let batch = rollup_batch::decode(batch)?;
        for p in batch.partials {
            hours
                .entry((p.battery_id, p.hour))
                .or_default()
                .merge(&p.bucket);
        }
        openings.extend(batch.openings);
    }
    Ok((hours, openings))
}

/// Which of `ids` are batteries still, with the newest sample folded
/// so far (`last_sample_at`); on PostgreSQL locked against a delete until
/// the fold commits, as the roll-ups' foreign key needs.
async fn existing_batteries(
    txn: &DatabaseTransaction,
    ids: impl Iterator<Item = i64>,
) -> ApiResult<HashMap<i64, Option<DateTime<Utc>>>> {
    let mut ids: Vec<i64> = ids.collect();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let backend = txn.get_database_backend();
    let lock = if backend == DbBackend::Postgres {
        " ORDER BY id FOR KEY SHARE"
    } else {
        ""
    };
    let rows = txn
        .query_all_raw(Statement::from_string(
            backend,
            format!(
                "SELECT id, last_sample_at FROM batteries WHERE id IN ({}){lock}",
                crate::db::id_list(&ids)
            ),
        ))
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get_by_index::<i64>(0)?, r.try_get_by_index(1)?)))
        .collect()
}

/// `ON CONFLICT` of the key: each value merged with the stored one.
pub(super) fn merge_clause(backend: DbBackend) -> String {
    let set: Vec<String> = rollup::value_columns()
        .iter()
        .map(|(c, how)| format!("{c} = {}", rollup::combine(backend, c, how)))
        .collect();
    format!(
        "ON CONFLICT ({}) DO UPDATE SET {}",
        KEY_COLUMNS.join(", "),
        set.join(", ")
    )
}

/// PostgreSQL: the insert merging `buckets` into the stored ones in one
/// statement, one array per column (a `VALUES` list took a bound
/// parameter per value: 88,000 a fold at 2,000 buckets, whose sending
/// cost more than the merge). Arrays bound through sea-query cannot hold
/// NULL, so a missing value travels as NaN, which no stored value is
/// (samples with NaN are refused), and `NULLIF` turns it back.
fn pg_upsert(buckets: &[(rollup::BucketKey, &Bucket)]) -> Statement {
    let array = |ty: ArrayType, items: Vec<Value>| Value::Array(ty, Some(Box::new(items)));
    let mut columns: Vec<(Vec<Value>, ArrayType, &str)> = vec![
        (Vec::new(), ArrayType::BigInt, "bigint"),
        (Vec::new(), ArrayType::String, "text"),
        (Vec::new(), ArrayType::ChronoDateTimeUtc, "timestamptz"),
    ];
    for ((battery, resolution, start), bucket) in buckets {
        let cells = rollup::cells(bucket);
        if columns.len() == KEY_COLUMNS.len() {
            columns.extend(cells.iter().map(|cell| match cell {
                rollup::Cell::Count(_) => (Vec::new(), ArrayType::BigInt, "bigint"),
                rollup::Cell::Float(_) => (Vec::new(), ArrayType::Double, "float8"),
            }));
        }
        columns[0].0.push((*battery).into());
        columns[1].0.push((*resolution).into());
        columns[2].0.push((*start).into());
        for (column, cell) in columns[KEY_COLUMNS.len()..].iter_mut().zip(cells) {
            column.0.push(match cell {
                rollup::Cell::Count(n) => n.into(),
                rollup::Cell::Float(v) => v.unwrap_or(f64::NAN).into(),
            });
        }
    }
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(k, (_, _, ty))| format!("${}::{ty}[]", k + 1))
        .collect();
    let names = rollup::column_names();
    let selected: Vec<String> = names
        .iter()
        .zip(&columns)
        .map(|(name, (_, _, ty))| match *ty {
            "float8" => format!("NULLIF({name}, 'NaN')"),
            _ => (*name).to_owned(),
        })
        .collect();
    let sql = format!(
        "INSERT INTO battery_rollups ({names}) SELECT {} FROM UNNEST({}) AS u({names}) {}",
        selected.join(", "),
        arrays.join(", "),
        merge_clause(DbBackend::Postgres),
        names = names.join(", ")
    );
    let values: Vec<Value> = columns
        .into_iter()
        .map(|(items, ty, _)| array(ty, items))
        .collect();
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// SQLite: the insert merging `buckets` into the stored ones.
fn upsert(backend: DbBackend, buckets: &[(rollup::BucketKey, &Bucket)]) -> Statement {
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new("battery_rollups"))
        .columns(rollup::column_names().iter().map(Alias::new));
    for ((battery, resolution, start), bucket) in buckets {
        let mut row: Vec<SimpleExpr> =
            vec![(*battery).into(), (*resolution).into(), (*start).into()];
        row.extend(rollup::cells(bucket).into_iter().map(SimpleExpr::from));
        insert.values_panic(row);
    }
    let (sql, values) = insert.build(sea_orm::sea_query::SqliteQueryBuilder);
    Statement::from_sql_and_values(backend, format!("{sql} {}", merge_clause(backend)), values)
}

/// The update moving battery pointers forward to each battery's newest
/// pending sample, and its SOH to the newest pending one if that is newer
/// than the stored pointer; never backwards for late samples.
fn move_pointers(backend: DbBackend, newest: &[(i64, &Bucket)]) -> Statement {
    let placeholder = |k: usize| match backend {
        DbBackend::Postgres => format!("${}", k + 1),
        _ => "?".to_owned(),
    };
    let rows: Vec<String> = (0..newest.len())
        .map(|r| {
            let cells: Vec<String> = (0..4).map(|c| placeholder(r * 4 + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    let sql = format!(
        "UPDATE batteries SET last_sample_at = u.at, soh_pct = CASE WHEN u.soh_at IS NOT NULL \
         AND (batteries.last_sample_at IS NULL OR u.soh_at > batteries.last_sample_at) \
         THEN u.soh ELSE batteries.soh_pct END \
         FROM (SELECT column1 AS id, column2 AS at, column3 AS soh_at, column4 AS soh \
         FROM (VALUES {}) AS v) AS u \
         WHERE batteries.id = u.id \
         AND (batteries.last_sample_at IS NULL OR batteries.last_sample_at < u.at)",
        rows.join(", ")
    );
    let values: Vec<Value> = newest
        .iter()
        .flat_map(|(id, b)| {
            [
                (*id).into(),
                b.newest_sample_at.into(),
                b.newest_soh.map(|s| s.at).into(),
                b.newest_soh.map(|s| s.pct).into(),
            ]
        })
        .collect();
    Statement::from_sql_and_values(backend, sql, values)
}

/// Folds every `interval` while `alive` (the writer's queue) has senders.
pub async fn periodic<T: Send + 'static>(
    db: DatabaseConnection,
    interval: Duration,
    alive: WeakSender<T>,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let started = std::time::Instant::now();
        // In slices on SQLite; `fold_at` folds PostgreSQL's in one.
        match fold_at(&db, Pace::Shared, SQLITE_BATTERIES_PER_TRANSACTION).await {
            Ok(0) => {}
            Ok(buckets) => tracing::debug!(
                buckets,
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "roll-up backlog folded"
            ),
            Err(err) => tracing::warn!(%err, "folding the roll-up backlog failed; will retry"),
        }
        if alive.strong_count() == 0 {
            // The writer's handles are gone; what is left is folded
            // on the next start (or read).
            break;
        }
    }
}
