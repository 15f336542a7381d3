//! The boundary between scraping and pushing.
//!
//! A scrape produces one [`Batch`] (all samples of one target's scrape,
//! after metric relabeling, plus its synthesized series and staleness
//! markers) and hands it to a [`Sink`]. The push side's sink makes the
//! batch durable before `append` returns, so a crash after a scrape loses
//! nothing that was appended.

use stratus_model::{Labels, Sample};

/// The type of a metric family, as exposition formats declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricType {
    /// Untyped / unknown.
    #[default]
    Unknown,
    /// Counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Classic histogram.
    Histogram,
    /// Gauge histogram.
    GaugeHistogram,
    /// Summary.
    Summary,
    /// Info.
    Info,
    /// State set.
    StateSet,
}

/// Metadata of one metric family, sent along with samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Metric family name (after relabeling of the job's series).
    pub family: String,
    /// Its type.
    pub kind: MetricType,
    /// HELP text.
    pub help: String,
    /// UNIT.
    pub unit: String,
}

/// One series' samples of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// Final label set (target labels, relabeled, external labels not yet
    /// applied: the push side adds them).
    pub labels: Labels,
    /// Samples in timestamp order (usually one per scrape).
    pub samples: Vec<Sample>,
}

/// Everything one scrape produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The series and their samples.
    pub series: Vec<SeriesSamples>,
    /// Metadata of the families seen (may be empty).
    pub metadata: Vec<Metadata>,
}

/// Where scrapes go. Implementations must be cheap to share across scrape
/// loops (`Send + Sync`) and must make the batch durable before `append`
/// returns `Ok`.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Accepts one scrape's batch.
    fn append(&self, batch: Batch) -> Result<(), SinkError>;
}

/// Why a sink refused a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError(pub String);

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SinkError {}
