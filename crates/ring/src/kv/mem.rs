//! `MemKv`: an in-process [`Kv`] for single-process mode and tests.
//!
//! A `BTreeMap` under a mutex with one revision counter, so it has the same
//! version semantics as etcd. Watchers receive events through a bounded
//! broadcast channel; a watcher that falls more than 4096 events behind
//! gets [`Error::WatchLagged`] and must re-list.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::{CasOutcome, Kv, Listing, Precondition, Versioned, WatchEvent, WatchStream};
use crate::error::{Error, Result};

const WATCH_CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct State {
    revision: i64,
    map: BTreeMap<String, Versioned>,
}

/// In-memory [`Kv`]; clones share the same store.
#[derive(Debug, Clone)]
pub struct MemKv {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<WatchEvent>,
}

impl Default for MemKv {
    fn default() -> Self {
        Self::new()
    }
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(WATCH_CAPACITY);
        Self {
            state: Arc::new(Mutex::new(State::default())),
            events,
        }
    }

    fn check(state: &State, key: &str, cond: Precondition) -> Option<CasOutcome> {
        let current = state.map.get(key);
        let ok = match cond {
            Precondition::Any => true,
            Precondition::Absent => current.is_none(),
            Precondition::Version(v) => current.is_some_and(|c| c.version == v),
        };
        if ok {
            None
        } else {
            Some(CasOutcome::Conflict {
                current: current.cloned(),
            })
        }
    }

    fn put_sync(&self, key: &str, value: Vec<u8>, cond: Precondition) -> CasOutcome {
        let mut state = self.state.lock();
        if let Some(conflict) = Self::check(&state, key, cond) {
            return conflict;
        }
        state.revision += 1;
        let v = Versioned {
            value,
            version: state.revision,
        };
        state.map.insert(key.to_string(), v.clone());
        // Sent under the lock so watchers see events in revision order;
        // an error only means nobody is watching.
        let _ = self.events.send(WatchEvent::Put {
            key: key.to_string(),
            value: v,
        });
        CasOutcome::Done {
            version: state.revision,
        }
    }

    fn delete_sync(&self, key: &str, cond: Precondition) -> CasOutcome {
        let mut state = self.state.lock();
        if let Some(conflict) = Self::check(&state, key, cond) {
            return conflict;
        }
        if state.map.remove(key).is_none() {
            return CasOutcome::Done {
                version: state.revision,
            };
        }
        state.revision += 1;
        let _ = self.events.send(WatchEvent::Delete {
            key: key.to_string(),
            revision: state.revision,
        });
        CasOutcome::Done {
            version: state.revision,
        }
    }

    fn list_sync(&self, prefix: &str) -> Listing {
        let state = self.state.lock();
        let entries = state
            .map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Listing {
            revision: state.revision,
            entries,
        }
    }
}

impl Kv for MemKv {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>>> {
        let v = self.state.lock().map.get(key).cloned();
        futures::future::ready(Ok(v)).boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        cond: Precondition,
    ) -> BoxFuture<'a, Result<CasOutcome>> {
        futures::future::ready(Ok(self.put_sync(key, value, cond))).boxed()
    }

    fn delete<'a>(&'a self, key: &'a str, cond: Precondition) -> BoxFuture<'a, Result<CasOutcome>> {
        futures::future::ready(Ok(self.delete_sync(key, cond))).boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>> {
        futures::future::ready(Ok(self.list_sync(prefix))).boxed()
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<WatchStream>> {
        let rx = self.events.subscribe();
        let prefix = prefix.to_string();
        let stream = futures::stream::unfold(Some(rx), move |rx| {
            let prefix = prefix.clone();
            async move {
                let mut rx = rx?;
                loop {
                    match rx.recv().await {
                        Ok(ev) if ev.key().starts_with(&prefix) => return Some((Ok(ev), Some(rx))),
                        Ok(_) => continue,
                        // Report the gap once, then end the stream.
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            return Some((Err(Error::WatchLagged { missed }), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        futures::future::ready(Ok(Box::pin(stream) as WatchStream)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn cas_semantics() {
        let kv = MemKv::new();
        let CasOutcome::Done { version: v1 } = kv
            .put("a/x", b"1".to_vec(), Precondition::Absent)
            .await
            .unwrap()
        else {
            panic!("first create must succeed");
        };
        // Second create conflicts and reports the current value.
        match kv
            .put("a/x", b"2".to_vec(), Precondition::Absent)
            .await
            .unwrap()
        {
            CasOutcome::Conflict { current: Some(c) } => assert_eq!(c.version, v1),
            o => panic!("unexpected {o:?}"),
        }
        let CasOutcome::Done { version: v2 } = kv
            .put("a/x", b"2".to_vec(), Precondition::Version(v1))
            .await
            .unwrap()
        else {
            panic!("cas on current version must succeed");
        };
        assert!(v2 > v1);
        // A stale version loses.
        assert!(matches!(
            kv.put("a/x", b"3".to_vec(), Precondition::Version(v1))
                .await
                .unwrap(),
            CasOutcome::Conflict { .. }
        ));
        assert!(matches!(
            kv.delete("a/x", Precondition::Version(v1)).await.unwrap(),
            CasOutcome::Conflict { .. }
        ));
        kv.put("b/y", b"o".to_vec(), Precondition::Any)
            .await
            .unwrap();
        let l = kv.list("a/").await.unwrap();
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries[0].1.value, b"2");
        assert!(matches!(
            kv.delete("a/x", Precondition::Version(v2)).await.unwrap(),
            CasOutcome::Done { .. }
        ));
        assert_eq!(kv.get("a/x").await.unwrap(), None);
    }

    #[tokio::test]
    async fn watch_filters_prefix() {
        let kv = MemKv::new();
        let mut w = kv.watch("p/").await.unwrap();
        kv.put("q/1", vec![1], Precondition::Any).await.unwrap();
        kv.put("p/1", vec![2], Precondition::Any).await.unwrap();
        kv.delete("p/1", Precondition::Any).await.unwrap();
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.key(), "p/1");
        assert!(matches!(ev, WatchEvent::Put { .. }));
        let ev2 = w.next().await.unwrap().unwrap();
        assert!(matches!(ev2, WatchEvent::Delete { .. }));
        assert!(ev2.revision() > ev.revision());
    }
}
