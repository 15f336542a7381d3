//! The queriers behind the frontend: one HTTP request sent round-robin,
//! retried on the next downstream after a connection error or a 5xx, up
//! to `max_retries` times.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use bytes::Bytes;

/// One request to a downstream: what the client sent, minus the host.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: Method,
    /// Path and query string, e.g. `/api/v1/query?query=up`.
    pub(crate) path_and_query: String,
    /// Forwarded headers (authorization, org id, content type).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

/// A downstream's answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) www_authenticate: Option<HeaderValue>,
    pub(crate) body: Bytes,
}

/// Why no downstream answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request ran past the downstream timeout.
    Timeout(String),
    /// Every attempt failed to connect or to read the answer.
    Unavailable(String),
}

/// Round-robin client of the downstream queriers.
#[derive(Debug)]
pub(crate) struct Downstream {
    client: reqwest::Client,
    urls: Vec<String>,
    next: AtomicUsize,
    max_retries: usize,
    timeout: Duration,
}

/// `host:port` → `http://host:port`; trailing slashes dropped.
pub(crate) fn normalize_url(u: &str) -> String {
    let u = u.trim().trim_end_matches('/');
    if u.contains("://") {
        u.to_string()
    } else {
        format!("http://{u}")
    }
}

impl Downstream {
    pub(crate) fn new(urls: &[String], max_retries: usize, timeout: Duration) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            client: reqwest::Client::new(),
            urls: urls.iter().map(|u| normalize_url(u)).collect(),
            next: AtomicUsize::new(0),
            max_retries,
            timeout,
        }
    }

    /// Sends `req`; a 5xx answer is returned after the last retry (the
    /// caller turns it into a 503), connection errors and timeouts are a
    /// [`Failure`]. `retried` is called once per retry.
    pub(crate) async fn send(
        &self,
        req: &Request,
        retried: &(dyn Fn() + Sync),
    ) -> Result<Answer, Failure> {
        let mut last = Failure::Unavailable("no downstream configured".into());
        if self.urls.is_empty() {
            return Err(last);
        }
        for attempt in 0..=self.max_retries {
            if attempt > 0 {
                retried();
                tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len();
            let base = &self.urls[i];
            let mut rb = self
                .client
                .request(req.method.clone(), format!("{base}{}", req.path_and_query))
                .timeout(self.timeout)
                .body(req.body.clone());
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) if e.is_timeout() => {
                    return Err(Failure::Timeout(format!(
                        "downstream {base} did not answer within {:?}",
                        self.timeout
                    )));
                }
                Err(e) => {
                    last = Failure::Unavailable(format!("downstream {base}: {e}"));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let content_type = resp.headers().get("content-type").cloned();
            let www_authenticate = resp.headers().get("www-authenticate").cloned();
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) if e.is_timeout() => {
                    return Err(Failure::Timeout(format!(
                        "downstream {base} did not answer within {:?}",
                        self.timeout
                    )));
                }
                Err(e) => {
                    last = Failure::Unavailable(format!("downstream {base}: reading answer: {e}"));
                    continue;
                }
            };
            let answer = Answer {
                status,
                content_type,
                www_authenticate,
                body,
            };
            if status >= 500 && attempt < self.max_retries {
                continue;
            }
            return Ok(answer);
        }
        Err(last)
    }
}
