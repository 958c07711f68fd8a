//! Live subscriptions: scope filtering, gap-free resume, throttling, slow
//! subscribers, and fan-out across two app instances through Redis.

mod common;

use std::time::Duration;

use common::{Backend, TestApp, create_chain};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};

const INGEST: &str =
    "mutation($s: [SampleInput!]!) { ingestSamples(samples: $s) { stored rejectedCount } }";
const LIVE: &str = "subscription($scope: LiveScope, $since: DateTime, $every: Int) {
  liveMetrics(scope: $scope, since: $since, minIntervalMs: $every) { batteryId siteId replayed missed sample { ts socPct } } }";

async fn next(stream: &mut BoxStream<'static, Value>) -> Value {
    let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open");
    assert!(
        item.get("errors")
            .is_none_or(|e| e.as_array().is_none_or(|a| a.is_empty())),
        "{item}"
    );
    item["data"]["liveMetrics"].clone()
}

async fn nothing_within(stream: &mut BoxStream<'static, Value>, ms: u64) {
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(ms), stream.next()).await {
        panic!("unexpected event {item}");
    }
}

async fn ingest(t: &TestApp, serial: &str, ts: &str, soc: f64) {
    let r = t
        .data(
            INGEST,
            json!({ "s": [{ "battery": serial, "ts": ts, "socPct": soc }] }),
        )
        .await;
    assert_eq!(r["ingestSamples"]["stored"], 1, "{r}");
}

async fn scope_filters_and_resume_has_no_gaps(t: TestApp) {
    let a = create_chain(&t, "A").await;
    create_chain(&t, "B").await;
    let mut live = t.subscribe(LIVE, json!({ "scope": { "siteId": a[1] } }));
    // The subscription is registered once the stream is first polled.
    nothing_within(&mut live, 200).await;
    ingest(&t, "SN-B", "2026-05-01T00:00:00Z", 10.0).await;
    ingest(&t, "SN-A", "2026-05-01T00:00:01Z", 11.0).await;
    let e = next(&mut live).await;
    assert_eq!(e["batteryId"], a[4]);
    assert_eq!(e["siteId"], a[1]);
    assert_eq!(e["sample"]["socPct"], 11.0);
    assert_eq!(e["replayed"], false);
    nothing_within(&mut live, 300).await;
    drop(live);

    // A client that saw 00:00:01 reconnects after more samples were stored.
    ingest(&t, "SN-A", "2026-05-01T00:00:02Z", 12.0).await;
    ingest(&t, "SN-A", "2026-05-01T00:00:03Z", 13.0).await;
    let mut resumed = t.subscribe(
        LIVE,
        json!({ "scope": { "batteryId": a[4] }, "since": "2026-05-01T00:00:01Z" }),
    );
    let r1 = next(&mut resumed).await;
    let r2 = next(&mut resumed).await;
    assert_eq!(
        (r1["sample"]["socPct"].clone(), r1["replayed"].clone()),
        (json!(12.0), json!(true))
    );
    assert_eq!(
        (r2["sample"]["socPct"].clone(), r2["replayed"].clone()),
        (json!(13.0), json!(true))
    );
    ingest(&t, "SN-A", "2026-05-01T00:00:04Z", 14.0).await;
    let r3 = next(&mut resumed).await;
    assert_eq!(
        (r3["sample"]["socPct"].clone(), r3["replayed"].clone()),
        (json!(14.0), json!(false))
    );
    nothing_within(&mut resumed, 300).await;

    // A scope outside the tenant's data does not exist.
    let mut bad = t.subscribe(
        LIVE,
        json!({ "scope": { "batteryId": trackingbms_api::ids::encode(trackingbms_api::ids::Kind::Battery, 99_999).0 } }),
    );
    let err = tokio::time::timeout(Duration::from_secs(5), bad.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(err["errors"][0]["extensions"]["code"], "NOT_FOUND", "{err}");
}

async fn throttling_keeps_the_latest_value(t: TestApp) {
    create_chain(&t, "A").await;
    let mut live = t.subscribe(LIVE, json!({ "every": 400 }));
    nothing_within(&mut live, 200).await;
    for k in 0..8 {
        ingest(&t, "SN-A", &format!("2026-05-01T00:00:{k:02}Z"), k as f64).await;
    }
    let first = next(&mut live).await;
    assert_eq!(first["sample"]["socPct"], 0.0);
    // The rest arrived within the interval: one event, with the latest value.
    let second = next(&mut live).await;
    assert_eq!(second["sample"]["socPct"], 7.0, "{second}");
    nothing_within(&mut live, 600).await;
}

on_both_backends!(
    scope_filters_and_resume_has_no_gaps,
    throttling_keeps_the_latest_value
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_told_what_it_missed() {
    let t = TestApp::with_config(Backend::Sqlite, |c| c.live.subscriber_queue = 2).await;
    create_chain(&t, "A").await;
    let mut live = t.subscribe(LIVE, json!({}));
    nothing_within(&mut live, 200).await;
    for k in 0..10 {
        ingest(&t, "SN-A", &format!("2026-05-01T00:00:{k:02}Z"), k as f64).await;
    }
    // Ingestion did not wait for the reader; the reader gets what fitted…
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(next(&mut live).await["sample"]["socPct"], 0.0);
    assert_eq!(next(&mut live).await["sample"]["socPct"], 1.0);
    // …and the next event says how many were dropped in between.
    ingest(&t, "SN-A", "2026-05-01T00:00:30Z", 30.0).await;
    let e = next(&mut live).await;
    assert_eq!(e["sample"]["socPct"], 30.0);
    assert_eq!(e["missed"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_ingested_on_one_replica_reach_subscribers_of_another() {
    let db = common::fresh_pg_url().await;
    let channel = format!("trackingbms:test:{}", rand::random::<u64>());
    let replica = |db: String, channel: String| {
        TestApp::with_config(Backend::Sqlite, move |c| {
            c.database_url = Some(db);
            c.redis_url = Some(trackingbms_api::fixtures::redis_url());
            c.live.redis_channel = channel;
        })
    };
    let a = replica(db.clone(), channel.clone()).await;
    let b = replica(db, channel).await;
    let ids = create_chain(&a, "R").await;
    let mut on_b = b.subscribe(LIVE, json!({ "scope": { "batteryId": ids[4] } }));
    nothing_within(&mut on_b, 300).await;
    ingest(&a, "SN-R", "2026-05-01T00:00:00Z", 42.0).await;
    let e = next(&mut on_b).await;
    assert_eq!(e["sample"]["socPct"], 42.0);
    assert_eq!(e["batteryId"], ids[4]);
    // …and exactly once, though b also hears its own channel.
    nothing_within(&mut on_b, 300).await;
}
