//! Retention: raw samples older than the configured age are deleted by a
//! background job; hourly and daily roll-ups are kept.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use super::store;
use crate::config::RetentionConfig;

/// Deletes raw samples older than `raw_days` now; returns how many.
pub async fn purge_once(db: &DatabaseConnection, raw_days: u32) -> crate::error::ApiResult<u64> {
    let cutoff = crate::clock::now() - chrono::Duration::days(i64::from(raw_days));
    store::purge_samples_before(db, cutoff).await
}

/// Runs [`purge_once`] every `interval_secs` until aborted.
pub fn spawn(db: DatabaseConnection, config: RetentionConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(config.interval_secs.max(60)));
        loop {
            ticker.tick().await;
            match purge_once(&db, config.raw_days).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    deleted = n,
                    days = config.raw_days,
                    "expired raw samples deleted"
                ),
                Err(err) => tracing::warn!(%err, "retention run failed; will retry"),
            }
        }
    })
}
