//! The scrape side's own metrics, under the names Prometheus 2.42 exposes
//! them (`prometheus_target_*`, `prometheus_sd_discovered_targets`,
//! `prometheus_agent_samples_appended_total`) so that existing alerts and
//! dashboards work, plus per-job `stratus_agent_scrape*` families that
//! Prometheus lacks (scrape outcomes and a duration histogram per job).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JobLabel {
    pub(crate) scrape_job: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JobResult {
    pub(crate) scrape_job: String,
    pub(crate) result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SdLabels {
    pub(crate) config: String,
    pub(crate) name: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Metric families of the scrape pools and loops.
#[derive(Debug)]
pub struct ScrapeMetrics {
    pub(crate) scrapes: Family<JobResult, Counter>,
    pub(crate) duration: Family<JobLabel, Histogram, fn() -> Histogram>,
    pub(crate) job_samples: Family<JobLabel, Counter>,
    pub(crate) samples_appended: Counter,
    pub(crate) exceeded_sample_limit: Counter,
    pub(crate) exceeded_body_size_limit: Counter,
    pub(crate) duplicate_samples: Counter,
    pub(crate) exceeded_label_limits: Counter,
    pub(crate) exceeded_target_limit: Counter,
    pub(crate) pool_targets: Family<JobLabel, Gauge>,
    pub(crate) pool_syncs: Family<JobLabel, Counter>,
    pub(crate) pools_created: Counter,
    pub(crate) pool_reloads: Counter,
    pub(crate) discovered: Family<SdLabels, Gauge>,
}

impl ScrapeMetrics {
    /// Creates the families and registers them on `registry`.
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Self::unregistered();
        let r = registry;
        r.register(
            "stratus_agent_scrapes",
            "Scrapes by job and result (success, failure).",
            m.scrapes.clone(),
        );
        r.register(
            "stratus_agent_scrape_duration_seconds",
            "Duration of scrapes (fetch and parse) by job.",
            m.duration.clone(),
        );
        r.register(
            "stratus_agent_scrape_samples_appended",
            "Samples appended to the queue by scrapes of a job (after metric relabeling, without the synthesized series).",
            m.job_samples.clone(),
        );
        r.register(
            "prometheus_agent_samples_appended",
            "Samples appended to the queue (every scraped, synthesized and staleness sample).",
            m.samples_appended.clone(),
        );
        r.register(
            "prometheus_remote_storage_samples_in",
            "Samples handed to remote storage (the queue).",
            m.samples_appended.clone(),
        );
        r.register(
            "prometheus_target_scrapes_exceeded_sample_limit",
            "Scrapes that hit the sample limit and were rejected.",
            m.exceeded_sample_limit.clone(),
        );
        r.register(
            "prometheus_target_scrapes_exceeded_body_size_limit",
            "Scrapes that hit the body size limit.",
            m.exceeded_body_size_limit.clone(),
        );
        r.register(
            "prometheus_target_scrapes_sample_duplicate_timestamp",
            "Samples skipped because a series appeared twice in one scrape.",
            m.duplicate_samples.clone(),
        );
        r.register(
            "prometheus_target_scrape_pool_exceeded_label_limits",
            "Scrapes that hit a label limit (label_limit, label_name_length_limit, label_value_length_limit).",
            m.exceeded_label_limits.clone(),
        );
        r.register(
            "prometheus_target_scrape_pool_exceeded_target_limit",
            "Target syncs of pools that hit their target_limit.",
            m.exceeded_target_limit.clone(),
        );
        r.register(
            "prometheus_target_scrape_pool_targets",
            "Targets being scraped, by pool.",
            m.pool_targets.clone(),
        );
        r.register(
            "prometheus_target_scrape_pool_sync",
            "Target syncs of a pool (one per discovery update).",
            m.pool_syncs.clone(),
        );
        r.register(
            "prometheus_target_scrape_pools",
            "Scrape pools started.",
            m.pools_created.clone(),
        );
        r.register(
            "prometheus_target_scrape_pool_reloads",
            "Scrape pools restarted by a configuration reload.",
            m.pool_reloads.clone(),
        );
        r.register(
            "prometheus_sd_discovered_targets",
            "Targets discovered (before relabeling), by job.",
            m.discovered.clone(),
        );
        Arc::new(m)
    }

    /// The families without a registry (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            scrapes: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            job_samples: Family::default(),
            samples_appended: Counter::default(),
            exceeded_sample_limit: Counter::default(),
            exceeded_body_size_limit: Counter::default(),
            duplicate_samples: Counter::default(),
            exceeded_label_limits: Counter::default(),
            exceeded_target_limit: Counter::default(),
            pool_targets: Family::default(),
            pool_syncs: Family::default(),
            pools_created: Counter::default(),
            pool_reloads: Counter::default(),
            discovered: Family::default(),
        }
    }

    pub(crate) fn job(job: &str) -> JobLabel {
        JobLabel {
            scrape_job: job.to_string(),
        }
    }

    /// Forgets the per-job series of a removed pool.
    pub(crate) fn remove_job(&self, job: &str) {
        let l = Self::job(job);
        self.pool_targets.remove(&l);
        self.discovered.remove(&SdLabels {
            config: job.to_string(),
            name: "scrape".into(),
        });
    }

    /// Samples appended to the queue so far.
    pub fn samples_appended(&self) -> u64 {
        self.samples_appended.get()
    }
}

/// Handles of one job, resolved once per loop.
#[derive(Debug, Clone)]
pub(crate) struct JobHandles {
    pub(crate) all: Arc<ScrapeMetrics>,
    pub(crate) success: Counter,
    pub(crate) failure: Counter,
    pub(crate) duration: Histogram,
    pub(crate) samples: Counter,
}

impl JobHandles {
    pub(crate) fn new(m: &Arc<ScrapeMetrics>, job: &str) -> Self {
        let res = |r: &str| {
            m.scrapes
                .get_or_create(&JobResult {
                    scrape_job: job.to_string(),
                    result: r.to_string(),
                })
                .clone()
        };
        Self {
            all: m.clone(),
            success: res("success"),
            failure: res("failure"),
            duration: m.duration.get_or_create(&ScrapeMetrics::job(job)).clone(),
            samples: m
                .job_samples
                .get_or_create(&ScrapeMetrics::job(job))
                .clone(),
        }
    }
}
