#!/usr/bin/env bash
# Run once by the influxdb:2 image after its initial setup (/docker-entrypoint-initdb.d): map the
# v1 database name "sdgw" to the bucket, so that InfluxQL (Grafana, `sdgw api`) finds it, and give
# Grafana a read-only v1 user. Gateways write with their own tokens (see the README).
set -euo pipefail

bucket_id=${DOCKER_INFLUXDB_INIT_BUCKET_ID:?the image exports it after setup}
influx v1 dbrp create --db sdgw --rp autogen --default --bucket-id "$bucket_id" \
  --org "${DOCKER_INFLUXDB_INIT_ORG:?}"
influx v1 auth create --username grafana --password "${SDGW_GRAFANA_INFLUX_PASSWORD:?}" \
  --read-bucket "$bucket_id" --org "${DOCKER_INFLUXDB_INIT_ORG:?}" --description "Grafana (read only)"
