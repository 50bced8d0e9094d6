"""The bus poll loop over real pseudo-terminals with the device emulators: one request in flight,
answers matched to their request, timeouts, a silent device not stalling the others on its bus,
commands ahead of routine polls, reply-driven Chafon pacing; the matchers and the config rules."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
import time
import tty
from collections import defaultdict

import chafon_reader
import kerong_bank
import lock8a_bank
import pytest
from lockbank_pty import BankKnobs
from modbus_counter import ModbusCounterDevice

from devices import chafon, kerong, lock8a, modbus_counter
from devices.events import Answer, InventoryRound, LockStatus, Reject, TagRead, UnlockAnswered
from devices.registry import MODELS, DeviceOptions
from gateway.config import ConfigError, parse_config
from gateway.sources.poller import BusPoller, PolledDevice, RequestNotSent
from gateway.sources.serial import SerialPort, SerialPortSpec

H = bytes.fromhex
MAP = {"lines": [{"line": "door", "in": 0, "out": 1}]}


async def until(pred, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Bus:
    """A SerialPort and its BusPoller for `model` on `link`, recording what reaches the 'pipeline'."""

    def __init__(
        self, link, model_name: str, devices: dict[str, DeviceOptions], *, echo: bool = False, **timing: float
    ) -> None:
        model = MODELS[model_name]
        assert model.bus is not None and model.framer is not None and model.serial is not None
        self.model = model
        self.frames: dict[str, list[bytes | Reject]] = defaultdict(list)
        self.timeouts: list[tuple[str, bytes]] = []
        spec = SerialPortSpec("bus", str(link), model.serial, reconnect_min_s=0.05, reconnect_max_s=0.2, echo=echo)
        self.port = SerialPort(spec, model.framer, lambda items: self.poller.on_frames(items))
        polled = [
            PolledDevice(
                device_id,
                tuple(model.poll_requests(options)),
                model.bus.match,
                timing.get("interval_s", model.bus.interval_s),
                timing.get("timeout_s", model.bus.timeout_s),
            )
            for device_id, options in devices.items()
        ]
        self.poller = BusPoller(
            "bus",
            polled,
            self.port,
            gap_s=model.bus.gap_s,
            deliver=lambda device_id, items: self.frames[device_id].extend(items),
            on_timeout=lambda device_id, request: self.timeouts.append((device_id, request)),
        )
        self._tasks: list[asyncio.Task] = []

    def events(self, device_id: str) -> list:
        out = []
        for frame in self.frames[device_id]:
            if isinstance(frame, bytes):
                decoded = self.model.decode(frame, received_ns=0)
                assert not isinstance(decoded, Reject), (frame.hex(), decoded)
                out += decoded
        return out

    async def __aenter__(self) -> Bus:
        self._tasks = [asyncio.create_task(self.port.run()), asyncio.create_task(self.poller.run())]
        await until(lambda: self.port.stats.is_open, what="port open")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- matchers (pure) ------------------------------------------------------------------------------


def test_modbus_match_answer_same_slave_and_function_or_its_exception():
    request = modbus_counter.read_request(modbus_counter.RegisterMap(slave=2))
    assert modbus_counter.match_answer(request, modbus_counter.response(2, 3, [1, 2])) is Answer.LAST
    assert modbus_counter.match_answer(request, modbus_counter.with_crc(bytes([2, 0x83, 2]))) is Answer.LAST
    assert modbus_counter.match_answer(request, modbus_counter.response(1, 3, [1, 2])) is Answer.NONE
    assert modbus_counter.match_answer(request, modbus_counter.response(2, 4, [1, 2])) is Answer.NONE


def test_lock8a_match_answer_board_and_channel():
    unlock = lock8a.encode_unlock(2, 1)
    assert lock8a.match_answer(unlock, H("8A 02 01 00 89")) is Answer.LAST
    assert lock8a.match_answer(unlock, H("8A 02 02 00 8A")) is Answer.NONE  # another channel
    assert lock8a.match_answer(unlock, H("80 02 00 00 00 33 B1")) is Answer.NONE  # a status reply
    query = lock8a.encode_query_all(1)
    assert lock8a.match_answer(query, H("80 01 00 00 00 33 B2")) is Answer.LAST  # L1
    assert lock8a.match_answer(query, H("80 02 00 00 00 33 B1")) is Answer.NONE


def test_kerong_match_answer_board_nibble_of_a_status_frame():
    assert kerong.match_answer(kerong.encode_unlock(0, 1), H("02 00 35 05 00 01 00 03 40")) is Answer.LAST
    assert kerong.match_answer(kerong.encode_status(0), H("02 00 35 05 00 01 00 03 40")) is Answer.LAST
    other_board = bytes([0x02, 0x10, 0x35, 0, 0, 0, 0, 0x03]) + bytes([(0x02 + 0x10 + 0x35 + 0x03) & 0xFF])
    assert kerong.match_answer(kerong.encode_status(0), other_board) is Answer.NONE


def test_chafon_match_answer_round_parts_and_address():
    inventory = chafon.inventory_288()  # broadcast: any reader's answer
    more = H("0D 00 01 03 01 01 04 00 32 30 38 6D A3 D2")  # §2.2 C2: status 03, more frames follow
    done = H("07 00 01 01 01 00 1E 4B")  # C3: status 01, round complete
    assert chafon.match_answer(inventory, more) is Answer.PART
    assert chafon.match_answer(inventory, done) is Answer.LAST
    assert chafon.match_answer(chafon.inventory_288(adr=5), done) is Answer.NONE  # reader 0 answered
    assert chafon.match_answer(chafon.get_reader_info(), done) is Answer.NONE
    # the matcher's PART/LAST is the codec's InventoryRound.is_complete
    assert [e.is_complete for e in chafon.decode_288(more, received_ns=0) if isinstance(e, InventoryRound)] == [False]


# --- Modbus: two units on one port ------------------------------------------------------------------


def test_poller_modbus_silent_unit_times_out_without_stalling_the_other(tmp_path, caplog):
    """Unit 2 goes silent: its polls time out (reported per request), unit 1 keeps its rate; each answer
    reaches the device whose request it answers; silence and recovery are logged once each."""
    caplog.set_level("INFO", logger="sdgw.serial")
    link = tmp_path / "rs485"

    async def body():
        with ModbusCounterDevice(link, slave=1) as unit1:
            unit2 = unit1.add_unit(slave=2, width_bits=32, lines={"door": (0, 2)})
            devices = {
                "c1": DeviceOptions((1,), MAP),
                "c2": DeviceOptions((2,), {"width_bits": 32, "lines": [{"line": "door", "in": 0, "out": 2}]}),
            }
            async with Bus(link, "modbus-rtu-counter", devices, interval_s=0.1, timeout_s=0.25) as bus:
                await until(lambda: unit1.answers_whole >= 3 and unit2.answers_whole >= 3, what="both answer")
                unit2.silent = True
                before = unit1.answers_whole
                await until(lambda: bus.poller.stats["c2"].timeouts >= 4, what="unit 2 timeouts")
                # unit 1 was polled at its pace meanwhile: ~4 × (0.25 s timeout + its own turn)
                assert unit1.answers_whole - before >= 4
                assert bus.poller.stats["c1"].timeouts == 0
                assert {d for d, _ in bus.timeouts} == {"c2"}
                assert all(req == modbus_counter.read_request(_map(2, devices)) for _, req in bus.timeouts)
                assert bus.poller.stats["c2"].answering is False
                # backoff: a unit that keeps not answering is asked less and less often
                requests_before, t0 = bus.poller.stats["c2"].requests, time.monotonic()
                await asyncio.sleep(2.0)
                asked = bus.poller.stats["c2"].requests - requests_before
                assert asked <= 3, f"{asked} polls of a silent unit in {time.monotonic() - t0:.1f} s"
                unit2.silent = False
                answered = bus.poller.stats["c2"].answers
                await until(lambda: bus.poller.stats["c2"].answers > answered + 2, what="unit 2 back")
                assert bus.poller.stats["c2"].answering is True
            for device_id, slave in (("c1", 1), ("c2", 2)):
                frames = bus.frames[device_id]
                assert frames and all(isinstance(f, bytes) and f[0] == slave for f in frames)
                st = bus.poller.stats[device_id]
                assert st.answers + st.timeouts == st.requests or st.answers + st.timeouts == st.requests - 1

    asyncio.run(body())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("c2 silent" in m for m in messages) == 1
    assert sum("c2 answering again" in m for m in messages) == 1
    assert not any("c1 silent" in m for m in messages)


def test_silent_poll_backoff_doubles_after_the_silence_threshold_and_is_capped():
    from gateway.sources.poller import SILENT_AFTER_TIMEOUTS, SILENT_POLL_MAX_S, PolledDevice, _Slot

    def slot(interval_s: float, misses: int) -> float:
        device = PolledDevice("d", (b"q",), lambda req, frame: None, interval_s, 0.5)
        return _Slot(device, b"q", 0.0, misses).interval_s()

    assert [slot(1.0, m) for m in range(SILENT_AFTER_TIMEOUTS)] == [1.0] * SILENT_AFTER_TIMEOUTS
    assert slot(1.0, SILENT_AFTER_TIMEOUTS) == 2.0 and slot(1.0, SILENT_AFTER_TIMEOUTS + 1) == 4.0
    assert slot(1.0, 50) == SILENT_POLL_MAX_S
    assert slot(60.0, 50) == 60.0  # a slow poll is never made faster


def _map(slave: int, devices: dict[str, DeviceOptions]) -> modbus_counter.RegisterMap:
    options = devices[f"c{slave}"]
    return modbus_counter.RegisterMap.from_mapping({**(options.registers or {}), "slave": slave})


def test_poller_late_answer_is_mismatched_but_still_delivered_to_its_device(tmp_path):
    """An answer that comes after its timeout is counted as mismatched and still reaches its device
    (the values are real); a frame no request of the bus matches is a reject."""
    link = tmp_path / "rs485"

    async def body():
        with ModbusCounterDevice(link, slave=1) as unit1:
            async with Bus(link, "modbus-rtu-counter", {"c1": DeviceOptions((1,), MAP)}, interval_s=0.5) as bus:
                await until(lambda: bus.poller.stats["c1"].answers >= 1, what="first answer")
                # the answer of another slave that nobody asked: unmatched, no owner → a reject
                os.write(unit1.master, modbus_counter.response(9, 3, [7, 7]))
                await until(lambda: bus.poller.stats["c1"].mismatched >= 1, what="mismatch counted")
                rejects = [f for f in bus.frames["c1"] if isinstance(f, Reject)]
                assert rejects and rejects[-1].raw[:1] == b"\x09"
                # a late answer of slave 1 (no request in flight when it lands): delivered as slave 1's
                before = len([f for f in bus.frames["c1"] if isinstance(f, bytes)])
                await until(lambda: bus.poller._in_flight is None, what="bus idle")
                os.write(unit1.master, modbus_counter.response(1, 3, [5, 6]))
                await until(lambda: bus.poller.stats["c1"].mismatched >= 2, what="late answer counted")
                frames = [f for f in bus.frames["c1"] if isinstance(f, bytes)]
                assert len(frames) > before and modbus_counter.response(1, 3, [5, 6]) in frames

    asyncio.run(body())


# --- lock boards: two boards on one port, commands ahead of polls -------------------------------------

BANKS = {
    "lock8a-rs485": (lock8a_bank.make_bank, {1: 8, 2: 8}, lock8a.encode_unlock, UnlockAnswered),
    "kerong-cu16": (kerong_bank.make_bank, {0: 16, 1: 16}, kerong.encode_unlock, LockStatus),
}


@pytest.mark.parametrize("model_name", list(BANKS))
def test_poller_lock_boards_both_polled_unlock_answered_silent_board_times_out(tmp_path, model_name):
    make_bank, boards, encode_unlock, answer_type = BANKS[model_name]
    first, second = sorted(boards)

    async def body():
        bank = make_bank(tmp_path, "b1", boards, BankKnobs(answer_delay_s=0.01, unlock_delay_s=0.2, auto_cycle=False))
        with bank:
            devices = {"bank": DeviceOptions((first, second))}
            async with Bus(bank.link, model_name, devices, interval_s=0.2, timeout_s=0.6) as bus:
                await until(
                    lambda: {e.board for e in bus.events("bank") if isinstance(e, LockStatus)} == {first, second},
                    what="both boards' status",
                )
                # a command goes ahead of the routine polls and returns the matched answer
                asked_at = len(bank.happenings())
                answer = await bus.poller.request("bank", encode_unlock(second, 3), timeout_s=2.0)
                decoded = bus.model.decode(answer, received_ns=0)
                assert any(isinstance(e, answer_type) and e.board == second for e in decoded)
                assert any(isinstance(e, answer_type) and e.board == second and e.lock == 3 for e in decoded)
                assert answer in bus.frames["bank"]  # the answer went to the pipeline as well
                after = [h.kind for h in bank.happenings()[asked_at:]]
                assert after.index("unlock_request") <= 1  # at most the poll already in flight before it
                assert bank.doors[(second, 3)].is_open
                assert bus.poller.stats["bank"].commands == 1

                # the second board goes silent: its polls time out, the first keeps answering
                bank.go_silent(second)
                await until(lambda: len(bus.timeouts) >= 2, what="timeouts of the silent board")
                second_poll = bus.model.poll_requests(DeviceOptions((second,)))[0]
                assert {req for _, req in bus.timeouts} == {second_poll}
                seen = len(bus.events("bank"))
                await until(lambda: len(bus.events("bank")) > seen, what="first board still answering")

                # a command to the silent board: written (after at most the poll in flight, 0.6 s),
                # unanswered → TimeoutError, not "not sent"
                with pytest.raises(TimeoutError) as err:
                    await bus.poller.request("bank", encode_unlock(second, 1), timeout_s=0.8)
                assert not isinstance(err.value, RequestNotSent)
                assert bank.happenings("unlock_request")[-1].lock == 1

    asyncio.run(body())


def test_poller_command_not_sent_while_unplugged_is_never_sent_later(tmp_path):
    """A command that cannot be written before its deadline fails as RequestNotSent and is dropped:
    after the replug the board sees polls, never that unlock."""

    async def body():
        bank = lock8a_bank.make_bank(tmp_path, "b1", {1: 8}, BankKnobs(auto_cycle=False))
        with bank:
            async with Bus(bank.link, "lock8a-rs485", {"bank": DeviceOptions((1,))}, interval_s=0.2) as bus:
                await until(lambda: bus.poller.stats["bank"].answers >= 1, what="first answer")
                bank.unplug()
                await until(lambda: not bus.port.stats.is_open, what="loss noticed")
                with pytest.raises(RequestNotSent):
                    await bus.poller.request("bank", lock8a.encode_unlock(1, 4), timeout_s=0.3)
                bank.replug()
                answers = bus.poller.stats["bank"].answers
                await until(lambda: bus.poller.stats["bank"].answers > answers + 1, what="polls after replug")
                assert not bank.happenings("unlock_request")
                assert not bank.doors[(1, 4)].is_open
                with pytest.raises(LookupError):
                    await bus.poller.request("nobody", b"\x00", timeout_s=0.1)

    asyncio.run(body())


# --- an adapter that echoes what the gateway sends ------------------------------------------------


class EchoingBoard:
    """An 8A/80 board (address 1) behind a USB-RS485 adapter without echo suppression: every request
    comes back first, then the board's reply (channel 1 closed) 20 ms later."""

    REPLY = lock8a._frame(bytes([0x80, 0x01, 0x00, 0x00, 0x01, 0x33]))

    def __init__(self, link) -> None:
        self.link = link
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        link.symlink_to(os.ttyname(self._slave))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            if select.select([self.master], [], [], 0.02)[0]:
                buf += os.read(self.master, 256)
            while len(buf) >= 5:
                request, buf = buf[:5], buf[5:]
                os.write(self.master, request)  # the adapter's echo
                time.sleep(0.02)
                if request == lock8a.encode_query_all(1):
                    os.write(self.master, self.REPLY)

    def __enter__(self) -> EchoingBoard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)
        os.close(self._slave)


@pytest.mark.parametrize("echo", [False, True])
def test_poller_echoing_adapter_needs_echo_on_or_the_echo_passes_for_the_answer(tmp_path, echo):
    """An echoed query-all reads as a valid one-status-byte reply (device-protocols §5.1): with
    `echo` off it is taken for the answer; with `echo` on exactly the bytes sent are discarded and the
    board's own reply is the answer."""

    async def body():
        with EchoingBoard(tmp_path / "rs485"):
            devices = {"bank": DeviceOptions((1,))}
            async with Bus(tmp_path / "rs485", "lock8a-rs485", devices, echo=echo, interval_s=30.0) as bus:
                await until(lambda: bus.poller.stats["bank"].requests >= 1, what="first poll")
                answer = await bus.poller.request("bank", lock8a.encode_query_all(1), timeout_s=1.0)
                if echo:
                    assert answer == EchoingBoard.REPLY
                    await until(lambda: bus.poller.stats["bank"].answers == 2, what="both answered")
                    assert bus.port.stats.echo_bytes == 5 * bus.port.stats.writes
                    assert bus.port.stats.echo_mismatches == 0
                    assert bus.frames["bank"] == [EchoingBoard.REPLY, EchoingBoard.REPLY]
                else:
                    assert answer == lock8a.encode_query_all(1)  # the echo, decoded as "channels 1–8 open"
                    assert bus.port.stats.echo_bytes == 0

    asyncio.run(body())


# --- Chafon: reply-driven pacing -----------------------------------------------------------------------


def _reads(frames: list) -> int:
    n = 0
    for frame in frames:
        if isinstance(frame, bytes):
            decoded = chafon.decode_288(frame, received_ns=0)
            if not isinstance(decoded, Reject):
                n += sum(isinstance(e, TagRead) for e in decoded)
    return n


def test_chafon_reply_driven_pacing_beats_keepalive_pacing(tmp_path):
    """The next inventory goes out when the round is complete: reads/s rise far above one round per
    keepalive period (POLL_S), the old pacing, measured over the same time on the same emulator."""
    window_s = 2.0

    async def keepalive_paced(link) -> int:
        got: list = []
        spec = SerialPortSpec(
            "old", str(link), MODELS["chafon-uhfreader288"].serial, tuple(chafon.start_commands_288()), chafon.POLL_S
        )
        port = SerialPort(spec, chafon.Framer, got.extend)
        task = asyncio.create_task(port.run())
        await until(lambda: port.stats.is_open, what="open")
        await asyncio.sleep(window_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return _reads(got)

    async def reply_paced(link) -> tuple[int, int]:
        async with Bus(link, "chafon-uhfreader288", {"reader": DeviceOptions((chafon.BROADCAST,))}) as bus:
            await asyncio.sleep(window_s)
        return _reads(bus.frames["reader"]), bus.poller.stats["reader"].answers

    tags = chafon_reader.epc_population(6, 3)
    with chafon_reader.ChafonReader(tmp_path / "old", tags, seed=3, arrive_p=1.0, depart_p=0.0) as reader:
        old = asyncio.run(keepalive_paced(reader.link))
    with chafon_reader.ChafonReader(tmp_path / "new", tags, seed=3, arrive_p=1.0, depart_p=0.0) as reader:
        new, rounds = asyncio.run(reply_paced(reader.link))
        assert reader.requests == pytest.approx(rounds, abs=1)
    assert old > 0
    assert rounds >= 10 * window_s  # at least 10 rounds/s where the keepalive gave 1 / 1.2 s
    assert new >= 5 * old, (old, new)


def test_chafon_keepalive_fallback_when_no_reply_comes(tmp_path):
    """A reader that stops answering is asked again after each timeout; answers resume the pace."""

    async def body(reader):
        devices = {"reader": DeviceOptions((chafon.BROADCAST,))}
        async with Bus(reader.link, "chafon-uhfreader288", devices, timeout_s=0.2) as bus:
            st = bus.poller.stats["reader"]
            await until(lambda: st.answers >= 5, what="rounds")
            reader.silent = True
            written = len(reader.host_bytes)
            await until(lambda: st.timeouts >= 3, what="timeouts")
            assert len(reader.host_bytes) - written >= 3 * len(chafon.inventory_288(scan_time_ms=1000))
            reader.silent = False
            answers = st.answers
            await until(lambda: st.answers >= answers + 5, what="rounds again")
            assert [d for d, _ in bus.timeouts] == ["reader"] * len(bus.timeouts)

    with chafon_reader.ChafonReader(tmp_path / "reader", seed=4) as reader:
        asyncio.run(body(reader))


# --- configuration ------------------------------------------------------------------------------------

BASE = """[gateway]
district = "d"
street = "s"
id = "g"
"""


def _device(dev_id: str, model: str, port: str = "/dev/serial/by-id/bus", **keys: str) -> str:
    lines = ["[[devices]]", f'id = "{dev_id}"', f'model = "{model}"', 'transport = "serial"', f'port = "{port}"']
    lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def _problems(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + text, "gw.toml")
    return str(err.value)


REGS = '{ lines = [{ line = "door", in = 0, out = 1 }] }'


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            _device("a", "modbus-rtu-counter", address="1", registers=REGS)
            + _device("b", "modbus-rtu-counter", address="1", registers=REGS),
            "devices a and b on port /dev/serial/by-id/bus both use address 1",
        ),
        (
            _device("a", "modbus-rtu-counter", registers=REGS) + _device("b", "rdm6300"),
            "only polled models can share a port",
        ),
        (
            _device("a", "modbus-rtu-counter", registers=REGS) + _device("b", "lock8a-rs485"),
            "one protocol family per bus",
        ),
        (
            _device("a", "modbus-rtu-counter", address="1", registers=REGS)
            + _device("b", "modbus-rtu-counter", address="2", registers=REGS, baudrate="9600"),
            "share port /dev/serial/by-id/bus but not baudrate/parity/echo",
        ),
        (_device("a", "modbus-rtu-counter"), "registers: required for modbus-rtu-counter"),
        (_device("a", "modbus-rtu-counter", registers='{ lines = [{ line = "d", in = 0, out = 0 }] }'), "overlap"),
        (_device("a", "modbus-rtu-counter", registers=REGS, address="248"), "address: expected 1..247"),
        (_device("a", "m100", poll_interval_s="1"), "poll_interval_s: only for polled serial models"),
        (_device("a", "lock8a-rs485", address="1", locker="{ boards = [1, 2] }"), "not `address`"),
        (_device("a", "chafon-uhfreader18", registers=REGS), "registers: only for modbus-rtu-counter"),
    ],
)
def test_config_bus_rules_name_the_problem(text, expected):
    assert expected in _problems(text)


def test_config_shared_port_and_register_map_compile():
    regs32 = '{ function = 4, width_bits = 32, word_order = "low_first", occupancy = 8, lines = [{ line = "door", in = 0, out = 2 }] }'  # noqa: E501
    config = parse_config(
        BASE
        + _device("a", "modbus-rtu-counter", address="1", registers=REGS, poll_interval_s="2.5")
        + _device("b", "modbus-rtu-counter", address="2", registers=regs32, poll_timeout_s="0.5")
        + _device("c", "lock8a-rs485", port="/dev/serial/by-id/lockers", locker="{ boards = [1, 2] }"),
        "gw.toml",
    )
    a, b, c = config.devices
    assert a.poll_interval_s == 2.5 and b.poll_timeout_s == 0.5
    assert MODELS[a.model].poll_requests(a.bus_options) == [H("01 03 00 00 00 02 C4 0B")]  # §4.7 example
    register_map = b.decode_kwargs()["register_map"]
    assert (register_map.slave, register_map.function, register_map.count) == (2, 4, 10)
    frame = modbus_counter.response(2, 4, [7, 0, 3, 0, 0, 0, 0, 0, 12, 0])
    events = MODELS[b.model].decode(frame, received_ns=0, **b.decode_kwargs())
    assert [type(e).__name__ for e in events] == ["CounterTotals", "OccupancySnapshot"]
    assert (events[0].total_in, events[0].total_out, events[1].people) == (7, 3, 12)
    assert MODELS[c.model].poll_requests(c.bus_options) == [lock8a.encode_query_all(1), lock8a.encode_query_all(2)]


# --- through a running Gateway object (in-process) ---------------------------------------------------


def test_gateway_serial_request_returns_the_confirmation_and_feeds_the_pipeline(tmp_path):
    """`Gateway.serial_request` on a lock-board bank: the unlock reply comes back and went through the
    pipeline like a polled answer; a silent board's poll timeouts reach the pipeline (controller
    offline record) and health says the device is not answering."""
    import sqlite3

    from gateway.runtime import Gateway

    bank = lock8a_bank.make_bank(tmp_path, "b1", {1: 8}, BankKnobs(unlock_delay_s=0.1, auto_cycle=False))
    text = (
        BASE
        + f'data_dir = "{tmp_path}"\n[clock]\nsync_check = "assume-synced"\n[api]\nenabled = false\n'
        + '[lockers]\noffline_after_polls = 2\n[[sinks]]\nname = "edge"\nurl = "http://127.0.0.1:1"\ndatabase = "x"\n'
        + _device("bank", "lock8a-rs485", port=str(bank.link), poll_interval_s="0.2", poll_timeout_s="0.3")
    )
    config = parse_config(text, "gw.toml")

    def logged(measurement: str) -> list[str]:
        conn = sqlite3.connect(config.log_path)
        try:
            rows = conn.execute("SELECT head FROM records WHERE measurement = ?", (measurement,)).fetchall()
        finally:
            conn.close()
        return [bytes(r[0]).decode() for r in rows]

    async def body():
        gw = Gateway(config)
        task = asyncio.create_task(gw.run())
        try:
            await until(lambda: gw.serial and gw.serial[0].poller.stats["bank"].answers >= 2, what="polls answered")
            messages = gw.pipeline.stats["bank"].messages
            answer = await gw.serial_request("bank", lock8a.encode_unlock(1, 2), timeout_s=3.0)
            assert answer == H("8A 01 02 00 89")  # the door's feedback after the pulse: open
            assert gw.pipeline.stats["bank"].messages > messages
            assert bank.doors[(1, 2)].is_open
            with pytest.raises(LookupError):
                await gw.serial_request("nobody", b"\x00", timeout_s=0.5)

            bank.go_silent()
            await until(lambda: gw.serial[0].poller.stats["bank"].answering is False, what="silence noticed")
            health = gw.health()
            assert health["sources"]["serial:bank"]["poll"]["timeouts"] >= 3
            assert "serial device bank not answering" in health["reasons"]
            await until(lambda: any("is_online=f," in h for h in logged("locker_controller")), what="offline")
        finally:
            gw.request_stop()
            await asyncio.wait_for(task, 20)

    with bank:
        asyncio.run(body())
