//! Native histogram arithmetic for the evaluator: addition and
//! subtraction with schema reduction and zero-bucket widening, scaling,
//! counter-reset detection, bucket iteration with boundaries, and the
//! quantile / fraction / variance estimations of Prometheus 3.
//!
//! Histograms are handled as [`FloatHistogram`]s; results are always
//! compact (no empty buckets, adjacent buckets joined into one span).

use std::sync::Arc;

use stratus_model::{BucketSpan, CUSTOM_BUCKETS_SCHEMA, FloatHistogram, reset_hint};

/// A shared float histogram, as carried by intermediate values.
pub(crate) type Hist = Arc<FloatHistogram>;

/// Why two histograms cannot be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HistError {
    /// One uses exponential buckets, the other custom buckets.
    MixedSchemas,
}

/// Whether `h` uses custom bucket boundaries.
pub(crate) fn is_custom(h: &FloatHistogram) -> bool {
    h.schema == CUSTOM_BUCKETS_SCHEMA
}

/// `(bucket index, count)` pairs of a span list, in index order.
fn sparse(spans: &[BucketSpan], buckets: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(buckets.len());
    let mut idx: i32 = 0;
    let mut k = 0usize;
    for (i, s) in spans.iter().enumerate() {
        idx = if i == 0 {
            s.offset
        } else {
            idx.saturating_add(s.offset)
        };
        for _ in 0..s.length {
            if let Some(&c) = buckets.get(k) {
                out.push((idx, c));
            }
            k += 1;
            idx = idx.saturating_add(1);
        }
    }
    out
}

/// Span list and counts of `(index, count)` pairs (sorted); zero counts
/// are dropped.
fn dense(pairs: &[(i32, f64)]) -> (Vec<BucketSpan>, Vec<f64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut buckets = Vec::with_capacity(pairs.len());
    let mut next: Option<i32> = None;
    for &(idx, c) in pairs {
        if c == 0.0 {
            continue;
        }
        match (next, spans.last_mut()) {
            (Some(n), Some(last)) if n == idx => last.length += 1,
            (Some(n), _) => spans.push(BucketSpan {
                offset: idx - n,
                length: 1,
            }),
            (None, _) => spans.push(BucketSpan {
                offset: idx,
                length: 1,
            }),
        }
        buckets.push(c);
        next = Some(idx + 1);
    }
    (spans, buckets)
}

/// Index of `idx` (at `from` schema) in the coarser `to` schema.
fn reduce_index(idx: i32, from: i32, to: i32) -> i32 {
    if from <= to {
        return idx;
    }
    ((idx - 1) >> (from - to)) + 1
}

/// Merges sorted pairs with the same index, summing their counts.
fn merge_pairs(mut v: Vec<(i32, f64)>) -> Vec<(i32, f64)> {
    v.sort_by_key(|p| p.0);
    let mut out: Vec<(i32, f64)> = Vec::with_capacity(v.len());
    for (i, c) in v {
        match out.last_mut() {
            Some(l) if l.0 == i => l.1 += c,
            _ => out.push((i, c)),
        }
    }
    out
}

/// An unpacked histogram used while computing.
#[derive(Debug, Clone)]
struct Work {
    schema: i32,
    zt: f64,
    zc: f64,
    count: f64,
    sum: f64,
    pos: Vec<(i32, f64)>,
    neg: Vec<(i32, f64)>,
    custom: Vec<f64>,
    hint: u8,
}

impl Work {
    fn of(h: &FloatHistogram) -> Self {
        Work {
            schema: h.schema,
            zt: h.zero_threshold,
            zc: h.zero_count,
            count: h.count,
            sum: h.sum,
            pos: sparse(&h.positive_spans, &h.positive_buckets),
            neg: sparse(&h.negative_spans, &h.negative_buckets),
            custom: h.custom_values.clone(),
            hint: h.reset_hint,
        }
    }

    fn build(self) -> FloatHistogram {
        let (ps, pb) = dense(&self.pos);
        let (ns, nb) = dense(&self.neg);
        FloatHistogram {
            reset_hint: self.hint,
            schema: self.schema,
            zero_threshold: self.zt,
            zero_count: self.zc,
            count: self.count,
            sum: self.sum,
            positive_spans: ps,
            positive_buckets: pb,
            negative_spans: ns,
            negative_buckets: nb,
            custom_values: self.custom,
        }
    }

    fn reduce(&mut self, to: i32) {
        if self.schema == CUSTOM_BUCKETS_SCHEMA || to >= self.schema {
            return;
        }
        let from = self.schema;
        for side in [&mut self.pos, &mut self.neg] {
            let v: Vec<(i32, f64)> = side
                .iter()
                .map(|&(i, c)| (reduce_index(i, from, to), c))
                .collect();
            *side = merge_pairs(v);
        }
        self.schema = to;
    }

    /// Raises the zero threshold to at least `zt`, moving buckets that
    /// fall inside it into the zero bucket.
    fn widen_zero(&mut self, zt: f64) {
        if self.schema == CUSTOM_BUCKETS_SCHEMA || zt <= self.zt {
            return;
        }
        let mut zt = zt;
        loop {
            let mut moved = false;
            for side in [&mut self.pos, &mut self.neg] {
                let schema = self.schema;
                side.retain(|&(i, c)| {
                    let upper = exp_bound(i, schema);
                    if upper <= zt {
                        self.zc += c;
                        false
                    } else {
                        let lower = exp_bound(i - 1, schema);
                        if lower < zt {
                            // The threshold cuts this bucket: take it whole.
                            zt = upper;
                            self.zc += c;
                            moved = true;
                            false
                        } else {
                            true
                        }
                    }
                });
            }
            if !moved {
                break;
            }
        }
        self.zt = zt;
    }

    fn scale(&mut self, f: f64) {
        self.zc *= f;
        self.count *= f;
        self.sum *= f;
        for (_, c) in self.pos.iter_mut().chain(self.neg.iter_mut()) {
            *c *= f;
        }
    }
}

/// Upper boundary of exponential bucket `idx` at `schema`.
pub(crate) fn exp_bound(idx: i32, schema: i32) -> f64 {
    if schema <= 0 {
        let e = i64::from(idx) << (-schema).clamp(0, 30);
        if e > 1100 {
            return f64::INFINITY;
        }
        if e < -1100 {
            return 0.0;
        }
        return 2f64.powi(e as i32);
    }
    let per = 1i64 << schema.clamp(0, 30);
    let idx = i64::from(idx);
    let whole = idx.div_euclid(per);
    let frac = idx.rem_euclid(per);
    if whole > 1100 {
        return f64::INFINITY;
    }
    if whole < -1100 {
        return 0.0;
    }
    let m = 2f64.powf(frac as f64 / per as f64);
    m * 2f64.powi(whole as i32)
}

fn check(a: &FloatHistogram, b: &FloatHistogram) -> Result<(), HistError> {
    if is_custom(a) != is_custom(b) {
        return Err(HistError::MixedSchemas);
    }
    Ok(())
}

/// Whether `a` and `b` both use custom buckets with different
/// boundaries (combining them reconciles the boundaries, with an info).
pub(crate) fn custom_mismatch(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    is_custom(a) && is_custom(b) && a.custom_values != b.custom_values
}

impl Work {
    /// Re-buckets custom buckets onto `bounds`, a subset of the current
    /// boundaries: each bucket joins the new bucket that contains it.
    fn rebucket(&mut self, bounds: &[f64]) {
        if self.custom == bounds {
            return;
        }
        let custom = &self.custom;
        let v: Vec<(i32, f64)> = self
            .pos
            .iter()
            .map(|&(i, c)| {
                let upper = usize::try_from(i)
                    .ok()
                    .and_then(|iu| custom.get(iu).copied())
                    .unwrap_or(f64::INFINITY);
                let j = bounds.partition_point(|&b| b < upper);
                (i32::try_from(j).unwrap_or(i32::MAX), c)
            })
            .collect();
        self.pos = merge_pairs(v);
        self.custom = bounds.to_vec();
    }
}

/// `a + b * sign`, reducing to the smaller schema and the larger zero
/// threshold. Counter-reset hints combine as Prometheus does.
fn combine(a: &FloatHistogram, b: &FloatHistogram, sign: f64) -> Result<FloatHistogram, HistError> {
    check(a, b)?;
    let mut x = Work::of(a);
    let mut y = Work::of(b);
    if custom_mismatch(a, b) {
        let common: Vec<f64> = a
            .custom_values
            .iter()
            .copied()
            .filter(|v| b.custom_values.contains(v))
            .collect();
        x.rebucket(&common);
        y.rebucket(&common);
    }
    let schema = x.schema.min(y.schema);
    x.reduce(schema);
    y.reduce(schema);
    let zt = x.zt.max(y.zt);
    x.widen_zero(zt);
    y.widen_zero(x.zt);
    x.widen_zero(y.zt);
    x.zc += sign * y.zc;
    x.count += sign * y.count;
    x.sum += sign * y.sum;
    for (mine, theirs) in [(&mut x.pos, &y.pos), (&mut x.neg, &y.neg)] {
        let mut v = std::mem::take(mine);
        v.extend(theirs.iter().map(|&(i, c)| (i, sign * c)));
        *mine = merge_pairs(v);
    }
    x.hint = combine_hint(a.reset_hint, b.reset_hint);
    Ok(x.build())
}

fn combine_hint(a: u8, b: u8) -> u8 {
    if a == b {
        return a;
    }
    if a == reset_hint::GAUGE || b == reset_hint::GAUGE {
        return reset_hint::GAUGE;
    }
    reset_hint::UNKNOWN
}

/// A zero histogram shaped like `h`, the start of a Kahan compensation.
pub(crate) fn kahan_zero(h: &FloatHistogram) -> FloatHistogram {
    FloatHistogram {
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        custom_values: h.custom_values.clone(),
        ..Default::default()
    }
}

/// Kahan-compensated `acc + b`: every field (count, sum, zero bucket and
/// each bucket) carries its compensation in `comp`. Returns the new sum
/// and compensation; [`kahan_finish`] folds them together.
pub(crate) fn kahan_add(
    acc: &FloatHistogram,
    comp: &FloatHistogram,
    b: &FloatHistogram,
) -> Result<(FloatHistogram, FloatHistogram), HistError> {
    use crate::functions::kahan_inc;
    check(acc, b)?;
    let mut x = Work::of(acc);
    let mut c = Work::of(comp);
    let mut y = Work::of(b);
    if custom_mismatch(acc, b) {
        let common: Vec<f64> = acc
            .custom_values
            .iter()
            .copied()
            .filter(|v| b.custom_values.contains(v))
            .collect();
        x.rebucket(&common);
        c.rebucket(&common);
        y.rebucket(&common);
    }
    let schema = x.schema.min(y.schema).min(c.schema);
    for w in [&mut x, &mut c, &mut y] {
        w.reduce(schema);
    }
    let zt = x.zt.max(y.zt).max(c.zt);
    for _ in 0..2 {
        let zt = x.zt.max(y.zt).max(c.zt).max(zt);
        for w in [&mut x, &mut c, &mut y] {
            w.widen_zero(zt);
        }
    }
    (x.zc, c.zc) = kahan_inc(y.zc, x.zc, c.zc);
    (x.count, c.count) = kahan_inc(y.count, x.count, c.count);
    (x.sum, c.sum) = kahan_inc(y.sum, x.sum, c.sum);
    for (xs, cs, ys) in [
        (&mut x.pos, &mut c.pos, &y.pos),
        (&mut x.neg, &mut c.neg, &y.neg),
    ] {
        let mut m: std::collections::BTreeMap<i32, (f64, f64)> = std::collections::BTreeMap::new();
        for &(i, v) in xs.iter() {
            m.entry(i).or_default().0 += v;
        }
        for &(i, v) in cs.iter() {
            m.entry(i).or_default().1 += v;
        }
        for &(i, v) in ys {
            let e = m.entry(i).or_default();
            *e = kahan_inc(v, e.0, e.1);
        }
        *xs = m.iter().map(|(&i, &(v, _))| (i, v)).collect();
        *cs = m.iter().map(|(&i, &(_, k))| (i, k)).collect();
    }
    x.hint = combine_hint(acc.reset_hint, b.reset_hint);
    Ok((x.build(), c.build()))
}

/// The Kahan sum `acc` corrected by its compensation.
pub(crate) fn kahan_finish(acc: &FloatHistogram, comp: &FloatHistogram) -> FloatHistogram {
    let mut r = combine(acc, comp, 1.0).unwrap_or_else(|_| acc.clone());
    r.reset_hint = acc.reset_hint;
    r
}

/// `a + b`.
pub(crate) fn add(a: &FloatHistogram, b: &FloatHistogram) -> Result<FloatHistogram, HistError> {
    combine(a, b, 1.0)
}

/// `a - b`.
pub(crate) fn sub(a: &FloatHistogram, b: &FloatHistogram) -> Result<FloatHistogram, HistError> {
    combine(a, b, -1.0)
}

/// Whether any count, the sum or a bucket of `h` is infinite (a running
/// sum that overflowed).
pub(crate) fn has_overflow(h: &FloatHistogram) -> bool {
    [h.zero_count, h.count, h.sum]
        .iter()
        .chain(&h.positive_buckets)
        .chain(&h.negative_buckets)
        .any(|v| v.is_infinite())
}

/// Running sum or mean of histograms in Prometheus' order of operations:
/// a Kahan-compensated sum while it stays finite; for a mean, once the sum
/// would overflow, an incremental mean (`mean*(n-1)/n + h/n`, compensated
/// too) from then on.
#[derive(Debug, Clone)]
pub(crate) struct HistAcc {
    sum: FloatHistogram,
    comp: Option<FloatHistogram>,
    /// The mean once the incremental calculation took over.
    mean: Option<FloatHistogram>,
    count: f64,
}

impl HistAcc {
    /// Starts with the first histogram.
    pub(crate) fn new(first: &FloatHistogram) -> Self {
        HistAcc {
            sum: first.clone(),
            comp: None,
            mean: None,
            count: 1.0,
        }
    }

    /// The histogram values are accumulated into (for compatibility checks).
    pub(crate) fn current(&self) -> &FloatHistogram {
        self.mean.as_ref().unwrap_or(&self.sum)
    }

    /// Adds `h` to a sum.
    pub(crate) fn add_sum(&mut self, h: &FloatHistogram) -> Result<(), HistError> {
        self.count += 1.0;
        let comp = self.comp.take().unwrap_or_else(|| kahan_zero(&self.sum));
        let (s, c) = kahan_add(&self.sum, &comp, h)?;
        self.sum = s;
        self.comp = Some(c);
        Ok(())
    }

    /// Adds `h` to a mean.
    pub(crate) fn add_avg(&mut self, h: &FloatHistogram) -> Result<(), HistError> {
        self.count += 1.0;
        let n = self.count;
        if self.mean.is_none() {
            let comp = self.comp.clone().unwrap_or_else(|| kahan_zero(&self.sum));
            let (s, c) = kahan_add(&self.sum, &comp, h)?;
            if !has_overflow(&s) {
                self.sum = s;
                self.comp = Some(c);
                return Ok(());
            }
            self.mean = Some(div(&self.sum, n - 1.0));
            self.comp = self.comp.take().map(|c| div(&c, n - 1.0));
        }
        let q = (n - 1.0) / n;
        let comp = match self.comp.take() {
            Some(c) => scale(&c, q),
            None => kahan_zero(&self.sum),
        };
        let to_add = div(h, n);
        let mean = scale(self.mean.as_ref().unwrap_or(&self.sum), q);
        let (m, c) = kahan_add(&mean, &comp, &to_add)?;
        self.mean = Some(m);
        self.comp = Some(c);
        Ok(())
    }

    /// The sum with its compensation folded in.
    pub(crate) fn finish_sum(self) -> FloatHistogram {
        match &self.comp {
            Some(c) => kahan_finish(&self.sum, c),
            None => compact(&self.sum),
        }
    }

    /// The mean with its compensation folded in.
    pub(crate) fn finish_avg(self) -> FloatHistogram {
        if let Some(m) = &self.mean {
            return match &self.comp {
                Some(c) => kahan_finish(m, c),
                None => compact(m),
            };
        }
        let n = self.count;
        let s = div(&self.sum, n);
        match &self.comp {
            Some(c) => kahan_finish(&s, &div(c, n)),
            None => compact(&s),
        }
    }
}

/// `h * f` (all counts and the sum).
pub(crate) fn scale(h: &FloatHistogram, f: f64) -> FloatHistogram {
    let mut w = Work::of(h);
    w.scale(f);
    w.build()
}

/// `h / f`; division by zero drops all buckets (count, sum and zero
/// bucket become infinite or NaN), as Prometheus does.
pub(crate) fn div(h: &FloatHistogram, f: f64) -> FloatHistogram {
    let mut w = Work::of(h);
    w.zc /= f;
    w.count /= f;
    w.sum /= f;
    if f == 0.0 {
        w.pos.clear();
        w.neg.clear();
    } else {
        for (_, c) in w.pos.iter_mut().chain(w.neg.iter_mut()) {
            *c /= f;
        }
    }
    w.build()
}

/// `h` in compact form (no empty buckets).
pub(crate) fn compact(h: &FloatHistogram) -> FloatHistogram {
    Work::of(h).build()
}

/// `h` reduced to `schema` (no-op if already as coarse).
pub(crate) fn to_schema(h: &FloatHistogram, schema: i32) -> FloatHistogram {
    let mut w = Work::of(h);
    w.reduce(schema);
    w.build()
}

/// Whether `cur` follows a counter reset relative to `prev` (Prometheus'
/// `DetectReset`, honouring the hint of `cur`).
pub(crate) fn detect_reset(cur: &FloatHistogram, prev: &FloatHistogram) -> bool {
    match cur.reset_hint {
        reset_hint::RESET => return true,
        reset_hint::NOT_RESET => return false,
        _ => {}
    }
    if cur.count < prev.count {
        return true;
    }
    if is_custom(cur) != is_custom(prev) {
        return true;
    }
    if !is_custom(cur) {
        if cur.schema > prev.schema {
            return true;
        }
        if cur.zero_threshold < prev.zero_threshold {
            return true;
        }
    }
    let mut p = Work::of(prev);
    let mut c = Work::of(cur);
    if custom_mismatch(cur, prev) {
        // Compare on the boundaries both have, as subtraction does.
        let common: Vec<f64> = cur
            .custom_values
            .iter()
            .copied()
            .filter(|v| prev.custom_values.contains(v))
            .collect();
        p.rebucket(&common);
        c.rebucket(&common);
    }
    p.reduce(c.schema);
    if c.zt > p.zt {
        p.widen_zero(c.zt);
    }
    if p.zt > c.zt {
        c.widen_zero(p.zt);
    }
    if c.zc < p.zc {
        return true;
    }
    for (ps, cs) in [(&p.pos, &c.pos), (&p.neg, &c.neg)] {
        for &(i, pc) in ps.iter() {
            if pc == 0.0 {
                continue;
            }
            let cc = cs
                .binary_search_by_key(&i, |x| x.0)
                .ok()
                .and_then(|k| cs.get(k))
                .map_or(0.0, |x| x.1);
            if cc < pc {
                return true;
            }
        }
    }
    false
}

/// One bucket with its boundaries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    pub(crate) lower: f64,
    pub(crate) upper: f64,
    pub(crate) count: f64,
}

/// All buckets from the lowest to the highest: negative buckets, the zero
/// bucket (if it has observations), positive buckets.
pub(crate) fn buckets(h: &FloatHistogram) -> Vec<Bucket> {
    let mut out = Vec::new();
    if is_custom(h) {
        for (i, c) in sparse(&h.positive_spans, &h.positive_buckets) {
            let Ok(iu) = usize::try_from(i) else { continue };
            let upper = h.custom_values.get(iu).copied().unwrap_or(f64::INFINITY);
            let lower = if iu == 0 {
                f64::NEG_INFINITY
            } else {
                h.custom_values
                    .get(iu - 1)
                    .copied()
                    .unwrap_or(f64::INFINITY)
            };
            out.push(Bucket {
                lower,
                upper,
                count: c,
            });
        }
        return out;
    }
    for (i, c) in sparse(&h.negative_spans, &h.negative_buckets)
        .into_iter()
        .rev()
    {
        out.push(Bucket {
            lower: -exp_bound(i, h.schema),
            upper: -exp_bound(i - 1, h.schema),
            count: c,
        });
    }
    if h.zero_count != 0.0 {
        out.push(Bucket {
            lower: -h.zero_threshold,
            upper: h.zero_threshold,
            count: h.zero_count,
        });
    }
    for (i, c) in sparse(&h.positive_spans, &h.positive_buckets) {
        out.push(Bucket {
            lower: exp_bound(i - 1, h.schema),
            upper: exp_bound(i, h.schema),
            count: c,
        });
    }
    out
}

fn has_pos(h: &FloatHistogram) -> bool {
    h.positive_buckets.iter().any(|c| *c != 0.0)
}

fn has_neg(h: &FloatHistogram) -> bool {
    h.negative_buckets.iter().any(|c| *c != 0.0)
}

/// `histogram_quantile` on a native histogram.
pub(crate) fn quantile(q: f64, h: &FloatHistogram) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if h.count == 0.0 || q.is_nan() {
        return f64::NAN;
    }
    let forward = h.sum.is_nan() || q < 0.5;
    let mut all = buckets(h);
    if !forward {
        all.reverse();
    }
    let mut rank = if forward {
        q * h.count
    } else {
        (1.0 - q) * h.count
    };
    let mut count = 0.0;
    let mut bucket = Bucket {
        lower: 0.0,
        upper: 0.0,
        count: 0.0,
    };
    for b in all {
        if b.count == 0.0 {
            continue;
        }
        bucket = b;
        count += b.count;
        if count >= rank {
            break;
        }
    }
    let custom = is_custom(h);
    if !custom && bucket.lower < 0.0 && bucket.upper > 0.0 {
        if !has_neg(h) && has_pos(h) {
            bucket.lower = 0.0;
        } else if !has_pos(h) && has_neg(h) {
            bucket.upper = 0.0;
        }
    } else if custom {
        if bucket.lower == f64::NEG_INFINITY {
            if bucket.upper <= 0.0 {
                return bucket.upper;
            }
            bucket.lower = 0.0;
        } else if bucket.upper == f64::INFINITY {
            return bucket.lower;
        }
    }
    if count > h.count {
        count = h.count;
    }
    if count < rank {
        return bucket.upper;
    }
    if forward {
        rank -= count - bucket.count;
    } else {
        rank = count - rank;
    }
    let fraction = rank / bucket.count;
    if custom || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
        return bucket.lower + (bucket.upper - bucket.lower) * fraction;
    }
    let ll = bucket.lower.abs().log2();
    let lu = bucket.upper.abs().log2();
    if bucket.lower > 0.0 {
        return (ll + (lu - ll) * fraction).exp2();
    }
    -(lu + (ll - lu) * (1.0 - fraction)).exp2()
}

/// `histogram_fraction` on a native histogram.
pub(crate) fn fraction(lower: f64, upper: f64, h: &FloatHistogram) -> f64 {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let custom = is_custom(h);
    let (pos, neg) = (has_pos(h), has_neg(h));
    let (mut rank, mut lo_rank, mut up_rank) = (0.0, 0.0, 0.0);
    let (mut lo_set, mut up_set) = (false, false);
    for mut b in buckets(h) {
        let mut zero_bucket = false;
        if custom {
            if b.lower == f64::NEG_INFINITY && b.upper > 0.0 {
                b.lower = 0.0;
            }
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            zero_bucket = true;
            if !neg && pos {
                b.lower = 0.0;
            } else if !pos && neg {
                b.upper = 0.0;
            }
        }
        let linear = |v: f64, rank: f64| rank + b.count * (v - b.lower) / (b.upper - b.lower);
        let expo = |v: f64, rank: f64| {
            let ll = b.lower.abs().log2();
            let lu = b.upper.abs().log2();
            let lv = v.abs().log2();
            let f = if v > 0.0 {
                (lv - ll) / (lu - ll)
            } else {
                1.0 - ((lv - lu) / (ll - lu))
            };
            rank + b.count * f
        };
        if !lo_set && b.lower >= lower {
            lo_rank = rank;
            lo_set = true;
        }
        if !up_set && b.lower >= upper {
            up_rank = rank;
            up_set = true;
        }
        if lo_set && up_set {
            break;
        }
        // The lowest custom bucket reaching down to -Inf is not
        // interpolated: none of it counts as inside the range unless the
        // range covers it whole.
        let open_below = b.lower == f64::NEG_INFINITY;
        if !lo_set && b.lower < lower && b.upper > lower {
            lo_rank = if open_below {
                rank + b.count
            } else if custom || zero_bucket {
                linear(lower, rank)
            } else {
                expo(lower, rank)
            };
            lo_set = true;
        }
        if !up_set && b.lower < upper && b.upper > upper {
            up_rank = if open_below {
                rank
            } else if custom || zero_bucket {
                linear(upper, rank)
            } else {
                expo(upper, rank)
            };
            up_set = true;
        }
        if lo_set && up_set {
            break;
        }
        rank += b.count;
    }
    // NaN observations (NaN sum) are in the count but in no bucket: they
    // are excluded from every fraction.
    let cap = if h.sum.is_nan() {
        buckets_total(h).min(h.count)
    } else {
        h.count
    };
    if !lo_set || lo_rank > cap {
        lo_rank = cap;
    }
    if !up_set || up_rank > cap {
        up_rank = cap;
    }
    let inside = up_rank - lo_rank;
    // Both bounds in the -Inf bucket: nothing inside (NaN stays NaN).
    if inside < 0.0 { 0.0 } else { inside / h.count }
}

/// The observations in the buckets (zero bucket included).
pub(crate) fn buckets_total(h: &FloatHistogram) -> f64 {
    h.zero_count + h.positive_buckets.iter().sum::<f64>() + h.negative_buckets.iter().sum::<f64>()
}

/// Estimated variance of the observations (`histogram_stdvar`).
pub(crate) fn variance(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut var, mut c) = (0.0, 0.0);
    let custom = is_custom(h);
    for b in buckets(h) {
        if b.count == 0.0 {
            continue;
        }
        let val = if custom {
            (b.upper + b.lower) / 2.0
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else {
            let v = (b.upper * b.lower).sqrt();
            if b.upper < 0.0 { -v } else { v }
        };
        let d = val - mean;
        (var, c) = crate::functions::kahan_inc(b.count * d * d, var, c);
    }
    (var + c) / h.count
}

/// Kept fraction and representative value of the kept part of a bucket
/// spanning the finite `[lo, hi]` with linear interpolation.
fn trim_linear(lo: f64, hi: f64, x: f64, below: bool) -> (f64, f64) {
    if below {
        if x >= hi {
            (1.0, (lo + hi) / 2.0)
        } else if x <= lo {
            (0.0, 0.0)
        } else {
            ((x - lo) / (hi - lo), (lo + x) / 2.0)
        }
    } else if x <= lo {
        (1.0, (lo + hi) / 2.0)
    } else if x >= hi {
        (0.0, 0.0)
    } else {
        ((hi - x) / (hi - lo), (x + hi) / 2.0)
    }
}

/// As [`trim_linear`] for the positive exponential bucket `(lo, hi]`:
/// logarithmic interpolation, geometric mean as representative.
fn trim_exp(lo: f64, hi: f64, x: f64, below: bool) -> (f64, f64) {
    if lo <= 0.0 || !hi.is_finite() {
        return trim_linear(lo, hi, x, below);
    }
    let span = (hi / lo).ln();
    if below {
        if x >= hi {
            (1.0, (lo * hi).sqrt())
        } else if x <= lo {
            (0.0, 0.0)
        } else {
            ((x / lo).ln() / span, (lo * x).sqrt())
        }
    } else if x <= lo {
        (1.0, (lo * hi).sqrt())
    } else if x >= hi {
        (0.0, 0.0)
    } else {
        ((hi / x).ln() / span, (x * hi).sqrt())
    }
}

/// Kept fraction and representative value of custom bucket `idx`.
fn trim_custom(custom: &[f64], idx: usize, x: f64, below: bool) -> (f64, f64) {
    let upper = custom.get(idx).copied().unwrap_or(f64::INFINITY);
    if idx == 0 && upper == f64::INFINITY {
        // The only bucket, (-Inf, +Inf]: kept only by the no-op cuts.
        return (0.0, 0.0);
    }
    if idx == 0 {
        if upper > 0.0 {
            // Observations of the first bucket are assumed in [0, upper].
            if !below && x < 0.0 {
                return (0.0, 0.0);
            }
            return trim_linear(0.0, upper, x, below);
        }
        // (-Inf, upper] with upper <= 0: the cut point stands in for
        // the unknown lower end.
        return if !below || x == f64::NEG_INFINITY {
            (0.0, 0.0)
        } else {
            (1.0, x.min(upper))
        };
    }
    let lower = custom.get(idx - 1).copied().unwrap_or(f64::INFINITY);
    if upper == f64::INFINITY {
        return if below || x == f64::INFINITY {
            (0.0, 0.0)
        } else {
            (1.0, x.max(lower))
        };
    }
    trim_linear(lower, upper, x, below)
}

/// The trim operators: `h </ x` (`below`) keeps the observations below
/// `x`, `h >/ x` those above it. Buckets cut by `x` are interpolated
/// (logarithmically for exponential buckets, linearly for the zero
/// bucket and custom buckets) and the sum is re-estimated from the kept
/// buckets; a histogram that loses nothing is returned unchanged.
pub(crate) fn trim(h: &FloatHistogram, x: f64, below: bool) -> FloatHistogram {
    if (below && x == f64::INFINITY) || (!below && x == f64::NEG_INFINITY) {
        return h.clone();
    }
    let mut w = Work::of(h);
    let mut changed = false;
    let mut count = 0.0;
    let mut sum = 0.0;
    let mut apply = |c: &mut f64, (f, rep): (f64, f64)| {
        if *c == 0.0 {
            return;
        }
        if f != 1.0 {
            changed = true;
        }
        *c *= f;
        if *c != 0.0 {
            count += *c;
            sum += *c * rep;
        }
    };
    if is_custom(h) {
        for (i, c) in &mut w.pos {
            let Ok(iu) = usize::try_from(*i) else {
                continue;
            };
            apply(c, trim_custom(&h.custom_values, iu, x, below));
        }
    } else {
        let schema = h.schema;
        for (i, c) in &mut w.pos {
            let (lo, hi) = (exp_bound(*i - 1, schema), exp_bound(*i, schema));
            apply(c, trim_exp(lo, hi, x, below));
        }
        for (i, c) in &mut w.neg {
            let (lo, hi) = (exp_bound(*i - 1, schema), exp_bound(*i, schema));
            let (f, rep) = trim_exp(lo, hi, -x, !below);
            apply(c, (f, -rep));
        }
        let zt = h.zero_threshold;
        let (lo, hi) = match (has_neg(h), has_pos(h)) {
            (true, false) => (-zt, 0.0),
            (false, true) => (0.0, zt),
            _ => (-zt, zt),
        };
        apply(&mut w.zc, trim_linear(lo, hi, x, below));
    }
    if !changed {
        return h.clone();
    }
    w.count = count;
    w.sum = sum;
    w.build()
}

/// Compares two histograms the way the test runner does: compact forms,
/// floats within `eq`.
pub(crate) fn approx_eq(
    a: &FloatHistogram,
    b: &FloatHistogram,
    eq: impl Fn(f64, f64) -> bool,
) -> bool {
    let (a, b) = (compact(a), compact(b));
    a.schema == b.schema
        && eq(a.zero_threshold, b.zero_threshold)
        && eq(a.zero_count, b.zero_count)
        && eq(a.count, b.count)
        && eq(a.sum, b.sum)
        && a.positive_spans == b.positive_spans
        && a.negative_spans == b.negative_spans
        && a.positive_buckets.len() == b.positive_buckets.len()
        && a.negative_buckets.len() == b.negative_buckets.len()
        && a.positive_buckets
            .iter()
            .zip(&b.positive_buckets)
            .all(|(x, y)| eq(*x, *y))
        && a.negative_buckets
            .iter()
            .zip(&b.negative_buckets)
            .all(|(x, y)| eq(*x, *y))
        && a.custom_values == b.custom_values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(schema: i32, pos: &[(i32, f64)]) -> FloatHistogram {
        let (ps, pb) = dense(pos);
        FloatHistogram {
            schema,
            count: pb.iter().sum(),
            sum: 1.0,
            positive_spans: ps,
            positive_buckets: pb,
            ..Default::default()
        }
    }

    #[test]
    fn add_reduces_schema() {
        let a = h(1, &[(1, 1.0), (2, 2.0)]);
        let b = h(0, &[(1, 4.0)]);
        let r = add(&a, &b).unwrap();
        assert_eq!(r.schema, 0);
        assert_eq!(
            sparse(&r.positive_spans, &r.positive_buckets),
            vec![(1, 7.0)]
        );
        assert_eq!(r.count, 7.0);
    }

    #[test]
    fn trim_interpolates_and_keeps_untouched() {
        // Buckets (0.5,1]:2 (1,2]:4 (2,4]:8 at schema 0.
        let a = h(0, &[(0, 2.0), (1, 4.0), (2, 8.0)]);
        assert_eq!(trim(&a, f64::INFINITY, true), a);
        assert_eq!(trim(&a, 0.1, false), a);
        let r = trim(&a, 2f64.sqrt(), true);
        assert!((r.count - 4.0).abs() < 1e-9);
        let r = trim(&a, 2.0, false);
        assert_eq!(r.count, 8.0);
        assert!((r.sum - 8.0 * 8f64.sqrt()).abs() < 1e-9);
        let c = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count: 15.0,
            custom_values: vec![5.0, 10.0],
            positive_spans: vec![BucketSpan {
                offset: 0,
                length: 3,
            }],
            positive_buckets: vec![1.0, 6.0, 8.0],
            ..Default::default()
        };
        let r = trim(&c, 7.5, true);
        assert_eq!(r.count, 4.0);
        assert_eq!(r.sum, 2.5 + 3.0 * 6.25);
    }

    #[test]
    fn fraction_does_not_interpolate_the_minus_inf_bucket() {
        // Custom bounds -3, -2, -1: buckets (-Inf,-3] 10, (-3,-2] 2,
        // (-2,-1] 3, (-1,+Inf] 85.
        let h = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count: 100.0,
            positive_spans: vec![BucketSpan {
                offset: 0,
                length: 4,
            }],
            positive_buckets: vec![10.0, 2.0, 3.0, 85.0],
            custom_values: vec![-3.0, -2.0, -1.0],
            ..Default::default()
        };
        assert_eq!(fraction(-4.0, -2.0, &h), 0.02);
        assert_eq!(fraction(-5.0, -4.0, &h), 0.0);
        assert_eq!(fraction(f64::NEG_INFINITY, -2.0, &h), 0.12);
    }

    #[test]
    fn mean_switches_to_incremental_on_overflow() {
        let big = h(0, &[(1, f64::MAX)]);
        let small = h(0, &[(1, 2.0)]);
        let mut acc = HistAcc::new(&big);
        acc.add_avg(&big).unwrap();
        acc.add_avg(&small).unwrap();
        let m = acc.finish_avg();
        assert!(!has_overflow(&m));
        assert_eq!(m.positive_buckets.len(), 1);
        assert!((m.positive_buckets[0] / (f64::MAX / 1.5) - 1.0).abs() < 1e-12);
        let mut s = HistAcc::new(&small);
        s.add_sum(&small).unwrap();
        assert_eq!(s.finish_sum().count, 4.0);
    }

    #[test]
    fn custom_mismatch_is_reconciled() {
        let mk = |cv: Vec<f64>, b: Vec<f64>| FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count: b.iter().sum(),
            positive_spans: vec![BucketSpan {
                offset: 0,
                length: b.len() as u32,
            }],
            positive_buckets: b,
            custom_values: cv,
            ..Default::default()
        };
        let a = mk(vec![2.0, 4.0], vec![1.0, 2.0, 3.0]);
        let b = mk(vec![1.0, 2.0, 3.0, 4.0], vec![1.0, 1.0, 1.0, 1.0, 1.0]);
        assert!(custom_mismatch(&a, &b));
        let r = add(&a, &b).unwrap();
        assert_eq!(r.custom_values, vec![2.0, 4.0]);
        assert_eq!(r.positive_buckets, vec![3.0, 4.0, 4.0]);
        // On the common bounds b is [2 2 1]: the +Inf bucket dropped.
        assert!(detect_reset(&b, &a));
    }

    #[test]
    fn bounds_and_quantile() {
        assert_eq!(exp_bound(1, 0), 2.0);
        assert_eq!(exp_bound(0, 0), 1.0);
        assert!((exp_bound(1, 1) - 2f64.sqrt()).abs() < 1e-12);
        let a = h(0, &[(1, 2.0)]);
        assert!((quantile(0.5, &a) - 2f64.sqrt()).abs() < 1e-9);
        assert!(!detect_reset(&a, &a));
        assert!(detect_reset(&h(0, &[(1, 1.0)]), &a));
    }
}
