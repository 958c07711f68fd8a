//! A nested five-level query issues a bounded number of SQL statements,
//! whatever the size of the fleet: each level is one batched query (plus one
//! for each `totalCount` asked), never one per row.

mod common;

use common::{Backend, TestApp};
use serde_json::json;
use trackingbms_api::demo::fleet::FleetSpec;

const NESTED: &str = r#"{
  clients(first: 5) { totalCount edges { node { name
    sites(first: 5) { totalCount edges { node { name
      zones(first: 5) { edges { node { name
        bmsUnits(first: 5) { edges { node { name
          batteries(first: 50) { totalCount edges { node { serial sohPct bms { name } latestSample { socPct } } } } } } } } } } } } } } } } }"#;

async fn statements_for(t: &TestApp) -> (u64, usize) {
    let before = t.statements();
    let data = t.data(NESTED, json!({})).await;
    let used = t.statements() - before;
    let mut batteries = 0;
    for c in data["clients"]["edges"].as_array().unwrap() {
        for s in c["node"]["sites"]["edges"].as_array().unwrap() {
            for z in s["node"]["zones"]["edges"].as_array().unwrap() {
                for b in z["node"]["bmsUnits"]["edges"].as_array().unwrap() {
                    batteries += b["node"]["batteries"]["edges"].as_array().unwrap().len();
                }
            }
        }
    }
    (used, batteries)
}

/// An app whose counter counts the query's statements alone: the periodic
/// roll-up fold (a statement a second) and the Modbus rescan are off.
async fn quiet_app(backend: Backend) -> TestApp {
    TestApp::with_config(backend, |c| {
        c.ingest.rollup_fold_ms = 3_600_000;
        c.modbus.enabled = false;
    })
    .await
}

/// Seeds `spec`, then waits until the jobs the seeding started (the
/// predictions' refresh of the new samples' batteries) are done.
async fn seed(t: &TestApp, spec: &FleetSpec) {
    trackingbms_api::fixtures::seed_fleet(&t.app, spec)
        .await
        .unwrap();
    loop {
        let before = t.statements();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if t.statements() == before {
            return;
        }
    }
}

async fn bounded_statements(small: TestApp) {
    let one_each = FleetSpec {
        clients: 1,
        sites_per_client: 1,
        zones_per_site: 1,
        bms_per_zone: 1,
        batteries_per_bms: 2,
        seed: 1,
    };
    seed(&small, &one_each).await;
    let (small_statements, small_batteries) = statements_for(&small).await;
    assert_eq!(small_batteries, 2);

    // 3 clients, 6 sites, 12 zones, 24 BMS units, 240 batteries.
    let big = quiet_app(small.backend).await;
    let many = FleetSpec {
        clients: 3,
        sites_per_client: 2,
        zones_per_site: 2,
        bms_per_zone: 2,
        batteries_per_bms: 10,
        seed: 2,
    };
    seed(&big, &many).await;
    let (big_statements, big_batteries) = statements_for(&big).await;
    assert_eq!(big_batteries, 240);

    // clients + count, sites + counts, zones, BMS units, batteries + counts,
    // the batteries' BMS, the latest samples: 10 statements.
    assert!(
        small_statements <= 10,
        "small fleet: {small_statements} statements"
    );
    assert_eq!(
        big_statements, small_statements,
        "statement count must not grow with the fleet ({small_statements} for 2 batteries, {big_statements} for 240)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_statements_on_sqlite() {
    bounded_statements(quiet_app(Backend::Sqlite).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_statements_on_postgres() {
    bounded_statements(quiet_app(Backend::Postgres).await).await
}
