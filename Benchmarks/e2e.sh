#!/usr/bin/env bash
# End-to-end benchmarks of `uplink run` (release build) on 127.0.0.1:
#   synthetic machines (uplink-sim bench --serve-only) -> uplink run (durable buffer) -> mosquitto -> QoS 1 subscriber
#
#   bash Benchmarks/e2e.sh throughput   # max points/s delivered (DEVICES x SIGNALS @ INTERVAL, for DURATION s)
#   bash Benchmarks/e2e.sh steady       # CPU and peak RSS at 10 x 100 @ 1s for DURATION s (default 300)
#   bash Benchmarks/e2e.sh drain        # backlog drain rate after an OUTAGE-second broker outage (default 600) at 10 x 100 @ 1s
# Environment overrides: DEVICES SIGNALS INTERVAL DURATION OUTAGE, and UPLINK (another uplink binary
# to measure, e.g. an older build or a --static-swift-stdlib one). Prints one summary line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-throughput}"
export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release --static-swift-stdlib --quiet --product uplink
swift build -c release --static-swift-stdlib --quiet --product uplink-sim
bin="$(swift build -c release --static-swift-stdlib --show-bin-path)"
agent_bin="${UPLINK:-$bin/uplink}"
py="$(command -v python3)"

case "$mode" in
  throughput) DEVICES="${DEVICES:-20}"; SIGNALS="${SIGNALS:-1000}"; INTERVAL="${INTERVAL:-100ms}"; SECONDS_RUN="${DURATION:-20}" ;;
  steady)     DEVICES="${DEVICES:-10}"; SIGNALS="${SIGNALS:-100}"; INTERVAL="${INTERVAL:-1s}"; SECONDS_RUN="${DURATION:-300}" ;;
  drain)      DEVICES="${DEVICES:-10}"; SIGNALS="${SIGNALS:-100}"; INTERVAL="${INTERVAL:-1s}"; SECONDS_RUN=0; OUTAGE="${OUTAGE:-600}" ;;
  *) echo "usage: $0 throughput|steady|drain" >&2; exit 64 ;;
esac

work="$(mktemp -d /tmp/uplink-bench.XXXXXX)"
pids=()
sub_id="bench-sub-$$"
cleanup() {
  pkill -f -- "-i $sub_id" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

broker_port="$(free_port)"
sim_base=$(( 20000 + RANDOM % 20000 ))
cat > "$work/mosquitto.conf" <<CONF
listener $broker_port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/
autosave_interval 0
max_queued_messages 0
max_inflight_messages 100
user root
CONF
start_broker() { mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 & broker_pid=$!; pids+=($broker_pid); sleep 0.5; }

{
  echo "agent: { name: bench, site: lab }"
  # reconnect_max 1s: the drain figure measures draining, not how long the backoff waited.
  echo "mqtt: { broker: \"mqtt://127.0.0.1:$broker_port\", max_inflight: 256, reconnect_max: 1s }"
  echo "buffer: { max_size: 2GB }"
  echo "defaults: { interval: $INTERVAL, timeout: 2s }"
  echo "devices:"
  for d in $(seq 0 $((DEVICES - 1))); do
    echo "  - name: m$d"
    echo "    tcp: { host: 127.0.0.1, port: $((sim_base + d)) }"
    echo "    signals:"
    for s in $(seq 0 $((SIGNALS - 1))); do echo "      - { name: r$s, area: holding, address: $s, type: uint16 }"; done
  done
} > "$work/agent.yaml"

"$bin/uplink-sim" bench --serve-only --machines "$DEVICES" --registers "$SIGNALS" --port-base "$sim_base" > "$work/sim.log" 2>&1 & pids+=($!)
start_broker
mosquitto_sub -p "$broker_port" -q 1 -c -i "$sub_id" -t 'uplink/#' -v 2>/dev/null | "$py" Benchmarks/count_points.py "$work/sub.json" & sub_pid=$!
sleep 1

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_of() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
status_json() { "$bin/uplink" status --state-dir "$work/state" --json; }
field() { "$py" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
tick=$(getconf CLK_TCK)

if [ "$mode" = drain ]; then kill "$broker_pid"; wait "$broker_pid" 2>/dev/null || true; fi
"$agent_bin" run "$work/agent.yaml" --state-dir "$work/state" > "$work/uplink.log" 2>&1 & agent=$!; pids+=($agent)
start=$(date +%s.%N)

if [ "$mode" = drain ]; then
  sleep "$OUTAGE"
  backlog=$(status_json | field 'd["backlog"]["records"]')
  start_broker
  # Wait until the backlog is gone, then let the subscriber say how fast the late records arrived.
  until [ "$(status_json | field 'd["backlog"]["records"]')" -lt "$SIGNALS" ]; do sleep 0.2; done
  sleep 3
  kill -TERM $agent; wait $agent || true
  sleep 1; pkill -f -- "-i $sub_id" 2>/dev/null || true; wait $sub_pid 2>/dev/null || true
  "$py" -c "
import json; s = json.load(open('$work/sub.json'))
d = s['late_last'] - s['late_first']
print('drain: outage %ss at %s x %s @ %s left %d records; the subscriber received %d late points in %.2f s = %.0f points/s (ingest continuing)' % ('$OUTAGE', $DEVICES, $SIGNALS, '$INTERVAL', $backlog, s['late_points'], d, s['late_points'] / d))"
else
  sleep "$SECONDS_RUN"
  end=$(date +%s.%N)
  cpu=$(cpu_of $agent); hwm=$(hwm_of $agent)
  acked=$(status_json | field 'd["acked_records"]')
  kill -TERM $agent; wait $agent || true
  sleep 1; pkill -f -- "-i $sub_id" 2>/dev/null || true; wait $sub_pid 2>/dev/null || true
  delivered=$("$py" -c "import json; print(json.load(open('$work/sub.json'))['points'])")
  "$py" -c "
wall=$end-$start; cpu=$cpu/$tick
print('$mode: %s x %s @ %s for %.0f s: %.0f points/s acknowledged durable, %d points delivered to the QoS 1 subscriber; uplink CPU %.2f s = %.2f %% of one core, peak RSS %.1f MB' % ($DEVICES, $SIGNALS, '$INTERVAL', wall, $acked/wall, $delivered, cpu, 100*cpu/wall, $hwm/1024))"
fi
