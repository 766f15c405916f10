"""Request handling: from a request's payload to the reply text, never raising."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ankaios_sdk._protos import _ank_base

from fleet_connector.ankaios.client import Ankaios
from fleet_connector.ankaios.manifest import Manifest, parse_manifest
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.journal.crashpoints import CrashPoints
from fleet_connector.mqtt.topics import Operation
from fleet_connector.requests.policy import Policy
from fleet_connector.requests.redaction import Redactor
from fleet_connector.requests.signatures import Verifier

if TYPE_CHECKING:
    # The journal's modules load with STATE_DIR only (see Connector).
    from fleet_connector.journal.changes import Changes, Outcome

log = logging.getLogger(__name__)

MAX_FIELD_MASKS = 1000
# What plan and history answers reveal of the car: the policy's allowedFieldMasks must
# allow reading these, as a state request for them would need.
DEFINITIONS = ("desiredState.workloads", "desiredState.configs")
# Operations the journal records, and so answers again when they are redelivered.
JOURNALED = frozenset({Operation.APPLY, Operation.DELETE, Operation.ROLLBACK})


@dataclass
class Request:
    """One request as it came off MQTT, with where its reply goes."""

    operation: Operation
    payload: bytes
    topic: str
    reply_topic: str
    request_id: str | None = None
    has_topic_id: bool = False
    """Whether the requester chose the id (topic suffix); only such requests are deduplicated."""
    correlation_data: bytes | None = None
    received: float = field(default_factory=time.monotonic)
    expires: float | None = None
    """Monotonic deadline from the MQTT 5 Message Expiry Interval, if any."""
    mid: int | None = None
    """MQTT message id, acknowledged once the reply is out."""
    problem: RequestError | None = None
    """Set when the request is refused before it is carried out (e.g. a foreign reply topic)."""
    follow: str | None = None
    """The ``follow`` level of the request topic, if any (see observe/outcomes.py)."""
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    """MQTT 5 user properties of the request (follow settings, trace context)."""
    journal_entry: int | None = None
    """The journal row of a change, once it has one."""
    already_replied: bool = False
    """The journal shows its reply reached the broker before (a redelivery after a crash)."""

    @property
    def log_trace(self) -> str:
        """`` traceparent=<...>`` for its log lines when the requester sent W3C Trace Context
        (MQTT 5 user property), else nothing."""
        trace = dict(self.user_properties).get("traceparent")
        return f" traceparent={trace}" if trace else ""

    @functools.cached_property
    def dedupe_key(self) -> tuple[str, str, bytes, bytes] | None:
        """What makes two deliveries the same request; None when the requester chose no id."""
        if not (self.has_topic_id or self.correlation_data):
            return None
        digest = hashlib.sha256(self.payload).digest()
        return (self.topic, self.reply_topic, self.correlation_data or b"", digest)

    @property
    def journal_key(self) -> bytes | None:
        """The dedupe key as one value for the journal; None when there is none."""
        key = self.dedupe_key
        if key is None:
            return None
        topic, reply_topic, correlation, digest = key
        parts = [topic.encode(), reply_topic.encode(), correlation, digest]
        return hashlib.sha256(b"".join(b"%d:%s" % (len(part), part) for part in parts)).digest()


class Handler:
    """Carries out requests against Ankaios; one call at a time (the SDK is not concurrent)."""

    def __init__(
        self,
        ankaios: Ankaios,
        policy: Policy,
        *,
        strict: bool = False,
        verifier: Verifier | None = None,
        redact: Redactor | None = None,
        changes: Changes | None = None,
        crash: CrashPoints | None = None,
    ) -> None:
        self._ankaios = ankaios
        self._redact = redact or Redactor(())
        self._policy = policy
        self._strict = strict
        self._verifier = verifier
        self._changes = changes
        self._crash = crash or CrashPoints()

    def handle(self, request: Request) -> tuple[str, ErrorCode | None]:
        """The reply text and, for a failure, its error code."""
        if request.operation is Operation.STATE:
            return self.handle_reads([request])[0]
        try:
            payload = self._check(request)
            reply = self._execute(request, payload)
        except RequestError as e:
            return e.to_json(), e.code
        except Exception as e:
            log.exception("request %s failed unexpectedly", request.request_id or "-")
            error = RequestError(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")
            return error.to_json(), error.code
        return self._redact(json.dumps(reply)), None

    def handle_reads(self, requests: list[Request]) -> list[tuple[str, ErrorCode | None]]:
        """Like :meth:`handle` for several state requests, pipelined to Ankaios."""
        replies: list[tuple[str, ErrorCode | None] | None] = []
        valid: list[tuple[int, list[str]]] = []
        for request in requests:
            try:
                masks = parse_field_masks(self._check(request))
                self._policy.check_field_masks(masks)
            except RequestError as e:
                replies.append((e.to_json(), e.code))
                continue
            valid.append((len(replies), masks))
            replies.append(None)
        try:
            results = self._ankaios.states([masks for _, masks in valid])
        except Exception:
            # One read must not fail the others sent with it: each on its own tells which.
            results = [self._read_alone(masks) for _, masks in valid]
        for (index, _), result in zip(valid, results, strict=True):
            if isinstance(result, RequestError):
                replies[index] = (result.to_json(), result.code)
            else:
                replies[index] = (self._redact(json.dumps(result)), None)
        return [reply for reply in replies if reply is not None]

    def _read_alone(self, masks: list[str]) -> dict[str, Any] | RequestError:
        try:
            return self._ankaios.states([masks])[0]
        except Exception as e:
            log.exception("state request failed unexpectedly")
            return RequestError(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")

    def _check(self, request: Request) -> bytes:
        """The payload to carry out (a signed one unwrapped), or the RequestError to answer.

        The signature goes last, just before the request is carried out, because
        accepting it uses up its counter.
        """
        if request.problem is not None:
            raise request.problem
        if request.expires is not None and time.monotonic() > request.expires:
            raise RequestError(
                ErrorCode.EXPIRED, "the request expired before it could be carried out"
            )
        self._policy.check_payload(request.payload)
        if self._verifier is None:
            return request.payload
        return self._verifier.admit(
            request.operation,
            request.payload,
            request.user_properties,
            redelivered=self._journaled_before(request),
        )

    def _journaled_before(self, request: Request) -> bool:
        """Whether the journal holds this very request (a redelivery after a crash)."""
        key = request.journal_key
        if self._changes is None or key is None or request.operation not in JOURNALED:
            return False
        return self._changes.journal.by_key(key) is not None

    def _execute(self, request: Request, payload: bytes) -> dict[str, Any]:
        if request.operation in (Operation.ROLLBACK, Operation.HISTORY):
            return self._journaled(request, payload)
        manifest = parse_manifest(payload)
        planned = request.operation.planned
        if planned is not None:
            reply = self._plan(manifest, deleting=planned is Operation.DELETE)
        else:
            self._check_manifest(manifest, deleting=request.operation is Operation.DELETE)
            if self._changes is not None:
                return self._journaled_change(request, manifest, payload)
            self._crash.reach("before-ankaios")
            if request.operation is Operation.APPLY:
                reply = self._ankaios.apply(manifest)
            else:
                reply = self._ankaios.delete(manifest)
            self._crash.reach("after-ankaios")
        # Only when there are any, so that replies without warnings stay as they were.
        if manifest.warnings:
            reply["warnings"] = list(manifest.warnings)
        return reply

    def _journaled_change(
        self, request: Request, manifest: Manifest, payload: bytes
    ) -> dict[str, Any]:
        assert self._changes is not None
        applying = request.operation is Operation.APPLY
        outcome = self._changes.carry_out(
            key=request.journal_key,
            request_id=request.request_id or "-",
            operation="apply" if applying else "delete",
            manifest=payload.decode(),
            state=manifest.apply_state() if applying else Manifest.delete_state(),
            masks=manifest.masks,
            extra={"warnings": list(manifest.warnings)} if manifest.warnings else None,
        )
        return self._answered(request, outcome)

    def _check_manifest(
        self,
        manifest: Manifest,
        *,
        deleting: bool,
        read_state: Callable[[], _ank_base.CompleteState] | None = None,
    ) -> None:
        """What refuses a manifest before it reaches Ankaios: STRICT, then the policy."""
        if self._strict and manifest.warnings:
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"STRICT is on and the manifest has warnings: {'; '.join(manifest.warnings)}",
            )
        self._policy.check_manifest(manifest, deleting=deleting)
        if not deleting:
            self._policy.check_apply(read_state or self._ankaios.desired_state, manifest)

    def _plan(self, manifest: Manifest, *, deleting: bool) -> dict[str, Any]:
        # Plans need the Ankaios server model and the template renderer; a car that is
        # never asked for one does not load them (bench/README.md, "Footprint").
        from fleet_connector.requests.plan import CurrentStateError, plan  # noqa: PLC0415

        # A plan shows the current definitions it would replace (from/to).
        self._policy.check_field_masks(DEFINITIONS)
        # The policy and the plan look at the same current state: read it from Ankaios once.
        read: list[_ank_base.CompleteState] = []

        def current() -> _ank_base.CompleteState:
            if not read:
                read.append(self._ankaios.desired_state())
            return read[0]

        try:
            self._check_manifest(manifest, deleting=deleting, read_state=current)
        except RequestError as e:
            verdict = {"verdict": "denied", "code": str(e.code), "message": e.message}
        else:
            verdict = {"verdict": "allowed"}
        try:
            reply = plan(current(), manifest, deleting=deleting)
        except CurrentStateError as e:
            raise RequestError(
                ErrorCode.INTERNAL, f"the current state could not be modelled: {e}"
            ) from None
        reply["policy"] = verdict
        return reply

    def _journaled(self, request: Request, payload: bytes) -> dict[str, Any]:
        if self._changes is None:
            raise RequestError(
                ErrorCode.NO_JOURNAL,
                f"{request.operation.value} needs the journal, and this connector keeps none "
                "(STATE_DIR is not set)",
            )
        # Loaded here: without STATE_DIR there are no changes (above), and the journal's
        # modules stay out of the connector (see Connector).
        from fleet_connector.journal import rollback  # noqa: PLC0415
        from fleet_connector.journal.entries import history  # noqa: PLC0415

        journal = self._changes.journal
        if request.operation is Operation.HISTORY:
            # The journal holds manifests and snapshots: whoever may not read the
            # definitions in the car may not read them here either.
            self._policy.check_field_masks(DEFINITIONS)
            return history(journal, payload)
        undo = rollback.plan(journal, payload)
        self._policy.check_update(self._ankaios.desired_state, undo.state, undo.masks)
        outcome = self._changes.carry_out(
            key=request.journal_key,
            request_id=request.request_id or "-",
            operation="rollback",
            manifest=undo.description,
            state=undo.state,
            masks=undo.masks,
            rollback_of=undo.target.seq,
            extra=undo.reply_extra,
        )
        return self._answered(request, outcome)

    @staticmethod
    def _answered(request: Request, outcome: Outcome) -> dict[str, Any]:
        request.journal_entry = outcome.entry
        request.already_replied = outcome.replied
        if outcome.code is not None:
            raise _Answered(outcome.reply, outcome.code)
        reply: dict[str, Any] = json.loads(outcome.reply)
        return reply


class _Answered(RequestError):
    """A failure whose reply text the journal already holds."""

    def __init__(self, reply: str, code: ErrorCode) -> None:
        super().__init__(code, reply)
        self._reply = reply

    def to_json(self) -> str:
        return self._reply


def parse_field_masks(payload: bytes) -> list[str]:
    """A state request's payload: a JSON list of field masks such as ["workloadStates"]."""
    try:
        masks = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f'a state request is a JSON list of field masks such as ["workloadStates"]: {e}',
        ) from None
    except RecursionError:
        raise RequestError(ErrorCode.INVALID_REQUEST, "the payload is nested too deeply") from None
    if not isinstance(masks, list) or not all(isinstance(m, str) and m for m in masks):
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            'a state request is a JSON list of non-empty strings such as ["workloadStates"]; '
            "an empty list asks for the complete state",
        )
    for mask in masks:
        try:
            mask.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                ErrorCode.INVALID_REQUEST, f"field mask {mask!r} is not valid Unicode text"
            ) from None
    if len(masks) > MAX_FIELD_MASKS:
        raise RequestError(
            ErrorCode.INVALID_REQUEST, f"at most {MAX_FIELD_MASKS} field masks per request"
        )
    return masks
