"""A state directory whose signature counters were kept all along.

A car whose STATE_DIR is new takes it for a lost one and, for SIGNED_MAX_VALIDITY, accepts
only signed requests with a not-after past that (docs/signatures.md, "A lost state
directory"). Tests of everything else start from a directory that kept its counters.
"""

from __future__ import annotations

from pathlib import Path

from fleet_connector.journal.store import Store
from fleet_connector.requests.signatures import keep_counters


def kept_counters(state_dir: Path) -> Path:
    """``state_dir``, made with counters kept since long ago; returns it."""
    store = Store(state_dir)
    try:
        keep_counters(store, 0.0)
    finally:
        store.close()
    return state_dir
