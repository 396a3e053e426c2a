#!/usr/bin/env python3
"""Reads `mosquitto_sub -v` lines on stdin and counts the points (`"seq":` occurrences), the late ones
(sent after an outage) with their first and last arrival times, and optionally the distinct seqs.
Writes a summary as JSON to the file given as argv[1] on EOF or SIGTERM."""
import json, signal, sys, time

out = sys.argv[1]
points = messages = late_points = 0
late_first = late_last = None
seqs = set() if "--seqs" in sys.argv else None
first = last = None

def finish(*_):
    with open(out, "w") as f:
        json.dump({"points": points, "messages": messages, "first": first, "last": last,
                   "late_points": late_points, "late_first": late_first, "late_last": late_last,
                   "distinct_seqs": len(seqs) if seqs is not None else None}, f)
    sys.exit(0)

signal.signal(signal.SIGTERM, finish)
for line in sys.stdin.buffer:
    n = line.count(b'"seq":')
    if n:
        now = time.time()
        first = first or now
        last = now
        points += n
        messages += 1
        if b'"late":true' in line:
            late_points += n
            late_first = late_first or now
            late_last = now
        if seqs is not None:
            for part in line.split(b'"seq":')[1:]:
                seqs.add(int(part.split(b'}')[0]))
finish()
