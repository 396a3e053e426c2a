#!/usr/bin/env bash
# Installs everything Uplink needs on Debian 12 (run as root): system libraries, the broker,
# the third-party Modbus peers used by the tests, and a Python venv with pymodbus.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libmodbus-dev libmosquitto-dev libsqlite3-dev mosquitto mosquitto-clients socat mbpoll
          openssl python3-venv pkg-config iproute2 procps)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# The broker is started by the tests and the demo with their own configs; keep the system one quiet.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
  systemctl stop mosquitto || true
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import pymodbus, serial" 2>/dev/null; then
  echo "setup: creating .venv with pymodbus"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "pymodbus[serial]==3.8.6"
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected /opt/swift/usr/bin)" >&2; exit 1; }
