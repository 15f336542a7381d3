//! OTLP/HTTP metrics over real HTTP: protobuf and JSON (plain and gzip)
//! round trips through `/api/v1/query`, Prometheus' name/label
//! translation, target_info, partial success and malformed bodies.

use std::io::Write;

use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use stratus_api::AuthMode;
use stratus_proto::otlp_collector::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use stratus_proto::otlp_metrics as pb;

mod common;
use common::{Server, now_ms, start};

const PROTO: &str = "application/x-protobuf";
const JSON: &str = "application/json";

async fn post(
    srv: &Server,
    path: &str,
    ct: &str,
    gzip: bool,
    body: Vec<u8>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut rb = srv
        .client
        .post(format!("{}{path}", srv.base))
        .header("Content-Type", ct);
    let body = if gzip {
        rb = rb.header("Content-Encoding", "gzip");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    } else {
        body
    };
    let r = rb.body(body).send().await.unwrap();
    let st = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    (st, ct, r.bytes().await.unwrap().to_vec())
}

/// `(labels, value)` of every series of an instant query at `t_ms`.
async fn query(srv: &Server, q: &str, t_ms: i64) -> Vec<(Value, String)> {
    let url = format!("{}/api/v1/query", srv.base);
    let t = format!("{}", t_ms as f64 / 1000.0);
    let r = srv
        .client
        .get(url)
        .query(&[("query", q), ("time", t.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json_value().await;
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"].clone(),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

async fn one(srv: &Server, q: &str, t: i64) -> (Value, String) {
    let r = query(srv, q, t).await;
    assert_eq!(r.len(), 1, "{q}: {r:?}");
    r.into_iter().next().unwrap()
}

fn kv(k: &str, v: &str) -> pb::KeyValue {
    pb::KeyValue {
        key: k.into(),
        value: Some(pb::AnyValue {
            value: Some(pb::any_value::Value::StringValue(v.into())),
        }),
    }
}

fn metric(name: &str, unit: &str, data: pb::metric::Data) -> pb::Metric {
    pb::Metric {
        name: name.into(),
        description: format!("{name} help"),
        unit: unit.into(),
        data: Some(data),
        metadata: Vec::new(),
    }
}

fn num(t_ns: u64, v: f64, attrs: Vec<pb::KeyValue>) -> pb::NumberDataPoint {
    pb::NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: 0,
        time_unix_nano: t_ns,
        value: Some(pb::number_data_point::Value::AsDouble(v)),
        exemplars: Vec::new(),
        flags: 0,
    }
}

fn request(t_ns: u64) -> ExportMetricsServiceRequest {
    use pb::metric::Data;
    let mut counter_point = num(t_ns, 5.0, vec![kv("http.method", "GET"), kv("0code", "x")]);
    counter_point.exemplars.push(pb::Exemplar {
        filtered_attributes: Vec::new(),
        time_unix_nano: t_ns,
        value: Some(pb::exemplar::Value::AsDouble(1.0)),
        span_id: vec![0xab; 8],
        trace_id: vec![0x01; 16],
    });
    let metrics = vec![
        metric(
            "mem.usage",
            "By",
            Data::Gauge(pb::Gauge {
                data_points: vec![pb::NumberDataPoint {
                    value: Some(pb::number_data_point::Value::AsInt(100)),
                    ..num(t_ns, 0.0, vec![kv("state", "used")])
                }],
            }),
        ),
        metric(
            "http.requests",
            "{request}",
            Data::Sum(pb::Sum {
                data_points: vec![counter_point],
                aggregation_temporality: pb::AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        ),
        metric(
            "cpu.utilization",
            "1",
            Data::Gauge(pb::Gauge {
                data_points: vec![num(t_ns, 0.25, Vec::new())],
            }),
        ),
        metric(
            "latency",
            "ms",
            Data::Histogram(pb::Histogram {
                data_points: vec![pb::HistogramDataPoint {
                    time_unix_nano: t_ns,
                    count: 6,
                    sum: Some(500.0),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![10.0, 100.0],
                    ..Default::default()
                }],
                aggregation_temporality: pb::AggregationTemporality::Cumulative as i32,
            }),
        ),
        metric(
            "rpc.duration",
            "s",
            Data::Summary(pb::Summary {
                data_points: vec![pb::SummaryDataPoint {
                    time_unix_nano: t_ns,
                    count: 20,
                    sum: 10.0,
                    quantile_values: vec![
                        pb::summary_data_point::ValueAtQuantile {
                            quantile: 0.5,
                            value: 0.1,
                        },
                        pb::summary_data_point::ValueAtQuantile {
                            quantile: 0.99,
                            value: 0.9,
                        },
                    ],
                    ..Default::default()
                }],
            }),
        ),
        metric(
            "delta.count",
            "",
            Data::Sum(pb::Sum {
                data_points: vec![num(t_ns, 1.0, Vec::new()), num(t_ns + 1, 1.0, Vec::new())],
                aggregation_temporality: pb::AggregationTemporality::Delta as i32,
                is_monotonic: true,
            }),
        ),
        metric(
            "exp.hist",
            "",
            Data::ExponentialHistogram(pb::ExponentialHistogram {
                data_points: vec![
                    pb::ExponentialHistogramDataPoint {
                        time_unix_nano: t_ns,
                        count: 7,
                        sum: Some(12.5),
                        scale: 10,
                        zero_count: 1,
                        zero_threshold: 1e-9,
                        positive: Some(pb::exponential_histogram_data_point::Buckets {
                            offset: -3,
                            bucket_counts: vec![1, 2, 0, 0, 0, 3],
                        }),
                        attributes: vec![kv("k", "v")],
                        ..Default::default()
                    },
                    // Refused: scale below the coarsest schema.
                    pb::ExponentialHistogramDataPoint {
                        time_unix_nano: t_ns,
                        count: 1,
                        scale: -5,
                        zero_count: 1,
                        ..Default::default()
                    },
                ],
                aggregation_temporality: pb::AggregationTemporality::Cumulative as i32,
            }),
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![pb::ResourceMetrics {
            resource: Some(pb::Resource {
                attributes: vec![
                    kv("service.namespace", "ns"),
                    kv("service.name", "svc"),
                    kv("service.instance.id", "i1"),
                    kv("host.name", "h1"),
                ],
                dropped_attributes_count: 0,
            }),
            scope_metrics: vec![pb::ScopeMetrics {
                scope: Some(pb::InstrumentationScope {
                    name: "lib".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_protobuf_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let t = (now_ms() - 60_000) / 1000 * 1000;
    let t_ns = t as u64 * 1_000_000;
    let (st, ct, body) = post(
        &srv,
        "/otlp/v1/metrics",
        PROTO,
        false,
        request(t_ns).encode_to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct.as_deref(), Some(PROTO));
    let resp = ExportMetricsServiceResponse::decode(&body[..]).unwrap();
    let ps = resp.partial_success.unwrap();
    assert_eq!(ps.rejected_data_points, 3, "{}", ps.error_message);
    assert!(
        ps.error_message.contains("delta.count"),
        "{}",
        ps.error_message
    );
    assert!(
        ps.error_message
            .contains("scale -5 is below the smallest native histogram schema"),
        "{}",
        ps.error_message
    );

    let (labels, v) = one(&srv, "mem_usage_bytes", t).await;
    assert_eq!(v, "100");
    assert_eq!(
        labels,
        serde_json::json!({"__name__":"mem_usage_bytes","instance":"i1","job":"ns/svc",
            "otel_scope_name":"lib","otel_scope_version":"1.0","state":"used"})
    );
    let (labels, v) = one(&srv, "http_requests_total", t).await;
    assert_eq!(v, "5");
    assert_eq!(labels["http_method"], "GET");
    assert_eq!(labels["key_0code"], "x");
    assert_eq!(one(&srv, "cpu_utilization_ratio", t).await.1, "0.25");
    let buckets = query(&srv, "latency_milliseconds_bucket", t).await;
    let mut got: Vec<(String, String)> = buckets
        .iter()
        .map(|(l, v)| (l["le"].as_str().unwrap().to_string(), v.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("+Inf".into(), "6".into()),
            ("10".into(), "1".into()),
            ("100".into(), "3".into())
        ]
    );
    assert_eq!(one(&srv, "latency_milliseconds_sum", t).await.1, "500");
    assert_eq!(one(&srv, "latency_milliseconds_count", t).await.1, "6");
    assert_eq!(
        one(&srv, "rpc_duration_seconds{quantile=\"0.99\"}", t)
            .await
            .1,
        "0.9"
    );
    assert_eq!(one(&srv, "rpc_duration_seconds_count", t).await.1, "20");
    assert_eq!(one(&srv, "rpc_duration_seconds_sum", t).await.1, "10");
    let (labels, v) = one(&srv, "target_info", t).await;
    assert_eq!(v, "1");
    assert_eq!(
        labels,
        serde_json::json!({"__name__":"target_info","host_name":"h1","instance":"i1","job":"ns/svc"})
    );
    assert!(query(&srv, "{__name__=~\"delta.*\"}", t).await.is_empty());
    // Exponential histograms are native histograms: a `histogram` sample,
    // no float `value`.
    let r = srv
        .client
        .get(format!("{}/api/v1/query", srv.base))
        .query(&[
            ("query", "{__name__=~\"exp.*\"}"),
            ("time", format!("{}", t as f64 / 1000.0).as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    let res = r["data"]["result"].as_array().unwrap();
    assert!(!res.is_empty(), "{r}");
    assert!(
        res.iter()
            .all(|s| s["value"].is_null() && s["histogram"][1]["count"].is_string()),
        "{r}"
    );

    // Metadata and exemplars recorded from OTLP.
    let r = srv
        .client
        .get(format!("{}/api/v1/metadata", srv.base))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(
        r["data"]["latency_milliseconds"],
        serde_json::json!([{"type":"histogram","help":"latency help","unit":"milliseconds"}])
    );
    assert_eq!(r["data"]["http_requests_total"][0]["type"], "counter");
    let r = srv
        .client
        .get(format!(
            "{}/api/v1/query_exemplars?query=http_requests_total",
            srv.base
        ))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(
        r["data"][0]["exemplars"][0]["labels"],
        serde_json::json!({"span_id":"abababababababab","trace_id":"01010101010101010101010101010101"})
    );

    // Prometheus' own path and the Mimir-style prefixes serve OTLP too.
    for path in ["/api/v1/otlp/v1/metrics", "/prometheus/otlp/v1/metrics"] {
        let (st, _, _) = post(
            &srv,
            path,
            PROTO,
            true,
            request(t_ns + 1_000_000_000).encode_to_vec(),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    srv.stop().await;

    // The exponential histogram is stored as a native histogram: scale 10
    // downscaled to schema 8, buckets merged four to one.
    let tenant = stratus_model::TenantId::new("default").unwrap();
    let bucket = stratus_objstore::Bucket::local(&dir.path().join("blocks"))
        .unwrap()
        .with_prefix(tenant.as_str());
    let db = stratus_tsdb::Db::open(
        &dir.path().join("tenants").join(tenant.as_str()),
        bucket,
        stratus_tsdb::DbConfig::default(),
    )
    .await
    .unwrap();
    let m = stratus_model::Matcher::eq("__name__", "exp_hist");
    let series = stratus_tsdb::Queryable::select(
        &db,
        &[m],
        &stratus_tsdb::SelectHints::range(i64::MIN, i64::MAX),
    )
    .unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].labels.get("k"), Some("v"));
    let got = series[0].typed_samples(i64::MIN, i64::MAX).unwrap();
    assert_eq!(got.len(), 2, "the two later pushes are at the same time");
    let stratus_tsdb::Value::Histogram(h) = &got[0].1 else {
        panic!("{:?}", got[0]);
    };
    assert_eq!(got[0].0, t);
    assert_eq!(h.schema, 8);
    assert_eq!((h.count, h.zero_count, h.sum), (7, 1, 12.5));
    assert_eq!(h.zero_threshold, 1e-9);
    assert_eq!(
        h.positive_spans,
        vec![stratus_model::BucketSpan {
            offset: 0,
            length: 2
        }]
    );
    assert_eq!(h.positive_deltas, vec![3, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_gzip_and_bad_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let t = (now_ms() - 60_000) / 1000 * 1000;
    let t_ns = (t as u64 * 1_000_000).to_string();
    let body = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"js"}}}}]}},
        "scopeMetrics":[{{"scope":{{"name":"s"}},"metrics":[
          {{"name":"queue.size","unit":"{{item}}","gauge":{{"dataPoints":[{{"timeUnixNano":"{t_ns}","asInt":"42","attributes":[{{"key":"q","value":{{"intValue":"3"}}}}]}}]}}}},
          {{"name":"net.sent","unit":"By","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{{"timeUnixNano":"{t_ns}","asDouble":1.5,
            "exemplars":[{{"timeUnixNano":"{t_ns}","asDouble":1.5,"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}}]}}]}}}},
          {{"name":"d","sum":{{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","dataPoints":[{{"timeUnixNano":"{t_ns}","asInt":"1"}}]}}}}
        ]}}]}}]}}"#
    );
    for gzip in [false, true] {
        let (st, ct, resp) = post(
            &srv,
            "/otlp/v1/metrics",
            JSON,
            gzip,
            body.clone().into_bytes(),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
        assert_eq!(ct.as_deref(), Some(JSON));
        let v: Value = serde_json::from_slice(&resp).unwrap();
        assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "1", "{v}");
    }
    let (labels, v) = one(&srv, "queue_size", t).await;
    assert_eq!(v, "42");
    assert_eq!(labels["job"], "js");
    assert_eq!(labels["q"], "3");
    assert_eq!(labels["otel_scope_name"], "s");
    assert_eq!(one(&srv, "net_sent_bytes_total", t).await.1, "1.5");
    let r = srv
        .client
        .get(format!(
            "{}/api/v1/query_exemplars?query=net_sent_bytes_total",
            srv.base
        ))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(
        r["data"][0]["exemplars"][0]["labels"]["trace_id"],
        "5b8efff798038103d269b633813fc60c"
    );

    // A clean request answers an empty response.
    let ok = format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"g2","gauge":{{"dataPoints":[{{"timeUnixNano":"{t_ns}","asDouble":1}}]}}}}]}}]}}]}}"#
    );
    let (st, _, resp) = post(&srv, "/otlp/v1/metrics", JSON, false, ok.into_bytes()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(resp, b"{}");
    let (st, _, resp) = post(&srv, "/otlp/v1/metrics", PROTO, false, Vec::new()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        ExportMetricsServiceResponse::decode(&resp[..])
            .unwrap()
            .partial_success
            .is_none()
    );

    // Malformed bodies, bad gzip, wrong content type.
    let (st, _, _) = post(&srv, "/otlp/v1/metrics", PROTO, false, vec![0xff; 10]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = post(&srv, "/otlp/v1/metrics", JSON, false, b"{not json".to_vec()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = post(
        &srv,
        "/otlp/v1/metrics",
        JSON,
        true,
        b"{\"resourceMetrics\":3}".to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let r = srv
        .client
        .post(format!("{}/otlp/v1/metrics", srv.base))
        .header("Content-Type", PROTO)
        .header("Content-Encoding", "gzip")
        .body(b"not gzip".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (st, _, _) = post(&srv, "/otlp/v1/metrics", "text/plain", false, b"x".to_vec()).await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    srv.stop().await;
}

/// The Python interpreter with the OpenTelemetry SDK (`scripts/test`
/// installs it into `target/otel-venv` and sets `STRATUS_OTEL_PYTHON`).
fn otel_python() -> std::path::PathBuf {
    std::env::var_os("STRATUS_OTEL_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/otel-venv/bin/python")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_opentelemetry_sdk_sender() {
    let python = otel_python();
    assert!(
        python.exists(),
        "{} missing: run scripts/test (it installs the OpenTelemetry Python SDK) or set STRATUS_OTEL_PYTHON",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/otel_sender.py");
    let url = format!("{}/otlp/v1/metrics", srv.base);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .arg("60")
            .arg(&python)
            .arg(&script)
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "sender failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("flushed True"));
    let t = now_ms();
    let (labels, v) = one(&srv, "py_requests_total", t).await;
    assert_eq!(v, "3");
    assert_eq!(labels["job"], "pysvc");
    assert_eq!(labels["instance"], "py1");
    assert_eq!(labels["http_route"], "/a");
    assert_eq!(labels["otel_scope_name"], "py.lib");
    assert_eq!(
        one(&srv, "py_latency_milliseconds_bucket{le=\"100\"}", t)
            .await
            .1,
        "2"
    );
    assert_eq!(one(&srv, "py_latency_milliseconds_count", t).await.1, "3");
    assert_eq!(one(&srv, "py_latency_milliseconds_sum", t).await.1, "333");
    assert_eq!(one(&srv, "py_queue_bytes", t).await.1, "7");
    let (labels, _) = one(&srv, "target_info", t).await;
    assert_eq!(labels["deployment_environment"], "test");
    assert_eq!(labels["telemetry_sdk_language"], "python");
    srv.stop().await;
}
