//! Feature vectors of the prediction models, from what the server stores:
//! one point per UTC day with SOH readings (the DAY roll-up) and the latest
//! cycle count. `api/models/training/features.py` is the other half of this
//! definition; `tests/predictions.rs` requires both to agree. Change both
//! together.

/// History a forecast looks at.
pub const WINDOW_DAYS: i64 = 180;
/// Fewer daily points: insufficient data.
pub const MIN_POINTS: usize = 3;
/// Shorter history: insufficient data.
pub const MIN_SPAN_DAYS: i64 = 14;
/// Span of the "recent" slope.
pub const RECENT_DAYS: i64 = 30;
/// When a battery reports no temperature.
pub const DEFAULT_TEMP_C: f64 = 25.0;
/// When a battery reports no cycle count.
pub const UNKNOWN_EFC: f64 = -1.0;
/// Daily points the anomaly score looks at.
pub const ANOMALY_POINTS: usize = 8;
pub const ANOMALY_MIN_POINTS: usize = 4;
/// log10 of a typical daily temperature spread, when there is no temperature.
pub const NO_TEMP_STD_LOG: f64 = -0.5;

pub const FORECAST_FEATURES: [&str; 12] = [
    "soh",
    "soh_fit",
    "slope_recent",
    "slope_window",
    "curvature",
    "residual_std",
    "span_days",
    "efc",
    "temp_mean",
    "temp_max",
    "fade_window",
    "end_of_life",
];
pub const ANOMALY_FEATURES: [&str; 6] = [
    "soh_step_rate",
    "soh_residual_rate",
    "soh_repeats",
    "temp_jump",
    "temp_spread_log",
    "slope_ratio",
];

/// One day of a battery's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayPoint {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// Mean SOH of the day, as a fraction.
    pub soh: f64,
    /// Mean `tempAvgC` of the day.
    pub temp_avg: Option<f64>,
    /// Hottest reading of the day.
    pub temp_max: Option<f64>,
}

/// Least squares `y = a + b x`; `(a, b)`.
fn linear_fit(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

/// `c` of the least-squares `y = a + b x + c x²`, x in hundreds of days.
fn quadratic_coefficient(xs: &[f64], ys: &[f64]) -> f64 {
    let xs: Vec<f64> = xs.iter().map(|x| x / 100.0).collect();
    let n = xs.len() as f64;
    let s1: f64 = xs.iter().sum();
    let s2: f64 = xs.iter().map(|x| x * x).sum();
    let s3: f64 = xs.iter().map(|x| x * x * x).sum();
    let s4: f64 = xs.iter().map(|x| x * x * x * x).sum();
    let t0: f64 = ys.iter().sum();
    let t1: f64 = xs.iter().zip(ys).map(|(x, y)| x * y).sum();
    let t2: f64 = xs.iter().zip(ys).map(|(x, y)| x * x * y).sum();
    let det = n * (s2 * s4 - s3 * s3) - s1 * (s1 * s4 - s3 * s2) + s2 * (s1 * s3 - s2 * s2);
    if det.abs() < 1e-12 {
        return 0.0;
    }
    let det_c = n * (s2 * t2 - s3 * t1) - s1 * (s1 * t2 - s3 * t0) + s2 * (s1 * t1 - s2 * t0);
    det_c / det
}

/// Points of the last `days` days up to `last_day`.
fn window(points: &[DayPoint], last_day: i64, days: i64) -> &[DayPoint] {
    let start = points.partition_point(|p| p.day <= last_day - days);
    &points[start..]
}

fn offsets(points: &[DayPoint], last_day: i64) -> Vec<f64> {
    points.iter().map(|p| (p.day - last_day) as f64).collect()
}

fn sohs(points: &[DayPoint]) -> Vec<f64> {
    points.iter().map(|p| p.soh).collect()
}

/// The forecast features (order of [`FORECAST_FEATURES`]), or `None` when
/// the history is too short. `points` are sorted by day.
pub fn forecast(points: &[DayPoint], efc: Option<i64>, end_of_life: f64) -> Option<[f64; 12]> {
    let last = points.last()?.day;
    let w = window(points, last, WINDOW_DAYS);
    let (first, newest) = (w.first()?, w.last()?);
    if w.len() < MIN_POINTS || newest.day - first.day < MIN_SPAN_DAYS {
        return None;
    }
    let (xs, ys) = (offsets(w, last), sohs(w));
    let (a_w, b_w) = linear_fit(&xs, &ys);
    let recent = window(w, last, RECENT_DAYS);
    let (a_r, b_r) = if recent.len() >= MIN_POINTS {
        linear_fit(&offsets(recent, last), &sohs(recent))
    } else {
        (a_w, b_w)
    };
    let residual_sq: f64 = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| (y - (a_w + b_w * x)).powi(2))
        .sum();
    let temps: Vec<f64> = w.iter().filter_map(|p| p.temp_avg).collect();
    let hottest = w
        .iter()
        .filter_map(|p| p.temp_max.or(p.temp_avg))
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    Some([
        newest.soh,
        a_r,
        b_r,
        b_w,
        quadratic_coefficient(&xs, &ys),
        (residual_sq / xs.len() as f64).sqrt(),
        (newest.day - first.day) as f64,
        efc.map_or(UNKNOWN_EFC, |e| e as f64),
        if temps.is_empty() {
            DEFAULT_TEMP_C
        } else {
            temps.iter().sum::<f64>() / temps.len() as f64
        },
        hottest.unwrap_or(DEFAULT_TEMP_C),
        first.soh - newest.soh,
        end_of_life,
    ])
}

fn spread_log(values: &[f64], floor: f64) -> f64 {
    let m = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / values.len() as f64;
    (var.sqrt() + floor).log10()
}

/// The anomaly features (order of [`ANOMALY_FEATURES`]) over the latest
/// daily points of the window, or `None` with fewer than [`ANOMALY_MIN_POINTS`]. Rates are
/// per day, so sparse and dense histories look alike.
pub fn anomaly(points: &[DayPoint]) -> Option<[f64; 6]> {
    let points = window(points, points.last()?.day, WINDOW_DAYS);
    if points.len() < ANOMALY_MIN_POINTS {
        return None;
    }
    let recent = &points[points.len().saturating_sub(ANOMALY_POINTS)..];
    let (before, last) = (&recent[..recent.len() - 1], recent.last()?);
    let previous = before.last()?;
    let gap = (last.day - previous.day) as f64;
    let (a, _) = linear_fit(&offsets(before, last.day), &sohs(before));
    let repeats = before
        .iter()
        .rev()
        .take_while(|p| p.soh == last.soh)
        .count();
    let temps: Vec<f64> = recent.iter().filter_map(|p| p.temp_avg).collect();
    let (temp_jump, temp_spread) = match last.temp_avg {
        Some(t) if temps.len() >= 2 => {
            let earlier = &temps[..temps.len() - 1];
            (
                t - earlier.iter().sum::<f64>() / earlier.len() as f64,
                spread_log(&temps, 1e-3),
            )
        }
        _ => (0.0, NO_TEMP_STD_LOG),
    };
    let (_, b_w) = linear_fit(&offsets(points, last.day), &sohs(points));
    let (_, b_r) = linear_fit(&offsets(recent, last.day), &sohs(recent));
    Some([
        (last.soh - previous.soh) / gap,
        (last.soh - a) / gap,
        repeats as f64,
        temp_jump,
        temp_spread,
        (b_r - b_w) * 100.0,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(days: i64, start: f64, per_day: f64) -> Vec<DayPoint> {
        (0..days)
            .map(|d| DayPoint {
                day: 20_000 + d,
                soh: start + per_day * d as f64,
                temp_avg: Some(25.0),
                temp_max: Some(30.0),
            })
            .collect()
    }

    #[test]
    fn a_straight_fade_has_its_slope_and_no_curvature() {
        let x = forecast(&line(60, 0.95, -0.001), Some(60), 0.8).expect("enough data");
        assert!((x[0] - 0.891).abs() < 1e-12);
        assert!((x[2] + 0.001).abs() < 1e-12 && (x[3] + 0.001).abs() < 1e-12);
        assert!(x[4].abs() < 1e-9 && x[5] < 1e-12);
        assert_eq!((x[6], x[7], x[9]), (59.0, 60.0, 30.0));
    }

    #[test]
    fn short_histories_have_no_features() {
        assert!(forecast(&line(2, 0.95, -0.001), None, 0.8).is_none());
        assert!(forecast(&line(10, 0.95, -0.001), None, 0.8).is_none()); // 9 days span
        assert!(anomaly(&line(3, 0.95, 0.0)).is_none());
    }

    #[test]
    fn stuck_readings_count_as_repeats() {
        let x = anomaly(&line(10, 0.9, 0.0)).expect("enough data");
        assert_eq!(x[2], 7.0);
        let y = anomaly(&line(10, 0.9, -0.001)).expect("enough data");
        assert_eq!(y[2], 0.0);
    }
}
