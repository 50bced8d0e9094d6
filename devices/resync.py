"""Incremental framing with resynchronisation, shared by the RS-485 lock-board codecs (style.md 7).

A subclass says where a frame may start (`_start`) and judges the bytes from there (`_candidate`:
FRAME with its length, NEED more bytes, or BAD with the reason). Everything else is here: `feed`
returns whole frames and rejects and keeps the tail; `flush` (the line has been quiet for the
inter-frame gap) decides what is buffered; a run of garbage — noise, a truncated or corrupted frame —
becomes ONE Reject with its worst reason, sent out just before the next good frame, at `flush`, or
once it reaches `max_junk` bytes (so the buffer stays bounded).
"""

from __future__ import annotations

from devices.events import Reject, RejectReason

FRAME, NEED, BAD = 0, 1, 2
MAX_JUNK = 256
_JUNK_RANK = {RejectReason.SYNC: 0, RejectReason.LENGTH: 1, RejectReason.CHECKSUM: 2}

Verdict = tuple[int, int | RejectReason]


class ResyncFramer:
    max_junk = MAX_JUNK

    def __init__(self) -> None:
        self._buf = bytearray()
        self._junk = bytearray()
        self._junk_reason = RejectReason.SYNC

    # --- what a subclass decides ---------------------------------------------------------------------

    def _start(self, buf: bytearray) -> int:
        """Index of the first byte a frame may start with; -1 when there is none."""
        raise NotImplementedError

    def _candidate(self, buf: bytearray) -> Verdict:
        """`buf` starts where a frame may: (FRAME, length) | (NEED, 0) | (BAD, reason)."""
        raise NotImplementedError

    # --- the framing ---------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[bytes | Reject]:
        self._buf += chunk
        return self._scan(final=False)

    def flush(self) -> list[bytes | Reject]:
        """The line has been quiet for the inter-frame gap: what is buffered will not grow."""
        return self._scan(final=True)

    def _add_junk(self, data: bytes | bytearray, reason: RejectReason) -> None:
        if not self._junk or _JUNK_RANK[reason] > _JUNK_RANK[self._junk_reason]:
            self._junk_reason = reason
        self._junk += data

    def _take_junk(self) -> Reject:
        reject = Reject(self._junk_reason, f"{len(self._junk)} bytes skipped", bytes(self._junk))
        self._junk.clear()
        self._junk_reason = RejectReason.SYNC
        return reject

    def _scan(self, *, final: bool) -> list[bytes | Reject]:
        out: list[bytes | Reject] = []
        buf = self._buf
        while buf:
            start = self._start(buf)
            if start < 0:
                self._add_junk(buf, RejectReason.SYNC)
                buf.clear()
                break
            if start:
                self._add_junk(buf[:start], RejectReason.SYNC)
                del buf[:start]
            verdict, value = self._candidate(buf)
            if verdict == FRAME:
                if self._junk:
                    out.append(self._take_junk())
                out.append(bytes(buf[:value]))
                del buf[:value]
            elif verdict == NEED and not final:
                break
            else:
                self._add_junk(buf[:1], value if verdict == BAD else RejectReason.LENGTH)  # type: ignore[arg-type]
                del buf[:1]
            if len(self._junk) >= self.max_junk:
                out.append(self._take_junk())
        if self._junk and (final or len(self._junk) >= self.max_junk):
            out.append(self._take_junk())
        return out
