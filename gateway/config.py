"""The gateway's configuration: one TOML file, compiled at start-up into typed models.

Every problem is reported with the file, the key path, what was found and what was expected, all
of them at once (`sdgw config check`). Secrets never have to be in the TOML: each one can come
from a file (`*_file`, e.g. a systemd credential) or from the environment (`SDGW_…`, named below).
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from devices.registry import MODELS, DeviceModel, DeviceOptions, Transport
from gateway.errors import ConfigError  # defined there, raised and re-exported here
from gateway.sites import ROUND_THE_CLOCK, Schedule, build_schedule, parse_span

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewayIdentity(_Model):
    district: Name
    street: Name
    id: Name
    timezone: str = "Asia/Shanghai"
    data_dir: Path = Path("/var/lib/sdgw")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        return known_zone(v)


def known_zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except Exception as exc:
        raise ValueError(f"an IANA time zone such as Asia/Shanghai (not {v!r})") from exc
    return v


class ClockConfig(_Model):
    # "adjtimex": synchronised as timedatectl decides it (maxerror < 16 s, decisions.md D7);
    # "assume-synced": for machines with a trusted RTC, and for the demo and tests.
    # "flag-file": synchronised while `flag_file` exists (an external judge, and the tests' seam).
    sync_check: Literal["adjtimex", "assume-synced", "flag-file"] = "adjtimex"
    flag_file: Path | None = None
    poll_s: float = Field(5.0, gt=0)
    jump_threshold_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _flag(self) -> ClockConfig:
        if self.sync_check == "flag-file" and self.flag_file is None:
            raise ValueError('sync_check = "flag-file" needs `flag_file`')
        return self


class LogConfig(_Model):
    path: Path | None = None  # default: <data_dir>/log.sqlite
    cap_bytes: int = Field(1 << 30, ge=1 << 20)
    # MQTT stops reading at pause_ratio × cap, resumes below resume_ratio × cap (D5).
    pause_ratio: float = Field(0.9, gt=0, le=1)
    resume_ratio: float = Field(0.8, gt=0, le=1)
    batch_max_records: int = Field(2000, ge=1, le=100_000)
    commit_interval_s: float = Field(0.02, ge=0, le=1)  # group commit window (decisions.md D2)
    dead_letter_cap: int = Field(10_000, ge=10)
    prune_interval_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _ratios(self) -> LogConfig:
        if self.resume_ratio >= self.pause_ratio:
            raise ValueError("resume_ratio must be below pause_ratio")
        return self


class TlsConfig(_Model):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = None  # default: sdgw-<district>-<street>-<id>
    username: str | None = None
    password_file: Path | None = None  # or env SDGW_MQTT_PASSWORD
    tls: TlsConfig = TlsConfig()
    keepalive_s: int = Field(30, ge=5, le=65535)
    session_expiry_s: int = Field(7 * 86400, ge=1)
    receive_max: int = Field(4096, ge=1, le=65535)
    max_packet_bytes: int = Field(1 << 20, ge=1024)
    reconnect_max_s: float = Field(30.0, gt=0)


class SinkConfig(_Model):
    name: Name
    url: str = Field(pattern=r"^https?://")
    dialect: Literal["v1", "v2"] = "v1"
    database: str | None = None  # v1
    retention_policy: str | None = None  # v1
    org: str | None = None  # v2
    bucket: str | None = None  # v2
    username: str | None = None
    password_file: Path | None = None  # or env SDGW_SINK_<NAME>_PASSWORD
    token_file: Path | None = None  # or env SDGW_SINK_<NAME>_TOKEN
    gzip: bool = True
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_interval_s: float = Field(0.25, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    # cap of the jittered retry backoff while InfluxDB is unhealthy: small, so that a sink is back
    # within seconds of an outage's end (a retry costs one request)
    retry_max_s: float = Field(5.0, gt=0)
    query: bool | None = None  # the API reads this one (default: the first sink)

    @model_validator(mode="after")
    def _dialect_keys(self) -> SinkConfig:
        if self.dialect == "v1" and not self.database:
            raise ValueError("a v1 sink needs `database`")
        if self.dialect == "v2" and not (self.org and self.bucket):
            raise ValueError("a v2 sink needs `org` and `bucket`")
        return self


class SiteConfig(_Model):
    id: Name
    name: str = ""
    merchant: Name | None = None
    kind: Literal["shop", "entrance"] = "shop"
    street: Name | None = None  # default: [gateway] street (filled in by GatewayConfig)
    timezone: str | None = None  # default: [gateway] timezone (filled in by GatewayConfig)
    hours: str = ROUND_THE_CLOCK  # gateway/sites.py: "10:00-22:00", "18:00-02:00", "closed"
    hours_by_day: dict[str, str] = Field(default_factory=dict)  # weekday (mon … sun) → hours
    closed_dates: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        return None if v is None else known_zone(v)

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        parse_span(v)
        return v

    @field_validator("hours_by_day")
    @classmethod
    def _hours_by_day(cls, v: dict[str, str]) -> dict[str, str]:
        build_schedule(ROUND_THE_CLOCK, v)
        return v

    @property
    def schedule(self) -> Schedule:
        return build_schedule(self.hours, self.hours_by_day, self.closed_dates)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "Asia/Shanghai")


LOCKER_FAMILIES = {"lock8a": (1, 8), "kerong": (0, 16), "locker_mqtt": (0, 0)}  # default board, locks per board


class LockerBankConfig(_Model):
    """A locker bank's layout (`[devices.locker]`): which boards and how many compartments."""

    bank: Name | None = None  # the `bank` tag (default: the device id)
    boards: list[Annotated[int, Field(ge=0, le=99)]] | None = None  # serial: board addresses, in order
    locks_per_board: int | None = Field(None, ge=1, le=128)  # serial: default 8 (8A/80), 16 (Kerong)
    compartments: int | None = Field(None, ge=1, le=999)  # MQTT bank: compartments 1…n
    door_feedback: Literal["door_closing", "door_opening"] = "door_closing"  # wiring (§5.1)
    command_topic: str | None = None  # MQTT: default locker/<uuid>/command from the device's topic


class DeviceConfig(_Model):
    id: Name
    model: str
    site: Name | None = None
    transport: Literal["mqtt", "serial", "http"] = "mqtt"
    topic: str | None = None  # MQTT topic or filter this device publishes on
    port: str | None = None  # serial: a stable path, e.g. /dev/serial/by-id/usb-…-if00-port0
    baudrate: int | None = Field(None, ge=300, le=4_000_000)  # serial: default per model
    parity: Literal["N", "E", "O"] | None = None  # serial: default per model
    echo: bool = False  # serial: the RS-485 adapter echoes what the gateway sends (discarded on input)
    trust_device_time: bool | None = None  # default: what the model's registry row says
    # http: the device's HTTP Basic password (user = the device id), or env SDGW_DEVICE_<ID>_PASSWORD
    http_password_file: Path | None = None
    lines: dict[str, Name] = Field(default_factory=dict)  # counter line (e.g. RuleName) → site, overriding `site`
    locker: LockerBankConfig | None = None  # locker models only: the bank's layout
    # polled serial models (request/response on a possibly shared bus; default per model):
    address: int | None = Field(None, ge=0, le=255)  # Modbus unit id, Chafon reader address
    poll_interval_s: float | None = Field(None, ge=0, le=86400)  # routine poll period
    poll_timeout_s: float | None = Field(None, gt=0, le=60)  # per request
    registers: dict[str, Any] | None = None  # modbus-rtu-counter: the register map

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in MODELS:
            raise ValueError(f"one of {', '.join(sorted(MODELS))}")
        return v

    @model_validator(mode="after")
    def _transport(self) -> DeviceConfig:
        model = MODELS[self.model]
        if Transport(self.transport) not in model.transports:
            raise ValueError(f"model {self.model} speaks {', '.join(model.transports)}, not {self.transport}")
        if self.transport == "mqtt" and not self.topic:
            raise ValueError("an MQTT device needs `topic`")
        if self.transport == "serial" and not self.port:
            raise ValueError("a serial device needs `port` (a stable path such as /dev/serial/by-id/…)")
        if self.http_password_file is not None and self.transport != "http":
            raise ValueError('`http_password_file` is for devices with transport = "http"')
        family = model.family
        if self.locker is not None and family not in LOCKER_FAMILIES:
            raise ValueError(f"`locker` is for locker models ({', '.join(LOCKER_FAMILIES)}), not {family}")
        if family == "locker_mqtt" and (self.locker is None or self.locker.compartments is None):
            raise ValueError("an MQTT locker bank needs `locker.compartments` (its compartment count)")
        if family in ("lock8a", "kerong") and self.locker is not None and self.locker.compartments is not None:
            raise ValueError("a lock-board bank takes `locker.boards` and `locker.locks_per_board`, not compartments")
        self._check_bus(model)
        return self

    def _check_bus(self, model: DeviceModel) -> None:
        polled = [k for k in ("address", "poll_interval_s", "poll_timeout_s") if getattr(self, k) is not None]
        if model.bus is None:
            if polled:
                names = ", ".join(m.name for m in MODELS.values() if m.bus)
                raise ValueError(f"{', '.join(polled)}: only for polled serial models ({names})")
        elif self.address is not None:
            if self.locker is not None and self.locker.boards:
                raise ValueError("a lock-board bank names its boards in `locker.boards`, not `address`")
            if self.address not in model.bus.addresses:
                r = model.bus.addresses
                raise ValueError(f"address: expected {r.start}..{r.stop - 1} for {self.model}, got {self.address}")
        if self.registers is not None and model.decode_kwargs is None:
            raise ValueError(f"registers: only for modbus-rtu-counter, not {self.model}")
        if model.decode_kwargs is not None:
            if self.registers is None:
                raise ValueError(
                    f"registers: required for {self.model} (the vendor's map: lines = [{{line, in, out}}], "
                    "width_bits, function, word_order, occupancy)"
                )
            try:
                model.decode_kwargs(self.bus_options)
            except ValueError as exc:
                raise ValueError(f"registers: {exc}") from None

    @property
    def bus_options(self) -> DeviceOptions:
        """What the model's poll and decode hooks need from this device's config."""
        bus = MODELS[self.model].bus
        if self.locker is not None and self.locker.boards:
            addresses = tuple(self.locker.boards)
        elif self.address is not None:
            addresses = (self.address,)
        else:
            addresses = (bus.default_address,) if bus is not None else ()
        return DeviceOptions(addresses, self.registers)

    def decode_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the model's decode for this device (a Modbus register map)."""
        hook = MODELS[self.model].decode_kwargs
        return hook(self.bus_options) if hook is not None else {}

    @property
    def is_locker(self) -> bool:
        return MODELS[self.model].family in LOCKER_FAMILIES

    @property
    def device_time_trusted(self) -> bool:
        if self.trust_device_time is None:
            return MODELS[self.model].device_time_trusted
        return self.trust_device_time


class StatusConfig(_Model):
    heartbeat_s: float = Field(60.0, gt=0)


class RfidConfig(_Model):
    depart_after_s: float = Field(10.0, gt=0)  # a tag unseen this long has departed
    summary_interval_s: float = Field(60.0, gt=0)  # dwell summary of each present tag
    move_margin_db: float = Field(6.0, ge=0)  # RSSI margin for a move to another antenna/reader
    move_margin_raw: float = Field(10.0, ge=0)  # the same for raw strengths of unknown unit (UHFReader288)


class LockersConfig(_Model):
    door_left_open_s: float = Field(120.0, gt=0)  # a door open this long raises door_left_open
    offline_after_polls: int = Field(3, ge=1)  # unanswered polls in a row → controller offline
    open_confirm_timeout_s: float = Field(2.0, gt=0, le=60)  # remote open: wait this long, then 504
    command_window_s: float = Field(30.0, gt=0)  # an opening this soon after an open was commanded
    occupancy_every_s: float = Field(300.0, gt=0)  # periodic occupancy point per bank
    idempotency_ttl_s: float = Field(86400.0, gt=0)  # how long an Idempotency-Key's outcome is kept


class PrivacyConfig(_Model):
    # current and next period's HMAC keys (decisions.md D13), readable by the service user only;
    # made by the district with `sdgw pseudonym-keys`. Required when a device carries personal IDs.
    key_file: Path | None = None


class ApiConfig(_Model):
    enabled: bool = True  # `sdgw run` serves the API beside ingestion
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    key_file: Path | None = None  # default: <data_dir>/api-keys.json
    metrics_open_to_loopback: bool = True  # /metrics without a key from 127.0.0.1/::1 (D15)
    query_timeout_s: float = Field(10.0, gt=0)
    # per-key token bucket on the merchant routes (sites, footfall, occupancy), per replica; 0 = off
    rate_limit_per_s: float = Field(2.0, ge=0)
    rate_limit_burst: int = Field(30, ge=1)


class OpenDataConfig(_Model):
    """`/v1/open/footfall`: street-level daily totals without a key (decisions.md D14)."""

    enabled: bool = True
    min_sites: int = Field(3, ge=1)  # shops that must have reported that day
    min_total: int = Field(10, ge=0)  # the day's street total must reach this
    # per client address token bucket, per replica; 0 = off
    rate_limit_per_s: float = Field(1.0, ge=0)
    rate_limit_burst: int = Field(20, ge=1)


class GatewayConfig(_Model):
    gateway: GatewayIdentity
    clock: ClockConfig = ClockConfig()
    log: LogConfig = LogConfig()
    mqtt: MqttConfig | None = None
    sinks: list[SinkConfig] = Field(default_factory=list)
    sites: list[SiteConfig] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)
    status: StatusConfig = StatusConfig()
    api: ApiConfig = ApiConfig()
    rfid: RfidConfig = RfidConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    open_data: OpenDataConfig = OpenDataConfig()
    lockers: LockersConfig = LockersConfig()

    @model_validator(mode="before")
    @classmethod
    def _site_defaults(cls, data: Any) -> Any:
        # a site's street and zone default to the gateway's (whose zone defaults to Asia/Shanghai)
        if not isinstance(data, dict) or not isinstance(data.get("sites"), list):
            return data
        gateway = data.get("gateway") if isinstance(data.get("gateway"), dict) else {}
        defaults = {"street": gateway.get("street"), "timezone": gateway.get("timezone", "Asia/Shanghai")}
        defaults = {k: v for k, v in defaults.items() if isinstance(v, str)}
        sites = [{**defaults, **site} if isinstance(site, dict) else site for site in data["sites"]]
        return {**data, "sites": sites}

    @model_validator(mode="after")
    def _cross_refs(self) -> GatewayConfig:
        problems = []
        for kind, items in (("sinks", self.sinks), ("sites", self.sites), ("devices", self.devices)):
            seen: set[str] = set()
            for item in items:
                key = item.name if kind == "sinks" else item.id
                if key in seen:
                    problems.append(f"{kind}: duplicate {key!r}")
                seen.add(key)
        site_ids = {s.id for s in self.sites}
        for d in self.devices:
            if d.site is not None and d.site not in site_ids:
                problems.append(f"device {d.id!r}: site {d.site!r} is not one of [[sites]]")
            for line, site in d.lines.items():
                if site not in site_ids:
                    problems.append(f"device {d.id!r}: lines.{line!r} = {site!r} is not one of [[sites]]")
        pushing = [d.id for d in self.devices if d.transport == "http"]
        if pushing and not self.api.enabled:
            problems.append(f"devices {', '.join(pushing)} push over HTTP: the API (their endpoint) must be enabled")
        if any(d.transport == "mqtt" for d in self.devices) and self.mqtt is None:
            problems.append("MQTT devices are configured but there is no [mqtt] section")
        problems += _shared_port_problems(self.devices)
        personal = [d.id for d in self.devices if MODELS[d.model].personal_raw]
        if personal and self.privacy.key_file is None:
            problems.append(f"devices {', '.join(personal)} carry personal identifiers: [privacy] key_file is required")
        if sum(1 for s in self.sinks if s.query) > 1:
            problems.append("more than one sink has query = true")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def log_path(self) -> Path:
        return self.log.path or self.gateway.data_dir / "log.sqlite"

    @property
    def api_key_file(self) -> Path:
        return self.api.key_file or self.gateway.data_dir / "api-keys.json"

    @property
    def mqtt_client_id(self) -> str:
        assert self.mqtt is not None
        g = self.gateway
        return self.mqtt.client_id or f"sdgw-{g.district}-{g.street}-{g.id}"

    @property
    def query_sink(self) -> SinkConfig | None:
        return next((s for s in self.sinks if s.query), self.sinks[0] if self.sinks else None)


def _shared_port_problems(devices: list[DeviceConfig]) -> list[str]:
    """Devices on one port share one bus: one polled protocol family, one line setting, one loop,
    so each needs its own address (the answer to a request is told apart by it)."""
    problems = []
    by_port: dict[str, list[DeviceConfig]] = {}
    for d in devices:
        if d.transport == "serial" and d.port:
            by_port.setdefault(d.port, []).append(d)
    for port, group in by_port.items():
        if len(group) < 2:
            continue
        ids = ", ".join(d.id for d in group)
        models = [MODELS[d.model] for d in group]
        if any(m.bus is None for m in models):
            problems.append(f"devices {ids} share port {port}: only polled models can share a port")
            continue
        if len({m.family for m in models}) > 1:
            problems.append(f"devices {ids} share port {port}: one protocol family per bus")
            continue
        settings = {
            (d.baudrate or m.serial.baudrate, d.parity or m.serial.parity, d.echo)
            for d, m in zip(group, models, strict=True)
        }
        if len(settings) > 1:
            problems.append(f"devices {ids} share port {port} but not baudrate/parity/echo")
        seen: dict[int, str] = {}
        for d in group:
            for a in d.bus_options.addresses:
                if a in seen:
                    problems.append(f"devices {seen[a]} and {d.id} on port {port} both use address {a}")
                seen[a] = d.id
    return problems


class ConfigProblem(BaseModel):
    key: str
    found: str
    expected: str

    def render(self, path: Path | str) -> str:
        return f"{path}: {self.key}: expected {self.expected}; found {self.found}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key_path(loc: tuple, data: Any) -> str:
    """pydantic's loc → `devices[2].model`, naming list items by their id where they have one."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            label = str(part)
            if isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                ident = node[part].get("id") or node[part].get("name")
                if isinstance(ident, str):
                    label = f"{part}:{ident}"
            out += f"[{label}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _expected(err: dict) -> str:
    msg = err["msg"]
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    msg = re.sub(r"^Input should be (a valid )?", "", msg)
    msg = msg.replace("String should match pattern", "text matching")
    if err["type"] == "missing":
        return "this key (it is required)"
    if err["type"] == "extra_forbidden":
        return "no such key (misspelt? see the configuration reference in the README)"
    if err["type"] == "string_pattern_mismatch":
        return "a name of letters, digits, '_', '.', '-' (1–63 characters)" if NAME in msg else msg
    return msg


def _lookup(data: Any, loc: tuple) -> Any:
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return "(missing)"
    return node


def parse_config(text: str, path: Path | str = "<config>") -> GatewayConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [ConfigProblem(key="(syntax)", found=str(exc), expected="valid TOML")]) from None
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            found = _short(err.get("input")) if err["type"] != "missing" else "(missing)"
            if err["type"] == "value_error" and isinstance(err.get("input"), dict):
                found = "(see expected)"
            problems.append(ConfigProblem(key=_key_path(loc, data), found=found, expected=_expected(err)))
        raise ConfigError(path, problems) from None


def load_config(path: Path | str) -> GatewayConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            p, [ConfigProblem(key="(file)", found=exc.strerror or str(exc), expected="a readable TOML file")]
        ) from None
    return parse_config(text, p)


def read_secret(*, file: Path | None, env: str, what: str) -> str | None:
    """A secret from its file (trailing newline stripped) or the environment; None when neither."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                file,
                [ConfigProblem(key=what, found=exc.strerror or "unreadable", expected="a readable secret file")],
            ) from None
    return os.environ.get(env) or None


def device_env_name(device: str, what: str) -> str:
    return f"SDGW_DEVICE_{re.sub(r'[^A-Za-z0-9]', '_', device).upper()}_{what}"


def sink_env_name(sink: str, what: str) -> str:
    return f"SDGW_SINK_{re.sub(r'[^A-Za-z0-9]', '_', sink).upper()}_{what}"
