"""Grafana dashboards as code: the builder (`boards`), provisioning files, Grafana's query
substitution (to prove every panel's query on a real InfluxDB) and the push to a Grafana."""
