#!/usr/bin/env bash
# Installs everything (scripts/setup.sh) and runs the whole test suite: unit tests and the
# integration tests that start real peers (pymodbus, mbpoll, socat, mosquitto, uplink-sim) on
# 127.0.0.1. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="/opt/swift/usr/bin:$PATH"
swift build --build-tests --quiet
# One test at a time: the integration suites start brokers, simulators and agents, and time-outs
# are tuned for a 2-core box that is not also running the other suites.
swift test --skip-build --no-parallel "$@"
