//! MQTT ingestion through the real Mosquitto of this machine: objects and
//! arrays are stored, bad samples are refused without losing good ones.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp, create_chain};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;
use trackingbms_api::config::MqttConfig;

async fn mqtt_payloads_are_ingested(backend: Backend) {
    let root = format!("tbmstest/{:016x}", rand::random::<u64>());
    let broker = trackingbms_api::fixtures::mqtt_url();
    let topic = format!("{root}/+/samples");
    let t = TestApp::with_config(backend, |c| {
        c.mqtt = Some(MqttConfig {
            url: broker.clone(),
            topic,
            client_id: format!("tbms-test-{:08x}", rand::random::<u32>()),
        })
    })
    .await;
    let ids = create_chain(&t, "MQ").await;
    let task = t.app.start_mqtt().unwrap().expect("MQTT configured");

    let (host, port) = broker
        .trim_start_matches("mqtt://")
        .rsplit_once(':')
        .unwrap();
    let opts = MqttOptions::new(
        format!("pub-{:08x}", rand::random::<u32>()),
        host,
        port.parse().unwrap(),
    );
    let (client, mut events) = AsyncClient::new(opts, 16);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let publish = |payload: String| {
        let client = client.clone();
        let topic = format!("{root}/SN-MQ/samples");
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap()
        }
    };

    // Until the server has subscribed, messages are not retained: probe.
    let started = Instant::now();
    let mut k = 0;
    while t.raw_sample_count(&ids[4]).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the MQTT subscriber never received a message"
        );
        publish(json!({ "battery": "SN-MQ", "ts": format!("2026-04-01T00:00:{:02}Z", k % 60), "socPct": 1 }).to_string()).await;
        k += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = t.raw_sample_count(&ids[4]).await;

    publish(json!({ "battery": ids[4], "ts": "2026-04-02T00:00:00Z", "socPct": 50.0, "voltageV": 51.0 }).to_string()).await;
    publish(
        json!([
            { "battery": "SN-MQ", "ts": "2026-04-02T00:00:05Z", "socPct": 49.5 },
            { "battery": "NOPE", "ts": "2026-04-02T00:00:05Z", "socPct": 49.5 },
            { "battery": "SN-MQ", "ts": "2026-04-02T00:00:10Z", "socPct": 140.0 },
        ])
        .to_string(),
    )
    .await;
    publish("not json at all".into()).await;
    publish(
        json!({ "battery": "SN-MQ", "ts": "2026-04-02T00:00:15Z", "socPct": 49.0 }).to_string(),
    )
    .await;

    let started = Instant::now();
    while t.raw_sample_count(&ids[4]).await < before + 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "MQTT samples were not stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        t.raw_sample_count(&ids[4]).await,
        before + 3,
        "only the valid samples are stored"
    );
    let latest = t
        .data(
            "query($id: ID!) { node(id: $id) { ... on Battery { latestSample { socPct } } } }",
            json!({ "id": ids[4] }),
        )
        .await;
    assert_eq!(
        latest["node"]["latestSample"]["socPct"], 49.0,
        "a malformed message does not stop the stream"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_mqtt_ingestion() {
    mqtt_payloads_are_ingested(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mqtt_ingestion() {
    mqtt_payloads_are_ingested(Backend::Postgres).await;
}
