"""Eclipse Ankaios fleet connector: manage a vehicle's workloads from the cloud over MQTT."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet_connector.config import Config
    from fleet_connector.connector import Connector

__all__ = ["Config", "Connector"]

# Imported on first use: the sender and fleetctl import parts of this package
# (broker settings, topics) and must not pay for the whole connector, about 20 MiB of RSS
# and half a second of start-up (bench/results.md, footprint).
_LAZY = {"Config": "fleet_connector.config", "Connector": "fleet_connector.connector"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fleet_connector' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
