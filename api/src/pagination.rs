//! Relay cursor connections over keyset pagination.
//!
//! A page is "the rows after (sort key, id) in (sort key, id) order": stable
//! under inserts and deletes, no duplicates, no gaps, and an index seek
//! rather than an OFFSET scan. Nested connections (`Client.sites`, …) are
//! loaded for all parents of one GraphQL level at once with
//! `ROW_NUMBER() OVER (PARTITION BY parent …)`, so a query five levels deep
//! costs a handful of statements however many rows it returns.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use async_graphql::connection::{Connection, CursorType, Edge};
use async_graphql::dataloader::Loader;
use async_graphql::{Context, Object, OutputType, ResultExt};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::NaiveDate;
use sea_orm::sea_query::{
    Alias, Asterisk, Condition, Expr, ExprTrait, Order, Query, WindowStatement,
};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, FromQueryResult, ModelTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Value,
};
use serde::{Deserialize, Serialize};

use crate::auth::{Principal, Scoped};
use crate::error::{ApiError, ApiResult};
pub use crate::loader::{ScopedLoader, loaders};

/// Page size when neither `first` nor `last` is given.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// Complexity of a connection field: its page size times the cost of one
/// node, so a query that could return a million rows is refused before it runs.
pub fn cost(first: Option<i32>, last: Option<i32>, child_complexity: usize) -> usize {
    let n = first
        .or(last)
        .map_or(DEFAULT_PAGE_SIZE, |n| usize::try_from(n).unwrap_or(0));
    Ord::max(n, 1)
        .saturating_mul(child_complexity)
        .saturating_add(1)
}

/// A sort key value carried in a cursor. Floats are kept as bits so that
/// cursors can be hashed and compared (they key DataLoader batches).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortValue {
    Str(String),
    Int(i64),
    Float(u64),
    Date(NaiveDate),
}

impl SortValue {
    pub fn float(v: f64) -> Self {
        Self::Float(v.to_bits())
    }

    fn to_value(&self) -> Value {
        match self {
            Self::Str(s) => s.clone().into(),
            Self::Int(i) => (*i).into(),
            Self::Float(bits) => f64::from_bits(*bits).into(),
            Self::Date(d) => (*d).into(),
        }
    }
}

/// An opaque cursor: the ordering it belongs to, the row's sort key and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PageCursor {
    #[serde(rename = "o")]
    pub ordering: String,
    #[serde(rename = "k")]
    pub key: SortValue,
    #[serde(rename = "i")]
    pub id: i64,
}

impl CursorType for PageCursor {
    type Error = String;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "malformed cursor".to_owned())?;
        serde_json::from_slice(&bytes).map_err(|_| "malformed cursor".to_owned())
    }

    fn encode_cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// How a listing is ordered: an expression (qualified by table), its name
/// (cursors are only valid for the ordering that made them) and direction.
pub struct Sort<E: EntityTrait> {
    pub name: String,
    pub expr: Expr,
    pub descending: bool,
    pub id_col: E::Column,
    pub key_of: fn(&E::Model) -> SortValue,
}

/// Connection arguments, validated: at most one direction, a bounded size,
/// cursors decoded and checked against the ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageRequest {
    pub limit: usize,
    pub backward: bool,
    pub after: Option<PageCursor>,
    pub before: Option<PageCursor>,
}

impl PageRequest {
    pub fn new(
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        max: usize,
    ) -> ApiResult<Self> {
        let size = |field: &str, n: i32| -> ApiResult<usize> {
            if n < 0 || n as usize > max {
                Err(ApiError::validation(
                    field,
                    format!("must be between 0 and {max}"),
                ))
            } else {
                Ok(n as usize)
            }
        };
        let (limit, backward) = match (first, last) {
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "first",
                    "use either first or last, not both",
                ));
            }
            (Some(n), None) => (size("first", n)?, false),
            (None, Some(n)) => (size("last", n)?, true),
            (None, None) => (
                DEFAULT_PAGE_SIZE.min(max),
                before.is_some() && after.is_none(),
            ),
        };
        let decode = |field: &str, c: Option<String>| -> ApiResult<Option<PageCursor>> {
            c.map(|c| PageCursor::decode_cursor(&c).map_err(|e| ApiError::validation(field, e)))
                .transpose()
        };
        Ok(Self {
            limit,
            backward,
            after: decode("after", after)?,
            before: decode("before", before)?,
        })
    }

    fn check_ordering(&self, ordering: &str) -> ApiResult<()> {
        for (field, cursor) in [("after", &self.after), ("before", &self.before)] {
            if let Some(c) = cursor
                && c.ordering != ordering
            {
                return Err(ApiError::validation(
                    field,
                    "cursor belongs to another ordering",
                ));
            }
        }
        Ok(())
    }
}

/// One page of rows and whether more exist on either side.
#[derive(Debug, Clone)]
pub struct Page<M> {
    pub rows: Vec<M>,
    pub has_previous: bool,
    pub has_next: bool,
}

impl<M> Default for Page<M> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            has_previous: false,
            has_next: false,
        }
    }
}

/// A listing of one entity: its filter and ordering. Implementations are
/// small value types so they can key DataLoader batches.
pub trait Listing: Clone + PartialEq + Eq + Hash + Send + Sync + 'static {
    type Entity: Scoped<Model: Sync> + Send + Sync;
    /// Extra predicate (filters); the caller's scope is added separately.
    fn condition(&self) -> Condition;
    fn sort(&self) -> Sort<Self::Entity>;
}

type ModelOf<L> = <<L as Listing>::Entity as EntityTrait>::Model;
type ColumnOf<L> = <<L as Listing>::Entity as EntityTrait>::Column;

fn keyset_condition<E: EntityTrait>(sort: &Sort<E>, req: &PageRequest) -> Condition {
    let mut cond = Condition::all();
    let id = || Expr::col((E::default(), sort.id_col));
    let past = |cursor: &PageCursor, forward: bool| {
        // "forward" means: later in the listing's order.
        let greater = forward != sort.descending;
        let key = cursor.key.to_value();
        let (key_cmp, id_cmp) = if greater {
            (sort.expr.clone().gt(key.clone()), id().gt(cursor.id))
        } else {
            (sort.expr.clone().lt(key.clone()), id().lt(cursor.id))
        };
        Condition::any().add(key_cmp).add(
            Condition::all()
                .add(ExprTrait::eq(sort.expr.clone(), key))
                .add(id_cmp),
        )
    };
    if let Some(c) = &req.after {
        cond = cond.add(past(c, true));
    }
    if let Some(c) = &req.before {
        cond = cond.add(past(c, false));
    }
    cond
}

fn order(sort_desc: bool, backward: bool) -> Order {
    if sort_desc != backward {
        Order::Desc
    } else {
        Order::Asc
    }
}

fn finish_page<M>(mut rows: Vec<M>, req: &PageRequest) -> Page<M> {
    let more = rows.len() > req.limit;
    rows.truncate(req.limit);
    if req.backward {
        rows.reverse();
        Page {
            rows,
            has_previous: more,
            has_next: req.before.is_some(),
        }
    } else {
        Page {
            rows,
            has_previous: req.after.is_some(),
            has_next: more,
        }
    }
}

/// One page of a top-level listing.
pub async fn fetch_page<L: Listing>(
    db: &DatabaseConnection,
    who: &Principal,
    listing: &L,
    req: &PageRequest,
) -> ApiResult<Page<ModelOf<L>>> {
    let sort = listing.sort();
    req.check_ordering(&sort.name)?;
    let dir = order(sort.descending, req.backward);
    let rows = L::Entity::find()
        .filter(who.condition::<L::Entity>())
        .filter(listing.condition())
        .filter(keyset_condition(&sort, req))
        .order_by(sort.expr.clone(), dir.clone())
        .order_by(sort.id_col, dir)
        .limit(req.limit as u64 + 1)
        .all(db)
        .await?;
    Ok(finish_page(rows, req))
}

/// Size of a top-level listing.
pub async fn count<L: Listing>(
    db: &DatabaseConnection,
    who: &Principal,
    listing: &L,
) -> ApiResult<u64> {
    Ok(L::Entity::find()
        .filter(who.condition::<L::Entity>())
        .filter(listing.condition())
        .count(db)
        .await?)
}

/// One page per parent, in one statement.
async fn fetch_child_pages<L: Listing>(
    db: &DatabaseConnection,
    who: &Principal,
    listing: &L,
    parent_col: ColumnOf<L>,
    parents: Vec<i64>,
    req: &PageRequest,
) -> ApiResult<HashMap<i64, Page<ModelOf<L>>>> {
    let sort = listing.sort();
    req.check_ordering(&sort.name)?;
    let dir = order(sort.descending, req.backward);
    let mut window = WindowStatement::partition_by((L::Entity::default(), parent_col));
    window
        .order_by_expr(sort.expr.clone(), dir.clone())
        .order_by_expr(Expr::col((L::Entity::default(), sort.id_col)), dir);
    let mut inner = L::Entity::find()
        .filter(who.condition::<L::Entity>())
        .filter(listing.condition())
        .filter(parent_col.is_in(parents))
        .filter(keyset_condition(&sort, req))
        .into_query();
    inner.expr_window_as(Expr::cust("ROW_NUMBER()"), window, Alias::new("page_rn"));
    let parent_name = Alias::new(sea_orm::IdenStatic::as_str(&parent_col));
    let outer = Query::select()
        .column(Asterisk)
        .from_subquery(inner, Alias::new("paged"))
        .and_where(Expr::col(Alias::new("page_rn")).lte(req.limit as i64 + 1))
        .order_by(parent_name, Order::Asc)
        .order_by(Alias::new("page_rn"), Order::Asc)
        .to_owned();
    let stmt = db.get_database_backend().build(&outer);
    let rows = ModelOf::<L>::find_by_statement(stmt).all(db).await?;

    let mut grouped: HashMap<i64, Vec<ModelOf<L>>> = HashMap::new();
    for row in rows {
        grouped
            .entry(id_value(row.get(parent_col)))
            .or_default()
            .push(row);
    }
    Ok(grouped
        .into_iter()
        .map(|(parent, rows)| (parent, finish_page(rows, req)))
        .collect())
}

fn id_value(v: Value) -> i64 {
    match v {
        Value::BigInt(Some(i)) => i,
        Value::Int(Some(i)) => i.into(),
        _ => 0,
    }
}

/// A nested listing: the children of one parent row.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChildKey<L> {
    pub parent: i64,
    pub listing: L,
    pub request: PageRequest,
}

/// A listing that hangs under a parent column.
pub trait ChildListing: Listing {
    fn parent_col(&self) -> ColumnOf<Self>;
}

impl<L: ChildListing> Loader<ChildKey<L>> for ScopedLoader
where
    ModelOf<L>: Clone + Send + Sync,
{
    type Value = Page<ModelOf<L>>;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[ChildKey<L>],
    ) -> Result<HashMap<ChildKey<L>, Self::Value>, Self::Error> {
        let mut groups: HashMap<(&L, &PageRequest), Vec<i64>> = HashMap::new();
        for key in keys {
            groups
                .entry((&key.listing, &key.request))
                .or_default()
                .push(key.parent);
        }
        let mut out = HashMap::new();
        for ((listing, request), parents) in groups {
            let mut pages = fetch_child_pages(
                &self.db,
                &self.who,
                listing,
                listing.parent_col(),
                parents.clone(),
                request,
            )
            .await
            .map_err(Arc::new)?;
            for parent in parents {
                let key = ChildKey {
                    parent,
                    listing: listing.clone(),
                    request: request.clone(),
                };
                out.insert(key, pages.remove(&parent).unwrap_or_default());
            }
        }
        Ok(out)
    }
}

/// Key of a nested `totalCount`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CountKey<L> {
    pub parent: i64,
    pub listing: L,
}

impl<L: ChildListing> Loader<CountKey<L>> for ScopedLoader {
    type Value = u64;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[CountKey<L>]) -> Result<HashMap<CountKey<L>, u64>, Self::Error> {
        let mut groups: HashMap<&L, Vec<i64>> = HashMap::new();
        for key in keys {
            groups.entry(&key.listing).or_default().push(key.parent);
        }
        let mut out = HashMap::new();
        for (listing, parents) in groups {
            let col = listing.parent_col();
            let counts: Vec<(i64, i64)> = L::Entity::find()
                .filter(self.who.condition::<L::Entity>())
                .filter(listing.condition())
                .filter(col.is_in(parents.clone()))
                .select_only()
                .column(col)
                .column_as(Expr::col(col).count(), "n")
                .group_by(col)
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(|e| Arc::new(ApiError::from(e)))?;
            let counts: HashMap<i64, i64> = counts.into_iter().collect();
            for parent in parents {
                let n = u64::try_from(counts.get(&parent).copied().unwrap_or(0)).unwrap_or(0);
                out.insert(
                    CountKey {
                        parent,
                        listing: listing.clone(),
                    },
                    n,
                );
            }
        }
        Ok(out)
    }
}

/// Where a connection's `totalCount` comes from; counted only when asked.
#[derive(Clone)]
pub enum TotalSource {
    Known(u64),
    Lazy(Arc<dyn CountTotal>),
}

/// A deferred count, resolved with the request's loaders.
#[async_trait::async_trait]
pub trait CountTotal: Send + Sync {
    async fn count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64>;
}

struct RootCount<L>(L);

#[async_trait::async_trait]
impl<L: Listing> CountTotal for RootCount<L> {
    async fn count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let loader = loaders(ctx)?.loader();
        count(&loader.db, &loader.who, &self.0).await.extend()
    }
}

struct ChildCount<L>(CountKey<L>);

#[async_trait::async_trait]
impl<L: ChildListing> CountTotal for ChildCount<L> {
    async fn count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let loader = loaders(ctx)?;
        let n = loader
            .load_one(self.0.clone())
            .await
            .map_err(|e| e.to_graphql())?;
        Ok(n.unwrap_or(0))
    }
}

/// Extra connection fields.
pub struct ConnectionExtra {
    total: TotalSource,
}

impl ConnectionExtra {
    pub fn new(total: TotalSource) -> Self {
        Self { total }
    }
}

#[Object]
impl ConnectionExtra {
    /// Number of items in the whole listing (all pages), with the filters applied.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        match &self.total {
            TotalSource::Known(n) => Ok(*n),
            TotalSource::Lazy(counter) => counter.count(ctx).await,
        }
    }
}

pub type Conn<N> = Connection<PageCursor, N, ConnectionExtra>;

/// Builds the GraphQL connection of a page, wrapping each row as `N`.
pub fn connection<M, N: OutputType>(
    page: Page<M>,
    sort_name: &str,
    key_of: fn(&M) -> SortValue,
    id_of: fn(&M) -> i64,
    total: TotalSource,
    wrap: fn(M) -> N,
) -> Conn<N> {
    let mut conn = Connection::with_additional_fields(
        page.has_previous,
        page.has_next,
        ConnectionExtra { total },
    );
    conn.edges = page
        .rows
        .into_iter()
        .map(|row| {
            let cursor = PageCursor {
                ordering: sort_name.to_owned(),
                key: key_of(&row),
                id: id_of(&row),
            };
            Edge::new(cursor, wrap(row))
        })
        .collect();
    conn
}

/// A top-level connection of listing `L`.
pub async fn root_connection<L: Listing, N: OutputType>(
    ctx: &Context<'_>,
    listing: L,
    req: PageRequest,
    id_of: fn(&ModelOf<L>) -> i64,
    wrap: fn(ModelOf<L>) -> N,
) -> async_graphql::Result<Conn<N>> {
    let loader = loaders(ctx)?.loader();
    let page = fetch_page(&loader.db, &loader.who, &listing, &req)
        .await
        .extend()?;
    let sort = listing.sort();
    Ok(connection(
        page,
        &sort.name,
        sort.key_of,
        id_of,
        TotalSource::Lazy(Arc::new(RootCount(listing))),
        wrap,
    ))
}

/// A nested connection of listing `L` under `parent`, batched per level.
pub async fn child_connection<L: ChildListing, N: OutputType>(
    ctx: &Context<'_>,
    parent: i64,
    listing: L,
    req: PageRequest,
    id_of: fn(&ModelOf<L>) -> i64,
    wrap: fn(ModelOf<L>) -> N,
) -> async_graphql::Result<Conn<N>>
where
    ModelOf<L>: Clone + Send + Sync,
{
    let loader = loaders(ctx)?;
    let sort = listing.sort();
    let key = ChildKey {
        parent,
        listing: listing.clone(),
        request: req,
    };
    let page = loader
        .load_one(key)
        .await
        .map_err(|e| e.to_graphql())?
        .unwrap_or_default();
    Ok(connection(
        page,
        &sort.name,
        sort.key_of,
        id_of,
        TotalSource::Lazy(Arc::new(ChildCount(CountKey { parent, listing }))),
        wrap,
    ))
}
