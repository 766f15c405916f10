"""The structure of a JSON value without its values: keys, nesting and types.

Maps keyed by names (workloads, agents, instance ids) are compared by the shape of their
values, not their keys: the real car and the simulated one name their instances
differently. An empty map or list matches any map or list, since emptiness is a value.
"""

from __future__ import annotations

from typing import Any

MAP = "<map>"
Path = tuple[str, ...]


def shape(value: Any, maps: frozenset[Path] = frozenset(), path: Path = ()) -> Any:
    """``maps``: paths (``*`` for a map's keys, ``[]`` for list items) whose dicts are maps."""
    if isinstance(value, dict):
        if path in maps:
            merged: Any = None
            for item in value.values():
                merged = _merge(merged, shape(item, maps, (*path, "*")))
            return {MAP: merged}
        return {key: shape(item, maps, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        merged = None
        for item in value:
            merged = _merge(merged, shape(item, maps, (*path, "[]")))
        return [merged] if merged is not None else []
    return "null" if value is None else type(value).__name__


def _merge(a: Any, b: Any) -> Any:
    """The shape of two items of one list or map: keys of both, first type seen."""
    if a is None:
        return b
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge(a.get(k), b.get(k)) for k in {**a, **b}}
    return a


def differences(real: Any, sim: Any, where: str = "$") -> list[str]:
    """Where the simulator's shape differs from the connector's."""
    if isinstance(real, dict) and isinstance(sim, dict):
        if MAP in real or MAP in sim:
            if real.get(MAP) is None or sim.get(MAP) is None:
                return []  # an empty map: nothing to compare
            return differences(real[MAP], sim[MAP], f"{where}.*")
        found = [f"{where}.{k}: only the connector has it" for k in real if k not in sim]
        found += [f"{where}.{k}: only the simulator has it" for k in sim if k not in real]
        for key in real:
            if key in sim:
                found += differences(real[key], sim[key], f"{where}.{key}")
        return found
    if isinstance(real, list) and isinstance(sim, list):
        if not real or not sim:
            return []
        return differences(real[0], sim[0], f"{where}[]")
    if real != sim:
        return [f"{where}: connector {real}, simulator {sim}"]
    return []


def same_shape(
    real: Any, sim: Any, maps: frozenset[Path] = frozenset(), optional: frozenset[str] = frozenset()
) -> list[str]:
    """Differences, leaving out those on keys in ``optional`` (present on one side only)."""
    found = differences(shape(real, maps), shape(sim, maps))
    return [
        d
        for d in found
        if not any(
            d.endswith(f".{k}: only the connector has it")
            or d.endswith(f".{k}: only the simulator has it")
            for k in optional
        )
    ]
