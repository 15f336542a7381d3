#!/usr/bin/env bash
# Query-path benchmark: Stratus vs Prometheus 2.42 (Debian package, with the
# remote-write receiver) on the same data, one dashboard-style range query at
# a time.
#
# Usage: bench/query-compare.sh [quick|full]      (default quick)
#   quick:  10k series, 2h backfill at 15s (4.8M samples), 9 repetitions (≈4 min)
#   full:   100k series, 1h backfill at 15s (24M samples), 5 repetitions (≈15 min)
# Env: SERIES, SPAN, REPS, METRICS (metric names the series are spread over,
#      default 10: 1 histogram family, 5 counters, 4 gauges), RANGE (seconds,
#      default 3600), STEP (seconds, default 30), QUERIES (file, one query a
#      line, default the built-in set below), STRATUS_BIN (default
#      target/release/stratus, built when missing), WORK, KEEP=1 (keep WORK),
#      LOAD=0 with END=<the earlier run's $WORK/end> and KEEP=1: reuse the data
#      an earlier KEEP=1 run left in WORK (both servers replay their WAL)
#      instead of pushing it again, e.g. to compare two Stratus builds.
#
# Both servers are started side by side in fresh data dirs and fed the
# identical workload by `stratus bench write` (backfill mode, oldest first).
# Then, REPS times over, every query of the set is run as a range query
# (RANGE wide, STEP apart, ending 8 s before the newest sample: evaluation
# times are off the 15 s sample grid, where Prometheus 2.x's closed range
# windows and 3.x's left-open ones select the same samples) against
# Prometheus, then against Stratus. The first answers of both are compared
# (same series, same timestamps, values within 1e-9 relative); then per
# query:
#   prom ms / stratus ms   median wall time of the HTTP request (body read)
#   ratio                  stratus / prometheus (< 1: Stratus faster; the
#                          issue's target is <= 0.5)
# and per server the peak RSS of the query phase (VmHWM after resetting it
# through /proc/PID/clear_refs once the data is loaded).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
preset="${1:-quick}"
case "$preset" in
  quick) SERIES="${SERIES:-10000}" SPAN="${SPAN:-2h}" REPS="${REPS:-9}" ;;
  full)  SERIES="${SERIES:-100000}" SPAN="${SPAN:-1h}" REPS="${REPS:-5}" ;;
  *) echo "usage: $0 [quick|full]" >&2; exit 2 ;;
esac
METRICS="${METRICS:-10}"
RANGE="${RANGE:-3600}"
STEP="${STEP:-30}"
BIN="${STRATUS_BIN:-$repo/target/release/stratus}"
if [ ! -x "$BIN" ]; then (cd "$repo" && cargo build --release --locked -p stratus); fi
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/stratus-query-compare.XXXXXX")}"
mkdir -p "$WORK"
SPORT="${SPORT:-19410}" PPORT="${PPORT:-19411}"
END="${END:-$(( $(date +%s) / 60 * 60 ))}"
echo "$END" > "$WORK/end"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
wait_url() { for _ in $(seq 1 600); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; return 1; }

if [ -n "${QUERIES:-}" ]; then cp "$QUERIES" "$WORK/queries.txt"; else
cat > "$WORK/queries.txt" <<'Q'
rate(bench_counter_1_total[5m])
irate(bench_counter_3_total[5m])
increase(bench_counter_5_total[10m])
sum by (region) (rate(bench_counter_1_total[5m]))
avg by (namespace, cluster) (rate(bench_counter_3_total[5m]))
topk(5, rate(bench_counter_7_total[5m]))
histogram_quantile(0.99, sum by (le, region) (rate(bench_request_duration_seconds_bucket[5m])))
avg_over_time(bench_gauge_2[10m])
max_over_time(bench_gauge_4[10m])
count by (zone) (bench_gauge_6)
sum by (instance, region) (rate(bench_counter_9_total[5m])) / on (region) group_left sum by (region) (rate(bench_counter_9_total[5m]))
bench_gauge_2 - bench_gauge_8
max_over_time(rate(bench_counter_9_total[290s])[30m:1m])
Q
fi

mkdir -p "$WORK/stratus" "$WORK/prometheus"
RUST_LOG=warn "$BIN" --auth=none --listen="127.0.0.1:$SPORT" --data-dir="$WORK/stratus/data" > "$WORK/stratus/log" 2>&1 &
spid=$!; pids+=("$spid")
printf 'global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n    out_of_order_time_window: 30d\nscrape_configs: []\n' > "$WORK/prometheus/prometheus.yml"
prometheus --config.file="$WORK/prometheus/prometheus.yml" --storage.tsdb.path="$WORK/prometheus/data" \
  --web.listen-address="127.0.0.1:$PPORT" --web.enable-remote-write-receiver \
  --storage.tsdb.retention.time=3650d > "$WORK/prometheus/log" 2>&1 &
ppid=$!; pids+=("$ppid")
wait_url "http://127.0.0.1:$SPORT/ready"
wait_url "http://127.0.0.1:$PPORT/-/ready"

for sys in stratus prometheus; do
  [ "${LOAD:-1}" = 0 ] && break
  if [ "$sys" = stratus ]; then url="http://127.0.0.1:$SPORT/api/v1/push"; else url="http://127.0.0.1:$PPORT/api/v1/write"; fi
  "$BIN" bench write --url "$url" --series "$SERIES" --metrics "$METRICS" --backfill "$SPAN" --end "$END" \
    --ticks-per-request 1 --concurrency 2 --json > "$WORK/$sys/write.json"
  echo "$sys load: $(cat "$WORK/$sys/write.json")" >&2
done
# Warm-up (with LOAD=0 this is where Stratus opens the tenant and replays its WAL).
curl -fsS "http://127.0.0.1:$SPORT/api/v1/query?query=count(bench_gauge_2)" >/dev/null
curl -fsS "http://127.0.0.1:$PPORT/api/v1/query?query=count(bench_gauge_2)" >/dev/null
# Reset the peak RSS so that VmHWM covers the query phase only.
echo 5 > "/proc/$spid/clear_refs"; echo 5 > "/proc/$ppid/clear_refs"

python3 - "$WORK/queries.txt" "$END" "$RANGE" "$STEP" "$REPS" "$SPORT" "$PPORT" "$spid" "$ppid" \
  "$preset" "$SERIES" "$SPAN" <<'PY'
import json, math, statistics, sys, time, urllib.parse, urllib.request
qfile, end, rng, step, reps, sport, pport, spid, ppid, preset, series, span = sys.argv[1:]
end, rng, step, reps = int(end), int(rng), int(step), int(reps)
queries = [l.strip() for l in open(qfile) if l.strip() and not l.startswith("#")]
q_end = end - 8
q_start = q_end - rng
servers = {"prometheus": f"http://127.0.0.1:{pport}", "stratus": f"http://127.0.0.1:{sport}"}

def run(base, q):
    body = urllib.parse.urlencode({"query": q, "start": q_start, "end": q_end, "step": step}).encode()
    req = urllib.request.Request(base + "/api/v1/query_range", data=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        data = r.read()
    return time.perf_counter() - t0, data

def fval(s):
    return float(s)  # handles NaN/+Inf/-Inf spellings

def diff(a, b):
    """None when the two query_range answers match, else a reason."""
    ja, jb = json.loads(a), json.loads(b)
    if ja.get("status") != "success" or jb.get("status") != "success":
        return f"status {ja.get('status')} / {jb.get('status')}: {ja.get('error')} / {jb.get('error')}"
    ma = {json.dumps(s["metric"], sort_keys=True): s["values"] for s in ja["data"]["result"]}
    mb = {json.dumps(s["metric"], sort_keys=True): s["values"] for s in jb["data"]["result"]}
    if ma.keys() != mb.keys():
        only_a, only_b = sorted(ma.keys() - mb.keys()), sorted(mb.keys() - ma.keys())
        return f"series differ: {len(ma)} vs {len(mb)}; prometheus only {only_a[:2]}, stratus only {only_b[:2]}"
    for k in ma:
        va, vb = ma[k], mb[k]
        if [p[0] for p in va] != [p[0] for p in vb]:
            return f"timestamps differ for {k}"
        for (t, x), (_, y) in zip(va, vb):
            x, y = fval(x), fval(y)
            if math.isnan(x) and math.isnan(y):
                continue
            if x == y:
                continue
            if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
                return f"value differs for {k} at {t}: {x} vs {y}"
    return None

times = {q: {s: [] for s in servers} for q in queries}
first = {q: {} for q in queries}
sizes = {q: 0 for q in queries}
for rep in range(reps):
    for q in queries:
        for s, base in servers.items():
            dt, data = run(base, q)
            times[q][s].append(dt)
            if rep == 0:
                first[q][s] = data
def hwm(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmHWM:"):
            return int(l.split()[1]) / 1024
    return float("nan")

import os
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
print(f"# bench/query-compare.sh {preset}: {series} series, {span} backfill at 15s, "
      f"range {rng}s step {step}s (off-grid), {reps} reps, {os.cpu_count()} cores, {mem:.0f} GiB, "
      f"{time.strftime('%Y-%m-%d', time.gmtime())}")
print("| # | query | series | prom p50 ms | stratus p50 ms | stratus/prom | same result |")
print("|---|---|---|---|---|---|---|")
ratios, mismatches = [], 0
for i, q in enumerate(queries, 1):
    p = statistics.median(times[q]["prometheus"]) * 1000
    st = statistics.median(times[q]["stratus"]) * 1000
    d = diff(first[q]["prometheus"], first[q]["stratus"])
    if d:
        mismatches += 1
        print(f"query {i} mismatch: {d}", file=sys.stderr)
    try:
        n = len(json.loads(first[q]["prometheus"])["data"]["result"])
    except Exception:
        n = "?"
    r = st / p if p else float("nan")
    ratios.append(r)
    qq = q.replace("|", "\\|")
    same = "yes" if not d else "NO"
    print(f"| {i} | `{qq}` | {n} | {p:.1f} | {st:.1f} | {r:.2f} | {same} |")
geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
tp = sum(statistics.median(times[q]["prometheus"]) for q in queries) * 1000
ts = sum(statistics.median(times[q]["stratus"]) for q in queries) * 1000
print(f"\nsum of p50s: prometheus {tp:.0f} ms, stratus {ts:.0f} ms, ratio {ts/tp:.2f}; "
      f"geometric mean of ratios {geo:.2f}; {mismatches} result mismatches")
print(f"peak RSS during queries: prometheus {hwm(ppid):.0f} MiB, stratus {hwm(spid):.0f} MiB")
PY
