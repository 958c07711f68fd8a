"""Feature vectors of the prediction models, computed from what the server
stores: one point per UTC day that had SOH readings (the DAY roll-up: mean
SOH, mean and maximum temperature) plus the latest cycle count.

This file and `api/src/predict/features.rs` are two implementations of one
definition; `api/tests/predictions.rs` feeds both the fixtures written by
`train.py` and requires the same vectors. Change both together.
"""

from dataclasses import dataclass
import math

WINDOW_DAYS = 180  # history a forecast looks at
MIN_POINTS = 3  # fewer daily points: "insufficient data"
MIN_SPAN_DAYS = 14  # shorter history: "insufficient data"
RECENT_DAYS = 30  # the "recent" slope
DEFAULT_TEMP_C = 25.0  # when a battery reports no temperature
UNKNOWN_EFC = -1.0  # when a battery reports no cycle count

ANOMALY_POINTS = 8  # daily points the anomaly score looks at
ANOMALY_MIN_POINTS = 4
NO_TEMP_STD_LOG = -0.5  # log10 of a typical daily temperature spread

FORECAST_FEATURES = [
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
]
ANOMALY_FEATURES = [
    "soh_step_rate",
    "soh_residual_rate",
    "soh_repeats",
    "temp_jump",
    "temp_spread_log",
    "slope_ratio",
]


@dataclass
class DayPoint:
    day: int  # days since 1970-01-01 (UTC)
    soh: float  # fraction (sohPct / 100), mean of the day
    temp_avg: float | None  # mean of the day's tempAvgC
    temp_max: float | None  # hottest reading of the day


def linear_fit(xs, ys):
    """Least squares y = a + b x; returns (a, b). Needs two distinct xs."""
    n = float(len(xs))
    sx = sum(xs)
    sy = sum(ys)
    mx = sx / n
    my = sy / n
    sxx = sum((x - mx) * (x - mx) for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx if sxx > 0.0 else 0.0
    return my - b * mx, b


def quadratic_coefficient(xs, ys):
    """c of the least-squares y = a + b x + c x^2 (x in hundreds of days)."""
    xs = [x / 100.0 for x in xs]
    n = float(len(xs))
    s1 = sum(xs)
    s2 = sum(x * x for x in xs)
    s3 = sum(x * x * x for x in xs)
    s4 = sum(x * x * x * x for x in xs)
    t0 = sum(ys)
    t1 = sum(x * y for x, y in zip(xs, ys))
    t2 = sum(x * x * y for x, y in zip(xs, ys))
    # Cramer's rule on the normal equations.
    det = n * (s2 * s4 - s3 * s3) - s1 * (s1 * s4 - s3 * s2) + s2 * (s1 * s3 - s2 * s2)
    if abs(det) < 1e-12:
        return 0.0
    det_c = n * (s2 * t2 - s3 * t1) - s1 * (s1 * t2 - s3 * t0) + s2 * (s1 * t1 - s2 * t0)
    return det_c / det


def window(points, last_day, days):
    return [p for p in points if p.day > last_day - days]


def forecast_features(points, efc, end_of_life):
    """The forecast feature vector, or None when the history is too short.

    `points` are sorted by day; `efc` is the latest cycle count or None."""
    if not points:
        return None
    last = points[-1].day
    w = window(points, last, WINDOW_DAYS)
    if len(w) < MIN_POINTS or w[-1].day - w[0].day < MIN_SPAN_DAYS:
        return None
    xs = [float(p.day - last) for p in w]
    ys = [p.soh for p in w]
    a_w, b_w = linear_fit(xs, ys)
    recent = window(w, last, RECENT_DAYS)
    if len(recent) >= MIN_POINTS:
        a_r, b_r = linear_fit([float(p.day - last) for p in recent], [p.soh for p in recent])
    else:
        a_r, b_r = a_w, b_w
    residuals = [y - (a_w + b_w * x) for x, y in zip(xs, ys)]
    residual_std = math.sqrt(sum(r * r for r in residuals) / len(residuals))
    temps = [p.temp_avg for p in w if p.temp_avg is not None]
    hottest = [p.temp_max if p.temp_max is not None else p.temp_avg for p in w]
    hottest = [t for t in hottest if t is not None]
    return [
        w[-1].soh,
        a_r,
        b_r,
        b_w,
        quadratic_coefficient(xs, ys),
        residual_std,
        float(w[-1].day - w[0].day),
        float(efc) if efc is not None else UNKNOWN_EFC,
        sum(temps) / len(temps) if temps else DEFAULT_TEMP_C,
        max(hottest) if hottest else DEFAULT_TEMP_C,
        w[0].soh - w[-1].soh,
        end_of_life,
    ]


def spread_log(values, floor):
    m = sum(values) / len(values)
    return math.log10(math.sqrt(sum((v - m) * (v - m) for v in values) / len(values)) + floor)


def anomaly_features(points):
    """The anomaly feature vector over the latest daily points of the window,
    or None.

    Rates are per day so that sparse histories (one point a quarter) and
    dense ones (one a day) look alike."""
    if not points:
        return None
    points = window(points, points[-1].day, WINDOW_DAYS)
    if len(points) < ANOMALY_MIN_POINTS:
        return None
    recent = points[-ANOMALY_POINTS:]
    before = recent[:-1]
    last = recent[-1]
    gap = float(last.day - before[-1].day)
    xs = [float(p.day - last.day) for p in before]
    a, _ = linear_fit(xs, [p.soh for p in before])
    repeats = 0
    for p in reversed(before):
        if p.soh != last.soh:
            break
        repeats += 1
    temps = [p.temp_avg for p in recent if p.temp_avg is not None]
    if last.temp_avg is not None and len(temps) >= 2:
        earlier_t = temps[:-1]
        temp_jump = last.temp_avg - sum(earlier_t) / len(earlier_t)
        temp_spread = spread_log(temps, 1e-3)
    else:
        temp_jump = 0.0
        temp_spread = NO_TEMP_STD_LOG
    _, b_w = linear_fit([float(p.day - last.day) for p in points], [p.soh for p in points])
    _, b_r = linear_fit([float(p.day - last.day) for p in recent], [p.soh for p in recent])
    return [
        (last.soh - before[-1].soh) / gap,
        (last.soh - a) / gap,
        float(repeats),
        temp_jump,
        temp_spread,
        (b_r - b_w) * 100.0,  # fraction per 100 days, recent minus long-run
    ]
