#!/usr/bin/env bash
# Prepare a development/CI machine (Debian 12 / Raspberry Pi OS bookworm): the Debian servers the
# tests and the demo start themselves, then a venv with the project and its dev dependencies.
# Idempotent; installs only what is missing. Needs root (or sudo) only for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "dev-setup: installing Debian packages: ${need[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # policy-rc.d keeps the packages' own services from starting where systemd runs: tests and
  # the demo start their own servers on their own ports and never touch the system ones.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
echo "dev-setup: ready"
