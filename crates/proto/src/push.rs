//! The one hand-written message of `stratus.ingester.v1`:
//! [`PushRequest`], wire-identical to its definition in
//! `proto/stratus/ingester.proto` but holding each series as its encoded
//! `prometheus.TimeSeries` bytes.
//!
//! The distributor encodes a series once and hands the same bytes
//! (reference counted, not copied) to every replica's request; the
//! ingester receives each series as a slice of the received frame
//! (`Bytes`, no copy) and decodes it with the borrowing decoder of the
//! HTTP remote write path (`stratus_api::batch_from_v1_encoded`), so no
//! `String` is built per label name or value on either side.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::prometheus::{MetricMetadata, TimeSeries};

/// Field of an encoded `prometheus.TimeSeries` in a push (a Stratus
/// extension that remote write 1.0 decoders skip as unknown): the start
/// timestamps of the series' samples, parallel to `samples`, in the form
/// of [`encode_start_timestamps`]. Absent when no sample has one.
pub const SAMPLE_START_TIMESTAMPS_FIELD: u32 = 1001;

/// As [`SAMPLE_START_TIMESTAMPS_FIELD`], parallel to the series'
/// `histograms`.
pub const HISTOGRAM_START_TIMESTAMPS_FIELD: u32 = 1002;

/// Appends a start-timestamp field (`field`, length-delimited): packed
/// zigzag varints (`sint64`), each the difference to the previous start
/// timestamp of the list (the first to 0), so the repeated start of a
/// counter costs one byte per sample. 0 = unknown.
pub fn encode_start_timestamps(
    field: u32,
    sts: impl Iterator<Item = i64> + Clone,
    buf: &mut Vec<u8>,
) {
    let mut prev = 0i64;
    let len: usize = sts
        .clone()
        .map(|st| {
            let d = st.wrapping_sub(prev);
            prev = st;
            encoding::encoded_len_varint(zigzag(d))
        })
        .sum();
    encoding::encode_key(field, WireType::LengthDelimited, buf);
    encoding::encode_varint(len as u64, buf);
    prev = 0;
    for st in sts {
        encoding::encode_varint(zigzag(st.wrapping_sub(prev)), buf);
        prev = st;
    }
}

/// Decodes the payload of a start-timestamp field (after its key and
/// length) written by [`encode_start_timestamps`]; `None` when it is
/// malformed.
pub fn decode_start_timestamps(mut payload: &[u8]) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(payload.len());
    let mut prev = 0i64;
    while !payload.is_empty() {
        let z = encoding::decode_varint(&mut payload).ok()?;
        prev = prev.wrapping_add(((z >> 1) as i64) ^ -((z & 1) as i64));
        out.push(prev);
    }
    Some(out)
}

/// The start-timestamp fields of an encoded `prometheus.TimeSeries`
/// (samples', histograms'; empty when absent), every other field
/// skipped; `None` when the message is malformed.
pub fn scan_start_timestamps(mut buf: &[u8]) -> Option<(Vec<i64>, Vec<i64>)> {
    let (mut samples, mut hists) = (Vec::new(), Vec::new());
    while !buf.is_empty() {
        let (tag, wt) = encoding::decode_key(&mut buf).ok()?;
        let field = match tag {
            SAMPLE_START_TIMESTAMPS_FIELD => &mut samples,
            HISTOGRAM_START_TIMESTAMPS_FIELD => &mut hists,
            _ => {
                encoding::skip_field(wt, tag, &mut buf, DecodeContext::default()).ok()?;
                continue;
            }
        };
        if wt != WireType::LengthDelimited {
            return None;
        }
        let n = usize::try_from(encoding::decode_varint(&mut buf).ok()?).ok()?;
        let (payload, rest) = buf.split_at_checked(n)?;
        *field = decode_start_timestamps(payload)?;
        buf = rest;
    }
    Some((samples, hists))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// `stratus.ingester.v1.PushRequest`.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct PushRequest {
    /// Tenant id (validated by the ingester).
    pub tenant: String,
    /// Series with their samples, native histograms and exemplars, each
    /// an encoded `prometheus.TimeSeries` (label sets sorted by name, as
    /// in remote write). Not checked when encoding: the receiver refuses
    /// a request with a malformed series.
    pub timeseries: Vec<Bytes>,
    /// Metric family metadata (type, help, unit).
    pub metadata: Vec<MetricMetadata>,
}

impl PushRequest {
    /// Encodes `ts` as one element of [`PushRequest::timeseries`].
    pub fn encode_series(ts: &TimeSeries) -> Bytes {
        Bytes::from(ts.encode_to_vec())
    }

    /// Decodes every series (tests and tools; the ingester decodes them
    /// without this copy).
    pub fn decode_series(&self) -> Result<Vec<TimeSeries>, DecodeError> {
        self.timeseries
            .iter()
            .map(|b| TimeSeries::decode(b.as_ref()))
            .collect()
    }
}

impl Message for PushRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.tenant.is_empty() {
            encoding::string::encode(1, &self.tenant, buf);
        }
        for s in &self.timeseries {
            encoding::bytes::encode(2, s, buf);
        }
        encoding::message::encode_repeated(3, &self.metadata, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.tenant, buf, ctx),
            2 => {
                let mut b = Bytes::new();
                encoding::bytes::merge(wire_type, &mut b, buf, ctx)?;
                self.timeseries.push(b);
                Ok(())
            }
            3 => encoding::message::merge_repeated(wire_type, &mut self.metadata, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let tenant = if self.tenant.is_empty() {
            0
        } else {
            encoding::string::encoded_len(1, &self.tenant)
        };
        let series: usize = self
            .timeseries
            .iter()
            .map(|s| encoding::key_len(2) + encoding::encoded_len_varint(s.len() as u64) + s.len())
            .sum();
        tenant + series + encoding::message::encoded_len_repeated(3, &self.metadata)
    }

    fn clear(&mut self) {
        self.tenant.clear();
        self.timeseries.clear();
        self.metadata.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::{Label, Sample};

    /// The generated shape of the same message, for wire comparisons.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(string, tag = "1")]
        tenant: String,
        #[prost(message, repeated, tag = "2")]
        timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        metadata: Vec<MetricMetadata>,
    }

    #[test]
    fn start_timestamps_round_trip_and_are_skipped_by_rw1_decoders() {
        let sts = [
            0i64,
            1_700_000_000_000,
            1_700_000_000_000,
            -5,
            i64::MIN,
            i64::MAX,
            0,
        ];
        let ts = TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "up".into(),
            }],
            samples: vec![Sample {
                value: 1.0,
                timestamp: 2,
            }],
            ..Default::default()
        };
        let mut buf = ts.encode_to_vec();
        encode_start_timestamps(SAMPLE_START_TIMESTAMPS_FIELD, sts.iter().copied(), &mut buf);
        encode_start_timestamps(
            HISTOGRAM_START_TIMESTAMPS_FIELD,
            [7i64].into_iter(),
            &mut buf,
        );
        assert_eq!(TimeSeries::decode(&buf[..]).unwrap(), ts);
        let (s, h) = scan_start_timestamps(&buf).unwrap();
        assert_eq!(s, sts);
        assert_eq!(h, [7]);
        // A repeated start costs one byte per sample.
        let mut small = Vec::new();
        encode_start_timestamps(
            1001,
            std::iter::repeat_n(1_700_000_000_000i64, 100),
            &mut small,
        );
        assert!(small.len() < 120, "{}", small.len());
        assert!(scan_start_timestamps(&buf[..buf.len() - 1]).is_none());
    }

    #[test]
    fn wire_identical_to_the_generated_message() {
        let ts = TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "up".into(),
            }],
            samples: vec![Sample {
                value: 1.5,
                timestamp: 42,
            }],
            ..Default::default()
        };
        let md = MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "h".into(),
            unit: String::new(),
        };
        let g = Generated {
            tenant: "t".into(),
            timeseries: vec![ts.clone(), TimeSeries::default()],
            metadata: vec![md.clone()],
        };
        let h = PushRequest {
            tenant: "t".into(),
            timeseries: vec![PushRequest::encode_series(&ts), Bytes::new()],
            metadata: vec![md],
        };
        let wire = g.encode_to_vec();
        assert_eq!(h.encode_to_vec(), wire);
        assert_eq!(h.encoded_len(), wire.len());
        let back = PushRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.decode_series().unwrap(), g.timeseries);
        assert!(PushRequest::decode(&wire[..wire.len() - 1]).is_err());
    }
}
