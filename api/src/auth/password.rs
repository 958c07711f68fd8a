//! Local credentials: argon2id password hashes (PHC strings), TOTP second
//! factor (RFC 6238: SHA-1, 6 digits, 30 s, ±1 step) and one-time recovery
//! codes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::error::{ApiError, ApiResult};

/// Shortest password accepted for a local account.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Hashes a new password after checking it is acceptable.
pub fn hash(password: &str) -> ApiResult<String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::validation(
            "password",
            format!("at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if password.len() > 1024 {
        return Err(ApiError::validation("password", "at most 1024 bytes"));
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| ApiError::validation("password", e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::validation("password", e.to_string()))
}

/// True when `password` matches the stored hash. A missing hash (SSO-only
/// account) still spends the time of one verification, so response times
/// do not tell which accounts exist.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("not-a-real-password").unwrap_or_default());
    let (phc, real) = match stored {
        Some(s) => (s, true),
        None => (dummy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

fn totp(secret_b32: &str, account: &str) -> ApiResult<TOTP> {
    let bytes = Secret::Encoded(secret_b32.to_owned())
        .to_bytes()
        .map_err(|_| ApiError::validation("totp", "stored TOTP secret is unreadable"))?;
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        Some("TrackingBMS".into()),
        account.to_owned(),
    )
    .map_err(|e| ApiError::validation("totp", e.to_string()))
}

/// A new TOTP secret (base32) and its `otpauth://` URI for authenticator apps.
pub fn new_totp(account: &str) -> ApiResult<(String, String)> {
    let secret = Secret::generate_secret().to_encoded().to_string();
    let uri = totp(&secret, account)?.get_url();
    Ok((secret, uri))
}

/// True when `code` is the current code (or one step either side).
pub fn check_totp(secret_b32: &str, account: &str, code: &str) -> bool {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    totp(secret_b32, account)
        .ok()
        .and_then(|t| t.check_current(&code).ok())
        .unwrap_or(false)
}

/// The code an authenticator would show now (tests and the demo).
pub fn current_totp(secret_b32: &str, account: &str) -> ApiResult<String> {
    totp(secret_b32, account)?
        .generate_current()
        .map_err(|e| ApiError::validation("totp", e.to_string()))
}

/// Ten recovery codes like `k7m2-x9qp-4hdt`.
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..10)
        .map(|_| {
            let mut bytes = [0u8; 12];
            rand::rng().fill_bytes(&mut bytes);
            let chars: Vec<char> = bytes
                .iter()
                .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
                .collect();
            chars
                .chunks(4)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// Normal form of a recovery code before hashing (case and spaces ignored).
pub fn normalize_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip_and_rejections() {
        let h = hash("correct horse battery").unwrap();
        assert!(verify("correct horse battery", Some(&h)));
        assert!(!verify("correct horse batterz", Some(&h)));
        assert!(!verify("correct horse battery", None));
        assert!(hash("short").is_err());
    }

    #[test]
    fn totp_accepts_the_current_code_only() {
        let (secret, uri) = new_totp("ana@example.com").unwrap();
        assert!(uri.starts_with("otpauth://totp/TrackingBMS:ana%40example.com?"));
        let code = current_totp(&secret, "ana@example.com").unwrap();
        assert!(check_totp(&secret, "ana@example.com", &code));
        let wrong = format!(
            "{:06}",
            (code.parse::<u32>().unwrap() + 500_000) % 1_000_000
        );
        assert!(!check_totp(&secret, "ana@example.com", &wrong));
    }
}
