//! The hierarchy API as a frontend uses it, on SQLite and on PostgreSQL.

mod common;

use std::collections::HashSet;

use common::{TestApp, create_chain};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

on_both_backends!(
    five_levels_and_node_round_trip,
    pages_have_no_duplicates_or_gaps_both_ways,
    filters_and_sorting,
    updates_moves_and_conflicts,
    delete_refuses_children_unless_cascade,
    validation_errors_carry_codes_and_fields,
    unknown_and_wrong_type_ids,
    battery_metrics_pages_raw_samples,
);

async fn five_levels_and_node_round_trip(t: TestApp) {
    let ids = create_chain(&t, "A").await;
    let data = t
        .data(
            r#"{ clients(first: 5) { totalCount edges { node { id name timeZone
                 sites(first: 5) { totalCount edges { node { id timeZone latitude
                   zones(first: 5) { edges { node { id name
                     bmsUnits(first: 5) { edges { node { id name protocol
                       batteries(first: 20) { totalCount edges { node { id serial chemistry status nominalCapacityAh latestSample { ts } } } } } } } } } }
                   bmsUnits { totalCount } } } } } } } }"#,
            json!({}),
        )
        .await;
    let client = &data["clients"]["edges"][0]["node"];
    assert_eq!(data["clients"]["totalCount"], 1);
    assert_eq!(client["id"], ids[0]);
    let site = &client["sites"]["edges"][0]["node"];
    assert_eq!(site["id"], ids[1]);
    assert_eq!(
        site["timeZone"], "Europe/Paris",
        "a site inherits its client's time zone"
    );
    assert_eq!(site["bmsUnits"]["totalCount"], 1);
    let zone = &site["zones"]["edges"][0]["node"];
    assert_eq!(zone["id"], ids[2]);
    let bms = &zone["bmsUnits"]["edges"][0]["node"];
    assert_eq!(bms["id"], ids[3]);
    assert_eq!(bms["protocol"], "HTTP_PUSH");
    let battery = &bms["batteries"]["edges"][0]["node"];
    assert_eq!(battery["id"], ids[4]);
    assert_eq!(battery["serial"], "SN-A");
    assert_eq!(battery["status"], "ACTIVE");
    assert_eq!(battery["latestSample"], Value::Null);

    // node(id) resolves every level to the right type, and back to the same id.
    for (id, typename) in ids.iter().zip(["Client", "Site", "Zone", "Bms", "Battery"]) {
        let node = t
            .data(
                "query($id: ID!) { node(id: $id) { __typename id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(node["node"]["__typename"], typename);
        assert_eq!(node["node"]["id"], *id);
    }
    // Parents resolve from children.
    let up = t
        .data(
            "query($id: ID!) { node(id: $id) { ... on Battery { bms { zone { site { client { name } } } } site { name } } } }",
            json!({ "id": ids[4] }),
        )
        .await;
    assert_eq!(
        up["node"]["bms"]["zone"]["site"]["client"]["name"],
        "Client A"
    );
    assert_eq!(up["node"]["site"]["name"], "Site");
}

async fn create_batteries(t: &TestApp, bms: &str, n: usize) {
    for i in 0..n {
        let chem = ["LFP", "NMC", "LTO"][i % 3];
        t.data(
            &format!(
                r#"mutation($b: ID!) {{ createBattery(input: {{bmsId: $b, serial: "P-{:03}", chemistry: {chem},
                    nominalCapacityAh: {}, nominalVoltageV: 48, installDate: "2021-01-{:02}"}}) {{ id }} }}"#,
                // Serials inserted out of order so sorting is really exercised.
                (i * 7) % n,
                100 + (i % 4) * 50,
                1 + i % 28
            ),
            json!({ "b": bms }),
        )
        .await;
    }
}

async fn collect_forward(t: &TestApp, order: &str, page: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = t
            .data(
                &format!(
                    "query($after: String) {{ batteries(first: {page}, after: $after, orderBy: {order}) {{
                        totalCount edges {{ cursor node {{ serial }} }} pageInfo {{ hasNextPage hasPreviousPage endCursor }} }} }}"
                ),
                json!({ "after": after }),
            )
            .await;
        let conn = &data["batteries"];
        for e in conn["edges"].as_array().unwrap() {
            seen.push(e["node"]["serial"].as_str().unwrap().to_owned());
        }
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], !after.is_null());
        if conn["pageInfo"]["hasNextPage"] == false {
            return seen;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
}

async fn pages_have_no_duplicates_or_gaps_both_ways(t: TestApp) {
    let ids = create_chain(&t, "seed").await;
    create_batteries(&t, &ids[3], 23).await;
    let forward = collect_forward(&t, "{field: SERIAL}", 5).await;
    assert_eq!(forward.len(), 24, "every battery exactly once: {forward:?}");
    let mut sorted = forward.clone();
    sorted.sort();
    assert_eq!(forward, sorted, "serial order");
    assert_eq!(
        forward.iter().collect::<HashSet<_>>().len(),
        24,
        "no duplicates"
    );

    // Backwards with last/before yields the same order.
    let mut backward: Vec<String> = Vec::new();
    let mut before = Value::Null;
    loop {
        let data = t
            .data(
                "query($before: String) { batteries(last: 4, before: $before, orderBy: {field: SERIAL}) {
                    edges { node { serial } } pageInfo { hasPreviousPage startCursor } } }",
                json!({ "before": before }),
            )
            .await;
        let conn = &data["batteries"];
        let page: Vec<String> = conn["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["serial"].as_str().unwrap().to_owned())
            .collect();
        backward.splice(0..0, page);
        if conn["pageInfo"]["hasPreviousPage"] == false {
            break;
        }
        before = conn["pageInfo"]["startCursor"].clone();
    }
    assert_eq!(backward, forward);

    // Descending order with many equal keys stays a strict total order.
    let by_capacity = collect_forward(&t, "{field: NOMINAL_CAPACITY, direction: DESC}", 4).await;
    assert_eq!(by_capacity.len(), 24);
    assert_eq!(by_capacity.iter().collect::<HashSet<_>>().len(), 24);

    // A new row inserted mid-pagination does not shift later pages.
    let first = t
        .data(
            "{ batteries(first: 10, orderBy: {field: SERIAL}) { pageInfo { endCursor } } }",
            json!({}),
        )
        .await;
    let cursor = first["batteries"]["pageInfo"]["endCursor"].clone();
    t.data(
        r#"mutation($b: ID!) { createBattery(input: {bmsId: $b, serial: "P-000a", chemistry: LFP, nominalCapacityAh: 100, nominalVoltageV: 48, installDate: "2021-01-01"}) { id } }"#,
        json!({ "b": ids[3] }),
    )
    .await;
    let next = t
        .data(
            "query($a: String) { batteries(first: 1, after: $a, orderBy: {field: SERIAL}) { edges { node { serial } } } }",
            json!({ "a": cursor }),
        )
        .await;
    assert_eq!(
        next["batteries"]["edges"][0]["node"]["serial"],
        forward[10].as_str()
    );

    // A cursor of one ordering is refused by another.
    let code = t
        .error_code(
            "query($a: String) { batteries(first: 1, after: $a, orderBy: {field: INSTALL_DATE}) { totalCount } }",
            json!({ "a": cursor }),
        )
        .await;
    assert_eq!(code, "VALIDATION_FAILED");
}

async fn filters_and_sorting(t: TestApp) {
    let a = create_chain(&t, "A").await;
    let b = create_chain(&t, "B").await;
    create_batteries(&t, &a[3], 9).await;
    // Give two batteries a state of health through samples.
    let write = |serial: &'static str, soh: f64| {
        let t = &t;
        async move {
            let id = t
                .data(
                    "query($s: String) { batteries(filter: {serialContains: $s}) { edges { node { id } } } }",
                    json!({ "s": serial }),
                )
                .await["batteries"]["edges"][0]["node"]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let num: i64 =
                trackingbms_api::ids::decode(trackingbms_api::ids::Kind::Battery, &id).unwrap();
            let sample = entities::battery_sample::Model {
                battery_id: num,
                ts: trackingbms_api::clock::now(),
                voltage_v: Some(50.0),
                current_a: Some(0.0),
                power_w: None,
                soc_pct: Some(50.0),
                soh_pct: Some(soh),
                temp_min_c: None,
                temp_max_c: None,
                temp_avg_c: Some(25.0),
                energy_kwh: None,
                efficiency_pct: None,
                cycle_count: Some(10),
                cell_voltage_min_v: None,
                cell_voltage_max_v: None,
            };
            trackingbms_api::telemetry::store::write_samples(&t.app.db, &[sample])
                .await
                .unwrap();
        }
    };
    write("SN-A", 71.5).await;
    write("SN-B", 93.0).await;
    // Battery SOH moves with the roll-up fold.
    t.fold().await;

    let count = |filter: &'static str| {
        let t = &t;
        async move {
            t.data(&format!("{{ batteries(filter: {filter}) {{ totalCount edges {{ node {{ serial }} }} }} }}"), json!({}))
                .await["batteries"]["totalCount"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(count("{}").await, 11);
    assert_eq!(count("{chemistry: [NMC]}").await, 3);
    assert_eq!(count("{chemistry: [LFP, LTO]}").await, 8);
    assert_eq!(count("{sohMin: 80}").await, 1);
    assert_eq!(count("{sohMax: 80}").await, 1);
    assert_eq!(count("{sohMin: 70, sohMax: 95}").await, 2);
    assert_eq!(
        count("{serialContains: \"p-00\"}").await,
        9,
        "case-insensitive"
    );
    assert_eq!(
        count("{serialContains: \"%\"}").await,
        0,
        "LIKE wildcards are literal"
    );
    let site_b = t
        .data(
            "query($s: ID) { batteries(filter: {siteId: $s}) { totalCount } }",
            json!({ "s": b[1] }),
        )
        .await;
    assert_eq!(site_b["batteries"]["totalCount"], 1);
    let by_client = t
        .data(
            "query($c: ID) { sites(filter: {clientId: $c}) { totalCount edges { node { id } } } }",
            json!({ "c": a[0] }),
        )
        .await;
    assert_eq!(by_client["sites"]["totalCount"], 1);
    assert_eq!(by_client["sites"]["edges"][0]["node"]["id"], a[1]);

    // Worst health first; batteries without samples come last in DESC.
    let worst = t
        .data(
            "{ batteries(first: 3, orderBy: {field: SOH}) { edges { node { serial sohPct } } } }",
            json!({}),
        )
        .await;
    let edges = worst["batteries"]["edges"].as_array().unwrap();
    assert_eq!(
        edges[0]["node"]["sohPct"],
        Value::Null,
        "no samples sorts lowest"
    );
    let best = t
        .data("{ batteries(first: 2, orderBy: {field: SOH, direction: DESC}) { edges { node { serial sohPct } } } }", json!({}))
        .await;
    assert_eq!(best["batteries"]["edges"][0]["node"]["serial"], "SN-B");
    assert_eq!(best["batteries"]["edges"][1]["node"]["serial"], "SN-A");

    let clients = t
        .data(
            "{ clients(orderBy: {field: NAME, direction: DESC}) { edges { node { name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(clients["clients"]["edges"][0]["node"]["name"], "Client B");
}

async fn updates_moves_and_conflicts(t: TestApp) {
    let a = create_chain(&t, "A").await;
    let b = create_chain(&t, "B").await;
    let upd = t
        .data(
            "mutation($id: ID!) { updateClient(id: $id, input: {name: \"Renamed\", industry: \"Rail\", tier: PREMIUM}) { name industry tier timeZone } }",
            json!({ "id": a[0] }),
        )
        .await;
    assert_eq!(
        upd["updateClient"],
        json!({"name": "Renamed", "industry": "Rail", "tier": "PREMIUM", "timeZone": "Europe/Paris"})
    );
    // null clears a nullable field; leaving it out keeps it.
    let cleared = t
        .data("mutation($id: ID!) { updateClient(id: $id, input: {industry: null}) { name industry } }", json!({ "id": a[0] }))
        .await;
    assert_eq!(
        cleared["updateClient"],
        json!({"name": "Renamed", "industry": null})
    );

    let code = t
        .error_code(
            "mutation($id: ID!) { updateClient(id: $id, input: {name: \"Client B\"}) { name } }",
            json!({ "id": a[0] }),
        )
        .await;
    assert_eq!(code, "CONFLICT");
    let code = t
        .error_code(
            r#"mutation($b: ID!) { createBattery(input: {bmsId: $b, serial: "SN-B", chemistry: NMC, nominalCapacityAh: 50, nominalVoltageV: 48, installDate: "2020-01-01"}) { id } }"#,
            json!({ "b": a[3] }),
        )
        .await;
    assert_eq!(code, "CONFLICT", "serials are unique within the tenant");

    // Moving a battery to client B's BMS moves it to B's site.
    let moved = t
        .data(
            "mutation($id: ID!, $bms: ID!) { updateBattery(id: $id, input: {bmsId: $bms, status: MAINTENANCE}) { status site { id } bms { id } } }",
            json!({ "id": a[4], "bms": b[3] }),
        )
        .await;
    assert_eq!(moved["updateBattery"]["site"]["id"], b[1]);
    assert_eq!(moved["updateBattery"]["status"], "MAINTENANCE");
    let in_b = t
        .data(
            "query($s: ID) { batteries(filter: {siteId: $s}) { totalCount } }",
            json!({ "s": b[1] }),
        )
        .await;
    assert_eq!(in_b["batteries"]["totalCount"], 2);

    // Moving a BMS to another site carries its batteries along; its name
    // must be free at the destination.
    let code = t
        .error_code(
            "mutation($id: ID!, $z: ID!) { updateBms(id: $id, input: {zoneId: $z}) { id } }",
            json!({ "id": b[3], "z": a[2] }),
        )
        .await;
    assert_eq!(code, "CONFLICT");
    t.data(
        "mutation($id: ID!, $z: ID!) { updateBms(id: $id, input: {zoneId: $z, name: \"BMS-2\"}) { id } }",
        json!({ "id": b[3], "z": a[2] }),
    )
    .await;
    let in_a = t
        .data(
            "query($s: ID) { batteries(filter: {siteId: $s}) { totalCount } }",
            json!({ "s": a[1] }),
        )
        .await;
    assert_eq!(in_a["batteries"]["totalCount"], 2);

    // Every successful change is in the audit log (refused ones rolled back).
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let log = entities::audit_log::Entity::find()
        .all(&t.app.db)
        .await
        .unwrap();
    assert_eq!(log.len(), 10 + 4, "10 creates and 4 updates");
    let battery_move = log
        .iter()
        .find(|r| r.action == "battery.update")
        .expect("battery update audited");
    let before_bms = &battery_move.before.as_ref().unwrap()["bms_id"];
    let after_bms = &battery_move.after.as_ref().unwrap()["bms_id"];
    assert_ne!(before_bms, after_bms, "before/after record the move");
    assert_eq!(battery_move.actor, "api-key:bootstrap");
    let creates = entities::audit_log::Entity::find()
        .filter(entities::audit_log::Column::Action.like("%.create"))
        .all(&t.app.db)
        .await
        .unwrap();
    assert!(
        creates
            .iter()
            .all(|r| r.before.is_none() && r.after.is_some())
    );
}

async fn delete_refuses_children_unless_cascade(t: TestApp) {
    let a = create_chain(&t, "A").await;
    for (mutation, id) in [
        ("deleteClient", &a[0]),
        ("deleteSite", &a[1]),
        ("deleteZone", &a[2]),
        ("deleteBms", &a[3]),
    ] {
        let code = t
            .error_code(
                &format!("mutation($id: ID!) {{ {mutation}(id: $id) }}"),
                json!({ "id": id }),
            )
            .await;
        assert_eq!(code, "CONFLICT", "{mutation} with children");
    }
    let stored = t
        .data(
            "mutation($b: String!) { ingestSamples(samples: [{battery: $b, ts: \"2026-01-01T00:00:00Z\", socPct: 50}]) { accepted } }",
            json!({ "b": a[4] }),
        )
        .await;
    assert_eq!(stored["ingestSamples"]["accepted"], 1);
    assert_eq!(t.raw_sample_count(&a[4]).await, 1);
    let deleted = t
        .data(
            "mutation($id: ID!) { deleteSite(id: $id, cascade: true) }",
            json!({ "id": a[1] }),
        )
        .await;
    assert_eq!(deleted["deleteSite"], a[1]);
    for id in &a[1..] {
        let n = t
            .data(
                "query($id: ID!) { node(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(n["node"], Value::Null, "subtree is gone");
    }
    // The battery's samples went with it (on PostgreSQL a trigger does
    // this, as the table has no foreign key).
    let samples_left = t
        .app
        .db
        .query_one_raw(Statement::from_string(
            t.app.db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM battery_samples",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(samples_left, 0, "samples of deleted batteries are deleted");
    let still = t
        .data(
            "query($id: ID!) { node(id: $id) { id } }",
            json!({ "id": a[0] }),
        )
        .await;
    assert_eq!(still["node"]["id"], a[0]);
    // Now empty, the client deletes without cascade.
    t.data(
        "mutation($id: ID!) { deleteClient(id: $id) }",
        json!({ "id": a[0] }),
    )
    .await;
    let code = t
        .error_code(
            "mutation($id: ID!) { deleteClient(id: $id) }",
            json!({ "id": a[0] }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
}

async fn validation_errors_carry_codes_and_fields(t: TestApp) {
    let a = create_chain(&t, "A").await;
    let cases = [
        (
            "mutation { createClient(input: {name: \"  \"}) { id } }",
            "name",
        ),
        (
            "mutation { createClient(input: {name: \"X\", timeZone: \"Mars/Olympus\"}) { id } }",
            "timeZone",
        ),
        (
            "mutation { createClient(input: {name: \"X\", country: \"FRA\"}) { id } }",
            "country",
        ),
    ];
    for (q, field) in cases {
        let resp = t.gql(q, json!({})).await;
        assert_eq!(
            resp["errors"][0]["extensions"]["code"], "VALIDATION_FAILED",
            "{q}"
        );
        assert_eq!(resp["errors"][0]["extensions"]["field"], field, "{q}");
    }
    let long = "x".repeat(201);
    let resp = t
        .gql(
            "mutation($n: String!) { createClient(input: {name: $n}) { id } }",
            json!({ "n": long }),
        )
        .await;
    assert_eq!(resp["errors"][0]["extensions"]["code"], "VALIDATION_FAILED");
    assert!(
        resp["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("maximum is 200")
    );

    let with_parent = [
        (
            "mutation($p: ID!) { createSite(input: {clientId: $p, name: \"S2\", latitude: 95}) { id } }",
            &a[0],
            "latitude",
        ),
        (
            "mutation($p: ID!) { createBms(input: {zoneId: $p, name: \"M\", protocol: MODBUS_TCP}) { id } }",
            &a[2],
            "endpoint",
        ),
        (
            "mutation($p: ID!) { createBms(input: {zoneId: $p, name: \"M\", protocol: MODBUS_TCP, endpoint: \"10.0.0.5:502\"}) { id } }",
            &a[2],
            "registerMap",
        ),
        (
            "mutation($p: ID!) { createBms(input: {zoneId: $p, name: \"M\", protocol: MODBUS_TCP, endpoint: \"10.0.0.5:502\", registerMap: \"no-such-map\"}) { id } }",
            &a[2],
            "registerMap",
        ),
        (
            "mutation($p: ID!) { createBms(input: {zoneId: $p, name: \"M\", pollIntervalMs: 5}) { id } }",
            &a[2],
            "pollIntervalMs",
        ),
        (
            r#"mutation($p: ID!) { createBattery(input: {bmsId: $p, serial: "has space", chemistry: LFP, nominalCapacityAh: 1, nominalVoltageV: 1, installDate: "2020-01-01"}) { id } }"#,
            &a[3],
            "serial",
        ),
        (
            r#"mutation($p: ID!) { createBattery(input: {bmsId: $p, serial: "S", chemistry: LFP, nominalCapacityAh: -1, nominalVoltageV: 1, installDate: "2020-01-01"}) { id } }"#,
            &a[3],
            "nominalCapacityAh",
        ),
        (
            r#"mutation($p: ID!) { createBattery(input: {bmsId: $p, serial: "S", chemistry: LFP, nominalCapacityAh: 1, nominalVoltageV: 1, installDate: "2999-01-01"}) { id } }"#,
            &a[3],
            "installDate",
        ),
    ];
    for (q, parent, field) in with_parent {
        let resp = t.gql(q, json!({ "p": parent })).await;
        assert_eq!(
            resp["errors"][0]["extensions"]["code"], "VALIDATION_FAILED",
            "{q}: {resp}"
        );
        assert_eq!(resp["errors"][0]["extensions"]["field"], field, "{q}");
    }
    // A valid Modbus unit is accepted.
    t.data(
        "mutation($p: ID!) { createBms(input: {zoneId: $p, name: \"M\", protocol: MODBUS_TCP, endpoint: \"10.0.0.5:502\", registerMap: \"sunspec-802\"}) { id } }",
        json!({ "p": a[2] }),
    )
    .await;
    let code = t
        .error_code("{ batteries(first: 101) { totalCount } }", json!({}))
        .await;
    assert_eq!(code, "VALIDATION_FAILED");
    let code = t
        .error_code("{ batteries(first: 2, last: 2) { totalCount } }", json!({}))
        .await;
    assert_eq!(code, "VALIDATION_FAILED");
    let code = t
        .error_code(
            "{ batteries(after: \"garbage\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "VALIDATION_FAILED");
}

async fn unknown_and_wrong_type_ids(t: TestApp) {
    let a = create_chain(&t, "A").await;
    let unknown_client =
        trackingbms_api::ids::encode(trackingbms_api::ids::Kind::Client, 999_999).0;
    let code = t
        .error_code(
            "mutation($id: ID!) { updateClient(id: $id, input: {name: \"N\"}) { id } }",
            json!({ "id": unknown_client }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    let none = t
        .data(
            "query($id: ID!) { node(id: $id) { id } }",
            json!({ "id": unknown_client }),
        )
        .await;
    assert_eq!(none["node"], Value::Null);
    // A site id where a client id is expected.
    let resp = t
        .gql(
            "mutation($id: ID!) { updateClient(id: $id, input: {name: \"N\"}) { id } }",
            json!({ "id": a[1] }),
        )
        .await;
    assert_eq!(resp["errors"][0]["extensions"]["code"], "INVALID_ID");
    assert!(
        resp["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expected a Client id, got a Site id")
    );
    for garbage in ["", "!!!", "Q2xpZW50OmFiYw", "eyJ4IjoxfQ"] {
        let code = t
            .error_code(
                "query($id: ID!) { node(id: $id) { id } }",
                json!({ "id": garbage }),
            )
            .await;
        assert_eq!(code, "INVALID_ID", "{garbage:?}");
    }
    let code = t
        .error_code(
            "query($id: ID!) { batteryMetrics(batteryId: $id) { totalCount } }",
            json!({ "id": a[3] }),
        )
        .await;
    assert_eq!(code, "INVALID_ID");
}

async fn battery_metrics_pages_raw_samples(t: TestApp) {
    let a = create_chain(&t, "A").await;
    let id = trackingbms_api::ids::decode(trackingbms_api::ids::Kind::Battery, &a[4]).unwrap();
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let samples: Vec<_> = (0..25)
        .map(|i| entities::battery_sample::Model {
            battery_id: id,
            ts: start + chrono::Duration::minutes(i),
            voltage_v: Some(50.0 + i as f64 / 10.0),
            current_a: Some(-10.0),
            power_w: Some(-500.0),
            soc_pct: Some(80.0 - i as f64),
            soh_pct: Some(97.5),
            temp_min_c: Some(20.0),
            temp_max_c: Some(24.0),
            temp_avg_c: Some(22.0),
            energy_kwh: Some(i as f64),
            efficiency_pct: Some(95.0),
            cycle_count: Some(100),
            cell_voltage_min_v: Some(3.1),
            cell_voltage_max_v: Some(3.2),
        })
        .collect();
    // Out of order and duplicated: the result is the same 25 samples.
    let mut shuffled = samples.clone();
    shuffled.reverse();
    let stored = trackingbms_api::telemetry::store::write_samples(&t.app.db, &shuffled)
        .await
        .unwrap();
    assert_eq!(stored.len(), 25);
    let again = trackingbms_api::telemetry::store::write_samples(&t.app.db, &samples[..5])
        .await
        .unwrap();
    assert!(again.is_empty(), "exact duplicates are idempotent");

    let mut got = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = t
            .data(
                "query($id: ID!, $after: String) { batteryMetrics(batteryId: $id, from: \"2026-01-01T00:00:00Z\", to: \"2026-01-02T00:00:00Z\", first: 10, after: $after) {
                    totalCount edges { node { ts voltageV socPct } } pageInfo { hasNextPage endCursor } } }",
                json!({ "id": a[4], "after": after }),
            )
            .await;
        let conn = &data["batteryMetrics"];
        assert_eq!(conn["totalCount"], 25);
        got.extend(
            conn["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["voltageV"].as_f64().unwrap()),
        );
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
    let expected: Vec<f64> = samples.iter().map(|s| s.voltage_v.unwrap()).collect();
    assert_eq!(got, expected, "oldest first, each once");

    t.fold().await;
    let latest = t
        .data("query($id: ID!) { node(id: $id) { ... on Battery { sohPct lastSampleAt latestSample { socPct } } } }", json!({ "id": a[4] }))
        .await;
    assert_eq!(
        latest["node"]["latestSample"]["socPct"], 56.0,
        "newest sample even when written first"
    );
    assert_eq!(latest["node"]["sohPct"], 97.5);
    let code = t
        .error_code(
            "query($id: ID!) { batteryMetrics(batteryId: $id, from: \"2026-01-02T00:00:00Z\", to: \"2026-01-01T00:00:00Z\") { totalCount } }",
            json!({ "id": a[4] }),
        )
        .await;
    assert_eq!(code, "VALIDATION_FAILED");
}
