"""Conversion between ``ank_base.CompleteState`` protobuf messages and plain trees.

Ankaios does all of its state manipulation (update masks, field-mask filtering) on the
YAML/JSON serialisation of the state, not on the protobuf objects. This model (and so the
emulator) therefore works on the same serialisation: nested ``dict``/``list``/``str``
values ("trees") where the protobuf wrapper messages are flattened exactly as Ankaios'
serde annotations flatten them (see ``docs/emulator-semantics.md``).

Two shapes of a workload tree exist, as in Ankaios:

* the *proto form* (``proto_to_tree``): unset optional fields and empty maps/lists are left
  out, like the serde serialisation of the ``ank_base`` protobuf types;
* the *spec form* (``deserialize_state``): every field present with its default, like the
  serialisation of Ankaios' internal ``StateSpec``. The server keeps its desired state in
  this form, which decides whether e.g. ``desiredState.workloads.w.tags.k`` can be set.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml
from ankaios_sdk._protos import _ank_base as ank_base

Tree = dict[str, Any]

API_VERSION = "v1"
PREVIOUS_API_VERSION = "v0.1"

RESTART_POLICIES = ("NEVER", "ON_FAILURE", "ALWAYS")
ADD_CONDITIONS = ("ADD_COND_RUNNING", "ADD_COND_SUCCEEDED", "ADD_COND_FAILED")
# proto number -> serialised name (serde renames of ReadWriteEnum in Ankaios).
# Unicode White_Space, what Rust's str::trim() removes. Python's str.strip() also removes
# U+001C..U+001F (isspace() counts them), which Rust keeps.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def rust_trim(text: str) -> str:
    """``str::trim()`` of Rust, e.g. serde's ``trim_string`` on runtimeConfig."""
    return text.strip(RUST_WHITESPACE)


_RW_TO_NAME = {0: "Nothing", 1: "Read", 2: "Write", 5: "ReadWrite"}
_RW_FROM_NAME = {v: k for k, v in _RW_TO_NAME.items()}
OPERATIONS = tuple(_RW_FROM_NAME)

# ExecutionState oneof field -> (state name, {proto enum number: subState name}).
# Names are the prost variant names (enum prefix stripped), which is what serde emits.
_EXEC_STATES: dict[str, tuple[str, dict[int, str]]] = {
    "agentDisconnected": ("AgentDisconnected", {0: "AgentDisconnected"}),
    "pending": (
        "Pending",
        {0: "Initial", 1: "WaitingToStart", 2: "Starting", 8: "StartingFailed"},
    ),
    "running": ("Running", {0: "Ok"}),
    "stopping": (
        "Stopping",
        {0: "Stopping", 1: "WaitingToStop", 2: "RequestedAtRuntime", 8: "DeleteFailed"},
    ),
    "succeeded": ("Succeeded", {0: "Ok"}),
    "failed": ("Failed", {0: "ExecFailed", 1: "Unknown", 2: "Lost"}),
    "notScheduled": ("NotScheduled", {0: "NotScheduled"}),
    "removed": ("Removed", {0: "Removed"}),
}
_STATE_NAME_TO_FIELD = {name: (field, subs) for field, (name, subs) in _EXEC_STATES.items()}

WORKLOAD_STATE_NAMES = tuple(_STATE_NAME_TO_FIELD)


class ManifestError(Exception):
    """A manifest that Ankaios (server startup / ``ank apply``) would refuse to parse."""


class SpecError(Exception):
    """Deserialisation of a tree into Ankaios' spec types failed.

    ``str()`` is the bare serde-style reason; ``path`` says where, for manifest messages
    (Ankaios' ``serde_yaml::from_value`` errors on the update path carry no location).
    """

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path

    def located(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


# ---------------------------------------------------------------------------------------
# proto -> tree
# ---------------------------------------------------------------------------------------


def _config_item_to_tree(item: Any) -> Any:
    kind = item.WhichOneof("ConfigItemEnum")
    if kind == "String":
        return item.String
    if kind == "array":
        return [_config_item_to_tree(v) for v in item.array.values]
    if kind == "object":
        return {k: _config_item_to_tree(v) for k, v in sorted(item.object.fields.items())}
    # An item without a variant serialises as null; deserialising it into the spec then
    # fails like in Ankaios (this is what the SDK makes of ``value: 1883``).
    return None


def _rule_to_tree(rule: Any) -> Tree:
    kind = rule.WhichOneof("AccessRightsRuleEnum")
    if kind == "stateRule":
        return {
            "type": "StateRule",
            "operation": _RW_TO_NAME.get(rule.stateRule.operation, "Nothing"),
            "filterMasks": list(rule.stateRule.filterMasks),
        }
    if kind == "logRule":
        return {"type": "LogRule", "workloadNames": list(rule.logRule.workloadNames)}
    return {}


def _workload_to_tree(wl: Any) -> Tree:
    out: Tree = {}
    if wl.HasField("agent"):
        out["agent"] = wl.agent
    if wl.HasField("restartPolicy"):
        out["restartPolicy"] = RESTART_POLICIES[wl.restartPolicy]
    if wl.dependencies.dependencies:
        out["dependencies"] = {
            k: ADD_CONDITIONS[v] for k, v in sorted(wl.dependencies.dependencies.items())
        }
    if wl.tags.tags:
        out["tags"] = dict(sorted(wl.tags.tags.items()))
    if wl.HasField("runtime"):
        out["runtime"] = wl.runtime
    if wl.HasField("runtimeConfig"):
        out["runtimeConfig"] = wl.runtimeConfig
    cia = wl.controlInterfaceAccess
    if cia.allowRules or cia.denyRules:
        access: Tree = {}
        if cia.allowRules:
            access["allowRules"] = [_rule_to_tree(r) for r in cia.allowRules]
        if cia.denyRules:
            access["denyRules"] = [_rule_to_tree(r) for r in cia.denyRules]
        out["controlInterfaceAccess"] = access
    if wl.configs.configs:
        out["configs"] = dict(sorted(wl.configs.configs.items()))
    if wl.files.files:
        files = []
        for f in wl.files.files:
            entry: Tree = {"mountPoint": f.mountPoint}
            kind = f.WhichOneof("FileContent")
            if kind is not None:
                entry[kind] = getattr(f, kind)
            files.append(entry)
        out["files"] = files
    return out


def _execution_state_to_tree(es: Any) -> Tree:
    out: Tree = {}
    kind = es.WhichOneof("ExecutionStateEnum")
    if kind is not None:
        name, subs = _EXEC_STATES[kind]
        out["state"] = name
        out["subState"] = subs.get(getattr(es, kind), str(getattr(es, kind)))
    if es.HasField("additionalInfo"):
        out["additionalInfo"] = es.additionalInfo
    return out


def proto_to_tree(state: Any) -> Tree:
    """Serialise a ``CompleteState`` the way Ankaios serialises the protobuf type.

    Unset optional fields and empty wrapper maps are omitted, because Ankaios' masked
    merge decides between "set" and "remove" on exactly that presence.
    """
    out: Tree = {}
    if state.HasField("desiredState"):
        ds = state.desiredState
        desired: Tree = {"apiVersion": ds.apiVersion}
        if ds.HasField("workloads"):
            desired["workloads"] = {
                name: _workload_to_tree(wl) for name, wl in sorted(ds.workloads.workloads.items())
            }
        if ds.configs.configs:
            desired["configs"] = {
                k: _config_item_to_tree(v) for k, v in sorted(ds.configs.configs.items())
            }
        out["desiredState"] = desired
    if state.HasField("workloadStates"):
        ws: Tree = {}
        for agent, per_agent in sorted(state.workloadStates.agentStateMap.items()):
            ws[agent] = {
                wl: {
                    iid: _execution_state_to_tree(es)
                    for iid, es in sorted(per_id.idStateMap.items())
                }
                for wl, per_id in sorted(per_agent.wlNameStateMap.items())
            }
        out["workloadStates"] = ws
    if state.HasField("agents"):
        agents: Tree = {}
        for name, attrs in sorted(state.agents.agents.items()):
            a: Tree = {}
            if attrs.HasField("status"):
                status: Tree = {}
                if attrs.status.HasField("cpu_usage"):
                    status["cpuUsage"] = attrs.status.cpu_usage.cpu_usage
                if attrs.status.HasField("free_memory"):
                    status["freeMemory"] = attrs.status.free_memory.free_memory
                a["status"] = status
            if attrs.tags.tags:
                a["tags"] = dict(sorted(attrs.tags.tags.items()))
            agents[name] = a
        out["agents"] = agents
    return out


# ---------------------------------------------------------------------------------------
# tree -> proto
# ---------------------------------------------------------------------------------------


def _tags_as_map(tags: Any) -> dict[str, str]:
    if isinstance(tags, list):
        return {str(e["key"]): str(e["value"]) for e in tags}
    return {str(k): str(v) for k, v in (tags or {}).items()}


def _fill_config_item(item: Any, value: Any) -> None:
    if isinstance(value, str):
        item.String = value
    elif isinstance(value, list):
        item.array.SetInParent()
        for v in value:
            _fill_config_item(item.array.values.add(), v)
    elif isinstance(value, Mapping):
        item.object.SetInParent()
        for k, v in value.items():
            _fill_config_item(item.object.fields[str(k)], v)
    # anything else: an item without a variant, as the SDK produces for non-strings


def _fill_rule(msg: Any, rule: Mapping[str, Any]) -> None:
    kind = rule.get("type")
    if kind == "StateRule":
        masks = rule.get("filterMasks", rule.get("filterMask", []))
        msg.stateRule.operation = _RW_FROM_NAME.get(str(rule.get("operation")), 0)
        msg.stateRule.filterMasks.extend(str(m) for m in masks or [])
    elif kind == "LogRule":
        msg.logRule.workloadNames.extend(str(n) for n in rule.get("workloadNames") or [])


def _fill_workload(msg: Any, wl: Mapping[str, Any]) -> None:
    msg.SetInParent()
    if "agent" in wl and wl["agent"] is not None:
        msg.agent = wl["agent"]
    if wl.get("restartPolicy") is not None:
        msg.restartPolicy = RESTART_POLICIES.index(wl["restartPolicy"])
    for k, v in (wl.get("dependencies") or {}).items():
        msg.dependencies.dependencies[k] = ADD_CONDITIONS.index(v)
    for k, v in _tags_as_map(wl.get("tags")).items():
        msg.tags.tags[k] = v
    if wl.get("runtime") is not None:
        msg.runtime = wl["runtime"]
    if wl.get("runtimeConfig") is not None:
        msg.runtimeConfig = wl["runtimeConfig"]
    cia = wl.get("controlInterfaceAccess") or {}
    for rule in cia.get("allowRules") or []:
        _fill_rule(msg.controlInterfaceAccess.allowRules.add(), rule)
    for rule in cia.get("denyRules") or []:
        _fill_rule(msg.controlInterfaceAccess.denyRules.add(), rule)
    for k, v in (wl.get("configs") or {}).items():
        msg.configs.configs[k] = v
    for f in wl.get("files") or []:
        fm = msg.files.files.add()
        fm.mountPoint = f.get("mountPoint", "")
        if "data" in f:
            fm.data = f["data"]
        elif "binaryData" in f:
            fm.binaryData = f["binaryData"]


def tree_to_proto(tree: Mapping[str, Any]) -> Any:
    """Build a ``CompleteState`` from a tree in proto or spec form.

    Presence is preserved: a key present in the tree becomes a set field, so that
    ``tree_to_proto(proto_to_tree(m)) == m`` for every message the emulator produces.
    """
    cs = ank_base.CompleteState()
    if "desiredState" in tree and tree["desiredState"] is not None:
        ds = tree["desiredState"]
        cs.desiredState.SetInParent()
        cs.desiredState.apiVersion = str(ds.get("apiVersion", ""))
        if "workloads" in ds and ds["workloads"] is not None:
            cs.desiredState.workloads.SetInParent()
            for name, wl in ds["workloads"].items():
                _fill_workload(cs.desiredState.workloads.workloads[name], wl or {})
        for name, value in (ds.get("configs") or {}).items():
            item = cs.desiredState.configs.configs[name]
            item.SetInParent()
            _fill_config_item(item, value)
    if "workloadStates" in tree and tree["workloadStates"] is not None:
        cs.workloadStates.SetInParent()
        for agent, per_agent in tree["workloadStates"].items():
            amsg = cs.workloadStates.agentStateMap[agent]
            amsg.SetInParent()
            for wl, per_id in (per_agent or {}).items():
                wmsg = amsg.wlNameStateMap[wl]
                wmsg.SetInParent()
                for iid, es_tree in (per_id or {}).items():
                    emsg = wmsg.idStateMap[iid]
                    emsg.SetInParent()
                    es = es_tree or {}
                    if "state" in es:
                        field, subs = _STATE_NAME_TO_FIELD[es["state"]]
                        rev = {v: k for k, v in subs.items()}
                        setattr(emsg, field, rev.get(es.get("subState", ""), 0))
                    if "additionalInfo" in es and es["additionalInfo"] is not None:
                        emsg.additionalInfo = es["additionalInfo"]
    if "agents" in tree and tree["agents"] is not None:
        cs.agents.SetInParent()
        for name, attrs_tree in tree["agents"].items():
            amsg = cs.agents.agents[name]
            amsg.SetInParent()
            attrs = attrs_tree or {}
            status = attrs.get("status")
            if status is not None:
                amsg.status.SetInParent()
                if "cpuUsage" in status:
                    amsg.status.cpu_usage.cpu_usage = int(status["cpuUsage"])
                if "freeMemory" in status:
                    amsg.status.free_memory.free_memory = int(status["freeMemory"])
            for k, v in _tags_as_map(attrs.get("tags")).items():
                amsg.tags.tags[k] = v
    return cs


# ---------------------------------------------------------------------------------------
# tree -> spec form (serde semantics of Ankaios' StateSpec)
# ---------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "unit value"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


def _expect_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"invalid type: {_type_name(value)}, expected a string", path)
    return value


def _expect_map(value: Any, path: str, what: str = "a map") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"invalid type: {_type_name(value)}, expected {what}", path)
    return value


def _expect_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(f"invalid type: {_type_name(value)}, expected a sequence", path)
    return value


def _required(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise SpecError(f"missing field `{key}`", path)
    return obj[key]


def _enum(value: Any, allowed: tuple[str, ...], path: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        if not isinstance(value, str):
            raise SpecError(f"invalid type: {_type_name(value)}, expected value", path)
        expected = ", ".join(f"`{a}`" for a in allowed[:-1]) + f" or `{allowed[-1]}`"
        if len(allowed) > 2:
            expected = ", ".join(f"`{a}`" for a in allowed)
        raise SpecError(f"unknown variant `{value}`, expected one of {expected}", path)
    return value


def _str_map(value: Any, path: str) -> dict[str, str]:
    m = _expect_map(value, path)
    return {str(k): _expect_str(v, f"{path}.{k}") for k, v in m.items()}


def parse_tags(value: Any, path: str) -> dict[str, str]:
    """Tags accept both v1 mapping and v0.1 ``[{key, value}]`` forms (tag adapter)."""
    if isinstance(value, list):
        out: dict[str, str] = {}
        for i, entry in enumerate(value):
            e = _expect_map(entry, f"{path}[{i}]")
            out[_expect_str(_required(e, "key", f"{path}[{i}]"), f"{path}[{i}].key")] = _expect_str(
                _required(e, "value", f"{path}[{i}]"), f"{path}[{i}].value"
            )
        return out
    if isinstance(value, Mapping):
        return _str_map(value, path)
    raise SpecError("data did not match any variant of untagged enum MapOrVec", path)


def parse_config_item(value: Any, path: str) -> Any:
    """Config items are strings, sequences or maps; other scalars are refused.

    ``ConfigItemEnumSpec`` is an untagged enum of String/Array/Object, so serde rejects
    numbers, booleans and null with the untagged-enum message.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [parse_config_item(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): parse_config_item(v, f"{path}.{k}") for k, v in value.items()}
    raise SpecError("data did not match any variant of untagged enum ConfigItemEnumSpec", path)


def _parse_rule(value: Any, path: str) -> Tree:
    r = _expect_map(value, path, "internally tagged enum AccessRightsRuleEnumSpec")
    kind = _required(r, "type", path)
    if kind == "StateRule":
        op = _enum(_required(r, "operation", path), OPERATIONS, f"{path}.operation")
        if "filterMasks" in r:
            masks = r["filterMasks"]
        elif "filterMask" in r:  # serde alias kept for apiVersion v0.1
            masks = r["filterMask"]
        else:
            raise SpecError("missing field `filterMasks`", path)
        return {
            "type": "StateRule",
            "operation": op,
            "filterMasks": [
                _expect_str(m, f"{path}.filterMasks[{i}]")
                for i, m in enumerate(_expect_list(masks, f"{path}.filterMasks"))
            ],
        }
    if kind == "LogRule":
        names = _expect_list(_required(r, "workloadNames", path), f"{path}.workloadNames")
        return {
            "type": "LogRule",
            "workloadNames": [
                _expect_str(n, f"{path}.workloadNames[{i}]") for i, n in enumerate(names)
            ],
        }
    raise SpecError(f"unknown variant `{kind}`, expected `StateRule` or `LogRule`", path)


def _parse_access(value: Any, path: str) -> Tree:
    if value is None:
        return {"allowRules": [], "denyRules": []}
    a = _expect_map(value, path)
    out: Tree = {}
    for key in ("allowRules", "denyRules"):
        rules = a.get(key)
        out[key] = (
            []
            if rules is None
            else [
                _parse_rule(r, f"{path}.{key}[{i}]")
                for i, r in enumerate(_expect_list(rules, f"{path}.{key}"))
            ]
        )
    return out


def _parse_files(value: Any, path: str) -> list[Tree]:
    out: list[Tree] = []
    for i, f in enumerate(_expect_list(value, path)):
        fp = f"{path}[{i}]"
        m = _expect_map(f, fp)
        entry: Tree = {"mountPoint": _expect_str(_required(m, "mountPoint", fp), fp)}
        if "data" in m:
            entry["data"] = _expect_str(m["data"], f"{fp}.data")
        elif "binaryData" in m:
            entry["binaryData"] = _expect_str(m["binaryData"], f"{fp}.binaryData")
        else:
            raise SpecError("data did not match any variant of untagged enum FileContentSpec", fp)
        out.append(entry)
    return out


def parse_workload(value: Any, path: str, *, trim_runtime_config: bool = True) -> Tree:
    """One workload in spec form, every field present.

    ``agent``, ``runtime`` and ``runtimeConfig`` are mandatory (``agent: ""`` is allowed and
    means "not scheduled"); the runtimeConfig is trimmed by serde (``trim_string``).
    """
    wl = _expect_map(value, path, "struct WorkloadSpec")
    agent = _expect_str(_required(wl, "agent", path), f"{path}.agent")
    runtime = _expect_str(_required(wl, "runtime", path), f"{path}.runtime")
    runtime_config = _expect_str(_required(wl, "runtimeConfig", path), f"{path}.runtimeConfig")
    if trim_runtime_config:
        runtime_config = rust_trim(runtime_config)
    restart = wl.get("restartPolicy")
    deps = wl.get("dependencies")
    return {
        "agent": agent,
        "tags": parse_tags(wl["tags"], f"{path}.tags") if wl.get("tags") is not None else {},
        "dependencies": {
            str(k): _enum(v, ADD_CONDITIONS, f"{path}.dependencies.{k}")
            for k, v in (_expect_map(deps, f"{path}.dependencies") if deps else {}).items()
        },
        "restartPolicy": "NEVER"
        if restart is None
        else _enum(restart, RESTART_POLICIES, f"{path}.restartPolicy"),
        "runtime": runtime,
        "runtimeConfig": runtime_config,
        "controlInterfaceAccess": _parse_access(
            wl.get("controlInterfaceAccess"), f"{path}.controlInterfaceAccess"
        ),
        "configs": _str_map(wl["configs"], f"{path}.configs")
        if wl.get("configs") is not None
        else {},
        "files": _parse_files(wl["files"], f"{path}.files") if wl.get("files") is not None else [],
    }


def deserialize_state(value: Any, path: str = "", *, trim_runtime_config: bool = True) -> Tree:
    """Deserialise a ``desiredState`` tree like serde does into ``StateSpec``.

    ``apiVersion`` is required; ``workloads`` and ``configs`` default to empty maps.
    Unknown keys are ignored (no ``deny_unknown_fields`` in Ankaios).
    """
    st = _expect_map(value, path, "struct StateSpec")
    api = _expect_str(_required(st, "apiVersion", path), _join(path, "apiVersion"))
    wls = st.get("workloads")
    cfgs = st.get("configs")
    wpath = _join(path, "workloads")
    cpath = _join(path, "configs")
    return {
        "apiVersion": api,
        "workloads": {
            str(n): parse_workload(w, f"{wpath}.{n}", trim_runtime_config=trim_runtime_config)
            for n, w in (_expect_map(wls, wpath) if wls is not None else {}).items()
        },
        "configs": {
            str(k): parse_config_item(v, f"{cpath}.{k}")
            for k, v in (_expect_map(cfgs, cpath) if cfgs is not None else {}).items()
        },
    }


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------------------


def _load(text_or_dict: str | bytes | Mapping[str, Any]) -> Any:
    if isinstance(text_or_dict, Mapping):
        return copy.deepcopy(dict(text_or_dict))
    try:
        return yaml.safe_load(text_or_dict)
    except yaml.YAMLError as exc:
        raise ManifestError(f"Failed to parse YAML: {exc}") from exc


def validate_tags_form(api_version: str, manifest: Mapping[str, Any]) -> None:
    """The list-vs-map rule for tags that the server (startup) and ``ank apply`` apply.

    Only ``v1`` (mapping) and ``v0.1`` (sequence) are checked; other versions pass here
    and fail the apiVersion check later.
    """
    workloads = manifest.get("workloads")
    if not isinstance(workloads, Mapping):
        return
    for name, wl in workloads.items():
        if not isinstance(wl, Mapping) or "tags" not in wl:
            continue
        tags = wl["tags"]
        if api_version == API_VERSION and not isinstance(tags, Mapping):
            raise ManifestError(
                f"For API version '{API_VERSION}', tags must be specified as a mapping "
                f"(key-value pairs). Found tags as sequence for workload '{name}'."
            )
        if api_version == PREVIOUS_API_VERSION and not isinstance(tags, list):
            raise ManifestError(
                f"For API version '{PREVIOUS_API_VERSION}', tags must be specified as a "
                f"sequence (list of key-value entries). Found tags as mapping for workload "
                f"'{name}'."
            )


def state_from_manifest(text_or_dict: str | bytes | Mapping[str, Any]) -> Tree:
    """Parse a manifest (``apiVersion`` v0.1 or v1 syntax) into a spec-form desired state.

    Mirrors the Ankaios server's startup-manifest parsing: tags form checked against the
    declared apiVersion, then serde deserialisation into ``StateSpec`` (``filterMask`` and
    ``filterMasks`` both accepted, LogRules, ``files`` as ``{mountPoint, data|binaryData}``,
    config values must be strings, sequences or maps). The apiVersion value itself is
    validated by ``DesiredState`` like any update.
    """
    data = _load(text_or_dict)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ManifestError(f"Invalid manifest: invalid type: {_type_name(data)}, expected a map")
    api = data.get("apiVersion")
    validate_tags_form(api if isinstance(api, str) else "", data)
    try:
        return deserialize_state(data)
    except SpecError as exc:
        raise ManifestError(f"Invalid manifest: {exc.located()}") from exc


def spec_to_proto_form(state: Mapping[str, Any]) -> Tree:
    """Spec-form desired state -> the proto-form tree the server emits for it.

    The server converts its spec state to protobuf (every optional set) before filtering,
    so empty tags/dependencies/configs/files/access rules disappear but ``agent``,
    ``restartPolicy``, ``runtime`` and ``runtimeConfig`` are always present.
    """
    workloads: Tree = {}
    for name, wl in sorted(state.get("workloads", {}).items()):
        out: Tree = {"agent": wl["agent"], "restartPolicy": wl["restartPolicy"]}
        if wl["dependencies"]:
            out["dependencies"] = dict(sorted(wl["dependencies"].items()))
        if wl["tags"]:
            out["tags"] = dict(sorted(wl["tags"].items()))
        out["runtime"] = wl["runtime"]
        out["runtimeConfig"] = wl["runtimeConfig"]
        cia = wl["controlInterfaceAccess"]
        if cia["allowRules"] or cia["denyRules"]:
            access: Tree = {}
            if cia["allowRules"]:
                access["allowRules"] = copy.deepcopy(cia["allowRules"])
            if cia["denyRules"]:
                access["denyRules"] = copy.deepcopy(cia["denyRules"])
            out["controlInterfaceAccess"] = access
        if wl["configs"]:
            out["configs"] = dict(sorted(wl["configs"].items()))
        if wl["files"]:
            out["files"] = copy.deepcopy(wl["files"])
        workloads[name] = out
    # Ankaios emits the stored apiVersion unchanged (a v0.1 startup manifest stays v0.1).
    result: Tree = {"apiVersion": state.get("apiVersion", API_VERSION), "workloads": workloads}
    if state.get("configs"):
        result["configs"] = copy.deepcopy(dict(sorted(state["configs"].items())))
    return result
