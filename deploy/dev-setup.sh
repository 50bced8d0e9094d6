#!/usr/bin/env bash
# Prepare a development/CI machine (Debian 12 / Raspberry Pi OS bookworm): the Debian servers the
# tests and the demo start themselves, then a venv with the project and its dev dependencies.
# Idempotent; installs only what is missing. Needs root (or sudo) only for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
need=()
command -v "$python" >/dev/null 2>&1 || need+=(python3)
# Debian splits venv/ensurepip out of python3: without it `python3 -m venv` cannot make a venv.
"$python" -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv python3-pip)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
# The deployment and status-page tests: shellcheck on every script, systemd-analyze verify on the
# units, headless Chromium rendering the technician's status page.
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "dev-setup: installing Debian packages: ${need[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # Where systemd runs, these packages start their own services on the standard ports: the
  # tests and the demo start private servers on their own ports and never touch those.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
echo "dev-setup: ready"
