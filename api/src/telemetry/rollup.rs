//! Hourly and daily roll-ups, maintained incrementally: each write folds
//! its new samples into hourly partial buckets and appends them, in its
//! own transaction, as one row of `rollup_batches` ([`encode`]), which
//! [`super::fold`] adds to the stored hours and days (a late sample lands
//! in, and corrects, its own buckets). Each partial bucket also carries its
//! newest sample's time and SOH, which the fold moves its battery's
//! pointers to.
//! Buckets keep counts, sums, sums of squares, minima and maxima, so
//! averages and standard deviations stay exact whatever the order of
//! arrival, and partial buckets add up to the same as one.
//!
//! Energy in/out integrates each new sample's power (`powerW`, else V × I)
//! over the time since the battery's previous sample; gaps longer than
//! [`MAX_GAP`] are not integrated.

use std::collections::HashMap;

use chrono::serde::{ts_microseconds, ts_microseconds_option};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sea_orm::sea_query::SimpleExpr;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use serde::{Deserialize, Serialize};

use super::checks::Checked;
use crate::error::ApiResult;

/// Longest gap between two samples over which power is integrated.
pub const MAX_GAP: TimeDelta = TimeDelta::minutes(15);

/// The resolutions of roll-ups: writes make hourly partial buckets, and
/// [`super::fold`] adds them up into hours and days.
pub const HOUR: &str = "HOUR";
pub const DAY: &str = "DAY";

const METRICS: [&str; 5] = ["voltage", "current", "soc", "soh", "temp"];

#[derive(Clone, Copy, Default, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub n: i64,
    pub sum: f64,
    pub sumsq: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Stat {
    fn add(&mut self, v: Option<f64>, lo: Option<f64>, hi: Option<f64>) {
        if let Some(v) = v {
            self.n += 1;
            self.sum += v;
            self.sumsq += v * v;
        }
        if let Some(lo) = lo.or(v) {
            self.min = Some(self.min.map_or(lo, |m| m.min(lo)));
        }
        if let Some(hi) = hi.or(v) {
            self.max = Some(self.max.map_or(hi, |m| m.max(hi)));
        }
    }

    /// Adds another partial's values (as the fold's SQL merge does).
    fn merge(&mut self, other: &Stat) {
        self.n += other.n;
        self.sum += other.sum;
        self.sumsq += other.sumsq;
        self.min = lesser(self.min, other.min);
        self.max = greater(self.max, other.max);
    }
}

fn lesser(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn greater(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A battery's newest SOH and its sample's time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Soh {
    #[serde(with = "ts_microseconds")]
    pub at: DateTime<Utc>,
    pub pct: f64,
}

/// One bucket's worth of new samples.
#[derive(Clone, Default, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub samples: i64,
    pub stats: [Stat; 5],
    pub energy_in_kwh: f64,
    pub energy_out_kwh: f64,
    pub under_voltage: i64,
    pub over_temperature: i64,
    /// Extremes of the reported cell voltages.
    pub cell_voltage: Stat,
    /// The time of the bucket's newest sample, and its newest SOH: the
    /// fold moves the battery's pointers to them.
    #[serde(with = "ts_microseconds_option")]
    pub newest_sample_at: Option<DateTime<Utc>>,
    pub newest_soh: Option<Soh>,
}

impl Bucket {
    /// Adds another partial bucket of the same battery.
    pub fn merge(&mut self, other: &Bucket) {
        self.samples += other.samples;
        for (mine, theirs) in self.stats.iter_mut().zip(&other.stats) {
            mine.merge(theirs);
        }
        self.energy_in_kwh += other.energy_in_kwh;
        self.energy_out_kwh += other.energy_out_kwh;
        self.under_voltage += other.under_voltage;
        self.over_temperature += other.over_temperature;
        self.cell_voltage.merge(&other.cell_voltage);
        self.newest_sample_at = self.newest_sample_at.max(other.newest_sample_at);
        if let Some(theirs) = other.newest_soh
            && self.newest_soh.is_none_or(|mine| theirs.at > mine.at)
        {
            self.newest_soh = Some(theirs);
        }
    }
}

/// (battery, resolution, bucket start)
pub type BucketKey = (i64, &'static str, DateTime<Utc>);

/// Folds new samples into hourly buckets. `previous` gives each battery's newest
/// stored sample time before these were written.
pub fn aggregate(
    new: &[&Checked],
    previous: &HashMap<i64, DateTime<Utc>>,
) -> HashMap<BucketKey, Bucket> {
    let mut sorted: Vec<&Checked> = new.to_vec();
    sorted.sort_by_key(|c| (c.sample.battery_id, c.sample.ts));
    let mut out: HashMap<BucketKey, Bucket> = HashMap::new();
    let mut last: HashMap<i64, DateTime<Utc>> = HashMap::new();
    for c in sorted {
        let s = &c.sample;
        let prev = last
            .get(&s.battery_id)
            .copied()
            .or_else(|| previous.get(&s.battery_id).copied().filter(|p| *p < s.ts));
        last.insert(s.battery_id, s.ts);
        let dt = prev
            .map(|p| s.ts - p)
            .filter(|d| *d > TimeDelta::zero() && *d <= MAX_GAP);
        let power = s
            .power_w
            .or(s.voltage_v.zip(s.current_a).map(|(v, i)| v * i));
        let energy_kwh = match (power, dt) {
            (Some(p), Some(dt)) => p * dt.as_seconds_f64() / 3.6e6,
            _ => 0.0,
        };
        let start = s.ts.duration_trunc(TimeDelta::hours(1)).unwrap_or(s.ts);
        let b = out.entry((s.battery_id, HOUR, start)).or_default();
        b.samples += 1;
        b.stats[0].add(s.voltage_v, None, None);
        b.stats[1].add(s.current_a, None, None);
        b.stats[2].add(s.soc_pct, None, None);
        b.stats[3].add(s.soh_pct, None, None);
        b.stats[4].add(s.temp_avg_c, s.temp_min_c, s.temp_max_c);
        b.cell_voltage
            .add(None, s.cell_voltage_min_v, s.cell_voltage_max_v);
        // In time order within a battery: each sample is the newest yet.
        b.newest_sample_at = Some(s.ts);
        if let Some(pct) = s.soh_pct {
            b.newest_soh = Some(Soh { at: s.ts, pct });
        }
        if energy_kwh > 0.0 {
            b.energy_in_kwh += energy_kwh;
        } else {
            b.energy_out_kwh -= energy_kwh;
        }
        b.under_voltage += i64::from(c.under_voltage);
        b.over_temperature += i64::from(c.over_temperature);
    }
    out
}

/// How a stored value and a new one of `column` merge (`how`: `sum`,
/// `min` or `max`).
pub(super) fn combine(backend: DbBackend, column: &str, how: &str) -> String {
    let (old, new) = (
        format!("battery_rollups.{column}"),
        format!("excluded.{column}"),
    );
    match (how, backend) {
        ("sum", _) => format!("{old} + {new}"),
        ("min", DbBackend::Postgres) => format!("LEAST({old}, {new})"),
        ("max", DbBackend::Postgres) => format!("GREATEST({old}, {new})"),
        ("min", _) => format!("COALESCE(MIN({old}, {new}), {old}, {new})"),
        (_, _) => format!("COALESCE(MAX({old}, {new}), {old}, {new})"),
    }
}

/// The key columns of a bucket.
pub(super) const KEY_COLUMNS: [&str; 3] = ["battery_id", "resolution", "bucket"];

/// The columns after the key, each with how a stored value and a new one
/// merge; [`cells`] gives a bucket's values in this order.
pub(super) fn value_columns() -> Vec<(String, &'static str)> {
    let mut columns = vec![("sample_count".to_owned(), "sum")];
    for m in METRICS {
        for (suffix, how) in [
            ("n", "sum"),
            ("sum", "sum"),
            ("sumsq", "sum"),
            ("min", "min"),
            ("max", "max"),
        ] {
            columns.push((format!("{m}_{suffix}"), how));
        }
    }
    for (c, how) in [
        ("energy_in_kwh", "sum"),
        ("energy_out_kwh", "sum"),
        ("under_voltage_count", "sum"),
        ("over_temp_count", "sum"),
        ("cell_voltage_min", "min"),
        ("cell_voltage_max", "max"),
    ] {
        columns.push((c.into(), how));
    }
    columns
}

/// Every column of a bucket: [`KEY_COLUMNS`], then [`value_columns`].
pub(super) fn column_names() -> Vec<String> {
    KEY_COLUMNS
        .into_iter()
        .map(str::to_owned)
        .chain(value_columns().into_iter().map(|(c, _)| c))
        .collect()
}

/// A value of a bucket: a count, or a float (`None`: no value).
#[derive(Clone, Copy)]
pub enum Cell {
    Count(i64),
    Float(Option<f64>),
}

impl From<Cell> for SimpleExpr {
    fn from(c: Cell) -> Self {
        match c {
            Cell::Count(n) => n.into(),
            Cell::Float(v) => v.into(),
        }
    }
}

/// `b`'s values in [`value_columns`] order.
pub fn cells(b: &Bucket) -> Vec<Cell> {
    let mut out = vec![Cell::Count(b.samples)];
    for s in &b.stats {
        out.extend([
            Cell::Count(s.n),
            Cell::Float(Some(s.sum)),
            Cell::Float(Some(s.sumsq)),
            Cell::Float(s.min),
            Cell::Float(s.max),
        ]);
    }
    out.extend([
        Cell::Float(Some(b.energy_in_kwh)),
        Cell::Float(Some(b.energy_out_kwh)),
        Cell::Count(b.under_voltage),
        Cell::Count(b.over_temperature),
        Cell::Float(b.cell_voltage.min),
        Cell::Float(b.cell_voltage.max),
    ]);
    out
}

/// Where writes appended their partial buckets, one row each, before
/// [`BATCHES`] (migration 14); the fold still empties it.
pub const BACKLOG: &str = "rollup_backlog";

/// Where writes append their partial buckets, one row per write
/// ([`encode`]), for [`super::fold`].
pub const BATCHES: &str = "rollup_batches";

/// The first byte of an encoded batch: its format.
const FORMAT: u8 = 1;

/// One hourly partial bucket of a batch.
#[derive(Serialize)]
struct PartialRef<'a> {
    battery_id: i64,
    #[serde(with = "ts_microseconds")]
    hour: DateTime<Utc>,
    bucket: &'a Bucket,
}

/// [`PartialRef`], decoded.
#[derive(Deserialize)]
pub struct Partial {
    pub battery_id: i64,
    #[serde(with = "ts_microseconds")]
    pub hour: DateTime<Utc>,
    pub bucket: Bucket,
}

/// A write's hourly partial buckets as one `rollup_batches` value: a
/// format byte, then postcard.
pub fn encode(buckets: &HashMap<BucketKey, Bucket>) -> Result<Vec<u8>, DbErr> {
    let partials: Vec<PartialRef> = buckets
        .iter()
        .map(|((battery_id, _, hour), bucket)| PartialRef {
            battery_id: *battery_id,
            hour: *hour,
            bucket,
        })
        .collect();
    let mut out = vec![FORMAT];
    postcard::to_io(&partials, &mut out)
        .map_err(|e| DbErr::Custom(format!("encoding partial buckets: {e}")))?;
    Ok(out)
}

/// The partial buckets of one [`encode`]d batch. A batch of another format
/// (a newer version's) is refused: the fold then stops, nothing is lost.
pub fn decode(batch: &[u8]) -> ApiResult<Vec<Partial>> {
    match batch.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest)
            .map_err(|e| DbErr::Custom(format!("decoding partial buckets: {e}")).into()),
        _ => Err(DbErr::Custom(
            "a roll-up batch has an unknown format (written by a newer version?)".into(),
        )
        .into()),
    }
}

/// Appends a write's partial buckets to [`BATCHES`], as one row.
pub async fn append(
    db: &impl ConnectionTrait,
    buckets: &HashMap<BucketKey, Bucket>,
) -> ApiResult<()> {
    if buckets.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        format!("INSERT INTO {BATCHES} (partials) VALUES ({placeholder})"),
        [encode(buckets)?.into()],
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use entities::battery_sample;

    fn sample(minute: i64, v: f64, i: f64) -> Checked {
        let ts = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .to_utc()
            + TimeDelta::minutes(minute);
        Checked {
            sample: battery_sample::Model {
                battery_id: 1,
                ts,
                voltage_v: Some(v),
                current_a: Some(i),
                power_w: None,
                soc_pct: Some(50.0),
                soh_pct: None,
                temp_min_c: Some(20.0),
                temp_max_c: Some(30.0),
                temp_avg_c: Some(25.0),
                energy_kwh: None,
                efficiency_pct: None,
                cycle_count: None,
                cell_voltage_min_v: None,
                cell_voltage_max_v: None,
            },
            owner: None,
            under_voltage: v < 45.0,
            over_temperature: false,
        }
    }

    #[test]
    fn buckets_integrate_power_between_samples() {
        // 50 V × 10 A charging for 6 minutes, then 50 V × -20 A for 6 minutes.
        let a = sample(0, 50.0, 10.0);
        let b = sample(6, 50.0, 10.0);
        let c = sample(12, 50.0, -20.0);
        let d = sample(70, 40.0, -20.0); // next hour, after a 58-minute gap
        let buckets = aggregate(&[&c, &a, &d, &b], &HashMap::new());
        let hour = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .to_utc();
        let h10 = &buckets[&(1, "HOUR", hour)];
        assert_eq!(h10.samples, 3);
        assert!(
            (h10.energy_in_kwh - 0.05).abs() < 1e-9,
            "{}",
            h10.energy_in_kwh
        );
        assert!(
            (h10.energy_out_kwh - 0.1).abs() < 1e-9,
            "{}",
            h10.energy_out_kwh
        );
        assert_eq!(h10.stats[0].min, Some(50.0));
        let h11 = &buckets[&(1, "HOUR", hour + TimeDelta::hours(1))];
        assert_eq!((h11.samples, h11.under_voltage), (1, 1));
        assert_eq!(h11.energy_out_kwh, 0.0, "gaps are not integrated");
        assert_eq!(buckets.len(), 2, "hourly buckets only: {buckets:?}");
    }

    #[test]
    fn partial_buckets_add_up_to_one_and_survive_their_encoding() {
        let mut with_soh = sample(10, 51.0, 5.0);
        with_soh.sample.soh_pct = Some(96.0);
        let (a, b, c) = (sample(0, 50.0, 10.0), with_soh, sample(20, 44.0, -3.0));
        let whole = aggregate(&[&a, &b, &c], &HashMap::new());
        // Two writes: the second knows the first's newest sample.
        let first = aggregate(&[&a], &HashMap::new());
        let previous = HashMap::from([(1, a.sample.ts)]);
        let second = aggregate(&[&b, &c], &previous);
        let decoded: Vec<Partial> = [&first, &second]
            .into_iter()
            .flat_map(|batch| decode(&encode(batch).unwrap()).unwrap())
            .collect();
        let mut merged = Bucket::default();
        for p in &decoded {
            merged.merge(&p.bucket);
        }
        let (_, one) = whole.iter().next().unwrap();
        assert_eq!(&merged, one);
        assert_eq!(merged.samples, 3);
        assert_eq!(merged.newest_sample_at, Some(c.sample.ts));
        assert_eq!(
            merged.newest_soh.map(|s| (s.at, s.pct)),
            Some((b.sample.ts, 96.0))
        );
        assert!(merged.energy_in_kwh > 0.0 && merged.energy_out_kwh > 0.0);
        assert!(decode(&[2, 0]).is_err(), "another format is refused");
    }
}
