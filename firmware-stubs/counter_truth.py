"""Ground truth of emulated people counters (shared by milesight_counter, axis_counter, modbus_counter).

Per (device, line, direction) it keeps every crossing (`truth`) and what a correct gateway can know
(`countable`), by device-protocols.md §4.8:
  - cumulative totals: crossings before the first report that reaches the gateway are unknowable
    (the seed); so are crossings between the last delivered report and a reset (the counter forgot
    them before anyone read them). A reset the rules cannot see — the first report after it is not
    lower than the last one before it, or it looks like a wrap — is counted in `ambiguous`: there the
    gateway's sum may differ from `countable` (by design, not a bug);
  - per-period deltas: every crossing inside a delivered period report is countable.
Tests compare the gateway's footfall sums with `countable` (and with `truth`, minus the losses).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class _Direction:
    value: int = 0  # what the counter shows now (mod 2^width)
    since_report: int = 0  # crossings since the last delivered report
    since_reset: int = 0  # crossings since the last reset, within this report interval
    had_reset: bool = False
    reported: int | None = None  # the value the last delivered report carried


@dataclass
class CumulativeTruth:
    width_bits: int | None = None  # None: unbounded totals
    truth: Counter = field(default_factory=Counter)  # key → every crossing
    countable: Counter = field(default_factory=Counter)  # key → what the gateway can count
    ambiguous: int = 0  # resets invisible to the rules (see module doc)
    _dirs: dict = field(default_factory=dict)

    def _d(self, key: tuple) -> _Direction:
        return self._dirs.setdefault(key, _Direction())

    def start_at(self, key: tuple, value: int) -> None:
        """The counter's value before the emulation starts (e.g. near the wrap)."""
        self._d(key).value = value % (1 << self.width_bits) if self.width_bits else value

    def cross(self, key: tuple, n: int) -> None:
        d = self._d(key)
        self.truth[key] += n
        d.since_report += n
        d.since_reset += n
        d.value = d.value + n
        if self.width_bits:
            d.value %= 1 << self.width_bits

    def reset(self, key: tuple) -> None:
        d = self._d(key)
        d.value, d.since_reset, d.had_reset = 0, 0, True

    def value(self, key: tuple) -> int:
        return self._d(key).value

    def seen(self, key: tuple) -> bool:
        """Whether a report of this key has reached the gateway yet."""
        return self._d(key).reported is not None

    def delivered(self, key: tuple) -> None:
        """A report of the current value reached the gateway."""
        d = self._d(key)
        if d.reported is not None:
            if not d.had_reset:
                self.countable[key] += d.since_report
            else:
                self.countable[key] += d.since_reset
                span = 1 << self.width_bits if self.width_bits else None
                looks_wrapped = span is not None and d.reported >= 3 * span // 4 and d.value < span // 4
                if d.value >= d.reported or looks_wrapped:
                    self.ambiguous += 1
        d.reported, d.since_report, d.since_reset, d.had_reset = d.value, 0, 0, False


@dataclass
class PeriodTruth:
    """Per-period counters: the period's count restarts at each report (and at a reboot)."""

    truth: Counter = field(default_factory=Counter)
    countable: Counter = field(default_factory=Counter)
    _period: Counter = field(default_factory=Counter)

    def cross(self, key: tuple, n: int) -> None:
        self.truth[key] += n
        self._period[key] += n

    def reboot(self, key: tuple) -> None:
        self._period[key] = 0

    def take(self, key: tuple) -> int:
        """The period's count, as the report carries it; the period restarts."""
        n = self._period.pop(key, 0)
        return n

    def delivered(self, key: tuple, n: int) -> None:
        self.countable[key] += n
