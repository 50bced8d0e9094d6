"""Devices that push their reports over HTTP: POST /v1/ingest/<device> (decisions.md D12: the
VIVOTEK SC8131 "Report Push" with its JSON document).

The answer is the durability boundary, as the PUBACK is for MQTT (D1): 204 only after the
document's records are committed, so a camera that retries on anything else loses nothing, and its
retries collapse on the records' identities (D4). A document that cannot be decoded is
dead-lettered, counted and answered 400 (a retry would not help). While the log is at its cap the
push is refused with 503 and Retry-After (D5: the device keeps its data, as the broker does).

Each device authenticates with HTTP Basic: user = its id, password from `http_password_file` or
the environment (SDGW_DEVICE_<ID>_PASSWORD); the password is compared in constant time and never
logged. An unknown device and a wrong password answer alike.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from dataclasses import dataclass, field

from gateway.clock_monitor import ClockMonitor
from gateway.config import ConfigError, ConfigProblem, DeviceConfig, device_env_name, read_secret
from gateway.log.store import DurableLog
from gateway.pipeline import Pipeline

log = logging.getLogger("sdgw.http_push")

MAX_BODY_BYTES = 1 << 20  # a day of 1-minute buckets for 4 rules is ~300 KB of JSON
RETRY_AFTER_S = 30


@dataclass(frozen=True, slots=True)
class PushOutcome:
    status: int  # 204, 400 or 503
    reason: str = ""  # the dead letter's reason, or why the push was refused
    detail: str = ""
    records: int = 0


@dataclass
class PushStats:
    accepted: int = 0  # documents committed (duplicates included: they are answered 204 too)
    rejected: int = 0  # undecodable documents (400)
    refused: int = 0  # 503: log at its cap, or a commit that failed
    auth_failures: int = 0
    last_seen_wall_ns: int = 0


@dataclass
class HttpPushIngest:
    pipeline: Pipeline
    log: DurableLog
    monitor: ClockMonitor
    devices: dict[str, DeviceConfig]
    secrets: dict[str, bytes]
    stats: dict[str, PushStats] = field(default_factory=dict)
    unknown_devices: Counter = field(default_factory=Counter)

    @classmethod
    def for_devices(
        cls, devices: list[DeviceConfig], pipeline: Pipeline, durable_log: DurableLog, monitor: ClockMonitor
    ) -> HttpPushIngest:
        """Raises ConfigError naming every HTTP device without a password: an ingest route that
        anyone on the street's network could write to is not started."""
        pushed = {d.id: d for d in devices if d.transport == "http"}
        secrets: dict[str, bytes] = {}
        problems = []
        for device_id, d in pushed.items():
            env = device_env_name(device_id, "PASSWORD")
            secret = read_secret(file=d.http_password_file, env=env, what=f"devices[{device_id}].http_password_file")
            if not secret:
                problems.append(
                    ConfigProblem(
                        key=f"devices[{device_id}].http_password_file",
                        found="(missing)",
                        expected=f"the device's HTTP Basic password in a file, or in env {env}",
                    )
                )
            else:
                secrets[device_id] = secret.encode()
        if problems:
            raise ConfigError("(config)", problems)
        return cls(pipeline, durable_log, monitor, pushed, secrets, {d: PushStats() for d in pushed})

    def authorised(self, device_id: str, user: str, password: str) -> DeviceConfig | None:
        """The device when the credentials are its own, else None (unknown and wrong alike)."""
        device = self.devices.get(device_id)
        # compare against something even for an unknown device: no timing difference to probe
        expected = self.secrets.get(device_id, b"\0" * 32)
        ok = hmac.compare_digest(password.encode(), expected) and user == device_id and device is not None
        if not ok:
            if device is not None:
                self.stats[device_id].auth_failures += 1
            else:
                self.unknown_devices[device_id[:64]] += 1
            return None
        return device

    async def receive(self, device: DeviceConfig, payload: bytes) -> PushOutcome:
        st = self.stats[device.id]
        if self.log.paused:
            st.refused += 1
            return PushOutcome(503, "log-full", "the gateway's log is at its cap: retry later")
        batch = self.pipeline.push_batch(device, payload, self.monitor.arrival())
        try:
            await self.log.append(batch)
        except Exception as exc:  # not committed: the device must send it again
            st.refused += 1
            log.error("push from %s not committed: %s", device.id, exc)
            return PushOutcome(503, "not-committed", "the gateway could not store the report: retry later")
        st.last_seen_wall_ns = self.monitor.arrival().wall_ns
        if batch.dead_letters and not batch.records:
            st.rejected += 1
            letter = batch.dead_letters[0]
            return PushOutcome(400, letter.reason, letter.detail)
        st.accepted += 1
        return PushOutcome(204, records=len(batch.records))
