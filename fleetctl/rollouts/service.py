"""``fleetctl rollout`` with a server context: the rollout lives in fleet-server
(/api/v1/rollouts, docs/rollouts.md), which carries it out; fleetctl starts it, shows it
and acts on it, and may go away meanwhile.

The rollout file is today's, read as YAML and sent as JSON: the manifest it names is sent
inline, VIN files it names are read here (the service has no operator's files); keys only
the service knows (``cars.selector``, ``onFailure``, ``window``, ``gate``, ``budget``,
``pauseAfter``) pass through and are checked by the server.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from fleet_connector.options import ConfigError
from fleetctl import output
from fleetctl.client import fleet
from fleetctl.client.server import FleetServer

ROLLOUTS = "/api/v1/rollouts"
NOT_FAILED = ("running", "paused", "waiting", "done")
"""States ``rollout status`` exits 0 for: done, or still going on."""


def document(path: Path) -> dict[str, Any]:
    """The rollout file as the service takes it; ConfigError saying what is wrong."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the rollout must be a mapping")
    base = path.parent
    manifest = doc.get("manifest")
    if not isinstance(manifest, str):
        raise ConfigError(f"{path}: manifest names the manifest file")
    try:
        doc["manifest"] = (base / manifest).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read manifest {base / manifest}: {e}") from None
    for key in ("cars", "canary"):
        doc[key] = _with_files(doc.get(key), base, path, key)
    if doc.get("canary") is None:
        doc.pop("canary")
    return doc


def _with_files(value: Any, base: Path, path: Path, where: str) -> Any:
    """VIN files (``files``) read here and added to ``vins``."""
    if not isinstance(value, dict) or "files" not in value:
        return value
    files = value.pop("files")
    if not isinstance(files, list):
        raise ConfigError(f"{path}: {where}.files is a list of files")
    try:
        vins = fleet.select(files=[str(base / str(name)) for name in files])
    except ConfigError as e:
        raise ConfigError(f"{path}: {where}: {e}") from None
    named = value.get("vins", [])
    named = [named] if isinstance(named, str) else list(named)
    value["vins"] = named + vins
    return value


def _path(rollout_id: str, action: str = "") -> str:
    return f"{ROLLOUTS}/{urllib.parse.quote(rollout_id, safe='')}" + (
        f"/{action}" if action else ""
    )


def start(server: FleetServer, path: Path) -> str:
    created = server.post_json(ROLLOUTS, document(path))
    return str(created["id"])


def get(server: FleetServer, rollout_id: str) -> dict[str, Any]:
    found: dict[str, Any] = server.get_json(_path(rollout_id))
    return found


def act(server: FleetServer, rollout_id: str, action: str) -> dict[str, Any]:
    """pause, resume, abort or approve; ServerError (409) where the state does not allow it."""
    found: dict[str, Any] = server.post_json(_path(rollout_id, action))
    return found


def listing(server: FleetServer) -> list[dict[str, Any]]:
    found = server.get_json(ROLLOUTS, {"limit": "500"})
    items: list[dict[str, Any]] = found.get("items", []) if isinstance(found, dict) else []
    return items


def render(rollout: dict[str, Any], fmt: str) -> str:
    if fmt != "table":
        return output.dump(rollout, fmt)
    rows: list[list[str]] = [["VIN", "WAVE", "STATE", "DETAIL"]]
    for car in rollout.get("cars", []):
        wave = "canary" if car.get("wave") == 0 else str(car.get("wave", ""))
        detail = car.get("waiting") or ""
        if car.get("code"):
            detail = f"{car['code']}: {car.get('message') or car.get('reason') or ''}"
        if car.get("rollback"):
            detail += f" ({car['rollback']})"
        rows.append([str(car.get("vin")), wave, str(car.get("state")), detail])
    line = f"rollout {rollout.get('id')}: {rollout.get('state')}"
    extra = rollout.get("reason") or rollout.get("waiting")
    if extra:
        line += f" ({extra})"
    counts = ", ".join(f"{n} {state}" for state, n in sorted(rollout.get("counts", {}).items()))
    text = output.table(rows) + f"\n{line}\nstage {rollout.get('stage')}; {counts or 'no cars'}"
    if rollout.get("remaining"):
        text += (
            f"\n{len(rollout['remaining']['cars']['vins'])} car(s) did not succeed: "
            "-o json shows `remaining`, the same rollout for them"
        )
    return text


def render_list(items: list[dict[str, Any]], fmt: str) -> str:
    if fmt != "table":
        return output.dump({"rollouts": items}, fmt)
    if not items:
        return "no rollouts"
    rows = [["ID", "STATE", "STAGE", "CARS", "NAME"]]
    for item in items:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(item.get("counts", {}).items()))
        rows.append(
            [
                str(item.get("id")),
                str(item.get("state")),
                str(item.get("stage")),
                counts,
                str(item.get("name") or ""),
            ]
        )
    return output.table(rows)
