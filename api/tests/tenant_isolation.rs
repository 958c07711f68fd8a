//! Tenant isolation, generated from the served schema: tenant B has a fleet,
//! users, keys and telemetry; tenant A's super admin then calls every root
//! query, mutation and subscription of the schema (read by introspection,
//! so a field added later is covered without editing this test), passing
//! B's ids wherever an id goes. Nothing of B may appear in any answer, no
//! event of B may reach A's subscriptions, and B's data must be unchanged.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ADMIN_KEY, TestApp};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use trackingbms_api::auth::Principal;
use trackingbms_api::auth::policy::Grant;

const TYPE_REF: &str =
    "kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

/// Strings that only tenant B's data contains.
const MARKERS: [&str; 2] = ["secret-b", "secretb"];

struct Schema {
    types: BTreeMap<String, Value>,
    query: String,
    mutation: String,
    subscription: String,
}

async fn introspect(t: &TestApp) -> Schema {
    let q = format!(
        "{{ __schema {{ queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }}
           types {{ kind name
             fields(includeDeprecated: true) {{ name args {{ name defaultValue type {{ {TYPE_REF} }} }} type {{ {TYPE_REF} }} }}
             inputFields {{ name defaultValue type {{ {TYPE_REF} }} }}
             enumValues {{ name }} }} }} }}"
    );
    let data = t.data(&q, json!({})).await;
    let s = &data["__schema"];
    Schema {
        types: s["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
            .collect(),
        query: s["queryType"]["name"].as_str().unwrap().to_owned(),
        mutation: s["mutationType"]["name"].as_str().unwrap().to_owned(),
        subscription: s["subscriptionType"]["name"].as_str().unwrap().to_owned(),
    }
}

/// Strips NON_NULL / LIST wrappers: (named type, is list).
fn named(ty: &Value) -> (&str, bool) {
    let mut t = ty;
    let mut list = false;
    while t["name"].is_null() {
        if t["kind"] == "LIST" {
            list = true;
        }
        t = &t["ofType"];
    }
    (t["name"].as_str().unwrap(), list)
}

fn required(ty: &Value) -> bool {
    ty["kind"] == "NON_NULL"
}

/// A field that cannot be selected without arguments.
fn needs_args(field: &Value) -> bool {
    field["args"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| required(&a["type"]))
}

/// Tenant B's global ids by type name.
type Ids = BTreeMap<&'static str, String>;

/// Which of B's objects an id argument or field called `name` stands for;
/// `None` for a bare `id`, which is tried with every one of B's ids.
fn kind_of(name: &str, field: &str) -> Option<&'static str> {
    let n = name.to_lowercase();
    let f = field.to_lowercase();
    for (needle, kind) in [
        ("battery", "Battery"),
        ("bms", "Bms"),
        ("zone", "Zone"),
        ("site", "Site"),
        ("client", "Client"),
        ("user", "User"),
        ("apikey", "ApiKey"),
        ("plugin", "Plugin"),
    ] {
        if n.contains(needle) || (n == "id" && f.contains(needle)) {
            return Some(kind);
        }
    }
    None
}

/// A value of `ty` for argument / input field `name` of root field `field`,
/// with B's ids wherever an id goes (`bare_id` for a bare `id`).
fn value(
    s: &Schema,
    ty: &Value,
    name: &str,
    field: &str,
    ids: &Ids,
    bare_id: &str,
    depth: usize,
) -> Value {
    let (type_name, list) = named(ty);
    let one = match type_name {
        "ID" => Value::String(kind_of(name, field).map_or(bare_id.to_owned(), |k| ids[k].clone())),
        // A string that names a battery takes B's battery id.
        "String" if name.to_lowercase().contains("battery") => {
            Value::String(ids["Battery"].clone())
        }
        "String" => Value::String(format!("probe-{name}")),
        "Int" => json!(1),
        "Float" => json!(1.0),
        "Boolean" => json!(false),
        "DateTime" => json!("2026-01-01T00:00:00Z"),
        "NaiveDate" => json!("2024-01-01"),
        "JSON" => json!({}),
        other => {
            let t = &s.types[other];
            match t["kind"].as_str().unwrap() {
                "ENUM" => t["enumValues"][0]["name"].clone(),
                "INPUT_OBJECT" if depth < 4 => {
                    let mut obj = Map::new();
                    for f in t["inputFields"].as_array().unwrap() {
                        let fname = f["name"].as_str().unwrap();
                        let (inner, _) = named(&f["type"]);
                        let wanted = (required(&f["type"]) && f["defaultValue"].is_null())
                            || inner == "ID"
                            || kind_of(fname, field).is_some();
                        if wanted {
                            obj.insert(
                                fname.to_owned(),
                                value(s, &f["type"], fname, field, ids, bare_id, depth + 1),
                            );
                        }
                    }
                    Value::Object(obj)
                }
                _ => Value::Null,
            }
        }
    };
    if list { json!([one]) } else { one }
}

/// Every scalar reachable from `type_name` (fields without required
/// arguments), a few levels deep.
fn selection(s: &Schema, type_name: &str, depth: usize) -> String {
    let t = &s.types[type_name];
    match t["kind"].as_str().unwrap() {
        "SCALAR" | "ENUM" => String::new(),
        "UNION" => "{ __typename }".into(),
        _ => {
            let mut parts = vec!["__typename".to_owned()];
            for f in t["fields"].as_array().into_iter().flatten() {
                if needs_args(f) {
                    continue;
                }
                let (inner, _) = named(&f["type"]);
                let kind = s.types[inner]["kind"].as_str().unwrap();
                let fname = f["name"].as_str().unwrap();
                if kind == "SCALAR" || kind == "ENUM" {
                    parts.push(fname.to_owned());
                } else if depth < 5 {
                    parts.push(format!("{fname} {}", selection(s, inner, depth + 1)));
                }
            }
            format!("{{ {} }}", parts.join(" "))
        }
    }
}

/// One call per root field (and per B id for a bare `id` argument).
fn operations(s: &Schema, root: &str, keyword: &str, ids: &Ids) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for f in s.types[root]["fields"].as_array().unwrap() {
        let field = f["name"].as_str().unwrap();
        let args = f["args"].as_array().unwrap();
        // Files travel only in multipart requests; an upload names no id.
        if args.iter().any(|a| named(&a["type"]).0 == "Upload") {
            continue;
        }
        let bare = args
            .iter()
            .any(|a| a["name"] == "id" && kind_of("id", field).is_none());
        let tries: Vec<&String> = if bare {
            ids.values().collect()
        } else {
            vec![&ids["Client"]]
        };
        for bare_id in tries {
            let mut decls = Vec::new();
            let mut uses = Vec::new();
            let mut vars = Map::new();
            for a in args {
                let name = a["name"].as_str().unwrap();
                let (inner, _) = named(&a["type"]);
                let ty_kind = s.types[inner]["kind"].as_str().unwrap();
                let takes_id =
                    inner == "ID" || kind_of(name, field).is_some() || ty_kind == "INPUT_OBJECT";
                let must = required(&a["type"]) && a["defaultValue"].is_null();
                if !(must || takes_id) {
                    continue;
                }
                decls.push(format!("${name}: {}", type_string(&a["type"])));
                uses.push(format!("{name}: ${name}"));
                vars.insert(
                    name.to_owned(),
                    value(s, &a["type"], name, field, ids, bare_id, 0),
                );
            }
            let (ret, _) = named(&f["type"]);
            let sel = selection(s, ret, 0);
            let decl = if decls.is_empty() {
                String::new()
            } else {
                format!("({})", decls.join(", "))
            };
            let call = if uses.is_empty() {
                String::new()
            } else {
                format!("({})", uses.join(", "))
            };
            out.push((
                field.to_owned(),
                format!("{keyword} {decl} {{ {field}{call} {sel} }}"),
                Value::Object(vars),
            ));
        }
    }
    out
}

fn type_string(ty: &Value) -> String {
    match ty["kind"].as_str().unwrap() {
        "NON_NULL" => format!("{}!", type_string(&ty["ofType"])),
        "LIST" => format!("[{}]", type_string(&ty["ofType"])),
        _ => ty["name"].as_str().unwrap().to_owned(),
    }
}

/// `v` without its `message` fields (human text that may quote the input).
fn without_messages(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| k != "message")
                .map(|(k, v)| (k, without_messages(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_messages).collect()),
        other => other,
    }
}

fn assert_no_leak(what: &str, answer: &str) {
    let lower = answer.to_lowercase();
    for m in MARKERS {
        if let Some(at) = lower.find(m) {
            let start = at.saturating_sub(300);
            let excerpt: String = answer.chars().skip(start).take(600).collect();
            panic!("{what} leaked tenant B's data: …{excerpt}…");
        }
    }
}

/// Uploads the example KPI plugin as `token` and enables it tenant-wide.
async fn upload_plugin(t: &TestApp, token: &str) -> String {
    let v = t
        .upload_plugin(token, common::plugin_component("kpi-energy"), "id")
        .await;
    let id = v["data"]["uploadPlugin"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    t.data_as(
        token,
        "mutation($id: ID!) { enablePlugin(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    id
}

/// B's fleet, accounts and keys as B sees them.
async fn snapshot(t: &TestApp, b_key: &str) -> Value {
    t.data_as(
        b_key,
        "{ clients(first: 100) { edges { node { id name sites(first: 100) { edges { node { id name zones(first: 100) { edges { node { id name } } } } } } } } }
           batteries(first: 100) { edges { node { id serial status bmsId: bms { id name } } } }
           users { email role disabled } apiKeys { name revokedAt } plugins { id name enabledIn { clientId siteId } } }",
        json!({}),
    )
    .await
}

async fn isolation(t: TestApp) {
    use sea_orm::{ActiveModelTrait, Set};
    // Tenant B with everything a tenant can have.
    let tenant_b = entities::tenant::ActiveModel {
        slug: Set("tenant-b".into()),
        name: Set("Tenant B".into()),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&t.app.db)
    .await
    .unwrap();
    let b_admin = Principal::operator(tenant_b.id, "test:tenant-b");
    let grant = Grant {
        role: entities::enums::Role::SuperAdmin,
        clients: None,
        sites: None,
    };
    let (_, b_key) = trackingbms_api::auth::api_keys::create(
        &t.app.db,
        &b_admin,
        "secret-b-admin-key",
        grant,
        None,
    )
    .await
    .unwrap();
    let mut ids: Ids = BTreeMap::new();
    let mut parent = Value::Null;
    for (kind, q) in [
        (
            "Client",
            "mutation { createClient(input: {name: \"SECRET-B client\"}) { id } }",
        ),
        (
            "Site",
            "mutation($p: ID!) { createSite(input: {clientId: $p, name: \"SECRET-B site\"}) { id } }",
        ),
        (
            "Zone",
            "mutation($p: ID!) { createZone(input: {siteId: $p, name: \"SECRET-B zone\"}) { id } }",
        ),
        (
            "Bms",
            "mutation($p: ID!) { createBms(input: {zoneId: $p, name: \"SECRET-B bms\"}) { id } }",
        ),
        (
            "Battery",
            "mutation($p: ID!) { createBattery(input: {bmsId: $p, serial: \"SECRETB-1\", chemistry: LFP, nominalCapacityAh: 100, nominalVoltageV: 48, installDate: \"2024-01-01\"}) { id } }",
        ),
    ] {
        let data = t.data_as(&b_key, q, json!({ "p": parent })).await;
        let id = data.as_object().unwrap().values().next().unwrap()["id"].clone();
        ids.insert(kind, id.as_str().unwrap().to_owned());
        parent = id;
    }
    let user = t
        .data_as(&b_key, "mutation { createUser(input: {email: \"secret-b-user@b.test\", role: OBSERVER, password: \"secret-b password\"}) { id } }", json!({}))
        .await;
    ids.insert(
        "User",
        user["createUser"]["id"].as_str().unwrap().to_owned(),
    );
    let key = t
        .data_as(&b_key, "mutation { createApiKey(input: {name: \"secret-b erp\", role: OBSERVER}) { apiKey { id } } }", json!({}))
        .await;
    ids.insert(
        "ApiKey",
        key["createApiKey"]["apiKey"]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    ids.insert("Plugin", upload_plugin(&t, &b_key).await);
    t.data_as(
        &b_key,
        "mutation($b: String!) { ingestSamples(samples: [{battery: $b, ts: \"2026-01-01T00:00:00Z\", socPct: 42.5, voltageV: 51.0}]) { stored } }",
        json!({ "b": ids["Battery"] }),
    )
    .await;
    // Tenant A has a fleet of its own.
    common::create_chain(&t, "A").await;
    let before = snapshot(&t, &b_key).await;

    let schema = introspect(&t).await;
    let queries = operations(&schema, &schema.query, "query", &ids);
    let mutations = operations(&schema, &schema.mutation, "mutation", &ids);
    let subscriptions = operations(&schema, &schema.subscription, "subscription", &ids);
    assert!(queries.len() >= 10 && mutations.len() >= 20 && !subscriptions.is_empty());

    for (field, query, vars) in queries.iter().chain(&mutations) {
        let resp = t.gql_as(ADMIN_KEY, query, vars.clone()).await;
        let text = resp.to_string();
        assert_no_leak(field, &text);
        // Errors and rejection messages may echo an id that was sent; data
        // never holds one of B's otherwise.
        let data = without_messages(resp["data"].clone()).to_string();
        for id in ids.values() {
            assert!(
                !data.contains(id.as_str()),
                "{field} returned B's object {id}: {data}"
            );
        }
        if let Some(errors) = resp["errors"].as_array() {
            for e in errors {
                let code = e["extensions"]["code"].as_str().unwrap_or("<none>");
                assert!(
                    ![
                        "INTERNAL",
                        "GRAPHQL_VALIDATION_FAILED",
                        "GRAPHQL_PARSE_FAILED",
                        "<none>"
                    ]
                    .contains(&code),
                    "{field}: the generated call itself is broken: {text}\n{query}"
                );
            }
        }
    }

    // Subscriptions: scoped to B's objects they fail or stay silent; an
    // unscoped one of A receives nothing of B's telemetry.
    let a_admin = t.principal(ADMIN_KEY).await;
    let mut streams = Vec::new();
    for (field, query, vars) in &subscriptions {
        streams.push((
            field.clone(),
            t.subscribe_as(a_admin.clone(), query, vars.clone()),
        ));
    }
    for f in schema.types[&schema.subscription]["fields"]
        .as_array()
        .unwrap()
    {
        let field = f["name"].as_str().unwrap();
        if needs_args(f) {
            continue;
        }
        let plain = format!(
            "subscription {{ {field} {} }}",
            selection(&schema, named(&f["type"]).0, 0)
        );
        streams.push((
            format!("{field} (unscoped)"),
            t.subscribe_as(a_admin.clone(), &plain, json!({})),
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.data_as(
        &b_key,
        "mutation($b: String!) { ingestSamples(samples: [{battery: $b, ts: \"2026-01-02T00:00:00Z\", socPct: 43.5}]) { stored } }",
        json!({ "b": ids["Battery"] }),
    )
    .await;
    for (field, mut stream) in streams {
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(400), stream.next()).await
        {
            let text = event.to_string();
            assert_no_leak(&field, &text);
            for id in ids.values() {
                assert!(
                    !text.contains(id.as_str()) || event.get("errors").is_some(),
                    "{field} delivered B's object: {text}"
                );
            }
            if event.get("errors").is_some() {
                break;
            }
        }
    }

    assert_eq!(
        snapshot(&t, &b_key).await,
        before,
        "tenant A changed tenant B's data"
    );
    let samples = t
        .data_as(&b_key, "query($b: ID!) { batteryMetrics(batteryId: $b, from: \"2000-01-01T00:00:00Z\", resolution: RAW, first: 0) { totalCount } }", json!({ "b": ids["Battery"] }))
        .await;
    assert_eq!(samples["batteryMetrics"]["totalCount"], 2);
    println!(
        "tenant isolation: {} query, {} mutation and {} subscription calls",
        queries.len(),
        mutations.len(),
        subscriptions.len()
    );
}

on_both_backends!(isolation);
