//! Committed-sample events, fanned out to live subscribers. The writer
//! publishes every batch it commits; each replica delivers to its own
//! subscribers through a bounded broadcast channel. With `REDIS_URL` set,
//! batches go through Redis pub/sub so a sample ingested on one replica
//! reaches subscribers on every replica; without it, delivery is in-process.

use std::sync::Arc;
use std::time::Duration;

use entities::battery_sample;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

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

#[derive(Clone)]
pub struct Bus {
    local: broadcast::Sender<Arc<SampleEvent>>,
    redis: Option<(redis::aio::MultiplexedConnection, Arc<str>)>,
}

impl Bus {
    /// In-process delivery only.
    pub fn local(capacity: usize) -> Self {
        let (local, _) = broadcast::channel(capacity.max(16));
        Self { local, redis: None }
    }

    /// Delivery through Redis: publishes there and forwards what Redis sends
    /// (including this replica's own batches) to local subscribers.
    /// `channel` carries JSON arrays of [`SampleEvent`].
    pub async fn redis(url: &str, channel: &str, capacity: usize) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
        let publisher = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))?;
        let bus = Self {
            redis: Some((publisher, Arc::from(channel))),
            ..Self::local(capacity)
        };
        // Subscribe before returning, so nothing published afterwards is missed.
        let pubsub = subscribe(&client, channel).await?;
        tokio::spawn(forward(
            client,
            channel.to_owned(),
            pubsub,
            bus.local.clone(),
        ));
        Ok(bus)
    }

    /// Publishes a committed batch.
    pub async fn publish(&self, events: Vec<SampleEvent>) {
        if events.is_empty() {
            return;
        }
        if let Some((conn, channel)) = &self.redis {
            let payload = match serde_json::to_string(&events) {
                Ok(p) => p,
                Err(err) => return tracing::error!(%err, "cannot encode sample events"),
            };
            let mut conn = conn.clone();
            match redis::cmd("PUBLISH")
                .arg(channel.as_ref())
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
            {
                Ok(_) => return,
                // Stored samples stay stored; local subscribers still hear of them.
                Err(err) => {
                    tracing::warn!(%err, "Redis publish failed; delivering on this replica only")
                }
            }
        }
        self.deliver(events);
    }

    fn deliver(&self, events: Vec<SampleEvent>) {
        for e in events {
            // No receiver is not an error.
            let _ = self.local.send(Arc::new(e));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<SampleEvent>> {
        self.local.subscribe()
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> anyhow::Result<redis::aio::PubSub> {
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

/// Forwards Redis messages to local subscribers, reconnecting with backoff.
async fn forward(
    client: redis::Client,
    channel: String,
    mut pubsub: redis::aio::PubSub,
    local: broadcast::Sender<Arc<SampleEvent>>,
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
                match serde_json::from_str::<Vec<SampleEvent>>(&payload) {
                    Ok(events) => {
                        for e in events {
                            let _ = local.send(Arc::new(e));
                        }
                    }
                    Err(err) => tracing::warn!(%err, "malformed sample events on Redis"),
                }
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
