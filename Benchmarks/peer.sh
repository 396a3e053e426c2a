#!/usr/bin/env bash
# Uplink side by side with a peer, the ThingsBoard IoT Gateway (PyPI `thingsboard-gateway`), on the
# same synthetic machines (uplink-sim), the same local mosquitto and the same QoS 1 subscriber,
# one after the other in the same run (never at once: 2 cores).
#   bash Benchmarks/peer.sh            # installs what it needs, runs everything (about 10 minutes)
# Environment: TBGW_VENV (default .venv-tbgw in the repo; created with pip if it lacks the gateway),
#   DUR (s per steady run, default 30), OUTAGE (default 20), STORAGE (the peer's storage: sqlite, the
#   durable one, default; or memory, file), LADDER (peer workloads tried in order until it no longer
#   keeps up, default "10x100@1s 30x100@1s 100x100@1s"; LADDER_RUN=0 skips it), OUTAGES (default
#   "tb:0 tb:1 uplink:0 uplink:1", :1 = kill -9 halfway), RESULTS (JSON lines appended).
# Figures per gateway: points/s delivered to the subscriber, CPU per point, peak RSS, latency
# (arrival - poll ts), and after a 20 s broker outage (and a kill -9 during one) how many of the
# points polled in the outage arrive.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
DUR="${DUR:-30}"; OUTAGE="${OUTAGE:-20}"; STORAGE="${STORAGE:-sqlite}"
LADDER="${LADDER:-10x100@1s 30x100@1s 100x100@1s}"
RESULTS="${RESULTS:-/tmp/uplink-bench-results.jsonl}"
venv="${TBGW_VENV:-$root/.venv-tbgw}"

if ! "$venv/bin/python" -c 'import thingsboard_gateway, pymodbus, serial_asyncio' 2>/dev/null; then
  echo "installing thingsboard-gateway into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  # The Modbus connector pip-installs pymodbus (its pinned version) and pyserial at first use; do it here.
  "$venv/bin/pip" install --quiet thingsboard-gateway 'pymodbus==3.9.2' pyserial pyserial-asyncio
fi
tbver=$("$venv/bin/python" -c 'import thingsboard_gateway.version as v; print(v.VERSION)' 2>/dev/null || echo '?')
build_release
echo "# peer comparison $(date -u +%FT%TZ) on $(nproc) CPUs, load $(load_avg); ThingsBoard gateway $tbver (storage $STORAGE) vs uplink (durable SQLite buffer); both QoS 1"

# start_gw KIND DIR BROKER_PORT D S INTERVAL_MS SIM_BASE: starts a gateway, sets gw_pid.
start_gw() {
  local kind=$1 dir=$2 bp=$3 D=$4 S=$5 ims=$6 base=$7
  mkdir -p "$dir"; resp_pid=""
  if [ "$kind" = uplink ]; then
    [ -f "$dir/agent.yaml" ] || agent_config "$D" "$S" "${ims}ms" "$base" "$bp" > "$dir/agent.yaml"
    "$bin/uplink" run "$dir/agent.yaml" --state-dir "$dir/state" >> "$dir/uplink.log" 2>&1 & gw_pid=$!
  else
    "$py" "$root/Benchmarks/tb_responder.py" "$bp" & resp_pid=$!; pids+=($resp_pid); sleep 0.3
    [ -f "$dir/cfg/tb_gateway.json" ] || "$venv/bin/python" "$root/Benchmarks/tb_config.py" "$dir/cfg" "$bp" "$D" "$S" "$ims" "$base" "$STORAGE"
    ( cd "$dir" && TB_GW_CONFIG_DIR="$dir/cfg/" exec "$venv/bin/python" -c 'from thingsboard_gateway.tb_gateway import main; main()' >> "$dir/tb.log" 2>&1 ) & gw_pid=$!
  fi
  pids+=($gw_pid)
}
topic_of() { [ "$1" = uplink ] && echo 'uplink/#' || echo 'v1/gateway/telemetry'; }
format_of() { [ "$1" = uplink ] && echo uplink || echo tb; }
warm_of() { [ "$1" = uplink ] && echo 5 || echo 15; }   # the peer takes several seconds to start its connector

# steady KIND D S INTERVAL_MS: prints a line and appends a JSON record.
steady() {
  local kind=$1 D=$2 S=$3 ims=$4 label="$1-$2x$3@${4}ms"
  local bp base dir="$work/$label"; bp=$(free_port); base=$(( 20000 + RANDOM % 20000 ))
  start_sim "$D" "$S" "$base"; local sp=$sim_pid
  start_broker "$bp"; local brk=$broker_pid
  start_sub "$bp" "$(topic_of $kind)" "$dir.sub.json" "$(format_of $kind)"; local sbp=$sub_pid
  local load0; load0=$(load_avg)
  start_gw "$kind" "$dir" "$bp" "$D" "$S" "$ims" "$base"; local g=$gw_pid
  sleep "$(warm_of $kind)"
  local t0 c0; t0=$(date +%s.%N); c0=$(cpu_ticks $g)
  sleep "$DUR"
  local t1 c1 hwm; t1=$(date +%s.%N); c1=$(cpu_ticks $g); hwm=$(hwm_kb $g)
  stop_pid $g; stop_pid "${resp_pid:-}"; sleep 1; stop_pid $sbp; stop_pid $brk; stop_pid $sp
  "$py" - "$dir.sub.json" <<PY
import json, sys
s = json.load(open(sys.argv[1]))
t0, t1 = $t0, $t1
pts = sum(n for sec, n in s["timeline"] if int(t0) + 1 <= sec < int(t1))   # whole seconds inside the window
secs = max(int(t1) - int(t0) - 1, 1)
cpu = ($c1 - $c0) / $tick
offered = $D * $S * 1000 / $ims
r = dict(label="peer-$label", gateway="$kind", devices=$D, signals=$S, interval_ms=$ims, offered=offered,
         delivered=round(pts / secs), cpu_pct=round(100 * cpu / (t1 - t0), 2), cpu_us_per_point=round(1e6 * cpu / max(pts * (t1 - t0) / secs, 1), 1),
         peak_rss_mb=round($hwm / 1024, 1), lat_p50_ms=s["latency_p50_ms"], lat_p99_ms=s["latency_p99_ms"],
         sustained=pts / secs >= 0.95 * offered, load="$load0 -> $(load_avg)", date="$(date -u +%F)")
print("%(gateway)s %(devices)d x %(signals)d @ %(interval_ms)d ms: offered %(offered).0f, delivered %(delivered)d points/s; CPU %(cpu_pct).2f %% of one core = %(cpu_us_per_point).1f us/point; peak RSS %(peak_rss_mb).1f MB; latency p50 %(p50)s ms p99 %(p99)s ms; load %(load)s" % dict(r, p50="%.0f" % r["lat_p50_ms"] if r["lat_p50_ms"] is not None else "-", p99="%.0f" % r["lat_p99_ms"] if r["lat_p99_ms"] is not None else "-"))
open("$RESULTS", "a").write(json.dumps(r) + "\n")
open("$work/last.json", "w").write(json.dumps(r))
PY
}

# outage KIND kill9(0|1): 10 x 100 @ 1 s, the broker down OUTAGE s; with kill9=1 the gateway is killed
# with SIGKILL halfway through the outage and started again at once with the same state.
outage() {
  local kind=$1 k9=$2 D=10 S=100 ims=1000 label="$1-outage-k$2"
  local bp base dir="$work/$label"; bp=$(free_port); base=$(( 20000 + RANDOM % 20000 ))
  start_sim "$D" "$S" "$base"; local sp=$sim_pid
  start_broker "$bp"; local brk=$broker_pid
  "$py" "$root/Benchmarks/subscriber.py" "$bp" "$(topic_of $kind)" "$dir.sub.json" --format "$(format_of $kind)" --polls & local sbp=$!; pids+=($sbp); sleep 0.5
  start_gw "$kind" "$dir" "$bp" "$D" "$S" "$ims" "$base"; local g=$gw_pid
  sleep $(( $(warm_of $kind) + 10 ))
  local a b kill_at=0
  a=$(date +%s%3N); stop_pid $brk
  if [ "$k9" = 1 ]; then
    sleep $(( OUTAGE / 2 )); kill_at=$(date +%s%3N); kill -KILL $g; wait $g 2>/dev/null || true; stop_pid "${resp_pid:-}"
    start_gw "$kind" "$dir" "$bp" "$D" "$S" "$ims" "$base"; g=$gw_pid
    sleep $(( OUTAGE - OUTAGE / 2 ))
  else
    sleep "$OUTAGE"
  fi
  b=$(date +%s%3N); start_broker "$bp"; brk=$broker_pid
  sleep $(( $(warm_of $kind) + 20 ))
  stop_pid $g; stop_pid "${resp_pid:-}"; sleep 1; stop_pid $sbp; stop_pid $brk; stop_pid $sp
  "$py" - "$dir.sub.json" <<PY
import json, sys
s = json.load(open(sys.argv[1])); polls = s["polls"]
a, b, k = $a, $b, $kill_at
before = sum(n for ts, n in polls if a - 10000 <= ts < a) / 10.0            # its own delivered rate before the outage
inside = sum(n for ts, n in polls if a <= ts < b)
expected = before * (b - a) / 1000
r = dict(label="peer-$label", gateway="$kind", kill9=bool($k9), outage_s=(b - a) / 1000, rate_before=before,
         polled_in_outage_delivered=inside, expected=round(expected), fraction=round(inside / expected, 3) if expected else None,
         before_kill_delivered=sum(n for ts, n in polls if a <= ts < k) if k else None,
         before_kill_expected=round(before * (k - a) / 1000) if k else None,
         duplicates=s["points"] - s["distinct_points"], load="$(load_avg)", date="$(date -u +%F)")
extra = (" (of the %(before_kill_expected)d polled before the kill9: %(before_kill_delivered)d)" % r) if k else ""
print("%(gateway)s outage %(outage_s).0f s%(k9)s at 10 x 100 @ 1 s: %(polled_in_outage_delivered)d of ~%(expected)d points polled during the outage delivered (%(pct).1f %%)%(extra)s; %(duplicates)d duplicates; load %(load)s"
      % dict(r, k9=" with kill -9 halfway" if k else "", pct=100 * (r["fraction"] or 0), extra=extra))
open("$RESULTS", "a").write(json.dumps(r) + "\n")
PY
}

# 1. 10 x 100 @ 1 s, both; then the ladder for the peer until it stops keeping up, and uplink on the
#    largest the peer sustains and the first it does not.
largest=""
[ "${LADDER_RUN:-1}" = 1 ] || LADDER=""
for w in $LADDER; do
  D=${w%%x*}; rest=${w#*x}; S=${rest%@*}; I=${w#*@}
  case "$I" in *ms) ims=${I%ms} ;; *s) ims=$(( ${I%s} * 1000 )) ;; esac
  steady tb "$D" "$S" "$ims"
  ok=$("$py" -c "import json; print(json.load(open('$work/last.json'))['sustained'])")
  steady uplink "$D" "$S" "$ims"
  [ "$ok" = True ] && largest="$w" || break
done
echo "# the peer's largest sustained workload in this ladder: ${largest:-none}"

# 2. Broker outage, and kill -9 during one.
# OUTAGES: which outage tests, default all four ("tb:0 tb:1 uplink:0 uplink:1"; :1 = with kill -9).
for t in ${OUTAGES-tb:0 tb:1 uplink:0 uplink:1}; do outage "${t%%:*}" "${t##*:}"; done
echo "# done $(date -u +%FT%TZ), load $(load_avg)"
