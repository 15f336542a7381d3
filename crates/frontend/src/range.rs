//! `/api/v1/query_range`: split by interval, answer from the results
//! cache what it holds, fetch the rest through the tenant's queue, merge.
//!
//! A query the frontend cannot split safely (unparsable parameters or
//! expression, `@ start()`/`@ end()`, `range()`, a `limit` or `stats`
//! parameter, over 11,000 steps) is forwarded whole, so the querier gives
//! its own answer or error.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::cache::{Extent, Key, plan as plan_gaps};
use crate::matrix::{Matrix, RangeResult, encode_range, parse_range};
use crate::split::{Piece, align_down, format_time, split, splittable};
use crate::{AppState, answer_response, downstream, forwarded_headers};

/// Prometheus' limit of points per series of a range query.
const MAX_POINTS: i128 = 11_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A range query the frontend splits.
#[derive(Debug)]
struct Plan {
    /// Parameters other than start/end/step, in request order (body
    /// first, as the querier reads them).
    rest: Vec<(String, String)>,
    start: i64,
    end: i64,
    step: i64,
    /// Cache key text: the parameters that change the result.
    key: String,
}

/// The request's parameters: form body first, then the URL query.
fn params(parts: &Parts, body: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if parts.method == Method::POST && form {
        out.extend(form_urlencoded::parse(body).into_owned());
    }
    if let Some(q) = parts.uri.query() {
        out.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    out
}

impl Plan {
    fn new(p: Vec<(String, String)>, align: bool) -> Option<Plan> {
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("limit").is_some() || get("stats").is_some() {
            return None;
        }
        let text = get("query")?;
        let expr = stratus_promql::parse(text).ok()?;
        if !splittable(&expr) {
            return None;
        }
        let mut start = stratus_api::parse_time(get("start")?).ok()?;
        let mut end = stratus_api::parse_time(get("end")?).ok()?;
        let step_ns = stratus_api::parse_duration(get("step")?).ok()?;
        let step = i64::try_from(step_ns / 1_000_000).ok()?;
        if step <= 0 || end < start {
            return None;
        }
        if (i128::from(end) - i128::from(start)) * 1_000_000 / step_ns > MAX_POINTS {
            return None;
        }
        if align {
            start = align_down(start, step);
            end = align_down(end, step);
        }
        let rest: Vec<(String, String)> = p
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "start" | "end" | "step"))
            .cloned()
            .collect();
        // The first value of each parameter counts, as for the querier.
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (k, v) in &rest {
            if k != "timeout" && !seen.iter().any(|(n, _)| n == k) {
                seen.push((k, v));
            }
        }
        seen.sort();
        let key = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(seen)
            .finish();
        Some(Plan {
            rest,
            start,
            end,
            step,
            key,
        })
    }

    /// The sub-request for the steps `a..=b`.
    fn request(
        &self,
        prefix: &str,
        headers: &axum::http::HeaderMap,
        a: i64,
        b: i64,
    ) -> downstream::Request {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.rest.iter())
            .append_pair("start", &format_time(a))
            .append_pair("end", &format_time(b))
            .append_pair("step", &format_time(self.step))
            .finish();
        let mut h = forwarded_headers(headers, false);
        h.push((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        ));
        downstream::Request {
            method: Method::POST,
            path_and_query: format!("{prefix}/api/v1/query_range"),
            headers: h,
            body: Bytes::from(body),
        }
    }
}

/// What one piece needs.
#[derive(Debug)]
struct Work {
    piece: Piece,
    key: Option<Key>,
    cached: Option<Extent>,
    gaps: Vec<(i64, i64)>,
    /// The extent cached + fetched cover together.
    combined: Option<(i64, i64)>,
}

pub(crate) async fn query_range(
    st: &AppState,
    prefix: &str,
    parts: &Parts,
    body: Bytes,
) -> Response {
    st.metrics.queries.inc();
    let t = st.tenant_key(&parts.headers);
    let interval = i64::try_from(st.settings.split_interval.as_millis()).unwrap_or(i64::MAX);
    let plan_opt = if interval > 0 {
        Plan::new(params(parts, &body), st.settings.align_to_step)
    } else {
        None
    };
    let Some(plan) = plan_opt else {
        return crate::pass_through(st, &t, parts, body).await;
    };
    let Some(pieces) = split(plan.start, plan.end, plan.step, interval, 11_001) else {
        return crate::pass_through(st, &t, parts, body).await;
    };
    let cache = st.cache.as_ref().filter(|_| t.known);
    let offset = plan.start.rem_euclid(plan.step);
    let mut work = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let key = cache.map(|_| Key {
            tenant: t.key.clone(),
            query: plan.key.clone(),
            step: plan.step,
            offset,
            interval_start: piece.interval_start,
        });
        let cached = match (cache, &key) {
            (Some(c), Some(k)) => c.get(k),
            _ => None,
        };
        let (gaps, combined) = plan_gaps(piece.start, piece.end, plan.step, cached.as_ref());
        if cache.is_some() {
            match (gaps.is_empty(), combined.is_some()) {
                (true, _) => st.metrics.cache_hits.inc(),
                (false, true) => st.metrics.cache_partial_hits.inc(),
                (false, false) => st.metrics.cache_misses.inc(),
            };
        }
        work.push(Work {
            piece,
            key,
            cached: if combined.is_some() { cached } else { None },
            gaps,
            combined,
        });
    }
    // Fetch every gap, at most `split_concurrency` at once.
    let fetches: Vec<(usize, i64, i64)> = work
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.gaps.iter().map(move |&(a, b)| (i, a, b)))
        .collect();
    if fetches.is_empty() {
        if let Err(r) = st.recheck_auth(&t, prefix, &parts.headers).await {
            return r;
        }
    }
    st.metrics.split_queries.inc_by(fetches.len() as u64);
    let results: Result<Vec<(usize, RangeResult)>, Response> =
        futures::stream::iter(fetches.into_iter().map(|(i, a, b)| {
            let req = plan.request(prefix, &parts.headers, a, b);
            let t = &t;
            async move {
                let ans = st.send(t, req).await?;
                if ans.status != 200 {
                    return Err(answer_response(ans));
                }
                match parse_range(&ans.body) {
                    Ok(r) => Ok((i, r)),
                    Err(e) => Err(crate::error_json(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        &format!("downstream range query answer: {e}"),
                    )),
                }
            }
        }))
        .buffer_unordered(st.settings.split_concurrency.max(1))
        .try_collect()
        .await;
    let results = match results {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut fetched: Vec<Vec<RangeResult>> = (0..work.len()).map(|_| Vec::new()).collect();
    for (i, r) in results {
        if let Some(slot) = fetched.get_mut(i) {
            slot.push(r);
        }
    }
    let cutoff = now_ms().saturating_sub(
        i64::try_from(st.settings.max_cache_freshness.as_millis()).unwrap_or(i64::MAX),
    );
    let mut out = RangeResult::default();
    for (w, got) in work.into_iter().zip(fetched) {
        let (mut data, mut infos) = w.cached.map(|e| (e.data, e.infos)).unwrap_or_default();
        let mut clean = true;
        for r in got {
            clean &= r.warnings.is_empty();
            for i in &r.infos {
                if !infos.contains(i) {
                    infos.push(i.clone());
                }
            }
            out.merge(RangeResult {
                matrix: Matrix::default(),
                warnings: r.warnings,
                infos: Vec::new(),
            });
            data.merge(r.matrix);
        }
        out.merge(RangeResult {
            matrix: Matrix::default(),
            warnings: Vec::new(),
            infos: infos.clone(),
        });
        out.matrix.merge(data.window(w.piece.start, w.piece.end));
        if let (Some(c), Some(k), true) = (cache, w.key, clean) {
            let (s, e) = w.combined.unwrap_or((w.piece.start, w.piece.end));
            // Only steps older than the freshness cutoff are kept.
            let e = if e > cutoff {
                s + (cutoff - s).div_euclid(plan.step) * plan.step
            } else {
                e
            };
            if e >= s {
                c.put(
                    k,
                    Extent {
                        start: s,
                        end: e,
                        data: data.window(s, e),
                        infos,
                    },
                );
            }
        }
    }
    (
        [(
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        )],
        encode_range(&out),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        let (p, _) = axum::http::Request::builder()
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts();
        p
    }

    #[test]
    fn plans_and_keys() {
        let p =
            parts("/api/v1/query_range?query=rate(x[5m])&start=100&end=200.5&step=15&timeout=10s");
        let plan = Plan::new(params(&p, b""), false).unwrap();
        assert_eq!(
            (plan.start, plan.end, plan.step),
            (100_000, 200_500, 15_000)
        );
        assert_eq!(plan.key, "query=rate%28x%5B5m%5D%29");
        // Aligned to the step when asked.
        let plan = Plan::new(params(&p, b""), true).unwrap();
        assert_eq!((plan.start, plan.end), (90_000, 195_000));
        // The lookback changes the result, so the key.
        let p2 = parts(
            "/api/v1/query_range?query=rate(x[5m])&start=100&end=200&step=15&lookback_delta=1m",
        );
        assert_ne!(Plan::new(params(&p2, b""), false).unwrap().key, plan.key);
        // Sent whole: unparsable, @ start(), limit, too many points, bad times.
        for q in [
            "query=rate(x[5m]&start=1&end=2&step=1",
            "query=x%20%40%20start()&start=1&end=2&step=1",
            "query=x&start=1&end=2&step=1&limit=5",
            "query=x&start=0&end=100000&step=1",
            "query=x&start=5&end=2&step=1",
            "query=x&start=1&end=2&step=0",
            "query=x&start=a&end=2&step=1",
        ] {
            let p = parts(&format!("/api/v1/query_range?{q}"));
            assert!(Plan::new(params(&p, b""), false).is_none(), "{q}");
        }
        // Sub-requests carry everything but the times, which are exact.
        let p = parts("/api/v1/query_range?query=up&start=1&end=2&step=0.5&timeout=3s");
        let plan = Plan::new(params(&p, b""), false).unwrap();
        let r = plan.request("/prometheus", &axum::http::HeaderMap::new(), 1_500, 2_000);
        assert_eq!(r.path_and_query, "/prometheus/api/v1/query_range");
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            "query=up&timeout=3s&start=1.500&end=2&step=0.500"
        );
    }
}
