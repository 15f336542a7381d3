//! Query load: a dashboard-style set of PromQL range queries over the
//! workload's metrics, run by concurrent clients for a fixed time.

use std::time::{Duration, Instant};

use crate::{Auth, Report, Stats, failure_cause};

/// The dashboard set: what a Grafana node/service dashboard asks for.
pub fn dashboard_queries() -> Vec<String> {
    [
        "sum(rate(bench_counter_1_total[5m]))",
        "sum by (instance) (rate(bench_counter_1_total[5m]))",
        "topk(10, rate(bench_counter_3_total[5m]))",
        "histogram_quantile(0.99, sum by (le) (rate(bench_request_duration_seconds_bucket[5m])))",
        "avg_over_time(bench_gauge_2[10m])",
        "count by (zone) (bench_gauge_2)",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Where and what to query.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Prometheus API base URL, e.g. `http://127.0.0.1:9009/prometheus`.
    pub base_url: String,
    /// Tenant header / token.
    pub auth: Auth,
    /// Concurrent clients.
    pub concurrency: usize,
    /// How long to run.
    pub duration: Duration,
    /// Range of each query, ending at `end_s`.
    pub range: Duration,
    /// Step of each query.
    pub step: Duration,
    /// End of the queried range (Unix seconds).
    pub end_s: f64,
    /// The queries, run round robin.
    pub queries: Vec<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Runs the query load; returns the overall report and per-query ones.
pub async fn run(cfg: QueryConfig) -> (Report, Vec<(String, Report)>) {
    let client = crate::http_client();
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let nq = cfg.queries.len().max(1);
    let mut tasks = Vec::new();
    for worker in 0..cfg.concurrency.max(1) {
        let (client, cfg) = (client.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let mut per: Vec<Stats> = vec![Stats::default(); nq];
            let mut i = worker;
            while Instant::now() < deadline && !cfg.queries.is_empty() {
                let q = i % nq;
                i += 1;
                let params = [
                    ("query", cfg.queries[q].clone()),
                    (
                        "start",
                        format!("{:.3}", cfg.end_s - cfg.range.as_secs_f64()),
                    ),
                    ("end", format!("{:.3}", cfg.end_s)),
                    ("step", format!("{}", cfg.step.as_secs_f64())),
                ];
                let rb = client
                    .post(format!("{}/api/v1/query_range", cfg.base_url))
                    .form(&params)
                    .timeout(cfg.timeout);
                let t0 = Instant::now();
                let r = cfg.auth.apply(rb).send().await;
                let st = &mut per[q];
                match r {
                    Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                        Ok(b) if b.starts_with(br#"{"status":"success""#) => st.ok += 1,
                        Ok(_) => *st.errors.entry("bad body".into()).or_default() += 1,
                        Err(e) => *st.errors.entry(failure_cause(&e)).or_default() += 1,
                    },
                    Ok(resp) => {
                        *st.errors
                            .entry(format!("HTTP {}", resp.status().as_u16()))
                            .or_default() += 1;
                    }
                    Err(e) => *st.errors.entry(failure_cause(&e)).or_default() += 1,
                }
                st.latencies.push(t0.elapsed());
            }
            per
        }));
    }
    let mut per: Vec<Stats> = vec![Stats::default(); nq];
    for t in tasks {
        if let Ok(p) = t.await {
            for (a, b) in per.iter_mut().zip(p) {
                a.merge(b);
            }
        }
    }
    let elapsed = start.elapsed();
    let mut all = Stats::default();
    let mut reports = Vec::new();
    for (q, s) in cfg.queries.iter().zip(per) {
        all.merge(s.clone());
        reports.push((q.clone(), Report::new("query", elapsed, s)));
    }
    (Report::new("query", elapsed, all), reports)
}
