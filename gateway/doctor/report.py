"""What `sdgw doctor` found: one row per check, rendered as a table for a technician or as JSON."""

from __future__ import annotations

import enum
import shutil
import textwrap
from dataclasses import asdict, dataclass


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"  # not applicable here (e.g. no MQTT devices), or blocked by an earlier failure


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""  # what to do about a failure, in the technician's words

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def passed(name: str, detail: str) -> Check:
    return Check(name, Status.PASS, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def skipped(name: str, detail: str) -> Check:
    return Check(name, Status.SKIP, detail)


def render_table(checks: list[Check], width: int | None = None) -> str:
    """CHECK | RESULT | DETAIL, the fix indented under each failure, a verdict line last."""
    width = width or max(80, min(140, shutil.get_terminal_size((100, 20)).columns))
    name_w = max([len("CHECK"), *(len(c.name) for c in checks)])
    detail_w = max(30, width - name_w - 10)
    lines = [f"{'CHECK'.ljust(name_w)}  RESULT  DETAIL", f"{'-' * name_w}  ------  {'-' * min(detail_w, 40)}"]
    for c in checks:
        wrapped = textwrap.wrap(c.detail, detail_w) or [""]
        lines.append(f"{c.name.ljust(name_w)}  {c.status.value.upper().ljust(6)}  {wrapped[0]}")
        lines += [f"{'':{name_w}}          {more}" for more in wrapped[1:]]
        if c.status is Status.FAIL and c.fix:
            for i, fix_line in enumerate(textwrap.wrap(c.fix, detail_w - 5)):
                lines.append(f"{'':{name_w}}          {'fix: ' if i == 0 else '     '}{fix_line}")
    failures = sum(1 for c in checks if c.status is Status.FAIL)
    verdict = "all checks passed" if not failures else f"{failures} check(s) failed"
    lines.append("")
    lines.append(
        f"{verdict} ({sum(1 for c in checks if c.status is Status.PASS)} passed, {failures} failed, "
        f"{sum(1 for c in checks if c.status is Status.SKIP)} skipped)"
    )
    return "\n".join(lines)


# The way to run doctor with the service's credentials, user and groups (install.sh's layout).
AS_SERVICE = (
    "systemd-run --pipe --wait -p LoadCredential=sdgw:/etc/sdgw/credentials -p User=sdgw "
    "-p SupplementaryGroups=dialout /opt/sdgw/venv/bin/sdgw doctor -c /etc/sdgw/gateway.toml"
)


def secret_fix(path: object) -> str:
    text = str(path)
    if text.startswith("/run/credentials/"):
        return (
            f"{text} exists only inside the running service: put the file in /etc/sdgw/credentials and run "
            f"doctor as the service would: {AS_SERVICE}"
        )
    return f"make {text} readable by the service user (sdgw), mode 0600"
