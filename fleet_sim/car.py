"""One simulated car: its desired state, instances and journal, and the answers it gives.

Pure bookkeeping, no I/O and no timers: :mod:`fleet_sim.fleet` publishes what a request
changed and drives instances through their states. Everything a car holds is small and
made on first use (journal, reply cache, queue), so an idle car costs a few hundred bytes.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from fleet_sim import manifest as mf
from fleet_sim.protocol import (
    APPLY,
    BUSY,
    DELETE,
    HISTORY,
    INVALID_REQUEST,
    NO_JOURNAL,
    PLAN,
    PLAN_DELETE,
    POLICY_DENIED,
    REJECTED,
    ROLLBACK,
    STATE,
    Request,
    SimError,
    stamp,
)

PROTECTED = "fleetconnector"
"""The connector's own workload (ANKAIOS_WORKLOAD_NAME): never deleted or replaced remotely."""
HISTORY_LIMIT = 1000
REPLY_CACHE_ENTRIES = 32
REPLY_CACHE_AGE = 600.0
LOG_MAX_LINES = 10_000
LOG_MAX_FOLLOW = 600.0
FREE_MEMORY = 4 << 30
_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(slots=True)
class Instance:
    """One workload instance, its state in the connector's topic spelling."""

    name: str
    agent: str
    id: str
    state: str
    substate: str
    info: str
    since: float
    crashes: bool = False

    def live(self) -> dict[str, Any]:
        """Its retained live state (``vehicle/<VIN>/workloads/<name>``)."""
        return {
            "agent": self.agent,
            "instance_id": self.id,
            "state": self.state,
            "substate": self.substate,
            "info": self.info,
            "since": stamp(self.since),
        }

    def sdk(self) -> dict[str, str]:
        """Its entry in a state reply (the SDK's ``to_dict``: ``RUNNING``/``RUNNING_OK``)."""
        state = self.state.upper()
        sub = _SNAKE.sub("_", self.substate).upper()
        return {"state": state, "substate": f"{state}_{sub}", "additional_info": self.info}

    def ref(self) -> dict[str, str]:
        return {"agent_name": self.agent, "workload_name": self.name, "workload_id": self.id}

    def log_lines(self) -> list[str]:
        lines = [f"{self.name}: started (simulated by fleet-sim)"]
        if self.crashes and self.state == "failed":
            lines += [f"{self.name}: working", f"{self.name}: simulated crash (--crash-ratio)"]
        return lines


@dataclass(slots=True)
class Entry:
    """One journal entry, as the connector's history shows it."""

    seq: int
    request_id: str
    operation: str
    received_at: str
    manifest: str
    workloads: list[str]
    configs: list[str]
    before_workloads: dict[str, mf.Definition]
    before_configs: dict[str, Any]
    instances_before: list[str]
    outcome: str = "OK"
    reply: str | None = None
    followed: str | None = None
    rollback_of: int | None = None
    rolled_back_by: int | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "entry": self.seq,
            "request_id": self.request_id,
            "operation": self.operation,
            "received_at": self.received_at,
            "outcome": self.outcome,
            "workloads": self.workloads,
            "configs": self.configs,
            "replaced": {
                "workloads": sorted(self.before_workloads),
                "configs": sorted(self.before_configs),
            },
            "followed": self.followed,
            "rollback_of": self.rollback_of,
            "rolled_back_by": self.rolled_back_by,
        }

    def details(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = {"apiVersion": "v1"}
        if self.before_workloads:
            snapshot["workloads"] = {
                "workloads": {n: mf.proto_workload(d) for n, d in self.before_workloads.items()}
            }
        if self.before_configs:
            snapshot["configs"] = {
                "configs": {n: mf.proto_config(v) for n, v in self.before_configs.items()}
            }
        return {
            **self.summary(),
            "manifest": self.manifest,
            "snapshot": snapshot,
            "instances_before": self.instances_before,
            "reply": json.loads(self.reply) if self.reply else None,
        }


@dataclass(slots=True)
class Answer:
    """What a request came to: messages for its reply topic and what changed in the car."""

    messages: list[str]
    code: str | None = None
    added: list[Instance] = field(default_factory=list)
    removed: list[Instance] = field(default_factory=list)
    entry: Entry | None = None
    named: list[str] = field(default_factory=list)
    """Workloads the manifest names (a followed apply follows unchanged ones too)."""


def _error(error: SimError) -> Answer:
    return Answer([error.to_json()], error.code)


class Car:
    """A simulated car; the fleet owns its timers and its MQTT connection."""

    __slots__ = (
        "agent",
        "announced",
        "busy",
        "configs",
        "follows",
        "index",
        "instances",
        "journal",
        "labels",
        "leaving",
        "next_seq",
        "online",
        "queue",
        "replies",
        "requests",
        "since",
        "streams",
        "vin",
        "workloads",
    )

    def __init__(
        self,
        *,
        index: int,
        vin: str,
        labels: dict[str, str],
        startup: dict[str, mf.Definition],
        startup_ids: dict[str, str],
        agent: str,
        now: float,
    ) -> None:
        self.index = index
        self.vin = vin
        self.labels = labels
        self.agent = agent
        self.workloads: dict[str, mf.Definition] = dict(startup)
        self.configs: dict[str, Any] = {}
        self.instances: dict[str, Instance] = {
            name: Instance(name, agent, startup_ids[name], "running", "Ok", "", now)
            for name in startup
        }
        self.leaving: dict[tuple[str, str], Instance] | None = None
        self.journal: deque[Entry] | None = None
        self.next_seq = 1
        self.replies: OrderedDict[tuple[str, str, bytes, bytes], tuple[float, str]] | None = None
        self.queue: deque[Request] | None = None
        self.busy = False
        self.online = False
        self.announced = False
        """Whether it has been online once (the fleet is ready when every car has)."""
        self.since = now
        self.requests = 0
        """Requests taken so far: the counter that makes each one's fate deterministic."""
        self.follows: list[Any] | None = None
        self.streams: dict[tuple[str | None, bytes | None], Any] | None = None

    # -- what the broker shows ------------------------------------------------------------

    def agent_live(self, now: float) -> dict[str, Any]:
        return {
            "connected": True,
            "tags": {},
            "cpu_usage": 0,
            "free_memory": FREE_MEMORY,
            "since": stamp(now),
        }

    # -- requests -----------------------------------------------------------------------

    def handle(
        self,
        request: Request,
        now: float,
        *,
        reject: bool,
        crash: bool,
        journal_entries: int | None,
    ) -> Answer:
        """The answer to a request; ``journal_entries`` None: the car keeps no journal."""
        try:
            operation = request.operation
            if operation == STATE:
                return Answer([json.dumps(self._state(_field_masks(request.payload)))])
            if operation in (PLAN, PLAN_DELETE):
                return Answer([json.dumps(self._plan(request.payload, operation == PLAN_DELETE))])
            if operation == HISTORY:
                if journal_entries is None:
                    raise _no_journal(operation)
                return Answer([json.dumps(self._history(request.payload))])
            if operation in (APPLY, DELETE):
                return self._write(request, now, reject, crash, journal_entries)
            if operation == ROLLBACK:
                if journal_entries is None:
                    raise _no_journal(operation)
                return self._rollback(request, now, reject, journal_entries)
        except SimError as e:
            return _error(e)
        return _error(SimError(INVALID_REQUEST, f"unknown operation {operation}"))

    def _state(self, masks: list[str]) -> dict[str, Any]:
        """The complete state under the field masks, in the SDK's ``to_dict`` shape."""
        states: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
        for i in self._all_instances():
            if _selects(masks, f"workloadStates.{i.agent}.{i.name}.{i.id}"):
                states.setdefault(i.agent, {}).setdefault(i.name, {})[i.id] = i.sdk()
        agents: dict[str, Any] = {}
        if _selects(masks, f"agents.{self.agent}"):
            agents[self.agent] = {
                "tags": {},
                "status": {"cpu_usage": 0, "free_memory": FREE_MEMORY},
            }
        return {
            "desired_state": {
                "api_version": "v1"
                if not masks or any(m.startswith("desiredState") for m in masks)
                else "",
                "workloads": {
                    n: d
                    for n, d in self.workloads.items()
                    if _selects(masks, f"desiredState.workloads.{n}")
                },
                "configs": {
                    n: v
                    for n, v in self.configs.items()
                    if _selects(masks, f"desiredState.configs.{n}")
                },
            },
            "workload_states": states,
            "agents": agents,
        }

    def _all_instances(self) -> list[Instance]:
        found = list(self.instances.values())
        if self.leaving:
            found += self.leaving.values()
        return found

    # -- changes ------------------------------------------------------------------------

    def _target(
        self, set_workloads: dict[str, mf.Definition | None], set_configs: dict[str, Any]
    ) -> tuple[dict[str, mf.Definition], dict[str, Any], set[str], set[str]]:
        """The desired state after an update: (workloads, configs, affected workloads,
        changed configs). ``None`` as a value deletes."""
        workloads = dict(self.workloads)
        configs = dict(self.configs)
        for name, definition in set_workloads.items():
            if definition is None:
                workloads.pop(name, None)
            else:
                workloads[name] = definition
        changed_configs: set[str] = set()
        for name, value in set_configs.items():
            if value is None:
                if name in configs:
                    changed_configs.add(name)
                configs.pop(name, None)
            else:
                if configs.get(name) != value:
                    changed_configs.add(name)
                configs[name] = value
        affected = set(set_workloads) | {
            n for n, d in workloads.items() if changed_configs & set(d["configs"].values())
        }
        return workloads, configs, affected, changed_configs

    def _plan(self, payload: bytes, deleting: bool) -> dict[str, Any]:
        manifest = mf.parse(payload)
        sets = _sets(manifest, deleting)
        workloads, configs, affected, changed_configs = self._target(*sets)
        result: dict[str, Any] = {"operation": "delete" if deleting else "apply"}
        result["ankaios"] = {"verdict": "accepted"}
        report: dict[str, Any] = {}
        for name in sorted(affected):
            before_def = self.workloads.get(name)
            after_def = workloads.get(name)
            before = mf.render(before_def, self.configs) if before_def else None
            after = mf.render(after_def, configs) if after_def else None
            entry: dict[str, Any] = {"action": _action(before, after)}
            shown = after or before
            if shown is not None:
                entry["agent"] = shown["agent"]
            if entry["action"] == "replace" and before and after:
                entry["fields"] = {
                    k: {"from": before[k], "to": after[k]}
                    for k in after
                    if k != "configs" and before.get(k) != after[k]
                }
                causes = sorted(set(after["configs"].values()) & changed_configs)
                if causes:
                    entry["configs"] = causes
            if name in manifest.workloads or entry["action"] != "unchanged":
                report[name] = entry
        result["workloads"] = report
        result["configs"] = {
            name: {"action": _action(self.configs.get(name), configs.get(name))}
            for name in sorted(set(manifest.configs) | changed_configs)
        }
        try:
            _check_protected(manifest, deleting)
        except SimError as e:
            result["policy"] = {"verdict": "denied", "code": e.code, "message": e.message}
        else:
            result["policy"] = {"verdict": "allowed"}
        return result

    def _commit(
        self,
        set_workloads: dict[str, mf.Definition | None],
        set_configs: dict[str, Any],
        now: float,
        crash: bool,
    ) -> Answer:
        """Applies an update; the answer lists added and deleted instances as Ankaios would."""
        workloads, configs, affected, _ = self._target(set_workloads, set_configs)
        answer = Answer([])
        for name in sorted(affected):
            old = self.instances.get(name)
            definition = workloads.get(name)
            if definition is None:
                if old is not None:
                    answer.removed.append(old)
                continue
            rendered = mf.render(definition, configs)
            new_id = mf.instance_id(rendered)
            if old is not None and old.id == new_id:
                continue
            if old is not None:
                answer.removed.append(old)
            answer.added.append(
                Instance(name, rendered["agent"], new_id, "pending", "Initial", "", now, crash)
            )
        self.workloads, self.configs = workloads, configs
        for instance in answer.removed:
            del self.instances[instance.name]
            instance.state, instance.substate, instance.since = (
                "stopping",
                "RequestedAtRuntime",
                now,
            )
            if self.leaving is None:
                self.leaving = {}
            self.leaving[(instance.name, instance.id)] = instance
        for instance in answer.added:
            if not instance.agent:
                instance.state, instance.substate = "not_scheduled", "NotScheduled"
            self.instances[instance.name] = instance
        reply = {
            "added_workloads": [i.ref() for i in answer.added],
            "deleted_workloads": [i.ref() for i in answer.removed],
        }
        answer.messages.append(json.dumps(reply))
        return answer

    def gone(self, instance: Instance) -> bool:
        """A stopping instance has ended; whether the car still held it."""
        if self.leaving is None:
            return False
        found = self.leaving.pop((instance.name, instance.id), None) is not None
        if not self.leaving:
            self.leaving = None
        return found

    def _write(
        self, request: Request, now: float, reject: bool, crash: bool, entries: int | None
    ) -> Answer:
        manifest = mf.parse(request.payload)
        deleting = request.operation == DELETE
        _check_protected(manifest, deleting)
        entry = None
        if entries is not None:
            entry = self._begin(
                request, "delete" if deleting else "apply", manifest.workloads, manifest.configs
            )
            entry.manifest = request.payload.decode()
        if reject:
            answer = _error(_rejected())
        else:
            answer = self._commit(*_sets(manifest, deleting), now, crash and not deleting)
            answer.named = sorted(manifest.workloads)
        return self._journaled(answer, entry, entries)

    def _begin(
        self, request: Request, operation: str, workloads: dict[str, Any], configs: dict[str, Any]
    ) -> Entry:
        entry = Entry(
            seq=self.next_seq,
            request_id=request.request_id or "-",
            operation=operation,
            received_at=stamp_now(),
            manifest="",
            workloads=list(workloads),
            configs=list(configs),
            before_workloads={n: self.workloads[n] for n in workloads if n in self.workloads},
            before_configs={n: self.configs[n] for n in configs if n in self.configs},
            instances_before=[
                f"{i.name}.{i.id}.{i.agent}" for i in self.instances.values() if i.name in workloads
            ],
        )
        self.next_seq += 1
        return entry

    def _journaled(self, answer: Answer, entry: Entry | None, entries: int | None) -> Answer:
        if entry is None or entries is None:
            return answer
        entry.outcome = answer.code or "OK"
        entry.reply = answer.messages[0]
        if self.journal is None:
            self.journal = deque(maxlen=entries)
        self.journal.append(entry)
        answer.entry = entry
        return answer

    # -- journal ------------------------------------------------------------------------

    def _history(self, payload: bytes) -> dict[str, Any]:
        usage = 'a history request is empty, {}, {"limit": N} or {"entry": N}'
        selector = _selector(payload, {"limit", "entry"}, usage)
        for key, value in selector.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SimError(INVALID_REQUEST, f"{key} must be a number from 1")
        journal = list(self.journal or ())
        if "entry" in selector:
            found = self._entry(selector["entry"])
            if found is None:
                raise SimError(INVALID_REQUEST, f"the journal has no entry {selector['entry']}")
            return {"entries": [found.details()]}
        limit = min(selector.get("limit", HISTORY_LIMIT), HISTORY_LIMIT)
        return {"entries": [e.summary() for e in reversed(journal)][:limit]}

    def _entry(self, seq: int) -> Entry | None:
        return next((e for e in self.journal or () if e.seq == seq), None)

    def _rollback(self, request: Request, now: float, reject: bool, entries: int) -> Answer:
        usage = (
            'a rollback request is empty, {} for the last change, {"entry": N} or '
            '{"request_id": "..."} for one journal entry'
        )
        selector = _selector(request.payload, {"entry", "request_id"}, usage)
        if len(selector) > 1:
            raise SimError(
                INVALID_REQUEST, "name a journal entry by entry or by request_id, not both"
            )
        journal = list(self.journal or ())
        changes = [
            e
            for e in journal
            if e.operation in ("apply", "delete") and e.rolled_back_by is None and e.outcome == "OK"
        ]
        if "entry" in selector:
            if not isinstance(selector["entry"], int) or isinstance(selector["entry"], bool):
                raise SimError(INVALID_REQUEST, "entry must be a journal entry number")
            target = self._entry(selector["entry"])
            if target is None:
                raise SimError(INVALID_REQUEST, f"the journal has no entry {selector['entry']}")
        elif "request_id" in selector:
            wanted = selector["request_id"]
            target = next((e for e in reversed(journal) if e.request_id == wanted), None)
            if target is None:
                raise SimError(
                    INVALID_REQUEST, f"the journal has no entry for request id {wanted!r}"
                )
        else:
            target = changes[-1] if changes else None
            if target is None:
                raise SimError(INVALID_REQUEST, "the journal holds no change to roll back")
        if target.operation not in ("apply", "delete"):
            raise SimError(
                INVALID_REQUEST,
                f"entry {target.seq} is a {target.operation}, not a change to roll back",
            )
        if target.rolled_back_by is not None:
            raise SimError(
                INVALID_REQUEST,
                f"entry {target.seq} was already rolled back by entry {target.rolled_back_by}",
            )
        if target.outcome != "OK":
            raise SimError(
                INVALID_REQUEST,
                f"entry {target.seq} changed nothing (it was answered {target.outcome}); "
                "there is nothing to roll back",
            )
        names = set(target.workloads) | {f"config:{c}" for c in target.configs}
        for later in changes:
            if later.seq <= target.seq:
                continue
            shared = sorted(names & (set(later.workloads) | {f"config:{c}" for c in later.configs}))
            if shared:
                raise SimError(
                    INVALID_REQUEST,
                    f"entry {target.seq} is superseded: entry {later.seq} changed "
                    f"{', '.join(s.removeprefix('config:') for s in shared)} after it; "
                    f"roll back entry {later.seq} first",
                )
        set_workloads = {n: target.before_workloads.get(n) for n in target.workloads}
        set_configs = {n: target.before_configs.get(n) for n in target.configs}
        entry = self._begin(request, "rollback", set_workloads, set_configs)
        entry.rollback_of = target.seq
        entry.manifest = json.dumps(
            {
                "workloads": {
                    n: mf.proto_workload(d) for n, d in set_workloads.items() if d is not None
                },
                "configs": {n: mf.proto_config(v) for n, v in set_configs.items() if v is not None},
            }
        )
        if reject:
            return self._journaled(_error(_rejected()), entry, entries)
        answer = self._commit(set_workloads, set_configs, now, crash=False)
        reply = json.loads(answer.messages[0])
        reply["rolled_back"] = {"entry": target.seq, "request_id": target.request_id}
        answer.messages[0] = json.dumps(reply)
        target.rolled_back_by = entry.seq
        return self._journaled(answer, entry, entries)

    # -- duplicates and queueing --------------------------------------------------------

    def cached(self, key: tuple[str, str, bytes, bytes], now: float) -> str | None:
        if self.replies is None:
            return None
        while self.replies:
            oldest_key, (stored, _) = next(iter(self.replies.items()))
            if stored >= now - REPLY_CACHE_AGE:
                break
            del self.replies[oldest_key]
        found = self.replies.get(key)
        return found[1] if found else None

    def remember(self, key: tuple[str, str, bytes, bytes], reply: str, now: float) -> None:
        if self.replies is None:
            self.replies = OrderedDict()
        self.replies[key] = (now, reply)
        while len(self.replies) > REPLY_CACHE_ENTRIES:
            self.replies.popitem(last=False)

    def busy_error(self, limit: int) -> str:
        return SimError(
            BUSY, f"the queue is full ({limit} requests waiting); try again later"
        ).to_json()

    # -- logs ---------------------------------------------------------------------------

    def log_batch(self, payload: bytes) -> tuple[list[dict[str, str]], float]:
        """The lines a logs request gets now, and how long it wants to follow."""
        try:
            ask = json.loads(payload or b"{}")
        except (UnicodeDecodeError, ValueError, RecursionError):
            ask = None
        if not isinstance(ask, dict) or not isinstance(ask.get("workloads"), list):
            raise SimError(INVALID_REQUEST, 'a logs request is {"workloads": [...], ...}')
        unknown_keys = set(ask) - {"workloads", "tail", "since", "until", "follow"}
        if unknown_keys:
            raise SimError(INVALID_REQUEST, f"unknown keys: {', '.join(sorted(unknown_keys))}")
        names = [str(n) for n in ask["workloads"]]
        unknown = [n for n in names if n not in self.instances]
        if unknown:
            raise SimError(INVALID_REQUEST, f"unknown workloads: {', '.join(unknown)}")
        tail = ask.get("tail", LOG_MAX_LINES)
        if not isinstance(tail, int) or isinstance(tail, bool) or not 0 <= tail <= LOG_MAX_LINES:
            raise SimError(INVALID_REQUEST, f"tail must be a number from 0 to {LOG_MAX_LINES}")
        follow = ask.get("follow", 0) or 0
        if not isinstance(follow, int | float) or not 0 <= follow <= LOG_MAX_FOLLOW:
            raise SimError(INVALID_REQUEST, f"follow must be 0 to {LOG_MAX_FOLLOW:g} seconds")
        lines: list[dict[str, str]] = []
        for name in names:
            instance = self.instances[name]
            for line in instance.log_lines()[-tail:] if tail else []:
                lines.append({"workload": name, "instance_id": instance.id, "line": line})
        return lines, float(follow)


def stamp_now() -> str:
    return stamp(time.time())


def _selects(masks: list[str], path: str) -> bool:
    """Whether a field mask (``*`` for any one level) covers ``path``; none: everything."""
    if not masks:
        return True
    parts = path.split(".")
    for mask in masks:
        wanted = mask.split(".")
        if len(wanted) <= len(parts) and all(
            w in ("*", p) for w, p in zip(wanted, parts, strict=False)
        ):
            return True
    return False


def _sets(
    manifest: mf.Manifest, deleting: bool
) -> tuple[dict[str, mf.Definition | None], dict[str, Any]]:
    if deleting:
        return dict.fromkeys(manifest.workloads), dict.fromkeys(manifest.configs)
    return dict(manifest.workloads), dict(manifest.configs)


def _action(before: Any, after: Any) -> str:
    if before is None:
        return "unchanged" if after is None else "create"
    if after is None:
        return "delete"
    return "unchanged" if before == after else "replace"


def _check_protected(manifest: mf.Manifest, deleting: bool) -> None:
    if PROTECTED in manifest.workloads:
        verb = "deleted" if deleting else "replaced"
        raise SimError(
            POLICY_DENIED,
            f"workload {PROTECTED!r} may not be {verb} remotely (policy rule protectedWorkloads)",
        )


def _rejected() -> SimError:
    return SimError(REJECTED, "Update rejected: 'simulated by fleet-sim (--reject-ratio)'")


def _no_journal(operation: str) -> SimError:
    return SimError(
        NO_JOURNAL,
        f"{operation} needs the journal, and this connector keeps none (STATE_DIR is not set)",
    )


def _selector(payload: bytes, keys: set[str], usage: str) -> dict[str, Any]:
    if not payload.strip():
        return {}
    try:
        selector = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SimError(INVALID_REQUEST, usage) from None
    if not isinstance(selector, dict) or not set(selector) <= keys:
        raise SimError(INVALID_REQUEST, usage)
    return selector


def _field_masks(payload: bytes) -> list[str]:
    try:
        masks = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        masks = None
    if not isinstance(masks, list) or not all(isinstance(m, str) and m for m in masks):
        raise SimError(
            INVALID_REQUEST,
            'a state request is a JSON list of non-empty strings such as ["workloadStates"]; '
            "an empty list asks for the complete state",
        )
    return masks
