//! Batched lookups of parent objects by id (`Site.client`, `Battery.bms`, …).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use sea_orm::{ModelTrait, QueryFilter, Value};

use crate::auth::Scoped;
use crate::error::ApiError;
use crate::pagination::ScopedLoader;

/// The row of `E` with this id.
pub struct ById<E>(pub i64, PhantomData<fn() -> E>);

impl<E> ById<E> {
    pub fn new(id: i64) -> Self {
        Self(id, PhantomData)
    }
}

impl<E> Clone for ById<E> {
    fn clone(&self) -> Self {
        Self::new(self.0)
    }
}

impl<E> PartialEq for ById<E> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<E> Eq for ById<E> {}

impl<E> Hash for ById<E> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl<E> Loader<ById<E>> for ScopedLoader
where
    E: Scoped + Send + Sync + 'static,
    E::Model: Clone + Send + Sync,
{
    type Value = E::Model;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[ById<E>]) -> Result<HashMap<ById<E>, E::Model>, Self::Error> {
        let rows = E::find()
            .filter(self.who.condition::<E>())
            .filter(crate::db::id_in(
                self.db.get_database_backend(),
                E::id_col(),
                keys.iter().map(|k| k.0),
            ))
            .all(&self.db)
            .await
            .map_err(|e| Arc::new(ApiError::from(e)))?;
        Ok(rows
            .into_iter()
            .filter_map(|row| match row.get(E::id_col()) {
                Value::BigInt(Some(id)) => Some((ById::new(id), row)),
                _ => None,
            })
            .collect())
    }
}
