//! One remote-write HTTP request and what its outcome means for retrying:
//! 2xx done; 5xx, 429 (when enabled) and network errors retried (with the
//! server's `Retry-After` when it gives one); every other status final.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Auth, ProtocolVersion, RemoteSettings};

/// Longest `Retry-After` honoured (a longer one is cut to this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Bytes of an error response body kept for the log.
const MAX_BODY_LOG: usize = 1024;

/// What became of a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Accepted (2xx).
    Done,
    /// Try again: after `after` if the server said so, else backoff.
    Retry {
        after: Option<Duration>,
        what: String,
    },
    /// Rejected for good: drop the data.
    Fail { status: u16, what: String },
}

/// An HTTP client bound to one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    auth: Option<Auth>,
    retry_on_429: bool,
}

/// A header that could not be used.
#[derive(Debug)]
pub(crate) struct BadHeader(pub(crate) String);

impl Client {
    pub(crate) fn new(s: &RemoteSettings) -> Result<Self, BadHeader> {
        let mut headers = HeaderMap::new();
        let (ct, ver) = match s.protocol {
            ProtocolVersion::V1 => ("application/x-protobuf", "0.1.0"),
            ProtocolVersion::V2 => (
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                "2.0.0",
            ),
        };
        headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static(ct));
        headers.insert(
            reqwest::header::CONTENT_ENCODING,
            HeaderValue::from_static("snappy"),
        );
        headers.insert(
            "x-prometheus-remote-write-version",
            HeaderValue::from_static(ver),
        );
        for (k, v) in &s.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| BadHeader(format!("header name {k:?}: {e}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|e| BadHeader(format!("value of header {k:?}: {e}")))?;
            headers.insert(name, value);
        }
        let http_cfg = crate::config::HttpClientConfig {
            tls_config: s.tls_config.clone(),
            proxy_url: s.proxy_url.clone(),
            follow_redirects: true,
            ..Default::default()
        };
        let http = crate::httpclient::client_builder(&http_cfg)
            .map_err(BadHeader)?
            .default_headers(headers)
            .timeout(s.timeout)
            .build()
            .map_err(|e| BadHeader(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            url: s.url.clone(),
            auth: s.auth.clone(),
            retry_on_429: s.retry_on_http_429,
        })
    }

    /// Sends one compressed body; `attempt` counts retries (0 first).
    pub(crate) async fn send(&self, body: bytes::Bytes, attempt: u32) -> Outcome {
        let mut req = self.http.post(&self.url).body(body);
        if attempt > 0 {
            req = req.header("retry-attempt", attempt.to_string());
        }
        req = match &self.auth {
            Some(Auth::Basic { username, password }) => req.basic_auth(username, Some(password)),
            Some(Auth::Bearer(token)) => req.bearer_auth(token),
            None => req,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    what: format!("request failed: {e}"),
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Done;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = resp.bytes().await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY_LOG)]);
        let what = format!("server returned HTTP status {status}: {}", text.trim());
        let code = status.as_u16();
        if status.is_server_error() || (code == 429 && self.retry_on_429) {
            Outcome::Retry {
                after: retry_after,
                what,
            }
        } else {
            Outcome::Fail { status: code, what }
        }
    }
}

/// Parses `Retry-After`: delay seconds or an HTTP-date.
pub(crate) fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("999999", now),
            Some(Duration::from_secs(300))
        );
    }
}
