//! Which replica polls a Modbus unit, until when: the holder renews the
//! lease at every rescan; an expired lease can be taken by any replica.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "poll_leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub bms_id: i64,
    /// The replica holding the lease (host, process and a random part).
    pub holder: String,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::bms::Entity",
        from = "Column::BmsId",
        to = "super::bms::Column::Id",
        on_delete = "Cascade"
    )]
    Bms,
}

impl ActiveModelBehavior for ActiveModel {}
