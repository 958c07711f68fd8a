//! Which replica polls which unit. Every replica with polling enabled
//! claims a lease per unit in `poll_leases` at each rescan: it takes units
//! whose lease is free or expired and renews its own. A unit is therefore
//! polled by one replica at a time, and by another within `lease_secs` of
//! its holder stopping (crash, shutdown, lost database). Replicas compare
//! expiry times written by each other: their clocks must agree to well
//! under `lease_secs` (NTP does).

use std::collections::HashSet;
use std::time::Duration;

use entities::poll_lease;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};

/// Leases per statement.
const CHUNK: usize = 500;

#[derive(Clone, Debug)]
pub struct Leases {
    db: DatabaseConnection,
    holder: String,
    ttl: Duration,
}

impl Leases {
    /// Leases held as `holder` (unique per replica) for `ttl` after each claim.
    pub fn new(db: DatabaseConnection, holder: String, ttl: Duration) -> Self {
        Self { db, holder, ttl }
    }

    /// A name for this replica: host, process id and a random part (two
    /// processes on one host, or a restarted one, never share it).
    pub fn replica_name() -> String {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        format!(
            "{host}:{}:{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes or renews the lease of each of `units` that is free, expired
    /// or already ours; returns the units this replica now holds.
    pub async fn claim(&self, units: &[i64]) -> Result<HashSet<i64>, DbErr> {
        let now = crate::clock::now();
        let until = now + chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let mut held = HashSet::new();
        for chunk in units.chunks(CHUNK) {
            let rows = chunk.iter().map(|id| poll_lease::ActiveModel {
                bms_id: sea_orm::Set(*id),
                holder: sea_orm::Set(self.holder.clone()),
                expires_at: sea_orm::Set(until),
            });
            // Overwrite only our own lease or one nobody renewed in time.
            let takeable = Expr::col((poll_lease::Entity, poll_lease::Column::Holder))
                .eq(self.holder.as_str())
                .or(Expr::col((poll_lease::Entity, poll_lease::Column::ExpiresAt)).lt(now));
            let on_conflict = OnConflict::column(poll_lease::Column::BmsId)
                .update_columns([poll_lease::Column::Holder, poll_lease::Column::ExpiresAt])
                .action_and_where(takeable)
                .to_owned();
            poll_lease::Entity::insert_many(rows)
                .on_conflict(on_conflict)
                .exec_without_returning(&self.db)
                .await?;
            let mine: Vec<i64> = poll_lease::Entity::find()
                .select_only()
                .column(poll_lease::Column::BmsId)
                .filter(poll_lease::Column::BmsId.is_in(chunk.iter().copied()))
                .filter(poll_lease::Column::Holder.eq(self.holder.as_str()))
                .into_tuple()
                .all(&self.db)
                .await?;
            held.extend(mine);
        }
        Ok(held)
    }

    /// Gives up every lease of this replica (on shutdown), so another
    /// replica takes the units at its next rescan instead of after expiry.
    pub async fn release_all(&self) -> Result<u64, DbErr> {
        Ok(poll_lease::Entity::delete_many()
            .filter(poll_lease::Column::Holder.eq(self.holder.as_str()))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
