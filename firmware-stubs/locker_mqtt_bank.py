"""Emulator: a parcel-locker bank on MQTT, Open-Locker's JSON contract (device-protocols.md §5.3).

Publishes under `locker/<uuid>/` with paho-mqtt 2.x (CallbackAPIVersion.VERSION2):
  state/compartments  retained full snapshot, after connecting and on every door change
  state/heartbeat     every `heartbeat_s` ({"uptime_seconds": …})
  state/connection    registered as the Last Will: {"status": "offline", "reason": "mqtt_last_will"}
  event               door_state_changed, compartment_open_detected / _failed / _uncommanded_open, and our
                      extension parcel_deposited / parcel_picked_up carrying a pickup code, the
                      recipient's phone number and name — personal data on purpose, so privacy tests can
                      search the gateway's log and InfluxDB for them (`personal_values()`)
  response            to each command on `command` (open_compartment): success = the pulse was fired
It subscribes to `command`; an open fires the lock (a jammed one stays shut: compartment_open_failed),
and the door closes again `hold_s` later.

Knobs: compartments, heartbeat interval, hold time, jammed compartments, duplicate rate (a message
re-published with the same message_id, as after a retry), garbage rate (a truncated copy of a
message, personal data and all), silence (no heartbeats, no answers) and crash (socket dropped without
DISCONNECT: the broker publishes the Will). Ground truth: `truth` (what happened) and `parcels`.

Run: python firmware-stubs/locker_mqtt_bank.py --port 1883 --uuid bank-a --cycles 0 --interval 5
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

NAMES = ("Li Wei", "Zhang Min", "Wang Fang", "Chen Jie", "Liu Yang", "Zhao Lei", "Huang Xin", "Zhou Ting")


@dataclass(frozen=True)
class Happening:
    t: float  # time.monotonic()
    kind: str  # opened_by_command, open_jammed, door_opened, door_closed, forced_open, deposit, pickup,
    #            silent, resumed, crashed, duplicate, garbage
    compartment: int = 0
    detail: str = ""


@dataclass
class Parcel:
    parcel_id: str
    pickup_code: str
    recipient_phone: str
    recipient_name: str


@dataclass
class MqttLockerBank:
    host: str = "127.0.0.1"
    port: int = 1883
    locker_uuid: str = "bank-a"
    compartments: int = 12
    heartbeat_s: float = 15.0
    hold_s: float = 0.5
    jammed: set[int] = field(default_factory=set)
    duplicate_rate: float = 0.0
    garbage_rate: float = 0.0
    seed: int = 1
    truth: list[Happening] = field(default_factory=list)
    parcels: dict[int, Parcel] = field(default_factory=dict)  # compartment → parcel inside

    def __post_init__(self) -> None:
        self.base = f"locker/{self.locker_uuid}"
        self.doors = dict.fromkeys(range(1, self.compartments + 1), "closed")
        self.is_silent = False
        self._rng = random.Random(self.seed)
        self._lock = threading.RLock()
        self._seq = 0
        self._parcel_seq = 0
        self._timers: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._started = time.monotonic()
        self._published_personal: set[str] = set()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"locker-{self.locker_uuid}")
        self.client.will_set(
            f"{self.base}/state/connection",
            orjson.dumps(self._envelope(status="offline", reason="mqtt_last_will")),
            qos=1,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._thread = threading.Thread(target=self._run, name=f"locker-{self.locker_uuid}", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> MqttLockerBank:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout_s):
            self.client.loop_stop()
            raise TimeoutError(f"no CONNACK from {self.host}:{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()

    def crash(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the Last Will."""
        self._stop.set()
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        self._note("crashed")

    def __enter__(self) -> MqttLockerBank:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()

    # --- actions -----------------------------------------------------------------------------------

    def courier_deposit(self, compartment: int, parcel_id: str | None = None) -> Parcel:
        """A courier at the bank's terminal: door opens, parcel in, door closes `hold_s` later."""
        with self._lock:
            self._parcel_seq += 1
            parcel = Parcel(
                parcel_id or f"SF{self._rng.randrange(10**11, 10**12)}CN",
                f"{self._rng.randrange(10**6):06d}",
                f"+86 1{self._rng.choice('3456789')}{self._rng.randrange(10**9):09d}",
                self._rng.choice(NAMES),
            )
            self._published_personal |= {parcel.pickup_code, parcel.recipient_phone, parcel.recipient_name}
            self._local_open(compartment, f"courier-{self._parcel_seq}")
            self.parcels[compartment] = parcel
            self._note("deposit", compartment, parcel.parcel_id)
            self._event(
                "parcel_deposited",
                compartment_number=compartment,
                parcel_id=parcel.parcel_id,
                pickup_code=parcel.pickup_code,
                recipient_phone=parcel.recipient_phone,
                recipient_name=parcel.recipient_name,
            )
            self._timers.append((time.monotonic() + self.hold_s, compartment))
            return parcel

    def customer_pickup(self, compartment: int) -> Parcel | None:
        """A customer types the pickup code: door opens, parcel out, door closes `hold_s` later."""
        with self._lock:
            parcel = self.parcels.pop(compartment, None)
            if parcel is None:
                return None
            self._local_open(compartment, f"pickup-{parcel.parcel_id}")
            self._note("pickup", compartment, parcel.parcel_id)
            self._event(
                "parcel_picked_up",
                compartment_number=compartment,
                parcel_id=parcel.parcel_id,
                pickup_code=parcel.pickup_code,
            )
            self._timers.append((time.monotonic() + self.hold_s, compartment))
            return parcel

    def force_open(self, compartment: int) -> None:
        with self._lock:
            if self.doors[compartment] == "open":
                return
            self._note("forced_open", compartment)
            self._set_door(compartment, "open")
            self._event("compartment_uncommanded_open", compartment_number=compartment)

    def close_door(self, compartment: int) -> None:
        with self._lock:
            self._set_door(compartment, "closed")

    def go_silent(self) -> None:
        with self._lock:
            self.is_silent = True
            self._note("silent")

    def resume(self) -> None:
        with self._lock:
            self.is_silent = False
            self._note("resumed")

    def personal_values(self) -> set[str]:
        """Every pickup code, phone number and name this bank published."""
        with self._lock:
            return set(self._published_personal)

    def happenings(self, kind: str | None = None) -> list[Happening]:
        with self._lock:
            return [h for h in self.truth if kind is None or h.kind == kind]

    # --- the bank side -----------------------------------------------------------------------------

    def _note(self, kind: str, compartment: int = 0, detail: str = "") -> None:
        self.truth.append(Happening(time.monotonic(), kind, compartment, detail))

    def _envelope(self, **body: object) -> dict:
        self._seq += 1
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return {"message_id": f"msg-{self.locker_uuid}-{self._seq:07d}", "timestamp": stamp, **body}

    def _publish(self, suffix: str, doc: dict, *, retain: bool = False) -> None:
        payload = orjson.dumps(doc)
        topic = f"{self.base}/{suffix}"
        if self.garbage_rate and self._rng.random() < self.garbage_rate:
            self._note("garbage", 0, suffix)
            self.client.publish(topic, payload[: len(payload) // 2], qos=1)
        self.client.publish(topic, payload, qos=1, retain=retain)
        if self.duplicate_rate and self._rng.random() < self.duplicate_rate:
            self._note("duplicate", 0, doc["message_id"])
            self.client.publish(topic, payload, qos=1, retain=retain)

    def _event(self, name: str, **data: object) -> None:
        self._publish("event", self._envelope(event=name, event_id=f"evt-{self._seq + 1}", data=data))

    def _snapshot(self) -> None:
        doors = [{"compartment_number": n, "door_state": s} for n, s in sorted(self.doors.items())]
        self._publish("state/compartments", self._envelope(compartments=doors), retain=True)

    def _set_door(self, compartment: int, state: str) -> None:
        if self.doors[compartment] == state:
            return
        self.doors[compartment] = state
        self._note("door_opened" if state == "open" else "door_closed", compartment)
        self._event("door_state_changed", compartment_number=compartment, state=state)
        self._snapshot()

    def _local_open(self, compartment: int, transaction_id: str) -> None:
        """The bank's own terminal fires the relay (courier or customer at the keypad)."""
        self._event(
            "compartment_open_detected",
            compartment_number=compartment,
            transaction_id=transaction_id,
            outcome="opened",
            detection_ms=self._rng.randint(200, 600),
        )
        self._set_door(compartment, "open")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        client.subscribe(f"{self.base}/command", qos=1)
        with self._lock:
            self._snapshot()
        self._connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            doc = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict) or doc.get("action") != "open_compartment" or self.is_silent:
            return
        txn = str(doc.get("transaction_id", ""))
        number = (doc.get("data") or {}).get("compartment_number")
        with self._lock:
            if number not in self.doors:
                self._publish(
                    "response",
                    self._envelope(
                        transaction_id=txn,
                        action="open_compartment",
                        result="error",
                        error_code="UNKNOWN_COMPARTMENT",
                        message="No such compartment.",
                    ),
                )
                return
            self._publish(
                "response",
                self._envelope(transaction_id=txn, action="open_compartment", result="success", message="Pulse fired."),
            )
            if number in self.jammed:
                self._note("open_jammed", number)
                self._event(
                    "compartment_open_failed",
                    compartment_number=number,
                    transaction_id=txn,
                    outcome="door_jammed",
                    error_code="DOOR_JAMMED",
                )
                return
            outcome = "already_open" if self.doors[number] == "open" else "opened"
            self._note("opened_by_command", number, txn)
            self._event("compartment_open_detected", compartment_number=number, transaction_id=txn, outcome=outcome)
            self._set_door(number, "open")
            self._timers.append((time.monotonic() + self.hold_s, number))

    def _run(self) -> None:
        next_beat = time.monotonic()
        while not self._stop.wait(0.02):
            now = time.monotonic()
            with self._lock:
                due = [c for t, c in self._timers if t <= now]
                self._timers = [(t, c) for t, c in self._timers if t > now]
                for compartment in due:
                    self._set_door(compartment, "closed")
                if now >= next_beat and not self.is_silent:
                    self._publish("state/heartbeat", self._envelope(uptime_seconds=int(now - self._started)))
                    next_beat = now + self.heartbeat_s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--uuid", default="bank-a")
    p.add_argument("--compartments", type=int, default=12)
    p.add_argument("--heartbeat", type=float, default=15.0)
    p.add_argument("--hold", type=float, default=5.0)
    p.add_argument("--jam", default="", help="jammed compartments, e.g. 3,7")
    p.add_argument("--cycles", type=int, default=0, help="deposit + pickup cycles to run (0 = until --duration)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between courier / customer visits")
    p.add_argument("--duplicate-rate", type=float, default=0.0)
    p.add_argument("--garbage-rate", type=float, default=0.0)
    p.add_argument("--duration", type=float, default=3600.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    bank = MqttLockerBank(
        a.host,
        a.port,
        a.uuid,
        a.compartments,
        heartbeat_s=a.heartbeat,
        hold_s=a.hold,
        jammed={int(x) for x in a.jam.split(",") if x},
        duplicate_rate=a.duplicate_rate,
        garbage_rate=a.garbage_rate,
        seed=a.seed,
    )
    rng = random.Random(a.seed)
    end = time.monotonic() + a.duration
    done = 0
    with bank:
        try:
            while time.monotonic() < end and (a.cycles == 0 or done < a.cycles):
                empty = [c for c in range(1, a.compartments + 1) if c not in bank.parcels]
                if empty and (not bank.parcels or rng.random() < 0.5):
                    bank.courier_deposit(rng.choice(empty))
                else:
                    bank.customer_pickup(rng.choice(sorted(bank.parcels)))
                    done += 1
                time.sleep(a.interval)
        except KeyboardInterrupt:
            pass
    for h in bank.truth:
        print(f"{h.t:.3f} {h.kind} compartment={h.compartment} {h.detail}".rstrip())


if __name__ == "__main__":
    main()
