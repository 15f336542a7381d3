//! The query interface over head and blocks.
//!
//! [`Queryable`] is the seam the PromQL engine and the HTTP API program
//! against: select series by matchers in a time range, list label names and
//! values. Every source (the head, each block) produces [`Series`] made of
//! compressed [`Part`]s; [`merge_series`] joins the sources' sorted series
//! lists by label set, and [`SeriesIter`] decodes a series lazily, merging
//! overlapping parts and dropping duplicate timestamps (so a sample that
//! sits in both the head and a freshly cut block, or in two overlapping
//! blocks, is returned once).

use std::collections::BinaryHeap;
use std::sync::Arc;

use stratus_model::{FloatHistogram, Histogram, Labels, Matcher};

use crate::chunks::{
    Appendable, ChunkIter, CounterResetHeader, Encoding, FloatHistogramAppender, HistogramAppender,
};
use crate::error::Result;

/// What the caller will do with the data, so sources can skip work.
#[derive(Debug, Clone, Default)]
pub struct SelectHints {
    /// Oldest timestamp needed (inclusive, ms).
    pub start: i64,
    /// Newest timestamp needed (inclusive, ms).
    pub end: i64,
    /// Evaluation step of a range query (0 for instant queries).
    pub step: i64,
    /// Range of a range selector (e.g. 5m in `rate(x[5m])`), 0 if none.
    pub range: i64,
    /// The function the data is fed to, if any (e.g. `rate`).
    pub func: Option<String>,
    /// Only series labels are needed, no samples (e.g. `/api/v1/series`).
    pub labels_only: bool,
}

impl SelectHints {
    /// Hints for reading every sample in `[start, end]`.
    pub fn range(start: i64, end: i64) -> Self {
        Self {
            start,
            end,
            ..Default::default()
        }
    }
}

/// A compressed piece of one series from one source.
#[derive(Debug, Clone)]
pub enum Part {
    /// A compressed chunk of encoding byte `encoding` (see
    /// [`crate::Encoding`]), decoded with [`ChunkIter`].
    Chunk {
        mint: i64,
        maxt: i64,
        encoding: u8,
        data: Arc<[u8]>,
    },
    /// Decoded samples, sorted by time (out-of-order buffers, filtered data).
    Floats(Arc<[(i64, f64)]>),
    /// Decoded native histogram samples, sorted by time (histogram chunks
    /// filtered by deletions). Float iteration skips them.
    Histograms(Arc<[(i64, Value)]>),
}

/// A typed sample value: a float or a native histogram.
#[derive(Debug, Clone)]
pub enum Value {
    Float(f64),
    Histogram(Arc<Histogram>),
    FloatHistogram(Arc<FloatHistogram>),
}

impl Value {
    /// The value as a float histogram (`None` for a float).
    pub fn to_float_histogram(&self) -> Option<FloatHistogram> {
        match self {
            Value::Float(_) => None,
            Value::Histogram(h) => Some(h.to_float()),
            Value::FloatHistogram(h) => Some((**h).clone()),
        }
    }

    /// Whether this is a native histogram.
    pub fn is_histogram(&self) -> bool {
        !matches!(self, Value::Float(_))
    }
}

impl Part {
    /// Oldest and newest timestamp in the part (`None` if empty).
    pub fn bounds(&self) -> Option<(i64, i64)> {
        match self {
            Part::Chunk { mint, maxt, .. } => Some((*mint, *maxt)),
            Part::Floats(s) => Some((s.first()?.0, s.last()?.0)),
            Part::Histograms(s) => Some((s.first()?.0, s.last()?.0)),
        }
    }

    /// Decodes every sample of the part, typed. Corrupt chunks give an
    /// error.
    pub fn typed_samples(&self) -> Result<Vec<(i64, Value)>, crate::chunks::Error> {
        Ok(match self {
            Part::Chunk { encoding, .. } if crate::chunks::is_st_encoding(*encoding) => self
                .st_samples()?
                .into_iter()
                .map(|(t, v, _)| (t, v))
                .collect(),
            Part::Chunk { encoding, data, .. } => match Encoding::from_u8(*encoding) {
                Some(Encoding::Histogram) => crate::chunks::decode_histogram(data)?
                    .into_iter()
                    .map(|(t, h)| (t, Value::Histogram(Arc::new(h))))
                    .collect(),
                Some(Encoding::FloatHistogram) => crate::chunks::decode_float_histogram(data)?
                    .into_iter()
                    .map(|(t, h)| (t, Value::FloatHistogram(Arc::new(h))))
                    .collect(),
                _ => crate::chunks::decode_any(*encoding, data)?
                    .into_iter()
                    .map(|(t, v)| (t, Value::Float(v)))
                    .collect(),
            },
            Part::Floats(f) => f.iter().map(|&(t, v)| (t, Value::Float(v))).collect(),
            Part::Histograms(h) => h.to_vec(),
        })
    }

    /// Decodes every sample of the part, typed, with its start timestamp
    /// (0 when unknown, and for every sample of a part stored without
    /// start timestamps).
    pub fn st_samples(&self) -> Result<Vec<(i64, Value, i64)>, crate::chunks::Error> {
        let (enc, data) = match self {
            Part::Chunk { encoding, data, .. } if crate::chunks::is_st_encoding(*encoding) => {
                (*encoding, data)
            }
            _ => {
                return Ok(self
                    .typed_samples()?
                    .into_iter()
                    .map(|(t, v)| (t, v, 0))
                    .collect());
            }
        };
        let (inner, col) = crate::chunks::split_st_chunk(data)?;
        let inner_enc = Encoding::from_u8(enc).map_or(enc, |e| e.inner().as_u8());
        let typed = Part::Chunk {
            mint: i64::MIN,
            maxt: i64::MAX,
            encoding: inner_enc,
            data: Arc::from(inner),
        }
        .typed_samples()?;
        let ts: Vec<i64> = typed.iter().map(|x| x.0).collect();
        let sts = crate::chunks::decode_st_column(col, &ts)?;
        Ok(typed
            .into_iter()
            .zip(sts)
            .map(|((t, v), st)| (t, v, st))
            .collect())
    }

    /// Whether the part stores start timestamps (cheap: no decoding).
    pub fn has_start_timestamps(&self) -> bool {
        matches!(self, Part::Chunk { encoding, .. } if crate::chunks::is_st_encoding(*encoding))
    }

    /// Whether the part holds native histograms.
    pub fn is_histogram(&self) -> bool {
        match self {
            Part::Chunk { encoding, .. } => {
                Encoding::from_u8(*encoding).is_some_and(Encoding::is_histogram)
            }
            Part::Floats(_) => false,
            Part::Histograms(_) => true,
        }
    }
}

/// Merges parts (earlier parts win on equal timestamps) into typed
/// samples in `[mint, maxt]`, sorted by time.
pub fn merge_typed(
    parts: &[Part],
    mint: i64,
    maxt: i64,
) -> Result<Vec<(i64, Value)>, crate::chunks::Error> {
    let mut all: Vec<(i64, usize, Value)> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if !p.bounds().is_some_and(|(lo, hi)| hi >= mint && lo <= maxt) {
            continue;
        }
        all.extend(
            p.typed_samples()?
                .into_iter()
                .filter(|(t, _)| (mint..=maxt).contains(t))
                .map(|(t, v)| (t, i, v)),
        );
    }
    all.sort_by_key(|x| (x.0, x.1));
    all.dedup_by_key(|x| x.0);
    Ok(all.into_iter().map(|(t, _, v)| (t, v)).collect())
}

/// [`merge_typed`] with every sample's start timestamp (0 when unknown).
pub fn merge_typed_st(
    parts: &[Part],
    mint: i64,
    maxt: i64,
) -> Result<Vec<(i64, Value, i64)>, crate::chunks::Error> {
    let mut all: Vec<(i64, usize, Value, i64)> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if !p.bounds().is_some_and(|(lo, hi)| hi >= mint && lo <= maxt) {
            continue;
        }
        all.extend(
            p.st_samples()?
                .into_iter()
                .filter(|(t, _, _)| (mint..=maxt).contains(t))
                .map(|(t, v, st)| (t, i, v, st)),
        );
    }
    all.sort_by_key(|x| (x.0, x.1));
    all.dedup_by_key(|x| x.0);
    Ok(all.into_iter().map(|(t, _, v, st)| (t, v, st)).collect())
}

/// Encodes typed samples with start timestamps (sorted, unique
/// timestamps) into chunks: floats into XOR chunks of at most
/// `max_samples`, histograms as [`encode_histogram_chunks`] does. A chunk
/// holding a known start timestamp is wrapped into its start-timestamp
/// encoding (0x82..0x84); the others stay plain.
pub fn encode_st_chunks(
    samples: &[(i64, Value, i64)],
    max_samples: usize,
) -> Vec<(i64, i64, u8, Vec<u8>)> {
    let max = max_samples.clamp(1, crate::chunks::MAX_SAMPLES_PER_CHUNK);
    let mut out: Vec<(i64, i64, u8, Vec<u8>)> = Vec::new();
    // Floats: runs between histograms, cut at `max`.
    let floats: Vec<(i64, f64)> = samples
        .iter()
        .filter_map(|(t, v, _)| match v {
            Value::Float(f) => Some((*t, *f)),
            _ => None,
        })
        .collect();
    for run in floats.chunks(max) {
        let mut app = crate::chunks::XorAppender::new();
        for &(t, v) in run {
            app.append(t, v);
        }
        if let (Some(a), Some(b)) = (run.first(), run.last()) {
            out.push((a.0, b.0, Encoding::Xor as u8, app.into_bytes()));
        }
    }
    let hs: Vec<(i64, Value)> = samples
        .iter()
        .filter(|x| x.1.is_histogram())
        .map(|(t, v, _)| (*t, v.clone()))
        .collect();
    out.extend(encode_histogram_chunks(&hs, max_samples));
    let st_at = |t: i64| {
        samples
            .binary_search_by_key(&t, |x| x.0)
            .map_or(0, |i| samples[i].2)
    };
    for c in &mut out {
        let Some(st_enc) = Encoding::from_u8(c.2).and_then(crate::chunks::with_st) else {
            continue;
        };
        let ts: Vec<i64> = Part::Chunk {
            mint: c.0,
            maxt: c.1,
            encoding: c.2,
            data: Arc::from(&c.3[..]),
        }
        .typed_samples()
        .map(|v| v.into_iter().map(|x| x.0).collect())
        .unwrap_or_default();
        let sts: Vec<i64> = ts.iter().map(|&t| st_at(t)).collect();
        if sts.iter().any(|&st| st != 0) {
            c.3 = crate::chunks::encode_st_chunk(&c.3, &ts, &sts);
            c.2 = st_enc.as_u8();
        }
    }
    out.sort_by_key(|c| (c.0, c.1));
    out
}

/// Encodes histogram samples (sorted, unique timestamps; floats are
/// ignored) into histogram chunks of at most `max_samples` samples:
/// `(mint, maxt, encoding, data)`. A chunk is cut where the sample type,
/// the layout or a counter reset requires it.
pub fn encode_histogram_chunks(
    samples: &[(i64, Value)],
    max_samples: usize,
) -> Vec<(i64, i64, u8, Vec<u8>)> {
    enum App {
        Int(HistogramAppender),
        Float(FloatHistogramAppender),
    }
    fn finish(out: &mut Vec<(i64, i64, u8, Vec<u8>)>, app: Option<App>) {
        match app {
            Some(App::Int(a)) => {
                if let (Some(f), Some(l)) = (a.first_t(), a.last_t()) {
                    out.push((f, l, Encoding::Histogram as u8, a.into_bytes()));
                }
            }
            Some(App::Float(a)) => {
                if let (Some(f), Some(l)) = (a.first_t(), a.last_t()) {
                    out.push((f, l, Encoding::FloatHistogram as u8, a.into_bytes()));
                }
            }
            None => {}
        }
    }
    let max = max_samples.clamp(1, crate::chunks::MAX_SAMPLES_PER_CHUNK);
    let mut out = Vec::new();
    let mut app: Option<App> = None;
    for (t, v) in samples {
        match v {
            Value::Float(_) => {}
            Value::Histogram(h) => {
                let cut = match &app {
                    Some(App::Int(a)) if a.num_samples() < max => match a.appendable(h) {
                        Appendable::Yes => None,
                        Appendable::Cut(hdr) => Some(hdr),
                    },
                    Some(App::Int(_)) => Some(CounterResetHeader::NotReset),
                    _ => Some(CounterResetHeader::for_hint(h.reset_hint)),
                };
                if let Some(hdr) = cut {
                    finish(&mut out, app.take());
                    app = Some(App::Int(HistogramAppender::new(hdr)));
                }
                if let Some(App::Int(a)) = &mut app {
                    a.append(*t, h);
                }
            }
            Value::FloatHistogram(h) => {
                let cut = match &app {
                    Some(App::Float(a)) if a.num_samples() < max => match a.appendable(h) {
                        Appendable::Yes => None,
                        Appendable::Cut(hdr) => Some(hdr),
                    },
                    Some(App::Float(_)) => Some(CounterResetHeader::NotReset),
                    _ => Some(CounterResetHeader::for_hint(h.reset_hint)),
                };
                if let Some(hdr) = cut {
                    finish(&mut out, app.take());
                    app = Some(App::Float(FloatHistogramAppender::new(hdr)));
                }
                if let Some(App::Float(a)) = &mut app {
                    a.append(*t, h);
                }
            }
        }
    }
    finish(&mut out, app);
    out
}

/// Drops the samples of a histogram chunk inside the deleted intervals
/// `iv` and re-encodes the rest (an undecodable chunk is kept as is).
pub(crate) fn filter_histogram_chunk(
    encoding: u8,
    data: &Arc<[u8]>,
    iv: &[(i64, i64)],
) -> Vec<(i64, i64, u8, Vec<u8>)> {
    let part = Part::Chunk {
        mint: i64::MIN,
        maxt: i64::MAX,
        encoding,
        data: data.clone(),
    };
    let Ok(samples) = part.typed_samples() else {
        return Vec::new();
    };
    let kept: Vec<(i64, Value)> = samples
        .into_iter()
        .filter(|x| !crate::head::is_deleted(x.0, iv))
        .collect();
    encode_histogram_chunks(&kept, crate::chunks::MAX_SAMPLES_PER_CHUNK)
}

/// One series as returned by a select: its labels and compressed data from
/// one or more sources, in source priority order (earlier parts win when
/// two sources disagree about the value at one timestamp).
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    pub parts: Vec<Part>,
}

impl Series {
    /// Iterates the samples in `[mint, maxt]`, merged and deduplicated.
    pub fn iter(&self, mint: i64, maxt: i64) -> SeriesIter {
        SeriesIter::new(&self.parts, mint, maxt)
    }

    /// Decodes every sample in `[mint, maxt]`.
    pub fn samples(&self, mint: i64, maxt: i64) -> Vec<(i64, f64)> {
        self.iter(mint, maxt).collect()
    }

    /// Whether any part holds native histograms (cheap: no decoding).
    pub fn has_histograms(&self) -> bool {
        self.parts.iter().any(Part::is_histogram)
    }

    /// Whether any part stores start timestamps (cheap: no decoding).
    pub fn has_start_timestamps(&self) -> bool {
        self.parts.iter().any(Part::has_start_timestamps)
    }

    /// Every sample in `[mint, maxt]`, typed, with its start timestamp
    /// (0 when unknown), merged and deduplicated like
    /// [`Series::typed_samples`]. The slow path for series that have
    /// start timestamps ([`Series::has_start_timestamps`]).
    pub fn st_samples(
        &self,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(i64, Value, i64)>, crate::chunks::Error> {
        merge_typed_st(&self.parts, mint, maxt)
    }

    /// Every sample in `[mint, maxt]`, floats and native histograms,
    /// merged and deduplicated like [`Series::iter`] (which yields floats
    /// only and stays the fast path). Decodes the overlapping parts whole.
    pub fn typed_samples(
        &self,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(i64, Value)>, crate::chunks::Error> {
        merge_typed(&self.parts, mint, maxt)
    }
}

/// Reads from one tenant's data.
pub trait Queryable: Send + Sync {
    /// Series matching all `matchers` (at least one) with data in
    /// `[hints.start, hints.end]`, sorted by label set.
    fn select(&self, matchers: &[Matcher], hints: &SelectHints) -> Result<Vec<Series>>;

    /// Sorted label names of series matching `matchers` (all series when
    /// empty) with data in `[mint, maxt]`.
    fn label_names(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>>;

    /// Sorted values of label `name` of series matching `matchers` (all
    /// series when empty) with data in `[mint, maxt]`.
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>>;
}

/// Merges per-source series lists (each sorted by labels) into one sorted
/// list; series with equal labels are joined, parts of earlier sources first.
pub fn merge_series(sources: Vec<Vec<Series>>) -> Vec<Series> {
    let mut sources: Vec<_> = sources.into_iter().filter(|s| !s.is_empty()).collect();
    match sources.len() {
        0 => return Vec::new(),
        1 => return sources.pop().unwrap_or_default(),
        _ => {}
    }
    let total = sources.iter().map(Vec::len).sum();
    let mut out: Vec<Series> = Vec::with_capacity(total);
    let mut iters: Vec<std::vec::IntoIter<Series>> =
        sources.into_iter().map(Vec::into_iter).collect();
    let mut heads: Vec<Option<Series>> = iters.iter_mut().map(Iterator::next).collect();
    loop {
        // Smallest label set among the heads of all sources.
        let mut min: Option<usize> = None;
        for (i, h) in heads.iter().enumerate() {
            let Some(s) = h else { continue };
            let better = match min.and_then(|m| heads[m].as_ref()) {
                None => true,
                Some(ms) => s.labels < ms.labels,
            };
            if better {
                min = Some(i);
            }
        }
        let Some(m) = min else { break };
        let Some(mut first) = heads[m].take() else {
            break;
        };
        heads[m] = iters[m].next();
        // Join equal label sets from later sources (parts in source order).
        for i in m + 1..heads.len() {
            if heads[i].as_ref().is_some_and(|s| s.labels == first.labels) {
                if let Some(s) = heads[i].take() {
                    first.parts.extend(s.parts);
                }
                heads[i] = iters[i].next();
            }
        }
        out.push(first);
    }
    out
}

/// A decoder over one part.
#[derive(Debug)]
enum PartIter {
    Chunk(ChunkIter<Arc<[u8]>>),
    Floats { data: Arc<[(i64, f64)]>, pos: usize },
}

impl PartIter {
    fn new(p: &Part) -> Self {
        match p {
            Part::Chunk { encoding, data, .. } => {
                PartIter::Chunk(ChunkIter::new(*encoding, data.clone()))
            }
            Part::Floats(d) => PartIter::Floats {
                data: d.clone(),
                pos: 0,
            },
            // Float iteration skips histograms.
            Part::Histograms(_) => PartIter::Floats {
                data: Arc::from(&[][..]),
                pos: 0,
            },
        }
    }

    fn next(&mut self) -> Option<(i64, f64)> {
        match self {
            PartIter::Chunk(it) => it.next(),
            PartIter::Floats { data, pos } => {
                let s = data.get(*pos).copied();
                *pos += 1;
                s
            }
        }
    }

    fn seek(&mut self, t: i64) -> Option<(i64, f64)> {
        match self {
            PartIter::Chunk(it) => it.seek(t),
            PartIter::Floats { data, pos } => {
                let rest = data.get(*pos..).unwrap_or(&[]);
                let skip = rest.partition_point(|s| s.0 < t);
                *pos += skip;
                self.next()
            }
        }
    }
}

/// A sequence of parts that do not overlap in time, in time order.
#[derive(Debug)]
struct Chain {
    parts: Vec<Part>,
    idx: usize,
    cur: Option<PartIter>,
}

impl Chain {
    fn next(&mut self) -> Option<(i64, f64)> {
        loop {
            if let Some(it) = self.cur.as_mut() {
                if let Some(s) = it.next() {
                    return Some(s);
                }
            }
            let p = self.parts.get(self.idx)?;
            self.cur = Some(PartIter::new(p));
            self.idx += 1;
        }
    }

    fn seek(&mut self, t: i64) -> Option<(i64, f64)> {
        // Skip whole parts that end before t.
        loop {
            if let Some(it) = self.cur.as_mut() {
                if let Some(s) = it.seek(t) {
                    return Some(s);
                }
            }
            // Current part exhausted; skip parts entirely before t.
            while let Some(p) = self.parts.get(self.idx) {
                if p.bounds().is_some_and(|(_, max)| max >= t) {
                    break;
                }
                self.idx += 1;
            }
            let p = self.parts.get(self.idx)?;
            self.cur = Some(PartIter::new(p));
            self.idx += 1;
        }
    }
}

/// Lazily decodes a series: merges overlapping parts, drops duplicate
/// timestamps (the earliest part wins) and samples outside `[mint, maxt]`.
#[derive(Debug)]
pub struct SeriesIter {
    chains: Vec<Chain>,
    /// Next sample of each chain (for the k-way merge).
    heads: Vec<Option<(i64, f64)>>,
    heap: BinaryHeap<std::cmp::Reverse<(i64, usize)>>,
    started: bool,
    mint: i64,
    maxt: i64,
    last_t: i64,
}

impl SeriesIter {
    /// Builds an iterator over `parts` bounded to `[mint, maxt]`.
    pub fn new(parts: &[Part], mint: i64, maxt: i64) -> Self {
        // Parts in priority order; keep that order as the tie-breaker by
        // assigning chains greedily in priority order.
        let mut indexed: Vec<(usize, &Part)> = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.bounds().is_some_and(|(lo, hi)| hi >= mint && lo <= maxt))
            .collect();
        indexed.sort_by_key(|(i, p)| (p.bounds().map_or(0, |b| b.0), *i));
        let mut chains: Vec<(Vec<Part>, i64, usize)> = Vec::new(); // parts, last maxt, best priority
        for (prio, p) in indexed {
            let Some((lo, hi)) = p.bounds() else { continue };
            match chains.iter_mut().find(|c| c.1 < lo) {
                Some(c) => {
                    c.0.push(p.clone());
                    c.1 = hi;
                    c.2 = c.2.min(prio);
                }
                None => chains.push((vec![p.clone()], hi, prio)),
            }
        }
        chains.sort_by_key(|c| c.2);
        let chains: Vec<Chain> = chains
            .into_iter()
            .map(|(parts, _, _)| Chain {
                parts,
                idx: 0,
                cur: None,
            })
            .collect();
        let n = chains.len();
        Self {
            chains,
            heads: vec![None; n],
            heap: BinaryHeap::with_capacity(n),
            started: false,
            mint,
            maxt,
            last_t: i64::MIN,
        }
    }

    fn start(&mut self, t: i64) {
        self.started = true;
        self.heap.clear();
        for i in 0..self.chains.len() {
            let s = self.chains[i].seek(t);
            self.heads[i] = s;
            if let Some((st, _)) = s {
                self.heap.push(std::cmp::Reverse((st, i)));
            }
        }
    }

    /// Advances to the first sample at or after `t` (never backwards).
    pub fn seek(&mut self, t: i64) -> Option<(i64, f64)> {
        let t = t.max(self.mint);
        if !self.started {
            self.start(t);
            return self.next();
        }
        if self.chains.len() == 1 {
            if let Some(h) = self.heads[0].take() {
                if h.0 >= t {
                    return self.emit(h);
                }
            }
            if t <= self.last_t {
                return self.next();
            }
            let s = self.chains[0].seek(t)?;
            return self.emit(s);
        }
        // Re-seek every chain whose head is before t.
        for i in 0..self.chains.len() {
            if self.heads[i].is_some_and(|(st, _)| st < t) {
                self.heads[i] = self.chains[i].seek(t);
            }
        }
        self.heap.clear();
        for (i, h) in self.heads.iter().enumerate() {
            if let Some((st, _)) = h {
                self.heap.push(std::cmp::Reverse((*st, i)));
            }
        }
        self.next()
    }

    fn emit(&mut self, s: (i64, f64)) -> Option<(i64, f64)> {
        if s.0 > self.maxt {
            self.chains.clear();
            self.heap.clear();
            return None;
        }
        self.last_t = s.0;
        Some(s)
    }
}

impl Iterator for SeriesIter {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if !self.started {
            let m = self.mint;
            self.start(m);
        }
        if self.chains.len() == 1 {
            // Fast path: no overlapping parts.
            if self.heads[0].is_some() {
                let s = self.heads[0].take()?;
                return self.emit(s);
            }
            loop {
                let s = self.chains.first_mut()?.next()?;
                if s.0 > self.last_t || self.last_t == i64::MIN {
                    return self.emit(s);
                }
            }
        }
        loop {
            let std::cmp::Reverse((t, i)) = self.heap.pop()?;
            let s = self.heads[i].take()?;
            // Refill this chain's head.
            let n = self.chains[i].next();
            self.heads[i] = n;
            if let Some((nt, _)) = n {
                self.heap.push(std::cmp::Reverse((nt, i)));
            }
            if t <= self.last_t && self.last_t != i64::MIN {
                continue; // duplicate timestamp from a lower-priority chain
            }
            return self.emit(s);
        }
    }
}
