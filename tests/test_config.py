"""Config: the example parses; every problem is reported with key, found and expected; exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config, read_secret

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = '[gateway]\ndistrict = "d"\nstreet = "s"\nid = "g"\n'


def test_config_example_is_valid():
    cfg = load_config(ROOT / "deploy" / "gateway.example.toml")
    assert cfg.gateway.id == "gw-01"
    assert cfg.query_sink.name == "edge"
    assert cfg.mqtt_client_id == "sdgw-gulou-zhongshan-rd-gw-01"


def test_config_lists_every_problem_with_key_found_expected():
    text = MINIMAL.replace('street = "s"', 'street = "a b"') + (
        '[log]\ncap_bytes = "big"\n[[sinks]]\nname = "edge"\nurl = "http://x"\ndialect = "v3"\n'
        '[[devices]]\nid = "cam"\nmodel = "nope"\ntopic = "t"\ncolour = 1\n'
    )
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "gw.toml")
    keys = {p.key: p for p in exc.value.problems}
    assert set(keys) == {
        "gateway.street",
        "log.cap_bytes",
        "sinks[0:edge].dialect",
        "devices[0:cam].model",
        "devices[0:cam].colour",
    }
    assert keys["log.cap_bytes"].found == "'big'"
    assert "integer" in keys["log.cap_bytes"].expected
    assert "vivotek-sc8131" in keys["devices[0:cam].model"].expected
    assert str(exc.value).startswith("gw.toml: ")


def test_config_cross_references_are_checked():
    text = MINIMAL + '[[devices]]\nid = "cam"\nmodel = "vivotek-sc8131"\ntopic = "t"\nsite = "nowhere"\n'
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    msg = str(exc.value)
    assert "site 'nowhere' is not one of [[sites]]" in msg
    assert "no [mqtt] section" in msg


def test_config_syntax_error_names_the_file(tmp_path):
    p = tmp_path / "gw.toml"
    p.write_text("[gateway\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert exc.value.problems[0].key == "(syntax)"
    assert str(p) in str(exc.value)


def test_config_v1_sink_needs_database():
    with pytest.raises(ConfigError, match="needs `database`"):
        parse_config(MINIMAL + '[[sinks]]\nname = "e"\nurl = "http://x"\n')


def test_secret_from_file_or_env(tmp_path, monkeypatch):
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    assert read_secret(file=f, env="SDGW_X", what="k") == "s3cret"
    monkeypatch.setenv("SDGW_X", "fromenv")
    assert read_secret(file=None, env="SDGW_X", what="k") == "fromenv"
    with pytest.raises(ConfigError):
        read_secret(file=tmp_path / "missing", env="SDGW_X", what="k")


def test_cli_config_check_exit_codes(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "[log]\ncap_bytes = 5\n")
    sdgw = [sys.executable, "-m", "gateway.cli"]
    r = subprocess.run([*sdgw, "config", "check", "-c", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "log.cap_bytes: expected greater than or equal to 1048576; found 5" in r.stderr
    ok = subprocess.run(
        [*sdgw, "config", "check", "-c", str(ROOT / "deploy/gateway.example.toml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
