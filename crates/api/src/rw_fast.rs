//! A borrowing decoder for the common shape of remote write 1.0 series:
//! label pairs and float samples are read straight from the request bytes
//! (no `String` per label name and value, no intermediate
//! `prometheus::TimeSeries`) and validated by the same code as the prost
//! path ([`crate::remote_write`]), which copies them into the batch's
//! label arena (no `Labels` per series: the storage engine looks series
//! up by the borrowed pairs).
//!
//! The fast path accepts only what it fully understands: the known fields
//! with their declared wire types, valid UTF-8 and well-formed varints.
//! A series with exemplars, native histograms, unknown fields or anything
//! else unusual is decoded by prost instead (that series alone), and any
//! decoding problem makes the whole body go through prost, so errors and
//! results are exactly those of the prost decoder (a differential fuzz
//! target, `remote_write_v1_fast`, checks that).
//!
//! Series of an ingester's push ([`batch_from_encoded`]) may also carry
//! Stratus' start-timestamp fields (`stratus_proto::push`); the HTTP
//! path does not look for them (they are unknown fields there, left to
//! prost, which skips them).

use std::ops::Range;

use prost::Message;
use stratus_model::Sample;
use stratus_proto::prometheus;
use stratus_proto::push::{
    SAMPLE_START_TIMESTAMPS_FIELD, decode_start_timestamps, scan_start_timestamps,
};

use crate::remote_write::{
    RawLabels, WriteBatch, add_v1_metadata, add_v1_series, add_v1_series_parts,
};

/// Wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

/// A cursor over protobuf bytes; every read returns `None` on anything
/// the fast path leaves to prost.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A varint of at most 9 bytes (prost's edge cases of the tenth byte
    /// are left to prost; negative int64s take ten bytes and so go the
    /// slow way, which is rare for timestamps and values).
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(9) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = self.buf.get(i + 1..)?;
                return Some(v);
            }
        }
        None
    }

    /// A field key: (field number, wire type).
    #[inline]
    fn key(&mut self) -> Option<(u64, u64)> {
        let k = self.varint()?;
        if k > u64::from(u32::MAX) {
            return None;
        }
        let (field, wt) = (k >> 3, k & 7);
        if field == 0 {
            return None;
        }
        Some((field, wt))
    }

    #[inline]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let (head, rest) = self.buf.split_at_checked(n)?;
        self.buf = rest;
        Some(head)
    }

    #[inline]
    fn fixed64(&mut self) -> Option<u64> {
        let (head, rest) = self.buf.split_first_chunk::<8>()?;
        self.buf = rest;
        Some(u64::from_le_bytes(*head))
    }
}

/// Reusable buffers of one series.
#[derive(Debug, Default)]
pub(crate) struct Scratch<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    samples: Vec<Sample>,
    /// Read the start-timestamp extension fields (an ingester's push).
    ext: bool,
    /// The samples' start timestamps (extension field; empty: none).
    sts: Vec<i64>,
    /// Where each label's name and value are in the series' bytes.
    ranges: Vec<(Range<usize>, Range<usize>)>,
    /// The series' label fields before its first other field, as text,
    /// when they are valid UTF-8 as a whole (see [`series_fast`]).
    text: Option<&'a str>,
}

/// The name and value ranges of an encoded `prometheus.Label` in the form
/// every encoder writes for short strings: the name (field 1) then the
/// value (field 2), each with a one-byte length, nothing else. `None`:
/// anything else (the general walk handles it).
#[inline]
fn short_label(label: &[u8]) -> Option<(Range<usize>, Range<usize>)> {
    let [0x0a, n, rest @ ..] = label else {
        return None;
    };
    let n = usize::from(*n);
    match rest.get(n..)? {
        [0x12, v, value @ ..]
            if n < 0x80 && usize::from(*v) == value.len() && value.len() < 0x80 =>
        {
            Some((2..2 + n, 4 + n..label.len()))
        }
        _ => None,
    }
}

/// The name and value ranges of an encoded `prometheus.Label` in any
/// form the fast path accepts (fields 1 and 2 only, in any order, the last
/// of a repeated field winning, as in prost), offset by `at`. Every string
/// is checked as UTF-8 here, overridden ones included, as prost checks
/// them (this form is rare).
fn general_label(label: &[u8], at: usize) -> Option<(Range<usize>, Range<usize>)> {
    let mut l = Reader::new(label);
    let (mut name, mut value) = (0..0, 0..0);
    while !l.is_empty() {
        let key = l.key()?;
        let b = l.bytes()?;
        std::str::from_utf8(b).ok()?;
        let end = at + label.len() - l.buf.len();
        match key {
            (1, LEN) => name = end - b.len()..end,
            (2, LEN) => value = end - b.len()..end,
            _ => return None,
        }
    }
    Some((name, value))
}

/// Reads a `prometheus.TimeSeries` made only of labels and samples into
/// `s`; `None` when it has anything else or is malformed.
///
/// One walk over the fields notes where each label's name and value are.
/// Then one UTF-8 check covers all the labels before the first other
/// field, keys and lengths included ([`Scratch::text`]). Each string lies
/// between ASCII bytes (a key or a one-byte length before it, a key or the
/// end after it) whenever that whole is valid UTF-8 with one-byte lengths,
/// so the text sliced at a string's bounds is that string. A string whose
/// bounds fall elsewhere, or that comes after a sample, is checked on its
/// own. The whole is not UTF-8 when a length is 128 or more (usually); then
/// every string is checked on its own.
fn series_fast<'a>(buf: &'a [u8], s: &mut Scratch<'a>) -> Option<()> {
    s.pairs.clear();
    s.ranges.clear();
    s.samples.clear();
    s.sts.clear();
    // End of the label fields that come before any other field.
    let (mut leading_end, mut leading) = (0, true);
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        match r.key()? {
            (1, LEN) => {
                let label = r.bytes()?;
                let end = buf.len() - r.buf.len();
                let at = end - label.len();
                let ranges = match short_label(label) {
                    Some((n, v)) => (at + n.start..at + n.end, at + v.start..at + v.end),
                    None => general_label(label, at)?,
                };
                s.ranges.push(ranges);
                if leading {
                    leading_end = end;
                }
            }
            (2, LEN) => {
                leading = false;
                let mut m = Reader::new(r.bytes()?);
                let (mut v, mut t) = (0u64, 0i64);
                while !m.is_empty() {
                    match m.key()? {
                        (1, FIXED64) => v = m.fixed64()?,
                        (2, VARINT) => t = m.varint()? as i64,
                        _ => return None,
                    }
                }
                s.samples.push(Sample::new(t, f64::from_bits(v)));
            }
            (f, LEN) if s.ext && f == u64::from(SAMPLE_START_TIMESTAMPS_FIELD) => {
                leading = false;
                s.sts = decode_start_timestamps(r.bytes()?)?;
            }
            _ => return None,
        }
    }
    let text = std::str::from_utf8(buf.get(..leading_end)?).ok();
    s.text = text;
    let string = |range: &Range<usize>| -> Option<&'a str> {
        match text.and_then(|t| t.get(range.clone())) {
            Some(x) => Some(x),
            None => std::str::from_utf8(buf.get(range.clone())?).ok(),
        }
    };
    for (n, v) in &s.ranges {
        s.pairs.push((string(n)?, string(v)?));
    }
    Some(())
}

/// Adds one encoded `prometheus.TimeSeries` to `batch`: borrowed when it
/// has the common shape, through prost otherwise. `None`: prost refused
/// it (the caller decodes the whole body with prost for the error).
fn add_encoded_series<'a>(
    batch: &mut WriteBatch,
    buf: &'a [u8],
    scratch: &mut Scratch<'a>,
) -> Option<()> {
    if series_fast(buf, scratch).is_some() {
        let pairs = &scratch.pairs;
        add_v1_series_parts(
            batch,
            RawLabels {
                pairs: || pairs.iter().copied(),
                region: scratch.text,
            },
            scratch.samples.iter().copied(),
            &scratch.sts,
        );
        return Some(());
    }
    let ts = prometheus::TimeSeries::decode(buf).ok()?;
    let (sts, hist_sts) = if scratch.ext {
        scan_start_timestamps(buf)?
    } else {
        (Vec::new(), Vec::new())
    };
    add_v1_series(batch, &ts, &sts, &hist_sts);
    Some(())
}

/// Decodes a `prometheus.WriteRequest` body into a batch; `None` when the
/// body needs the prost decoder (malformed, unknown fields...).
pub(crate) fn decode_v1_fast(buf: &[u8]) -> Option<WriteBatch> {
    let mut batch = WriteBatch::default();
    let mut scratch = Scratch::default();
    let mut metadata: Vec<prometheus::MetricMetadata> = Vec::new();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        match r.key()? {
            (1, LEN) => add_encoded_series(&mut batch, r.bytes()?, &mut scratch)?,
            (3, LEN) => metadata.push(prometheus::MetricMetadata::decode(r.bytes()?).ok()?),
            _ => return None,
        }
    }
    add_v1_metadata(&mut batch, &metadata);
    Some(batch)
}

/// Validates already split, encoded `prometheus.TimeSeries` messages
/// (an ingester's push) into a batch; `None` when one of them is not a
/// valid message.
pub(crate) fn batch_from_encoded<'a>(
    series: impl IntoIterator<Item = &'a [u8]>,
    metadata: &[prometheus::MetricMetadata],
) -> Option<WriteBatch> {
    let mut batch = WriteBatch::default();
    let mut scratch = Scratch {
        ext: true,
        ..Default::default()
    };
    for s in series {
        add_encoded_series(&mut batch, s, &mut scratch)?;
    }
    add_v1_metadata(&mut batch, metadata);
    Some(batch)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use rand::{Rng, SeedableRng};
    use stratus_proto::prometheus as pb;

    use crate::remote_write::fuzz_remote_write_v1_fast as same_as_prost;

    fn label(n: &str, v: &str) -> pb::Label {
        pb::Label {
            name: n.into(),
            value: v.into(),
        }
    }

    fn random_request(rng: &mut rand::rngs::StdRng) -> pb::WriteRequest {
        let names = ["__name__", "job", "instance", "a", "", "ünï", "z"];
        let mut req = pb::WriteRequest::default();
        for _ in 0..rng.random_range(0..6) {
            let mut ts = pb::TimeSeries::default();
            for _ in 0..rng.random_range(0..5) {
                let n = names[rng.random_range(0..names.len())];
                let v = ["", "x", "up", "✓"][rng.random_range(0..4)];
                ts.labels.push(label(n, v));
            }
            if rng.random_bool(0.5) {
                ts.labels.sort_by(|a, b| a.name.cmp(&b.name));
            }
            for _ in 0..rng.random_range(0..4) {
                let t = [0, 1, -1, 1_700_000_000_000, i64::MIN, i64::MAX][rng.random_range(0..6)];
                let v = [0.0, -0.0, 1.5, f64::NAN, f64::INFINITY][rng.random_range(0..5)];
                ts.samples.push(pb::Sample {
                    value: v,
                    timestamp: t,
                });
            }
            if rng.random_bool(0.1) {
                ts.exemplars.push(pb::Exemplar {
                    labels: vec![label("trace_id", "abc")],
                    value: 1.0,
                    timestamp: 5,
                });
            }
            if rng.random_bool(0.1) {
                ts.histograms.push(pb::Histogram {
                    count: Some(pb::histogram::Count::CountInt(1)),
                    zero_count: Some(pb::histogram::ZeroCount::ZeroCountInt(1)),
                    timestamp: 7,
                    ..Default::default()
                });
            }
            req.timeseries.push(ts);
        }
        if rng.random_bool(0.2) {
            req.metadata.push(pb::MetricMetadata {
                r#type: 1,
                metric_family_name: ["", "up"][rng.random_range(0..2)].into(),
                help: "h".into(),
                unit: String::new(),
            });
        }
        req
    }

    #[test]
    fn agrees_with_prost_on_random_and_mutated_bodies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..3000 {
            let mut body = random_request(&mut rng).encode_to_vec();
            same_as_prost(&body);
            if body.is_empty() {
                continue;
            }
            // Damage: flipped bytes, truncation, appended unknown fields.
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..body.len());
                body[i] = rng.random();
            }
            same_as_prost(&body);
            let cut = rng.random_range(0..body.len());
            same_as_prost(&body[..cut]);
            body.extend_from_slice(&[0x28, 0x01]);
            same_as_prost(&body);
        }
    }

    #[test]
    fn common_shape_takes_the_fast_path() {
        let req = pb::WriteRequest {
            timeseries: vec![pb::TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "a")],
                samples: vec![pb::Sample {
                    value: -0.0,
                    timestamp: 1_700_000_000_000,
                }],
                ..Default::default()
            }],
            metadata: Vec::new(),
        };
        let body = req.encode_to_vec();
        let b = super::decode_v1_fast(&body).expect("fast path");
        assert_eq!(b.series.len(), 1);
        assert_eq!(b.labels_of(&b.series[0]).get("job"), Some("a"));
        same_as_prost(&body);
        let two = pb::WriteRequest {
            timeseries: vec![req.timeseries[0].clone(), req.timeseries[0].clone()],
            metadata: Vec::new(),
        }
        .encode_to_vec();
        let b = super::decode_v1_fast(&two).expect("fast path");
        assert_eq!(b.labels_of(&b.series[0]), b.labels_of(&b.series[1]));
    }

    /// Labels in the forms only the general walk reads, hand-encoded:
    /// fields out of order, repeated (the last wins; an overridden string
    /// must still be UTF-8), and a label after the samples.
    #[test]
    fn general_label_forms_agree_with_prost() {
        let field = |key: u8, inner: &[u8]| [&[key, inner.len() as u8][..], inner].concat();
        let sample = {
            let mut m = vec![0x09];
            m.extend_from_slice(&1.5f64.to_le_bytes());
            m.extend_from_slice(&[0x10, 0x05]);
            field(0x12, &m)
        };
        let body = |parts: &[Vec<u8>]| field(0x0a, &parts.concat());
        let name = field(0x0a, b"__name__");
        let up = field(0x12, b"up");
        let job = field(0x0a, b"job");
        let cases: Vec<Vec<u8>> = vec![
            // Value before name.
            body(&[
                field(0x0a, &[up.clone(), name.clone()].concat()),
                sample.clone(),
            ]),
            // Name given twice: the last wins.
            body(&[
                field(0x0a, &[job.clone(), name.clone(), up.clone()].concat()),
                sample.clone(),
            ]),
            // An overridden name that is not UTF-8: prost refuses it.
            body(&[
                field(
                    0x0a,
                    &[field(0x0a, b"\xff"), name.clone(), up.clone()].concat(),
                ),
                sample.clone(),
            ]),
            // A label after the sample, and one before it.
            body(&[
                field(0x0a, &[name.clone(), up.clone()].concat()),
                sample.clone(),
                field(0x0a, &[job.clone(), field(0x12, "é".as_bytes())].concat()),
            ]),
            // A label after the sample that is not UTF-8.
            body(&[
                field(0x0a, &[name.clone(), up.clone()].concat()),
                sample.clone(),
                field(0x0a, &[job.clone(), field(0x12, b"\xc3")].concat()),
            ]),
            // A name that is missing: the empty string.
            body(&[field(0x0a, &up), sample.clone()]),
        ];
        for b in &cases {
            same_as_prost(b);
        }
        let ok = super::decode_v1_fast(&cases[1]).expect("fast path");
        let s = ok.series.first().expect("one series");
        assert_eq!(ok.labels_of(s).to_labels().to_string(), "up");
        assert!(super::decode_v1_fast(&cases[2]).is_none());
        assert!(super::decode_v1_fast(&cases[4]).is_none());
    }

    #[test]
    fn short_label_form_and_its_edges_agree_with_prost() {
        assert_eq!(
            super::short_label(b"\x0a\x01a\x12\x02bc"),
            Some((2..3, 5..7))
        );
        assert_eq!(super::short_label(b"\x12\x01a\x0a\x01b"), None);
        assert_eq!(super::short_label(b"\x0a\x01a"), None);
        assert_eq!(super::short_label(b"\x0a\x01a\x12\x03bc"), None);
        let long = |n: usize| "é".repeat(n / 2) + &"x".repeat(n % 2);
        for (n, v) in [(127, 127), (128, 1), (1, 128), (126, 0), (0, 3)] {
            let mut ts = pb::TimeSeries {
                labels: vec![label("__name__", "up"), label(&long(n), &long(v))],
                samples: vec![pb::Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
                ..Default::default()
            };
            ts.labels.sort_by(|a, b| a.name.cmp(&b.name));
            let body = pb::WriteRequest {
                timeseries: vec![ts],
                metadata: Vec::new(),
            }
            .encode_to_vec();
            same_as_prost(&body);
            // A label whose name field is renumbered (two values) is read
            // the general way.
            let mut swapped = body.clone();
            if let Some(i) = swapped.windows(2).position(|w| w == [0x0a, 0x08]) {
                swapped[i] = 0x12;
                same_as_prost(&swapped);
            }
        }
    }

    #[test]
    fn encoded_series_decode_like_a_request() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..500 {
            let req = random_request(&mut rng);
            let parts: Vec<Vec<u8>> = req.timeseries.iter().map(|t| t.encode_to_vec()).collect();
            let a =
                crate::batch_from_v1_encoded(parts.iter().map(|p| &p[..]), &req.metadata).unwrap();
            // Through the wire (prost writes no -0.0 value, for one).
            let wire: Vec<pb::TimeSeries> = parts
                .iter()
                .map(|p| pb::TimeSeries::decode(&p[..]).unwrap())
                .collect();
            let b = crate::batch_from_v1(&wire, &req.metadata);
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
        let bad: &[u8] = &[0x0a, 0x05, 0x0a];
        assert!(crate::batch_from_v1_encoded([bad], &[]).is_err());
    }
}
