//! An uploaded ONNX model (one version of the forecast or anomaly model of a
//! tenant). At most one per tenant and kind is active; none means the
//! built-in model shipped with the server.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "prediction_models")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    /// `FORECAST` or `ANOMALY`.
    pub kind: String,
    pub version: String,
    /// Hex SHA-256 of the ONNX file.
    pub sha256: String,
    pub size_bytes: i64,
    pub model: Vec<u8>,
    /// Free-form metadata and metrics given at upload.
    pub metadata: Json,
    pub active: bool,
    /// The version this one replaced when activated (for rollback); none:
    /// the built-in model.
    pub replaced_id: Option<i64>,
    pub uploaded_by: String,
    pub created_at: DateTimeUtc,
    pub activated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
