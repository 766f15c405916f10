"""paho's MQTT 5 ``Properties`` without rebuilding its tables for every packet.

paho makes a ``Properties`` object for every MQTT 5 packet it reads (each request, each
PUBACK of a reply), and its ``__init__`` builds two dictionaries of all 27 properties
(calling ``list.index`` 27 times), then ``unpack`` first clears the fresh object by
trying all 27 names. That was 17 % of the instructions of a state request
(bench/README.md, "The connector against the tutorial's loop at QoS 1").

:func:`install` makes every instance share one copy of those tables, which paho only
reads, and clears through a precomputed list of names; behaviour is unchanged
(tests/connector/test_fast_properties.py compares with paho's own methods). It patches the class
once per process, for every paho client in it; with a paho whose ``Properties`` does not
look as expected it does nothing.
"""

from __future__ import annotations

from typing import Any

from paho.mqtt import properties as _paho

ORIGINAL_INIT = _paho.Properties.__init__
ORIGINAL_CLEAR = _paho.Properties.clear
_TABLES = ("packetType", "types", "names", "properties")


def install() -> bool:
    """Patches paho's ``Properties`` (once); whether it is patched."""
    cls: Any = _paho.Properties
    if getattr(cls, "_fleet_shared_tables", False):
        return True
    template = cls(1)
    if not (
        isinstance(getattr(template, "types", None), list)
        and isinstance(getattr(template, "names", None), dict)
        and isinstance(getattr(template, "properties", None), dict)
        and set(vars(template)) == set(_TABLES)
    ):
        return False  # a paho that keeps more (or other) state per instance
    types, names, properties = template.types, template.names, template.properties
    compressed = tuple(name.replace(" ", "") for name in names)

    def __init__(self: Any, packetType: int) -> None:
        # paho's __setattr__ lets these four through unchecked; the tables are shared.
        state = self.__dict__
        state["packetType"] = packetType
        state["types"] = types
        state["names"] = names
        state["properties"] = properties

    def clear(self: Any) -> None:
        state = self.__dict__
        for name in compressed:
            state.pop(name, None)

    cls.__init__ = __init__
    cls.clear = clear
    cls._fleet_shared_tables = True
    return True
