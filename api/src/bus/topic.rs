//! A broadcast topic for events other than samples (predictions): every
//! replica's subscribers receive every event, through Redis pub/sub when
//! `REDIS_URL` is set, else in process. Subscribers filter what they want;
//! a slow one lags and is told how many it missed.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

pub struct Topic<T> {
    local: broadcast::Sender<Arc<T>>,
    redis: Option<(redis::aio::MultiplexedConnection, Arc<str>)>,
    _kind: PhantomData<T>,
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        Self {
            local: self.local.clone(),
            redis: self.redis.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Topic<T> {
    /// In process only; `capacity` events are kept for slow subscribers.
    pub fn local(capacity: usize) -> Self {
        Self {
            local: broadcast::channel(capacity.max(1)).0,
            redis: None,
            _kind: PhantomData,
        }
    }

    /// Through Redis `channel` (subscribed before this returns).
    pub async fn redis(url: &str, channel: &str, capacity: usize) -> anyhow::Result<Self> {
        let (client, publisher) = super::connect(url).await?;
        let topic = Self {
            redis: Some((publisher, Arc::from(channel))),
            ..Self::local(capacity)
        };
        let pubsub = super::subscribe(&client, channel).await?;
        let local = topic.local.clone();
        tokio::spawn(super::forward(
            client,
            channel.to_owned(),
            pubsub,
            move |payload| match serde_json::from_str::<T>(payload) {
                Ok(event) => {
                    let _ = local.send(Arc::new(event));
                }
                Err(err) => tracing::warn!(%err, "malformed event on Redis"),
            },
        ));
        Ok(topic)
    }

    /// Sends `event` to every replica's subscribers.
    pub async fn publish(&self, event: T) {
        if let Some((conn, channel)) = &self.redis {
            match serde_json::to_string(&event) {
                Ok(payload) => {
                    if super::publish_raw(conn, channel, payload).await {
                        return;
                    }
                }
                Err(err) => tracing::error!(%err, "cannot encode an event"),
            }
        }
        let _ = self.local.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<T>> {
        self.local.subscribe()
    }
}
