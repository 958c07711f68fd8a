//! Runs scheduled plugin work on every replica, each slot exactly once: a
//! replica runs a slot only after moving the slot's `next_run_at` past it
//! with a conditional UPDATE, which one replica alone can win. Missed slots
//! (the server was down) are not replayed: the next run is computed from
//! now. Jobs: the KPI history (`plugins.kpi_schedule`) and every enabled
//! report schedule.

use chrono::{DateTime, Utc};
use croner::Cron;
use entities::{report_schedule, scheduled_job};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::Plugins;
use super::history::{self, SlotReport};
use super::schedules::{self, next_after, parse_cron};
use crate::error::ApiResult;

/// The KPI history job's row in `scheduled_jobs`.
const KPI_JOB: &str = "kpi-history";
/// Report schedules run per poll, at most.
const REPORTS_PER_POLL: u64 = 50;

/// What one poll ran.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Due {
    /// The KPI slot run by this replica, if any.
    pub kpi: Option<(DateTime<Utc>, SlotReport)>,
    /// Report schedules run by this replica.
    pub reports: Vec<i64>,
}

#[derive(Clone)]
pub struct Scheduler {
    host: Plugins,
    kpi_cron: Option<Cron>,
}

impl Scheduler {
    pub fn new(host: Plugins) -> Self {
        let expr = host.config.kpi_schedule.trim().to_owned();
        let kpi_cron = if expr.is_empty() {
            None
        } else {
            match parse_cron(&expr) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("plugins.kpi_schedule: {e}; scheduled KPIs are off");
                    None
                }
            }
        };
        Self { host, kpi_cron }
    }

    /// Polls every `scheduler_poll_secs` until the task is dropped.
    pub fn start(self) -> tokio::task::JoinHandle<()> {
        let every = std::time::Duration::from_secs(self.host.config.scheduler_poll_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(err) = self.run_due(crate::clock::now()).await {
                    tracing::warn!(%err, "scheduler poll failed");
                }
            }
        })
    }

    /// Runs what is due at `now`.
    pub async fn run_due(&self, now: DateTime<Utc>) -> ApiResult<Due> {
        let mut due = Due::default();
        if let Some(cron) = &self.kpi_cron
            && let Some(slot) = self.claim_job(KPI_JOB, cron, now).await?
        {
            let report = history::run_slot(&self.host, slot).await?;
            due.kpi = Some((slot, report));
        }
        let ready = report_schedule::Entity::find()
            .filter(report_schedule::Column::Enabled.eq(true))
            .filter(report_schedule::Column::NextRunAt.lte(now))
            .order_by_asc(report_schedule::Column::NextRunAt)
            .limit(REPORTS_PER_POLL)
            .all(&self.host.db)
            .await?;
        for s in ready {
            let Some(next) = parse_cron(&s.cron).ok().and_then(|c| next_after(&c, now)) else {
                continue;
            };
            let won = report_schedule::Entity::update_many()
                .col_expr(report_schedule::Column::NextRunAt, Expr::value(next))
                .filter(report_schedule::Column::Id.eq(s.id))
                .filter(report_schedule::Column::NextRunAt.eq(s.next_run_at))
                .exec(&self.host.db)
                .await?
                .rows_affected
                == 1;
            if won {
                // A failed run is recorded on the schedule (`lastError`).
                let _ = schedules::execute(&self.host, &s, s.next_run_at).await?;
                due.reports.push(s.id);
            }
        }
        Ok(due)
    }

    /// The slot of `job` due at `now` if this replica won it. A job seen
    /// for the first time starts at its next slot.
    async fn claim_job(
        &self,
        job: &str,
        cron: &Cron,
        now: DateTime<Utc>,
    ) -> ApiResult<Option<DateTime<Utc>>> {
        let db = &self.host.db;
        let Some(next) = next_after(cron, now) else {
            return Ok(None);
        };
        let Some(row) = scheduled_job::Entity::find_by_id(job).one(db).await? else {
            scheduled_job::Entity::insert(scheduled_job::ActiveModel {
                name: Set(job.to_owned()),
                next_run_at: Set(next),
            })
            .on_conflict(
                OnConflict::column(scheduled_job::Column::Name)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
            return Ok(None);
        };
        if row.next_run_at > now {
            return Ok(None);
        }
        let won = scheduled_job::Entity::update_many()
            .col_expr(scheduled_job::Column::NextRunAt, Expr::value(next))
            .filter(scheduled_job::Column::Name.eq(job))
            .filter(scheduled_job::Column::NextRunAt.eq(row.next_run_at))
            .exec(db)
            .await?
            .rows_affected
            == 1;
        Ok(won.then_some(row.next_run_at))
    }
}
