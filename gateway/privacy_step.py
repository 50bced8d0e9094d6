"""The privacy step right after the codec (decisions.md D1, D13).

An event class lists its personal fields in `PERSONAL_FIELDS` (devices/events.py): pickup codes and
names are dropped (set to None: never stored, not even hashed — a code is a secret, a name is not an
identifier anyone needs), phone numbers are replaced by their HMAC pseudonym under the current
period's key. What leaves this step holds no personal value in clear, so nothing after it — the
processors, the log, the sinks, the API — can leak one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from devices.events import DeviceEvent, PersonalHandling, personal_fields
from gateway.privacy import Pseudonymiser


def strip_personal(
    events: Iterable[DeviceEvent], pseudonymiser: Pseudonymiser | None, wall_ns: int | None
) -> list[DeviceEvent]:
    """Events with their personal fields dropped or pseudonymised. Raises LookupError when a value
    must be pseudonymised and no key file is configured (the payload is then dead-lettered masked)."""
    out = []
    for event in events:
        handling = personal_fields(event)
        changes: dict[str, str | None] = {}
        for name, how in handling.items():
            value = getattr(event, name)
            if value is None:
                continue
            if how is PersonalHandling.DROP:
                changes[name] = None
            else:
                if pseudonymiser is None:
                    raise LookupError("a personal identifier arrived but no pseudonym key file is configured")
                changes[name] = pseudonymiser.apply(str(value), wall_ns)[0]
        out.append(dataclasses.replace(event, **changes) if changes else event)
    return out
