//! `liveMetrics`: committed samples of a scope as they arrive.
//!
//! - Scope: one battery, BMS, zone, site or client (or everything the caller
//!   may see), checked against the caller's scope first.
//! - Resume without gaps: with `since`, the subscription listens to the bus
//!   first, then replays stored samples newer than `since`, then continues
//!   live, skipping live events it already replayed.
//! - `minIntervalMs`: at most one event per battery per interval, carrying
//!   the latest value.
//! - A slow subscriber never slows ingestion or others: its queue on the bus
//!   is bounded; when full, events for it are dropped and the next one it
//!   gets says how many it `missed`. The subscription is a stream pulled by
//!   its connection, with no task or queue of its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{
    Context, ErrorExtensions, ID, InputObject, Object, Result, ResultExt, Subscription,
};
use chrono::{DateTime, Utc};
use entities::{battery, battery_sample, bms, client, site, zone};
use futures_util::Stream;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::time::Instant;

use super::graphql::Sample;
use crate::auth::Principal;
use crate::bus::{Accepts, Bus, Owner, RouteKey, SampleEvent, Subscription};
use crate::config::LiveConfig;
use crate::error::ApiError;
use crate::hierarchy::HierarchyService;
use crate::hierarchy::service::find_scoped;
use crate::ids::{self, Kind};

/// Which part of the fleet to watch: at most one of the ids (none: all of
/// the fleet you may see).
#[derive(InputObject, Clone, Default)]
pub struct LiveScope {
    pub battery_id: Option<ID>,
    pub bms_id: Option<ID>,
    pub zone_id: Option<ID>,
    pub site_id: Option<ID>,
    pub client_id: Option<ID>,
}

impl LiveScope {
    /// The scope of one fleet object.
    pub fn of(kind: Kind, id: i64) -> Self {
        let gid = Some(ids::encode(kind, id));
        let mut s = Self::default();
        match kind {
            Kind::Battery => s.battery_id = gid,
            Kind::Bms => s.bms_id = gid,
            Kind::Zone => s.zone_id = gid,
            Kind::Site => s.site_id = gid,
            Kind::Client => s.client_id = gid,
        }
        s
    }
}

// Global ids are encoded when asked for: a dashboard selecting only
// values spent a tenth of its events' time encoding ids it never read.
#[derive(Clone)]
pub struct LiveSample {
    owner: Owner,
    battery: i64,
    sample: Sample,
    replayed: bool,
    missed: u64,
}

/// A committed sample of a battery in the scope.
#[Object]
impl LiveSample {
    async fn battery_id(&self) -> ID {
        ids::encode(Kind::Battery, self.battery)
    }

    async fn bms_id(&self) -> ID {
        ids::encode(Kind::Bms, self.owner.bms_id)
    }

    async fn site_id(&self) -> ID {
        ids::encode(Kind::Site, self.owner.site_id)
    }

    async fn sample(&self) -> &Sample {
        &self.sample
    }

    /// True while replaying stored samples after `since`.
    async fn replayed(&self) -> bool {
        self.replayed
    }

    /// Events dropped for this subscriber, because it read too slowly,
    /// since the previous event it received.
    async fn missed(&self) -> u64 {
        self.missed
    }
}

/// The scope as a predicate on events.
#[derive(Clone)]
pub(crate) struct Filter {
    who: Principal,
    level: Option<(Kind, i64)>,
}

impl Filter {
    /// The caller's view of `scope`, after checking it exists for them.
    pub(crate) async fn new(
        db: &DatabaseConnection,
        who: Principal,
        scope: LiveScope,
    ) -> Result<Self> {
        let level = resolve_scope(db, &who, scope).await?;
        Ok(Self { who, level })
    }

    /// A scope resolved and checked earlier (a schedule's stored scope).
    pub(crate) fn at(who: Principal, level: Option<(Kind, i64)>) -> Self {
        Self { who, level }
    }

    /// The batteries of the scope that the caller may see.
    pub(crate) fn batteries(&self) -> sea_orm::Select<battery::Entity> {
        let q = battery::Entity::find().filter(self.who.condition::<battery::Entity>());
        match self.level {
            None => q,
            Some((Kind::Battery, id)) => q.filter(battery::Column::Id.eq(id)),
            Some((Kind::Bms, id)) => q.filter(battery::Column::BmsId.eq(id)),
            Some((Kind::Zone, id)) => q.filter(battery::Column::ZoneId.eq(id)),
            Some((Kind::Site, id)) => q.filter(battery::Column::SiteId.eq(id)),
            Some((Kind::Client, id)) => q.filter(battery::Column::ClientId.eq(id)),
        }
    }

    /// `tenant`, or the level and global id of the scope (`site:U2l0ZTox`).
    pub(crate) fn describe(&self) -> String {
        ids::describe_level(self.level)
    }

    /// The object the scope names, if any.
    pub(crate) fn level_id(&self) -> Option<(Kind, i64)> {
        self.level
    }

    pub(crate) fn level(&self) -> Option<Kind> {
        self.level.map(|(k, _)| k)
    }

    /// The bus index this scope is registered under.
    fn route_key(&self) -> RouteKey {
        match self.level {
            None => RouteKey::Tenant(self.who.tenant_id),
            Some((Kind::Battery, id)) => RouteKey::Battery(id),
            Some((Kind::Bms, id)) => RouteKey::Bms(id),
            Some((Kind::Zone, id)) => RouteKey::Zone(id),
            Some((Kind::Site, id)) => RouteKey::Site(id),
            Some((Kind::Client, id)) => RouteKey::Client(id),
        }
    }

    /// Whether a battery at `o` is in the scope and visible to the caller.
    pub(crate) fn accepts(&self, o: &Owner, battery_id: i64) -> bool {
        if !self.who.sees(o) {
            return false;
        }
        match self.level {
            None => true,
            Some((Kind::Battery, id)) => battery_id == id,
            Some((Kind::Bms, id)) => o.bms_id == id,
            Some((Kind::Zone, id)) => o.zone_id == id,
            Some((Kind::Site, id)) => o.site_id == id,
            Some((Kind::Client, id)) => o.client_id == id,
        }
    }
}

async fn resolve_scope(
    db: &DatabaseConnection,
    who: &Principal,
    scope: LiveScope,
) -> Result<Option<(Kind, i64)>> {
    let given: Vec<(Kind, ID)> = [
        (Kind::Battery, scope.battery_id),
        (Kind::Bms, scope.bms_id),
        (Kind::Zone, scope.zone_id),
        (Kind::Site, scope.site_id),
        (Kind::Client, scope.client_id),
    ]
    .into_iter()
    .filter_map(|(k, id)| id.map(|id| (k, id)))
    .collect();
    if given.len() > 1 {
        return Err(ApiError::validation(
            "scope",
            "give at most one of batteryId, bmsId, zoneId, siteId, clientId",
        )
        .extend());
    }
    let Some((kind, gid)) = given.into_iter().next() else {
        return Ok(None);
    };
    let id = ids::decode(kind, &gid).extend()?;
    match kind {
        Kind::Battery => find_scoped::<battery::Entity>(db, who, id, kind)
            .await
            .map(|_| ()),
        Kind::Bms => find_scoped::<bms::Entity>(db, who, id, kind)
            .await
            .map(|_| ()),
        Kind::Zone => find_scoped::<zone::Entity>(db, who, id, kind)
            .await
            .map(|_| ()),
        Kind::Site => find_scoped::<site::Entity>(db, who, id, kind)
            .await
            .map(|_| ()),
        Kind::Client => find_scoped::<client::Entity>(db, who, id, kind)
            .await
            .map(|_| ()),
    }
    .extend()?;
    Ok(Some((kind, id)))
}

fn event_of(
    owner: Owner,
    sample: battery_sample::Model,
    replayed: bool,
    missed: u64,
) -> LiveSample {
    LiveSample {
        owner,
        battery: sample.battery_id,
        sample: Sample::from(sample),
        replayed,
        missed,
    }
}

/// Stored samples of the scope newer than `since`, oldest first.
async fn replay(
    db: &DatabaseConnection,
    filter: &Filter,
    since: DateTime<Utc>,
    max: usize,
) -> Result<Vec<(Owner, battery_sample::Model)>, ApiError> {
    let owners: HashMap<i64, Owner> = filter
        .batteries()
        .all(db)
        .await?
        .into_iter()
        .map(|b| {
            let owner = Owner {
                tenant_id: b.tenant_id,
                client_id: b.client_id,
                site_id: b.site_id,
                zone_id: b.zone_id,
                bms_id: b.bms_id,
            };
            (b.id, owner)
        })
        .collect();
    let mut out = Vec::new();
    for chunk in owners.keys().copied().collect::<Vec<_>>().chunks(1000) {
        let rows = battery_sample::Entity::find()
            .filter(battery_sample::Column::BatteryId.is_in(chunk.iter().copied()))
            .filter(battery_sample::Column::Ts.gt(since))
            .order_by_asc(battery_sample::Column::Ts)
            .limit(max as u64)
            .all(db)
            .await?;
        out.extend(
            rows.into_iter()
                .filter_map(|s| owners.get(&s.battery_id).map(|o| (*o, s))),
        );
    }
    out.sort_by_key(|(_, s)| s.ts);
    out.truncate(max);
    Ok(out)
}

/// `minIntervalMs`: when each battery was last sent, and its newest event
/// held back since.
struct Throttle {
    interval: Duration,
    last_sent: HashMap<i64, Instant>,
    pending: HashMap<i64, Arc<SampleEvent>>,
    tick: tokio::time::Interval,
    /// Held-back events whose interval has passed, to send next.
    due: VecDeque<Arc<SampleEvent>>,
}

impl Throttle {
    fn new(interval: Duration) -> Self {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            interval,
            last_sent: HashMap::new(),
            pending: HashMap::new(),
            tick,
            due: VecDeque::new(),
        }
    }

    /// Whether `event` may go now; if not, it replaces the battery's held one.
    fn admit(&mut self, event: Arc<SampleEvent>) -> Option<Arc<SampleEvent>> {
        let battery = event.sample.battery_id;
        let now = Instant::now();
        if self
            .last_sent
            .get(&battery)
            .is_some_and(|t| now.duration_since(*t) < self.interval)
        {
            self.pending.insert(battery, event);
            return None;
        }
        self.last_sent.insert(battery, now);
        Some(event)
    }

    /// Moves held-back events whose interval has passed to `due`.
    fn release(&mut self) {
        let now = Instant::now();
        let ready: Vec<i64> = self
            .pending
            .keys()
            .copied()
            .filter(|b| {
                self.last_sent
                    .get(b)
                    .is_none_or(|t| now.duration_since(*t) >= self.interval)
            })
            .collect();
        for battery in ready {
            if let Some(event) = self.pending.remove(&battery) {
                self.last_sent.insert(battery, now);
                self.due.push_back(event);
            }
        }
    }
}

/// One `liveMetrics` subscriber, pulled by its connection: first the
/// stored samples after `since`, then committed ones from its bus queue.
/// Nothing runs between pulls, and the bus queue is the only buffer: when
/// the reader is slow, the bus drops events for it alone and counts them.
/// What only a resuming or throttled subscriber needs is boxed, so that an
/// idle subscription holds little more than its queue.
struct Live {
    sub: Subscription,
    /// Shared with the subscription's route on the bus.
    filter: Arc<Filter>,
    /// Until the replay after `since` has been read and its live copies skipped.
    resume: Option<Box<Resume>>,
    throttle: Option<Box<Throttle>>,
    /// Events dropped by the bus since the last one yielded.
    missed: u64,
}

/// The replay of a subscriber resuming with `since`.
struct Resume {
    db: DatabaseConnection,
    /// Set until the replay has been read.
    since: Option<DateTime<Utc>>,
    max_replay: usize,
    backlog: VecDeque<(Owner, battery_sample::Model)>,
    /// Replayed keys, so their live copies are skipped.
    replayed: HashSet<(i64, DateTime<Utc>)>,
}

impl Resume {
    /// The next replayed sample; reads the replay first if not yet read.
    async fn next(&mut self, filter: &Filter) -> Option<(Owner, battery_sample::Model)> {
        if let Some(since) = self.since.take() {
            // Boxed: the replay's state is large and needed once.
            match Box::pin(replay(&self.db, filter, since, self.max_replay)).await {
                Ok(rows) => {
                    self.replayed = rows.iter().map(|(_, s)| (s.battery_id, s.ts)).collect();
                    self.backlog = rows.into();
                }
                Err(err) => tracing::warn!(%err, "live replay failed"),
            }
        }
        self.backlog.pop_front()
    }
}

impl Live {
    fn live(&mut self, event: &SampleEvent) -> LiveSample {
        let missed = std::mem::take(&mut self.missed);
        event_of(event.owner, event.sample.clone(), false, missed)
    }

    /// Whether `event` is the live copy of a replayed sample (then skipped).
    fn was_replayed(&mut self, event: &SampleEvent) -> bool {
        let Some(resume) = self.resume.as_mut() else {
            return false;
        };
        let seen = resume
            .replayed
            .remove(&(event.sample.battery_id, event.sample.ts));
        self.end_resume_when_done();
        seen
    }

    /// Drops the resume state once the replay is read and every replayed
    /// key's live copy was skipped.
    fn end_resume_when_done(&mut self) {
        if self
            .resume
            .as_ref()
            .is_some_and(|r| r.since.is_none() && r.backlog.is_empty() && r.replayed.is_empty())
        {
            self.resume = None;
        }
    }

    async fn next(&mut self) -> Option<LiveSample> {
        if let Some(resume) = self.resume.as_mut() {
            if let Some((owner, s)) = resume.next(&self.filter).await {
                return Some(event_of(owner, s, true, 0));
            }
            self.end_resume_when_done();
        }
        loop {
            if let Some(event) = self.throttle.as_mut().and_then(|t| t.due.pop_front()) {
                return Some(self.live(&event));
            }
            let tick = async {
                match self.throttle.as_mut() {
                    Some(t) => {
                        t.tick.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.sub.events.recv_async() => {
                    let (event, missed) = received.ok()?;
                    self.missed += missed;
                    if !self.filter.accepts(&event.owner, event.sample.battery_id)
                        || self.was_replayed(&event)
                    {
                        continue;
                    }
                    let admitted = match self.throttle.as_mut() {
                        Some(t) => t.admit(event),
                        None => Some(event),
                    };
                    if let Some(event) = admitted {
                        return Some(self.live(&event));
                    }
                }
                () = tick => {
                    if let Some(t) = self.throttle.as_mut() {
                        t.release();
                    }
                }
            }
        }
    }
}

#[derive(Default)]
pub struct TelemetrySubscription;

#[Subscription]
impl TelemetrySubscription {
    /// Every sample committed in the scope, as it is committed. With
    /// `since`, stored samples newer than it come first (`replayed: true`),
    /// then live ones, without gaps or repeats. `minIntervalMs` limits each
    /// battery to one event per interval (the latest value).
    async fn live_metrics(
        &self,
        ctx: &Context<'_>,
        scope: Option<LiveScope>,
        min_interval_ms: Option<i32>,
        since: Option<DateTime<Utc>>,
    ) -> Result<impl Stream<Item = LiveSample> + use<>> {
        Box::pin(open(ctx, scope, min_interval_ms, since)).await
    }
}

/// Opens a `liveMetrics` stream. Boxed by its caller, and so freed once
/// open: async-graphql keeps the space of the future that opened a
/// subscription inline beside its stream for as long as the stream lives,
/// and this one's (the scope check's queries) took most of an idle
/// subscription's memory.
async fn open(
    ctx: &Context<'_>,
    scope: Option<LiveScope>,
    min_interval_ms: Option<i32>,
    since: Option<DateTime<Utc>>,
) -> Result<impl Stream<Item = LiveSample> + use<>> {
    let who = ctx.data::<Principal>()?.clone();
    let db = ctx.data::<HierarchyService>()?.db().clone();
    let bus = ctx.data::<Bus>()?;
    let config = ctx.data::<LiveConfig>()?.clone();
    let min_interval = match min_interval_ms {
        None | Some(0) => None,
        Some(ms) if (1..=3_600_000).contains(&ms) => Some(Duration::from_millis(ms as u64)),
        Some(_) => {
            return Err(
                ApiError::validation("minIntervalMs", "must be between 0 and 3600000").extend(),
            );
        }
    };
    let filter = Arc::new(Filter::new(&db, who, scope.unwrap_or_default()).await?);
    // Listen before replaying, so nothing committed in between is lost.
    let accepts: Accepts = {
        let filter = filter.clone();
        Arc::new(move |owner, battery| filter.accepts(owner, battery))
    };
    let sub = bus.subscribe(filter.route_key(), config.subscriber_queue, accepts);
    let live = Live {
        sub,
        filter,
        resume: since.map(|since| {
            Box::new(Resume {
                db,
                since: Some(since),
                max_replay: config.max_replay,
                backlog: VecDeque::new(),
                replayed: HashSet::new(),
            })
        }),
        throttle: min_interval.map(|i| Box::new(Throttle::new(i))),
        missed: 0,
    };
    Ok(futures_util::stream::unfold(live, |mut live| async move {
        live.next().await.map(|e| (e, live))
    }))
}
