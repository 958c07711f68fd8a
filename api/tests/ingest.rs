//! Telemetry ingestion as producers use it: `ingestSamples` and `POST /ingest`
//! (NDJSON, CSV, gzip), on SQLite and on PostgreSQL. Valid samples are kept
//! when others are refused; duplicates are harmless; order does not matter.

mod common;

use std::io::Write;

use common::{TestApp, create_chain};
use poem::http::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    graphql_batches_keep_valid_samples,
    ndjson_and_csv_bodies,
    large_gzip_body_streams,
    sample_stored_by_hand_is_a_duplicate,
    a_resent_long_batch_stores_only_its_new_samples,
    stored_values_read_back_exactly,
    sample_writes_show_in_metrics,
    replicas_see_each_other_s_battery_changes,
    concurrent_producers_on_the_same_batteries
);

async fn post(
    t: &TestApp,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = t.post("/ingest").content_type(content_type).body(body);
    if let Some(enc) = encoding {
        req = req.header("content-encoding", enc);
    }
    let resp = req.send().await;
    let status = resp.0.status();
    let text = resp.0.into_body().into_string().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const INGEST: &str = "mutation($s: [SampleInput!]!) { ingestSamples(samples: $s) {
    accepted stored duplicates rejectedCount rejected { index code message } } }";

async fn graphql_batches_keep_valid_samples(t: TestApp) {
    let ids = create_chain(&t, "A").await;
    let future = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let samples = json!([
        { "battery": ids[4], "ts": "2026-01-01T00:02:00Z", "voltageV": 52.1, "socPct": 60.0, "sohPct": 97.0 },
        { "battery": "SN-A", "ts": "2026-01-01T00:00:00Z", "voltageV": 52.0, "socPct": 61.0 },
        { "battery": "NO-SUCH", "ts": "2026-01-01T00:00:00Z", "voltageV": 52.0 },
        { "battery": ids[4], "ts": "2026-01-01T00:01:00Z", "voltageV": 99.0 },
        { "battery": ids[4], "ts": future, "voltageV": 52.0 },
        { "battery": ids[4], "ts": "2026-01-01T00:01:00Z", "socPct": 50.0, "tempMinC": 30, "tempMaxC": 20 },
        { "battery": ids[4], "ts": "2026-01-01T00:03:00Z" },
        { "battery": ids[3], "ts": "2026-01-01T00:04:00Z", "socPct": 50.0 },
        { "battery": ids[4], "ts": "2026-01-01T00:02:00Z", "voltageV": 52.1, "socPct": 60.0 },
    ]);
    let r = t.data(INGEST, json!({ "s": samples })).await["ingestSamples"].clone();
    let codes: Vec<(u64, String)> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["index"].as_u64().unwrap(),
                x["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            (2, "UNKNOWN_BATTERY".into()),
            (3, "OUT_OF_RANGE".into()),
            (4, "FUTURE_TIMESTAMP".into()),
            (5, "INCONSISTENT".into()),
            (6, "EMPTY_SAMPLE".into()),
            (7, "UNKNOWN_BATTERY".into()),
        ],
        "{r}"
    );
    // Samples 0 and 1 are new; 8 repeats 0 in the same batch.
    assert_eq!(r["accepted"], 3);
    assert_eq!(r["stored"], 2);
    assert_eq!(r["duplicates"], 1);
    assert_eq!(r["rejectedCount"], 6);
    assert_eq!(t.raw_sample_count(&ids[4]).await, 2);

    // Out of order: the newest sample stays the battery's latest (read from
    // the samples), and its SOH the battery's once folded.
    let latest = t
        .data(
            "query($id: ID!) { node(id: $id) { ... on Battery { latestSample { ts socPct } } } }",
            json!({ "id": ids[4] }),
        )
        .await;
    assert_eq!(latest["node"]["latestSample"]["socPct"], 60.0);
    t.fold().await;
    let latest = t
        .data("query($id: ID!) { node(id: $id) { ... on Battery { sohPct latestSample { socPct } } } }", json!({ "id": ids[4] }))
        .await;
    assert_eq!(latest["node"]["latestSample"]["socPct"], 60.0);
    assert_eq!(latest["node"]["sohPct"], 97.0);

    // Resending is idempotent.
    let again = t
        .data(
            INGEST,
            json!({ "s": [{ "battery": "SN-A", "ts": "2026-01-01T00:00:00Z", "voltageV": 52.0 }] }),
        )
        .await;
    assert_eq!(again["ingestSamples"]["stored"], 0);
    assert_eq!(again["ingestSamples"]["duplicates"], 1);
    assert_eq!(t.raw_sample_count(&ids[4]).await, 2);

    // Pointers move forward only: a late sample's SOH is not the battery's;
    // a newer sample without SOH moves the time, not the SOH; in one batch,
    // the newest sample that reports SOH gives it.
    let pointers = async |samples: Value| {
        t.data(INGEST, json!({ "s": samples })).await;
        t.fold().await;
        let b = t
            .data(
                "query($id: ID!) { node(id: $id) { ... on Battery { sohPct lastSampleAt } } }",
                json!({ "id": ids[4] }),
            )
            .await;
        (
            b["node"]["lastSampleAt"].clone(),
            b["node"]["sohPct"].clone(),
        )
    };
    assert_eq!(
        pointers(json!([
            { "battery": ids[4], "ts": "2026-01-01T00:00:30Z", "socPct": 60.0, "sohPct": 90.0 },
            { "battery": ids[4], "ts": "2026-01-01T00:05:00Z", "socPct": 60.0 },
        ]))
        .await,
        (json!("2026-01-01T00:05:00+00:00"), json!(97.0))
    );
    assert_eq!(
        pointers(json!([
            { "battery": ids[4], "ts": "2026-01-01T00:07:00Z", "socPct": 60.0 },
            { "battery": ids[4], "ts": "2026-01-01T00:06:00Z", "socPct": 60.0, "sohPct": 96.5 },
        ]))
        .await,
        (json!("2026-01-01T00:07:00+00:00"), json!(96.5))
    );
}

async fn ndjson_and_csv_bodies(t: TestApp) {
    let ids = create_chain(&t, "A").await;
    let ndjson = format!(
        "{}\n\n{}\nnot json\n{}\n{}\n",
        json!({ "battery": "SN-A", "ts": "2026-01-01T00:00:10Z", "voltageV": 51.2, "currentA": -12.5, "socPct": 76.0, "sohPct": 93.1, "tempAvgC": 24.5, "cycleCount": 412 }),
        json!({ "battery": ids[4], "ts": "2026-01-01T00:00:05Z", "voltageV": 51.3 }),
        json!({ "battery": "SN-A", "ts": "2026-01-01T00:00:20Z", "socPCT": 50 }),
        json!({ "battery": "SN-A", "ts": "2026-01-01T00:00:10Z", "voltageV": 51.2 }),
    );
    let (status, body) = post(&t, "application/x-ndjson", None, ndjson.into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records"], 5, "blank lines are not records: {body}");
    assert_eq!(body["accepted"], 3);
    assert_eq!(body["stored"], 2);
    assert_eq!(body["duplicates"], 1);
    assert_eq!(body["rejected"][0]["index"], 2);
    assert_eq!(body["rejected"][0]["code"], "MALFORMED");
    assert_eq!(body["rejected"][1]["index"], 3);
    assert!(
        body["rejected"][1]["message"]
            .as_str()
            .unwrap()
            .contains("socPCT"),
        "unknown fields are named: {body}"
    );

    let csv = "battery,ts,voltageV,currentA,socPct,tempAvgC\r\n\
               SN-A,2026-01-01T00:01:00Z,51.0,-10,70,\r\n\
               SN-A,2026-01-01T00:02:00Z,51.1,,NaN,22\r\n\
               SN-A,2026-01-01T00:03:00Z,51.2\r\n\
               SN-A,2026-01-01T00:04:00Z,abc,1,2,3\r\n\
               SN-A,2026-01-01T00:05:00Z,51.4,-10,68,22.5\r\n";
    let (status, body) = post(&t, "text/csv", None, csv.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records"], 5);
    assert_eq!(body["stored"], 2, "{body}");
    let codes: Vec<&str> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec!["NOT_FINITE", "MALFORMED", "MALFORMED"],
        "{body}"
    );
    assert_eq!(t.raw_sample_count(&ids[4]).await, 4);

    let (status, body) = post(
        &t,
        "text/csv",
        None,
        b"battery,ts,voltage\nSN-A,2026-01-01T00:00:00Z,1\n".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("voltage"),
        "{body}"
    );
    let (status, body) = post(&t, "application/xml", None, b"<x/>".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "UNSUPPORTED_MEDIA_TYPE"
    );
    let (status, _) = post(&t, "application/x-ndjson", Some("br"), b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A corrupt gzip body is refused with a clear error, nothing is half-stored silently.
    let (status, body) = post(
        &t,
        "application/x-ndjson",
        Some("gzip"),
        b"definitely not gzip".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["report"]["accepted"], 0);
}

async fn large_gzip_body_streams(t: TestApp) {
    let ids = create_chain(&t, "A").await;
    let start = chrono::DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let n = 12_345;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..n {
        let ts = (start + chrono::Duration::seconds(i)).to_rfc3339();
        let line = if i == 7_777 {
            json!({ "battery": "SN-A", "ts": ts, "socPct": 101.0 })
        } else {
            json!({ "battery": "SN-A", "ts": ts, "voltageV": 51.0, "socPct": (i % 100) as f64 })
        };
        writeln!(gz, "{line}").unwrap();
    }
    let body = gz.finish().unwrap();
    let (status, report) = post(&t, "application/x-ndjson", Some("gzip"), body).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["records"], n);
    assert_eq!(report["accepted"], n - 1);
    assert_eq!(
        report["rejected"][0]["index"], 7_777,
        "indices count across chunks"
    );
    assert_eq!(t.raw_sample_count(&ids[4]).await, (n - 1) as u64);
}

/// A sample put in the table by hand (a bulk load that does not move the
/// battery's latest-sample pointer) is still recognised as stored: resending
/// it is a duplicate and the rest of the batch is kept. (On PostgreSQL new
/// samples go in by COPY, without per-row conflict checks: the key refuses
/// the repeated one, and the batch is then written again with them.
/// SQLite's insert checks each row, and the stored text of the time must
/// be the one a hand-written `+00:00` time has.)
async fn sample_stored_by_hand_is_a_duplicate(t: TestApp) {
    use sea_orm::ConnectionTrait;
    let ids = create_chain(&t, "H").await;
    let battery =
        trackingbms_api::ids::decode(trackingbms_api::ids::Kind::Battery, &ids[4]).unwrap();
    t.app
        .db
        .execute_unprepared(&format!(
            "INSERT INTO battery_samples (battery_id, ts, voltage_v) VALUES ({battery}, '2026-01-01T00:10:00+00:00', 50.0)"
        ))
        .await
        .unwrap();
    let r = t
        .data(
            INGEST,
            json!({ "s": [
                { "battery": "SN-H", "ts": "2026-01-01T00:10:00Z", "voltageV": 51.0 },
                { "battery": "SN-H", "ts": "2026-01-01T00:11:00Z", "voltageV": 51.5, "socPct": 40.0 },
            ] }),
        )
        .await["ingestSamples"]
        .clone();
    assert_eq!(
        (r["stored"].as_u64(), r["duplicates"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(t.raw_sample_count(&ids[4]).await, 2);
    let latest = t
        .data(
            "query($id: ID!) { node(id: $id) { ... on Battery { latestSample { ts voltageV } } } }",
            json!({ "id": ids[4] }),
        )
        .await;
    assert_eq!(latest["node"]["latestSample"]["voltageV"], 51.5, "{latest}");
}

/// A batch resent longer and with other values: only the samples not stored yet are
/// stored, the stored ones keep their first values, and the roll-ups count
/// every sample once.
async fn a_resent_long_batch_stores_only_its_new_samples(t: TestApp) {
    let ids = create_chain(&t, "L").await;
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
    let batch = |minutes: std::ops::Range<i64>, voltage: f64| -> Value {
        minutes
            .map(|m| {
                let ts = (start + chrono::Duration::minutes(m)).to_rfc3339();
                json!({ "battery": "SN-L", "ts": ts, "voltageV": voltage })
            })
            .collect()
    };
    let counts = |r: &Value| {
        let r = &r["ingestSamples"];
        (r["stored"].as_u64(), r["duplicates"].as_u64())
    };
    let first = t.data(INGEST, json!({ "s": batch(0..150, 50.0) })).await;
    assert_eq!(counts(&first), (Some(150), Some(0)), "{first}");
    let again = t.data(INGEST, json!({ "s": batch(0..201, 51.0) })).await;
    assert_eq!(counts(&again), (Some(51), Some(150)), "{again}");
    assert_eq!(t.raw_sample_count(&ids[4]).await, 201);

    let points = |resolution: &'static str| {
        let t = &t;
        let id = ids[4].clone();
        async move {
            t.data(
                "query($id: ID!, $r: MetricResolution!) { batteryMetrics(batteryId: $id, \
                 from: \"2026-01-01T00:00:00Z\", to: \"2026-01-02T00:00:00Z\", resolution: $r, \
                 first: 500) { edges { node { sampleCount voltageV } } } }",
                json!({ "id": id, "r": resolution }),
            )
            .await["batteryMetrics"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["node"]["sampleCount"].as_i64().unwrap(),
                        e["node"]["voltageV"].as_f64(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let raw = points("RAW").await;
    assert_eq!(raw.len(), 201);
    assert!(
        raw[..150].iter().all(|(_, v)| *v == Some(50.0)),
        "stored values kept"
    );
    assert!(
        raw[150..].iter().all(|(_, v)| *v == Some(51.0)),
        "new values stored"
    );
    t.fold().await;
    let hours = points("HOUR").await;
    let counted: i64 = hours.iter().map(|(n, _)| n).sum();
    assert_eq!((hours.len(), counted), (4, 201), "{hours:?}");
}

/// Every measurement reads back as the very double that was sent (JSON's
/// default float parser read `1234.5678901234567` an ulp off), and
/// timestamps to the microsecond, with or without a fraction of a second;
/// resending the same samples stores nothing (their keys compare equal).
async fn stored_values_read_back_exactly(t: TestApp) {
    let ids = create_chain(&t, "X").await;
    let measured = json!({
        "voltageV": 51.23456789012346, "currentA": -12.300000000000002,
        "powerW": -630.1846506, "socPct": 76.00000000000001, "sohPct": 93.1,
        "tempMinC": 21.1, "tempMaxC": 26.7, "tempAvgC": 23.900000000000002,
        "energyKwh": 1234.5678901234567, "efficiencyPct": 97.3, "cycleCount": 412,
        "cellVoltageMinV": 3.2123456789, "cellVoltageMaxV": 3.3400000000000003
    });
    let with = |ts: &str| {
        let mut s = measured.clone();
        s["battery"] = json!("SN-X");
        s["ts"] = json!(ts);
        s
    };
    let batch = json!([
        with("2026-01-01T00:00:00Z"),
        with("2026-01-01T00:00:01.000123Z")
    ]);
    let counts = |r: &Value| {
        let r = &r["ingestSamples"];
        (r["stored"].as_u64(), r["duplicates"].as_u64())
    };
    let first = t.data(INGEST, json!({ "s": batch })).await;
    assert_eq!(counts(&first), (Some(2), Some(0)), "{first}");
    let again = t.data(INGEST, json!({ "s": batch })).await;
    assert_eq!(counts(&again), (Some(0), Some(2)), "{again}");

    let fields: Vec<&str> = measured
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let points = t
        .data(
            &format!(
                "query($id: ID!) {{ batteryMetrics(batteryId: $id, from: \"2026-01-01T00:00:00Z\", \
                 to: \"2026-01-02T00:00:00Z\", resolution: RAW) {{ edges {{ node {{ ts }} }} }} \
                 node(id: $id) {{ ... on Battery {{ latestSample {{ ts {} }} }} }} }}",
                fields.join(" ")
            ),
            json!({ "id": ids[4] }),
        )
        .await;
    let times: Vec<chrono::DateTime<chrono::Utc>> = points["batteryMetrics"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["ts"].as_str().unwrap().parse().unwrap())
        .collect();
    let sent: Vec<chrono::DateTime<chrono::Utc>> =
        ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01.000123Z"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
    assert_eq!(times, sent, "{points}");
    let latest = &points["node"]["latestSample"];
    for field in fields {
        assert_eq!(latest[field], measured[field], "{field}: {latest}");
    }
}

/// The value of the metric line `name` (with its labels) on `GET /metrics`.
async fn metric(t: &TestApp, name: &str) -> f64 {
    let resp = t.client.get("/metrics").send().await;
    let text = resp.0.into_body().into_string().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// An operator sees the sample writer on `/metrics` on both backends
/// (its statements bypass the per-statement counters): each committed
/// transaction, and the new samples only — a resent batch adds a
/// transaction but no sample.
async fn sample_writes_show_in_metrics(t: TestApp) {
    create_chain(&t, "M").await;
    let samples: Vec<Value> = (0..3)
        .map(|k| json!({ "battery": "SN-M", "ts": format!("2026-02-01T00:00:0{k}Z"), "voltageV": 51.0 }))
        .collect();
    let stored = "trackingbms_samples_stored_total";
    let writes = "trackingbms_sample_writes_total{outcome=\"ok\"}";
    let written = "trackingbms_sample_write_duration_seconds_count{outcome=\"ok\"}";
    t.data(INGEST, json!({ "s": samples })).await;
    assert_eq!(metric(&t, stored).await, 3.0);
    assert_eq!(metric(&t, writes).await, 1.0);
    t.data(INGEST, json!({ "s": samples })).await;
    assert_eq!(metric(&t, stored).await, 3.0, "a resend stores nothing");
    assert_eq!(metric(&t, writes).await, 2.0);
    assert_eq!(metric(&t, written).await, 2.0);
}

/// Another replica's ingest pipeline holds the batteries it resolved; a
/// change made through this one (a new serial, a move to another client, a
/// delete) must hold on the other at its very next call.
async fn replicas_see_each_other_s_battery_changes(t: TestApp) {
    use entities::enums::Role;
    use trackingbms_api::auth::Principal;
    use trackingbms_api::ids::{self, Kind};

    let url = t.app.config.effective_database_url();
    let other = TestApp::with_config(t.backend, move |c| c.database_url = Some(url)).await;
    let a = create_chain(&t, "A").await;
    let b = create_chain(&t, "B").await;
    let tenant = t.app.system("test").tenant_id;
    let client_a = ids::decode(Kind::Client, &a[0]).unwrap();
    let technician_of_a = Principal {
        role: Role::Technician,
        clients: Some(vec![client_a]),
        ..Principal::operator(tenant, "user:technician-a")
    };
    let mut minute = 0;
    let mut ingest = async |battery: &str| {
        minute += 1;
        let ts = format!("2026-01-01T00:{minute:02}:00Z");
        let sample: trackingbms_api::telemetry::input::SampleInput = serde_json::from_value(
            json!({ "battery": battery, "ts": ts, "voltageV": 52.0, "socPct": 50.0 }),
        )
        .unwrap();
        let report = other
            .app
            .ingestor
            .ingest(&technician_of_a, vec![(0, Ok(sample))])
            .await
            .unwrap();
        match report.rejected.first() {
            None => "STORED".to_owned(),
            Some(r) => r.code.clone(),
        }
    };
    // The other replica resolves (and holds) the battery by serial and id.
    assert_eq!(ingest("SN-A").await, "STORED");
    assert_eq!(ingest(&a[4]).await, "STORED");
    assert_eq!(
        ingest("SN-B").await,
        "UNKNOWN_BATTERY",
        "client B is out of scope"
    );

    // A new serial: the old one names nothing any more.
    t.data(
        "mutation($id: ID!) { updateBattery(id: $id, input: {serial: \"SN-A2\"}) { id } }",
        json!({ "id": a[4] }),
    )
    .await;
    assert_eq!(ingest("SN-A").await, "UNKNOWN_BATTERY");
    assert_eq!(ingest("SN-A2").await, "STORED");

    // Moved under client B's BMS: out of the technician's scope.
    t.data(
        "mutation($id: ID!, $bms: ID!) { updateBattery(id: $id, input: {bmsId: $bms}) { id } }",
        json!({ "id": a[4], "bms": b[3] }),
    )
    .await;
    assert_eq!(ingest("SN-A2").await, "UNKNOWN_BATTERY");
    assert_eq!(ingest(&a[4]).await, "UNKNOWN_BATTERY");

    // Back, then deleted.
    t.data(
        "mutation($id: ID!, $bms: ID!) { updateBattery(id: $id, input: {bmsId: $bms}) { id } }",
        json!({ "id": a[4], "bms": a[3] }),
    )
    .await;
    assert_eq!(ingest(&a[4]).await, "STORED");
    t.data(
        "mutation($id: ID!) { deleteBattery(id: $id) }",
        json!({ "id": a[4] }),
    )
    .await;
    assert_eq!(ingest(&a[4]).await, "UNKNOWN_BATTERY");
    assert_eq!(ingest("SN-A2").await, "UNKNOWN_BATTERY");
}

/// Producers sending new samples of the same batteries at once, each in
/// its own order, are all stored (writers that move the same battery
/// pointers must wait for each other, never deadlock), and each battery's
/// latest-sample pointer ends at its newest sample.
async fn concurrent_producers_on_the_same_batteries(t: TestApp) {
    use sea_orm::EntityTrait;
    use trackingbms_api::demo::fleet::FleetSpec;
    use trackingbms_api::ids::{self, Kind};
    use trackingbms_api::telemetry::input::SampleInput;

    const PRODUCERS: usize = 4;
    const ROUNDS: usize = 80;
    let soh = |k: usize| 60.0 + k as f64 * 0.1;
    let spec = FleetSpec {
        clients: 1,
        sites_per_client: 1,
        zones_per_site: 1,
        bms_per_zone: 3,
        batteries_per_bms: 100,
        seed: 9,
    };
    trackingbms_api::fixtures::seed_fleet(&t.app, &spec)
        .await
        .unwrap();
    let batteries: Vec<String> = entities::battery::Entity::find()
        .all(&t.app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|b| ids::encode(Kind::Battery, b.id).0)
        .collect();
    // Whole milliseconds: both backends store them exactly.
    let start = chrono::DurationRound::duration_trunc(
        chrono::Utc::now() + chrono::Duration::seconds(1),
        chrono::Duration::milliseconds(1),
    )
    .unwrap();
    let producers = (0..PRODUCERS).map(|p| {
        let ingestor = t.app.ingestor.clone();
        let who = t.app.system("test");
        let mut order = batteries.clone();
        // Each producer its own order: rotated, and reversed for odd ones.
        order.rotate_left(p * batteries.len() / PRODUCERS);
        if p % 2 == 1 {
            order.reverse();
        }
        tokio::spawn(async move {
            let mut stored = 0;
            for round in 0..ROUNDS {
                let ts = start + chrono::Duration::milliseconds((round * PRODUCERS + p) as i64);
                let records = order
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let s = SampleInput {
                            voltage_v: Some(51.0),
                            soh_pct: Some(soh(round * PRODUCERS + p)),
                            ..SampleInput::new(b.clone(), ts)
                        };
                        (i as u64, Ok(s))
                    })
                    .collect();
                let report = ingestor.ingest(&who, records).await.unwrap_or_else(|e| {
                    panic!("producer {p}, round {round}: {e}");
                });
                stored += report.stored;
            }
            stored
        })
    });
    let mut stored = 0;
    for producer in producers.collect::<Vec<_>>() {
        stored += producer.await.unwrap();
    }
    assert_eq!(stored as usize, PRODUCERS * ROUNDS * batteries.len());

    // Every pointer at the newest sample (the last round's last producer),
    // once folded.
    t.fold().await;
    let last = ROUNDS * PRODUCERS - 1;
    let newest = start + chrono::Duration::milliseconds(last as i64);
    let rows = entities::battery::Entity::find()
        .all(&t.app.db)
        .await
        .unwrap();
    for b in rows {
        assert_eq!(
            (b.last_sample_at, b.soh_pct),
            (Some(newest), Some(soh(last))),
            "battery {}",
            b.serial
        );
    }
}

/// SQLite: committed samples reach the database file itself within about a
/// second (the log's checkpoint task, `db::wal`), rather than only when the
/// log passes its 64 MiB bound: a copy of the file alone, as a naive backup
/// takes it, holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_samples_reach_the_database_file_without_a_full_log() {
    use std::str::FromStr;

    use sea_orm::sqlx::{self, Connection, sqlite::SqliteConnectOptions};

    let t = TestApp::new(common::Backend::Sqlite).await;
    let ids = create_chain(&t, "W").await;
    let samples: Vec<Value> = (0..3)
        .map(|m| json!({ "battery": ids[4], "ts": format!("2026-03-01T10:0{m}:00Z"), "voltageV": 51.0 }))
        .collect();
    let d = t
        .data(
            "mutation($s: [SampleInput!]!) { ingestSamples(samples: $s) { stored } }",
            json!({ "s": samples }),
        )
        .await;
    assert_eq!(d["ingestSamples"]["stored"], 3);

    let url = t.app.config.effective_database_url();
    let file = SqliteConnectOptions::from_str(&url)
        .unwrap()
        .get_filename()
        .to_owned();
    let copy = tempfile::tempdir().unwrap();
    let copied = copy.path().join("copy.db");
    let mut in_file = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        std::fs::copy(&file, &copied).unwrap();
        let opts = SqliteConnectOptions::new()
            .filename(&copied)
            .immutable(true);
        // A copy taken while a checkpoint writes may be torn: try again.
        let Ok(mut conn) = sqlx::SqliteConnection::connect_with(&opts).await else {
            continue;
        };
        let count: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM battery_samples")
            .fetch_one(&mut conn)
            .await;
        in_file = count.ok();
        if in_file == Some(3) {
            break;
        }
    }
    assert_eq!(
        in_file,
        Some(3),
        "the database file alone lacks the samples"
    );
}
