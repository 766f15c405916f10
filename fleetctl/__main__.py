"""``fleetctl``: the operator's tool for one car or a whole fleet (see docs/fleetctl.md)."""

from __future__ import annotations

import sys

from fleetctl.cli import main

if __name__ == "__main__":
    sys.exit(main())
