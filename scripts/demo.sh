#!/usr/bin/env bash
# The whole "equipment on cloud" path on one machine: installs everything (scripts/setup.sh), builds,
# starts a local mosquitto, the simulated demo factory (uplink-sim Simulators/demo.yaml) and the agent
# (uplink run Configs/demo.yaml), and shows the messages arriving at the broker.
#   DEMO_SECONDS=N   how long to watch the messages (default 20)
#   DEMO_KEEP=1      leave everything running afterwards (stop with: kill $(cat .demo/pids))
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/opt/swift/usr/bin:$PATH"
echo "demo: building (first build takes a few minutes)"
swift build --quiet
bin="$(swift build --show-bin-path)"

port=18830
mkdir -p .demo
rm -rf .demo/state
cat > .demo/mosquitto.conf <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
user root
CONF
pids=()
cleanup() {
  if [ "${DEMO_KEEP:-0}" = 1 ]; then
    printf '%s\n' "${pids[@]}" > .demo/pids
    echo "demo: still running (pids in .demo/pids)"
    return
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

mosquitto -c .demo/mosquitto.conf > .demo/mosquitto.log 2>&1 & pids+=($!)
"$bin/uplink-sim" Simulators/demo.yaml > .demo/sim.log 2>&1 & pids+=($!)
for _ in $(seq 1 100); do grep -q '^ready' .demo/sim.log && break; sleep 0.1; done
echo; echo "== uplink-sim Simulators/demo.yaml"; cat .demo/sim.log
grep -q '^ready' .demo/sim.log || { echo "demo: the simulator did not start (see above)" >&2; exit 1; }
echo; echo "== uplink check Configs/demo.yaml (first lines)"; "$bin/uplink" check Configs/demo.yaml | head -12
echo; echo "== uplink read Configs/demo.yaml --device meter-01 (one poll, decoded)"; "$bin/uplink" read Configs/demo.yaml --device meter-01 | head -16

"$bin/uplink" run Configs/demo.yaml --broker "mqtt://127.0.0.1:$port" --state-dir .demo/state > .demo/uplink.log 2>&1 & pids+=($!)
echo; echo "== mosquitto_sub -t 'uplink/#' (messages from the agent, ${DEMO_SECONDS:-20} s, payloads shortened)"
timeout "${DEMO_SECONDS:-20}" mosquitto_sub -p "$port" -t 'uplink/#' -v | cut -c1-200 || true
echo; echo "== uplink status --state-dir .demo/state"; "$bin/uplink" status --state-dir .demo/state
echo; echo "== agent log (.demo/uplink.log)"; head -5 .demo/uplink.log
