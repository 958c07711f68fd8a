//! Single sign-on against a real OpenID provider (npm `oidc-provider`,
//! started here): the whole authorization-code + PKCE flow through a
//! browser-like client, user creation and role mapping from groups, and the
//! ID-token checks (signature, audience, expiry, nonce) on tokens signed by
//! the provider's own key.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use trackingbms_api::config::OidcProviderConfig;
use trackingbms_api::{App, Config};

struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider(redirect_uri: &str) -> Provider {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/oidc-provider")
            .exists(),
        "oidc-provider is not installed: run scripts/setup-node.sh (scripts/test.sh does)"
    );
    let port = common::free_port();
    let mut child = Command::new("node")
        .current_dir(dir)
        .args(["provider.mjs", &port.to_string(), redirect_uri])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let ready: Value = serde_json::from_str(&line).expect("provider ready line");
    // The provider's development pages log to stdout: keep draining it.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    Provider {
        child,
        issuer: ready["issuer"].as_str().unwrap().to_owned(),
    }
}

struct Sso {
    app: App,
    base: String,
    provider: Provider,
    _dir: tempfile::TempDir,
}

async fn start() -> Sso {
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let redirect = format!("{base}/auth/oidc/test/callback");
    let provider = start_provider(&redirect);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        bind: format!("127.0.0.1:{port}").parse().unwrap(),
        ..Config::default()
    };
    config.auth.admin_api_key = Some(common::ADMIN_KEY.into());
    config.auth.oidc = vec![OidcProviderConfig {
        name: "test".into(),
        issuer_url: provider.issuer.clone(),
        client_id: "trackingbms".into(),
        client_secret: Some("trackingbms-secret".into()),
        redirect_url: redirect,
        tenant: "default".into(),
        scopes: vec!["email".into(), "profile".into(), "groups".into()],
        groups_claim: "groups".into(),
        role_mapping: [
            ("bms-admins".to_owned(), "SUPER_ADMIN".to_owned()),
            ("bms-techs".to_owned(), "TECHNICIAN".to_owned()),
        ]
        .into_iter()
        .collect(),
        default_role: None,
    }];
    let app = App::build(config).await.unwrap();
    tokio::spawn(app.clone().serve(std::future::pending()));
    for _ in 0..100 {
        if reqwest::get(format!("{base}/health")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Sso {
        app,
        base,
        provider,
        _dir: dir,
    }
}

/// Signs `account` in like a browser: our login redirect, the provider's
/// login and consent pages, back to our callback. Returns the callback's
/// status and body.
async fn browser_login(sso: &Sso, account: &str) -> (u16, Value) {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login_page = browser
        .get(format!("{}/auth/oidc/test/login", sso.base))
        .send()
        .await
        .unwrap();
    let interaction = login_page.url().clone();
    assert!(
        interaction.path().starts_with("/interaction/"),
        "the provider shows its login page: {interaction}"
    );
    let consent = browser
        .post(interaction)
        .form(&[("prompt", "login"), ("login", account), ("password", "any")])
        .send()
        .await
        .unwrap();
    let consent_url = consent.url().clone();
    let done = if consent_url.path().starts_with("/interaction/") {
        browser
            .post(consent_url)
            .form(&[("prompt", "consent")])
            .send()
            .await
            .unwrap()
    } else {
        consent
    };
    assert!(
        done.url()
            .as_str()
            .starts_with(&format!("{}/auth/oidc/test/callback", sso.base)),
        "back at our callback: {}",
        done.url()
    );
    let status = done.status().as_u16();
    (status, done.json().await.unwrap_or(Value::Null))
}

async fn viewer(sso: &Sso, token: &str) -> Value {
    let query = "{ viewer { role user { email sso displayName } } }";
    common::graphql_over_http(&sso.base, token, query, json!({})).await
}

async fn users(sso: &Sso) -> Vec<Value> {
    let query = "{ users { id email role sso } }";
    let resp = common::graphql_over_http(&sso.base, common::ADMIN_KEY, query, json!({})).await;
    resp["data"]["users"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_login_creates_and_maps_users() {
    let sso = start().await;
    let (status, tokens) = browser_login(&sso, "ana").await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let me = viewer(&sso, access).await;
    assert_eq!(me["data"]["viewer"]["role"], "SUPER_ADMIN", "{me}");
    assert_eq!(me["data"]["viewer"]["user"]["email"], "ana@example.com");
    assert_eq!(me["data"]["viewer"]["user"]["sso"], true);
    assert_eq!(me["data"]["viewer"]["user"]["displayName"], "Ana Admin");

    // Signing in again finds the same account.
    let (status, _) = browser_login(&sso, "ana").await;
    assert_eq!(status, 200);
    let (status, tom) = browser_login(&sso, "tom").await;
    assert_eq!(status, 200);
    let me = viewer(&sso, tom["access_token"].as_str().unwrap()).await;
    assert_eq!(me["data"]["viewer"]["role"], "TECHNICIAN");
    let accounts = users(&sso).await;
    assert_eq!(accounts.len(), 2, "{accounts:?}");
    assert!(accounts.iter().all(|u| u["sso"] == true));

    // A user in no mapped group gets no role.
    let (status, eve) = browser_login(&sso, "eve").await;
    assert_eq!(status, 403, "{eve}");
    assert_eq!(eve["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(users(&sso).await.len(), 2);

    // A callback cannot be replayed with a used or made-up state.
    let replay = reqwest::get(format!(
        "{}/auth/oidc/test/callback?code=x&state=made-up",
        sso.base
    ))
    .await
    .unwrap();
    assert_eq!(replay.status().as_u16(), 401);

    // Successes and failures are audited.
    let query =
        "{ auditLog(first: 20, filter: {action: \"auth.login.oidc\"}) { entries { result } } }";
    let log = common::graphql_over_http(&sso.base, common::ADMIN_KEY, query, json!({})).await;
    let results: Vec<&str> = log["data"]["auditLog"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["FAILURE", "SUCCESS", "SUCCESS", "SUCCESS"]);
}

async fn mint(sso: &Sso, query: &str) -> String {
    reqwest::get(format!("{}/test/mint?{query}", sso.provider.issuer))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_are_checked() {
    let sso = start().await;
    let oidc = &sso.app.identity.oidc;
    let good = mint(&sso, "sub=ana&nonce=n-1").await;
    let claims = oidc
        .verify_id_token("test", &good, "n-1")
        .await
        .expect("a genuine token passes");
    assert_eq!(claims.subject, "ana");
    assert_eq!(claims.groups, ["bms-admins"]);

    // Tampered: the payload says someone else, the signature is the original.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["groups"] = json!(["bms-admins", "root"]);
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    let tampered = parts.join(".");
    let wrong_audience = mint(&sso, "sub=ana&nonce=n-1&aud=other-app").await;
    let expired = mint(&sso, "sub=ana&nonce=n-1&exp_in=-600").await;
    for (what, token, nonce) in [
        ("tampered", tampered.as_str(), "n-1"),
        ("wrong audience", wrong_audience.as_str(), "n-1"),
        ("expired", expired.as_str(), "n-1"),
        ("wrong nonce", good.as_str(), "n-2"),
        ("not a token", "abc.def", "n-1"),
    ] {
        let err = oidc.verify_id_token("test", token, nonce).await;
        assert!(err.is_err(), "{what} token accepted");
        let err = err.unwrap_err();
        assert_eq!(err.code().as_str(), "INVALID_CREDENTIALS", "{what}: {err}");
    }
}
