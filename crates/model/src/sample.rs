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

/// Counter-reset hint values of [`Histogram::reset_hint`] and
/// [`FloatHistogram::reset_hint`] (Prometheus' `CounterResetHint`).
pub mod reset_hint {
    /// Nothing known: detect resets by comparing with the previous sample.
    pub const UNKNOWN: u8 = 0;
    /// This histogram starts after a counter reset.
    pub const RESET: u8 = 1;
    /// This histogram is known not to follow a counter reset.
    pub const NOT_RESET: u8 = 2;
    /// A gauge histogram: counts may go up and down.
    pub const GAUGE: u8 = 3;
}

/// Schema of custom-bucket (classic-like) native histograms.
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// Smallest exponential schema.
pub const EXPONENTIAL_SCHEMA_MIN: i32 = -4;
/// Largest exponential schema.
pub const EXPONENTIAL_SCHEMA_MAX: i32 = 8;

/// Whether `schema` is one Prometheus accepts: exponential `-4..=8` or
/// custom buckets (`-53`).
pub fn is_known_schema(schema: i32) -> bool {
    schema == CUSTOM_BUCKETS_SCHEMA
        || (EXPONENTIAL_SCHEMA_MIN..=EXPONENTIAL_SCHEMA_MAX).contains(&schema)
}

fn spans_bucket_count(spans: &[BucketSpan]) -> u64 {
    spans.iter().map(|s| u64::from(s.length)).sum()
}

/// Checks a span list: every span after the first must have a
/// non-negative offset (buckets strictly increase).
fn check_spans(spans: &[BucketSpan], side: &str) -> Result<(), String> {
    for (i, s) in spans.iter().enumerate().skip(1) {
        if s.offset < 0 {
            return Err(format!("{side} span {i} has negative offset {}", s.offset));
        }
    }
    Ok(())
}

fn check_schema(schema: i32, custom_values: &[f64], negative_spans: usize) -> Result<(), String> {
    if !is_known_schema(schema) {
        return Err(format!("unknown histogram schema {schema}"));
    }
    if schema == CUSTOM_BUCKETS_SCHEMA {
        if negative_spans > 0 {
            return Err("custom-bucket histogram has negative buckets".into());
        }
        if custom_values
            .windows(2)
            .any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
        {
            return Err("custom bucket bounds are not strictly increasing".into());
        }
    } else if !custom_values.is_empty() {
        return Err("custom bucket bounds given for an exponential schema".into());
    }
    Ok(())
}

impl Histogram {
    /// Whether this is a staleness marker (the sum is the stale NaN).
    pub fn is_stale(&self) -> bool {
        is_stale_nan(self.sum)
    }

    /// A staleness marker histogram.
    pub fn stale() -> Self {
        Histogram {
            sum: stale_nan(),
            ..Default::default()
        }
    }

    /// Bit-exact equality (floats compared by their bits).
    pub fn bit_eq(&self, o: &Histogram) -> bool {
        self.reset_hint == o.reset_hint
            && self.schema == o.schema
            && self.zero_threshold.to_bits() == o.zero_threshold.to_bits()
            && self.zero_count == o.zero_count
            && self.count == o.count
            && self.sum.to_bits() == o.sum.to_bits()
            && self.positive_spans == o.positive_spans
            && self.positive_deltas == o.positive_deltas
            && self.negative_spans == o.negative_spans
            && self.negative_deltas == o.negative_deltas
            && floats_bit_eq(&self.custom_values, &o.custom_values)
    }

    /// Checks the histogram is well formed, as Prometheus' `Validate`:
    /// known schema, span offsets, as many bucket deltas as the spans
    /// announce, no negative bucket count, and `count` at least the sum of
    /// the buckets and the zero bucket (unless the sum is NaN). A stale
    /// marker is always valid.
    pub fn validate(&self) -> Result<(), String> {
        if self.is_stale() {
            return Ok(());
        }
        check_schema(self.schema, &self.custom_values, self.negative_spans.len())?;
        let mut total = u128::from(self.zero_count);
        for (side, spans, deltas) in [
            ("positive", &self.positive_spans, &self.positive_deltas),
            ("negative", &self.negative_spans, &self.negative_deltas),
        ] {
            check_spans(spans, side)?;
            let n = spans_bucket_count(spans);
            if n != deltas.len() as u64 {
                return Err(format!(
                    "{side} spans announce {n} buckets but there are {} {side} bucket counts",
                    deltas.len()
                ));
            }
            let mut cur: i64 = 0;
            for (i, d) in deltas.iter().enumerate() {
                cur = cur.wrapping_add(*d);
                if cur < 0 {
                    return Err(format!("{side} bucket {i} has negative count {cur}"));
                }
                total += cur as u128;
            }
        }
        if self.schema == CUSTOM_BUCKETS_SCHEMA {
            check_custom_range(&self.positive_spans, self.custom_values.len())?;
        }
        if !self.sum.is_nan() && total > u128::from(self.count) {
            return Err(format!(
                "observation count {} is less than the {total} observations in the buckets",
                self.count
            ));
        }
        Ok(())
    }

    /// Absolute bucket counts (the deltas summed up), positive then
    /// negative.
    pub fn absolute_buckets(&self) -> (Vec<i64>, Vec<i64>) {
        fn abs(d: &[i64]) -> Vec<i64> {
            let mut cur = 0i64;
            d.iter()
                .map(|x| {
                    cur = cur.wrapping_add(*x);
                    cur
                })
                .collect()
        }
        (abs(&self.positive_deltas), abs(&self.negative_deltas))
    }

    /// The same histogram with float counts.
    pub fn to_float(&self) -> FloatHistogram {
        let (p, n) = self.absolute_buckets();
        FloatHistogram {
            reset_hint: self.reset_hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count as f64,
            count: self.count as f64,
            sum: self.sum,
            positive_spans: self.positive_spans.clone(),
            positive_buckets: p.into_iter().map(|x| x as f64).collect(),
            negative_spans: self.negative_spans.clone(),
            negative_buckets: n.into_iter().map(|x| x as f64).collect(),
            custom_values: self.custom_values.clone(),
        }
    }
}

fn check_custom_range(spans: &[BucketSpan], bounds: usize) -> Result<(), String> {
    // Bucket indexes of a custom-bucket histogram run 0..=len(bounds)
    // (the last one is the +Inf bucket).
    let mut idx: i64 = -1;
    for (i, s) in spans.iter().enumerate() {
        if i == 0 && s.offset < 0 {
            return Err("custom-bucket histogram has a negative first span offset".into());
        }
        idx += i64::from(s.offset) + i64::from(s.length);
    }
    if idx > bounds as i64 {
        return Err(format!(
            "custom-bucket histogram uses bucket {idx} but has only {bounds} bounds"
        ));
    }
    Ok(())
}

fn floats_bit_eq(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl FloatHistogram {
    /// Whether this is a staleness marker (the sum is the stale NaN).
    pub fn is_stale(&self) -> bool {
        is_stale_nan(self.sum)
    }

    /// A staleness marker histogram.
    pub fn stale() -> Self {
        FloatHistogram {
            sum: stale_nan(),
            ..Default::default()
        }
    }

    /// Bit-exact equality (floats compared by their bits).
    pub fn bit_eq(&self, o: &FloatHistogram) -> bool {
        self.reset_hint == o.reset_hint
            && self.schema == o.schema
            && self.zero_threshold.to_bits() == o.zero_threshold.to_bits()
            && self.zero_count.to_bits() == o.zero_count.to_bits()
            && self.count.to_bits() == o.count.to_bits()
            && self.sum.to_bits() == o.sum.to_bits()
            && self.positive_spans == o.positive_spans
            && floats_bit_eq(&self.positive_buckets, &o.positive_buckets)
            && self.negative_spans == o.negative_spans
            && floats_bit_eq(&self.negative_buckets, &o.negative_buckets)
            && floats_bit_eq(&self.custom_values, &o.custom_values)
    }

    /// Checks the histogram is well formed (see [`Histogram::validate`]);
    /// bucket counts must not be negative.
    pub fn validate(&self) -> Result<(), String> {
        if self.is_stale() {
            return Ok(());
        }
        check_schema(self.schema, &self.custom_values, self.negative_spans.len())?;
        if self.zero_count < 0.0 {
            return Err(format!(
                "zero bucket has negative count {}",
                self.zero_count
            ));
        }
        if self.count < 0.0 {
            return Err(format!("observation count {} is negative", self.count));
        }
        for (side, spans, buckets) in [
            ("positive", &self.positive_spans, &self.positive_buckets),
            ("negative", &self.negative_spans, &self.negative_buckets),
        ] {
            check_spans(spans, side)?;
            let n = spans_bucket_count(spans);
            if n != buckets.len() as u64 {
                return Err(format!(
                    "{side} spans announce {n} buckets but there are {} {side} bucket counts",
                    buckets.len()
                ));
            }
            if let Some((i, c)) = buckets.iter().enumerate().find(|(_, c)| **c < 0.0) {
                return Err(format!("{side} bucket {i} has negative count {c}"));
            }
        }
        if self.schema == CUSTOM_BUCKETS_SCHEMA {
            check_custom_range(&self.positive_spans, self.custom_values.len())?;
        }
        Ok(())
    }
}

/// An exemplar attached to a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    pub t: Timestamp,
}

/// A float as Go's `strconv.FormatFloat(v, 'f', -1, 64)` with Prometheus'
/// spelling of the specials (`NaN`, `+Inf`, `-Inf`): the shortest text
/// that reads back to the same value. Used wherever Prometheus prints a
/// number as text (label values such as `le`, `count_values`, PromQL
/// printing).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
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
