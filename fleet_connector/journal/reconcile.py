"""Drift: what Ankaios lost of what the cloud applied, found and (with RECONCILE) put back.

Ankaios 1.0 keeps what was applied at runtime only until its server restarts; then it runs
its startup state again and says nothing (eclipse-ankaios/ankaios#721). The journal knows,
per name, what the cloud last put there. Each time the control interface connects (the
connector's start, an agent or server restart), the names are read from Ankaios and
compared: a workload or config the cloud applied that is missing, or one it deleted that
is back, is drift. Drift is reported, retained, on ``vehicle/<VIN>/drift``; with RECONCILE
on, the missing ones are applied again and the returned ones deleted, in one journaled
update (operation ``reconcile``).

Only presence is compared: a workload the cloud replaced whose startup version came back
under the same name is not found (Ankaios's read-back form of a definition differs from
the manifest's in details such as trailing newlines).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ankaios_sdk._protos import _ank_base
from google.protobuf import json_format

from fleet_connector.ankaios.client import Ankaios
from fleet_connector.ankaios.manifest import CONFIGS_PREFIX, WORKLOADS_PREFIX
from fleet_connector.errors import RequestError
from fleet_connector.journal.changes import Changes
from fleet_connector.journal.entries import Journal

log = logging.getLogger(__name__)

_KINDS = {"workload": WORKLOADS_PREFIX, "config": CONFIGS_PREFIX}


def _mask(kind: str, name: str) -> str:
    return f"{_KINDS[kind]}.{name}"


def _present(state: _ank_base.CompleteState, kind: str, name: str) -> bool:
    desired = state.desiredState
    table: Any = desired.workloads.workloads if kind == "workload" else desired.configs.configs
    return name in table


class Reconciler:
    """Compares Ankaios with the journal's expectations; one check at a time (worker)."""

    def __init__(
        self,
        ankaios: Ankaios,
        journal: Journal,
        changes: Changes,
        *,
        enabled: bool,
        publish: Callable[[dict[str, Any]], None],
        vet: Callable[[_ank_base.CompleteState, list[str]], None] = lambda state, masks: None,
    ) -> None:
        """``vet(state, masks)`` raises RequestError when the policy refuses a re-apply."""
        self._ankaios = ankaios
        self._vet = vet
        self._journal = journal
        self._changes = changes
        self.enabled = enabled
        self._publish = publish
        self._drifted = False

    def check(self) -> dict[str, Any] | None:
        """Looks for drift once; returns the report it published, if any."""
        expected = self._journal.expected()
        if not expected:
            return None
        try:
            now = self._ankaios.read([_mask(kind, name) for kind, name in sorted(expected)])
        except RequestError as e:
            log.warning("drift check: could not read the state: %s", e.message)
            return None
        missing = sorted(
            key for key, held in expected.items() if held is not None and not _present(now, *key)
        )
        returned = sorted(
            key for key, held in expected.items() if held is None and _present(now, *key)
        )
        if not missing and not returned:
            if not self._drifted:
                return None
            self._drifted = False
            report = self._report([], [])
            self._publish(report)
            return report
        self._drifted = True
        report = self._report(missing, returned)
        log.warning(
            "drift: Ankaios lost %s and has back %s of what the cloud set",
            [name for _, name in missing],
            [name for _, name in returned],
        )
        if self.enabled:
            report["reconciled"] = True
            report["result"] = self._reconcile(expected, missing, returned)
            self._drifted = "error" in report["result"]
        self._publish(report)
        return report

    def _report(
        self, missing: list[tuple[str, str]], returned: list[tuple[str, str]]
    ) -> dict[str, Any]:
        def by_kind(keys: list[tuple[str, str]]) -> dict[str, list[str]]:
            return {
                "workloads": [n for k, n in keys if k == "workload"],
                "configs": [n for k, n in keys if k == "config"],
            }

        return {
            "checked_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "drift": bool(missing or returned),
            "missing": by_kind(missing),
            "returned": by_kind(returned),
            "reconciled": False,
        }

    def _reconcile(
        self,
        expected: dict[tuple[str, str], bytes | None],
        missing: list[tuple[str, str]],
        returned: list[tuple[str, str]],
    ) -> dict[str, Any]:
        state = _ank_base.CompleteState()
        state.desiredState.apiVersion = "v1"
        for kind, name in missing:
            definition = expected[(kind, name)]
            assert definition is not None
            if kind == "workload":
                state.desiredState.workloads.workloads[name].ParseFromString(definition)
            else:
                state.desiredState.configs.configs[name].ParseFromString(definition)
        masks = [_mask(kind, name) for kind, name in sorted(missing + returned, key=_order)]
        try:
            self._vet(state, masks)
        except RequestError as e:
            log.warning("drift not reconciled: %s", e.message)
            return {"error": {"code": str(e.code), "message": e.message}}
        outcome = self._changes.carry_out(
            key=None,
            request_id=f"reconcile-{uuid.uuid4().hex[:8]}",
            operation="reconcile",
            manifest=str(json_format.MessageToJson(state.desiredState, indent=None)),
            state=state,
            masks=masks,
        )
        result: dict[str, Any] = json.loads(outcome.reply)
        return result


def _order(key: tuple[str, str]) -> tuple[int, str]:
    # Workloads before configs, as the SDK orders an apply's masks.
    return (0 if key[0] == "workload" else 1, key[1])
