//! Test harness: a real App on a fresh database (a temporary SQLite file, or
//! a fresh schema in the PostgreSQL of `TEST_DATABASE_URL`, by default the
//! machine's `postgres://postgres@127.0.0.1:5432/test`), driven through its
//! real HTTP routes. A PostgreSQL test fails, never skips, when the server
//! is unreachable.

#![allow(dead_code)]

use poem::test::TestClient;
use serde_json::{Value, json};
use trackingbms_api::{App, Config};

/// The bootstrap SUPER_ADMIN key every test app and test server accepts
/// (`auth.admin_api_key`, `TRACKINGBMS_ADMIN_API_KEY`).
pub const ADMIN_KEY: &str = "test-bootstrap-admin-key-0123456789";

/// `Authorization` header value of the bootstrap key.
pub fn admin_bearer() -> String {
    format!("Bearer {ADMIN_KEY}")
}

/// An HTTP client that authenticates as the bootstrap super admin.
pub fn authed_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        admin_bearer().parse().expect("header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// A component built by `plugins/build.sh`.
pub fn plugin_component(name: &str) -> Vec<u8> {
    let path = format!("{}/../plugins/dist/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{path}: {e}; build the plugins with plugins/build.sh (scripts/test.sh does)")
    })
}

/// The ONNX Runtime library `scripts/setup-python.sh` links.
pub fn ort_library() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ort/libonnxruntime.so")
}

/// POSTs a GraphQL request to a running server at `base` with `token`.
pub async fn graphql_over_http(base: &str, token: &str, query: &str, variables: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("server answers")
        .json()
        .await
        .expect("JSON answer")
}

/// A local TCP port nothing listens on now (for a server or device a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh, empty PostgreSQL schema; returns a URL whose connections use it.
/// Panics (the test fails) when PostgreSQL is unreachable.
pub async fn fresh_pg_url() -> String {
    let base = trackingbms_api::fixtures::pg_base_url();
    trackingbms_api::fixtures::fresh_pg_schema(&base)
        .await
        .unwrap_or_else(|e| panic!("this test needs PostgreSQL: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub app: App,
    pub client: TestClient<poem::endpoint::BoxEndpoint<'static, poem::Response>>,
    pub backend: Backend,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn new(backend: Backend) -> Self {
        Self::with_config(backend, |_| {}).await
    }

    pub async fn with_config(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.auth.admin_api_key = Some(ADMIN_KEY.into());
        config.predictions.ort_library = Some(ort_library());
        if backend == Backend::Postgres {
            config.database_url = Some(fresh_pg_url().await);
            config.db_max_connections = 4;
        }
        adjust(&mut config);
        let app = App::build(config).await.expect("app builds");
        let ep = poem::EndpointExt::boxed(poem::EndpointExt::map_to_response(
            trackingbms_api::http::routes(app.clone()),
        ));
        Self {
            client: TestClient::new(ep),
            app,
            backend,
            _dir: dir,
        }
    }

    /// POSTs a GraphQL request as the bootstrap super admin and returns
    /// the whole JSON response.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_as(ADMIN_KEY, query, variables).await
    }

    /// POSTs a GraphQL request with `token` as bearer credentials.
    pub async fn gql_as(&self, token: &str, query: &str, variables: Value) -> Value {
        let resp = self
            .client
            .post("/graphql")
            .header("authorization", format!("Bearer {token}"))
            .body_json(&json!({ "query": query, "variables": variables }))
            .send()
            .await;
        resp.assert_status_is_ok();
        resp.json().await.value().deserialize::<Value>()
    }

    /// The HTTP status of `{ viewer { role } }` asked with `token`.
    pub async fn gql_as_status(&self, token: &str) -> poem::http::StatusCode {
        self.client
            .post("/graphql")
            .header("authorization", format!("Bearer {token}"))
            .body_json(&json!({ "query": "{ viewer { role } }" }))
            .send()
            .await
            .0
            .status()
    }

    /// `data` of a request made with `token`; panics on errors.
    pub async fn data_as(&self, token: &str, query: &str, variables: Value) -> Value {
        let resp = self.gql_as(token, query, variables).await;
        assert!(resp.get("errors").is_none(), "unexpected errors: {resp:#}");
        resp["data"].clone()
    }

    /// The `extensions.code` of the first error of a request made with `token`.
    pub async fn error_code_as(&self, token: &str, query: &str, variables: Value) -> String {
        let resp = self.gql_as(token, query, variables).await;
        resp["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error with a code, got {resp:#}"))
            .to_owned()
    }

    /// A POST to `path` authenticated as the bootstrap super admin.
    pub fn post(
        &self,
        path: &str,
    ) -> poem::test::TestRequestBuilder<'_, poem::endpoint::BoxEndpoint<'static, poem::Response>>
    {
        self.client
            .post(path)
            .header("authorization", admin_bearer())
    }

    /// Like [`gql`] but asserts there is no error and returns `data`.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let resp = self.gql(query, variables).await;
        assert!(resp.get("errors").is_none(), "unexpected errors: {resp:#}");
        resp["data"].clone()
    }

    /// The `extensions.code` of the first error (panics when there is none).
    pub async fn error_code(&self, query: &str, variables: Value) -> String {
        let resp = self.gql(query, variables).await;
        resp["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error with a code, got {resp:#}"))
            .to_owned()
    }

    /// Starts a subscription as the operator of the default tenant.
    pub fn subscribe(
        &self,
        query: &str,
        variables: Value,
    ) -> futures_util::stream::BoxStream<'static, Value> {
        self.subscribe_as(self.app.system("test"), query, variables)
    }

    /// The principal a bearer token stands for.
    pub async fn principal(&self, token: &str) -> trackingbms_api::auth::Principal {
        self.app
            .identity
            .authenticator
            .authenticate(Some(token), Default::default())
            .await
            .expect("token authenticates")
    }

    /// Starts a subscription as `who`.
    pub fn subscribe_as(
        &self,
        who: trackingbms_api::auth::Principal,
        query: &str,
        variables: Value,
    ) -> futures_util::stream::BoxStream<'static, Value> {
        use futures_util::StreamExt;
        let req = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(variables))
            .data(who);
        self.app
            .schema
            .execute_stream(req)
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .boxed()
    }

    /// Runs the roll-up fold now, as the server does every
    /// `ingest.rollup_fold_ms`: it adds the backlog to the roll-ups and
    /// moves battery pointers (`lastSampleAt`, `sohPct`).
    /// Returns how many buckets it wrote.
    pub async fn fold(&self) -> u64 {
        trackingbms_api::telemetry::fold::fold(&self.app.db)
            .await
            .expect("fold")
    }

    /// Raw samples stored for a battery (global id), all time.
    pub async fn raw_sample_count(&self, battery: &str) -> u64 {
        self.data(
            "query($id: ID!) { batteryMetrics(batteryId: $id, from: \"2000-01-01T00:00:00Z\", resolution: RAW, first: 0) { totalCount } }",
            json!({ "id": battery }),
        )
        .await["batteryMetrics"]["totalCount"]
            .as_u64()
            .unwrap()
    }

    /// Uploads a plugin with a GraphQL multipart request as `token`;
    /// `selection` is what to ask of the uploaded `Plugin`.
    pub async fn upload_plugin(&self, token: &str, bytes: Vec<u8>, selection: &str) -> Value {
        let query =
            format!("mutation($file: Upload!) {{ uploadPlugin(file: $file) {{ {selection} }} }}");
        self.upload(token, &query, json!({ "file": null }), bytes)
            .await
    }

    /// A multipart GraphQL request whose variable `file` carries `bytes`.
    pub async fn upload(
        &self,
        token: &str,
        query: &str,
        variables: Value,
        bytes: Vec<u8>,
    ) -> Value {
        use poem::test::{TestForm, TestFormField};
        let operations = json!({ "query": query, "variables": variables });
        let form = TestForm::new()
            .text("operations", operations.to_string())
            .text("map", r#"{"0": ["variables.file"]}"#)
            .field(
                TestFormField::bytes(bytes)
                    .name("0")
                    .filename("upload.bin")
                    .content_type("application/octet-stream"),
            );
        let resp = self
            .client
            .post("/graphql")
            .header("authorization", format!("Bearer {token}"))
            .multipart(form)
            .send()
            .await;
        resp.assert_status_is_ok();
        resp.json().await.value().deserialize::<Value>()
    }

    /// SQL statements executed so far by this app.
    pub fn statements(&self) -> u64 {
        self.app.metrics.db_statement_count()
    }
}

/// Runs an async scenario `fn(TestApp)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario(super::common::TestApp::new(super::common::Backend::Sqlite).await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$scenario(super::common::TestApp::new(super::common::Backend::Postgres).await).await
                }
            }
        )*
    };
}

/// Creates client → site → zone → BMS → battery and returns their ids.
pub async fn create_chain(t: &TestApp, suffix: &str) -> [String; 5] {
    let c = t
        .data(
            "mutation($n: String!) { createClient(input: {name: $n, timeZone: \"Europe/Paris\"}) { id } }",
            json!({ "n": format!("Client {suffix}") }),
        )
        .await["createClient"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = t
        .data(
            "mutation($c: ID!) { createSite(input: {clientId: $c, name: \"Site\", latitude: 45.7, longitude: 4.8}) { id timeZone } }",
            json!({ "c": c }),
        )
        .await["createSite"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let z = t
        .data(
            "mutation($s: ID!) { createZone(input: {siteId: $s, name: \"Hall\"}) { id } }",
            json!({ "s": s }),
        )
        .await["createZone"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = t
        .data(
            "mutation($z: ID!) { createBms(input: {zoneId: $z, name: \"BMS-1\"}) { id } }",
            json!({ "z": z }),
        )
        .await["createBms"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bat = t
        .data(
            "mutation($b: ID!, $s: String!) { createBattery(input: {bmsId: $b, serial: $s, chemistry: LFP, nominalCapacityAh: 100, nominalVoltageV: 51.2, installDate: \"2022-03-01\"}) { id } }",
            json!({ "b": b, "s": format!("SN-{suffix}") }),
        )
        .await["createBattery"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    [c, s, z, b, bat]
}
