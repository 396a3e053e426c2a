#!/usr/bin/env python3
"""Reads `mosquitto_sub -v` lines on stdin and counts the points (`"seq":` occurrences) and seqs.
Writes a summary as JSON to the file given as argv[1] on EOF or SIGTERM."""
import json, signal, sys, time

out = sys.argv[1]
points = messages = 0
seqs = set() if "--seqs" in sys.argv else None
first = last = None

def finish(*_):
    with open(out, "w") as f:
        json.dump({"points": points, "messages": messages, "first": first, "last": last,
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
        if seqs is not None:
            for part in line.split(b'"seq":')[1:]:
                seqs.add(int(part.split(b'}')[0]))
finish()
