"""Doctor: one serial device — the port exists, we may open it, bytes arrive, and they decode as
the configured model's frames (with the gateway's own framer and codec).

The port is opened the way the gateway opens it (serialx, the model's line settings and config
overrides) and the model's start commands are sent, since polled readers say nothing until asked.
Only counts are reported: never a frame, a tag or a card number. With the gateway running, the
port is shared and bytes split between two readers: stop the service first (the fix says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import stat
import time
from collections import Counter
from dataclasses import replace

import serialx

from devices.events import Reject
from devices.registry import lookup
from gateway.config import DeviceConfig
from gateway.doctor.report import Check, failed, passed, skipped

_PARITY = {"N": serialx.Parity.NONE, "E": serialx.Parity.EVEN, "O": serialx.Parity.ODD}


class _Collector(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.arrived = asyncio.Event()
        self.lost: str | None = None

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = str(exc) if exc else "closed"
        self.arrived.set()


def _who() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def port_holders(path: str) -> list[tuple[int, str]]:
    """(pid, command line) of the processes that have `path` open (from /proc; others' only as root)."""
    try:
        target = os.path.realpath(path)
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    holders = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        holders.append((pid, cmdline))
    return holders


def _is_gateway(cmdline: str) -> bool:
    words = cmdline.split()
    return "run" in words and any(w.endswith(("sdgw", "gateway.cli")) for w in words)


async def probe_serial(device: DeviceConfig, wait_s: float) -> list[Check]:
    name = f"serial {device.id}"
    path = str(device.port)
    model = lookup(device.model)
    assert model.framer is not None and model.serial is not None
    settings = model.serial
    if device.baudrate or device.parity:
        settings = replace(
            settings, baudrate=device.baudrate or settings.baudrate, parity=device.parity or settings.parity
        )
    line = f"{settings.baudrate} baud {settings.bytesize}{settings.parity}{settings.stopbits}"

    if not os.path.exists(path):  # follows the link: a by-id or /dev/sdgw name of an unplugged reader dangles
        return [
            failed(
                f"{name}: port",
                f"{path} does not exist",
                "plug the reader in and check its name: ls -l /dev/sdgw /dev/serial/by-id; the udev rule "
                "(/etc/udev/rules.d/99-sdgw-serial.rules, sdgw-name-port) and `port` in the config must agree",
            )
        ]
    if not os.access(path, os.R_OK | os.W_OK):
        st = os.stat(path)
        group = grp.getgrgid(st.st_gid).gr_name
        return [
            failed(
                f"{name}: port",
                f"{path}: user {_who()} may not read and write it (group {group}, mode {stat.filemode(st.st_mode)})",
                f"add the service user to group {group}: usermod -aG {group} sdgw (install.sh adds dialout), "
                'and let the udev rule set GROUP="dialout", MODE="0660"',
            )
        ]
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await serialx.create_serial_connection(
            loop,
            _Collector,
            path,
            baudrate=settings.baudrate,
            parity=_PARITY[settings.parity],
            stopbits=serialx.StopBits.TWO if settings.stopbits == 2 else serialx.StopBits.ONE,
            byte_size=settings.bytesize,
        )
    except (OSError, serialx.SerialException) as exc:
        holders = port_holders(path)
        gateways = [pid for pid, cmdline in holders if _is_gateway(cmdline)]
        if gateways:  # the port works; the running gateway has it (its /status page shows its state)
            return [
                skipped(
                    f"{name}: port",
                    f"{path} is in use by the running gateway (pid {gateways[0]}): bytes and frames not "
                    "checked here — see its status page, or stop it (systemctl stop sdgw) and run again",
                )
            ]
        others = "; ".join(f"pid {pid}: {cmdline[:80]}" for pid, cmdline in holders)
        return [
            failed(
                f"{name}: port",
                f"cannot open {path}: {exc}" + (f" (held by {others})" if others else ""),
                "another program holds the port — stop it (on a Pi, ModemManager grabs serial adapters: "
                "systemctl disable --now ModemManager), or stop the gateway (systemctl stop sdgw), and run again",
            )
        ]
    checks = [passed(f"{name}: port", f"{path} opened at {line}")]
    framer = model.framer()
    frames = decoded = 0
    rejects: Counter[str] = Counter()
    try:
        for command in model.start_commands() if model.start_commands else []:
            transport.write(command)
        deadline = loop.time() + wait_s
        fed = 0
        while loop.time() < deadline and not decoded and proto.lost is None:
            proto.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proto.arrived.wait(), max(0.0, deadline - loop.time()))
            await asyncio.sleep(0.1)  # let a frame in progress finish
            chunk = bytes(proto.data[fed:])
            fed = len(proto.data)
            for item in framer.feed(chunk):
                if isinstance(item, Reject):
                    rejects[item.reason.value] += 1
                    continue
                frames += 1
                result = model.decode(item, received_ns=time.time_ns())
                if isinstance(result, Reject):
                    rejects[result.reason.value] += 1
                else:
                    decoded += 1
    finally:
        transport.close()
    got = len(proto.data)
    why = ", ".join(f"{k} {v}" for k, v in sorted(rejects.items()))
    if proto.lost is not None and not got:
        checks.append(failed(f"{name}: data", f"the port closed: {proto.lost}", "check the cable and the adapter"))
    elif not got:
        checks.append(
            failed(
                f"{name}: data",
                f"no byte within {wait_s:g} s",
                f"check the reader's power and wiring (RS-485: A/B swapped?), that it is a {device.model} at "
                f"{line}; readers that speak only when a card or tag is in the field need one held to them",
            )
        )
    elif not decoded:
        checks.append(
            failed(
                f"{name}: data",
                f"{got} bytes but no frame decodes as {device.model} ({frames} frames; rejected: {why or 'none'})",
                f"wrong line settings or wrong model: the model expects {line}; set `baudrate`/`parity` of "
                f"device {device.id} or its `model` (`sdgw devices` lists them)",
            )
        )
    else:
        checks.append(
            passed(
                f"{name}: data",
                f"{got} bytes, {decoded} frame(s) decoded as {device.model}" + (f" (rejected: {why})" if why else ""),
            )
        )
    return checks
