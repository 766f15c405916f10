"""Ankaios manifests (YAML) read into the protobuf state the control interface takes.

The SDK's ``Manifest`` parser (1.0.1) rejects valid Ankaios 1.0 syntax (``filterMasks``, log
rules, the ``files`` layout) and silently drops config values that are not strings. We read
manifests ourselves, in apiVersion ``v0.1`` and ``v1``, and refuse what Ankaios would refuse
with a message that names the offending field.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from ankaios_sdk._protos import _ank_base

from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.requests import validation

API_VERSIONS = ("v0.1", "v1")
WORKLOADS_PREFIX = "desiredState.workloads"
CONFIGS_PREFIX = "desiredState.configs"

# Names become segments of update masks, where a "." would address a different field.
_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Bounds what one request can make us build; aliases can make a small document huge.
MAX_NODES = 100_000
MAX_DEPTH = 64

_RESTART_POLICIES = {"NEVER": 0, "ON_FAILURE": 1, "ALWAYS": 2}
_CONDITIONS = {"ADD_COND_RUNNING": 0, "ADD_COND_SUCCEEDED": 1, "ADD_COND_FAILED": 2}
_OPERATIONS = {"Nothing": 0, "Read": 1, "Write": 2, "ReadWrite": 5}

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _invalid(message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, message)


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: what it names and the protobuf objects for them."""

    api_version: str
    workloads: dict[str, _ank_base.Workload]
    configs: dict[str, _ank_base.ConfigItem]
    warnings: tuple[str, ...] = ()
    """Keys Ankaios would ignore (see :mod:`fleet_connector.requests.validation`)."""

    @property
    def masks(self) -> list[str]:
        """Update masks naming each workload and config, in the SDK's order."""
        return [f"{WORKLOADS_PREFIX}.{name}" for name in sorted(self.workloads)] + [
            f"{CONFIGS_PREFIX}.{name}" for name in sorted(self.configs)
        ]

    def apply_state(self) -> _ank_base.CompleteState:
        state = _ank_base.CompleteState()
        state.desiredState.apiVersion = self.api_version
        for name, workload in self.workloads.items():
            state.desiredState.workloads.workloads[name].CopyFrom(workload)
        for name, item in self.configs.items():
            state.desiredState.configs.configs[name].CopyFrom(item)
        return state

    @staticmethod
    def delete_state() -> _ank_base.CompleteState:
        # Masks naming paths that the new state lacks remove those paths.
        state = _ank_base.CompleteState()
        state.desiredState.apiVersion = "v1"
        return state


def parse_manifest(payload: bytes) -> Manifest:
    """The manifest in ``payload``; raises RequestError(INVALID_REQUEST) saying what is wrong."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _invalid(f"the manifest is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise _invalid("the manifest is empty")
    try:
        document = _load(text)
    except yaml.YAMLError as e:
        raise _invalid(f"the manifest is not valid YAML: {_one_line(str(e))}") from None
    except RecursionError:
        raise _invalid("the manifest is nested too deeply") from None
    # The reader's messages are the more helpful ones ("quote it"), so it goes first; the
    # schema then adds what only it checks (patterns, lengths) and the unknown keys.
    try:
        manifest = _Reader().manifest(document)
    except RequestError as e:
        if (
            isinstance(document, dict)
            and "apiVersion" in document
            and (warnings := validation.check(document).warnings)
        ):
            raise _invalid(f"{e.message} ({'; '.join(warnings)})") from None
        raise
    findings = validation.check(document)
    if findings.errors:
        raise _invalid(f"Manifest schema validation failed: {'; '.join(findings.errors)}")
    return dataclasses.replace(manifest, warnings=findings.warnings)


def _load(text: str) -> Any:
    """YAML to Python, refusing documents whose aliases expand past MAX_NODES.

    The size is computed on the composed node graph, where an alias is a shared node, so
    a "billion laughs" document is refused before anything is built from it.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # Without an anchor ("&") there is no alias; the reader's own count suffices then.
        if "&" in text and _expanded_size(node) > MAX_NODES:
            raise _invalid(f"the manifest has more than {MAX_NODES} values once aliases expand")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if children_done or not children:
            visiting.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 0) for c in children)
            if sizes[id(node)] > MAX_NODES:
                return sizes[id(node)]
            continue
        if any(id(c) in visiting for c in children):
            raise _invalid("the manifest contains an alias that refers to itself")
        visiting.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


class _Reader:
    """Walks a loaded YAML document, counting nodes so aliases cannot blow it up."""

    def __init__(self) -> None:
        self.nodes = 0

    def _count(self, path: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _invalid(f"the manifest has more than {MAX_NODES} values (at {path})")

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        self._count(path)
        if not isinstance(value, dict):
            raise _invalid(f"{path} must be a mapping, not {_type_name(value)}")
        for key in value:
            if not isinstance(key, str):
                raise _invalid(f"{path} has a key {key!r} that is not a string")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        self._count(path)
        if not isinstance(value, list):
            raise _invalid(f"{path} must be a list, not {_type_name(value)}")
        return value

    def string(self, value: Any, path: str) -> str:
        self._count(path)
        if not isinstance(value, str):
            hint = f' (quote it: "{value}")' if isinstance(value, int | float) else ""
            raise _invalid(f"{path} must be a string, not {_type_name(value)}{hint}")
        return value

    def choice(self, value: Any, path: str, choices: dict[str, int]) -> int:
        text = self.string(value, path)
        if text not in choices:
            raise _invalid(f"{path} must be one of {', '.join(choices)}, not {text!r}")
        return choices[text]

    def fields(self, value: Any, path: str, readers: dict[str, Callable[[Any, str], None]]) -> None:
        # Unknown keys are left to the schema, which turns them into warnings.
        for key, item in self.mapping(value, path).items():
            reader = readers.get(key)
            if reader is not None:
                reader(item, f"{path}.{key}")

    def name(self, value: str, path: str, what: str) -> str:
        if not _NAME.fullmatch(value):
            raise _invalid(
                f"{what} name {value!r} at {path} may only contain letters, digits, _ and -"
            )
        return value

    # -- the document -------------------------------------------------------------------

    def manifest(self, document: Any) -> Manifest:
        if not isinstance(document, dict):
            raise _invalid(
                "a manifest must be a YAML mapping with apiVersion and workloads or configs, "
                f"not {_type_name(document)}"
            )
        doc = self.mapping(document, "manifest")
        if "apiVersion" not in doc:
            raise _invalid("the manifest has no apiVersion (v0.1 or v1)")
        api_version = self.string(doc["apiVersion"], "apiVersion")
        if api_version not in API_VERSIONS:
            raise _invalid(f"apiVersion {api_version!r} is not supported; use v1 or v0.1")
        workloads: dict[str, _ank_base.Workload] = {}
        configs: dict[str, _ank_base.ConfigItem] = {}

        def read_workloads(value: Any, path: str) -> None:
            for name, spec in self.mapping(value, path).items():
                self.name(name, path, "workload")
                workloads[name] = self.workload(spec, f"{path}.{name}", api_version)

        def read_configs(value: Any, path: str) -> None:
            for name, item in self.mapping(value, path).items():
                self.name(name, path, "config")
                configs[name] = self.config_item(item, f"{path}.{name}", 0)

        self.fields(
            doc,
            "manifest",
            {
                "apiVersion": lambda v, p: None,
                "workloads": lambda v, p: None if v is None else read_workloads(v, p),
                "configs": lambda v, p: None if v is None else read_configs(v, p),
            },
        )
        if not workloads and not configs:
            raise _invalid("the manifest names neither workloads nor configs")
        return Manifest(api_version, workloads, configs)

    def workload(self, spec: Any, path: str, api_version: str) -> _ank_base.Workload:
        w = _ank_base.Workload()

        def set_str(attr: str) -> Callable[[Any, str], None]:
            return lambda v, p: setattr(w, attr, self.string(v, p))

        self.fields(
            spec,
            path,
            {
                "agent": set_str("agent"),
                "runtime": set_str("runtime"),
                "runtimeConfig": set_str("runtimeConfig"),
                "restartPolicy": lambda v, p: setattr(
                    w, "restartPolicy", self.choice(v, p, _RESTART_POLICIES)
                ),
                "dependencies": lambda v, p: self.dependencies(v, p, w),
                "tags": lambda v, p: self.tags(v, p, w, api_version),
                "controlInterfaceAccess": lambda v, p: self.access(v, p, w),
                "configs": lambda v, p: self.config_mappings(v, p, w),
                "files": lambda v, p: self.files(v, p, w),
            },
        )
        return w

    def dependencies(self, value: Any, path: str, w: _ank_base.Workload) -> None:
        w.dependencies.SetInParent()
        for name, condition in self.mapping(value, path).items():
            w.dependencies.dependencies[name] = self.choice(
                condition, f"{path}.{name}", _CONDITIONS
            )

    def tags(self, value: Any, path: str, w: _ank_base.Workload, api_version: str) -> None:
        w.tags.SetInParent()
        if api_version == "v0.1":
            # v0.1 wrote tags as a list of key/value pairs; v1 as a mapping.
            for i, entry in enumerate(self.sequence(value, path)):
                item = self.mapping(entry, f"{path}[{i}]")
                if not {"key", "value"} <= set(item):
                    raise _invalid(f"{path}[{i}] must have the fields key and value")
                key = self.string(item["key"], f"{path}[{i}].key")
                w.tags.tags[key] = self.string(item["value"], f"{path}[{i}].value")
            return
        for key, tag in self.mapping(value, path).items():
            w.tags.tags[key] = self.string(tag, f"{path}.{key}")

    def access(self, value: Any, path: str, w: _ank_base.Workload) -> None:
        access = w.controlInterfaceAccess
        access.SetInParent()
        self.fields(
            value,
            path,
            {
                "allowRules": lambda v, p: self.rules(v, p, access.allowRules),
                "denyRules": lambda v, p: self.rules(v, p, access.denyRules),
            },
        )

    def rules(self, value: Any, path: str, target: Any) -> None:
        for i, entry in enumerate(self.sequence(value, path)):
            p = f"{path}[{i}]"
            rule = dict(self.mapping(entry, p))
            kind = self.string(rule.pop("type", None), f"{p}.type")
            proto = target.add()
            if kind == "StateRule":
                masks_key = [k for k in ("filterMask", "filterMasks") if k in rule]
                if len(masks_key) != 1:
                    raise _invalid(f"{p} needs filterMasks (or v0.1's filterMask)")
                masks = rule.pop(masks_key[0])
                if "operation" not in rule:
                    raise _invalid(f"{p} needs an operation: {', '.join(_OPERATIONS)}")
                proto.stateRule.operation = self.choice(
                    rule.pop("operation"), f"{p}.operation", _OPERATIONS
                )
                for j, mask in enumerate(self.sequence(masks, f"{p}.{masks_key[0]}")):
                    proto.stateRule.filterMasks.append(
                        self.string(mask, f"{p}.{masks_key[0]}[{j}]")
                    )
            elif kind == "LogRule":
                if "workloadNames" not in rule:
                    raise _invalid(f"{p} needs workloadNames")
                names = self.sequence(rule.pop("workloadNames"), f"{p}.workloadNames")
                proto.logRule.SetInParent()
                for j, name in enumerate(names):
                    proto.logRule.workloadNames.append(self.string(name, f"{p}.workloadNames[{j}]"))
            else:
                raise _invalid(f"{p}.type must be StateRule or LogRule, not {kind!r}")

    def config_mappings(self, value: Any, path: str, w: _ank_base.Workload) -> None:
        w.configs.SetInParent()
        for alias, name in self.mapping(value, path).items():
            w.configs.configs[alias] = self.string(name, f"{path}.{alias}")

    def files(self, value: Any, path: str, w: _ank_base.Workload) -> None:
        w.files.SetInParent()
        for i, entry in enumerate(self.sequence(value, path)):
            p = f"{path}[{i}]"
            spec = dict(self.mapping(entry, p))
            proto = w.files.files.add()
            proto.mountPoint = self.string(spec.pop("mountPoint", None), f"{p}.mountPoint")
            contents = [k for k in ("data", "binaryData") if k in spec]
            if len(contents) != 1:
                raise _invalid(f"{p} needs exactly one of data or binaryData")
            setattr(proto, contents[0], self.string(spec.pop(contents[0]), f"{p}.{contents[0]}"))

    def config_item(self, value: Any, path: str, depth: int) -> _ank_base.ConfigItem:
        if depth > MAX_DEPTH:
            raise _invalid(f"{path} is nested more than {MAX_DEPTH} levels deep")
        item = _ank_base.ConfigItem()
        if isinstance(value, dict):
            item.object.SetInParent()
            for key, sub in self.mapping(value, path).items():
                item.object.fields[key].CopyFrom(self.config_item(sub, f"{path}.{key}", depth + 1))
        elif isinstance(value, list):
            item.array.SetInParent()
            for i, sub in enumerate(self.sequence(value, path)):
                item.array.values.append(self.config_item(sub, f"{path}[{i}]", depth + 1))
        else:
            item.String = self.string(value, path)
        return item
