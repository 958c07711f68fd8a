"""Trains every prediction model from scratch on the real aging data in
`api/models/data/battery-aging/`, evaluates them on held-out cells against
persistence and linear extrapolation, and writes:

- `api/models/onnx/forecast.onnx`: SOH in 30 days (quantiles 0.1/0.5/0.9 of
  the change), remaining useful life (quantiles of log1p(days)) and the
  calibrated probability of reaching end of life within 30 days;
- `api/models/onnx/remaining_life.onnx`: the forecast's median remaining life
  alone, derived from its trees (for the factor rows; see
  `derive_remaining_life`);
- `api/models/onnx/anomaly.onnx`: an isolation forest over recent daily
  behaviour, exported as one TreeEnsembleRegressor (see `export_isolation_forest`);
- `api/models/onnx/manifest.json`: feature names, reference values, metrics;
- `api/models/fixtures/parity.json`: sample histories with the feature vectors
  and model outputs the Rust side must reproduce;
- `api/models/MODEL_CARD.md` (metrics part; `trackingbms replay-cells`
  adds the end-to-end figures).

Run with `scripts/train-models.sh` (installs the pinned requirements).
"""

import csv
import json
import math
import os
import random
import sys
import time
from collections import defaultdict

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor, IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

import features as F

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
DATA = os.path.join(MODELS, "data", "battery-aging", "cells.csv")
OUT = os.path.join(MODELS, "onnx")
FIXTURES = os.path.join(MODELS, "fixtures")

SEED = 20261121
DAYS_PER_EFC = 1.0  # one equivalent full cycle per day in the field
REPLAY_START = 1577836800  # 2020-01-01T00:00:00Z, first sample of a replayed cell
HORIZON = 30  # days ahead for the SOH forecast and the failure probability
EOL_TRAIN = [0.70, 0.75, 0.80, 0.85]  # end-of-life thresholds seen in training
EOL_EVAL = 0.80
QUANTILES = [0.1, 0.5, 0.9]
RUL_CAP_DAYS = 3650.0
# Cells the data README advises against (mixed loads, crashed tests).
EXCLUDED = {f"NASA_B00{n}" for n in range(38, 45)} | {f"NASA_B00{n}" for n in range(49, 53)}
DROPPED_FLAGS = {"zero_or_nan_capacity", "low_outlier", "high_outlier", "low_outlier;jump_up"}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def num(s):
    return float(s) if s not in ("", None) else None


# ---------------------------------------------------------------- data ----


def load_cells():
    """cell id -> (source, samples); a sample is (ts seconds, soh %, temp avg, temp max, efc),
    exactly what `trackingbms replay-cells` sends for that row."""
    cells = {}
    with open(DATA, newline="") as f:
        for r in csv.DictReader(f):
            if r["cell_id"] in EXCLUDED or r["flag"] in DROPPED_FLAGS:
                continue
            soh = num(r["soh"])
            efc = num(r["efc"])
            if soh is None or efc is None or not (0.0 < soh <= 1.2):
                continue
            temp = num(r["temp_mean_c"])
            if temp is None:
                temp = num(r["ambient_temp_c"])
            ts = REPLAY_START + round(efc * DAYS_PER_EFC * 86400.0)
            src, samples = cells.setdefault(r["cell_id"], (r["source"], []))
            samples.append((ts, round(soh * 100.0, 4), temp, num(r["temp_max_c"]), efc))
    for cid, (src, samples) in cells.items():
        seen = set()
        kept = []
        for s in samples:  # the server keeps the first sample of a timestamp
            if s[0] not in seen:
                seen.add(s[0])
                kept.append(s)
        kept.sort(key=lambda s: s[0])
        cells[cid] = (src, kept)
    return cells


def daily_points(samples):
    """The DAY roll-up the server keeps, reduced to what the features read."""
    days = defaultdict(list)
    for s in samples:
        days[s[0] // 86400].append(s)
    points = []
    for day in sorted(days):
        rows = days[day]
        sohs = [r[1] for r in rows]
        temps = [r[2] for r in rows if r[2] is not None]
        hottest = [r[3] if r[3] is not None else r[2] for r in rows]
        hottest = [t for t in hottest if t is not None]
        points.append(
            F.DayPoint(
                day=day,
                soh=(sum(sohs) / len(sohs)) / 100.0,
                temp_avg=sum(temps) / len(temps) if temps else None,
                temp_max=max(hottest) if hottest else None,
            )
        )
    return points


def latest_efc(samples, day):
    """Cycle count of the newest sample on or before `day` (integer, as stored)."""
    efc = None
    for s in samples:
        if s[0] // 86400 <= day:
            efc = int(math.floor(s[4]))
    return efc


# ------------------------------------------------------------- targets ----


def smoothed(points):
    """Median of three neighbours: one noisy day does not end a battery's life."""
    out = []
    for i in range(len(points)):
        w = sorted(p.soh for p in points[max(0, i - 1) : i + 2])
        out.append(w[len(w) // 2])
    return out


def soh_at(points, day):
    for a, b in zip(points, points[1:]):
        if a.day <= day <= b.day:
            t = (day - a.day) / (b.day - a.day)
            return a.soh + t * (b.soh - a.soh)
    return None


def crossing_day(points, smooth, after, eol):
    for p, s in zip(points, smooth):
        if p.day >= after and s < eol:
            return p.day
    return None


def cut_days(points, source):
    step = {"inl_pouch": 5, "nasa_pcoe": 2}.get(source, 1)
    return [p.day for p in points[::step]]


def rows_for_cell(cid, source, samples, eols):
    """Training rows of one cell: one per cut day and end-of-life threshold."""
    points = daily_points(samples)
    smooth = smoothed(points)
    last_day = points[-1].day
    rows = []
    for cut in cut_days(points, source):
        history = [p for p in points if p.day <= cut]
        for eol in eols:
            x = F.forecast_features(history, latest_efc(samples, cut), eol)
            if x is None:
                continue
            future = soh_at(points, cut + HORIZON)
            cross = crossing_day(points, smooth, cut, eol)
            rul = float(cross - cut) if cross is not None else None
            if cross is not None:
                fail = 1 if cross - cut <= HORIZON else 0
            elif last_day >= cut + HORIZON:
                fail = 0
            else:
                fail = None
            rows.append(
                {
                    "cell": cid,
                    "source": source,
                    "cut": cut,
                    "x": x,
                    "delta30": None if future is None else future - x[0],
                    "rul": rul,
                    "fail": fail,
                    "anomaly": F.anomaly_features(history) if eol == eols[0] else None,
                }
            )
    return rows


# -------------------------------------------------------------- models ----


def gbr(alpha, n=60):
    # 60 trees of depth 3 each: the whole forecast (9 ensembles) stays near 20 µs a row.
    return GradientBoostingRegressor(
        loss="quantile", alpha=alpha, n_estimators=n, max_depth=3, learning_rate=0.15,
        subsample=0.8, min_samples_leaf=20, random_state=SEED,
    )


def fit_forecast(rows):
    """Quantile models of the 30-day SOH change and of log1p(RUL), and the
    calibrated 30-day failure classifier."""
    soh_rows = [r for r in rows if r["delta30"] is not None]
    xs = np.array([r["x"] for r in soh_rows], dtype=np.float32)
    ys = np.array([r["delta30"] for r in soh_rows])
    soh_models = []
    for q in QUANTILES:
        log(f"  SOH change, quantile {q}: {len(soh_rows)} rows")
        soh_models.append(gbr(q).fit(xs, ys))
    # Past the end of life the answer is a rule (0 days), not a model.
    rul_rows = [r for r in rows if r["rul"] is not None and r["x"][0] >= r["x"][-1]]
    xr = np.array([r["x"] for r in rul_rows], dtype=np.float32)
    yr = np.log1p(np.minimum([r["rul"] for r in rul_rows], RUL_CAP_DAYS))
    rul_models = []
    for q in QUANTILES:
        log(f"  RUL, quantile {q}: {len(rul_rows)} rows")
        rul_models.append(gbr(q).fit(xr, yr))
    fail_rows = [r for r in rows if r["fail"] is not None]
    xf = np.array([r["x"] for r in fail_rows], dtype=np.float32)
    yf = np.array([r["fail"] for r in fail_rows])
    groups = [r["cell"] for r in fail_rows]
    folds = list(GroupKFold(n_splits=3).split(xf, yf, groups))
    log(f"  failure within {HORIZON} days: {len(fail_rows)} rows, {int(yf.sum())} positive")
    base = GradientBoostingClassifier(n_estimators=60, max_depth=3, learning_rate=0.15, subsample=0.8, random_state=SEED)
    # One classifier per cell-grouped fold, each with its sigmoid; their mean is the probability.
    classifier = CalibratedClassifierCV(base, method="sigmoid", cv=folds).fit(xf, yf)
    return soh_models, rul_models, classifier


def predict_forecast(models, x):
    soh_models, rul_models, classifier = models
    x = np.asarray(x, dtype=np.float32)
    soh = np.stack([m.predict(x) for m in soh_models], axis=1)
    rul = np.stack([m.predict(x) for m in rul_models], axis=1)
    fail = classifier.predict_proba(x)[:, 1]
    return soh, rul, fail


def add_tree(attrs, tree_id, tree, target, leaf_value):
    """Appends one scikit-learn tree to TreeEnsembleRegressor attributes:
    `x[feature] <= threshold` goes left, a leaf adds `leaf_value[node]` to
    `target`."""
    for node in range(tree.node_count):
        left, right = tree.children_left[node], tree.children_right[node]
        leaf = left == -1
        attrs["nodes_treeids"].append(tree_id)
        attrs["nodes_nodeids"].append(node)
        attrs["nodes_featureids"].append(0 if leaf else int(tree.feature[node]))
        attrs["nodes_values"].append(0.0 if leaf else float(tree.threshold[node]))
        attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
        attrs["nodes_truenodeids"].append(0 if leaf else int(left))
        attrs["nodes_falsenodeids"].append(0 if leaf else int(right))
        attrs["nodes_missing_value_tracks_true"].append(0)
        if leaf:
            attrs["target_treeids"].append(tree_id)
            attrs["target_nodeids"].append(node)
            attrs["target_ids"].append(target)
            attrs["target_weights"].append(float(leaf_value[node]))


def add_boosting(attrs, model, target, raw, first_tree):
    """Appends a gradient-boosting model's trees as `target`; returns its
    base value (the raw score before any tree: `raw(x) - trees(x)`)."""
    rate = model.learning_rate
    trees = [est.tree_ for est in model.estimators_[:, 0]]
    for i, tree in enumerate(trees):
        add_tree(attrs, first_tree + i, tree, target, tree.value[:, 0, 0] * rate)
    x0 = np.zeros((1, model.n_features_in_), dtype=np.float32)
    trees_at_x0 = sum(est.predict(x0)[0] for est in model.estimators_[:, 0]) * rate
    return float(raw(x0)[0]) - float(trees_at_x0), len(trees)


def export_forecast(models, path):
    """One graph, one input `features` [N, 12], outputs `soh_delta` [N,3],
    `rul_log1p` [N,3], `failure_probability` [N,1]. Every tree of the nine
    boosted ensembles (six quantile regressors, the raw scores of the three
    calibrated classifier folds) sits in one TreeEnsembleRegressor with nine
    targets; skl2onnx's export ran one operator per ensemble plus about forty
    for the calibration, and one row paid each operator's overhead."""
    soh_models, rul_models, classifier = models
    attrs = defaultdict(list)
    bases, trees = [], 0
    for target, m in enumerate(soh_models + rul_models):
        base, n = add_boosting(attrs, m, target, m.predict, trees)
        bases.append(base)
        trees += n
    neg_a, neg_b = [], []
    for fold, calibrated in enumerate(classifier.calibrated_classifiers_):
        [sigmoid] = calibrated.calibrators
        base, n = add_boosting(attrs, calibrated.estimator, 6 + fold, calibrated.estimator.decision_function, trees)
        bases.append(base)
        trees += n
        # scikit-learn's sigmoid calibration: p = 1 / (1 + exp(a f + b)).
        neg_a.append(-float(sigmoid.a_))
        neg_b.append(-float(sigmoid.b_))
    folds = len(neg_a)
    nodes = [
        helper.make_node("TreeEnsembleRegressor", ["features"], ["raw"], domain="ai.onnx.ml",
                         n_targets=6 + folds, aggregate_function="SUM", post_transform="NONE",
                         base_values=bases, **attrs),
        helper.make_node("Split", ["raw", "widths"], ["soh_delta", "rul_log1p", "fold_scores"], axis=1),
        helper.make_node("Mul", ["fold_scores", "neg_a"], ["scaled"]),
        helper.make_node("Add", ["scaled", "neg_b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["fold_probabilities"]),
        # The folds' mean, as CalibratedClassifierCV.predict_proba.
        helper.make_node("ReduceMean", ["fold_probabilities"], ["failure_probability"], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes, "trackingbms_forecast",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(F.FORECAST_FEATURES)])],
        [
            helper.make_tensor_value_info("soh_delta", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("rul_log1p", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("failure_probability", TensorProto.FLOAT, [None, 1]),
        ],
        [
            helper.make_tensor("widths", TensorProto.INT64, [3], [3, 3, folds]),
            helper.make_tensor("neg_a", TensorProto.FLOAT, [1, folds], neg_a),
            helper.make_tensor("neg_b", TensorProto.FLOAT, [1, folds], neg_b),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    model.producer_name = "trackingbms-train"
    onnx.checker.check_model(model)
    onnx.save(model, path)


# Target of the median remaining life (log1p days) in the forecast ensemble.
RUL_MEDIAN_TARGET = 3 + QUANTILES.index(0.5)


def derive_remaining_life(forecast_path, path):
    """The forecast model's median remaining life alone: the trees of that
    one target (a ninth of the ensemble), one output `rul_log1p_median`
    [N, 1]. The server runs it for the factor rows (each battery with one
    feature group set to its typical value), which need nothing else."""
    forecast = onnx.load(forecast_path)
    [ensemble] = [n for n in forecast.graph.node if n.op_type == "TreeEnsembleRegressor"]
    source = {a.name: helper.get_attribute_value(a) for a in ensemble.attribute}
    trees = {t for t, target in zip(source["target_treeids"], source["target_ids"]) if target == RUL_MEDIAN_TARGET}
    attrs = defaultdict(list)
    node_keys = [k for k in source if k.startswith("nodes_")]
    for i, tree in enumerate(source["nodes_treeids"]):
        if tree in trees:
            for k in node_keys:
                attrs[k].append(source[k][i])
    for i, tree in enumerate(source["target_treeids"]):
        if tree in trees:
            for k in ["target_treeids", "target_nodeids", "target_weights"]:
                attrs[k].append(source[k][i])
            attrs["target_ids"].append(0)
    attrs["nodes_modes"] = [m.decode() if isinstance(m, bytes) else m for m in attrs["nodes_modes"]]
    node = helper.make_node(
        "TreeEnsembleRegressor", ["features"], ["rul_log1p_median"], domain="ai.onnx.ml",
        n_targets=1, aggregate_function="SUM", post_transform="NONE",
        base_values=[source["base_values"][RUL_MEDIAN_TARGET]], **attrs,
    )
    graph = helper.make_graph(
        [node], "trackingbms_remaining_life",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(F.FORECAST_FEATURES)])],
        [helper.make_tensor_value_info("rul_log1p_median", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    model.producer_name = "trackingbms-train"
    onnx.checker.check_model(model)
    onnx.save(model, path)


def average_path_length(n):
    """c(n) of Liu et al.: the mean depth of an unsuccessful search in a BST."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def export_isolation_forest(forest, n_features, path):
    """skl2onnx's export spends ~27 nodes a tree; here every tree is one
    ensemble whose leaves hold depth + c(leaf size), summed over the trees,
    then score = 2^(-mean depth / c(max_samples)), i.e. -score_samples."""
    attrs = defaultdict(list)
    for t, est in enumerate(forest.estimators_):
        tree = est.tree_
        depth = np.zeros(tree.node_count)
        for node in range(tree.node_count):
            for child in (tree.children_left[node], tree.children_right[node]):
                if child != -1:
                    depth[child] = depth[node] + 1
        add_tree(attrs, t, tree, 0, depth + average_path_length(tree.n_node_samples))
    scale = 1.0 / (len(forest.estimators_) * float(average_path_length([forest.max_samples_])[0]))
    nodes = [
        helper.make_node("TreeEnsembleRegressor", ["features"], ["depth_sum"], domain="ai.onnx.ml",
                         n_targets=1, aggregate_function="SUM", post_transform="NONE", **attrs),
        helper.make_node("Mul", ["depth_sum", "neg_scale"], ["exponent"]),
        helper.make_node("Pow", ["two", "exponent"], ["anomaly_score"]),
    ]
    graph = helper.make_graph(
        nodes, "trackingbms_anomaly",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("neg_scale", TensorProto.FLOAT, [], [-scale]),
         helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    model.producer_name = "trackingbms-train"
    onnx.checker.check_model(model)
    onnx.save(model, path)


# ---------------------------------------------------------- evaluation ----


def linear_baseline(x, eol):
    """Persistence and straight-line extrapolation of the recent slope."""
    soh, slope = x[0], min(x[3], 0.0)
    linear_soh = soh + slope * HORIZON
    if soh < eol:
        linear_rul = 0.0
    elif slope < 0:
        linear_rul = min((soh - eol) / -slope, RUL_CAP_DAYS)
    else:
        linear_rul = RUL_CAP_DAYS
    return soh, linear_soh, linear_rul


def evaluate(models, rows, label):
    rows = [r for r in rows if r["x"][-1] == EOL_EVAL]
    soh, rul, fail = predict_forecast(models, [r["x"] for r in rows])
    m = {"label": label, "cells": len({r["cell"] for r in rows})}
    s = [(i, r) for i, r in enumerate(rows) if r["delta30"] is not None]
    truth = np.array([r["x"][0] + r["delta30"] for _, r in s])
    pred = np.array([r["x"][0] + soh[i, 1] for i, r in s])
    lo = np.array([r["x"][0] + soh[i, 0] for i, r in s])
    hi = np.array([r["x"][0] + soh[i, 2] for i, r in s])
    pers = np.array([linear_baseline(r["x"], EOL_EVAL)[0] for _, r in s])
    lin = np.array([linear_baseline(r["x"], EOL_EVAL)[1] for _, r in s])
    rmse = lambda a: float(np.sqrt(np.mean((a - truth) ** 2)) * 100.0)
    m["soh30"] = {
        "rows": len(s), "rmse_pp": rmse(pred), "persistence_rmse_pp": rmse(pers),
        "linear_rmse_pp": rmse(lin), "coverage_80": float(np.mean((truth >= lo) & (truth <= hi))),
    }
    u = [(i, r) for i, r in enumerate(rows) if r["rul"] is not None and r["x"][0] >= EOL_EVAL]
    t = np.array([r["rul"] for _, r in u])
    p = np.expm1([rul[i, 1] for i, _ in u])
    plo = np.expm1([rul[i, 0] for i, _ in u])
    phi = np.expm1([rul[i, 2] for i, _ in u])
    lin_r = np.array([linear_baseline(r["x"], EOL_EVAL)[2] for _, r in u])
    big = t >= HORIZON
    m["rul"] = {
        "rows": len(u), "mae_days": float(np.mean(np.abs(p - t))),
        "linear_mae_days": float(np.mean(np.abs(lin_r - t))),
        "mape_pct_rul_ge_30": float(np.mean(np.abs(p[big] - t[big]) / t[big]) * 100.0) if big.any() else None,
        "linear_mape_pct_rul_ge_30": float(np.mean(np.abs(lin_r[big] - t[big]) / t[big]) * 100.0) if big.any() else None,
        "coverage_80": float(np.mean((t >= plo) & (t <= phi))),
    }
    f = [(i, r) for i, r in enumerate(rows) if r["fail"] is not None]
    y = np.array([r["fail"] for _, r in f], dtype=float)
    pf = np.array([fail[i] for i, _ in f])
    lin_f = np.array([1.0 if linear_baseline(r["x"], EOL_EVAL)[2] <= HORIZON else 0.0 for _, r in f])
    m["failure30"] = {
        "rows": len(f), "positives": int(y.sum()), "brier": float(np.mean((pf - y) ** 2)),
        "linear_brier": float(np.mean((lin_f - y) ** 2)),
        "base_rate_brier": float(np.mean((y.mean() - y) ** 2)),
    }
    return m


def inject(points, kind, rng):
    """A copy of `points` whose last days carry one kind of fault."""
    pts = [F.DayPoint(p.day, p.soh, p.temp_avg, p.temp_max) for p in points]
    tail = pts[-4:]
    if kind == "sensor_drift":  # the SOH estimate creeps upwards, a bias growing every day
        for k, p in enumerate(tail):
            p.soh += 0.01 * (k + 1)
    elif kind == "stuck_values":  # the BMS repeats its last reading
        for p in pts[-F.ANOMALY_POINTS :]:
            p.soh = pts[-F.ANOMALY_POINTS].soh
            p.temp_avg = pts[-F.ANOMALY_POINTS].temp_avg
            p.temp_max = pts[-F.ANOMALY_POINTS].temp_max
    elif kind == "internal_short":  # self-discharge: capacity falls several points within days
        for k, p in enumerate(tail):
            p.soh -= 0.015 * (k + 1)
    elif kind == "thermal":  # a hot spot
        t = pts[-1].temp_avg if pts[-1].temp_avg is not None else 25.0
        pts[-1].temp_avg = t + rng.uniform(12.0, 20.0)
        pts[-1].temp_max = pts[-1].temp_avg + 2.0
    return pts


FAULTS = ["sensor_drift", "stuck_values", "internal_short", "thermal"]


def anomaly_eval(forest, cells, test_ids, rng):
    clean, faulty = [], defaultdict(list)
    for cid in test_ids:
        points = daily_points(cells[cid][1])
        for end in range(F.ANOMALY_POINTS + 2, len(points), max(1, len(points) // 12)):
            hist = points[:end]
            a = F.anomaly_features(hist)
            if a is None:  # too few points in the window (sparse checkups)
                continue
            clean.append(a)
            for kind in FAULTS:
                if kind == "thermal" and hist[-1].temp_avg is None:
                    continue  # no temperature sensor, nothing to see
                faulty[kind].append(F.anomaly_features(inject(hist, kind, rng)))
    score = lambda xs: -forest.score_samples(np.array(xs, dtype=np.float32))
    s_clean = score(clean)
    out = {"clean_windows": len(clean)}
    for kind in FAULTS:
        s_f = score(faulty[kind])
        y = np.r_[np.zeros(len(s_clean)), np.ones(len(s_f))]
        out[kind] = float(roc_auc_score(y, np.r_[s_clean, s_f]))
    return out


# ---------------------------------------------------------------- main ----


def split(cells):
    """Cells, not rows: 25 % of each source held out for testing."""
    rng = random.Random(SEED)
    test = []
    by_source = defaultdict(list)
    for cid, (src, _) in sorted(cells.items()):
        by_source[src].append(cid)
    for src, ids in sorted(by_source.items()):
        rng.shuffle(ids)
        test += ids[: max(1, len(ids) // 4)]
    return sorted(set(cells) - set(test)), sorted(test)


def check_onnx(path, xs, expected, names):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(names, {"features": np.asarray(xs, dtype=np.float32)})
    worst = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))
    if worst > 1e-5:
        sys.exit(f"{os.path.basename(path)}: ONNX differs from scikit-learn by {worst}")
    return worst, got


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(FIXTURES, exist_ok=True)
    rng = random.Random(SEED)
    log(f"loading {DATA}")
    cells = load_cells()
    train_ids, test_ids = split(cells)
    log(f"{len(cells)} cells: {len(train_ids)} for training, {len(test_ids)} held out")
    rows = {cid: rows_for_cell(cid, cells[cid][0], cells[cid][1], EOL_TRAIN) for cid in cells}
    train_rows = [r for cid in train_ids for r in rows[cid]]
    test_rows = [r for cid in test_ids for r in rows[cid]]
    log(f"{len(train_rows)} training rows, {len(test_rows)} test rows")

    log("out-of-distribution run: training without the ISEA cells, testing on them")
    ood_train = [r for r in train_rows if r["source"] != "isea_sanyo"]
    ood_test = [r for cid in cells if cells[cid][0] == "isea_sanyo" for r in rows[cid]]
    ood = evaluate(fit_forecast(ood_train), ood_test, "trained without ISEA, tested on all ISEA cells")

    log("training the forecast models")
    models = fit_forecast(train_rows)
    metrics = evaluate(models, test_rows, "held-out cells (25 % of each source)")
    for source in ["nasa_pcoe", "isea_sanyo", "inl_pouch"]:
        metrics[source] = evaluate(models, [r for r in test_rows if r["source"] == source], source)
    log(json.dumps(metrics["soh30"]) + " " + json.dumps(metrics["rul"]) + " " + json.dumps(metrics["failure30"]))

    log("training the anomaly model (isolation forest on clean training windows)")
    anomaly_x = np.array([r["anomaly"] for r in train_rows if r["anomaly"] is not None], dtype=np.float32)
    forest = IsolationForest(n_estimators=100, max_samples=256, max_features=1.0, random_state=SEED).fit(anomaly_x)
    anomaly_metrics = anomaly_eval(forest, cells, test_ids, rng)
    log(f"anomaly AUROC: {anomaly_metrics}")

    forecast_path = os.path.join(OUT, "forecast.onnx")
    anomaly_path = os.path.join(OUT, "anomaly.onnx")
    export_forecast(models, forecast_path)
    export_isolation_forest(forest, len(F.ANOMALY_FEATURES), anomaly_path)
    sample_x = [r["x"] for r in test_rows[:: max(1, len(test_rows) // 2000)]]
    soh, rul, fail = predict_forecast(models, sample_x)
    worst_f, _ = check_onnx(forecast_path, sample_x, [soh, rul, fail[:, None]], ["soh_delta", "rul_log1p", "failure_probability"])
    remaining_life_path = os.path.join(OUT, "remaining_life.onnx")
    derive_remaining_life(forecast_path, remaining_life_path)
    worst_r, _ = check_onnx(remaining_life_path, sample_x, [rul[:, 1:2]], ["rul_log1p_median"])
    worst_f = max(worst_f, worst_r)
    ax = anomaly_x[:2000]
    worst_a, _ = check_onnx(anomaly_path, ax, [-forest.score_samples(ax)[:, None]], ["anomaly_score"])
    log(f"ONNX matches scikit-learn: forecast within {worst_f:.2e}, anomaly within {worst_a:.2e}")

    all_x = np.array([r["x"] for r in train_rows], dtype=np.float64)
    reference = [float(v) for v in np.median(all_x, axis=0)]
    manifest = {
        "version": "builtin-" + time.strftime("%Y%m%d"),
        "forecast_features": F.FORECAST_FEATURES,
        "anomaly_features": F.ANOMALY_FEATURES,
        "reference_values": reference,
        "days_per_efc": DAYS_PER_EFC,
        "horizon_days": HORIZON,
        "quantiles": QUANTILES,
        "train_cells": train_ids,
        "test_cells": test_ids,
        "metrics": {"test": metrics, "out_of_distribution": ood, "anomaly_auroc": anomaly_metrics},
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    write_fixtures(cells, test_ids, models, forest)
    write_card(manifest, len(train_rows), len(test_rows))
    log("done")


def write_fixtures(cells, test_ids, models, forest):
    """Histories (as the samples the server receives) with their expected
    features and model outputs; `api/tests/predictions.rs` replays them."""
    picks = []
    for source in ["nasa_pcoe", "isea_sanyo", "inl_pouch"]:
        cid = next(c for c in test_ids if cells[c][0] == source)
        samples = cells[cid][1]
        picks.append((cid, samples[: max(5, len(samples) * 2 // 3)]))
    picks.append(("too_short", cells[test_ids[0]][1][:2]))
    out = []
    for cid, samples in picks:
        points = daily_points(samples)
        x = F.forecast_features(points, latest_efc(samples, points[-1].day), EOL_EVAL)
        a = F.anomaly_features(points)
        entry = {
            "cell": cid,
            "end_of_life": EOL_EVAL,
            "samples": [{"ts": s[0], "sohPct": s[1], "tempAvgC": s[2], "tempMaxC": s[3], "cycleCount": int(math.floor(s[4]))} for s in samples],
            "forecast_features": x,
            "anomaly_features": a,
        }
        if x is not None:
            soh, rul, fail = predict_forecast(models, [x])
            entry["soh_delta"] = [float(v) for v in soh[0]]
            entry["rul_log1p"] = [float(v) for v in rul[0]]
            entry["failure_probability"] = float(fail[0])
        if a is not None:
            entry["anomaly_score"] = float(-forest.score_samples(np.array([a], dtype=np.float32))[0])
        out.append(entry)
    with open(os.path.join(FIXTURES, "parity.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def write_card(manifest, n_train, n_test):
    from model_card import render

    with open(os.path.join(MODELS, "MODEL_CARD.md"), "w") as f:
        f.write(render(manifest, n_train, n_test))


if __name__ == "__main__":
    main()
