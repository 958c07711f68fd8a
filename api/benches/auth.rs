//! What authentication costs: the latency of a minimal GraphQL request
//! (`{ viewer { role } }`) per kind of credential, and of a password
//! sign-in (argon2id), over HTTP on SQLite.
//!
//!     cargo bench -p trackingbms-api --bench auth
//!
//! Client and server share the machine.

use std::time::{Duration, Instant};

use serde_json::json;
use trackingbms_api::{App, Config};

mod support;
use support::{BENCH_KEY, bench_client};

const REQUESTS: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn latency(url: &str, token: &str) -> anyhow::Result<(f64, f64)> {
    let client = reqwest::Client::new();
    let body = json!({ "query": "{ viewer { role } }" });
    let mut times = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let resp = client
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
        resp.bytes().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        bind: format!("127.0.0.1:{port}").parse()?,
        ..Config::default()
    };
    config.log.filter = "warn".into();
    config.auth.admin_api_key = Some(BENCH_KEY.into());
    config.limits.requests_per_minute = 0;
    config.auth.login_attempts_per_minute = 0;
    let app = App::build(config).await?;
    tokio::spawn(app.clone().serve(std::future::pending()));
    let base = format!("http://127.0.0.1:{port}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = bench_client();
    let gql = |query: &'static str| {
        let admin = admin.clone();
        let url = format!("{base}/graphql");
        async move {
            admin
                .post(url)
                .json(&json!({ "query": query }))
                .send()
                .await?
                .json::<serde_json::Value>()
                .await
        }
    };
    let key = gql("mutation { createApiKey(input: {name: \"bench\", role: OBSERVER}) { key } }")
        .await?["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    gql("mutation { createUser(input: {email: \"bench@example.com\", role: OBSERVER, password: \"bench password 123\"}) { id } }").await?;

    let login = json!({ "email": "bench@example.com", "password": "bench password 123" });
    let client = reqwest::Client::new();
    let mut sign_ins = Vec::new();
    let mut access = String::new();
    for _ in 0..20 {
        let started = Instant::now();
        let tokens: serde_json::Value = client
            .post(format!("{base}/auth/login"))
            .json(&login)
            .send()
            .await?
            .json()
            .await?;
        sign_ins.push(started.elapsed());
        access = tokens["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
    sign_ins.sort();

    let url = format!("{base}/graphql");
    println!("auth (SQLite, {REQUESTS} sequential requests of {{ viewer {{ role }} }} each)");
    for (label, token) in [
        ("bootstrap key", BENCH_KEY),
        ("API key", key.as_str()),
        ("session access token", access.as_str()),
    ] {
        let (p50, p99) = latency(&url, token).await?;
        println!("  {label:<22} p50 {p50:6.2} ms   p99 {p99:6.2} ms");
    }
    println!(
        "  password sign-in       p50 {:6.1} ms   p99 {:6.1} ms (argon2id, 20 sign-ins)",
        percentile(&sign_ins, 0.5),
        percentile(&sign_ins, 0.99)
    );
    Ok(())
}
