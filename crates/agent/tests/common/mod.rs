//! Shared by the agent's integration tests and benchmark: a remote-write
//! receiver on 127.0.0.1 that decodes 1.0 and 2.0 payloads, records what
//! it got, and can be told to fail, be slow, or go away.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use stratus_agent::sink::{Batch, SeriesSamples};
use stratus_model::{Labels, Sample};
use stratus_proto::{prometheus as v1, write_v2 as v2};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How the receiver answers.
#[derive(Debug, Clone)]
pub(crate) struct Fail {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    /// Requests to fail before answering normally again.
    pub(crate) times: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Recorded {
    /// Series key (`a="b",c="d"`) → samples in arrival order.
    pub(crate) series: HashMap<String, Vec<(i64, f64)>>,
    /// 1.0 metadata received.
    pub(crate) metadata: Vec<v1::MetricMetadata>,
    /// 2.0 requests as received.
    pub v2: Vec<v2::Request>,
    /// Headers of the last request.
    pub(crate) headers: Option<HeaderMap>,
    /// Samples accepted.
    pub(crate) samples: usize,
}

#[derive(Debug, Default)]
pub(crate) struct RecvState {
    pub(crate) fail: Mutex<Option<Fail>>,
    pub(crate) delay: Mutex<Duration>,
    pub(crate) rec: Mutex<Recorded>,
    pub(crate) requests: AtomicUsize,
    pub(crate) down: AtomicBool,
    /// Skip decoding (benchmark: count bytes only).
    pub(crate) count_only: AtomicBool,
}

pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    pub(crate) url: String,
    pub(crate) state: Arc<RecvState>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

pub(crate) fn key(labels: impl IntoIterator<Item = (String, String)>) -> String {
    let mut v: Vec<(String, String)> = labels.into_iter().collect();
    v.sort();
    v.iter()
        .map(|(n, v)| format!("{n}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn write(State(st): State<Arc<RecvState>>, headers: HeaderMap, body: Bytes) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    if st.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let delay = *st.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    {
        let mut f = st.fail.lock().unwrap();
        if let Some(fail) = f.as_mut() {
            if fail.times > 0 {
                fail.times -= 1;
                let mut resp = (
                    StatusCode::from_u16(fail.status).unwrap(),
                    format!("told to fail with {}", fail.status),
                )
                    .into_response();
                if let Some(ra) = &fail.retry_after {
                    resp.headers_mut()
                        .insert("retry-after", ra.parse().unwrap());
                }
                return resp;
            }
        }
    }
    let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&body) else {
        return (StatusCode::BAD_REQUEST, "bad snappy").into_response();
    };
    if st.count_only.load(Ordering::Relaxed) {
        return StatusCode::NO_CONTENT.into_response();
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut rec = st.rec.lock().unwrap();
    if ct.contains("io.prometheus.write.v2.Request") {
        let Ok(req) = v2::Request::decode(raw.as_slice()) else {
            return (StatusCode::BAD_REQUEST, "bad v2 protobuf").into_response();
        };
        for ts in &req.timeseries {
            let pairs = ts.labels_refs.chunks(2).map(|c| {
                (
                    req.symbols[c[0] as usize].clone(),
                    req.symbols[c[1] as usize].clone(),
                )
            });
            let k = key(pairs);
            let e = rec.series.entry(k).or_default();
            for s in &ts.samples {
                e.push((s.timestamp, s.value));
            }
            rec.samples += ts.samples.len();
        }
        rec.v2.push(req);
    } else {
        let Ok(req) = v1::WriteRequest::decode(raw.as_slice()) else {
            return (StatusCode::BAD_REQUEST, "bad v1 protobuf").into_response();
        };
        for ts in &req.timeseries {
            let k = key(ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())));
            let e = rec.series.entry(k).or_default();
            for s in &ts.samples {
                e.push((s.timestamp, s.value));
            }
            rec.samples += ts.samples.len();
        }
        rec.metadata.extend(req.metadata);
    }
    rec.headers = Some(headers);
    StatusCode::NO_CONTENT.into_response()
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut r = Receiver {
            addr,
            url: format!("http://{addr}/api/v1/write"),
            state: Arc::new(RecvState::default()),
            server: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = Router::new()
            .route("/api/v1/write", post(write))
            .with_state(self.state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        self.server = Some((tx, h));
    }

    /// Goes away: the port refuses connections until [`Receiver::restart`].
    pub(crate) async fn stop(&mut self) {
        self.state.down.store(true, Ordering::SeqCst);
        if let Some((tx, h)) = self.server.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    }

    /// Comes back on the same port.
    pub(crate) async fn restart(&mut self) {
        let mut listener = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        self.state.down.store(false, Ordering::SeqCst);
        self.serve(listener.expect("rebind the receiver's port"));
    }

    pub(crate) fn fail(&self, status: u16, times: usize, retry_after: Option<&str>) {
        *self.state.fail.lock().unwrap() = Some(Fail {
            status,
            retry_after: retry_after.map(str::to_string),
            times,
        });
    }

    pub(crate) fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    pub(crate) fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn samples(&self) -> usize {
        self.state.rec.lock().unwrap().samples
    }

    pub(crate) fn series(&self) -> HashMap<String, Vec<(i64, f64)>> {
        self.state.rec.lock().unwrap().series.clone()
    }

    /// Waits (bounded) until `n` samples arrived.
    pub(crate) async fn wait_samples(&self, n: usize, within: Duration) -> bool {
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            if self.samples() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.samples() >= n
    }
}

/// Key of test series `s` of metric `name` (no external labels).
pub(crate) fn series_key(name: &str, s: usize) -> String {
    key([
        ("__name__".to_string(), name.to_string()),
        ("s".to_string(), s.to_string()),
    ])
}

/// One batch: `series` series of metric `name`, one sample at `t`
/// (value `t`).
pub(crate) fn batch(name: &str, t: i64, series: usize) -> Batch {
    Batch {
        series: (0..series)
            .map(|s| SeriesSamples {
                labels: Labels::from_pairs([("__name__", name.to_string()), ("s", s.to_string())]),
                samples: vec![Sample::new(t, t as f64)],
            })
            .collect(),
        metadata: vec![],
    }
}

/// Checks every series got exactly timestamps `ts` in order, allowing
/// repeats of a contiguous run (a resent request); returns the number of
/// duplicated samples.
pub(crate) fn check_series(
    got: &HashMap<String, Vec<(i64, f64)>>,
    name: &str,
    series: usize,
    ts: &[i64],
) -> usize {
    let mut dups = 0;
    for s in 0..series {
        let k = series_key(name, s);
        let v = got.get(&k).unwrap_or_else(|| panic!("series {k} missing"));
        // Order: never goes back except when a resent run starts again.
        let mut seen: Vec<i64> = v.iter().map(|x| x.0).collect();
        let n = seen.len();
        seen.dedup();
        let mut uniq = seen.clone();
        uniq.sort();
        uniq.dedup();
        dups += n - uniq.len();
        assert_eq!(uniq, ts, "series {k}: wrong timestamps");
        // Sorted after removing resends: each value first seen in order.
        let mut first_seen = Vec::new();
        for t in &seen {
            if !first_seen.contains(t) {
                first_seen.push(*t);
            }
        }
        assert_eq!(first_seen, ts, "series {k}: out of order");
    }
    dups
}
