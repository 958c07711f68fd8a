//! Hostile or broken requests get a clear error with a code: never a panic,
//! never a 500, and the server keeps answering.

mod common;

use common::{Backend, TestApp};
use poem::http::StatusCode;
use serde_json::{Value, json};

async fn raw(t: &TestApp, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let resp = t
        .post("/graphql")
        .content_type(content_type)
        .body(body)
        .send()
        .await;
    let status = resp.0.status();
    let body = resp.0.into_body().into_string().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn code(v: &Value) -> &str {
    v["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

#[tokio::test]
async fn broken_requests_get_coded_errors() {
    let t = TestApp::with_config(Backend::Sqlite, |c| c.limits.max_body_bytes = 4096).await;

    let (status, body) = raw(&t, "application/json", b"{not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "BAD_REQUEST");

    let (status, body) = raw(
        &t,
        "application/json",
        br#"{"query": "{ clients { "}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(code(&body), "GRAPHQL_PARSE_FAILED");

    let (_, body) = raw(
        &t,
        "application/json",
        br#"{"query": "{ noSuchField }"}"#.to_vec(),
    )
    .await;
    assert_eq!(code(&body), "GRAPHQL_VALIDATION_FAILED");

    let (_, body) = raw(
        &t,
        "application/json",
        br#"{"query": "{ batteries(first: \"ten\") { totalCount } }"}"#.to_vec(),
    )
    .await;
    assert_eq!(code(&body), "GRAPHQL_VALIDATION_FAILED");

    let (_, body) = raw(
        &t,
        "application/json",
        br#"{"query": "query($n: Int) { batteries(first: $n) { totalCount } }", "variables": {"n": "x"}}"#.to_vec(),
    )
    .await;
    assert_ne!(
        code(&body),
        "<none>",
        "bad variable type has a code: {body}"
    );
    assert_ne!(code(&body), "INTERNAL");

    // Larger than the limit, declared or streamed.
    let big = format!(
        r#"{{"query": "{{ clients {{ totalCount }} }}", "pad": "{}"}}"#,
        "x".repeat(10_000)
    );
    let (status, body) = raw(&t, "application/json", big.into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&body), "PAYLOAD_TOO_LARGE");

    // Too deep: a selection nested past the limit.
    let mut deep = String::from(
        "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name ",
    );
    deep.push_str(&"} ".repeat(24));
    deep.push('}');
    let (_, body) = raw(
        &t,
        "application/json",
        serde_json::to_vec(&json!({ "query": deep })).unwrap(),
    )
    .await;
    assert_eq!(code(&body), "QUERY_TOO_DEEP", "{body}");

    // Overlong strings in arguments are refused by validation, not the database.
    let resp = t
        .gql(
            "query($s: String) { batteries(filter: {serialContains: $s}) { totalCount } }",
            json!({ "s": "y".repeat(101) }),
        )
        .await;
    assert_eq!(code(&resp), "VALIDATION_FAILED");

    // Still serving.
    let ok = t.data("{ clients { totalCount } }", json!({})).await;
    assert_eq!(ok["clients"]["totalCount"], 0);
}

#[tokio::test]
async fn too_complex_queries_are_refused() {
    let t = TestApp::with_config(Backend::Sqlite, |c| c.limits.max_query_complexity = 20).await;
    let resp = t
        .gql(
            "{ clients { edges { node { id name industry country timeZone tier createdAt updatedAt sites { totalCount edges { node { id name latitude longitude } } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&resp), "QUERY_TOO_COMPLEX", "{resp}");
}
