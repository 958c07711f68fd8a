//! `POST /ingest`: bulk telemetry as NDJSON (`application/x-ndjson`) or CSV
//! (`text/csv`, header row first), optionally gzip-compressed
//! (`Content-Encoding: gzip`). The body is streamed: records are parsed and
//! stored chunk by chunk (one is stored while the next is parsed), so a body
//! of any size holds at most two chunks in memory. The answer says how many records were accepted and lists the
//! rejected ones with their index (0-based, data records only), code and
//! message. If storage falls behind mid-body the answer is 503
//! `RETRY_LATER` with the report so far: records before `nextIndex` are
//! stored, the client resends from there.

use futures_util::StreamExt;
use poem::http::{StatusCode, header};
use poem::web::Data;
use poem::{Body, Request, Response, handler};
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncBufRead, BufReader};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::App;
use crate::error::{ApiError, ErrorCode};
use crate::telemetry::checks::MALFORMED;
use crate::telemetry::input::{IngestReport, MEASUREMENTS, RejectedSample, SampleInput};
use crate::telemetry::pipeline::Record;

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Ndjson,
    Csv,
}

fn format_of(req: &Request) -> Option<Format> {
    let ct = req
        .header(header::CONTENT_TYPE)
        .unwrap_or("application/x-ndjson");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/json" => Some(Format::Ndjson),
        "text/csv" => Some(Format::Csv),
        _ => None,
    }
}

fn error(
    status: StatusCode,
    code: ErrorCode,
    message: impl Into<String>,
    report: Option<(&IngestReport, u64)>,
) -> Response {
    let mut body = json!({ "errors": [{ "message": message.into(), "extensions": { "code": code.as_str() } }] });
    if let Some((report, next)) = report {
        body["report"] = serde_json::to_value(report).unwrap_or_default();
        body["nextIndex"] = next.into();
    }
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    #[serde(flatten)]
    report: &'a IngestReport,
    records: u64,
}

#[handler]
pub async fn ingest(
    req: &Request,
    body: Body,
    Data(app): Data<&App>,
    Data(who): Data<&crate::auth::Principal>,
) -> Response {
    if let Err(err) = who.require(crate::auth::Action::IngestTelemetry) {
        return error(err.status(), err.code(), err.to_string(), None);
    }
    let Some(format) = format_of(req) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send application/x-ndjson or text/csv",
            None,
        );
    };
    let gzip = match req
        .header(header::CONTENT_ENCODING)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                format!("content encoding '{other}' is not supported; use gzip"),
                None,
            );
        }
    };
    let raw = BufReader::new(body.into_async_read());
    let reader: Box<dyn AsyncBufRead + Unpin + Send> = if gzip {
        Box::new(BufReader::new(
            async_compression::tokio::bufread::GzipDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    };
    let config = app.ingestor.config().clone();
    let mut lines = FramedRead::new(
        reader,
        LinesCodec::new_with_max_length(config.max_line_bytes),
    );

    let mut report = IngestReport::default();
    let mut header: Option<csv::StringRecord> = None;
    // Grown as records come: a small body does not reserve a whole chunk.
    let first_capacity = config.chunk_records.min(1024);
    let mut chunk: Vec<Record> = Vec::with_capacity(first_capacity);
    let mut index: u64 = 0;
    let mut chunk_start: u64 = 0;
    // The previous chunk is stored while this one is parsed.
    let mut pending: Option<Pending> = None;
    loop {
        let line = lines.next().await;
        let end = line.is_none();
        match line {
            None => {}
            Some(Ok(line)) => {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() {
                    continue;
                }
                if format == Format::Csv && header.is_none() {
                    match parse_header(line) {
                        Ok(h) => header = Some(h),
                        Err(msg) => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                ErrorCode::BadRequest,
                                msg,
                                None,
                            );
                        }
                    }
                    continue;
                }
                let record = match (format, &header) {
                    (Format::Csv, Some(h)) => parse_csv(index, h, line),
                    _ => parse_ndjson(index, line),
                };
                chunk.push((index, record));
                index += 1;
            }
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                let msg = format!("record longer than {} bytes", config.max_line_bytes);
                chunk.push((index, Err(RejectedSample::new(index, MALFORMED, msg))));
                index += 1;
            }
            Some(Err(LinesCodecError::Io(err))) => {
                // The body itself is broken (e.g. corrupt gzip); what came
                // before is stored, the rest is refused.
                if let Err((e, start)) =
                    settle(&mut pending, &mut report, config.max_rejects_listed).await
                {
                    return retry_later(&e, &report, start);
                }
                return match store_chunk(
                    app,
                    who,
                    &mut chunk,
                    &mut report,
                    config.max_rejects_listed,
                )
                .await
                {
                    Ok(()) => error(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::BadRequest,
                        format!("cannot read the body after record {index}: {err}"),
                        Some((&report, index)),
                    ),
                    Err(e) => retry_later(&e, &report, chunk_start),
                };
            }
        }
        if chunk.len() >= config.chunk_records || (end && !chunk.is_empty()) {
            // Chunks commit in order: the previous one first.
            if let Err((e, start)) =
                settle(&mut pending, &mut report, config.max_rejects_listed).await
            {
                return retry_later(&e, &report, start);
            }
            let (ingestor, who, records) = (
                app.ingestor.clone(),
                who.clone(),
                std::mem::replace(&mut chunk, Vec::with_capacity(first_capacity)),
            );
            pending = Some((
                chunk_start,
                tokio::spawn(async move { ingestor.ingest(&who, records).await }),
            ));
            chunk_start = index;
        }
        if end {
            break;
        }
    }
    if let Err((e, start)) = settle(&mut pending, &mut report, config.max_rejects_listed).await {
        return retry_later(&e, &report, start);
    }
    let answer = Answer {
        report: &report,
        records: index,
    };
    Response::builder()
        .content_type("application/json")
        .body(serde_json::to_string(&answer).unwrap_or_default())
}

/// A chunk being stored: the index of its first record and its task (a
/// task of its own, so that it runs while the handler parses the next).
type Pending = (u64, tokio::task::JoinHandle<Result<IngestReport, ApiError>>);

/// Waits for the pending chunk and adds its outcome to `report`; on failure
/// returns the error and the index from which records were not stored.
async fn settle(
    pending: &mut Option<Pending>,
    report: &mut IngestReport,
    max_listed: usize,
) -> Result<(), (ApiError, u64)> {
    let Some((start, task)) = pending.take() else {
        return Ok(());
    };
    let part = task
        .await
        .unwrap_or_else(|e| Err(ApiError::RetryLater(format!("storing stopped: {e}"))))
        .map_err(|e| (e, start))?;
    report.merge(part, max_listed);
    Ok(())
}

async fn store_chunk(
    app: &App,
    who: &crate::auth::Principal,
    chunk: &mut Vec<Record>,
    report: &mut IngestReport,
    max_listed: usize,
) -> Result<(), ApiError> {
    if chunk.is_empty() {
        return Ok(());
    }
    let part = app.ingestor.ingest(who, std::mem::take(chunk)).await?;
    report.merge(part, max_listed);
    Ok(())
}

fn retry_later(err: &ApiError, report: &IngestReport, next: u64) -> Response {
    let (status, code) = match err {
        ApiError::RetryLater(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::RetryLater),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, err.code()),
    };
    let mut resp = error(status, code, err.to_string(), Some((report, next)));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            poem::http::HeaderValue::from_static("5"),
        );
    }
    resp
}

fn parse_ndjson(index: u64, line: &str) -> Result<SampleInput, RejectedSample> {
    serde_json::from_str(line)
        .map_err(|e| RejectedSample::new(index, MALFORMED, format!("not a sample: {e}")))
}

fn parse_header(line: &str) -> Result<csv::StringRecord, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    let header = rdr
        .records()
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| "the CSV header row is unreadable".to_owned())?;
    let known = |h: &str| h == "battery" || h == "ts" || MEASUREMENTS.contains(&h);
    let unknown: Vec<&str> = header.iter().filter(|h| !known(h)).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown CSV column(s) {unknown:?}; columns are battery, ts, {}",
            MEASUREMENTS.join(", ")
        ));
    }
    for required in ["battery", "ts"] {
        if !header.iter().any(|h| h == required) {
            return Err(format!("the CSV header has no '{required}' column"));
        }
    }
    Ok(header)
}

fn parse_csv(
    index: u64,
    header: &csv::StringRecord,
    line: &str,
) -> Result<SampleInput, RejectedSample> {
    let malformed = |msg: String| RejectedSample::new(index, MALFORMED, msg);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    let record = rdr
        .records()
        .next()
        .ok_or_else(|| malformed("empty record".into()))?
        .map_err(|e| malformed(format!("not a CSV record: {e}")))?;
    if record.len() != header.len() {
        return Err(malformed(format!(
            "{} fields, the header has {}",
            record.len(),
            header.len()
        )));
    }
    record
        .deserialize(Some(header))
        .map_err(|e| malformed(format!("not a sample: {e}")))
}
