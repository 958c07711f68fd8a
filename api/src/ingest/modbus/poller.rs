//! Polls one Modbus TCP BMS at its interval: reads the register map's
//! blocks for each of its batteries (ordered by serial, unit ids 1, 2, …),
//! decodes a sample per battery and sends it through the ingestion pipeline.
//! Every request has a timeout; after repeated failures the connection is
//! dropped and re-established with exponential backoff.

use std::collections::HashMap;
use std::time::Duration;

use entities::{battery, bms};
use tokio_modbus::client::{Context, Reader, tcp};
use tokio_modbus::prelude::{Slave, SlaveContext};

use super::register_map::RegisterMap;
use super::status::StatusRegistry;
use crate::auth::Principal;
use crate::bus::Owner;
use crate::ids::{self, Kind};
use crate::telemetry::Ingestor;
use crate::telemetry::input::SampleInput;

/// What to poll.
#[derive(Clone, Debug)]
pub struct Target {
    pub bms: bms::Model,
    pub batteries: Vec<battery::Model>,
    pub map: RegisterMap,
}

impl Target {
    pub fn owner(&self) -> Owner {
        Owner {
            tenant_id: self.bms.tenant_id,
            client_id: self.bms.client_id,
            site_id: self.bms.site_id,
            zone_id: self.bms.zone_id,
            bms_id: self.bms.id,
        }
    }
}

/// Timings of the poller.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub request_timeout: Duration,
    pub max_backoff: Duration,
    /// Failed polls before the connection is re-established.
    pub reconnect_after: u32,
}

async fn connect(endpoint: &str, timeout: Duration) -> anyhow::Result<Context> {
    let addr = tokio::time::timeout(timeout, tokio::net::lookup_host(endpoint))
        .await
        .map_err(|_| anyhow::anyhow!("resolving {endpoint} timed out"))??
        .next()
        .ok_or_else(|| anyhow::anyhow!("{endpoint} does not resolve"))?;
    let ctx = tokio::time::timeout(timeout, tcp::connect_slave(addr, Slave(1)))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {endpoint} timed out"))??;
    Ok(ctx)
}

async fn poll_once(
    ctx: &mut Context,
    target: &Target,
    timeout: Duration,
) -> anyhow::Result<Vec<SampleInput>> {
    let mut samples = Vec::with_capacity(target.batteries.len());
    for (i, b) in target.batteries.iter().enumerate() {
        let unit = u8::try_from(i + 1)
            .map_err(|_| anyhow::anyhow!("more than 247 batteries on one unit"))?;
        ctx.set_slave(Slave(unit));
        let mut regs = HashMap::new();
        for block in &target.map.blocks {
            let words = tokio::time::timeout(
                timeout,
                ctx.read_holding_registers(block.start, block.count),
            )
            .await
            .map_err(|_| anyhow::anyhow!("reading {}+{} timed out", block.start, block.count))?
            .map_err(|e| anyhow::anyhow!("transport: {e}"))?
            .map_err(|e| anyhow::anyhow!("device exception: {e}"))?;
            for (k, w) in words.into_iter().enumerate() {
                regs.insert(block.start + k as u16, w);
            }
        }
        let mut sample = SampleInput::new(ids::encode(Kind::Battery, b.id).0, crate::clock::now());
        target.map.decode(&regs, &mut sample)?;
        samples.push(sample);
    }
    Ok(samples)
}

/// Polls `target` until the task is aborted.
pub async fn run(
    target: Target,
    ingestor: Ingestor,
    status: std::sync::Arc<StatusRegistry>,
    timing: Timing,
) {
    let owner = target.owner();
    let bms_id = target.bms.id;
    let endpoint = target.bms.endpoint.clone().unwrap_or_default();
    let who = Principal::operator(target.bms.tenant_id, format!("modbus:bms:{bms_id}"));
    let interval = Duration::from_millis(target.bms.poll_interval_ms.max(100) as u64);
    let mut backoff = Duration::from_millis(250);
    loop {
        let mut ctx = match connect(&endpoint, timing.request_timeout).await {
            Ok(ctx) => ctx,
            Err(err) => {
                status.failure(bms_id, owner, err.to_string(), false);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(timing.max_backoff);
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0;
        loop {
            ticker.tick().await;
            match poll_once(&mut ctx, &target, timing.request_timeout).await {
                Ok(samples) => {
                    let records = samples
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| (i as u64, Ok(s)))
                        .collect();
                    match ingestor.ingest(&who, records).await {
                        Ok(report) => {
                            if let Some(r) = report.rejected.first() {
                                tracing::warn!(bms = bms_id, code = %r.code, message = %r.message, "polled sample rejected");
                            }
                            failures = 0;
                            status.success(bms_id, owner);
                        }
                        // Storage is behind: the device is fine; try again next tick.
                        Err(err) => tracing::warn!(bms = bms_id, %err, "polled samples not stored"),
                    }
                }
                Err(err) => {
                    failures += 1;
                    status.failure(bms_id, owner, err.to_string(), true);
                    if failures >= timing.reconnect_after {
                        break;
                    }
                }
            }
        }
    }
}
