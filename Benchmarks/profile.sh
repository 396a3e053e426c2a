#!/usr/bin/env bash
# perf profile of `uplink run` under an end-to-end load (release build, everything on 127.0.0.1):
#   bash Benchmarks/profile.sh [DEVICES SIGNALS INTERVAL SECONDS]    # default 40 1000 100ms 10
# Prints the top symbols (self time) and the top shared objects; the perf.data is kept in $OUT
# (default /tmp/uplink-profile) for `perf report -i`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
D=${1:-40}; S=${2:-1000}; I=${3:-100ms}; T=${4:-10}; OUT="${OUT:-/tmp/uplink-profile}"
mkdir -p "$OUT"
build_release
bp=$(free_port); base=$(( 20000 + RANDOM % 20000 ))
start_sim "$D" "$S" "$base"
start_broker "$bp"
start_sub "$bp" 'uplink/#' "$work/sub.json"
agent_config "$D" "$S" "$I" "$base" "$bp" > "$work/agent.yaml"
"$bin/uplink" run "$work/agent.yaml" --state-dir "$work/state" > "$work/uplink.log" 2>&1 & agent=$!; pids+=($agent)
sleep 3
echo "# perf record -F 999 -g of uplink at $D x $S @ $I for $T s, load $(load_avg)"
perf record -F 999 -g -o "$OUT/perf.data" -p $agent -- sleep "$T" 2> /dev/null
stop_pid $agent
echo "## top symbols (self)"
perf report -i "$OUT/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
echo "## by shared object"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -15
