//! Input validation shared by every slice: each check names the offending
//! field so the client gets `VALIDATION_FAILED` with `extensions.field`.

use chrono::NaiveDate;

use crate::error::{ApiError, ApiResult};

/// A display name: trimmed, 1..=max characters, no control characters.
pub fn name(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    text(field, v, max)
}

/// Free text: at most `max` characters, no control characters except newlines.
pub fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let count = value.chars().count();
    if count > max {
        return Err(ApiError::validation(
            field,
            format!("is {count} characters long, the maximum is {max}"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.trim().to_owned())
}

/// Optional free text; empty becomes `None`.
pub fn opt_text(field: &str, value: Option<&str>, max: usize) -> ApiResult<Option<String>> {
    match value.map(|v| text(field, v, max)).transpose()? {
        Some(v) if v.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// A serial number or other identifier: 1..=max of `A-Z a-z 0-9 - _ . / :`.
pub fn identifier(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let v = name(field, value, max)?;
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c))
    {
        return Err(ApiError::validation(
            field,
            "may contain only letters, digits and - _ . / :",
        ));
    }
    Ok(v)
}

/// An IANA time zone name such as `Europe/Paris`.
pub fn time_zone(field: &str, value: &str) -> ApiResult<String> {
    let v = value.trim();
    v.parse::<chrono_tz::Tz>().map_err(|_| {
        ApiError::validation(field, format!("'{}' is not an IANA time zone", truncate(v)))
    })?;
    Ok(v.to_owned())
}

/// An ISO 3166-1 alpha-2 country code, upper-cased.
pub fn country(field: &str, value: &str) -> ApiResult<String> {
    let v = value.trim().to_ascii_uppercase();
    if v.len() != 2 || !v.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(ApiError::validation(
            field,
            "must be a two-letter ISO 3166-1 country code",
        ));
    }
    Ok(v)
}

/// A finite number within `[min, max]`.
pub fn range(field: &str, value: f64, min: f64, max: f64) -> ApiResult<f64> {
    if !value.is_finite() || value < min || value > max {
        return Err(ApiError::validation(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(value)
}

/// A finite number within `(0, max]`.
pub fn positive(field: &str, value: f64, max: f64) -> ApiResult<f64> {
    if !value.is_finite() || value <= 0.0 || value > max {
        return Err(ApiError::validation(
            field,
            format!("must be greater than 0 and at most {max}"),
        ));
    }
    Ok(value)
}

/// A date no earlier than 1990 and no later than tomorrow.
pub fn past_date(field: &str, value: NaiveDate) -> ApiResult<NaiveDate> {
    let earliest = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap_or(NaiveDate::MIN);
    let latest = chrono::Utc::now().date_naive() + chrono::Days::new(1);
    if value < earliest || value > latest {
        return Err(ApiError::validation(
            field,
            format!("must be between {earliest} and {latest}"),
        ));
    }
    Ok(value)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_a_user_would_not_mean() {
        assert_eq!(name("name", "  Plant A ", 10).unwrap(), "Plant A");
        assert!(name("name", "   ", 10).is_err());
        assert!(name("name", &"x".repeat(11), 10).is_err());
        assert!(name("name", "a\u{0}b", 10).is_err());
        assert!(identifier("serial", "BAT 01", 20).is_err());
        assert_eq!(identifier("serial", "BAT-01/a", 20).unwrap(), "BAT-01/a");
        assert!(time_zone("timeZone", "Europe/Paris").is_ok());
        assert!(time_zone("timeZone", "Mars/Olympus").is_err());
        assert_eq!(country("country", "fr").unwrap(), "FR");
        assert!(country("country", "FRA").is_err());
        assert!(range("latitude", 91.0, -90.0, 90.0).is_err());
        assert!(positive("nominalCapacityAh", f64::NAN, 10.0).is_err());
        assert!(past_date("installDate", NaiveDate::from_ymd_opt(2999, 1, 1).unwrap()).is_err());
    }
}
