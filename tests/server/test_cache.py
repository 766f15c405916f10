"""The in-memory inventory: VIN order, replacement of changed cars, listeners."""

from __future__ import annotations

from fleet_server.inventory.cache import Car, Inventory, Poll, merged
from fleet_server.selectors import parse


def car(vin: str, online: bool = True, **labels: str) -> Car:
    c = Car(vin)
    c.online = online
    c.reported_labels = labels
    c.labels = merged(labels, {})
    return c


def test_cars_are_listed_in_vin_order_and_replaced_when_changed() -> None:
    inventory = Inventory()
    heard: list[list[str]] = []
    inventory.listeners.append(lambda cars: heard.append([c.vin for c in cars]))
    # more than the few cars that are inserted one by one
    inventory.apply(Poll(5, [car(f"V{i:03d}", region="eu") for i in reversed(range(100))]))
    inventory.apply(Poll(7, [car("V050", online=False, region="us"), car("A1")]))
    assert inventory.seq == 7
    everything = [c.vin for c in inventory.select(parse(""))]
    assert everything == ["A1", *[f"V{i:03d}" for i in range(100)]]
    assert [c.vin for c in inventory.select(parse("region=us"))] == ["V050"]
    assert [c.vin for c in inventory.select(parse(""), online=False)] == ["V050"]
    assert heard[1] == ["V050", "A1"]
    inventory.apply(Poll(7, []))
    assert len(heard) == 2


def test_merged_labels_let_the_api_win() -> None:
    assert merged({"a": "1", "b": "2"}, {"b": "3"}) == {"a": "1", "b": "3"}
    reported = {"a": "1"}
    assert merged(reported, {}) is reported
