"""MqttClient against a real Mosquitto (Debian's 2.0.11) on loopback, with paho-mqtt as the
devices' side: acks, the persistent session across a crash, the client-side Receive Maximum,
a broker restart, will and birth, credentials, keepalive, the shutdown order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import subprocess
import threading
import uuid

import paho.mqtt.client as paho
import paho.mqtt.publish as paho_publish
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.localservers import Mosquitto, free_port
from gateway.sources.mqtt_client import (
    AckToken,
    InboundMessage,
    MqttClient,
    MqttMessageSpec,
    MqttOptions,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(45)]

FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "connect_timeout_s": 3.0}


def run_async(coro) -> None:
    """asyncio.run with a check that the test leaked no task."""

    async def main():
        await coro
        leaked = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leaked, f"leaked tasks: {leaked}"

    asyncio.run(main())


@pytest.fixture(autouse=True)
def no_fd_leak():
    before = set(os.listdir("/proc/self/fd"))
    yield
    gc.collect()  # paho closes its wake-up socketpair only in __del__
    leaked = set(os.listdir("/proc/self/fd")) - before
    assert not leaked, {
        fd: os.readlink(f"/proc/self/fd/{fd}") for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")
    }


RUN_AS = ""  # gateway.localservers.Mosquitto already runs the broker as the current user


@pytest.fixture
def mosquitto(tmp_path):
    with Mosquitto(tmp_path / "mosquitto", extra_conf=RUN_AS) as broker:
        yield broker


@pytest.fixture
def topic() -> str:
    return f"t/{uuid.uuid4().hex[:12]}"


async def wait_until(predicate, timeout_s: float = 10, what: str = "condition") -> None:
    """Poll a condition with a deadline (never a bare sleep for correctness)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


class Collector:
    """The consumer side: records batches; acks them right away, later, or never."""

    def __init__(self, *, auto_ack: bool = True) -> None:
        self.client: MqttClient | None = None
        self.auto_ack = auto_ack
        self.messages: list[InboundMessage] = []
        self.held: list[AckToken] = []
        self.unacked_before: list[int] = []  # QoS 1 messages unacked when each chunk was read

    def on_batch(self, msgs: list[InboundMessage], token: AckToken) -> None:
        assert self.client is not None
        self.unacked_before.append(self.client.unacked - len(token))
        self.messages.extend(msgs)
        if self.auto_ack:  # as the log does: the ack comes after the commit, not in the callback
            asyncio.get_running_loop().call_soon(self.client.ack, token)
        else:
            self.held.append(token)

    def ack_held(self) -> None:
        assert self.client is not None
        tokens, self.held = self.held, []
        for token in tokens:
            self.client.ack(token)

    def payloads(self, topic: str | None = None) -> list[bytes]:
        return [m.payload for m in self.messages if topic is None or m.topic == topic]


def make_client(
    broker: Mosquitto, collector: Collector, client_id: str, topic: str, *, port: int = 0, **options
) -> MqttClient:
    opts = {"subscriptions": ((f"{topic}/#", 1),), **FAST, **options}
    client = MqttClient(MqttOptions("127.0.0.1", port or broker.port, client_id, **opts), collector.on_batch)
    collector.client = client
    return client


@contextlib.asynccontextmanager
async def running(client: MqttClient):
    """client.run() as a task; cancelled (a crash, as far as the broker can tell) at the end
    unless the test shut it down."""
    task = asyncio.create_task(client.run(), name="mqtt-client")
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish_many(broker: Mosquitto, topic: str, payloads: list[bytes], *, qos: int = 1) -> None:
    msgs = [{"topic": topic, "payload": p, "qos": qos} for p in payloads]
    await asyncio.to_thread(paho_publish.multiple, msgs, hostname="127.0.0.1", port=broker.port, protocol=paho.MQTTv5)


class PahoSubscriber:
    """A device-side subscriber (paho's own thread) recording (payload, retain) per message."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.received: list[tuple[bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise AssertionError("paho subscriber did not get its SUBACK")

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.received.append((message.payload, bool(message.retain)))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [p for p, _ in self.received]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_broker_qos1_messages_received_in_order_and_acked(mosquitto, topic):
    """What we acked is gone from the session: a restarted client gets only the new message."""
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    payloads = [b"m%d" % i for i in range(200)]

    async def body():
        collector = Collector()
        client = make_client(mosquitto, collector, client_id, topic)
        async with running(client) as task:
            await client.wait_subscribed(10)
            await publish_many(mosquitto, f"{topic}/a", payloads)
            await wait_until(lambda: len(collector.messages) == 200, what="200 messages")
            await wait_until(lambda: client.stats.acks_sent == 200, what="200 PUBACKs")
            await client.shutdown()
            assert task.done()
        assert collector.payloads() == payloads
        assert all(m.qos == 1 and not m.dup and not m.retain for m in collector.messages)
        assert client.stats.protocol_violations == 0

        again = Collector()
        client = make_client(mosquitto, again, client_id, topic)
        async with running(client):
            await client.wait_subscribed(10)
            await publish_many(mosquitto, f"{topic}/a", [b"marker"])
            await wait_until(lambda: b"marker" in again.payloads(), what="marker")
            await client.shutdown()
        assert again.payloads() == [b"marker"]

    run_async(body())


def test_broker_persistent_session_redelivers_unacked_after_crash(mosquitto, topic):
    """Crash (no DISCONNECT, nothing acked), messages published meanwhile, restart with the same
    client id: every message arrives, the unacked ones again, with DUP."""
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    first = [b"a%d" % i for i in range(100)]
    second = [b"b%d" % i for i in range(100)]

    async def body():
        crashed = Collector(auto_ack=False)
        client = make_client(mosquitto, crashed, client_id, topic)
        async with running(client):
            await client.wait_subscribed(10)
            await publish_many(mosquitto, f"{topic}/x", first)
            await wait_until(lambda: len(crashed.messages) >= 100, what="first 100")
        assert client.stats.acks_sent == 0

        await publish_many(mosquitto, f"{topic}/x", second)
        survivor = Collector()
        client = make_client(mosquitto, survivor, client_id, topic)
        async with running(client):
            await wait_until(lambda: set(first + second) <= set(survivor.payloads()), what="all 200")
            await client.shutdown()
        redelivered = [m for m in survivor.messages if m.payload in set(first)]
        assert sorted(m.payload for m in redelivered) == sorted(first)
        assert all(m.dup for m in redelivered)
        # Mosquitto 2.0.11 sets DUP on the messages it queued while we were away too: DUP says
        # "maybe seen", never "seen" — identity (D4) decides, not the flag.

    run_async(body())


def test_broker_reconnect_redelivers_what_was_not_acked(mosquitto, topic):
    """After a failed commit the caller forces a reconnect: the unacked messages come back."""
    payloads = [b"f%d" % i for i in range(20)]

    async def body():
        collector = Collector(auto_ack=False)
        client = make_client(mosquitto, collector, f"gw-{uuid.uuid4().hex[:8]}", topic)
        async with running(client):
            await client.wait_subscribed(10)
            await publish_many(mosquitto, f"{topic}/f", payloads)
            await wait_until(lambda: len(collector.messages) == 20, what="20 messages")
            collector.held.clear()  # the commit failed: these tokens will never be acked
            client.reconnect("append failed")
            await wait_until(lambda: client.stats.reconnects == 1, what="reconnect")
            await wait_until(lambda: len(collector.messages) == 40, what="redelivery")
            collector.ack_held()
            await client.shutdown()
        assert collector.payloads()[20:] == payloads
        assert all(m.dup for m in collector.messages[20:])

    run_async(body())


def test_broker_receive_max_bound_respected_client_side(mosquitto, topic):
    """With a backlog far above Receive Maximum, we read the socket only while fewer than
    receive_max messages are unacked, whatever the broker sends; nothing is lost."""
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    receive_max = 20
    payloads = [b"q%d" % i for i in range(2000)]

    async def body():
        setup = Collector()
        client = make_client(mosquitto, setup, client_id, topic, receive_max=receive_max)
        async with running(client):
            await client.wait_subscribed(10)  # creates the session and its subscription
            await client.shutdown()
        await publish_many(mosquitto, f"{topic}/q", payloads)  # queued for the offline session

        slow = Collector(auto_ack=False)
        client = make_client(mosquitto, slow, client_id, topic, receive_max=receive_max)
        async with running(client):

            async def commit_loop():
                while True:
                    await asyncio.sleep(0.005)
                    slow.ack_held()

            committer = asyncio.create_task(commit_loop(), name="committer")
            try:
                await wait_until(lambda: set(payloads) <= set(slow.payloads()), 20, "the backlog")
            finally:
                committer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await committer
            slow.ack_held()
            await client.shutdown()
        assert client.stats.quota_pauses >= 1
        assert max(slow.unacked_before) < receive_max  # never read while at the bound
        assert client.stats.malformed_packets == client.stats.oversized_packets == 0

    run_async(body())


def test_broker_restart_mid_stream_nothing_lost(mosquitto, topic):
    """SIGTERM restart with messages in flight and queued: the client reconnects, resubscribes,
    ignores the stale acks, and gets everything (the in-flight ones again, with DUP)."""
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    before = [b"r%d" % i for i in range(300)]
    after = [b"s%d" % i for i in range(300)]

    async def body():
        collector = Collector(auto_ack=False)
        client = make_client(mosquitto, collector, client_id, topic, receive_max=50)
        async with running(client):
            await client.wait_subscribed(10)
            await publish_many(mosquitto, f"{topic}/r", before)
            await wait_until(lambda: client.unacked >= 50, what="Receive Maximum reached")
            old_tokens, collector.held = collector.held, []  # reading is paused: no more come
            await asyncio.to_thread(mosquitto.restart)
            await wait_until(lambda: client.stats.reconnects >= 1, 15, "reconnect")
            for token in old_tokens:  # committed only now: too late, ignored, redelivered
                client.ack(token)
            assert client.stats.stale_acks == len(old_tokens)
            collector.auto_ack = True
            collector.ack_held()
            await publish_many(mosquitto, f"{topic}/r", after)
            await wait_until(lambda: set(before + after) <= set(collector.payloads()), 15, "all 600")
            await client.shutdown()
        assert any(m.dup for m in collector.messages)

    run_async(body())


def test_broker_will_on_unclean_drop_not_on_clean_shutdown_and_birth_retained(mosquitto, topic):
    status = f"{topic}/status"
    options = {
        "will": MqttMessageSpec(status, b"offline"),
        "birth": MqttMessageSpec(status, b"online"),
        "subscriptions": (),
    }

    async def body():
        watcher = await asyncio.to_thread(PahoSubscriber, mosquitto, status)
        try:
            client = make_client(mosquitto, Collector(), f"gw-{uuid.uuid4().hex[:8]}", topic, **options)
            async with running(client):
                await client.wait_connected(10)
                await wait_until(lambda: watcher.payloads() == [b"online"], what="birth")
            # run() cancelled: the socket closed without DISCONNECT, as in a crash
            await wait_until(lambda: watcher.payloads() == [b"online", b"offline"], what=f"will {watcher.received}")

            async with running(client):  # the same client runs again: a fresh birth
                await wait_until(lambda: watcher.payloads()[-1:] == [b"online"], what="second birth")
                await client.shutdown()
            await publish_many(mosquitto, status, [b"marker"], qos=1)
            await wait_until(lambda: watcher.payloads()[-1:] == [b"marker"], what="marker")
            assert watcher.payloads() == [b"online", b"offline", b"online", b"marker"]
        finally:
            await asyncio.to_thread(watcher.close)

        late = await asyncio.to_thread(PahoSubscriber, mosquitto, status)
        try:
            await wait_until(lambda: bool(late.received), what="retained status")
            assert late.received == [(b"online", True)]
        finally:
            await asyncio.to_thread(late.close)

    run_async(body())


def test_broker_shutdown_waits_for_acks_then_disconnects(mosquitto, topic):
    """Shutdown order (D4): stop reading, wait for the commit's acks, PUBACK, then DISCONNECT:
    what was acked during the shutdown is not redelivered."""
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    payloads = [b"d%d" % i for i in range(50)]

    async def body():
        collector = Collector(auto_ack=False)
        client = make_client(mosquitto, collector, client_id, topic)
        async with running(client) as task:
            await client.wait_subscribed(10)
            await publish_many(mosquitto, f"{topic}/d", payloads)
            await wait_until(lambda: len(collector.messages) == 50, what="50 messages")
            asyncio.get_running_loop().call_later(0.2, collector.ack_held)  # the commit finishing
            await client.shutdown(timeout_s=5)
            assert task.done() and not task.cancelled()
        assert client.stats.acks_sent == 50

        again = Collector()
        client = make_client(mosquitto, again, client_id, topic)
        async with running(client):
            await client.wait_subscribed(10)
            await publish_many(mosquitto, f"{topic}/d", [b"marker"])
            await wait_until(lambda: b"marker" in again.payloads(), what="marker")
            await client.shutdown()
        assert again.payloads() == [b"marker"]

    run_async(body())


def test_broker_publish_qos1_waits_for_puback(mosquitto, topic):
    async def body():
        collector = Collector()
        client = make_client(mosquitto, collector, f"gw-{uuid.uuid4().hex[:8]}", topic)
        async with running(client):
            await client.wait_subscribed(10)
            await client.publish(f"{topic}/cmd", b"open", qos=1, timeout_s=5)
            await client.publish(f"{topic}/cmd", b"qos0", qos=0, timeout_s=5)
            await wait_until(lambda: collector.payloads() == [b"open", b"qos0"], what="own messages")
            await client.shutdown()
        assert client.stats.published == 2

    run_async(body())


def test_broker_bad_credentials_logged_once_and_retried(tmp_path, topic, caplog):
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "gateway", "right"], check=True)
    (tmp_path / "acl").write_text("user gateway\ntopic readwrite #\n")
    with Mosquitto(tmp_path / "mq", extra_conf=f"{RUN_AS}password_file {passwd}\n") as broker:
        conf = broker.conf_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
        broker.conf_path.write_text(conf)
        broker.restart()

        async def body():
            caplog.set_level(logging.INFO, logger="gateway.sources.mqtt_client")
            client = make_client(broker, Collector(), "gw-auth", topic, username="gateway", password="wrong")
            async with running(client):
                await wait_until(lambda: client.stats.connect_failures >= 4, what="retries")
                assert not client.connected
            refused = [r for r in caplog.records if "refused the connection: NOT_AUTHORIZED" in r.getMessage()]
            assert len(refused) == 1 and refused[0].levelno == logging.ERROR
            assert all("wrong" not in r.getMessage() for r in caplog.records)

            client = make_client(broker, Collector(), "gw-auth", topic, username="gateway", password="right")
            async with running(client):
                await client.wait_subscribed(10)
                await client.shutdown()

        run_async(body())


def test_broker_keepalive_detects_frozen_broker_and_reconnects(mosquitto, topic):
    """SIGSTOP the broker: no PINGRESP within the keepalive → the connection is declared dead;
    connecting to the frozen broker times out; after SIGCONT the client is back."""

    async def body():
        collector = Collector()
        client = make_client(
            mosquitto, collector, f"gw-{uuid.uuid4().hex[:8]}", topic, keepalive_s=1, connect_timeout_s=1.0
        )
        async with running(client):
            await client.wait_subscribed(10)
            os.kill(mosquitto.proc.pid, signal.SIGSTOP)
            try:
                await wait_until(lambda: not client.connected, 5, "keepalive failure")
                await wait_until(lambda: client.stats.connect_failures >= 1, 5, "a failed reconnect")
            finally:
                os.kill(mosquitto.proc.pid, signal.SIGCONT)
            await client.wait_subscribed(10)
            await publish_many(mosquitto, f"{topic}/k", [b"after"])
            await wait_until(lambda: collector.payloads() == [b"after"], what="message after resume")
            await client.shutdown()
        assert client.stats.reconnects >= 1

    run_async(body())


def test_broker_tls_connection_receives_and_acks(tmp_path, topic):
    """TLS through asyncio's ssl: a listener with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    tls_port = free_port()
    extra = f"{RUN_AS}listener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
    context = ssl.create_default_context(cafile=str(cert))
    with Mosquitto(tmp_path / "mq", extra_conf=extra) as broker:

        async def body():
            collector = Collector()
            client_id = f"gw-{uuid.uuid4().hex[:8]}"
            client = make_client(broker, collector, client_id, topic, port=tls_port, ssl=context)
            async with running(client):
                await client.wait_subscribed(10)
                await publish_many(broker, f"{topic}/tls", [b"one", b"two"])  # plain listener
                await wait_until(lambda: collector.payloads() == [b"one", b"two"], what="2 messages")
                await wait_until(lambda: client.stats.acks_sent == 2, what="PUBACKs")
                await client.shutdown()

        run_async(body())
