//! A cheap remote-write receiver for agent benchmarks: accepts remote
//! write 1.0 and 2.0 on any path, decodes each request (snappy +
//! protobuf), counts requests, series entries, samples and bytes, and
//! stores nothing. `GET /stats` returns the totals as JSON, so a script
//! reads the samples an agent pushed between two instants.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prost::Message as _;
use stratus_proto::{prometheus, write_v2};

/// Running totals of a sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Requests decoded.
    pub requests: AtomicU64,
    /// Requests that failed to decode.
    pub bad_requests: AtomicU64,
    /// Series entries (a series repeated in two requests counts twice).
    pub series: AtomicU64,
    /// Float samples.
    pub samples: AtomicU64,
    /// Compressed request bytes.
    pub bytes: AtomicU64,
}

impl SinkStats {
    /// The totals as a JSON object.
    pub fn json(&self) -> String {
        serde_json::json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "bad_requests": self.bad_requests.load(Ordering::Relaxed),
            "series": self.series.load(Ordering::Relaxed),
            "samples": self.samples.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
        })
        .to_string()
    }
}

fn decode(headers: &HeaderMap, body: &[u8]) -> Result<(u64, u64, bool), String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    let v2 = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("io.prometheus.write.v2.Request"));
    if v2 {
        let r = write_v2::Request::decode(&raw[..]).map_err(|e| format!("protobuf: {e}"))?;
        let samples = r.timeseries.iter().map(|t| t.samples.len() as u64).sum();
        Ok((r.timeseries.len() as u64, samples, true))
    } else {
        let r = prometheus::WriteRequest::decode(&raw[..]).map_err(|e| format!("protobuf: {e}"))?;
        let samples = r.timeseries.iter().map(|t| t.samples.len() as u64).sum();
        Ok((r.timeseries.len() as u64, samples, false))
    }
}

async fn write(State(st): State<Arc<SinkStats>>, headers: HeaderMap, body: Bytes) -> Response {
    st.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    match decode(&headers, &body) {
        Ok((series, samples, v2)) => {
            st.requests.fetch_add(1, Ordering::Relaxed);
            st.series.fetch_add(series, Ordering::Relaxed);
            st.samples.fetch_add(samples, Ordering::Relaxed);
            if v2 {
                (
                    StatusCode::NO_CONTENT,
                    [
                        (
                            "X-Prometheus-Remote-Write-Samples-Written",
                            samples.to_string(),
                        ),
                        (
                            "X-Prometheus-Remote-Write-Histograms-Written",
                            "0".to_string(),
                        ),
                        (
                            "X-Prometheus-Remote-Write-Exemplars-Written",
                            "0".to_string(),
                        ),
                    ],
                )
                    .into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        Err(e) => {
            st.bad_requests.fetch_add(1, Ordering::Relaxed);
            (StatusCode::BAD_REQUEST, e).into_response()
        }
    }
}

async fn stats(State(st): State<Arc<SinkStats>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], st.json())
}

/// Serves the sink on `addr` until the process ends.
pub async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let st = Arc::new(SinkStats::default());
    let app = Router::new()
        .route("/stats", get(stats))
        .fallback(axum::routing::post(write))
        .with_state(st);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v1() {
        let req = prometheus::WriteRequest {
            timeseries: vec![prometheus::TimeSeries {
                samples: vec![
                    prometheus::Sample {
                        value: 1.0,
                        timestamp: 1,
                    },
                    prometheus::Sample {
                        value: 2.0,
                        timestamp: 2,
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap_or_default();
        assert_eq!(decode(&HeaderMap::new(), &body), Ok((1, 2, false)));
        assert!(decode(&HeaderMap::new(), b"junk").is_err());
    }
}
