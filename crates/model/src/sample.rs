//! Samples, native histograms and exemplars.
//!
//! A float sample is `(i64 ms timestamp, f64 value)`; values are stored
//! bit-exactly, so the Prometheus staleness marker (a NaN with the bit
//! pattern [`STALE_NAN_BITS`]) and every other NaN payload survive storage.
//! Native histogram types mirror the remote-write data model so that they
//! can be stored next to float samples in the same series.

use crate::labels::Labels;

/// Milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// Bit pattern of the Prometheus staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is the staleness marker (compares bits, not value).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A stable reference to a series inside one tenant's database. It stays
/// valid for the lifetime of the series in the head and across WAL replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesRef(pub u64);

/// A float sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub t: Timestamp,
    pub v: f64,
}

impl Sample {
    pub fn new(t: Timestamp, v: f64) -> Self {
        Self { t, v }
    }
}

impl PartialEq for Sample {
    /// Bit-exact equality: two NaNs with the same payload are equal.
    fn eq(&self, other: &Self) -> bool {
        self.t == other.t && self.v.to_bits() == other.v.to_bits()
    }
}

/// A run of buckets in a native histogram: skip `offset` buckets, then
/// `length` consecutive buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketSpan {
    pub offset: i32,
    pub length: u32,
}

/// An integer-count native histogram (counts as deltas between buckets, as
/// in the remote-write protocol).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Counter-reset hint: 0 unknown, 1 yes, 2 no, 3 gauge.
    pub reset_hint: u8,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    pub positive_spans: Vec<BucketSpan>,
    pub positive_deltas: Vec<i64>,
    pub negative_spans: Vec<BucketSpan>,
    pub negative_deltas: Vec<i64>,
    /// Upper bounds for custom-bucket histograms (schema -53).
    pub custom_values: Vec<f64>,
}

/// A float-count native histogram (absolute counts per bucket).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    pub reset_hint: u8,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<BucketSpan>,
    pub positive_buckets: Vec<f64>,
    pub negative_spans: Vec<BucketSpan>,
    pub negative_buckets: Vec<f64>,
    pub custom_values: Vec<f64>,
}

/// An exemplar attached to a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    pub t: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_marker_is_a_distinct_nan() {
        assert!(stale_nan().is_nan());
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
        assert_ne!(Sample::new(1, stale_nan()), Sample::new(1, f64::NAN));
        assert_eq!(Sample::new(1, stale_nan()), Sample::new(1, stale_nan()));
    }
}
