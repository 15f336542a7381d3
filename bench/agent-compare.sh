#!/usr/bin/env bash
# Side-by-side benchmark of the scraping agents: `stratus agent` and
# Prometheus 2.42 in agent mode (`prometheus --enable-feature=agent`, the
# Debian package), run in turn with the same scrape configuration against
# the same fleet of fake node_exporter-like targets, both pushing by
# remote write 1.0 to the same counting receiver.
#
# Usage: bench/agent-compare.sh [quick|full]      (default quick)
#   quick:  100 targets x 609 series, scrape every 5s, 60s per agent (≈2.5 min)
#   full:   400 targets x 1015 series, scrape every 5s, 180s per agent (≈7 min)
# Env: TARGETS, SERIES, INTERVAL (seconds), DURATION (seconds per agent),
#      AGENTS ("stratus prometheus"), STRATUS_BIN (default
#      target/release/stratus, built when missing), WORK, KEEP=1.
#
# The fleet (`stratus bench targets`) listens on TARGETS consecutive ports
# (so `instance` differs per target) and serves a text exposition page of
# node_exporter-like families whose values change over time; the receiver
# (`stratus bench sink`) decodes every request and counts samples. Per agent:
#   cpu s      utime+stime of the agent process (/proc/PID/stat) over its
#              whole run, start-up included
#   cpu %      cpu s / wall seconds of the run
#   peak RSS   VmHWM at the end of the run
#   steady RSS mean VmRSS over the second half of the run (sampled each s)
#   samples    samples the receiver decoded during the run
#   cpu s/Msmp cpu s per million samples pushed
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
preset="${1:-quick}"
case "$preset" in
  quick) TARGETS="${TARGETS:-100}" SERIES="${SERIES:-600}" DURATION="${DURATION:-60}" ;;
  full)  TARGETS="${TARGETS:-400}" SERIES="${SERIES:-1000}" DURATION="${DURATION:-180}" ;;
  *) echo "usage: $0 [quick|full]" >&2; exit 2 ;;
esac
INTERVAL="${INTERVAL:-5}"
AGENTS="${AGENTS:-stratus prometheus}"
BIN="${STRATUS_BIN:-$repo/target/release/stratus}"
if [ ! -x "$BIN" ]; then (cd "$repo" && cargo build --release --locked -p stratus); fi
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/stratus-agent-compare.XXXXXX")}"
mkdir -p "$WORK"
TPORT="${TPORT:-19600}"   # first target port
SPORT="${SPORT:-19590}"   # receiver
APORT="${APORT:-19591}"   # agent's own HTTP port
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
wait_url() { for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; return 1; }
sink_samples() { curl -fsS "http://127.0.0.1:$SPORT/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples"])'; }

"$BIN" bench targets --listen "127.0.0.1:$TPORT" --count "$TARGETS" --series "$SERIES" > "$WORK/targets.log" 2>&1 &
pids+=($!)
"$BIN" bench sink --listen "127.0.0.1:$SPORT" > "$WORK/sink.log" 2>&1 &
pids+=($!)
wait_url "http://127.0.0.1:$SPORT/stats"
wait_url "http://127.0.0.1:$((TPORT + TARGETS - 1))/metrics"
per_page=$(curl -fsS "http://127.0.0.1:$TPORT/metrics" | grep -vc '^#')

# One scrape configuration for both agents.
cfg="$WORK/agent.yml"
{
  printf 'global:\n  scrape_interval: %ss\n  scrape_timeout: %ss\n  external_labels:\n    agent: bench\n' "$INTERVAL" "$INTERVAL"
  printf 'scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets:\n'
  for i in $(seq 0 $((TARGETS - 1))); do printf '          - 127.0.0.1:%d\n' $((TPORT + i)); done
  printf 'remote_write:\n  - url: http://127.0.0.1:%d/api/v1/write\n' "$SPORT"
  printf '    queue_config:\n      capacity: 10000\n      max_samples_per_send: 2000\n      batch_send_deadline: 5s\n'
} > "$cfg"

results="$WORK/results.tsv"
: > "$results"
for agent in $AGENTS; do
  d="$WORK/$agent"; rm -rf "$d"; mkdir -p "$d"
  s0=$(sink_samples)
  t0=$(date +%s.%N)
  case "$agent" in
    stratus)
      RUST_LOG=warn "$BIN" agent --config.file="$cfg" --data-dir="$d/data" --listen="127.0.0.1:$APORT" > "$d/log" 2>&1 &
      pid=$! ;;
    prometheus)
      prometheus --enable-feature=agent --config.file="$cfg" --storage.agent.path="$d/data" \
        --web.listen-address="127.0.0.1:$APORT" --log.level=warn > "$d/log" 2>&1 &
      pid=$! ;;
    *) echo "unknown agent $agent" >&2; exit 2 ;;
  esac
  pids+=("$pid")
  rss_sum=0; rss_n=0
  for i in $(seq 1 "$DURATION"); do
    sleep 1
    kill -0 "$pid" 2>/dev/null || { echo "$agent exited early; log:" >&2; cat "$d/log" >&2; exit 1; }
    if [ "$i" -gt $((DURATION / 2)) ]; then
      rss_sum=$((rss_sum + $(status_kb "$pid" VmRSS))); rss_n=$((rss_n + 1))
    fi
  done
  cpu=$(cpu_s "$pid")
  peak_kb=$(status_kb "$pid" VmHWM)
  t1=$(date +%s.%N)
  s1=$(sink_samples)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$agent" "$cpu" "$(python3 -c "print($t1-$t0)")" "$peak_kb" \
    "$((rss_sum / (rss_n > 0 ? rss_n : 1)))" "$((s1 - s0))" >> "$results"
  sleep 2
done

echo "# bench/agent-compare.sh $preset: $TARGETS targets x $per_page series, scrape every ${INTERVAL}s, ${DURATION}s per agent, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%F)"
python3 - "$results" "$TARGETS" "$per_page" "$INTERVAL" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
targets, per_page, interval = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
hdr = ["agent", "cpu s", "cpu %", "peak RSS MiB", "steady RSS MiB", "samples pushed", "samples/s", "cpu s / M samples"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
by = {}
for a, cpu, wall, peak, steady, samples in rows:
    cpu, wall, peak, steady, samples = float(cpu), float(wall), int(peak), int(steady), int(samples)
    by[a] = (cpu, peak, steady, samples)
    print(f"| {a} | {cpu:.2f} | {100*cpu/wall:.1f} | {peak/1024:.0f} | {steady/1024:.0f} | {samples:,} | "
          f"{samples/wall:,.0f} | {cpu/max(samples,1)*1e6:.2f} |")
print(f"expected per agent at steady state: {targets*(per_page+5)/interval:,.0f} samples/s "
      f"({targets} targets x ({per_page} + 5 synthesized) / {interval:g}s)")
if "stratus" in by and "prometheus" in by:
    s, p = by["stratus"], by["prometheus"]
    r = lambda i: s[i] / p[i] if p[i] else float("nan")
    print(f"stratus/prometheus: cpu {r(0):.2f}x, peak RSS {r(1):.2f}x, steady RSS {r(2):.2f}x, samples pushed {r(3):.2f}x "
          f"(target <= 0.5x on cpu and memory)")
PY
