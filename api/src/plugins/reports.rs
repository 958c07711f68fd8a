//! Report generation: runs a report plugin over a scope and period, turns
//! its document into the requested format (its own, or CSV / XLSX / PDF
//! from its table), and keeps the result for download through an unguessable link
//! that expires (`GET /reports/<token>`, no header needed, so a browser or
//! an e-mail can follow it).

use chrono::{Duration, Utc};
use entities::report_artifact;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use super::bindings::{Document, Table};
use super::sandbox::RunError;
use crate::auth::secret::{random_token, sha256_hex};
use crate::error::{ApiError, ApiResult};

/// How long a download link works.
pub const LINK_TTL_HOURS: i64 = 24;

/// The format a report is delivered in.
#[derive(async_graphql::Enum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReportFormat {
    /// What the plugin produced (HTML, CSV, JSON or Markdown).
    #[default]
    Document,
    /// The plugin's table as CSV.
    Csv,
    /// The plugin's table as an Excel workbook.
    Xlsx,
    /// The plugin's table as a PDF document.
    Pdf,
}

impl ReportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Document => "DOCUMENT",
            Self::Csv => "CSV",
            Self::Xlsx => "XLSX",
            Self::Pdf => "PDF",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Document, Self::Csv, Self::Xlsx, Self::Pdf]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// `(content type, file name, bytes)` of the report in `format`.
pub fn convert(doc: Document, format: ReportFormat) -> Result<(String, String, Vec<u8>), RunError> {
    let stem = doc
        .file_name
        .rsplit_once('.')
        .map_or(doc.file_name.clone(), |(s, _)| s.to_owned());
    let table = |doc: Document| {
        doc.table.ok_or_else(|| {
            RunError::Plugin("this plugin returns no table: ask for format DOCUMENT".into())
        })
    };
    match format {
        ReportFormat::Document => Ok((doc.content_type, doc.file_name, doc.bytes)),
        ReportFormat::Csv => {
            let t = table(doc)?;
            Ok((
                "text/csv; charset=utf-8".into(),
                format!("{stem}.csv"),
                csv_of(&t),
            ))
        }
        ReportFormat::Xlsx => {
            let t = table(doc)?;
            let bytes = xlsx_of(&t)
                .map_err(|e| RunError::Plugin(format!("cannot build the workbook: {e}")))?;
            Ok((
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".into(),
                format!("{stem}.xlsx"),
                bytes,
            ))
        }
        ReportFormat::Pdf => {
            let t = table(doc)?;
            Ok((
                "application/pdf".into(),
                format!("{stem}.pdf"),
                super::pdf::render(&t),
            ))
        }
    }
}

fn csv_of(t: &Table) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(&t.columns);
    for row in &t.rows {
        let _ = w.write_record(row);
    }
    w.into_inner().unwrap_or_default()
}

fn xlsx_of(t: &Table) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    let name: String = t
        .title
        .chars()
        .filter(|c| !"[]:*?/\\".contains(*c))
        .take(31)
        .collect();
    if !name.is_empty() {
        sheet.set_name(name)?;
    }
    let bold = Format::new().set_bold();
    for (c, title) in t.columns.iter().enumerate() {
        sheet.write_string_with_format(0, c as u16, title, &bold)?;
    }
    for (r, row) in t.rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let (r, c) = (r as u32 + 1, c as u16);
            match cell.parse::<f64>() {
                Ok(n) if n.is_finite() => sheet.write_number(r, c, n)?,
                _ => sheet.write_string(r, c, cell)?,
            };
        }
    }
    book.save_to_buffer()
}

/// How long a stored report is kept.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// Generated on request: kept as long as its link works.
    Link,
    /// Produced by a schedule: kept `days`; links are issued on request.
    Schedule { id: i64, days: u32 },
}

/// Stores a report and returns its download token.
pub async fn store(
    db: &sea_orm::DatabaseConnection,
    who: &crate::auth::Principal,
    plugin_id: i64,
    scope: String,
    (content_type, file_name, bytes): (String, String, Vec<u8>),
    keep: Keep,
) -> ApiResult<(report_artifact::Model, String)> {
    let token = random_token("");
    let now = crate::clock::now();
    let (schedule_id, expires_at) = match keep {
        Keep::Link => (None, now + Duration::hours(LINK_TTL_HOURS)),
        Keep::Schedule { id, days } => (Some(id), now + Duration::days(i64::from(days))),
    };
    let row = report_artifact::ActiveModel {
        tenant_id: Set(who.tenant_id),
        plugin_id: Set(plugin_id),
        token_hash: Set(sha256_hex(&token)),
        content_type: Set(content_type),
        file_name: Set(file_name),
        content: Set(bytes),
        scope: Set(scope),
        created_by: Set(who.actor.clone()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        schedule_id: Set(schedule_id),
        ..Default::default()
    }
    .insert(db)
    .await?;
    // Expired reports are swept on the way.
    report_artifact::Entity::delete_many()
        .filter(report_artifact::Column::ExpiresAt.lt(Utc::now()))
        .exec(db)
        .await?;
    Ok((row, token))
}

/// A new download link for a kept report (earlier links stop working); it
/// works until the report expires.
pub async fn new_link(
    db: &sea_orm::DatabaseConnection,
    row: report_artifact::Model,
) -> ApiResult<(report_artifact::Model, String)> {
    let token = random_token("");
    let mut active: report_artifact::ActiveModel = row.into();
    active.token_hash = Set(sha256_hex(&token));
    Ok((active.update(db).await?, token))
}

/// `GET /reports/<token>`: the report, while its link is valid.
#[poem::handler]
pub async fn download(
    poem::web::Path(token): poem::web::Path<String>,
    poem::web::Data(app): poem::web::Data<&crate::App>,
) -> poem::Response {
    let found = report_artifact::Entity::find()
        .filter(report_artifact::Column::TokenHash.eq(sha256_hex(&token)))
        .filter(report_artifact::Column::ExpiresAt.gt(Utc::now()))
        .one(&app.db)
        .await;
    match found {
        Ok(Some(r)) => {
            let safe: String = r
                .file_name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_. ".contains(*c))
                .collect();
            poem::Response::builder()
                .content_type(r.content_type)
                .header(
                    "content-disposition",
                    format!("attachment; filename=\"{safe}\""),
                )
                .header("cache-control", "private, no-store")
                .header("x-content-type-options", "nosniff")
                // A plugin wrote this document: never let it run script here.
                .header("content-security-policy", "sandbox")
                .body(r.content)
        }
        Ok(None) => crate::http::api_error_response(&ApiError::NotFound(
            "report (the link is wrong or has expired)".into(),
        )),
        Err(e) => crate::http::api_error_response(&ApiError::from(e)),
    }
}
