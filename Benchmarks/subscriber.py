#!/usr/bin/env python3
"""QoS 1 subscriber for the benchmarks: runs `mosquitto_sub -v` itself (so the caller can stop it by
this process's pid), counts points and measures arrival - poll time on this machine.

  subscriber.py PORT TOPIC OUT.json [--format uplink|tb] [--id CLIENT_ID]

uplink format: one message per poll, points counted by `"seq":`, the poll time is the header's
first `"ts":`; `"late":true` messages (sent after an outage) are counted apart.
tb format (ThingsBoard gateway, v1/gateway/telemetry): {"device": [{"ts": ms, "values": {...}}]}, a
point per value. Latency samples come from messages that are not late (uplink) or whose age is < 10 s
(tb, which has no late flag). On SIGTERM/SIGINT/EOF writes a JSON summary to OUT.json."""
import json, os, re, signal, subprocess, sys, time

port, topic, out = sys.argv[1], sys.argv[2], sys.argv[3]
fmt = sys.argv[sys.argv.index("--format") + 1] if "--format" in sys.argv else "uplink"
cid = sys.argv[sys.argv.index("--id") + 1] if "--id" in sys.argv else "bench-sub-%d" % os.getpid()
proc = subprocess.Popen(["mosquitto_sub", "-p", port, "-q", "1", "-c", "-i", cid, "-t", topic, "-v"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
st = dict(points=0, messages=0, first=None, last=None, late_points=0, late_first=None, late_last=None,
          ontime=[])
lat = []            # ms, one sample per message (uplink) or per ts group (tb)
timeline = {}       # arrival second -> points (for rates over time)
ts_re = re.compile(rb'"ts":(\d+)')
dev_re = re.compile(rb'"device":"([^"]*)"')
polls = {} if "--polls" in sys.argv else None   # (device, poll ts) -> points: duplicates counted once

def finish(*_):
    try: proc.terminate()
    except Exception: pass
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None
    if st["late_first"]:
        a, b = st["late_first"], st["late_last"]
        st["ontime_points_during_drain"] = sum(n for t, n in st["ontime"] if a <= t <= b)
    del st["ontime"]
    if polls is not None:
        count = lambda v: v if isinstance(v, int) else len(v)
        st["distinct_points"] = sum(count(v) for v in polls.values())
        st["polls"] = sorted([ts, count(v)] for (_, ts), v in polls.items())
    st.update(latency_samples=len(lat), latency_p50_ms=q(0.50), latency_p99_ms=q(0.99), latency_max_ms=lat[-1] if lat else None,
              timeline=sorted(timeline.items()))
    with open(out, "w") as f: json.dump(st, f)
    sys.exit(0)

signal.signal(signal.SIGTERM, finish)
signal.signal(signal.SIGINT, finish)
for line in proc.stdout:
    now = time.time()
    if fmt == "uplink":
        n = line.count(b'"seq":')
        if not n: continue
        late = b'"late":true' in line
        if not late:
            m = ts_re.search(line)
            if m: lat.append(now * 1000 - int(m.group(1)))
        if polls is not None:
            m, dm = ts_re.search(line), dev_re.search(line)
            if m and dm: polls[(dm.group(1).decode(), int(m.group(1)))] = n
    else:
        try: body = json.loads(line.split(b" ", 1)[1])
        except Exception: continue
        n = 0; late = False
        for dev, entries in body.items():
            for e in (entries if isinstance(entries, list) else [entries]):
                vals = e.get("values", e) if isinstance(e, dict) else {}
                n += len(vals)
                if polls is not None and "ts" in e: polls.setdefault((dev, e["ts"]), set()).update(vals)  # a poll may be split
                if "ts" in e:
                    age = now * 1000 - e["ts"]
                    if age < 10_000: lat.append(age)
                    else: late = True
        if not n: continue
    st["points"] += n; st["messages"] += 1
    st["first"] = st["first"] or now; st["last"] = now
    sec = int(now); timeline[sec] = timeline.get(sec, 0) + n
    if late:
        st["late_points"] += n
        st["late_first"] = st["late_first"] or now
        st["late_last"] = now
    elif st["late_first"] or len(st["ontime"]) < 100000:
        st["ontime"].append((now, n))
finish()
