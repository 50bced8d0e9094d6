"""`make demo` — the main job: the simulated street starts, and every curl line it prints works as
printed (run through bash and the real curl, in the order printed)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _start(tmp_path: Path) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.demo", "--dir", str(tmp_path / "demo"), "--exit-after", "120"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C stops"):
            return proc, lines
    proc.kill()
    raise AssertionError("the demo did not print its instructions:\n" + "\n".join(lines))


def _run(line: str) -> tuple[int, str]:
    out = subprocess.run(["bash", "-c", line + " -w '\\n%{http_code}'"], capture_output=True, text=True, timeout=30)
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body


def test_demo_street_runs_and_every_printed_curl_line_works(tmp_path):
    assert shutil.which("curl"), "curl is needed to check the demo's printed lines"
    proc, printed = _start(tmp_path)
    try:
        curls = [re.sub(r"\s+#.*$", "", ln.strip()) for ln in printed if ln.strip().startswith("curl ")]
        assert len(curls) >= 13
        time.sleep(8)  # a few minutes' live reports, polls and reads on top of the back-filled day
        answers: dict[str, tuple[int, str]] = {}
        for line in curls:
            if "| grep" in line:
                out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30)
                assert "sdgw_serial_poll_requests_total" in out.stdout, line
                continue
            answers[line] = _run(line)

        def answer(fragment: str) -> tuple[int, str]:
            return next(v for k, v in answers.items() if fragment in k)

        code, body = answer("/v1/sites")
        assert code == 200 and [s["id"] for s in json.loads(body)["sites"]] == ["shop-1"]
        code, body = answer("site=shop-1&interval=1h")
        assert code == 200 and sum(b["in"] for b in json.loads(body)["buckets"]) > 0
        code, body = answer("format=csv")
        assert code == 200 and body.startswith("start,end,in,out")
        code, body = answer("/v1/occupancy?site=shop-1")
        assert code == 200 and json.loads(body)["occupancy"] >= 0
        code, body = answer("site=shop-2")
        assert code == 404 and json.loads(body)["detail"] == "no such site"
        code, body = answer("/v1/open/footfall")
        assert code == 200 and json.loads(body)["street"] == "demo-street"
        code, body = answer("/v1/gateways")
        assert code == 200 and json.loads(body)["gateways"][0]["gateway"] == "gw-demo"
        code, body = next(v for k, v in answers.items() if k.endswith("/v1/lockers"))
        assert code == 200 and {b["bank"] for b in json.loads(body)["banks"]} == {"bank-1", "bank-2"}
        code, body = next(v for k, v in answers.items() if k.endswith("/v1/lockers/bank-1"))
        assert code == 200 and len(json.loads(body)["compartments"]) == 8
        code, body = answer("-X POST")
        assert code == 200 and json.loads(body)["outcome"] == "opened", body
        code, body = answer("/present")
        assert code == 200 and json.loads(body)["items"], body
        code, body = answer("/v1/health")
        sources = json.loads(body).get("details", {}).get("sources", {})
        assert {"mqtt", "serial:door-a", "serial:shelf-1", "serial:lockers-1", "http:http-cam-01"} <= set(sources)
        for line in (re.sub(r"\s+#.*$", "", ln.strip()) for ln in printed if ln.strip().startswith(".venv/bin/sdgw")):
            out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60, cwd=ROOT)
            assert out.returncode in (0, 1), out.stderr  # doctor exits 1 when a check fails: it ran
            assert out.stdout.strip()
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert "demo stopped" in rest
    assert proc.returncode == 0
