//! Exposition-format parser: Prometheus text 0.0.4 and OpenMetrics 1.0.
//!
//! Hand-written, zero-copy where possible (it is the agent's hot path):
//! [`Parser::next`] yields one [`Entry`] at a time — a sample (its raw
//! series text, usable as a cache key, with the name and labels borrowed
//! from the input unless escapes forced a copy) or a `HELP`/`TYPE`/`UNIT`
//! line. Invalid input yields a [`ParseError`] naming the line; nothing in
//! here panics on any input (see [`fuzz_textparse`]).

use std::borrow::Cow;
use std::fmt;

use crate::sink::MetricType;

/// The exposition formats the agent understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    PromText,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

/// The `Accept` header Prometheus 2.42 sends.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

impl Format {
    /// The format of a response with this `Content-Type` (text 0.0.4 when
    /// absent or unknown, as Prometheus falls back).
    pub fn from_content_type(ct: Option<&str>) -> Format {
        match ct {
            Some(ct)
                if ct
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::PromText,
        }
    }
}

/// A parse failure, with the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// An exemplar attached to an OpenMetrics sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedExemplar<'a> {
    /// Its labels.
    pub labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Its value.
    pub value: f64,
    /// Its timestamp in ms, if given.
    pub timestamp: Option<i64>,
}

/// One sample line. The labels are in [`Parser::labels`].
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample<'a> {
    /// The raw `name{labels}` text: identical text means the identical
    /// series, so it serves as a cache key.
    pub series: &'a str,
    /// The metric name.
    pub name: &'a str,
    /// The value.
    pub value: f64,
    /// The timestamp in ms, if the line had one.
    pub timestamp: Option<i64>,
    /// The exemplar, if any (OpenMetrics).
    pub exemplar: Option<ParsedExemplar<'a>>,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// A sample; its labels are in [`Parser::labels`].
    Sample(ParsedSample<'a>),
    /// `# TYPE name type`.
    Type(&'a str, MetricType),
    /// `# HELP name text` (unescaped).
    Help(&'a str, Cow<'a, str>),
    /// `# UNIT name unit` (OpenMetrics).
    Unit(&'a str, &'a str),
}

/// A streaming parser over one scrape body.
#[derive(Debug)]
pub struct Parser<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    format: Format,
    eof_seen: bool,
    labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Lazy mode: label blocks are only delimited by [`Parser::next`] and
    /// parsed by [`Parser::parse_labels`].
    lazy: bool,
    /// Lazy mode: the last sample's line, the index after its `{` and the
    /// index after its `}` (`None`: no label block, or already parsed).
    pending: Option<(&'a str, usize, usize)>,
}

type PResult<T> = Result<T, String>;

/// A parsed label: name and (unescaped) value.
pub type LabelPair<'a> = (Cow<'a, str>, Cow<'a, str>);

impl<'a> Parser<'a> {
    /// A parser over `body`; fails if it is not UTF-8.
    pub fn new(body: &'a [u8], format: Format) -> Result<Self, ParseError> {
        let text = std::str::from_utf8(body).map_err(|e| {
            let line = body[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            ParseError {
                line,
                message: "invalid UTF-8".into(),
            }
        })?;
        Ok(Self {
            text,
            pos: 0,
            line: 0,
            format,
            eof_seen: false,
            labels: Vec::new(),
            lazy: false,
            pending: None,
        })
    }

    /// Lazy label parsing: [`Parser::next`] only finds where a sample's
    /// label block ends (enough for its raw series text, the scrape
    /// cache's key) and [`Parser::parse_labels`] parses the labels when
    /// the caller needs them (a cache miss), as Prometheus' scrape loop
    /// does. A label block that does not parse is then reported by
    /// `parse_labels` instead of `next`; identical series text always
    /// parses identically, so a text once parsed need not be again.
    pub fn set_lazy_labels(&mut self, lazy: bool) {
        self.lazy = lazy;
    }

    /// The labels (without `__name__`) of the last sample returned. In
    /// lazy mode they are empty until [`Parser::parse_labels`].
    pub fn labels(&self) -> &[(Cow<'a, str>, Cow<'a, str>)] {
        &self.labels
    }

    /// The labels of the last sample returned, parsing them first in lazy
    /// mode (the error names the sample's line).
    pub fn parse_labels(&mut self) -> Result<&[LabelPair<'a>], ParseError> {
        if let Some((line, start, end)) = self.pending.take() {
            let om = self.format == Format::OpenMetrics;
            self.labels.clear();
            match parse_labels(line, start, om, &mut self.labels) {
                Ok(i) if i == end => {}
                Ok(_) => return Err(self.err("invalid label set".into())),
                Err(m) => {
                    self.labels.clear();
                    return Err(self.err(m));
                }
            }
        }
        Ok(&self.labels)
    }

    /// The next entry, `Ok(None)` at the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        loop {
            if self.pos >= self.text.len() {
                if self.format == Format::OpenMetrics && !self.eof_seen {
                    return Err(ParseError {
                        line: self.line.max(1),
                        message: "data does not end with # EOF".into(),
                    });
                }
                return Ok(None);
            }
            let rest = &self.text[self.pos..];
            let (line, adv) = match rest.find('\n') {
                Some(i) => (&rest[..i], i + 1),
                None => {
                    if self.format == Format::OpenMetrics && rest != "# EOF" {
                        self.line += 1;
                        return Err(ParseError {
                            line: self.line,
                            message: "line does not end with a newline".into(),
                        });
                    }
                    (rest, rest.len())
                }
            };
            self.pos += adv;
            self.line += 1;
            if self.eof_seen {
                return Err(self.err("unexpected data after # EOF".into()));
            }
            match self.line_entry(line) {
                Ok(Some(e)) => return Ok(Some(e)),
                Ok(None) => continue,
                Err(m) => return Err(self.err(m)),
            }
        }
    }

    fn err(&self, message: String) -> ParseError {
        ParseError {
            line: self.line,
            message,
        }
    }

    fn line_entry(&mut self, line: &'a str) -> PResult<Option<Entry<'a>>> {
        let om = self.format == Format::OpenMetrics;
        let line = if om {
            line
        } else {
            line.trim_end_matches('\r')
        };
        if om {
            if line.is_empty() {
                return Err("empty line".into());
            }
        } else if line.trim_matches([' ', '\t']).is_empty() {
            return Ok(None);
        }
        let trimmed = if om {
            line
        } else {
            line.trim_start_matches([' ', '\t'])
        };
        if let Some(c) = trimmed.strip_prefix('#') {
            return self.comment(c);
        }
        self.sample(trimmed).map(|s| Some(Entry::Sample(s)))
    }

    fn comment(&mut self, c: &'a str) -> PResult<Option<Entry<'a>>> {
        let om = self.format == Format::OpenMetrics;
        if om {
            if c == " EOF" {
                self.eof_seen = true;
                return Ok(None);
            }
            let c = c.strip_prefix(' ').unwrap_or("");
            let (kw, rest) = split_word(c);
            if !matches!(kw, "HELP" | "TYPE" | "UNIT") {
                return Err(
                    "invalid comment: OpenMetrics allows only HELP, TYPE, UNIT and EOF".into(),
                );
            }
            let Some(rest) = rest.strip_prefix(' ') else {
                return Err(format!("invalid metadata line {c:?}"));
            };
            let (name, rest) = split_word(rest);
            check_metric_name(name)?;
            let text = rest.strip_prefix(' ').unwrap_or(rest);
            if !rest.is_empty() && !rest.starts_with(' ') {
                return Err(format!("invalid metadata line {c:?}"));
            }
            match kw {
                "HELP" => Ok(Some(Entry::Help(name, unescape_help(text)))),
                "TYPE" => Ok(Some(Entry::Type(name, om_type(text)?))),
                "UNIT" => Ok(Some(Entry::Unit(name, text))),
                _ => Err(format!("invalid metadata keyword {kw:?}")),
            }
        } else {
            let c = c.trim_start_matches([' ', '\t']);
            let (kw, rest) = split_word(c);
            if kw != "HELP" && kw != "TYPE" {
                return Ok(None); // an ordinary comment
            }
            let rest = rest.trim_start_matches([' ', '\t']);
            let (name, rest) = split_word(rest);
            if name.is_empty() {
                return Err(format!("{kw} line without a metric name"));
            }
            check_metric_name(name)?;
            let text = rest.strip_prefix([' ', '\t']).unwrap_or(rest);
            let text = text.trim_start_matches([' ', '\t']);
            if kw == "HELP" {
                Ok(Some(Entry::Help(name, unescape_help(text))))
            } else {
                Ok(Some(Entry::Type(name, prom_type(text.trim_end())?)))
            }
        }
    }

    fn sample(&mut self, line: &'a str) -> PResult<ParsedSample<'a>> {
        let om = self.format == Format::OpenMetrics;
        let b = line.as_bytes();
        let name_end = b
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b':'))
            .unwrap_or(b.len());
        let name = &line[..name_end];
        // Every byte of `name` is a metric-name byte by construction, so
        // only an empty name or a leading digit can make it invalid.
        if name.as_bytes().first().is_none_or(u8::is_ascii_digit) {
            check_metric_name(name)?;
        }
        let mut i = name_end;
        let brace = if om { i } else { skip_ws(b, i) };
        self.labels.clear();
        self.pending = None;
        if b.get(brace) == Some(&b'{') {
            if self.lazy {
                i = scan_labels(b, brace + 1)?;
                self.pending = Some((line, brace + 1, i));
            } else {
                i = parse_labels(line, brace + 1, om, &mut self.labels)?;
            }
        }
        let series = line[..i].trim_end_matches([' ', '\t']);
        // Value.
        if om {
            if b.get(i) != Some(&b' ') {
                return Err(format!("expected a space and a value after {series:?}"));
            }
            i += 1;
        } else {
            let j = skip_ws(b, i);
            if j == i {
                return Err(format!("expected a value after {series:?}"));
            }
            i = j;
        }
        let vend = token_end(b, i);
        let value = parse_value(&line[i..vend])?;
        i = vend;
        let mut timestamp = None;
        let mut exemplar = None;
        if om {
            if b.get(i) == Some(&b' ') && b.get(i + 1) != Some(&b'#') {
                let tend = token_end(b, i + 1);
                timestamp = Some(parse_om_timestamp(&line[i + 1..tend])?);
                i = tend;
            }
            if line[i..].starts_with(" # ") {
                exemplar = Some(parse_exemplar(line, i + 3)?);
                i = line.len();
            }
            if i != line.len() {
                return Err(format!("unexpected text {:?} after sample", &line[i..]));
            }
        } else {
            i = skip_ws(b, i);
            if i < b.len() {
                let tend = token_end(b, i);
                let t = &line[i..tend];
                timestamp = Some(
                    t.parse::<i64>()
                        .map_err(|_| format!("invalid timestamp {t:?}"))?,
                );
                i = skip_ws(b, tend);
                if i < b.len() {
                    return Err(format!("unexpected text {:?} after sample", &line[i..]));
                }
            }
        }
        Ok(ParsedSample {
            series,
            name,
            value,
            timestamp,
            exemplar,
        })
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    s.split_at(end)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

fn token_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
        i += 1;
    }
    i
}

fn check_metric_name(name: &str) -> PResult<()> {
    if crate::config::is_valid_metric_name(name) {
        Ok(())
    } else if name.is_empty() {
        Err("expected a metric name".into())
    } else {
        Err(format!("invalid metric name {name:?}"))
    }
}

fn prom_type(t: &str) -> PResult<MetricType> {
    Ok(match t {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "summary" => MetricType::Summary,
        "untyped" => MetricType::Unknown,
        _ => return Err(format!("invalid metric type {t:?}")),
    })
}

fn om_type(t: &str) -> PResult<MetricType> {
    Ok(match t {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "gaugehistogram" => MetricType::GaugeHistogram,
        "summary" => MetricType::Summary,
        "info" => MetricType::Info,
        "stateset" => MetricType::StateSet,
        "unknown" => MetricType::Unknown,
        _ => return Err(format!("invalid metric type {t:?}")),
    })
}

fn parse_value(s: &str) -> PResult<f64> {
    if s.is_empty() {
        return Err("expected a value".into());
    }
    // Rust's parser also takes "inf"/"infinity"/"nan" in any case, as Go's
    // strconv.ParseFloat does.
    s.parse::<f64>().map_err(|_| format!("invalid value {s:?}"))
}

fn parse_om_timestamp(s: &str) -> PResult<i64> {
    let t: f64 = s.parse().map_err(|_| format!("invalid timestamp {s:?}"))?;
    if !t.is_finite() {
        return Err(format!("invalid timestamp {s:?}"));
    }
    let ms = t * 1000.0;
    if ms.abs() >= 9.2e18 {
        return Err(format!("timestamp out of range {s:?}"));
    }
    Ok(ms as i64)
}

fn parse_exemplar<'a>(line: &'a str, mut i: usize) -> PResult<ParsedExemplar<'a>> {
    let b = line.as_bytes();
    if b.get(i) != Some(&b'{') {
        return Err("exemplar must start with '{'".into());
    }
    let mut labels = Vec::new();
    i = parse_labels(line, i + 1, true, &mut labels)?;
    if b.get(i) != Some(&b' ') {
        return Err("expected a space and a value after exemplar labels".into());
    }
    let vend = token_end(b, i + 1);
    let value = parse_value(&line[i + 1..vend])?;
    i = vend;
    let mut timestamp = None;
    if b.get(i) == Some(&b' ') {
        let tend = token_end(b, i + 1);
        timestamp = Some(parse_om_timestamp(&line[i + 1..tend])?);
        i = tend;
    }
    if i != line.len() {
        return Err(format!("unexpected text {:?} after exemplar", &line[i..]));
    }
    let runes: usize = labels
        .iter()
        .map(|(n, v)| n.chars().count() + v.chars().count())
        .sum();
    if runes > 128 {
        return Err(format!(
            "exemplar labels have {runes} UTF-8 characters, more than 128"
        ));
    }
    Ok(ParsedExemplar {
        labels,
        value,
        timestamp,
    })
}

/// Finds the end of a label block starting after `{` without parsing it:
/// the index after the first `}` outside a quoted value. For a block that
/// parses, this is where [`parse_labels`] ends too.
fn scan_labels(b: &[u8], mut i: usize) -> PResult<usize> {
    let mut quoted = false;
    while let Some(&c) = b.get(i) {
        match (quoted, c) {
            (true, b'\\') => i += 1,
            (true, b'"') => quoted = false,
            (false, b'"') => quoted = true,
            (false, b'}') => return Ok(i + 1),
            _ => {}
        }
        i += 1;
    }
    Err("unterminated label set".into())
}

/// Parses `name="value",...}` starting after `{`; returns the index after
/// `}`.
fn parse_labels<'a>(
    line: &'a str,
    mut i: usize,
    om: bool,
    out: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
) -> PResult<usize> {
    let b = line.as_bytes();
    let ws = |i: usize| if om { i } else { skip_ws(b, i) };
    loop {
        i = ws(i);
        match b.get(i) {
            Some(b'}') => return Ok(i + 1),
            None => return Err("unterminated label set".into()),
            _ => {}
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = &line[start..i];
        if name.is_empty() || b[start].is_ascii_digit() {
            return Err(format!(
                "invalid label name at {:?}",
                line[start..].chars().take(20).collect::<String>()
            ));
        }
        i = ws(i);
        if b.get(i) != Some(&b'=') {
            return Err(format!("expected '=' after label name {name:?}"));
        }
        i = ws(i + 1);
        if b.get(i) != Some(&b'"') {
            return Err(format!(
                "expected '\"' to start the value of label {name:?}"
            ));
        }
        i += 1;
        let vstart = i;
        let mut escaped = false;
        loop {
            match b.get(i) {
                None => return Err(format!("unterminated value of label {name:?}")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                Some(_) => i += 1,
            }
        }
        if i > b.len() {
            return Err(format!("unterminated value of label {name:?}"));
        }
        let raw = &line[vstart..i];
        let value = if escaped {
            Cow::Owned(unescape_label(raw))
        } else {
            Cow::Borrowed(raw)
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label name {name:?}"));
        }
        out.push((Cow::Borrowed(name), value));
        i = ws(i + 1);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => return Err(format!("expected ',' or '}}' after label {name:?}")),
        }
    }
}

fn unescape_label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn unescape_help(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') => out.push('"'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// Parses a whole body in both formats, discarding the result; never
/// panics. The fuzz target and a unit test call it.
pub fn fuzz_textparse(data: &[u8]) {
    for format in [Format::PromText, Format::OpenMetrics] {
        let Ok(mut p) = Parser::new(data, format) else {
            return;
        };
        // Each call consumes at least one line, so this is bounded.
        for _ in 0..=data.len() {
            match p.next() {
                Ok(Some(Entry::Sample(s))) => {
                    let _ = (s.series.len(), p.labels().len());
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (String, Vec<(String, String)>, f64, Option<i64>);

    fn parse_all(text: &str, f: Format) -> Result<(Vec<Row>, Vec<String>), ParseError> {
        let mut p = Parser::new(text.as_bytes(), f)?;
        let mut rows = Vec::new();
        let mut meta = Vec::new();
        while let Some(e) = p.next()? {
            match e {
                Entry::Sample(s) => rows.push((
                    s.name.to_string(),
                    p.labels()
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                    s.value,
                    s.timestamp,
                )),
                Entry::Type(n, t) => meta.push(format!("TYPE {n} {t:?}")),
                Entry::Help(n, h) => meta.push(format!("HELP {n} {h}")),
                Entry::Unit(n, u) => meta.push(format!("UNIT {n} {u}")),
            }
        }
        Ok((rows, meta))
    }

    /// The shared fixtures: `shared/` beside the repository, or
    /// `$STRATUS_SHARED/testdata/textparse` (for checkouts elsewhere).
    fn fixtures_dir() -> std::path::PathBuf {
        let beside = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/textparse"
        ));
        match std::env::var_os("STRATUS_SHARED") {
            Some(s) if !beside.is_dir() => std::path::PathBuf::from(s).join("testdata/textparse"),
            _ => beside,
        }
    }

    #[test]
    fn fixtures_parse() {
        let dir = fixtures_dir();
        assert!(
            dir.is_dir(),
            "parser fixtures missing: expected the shared test data at {} (the shared/ folder beside the repository, or set STRATUS_SHARED)",
            dir.display()
        );
        let cases = [
            ("alltypes.237mfs.prom.txt", Format::PromText),
            ("alltypes.237mfs.nometa.prom.txt", Format::PromText),
            ("alltypes.5mfs.om.txt", Format::OpenMetrics),
            ("1histogram.om.txt", Format::OpenMetrics),
        ];
        for (file, f) in cases {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()));
            let (rows, meta) = parse_all(&text, f).unwrap_or_else(|e| panic!("{file}: {e}"));
            let sample_lines = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .count();
            assert_eq!(rows.len(), sample_lines, "{file}: every sample line parsed");
            if file.contains("nometa") {
                assert!(meta.is_empty());
            } else {
                assert!(!meta.is_empty(), "{file}: metadata found");
            }
        }
    }

    #[test]
    fn prom_text_edge_cases() {
        let text = "# HELP m Help with \\\\ and \\n newline.\n\
                    # TYPE m counter\n\
                    # a plain comment\n\
                    \n\
                    m{a=\"x\\\"y\\\\z\\nw\",b=\"\"} 1.5 1700000000000\n\
                    m { a = \"1\" , } 2\n\
                    nan_metric NaN\n\
                    inf_metric +Inf\n\
                    ninf_metric -Inf\n\
                    exp 1e-3\n\
                    tabbed\t3\t\t42\n\
                    no_newline 7";
        let (rows, meta) = parse_all(text, Format::PromText).unwrap();
        assert_eq!(
            meta,
            vec!["HELP m Help with \\ and \n newline.", "TYPE m Counter"]
        );
        assert_eq!(rows[0].1[0], ("a".into(), "x\"y\\z\nw".into()));
        assert_eq!(rows[0].1[1], ("b".into(), "".into()));
        assert_eq!(rows[0].3, Some(1_700_000_000_000));
        assert_eq!(rows[1].1, vec![("a".to_string(), "1".to_string())]);
        assert!(rows[2].2.is_nan());
        assert_eq!(rows[3].2, f64::INFINITY);
        assert_eq!(rows[4].2, f64::NEG_INFINITY);
        assert_eq!(rows[5].2, 0.001);
        assert_eq!((rows[6].2, rows[6].3), (3.0, Some(42)));
        assert_eq!(rows[7].2, 7.0);
    }

    #[test]
    fn series_key_is_raw_text() {
        let mut p = Parser::new(b"a{x=\"1\"} 1\n", Format::PromText).unwrap();
        let Some(Entry::Sample(s)) = p.next().unwrap() else {
            panic!()
        };
        assert_eq!(s.series, "a{x=\"1\"}");
    }

    #[test]
    fn openmetrics_edge_cases() {
        let text = "# TYPE foo counter\n\
                    # HELP foo The foo.\n\
                    # UNIT foo seconds\n\
                    foo_total{a=\"b\"} 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1520879602.1\n\
                    foo_created{a=\"b\"} 1520430000.123\n\
                    foo_total 3 # {} 1\n\
                    bar NaN\n\
                    # EOF\n";
        let (rows, meta) = parse_all(text, Format::OpenMetrics).unwrap();
        assert_eq!(
            meta,
            vec!["TYPE foo Counter", "HELP foo The foo.", "UNIT foo seconds"]
        );
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].3, Some(1_520_879_607_789));
        assert_eq!(rows[0].2, 17.0);
        assert!(rows[3].2.is_nan());
        // Exemplar content.
        let mut p = Parser::new(text.as_bytes(), Format::OpenMetrics).unwrap();
        let mut ex = None;
        while let Some(e) = p.next().unwrap() {
            if let Entry::Sample(s) = e {
                if s.exemplar.is_some() {
                    ex = s.exemplar;
                    break;
                }
            }
        }
        let ex = ex.unwrap();
        assert_eq!(ex.value, 0.67);
        assert_eq!(ex.timestamp, Some(1_520_879_602_100));
        assert_eq!(ex.labels[0].1, "KOO5S4vxi0o");
        // `# EOF` without a final newline is fine.
        assert!(parse_all("a 1\n# EOF", Format::OpenMetrics).is_ok());
    }

    #[test]
    fn errors_are_clear() {
        let cases: &[(&str, Format, usize, &str)] = &[
            ("a 1\n", Format::OpenMetrics, 1, "does not end with # EOF"),
            ("a 1\n# EOF\nb 2\n", Format::OpenMetrics, 3, "after # EOF"),
            (
                "# comment\na 1\n# EOF\n",
                Format::OpenMetrics,
                1,
                "invalid comment",
            ),
            ("a  1\n# EOF\n", Format::OpenMetrics, 1, "expected a value"),
            (
                "# TYPE a nonsense\n# EOF\n",
                Format::OpenMetrics,
                1,
                "invalid metric type",
            ),
            ("a 1\n\n# EOF\n", Format::OpenMetrics, 2, "empty line"),
            (
                "a 1 # {x=\"y\"}\n# EOF\n",
                Format::OpenMetrics,
                1,
                "expected a space",
            ),
            ("ok 1\n1bad 1\n", Format::PromText, 2, "metric name"),
            ("a{b=\"c} 1\n", Format::PromText, 1, "unterminated value"),
            ("a{b=c} 1\n", Format::PromText, 1, "to start the value"),
            (
                "a{b=\"c\" d=\"e\"} 1\n",
                Format::PromText,
                1,
                "expected ','",
            ),
            (
                "a{b=\"1\",b=\"2\"} 1\n",
                Format::PromText,
                1,
                "duplicate label name",
            ),
            ("a{b=\"1\"\n", Format::PromText, 1, "expected ',' or"),
            ("a\n", Format::PromText, 1, "expected a value"),
            ("a abc\n", Format::PromText, 1, "invalid value"),
            ("a 1 1.5\n", Format::PromText, 1, "invalid timestamp"),
            ("a 1 2 3\n", Format::PromText, 1, "unexpected text"),
            (
                "# TYPE a bogus\n",
                Format::PromText,
                1,
                "invalid metric type",
            ),
            ("a{1b=\"x\"} 1\n", Format::PromText, 1, "invalid label name"),
        ];
        for (text, f, line, msg) in cases {
            let e = parse_all(text, *f).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.to_string().contains(msg), "{text:?}: {e}");
        }
        let e = parse_all_bytes(b"a{b=\"\xff\"} 1\n");
        assert!(e.contains("UTF-8"), "{e}");
    }

    fn parse_all_bytes(b: &[u8]) -> String {
        Parser::new(b, Format::PromText).unwrap_err().to_string()
    }

    #[test]
    fn content_type_negotiation() {
        assert_eq!(
            Format::from_content_type(Some(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(Some("text/plain; version=0.0.4")),
            Format::PromText
        );
        assert_eq!(Format::from_content_type(None), Format::PromText);
    }

    /// Mutates the fixtures and hand-made seeds a few thousand times and
    /// checks that parsing never panics.
    #[test]
    fn mutated_inputs_never_panic() {
        let mut seeds: Vec<Vec<u8>> = vec![
            b"a{b=\"c\\\"\",d=\"\\\\\"} 1 2\n# HELP a x\\ny\n".to_vec(),
            b"# TYPE f counter\nf_total 1 1.5 # {a=\"b\"} 1 2\n# EOF\n".to_vec(),
        ];
        for f in ["alltypes.5mfs.om.txt", "1histogram.om.txt"] {
            if let Ok(b) = std::fs::read(fixtures_dir().join(f)) {
                seeds.push(b.into_iter().take(4000).collect());
            }
        }
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"{}\"\\=, #\n\t.eE+-0123456789aNIf_:\xff\xc3";
        for round in 0..3000 {
            let mut d = seeds[round % seeds.len()].clone();
            for _ in 0..(1 + rnd() % 8) {
                if d.is_empty() {
                    d.push(b'a');
                }
                let pos = (rnd() as usize) % d.len();
                match rnd() % 4 {
                    0 => d[pos] = alphabet[(rnd() as usize) % alphabet.len()],
                    1 => {
                        d.remove(pos);
                    }
                    2 => d.insert(pos, alphabet[(rnd() as usize) % alphabet.len()]),
                    _ => d.truncate(pos),
                }
            }
            fuzz_textparse(&d);
            lazy_matches_eager(&d);
        }
    }

    /// Lazy label parsing yields the same entries, series texts and labels
    /// as eager parsing for every line eager parsing accepts.
    fn lazy_matches_eager(data: &[u8]) {
        for format in [Format::PromText, Format::OpenMetrics] {
            let (Ok(mut e), Ok(mut l)) = (Parser::new(data, format), Parser::new(data, format))
            else {
                return;
            };
            l.set_lazy_labels(true);
            for _ in 0..=data.len() {
                let Ok(got) = e.next() else { break };
                let lazy = l.next();
                match got {
                    None => {
                        assert!(matches!(lazy, Ok(None)));
                        break;
                    }
                    Some(Entry::Sample(s)) => {
                        let Ok(Some(Entry::Sample(ls))) = lazy else {
                            panic!("lazy parser disagrees on {:?}", s.series);
                        };
                        assert_eq!(
                            (ls.series, ls.value.to_bits()),
                            (s.series, s.value.to_bits())
                        );
                        assert_eq!(l.parse_labels().unwrap(), e.labels());
                    }
                    Some(other) => assert_eq!(lazy.unwrap(), Some(other)),
                }
            }
        }
    }

    #[test]
    fn lazy_labels_parse_on_demand() {
        let text = "a{x=\"}\\\"\",y=\"2\"} 1\nb 2\nc{x=\"1\",x=\"2\"} 3\n";
        let mut p = Parser::new(text.as_bytes(), Format::PromText).unwrap();
        p.set_lazy_labels(true);
        let Some(Entry::Sample(s)) = p.next().unwrap() else {
            panic!()
        };
        assert_eq!(s.series, "a{x=\"}\\\"\",y=\"2\"}");
        assert!(p.labels().is_empty());
        let l = p.parse_labels().unwrap();
        assert_eq!(l[0], (Cow::Borrowed("x"), Cow::Owned("}\"".into())));
        assert_eq!(l[1], (Cow::Borrowed("y"), Cow::Borrowed("2")));
        let Some(Entry::Sample(s)) = p.next().unwrap() else {
            panic!()
        };
        assert_eq!(s.series, "b");
        assert!(p.parse_labels().unwrap().is_empty());
        // A bad label block is found when the labels are asked for.
        let Some(Entry::Sample(s)) = p.next().unwrap() else {
            panic!()
        };
        assert_eq!(s.series, "c{x=\"1\",x=\"2\"}");
        let e = p.parse_labels().unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("duplicate label name"), "{e}");
    }
}
