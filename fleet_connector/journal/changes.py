"""Changes to Ankaios's desired state carried out through the journal, exactly once.

For each change: read from Ankaios what the named workloads and configs hold now (the
snapshot rollback puts back), record the change as pending, send it, record the answer.
A request that arrives again with the same key (topic, id or correlation data, payload
digest) is answered from the journal. If the connector died between sending and
recording, the journal row is still pending: the names are read again, and if they no
longer hold the snapshot, Ankaios carried the change out and it is not sent a second time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ankaios_sdk._protos import _ank_base

from fleet_connector.ankaios.client import Ankaios
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.journal.crashpoints import CrashPoints
from fleet_connector.journal.entries import OK, PENDING, Entry, Journal, names_of

# Outcomes after which Ankaios may or may not have carried the change out.
_UNCERTAIN = frozenset({PENDING, str(ErrorCode.TIMEOUT)})
# Outcomes after which it certainly did not, so a retry is sent again.
_NOT_SENT = frozenset({str(ErrorCode.UNAVAILABLE), str(ErrorCode.INTERNAL)})


@dataclass
class Outcome:
    """The reply to a change and its journal row."""

    reply: str
    code: ErrorCode | None
    entry: int
    replied: bool = False
    """The reply to this row already reached the broker (a redelivery needs only an ack)."""


def _workload_states_masks(workloads: list[str]) -> list[str]:
    return [f"workloadStates.*.{name}" for name in workloads]


def _instances(state: _ank_base.CompleteState) -> list[dict[str, str]]:
    found = []
    for agent, by_name in state.workloadStates.agentStateMap.items():
        for name, by_id in by_name.wlNameStateMap.items():
            for instance_id in by_id.idStateMap:
                found.append(
                    {"agent_name": agent, "workload_name": name, "workload_id": instance_id}
                )
    return sorted(found, key=lambda i: (i["workload_name"], i["workload_id"]))


def _instance_name(instance: dict[str, str]) -> str:
    return f"{instance['workload_name']}.{instance['workload_id']}.{instance['agent_name']}"


def _held(state: _ank_base.CompleteState, kind: str, name: str) -> bytes | None:
    desired = state.desiredState
    table: Any = desired.workloads.workloads if kind == "workload" else desired.configs.configs
    item = table.get(name)
    return None if item is None else bytes(item.SerializeToString(deterministic=True))


class Changes:
    """Carries out journaled changes; one call at a time, from the connector's worker."""

    def __init__(self, ankaios: Ankaios, journal: Journal, crash: CrashPoints) -> None:
        self._ankaios = ankaios
        self.journal = journal
        self._crash = crash

    def carry_out(
        self,
        *,
        key: bytes | None,
        request_id: str,
        operation: str,
        manifest: str,
        state: _ank_base.CompleteState,
        masks: list[str],
        rollback_of: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Outcome:
        """Applies ``state`` under ``masks`` unless the journal shows it was already."""
        existing = self.journal.by_key(key) if key is not None else None
        if existing is not None:
            if existing.outcome in _UNCERTAIN:
                recovered = self._recover(existing, extra)
                if recovered is not None:
                    return recovered
                return self._send(existing.seq, state, masks, extra)
            if existing.outcome not in _NOT_SENT and existing.reply is not None:
                code = None if existing.outcome == OK else ErrorCode(existing.outcome)
                return Outcome(existing.reply, code, existing.seq, existing.replied)
        workloads, _ = names_of(masks)
        before = self._ankaios.read(masks + _workload_states_masks(workloads))
        instances = [_instance_name(i) for i in _instances(before)]
        before.ClearField("workloadStates")
        seq = self.journal.begin(
            key=key,
            request_id=request_id,
            operation=operation,
            manifest=manifest,
            masks=masks,
            snapshot=before,
            instances=instances,
            rollback_of=rollback_of,
        )
        return self._send(seq, state, masks, extra)

    def _send(
        self,
        seq: int,
        state: _ank_base.CompleteState,
        masks: list[str],
        extra: dict[str, Any] | None,
    ) -> Outcome:
        self._crash.reach("before-ankaios")
        try:
            result = self._ankaios.update(state, masks)
        except RequestError as e:
            self._crash.reach("after-ankaios")
            self.journal.finish(seq, str(e.code), e.to_json())
            self._crash.reach("after-journal")
            return Outcome(e.to_json(), e.code, seq)
        self._crash.reach("after-ankaios")
        reply = json.dumps({**result, **(extra or {})})
        self.journal.finish(seq, OK, reply, expected=state)
        self._crash.reach("after-journal")
        return Outcome(reply, None, seq)

    def _recover(self, entry: Entry, extra: dict[str, Any] | None) -> Outcome | None:
        """The reply to an uncertain row if Ankaios carried it out; None if it did not.

        The instance lists are rebuilt from the workload states: the named workloads whose
        definition changed lose the instances they had and gain those they have now.
        Workloads restarted only because a config they use changed are not listed.
        """
        workloads, configs = names_of(entry.masks)
        now = self._ankaios.read(entry.masks + _workload_states_masks(workloads))
        changed = [
            name
            for kind, names in (("workload", workloads), ("config", configs))
            for name in names
            if _held(now, kind, name) != _held(entry.snapshot, kind, name)
        ]
        if not changed:
            return None
        changed_workloads = set(changed) & set(workloads)
        before = set(entry.instances)
        added, deleted = [], []
        for instance in _instances(now):
            if instance["workload_name"] in changed_workloads and (
                _instance_name(instance) not in before
            ):
                added.append(instance)
        for name in entry.instances:
            workload, instance_id, agent = name.split(".", 2)
            if workload in changed_workloads:
                deleted.append(
                    {"agent_name": agent, "workload_name": workload, "workload_id": instance_id}
                )
        reply = json.dumps(
            {"added_workloads": added, "deleted_workloads": deleted, **(extra or {})}
        )
        now.ClearField("workloadStates")
        self.journal.finish(entry.seq, OK, reply, expected=now)
        return Outcome(reply, None, entry.seq)
