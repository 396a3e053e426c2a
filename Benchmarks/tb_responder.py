#!/usr/bin/env python3
"""Answers the ThingsBoard gateway's `getSessionLimits` RPC on the local mosquitto as a ThingsBoard
server would (no rate limits, 100 in flight, 64 KB payloads). Without an answer, gateway 3.8.5 may
wait for it forever and never start sending (seen here: a non-dict reply path leaves
`rate_limits_received` false). Usage: tb_responder.py BROKER_PORT; stop it with SIGTERM."""
import json, signal, subprocess, sys, time

port = sys.argv[1]
limits = {"messages": "0:0,", "telemetryMessages": "0:0,", "telemetryDataPoints": "0:0,"}
answer = json.dumps({"rateLimits": limits, "gatewayRateLimits": limits, "maxInflightMessages": 100, "maxPayloadSize": 65536})
sub = None
def stop(*_):
    if sub: sub.terminate()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:   # mosquitto_sub exits when the broker is down at its start: retry until it is up
    sub = subprocess.Popen(["mosquitto_sub", "-p", port, "-q", "1", "-t", "v1/devices/me/rpc/request/+", "-v"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in sub.stdout:
        topic, _, body = line.partition(" ")
        if '"getSessionLimits"' in body:
            subprocess.run(["mosquitto_pub", "-p", port, "-q", "1", "-t", topic.replace("/request/", "/response/"), "-m", answer],
                           stderr=subprocess.DEVNULL)
    sub.wait()
    time.sleep(0.3)
