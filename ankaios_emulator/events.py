"""State-change events as Ankaios 1.0's server computes them.

Two state trees are compared (``server/src/ankaios_server/state_comparator.rs``): keys only in
the new tree are *added*, keys only in the old one *removed*, differing leaves *updated*.
For added/removed subtrees Ankaios keeps two trees: the "first difference" (where the
subtree starts) and the "full difference" (every leaf below it). A subscriber's masks then
pick the altered paths (``event_handler.rs``): masks longer than the first difference walk
into the full tree, so a subscriber of ``workloadStates.agent_A.nginx.*.state`` is told about
exactly that leaf of a newly added instance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Tree = dict[str, Any]
WILDCARD = "*"


@dataclass
class Difference:
    added_first: Tree = field(default_factory=dict)
    added_full: Tree = field(default_factory=dict)
    removed_first: Tree = field(default_factory=dict)
    removed_full: Tree = field(default_factory=dict)
    updated: Tree = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (
            self.added_first
            or self.added_full
            or self.removed_first
            or self.removed_full
            or self.updated
        )


@dataclass(frozen=True)
class AlteredFields:
    added: list[str]
    updated: list[str]
    removed: list[str]

    def is_empty(self) -> bool:
        return not (self.added or self.updated or self.removed)

    def masks(self) -> list[str]:
        return [*self.added, *self.removed, *self.updated]


def _insert(tree: Tree, path: Sequence[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _skeleton(value: Any) -> Any:
    """The subtree's shape with every leaf (and every list) replaced by ``None``."""
    if isinstance(value, Mapping) and value:
        return {str(k): _skeleton(v) for k, v in value.items()}
    return None


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> Difference:
    result = Difference()
    stack: list[tuple[Mapping[str, Any], Mapping[str, Any], tuple[str, ...]]] = [(old, new, ())]
    while stack:
        old_node, new_node, path = stack.pop()
        for key, value in new_node.items():
            if key not in old_node:
                _insert(result.added_first, (*path, str(key)), None)
                _insert(result.added_full, (*path, str(key)), _skeleton(value))
        for key, old_value in old_node.items():
            here = (*path, str(key))
            if key not in new_node:
                _insert(result.removed_first, here, None)
                _insert(result.removed_full, here, _skeleton(old_value))
                continue
            new_value = new_node[key]
            if isinstance(old_value, Mapping) and isinstance(new_value, Mapping):
                stack.append((old_value, new_value, here))
            elif isinstance(old_value, list) and isinstance(new_value, list):
                # Ankaios records list changes without a full-difference entry.
                if not old_value and new_value:
                    _insert(result.added_first, here, None)
                elif old_value and not new_value:
                    _insert(result.removed_first, here, None)
                elif old_value != new_value:
                    _insert(result.updated, here, None)
            elif old_value != new_value:
                _insert(result.updated, here, None)
    return result


def leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for key, value in tree.items():
        path = _join(prefix, str(key))
        if isinstance(value, Mapping):
            paths.extend(leaf_paths(value, path))
        else:
            paths.append(path)
    return paths


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key:
        return prefix
    return f"{prefix}.{key}"


def _matching_paths(full: Tree, first: Tree, masks: Sequence[str]) -> list[str]:
    """Paths of ``first`` selected by ``masks``, walking into ``full`` below a difference.

    A leaf (``None``) in ``first`` marks where a difference starts; below it only ``full``
    knows the shape, so the walk continues there with an empty ``first`` node.
    """
    if not masks:
        return leaf_paths(first)
    found: list[str] = []
    stack: list[tuple[Mapping[str, Any], Mapping[str, Any], list[str], str]] = []

    def step(child: Any, ext_child: Any, tail: list[str], here: str) -> None:
        """One level down: into both trees, onto a leaf, or into ``full`` alone."""
        if isinstance(child, Mapping) and isinstance(ext_child, Mapping):
            stack.append((child, ext_child, tail, here))
        elif child is None and not tail:
            found.append(here)
        elif child is None and isinstance(ext_child, Mapping):
            stack.append(({}, ext_child, tail, here))

    for mask in masks:
        stack.append((first, full, mask.split("."), ""))
        while stack:
            node, ext, rest, path = stack.pop()
            if not rest:
                found.extend(_join(path, p) for p in leaf_paths(node))
                continue
            head, tail = rest[0], rest[1:]
            if head == WILDCARD:
                for key, ext_child in ext.items():
                    step(node.get(key), ext_child, tail, _join(path, key))
                continue
            if head not in ext:
                continue
            ext_child = ext[head]
            here = _join(path, head)
            if head in node:
                step(node[head], ext_child, tail, here)
            elif isinstance(ext_child, Mapping):
                stack.append(({}, ext_child, tail, here))
            elif ext_child is None and not tail:
                found.append(here)
    return found


def altered_fields(difference: Difference, masks: Sequence[str]) -> AlteredFields:
    return AlteredFields(
        added=_matching_paths(difference.added_full, difference.added_first, masks),
        updated=_matching_paths(difference.updated, difference.updated, masks),
        removed=_matching_paths(difference.removed_full, difference.removed_first, masks),
    )
