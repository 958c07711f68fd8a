//! Random tokens and their stored form. Tokens carry 256 random bits, so a
//! single SHA-256 is a sufficient stored form (no dictionary to guess from);
//! passwords, which people choose, use argon2 instead (`password`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of session access tokens.
pub const ACCESS_PREFIX: &str = "tba_";
/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "tbr_";
/// Prefix of API keys: `tbk_<key id>_<secret>`.
pub const API_KEY_PREFIX: &str = "tbk_";

/// 32 random bytes, URL-safe base64, behind `prefix`.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256, the stored form of a token.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Compares two secrets without leaking where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
