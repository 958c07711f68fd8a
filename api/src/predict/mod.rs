//! Battery predictions: SOH in 30 days, remaining useful life, probability
//! of reaching end of life within 30 days (one forecast model), an anomaly
//! score (one isolation-forest model), a risk level and the factors that
//! moved the remaining life most.
//!
//! Data flow: the telemetry writer tells the bus which batteries it
//! committed → [`Predictor`] collects them and, after `debounce_ms`, refreshes
//! them in batches (also the whole fleet every `refresh_interval_secs`):
//! daily roll-ups → [`features`] → ONNX Runtime ([`runtime`], the tenant's
//! active model from [`registry`] or the built-in one) → a stored row when
//! the prediction changed → the `predictions` topic → subscribers.
//! Without ONNX Runtime the server runs and says why predictions are off.

pub mod features;
pub mod graphql;
pub mod registry;
pub mod replay;
pub mod runtime;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entities::{battery, battery_prediction};
use ort::environment::Environment;
use sea_orm::{ActiveEnum, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::bus::Owner;
use crate::bus::topic::Topic;
use crate::config::PredictionsConfig;
use crate::error::{ApiError, ApiResult};
use features::FORECAST_FEATURES;
use runtime::{Kind, Pool};

/// The committed models, trained by `scripts/train-models.sh`.
pub const BUILTIN_FORECAST: &[u8] = include_bytes!("../../models/onnx/forecast.onnx");
pub const BUILTIN_ANOMALY: &[u8] = include_bytes!("../../models/onnx/anomaly.onnx");
/// The built-in forecast's median remaining life alone (derived from it).
pub const BUILTIN_REMAINING_LIFE: &[u8] = include_bytes!("../../models/onnx/remaining_life.onnx");
const BUILTIN_MANIFEST: &str = include_str!("../../models/onnx/manifest.json");

/// Batteries refreshed per batch.
const BATCH: usize = 500;
/// Batches in flight at once.
const PARALLEL_BATCHES: usize = 4;

/// What the training run wrote next to the built-in models.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub version: String,
    /// Median of each forecast feature in training (for factor impacts).
    pub reference_values: Vec<f64>,
    #[serde(default)]
    pub test_cells: Vec<String>,
}

impl Manifest {
    pub fn builtin() -> Self {
        serde_json::from_str(BUILTIN_MANIFEST).unwrap_or_else(|err| {
            tracing::error!(%err, "the built-in model manifest is unreadable");
            Self {
                version: "builtin".into(),
                reference_values: vec![0.0; FORECAST_FEATURES.len()],
                test_cells: Vec::new(),
            }
        })
    }
}

/// A prediction that changed, for subscribers on every replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PredictionEvent {
    pub owner: Owner,
    pub prediction: battery_prediction::Model,
}

/// Factor groups: the features each stands for (indices into the forecast
/// vector). The impact of a group is how many days of remaining life the
/// battery gains or loses against a typical battery (training medians).
const FACTORS: [(&str, &[usize]); 6] = [
    ("current_soh", &[0, 1, 10]),
    ("degradation_rate", &[2, 3, 4]),
    ("cycle_count", &[7]),
    ("temperature", &[8, 9]),
    ("history_length", &[6]),
    ("measurement_noise", &[5]),
];

/// The models one tenant's batteries are served with.
struct ModelSet {
    version: String,
    forecast: Arc<Pool>,
    anomaly: Arc<Pool>,
    /// The forecast's median remaining life alone, for the factor rows;
    /// `None` for an uploaded forecast (its factor rows run it whole).
    remaining_life: Option<Arc<Pool>>,
}

/// The committed models, loaded once.
#[derive(Clone)]
struct Builtin {
    forecast: Arc<Pool>,
    anomaly: Arc<Pool>,
    remaining_life: Arc<Pool>,
}

struct Inner {
    db: DatabaseConnection,
    config: PredictionsConfig,
    env: Result<Environment, String>,
    manifest: Manifest,
    builtin: Mutex<Option<Builtin>>,
    /// Loaded registry versions, by row id.
    uploaded: Mutex<HashMap<i64, Arc<Pool>>>,
    topic: Topic<PredictionEvent>,
}

/// The prediction service (cheap to clone).
#[derive(Clone)]
pub struct Predictor(Arc<Inner>);

impl Predictor {
    /// Loads ONNX Runtime and the built-in models; when either fails the
    /// predictor still exists and answers every call with why.
    pub fn new(
        db: DatabaseConnection,
        config: PredictionsConfig,
        topic: Topic<PredictionEvent>,
    ) -> Self {
        let env = if config.enabled {
            runtime::environment(&config)
        } else {
            Err("predictions are disabled (predictions.enabled = false)".into())
        };
        match &env {
            Ok(_) => tracing::info!("predictions enabled (ONNX Runtime loaded)"),
            Err(why) => tracing::warn!("predictions disabled: {why}"),
        }
        Self(Arc::new(Inner {
            db,
            config,
            env,
            manifest: Manifest::builtin(),
            builtin: Mutex::new(None),
            uploaded: Mutex::default(),
            topic,
        }))
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.0.db
    }

    pub fn config(&self) -> &PredictionsConfig {
        &self.0.config
    }

    pub fn manifest(&self) -> &Manifest {
        &self.0.manifest
    }

    pub fn topic(&self) -> &Topic<PredictionEvent> {
        &self.0.topic
    }

    /// ONNX Runtime, or why predictions are off.
    pub fn environment(&self) -> ApiResult<Environment> {
        self.0
            .env
            .clone()
            .map_err(|why| ApiError::Unavailable(format!("predictions are unavailable: {why}")))
    }

    fn builtin(&self) -> ApiResult<Builtin> {
        let env = self.environment()?;
        let mut slot = self
            .0
            .builtin
            .lock()
            .map_err(|_| ApiError::Unavailable("model loading panicked".into()))?;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let sessions = self.0.config.sessions;
        let load = |kind, bytes| {
            Pool::load(&env, kind, bytes, sessions)
                .map(Arc::new)
                .map_err(|e| {
                    ApiError::Unavailable(format!("the built-in model does not load: {e}"))
                })
        };
        let pools = Builtin {
            forecast: load(Kind::Forecast, BUILTIN_FORECAST)?,
            anomaly: load(Kind::Anomaly, BUILTIN_ANOMALY)?,
            remaining_life: load(Kind::RemainingLife, BUILTIN_REMAINING_LIFE)?,
        };
        *slot = Some(pools.clone());
        Ok(pools)
    }

    fn uploaded(&self, m: &entities::prediction_model::Model, kind: Kind) -> ApiResult<Arc<Pool>> {
        if let Ok(cache) = self.0.uploaded.lock()
            && let Some(p) = cache.get(&m.id)
        {
            return Ok(p.clone());
        }
        let pool = Arc::new(
            Pool::load(&self.environment()?, kind, &m.model, self.0.config.sessions)
                .map_err(|e| ApiError::Unavailable(format!("model {}: {e}", m.version)))?,
        );
        if let Ok(mut cache) = self.0.uploaded.lock() {
            cache.insert(m.id, pool.clone());
        }
        Ok(pool)
    }

    /// The models serving `tenant_id` now: its active versions, else built-in.
    async fn models(&self, tenant_id: i64) -> ApiResult<ModelSet> {
        let builtin = self.builtin()?;
        let db = &self.0.db;
        let forecast = registry::active(db, tenant_id, Kind::Forecast).await?;
        let anomaly = registry::active(db, tenant_id, Kind::Anomaly).await?;
        let name = |m: &Option<entities::prediction_model::Model>| {
            m.as_ref()
                .map_or_else(|| self.0.manifest.version.clone(), |m| m.version.clone())
        };
        let version = format!("forecast:{}+anomaly:{}", name(&forecast), name(&anomaly));
        let (forecast, remaining_life) = match &forecast {
            Some(m) => (self.uploaded(m, Kind::Forecast)?, None),
            None => (builtin.forecast, Some(builtin.remaining_life)),
        };
        let anomaly = match &anomaly {
            Some(m) => self.uploaded(m, Kind::Anomaly)?,
            None => builtin.anomaly,
        };
        Ok(ModelSet {
            version,
            forecast,
            anomaly,
            remaining_life,
        })
    }

    /// Recomputes the predictions of `ids`, stores those that changed and
    /// tells subscribers. Returns the current prediction of each battery.
    pub async fn refresh(&self, ids: &[i64]) -> ApiResult<Vec<battery_prediction::Model>> {
        self.environment()?;
        use futures_util::{StreamExt, TryStreamExt};
        // Batches overlap: one reads the database while another infers.
        let chunks: Vec<Vec<i64>> = ids.chunks(BATCH).map(<[i64]>::to_vec).collect();
        let batches: Vec<Vec<battery_prediction::Model>> = futures_util::stream::iter(chunks)
            .map(|chunk| {
                // A task per batch, so batches use every worker thread.
                let me = self.clone();
                tokio::spawn(async move { me.refresh_batch(&chunk).await })
            })
            .buffered(PARALLEL_BATCHES)
            .map(|joined| {
                joined.map_err(|e| ApiError::Unavailable(format!("refresh stopped: {e}")))?
            })
            .try_collect()
            .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    async fn refresh_batch(&self, ids: &[i64]) -> ApiResult<Vec<battery_prediction::Model>> {
        let db = &self.0.db;
        let batteries = battery::Entity::find()
            .filter(crate::db::id_in(
                db.get_database_backend(),
                battery::Column::Id,
                ids.iter().copied(),
            ))
            .all(db)
            .await?;
        let mut histories = store::histories(db, ids).await?;
        let previous = store::latest(db, ids).await?;
        let mut by_tenant: HashMap<i64, Vec<&battery::Model>> = HashMap::new();
        for b in &batteries {
            by_tenant.entry(b.tenant_id).or_default().push(b);
        }
        let now = crate::clock::now();
        let mut out = Vec::with_capacity(batteries.len());
        let mut changed = Vec::new();
        for (tenant_id, list) in by_tenant {
            let models = self.models(tenant_id).await?;
            let jobs: Vec<(battery::Model, store::History, f64)> = list
                .iter()
                .map(|b| {
                    let h = histories.remove(&b.id).unwrap_or_default();
                    let eol = self.0.config.end_of_life(&b.chemistry.to_value());
                    ((*b).clone(), h, eol)
                })
                .collect();
            let reference = self.0.manifest.reference_values.clone();
            let config = self.0.config.clone();
            // Features and inference are CPU work: off the async workers.
            let computed = tokio::task::spawn_blocking(move || {
                let inputs: Vec<Input> = jobs
                    .into_iter()
                    .map(|(b, h, eol)| Input::new(&b, h, eol))
                    .collect();
                infer(&models, &inputs, &reference, &config, now)
            })
            .await
            .map_err(|e| ApiError::Unavailable(format!("inference stopped: {e}")))?
            .map_err(|e| ApiError::Unavailable(format!("inference failed: {e}")))?;
            for (b, p) in list.iter().zip(computed) {
                let same = previous
                    .get(&b.id)
                    .is_some_and(|old| same_prediction(old, &p));
                if same {
                    out.push(previous[&b.id].clone());
                } else {
                    changed.push((owner(b), p.clone()));
                    out.push(p);
                }
            }
        }
        if !changed.is_empty() {
            let rows: Vec<battery_prediction::Model> =
                changed.iter().map(|(_, p)| p.clone()).collect();
            store::insert(db, &rows).await?;
            for (owner, prediction) in changed {
                self.0
                    .topic
                    .publish(PredictionEvent { owner, prediction })
                    .await;
            }
        }
        Ok(out)
    }

    /// The stored prediction of `battery_id`, computed now when there is none.
    pub async fn current(&self, battery_id: i64) -> ApiResult<battery_prediction::Model> {
        self.environment()?;
        if let Some(p) = store::latest(&self.0.db, &[battery_id])
            .await?
            .remove(&battery_id)
        {
            return Ok(p);
        }
        self.refresh(&[battery_id])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::NotFound("Battery".into()))
    }

    /// Every battery that has samples, refreshed in batches.
    pub async fn refresh_fleet(&self) -> ApiResult<usize> {
        let ids: Vec<i64> = battery::Entity::find()
            .select_only()
            .column(battery::Column::Id)
            .into_tuple()
            .all(&self.0.db)
            .await?;
        self.refresh(&ids).await.map(|v| v.len())
    }

    /// Starts the refresh loops: batteries with new samples after
    /// `debounce_ms`, the whole fleet every `refresh_interval_secs`.
    pub fn start(&self, bus: &crate::bus::Bus) -> Option<tokio::task::JoinHandle<()>> {
        if self.0.env.is_err() {
            return None;
        }
        let (tx, rx) = mpsc::channel(1024);
        bus.on_commit(tx);
        let me = self.clone();
        Some(tokio::spawn(async move { me.run(rx).await }))
    }

    async fn run(self, mut committed: mpsc::Receiver<Vec<i64>>) {
        let debounce = Duration::from_millis(self.0.config.debounce_ms.max(10));
        let mut fleet = tokio::time::interval(Duration::from_secs(
            self.0.config.refresh_interval_secs.max(1),
        ));
        let mut dirty: HashSet<i64> = HashSet::new();
        let mut flush = tokio::time::interval(debounce);
        loop {
            tokio::select! {
                ids = committed.recv() => match ids {
                    Some(ids) => dirty.extend(ids),
                    None => return,
                },
                _ = flush.tick() => {
                    if dirty.is_empty() { continue; }
                    let ids: Vec<i64> = dirty.drain().collect();
                    if let Err(err) = self.refresh(&ids).await {
                        tracing::warn!(%err, batteries = ids.len(), "prediction refresh failed");
                    }
                }
                _ = fleet.tick() => {
                    match self.refresh_fleet().await {
                        Ok(n) => tracing::info!(batteries = n, "fleet predictions refreshed"),
                        Err(err) => tracing::warn!(%err, "fleet prediction refresh failed"),
                    }
                }
            }
        }
    }
}

fn owner(b: &battery::Model) -> Owner {
    Owner {
        tenant_id: b.tenant_id,
        client_id: b.client_id,
        site_id: b.site_id,
        zone_id: b.zone_id,
        bms_id: b.bms_id,
    }
}

/// Equal up to what a user could tell apart.
fn same_prediction(a: &battery_prediction::Model, b: &battery_prediction::Model) -> bool {
    let close = |x: Option<f64>, y: Option<f64>, tol: f64| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() < tol,
        (None, None) => true,
        _ => false,
    };
    a.status == b.status
        && a.model_version == b.model_version
        && a.as_of == b.as_of
        && a.risk_level == b.risk_level
        && close(a.soh30_value, b.soh30_value, 0.005)
        && close(a.soh30_low, b.soh30_low, 0.005)
        && close(a.soh30_high, b.soh30_high, 0.005)
        && close(a.rul_value, b.rul_value, 0.5)
        && close(a.failure_probability, b.failure_probability, 0.0005)
        && close(a.anomaly_score, b.anomaly_score, 0.0005)
}

/// One battery's features, ready for inference.
pub struct Input {
    battery_id: i64,
    tenant_id: i64,
    as_of: Option<DateTime<Utc>>,
    end_of_life: f64,
    forecast: Option<[f64; 12]>,
    anomaly: Option<[f64; 6]>,
}

impl Input {
    pub fn new(b: &battery::Model, h: store::History, end_of_life: f64) -> Self {
        Self {
            battery_id: b.id,
            tenant_id: b.tenant_id,
            as_of: h.as_of,
            end_of_life,
            forecast: features::forecast(&h.points, h.efc, end_of_life),
            anomaly: features::anomaly(&h.points),
        }
    }
}

fn as_f32(rows: impl Iterator<Item = f64>) -> Vec<f32> {
    rows.map(|v| v as f32).collect()
}

/// Runs the models over `inputs` (one batch per model) and turns their
/// outputs into predictions.
fn infer(
    models: &ModelSet,
    inputs: &[Input],
    reference: &[f64],
    config: &PredictionsConfig,
    now: DateTime<Utc>,
) -> Result<Vec<battery_prediction::Model>, String> {
    // Each battery with features: its row, and one factor row per factor
    // group with that group set to the typical value.
    let mut rows = Vec::new();
    let mut factor_rows = Vec::new();
    for x in inputs.iter().filter_map(|i| i.forecast.as_ref()) {
        rows.extend(as_f32(x.iter().copied()));
        for (_, group) in FACTORS {
            let mut y = *x;
            for &k in group {
                if let Some(r) = reference.get(k) {
                    y[k] = *r;
                }
            }
            factor_rows.extend(as_f32(y.into_iter()));
        }
    }
    let forecast = models.forecast.run(&rows)?;
    // The median remaining life of each factor row (log1p days).
    let factor_life: Vec<f32> = match &models.remaining_life {
        Some(pool) => pool.run(&factor_rows)?.swap_remove(0),
        None => models.forecast.run(&factor_rows)?[1]
            .chunks(3)
            .map(|q| q[1])
            .collect(),
    };
    let anomaly_rows: Vec<f32> = as_f32(inputs.iter().filter_map(|i| i.anomaly).flatten());
    let anomaly = models.anomaly.run(&anomaly_rows)?;
    let (soh, rul, fail) = (&forecast[0], &forecast[1], &forecast[2]);
    let (mut f, mut a) = (0usize, 0usize);
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        let anomaly_score = input.anomaly.map(|_| {
            a += 1;
            f64::from(anomaly[0][a - 1])
        });
        let mut p = battery_prediction::Model {
            battery_id: input.battery_id,
            computed_at: now,
            tenant_id: input.tenant_id,
            status: "INSUFFICIENT_DATA".into(),
            as_of: input.as_of,
            soh30_value: None,
            soh30_low: None,
            soh30_high: None,
            rul_value: None,
            rul_low: None,
            rul_high: None,
            failure_probability: None,
            anomaly_score,
            risk_level: None,
            factors: serde_json::json!([]),
            model_version: models.version.clone(),
        };
        if let Some(x) = &input.forecast {
            let row = f;
            f += 1;
            let soh_now = x[0];
            let q = |v: &[f32], row: usize, k: usize| f64::from(v[row * 3 + k]);
            let days = |row: usize, k: usize| q(rul, row, k).exp_m1().max(0.0);
            let mut band = [
                (soh_now + q(soh, row, 0)) * 100.0,
                (soh_now + q(soh, row, 1)) * 100.0,
                (soh_now + q(soh, row, 2)) * 100.0,
            ];
            band.sort_by(f64::total_cmp);
            let past_end = soh_now < input.end_of_life;
            let mut life = [days(row, 0), days(row, 1), days(row, 2)];
            life.sort_by(f64::total_cmp);
            if past_end {
                life = [0.0; 3];
            }
            let probability = if past_end {
                1.0
            } else {
                f64::from(fail[row]).clamp(0.0, 1.0)
            };
            let mut factors: Vec<(f64, &str)> = FACTORS
                .iter()
                .enumerate()
                .map(|(g, (name, _))| {
                    let without = f64::from(factor_life[row * FACTORS.len() + g]);
                    (life[1] - without.exp_m1().max(0.0), *name)
                })
                .filter(|(impact, _)| !past_end && impact.abs() >= 0.5)
                .collect();
            factors.sort_by(|x, y| y.0.abs().total_cmp(&x.0.abs()));
            factors.truncate(3);
            p.status = "OK".into();
            p.soh30_low = Some(band[0]);
            p.soh30_value = Some(band[1]);
            p.soh30_high = Some(band[2]);
            p.rul_low = Some(life[0]);
            p.rul_value = Some(life[1]);
            p.rul_high = Some(life[2]);
            p.failure_probability = Some(probability);
            p.risk_level = Some(risk_level(life[1], config).into());
            p.factors = serde_json::Value::Array(
                factors
                    .into_iter()
                    .map(|(impact, name)| serde_json::json!({ "name": name, "impact": impact.round() }))
                    .collect(),
            );
        }
        out.push(p);
    }
    Ok(out)
}

/// The product rule: RUL under `risk_high_days` HIGH, under
/// `risk_medium_days` MEDIUM, else LOW.
pub fn risk_level(rul_days: f64, config: &PredictionsConfig) -> &'static str {
    if rul_days < config.risk_high_days {
        "HIGH"
    } else if rul_days < config.risk_medium_days {
        "MEDIUM"
    } else {
        "LOW"
    }
}

/// Runs the forecast model on raw feature rows (benchmarks and parity tests).
pub fn forecast_raw(p: &Predictor, rows: &[[f64; 12]]) -> ApiResult<Vec<Vec<f32>>> {
    p.builtin()?
        .forecast
        .run(&as_f32(rows.iter().flatten().copied()))
        .map_err(ApiError::Unavailable)
}

/// Runs a one-output model on raw feature rows.
fn single_output<const W: usize>(pool: &Pool, rows: &[[f64; W]]) -> ApiResult<Vec<f32>> {
    pool.run(&as_f32(rows.iter().flatten().copied()))
        .map(|mut v| v.swap_remove(0))
        .map_err(ApiError::Unavailable)
}

/// Runs the built-in median remaining-life model on raw feature rows
/// (parity tests: it must equal the forecast's `rul_log1p` median).
pub fn remaining_life_raw(p: &Predictor, rows: &[[f64; 12]]) -> ApiResult<Vec<f32>> {
    single_output(&p.builtin()?.remaining_life, rows)
}

/// Runs the anomaly model on raw feature rows (benchmarks and parity tests).
pub fn anomaly_raw(p: &Predictor, rows: &[[f64; 6]]) -> ApiResult<Vec<f32>> {
    single_output(&p.builtin()?.anomaly, rows)
}
