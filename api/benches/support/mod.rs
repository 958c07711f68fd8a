//! What the HTTP benchmarks share: the admin key they configure and a client
//! that presents it.

/// Bootstrap SUPER_ADMIN key of the benchmarked app.
pub const BENCH_KEY: &str = "bench-bootstrap-admin-key-0123456789";

/// An HTTP client that authenticates with [`BENCH_KEY`].
pub fn bench_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(v) = format!("Bearer {BENCH_KEY}").parse() {
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}
