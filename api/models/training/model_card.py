"""Renders MODEL_CARD.md from the manifest `train.py` writes."""


def fmt(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def metrics_table(rows):
    lines = [
        "| evaluation | cells | SOH+30 d RMSE (pp) | persistence | linear | 80 % band coverage | RUL MAE (days) | linear | RUL MAPE (true RUL ≥ 30 d) | linear | RUL band coverage | Brier 30 d | linear | base rate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        s, r, f = m["soh30"], m["rul"], m["failure30"]
        mape = fmt(r["mape_pct_rul_ge_30"], 1)
        lmape = fmt(r["linear_mape_pct_rul_ge_30"], 1)
        lines.append(
            f"| {m['label']} | {m['cells']} | **{fmt(s['rmse_pp'])}** | {fmt(s['persistence_rmse_pp'])} | {fmt(s['linear_rmse_pp'])} | "
            f"{fmt(s['coverage_80'] * 100, 0)} % | **{fmt(r['mae_days'], 1)}** | {fmt(r['linear_mae_days'], 1)} | "
            f"{mape} % | {lmape} % | {fmt(r['coverage_80'] * 100, 0)} % | **{fmt(f['brier'], 3)}** | "
            f"{fmt(f['linear_brier'], 3)} | {fmt(f['base_rate_brier'], 3)} |"
        )
    return "\n".join(lines)


def render(manifest, n_train, n_test):
    m = manifest["metrics"]
    t = m["test"]
    a = m["anomaly_auroc"]
    feats = ", ".join(f"`{f}`" for f in manifest["forecast_features"])
    afeats = ", ".join(f"`{f}`" for f in manifest["anomaly_features"])
    return f"""# Model card: TrackingBMS battery predictions

Version `{manifest['version']}`. Written by `scripts/train-models.sh`
(`api/models/training/train.py`); every figure below comes from that run, on
cells the models never saw. Do not edit by hand: retrain.

## What the models predict
For one battery, from its stored history (the DAY roll-ups and the latest
cycle count), anchored at its newest sample:
- **SOH in {manifest['horizon_days']} days**: the 0.1, 0.5 and 0.9 quantiles of the change
  (gradient boosting, quantile loss), added to the current SOH → `sohIn30Days {{ value low high }}`.
- **Remaining useful life** to the end-of-life SOH (80 % by default, per chemistry
  in `predictions.end_of_life_pct`): quantiles of `log1p(days)` → `rulDays {{ value low high }}`.
  The end of life is an input feature; training saw 70, 75, 80 and 85 %.
- **Failure probability within {manifest['horizon_days']} days** (SOH below end of life): gradient
  boosting classifier, Platt-calibrated on cell-grouped folds.
- **Anomaly score** in [0, 1] (isolation forest over the last 8 daily points;
  ≥ 0.6 is unusual): the mean isolation depth mapped as in Liu et al., i.e.
  scikit-learn's `-score_samples`.
- **Risk level**: HIGH when the RUL median < 30 days, MEDIUM < 90, else LOW
  (thresholds in `predictions.risk_*`).
- Fewer than 3 daily SOH points or less than 14 days of history: `status:
  INSUFFICIENT_DATA`, no numbers.

## Data
`api/models/data/battery-aging/` (copied with its README: sources, citations,
licences and caveats): real laboratory aging of 100 cells — NASA PCoE 18650s,
ISEA Sanyo/Panasonic NMC 18650s, INL NMC pouch cells. Left out: NASA B0038–44
(mixed loads) and B0049–52 (crashed tests), and rows flagged
`zero_or_nan_capacity`, `low_outlier` or `high_outlier`. Regeneration jumps
are kept: they are real.

**Lab time to field time**: one equivalent full cycle (EFC) = {manifest['days_per_efc']:g} day.
A cell is replayed as samples at `2020-01-01 + EFC days` with `sohPct` = measured
SOH, `cycleCount` = EFC, `tempAvgC` = the cell's mean temperature (else the
ambient; INL has none). A fleet that cycles less than once a day ages more
slowly per day than these models assume, and calendar aging is not in the data.

## Features
Forecast ({len(manifest['forecast_features'])}): {feats}. Anomaly ({len(manifest['anomaly_features'])}): {afeats}.
Defined once in `training/features.py` and once in `api/src/predict/features.rs`;
`api/tests/predictions.rs` ingests the fixture histories into the server and
requires the same vectors (1e-9) and the same model outputs (1e-5). Depth of
discharge and C-rate are not features: the lab data does not carry them per day.

## Split
By cell, never by row: 25 % of each source's cells are held out
({len(manifest['test_cells'])} cells: {', '.join(manifest['test_cells'])}). Training rows: {n_train}
(one per cut day and end-of-life threshold), test rows: {n_test}. Out of
distribution: a second training without any ISEA cell, tested on all ISEA cells.

## Results (end of life 80 %)
{metrics_table([t, t['nasa_pcoe'], t['isea_sanyo'], t['inl_pouch'], m['out_of_distribution']])}

Baselines: *persistence* keeps today's SOH; *linear* extrapolates the slope of
the window (RUL where the line meets the end of life; failure = that RUL ≤ 30 d).
RUL figures are on cells that do reach the end of life (others are censored
and left out); MAPE excludes true RUL below 30 days, where it explodes.

### Anomaly AUROC on injected faults (held-out cells, {a['clean_windows']} clean windows)
| fault | AUROC |
|---|---|
| sensor drift (SOH reading +1 pp a day over 4 days) | {fmt(a['sensor_drift'], 3)} |
| stuck values (8 identical days) | {fmt(a['stuck_values'], 3)} |
| internal short / self-discharge (−1.5 pp a day over 4 days) | {fmt(a['internal_short'], 3)} |
| thermal anomaly (+12 to +20 °C on the last day) | {fmt(a['thermal'], 3)} |

## End-to-end check
`trackingbms replay-cells api/models/data/battery-aging/cells.csv --cells
<held-out>` replays held-out cells into a running server, cuts each at several
days, asks GraphQL for `prediction` and compares with what the cell did next
(see the README, "Predictions"). Its figures are printed by the command.

## Limits
- Lab cells under constant protocols, not field packs; 100 cells in all, only
  part of them reach 80 %. INL cells carry no temperature.
- RUL beyond the data's horizon is extrapolated by trees: they cannot predict
  further than the longest life they saw (capped at 10 years).
- Retrain when the fleet's own history is long enough; upload the result with
  `uploadPredictionModel` and compare before activating.
"""
