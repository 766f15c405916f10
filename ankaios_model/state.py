"""The Ankaios server's desired state: masked merge, validation, rendering, diffing.

Follows ``server/src/ankaios_server.rs`` and ``server/src/ankaios_server/server_state.rs``
of Ankaios 1.0 step by step, including the exact ``Error.message`` strings the server
sends, so that a client (the SDK) sees the same responses as from a real server. See
``docs/emulator-semantics.md`` for the sources and the choices made where they were
silent.
"""

from __future__ import annotations

import copy
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ankaios_model.rendering import InvalidState as _Invalid
from ankaios_model.rendering import RenderedWorkload
from ankaios_model.rendering import render_workload as _render_workload

from .tree import (
    API_VERSION,
    PREVIOUS_API_VERSION,
    ManifestError,
    SpecError,
    Tree,
    deserialize_state,
    parse_tags,
    proto_to_tree,
    spec_to_proto_form,
    state_from_manifest,
)

MAX_FIELD_LENGTH = 63
CONSTRAINT_FIELD_DESCRIPTION = (
    "Only a-z, A-Z, 0-9 chars, underscore (_), and hyphen (-) allowed. "
    "Maximum length is 63 characters."
)
# Always used with fullmatch(): Rust's regex `$` matches only at the very end, while
# Python's re.match(...$) would also accept a trailing newline ("nginx\n").
_FIELD_RE = re.compile(r"[a-zA-Z0-9_-]*")
_NON_EMPTY_FIELD_RE = re.compile(r"[a-zA-Z0-9_-]+")
_FILTER_MASK_RE = re.compile(r"(?:\*|[a-zA-Z0-9_-]+)(?:\.(?:\*|[a-zA-Z0-9_-]+))*")
_STATE_FILTER_PREFIX = r"workloadStates(\.(?:[a-zA-Z0-9_-]+|\*)){3}"
_STATE_FILTER_RE = re.compile(_STATE_FILTER_PREFIX + r"\.state")
_SUBSTATE_FILTER_RE = re.compile(_STATE_FILTER_PREFIX + r"\.subState")

__all__ = [
    "DesiredState",
    "ManifestError",
    "RenderedWorkload",
    "UpdateError",
    "UpdateOutcome",
    "filter_tree",
]


class UpdateError(Exception):
    """A rejected update; ``str()`` is exactly the ``Error.message`` Ankaios sends."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _rejected(reason: str) -> UpdateError:
    return UpdateError(f"Update rejected: '{reason}'")


def _invalid(reason: str) -> UpdateError:
    return _rejected(f"Resulting State is invalid, reason: '{reason}'")


@dataclass
class UpdateOutcome:
    """What an accepted update changed.

    ``agent_tags`` holds the tags of every agent named in the merged state's ``agents``
    map; Ankaios applies them only to agents that are currently connected.
    """

    added: list[RenderedWorkload] = field(default_factory=list)
    deleted: list[RenderedWorkload] = field(default_factory=list)
    agent_tags: dict[str, dict[str, str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# path helpers (common/src/state_manipulation/object.rs semantics)
# ---------------------------------------------------------------------------------------


def _parts(path: str) -> list[str]:
    return [] if path == "" else path.split(".")


_MISSING = object()


def _get(tree: Any, parts: Sequence[str]) -> Any:
    """Lookup through maps and (by numeric index) sequences; ``_MISSING`` if absent."""
    cur = tree
    for p in parts:
        if isinstance(cur, Mapping):
            if p not in cur:
                return _MISSING
            cur = cur[p]
        elif isinstance(cur, list):
            if not p.isdigit() or int(p) >= len(cur):
                return _MISSING
            cur = cur[int(p)]
        else:
            return _MISSING
    return cur


def _set(tree: dict[str, Any], parts: Sequence[str], value: Any) -> bool:
    """Set creating missing maps; fails on an empty path or a non-map parent."""
    if not parts:
        return False
    cur: Any = tree
    for p in parts[:-1]:
        if p not in cur:
            cur[p] = {}
        cur = cur[p]
        if not isinstance(cur, dict):
            return False
    cur[parts[-1]] = value
    return True


def _remove(tree: dict[str, Any], parts: Sequence[str]) -> bool:
    """Remove; absent leaf is fine, absent or non-map parent (or empty path) fails."""
    if not parts:
        return False
    cur: Any = tree
    for p in parts[:-1]:
        if not isinstance(cur, dict) or p not in cur:
            return False
        cur = cur[p]
    if not isinstance(cur, dict):
        return False
    cur.pop(parts[-1], None)
    return True


def _expand_wildcards(tree: Any, masks: Sequence[str]) -> list[list[str]]:
    """Wildcard expansion as ``Object::expand_wildcards``: maps only, absent paths dropped."""
    result: list[list[str]] = []
    todo: deque[tuple[list[str], Any, list[str]]] = deque(([], tree, _parts(m)) for m in masks)
    while todo:
        prefix, value, remaining = todo.popleft()
        valid = True
        while remaining:
            head, remaining = remaining[0], remaining[1:]
            if head == "*":
                valid = False
                if isinstance(value, Mapping):
                    for key, sub in value.items():
                        todo.appendleft(([*prefix, str(key)], sub, remaining))
                break
            prefix = [*prefix, head]
            if isinstance(value, Mapping) and head in value:
                value = value[head]
            else:
                valid = False
                break
        if valid:
            result.append(prefix)
    return result


def filter_tree(tree: Mapping[str, Any], field_masks: Sequence[str]) -> dict[str, Any]:
    """Filter a complete-state tree like ``get_complete_state_by_field_mask``.

    No masks -> everything. Otherwise ``desiredState.apiVersion`` is added when any mask
    starts with ``desiredState``, ``.state``/``.subState`` masks pull in their partner,
    ``*`` expands over map keys and absent paths are skipped. An empty-string mask makes
    the server's ``set`` fail, which it answers with an empty state.
    """
    if not field_masks:
        return copy.deepcopy(dict(tree))
    filters = list(field_masks)
    if any(f.startswith("desiredState") for f in filters):
        filters.append("desiredState.apiVersion")
    for f in list(filters):
        if _STATE_FILTER_RE.fullmatch(f):
            partner = f[: -len(".state")] + ".subState"
        elif _SUBSTATE_FILTER_RE.fullmatch(f):
            partner = f[: -len(".subState")] + ".state"
        else:
            continue
        if partner not in filters:
            filters.append(partner)
    out: dict[str, Any] = {}
    for parts in _expand_wildcards(tree, filters):
        value = _get(tree, parts)
        if value is _MISSING:
            continue
        if not _set(out, parts, copy.deepcopy(value)):
            return {}
    return out


# ---------------------------------------------------------------------------------------
# proto-to-spec conversion (empty update mask path)
# ---------------------------------------------------------------------------------------


def _nested(field_name: str, err: str) -> str:
    return f"Cannot convert field '{field_name}' to spec object: '{err}'."


def _convert_workload_proto(wl: Any) -> Tree:
    for name, rust in (
        ("agent", "agent"),
        ("runtime", "runtime"),
        ("runtimeConfig", "runtime_config"),
    ):
        if not wl.HasField(name):
            raise _Invalid(f"Missing field '{rust}'")
    for i_files in wl.files.files:
        if i_files.WhichOneof("FileContent") is None:
            raise _Invalid(_nested("files", _nested("files", "Missing field 'file_content'")))
    cia = wl.controlInterfaceAccess
    for key, rules in (("allow_rules", cia.allowRules), ("deny_rules", cia.denyRules)):
        for r in rules:
            if r.WhichOneof("AccessRightsRuleEnum") is None:
                raise _Invalid(
                    _nested(
                        "control_interface_access",
                        _nested(key, "Missing field 'access_rights_rule_enum'"),
                    )
                )
    return {}


def _check_config_item_proto(item: Any) -> None:
    kind = item.WhichOneof("ConfigItemEnum")
    if kind is None:
        raise _Invalid("Missing field 'config_item_enum'")
    if kind == "array":
        for v in item.array.values:
            try:
                _check_config_item_proto(v)
            except _Invalid as exc:
                raise _Invalid(_nested("values", str(exc))) from None
    elif kind == "object":
        for v in item.object.fields.values():
            try:
                _check_config_item_proto(v)
            except _Invalid as exc:
                raise _Invalid(_nested("fields", str(exc))) from None


def _convert_complete_state_proto(new_state: Any) -> tuple[Tree, dict[str, dict[str, str]]]:
    """``CompleteState -> CompleteStateSpec`` conversion of the empty-mask path.

    This is the generated ``TryFrom`` (not serde): ``desiredState`` and its ``workloads``
    are mandatory, as are a workload's ``agent``/``runtime``/``runtimeConfig``; the
    runtimeConfig is *not* trimmed here. Errors nest as ``Cannot convert field ...``.
    """
    if not new_state.HasField("desiredState"):
        raise _Invalid("Missing field 'desired_state'")
    ds = new_state.desiredState
    try:
        if not ds.HasField("workloads"):
            raise _Invalid("Missing field 'workloads'")
        for _name, wl in sorted(ds.workloads.workloads.items()):
            try:
                _convert_workload_proto(wl)
            except _Invalid as exc:
                raise _Invalid(_nested("workloads", _nested("workloads", str(exc)))) from None
        for _key, item in sorted(ds.configs.configs.items()):
            try:
                _check_config_item_proto(item)
            except _Invalid as exc:
                raise _Invalid(_nested("configs", _nested("configs", str(exc)))) from None
    except _Invalid as exc:
        raise _Invalid(_nested("desired_state", str(exc))) from None
    tree = proto_to_tree(new_state)
    state = deserialize_state(tree["desiredState"], trim_runtime_config=False)
    agents = {
        name: parse_tags(attrs.get("tags") or {}, f"agents.{name}.tags")
        for name, attrs in tree.get("agents", {}).items()
    }
    return state, agents


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


def _validate_config_map(configs: Mapping[str, Any]) -> None:
    for key, value in configs.items():
        if len(key) > MAX_FIELD_LENGTH or not _NON_EMPTY_FIELD_RE.fullmatch(key):
            raise UpdateError(
                f"Unsupported config item key '{key}'. {CONSTRAINT_FIELD_DESCRIPTION}"
            )
        if isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    _validate_config_map(item)
        elif isinstance(value, Mapping):
            _validate_config_map(value)


def _field_ok(value: str) -> bool:
    return bool(value) and len(value) <= MAX_FIELD_LENGTH and bool(_FIELD_RE.fullmatch(value))


def validate_pre_rendering(state: Mapping[str, Any]) -> None:
    """apiVersion, config keys, config aliases/references; messages sent without prefix."""
    version = state["apiVersion"]
    if version not in (API_VERSION, PREVIOUS_API_VERSION):
        raise UpdateError(
            f"Unsupported API version. Received '{version}', expected '{API_VERSION}'"
        )
    _validate_config_map(state["configs"])
    for wl in state["workloads"].values():
        for alias, ref in wl["configs"].items():
            if not _field_ok(alias):
                raise UpdateError(
                    f"Unsupported config alias '{alias}'. {CONSTRAINT_FIELD_DESCRIPTION}"
                )
            if not _field_ok(ref):
                raise UpdateError(
                    f"Unsupported config reference key '{ref}'. {CONSTRAINT_FIELD_DESCRIPTION}"
                )


def _byte_len(value: str) -> int:
    """Rust's ``str::len()``: the UTF-8 length, which the length messages report."""
    return len(value.encode("utf-8", "surrogatepass"))


def _field_error(value: str) -> str | None:
    if not value:
        return "Is empty."
    if not _FIELD_RE.fullmatch(value):
        return "Expected to have characters in [a-zA-Z0-9_-]."
    if len(value) > MAX_FIELD_LENGTH:
        return f"Length {len(value)} exceeds the maximum limit of {MAX_FIELD_LENGTH} characters."
    return None


def _workload_name_error(name: str) -> str | None:
    err = _field_error(name)
    return None if err is None else f"Unsupported workload name '{name}'. {err}"


def _log_rule_name_error(pattern: str) -> str | None:
    """``validate_log_rule_workload_name_pattern_format`` (control_interface_access.rs)."""
    stars = pattern.count("*")
    if stars > 1:
        # Ankaios returns this one early, so it lacks the "Log rule validation filed" prefix.
        return "Expected at most one '*' symbol."
    if stars == 1:
        pos = pattern.index("*")
        prefix, suffix = pattern[:pos], pattern[pos + 1 :]
        length = _byte_len(pattern)
        if length > MAX_FIELD_LENGTH + 1:
            inner: str | None = (
                f"Filter length {length} exceeds the maximum limit of "
                f"{MAX_FIELD_LENGTH + 1} characters."
            )
        elif not _FIELD_RE.fullmatch(prefix) or not _FIELD_RE.fullmatch(suffix):
            inner = "Expected to have characters in [a-zA-Z0-9_-]."
        else:
            inner = None
        err = (
            None
            if inner is None
            else f"Unsupported workload name filter with wildcard '{pattern}'. {inner}"
        )
    else:
        err = _workload_name_error(pattern)
    # "filed" is Ankaios' own spelling.
    return None if err is None else f"Log rule validation filed: {err}"


def validate_access_rules(access: Mapping[str, Any]) -> str | None:
    """Format check of ``controlInterfaceAccess`` (allow rules first, then deny rules)."""
    for rule in [*access.get("allowRules", []), *access.get("denyRules", [])]:
        if rule.get("type") == "StateRule":
            for mask in rule.get("filterMasks", []):
                if mask == "":
                    return "Empty filter masks are not allowed in Control Interface access rules"
                if not _FILTER_MASK_RE.fullmatch(mask):
                    return (
                        f"Unsupported filter mask '{mask}'. Only \".\" separated sequences "
                        'allowed where each part is either a wildcard "*" or chars in '
                        "[a-zA-Z0-9_-]"
                    )
        elif rule.get("type") == "LogRule":
            for name in rule.get("workloadNames", []):
                err = _log_rule_name_error(name)
                if err is not None:
                    return err
    return None


def _validate_rendered(wl: RenderedWorkload) -> str | None:
    err = _workload_name_error(wl.name)
    if err is not None:
        return err
    if not _FIELD_RE.fullmatch(wl.agent):
        return f"Unsupported agent name '{wl.agent}'. {CONSTRAINT_FIELD_DESCRIPTION}"
    return validate_access_rules(wl.control_interface_access)


# ---------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------


def _render_all(state: Mapping[str, Any]) -> dict[str, RenderedWorkload]:
    """Render and validate every workload; raises ``_Invalid`` with the server's reason."""
    rendered = {
        name: _render_workload(name, wl, state["configs"])
        for name, wl in sorted(state["workloads"].items())
    }
    for wl in rendered.values():
        err = _validate_rendered(wl)
        if err is not None:
            raise _Invalid(err)
    return rendered


def _find_cycle(workloads: Mapping[str, Any], start_nodes: Sequence[str]) -> str | None:
    """Iterative DFS of ``cycle_check::dfs``; dependencies on unknown workloads are skipped."""
    stack: deque[str] = deque()
    visited: set[str] = set()
    path: deque[str] = deque()
    for wl_name in sorted(start_nodes):
        if wl_name in visited:
            continue
        stack.appendleft(wl_name)
        while stack:
            head = stack[0]
            if head in workloads:
                if head not in visited:
                    visited.add(head)
                    path.append(head)
                else:
                    path.pop()
                    stack.popleft()
                for dep in sorted(workloads[head]["dependencies"]):
                    if dep not in visited:
                        stack.appendleft(dep)
                    elif dep in path:
                        return str(dep)
            else:
                stack.popleft()
    return None


def _diff(
    old: Mapping[str, RenderedWorkload], new: Mapping[str, RenderedWorkload]
) -> tuple[list[RenderedWorkload], list[RenderedWorkload]]:
    added: list[RenderedWorkload] = []
    deleted: list[RenderedWorkload] = []
    for name in sorted(old):
        if name in new:
            if old[name] != new[name]:
                added.append(new[name])
                deleted.append(old[name])
        else:
            deleted.append(old[name])
    for name in sorted(new):
        if name not in old:
            added.append(new[name])
    added.sort(key=lambda w: w.name)
    return added, deleted


# ---------------------------------------------------------------------------------------
# the desired state
# ---------------------------------------------------------------------------------------


def _empty_state() -> Tree:
    return {"apiVersion": API_VERSION, "workloads": {}, "configs": {}}


class DesiredState:
    """The server's desired state plus its rendered workloads.

    Kept in spec form (every workload field present) because that is what the server's
    masked merge starts from.
    """

    def __init__(self) -> None:
        self._state: Tree = _empty_state()
        self._rendered: dict[str, RenderedWorkload] = {}

    @classmethod
    def from_manifest(cls, text_or_dict: str | bytes | Mapping[str, Any]) -> DesiredState:
        """A startup manifest, checked like the server's startup (errors without prefix)."""
        state = state_from_manifest(text_or_dict)
        validate_pre_rendering(state)
        try:
            rendered = _render_all(state)
        except _Invalid as exc:
            raise UpdateError(f"Resulting State is invalid, reason: '{exc}'") from None
        starts = [n for n, w in rendered.items() if w.dependencies]
        cycle = _find_cycle(state["workloads"], starts)
        if cycle is not None:
            raise UpdateError(f"workload dependency '{cycle}' is part of a cycle.")
        ds = cls()
        ds._state = state
        ds._rendered = rendered
        return ds

    @property
    def api_version(self) -> str:
        return str(self._state["apiVersion"])

    def rendered(self) -> dict[str, RenderedWorkload]:
        return dict(self._rendered)

    def spec(self) -> Tree:
        """The stored (unrendered) desired state in spec form."""
        return copy.deepcopy(self._state)

    def to_tree(self) -> Tree:
        """The ``desiredState`` subtree as the server emits it (proto form)."""
        return spec_to_proto_form(self._state)

    def _merge(
        self, new_state: Any, update_mask: Sequence[str]
    ) -> tuple[Tree, dict[str, dict[str, str]]]:
        if not update_mask:
            try:
                return _convert_complete_state_proto(new_state)
            except _Invalid as exc:
                raise _invalid(f"Could not parse into CompleteState: '{exc}'") from None
            except SpecError as exc:
                raise _invalid(f"Could not parse into CompleteState: '{exc}'") from None
        current: Tree = {
            "desiredState": copy.deepcopy(self._state),
            "workloadStates": {},
            "agents": {},
        }
        update = proto_to_tree(new_state)
        for mask in update_mask:
            parts = _parts(mask)
            value = _get(update, parts)
            ok = (
                _set(current, parts, copy.deepcopy(value))
                if value is not _MISSING
                else _remove(current, parts)
            )
            if not ok:
                raise _rejected(f"Could not find field {mask}")
        try:
            desired = current.get("desiredState", _MISSING)
            state = deserialize_state(_empty_state() if desired is _MISSING else desired)
            agents_tree = current.get("agents") or {}
            if not isinstance(agents_tree, Mapping):
                raise SpecError("invalid type: expected a map")
            agents: dict[str, dict[str, str]] = {}
            for name, attrs in agents_tree.items():
                tags = attrs.get("tags") if isinstance(attrs, Mapping) else None
                agents[str(name)] = parse_tags(tags or {}, "")
        except SpecError as exc:
            raise _invalid(f"Could not parse into CompleteState: '{exc}'") from None
        return state, agents

    def update(self, new_state: Any | None, update_mask: Sequence[str]) -> UpdateOutcome:
        """Apply an ``UpdateStateRequest`` atomically (nothing changes on error)."""
        if new_state is None:
            raise UpdateError("The UpdateStateRequest does not contain a new state")
        state, agent_tags = self._merge(new_state, list(update_mask))
        validate_pre_rendering(state)
        try:
            rendered = _render_all(state)
        except _Invalid as exc:
            raise _invalid(str(exc)) from None
        added, deleted = _diff(self._rendered, rendered)
        if added or deleted:
            starts = [w.name for w in added if w.dependencies]
            cycle = _find_cycle(state["workloads"], starts)
            if cycle is not None:
                raise _rejected(f"workload dependency '{cycle}' is part of a cycle.")
        self._state = state
        self._rendered = rendered
        return UpdateOutcome(added=added, deleted=deleted, agent_tags=agent_tags)
