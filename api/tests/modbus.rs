//! Modbus TCP polling against a real device simulated with pymodbus: values
//! land in the database with the map's scaling, the BMS goes offline when
//! the device stops and online when it is back, re-configuring a unit
//! takes effect without a restart, and two replicas poll a unit once
//! between them, handing it over when one stops.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use futures_util::StreamExt;
use serde_json::{Value, json};

struct Device(Child);

impl Device {
    fn start(port: u16) -> Self {
        let python = std::env::var("TRACKINGBMS_TEST_PYTHON").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_owned()
        });
        assert!(
            std::path::Path::new(&python).exists(),
            "no Python with pymodbus at {python}: run scripts/setup-python.sh (scripts/test.sh does)"
        );
        let mut child = Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/modbus/sunspec_sim.py"
            ))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulator starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Self(child)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(
    t: &TestApp,
    what: &str,
    query: &str,
    vars: Value,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let data = t.data(query, vars.clone()).await;
        if ok(&data) {
            return data;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} did not happen: {data}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fleet chain whose battery is on a SunSpec unit at `port`, polled every
/// 200 ms: the chain's ids and the unit's id.
async fn polled_unit(t: &TestApp, suffix: &str, port: u16) -> ([String; 5], Value) {
    let ids = common::create_chain(t, suffix).await;
    let bms = t
        .data(
            "mutation($z: ID!, $n: String!, $e: String!) { createBms(input: {zoneId: $z, name: $n, vendor: FOXBMS, protocol: MODBUS_TCP, endpoint: $e, registerMap: \"sunspec-802\", pollIntervalMs: 200}) { id } }",
            json!({ "z": ids[2], "n": format!("{suffix}-UNIT"), "e": format!("127.0.0.1:{port}") }),
        )
        .await["createBms"]["id"]
        .clone();
    t.data(
        "mutation($id: ID!, $b: ID!) { updateBattery(id: $id, input: {bmsId: $b}) { id } }",
        json!({ "id": ids[4], "b": bms }),
    )
    .await;
    (ids, bms)
}

const STATE: &str = "query($b: ID!, $m: ID!) {
  battery: node(id: $b) { ... on Battery { latestSample { ts socPct sohPct voltageV currentA powerW tempMinC tempMaxC tempAvgC cycleCount cellVoltageMinV cellVoltageMaxV } } }
  bms: node(id: $m) { ... on Bms { connectionState { status lastError lastSeenAt } } } }";

async fn polls_scales_and_tracks_connection(backend: Backend) {
    let t = TestApp::with_config(backend, |c| {
        c.modbus.rescan_ms = 100;
        c.modbus.timeout_ms = 500;
        c.modbus.offline_after_failures = 2;
        c.modbus.max_backoff_secs = 1;
    })
    .await;
    let port = common::free_port();
    let device = Device::start(port);
    let (ids, bms) = polled_unit(&t, "MB", port).await;
    let maps = t.data("{ registerMaps { name fields } }", json!({})).await;
    assert!(
        maps["registerMaps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "sunspec-802")
    );
    let mut status = t.subscribe(
        "subscription($m: ID) { bmsStatus(scope: {bmsId: $m}) { bmsId state { status lastError } } }",
        json!({ "m": bms }),
    );
    let _ = tokio::time::timeout(Duration::from_millis(100), status.next()).await;
    let supervisor = t.app.start_modbus().expect("polling enabled");

    let vars = json!({ "b": ids[4], "m": bms });
    // The state turns ONLINE just after the polled sample is acknowledged.
    let state = wait_for(&t, "a polled sample", STATE, vars.clone(), |d| {
        d["battery"]["latestSample"].is_object()
            && d["bms"]["connectionState"]["status"] == "ONLINE"
    })
    .await;
    let s = &state["battery"]["latestSample"];
    assert_eq!(s["socPct"], 76.5);
    assert_eq!(s["sohPct"], 93.1);
    assert!((s["voltageV"].as_f64().unwrap() - 51.2).abs() < 1e-9);
    assert_eq!(s["currentA"], -12.5);
    assert_eq!(s["powerW"], -640.0);
    assert!((s["tempMaxC"].as_f64().unwrap() - 30.1).abs() < 1e-9);
    assert!((s["cellVoltageMaxV"].as_f64().unwrap() - 3.412).abs() < 1e-9);
    assert!((s["cellVoltageMinV"].as_f64().unwrap() - 3.189).abs() < 1e-9);
    assert!((s["tempMinC"].as_f64().unwrap() - 22.4).abs() < 1e-9);
    assert_eq!(s["cycleCount"], 412);
    assert_eq!(state["bms"]["connectionState"]["status"], "ONLINE");
    let first = tokio::time::timeout(Duration::from_secs(5), status.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first["data"]["bmsStatus"]["state"]["status"], "ONLINE",
        "{first}"
    );

    // The device goes away: OFFLINE, with the reason.
    drop(device);
    let state = wait_for(&t, "offline", STATE, vars.clone(), |d| {
        d["bms"]["connectionState"]["status"] == "OFFLINE"
    })
    .await;
    assert!(state["bms"]["connectionState"]["lastError"].is_string());
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), status.next()).await {
        seen.push(
            e["data"]["bmsStatus"]["state"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen.last().map(String::as_str), Some("OFFLINE"), "{seen:?}");

    // It comes back on the same address: ONLINE again and sampling.
    let last_ts = state["battery"]["latestSample"]["ts"].clone();
    let _device = Device::start(port);
    wait_for(&t, "back online", STATE, vars.clone(), |d| {
        d["bms"]["connectionState"]["status"] == "ONLINE"
            && d["battery"]["latestSample"]["ts"] != last_ts
    })
    .await;

    // An unknown register map is refused up front.
    let code = t
        .error_code(
            "mutation($m: ID!) { updateBms(id: $m, input: {registerMap: \"no-such-map\"}) { id } }",
            json!({ "m": bms }),
        )
        .await;
    assert_eq!(code, "VALIDATION_FAILED");

    // Re-configured without a restart: pointed at an address where nothing
    // listens, the unit goes OFFLINE with the reason.
    let dead = common::free_port();
    t.data(
        "mutation($m: ID!, $e: String!) { updateBms(id: $m, input: {endpoint: $e}) { id } }",
        json!({ "m": bms, "e": format!("127.0.0.1:{dead}") }),
    )
    .await;
    let state = wait_for(&t, "reconfiguration", STATE, vars, |d| {
        d["bms"]["connectionState"]["status"] == "OFFLINE"
    })
    .await;
    assert!(state["bms"]["connectionState"]["lastError"].is_string());
    supervisor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_modbus_polling() {
    polls_scales_and_tracks_connection(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_modbus_polling() {
    polls_scales_and_tracks_connection(Backend::Postgres).await;
}

/// The replica named in the unit's poll lease.
async fn lease_holder(t: &TestApp, bms: &Value) -> Option<String> {
    use sea_orm::EntityTrait;
    let id = trackingbms_api::ids::decode(trackingbms_api::ids::Kind::Bms, bms.as_str().unwrap())
        .unwrap();
    entities::poll_lease::Entity::find_by_id(id)
        .one(&t.app.db)
        .await
        .unwrap()
        .map(|l| l.holder)
}

/// Timestamps of a battery's stored samples, oldest first.
async fn sample_times(t: &TestApp, battery: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    let id = trackingbms_api::ids::decode(trackingbms_api::ids::Kind::Battery, battery).unwrap();
    entities::battery_sample::Entity::find()
        .filter(entities::battery_sample::Column::BatteryId.eq(id))
        .order_by_asc(entities::battery_sample::Column::Ts)
        .all(&t.app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.ts)
        .collect()
}

/// Two replicas with polling enabled, sharing PostgreSQL and Redis: the
/// unit is polled by one of them at a time, both report its connection,
/// and when the polling replica dies the other takes the unit over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_poll_each_unit_once_and_hand_over() {
    let channel = format!("trackingbms:test-lease:{}", rand::random::<u64>());
    let redis = trackingbms_api::fixtures::redis_url();
    let tune = |c: &mut trackingbms_api::Config| {
        c.modbus.rescan_ms = 200;
        c.modbus.timeout_ms = 500;
        c.modbus.lease_secs = 1;
        c.redis_url = Some(redis.clone());
        c.live.redis_channel = channel.clone();
    };
    let a = TestApp::with_config(Backend::Postgres, tune).await;
    let url = a.app.config.database_url.clone();
    let b = TestApp::with_config(Backend::Postgres, |c| {
        tune(c);
        c.database_url = url;
    })
    .await;
    let port = common::free_port();
    let _device = Device::start(port);
    let (ids, bms) = polled_unit(&a, "LB", port).await;
    let supervisor_a = a.app.start_modbus().expect("polling enabled");
    let supervisor_b = b.app.start_modbus().expect("polling enabled");

    // Both replicas report the unit online, whichever polls it.
    let vars = json!({ "b": ids[4], "m": bms });
    for t in [&a, &b] {
        wait_for(t, "online on both replicas", STATE, vars.clone(), |d| {
            d["bms"]["connectionState"]["status"] == "ONLINE"
                && d["bms"]["connectionState"]["lastSeenAt"].is_string()
        })
        .await;
    }
    let holder = lease_holder(&a, &bms).await.expect("a lease");
    let names = [a.app.poll_leases.holder(), b.app.poll_leases.holder()];
    assert!(
        names.contains(&holder.as_str()),
        "{holder} is one of {names:?}"
    );

    // Polled once per 200 ms interval, not once per replica.
    let before = sample_times(&a, &ids[4]).await.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let times = sample_times(&a, &ids[4]).await;
    let window = &times[before..];
    assert!(
        window.len() <= 12,
        "{} samples in 2 s at one per 200 ms",
        window.len()
    );
    let closest = window
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .min()
        .unwrap();
    assert!(
        closest >= 150,
        "two samples {closest} ms apart: polled twice"
    );
    assert_eq!(
        lease_holder(&a, &bms).await.as_deref(),
        Some(holder.as_str())
    );

    // The holder dies without releasing its lease: the other replica takes
    // the unit over once the lease expires, and sampling goes on.
    let (dead, survivor) = if holder == names[0] {
        (supervisor_a, (&b, supervisor_b))
    } else {
        (supervisor_b, (&a, supervisor_a))
    };
    dead.abort();
    let last = times.last().copied().unwrap();
    let started = Instant::now();
    loop {
        let now_holder = lease_holder(&a, &bms).await;
        if now_holder.as_deref() == Some(survivor.0.app.poll_leases.holder()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no takeover: {now_holder:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(survivor.0, "samples after the takeover", STATE, vars, |d| {
        d["battery"]["latestSample"]["ts"]
            .as_str()
            .and_then(|ts| chrono::DateTime::parse_from_rfc3339(ts).ok())
            .is_some_and(|ts| ts.to_utc() > last + chrono::Duration::seconds(1))
            && d["bms"]["connectionState"]["status"] == "ONLINE"
    })
    .await;
    survivor.1.abort();
}
