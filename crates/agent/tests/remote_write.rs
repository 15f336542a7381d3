//! The push side end to end over real HTTP on 127.0.0.1: queue → senders
//! → a fixture receiver (or the real Stratus server).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Receiver, batch, check_series, series_key};
use prometheus_client::registry::Registry;
use stratus_agent::queue::{Queue, QueueConfig, segment_file};
use stratus_agent::remote::{
    Auth, ProtocolVersion, PushMetrics, RemoteSettings, Sender, WriteRelabel,
};
use stratus_agent::sink::{Batch, Metadata, MetricType, SeriesSamples, Sink};
use stratus_model::{Labels, Sample};

const NAME: &str = "ep";

fn metrics() -> Arc<PushMetrics> {
    Arc::new(PushMetrics::unregistered())
}

fn settings(url: &str) -> RemoteSettings {
    let mut s = RemoteSettings::new(NAME, url);
    s.batch_send_deadline = Duration::from_millis(20);
    s.min_backoff = Duration::from_millis(10);
    s.max_backoff = Duration::from_millis(200);
    s.timeout = Duration::from_secs(5);
    s
}

fn open(dir: &Path, m: &Arc<PushMetrics>) -> Queue {
    Queue::open(QueueConfig::new(dir), NAME, m).unwrap()
}

fn start(s: RemoteSettings, q: &Queue, m: &Arc<PushMetrics>) -> Sender {
    Sender::start(s, q.clone(), None, m).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_series_is_kept_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    let q = open(dir.path(), &m);
    let mut s = settings(&rx.url);
    s.min_shards = 4;
    s.max_shards = 4;
    s.max_samples_per_send = 100;
    let sender = start(s, &q, &m);
    let ts: Vec<i64> = (1..=200).collect();
    for &t in &ts {
        q.append(batch("m", t, 50)).unwrap();
    }
    assert!(sender.drain(Duration::from_secs(20)).await);
    assert_eq!(m.shards(NAME), 0);
    let got = rx.series();
    assert_eq!(check_series(&got, "m", 50, &ts), 0);
    assert_eq!(m.samples_sent(NAME), 200 * 50);
    // Sent segments are gone, the cursor is at the end.
    let st = q.stats();
    assert_eq!(st.segments, 1);
    assert_eq!(st.committed, st.write);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    rx.fail(500, 3, None);
    let q = open(dir.path(), &m);
    let sender = start(settings(&rx.url), &q, &m);
    let ts: Vec<i64> = (1..=10).collect();
    for &t in &ts {
        q.append(batch("m", t, 5)).unwrap();
    }
    assert!(sender.drain(Duration::from_secs(10)).await);
    check_series(&rx.series(), "m", 5, &ts);
    assert!(m.samples_retried(NAME) > 0);
    assert!(rx.requests() >= 4);
    assert_eq!(m.samples_failed(NAME, "http_500"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_honours_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    rx.fail(429, 1, Some("1"));
    let q = open(dir.path(), &m);
    let sender = start(settings(&rx.url), &q, &m);
    let t0 = Instant::now();
    q.append(batch("m", 1, 3)).unwrap();
    assert!(rx.wait_samples(3, Duration::from_secs(5)).await);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(950), "resent after {took:?}");
    assert_eq!(rx.requests(), 2);
    assert_eq!(m.samples_retried(NAME), 3);
    assert!(sender.drain(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_as_http_date() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    rx.fail(503, 1, Some(&at));
    let q = open(dir.path(), &m);
    let sender = start(settings(&rx.url), &q, &m);
    let t0 = Instant::now();
    q.append(batch("m", 1, 1)).unwrap();
    assert!(rx.wait_samples(1, Duration::from_secs(5)).await);
    // HTTP dates have whole seconds: at least ~1 s.
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(sender.drain(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_is_dropped_counted_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    rx.fail(400, 1, None);
    let q = open(dir.path(), &m);
    let sender = start(settings(&rx.url), &q, &m);
    q.append(batch("bad", 1, 7)).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while rx.requests() < 1 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    q.append(batch("good", 2, 4)).unwrap();
    assert!(sender.drain(Duration::from_secs(5)).await);
    let got = rx.series();
    assert!(!got.contains_key(&series_key("bad", 0)));
    check_series(&got, "good", 4, &[2]);
    assert_eq!(m.samples_failed(NAME, "http_400"), 7);
    assert_eq!(m.samples_retried(NAME), 0);
    assert_eq!(rx.requests(), 2);
    // The dropped batch is acknowledged: nothing is left to send.
    assert_eq!(q.stats().committed, q.stats().write);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let mut rx = Receiver::start().await;
    let q = open(dir.path(), &m);
    let mut s = settings(&rx.url);
    s.min_shards = 2;
    s.max_shards = 2;
    s.max_samples_per_send = 50;
    let sender = start(s, &q, &m);
    let mut t = 0i64;
    let mut ts = Vec::new();
    let mut append_for = |d: Duration, q: &Queue| {
        let until = Instant::now() + d;
        let mut n = 0;
        while Instant::now() < until && n < 1000 {
            t += 1;
            ts.push(t);
            q.append(batch("m", t, 20)).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    append_for(Duration::from_millis(300), &q);
    rx.stop().await;
    append_for(Duration::from_millis(1500), &q);
    // The backlog shows in the lag gauge while the receiver is away.
    assert!(
        m.queue_lag_seconds(NAME) >= 0.5,
        "lag {}",
        m.queue_lag_seconds(NAME)
    );
    rx.restart().await;
    append_for(Duration::from_millis(300), &q);
    assert!(sender.drain(Duration::from_secs(15)).await);
    assert!(m.samples_retried(NAME) > 0);
    let dups = check_series(&rx.series(), "m", 20, &ts);
    // Only requests in flight when the receiver went away may repeat.
    assert!(dups <= 2 * 50, "{dups} duplicated samples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    rx.set_delay(Duration::from_millis(20));
    let ts: Vec<i64> = (1..=100).collect();
    {
        let q = open(dir.path(), &m);
        let mut s = settings(&rx.url);
        s.max_samples_per_send = 50;
        let sender = start(s, &q, &m);
        for &t in &ts {
            q.append(batch("m", t, 10)).unwrap();
        }
        // Mid-backlog: some requests done, most not.
        assert!(rx.wait_samples(150, Duration::from_secs(5)).await);
        sender.stop().await;
        assert!(rx.samples() < 1000);
    }
    rx.set_delay(Duration::ZERO);
    let q = open(dir.path(), &m);
    let sender = start(settings(&rx.url), &q, &m);
    assert!(sender.drain(Duration::from_secs(10)).await);
    let dups = check_series(&rx.series(), "m", 10, &ts);
    assert!(
        dups <= 50,
        "{dups} duplicated samples (one request at most)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_and_corrupt_segments_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    let mut cfg = QueueConfig::new(dir.path());
    cfg.segment_bytes = 64 << 10;
    let (first, last) = {
        let q = Queue::open(cfg.clone(), NAME, &m).unwrap();
        for t in 1..=300 {
            q.append(batch("m", t, 40)).unwrap();
        }
        let st = q.stats();
        assert!(st.segments >= 3);
        (st.read.segment, st.write.segment)
    };
    // kill -9 mid-append: half a record at the end of the last segment…
    let lastp = segment_file(dir.path(), last);
    let mut data = std::fs::read(&lastp).unwrap();
    data.extend_from_slice(&[0x40, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&lastp, &data).unwrap();
    // …and a flipped byte in the middle of the first.
    let firstp = segment_file(dir.path(), first);
    let mut data = std::fs::read(&firstp).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&firstp, &data).unwrap();

    let q = Queue::open(cfg, NAME, &m).unwrap();
    let sender = start(settings(&rx.url), &q, &m);
    q.append(batch("m", 301, 40)).unwrap();
    assert!(sender.drain(Duration::from_secs(10)).await);
    assert_eq!(m.queue_corruptions(NAME), 1);
    let got = rx.series();
    let v: Vec<i64> = got[&series_key("m", 0)].iter().map(|x| x.0).collect();
    // In order; the tail of the first segment is missing, the rest is there.
    assert!(v.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*v.first().unwrap(), 1);
    assert_eq!(*v.last().unwrap(), 301);
    assert!(v.len() < 301 && v.len() > 150, "{}", v.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_budget_drops_the_oldest_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let mut rx = Receiver::start().await;
    rx.stop().await;
    let mut cfg = QueueConfig::new(dir.path());
    cfg.segment_bytes = 64 << 10;
    cfg.max_bytes = 256 << 10;
    let q = Queue::open(cfg, NAME, &m).unwrap();
    let sender = start(settings(&rx.url), &q, &m);
    let n = 1500i64;
    for t in 1..=n {
        q.append(batch("m", t, 10)).unwrap();
    }
    let dropped = m.queue_dropped_samples(NAME);
    assert!(dropped > 0);
    rx.restart().await;
    assert!(sender.drain(Duration::from_secs(15)).await);
    let got = rx.series();
    let v: Vec<i64> = got[&series_key("m", 0)].iter().map(|x| x.0).collect();
    assert_eq!(*v.last().unwrap(), n);
    assert!(v.windows(2).all(|w| w[0] < w[1]));
    // Sent + dropped = appended (the receiver was down from the start, so
    // no request is duplicated).
    assert_eq!(rx.samples() as u64 + dropped, n as u64 * 10);
}

fn meta_batch(name: &str, t: i64) -> Batch {
    Batch {
        series: vec![
            SeriesSamples {
                labels: Labels::from_pairs([
                    ("__name__", format!("{name}_total")),
                    ("job", "j".into()),
                ]),
                samples: vec![Sample::new(t, 1.0)],
            },
            SeriesSamples {
                labels: Labels::from_pairs([("__name__", "drop_me"), ("job", "j")]),
                samples: vec![Sample::new(t, 2.0)],
            },
        ],
        metadata: vec![Metadata {
            family: name.to_string(),
            kind: MetricType::Counter,
            help: format!("Help of {name}."),
            unit: "seconds".into(),
        }],
    }
}

fn drop_me() -> WriteRelabel {
    Box::new(|l: &Labels| (l.metric_name() != Some("drop_me")).then(|| l.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_2_payload_decodes_with_symbols_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    let q = open(dir.path(), &m);
    let mut s = settings(&rx.url);
    s.protocol = ProtocolVersion::V2;
    s.external_labels = vec![
        ("cluster".into(), "c1".into()),
        ("job".into(), "ext".into()),
    ];
    s.auth = Some(Auth::Basic {
        username: "u".into(),
        password: "p".into(),
    });
    let sender = Sender::start(s, q.clone(), Some(drop_me()), &m).unwrap();
    q.append(meta_batch("reqs", 1000)).unwrap();
    assert!(sender.drain(Duration::from_secs(5)).await);
    let rec = rx.state.rec.lock().unwrap();
    let h = rec.headers.as_ref().unwrap();
    assert_eq!(
        h["content-type"],
        "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    );
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["x-prometheus-remote-write-version"], "2.0.0");
    assert!(
        h["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("stratus-agent/")
    );
    assert_eq!(h["authorization"], "Basic dTpw");
    assert_eq!(rec.v2.len(), 1);
    let req = &rec.v2[0];
    assert_eq!(req.symbols[0], "");
    assert_eq!(req.timeseries.len(), 1);
    let ts = &req.timeseries[0];
    let labels: Vec<(&str, &str)> = ts
        .labels_refs
        .chunks(2)
        .map(|c| {
            (
                req.symbols[c[0] as usize].as_str(),
                req.symbols[c[1] as usize].as_str(),
            )
        })
        .collect();
    // Series labels win over external ones; labels stay sorted.
    assert_eq!(
        labels,
        vec![("__name__", "reqs_total"), ("cluster", "c1"), ("job", "j")]
    );
    let md = ts.metadata.unwrap();
    assert_eq!(md.r#type, 1);
    assert_eq!(req.symbols[md.help_ref as usize], "Help of reqs.");
    assert_eq!(req.symbols[md.unit_ref as usize], "seconds");
    assert_eq!(ts.samples[0].timestamp, 1000);
    assert_eq!(m.samples_sent(NAME), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_1_headers_bearer_external_labels_relabel_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    let q = open(dir.path(), &m);
    let mut s = settings(&rx.url);
    s.external_labels = vec![("cluster".into(), "c1".into())];
    s.headers = vec![("X-Scope-OrgID".into(), "team-a".into())];
    s.auth = Some(Auth::Bearer("tok".into()));
    let sender = Sender::start(s, q.clone(), Some(drop_me()), &m).unwrap();
    q.append(meta_batch("reqs", 1000)).unwrap();
    // Metadata goes out within ~1 s of being seen.
    let until = Instant::now() + Duration::from_secs(5);
    while rx.state.rec.lock().unwrap().metadata.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sender.drain(Duration::from_secs(5)).await);
    let rec = rx.state.rec.lock().unwrap();
    let h = rec.headers.as_ref().unwrap();
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
    assert_eq!(h["authorization"], "Bearer tok");
    assert_eq!(h["x-scope-orgid"], "team-a");
    let keys: Vec<&String> = rec.series.keys().collect();
    assert_eq!(
        keys,
        vec![&common::key([
            ("__name__".into(), "reqs_total".into()),
            ("cluster".into(), "c1".into()),
            ("job".into(), "j".into())
        ])]
    );
    assert_eq!(rec.metadata.len(), 1);
    assert_eq!(rec.metadata[0].metric_family_name, "reqs");
    assert_eq!(rec.metadata[0].r#type, 1);
    assert_eq!(rec.metadata[0].help, "Help of reqs.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_scale_up_with_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let rx = Receiver::start().await;
    rx.set_delay(Duration::from_millis(20));
    let q = open(dir.path(), &m);
    let mut s = settings(&rx.url);
    s.max_samples_per_send = 100;
    s.min_shards = 1;
    s.max_shards = 8;
    s.shard_update_interval = Duration::from_millis(200);
    for t in 1..=1000 {
        q.append(batch("m", t, 50)).unwrap();
    }
    let sender = start(s, &q, &m);
    let until = Instant::now() + Duration::from_secs(5);
    let mut most = 0;
    while Instant::now() < until {
        most = most.max(m.shards(NAME));
        if most > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most > 1, "shards stayed at {most}");
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_on_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::default();
    let m = PushMetrics::new(&mut reg);
    let rx = Receiver::start().await;
    let q = open(dir.path(), &m);
    let sender = start(settings(&rx.url), &q, &m);
    q.append(batch("m", 1, 3)).unwrap();
    assert!(sender.drain(Duration::from_secs(5)).await);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    for want in [
        "stratus_agent_samples_sent_total{remote_name=\"ep\"} 3",
        "stratus_agent_queue_appended_samples_total{remote_name=\"ep\"} 3",
        "stratus_agent_queue_dropped_samples_total",
        "stratus_agent_queue_bytes{remote_name=\"ep\"}",
        "stratus_agent_queue_segments{remote_name=\"ep\"} 1",
        "stratus_agent_queue_lag_seconds{remote_name=\"ep\"}",
        "stratus_agent_shards{remote_name=\"ep\"} 0",
        "stratus_agent_send_duration_seconds_count{remote_name=\"ep\"} 1",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

mod stratus_server {
    use super::*;
    use stratus_api::{AuthMode, ServerConfig, serve};
    use tokio::net::TcpListener;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_real_server_receives_through_the_queue() {
        let data = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            ServerConfig {
                data_dir: data.path().to_path_buf(),
                auth: AuthMode::None,
                ..ServerConfig::default()
            },
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        let url = format!("http://{addr}/api/v1/write");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let m = metrics();
        for (i, proto) in [ProtocolVersion::V1, ProtocolVersion::V2]
            .into_iter()
            .enumerate()
        {
            let dir = tempfile::tempdir().unwrap();
            let q = open(dir.path(), &m);
            let mut s = settings(&url);
            s.name = format!("ep{i}");
            s.protocol = proto;
            let sender = Sender::start(s, q.clone(), None, &m).unwrap();
            let name = format!("agent_v{}", i + 1);
            for k in 0..10 {
                q.append(batch(&name, now - 10_000 + k * 1000, 3)).unwrap();
            }
            assert!(sender.drain(Duration::from_secs(10)).await);
            assert_eq!(m.samples_sent(&format!("ep{i}")), 30);
        }
        let client = {
            stratus_agent::httpclient::install_crypto_provider();
            reqwest::Client::new()
        };
        for name in ["agent_v1", "agent_v2"] {
            let q = format!("count_over_time({name}[1m])");
            let text = client
                .get(format!("http://{addr}/api/v1/query"))
                .query(&[
                    ("query", q.as_str()),
                    ("time", &((now / 1000) as f64).to_string()),
                ])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let resp: serde_json::Value = serde_json::from_str(&text).unwrap();
            let result = resp["data"]["result"].as_array().unwrap();
            assert_eq!(result.len(), 3, "{resp}");
            for r in result {
                assert_eq!(r["value"][1], "10", "{resp}");
            }
        }
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    }
}
