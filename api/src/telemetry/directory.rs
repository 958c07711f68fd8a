//! The batteries producers name, as the ingest pipeline needs them: id,
//! serial, place in the hierarchy, chemistry and nominal ratings. Every
//! ingest call used to read its batteries' rows (500 full rows for a
//! 500-sample call, a third of a busy SQLite writer's time); this directory
//! keeps them in memory instead, and stays exact across replicas through a
//! generation number that triggers on `batteries` bump in the transaction
//! that deletes a battery or changes one of these columns (migration 13).
//! A call reads the generation (one single-row statement) and, when it
//! moved, drops what it holds. A battery created since is simply not held
//! yet, and is read from the table like any other miss.
//!
//! The caller's scope is checked in memory ([`Principal::sees`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use entities::battery;
use entities::enums::Chemistry;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect,
    Statement,
};

use crate::auth::Principal;
use crate::bus::Owner;
use crate::error::ApiResult;
use crate::ids::{self, Kind};

/// What the pipeline needs of a battery.
#[derive(Debug)]
pub struct BatteryRef {
    pub id: i64,
    pub serial: String,
    pub owner: Owner,
    pub chemistry: Chemistry,
    pub nominal_capacity_ah: f64,
    pub nominal_voltage_v: f64,
}

type Row = (i64, i64, i64, i64, i64, i64, String, Chemistry, f64, f64);

impl From<Row> for BatteryRef {
    fn from(r: Row) -> Self {
        let (id, tenant_id, client_id, site_id, zone_id, bms_id, serial, chemistry, ah, v) = r;
        Self {
            id,
            serial,
            owner: Owner {
                tenant_id,
                client_id,
                site_id,
                zone_id,
                bms_id,
            },
            chemistry,
            nominal_capacity_ah: ah,
            nominal_voltage_v: v,
        }
    }
}

#[derive(Default)]
struct Held {
    /// The generation these entries were read at (or after).
    generation: i64,
    by_id: HashMap<i64, Arc<BatteryRef>>,
    /// Serials are unique within a tenant.
    by_serial: HashMap<i64, HashMap<String, Arc<BatteryRef>>>,
}

impl Held {
    fn insert(&mut self, b: Arc<BatteryRef>) {
        self.by_serial
            .entry(b.owner.tenant_id)
            .or_default()
            .insert(b.serial.clone(), b.clone());
        self.by_id.insert(b.id, b);
    }
}

/// Shared by every clone of the pipeline.
pub struct Directory {
    db: DatabaseConnection,
    held: Mutex<Held>,
}

/// The references of one call, split by kind.
#[derive(Default)]
struct Wanted<'a> {
    by_id: HashMap<i64, Vec<&'a str>>,
    /// Sorted, without repeats.
    serials: Vec<&'a str>,
}

impl<'a> Wanted<'a> {
    /// The references of a batch: global ids decoded, the rest serials.
    fn from_refs(refs: impl Iterator<Item = &'a str>) -> Self {
        let mut wanted = Self::default();
        for r in refs {
            match ids::decode(Kind::Battery, r) {
                Ok(id) => wanted.by_id.entry(id).or_default().push(r),
                Err(_) => wanted.serials.push(r),
            }
        }
        wanted.serials.sort_unstable();
        wanted.serials.dedup();
        wanted
    }
}

impl Directory {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            held: Mutex::new(Held::default()),
        }
    }

    async fn generation(&self) -> ApiResult<i64> {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT generation FROM battery_directory WHERE id = 1",
            ))
            .await?;
        let row = row.ok_or_else(|| {
            DbErr::RecordNotFound("battery_directory row 1 (migration 13)".into())
        })?;
        Ok(row.try_get_by_index::<i64>(0)?)
    }

    /// The batteries `refs` name (global ids or serials) that `who` may
    /// see, keyed by the reference used; the others are left out.
    pub async fn resolve<'a>(
        &self,
        who: &Principal,
        refs: impl Iterator<Item = &'a str>,
    ) -> ApiResult<HashMap<&'a str, Arc<BatteryRef>>> {
        let wanted = Wanted::from_refs(refs);
        let mut out = HashMap::new();
        if wanted.by_id.is_empty() && wanted.serials.is_empty() {
            return Ok(out);
        }
        let generation = self.generation().await?;
        let mut missing_ids = Vec::new();
        let mut missing_serials = Vec::new();
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if generation > held.generation {
                *held = Held {
                    generation,
                    ..Held::default()
                };
            }
            // An older generation than held (read before another call's
            // newer one): nothing held may be used for it.
            let usable = generation == held.generation;
            for (id, refs) in &wanted.by_id {
                match held.by_id.get(id).filter(|_| usable) {
                    Some(b) => refs.iter().for_each(|r| {
                        out.insert(*r, b.clone());
                    }),
                    None => missing_ids.push(*id),
                }
            }
            let tenant_serials = held.by_serial.get(&who.tenant_id).filter(|_| usable);
            for s in &wanted.serials {
                match tenant_serials.and_then(|m| m.get(*s)) {
                    Some(b) => {
                        out.insert(*s, b.clone());
                    }
                    None => missing_serials.push(*s),
                }
            }
        }
        if !missing_ids.is_empty() || !missing_serials.is_empty() {
            let found = self.read(who, &missing_ids, &missing_serials).await?;
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            for b in found {
                let b = Arc::new(b);
                if let Some(refs) = wanted.by_id.get(&b.id) {
                    refs.iter().for_each(|r| {
                        out.insert(*r, b.clone());
                    });
                }
                if b.owner.tenant_id == who.tenant_id
                    && let Ok(i) = wanted.serials.binary_search(&b.serial.as_str())
                {
                    out.insert(wanted.serials[i], b.clone());
                }
                // Read after `generation` was: current at least up to it.
                if held.generation == generation {
                    held.insert(b);
                }
            }
        }
        out.retain(|_, b| who.sees(&b.owner));
        Ok(out)
    }

    /// Reads batteries by id (any tenant: the scope is checked by the
    /// caller) or by serial within `who`'s tenant, in one statement.
    async fn read(
        &self,
        who: &Principal,
        ids: &[i64],
        serials: &[&str],
    ) -> ApiResult<Vec<BatteryRef>> {
        use battery::Column as C;
        // Only the lists given: an empty one would be bound as `$3 = $4`,
        // which the planner cannot drop, and the `OR` would then scan
        // every battery of the tenant.
        let mut named = sea_orm::Condition::any();
        if !ids.is_empty() {
            named = named.add(crate::db::id_in(
                self.db.get_database_backend(),
                C::Id,
                ids.iter().copied(),
            ));
        }
        if !serials.is_empty() {
            named = named.add(
                sea_orm::Condition::all()
                    .add(C::TenantId.eq(who.tenant_id))
                    .add(C::Serial.is_in(serials.iter().copied())),
            );
        }
        let rows: Vec<Row> = battery::Entity::find()
            .select_only()
            .columns([
                C::Id,
                C::TenantId,
                C::ClientId,
                C::SiteId,
                C::ZoneId,
                C::BmsId,
                C::Serial,
                C::Chemistry,
                C::NominalCapacityAh,
                C::NominalVoltageV,
            ])
            .filter(named)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(BatteryRef::from).collect())
    }
}
