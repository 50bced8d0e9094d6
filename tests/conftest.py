"""Fixtures: real servers on free loopback ports in temp dirs, torn down after use."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.localservers import InfluxDB1, Mosquitto, VictoriaMetrics

ROOT = Path(__file__).resolve().parent.parent
# The emulators live in firmware-stubs/ (not an importable package name): put it on the path.
sys.path.insert(0, str(ROOT / "firmware-stubs"))


@pytest.fixture
def mosquitto(tmp_path):
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture(scope="session")
def influxdb_session(tmp_path_factory):
    with InfluxDB1(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture
def influxdb(influxdb_session, request):
    """The shared influxd with a fresh database for this test (attribute `.db`)."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    influxdb_session.query(f'DROP DATABASE "{name}"')
    influxdb_session.create_database(name)
    influxdb_session.db = name
    yield influxdb_session


@pytest.fixture
def own_influxdb(tmp_path):
    """An influxd of this test's own, for tests that stop and start it."""
    with InfluxDB1(tmp_path / "influxd") as server:
        server.db = "sdgw"
        server.create_database("sdgw")
        yield server


@pytest.fixture
def victoria(tmp_path):
    with VictoriaMetrics(tmp_path / "vm") as server:
        yield server
