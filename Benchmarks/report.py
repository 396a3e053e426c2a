#!/usr/bin/env python3
"""Prints the figures in a results file (JSON lines from run-all.sh and peer.sh) as Markdown tables.
  python3 Benchmarks/report.py [/tmp/uplink-bench-results.jsonl]"""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1] if len(sys.argv) > 1 else "/tmp/uplink-bench-results.jsonl") if l.strip()]

def bottleneck(r):
    # committed/acked come from the buffer's counters; polled from status.json snapshots (a few % of timing noise).
    o, p, c, a = r["offered"], r["polled"], r["committed"], r["acked"]
    if c >= 0.95 * o and a >= 0.95 * c: return "none (offered load delivered)"
    if a < 0.95 * c: return "publish (acked %.0f%% of committed)" % (100 * a / c)
    if c < 0.9 * p: return "buffer (committed %.0f%% of polled)" % (100 * c / p)
    if p < 0.9 * o: return "Modbus polling (%.0f%% of the schedule polled)" % (100 * p / o)
    return "buffer or CPU (committed %.0f%% of offered)" % (100 * c / o)

e2e = [r for r in rows if "committed" in r]
if e2e:
    print("| run | offered points/s | committed | acked (durable, QoS 1) | CPU % of one core | CPU us/point | peak RSS MB | latency p50 / p99 ms | bottleneck | load before -> after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in e2e:
        print("| %s | %.0f | %d | %d | %.2f | %.2f | %.1f | %.0f / %.0f | %s | %s |" % (
            r["label"], r["offered"], r["committed"], r["acked"], r["cpu_pct"], r["cpu_us_per_point"], r["peak_rss_mb"],
            r["lat_p50_ms"] or 0, r["lat_p99_ms"] or 0, bottleneck(r), r["load"]))
for r in rows:
    if r.get("label", "").startswith("drain"):
        print("\n%(label)s: %(devices)s x %(signals)s @ %(interval)s: %(backlog)d records after %(outage_s)d s; %(acked_in_drain)d acknowledged in %(drain_s)s s = %(drain_rate)d points/s (%(ratio_to_ingest)sx the %(offered).0f points/s ingest); ingest meanwhile %(ingest_during_drain)d points/s; load %(load)s" % r)
peer = [r for r in rows if r.get("label", "").startswith("peer-") and "delivered" in r]
if peer:
    print("\n| gateway | workload | offered | delivered points/s | CPU % | CPU us/point | peak RSS MB | latency p50 / p99 ms | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in peer:
        print("| %s | %d x %d @ %d ms | %.0f | %d | %.2f | %.1f | %.1f | %.0f / %.0f | %s |" % (
            r["gateway"], r["devices"], r["signals"], r["interval_ms"], r["offered"], r["delivered"], r["cpu_pct"],
            r["cpu_us_per_point"], r["peak_rss_mb"], r["lat_p50_ms"] or 0, r["lat_p99_ms"] or 0, r["load"]))
out = [r for r in rows if "polled_in_outage_delivered" in r]
if out:
    print("\n| gateway | test | points polled during the outage that arrived | of expected | duplicates |")
    print("|---|---|---|---|---|")
    for r in out:
        test = "%.0f s outage%s" % (r["outage_s"], ", kill -9 halfway" if r["kill9"] else "")
        extra = " (polled before the kill: %s of %s)" % (r["before_kill_delivered"], r["before_kill_expected"]) if r["kill9"] else ""
        print("| %s | %s | %d%s | %.1f %% | %d |" % (r["gateway"], test, r["polled_in_outage_delivered"], extra, 100 * (r["fraction"] or 0), r["duplicates"]))
