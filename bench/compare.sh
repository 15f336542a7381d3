#!/usr/bin/env bash
# Side-by-side benchmark: Stratus, Prometheus 2.42 (remote-write receiver)
# and VictoriaMetrics 1.79 (Debian packages), each started in turn on this
# machine with a fresh data dir, each fed the identical workload by
# `stratus bench write`, then queried by `stratus bench query`.
#
# Usage: bench/compare.sh [quick|full]      (default quick)
#   quick:  10k active series, 1h backfill at 15s (2.4M samples), 20s of queries (≈2 min)
#   full:   1M active series, 30m backfill at 15s (120M samples), 60s of queries
# Env: SERIES, SPAN, TICKS (samples per series per request; default 4 below 100k series, else 1),
#      QUERY_DURATION, QUERY_SOLO_DURATION (the one-client run behind the p50s; 5s), CONCURRENCY, SYSTEMS ("stratus prometheus vm"),
#      SETTLE (seconds after the push for the settled RSS; 0 = skip),
#      STRATUS_BIN (default target/release/stratus, built when missing), WORK, KEEP=1,
#      PREGEN_MIB (default 8192: every request is encoded before the push starts, so the
#      generator does not share the two cores with the server while it is measured; the
#      push fails if the bodies need more; 0 = encode while pushing, as before 2026-11-24).
#
# Per system it records:
#   ingest    accepted samples/s of the backfill (wall time of the push)
#   cpu/Msmp  server CPU seconds (utime+stime from /proc) per million accepted samples
#   peak RSS  VmHWM after the push; steady RSS: VmRSS 10 s after the push; B/series = steady/series
#   settled   with SETTLE=<s> (default 0: not measured), VmRSS <s> seconds after the push, before
#             the queries, once background work has run (Stratus re-encodes sealed head chunks
#             every 2 minutes, so 150 covers one pass); B/series settled = settled/series
#   disk      bytes per sample once persisted (the span is placed inside one 2 h window
#             when it fits in one, see END below): Stratus blocks after POST /ingester/flush?compact=true
#             (index + chunks + meta; WAL excluded and shown apart), Prometheus a
#             snapshot with head (POST /api/v1/admin/tsdb/snapshot: index + chunks + meta;
#             WAL shown apart), VictoriaMetrics data/ + indexdb/ after force_flush and
#             force_merge (it has no WAL)
#   query     p50 / p99 of the dashboard range-query set (1h range, 60s step), one client;
#             a second table gives each query's p50 per system and the ratios
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
preset="${1:-quick}"
case "$preset" in
  quick) SERIES="${SERIES:-10000}" SPAN="${SPAN:-1h}" QUERY_DURATION="${QUERY_DURATION:-20s}" ;;
  full)  SERIES="${SERIES:-1000000}" SPAN="${SPAN:-30m}" QUERY_DURATION="${QUERY_DURATION:-60s}" ;;
  *) echo "usage: $0 [quick|full]" >&2; exit 2 ;;
esac
CONCURRENCY="${CONCURRENCY:-4}"
SYSTEMS="${SYSTEMS:-stratus prometheus vm}"
BIN="${STRATUS_BIN:-$repo/target/release/stratus}"
if [ ! -x "$BIN" ]; then (cd "$repo" && cargo build --release --locked -p stratus); fi
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/stratus-compare.XXXXXX")}"
mkdir -p "$WORK"
PORT="${PORT:-19400}"
END=$(( $(date +%s) / 60 * 60 ))
# A span that fits in one 2 h block window is kept inside one: ending it on
# the minute before the last window boundary when it would straddle one (Stratus would then
# hold two level-1 blocks, each with its own index entry per series, which
# no compaction at this age merges, and its disk figure would depend on the
# minute of the run).
span_s() { local v=${1%[smhd]}; case "$1" in *s) echo "$v" ;; *m) echo $((v * 60)) ;; *h) echo $((v * 3600)) ;; *d) echo $((v * 86400)) ;; *) echo "$1" ;; esac; }
# (The push's samples run from END − SPAN, exclusive, to END, inclusive.)
if [ "$(span_s "$SPAN")" -lt 7200 ] && [ $(( (END - $(span_s "$SPAN")) / 7200 )) -ne $(( END / 7200 )) ]; then
  END=$(( END / 7200 * 7200 - 60 ))
fi
TICKS="${TICKS:-$(( SERIES >= 100000 ? 1 : 4 ))}"
QUERY_SOLO_DURATION="${QUERY_SOLO_DURATION:-5s}"
PREGEN_MIB="${PREGEN_MIB:-8192}"
SETTLE="${SETTLE:-0}"
pregen=""; [ "$PREGEN_MIB" -gt 0 ] && pregen="--pregenerate $PREGEN_MIB"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
du_b() { local t=0; for d in "$@"; do [ -e "$d" ] && t=$((t + $(du -sb "$d" | cut -f1))); done; echo "$t"; }
wait_url() { for _ in $(seq 1 600); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; return 1; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

results="$WORK/results.tsv"
: > "$results"
for sys in $SYSTEMS; do
  d="$WORK/$sys"; rm -rf "$d"; mkdir -p "$d"
  case "$sys" in
    stratus)
      RUST_LOG=warn "$BIN" --auth=none --listen="127.0.0.1:$PORT" --data-dir="$d/data" > "$d/log" 2>&1 &
      pid=$!; write_url="http://127.0.0.1:$PORT/api/v1/push"; base="http://127.0.0.1:$PORT"; ready="$base/ready" ;;
    prometheus)
      printf 'global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n    out_of_order_time_window: 30d\nscrape_configs: []\n' > "$d/prometheus.yml"
      prometheus --config.file="$d/prometheus.yml" --storage.tsdb.path="$d/data" --web.listen-address="127.0.0.1:$PORT" \
        --web.enable-remote-write-receiver --web.enable-admin-api --storage.tsdb.retention.time=3650d > "$d/log" 2>&1 &
      pid=$!; write_url="http://127.0.0.1:$PORT/api/v1/write"; base="http://127.0.0.1:$PORT"; ready="$base/-/ready" ;;
    vm)
      victoria-metrics -httpListenAddr="127.0.0.1:$PORT" -storageDataPath="$d/data" -retentionPeriod=100y \
        -search.latencyOffset=0s -search.disableCache > "$d/log" 2>&1 &
      pid=$!; write_url="http://127.0.0.1:$PORT/api/v1/write"; base="http://127.0.0.1:$PORT"; ready="$base/health" ;;
    *) echo "unknown system $sys" >&2; exit 2 ;;
  esac
  wait_url "$ready"
  cpu0=$(cpu_s "$pid")
  "$BIN" bench write --url "$write_url" --series "$SERIES" --backfill "$SPAN" --end "$END" \
    --ticks-per-request "$TICKS" --concurrency "$CONCURRENCY" $pregen --json > "$d/write.json"
  cpu1=$(cpu_s "$pid")
  samples=$(json '["samples"]' < "$d/write.json")
  rate=$(json '["samples_per_s"]' < "$d/write.json")
  errors=$(json '["errors"]' < "$d/write.json")
  peak_kb=$(status_kb "$pid" VmHWM)
  pushed=$(date +%s)
  [ "$sys" = vm ] && curl -fsS -X POST "$base/internal/force_flush" >/dev/null
  sleep 10
  steady_kb=$(status_kb "$pid" VmRSS)
  settled_kb=0
  if [ "$SETTLE" -gt 0 ]; then
    left=$(( pushed + SETTLE - $(date +%s) ))
    [ "$left" -gt 0 ] && sleep "$left"
    settled_kb=$(status_kb "$pid" VmRSS)
  fi
  "$BIN" bench query --url "$base" --end "$END" --range 1h --step 60s --duration "$QUERY_DURATION" \
    --concurrency 2 > "$d/query.txt"
  "$BIN" bench query --url "$base" --end "$END" --range 1h --step 60s --duration "$QUERY_SOLO_DURATION" --concurrency 1 --json > "$d/query.json"
  p50=$(json '["p50_ms"]' < "$d/query.json"); p99=$(json '["p99_ms"]' < "$d/query.json")
  qerr=$(json '["errors"]' < "$d/query.json")
  case "$sys" in
    stratus)
      curl -fsS -X POST "$base/ingester/flush?compact=true" >/dev/null
      disk=$(du_b "$d/data/blocks"); wal=$(du_b "$d/data/tenants") ;;
    prometheus)
      snap=$(curl -fsS -X POST "$base/api/v1/admin/tsdb/snapshot" | json '["data"]["name"]')
      disk=$(du_b "$d/data/snapshots/$snap"); wal=$(du_b "$d/data/wal" "$d/data/chunks_head") ;;
    vm)
      curl -fsS "$base/internal/force_merge" >/dev/null || true
      sleep 5
      disk=$(du_b "$d/data/data" "$d/data/indexdb"); wal=0 ;;
  esac
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  python3 - "$sys" "$samples" "$rate" "$cpu0" "$cpu1" "$peak_kb" "$steady_kb" "$disk" "$wal" "$p50" "$p99" "$SERIES" "$settled_kb" >> "$results" <<'PY'
import sys
sys_, samples, rate, c0, c1, peak, steady, disk, wal, p50, p99, series, settled = sys.argv[1:]
samples = float(samples)
# An RSS reading in kB as (MiB, bytes per series); "-" when not taken.
rss = lambda kb: [f"{int(kb)/1024:.0f}", f"{int(kb)*1024/int(series):.0f}"] if int(kb) else ["-", "-"]
print("\t".join([sys_, f"{float(rate):.0f}", f"{(float(c1)-float(c0))/max(samples,1)*1e6:.2f}",
                 f"{int(peak)/1024:.0f}", *rss(steady),
                 f"{int(disk)/max(samples,1):.3f}", f"{int(wal)/1e6:.1f}", f"{float(p50):.1f}", f"{float(p99):.1f}",
                 *rss(settled)]))
PY
  echo "$sys: write errors $errors, query errors $qerr" >&2
done

echo "# bench/compare.sh $preset: $SERIES series, $SPAN backfill at 15s, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%F)"
python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
hdr = ["system", "samples/s", "cpu s/Msamples", "peak RSS MiB", "steady RSS MiB", "B/series", "disk B/sample", "WAL MB", "query p50 ms", "query p99 ms",
       "settled RSS MiB", "B/series settled"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for r in rows:
    print("| " + " | ".join(r) + " |")
by = {r[0]: r for r in rows}
if "stratus" in by:
    s = by["stratus"]
    for peer in ("prometheus", "vm"):
        if peer in by:
            p = by[peer]
            f = lambda i: float(s[i]) / float(p[i]) if p[i] != "-" and s[i] != "-" and float(p[i]) else float("nan")
            settled = f", settled RSS/series {f(11):.2f}x" if s[11] != "-" else ""
            print(f"stratus/{peer}: ingest {f(1):.2f}x, cpu/sample {f(2):.2f}x, steady RSS/series {f(5):.2f}x, "
                  f"disk/sample {f(6):.2f}x, query p50 {f(8):.2f}x{settled}")
PY
python3 - "$WORK" $SYSTEMS <<'PY'
import json, os, sys
work, systems = sys.argv[1], sys.argv[2:]
per = {}
for s in systems:
    try:
        per[s] = {q["query"]: q for q in json.load(open(os.path.join(work, s, "query.json"))).get("queries", [])}
    except (OSError, ValueError):
        pass
if not per:
    sys.exit(0)
systems = [s for s in systems if s in per]
peers = [p for p in systems if p != "stratus"] if "stratus" in per else []
hdr = ["query"] + [f"{s} p50 ms (n)" for s in systems] + [f"stratus/{p}" for p in peers]
print()
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for q in per[systems[0]]:
    row = [f"`{q}`"]
    for s in systems:
        x = per[s].get(q)
        row.append(f"{x['p50_ms']:.1f} ({x['ok']})" if x else "-")
    for p in peers:
        a, b = per["stratus"].get(q), per[p].get(q)
        row.append(f"{a['p50_ms'] / b['p50_ms']:.2f}x" if a and b and b["p50_ms"] > 0 else "-")
    print("| " + " | ".join(row) + " |")
PY
