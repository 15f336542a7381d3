//! `/api/v1/targets` rendering: the JSON Prometheus returns (activeTargets
//! with discoveredLabels, labels, scrapePool, scrapeUrl, globalUrl,
//! lastError, lastScrape, lastScrapeDuration, health, scrapeInterval,
//! scrapeTimeout; droppedTargets), from a [`TargetsSnapshot`]. The HTTP
//! route itself lives with the agent's server.

use serde_json::{Map, Value, json};
use stratus_model::Labels;

use crate::config::PromDuration;
use crate::scrape::TargetsSnapshot;

fn labels_json(l: &Labels, public_only: bool) -> Value {
    let mut m = Map::new();
    for x in l.iter() {
        if public_only && x.name.starts_with("__") {
            continue;
        }
        m.insert(x.name.to_string(), Value::String(x.value.to_string()));
    }
    Value::Object(m)
}

/// The URL with a loopback host replaced by this machine's host name, as
/// Prometheus' `globalUrl`.
fn global_url(url: &str, hostname: &str) -> String {
    for lo in ["//localhost", "//127.0.0.1", "//[::1]"] {
        if let Some(i) = url.find(lo) {
            let end = i + lo.len();
            if matches!(url.as_bytes().get(end), Some(b':') | Some(b'/') | None) {
                return format!("{}//{}{}", &url[..i], hostname, &url[end..]);
            }
        }
    }
    url.to_string()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Renders the targets API response. `state` filters as Prometheus'
/// `?state=` parameter: `active`, `dropped`, or anything else for both.
pub fn targets_json(snap: &TargetsSnapshot, state: Option<&str>) -> Value {
    let host = hostname();
    let want_active = !matches!(state, Some("dropped"));
    let want_dropped = !matches!(state, Some("active"));
    let active: Vec<Value> = if want_active {
        snap.active
            .iter()
            .map(|a| {
                let s = &a.status;
                let last = s.last_scrape.map_or_else(
                    || "0001-01-01T00:00:00Z".to_string(),
                    |t| humantime::format_rfc3339_nanos(t).to_string(),
                );
                json!({
                    "discoveredLabels": labels_json(&a.target.discovered_labels, false),
                    "labels": labels_json(&a.target.labels, true),
                    "scrapePool": a.scrape_pool,
                    "scrapeUrl": a.target.url,
                    "globalUrl": global_url(&a.target.url, &host),
                    "lastError": s.last_error,
                    "lastScrape": last,
                    "lastScrapeDuration": s.last_scrape_duration.as_secs_f64(),
                    "health": s.health.as_str(),
                    "scrapeInterval": PromDuration(a.target.interval).to_string(),
                    "scrapeTimeout": PromDuration(a.target.timeout).to_string(),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let dropped: Vec<Value> = if want_dropped {
        snap.dropped
            .iter()
            .map(|d| json!({ "discoveredLabels": labels_json(&d.discovered_labels, false) }))
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "status": "success",
        "data": { "activeTargets": active, "droppedTargets": dropped },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::{ActiveTarget, DroppedTarget, Health, Target, TargetStatus};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn renders_like_prometheus() {
        let snap = TargetsSnapshot {
            active: vec![ActiveTarget {
                scrape_pool: "node".into(),
                target: Target {
                    discovered_labels: Labels::from_pairs([
                        ("__address__", "localhost:9100"),
                        ("__meta_x", "y"),
                    ]),
                    labels: Labels::from_pairs([
                        ("__address__", "localhost:9100"),
                        ("instance", "localhost:9100"),
                        ("job", "node"),
                    ]),
                    url: "http://localhost:9100/metrics".into(),
                    interval: Duration::from_secs(15),
                    timeout: Duration::from_secs(10),
                },
                status: TargetStatus {
                    health: Health::Up,
                    last_error: String::new(),
                    last_scrape: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
                    last_scrape_duration: Duration::from_millis(1500),
                    last_samples: 3,
                },
            }],
            dropped: vec![DroppedTarget {
                scrape_pool: "node".into(),
                discovered_labels: Labels::from_pairs([("__address__", "x:1")]),
            }],
        };
        let v = targets_json(&snap, None);
        let a = &v["data"]["activeTargets"][0];
        assert_eq!(
            a["labels"],
            json!({"instance": "localhost:9100", "job": "node"})
        );
        assert_eq!(a["discoveredLabels"]["__meta_x"], "y");
        assert_eq!(a["health"], "up");
        assert_eq!(a["scrapeInterval"], "15s");
        assert_eq!(a["scrapeTimeout"], "10s");
        assert_eq!(a["lastScrape"], "2023-11-14T22:13:20.123000000Z");
        assert_eq!(a["lastScrapeDuration"], 1.5);
        assert!(!a["globalUrl"].as_str().unwrap().contains("//localhost:"));
        assert_eq!(
            v["data"]["droppedTargets"][0]["discoveredLabels"]["__address__"],
            "x:1"
        );
        let v = targets_json(&snap, Some("active"));
        assert_eq!(v["data"]["droppedTargets"], json!([]));
        assert_eq!(global_url("http://127.0.0.1:1/m", "h"), "http://h:1/m");
        assert_eq!(
            global_url("http://localhostx:1/m", "h"),
            "http://localhostx:1/m"
        );
    }
}
