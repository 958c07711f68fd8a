//! Hourly and daily roll-ups, maintained incrementally: each write folds
//! its new samples into hourly partial buckets and appends them, in its
//! own transaction, as one row of `rollup_batches`
//! ([`super::rollup_batch::encode`]), which [`super::fold`] adds to the
//! stored hours and days (a late sample lands in, and corrects, its own
//! buckets). Each partial bucket also carries its
//! newest sample's time and SOH, which the fold moves its battery's
//! pointers to.
//! Buckets keep counts, sums, sums of squares, minima and maxima, so
//! averages and standard deviations stay exact whatever the order of
//! arrival, and partial buckets add up to the same as one.
//!
//! Energy in/out integrates each new sample's power (`powerW`, else V × I)
//! over the time since the battery's previous sample; gaps longer than
//! [`MAX_GAP`] are not integrated, nor are late samples (older than one
//! already stored). A write integrates each sample after the first of its
//! battery in the write; the first one's previous sample may have been
//! written by another write, so the write records it as an [`Opening`]
//! and the fold, which sees every write's span of every battery, finds
//! that previous sample ([`stitch`]). Looking it up in every write took an
//! index probe per battery per write: a third of PostgreSQL's work.

use std::collections::HashMap;

use chrono::serde::{ts_microseconds, ts_microseconds_option};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sea_orm::sea_query::SimpleExpr;
use sea_orm::{DbBackend, DbErr, sqlx};
use serde::{Deserialize, Serialize};

use super::checks::Checked;
use super::rollup_batch::StatWire;

/// Longest gap between two samples over which power is integrated.
pub const MAX_GAP: TimeDelta = TimeDelta::minutes(15);

/// The resolutions of roll-ups: writes make hourly partial buckets, and
/// [`super::fold`] adds them up into hours and days.
pub const HOUR: &str = "HOUR";
pub const DAY: &str = "DAY";

const METRICS: [&str; 5] = ["voltage", "current", "soc", "soh", "temp"];

#[derive(Clone, Copy, Default, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "StatWire", into = "StatWire")]
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
    /// Adds energy in (positive) or out (negative).
    pub fn add_energy(&mut self, kwh: f64) {
        if kwh > 0.0 {
            self.energy_in_kwh += kwh;
        } else {
            self.energy_out_kwh -= kwh;
        }
    }

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

/// A battery's first new sample in one write, whose energy the fold
/// integrates from the sample before it ([`stitch`]), and the time of the
/// write's newest sample of the battery (the span the write covers).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Opening {
    #[serde(with = "ts_microseconds")]
    pub at: DateTime<Utc>,
    pub power_w: Option<f64>,
    #[serde(with = "ts_microseconds")]
    pub last: DateTime<Utc>,
}

/// One write's new samples, added up: hourly partial buckets, and each
/// battery's [`Opening`].
#[derive(Default, Debug)]
pub struct WriteSummary {
    pub buckets: HashMap<BucketKey, Bucket>,
    pub openings: HashMap<i64, Opening>,
}

/// A sample's power: `powerW`, else V × I.
fn power(s: &entities::battery_sample::Model) -> Option<f64> {
    s.power_w
        .or(s.voltage_v.zip(s.current_a).map(|(v, i)| v * i))
}

/// Energy of `power_w` over `dt` (none over a gap longer than
/// [`MAX_GAP`]), in kWh: positive charging, negative discharging.
fn energy_kwh(power_w: Option<f64>, dt: TimeDelta) -> f64 {
    match power_w {
        Some(p) if dt > TimeDelta::zero() && dt <= MAX_GAP => p * dt.as_seconds_f64() / 3.6e6,
        _ => 0.0,
    }
}

/// The hour a time falls in.
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// Folds one write's new samples into hourly buckets; each battery's
/// first sample of the write is integrated later, by [`stitch`].
pub fn aggregate(new: &[&Checked]) -> WriteSummary {
    let mut sorted: Vec<&Checked> = new.to_vec();
    sorted.sort_by_key(|c| (c.sample.battery_id, c.sample.ts));
    let mut out = WriteSummary::default();
    let mut last: HashMap<i64, DateTime<Utc>> = HashMap::new();
    for c in sorted {
        let s = &c.sample;
        let power = power(s);
        let energy = match last.insert(s.battery_id, s.ts) {
            Some(prev) => energy_kwh(power, s.ts - prev),
            None => {
                out.openings.insert(
                    s.battery_id,
                    Opening {
                        at: s.ts,
                        power_w: power,
                        last: s.ts,
                    },
                );
                0.0
            }
        };
        let b = out
            .buckets
            .entry((s.battery_id, HOUR, hour_of(s.ts)))
            .or_default();
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
        b.add_energy(energy);
        b.under_voltage += i64::from(c.under_voltage);
        b.over_temperature += i64::from(c.over_temperature);
    }
    for (battery, opening) in &mut out.openings {
        if let Some(newest) = last.get(battery) {
            opening.last = *newest;
        }
    }
    out
}

/// The energy of each write's first sample of a battery, from the sample
/// before it: the newest of the battery's samples folded earlier
/// (`folded`, its `last_sample_at`) and of the other pending writes'
/// spans that end before it. A first sample older than a folded one, or
/// within another pending write's span, is late and not integrated, as a
/// write integrates no late sample. Returns (battery, hour, kWh).
pub fn stitch(
    openings: &[(i64, Opening)],
    folded: &HashMap<i64, DateTime<Utc>>,
) -> Vec<(i64, DateTime<Utc>, f64)> {
    let mut by_battery: HashMap<i64, Vec<&Opening>> = HashMap::new();
    for (battery, opening) in openings {
        by_battery.entry(*battery).or_default().push(opening);
    }
    let mut out = Vec::new();
    for (battery, mut spans) in by_battery {
        spans.sort_by_key(|o| o.at);
        let folded = folded.get(&battery).copied();
        // The newest end of the spans that start before the current one.
        let mut reached: Option<DateTime<Utc>> = None;
        for span in spans {
            let late =
                folded.is_some_and(|f| span.at <= f) || reached.is_some_and(|r| span.at <= r);
            if !late && let Some(prev) = reached.max(folded) {
                let kwh = energy_kwh(span.power_w, span.at - prev);
                if kwh != 0.0 {
                    out.push((battery, hour_of(span.at), kwh));
                }
            }
            reached = reached.max(Some(span.last));
        }
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
/// ([`super::rollup_batch::encode`]), for [`super::fold`].
pub const BATCHES: &str = "rollup_batches";

/// The append of one encoded batch to [`BATCHES`]; `$1` is a positional
/// parameter on both SQLite and PostgreSQL.
pub(super) const APPEND: &str = "INSERT INTO rollup_batches (partials) VALUES ($1)";

/// A write's summary encoded as one row of [`BATCHES`]
/// ([`super::rollup_batch::encode`]); `None` when the write stored no
/// sample. SQLite's writer ([`super::sqlite_write`]) appends it with
/// [`APPEND`] through rusqlite, PostgreSQL's with [`append_summary`].
pub(super) fn summary_row(summary: &WriteSummary) -> Result<Option<Vec<u8>>, DbErr> {
    if summary.buckets.is_empty() {
        return Ok(None);
    }
    super::rollup_batch::encode(summary).map(Some)
}

/// Appends a write's [`summary_row`], if any, in PostgreSQL's sample
/// writer's own sqlx transaction ([`super::pg_write`]).
pub(super) async fn append_summary(
    conn: &mut sqlx::PgConnection,
    summary: &WriteSummary,
) -> Result<(), DbErr> {
    if let Some(row) = summary_row(summary)? {
        sqlx::query(sqlx::AssertSqlSafe(APPEND))
            .bind(row)
            .execute(conn)
            .await
            .map_err(crate::db::sqlx_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::rollup_batch::{Batch, decode, encode};
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

    fn at(minute: i64) -> DateTime<Utc> {
        sample(minute, 0.0, 0.0).sample.ts
    }

    #[test]
    fn buckets_integrate_power_between_samples() {
        // 50 V × 10 A charging for 6 minutes, then 50 V × -20 A for 6 minutes.
        let a = sample(0, 50.0, 10.0);
        let b = sample(6, 50.0, 10.0);
        let c = sample(12, 50.0, -20.0);
        let d = sample(70, 40.0, -20.0); // next hour, after a 58-minute gap
        let summary = aggregate(&[&c, &a, &d, &b]);
        let buckets = &summary.buckets;
        let hour = at(0);
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
        // The write's first sample waits for the fold, which knows the one before.
        assert_eq!(
            summary.openings[&1],
            Opening {
                at: at(0),
                power_w: Some(500.0),
                last: at(70)
            }
        );
    }

    #[test]
    fn partial_buckets_add_up_to_one_and_survive_their_encoding() {
        let mut with_soh = sample(10, 51.0, 5.0);
        with_soh.sample.soh_pct = Some(96.0);
        let (a, b, c) = (sample(0, 50.0, 10.0), with_soh, sample(20, 44.0, -3.0));
        let mut whole = aggregate(&[&a, &b, &c]);
        // Two writes; the fold integrates the second's first sample from the first's last.
        let first = aggregate(&[&a]);
        let second = aggregate(&[&b, &c]);
        let decoded: Vec<Batch> = [&first, &second]
            .into_iter()
            .map(|batch| decode(&encode(batch).unwrap()).unwrap())
            .collect();
        let mut merged = Bucket::default();
        for p in decoded.iter().flat_map(|b| &b.partials) {
            merged.merge(&p.bucket);
        }
        let openings: Vec<(i64, Opening)> =
            decoded.iter().flat_map(|b| b.openings.clone()).collect();
        assert_eq!(openings.len(), 2);
        for (_, hour, kwh) in stitch(&openings, &HashMap::new()) {
            assert_eq!(hour, at(0));
            merged.add_energy(kwh);
        }
        let (_, one) = whole.buckets.drain().next().unwrap();
        assert!((merged.energy_in_kwh - one.energy_in_kwh).abs() < 1e-12);
        merged.energy_in_kwh = one.energy_in_kwh;
        assert_eq!(merged, one);
        assert_eq!(merged.samples, 3);
        assert_eq!(merged.newest_sample_at, Some(c.sample.ts));
        assert_eq!(
            merged.newest_soh.map(|s| (s.at, s.pct)),
            Some((b.sample.ts, 96.0))
        );
        assert!(merged.energy_in_kwh > 0.0 && merged.energy_out_kwh > 0.0);
    }

    #[test]
    fn a_first_sample_is_integrated_from_the_newest_sample_before_it_and_never_when_late() {
        let span = |from: i64, to: i64| Opening {
            at: at(from),
            power_w: Some(600.0),
            last: at(to),
        };
        // 600 W for one minute is 0.01 kWh.
        let kwh = |minutes: f64| 600.0 * minutes * 60.0 / 3.6e6;
        let folded = HashMap::from([(1, at(10))]);
        let openings = [
            (1, span(12, 14)), // after the folded sample at 10: 2 minutes
            (1, span(16, 20)), // after the pending span ending at 14: 2 minutes
            (1, span(18, 19)), // inside the span 16..20: late
            (1, span(5, 6)),   // older than the folded sample: late
            (1, span(40, 41)), // 20 minutes after 20: a gap, not integrated
            (2, span(3, 3)),   // nothing before it
        ];
        let mut energy = stitch(&openings, &folded);
        energy.sort_by_key(|(_, _, kwh)| (kwh * 1e9) as i64);
        assert_eq!(energy.len(), 2, "{energy:?}");
        for (battery, hour, e) in energy {
            assert_eq!((battery, hour), (1, at(0)));
            assert!((e - kwh(2.0)).abs() < 1e-12, "{e}");
        }
        // Discharging counts negative.
        let out = stitch(
            &[(
                3,
                Opening {
                    power_w: Some(-600.0),
                    ..span(11, 11)
                },
            )],
            &HashMap::from([(3, at(10))]),
        );
        assert_eq!(out.len(), 1);
        assert!((out[0].2 + kwh(1.0)).abs() < 1e-12);
    }
}
