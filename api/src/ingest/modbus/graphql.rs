//! GraphQL surface of Modbus polling: the register maps this server knows,
//! and `bmsStatus`, connection changes of polled units.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, ID, Object, Result, SimpleObject, Subscription};
use futures_util::Stream;
use tokio::sync::broadcast;

use super::register_map::Registry;
use super::status::{BmsConnectionState, StatusRegistry};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::hierarchy::HierarchyService;
use crate::ids::{self, Kind};
use crate::telemetry::live::{Filter, LiveScope};

/// A register map a Modbus BMS can name in `registerMap`.
#[derive(SimpleObject)]
pub struct RegisterMapInfo {
    pub name: String,
    pub description: String,
    /// The sample fields it fills.
    pub fields: Vec<String>,
}

#[derive(Default)]
pub struct ModbusQuery;

#[Object]
impl ModbusQuery {
    /// Register maps available for Modbus units (built-in and loaded from
    /// `modbus.register_maps_dir`).
    async fn register_maps(&self, ctx: &Context<'_>) -> Result<Vec<RegisterMapInfo>> {
        Ok(ctx
            .data::<Arc<Registry>>()?
            .all()
            .map(|m| RegisterMapInfo {
                name: m.name.clone(),
                description: m.description.clone(),
                fields: m.fields.iter().map(|f| f.target.clone()).collect(),
            })
            .collect())
    }
}

/// A connection change of one BMS.
#[derive(SimpleObject, Clone)]
pub struct BmsStatusEvent {
    pub bms_id: ID,
    pub state: BmsConnectionState,
}

#[derive(Default)]
pub struct ModbusSubscription;

#[Subscription]
impl ModbusSubscription {
    /// Connection changes (online / degraded / offline) of polled BMS units
    /// in the scope: a BMS, zone, site or client (or all you may see).
    async fn bms_status(
        &self,
        ctx: &Context<'_>,
        scope: Option<LiveScope>,
    ) -> Result<impl Stream<Item = BmsStatusEvent> + use<>> {
        Box::pin(open_bms_status(ctx, scope)).await
    }
}

/// Opens a `bmsStatus` stream (boxed by its caller: see
/// `telemetry::live::open`).
async fn open_bms_status(
    ctx: &Context<'_>,
    scope: Option<LiveScope>,
) -> Result<impl Stream<Item = BmsStatusEvent> + use<>> {
    let who = ctx.data::<Principal>()?.clone();
    let db = ctx.data::<HierarchyService>()?.db().clone();
    let filter = Filter::new(&db, who, scope.unwrap_or_default()).await?;
    if filter.level() == Some(Kind::Battery) {
        return Err(ApiError::validation(
            "scope",
            "a battery has no connection; give a BMS, zone, site or client",
        )
        .extend());
    }
    let rx = ctx.data::<Arc<StatusRegistry>>()?.subscribe();
    Ok(futures_util::stream::unfold(
        (rx, filter),
        |(mut rx, filter)| async move {
            loop {
                match rx.recv().await {
                    Ok(change) if filter.accepts(&change.owner, 0) => {
                        let event = BmsStatusEvent {
                            bms_id: ids::encode(Kind::Bms, change.bms_id),
                            state: change.connection,
                        };
                        return Some((event, (rx, filter)));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    ))
}
