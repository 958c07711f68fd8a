//! Keeps exactly one poller running per Modbus BMS, as configured now,
//! across replicas: at each rescan this replica claims the units' poll
//! [`Leases`] and runs pollers for the units it holds only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use entities::enums::BmsProtocol;
use entities::{battery, bms};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use tokio::task::JoinHandle;

use super::lease::Leases;
use super::poller::{self, Target, Timing};
use super::register_map::Registry;
use super::status::StatusRegistry;
use crate::bus::Owner;
use crate::config::ModbusConfig;
use crate::telemetry::Ingestor;

/// What a poller was started with; a change restarts it.
#[derive(PartialEq, Eq)]
struct Fingerprint {
    endpoint: Option<String>,
    map: Option<String>,
    interval_ms: i32,
    batteries: Vec<i64>,
}

/// Starts the supervisor; abort the handle to stop it and its pollers.
pub fn spawn(
    db: DatabaseConnection,
    ingestor: Ingestor,
    maps: Arc<Registry>,
    status: Arc<StatusRegistry>,
    leases: Leases,
    config: ModbusConfig,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let timing = Timing {
            request_timeout: Duration::from_millis(config.timeout_ms),
            max_backoff: Duration::from_secs(config.max_backoff_secs.max(1)),
            reconnect_after: config.offline_after_failures.max(1),
        };
        let mut running = Pollers::default();
        let mut ticker = tokio::time::interval(Duration::from_millis(config.rescan_ms.max(100)));
        let ttl = Duration::from_secs(config.lease_secs.max(1));
        let mut claimed_at = tokio::time::Instant::now();
        tracing::info!(replica = %leases.holder(), "Modbus polling enabled; claiming units");
        loop {
            ticker.tick().await;
            let claimed = match targets(&db).await {
                Ok(found) => {
                    let ids: Vec<i64> = found.iter().map(|(u, _)| u.id).collect();
                    leases
                        .claim(&ids)
                        .await
                        .map(|held| (found, held))
                        .map_err(anyhow::Error::from)
                }
                Err(err) => Err(err),
            };
            match claimed {
                Ok((found, held)) => {
                    claimed_at = tokio::time::Instant::now();
                    reconcile(
                        &mut running.0,
                        found,
                        &held,
                        &ingestor,
                        &maps,
                        &status,
                        timing,
                    );
                }
                // Our leases may have passed to another replica by now.
                Err(err) if claimed_at.elapsed() >= ttl => {
                    tracing::warn!(%err, "cannot renew Modbus poll leases; stopping this replica's pollers");
                    stop_all(&mut running.0, &status);
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot read Modbus units; keeping current pollers")
                }
            }
            status.report_all();
        }
    })
}

/// The running pollers; dropping it (when the supervisor task is aborted)
/// aborts them all.
#[derive(Default)]
struct Pollers(HashMap<i64, (Fingerprint, JoinHandle<()>)>);

impl Drop for Pollers {
    fn drop(&mut self) {
        for (_, (_, handle)) in self.0.drain() {
            handle.abort();
        }
    }
}

async fn targets(
    db: &DatabaseConnection,
) -> anyhow::Result<Vec<(bms::Model, Vec<battery::Model>)>> {
    let units = bms::Entity::find()
        .filter(bms::Column::Protocol.eq(BmsProtocol::ModbusTcp))
        .all(db)
        .await?;
    let batteries = battery::Entity::find()
        .filter(battery::Column::BmsId.is_in(units.iter().map(|u| u.id)))
        .order_by_asc(battery::Column::Serial)
        .all(db)
        .await?;
    let mut by_bms: HashMap<i64, Vec<battery::Model>> = HashMap::new();
    for b in batteries {
        by_bms.entry(b.bms_id).or_default().push(b);
    }
    Ok(units
        .into_iter()
        .map(|u| {
            let bats = by_bms.remove(&u.id).unwrap_or_default();
            (u, bats)
        })
        .collect())
}

fn stop_all(running: &mut HashMap<i64, (Fingerprint, JoinHandle<()>)>, status: &StatusRegistry) {
    for (id, (_, handle)) in running.drain() {
        handle.abort();
        status.forget(id, false);
    }
}

/// Runs a poller for each unit of `found` this replica `held`s, stops the
/// others.
fn reconcile(
    running: &mut HashMap<i64, (Fingerprint, JoinHandle<()>)>,
    found: Vec<(bms::Model, Vec<battery::Model>)>,
    held: &HashSet<i64>,
    ingestor: &Ingestor,
    maps: &Arc<Registry>,
    status: &Arc<StatusRegistry>,
    timing: Timing,
) {
    let present: HashSet<i64> = found.iter().map(|(u, _)| u.id).collect();
    running.retain(|id, (_, handle)| {
        let keep = held.contains(id);
        if !keep {
            handle.abort();
            let gone = !present.contains(id);
            status.forget(*id, gone);
            if gone {
                tracing::info!(bms = id, "Modbus polling stopped");
            } else {
                tracing::info!(bms = id, "Modbus unit polled by another replica now");
            }
        }
        keep
    });
    for (unit, batteries) in found.into_iter().filter(|(u, _)| held.contains(&u.id)) {
        let fingerprint = Fingerprint {
            endpoint: unit.endpoint.clone(),
            map: unit.register_map.clone(),
            interval_ms: unit.poll_interval_ms,
            batteries: batteries.iter().map(|b| b.id).collect(),
        };
        if running
            .get(&unit.id)
            .is_some_and(|(f, _)| *f == fingerprint)
        {
            continue;
        }
        if let Some((_, old)) = running.remove(&unit.id) {
            old.abort();
            tracing::info!(
                bms = unit.id,
                "Modbus unit re-configured; restarting its poller"
            );
        }
        let owner = Owner {
            tenant_id: unit.tenant_id,
            client_id: unit.client_id,
            site_id: unit.site_id,
            zone_id: unit.zone_id,
            bms_id: unit.id,
        };
        let map_name = unit.register_map.clone().unwrap_or_default();
        let Some(map) = maps.get(&map_name).cloned() else {
            status.failure(
                unit.id,
                owner,
                format!("unknown register map '{map_name}'"),
                false,
            );
            // Remember the configuration so the error is not re-logged each scan.
            running.insert(unit.id, (fingerprint, tokio::spawn(async {})));
            continue;
        };
        tracing::info!(bms = unit.id, endpoint = ?unit.endpoint, map = %map.name, batteries = batteries.len(), "Modbus polling started");
        let target = Target {
            bms: unit,
            batteries,
            map,
        };
        let handle = tokio::spawn(poller::run(
            target.clone(),
            ingestor.clone(),
            status.clone(),
            timing,
        ));
        running.insert(target.bms.id, (fingerprint, handle));
    }
}
