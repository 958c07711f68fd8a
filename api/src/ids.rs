//! Opaque global IDs (`node(id)`): the URL-safe base64 of `Type:number`.
//! Clients must treat them as opaque; the server checks the type on every use
//! so a Site id passed where a Battery id is expected is an `INVALID_ID`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;

/// The kinds of object that have a global ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Client,
    Site,
    Zone,
    Bms,
    Battery,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "Client",
            Self::Site => "Site",
            Self::Zone => "Zone",
            Self::Bms => "Bms",
            Self::Battery => "Battery",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Self::Client,
            Self::Site,
            Self::Zone,
            Self::Bms,
            Self::Battery,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// `tenant`, or the level and global id of a scope (`site:U2l0ZTox`), as
/// reports and schedules show it.
pub fn describe_level(level: Option<(Kind, i64)>) -> String {
    match level {
        None => "tenant".into(),
        Some((kind, id)) => format!("{}:{}", kind.name().to_lowercase(), encode(kind, id).0),
    }
}

pub fn encode(kind: Kind, id: i64) -> async_graphql::ID {
    async_graphql::ID(URL_SAFE_NO_PAD.encode(format!("{}:{id}", kind.name())))
}

/// Splits a global ID into its type name and row id.
fn split(id: &str) -> Result<(String, i64), ApiError> {
    let invalid = || ApiError::InvalidId(format!("'{}' is not a TrackingBMS id", truncate(id)));
    let bytes = URL_SAFE_NO_PAD.decode(id).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (kind, num) = text.split_once(':').ok_or_else(invalid)?;
    let num: i64 = num.parse().map_err(|_| invalid())?;
    if num <= 0 {
        return Err(invalid());
    }
    Ok((kind.to_owned(), num))
}

/// Decodes any global ID of the fleet into its kind and row id.
pub fn decode_any(id: &str) -> Result<(Kind, i64), ApiError> {
    let (name, num) = split(id)?;
    let kind = Kind::parse(&name)
        .ok_or_else(|| ApiError::InvalidId(format!("a {name} id does not name a fleet object")))?;
    Ok((kind, num))
}

/// Objects outside the fleet hierarchy. Their ids have the same opaque
/// form but are not `node`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Other {
    User,
    ApiKey,
    AuditEntry,
    Plugin,
    PredictionModel,
    ReportSchedule,
    ReportArtifact,
}

impl Other {
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::ApiKey => "ApiKey",
            Self::AuditEntry => "AuditEntry",
            Self::Plugin => "Plugin",
            Self::PredictionModel => "PredictionModel",
            Self::ReportSchedule => "ReportSchedule",
            Self::ReportArtifact => "ReportArtifact",
        }
    }
}

pub fn encode_other(kind: Other, id: i64) -> async_graphql::ID {
    async_graphql::ID(URL_SAFE_NO_PAD.encode(format!("{}:{id}", kind.name())))
}

/// Decodes an id that must be of `kind`.
pub fn decode_other(kind: Other, id: &str) -> Result<i64, ApiError> {
    let (name, num) = split(id)?;
    if name != kind.name() {
        return Err(ApiError::InvalidId(format!(
            "expected a {} id, got a {name} id",
            kind.name()
        )));
    }
    Ok(num)
}

/// Decodes a global ID that must be of `kind`.
pub fn decode(kind: Kind, id: &str) -> Result<i64, ApiError> {
    let (actual, num) = decode_any(id)?;
    if actual != kind {
        return Err(ApiError::InvalidId(format!(
            "expected a {} id, got a {} id",
            kind.name(),
            actual.name()
        )));
    }
    Ok(num)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_kind_check() {
        let id = encode(Kind::Battery, 42);
        assert_eq!(decode(Kind::Battery, &id).unwrap(), 42);
        let err = decode(Kind::Site, &id).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected a Site id, got a Battery id"),
            "{err}"
        );
        assert!(decode_any("not base64!").is_err());
        assert!(decode_any(&URL_SAFE_NO_PAD.encode("Battery:-1")).is_err());
        assert!(decode_any(&URL_SAFE_NO_PAD.encode("Tenant:1")).is_err());
    }
}
