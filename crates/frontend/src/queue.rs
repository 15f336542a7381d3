//! Per-tenant fair queueing of downstream requests.
//!
//! Every downstream request (a whole query, a sub-query of a split one,
//! a pass-through) waits in its tenant's FIFO queue; a fixed pool of
//! workers (`max_concurrent`) takes the next request from the tenants
//! with queued work in round-robin order, so a tenant with a thousand
//! queued sub-queries delays another tenant's request by at most one
//! request per worker. A tenant's queue holds at most
//! `max_outstanding_per_tenant` requests; past that the request is
//! refused (the handler answers 429).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::downstream::{Answer, Downstream, Failure, Request};
use crate::metrics::Metrics;

/// A queued request and where its answer goes.
#[derive(Debug)]
struct Job {
    req: Request,
    reply: oneshot::Sender<Result<Answer, Failure>>,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<String, VecDeque<Job>>,
    /// Tenants with queued jobs, in serving order.
    ring: VecDeque<String>,
    closed: bool,
}

/// The tenant's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

/// Per-tenant queues served round-robin by a worker pool.
#[derive(Debug)]
pub(crate) struct FairQueue {
    state: Mutex<State>,
    notify: Notify,
    max_per_tenant: usize,
    metrics: Arc<Metrics>,
}

impl FairQueue {
    pub(crate) fn new(max_per_tenant: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_per_tenant,
            metrics,
        }
    }

    /// Starts `workers` tasks sending queued requests to `down`; they end
    /// after [`FairQueue::close`].
    pub(crate) fn start(
        self: &Arc<Self>,
        workers: usize,
        down: Arc<Downstream>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers.max(1))
            .map(|_| {
                let q = self.clone();
                let down = down.clone();
                tokio::spawn(async move {
                    while let Some(job) = q.next().await {
                        if job.reply.is_closed() {
                            // The client went away while it waited.
                            continue;
                        }
                        let m = q.metrics.clone();
                        let retried = move || {
                            m.retries.inc();
                        };
                        let r = down.send(&job.req, &retried).await;
                        let _ = job.reply.send(r);
                    }
                })
            })
            .collect()
    }

    /// Queues `req` for `tenant`; the receiver yields its answer.
    pub(crate) fn submit(
        &self,
        tenant: &str,
        req: Request,
    ) -> Result<oneshot::Receiver<Result<Answer, Failure>>, QueueFull> {
        let (tx, rx) = oneshot::channel();
        {
            let mut g = self.state.lock();
            if g.closed {
                return Err(QueueFull);
            }
            let st = &mut *g;
            let q = st.queues.entry(tenant.to_string()).or_default();
            if q.len() >= self.max_per_tenant {
                drop(g);
                self.metrics.rejected(tenant);
                return Err(QueueFull);
            }
            let was_empty = q.is_empty();
            q.push_back(Job { req, reply: tx });
            let len = q.len();
            if was_empty {
                st.ring.push_back(tenant.to_string());
            }
            self.metrics.queue_length(tenant, len);
        }
        self.notify.notify_one();
        Ok(rx)
    }

    /// Takes the next job in round-robin order over tenants.
    fn pop(&self) -> Option<Job> {
        let mut g = self.state.lock();
        let st = &mut *g;
        while let Some(t) = st.ring.pop_front() {
            let Some(q) = st.queues.get_mut(&t) else {
                continue;
            };
            let Some(job) = q.pop_front() else {
                st.queues.remove(&t);
                continue;
            };
            let len = q.len();
            if len == 0 {
                st.queues.remove(&t);
            } else {
                st.ring.push_back(t.clone());
            }
            self.metrics.queue_length(&t, len);
            return Some(job);
        }
        None
    }

    async fn next(&self) -> Option<Job> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(j) = self.pop() {
                // Others may be waiting for more work.
                self.notify.notify_one();
                return Some(j);
            }
            if self.state.lock().closed {
                return None;
            }
            notified.await;
        }
    }

    /// Refuses new requests from now on; the workers end once the queued
    /// ones are served.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::{HeaderName, HeaderValue, Method};
    use bytes::Bytes;

    use super::*;

    /// A fake querier: answers after `delay`, recording the org id of
    /// every request in arrival order.
    async fn fake(delay: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let app = axum::Router::new().fallback(move |h: axum::http::HeaderMap| {
            let seen = s2.clone();
            async move {
                let t = h
                    .get("x-scope-orgid")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.lock().push(t);
                tokio::time::sleep(delay).await;
                "ok"
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (format!("http://{addr}"), seen)
    }

    fn req(tenant: &str) -> Request {
        Request {
            method: Method::GET,
            path_and_query: "/api/v1/query?query=1".into(),
            headers: vec![(
                HeaderName::from_static("x-scope-orgid"),
                HeaderValue::from_str(tenant).unwrap(),
            )],
            body: Bytes::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flooding_tenant_does_not_starve_another() {
        let (url, seen) = fake(Duration::from_millis(20)).await;
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(FairQueue::new(30, metrics.clone()));
        let down = Arc::new(Downstream::new(&[url], 0, Duration::from_secs(5)));
        // Tenant a floods first (30 queued), then b asks once.
        let mut a = Vec::new();
        for _ in 0..30 {
            a.push(q.submit("a", req("a")).unwrap());
        }
        assert_eq!(q.submit("a", req("a")).unwrap_err(), QueueFull);
        let b = q.submit("b", req("b")).unwrap();
        let workers = q.start(1, down);
        let got = tokio::time::timeout(Duration::from_secs(5), b)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.status, 200);
        // One worker: b is served second (after the one a already had).
        let order = seen.lock().clone();
        let pos = order.iter().position(|t| t == "b").unwrap();
        assert!(pos <= 1, "b served at position {pos}: {order:?}");
        assert!(order.len() < 5, "{order:?}");
        for rx in a {
            let r = tokio::time::timeout(Duration::from_secs(5), rx)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(r.status, 200);
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                "stratus_frontend_rejected_requests_total{tenant=\"a\",reason=\"queue_full\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("stratus_frontend_queue_length{tenant=\"a\"} 0"),
            "{text}"
        );
        q.close();
        for w in workers {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(q.submit("a", req("a")).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interleaves_tenants_round_robin() {
        let (url, seen) = fake(Duration::from_millis(2)).await;
        let q = Arc::new(FairQueue::new(100, Arc::new(Metrics::new())));
        let mut rxs = Vec::new();
        for _ in 0..6 {
            rxs.push(q.submit("a", req("a")).unwrap());
        }
        for _ in 0..3 {
            rxs.push(q.submit("b", req("b")).unwrap());
        }
        let down = Arc::new(Downstream::new(&[url], 0, Duration::from_secs(5)));
        let _w = q.start(1, down);
        for rx in rxs {
            tokio::time::timeout(Duration::from_secs(5), rx)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let order = seen.lock().join("");
        assert_eq!(order, "abababaaa");
        q.close();
    }
}
