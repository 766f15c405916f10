"""What the connector may read, said when Ankaios refuses a state request.

Ankaios answers a refused request with "Access denied" and nothing else; the operator then
has to guess which field masks would pass. The connector's own workload (its
``controlInterfaceAccess``) is in the desired state, which the least-privilege startup state
lets it read, so the refusal can name the masks its read rules allow.
"""

from __future__ import annotations

from ankaios_sdk._protos import _ank_base

from fleet_connector.ankaios.client import Ankaios
from fleet_connector.ankaios.manifest import WORKLOADS_PREFIX
from fleet_connector.errors import ErrorCode, RequestError

_READS = (_ank_base.RW_READ, _ank_base.RW_READ_WRITE)


def read_masks(access: _ank_base.ControlInterfaceAccess) -> tuple[list[str], list[str]]:
    """(masks the allow rules let it read, masks the deny rules keep from it)."""

    def masks(rules: list[_ank_base.AccessRightsRule]) -> list[str]:
        found: list[str] = []
        for rule in rules:
            if rule.HasField("stateRule") and rule.stateRule.operation in _READS:
                found.extend(m for m in rule.stateRule.filterMasks if m not in found)
        return found

    return masks(list(access.allowRules)), masks(list(access.denyRules))


def explain_denied_read(ankaios: Ankaios, workload: str | None) -> RequestError:
    """ACCESS_DENIED for a state request, naming what may be read (when that can be read)."""
    message = "Access denied: the connector's controlInterfaceAccess does not allow this read"
    if not workload:
        return RequestError(ErrorCode.ACCESS_DENIED, message)
    mask = f"{WORKLOADS_PREFIX}.{workload}.controlInterfaceAccess"
    try:
        state = ankaios.read([mask])
    except RequestError:
        return RequestError(ErrorCode.ACCESS_DENIED, message)
    own = state.desiredState.workloads.workloads.get(workload)
    if own is None:
        return RequestError(ErrorCode.ACCESS_DENIED, message)
    allowed, denied = read_masks(own.controlInterfaceAccess)
    if "*" in allowed and not denied:
        return RequestError(ErrorCode.ACCESS_DENIED, message)
    readable = ", ".join(allowed) if allowed else "nothing"
    message += f"; it may read {readable}"
    if denied:
        message += f" (but not {', '.join(denied)})"
    return RequestError(ErrorCode.ACCESS_DENIED, message + ": ask for those field masks")
