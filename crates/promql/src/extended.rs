//! The experimental `anchored` and `smoothed` selector modifiers
//! (Prometheus 3 "extended range selectors").
//!
//! * A range selector `v[r] anchored` hands its function, besides the
//!   samples in `(t - r, t]`, the newest sample at or before `t - r` (within
//!   the lookback delta): the *anchor*. `rate`, `increase` and `delta` then
//!   compute `last - anchor` (plus counter-reset corrections) without any
//!   extrapolation; `changes` and `resets` count the transition from the
//!   anchor too.
//! * `v[r] smoothed` also adds the oldest sample after `t` (within the
//!   lookback), and `rate`/`increase`/`delta` use the values linearly
//!   interpolated at both range boundaries.
//! * An instant selector `v smoothed` returns, per step, the value
//!   interpolated between the samples around the step time (or the last
//!   one when there is none after it).
//!
//! Counter resets: when interpolating a counter across a reset, the counter
//! is modelled as restarting from zero. Floats read by an instant selector
//! are never treated as counters; histograms are unless their hint says
//! gauge.
//!
//! The plain selector paths in `engine.rs` are untouched: only selectors
//! carrying a modifier come here.

use std::sync::Arc;

use stratus_model::{FloatHistogram, Labels, is_stale_nan, reset_hint};

use crate::ast::VectorSelector;
use crate::engine::{Ctx, Evaluator, Result, Series, TypedV, Window, metric_name, typed};
use crate::error::PromqlError;
use crate::histogram::{self as hg, Hist};

/// Warning texts (`{NAME}` is replaced by the quoted metric name).
pub(crate) const MIX_FH: &str = "encountered a mix of histograms and floats for metric name {NAME}";
pub(crate) const MIX_SCHEMA: &str = "vector contains a mix of histograms with exponential and custom buckets schemas for metric name {NAME}";
const NOT_COUNTER: &str = "this native histogram metric is not a counter: {NAME}";
const NOT_GAUGE: &str = "this native histogram metric is not a gauge: {NAME}";
/// Prefix of texts that are infos rather than warnings.
pub(crate) const INFO: &str = "info:";
const RECONCILED: &str = "mismatched custom buckets were reconciled during";

/// Whether the selector carries `anchored` or `smoothed`.
pub(crate) fn is_extended(vs: &VectorSelector) -> bool {
    vs.anchored || vs.smoothed
}

/// A non-stale sample of a series, float or histogram.
enum Sv {
    F(f64),
    H(Hist),
}

/// A series' labels and its non-stale samples in time order.
type SeriesSamples = (Labels, Vec<(i64, Sv)>);

impl<'a> Evaluator<'a> {
    /// All non-stale samples of the selected series in `[lo, hi]`.
    fn extended_samples(
        &mut self,
        vs: &VectorSelector,
        lo: i64,
        hi: i64,
        range: i64,
    ) -> Result<Vec<SeriesSamples>> {
        let selected = self.select(vs, lo, hi, range)?;
        let mut out = Vec::with_capacity(selected.len());
        for s in selected {
            self.check_deadline()?;
            let samples: Vec<(i64, Sv)> = if s.has_histograms() {
                typed(&s, lo, hi, false)?
                    .into_iter()
                    .filter_map(|(t, v)| match v {
                        TypedV::F(f) if !is_stale_nan(f) => Some((t, Sv::F(f))),
                        TypedV::H(h) if !h.is_stale() => Some((t, Sv::H(h))),
                        _ => None,
                    })
                    .collect()
            } else {
                s.iter(lo, hi)
                    .filter(|p| !is_stale_nan(p.1))
                    .map(|(t, f)| (t, Sv::F(f)))
                    .collect()
            };
            self.check_samples(samples.len())?;
            out.push((s.labels, samples));
        }
        Ok(out)
    }

    /// The windows of an `anchored`/`smoothed` range selector: per step the
    /// anchor (newest sample at or before the range start, within the
    /// lookback), the samples in the range and, when smoothed, the oldest
    /// sample after the range end (within the lookback).
    pub(crate) fn extended_windows(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        ctx: &Ctx,
        f: &mut dyn FnMut(Window<'_>) -> Result<()>,
    ) -> Result<Vec<Labels>> {
        let n = ctx.n();
        if n == 0 {
            return Ok(Vec::new());
        }
        let lookback = self.lookback;
        let refs = self.refs(&vs.at, vs.offset, ctx);
        let lo = refs[0]
            .saturating_sub(range)
            .saturating_sub(lookback)
            .saturating_add(1);
        let mut hi = refs[n - 1];
        if vs.smoothed {
            hi = hi.saturating_add(lookback);
        }
        let all = self.extended_samples(vs, lo, hi, range)?;
        let mut labels = Vec::with_capacity(all.len());
        let mut fl: Vec<(i64, f64)> = Vec::new();
        let mut hs: Vec<(i64, Hist)> = Vec::new();
        for (si, (l, samples)) in all.into_iter().enumerate() {
            for (i, &r) in refs.iter().enumerate() {
                let start = r.saturating_sub(range);
                let mut a = samples.partition_point(|x| x.0 <= start);
                let mut b = samples.partition_point(|x| x.0 <= r);
                // An anchor alone (nothing in the range) yields nothing.
                let anchor_ok = a < b || vs.smoothed;
                if anchor_ok && a > 0 && samples[a - 1].0 > start.saturating_sub(lookback) {
                    a -= 1;
                }
                if vs.smoothed && b < samples.len() && samples[b].0 <= r.saturating_add(lookback) {
                    b += 1;
                }
                fl.clear();
                hs.clear();
                for (t, v) in samples.get(a..b).unwrap_or(&[]) {
                    match v {
                        Sv::F(x) => fl.push((*t, *x)),
                        Sv::H(h) => hs.push((*t, h.clone())),
                    }
                }
                self.check_samples(fl.len() + hs.len())?;
                f(Window {
                    series: si,
                    step: i,
                    points: &fl,
                    hpoints: &hs,
                    fst: &[],
                    hst: &[],
                    range_start: start,
                    range_end: r,
                })?;
            }
            labels.push(l);
        }
        Ok(labels)
    }

    /// An instant selector with `smoothed`: per step the value interpolated
    /// at the reference time between the samples around it.
    pub(crate) fn smoothed_selector(
        &mut self,
        vs: &VectorSelector,
        ctx: &Ctx,
    ) -> Result<Vec<Series>> {
        let n = ctx.n();
        if n == 0 {
            return Ok(Vec::new());
        }
        let lookback = self.lookback;
        let refs = self.refs(&vs.at, vs.offset, ctx);
        let lo = refs[0].saturating_sub(lookback).saturating_add(1);
        let hi = refs[n - 1].saturating_add(lookback);
        let all = self.extended_samples(vs, lo, hi, 0)?;
        let mut out = Vec::with_capacity(all.len());
        let mut warns: Vec<String> = Vec::new();
        for (l, samples) in all {
            let mut s = Series::floats(l, false, Vec::new());
            let name = metric_name(&s.labels).to_string();
            for (i, &r) in refs.iter().enumerate() {
                let b = samples.partition_point(|x| x.0 <= r);
                if b == 0 || samples[b - 1].0 <= r.saturating_sub(lookback) {
                    continue;
                }
                let (t1, v1) = &samples[b - 1];
                let next = samples
                    .get(b)
                    .filter(|x| *t1 < r && x.0 <= r.saturating_add(lookback));
                let ts = ctx.ts(i);
                match (v1, next) {
                    (Sv::F(x), None) => s.points.push((ts, *x)),
                    (Sv::H(h), None) => s.hist.push((ts, h.clone())),
                    (Sv::F(x), Some((t2, Sv::F(y)))) => {
                        s.points
                            .push((ts, interpolate((*t1, *x), (*t2, *y), r, false)));
                    }
                    (Sv::H(h1), Some((_, Sv::H(h2)))) if hg::is_custom(h1) != hg::is_custom(h2) => {
                        warns.push(MIX_SCHEMA.replace("{NAME}", &crate::value::go_quote(&name)));
                    }
                    (Sv::H(h1), Some((t2, Sv::H(h2)))) => {
                        let counter = h2.reset_hint != reset_hint::GAUGE;
                        let mut w = |m: String| {
                            warns.push(m.replace("{NAME}", &crate::value::go_quote(&name)))
                        };
                        if let Some(h) = interpolate_hist((*t1, h1), (*t2, h2), r, counter, &mut w)
                        {
                            s.hist.push((ts, Arc::new(h)));
                        }
                    }
                    _ => warns.push(MIX_FH.replace("{NAME}", &crate::value::go_quote(&name))),
                }
            }
            if !s.points.is_empty() || !s.hist.is_empty() {
                out.push(s);
            }
        }
        for w in warns {
            match w.strip_prefix(INFO) {
                Some(i) => self.info(i.to_string()),
                None => self.warn(w),
            }
        }
        Ok(out)
    }
}

/// The raw points of an `anchored`/`smoothed` range selector returned as a
/// range vector: the window trimmed to `[start, end]` with a point at each
/// boundary (the anchor's value, or the interpolated one when smoothed).
pub(crate) fn extend_raw(
    points: &[(i64, f64)],
    hist: bool,
    start: i64,
    end: i64,
    smoothed: bool,
) -> Result<Vec<(i64, f64)>> {
    if hist {
        let what = if smoothed { "smoothed" } else { "anchored" };
        return Err(PromqlError::BadArgument {
            msg: format!("{what} modifier is not supported with histograms"),
        });
    }
    let Some((first, last)) = bounds(points, start, end, smoothed) else {
        return Ok(Vec::new());
    };
    let left = pick_left(points, first, start, smoothed, false);
    let right = pick_right(points, last, end, smoothed, false);
    let a = if points[first].0 <= start {
        first + 1
    } else {
        first
    };
    let b = if points[last].0 >= end {
        last
    } else {
        last + 1
    };
    let mut out = Vec::with_capacity(b.saturating_sub(a) + 2);
    out.push((start, left));
    out.extend_from_slice(points.get(a..b).unwrap_or(&[]));
    out.push((end, right));
    Ok(out)
}

/// Indexes of the left and right boundary samples of a window, or `None`
/// when the window yields no result (all samples before the range, or,
/// when smoothed, all after it).
fn bounds<T>(s: &[(i64, T)], start: i64, end: i64, smoothed: bool) -> Option<(usize, usize)> {
    if s.is_empty() {
        return None;
    }
    let body = &s[..s.len() - 1];
    let first = body.partition_point(|p| p.0 <= start).saturating_sub(1);
    let last = if smoothed {
        body.partition_point(|p| p.0 < end)
    } else {
        s.len() - 1
    };
    if s[last].0 <= start || (smoothed && s[first].0 > end) {
        return None;
    }
    Some((first, last))
}

/// Linear interpolation at `t`; a counter that fell is taken to restart
/// from zero.
fn interpolate(p1: (i64, f64), p2: (i64, f64), t: i64, counter: bool) -> f64 {
    let y1 = if counter && p2.1 < p1.1 { 0.0 } else { p1.1 };
    y1 + (p2.1 - y1) * (t - p1.0) as f64 / (p2.0 - p1.0) as f64
}

fn pick_left(s: &[(i64, f64)], first: usize, start: i64, smoothed: bool, counter: bool) -> f64 {
    if smoothed && s[first].0 < start && first + 1 < s.len() {
        return interpolate(s[first], s[first + 1], start, counter);
    }
    s[first].1
}

fn pick_right(s: &[(i64, f64)], last: usize, end: i64, smoothed: bool, counter: bool) -> f64 {
    if smoothed && last > 0 && s[last].0 > end {
        return interpolate(s[last - 1], s[last], end, counter);
    }
    s[last].1
}

/// `rate`, `increase` or `delta` over an anchored/smoothed window of
/// floats: no extrapolation, boundary values picked or interpolated.
pub(crate) fn extended_rate(
    w: &Window<'_>,
    range_secs: f64,
    smoothed: bool,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    let s = w.points;
    let (mut first, mut last) = bounds(s, w.range_start, w.range_end, smoothed)?;
    let left = pick_left(s, first, w.range_start, smoothed, is_counter);
    let right = pick_right(s, last, w.range_end, smoothed, is_counter);
    let mut result = right - left;
    if is_counter {
        // Samples strictly inside the range; resets across a boundary
        // are handled by the interpolation.
        if s[first].0 <= w.range_start {
            first += 1;
        }
        if s[last].0 >= w.range_end {
            last = last.wrapping_sub(1);
        }
        let mut prev = left;
        if last != usize::MAX && first <= last {
            for p in &s[first..=last] {
                if p.1 < prev {
                    result += prev;
                }
                prev = p.1;
            }
        }
        if right < prev {
            result += prev;
        }
    }
    if is_rate {
        result /= range_secs;
    }
    Some(result)
}

/// Histogram interpolation at `t`; a counter reset makes the result `h2`
/// scaled by the elapsed fraction.
fn interpolate_hist(
    p1: (i64, &FloatHistogram),
    p2: (i64, &FloatHistogram),
    t: i64,
    counter: bool,
    warn: &mut dyn FnMut(String),
) -> Option<FloatHistogram> {
    if t == p1.0 {
        return Some(p1.1.clone());
    }
    if t == p2.0 {
        return Some(p2.1.clone());
    }
    let fraction = (t - p1.0) as f64 / (p2.0 - p1.0) as f64;
    if counter && hg::detect_reset(p2.1, p1.1) {
        let mut h = hg::scale(p2.1, fraction);
        h.reset_hint = p2.1.reset_hint;
        return Some(h);
    }
    if hg::custom_mismatch(p2.1, p1.1) {
        warn(format!("{INFO}{RECONCILED} subtraction"));
    }
    let Ok(d) = hg::sub(p2.1, p1.1) else {
        warn(MIX_SCHEMA.into());
        return None;
    };
    let d = hg::scale(&d, fraction);
    if hg::custom_mismatch(&d, p1.1) {
        warn(format!("{INFO}{RECONCILED} addition"));
    }
    match hg::add(&d, p1.1) {
        Ok(mut h) => {
            h.reset_hint = p2.1.reset_hint;
            Some(h)
        }
        Err(_) => {
            warn(MIX_SCHEMA.into());
            None
        }
    }
}

/// `rate`, `increase` or `delta` over an anchored/smoothed window of
/// native histograms.
pub(crate) fn extended_hist_rate(
    w: &Window<'_>,
    range_secs: f64,
    smoothed: bool,
    is_counter: bool,
    is_rate: bool,
    warn: &mut dyn FnMut(String),
) -> Option<FloatHistogram> {
    let h = w.hpoints;
    let (start, end) = (w.range_start, w.range_end);
    let (first, last) = bounds(h, start, end, smoothed)?;
    let custom = hg::is_custom(&h[first].1);
    for (_, x) in &h[first..=last] {
        if hg::is_custom(x) != custom {
            warn(MIX_SCHEMA.into());
            return None;
        }
    }
    if is_counter
        && h[first..=last]
            .iter()
            .any(|(_, x)| x.reset_hint == reset_hint::GAUGE)
    {
        warn(NOT_COUNTER.into());
    }
    let left = if smoothed && h[first].0 < start && first + 1 < h.len() {
        interpolate_hist(
            (h[first].0, &h[first].1),
            (h[first + 1].0, &h[first + 1].1),
            start,
            is_counter,
            warn,
        )?
    } else {
        (*h[first].1).clone()
    };
    let right = if smoothed && last > 0 && h[last].0 > end {
        interpolate_hist(
            (h[last - 1].0, &h[last - 1].1),
            (h[last].0, &h[last].1),
            end,
            is_counter,
            warn,
        )?
    } else {
        (*h[last].1).clone()
    };
    if !is_counter
        && (left.reset_hint != reset_hint::GAUGE || right.reset_hint != reset_hint::GAUGE)
    {
        warn(NOT_GAUGE.into());
    }
    if hg::custom_mismatch(&right, &left) {
        warn(format!("{INFO}{RECONCILED} subtraction"));
    }
    let Ok(mut result) = hg::sub(&right, &left) else {
        warn(MIX_SCHEMA.into());
        return None;
    };
    if is_counter {
        // Resets between the boundary samples; the last boundary sample is
        // represented by `right` and checked against its predecessor.
        let mut lo = first + 1;
        let mut prev: &FloatHistogram = &left;
        if smoothed
            && h[first].0 < start
            && first + 1 < h.len()
            && hg::detect_reset(&h[first + 1].1, &h[first].1)
        {
            prev = &h[first + 1].1;
            lo += 1;
        }
        if lo <= last {
            let mut correction: Option<FloatHistogram> = None;
            let mut add = |c: &FloatHistogram, warn: &mut dyn FnMut(String)| -> bool {
                match &correction {
                    None => {
                        correction = Some(c.clone());
                        true
                    }
                    Some(acc) => match hg::add(acc, c) {
                        Ok(r) => {
                            correction = Some(r);
                            true
                        }
                        Err(_) => {
                            warn(MIX_SCHEMA.into());
                            false
                        }
                    },
                }
            };
            for (_, x) in &h[lo..last] {
                if hg::detect_reset(x, prev) && !add(prev, warn) {
                    return None;
                }
                prev = x;
            }
            if hg::detect_reset(&right, prev) && !add(prev, warn) {
                return None;
            }
            if let Some(c) = correction {
                match hg::add(&result, &c) {
                    Ok(r) => result = r,
                    Err(_) => {
                        warn(MIX_SCHEMA.into());
                        return None;
                    }
                }
            }
        }
    }
    if is_rate {
        result = hg::scale(&result, 1.0 / range_secs);
    }
    let mut result = hg::compact(&result);
    result.reset_hint = reset_hint::GAUGE;
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_pick_anchor_and_next() {
        let s = [(0, 1.0), (60_000, 2.0), (180_000, 4.0)];
        // (60s, 120s]: anchor at 60s, nothing inside: no result when anchored.
        assert_eq!(bounds(&s[..2], 60_000, 120_000, false), None);
        // Smoothed: left is the 60s sample, right interpolated to 3.
        assert_eq!(bounds(&s, 60_000, 120_000, true), Some((1, 2)));
        assert_eq!(pick_right(&s, 2, 120_000, true, true), 3.0);
    }

    #[test]
    fn interpolation_restarts_counters() {
        assert_eq!(interpolate((0, 100.0), (15_000, 10.0), 12_000, true), 8.0);
        assert_eq!(interpolate((0, 100.0), (10_000, 0.0), 5_000, false), 50.0);
    }
}
