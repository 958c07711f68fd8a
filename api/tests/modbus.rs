//! Modbus TCP polling against a real device simulated with pymodbus: values
//! land in the database with the map's scaling, the BMS goes offline when
//! the device stops and online when it is back, and re-configuring a unit
//! takes effect without a restart.

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

const STATE: &str = "query($b: ID!, $m: ID!) {
  battery: node(id: $b) { ... on Battery { latestSample { ts socPct sohPct voltageV currentA powerW tempMinC tempMaxC tempAvgC cycleCount } } }
  bms: node(id: $m) { ... on Bms { connectionState { status lastError lastSeenAt } } } }";

async fn polls_scales_and_tracks_connection(backend: Backend) {
    let t = TestApp::with_config(backend, |c| {
        c.modbus.rescan_ms = 100;
        c.modbus.timeout_ms = 500;
        c.modbus.offline_after_failures = 2;
        c.modbus.max_backoff_secs = 1;
    })
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let device = Device::start(port);
    let ids = common::create_chain(&t, "MB").await;
    let maps = t.data("{ registerMaps { name fields } }", json!({})).await;
    assert!(
        maps["registerMaps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "sunspec-802")
    );
    let bms = t
        .data(
            "mutation($z: ID!, $e: String!) { createBms(input: {zoneId: $z, name: \"MB-UNIT\", vendor: FOXBMS, protocol: MODBUS_TCP, endpoint: $e, registerMap: \"sunspec-802\", pollIntervalMs: 200}) { id } }",
            json!({ "z": ids[2], "e": format!("127.0.0.1:{port}") }),
        )
        .await["createBms"]["id"]
        .clone();
    t.data(
        "mutation($id: ID!, $b: ID!) { updateBattery(id: $id, input: {bmsId: $b}) { id } }",
        json!({ "id": ids[4], "b": bms }),
    )
    .await;
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
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
