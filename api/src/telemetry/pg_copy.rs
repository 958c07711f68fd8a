//! PostgreSQL's binary `COPY` format, which the sample writer uses for its
//! bulk append of samples: bulk heap inserts
//! at about twice the rate of an `INSERT` of the same rows. Each row is
//! its field count, then each field as its byte length (-1: NULL) and its
//! big-endian value; the types must be the columns' own.

use chrono::{DateTime, Utc};
use sea_orm::DbErr;
use sea_orm::sqlx::{Postgres, Transaction};

use crate::db::sqlx_error as db_err;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Rows being encoded for one `COPY … FROM STDIN (FORMAT binary)`.
pub(super) struct BinaryRows {
    out: Vec<u8>,
}

impl BinaryRows {
    /// The format's header; `bytes` is a guess of the whole size.
    pub fn new(bytes: usize) -> Self {
        let mut out = Vec::with_capacity(bytes + 21);
        out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        out.extend_from_slice(&0i32.to_be_bytes()); // flags
        out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { out }
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) {
        self.out.extend_from_slice(&fields.to_be_bytes());
    }

    fn field(&mut self, value: Option<&[u8]>) {
        match value {
            Some(v) => {
                self.out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                self.out.extend_from_slice(v);
            }
            None => self.out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    /// A `bigint`.
    pub fn int8(&mut self, v: i64) {
        self.field(Some(&v.to_be_bytes()));
    }

    /// An `integer`.
    pub fn int4(&mut self, v: Option<i32>) {
        self.field(v.map(i32::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    /// A `double precision`.
    pub fn float8(&mut self, v: Option<f64>) {
        self.field(v.map(f64::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    /// A `timestamptz` (microseconds since PostgreSQL's epoch).
    pub fn timestamptz(&mut self, v: DateTime<Utc>) {
        self.int8(v.timestamp_micros() - PG_EPOCH_MICROS);
    }

    /// Sends the rows to `statement` (a `COPY … FROM STDIN (FORMAT binary)`).
    pub async fn copy(
        mut self,
        tx: &mut Transaction<'static, Postgres>,
        statement: &str,
    ) -> Result<(), DbErr> {
        self.out.extend_from_slice(&(-1i16).to_be_bytes()); // trailer
        let mut sink = tx.copy_in_raw(statement).await.map_err(db_err)?;
        sink.send(self.out).await.map_err(db_err)?;
        sink.finish().await.map_err(db_err)?;
        Ok(())
    }
}
