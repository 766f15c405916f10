"""Requests in Ankaios's terms: apply, delete, read state; answers as the SDK's objects.

Replies keep the shape of the tutorial's connector (``UpdateStateSuccess.to_dict()`` and
``CompleteState.to_dict()`` of the SDK), so existing observers see what they expect.
"""

from __future__ import annotations

from typing import Any

from ankaios_sdk import ResponseType
from ankaios_sdk._protos import _ank_base

from fleet_connector.control_interface import ControlInterface, Unavailable
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.manifest import Manifest

ACCESS_DENIED = "Access denied"


class Ankaios:
    """Sends requests through one control interface, one at a time."""

    def __init__(self, control_interface: ControlInterface, timeout: float) -> None:
        self._ci = control_interface
        self._timeout = timeout

    def apply(self, manifest: Manifest) -> dict[str, Any]:
        return self._update(manifest.apply_state(), manifest.masks)

    def delete(self, manifest: Manifest) -> dict[str, Any]:
        return self._update(Manifest.delete_state(), manifest.masks)

    def state(self, field_masks: list[str]) -> dict[str, Any]:
        request = _ank_base.Request(
            completeStateRequest=_ank_base.CompleteStateRequest(fieldMask=field_masks)
        )
        content = self._send(request, ResponseType.COMPLETE_STATE)
        result: dict[str, Any] = content.to_dict()
        return result

    def _update(self, state: _ank_base.CompleteState, masks: list[str]) -> dict[str, Any]:
        request = _ank_base.Request(
            updateStateRequest=_ank_base.UpdateStateRequest(newState=state, updateMask=masks)
        )
        content = self._send(request, ResponseType.UPDATE_STATE_SUCCESS)
        result: dict[str, Any] = content.to_dict()
        return result

    def _send(self, request: _ank_base.Request, expected: ResponseType) -> Any:
        try:
            response = self._ci.request(request, self._timeout)
        except Unavailable as e:
            raise RequestError(ErrorCode.UNAVAILABLE, str(e)) from None
        except TimeoutError as e:
            raise RequestError(ErrorCode.TIMEOUT, str(e)) from None
        if response.content_type == ResponseType.ERROR:
            message = str(response.content)
            if message == ACCESS_DENIED:
                raise RequestError(
                    ErrorCode.ACCESS_DENIED,
                    "Access denied: the connector's controlInterfaceAccess does not allow this",
                )
            raise RequestError(ErrorCode.REJECTED, message)
        if response.content_type != expected:
            raise RequestError(
                ErrorCode.INTERNAL, f"Ankaios answered with {response.content_type}, not {expected}"
            )
        return response.content
