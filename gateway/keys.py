"""The API key store: one JSON file of key hashes, shared by every API replica (decisions.md D15).

A key's secret is `sdgw_<id>_<32 url-safe chars>`: the 8-character id is public (it is what `sdgw keys
list` shows and `revoke` takes) and makes lookup one dict access; the 32 characters carry 192 random
bits from `secrets`. The secret is printed once by `sdgw keys create` and only its SHA-256 is stored.

Why a plain SHA-256 and not bcrypt/scrypt/argon2: a slow KDF protects *low-entropy* passwords against
guessing after the hash leaks. A 192-bit random secret cannot be guessed whatever the hash costs, so
a fast hash loses nothing, and it keeps authentication at a few microseconds per request on a Pi
(a KDF tuned to 100 ms would make every API call a CPU-bound DoS lever). Digests are compared with
`hmac.compare_digest`, so the comparison time says nothing about how much of a guess was right.

The file is written atomically (temp file in the same directory, fsync, rename, fsync of the
directory) with mode 0600, under an flock on `<file>.lock`, so two `sdgw keys` commands never lose
each other's changes and a reader never sees half a file. A running server notices a new file by its
(inode, mtime, size) at most once per `reload_interval_s` on request; because every write is a
rename, the inode changes even when mtime granularity would hide the change. A file that exists but
cannot be read or parsed fails *closed*: no key is accepted until it is fixed (a revocation must not
be undone by a typo), and `status()` says why.
"""

from __future__ import annotations

import builtins
import contextlib
import enum
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import orjson

log = logging.getLogger("sdgw.keys")

FILE_FORMAT = "sdgw-api-keys"
FILE_VERSION = 1
_PREFIX = "sdgw_"
_ID_CHARS = 8  # secrets.token_hex(4)
_SECRET_BYTES = 24  # token_urlsafe(24) → 32 characters, 192 bits
_SECRET_LEN = len(_PREFIX) + _ID_CHARS + 1 + 32
_LABEL_MAX = 200


class Role(enum.StrEnum):
    OPERATOR = "operator"
    MERCHANT = "merchant"


class KeyStoreError(Exception):
    """A key operation that cannot be done as asked; the message says why (never a secret)."""


class UnknownSite(KeyStoreError):
    pass


class KeyNotFound(KeyStoreError):
    pass


class KeyFileError(KeyStoreError):
    """The key file exists but cannot be read or parsed: fix it by hand or restore it."""


class Check(enum.Enum):
    OK = "ok"
    MALFORMED = "malformed"  # not shaped like an sdgw key
    UNKNOWN = "unknown"  # no such id, or the secret does not match
    REVOKED = "revoked"


@dataclass(frozen=True)
class KeyRecord:
    id: str
    role: Role
    sites: tuple[str, ...]
    label: str
    created: str  # RFC 3339, UTC
    revoked: bool = False
    revoked_at: str | None = None

    def public(self) -> dict:
        """What `keys list` and the API may show: everything but the hash (which is not here anyway)."""
        return {
            "id": self.id,
            "role": self.role.value,
            "sites": list(self.sites),
            "label": self.label,
            "created": self.created,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class KeyFileStatus:
    path: Path
    readable: bool
    keys: int
    problem: str | None  # why no key can be accepted, when readable is False


@dataclass(frozen=True)
class _Entry:
    record: KeyRecord
    digest: bytes  # SHA-256 of the whole secret


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_id_of(secret: str) -> str | None:
    """The id part of a well-formed secret, else None (never raises on hostile input)."""
    if len(secret) != _SECRET_LEN or not secret.isascii() or not secret.startswith(_PREFIX):
        return None
    key_id = secret[len(_PREFIX) : len(_PREFIX) + _ID_CHARS]
    if secret[len(_PREFIX) + _ID_CHARS] != "_" or not all(c in "0123456789abcdef" for c in key_id):
        return None
    return key_id


def _parse(data: bytes) -> dict[str, _Entry]:
    doc = orjson.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise ValueError(f"not an sdgw key file (expected format {FILE_FORMAT!r})")
    if doc.get("version") != FILE_VERSION:
        raise ValueError(f"key file version {doc.get('version')!r}; this sdgw reads version {FILE_VERSION}")
    entries: dict[str, _Entry] = {}
    for i, item in enumerate(doc.get("keys", [])):
        try:
            record = KeyRecord(
                id=str(item["id"]),
                role=Role(item["role"]),
                sites=tuple(str(s) for s in item.get("sites", [])),
                label=str(item.get("label", "")),
                created=str(item["created"]),
                revoked=bool(item.get("revoked", False)),
                revoked_at=item.get("revoked_at"),
            )
            digest = bytes.fromhex(item["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"keys[{i}]: {type(exc).__name__}: {exc}") from None
        if len(digest) != 32:
            raise ValueError(f"keys[{i}]: sha256 is not 32 bytes")
        if record.id in entries:
            raise ValueError(f"keys[{i}]: duplicate id {record.id!r}")
        entries[record.id] = _Entry(record, digest)
    return entries


def _serialise(entries: dict[str, _Entry]) -> bytes:
    keys = [{**e.record.public(), "sha256": e.digest.hex()} for e in entries.values()]
    doc = {"format": FILE_FORMAT, "version": FILE_VERSION, "keys": keys}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


class KeyStore:
    def __init__(self, path: Path | str, *, sites: Iterable[str] = (), reload_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.known_sites = frozenset(sites)
        self.reload_interval_s = reload_interval_s
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._signature: tuple[int, int, int] | None = None
        self._problem: str | None = None
        self._missing = True
        self._checked_at = float("-inf")

    # --- reading -------------------------------------------------------------------------------

    def _refresh(self, *, force: bool = False) -> None:
        """Reload the file if it changed; at most once per reload_interval_s unless forced."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked_at < self.reload_interval_s:
                return
            self._checked_at = now
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not self._missing or self._problem:
                    log.warning("API key file %s is gone: no key is accepted", self.path)
                self._entries, self._signature, self._problem, self._missing = {}, None, None, True
                return
            except OSError as exc:
                self._fail(f"cannot open: {exc.strerror}")
                return
            # Read through the fd we fstat, so the signature always matches the bytes parsed.
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                signature = (st.st_ino, st.st_mtime_ns, st.st_size)
                if signature == self._signature:
                    return
                try:
                    entries = _parse(f.read())
                except (OSError, ValueError) as exc:
                    self._signature = signature
                    self._fail(f"cannot parse: {exc}")
                    return
            if self._problem:
                log.warning("API key file %s is readable again (%d keys)", self.path, len(entries))
            self._entries, self._signature, self._problem, self._missing = entries, signature, None, False

    def _fail(self, problem: str) -> None:
        if problem != self._problem:
            log.error("API key file %s %s: no key is accepted until it is fixed", self.path, problem)
        self._entries, self._problem, self._missing = {}, problem, False

    def verify(self, secret: str) -> tuple[Check, KeyRecord | None]:
        """How a presented secret fares; the record for OK and REVOKED (so a 401 can say which)."""
        key_id = key_id_of(secret)
        if key_id is None:
            return Check.MALFORMED, None
        self._refresh()
        entry = self._entries.get(key_id)
        if entry is None or not hmac.compare_digest(entry.digest, _digest(secret)):
            return Check.UNKNOWN, None
        if entry.record.revoked:
            return Check.REVOKED, entry.record
        return Check.OK, entry.record

    def authenticate(self, secret: str) -> KeyRecord | None:
        """The key's record if the secret is a current (not revoked) key, else None."""
        check, record = self.verify(secret)
        return record if check is Check.OK else None

    def status(self) -> KeyFileStatus:
        self._refresh()
        if self._missing:
            problem = "does not exist yet (create a key with `sdgw keys create`)"
            return KeyFileStatus(self.path, False, 0, problem)
        return KeyFileStatus(self.path, self._problem is None, len(self._entries), self._problem)

    # --- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[dict[str, _Entry]]:
        """Read-modify-write under an flock; refuses to overwrite a file it cannot parse."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600), "rb") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            self._refresh(force=True)
            if self._problem:
                raise KeyFileError(f"{self.path} {self._problem}; fix or restore it before changing keys")
            entries = dict(self._entries)
            yield entries
            self._write(entries)
            with self._lock:
                self._signature = None
            self._refresh(force=True)

    def _write(self, entries: dict[str, _Entry]) -> None:
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)  # mode 0600
        try:
            self._keep_owner(fd)
            with os.fdopen(fd, "wb") as f:
                f.write(_serialise(entries))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _keep_owner(self, fd: int) -> None:
        # `sudo sdgw keys create` must not leave a root-owned 0600 file the service user cannot read:
        # as root, the new file takes the old file's owner, or the directory's for a first file.
        if os.geteuid() != 0:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = os.stat(self.path.parent)
        os.fchown(fd, st.st_uid, st.st_gid)

    def create(self, role: Role | str, sites: Sequence[str] = (), label: str = "") -> tuple[KeyRecord, str]:
        """A new key; returns its record and the secret, which exists nowhere else afterwards."""
        try:
            role = Role(role)
        except ValueError:
            raise KeyStoreError(f"role must be operator or merchant, not {role!r}") from None
        wanted = tuple(dict.fromkeys(sites))
        if role is Role.OPERATOR and wanted:
            raise KeyStoreError("an operator key sees every site; --site is for merchant keys")
        if role is Role.MERCHANT:
            if not wanted:
                raise KeyStoreError("a merchant key needs at least one site (--site)")
            unknown = [s for s in wanted if s not in self.known_sites]
            if unknown:
                configured = ", ".join(sorted(self.known_sites)) or "none"
                raise UnknownSite(f"unknown site(s) {', '.join(unknown)}; configured sites: {configured}")
        if len(label) > _LABEL_MAX or any(not c.isprintable() for c in label):
            raise KeyStoreError(f"a label is printable text of at most {_LABEL_MAX} characters")
        with self._exclusive() as entries:
            key_id = secrets.token_hex(_ID_CHARS // 2)
            while key_id in entries:
                key_id = secrets.token_hex(_ID_CHARS // 2)
            secret = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
            record = KeyRecord(id=key_id, role=role, sites=wanted, label=label, created=_now_rfc3339())
            entries[key_id] = _Entry(record, _digest(secret))
        return record, secret

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key (idempotent); its entry stays in the file so that `list` shows what happened."""
        with self._exclusive() as entries:
            entry = entries.get(key_id)
            if entry is None:
                raise KeyNotFound(f"no key with id {key_id!r} (see `sdgw keys list`)")
            if not entry.record.revoked:
                entry = _Entry(replace(entry.record, revoked=True, revoked_at=_now_rfc3339()), entry.digest)
                entries[key_id] = entry
        return entry.record

    def list(self) -> builtins.list[KeyRecord]:
        """Every key, revoked ones included, oldest first; never a secret or a hash."""
        self._refresh(force=True)
        if self._problem:
            raise KeyFileError(f"{self.path} {self._problem}")
        return [e.record for e in self._entries.values()]  # file order is creation order
