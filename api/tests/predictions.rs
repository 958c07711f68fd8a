//! Predictions: the Rust features and the committed ONNX models reproduce
//! the training code (fixtures written by `train.py`) from histories that
//! went through the real ingestion path; GraphQL's `prediction` on a known
//! history; insufficient data; the model registry (bad uploads, activation,
//! rollback); the `predictions` subscription, across two replicas through
//! Redis too; a server without ONNX Runtime says so.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, Backend, TestApp, create_chain};
use futures_util::StreamExt;
use serde_json::{Value, json};
use trackingbms_api::predict::{self, features, store};

fn fixtures() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/fixtures/parity.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("parity fixtures")).expect("JSON")
}

fn fixture(cell_prefix: &str) -> Value {
    fixtures()
        .into_iter()
        .find(|f| {
            f["cell"]
                .as_str()
                .unwrap_or_default()
                .starts_with(cell_prefix)
        })
        .expect("fixture present")
}

fn rfc3339(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .expect("valid time")
        .to_rfc3339()
}

/// Ingests the fixture's samples for `battery` through `ingestSamples`.
async fn ingest(t: &TestApp, battery: &str, samples: &[Value]) {
    for chunk in samples.chunks(2_000) {
        let rows: Vec<Value> = chunk
            .iter()
            .map(|s| {
                json!({ "battery": battery, "ts": rfc3339(s["ts"].as_i64().unwrap()),
                        "sohPct": s["sohPct"], "tempAvgC": s["tempAvgC"], "tempMaxC": s["tempMaxC"],
                        "cycleCount": s["cycleCount"] })
            })
            .collect();
        let r = t
            .data(
                "mutation($s: [SampleInput!]!) { ingestSamples(samples: $s) { accepted rejected { code message } } }",
                json!({ "s": rows }),
            )
            .await;
        assert_eq!(r["ingestSamples"]["accepted"], json!(chunk.len()), "{r:#}");
    }
}

fn battery_row_id(global: &str) -> i64 {
    trackingbms_api::ids::decode(trackingbms_api::ids::Kind::Battery, global).expect("battery id")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_f64().expect("number")).collect())
        .unwrap_or_default()
}

async fn parity(t: TestApp) {
    for (i, f) in fixtures().into_iter().enumerate() {
        let [.., battery] = create_chain(&t, &format!("parity-{i}")).await;
        let samples = f["samples"].as_array().expect("samples").clone();
        ingest(&t, &battery, &samples).await;
        let id = battery_row_id(&battery);
        let h = store::histories(&t.app.db, &[id])
            .await
            .expect("history loads")
            .remove(&id)
            .unwrap_or_default();
        let eol = f["end_of_life"].as_f64().unwrap();
        let rust = features::forecast(&h.points, h.efc, eol);
        let python = floats(&f["forecast_features"]);
        match rust {
            None => assert!(
                python.is_empty(),
                "{}: Rust found too little data",
                f["cell"]
            ),
            Some(x) => {
                assert_eq!(x.len(), python.len());
                for (k, (a, b)) in x.iter().zip(&python).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-9,
                        "{} feature {}: Rust {a} vs Python {b}",
                        f["cell"],
                        features::FORECAST_FEATURES[k]
                    );
                }
                // The committed model reproduces the training code's outputs.
                let out = predict::forecast_raw(&t.app.predictor, &[x]).expect("inference");
                let expected = [
                    floats(&f["soh_delta"]),
                    floats(&f["rul_log1p"]),
                    vec![f["failure_probability"].as_f64().unwrap()],
                ];
                for (got, want) in out.iter().zip(&expected) {
                    for (g, w) in got.iter().zip(want) {
                        assert!(
                            (f64::from(*g) - w).abs() < 1e-5,
                            "{}: ONNX {g} vs sklearn {w}",
                            f["cell"]
                        );
                    }
                }
                // The factor rows' model is the forecast's median life: on
                // this row and on rows with features set to typical values.
                let reference = &t.app.predictor.manifest().reference_values;
                let mut rows = vec![x];
                for k in 0..x.len() {
                    let mut y = x;
                    y[k] = reference[k];
                    rows.push(y);
                }
                let whole = predict::forecast_raw(&t.app.predictor, &rows).expect("inference");
                let median =
                    predict::remaining_life_raw(&t.app.predictor, &rows).expect("inference");
                assert_eq!(median.len(), rows.len());
                for (r, m) in median.iter().enumerate() {
                    let w = whole[1][r * 3 + 1];
                    assert!(
                        (m - w).abs() < 1e-5,
                        "{}: row {r}: median life {m} vs forecast {w}",
                        f["cell"]
                    );
                }
            }
        }
        let python_a = floats(&f["anomaly_features"]);
        match features::anomaly(&h.points) {
            None => assert!(
                python_a.is_empty(),
                "{}: anomaly features missing",
                f["cell"]
            ),
            Some(a) => {
                for (k, (x, y)) in a.iter().zip(&python_a).enumerate() {
                    assert!(
                        (x - y).abs() < 1e-9,
                        "{} anomaly feature {}: Rust {x} vs Python {y}",
                        f["cell"],
                        features::ANOMALY_FEATURES[k]
                    );
                }
                let score = predict::anomaly_raw(&t.app.predictor, &[a]).expect("inference");
                let want = f["anomaly_score"].as_f64().unwrap();
                assert!(
                    (f64::from(score[0]) - want).abs() < 1e-5,
                    "anomaly {} vs {want}",
                    score[0]
                );
            }
        }
    }
}

const PREDICTION: &str = "query($id: ID!) { node(id: $id) { ... on Battery { prediction {
    batteryId status sohIn30Days { value low high } rulDays { value low high }
    failureProbability30d anomalyScore riskLevel factors { name impact } modelVersion computedAt asOf } } } }";

async fn known_history(t: TestApp) {
    // ISEA's fixture is past its end of life, INL's is not.
    for prefix in ["ISEA", "INL"] {
        check_known_history(&t, prefix).await;
    }
    // Two samples are not a history.
    let samples = fixture("ISEA")["samples"].as_array().unwrap().clone();
    let [.., young] = create_chain(&t, "young").await;
    ingest(&t, &young, &samples[..2]).await;
    let p = t.data(PREDICTION, json!({ "id": young })).await["node"]["prediction"].clone();
    assert_eq!(p["status"], "INSUFFICIENT_DATA");
    assert_eq!(p["sohIn30Days"], Value::Null);
    assert_eq!(p["rulDays"], Value::Null);
    assert_eq!(p["riskLevel"], Value::Null);
}

async fn check_known_history(t: &TestApp, prefix: &str) {
    let f = fixture(prefix);
    let [.., battery] = create_chain(t, &format!("known-{prefix}")).await;
    let samples = f["samples"].as_array().unwrap().clone();
    ingest(t, &battery, &samples).await;
    let p = t.data(PREDICTION, json!({ "id": battery })).await["node"]["prediction"].clone();
    assert_eq!(p["status"], "OK", "{p:#}");
    assert_eq!(p["batteryId"], json!(battery));
    let x = floats(&f["forecast_features"]);
    let soh_now = x[0] * 100.0;
    // The band is the three quantiles in order (quantile models may cross).
    let mut delta = floats(&f["soh_delta"]);
    delta.sort_by(f64::total_cmp);
    let soh = &p["sohIn30Days"];
    let (v, lo, hi) = (
        soh["value"].as_f64().unwrap(),
        soh["low"].as_f64().unwrap(),
        soh["high"].as_f64().unwrap(),
    );
    assert!(lo <= v && v <= hi, "band {lo} ≤ {v} ≤ {hi}");
    assert!(
        (v - (soh_now + delta[1] * 100.0)).abs() < 1e-3,
        "median {v} vs training {}",
        soh_now + delta[1] * 100.0
    );
    assert!(
        v <= soh_now + 1.0 && v > soh_now - 15.0,
        "SOH in 30 days {v} from {soh_now}"
    );
    let rul = &p["rulDays"];
    let (r, rlo, rhi) = (
        rul["value"].as_f64().unwrap(),
        rul["low"].as_f64().unwrap(),
        rul["high"].as_f64().unwrap(),
    );
    assert!(
        0.0 <= rlo && rlo <= r && r <= rhi,
        "RUL band {rlo} ≤ {r} ≤ {rhi}"
    );
    let expected_rul = floats(&f["rul_log1p"])[1].exp_m1();
    let prob = p["failureProbability30d"].as_f64().unwrap();
    if soh_now >= 80.0 {
        assert!(
            (r - expected_rul).abs() < 0.01 * expected_rul.max(1.0),
            "RUL {r} vs training {expected_rul}"
        );
    } else {
        // Past the end of life: no life left, failure certain.
        assert_eq!((r, rhi, prob), (0.0, 0.0, 1.0));
    }
    let risk = if r < 30.0 {
        "HIGH"
    } else if r < 90.0 {
        "MEDIUM"
    } else {
        "LOW"
    };
    assert_eq!(p["riskLevel"], risk);
    assert!((0.0..=1.0).contains(&prob));
    assert!(p["factors"].as_array().unwrap().len() <= 3);
    let builtin = t.app.predictor.manifest().version.clone();
    assert_eq!(
        p["modelVersion"],
        json!(format!("forecast:{builtin}+anomaly:{builtin}"))
    );
    let last_ts = samples.last().unwrap()["ts"].as_i64().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(p["asOf"].as_str().unwrap())
            .unwrap()
            .timestamp(),
        last_ts
    );
    let history = t
        .data(
            "query($id: ID!) { predictionHistory(batteryId: $id, from: \"2000-01-01T00:00:00Z\") { status computedAt } }",
            json!({ "id": battery }),
        )
        .await;
    assert_eq!(
        history["predictionHistory"].as_array().unwrap().len(),
        1,
        "{history:#}"
    );
}

/// Stored predictions of `battery_id`, counted in the database.
async fn stored_predictions(t: &TestApp, battery_id: i64) -> u64 {
    use entities::battery_prediction::{Column, Entity};
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    Entity::find()
        .filter(Column::BatteryId.eq(battery_id))
        .count(&t.app.db)
        .await
        .unwrap()
}

/// A battery with a stored prediction of the INL fixture's history.
async fn battery_with_prediction(t: &TestApp, suffix: &str) -> (String, i64) {
    let [.., battery] = create_chain(t, suffix).await;
    ingest(t, &battery, fixture("INL")["samples"].as_array().unwrap()).await;
    let p = t.data(PREDICTION, json!({ "id": battery })).await["node"]["prediction"].clone();
    assert_eq!(p["status"], "OK", "{p:#}");
    let id = battery_row_id(&battery);
    assert_eq!(stored_predictions(t, id).await, 1);
    (battery, id)
}

/// Deleting a battery deletes its stored predictions (on PostgreSQL a
/// trigger does what the foreign key's cascade does on SQLite).
async fn deleting_a_battery_deletes_its_predictions(t: TestApp) {
    let (battery, id) = battery_with_prediction(&t, "doomed").await;
    let (_, kept) = battery_with_prediction(&t, "kept").await;
    let deleted = t
        .data(
            "mutation($id: ID!) { deleteBattery(id: $id) }",
            json!({ "id": battery }),
        )
        .await;
    assert_eq!(deleted["deleteBattery"], json!(battery), "{deleted:#}");
    assert_eq!(stored_predictions(&t, id).await, 0);
    assert_eq!(stored_predictions(&t, kept).await, 1);
}

on_both_backends!(
    parity,
    known_history,
    deleting_a_battery_deletes_its_predictions
);

/// PostgreSQL has no foreign key on predictions: a batch holding a
/// prediction of a battery that no longer exists stores the others, and a
/// battery delete waits for a prediction insert in flight and then deletes
/// what it stored, so no prediction outlives its battery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_predictions_never_outlive_their_battery() {
    use sea_orm::{EntityTrait, sqlx};
    let t = TestApp::new(Backend::Postgres).await;
    let (battery, id) = battery_with_prediction(&t, "racing").await;
    let [.., other] = create_chain(&t, "other").await;
    let other = battery_row_id(&other);
    let stored = store::latest(&t.app.db, &[id]).await.unwrap()[&id].clone();
    let later = |battery_id| entities::battery_prediction::Model {
        battery_id,
        computed_at: stored.computed_at + chrono::Duration::seconds(1),
        ..stored.clone()
    };
    store::insert(&t.app.db, &[later(other), later(i64::MAX)])
        .await
        .expect("a prediction of a missing battery is skipped, not an error");
    assert_eq!(stored_predictions(&t, other).await, 1);
    assert_eq!(stored_predictions(&t, i64::MAX).await, 0);

    // An insert in flight (its lock taken, its row not committed)…
    let pool = t.app.db.get_postgres_connection_pool();
    let mut insert = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(migration::PREDICTIONS_LOCK)
        .execute(&mut *insert)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO battery_predictions (battery_id, computed_at, tenant_id, status, factors, model_version) \
         SELECT $1, now(), tenant_id, 'OK', '[]', 'in-flight' FROM batteries WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *insert)
    .await
    .unwrap();
    // …holds up the battery's delete until it commits.
    let db = t.app.db.clone();
    let delete = tokio::spawn(async move {
        entities::battery::Entity::delete_by_id(id)
            .exec(&db)
            .await
            .map(|r| r.rows_affected)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!delete.is_finished(), "the delete waits for the insert");
    insert.commit().await.unwrap();
    assert_eq!(delete.await.unwrap().unwrap(), 1);
    assert_eq!(
        stored_predictions(&t, id).await,
        0,
        "{battery}'s predictions"
    );
    assert_eq!(stored_predictions(&t, other).await, 1);
}

fn model(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/models/onnx/{name}.onnx",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("model file")
}

const UPLOAD: &str = "mutation($file: Upload!, $kind: PredictionModelKind!, $version: String!) {
    uploadPredictionModel(file: $file, kind: $kind, version: $version, metadata: {note: \"test\"}) { id version active sha256 metadata } }";

async fn upload(t: &TestApp, kind: &str, version: &str, bytes: Vec<u8>) -> Value {
    t.upload(
        ADMIN_KEY,
        UPLOAD,
        json!({ "file": null, "kind": kind, "version": version }),
        bytes,
    )
    .await
}

fn error(r: &Value) -> (String, String) {
    (
        r["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        r["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_rejects_bad_models_activates_and_rolls_back() {
    let t = TestApp::with_config(Backend::Sqlite, |c| {
        c.predictions.max_model_bytes = 2_000_000
    })
    .await;
    let (code, msg) =
        error(&upload(&t, "FORECAST", "junk", b"not an onnx file at all".to_vec()).await);
    assert_eq!(code, "VALIDATION_FAILED");
    assert!(msg.contains("not a loadable ONNX model"), "{msg}");
    let (code, msg) = error(&upload(&t, "FORECAST", "wrong-shape", model("anomaly")).await);
    assert_eq!(code, "VALIDATION_FAILED");
    assert!(msg.contains("float32 [N, 12]"), "{msg}");
    let (code, msg) = error(&upload(&t, "FORECAST", "huge", vec![0u8; 2_000_001]).await);
    assert_eq!(code, "VALIDATION_FAILED");
    assert!(msg.contains("limit is 2000000"), "{msg}");
    let (code, _) = error(&upload(&t, "FORECAST", "bad version!", model("forecast")).await);
    assert_eq!(code, "VALIDATION_FAILED");

    let up = upload(&t, "FORECAST", "v2", model("forecast")).await;
    let v2 = up["data"]["uploadPredictionModel"].clone();
    assert_eq!(v2["active"], false, "{up:#}");
    assert_eq!(v2["metadata"]["note"], "test");
    let (code, _) = error(&upload(&t, "FORECAST", "v2", model("forecast")).await);
    assert_eq!(code, "CONFLICT");

    // A cell short of its end of life, so that it has factors.
    let f = fixture("INL");
    let [.., battery] = create_chain(&t, "registry").await;
    ingest(&t, &battery, f["samples"].as_array().unwrap()).await;
    let id = battery_row_id(&battery);
    let builtin = t.app.predictor.manifest().version.clone();
    let version = |p: &Vec<entities::battery_prediction::Model>| p[0].model_version.clone();
    let with_builtin = t.app.predictor.refresh(&[id]).await.unwrap();
    assert!(version(&with_builtin).starts_with(&format!("forecast:{builtin}")));

    let a = t
        .data("mutation($id: ID!) { activatePredictionModel(id: $id) { version active activatedAt } }", json!({ "id": v2["id"] }))
        .await;
    assert_eq!(a["activatePredictionModel"]["active"], true);
    let with_v2 = t.app.predictor.refresh(&[id]).await.unwrap();
    assert!(version(&with_v2).starts_with("forecast:v2+"));
    // v2 holds the built-in forecast's bytes: the factors (from its median
    // life, here from the whole uploaded model) are the built-in ones.
    let factors = with_builtin[0].factors.as_array().expect("factors");
    assert!(!factors.is_empty(), "{factors:?}");
    assert_eq!(with_v2[0].factors, with_builtin[0].factors);
    let p = t.data(PREDICTION, json!({ "id": battery })).await["node"]["prediction"].clone();
    assert!(
        p["modelVersion"]
            .as_str()
            .unwrap()
            .starts_with("forecast:v2+"),
        "{p:#}"
    );

    let r = t
        .data(
            "mutation { rollbackPredictionModel(kind: FORECAST) { version } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r["rollbackPredictionModel"],
        Value::Null,
        "back to the built-in model"
    );
    assert!(
        version(&t.app.predictor.refresh(&[id]).await.unwrap())
            .starts_with(&format!("forecast:{builtin}"))
    );
    let (code, _) = error(
        &t.gql(
            "mutation { rollbackPredictionModel(kind: FORECAST) { version } }",
            json!({}),
        )
        .await,
    );
    assert_eq!(code, "CONFLICT", "nothing left to roll back");
    let listed = t
        .data(
            "{ predictionModels(kind: FORECAST) { version active } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["predictionModels"],
        json!([{ "version": "v2", "active": false }])
    );
    let audit = t
        .data("{ auditLog(first: 50) { entries { action } } }", json!({}))
        .await
        .to_string();
    for action in [
        "prediction_model.upload",
        "prediction_model.activate",
        "prediction_model.rollback",
    ] {
        assert!(audit.contains(action), "{action} audited");
    }
}

async fn next_update(sub: &mut futures_util::stream::BoxStream<'static, Value>) -> Value {
    let item = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a prediction update within 20 s")
        .expect("stream open");
    assert!(item.get("errors").is_none(), "{item:#}");
    item["data"]["predictions"].clone()
}

const SUBSCRIBE: &str = "subscription($id: ID!) { predictions(scope: {batteryId: $id}) { batteryId missed prediction { status asOf rulDays { value } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_gets_a_prediction_after_new_samples() {
    let t = TestApp::with_config(Backend::Sqlite, |c| c.predictions.debounce_ms = 50).await;
    let task = t.app.start_predictions().expect("predictions run");
    let f = fixture("ISEA");
    let samples = f["samples"].as_array().unwrap().clone();
    let [.., battery] = create_chain(&t, "live").await;
    let mut sub = t.subscribe(SUBSCRIBE, json!({ "id": battery }));
    let split = samples.len() - 1;
    ingest(&t, &battery, &samples[..split]).await;
    let first = next_update(&mut sub).await;
    assert_eq!(first["batteryId"], json!(battery));
    assert_eq!(first["prediction"]["status"], "OK", "{first:#}");
    ingest(&t, &battery, &samples[split..]).await;
    let second = next_update(&mut sub).await;
    let at = |u: &Value| {
        chrono::DateTime::parse_from_rfc3339(u["prediction"]["asOf"].as_str().unwrap()).unwrap()
    };
    assert!(
        at(&second) > at(&first),
        "the update follows the new sample"
    );
    assert_eq!(
        at(&second).timestamp(),
        samples[split]["ts"].as_i64().unwrap()
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prediction_computed_on_one_replica_reaches_a_subscriber_of_another() {
    let redis = trackingbms_api::fixtures::redis_url();
    let a = TestApp::with_config(Backend::Postgres, |c| {
        c.predictions.debounce_ms = 50;
        c.redis_url = Some(redis.clone());
        c.live.redis_channel = format!("test-predictions-{}", std::process::id());
    })
    .await;
    let url = a.app.config.effective_database_url();
    let channel = a.app.config.live.redis_channel.clone();
    let b = TestApp::with_config(Backend::Postgres, |c| {
        c.database_url = Some(url);
        c.redis_url = Some(redis.clone());
        c.live.redis_channel = channel;
    })
    .await;
    let task = a.app.start_predictions().expect("predictions run");
    let [.., battery] = create_chain(&a, "replicas").await;
    let mut sub = b.subscribe(SUBSCRIBE, json!({ "id": battery }));
    ingest(&a, &battery, fixture("ISEA")["samples"].as_array().unwrap()).await;
    let update = next_update(&mut sub).await;
    assert_eq!(update["prediction"]["status"], "OK", "{update:#}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_onnx_runtime_predictions_say_why() {
    let t = TestApp::with_config(Backend::Sqlite, |c| c.predictions.enabled = false).await;
    let [.., battery] = create_chain(&t, "off").await;
    let r = t.gql(PREDICTION, json!({ "id": battery })).await;
    let (code, msg) = error(&r);
    assert_eq!(code, "UNAVAILABLE");
    assert!(msg.contains("predictions are disabled"), "{msg}");
    let s = t
        .data(
            "{ predictionService { available reason builtinVersion } }",
            json!({}),
        )
        .await;
    assert_eq!(s["predictionService"]["available"], false);
    assert!(
        s["predictionService"]["reason"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    assert!(t.app.start_predictions().is_none());
}
