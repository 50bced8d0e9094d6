#!/usr/bin/env bash
# Create the gateway's database and make its retention policy the default, idempotently:
#   retention.sh [--url http://127.0.0.1:8086] [--database sdgw] [--days 30] [--wait-s 60]
# (installed as /usr/local/sbin/sdgw-influx-retention; install.sh runs it once InfluxDB is up).
# InfluxDB 1.x: CREATE DATABASE is a no-op when it exists; the policy is created, or altered
# when it exists with another duration, so a second run changes nothing.
set -euo pipefail

url=http://127.0.0.1:8086
database=sdgw
days=30
wait_s=60
while [ $# -gt 0 ]; do
  case "$1" in
    --url) url=$2; shift 2 ;;
    --database) database=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --wait-s) wait_s=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "retention.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$database" in
  *[!A-Za-z0-9_.-]*|"") echo "retention.sh: database name must be letters, digits, _ . -" >&2; exit 2 ;;
esac
case "$days" in
  *[!0-9]*|""|0) echo "retention.sh: --days must be a whole number of days > 0" >&2; exit 2 ;;
esac
policy="sdgw_${days}d"

query() {
  # InfluxQL over HTTP; a statement error comes back as HTTP 200 with "error" in the JSON
  local out
  out=$(curl -sS --fail-with-body -XPOST "$url/query" --data-urlencode "q=$1") || {
    echo "retention.sh: InfluxDB at $url refused: $out" >&2
    return 1
  }
  case "$out" in
    *'"error"'*) echo "retention.sh: $1: $out" >&2; return 1 ;;
  esac
  printf '%s' "$out"
}

deadline=$((SECONDS + wait_s))
until curl -sf -o /dev/null "$url/ping"; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "retention.sh: InfluxDB at $url did not answer /ping within ${wait_s} s" >&2
    exit 1
  fi
  sleep 1
done

query "CREATE DATABASE \"$database\"" >/dev/null
policies=$(query "SHOW RETENTION POLICIES ON \"$database\"")
if printf '%s' "$policies" | grep -q "\"$policy\""; then
  query "ALTER RETENTION POLICY \"$policy\" ON \"$database\" DURATION ${days}d REPLICATION 1 DEFAULT" >/dev/null
  echo "retention.sh: $database: policy $policy (${days} days) is the default (kept)"
else
  query "CREATE RETENTION POLICY \"$policy\" ON \"$database\" DURATION ${days}d REPLICATION 1 DEFAULT" >/dev/null
  echo "retention.sh: $database: policy $policy (${days} days) created and made the default"
fi
