//! Identity and access control through the real HTTP routes: anonymous
//! callers get nothing, password + TOTP sign-in with lockout, sessions
//! (refresh rotation, logout, disabled users), API keys, the role matrix of
//! the user manual, the audit chain, and rate limits.

mod common;

use common::{ADMIN_KEY, Backend, TestApp, create_chain};
use poem::http::StatusCode;
use serde_json::{Value, json};

async fn post_json(t: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = t.client.post(path).body_json(&body).send().await;
    let status = resp.0.status();
    let text = resp.0.into_body().into_string().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn login(t: &TestApp, body: Value) -> (StatusCode, Value) {
    post_json(t, "/auth/login", body).await
}

fn code(v: &Value) -> &str {
    v["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

/// Creates a user with `role` and scope, and returns an access token.
async fn user_token(
    t: &TestApp,
    email: &str,
    role: &str,
    clients: Option<Vec<&str>>,
    sites: Option<Vec<&str>>,
) -> String {
    t.data(
        "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
        json!({ "i": { "email": email, "role": role, "clientIds": clients, "siteIds": sites, "password": "a long enough password" } }),
    )
    .await;
    let (status, body) = login(
        t,
        json!({ "email": email, "password": "a long enough password" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn anonymous_and_forged_credentials_are_refused() {
    let t = TestApp::new(Backend::Sqlite).await;
    for (path, auth) in [
        ("/graphql", None),
        ("/graphql", Some("Bearer nope")),
        ("/graphql", Some("Bearer tba_forged")),
        ("/graphql", Some("Bearer tbk_1_forged")),
        ("/graphql", Some("Basic dXNlcjpwYXNz")),
        ("/ingest", None),
    ] {
        let mut req = t
            .client
            .post(path)
            .content_type("application/json")
            .body(r#"{"query":"{ clients(first: 1) { totalCount } }"}"#);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await;
        assert_eq!(resp.0.status(), StatusCode::UNAUTHORIZED, "{path} {auth:?}");
        assert_eq!(resp.0.headers()["www-authenticate"], "Bearer");
        let body: Value =
            serde_json::from_str(&resp.0.into_body().into_string().await.unwrap()).unwrap();
        assert_eq!(code(&body), "UNAUTHENTICATED");
    }
    let export = t.client.get("/audit/export").send().await;
    assert_eq!(export.0.status(), StatusCode::UNAUTHORIZED);
}

async fn password_totp_and_lockout(t: TestApp) {
    t.data(
        "mutation { createUser(input: {email: \"Ana@Example.com\", role: OBSERVER, password: \"correct horse battery\"}) { id email } }",
        json!({}),
    )
    .await;
    // Wrong password, unknown account: the same answer.
    let (status, body) = login(
        &t,
        json!({ "email": "ana@example.com", "password": "wrong password!!" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "INVALID_CREDENTIALS");
    let (_, unknown) = login(
        &t,
        json!({ "email": "nobody@example.com", "password": "wrong password!!" }),
    )
    .await;
    assert_eq!(
        unknown["errors"][0]["message"],
        body["errors"][0]["message"]
    );

    let (status, tokens) = login(
        &t,
        json!({ "email": "ANA@example.com ", "password": "correct horse battery" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let viewer = t
        .data_as(
            &access,
            "{ viewer { role user { email totpEnabled } } }",
            json!({}),
        )
        .await;
    assert_eq!(viewer["viewer"]["role"], "OBSERVER");
    assert_eq!(viewer["viewer"]["user"]["email"], "ana@example.com");

    // TOTP enrolment: a code from the secret confirms it and yields recovery codes.
    let enrol = t
        .data_as(
            &access,
            "mutation { enrollTotp { secret otpauthUri } }",
            json!({}),
        )
        .await;
    let secret = enrol["enrollTotp"]["secret"].as_str().unwrap().to_owned();
    assert!(
        enrol["enrollTotp"]["otpauthUri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let current =
        trackingbms_api::auth::password::current_totp(&secret, "ana@example.com").unwrap();
    let wrong = format!("{:06}", (current.parse::<u32>().unwrap() + 1) % 1_000_000);
    assert_eq!(
        t.error_code_as(
            &access,
            "mutation($c: String!) { confirmTotp(code: $c) }",
            json!({ "c": wrong })
        )
        .await,
        "VALIDATION_FAILED"
    );
    let codes = t
        .data_as(
            &access,
            "mutation($c: String!) { confirmTotp(code: $c) }",
            json!({ "c": current }),
        )
        .await["confirmTotp"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(codes.len(), 10);

    let creds = json!({ "email": "ana@example.com", "password": "correct horse battery" });
    let (status, body) = login(&t, creds.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "TOTP_REQUIRED")
    );
    let mut with_code = creds.clone();
    with_code["totpCode"] =
        json!(trackingbms_api::auth::password::current_totp(&secret, "ana@example.com").unwrap());
    assert_eq!(login(&t, with_code).await.0, StatusCode::OK);
    let mut with_recovery = creds.clone();
    with_recovery["recoveryCode"] = codes[0].clone();
    assert_eq!(login(&t, with_recovery.clone()).await.0, StatusCode::OK);
    let (status, body) = login(&t, with_recovery).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
        "a recovery code works once"
    );

    // Five failures in a row lock the account, even for the right password.
    for _ in 0..4 {
        let (status, _) = login(
            &t,
            json!({ "email": "ana@example.com", "password": "not the password" }),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let mut right = creds.clone();
    right["totpCode"] =
        json!(trackingbms_api::auth::password::current_totp(&secret, "ana@example.com").unwrap());
    let (status, body) = login(&t, right).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "ACCOUNT_LOCKED")
    );

    // Every attempt is in the audit log, failures included, with the address.
    let log = t
        .data("{ auditLog(first: 50, filter: {action: \"auth.login\"}) { entries { action result sourceIp } } }", json!({}))
        .await;
    let entries = log["auditLog"]["entries"].as_array().unwrap();
    let failures = entries.iter().filter(|e| e["result"] == "FAILURE").count();
    let successes = entries.iter().filter(|e| e["result"] == "SUCCESS").count();
    assert!(failures >= 7, "{log}");
    assert_eq!(successes, 3, "{log}");
}

async fn sessions_refresh_logout_and_disable(t: TestApp) {
    let created = t
        .data(
            "mutation { createUser(input: {email: \"tom@example.com\", role: TECHNICIAN, password: \"correct horse battery\"}) { id } }",
            json!({}),
        )
        .await;
    let user_id = created["createUser"]["id"].as_str().unwrap().to_owned();
    let creds = json!({ "email": "tom@example.com", "password": "correct horse battery" });
    let (_, first) = login(&t, creds.clone()).await;
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();

    // Refresh rotates; reusing the old refresh token signs the user out everywhere.
    let (status, second) = post_json(&t, "/auth/refresh", json!({ "refreshToken": refresh })).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_access = second["access_token"].as_str().unwrap().to_owned();
    t.data_as(&second_access, "{ viewer { role } }", json!({}))
        .await;
    let (status, _) = post_json(&t, "/auth/refresh", json!({ "refreshToken": refresh })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        t.gql_as_status(&second_access).await,
        StatusCode::UNAUTHORIZED,
        "reuse of a refresh token revokes the user's sessions"
    );

    // Logout ends that session only.
    let (_, a) = login(&t, creds.clone()).await;
    let (_, b) = login(&t, creds.clone()).await;
    let (a, b) = (
        a["access_token"].as_str().unwrap(),
        b["access_token"].as_str().unwrap(),
    );
    let out = t
        .client
        .post("/auth/logout")
        .header("authorization", format!("Bearer {a}"))
        .send()
        .await;
    assert_eq!(out.0.status(), StatusCode::NO_CONTENT);
    assert_eq!(t.gql_as_status(a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(t.gql_as_status(b).await, StatusCode::OK);

    // Disabling the user ends every session at once and refuses sign-in.
    t.data(
        "mutation($id: ID!) { updateUser(id: $id, input: {disabled: true}) { disabled } }",
        json!({ "id": user_id }),
    )
    .await;
    assert_eq!(t.gql_as_status(b).await, StatusCode::UNAUTHORIZED);
    assert_eq!(login(&t, creds).await.0, StatusCode::UNAUTHORIZED);
}

async fn api_keys_scoped_expiring_and_revocable(t: TestApp) {
    let a = create_chain(&t, "KA").await;
    create_chain(&t, "KB").await;
    let created = t
        .data(
            "mutation($c: ID!) { createApiKey(input: {name: \"ERP\", role: OBSERVER, clientIds: [$c]}) { key apiKey { id name role clientIds lastUsedAt } } }",
            json!({ "c": a[0] }),
        )
        .await;
    let key = created["createApiKey"]["key"].as_str().unwrap().to_owned();
    let key_id = created["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(key.starts_with("tbk_"));
    let seen = t
        .data_as(
            &key,
            "{ batteries(first: 10) { totalCount edges { node { serial } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        seen["batteries"]["totalCount"], 1,
        "the key sees its client only: {seen}"
    );
    assert_eq!(seen["batteries"]["edges"][0]["node"]["serial"], "SN-KA");
    assert_eq!(
        t.error_code_as(
            &key,
            "mutation { createClient(input: {name: \"no\"}) { id } }",
            json!({})
        )
        .await,
        "FORBIDDEN"
    );
    // The key is listed (never with its secret) and records its last use.
    let listed = t
        .data("{ apiKeys { id name lastUsedAt } }", json!({}))
        .await;
    assert_eq!(listed["apiKeys"][0]["id"], key_id);
    assert!(listed["apiKeys"][0]["lastUsedAt"].is_string(), "{listed}");
    assert!(!listed.to_string().contains(&key[key.len() - 20..]));

    // OAuth2 client credentials: the key's id and secret give an access token.
    let (client_id, secret) = key.rsplit_once('_').unwrap();
    let resp = t
        .client
        .post("/oauth/token")
        .content_type("application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={secret}"
        ))
        .send()
        .await;
    assert_eq!(resp.0.status(), StatusCode::OK);
    let token: Value =
        serde_json::from_str(&resp.0.into_body().into_string().await.unwrap()).unwrap();
    let access = token["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        t.data_as(&access, "{ viewer { role } }", json!({})).await["viewer"]["role"],
        "OBSERVER"
    );
    let bad = t
        .client
        .post("/oauth/token")
        .content_type("application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret=wrong"
        ))
        .send()
        .await;
    assert_eq!(bad.0.status(), StatusCode::UNAUTHORIZED);

    // Revocation ends the key and the sessions opened with it.
    t.data(
        "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
        json!({ "id": key_id }),
    )
    .await;
    assert_eq!(t.gql_as_status(&key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(t.gql_as_status(&access).await, StatusCode::UNAUTHORIZED);

    // A key whose expiry has passed is refused.
    let expiring = t
        .data(
            "mutation($at: DateTime!) { createApiKey(input: {name: \"short\", role: OBSERVER, expiresAt: $at}) { key } }",
            json!({ "at": (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339() }),
        )
        .await["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(t.gql_as_status(&expiring).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    assert_eq!(t.gql_as_status(&expiring).await, StatusCode::UNAUTHORIZED);
}

async fn audit_chain_detects_tampering(t: TestApp) {
    for i in 0..4 {
        create_chain(&t, &format!("AU{i}")).await;
    }
    let verify = "{ verifyAuditLog { ok checked unsealed firstBrokenId reason } }";
    let ok = t.data(verify, json!({})).await["verifyAuditLog"].clone();
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["checked"], 20);
    let entries = t
        .data(
            "{ auditLog(first: 20) { entries { id action actor } } }",
            json!({}),
        )
        .await["auditLog"]["entries"]
        .clone();
    assert_eq!(entries[0]["actor"], "api-key:bootstrap");
    let victim = entries[10]["id"].as_str().unwrap().to_owned();
    let row = |gid: &str| -> i64 {
        let text = String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, gid).unwrap(),
        )
        .unwrap();
        text.split_once(':').unwrap().1.parse().unwrap()
    };
    use sea_orm::ConnectionTrait;
    let db = &t.app.db;
    db.execute_unprepared(&format!(
        "UPDATE audit_log SET actor = 'someone-else' WHERE id = {}",
        row(&victim)
    ))
    .await
    .unwrap();
    let broken = t.data(verify, json!({})).await["verifyAuditLog"].clone();
    assert_eq!(broken["ok"], false);
    assert_eq!(broken["firstBrokenId"], victim.as_str(), "{broken}");
    assert!(broken["reason"].as_str().unwrap().contains("modified"));

    // Deleting a row breaks the link of the next one.
    let later = entries[3]["id"].as_str().unwrap().to_owned();
    let deleted = entries[4]["id"].as_str().unwrap().to_owned();
    db.execute_unprepared(&format!(
        "UPDATE audit_log SET actor = 'api-key:bootstrap' WHERE id = {}",
        row(&victim)
    ))
    .await
    .unwrap();
    db.execute_unprepared(&format!(
        "DELETE FROM audit_log WHERE id = {}",
        row(&deleted)
    ))
    .await
    .unwrap();
    let gap = t.data(verify, json!({})).await["verifyAuditLog"].clone();
    assert_eq!(gap["firstBrokenId"], later.as_str(), "{gap}");
    assert!(gap["reason"].as_str().unwrap().contains("deleted"));
}

on_both_backends!(
    password_totp_and_lockout,
    sessions_refresh_logout_and_disable,
    api_keys_scoped_expiring_and_revocable,
    audit_chain_detects_tampering
);

/// The permission matrix of the user manual (Administration), as documented
/// in `api/src/auth/policy.rs` and the README: each role tries each
/// operation on data inside its scope.
#[tokio::test]
async fn role_matrix() {
    let t = TestApp::new(Backend::Sqlite).await;
    let [c1, s1, _z1, b1, bat1] = create_chain(&t, "M1").await;
    let [c2, s2, ..] = create_chain(&t, "M2").await;
    let roles = [
        ("SUPER_ADMIN", None, None),
        ("CLIENT_ADMIN", Some(vec![c1.as_str()]), None),
        ("SITE_MANAGER", None, Some(vec![s1.as_str()])),
        ("TECHNICIAN", None, Some(vec![s1.as_str()])),
        ("OBSERVER", Some(vec![c1.as_str()]), None),
    ];
    // operation → the roles that may do it (SA, CA, SM, TECH, OBS).
    type Op = (&'static str, &'static str, [bool; 5]);
    let ops: [Op; 12] = [
        (
            "read fleet",
            "{ batteries(first: 5) { totalCount } }",
            [true, true, true, true, true],
        ),
        (
            "create client",
            "mutation($n: String!) { createClient(input: {name: $n}) { id } }",
            [true, false, false, false, false],
        ),
        (
            "edit client",
            "mutation($c: ID!, $n: String!) { updateClient(id: $c, input: {name: $n}) { id } }",
            [true, true, false, false, false],
        ),
        (
            "create site",
            "mutation($c: ID!, $n: String!) { createSite(input: {clientId: $c, name: $n}) { id } }",
            [true, true, false, false, false],
        ),
        (
            "create zone",
            "mutation($s: ID!, $n: String!) { createZone(input: {siteId: $s, name: $n}) { id } }",
            [true, true, true, false, false],
        ),
        (
            "create battery",
            "mutation($b: ID!, $n: String!) { createBattery(input: {bmsId: $b, serial: $n, chemistry: LFP, nominalCapacityAh: 100, nominalVoltageV: 48, installDate: \"2024-01-01\"}) { id } }",
            [true, true, true, false, false],
        ),
        (
            "submit telemetry",
            "mutation($bat: String!) { ingestSamples(samples: [{battery: $bat, ts: \"2026-01-01T00:00:00Z\", socPct: 50}]) { accepted } }",
            [true, true, true, true, false],
        ),
        (
            "create technician",
            "mutation($s: ID!, $e: String!) { createUser(input: {email: $e, role: TECHNICIAN, siteIds: [$s]}) { id } }",
            [true, true, true, false, false],
        ),
        (
            "list users",
            "{ users { id } }",
            [true, true, true, false, false],
        ),
        (
            "create API key",
            "mutation($s: ID!, $n: String!) { createApiKey(input: {name: $n, role: OBSERVER, siteIds: [$s]}) { key } }",
            [true, true, false, false, false],
        ),
        (
            "read audit log",
            "{ auditLog(first: 1) { entries { id } } }",
            [true, false, false, false, false],
        ),
        (
            "verify audit log",
            "{ verifyAuditLog { ok } }",
            [true, false, false, false, false],
        ),
    ];
    let mut table = Vec::new();
    for (i, (role, clients, sites)) in roles.iter().enumerate() {
        let email = format!("{}@matrix.test", role.to_lowercase());
        let token = user_token(&t, &email, role, clients.clone(), sites.clone()).await;
        for (name, query, allowed) in &ops {
            let unique = format!("{}-{}", role.to_lowercase(), name.replace(' ', "-"));
            let email = format!("{unique}@x.test");
            let vars = json!({ "c": c1, "s": s1, "b": b1, "bat": bat1, "n": unique, "e": email });
            let resp = t.gql_as(&token, query, vars).await;
            let got = resp.get("errors").is_none();
            if !got {
                assert_eq!(code(&resp), "FORBIDDEN", "{role} {name}: {resp}");
            }
            table.push(format!(
                "{role:<13} {name:<18} {}",
                if got { "allowed" } else { "denied" }
            ));
            assert_eq!(
                got,
                allowed[i],
                "{role} may{} {name}: {resp}",
                if allowed[i] { "" } else { " not" }
            );
        }
        // Outside the scope, objects do not exist (NOT_FOUND, not FORBIDDEN).
        if clients.is_some() || sites.is_some() {
            let other = t
                .gql_as(
                    &token,
                    "mutation($c: ID!) { updateClient(id: $c, input: {name: \"x\"}) { id } }",
                    json!({ "c": c2 }),
                )
                .await;
            let expected = if *role == "CLIENT_ADMIN" {
                "NOT_FOUND"
            } else {
                "FORBIDDEN"
            };
            assert_eq!(code(&other), expected, "{role}: {other}");
            let node = t
                .data_as(
                    &token,
                    "query($s: ID!) { node(id: $s) { id } }",
                    json!({ "s": s2 }),
                )
                .await;
            assert!(node["node"].is_null(), "{role} sees another client's site");
        }
    }
    println!("{}", table.join("\n"));
    // Each refusal is in the audit log, with the refused field.
    let denied = t
        .data("{ auditLog(first: 100, filter: {action: \"access.denied\"}) { entries { actor result after } } }", json!({}))
        .await;
    let entries = denied["auditLog"]["entries"].as_array().unwrap();
    let expected = ops
        .iter()
        .flat_map(|(_, _, a)| a.iter())
        .filter(|a| !**a)
        .count();
    assert_eq!(entries.len(), expected + 3, "{denied}");
    assert!(entries.iter().all(|e| e["result"] == "DENIED"));
    assert!(
        entries
            .iter()
            .any(|e| e["after"]["fields"][0] == "createClient")
    );
}

#[tokio::test]
async fn grants_stay_within_the_grantor_s_scope() {
    let t = TestApp::new(Backend::Sqlite).await;
    let [c1, s1, ..] = create_chain(&t, "G1").await;
    let [_c2, s2, ..] = create_chain(&t, "G2").await;
    let manager = user_token(
        &t,
        "sm@grant.test",
        "SITE_MANAGER",
        None,
        Some(vec![s1.as_str()]),
    )
    .await;
    let create = "mutation($r: Role!, $s: [ID!], $c: [ID!]) { createUser(input: {email: \"new@grant.test\", role: $r, siteIds: $s, clientIds: $c}) { id } }";
    // A site manager cannot create a peer, nor reach another site or the client.
    for (vars, expected) in [
        (json!({ "r": "SITE_MANAGER", "s": [s1] }), "FORBIDDEN"),
        (json!({ "r": "TECHNICIAN", "s": [s2] }), "FORBIDDEN"),
        (json!({ "r": "OBSERVER", "c": [c1] }), "FORBIDDEN"),
        (json!({ "r": "OBSERVER" }), "FORBIDDEN"),
        (
            json!({ "r": "TECHNICIAN", "s": [s1], "c": [c1] }),
            "VALIDATION_FAILED",
        ),
    ] {
        assert_eq!(
            t.error_code_as(&manager, create, vars.clone()).await,
            expected,
            "{vars}"
        );
    }
    let ok = t
        .data_as(&manager, create, json!({ "r": "TECHNICIAN", "s": [s1] }))
        .await;
    assert!(ok["createUser"]["id"].is_string());
    // A super admin must span the tenant.
    assert_eq!(
        t.error_code(create, json!({ "r": "SUPER_ADMIN", "c": [c1] }))
            .await,
        "VALIDATION_FAILED"
    );
    // Nobody changes their own role.
    let me = t
        .data_as(&manager, "{ viewer { user { id } } }", json!({}))
        .await["viewer"]["user"]["id"]
        .clone();
    assert_eq!(
        t.error_code_as(
            &manager,
            "mutation($id: ID!) { updateUser(id: $id, input: {role: SUPER_ADMIN}) { id } }",
            json!({ "id": me })
        )
        .await,
        "FORBIDDEN"
    );
}

#[tokio::test]
async fn request_rate_is_limited_per_caller() {
    let t = TestApp::with_config(Backend::Sqlite, |c| c.limits.requests_per_minute = 5).await;
    for _ in 0..5 {
        assert_eq!(t.gql_as_status(ADMIN_KEY).await, StatusCode::OK);
    }
    let resp = t
        .post("/graphql")
        .body_json(&json!({ "query": "{ viewer { role } }" }))
        .send()
        .await;
    assert_eq!(resp.0.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.0.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value =
        serde_json::from_str(&resp.0.into_body().into_string().await.unwrap()).unwrap();
    assert_eq!(code(&body), "RATE_LIMITED");
}

/// With Redis, replicas share one budget per caller.
#[tokio::test]
async fn rate_limit_is_shared_through_redis() {
    let prefix = format!("trackingbms:test-rl:{}", rand::random::<u64>());
    let redis = trackingbms_api::fixtures::redis_url();
    let a = TestApp::with_config(Backend::Postgres, |c| {
        c.limits.requests_per_minute = 6;
        c.limits.redis_key_prefix = prefix.clone();
        c.redis_url = Some(redis.clone());
    })
    .await;
    let url = a.app.config.database_url.clone();
    let b = TestApp::with_config(Backend::Postgres, |c| {
        c.limits.requests_per_minute = 6;
        c.limits.redis_key_prefix = prefix.clone();
        c.redis_url = Some(redis.clone());
        c.database_url = url;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(a.gql_as_status(ADMIN_KEY).await, StatusCode::OK);
        assert_eq!(b.gql_as_status(ADMIN_KEY).await, StatusCode::OK);
    }
    // The window may roll over between the calls above and these: then the
    // budget restarts, and the seventh call of the new window is refused.
    let mut refused = false;
    for _ in 0..7 {
        if a.gql_as_status(ADMIN_KEY).await == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
    }
    assert!(refused, "the replicas shared one budget");
    assert_eq!(
        b.gql_as_status(ADMIN_KEY).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn introspection_and_graphiql_can_be_turned_off() {
    let t = TestApp::with_config(Backend::Sqlite, |c| {
        c.http.introspection = false;
        c.http.graphiql = false;
    })
    .await;
    let resp = t
        .gql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert!(resp["data"]["__schema"].is_null(), "{resp}");
    assert_ne!(
        t.client.get("/graphql").send().await.0.status(),
        StatusCode::OK
    );
    let on = TestApp::new(Backend::Sqlite).await;
    assert_eq!(
        on.client.get("/graphql").send().await.0.status(),
        StatusCode::OK
    );
    let ok = on
        .gql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(ok["data"]["__schema"]["queryType"]["name"], "Query");
}

#[tokio::test]
async fn audit_export_has_every_entry() {
    let t = TestApp::new(Backend::Sqlite).await;
    create_chain(&t, "EX").await;
    let resp = t
        .client
        .get("/audit/export?format=csv")
        .header("authorization", common::admin_bearer())
        .send()
        .await;
    assert_eq!(resp.0.status(), StatusCode::OK);
    assert!(
        resp.0.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = resp.0.into_body().into_string().await.unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let actions: Vec<String> = rows.records().map(|r| r.unwrap()[3].to_owned()).collect();
    assert_eq!(
        actions,
        [
            "client.create",
            "site.create",
            "zone.create",
            "bms.create",
            "battery.create"
        ]
    );
    let ndjson = t
        .client
        .get("/audit/export")
        .header("authorization", common::admin_bearer())
        .send()
        .await;
    let text = ndjson.0.into_body().into_string().await.unwrap();
    assert_eq!(text.lines().count(), 5);
    let observer = user_token(&t, "obs@export.test", "OBSERVER", None, None).await;
    let denied = t
        .client
        .get("/audit/export")
        .header("authorization", format!("Bearer {observer}"))
        .send()
        .await;
    assert_eq!(denied.0.status(), StatusCode::FORBIDDEN);
}
