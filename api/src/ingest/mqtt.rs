//! MQTT: subscribes to a topic pattern on a broker and ingests JSON payloads
//! — one sample object, or an array of them, with the fields of
//! `SampleInput`. Messages are received at QoS 1 and acknowledged only after
//! their samples are committed (or refused), so the broker redelivers what a
//! crash interrupted; duplicates are harmless.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

use crate::auth::Principal;
use crate::config::MqttConfig;
use crate::telemetry::Ingestor;
use crate::telemetry::checks::MALFORMED;
use crate::telemetry::input::{RejectedSample, SampleInput};
use crate::telemetry::pipeline::Record;

/// Parses a payload into records (an object or an array of objects).
pub fn parse(payload: &[u8]) -> Vec<Record> {
    let malformed = |e: serde_json::Error| {
        vec![(
            0,
            Err(RejectedSample::new(
                0,
                MALFORMED,
                format!("not a sample: {e}"),
            )),
        )]
    };
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return malformed(e),
    };
    let items = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let i = i as u64;
            (
                i,
                serde_json::from_value::<SampleInput>(v)
                    .map_err(|e| RejectedSample::new(i, MALFORMED, format!("not a sample: {e}"))),
            )
        })
        .collect()
}

/// Connects to the broker in `config` and ingests as `who` until aborted,
/// reconnecting with backoff.
pub fn spawn(
    config: MqttConfig,
    ingestor: Ingestor,
    who: Principal,
) -> anyhow::Result<JoinHandle<()>> {
    let url = url_parts(&config.url)?;
    let mut opts = MqttOptions::new(config.client_id.clone(), url.0, url.1);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(opts, 64);
    Ok(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    // A clean session forgets subscriptions: subscribe on every (re)connect.
                    if let Err(err) = client
                        .subscribe(config.topic.clone(), QoS::AtLeastOnce)
                        .await
                    {
                        tracing::warn!(%err, "MQTT subscribe failed");
                    } else {
                        tracing::info!(topic = %config.topic, "MQTT subscribed");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(msg))) => {
                    let records = parse(&msg.payload);
                    match ingestor.ingest(&who, records).await {
                        Ok(report) => {
                            if report.rejected_count > 0 {
                                tracing::warn!(topic = %msg.topic, rejected = report.rejected_count, first = ?report.rejected.first(), "MQTT samples rejected");
                            }
                            if let Err(err) = client.ack(&msg).await {
                                tracing::warn!(%err, "MQTT ack failed");
                            }
                        }
                        // Not acknowledged: the broker redelivers after reconnection.
                        Err(err) => {
                            tracing::warn!(%err, topic = %msg.topic, "MQTT samples not stored")
                        }
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(%err, "MQTT connection error; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }))
}

/// `mqtt://host:port` → (host, port).
fn url_parts(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| anyhow::anyhow!("mqtt.url must look like mqtt://host:1883, got {url}"))?;
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    Ok((host.to_owned(), port.trim_end_matches('/').parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_objects_or_arrays() {
        let one = parse(br#"{"battery":"B","ts":"2026-01-01T00:00:00Z","socPct":50}"#);
        assert_eq!(one.len(), 1);
        assert!(one[0].1.is_ok());
        let many =
            parse(br#"[{"battery":"B","ts":"2026-01-01T00:00:00Z"},{"battery":"B","soc":1}]"#);
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].1.as_ref().unwrap_err().index, 1);
        assert!(parse(b"not json")[0].1.is_err());
        assert_eq!(
            url_parts("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert!(url_parts("http://x").is_err());
    }
}
