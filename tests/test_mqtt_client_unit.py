"""MqttProtocol driven with crafted bytes through a recording transport (our own seam): parsing,
the codec's sharp edges, packet-id accounting and the client-side Receive Maximum."""

from __future__ import annotations

import asyncio
import functools

import mqtt5
import pytest

from gateway.sources.mqtt_client import (
    AckToken,
    InboundMessage,
    MqttClient,
    MqttOptions,
    MqttProtocol,
)

pytestmark = pytest.mark.timeout(20)

CONNACK = mqtt5.ConnAckPacket(session_present=True).write()
PINGRESP = mqtt5.PingRespPacket().write()


def in_loop(test):
    """Run a synchronous test body inside a running event loop (the protocol makes futures)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        async def main():
            return test(*args, **kwargs)

        return asyncio.run(main())

    return wrapper


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_publish(
    topic: bytes, payload: bytes = b"", *, qos: int = 1, pid: int | None = None, dup=False, retain=False
) -> bytes:
    """A PUBLISH built by hand, so that it can carry what mqtt5 refuses to write."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += (pid or 0).to_bytes(2, "big")
    body += b"\x00" + payload  # no properties
    first = 0x30 | (dup << 3) | (qos << 1) | int(retain)
    return bytes([first]) + varint(len(body)) + body


def publish(topic: str, payload: bytes, *, qos: int = 1, pid: int | None = None, **kw) -> bytes:
    return mqtt5.PublishPacket(topic, payload, qos=mqtt5.QoS(qos), packet_id=pid, **kw).write()


def puback(*pids: int) -> bytes:
    return b"".join(mqtt5.PubAckPacket(pid).write() for pid in pids)


class RecordingTransport(asyncio.Transport):
    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.writes: list[bytes] = []
        self.reading = True
        self.closed = False
        self.aborted = False

    def write(self, data) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading, "resumed twice"
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    @property
    def written(self) -> bytes:
        return b"".join(self.writes)


class Harness:
    """A client, one connected protocol on a recording transport, and what on_batch got."""

    def __init__(self, **options) -> None:
        options = {"host": "127.0.0.1", "port": 1, "client_id": "unit", **options}
        self.batches: list[tuple[list[InboundMessage], AckToken]] = []
        self.client = MqttClient(MqttOptions(**options), lambda msgs, tok: self.batches.append((msgs, tok)))
        self.proto, self.transport = self.connect()

    def connect(self) -> tuple[MqttProtocol, RecordingTransport]:
        proto = self.client.new_protocol()
        transport = RecordingTransport(proto)
        proto.connection_made(transport)
        proto.data_received(CONNACK)
        return proto, transport

    @property
    def messages(self) -> list[InboundMessage]:
        return [m for msgs, _ in self.batches for m in msgs]


STREAM_PARTS = [
    publish("a/b", b"", qos=0),
    publish("a/b", b"x" * 5, pid=1),
    publish("sdgw/street/device-\u00e9", b"y" * 200, pid=2, retain=True),  # 2-byte remaining length
    publish("a/c", b"z" * 17000, pid=3, duplicate=True),  # 3-byte remaining length
    PINGRESP,
    publish("a/b", b"last", qos=0),
]
EXPECTED = [
    InboundMessage("a/b", b"", 0, None, False, False),
    InboundMessage("a/b", b"x" * 5, 1, 1, False, False),
    InboundMessage("sdgw/street/device-\u00e9", b"y" * 200, 1, 2, False, True),
    InboundMessage("a/c", b"z" * 17000, 1, 3, True, False),
    InboundMessage("a/b", b"last", 0, None, False, False),
]


@in_loop
def test_protocol_whole_stream_yields_messages_in_order():
    """All PUBLISHes of a chunk arrive in one on_batch call, in order, QoS 0 and 1 alike."""
    h = Harness()
    h.proto.data_received(b"".join(STREAM_PARTS))
    assert len(h.batches) == 1
    msgs, token = h.batches[0]
    assert msgs == EXPECTED
    assert len(token) == 3
    assert h.client.stats.messages_received == 5
    assert h.client.stats.redeliveries == 1
    assert h.proto.unacked == 3


@in_loop
def test_protocol_chunk_split_at_every_byte_boundary_yields_same_messages():
    """A packet cut anywhere (inside the remaining length too) is kept and completed later."""
    stream = b"".join(STREAM_PARTS)
    for cut in range(1, len(stream)):
        h = Harness()
        h.proto.data_received(stream[:cut])
        h.proto.data_received(stream[cut:])
        assert h.messages == EXPECTED, cut
        assert not h.transport.closed
    h = Harness()
    for i in range(len(stream)):
        h.proto.data_received(stream[i : i + 1])
    assert h.messages == EXPECTED


@in_loop
def test_protocol_large_packet_in_many_chunks_delivered_once_complete():
    h = Harness()
    data = publish("big", b"q" * 300_000, pid=9)
    for i in range(0, len(data), 65536):
        assert not h.batches
        h.proto.data_received(data[i : i + 65536])
    assert h.messages == [InboundMessage("big", b"q" * 300_000, 1, 9, False, False)]


@in_loop
def test_protocol_oversized_remaining_length_rejected_before_buffering():
    """The size is bounded from the fixed header: the body is never waited for or parsed."""
    h = Harness(max_packet_bytes=1024)
    h.proto.data_received(publish("a/b", b"ok", pid=1) + b"\x32" + varint(2000) + b"\x00\x03a/b")
    assert h.client.stats.oversized_packets == 1
    assert h.batches == []
    assert h.transport.closed
    assert (
        h.transport.writes[-1]
        == mqtt5.DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode.PACKET_TOO_LARGE).write()
    )


@in_loop
def test_protocol_remaining_length_over_four_bytes_is_malformed():
    h = Harness()
    h.proto.data_received(b"\x30\xff\xff\xff\xff\x01")
    assert h.client.stats.malformed_packets == 1
    assert h.transport.closed


@pytest.mark.parametrize(
    "packet",
    [b"\x36\x05\x00\x01a\x00\x01", raw_publish(b"", b"p", pid=5), b"\x00\x00"],
    ids=["qos3", "empty-topic-without-alias", "reserved-type"],
)
@in_loop
def test_protocol_malformed_packet_counted_and_dropped(packet):
    h = Harness()
    h.proto.data_received(packet)
    assert h.client.stats.malformed_packets == 1
    assert h.batches == []
    assert h.transport.closed


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pyo3 reports it
@in_loop
def test_protocol_invalid_utf8_topic_panic_is_contained():
    """mqtt5 panics (a BaseException) on a non-UTF-8 topic: counted, the connection dropped,
    nothing raised out of data_received, and the next connection works."""
    h = Harness()
    h.proto.data_received(raw_publish(b"a/\xff", b"p", pid=4))
    assert h.client.stats.malformed_packets == 1
    assert h.batches == []
    assert h.transport.closed
    proto, _ = h.connect()
    proto.data_received(publish("a/b", b"p", pid=4))
    assert h.messages == [InboundMessage("a/b", b"p", 1, 4, False, False)]


@pytest.mark.parametrize(
    "packet",
    [
        raw_publish(b"a/b", b"p", pid=0),
        raw_publish(b"a/+", b"p", pid=5),
        raw_publish(b"a/#", b"p", qos=0),
        raw_publish(b"a/b", b"p", qos=2, pid=5),
    ],
    ids=["packet-id-0", "plus-wildcard", "hash-wildcard", "qos2"],
)
@in_loop
def test_protocol_invalid_publish_is_protocol_violation_not_delivered(packet):
    h = Harness()
    h.proto.data_received(packet)
    assert h.client.stats.protocol_violations == 1
    assert h.batches == []
    assert h.transport.closed
    assert (
        h.transport.writes[-1] == mqtt5.DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode.PROTOCOL_ERROR).write()
    )


@in_loop
def test_ack_writes_all_pubacks_of_a_token_in_one_write():
    h = Harness()
    h.proto.data_received(publish("a", b"1", pid=1) + publish("a", b"2", qos=0) + publish("a", b"3", pid=65535))
    h.transport.writes.clear()
    h.client.ack(h.batches[0][1])
    assert h.transport.writes == [puback(1, 65535)]
    assert h.client.stats.acks_sent == 2
    h.client.ack(h.batches[0][1])  # a second ack of the same token is a no-op
    assert h.transport.writes == [puback(1, 65535)]
    assert h.proto.unacked == 0


@in_loop
def test_ack_reused_packet_id_puback_held_until_every_delivery_acked():
    """Mosquitto 2.0.11 reuses ids still unacknowledged: the PUBACK for id 7 must wait for every
    delivery that holds it, whatever the order of the acks."""
    h = Harness()
    for payload in (b"first", b"second", b"third"):
        h.proto.data_received(publish("a", payload, pid=7))
    assert [m.payload for m in h.messages] == [b"first", b"second", b"third"]
    assert h.client.stats.protocol_violations == 2
    h.transport.writes.clear()
    h.client.ack(h.batches[1][1])
    h.client.ack(h.batches[2][1])
    assert h.transport.writes == []
    h.client.ack(h.batches[0][1])
    assert h.transport.writes == [puback(7)]


@in_loop
def test_ack_reused_packet_id_within_one_chunk():
    h = Harness()
    h.proto.data_received(publish("a", b"1", pid=7) + publish("a", b"2", pid=7) + publish("a", b"3", pid=8))
    h.transport.writes.clear()
    h.client.ack(h.batches[0][1])
    assert h.transport.writes == [puback(7, 8)]
    assert h.proto.unacked == 0


@in_loop
def test_ack_stale_generation_token_ignored():
    """A token from an earlier connection writes nothing: its messages come back with DUP."""
    h = Harness()
    h.proto.data_received(publish("a", b"1", pid=1))
    old_token = h.batches[0][1]
    h.transport.close()
    proto, transport = h.connect()
    proto.data_received(publish("a", b"1", pid=1, duplicate=True))
    transport.writes.clear()
    h.client.ack(old_token)
    assert transport.writes == []
    assert h.client.stats.stale_acks == 1
    h.client.ack(h.batches[1][1])
    assert transport.writes == [puback(1)]


@in_loop
def test_protocol_pause_reading_at_receive_max_and_resume_below():
    h = Harness(receive_max=4)
    h.proto.data_received(publish("a", b"", pid=1) + publish("a", b"", pid=2) + publish("a", b"", pid=3))
    assert h.transport.reading
    h.proto.data_received(publish("a", b"", qos=0))  # QoS 0 does not count
    assert h.transport.reading
    h.proto.data_received(publish("a", b"", pid=4) + publish("a", b"", pid=5))
    assert not h.transport.reading
    assert h.client.stats.paused == 1
    assert h.client.stats.quota_pauses == 1
    h.client.ack(h.batches[2][1])  # 5 → 3 unacked
    assert h.transport.reading
    assert h.client.stats.paused == 0


@in_loop
def test_protocol_receive_max_applies_from_connack_within_the_same_chunk():
    """A resumed session's backlog follows the CONNACK at once, and nothing waits for the SUBACK
    (it queues behind that backlog): the bound applies from the CONNACK on."""
    h = Harness(receive_max=2)
    proto = h.client.new_protocol()
    transport = RecordingTransport(proto)
    proto.connection_made(transport)
    proto.data_received(CONNACK + publish("a", b"", pid=1) + publish("a", b"", pid=2) + publish("a", b"", pid=3))
    assert len(h.batches) == 1
    assert not transport.reading


@in_loop
def test_protocol_connack_refused_does_not_pause():
    h = Harness(receive_max=1)
    h.client.pause()
    proto = h.client.new_protocol()
    transport = RecordingTransport(proto)
    proto.connection_made(transport)
    proto.data_received(mqtt5.ConnAckPacket(reason_code=mqtt5.ConnAckReasonCode.NOT_AUTHORIZED).write())
    assert not proto.is_ready
    assert transport.reading


@in_loop
def test_protocol_reading_resumes_only_when_neither_quota_nor_external_pause():
    h = Harness(receive_max=2)
    h.client.pause()
    assert not h.transport.reading
    h.proto.data_received(publish("a", b"", pid=1) + publish("a", b"", pid=2))  # e.g. TLS leftovers
    h.client.resume()
    assert not h.transport.reading  # still at the Receive Maximum
    h.client.pause()
    h.client.ack(h.batches[0][1])
    assert not h.transport.reading  # still paused by the caller
    h.client.resume()
    assert h.transport.reading


@in_loop
def test_protocol_control_packets_between_publishes():
    """A PUBACK for our own publish and a PINGRESP in the middle of a chunk do not split or
    disturb the batch; inbound and outbound packet ids are separate spaces."""
    h = Harness()
    h.proto.data_received(publish("a", b"1", pid=1) + puback(1) + PINGRESP + publish("a", b"2", pid=2))
    assert [m.payload for m in h.messages] == [b"1", b"2"]
    assert h.client.stats.protocol_violations == 0
    assert not h.transport.closed


@in_loop
def test_protocol_broker_disconnect_closes_connection():
    h = Harness()
    h.proto.data_received(mqtt5.DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode.SESSION_TAKEN_OVER).write())
    assert h.transport.closed


@in_loop
def test_protocol_on_batch_exception_drops_connection():
    """A failing consumer must not ack: the connection goes, the broker redelivers."""
    client = MqttClient(MqttOptions("127.0.0.1", 1, "unit"), lambda msgs, tok: 1 / 0)
    proto = client.new_protocol()
    transport = RecordingTransport(proto)
    proto.connection_made(transport)
    proto.data_received(CONNACK + publish("a", b"1", pid=1))
    assert transport.closed
    assert puback(1) not in transport.writes


def test_options_reject_settings_that_lose_data():
    with pytest.raises(ValueError, match="session_expiry_s"):
        MqttOptions("h", 1, "id", session_expiry_s=0)
    with pytest.raises(ValueError, match="QoS"):
        MqttOptions("h", 1, "id", subscriptions=(("a/#", 2),))
    assert "secret" not in repr(MqttOptions("h", 1, "id", password="secret"))


def test_publish_waiting_for_a_connection_fails_as_soon_as_shutdown_starts():
    """A publish that waits for a broker (none here) must not sit out its own timeout once the
    client shuts down: it fails with MqttClosed at once."""
    from gateway.errors import MqttClosed

    async def main() -> float:
        client = MqttClient(MqttOptions("127.0.0.1", 1, "unit"), lambda msgs, tok: None)
        pending = asyncio.create_task(client.publish("t", b"x", qos=0, timeout_s=30))
        await asyncio.sleep(0.05)
        t0 = asyncio.get_running_loop().time()
        await client.shutdown(timeout_s=0.1)
        with pytest.raises(MqttClosed):
            await pending
        return asyncio.get_running_loop().time() - t0

    assert asyncio.run(main()) < 2.0


@in_loop
def test_rejected_puback_is_counted_apart_from_published():
    h = Harness()
    ok_pid, _ = h.client._queue_publish("sdgw/s/status", b"{}", True, None)
    bad_pid, _ = h.client._queue_publish("not/allowed", b"{}", False, None)
    h.proto.data_received(
        mqtt5.PubAckPacket(ok_pid).write()
        + mqtt5.PubAckPacket(bad_pid, reason_code=mqtt5.PubAckReasonCode.NOT_AUTHORIZED).write()
    )
    assert h.client.stats.published == 1
    assert h.client.stats.publish_rejected == 1
