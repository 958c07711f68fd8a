//! `trackingbms replay-cells FILE.csv`: the models judged the way a user
//! meets them. Each lab cell of a `cells.csv` (schema of
//! `api/models/data/battery-aging/`) becomes a battery; its history is
//! ingested through GraphQL as daily samples (one equivalent full cycle per
//! day, `sohPct` = measured SOH, `cycleCount` = EFC, `tempAvgC` = the cell's
//! mean or ambient temperature), cut at several days; at each cut GraphQL's
//! `prediction` is compared with what the cell did next.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use async_graphql::{Request, Variables};
use serde::Deserialize;
use serde_json::{Value, json};

use super::features::{self, DayPoint};
use crate::App;

/// First sample of a replayed cell: 2020-01-01T00:00:00Z.
pub const REPLAY_START: i64 = 1_577_836_800;
/// Rows the training also leaves out (`train.py`, `DROPPED_FLAGS`).
const DROPPED_FLAGS: [&str; 4] = [
    "zero_or_nan_capacity",
    "low_outlier",
    "high_outlier",
    "low_outlier;jump_up",
];
const HORIZON: i64 = 30;

#[derive(Debug, Deserialize)]
struct Row {
    cell_id: String,
    efc: Option<f64>,
    soh: Option<f64>,
    ambient_temp_c: Option<f64>,
    temp_mean_c: Option<f64>,
    temp_max_c: Option<f64>,
    #[serde(default)]
    flag: String,
}

/// One sample as `ingestSamples` takes it.
#[derive(Debug, Clone)]
pub struct CellSample {
    pub ts: i64,
    pub soh_pct: f64,
    pub temp_avg: Option<f64>,
    pub temp_max: Option<f64>,
    pub cycle_count: i64,
}

/// Reads the cells' samples exactly as `train.py` builds them.
pub fn read_cells(
    path: &Path,
    days_per_efc: f64,
) -> anyhow::Result<BTreeMap<String, Vec<CellSample>>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut cells: BTreeMap<String, Vec<CellSample>> = BTreeMap::new();
    let mut seen: std::collections::HashSet<(String, i64)> = Default::default();
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        let row = row.with_context(|| format!("{} line {}", path.display(), i + 2))?;
        let (Some(efc), Some(soh)) = (row.efc, row.soh) else {
            continue;
        };
        if DROPPED_FLAGS.contains(&row.flag.as_str()) || !(soh > 0.0 && soh <= 1.2) {
            continue;
        }
        let ts = REPLAY_START + (efc * days_per_efc * 86_400.0).round() as i64;
        if !seen.insert((row.cell_id.clone(), ts)) {
            continue; // the server keeps the first sample of a timestamp
        }
        cells.entry(row.cell_id).or_default().push(CellSample {
            ts,
            soh_pct: (soh * 100.0 * 1e4).round() / 1e4,
            temp_avg: row.temp_mean_c.or(row.ambient_temp_c),
            temp_max: row.temp_max_c,
            cycle_count: efc.floor() as i64,
        });
    }
    for samples in cells.values_mut() {
        samples.sort_by_key(|s| s.ts);
    }
    Ok(cells)
}

/// The DAY roll-up of `samples`, as the features read it.
pub fn daily_points(samples: &[CellSample]) -> Vec<DayPoint> {
    let mut days: BTreeMap<i64, Vec<&CellSample>> = BTreeMap::new();
    for s in samples {
        days.entry(s.ts.div_euclid(86_400)).or_default().push(s);
    }
    days.into_iter()
        .map(|(day, rows)| {
            let temps: Vec<f64> = rows.iter().filter_map(|r| r.temp_avg).collect();
            let hottest = rows
                .iter()
                .filter_map(|r| r.temp_max.or(r.temp_avg))
                .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
            DayPoint {
                day,
                soh: rows.iter().map(|r| r.soh_pct).sum::<f64>() / rows.len() as f64 / 100.0,
                temp_avg: (!temps.is_empty())
                    .then(|| temps.iter().sum::<f64>() / temps.len() as f64),
                temp_max: hottest,
            }
        })
        .collect()
}

async fn gql(app: &App, query: &str, vars: Value) -> anyhow::Result<Value> {
    let who = app.system("replay-cells");
    let response = app
        .schema
        .execute(
            Request::new(query)
                .variables(Variables::from_json(vars))
                .data(who),
        )
        .await;
    if let Some(err) = response.errors.first() {
        bail!("GraphQL: {}", err.message);
    }
    Ok(response.data.into_json()?)
}

/// Creates the client, site, zone and BMS the replayed batteries hang under.
async fn create_parents(app: &App) -> anyhow::Result<String> {
    let client = gql(
        app,
        "mutation($n:String!){createClient(input:{name:$n}){id}}",
        json!({"n": format!("Replay {}", crate::clock::now().timestamp())}),
    )
    .await?;
    let site = gql(
        app,
        "mutation($c:ID!){createSite(input:{clientId:$c,name:\"Lab\"}){id}}",
        json!({"c": client["createClient"]["id"]}),
    )
    .await?;
    let zone = gql(
        app,
        "mutation($s:ID!){createZone(input:{siteId:$s,name:\"Cells\"}){id}}",
        json!({"s": site["createSite"]["id"]}),
    )
    .await?;
    let bms = gql(
        app,
        "mutation($z:ID!){createBms(input:{zoneId:$z,name:\"Cycler\"}){id}}",
        json!({"z": zone["createZone"]["id"]}),
    )
    .await?;
    Ok(bms["createBms"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

async fn ingest(app: &App, battery: &str, samples: &[CellSample]) -> anyhow::Result<()> {
    for chunk in samples.chunks(5_000) {
        let rows: Vec<Value> = chunk
            .iter()
            .map(|s| {
                json!({
                    "battery": battery,
                    "ts": chrono::DateTime::from_timestamp(s.ts, 0).map(|t| t.to_rfc3339()),
                    "sohPct": s.soh_pct, "tempAvgC": s.temp_avg, "tempMaxC": s.temp_max,
                    "cycleCount": s.cycle_count,
                })
            })
            .collect();
        let r = gql(app, "mutation($s:[SampleInput!]!){ingestSamples(samples:$s){accepted rejected{index code message}}}", json!({"s": rows})).await?;
        if let Some(first) = r["ingestSamples"]["rejected"]
            .as_array()
            .and_then(|a| a.first())
        {
            bail!("a sample was rejected: {first}");
        }
    }
    Ok(())
}

/// One comparison of a prediction with what followed.
#[derive(Debug, Default, Clone)]
struct Outcome {
    soh_err: Option<(f64, f64, f64, bool)>, // model, persistence, linear (pp), inside band
    rul_err: Option<(f64, f64, bool)>,      // model, linear (days), inside band
    brier: Option<(f64, f64)>,              // model, linear
}

fn soh_at(points: &[DayPoint], day: i64) -> Option<f64> {
    points.windows(2).find_map(|w| {
        (w[0].day <= day && day <= w[1].day).then(|| {
            let t = (day - w[0].day) as f64 / (w[1].day - w[0].day) as f64;
            w[0].soh + t * (w[1].soh - w[0].soh)
        })
    })
}

/// First day at or after `after` whose 3-day median SOH is below `eol`.
fn crossing(points: &[DayPoint], after: i64, eol: f64) -> Option<i64> {
    (0..points.len()).find_map(|i| {
        let lo = i.saturating_sub(1);
        let hi = (i + 2).min(points.len());
        let mut w: Vec<f64> = points[lo..hi].iter().map(|p| p.soh).collect();
        w.sort_by(f64::total_cmp);
        (points[i].day >= after && w[w.len() / 2] < eol).then_some(points[i].day)
    })
}

/// Compares a prediction made from `seen` (anchored at its newest day, as
/// the server anchors it) with the cell's whole history `all`.
fn judge(prediction: &Value, all: &[DayPoint], seen: &[DayPoint], eol: f64) -> Outcome {
    let mut o = Outcome::default();
    let (Some(x), Some(newest)) = (features::forecast(seen, None, eol), seen.last()) else {
        return o;
    };
    let cut = newest.day;
    let (soh_now, slope) = (x[0], x[3].min(0.0));
    let f = |v: &Value| v.as_f64();
    let band = |k: &str| {
        let b = &prediction[k];
        Some((f(&b["value"])?, f(&b["low"])?, f(&b["high"])?))
    };
    if let (Some(truth), Some((v, lo, hi))) = (soh_at(all, cut + HORIZON), band("sohIn30Days")) {
        let t = truth * 100.0;
        o.soh_err = Some((
            v - t,
            soh_now * 100.0 - t,
            (soh_now + slope * HORIZON as f64) * 100.0 - t,
            lo <= t && t <= hi,
        ));
    }
    let linear_rul = if slope < 0.0 {
        ((soh_now - eol) / -slope).min(3650.0)
    } else {
        3650.0
    };
    let cross = crossing(all, cut, eol);
    if let (Some(day), Some((v, lo, hi))) = (cross, band("rulDays"))
        && soh_now >= eol
    {
        let t = (day - cut) as f64;
        o.rul_err = Some((v - t, linear_rul - t, lo <= t && t <= hi));
    }
    let last = all.last().map_or(cut, |p| p.day);
    let failed = match cross {
        Some(day) => Some(day - cut <= HORIZON),
        None if last >= cut + HORIZON => Some(false),
        None => None,
    };
    if let (Some(failed), Some(p)) = (failed, f(&prediction["failureProbability30d"])) {
        let y = if failed { 1.0 } else { 0.0 };
        let lin = if linear_rul <= HORIZON as f64 {
            1.0
        } else {
            0.0
        };
        o.brier = Some(((p - y).powi(2), (lin - y).powi(2)));
    }
    o
}

/// Replays `cells` (all of the file when empty), cutting every
/// `cut_every_days`; prints one line per cell and the totals.
pub async fn run(
    app: &App,
    file: &Path,
    cells: &[String],
    cut_every_days: i64,
) -> anyhow::Result<()> {
    let all = read_cells(file, 1.0)?;
    let chosen: Vec<&String> = if cells.is_empty() {
        all.keys().collect()
    } else {
        cells.iter().collect()
    };
    let bms = create_parents(app).await?;
    let eol = app.config.predictions.default_end_of_life_pct / 100.0;
    let mut outcomes = Vec::new();
    println!(
        "cell                    cuts  SOH+30d RMSE pp (persistence, linear)  RUL MAE days (linear)"
    );
    for cell in chosen {
        let samples = all
            .get(cell)
            .with_context(|| format!("no cell '{cell}' in the file"))?;
        let serial = format!("replay-{}", cell.replace('_', "-").to_lowercase());
        let created = gql(app, "mutation($b:ID!,$s:String!){createBattery(input:{bmsId:$b,serial:$s,chemistry:NMC,nominalCapacityAh:2,nominalVoltageV:3.7,installDate:\"2020-01-01\"}){id}}", json!({"b": bms, "s": serial})).await?;
        let battery = created["createBattery"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let id = crate::ids::decode(crate::ids::Kind::Battery, &battery)?;
        let points = daily_points(samples);
        let (first, last) = match (points.first(), points.last()) {
            (Some(f), Some(l)) => (f.day, l.day),
            _ => continue,
        };
        let mut sent = 0;
        let mut mine = Vec::new();
        let mut cut = first + 30;
        while cut <= last - HORIZON {
            let upto = samples.partition_point(|s| s.ts.div_euclid(86_400) <= cut);
            ingest(app, &battery, &samples[sent..upto]).await?;
            sent = upto;
            app.predictor.refresh(&[id]).await?;
            let r = gql(app, "query($id:ID!){node(id:$id){... on Battery{prediction{status sohIn30Days{value low high} rulDays{value low high} failureProbability30d}}}}", json!({"id": battery})).await?;
            let prediction = &r["node"]["prediction"];
            let seen: Vec<DayPoint> = points.iter().filter(|p| p.day <= cut).copied().collect();
            if prediction["status"] == "OK" {
                mine.push(judge(prediction, &points, &seen, eol));
            }
            cut += cut_every_days.max(1);
        }
        let s = summarize(&mine);
        println!("{cell:<22} {:>5}  {}  {}", mine.len(), s.0, s.1);
        outcomes.extend(mine);
    }
    let s = summarize(&outcomes);
    println!("{:<22} {:>5}  {}  {}", "ALL", outcomes.len(), s.0, s.1);
    println!("{}", s.2);
    Ok(())
}

fn rms(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn summarize(o: &[Outcome]) -> (String, String, String) {
    let soh: Vec<_> = o.iter().filter_map(|x| x.soh_err).collect();
    let rul: Vec<_> = o.iter().filter_map(|x| x.rul_err).collect();
    let brier: Vec<_> = o.iter().filter_map(|x| x.brier).collect();
    let soh_line = if soh.is_empty() {
        format!("{:<37}", "–")
    } else {
        format!(
            "{:<37}",
            format!(
                "{:.2} ({:.2}, {:.2})",
                rms(soh.iter().map(|s| s.0)),
                rms(soh.iter().map(|s| s.1)),
                rms(soh.iter().map(|s| s.2))
            )
        )
    };
    let rul_line = if rul.is_empty() {
        "–".into()
    } else {
        format!(
            "{:.1} ({:.1})",
            mean(rul.iter().map(|r| r.0.abs())),
            mean(rul.iter().map(|r| r.1.abs()))
        )
    };
    let totals = format!(
        "SOH band coverage {:.0} % of {}; RUL band coverage {:.0} % of {}; Brier 30 d {:.3} (linear {:.3}) over {}",
        100.0 * mean(soh.iter().map(|s| f64::from(u8::from(s.3)))),
        soh.len(),
        100.0 * mean(rul.iter().map(|r| f64::from(u8::from(r.2)))),
        rul.len(),
        mean(brier.iter().map(|b| b.0)),
        mean(brier.iter().map(|b| b.1)),
        brier.len()
    );
    (soh_line, rul_line, totals)
}
