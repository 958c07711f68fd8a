//! GraphQL of predictions: `Battery.prediction`, `predictionHistory`, the
//! `predictions(scope)` subscription, and the model registry
//! (`predictionModels`, `uploadPredictionModel`, `activatePredictionModel`,
//! `rollbackPredictionModel`, `predictionService`).

use async_graphql::{
    Context, Enum, ErrorExtensions, ID, Json, Object, Result, ResultExt, SimpleObject,
    Subscription, Upload,
};
use chrono::{DateTime, Duration, Utc};
use entities::{battery, battery_prediction, prediction_model};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::Predictor;
use super::registry;
use super::runtime::Kind as ModelKind;
use crate::auth::{Action, Principal};
use crate::hierarchy::service::find_scoped;
use crate::ids::{self, Kind, Other};
use crate::telemetry::graphql::{page_size, time_range};
use crate::telemetry::live::{Filter, LiveScope};

fn predictor<'a>(ctx: &Context<'a>) -> Result<&'a Predictor> {
    ctx.data::<Predictor>()
}

/// A median and its 80 % band (0.1 and 0.9 quantiles).
#[derive(SimpleObject)]
pub struct Band {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Something that moved the remaining life: `impact` is the days it adds
/// (positive) or takes away (negative) against a typical battery.
#[derive(SimpleObject)]
pub struct Factor {
    pub name: String,
    pub impact: f64,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum PredictionStatus {
    Ok,
    /// Fewer than 3 days with SOH readings, or less than 14 days of history.
    InsufficientData,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum PredictionModelKind {
    Forecast,
    Anomaly,
}

impl From<PredictionModelKind> for ModelKind {
    fn from(k: PredictionModelKind) -> Self {
        match k {
            PredictionModelKind::Forecast => ModelKind::Forecast,
            PredictionModelKind::Anomaly => ModelKind::Anomaly,
        }
    }
}

/// A battery's health forecast.
pub struct Prediction(pub battery_prediction::Model);

fn band(v: Option<f64>, lo: Option<f64>, hi: Option<f64>) -> Option<Band> {
    Some(Band {
        value: v?,
        low: lo?,
        high: hi?,
    })
}

#[Object]
impl Prediction {
    async fn battery_id(&self) -> ID {
        ids::encode(Kind::Battery, self.0.battery_id)
    }
    async fn status(&self) -> PredictionStatus {
        if self.0.status == "OK" {
            PredictionStatus::Ok
        } else {
            PredictionStatus::InsufficientData
        }
    }
    /// SOH (%) expected 30 days after `asOf`.
    async fn soh_in_30_days(&self) -> Option<Band> {
        band(self.0.soh30_value, self.0.soh30_low, self.0.soh30_high)
    }
    /// Days from `asOf` until SOH reaches the end of life of the battery's
    /// chemistry (80 % by default); 0 once past it.
    async fn rul_days(&self) -> Option<Band> {
        band(self.0.rul_value, self.0.rul_low, self.0.rul_high)
    }
    /// Probability (0–1) that SOH falls below end of life within 30 days.
    #[graphql(name = "failureProbability30d")]
    async fn failure_probability_30d(&self) -> Option<f64> {
        self.0.failure_probability
    }
    /// How unusual the last days' behaviour is (0–1; above 0.6 is rare).
    /// Null with fewer than 4 days of readings in the last 180 days.
    async fn anomaly_score(&self) -> Option<f64> {
        self.0.anomaly_score
    }
    /// From the remaining life: < 30 days HIGH, < 90 MEDIUM, else LOW
    /// (`predictions.risk_*_days`).
    async fn risk_level(&self) -> Option<RiskLevel> {
        match self.0.risk_level.as_deref()? {
            "HIGH" => Some(RiskLevel::High),
            "MEDIUM" => Some(RiskLevel::Medium),
            _ => Some(RiskLevel::Low),
        }
    }
    /// Up to three factors, the strongest first.
    async fn factors(&self) -> Vec<Factor> {
        self.0
            .factors
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some(Factor {
                    name: f["name"].as_str()?.to_owned(),
                    impact: f["impact"].as_f64()?,
                })
            })
            .collect()
    }
    /// The models that computed it (`forecast:<version>+anomaly:<version>`).
    async fn model_version(&self) -> &str {
        &self.0.model_version
    }
    async fn computed_at(&self) -> DateTime<Utc> {
        self.0.computed_at
    }
    /// Time of the newest sample the prediction is based on.
    async fn as_of(&self) -> Option<DateTime<Utc>> {
        self.0.as_of
    }
}

/// `Battery.prediction`: the stored prediction, computed now if there is none.
pub async fn prediction_of(ctx: &Context<'_>, b: &battery::Model) -> Result<Prediction> {
    predictor(ctx)?
        .current(b.id)
        .await
        .map(Prediction)
        .map_err(|e| e.extend())
}

/// A version in the model registry.
pub struct PredictionModel(pub prediction_model::Model);

#[Object]
impl PredictionModel {
    async fn id(&self) -> ID {
        ids::encode_other(Other::PredictionModel, self.0.id)
    }
    async fn kind(&self) -> PredictionModelKind {
        match ModelKind::parse(&self.0.kind) {
            Some(ModelKind::Anomaly) => PredictionModelKind::Anomaly,
            _ => PredictionModelKind::Forecast,
        }
    }
    async fn version(&self) -> &str {
        &self.0.version
    }
    async fn sha256(&self) -> &str {
        &self.0.sha256
    }
    async fn size_bytes(&self) -> i64 {
        self.0.size_bytes
    }
    /// Metadata and metrics given at upload.
    async fn metadata(&self) -> Json<serde_json::Value> {
        Json(self.0.metadata.clone())
    }
    async fn active(&self) -> bool {
        self.0.active
    }
    async fn uploaded_by(&self) -> &str {
        &self.0.uploaded_by
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn activated_at(&self) -> Option<DateTime<Utc>> {
        self.0.activated_at
    }
}

/// Whether predictions are served, and with what.
#[derive(SimpleObject)]
pub struct PredictionService {
    pub available: bool,
    /// Why predictions are off, when they are.
    pub reason: Option<String>,
    /// Version of the models shipped with the server (used while no
    /// uploaded version is active).
    pub builtin_version: String,
}

#[derive(Default)]
pub struct PredictionQuery;

#[Object]
impl PredictionQuery {
    /// A battery's stored predictions between `from` (default: 30 days
    /// before `to`) and `to` (default: now), oldest first, at most `first`
    /// (default 100, at most 1000).
    async fn prediction_history(
        &self,
        ctx: &Context<'_>,
        battery_id: ID,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
    ) -> Result<Vec<Prediction>> {
        let p = predictor(ctx)?;
        let who = ctx.data::<Principal>()?;
        let id = ids::decode(Kind::Battery, &battery_id).extend()?;
        find_scoped::<battery::Entity>(p.db(), who, id, Kind::Battery)
            .await
            .extend()?;
        let (from, to) = time_range(from, to, Duration::days(30)).extend()?;
        let limit = page_size(first, 1000).extend()? as u64;
        super::store::history(p.db(), id, from, to, limit)
            .await
            .map(|rows| rows.into_iter().map(Prediction).collect())
            .extend()
    }

    /// The tenant's uploaded model versions, newest first.
    async fn prediction_models(
        &self,
        ctx: &Context<'_>,
        kind: Option<PredictionModelKind>,
    ) -> Result<Vec<PredictionModel>> {
        registry::list(
            predictor(ctx)?,
            ctx.data::<Principal>()?,
            kind.map(Into::into),
        )
        .await
        .map(|v| v.into_iter().map(PredictionModel).collect())
        .extend()
    }

    async fn prediction_service(&self, ctx: &Context<'_>) -> Result<PredictionService> {
        ctx.data::<Principal>()?
            .require(Action::ReadFleet)
            .extend()?;
        let p = predictor(ctx)?;
        let reason = p.environment().err().map(|e| e.to_string());
        Ok(PredictionService {
            available: reason.is_none(),
            reason,
            builtin_version: p.manifest().version.clone(),
        })
    }
}

#[derive(Default)]
pub struct PredictionMutation;

#[Object]
impl PredictionMutation {
    /// Uploads an ONNX model (multipart, field `file`); it must load and
    /// have the signature of its kind (see the README). Stored inactive.
    async fn upload_prediction_model(
        &self,
        ctx: &Context<'_>,
        kind: PredictionModelKind,
        version: String,
        file: Upload,
        metadata: Option<Json<serde_json::Value>>,
    ) -> Result<PredictionModel> {
        let p = predictor(ctx)?;
        let bytes = crate::graphql::read_upload(ctx, &file, p.config().max_model_bytes)?;
        let metadata = metadata.map_or_else(|| serde_json::json!({}), |m| m.0);
        registry::upload(
            p,
            ctx.data::<Principal>()?,
            kind.into(),
            &version,
            bytes,
            metadata,
        )
        .await
        .map(PredictionModel)
        .extend()
    }

    /// Makes a version the one serving its kind; takes effect at the next
    /// refresh, without interrupting serving.
    async fn activate_prediction_model(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<PredictionModel> {
        let id = ids::decode_other(Other::PredictionModel, &id).extend()?;
        registry::activate(predictor(ctx)?, ctx.data::<Principal>()?, id)
            .await
            .map(PredictionModel)
            .extend()
    }

    /// Goes back to the version the active one replaced; null: the
    /// built-in model serves again.
    async fn rollback_prediction_model(
        &self,
        ctx: &Context<'_>,
        kind: PredictionModelKind,
    ) -> Result<Option<PredictionModel>> {
        registry::rollback(predictor(ctx)?, ctx.data::<Principal>()?, kind.into())
            .await
            .map(|m| m.map(PredictionModel))
            .extend()
    }
}

/// A battery's prediction changed.
#[derive(SimpleObject)]
pub struct PredictionUpdate {
    pub battery_id: ID,
    pub prediction: Prediction,
    /// Updates this subscriber missed because it read too slowly.
    pub missed: u64,
}

#[derive(Default)]
pub struct PredictionSubscription;

#[Subscription]
impl PredictionSubscription {
    /// Every change of a prediction in the scope, as it is stored.
    async fn predictions(
        &self,
        ctx: &Context<'_>,
        scope: Option<LiveScope>,
    ) -> Result<impl Stream<Item = PredictionUpdate> + use<>> {
        Box::pin(open_predictions(ctx, scope)).await
    }
}

/// Opens a `predictions` stream (boxed by its caller: see
/// `telemetry::live::open`).
async fn open_predictions(
    ctx: &Context<'_>,
    scope: Option<LiveScope>,
) -> Result<impl Stream<Item = PredictionUpdate> + use<>> {
    let p = predictor(ctx)?;
    let who = ctx.data::<Principal>()?.clone();
    who.require(Action::ReadFleet).extend()?;
    let filter = Filter::new(p.db(), who, scope.unwrap_or_default()).await?;
    let rx = p.topic().subscribe();
    Ok(futures_util::stream::unfold(
        (rx, filter),
        |(mut rx, filter)| async move {
            let mut missed = 0u64;
            loop {
                match rx.recv().await {
                    Ok(e) if filter.accepts(&e.owner, e.prediction.battery_id) => {
                        let update = PredictionUpdate {
                            battery_id: ids::encode(Kind::Battery, e.prediction.battery_id),
                            prediction: Prediction(e.prediction.clone()),
                            missed,
                        };
                        return Some((update, (rx, filter)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => missed += n,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    ))
}
