//! The real `trackingbms` binary on a free port, spoken to over HTTP:
//! GraphQL, GraphiQL, `/health`, `/ready`, `/metrics`, graceful SIGTERM, and
//! data that survives a restart.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(data_dir: &std::path::Path, database_url: Option<&str>) -> Self {
        let env: Vec<(&str, String)> = database_url
            .map(|u| ("DATABASE_URL", u.to_owned()))
            .into_iter()
            .collect();
        Self::start_with(data_dir, &env).await
    }

    async fn start_with(data_dir: &std::path::Path, env: &[(&str, String)]) -> Self {
        let port = common::free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trackingbms"));
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .env("TRACKINGBMS_ADMIN_API_KEY", common::ADMIN_KEY)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start trackingbms");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/health")).await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base }
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        common::authed_client()
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// SIGTERM, then the exit status (the server must drain and exit 0).
    fn terminate(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "server ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn serve_query_and_restart(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), database_url.as_deref()).await;

    let health: Value = reqwest::get(format!("{}/health", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = reqwest::get(format!("{}/ready", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let created = server
        .graphql("mutation { createClient(input: {name: \"E2E Energy\", country: \"NL\"}) { id name country } }", json!({}))
        .await;
    assert_eq!(
        created["data"]["createClient"]["country"], "NL",
        "{created}"
    );
    let id = created["data"]["createClient"]["id"].clone();
    let listed = server
        .graphql(
            "{ clients { totalCount edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["data"]["clients"]["edges"][0]["node"]["id"], id);

    let page = reqwest::get(format!("{}/graphql", server.base))
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );

    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("trackingbms_http_requests_total{route=\"/graphql\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("trackingbms_db_statements_total{outcome=\"ok\"}"));

    let status = server.terminate();
    assert!(status.success(), "graceful exit, got {status}");

    // Same storage, new process: the data is still there.
    let server = Server::start(dir.path(), database_url.as_deref()).await;
    let node = server
        .graphql(
            "query($id: ID!) { node(id: $id) { ... on Client { name } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(node["data"]["node"]["name"], "E2E Energy");
    assert!(server.terminate().success());
}

#[tokio::test]
async fn sqlite_server_end_to_end() {
    serve_query_and_restart(None).await;
}

#[tokio::test]
async fn postgres_server_end_to_end() {
    serve_query_and_restart(Some(common::fresh_pg_url().await)).await;
}

/// Runs the reference `graphql-ws` client (npm, under Node) subscribed to
/// `liveMetrics(scope)` on `server`; returns it and its output lines, once
/// it is connected and the subscription has had time to register.
async fn node_subscriber(
    server: &Server,
    count: usize,
    scope: &Value,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws/subscribe.mjs");
    let modules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/ws/node_modules/graphql-ws"
    );
    assert!(
        std::path::Path::new(modules).exists(),
        "the graphql-ws client is not installed: run scripts/setup-node.sh (scripts/test.sh does)"
    );
    let ws_url = format!("{}/graphql/ws", server.base.replace("http://", "ws://"));
    let mut node = Command::new("node")
        .args([script, &ws_url, &count.to_string(), &scope.to_string()])
        .env("TRACKINGBMS_TOKEN", common::ADMIN_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let connected = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("client connected");
    assert_eq!(connected, r#"{"connected":true}"#);
    // Let the server register the subscription after connection_ack.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (node, rx)
}

/// Creates client → … → battery `serial` over HTTP; returns the battery id.
async fn create_battery(server: &Server, serial: &str) -> Value {
    let mut ids: Vec<Value> = Vec::new();
    let battery = format!(
        "mutation($p: ID!) {{ createBattery(input: {{bmsId: $p, serial: \"{serial}\", chemistry: NMC, nominalCapacityAh: 50, nominalVoltageV: 48, installDate: \"2024-01-01\"}}) {{ id }} }}"
    );
    for q in [
        "mutation { createClient(input: {name: \"WS\"}) { id } }",
        "mutation($p: ID!) { createSite(input: {clientId: $p, name: \"S\"}) { id } }",
        "mutation($p: ID!) { createZone(input: {siteId: $p, name: \"Z\"}) { id } }",
        "mutation($p: ID!) { createBms(input: {zoneId: $p, name: \"B\"}) { id } }",
        battery.as_str(),
    ] {
        let r = server.graphql(q, json!({ "p": ids.last() })).await;
        let data = r["data"].as_object().unwrap_or_else(|| panic!("{r}"));
        ids.push(data.values().next().unwrap()["id"].clone());
    }
    ids.pop().unwrap()
}

async fn post_ndjson(server: &Server, body: String) -> Value {
    common::authed_client()
        .post(format!("{}/ingest", server.base))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The reference `graphql-ws` client (npm, run by Node) subscribes over
/// `graphql-transport-ws` and receives samples pushed with `POST /ingest`.
#[tokio::test]
async fn graphql_ws_reference_client_receives_live_samples() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None).await;
    let battery = create_battery(&server, "WS-1").await;
    let (mut node, rx) = node_subscriber(&server, 2, &json!({ "batteryId": battery })).await;
    let body = "{\"battery\":\"WS-1\",\"ts\":\"2026-06-01T00:00:00Z\",\"socPct\":55.5,\"voltageV\":50.1}\n\
                {\"battery\":\"WS-1\",\"ts\":\"2026-06-01T00:00:05Z\",\"socPct\":55.0,\"voltageV\":50.0}\n";
    let report = post_ndjson(&server, body.to_owned()).await;
    assert_eq!(report["stored"], 2, "{report}");
    let mut socs = Vec::new();
    for _ in 0..2 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an event over the WebSocket");
        let event: Value = serde_json::from_str(&line).unwrap();
        let live = &event["data"]["liveMetrics"];
        assert_eq!(live["batteryId"], battery);
        assert_eq!(live["replayed"], false);
        socs.push(live["sample"]["socPct"].as_f64().unwrap());
    }
    assert_eq!(socs, vec![55.5, 55.0]);
    assert!(
        node.wait().unwrap().success(),
        "the client completed cleanly"
    );
    assert!(server.terminate().success());
}

/// Two server processes on one PostgreSQL and one Redis: a sample ingested on
/// the first reaches a WebSocket subscriber of the second.
#[tokio::test]
async fn two_replicas_share_live_samples_through_redis() {
    let db = common::fresh_pg_url().await;
    let channel = format!("trackingbms:test:{}", rand::random::<u64>());
    let env = vec![
        ("DATABASE_URL", db),
        ("REDIS_URL", trackingbms_api::fixtures::redis_url()),
        ("TRACKINGBMS_LIVE__REDIS_CHANNEL", channel),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start_with(dir_a.path(), &env).await;
    let b = Server::start_with(dir_b.path(), &env).await;
    let battery = create_battery(&a, "REPL-1").await;
    let (mut node, rx) = node_subscriber(&b, 1, &json!({ "batteryId": battery })).await;
    let report = post_ndjson(
        &a,
        "{\"battery\":\"REPL-1\",\"ts\":\"2026-06-01T00:00:00Z\",\"socPct\":61.0}\n".into(),
    )
    .await;
    assert_eq!(report["stored"], 1, "{report}");
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the sample reached replica B");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["data"]["liveMetrics"]["sample"]["socPct"], 61.0);
    assert!(node.wait().unwrap().success());
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// `kill -9` during a sustained ingest: after a restart, every sample whose
/// batch was acknowledged is stored.
#[tokio::test]
async fn acknowledged_samples_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None).await;
    let battery = create_battery(&server, "CRASH-1").await;
    let start = chrono::DateTime::parse_from_rfc3339("2026-07-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let url = format!("{}/ingest", server.base);
    let producer = tokio::spawn(async move {
        let client = common::authed_client();
        let mut acknowledged = 0u64;
        for batch in 0u64.. {
            let body: String = (0..500)
                .map(|i| {
                    let ts = start + chrono::Duration::seconds((batch * 500 + i) as i64);
                    format!(
                        "{{\"battery\":\"CRASH-1\",\"ts\":\"{}\",\"socPct\":50}}\n",
                        ts.to_rfc3339()
                    )
                })
                .collect();
            match client
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(v) => acknowledged += v["accepted"].as_u64().unwrap_or(0),
                    Err(_) => break,
                },
                _ => break,
            }
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let acknowledged = producer.await.unwrap();
    assert!(
        acknowledged >= 1000,
        "the ingest was sustained ({acknowledged} acknowledged)"
    );

    let server = Server::start(dir.path(), None).await;
    let stored = server
        .graphql(
            "query($id: ID!) { batteryMetrics(batteryId: $id, from: \"2026-07-01T00:00:00Z\", to: \"2026-08-01T00:00:00Z\", resolution: RAW, first: 0) { totalCount } }",
            json!({ "id": battery }),
        )
        .await["data"]["batteryMetrics"]["totalCount"]
        .as_u64()
        .unwrap();
    assert!(
        stored >= acknowledged,
        "{stored} stored < {acknowledged} acknowledged"
    );
    // Batches are written whole: the acknowledged ones form a gap-free prefix.
    let first_missing = server
        .graphql(
            "query($id: ID!, $from: DateTime!) { batteryMetrics(batteryId: $id, from: $from, to: \"2026-08-01T00:00:00Z\", resolution: RAW, first: 1) { edges { node { ts } } } }",
            json!({ "id": battery, "from": (start + chrono::Duration::seconds(acknowledged as i64 - 1)).to_rfc3339() }),
        )
        .await;
    assert!(
        first_missing["data"]["batteryMetrics"]["edges"][0]["node"]["ts"].is_string(),
        "{first_missing}"
    );
    assert!(server.terminate().success());
}

/// A WebSocket client that sends no credentials in `connection_init` is
/// refused before it can subscribe.
#[tokio::test]
async fn websocket_without_credentials_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws/subscribe.mjs");
    let ws_url = format!("{}/graphql/ws", server.base.replace("http://", "ws://"));
    for token in [None, Some("tbk_1_forged")] {
        let mut cmd = Command::new("node");
        cmd.args([script, &ws_url, "1", "null"])
            .env_remove("TRACKINGBMS_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("TRACKINGBMS_TOKEN", t);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{token:?}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("liveMetrics"), "{stdout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // async-graphql closes with 1002 and the reason of the refusal.
        let refusal = stderr
            .lines()
            .find(|l| l.starts_with("{\"error\""))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(refusal.to_lowercase().contains("bearer"), "{refusal}");
    }
}

/// `trackingbms create-api-key` prints a key that the server then accepts
/// with the role it was given; a wrong role is a clear error.
#[tokio::test]
async fn cli_creates_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_trackingbms"))
            .arg("create-api-key")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&["--role", "observer", "--name", "erp"]);
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("tbk_"), "{key}");
    let bad = run(&["--role", "ROOT"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a role"));

    let server = Server::start(dir.path(), None).await;
    let me =
        common::graphql_over_http(&server.base, &key, "{ viewer { role actor } }", json!({})).await;
    assert_eq!(me["data"]["viewer"]["role"], "OBSERVER", "{me}");
    let audit = server
        .graphql(
            "{ auditLog(first: 5) { entries { action actor } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        audit["data"]["auditLog"]["entries"][0]["action"],
        "api_key.create"
    );
    assert_eq!(audit["data"]["auditLog"]["entries"][0]["actor"], "cli");
}

/// `serve --demo` prints one account per role, and each signs in with the
/// role it was printed with.
#[tokio::test]
async fn demo_prints_one_account_per_role() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackingbms"))
        .args(["serve", "--demo", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .env("TRACKINGBMS_DEMO__BACKFILL_HOURS", "0")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let lines: Vec<String> = rx
        .iter()
        .skip_while(|l| !l.starts_with("Demo accounts"))
        .take(6)
        .collect();
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while reqwest::get(format!("{}/health", server.base))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lines.len(), 6, "{lines:?}");
    for line in &lines[1..] {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (role, email, password) = (words[0], words[1], words[3]);
        let tokens: Value = reqwest::Client::new()
            .post(format!("{}/auth/login", server.base))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let access = tokens["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{line}: {tokens}"));
        let query = "{ viewer { role } batteries(first: 1) { totalCount } }";
        let me = common::graphql_over_http(&server.base, access, query, json!({})).await;
        assert_eq!(me["data"]["viewer"]["role"], role, "{me}");
        assert!(me["data"]["batteries"]["totalCount"].as_u64().unwrap() > 0);
    }
    // Anonymous callers are refused in demo mode too.
    let anonymous = reqwest::Client::new()
        .post(format!("{}/graphql", server.base))
        .json(&json!({ "query": "{ clients { totalCount } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
