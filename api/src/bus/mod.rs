//! Committed-sample events, fanned out to live subscribers. The writer
//! publishes every batch it commits; each replica routes every event only to
//! the subscriptions whose scope contains it (indexed by battery, BMS, zone,
//! site, client or tenant), each through its own bounded queue — a full
//! queue drops the event for that subscriber alone and counts it as missed.
//! With `REDIS_URL` set, batches go through Redis pub/sub so a sample
//! ingested on one replica reaches subscribers on every replica; without it,
//! delivery is in-process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use entities::battery_sample;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub mod topic;

/// Where a battery sits, so subscriptions can filter by scope without a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub tenant_id: i64,
    pub client_id: i64,
    pub site_id: i64,
    pub zone_id: i64,
    pub bms_id: i64,
}

/// One committed sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleEvent {
    pub owner: Owner,
    pub sample: battery_sample::Model,
}

/// What a subscription is indexed by: the level of its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKey {
    Tenant(i64),
    Client(i64),
    Site(i64),
    Zone(i64),
    Bms(i64),
    Battery(i64),
}

/// Extra check applied to routed events (the caller's client/site scope).
pub type Accepts = Arc<dyn Fn(&Owner, i64) -> bool + Send + Sync>;

/// An event as queued for one subscription, with how many of its events
/// were dropped just before it (the queue was full).
pub type Queued = (Arc<SampleEvent>, u64);

struct Route {
    id: u64,
    tx: flume::Sender<Queued>,
    /// Dropped since the last event queued.
    missed: AtomicU64,
    accepts: Accepts,
}

#[derive(Default)]
struct Routes {
    by_key: RwLock<HashMap<RouteKey, Vec<Route>>>,
    next_id: AtomicU64,
}

impl Routes {
    /// Hands `e` to every subscription whose scope contains it.
    fn deliver(&self, e: SampleEvent) {
        let Ok(by_key) = self.by_key.read() else {
            return;
        };
        let o = e.owner;
        let keys = [
            RouteKey::Battery(e.sample.battery_id),
            RouteKey::Bms(o.bms_id),
            RouteKey::Zone(o.zone_id),
            RouteKey::Site(o.site_id),
            RouteKey::Client(o.client_id),
            RouteKey::Tenant(o.tenant_id),
        ];
        let event = Arc::new(e);
        for key in keys {
            for route in by_key.get(&key).into_iter().flatten() {
                if !(route.accepts)(&o, event.sample.battery_id) {
                    continue;
                }
                let missed = route.missed.swap(0, Ordering::Relaxed);
                if route.tx.try_send((event.clone(), missed)).is_err() {
                    route.missed.fetch_add(missed + 1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A registered subscription; dropping it unregisters it. Its queue is a
/// flume channel: one small allocation until events arrive (a tokio
/// channel allocates its first block of slots up front, about half a
/// kilobyte per idle subscription).
pub struct Subscription {
    pub events: flume::Receiver<Queued>,
    key: RouteKey,
    id: u64,
    routes: Arc<Routes>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut by_key) = self.routes.by_key.write()
            && let Some(list) = by_key.get_mut(&self.key)
        {
            list.retain(|r| r.id != self.id);
            if list.is_empty() {
                by_key.remove(&self.key);
            }
        }
    }
}

#[derive(Clone)]
pub struct Bus {
    routes: Arc<Routes>,
    redis: Option<(redis::aio::MultiplexedConnection, Arc<str>)>,
    /// Told the batteries of every batch this replica commits (predictions
    /// refresh them); full: the periodic refresh catches up.
    committed: Arc<RwLock<Option<mpsc::Sender<Vec<i64>>>>>,
}

impl Bus {
    /// In-process delivery only.
    pub fn local() -> Self {
        Self {
            routes: Arc::default(),
            redis: None,
            committed: Arc::default(),
        }
    }

    /// Delivery through Redis: publishes there and routes what Redis sends
    /// (including this replica's own batches) to local subscribers.
    /// `channel` carries JSON arrays of [`SampleEvent`].
    pub async fn redis(url: &str, channel: &str) -> anyhow::Result<Self> {
        let (client, publisher) = connect(url).await?;
        let bus = Self {
            redis: Some((publisher, Arc::from(channel))),
            ..Self::local()
        };
        // Subscribe before returning, so nothing published afterwards is missed.
        let pubsub = subscribe(&client, channel).await?;
        let routes = bus.routes.clone();
        tokio::spawn(forward(
            client,
            channel.to_owned(),
            pubsub,
            move |payload| match serde_json::from_str::<Vec<SampleEvent>>(payload) {
                Ok(events) => {
                    for e in events {
                        routes.deliver(e);
                    }
                }
                Err(err) => tracing::warn!(%err, "malformed sample events on Redis"),
            },
        ));
        Ok(bus)
    }

    /// Has the batteries of every batch committed on this replica sent to `tx`.
    pub fn on_commit(&self, tx: mpsc::Sender<Vec<i64>>) {
        if let Ok(mut slot) = self.committed.write() {
            *slot = Some(tx);
        }
    }

    /// Publishes a committed batch.
    pub async fn publish(&self, events: Vec<SampleEvent>) {
        if events.is_empty() {
            return;
        }
        if let Ok(slot) = self.committed.read()
            && let Some(tx) = slot.as_ref()
        {
            let _ = tx.try_send(events.iter().map(|e| e.sample.battery_id).collect());
        }
        if let Some((conn, channel)) = &self.redis {
            let payload = match serde_json::to_string(&events) {
                Ok(p) => p,
                Err(err) => return tracing::error!(%err, "cannot encode sample events"),
            };
            // On failure stored samples stay stored; local subscribers still hear of them.
            if publish_raw(conn, channel, payload).await {
                return;
            }
        }
        for e in events {
            self.routes.deliver(e);
        }
    }

    /// Live subscriptions registered on this replica.
    pub fn subscriptions(&self) -> usize {
        self.routes
            .by_key
            .read()
            .map_or(0, |by_key| by_key.values().map(Vec::len).sum())
    }

    /// Registers a subscription for events under `key` that also pass
    /// `accepts`, queued up to `capacity`.
    pub fn subscribe(&self, key: RouteKey, capacity: usize, accepts: Accepts) -> Subscription {
        let (tx, events) = flume::bounded(capacity.max(1));
        let id = self.routes.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut by_key) = self.routes.by_key.write() {
            by_key.entry(key).or_default().push(Route {
                id,
                tx,
                missed: AtomicU64::new(0),
                accepts,
            });
        }
        Subscription {
            events,
            key,
            id,
            routes: self.routes.clone(),
        }
    }
}

/// A Redis client and a connection to publish on.
pub(crate) async fn connect(
    url: &str,
) -> anyhow::Result<(redis::Client, redis::aio::MultiplexedConnection)> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
    let publisher = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))?;
    Ok((client, publisher))
}

/// Publishes `payload` on `channel`; false (logged) when Redis failed, so
/// the caller delivers on this replica instead.
pub(crate) async fn publish_raw(
    conn: &redis::aio::MultiplexedConnection,
    channel: &str,
    payload: String,
) -> bool {
    let mut conn = conn.clone();
    match redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async::<i64>(&mut conn)
        .await
    {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(%err, "Redis publish failed; delivering on this replica only");
            false
        }
    }
}

pub(crate) async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> anyhow::Result<redis::aio::PubSub> {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|e| anyhow::anyhow!("cannot open a Redis pub/sub connection: {e}"))?;
    pubsub
        .subscribe(channel)
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {channel}: {e}"))?;
    Ok(pubsub)
}

/// Hands every Redis message of `channel` to `on_payload`, reconnecting with backoff.
pub(crate) async fn forward(
    client: redis::Client,
    channel: String,
    mut pubsub: redis::aio::PubSub,
    on_payload: impl Fn(&str) + Send + 'static,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                backoff = Duration::from_millis(100);
                let payload: String = match msg.get_payload() {
                    Ok(p) => p,
                    Err(err) => {
                        tracing::warn!(%err, "unreadable Redis message");
                        continue;
                    }
                };
                on_payload(&payload);
            }
        }
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
            match subscribe(&client, &channel).await {
                Ok(p) => {
                    pubsub = p;
                    break;
                }
                Err(err) => tracing::warn!(%err, "Redis still unreachable"),
            }
        }
    }
}
