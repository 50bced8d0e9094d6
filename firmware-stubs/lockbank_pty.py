"""Shared engine of the serial locker-bank emulators (`lock8a_bank.py`, `kerong_bank.py`).

A bank of lock boards behind one pseudo-terminal: the emulator holds the PTY master, the gateway opens
the slave through a stable symlink (like /dev/serial/by-id/…) in a directory of the caller's choice.
The slave is put in raw mode (no echo, no line editing, no CR/LF translation), as a USB-RS485 adapter
is. Unplug closes both ends and removes the link; replug makes a new PTY and re-points the link, so
the gateway's reconnect logic sees what it sees when a technician pulls the cable.

The bank keeps its physical truth — doors, latches, item sensors — and a ground-truth log of what
happened (`Happening`), so tests compare the gateway's records with what "really" happened:
courier deposits and customer pickups (an auto cycle after a commanded opening: the item flips and the
door closes `hold_s` later), jammed locks (the unlock is answered, the door stays shut), forced opens,
a controller that goes silent, unplug / replug.

The protocol specifics (request parsing, reply frames) live in a `BoardProtocol`; frames are built
here from the protocol document, not with the gateway's own encoders, so one bug cannot hide another.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Request:
    kind: str  # "status" | "unlock"
    board: int
    lock: int  # 1-based; 0 for a board-wide status query
    raw: bytes


@dataclass
class Door:
    is_open: bool = False
    has_item: bool = False
    is_jammed: bool = False


@dataclass(frozen=True)
class Happening:
    t: float  # time.monotonic()
    kind: str  # status_request, unlock_request, door_opened, door_closed, unlock_jammed, deposit, pickup,
    #            forced_open, silent, resumed, ignored_request, unplugged, replugged, reply_dropped
    board: int = 0
    lock: int = 0
    detail: str = ""


class BoardProtocol(Protocol):
    name: str

    def parse(self, buf: bytearray) -> list[Request]:
        """Take whole requests off the front of buf (drop garbage); leave a partial one."""
        ...

    def reply(self, request: Request, doors: dict[tuple[int, int], Door], lock_count: int) -> bytes | None: ...


class PtyPort:
    """One pseudo-terminal with a stable symlink to its slave end."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self._slave: int | None = None
        self.plug()

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link)  # atomic re-point, as udev does for by-id links

    def unplug(self) -> None:
        for fd in (self.master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()


@dataclass
class BankKnobs:
    answer_delay_s: float = 0.0  # before a status reply
    unlock_delay_s: float = 0.0  # before an unlock reply (the 8A/80 board: about 0.5 s)
    hold_s: float = 0.5  # auto cycle: door closes this long after a commanded opening
    auto_cycle: bool = True  # courier deposits into an empty compartment, customer takes from a loaded one
    split_replies: bool = False  # write each reply in two chunks, 5 ms apart
    garbage_rate: float = 0.0  # chance of 1–6 noise bytes before a reply
    corrupt_rate: float = 0.0  # chance of one flipped bit in a reply
    seed: int = 1


@dataclass
class PtyLockBank:
    """A bank of boards ({address: lock count}) answering `protocol` on a PTY. Use as a context
    manager or call start()/stop(). Public actions are safe to call from any thread."""

    protocol: BoardProtocol
    boards: dict[int, int]
    link: Path
    knobs: BankKnobs = field(default_factory=BankKnobs)
    truth: list[Happening] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.doors = {(b, lock): Door() for b, n in self.boards.items() for lock in range(1, n + 1)}
        self.silent_boards: set[int] = set()
        self._lock = threading.RLock()
        self._timers: list[tuple[float, str, int, int]] = []
        self._rx = bytearray()
        self._rng = random.Random(self.knobs.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.port: PtyPort | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> PtyLockBank:
        self.port = PtyPort(self.link)
        self._thread = threading.Thread(target=self._run, name=f"{self.protocol.name}-bank", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.port is not None:
            self.port.unplug()

    def __enter__(self) -> PtyLockBank:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- actions (scripts and tests) ---------------------------------------------------------------

    def force_open(self, board: int, lock: int) -> None:
        with self._lock:
            door = self.doors[(board, lock)]
            if not door.is_open:
                door.is_open = True
                self._note("forced_open", board, lock)

    def close_door(self, board: int, lock: int) -> None:
        with self._lock:
            door = self.doors[(board, lock)]
            if door.is_open:
                door.is_open = False
                self._note("door_closed", board, lock)

    def set_item(self, board: int, lock: int, present: bool) -> None:
        """Put a parcel in / take it out by hand (a courier or customer behind the gateway's back)."""
        with self._lock:
            door = self.doors[(board, lock)]
            if door.has_item != present:
                door.has_item = present
                self._note("deposit" if present else "pickup", board, lock, "by hand")

    def jam(self, board: int, lock: int, jammed: bool = True) -> None:
        with self._lock:
            self.doors[(board, lock)].is_jammed = jammed

    def go_silent(self, board: int | None = None) -> None:
        """The controller stops answering (all boards, or one)."""
        with self._lock:
            self.silent_boards |= set(self.boards) if board is None else {board}
            self._note("silent", board or 0, 0)

    def resume(self, board: int | None = None) -> None:
        with self._lock:
            self.silent_boards -= set(self.boards) if board is None else {board}
            self._note("resumed", board or 0, 0)

    def unplug(self) -> None:
        with self._lock:
            if self.port is not None and self.port.master is not None:
                self.port.unplug()
                self._rx.clear()
                self._note("unplugged")

    def replug(self) -> None:
        with self._lock:
            if self.port is not None and self.port.master is None:
                self.port.plug()
                self._note("replugged")

    def happenings(self, kind: str | None = None) -> list[Happening]:
        with self._lock:
            return [h for h in self.truth if kind is None or h.kind == kind]

    # --- the board side ----------------------------------------------------------------------------

    def _note(self, kind: str, board: int = 0, lock: int = 0, detail: str = "") -> None:
        self.truth.append(Happening(time.monotonic(), kind, board, lock, detail))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._fire_timers()
            fd = self.port.master if self.port else None
            if fd is None:
                time.sleep(0.01)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.01)
                data = os.read(fd, 4096) if ready else b""
            except OSError:  # unplugged under our feet, or no slave open yet on some kernels
                time.sleep(0.01)
                continue
            if not data:
                continue
            with self._lock:
                self._rx += data
                requests = self.protocol.parse(self._rx)
            for request in requests:
                self._serve(request)

    def _serve(self, req: Request) -> None:
        with self._lock:
            self._note(f"{req.kind}_request", req.board, req.lock)
            if req.board not in self.boards:
                return  # no such board on the bus: nobody answers
            if req.board in self.silent_boards:
                self._note("ignored_request", req.board, req.lock)
                return
            if req.kind == "unlock":
                self._unlock(req.board, req.lock)
            delay = self.knobs.unlock_delay_s if req.kind == "unlock" else self.knobs.answer_delay_s
        if delay:
            time.sleep(delay)
        with self._lock:
            frame = self.protocol.reply(req, self.doors, self.boards[req.board])
        if frame is not None:
            self._write(self._noisy(frame))

    def _unlock(self, board: int, lock: int) -> None:
        door = self.doors.get((board, lock))
        if door is None:
            return
        if door.is_jammed:
            self._note("unlock_jammed", board, lock)
            return
        if not door.is_open:
            door.is_open = True
            self._note("door_opened", board, lock, "commanded")
            if self.knobs.auto_cycle:
                self._timers.append((time.monotonic() + self.knobs.hold_s, "cycle", board, lock))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [t for t in self._timers if t[0] <= now]
            self._timers = [t for t in self._timers if t[0] > now]
            for _, _, board, lock in due:
                door = self.doors[(board, lock)]
                door.has_item = not door.has_item  # empty → courier deposits; loaded → customer takes it
                self._note("deposit" if door.has_item else "pickup", board, lock, "auto cycle")
                self.close_door(board, lock)

    def _noisy(self, frame: bytes) -> bytes:
        k = self.knobs
        if k.corrupt_rate and self._rng.random() < k.corrupt_rate:
            i = self._rng.randrange(len(frame))
            frame = frame[:i] + bytes([frame[i] ^ 1 << self._rng.randrange(8)]) + frame[i + 1 :]
        if k.garbage_rate and self._rng.random() < k.garbage_rate:
            frame = self._rng.randbytes(self._rng.randint(1, 6)) + frame
        return frame

    def _write(self, data: bytes) -> None:
        port = self.port
        if port is None or port.master is None:
            return
        chunks = [data[: len(data) // 2], data[len(data) // 2 :]] if self.knobs.split_replies else [data]
        for chunk in chunks:
            try:
                os.write(port.master, chunk)
            except OSError:  # nobody reads the slave and its buffer is full, or unplugged
                with self._lock:
                    self._note("reply_dropped")
                return
            if self.knobs.split_replies:
                time.sleep(0.005)


def parse_links_dir(value: str | None) -> Path:
    """Where the by-id style links go: the given directory, else a fresh temp dir."""
    import tempfile

    return Path(value) if value else Path(tempfile.mkdtemp(prefix="sdgw-serial-"))


def boards_arg(text: str) -> dict[int, int]:
    """'1:8,2:8' → {1: 8, 2: 8}"""
    out = {}
    for part in text.split(","):
        board, _, count = part.partition(":")
        out[int(board)] = int(count or 8)
    return out


def run_demo(bank: PtyLockBank, duration_s: float) -> None:
    """A scripted hour in miniature: lock 3 jammed; a forced open of lock 2 left open for 20 s; the
    controller silent for 10 s; doors opened by the gateway run the deposit / pickup cycle."""
    board = min(bank.boards)
    bank.jam(board, 3)
    steps = [
        (5.0, lambda: bank.force_open(board, 2)),
        (25.0, lambda: bank.close_door(board, 2)),
        (40.0, lambda: bank.go_silent()),
        (50.0, lambda: bank.resume()),
    ]
    start = time.monotonic()
    for at, action in steps:
        if at > duration_s:
            break
        time.sleep(max(0.0, start + at - time.monotonic()))
        action()
    time.sleep(max(0.0, start + duration_s - time.monotonic()))


def serve(bank: PtyLockBank, scenario: str, duration_s: float) -> None:
    """What a bank's command line does: the link on stdout, the scenario until the duration or
    Ctrl-C, then the ground truth (one happening per line)."""
    with bank:
        print(bank.link, flush=True)
        try:
            if scenario == "demo":
                run_demo(bank, duration_s)
            else:
                time.sleep(duration_s)
        except KeyboardInterrupt:
            pass
    for h in bank.truth:
        print(f"{h.t:.3f} {h.kind} board={h.board} lock={h.lock} {h.detail}".rstrip())
