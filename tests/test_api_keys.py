"""The API key store: hashes only on disk, atomic 0600 writes, revocation, and reload by a reader."""

from __future__ import annotations

import os
import stat
import threading

import orjson
import pytest

from gateway.keys import Check, KeyFileError, KeyNotFound, KeyStore, KeyStoreError, Role, UnknownSite
from tests.api_support import cli, write_config

SITES = ("shop-1", "shop-2", "shop-3")


@pytest.fixture
def store(tmp_path):
    return KeyStore(tmp_path / "keys" / "api-keys.json", sites=SITES, reload_interval_s=0)


def test_keys_create_authenticate_list_revoke(store):
    """A created key authenticates with its role and sites until revoked; list shows both states."""
    operator, op_secret = store.create("operator", label="ops")
    merchant, m_secret = store.create(Role.MERCHANT, ["shop-2", "shop-1", "shop-2"], "Shop 1&2")
    assert op_secret.startswith(f"sdgw_{operator.id}_") and len(op_secret) == 46
    assert store.authenticate(op_secret) == operator
    assert store.authenticate(m_secret) == merchant
    assert merchant.role is Role.MERCHANT and merchant.sites == ("shop-2", "shop-1")
    assert {r.id for r in store.list()} == {operator.id, merchant.id}

    revoked = store.revoke(merchant.id)
    assert revoked.revoked and revoked.revoked_at
    assert store.authenticate(m_secret) is None
    assert store.verify(m_secret) == (Check.REVOKED, revoked)
    assert store.revoke(merchant.id) == revoked  # idempotent
    assert store.authenticate(op_secret) == operator
    assert [r.revoked for r in store.list()] == [False, True]
    with pytest.raises(KeyNotFound):
        store.revoke("00000000")


def test_keys_wrong_secrets_refused(store):
    """Malformed, unknown and almost-right secrets are refused without an exception."""
    record, secret = store.create("operator")
    wrong_tail = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    other_id = "sdgw_00000000_" + secret[14:]
    for candidate, check in [
        ("", Check.MALFORMED),
        ("Bearer " + secret, Check.MALFORMED),
        (secret + "x", Check.MALFORMED),
        (secret.replace("sdgw_", "sdgx_"), Check.MALFORMED),
        ("sdgw_" + "é" * 41, Check.MALFORMED),
        (wrong_tail, Check.UNKNOWN),
        (other_id, Check.UNKNOWN),
    ]:
        assert store.verify(candidate) == (check, None), candidate
    assert store.authenticate(secret) == record


def test_keys_file_holds_hashes_only_mode_0600(store):
    """The secret appears nowhere on disk; the file (and its lock) are 0600; no temp file is left."""
    secrets_ = [store.create("operator")[1], store.create("merchant", ["shop-3"])[1]]
    raw = store.path.read_bytes()
    for secret in secrets_:
        assert secret.encode() not in raw
        assert secret.split("_", 2)[2].encode() not in raw  # not even the random part alone
    doc = orjson.loads(raw)
    assert all(len(bytes.fromhex(k["sha256"])) == 32 for k in doc["keys"])
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.with_name("api-keys.json.lock").stat().st_mode) == 0o600
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["api-keys.json", "api-keys.json.lock"]


def test_keys_write_is_atomic_for_a_concurrent_reader(store):
    """Each write replaces the file by rename: a reader never sees a partial or empty file."""
    store.create("operator")
    stop = threading.Event()
    seen: list[int] = []
    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(len(orjson.loads(store.path.read_bytes())["keys"]))
            except Exception as exc:
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        inodes = set()
        for _ in range(30):
            store.create("operator")
            inodes.add(store.path.stat().st_ino)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert seen == sorted(seen) and seen[-1] >= 1
    assert len(inodes) > 1  # a new file each time, not an in-place rewrite


def test_keys_failed_write_leaves_old_file(store, monkeypatch):
    """A write that fails before the rename leaves the previous file intact and no temp file."""
    _, secret = store.create("operator")
    before = store.path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.create("operator")
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["api-keys.json", "api-keys.json.lock"]
    assert store.authenticate(secret) is not None


def test_keys_merchant_sites_checked(store):
    """Merchant keys need known sites; operator keys take none."""
    with pytest.raises(UnknownSite, match=r"unknown site\(s\) shop-9; configured sites: shop-1, shop-2, shop-3"):
        store.create("merchant", ["shop-1", "shop-9"])
    with pytest.raises(KeyStoreError, match="at least one site"):
        store.create("merchant", [])
    with pytest.raises(KeyStoreError, match="operator key sees every site"):
        store.create("operator", ["shop-1"])
    with pytest.raises(KeyStoreError, match="role must be"):
        store.create("admin")
    with pytest.raises(KeyStoreError, match="label"):
        store.create("operator", label="two\nlines")
    assert not store.path.exists()


def test_keys_reload_after_another_instance_writes(tmp_path):
    """A reader notices keys created and revoked by another KeyStore on the same file."""
    path = tmp_path / "api-keys.json"
    reader = KeyStore(path, sites=SITES, reload_interval_s=0)
    writer = KeyStore(path, sites=SITES)
    assert reader.status().readable is False
    record, secret = writer.create("merchant", ["shop-1"])
    assert reader.authenticate(secret) == record
    writer.revoke(record.id)
    assert reader.verify(secret)[0] is Check.REVOKED


def test_keys_reload_is_rate_limited(tmp_path):
    """Within reload_interval_s the reader keeps its loaded keys (one stat per interval at most)."""
    path = tmp_path / "api-keys.json"
    reader = KeyStore(path, reload_interval_s=3600)
    writer = KeyStore(path)
    assert reader.verify("sdgw_00000000_" + "A" * 32)[0] is Check.UNKNOWN  # loads: no file yet
    _, secret = writer.create("operator")
    assert reader.authenticate(secret) is None
    reader.reload_interval_s = 0
    assert reader.authenticate(secret) is not None


def test_keys_reload_after_another_process_writes(tmp_path):
    """`sdgw keys create` / `revoke` in another process reach a KeyStore that is already loaded."""
    config, cfg = write_config(tmp_path, influx_url="http://127.0.0.1:9", database="none")
    store = KeyStore(cfg.api_key_file, sites=SITES, reload_interval_s=0)
    assert store.status().keys == 0
    done = cli("keys", "create", "-c", str(config), "--role", "merchant", "--site", "shop-2", "--label", "Shop 2")
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert "shown only once" in done.stderr and secret not in done.stderr
    record = store.authenticate(secret)
    assert record is not None and record.sites == ("shop-2",) and record.label == "Shop 2"

    listed = cli("keys", "list", "-c", str(config), "--json")
    assert listed.returncode == 0 and secret not in listed.stdout and "sha256" not in listed.stdout
    assert [k["id"] for k in orjson.loads(listed.stdout)] == [record.id]

    revoked = cli("keys", "revoke", record.id, "-c", str(config))
    assert revoked.returncode == 0, revoked.stderr
    assert store.verify(secret)[0] is Check.REVOKED

    refused = cli("keys", "create", "-c", str(config), "--role", "merchant", "--site", "nowhere")
    assert refused.returncode == 2 and "unknown site(s) nowhere" in refused.stderr and not refused.stdout


def test_keys_corrupt_file_fails_closed(store):
    """A key file that cannot be parsed accepts no key and refuses changes, until it is fixed."""
    _, secret = store.create("operator")
    good = store.path.read_bytes()
    store.path.write_bytes(good[: len(good) // 2])
    assert store.authenticate(secret) is None
    status = store.status()
    assert not status.readable and "cannot parse" in (status.problem or "")
    with pytest.raises(KeyFileError):
        store.create("operator")
    with pytest.raises(KeyFileError):
        store.list()
    store.path.write_bytes(good)
    assert store.authenticate(secret) is not None


def test_keys_concurrent_writers_lose_nothing(tmp_path):
    """Two stores creating keys at once on one file: the flock keeps every key."""
    path = tmp_path / "api-keys.json"
    created: list[str] = []

    def make(n: int) -> None:
        s = KeyStore(path)
        for _ in range(n):
            created.append(s.create("operator")[0].id)

    threads = [threading.Thread(target=make, args=(15,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.id for r in KeyStore(path).list()) == sorted(created) and len(created) == 45
