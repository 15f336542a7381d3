//! Runner for Prometheus' `promqltest` script language (`*.test` files).
//!
//! Implements the format described in `shared/testdata/promqltest/FORMAT.md`:
//! `load`/`load_with_nhcb`, `clear`, `eval instant|range` with `expect`
//! directives and expected results, and the upstream runner's extra checks
//! for instant evals (re-evaluation with `@` at shifted times and as short
//! range queries). Each `clear` segment gets a fresh [`stratus_tsdb::Db`] in
//! a temporary directory over an in-memory bucket, configured to accept
//! 1970 timestamps in any order.
//!
//! Native histogram literals (`{{schema:0 sum:5 buckets:[1 2]}}`, with
//! `xN` and `+{{...}}xN` expansions) are loaded as float histograms and
//! compared in compact form; `load_with_nhcb` also stores custom-bucket
//! histograms built from classic ones. Failures in a segment that loaded
//! histograms carry the prefix "native histograms: " in reports.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use stratus_model::{
    BucketSpan, CUSTOM_BUCKETS_SCHEMA, FloatHistogram, Labels, Sample as ModelSample, is_stale_nan,
    reset_hint, stale_nan,
};
use stratus_objstore::Bucket;
use stratus_tsdb::{Db, DbConfig, SeriesHistograms, SeriesSamples, StartTimestamps};

use crate::ast::{Expr, ValueType};
use crate::engine::{Engine, EngineOptions};
use crate::value::Value;

/// Outcome of one script file.
#[derive(Debug, Default, Clone)]
pub struct FileReport {
    /// Evals that passed.
    pub passed: usize,
    /// Failed evals: `(1-based line, expression, reason)`.
    pub failed: Vec<(usize, String, String)>,
}

/// Runs one script file.
pub fn run_file(path: impl AsRef<Path>) -> FileReport {
    let path = path.as_ref();
    let mut report = FileReport::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            report.failed.push((
                0,
                String::new(),
                format!("cannot read {}: {e}", path.display()),
            ));
            return report;
        }
    };
    run_script(&text, &mut report);
    report
}

/// Runs a script given as text.
pub fn run_script(text: &str, report: &mut FileReport) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            report
                .failed
                .push((0, String::new(), format!("cannot start runtime: {e}")));
            return;
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut st = State {
        rt,
        db: None,
        dir: None,
        has_hist: false,
        load_error: None,
        engine: Engine::new(EngineOptions {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(100),
            default_subquery_step: Duration::from_secs(60),
            max_series: 0,
            enable_experimental: true,
            use_start_timestamps: true,
            parallelism: crate::par::default_parallelism(),
        }),
    };
    let mut i = 0;
    while i < lines.len() {
        let l = clean(lines[i]);
        if l.is_empty() {
            i += 1;
            continue;
        }
        let end = block_end(&lines, i + 1);
        let block: Vec<(usize, &str)> = (i + 1..end).map(|j| (j + 1, clean(lines[j]))).collect();
        let word = l
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if word == "clear" {
            // `clear` has no block: the next line starts a new command.
            st.clear();
            i += 1;
            continue;
        } else if word == "load" || word == "load_with_nhcb" {
            if let Err(e) = st.load(l, &block, word == "load_with_nhcb") {
                st.load_error = Some(format!("line {}: {e}", i + 1));
            }
        } else if word.starts_with("eval") {
            let expr_text = eval_expr_text(l);
            match st.eval(l, &block) {
                Ok(()) => report.passed += 1,
                Err(mut reason) => {
                    if let Some(le) = &st.load_error {
                        reason = format!("{reason} (load error: {le})");
                    }
                    if st.has_hist && !reason.starts_with("native histograms") {
                        reason = format!("native histograms: {reason}");
                    }
                    report.failed.push((i + 1, expr_text, reason));
                }
            }
        } else {
            report
                .failed
                .push((i + 1, l.to_string(), format!("invalid command {l:?}")));
        }
        i = end;
    }
}

/// Trims a line; comment lines become empty.
fn clean(l: &str) -> &str {
    let t = l.trim();
    if t.starts_with('#') { "" } else { t }
}

fn block_end(lines: &[&str], mut j: usize) -> usize {
    while j < lines.len() && !clean(lines[j]).is_empty() {
        j += 1;
    }
    j
}

fn eval_expr_text(l: &str) -> String {
    match parse_eval_header(l) {
        Ok(h) => h.expr,
        Err(_) => l.to_string(),
    }
}

struct State {
    rt: tokio::runtime::Runtime,
    db: Option<Arc<Db>>,
    dir: Option<tempfile::TempDir>,
    has_hist: bool,
    load_error: Option<String>,
    engine: Engine,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("has_hist", &self.has_hist)
            .finish()
    }
}

impl State {
    fn clear(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = db.close();
        }
        self.dir = None;
        self.has_hist = false;
        self.load_error = None;
    }

    fn db(&mut self) -> Result<Arc<Db>, String> {
        if let Some(db) = &self.db {
            return Ok(db.clone());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let mut cfg = DbConfig::default();
        cfg.head.ooo_window = i64::MAX / 4;
        cfg.max_future = Duration::from_secs(1 << 40);
        let path = dir.path().to_path_buf();
        let db = self
            .rt
            .block_on(Db::open(&path, Bucket::memory(), cfg))
            .map_err(|e| format!("open storage: {e}"))?;
        let db = Arc::new(db);
        self.db = Some(db.clone());
        self.dir = Some(dir);
        Ok(db)
    }

    fn load(&mut self, header: &str, block: &[(usize, &str)], nhcb: bool) -> Result<(), String> {
        let step_s = header
            .split_whitespace()
            .nth(1)
            .ok_or("load without step")?;
        let step = parse_duration(step_s)?;
        if nhcb {
            self.has_hist = true;
        }
        let mut series: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
        let mut hseries: Vec<(Labels, Vec<(i64, FloatHistogram)>)> = Vec::new();
        // Start timestamps by series and sample time (from `@st` lines).
        let mut starts: Vec<(Labels, Vec<(i64, i64)>)> = Vec::new();
        let mut pending_st: Option<(Labels, Vec<Option<i64>>)> = None;
        let mut k = 0;
        while k < block.len() {
            let (ln, line) = block[k];
            k += 1;
            let (labels, rest, st_line) =
                parse_series_desc(line).map_err(|e| format!("line {ln}: {e}"))?;
            if st_line {
                // Start-timestamp offsets for the sample line that follows.
                let offs = parse_st_offsets(rest).map_err(|e| format!("line {ln}: {e}"))?;
                pending_st = Some((labels, offs));
                continue;
            }
            let vals = parse_typed_values(rest).map_err(|e| format!("line {ln}: {e}"))?;
            let mut sts: Vec<(i64, i64)> = Vec::new();
            if let Some((sl, offs)) = pending_st.take() {
                if sl != labels {
                    return Err(format!(
                        "line {ln}: @st line for {sl} not followed by its samples"
                    ));
                }
                for (i, o) in offs.iter().enumerate() {
                    if let (Some(o), Some(Some(_))) = (o, vals.get(i)) {
                        let t = i as i64 * step;
                        sts.push((t, t.saturating_add(*o)));
                    }
                }
            }
            match starts.iter_mut().find(|s| s.0 == labels) {
                Some(s) => s.1 = sts,
                None => starts.push((labels.clone(), sts)),
            }
            let mut samples = Vec::new();
            let mut hists = Vec::new();
            for (i, v) in vals.into_iter().enumerate() {
                match v {
                    Some(Tv::F(v)) => samples.push((i as i64 * step, v)),
                    Some(Tv::H(h, _)) => hists.push((i as i64 * step, h)),
                    None => {}
                }
            }
            if !hists.is_empty() {
                self.has_hist = true;
            }
            match series.iter_mut().find(|s| s.0 == labels) {
                Some(s) => s.1 = samples,
                None => series.push((labels.clone(), samples)),
            }
            match hseries.iter_mut().find(|s| s.0 == labels) {
                Some(s) => s.1 = hists,
                None => hseries.push((labels, hists)),
            }
        }
        if nhcb {
            hseries.extend(nhcb_series(&series));
        }
        // Series holding both floats and histograms are appended apart.
        let mixed: Vec<(Labels, Vec<(i64, FloatHistogram)>)> = hseries
            .iter()
            .filter(|(l, h)| !h.is_empty() && series.iter().any(|(sl, f)| sl == l && !f.is_empty()))
            .cloned()
            .collect();
        hseries.retain(|(l, _)| !mixed.iter().any(|(ml, _)| ml == l));
        let mut owned_mixed: Vec<(Labels, Vec<ModelSample>)> = Vec::new();
        series.retain(|(l, f)| {
            if mixed.iter().any(|(ml, _)| ml == l) {
                owned_mixed.push((
                    l.clone(),
                    f.iter().map(|&(t, v)| ModelSample::new(t, v)).collect(),
                ));
                return false;
            }
            true
        });
        let db = self.db()?;
        let owned: Vec<(Labels, Vec<ModelSample>)> = series
            .into_iter()
            .map(|(l, s)| {
                (
                    l,
                    s.into_iter().map(|(t, v)| ModelSample::new(t, v)).collect(),
                )
            })
            .collect();
        let batch: Vec<SeriesSamples<'_>> = owned
            .iter()
            .map(|(l, s)| SeriesSamples {
                labels: l,
                samples: s,
            })
            .collect();
        let hbatch: Vec<SeriesHistograms<'_>> = hseries
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(l, h)| SeriesHistograms {
                labels: l,
                histograms: &[],
                float_histograms: h,
            })
            .collect();
        let st_for = |l: &Labels, times: &mut dyn Iterator<Item = i64>| -> Vec<i64> {
            let list = starts
                .iter()
                .find(|s| &s.0 == l)
                .map_or(&[][..], |s| &s.1[..]);
            times
                .map(|t| list.iter().find(|x| x.0 == t).map_or(0, |x| x.1))
                .collect()
        };
        let f_sts: Vec<Vec<i64>> = owned
            .iter()
            .map(|(l, s)| st_for(l, &mut s.iter().map(|x| x.t)))
            .collect();
        let h_sts: Vec<Vec<i64>> = hbatch
            .iter()
            .map(|h| st_for(h.labels, &mut h.float_histograms.iter().map(|x| x.0)))
            .collect();
        let f_refs: Vec<&[i64]> = f_sts.iter().map(Vec::as_slice).collect();
        let h_refs: Vec<&[i64]> = h_sts.iter().map(Vec::as_slice).collect();
        let r = db
            .append_with_start_timestamps(
                &batch,
                &hbatch,
                &StartTimestamps {
                    samples: &f_refs,
                    histograms: &[],
                    float_histograms: &h_refs,
                },
            )
            .map_err(|e| format!("append: {e}"))?;
        if r.rejected > 0 {
            let first = r.errors.first().map(|e| e.to_string()).unwrap_or_default();
            return Err(format!("{} samples rejected: {first}", r.rejected));
        }
        // Series mixing floats and histograms: appended run by run in time
        // order, since histograms are accepted in time order only.
        for (l, hs) in &mixed {
            let Some((_, fs)) = owned_mixed.iter().find(|(ml, _)| ml == l) else {
                continue;
            };
            let (mut i, mut j) = (0, 0);
            while i < fs.len() || j < hs.len() {
                let f_next = fs.get(i).map(|x| x.t);
                let h_next = hs.get(j).map(|x| x.0);
                let take_f = match (f_next, h_next) {
                    (Some(a), Some(b)) => a < b,
                    (Some(_), None) => true,
                    _ => false,
                };
                let r = if take_f {
                    let end = match h_next {
                        Some(b) => i + fs[i..].partition_point(|x| x.t < b),
                        None => fs.len(),
                    };
                    let run = SeriesSamples {
                        labels: l,
                        samples: &fs[i..end],
                    };
                    i = end;
                    let sts = st_for(l, &mut run.samples.iter().map(|x| x.t));
                    db.append_with_start_timestamps(
                        &[run],
                        &[],
                        &StartTimestamps {
                            samples: &[&sts],
                            ..Default::default()
                        },
                    )
                } else {
                    let end = match f_next {
                        Some(a) => j + hs[j..].partition_point(|x| x.0 < a),
                        None => hs.len(),
                    };
                    let run = SeriesHistograms {
                        labels: l,
                        histograms: &[],
                        float_histograms: &hs[j..end],
                    };
                    j = end;
                    let sts = st_for(l, &mut run.float_histograms.iter().map(|x| x.0));
                    db.append_with_start_timestamps(
                        &[],
                        &[run],
                        &StartTimestamps {
                            float_histograms: &[&sts],
                            ..Default::default()
                        },
                    )
                }
                .map_err(|e| format!("append: {e}"))?;
                if r.rejected > 0 {
                    let first = r.errors.first().map(|e| e.to_string()).unwrap_or_default();
                    return Err(format!("{} samples rejected: {first}", r.rejected));
                }
            }
        }
        Ok(())
    }

    fn eval(&mut self, header: &str, block: &[(usize, &str)]) -> Result<(), String> {
        let h = parse_eval_header(header)?;
        let mut spec = EvalSpec::default();
        match h.deprecated.as_str() {
            "fail" => spec.fail = true,
            "warn" => spec.warn = true,
            "info" => spec.info = true,
            "ordered" => spec.ordered = true,
            _ => {}
        }
        for &(_, line) in block {
            parse_block_line(line, &mut spec, h.range.is_some())?;
        }
        if spec.warn && spec.no_warn || spec.info && spec.no_info {
            return Err("script error: both warn and no_warn (or info and no_info)".into());
        }
        let expr = crate::parser::parse(&h.expr);
        let db = self.db()?;
        let q: &dyn stratus_tsdb::Queryable = db.as_ref();
        let expr = match expr {
            Ok(e) => e,
            Err(e) => {
                if spec.fail {
                    return check_fail_msg(&spec, &e.to_string());
                }
                return Err(format!("parse error: {e}"));
            }
        };
        match h.range {
            Some((start, end, step)) => {
                let res = self.engine.range_expr(q, &expr, start, end, step);
                match res {
                    Err(e) => {
                        if spec.fail {
                            return check_fail_msg(&spec, &e.to_string());
                        }
                        Err(format!("unexpected error: {e}"))
                    }
                    Ok(r) => {
                        if spec.fail {
                            return Err("expected error, got result".into());
                        }
                        check_annotations(&spec, &r.warnings, &r.infos)?;
                        compare_range(&spec, &r.value, start, step)
                    }
                }
            }
            None => self.eval_instant(q, &expr, &h.expr, h.at, &spec),
        }
    }

    fn eval_instant(
        &self,
        q: &dyn stratus_tsdb::Queryable,
        expr: &Expr,
        text: &str,
        t: i64,
        spec: &EvalSpec,
    ) -> Result<(), String> {
        // All the runs: (expression, eval time).
        let mut runs: Vec<(Expr, i64)> = vec![(expr.clone(), t)];
        let non_invariant = [
            "time",
            "timestamp",
            "day_of_month",
            "day_of_week",
            "day_of_year",
            "days_in_month",
            "hour",
            "minute",
            "month",
            "year",
            "predict_linear",
            "start",
            "end",
            "range",
            "step",
        ];
        if !expr.calls_any(&non_invariant) {
            let mut e2 = expr.clone();
            e2.set_at_everywhere(t);
            let times: Vec<i64> = if t == 0 {
                vec![-1000, 0, 1000]
            } else {
                vec![-10 * t, 0, t / 5, t, 10 * t]
            };
            for et in times {
                runs.push((e2.clone(), et));
            }
        }
        let range_check = !spec.ordered
            && spec.range_vector.is_none()
            && spec.string.is_none()
            && !expr.calls_any(&["start", "end", "range", "step"])
            && !text.contains("start()")
            && !text.to_ascii_lowercase().contains("step()")
            && !text.to_ascii_lowercase().contains("range()")
            && !text.contains("end()")
            && matches!(expr.value_type(), ValueType::Scalar | ValueType::Vector);
        if spec.fail {
            for (e, et) in &runs {
                if let Err(err) = self.engine.instant_expr(q, e, *et) {
                    return check_fail_msg(spec, &err.to_string());
                }
                if range_check {
                    if let Err(err) = self
                        .engine
                        .range_expr(q, e, et - 60_000, et + 60_000, 60_000)
                    {
                        return check_fail_msg(spec, &err.to_string());
                    }
                }
            }
            return Err("expected error, got result".into());
        }
        for (k, (e, et)) in runs.iter().enumerate() {
            let what = if k == 0 {
                String::new()
            } else {
                format!(" (with @ {t} evaluated at {et})")
            };
            let r = self
                .engine
                .instant_expr(q, e, *et)
                .map_err(|err| format!("unexpected error{what}: {err}"))?;
            if k == 0 {
                check_annotations(spec, &r.warnings, &r.infos)?;
            }
            compare_instant(spec, &r.value).map_err(|m| format!("{m}{what}"))?;
            if range_check {
                let r = self
                    .engine
                    .range_expr(q, e, et - 60_000, et + 60_000, 60_000)
                    .map_err(|err| format!("unexpected error in range mode{what}: {err}"))?;
                let v = point_at(&r.value, *et, spec);
                compare_instant(spec, &v).map_err(|m| format!("range mode{what}: {m}"))?;
            }
        }
        Ok(())
    }
}

/// Extracts the points at `t` of a range-query result as an instant value.
fn point_at(v: &Value, t: i64, spec: &EvalSpec) -> Value {
    let Value::Matrix(m) = v else {
        return v.clone();
    };
    if spec.scalar.is_some() {
        let v = m
            .first()
            .and_then(|s| s.points.iter().find(|p| p.0 == t))
            .map_or(f64::NAN, |p| p.1);
        return Value::Scalar { t, v };
    }
    Value::Vector(
        m.iter()
            .filter_map(|s| {
                if let Some(h) = s.histograms.iter().find(|p| p.0 == t) {
                    return Some(crate::value::Sample {
                        labels: s.labels.clone(),
                        t,
                        v: 0.0,
                        h: Some(h.1.clone()),
                    });
                }
                let p = s.points.iter().find(|p| p.0 == t)?;
                Some(crate::value::Sample {
                    labels: s.labels.clone(),
                    t,
                    v: p.1,
                    h: None,
                })
            })
            .collect(),
    )
}

#[derive(Debug, Default)]
struct EvalSpec {
    fail: bool,
    fail_msg: Option<String>,
    fail_regex: Option<String>,
    warn: bool,
    warn_msgs: Vec<Matcher>,
    no_warn: bool,
    info: bool,
    info_msgs: Vec<Matcher>,
    no_info: bool,
    ordered: bool,
    range_vector: Option<(i64, i64, i64)>,
    string: Option<String>,
    scalar: Option<f64>,
    series: Vec<(Labels, Vec<Option<Tv>>)>,
}

#[derive(Debug)]
enum Matcher {
    Msg(String),
    Regex(Regex),
}

impl Matcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Msg(m) => m == s,
            Matcher::Regex(r) => r.is_match(s),
        }
    }
}

fn check_fail_msg(spec: &EvalSpec, err: &str) -> Result<(), String> {
    if let Some(m) = &spec.fail_msg {
        if m != err {
            return Err(format!("expected error {m:?}, got {err:?}"));
        }
    }
    if let Some(r) = &spec.fail_regex {
        let re = Regex::new(r).map_err(|e| format!("bad regex {r:?}: {e}"))?;
        if !re.is_match(err) {
            return Err(format!("expected error matching {r:?}, got {err:?}"));
        }
    }
    Ok(())
}

fn check_annotations(spec: &EvalSpec, warns: &[String], infos: &[String]) -> Result<(), String> {
    check_kind("warning", spec.warn, &spec.warn_msgs, spec.no_warn, warns)?;
    check_kind("info", spec.info, &spec.info_msgs, spec.no_info, infos)
}

fn check_kind(
    kind: &str,
    want: bool,
    msgs: &[Matcher],
    none: bool,
    got: &[String],
) -> Result<(), String> {
    if none && !got.is_empty() {
        return Err(format!("unexpected {kind} annotations: {got:?}"));
    }
    if want && got.is_empty() {
        return Err(format!("expected {kind} annotations, got none"));
    }
    if !msgs.is_empty() {
        for m in msgs {
            if !got.iter().any(|g| m.matches(g)) {
                return Err(format!("expected {kind} {m:?} not found in {got:?}"));
            }
        }
        for g in got {
            if !msgs.iter().any(|m| m.matches(g)) {
                return Err(format!("unexpected {kind} {g:?}"));
            }
        }
    }
    Ok(())
}

fn parse_block_line(line: &str, spec: &mut EvalSpec, is_range: bool) -> Result<(), String> {
    if let Some(rest) = line.strip_prefix("expect ") {
        let rest = rest.trim();
        let (kind, tail) = match rest.split_once(char::is_whitespace) {
            Some((k, t)) => (k, t.trim()),
            None => (rest, ""),
        };
        let matcher = || -> Result<Option<Matcher>, String> {
            if let Some(m) = tail.strip_prefix("msg:") {
                Ok(Some(Matcher::Msg(m.trim().to_string())))
            } else if let Some(r) = tail.strip_prefix("regex:") {
                let r = r.trim();
                Ok(Some(Matcher::Regex(
                    Regex::new(r).map_err(|e| format!("bad regex {r:?}: {e}"))?,
                )))
            } else if tail.is_empty() {
                Ok(None)
            } else {
                Err(format!("invalid expect line {line:?}"))
            }
        };
        match kind {
            "fail" => {
                spec.fail = true;
                match matcher()? {
                    Some(Matcher::Msg(m)) => spec.fail_msg = Some(m),
                    Some(Matcher::Regex(r)) => spec.fail_regex = Some(r.as_str().to_string()),
                    None => {}
                }
            }
            "warn" => {
                spec.warn = true;
                if let Some(m) = matcher()? {
                    spec.warn_msgs.push(m);
                }
            }
            "info" => {
                spec.info = true;
                if let Some(m) = matcher()? {
                    spec.info_msgs.push(m);
                }
            }
            "no_warn" => spec.no_warn = true,
            "no_info" => spec.no_info = true,
            "ordered" => spec.ordered = true,
            "string" => spec.string = Some(unquote(tail)?),
            "range" => {
                // range vector from <a> to <b> step <s>
                let w: Vec<&str> = tail.split_whitespace().collect();
                if w.len() != 7
                    || w[0] != "vector"
                    || w[1] != "from"
                    || w[3] != "to"
                    || w[5] != "step"
                {
                    return Err(format!("invalid expect line {line:?}"));
                }
                spec.range_vector = Some((
                    parse_duration(w[2])?,
                    parse_duration(w[4])?,
                    parse_duration(w[6])?,
                ));
            }
            _ => return Err(format!("invalid expect line {line:?}")),
        }
        return Ok(());
    }
    if let Some(m) = line.strip_prefix("expected_fail_message") {
        spec.fail_msg = Some(m.trim().to_string());
        return Ok(());
    }
    if let Some(r) = line.strip_prefix("expected_fail_regexp") {
        spec.fail_regex = Some(r.trim().to_string());
        return Ok(());
    }
    if let Some(v) = parse_number(line) {
        spec.scalar = Some(v);
        return Ok(());
    }
    let (labels, rest, _) = parse_series_desc(line)?;
    let vals = parse_typed_values(rest)?;
    let _ = is_range;
    spec.series.push((labels, vals));
    Ok(())
}

fn compare_instant(spec: &EvalSpec, v: &Value) -> Result<(), String> {
    if let Some(s) = &spec.string {
        return match v {
            Value::String { s: got, .. } if got == s => Ok(()),
            other => Err(format!("expected string {s:?}, got {other:?}")),
        };
    }
    if let Some(x) = spec.scalar {
        return match v {
            Value::Scalar { v, .. } if almost_equal(x, *v) => Ok(()),
            other => Err(format!("expected scalar {x}, got {}", short(other))),
        };
    }
    match v {
        Value::Vector(got) => {
            if spec.range_vector.is_some() {
                return Err("expected range vector, got instant vector".into());
            }
            if got.len() != spec.series.len() {
                return Err(format!(
                    "expected {} series, got {}: {}",
                    spec.series.len(),
                    got.len(),
                    short(v)
                ));
            }
            for (i, (l, vals)) in spec.series.iter().enumerate() {
                let want = vals.first().cloned().flatten();
                let pos = got.iter().position(|s| &s.labels == l);
                let Some(pos) = pos else {
                    return Err(format!("expected series {l} not found in {}", short(v)));
                };
                if spec.ordered && pos != i {
                    return Err(format!("series {l} at position {pos}, expected {i}"));
                }
                let g = match &got[pos].h {
                    Some(h) => Tv::H((**h).clone(), true),
                    None => Tv::F(got[pos].v),
                };
                if !want.as_ref().is_some_and(|w| tv_eq(w, &g)) {
                    return Err(format!("series {l}: expected {want:?}, got {g:?}"));
                }
            }
            Ok(())
        }
        Value::Matrix(m) => {
            let Some((a, _, s)) = spec.range_vector else {
                return Err(format!("unexpected range vector result: {}", short(v)));
            };
            compare_matrix(spec, m, a, s)
        }
        other => Err(format!("unexpected result {}", short(other))),
    }
}

fn compare_range(spec: &EvalSpec, v: &Value, start: i64, step: i64) -> Result<(), String> {
    match v {
        Value::Matrix(m) => compare_matrix(spec, m, start, step),
        other => Err(format!("expected matrix, got {}", short(other))),
    }
}

fn compare_matrix(
    spec: &EvalSpec,
    m: &[crate::value::RangeSeries],
    start: i64,
    step: i64,
) -> Result<(), String> {
    if spec.scalar.is_some() {
        return Err("expected scalar, got matrix".into());
    }
    let expected: Vec<_> = spec
        .series
        .iter()
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .collect();
    for w in m.windows(2) {
        if w[0].labels >= w[1].labels {
            return Err("matrix not sorted by label set".into());
        }
    }
    if m.len() != expected.len() {
        return Err(format!(
            "expected {} series, got {}: {}",
            expected.len(),
            m.len(),
            short(&Value::Matrix(m.to_vec()))
        ));
    }
    for (l, vals) in expected {
        let Some(s) = m.iter().find(|s| &s.labels == l) else {
            return Err(format!("expected series {l} not found"));
        };
        let want: Vec<(i64, Tv)> = vals
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.clone().map(|v| (start + i as i64 * step, v)))
            .collect();
        let mut got: Vec<(i64, Tv)> = s
            .points
            .iter()
            .map(|p| (p.0, Tv::F(p.1)))
            .chain(
                s.histograms
                    .iter()
                    .map(|p| (p.0, Tv::H((*p.1).clone(), true))),
            )
            .collect();
        got.sort_by_key(|p| p.0);
        let ok = want.len() == got.len()
            && want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.0 == b.0 && tv_eq(&a.1, &b.1));
        if !ok {
            return Err(format!("series {l}: expected {want:?}, got {got:?}"));
        }
    }
    Ok(())
}

fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.len() > 600 {
        let mut end = 600;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

/// The upstream runner's float comparison.
fn almost_equal(a: f64, b: f64) -> bool {
    const EPS: f64 = 1e-6;
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return is_stale_nan(a) == is_stale_nan(b);
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPS * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPS
}

#[derive(Debug)]
struct EvalHeader {
    deprecated: String,
    expr: String,
    at: i64,
    range: Option<(i64, i64, i64)>,
}

fn parse_eval_header(l: &str) -> Result<EvalHeader, String> {
    let (cmd, rest) = l
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("invalid eval {l:?}"))?;
    let cmd = cmd.to_ascii_lowercase();
    let deprecated = match cmd.as_str() {
        "eval" => "",
        "eval_fail" => "fail",
        "eval_warn" => "warn",
        "eval_info" => "info",
        "eval_ordered" => "ordered",
        _ => return Err(format!("invalid command {cmd:?}")),
    }
    .to_string();
    let rest = rest.trim_start();
    let (kind, rest) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("invalid eval {l:?}"))?;
    let mut words = WordSplitter(rest);
    match kind {
        "instant" => {
            words.expect("at")?;
            let at = parse_duration(words.next()?)?;
            Ok(EvalHeader {
                deprecated,
                expr: words.0.trim().to_string(),
                at,
                range: None,
            })
        }
        "range" => {
            words.expect("from")?;
            let start = parse_duration(words.next()?)?;
            words.expect("to")?;
            let end = parse_duration(words.next()?)?;
            words.expect("step")?;
            let step = parse_duration(words.next()?)?;
            if end < start {
                return Err("script error: end before start".into());
            }
            Ok(EvalHeader {
                deprecated,
                expr: words.0.trim().to_string(),
                at: start,
                range: Some((start, end, step)),
            })
        }
        _ => Err(format!("invalid eval kind {kind:?}")),
    }
}

struct WordSplitter<'a>(&'a str);

impl<'a> WordSplitter<'a> {
    fn next(&mut self) -> Result<&'a str, String> {
        let s = self.0.trim_start();
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        if end == 0 {
            return Err("unexpected end of eval line".into());
        }
        self.0 = &s[end..];
        Ok(&s[..end])
    }

    fn expect(&mut self, w: &str) -> Result<(), String> {
        let got = self.next()?;
        if got != w {
            return Err(format!("expected {w:?}, got {got:?}"));
        }
        Ok(())
    }
}

/// The values of a start-timestamp (`@st`) line: per position, the
/// signed offset from the sample's time to its start time, or `None`.
/// Items: `_`, `_xN` (N gaps), `<d>`, `<d>xN` (N+1 copies), `<d>+<e>xN`
/// and `<d>-<e>xN` (N+1 values stepping by `e`).
fn parse_st_offsets(s: &str) -> Result<Vec<Option<i64>>, String> {
    fn signed(d: &str) -> Result<i64, String> {
        parse_duration(d.strip_prefix('+').unwrap_or(d))
    }
    let mut out = Vec::new();
    for tok in s.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        let (body, n) = match tok.rsplit_once('x') {
            Some((b, n)) => (
                b,
                Some(
                    n.parse::<usize>()
                        .map_err(|_| format!("invalid @st item {tok:?}"))?,
                ),
            ),
            None => (tok, None),
        };
        if body == "_" {
            out.extend(std::iter::repeat_n(None, n.unwrap_or(1)));
            continue;
        }
        // The operator is the first sign after the first character.
        let op = body
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '+' || *c == '-')
            .map(|(i, _)| i);
        let (a, e) = match op {
            Some(i) => (signed(&body[..i])?, signed(&body[i..])?),
            None => (signed(body)?, 0),
        };
        let count = n.map_or(1, |n| n + 1);
        if count > 1_000_000 {
            return Err(format!("@st item {tok:?} is too long"));
        }
        let mut v = a;
        for _ in 0..count {
            out.push(Some(v));
            v = v.saturating_add(e);
        }
    }
    Ok(out)
}

/// Parses a Prometheus duration (`1h30m`, `10s53ms`, `0`, `-5m`) into ms.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    if body == "0" {
        return Ok(0);
    }
    let b = body.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    if b.is_empty() {
        return Err(format!("invalid duration {s:?}"));
    }
    while i < b.len() {
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if st == i {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: i64 = body[st..i]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &body[us..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(format!("invalid duration {s:?}")),
        };
        total = total
            .checked_add(n.checked_mul(mult).ok_or("duration overflow")?)
            .ok_or("duration overflow")?;
    }
    Ok(if neg { -total } else { total })
}

/// Parses a PromQL number literal (decimal, hex, Inf, NaN, signed).
fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let (neg, body) = if let Some(b) = s.strip_prefix('-') {
        (true, b)
    } else if let Some(b) = s.strip_prefix('+') {
        (false, b)
    } else {
        (false, s)
    };
    let lower = body.to_ascii_lowercase();
    let v = if lower == "inf" {
        f64::INFINITY
    } else if lower == "nan" {
        f64::NAN
    } else if let Some(h) = lower.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()? as f64
    } else {
        if body.is_empty()
            || !body
                .bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-' | b'_'))
        {
            return None;
        }
        body.replace('_', "").parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// A typed expected or loaded value: a float, or a histogram plus
/// whether its counter-reset hint was written explicitly.
#[derive(Debug, Clone)]
enum Tv {
    F(f64),
    H(FloatHistogram, bool),
}

fn tv_eq(want: &Tv, got: &Tv) -> bool {
    match (want, got) {
        (Tv::F(a), Tv::F(b)) => almost_equal(*a, *b),
        (Tv::H(a, explicit), Tv::H(b, _)) => {
            (!explicit || a.reset_hint == b.reset_hint)
                && crate::histogram::approx_eq(a, b, almost_equal)
        }
        _ => false,
    }
}

/// Expands value tokens including native histogram literals.
fn parse_typed_values(s: &str) -> Result<Vec<Option<Tv>>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            let end = rest.find("}}").ok_or("unterminated histogram")?;
            let (a, explicit) = parse_hist(&rest[2..end])?;
            rest = &rest[end + 2..];
            let mut inc: Option<(FloatHistogram, bool)> = None;
            for (sign, neg) in [("+{{", false), ("-{{", true)] {
                if let Some(r) = rest.strip_prefix(sign) {
                    let e = r.find("}}").ok_or("unterminated histogram")?;
                    inc = Some((parse_hist(&r[..e])?.0, neg));
                    rest = &r[e + 2..];
                    break;
                }
            }
            let mut n = 0usize;
            if let Some(r) = rest.strip_prefix('x') {
                let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
                n = digits
                    .parse()
                    .map_err(|_| format!("invalid histogram repetition in {s:?}"))?;
                rest = &r[digits.len()..];
            } else if inc.is_some() {
                return Err(format!("histogram expansion without count in {s:?}"));
            }
            let mut cur = a;
            out.push(Some(Tv::H(cur.clone(), explicit)));
            for _ in 0..n {
                if let Some((b, neg)) = &inc {
                    let r = if *neg {
                        crate::histogram::sub(&cur, b)
                    } else {
                        crate::histogram::add(&cur, b)
                    };
                    let hint = cur.reset_hint;
                    cur = r.map_err(|e| format!("histogram expansion: {e:?}"))?;
                    cur.reset_hint = hint;
                }
                out.push(Some(Tv::H(cur.clone(), explicit)));
            }
            rest = rest.trim_start();
            continue;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        for v in parse_values(&rest[..end])? {
            out.push(v.map(Tv::F));
        }
        rest = rest[end..].trim_start();
    }
    Ok(out)
}

/// Parses the inside of a `{{...}}` histogram literal.
fn parse_hist(body: &str) -> Result<(FloatHistogram, bool), String> {
    let mut h = FloatHistogram::default();
    let mut explicit = false;
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let (mut off, mut noff) = (0i32, 0i32);
    let mut rest = body.trim();
    let num = |v: &str| parse_number(v).ok_or_else(|| format!("invalid number {v:?} in histogram"));
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("invalid histogram {body:?}"))?;
        let key = rest[..colon].trim();
        rest = rest[colon + 1..].trim_start();
        let val;
        if rest.starts_with('[') {
            let e = rest
                .find(']')
                .ok_or_else(|| format!("invalid histogram {body:?}"))?;
            val = &rest[1..e];
            rest = rest[e + 1..].trim_start();
        } else {
            let e = rest.find(char::is_whitespace).unwrap_or(rest.len());
            val = &rest[..e];
            rest = rest[e..].trim_start();
        }
        let list =
            |v: &str| -> Result<Vec<f64>, String> { v.split_whitespace().map(num).collect() };
        match key {
            "schema" => h.schema = val.parse().map_err(|_| format!("invalid schema {val:?}"))?,
            "count" => h.count = num(val)?,
            "sum" => h.sum = num(val)?,
            "z_bucket" => h.zero_count = num(val)?,
            "z_bucket_w" => h.zero_threshold = num(val)?,
            "buckets" => pos = list(val)?,
            "n_buckets" => neg = list(val)?,
            "offset" => off = val.parse().map_err(|_| format!("invalid offset {val:?}"))?,
            "n_offset" => noff = val.parse().map_err(|_| format!("invalid offset {val:?}"))?,
            "custom_values" => h.custom_values = list(val)?,
            "counter_reset_hint" => {
                explicit = true;
                h.reset_hint = match val {
                    "unknown" => reset_hint::UNKNOWN,
                    "reset" => reset_hint::RESET,
                    "not_reset" => reset_hint::NOT_RESET,
                    "gauge" => reset_hint::GAUGE,
                    _ => return Err(format!("invalid counter_reset_hint {val:?}")),
                };
            }
            _ => return Err(format!("unknown histogram field {key:?}")),
        }
    }
    if !pos.is_empty() {
        h.positive_spans = vec![BucketSpan {
            offset: off,
            length: pos.len() as u32,
        }];
        h.positive_buckets = pos;
    }
    if !neg.is_empty() {
        h.negative_spans = vec![BucketSpan {
            offset: noff,
            length: neg.len() as u32,
        }];
        h.negative_buckets = neg;
    }
    Ok((h, explicit))
}

/// Builds custom-bucket histograms (NHCB) from classic histogram series
/// (`X_bucket{le}`, `X_count`, `X_sum`), one per timestamp.
fn nhcb_series(series: &[(Labels, Vec<(i64, f64)>)]) -> Vec<(Labels, Vec<(i64, FloatHistogram)>)> {
    use std::collections::BTreeMap;
    // base labels -> (le -> samples, count samples, sum samples)
    type Parts<'a> = (
        Vec<(f64, &'a [(i64, f64)])>,
        Option<&'a [(i64, f64)]>,
        Option<&'a [(i64, f64)]>,
    );
    let mut groups: BTreeMap<Labels, Parts<'_>> = BTreeMap::new();
    for (l, samples) in series {
        let name = l.get("__name__").unwrap_or("");
        let (base, kind) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, 0)
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, 1)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, 2)
        } else {
            continue;
        };
        let mut b = l.filter_names(&["le"], false).builder();
        b.set("__name__", base.to_string());
        let key = b.build();
        let e = groups.entry(key).or_insert((Vec::new(), None, None));
        match kind {
            0 => {
                let Some(le) = l.get("le").and_then(crate::functions::parse_go_float) else {
                    continue;
                };
                if le.is_nan() {
                    continue;
                }
                e.0.push((le, samples));
            }
            1 => e.1 = Some(samples),
            _ => e.2 = Some(samples),
        }
    }
    let mut out = Vec::new();
    for (labels, (mut buckets, count, sum)) in groups {
        if buckets.is_empty() {
            continue;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        // One bucket per bound (`le="0.2"` and `le="2e-1"` are the same).
        buckets.dedup_by(|a, b| a.0 == b.0);
        let mut ts: Vec<i64> = buckets
            .iter()
            .flat_map(|b| b.1.iter().map(|p| p.0))
            .collect();
        ts.sort_unstable();
        ts.dedup();
        let at = |s: &[(i64, f64)], t: i64| s.iter().find(|p| p.0 == t).map(|p| p.1);
        let bounds: Vec<f64> = buckets
            .iter()
            .map(|b| b.0)
            .filter(|b| b.is_finite())
            .collect();
        let mut hs = Vec::new();
        for t in ts {
            let mut prev = 0.0;
            let mut counts = Vec::with_capacity(buckets.len());
            let mut ok = true;
            for b in &buckets {
                let Some(c) = at(b.1, t) else {
                    ok = false;
                    break;
                };
                if is_stale_nan(c) {
                    ok = false;
                    break;
                }
                counts.push(c - prev);
                prev = c;
            }
            if !ok {
                continue;
            }
            if buckets.last().is_some_and(|b| b.0.is_finite()) {
                counts.push(0.0);
            }
            let mut h = FloatHistogram {
                schema: CUSTOM_BUCKETS_SCHEMA,
                count: count.and_then(|c| at(c, t)).unwrap_or(prev),
                sum: sum.and_then(|s| at(s, t)).unwrap_or(0.0),
                custom_values: bounds.clone(),
                ..Default::default()
            };
            h.positive_spans = vec![BucketSpan {
                offset: 0,
                length: counts.len() as u32,
            }];
            h.positive_buckets = counts;
            hs.push((t, crate::histogram::compact(&h)));
        }
        out.push((labels, hs));
    }
    out
}

/// Expands value tokens: `None` is a gap.
fn parse_values(s: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in s.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if tok == "stale" {
            out.push(Some(stale_nan()));
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("invalid token {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        // `AxN` expansions win over hex literals (`0x59` is 0 repeated).
        let expansion = tok
            .rsplit_once('x')
            .and_then(|(l, n)| Some((l, n.parse::<usize>().ok()?)))
            .filter(|(l, _)| !l.is_empty());
        let Some((lhs, n)) = expansion else {
            match parse_number(tok) {
                Some(v) => {
                    out.push(Some(v));
                    continue;
                }
                None => return Err(format!("invalid token {tok:?}")),
            }
        };
        // Split `A+B` / `A-B` at a sign that is not the leading sign and
        // does not follow an exponent marker.
        let lb = lhs.as_bytes();
        let mut split = None;
        for i in 1..lb.len() {
            if (lb[i] == b'+' || lb[i] == b'-') && !matches!(lb[i - 1], b'e' | b'E') {
                split = Some(i);
            }
        }
        match split {
            None => {
                let a = if lhs == "stale" {
                    stale_nan()
                } else {
                    parse_number(lhs).ok_or_else(|| format!("invalid token {tok:?}"))?
                };
                out.extend(std::iter::repeat_n(Some(a), n + 1));
            }
            Some(i) => {
                let a = parse_number(&lhs[..i]).ok_or_else(|| format!("invalid token {tok:?}"))?;
                let b =
                    parse_number(&lhs[i + 1..]).ok_or_else(|| format!("invalid token {tok:?}"))?;
                let neg = lb[i] == b'-';
                let mut cur = a;
                out.push(Some(cur));
                for _ in 0..n {
                    if neg {
                        cur -= b;
                    } else {
                        cur += b;
                    }
                    out.push(Some(cur));
                }
            }
        }
    }
    Ok(out)
}

/// Parses `name{l="v", ...}` at the start of `s`; returns the labels, the
/// rest of the line, and whether the descriptor carried `@st`.
///
/// (See [`parse_st_offsets`] for the values of an `@st` line.)
fn parse_series_desc(s: &str) -> Result<(Labels, &str, bool), String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut pairs: Vec<(String, String)> = Vec::new();
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if i > 0 {
        pairs.push(("__name__".into(), s[..i].to_string()));
    }
    if i < b.len() && b[i] == b'{' {
        i += 1;
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if i >= b.len() {
                return Err(format!("unterminated label set in {s:?}"));
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            // Label name: identifier or quoted string.
            let name = if b[i] == b'"' || b[i] == b'\'' || b[i] == b'`' {
                let (v, ni) = read_quoted(s, i)?;
                i = ni;
                v
            } else {
                let st = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if st == i {
                    return Err(format!("invalid label set in {s:?}"));
                }
                s[st..i].to_string()
            };
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i >= b.len() || b[i] != b'=' {
                // A bare quoted string is a metric name (`{"a.b"}`).
                pairs.push(("__name__".into(), name));
            } else {
                i += 1;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                let (v, ni) = read_quoted(s, i)?;
                i = ni;
                pairs.push((name, v));
            }
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i < b.len() && b[i] == b',' {
                i += 1;
            }
        }
    }
    if i == 0 {
        return Err(format!("invalid series descriptor {s:?}"));
    }
    let mut st_line = false;
    let mut rest = &s[i..];
    if let Some(r) = rest.strip_prefix("@st") {
        st_line = true;
        rest = r;
    }
    let labels = Labels::try_from_pairs(pairs).map_err(|e| format!("{e}"))?;
    Ok((labels, rest.trim(), st_line))
}

/// Reads a quoted string starting at byte `i`; returns the unescaped text
/// and the index after the closing quote.
fn read_quoted(s: &str, i: usize) -> Result<(String, usize), String> {
    let b = s.as_bytes();
    let q = *b.get(i).ok_or("expected string")?;
    if q != b'"' && q != b'\'' && q != b'`' {
        return Err(format!("expected quoted string in {s:?}"));
    }
    let mut j = i + 1;
    let mut raw = Vec::new();
    while j < b.len() && b[j] != q {
        if b[j] == b'\\' && q != b'`' && j + 1 < b.len() {
            raw.push(b[j]);
            j += 1;
        }
        raw.push(b[j]);
        j += 1;
    }
    if j >= b.len() {
        return Err(format!("unterminated string in {s:?}"));
    }
    let raw = String::from_utf8_lossy(&raw).to_string();
    let v = if q == b'`' { raw } else { unescape(&raw)? };
    Ok((v, j + 1))
}

/// Go-style string unescaping.
fn unescape(s: &str) -> Result<String, String> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        let c = *b.get(i).ok_or("bad escape")?;
        i += 1;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'"' | b'\'' => out.push(c),
            b'x' => {
                let h = s.get(i..i + 2).ok_or("bad \\x escape")?;
                out.push(u8::from_str_radix(h, 16).map_err(|_| "bad \\x escape")?);
                i += 2;
            }
            b'u' | b'U' => {
                let len = if c == b'u' { 4 } else { 8 };
                let h = s.get(i..i + len).ok_or("bad \\u escape")?;
                let cp = u32::from_str_radix(h, 16).map_err(|_| "bad \\u escape")?;
                let ch = char::from_u32(cp).ok_or("bad \\u escape")?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += len;
            }
            b'0'..=b'7' => {
                let h = s.get(i - 1..i + 2).ok_or("bad octal escape")?;
                out.push(u8::from_str_radix(h, 8).map_err(|_| "bad octal escape")?);
                i += 2;
            }
            _ => return Err(format!("unknown escape \\{}", c as char)),
        }
    }
    Ok(String::from_utf8_lossy(&out).to_string())
}

/// Parses `"text"` or `` `text` `` of an `expect string` line.
fn unquote(s: &str) -> Result<String, String> {
    let (v, end) = read_quoted(s, 0)?;
    if end != s.len() {
        return Err(format!("trailing text after string {s:?}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn st_offsets() {
        let v = parse_st_offsets("_ _x2 -30s-1mx2 1ms +1m -0msx1").unwrap();
        assert_eq!(
            v,
            vec![
                None,
                None,
                None,
                Some(-30_000),
                Some(-90_000),
                Some(-150_000),
                Some(1),
                Some(60_000),
                Some(0),
                Some(0)
            ]
        );
        assert!(parse_st_offsets("1q").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("10s53ms").unwrap(), 10_053);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("-1m").unwrap(), -60_000);
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn value_tokens() {
        let v = parse_values("0+1x3 _ _x2 5x1 1-2x2 stale 0x1F -Inf").unwrap();
        let f: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
        assert_eq!(
            f,
            [
                "Some(0.0)",
                "Some(1.0)",
                "Some(2.0)",
                "Some(3.0)",
                "None",
                "None",
                "None",
                "Some(5.0)",
                "Some(5.0)",
                "Some(1.0)",
                "Some(-1.0)",
                "Some(-3.0)",
                "Some(NaN)",
                "Some(31.0)",
                "Some(-inf)"
            ]
        );
        assert!(is_stale_nan(v[12].unwrap()));
    }

    #[test]
    fn series_descriptors() {
        let (l, rest, st) = parse_series_desc(r#"foo{a="b", c="d\"e"} 1 2"#).unwrap();
        assert_eq!(l.get("__name__"), Some("foo"));
        assert_eq!(l.get("c"), Some("d\"e"));
        assert_eq!(rest, "1 2");
        assert!(!st);
        let (l, rest, _) = parse_series_desc("{} 3").unwrap();
        assert!(l.is_empty());
        assert_eq!(rest, "3");
    }
}
