//! GraphQL surface of the hierarchy: the five object types, the `Node`
//! interface, root listings and the create / update / delete mutations.
//! Resolvers are thin: services and loaders do the work.

use async_graphql::{
    Context, ErrorExtensions, ID, InputObject, Interface, Object, Result, ResultExt,
};
use chrono::{DateTime, NaiveDate, Utc};
use entities::{battery, bms, client, site, zone};

use super::listing::*;
use super::loaders::ById;
use super::service::{HierarchyService, find_scoped};
use super::types::*;
use crate::auth::{Principal, Scoped};
use crate::ids::{self, Kind};
use crate::ingest::modbus::StatusRegistry;
use crate::ingest::modbus::status::{BmsConnectionState, ConnectionStatus};
use crate::pagination::{Conn, PageRequest, child_connection, loaders, root_connection};
use crate::telemetry::graphql::Sample;

/// The largest page a connection may return (from `limits.max_page_size`).
#[derive(Clone, Copy)]
pub struct MaxPageSize(pub usize);

fn page(
    ctx: &Context<'_>,
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
) -> Result<PageRequest> {
    let max = ctx.data::<MaxPageSize>().map(|m| m.0).unwrap_or(100);
    PageRequest::new(first, after, last, before, max).extend()
}

fn who<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    ctx.data::<Principal>()
}

async fn parent<E>(ctx: &Context<'_>, id: i64, kind: Kind) -> Result<E::Model>
where
    E: Scoped + Send + Sync + 'static,
    E::Model: Clone + Send + Sync,
{
    let loader = loaders(ctx)?;
    loader
        .load_one(ById::<E>::new(id))
        .await
        .map_err(|e| e.to_graphql())?
        .ok_or_else(|| {
            crate::error::ApiError::NotFound(format!("{} {}", kind.name(), ids::encode(kind, id).0))
                .extend()
        })
}

/// Ordering of clients, sites, zones or BMS units.
#[derive(InputObject, Clone, Copy, Default)]
pub struct NamedOrder {
    #[graphql(default)]
    pub field: NamedOrderField,
    #[graphql(default)]
    pub direction: Direction,
}

/// Ordering of batteries.
#[derive(InputObject, Clone, Copy, Default)]
pub struct BatteryOrder {
    #[graphql(default)]
    pub field: BatteryOrderField,
    #[graphql(default)]
    pub direction: Direction,
}

/// Filters on batteries; all given conditions must hold.
#[derive(InputObject, Clone, Default)]
pub struct BatteryFilter {
    pub chemistry: Option<Vec<Chemistry>>,
    pub status: Option<Vec<BatteryStatus>>,
    /// Latest state of health at least this (percent).
    pub soh_min: Option<f64>,
    /// Latest state of health at most this (percent).
    pub soh_max: Option<f64>,
    pub client_id: Option<ID>,
    pub site_id: Option<ID>,
    pub zone_id: Option<ID>,
    pub bms_id: Option<ID>,
    /// Case-insensitive part of the serial.
    pub serial_contains: Option<String>,
}

impl BatteryFilter {
    fn into_listing(self, order: Option<BatteryOrder>) -> Result<BatteryListing> {
        let order = order.unwrap_or_default();
        let decode = |kind, id: Option<ID>| id.map(|i| ids::decode(kind, &i)).transpose();
        let soh = |field: &str, v: Option<f64>| -> Result<Option<u64>> {
            v.map(|v| crate::validate::range(field, v, 0.0, 100.0).map(f64::to_bits))
                .transpose()
                .extend()
        };
        Ok(BatteryListing {
            order: order.field,
            direction: order.direction,
            chemistry: self
                .chemistry
                .map(|v| v.into_iter().map(Into::into).collect()),
            status: self.status.map(|v| v.into_iter().map(Into::into).collect()),
            soh_min: soh("sohMin", self.soh_min)?,
            soh_max: soh("sohMax", self.soh_max)?,
            client_id: decode(Kind::Client, self.client_id)?,
            site_id: decode(Kind::Site, self.site_id)?,
            zone_id: decode(Kind::Zone, self.zone_id)?,
            bms_id: decode(Kind::Bms, self.bms_id)?,
            serial_contains: self
                .serial_contains
                .map(|s| crate::validate::text("serialContains", &s, 100))
                .transpose()
                .extend()?,
        })
    }
}

/// Filters on clients, sites, zones or BMS units.
#[derive(InputObject, Clone, Default)]
pub struct NamedFilter {
    /// Case-insensitive part of the name.
    pub name_contains: Option<String>,
    /// Only below this client (ignored for clients).
    pub client_id: Option<ID>,
    /// Only below this site (zones and BMS units).
    pub site_id: Option<ID>,
    /// Only in this zone (BMS units).
    pub zone_id: Option<ID>,
}

impl NamedFilter {
    fn parent(&self) -> Result<Option<(Level, i64)>> {
        let given = [
            (Level::Zone, Kind::Zone, &self.zone_id),
            (Level::Site, Kind::Site, &self.site_id),
            (Level::Client, Kind::Client, &self.client_id),
        ];
        for (level, kind, id) in given {
            if let Some(id) = id {
                return Ok(Some((level, ids::decode(kind, id).extend()?)));
            }
        }
        Ok(None)
    }

    fn name_contains(&self) -> Result<Option<String>> {
        self.name_contains
            .as_deref()
            .map(|s| crate::validate::text("nameContains", s, 200))
            .transpose()
            .extend()
    }
}

macro_rules! named_listing_from {
    ($listing:ident, $filter:expr, $order:expr, $allowed:expr) => {{
        let order = $order.unwrap_or_default();
        let filter: NamedFilter = $filter.unwrap_or_default();
        let mut listing = $listing::new(order.field, order.direction);
        listing.name_contains = filter.name_contains()?;
        listing.parent = match filter.parent()? {
            Some((level, _)) if !$allowed.contains(&level) => {
                return Err(crate::error::ApiError::validation(
                    "filter",
                    format!("cannot filter this listing by {level:?}"),
                )
                .extend());
            }
            other => other,
        };
        listing
    }};
}

// ----- object types ---------------------------------------------------------

/// A customer of the operating company.
pub struct Client(pub client::Model);
/// A physical location of a client.
pub struct Site(pub site::Model);
/// A building or area within a site.
pub struct Zone(pub zone::Model);
/// A battery management system unit.
pub struct Bms(pub bms::Model);
/// A battery managed by one BMS.
pub struct Battery(pub battery::Model);

/// Any object with a global id.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "Opaque global id."))]
pub enum Node {
    Client(Client),
    Site(Site),
    Zone(Zone),
    Bms(Bms),
    Battery(Battery),
}

#[Object]
impl Client {
    async fn id(&self) -> ID {
        ids::encode(Kind::Client, self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn industry(&self) -> Option<&str> {
        self.0.industry.as_deref()
    }
    /// ISO 3166-1 alpha-2 code.
    async fn country(&self) -> Option<&str> {
        self.0.country.as_deref()
    }
    /// IANA time zone.
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }
    async fn tier(&self) -> ClientTier {
        self.0.tier.into()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The client's sites.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    async fn sites(
        &self,
        ctx: &Context<'_>,
        order_by: Option<NamedOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Site>> {
        let order = order_by.unwrap_or_default();
        let listing = SiteListing::under(Level::Client, order.field, order.direction);
        child_connection(
            ctx,
            self.0.id,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Site,
        )
        .await
    }
}

#[Object]
impl Site {
    async fn id(&self) -> ID {
        ids::encode(Kind::Site, self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn latitude(&self) -> Option<f64> {
        self.0.latitude
    }
    async fn longitude(&self) -> Option<f64> {
        self.0.longitude
    }
    /// IANA time zone.
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }
    async fn address(&self) -> Option<&str> {
        self.0.address.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn client(&self, ctx: &Context<'_>) -> Result<Client> {
        parent::<client::Entity>(ctx, self.0.client_id, Kind::Client)
            .await
            .map(Client)
    }
    /// The site's zones.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    async fn zones(
        &self,
        ctx: &Context<'_>,
        order_by: Option<NamedOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Zone>> {
        let order = order_by.unwrap_or_default();
        let listing = ZoneListing::under(Level::Site, order.field, order.direction);
        child_connection(
            ctx,
            self.0.id,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Zone,
        )
        .await
    }
    /// Every BMS unit of the site, whatever its zone.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    async fn bms_units(
        &self,
        ctx: &Context<'_>,
        order_by: Option<NamedOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Bms>> {
        let order = order_by.unwrap_or_default();
        let listing = BmsListing::under(Level::Site, order.field, order.direction);
        child_connection(
            ctx,
            self.0.id,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Bms,
        )
        .await
    }
}

#[Object]
impl Zone {
    async fn id(&self) -> ID {
        ids::encode(Kind::Zone, self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn site(&self, ctx: &Context<'_>) -> Result<Site> {
        parent::<site::Entity>(ctx, self.0.site_id, Kind::Site)
            .await
            .map(Site)
    }
    /// The zone's BMS units.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    async fn bms_units(
        &self,
        ctx: &Context<'_>,
        order_by: Option<NamedOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Bms>> {
        let order = order_by.unwrap_or_default();
        let listing = BmsListing::under(Level::Zone, order.field, order.direction);
        child_connection(
            ctx,
            self.0.id,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Bms,
        )
        .await
    }
}

#[Object]
impl Bms {
    async fn id(&self) -> ID {
        ids::encode(Kind::Bms, self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn vendor(&self) -> BmsVendor {
        self.0.vendor.into()
    }
    async fn protocol(&self) -> BmsProtocol {
        self.0.protocol.into()
    }
    /// `host:port` for Modbus TCP, topic for MQTT.
    async fn endpoint(&self) -> Option<&str> {
        self.0.endpoint.as_deref()
    }
    async fn poll_interval_ms(&self) -> i32 {
        self.0.poll_interval_ms
    }
    async fn register_map(&self) -> Option<&str> {
        self.0.register_map.as_deref()
    }
    async fn capacity_kwh(&self) -> Option<f64> {
        self.0.capacity_kwh
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn zone(&self, ctx: &Context<'_>) -> Result<Zone> {
        parent::<zone::Entity>(ctx, self.0.zone_id, Kind::Zone)
            .await
            .map(Zone)
    }
    async fn site(&self, ctx: &Context<'_>) -> Result<Site> {
        parent::<site::Entity>(ctx, self.0.site_id, Kind::Site)
            .await
            .map(Site)
    }
    /// Connection of a polled (Modbus TCP) unit, as reported by the
    /// replica polling it; `UNKNOWN` for units nobody polls.
    async fn connection_state(&self, ctx: &Context<'_>) -> Result<BmsConnectionState> {
        let registry = ctx.data::<std::sync::Arc<StatusRegistry>>()?;
        Ok(registry.get(self.0.id).unwrap_or(BmsConnectionState {
            status: ConnectionStatus::Unknown,
            since: self.0.updated_at,
            last_seen_at: None,
            last_error: None,
            consecutive_failures: 0,
        }))
    }
    /// Batteries managed by this unit.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn batteries(
        &self,
        ctx: &Context<'_>,
        filter: Option<BatteryFilter>,
        order_by: Option<BatteryOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Battery>> {
        let listing = filter.unwrap_or_default().into_listing(order_by)?;
        child_connection(
            ctx,
            self.0.id,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Battery,
        )
        .await
    }
}

#[Object]
impl Battery {
    async fn id(&self) -> ID {
        ids::encode(Kind::Battery, self.0.id)
    }
    async fn serial(&self) -> &str {
        &self.0.serial
    }
    async fn chemistry(&self) -> Chemistry {
        self.0.chemistry.into()
    }
    async fn status(&self) -> BatteryStatus {
        self.0.status.into()
    }
    async fn nominal_capacity_ah(&self) -> f64 {
        self.0.nominal_capacity_ah
    }
    async fn nominal_energy_kwh(&self) -> Option<f64> {
        self.0.nominal_energy_kwh
    }
    async fn nominal_voltage_v(&self) -> f64 {
        self.0.nominal_voltage_v
    }
    async fn install_date(&self) -> NaiveDate {
        self.0.install_date
    }
    /// State of health of the newest sample that reported one, in percent,
    /// as of the last roll-up fold (at most `ingest.rollup_fold_ms` behind).
    async fn soh_pct(&self) -> Option<f64> {
        self.0.soh_pct
    }
    /// Time of the newest sample, as of the last roll-up fold (at most
    /// `ingest.rollup_fold_ms` behind; `latestSample` is never behind).
    async fn last_sample_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_sample_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn bms(&self, ctx: &Context<'_>) -> Result<Bms> {
        parent::<bms::Entity>(ctx, self.0.bms_id, Kind::Bms)
            .await
            .map(Bms)
    }
    async fn site(&self, ctx: &Context<'_>) -> Result<Site> {
        parent::<site::Entity>(ctx, self.0.site_id, Kind::Site)
            .await
            .map(Site)
    }
    /// The most recent telemetry sample, if any.
    async fn latest_sample(&self, ctx: &Context<'_>) -> Result<Option<Sample>> {
        crate::telemetry::graphql::latest_sample(ctx, &self.0).await
    }
    /// Health forecast from the battery's history (see `Prediction`).
    async fn prediction(&self, ctx: &Context<'_>) -> Result<crate::predict::graphql::Prediction> {
        crate::predict::graphql::prediction_of(ctx, &self.0).await
    }
}

// ----- root fields -----------------------------------------------------------

#[derive(Default)]
pub struct HierarchyQuery;

#[Object]
impl HierarchyQuery {
    /// Fetches any object by its global id; null when it does not exist or
    /// is outside your scope.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Node>> {
        let (kind, num) = ids::decode_any(&id).extend()?;
        let db = ctx.data::<HierarchyService>()?.db();
        let who = who(ctx)?;
        let found = match kind {
            Kind::Client => find_scoped::<client::Entity>(db, who, num, kind)
                .await
                .map(|m| Node::Client(Client(m))),
            Kind::Site => find_scoped::<site::Entity>(db, who, num, kind)
                .await
                .map(|m| Node::Site(Site(m))),
            Kind::Zone => find_scoped::<zone::Entity>(db, who, num, kind)
                .await
                .map(|m| Node::Zone(Zone(m))),
            Kind::Bms => find_scoped::<bms::Entity>(db, who, num, kind)
                .await
                .map(|m| Node::Bms(Bms(m))),
            Kind::Battery => find_scoped::<battery::Entity>(db, who, num, kind)
                .await
                .map(|m| Node::Battery(Battery(m))),
        };
        match found {
            Ok(node) => Ok(Some(node)),
            Err(crate::error::ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.extend()),
        }
    }

    /// Clients, alphabetically by default.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn clients(
        &self,
        ctx: &Context<'_>,
        filter: Option<NamedFilter>,
        order_by: Option<NamedOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Client>> {
        let listing = named_listing_from!(ClientListing, filter, order_by, [] as [Level; 0]);
        root_connection(
            ctx,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Client,
        )
        .await
    }

    /// Sites of every client, alphabetically by default.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn sites(
        &self,
        ctx: &Context<'_>,
        filter: Option<NamedFilter>,
        order_by: Option<NamedOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Site>> {
        let listing = named_listing_from!(SiteListing, filter, order_by, [Level::Client]);
        root_connection(
            ctx,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Site,
        )
        .await
    }

    /// Zones of every site.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn zones(
        &self,
        ctx: &Context<'_>,
        filter: Option<NamedFilter>,
        order_by: Option<NamedOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Zone>> {
        let listing =
            named_listing_from!(ZoneListing, filter, order_by, [Level::Client, Level::Site]);
        root_connection(
            ctx,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Zone,
        )
        .await
    }

    /// BMS units of every zone.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn bms_units(
        &self,
        ctx: &Context<'_>,
        filter: Option<NamedFilter>,
        order_by: Option<NamedOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Bms>> {
        let listing = named_listing_from!(
            BmsListing,
            filter,
            order_by,
            [Level::Client, Level::Site, Level::Zone]
        );
        root_connection(
            ctx,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Bms,
        )
        .await
    }

    /// Batteries of the whole fleet, filtered and sorted.
    #[graphql(complexity = "crate::pagination::cost(first, last, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn batteries(
        &self,
        ctx: &Context<'_>,
        filter: Option<BatteryFilter>,
        order_by: Option<BatteryOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Conn<Battery>> {
        let listing = filter.unwrap_or_default().into_listing(order_by)?;
        root_connection(
            ctx,
            listing,
            page(ctx, first, after, last, before)?,
            |m| m.id,
            Battery,
        )
        .await
    }
}

#[derive(Default)]
pub struct HierarchyMutation;

fn service<'a>(ctx: &Context<'a>) -> Result<&'a HierarchyService> {
    ctx.data::<HierarchyService>()
}

#[Object]
impl HierarchyMutation {
    async fn create_client(&self, ctx: &Context<'_>, input: CreateClientInput) -> Result<Client> {
        Ok(Client(
            service(ctx)?
                .create_client(who(ctx)?, input)
                .await
                .extend()?,
        ))
    }
    async fn update_client(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateClientInput,
    ) -> Result<Client> {
        let id = ids::decode(Kind::Client, &id).extend()?;
        Ok(Client(
            service(ctx)?
                .update_client(who(ctx)?, id, input)
                .await
                .extend()?,
        ))
    }
    /// Deletes a client. With children it is refused (`CONFLICT`) unless
    /// `cascade` is true, which deletes the whole subtree and its telemetry.
    async fn delete_client(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] cascade: bool,
    ) -> Result<ID> {
        let num = ids::decode(Kind::Client, &id).extend()?;
        service(ctx)?
            .delete_client(who(ctx)?, num, cascade)
            .await
            .extend()?;
        Ok(id)
    }

    async fn create_site(&self, ctx: &Context<'_>, input: CreateSiteInput) -> Result<Site> {
        Ok(Site(
            service(ctx)?.create_site(who(ctx)?, input).await.extend()?,
        ))
    }
    async fn update_site(&self, ctx: &Context<'_>, id: ID, input: UpdateSiteInput) -> Result<Site> {
        let id = ids::decode(Kind::Site, &id).extend()?;
        Ok(Site(
            service(ctx)?
                .update_site(who(ctx)?, id, input)
                .await
                .extend()?,
        ))
    }
    /// Deletes a site; see `deleteClient` for `cascade`.
    async fn delete_site(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] cascade: bool,
    ) -> Result<ID> {
        let num = ids::decode(Kind::Site, &id).extend()?;
        service(ctx)?
            .delete_site(who(ctx)?, num, cascade)
            .await
            .extend()?;
        Ok(id)
    }

    async fn create_zone(&self, ctx: &Context<'_>, input: CreateZoneInput) -> Result<Zone> {
        Ok(Zone(
            service(ctx)?.create_zone(who(ctx)?, input).await.extend()?,
        ))
    }
    async fn update_zone(&self, ctx: &Context<'_>, id: ID, input: UpdateZoneInput) -> Result<Zone> {
        let id = ids::decode(Kind::Zone, &id).extend()?;
        Ok(Zone(
            service(ctx)?
                .update_zone(who(ctx)?, id, input)
                .await
                .extend()?,
        ))
    }
    /// Deletes a zone; see `deleteClient` for `cascade`.
    async fn delete_zone(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] cascade: bool,
    ) -> Result<ID> {
        let num = ids::decode(Kind::Zone, &id).extend()?;
        service(ctx)?
            .delete_zone(who(ctx)?, num, cascade)
            .await
            .extend()?;
        Ok(id)
    }

    async fn create_bms(&self, ctx: &Context<'_>, input: CreateBmsInput) -> Result<Bms> {
        Ok(Bms(service(ctx)?
            .create_bms(who(ctx)?, input)
            .await
            .extend()?))
    }
    async fn update_bms(&self, ctx: &Context<'_>, id: ID, input: UpdateBmsInput) -> Result<Bms> {
        let id = ids::decode(Kind::Bms, &id).extend()?;
        Ok(Bms(service(ctx)?
            .update_bms(who(ctx)?, id, input)
            .await
            .extend()?))
    }
    /// Deletes a BMS unit; see `deleteClient` for `cascade`.
    async fn delete_bms(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] cascade: bool,
    ) -> Result<ID> {
        let num = ids::decode(Kind::Bms, &id).extend()?;
        service(ctx)?
            .delete_bms(who(ctx)?, num, cascade)
            .await
            .extend()?;
        Ok(id)
    }

    async fn create_battery(
        &self,
        ctx: &Context<'_>,
        input: CreateBatteryInput,
    ) -> Result<Battery> {
        Ok(Battery(
            service(ctx)?
                .create_battery(who(ctx)?, input)
                .await
                .extend()?,
        ))
    }
    async fn update_battery(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateBatteryInput,
    ) -> Result<Battery> {
        let id = ids::decode(Kind::Battery, &id).extend()?;
        Ok(Battery(
            service(ctx)?
                .update_battery(who(ctx)?, id, input)
                .await
                .extend()?,
        ))
    }
    /// Deletes a battery and its telemetry.
    async fn delete_battery(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let num = ids::decode(Kind::Battery, &id).extend()?;
        service(ctx)?
            .delete_battery(who(ctx)?, num)
            .await
            .extend()?;
        Ok(id)
    }
}
