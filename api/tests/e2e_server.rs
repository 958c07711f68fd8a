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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trackingbms"));
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            cmd.env("DATABASE_URL", url);
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
        reqwest::Client::new()
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
