//! Per-request batching. Every GraphQL request gets a [`ScopedLoader`] (the
//! database and the caller) wrapped in a DataLoader whose batch tasks run
//! inside the request's own task: a batch starts only when the execution
//! has nothing left to poll, so it holds every key its wave of sibling
//! resolvers asked for. The number of statements of a query then depends on
//! its shape, never on the machine's speed or the number of rows (a timer
//! on another thread would split a slow wave into several batches).

use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::DataLoader;
use async_graphql::runtime::Timer;
use async_graphql::{BatchRequest, BatchResponse, Context, Executor};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::{FutureObj, Spawn, SpawnError};
use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;

use crate::auth::Principal;

/// What batch loads need: the database and who is asking.
pub struct ScopedLoader {
    pub db: DatabaseConnection,
    pub who: Principal,
}

/// The request's loaders, as attached to the request data.
pub type Loaders = Arc<DataLoader<ScopedLoader>>;

/// The request's loaders.
pub fn loaders<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a DataLoader<ScopedLoader>> {
    Ok(ctx.data::<Loaders>()?.as_ref())
}

/// Hands batch tasks to the request's driver instead of the runtime.
struct RequestSpawner(mpsc::UnboundedSender<FutureObj<'static, ()>>);

impl Spawn for RequestSpawner {
    fn spawn_obj(&self, future: FutureObj<'static, ()>) -> Result<(), SpawnError> {
        self.0.send(future).map_err(|_| SpawnError::shutdown())
    }
}

/// No wall-clock wait: the driver polls a batch only once the execution is
/// pending, which is the moment every key of the wave is in.
struct NextWave;

impl Timer for NextWave {
    fn delay(&self, _: Duration) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Executes `batch` as `who`, with loaders driven in this task.
pub async fn execute<E: Executor>(
    executor: &E,
    db: &DatabaseConnection,
    who: Principal,
    batch: BatchRequest,
) -> BatchResponse {
    let (tx, mut spawned) = mpsc::unbounded_channel();
    let loader = DataLoader::new(
        ScopedLoader {
            db: db.clone(),
            who: who.clone(),
        },
        RequestSpawner(tx),
        NextWave,
    )
    .max_batch_size(5_000);
    let batch = batch.data(who).data(Arc::new(loader));
    let execution = executor.execute_batch(batch);
    tokio::pin!(execution);
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            response = &mut execution => return response,
            Some(task) = spawned.recv() => running.push(task),
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
}
