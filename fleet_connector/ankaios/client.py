"""Requests in Ankaios's terms: apply, delete, read state; answers as the SDK's objects.

Replies keep the shape of the tutorial's connector (``UpdateStateSuccess.to_dict()`` and
``CompleteState.to_dict()`` of the SDK), so existing observers see what they expect.
"""

from __future__ import annotations

from typing import Any

from ankaios_sdk import Response, ResponseType
from ankaios_sdk._protos import _ank_base

from fleet_connector.ankaios.control_interface import ControlInterface, Unavailable
from fleet_connector.ankaios.manifest import CONFIGS_PREFIX, WORKLOADS_PREFIX, Manifest
from fleet_connector.errors import ErrorCode, RequestError

ACCESS_DENIED = "Access denied"


class Ankaios:
    """Sends requests through one control interface, one at a time."""

    def __init__(self, control_interface: ControlInterface, timeout: float) -> None:
        self._ci = control_interface
        self._timeout = timeout

    def apply(self, manifest: Manifest) -> dict[str, Any]:
        return self.update(manifest.apply_state(), manifest.masks)

    def delete(self, manifest: Manifest) -> dict[str, Any]:
        return self.update(Manifest.delete_state(), manifest.masks)

    def read(self, masks: list[str]) -> _ank_base.CompleteState:
        """The state under ``masks`` as Ankaios's own protobuf (no SDK conversion)."""
        request = _ank_base.Request(
            completeStateRequest=_ank_base.CompleteStateRequest(fieldMask=masks)
        )
        state: _ank_base.CompleteState = self._content(
            self._ask(request), ResponseType.COMPLETE_STATE
        )._to_proto()
        return state

    def desired_state(self) -> _ank_base.CompleteState:
        """The workloads and configs of the desired state, as Ankaios holds them now."""
        return self.read([WORKLOADS_PREFIX, CONFIGS_PREFIX])

    def states(self, masks_per_request: list[list[str]]) -> list[dict[str, Any] | RequestError]:
        """Several state reads in one go: sent back to back, answers collected in order."""
        requests = [
            _ank_base.Request(completeStateRequest=_ank_base.CompleteStateRequest(fieldMask=m))
            for m in masks_per_request
        ]
        results: list[dict[str, Any] | RequestError] = []
        for answer in self._ci.requests(requests, self._timeout):
            try:
                results.append(self._content(answer, ResponseType.COMPLETE_STATE).to_dict())
            except RequestError as e:
                results.append(e)
        return results

    def update(self, state: _ank_base.CompleteState, masks: list[str]) -> dict[str, Any]:
        request = _ank_base.Request(
            updateStateRequest=_ank_base.UpdateStateRequest(newState=state, updateMask=masks)
        )
        result: dict[str, Any] = self._content(
            self._ask(request), ResponseType.UPDATE_STATE_SUCCESS
        ).to_dict()
        return result

    def _ask(self, request: _ank_base.Request) -> Response | Exception:
        """Ankaios's answer, or why there is none (turned into a RequestError by _content)."""
        try:
            return self._ci.request(request, self._timeout)
        except (Unavailable, TimeoutError) as e:
            return e

    @staticmethod
    def _content(answer: Response | Exception, expected: ResponseType) -> Any:
        """The answer's content, or the RequestError a requester is told."""
        if isinstance(answer, Unavailable):
            raise RequestError(ErrorCode.UNAVAILABLE, str(answer))
        if isinstance(answer, TimeoutError):
            raise RequestError(ErrorCode.TIMEOUT, str(answer))
        if isinstance(answer, Exception):
            raise RequestError(ErrorCode.INTERNAL, f"{type(answer).__name__}: {answer}")
        if answer.content_type == ResponseType.ERROR:
            message = str(answer.content)
            if message == ACCESS_DENIED:
                raise RequestError(
                    ErrorCode.ACCESS_DENIED,
                    "Access denied: the connector's controlInterfaceAccess does not allow this",
                )
            raise RequestError(ErrorCode.REJECTED, message)
        if answer.content_type != expected:
            raise RequestError(
                ErrorCode.INTERNAL, f"Ankaios answered with {answer.content_type}, not {expected}"
            )
        return answer.content
