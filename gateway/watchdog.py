"""systemd's notify protocol, without a library: READY=1 once the gateway runs, WATCHDOG=1 while
its event loop turns, STOPPING=1 on the way out (sd_notify(3): datagrams of "KEY=VALUE" lines to
the unix socket named in $NOTIFY_SOCKET; a leading "@" names an abstract socket).

The keep-alive is sent by an asyncio task, never by a thread: a thread would keep feeding the
watchdog while the loop is stuck, and the point of `WatchdogSec=` is that systemd restarts a
gateway whose loop no longer turns. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger("sdgw.watchdog")


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = _watchdog_interval_s(env)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send one notification; False when not under systemd or when the socket refused it."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._failed:  # once per outage: this runs every few seconds
                log.warning("systemd notify socket refused %r: %s", message.split("=")[0], exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def feed(self) -> None:
        """WATCHDOG=1 at half the watchdog interval for as long as the loop runs this task."""
        if self.watchdog_s is None or self.address is None:
            return
        period_s = self.watchdog_s / 2
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(period_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. a vsock address: not for a gateway on a Pi


def _watchdog_interval_s(env: dict[str, str] | os._Environ[str]) -> float | None:
    """WatchdogSec= as systemd passes it (sd_watchdog_enabled(3)): WATCHDOG_USEC, and WATCHDOG_PID
    when set must be us (a child process must not feed its parent's watchdog)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6
