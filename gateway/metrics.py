"""Prometheus metrics of a running gateway, read from the components' plain counters at scrape time.

The hot path only increments integers on plain objects (a prometheus_client `Counter.inc()` costs
about a microsecond, a tenth of our whole per-message budget); this collector turns them into
metric families when /metrics is scraped.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:
    from gateway.runtime import Gateway

COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class _Histogram:
    """Cumulative histogram state fed from the log's drained samples."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def feed(self, values: list) -> None:
        for v in values:
            self.total += v
            for i, b in enumerate(self.buckets):
                if v <= b:
                    self.counts[i] += 1
                    break
            else:
                self.counts[-1] += 1

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        acc = 0
        pairs = []
        for b, c in zip(self.buckets, self.counts, strict=False):
            acc += c
            pairs.append((str(b), acc))
        acc += self.counts[-1]
        pairs.append(("+Inf", acc))
        return HistogramMetricFamily(name, doc, buckets=pairs, sum_value=self.total)


class GatewayCollector:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.commit_latency = _Histogram(COMMIT_BUCKETS)
        self.commit_batch = _Histogram(BATCH_BUCKETS)

    def _persisted_counters(self) -> dict[str, int]:
        try:
            conn = sqlite3.connect(f"file:{self.gw.config.log_path}?mode=ro", uri=True)
            try:
                return dict(conn.execute("SELECT name, value FROM counters"))
            finally:
                conn.close()
        except sqlite3.Error:
            return {}

    def collect(self):
        gw = self.gw
        st = gw.log.stats

        recv = CounterMetricFamily("sdgw_source_messages", "Messages received per device", labels=["device"])
        recs = CounterMetricFamily("sdgw_source_records", "Records made per device", labels=["device"])
        errs = CounterMetricFamily(
            "sdgw_decode_errors", "Rejected payloads per device and reason", labels=["device", "reason"]
        )
        for device, ds in gw.pipeline.stats.items():
            recv.add_metric([device], ds.messages)
            recs.add_metric([device], ds.records)
            for reason, n in ds.rejects.items():
                errs.add_metric([device, reason], n)
        yield recv
        yield recs
        yield errs
        unrouted = CounterMetricFamily(
            "sdgw_mqtt_unrouted_messages", "MQTT messages on a topic no device is configured on"
        )
        unrouted.add_metric([], gw.pipeline.unrouted)
        yield unrouted

        out = CounterMetricFamily("sdgw_sink_records_sent", "Records accepted by InfluxDB per sink", labels=["sink"])
        rej = CounterMetricFamily(
            "sdgw_sink_records_rejected", "Records InfluxDB rejected (dead-lettered)", labels=["sink"]
        )
        up = GaugeMetricFamily("sdgw_sink_healthy", "1 when the sink's last write worked", labels=["sink"])
        depth = GaugeMetricFamily("sdgw_log_pending_records", "Records not yet delivered, per sink", labels=["sink"])
        for sink in gw.sinks:
            out.add_metric([sink.name], sink.stats.records_sent)
            rej.add_metric([sink.name], sink.stats.records_rejected)
            up.add_metric([sink.name], 1 if sink.stats.healthy else 0)
            depth.add_metric([sink.name], gw.log.pending_count(sink.name))
        yield from (out, rej, up, depth)

        g = GaugeMetricFamily(
            "sdgw_log_used_bytes", "Bytes the log uses (pages in use plus WAL), as the cap counts them"
        )
        g.add_metric([], st.used_bytes)
        yield g
        g = GaugeMetricFamily("sdgw_log_cap_bytes", "The log's cap")
        g.add_metric([], gw.log.cap_bytes)
        yield g
        g = GaugeMetricFamily("sdgw_log_intake_paused", "1 while pausable sources are paused at the cap")
        g.add_metric([], 1 if st.paused else 0)
        yield g
        c = CounterMetricFamily("sdgw_log_records_appended", "Records committed to the log")
        c.add_metric([], st.records_appended)
        yield c
        c = CounterMetricFamily("sdgw_log_duplicates", "Appends ignored because their identity was already logged")
        c.add_metric([], st.duplicates)
        yield c
        c = CounterMetricFamily("sdgw_dead_letters", "Dead letters written")
        c.add_metric([], st.dead_letters)
        yield c
        housekeeping = CounterMetricFamily(
            "sdgw_log_housekeeping", "Records compacted or dropped at the cap, by class", labels=["action"]
        )
        for name, value in self._persisted_counters().items():
            housekeeping.add_metric([name], value)
        yield housekeeping

        sizes, st.commit_batch_sizes = st.commit_batch_sizes, []
        secs, st.commit_seconds = st.commit_seconds, []
        self.commit_batch.feed(sizes)
        self.commit_latency.feed(secs)
        yield self.commit_batch.family("sdgw_log_commit_batch_records", "Records per log commit")
        yield self.commit_latency.family("sdgw_log_commit_seconds", "Log commit latency (fsync included)")

        if gw.mqtt is not None:
            m = gw.mqtt.stats
            for name, doc in (
                ("messages_received", "PUBLISH packets received"),
                ("redeliveries", "PUBLISH packets received with DUP set"),
                (
                    "protocol_violations",
                    "Broker protocol violations (e.g. a packet id reused while unacknowledged)",
                ),
                ("malformed_packets", "Packets that could not be parsed"),
                ("oversized_packets", "Packets over max_packet_bytes"),
                ("reconnects", "Reconnections to the broker"),
                ("connects", "Successful CONNACKs"),
                ("connect_failures", "Connection attempts that failed or were refused"),
                ("acks_sent", "PUBACKs sent"),
                ("stale_acks", "Acknowledgements dropped because their connection was gone (redelivered instead)"),
                ("quota_pauses", "Times reading paused because Receive Maximum messages were unacknowledged"),
                ("published", "Our own PUBLISHes acknowledged (status, birth)"),
                ("publish_rejected", "Our own QoS 1 PUBLISHes the broker refused (PUBACK reason ≥ 0x80)"),
                ("subscribe_failures", "Subscriptions the broker refused"),
            ):
                c = CounterMetricFamily(f"sdgw_mqtt_{name}", doc)
                c.add_metric([], getattr(m, name, 0))
                yield c
            g = GaugeMetricFamily("sdgw_mqtt_connected", "1 while connected to the broker")
            g.add_metric([], 1 if gw.mqtt.connected else 0)
            yield g

        if gw.serial:
            opened = GaugeMetricFamily(
                "sdgw_serial_open", "1 while the device's serial port is open", labels=["device"]
            )
            reconnects = CounterMetricFamily(
                "sdgw_serial_reconnects", "Serial port reopened after a loss", labels=["device"]
            )
            read = CounterMetricFamily("sdgw_serial_bytes", "Bytes read from the serial port", labels=["device"])
            frames = CounterMetricFamily(
                "sdgw_serial_frames", "Whole frames cut from the byte stream", labels=["device"]
            )
            for ingest in gw.serial:  # devices sharing a bus report their port's figures alike
                ps = ingest.port.stats
                for device in ingest.devices:
                    opened.add_metric([device.id], 1 if ps.is_open else 0)
                    reconnects.add_metric([device.id], ps.reconnects)
                    read.add_metric([device.id], ps.bytes_in)
                    frames.add_metric([device.id], ps.frames)
            yield from (opened, reconnects, read, frames)
            yield from _poll_families(gw)

        if gw.monitor is not None:
            g = GaugeMetricFamily("sdgw_clock_synchronised", "1 while the clock is synchronised (D7)")
            g.add_metric([], 1 if gw.monitor.synchronised else 0)
            yield g
            g = GaugeMetricFamily("sdgw_clock_wall_time_trusted", "1 once the clock was synchronised in this boot")
            g.add_metric([], 1 if gw.monitor.wall_trusted else 0)
            yield g
            c = CounterMetricFamily("sdgw_clock_jumps", "Jumps of the wall clock against monotonic time")
            c.add_metric([], gw.monitor.jumps)
            yield c


def _poll_families(gw: Gateway):
    """The bus poll loop's counters per polled device (`sdgw_serial_poll_*`)."""
    docs = {
        "requests": "Requests written to the bus (routine polls and commands)",
        "answers": "Requests answered by the device",
        "timeouts": "Requests that went unanswered within their timeout",
        "mismatched": "Frames that did not answer the request in flight (late, another address)",
        "commands": "Commands sent ahead of the routine polls (e.g. a locker open)",
    }
    families = {k: CounterMetricFamily(f"sdgw_serial_poll_{k}", doc, labels=["device"]) for k, doc in docs.items()}
    answering = GaugeMetricFamily(
        "sdgw_serial_poll_answering", "1 while the device answers its polls, 0 once it went silent", labels=["device"]
    )
    for ingest in gw.serial:
        if ingest.poller is None:
            continue
        for device_id, st in ingest.poller.stats.items():
            for key, family in families.items():
                family.add_metric([device_id], getattr(st, key))
            answering.add_metric([device_id], 0 if st.answering is False else 1)
    yield from families.values()
    yield answering


def gateway_registry(gw: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gw))
    return registry
