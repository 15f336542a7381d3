//! `EtcdKv`: the [`Kv`] trait over an etcd v3 cluster (`etcd-client`).
//!
//! Reads are linearizable range requests; conditional writes are one-op
//! transactions comparing the key's `mod_revision` (or `create_revision
//! == 0` for "absent"), whose failure branch reads the key back so a
//! conflict reports the current value in the same round trip. Watches are
//! etcd prefix watches; a cancelled watch (compaction) or a broken stream
//! ends the [`WatchStream`] with an error, and the consumer re-lists.
//! Every unary request is bounded by the configured request timeout.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use snafu::ResultExt;

use super::{CasOutcome, Kv, Listing, Precondition, Versioned, WatchEvent, WatchStream};
use crate::error::{Error, EtcdSnafu, Result};

/// Connection settings for [`EtcdKv`].
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Time to establish a connection (default 5s).
    pub dial_timeout: Duration,
    /// Bound on each unary request (default 5s).
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// Settings for `endpoints` with default timeouts.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// [`Kv`] backed by etcd. Cheap to clone (one shared gRPC channel).
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

fn timeout_error(op: &'static str) -> Error {
    Error::Etcd {
        op,
        source: etcd_client::Error::IoError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "request timed out",
        )),
    }
}

impl EtcdKv {
    /// Connects to the cluster. The connection is lazy in etcd-client's
    /// balanced channel, so this also issues one status-free `get` to
    /// fail early when no endpoint answers.
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self> {
        if cfg.endpoints.is_empty() {
            return Err(Error::Config {
                message: "etcd endpoints must not be empty".into(),
            });
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(cfg.dial_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = tokio::time::timeout(
            cfg.dial_timeout,
            Client::connect(cfg.endpoints.clone(), Some(opts)),
        )
        .await
        .map_err(|_| timeout_error("connect"))?
        .context(EtcdSnafu { op: "connect" })?;
        let kv = Self {
            client,
            request_timeout: cfg.request_timeout,
        };
        kv.get("\u{0}stratus-connect-check").await?;
        Ok(kv)
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        tokio::time::timeout(self.request_timeout, fut)
            .await
            .map_err(|_| timeout_error(op))?
            .context(EtcdSnafu { op })
    }

    fn compare(key: &str, cond: Precondition) -> Option<Compare> {
        match cond {
            Precondition::Any => None,
            Precondition::Absent => Some(Compare::create_revision(key, CompareOp::Equal, 0)),
            Precondition::Version(v) => Some(Compare::mod_revision(key, CompareOp::Equal, v)),
        }
    }

    async fn conditional(&self, key: &str, cond: Compare, op: TxnOp) -> Result<CasOutcome> {
        let txn = Txn::new()
            .when([cond])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let resp = self.bounded("txn", kv.txn(txn)).await?;
        if resp.succeeded() {
            let version = resp.header().map(|h| h.revision()).unwrap_or_default();
            return Ok(CasOutcome::Done { version });
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| Versioned {
                value: kv.value().to_vec(),
                version: kv.mod_revision(),
            }),
            _ => None,
        });
        Ok(CasOutcome::Conflict { current })
    }

    async fn put_impl(&self, key: &str, value: Vec<u8>, cond: Precondition) -> Result<CasOutcome> {
        match Self::compare(key, cond) {
            None => {
                let mut kv = self.client.kv_client();
                let resp = self.bounded("put", kv.put(key, value, None)).await?;
                let version = resp.header().map(|h| h.revision()).unwrap_or_default();
                Ok(CasOutcome::Done { version })
            }
            Some(c) => self.conditional(key, c, TxnOp::put(key, value, None)).await,
        }
    }

    async fn delete_impl(&self, key: &str, cond: Precondition) -> Result<CasOutcome> {
        match Self::compare(key, cond) {
            None => {
                let mut kv = self.client.kv_client();
                let resp = self.bounded("delete", kv.delete(key, None)).await?;
                let version = resp.header().map(|h| h.revision()).unwrap_or_default();
                Ok(CasOutcome::Done { version })
            }
            Some(c) => self.conditional(key, c, TxnOp::delete(key, None)).await,
        }
    }

    async fn get_impl(&self, key: &str) -> Result<Option<Versioned>> {
        let mut kv = self.client.kv_client();
        let resp = self.bounded("get", kv.get(key, None)).await?;
        Ok(resp.kvs().first().map(|kv| Versioned {
            value: kv.value().to_vec(),
            version: kv.mod_revision(),
        }))
    }

    async fn list_impl(&self, prefix: &str) -> Result<Listing> {
        let mut kv = self.client.kv_client();
        let resp = self
            .bounded(
                "list",
                kv.get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let mut entries: Vec<(String, Versioned)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                // Keys we did not write may not be UTF-8; they are not ours.
                let key = kv.key_str().ok()?.to_string();
                Some((
                    key,
                    Versioned {
                        value: kv.value().to_vec(),
                        version: kv.mod_revision(),
                    },
                ))
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Listing { revision, entries })
    }

    async fn watch_impl(&self, prefix: &str) -> Result<WatchStream> {
        let mut wc = self.client.watch_client();
        let stream = self
            .bounded(
                "watch",
                wc.watch(prefix, Some(WatchOptions::new().with_prefix())),
            )
            .await?;
        // The server starts the watch at its revision when it creates it;
        // wait for that confirmation so a listing taken after this returns
        // cannot miss a change.
        let mut stream = stream;
        match tokio::time::timeout(self.request_timeout, stream.next()).await {
            Err(_) => return Err(timeout_error("watch")),
            Ok(None) => {
                return Err(Error::WatchCancelled {
                    reason: "watch stream ended before it was created".into(),
                });
            }
            Ok(Some(Err(source))) => {
                return Err(Error::Etcd {
                    op: "watch",
                    source,
                });
            }
            Ok(Some(Ok(resp))) if resp.canceled() || !resp.created() => {
                return Err(Error::WatchCancelled {
                    reason: format!("watch not created: {}", resp.cancel_reason()),
                });
            }
            Ok(Some(Ok(_))) => {}
        }
        struct St {
            stream: etcd_client::WatchStream,
            pending: VecDeque<WatchEvent>,
            done: bool,
        }
        let st = St {
            stream,
            pending: VecDeque::new(),
            done: false,
        };
        let out = futures::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(ev) = st.pending.pop_front() {
                    return Some((Ok(ev), st));
                }
                if st.done {
                    return None;
                }
                match st.stream.next().await {
                    None => {
                        st.done = true;
                        return Some((
                            Err(Error::WatchCancelled {
                                reason: "watch stream ended".into(),
                            }),
                            st,
                        ));
                    }
                    Some(Err(source)) => {
                        st.done = true;
                        return Some((
                            Err(Error::Etcd {
                                op: "watch",
                                source,
                            }),
                            st,
                        ));
                    }
                    Some(Ok(resp)) => {
                        if resp.canceled() {
                            st.done = true;
                            let reason = format!(
                                "{} (compact revision {})",
                                resp.cancel_reason(),
                                resp.compact_revision()
                            );
                            return Some((Err(Error::WatchCancelled { reason }), st));
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let Ok(key) = kv.key_str() else { continue };
                            let key = key.to_string();
                            st.pending.push_back(match ev.event_type() {
                                EventType::Put => WatchEvent::Put {
                                    key,
                                    value: Versioned {
                                        value: kv.value().to_vec(),
                                        version: kv.mod_revision(),
                                    },
                                },
                                EventType::Delete => WatchEvent::Delete {
                                    key,
                                    revision: kv.mod_revision(),
                                },
                            });
                        }
                    }
                }
            }
        });
        Ok(Box::pin(out))
    }
}

impl Kv for EtcdKv {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>>> {
        self.get_impl(key).boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        cond: Precondition,
    ) -> BoxFuture<'a, Result<CasOutcome>> {
        self.put_impl(key, value, cond).boxed()
    }

    fn delete<'a>(&'a self, key: &'a str, cond: Precondition) -> BoxFuture<'a, Result<CasOutcome>> {
        self.delete_impl(key, cond).boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>> {
        self.list_impl(prefix).boxed()
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<WatchStream>> {
        self.watch_impl(prefix).boxed()
    }
}
