//! A write's roll-up summary ([`WriteSummary`]) as one `rollup_batches`
//! value, and back: a format byte, then postcard of its hourly partial
//! buckets and its openings.
//!
//! Format 3 writes a statistic of one value as that value alone
//! ([`StatWire`]). Most partial buckets hold one sample — a write of 500
//! samples across 500 batteries makes 500 of them — and their statistics
//! in full took about 230 bytes each, more than the samples themselves:
//! on PostgreSQL, half the WAL of a write. Formats 1 and 2, which an
//! earlier version may have left pending, are still read.

use chrono::serde::{ts_microseconds, ts_microseconds_option};
use chrono::{DateTime, Utc};
use sea_orm::DbErr;
use serde::{Deserialize, Serialize};

use super::rollup::{Bucket, Opening, Soh, Stat, WriteSummary};
use crate::error::ApiResult;

/// The first byte of an encoded batch: its format.
const FORMAT: u8 = 3;
/// Statistics in full, and openings.
const FORMAT_FULL_STATS: u8 = 2;
/// Statistics in full, no openings (written by versions whose writes
/// integrated every sample themselves).
const FORMAT_WITHOUT_OPENINGS: u8 = 1;

/// One hourly partial bucket of a batch (`B`: the bucket's layout).
#[derive(Serialize, Deserialize)]
pub struct Partial<B = Bucket> {
    pub battery_id: i64,
    #[serde(with = "ts_microseconds")]
    pub hour: DateTime<Utc>,
    pub bucket: B,
}

/// A decoded batch: its partial buckets and its writes' openings.
pub struct Batch {
    pub partials: Vec<Partial>,
    pub openings: Vec<(i64, Opening)>,
}

/// A write's summary as one `rollup_batches` value.
pub fn encode(summary: &WriteSummary) -> Result<Vec<u8>, DbErr> {
    encode_parts(
        summary
            .buckets
            .iter()
            .map(|((battery_id, _, hour), bucket)| (*battery_id, *hour, bucket)),
        summary.openings.iter().map(|(b, o)| (*b, o)),
    )
}

/// Hourly partial buckets (battery, hour, bucket) and openings (several
/// per battery, as pending writes leave them) as one `rollup_batches`
/// value: a write's, or what a fold in slices puts back for the batteries
/// it has not reached yet.
pub fn encode_parts<'a>(
    partials: impl IntoIterator<Item = (i64, DateTime<Utc>, &'a Bucket)>,
    openings: impl IntoIterator<Item = (i64, &'a Opening)>,
) -> Result<Vec<u8>, DbErr> {
    let partials: Vec<Partial<&Bucket>> = partials
        .into_iter()
        .map(|(battery_id, hour, bucket)| Partial {
            battery_id,
            hour,
            bucket,
        })
        .collect();
    let openings: Vec<(i64, &Opening)> = openings.into_iter().collect();
    let mut out = vec![FORMAT];
    postcard::to_io(&(partials, openings), &mut out)
        .map_err(|e| DbErr::Custom(format!("encoding partial buckets: {e}")))?;
    Ok(out)
}

/// One [`encode`]d batch. A batch of another format (a newer version's)
/// is refused: the fold then stops, nothing is lost.
pub fn decode(batch: &[u8]) -> ApiResult<Batch> {
    let unreadable = |e: postcard::Error| DbErr::Custom(format!("decoding partial buckets: {e}"));
    let full = |partials: Vec<Partial<FullStatsBucket>>| -> Vec<Partial> {
        partials
            .into_iter()
            .map(|p| Partial {
                battery_id: p.battery_id,
                hour: p.hour,
                bucket: p.bucket.into(),
            })
            .collect()
    };
    match batch.split_first() {
        Some((&FORMAT, rest)) => {
            let (partials, openings) = postcard::from_bytes(rest).map_err(unreadable)?;
            Ok(Batch { partials, openings })
        }
        Some((&FORMAT_FULL_STATS, rest)) => {
            let (partials, openings) = postcard::from_bytes(rest).map_err(unreadable)?;
            Ok(Batch {
                partials: full(partials),
                openings,
            })
        }
        Some((&FORMAT_WITHOUT_OPENINGS, rest)) => Ok(Batch {
            partials: full(postcard::from_bytes(rest).map_err(unreadable)?),
            openings: Vec::new(),
        }),
        _ => Err(DbErr::Custom(
            "a roll-up batch has an unknown format (written by a newer version?)".into(),
        )
        .into()),
    }
}

/// How format 3 writes a [`Stat`]: one value says its own sum, square,
/// minimum and maximum.
#[derive(Serialize, Deserialize)]
pub(super) enum StatWire {
    Empty,
    One(f64),
    Full(FullStat),
}

impl From<Stat> for StatWire {
    fn from(s: Stat) -> Self {
        match s {
            Stat {
                n: 0,
                min: None,
                max: None,
                ..
            } if s.sum == 0.0 && s.sumsq == 0.0 => Self::Empty,
            Stat {
                n: 1,
                sum: v,
                min: Some(lo),
                max: Some(hi),
                ..
            } if lo == v && hi == v && s.sumsq == v * v => Self::One(v),
            Stat {
                n,
                sum,
                sumsq,
                min,
                max,
            } => Self::Full(FullStat {
                n,
                sum,
                sumsq,
                min,
                max,
            }),
        }
    }
}

impl From<StatWire> for Stat {
    fn from(w: StatWire) -> Self {
        match w {
            StatWire::Empty => Stat::default(),
            StatWire::One(v) => Stat {
                n: 1,
                sum: v,
                sumsq: v * v,
                min: Some(v),
                max: Some(v),
            },
            StatWire::Full(f) => f.into(),
        }
    }
}

/// A [`Stat`] in full, as formats 1 and 2 wrote every one.
#[derive(Serialize, Deserialize)]
pub(super) struct FullStat {
    n: i64,
    sum: f64,
    sumsq: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl From<FullStat> for Stat {
    fn from(f: FullStat) -> Self {
        Stat {
            n: f.n,
            sum: f.sum,
            sumsq: f.sumsq,
            min: f.min,
            max: f.max,
        }
    }
}

/// A [`Bucket`] as formats 1 and 2 wrote it.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct FullStatsBucket {
    samples: i64,
    stats: [FullStat; 5],
    energy_in_kwh: f64,
    energy_out_kwh: f64,
    under_voltage: i64,
    over_temperature: i64,
    cell_voltage: FullStat,
    #[serde(with = "ts_microseconds_option")]
    newest_sample_at: Option<DateTime<Utc>>,
    newest_soh: Option<Soh>,
}

impl From<FullStatsBucket> for Bucket {
    fn from(b: FullStatsBucket) -> Self {
        Bucket {
            samples: b.samples,
            stats: b.stats.map(Stat::from),
            energy_in_kwh: b.energy_in_kwh,
            energy_out_kwh: b.energy_out_kwh,
            under_voltage: b.under_voltage,
            over_temperature: b.over_temperature,
            cell_voltage: b.cell_voltage.into(),
            newest_sample_at: b.newest_sample_at,
            newest_soh: b.newest_soh,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::telemetry::rollup::HOUR;

    fn hour() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn stat(values: &[f64]) -> Stat {
        Stat {
            n: values.len() as i64,
            sum: values.iter().sum(),
            sumsq: values.iter().map(|v| v * v).sum(),
            min: values.iter().copied().reduce(f64::min),
            max: values.iter().copied().reduce(f64::max),
        }
    }

    /// A bucket with statistics of every shape: none, one value, several,
    /// and extremes reported apart from the value.
    fn bucket() -> Bucket {
        let mut temperature = stat(&[25.0]);
        temperature.min = Some(21.5);
        Bucket {
            samples: 3,
            stats: [
                stat(&[51.2]),
                stat(&[-12.5, 3.0, 7.25]),
                stat(&[]),
                stat(&[0.1]),
                temperature,
            ],
            energy_in_kwh: 0.25,
            energy_out_kwh: 0.0,
            under_voltage: 1,
            over_temperature: 0,
            cell_voltage: Stat {
                min: Some(3.1),
                max: Some(3.4),
                ..Stat::default()
            },
            newest_sample_at: Some(hour() + TimeDelta::minutes(7)),
            newest_soh: Some(Soh {
                at: hour() + TimeDelta::minutes(5),
                pct: 93.5,
            }),
        }
    }

    fn opening() -> (i64, Opening) {
        let opening = Opening {
            at: hour(),
            power_w: Some(-640.0),
            last: hour() + TimeDelta::minutes(7),
        };
        (4, opening)
    }

    fn summary(bucket: Bucket) -> WriteSummary {
        WriteSummary {
            buckets: [((4, HOUR, hour()), bucket)].into(),
            openings: [opening()].into(),
        }
    }

    /// `bucket` as formats 1 and 2 wrote it.
    fn with_full_stats(bucket: &Bucket) -> Vec<Partial<FullStatsBucket>> {
        let full = |s: &Stat| FullStat {
            n: s.n,
            sum: s.sum,
            sumsq: s.sumsq,
            min: s.min,
            max: s.max,
        };
        vec![Partial {
            battery_id: 4,
            hour: hour(),
            bucket: FullStatsBucket {
                samples: bucket.samples,
                stats: bucket.stats.each_ref().map(full),
                energy_in_kwh: bucket.energy_in_kwh,
                energy_out_kwh: bucket.energy_out_kwh,
                under_voltage: bucket.under_voltage,
                over_temperature: bucket.over_temperature,
                cell_voltage: full(&bucket.cell_voltage),
                newest_sample_at: bucket.newest_sample_at,
                newest_soh: bucket.newest_soh,
            },
        }]
    }

    fn batch_of(format: u8, body: &impl Serialize) -> Vec<u8> {
        let mut out = vec![format];
        postcard::to_io(body, &mut out).unwrap();
        out
    }

    #[test]
    fn every_shape_of_statistic_survives_the_encoding() {
        let batch = decode(&encode(&summary(bucket())).unwrap()).unwrap();
        assert_eq!(batch.partials.len(), 1);
        let p = &batch.partials[0];
        assert_eq!((p.battery_id, p.hour), (4, hour()));
        assert_eq!(p.bucket, bucket());
        assert_eq!(batch.openings, vec![opening()]);
    }

    #[test]
    fn a_one_sample_bucket_takes_less_than_half_the_bytes_of_its_full_statistics() {
        let mut one = Bucket {
            samples: 1,
            newest_sample_at: Some(hour()),
            ..Bucket::default()
        };
        for (s, v) in one.stats.iter_mut().zip([51.2, -12.5, 76.0, 93.1, 24.5]) {
            *s = stat(&[v]);
        }
        let mut without_openings = summary(one.clone());
        without_openings.openings.clear();
        let compact = encode(&without_openings).unwrap().len();
        let none: Vec<(i64, Opening)> = Vec::new();
        let full = batch_of(FORMAT_FULL_STATS, &(with_full_stats(&one), none)).len();
        assert!(compact * 2 < full, "{compact} bytes against {full}");
    }

    #[test]
    fn batches_an_earlier_version_left_are_read() {
        let partials = with_full_stats(&bucket());
        let batch = decode(&batch_of(FORMAT_FULL_STATS, &(&partials, vec![opening()]))).unwrap();
        assert_eq!(batch.partials.len(), 1);
        assert_eq!(batch.partials[0].bucket, bucket());
        assert_eq!(batch.openings, vec![opening()]);

        let batch = decode(&batch_of(FORMAT_WITHOUT_OPENINGS, &partials)).unwrap();
        assert_eq!(batch.partials[0].bucket, bucket());
        assert!(batch.openings.is_empty());

        assert!(
            decode(&[FORMAT + 1, 0]).is_err(),
            "a newer format is refused"
        );
    }
}
