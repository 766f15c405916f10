"""Labels spread over the cars: ``region=eu,us;model=a,b`` with optional weights ``eu:3``.

A car's labels depend only on its VIN (not on the seed or the number of cars), so the same
VIN carries the same labels in every run. Cars with the same labels share one dict.
"""

from __future__ import annotations

from fleet_sim.draw import unit

LabelSpec = list[tuple[str, list[tuple[str, float]]]]


def parse(text: str) -> LabelSpec:
    spec: LabelSpec = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or not key or any(k == key for k, _ in spec):
            raise ValueError(f"labels {text!r}: KEY=V1,V2;KEY2=... (each key once)")
        choices: list[tuple[str, float]] = []
        for item in filter(None, (v.strip() for v in values.split(","))):
            value, _, weight = item.partition(":")
            try:
                w = float(weight) if weight else 1.0
            except ValueError:
                w = -1.0
            if not value or w <= 0:
                raise ValueError(f"labels {text!r}: bad value {item!r} (VALUE or VALUE:WEIGHT)")
            choices.append((value, w))
        if not choices:
            raise ValueError(f"labels {text!r}: {key} has no values")
        spec.append((key, choices))
    return spec


class Labeller:
    """Gives each VIN its labels; identical label sets are one shared dict."""

    def __init__(self, spec: LabelSpec) -> None:
        self._spec = spec
        self._shared: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}

    def __call__(self, vin: str) -> dict[str, str]:
        chosen: list[tuple[str, str]] = []
        for key, choices in self._spec:
            total = sum(w for _, w in choices)
            point = unit("label", key, vin) * total
            picked = choices[-1][0]
            for value, weight in choices:
                point -= weight
                if point < 0:
                    picked = value
                    break
            chosen.append((key, picked))
        frozen = tuple(chosen)
        labels = self._shared.get(frozen)
        if labels is None:
            labels = self._shared[frozen] = dict(chosen)
        return labels
