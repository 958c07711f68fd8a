//! A report plugin for TrackingBMS, in Rust: the battery health report of a
//! scope over a period (typically a month) from daily roll-ups — per
//! battery, first and last SOH, its change, mean temperature and mean SOC —
//! as an HTML page, with the same table for the host's CSV/XLSX/PDF export.

wit_bindgen::generate!({ world: "report", path: "../../wit" });

use trackingbms::plugin::host::{Level, log};
use trackingbms::plugin::types::{Needs, Resolution, Table};

struct Plugin;

fn finite(values: &[f64]) -> impl Iterator<Item = f64> + '_ {
    values.iter().copied().filter(|v| v.is_finite())
}

fn mean(values: &[f64]) -> Option<f64> {
    let (sum, n) = finite(values).fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Guest for Plugin {
    fn describe() -> ReportPluginInfo {
        ReportPluginInfo {
            name: "health-report".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Battery health over the period: SOH change, mean temperature and SOC per battery".into(),
            needs: Needs {
                resolution: Resolution::Day,
                max_days: 366,
            },
        }
    }

    fn render(input: Input) -> Result<Document, String> {
        let columns = ["serial", "chemistry", "soh_first_pct", "soh_last_pct", "soh_change_pp", "temp_mean_c", "soc_mean_pct", "days"];
        let mut rows = Vec::new();
        for s in &input.series {
            let b = input
                .batteries
                .get(s.battery as usize)
                .ok_or_else(|| format!("series names battery {} of {}", s.battery, input.batteries.len()))?;
            let first = finite(&s.soh_pct).next();
            let last = finite(&s.soh_pct).last();
            let change = first.zip(last).map(|(f, l)| l - f);
            rows.push(vec![
                b.serial.clone(),
                b.chemistry.clone(),
                fmt(first),
                fmt(last),
                fmt(change),
                fmt(mean(&s.temp_avg_c)),
                fmt(mean(&s.soc_pct)),
                s.ts.len().to_string(),
            ]);
        }
        rows.sort();
        log(Level::Info, &format!("{} batteries", rows.len()));
        let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>Battery health report</title></head><body>");
        html.push_str(&format!(
            "<h1>Battery health report</h1><p>Scope {} · {} batteries</p><table><thead><tr>",
            escape(&input.scope),
            rows.len()
        ));
        for c in columns {
            html.push_str(&format!("<th>{c}</th>"));
        }
        html.push_str("</tr></thead><tbody>");
        for r in &rows {
            html.push_str("<tr>");
            for cell in r {
                html.push_str(&format!("<td>{}</td>", escape(cell)));
            }
            html.push_str("</tr>");
        }
        html.push_str("</tbody></table></body></html>");
        Ok(Document {
            content_type: "text/html".into(),
            file_name: "battery-health.html".into(),
            bytes: html.into_bytes(),
            table: Some(Table {
                title: "Battery health".into(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
                rows,
            }),
        })
    }
}

export!(Plugin);
