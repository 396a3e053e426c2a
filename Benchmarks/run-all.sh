#!/usr/bin/env bash
# One entry point for Uplink's benchmarks (issue 5), release build, everything on 127.0.0.1:
#   bash Benchmarks/run-all.sh                 # every section, modest durations (about 8 minutes)
#   bash Benchmarks/run-all.sh raw scale       # only these sections
#   LONG=1 bash Benchmarks/run-all.sh          # the long versions (60 s runs, 120 s outage)
# Sections:
#   raw        bare loops, the raw limits: libmodbus reads/s against the simulator, mosquitto QoS 1
#              acks/s (with a QoS 1 subscriber attached), durable buffer commits/s
#   throughput end to end simulator -> uplink run (durable buffer) -> mosquitto -> QoS 1 subscriber at
#              20 x 1000 @ 100 ms and 40 x 1000 @ 100 ms, with where the bottleneck sits
#   scale      CPU seconds and peak RSS at 1, 10, 100 devices x 100 and x 1000 signals, @ 1 s and @ 100 ms
#   latency    poll-to-subscriber latency p50/p99 at 10 x 100 @ 1 s (and its CPU and RSS)
#   drain      backlog drain rate after an OUTAGE-second broker outage at 10 x 100 @ 1 s, and the
#              on-time points delivered while draining
#   rtu        RTU bus time per poll cycle on a pty with serial timing emulation at 9600 and 115200
#              baud, our planner vs one request per signal, against the theoretical minimum
# Environment: DUR (s per e2e run), OUTAGE (s), RESULTS (a JSON-lines file the figures are appended to).
# Prints one line per figure, with the load average. Not part of `swift test`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
LONG="${LONG:-0}"
DUR="${DUR:-$([ "$LONG" = 1 ] && echo 60 || echo 15)}"
OUTAGE="${OUTAGE:-$([ "$LONG" = 1 ] && echo 120 || echo 30)}"
RESULTS="${RESULTS:-/tmp/uplink-bench-results.jsonl}"
sections=("$@"); [ ${#sections[@]} -eq 0 ] && sections=(raw throughput scale latency drain rtu)

build_release
echo "# uplink benchmarks $(date -u +%FT%TZ) on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r), load $(load_avg); results also in $RESULTS"

record() { echo "$1" >> "$RESULTS"; }

# e2e DEVICES SIGNALS INTERVAL SECONDS LABEL: one run; prints a line, appends a JSON record.
e2e() {
  local D=$1 S=$2 I=$3 T=$4 label=$5
  local bp base state="$work/state-$label" sub="$work/sub-$label.json"
  bp=$(free_port); base=$(( 20000 + RANDOM % 20000 ))
  start_sim "$D" "$S" "$base"; local sp=$sim_pid
  start_broker "$bp"; local brk=$broker_pid
  start_sub "$bp" 'uplink/#' "$sub"; local sbp=$sub_pid
  agent_config "$D" "$S" "$I" "$base" "$bp" > "$work/agent-$label.yaml"
  local load0; load0=$(load_avg)
  "$bin/uplink" run "$work/agent-$label.yaml" --state-dir "$state" > "$work/uplink-$label.log" 2>&1 & local agent=$!; pids+=($agent)
  sleep 3   # warm-up: connect, first polls
  local t0 c0 s0
  t0=$(date +%s.%N); c0=$(cpu_ticks $agent); s0=$(status_json "$state")
  sleep "$T"
  local t1 c1 s1 hwm
  t1=$(date +%s.%N); c1=$(cpu_ticks $agent); hwm=$(hwm_kb $agent); s1=$(status_json "$state")
  local ctot; ctot=$(cpu_ticks $agent)
  stop_pid $agent; sleep 0.5; stop_pid $sbp; stop_pid $brk; stop_pid $sp
  "$py" - "$s0" "$s1" "$sub" <<PY
import json, sys
s0, s1, sub = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.load(open(sys.argv[3]))
D, S, I, T = $D, $S, "$I", $t1 - $t0
ival = float(I[:-2]) / 1000 if I.endswith("ms") else float(I[:-1])
offered = D * S / ival
committed = (s1["next_seq"] - s0["next_seq"]) / T
acked = (s1["acked_records"] - s0["acked_records"]) / T
polls = sum(d["polls"] for d in s1["devices"]) - sum(d["polls"] for d in s0["devices"])
polled = polls * S / T
cpu = ($c1 - $c0) / $tick; cpu_total = $ctot / $tick
backlog = s1["backlog"]["records"]
# committed/acked come from the buffer's counters; polled from status.json snapshots (a few % of timing noise).
if committed >= 0.95 * offered and acked >= 0.95 * committed: bottleneck = "none: offered load delivered"
elif acked < 0.95 * committed: bottleneck = "publish (acks %.0f%% of commits, backlog %d)" % (100 * acked / committed, backlog)
elif committed < 0.9 * polled: bottleneck = "buffer (commits %.0f%% of polled)" % (100 * committed / polled)
elif polled < 0.9 * offered: bottleneck = "Modbus polling (polls %.0f%% of schedule)" % (100 * polled / offered)
else: bottleneck = "buffer or CPU (commits %.0f%% of offered)" % (100 * committed / offered)
r = dict(label="$label", devices=D, signals=S, interval=I, seconds=round(T, 1), offered=offered, polled=round(polled),
         committed=round(committed), acked=round(acked), sub_points=sub["points"], backlog=backlog,
         cpu_s=round(cpu, 2), cpu_pct=round(100 * cpu / T, 2), cpu_us_per_point=round(1e6 * cpu / max(acked * T, 1), 2),
         cpu_total_s=round(cpu_total, 2), peak_rss_mb=round($hwm / 1024, 1), lat_p50_ms=sub["latency_p50_ms"],
         lat_p99_ms=sub["latency_p99_ms"], bottleneck=bottleneck, load="$load0 -> $(load_avg)", date="$(date -u +%F)")
print("%(label)s: %(devices)d x %(signals)d @ %(interval)s for %(seconds).0f s: offered %(offered).0f, polled %(polled)d, committed %(committed)d, acked %(acked)d points/s (subscriber got %(sub_points)d); CPU %(cpu_s).2f s = %(cpu_pct).2f %% of one core = %(cpu_us_per_point).2f us/point; peak RSS %(peak_rss_mb).1f MB; latency p50 %(lat_p50_ms)s ms p99 %(lat_p99_ms)s ms; bottleneck: %(bottleneck)s; load %(load)s" % r)
open("$RESULTS", "a").write(json.dumps(r) + "\n")
PY
}

section_raw() {
  local base=$(( 20000 + RANDOM % 20000 )) bp; bp=$(free_port)
  start_sim 20 1000 "$base"; local sp=$sim_pid
  echo "raw: load $(load_avg)"
  "$bin/uplink-bench" --server "127.0.0.1:$base" --poll-only --seconds 3 --registers 125 | sed 's/^/raw /'
  "$bin/uplink-bench" --server "127.0.0.1:$base" --poll-only --seconds 3 --registers 100 | sed 's/^/raw /'
  stop_pid $sp
  start_broker "$bp"; local brk=$broker_pid
  start_sub "$bp" 'bench/#' "$work/sub-raw.json"; local sbp=$sub_pid
  # Message sizes of the e2e runs: 1,000 points (~80 KB) and 100 points (~8 KB).
  "$bin/uplink-bench" --mqtt "127.0.0.1:$bp" --seconds 3 --payload-bytes 80000 | sed 's/^/raw /'
  "$bin/uplink-bench" --mqtt "127.0.0.1:$bp" --seconds 3 --payload-bytes 8000 | sed 's/^/raw /'
  stop_pid $sbp; stop_pid $brk
  "$bin/uplink-bench" --buffer-dir "$work/rawbuf" --seconds 3 --records-per-commit 1000 | sed 's/^/raw /'
  "$bin/uplink-bench" --buffer-dir "$work/rawbuf" --seconds 3 --records-per-commit 100 | sed 's/^/raw /'
  rm -rf "$work/rawbuf"
  echo "raw: load $(load_avg)"
}

section_throughput() {
  e2e 20 1000 100ms "$DUR" throughput-200k
  e2e 40 1000 100ms "$DUR" throughput-400k
}

section_scale() {
  for I in 1s 100ms; do for S in 100 1000; do for D in 1 10 100; do
    e2e "$D" "$S" "$I" "$DUR" "scale-${D}x${S}@$I"
  done; done; done
}

section_latency() { e2e 10 100 1s $(( DUR * 2 )) latency-10x100@1s; }

section_drain() {
  drain_run 10 100 1s "$OUTAGE" drain
  # Draining while a heavy ingest goes on: how much of each the agent sustains at once.
  drain_run 20 1000 100ms "$([ "$LONG" = 1 ] && echo 30 || echo 10)" drain-under-load
}

# drain_run DEVICES SIGNALS INTERVAL OUTAGE LABEL
drain_run() {
  local D=$1 S=$2 I=$3 OUT=$4 label=$5
  # The drain rate is measured at the agent: acked_records (from the buffer) sampled every ~0.1 s after
  # the broker comes back; the subscriber (whose reconnect delay decides when the broker hands it the
  # queue) checks that every late point arrives. Ingest while draining: records committed meanwhile.
  local bp base state="$work/state-$label" sub="$work/sub-$label.json"
  bp=$(free_port); base=$(( 20000 + RANDOM % 20000 ))
  start_sim "$D" "$S" "$base"; local sp=$sim_pid
  agent_config "$D" "$S" "$I" "$base" "$bp" > "$work/agent-drain.yaml"
  start_broker "$bp"; local brk=$broker_pid
  start_sub "$bp" 'uplink/#' "$sub"; local sbp=$sub_pid
  stop_pid $brk    # the subscriber's session survives in the broker's persistence
  "$bin/uplink" run "$work/agent-drain.yaml" --state-dir "$state" > "$work/uplink-drain.log" 2>&1 & local agent=$!; pids+=($agent)
  sleep "$OUT"
  local backlog; backlog=$(status_json "$state" | jfield 'd["backlog"]["records"]')
  start_broker "$bp"; brk=$broker_pid
  : > "$work/drain-samples"
  for _ in $(seq 600); do   # up to ~60 s
    status_json "$state" | "$py" -c 'import json,sys,time; d=json.load(sys.stdin); print(time.time(), d["acked_records"], d["next_seq"], d["backlog"]["records"])' >> "$work/drain-samples"
    [ "$(tail -1 "$work/drain-samples" | cut -d' ' -f4)" -lt $(( D * S * 2 )) ] && break
    sleep 0.05
  done
  sleep 3
  stop_pid $agent; sleep 0.5; stop_pid $sbp; stop_pid $brk; stop_pid $sp
  "$py" - "$sub" "$work/drain-samples" <<PY
import json, sys
s = json.load(open(sys.argv[1]))
rows = [tuple(float(x) for x in l.split()) for l in open(sys.argv[2]) if l.strip()]
a0 = rows[0][1]
first = next(i for i, r in enumerate(rows) if r[1] > a0)          # the first sample after acks resumed
start = rows[first - 1] if first > 0 else rows[0]
end = rows[-1]
d = max(end[0] - start[0], 1e-3)
rate = (end[1] - start[1]) / d                                    # upper bound on the window: conservative rate
ingest = (end[2] - start[2]) / d
ival = float("$I"[:-2]) / 1000 if "$I".endswith("ms") else float("$I"[:-1])
offered = $D * $S / ival
r = dict(label="$label", devices=$D, signals=$S, interval="$I", offered=offered, outage_s=$OUT, backlog=$backlog, acked_in_drain=int(end[1] - start[1]), drain_s=round(d, 2),
         drain_rate=round(rate), ingest_during_drain=round(ingest), ratio_to_ingest=round(rate / offered, 1),
         sub_late_points=s["late_points"], sub_points=s["points"], load="$(load_avg)", date="$(date -u +%F)")
print("%(label)s: %(devices)d x %(signals)d @ %(interval)s, broker down %(outage_s)d s, %(backlog)d records waiting; the agent had %(acked_in_drain)d records acknowledged within %(drain_s).2f s of acks resuming = %(drain_rate)d points/s = %(ratio_to_ingest).1fx the %(offered).0f points/s ingest (sampled every ~0.1 s: a lower bound); ingest meanwhile %(ingest_during_drain)d points/s committed; the subscriber got %(sub_points)d points, %(sub_late_points)d of them late; load %(load)s" % r)
open("$RESULTS", "a").write(json.dumps(r) + "\n")
PY
}

section_rtu() {
  # A realistic mixed map: the injection moulding machine's profile (holding and input registers, coils,
  # discrete inputs; 16/32-bit values, gaps), served over RTU on a pty with line timing.
  local cfg="$root/Configs/injection-moulding.yaml" prof="$root/Simulators/injection-moulding.yaml"
  for baud in 9600 115200; do
    local link="$work/rtu-$baud"
    "$bin/uplink-sim" "$prof" --rtu --timing --baud "$baud" --link "$link" > "$work/sim-rtu-$baud.log" 2>&1 & local sp=$!; pids+=($sp)
    for _ in $(seq 50); do grep -q ready "$work/sim-rtu-$baud.log" && break; sleep 0.1; done
    echo "rtu: load $(load_avg)"
    "$bin/uplink-bench" --rtu "$link" --baud "$baud" --config "$cfg" --seconds "$([ "$LONG" = 1 ] && echo 30 || echo 10)"
    stop_pid $sp
  done
}

for s in "${sections[@]}"; do "section_$s"; done
echo "# done $(date -u +%FT%TZ), load $(load_avg)"
