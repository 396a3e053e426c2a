# Shared helpers for the benchmark scripts (sourced). Starts everything on 127.0.0.1 in $work and
# stops only the processes it started, by pid.
export PATH="/opt/swift/usr/bin:$PATH"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="${SCRATCH:-$root/.build-bench}"
bin="$scratch/release"
py="$(command -v python3)"
tick=$(getconf CLK_TCK)
work="$(mktemp -d /tmp/uplink-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

build_release() {
  for product in uplink uplink-sim uplink-bench; do
    swift build -c release --static-swift-stdlib --quiet --scratch-path "$scratch" --product "$product"
  done
}
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
status_json() { "$bin/uplink" status --state-dir "$1" --json; }
jfield() { "$py" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# start_broker PORT: mosquitto with unlimited queues for the QoS 1 subscriber (PITFALLS G10).
start_broker() {
  cat > "$work/mosquitto-$1.conf" <<CONF
listener $1 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/
autosave_interval 0
max_queued_messages 0
max_inflight_messages 100
user root
CONF
  mosquitto -c "$work/mosquitto-$1.conf" > "$work/mosquitto-$1.log" 2>&1 & broker_pid=$!; pids+=($broker_pid)
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
  echo "broker did not start" >&2; return 1
}
# start_sim MACHINES REGISTERS PORT_BASE
start_sim() {
  "$bin/uplink-sim" bench --serve-only --machines "$1" --registers "$2" --port-base "$3" > "$work/sim-$3.log" 2>&1 & sim_pid=$!; pids+=($sim_pid)
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$(( $3 + $1 - 1 ))) 2>/dev/null && return 0; sleep 0.1; done
  echo "simulator did not start" >&2; return 1
}
# start_sub PORT TOPIC OUT [FORMAT [MORE OPTIONS]]
start_sub() {
  local port=$1 topic=$2 out=$3 fmt=${4:-uplink}; shift 3; [ $# -gt 0 ] && shift
  "$py" "$root/Benchmarks/subscriber.py" "$port" "$topic" "$out" --format "$fmt" "$@" & sub_pid=$!; pids+=($sub_pid); sleep 0.5
}
# agent_config DEVICES SIGNALS INTERVAL PORT_BASE BROKER_PORT > file
agent_config() {
  echo "agent: { name: bench, site: lab }"
  echo "mqtt: { broker: \"mqtt://127.0.0.1:$5\", max_inflight: 256, reconnect_max: 1s }"
  echo "buffer: { max_size: 2GB }"
  echo "defaults: { interval: $3, timeout: 2s }"
  echo "devices:"
  for d in $(seq 0 $(($1 - 1))); do
    echo "  - name: m$d"
    echo "    tcp: { host: 127.0.0.1, port: $(($4 + d)) }"
    echo "    signals:"
    for s in $(seq 0 $(($2 - 1))); do echo "      - { name: r$s, area: holding, address: $s, type: uint16 }"; done
  done
}
