//! Hourly and daily roll-ups as a dashboard reads them: exact aggregates,
//! corrected by late samples, not inflated by duplicates, chosen
//! automatically for long ranges, and kept when raw samples expire.

mod common;

use common::{TestApp, create_chain};
use serde_json::{Value, json};

on_both_backends!(
    buckets_are_exact_and_late_samples_correct_them,
    auto_resolution_and_retention
);

/// Scenarios that decide when folds run: the periodic fold is off (an
/// hour).
macro_rules! with_periodic_fold_off {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                use super::common::{Backend, TestApp};

                async fn app(backend: Backend) -> TestApp {
                    TestApp::with_config(backend, |c| c.ingest.rollup_fold_ms = 3_600_000).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario(app(Backend::Sqlite).await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$scenario(app(Backend::Postgres).await).await
                }
            }
        )*
    };
}

with_periodic_fold_off!(
    energy_is_integrated_across_writes_and_folds,
    a_fold_in_slices_adds_up_as_one_fold,
    folds_count_each_sample_once,
    backlog_of_an_older_version_is_folded_once,
    unreadable_batches_stop_the_fold_and_stay
);

const INGEST: &str = "mutation($s: [SampleInput!]!) { ingestSamples(samples: $s) { accepted stored rejectedCount } }";

const POINTS: &str = "query($id: ID!, $from: DateTime!, $to: DateTime!, $res: MetricResolution!) {
  batteryMetrics(batteryId: $id, from: $from, to: $to, resolution: $res, first: 100) {
    totalCount edges { node { ts resolution sampleCount voltageV voltageMinV voltageMaxV voltageStddevV
      socPct tempMinC tempMaxC cellVoltageMinV cellVoltageMaxV energyInKwh energyOutKwh underVoltageEvents overTemperatureEvents } } } }";

async fn points(t: &TestApp, id: &str, from: &str, to: &str, res: &str) -> Vec<Value> {
    let d = t
        .data(
            POINTS,
            json!({ "id": id, "from": from, "to": to, "res": res }),
        )
        .await;
    d["batteryMetrics"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() < 1e-6
}

async fn buckets_are_exact_and_late_samples_correct_them(t: TestApp) {
    let ids = create_chain(&t, "A").await; // LFP, 51.2 V nominal: 16 cells, 40 V under-voltage floor
    // 10:00–10:50 every 10 min at 50 V charging 10 A, then 11:00 at 39 V and 60 °C.
    let mut samples: Vec<Value> = (0..6)
        .map(|k| {
            json!({ "battery": "SN-A", "ts": format!("2026-03-01T10:{:02}:00Z", k * 10),
                         "voltageV": 50.0 + k as f64, "currentA": 10.0, "socPct": 50.0 + k as f64,
                         "tempMinC": 20.0, "tempMaxC": 30.0, "tempAvgC": 25.0,
                         "cellVoltageMinV": 3.1 + k as f64 * 0.01, "cellVoltageMaxV": 3.3 + k as f64 * 0.01 })
        })
        .collect();
    samples.push(json!({ "battery": "SN-A", "ts": "2026-03-01T11:00:00Z", "voltageV": 39.0, "currentA": -5.0, "tempAvgC": 60.0 }));
    let r = t.data(INGEST, json!({ "s": samples })).await;
    assert_eq!(r["ingestSamples"]["stored"], 7);

    let hours = points(
        &t,
        &ids[4],
        "2026-03-01T10:00:00Z",
        "2026-03-01T12:00:00Z",
        "HOUR",
    )
    .await;
    assert_eq!(hours.len(), 2);
    let h10 = &hours[0];
    assert_eq!(h10["ts"], "2026-03-01T10:00:00+00:00");
    assert_eq!(h10["resolution"], "HOUR");
    assert_eq!(h10["sampleCount"], 6);
    assert!(close(&h10["voltageV"], 52.5));
    assert_eq!(h10["voltageMinV"], 50.0);
    assert_eq!(h10["voltageMaxV"], 55.0);
    // Population standard deviation of 50..55.
    assert!(
        close(&h10["voltageStddevV"], (17.5f64 / 6.0).sqrt()),
        "{h10}"
    );
    assert_eq!(h10["tempMinC"], 20.0);
    assert_eq!(h10["tempMaxC"], 30.0);
    // Five 10-minute intervals charging at (51..55 V) × 10 A.
    let expected_in: f64 = (51..=55).map(|v| v as f64 * 10.0 * 600.0 / 3.6e6).sum();
    assert!(close(&h10["energyInKwh"], expected_in), "{h10}");
    assert_eq!(h10["underVoltageEvents"], 0);
    assert!(close(&h10["cellVoltageMinV"], 3.1), "{h10}");
    assert!(close(&h10["cellVoltageMaxV"], 3.35), "{h10}");
    let h11 = &hours[1];
    assert_eq!(
        h11["cellVoltageMinV"],
        Value::Null,
        "no cell reported in that hour"
    );
    assert_eq!(h11["underVoltageEvents"], 1);
    assert_eq!(h11["overTemperatureEvents"], 1);
    // 39 V × -5 A over the 10 minutes since 10:50.
    assert!(
        close(&h11["energyOutKwh"], 39.0 * 5.0 * 600.0 / 3.6e6),
        "{h11}"
    );

    // A late sample lands in its own bucket and corrects it; resending changes nothing.
    // Its weak cell (2.4 V, under LFP's 2.5 V) counts as an under-voltage event.
    let late = json!([{ "battery": "SN-A", "ts": "2026-03-01T10:05:00Z", "voltageV": 45.0, "tempMinC": 15.0,
                        "cellVoltageMinV": 2.4, "cellVoltageMaxV": 3.5 }]);
    assert_eq!(
        t.data(INGEST, json!({ "s": late.clone() })).await["ingestSamples"]["stored"],
        1
    );
    assert_eq!(
        t.data(INGEST, json!({ "s": late })).await["ingestSamples"]["stored"],
        0
    );
    let hours = points(
        &t,
        &ids[4],
        "2026-03-01T10:00:00Z",
        "2026-03-01T12:00:00Z",
        "HOUR",
    )
    .await;
    assert_eq!(hours[0]["sampleCount"], 7);
    assert_eq!(hours[0]["voltageMinV"], 45.0);
    assert_eq!(hours[0]["tempMinC"], 15.0);
    assert_eq!(hours[0]["cellVoltageMinV"], 2.4);
    assert_eq!(hours[0]["cellVoltageMaxV"], 3.5);
    assert_eq!(hours[0]["underVoltageEvents"], 1);
    assert!(close(&hours[0]["voltageV"], (315.0 + 45.0) / 7.0));

    let days = points(
        &t,
        &ids[4],
        "2026-03-01T00:00:00Z",
        "2026-03-02T00:00:00Z",
        "DAY",
    )
    .await;
    assert_eq!(days.len(), 1);
    assert_eq!(days[0]["sampleCount"], 8);
    assert_eq!(days[0]["voltageMinV"], 39.0);

    // RAW gives the samples themselves.
    let raw = points(
        &t,
        &ids[4],
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:30:00Z",
        "RAW",
    )
    .await;
    assert_eq!(raw.len(), 4);
    assert_eq!(raw[1]["ts"], "2026-03-01T10:05:00+00:00");
    assert_eq!(raw[1]["sampleCount"], 1);
    assert_eq!(raw[1]["cellVoltageMinV"], 2.4);
    assert!(close(&raw[0]["cellVoltageMaxV"], 3.3));
}

async fn auto_resolution_and_retention(t: TestApp) {
    let ids = create_chain(&t, "A").await;
    let now = chrono::Utc::now();
    // One sample every 6 hours for the last 120 days.
    let samples: Vec<Value> = (0..480)
        .map(|k| json!({ "battery": "SN-A", "ts": (now - chrono::Duration::hours(6 * k)).to_rfc3339(), "socPct": 50.0 }))
        .collect();
    assert_eq!(
        t.data(INGEST, json!({ "s": samples })).await["ingestSamples"]["stored"],
        480
    );

    let range = |days: i64| {
        let to = now + chrono::Duration::minutes(1);
        (
            (to - chrono::Duration::days(days)).to_rfc3339(),
            to.to_rfc3339(),
        )
    };
    let (from, to) = range(1);
    let p = points(&t, &ids[4], &from, &to, "AUTO").await;
    assert_eq!(p[0]["resolution"], "RAW");
    let (from, to) = range(30);
    let p = points(&t, &ids[4], &from, &to, "AUTO").await;
    assert_eq!(p[0]["resolution"], "HOUR");
    let (from, to) = range(365);
    let d = t
        .data(
            POINTS,
            json!({ "id": ids[4], "from": from, "to": to, "res": "AUTO" }),
        )
        .await;
    let conn = &d["batteryMetrics"];
    assert_eq!(conn["edges"][0]["node"]["resolution"], "DAY");
    let days = conn["totalCount"].as_u64().unwrap();
    assert!((120..=121).contains(&days), "{days} daily buckets");

    // Retention deletes raw samples older than 90 days; roll-ups stay.
    let deleted = trackingbms_api::telemetry::retention::purge_once(&t.app.db, 90)
        .await
        .unwrap();
    assert!((116..=124).contains(&deleted), "deleted {deleted}");
    let (from, to) = range(365);
    let raw = t
        .data(
            "query($id: ID!, $from: DateTime!, $to: DateTime!) { batteryMetrics(batteryId: $id, from: $from, to: $to, resolution: RAW, first: 0) { totalCount } }",
            json!({ "id": ids[4], "from": from, "to": to }),
        )
        .await;
    assert_eq!(
        raw["batteryMetrics"]["totalCount"].as_u64().unwrap(),
        480 - deleted
    );
    let d = t
        .data(
            POINTS,
            json!({ "id": ids[4], "from": from, "to": to, "res": "DAY" }),
        )
        .await;
    assert_eq!(
        d["batteryMetrics"]["totalCount"].as_u64().unwrap(),
        days,
        "roll-ups are kept"
    );
}

/// Writes append partial buckets that folds add to the roll-ups. With
/// writes and folds running at once (the periodic fold, readers' folds,
/// other replicas'), each stored sample is counted once; a battery deleted
/// while its partial buckets wait does not hold up the others'.
async fn folds_count_each_sample_once(t: TestApp) {
    let a = create_chain(&t, "A").await;
    let b = create_chain(&t, "B").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let folders: Vec<_> = (0..2)
        .map(|_| {
            let db = t.app.db.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    trackingbms_api::telemetry::fold::fold(&db).await.unwrap();
                }
            })
        })
        .collect();
    // 12 writes of 10 samples per battery, two a minute, at 40 V + minute / 4.
    let writes =
        (0..12).map(|w| {
            let samples: Vec<Value> = (0..10)
                .flat_map(|k| {
                    let minute = w * 5 + k / 2;
                    let ts = format!("2026-03-01T10:{minute:02}:{:02}Z", (k % 2) * 30);
                    ["SN-A", "SN-B"].map(|serial| {
                    json!({ "battery": serial, "ts": ts, "voltageV": 40.0 + minute as f64 / 4.0 })
                })
                })
                .collect();
            let t = &t;
            async move {
                t.data(INGEST, json!({ "s": samples })).await["ingestSamples"]["stored"].clone()
            }
        });
    let stored = futures_util::future::join_all(writes).await;
    assert!(stored.iter().all(|s| *s == 20), "{stored:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in folders {
        f.await.unwrap();
    }

    // More samples of B, then B is deleted before they are folded.
    let late_b = json!([{ "battery": "SN-B", "ts": "2026-03-01T11:00:00Z", "voltageV": 50.0 }]);
    assert_eq!(
        t.data(INGEST, json!({ "s": late_b })).await["ingestSamples"]["stored"],
        1
    );
    t.data(
        "mutation($id: ID!) { deleteBattery(id: $id) }",
        json!({ "id": b[4] }),
    )
    .await;

    let hours = points(
        &t,
        &a[4],
        "2026-03-01T10:00:00Z",
        "2026-03-01T12:00:00Z",
        "HOUR",
    )
    .await;
    assert_eq!(hours.len(), 1, "{hours:?}");
    assert_eq!(hours[0]["sampleCount"], 120);
    // Two samples at each minute 0..59.
    assert!(
        close(&hours[0]["voltageV"], 40.0 + 29.5 / 4.0),
        "{}",
        hours[0]
    );
    assert_eq!(hours[0]["voltageMinV"], 40.0);
    assert_eq!(hours[0]["voltageMaxV"], 54.75);
    let days = points(
        &t,
        &a[4],
        "2026-03-01T00:00:00Z",
        "2026-03-02T00:00:00Z",
        "DAY",
    )
    .await;
    assert_eq!(days[0]["sampleCount"], 120);
    // The read folded everything, B's partial buckets included (dropped).
    assert_eq!(
        trackingbms_api::telemetry::fold::fold(&t.app.db)
            .await
            .unwrap(),
        0
    );
}

/// Versions before migration 14 appended one `rollup_backlog` row per
/// partial bucket, and an older one still a partial DAY bucket beside each
/// partial HOUR one. The fold still empties that backlog and derives days
/// from hours, so a backlog left at an upgrade (or a crash) adds each
/// sample to its hour and day once.
async fn backlog_of_an_older_version_is_folded_once(t: TestApp) {
    use sea_orm::ConnectionTrait;
    let ids = create_chain(&t, "A").await;
    let samples = json!([
        { "battery": ids[4], "ts": "2026-03-01T10:00:00Z", "voltageV": 49.0 },
        { "battery": ids[4], "ts": "2026-03-01T10:30:00Z", "voltageV": 51.0 },
    ]);
    t.data(INGEST, json!({ "s": samples })).await;
    t.fold().await;
    // The stored HOUR and DAY buckets are what the older version left as
    // partial buckets for these two samples.
    t.app
        .db
        .execute_unprepared(
            "INSERT INTO rollup_backlog SELECT * FROM battery_rollups; DELETE FROM battery_rollups",
        )
        .await
        .unwrap();
    assert!(t.fold().await > 0, "the legacy backlog was folded");
    let day = "2026-03-02T00:00:00Z";
    let hours = points(&t, &ids[4], "2026-03-01T00:00:00Z", day, "HOUR").await;
    let days = points(&t, &ids[4], "2026-03-01T00:00:00Z", day, "DAY").await;
    assert_eq!((hours.len(), days.len()), (1, 1), "{hours:?} {days:?}");
    for bucket in [&hours[0], &days[0]] {
        assert_eq!(bucket["sampleCount"], 2, "{bucket}");
        assert!(close(&bucket["voltageV"], 50.0), "{bucket}");
        assert_eq!(bucket["voltageMaxV"], 51.0, "{bucket}");
    }
}

/// Energy between two writes' samples is integrated once, whether a fold
/// ran between them or both were pending: the fold finds each write's
/// first sample's predecessor. A late sample adds none.
async fn energy_is_integrated_across_writes_and_folds(t: TestApp) {
    let ids = create_chain(&t, "A").await;
    let ingest = |minute: u32| {
        json!([{ "battery": ids[4], "ts": format!("2026-03-01T10:{minute:02}:00Z"),
                 "voltageV": 50.0, "currentA": 10.0 }])
    };
    for minute in [0, 10] {
        t.data(INGEST, json!({ "s": ingest(minute) })).await;
        t.fold().await;
    }
    // Two writes pending at once, then a late sample once they are folded.
    for minute in [20, 30] {
        t.data(INGEST, json!({ "s": ingest(minute) })).await;
    }
    t.fold().await;
    t.data(INGEST, json!({ "s": ingest(25) })).await;
    let hours = points(
        &t,
        &ids[4],
        "2026-03-01T10:00:00Z",
        "2026-03-01T11:00:00Z",
        "HOUR",
    )
    .await;
    assert_eq!(hours[0]["sampleCount"], 5, "{hours:?}");
    // Three 10-minute intervals at 500 W; none for the late sample.
    assert!(
        close(&hours[0]["energyInKwh"], 3.0 * 500.0 * 600.0 / 3.6e6),
        "{hours:?}"
    );
    assert!(close(&hours[0]["energyOutKwh"], 0.0), "{hours:?}");
}

/// A fold one battery per transaction (as SQLite's periodic fold goes,
/// a slice at a time) adds the pending writes up once, puts them back as
/// one batch per battery, and folds each batch alone: every battery's
/// buckets and the energy between its writes come out as one fold makes
/// them, and nothing stays pending. (On PostgreSQL the same call folds in
/// one transaction, and must come out the same.)
async fn a_fold_in_slices_adds_up_as_one_fold(t: TestApp) {
    let mut batteries = Vec::new();
    for suffix in ["A", "B", "C"] {
        batteries.push(create_chain(&t, suffix).await[4].clone());
    }
    // Three writes ten minutes apart, each with a sample of every battery
    // at 50, 51 and 52 V and 10 A, pending together: each sample after the
    // first integrates its power over the 10 minutes before it.
    for minute in [0, 10, 20] {
        let samples: Vec<Value> = batteries
            .iter()
            .map(|b| {
                json!({ "battery": b, "ts": format!("2026-03-01T10:{minute:02}:00Z"),
                        "voltageV": 50.0 + minute as f64 / 10.0, "currentA": 10.0 })
            })
            .collect();
        t.data(INGEST, json!({ "s": samples })).await;
    }
    let written = trackingbms_api::telemetry::fold::fold_in_slices(&t.app.db, 1)
        .await
        .unwrap();
    assert_eq!(written, 6, "an hour and a day per battery");
    assert_eq!(t.fold().await, 0, "nothing was left pending");
    let day = "2026-03-02T00:00:00Z";
    for b in &batteries {
        let hours = points(&t, b, "2026-03-01T00:00:00Z", day, "HOUR").await;
        let days = points(&t, b, "2026-03-01T00:00:00Z", day, "DAY").await;
        assert_eq!((hours.len(), days.len()), (1, 1), "{hours:?} {days:?}");
        for bucket in [&hours[0], &days[0]] {
            assert_eq!(bucket["sampleCount"], 3, "{bucket}");
            assert!(close(&bucket["voltageV"], 51.0), "{bucket}");
            assert_eq!(bucket["voltageMaxV"], 52.0, "{bucket}");
            assert!(
                close(&bucket["energyInKwh"], (510.0 + 520.0) * 600.0 / 3.6e6),
                "{bucket}"
            );
        }
    }
}

/// A roll-up batch the fold cannot read (a newer version's format) stops
/// the fold with an error and stays pending with everything else: nothing
/// already stored is lost.
async fn unreadable_batches_stop_the_fold_and_stay(t: TestApp) {
    use sea_orm::{ConnectionTrait, Statement};
    let ids = create_chain(&t, "A").await;
    let samples = json!([{ "battery": ids[4], "ts": "2026-03-01T10:00:00Z", "voltageV": 49.0 }]);
    t.data(INGEST, json!({ "s": samples })).await;
    let db = &t.app.db;
    let backend = db.get_database_backend();
    let insert = match backend {
        sea_orm::DbBackend::Postgres => "INSERT INTO rollup_batches (partials) VALUES ($1)",
        _ => "INSERT INTO rollup_batches (partials) VALUES (?)",
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        insert,
        [vec![99u8, 1, 2, 3].into()],
    ))
    .await
    .unwrap();
    let err = trackingbms_api::telemetry::fold::fold(db)
        .await
        .expect_err("an unreadable batch stops the fold");
    assert!(format!("{err:?}").contains("unknown format"), "{err:?}");
    let pending = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) FROM rollup_batches",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(pending, 2, "the sample's batch and the unreadable one stay");
    let day = "2026-03-02T00:00:00Z";
    db.execute_raw(Statement::from_string(
        backend,
        "DELETE FROM rollup_batches WHERE partials = (SELECT partials FROM rollup_batches ORDER BY length(partials) LIMIT 1)",
    ))
    .await
    .unwrap();
    let hours = points(&t, &ids[4], "2026-03-01T00:00:00Z", day, "HOUR").await;
    assert_eq!(hours.len(), 1, "{hours:?}");
    assert_eq!(hours[0]["sampleCount"], 1);
}
