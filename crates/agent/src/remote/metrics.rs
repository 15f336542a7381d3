//! The push side's own metrics (queue and senders), registered on a
//! registry the caller owns so that it can serve them on `/metrics`:
//! `stratus_agent_*` names, and the same counters again under the names
//! Prometheus 2.42 uses (`prometheus_remote_storage_*`, labelled by
//! `remote_name`) so that its usual alerts work unchanged.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RemoteLabel {
    pub(crate) remote_name: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) remote_name: String,
    pub(crate) reason: String,
}

fn send_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

/// Metric families of the queue and the senders, labelled by
/// `remote_name` (the endpoint's name). Every name starts with
/// `stratus_agent_`.
#[derive(Debug)]
pub struct PushMetrics {
    pub(crate) queue_appended_samples: Family<RemoteLabel, Counter>,
    pub(crate) queue_appended_bytes: Family<RemoteLabel, Counter>,
    pub(crate) queue_dropped_samples: Family<RemoteLabel, Counter>,
    pub(crate) queue_corruptions: Family<RemoteLabel, Counter>,
    pub(crate) queue_bytes: Family<RemoteLabel, Gauge>,
    pub(crate) queue_segments: Family<RemoteLabel, Gauge>,
    pub(crate) queue_lag: Family<RemoteLabel, Gauge<f64, AtomicU64>>,
    pub(crate) samples_sent: Family<RemoteLabel, Counter>,
    pub(crate) samples_failed: Family<ReasonLabels, Counter>,
    pub(crate) samples_retried: Family<RemoteLabel, Counter>,
    pub(crate) samples_relabel_dropped: Family<RemoteLabel, Counter>,
    pub(crate) metadata_sent: Family<RemoteLabel, Counter>,
    pub(crate) bytes_sent: Family<RemoteLabel, Counter>,
    pub(crate) shards: Family<RemoteLabel, Gauge>,
    pub(crate) shards_desired: Family<RemoteLabel, Gauge<f64, AtomicU64>>,
    pub(crate) send_duration: Family<RemoteLabel, Histogram, fn() -> Histogram>,
    pub(crate) samples_pending: Family<RemoteLabel, Gauge>,
    pub(crate) highest_sent: Family<RemoteLabel, Gauge<f64, AtomicU64>>,
    pub(crate) shards_min: Family<RemoteLabel, Gauge>,
    pub(crate) shards_max: Family<RemoteLabel, Gauge>,
}

impl PushMetrics {
    /// Creates the families and registers them on `registry`.
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Self::unregistered();
        registry.register(
            "stratus_agent_queue_appended_samples",
            "Samples appended to the on-disk queue.",
            m.queue_appended_samples.clone(),
        );
        registry.register(
            "stratus_agent_queue_appended_bytes",
            "Bytes appended to the on-disk queue (records with their frames).",
            m.queue_appended_bytes.clone(),
        );
        registry.register(
            "stratus_agent_queue_dropped_samples",
            "Unsent samples dropped because the queue exceeded its disk budget.",
            m.queue_dropped_samples.clone(),
        );
        registry.register(
            "stratus_agent_queue_corruptions",
            "Corrupt queue records found while reading (the rest of their segment is skipped).",
            m.queue_corruptions.clone(),
        );
        registry.register(
            "stratus_agent_queue_bytes",
            "Bytes of queue segment files on disk.",
            m.queue_bytes.clone(),
        );
        registry.register(
            "stratus_agent_queue_segments",
            "Queue segment files on disk.",
            m.queue_segments.clone(),
        );
        registry.register(
            "stratus_agent_queue_lag_seconds",
            "Age of the oldest queued sample not yet acknowledged by the endpoint.",
            m.queue_lag.clone(),
        );
        registry.register(
            "stratus_agent_samples_sent",
            "Samples acknowledged by the remote-write endpoint.",
            m.samples_sent.clone(),
        );
        registry.register(
            "stratus_agent_samples_failed",
            "Samples dropped because the endpoint rejected them for good (4xx other than 429).",
            m.samples_failed.clone(),
        );
        registry.register(
            "stratus_agent_samples_retried",
            "Samples in requests that were retried (5xx, 429, network errors).",
            m.samples_retried.clone(),
        );
        registry.register(
            "stratus_agent_samples_relabel_dropped",
            "Samples of series dropped by write_relabel_configs.",
            m.samples_relabel_dropped.clone(),
        );
        registry.register(
            "stratus_agent_metadata_sent",
            "Metric metadata entries acknowledged by the endpoint.",
            m.metadata_sent.clone(),
        );
        registry.register(
            "stratus_agent_sent_bytes",
            "Compressed request bytes acknowledged by the endpoint.",
            m.bytes_sent.clone(),
        );
        registry.register(
            "stratus_agent_shards",
            "Concurrent remote-write shards running.",
            m.shards.clone(),
        );
        registry.register(
            "stratus_agent_shards_desired",
            "Shards the backlog calls for (before clamping to min/max).",
            m.shards_desired.clone(),
        );
        registry.register(
            "stratus_agent_send_duration_seconds",
            "Duration of one remote-write request (each attempt).",
            m.send_duration.clone(),
        );
        registry.register(
            "stratus_agent_samples_pending",
            "Samples waiting to be sent: in flight plus an estimate of the unread queue.",
            m.samples_pending.clone(),
        );
        m.register_prometheus_names(registry);
        Arc::new(m)
    }

    /// The Prometheus 2.42 names of the same families.
    fn register_prometheus_names(&self, r: &mut Registry) {
        let p = "prometheus_remote_storage_";
        r.register(
            format!("{p}samples"),
            "Samples sent to remote storage (acknowledged).",
            self.samples_sent.clone(),
        );
        r.register(
            format!("{p}samples_failed"),
            "Samples that failed on send to remote storage (non-recoverable errors).",
            self.samples_failed.clone(),
        );
        r.register(
            format!("{p}samples_retried"),
            "Samples that failed on send to remote storage but were retried.",
            self.samples_retried.clone(),
        );
        r.register(
            format!("{p}samples_dropped"),
            "Samples dropped by write_relabel_configs.",
            self.samples_relabel_dropped.clone(),
        );
        r.register(
            format!("{p}samples_pending"),
            "Samples waiting to be sent: in flight plus an estimate of the unread queue.",
            self.samples_pending.clone(),
        );
        r.register(
            format!("{p}bytes"),
            "Compressed bytes of samples sent to remote storage.",
            self.bytes_sent.clone(),
        );
        r.register(
            format!("{p}metadata"),
            "Metadata entries sent to remote storage.",
            self.metadata_sent.clone(),
        );
        r.register(
            format!("{p}shards"),
            "Shards used for parallel sending.",
            self.shards.clone(),
        );
        r.register(
            format!("{p}shards_desired"),
            "Shards the backlog calls for.",
            self.shards_desired.clone(),
        );
        r.register(
            format!("{p}shards_min"),
            "Configured min_shards.",
            self.shards_min.clone(),
        );
        r.register(
            format!("{p}shards_max"),
            "Configured max_shards.",
            self.shards_max.clone(),
        );
        r.register(
            format!("{p}queue_highest_sent_timestamp_seconds"),
            "Newest sample timestamp acknowledged by the endpoint, seconds since the epoch.",
            self.highest_sent.clone(),
        );
        r.register(
            format!("{p}sent_batch_duration_seconds"),
            "Duration of one remote-write request (each attempt).",
            self.send_duration.clone(),
        );
    }

    /// The families without a registry (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            queue_appended_samples: Family::default(),
            queue_appended_bytes: Family::default(),
            queue_dropped_samples: Family::default(),
            queue_corruptions: Family::default(),
            queue_bytes: Family::default(),
            queue_segments: Family::default(),
            queue_lag: Family::default(),
            samples_sent: Family::default(),
            samples_failed: Family::default(),
            samples_retried: Family::default(),
            samples_relabel_dropped: Family::default(),
            metadata_sent: Family::default(),
            bytes_sent: Family::default(),
            shards: Family::default(),
            shards_desired: Family::default(),
            send_duration: Family::new_with_constructor(send_histogram),
            samples_pending: Family::default(),
            highest_sent: Family::default(),
            shards_min: Family::default(),
            shards_max: Family::default(),
        }
    }

    fn label(remote: &str) -> RemoteLabel {
        RemoteLabel {
            remote_name: remote.to_string(),
        }
    }

    /// Samples acknowledged by endpoint `remote`.
    pub fn samples_sent(&self, remote: &str) -> u64 {
        self.samples_sent.get_or_create(&Self::label(remote)).get()
    }

    /// Samples of `remote` dropped for `reason` (e.g. `http_400`).
    pub fn samples_failed(&self, remote: &str, reason: &str) -> u64 {
        self.samples_failed
            .get_or_create(&ReasonLabels {
                remote_name: remote.to_string(),
                reason: reason.to_string(),
            })
            .get()
    }

    /// Samples of `remote` in retried requests.
    pub fn samples_retried(&self, remote: &str) -> u64 {
        self.samples_retried
            .get_or_create(&Self::label(remote))
            .get()
    }

    /// Samples of `remote`'s queue dropped by the disk budget.
    pub fn queue_dropped_samples(&self, remote: &str) -> u64 {
        self.queue_dropped_samples
            .get_or_create(&Self::label(remote))
            .get()
    }

    /// Corrupt records found in `remote`'s queue.
    pub fn queue_corruptions(&self, remote: &str) -> u64 {
        self.queue_corruptions
            .get_or_create(&Self::label(remote))
            .get()
    }

    /// Age of `remote`'s oldest unacknowledged queued sample, seconds.
    pub fn queue_lag_seconds(&self, remote: &str) -> f64 {
        self.queue_lag.get_or_create(&Self::label(remote)).get()
    }

    /// Newest sample timestamp `remote` acknowledged, seconds.
    pub fn highest_sent_seconds(&self, remote: &str) -> f64 {
        self.highest_sent.get_or_create(&Self::label(remote)).get()
    }

    /// Shards currently running for `remote`.
    pub fn shards(&self, remote: &str) -> i64 {
        self.shards.get_or_create(&Self::label(remote)).get()
    }
}

/// Handles resolved for one endpoint, so hot paths skip the family lookup.
#[derive(Debug, Clone)]
pub(crate) struct QueueHandles {
    pub(crate) appended_samples: Counter,
    pub(crate) appended_bytes: Counter,
    pub(crate) dropped_samples: Counter,
    pub(crate) corruptions: Counter,
    pub(crate) bytes: Gauge,
    pub(crate) segments: Gauge,
}

impl QueueHandles {
    pub(crate) fn new(m: &PushMetrics, remote: &str) -> Self {
        let l = PushMetrics::label(remote);
        Self {
            appended_samples: m.queue_appended_samples.get_or_create(&l).clone(),
            appended_bytes: m.queue_appended_bytes.get_or_create(&l).clone(),
            dropped_samples: m.queue_dropped_samples.get_or_create(&l).clone(),
            corruptions: m.queue_corruptions.get_or_create(&l).clone(),
            bytes: m.queue_bytes.get_or_create(&l).clone(),
            segments: m.queue_segments.get_or_create(&l).clone(),
        }
    }
}

/// Sender-side handles for one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct SendHandles {
    pub(crate) metrics: Arc<PushMetrics>,
    pub(crate) remote: String,
    pub(crate) lag: Gauge<f64, AtomicU64>,
    pub(crate) sent: Counter,
    pub(crate) retried: Counter,
    pub(crate) relabel_dropped: Counter,
    pub(crate) metadata_sent: Counter,
    pub(crate) bytes_sent: Counter,
    pub(crate) shards: Gauge,
    pub(crate) shards_desired: Gauge<f64, AtomicU64>,
    pub(crate) send_duration: Histogram,
    pub(crate) pending: Gauge,
    pub(crate) highest_sent: Gauge<f64, AtomicU64>,
}

impl SendHandles {
    pub(crate) fn new(m: &Arc<PushMetrics>, remote: &str) -> Self {
        let l = PushMetrics::label(remote);
        Self {
            metrics: m.clone(),
            remote: remote.to_string(),
            lag: m.queue_lag.get_or_create(&l).clone(),
            sent: m.samples_sent.get_or_create(&l).clone(),
            retried: m.samples_retried.get_or_create(&l).clone(),
            relabel_dropped: m.samples_relabel_dropped.get_or_create(&l).clone(),
            metadata_sent: m.metadata_sent.get_or_create(&l).clone(),
            bytes_sent: m.bytes_sent.get_or_create(&l).clone(),
            shards: m.shards.get_or_create(&l).clone(),
            shards_desired: m.shards_desired.get_or_create(&l).clone(),
            send_duration: m.send_duration.get_or_create(&l).clone(),
            pending: m.samples_pending.get_or_create(&l).clone(),
            highest_sent: m.highest_sent.get_or_create(&l).clone(),
        }
    }

    pub(crate) fn failed(&self, reason: &str) -> Counter {
        self.metrics
            .samples_failed
            .get_or_create(&ReasonLabels {
                remote_name: self.remote.clone(),
                reason: reason.to_string(),
            })
            .clone()
    }
}
