//! What can be listed at each level of the hierarchy, with which filters and
//! orderings; shared by root fields and nested connections.

use async_graphql::Enum;
use entities::{battery, bms, client, site, zone};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Func};
use sea_orm::{ColumnTrait, EntityTrait};

use crate::pagination::{ChildListing, Listing, Sort, SortValue};

/// Sort direction.
#[derive(Enum, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

/// Orderings of clients, sites, zones and BMS units.
#[derive(Enum, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum NamedOrderField {
    /// Alphabetical by name.
    #[default]
    Name,
    /// Creation order.
    Created,
}

/// Orderings of batteries.
#[derive(Enum, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum BatteryOrderField {
    #[default]
    Serial,
    InstallDate,
    NominalCapacity,
    /// Latest state of health; batteries without samples sort as lowest.
    Soh,
    Created,
}

fn col<E: EntityTrait>(c: E::Column) -> Expr {
    Expr::col((E::default(), c))
}

fn named_sort<E: EntityTrait>(
    field: NamedOrderField,
    dir: Direction,
    name_col: E::Column,
    id_col: E::Column,
    name_of: fn(&E::Model) -> SortValue,
    id_of: fn(&E::Model) -> SortValue,
) -> Sort<E> {
    let (expr, key_of) = match field {
        NamedOrderField::Name => (col::<E>(name_col), name_of),
        NamedOrderField::Created => (col::<E>(id_col), id_of),
    };
    Sort {
        name: format!("{field:?}:{dir:?}"),
        expr,
        descending: dir == Direction::Desc,
        id_col,
        key_of,
    }
}

/// A level of the hierarchy that can be a parent.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    Client,
    Site,
    Zone,
}

macro_rules! named_listing {
    ($listing:ident, $module:ident, $doc:literal, { $($level:ident => $col:ident),* }) => {
        #[doc = $doc]
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $listing {
            /// Restricts to one ancestor (root listings with a filter).
            pub parent: Option<(Level, i64)>,
            /// The parent level when nested.
            pub nested_under: Option<Level>,
            pub order: NamedOrderField,
            pub direction: Direction,
            pub name_contains: Option<String>,
        }

        impl $listing {
            pub fn new(order: NamedOrderField, direction: Direction) -> Self {
                Self {
                    parent: None,
                    nested_under: None,
                    order,
                    direction,
                    name_contains: None,
                }
            }

            /// The children of one `level` row (a nested connection).
            pub fn under(level: Level, order: NamedOrderField, direction: Direction) -> Self {
                Self {
                    nested_under: Some(level),
                    ..Self::new(order, direction)
                }
            }
        }

        impl $listing {
            fn level_col(level: Level) -> $module::Column {
                match level {
                    $(Level::$level => $module::Column::$col,)*
                    #[allow(unreachable_patterns)]
                    _ => $module::Column::Id,
                }
            }
        }

        impl Listing for $listing {
            type Entity = $module::Entity;

            fn condition(&self) -> Condition {
                let mut cond = Condition::all();
                if let Some((level, id)) = self.parent {
                    cond = cond.add(Self::level_col(level).eq(id));
                }
                if let Some(text) = &self.name_contains {
                    cond = cond.add(contains(col::<$module::Entity>($module::Column::Name), text));
                }
                cond
            }

            fn sort(&self) -> Sort<$module::Entity> {
                named_sort(
                    self.order,
                    self.direction,
                    $module::Column::Name,
                    $module::Column::Id,
                    |m: &$module::Model| SortValue::Str(m.name.clone()),
                    |m: &$module::Model| SortValue::Int(m.id),
                )
            }
        }

        impl ChildListing for $listing {
            fn parent_col(&self) -> <$module::Entity as EntityTrait>::Column {
                Self::level_col(self.nested_under.unwrap_or(Level::Client))
            }
        }
    };
}

named_listing!(ClientListing, client, "A listing of clients.", {});
named_listing!(SiteListing, site, "A listing of sites.", { Client => ClientId });
named_listing!(ZoneListing, zone, "A listing of zones.", { Client => ClientId, Site => SiteId });
named_listing!(BmsListing, bms, "A listing of BMS units.", { Client => ClientId, Site => SiteId, Zone => ZoneId });

/// Case-insensitive substring match, the same on SQLite and PostgreSQL.
fn contains(expr: Expr, text: &str) -> Expr {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Expr::expr(Func::lower(expr))
        .like(sea_orm::sea_query::LikeExpr::new(format!("%{escaped}%")).escape('\\'))
}

/// A listing of batteries, with the filters of `BatteryFilter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BatteryListing {
    pub order: BatteryOrderField,
    pub direction: Direction,
    pub chemistry: Option<Vec<entities::enums::Chemistry>>,
    pub status: Option<Vec<entities::enums::BatteryStatus>>,
    /// Bounds on latest SOH in percent, as f64 bits (hashable).
    pub soh_min: Option<u64>,
    pub soh_max: Option<u64>,
    pub client_id: Option<i64>,
    pub site_id: Option<i64>,
    pub zone_id: Option<i64>,
    pub bms_id: Option<i64>,
    pub serial_contains: Option<String>,
}

impl Listing for BatteryListing {
    type Entity = battery::Entity;

    fn condition(&self) -> Condition {
        use battery::Column as C;
        let mut cond = Condition::all();
        if let Some(list) = &self.chemistry {
            cond = cond.add(C::Chemistry.is_in(list.iter().copied()));
        }
        if let Some(list) = &self.status {
            cond = cond.add(C::Status.is_in(list.iter().copied()));
        }
        if let Some(bits) = self.soh_min {
            cond = cond.add(C::SohPct.gte(f64::from_bits(bits)));
        }
        if let Some(bits) = self.soh_max {
            cond = cond.add(C::SohPct.lte(f64::from_bits(bits)));
        }
        for (col, id) in [
            (C::ClientId, self.client_id),
            (C::SiteId, self.site_id),
            (C::ZoneId, self.zone_id),
            (C::BmsId, self.bms_id),
        ] {
            if let Some(id) = id {
                cond = cond.add(col.eq(id));
            }
        }
        if let Some(text) = &self.serial_contains {
            cond = cond.add(contains(col::<battery::Entity>(C::Serial), text));
        }
        cond
    }

    fn sort(&self) -> Sort<battery::Entity> {
        use battery::Column as C;
        let (expr, key_of): (Expr, fn(&battery::Model) -> SortValue) = match self.order {
            BatteryOrderField::Serial => (col::<battery::Entity>(C::Serial), |m| {
                SortValue::Str(m.serial.clone())
            }),
            BatteryOrderField::InstallDate => (col::<battery::Entity>(C::InstallDate), |m| {
                SortValue::Date(m.install_date)
            }),
            BatteryOrderField::NominalCapacity => {
                (col::<battery::Entity>(C::NominalCapacityAh), |m| {
                    SortValue::float(m.nominal_capacity_ah)
                })
            }
            BatteryOrderField::Soh => (
                Expr::expr(Func::coalesce([
                    col::<battery::Entity>(C::SohPct),
                    Expr::val(-1.0f64),
                ])),
                |m| SortValue::float(m.soh_pct.unwrap_or(-1.0)),
            ),
            BatteryOrderField::Created => (col::<battery::Entity>(C::Id), |m| SortValue::Int(m.id)),
        };
        Sort {
            name: format!("{:?}:{:?}", self.order, self.direction),
            expr,
            descending: self.direction == Direction::Desc,
            id_col: C::Id,
            key_of,
        }
    }
}

impl ChildListing for BatteryListing {
    fn parent_col(&self) -> battery::Column {
        battery::Column::BmsId
    }
}
