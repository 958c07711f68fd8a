//! Request rate limits per user / API key, and sign-in attempt limits per
//! source address. In process (GCRA, `governor`) on the embedded default;
//! with Redis, a fixed one-minute window counted in Redis so that every
//! replica shares the budget. If Redis is unreachable the limiter lets
//! requests through (and logs it): a limiter outage must not become an API
//! outage.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::{ApiError, ApiResult};

/// One budget (`per_minute` events per key).
#[derive(Clone)]
pub struct RateLimiter {
    per_minute: u32,
    name: &'static str,
    prefix: String,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Off,
    Local(Arc<DefaultKeyedRateLimiter<String>>),
    Redis(redis::aio::ConnectionManager),
}

impl RateLimiter {
    /// A limiter named `name` (part of the Redis key, after `prefix`); a
    /// budget of 0 turns it off.
    pub async fn new(
        name: &'static str,
        per_minute: u32,
        redis_url: Option<&str>,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        let backend = match (NonZeroU32::new(per_minute), redis_url) {
            (None, _) => Backend::Off,
            (Some(_), Some(url)) => {
                let client = redis::Client::open(url)?;
                Backend::Redis(redis::aio::ConnectionManager::new(client).await?)
            }
            (Some(n), None) => Backend::Local(Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_minute(n),
            ))),
        };
        Ok(Self {
            per_minute,
            name,
            prefix: prefix.to_owned(),
            backend,
        })
    }

    /// Counts one event for `key`; `RATE_LIMITED` (with the wait) when over.
    pub async fn check(&self, key: &str) -> ApiResult<()> {
        match &self.backend {
            Backend::Off => Ok(()),
            Backend::Local(limiter) => limiter.check_key(&key.to_owned()).map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                ApiError::RateLimited {
                    retry_after_secs: wait.as_secs().max(1),
                }
            }),
            Backend::Redis(conn) => {
                let now = chrono::Utc::now().timestamp();
                let window = now / 60;
                let redis_key = format!("{}:{}:{key}:{window}", self.prefix, self.name);
                let mut conn = conn.clone();
                let counted: Result<(u64,), _> = redis::pipe()
                    .atomic()
                    .incr(&redis_key, 1)
                    .expire(&redis_key, 120)
                    .ignore()
                    .query_async(&mut conn)
                    .await;
                match counted {
                    Ok((n,)) if n > u64::from(self.per_minute) => Err(ApiError::RateLimited {
                        retry_after_secs: u64::try_from(60 - now % 60).unwrap_or(60).max(1),
                    }),
                    Ok(_) => Ok(()),
                    Err(err) => {
                        tracing::warn!(%err, limiter = self.name, "rate limiter unavailable; letting the request through");
                        Ok(())
                    }
                }
            }
        }
    }
}
