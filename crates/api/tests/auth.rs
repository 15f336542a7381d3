//! Token authentication, tenant isolation, the admin API and per-tenant
//! limits, end to end: the real server on 127.0.0.1 (port 0) in-process,
//! a real HTTP client, and the Debian `promtool` with a token in the URL.

use std::path::Path;
use std::time::Duration;

use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stratus_api::{AuthMode, ServerConfig};
use stratus_proto::prometheus as pb;

mod common;
use common::{Server, now_ms, snappy, start_with, ts};

/// Every GET read route, without its prefix.
const READS: &[&str] = &[
    "/api/v1/query?query=up",
    "/api/v1/query_range?query=up&start=1&end=2&step=1",
    "/api/v1/series?match[]=up",
    "/api/v1/labels",
    "/api/v1/label/__name__/values",
    "/api/v1/status/buildinfo",
    "/api/v1/metadata",
    "/api/v1/query_exemplars?query=up&start=1&end=2",
    "/api/v1/format_query?query=up",
    "/api/v1/parse_query?query=up",
    "/api/v1/status/config",
    "/api/v1/status/flags",
    "/api/v1/status/runtimeinfo",
    "/api/v1/status/walreplay",
    "/api/v1/status/tsdb",
    "/api/v1/targets",
    "/api/v1/targets/metadata",
    "/api/v1/rules",
    "/api/v1/alerts",
    "/api/v1/alertmanagers",
];
const PREFIXES: [&str; 3] = ["", "/prometheus", "/api/prom"];
const PUSHES: [&str; 3] = ["/api/v1/push", "/api/prom/push", "/api/v1/write"];

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str),
}

fn with_cred(rb: reqwest::RequestBuilder, c: Cred<'_>) -> reqwest::RequestBuilder {
    match c {
        Cred::None => rb,
        Cred::Bearer(t) => rb.bearer_auth(t),
        Cred::Basic(t) => rb.basic_auth("anyone", Some(t)),
    }
}

fn body_of(series: Vec<pb::TimeSeries>) -> Vec<u8> {
    snappy(
        &pb::WriteRequest {
            timeseries: series,
            metadata: Vec::new(),
        }
        .encode_to_vec(),
    )
}

impl Server {
    async fn push_as(
        &self,
        c: Cred<'_>,
        path: &str,
        series: Vec<pb::TimeSeries>,
    ) -> (StatusCode, String) {
        let rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(body_of(series));
        let r = with_cred(rb, c).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn get_as(&self, c: Cred<'_>, path_and_query: &str) -> (StatusCode, Value) {
        let rb = self.client.get(format!("{}{path_and_query}", self.base));
        let r = with_cred(rb, c).send().await.unwrap();
        let st = r.status();
        let text = r.text().await.unwrap();
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        let r = rb.send().await.unwrap();
        let st = r.status();
        let text = r.text().await.unwrap();
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn token_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("tokens").join(format!("{name}.token")))
        .unwrap()
        .trim()
        .to_string()
}

async fn start_token(dir: &Path) -> Server {
    start_with(ServerConfig {
        data_dir: dir.to_path_buf(),
        ..ServerConfig::default()
    })
    .await
}

/// Waits (bounded) until the server answers /ready.
async fn wait_ready(srv: &Server) {
    for _ in 0..100 {
        if let Ok(r) = srv.client.get(format!("{}/ready", srv.base)).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server not ready");
}

/// Creates tenant `id` and a token for it; returns the token.
async fn tenant_with_token(srv: &Server, admin: &str, id: &str, limits: Value) -> String {
    let (st, v) = srv
        .admin(
            admin,
            reqwest::Method::POST,
            "/api/v1/admin/tenants",
            Some(json!({"id": id, "limits": limits})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = srv
        .admin(
            admin,
            reqwest::Method::POST,
            &format!("/api/v1/admin/tenants/{id}/tokens"),
            Some(json!({"name": "t"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["data"]["token"].as_str().unwrap().to_string()
}

fn names(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = match &v["data"] {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                o => o.to_string(),
            })
            .collect(),
        Value::Object(o) => o["result"]
            .as_array()
            .map(|r| r.iter().map(|s| s["metric"].to_string()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_token(dir.path()).await;
    wait_ready(&srv).await;
    let good = token_file(dir.path(), "default");
    let admin = token_file(dir.path(), "admin");
    let bad = "stratus_0000000000000000000000000000000000000000000000000000000000000000";
    for p in PREFIXES {
        for r in READS {
            let path = format!("{p}{r}");
            for c in [
                Cred::None,
                Cred::Bearer(bad),
                Cred::Basic(bad),
                Cred::Basic(""),
            ] {
                let (st, v) = srv.get_as(c, &path).await;
                assert_eq!(st, StatusCode::UNAUTHORIZED, "{path}: {v}");
                assert_eq!(v["status"], "error", "{path}: {v}");
                assert_eq!(v["errorType"], "unauthorized");
            }
            // Admin tokens read no data.
            let (st, _) = srv.get_as(Cred::Bearer(&admin), &path).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{path}");
            for c in [Cred::Bearer(&good), Cred::Basic(&good)] {
                let (st, v) = srv.get_as(c, &path).await;
                assert_eq!(st, StatusCode::OK, "{path}: {v}");
            }
        }
    }
    let now = now_ms();
    // POST-only routes: remote read, OTLP, admin tsdb (data of a tenant).
    for path in [
        "/api/v1/read",
        "/prometheus/api/v1/read",
        "/api/prom/api/v1/read",
        "/otlp/v1/metrics",
        "/api/v1/otlp/v1/metrics",
        "/prometheus/otlp/v1/metrics",
        "/api/v1/admin/tsdb/delete_series?match[]=up",
        "/ingester/flush",
    ] {
        for c in [Cred::None, Cred::Bearer(bad), Cred::Basic(bad)] {
            let r = with_cred(
                srv.client
                    .post(format!("{}{path}", srv.base))
                    .body(Vec::<u8>::new()),
                c,
            )
            .send()
            .await
            .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
    }
    for p in PUSHES {
        for c in [Cred::None, Cred::Bearer(bad), Cred::Basic(bad)] {
            let r = with_cred(
                srv.client
                    .post(format!("{}{p}", srv.base))
                    .body(body_of(vec![ts(&[("__name__", "m")], &[(now, 1.0)])])),
                c,
            )
            .send()
            .await
            .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{p}");
            assert_eq!(
                r.headers()["www-authenticate"],
                "Basic realm=\"stratus\"",
                "{p}"
            );
        }
        for c in [Cred::Bearer(&good), Cred::Basic(&good)] {
            let (st, body) = srv
                .push_as(c, p, vec![ts(&[("__name__", "m")], &[(now, 1.0)])])
                .await;
            assert_eq!(st, StatusCode::NO_CONTENT, "{p}: {body}");
        }
    }
    // Admin API: no token / bad → 401, tenant token → 403.
    let r = srv
        .client
        .get(format!("{}/api/v1/admin/tenants", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (st, _) = srv
        .admin(bad, reqwest::Method::GET, "/api/v1/admin/tenants", None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = srv
        .admin(&good, reqwest::Method::GET, "/api/v1/admin/tenants", None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Health and metrics stay open.
    for p in ["/ready", "/health", "/metrics"] {
        let (st, _) = srv.get_as(Cred::None, p).await;
        assert_eq!(st, StatusCode::OK, "{p}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_token(dir.path()).await;
    wait_ready(&srv).await;
    let admin = token_file(dir.path(), "admin");
    let ta = tenant_with_token(&srv, &admin, "team-a", json!({})).await;
    let tb = tenant_with_token(&srv, &admin, "team-b", json!({})).await;
    let now = now_ms();
    let (st, _) = srv
        .push_as(
            Cred::Bearer(&ta),
            "/api/v1/push",
            vec![ts(
                &[("__name__", "a_metric"), ("only_a", "x"), ("who", "a")],
                &[(now - 1000, 1.0), (now, 1.0)],
            )],
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Metadata and an exemplar for each tenant.
    for (tok, name) in [(&ta, "a_metric"), (&tb, "b_metric")] {
        let mut series = ts(&[("__name__", name)], &[(now - 500, 1.0)]);
        series.exemplars.push(pb::Exemplar {
            labels: vec![pb::Label {
                name: "trace_id".into(),
                value: format!("trace-of-{name}"),
            }],
            value: 1.0,
            timestamp: now - 500,
        });
        let body = snappy(
            &pb::WriteRequest {
                timeseries: vec![series],
                metadata: vec![pb::MetricMetadata {
                    r#type: pb::metric_metadata::MetricType::Gauge as i32,
                    metric_family_name: name.into(),
                    help: format!("help of {name}"),
                    unit: String::new(),
                }],
            }
            .encode_to_vec(),
        );
        let r = srv
            .client
            .post(format!("{}/api/v1/push", srv.base))
            .bearer_auth(tok)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    // B tries to write into A through the header: ignored in token mode.
    let r = srv
        .client
        .post(format!("{}/api/v1/push", srv.base))
        .bearer_auth(&tb)
        .header("X-Scope-OrgID", "team-a")
        .body(body_of(vec![ts(
            &[("__name__", "b_metric"), ("only_b", "y"), ("who", "b")],
            &[(now - 1000, 2.0), (now, 2.0)],
        )]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let secs = now as f64 / 1000.0;
    let range = format!("&start={}&end={}&step=1", secs - 5.0, secs + 1.0);
    for (tok, mine, theirs, label, who) in [
        (&ta, "a_metric", "b_metric", "only_a", "a"),
        (&tb, "b_metric", "a_metric", "only_b", "b"),
    ] {
        for p in PREFIXES {
            for c in [Cred::Bearer(tok), Cred::Basic(tok)] {
                let q = |s: &str| format!("{p}{s}");
                let checks = [
                    q(&format!(
                        "/api/v1/query?query=%7B__name__%3D~%22.%2B%22%7D&time={secs}"
                    )),
                    q(&format!(
                        "/api/v1/query_range?query=%7B__name__%3D~%22.%2B%22%7D{range}"
                    )),
                    q("/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D"),
                    q("/api/v1/labels"),
                    q("/api/v1/label/__name__/values"),
                    q("/api/v1/label/who/values"),
                    // A forged header changes nothing.
                ];
                for path in &checks {
                    let (st, v) = srv.get_as(c, path).await;
                    assert_eq!(st, StatusCode::OK, "{path}: {v}");
                    let text = v.to_string();
                    assert!(!text.contains(theirs), "{path} leaked: {text}");
                    assert!(
                        !text.contains(if label == "only_a" {
                            "only_b"
                        } else {
                            "only_a"
                        }),
                        "{path} leaked: {text}"
                    );
                    assert!(
                        !text.contains(&format!("\"{}\"", if who == "a" { "b" } else { "a" })),
                        "{path} leaked: {text}"
                    );
                    let n = names(&v);
                    assert!(!n.is_empty(), "{path}: nothing of my own: {v}");
                    assert!(
                        text.contains(mine)
                            || text.contains(label)
                            || text.contains(&format!("\"{who}\"")),
                        "{path}: {text}"
                    );
                }
                let r = srv
                    .client
                    .get(format!("{}{p}/api/v1/label/__name__/values", srv.base))
                    .header(
                        "X-Scope-OrgID",
                        if who == "a" { "team-b" } else { "team-a" },
                    )
                    .bearer_auth(tok)
                    .send()
                    .await
                    .unwrap();
                let v: Value = r.json_or_text().await;
                assert_eq!(v["data"], json!([mine]), "{v}");

                // Cardinality, metadata, exemplars and remote read are
                // tenant data too.
                let (st, v) = srv.get_as(c, &q("/api/v1/status/tsdb")).await;
                assert_eq!(st, StatusCode::OK, "{v}");
                let text = v.to_string();
                assert!(text.contains(mine) && !text.contains(theirs), "{text}");
                let (st, v) = srv.get_as(c, &q("/api/v1/metadata")).await;
                assert_eq!(st, StatusCode::OK, "{v}");
                let text = v.to_string();
                assert!(text.contains(mine) && !text.contains(theirs), "{text}");
                let (st, v) = srv
                    .get_as(
                        c,
                        &q(&format!(
                            "/api/v1/query_exemplars?query=%7B__name__%3D~%22.%2B%22%7D&start={}&end={}",
                            secs - 5.0,
                            secs + 1.0
                        )),
                    )
                    .await;
                assert_eq!(st, StatusCode::OK, "{v}");
                let text = v.to_string();
                assert!(text.contains(mine) && !text.contains(theirs), "{text}");
                let read = pb::ReadRequest {
                    queries: vec![pb::Query {
                        start_timestamp_ms: now - 60_000,
                        end_timestamp_ms: now + 1000,
                        matchers: vec![pb::LabelMatcher {
                            r#type: pb::label_matcher::Type::Re as i32,
                            name: "__name__".into(),
                            value: ".+".into(),
                        }],
                        hints: None,
                    }],
                    accepted_response_types: vec![],
                };
                let r = with_cred(
                    srv.client
                        .post(format!("{}{p}/api/v1/read", srv.base))
                        .body(snappy(&read.encode_to_vec())),
                    c,
                )
                .send()
                .await
                .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let body = r.bytes().await.unwrap();
                let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                let resp = pb::ReadResponse::decode(raw.as_slice()).unwrap();
                let got: std::collections::BTreeSet<String> = resp.results[0]
                    .timeseries
                    .iter()
                    .flat_map(|t| t.labels.iter())
                    .filter(|l| l.name == "__name__")
                    .map(|l| l.value.clone())
                    .collect();
                assert_eq!(
                    got.into_iter().collect::<Vec<_>>(),
                    vec![mine.to_string()],
                    "remote read of {who}"
                );
            }
        }
    }
    srv.stop().await;
}

/// `Response::json` needs a reqwest feature the workspace does not enable.
trait JsonOrText {
    async fn json_or_text(self) -> Value;
}

impl JsonOrText for reqwest::Response {
    async fn json_or_text(self) -> Value {
        let t = self.text().await.unwrap();
        serde_json::from_str(&t).unwrap_or(Value::String(t))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lifecycle_and_registry_survives_restart() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let srv = start_token(dir.path()).await;
    wait_ready(&srv).await;
    let admin = token_file(dir.path(), "admin");
    let (st, v) = srv
        .admin(
            &admin,
            Method::POST,
            "/api/v1/admin/tenants",
            Some(json!({"id": "acme", "limits": {"max_series": 100}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"]["limits"]["max_series"], 100);
    let (st, _) = srv
        .admin(
            &admin,
            Method::POST,
            "/api/v1/admin/tenants",
            Some(json!({"id": "acme"})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = srv
        .admin(
            &admin,
            Method::POST,
            "/api/v1/admin/tenants",
            Some(json!({"id": "../x"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = srv
        .admin(
            &admin,
            Method::POST,
            "/api/v1/admin/tenants",
            Some(json!({"id": "y", "limits": {"bogus": 1}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, v) = srv
        .admin(
            &admin,
            Method::POST,
            "/api/v1/admin/tenants/acme/tokens",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let tok = v["data"]["token"].as_str().unwrap().to_string();
    let tok_id = v["data"]["id"].as_str().unwrap().to_string();
    assert!(tok.starts_with("stratus_"));
    let (st, _) = srv
        .push_as(
            Cred::Basic(&tok),
            "/api/v1/push",
            vec![ts(&[("__name__", "m")], &[(now_ms(), 1.0)])],
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Listing shows ids, never secrets.
    let (_, v) = srv
        .admin(&admin, Method::GET, "/api/v1/admin/tokens", None)
        .await;
    assert!(!v.to_string().contains(&tok));
    assert!(v.to_string().contains(&tok_id));
    let (st, v) = srv
        .admin(&admin, Method::GET, "/api/v1/admin/tenants/acme", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["tokens"], 1, "{v}");
    assert_eq!(v["data"]["effective_limits"]["max_series"], 100, "{v}");

    // Registry file: 0600, and it survives a restart.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let m = std::fs::metadata(dir.path().join("registry.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600);
    }
    srv.stop().await;
    let srv = start_token(dir.path()).await;
    wait_ready(&srv).await;
    assert_eq!(
        token_file(dir.path(), "admin"),
        admin,
        "no second bootstrap"
    );
    let (st, v) = srv
        .get_as(Cred::Bearer(&tok), "/api/v1/label/__name__/values")
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"], json!(["m"]));

    // Revoke → 401.
    let (st, _) = srv
        .admin(
            &admin,
            Method::DELETE,
            &format!("/api/v1/admin/tokens/{tok_id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = srv.get_as(Cred::Bearer(&tok), "/api/v1/labels").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = srv
        .admin(
            &admin,
            Method::DELETE,
            &format!("/api/v1/admin/tokens/{tok_id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Delete the tenant: its other tokens go too.
    let (_, v) = srv
        .admin(
            &admin,
            Method::POST,
            "/api/v1/admin/tenants/acme/tokens",
            None,
        )
        .await;
    let tok2 = v["data"]["token"].as_str().unwrap().to_string();
    let (st, _) = srv.get_as(Cred::Bearer(&tok2), "/api/v1/labels").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = srv
        .admin(&admin, Method::DELETE, "/api/v1/admin/tenants/acme", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = srv.get_as(Cred::Bearer(&tok2), "/api/v1/labels").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = srv
        .admin(&admin, Method::GET, "/api/v1/admin/tenants/acme", None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Plans.
    let (st, _) = srv
        .admin(
            &admin,
            Method::PUT,
            "/api/v1/admin/plans/small",
            Some(json!({"max_series": 5})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = srv
        .admin(
            &admin,
            Method::POST,
            "/api/v1/admin/tenants",
            Some(json!({"id": "p", "plan": "small"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(v["data"]["effective_limits"]["max_series"], 5);
    let (st, _) = srv
        .admin(&admin, Method::DELETE, "/api/v1/admin/plans/small", None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "plan in use");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_and_header_modes_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        auth: AuthMode::None,
        ..ServerConfig::default()
    })
    .await;
    let (st, _) = srv
        .push_as(
            Cred::None,
            "/api/v1/push",
            vec![ts(&[("__name__", "m")], &[(now_ms(), 1.0)])],
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = srv
        .get_as(Cred::None, "/api/v1/label/__name__/values")
        .await;
    assert_eq!((st, v["data"].clone()), (StatusCode::OK, json!(["m"])));
    assert!(
        !dir.path().join("tokens").exists(),
        "no tokens outside token mode"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_with_token_in_url() {
    let promtool = "/usr/bin/promtool";
    assert!(
        Path::new(promtool).exists(),
        "{promtool} is missing (Debian package prometheus)"
    );
    let dir = tempfile::tempdir().unwrap();
    let srv = start_token(dir.path()).await;
    wait_ready(&srv).await;
    let tok = token_file(dir.path(), "default");
    let now = now_ms();
    let (st, _) = srv
        .push_as(
            Cred::Basic(&tok),
            "/api/v1/push",
            vec![ts(&[("__name__", "up"), ("job", "j")], &[(now, 1.0)])],
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let hostport = srv.base.trim_start_matches("http://").to_string();
    let run = |url: String| {
        let at = format!("--time={}", now as f64 / 1000.0);
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(promtool)
                .args(["query", "instant", &at, &url, "up"])
                .output()
                .unwrap()
        })
    };
    let out = run(format!("http://user:{tok}@{hostport}")).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#"up{job="j"} => 1 @["#), "{stdout}");
    let out = run(format!("http://user:wrong@{hostport}")).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_limits_are_enforced_and_changed_at_runtime() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let srv = start_token(dir.path()).await;
    wait_ready(&srv).await;
    let admin = token_file(dir.path(), "admin");
    let tok = tenant_with_token(
        &srv,
        &admin,
        "lim",
        json!({"max_series": 2, "max_label_value_length": 10, "max_label_names_per_series": 3}),
    )
    .await;
    let c = Cred::Bearer(&tok);
    let now = now_ms();
    let s = |name: &str, inst: &str| ts(&[("__name__", name), ("i", inst)], &[(now, 1.0)]);

    // Label limits: the bad series is named with its limit, the good one stored.
    let (st, body) = srv
        .push_as(
            c,
            "/api/v1/push",
            vec![
                s("good", "1"),
                ts(
                    &[("__name__", "bad"), ("i", "a-very-long-value")],
                    &[(now, 1.0)],
                ),
                ts(
                    &[("__name__", "bad2"), ("a", "1"), ("b", "1"), ("c", "1")],
                    &[(now, 1.0)],
                ),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("max_label_value_length=10"), "{body}");
    assert!(body.contains("max_label_names_per_series=3"), "{body}");
    let (_, v) = srv.get_as(c, "/api/v1/label/__name__/values").await;
    assert_eq!(v["data"], json!(["good"]));

    // Series limit: the third series is refused naming max_series; the
    // second stored; existing series keep accepting.
    let (st, body) = srv
        .push_as(c, "/api/v1/push", vec![s("m", "2"), s("m", "3")])
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("max_series"), "{body}");
    assert!(body.contains("max_series=2"), "{body}");
    let (st, body) = srv
        .push_as(
            c,
            "/api/v1/push",
            vec![ts(
                &[("__name__", "good"), ("i", "1")],
                &[(now + 1000, 2.0)],
            )],
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");

    // Raised at runtime: accepted by the next request, no restart.
    let (st, v) = srv
        .admin(
            &admin,
            Method::PATCH,
            "/api/v1/admin/tenants/lim",
            Some(json!({"limits": {"max_series": 10}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, body) = srv.push_as(c, "/api/v1/push", vec![s("m", "3")]).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");

    // Out-of-order window through the open database, at runtime.
    let (st, _) = srv
        .admin(
            &admin,
            Method::PATCH,
            "/api/v1/admin/tenants/lim",
            Some(json!({"limits": {"out_of_order_window": "0s"}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let old = ts(&[("__name__", "good"), ("i", "1")], &[(now - 60_000, 0.5)]);
    let (st, body) = srv.push_as(c, "/api/v1/push", vec![old.clone()]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("out-of-order"), "{body}");
    let (st, _) = srv
        .admin(
            &admin,
            Method::PATCH,
            "/api/v1/admin/tenants/lim",
            Some(json!({"limits": {"out_of_order_window": "1h"}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = srv.push_as(c, "/api/v1/push", vec![old]).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");

    // Query limits.
    let (st, _) = srv
        .admin(
            &admin,
            Method::PATCH,
            "/api/v1/admin/tenants/lim",
            Some(json!({"limits": {"max_series_per_query": 1}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let q = format!(
        "/api/v1/query?query=%7B__name__%3D~%22.%2B%22%7D&time={}",
        now as f64 / 1000.0
    );
    let (st, v) = srv.get_as(c, &q).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("maximum number of series (limit: 1)"),
        "{v}"
    );
    let (st, _) = srv
        .admin(
            &admin,
            Method::PATCH,
            "/api/v1/admin/tenants/lim",
            Some(json!({"limits": {"max_series_per_query": 0, "max_samples_per_query": 1}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = srv.get_as(c, &q).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("too many samples"),
        "{v}"
    );
    // The default tenant is untouched by lim's limits.
    let dtok = token_file(dir.path(), "default");
    let (st, _) = srv
        .push_as(
            Cred::Bearer(&dtok),
            "/api/v1/push",
            vec![s("x", "1"), s("x", "2"), s("x", "3")],
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // Ingestion rate: 429 naming the limit; nothing of that request stored.
    let (st, _) = srv
        .admin(
            &admin,
            Method::PATCH,
            "/api/v1/admin/tenants/lim",
            Some(json!({"limits": {"ingestion_rate": 1, "ingestion_burst_size": 3}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let batch = |n: i64| -> Vec<pb::TimeSeries> {
        vec![ts(
            &[("__name__", "good"), ("i", "1")],
            &(0..n).map(|k| (now + 10_000 + k, 1.0)).collect::<Vec<_>>(),
        )]
    };
    let (st, body) = srv.push_as(c, "/api/v1/push", batch(3)).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    let (st, body) = srv.push_as(c, "/api/v1/push", batch(3)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("ingestion_rate=1"), "{body}");
    assert!(body.contains("ingestion_burst_size=3"), "{body}");

    // Usage metrics per tenant.
    let (_, m) = srv.get_as(Cred::None, "/metrics").await;
    let m = m.as_str().unwrap().to_string();
    for want in [
        "stratus_tenant_samples_received_total{tenant=\"lim\"}",
        "stratus_tenant_samples_rejected_total{tenant=\"lim\",reason=\"rate_limited\"} 3",
        "stratus_tenant_samples_rejected_total{tenant=\"lim\",reason=\"series_limit\"} 1",
        "stratus_tenant_samples_rejected_total{tenant=\"lim\",reason=\"max_label_value_length\"} 1",
        "stratus_tenant_active_series{tenant=\"lim\"} 3",
        "stratus_tenant_active_series{tenant=\"default\"} 3",
        "stratus_tenant_bytes_stored{tenant=\"lim\"}",
        "stratus_tenant_queries_total{tenant=\"lim\"} 2",
    ] {
        assert!(m.contains(want), "{want} missing:\n{m}");
    }
    srv.stop().await;
}
