"""RFID bench (issue 3, point 8): raw reads per second through the serial RFID path on one core, and
the reduction ratio raw reads → points.

A benchmark, not a test (decisions.md D19): it reports, it never fails on a miss.

What is measured: a recorded byte stream of a reader (built by the emulators' own frame builders in
firmware-stubs/, independently of devices/) is cut into serial-sized reads and pushed through the
same code the gateway runs for a serial port — the model's framer, its codec, the RFID stage
(pseudonyms for 125 kHz cards, presence with arrive / move / depart / dwell summaries), line-protocol
encoding and identity, and the once-a-second presence tick — in this process, on one thread, with
simulated time taken from the stream. The durable log's commit (SQLite) is not part of this path:
its cost is measured by `make bench`'s spine scenarios.

Reference, same run: the cheapest loop that still turns the same bytes into checked reads — a
`bytes.find` scan, the frame's checksum, one dict per read; no CRC of the tag, no EPC decoding, no
state, no records. It shows what this machine
does per read at this hour; the gateway's figure is quoted as a multiple of it.

    .venv/bin/python tests/bench/rfid_bench.py [--seconds 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "firmware-stubs")]

import m100_reader  # noqa: E402
import rdm6300_reader  # noqa: E402
from rfid_sim import Population, em4100_population, epc_population  # noqa: E402

from devices.registry import lookup  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.pipeline import Arrival, Pipeline  # noqa: E402
from gateway.privacy import make_key_file  # noqa: E402

CHUNK = 256  # bytes per serial read: what a USB-serial adapter hands over at these rates
NS = 1_000_000_000
START_NS = 1_790_000_000 * NS


def stream_m100(seconds: float, *, tags: int, rounds_hz: float, seed: int = 7) -> tuple[list, int, int]:
    """(time, bytes) of an M100 reader in continuous inventory: every round, each present tag is read
    with p = 0.9 (the emulator's model), `tags` tags coming and going."""
    import random

    rng = random.Random(seed)
    pop = Population(epc_population(tags, seed), (0,), seed=seed, arrive_p=0.02, depart_p=0.004)
    out, reads = [], 0
    # an empty round is answered by a "no tag" notice: decoded as a round event, not a read
    for i in range(int(seconds * rounds_hz)):
        t = i / rounds_hz
        frames = []
        for tag, stay in pop.present(t).items():
            if rng.random() < 0.9:
                frames.append(m100_reader.notice(tag, round(stay.rssi_dbm + rng.uniform(-2, 2))))
        reads += len(frames)
        out.append((t, b"".join(frames) or m100_reader.NO_TAG))
    return out, reads, sum(1 for _, data in out if data == m100_reader.NO_TAG)


def stream_rdm6300(seconds: float, *, cards: int, hz: float, seed: int = 7) -> tuple[list, int, int]:
    """(time, bytes) of an RDM6300 (125 kHz): it repeats the card in its field `hz` times a second."""
    pop = Population(em4100_population(cards, seed), (0,), seed=seed, arrive_p=0.002, depart_p=0.03, max_present=1)
    out, reads = [], 0
    for i in range(int(seconds * hz)):
        t = i / hz
        present = pop.present(t)
        if present:
            tag = next(iter(present))
            out.append((t, rdm6300_reader.frame(tag)))
            reads += 1
    return out, reads, 0


def chunks(stream: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """Re-cut the stream into CHUNK-byte reads, as a serial port would deliver it (frames split)."""
    out: list[tuple[float, bytes]] = []
    buf = bytearray()
    t_last = 0.0
    for t, data in stream:
        buf += data
        t_last = t
        while len(buf) >= CHUNK:
            out.append((t_last, bytes(buf[:CHUNK])))
            del buf[:CHUNK]
    if buf:
        out.append((t_last, bytes(buf)))
    return out


def pipeline_for(model: str, tmp: Path) -> tuple[Pipeline, object]:
    tmp.mkdir(parents=True, exist_ok=True)
    key_file = tmp / "pseudonym-keys.json"
    key_file.write_bytes(make_key_file(b"bench-secret", datetime(2026, 1, 1, tzinfo=UTC), 2, 86400 * 365))
    text = f"""
[gateway]
district = "d"
street = "s"
id = "bench"
data_dir = "{tmp}"
[[sites]]
id = "shop"
[[devices]]
id = "reader"
model = "{model}"
site = "shop"
transport = "serial"
port = "/dev/null"
[privacy]
key_file = "{key_file}"
[rfid]
depart_after_s = 10
summary_interval_s = 60
"""
    config = parse_config(text)
    return Pipeline(config), config.devices[0]


def run_gateway_path(model: str, reads_stream: list[tuple[float, bytes]], tmp: Path) -> dict:
    pipeline, device = pipeline_for(model, tmp)
    framer = lookup(model).framer()
    feed = framer.feed
    cut = chunks(reads_stream)
    records = dead = 0
    next_tick = 1.0
    t0_cpu, t0_wall = time.process_time(), time.perf_counter()
    for t, data in cut:
        arrival = Arrival(START_NS + int(t * NS), int(t * NS) + NS, "bench-boot", True)
        items = feed(data)
        if items:
            batch = pipeline.serial_batch(device, items, arrival)
            records += len(batch.records)
            dead += len(batch.dead_letters)
        if t >= next_tick:  # the runtime's one-second processor tick
            tick = pipeline.rfid_tick(arrival)
            if tick is not None:
                records += len(tick.records)
            next_tick += 1.0
    cpu, wall = time.process_time() - t0_cpu, time.perf_counter() - t0_wall
    st = pipeline.stats[device.id]
    return {"cpu_s": cpu, "wall_s": wall, "records": records, "dead_letters": dead, "events": st.events}


def run_reference(model: str, reads_stream: list[tuple[float, bytes]]) -> dict:
    """The floor: find frame starts and slice the tag bytes out, nothing else."""
    cut = chunks(reads_stream)
    found = 0
    rest = b""
    t0 = time.process_time()
    if model == "m100":
        for _t, data in cut:
            buf = rest + data
            i = 0
            while True:
                j = buf.find(b"\xbb\x02\x22", i)
                if j < 0 or j + 24 > len(buf):
                    rest = buf[j:] if j >= 0 else b""
                    break
                if sum(buf[j + 1 : j + 22]) & 0xFF == buf[j + 22]:
                    _read = {"epc": buf[j + 8 : j + 20].hex(), "rssi": buf[j + 5] - 256}
                    found += 1
                i = j + 24
    else:
        for _t, data in cut:
            buf = rest + data
            i = 0
            while True:
                j = buf.find(b"\x02", i)
                if j < 0 or j + 14 > len(buf):
                    rest = buf[j:] if j >= 0 else b""
                    break
                card = bytes.fromhex(buf[j + 1 : j + 11].decode("ascii"))
                if card[0] ^ card[1] ^ card[2] ^ card[3] ^ card[4] == int(buf[j + 11 : j + 13], 16):
                    _read = {"card": card.hex()}
                    found += 1
                i = j + 14
    return {"cpu_s": time.process_time() - t0, "reads_found": found}


def bench(model: str, seconds: float, tmp: Path) -> dict:
    if model == "m100":
        stream, reads, empty_rounds = stream_m100(seconds, tags=200, rounds_hz=40)
    else:
        # one card reader sees a card now and then: simulate 50 readers' worth of time
        stream, reads, empty_rounds = stream_rdm6300(seconds * 50, cards=500, hz=10)
    nbytes = sum(len(d) for _, d in stream)
    ref = min((run_reference(model, stream) for _ in range(3)), key=lambda r: r["cpu_s"])
    gw = min((run_gateway_path(model, stream, tmp / f"{model}-{i}") for i in range(3)), key=lambda r: r["cpu_s"])
    if gw["events"] != reads + empty_rounds or gw["dead_letters"]:
        raise SystemExit(f"{model}: the gateway path decoded {gw['events']} events of {reads} reads: bench invalid")
    return {
        "model": model,
        "simulated_s": seconds,
        "raw_reads": reads,
        "bytes": nbytes,
        "gateway_reads_per_cpu_s": round(reads / gw["cpu_s"]),
        "gateway_cpu_us_per_read": round(gw["cpu_s"] / reads * 1e6, 2),
        "reference_reads_per_cpu_s": round(ref["reads_found"] / ref["cpu_s"]),
        "ratio_gateway_to_reference_cost": round((gw["cpu_s"] / reads) / (ref["cpu_s"] / ref["reads_found"]), 1),
        "points": gw["records"],
        "reduction_reads_per_point": round(reads / max(gw["records"], 1), 1),
        "dead_letters": gw["dead_letters"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="simulated reader time per model")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdgw-rfid-bench-") as tmp:
        results = []
        for model in ("m100", "rdm6300"):
            results.append(bench(model, args.seconds, Path(tmp)))
    target = 20_000
    for r in results:
        verdict = "MET" if r["gateway_reads_per_cpu_s"] >= target else "MISSED"
        print(
            f"{r['model']:8} {r['raw_reads']:>8} reads in {r['simulated_s']:.0f} s simulated: "
            f"{r['gateway_reads_per_cpu_s']:>7} reads/CPU-s ({r['gateway_cpu_us_per_read']} µs/read; "
            f"target ≥ {target}: {verdict}); reference floor {r['reference_reads_per_cpu_s']} reads/CPU-s "
            f"→ gateway costs {r['ratio_gateway_to_reference_cost']}× the floor; "
            f"{r['points']} points → {r['reduction_reads_per_point']} reads per point"
        )
    if args.json:
        args.json.write_text(json.dumps({"at": datetime.now(UTC).isoformat(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
