"""Rollback: the update that undoes one journaled change.

The change's snapshot holds what its names had before (a definition, or nothing), so one
update with the same masks and the snapshot as new state puts back what it replaced or
deleted and removes what it added. The policy judges the rollback like an apply (see
:meth:`fleet_connector.requests.policy.Policy.check_update`): a config put back can re-render a
workload that came later into an image the policy refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ankaios_sdk._protos import _ank_base
from google.protobuf import json_format

from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.journal.entries import OK, Entry, Journal


def _invalid(message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, message)


@dataclass(frozen=True)
class Rollback:
    """What to send to Ankaios to undo ``target``."""

    target: Entry
    state: _ank_base.CompleteState
    masks: list[str]

    @property
    def description(self) -> str:
        """The journal's record of the request: the state put back, as JSON."""
        return str(json_format.MessageToJson(self.state.desiredState, indent=None))

    @property
    def reply_extra(self) -> dict[str, Any]:
        return {"rolled_back": {"entry": self.target.seq, "request_id": self.target.request_id}}


def parse_target(payload: bytes) -> dict[str, Any]:
    """``{}`` or nothing for the last change, ``{"entry": N}`` or ``{"request_id": "..."}``."""
    if not payload.strip():
        return {}
    try:
        selector = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        selector = None
    if not isinstance(selector, dict) or not set(selector) <= {"entry", "request_id"}:
        raise _invalid(
            'a rollback request is empty, {} for the last change, {"entry": N} or '
            '{"request_id": "..."} for one journal entry'
        )
    if len(selector) > 1:
        raise _invalid("name a journal entry by entry or by request_id, not both")
    if "entry" in selector and (
        not isinstance(selector["entry"], int) or isinstance(selector["entry"], bool)
    ):
        raise _invalid("entry must be a journal entry number")
    if "request_id" in selector and not isinstance(selector["request_id"], str):
        raise _invalid("request_id must be a string")
    return selector


def plan(journal: Journal, payload: bytes) -> Rollback:
    """The rollback a request asks for; RequestError(INVALID_REQUEST) if there is none."""
    selector = parse_target(payload)
    if "entry" in selector:
        target = journal.get(selector["entry"])
        if target is None:
            raise _invalid(f"the journal has no entry {selector['entry']}")
    elif "request_id" in selector:
        target = journal.by_request_id(selector["request_id"])
        if target is None:
            raise _invalid(f"the journal has no entry for request id {selector['request_id']!r}")
    else:
        target = journal.last_change()
        if target is None:
            raise _invalid("the journal holds no change to roll back")
    if target.operation not in ("apply", "delete"):
        raise _invalid(f"entry {target.seq} is a {target.operation}, not a change to roll back")
    if target.rolled_back_by is not None:
        raise _invalid(
            f"entry {target.seq} was already rolled back by entry {target.rolled_back_by}"
        )
    if target.outcome not in (OK, str(ErrorCode.TIMEOUT), "PENDING"):
        raise _invalid(
            f"entry {target.seq} changed nothing (it was answered {target.outcome}); "
            "there is nothing to roll back"
        )
    for later in journal.later_changes(target.seq):
        # Putting back the snapshot would silently undo the later change too, and leave
        # it looking live in the journal.
        shared = sorted(set(later.masks) & set(target.masks))
        if shared:
            names = ", ".join(mask.rsplit(".", 1)[-1] for mask in shared)
            raise _invalid(
                f"entry {target.seq} is superseded: entry {later.seq} changed {names} after "
                f"it; roll back entry {later.seq} first"
            )
    state = _ank_base.CompleteState()
    state.CopyFrom(target.snapshot)
    state.desiredState.apiVersion = "v1"
    return Rollback(target, state, list(target.masks))
