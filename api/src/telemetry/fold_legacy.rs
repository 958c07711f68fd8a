//! The fold of the legacy roll-up backlog ([`BACKLOG`]): before migration
//! 14, writes appended one row per hourly partial bucket there (and moved
//! battery pointers themselves), and the fold added them up in SQL. A
//! backlog left at an upgrade, or by a crash, is still folded, once, by
//! [`super::fold`].

use sea_orm::DbBackend;

use super::rollup::{self, BACKLOG, DAY, HOUR};

/// The statements adding the legacy backlog to the roll-ups. Partial
/// buckets are summed per bucket (in key order) and merged into the stored
/// ones; days are derived from hours. On PostgreSQL one statement also
/// takes them out of the backlog (`DELETE … RETURNING`); on SQLite the
/// fold's transaction deletes them after. Partial DAY buckets left by an
/// older version repeat their HOUR ones and are dropped.
pub(super) fn statements(backend: DbBackend) -> Vec<String> {
    let names = rollup::column_names().join(", ");
    let partials: Vec<String> = rollup::value_columns()
        .iter()
        .map(|(c, how)| format!("{how}({c}) AS {c}"))
        .collect();
    let partials = partials.join(", ");
    let upsert = super::fold::merge_clause(backend);
    // Partial DAY buckets of an older version are left out (see above).
    let pending =
        format!("WHERE resolution = '{HOUR}' AND battery_id IN (SELECT id FROM batteries)");
    let by_hour = "GROUP BY battery_id, resolution, bucket";
    match backend {
        DbBackend::Postgres => vec![format!(
            "WITH moved AS (DELETE FROM {BACKLOG} RETURNING *), \
             hours AS (SELECT battery_id, resolution, bucket, {partials} FROM moved {pending} {by_hour}) \
             INSERT INTO battery_rollups ({names}) \
             SELECT * FROM hours UNION ALL \
             SELECT battery_id, '{DAY}', date_trunc('day', bucket, 'UTC'), {partials} FROM hours \
             GROUP BY battery_id, date_trunc('day', bucket, 'UTC') \
             ORDER BY battery_id, resolution, bucket {upsert}"
        )],
        // Times are stored as RFC 3339 text (`2026-03-01T10:00:00+00:00`).
        _ => {
            let day = "substr(bucket, 1, 10) || 'T00:00:00+00:00'";
            vec![
                format!(
                    "INSERT INTO battery_rollups ({names}) \
                     SELECT battery_id, resolution, bucket, {partials} FROM {BACKLOG} {pending} {by_hour} \
                     ORDER BY battery_id, resolution, bucket {upsert}"
                ),
                format!(
                    "INSERT INTO battery_rollups ({names}) \
                     SELECT battery_id, '{DAY}', {day}, {partials} FROM {BACKLOG} {pending} \
                     GROUP BY battery_id, {day} ORDER BY 1, 3 {upsert}"
                ),
            ]
        }
    }
}
