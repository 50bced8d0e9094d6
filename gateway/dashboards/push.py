"""`sdgw dashboards push`: upload the dashboards to a Grafana through its HTTP API with grafana-client.

Calls, as Grafana documents them: `GET /api/health` (is it a Grafana, is its database ok),
`GET /api/folders/<uid>` and, when that answers 404, `POST /api/folders` {uid, title}; then one
`POST /api/dashboards/db` per dashboard with {dashboard (id null, our uid), folderUid, overwrite: true,
message}. Authentication: `Authorization: Bearer <service account token>`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError


class PushError(Exception):
    """A failure worth one clear line to the operator (auth, unreachable, refused)."""


@dataclass
class Uploaded:
    uid: str
    title: str
    version: int | None
    url: str


@dataclass
class PushReport:
    grafana_version: str
    folder_uid: str
    folder_created: bool
    dashboards: list[Uploaded] = field(default_factory=list)


def _explain(url: str, exc: Exception) -> PushError:
    if isinstance(exc, GrafanaUnauthorizedError):
        return PushError(
            f"Grafana at {url} refused the token (401 Unauthorized): check --token, --token-file or "
            "SDGW_GRAFANA_TOKEN (a service account token with the Editor role)"
        )
    if isinstance(exc, GrafanaClientError) and exc.status_code == 403:
        return PushError(f"Grafana at {url} denied the request (403 Forbidden): the token needs the Editor role")
    if isinstance(exc, GrafanaException):
        detail = exc.message or type(exc).__name__
        if exc.status_code:
            return PushError(f"Grafana at {url} answered {exc.status_code}: {detail}")
        return PushError(f"cannot reach Grafana at {url}: {detail}")
    return PushError(f"cannot reach Grafana at {url}: {exc}")


def push(
    url: str,
    token: str,
    boards: Mapping[str, dict],
    *,
    folder_uid: str,
    folder_title: str,
    message: str,
    timeout_s: float = 10.0,
) -> PushReport:
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        health = api.client.GET("/health")
        if not isinstance(health, dict) or health.get("database") != "ok":
            raise PushError(f"{url} does not answer like a healthy Grafana (GET /api/health: {health!r})")
        try:
            api.folder.get_folder(folder_uid)
            created = False
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.folder.create_folder(folder_title, uid=folder_uid)
            created = True
        report = PushReport(str(health.get("version", "?")), folder_uid, created)
        for uid, board in boards.items():
            answer = api.dashboard.update_dashboard(
                {
                    "dashboard": {**board, "id": None},  # id null + our uid: create or replace by uid
                    "folderUid": folder_uid,
                    "overwrite": True,
                    "message": message,
                }
            )
            report.dashboards.append(
                Uploaded(uid, board.get("title", uid), answer.get("version"), answer.get("url", ""))
            )
        return report
    except PushError:
        raise
    except (GrafanaException, OSError) as exc:  # niquests' connection errors are OSErrors
        raise _explain(url, exc) from None
