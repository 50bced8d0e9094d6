"""The serial transport over real pseudo-terminals: frames arrive, commands go out, a port missing
at start is waited for, and an unplugged port (its pty closed, the stable path re-pointed) comes back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path

from devices.events import Reject, RejectReason
from devices.registry import SerialSettings
from gateway.sources.serial import SerialPort, SerialPortSpec


class LineFramer:
    """A test framer: newline-terminated frames; a line starting with '!' is a reject."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, chunk: bytes) -> list[bytes | Reject]:
        self.buf += chunk
        out: list[bytes | Reject] = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            out.append(Reject(RejectReason.SYNC, "bang", line) if line.startswith(b"!") else line)
        return out


class FakeDevice:
    """A device on a pty, reachable under a stable symlink (like /dev/serial/by-id/…)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        name = os.ttyname(slave)
        os.close(slave)  # the gateway opens it by name
        tmp = self.link.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(name)
        tmp.replace(self.link)
        self.master = master

    def unplug(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def send(self, data: bytes) -> None:
        assert self.master is not None
        os.write(self.master, data)

    def read(self, timeout_s: float = 2.0) -> bytes:
        import select

        assert self.master is not None
        r, _, _ = select.select([self.master], [], [], timeout_s)
        return os.read(self.master, 4096) if r else b""


async def until(pred, timeout_s: float = 5.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def make_port(link: Path, got: list, **kw) -> SerialPort:
    spec = SerialPortSpec("dev1", str(link), SerialSettings(9600), reconnect_min_s=0.05, reconnect_max_s=0.2, **kw)
    return SerialPort(spec, LineFramer, got.extend)


def test_serial_frames_in_commands_out(tmp_path):
    async def body():
        dev = FakeDevice(tmp_path / "reader")
        dev.plug()
        got: list = []
        port = make_port(tmp_path / "reader", got, start_commands=(b"START\n",))
        task = asyncio.create_task(port.run())
        try:
            await until(lambda: port.stats.is_open, what="open")
            assert await asyncio.to_thread(dev.read) == b"START\n"
            dev.send(b"one\ntw")
            dev.send(b"o\n!junk\nthree\n")
            await until(lambda: len(got) == 4, what="4 items")
            assert got[:2] == [b"one", b"two"] and isinstance(got[2], Reject) and got[3] == b"three"
            assert port.stats.frames == 3 and port.stats.rejects == 1
            assert port.write(b"PING\n")
            assert await asyncio.to_thread(dev.read) == b"PING\n"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            dev.unplug()

    asyncio.run(body())


def test_serial_missing_at_start_then_unplug_and_replug(tmp_path, caplog):
    """Not fatal when missing; reopened after an unplug; one log line per state change."""
    caplog.set_level("INFO", logger="sdgw.serial")

    async def body():
        dev = FakeDevice(tmp_path / "reader")
        got: list = []
        port = make_port(tmp_path / "reader", got, start_commands=(b"START\n",))
        task = asyncio.create_task(port.run())
        try:
            await asyncio.sleep(0.5)
            assert not port.stats.is_open and port.stats.open_failures >= 2
            dev.plug()
            await until(lambda: port.stats.is_open, what="open after plug")
            dev.send(b"a\n")
            await until(lambda: got == [b"a"], what="first frame")
            dev.unplug()
            await until(lambda: not port.stats.is_open, what="loss noticed")
            await asyncio.sleep(0.3)
            dev.plug()
            await until(lambda: port.stats.is_open, what="open after replug")
            assert await asyncio.to_thread(dev.read) == b"START\n"  # start commands sent again
            dev.send(b"b\n")
            await until(lambda: got == [b"a", b"b"], what="frame after replug")
            assert port.stats.reconnects == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            dev.unplug()

    asyncio.run(body())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot open" in m for m in messages) == 2  # at start, and while unplugged: once each
    assert sum("lost" in m for m in messages) == 1
    assert sum("open again after" in m for m in messages) == 1


def test_serial_keepalive_resends_commands(tmp_path):
    async def body():
        dev = FakeDevice(tmp_path / "reader")
        dev.plug()
        port = make_port(tmp_path / "reader", [], start_commands=(b"S\n",), keepalive_s=0.1)
        task = asyncio.create_task(port.run())
        try:
            await until(lambda: port.stats.is_open, what="open")
            seen = b""
            for _ in range(10):
                seen += await asyncio.to_thread(dev.read, 0.3)
                if seen.count(b"S\n") >= 3:
                    break
            assert seen.count(b"S\n") >= 3
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            dev.unplug()

    asyncio.run(body())


class FlushingLineFramer(LineFramer):
    def flush(self) -> list[bytes | Reject]:
        partial, self.buf = self.buf, b""
        return [Reject(RejectReason.LENGTH, "cut short", partial)] if partial else []


def test_serial_silence_flushes_a_partial_frame(tmp_path):
    """A frame cut short is given up after the line goes silent, not glued to the next frame."""

    async def body():
        dev = FakeDevice(tmp_path / "reader")
        dev.plug()
        got: list = []
        spec = SerialPortSpec("dev1", str(tmp_path / "reader"), SerialSettings(9600), silence_flush_s=0.05)
        port = SerialPort(spec, FlushingLineFramer, got.extend)
        task = asyncio.create_task(port.run())
        try:
            await until(lambda: port.stats.is_open, what="open")
            dev.send(b"trunc")
            await until(lambda: len(got) == 1, what="partial frame flushed")
            assert isinstance(got[0], Reject) and got[0].raw == b"trunc"
            dev.send(b"whole\n")
            await until(lambda: len(got) == 2, what="next frame")
            assert got[1] == b"whole"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            dev.unplug()

    asyncio.run(body())
