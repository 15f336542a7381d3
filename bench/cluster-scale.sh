#!/usr/bin/env bash
# Cluster scaling on one machine: a real etcd, N ingesters and one
# distributor (release binary, all on 127.0.0.1), fed the same workload by
# `stratus bench write`. Rows: 1, 2 and 3 ingesters at replication factor
# 1 (how throughput and CPU per sample move with the ingester count on a
# machine with few cores: balance, not speed-up), then 3 ingesters at
# RF 3 (the production shape: memory per active series).
#
# Usage: bench/cluster-scale.sh [SERIES]        (default 100000)
# Env: SPAN (backfill, default 30m), CONCURRENCY (4), ROWS (ingesters:RF
#      pairs, default "1:1 2:1 3:1 3:3"), STRATUS_BIN, SETTLE (seconds between
#      the push and the RSS reading, default 10; 130 lets one head chunk
#      compaction pass, every 2 min, move sealed chunks to the head chunk files)
#      (default target/release/stratus, built when missing), WORK, KEEP=1.
#
# Per row:
#   samples/s      accepted samples/s of the backfill (wall time of the push)
#   cpu s/Msamples CPU seconds (utime+stime from /proc) of all Stratus
#                  processes (distributor + ingesters) per million samples
#                  accepted (one sample counted once, not per replica)
#   dist / ing     the same split into distributor and ingesters
#   series max/min the ingesters' active series (`/metrics`): max / min
#   RSS B/series   ingesters' summed steady VmRSS (SETTLE s after the push) per
#                  distinct active series: at RF 3 every series is held 3 times
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
SERIES="${1:-100000}"
SPAN="${SPAN:-30m}"
SETTLE="${SETTLE:-10}"
CONCURRENCY="${CONCURRENCY:-4}"
BIN="${STRATUS_BIN:-$repo/target/release/stratus}"
if [ ! -x "$BIN" ]; then (cd "$repo" && cargo build --release --locked -p stratus); fi
command -v etcd >/dev/null || { echo "etcd is missing: apt-get install etcd-server" >&2; exit 2; }
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/stratus-cluster-scale.XXXXXX")}"
mkdir -p "$WORK"
PORT="${PORT:-19500}"
END=$(( $(date +%s) / 60 * 60 ))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
wait_url() { for _ in $(seq 1 600); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; return 1; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
active_series() {
  curl -fsS "$1/metrics" | awk '/^stratus_tenant_active_series[{ ]/ {s += $NF} END {print s + 0}'
}

results="$WORK/results.tsv"
: > "$results"
run_row() {
  local n=$1 rf=$2 d="$WORK/n$1-rf$2"
  rm -rf "$d"; mkdir -p "$d"; pids=()
  local ep=$((PORT + 90))
  etcd --data-dir="$d/etcd" --listen-client-urls="http://127.0.0.1:$ep" \
    --advertise-client-urls="http://127.0.0.1:$ep" --listen-peer-urls="http://127.0.0.1:$((ep + 1))" \
    --initial-advertise-peer-urls="http://127.0.0.1:$((ep + 1))" \
    --initial-cluster="default=http://127.0.0.1:$((ep + 1))" > "$d/etcd.log" 2>&1 &
  pids+=($!)
  wait_url "http://127.0.0.1:$ep/health"
  local ring=(--auth=header --etcd.endpoints="http://127.0.0.1:$ep" --ring.replication-factor="$rf"
    --ring.heartbeat-period=1s --ring.heartbeat-timeout=10s)
  local ing=()
  for i in $(seq 1 "$n"); do
    RUST_LOG=warn "$BIN" --target=ingester "${ring[@]}" --data-dir="$d/ing$i" \
      --ring.instance-id="ingester-$i" --listen="127.0.0.1:$((PORT + i))" \
      --grpc-listen="127.0.0.1:$((PORT + 10 + i))" > "$d/ing$i.log" 2>&1 &
    pids+=($!); ing+=($!)
    wait_url "http://127.0.0.1:$((PORT + i))/ready"
  done
  RUST_LOG=warn "$BIN" --target=distributor "${ring[@]}" --data-dir="$d/dist" \
    --listen="127.0.0.1:$PORT" > "$d/dist.log" 2>&1 &
  local dist=$!; pids+=($dist)
  wait_url "http://127.0.0.1:$PORT/ready"
  # The distributor sees every ingester ACTIVE before the push starts.
  for _ in $(seq 1 100); do
    [ "$(curl -fsS "http://127.0.0.1:$PORT/ring?format=json" | grep -o '"ACTIVE"' | wc -l)" -ge "$n" ] && break
    sleep 0.1
  done
  local c0d c0i=0 c1d c1i=0
  c0d=$(cpu_s "$dist"); for p in "${ing[@]}"; do c0i=$(awk -v a="$c0i" -v b="$(cpu_s "$p")" 'BEGIN {print a + b}'); done
  "$BIN" bench write --url "http://127.0.0.1:$PORT/api/v1/push" --tenant bench --series "$SERIES" \
    --backfill "$SPAN" --end "$END" --ticks-per-request 1 --concurrency "$CONCURRENCY" --json > "$d/write.json"
  c1d=$(cpu_s "$dist"); for p in "${ing[@]}"; do c1i=$(awk -v a="$c1i" -v b="$(cpu_s "$p")" 'BEGIN {print a + b}'); done
  sleep "$SETTLE"
  local rss=0 counts=()
  for i in $(seq 1 "$n"); do
    rss=$((rss + $(status_kb "${ing[$((i - 1))]}" VmRSS)))
    counts+=("$(active_series "http://127.0.0.1:$((PORT + i))")")
  done
  python3 - "$n" "$rf" "$d/write.json" "$c0d" "$c1d" "$c0i" "$c1i" "$rss" "$SERIES" "${counts[@]}" >> "$results" <<'PY'
import json, sys
n, rf, wj, c0d, c1d, c0i, c1i, rss, series, *counts = sys.argv[1:]
w = json.load(open(wj))
samples = max(float(w["samples"]), 1)
dist = (float(c1d) - float(c0d)) / samples * 1e6
ing = (float(c1i) - float(c0i)) / samples * 1e6
counts = [float(c) for c in counts]
spread = max(counts) / min(counts) if min(counts) > 0 else float("nan")
print("\t".join([n, rf, f"{w['samples_per_s']:.0f}", f"{dist + ing:.2f}", f"{dist:.2f}", f"{ing:.2f}",
                 f"{spread:.3f}", f"{int(rss) * 1024 / int(series):.0f}", str(w["errors"])]))
PY
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

for row in ${ROWS:-1:1 2:1 3:1 3:3}; do
  run_row "${row%%:*}" "${row##*:}"
done

echo "# bench/cluster-scale.sh $SERIES: $SERIES series, $SPAN backfill at 15s, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%F)"
python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
hdr = ["ingesters", "RF", "samples/s", "cpu s/Msamples", "dist", "ing", "series max/min", "ingester RSS B/series", "errors"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for r in rows:
    print("| " + " | ".join(r) + " |")
PY
