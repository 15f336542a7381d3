//! Range query results as data: parsing a downstream `query_range`
//! answer, merging sub-results per series in timestamp order, and
//! writing the merged answer in Prometheus' JSON encoding.
//!
//! Sample values are kept as the strings the querier wrote (never
//! re-formatted), native histogram points as their raw JSON objects, and
//! timestamps as integer milliseconds written back the way Prometheus'
//! codec writes them, so a merged answer is what one unsplit query gives.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A series' label set, sorted by name (the JSON object's key order).
pub(crate) type Metric = Vec<(String, String)>;

/// The points of one series.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Points {
    /// `(ms, value as written by the querier)`.
    pub(crate) values: Vec<(i64, String)>,
    /// `(ms, raw histogram object)`.
    pub(crate) histograms: Vec<(i64, String)>,
}

impl Points {
    /// Rough heap size in bytes (for the cache budget).
    fn bytes(&self) -> usize {
        self.values.iter().map(|(_, v)| 40 + v.len()).sum::<usize>()
            + self
                .histograms
                .iter()
                .map(|(_, h)| 40 + h.len())
                .sum::<usize>()
    }

    /// The points with `from <= t <= to`.
    fn window(&self, from: i64, to: i64) -> Points {
        let keep = |t: &i64| *t >= from && *t <= to;
        Points {
            values: self.values.iter().filter(|p| keep(&p.0)).cloned().collect(),
            histograms: self
                .histograms
                .iter()
                .filter(|p| keep(&p.0))
                .cloned()
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.histograms.is_empty()
    }
}

/// A matrix result: series by label set (so in Prometheus' order).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Matrix {
    pub(crate) series: BTreeMap<Metric, Points>,
}

impl Matrix {
    /// Adds every point of `other`; points are kept in timestamp order and
    /// a timestamp already present keeps its first value.
    pub(crate) fn merge(&mut self, other: Matrix) {
        for (m, p) in other.series {
            let e = self.series.entry(m).or_default();
            merge_points(&mut e.values, p.values);
            merge_points(&mut e.histograms, p.histograms);
        }
    }

    /// The points with `from <= t <= to` (series left empty are dropped).
    pub(crate) fn window(&self, from: i64, to: i64) -> Matrix {
        Matrix {
            series: self
                .series
                .iter()
                .map(|(m, p)| (m.clone(), p.window(from, to)))
                .filter(|(_, p)| !p.is_empty())
                .collect(),
        }
    }

    /// Rough heap size in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.series
            .iter()
            .map(|(m, p)| {
                64 + m.iter().map(|(a, b)| 48 + a.len() + b.len()).sum::<usize>() + p.bytes()
            })
            .sum()
    }
}

fn merge_points<T>(into: &mut Vec<(i64, T)>, more: Vec<(i64, T)>) {
    if more.is_empty() {
        return;
    }
    let sorted_after = match (into.last(), more.first()) {
        (Some(a), Some(b)) => a.0 < b.0,
        _ => true,
    };
    into.extend(more);
    if !sorted_after {
        // Stable: equal timestamps keep their first (existing) value.
        into.sort_by_key(|p| p.0);
        into.dedup_by_key(|p| p.0);
    }
}

/// A successful `query_range` answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RangeResult {
    pub(crate) matrix: Matrix,
    pub(crate) warnings: Vec<String>,
    pub(crate) infos: Vec<String>,
}

impl RangeResult {
    /// Merges another sub-result: series per label set, warnings and
    /// infos deduplicated in first-seen order.
    pub(crate) fn merge(&mut self, other: RangeResult) {
        self.matrix.merge(other.matrix);
        for w in other.warnings {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        for i in other.infos {
            if !self.infos.contains(&i) {
                self.infos.push(i);
            }
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    status: String,
    #[serde(borrow)]
    data: Option<Data<'a>>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    infos: Vec<String>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(borrow)]
    result: &'a RawValue,
}

#[derive(Deserialize)]
struct SeriesJson<'a> {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default, borrow)]
    histograms: Vec<(f64, &'a RawValue)>,
}

fn seconds_to_ms(s: f64) -> Result<i64, String> {
    let ms = (s * 1000.0).round();
    if !ms.is_finite() || ms.abs() >= 9.2e18 {
        return Err(format!("timestamp {s} out of range"));
    }
    Ok(ms as i64)
}

/// Parses a `query_range` success answer; `Err` says why it is not one.
pub(crate) fn parse_range(body: &[u8]) -> Result<RangeResult, String> {
    let env: Envelope<'_> =
        serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    if env.status != "success" {
        return Err(format!("answer status {:?}", env.status));
    }
    let data = env.data.ok_or("answer without data")?;
    if data.result_type != "matrix" {
        return Err(format!(
            "range query answered with result type {:?}",
            data.result_type
        ));
    }
    let series: Vec<SeriesJson<'_>> =
        serde_json::from_str(data.result.get()).map_err(|e| format!("unreadable matrix: {e}"))?;
    let mut m = Matrix::default();
    for s in series {
        let metric: Metric = s.metric.into_iter().collect();
        let mut p = Points::default();
        for (t, v) in s.values {
            p.values.push((seconds_to_ms(t)?, v));
        }
        for (t, h) in s.histograms {
            p.histograms.push((seconds_to_ms(t)?, h.get().to_string()));
        }
        let mut one = Matrix::default();
        one.series.insert(metric, p);
        m.merge(one);
    }
    Ok(RangeResult {
        matrix: m,
        warnings: env.warnings,
        infos: env.infos,
    })
}

pub(crate) use stratus_api::{
    write_json_str as write_str, write_string_list as write_list, write_timestamp,
};

/// The success envelope of a merged range result.
pub(crate) fn encode_range(r: &RangeResult) -> String {
    let mut out = String::with_capacity(256 + r.matrix.bytes());
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[");
    for (i, (metric, p)) in r.matrix.series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":{");
        for (j, (k, v)) in metric.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_str(&mut out, k);
            out.push(':');
            write_str(&mut out, v);
        }
        out.push('}');
        if !p.values.is_empty() {
            out.push_str(",\"values\":[");
            for (j, (t, v)) in p.values.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push('[');
                write_timestamp(&mut out, *t);
                out.push(',');
                write_str(&mut out, v);
                out.push(']');
            }
            out.push(']');
        }
        if !p.histograms.is_empty() {
            out.push_str(",\"histograms\":[");
            for (j, (t, h)) in p.histograms.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push('[');
                write_timestamp(&mut out, *t);
                out.push(',');
                out.push_str(h);
                out.push(']');
            }
            out.push(']');
        }
        out.push('}');
    }
    out.push_str("]}");
    write_list(&mut out, "warnings", &r.warnings);
    write_list(&mut out, "infos", &r.infos);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a<b>"},"values":[[1.5,"1"],[3,"NaN"]]},{"metric":{},"histograms":[[2,{"count":"3","sum":"4.5","buckets":[[3,"-0.001","0.001","1"]]}]]}]},"warnings":["w1"]}"#;
    const B: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a<b>"},"values":[[4.5,"2"],[6,"+Inf"]]},{"metric":{"__name__":"up","job":"0"},"values":[[4.5,"1e-07"]]}]},"warnings":["w1","w2"],"infos":["i"]}"#;

    #[test]
    fn round_trip_is_byte_exact() {
        let r = parse_range(A.as_bytes()).unwrap();
        // Series order is by label set: {} sorts first.
        let want = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"histograms":[[2,{"count":"3","sum":"4.5","buckets":[[3,"-0.001","0.001","1"]]}]]},{"metric":{"__name__":"up","job":"a\u003cb\u003e"},"values":[[1.500,"1"],[3,"NaN"]]}]},"warnings":["w1"]}"#;
        assert_eq!(encode_range(&r), want);
        let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(encode_range(&parse_range(empty.as_bytes()).unwrap()), empty);
    }

    #[test]
    fn merge_per_series_in_time_order() {
        let mut r = parse_range(B.as_bytes()).unwrap();
        r.merge(parse_range(A.as_bytes()).unwrap());
        let s = &r.matrix.series;
        assert_eq!(s.len(), 3);
        let up_a: Metric = vec![
            ("__name__".into(), "up".into()),
            ("job".into(), "a<b>".into()),
        ];
        let ts: Vec<i64> = s[&up_a].values.iter().map(|p| p.0).collect();
        assert_eq!(ts, vec![1500, 3000, 4500, 6000]);
        assert_eq!(r.warnings, vec!["w1".to_string(), "w2".to_string()]);
        assert_eq!(r.infos, vec!["i".to_string()]);
        // Windows select by time and drop emptied series.
        let w = r.matrix.window(4000, 5000);
        assert_eq!(w.series.len(), 2);
        assert!(w.series.values().all(|p| p.values.len() == 1));
        // Overlapping merges keep one point per timestamp.
        let mut m = r.matrix.clone();
        m.merge(r.matrix.clone());
        assert_eq!(m, r.matrix);
    }

    #[test]
    fn refuses_what_is_not_a_matrix() {
        for bad in [
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            r#"{"status":"error","errorType":"bad_data","error":"x"}"#,
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[["x","1"]]}]}}"#,
            "not json",
        ] {
            assert!(parse_range(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
