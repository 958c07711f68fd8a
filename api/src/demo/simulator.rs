//! Simulated telemetry for the demo fleet. Each battery follows
//! charge / rest / discharge cycles: SOC integrates the current, voltage
//! follows the chemistry's open-circuit curve plus I·R, temperature follows
//! the load and the time of day, SOH fades with equivalent full cycles. A few
//! batteries misbehave (overheating, a weak cell, fast fade) so alerts and
//! predictions have something to find.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use entities::enums::Chemistry;
use entities::{battery, battery_sample};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::fleet::{self, FleetSpec};
use crate::App;
use crate::telemetry::Ingestor;
use crate::telemetry::input::SampleInput;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Charging,
    Resting { until_discharge: bool, left_s: f64 },
    Discharging,
}

/// A way a demo battery misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Overheating,
    WeakCell,
    FastFade,
}

/// The simulated state of one battery.
#[derive(Debug, Clone)]
pub struct BatterySim {
    pub battery_id: i64,
    chemistry: Chemistry,
    capacity_ah: f64,
    cells: f64,
    c_rate: f64,
    mode: Mode,
    pub soc: f64,
    pub soh: f64,
    pub cycles: f64,
    pub temp_c: f64,
    energy_kwh: f64,
    pub fault: Option<Fault>,
}

impl BatterySim {
    /// Initial state from the battery's specification and age.
    pub fn new(b: &battery::Model, rng: &mut SmallRng) -> Self {
        let age_years = (Utc::now().date_naive() - b.install_date).num_days().max(0) as f64 / 365.0;
        let (fade_per_year, cell_v) = match b.chemistry {
            Chemistry::Lfp => (1.8, 3.2),
            Chemistry::Nmc | Chemistry::Nca => (3.0, 3.7),
            Chemistry::Lto => (0.8, 2.3),
            _ => (2.5, 3.0),
        };
        let fault = match rng.random_range(0..100) {
            0 => Some(Fault::Overheating),
            1 => Some(Fault::WeakCell),
            2 => Some(Fault::FastFade),
            _ => None,
        };
        let soh = b.soh_pct.unwrap_or_else(|| {
            (100.0 - age_years * fade_per_year - rng.random_range(0.0..2.0)).clamp(55.0, 100.0)
        });
        Self {
            battery_id: b.id,
            chemistry: b.chemistry,
            capacity_ah: b.nominal_capacity_ah,
            cells: (b.nominal_voltage_v / cell_v).round().max(1.0),
            c_rate: rng.random_range(0.2..0.5),
            mode: if rng.random_bool(0.5) {
                Mode::Charging
            } else {
                Mode::Discharging
            },
            soc: rng.random_range(20.0..90.0),
            soh,
            cycles: (age_years * 365.0 * rng.random_range(0.5..1.1)).round(),
            temp_c: 22.0,
            energy_kwh: 0.0,
            fault,
        }
    }

    fn ocv_cell(&self) -> f64 {
        let s = (self.soc / 100.0).clamp(0.0, 1.0);
        match self.chemistry {
            // LFP: a long plateau, steep at both ends.
            Chemistry::Lfp => 2.9 + 0.35 * s.powf(0.15) + 0.1 * s.powi(10),
            Chemistry::Lto => 2.1 + 0.4 * s,
            _ => 3.3 + 0.9 * s,
        }
    }

    /// Advances the state by `dt_s` seconds ending at `at`, and returns the sample.
    pub fn step(
        &mut self,
        at: DateTime<Utc>,
        dt_s: f64,
        rng: &mut SmallRng,
    ) -> battery_sample::Model {
        let usable_ah = self.capacity_ah * self.soh / 100.0;
        let load_noise = 1.0 + rng.random_range(-0.15..0.15);
        let current = match self.mode {
            Mode::Charging => self.c_rate * self.capacity_ah * load_noise,
            Mode::Discharging => -self.c_rate * self.capacity_ah * load_noise,
            Mode::Resting { .. } => rng.random_range(-0.2..0.2),
        };
        self.soc = (self.soc + current * dt_s / 3600.0 / usable_ah * 100.0).clamp(0.0, 100.0);
        self.mode = match self.mode {
            Mode::Charging if self.soc >= 95.0 => Mode::Resting {
                until_discharge: true,
                left_s: 900.0,
            },
            Mode::Discharging if self.soc <= 15.0 => Mode::Resting {
                until_discharge: false,
                left_s: 900.0,
            },
            Mode::Resting {
                until_discharge,
                left_s,
            } if left_s <= dt_s => {
                if until_discharge {
                    Mode::Discharging
                } else {
                    Mode::Charging
                }
            }
            Mode::Resting {
                until_discharge,
                left_s,
            } => Mode::Resting {
                until_discharge,
                left_s: left_s - dt_s,
            },
            m => m,
        };

        let resistance = 0.0006 * self.cells * (1.0 + (100.0 - self.soh) / 50.0);
        let mut voltage = self.cells * self.ocv_cell() + current * resistance;
        // Healthy cells drift apart a few millivolts as the pack ages; a
        // weak cell sags below the others, more so when the pack is empty.
        let cell_mean = voltage / self.cells;
        let imbalance = 0.004 + 0.003 * (100.0 - self.soh) / 10.0;
        let mut cell_min = cell_mean - imbalance;
        if self.fault == Some(Fault::WeakCell) {
            let sag = 0.25 + 0.002 * (100.0 - self.soc);
            voltage -= sag;
            cell_min -= sag;
        }
        let cell_max = cell_mean + imbalance;
        let hour = at.hour() as f64 + at.minute() as f64 / 60.0;
        let ambient = 20.0 + 5.0 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin();
        let heating = current * current * resistance / (self.capacity_ah * 0.9);
        let target = ambient
            + heating
            + if self.fault == Some(Fault::Overheating) {
                18.0
            } else {
                0.0
            };
        let relax = 1.0 - (-dt_s / 1200.0).exp();
        self.temp_c += (target - self.temp_c) * relax + rng.random_range(-0.1..0.1);
        let spread = 1.0 + current.abs() / self.capacity_ah * 4.0;

        let efc = current.abs() * dt_s / 3600.0 / self.capacity_ah / 2.0;
        self.cycles += efc;
        let fade_per_efc = match self.chemistry {
            Chemistry::Lfp => 0.004,
            Chemistry::Lto => 0.001,
            _ => 0.008,
        } * if self.fault == Some(Fault::FastFade) {
            40.0
        } else {
            1.0
        };
        self.soh = (self.soh - efc * fade_per_efc).max(0.0);
        let power = voltage * current;
        self.energy_kwh += power.abs() * dt_s / 3.6e6;
        let efficiency = match self.fault {
            Some(Fault::WeakCell) => 88.0,
            _ => 96.0,
        } + rng.random_range(-0.8..0.8);

        let r2 = |v: f64| (v * 100.0).round() / 100.0;
        battery_sample::Model {
            battery_id: self.battery_id,
            ts: at,
            voltage_v: Some(r2(voltage)),
            current_a: Some(r2(current)),
            power_w: Some(r2(power)),
            soc_pct: Some(r2(self.soc)),
            soh_pct: Some((self.soh * 1000.0).round() / 1000.0),
            temp_min_c: Some(r2(self.temp_c - spread / 2.0)),
            temp_max_c: Some(r2(self.temp_c
                + spread / 2.0
                + if self.fault == Some(Fault::Overheating) {
                    4.0
                } else {
                    0.0
                })),
            temp_avg_c: Some(r2(self.temp_c)),
            energy_kwh: Some((self.energy_kwh * 1000.0).round() / 1000.0),
            efficiency_pct: Some(r2(efficiency)),
            cycle_count: Some(self.cycles as i32),
            cell_voltage_min_v: Some((cell_min * 1000.0).round() / 1000.0),
            cell_voltage_max_v: Some((cell_max * 1000.0).round() / 1000.0),
        }
    }
}

/// A fleet of simulated batteries stepping together.
pub struct FleetSim {
    pub batteries: Vec<BatterySim>,
    rng: SmallRng,
}

impl FleetSim {
    pub fn new(batteries: &[battery::Model], seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let batteries = batteries
            .iter()
            .map(|b| BatterySim::new(b, &mut rng))
            .collect();
        Self { batteries, rng }
    }

    /// One sample per battery at `at`, `dt_s` seconds after the previous step.
    pub fn step(&mut self, at: DateTime<Utc>, dt_s: f64) -> Vec<battery_sample::Model> {
        let rng = &mut self.rng;
        self.batteries
            .iter_mut()
            .map(|b| b.step(at, dt_s, rng))
            .collect()
    }
}

impl FleetSim {
    /// One health reading a day for the `days` days before `now` (SOH
    /// fading towards today's value, cycle count, temperature), so the demo
    /// fleet has the history predictions need.
    pub fn daily_history(&mut self, now: DateTime<Utc>, days: i64) -> Vec<battery_sample::Model> {
        let rng = &mut self.rng;
        let mut out = Vec::with_capacity(self.batteries.len() * days as usize);
        for b in &self.batteries {
            let per_year = match b.chemistry {
                Chemistry::Lfp => 1.8,
                Chemistry::Nmc | Chemistry::Nca => 3.0,
                Chemistry::Lto => 0.8,
                _ => 2.5,
            } * if b.fault == Some(Fault::FastFade) {
                6.0
            } else {
                1.0
            };
            let hot = if b.fault == Some(Fault::Overheating) {
                12.0
            } else {
                0.0
            };
            let cycles_per_day = rng.random_range(0.4..1.1);
            for k in (1..=days).rev() {
                let soh = b.soh + per_year * k as f64 / 365.0 + rng.random_range(-0.15..0.15);
                out.push(battery_sample::Model {
                    battery_id: b.battery_id,
                    ts: now - chrono::Duration::days(k),
                    voltage_v: None,
                    current_a: None,
                    power_w: None,
                    soc_pct: None,
                    soh_pct: Some(soh.clamp(0.0, 100.0)),
                    temp_min_c: None,
                    temp_max_c: None,
                    temp_avg_c: Some(24.0 + hot + rng.random_range(-2.0..2.0)),
                    energy_kwh: None,
                    efficiency_pct: None,
                    cycle_count: Some((b.cycles - cycles_per_day * k as f64).max(0.0) as i32),
                    cell_voltage_min_v: None,
                    cell_voltage_max_v: None,
                });
            }
        }
        out
    }
}

/// Sends simulated samples through the ingestion pipeline, like any producer.
async fn feed(ingestor: &Ingestor, who: &crate::auth::Principal, rows: Vec<battery_sample::Model>) {
    let records = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64, Ok(SampleInput::from(r))))
        .collect();
    match ingestor.ingest(who, records).await {
        Ok(report) if report.rejected_count > 0 => {
            tracing::warn!(rejected = report.rejected_count, first = ?report.rejected.first(), "demo samples rejected");
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "demo samples not stored"),
    }
}

/// The running demo feed; [`DemoTask::stop`] ends it.
pub struct DemoTask {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl DemoTask {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// Days of daily health readings a fresh demo fleet starts with.
const DAILY_HISTORY_DAYS: i64 = 120;

/// Creates the demo fleet when the tenant has no clients yet, then keeps
/// appending samples in the background (after a backfill of recent history
/// for a fresh fleet).
pub async fn start(app: &App) -> anyhow::Result<DemoTask> {
    let who = app.system("demo");
    let existing = entities::client::Entity::find()
        .filter(entities::client::Column::TenantId.eq(who.tenant_id))
        .count(&app.db)
        .await?;
    let fresh = existing == 0;
    if fresh {
        let spec = FleetSpec::demo();
        tracing::info!(batteries = spec.battery_count(), "creating the demo fleet");
        fleet::create(&app.hierarchy, &who, &spec).await?;
    } else {
        tracing::info!(
            clients = existing,
            "database already has a fleet; simulating its batteries"
        );
    }
    let batteries = battery::Entity::find()
        .filter(battery::Column::TenantId.eq(who.tenant_id))
        .order_by_asc(battery::Column::Id)
        .all(&app.db)
        .await?;
    let mut sim = FleetSim::new(&batteries, 42);
    let interval = Duration::from_secs(app.config.demo.sample_interval_secs.max(1));
    let backfill_hours = if fresh {
        app.config.demo.backfill_hours
    } else {
        0
    };
    let ingestor = app.ingestor.clone();
    let db = app.db.clone();
    let (stop, mut stopped) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let now = crate::clock::now();
        if backfill_hours > 0 {
            for chunk in sim.daily_history(now, DAILY_HISTORY_DAYS).chunks(5000) {
                feed(&ingestor, &who, chunk.to_vec()).await;
            }
        }
        let step = 300.0;
        let steps = (backfill_hours as f64 * 3600.0 / step) as i64;
        let mut batch = Vec::new();
        for k in (1..=steps).rev() {
            let at = now - chrono::Duration::seconds(k * step as i64);
            batch.extend(sim.step(at.with_nanosecond(0).unwrap_or(at), step));
            if batch.len() >= 5000 {
                feed(&ingestor, &who, std::mem::take(&mut batch)).await;
            }
            if *stopped.borrow() {
                return;
            }
        }
        feed(&ingestor, &who, batch).await;
        // Roll-ups and battery pointers (SOH) up to date at once, rather
        // than at the next periodic fold.
        if let Err(err) = crate::telemetry::fold::fold(&db).await {
            tracing::warn!(%err, "folding the demo history failed; the next fold will");
        }
        tracing::info!(
            hours = backfill_hours,
            "demo history ready; streaming live samples"
        );
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.changed() => return,
            }
            let at = crate::clock::now();
            feed(&ingestor, &who, sim.step(at, interval.as_secs_f64())).await;
        }
    });
    Ok(DemoTask { stop, handle })
}
