//! Status, stub and admin endpoints of the Prometheus HTTP API v1:
//!
//! - `/api/v1/status/config` (a short YAML of the effective settings),
//!   `/status/flags`, `/status/runtimeinfo`, `/status/walreplay`,
//!   `/status/tsdb` (the tenant's head cardinality, `limit` 1..=10000,
//!   default 10);
//! - what Prometheus answers with nothing configured, so Grafana and
//!   promtool do not error: `/targets`, `/targets/metadata`, `/rules`,
//!   `/alerts`, `/alertmanagers`;
//! - admin (only with `enable_admin_api`, otherwise 503 `unavailable` as
//!   Prometheus without `--web.enable-admin-api`): `delete_series`
//!   (tombstones through [`stratus_tsdb::Db::delete`], 204),
//!   `clean_tombstones` (204), `snapshot` (501: blocks live in the bucket,
//!   which is where snapshots belong).
//!
//! Everything is tenant-scoped through [`AppState::tenant`].

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use stratus_tsdb::{HeadStats, StatEntry};

use crate::read::{ApiError, Params, parse_matches, parse_range, success};
use crate::server::AppState;

/// When the first server of this process started.
static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Records the start time (the first call wins).
pub(crate) fn mark_started() {
    let _ = STARTED.get_or_init(SystemTime::now);
}

fn started() -> SystemTime {
    *STARTED.get_or_init(SystemTime::now)
}

/// Largest accepted `limit` of `/status/tsdb` (as Prometheus).
const MAX_TSDB_LIMIT: usize = 10_000;

/// An error envelope with any status and error type.
fn error(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response {
    let body = json!({"status": "error", "errorType": kind, "error": msg.into()});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A time as RFC 3339 in UTC with nanoseconds, as Go marshals `time.Time`
/// (trailing zeros of the fraction dropped).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let (y, mo, da) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let mut s = format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// A duration as Prometheus prints one (`15d`, `1h30m`, `0s`).
pub(crate) fn prom_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("y", 365 * 86_400_000u64),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

fn retention_str(st: &AppState) -> String {
    st.cfg
        .retention
        .map_or_else(|| "forever".to_string(), prom_duration)
}

/// Every config key as its flag name (`query_timeout` → `query-timeout`)
/// with its effective value, as the command line names them.
fn flags(st: &AppState) -> Vec<(String, String)> {
    let v = serde_json::to_value(&st.cfg).unwrap_or(Value::Null);
    let Value::Object(m) = v else {
        return Vec::new();
    };
    m.into_iter()
        .map(|(k, v)| {
            let val = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k.replace('_', "-"), val)
        })
        .collect()
}

/// `GET /api/v1/status/config`: `{"yaml": "..."}`, the same YAML as
/// `/config` and `--print-config`.
pub(crate) async fn config(State(st): State<Arc<AppState>>) -> Response {
    success(json!({ "yaml": st.cfg.to_yaml() }), &[])
}

/// `GET /api/v1/status/flags`.
pub(crate) async fn flags_handler(State(st): State<Arc<AppState>>) -> Response {
    let m: serde_json::Map<String, Value> = flags(&st)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    success(Value::Object(m), &[])
}

/// `GET /api/v1/status/runtimeinfo`.
pub(crate) async fn runtimeinfo(State(st): State<Arc<AppState>>) -> Response {
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let tasks = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let start = rfc3339(started());
    success(
        json!({
            "startTime": start,
            "CWD": cwd,
            "reloadConfigSuccess": true,
            "lastConfigTime": start,
            "corruptionCount": 0,
            "goroutineCount": tasks,
            "GOMAXPROCS": cores,
            "GOMEMLIMIT": i64::MAX,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": retention_str(&st),
        }),
        &[],
    )
}

/// `GET /api/v1/status/walreplay`: tenant WALs replay when a tenant
/// opens, so at the API level replay is always complete.
pub(crate) async fn walreplay() -> Response {
    success(json!({"min": 0, "max": 0, "current": 0}), &[])
}

fn entries(v: &[StatEntry]) -> Value {
    Value::Array(
        v.iter()
            .map(|e| json!({"name": e.name, "value": e.value}))
            .collect(),
    )
}

fn tsdb_json(s: &HeadStats) -> Value {
    json!({
        "headStats": {
            "numSeries": s.num_series,
            "numLabelPairs": s.num_label_pairs,
            "chunkCount": s.chunk_count,
            "minTime": s.min_time,
            "maxTime": s.max_time,
        },
        "seriesCountByMetricName": entries(&s.series_count_by_metric_name),
        "labelValueCountByLabelName": entries(&s.label_value_count_by_label_name),
        "memoryInBytesByLabelName": entries(&s.memory_in_bytes_by_label_name),
        "seriesCountByLabelValuePair": entries(&s.series_count_by_label_value_pair),
    })
}

/// `GET /api/v1/status/tsdb`: the tenant's head cardinality.
pub(crate) async fn tsdb(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    let limit = match p.get("limit") {
        None => 10,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 1 => match usize::try_from(n) {
                Ok(n) if n <= MAX_TSDB_LIMIT => n,
                _ => {
                    return ApiError::bad_data(format!("limit must not exceed {MAX_TSDB_LIMIT}"))
                        .into_response();
                }
            },
            _ => return ApiError::bad_data("limit must be a positive number").into_response(),
        },
    };
    let tenant = match st.tenant(&headers) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let db = match st.db_for_read(&tenant).await {
        Ok(db) => db,
        Err(e) => {
            return ApiError::internal(format!("opening tenant database: {e}")).into_response();
        }
    };
    let Some(db) = db else {
        let empty = HeadStats {
            min_time: i64::MAX,
            max_time: i64::MIN,
            ..HeadStats::default()
        };
        return success(tsdb_json(&empty), &[]);
    };
    match tokio::task::spawn_blocking(move || db.head_stats(limit)).await {
        Ok(Ok(s)) => success(tsdb_json(&s), &[]),
        Ok(Err(e)) => ApiError::internal(e.to_string()).into_response(),
        Err(e) => ApiError::internal(format!("stats task failed: {e}")).into_response(),
    }
}

/// `GET /api/v1/targets`: no scraping, so no targets.
pub(crate) async fn targets() -> Response {
    success(
        json!({"activeTargets": [], "droppedTargets": [], "droppedTargetCounts": {}}),
        &[],
    )
}

/// `GET /api/v1/targets/metadata`: no targets, no metadata.
pub(crate) async fn targets_metadata() -> Response {
    success(json!([]), &[])
}

/// `GET /api/v1/rules`: no rule groups (yet).
pub(crate) async fn rules() -> Response {
    success(json!({"groups": []}), &[])
}

/// `GET /api/v1/alerts`: no alerts (yet).
pub(crate) async fn alerts() -> Response {
    success(json!({"alerts": []}), &[])
}

/// `GET /api/v1/alertmanagers`: none configured.
pub(crate) async fn alertmanagers() -> Response {
    success(
        json!({"activeAlertmanagers": [], "droppedAlertmanagers": []}),
        &[],
    )
}

fn admin_disabled() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "admin APIs disabled",
    )
}

/// `POST|PUT /api/v1/admin/tsdb/delete_series`: `match[]` (required),
/// `start`, `end` (default: all time) → 204.
pub(crate) async fn delete_series(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    if !st.cfg.enable_admin_api {
        return admin_disabled();
    }
    let p = Params::parse(q.as_deref(), &headers, &body);
    let run = async {
        let sets = parse_matches(&p)?;
        if sets.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let (start, end) = parse_range(&p)?;
        let tenant = match st.tenant(&headers) {
            Ok(t) => t,
            Err(e) => return Ok(e.into_response()),
        };
        let db = st
            .db_for_read(&tenant)
            .await
            .map_err(|e| ApiError::internal(format!("opening tenant database: {e}")))?;
        if let Some(db) = db {
            for ms in &sets {
                db.delete(ms, start, end)
                    .await
                    .map_err(|e| ApiError::internal(format!("deleting series: {e}")))?;
            }
            tracing::info!(tenant = %tenant, start, end, selectors = sets.len(), "series deleted (tombstones)");
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST|PUT /api/v1/admin/tsdb/clean_tombstones` → 204.
pub(crate) async fn clean_tombstones(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    if !st.cfg.enable_admin_api {
        return admin_disabled();
    }
    let tenant = match st.tenant(&headers) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    match st.db_for_read(&tenant).await {
        Ok(Some(db)) => match db.clean_tombstones().await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => ApiError::internal(format!("cleaning tombstones: {e}")).into_response(),
        },
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::internal(format!("opening tenant database: {e}")).into_response(),
    }
}

/// `POST|PUT /api/v1/admin/tsdb/snapshot`: not offered (501).
pub(crate) async fn snapshot(State(st): State<Arc<AppState>>) -> Response {
    if !st.cfg.enable_admin_api {
        return admin_disabled();
    }
    error(
        StatusCode::NOT_IMPLEMENTED,
        "unavailable",
        "snapshots are not supported: Stratus keeps finished blocks in its bucket (data-dir/blocks or object storage) and never changes a published block, so copy or version the bucket instead; the head is in each tenant's WAL",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_nanos(1_435_781_451_781_000_000)),
            "2015-07-01T20:10:51.781Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(prom_duration(Duration::from_secs(15 * 86_400)), "2w1d");
        assert_eq!(prom_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(prom_duration(Duration::ZERO), "0s");
        assert_eq!(prom_duration(Duration::from_millis(1500)), "1s500ms");
    }
}
