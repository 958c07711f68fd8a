//! `serve --demo` creates the fleet the README promises and keeps it alive.

mod common;

use std::collections::HashSet;

use common::TestApp;
use serde_json::json;

async fn demo_fleet_is_realistic_and_live(t: TestApp) {
    assert_eq!(t.app.config.demo.sample_interval_secs, 1, "test config");
    let task = trackingbms_api::demo::start(&t.app).await.unwrap();
    let data = t
        .data(
            "{ clients { totalCount } sites { totalCount } bmsUnits { totalCount } batteries { totalCount } }",
            json!({}),
        )
        .await;
    assert!(data["clients"]["totalCount"].as_u64().unwrap() >= 3);
    assert!(data["sites"]["totalCount"].as_u64().unwrap() >= 6);
    assert!(data["bmsUnits"]["totalCount"].as_u64().unwrap() >= 10);
    assert!(data["batteries"]["totalCount"].as_u64().unwrap() >= 200);

    // Six hours of history at five-minute steps arrive in the background,
    // oldest first; wait until the last battery has all of it.
    let last = t
        .data(
            "{ batteries(last: 1, orderBy: {field: CREATED}) { edges { node { id } } } }",
            json!({}),
        )
        .await["batteries"]["edges"][0]["node"]["id"]
        .clone();
    let mut waited = 0;
    loop {
        let m = t
            .data(
                "query($id: ID!) { batteryMetrics(batteryId: $id, first: 0) { totalCount } }",
                json!({ "id": last }),
            )
            .await;
        if m["batteryMetrics"]["totalCount"].as_u64().unwrap() >= 72 {
            break;
        }
        waited += 1;
        assert!(waited < 300, "demo history did not arrive within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Battery SOH moves with the roll-up fold (at most a second later).
    t.fold().await;

    let mut chemistries = HashSet::new();
    let mut sohs = Vec::new();
    let mut after = serde_json::Value::Null;
    loop {
        let d = t
            .data(
                "query($a: String) { batteries(first: 100, after: $a) { pageInfo { hasNextPage endCursor }
                   edges { node { id chemistry installDate sohPct nominalVoltageV latestSample { voltageV socPct tempAvgC tempMinC tempMaxC currentA cycleCount } } } } }",
                json!({ "a": after }),
            )
            .await;
        for e in d["batteries"]["edges"].as_array().unwrap() {
            let n = &e["node"];
            chemistries.insert(n["chemistry"].as_str().unwrap().to_owned());
            sohs.push(n["sohPct"].as_f64().unwrap());
            let s = &n["latestSample"];
            let soc = s["socPct"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&soc), "SOC {soc}");
            let v = s["voltageV"].as_f64().unwrap();
            let nominal = n["nominalVoltageV"].as_f64().unwrap();
            assert!(
                v > nominal * 0.75 && v < nominal * 1.25,
                "voltage {v} vs nominal {nominal}"
            );
            let (tmin, tavg, tmax) = (
                s["tempMinC"].as_f64().unwrap(),
                s["tempAvgC"].as_f64().unwrap(),
                s["tempMaxC"].as_f64().unwrap(),
            );
            assert!(tmin <= tavg && tavg <= tmax && (-10.0..80.0).contains(&tavg));
        }
        if d["batteries"]["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = d["batteries"]["pageInfo"]["endCursor"].clone();
    }
    assert!(chemistries.len() >= 2, "varied chemistry: {chemistries:?}");
    let (lo, hi) = sohs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(hi - lo > 5.0, "varied health: {lo}..{hi}");

    // The daily health history is long enough for a real prediction.
    let p = t
        .data(
            "query($id: ID!) { node(id: $id) { ... on Battery { prediction { status sohIn30Days { value } } } } }",
            json!({ "id": last }),
        )
        .await["node"]["prediction"]
        .clone();
    assert_eq!(p["status"], "OK", "{p:#}");
    assert!((50.0..=101.0).contains(&p["sohIn30Days"]["value"].as_f64().unwrap()));

    // Live samples keep coming after the history.
    let before = t
        .data(
            "query($id: ID!) { node(id: $id) { ... on Battery { lastSampleAt } } }",
            json!({ "id": last }),
        )
        .await["node"]["lastSampleAt"]
        .clone();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let after = t
        .data(
            "query($id: ID!) { node(id: $id) { ... on Battery { lastSampleAt } } }",
            json!({ "id": last }),
        )
        .await["node"]["lastSampleAt"]
        .clone();
    assert_ne!(before, after, "a live sample arrived");
    task.stop().await;

    // A second start on the same database reuses the fleet.
    let again = trackingbms_api::demo::start(&t.app).await.unwrap();
    again.stop().await;
    let d = t.data("{ clients { totalCount } }", json!({})).await;
    assert_eq!(d["clients"]["totalCount"], 3);
}

mod demo_fleet_is_realistic_and_live {
    use super::common::{Backend, TestApp};

    async fn app(backend: Backend) -> TestApp {
        TestApp::with_config(backend, |c| c.demo.sample_interval_secs = 1).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::demo_fleet_is_realistic_and_live(app(Backend::Sqlite).await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::demo_fleet_is_realistic_and_live(app(Backend::Postgres).await).await
    }
}
