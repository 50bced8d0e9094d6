"""The gateway's exceptions, and for each whether a retry can help (style.md 16).

    SdgwError                          retryable
    ├── ConfigError                    no   the file is wrong: fix it and start again
    ├── MqttError                      yes  a reconnect may help; `MqttClient.run()` does it by itself
    │   ├── MqttConnectionLost         yes  the connection closed before the broker answered
    │   ├── MqttRefused                no   CONNACK with an error (credentials, client id): fix config
    │   ├── MqttPublishRejected        no   the broker refused our PUBLISH, or it is over its size limit
    │   └── MqttClosed                 no   the client was shut down
    ├── LineProtocolError (ValueError) no   a value InfluxDB cannot hold: the record is refused, counted
    ├── LogClosed (RuntimeError)       no   the durable log is closed or hit a fatal error: restart
    ├── InfluxQueryError               yes  an API query could not be answered
    │   ├── InfluxUnreachable          yes  no connection (refused, DNS, TLS)             → 503
    │   ├── InfluxDatabaseMissing      yes  the server answers; the database does not exist → 503
    │   ├── InfluxTimeout              yes  no answer within the configured timeout         → 504
    │   └── InfluxBadAnswer            no   an error status, a statement error, not JSON    → 502
    └── ApiServerError (RuntimeError)  no   the API could not start (port taken): fix that first

`retryable` is the class attribute that carries the column. "No" means the same call cannot succeed
until someone changes something (config, the record, the process). It documents the decision; no
code reads it yet, and `MqttClient.run()` reconnects after every `MqttError`, `MqttRefused`
included (logged at ERROR, once per kind of failure).

The built-in bases in brackets are the ones these exceptions always had, kept so that an `except
ValueError` / `except RuntimeError` anywhere still catches them (none in the tree relies on it today:
each is caught by its own name).

Each exception is still importable from the module that raises it (`gateway.sources.mqtt_client`,
`gateway.sinks.lineproto`, `gateway.log.store`, `gateway.api.influxql`, `gateway.api.server`,
`gateway.config`). This module imports nothing from the gateway, so any module can import it.

Not in the tree yet: `gateway.keys.KeyStoreError` (a key-file command that cannot be done as asked)
and `gateway.privacy.PseudonymKeyError` (an unreadable pseudonym key file). Never in it:
`gateway.api.problems.Problem`, an HTTP problem answer rather than a failure of the gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    import mqtt5


class SdgwError(Exception):
    """Base of the gateway's own exceptions."""

    retryable: ClassVar[bool] = False


class _Problem(Protocol):
    """What ConfigError needs of a `gateway.config.ConfigProblem` (not imported: no cycle)."""

    key: str
    found: str
    expected: str

    def render(self, path: Path | str) -> str: ...


class ConfigError(SdgwError):
    """The configuration cannot be used; every problem found, each with its key path."""

    retryable = False

    def __init__(self, path: Path | str, problems: Sequence[_Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(p.render(path) for p in problems))


class MqttError(SdgwError):
    """Base of the MQTT client's errors. A reconnect (which `run()` does by itself) may help."""

    retryable = True


class MqttConnectionLost(MqttError):
    """The connection closed while we waited for the broker's answer."""

    retryable = True


class MqttRefused(MqttError):
    """The broker answered CONNECT with an error (credentials, client id, …): fix config."""

    retryable = False

    def __init__(self, reason: mqtt5.ConnAckReasonCode) -> None:
        super().__init__(f"broker refused the connection: {reason.name}")
        self.reason = reason


class MqttPublishRejected(MqttError):
    """The broker answered our PUBLISH with an error reason code; a retry will not help."""

    retryable = False


class MqttClosed(MqttError):
    """The client was shut down."""

    retryable = False


class LineProtocolError(SdgwError, ValueError):
    """A value InfluxDB cannot hold exactly: the record is refused and counted, never sent. A retry
    cannot help."""

    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LogClosed(SdgwError, RuntimeError):
    """The durable log was closed, or its writer thread failed (the message says why)."""

    retryable = False


class InfluxQueryError(SdgwError):
    """A query could not be answered. `retryable`: whether the same query may succeed later."""

    retryable = True
    retry_helps = True  # the attribute's name before this module; nothing in the tree reads it


class InfluxUnreachable(InfluxQueryError):
    retryable = True


class InfluxTimeout(InfluxQueryError):
    retryable = True


class InfluxDatabaseMissing(InfluxQueryError):
    retryable = True


class InfluxBadAnswer(InfluxQueryError):
    retryable = False
    retry_helps = False


class ApiServerError(SdgwError, RuntimeError):
    """The API could not start (e.g. its port is taken); a retry helps only once that is fixed."""

    retryable = False
